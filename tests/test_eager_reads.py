"""Eager reads run as one compiled call of the chain (issue 13, section 3).

``_core.chain_forward`` evaluates a chain whose every link compiles eagerly as one jitted call
when no input is a tracer; ``_core._op_by_op()`` turns that off, giving the path every eager read
took before. The oracle of every value test is that op-by-op path (bit for bit), and for the
stateful maps the state it leaves behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import weakref

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import parametrax as px
import parametrax.equinox as peqx
import parametrax.nnx as pnnx
from parametrax import _core

N = 16  # small kernels: the suite runs on a shared 2-core CPU

MAPS = {
    "weight_norm": lambda: px.WeightNorm(),
    "spectral_norm": lambda: px.SpectralNorm(),
    "orthogonal_cayley": lambda: px.Orthogonal(map="cayley"),
    "orthogonal_default": lambda: px.Orthogonal(),  # state: the trivialization base
    "skew_matrix_exp": lambda: [px.Skew(), px.MatrixExp()],
}


@contextlib.contextmanager
def evaluations():
    """Records each op-by-op chain evaluation: True when its inputs were concrete (an op-by-op
    eager read), False when traced (the compiled call being traced, or a read inside jit)."""
    seen: list[bool] = []
    inner = _core._forward_ops

    def spy(chain, originals, *args, **kwargs):
        seen.append(not isinstance(next(iter(originals.values())), jax.core.Tracer))
        return inner(chain, originals, *args, **kwargs)

    _core._forward_ops = spy
    try:
        yield seen
    finally:
        _core._forward_ops = inner


def kernel(n=N, seed=0):
    return jax.random.normal(jax.random.key(seed), (n, n)) / np.sqrt(n)


def nnx_layer(chain, seed=0):
    layer = nnx.Linear(N, N, rngs=nnx.Rngs(seed))
    pnnx.register_parametrization(layer, "kernel", chain, rngs=nnx.Rngs(1))
    return layer


# ------------------------------------------------------------------------------------------------
# (1) the same values as op by op, and the compiled path is the one taken
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MAPS))
def test_tree_eager_read_is_compiled_and_equals_op_by_op(name):
    spec = {"w": MAPS[name]()}
    raw, state = px.tree.register(spec, {"w": kernel()}, key=jax.random.key(1))
    with evaluations() as seen:
        a = px.tree.constrain(spec, raw, state)["w"]
        b = px.tree.constrain(spec, raw, state)["w"]
    assert not any(seen)  # never op by op on concrete inputs: traced once (or cached)
    with _core._op_by_op(), evaluations() as seen:
        c = px.tree.constrain(spec, raw, state)["w"]
    assert seen == [True]
    jitted = jax.jit(lambda r, s: px.tree.constrain(spec, r, s))(raw, state)["w"]
    np.testing.assert_array_equal(np.asarray(a), np.asarray(jitted))  # the jitted map, exactly
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert a.dtype == c.dtype and a.shape == c.shape
    close_to_op_by_op(a, c)


def close_to_op_by_op(compiled, ops):
    """Equal to op by op up to 2 ulp: XLA fuses a reduction with the products it sums (the norm
    of WeightNorm on a 16x16 kernel), which may change the summation order. Measured: 0 ulp for
    every map at n = 64 and 256, and for SpectralNorm, Cayley, Orthogonal, Skew+MatrixExp at
    n = 16; up to 2 ulp for WeightNorm at n = 16 (48 of 256 entries)."""
    np.testing.assert_array_max_ulp(np.asarray(compiled), np.asarray(ops), maxulp=2)


@pytest.mark.parametrize("name", sorted(MAPS))
def test_nnx_eager_read_equals_op_by_op_in_eval_mode(name):
    layer = nnx_layer(MAPS[name]())
    layer.eval()
    with evaluations() as seen:
        a = layer.kernel
    assert not any(seen)
    with _core._op_by_op():
        b = layer.kernel
    close_to_op_by_op(a, b)


def test_equinox_and_linen_constrain_equal_op_by_op():
    lin = eqx.nn.Linear(N, N, key=jax.random.key(0))
    model, state = eqx.nn.make_with_state(peqx.Parametrized)(
        lin, {"weight": px.SpectralNorm()}, key=jax.random.key(1)
    )
    with evaluations() as seen:
        a = peqx.constrain(model, state).weight
    assert not any(seen)
    with _core._op_by_op():
        b = peqx.constrain(model, state).weight
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    dense = px.Parametrized(nn.Dense(N), {"kernel": px.WeightNorm()})
    variables = dense.init(jax.random.key(2), jnp.ones((1, N)))
    with evaluations() as seen:
        a = px.linen.constrain(dense, variables)["params"]["kernel"]
    assert not any(seen)
    with _core._op_by_op():
        b = px.linen.constrain(dense, variables)["params"]["kernel"]
    close_to_op_by_op(a, b)


def test_traced_reads_stay_inlined_op_by_op():
    spec = {"w": px.WeightNorm()}
    raw, state = px.tree.register(spec, {"w": kernel()})
    jaxpr = jax.make_jaxpr(lambda r: px.tree.constrain(spec, r, state))(raw)
    names = [str(e.params.get("name", "")) for e in jaxpr.jaxpr.eqns]
    assert "_traced_chain" not in names  # no nested compiled call inside a user's trace
    with evaluations() as seen:
        jax.jit(lambda r: px.tree.constrain(spec, r, state))(raw)
    assert seen == [False]


# ------------------------------------------------------------------------------------------------
# Which links compile: parametrax's own; user code only when it says so
# ------------------------------------------------------------------------------------------------
_CALLS: list = []


class NoisyIdentity(px.Parametrization):
    """A user's parametrization with a Python side effect per evaluation (torch's tutorial)."""

    def forward(self, x):
        _CALLS.append(1)
        return x

    def right_inverse(self, value):
        return value


class CompiledNoisy(NoisyIdentity):
    compile_eagerly = True  # opts in: its side effect then runs once per compilation


def test_user_links_and_functions_stay_op_by_op_unless_they_opt_in():
    spec = {"w": NoisyIdentity()}
    raw, _ = px.tree.register(spec, {"w": kernel()})
    _CALLS.clear()
    for _ in range(3):
        px.tree.constrain(spec, raw)
    assert len(_CALLS) == 3  # one evaluation per read, as before

    def double(x):
        _CALLS.append(1)
        return 2.0 * x

    assert not _core.compiles_eagerly(_core.as_parametrization(double))
    assert _core.compiles_eagerly(px.WeightNorm())
    assert _core.compiles_eagerly(CompiledNoisy())
    assert not _core.compiles_eagerly(NoisyIdentity())


# ------------------------------------------------------------------------------------------------
# (4) one trace per chain and shapes: no recompilation per read
# ------------------------------------------------------------------------------------------------
def test_one_trace_per_chain_and_shape():
    spec = {"w": CompiledNoisy()}
    raw, _ = px.tree.register(spec, {"w": kernel(n=5)})
    _CALLS.clear()
    for _ in range(5):
        out = px.tree.constrain(spec, raw)["w"]
    assert len(_CALLS) == 1  # traced once, then the compiled call is reused
    np.testing.assert_array_equal(out, kernel(n=5))
    raw7, _ = px.tree.register(spec, {"w": kernel(n=7)})
    _CALLS.clear()
    for _ in range(3):
        px.tree.constrain(spec, raw7)
    assert len(_CALLS) == 1  # a new shape: one more trace


def test_catalog_reads_never_retrace():
    layer = nnx_layer(px.SpectralNorm())  # train mode: every read updates u, v
    _ = layer.kernel  # the read itself is under test
    before = _core._compiled_cache_size()
    with evaluations() as seen:
        for _ in range(4):
            _ = layer.kernel  # the read itself is under test
    assert seen == [] and _core._compiled_cache_size() == before


# ------------------------------------------------------------------------------------------------
# (3) stateful links update their state exactly as before
# ------------------------------------------------------------------------------------------------
def test_nnx_spectral_norm_state_advances_as_the_jitted_map_and_op_by_op():
    """Train-mode reads advance u, v once per read, as before. The compiled read is the jitted
    map bit for bit (``nnx.jit`` reads of a twin layer); against op by op the power iteration's
    normalisations are fused by XLA, so u, v differ by rounding (measured: up to 2 ulp in the
    value after one update, up to 5 ulp after three; up to 7.5e-8 absolute in u, v at
    n = 16..256 after 5 reads; up to hundreds of ulp only
    in entries of u near zero), never by an extra or a missing update."""
    a, b, c = (nnx_layer(px.SpectralNorm()) for _ in range(3))
    read = nnx.jit(lambda m: m.kernel)
    for _ in range(3):
        ka = a.kernel
        kb = read(b)
        with _core._op_by_op():
            kc = c.kernel
        np.testing.assert_array_equal(np.asarray(ka), np.asarray(kb))
        # u, v differ by rounding, so the value too (measured: up to 5 ulp, 3.6e-7 relative)
        np.testing.assert_allclose(np.asarray(ka), np.asarray(kc), rtol=2e-6, atol=1e-7)
    for name in ("u", "v"):
        ua, ub, uc = (getattr(m.parametrizations.kernel[0], name)[...] for m in (a, b, c))
        np.testing.assert_array_equal(np.asarray(ua), np.asarray(ub))
        np.testing.assert_allclose(np.asarray(ua), np.asarray(uc), rtol=0, atol=1e-6)
    # and it moved: the stored u is not the one made at registration
    fresh = nnx_layer(px.SpectralNorm())
    assert not np.array_equal(
        a.parametrizations.kernel[0].u[...], fresh.parametrizations.kernel[0].u[...]
    )


def test_tree_forward_state_updates_and_identity():
    spec = {"w": px.SpectralNorm(n_power_iterations=2)}
    raw, state = px.tree.register(spec, {"w": kernel()}, key=jax.random.key(3))
    _, s1 = px.tree.forward(spec, raw, state, update_state=True)
    _, s2 = jax.jit(lambda r, s: px.tree.forward(spec, r, s, update_state=True))(raw, state)
    with _core._op_by_op():
        _, s3 = px.tree.forward(spec, raw, state, update_state=True)
    for k in ("u", "v"):
        got = np.asarray(s1["parametrizations"]["w"]["0"][k])
        np.testing.assert_array_equal(got, s2["parametrizations"]["w"]["0"][k])
        np.testing.assert_allclose(got, s3["parametrizations"]["w"]["0"][k], rtol=0, atol=1e-6)
        assert not np.array_equal(got, state["parametrizations"]["w"]["0"][k])  # it moved
    _, same = px.tree.forward(spec, raw, state, update_state=False)
    for k in ("u", "v"):  # unchanged state comes back as the very arrays given, as op by op
        assert same["parametrizations"]["w"]["0"][k] is state["parametrizations"]["w"]["0"][k]


class CompiledCounter(px.Parametrization):
    """Identity with a state ``count`` advanced by every read that updates state; compiled."""

    compile_eagerly = True

    def init_variables(self, key, value):
        return {"params": {}, "state": {"count": jnp.zeros((), jnp.int32)}}

    def apply(self, variables, x, *, update_state=False):
        c = variables["state"]["count"]
        return x, {"count": c + 1 if update_state else c}

    def apply_inverse(self, variables, value, *, key=None):
        return value, variables["state"]


class CompiledTwoStates(px.Parametrization):
    """Identity; state ``z`` (never moved) and ``a`` (moved by updating reads), declared out of
    sorted order; with ``grow`` an updating read also adds a state entry ``b``. Compiled."""

    compile_eagerly = True
    grow: bool = False

    def apply(self, variables, x, *, update_state=False):
        st = variables["state"]
        if not update_state:
            return x * 2.0, st
        out = {"z": st["z"], "a": st["a"] + 1.0}
        if self.grow:
            out = {"b": x.sum(), **out}
        return x * 2.0, out


@pytest.mark.parametrize("grow", [False, True])
@pytest.mark.parametrize("update", [False, True])
def test_state_rebuild_keeps_key_order_and_identity_as_op_by_op(update, grow):
    chain = (CompiledTwoStates(grow=grow),)
    x = kernel(n=3)
    z, a = jnp.zeros(2), jnp.ones(2)

    def read():
        # a fresh state dict each time, in the link's (unsorted) order; jit sorts dict keys
        return _core.chain_forward(
            chain, {"original": x}, [{}], [{"z": z, "a": a}], update_state=update
        )

    with _core._op_by_op(), evaluations() as seen_ops:
        want_value, (want,) = read()
    with evaluations() as seen:
        read()  # traced here
        value, (got,) = read()
    assert seen_ops == [True] and seen == [False]  # op by op, then one trace and compiled calls
    np.testing.assert_array_equal(value, want_value)
    # the input's key order, new keys after (jit hands dicts back with sorted keys): as op by op
    # when the link keeps the keys; a new key (grow) comes after, where op by op keeps the
    # link's own order
    assert list(got) == (["z", "a", "b"] if grow and update else list(want))
    assert sorted(got) == sorted(want)
    assert got["z"] is z  # an unchanged state is the very input array
    assert (got["a"] is a) == (not update) == (want["a"] is a)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_mapping_inputs_compile_as_plain_dicts():
    from flax.core import FrozenDict

    chain = (CompiledTwoStates(),)
    x, z, a = kernel(n=3), jnp.zeros(2), jnp.ones(2)
    with evaluations() as seen:
        for _ in range(2):
            value, (st,) = _core.chain_forward(
                chain, FrozenDict(original=x), (FrozenDict(),), (FrozenDict(z=z, a=a),)
            )
    assert True not in seen  # compiled (traced at most once), never op by op
    assert _core._COMPILED[(chain, False)] is not None
    np.testing.assert_array_equal(value, 2.0 * x)
    assert type(st) is dict and st["z"] is z and st["a"] is a


class CompiledScale(px.Parametrization):
    compile_eagerly = True
    k: float = 1.0

    def forward(self, x):
        return x * self.k


def test_compiled_chains_are_bounded_and_evicted_chains_still_read(monkeypatch):
    monkeypatch.setattr(_core, "_COMPILED_MAX", 2)
    monkeypatch.setattr(_core, "_COMPILED", {})
    chains = [(CompiledScale(k),) for k in (2.0, 3.0, 4.0)]
    x = kernel(n=3)
    for chain in chains + chains[:1]:  # the first is evicted by the third, then read again
        value, _ = _core.chain_forward(chain, {"original": x}, [{}], [{}])
        np.testing.assert_array_equal(value, chain[0].k * x)
        assert len(_core._COMPILED) <= 2
    assert list(_core._COMPILED) == [(chains[2], False), (chains[0], False)]
    assert all(f is not None for f in _core._COMPILED.values())


# ------------------------------------------------------------------------------------------------
# (5) the NNX memo and cached() keep their meaning
# ------------------------------------------------------------------------------------------------
def test_nnx_cached_and_train_mode_counts_with_compiled_reads():
    layer = nnx_layer(CompiledCounter())
    count = layer.parametrizations.kernel[0].count
    first = layer.kernel
    assert first is layer.parametrizations.kernel.original[...]  # identity map: the very array
    for _ in range(2):
        _ = layer.kernel  # the read itself is under test
    assert int(count[...]) == 3  # every eager read in train mode advances the state
    with pnnx.cached():
        a, b = layer.kernel, layer.kernel
    assert a is b and int(count[...]) == 4
    layer.eval()
    _ = layer.kernel  # the read itself is under test
    assert int(count[...]) == 4


# ------------------------------------------------------------------------------------------------
# (2) errors: the same type and message as op by op
# ------------------------------------------------------------------------------------------------
def _message(fn):
    with pytest.raises(Exception) as info:
        fn()
    return type(info.value), str(info.value)


def test_errors_raised_inside_forward_are_unchanged():
    spec = {"w": px.SpectralNorm()}
    raw, state = px.tree.register(spec, {"w": kernel()}, key=jax.random.key(1))
    compiled = _message(lambda: px.tree.constrain(spec, raw, {}))  # state not passed back
    with _core._op_by_op():
        ops = _message(lambda: px.tree.constrain(spec, raw, {}))
    assert compiled == ops
    assert issubclass(compiled[0], px.ParametrizationError) and "`u`, `v`" in compiled[1]
    # the chain is still compiled once the state is passed
    with evaluations() as seen:
        px.tree.constrain(spec, raw, state)
    assert not any(seen)


class ReadsConcreteValues(px.Parametrization):
    """Opted in, but its forward reads a concrete value (a refusal on the value)."""

    compile_eagerly = True

    def forward(self, x):
        if float(jnp.max(jnp.abs(x))) > 100.0:
            raise px.ParametrizationError("the raw value exceeds 100")
        return 2.0 * x

    def right_inverse(self, value):
        return value / 2.0


def test_a_link_reading_concrete_values_falls_back_to_op_by_op():
    spec = {"w": ReadsConcreteValues()}
    raw, _ = px.tree.register(spec, {"w": kernel()})
    out = px.tree.constrain(spec, raw)["w"]  # compiling fails (a tracer has no float): op by op
    np.testing.assert_array_equal(out, 2.0 * raw["parametrizations"]["w"]["original"])
    assert ((ReadsConcreteValues(),), False) in _core._OPS_ONLY
    with evaluations() as seen:
        px.tree.constrain(spec, raw)
    assert seen == [True]  # not retried compiled on every read
    big = {"parametrizations": {"w": {"original": jnp.full((2, 2), 1e3)}}}
    with pytest.raises(px.ParametrizationError, match="the raw value exceeds 100"):
        px.tree.constrain(spec, big)


def test_value_refusals_of_right_inverses_still_raise_after_compiled_reads():
    layer = nnx_layer([px.Skew(), px.Cayley()])
    _ = layer.kernel  # compiled read
    with pytest.raises(px.RightInverseError, match="eigenvalue at"):
        layer.kernel = -jnp.eye(N)  # Cayley never reaches -1
    sn = nnx_layer(px.SpectralNorm())
    _ = sn.kernel  # the read itself is under test
    with pytest.raises(px.ParametrizationError, match="zero"):
        sn.kernel = jnp.zeros((N, N))


@dataclasses.dataclass(eq=True, frozen=False)
class Unhashable(px.Parametrization):
    compile_eagerly = True

    def forward(self, x):
        return x + 1.0


def test_unhashable_chain_is_evaluated_op_by_op():
    chain = (Unhashable(),)
    with pytest.raises(TypeError):
        hash(chain)
    with evaluations() as seen:
        out, _ = _core.chain_forward(chain, {"original": jnp.zeros(3)}, [{}], [{}])
    assert seen == [True]
    np.testing.assert_array_equal(out, jnp.ones(3))


# ------------------------------------------------------------------------------------------------
# (6) the compiled-call cache keeps no model alive
# ------------------------------------------------------------------------------------------------
def test_compiled_reads_keep_no_model_alive():
    layer = nnx_layer(px.SpectralNorm())
    _ = layer.kernel  # the read itself is under test
    with pnnx.cached():
        _ = layer.kernel  # the read itself is under test
    ref = weakref.ref(layer)
    model = peqx.Parametrized(
        eqx.nn.Linear(N, N, key=jax.random.key(0)), {"weight": px.WeightNorm()}
    )
    peqx.constrain(model)
    ref_eqx = weakref.ref(model.raw)
    del layer, model
    gc.collect()
    assert ref() is None and ref_eqx() is None


def test_explicitly_sharded_inputs_are_evaluated_op_by_op():
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((1,), ("x",), axis_types=(AxisType.Explicit,))
    chain = (CompiledTwoStates(),)
    x, z, a = kernel(n=4), jnp.zeros(2), jnp.ones(2)
    sx = jax.device_put(x, NamedSharding(mesh, P("x")))
    sa = jax.device_put(a, NamedSharding(mesh, P("x")))
    for originals, state in (
        ({"original": sx}, {"z": z, "a": a}),
        ({"original": x}, {"z": z, "a": sa}),
    ):
        with evaluations() as seen:
            value, (st,) = _core.chain_forward(chain, originals, [{}], [state])
        assert seen == [True]  # the op-by-op path, which gathers explicitly sharded arrays
        np.testing.assert_array_equal(value, 2.0 * x)
        assert st["z"] is z and st["a"] is state["a"]
