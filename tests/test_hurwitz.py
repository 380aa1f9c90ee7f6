"""Hurwitz matrices: closed forms, numpy eigenvalues as the membership oracle, the Lyapunov
right inverse and its documented projection, training in the tree API, linen and NNX (the
contract runs in the table of tests/test_contract.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.test_util import check_grads

import parametrax as px
from parametrax import nnx as pnnx
from parametrax import tree as ptree
from parametrax.catalog import hurwitz as hurwitz_module
from parametrax.catalog.hurwitz import lyapunov, lyapunov_kron, lyapunov_schur

from _helpers import normal, standard_promotion

ROUND_TRIP = 1e-4  # float32, relative to max(1, max|A|), for values well inside the set
STEPS = 60


def max_real(a):
    """numpy's eigenvalues (the oracle): the largest real part per matrix."""
    return np.linalg.eigvals(np.asarray(a, np.float64)).real.max(axis=-1)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / max(1.0, np.max(np.abs(b)))


# ------------------------------------------------------------------------------------------------
# forward: closed form and membership
# ------------------------------------------------------------------------------------------------
EPS32 = float(np.finfo(np.float32).eps)


def rounding_margin(b, eps=EPS32):
    """The documented rounding margin of forward, ``δ = 2 eps ||B||_F`` (numpy)."""
    return 2 * eps * np.linalg.norm(np.asarray(b, np.float64), axis=(-2, -1))


def test_forward_closed_form_zero_lower_triangle():
    # Nothing on or below the diagonal: S = 0, Q = I, so A = J - I/2 - (alpha + δ) I; a skew J
    # has purely imaginary eigenvalues, so every Re λ is -1/2 - alpha - δ.
    x = np.zeros((3, 3), np.float32)
    x[0, 1], x[0, 2], x[1, 2] = 2.0, -1.0, 0.5
    a = np.asarray(px.Hurwitz(alpha=0.25)(jnp.asarray(x)))
    j = np.triu(x, 1) - np.triu(x, 1).T
    delta = rounding_margin(j - 0.5 * np.eye(3))
    assert 1e-7 < delta < 1e-6
    np.testing.assert_allclose(a, j - (0.75 + delta) * np.eye(3), atol=1e-6)
    np.testing.assert_allclose(np.linalg.eigvals(a).real, -0.75, atol=1e-5)
    delta = rounding_margin(-0.5 * np.eye(2))  # sqrt(2) eps
    np.testing.assert_allclose(
        px.Hurwitz()(jnp.zeros((2, 2))), -(0.5 + delta) * np.eye(2), rtol=0, atol=6e-8
    )  # one float32 ulp at 0.5


def test_forward_closed_form_diagonal():
    # J = 0 and a diagonal S: A = -exp(diag d) / 2 - alpha I.
    d = np.array([-1.0, 0.0, 2.0], np.float32)
    a = np.asarray(px.Hurwitz(alpha=0.1)(jnp.diag(jnp.asarray(d))))
    np.testing.assert_allclose(a, np.diag(-np.exp(d) / 2 - 0.1), rtol=1e-5)


def test_forward_closed_form_general():
    # Q = expm(S) from scipy (an independent matrix exponential).
    from scipy.linalg import expm as scipy_expm

    x = np.asarray(normal(12, (4, 4)), np.float64)
    s_ = np.tril(x) + np.tril(x, -1).T
    j = np.triu(x, 1) - np.triu(x, 1).T
    expected = (j - 0.5 * np.eye(4)) @ scipy_expm(s_) - 0.3 * np.eye(4)
    got = px.Hurwitz(alpha=0.3)(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 2.0])
def test_forward_is_hurwitz_for_any_raw(alpha):
    h = px.Hurwitz(alpha=alpha)
    for seed, scale in [(0, 1.0), (1, 2.0), (2, 0.1)]:
        x = scale * normal(seed, (8, 5, 5))
        a = h(x)
        assert a.shape == (8, 5, 5)
        assert np.all(max_real(a) < -alpha)
        assert bool(h.in_manifold(a))


def test_eigenvalue_bound_from_lyapunov():
    # Re λ <= -alpha - exp(λ_min(S))/2 (the class docstring), S from the raw's lower triangle.
    x = normal(10, (20, 4, 4))
    a = px.Hurwitz(alpha=0.2)(x)
    xs = np.asarray(x, np.float64)
    s_ = np.tril(xs) + np.swapaxes(np.tril(xs, -1), -1, -2)
    bound = -0.2 - np.exp(np.linalg.eigvalsh(s_)[:, 0]) / 2
    assert np.all(max_real(a) <= bound + 1e-4)


def test_in_manifold_agrees_with_numpy_eigenvalues():
    h = px.Hurwitz(alpha=0.5)
    m = np.asarray(normal(3, (40, 4, 4))) - 2.0 * np.eye(4, dtype=np.float32)
    truth = max_real(m) < -0.5
    margin = np.abs(max_real(m) + 0.5) > 1e-2  # leave out the float32 edge
    assert 5 < truth.sum() < 35  # both kinds present
    got = np.array([bool(h.in_manifold(jnp.asarray(mi))) for mi in m])
    np.testing.assert_array_equal(got[margin], truth[margin])
    assert not bool(h.in_manifold(jnp.asarray(m)))  # a batch: all of them or False


def test_eager_membership_is_one_compiled_solve():
    """An eager ``in_manifold`` runs the Lyapunov solve as one compiled program (it was the
    Schur solver's column solves op by op: 200 ms for a 4 x 4), compiled once per shape."""
    h = px.Hurwitz(alpha=0.5)
    m = np.asarray(normal(4, (3, 5, 5))) - 2.0 * np.eye(5, dtype=np.float32)
    first = bool(h.in_manifold(jnp.asarray(m[0])))
    compiled = hurwitz_module._lyapunov._cache_size()
    assert compiled >= 1  # the solve ran as a compiled program
    got = [first] + [bool(h.in_manifold(jnp.asarray(mi))) for mi in m[1:]]
    assert hurwitz_module._lyapunov._cache_size() == compiled  # and no new one per read
    assert got == list(max_real(m) < -0.5)


def test_lyapunov_solution():
    b = np.asarray(px.Hurwitz().sample(jax.random.key(1), (3, 4, 4)), np.float64)
    p = np.asarray(lyapunov(jnp.asarray(b, jnp.float32)), np.float64)
    res = np.swapaxes(b, -1, -2) @ p + p @ b + np.eye(4)
    assert np.max(np.abs(res)) < 1e-4
    assert np.all(np.linalg.eigvalsh(p) > 0)


# ------------------------------------------------------------------------------------------------
# right inverse: exact on the set, a documented projection off it
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_round_trip_on_samples(alpha):
    h = px.Hurwitz(alpha=alpha)
    a = h.sample(jax.random.key(2), (6, 4, 4))
    assert np.all(max_real(a) < -alpha)
    x = h.right_inverse(a)
    assert x.shape == a.shape and x.dtype == a.dtype
    assert rel_err(h(x), a) < ROUND_TRIP


def test_round_trip_needs_the_lyapunov_branch():
    # Hurwitz but with an indefinite symmetric part: Q = I cannot represent it.
    a = jnp.array([[-1.0, 10.0, 0.0], [0.0, -2.0, 5.0], [0.0, 0.0, -0.5]])
    assert np.linalg.eigvalsh(np.asarray(a + a.T)).max() > 0
    h = px.Hurwitz()
    x = h.right_inverse(a)
    assert rel_err(h(x), a) < ROUND_TRIP
    assert np.max(np.abs(np.tril(np.asarray(x)))) > 0.1  # Q = expm(S) is not the identity


def test_right_inverse_is_the_inverse_of_forward():
    # A bijection: right_inverse(forward(X)) == X for raws of moderate size.
    h = px.Hurwitz(alpha=0.3)
    x = normal(11, (5, 3, 3))
    np.testing.assert_allclose(h.right_inverse(h(x)), x, atol=1e-3)


def test_projection_of_a_value_off_the_set_is_the_documented_shift():
    h = px.Hurwitz(alpha=0.2)
    a = np.asarray(normal(5, (4, 4)))
    assert max_real(a) > -0.2
    got = np.asarray(h(h.right_inverse(jnp.asarray(a))), np.float64)
    b = a.astype(np.float64) + 0.2 * np.eye(4)
    lam = np.linalg.eigvalsh((b + b.T) / 2)
    delta = 1e-2 * max(1.0, np.abs(lam).max())
    expected = a - max(lam[-1] + delta, 0.0) * np.eye(4)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert max_real(got) < -0.2


def test_right_inverse_bfloat16_and_jit():
    h = px.Hurwitz(alpha=0.1)
    a = h.sample(jax.random.key(3), (3, 3)).astype(jnp.bfloat16)
    x = jax.jit(h.right_inverse)(a)
    assert x.dtype == jnp.bfloat16
    assert max_real(np.asarray(h(x), np.float32)) < -0.1


def test_gradients_match_finite_differences():
    h = px.Hurwitz(alpha=0.1)
    x = normal(6, (3, 3))
    c = normal(7, (3, 3))
    check_grads(
        lambda x: jnp.sum(c * h(x)), (x,), order=1, modes=["rev"], eps=1e-2, atol=2e-2, rtol=2e-2
    )


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
def test_bad_configuration():
    with pytest.raises(px.ParametrizationError, match="`alpha`.*>= 0; got -1"):
        px.Hurwitz(alpha=-1.0)
    with pytest.raises(px.ParametrizationError, match="finite"):
        px.Hurwitz(alpha=float("inf"))
    with pytest.raises(px.ParametrizationTypeError, match="Python float; got str"):
        px.Hurwitz(alpha="0.1")
    assert px.Hurwitz(1) == px.Hurwitz(1.0) and hash(px.Hurwitz(1)) == hash(px.Hurwitz(1.0))


def test_bad_shapes():
    h = px.Hurwitz()
    with pytest.raises(px.ShapeError, match="square"):
        h.right_inverse(jnp.ones((3, 4)))
    with pytest.raises(px.ShapeError, match="floating"):
        h.right_inverse(jnp.ones((3, 3), jnp.int32))
    with pytest.raises(px.ShapeError, match="square"):
        h(jnp.ones((2, 3)))
    with pytest.raises(px.ShapeError, match="square"):
        h.sample(jax.random.key(0), (2, 3))


# ------------------------------------------------------------------------------------------------
# training: the tree API, linen, NNX
# ------------------------------------------------------------------------------------------------
TARGET = jnp.array([[0.5, 1.0, 0.0], [-1.0, 0.3, 0.0], [0.0, 0.0, -2.0]])  # unstable


def test_tree_api_training_stays_hurwitz():
    h = px.Hurwitz(alpha=0.1)
    spec = {"A": h}
    raw, state = ptree.register(spec, {"A": -jnp.eye(3), "b": jnp.zeros(3)})
    assert set(raw["parametrizations"]["A"]) == {"original"}
    tx = standard_promotion(optax.adam(0.05))
    opt = tx.init(raw)

    @jax.jit
    def step(raw, opt):
        loss, g = jax.value_and_grad(
            lambda r: jnp.sum((ptree.constrain(spec, r, state)["A"] - TARGET) ** 2)
        )(raw)
        u, opt = tx.update(g, opt, raw)
        return optax.apply_updates(raw, u), opt, loss

    losses = []
    for _ in range(STEPS):
        raw, opt, loss = step(raw, opt)
        losses.append(float(loss))
        assert max_real(ptree.constrain(spec, raw, state)["A"]) < -0.1
    assert losses[-1] < 0.5 * losses[0]


def test_linen_dense_registers_the_projection_and_trains():
    layer = px.Parametrized(nn.Dense, {"kernel": px.Hurwitz()})(features=4, use_bias=False)
    x = normal(8, (16, 4))
    variables = layer.init(jax.random.key(0), x)
    slot = variables["params"]["parametrizations"]["kernel"]
    assert set(slot) == {"original"}
    plain = nn.Dense(4, use_bias=False).init(jax.random.key(0), x)["params"]["kernel"]
    kernel = px.linen.constrain(layer, variables)["params"]["kernel"]
    if max_real(plain) < 0:  # registration keeps a Hurwitz kernel ...
        np.testing.assert_allclose(kernel, plain, atol=1e-4)
    assert max_real(kernel) < 0  # ... and projects any other
    np.testing.assert_allclose(layer.apply(variables, x), x @ kernel, atol=1e-4)

    params = variables["params"]
    tx = standard_promotion(optax.adam(0.05))
    opt = tx.init(params)
    y = 2.0 * x  # the best fit, kernel 2 I, is unstable: the fit presses on the edge

    @jax.jit
    def step(params, opt):
        loss, g = jax.value_and_grad(lambda p: jnp.mean((layer.apply({"params": p}, x) - y) ** 2))(
            params
        )
        u, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, u), opt, loss

    losses = []
    for _ in range(STEPS):
        params, opt, loss = step(params, opt)
        losses.append(float(loss))
        assert max_real(px.linen.constrain(layer, {"params": params})["params"]["kernel"]) < 0
    assert losses[-1] < losses[0]


def test_nnx_register_assign_and_train():
    layer = nnx.Linear(3, 3, use_bias=False, rngs=nnx.Rngs(0))
    pnnx.register_parametrization(layer, "kernel", px.Hurwitz(alpha=0.2))
    assert max_real(layer.kernel) < -0.2
    a = px.Hurwitz(alpha=0.2).sample(jax.random.key(4), (3, 3))
    layer.kernel = a  # the right inverse, in place
    assert rel_err(layer.kernel, a) < ROUND_TRIP

    optimizer = nnx.Optimizer(layer, standard_promotion(optax.adam(0.05)), wrt=nnx.Param)
    x = normal(9, (16, 3))
    y = x @ TARGET

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(layer, optimizer)) for _ in range(STEPS)]
    assert max_real(layer.kernel) < -0.2
    assert losses[-1] < losses[0]


# ------------------------------------------------------------------------------------------------
# the O(n³) Lyapunov solver (Bartels–Stewart) against the O(n⁶) Kronecker one and scipy
# ------------------------------------------------------------------------------------------------
def _scipy_lyapunov(b):
    """scipy's Bartels–Stewart in float64 (the oracle): BᵀP + PB = -I."""
    from scipy.linalg import solve_continuous_lyapunov

    b = np.asarray(b, np.float64)
    eye = np.eye(b.shape[-1])
    flat = b.reshape((-1,) + b.shape[-2:])
    out = [solve_continuous_lyapunov(bi.T, -eye) for bi in flat]
    return np.stack(out).reshape(b.shape)


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_lyapunov_schur_matches_kronecker_and_scipy(n):
    # Hurwitz samples and general matrices (non-normal, with complex eigenvalues and a
    # non-Hurwitz one: the solution exists unless two eigenvalues sum to 0).
    b = jnp.concatenate(
        [px.Hurwitz().sample(jax.random.key(n), (3, n, n)), normal(n, (2, n, n)) - 0.3 * jnp.eye(n)]
    )
    ref = _scipy_lyapunov(b)
    scale = np.max(np.abs(ref), axis=(-2, -1), keepdims=True)
    for solver in (lyapunov, lyapunov_schur, lyapunov_kron):
        got = np.asarray(solver(b), np.float64)
        assert np.max(np.abs(got - ref) / scale) < 2e-5, solver.__name__
    np.testing.assert_allclose(
        lyapunov_schur(b), lyapunov_kron(b), rtol=0, atol=2e-5 * float(scale.max())
    )


def test_lyapunov_is_the_schur_solver_on_cpu():
    b = px.Hurwitz().sample(jax.random.key(5), (6, 6))
    np.testing.assert_array_equal(jax.jit(lyapunov)(b), jax.jit(lyapunov_schur)(b))


def test_lyapunov_schur_large_n_residual():
    # n = 96: the Kronecker system would be 9216 x 9216 (O(n⁶)); Bartels–Stewart is O(n³).
    b = px.Hurwitz().sample(jax.random.key(7), (96, 96))
    p = np.asarray(lyapunov(b), np.float64)
    bd = np.asarray(b, np.float64)
    res = bd.T @ p + p @ bd + np.eye(96)
    assert np.max(np.abs(res)) < 1e-4 * max(1.0, np.max(np.abs(p)))
    np.testing.assert_allclose(p, _scipy_lyapunov(b), atol=1e-4 * np.max(np.abs(p)))
    assert bool(px.Hurwitz().in_manifold(b))
    assert not bool(px.Hurwitz().in_manifold(b + 10.0 * jnp.eye(96)))


def test_lyapunov_gradients_match_kronecker_and_finite_differences():
    b = px.Hurwitz().sample(jax.random.key(3), (2, 4, 4))
    w = normal(4, (2, 4, 4))

    def loss(solver):
        return lambda b: jnp.sum(w * solver(b))

    g_schur = jax.grad(loss(lyapunov))(b)
    g_kron = jax.grad(loss(lyapunov_kron))(b)
    np.testing.assert_allclose(g_schur, g_kron, rtol=1e-4, atol=1e-4 * float(jnp.abs(g_kron).max()))
    # forward and reverse mode against central differences (float32: loose)
    check_grads(lyapunov, (b,), order=1, modes=("fwd", "rev"), atol=2e-2, rtol=2e-2)
    # vmap of the gradient
    gv = jax.vmap(jax.grad(lambda bi, wi: jnp.sum(wi * lyapunov(bi))))(b, w)
    np.testing.assert_allclose(gv, g_schur, rtol=1e-5, atol=1e-5)


def test_lyapunov_singular_equation_is_not_in_the_set():
    # Eigenvalues ±i (sum 0): the equation is singular; the boundary is not in the open set.
    b = jnp.array([[0.0, 1.0], [-1.0, 0.0]])
    assert not np.all(np.isfinite(np.asarray(lyapunov_schur(b))))
    assert not bool(px.Hurwitz().in_manifold(b))
    assert not bool(px.Hurwitz(alpha=1.0).in_manifold(b - jnp.eye(2)))


# ------------------------------------------------------------------------------------------------
# issue 16 (the optimizer-and-init sweep): every finite raw maps onto the set, as stored
# ------------------------------------------------------------------------------------------------
# The sweep found (tests/test_sweep.py, Hurwitz): a huge initial value went non-finite after one
# SGD step (the raw reached 1e6, expm clamped Q to max/2 and (J - I/2) Q overflowed); Adam with a
# huge learning rate left the set (the margin exp(λ_min(S))/2 and alpha fell below the rounding of
# A); bfloat16 momentum drifted off the set by ~1e-3 (the float32 A, pressed against the edge by
# the fit, lost its margin when rounded to bfloat16). The map now scales J and S back into balls
# and subtracts the rounding margin δ = 2 eps ||B||_F (see Hurwitz).
def stress_raws(n, norm, seed):
    """Raws of Frobenius norm ``norm`` in four kinds of direction: generic, S only, J only (a
    tiny diagonal), diagonal S with J (the mixes that lost membership without the margin)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((200, n, n))
    x[50:100] *= np.tril(np.ones((n, n)))
    x[100:150] *= np.triu(np.ones((n, n)), 1) + 0.01 * np.eye(n)
    x[150:] *= np.eye(n) + np.triu(np.ones((n, n)), 1)
    return x / np.linalg.norm(x, axis=(-2, -1), keepdims=True) * norm


NORMS = {jnp.float32: (1.0, 6.0, 20.0, 1e4, 1e30), jnp.bfloat16: (1.0, 6.0, 20.0, 1e4, 1e30)}
NORMS[jnp.float16] = (1.0, 6.0, 20.0, 1e4)


def count_off_the_set(dtype, alpha, ns=(2, 4, 6)):
    """(raws tried, raws whose value, as stored in ``dtype``, is not finite or has an eigenvalue
    with real part >= -alpha by numpy's float64 eigenvalues)."""
    f = jax.jit(px.Hurwitz(alpha=alpha).forward)
    tried = off = 0
    for n in ns:
        for k, norm in enumerate(NORMS[dtype]):
            x = jnp.asarray(stress_raws(n, norm, seed=10 * n + k), dtype)
            a = np.asarray(f(x).astype(jnp.float32), np.float64)
            finite = np.all(np.isfinite(a), axis=(-2, -1))
            top = np.where(finite, max_real(np.where(finite[:, None, None], a, 0.0)), np.inf)
            tried += len(a)
            off += int(np.sum(top >= -alpha))
    return tried, off


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_every_raw_scale_gives_a_finite_value_in_the_set(dtype, alpha):
    tried, off = count_off_the_set(dtype, alpha)
    assert tried == 3 * len(NORMS[dtype]) * 200
    assert off == 0, f"{off} of {tried} {jnp.dtype(dtype).name} values off the set"


def test_the_rounding_margin_is_what_keeps_float32(monkeypatch):
    # Without δ (ROUNDING_ULPS = 0) some float32 raws lose membership (23 of 3000 when written):
    # the margin is load-bearing.
    monkeypatch.setattr(hurwitz_module, "ROUNDING_ULPS", 0.0)
    tried, off = count_off_the_set(jnp.float32, 0.0)
    assert off > 0, (off, tried)


def test_the_bfloat16_balls_are_what_keep_bfloat16(monkeypatch):
    # bfloat16 with float32's balls (R_J = 5.2e5 instead of 8): the rotation part's rounding
    # outgrows δ and values leave the set; the dtype's own balls keep every one (test above).
    monkeypatch.setattr(hurwitz_module, "sym_radius", lambda d: 0.5 * np.log(2.0**23))
    monkeypatch.setattr(hurwitz_module, "skew_radius", lambda d: 2.0**23 / 16)
    tried, off = count_off_the_set(jnp.bfloat16, 0.0)
    assert off > 0, (off, tried)


def test_forward_scales_j_and_s_back_into_the_documented_balls():
    from parametrax.catalog.hurwitz import skew_radius, sym_radius

    assert sym_radius(jnp.float32) == pytest.approx(0.5 * np.log(2.0**23))  # 7.97
    assert skew_radius(jnp.float32) == pytest.approx(2.0**23 / 16)
    assert sym_radius(jnp.bfloat16) == pytest.approx(0.5 * np.log(2.0**7))  # 2.43
    assert skew_radius(jnp.bfloat16) == 8.0
    # S = diag(20, 0, -3): ||S||_inf = 20 -> S scaled by R_S / 20; J = 0: a diagonal closed form
    d = np.array([20.0, 0.0, -3.0])
    s_ = d * sym_radius(jnp.float32) / 20.0
    b = np.diag(-np.exp(s_) / 2)
    a = px.Hurwitz(alpha=0.1)(jnp.diag(jnp.asarray(d, jnp.float32)))
    np.testing.assert_allclose(a, b - (0.1 + rounding_margin(b)) * np.eye(3), rtol=1e-5)
    # S = 0, J with ||J||_inf = 2e7: A = J R_J / 2e7 - (1/2 + δ) I
    x = np.zeros((3, 3), np.float32)
    x[0, 1], x[1, 2] = 1e7, -1e7
    j = np.triu(x, 1) - np.triu(x, 1).T
    jc = j * skew_radius(jnp.float32) / 2e7
    b = jc - 0.5 * np.eye(3)
    a = px.Hurwitz()(jnp.asarray(x))
    np.testing.assert_allclose(a, b - rounding_margin(b) * np.eye(3), rtol=1e-6, atol=1e-6)
    # Inside the balls nothing is scaled: the closed form of test_forward_closed_form_general.


def test_right_inverse_of_huge_values_stays_in_the_balls_and_the_set():
    from parametrax.catalog.hurwitz import sym_radius

    h = px.Hurwitz(alpha=0.1)
    big = normal(21, (2, 4, 4), scale=1e4)  # off the set: projected, then inverted
    stable = -1e6 * jnp.eye(4) + normal(22, (4, 4))  # in the set, S = log(2e6) I beyond R_S
    for value in (big, stable):
        raw = np.asarray(h.right_inverse(value), np.float64)
        assert np.all(np.isfinite(raw))
        s_ = np.tril(raw) + np.swapaxes(np.tril(raw, -1), -1, -2)
        assert np.abs(s_).sum(-1).max() <= sym_radius(jnp.float32) * (1 + 1e-5)
        a = h(jnp.asarray(raw, jnp.float32))
        assert np.all(np.isfinite(a)) and np.all(max_real(a) < -0.1)


def test_bfloat16_momentum_toward_an_unreachable_target_stays_in_the_set():
    # The sweep's case Hurwitz|momentum|square|bf16|default: flax's default kernel init, SGD with
    # momentum 0.9 toward a large, unstable target; every step's value (bfloat16) in the set.
    h = px.Hurwitz(alpha=0.1)
    spec = {"w": h}
    init = jax.nn.initializers.lecun_normal()(jax.random.key(0), (4, 4), jnp.float32)
    raw, state = ptree.register(spec, {"w": init.astype(jnp.bfloat16)})
    target = jnp.asarray(3.0 + np.arange(16).reshape(4, 4) / 16 + 5 * np.eye(4), jnp.float32)
    tx = optax.sgd(1e-2, momentum=0.9)

    @jax.jit
    def run(raw):
        def body(carry, _):
            raw, opt = carry
            g = jax.grad(
                lambda r: jnp.sum(
                    (ptree.constrain(spec, r, state)["w"].astype(jnp.float32) - target) ** 2
                )
            )(raw)
            u, opt = tx.update(g, opt, raw)
            raw = optax.apply_updates(raw, u)
            return (raw, opt), ptree.constrain(spec, raw, state)["w"]

        return jax.lax.scan(body, (raw, tx.init(raw)), None, length=30)[1]

    values = np.asarray(run(raw).astype(jnp.float32), np.float64)
    assert values.dtype == np.float64 and np.all(np.isfinite(values))
    assert np.all(max_real(values) < -0.1), max_real(values).max()


def test_bfloat16_too_large_for_the_rounding_margin_raises():
    with pytest.raises(px.ParametrizationError, match="use float32"):
        px.Hurwitz()(jnp.zeros((1024, 1024), jnp.bfloat16))
