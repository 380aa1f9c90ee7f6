"""parametrax.projections: Keras's constraints (closed forms against a numpy transcription of
Keras's formulas) and the optax `project` transform (on the set after every step, the loss
falls, the projected-gradient optimum of a problem with a closed-form answer)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import parametrax as px
from parametrax import projections as P

from _helpers import normal, standard_promotion

KERAS_EPS = 1e-7
STEP_ATOL = 1e-5


def norms(w, axis):
    return np.linalg.norm(np.asarray(w, np.float64), axis=axis)


# ------------------------------------------------------------------------------------------------
# Keras's constraints
# ------------------------------------------------------------------------------------------------
def test_max_norm_matches_keras_formula():
    w = np.asarray(normal(0, (5, 4), scale=2.0), np.float64)
    n = np.linalg.norm(w, axis=0, keepdims=True)
    keras = w * (np.clip(n, 0, 2.0) / (KERAS_EPS + n))
    np.testing.assert_allclose(P.max_norm(2.0)(jnp.asarray(w, jnp.float32)), keras, atol=1e-6)
    # inside the ball: exactly unchanged (Keras shrinks by 1 - eps/||w||)
    small = jnp.asarray(w / (2 * n.max()), jnp.float32)
    np.testing.assert_array_equal(P.max_norm(2.0)(small), small)


def test_unit_norm_and_non_neg_match_keras_formulas():
    w = np.asarray(normal(1, (3, 4)), np.float64)
    keras_unit = w / (KERAS_EPS + np.linalg.norm(w, axis=0, keepdims=True))
    np.testing.assert_allclose(P.unit_norm()(jnp.asarray(w, jnp.float32)), keras_unit, atol=1e-6)
    keras_nonneg = w * (w >= 0)
    np.testing.assert_array_equal(
        P.non_neg()(jnp.asarray(w, jnp.float32)), keras_nonneg.astype(np.float32)
    )
    np.testing.assert_array_equal(P.unit_norm(axis=None)(jnp.zeros((2, 2))), 0.0)  # 0 stays 0


def test_constraints_are_idempotent_hashable_and_keras_ordered():
    for c in (P.max_norm(1.5, axis=-1), P.unit_norm(axis=(0, 1)), P.non_neg()):
        w = normal(2, (3, 4), scale=3.0)
        np.testing.assert_allclose(c(c(w)), c(w), atol=1e-6)
        assert bool(c.in_manifold(c(w)))
    assert P.MaxNorm(3.0, 1) == P.max_norm(max_value=3.0, axis=1)
    assert hash(P.unit_norm([0, 1])) == hash(P.unit_norm((0, 1)))


def test_bad_constraint_arguments():
    with pytest.raises(px.ParametrizationError, match="`max_value` must be a positive"):
        P.max_norm(0.0)
    with pytest.raises(px.ParametrizationTypeError, match="`axis` must be"):
        P.unit_norm(axis="rows")
    with pytest.raises(px.AxisError, match="out of range"):
        P.max_norm(1.0, axis=3)(jnp.ones((2, 2)))
    with pytest.raises(px.ShapeError, match="floating"):
        P.non_neg()(jnp.ones(3, jnp.int32))


# ------------------------------------------------------------------------------------------------
# project: the optax transform
# ------------------------------------------------------------------------------------------------
def run(tx, params, loss_fn, steps, check):
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        loss, g = jax.value_and_grad(loss_fn)(params)
        u, state = tx.update(g, state, params)
        return optax.apply_updates(params, u), state, loss

    losses = []
    for _ in range(steps):
        params, state, loss = step(params, state)
        losses.append(float(loss))
        check(params)
    return params, losses


def test_non_neg_reaches_the_projected_optimum_and_leaves_other_leaves_alone():
    target = normal(3, (6,))
    params = {"w": jnp.ones(6), "b": jnp.zeros(3)}
    btarget = jnp.array([1.0, -2.0, 3.0])

    def loss_fn(p):
        return jnp.sum((p["w"] - target) ** 2) + jnp.sum((p["b"] - btarget) ** 2)

    def check(p):
        assert np.all(np.asarray(p["w"]) >= 0)

    tx = optax.chain(standard_promotion(optax.adam(0.05)), P.project({"w": P.non_neg()}))
    params, losses = run(tx, params, loss_fn, 300, check)
    np.testing.assert_allclose(params["w"], np.maximum(np.asarray(target), 0), atol=1e-2)
    np.testing.assert_allclose(params["b"], btarget, atol=1e-2)  # unconstrained: free optimum
    optimum = float(np.sum(np.minimum(np.asarray(target), 0) ** 2))  # the projected optimum
    assert losses[0] > optimum + 1.0 and losses[-1] < optimum + 1e-3


def test_unconstrained_updates_pass_through_bit_for_bit():
    params = {"w": normal(4, (3, 3)), "b": normal(5, (3,))}
    updates = {"w": normal(6, (3, 3)), "b": normal(7, (3,))}
    tx = P.project({"w": P.max_norm(0.5)})
    out, _ = tx.update(updates, tx.init(params), params)
    np.testing.assert_array_equal(out["b"], updates["b"])
    new = optax.apply_updates(params, out)
    expected = P.max_norm(0.5)(params["w"] + updates["w"])
    np.testing.assert_allclose(new["w"], expected, atol=STEP_ATOL)
    # a list pytree (no mappings) works the same way
    lp, lu = [params["w"], params["b"]], [updates["w"], updates["b"]]
    lout, _ = P.project({"0": P.max_norm(0.5)}).update(lu, None, lp)
    np.testing.assert_array_equal(lout[1], lu[1])
    np.testing.assert_allclose(lp[0] + lout[0], expected, atol=STEP_ATOL)


def test_max_norm_on_a_linen_mlp_with_adam():
    model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(1)])
    x = normal(8, (64, 3))
    y = 0.5 * x[:, :1] - 0.3 * x[:, 1:2]
    params = model.init(jax.random.key(0), x)

    def loss_fn(p):
        return jnp.mean((model.apply(p, x) - y) ** 2)

    def check(p):
        for layer in ("layers_0", "layers_2"):
            assert np.all(norms(p["params"][layer]["kernel"], 0) <= 0.8 + STEP_ATOL)

    tx = optax.chain(
        standard_promotion(optax.adam(0.03)), P.project({"**/kernel": P.max_norm(0.8)})
    )
    _, losses = run(tx, params, loss_fn, 100, check)
    assert losses[-1] < 0.3 * losses[0]


def test_unit_norm_projected_optimum():
    # minimise -<w_j, t_j> per column over unit vectors: the optimum is t_j / ||t_j||.
    t = normal(9, (4, 3))
    params = {"w": normal(10, (4, 3))}
    tx = optax.chain(optax.sgd(0.1), P.project({"w": P.unit_norm()}))

    def check(p):
        np.testing.assert_allclose(norms(p["w"], 0), 1.0, atol=STEP_ATOL)

    params, losses = run(tx, params, lambda p: -jnp.sum(p["w"] * t), 100, check)
    np.testing.assert_allclose(params["w"], t / np.linalg.norm(t, axis=0), atol=1e-3)
    assert losses[-1] < losses[0]


def test_catalog_entries_as_projections():
    # Stiefel's right inverse is the polar projection; Hurwitz's shifts a value off the set.
    params = {"q": normal(11, (5, 3)), "a": -2.0 * jnp.eye(3)}
    target = normal(12, (3, 3), scale=2.0)
    spec = {"q": px.Stiefel(), "a": px.Hurwitz(alpha=0.1)}

    def loss_fn(p):
        return jnp.sum((p["q"] - 1.0) ** 2) + jnp.sum((p["a"] - target - 3 * jnp.eye(3)) ** 2)

    def check(p):
        q = np.asarray(p["q"], np.float64)
        np.testing.assert_allclose(q.T @ q, np.eye(3), atol=1e-4)
        assert np.linalg.eigvals(np.asarray(p["a"], np.float64)).real.max() < -0.1 + 1e-4

    tx = optax.chain(standard_promotion(optax.adam(0.05)), P.project(spec))
    _, losses = run(tx, params, loss_fn, 30, check)
    assert losses[-1] < losses[0]


def test_project_errors():
    tx = P.project({"w": P.non_neg()})
    with pytest.raises(px.ParametrizationError, match=r"tx.update\(updates, state, params\)"):
        tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))
    with pytest.raises(px.SpecError):
        P.project({"nothing": P.non_neg()}).update({"w": jnp.ones(2)}, None, {"w": jnp.ones(2)})
    with pytest.raises(px.ParametrizationTypeError, match="a spec must be a mapping"):
        P.project([P.non_neg()])


def test_project_params_directly():
    params = {"a": {"w": jnp.array([-1.0, 2.0])}, "b": jnp.array([-3.0])}
    out = P.project_params({"a/w": P.non_neg()}, params)
    np.testing.assert_array_equal(out["a"]["w"], [0.0, 2.0])
    assert out["b"] is params["b"]
