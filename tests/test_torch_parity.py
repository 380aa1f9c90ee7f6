"""Side-by-side parity with PyTorch 2.13 (float32 / complex64): orthogonal, spectral norm, weight
norm and the tutorial chains. Every oracle is a fresh torch computation on the same numbers.

Notes on comparing:
* ``jax.grad`` of a real loss of complex inputs is the conjugate of torch's ``.grad``.
* Torch's orthogonal trivialization completes non-square base points with its global RNG; only
  the first ``k`` columns (tall view) of the base, and the weight, are compared there.
* Spectral norm: the random ``u0``/``v0`` are injected into both so the iterations line up.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import parametrax as px
from parametrax import AxisError
from parametrax import tree as ptree
from parametrax.catalog.norms import SpectralNorm, WeightNorm
from parametrax.catalog.orthogonal import Orthogonal

from _helpers import rand

torch = pytest.importorskip("torch")
tpz = torch.nn.utils.parametrizations
tpar = torch.nn.utils.parametrize

F32_RTOL = 1e-4
F32_ATOL = 1e-5
KEY = jax.random.key(0)

MAPS = ("matrix_exp", "cayley", "householder")
SHAPES = ((4, 4), (5, 3), (2, 3, 5))  # square, tall, batched wide
CASES = [
    (m, triv, dt)
    for m in MAPS
    for triv in (True, False)
    for dt in (np.float32, np.complex64)
    if not (m == "householder" and dt is np.complex64)
]
CASE_IDS = [f"{m}-{'triv' if t else 'plain'}-{np.dtype(d).name}" for m, t, d in CASES]


def close(ours, ref, rtol=F32_RTOL, atol=F32_ATOL):
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=rtol, atol=atol)


def rand_orthogonal(rng, shape, dtype):
    """A random matrix with orthonormal columns (tall) or rows (wide), batched."""
    rows, cols = shape[-2:]
    tall = (rows, cols) if rows >= cols else (cols, rows)
    wide_dtype = np.complex128 if np.dtype(dtype).kind == "c" else np.float64
    q = np.linalg.qr(rand(rng, shape[:-2] + tall, wide_dtype))[0]
    q = q.astype(dtype)
    return q if rows >= cols else np.swapaxes(q, -1, -2)


def tall_n(shape):
    return max(shape[-2:])


def neg_eye(shape, dtype):
    return np.broadcast_to(-np.eye(*shape[-2:], dtype=dtype), shape)


class Holder(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(np.array(w)))


def t_np(x):
    return x.detach().numpy()


# ================================================================================================
# Orthogonal
# ================================================================================================
@functools.cache
def ours_orth(m):
    """One jitted function per map: (grads, values) for all SHAPES at once, through the variables
    protocol with a base point. ``use_trivialization=False`` is compared through the same
    compiled function with identity bases: ``apply`` with ``base = I`` equals the plain map
    exactly (test_orthogonal.py::test_identity_base_equals_no_trivialization_exactly), and this
    halves the number of matrix-exponential gradients to compile."""
    p = Orthogonal(m)

    def loss(xs, bases, cs):
        qs = [p.apply({"params": {}, "state": {"base": b}}, x)[0] for x, b in zip(xs, bases)]
        return sum(jnp.sum(jnp.real(q * jnp.conj(c))) for q, c in zip(qs, cs)), qs

    return jax.jit(jax.grad(loss, has_aux=True))


def identity_bases(raws):
    return [
        np.broadcast_to(
            np.eye(tall_n(r.shape), dtype=r.dtype), r.shape[:-2] + (tall_n(r.shape),) * 2
        )
        for r in raws
    ]


def ours_grads_and_weights(m, triv, raws, bases, cs):
    return ours_orth(m)(raws, bases if triv else identity_bases(raws), cs)


def ours_weights(m, triv, raws, bases=None):
    zeros = [np.zeros_like(r) for r in raws]
    return ours_grads_and_weights(m, triv, raws, bases, zeros)[1]


def torch_orth(m, triv, raw, base, c):
    """Torch's forward and .grad for the same raw (and base), through the public API."""
    mod = tpz.orthogonal(Holder(raw), "weight", orthogonal_map=m, use_trivialization=triv)
    plist = mod.parametrizations.weight
    with torch.no_grad():
        plist.original.copy_(torch.tensor(raw))
        if triv:
            plist[0].base = torch.tensor(base)
    w = mod.weight
    torch.sum(torch.real(w * torch.conj(torch.tensor(c)))).backward()
    return t_np(w), plist.original.grad.numpy()


def _pm_one_diagonal(rng, raw):
    tall = raw if raw.shape[-2] >= raw.shape[-1] else np.swapaxes(raw, -1, -2)
    k = tall.shape[-1]
    tall = tall.copy()
    tall[..., np.arange(k), np.arange(k)] = rng.choice([-1.0, 1.0], tall.shape[:-2] + (k,))
    return tall if raw.shape[-2] >= raw.shape[-1] else np.swapaxes(tall, -1, -2)


def _inputs(seed, m, dt):
    rng = np.random.default_rng(seed)
    raws = [rand(rng, s, dt) for s in SHAPES]
    if m == "householder":
        # the raw values torch stores: reflector tails with a +-1 diagonal (torch scales column j
        # by int(diag_j), parametrax by sign(diag_j): equal there; test_orthogonal_householder_
        # sign_deviation covers the diagonals where they differ)
        raws = [_pm_one_diagonal(rng, r) for r in raws]
    bases = [rand_orthogonal(rng, s[:-2] + (tall_n(s),) * 2, dt) for s in SHAPES]
    cs = [rand(rng, s, dt) for s in SHAPES]
    return raws, bases, cs


@pytest.mark.parametrize("m,triv,dt", CASES, ids=CASE_IDS)
def test_orthogonal_forward_and_grad(m, triv, dt):
    raws, bases, cs = _inputs(0, m, dt)
    grads, qs = ours_grads_and_weights(m, triv, raws, bases, cs)
    for shape, raw, base, c, q, g in zip(SHAPES, raws, bases, cs, qs, grads):
        tq, tg = torch_orth(m, triv, raw, base, c)
        close(q, tq)
        close(g, np.conj(tg))  # jax.grad is the conjugate of torch's .grad
        # torch's test_orthogonal_parametrization structure: in the tall view the strict upper
        # part gets no gradient, nor does the real part of the diagonal
        tall = np.asarray(g) if shape[-2] >= shape[-1] else np.swapaxes(np.asarray(g), -1, -2)
        assert np.all(np.triu(tall, 1) == 0)
        assert np.all(np.real(np.diagonal(tall, axis1=-2, axis2=-1)) == 0)


@pytest.mark.parametrize("m,triv,dt", CASES, ids=CASE_IDS)
def test_orthogonal_initialization(m, triv, dt):
    rng = np.random.default_rng(1)
    ws = [rand(rng, s, dt) for s in SHAPES]
    p = Orthogonal(m, use_trivialization=triv)
    raws, bases = [], []
    for w in ws:
        # torch registers orthogonal with unsafe=True (no forward check); so do we here
        raw, state = ptree.register({"w": p}, {"w": w}, key=KEY, unsafe=True)
        raws.append(np.asarray(raw["parametrizations"]["w"]["original"]))
        bases.append(np.asarray(state["parametrizations"]["w"]["0"]["base"]) if triv else None)
    weights = ours_weights(m, triv, raws, bases if triv else None)
    for shape, w, raw, base, weight in zip(SHAPES, ws, raws, bases, weights):
        mod = tpz.orthogonal(Holder(w), "weight", orthogonal_map=m, use_trivialization=triv)
        close(weight, t_np(mod.weight))
        t_orig = t_np(mod.parametrizations.weight.original)
        if triv:
            np.testing.assert_array_equal(raw, neg_eye(shape, dt))  # torch's -I-like raw value
            np.testing.assert_array_equal(t_orig, neg_eye(shape, dt))
            t_base = t_np(mod.parametrizations.weight[0].base)
            k = min(shape[-2:])
            close(base[..., :k], t_base[..., :k])  # the rest is random completion
        elif m == "householder":
            close(raw, t_orig)  # reflectors, sign diagonal, and R above it
        else:
            np.testing.assert_array_equal(raw, w)  # NotImplementedError swallowed: raw = W
            np.testing.assert_array_equal(t_orig, w)


@pytest.mark.parametrize(
    "m,dt",
    [("matrix_exp", np.float32), ("matrix_exp", np.complex64), ("householder", np.float32)],
    ids=str,
)
def test_orthogonal_square_orthogonal_initial_value_kept_exactly(m, dt):
    rng = np.random.default_rng(2)
    w = rand_orthogonal(rng, (4, 4), dt)
    w[:, 0] *= -1  # det -1 and a negative "R diagonal": still kept, no re-orthogonalization
    mod = tpz.orthogonal(Holder(w), "weight", orthogonal_map=m)
    np.testing.assert_array_equal(t_np(mod.parametrizations.weight[0].base), w)
    _, state = ptree.register({"w": Orthogonal(m)}, {"w": w}, key=KEY)
    np.testing.assert_array_equal(state["parametrizations"]["w"]["0"]["base"], w)


@pytest.mark.parametrize("m,triv,dt", CASES, ids=CASE_IDS)
def test_orthogonal_assignment(m, triv, dt):
    rng = np.random.default_rng(3)
    p = Orthogonal(m, use_trivialization=triv)
    spec = {"w": p}
    assignable = triv or m == "householder"
    new_raws, new_bases, expected, exact = [], [], [], []
    for i, shape in enumerate(SHAPES):
        w0 = rand(rng, shape, dt)
        raw, state = ptree.register(spec, {"w": w0}, key=KEY, unsafe=True)
        mod = tpz.orthogonal(Holder(w0), "weight", orthogonal_map=m, use_trivialization=triv)
        q = rand_orthogonal(rng, shape, dt)
        r = rand(rng, shape, dt)
        if not assignable:
            msg = "not possible to assign to the matrix exponential"
            with pytest.raises(NotImplementedError, match=msg):
                mod.weight = torch.tensor(q)
            # ours declares it has no right inverse (has_right_inverse is false), so the chain
            # refuses with a RightInverseError before running anything
            with pytest.raises(px.RightInverseError, match="`Orthogonal` does not implement"):
                ptree.assign(spec, raw, state, {"w": q}, key=KEY)
            with pytest.raises(NotImplementedError, match=msg):
                p.right_inverse(q)
            continue
        for value in (q, r):
            raw2, state2 = ptree.assign(spec, raw, state, {"w": value}, key=jax.random.key(i))
            with torch.no_grad():
                mod.weight = torch.tensor(value)
            new_raws.append(np.asarray(raw2["parametrizations"]["w"]["original"]))
            new_bases.append(state2["parametrizations"]["w"]["0"]["base"] if triv else None)
            expected.append(t_np(mod.weight))
        exact.append(q)
    if not assignable:
        return
    # evaluate the constrained values with the jitted function (shapes in SHAPES order: q, r)
    for which in (0, 1):
        ws = ours_weights(m, triv, new_raws[which::2], new_bases[which::2] if triv else None)
        for _shape, w, ref, q in zip(SHAPES, ws, expected[which::2], exact):
            close(w, ref)
            if which == 0:
                close(w, q)  # an orthogonal value is reproduced


@pytest.mark.parametrize("m", MAPS)
def test_orthogonal_dynamic_trivialization_rebase(m):
    # torch's rebase: `with no_grad(): m.weight = m.weight` moves the base to the current value
    rng = np.random.default_rng(4)
    w = rand(rng, (4, 4), np.float32)
    raw_t = rand(rng, (4, 4), np.float32, 0.3)
    if m == "householder":
        np.fill_diagonal(raw_t, -1.0)
    mod = tpz.orthogonal(Holder(w), "weight", orthogonal_map=m)
    with torch.no_grad():
        mod.parametrizations.weight.original.copy_(torch.tensor(raw_t))
        current = mod.weight.clone()
        mod.weight = current
    raw, state = ptree.register({"w": Orthogonal(m)}, {"w": w}, key=KEY)
    raw, state = ptree.assign({"w": Orthogonal(m)}, raw, state, {"w": current.numpy()}, key=KEY)
    close(state["parametrizations"]["w"]["0"]["base"], t_np(mod.parametrizations.weight[0].base))
    np.testing.assert_array_equal(
        raw["parametrizations"]["w"]["original"], neg_eye((4, 4), np.float32)
    )


def test_orthogonal_householder_sign_deviation():
    # Documented deviation: torch scales column j by int(diag_j) (diag (0.5, 1, 2.3) gives
    # (0, 1, 2): a zero and a non-unit column); parametrax by sign(diag_j), orthonormal. Equal
    # on the +-1 torch stores.
    x = np.zeros((4, 3), np.float32)
    x[np.arange(3), np.arange(3)] = [0.5, 1.0, 2.3]
    x[3, 0] = 0.7
    mod = tpz.orthogonal(Holder(x), orthogonal_map="householder", use_trivialization=False)
    with torch.no_grad():
        mod.parametrizations.weight.original.copy_(torch.tensor(x))
    ref = t_np(mod.weight)
    close(ref.T @ ref, np.diag([0.0, 1.0, 4.0]))  # torch's defect
    ours = np.asarray(Orthogonal("householder", use_trivialization=False)(jnp.asarray(x)))
    close(ours.T @ ours, np.eye(3))
    close(ours[:, 1:], ref[:, 1:] / np.array([1.0, 2.0]))  # same reflectors, unit scales
    x[np.arange(3), np.arange(3)] = [1.0, 1.0, -1.0]  # torch's own values: identical
    with torch.no_grad():
        mod.parametrizations.weight.original.copy_(torch.tensor(x))
    close(Orthogonal("householder", use_trivialization=False)(jnp.asarray(x)), t_np(mod.weight))


# --- errors (torch's test_orthogonal_errors and friends) -----------------------------------------
def test_orthogonal_error_parity():
    w = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="has to be one of"):
        tpz.orthogonal(Holder(w), orthogonal_map="foo")
    valid = 'has to be one of "matrix_exp", "cayley", "householder"'
    with pytest.raises(px.ParametrizationError, match=valid):
        Orthogonal("foo")
    with pytest.raises(ValueError, match="Expected a matrix"):
        tpz.orthogonal(Holder(np.ones(3, np.float32)))
    with pytest.raises(px.ShapeError, match=r"acts on matrices .* shape \(3,\) with 1 dimension"):
        ptree.register({"w": Orthogonal()}, {"w": jnp.ones(3)}, key=KEY)
    with pytest.raises(ValueError, match="does not support complex"):
        tpz.orthogonal(Holder(np.ones((4, 3), np.complex64)), orthogonal_map="householder")
    with pytest.raises(px.ShapeError, match="does not support complex"):
        ptree.register(
            {"w": Orthogonal("householder")}, {"w": jnp.ones((4, 3), jnp.complex64)}, key=KEY
        )
    # assigning a (5, 5) to a (4, 3) weight
    mod = tpz.orthogonal(Holder(w))
    with pytest.raises(ValueError, match="matrices of shape"):
        with torch.no_grad():
            mod.weight = torch.ones(5, 5)
    raw, state = ptree.register({"w": Orthogonal()}, {"w": w}, key=KEY)
    with pytest.raises(px.ShapeError, match=r"has shape \(5, 5\).*expected shape \(4, 3\)"):
        ptree.assign({"w": Orthogonal()}, raw, state, {"w": jnp.ones((5, 5))}, key=KEY)


# ================================================================================================
# Spectral norm
# ================================================================================================
def _unit(rng, n, dtype=np.float32):
    x = rand(rng, (n,), dtype)
    return (x / np.linalg.norm(x)).astype(dtype)


def _inject(sn_module, u0, v0):
    with torch.no_grad():
        sn_module._u.copy_(torch.tensor(u0))
        sn_module._v.copy_(torch.tensor(v0))


@functools.cache
def _sn_step(n, axis, update):
    p = SpectralNorm(n_power_iterations=n, axis=axis)

    @jax.jit
    def step(w, state):
        return p.apply({"params": {}, "state": state}, w, update_state=update)

    return step


def test_spectral_norm_dense_train_then_eval():
    torch.manual_seed(0)
    rng = np.random.default_rng(5)
    lin = tpz.spectral_norm(torch.nn.Linear(4, 3))
    w = t_np(lin.parametrizations.weight.original).copy()
    u0, v0 = _unit(rng, 3), _unit(rng, 4)
    _inject(lin.parametrizations.weight[0], u0, v0)
    k = w.T  # the Flax Dense kernel (in, out); axis=-1 is the output axis
    state = {"u": u0, "v": v0}
    train = _sn_step(1, -1, True)
    for _ in range(3):  # three accesses in train mode = three applies
        ref = t_np(lin.weight)
        out, state = train(k, state)
        close(out.T, ref)
        close(state["u"], t_np(lin.parametrizations.weight[0]._u))
        close(state["v"], t_np(lin.parametrizations.weight[0]._v))
    lin.eval()
    ref_eval = t_np(lin.weight)
    out_eval, state_eval = _sn_step(1, -1, False)(k, state)
    close(out_eval.T, ref_eval)
    close(out_eval, out)  # eval reuses the last training u, v
    np.testing.assert_array_equal(state_eval["u"], state["u"])
    np.testing.assert_array_equal(state_eval["v"], state["v"])


def test_spectral_norm_n_power_iterations_per_access():
    torch.manual_seed(1)
    rng = np.random.default_rng(6)
    lin = tpz.spectral_norm(torch.nn.Linear(5, 4), n_power_iterations=3)
    u0, v0 = _unit(rng, 4), _unit(rng, 5)
    _inject(lin.parametrizations.weight[0], u0, v0)
    w = t_np(lin.parametrizations.weight.original)
    # torch's dim convention on the torch-layout array: axis=dim (0 here)
    out, state = _sn_step(3, 0, True)(w, {"u": u0, "v": v0})
    close(out, t_np(lin.weight))
    close(state["v"], t_np(lin.parametrizations.weight[0]._v))


def test_spectral_norm_conv_through_linen_train_and_eval():
    torch.manual_seed(2)
    rng = np.random.default_rng(7)
    conv_t = tpz.spectral_norm(torch.nn.Conv2d(2, 3, (2, 2)))
    w = t_np(conv_t.parametrizations.weight.original)  # (out, in, kh, kw)
    b = t_np(conv_t.bias)
    u0, v0 = _unit(rng, 3), _unit(rng, 8)
    _inject(conv_t.parametrizations.weight[0], u0, v0)

    model = px.Parametrized(nn.Conv, {"kernel": SpectralNorm()})(
        features=3, kernel_size=(2, 2), padding="VALID"
    )
    x = rand(rng, (2, 5, 5, 2))
    kernel = w.transpose(2, 3, 1, 0)  # (kh, kw, in, out)
    v0_flax = v0.reshape(2, 2, 2).transpose(1, 2, 0).reshape(-1)  # (in,kh,kw) -> (kh,kw,in)
    variables = {
        "params": {"bias": b, "parametrizations": {"kernel": {"original": kernel}}},
        "parametrization_state": {"parametrizations": {"kernel": {"0": {"u": u0, "v": v0_flax}}}},
    }
    train = jax.jit(lambda v, x: model.apply(v, x, mutable=["parametrization_state"]))
    x_t = torch.tensor(x.transpose(0, 3, 1, 2))
    for _ in range(2):
        ref = t_np(conv_t(x_t)).transpose(0, 2, 3, 1)
        y, mutated = train(variables, x)
        variables = {**variables, **mutated}
        close(y, ref)
    st = variables["parametrization_state"]["parametrizations"]["kernel"]["0"]
    close(st["u"], t_np(conv_t.parametrizations.weight[0]._u))
    v_t = t_np(conv_t.parametrizations.weight[0]._v)
    close(st["v"], v_t.reshape(2, 2, 2).transpose(1, 2, 0).reshape(-1))  # the permutation
    conv_t.eval()
    y_eval = jax.jit(model.apply)(variables, x)
    close(y_eval, t_np(conv_t(x_t)).transpose(0, 2, 3, 1))


def test_spectral_norm_conv_transpose_dim1_on_torch_layout():
    torch.manual_seed(3)
    rng = np.random.default_rng(8)
    m = tpz.spectral_norm(torch.nn.ConvTranspose2d(3, 4, (5, 6)))
    sn = m.parametrizations.weight[0]
    assert tuple(sn._u.shape) == (4,) and tuple(sn._v.shape) == (90,)
    w = t_np(m.parametrizations.weight.original)  # (in=3, out=4, 5, 6)
    assert SpectralNorm(axis=1).matrix_view(w).shape == (4, 90)
    u0, v0 = _unit(rng, 4), _unit(rng, 90)
    _inject(sn, u0, v0)
    out, state = _sn_step(1, 1, True)(w, {"u": u0, "v": v0})
    close(out, t_np(m.weight))
    close(state["u"], t_np(sn._u))


@pytest.mark.parametrize("dt", [np.float32, np.complex64])
def test_spectral_norm_diagonal_value(dt):
    # torch's test_new_spectral_norm_value: registration gives diag(x / max|x|)
    d = np.array([1 + 1j, 3 - 4j]) if dt is np.complex64 else np.array([2.0, -5.0])
    w = np.diag(d).astype(dt)
    torch.manual_seed(4)
    ref = t_np(tpz.spectral_norm(Holder(w)).weight)
    expected = np.diag(d / np.max(np.abs(d)))
    close(ref, expected)
    raw, state = ptree.register({"w": SpectralNorm()}, {"w": w}, key=KEY, update_state=True)
    ours = ptree.constrain({"w": SpectralNorm()}, raw, state)["w"]
    close(ours, expected)
    close(ours, ref)


def test_spectral_norm_gradient_eval():
    torch.manual_seed(5)
    rng = np.random.default_rng(9)
    lin = tpz.spectral_norm(torch.nn.Linear(4, 3))
    lin.eval()
    u0, v0 = _unit(rng, 3), _unit(rng, 4)
    _inject(lin.parametrizations.weight[0], u0, v0)
    c = rand(rng, (3, 4))
    torch.sum(lin.weight * torch.tensor(c)).backward()
    ref = lin.parametrizations.weight.original.grad.numpy()
    w = t_np(lin.parametrizations.weight.original)
    p = SpectralNorm(axis=0)
    loss = lambda w: jnp.sum(p.apply({"params": {}, "state": {"u": u0, "v": v0}}, w)[0] * c)
    close(jax.grad(loss)(w), ref)


def test_spectral_norm_vector_is_normalised():
    rng = np.random.default_rng(10)
    x = rand(rng, (5,))
    ref = t_np(tpz.spectral_norm(Holder(x)).weight)
    p = SpectralNorm()
    assert p.init_variables(KEY, jnp.asarray(x)) == {"params": {}, "state": {}}
    close(p.apply({"params": {}, "state": {}}, jnp.asarray(x), update_state=True)[0], ref)


def test_spectral_norm_error_parity():
    w = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="Expected n_power_iterations to be positive"):
        tpz.spectral_norm(Holder(w), n_power_iterations=0)
    with pytest.raises(px.ParametrizationError, match="Expected n_power_iterations to be positive"):
        SpectralNorm(n_power_iterations=0)
    with pytest.raises(IndexError, match=r"range of \[-2, 1\] but got 2"):
        tpz.spectral_norm(Holder(w), dim=2)
    with pytest.raises(IndexError, match=r"range of \[-2, 1\] but got 2"):
        ptree.register({"w": SpectralNorm(axis=2)}, {"w": w}, key=KEY)
    with pytest.raises(AxisError, match=r"range of \[-2, 1\] but got -3"):
        ptree.register({"w": SpectralNorm(axis=-3)}, {"w": w}, key=KEY)


# ================================================================================================
# Weight norm
# ================================================================================================
@pytest.mark.parametrize("dim", [0, 1, None, -1])
def test_weight_norm_linear_dims_torch_layout(dim):
    torch.manual_seed(6)
    lin = tpz.weight_norm(torch.nn.Linear(4, 5), dim=dim)
    g_t = t_np(lin.parametrizations.weight.original0)
    v_t = t_np(lin.parametrizations.weight.original1)
    w = v_t.copy()
    p = WeightNorm.from_torch(dim)
    g, v = p.right_inverse(jnp.asarray(w))
    assert g.shape == g_t.shape  # (5,1), (1,4), (), ()
    close(g, g_t)
    np.testing.assert_array_equal(v, v_t)
    close(p(g, v), t_np(lin.weight))


@pytest.mark.parametrize("dim,axis", [(0, -1), (1, 0), (None, None)])
def test_weight_norm_flax_kernel_layout(dim, axis):
    torch.manual_seed(7)
    lin = tpz.weight_norm(torch.nn.Linear(4, 5), dim=dim)
    g_t = t_np(lin.parametrizations.weight.original0)
    k = t_np(lin.parametrizations.weight.original1).T  # Flax kernel (in, out)
    g, v = WeightNorm(axis=axis).right_inverse(jnp.asarray(k))
    close(g, g_t.T)  # (5,1) -> (1,5); (1,4) -> (4,1); () -> ()
    close(WeightNorm(axis=axis)(g, v), t_np(lin.weight).T)


def test_weight_norm_conv_dim0():
    torch.manual_seed(8)
    conv = tpz.weight_norm(torch.nn.Conv2d(3, 4, (2, 3)))
    g_t = t_np(conv.parametrizations.weight.original0)
    assert g_t.shape == (4, 1, 1, 1)
    kernel = t_np(conv.parametrizations.weight.original1).transpose(2, 3, 1, 0)
    g, v = WeightNorm().right_inverse(jnp.asarray(kernel))
    assert g.shape == (1, 1, 1, 4)
    close(g.reshape(-1), g_t.reshape(-1))


@pytest.mark.parametrize("dim", [0, 1, None])
def test_weight_norm_gradients(dim):
    rng = np.random.default_rng(11)
    lin = tpz.weight_norm(torch.nn.Linear(4, 5), dim=dim)
    pl = lin.parametrizations.weight
    g0 = rand(rng, tuple(pl.original0.shape))
    v0 = rand(rng, (5, 4))
    with torch.no_grad():
        pl.original0.copy_(torch.tensor(g0))
        pl.original1.copy_(torch.tensor(v0))
    c = rand(rng, (5, 4))
    w_t = lin.weight
    torch.sum(w_t * torch.tensor(c)).backward()
    p = WeightNorm.from_torch(dim)
    loss = lambda g, v: jnp.sum(p(g, v) * c)
    gg, gv = jax.grad(loss, argnums=(0, 1))(g0, v0)
    close(p(g0, v0), t_np(w_t))
    close(gg, pl.original0.grad.numpy())
    close(gv, pl.original1.grad.numpy())


# ================================================================================================
# The tutorial chains (torch versions written here, with the tutorial's bugs fixed: spec §16)
# ================================================================================================
class TSymmetric(torch.nn.Module):
    def forward(self, x):
        return x.triu() + x.triu(1).transpose(-1, -2)

    def right_inverse(self, a):
        return a.triu()


class TSkew(torch.nn.Module):
    def forward(self, x):
        a = x.triu(1)
        return a - a.transpose(-1, -2)

    def right_inverse(self, a):
        return a.triu(1)


class TCayley(torch.nn.Module):
    def forward(self, x):
        eye = torch.eye(x.shape[-1], dtype=x.dtype)
        return torch.linalg.solve(eye - x, eye + x)

    def right_inverse(self, a):
        eye = torch.eye(a.shape[-1], dtype=a.dtype)
        return torch.linalg.solve(a + eye, a - eye)


class TMatrixExp(torch.nn.Module):
    def forward(self, x):
        return torch.matrix_exp(x)


CHAINS = [
    ("skew+cayley", (TSkew, TCayley), (px.skew, px.cayley)),
    ("skew+matrix_exp", (TSkew, TMatrixExp), (px.skew, px.matrix_exp)),
    ("symmetric+matrix_exp", (TSymmetric, TMatrixExp), (px.symmetric, px.matrix_exp)),
]


def _torch_chain(w, mods):
    holder = Holder(w)
    for cls in mods:
        tpar.register_parametrization(holder, "weight", cls())
    return holder


@pytest.mark.parametrize("name,tmods,chain", CHAINS, ids=[c[0] for c in CHAINS])
def test_tutorial_chain_forward(name, tmods, chain):
    rng = np.random.default_rng(12)
    raw = rand(rng, (4, 4), np.float32, 0.5)
    c = rand(rng, (4, 4))
    holder = _torch_chain(raw, tmods)
    with torch.no_grad():
        holder.parametrizations.weight.original.copy_(torch.tensor(raw))
    w_t = holder.weight
    torch.sum(w_t * torch.tensor(c)).backward()
    spec = {"w": list(chain)}
    raw_tree = {"parametrizations": {"w": {"original": raw}}}
    close(ptree.constrain(spec, raw_tree)["w"], t_np(w_t))
    if name == "skew+cayley":  # (one gradient check: the matrix-exponential ones cost compile time)
        loss = lambda r: jnp.sum(ptree.constrain(spec, r)["w"] * c)
        g = jax.grad(loss)(raw_tree)["parametrizations"]["w"]["original"]
        close(g, holder.parametrizations.weight.original.grad.numpy())


def test_tutorial_skew_cayley_assignment():
    rng = np.random.default_rng(13)
    s = rand(rng, (4, 4), np.float32, 0.5)
    q = t_np(TCayley()(TSkew()(torch.tensor(s))))  # a point of SO(4) in general position
    holder = _torch_chain(np.zeros((4, 4), np.float32), (TSkew, TCayley))
    with torch.no_grad():
        holder.weight = torch.tensor(q)
    spec = {"w": [px.skew, px.cayley]}
    raw, state = ptree.register(spec, {"w": np.eye(4, dtype=np.float32)})
    raw, state = ptree.assign(spec, raw, state, {"w": q})
    close(raw["parametrizations"]["w"]["original"], t_np(holder.parametrizations.weight.original))
    close(ptree.constrain(spec, raw, state)["w"], t_np(holder.weight))


def test_tutorial_matrix_exp_chain_cannot_be_assigned():
    holder = _torch_chain(np.zeros((4, 4), np.float32), (TSkew, TMatrixExp))
    with pytest.raises(RuntimeError, match="does not implement right_inverse"):
        holder.weight = torch.eye(4)
    spec = {"w": [px.skew, px.matrix_exp]}
    raw, state = ptree.register(spec, {"w": np.zeros((4, 4), np.float32)})
    with pytest.raises(px.RightInverseError, match="does not implement right_inverse"):
        ptree.assign(spec, raw, state, {"w": np.eye(4, dtype=np.float32)})
