"""Tall and wide n x k matrices in O(n k^2) (issue 12): the maps of `Orthogonal`, `Stiefel`,
`Grassmannian`, `LowRank` and `PSSDLowRank` never build an n x n array, and give the values of
the n x n formulation. Every oracle here is that n x n formulation written in numpy / scipy
(the skew matrix padded to n x n, the base completed by LAPACK's complete QR), not the code
under test."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg as sla

from parametrax import tree as ptree
from parametrax.catalog.lowrank import LowRank
from parametrax.catalog.orthogonal import Orthogonal
from parametrax.catalog.psd import PSSDLowRank
from parametrax.catalog.stiefel import Grassmannian, Stiefel

from _helpers import standard_promotion

KEY = jax.random.key(0)
F32_ATOL = 2e-5  # value agreement, float32, entries O(1)
ORTH_TOL = 1e-5  # membership, float32


def rand(seed, shape, scale=1.0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = scale * rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * scale * rng.standard_normal(shape)
    return x.astype(dtype)


def frame(seed, n, k, dtype=np.float32):
    return np.linalg.qr(
        rand(seed, (n, k), dtype=np.complex128 if np.dtype(dtype).kind == "c" else np.float64)
    )[0].astype(dtype)


def orth_err(q):
    q = np.asarray(q, np.complex128)
    if q.shape[-2] < q.shape[-1]:
        q = np.swapaxes(q, -1, -2)
    g = np.conj(np.swapaxes(q, -1, -2)) @ q
    return float(np.max(np.abs(g - np.eye(q.shape[-1]))))


# --- the n x n formulation, in numpy ----------------------------------------------------------
def dense_skew(x, diagonal):
    n, k = x.shape
    low = np.tril(x, 0 if diagonal else -1).astype(np.complex128)
    y = np.concatenate([low, np.zeros((n, n - k))], axis=1)
    return y - y.conj().T


def dense_map(a, m):
    n = a.shape[0]
    if m in ("matrix_exp", "expm"):
        return sla.expm(a)
    eye = np.eye(n)
    return np.linalg.solve(eye - a / 2, eye + a / 2)


def dense_householder(x):
    n, k = x.shape
    h = np.eye(n)
    for j in range(k):
        v = np.zeros(n)
        v[j] = 1.0
        v[j + 1 :] = x[j + 1 :, j]
        h = h @ (np.eye(n) - 2.0 * np.outer(v, v) / (v @ v))
    d = np.where(np.diagonal(x) == 0, 1.0, np.sign(np.diagonal(x)))
    return h[:, :k] * d


def whole_base(y):
    """The n x n base a frame stands for: the frame, completed by LAPACK's complete QR."""
    q = np.linalg.qr(np.asarray(y, np.complex128), mode="complete")[0]
    return np.concatenate([np.asarray(y, np.complex128), q[:, y.shape[1] :]], axis=1)


def oracle(x, y, m, diagonal=True, horizontal=False):
    """``B f(A)[:, :k]`` on the tall view, B the whole base of the frame ``y``."""
    if m == "householder":
        q = dense_householder(np.asarray(x, np.float64))
    else:
        x = np.asarray(x, np.complex128)
        if horizontal:
            x = x.copy()
            x[: x.shape[1]] = 0
        q = dense_map(dense_skew(x, diagonal), m)[:, : x.shape[1]]
    out = whole_base(y) @ q
    return out if np.iscomplexobj(y) else out.real


# --- equality with the n x n formulation ------------------------------------------------------
ORTHO_CASES = [
    ("matrix_exp", (24, 4), np.float32),  # n > 2k: the 2k x 2k form
    ("cayley", (24, 4), np.float32),
    ("householder", (24, 4), np.float32),
    ("matrix_exp", (7, 4), np.float32),  # n <= 2k: the dense form
    ("matrix_exp", (20, 3), np.complex64),
    ("cayley", (20, 3), np.complex64),
]


@pytest.mark.parametrize("m,shape,dt", ORTHO_CASES, ids=str)
def test_orthogonal_equals_the_n_by_n_formulation(m, shape, dt):
    n, k = shape
    x = rand(1, shape, 0.7, dt)
    if m == "householder":
        x[np.arange(k), np.arange(k)] = [1.0, -1.0, 1.0, -1.0]
    y = frame(2, n, k, dt)
    p = Orthogonal(m)
    q, _ = p.apply({"params": {}, "state": {"base": y}}, x)
    np.testing.assert_allclose(q, oracle(x, y, m), atol=F32_ATOL)
    # wide: the transposed view, batched over a leading axis
    xs = np.stack([x, rand(3, shape, 0.7, dt)])
    if m == "householder":
        xs[1, np.arange(k), np.arange(k)] = 1.0
    ys = np.stack([y, frame(4, n, k, dt)])
    qw, _ = p.apply({"params": {}, "state": {"base": ys}}, np.swapaxes(xs, -1, -2))
    for i in range(2):
        np.testing.assert_allclose(qw[i].T, oracle(xs[i], ys[i], m), atol=F32_ATOL)
    # without the trivialization: the base is I
    q0 = Orthogonal(m, use_trivialization=False)(x)
    np.testing.assert_allclose(q0, oracle(x, np.eye(n, k, dtype=dt), m), atol=F32_ATOL)


@pytest.mark.parametrize(
    "cls,triv", [(Stiefel, "expm"), (Stiefel, "cayley"), (Grassmannian, "expm")], ids=str
)
def test_stiefel_family_equals_the_n_by_n_formulation(cls, triv):
    n, k = 30, 5
    x = rand(5, (n, k), 0.5)
    y = frame(6, n, k)
    q, _ = cls(triv=triv).apply({"params": {}, "state": {"base": y}}, x)
    want = oracle(x, y, triv, diagonal=False, horizontal=cls is Grassmannian)
    np.testing.assert_allclose(q, want, atol=F32_ATOL)
    # a whole n x n base (the layout before issue 12) gives the same value
    qf, _ = cls(triv=triv).apply(
        {"params": {}, "state": {"base": whole_base(y).real.astype(np.float32)}}, x
    )
    np.testing.assert_allclose(qf, q, atol=F32_ATOL)


def test_large_raw_values_stay_accurate():
    # the 2k x 2k form is balanced (rho): as accurate as the dense float64 map allows
    n, k = 64, 4
    x = rand(7, (n, k), 8.0)
    q = Orthogonal("matrix_exp", use_trivialization=False)(x)
    np.testing.assert_allclose(q, oracle(x, np.eye(n, k), "matrix_exp"), atol=1e-4)
    assert orth_err(q) < 1e-4


# --- registration, assignment, update_base ------------------------------------------------------
@pytest.mark.parametrize(
    "p",
    [
        Orthogonal(),
        Orthogonal("cayley"),
        Orthogonal("matrix_exp"),
        Stiefel(),
        Grassmannian(triv="cayley"),
    ],
    ids=repr,
)
def test_registration_reproduces_the_value_and_keeps_a_frame(p):
    n, k = 40, 5
    w = rand(8, (n, k))
    raw, state = ptree.register({"w": p}, {"w": w}, key=KEY)
    base = np.asarray(state["parametrizations"]["w"]["0"]["base"])
    assert base.shape == (n, k)
    q = np.asarray(ptree.constrain({"w": p}, raw, state)["w"])
    qn, rn = np.linalg.qr(w.astype(np.float64))
    if isinstance(p, Orthogonal):  # the QR Q factor with diag(R) > 0, reproduced exactly
        np.testing.assert_allclose(q, qn * np.sign(np.diagonal(rn)), atol=F32_ATOL)
        np.testing.assert_array_equal(q, base)
    else:  # the polar factor
        u, _, vh = np.linalg.svd(w.astype(np.float64), full_matrices=False)
        np.testing.assert_allclose(q, u @ vh, atol=F32_ATOL)
    # assigning an orthonormal value reproduces it (no key needed for a frame)
    target = frame(9, n, k)
    raw2, state2 = ptree.assign({"w": p}, raw, state, {"w": target})
    np.testing.assert_allclose(ptree.constrain({"w": p}, raw2, state2)["w"], target, atol=F32_ATOL)


@pytest.mark.parametrize(
    "p", [Stiefel(), Grassmannian(), LowRank(3, triv="cayley"), PSSDLowRank(3)], ids=repr
)
def test_update_base_keeps_the_value_with_raw_zero(p):
    shape = (30, 30) if isinstance(p, PSSDLowRank) else (40, 6)
    w = rand(10, shape)
    if isinstance(p, PSSDLowRank):
        w = w @ w.T / 30
    spec = {"w": p}
    raw, state = ptree.register(spec, {"w": w}, key=KEY)
    moved = jax.tree.map(lambda r: r + 0.05 * rand(11, r.shape), raw)
    before = ptree.constrain(spec, moved, state)["w"]
    raw2, state2 = ptree.update_base(spec, moved, state)
    np.testing.assert_allclose(ptree.constrain(spec, raw2, state2)["w"], before, atol=F32_ATOL)
    for leaf in jax.tree.leaves(state2):
        assert max(leaf.shape[-2:]) > min(leaf.shape[-2:])  # frames, never n x n


# --- membership after many optimizer steps ------------------------------------------------------
TRAIN_SPECS = {
    "a": Orthogonal(),
    "b": Orthogonal("cayley"),
    "c": Orthogonal("matrix_exp"),
    "d": Orthogonal("householder", use_trivialization=False),
    "e": Stiefel(),
    "f": Stiefel(triv="cayley"),
    "g": Grassmannian(),
}


TRAIN_SHAPES = {
    "a": (48, 6),
    "b": (6, 48),
    "c": (2, 40, 5),
    "d": (5, 40),
    "e": (48, 6),
    "f": (2, 6, 40),
    "g": (40, 5),
}


@pytest.fixture(scope="module")
def trained_loss():
    """Registration and the compiled loss gradient, shared by the three optimizers (both are
    independent of the optimizer; compiling them once keeps this file fast)."""
    values = {name: rand(20 + i, s) for i, (name, s) in enumerate(TRAIN_SHAPES.items())}
    targets = {name: rand(40 + i, s) for i, (name, s) in enumerate(TRAIN_SHAPES.items())}
    # registered in one compiled program (the eager path is tested above)
    raw, state = jax.jit(lambda v: ptree.register(TRAIN_SPECS, v, key=KEY))(values)

    def loss(raw):
        q = ptree.constrain(TRAIN_SPECS, raw, state)
        return sum(jnp.sum((q[k] - targets[k]) ** 2) for k in q)

    return raw, state, jax.jit(jax.value_and_grad(loss))


@pytest.mark.parametrize("opt", ["adam", "adamw", "sgd"])
def test_membership_after_many_optimizer_steps(opt, trained_loss):
    raw, state, value_and_grad = trained_loss
    tx = {
        "adam": optax.adam(0.05),
        "adamw": optax.adamw(0.05, weight_decay=0.1),
        "sgd": optax.sgd(0.05),
    }[opt]
    tx = standard_promotion(tx)  # optax's own step is not strict-clean (see _helpers)
    opt_state = tx.init(raw)

    @jax.jit
    def update(raw, g, opt_state):
        upd, opt_state = tx.update(g, opt_state, raw)
        return optax.apply_updates(raw, upd), opt_state

    first = None
    for _ in range(150):
        val, g = value_and_grad(raw)
        raw, opt_state = update(raw, g, opt_state)
        first = val if first is None else first
    assert val < first  # it trains
    q = ptree.constrain(TRAIN_SPECS, raw, state)
    for name, v in q.items():
        assert v.shape == TRAIN_SHAPES[name]
        assert orth_err(v) < ORTH_TOL, (name, orth_err(v))


# --- gradients -------------------------------------------------------------------------------
def dense_gradient(x, yb, c, m):
    """The gradient of ``sum((B f(A)[:, :k]) * c)`` in the raw ``x`` from the n x n formulation,
    in float64 numpy: the adjoint of ``f``'s derivative at ``A`` (expm: scipy's Fréchet
    derivative at ``A^T``; Cayley: ``dF = (I - A/2)^{-1} (dA / 2) (I + F)``), then the chain
    rule through ``A = L - L^T``, ``L = [tril(x), 0]``."""
    n, k = x.shape
    a = dense_skew(np.asarray(x, np.float64), True).real
    gf = np.zeros((n, n))
    gf[:, :k] = yb.T @ c  # d/dF of sum((B F[:, :k]) * c)
    if m == "matrix_exp":
        ga = sla.expm_frechet(a.T, gf, compute_expm=False)
    else:
        eye = np.eye(n)
        f = np.linalg.solve(eye - a / 2, eye + a / 2)
        ga = np.linalg.solve((eye - a / 2).T, gf) @ (eye + f).T / 2
    return np.tril(ga - ga.T)[:, :k]


@pytest.mark.parametrize("m", ["matrix_exp", "cayley"])
def test_gradient_equals_the_dense_formulation_and_finite_differences(m):
    n, k = 12, 3  # n > 2k: the 2k x 2k form
    x = rand(12, (n, k), 0.5)
    y = frame(13, n, k)
    c = rand(14, (n, k))
    p = Orthogonal(m)
    ours = jax.jit(lambda x: jnp.sum(p.apply({"params": {}, "state": {"base": y}}, x)[0] * c))
    g = jax.grad(ours)(x)
    want = dense_gradient(x, whole_base(y).real, c.astype(np.float64), m)
    np.testing.assert_allclose(g, want, atol=1e-4)
    d = rand(15, (n, k))
    eps = 1e-2
    fd = (ours(x + eps * d) - ours(x - eps * d)) / (2 * eps)
    np.testing.assert_allclose(float(jnp.sum(g * d)), float(fd), rtol=2e-3, atol=2e-3)


def test_gradient_at_the_registered_point_is_finite():
    # raw = -I: C = 0 there, where a QR of C would have a singular derivative
    p = Orthogonal("matrix_exp")
    raw, state = ptree.register({"w": p}, {"w": rand(16, (30, 4))}, key=KEY)
    g = jax.grad(lambda r: jnp.sum(ptree.constrain({"w": p}, r, state)["w"] ** 3))(raw)
    g = g["parametrizations"]["w"]["original"]
    assert np.all(np.isfinite(g)) and np.max(np.abs(g)) > 0


# --- the memory bound, from the compiled step -----------------------------------------------
MEMORY_SPECS = [
    Orthogonal(),
    Orthogonal("cayley"),
    Orthogonal("matrix_exp"),
    Stiefel(),
    Stiefel(triv="cayley"),
    Grassmannian(),
    LowRank(4),
]


def test_compiled_step_holds_no_n_by_n_buffer():
    # every map of MEMORY_SPECS on its own n x k variable, in one compiled step (one compile):
    # the peak of the temporaries of all seven together must stay a few n x k buffers
    n, k = 20000, 16
    spec = {str(i): p for i, p in enumerate(MEMORY_SPECS)}
    w = {name: jax.ShapeDtypeStruct((n, k), jnp.float32) for name in spec}
    raw, state = jax.eval_shape(lambda v: ptree.register(spec, v, key=KEY), w)
    for leaf in jax.tree.leaves(state):
        assert leaf.size <= n * k  # the state holds frames
    c = jnp.ones((n, k), jnp.float32)

    def step(raw, state):
        def loss(r):
            return sum(jnp.sum(v * c) for v in ptree.constrain(spec, r, state).values())

        g = jax.grad(loss)(raw)
        return jax.tree.map(lambda r, g: r - 0.1 * g, raw, g)

    mem = jax.jit(step).lower(raw, state).compile().memory_analysis()
    if mem is None:
        pytest.skip("this backend reports no memory analysis")
    nk_bytes = n * k * 4
    temp = mem.temp_size_in_bytes
    assert temp < 40 * nk_bytes, (temp / nk_bytes, MEMORY_SPECS)  # O(n k), all seven together
    assert temp < n * n * 4 / 10, (temp, MEMORY_SPECS)  # a tenth of one n x n buffer


# --- sampling --------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [Stiefel, Grassmannian])
def test_torus_sample_of_a_tall_shape_is_built_in_n_k(cls):
    p = cls()
    # the first k columns of the square torus draw (block-diagonal 2x2 rotations)
    small = np.asarray(p.sample(KEY, (9, 4), init="torus"), np.float64)
    full = np.asarray(cls().sample(KEY, (9, 9), init="torus"), np.float64)
    np.testing.assert_array_equal(small, full[:, :4])
    off = np.abs(np.triu(full, 2)) + np.abs(np.tril(full, -2))
    assert np.max(off) == 0 and orth_err(full) < ORTH_TOL
    np.testing.assert_allclose(full[1::2, 1::2].diagonal(), full[0:8:2, 0:8:2].diagonal())
    np.testing.assert_allclose(full[1:8:2, 0:8:2].diagonal(), -full[0:8:2, 1::2].diagonal())
    # a huge tall shape: no n x n buffer in the compiled sampler
    n, k = 50000, 4
    compiled = jax.jit(lambda key: p.sample(key, (n, k), init="torus")).lower(KEY).compile()
    mem = compiled.memory_analysis()
    if mem is not None:
        assert mem.temp_size_in_bytes + mem.output_size_in_bytes < 40 * n * k * 4
