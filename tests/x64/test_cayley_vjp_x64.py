"""The Cayley map's custom derivative in float64: finite differences to second order, and
agreement with the plain ``jnp.linalg.solve`` version to 1e-12."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from parametrax._numerics import cayley_map

FD_EPS = 1e-5
FD_TOL = 1e-6
ATOL = 1e-12


def plain_cayley(x):
    eye = jnp.broadcast_to(jnp.eye(x.shape[-1], dtype=x.dtype), x.shape)
    return jnp.linalg.solve(eye - x, eye + x)


def _x(shape, skew, seed=0):
    x = jax.random.normal(jax.random.key(seed), shape, jnp.float64) / np.sqrt(shape[-1])
    return 0.5 * (x - jnp.swapaxes(x, -1, -2)) if skew else 0.3 * x


def test_runs_in_float64():
    assert cayley_map(_x((3, 3), True)).dtype == jnp.float64


@pytest.mark.parametrize("skew", [True, False], ids=["skew", "general"])
@pytest.mark.parametrize("shape", [(4, 4), (2, 3, 3)], ids=str)
def test_finite_differences_second_order(shape, skew):
    check_grads(
        cayley_map,
        (_x(shape, skew),),
        order=2,
        modes=["fwd", "rev"],
        eps=FD_EPS,
        atol=FD_TOL,
        rtol=FD_TOL,
    )


@pytest.mark.parametrize("skew", [True, False], ids=["skew", "general"])
def test_grad_equals_plain_solve(skew):
    x = _x((6, 6), skew, seed=1)
    w = jax.random.normal(jax.random.key(2), (6, 6), jnp.float64)
    g1 = jax.grad(lambda x: jnp.sum(jnp.cos(cayley_map(x)) * w))(x)
    g2 = jax.grad(lambda x: jnp.sum(jnp.cos(plain_cayley(x)) * w))(x)
    np.testing.assert_allclose(g1, g2, atol=ATOL, rtol=0)
    np.testing.assert_allclose(cayley_map(x), plain_cayley(x), atol=ATOL, rtol=0)
