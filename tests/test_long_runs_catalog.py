"""Numerics under stress for the PyTorch-parity catalog: 10,000 Adam steps at a large learning
rate keep the constraint and produce no NaN; weight norm is finite at exactly zero."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import parametrax as px

from _helpers import standard_promotion

KEY = jax.random.key(0)
STEPS = 10_000
CHECK_EVERY = 100
ORTHO_TOL = 1e-5  # float32, measured every CHECK_EVERY steps
WN_TOL = 1e-4  # relative error of the column norms against |g|


def _long_run(layer, x, target, constraint_error):
    params = layer.init(KEY, x)["params"]
    state = {k: v for k, v in layer.init(KEY, x).items() if k != "params"}
    opt = standard_promotion(optax.adam(0.1))

    def loss(p):
        return jnp.mean((layer.apply({"params": p, **state}, x) - target) ** 2)

    def step(carry, _):
        p, o = carry
        value, g = jax.value_and_grad(loss)(p)
        u, o = opt.update(g, o, p)
        return (optax.apply_updates(p, u), o), value

    def block(carry, _):
        carry, values = jax.lax.scan(step, carry, None, length=CHECK_EVERY)
        return carry, (values, constraint_error({"params": carry[0], **state}))

    @jax.jit
    def run(p):
        (p, _), (losses, errs) = jax.lax.scan(
            block, (p, opt.init(p)), None, length=STEPS // CHECK_EVERY
        )
        return p, losses.reshape(-1), errs

    p, losses, errs = run(params)
    return p, np.asarray(losses), np.asarray(errs)


@pytest.mark.parametrize("shape", [(8, 8), (8, 5)], ids=["square", "tall"])
@pytest.mark.parametrize("map_", ["matrix_exp", "cayley", "householder"])
def test_orthogonal_long_adam_run(map_, shape):
    n_in, n_out = shape
    layer = px.Parametrized(nn.Dense(n_out, use_bias=False), {"kernel": px.Orthogonal(map=map_)})
    x = jax.random.normal(jax.random.key(1), (32, n_in))
    target = x @ jax.random.normal(jax.random.key(2), (n_in, n_out))  # not reachable: keeps pushing

    def err(v):
        k = px.linen.constrain(layer, v)["params"]["kernel"]
        return jnp.max(jnp.abs(k.T @ k - jnp.eye(n_out)))

    p, losses, errs = _long_run(layer, x, target, err)
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(errs))
    assert errs.max() < ORTHO_TOL, (map_, shape, errs.max())
    assert losses[-100:].mean() < losses[0]


def test_weight_norm_long_adam_run():
    layer = px.Parametrized(nn.Dense(6), {"kernel": px.WeightNorm()})
    x = jax.random.normal(jax.random.key(1), (32, 4))
    target = jnp.tanh(x @ jax.random.normal(jax.random.key(2), (4, 6))) * 5.0

    def err(v):
        k = px.linen.constrain(layer, v)["params"]["kernel"]
        g = v["params"]["parametrizations"]["kernel"]["original0"]
        return jnp.max(
            jnp.abs(jnp.linalg.norm(k, axis=0) - jnp.abs(g.reshape(-1)))
            / (jnp.abs(g.reshape(-1)) + 1e-6)
        )

    p, losses, errs = _long_run(layer, x, target, err)
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(errs))
    assert errs.max() < WN_TOL
    assert losses[-100:].mean() < 0.5 * losses[0]


def test_weight_norm_at_exactly_zero_has_finite_gradients():
    wn = px.WeightNorm()
    g, v = jnp.ones((1, 3)), jnp.zeros((4, 3))
    grads = jax.grad(lambda g, v: jnp.sum(wn.forward(g, v) ** 2), argnums=(0, 1))(g, v)
    for leaf in grads:
        assert bool(jnp.all(jnp.isfinite(leaf)))
    np.testing.assert_array_equal(wn.forward(g, v), jnp.zeros((4, 3)))


def test_spectral_norm_of_an_all_zero_matrix_is_zero_with_finite_gradients():
    # torch divides by sigma = 0 and returns NaN; we return the zero matrix.
    from parametrax import tree as ptree

    sn = px.SpectralNorm()
    # Registering a zero value is refused (issue 16: it is off the set); a raw value trained to
    # zero still gives zeros with finite gradients.
    with pytest.raises(px.ParametrizationError, match="the value is all zero"):
        ptree.register({"w": sn}, {"w": jnp.zeros((3, 4))}, key=KEY)
    raw, st = ptree.register({"w": sn}, {"w": jnp.ones((3, 4))}, key=KEY)
    raw = jax.tree.map(jnp.zeros_like, raw)
    np.testing.assert_array_equal(ptree.constrain({"w": sn}, raw, st)["w"], jnp.zeros((3, 4)))
    g = jax.grad(lambda r: jnp.sum(ptree.forward({"w": sn}, r, st, update_state=True)[0]["w"]))(raw)
    assert bool(jnp.all(jnp.isfinite(g["parametrizations"]["w"]["original"])))
    # A non-zero matrix is unaffected: its largest singular value becomes 1.
    w = jax.random.normal(KEY, (3, 4))
    raw, st = ptree.register({"w": sn}, {"w": w}, key=KEY)
    out = ptree.constrain({"w": sn}, raw, st)["w"]
    np.testing.assert_allclose(np.linalg.svd(np.asarray(out), compute_uv=False)[0], 1.0, rtol=1e-4)


def test_positive_definite_long_adam_run():
    n = 6
    layer = px.Parametrized(nn.Dense(n, use_bias=False), {"kernel": px.PositiveDefinite()})
    x = jax.random.normal(jax.random.key(1), (32, n))
    target = x @ jax.random.normal(jax.random.key(2), (n, n))  # indefinite: not reachable

    def err(v):
        k = px.linen.constrain(layer, v)["params"]["kernel"]
        asym = jnp.max(jnp.abs(k - k.T))
        return jnp.maximum(asym, -jnp.min(jnp.linalg.eigvalsh(k)))  # > 0 when off the set

    p, losses, errs = _long_run(layer, x, target, err)
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(errs))
    assert errs.max() <= ORTHO_TOL, errs.max()
    assert losses[-100:].mean() < losses[0]
