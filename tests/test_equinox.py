"""The equinox front (issue 13): parametrized equinox Modules trained with eqx.filter_grad."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import parametrax as px
import parametrax.equinox as peqx

from _helpers import orthogonality_error, rand, standard_promotion

KEY = jax.random.key(0)


def test_linear_weight_is_out_by_in_and_orthonormal_rows():
    lin = eqx.nn.Linear(5, 3, key=KEY)
    model = peqx.Parametrized(lin, {"weight": px.Orthogonal(use_trivialization=False)})
    w = peqx.constrain(model).weight
    assert w.shape == (3, 5)
    assert orthogonality_error(np.asarray(w).T) < 1e-5  # rows orthonormal: W Wᵀ = I
    x = jnp.asarray(rand(1, (5,)))
    np.testing.assert_allclose(model(x), w @ x + lin.bias, atol=1e-6)


def test_mlp_trains_with_filter_grad_and_keeps_the_constraint():
    mlp = eqx.nn.MLP(4, 4, 8, 2, key=KEY)
    spec = {"layers/*/weight": [px.Orthogonal(use_trivialization=False)]}
    model = peqx.Parametrized(mlp, spec)
    x = jnp.asarray(rand(2, (16, 4)))
    y = jnp.asarray(rand(3, (16, 4)))
    optim = standard_promotion(optax.adam(1e-2))
    opt_state = optim.init(eqx.filter(model, eqx.is_inexact_array))

    def loss(m):
        return jnp.mean((jax.vmap(m)(x) - y) ** 2)

    @eqx.filter_jit
    def step(m, opt_state):
        value, grads = eqx.filter_value_and_grad(loss)(m)
        updates, opt_state = optim.update(grads, opt_state, eqx.filter(m, eqx.is_inexact_array))
        return eqx.apply_updates(m, updates), opt_state, value

    losses = []
    for _ in range(30):
        model, opt_state, value = step(model, opt_state)
        losses.append(float(value))
        for layer in peqx.constrain(model).layers:
            w = np.asarray(layer.weight)
            assert orthogonality_error(w if w.shape[0] >= w.shape[1] else w.T) < 2e-5
    assert losses[-1] < 0.9 * losses[0]
    plain = peqx.remove_parametrizations(model)
    assert type(plain) is eqx.nn.MLP
    np.testing.assert_allclose(jax.vmap(plain)(x), jax.vmap(model)(x), atol=1e-6)


def test_stateful_spectral_norm_through_eqx_state():
    lin = eqx.nn.Linear(6, 4, key=KEY)
    model, state = eqx.nn.make_with_state(peqx.Parametrized)(
        lin, {"weight": px.SpectralNorm()}, key=KEY
    )
    x = jnp.ones(6)
    for _ in range(30):  # training calls advance the power iteration
        _, state = model(x, state=state)
    w = peqx.constrain(model, state).weight
    assert abs(np.linalg.norm(np.asarray(w), 2) - 1.0) < 1e-3
    _, same = model(x, state=state, inference=True)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.leaves(same), jax.tree.leaves(state))
    grads = eqx.filter_grad(lambda m: jnp.sum(m(x, state=state)[0]))(model)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    with pytest.raises(
        px.ParametrizationError, match=r"eqx.nn.make_with_state\(px.equinox.Parametrized\)"
    ):
        model(x)


def test_assign_and_update_base():
    lin = eqx.nn.Linear(4, 4, key=KEY)
    model, state = eqx.nn.make_with_state(peqx.Parametrized)(lin, {"weight": px.SO()}, key=KEY)
    q = np.linalg.qr(rand(4, (4, 4)))[0]
    q = jnp.asarray(q @ np.diag([np.sign(np.linalg.det(q)), 1, 1, 1]), jnp.float32)
    model, state = peqx.assign(model, {"weight": q}, state)
    np.testing.assert_allclose(peqx.constrain(model, state).weight, q, atol=1e-5)
    model, state = peqx.update_base(model, state)
    np.testing.assert_allclose(peqx.constrain(model, state).weight, q, atol=1e-5)


def test_errors():
    lin = eqx.nn.Linear(3, 3, key=KEY)
    with pytest.raises(px.ParametrizationError, match="needs a PRNG key"):
        peqx.Parametrized(lin, {"weight": px.SO()})
    model = peqx.Parametrized(lin, {"weight": px.skew})
    with pytest.raises(px.ParametrizationTypeError, match="already a px.equinox.Parametrized"):
        peqx.Parametrized(model, {"raw/weight": px.skew})
    with pytest.raises(
        px.ParametrizationError, match="no parametrization of this module has state"
    ):
        model(jnp.ones(3), state=object())
    with pytest.raises(px.SpecError, match="matches no variable"):
        peqx.Parametrized(lin, {"kernel": px.skew})
