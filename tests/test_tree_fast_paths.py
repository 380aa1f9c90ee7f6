"""Repeat eager reads of the tree API (issue 13, section 3) stay correct under mutation.

A concrete ``forward`` / ``constrain`` records its structure's resolution in a plan
(``parametrax.tree._ops._Plan``, cached on the spec, the treedefs and the flags) and a repeat read
of that structure runs the plan. Every test changes something between reads (the raw values, the
spec object or its contents, the raw tree's structure, shapes and dtypes, the state) and checks
the read against a computation outside the tree code: WeightNorm's closed form ``g * v / ||v||``
in NumPy, ``skew``'s in NumPy, or the chain's own ``apply`` / ``__call__`` on the raw arrays.
Errors after a cached read are compared with those of a cold read (plans cleared).
"""

from __future__ import annotations

import gc
import types
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import parametrax as px
from parametrax.tree import _ops

from _helpers import Layer, Pair

N = 5


def weight_norm_np(g, v):
    v = np.asarray(v, np.float64)
    return np.asarray(g, np.float64) * v / np.linalg.norm(v, axis=0, keepdims=True)


def skew_np(x):
    x = np.asarray(x, np.float64)
    return np.triu(x, 1) - np.triu(x, 1).T


def rnd(seed, shape=(N, N), dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape).astype(dtype)


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), tol, tol)


@pytest.fixture(autouse=True)
def _fresh_plans():
    _ops._PLANS.clear()
    yield
    _ops._PLANS.clear()


def planned(monkeypatch):
    """From now on a read that is not run by a plan fails the test."""

    def general(*a, **k):
        raise AssertionError("read by the general path, expected a plan")

    monkeypatch.setattr(_ops, "_forward_resolved", general)


def n_plans():
    return sum(isinstance(p, _ops._Plan) for p in _ops._PLANS.values())


def error_of(fn, *args, **kwargs):
    with pytest.raises(Exception) as info:
        fn(*args, **kwargs)
    e = info.value
    return type(e), str(e), getattr(e, "__notes__", None)


def test_plans_are_made_and_used_for_dicts_and_spec_objects(monkeypatch):
    spec = {"w": px.WeightNorm()}
    raw, state = px.tree.register(spec, {"w": rnd(0), "b": jnp.zeros(N)})
    first = px.tree.constrain(spec, raw, state)
    assert any(isinstance(p, _ops._Plan) for p in _ops._PLANS.values())
    spec_obj = px.tree.Spec.of(spec)
    px.tree.constrain(spec_obj, raw, state)
    planned(monkeypatch)
    for s in (spec, spec_obj, {"w": px.WeightNorm()}):  # an equal dict made anew is found too
        out = px.tree.constrain(s, raw, state)
        assert list(out) == list(first) and out["b"] is raw["b"]
        close(out["w"], first["w"], 0)


def test_reads_follow_raw_updates_and_equal_the_closed_form(monkeypatch):
    spec = {"layer/w": px.WeightNorm()}
    raw, state = px.tree.register(spec, {"layer": {"w": rnd(0), "b": jnp.zeros(N)}})
    px.tree.constrain(spec, raw, state)
    planned(monkeypatch)
    for step in range(3):  # an optimizer-style update: new arrays, same structure
        g = jax.random.uniform(jax.random.key(step), (1, N), minval=0.5, maxval=2.0)
        v = rnd(10 + step)
        raw["parametrizations"]["layer"]["w"] = {"original0": g, "original1": v}
        out, new_state = px.tree.forward(spec, raw, state)
        close(out["layer"]["w"], weight_norm_np(g, v))
        assert list(out["layer"]) == ["b", "w"] and new_state == {}


def test_new_shapes_and_dtypes_are_read_right():
    spec = {"w": px.WeightNorm()}
    raw, state = px.tree.register(spec, {"w": rnd(0)})
    px.tree.constrain(spec, raw, state)
    for shape, dtype, tol in [((N + 2, N - 1), jnp.float32, 1e-5), ((3, 7), jnp.bfloat16, 3e-2)]:
        g = jnp.full((1, shape[1]), 1.5, dtype)
        v = rnd(1, shape, dtype)
        raw = {"parametrizations": {"w": {"original0": g, "original1": v}}}
        for _ in range(2):
            out = px.tree.constrain(spec, raw, state)["w"]
            assert out.shape == shape and out.dtype == dtype
            close(out, weight_norm_np(g, v), tol)


def test_a_new_spec_object_or_a_mutated_spec_is_honoured():
    x = rnd(2)
    spec = {"w": px.skew}
    raw, state = px.tree.register(spec, {"w": x})
    original = raw["parametrizations"]["w"]["original"]
    close(px.tree.constrain(spec, raw, state)["w"], skew_np(original))
    # the same dict, its chain replaced in place
    spec["w"] = px.Symmetric()
    out = px.tree.constrain(spec, raw, state)["w"]
    close(out, px.Symmetric()(original))
    assert np.allclose(out, out.T)
    # a chain written as a list, then grown in place
    spec["w"] = [px.skew]
    close(px.tree.constrain(spec, raw, state)["w"], skew_np(original))
    spec["w"].append(px.cayley)
    q = px.tree.constrain(spec, raw, state)["w"]
    close(q, px.cayley(px.skew(original)))
    close(q.T @ q, np.eye(N))
    # a new spec object
    close(px.tree.constrain({"w": px.skew}, raw, state)["w"], skew_np(original))


def test_a_mutated_glob_gives_the_cold_error():
    tree = {"a": {"w": rnd(0)}, "b": {"w": rnd(1)}}
    spec = {"*/w": px.skew}
    raw, state = px.tree.register(spec, tree)
    out = px.tree.constrain(spec, raw, state)
    px.tree.constrain(spec, raw, state)
    for k in "ab":
        close(out[k]["w"], skew_np(raw["parametrizations"][k]["w"]["original"]))
    del spec["*/w"]
    spec["a/*"] = px.skew  # now `b/w` is claimed by no key
    warm = error_of(px.tree.constrain, spec, raw, state)
    _ops._PLANS.clear()
    cold = error_of(px.tree.constrain, dict(spec), raw, state)
    assert warm == cold and "b/w" in warm[1]
    spec["[ab]/w"] = spec.pop("a/*")  # a character class claiming both again
    out = px.tree.constrain(spec, raw, state)
    close(out["b"]["w"], skew_np(raw["parametrizations"]["b"]["w"]["original"]))


def test_structure_changes_of_the_raw_tree():
    spec = {"w": px.skew}
    raw, state = px.tree.register(spec, {"w": rnd(0), "b": jnp.ones(N)})
    orig = raw["parametrizations"]["w"]["original"]
    px.tree.constrain(spec, raw, state)
    px.tree.constrain(spec, raw, state)
    extra = dict(raw, c=jnp.zeros(2), d={"e": jnp.ones(1), "empty": {}})  # keys added
    out = px.tree.constrain(spec, extra, state)
    assert list(out) == ["b", "c", "d", "w"] and list(out["d"]) == ["e"]  # empty dicts pruned
    assert out["c"] is extra["c"] and out["d"] is not extra["d"]  # fresh dicts, as to_dict
    close(out["w"], skew_np(orig))
    fewer = {"parametrizations": raw["parametrizations"]}  # a key removed
    for _ in range(2):
        assert list(px.tree.constrain(spec, fewer, state)) == ["w"]
    assert n_plans() == 3  # each structure read by its own plan
    # a list layout growing
    spec_l = {"0": px.skew}
    raw_l, st = px.tree.register(spec_l, [rnd(3), jnp.ones(2)])
    for _ in range(2):
        assert len(px.tree.constrain(spec_l, raw_l, st)) == 2
    longer = [*raw_l, jnp.zeros(3)]
    for _ in range(2):
        out = px.tree.constrain(spec_l, longer, st)
        assert type(out) is list and len(out) == 3 and out[2] is longer[2]
        close(out[0], skew_np(raw_l[0].entries["original"]))
    assert n_plans() == 5


@pytest.mark.parametrize("update", [False, True])
def test_state_is_read_and_advanced_like_the_link_itself(update):
    spec = {"w": px.SpectralNorm()}
    raw, state = px.tree.register(spec, {"w": rnd(0, (N, N + 1))}, key=jax.random.key(1))
    w = raw["parametrizations"]["w"]["original"]
    link = px.SpectralNorm()
    s = state
    for _ in range(4):
        out, new = px.tree.forward(spec, raw, s, update_state=update)
        ls = s["parametrizations"]["w"]["0"]
        want, want_state = link.apply({"params": {}, "state": dict(ls)}, w, update_state=update)
        close(out["w"], want)
        got = new["parametrizations"]["w"]["0"]
        assert list(got) == list(want_state)
        for k in want_state:
            close(got[k], want_state[k])
            assert (got[k] is ls[k]) == (not update)  # unchanged state: the very input array
        assert new is not s and new["parametrizations"] is not s["parametrizations"]
        s = new
    assert n_plans() == 1
    # new state values of the same structure are read, not the cached ones
    u = jnp.ones_like(s["parametrizations"]["w"]["0"]["u"])
    s2 = {"parametrizations": {"w": {"0": {**s["parametrizations"]["w"]["0"], "u": u}}}}
    want, _ = link.apply({"params": {}, "state": dict(s2["parametrizations"]["w"]["0"])}, w)
    close(px.tree.constrain(spec, raw, s2)["w"], want)


def test_state_structure_changes_give_the_cold_error():
    spec = {"w": px.SpectralNorm()}
    raw, state = px.tree.register(spec, {"w": rnd(0)}, key=jax.random.key(1))
    px.tree.constrain(spec, raw, state)
    px.tree.constrain(spec, raw, state)
    u_only = {"parametrizations": {"w": {"0": {"u": state["parametrizations"]["w"]["0"]["u"]}}}}
    for bad in ({}, None, u_only):
        warm = error_of(px.tree.constrain, spec, raw, bad)
        _ops._PLANS.clear()
        cold = error_of(px.tree.constrain, {"w": px.SpectralNorm()}, raw, bad)
        assert warm == cold
        px.tree.constrain(spec, raw, state)


def test_errors_from_the_chain_after_a_cached_read_are_the_cold_ones():
    spec = {"w": px.skew}
    raw, state = px.tree.register(spec, {"w": rnd(0)})
    px.tree.constrain(spec, raw, state)
    px.tree.constrain(spec, raw, state)
    assert any(isinstance(p, _ops._Plan) for p in _ops._PLANS.values())
    for bad in (jnp.ones((3, 4)), jnp.ones(3), "not an array"):
        bad_raw = {"parametrizations": {"w": {"original": bad}}}
        warm = error_of(px.tree.constrain, spec, bad_raw, state)
        _ops._PLANS.clear()
        cold = error_of(px.tree.constrain, {"w": px.skew}, bad_raw, state)
        assert warm == cold
    for bad_group in (1, None):
        err = error_of(px.tree.forward, spec, raw, state, group=bad_group)
        assert err[0] is px.ParametrizationTypeError


def test_jit_and_grad_trace_through_the_general_path(monkeypatch):
    spec = {"w": px.WeightNorm()}
    raw, state = px.tree.register(spec, {"w": rnd(0)})
    before = str(jax.make_jaxpr(lambda r: px.tree.constrain(spec, r, state))(raw))
    px.tree.constrain(spec, raw, state)
    px.tree.constrain(spec, raw, state)
    calls = []
    general = _ops._forward_resolved
    monkeypatch.setattr(
        _ops, "_forward_resolved", lambda *a, **k: calls.append(1) or general(*a, **k)
    )
    after = str(jax.make_jaxpr(lambda r: px.tree.constrain(spec, r, state))(raw))
    assert after == before and calls
    g = jax.grad(lambda r: px.tree.constrain(spec, r, state)["w"].sum())(raw)
    assert set(g) == {"parametrizations"}
    jitted = jax.jit(lambda r: px.tree.constrain(spec, r, state)["w"])
    close(jitted(raw), px.tree.constrain(spec, raw, state)["w"])


def test_dataclass_and_namedtuple_trees(monkeypatch):
    tree = Pair(Layer(rnd(0), jnp.zeros(N)), None)
    spec = {"first/w": px.WeightNorm()}
    raw, state = px.tree.register(spec, tree)
    px.tree.constrain(spec, raw, state)
    planned(monkeypatch)
    for step in range(2):
        g, v = jnp.full((1, N), 2.0 + step), rnd(5 + step)
        raw = Pair(Layer(_ops.RawLeaf({"original0": g, "original1": v}), raw.first.b), None)
        out = px.tree.constrain(spec, raw, state)
        assert type(out) is Pair and type(out.first) is Layer and out.second is None
        assert out.first.b is raw.first.b
        close(out.first.w, weight_norm_np(g, v))


def test_equinox_modules():
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.MLP(3, 2, 4, 1, key=jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_array)
    spec = {"layers/*/weight": px.WeightNorm()}
    raw, state = px.tree.register(spec, params)
    for _ in range(3):
        out = px.tree.constrain(spec, raw, state)
        assert type(out) is type(model)
        for layer, raw_layer in zip(out.layers, raw.layers):
            e = raw_layer.weight.entries
            close(layer.weight, weight_norm_np(e["original0"], e["original1"]))
            assert layer.bias is raw_layer.bias
        y = eqx.combine(out, static)(jnp.ones(3))
        assert y.shape == (2,)
        raw = jax.tree.map(lambda a: a * 1.1, raw)  # an optimizer-style step


def test_grouped_chains_still_group_and_equal_each_alone():
    spec = {"*/w": px.Orthogonal(map="matrix_exp")}
    tree = {f"l{i}": {"w": rnd(i)} for i in range(3)}
    raw, state = px.tree.register(spec, tree, key=jax.random.key(3))
    alone = px.tree.constrain(spec, raw, state, group=False)
    for i in range(3):
        if i:
            assert any(getattr(p, "groupable", False) for p in _ops._PLANS.values())
        out = px.tree.constrain(spec, raw, state)
        for k in tree:
            close(out[k]["w"], alone[k]["w"], 1e-5)
            close(out[k]["w"].T @ out[k]["w"], np.eye(N), 1e-5)


def test_mappings_other_than_dicts_take_the_general_path():
    spec = {"w": px.SpectralNorm()}
    raw, state = px.tree.register(spec, {"w": rnd(0)}, key=jax.random.key(1))
    proxy = types.MappingProxyType(state)  # not a pytree node: a leaf that is a mapping
    a = px.tree.constrain(spec, raw, state)["w"]
    for _ in range(2):
        close(px.tree.constrain(spec, raw, proxy)["w"], a, 0)


def test_the_cache_is_bounded_and_holds_no_arrays(monkeypatch):
    monkeypatch.setattr(_ops, "_PLANS_MAX", 3)
    spec = {"w": px.skew}
    for n in range(2, 8):
        raw, state = px.tree.register(spec, {"w": rnd(n, (n, n))})
        px.tree.constrain(spec, raw, state)
        px.tree.constrain(spec, raw, state)
        raw = dict(raw, **{f"extra{i}": jnp.zeros(1) for i in range(n)})  # a new structure
        px.tree.constrain(spec, raw, state)
    assert len(_ops._PLANS) <= 3
    x = raw["parametrizations"]["w"]["original"]
    ref = weakref.ref(x)
    del raw, x
    gc.collect()
    assert ref() is None
