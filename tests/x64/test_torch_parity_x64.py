"""Float64 / complex128 parity with PyTorch 2.13 (run in its own process, JAX_ENABLE_X64=1).

A smaller mirror of tests/test_torch_parity.py at double precision, where the agreement is
limited only by rounding: orthogonal (every map, with and without the base point, square and
batched wide, real and complex: values and gradients; initialization), spectral norm (training
iterations and evaluation), weight norm (values and gradients) and the Skew + Cayley chain.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from parametrax import tree as ptree
from parametrax.catalog.norms import SpectralNorm, WeightNorm
from parametrax.catalog.orthogonal import Orthogonal

from _helpers import rand

torch = pytest.importorskip("torch")
tpz = torch.nn.utils.parametrizations

F64_RTOL = 1e-8
F64_ATOL = 1e-12
KEY = jax.random.key(0)
SHAPES = ((4, 4), (2, 3, 5))  # square, batched wide
# float64 matrix-exponential gradients are the costliest thing to compile here (five Padé
# branches): one batched wide shape, which also exercises the transpose and the padding.
SHAPES_FOR = {"matrix_exp": ((2, 3, 5),), "cayley": SHAPES, "householder": SHAPES}
CASES = [
    (m, triv, dt)
    for m in ("matrix_exp", "cayley", "householder")
    for triv in (True, False)
    for dt in (np.float64, np.complex128)
    if not (m == "householder" and dt is np.complex128)
]


def test_x64_is_enabled():
    assert jnp.zeros(1).dtype == jnp.float64


def close(ours, ref):
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=F64_RTOL, atol=F64_ATOL)


def orthogonal_base(rng, shape, dtype):
    n = max(shape[-2:])
    return np.linalg.qr(rand(rng, shape[:-2] + (n, n), dtype))[0].astype(dtype)


class Holder(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(np.array(w)))


def t_np(x):
    return x.detach().numpy()


@functools.cache
def ours_orth(m):
    p = Orthogonal(m)

    def loss(xs, bases, cs):
        qs = [p.apply({"params": {}, "state": {"base": b}}, x)[0] for x, b in zip(xs, bases)]
        return sum(jnp.sum(jnp.real(q * jnp.conj(c))) for q, c in zip(qs, cs)), qs

    return jax.jit(jax.grad(loss, has_aux=True))


def _pm_one_diagonal(rng, raw):
    wide = raw.shape[-2] < raw.shape[-1]
    tall = (np.swapaxes(raw, -1, -2) if wide else raw).copy()
    k = tall.shape[-1]
    tall[..., np.arange(k), np.arange(k)] = rng.choice([-1.0, 1.0], tall.shape[:-2] + (k,))
    return np.swapaxes(tall, -1, -2) if wide else tall


@pytest.mark.parametrize("m,triv,dt", CASES, ids=str)
def test_orthogonal_forward_and_grad_f64(m, triv, dt):
    rng = np.random.default_rng(0)
    shapes = SHAPES_FOR[m]
    raws = [rand(rng, s, dt) for s in shapes]
    if m == "householder":  # torch's stored +-1 diagonal: int() and parametrax's sign agree
        raws = [_pm_one_diagonal(rng, r) for r in raws]
    if triv:
        bases = [orthogonal_base(rng, s, dt) for s in shapes]
    else:  # apply with base I equals the plain map exactly (tests/test_orthogonal.py)
        bases = [
            np.broadcast_to(np.eye(max(s[-2:]), dtype=dt), s[:-2] + (max(s[-2:]),) * 2)
            for s in shapes
        ]
    cs = [rand(rng, s, dt) for s in shapes]
    grads, qs = ours_orth(m)(raws, bases, cs)
    for raw, base, c, q, g in zip(raws, bases, cs, qs, grads):
        mod = tpz.orthogonal(Holder(raw), "weight", orthogonal_map=m, use_trivialization=triv)
        with torch.no_grad():
            mod.parametrizations.weight.original.copy_(torch.tensor(raw))
            if triv:
                mod.parametrizations.weight[0].base = torch.tensor(base)
        w = mod.weight
        torch.sum(torch.real(w * torch.conj(torch.tensor(c)))).backward()
        close(q, t_np(w))
        close(g, np.conj(mod.parametrizations.weight.original.grad.numpy()))


@pytest.mark.parametrize("p", [Orthogonal(), Orthogonal("householder", False)], ids=repr)
def test_orthogonal_initialization_f64(p):
    w = rand(np.random.default_rng(1), (5, 3), np.float64)
    mod = tpz.orthogonal(Holder(w), orthogonal_map=p.map, use_trivialization=p.use_trivialization)
    raw, state = ptree.register({"w": p}, {"w": w}, key=KEY, unsafe=True)
    close(ptree.constrain({"w": p}, raw, state)["w"], t_np(mod.weight))
    if not p.use_trivialization:
        close(raw["parametrizations"]["w"]["original"], t_np(mod.parametrizations.weight.original))


def _unit(rng, n):
    x = rng.standard_normal(n)
    return x / np.linalg.norm(x)


def test_spectral_norm_train_and_eval_f64():
    torch.manual_seed(0)
    rng = np.random.default_rng(2)
    lin = tpz.spectral_norm(torch.nn.Linear(4, 3).double())
    sn = lin.parametrizations.weight[0]
    u0, v0 = _unit(rng, 3), _unit(rng, 4)
    with torch.no_grad():
        sn._u.copy_(torch.tensor(u0))
        sn._v.copy_(torch.tensor(v0))
    k = t_np(lin.parametrizations.weight.original).T  # Flax kernel layout
    p = SpectralNorm()
    step = jax.jit(lambda w, s: p.apply({"params": {}, "state": s}, w, update_state=True))
    state = {"u": u0, "v": v0}
    for _ in range(3):
        ref = t_np(lin.weight)
        out, state = step(k, state)
        close(out.T, ref)
    close(state["u"], t_np(sn._u))
    close(state["v"], t_np(sn._v))
    lin.eval()
    close(p.apply({"params": {}, "state": state}, k)[0].T, t_np(lin.weight))


def test_spectral_norm_complex_diagonal_f64():
    w = np.diag([1 + 1j, 3 - 4j]).astype(np.complex128)
    torch.manual_seed(1)
    ref = t_np(tpz.spectral_norm(Holder(w)).weight)
    spec = {"w": SpectralNorm()}
    raw, state = ptree.register(spec, {"w": w}, key=KEY, update_state=True)
    np.testing.assert_allclose(ptree.constrain(spec, raw, state)["w"], ref, rtol=1e-6, atol=1e-7)
    close(ref, np.diag([0.2 + 0.2j, 0.6 - 0.8j]))


@pytest.mark.parametrize("dim", [0, 1, None])
def test_weight_norm_values_and_gradients_f64(dim):
    rng = np.random.default_rng(3)
    lin = tpz.weight_norm(torch.nn.Linear(4, 5).double(), dim=dim)
    pl = lin.parametrizations.weight
    p = WeightNorm.from_torch(dim)
    g, v = p.right_inverse(t_np(pl.original1))
    close(g, t_np(pl.original0))
    c = rng.standard_normal((5, 4))
    torch.sum(lin.weight * torch.tensor(c)).backward()
    loss = lambda g, v: jnp.sum(p(g, v) * c)
    gg, gv = jax.grad(loss, argnums=(0, 1))(t_np(pl.original0), t_np(pl.original1))
    close(gg, pl.original0.grad.numpy())
    close(gv, pl.original1.grad.numpy())


def test_skew_cayley_chain_f64():
    from parametrax import cayley, skew

    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 4))
    a = torch.tensor(x).triu(1)
    a = a - a.T
    eye = torch.eye(4, dtype=torch.float64)
    ref = torch.linalg.solve(eye - a, eye + a).numpy()
    spec = {"w": [skew, cayley]}
    close(ptree.constrain(spec, {"parametrizations": {"w": {"original": x}}})["w"], ref)
