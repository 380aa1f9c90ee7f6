"""The manifold catalog: closed forms, training loops with a known answer, Haar statistics,
dynamic trivialization and bad input (the contract runs in the table of tests/test_contract.py)."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import parametrax as px
from parametrax import _numerics as N
from parametrax import tree as ptree
from parametrax._numerics import inv_softplus
from parametrax.catalog import (
    PSSD,
    SL,
    SO,
    AlmostOrthogonal,
    Cholesky,
    FixedRank,
    Grassmannian,
    Interval,
    Invertible,
    LowerTriangular,
    LowRank,
    Ordered,
    Positive,
    PositiveDefinite,
    PSSDFixedRank,
    PSSDLowRank,
    Simplex,
    Sphere,
    SphereEmbedded,
    Stiefel,
)
from parametrax.tree import update_base

from _helpers import normal, orthogonality_error, stable_id, standard_promotion, symmetry_error

KEY = jax.random.key(0)


# Tolerances (float32), named once.
ON_MANIFOLD = 1e-5  # constraint error of a single evaluation
STEP_ON_MANIFOLD = 2e-5  # constraint error at every training step
FIT = 2e-3  # distance to the closed-form answer after 200 Adam steps
# An answer on the boundary of AlmostOrthogonal's set sits where sin' = 0: the loss is quartic
# there and converges more slowly.
FIT_BOUNDARY = 1e-2


@functools.partial(jax.jit, static_argnums=0)
def fwd(p, x):
    """``p.forward(x)`` under jit: one compilation instead of one per primitive."""
    return p.forward(x)


def cayley_full(a):
    """A user trivialization: the Cayley map without the 1/2 (module level, so hashable and
    equal across uses)."""
    eye = jnp.eye(a.shape[-1], dtype=a.dtype)
    return jnp.linalg.solve(eye - a, eye + a)


# ------------------------------------------------------------------------------------------------
# 2. Closed forms
# ------------------------------------------------------------------------------------------------
def test_positive_definite_eigenvalues_are_softplus_of_raw_eigenvalues():
    x = normal(1, (2, 4, 4))
    a = fwd(PositiveDefinite(), x)
    want = jnp.sort(jax.nn.softplus(jnp.diagonal(x, axis1=-2, axis2=-1)), axis=-1)
    np.testing.assert_allclose(np.linalg.eigvalsh(a), want, atol=1e-5)
    assert symmetry_error(a) == 0.0


def test_pssd_low_rank_has_rank_and_abs_eigenvalues():
    x = normal(2, (5, 5))
    a = fwd(PSSDLowRank(2), x)
    w = np.linalg.eigvalsh(a)
    np.testing.assert_allclose(w[:3], 0.0, atol=1e-5)
    np.testing.assert_allclose(w[3:], jnp.sort(jnp.abs(jnp.diagonal(x)[:2])), atol=1e-5)


def test_so_has_determinant_one_and_matches_expm_of_skew():
    x = normal(3, (3, 4, 4))
    q = fwd(SO(), x)
    np.testing.assert_allclose(np.linalg.det(q), 1.0, atol=1e-5)
    low = jnp.tril(x, -1)
    want = jax.vmap(jax.scipy.linalg.expm)(low - jnp.swapaxes(low, -1, -2))
    np.testing.assert_allclose(q, want, atol=1e-5)


def test_cayley_and_custom_trivializations():
    x = normal(4, (4, 4))
    low = jnp.tril(x, -1)
    a = low - low.T
    eye = jnp.eye(4)
    half = jnp.linalg.solve(eye - a / 2, eye + a / 2)
    np.testing.assert_allclose(fwd(SO(triv="cayley"), x), half, atol=1e-5)
    np.testing.assert_allclose(fwd(SO(triv=cayley_full), x), cayley_full(a), atol=1e-5)
    assert SO(triv=cayley_full) == SO(triv=cayley_full)
    assert hash(SO(triv="cayley")) == hash(SO(triv="cayley"))


@pytest.mark.parametrize("scale", [1e-3, 1.0, 10.0])
def test_expm_matches_jax_scipy(scale):
    g = normal(5, (2, 6, 6))
    a = scale * (g - jnp.swapaxes(g, -1, -2))
    want = jax.vmap(jax.scipy.linalg.expm)(a)
    np.testing.assert_allclose(N.expm(a), want, atol=1e-5 * max(1.0, scale))
    assert np.all(np.asarray(N.expm(jnp.zeros((3, 3)))) == np.eye(3))


def test_stiefel_tall_and_wide():
    tall = fwd(Stiefel(), normal(6, (6, 2)))
    wide = fwd(Stiefel(), normal(6, (2, 6)))
    assert orthogonality_error(tall) < ON_MANIFOLD  # orthonormal columns
    assert orthogonality_error(wide.T) < ON_MANIFOLD  # orthonormal rows


def test_grassmannian_ignores_rotations_within_the_subspace():
    x = normal(7, (5, 2))
    p = Grassmannian()
    top_changed = x.at[:2, :].add(3.0)
    np.testing.assert_allclose(fwd(p, top_changed), fwd(p, x), atol=1e-6)
    g = jax.grad(lambda r: jnp.sum(fwd(p, r) * normal(8, (5, 2))))(x)
    assert np.all(np.asarray(g[:2]) == 0.0)


def test_sphere_exponential_map_closed_forms():
    p = Sphere(radius=2.0)

    @jax.jit
    def values():
        variables = p.init_variables(KEY, jnp.zeros((3,)))
        f = lambda x: p.apply(variables, x)[0]  # noqa: E731
        return f(jnp.zeros(3)), f(jnp.array([5.0, jnp.pi, 0.0])), jax.jacobian(f)(jnp.zeros(3))

    y0, y1, jac = values()
    # the canonical base is e0: raw zero gives the base, a tangent step of length pi the
    # antipode (the normal part of the raw value, 5, is ignored)
    np.testing.assert_allclose(y0, [2.0, 0.0, 0.0])
    np.testing.assert_allclose(y1, [-2.0, 0.0, 0.0], atol=1e-5)
    # finite gradient at raw zero, equal to radius * (I - b bᵀ)
    np.testing.assert_allclose(jac, 2.0 * np.diag([0.0, 1.0, 1.0]), atol=1e-6)


def test_sphere_embedded_axes():
    x = normal(9, (3, 4))
    cols = fwd(SphereEmbedded(radius=3.0, axis=-2), x)
    np.testing.assert_allclose(np.linalg.norm(cols, axis=0), 3.0, rtol=1e-6)
    whole = fwd(SphereEmbedded(axis=None), x)
    np.testing.assert_allclose(np.linalg.norm(whole), 1.0, rtol=1e-6)
    g = jax.grad(lambda v: jnp.sum(fwd(SphereEmbedded(), v)))(jnp.zeros((2, 3)))
    assert np.all(np.isfinite(np.asarray(g)))  # the safe norm: 0, not NaN, at the origin


def test_svd_family_singular_values():
    x = normal(10, (5, 4))
    sq = normal(11, (3, 4, 4))
    s = np.asarray(jnp.diagonal(x))

    @jax.jit
    def values(x, sq):
        return {
            "low": LowRank(2).forward(x),
            "fixed": FixedRank(3).forward(x),
            "ao": AlmostOrthogonal(0.3).forward(x),
            "gl": Invertible().forward(sq),
            "sl": SL().forward(sq),
            "sl_exp": SL(f="exp").forward(sq),
        }

    out = jax.tree.map(np.asarray, values(x, sq))
    sv = lambda a: np.linalg.svd(a, compute_uv=False)  # noqa: E731
    softplus = np.logaddexp(s, 0.0)
    np.testing.assert_allclose(sv(out["low"])[:2], np.sort(np.abs(s[:2]))[::-1], atol=1e-5)
    np.testing.assert_allclose(sv(out["low"])[2:], 0.0, atol=1e-5)
    np.testing.assert_allclose(sv(out["fixed"])[:3], np.sort(softplus[:3])[::-1], atol=1e-5)
    np.testing.assert_allclose(sv(out["ao"]), np.sort(1 + 0.3 * np.sin(s))[::-1], atol=1e-5)
    assert np.all(np.linalg.det(out["gl"]) > 0)
    np.testing.assert_allclose(np.linalg.det(out["sl"]), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(out["sl_exp"]), 1.0, atol=1e-5)


def test_inv_softplus_is_stable_at_both_ends():
    y = jnp.array([1e-30, 1e-12, 1e-6, 1.0, 30.0, 100.0, 1e4], jnp.float32)
    x = inv_softplus(y)
    assert np.all(np.isfinite(np.asarray(x)))
    np.testing.assert_allclose(jax.nn.softplus(x), y, rtol=1e-5)  # |x| * eps at y = 1e-30
    # the textbook log(expm1(y)) overflows at 100 in float32 and loses everything near 0
    assert not np.isfinite(float(jnp.log(jnp.expm1(jnp.float32(100.0)))))
    np.testing.assert_allclose(Positive().right_inverse(jnp.float32(1e4)), 1e4)


def test_elementwise_closed_forms():
    x = normal(12, (3, 5))
    iv = Interval(-1.0, 2.0)
    np.testing.assert_allclose(iv.forward(jnp.zeros(2)), 0.5)
    np.testing.assert_allclose(
        iv.forward(iv.right_inverse(jnp.array([-0.9, 1.9]))), [-0.9, 1.9], rtol=1e-5
    )
    s = fwd(Simplex(), x)
    np.testing.assert_allclose(jnp.sum(s, -1), 1.0, rtol=1e-6)
    raw = Simplex().right_inverse(s)
    np.testing.assert_allclose(jnp.sum(raw, -1), 0.0, atol=1e-5)  # the zero-sum representative
    o = fwd(Ordered(), x)
    assert np.all(np.diff(np.asarray(o), axis=-1) > 0)
    np.testing.assert_allclose(Ordered().right_inverse(o), x, atol=1e-5)
    chol = fwd(Cholesky(), normal(13, (4, 4)))
    sigma = chol @ chol.T
    np.testing.assert_allclose(np.linalg.cholesky(sigma), chol, atol=1e-5)
    assert float(fwd(LowerTriangular(), x)[0, 1]) == 0.0


def test_right_inverse_off_the_set_is_finite():
    # registration may hand a constraint values outside its set (a kernel with negative
    # entries): the raw values must be finite, never NaN
    bad = jnp.array([-1.0, 0.0, 0.5, 2.0])
    for p in (Positive(), Positive(f="exp"), Interval(0.0, 1.0), Ordered()):
        assert np.all(np.isfinite(np.asarray(p.right_inverse(bad)))), p
    assert np.all(np.isfinite(np.asarray(Cholesky().right_inverse(-jnp.eye(3)))))


_positive_round_trip = jax.jit(lambda y: Positive().forward(Positive().right_inverse(y)))
_interval_round_trip = jax.jit(
    lambda y: Interval(-2.0, 3.0).forward(Interval(-2.0, 3.0).right_inverse(y))
)


@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=-30.0, max_value=30.0))
def test_positive_round_trip_property(log10_y):
    y = jnp.float32(10.0**log10_y)
    # softplus(x) for x = log(y) ~ -69 carries |x| * eps ~ 4e-6 relative error: conditioning
    np.testing.assert_allclose(_positive_round_trip(y), y, rtol=1e-5)


@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=1e-4, max_value=1 - 1e-4))
def test_interval_round_trip_property(fraction):
    y = jnp.float32(-2.0 + 5.0 * fraction)
    np.testing.assert_allclose(_interval_round_trip(y), y, rtol=1e-5, atol=5e-6)


def test_torus_sample_is_block_diagonal_rotations():
    q = SO().sample(KEY, (5, 5), init="torus")
    q = np.asarray(q)
    assert orthogonality_error(q) < ON_MANIFOLD
    np.testing.assert_allclose(np.linalg.det(q), 1.0, atol=1e-5)
    for i in (0, 2):
        np.testing.assert_allclose(q[i, i], q[i + 1, i + 1])
        np.testing.assert_allclose(q[i + 1, i], -q[i, i + 1])
    assert q[4, 4] == 1.0
    mask = np.zeros((5, 5), bool)
    for i in (0, 2):
        mask[i : i + 2, i : i + 2] = True
    mask[4, 4] = True
    assert np.all(q[~mask] == 0.0)
    tall = Stiefel().sample(KEY, (5, 3), init="torus")
    assert orthogonality_error(tall) < ON_MANIFOLD


# ------------------------------------------------------------------------------------------------
# 3. Haar statistics: the trace of a Haar SO(3) matrix
# ------------------------------------------------------------------------------------------------
def test_haar_so3_trace_distribution():
    """tr Q = 1 + 2 cos θ with θ the rotation angle, whose Haar density is (1 - cos θ)/π on
    [0, π]: P(tr <= t) = 1 - (θ_t - sin θ_t)/π, θ_t = arccos((t - 1)/2); E tr = 0, E tr² = 1."""
    n = 4000
    q = np.asarray(SO().sample(jax.random.key(1234), (n, 3, 3)))
    assert orthogonality_error(q) < ON_MANIFOLD
    assert np.all(np.linalg.det(q) > 0)
    tr = np.sort(np.trace(q, axis1=-2, axis2=-1))
    theta = np.arccos(np.clip((tr - 1) / 2, -1, 1))
    cdf = 1 - (theta - np.sin(theta)) / np.pi
    ks = np.max(np.maximum(np.arange(1, n + 1) / n - cdf, cdf - np.arange(n) / n))
    assert ks < 0.04, (
        f"Kolmogorov-Smirnov distance {ks:.4f} (1.63/sqrt(n) = {1.63 / np.sqrt(n):.4f})"
    )
    assert abs(tr.mean()) < 0.06
    assert abs((tr**2).mean() - 1.0) < 0.1


def test_haar_stiefel_is_uniform_in_sign():
    # sign-fixed QR: the distribution is invariant under Q -> D Q; the mean of Q is ~0
    q = np.asarray(Stiefel().sample(jax.random.key(7), (2000, 4, 2)))
    assert np.max(np.abs(q.mean(0))) < 0.06


# ------------------------------------------------------------------------------------------------
# 4. Training loops: 200 Adam steps under jit reach the closed-form answer and stay on the
#    manifold at every step (one jitted scan per family, several manifolds per tree)
# ------------------------------------------------------------------------------------------------
def _fit(spec, init, losses, errors, *, lr=0.05, steps=200, rebase_every=None):
    """Registers ``spec`` on ``init``, then scans ``steps`` Adam steps (cosine-decayed ``lr``)
    of ``sum(losses[k](W[k]))``, all under one jit; returns the final constrained tree and the
    ``errors[k](W[k])`` of every step."""
    opt = standard_promotion(optax.adam(optax.cosine_decay_schedule(lr, steps)))

    def loss_fn(r, s):
        w = ptree.constrain(spec, r, s)
        return sum(f(w[k]) for k, f in losses.items())

    def step(carry, i):
        r, s, o = carry
        g = jax.grad(loss_fn)(r, s)
        u, o = opt.update(g, o, r)
        r = optax.apply_updates(r, u)
        if rebase_every:
            r, s = update_base(spec, r, s, when=(i + 1) % rebase_every == 0)
        w = ptree.constrain(spec, r, s)
        return (r, s, o), {k: e(w[k]) for k, e in errors.items()}

    @jax.jit
    def run(init):
        raw, state = ptree.register(spec, init, key=jax.random.key(1))
        carry = (raw, state, opt.init(raw))
        (r, s, _), errs = jax.lax.scan(step, carry, jnp.arange(steps))
        return ptree.constrain(spec, r, s), errs

    return run(init)


def _orth_err(w):
    k = w.shape[-1]
    return jnp.max(jnp.abs(w.T @ w - jnp.eye(k)))


def _polar(m):
    u, _, vh = np.linalg.svd(np.asarray(m), full_matrices=False)
    return u @ vh


def test_fit_orthogonal_family():
    m_st = normal(20, (5, 3))
    m_so = normal(21, (4, 4))
    m_so = m_so.at[:, 0].multiply(jnp.sign(jnp.linalg.det(m_so)))  # det > 0: answer = polar
    sub = np.linalg.qr(np.asarray(normal(22, (5, 2))))[0]
    proj = jnp.asarray(sub @ sub.T)
    spec = {"st": Stiefel(), "so": SO(), "gr": Grassmannian(triv="cayley")}
    init = {"st": normal(23, (5, 3)), "so": jnp.eye(4), "gr": normal(24, (5, 2))}
    losses = {
        "st": lambda w: jnp.sum((w - m_st) ** 2),
        "so": lambda w: jnp.sum((w - m_so) ** 2),
        "gr": lambda w: jnp.sum((w @ w.T - proj) ** 2),
    }
    errors = {"st": _orth_err, "so": _orth_err, "gr": _orth_err}
    w, errs = _fit(spec, init, losses, errors, lr=0.1, rebase_every=25)
    for k in errs:
        assert float(jnp.max(errs[k])) < STEP_ON_MANIFOLD, k
    np.testing.assert_allclose(w["st"], _polar(m_st), atol=FIT)
    np.testing.assert_allclose(w["so"], _polar(m_so), atol=FIT)
    np.testing.assert_allclose(w["gr"] @ w["gr"].T, proj, atol=FIT)
    assert float(jnp.linalg.det(w["so"])) > 0


def test_fit_sphere():
    m = normal(30, (3, 4))
    spec = {"exp": Sphere(radius=2.0), "emb": SphereEmbedded(radius=2.0)}
    init = {"exp": normal(31, (3, 4)), "emb": normal(32, (3, 4))}
    losses = {k: (lambda w: jnp.sum((w - m) ** 2)) for k in spec}
    errors = {k: (lambda w: jnp.max(jnp.abs(jnp.linalg.norm(w, axis=-1) - 2.0))) for k in spec}
    w, errs = _fit(spec, init, losses, errors, lr=0.3, rebase_every=25)
    answer = 2.0 * m / jnp.linalg.norm(m, axis=-1, keepdims=True)
    for k in spec:
        assert float(jnp.max(errs[k])) < 2 * STEP_ON_MANIFOLD, k
        np.testing.assert_allclose(w[k], answer, atol=FIT)


def test_fit_symmetric_family():
    g = normal(40, (4, 4))
    m = (g + g.T) / 2  # indefinite: the nearest PSSD matrix clips its negative eigenvalues
    wm, vm = np.linalg.eigh(np.asarray(m))
    clipped = (vm * np.maximum(wm, 0)) @ vm.T
    top2 = (vm[:, 2:] * np.maximum(wm[2:], 0)) @ vm[:, 2:].T  # nearest PSSD of rank <= 2
    h = normal(41, (4, 4))
    pd_target = h @ h.T / 4 + 0.5 * jnp.eye(4)
    spec = {
        "pssd": PSSD(triv="cayley"),
        "low": PSSDLowRank(2, triv="cayley"),
        "pd": PositiveDefinite(),
    }
    init = {"pssd": jnp.eye(4), "low": jnp.eye(4), "pd": jnp.eye(4)}
    losses = {
        "pssd": lambda w: jnp.sum((w - m) ** 2),
        "low": lambda w: jnp.sum((w - m) ** 2),
        "pd": lambda w: jnp.sum((w - pd_target) ** 2),
    }

    def psd_err(w):
        return jnp.maximum(jnp.max(jnp.abs(w - w.T)), -jnp.min(jnp.linalg.eigvalsh(w)))

    errors = {k: psd_err for k in spec}
    w, errs = _fit(spec, init, losses, errors, lr=0.2, rebase_every=25)
    for k in spec:
        assert float(jnp.max(errs[k])) < STEP_ON_MANIFOLD, k
    assert wm.min() < -0.1  # the problem is not trivial
    np.testing.assert_allclose(w["pssd"], clipped, atol=FIT)
    np.testing.assert_allclose(w["low"], top2, atol=FIT)
    np.testing.assert_allclose(w["pd"], pd_target, atol=FIT)
    assert float(jnp.min(jnp.linalg.eigvalsh(w["pd"]))) > 0


def test_fit_svd_family():
    # well separated singular values: near-equal ones make U and V ill-determined (a flat
    # direction of the U S Vᵀ parametrization) and slow every optimizer down
    u = np.linalg.qr(np.asarray(normal(50, (5, 4))))[0]
    v = np.linalg.qr(np.asarray(normal(51, (4, 4))))[0]
    m = jnp.asarray((u * np.array([4.0, 2.0, 1.0, 0.5])) @ v.T)
    eckart_young = (u[:, :2] * np.array([4.0, 2.0])) @ v[:, :2].T
    lam = 0.3
    m_ao = jnp.asarray((u * np.array([2.5, 1.1, 0.9, 0.2])) @ v.T)  # singular values to clip
    clipped = (u * np.clip([2.5, 1.1, 0.9, 0.2], 1 - lam, 1 + lam)) @ v.T
    q1, q2 = (np.linalg.qr(np.asarray(normal(s, (3, 3))))[0] for s in (52, 53))
    q1, q2 = q1 * np.sign(np.linalg.det(q1)), q2 * np.sign(np.linalg.det(q2))
    sl_target = jnp.asarray((q1 * np.array([2.0, 1.0, 0.5])) @ q2.T)
    spec = {"low": LowRank(2), "ao": AlmostOrthogonal(lam, triv="cayley"), "sl": SL(triv="cayley")}
    init = {"low": normal(54, (5, 4)), "ao": normal(55, (5, 4)), "sl": jnp.eye(3)}
    losses = {
        "low": lambda w: jnp.sum((w - m) ** 2),
        "ao": lambda w: jnp.sum((w - m_ao) ** 2),
        "sl": lambda w: jnp.sum((w - sl_target) ** 2),
    }
    sv = lambda w: jnp.linalg.svd(w, compute_uv=False)  # noqa: E731
    errors = {
        "low": lambda w: sv(w)[2],
        "ao": lambda w: jnp.max(jnp.maximum(jnp.abs(sv(w) - 1) - lam, 0.0)),
        "sl": lambda w: jnp.abs(jnp.linalg.det(w) - 1),
    }
    w, errs = _fit(spec, init, losses, errors, lr=0.2, rebase_every=25)
    for k in spec:
        assert float(jnp.max(errs[k])) < STEP_ON_MANIFOLD, k
    np.testing.assert_allclose(w["low"], eckart_young, atol=FIT)
    np.testing.assert_allclose(w["ao"], clipped, atol=FIT_BOUNDARY)
    np.testing.assert_allclose(w["sl"], sl_target, atol=FIT)


def test_fit_elementwise_constraints():
    p_true = jnp.array([0.1, 0.2, 0.3, 0.4])
    h = normal(60, (3, 3))
    sigma = h @ h.T + 0.5 * jnp.eye(3)
    spec = {
        "simplex": Simplex(),
        "chol": Cholesky(),
        "pos": Positive(),
        "iv": Interval(0.0, 1.0),
        "ord": Ordered(),
    }
    init = {
        "simplex": jnp.full((4,), 0.25),
        "chol": jnp.eye(3),
        "pos": jnp.ones(3),
        "iv": jnp.full((3,), 0.5),
        "ord": jnp.arange(4.0),
    }
    losses = {
        "simplex": lambda w: -jnp.sum(p_true * jnp.log(w)),  # cross-entropy: minimised at p_true
        "chol": lambda w: jnp.sum((w @ w.T - sigma) ** 2),  # unique answer: cholesky(sigma)
        "pos": lambda w: jnp.sum((w - jnp.array([0.5, 2.0, 4.0])) ** 2),
        "iv": lambda w: jnp.sum((w - jnp.array([0.1, 0.5, 0.9])) ** 2),
        "ord": lambda w: jnp.sum((w - jnp.array([-1.0, 0.0, 0.5, 3.0])) ** 2),
    }
    errors = {
        "simplex": lambda w: jnp.maximum(jnp.abs(jnp.sum(w) - 1), -jnp.min(w)),
        "chol": lambda w: jnp.maximum(jnp.max(jnp.abs(jnp.triu(w, 1))), -jnp.min(jnp.diag(w))),
        "pos": lambda w: -jnp.min(w),
        "iv": lambda w: jnp.maximum(-jnp.min(w), jnp.max(w) - 1),
        "ord": lambda w: -jnp.min(jnp.diff(w)),
    }
    w, errs = _fit(spec, init, losses, errors, lr=0.5)
    for k in spec:
        assert float(jnp.max(errs[k])) <= STEP_ON_MANIFOLD, k
    np.testing.assert_allclose(w["simplex"], p_true, atol=FIT)
    np.testing.assert_allclose(w["chol"], jnp.linalg.cholesky(sigma), atol=FIT)
    np.testing.assert_allclose(w["pos"], [0.5, 2.0, 4.0], atol=FIT)
    np.testing.assert_allclose(w["iv"], [0.1, 0.5, 0.9], atol=FIT)
    np.testing.assert_allclose(w["ord"], [-1.0, 0.0, 0.5, 3.0], atol=FIT)


# ------------------------------------------------------------------------------------------------
# 5. Registration, assignment and dynamic trivialization on trees
# ------------------------------------------------------------------------------------------------
def test_register_projects_and_assign_is_exact():
    spec = {"w": SO()}
    w0 = normal(70, (4, 4))
    target = SO().sample(jax.random.key(71), (4, 4))

    @jax.jit
    def run(w0, target):
        raw, state = ptree.register(spec, {"w": w0}, key=KEY)
        q = ptree.constrain(spec, raw, state)["w"]
        raw, state = ptree.assign(spec, raw, state, {"w": target}, key=KEY)
        return q, raw, state, ptree.constrain(spec, raw, state)["w"]

    q, raw, state, assigned = run(w0, target)
    u, _, vh = np.linalg.svd(np.asarray(w0))
    if np.linalg.det(u @ vh) < 0:
        u[:, -1] *= -1
    np.testing.assert_allclose(q, u @ vh, atol=1e-5)  # registration projects (special polar)
    assert np.all(np.asarray(assigned) == np.asarray(target))  # assignment is exact
    assert np.all(np.asarray(raw["parametrizations"]["w"]["original"]) == 0.0)
    assert state["parametrizations"]["w"]["0"]["base"].shape == (4, 4)


def test_update_base_keeps_the_value_and_resets_raw():
    spec = {
        "a": Stiefel(),
        "b": PositiveDefinite(triv="cayley"),
        "c": LowRank(2, triv="cayley"),
        "d": Sphere(),
        "e": Positive(),
    }
    tree = {
        "a": normal(80, (5, 3)),
        "b": jnp.eye(3),
        "c": normal(81, (4, 3)),
        "d": normal(82, (2, 3)),
        "e": jnp.ones(2),
    }

    @jax.jit
    def run(tree, when):
        raw, state = ptree.register(spec, tree, key=KEY)
        noisy = jax.tree.map(lambda x: x + 0.3 * jnp.cos(jnp.arange(x.size).reshape(x.shape)), raw)
        moved, new_state = update_base(spec, noisy, state, when=when)
        return noisy, state, moved, new_state

    noisy, state, moved, new_state = run(tree, jnp.asarray(True))
    constrain = jax.jit(lambda r, s: ptree.constrain(spec, r, s))
    chex.assert_trees_all_close(constrain(moved, new_state), constrain(noisy, state), atol=1e-5)
    slots, old = moved["parametrizations"], noisy["parametrizations"]
    assert np.all(np.asarray(slots["a"]["original"]) == 0.0)
    assert np.all(np.asarray(slots["d"]["original"]) == 0.0)
    np.testing.assert_array_equal(slots["e"]["original"], old["e"]["original"])
    # the eigenvalue / singular value parameters (raw diagonals) are kept
    np.testing.assert_array_equal(
        np.diagonal(slots["b"]["original"]), np.diagonal(old["b"]["original"])
    )
    np.testing.assert_array_equal(
        np.diagonal(slots["c"]["original"]), np.diagonal(old["c"]["original"])
    )
    # when=False (same compiled function): nothing moves
    noisy0, state0, moved0, new_state0 = run(tree, jnp.asarray(False))
    chex.assert_trees_all_equal((moved0, new_state0), (noisy0, state0))


def test_update_base_errors():
    with pytest.raises(px.SpecError, match="no parametrization in the spec has a base"):
        raw, state = ptree.register({"w": Positive()}, {"w": jnp.ones(3)})
        update_base({"w": Positive()}, raw, state)
    spec = {"w": [Positive(), SphereEmbedded(), Sphere()]}
    raw, state = ptree.register(spec, {"w": jnp.ones(3)}, key=KEY)
    with pytest.raises(px.SpecError, match=r"`w` has the trivialized `Sphere` at position 2"):
        update_base(spec, raw, state)


# ------------------------------------------------------------------------------------------------
# 6. Through the linen wrapper: a Dense kernel on the Stiefel manifold
# ------------------------------------------------------------------------------------------------
def test_linen_dense_on_stiefel_trains_and_stays_orthonormal():
    layer = px.Parametrized(nn.Dense, {"kernel": Stiefel()})(features=3)
    x = normal(90, (16, 5))
    y_true = normal(91, (16, 3))
    variables = jax.jit(layer.init)(KEY, x)
    shapes = jax.tree.map(jnp.shape, variables)
    assert shapes["params"]["parametrizations"]["kernel"] == {"original": (5, 3)}
    assert shapes["parametrization_state"]["parametrizations"]["kernel"]["0"] == {
        "base": (5, 3)
    }  # frame
    kernel_of = jax.jit(lambda v: px.linen.constrain(layer, v)["params"]["kernel"])
    kernel0 = kernel_of(variables)
    assert orthogonality_error(kernel0) < ON_MANIFOLD

    params, pstate = variables["params"], variables["parametrization_state"]
    opt = standard_promotion(optax.adam(0.05))
    opt_state = opt.init(params)

    @jax.jit
    def step(params, pstate, opt_state, i):
        def loss(prm):
            out = layer.apply({"params": prm, "parametrization_state": pstate}, x)
            return jnp.mean((out - y_true) ** 2)

        value, g = jax.value_and_grad(loss)(params)
        upd, opt_state = opt.update(g, opt_state)
        params = optax.apply_updates(params, upd)
        params, pstate = update_base(px.linen.spec_of(layer), params, pstate, when=i % 5 == 4)
        return params, pstate, opt_state, value

    losses = []
    for i in range(15):
        params, pstate, opt_state, value = step(params, pstate, opt_state, i)
        kernel = kernel_of({"params": params, "parametrization_state": pstate})
        assert orthogonality_error(kernel) < STEP_ON_MANIFOLD
        losses.append(float(value))
    assert losses[-1] < 0.9 * losses[0]


# ------------------------------------------------------------------------------------------------
# 7. Bad input: clear errors naming the parametrization, what was received and what was expected
# ------------------------------------------------------------------------------------------------
def test_bad_input_errors():
    with pytest.raises(px.ShapeError, match=r"`SO` acts on square matrices.*\(3, 4\).*`Stiefel`"):
        SO().forward(jnp.ones((3, 4)))
    with pytest.raises(
        px.ShapeError, match=r"`PositiveDefinite` acts on square matrices.*\(2, 3\)"
    ):
        PositiveDefinite().init_variables(KEY, jnp.ones((2, 3)))
    with pytest.raises(px.ShapeError, match=r"`LowRank`: `rank`=5 is larger.*\(4, 3\).*at most 3"):
        LowRank(5).forward(jnp.ones((4, 3)))
    with pytest.raises(px.ShapeError, match=r"`PSSDFixedRank`: `rank`=4 is larger.*at most 3"):
        PSSDFixedRank(4).sample(KEY, (3, 3))
    with pytest.raises(px.ShapeError, match=r"`Stiefel` acts on matrices.*\(4,\)"):
        Stiefel().forward(jnp.ones(4))
    with pytest.raises(px.ShapeError, match=r"`Stiefel` needs a real floating-point.*int32"):
        Stiefel().forward(jnp.ones((3, 2), jnp.int32))
    with pytest.raises(
        px.ParametrizationError, match=r"`Interval`: needs `low` < `high`; got low=1.0, high=1.0"
    ):
        Interval(1.0, 1.0)
    with pytest.raises(
        px.ParametrizationError,
        match=r"`SO`: unknown `triv`='qr'; expected one of 'expm', 'cayley'",
    ):
        SO(triv="qr")
    with pytest.raises(px.ParametrizationTypeError, match=r"`Stiefel`: `triv` must be one of"):
        Stiefel(triv=3)
    with pytest.raises(
        px.ParametrizationError,
        match=r"`PositiveDefinite`: unknown `f`='relu'; expected one of 'softplus', 'exp'",
    ):
        PositiveDefinite(f="relu")
    with pytest.raises(
        px.ParametrizationError,
        match=r"`AlmostOrthogonal`: `lam` must be a float in \(0, 1\]; got 1.5",
    ):
        AlmostOrthogonal(1.5)
    with pytest.raises(
        px.ParametrizationError, match=r"`LowRank`: `rank` must be a positive int; got 0"
    ):
        LowRank(0)
    with pytest.raises(
        px.ParametrizationError, match=r"`Sphere`: `radius` must be a positive float; got -1"
    ):
        Sphere(radius=-1)
    with pytest.raises(px.ParametrizationTypeError, match=r"`Sphere`: `axis` must be an int.*1.5"):
        Sphere(axis=1.5)
    assert Sphere(axis=[0, 1]) == Sphere(axis=(0, 1))  # one axis rule: lists become tuples
    assert hash(Sphere(axis=[0, 1])) == hash(Sphere(axis=(0, 1)))
    with pytest.raises(px.ShapeError, match=r"`Simplex`: `axis`=2 is out of range.*\(3, 4\)"):
        Simplex(axis=2).forward(jnp.ones((3, 4)))
    with pytest.raises(
        px.ParametrizationError,
        match=r"`SO`.sample: unknown `init`='gaussian'; expected one of 'uniform', 'torus'",
    ):
        SO().sample(KEY, (3, 3), init="gaussian")


@pytest.mark.parametrize(
    "p, x",
    [
        (Sphere(axis=5), jnp.ones((3, 4))),
        (SphereEmbedded(axis=(0, -2)), jnp.ones((3, 4))),  # repeated
        (Simplex(axis=2), jnp.ones((3, 4))),
        (Ordered(axis=-3), jnp.ones((3, 4))),
        (px.WeightNorm(axis=5), jnp.ones((3, 4))),
        (px.SpectralNorm(axis=5), jnp.ones((3, 4))),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, px.Parametrization) else "",
)
def test_one_axis_error_for_every_entry_with_an_axis(p, x):
    """One axis rule: out of range (or repeated) is an AxisError, a ShapeError and an IndexError,
    naming the entry, the axis, the shape and the valid range."""
    inverse = p.right_inverse if not p.has_variables else None
    with pytest.raises(px.AxisError, match=rf"`{type(p).__name__}`: `axis`=.* shape \(3, 4\)") as e:
        if p.has_variables:
            p.init_variables(KEY, x)
        else:
            inverse(x)
    assert isinstance(e.value, px.ShapeError) and isinstance(e.value, IndexError)
    if "repeated" not in str(e.value):
        assert "in range of [-2, 1]" in str(e.value)


def test_bad_input_through_registration_names_the_path():
    with pytest.raises(px.ShapeError, match=r"parametrizing `w` with \[SO\]: `SO` acts on square"):
        ptree.register({"w": SO()}, {"w": jnp.ones((3, 4))}, key=KEY)


class _UnhashableMap:
    def __eq__(self, other):
        return isinstance(other, _UnhashableMap)

    def __call__(self, x):
        return jnp.exp(x)


def test_unhashable_scalar_map_is_refused():
    with pytest.raises(px.ParametrizationTypeError, match="`Positive`: `f`=.* is not hashable"):
        Positive(f=_UnhashableMap())
    with pytest.raises(px.ParametrizationTypeError, match="pair \\(f, f_inverse\\) of callables"):
        Positive(f=(jnp.exp, "log"))


# ------------------------------------------------------------------------------------------------
# Every exported entry: honest has_right_inverse, forward-mode derivatives
# ------------------------------------------------------------------------------------------------
EVERY_ENTRY = [
    px.Symmetric(),
    px.Skew(),
    px.Cayley(),
    px.MatrixExp(),
    px.Orthogonal(),
    px.Orthogonal("matrix_exp", use_trivialization=False),
    px.Orthogonal("cayley", use_trivialization=False),
    px.Orthogonal("householder", use_trivialization=False),
    px.SpectralNorm(),
    px.SpectralNorm(exact=True),
    px.WeightNorm(),
    px.RandomPruning(),
    Stiefel(),
    SO(triv="cayley"),
    Grassmannian(),
    Sphere(),
    SphereEmbedded(),
    PositiveDefinite(),
    PositiveDefinite(f=jnp.exp),  # a callable without inverse: no right inverse
    PSSD(),
    PSSDLowRank(2),
    PSSDFixedRank(2),
    LowRank(2),
    FixedRank(2),
    FixedRank(2, f=jnp.exp),
    Invertible(),
    SL(),
    AlmostOrthogonal(0.5),
    Positive(),
    Positive(f=jnp.exp),
    Interval(-1.0, 2.0),
    Simplex(),
    Ordered(),
    Ordered(f=(jnp.exp, jnp.log)),
    LowerTriangular(),
    Cholesky(),
    Cholesky(f=jnp.exp),
    px.Hurwitz(alpha=0.1),
    px.CorrelationCholesky(),
    px.ProductManifold((Positive(), Simplex()), sizes=(2, 2)),
    px.ProductManifold((px.Stiefel(triv="cayley"), None), sizes=(2, 2)),
]
_SQ = (4, 4)
# Entries whose raw value cannot be a 4 x 4 matrix, with the shape they take.
SHAPED_ENTRIES = [
    (px.ConvSpectralNorm((5,)), (3, 2, 2)),  # a 1-D conv kernel (width, in, out)
    (px.ConvSpectralNorm((4,), padding="CIRCULAR", exact=True), (3, 2, 2)),
]
_ALL = [(p, _SQ) for p in EVERY_ENTRY] + SHAPED_ENTRIES


def _raw_like(key, shape):
    eye = jnp.eye(shape[-1]) if shape[-1] == shape[-2] else 0.0
    return 0.3 * jax.random.normal(key, shape) + eye


def test_every_exported_entry_is_in_every_entry():
    from parametrax import catalog

    have = {type(p) for p, _ in _ALL}
    missing = [
        n
        for n in catalog.__all__
        if isinstance(getattr(catalog, n), type) and getattr(catalog, n) not in have
    ]
    assert not missing, missing


def _value_of(p, raw):
    """``raw -> value`` for ``p`` (variables made once, from ``raw``)."""
    if isinstance(p, px.WeightNorm):
        g, v = p.right_inverse(raw)
        return lambda r: p(g, r)
    if p.has_variables:
        variables = p.init_variables(KEY, raw)
        return lambda r: p.apply(variables, r)[0]
    return p.forward


@pytest.mark.parametrize("p,shape", _ALL, ids=stable_id)
def test_has_right_inverse_is_true_exactly_where_assignment_works(p, shape):
    raw = _raw_like(KEY, shape)
    value = _value_of(p, raw)(raw)
    spec = {"w": p}
    r, s = ptree.register(spec, {"w": value}, key=KEY, unsafe=True)
    if p.has_right_inverse:
        r2, _ = ptree.assign(spec, r, s, {"w": value}, key=KEY)
        assert jax.tree.structure(r2) == jax.tree.structure(r)
    else:
        with pytest.raises(px.RightInverseError, match="does not implement right_inverse"):
            ptree.assign(spec, r, s, {"w": value}, key=KEY)


@pytest.mark.parametrize("p,shape", _ALL, ids=stable_id)
def test_forward_mode_derivatives_work_on_every_entry(p, shape):
    """jax.jvp and jax.jacfwd run (no custom_vjp anywhere on the path) and agree with reverse
    mode and with central finite differences."""
    k1, k2 = jax.random.split(jax.random.key(7))
    raw = _raw_like(k1, shape)
    t = jax.random.normal(k2, shape)
    f = _value_of(p, raw)
    _, jvp = jax.jvp(f, (raw,), (t,))
    jf = jax.jacfwd(f)(raw)
    jr = jax.jacrev(f)(raw)
    np.testing.assert_allclose(jf, jr, atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(jvp, jnp.tensordot(jf, t, axes=len(shape)), atol=1e-4, rtol=1e-3)
    eps = 1e-3
    fd = (f(raw + eps * t) - f(raw - eps * t)) / (2 * eps)
    np.testing.assert_allclose(jvp, fd, atol=3e-2 * max(1.0, float(jnp.max(jnp.abs(fd)))))


# --- issue 16: half precision of the orthogonal family, zero vectors on the sphere ---------------
def _np_orth_err(q):
    q = np.asarray(q, np.float64)
    if q.shape[-2] < q.shape[-1]:
        q = np.swapaxes(q, -1, -2)
    return float(np.max(np.abs(np.swapaxes(q, -1, -2) @ q - np.eye(q.shape[-1]))))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize(
    "entry,shape",
    [
        (Stiefel(), (6, 3)),
        (Stiefel(triv="cayley"), (3, 6)),
        (Grassmannian(), (4, 4)),
        (Grassmannian(triv="cayley"), (6, 3)),
        (SO(), (4, 4)),
        (SO(triv="cayley"), (5, 5)),
    ],
    ids=str,
)
def test_half_precision_gaussian_is_projected_not_kept(entry, shape, dtype):
    # on_manifold_tol(bf16) was 100 eps = 0.78: a bf16 Gaussian counted as orthonormal and
    # became the base point. Bound: one rounding of an orthonormal matrix (2 eps) and the base's.
    w = jax.random.normal(KEY, (3,) + shape, jnp.float32).astype(dtype)
    raw, state = ptree.register({"w": entry}, {"w": w}, key=KEY)
    raw = jax.tree.map(lambda r: r + jnp.asarray(0.05, r.dtype), raw)
    q = ptree.constrain({"w": entry}, raw, state)["w"]
    assert q.dtype == dtype
    eps = float(jnp.finfo(dtype).eps)
    assert _np_orth_err(q) < 4 * eps
    if isinstance(entry, SO):
        assert np.all(np.linalg.det(np.asarray(q, np.float64)) > 0)
    if not isinstance(entry, SO):  # the polar factor, computed independently in float64
        u, _, vt = np.linalg.svd(np.asarray(w, np.float64), full_matrices=False)
        np.testing.assert_allclose(np.asarray(entry.project(w), np.float64), u @ vt, atol=2 * eps)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_rounded_manifold_point_is_kept_exactly(dtype):
    q = jnp.asarray(np.linalg.qr(np.random.default_rng(0).standard_normal((6, 3)))[0], dtype)
    np.testing.assert_array_equal(np.asarray(Stiefel().project(q)), np.asarray(q))
    far = q.at[0, 0].add(0.25)
    assert not np.array_equal(np.asarray(Stiefel().project(far)), np.asarray(far))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("axis", [-1, -2, None])
def test_sphere_embedded_zero_vector_maps_to_a_point_of_the_sphere(axis, dtype):
    p = SphereEmbedded(radius=2.0, axis=axis)
    w = np.random.default_rng(1).standard_normal((4, 3))
    w[1] = 0.0
    w[:, 2] = 0.0
    w = jnp.asarray(w if axis is not None else np.zeros((4, 3)), dtype)
    raw, state = ptree.register({"w": p}, {"w": w}, key=KEY)
    y = np.asarray(ptree.constrain({"w": p}, raw, state)["w"], np.float64)
    norms = np.sqrt(np.sum(y * y, axis=axis))
    np.testing.assert_allclose(norms, 2.0, rtol=2 * float(jnp.finfo(dtype).eps))
    g = jax.grad(lambda r: jnp.sum(p(r).astype(jnp.float32) * jnp.arange(12.0).reshape(4, 3)))(
        raw["parametrizations"]["w"]["original"]
    )
    assert np.all(np.isfinite(np.asarray(g, np.float64)))
    np.testing.assert_allclose(
        np.asarray(p(jnp.zeros((4, 3), dtype)), np.float64).sum(),
        2.0 * (4 if axis == -1 else 3 if axis == -2 else 1),
    )


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_sphere_embedded_tiny_and_huge_vectors_stay_on_the_sphere(scale):
    x = jnp.asarray(np.random.default_rng(2).standard_normal((5, 4)) * scale, jnp.float32)
    y = np.asarray(SphereEmbedded()(x), np.float64)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), 1.0, rtol=1e-6)
