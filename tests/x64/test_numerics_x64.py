"""The float64 row of the README's "Numerical tolerances" table (runs with JAX_ENABLE_X64=1)."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import parametrax as px
from parametrax import tree as ptree

from _helpers import standard_promotion

ORTH_TOL_F64 = 1e-12
ROUND_TRIP_TOL_F64 = 1e-12
CHAINS = {"cayley": [px.skew, px.cayley], "matrix_exp": [px.skew, px.matrix_exp]}


def orth_err(q):
    q = np.asarray(q)
    return float(np.max(np.abs(np.swapaxes(q, -1, -2) @ q - np.eye(q.shape[-1]))))


def constrain(chain, raw):
    return ptree.constrain({"w": chain}, {"parametrizations": {"w": {"original": raw}}})["w"]


def test_x64_is_on():
    assert jnp.zeros(1).dtype == jnp.float64


def test_this_process_runs_strict_like_the_main_suite():
    """tests/conftest.py reaches this subprocess suite: dtypes are not promoted implicitly."""
    if os.environ.get("JAX_NUMPY_DTYPE_PROMOTION", "strict") != "strict":
        pytest.skip("JAX_NUMPY_DTYPE_PROMOTION asks for another mode")
    assert jax.config.jax_numpy_dtype_promotion == "strict"
    with pytest.raises(jax.dtypes.TypePromotionError):
        jnp.ones(2, jnp.float32) + jnp.ones(2, jnp.float64)


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_float64_orthogonality_and_huge_norms(name):
    scales = jnp.array([0.1, 1.0, 10.0])[:, None, None, None]
    x = scales * jax.random.normal(jax.random.key(0), (3, 2, 16, 16), jnp.float64)
    q = jax.jit(lambda x: constrain(CHAINS[name], x))(x)
    assert q.dtype == jnp.float64 and orth_err(q) < ORTH_TOL_F64
    # raw of norm 1e4: cayley does not lose accuracy, expm loses ~ eps * ||X|| (about 2e-13)
    big = jax.random.normal(jax.random.key(1), (8, 8), jnp.float64)
    big = big * (1e4 / jnp.linalg.norm(px.skew(big)))
    tol = ORTH_TOL_F64 if name == "cayley" else float(jnp.finfo(jnp.float64).eps) * 1e4
    assert orth_err(constrain(CHAINS[name], big)) < tol


def test_float64_cayley_round_trip():
    spec = {"w": CHAINS["cayley"]}
    raw, state = ptree.register(spec, {"w": jnp.eye(8)})
    q = constrain(spec["w"], jax.random.normal(jax.random.key(2), (8, 8)))
    raw2, state2 = ptree.assign(spec, raw, state, {"w": q})
    np.testing.assert_allclose(ptree.constrain(spec, raw2, state2)["w"], q, atol=ROUND_TRIP_TOL_F64)


def test_float64_long_adam_run():
    layer = px.Parametrized(
        nn.Dense(8, use_bias=False, param_dtype=jnp.float64), {"kernel": CHAINS["cayley"]}
    )
    x = jax.random.normal(jax.random.key(1), (32, 8))
    target = x @ jax.random.normal(jax.random.key(2), (8, 8))
    params = layer.init(jax.random.key(0), x)["params"]
    opt = standard_promotion(optax.adam(0.1))

    def step(carry, _):
        p, o = carry
        g = jax.grad(lambda p: jnp.mean((layer.apply({"params": p}, x) - target) ** 2))(p)
        u, o = opt.update(g, o, p)
        return (optax.apply_updates(p, u), o), None

    p, _ = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), None, length=2000)[0])(params)
    k = px.linen.constrain(layer, {"params": p})["params"]["kernel"]
    assert k.dtype == jnp.float64 and orth_err(k) < ORTH_TOL_F64


@pytest.mark.parametrize("kind", ["skew", "symmetric", "general"])
def test_the_one_expm_matches_scipy_in_float64(kind):
    """``_numerics.expm`` against ``scipy.linalg.expm`` in float64, spectral norms 1e-3..50."""
    import scipy.linalg

    from parametrax._numerics import expm

    rng = np.random.default_rng(0)
    for norm in (1e-3, 1e-1, 1.0, 5.0, 20.0, 50.0):
        g = rng.standard_normal((6, 6))
        a = {"skew": g - g.T, "symmetric": g + g.T, "general": g}[kind]
        a = a / np.linalg.norm(a, 2) * norm
        ref = scipy.linalg.expm(a)
        got = np.asarray(expm(jnp.asarray(a, jnp.float64)))
        assert got.dtype == np.float64
        assert np.linalg.norm(got - ref) <= 1e-11 * np.linalg.norm(ref), norm
