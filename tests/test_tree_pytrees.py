"""The tree API on any pytree (issue 13): dataclasses, NamedTuples, lists, equinox Modules.

Oracles: the constrained values are checked against closed forms / invariants computed with
numpy; the structure and type of every returned tree against the input's.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import parametrax as px
from parametrax import tree as ptree

from _helpers import Layer, Pair, orthogonality_error, rand, skew_error, standard_promotion


def model():
    return Pair(
        Layer(jnp.asarray(rand(0, (4, 4))), jnp.zeros(4)),
        Layer(jnp.asarray(rand(1, (4, 4))), jnp.ones(4)),
    )


def test_paths_are_key_paths_joined_by_slash():
    raw, _ = ptree.register({"*/w": px.skew}, model())
    assert ptree.parametrized_paths({"*/w": px.skew}, raw) == ["first/w", "second/w"]
    raw, _ = ptree.register({"1": px.skew}, [jnp.ones(3), jnp.eye(3)])
    assert ptree.parametrized_paths({"1": px.skew}, raw) == ["1"]


def test_raw_and_constrained_keep_structure_and_type():
    m = model()
    raw, state = ptree.register({"*/w": px.skew}, m)
    assert type(raw) is Pair and type(raw.first) is Layer
    assert isinstance(raw.first.w, ptree.RawLeaf)
    np.testing.assert_array_equal(raw.first.b, m.first.b)  # untouched leaves stay
    out = ptree.constrain({"*/w": px.skew}, raw, state)
    assert jax.tree.structure(out) == jax.tree.structure(m)
    k = np.asarray(m.second.w)
    np.testing.assert_allclose(out.second.w, np.triu(k, 1) - np.triu(k, 1).T)


def test_raw_leaf_arrays_have_key_paths_and_train_with_optax():
    spec = {"*/w": [px.skew, px.cayley]}
    raw, state = ptree.register(spec, model())
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(raw)[0]]
    assert ".first.w['original']" in paths
    target = jnp.asarray(rand(5, (4, 4)))
    opt = standard_promotion(optax.adam(0.05))
    opt_state = opt.init(raw)

    @jax.jit
    def step(raw, opt_state):
        def loss(r):
            out = ptree.constrain(spec, r, state)
            return jnp.sum((out.first.w - target) ** 2) + jnp.sum((out.second.w - target) ** 2)

        value, grads = jax.value_and_grad(loss)(raw)
        updates, opt_state = opt.update(grads, opt_state, raw)
        return optax.apply_updates(raw, updates), opt_state, value

    losses = []
    for _ in range(20):
        raw, opt_state, value = step(raw, opt_state)
        losses.append(float(value))
        out = ptree.constrain(spec, raw, state)
        assert orthogonality_error(out.first.w) < 1e-5 and orthogonality_error(out.second.w) < 1e-5
    assert losses[-1] < losses[0]


def test_assign_bake_and_update_base_return_the_same_type():
    spec = {"first/w": px.SO(), "second/w": px.skew}
    raw, state = ptree.register(spec, model(), key=jax.random.key(0))
    q = np.linalg.qr(rand(3, (4, 4)))[0]
    q = q @ np.diag([np.sign(np.linalg.det(q)), 1, 1, 1])
    raw2, state2 = ptree.assign(spec, raw, state, {"first/w": jnp.asarray(q, jnp.float32)})
    assert type(raw2) is Pair and isinstance(raw2.first.w, ptree.RawLeaf)
    np.testing.assert_allclose(ptree.constrain(spec, raw2, state2).first.w, q, atol=1e-5)
    raw3, state3 = ptree.update_base(spec, raw2, state2)
    assert type(raw3) is Pair
    np.testing.assert_allclose(ptree.constrain(spec, raw3, state3).first.w, q, atol=1e-5)
    some, _ = ptree.remove_parametrizations(spec, raw3, state3, names="second/w")
    assert isinstance(some.first.w, ptree.RawLeaf) and not isinstance(some.second.w, ptree.RawLeaf)
    plain, st = ptree.remove_parametrizations(spec, raw3, state3)
    assert type(plain) is Pair and jax.tree.structure(plain) == jax.tree.structure(model())
    assert skew_error(plain.second.w) == 0 and st == {}


def test_a_dict_holding_lists_uses_the_in_place_layout():
    tree = {"layers": [{"w": jnp.eye(3)}, {"w": 2 * jnp.eye(3)}], "scale": jnp.ones(())}
    raw, _ = ptree.register({"layers/*/w": px.symmetric}, tree)
    assert "parametrizations" not in raw and isinstance(raw["layers"][1]["w"], ptree.RawLeaf)
    out = ptree.constrain({"layers/*/w": px.symmetric}, raw)
    np.testing.assert_array_equal(out["layers"][1]["w"], 2 * np.eye(3))
    assert type(out["layers"]) is list


def test_nested_dicts_keep_the_state_dict_layout():
    raw, _ = ptree.register({"a/w": px.skew}, {"a": {"w": jnp.eye(2)}})
    assert set(raw) == {"parametrizations"}


def test_errors_on_pytrees():
    raw, _ = ptree.register({"first/w": px.skew}, model())
    with pytest.raises(px.SpecError, match="already holds `RawLeaf` nodes"):
        ptree.register({"first/w": px.skew}, raw)
    with pytest.raises(px.NotParametrizedError, match="not a raw tree made by `register`"):
        ptree.constrain({"first/w": px.skew}, model())
    with pytest.raises(
        px.SpecError,
        match=r"names a subtree, not a variable; name a leaf such as `first/b`, `first/w`",
    ):
        ptree.register({"first": px.skew}, model())
    with pytest.raises(px.SpecError, match="have the same path `0/a/b`"):
        ptree.register({"**": px.skew}, [{"a/b": jnp.eye(2), "a": {"b": jnp.eye(2)}}])
