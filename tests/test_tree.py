"""The pure pytree API: spec matching, register / forward / assign / bake, and its errors."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import parametrax as px
from parametrax import tree as ptree

from _helpers import Double, RankOne, key_normal, orthogonality_error, standard_promotion

KEY = jax.random.key(0)


def mlp_params():
    return {
        "Dense_0": {"kernel": key_normal(0, (3, 3)), "bias": jnp.zeros(3)},
        "Dense_1": {"kernel": key_normal(1, (3, 3)), "bias": jnp.ones(3)},
        "scale": jnp.float32(2.0),
    }


@dataclasses.dataclass(frozen=True)
class Learnable(px.Parametrization):
    """X -> s * X with a learnable scalar s (initialised to 1): a link with its own params."""

    def init_variables(self, key, value):
        return {"params": {"s": jnp.ones((), value.dtype)}, "state": {}}

    def apply(self, variables, x, *, update_state=False):
        return variables["params"]["s"] * x, variables["state"]

    def apply_inverse(self, variables, value, *, key=None):
        return value / variables["params"]["s"], variables["state"]


def test_layout_is_torch_state_dict_like():
    raw, state = ptree.register({"Dense_0/kernel": px.skew}, mlp_params())
    assert jax.tree.map(jnp.shape, raw) == {
        "Dense_0": {"bias": (3,)},
        "Dense_1": {"kernel": (3, 3), "bias": (3,)},
        "scale": (),
        "parametrizations": {"Dense_0": {"kernel": {"original": (3, 3)}}},
    }
    assert state == {}


def test_constrain_restores_layout_and_values():
    params = mlp_params()
    raw, state = ptree.register({"*/kernel": px.skew}, params)
    out = ptree.constrain({"*/kernel": px.skew}, raw, state)
    assert jax.tree.structure(out) == jax.tree.structure(params)
    for name in ("Dense_0", "Dense_1"):
        k = params[name]["kernel"]
        np.testing.assert_allclose(out[name]["kernel"], jnp.triu(k, 1) - jnp.triu(k, 1).T)
        np.testing.assert_array_equal(out[name]["bias"], params[name]["bias"])


def test_glob_double_star_and_question_mark():
    params = {"a": {"b": {"kernel": jnp.eye(2)}}, "kernel": jnp.eye(2)}
    assert ptree.parametrized_paths(
        {"**/kernel": px.skew}, ptree.register({"**/kernel": px.skew}, params)[0]
    ) == ["a/b/kernel", "kernel"]
    raw, _ = ptree.register({"Dense_?/kernel": px.skew}, mlp_params())
    assert ptree.parametrized_paths({"Dense_?/kernel": px.skew}, raw) == [
        "Dense_0/kernel",
        "Dense_1/kernel",
    ]


def test_chain_order_forward_in_list_order_inverse_in_reverse():
    @dataclasses.dataclass(frozen=True)
    class AddOne(px.Parametrization):
        def forward(self, x):
            return x + 1

        def right_inverse(self, y):
            return y - 1

    x = jnp.full((2, 2), 3.0)
    spec = {"w": [AddOne(), Double()]}  # forward: 2 * (x + 1)
    raw, st = ptree.register(spec, {"w": x})
    np.testing.assert_allclose(raw["parametrizations"]["w"]["original"], x / 2 - 1)
    np.testing.assert_allclose(
        ptree.constrain(spec, {"parametrizations": {"w": {"original": x}}})["w"], 8.0
    )


def test_multi_array_originals():
    z = jnp.outer(jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, -1.0]))
    raw, state = ptree.register({"w": RankOne()}, {"w": z})
    slot = raw["parametrizations"]["w"]
    assert sorted(slot) == ["original0", "original1"]
    np.testing.assert_allclose(ptree.constrain({"w": RankOne()}, raw, state)["w"], z, atol=1e-5)
    # Appending a link does not re-initialise the originals: forward becomes Double(RankOne(...)).
    out = ptree.constrain({"w": [RankOne(), Double()]}, raw, state)["w"]
    np.testing.assert_allclose(out, 2 * z, atol=1e-5)
    # Gradients reach both originals.
    g = jax.grad(lambda r: jnp.sum(ptree.constrain({"w": RankOne()}, r)["w"] ** 2))(raw)
    assert float(jnp.abs(g["parametrizations"]["w"]["original0"]).sum()) > 0
    assert float(jnp.abs(g["parametrizations"]["w"]["original1"]).sum()) > 0


def test_learnable_link_params_live_beside_original_and_train():
    spec = {"w": [px.skew, Learnable()]}
    raw, state = ptree.register(spec, {"w": px.skew(key_normal(0, (3, 3)))}, key=KEY)
    assert jax.tree.map(jnp.shape, raw["parametrizations"]["w"]) == {
        "original": (3, 3),
        "1": {"s": ()},
    }
    target = 3.0 * px.skew(key_normal(0, (3, 3)))
    loss = lambda r: jnp.sum((ptree.constrain(spec, r, state)["w"] - target) ** 2)
    opt = standard_promotion(optax.adam(0.05))
    opt_state = opt.init(raw)

    @jax.jit
    def step(r, o):
        g = jax.grad(loss)(r)
        u, o = opt.update(g, o)
        return optax.apply_updates(r, u), o

    for _ in range(100):
        raw, opt_state = step(raw, opt_state)
    assert float(raw["parametrizations"]["w"]["1"]["s"]) != 1.0
    assert float(loss(raw)) < 1e-2


def test_assign_and_bake():
    spec = {"w": [px.skew, px.cayley]}
    raw, state = ptree.register(spec, {"w": jnp.eye(3), "b": jnp.ones(2)})
    q = px.cayley(px.skew(key_normal(3, (3, 3))))
    raw2, state2 = ptree.assign(spec, raw, state, {"w": q})
    np.testing.assert_allclose(ptree.constrain(spec, raw2, state2)["w"], q, atol=1e-5)
    baked, st = ptree.remove_parametrizations(spec, raw2, state2)
    assert sorted(baked) == ["b", "w"] and st == {}
    np.testing.assert_allclose(baked["w"], q, atol=1e-5)
    raw_left, _ = ptree.remove_parametrizations(spec, raw2, state2, leave_parametrized=False)
    np.testing.assert_allclose(raw_left["w"], raw2["parametrizations"]["w"]["original"])


def test_bake_some_keeps_others():
    spec = {"*/kernel": px.skew}
    raw, state = ptree.register(spec, mlp_params())
    tree, _ = ptree.remove_parametrizations(spec, raw, state, names=["Dense_0/kernel"])
    assert "kernel" in tree["Dense_0"]
    assert ptree.parametrized_paths(spec, tree) == ["Dense_1/kernel"]


def test_optax_training_keeps_constraint_every_step():
    spec = {"w": [px.skew, px.cayley]}
    raw, state = ptree.register(spec, {"w": jnp.eye(4)})
    target = key_normal(9, (4, 4))
    opt = standard_promotion(optax.adam(0.1))
    o = opt.init(raw)

    @jax.jit
    def step(r, o):
        loss, g = jax.value_and_grad(
            lambda r: jnp.sum((ptree.constrain(spec, r, state)["w"] - target) ** 2)
        )(r)
        u, o = opt.update(g, o)
        return optax.apply_updates(r, u), o, loss

    losses = []
    for _ in range(30):
        raw, o, loss = step(raw, o)
        losses.append(float(loss))
        assert orthogonality_error(ptree.constrain(spec, raw, state)["w"]) < 1e-5
    assert losses[-1] < losses[0]


# --- errors (each pinned) ----------------------------------------------------------------------
def test_error_key_matches_nothing_lists_paths():
    with pytest.raises(
        px.SpecError,
        match=r"spec key `Dense_9/kernel` matches no variable .*`Dense_0/bias`, `Dense_0/kernel`",
    ):
        ptree.register({"Dense_9/kernel": px.skew}, mlp_params())


def test_error_glob_matches_nothing():
    with pytest.raises(px.SpecError, match=r"spec key `\*/weight` matches no variable"):
        ptree.register({"*/weight": px.skew}, mlp_params())


def test_error_key_names_subtree():
    with pytest.raises(
        px.SpecError,
        match=r"spec key `Dense_0` names a subtree, not a variable; name a leaf such as `Dense_0/bias`",
    ):
        ptree.register({"Dense_0": px.skew}, mlp_params())


def test_error_two_keys_claim_same_leaf():
    with pytest.raises(
        px.SpecError,
        match=r"spec keys `Dense_0/kernel` and `\*/kernel` both claim the variable `Dense_0/kernel`",
    ):
        ptree.register({"Dense_0/kernel": px.skew, "*/kernel": px.symmetric}, mlp_params())


def test_error_non_array_leaf():
    with pytest.raises(
        px.ParametrizationTypeError,
        match=r"parametrizing `w` with \[Skew\]: expected an array at `w`, got str",
    ):
        ptree.register({"w": px.skew}, {"w": "hello"})


def test_error_non_callable_in_spec():
    with pytest.raises(
        px.ParametrizationTypeError,
        match=r"spec key `w`: expected a Parametrization or a callable, got int 3",
    ):
        ptree.register({"w": 3}, {"w": jnp.eye(2)})


def test_error_class_instead_of_instance():
    with pytest.raises(px.ParametrizationTypeError, match=r"write `Skew\(\)` instead of `Skew`"):
        ptree.register({"w": px.Skew}, {"w": jnp.eye(2)})


def test_error_unhashable_config():
    @dataclasses.dataclass(frozen=True)
    class WithList(px.Parametrization):
        values: list

        def forward(self, x):
            return x

    with pytest.raises(
        px.ParametrizationTypeError, match=r"`WithList` is not hashable .*frozen dataclasses"
    ):
        ptree.register({"w": WithList([1, 2])}, {"w": jnp.eye(2)})


def test_error_empty_chain_and_empty_spec():
    with pytest.raises(px.ParametrizationError, match="a chain needs one or more parametrizations"):
        ptree.register({"w": []}, {"w": jnp.eye(2)})
    with pytest.raises(px.SpecError, match="the spec is empty"):
        ptree.register({}, {"w": jnp.eye(2)})


def test_error_shape_changing_forward_without_unsafe():
    flatten = lambda x: x.reshape(-1)
    with pytest.raises(
        px.ShapeError,
        match=r"parametrizing `w` with \[test_error_shape_changing_forward_without_unsafe.<locals>.<lambda>\]: registering a parametrization may not change the shape or dtype .* shape \(2, 2\) and dtype float32, the parametrized value has shape \(4,\)",
    ):
        ptree.register({"w": flatten}, {"w": jnp.eye(2)})
    raw, _ = ptree.register({"w": flatten}, {"w": jnp.eye(2)}, unsafe=True)
    assert ptree.constrain({"w": flatten}, raw)["w"].shape == (4,)


def test_error_dtype_changing_forward_without_unsafe():
    to16 = lambda x: x.astype(jnp.bfloat16)
    with pytest.raises(
        px.ShapeError,
        match=r"dtype float32, the parametrized value has shape \(2, 2\) and dtype bfloat16",
    ):
        ptree.register({"w": to16}, {"w": jnp.eye(2)})


def test_error_right_inverse_changes_dtype():
    @dataclasses.dataclass(frozen=True)
    class BadInv(px.Parametrization):
        def forward(self, x):
            return x.astype(jnp.float32)

        def right_inverse(self, y):
            return y.astype(jnp.float16)

    with pytest.raises(
        px.ShapeError,
        match="may not change the dtype: the initial value has dtype float32, right_inverse returned float16",
    ):
        ptree.register({"w": BadInv()}, {"w": jnp.eye(2)}, unsafe=True)


def test_error_right_inverse_returns_garbage():
    @dataclasses.dataclass(frozen=True)
    class ReturnsNone(px.Parametrization):
        def forward(self, x):
            return x

        def right_inverse(self, y):
            return None

    @dataclasses.dataclass(frozen=True)
    class ReturnsBadSeq(px.Parametrization):
        def forward(self, x, y):
            return x

        def right_inverse(self, y):
            return (y, None)

    with pytest.raises(
        px.RightInverseError,
        match=r"`ReturnsNone`.right_inverse must return an array or a sequence of arrays \(list, tuple\); got NoneType",
    ):
        ptree.register({"w": ReturnsNone()}, {"w": jnp.eye(2)})
    with pytest.raises(px.RightInverseError, match="element 1 of the sequence is a NoneType"):
        ptree.register({"w": ReturnsBadSeq()}, {"w": jnp.eye(2)})


def test_error_only_first_link_may_return_several_arrays():
    with pytest.raises(
        px.RightInverseError, match="only the first parametrization of a chain may return several"
    ):
        ptree.register({"w": [px.skew, RankOne()]}, {"w": jnp.eye(2)})


def test_error_assign_without_right_inverse():
    spec = {"w": [px.skew, px.matrix_exp]}
    raw, st = ptree.register(spec, {"w": jnp.eye(3)})
    with pytest.raises(
        px.RightInverseError,
        match=r"cannot assign through the chain \[Skew, MatrixExp\]: `MatrixExp` does not implement right_inverse",
    ):
        ptree.assign(spec, raw, st, {"w": jnp.eye(3)})


def test_error_assign_wrong_shape_and_dtype():
    spec = {"w": px.skew}
    raw, st = ptree.register(spec, {"w": jnp.eye(3)})
    with pytest.raises(
        px.ShapeError,
        match=r"the value assigned has shape \(4, 4\) and dtype float32; expected shape \(3, 3\) and dtype float32",
    ):
        ptree.assign(spec, raw, st, {"w": jnp.eye(4)})
    with pytest.raises(
        px.ShapeError, match=r"dtype int32; expected shape \(3, 3\) and dtype float32"
    ):
        ptree.assign(spec, raw, st, {"w": jnp.eye(3, dtype=jnp.int32)})


def test_error_assign_nan():
    spec = {"w": px.skew}
    raw, st = ptree.register(spec, {"w": jnp.eye(3)})
    with pytest.raises(
        px.ParametrizationError,
        match=r"parametrizing `w` with \[Skew\]: the value assigned contains 9 NaN among 9 entries",
    ):
        ptree.assign(spec, raw, st, {"w": jnp.full((3, 3), jnp.nan)})


def test_error_assign_or_remove_unparametrized():
    spec = {"Dense_0/kernel": px.skew}
    raw, st = ptree.register(spec, mlp_params())
    with pytest.raises(
        px.NotParametrizedError,
        match=r"cannot assign to `Dense_1/kernel`: it is not parametrized; the parametrized variables are `Dense_0/kernel`",
    ):
        ptree.assign(spec, raw, st, {"Dense_1/kernel": jnp.eye(3)})
    with pytest.raises(
        px.NotParametrizedError, match=r"cannot remove the parametrization of `scale`"
    ):
        ptree.remove_parametrizations(spec, raw, st, names="scale")


def test_error_leave_parametrized_false_with_several_originals():
    z = jnp.outer(jnp.arange(3.0), jnp.ones(2))
    raw, st = ptree.register({"w": RankOne()}, {"w": z})
    with pytest.raises(
        px.ParametrizationError,
        match=r"cannot leave unparametrized \(`leave_parametrized=False`\) a variable parametrized in terms of 2 arrays",
    ):
        ptree.remove_parametrizations({"w": RankOne()}, raw, st, leave_parametrized=False)
    tree, _ = ptree.remove_parametrizations({"w": RankOne()}, raw, st, leave_parametrized=True)
    np.testing.assert_allclose(tree["w"], z, atol=1e-5)


def test_error_register_twice():
    raw, _ = ptree.register({"w": px.skew}, {"w": jnp.eye(2)})
    with pytest.raises(px.SpecError, match="already has a top-level `parametrizations` entry"):
        ptree.register({"w": px.skew}, raw)


def test_errors_leave_inputs_unchanged():
    params = mlp_params()
    before = jax.tree.map(np.asarray, params)
    with pytest.raises(px.ShapeError):
        ptree.register({"Dense_0/kernel": px.skew, "scale": px.skew}, params)
    jax.tree.map(np.testing.assert_array_equal, params, before)
    spec = {"w": px.skew}
    raw, st = ptree.register(spec, {"w": jnp.eye(3)})
    raw_before = jax.tree.map(np.asarray, raw)
    with pytest.raises(px.ShapeError):
        ptree.assign(spec, raw, st, {"w": jnp.eye(4)})
    jax.tree.map(np.testing.assert_array_equal, raw, raw_before)


def test_error_messages_name_the_path_and_chain():
    with pytest.raises(px.ShapeError) as info:
        ptree.register({"scale": [px.skew, px.cayley]}, mlp_params())
    msg = str(info.value)
    assert re.search(
        r"parametrizing `scale` with \[Skew, Cayley\]: `Cayley` acts on matrices", msg
    ), msg
    assert "got an array of shape () with 0 dimension(s)" in msg
