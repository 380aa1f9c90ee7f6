"""parametrax.interop.torch: torch state_dicts of parametrized models, loaded into the equivalent
px.Parametrized Flax model, compute torch's outputs (end to end: build, parametrize, train a few
steps in torch, save, load, compare on the same inputs)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
tnn = torch.nn
P = torch.nn.utils.parametrize
PZ = torch.nn.utils.parametrizations

import flax.linen as nn  # noqa: E402

import parametrax as px  # noqa: E402
from parametrax.interop import torch as pt  # noqa: E402

torch.set_num_threads(1)
ATOL = 2e-5


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def _train(model, x, steps=3, lr=0.05):
    """A few SGD steps in train mode (spectral norm iterates), then eval mode."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = (model(x) ** 2).mean() + model(x).sum() * 0.1
        loss.backward()
        opt.step()
    model.eval()
    return model


def _torch_out(model, x):
    with torch.no_grad():
        return model(x).numpy()


class TSkew(tnn.Module):  # the tutorial's Skew (upper triangle)
    def forward(self, X):
        A = X.triu(1)
        return A - A.transpose(-1, -2)

    def right_inverse(self, A):
        return A.triu(1)


class TCayley(tnn.Module):  # the tutorial's CayleyMap, with its two bugs fixed
    def forward(self, X):
        Id = torch.eye(X.shape[-1], dtype=X.dtype)
        return torch.linalg.solve(Id - X, Id + X)

    def right_inverse(self, A):
        Id = torch.eye(A.shape[-1], dtype=A.dtype)
        return torch.linalg.solve(A + Id, A - Id)


class TPositive(tnn.Module):
    def forward(self, X):
        return tnn.functional.softplus(X)

    def right_inverse(self, Y):
        return Y + torch.log(-torch.expm1(-Y))


# ------------------------------------------------------------------------------------------------
# an MLP with every torch built-in, named like the Flax modules (linen_names)
# ------------------------------------------------------------------------------------------------
class TorchMLP(tnn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = tnn.Linear(5, 8)
        self.fc2 = tnn.Linear(8, 8)
        self.fc3 = tnn.Linear(8, 6)
        self.fc4 = tnn.Linear(6, 4)
        self.blocks = tnn.ModuleList([tnn.Linear(4, 4), tnn.Linear(4, 3)])

    def forward(self, x):
        x = torch.tanh(self.fc1(x))
        x = torch.tanh(self.fc2(x))
        x = torch.tanh(self.fc3(x))
        x = torch.tanh(self.fc4(x))
        x = torch.tanh(self.blocks[0](x))
        return self.blocks[1](x)


class FlaxMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Dense(8, name="fc1")(x))
        x = jnp.tanh(nn.Dense(8, name="fc2")(x))
        x = jnp.tanh(nn.Dense(6, name="fc3")(x))
        x = jnp.tanh(nn.Dense(4, name="fc4")(x))
        x = jnp.tanh(nn.Dense(4, name="blocks_0")(x))
        return nn.Dense(3, name="blocks_1")(x)


MLP_SPEC = {
    "fc1/kernel": px.SpectralNorm(),
    "fc2/kernel": px.Orthogonal(),  # square: matrix_exp, trivialization
    "fc3/kernel": px.WeightNorm(),
    "fc4/kernel": px.Orthogonal(),  # (4, 6) weight, wide kernel: householder
    "blocks_0/kernel": [
        px.Skew(),
        px.Cayley(),
    ],  # user parametrizations, loaded by value
    "blocks_1/kernel": px.Positive(),  # elementwise
}


def _torch_mlp(seed=0):
    torch.manual_seed(seed)
    m = TorchMLP()
    PZ.spectral_norm(m.fc1)
    PZ.orthogonal(m.fc2)
    PZ.weight_norm(m.fc3)
    PZ.orthogonal(m.fc4)
    with torch.no_grad():  # start the Cayley chain from an orthogonal matrix it can represent
        m.blocks[0].weight.copy_(torch.linalg.qr(torch.randn(4, 4))[0])
    P.register_parametrization(m.blocks[0], "weight", TSkew())
    P.register_parametrization(m.blocks[0], "weight", TCayley())
    with torch.no_grad():
        m.blocks[1].weight.abs_()
    P.register_parametrization(m.blocks[1], "weight", TPositive())
    return m


def test_mlp_end_to_end_with_template():
    x_np = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    x = torch.from_numpy(x_np)
    tm = _train(_torch_mlp(), x)
    sd = tm.state_dict()
    assert (
        "fc3.parametrizations.weight.original0" in sd and "fc1.parametrizations.weight.0._u" in sd
    )

    model = px.Parametrized(FlaxMLP, MLP_SPEC)()
    template = model.init(jax.random.key(0), jnp.asarray(x_np))
    variables = pt.load_state_dict(
        sd, model, modules=pt.linen_names, template=template, key=jax.random.key(1)
    )
    out = model.apply(variables, jnp.asarray(x_np))
    np.testing.assert_allclose(np.asarray(out), _torch_out(tm, x), atol=ATOL, rtol=0)

    # the constrained kernels are torch's weights, transposed
    k = px.linen.constrain(model, variables)["params"]
    for name in ("fc1", "fc2", "fc3", "fc4", "blocks_1"):
        t_mod = getattr(tm, name) if "_" not in name else tm.blocks[int(name[-1])]
        np.testing.assert_allclose(
            np.asarray(k[name]["kernel"]), t_mod.weight.detach().numpy().T, atol=ATOL
        )
    # spectral norm's state moved, not recomputed: u, v are torch's
    st = variables["parametrization_state"]["parametrizations"]["fc1"]["kernel"]["0"]
    np.testing.assert_array_equal(np.asarray(st["u"]), sd["fc1.parametrizations.weight.0._u"])
    np.testing.assert_array_equal(np.asarray(st["v"]), sd["fc1.parametrizations.weight.0._v"])


@pytest.mark.filterwarnings("ignore::parametrax.linen.FrozenStateWarning")
def test_training_continues_identically_for_the_exact_translations():
    """One more SGD step on both sides from the loaded raw values gives the same outputs: the raw
    values (not only the values) correspond for spectral norm, weight norm and orthogonal."""
    spec = {k: v for k, v in MLP_SPEC.items() if k[:3] == "fc1" or k[:3] in ("fc3", "fc4")}

    class Small(tnn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc3, self.fc4 = (
                tnn.Linear(5, 8),
                tnn.Linear(8, 6),
                tnn.Linear(6, 4),
            )

        def forward(self, x):
            return self.fc4(torch.tanh(self.fc3(torch.tanh(self.fc1(x)))))

    class FSmall(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = jnp.tanh(nn.Dense(8, name="fc1")(x))
            return nn.Dense(4, name="fc4")(jnp.tanh(nn.Dense(6, name="fc3")(x)))

    torch.manual_seed(1)
    tm = Small()
    PZ.spectral_norm(tm.fc1)
    PZ.weight_norm(tm.fc3)
    PZ.orthogonal(tm.fc4)
    x_np = np.random.default_rng(1).normal(size=(9, 5)).astype(np.float32)
    x = torch.from_numpy(x_np)
    _train(tm, x, steps=2)
    model = px.Parametrized(FSmall, spec)()
    v = pt.load_state_dict(tm.state_dict(), spec, modules=pt.linen_names)

    lr = 0.1
    tm.eval()  # no power iteration: both sides use the stored u, v
    opt = torch.optim.SGD(tm.parameters(), lr=lr)
    opt.zero_grad()
    tm(x).pow(2).sum().backward()
    opt.step()

    def loss(params):
        return jnp.sum(model.apply({**v, "params": params}, jnp.asarray(x_np)) ** 2)

    g = jax.grad(loss)(v["params"])
    params = jax.tree.map(lambda p, d: p - lr * d, v["params"], g)
    out = model.apply({**v, "params": params}, jnp.asarray(x_np))
    np.testing.assert_allclose(np.asarray(out), _torch_out(tm, x), atol=5e-5, rtol=0)


# ------------------------------------------------------------------------------------------------
# orthogonal: every map, with and without the trivialization, square and not
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 6), (6, 4), (4, 6)])
@pytest.mark.parametrize("omap", ["matrix_exp", "cayley", "householder"])
@pytest.mark.parametrize("triv", [True, False])
def test_orthogonal_every_case(shape, omap, triv):
    torch.manual_seed(2)
    lin = tnn.Linear(shape[1], shape[0])
    PZ.orthogonal(lin, orthogonal_map=omap, use_trivialization=triv)
    x_np = np.random.default_rng(2).normal(size=(5, shape[1])).astype(np.float32)
    x = torch.from_numpy(x_np)
    _train(lin, x, steps=2, lr=0.1)
    spec = {"kernel": px.Orthogonal(map=omap, use_trivialization=triv)}
    model = px.Parametrized(nn.Dense(shape[0]), spec)
    v = pt.load_state_dict(lin.state_dict(), spec, modules={"": ""}, key=jax.random.key(0))
    np.testing.assert_allclose(
        np.asarray(model.apply(v, jnp.asarray(x_np))),
        _torch_out(lin, x),
        atol=ATOL,
        rtol=0,
    )


# ------------------------------------------------------------------------------------------------
# convolutions: spectral norm's v permuted, weight norm's g moved
# ------------------------------------------------------------------------------------------------
class TorchConv(tnn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = tnn.Conv2d(3, 5, (3, 2))
        self.c2 = tnn.Conv2d(5, 4, 3, padding=1)

    def forward(self, x):  # NCHW
        return self.c2(torch.tanh(self.c1(x)))


class FlaxConv(nn.Module):
    @nn.compact
    def __call__(self, x):  # NHWC
        x = jnp.tanh(nn.Conv(5, (3, 2), padding="VALID", name="c1")(x))
        return nn.Conv(4, (3, 3), padding=1, name="c2")(x)


def test_conv_spectral_and_weight_norm():
    torch.manual_seed(3)
    tm = TorchConv()
    PZ.spectral_norm(tm.c1)
    PZ.weight_norm(tm.c2)
    x_np = np.random.default_rng(3).normal(size=(2, 3, 7, 6)).astype(np.float32)
    x = torch.from_numpy(x_np)
    _train(tm, x, steps=2)
    spec = {"c1/kernel": px.SpectralNorm(), "c2/kernel": px.WeightNorm()}
    model = px.Parametrized(FlaxConv, spec)()
    xf = jnp.asarray(x_np.transpose(0, 2, 3, 1))
    template = model.init(jax.random.key(0), xf)
    v = pt.load_state_dict(tm.state_dict(), spec, modules=pt.linen_names, template=template)
    out = np.asarray(model.apply(v, xf)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out, _torch_out(tm, x), atol=ATOL, rtol=0)
    # torch's v is over (in, kh, kw); parametrax's over (kh, kw, in): a permutation, not a copy
    tv = tm.state_dict()["c1.parametrizations.weight.0._v"].numpy()
    pv = np.asarray(v["parametrization_state"]["parametrizations"]["c1"]["kernel"]["0"]["v"])
    assert not np.allclose(tv, pv)
    np.testing.assert_allclose(np.sort(tv), np.sort(pv))


# ------------------------------------------------------------------------------------------------
# the legacy torch.nn.utils.weight_norm keys (weight_g / weight_v; PyTorch issue 102999)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [0, 1, None])
def test_legacy_weight_norm_keys(dim):
    torch.manual_seed(4)
    lin = tnn.Linear(5, 3)
    with torch.no_grad():
        w = lin.weight.detach().clone()
    g = w.norm().reshape(()) if dim is None else w.norm(dim=1 - dim, keepdim=True)
    sd = {"weight_g": g * 1.5, "weight_v": w, "bias": lin.bias.detach()}
    # torch's own loader maps the legacy keys (test 26 of test_parametrization.py)
    ref = tnn.Linear(5, 3)
    PZ.weight_norm(ref, dim=dim)
    ref.load_state_dict(sd)
    axis = {0: -1, 1: 0, None: None}[dim]
    spec = {"kernel": px.WeightNorm(axis=axis)}
    v = pt.load_state_dict(sd, spec, modules={"": ""})
    x_np = np.random.default_rng(4).normal(size=(4, 5)).astype(np.float32)
    out = px.Parametrized(nn.Dense(3), spec).apply(v, jnp.asarray(x_np))
    np.testing.assert_allclose(np.asarray(out), _torch_out(ref, torch.from_numpy(x_np)), atol=ATOL)


# ------------------------------------------------------------------------------------------------
# plain layers: embedding, layer norm, batch norm; an NNX model from the same dict
# ------------------------------------------------------------------------------------------------
def test_embed_norm_layers():
    class T(tnn.Module):
        def __init__(self):
            super().__init__()
            self.emb = tnn.Embedding(10, 6)
            self.ln = tnn.LayerNorm(6)
            self.fc = tnn.Linear(6, 4)
            self.bn = tnn.BatchNorm1d(4)

        def forward(self, i):
            return self.bn(self.fc(self.ln(self.emb(i))))

    class F(nn.Module):
        @nn.compact
        def __call__(self, i):
            x = nn.Embed(10, 6, name="emb")(i)
            x = nn.LayerNorm(epsilon=1e-5, name="ln")(x)
            x = nn.Dense(4, name="fc")(x)
            return nn.BatchNorm(use_running_average=True, epsilon=1e-5, name="bn")(x)

    torch.manual_seed(5)
    tm = T()
    PZ.orthogonal(tm.emb)
    i_np = np.array([0, 3, 9, 4, 4])
    tm.train()
    tm(torch.from_numpy(i_np))  # moves the batch norm's running stats
    tm.eval()
    spec = {"emb/embedding": px.Orthogonal()}
    model = px.Parametrized(F, spec)()
    template = model.init(jax.random.key(0), jnp.asarray(i_np))
    v = pt.load_state_dict(
        tm.state_dict(),
        spec,
        modules=pt.linen_names,
        layouts={"emb": "embed"},
        template=template,
    )
    np.testing.assert_allclose(
        np.asarray(model.apply(v, jnp.asarray(i_np))),
        _torch_out(tm, torch.from_numpy(i_np)),
        atol=ATOL,
    )


def test_nnx_front():
    """The same state_dict into an NNX module registered with the same spec (nnx.update)."""
    from flax import nnx

    class T(tnn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = tnn.Linear(5, 4), tnn.Linear(4, 3)

        def forward(self, x):
            return self.fc2(torch.tanh(self.fc1(x)))

    class F(nnx.Module):
        def __init__(self, rngs):
            self.fc1, self.fc2 = (
                nnx.Linear(5, 4, rngs=rngs),
                nnx.Linear(4, 3, rngs=rngs),
            )

        def __call__(self, x):
            return self.fc2(jnp.tanh(self.fc1(x)))

    torch.manual_seed(6)
    tm = T()
    PZ.spectral_norm(tm.fc1)
    PZ.weight_norm(tm.fc2)
    x_np = np.random.default_rng(6).normal(size=(3, 5)).astype(np.float32)
    _train(tm, torch.from_numpy(x_np), steps=2)
    fm = F(nnx.Rngs(0))
    px.nnx.register_parametrization(fm.fc1, "kernel", px.SpectralNorm(), key=jax.random.key(0))
    px.nnx.register_parametrization(fm.fc2, "kernel", px.WeightNorm())
    spec = {"fc1/kernel": px.SpectralNorm(), "fc2/kernel": px.WeightNorm()}
    v = pt.load_state_dict(tm.state_dict(), spec, modules={"fc1": "fc1", "fc2": "fc2"})
    nnx.update(fm, pt.nnx_state(v))
    np.testing.assert_allclose(
        np.asarray(fm(jnp.asarray(x_np))),
        _torch_out(tm, torch.from_numpy(x_np)),
        atol=ATOL,
    )


# ------------------------------------------------------------------------------------------------
# errors name the keys
# ------------------------------------------------------------------------------------------------
def _sn_dict():
    torch.manual_seed(7)
    lin = tnn.Linear(5, 4)
    PZ.spectral_norm(lin)
    return lin.state_dict()


def test_unmapped_module_is_named():
    sd = {f"fc.{k}": v for k, v in _sn_dict().items()}
    with pytest.raises(pt.TorchLoadError, match=r"does not map the torch module\(s\) \['fc'\]"):
        pt.load_state_dict(sd, {"Dense_0/kernel": px.SpectralNorm()}, modules={"other": "x"})


def test_missing_buffer_is_named():
    sd = dict(_sn_dict())
    del sd["parametrizations.weight.0._v"]
    with pytest.raises(pt.TorchLoadError, match=r"`parametrizations\.weight\.0\._v` is missing"):
        pt.load_state_dict(sd, {"kernel": px.SpectralNorm()}, modules={"": ""})


def test_unexpected_buffer_is_named():
    sd = dict(_sn_dict())
    sd["parametrizations.weight.0.extra"] = np.zeros(3, np.float32)
    with pytest.raises(
        pt.TorchLoadError, match=r"parametrizations\.weight\.0\.extra.*not expected"
    ):
        pt.load_state_dict(sd, {"kernel": px.SpectralNorm()}, modules={"": ""})


def test_wrong_axis_is_explained():
    sd = _sn_dict()
    with pytest.raises(pt.TorchLoadError, match=r"dim=1 .*axis=-1 on Dense"):
        pt.load_state_dict(sd, {"kernel": px.SpectralNorm(axis=0)}, modules={"": ""})
    torch.manual_seed(0)
    lin = tnn.Linear(5, 4)
    PZ.weight_norm(lin)
    with pytest.raises(pt.TorchLoadError, match=r"Use WeightNorm\(axis=1\)"):
        pt.load_state_dict(lin.state_dict(), {"kernel": px.WeightNorm(axis=0)}, modules={"": ""})


def test_spec_and_state_dict_disagree():
    sd = _sn_dict()
    with pytest.raises(pt.TorchLoadError, match=r"spec key `bias2` matches no variable"):
        pt.load_state_dict(
            sd, {"kernel": px.SpectralNorm(), "bias2": px.Positive()}, modules={"": ""}
        )
    with pytest.raises(pt.TorchLoadError, match=r"holds it unparametrized \(`bias`\)"):
        pt.load_state_dict(
            sd, {"kernel": px.SpectralNorm(), "bias": px.Positive()}, modules={"": ""}
        )
    with pytest.raises(pt.TorchLoadError, match=r"no spec key matches it"):
        pt.load_state_dict(sd, {"bias": px.Positive()}, modules={"": ""})


def test_template_mismatches():
    sd = _sn_dict()
    spec = {"kernel": px.SpectralNorm()}
    model = px.Parametrized(nn.Dense(4), spec)
    good = model.init(jax.random.key(0), jnp.ones((1, 5)))
    wrong = model.init(jax.random.key(0), jnp.ones((1, 6)))
    with pytest.raises(px.ShapeError, match=r"`parametrizations\.weight\.original` -> "):
        pt.load_state_dict(sd, spec, modules={"": ""}, template=wrong)
    smaller = {k: v for k, v in sd.items() if k != "bias"}
    with pytest.raises(pt.TorchLoadError, match=r"(?s)does not provide.*params/bias"):
        pt.load_state_dict(smaller, spec, modules={"": ""}, template=good)
    v = pt.load_state_dict(smaller, spec, modules={"": ""}, template=good, strict=False)
    np.testing.assert_array_equal(v["params"]["bias"], good["params"]["bias"])


def test_bad_layout_and_unparseable_key():
    sd = _sn_dict()
    with pytest.raises(pt.TorchLoadError, match=r"expected one of 'auto'"):
        pt.load_state_dict(
            sd, {"kernel": px.SpectralNorm()}, modules={"": ""}, layouts={"": "dense"}
        )
    nested = {"parametrizations.weight.parametrizations.original.original": np.ones((2, 2))}
    with pytest.raises(pt.TorchLoadError, match=r"nested parametrizations"):
        pt.load_state_dict(nested, {"kernel": px.Skew()}, modules={"": ""})


# ------------------------------------------------------------------------------------------------
# torch stays optional; the documented example runs
# ------------------------------------------------------------------------------------------------
def test_module_never_imports_torch():
    code = (
        "import sys, parametrax, parametrax.interop.torch as pt, numpy as np\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "sd = {'parametrizations.weight.original': np.eye(3, dtype=np.float32)}\n"
        "import parametrax as px\n"
        "v = pt.load_state_dict(sd, {'kernel': px.Positive()}, modules={'': ''})\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_docs_migration_example_runs():
    page = pathlib.Path(__file__).resolve().parent.parent / "docs" / "migration" / "torch.md"
    text = page.read_text(encoding="utf-8")
    section = text[text.index("## Loading a torch checkpoint") :]
    blocks = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)
    assert blocks, "the section has no ```python block"
    import types

    mod = types.ModuleType("_px_torch_doc")
    sys.modules[mod.__name__] = mod
    try:
        for code in blocks:
            exec(compile(code, str(page), "exec"), mod.__dict__)
    finally:
        del sys.modules[mod.__name__]
