"""CorrelationCholesky: closed forms, numpy checks of the set, the right inverse and its
projection, training in the tree API, linen and NNX (the contract runs in the table of
tests/test_contract.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.test_util import check_grads

import parametrax as px
from parametrax import nnx as pnnx
from parametrax import tree as ptree

from _helpers import normal, standard_promotion

ATOL = 1e-5
STEPS = 80
CC = px.CorrelationCholesky()


def assert_correlation_cholesky(l, atol=ATOL):
    """numpy: lower triangular, diagonal > 0, unit rows; L Lᵀ unit diagonal and PD."""
    l = np.asarray(l, np.float64)
    assert np.max(np.abs(np.triu(l, 1))) <= atol
    assert np.all(np.diagonal(l, axis1=-2, axis2=-1) > 0)
    np.testing.assert_allclose(np.linalg.norm(l, axis=-1), 1.0, atol=atol)
    c = l @ np.swapaxes(l, -1, -2)
    np.testing.assert_allclose(np.diagonal(c, axis1=-2, axis2=-1), 1.0, atol=atol)
    assert np.all(np.linalg.eigvalsh(c) > 0)


def test_closed_form_2x2():
    for t in [-3.0, 0.0, 0.5, 10.0]:
        x = jnp.array([[7.0, -2.0], [t, 5.0]])  # diagonal and upper triangle unused
        s = np.sqrt(1 + t * t)
        np.testing.assert_allclose(CC(x), [[1.0, 0.0], [t / s, 1 / s]], atol=1e-6)
        np.testing.assert_allclose((CC(x) @ CC(x).T)[0, 1], t / s, atol=1e-6)  # the correlation


def test_closed_form_3x3_last_row():
    x = jnp.zeros((3, 3)).at[2, 0].set(2.0).at[2, 1].set(-1.0)
    np.testing.assert_allclose(CC(x)[2], np.array([2.0, -1.0, 1.0]) / np.sqrt(6.0), atol=1e-6)
    np.testing.assert_allclose(CC(jnp.zeros((4, 4))), np.eye(4), atol=0)


@pytest.mark.parametrize("scale", [0.1, 1.0, 30.0])
def test_forward_is_on_the_set(scale):
    assert_correlation_cholesky(CC(normal(0, (6, 5, 5), scale=scale)))
    assert bool(CC.in_manifold(CC(normal(0, (6, 5, 5), scale=scale))))


def test_unused_entries_have_zero_gradient():
    g = jax.grad(lambda x: jnp.sum(normal(1, (4, 4)) * CC(x)))(normal(2, (4, 4)))
    np.testing.assert_array_equal(np.triu(np.asarray(g)), 0.0)
    assert np.all(np.asarray(g)[np.tril_indices(4, -1)] != 0)


def test_gradients_match_finite_differences():
    c = normal(3, (4, 4))
    check_grads(
        lambda x: jnp.sum(c * CC(x)),
        (normal(4, (4, 4)),),
        order=1,
        modes=["rev"],
        eps=1e-2,
        atol=1e-2,
        rtol=1e-2,
    )


def test_right_inverse_exact_on_the_set_and_closed_form():
    l = CC.sample(jax.random.key(0), (3, 4, 4))
    raw = CC.right_inverse(l)
    ln = np.asarray(l)
    expected = np.tril(ln, -1) / np.diagonal(ln, axis1=-2, axis2=-1)[..., :, None]
    np.testing.assert_allclose(raw, expected, rtol=1e-6)
    np.testing.assert_allclose(CC(raw), l, atol=1e-6)
    x = normal(5, (4, 4))
    np.testing.assert_allclose(np.tril(CC.right_inverse(CC(x)), -1), np.tril(x, -1), atol=1e-5)


def test_projection_off_the_set():
    v = np.array(normal(6, (4, 4)))
    v[np.diag_indices(4)] = np.abs(v[np.diag_indices(4)]) + 0.1
    # positive diagonal: the row-normalised lower triangle (the nearest point, Frobenius)
    t = np.tril(v)
    np.testing.assert_allclose(
        CC(CC.right_inverse(jnp.asarray(v))),
        t / np.linalg.norm(t, axis=-1, keepdims=True),
        atol=1e-6,
    )
    # a diagonal <= 0: replaced by 1e-2 * the norm of the row's off-diagonal part
    w = v.copy()
    w[2, 2] = -1.0
    off = np.tril(w, -1)[2]
    row = off.copy()
    row[2] = 1e-2 * np.linalg.norm(off)
    got = np.asarray(CC(CC.right_inverse(jnp.asarray(w))))
    np.testing.assert_allclose(got[2], row / np.linalg.norm(row), atol=1e-6)
    assert_correlation_cholesky(got)


def test_in_manifold_rejects_each_violation():
    l = np.array(CC.sample(jax.random.key(1), (3, 3)))
    assert bool(CC.in_manifold(jnp.asarray(l)))
    up = l.copy()
    up[0, 2] = 0.1
    neg = l.copy()
    neg[1] = -neg[1]
    long = 1.01 * l
    for bad in (up, neg, long):
        assert not bool(CC.in_manifold(jnp.asarray(bad)))


def test_bad_input():
    with pytest.raises(px.ShapeError, match="square"):
        CC(jnp.ones((3, 4)))
    with pytest.raises(px.ShapeError, match="floating"):
        CC.right_inverse(jnp.eye(3, dtype=jnp.int32))
    with pytest.raises(px.ShapeError, match="matrices"):
        CC(jnp.ones(3))


# ------------------------------------------------------------------------------------------------
# training toward a target correlation matrix: tree API, linen, NNX
# ------------------------------------------------------------------------------------------------
TARGET = np.array([[1.0, 0.8, -0.3], [0.8, 1.0, 0.1], [-0.3, 0.1, 1.0]], np.float32)


def corr_loss(l):
    return jnp.sum((l @ l.T - TARGET) ** 2)


def test_tree_api_fits_a_target_correlation():
    spec = {"L": CC}
    raw, state = ptree.register(spec, {"L": jnp.eye(3)})
    tx = standard_promotion(optax.adam(0.05))
    opt = tx.init(raw)

    @jax.jit
    def step(raw, opt):
        loss, g = jax.value_and_grad(lambda r: corr_loss(ptree.constrain(spec, r, state)["L"]))(raw)
        u, opt = tx.update(g, opt, raw)
        return optax.apply_updates(raw, u), opt, loss

    for _ in range(STEPS * 3):
        raw, opt, loss = step(raw, opt)
        assert_correlation_cholesky(ptree.constrain(spec, raw, state)["L"])
    l = np.asarray(ptree.constrain(spec, raw, state)["L"])
    np.testing.assert_allclose(l @ l.T, TARGET, atol=2e-3)
    np.testing.assert_allclose(l, np.linalg.cholesky(TARGET), atol=2e-3)  # numpy's factor


def test_linen_and_nnx():
    layer = px.Parametrized(nn.Dense, {"kernel": CC})(features=3, use_bias=False)
    x = normal(7, (5, 3))
    variables = layer.init(jax.random.key(0), x)
    kernel = px.linen.constrain(layer, variables)["params"]["kernel"]
    assert_correlation_cholesky(kernel)
    np.testing.assert_allclose(layer.apply(variables, x), x @ kernel, atol=1e-5)
    grads = jax.grad(
        lambda p: corr_loss(px.linen.constrain(layer, {"params": p})["params"]["kernel"])
    )(variables["params"])
    assert np.all(np.isfinite(np.asarray(grads["parametrizations"]["kernel"]["original"])))

    lin = nnx.Linear(3, 3, use_bias=False, rngs=nnx.Rngs(0))
    pnnx.register_parametrization(lin, "kernel", CC)
    assert_correlation_cholesky(lin.kernel)
    target_l = np.linalg.cholesky(TARGET)
    lin.kernel = jnp.asarray(target_l)  # the exact right inverse
    np.testing.assert_allclose(lin.kernel, target_l, atol=1e-6)
    lin.kernel = jnp.asarray(np.eye(3, dtype=np.float32))
    optimizer = nnx.Optimizer(lin, standard_promotion(optax.adam(0.05)), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        loss, g = nnx.value_and_grad(lambda m: corr_loss(m.kernel))(model)
        optimizer.update(model, g)
        return loss

    losses = [float(step(lin, optimizer)) for _ in range(STEPS)]
    assert_correlation_cholesky(lin.kernel)
    assert losses[-1] < 0.1 * losses[0]


def test_bfloat16_adafactor_under_strict_promotion():
    # issue 16's sweep: Adafactor in bfloat16 raised a strict-promotion TypePromotionError. The
    # mix is optax's own (factorized.py: a float32 decay rate times the bfloat16 second moment),
    # not the map's: forward and its gradient stay bfloat16 under strict promotion (the tests'
    # setting, tests/conftest.py), and optax's step runs under standard promotion as for Adam.
    assert jax.config.jax_numpy_dtype_promotion == "strict"
    x = normal(30, (4, 4)).astype(jnp.bfloat16)
    assert CC(x).dtype == jnp.bfloat16
    target = jnp.full((4, 4), 3.0, jnp.float32)

    def loss(r):
        return jnp.sum((CC(r).astype(jnp.float32) - target) ** 2)

    assert jax.grad(loss)(x).dtype == jnp.bfloat16
    tx = standard_promotion(optax.adafactor(1e-2))
    opt = tx.init(x)
    for _ in range(5):
        u, opt = tx.update(jax.grad(loss)(x), opt, x)
        x = optax.apply_updates(x, u)
        assert x.dtype == jnp.bfloat16
        y = np.asarray(CC(x).astype(jnp.float32), np.float64)
        assert np.all(np.triu(y, 1) == 0) and np.all(np.diag(y) > 0)
        # bfloat16 rounding of each entry (eps 2^-7): a unit row is within a few eps of 1
        assert np.max(np.abs(np.linalg.norm(y, axis=-1) - 1)) < 3 * 2.0**-7
