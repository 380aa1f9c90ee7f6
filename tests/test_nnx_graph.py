"""How the NNX front's containers appear to NNX's graph traversal (the per-step cost of nnx.jit).

The parametrization containers flatten leanly (``parametrax.nnx._compat.lean_flatten``): no
``PytreeState`` node of their own, their static fields in one static element, and a link that owns
no variables carried as a static value of its chain instead of a graph node. These tests lock what
that must keep: the ``nnx.state`` paths, every static field through ``split`` / ``merge`` and
through ``nnx.jit`` (including changes made inside the trace), the identity of the containers
across ``nnx.jit`` calls, no re-trace between calls or between two models of the same structure,
and the graph size itself. Oracles: closed forms (WeightNorm ``g v / |v|``, ``2 x``), counts of
graph nodes of plain ``nnx.Linear`` layers, trace counters.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import parametrax as px
from parametrax import nnx as pnnx
from parametrax.nnx import ParametrizationLink, ParametrizationList, _compat

from _helpers import Counter, Double, Scale


def _weight_norm(g, v):
    return g * v / np.linalg.norm(v, axis=0, keepdims=True)


def _wn_linear(seed=0):
    layer = nnx.Linear(3, 4, rngs=nnx.Rngs(seed))
    pnnx.register_parametrization(layer, "kernel", px.WeightNorm())
    return layer


def _graph_nodes(module):
    return [type(n).__name__ for n in nnx.graphdef(module).nodes]


def test_state_paths_are_unchanged():
    layer = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    pnnx.register_parametrization(layer, "kernel", [Double(), Scale(2.0)], key=jax.random.key(0))
    paths = sorted("/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(layer)))
    assert paths == [
        "bias",
        "parametrizations/kernel/1/s",
        "parametrizations/kernel/original",
    ]


@pytest.mark.skipif(
    not _compat.LEAN_GRAPH, reason="this flax lacks the graph internals of the lean protocol"
)
def test_graph_has_no_node_for_links_without_variables_nor_container_state():
    plain = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    layer = _wn_linear()
    base = _graph_nodes(plain)
    nodes = _graph_nodes(layer)
    # plain: Linear, its PytreeState, kernel, bias. Parametrized: the kernel Variable is replaced
    # by two (g, v), plus exactly the dict and the list; no link node, no PytreeState for either.
    assert base.count("NodeDef") == 2 and base.count("VariableDef") == 2
    assert nodes.count("VariableDef") == 3
    assert nodes.count("NodeDef") == base.count("NodeDef") + 2
    types = [getattr(n, "type", None) for n in nnx.graphdef(layer).nodes]
    assert ParametrizationLink not in types and ParametrizationList in types

    # A link with variables stays a node: its variables need a path.
    layer2 = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    pnnx.register_parametrization(layer2, "kernel", [Double(), Scale(2.0)], key=jax.random.key(0))
    types2 = [getattr(n, "type", None) for n in nnx.graphdef(layer2).nodes]
    assert types2.count(ParametrizationLink) == 1


def test_split_merge_round_trip_keeps_every_static_field():
    layer = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    pnnx.register_parametrization(layer, "kernel", [Double(), Scale(2.0)], key=jax.random.key(0))
    pnnx.register_parametrization(layer, "kernel", Counter(), unsafe=True, key=jax.random.key(1))
    layer.eval()
    pl = layer.parametrizations.kernel
    graphdef, state = nnx.split(layer)
    other = nnx.merge(graphdef, state)
    opl = other.parametrizations.kernel
    assert type(other) is type(layer)
    assert opl.original_names == pl.original_names == ("original",)
    assert opl.unsafe is True and opl.use_running_average is True
    assert len(opl) == 3 and opl.chain == pl.chain
    assert [type(link) for link in opl] == [ParametrizationLink] * 3
    assert opl[0] is not pl[0]  # a new model gets its own links
    assert opl[0]._px_param_names == () and opl[1]._px_param_names == ("s",)
    assert opl[2]._px_state_names == ("count",)
    np.testing.assert_allclose(other.kernel, layer.kernel, rtol=1e-6)
    # The merged containers are ordinary, mutable modules.
    other.train()
    assert opl.use_running_average is False
    raw = np.asarray(opl.original[...])
    np.testing.assert_allclose(other.kernel, 2.0 * 2.0 * raw, rtol=1e-6)  # Double, then s = 2
    other.kernel = jnp.ones((3, 4))
    np.testing.assert_allclose(opl.original[...], np.full((3, 4), 0.25), rtol=1e-6)
    layer.train()
    assert nnx.graphdef(other) == nnx.graphdef(layer)


def test_jit_keeps_container_identity_and_does_not_retrace():
    traces = []

    @nnx.jit
    def step(model, optimizer, x):
        traces.append(1)

        def loss(m):
            return jnp.sum(m(x) ** 2)

        grads = nnx.grad(loss)(model)
        optimizer.update(model, grads)
        return model.kernel

    x = jnp.ones((2, 3))
    models = [_wn_linear(seed) for seed in (0, 1)]
    tx = optax.sgd(0.1)  # one transformation: optax's are compared by identity
    for layer in models:
        pdict = layer.parametrizations
        pl = pdict.kernel
        link = pl[0]
        optimizer = nnx.Optimizer(layer, tx, wrt=nnx.Param)
        for _ in range(3):
            kernel = step(layer, optimizer, x)
            assert layer.parametrizations is pdict and pdict.kernel is pl and pl[0] is link
            assert vars(pl)["0"] is link and len(pl) == 1
            g, v = np.asarray(pl.original0[...]), np.asarray(pl.original1[...])
            np.testing.assert_allclose(kernel, _weight_norm(g, v), rtol=1e-5, atol=1e-6)
    assert len(traces) == 1  # one trace for 6 calls over two models of the same structure


def test_jit_propagates_static_changes_and_mode():
    layer = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    pnnx.register_parametrization(layer, "kernel", Counter(), key=jax.random.key(1))
    pl = layer.parametrizations.kernel
    read = nnx.jit(lambda m: m.kernel)

    read(layer)
    assert int(pl[0].count[...]) == 1  # train: a read advances the state
    layer.eval()
    read(layer)
    assert int(pl[0].count[...]) == 1  # eval (a new graph, so a new trace): no update

    # A static field changed inside the trace comes back, as for any NNX module.
    nnx.jit(lambda m: m.train())(layer)
    assert pl.use_running_average is False and layer.parametrizations.kernel is pl
    read(layer)
    assert int(pl[0].count[...]) == 2


@dataclasses.dataclass(frozen=True)
class Times(px.Parametrization):
    c: float = 2.0

    def forward(self, x):
        return self.c * x

    def right_inverse(self, y):
        return y / self.c


def test_a_static_change_to_a_link_without_variables_inside_a_trace_comes_back():
    layer = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    pnnx.register_parametrization(layer, "kernel", Times(2.0))
    pl = layer.parametrizations.kernel

    def swap(m):
        inner = m.parametrizations.kernel[0]
        object.__setattr__(inner, "parametrization", Times(3.0))

    nnx.jit(swap)(layer)
    assert pl[0].parametrization == Times(3.0) and len(pl) == 1
    assert isinstance(pl[0], ParametrizationLink) and pl[0]._px_param_names == ()
    np.testing.assert_allclose(layer.kernel, 3.0 * np.asarray(pl.original[...]), rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Every NNX stepping mode trains the same model (docs/recipes.md, "NNX: the fastest stepping")
# ------------------------------------------------------------------------------------------------
class _Net(nnx.Module):
    def __init__(self, rngs):
        self.a = nnx.Linear(6, 5, rngs=rngs)
        self.b = nnx.Linear(5, 4, rngs=rngs)

    def __call__(self, x):
        return self.b(jnp.tanh(self.a(x)))


def _net():
    model = _Net(nnx.Rngs(0))
    pnnx.register_parametrization(model.a, "kernel", px.SpectralNorm(), rngs=nnx.Rngs(1))
    pnnx.register_parametrization(model.b, "kernel", px.Orthogonal(), rngs=nnx.Rngs(2))
    return model, nnx.Optimizer(model, optax.sgd(0.05, momentum=0.9), wrt=nnx.Param)


def _train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)
    return loss


def _stepper(mode, model, optimizer):
    """``mode``'s step as a function of ``(x, y)``; skips where this flax lacks the mode."""
    if mode == "nnx.jit":
        step = nnx.jit(_train_step)
        return lambda x, y: step(model, optimizer, x, y)
    if mode == "jit(graph=False)":
        try:
            step = nnx.jit(_train_step, graph=False)
        except TypeError:
            pytest.skip("this flax has no NNX tree mode (flax >= 0.12.4)")
        return lambda x, y: step(model, optimizer, x, y)
    if mode == "jit_partial(graph=False)":
        if not hasattr(nnx, "jit_partial"):
            pytest.skip("this flax has no nnx.jit_partial (flax >= 0.12.5)")
        return nnx.jit_partial(_train_step, model, optimizer, graph=False)
    if mode == "cached_partial":
        return nnx.cached_partial(nnx.jit(_train_step), model, optimizer)
    graphdef, state = nnx.split((model, optimizer))  # split + jax.jit
    box = [state]

    @jax.jit
    def pure(state, x, y):
        m, o = nnx.merge(graphdef, state)
        loss = _train_step(m, o, x, y)
        return nnx.state((m, o)), loss

    def step(x, y):
        box[0], loss = pure(box[0], x, y)
        nnx.update((model, optimizer), box[0])
        return loss

    return step


@pytest.mark.parametrize(
    "mode", ["jit(graph=False)", "jit_partial(graph=False)", "cached_partial", "split + jax.jit"]
)
def test_every_stepping_mode_trains_the_same_model(mode):
    x = jax.random.normal(jax.random.key(3), (8, 6))
    y = jax.random.normal(jax.random.key(4), (8, 4))
    ref_model, ref_opt = _net()
    model, opt = _net()
    ref_step, step = _stepper("nnx.jit", ref_model, ref_opt), _stepper(mode, model, opt)
    u0 = np.asarray(model.a.parametrizations.kernel[0].u[...])
    for _ in range(3):
        np.testing.assert_allclose(step(x, y), ref_step(x, y), rtol=1e-5)
    # the same raw values, optimizer slots and parametrization state (spectral norm's u, v)
    got, want = nnx.state((model, opt)), nnx.state((ref_model, ref_opt))
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the mode wrote the power iteration's state back, and the constraints hold
    assert not np.allclose(model.a.parametrizations.kernel[0].u[...], u0)
    kb = np.asarray(model.b.kernel)
    np.testing.assert_allclose(kb.T @ kb, np.eye(4), atol=1e-5)
