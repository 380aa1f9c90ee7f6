"""Closed-form tests for the tutorial catalog (Symmetric, Skew, Cayley, MatrixExp, RandomPruning).
Their contract (shape, round trip, jit, vmap, gradients, equal configs trace once) runs in the
one table of tests/test_contract.py."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import parametrax as px
from parametrax import tree as ptree

from _helpers import key_normal

KEY = jax.random.key(0)


def test_unequal_configs_differ():
    assert px.RandomPruning(0.25) != px.RandomPruning(0.5)


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        px.RandomPruning(0.5).p_drop = 0.1


# --- closed forms ------------------------------------------------------------------------------
def test_cayley_of_zero_is_identity():
    np.testing.assert_allclose(px.cayley(jnp.zeros((3, 3))), np.eye(3), atol=0)


def test_cayley_matches_closed_form_2x2_rotation():
    # Skew [[0, t], [-t, 0]]: (I + X)(I - X)^-1 is the rotation by angle 2*atan(t).
    t = 0.7
    q = px.cayley(px.skew(jnp.array([[0.0, t], [0.0, 0.0]])))
    th = 2 * np.arctan(t)
    np.testing.assert_allclose(q, [[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]], atol=1e-6)


def test_cayley_equals_both_orders_of_the_formula():
    x = key_normal(4, (4, 4))
    eye = np.eye(4)
    a = (eye + np.asarray(x)) @ np.linalg.inv(eye - np.asarray(x))
    np.testing.assert_allclose(px.cayley(x), a, rtol=1e-4, atol=1e-4)


def test_cayley_right_inverse_uses_its_argument():
    # The tutorial's right_inverse read a global X; ours must invert the value it is given.
    q1 = px.cayley(px.skew(key_normal(1, (3, 3))))
    q2 = px.cayley(px.skew(key_normal(2, (3, 3))))
    np.testing.assert_allclose(px.cayley(px.Cayley().right_inverse(q2)), q2, atol=1e-5)
    assert float(jnp.max(jnp.abs(px.cayley(px.Cayley().right_inverse(q2)) - q1))) > 0.1


def test_skew_matrix_exp_is_rotation():
    t = 0.4
    q = px.matrix_exp(px.skew(jnp.array([[0.0, t], [0.0, 0.0]])))
    np.testing.assert_allclose(q, [[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]], atol=1e-6)


def test_so_determinant_plus_one():
    for chain in ([px.skew, px.cayley], [px.skew, px.matrix_exp]):
        q = key_normal(0, (5, 5))
        for p in chain:
            q = p(q)
        assert abs(float(jnp.linalg.det(q)) - 1.0) < 1e-4


def test_symmetric_reads_upper_triangle():
    x = jnp.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal(px.symmetric(x), [[0, 1, 2], [1, 4, 5], [2, 5, 8]])
    np.testing.assert_array_equal(px.Symmetric().right_inverse(px.symmetric(x)), jnp.triu(x))


def test_skew_reads_strict_upper_triangle():
    x = jnp.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal(px.skew(x), [[0, 1, 2], [-1, 0, 5], [-2, -5, 0]])


def test_pruning_mask_is_state_and_right_inverse_is_not_a_true_inverse():
    p = px.RandomPruning(0.5)
    x = key_normal(0, (8, 8))
    raw, state = ptree.register({"w": p}, {"w": x}, key=KEY)
    mask = state["parametrizations"]["w"]["0"]["mask"]
    assert set(np.unique(np.asarray(mask))) <= {0.0, 1.0}
    assert 0.2 < float(mask.mean()) < 0.8
    np.testing.assert_array_equal(raw["parametrizations"]["w"]["original"], x)  # identity inverse
    w = ptree.constrain({"w": p}, raw, state)["w"]
    np.testing.assert_array_equal(w, x * mask)
    y = key_normal(1, (8, 8))
    raw2, state2 = ptree.assign({"w": p}, raw, state, {"w": y})
    np.testing.assert_array_equal(ptree.constrain({"w": p}, raw2, state2)["w"], y * mask)


def test_pruning_mask_depends_on_key_only():
    p = px.RandomPruning(0.5)
    x = key_normal(0, (6, 6))
    m1 = p.init_variables(jax.random.key(3), x)["state"]["mask"]
    m2 = p.init_variables(jax.random.key(3), 2 * x)["state"]["mask"]
    m3 = p.init_variables(jax.random.key(4), x)["state"]["mask"]
    np.testing.assert_array_equal(m1, m2)
    assert not np.array_equal(m1, m3)


# --- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [px.symmetric, px.skew, px.cayley, px.matrix_exp], ids=repr)
def test_non_square_refused(p):
    with pytest.raises(px.ShapeError, match=r"acts on square matrices .* got shape \(3, 4\)"):
        p(jnp.ones((3, 4)))


@pytest.mark.parametrize("p", [px.symmetric, px.skew, px.cayley, px.matrix_exp], ids=repr)
def test_vector_refused(p):
    with pytest.raises(px.ShapeError, match=r"acts on matrices .* shape \(3,\) with 1 dimension"):
        p(jnp.ones((3,)))


def test_integer_refused():
    with pytest.raises(
        px.ShapeError, match="needs a floating-point or complex array; got dtype int32"
    ):
        px.skew(jnp.ones((3, 3), jnp.int32))


@pytest.mark.parametrize("bad", [-0.1, 1.0, "0.5", None])
def test_pruning_bad_probability(bad):
    with pytest.raises(px.ParametrizationError, match=r"`p_drop` must be a float in \[0, 1\)"):
        px.RandomPruning(bad)


def test_stateful_parametrization_called_directly_is_an_error():
    with pytest.raises(px.ParametrizationTypeError, match="owns variables; call `p.apply"):
        px.RandomPruning(0.5)(jnp.ones((2, 2)))


# --- lower= (which triangle holds the raw values) and sample (issue 14) -------------------------
def test_default_triangle_is_still_the_upper_one():
    assert px.Symmetric() == px.Symmetric(lower=False) == px.symmetric
    assert px.Skew() == px.Skew(lower=False) == px.skew
    assert px.Skew(lower=True) != px.skew and hash(px.Skew(lower=True)) == hash(px.Skew(lower=True))


def test_symmetric_lower_reads_lower_triangle():
    # geotorch's Symmetric(lower=True): tril(X) + tril(X, -1)ᵀ
    x = jnp.arange(9.0).reshape(3, 3)
    p = px.Symmetric(lower=True)
    np.testing.assert_array_equal(p(x), [[0, 3, 6], [3, 4, 7], [6, 7, 8]])
    np.testing.assert_array_equal(p.right_inverse(p(x)), jnp.tril(x))
    np.testing.assert_array_equal(p(x), np.asarray(px.symmetric(x.T)))  # lower of X = upper of Xᵀ


def test_skew_lower_reads_strict_lower_triangle():
    # geotorch's Skew(lower=True) and PyTorch's test-suite Skew: L = tril(X, -1), L - Lᵀ
    x = jnp.arange(9.0).reshape(3, 3)
    p = px.Skew(lower=True)
    np.testing.assert_array_equal(p(x), [[0, -3, -6], [3, 0, -7], [6, 7, 0]])
    np.testing.assert_array_equal(p.right_inverse(p(x)), jnp.tril(x, -1))
    np.testing.assert_array_equal(p(x), -np.asarray(px.skew(x.T)))


@pytest.mark.parametrize("p", [px.Symmetric(lower=True), px.Skew(lower=True)], ids=repr)
def test_lower_ignores_the_other_triangle_in_gradients(p):
    x = key_normal(0, (2, 4, 4))
    g = jax.grad(lambda x: jnp.sum(p(x) * key_normal(1, (2, 4, 4))))(x)
    k = 0 if isinstance(p, px.Symmetric) else -1
    np.testing.assert_array_equal(np.triu(np.asarray(g), k + 1), 0)  # upper part: no gradient


@pytest.mark.parametrize("bad", [1, "yes", None])
@pytest.mark.parametrize("cls", [px.Symmetric, px.Skew])
def test_lower_must_be_a_bool(cls, bad):
    with pytest.raises(px.ParametrizationTypeError, match=r"`lower` .* must be a bool"):
        cls(lower=bad)


def test_symmetric_sample_is_goe():
    s = np.asarray(px.Symmetric().sample(KEY, (4000, 3, 3)), np.float64)
    np.testing.assert_array_equal(s, np.swapaxes(s, -1, -2))
    off, diag = s[:, 0, 1], s[:, 1, 1]
    # N(0, 1) off the diagonal, N(0, 2) on it: 4000 draws, std error of a variance ~ 2.2%
    assert abs(off.var() - 1) < 0.1 and abs(diag.var() - 2) < 0.2
    assert abs(off.mean()) < 0.1 and abs(np.corrcoef(s[:, 0, 1], s[:, 0, 2])[0, 1]) < 0.1


def test_skew_sample_has_unit_normal_entries_and_zero_diagonal():
    s = np.asarray(px.Skew(lower=True).sample(KEY, (4000, 3, 3), jnp.float32), np.float64)
    np.testing.assert_array_equal(s, -np.swapaxes(s, -1, -2))
    np.testing.assert_array_equal(np.diagonal(s, axis1=-2, axis2=-1), 0)
    assert abs(s[:, 2, 0].var() - 1) < 0.1 and abs(s[:, 2, 0].mean()) < 0.1
    assert px.Skew().sample(KEY, (3, 3), jnp.bfloat16).dtype == jnp.bfloat16


def test_in_manifold_rules_of_symmetric_and_skew():
    a = np.asarray(px.Symmetric().sample(KEY, (3, 3)))
    s = np.asarray(px.Skew().sample(KEY, (3, 3)))
    assert bool(px.Symmetric().in_manifold(a)) and not bool(px.Symmetric().in_manifold(s))
    assert bool(px.Skew().in_manifold(s)) and not bool(px.Skew().in_manifold(a))
    # relative to max(1, max|x|): a 1e-3 asymmetry on entries of size 100 is within 1e-4 * 100
    big = 100 * a
    big[0, 1] += 1e-3
    assert bool(px.Symmetric().in_manifold(big))
    assert not bool(px.Symmetric().in_manifold(big, atol=1e-6))
    with pytest.raises(px.ShapeError, match="square"):
        px.Skew().in_manifold(jnp.ones((2, 3)))


def test_repr_spells_out_only_the_lower_triangle():
    assert repr(px.skew) == "Skew()" and repr(px.Symmetric()) == "Symmetric()"
    assert repr(px.Skew(lower=True)) == "Skew(lower=True)"
    assert repr(px.Symmetric(lower=True)) == "Symmetric(lower=True)"
