"""Numerics of the linear catalog: low-precision dtypes, huge raw values, degenerate shapes,
property-based round trips and set membership, and long high-learning-rate training runs.

Oracles are invariants computed in float64 NumPy (QᵀQ = I, A = Aᵀ, A = -Aᵀ, det Q = +1,
eigenvalues > 0), never the code under test. The tolerances below are the ones the README's
"Numerical tolerances" section documents; the float64 row is checked in ``tests/x64/``.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import parametrax as px
from parametrax import tree as ptree

from _helpers import standard_promotion

KEY = jax.random.key(0)

# Orthogonality error max|QᵀQ - I| and round-trip error max|forward(right_inverse(Q)) - Q| for
# n <= 16 and raw values of norm up to 10 n (README, "Numerical tolerances").
ORTH_TOL = {jnp.bfloat16: 1e-2, jnp.float16: 2e-3, jnp.float32: 1e-5}
ROUND_TRIP_TOL = {jnp.bfloat16: 1e-2, jnp.float16: 2e-3, jnp.float32: 1e-5}
EPS = {dt: float(jnp.finfo(dt).eps) for dt in ORTH_TOL}
LOW = [jnp.bfloat16, jnp.float16]
DTYPES = [jnp.bfloat16, jnp.float16, jnp.float32]

SO_CHAINS = {"cayley": [px.skew, px.cayley], "matrix_exp": [px.skew, px.matrix_exp]}


def f64(x):
    return np.asarray(jnp.asarray(x, jnp.float32), np.float64)


def orth_err(q):
    q = f64(q)
    return float(np.max(np.abs(np.swapaxes(q, -1, -2) @ q - np.eye(q.shape[-1]))))


def constrain(chain, raw, state=None):
    return ptree.constrain({"w": chain}, {"parametrizations": {"w": {"original": raw}}}, state)["w"]


# --- low precision: bfloat16 and float16 ---------------------------------------------------------
# float32: the contract tests and the property tests below; float16: the round-trip test.
@pytest.mark.parametrize("dtype", [jnp.bfloat16], ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("name", sorted(SO_CHAINS))
def test_so_chains_keep_dtype_and_orthogonality(dtype, name):
    scales = jnp.array([0.1, 1.0, 10.0], dtype)[:, None, None, None]
    x = scales * jax.random.normal(KEY, (3, 2, 8, 8), dtype)  # raw norms from ~1 to ~80
    q = jax.jit(lambda x: constrain(SO_CHAINS[name], x))(x)
    assert q.dtype == dtype and q.shape == x.shape
    assert orth_err(q) < ORTH_TOL[dtype], (name, jnp.dtype(dtype).name, orth_err(q))
    np.testing.assert_allclose(np.linalg.det(f64(q)), 1.0, atol=10 * ORTH_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_structural_maps_are_exact_in_every_dtype(dtype):
    x = jax.random.normal(KEY, (5, 5), dtype)
    s, k = px.symmetric(x), px.skew(x)
    assert s.dtype == k.dtype == dtype
    np.testing.assert_array_equal(f64(s), f64(s).T)
    np.testing.assert_array_equal(f64(k), -f64(k).T)
    np.testing.assert_array_equal(f64(px.Skew().right_inverse(k)), f64(jnp.triu(x, 1)))


@pytest.mark.parametrize("dtype", LOW, ids=lambda d: jnp.dtype(d).name)
def test_spd_chain_in_low_precision(dtype):
    p = constrain([px.symmetric, px.matrix_exp], jax.random.normal(KEY, (6, 6), dtype))
    assert p.dtype == dtype
    a = f64(p)
    assert np.max(np.abs(a - a.T)) <= 2 * EPS[dtype] * np.max(np.abs(a))
    assert np.min(np.linalg.eigvalsh((a + a.T) / 2)) > 0


# The docs' table (docs/catalog/tolerances.md), asserted over its whole stated range: n <= 16 and
# raw skew matrices of Frobenius norm log-uniform in [1e-2, 10 n] (benchmarks/tolerances.py
# measures the maxima quoted there).
FULL_ORTH_TOL = {jnp.bfloat16: 1e-2, jnp.float16: 2e-3, jnp.float32: 3e-5}
FULL_ROUND_TRIP_TOL = {jnp.bfloat16: 5e-2, jnp.float16: 1.5e-2, jnp.float32: 1e-5}


def _skew_raws(n, seeds=20):
    rng = np.random.default_rng(n)
    norms = np.exp(rng.uniform(np.log(1e-2), np.log(10 * n), seeds))
    up = np.triu(rng.standard_normal((seeds, n, n)), 1)
    f = np.linalg.norm(up - np.swapaxes(up, -1, -2), axis=(-2, -1), keepdims=True)
    return up * (norms[:, None, None] / np.where(f == 0, 1.0, f))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_tolerance_table_over_its_whole_stated_range(dtype):
    cayley = jax.jit(lambda x: px.cayley(px.skew(x)))
    expm = jax.jit(lambda x: px.matrix_exp(px.skew(x)))
    inverse = jax.jit(lambda q: px.skew.right_inverse(px.cayley.right_inverse(q)))
    for n in (2, 9, 16):
        x = jnp.asarray(_skew_raws(n), dtype)
        q = cayley(x)
        assert orth_err(q) < FULL_ORTH_TOL[dtype]
        assert orth_err(expm(x)) < FULL_ORTH_TOL[dtype]
        back = f64(cayley(inverse(q)))
        assert np.all(np.isfinite(back))  # no matrix of the range is past Cayley's bound
        assert np.max(np.abs(back - f64(q))) < FULL_ROUND_TRIP_TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_cayley_round_trip_per_dtype(dtype):
    spec = {"w": SO_CHAINS["cayley"]}
    raw, state = ptree.register(spec, {"w": jnp.eye(6, dtype=dtype)})
    for seed in range(3):
        q = constrain(spec["w"], jax.random.normal(jax.random.key(seed), (6, 6), dtype))
        assert q.dtype == dtype and orth_err(q) < ORTH_TOL[dtype]
        raw2, state2 = ptree.assign(spec, raw, state, {"w": q})
        assert raw2["parametrizations"]["w"]["original"].dtype == dtype
        back = ptree.constrain(spec, raw2, state2)["w"]
        assert np.max(np.abs(f64(back) - f64(q))) < ROUND_TRIP_TOL[dtype]


def test_bfloat16_dense_layer_init_apply_and_grad():
    # (the long runs below train bfloat16 Dense layers through both chains)
    layer = px.Parametrized(
        nn.Dense(8, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16), {"kernel": SO_CHAINS["cayley"]}
    )
    x = jax.random.normal(KEY, (4, 8), jnp.bfloat16)
    v = layer.init(KEY, x)
    assert v["params"]["parametrizations"]["kernel"]["original"].dtype == jnp.bfloat16
    k = px.linen.constrain(layer, v)["params"]["kernel"]
    assert k.dtype == jnp.bfloat16 and orth_err(k) < ORTH_TOL[jnp.bfloat16]

    @jax.jit
    def apply_and_grad(p):
        f = lambda p: layer.apply({"params": p}, x)
        return f(p), jax.grad(lambda p: f(p).astype(jnp.float32).sum())(p)

    y, g = apply_and_grad(v["params"])
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        f64(y), f64(x) @ f64(k) + f64(v["params"]["bias"]), atol=0.1, rtol=0.05
    )
    graw = g["parametrizations"]["kernel"]["original"]
    assert graw.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(graw)))
    assert float(jnp.max(jnp.abs(graw))) > 0


# --- huge raw values -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SO_CHAINS))
def test_raw_of_norm_1e4_stays_finite_and_orthogonal(name):
    chain = SO_CHAINS[name]
    norm = 1e4
    # Cayley: I - X has singular values >= 1 for skew X, so its error does not grow with the norm.
    # matrix_exp: scaling and squaring loses about one bit per squaring, error ~ eps * ||X||_F.
    tol = ORTH_TOL[jnp.float32] if name == "cayley" else EPS[jnp.float32] * norm
    x = jax.random.normal(KEY, (3, 8, 8))
    x = x * (norm / jnp.linalg.norm(px.skew(x), axis=(-2, -1), keepdims=True))
    loss = lambda r: (lambda q: (jnp.sum(q[..., 0, :]), q))(constrain(chain, r))
    (_, q), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(x)
    assert bool(jnp.all(jnp.isfinite(q))) and bool(jnp.all(jnp.isfinite(g)))
    assert orth_err(q) < tol, (name, orth_err(q))


def test_huge_raw_values_under_jit_and_adam_step_stay_finite():
    spec = {"w": SO_CHAINS["cayley"]}
    raw = {"parametrizations": {"w": {"original": 1e4 * jax.random.normal(KEY, (8, 8))}}}
    target = jax.random.normal(jax.random.key(1), (8, 8))
    opt = standard_promotion(optax.adam(0.1))

    @jax.jit
    def step(r, o):
        g = jax.grad(lambda r: jnp.sum((ptree.constrain(spec, r)["w"] - target) ** 2))(r)
        u, o = opt.update(g, o)
        return optax.apply_updates(r, u), o

    r, o = step(raw, opt.init(raw))
    w = ptree.constrain(spec, r)["w"]
    assert bool(jnp.all(jnp.isfinite(r["parametrizations"]["w"]["original"])))
    assert orth_err(w) < ORTH_TOL[jnp.float32]


# --- degenerate shapes ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SO_CHAINS))
def test_one_by_one_is_the_identity(name):
    # The only 1x1 skew matrix is 0, and expm(0) = cayley(0) = 1: SO(1) = {1}.
    layer = px.Parametrized(nn.Dense(1), {"kernel": SO_CHAINS[name]})
    v = layer.init(KEY, jnp.ones((2, 1)))
    np.testing.assert_array_equal(px.linen.constrain(layer, v)["params"]["kernel"], [[1.0]])
    x = jnp.array([[2.0], [-3.0]])
    np.testing.assert_allclose(layer.apply(v, x), x + v["params"]["bias"], rtol=1e-6)
    np.testing.assert_array_equal(px.symmetric(jnp.full((1, 1), 5.0)), [[5.0]])


@pytest.mark.parametrize(
    "chain",
    [
        [px.symmetric],
        [px.skew],
        SO_CHAINS["cayley"],
        SO_CHAINS["matrix_exp"],
        [px.RandomPruning(0.5)],
    ],
    ids=["symmetric", "skew", "cayley", "matrix_exp", "pruning"],
)
@pytest.mark.parametrize("shape", [(0, 0), (0, 3, 3)], ids=str)
def test_zero_size_variables_register_constrain_and_differentiate(chain, shape):
    spec = {"w": chain}
    raw, state = ptree.register(spec, {"w": jnp.zeros(shape)}, key=KEY)
    w = ptree.constrain(spec, raw, state)["w"]
    assert w.shape == shape and w.dtype == jnp.float32
    g = jax.grad(lambda r: jnp.sum(ptree.constrain(spec, r, state)["w"]))(raw)
    assert g["parametrizations"]["w"]["original"].shape == shape


def test_zero_size_dense_layer_applies():
    dense = nn.Dense(0, kernel_init=nn.initializers.zeros)  # lecun_normal divides by fan_in = 0
    layer = px.Parametrized(dense, {"kernel": SO_CHAINS["cayley"]})
    v = layer.init(KEY, jnp.ones((2, 0)))
    assert layer.apply(v, jnp.ones((2, 0))).shape == (2, 0)


def test_zero_by_n_is_refused_as_non_square():
    with pytest.raises(
        px.ShapeError, match=r"`Skew` acts on square matrices .* got shape \(0, 3\)"
    ):
        ptree.register({"w": px.skew}, {"w": jnp.zeros((0, 3))})


# --- property-based: draw values and seeds, never shapes -----------------------------------------
PROPS = settings(max_examples=20, deadline=None, derandomize=True, database=None)
SEEDS = st.integers(0, 2**31 - 1)


def _normal(seed, shape=(2, 5, 5)):
    return jax.random.normal(jax.random.key(seed), shape)


@jax.jit
def _so_cayley(x, scale):
    return constrain(SO_CHAINS["cayley"], scale * x)


@jax.jit
def _so_expm(x, scale):
    return constrain(SO_CHAINS["matrix_exp"], scale * x)


@jax.jit
def _spd(x, scale):
    return constrain([px.symmetric, px.matrix_exp], scale * x)


@PROPS
@given(seed=SEEDS, scale=st.floats(1e-3, 1e3))
def test_property_so_chains_land_on_so_n(seed, scale):
    x = _normal(seed)
    for q in (_so_cayley(x, scale), _so_expm(x, scale)):
        tol = max(ORTH_TOL[jnp.float32], EPS[jnp.float32] * scale * 25)
        assert orth_err(q) < tol
        np.testing.assert_allclose(np.linalg.det(f64(q)), 1.0, atol=1e-3)


@PROPS
@given(seed=SEEDS, scale=st.floats(1e-3, 1.0))
def test_property_spd_chain_is_symmetric_positive_definite(seed, scale):
    # Scale <= 1 keeps cond(expm(S)) = exp(spread of eig(S)) well below 1/eps(float32); beyond
    # that the smallest eigenvalue is lost to rounding (README, "Numerical tolerances").
    a = f64(_spd(_normal(seed), scale))
    assert np.max(np.abs(a - np.swapaxes(a, -1, -2))) <= 1e-5 * np.max(np.abs(a))
    assert np.min(np.linalg.eigvalsh(a)) > 0


@jax.jit
def _round_trips(y):
    """forward(right_inverse(Y)) for Y on each set: symmetric, skew, SO(n) without eigenvalue -1."""
    sym = y + jnp.swapaxes(y, -1, -2)
    sk = y - jnp.swapaxes(y, -1, -2)
    so = px.cayley(px.skew(y))
    return (
        (px.symmetric(px.Symmetric().right_inverse(sym)), sym),
        (px.skew(px.Skew().right_inverse(sk)), sk),
        (px.cayley(px.Cayley().right_inverse(so)), so),
    )


@PROPS
@given(seed=SEEDS, scale=st.floats(1e-3, 3.0))
def test_property_round_trip_on_the_set(seed, scale):
    (s2, s), (k2, k), (q2, q) = _round_trips(scale * _normal(seed))
    np.testing.assert_array_equal(s2, s)  # structural maps are exact
    np.testing.assert_array_equal(k2, k)
    np.testing.assert_allclose(q2, q, atol=10 * ROUND_TRIP_TOL[jnp.float32])


@jax.jit
def _canonical(x):
    """right_inverse(forward(X)): the canonical raw point of X's class (triu parts)."""
    return px.Skew().right_inverse(px.skew(x)), px.Symmetric().right_inverse(px.symmetric(x))


@PROPS
@given(seed=SEEDS, scale=st.floats(1e-3, 1e3))
def test_property_right_inverse_of_forward_is_the_canonical_raw(seed, scale):
    x = scale * _normal(seed)
    k, s = _canonical(x)
    np.testing.assert_array_equal(k, jnp.triu(x, 1))
    np.testing.assert_array_equal(s, jnp.triu(x))


@PROPS
@given(seed=SEEDS, p_drop=st.floats(0.0, 0.95))
def test_property_pruning_mask_is_binary_and_applied(seed, p_drop):
    p = px.RandomPruning(p_drop)
    x = _normal(seed, (6, 6))
    raw, state = ptree.register({"w": p}, {"w": x}, key=jax.random.key(seed))
    mask = np.asarray(state["parametrizations"]["w"]["0"]["mask"])
    assert set(np.unique(mask)) <= {0.0, 1.0}
    np.testing.assert_array_equal(ptree.constrain({"w": p}, raw, state)["w"], np.asarray(x) * mask)


# --- long runs: 10,000 Adam steps at lr=0.1 under one jit + lax.scan -------------------------------
STEPS = 10_000
CHECK_EVERY = 50
LONG_RUN_TOL = {jnp.float32: 1e-5, jnp.bfloat16: 1e-2}


def _long_run(chain, dtype, n=8):
    layer = px.Parametrized(
        nn.Dense(n, use_bias=False, dtype=dtype, param_dtype=dtype), {"kernel": chain}
    )
    x = jax.random.normal(jax.random.key(1), (32, n), dtype)
    target = x.astype(jnp.float32) @ jax.random.normal(jax.random.key(2), (n, n))  # unreachable
    params = layer.init(KEY, x)["params"]
    opt = standard_promotion(optax.adam(0.1))

    def loss(p):
        return jnp.mean((layer.apply({"params": p}, x).astype(jnp.float32) - target) ** 2)

    def step(carry, _):
        p, o = carry
        value, g = jax.value_and_grad(loss)(p)
        u, o = opt.update(g, o, p)
        return (optax.apply_updates(p, u), o), value

    def block(carry, _):  # CHECK_EVERY steps, then the constraint error of the kernel reached
        carry, values = jax.lax.scan(step, carry, None, length=CHECK_EVERY)
        k = px.linen.constrain(layer, {"params": carry[0]})["params"]["kernel"].astype(jnp.float32)
        return carry, (values, jnp.max(jnp.abs(k.T @ k - jnp.eye(n))))

    @jax.jit
    def run(p):
        (p, _), (losses, errs) = jax.lax.scan(
            block, (p, opt.init(p)), None, length=STEPS // CHECK_EVERY
        )
        return p, losses.reshape(-1), errs

    return run(params)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("name", sorted(SO_CHAINS))
def test_long_adam_run_keeps_the_constraint(name, dtype):
    p, losses, errs = _long_run(SO_CHAINS[name], dtype)
    losses, errs = np.asarray(losses), np.asarray(errs)
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(errs))
    assert bool(jnp.all(jnp.isfinite(p["parametrizations"]["kernel"]["original"])))
    # The error is measured every 50 steps (200 times), not only at the end.
    assert errs.max() < LONG_RUN_TOL[dtype], (name, jnp.dtype(dtype).name, errs.max())
    assert losses[-100:].mean() < losses[0]


@pytest.mark.parametrize("dt, tol", [(jnp.float32, 5e-5)])
@pytest.mark.parametrize("kind", ["skew", "symmetric", "general"])
def test_the_one_expm_matches_float64_scipy(kind, dt, tol):
    """The one matrix exponential (``_numerics.expm``, used by MatrixExp, Orthogonal and the
    trivializations) against float64 ``scipy.linalg.expm``, spectral norms 1e-3..50, batched
    (each matrix keeps its own scaling: a tiny one next to a large one stays accurate)."""
    import scipy.linalg

    from parametrax._numerics import expm

    rng = np.random.default_rng(0)
    mats = []
    for norm in (1e-3, 1e-1, 1.0, 5.0, 20.0, 50.0):
        g = rng.standard_normal((6, 6))
        a = {"skew": g - g.T, "symmetric": g + g.T, "general": g}[kind]
        mats.append(a / np.linalg.norm(a, 2) * norm)
    a = np.stack(mats).astype(dt)
    got = np.asarray(expm(jnp.asarray(a)), np.float64)
    for ai, gi in zip(a, got):
        ref = scipy.linalg.expm(ai.astype(np.float64))
        if kind == "symmetric":  # norm 50 > 38.1: clamped (see _clamp_factor)
            ref = ref * _clamp_factor(ref)
        assert np.linalg.norm(gi - ref) <= tol * np.linalg.norm(ref)


# The clamp's bound on the largest entry of expm of a symmetric matrix, per dtype (see
# _numerics.expm): sqrt(max) / 2^8 where the result is computed in a dtype of its range, max / 2
# for float16 (computed in float32).
CLAMP_OF = {jnp.float32: 2.0**55, jnp.bfloat16: 2.0**55, jnp.float16: 32752.0}
CLAMP = CLAMP_OF[jnp.float32]


def _clamp_factor(ref, bound=CLAMP):
    """The documented clamp applied to a float64 oracle ``exp(A)`` of a symmetric ``A``: the
    positive factor that brings its largest entry down to ``bound`` (1 when it is below)."""
    return min(1.0, bound / np.max(np.abs(ref)))


# --- the one expm (issue 15.3 / 16): accuracy per matrix, derivatives, huge norms ---------------
def _mixed_batch(kind, rng, n=6, norms=(1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3)):
    mats = []
    for norm in norms:
        g = rng.standard_normal((n, n))
        a = {"skew": g - g.T, "symmetric": g + g.T, "general": g}[kind]
        mats.append(a / np.linalg.norm(a, 1) * norm)
    return np.stack(mats)


@pytest.mark.parametrize("kind", ["skew", "symmetric", "general"])
def test_expm_mixed_norm_batch_matches_float64_scipy_per_matrix(kind):
    """One batch with 1-norms 1e-3..1e3: every matrix keeps its own scaling, so each is as
    accurate as alone. Oracle: float64 scipy.linalg.expm of the same float32 input. Bound:
    the condition of exp times u (float32: u = 6e-8): relative error <= 20 u (1 + ||A||_1),
    and for the matrices that overflow float32 (symmetric/general at norm 1e3) only finiteness
    of the symmetric clamp (tested below)."""
    import scipy.linalg

    from parametrax._numerics import expm

    a = _mixed_batch(kind, np.random.default_rng(3)).astype(np.float32)
    got = np.asarray(expm(jnp.asarray(a)), np.float64)
    alone = np.stack([np.asarray(expm(jnp.asarray(ai)), np.float64) for ai in a])
    np.testing.assert_array_equal(got, alone)  # batching does not change any matrix's value
    u = 2.0**-24
    for ai, gi in zip(a, got):
        with np.errstate(over="ignore", invalid="ignore"):
            ref = scipy.linalg.expm(ai.astype(np.float64))
        if not np.all(np.isfinite(ref)) or np.max(np.abs(ref)) > 1e38:
            continue
        if kind == "symmetric":
            ref = ref * _clamp_factor(ref)
        err = np.linalg.norm(gi - ref) / np.linalg.norm(ref)
        assert err <= 20 * u * (1 + np.abs(ai).sum(0).max()), (kind, np.abs(ai).sum(0).max(), err)


@pytest.mark.parametrize("kind", ["skew", "symmetric", "general"])
def test_expm_jvp_and_grad_match_finite_differences(kind):
    """Forward mode (jvp, jacfwd) and reverse mode (grad) against central differences of
    float64 scipy.linalg.expm, at norms that need 0, a few and many squarings."""
    import scipy.linalg

    from parametrax._numerics import expm

    rng = np.random.default_rng(5)
    for norm in (0.3, 8.0, 60.0):
        a = _mixed_batch(kind, rng, n=4, norms=(norm,))[0]
        e = rng.standard_normal((4, 4))
        w = rng.standard_normal((4, 4))
        h = 1e-6 * max(1.0, norm)
        fd = (scipy.linalg.expm(a + h * e) - scipy.linalg.expm(a - h * e)) / (2 * h)
        if kind == "symmetric":  # the clamp's factor is a constant to derivatives
            e = (e + e.T) / 2  # a symmetric direction: A + hE stays exactly symmetric
            fd = (scipy.linalg.expm(a + h * e) - scipy.linalg.expm(a - h * e)) / (2 * h)
            fd = fd * _clamp_factor(scipy.linalg.expm(a))
        scale = np.linalg.norm(fd) + 1e-30
        aj, ej, wj = (jnp.asarray(x, jnp.float32) for x in (a, e, w))
        _, tangent = jax.jvp(expm, (aj,), (ej,))
        assert np.linalg.norm(np.asarray(tangent, np.float64) - fd) <= 2e-4 * (1 + norm) * scale
        jac = np.asarray(jax.jacfwd(expm)(aj), np.float64)  # (4, 4, 4, 4)
        np.testing.assert_allclose(
            np.einsum("ijkl,kl->ij", jac, e), tangent, rtol=1e-4, atol=1e-5 * scale
        )
        grad = np.asarray(jax.grad(lambda x, wj=wj: jnp.sum(expm(x) * wj))(aj), np.float64)
        # <grad, E> = <W, L(A, E)>: the adjoint checked against the same differences.
        assert (
            abs(np.sum(grad * e) - np.sum(w * fd)) <= 2e-4 * (1 + norm) * np.linalg.norm(w) * scale
        )


def test_expm_value_is_the_same_with_and_without_derivatives():
    """The value runs a while_loop, derivatives a cond per bit of s: same arithmetic."""
    from parametrax._numerics import expm

    a = jnp.asarray(_mixed_batch("skew", np.random.default_rng(6), n=5), jnp.float32)
    value = expm(a)
    primal, _ = jax.jvp(expm, (a,), (a,))
    np.testing.assert_allclose(np.asarray(primal), np.asarray(value), rtol=0, atol=2e-7)


@pytest.mark.parametrize("norm", [1e2, 1e4, 1e6, 1e9, 1e12, 1e20, 1e38])
def test_expm_of_skew_stays_orthogonal_at_any_finite_norm(norm):
    """The Newton–Schulz steps keep exp(skew) orthogonal to rounding whatever the norm (before
    issue 16 the error grew as 5e-8 ||A||_1: 6e-4 at 1e4, 0.5 at 1e7)."""
    from parametrax._numerics import expm

    g = np.random.default_rng(7).standard_normal((3, 8, 8))
    a = g - np.swapaxes(g, -1, -2)
    a = jnp.asarray(a / np.abs(a).sum(-2).max(-1)[:, None, None] * norm, jnp.float32)
    q = expm(a)
    assert bool(jnp.all(jnp.isfinite(q)))
    assert orth_err(q) < 1e-6, (norm, orth_err(q))
    assert np.all(np.linalg.det(f64(q)) > 0)
    g = jax.grad(lambda x: jnp.sum(expm(x)[..., 0, :]))(a)
    assert bool(jnp.all(jnp.isfinite(g)))


@pytest.mark.parametrize(
    "dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=lambda d: jnp.dtype(d).name
)
def test_expm_of_symmetric_is_clamped_where_its_largest_entry_would_exceed_the_bound(dtype):
    """exp of a symmetric matrix whose largest entry would exceed ``CLAMP_OF`` (float32 /
    bfloat16: 2^55, from largest eigenvalue 38.1; float16: max/2, from 10.4) is scaled by a
    positive factor down to that bound: symmetric positive definite, finite, and equal to the
    float64 oracle scaled the same way. Below it is exp(A)."""
    import scipy.linalg

    from parametrax._numerics import expm

    bound = CLAMP_OF[dtype]
    rng = np.random.default_rng(8)
    g = rng.standard_normal((4, 4))
    s = (g + g.T) / np.linalg.norm(g + g.T, 2)
    big = float(np.log(bound))  # 38.1 / 10.4
    for lam in (0.5 * big, 2 * big, 1e3 * big):
        a = jnp.asarray(s * lam + 0.1 * np.eye(4) * lam, dtype)
        y = f64(expm(a))
        assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= bound * (1 + 16 * EPS[dtype])
        assert np.max(np.abs(y - y.T)) == 0
        w = np.linalg.eigvalsh(y)
        assert w[-1] > 0 and w[0] >= -ORTH_TOL[dtype] * w[-1]
        with np.errstate(over="ignore", invalid="ignore"):
            ref = scipy.linalg.expm(f64(a))
        if not np.all(np.isfinite(ref)):  # exp overflows float64: only the bound
            assert np.max(np.abs(y)) >= bound * (1 - 16 * EPS[dtype])
            continue
        ref = ref * _clamp_factor(ref, bound)
        assert np.linalg.norm(y - ref) <= 10 * EPS[dtype] * lam * np.linalg.norm(ref), lam


@pytest.mark.parametrize(
    "dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=lambda d: jnp.dtype(d).name
)
def test_expm_clamp_threshold_on_a_diagonal_matrix(dtype):
    """The measured threshold: diag(l, 0, -1) gives exp(l) up to l = log(bound) and the bound
    beyond (closed form; l = 38.12 float32 / bfloat16, 10.40 float16)."""
    from parametrax._numerics import expm

    bound = CLAMP_OF[dtype]
    big = float(np.log(bound))
    for lam, want in ((big - 0.3, np.exp(big - 0.3)), (big + 0.3, bound), (3 * big, bound)):
        a = jnp.asarray(np.diag([lam, 0.0, -1.0]), dtype)
        lam_rounded = float(f64(a)[0, 0])
        if want != bound:
            want = np.exp(lam_rounded)
        y = f64(expm(a))
        np.testing.assert_allclose(y[0, 0], want, rtol=32 * EPS[dtype])
        if lam < 2 * big:  # the clamp scales every entry alike (at 3 * big: below tiny)
            factor = y[0, 0] / np.exp(lam_rounded)
            np.testing.assert_allclose(y[1, 1], factor, rtol=32 * EPS[dtype])


@pytest.mark.parametrize("top", [100.0, 1e3, 2e4, 1e5])
def test_expm_grad_is_finite_and_matches_forward_mode_at_huge_eigenvalues(top):
    """Reverse mode at eigenvalues far past the clamp (it returned NaN at 2e4 where forward
    mode was finite: the cotangents of the squarings were 2^s ~ |A| / theta times the
    gradient). grad of sum(c * expm(S)): finite; <grad, E> equals jax.jvp's directional
    derivative (forward mode); for a diagonal S the closed form d/dS_ii = c exp(S_ii) f (and
    divided differences off the diagonal) with f the clamp's factor (a constant to
    derivatives: f = 2^55 / exp(max S_ii) once clamped)."""
    from parametrax._numerics import expm

    rng = np.random.default_rng(11)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    eig = np.array([top, top / 2, 1.0, -3.0])
    # 2e6: the sweep's Huber loss's largest cotangent; 1e18: c |exp(S)| (~4e34) is finite but
    # 2^s times it (s = 7..17 squarings) is not, the intermediate overflow this test guards.
    for c in (1e-3, 1.0, 2e6, 1e18):
        f = lambda x, c=c: jnp.sum(c * expm(x))  # noqa: E731
        sym = (q * eig) @ q.T
        sym = jnp.asarray((sym + sym.T) / 2, jnp.float32)
        grad = f64(jax.grad(f)(sym))
        assert np.all(np.isfinite(grad)), (top, c)
        for seed in range(3):
            e = np.random.default_rng(seed).standard_normal((4, 4))
            e = jnp.asarray(e + e.T, jnp.float32)
            _, jv = jax.jvp(f, (sym,), (e,))
            assert np.isfinite(float(jv))
            np.testing.assert_allclose(np.sum(grad * f64(e)), float(jv), rtol=1e-4)
        d = jnp.asarray(np.diag(eig), jnp.float32)
        grad_d = f64(jax.grad(f)(d))
        # Daleckii-Krein: d/dS_ij = c f (exp(S_ii) - exp(S_jj)) / (S_ii - S_jj), c f exp(S_ii)
        # on the diagonal; f exp(x) = 2^55 exp(x - top) (top > log(2^55) = 38.1: clamped).
        fe = CLAMP * np.exp(eig - top)
        diff = eig[:, None] - eig[None, :]
        off = (fe[:, None] - fe[None, :]) / np.where(diff == 0, 1.0, diff)
        want = c * np.where(np.eye(4) > 0, np.diag(fe), off)
        np.testing.assert_allclose(grad_d, want, rtol=1e-5, atol=1e-6 * np.max(want))


@pytest.mark.parametrize("dtype", LOW, ids=lambda d: jnp.dtype(d).name)
def test_expm_half_precision_is_float32_rounded(dtype):
    """bfloat16 / float16 are computed in float32 and rounded once at the end."""
    from parametrax._numerics import expm

    a = jnp.asarray(_mixed_batch("general", np.random.default_rng(9), norms=(0.1, 1.0, 3.0)), dtype)
    got = expm(a)
    assert got.dtype == dtype
    np.testing.assert_array_equal(
        np.asarray(got), np.asarray(expm(a.astype(jnp.float32)).astype(dtype))
    )
    q = expm(jnp.asarray(_mixed_batch("skew", np.random.default_rng(9), norms=(1.0, 30.0)), dtype))
    assert orth_err(q) < ORTH_TOL[dtype]


def test_expm_beyond_the_squaring_cap_is_nan_for_general_input():
    from parametrax._numerics import expm

    a = jnp.asarray(np.diag([1e10, 0.0, 0.0]) + np.triu(np.ones((3, 3)), 1), jnp.float32)
    assert bool(jnp.all(jnp.isnan(expm(a))))
