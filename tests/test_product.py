"""ProductManifold: blocks of one array, each constrained by its own part. Closed forms (the
blocks are the parts' own outputs), numpy membership, state under distinct keys, errors, and
training in the tree API, linen and NNX (the contract runs in tests/test_contract.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import parametrax as px
from parametrax import nnx as pnnx
from parametrax import tree as ptree

from _helpers import normal, standard_promotion

KEY = jax.random.key(0)


def orth_err(y):
    y = np.asarray(y, np.float64)
    return np.max(np.abs(np.swapaxes(y, -1, -2) @ y - np.eye(y.shape[-1])))


# --- closed forms: each block is its part applied to that block ----------------------------------
def test_forward_is_the_parts_on_their_blocks():
    p = px.ProductManifold((px.Simplex(), px.Positive(), None), sizes=(3, 2, 1))
    x = normal(0, (4, 6))
    y = np.asarray(p(x))
    np.testing.assert_allclose(y[:, :3], px.Simplex()(x[:, :3]), rtol=1e-6)
    np.testing.assert_allclose(y[:, 3:5], np.logaddexp(0, np.asarray(x[:, 3:5])), rtol=1e-5)
    np.testing.assert_array_equal(y[:, 5:], x[:, 5:])  # None: unconstrained
    raw = p.right_inverse(jnp.asarray(y))
    np.testing.assert_allclose(p(raw), y, rtol=1e-5, atol=1e-6)


def test_axis_zero_blocks_of_a_matrix():
    # rows 0..2 a symmetric 3x3 block, rows 3..4 free: axis=-2 cuts a (5, 3) kernel
    p = px.ProductManifold((px.Symmetric(lower=True), None), sizes=(3, 2), axis=-2)
    x = normal(1, (2, 5, 3))
    y = np.asarray(p(x))
    np.testing.assert_array_equal(y[:, :3], px.Symmetric(lower=True)(x[:, :3]))
    np.testing.assert_array_equal(y[:, 3:], x[:, 3:])
    assert bool(p.in_manifold(y)) and not bool(p.in_manifold(x))


# --- state: stateful parts keep their variables under distinct keys -----------------------------
def test_stateful_parts_keep_their_state_under_distinct_keys():
    p = px.ProductManifold(
        (px.Stiefel(), px.Stiefel(triv="cayley"), px.RandomPruning(0.5)), sizes=(2, 2, 2)
    )
    assert p.has_variables and callable(p.update_base)
    value = normal(2, (5, 6))
    raw, state = ptree.register({"w": p}, {"w": value}, key=KEY)
    st = state["parametrizations"]["w"]["0"]
    assert set(st) == {"part0_base", "part1_base", "part2_mask"}
    assert st["part0_base"].shape == st["part1_base"].shape == (5, 2)  # n x k frames (issue 12)
    assert not np.allclose(st["part0_base"], st["part1_base"])
    y = np.asarray(ptree.constrain({"w": p}, raw, state)["w"])
    assert orth_err(y[:, :2]) < 1e-5 and orth_err(y[:, 2:4]) < 1e-5
    np.testing.assert_array_equal(y[:, 4:], np.asarray(value[:, 4:]) * np.asarray(st["part2_mask"]))
    # update_base moves both bases and keeps the value
    moved_raw = jax.tree.map(lambda r: r + 0.1, raw)
    before = ptree.constrain({"w": p}, moved_raw, state)["w"]
    raw2, state2 = ptree.update_base({"w": p}, moved_raw, state)
    after = ptree.constrain({"w": p}, raw2, state2)["w"]
    np.testing.assert_allclose(after, before, atol=1e-5)
    assert not np.allclose(state2["parametrizations"]["w"]["0"]["part0_base"], st["part0_base"])


def test_stateful_part_power_iteration_state_advances():
    p = px.ProductManifold((px.SpectralNorm(), px.Positive()), sizes=(3, 1))
    variables = p.init_variables(KEY, normal(3, (4, 4)))
    assert set(variables["state"]) == {"part0_u", "part0_v"}
    x = normal(4, (4, 4))
    y, st = p.apply(variables, x, update_state=True)
    assert not np.allclose(st["part0_u"], variables["state"]["part0_u"])
    _, same = p.apply(variables, x, update_state=False)
    np.testing.assert_array_equal(same["part0_u"], variables["state"]["part0_u"])


def test_in_manifold_and_sample_follow_the_parts():
    p = px.ProductManifold((px.Sphere(), px.Positive(), None), sizes=(3, 2, 1))
    s = p.sample(KEY, (4, 6))
    assert s.shape == (4, 6)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(s[:, :3]), axis=-1), 1, atol=1e-5)
    assert np.all(np.asarray(s[:, 3:5]) > 0)
    assert bool(p.in_manifold(s))
    assert not bool(p.in_manifold(s.at[0, 4].set(-1.0)))
    assert not bool(p.in_manifold(s.at[1, 0].set(3.0)))
    # a part without in_manifold / sample: the product has none either
    q = px.ProductManifold((px.skew, px.matrix_exp), sizes=(3, 3))
    assert q.in_manifold is None and q.sample is None  # Skew has both, MatrixExp neither
    q = px.ProductManifold((px.skew, None), sizes=(3, 3))
    assert callable(q.in_manifold) and callable(q.sample)
    assert px.ProductManifold((px.WeightNorm(), None), sizes=(1, 1)).in_manifold is None


def test_part_without_right_inverse_is_the_identity_at_registration_and_not_assignable():
    p = px.ProductManifold((px.matrix_exp, px.Positive()), sizes=(3, 1))
    assert not p.has_right_inverse
    value = jnp.concatenate([jnp.eye(3), jnp.ones((3, 1))], axis=1)
    raw, state = ptree.register({"w": p}, {"w": value})
    r = raw["parametrizations"]["w"]["original"]
    np.testing.assert_array_equal(r[:, :3], np.eye(3))  # the identity for MatrixExp
    with pytest.raises(px.RightInverseError, match="does not implement right_inverse"):
        ptree.assign({"w": p}, raw, state, {"w": value})


def test_hashable_equal_configurations():
    a = px.ProductManifold([px.Positive(), None], sizes=[2, 3])
    b = px.ProductManifold((px.Positive(), None), sizes=(2, 3))
    assert a == b and hash(a) == hash(b)
    assert a != px.ProductManifold((px.Positive(), None), sizes=(3, 2))


# --- errors --------------------------------------------------------------------------------------
def test_sizes_that_do_not_add_up():
    p = px.ProductManifold((px.Positive(), px.Simplex()), sizes=(2, 2))
    with pytest.raises(
        px.ShapeError,
        match=r"`sizes`=\(2, 2\) add up to 4, but axis -1 .* "
        r"shape \(3, 5\) has length 5",
    ):
        p(jnp.ones((3, 5)))
    with pytest.raises(px.ShapeError, match="add up to 4"):
        ptree.register({"w": p}, {"w": jnp.ones((5,))})


def test_part_that_cannot_take_its_block():
    p = px.ProductManifold((px.skew, px.Positive()), sizes=(2, 1))
    with pytest.raises(
        px.ShapeError,
        match=r"`ProductManifold` part 0 \(`Skew`\) on its block "
        r"of shape \(3, 2\): .*square",
    ):
        p(jnp.ones((3, 3)))


def test_part_with_several_raw_arrays_is_refused():
    p = px.ProductManifold((px.WeightNorm(), px.Positive()), sizes=(2, 1))
    with pytest.raises(px.RightInverseError, match=r"part 0 \(`WeightNorm`\).*2 arrays"):
        ptree.register({"w": p}, {"w": jnp.ones((3, 3))})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(parts=(), sizes=()), "non-empty tuple"),
        (dict(parts=(px.Positive(),), sizes=(2, 1)), "1 part.* but 2 size"),
        (dict(parts=(px.Positive(),), sizes=(0,)), "positive ints"),
        (dict(parts=(px.Positive(),), sizes=3), "positive ints"),
        (dict(parts=([px.skew, px.cayley],), sizes=(3,)), "part 0 is a list"),
        (dict(parts=(px.Positive(),), sizes=(3,), axis=1.0), "`axis` must be an int"),
    ],
)
def test_bad_configuration(kwargs, match):
    with pytest.raises(px.ParametrizationError, match=match):
        px.ProductManifold(**kwargs)


def test_axis_out_of_range():
    with pytest.raises(px.AxisError, match="out of range"):
        px.ProductManifold((px.Positive(),), sizes=(3,), axis=2)(jnp.ones((3,)))


# --- the three APIs: tree, linen, NNX -----------------------------------------------------------
SPEC = px.ProductManifold((px.Stiefel(), px.Positive()), sizes=(2, 2))
TARGET = jnp.arange(16.0).reshape(4, 4) / 4 - 1


def _check_on_set(w):
    w = np.asarray(w, np.float64)
    assert orth_err(w[:, :2]) < 1e-4 and np.all(w[:, 2:] > 0)


def test_tree_api_training_stays_on_the_product():
    spec = {"w": SPEC}
    raw, state = ptree.register(spec, {"w": normal(5, (4, 4))}, key=KEY)
    tx = standard_promotion(optax.adam(0.05))
    opt = tx.init(raw)

    @jax.jit
    def step(raw, opt):
        loss, g = jax.value_and_grad(
            lambda r: jnp.sum((ptree.constrain(spec, r, state)["w"] - TARGET) ** 2)
        )(raw)
        u, opt = tx.update(g, opt, raw)
        return optax.apply_updates(raw, u), opt, loss

    losses = []
    for _ in range(40):
        raw, opt, loss = step(raw, opt)
        losses.append(float(loss))
        _check_on_set(ptree.constrain(spec, raw, state)["w"])
    assert losses[-1] < 0.8 * losses[0]
    # assignment: the right inverse of a point of the product
    target = jnp.concatenate([jnp.eye(4)[:, :2], 2.0 * jnp.ones((4, 2))], axis=1)
    raw2, state2 = ptree.assign(spec, raw, state, {"w": target}, key=KEY)
    np.testing.assert_allclose(ptree.constrain(spec, raw2, state2)["w"], target, atol=1e-5)


def test_linen_dense_with_a_product_kernel():
    layer = px.Parametrized(nn.Dense, {"kernel": SPEC})(features=4, use_bias=False)
    x = normal(6, (8, 4))
    variables = layer.init(KEY, x)
    kernel = px.linen.constrain(layer, variables)["params"]["kernel"]
    _check_on_set(kernel)
    np.testing.assert_allclose(layer.apply(variables, x), x @ kernel, atol=1e-5)
    grads = jax.grad(lambda p: jnp.sum(layer.apply({**variables, "params": p}, x) ** 2))(
        variables["params"]
    )
    g = grads["parametrizations"]["kernel"]["original"]
    assert g.shape == (4, 4) and np.all(np.isfinite(g))


def test_nnx_register_assign_and_train():
    layer = nnx.Linear(4, 4, use_bias=False, rngs=nnx.Rngs(0))
    pnnx.register_parametrization(layer, "kernel", SPEC, rngs=nnx.Rngs(1))
    _check_on_set(layer.kernel)
    target = jnp.concatenate([jnp.eye(4)[:, 2:], 0.5 * jnp.ones((4, 2))], axis=1)
    layer.kernel = target
    np.testing.assert_allclose(layer.kernel, target, atol=1e-5)
    optimizer = nnx.Optimizer(layer, standard_promotion(optax.adam(0.05)), wrt=nnx.Param)
    x = normal(7, (16, 4))
    y = x @ TARGET

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(layer, optimizer)) for _ in range(30)]
    _check_on_set(layer.kernel)
    assert losses[-1] < losses[0]
