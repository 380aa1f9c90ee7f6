"""The eager read fast paths (issue 13, section 3) stay correct under mutation.

NNX attribute reads at top level skip the per-trace memo and read / write Variables through their
slot (``parametrax.nnx._compat.get_value`` / ``set_value``) when the value is a plain concrete
array without hooks. Every test mutates the model between reads (assignment, an optimizer-style
update of the raw value, a new or removed parametrization, a new shape or dtype, a hook) and
checks the read against a computation outside the code under test: WeightNorm's closed form in
NumPy, or the chain evaluated op by op (``_core._op_by_op``), a different code path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import parametrax as px
import parametrax.nnx as pnnx
from parametrax import _core
from parametrax.nnx import _compat

N = 6


def weight_norm_np(g, v):
    """WeightNorm's closed form (axis=-1 kept: the norm runs over the input axis)."""
    v = np.asarray(v, np.float64)
    return np.asarray(g, np.float64) * v / np.linalg.norm(v, axis=0, keepdims=True)


def wn_layer(seed=0):
    layer = nnx.Linear(N, N, rngs=nnx.Rngs(seed))
    pnnx.register_parametrization(layer, "kernel", px.WeightNorm(), rngs=nnx.Rngs(1))
    return layer


def test_fast_values_are_in_use_on_this_flax():
    # the tests below exercise the fast paths only if they are active
    assert _compat.FAST_VALUES
    assert _compat.current_trace() == _compat.TOP_LEVEL_TRACE


def test_reads_follow_raw_updates_assignment_and_dtype_changes():
    layer = wn_layer()
    plist = layer.parametrizations.kernel
    for step in range(3):  # an optimizer-style update of the raw values between reads
        g = jax.random.uniform(jax.random.key(step), (1, N), minval=0.5, maxval=2.0)
        v = jax.random.normal(jax.random.key(10 + step), (N, N))
        plist.original0.set_value(g)
        plist.original1.set_value(v)
        np.testing.assert_allclose(layer.kernel, weight_norm_np(g, v), rtol=1e-5, atol=1e-6)
    w = jax.random.normal(jax.random.key(3), (N, N))
    layer.kernel = w  # the right inverse: forward(right_inverse(W)) == W
    np.testing.assert_allclose(layer.kernel, w, rtol=1e-5, atol=1e-6)
    # a new shape and dtype of the raw values: recompiled, still the closed form
    g2 = jnp.full((1, N + 2), 2.0, jnp.bfloat16)
    v2 = jax.random.normal(jax.random.key(4), (N + 1, N + 2)).astype(jnp.bfloat16)
    plist.original0.set_value(g2)
    plist.original1.set_value(v2)
    out = layer.kernel
    assert out.shape == (N + 1, N + 2) and out.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(out, np.float64), weight_norm_np(g2, v2), rtol=2e-2, atol=2e-2
    )


def test_reads_follow_appended_and_removed_parametrizations():
    layer = wn_layer()
    g = np.asarray(layer.parametrizations.kernel.original0.get_value())
    v = np.asarray(layer.parametrizations.kernel.original1.get_value())
    before = np.asarray(layer.kernel)
    np.testing.assert_allclose(before, weight_norm_np(g, v), rtol=1e-5, atol=1e-6)
    pnnx.register_parametrization(layer, "kernel", px.Skew())  # appended: skew(W)
    expected = np.triu(before, 1) - np.triu(before, 1).T  # Skew keeps the upper triangle
    np.testing.assert_allclose(layer.kernel, expected, rtol=1e-5, atol=1e-6)
    pnnx.remove_parametrizations(layer, "kernel", leave_parametrized=True)
    np.testing.assert_allclose(layer.kernel[...], expected, rtol=1e-5, atol=1e-6)


def test_hooks_on_the_raw_variable_are_not_bypassed():
    layer = wn_layer()
    plist = layer.parametrizations.kernel
    g = np.asarray(plist.original0.get_value())
    v = np.asarray(plist.original1.get_value())
    plist.original0.set_metadata(on_get_value=lambda var, x: 2.0 * x)
    assert "on_get_value" in plist.original0.get_metadata()
    np.testing.assert_allclose(layer.kernel, weight_norm_np(2.0 * g, v), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_spectral_norm_state_writes_equal_op_by_op_and_set_hooks_run(mode):
    def make():
        layer = nnx.Linear(N, N, rngs=nnx.Rngs(0))
        pnnx.register_parametrization(layer, "kernel", px.SpectralNorm(), rngs=nnx.Rngs(1))
        if mode == "eval":
            layer.eval()
        return layer

    fast, slow = make(), make()
    link_f, link_s = fast.parametrizations.kernel[0], slow.parametrizations.kernel[0]
    u0 = link_f.u.get_value()
    for step in range(3):
        w = jax.random.normal(jax.random.key(step), (N, N))
        fast.parametrizations.kernel.original.set_value(w)
        slow.parametrizations.kernel.original.set_value(w)
        a = fast.kernel
        with _core._op_by_op():
            b = slow.kernel
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(link_f.u.get_value(), link_s.u.get_value(), rtol=1e-5)
        np.testing.assert_allclose(link_f.v.get_value(), link_s.v.get_value(), rtol=1e-5)
    moved = not np.allclose(link_f.u.get_value(), u0)
    assert moved == (mode == "train")
    # a set hook on the state runs for the writes of a train-mode read
    seen = []
    link_f.u.set_metadata(on_set_value=lambda var, x: seen.append(x.shape) or x)
    fast.kernel  # noqa: B018
    assert seen == ([(N,)] if mode == "train" else [])


def test_a_read_after_a_traced_read_is_concrete_and_current():
    layer = wn_layer()

    @nnx.jit
    def traced(m):
        return m.kernel

    t = traced(layer)
    e = layer.kernel
    assert not isinstance(e, jax.core.Tracer)
    np.testing.assert_allclose(e, t, rtol=1e-6, atol=1e-6)
    v = jax.random.normal(jax.random.key(5), (N, N))
    layer.parametrizations.kernel.original1.set_value(v)
    g = layer.parametrizations.kernel.original0.get_value()
    np.testing.assert_allclose(layer.kernel, weight_norm_np(g, v), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(traced(layer), weight_norm_np(g, v), rtol=1e-5, atol=1e-6)


def test_cached_reads_still_reuse_and_recompute_on_mutation():
    layer = nnx.Linear(N, N, rngs=nnx.Rngs(0))
    pnnx.register_parametrization(layer, "kernel", px.SpectralNorm(), rngs=nnx.Rngs(1))
    link = layer.parametrizations.kernel[0]
    with pnnx.cached():
        a = layer.kernel
        u1 = link.u.get_value()
        assert layer.kernel is a  # reused: the state advanced once
        assert link.u.get_value() is u1
        raw = layer.parametrizations.kernel.original
        raw.set_value(2.0 * raw.get_value())
        b = layer.kernel  # a new raw value: recomputed
        assert b is not a
        assert link.u.get_value() is not u1


def test_a_state_of_the_wrong_shape_is_still_refused():
    class Grow(px.Parametrization):
        def init_variables(self, key, x):
            return {"params": {}, "state": {"c": jnp.zeros(2)}}

        def apply(self, variables, x, *, update_state=False):
            c = variables["state"]["c"]
            return x, {"c": jnp.zeros(c.shape[0] + 1) if update_state else c}

    layer = nnx.Linear(N, N, rngs=nnx.Rngs(0))
    pnnx.register_parametrization(layer, "kernel", Grow(), rngs=nnx.Rngs(1))
    with pytest.raises(px.ParametrizationError, match=r"returned state `c` of shape \(3,\)"):
        layer.kernel  # noqa: B018


def test_parametrization_dict_lookup_names_only_parametrized_variables():
    layer = wn_layer()
    d = layer.parametrizations
    assert "kernel" in d and d["kernel"] is vars(d)["kernel"]
    for absent in ("bias", "_pytree__state", 0, ("kernel",), ["kernel"]):
        assert absent not in d
        with pytest.raises(KeyError):
            d[absent]
    assert list(d) == ["kernel"] and len(d) == 1
