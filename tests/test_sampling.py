"""``sample(init=..., eps=..., factorized=...)`` of the SVD and eigen families (geotorch's
``sample(init_, eps, factorized)``) and ``AlmostOrthogonal.sample(distribution=...)``.

Oracles are numpy: the singular values / eigenvalues of the initializer's own draw (``init(key,
shape, dtype)`` is the draw), numpy Gaussian matrices for the distribution checks (a two-sample
Kolmogorov-Smirnov test with a fixed key, and a negative control it must reject)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import parametrax as px

stats = pytest.importorskip("scipy.stats")

KEY = jax.random.key(42)
TOL = 2e-5


def normal_init(std):
    return jax.nn.initializers.normal(std)


def _sv(x):
    return np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)


def _draw(init, shape):
    return np.asarray(init(KEY, shape, jnp.float32), np.float64)


def _rank_one(key, shape, dtype):
    a = jax.random.normal(key, shape[:-1] + (1,), dtype)
    b = jax.random.normal(jax.random.fold_in(key, 1), shape[:-2] + (1, shape[-1]), dtype)
    return a @ b


# ------------------------------------------------------------------------------------------------
# the SVD family: the sample's singular values are the draw's, moved onto the set
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 4), (4, 6)])
def test_lowrank_keeps_the_largest_singular_values_of_the_draw(shape):
    init = normal_init(0.7)
    x = px.LowRank(rank=2).sample(KEY, shape, init=init)
    want = _sv(_draw(init, shape))
    np.testing.assert_allclose(_sv(x)[:2], want[:2], rtol=TOL)
    np.testing.assert_allclose(_sv(x)[2:], 0, atol=1e-5)
    # Eckart-Young: the sample is the nearest rank-2 matrix to the draw
    u, s, vh = np.linalg.svd(_draw(init, shape), full_matrices=False)
    np.testing.assert_allclose(np.asarray(x), (u[:, :2] * s[:2]) @ vh[:2], atol=1e-5)


def test_fixedrank_invertible_sl_almostorthogonal_singular_values():
    init = normal_init(1.0)
    d = _draw(init, (5, 5))
    s = _sv(d)
    x = px.FixedRank(rank=3).sample(KEY, (5, 5), init=init)
    np.testing.assert_allclose(_sv(x)[:3], s[:3], rtol=TOL)
    x = px.Invertible().sample(KEY, (5, 5), init=init)
    np.testing.assert_allclose(_sv(x), s, rtol=TOL)
    assert np.linalg.det(np.asarray(x, np.float64)) > 0
    x = px.SL().sample(KEY, (5, 5), init=init)
    np.testing.assert_allclose(_sv(x), s / np.exp(np.mean(np.log(s))), rtol=1e-4)
    np.testing.assert_allclose(np.linalg.det(np.asarray(x, np.float64)), 1.0, rtol=1e-4)
    lam = 0.25
    x = px.AlmostOrthogonal(lam=lam).sample(KEY, (5, 5), init=normal_init(0.4))
    np.testing.assert_allclose(
        _sv(x), np.clip(_sv(_draw(normal_init(0.4), (5, 5))), 1 - lam, 1 + lam), rtol=TOL
    )


def test_invertible_fixes_a_negative_determinant():
    def neg_det(key, shape, dtype):
        x = jax.random.normal(key, shape, dtype)
        return x * jnp.sign(jnp.linalg.det(x))[..., None, None] * jnp.array([-1.0, 1, 1, 1])

    d = _draw(neg_det, (3, 4, 4))
    assert np.all(np.linalg.det(d) < 0)
    for p in (px.Invertible(), px.SL()):
        x = np.asarray(p.sample(KEY, (3, 4, 4), init=neg_det), np.float64)
        assert np.all(np.linalg.det(x) > 0)
        assert bool(p.in_manifold(jnp.asarray(x, jnp.float32)))


def test_singular_values_follow_the_init_distribution():
    """Top singular value of 400 samples vs 400 numpy Gaussian matrices of the same std (KS)."""
    n = 400
    top = _sv_batch(px.FixedRank(rank=2).sample(KEY, (n, 6, 4), init=normal_init(0.5)))[:, 0]
    rng = np.random.default_rng(0)
    ref = np.linalg.svd(rng.normal(0, 0.5, (n, 6, 4)), compute_uv=False)[:, 0]
    wrong = np.linalg.svd(rng.normal(0, 0.6, (n, 6, 4)), compute_uv=False)[:, 0]
    assert stats.ks_2samp(top, ref).pvalue > 0.01
    assert stats.ks_2samp(top, wrong).pvalue < 1e-4  # the test can tell 0.5 from 0.6


def _sv_batch(x):
    return np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)


# ------------------------------------------------------------------------------------------------
# eps and the entry's own floor
# ------------------------------------------------------------------------------------------------
def test_eps_floors_the_kept_singular_values():
    p = px.FixedRank(rank=3)
    x = p.sample(KEY, (6, 4), init=_rank_one, eps=0.5)
    s = _sv(x)
    np.testing.assert_allclose(s[1:3], 0.5, rtol=TOL)  # the draw's were 0
    np.testing.assert_allclose(s[0], _sv(_draw(_rank_one, (6, 4)))[0], rtol=TOL)
    assert bool(p.in_manifold(x))
    # without eps: the forward's floor, so the sample is still of rank exactly 3
    x = p.sample(KEY, (6, 4), init=_rank_one)
    s = _sv(x)
    np.testing.assert_allclose(s[1:3], 1e-3 * max(1.0, s[0]), rtol=1e-4)
    assert bool(p.in_manifold(x))


def test_eps_for_sl_applies_before_normalisation():
    x = px.SL().sample(KEY, (3, 3), init=_rank_one, eps=0.1)
    s0 = _sv(_draw(_rank_one, (3, 3)))[0]
    s = np.array([s0, 0.1, 0.1])
    np.testing.assert_allclose(_sv(x), s / np.exp(np.mean(np.log(s))), rtol=1e-4)


def test_eps_is_refused_where_there_is_no_floor():
    for p, shape in [
        (px.LowRank(rank=2), (4, 3)),
        (px.PSSD(), (3, 3)),
        (px.PSSDLowRank(rank=2), (3, 3)),
        (px.AlmostOrthogonal(lam=0.5), (3, 3)),  # its band has no floor either
    ]:
        with pytest.raises(px.ParametrizationError, match=r"`eps`.*got eps=0\.1"):
            p.sample(KEY, shape, eps=0.1)
    with pytest.raises(px.ParametrizationError, match="`init`, `eps` and `factorized`"):
        px.AlmostOrthogonal(lam=0.5).sample(KEY, (3, 3), distribution="uniform", eps=0.1)


def test_bad_init_is_named():
    with pytest.raises(px.ParametrizationError, match=r"must be a JAX initializer"):
        px.LowRank(rank=1).sample(KEY, (3, 2), init="normal")
    with pytest.raises(px.ParametrizationError, match=r"returned an array of shape \(2, 3\)"):
        px.PSSD().sample(KEY, (3, 3), init=lambda k, s, d: jnp.ones((2, 3), d))


# ------------------------------------------------------------------------------------------------
# factorized
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (2, 5, 3)])
@pytest.mark.parametrize("with_init", [False, True])
def test_factorized_returns_the_factors(shape, with_init):
    p = px.LowRank(rank=2)
    kw = {"init": normal_init(1.0)} if with_init else {}
    u, s, v = p.sample(KEY, shape, factorized=True, **kw)
    n, k = shape[-2:]
    assert u.shape == shape[:-2] + (n, 2) and s.shape == shape[:-2] + (2,)
    assert v.shape == shape[:-2] + (k, 2)
    eye = np.eye(2)
    np.testing.assert_allclose(
        np.asarray(jnp.swapaxes(u, -1, -2) @ u),
        np.broadcast_to(eye, u.shape[:-2] + (2, 2)),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        np.asarray(jnp.swapaxes(v, -1, -2) @ v),
        np.broadcast_to(eye, v.shape[:-2] + (2, 2)),
        atol=1e-5,
    )
    assert np.all(np.asarray(s) >= 0)
    x = p.sample(KEY, shape, **kw)
    np.testing.assert_allclose(
        np.asarray((u * s[..., None, :]) @ jnp.swapaxes(v, -1, -2)),
        np.asarray(x),
        atol=1e-5,
    )


def test_factorized_psd():
    p = px.PSSDFixedRank(rank=2)
    lam, q = p.sample(KEY, (5, 5), init=normal_init(1.0), factorized=True)
    assert lam.shape == (2,) and q.shape == (5, 2)
    d = _draw(normal_init(1.0), (5, 5))
    np.testing.assert_allclose(np.asarray(lam), np.linalg.eigvalsh(d @ d.T)[-2:], rtol=1e-4)
    x = p.sample(KEY, (5, 5), init=normal_init(1.0))
    np.testing.assert_allclose(np.asarray((q * lam) @ q.T), np.asarray(x), atol=1e-4)


# ------------------------------------------------------------------------------------------------
# the eigen family: W Wᵀ of the draw (Wishart for a Gaussian init)
# ------------------------------------------------------------------------------------------------
def test_pssd_is_w_wt_of_the_draw():
    d = _draw(normal_init(0.8), (4, 4))
    x = px.PSSD().sample(KEY, (4, 4), init=normal_init(0.8))
    np.testing.assert_allclose(np.asarray(x), d @ d.T, rtol=1e-4, atol=1e-5)
    x = px.PSSDLowRank(rank=2).sample(KEY, (4, 4), init=normal_init(0.8))
    np.testing.assert_allclose(
        np.linalg.eigvalsh(np.asarray(x, np.float64))[-2:],
        np.linalg.eigvalsh(d @ d.T)[-2:],
        rtol=1e-4,
    )
    np.testing.assert_allclose(np.linalg.eigvalsh(np.asarray(x, np.float64))[:2], 0, atol=1e-5)


def test_wishart_statistics():
    """E[W Wᵀ] = n s² I; the eigenvalue distribution matches numpy's Wishart draws (KS)."""
    m, n, std = 2000, 4, 0.5
    x = np.asarray(px.PositiveDefinite().sample(KEY, (m, n, n), init=normal_init(std)), np.float64)
    np.testing.assert_allclose(x.mean(0), n * std**2 * np.eye(n), atol=0.05 * n * std**2)
    top = np.linalg.eigvalsh(x)[:, -1]
    rng = np.random.default_rng(1)
    w = rng.normal(0, std, (m, n, n))
    ref = np.linalg.eigvalsh(w @ np.swapaxes(w, -1, -2))[:, -1]
    assert stats.ks_2samp(top, ref).pvalue > 0.01
    w = rng.normal(0, 0.55, (m, n, n))
    wrong = np.linalg.eigvalsh(w @ np.swapaxes(w, -1, -2))[:, -1]
    assert stats.ks_2samp(top, wrong).pvalue < 1e-4


def test_eigen_eps_and_floor():
    p = px.PSSDFixedRank(rank=3)
    x = p.sample(KEY, (5, 5), init=_rank_one, eps=0.25)
    w = np.linalg.eigvalsh(np.asarray(x, np.float64))
    np.testing.assert_allclose(w[-3:-1], 0.25, rtol=1e-4)
    np.testing.assert_allclose(w[:2], 0, atol=1e-5)
    assert bool(p.in_manifold(x))
    q = px.PositiveDefinite()
    x = q.sample(KEY, (5, 5), init=_rank_one)  # a singular draw: raised to the floor
    w = np.linalg.eigvalsh(np.asarray(x, np.float64))
    assert w[0] >= 0.99e-4 * max(1.0, w[-1]) and bool(q.in_manifold(x))


# ------------------------------------------------------------------------------------------------
# AlmostOrthogonal.sample(distribution=...)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 5), (5, 3), (3, 5)])
def test_almost_orthogonal_distributions(shape):
    p = px.AlmostOrthogonal(lam=0.5)
    for dist in ("uniform", "torus"):
        x = p.sample(KEY, shape, distribution=dist)
        assert x.shape == shape
        np.testing.assert_allclose(_sv(x), 1.0, atol=1e-5)
        assert bool(p.in_manifold(x))
    if shape[0] == shape[1]:
        np.testing.assert_allclose(
            np.asarray(p.sample(KEY, shape, distribution="torus")),
            np.asarray(px.SO().sample(KEY, shape, init="torus")),
            atol=1e-6,
        )
    # default: singular values spread in the band, not all 1
    s = _sv(p.sample(KEY, shape))
    assert np.all(np.abs(s - 1) <= 0.5 + 1e-6) and np.ptp(s) > 1e-3


def test_almost_orthogonal_uniform_is_haar():
    """The first entry of a Haar orthogonal 4x4 matrix has density ∝ (1 - t²)^{1/2}: compare
    with numpy's sign-fixed QR of Gaussian matrices (KS)."""
    x = np.asarray(px.AlmostOrthogonal(lam=0.3).sample(KEY, (1000, 4, 4), distribution="uniform"))
    rng = np.random.default_rng(2)
    q, r = np.linalg.qr(rng.normal(size=(1000, 4, 4)))
    q = q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[:, None, :]
    assert stats.ks_2samp(x[:, 0, 0], q[:, 0, 0]).pvalue > 0.01


def test_almost_orthogonal_bad_distribution():
    p = px.AlmostOrthogonal(lam=0.5)
    with pytest.raises(px.ParametrizationError, match=r'one of None, "uniform", "torus"; got'):
        p.sample(KEY, (3, 3), distribution="haar")
    with pytest.raises(px.ParametrizationError, match=r"apply to distribution=None"):
        p.sample(KEY, (3, 3), distribution="uniform", init=normal_init(1.0))
