"""The Cayley map's custom derivative (``parametrax._numerics.cayley_map``).

``Cayley.forward`` computes ``Q = (I - X)^{-1}(I + X)`` as ``2M - I`` with ``M = (I - X)^{-1}``
from one solve against ``I``, and differentiates it with the closed form ``dQ = 2 M dX M`` (no
second factorization, no solve in the backward pass). These tests pin it against the plain
``jnp.linalg.solve`` version that JAX differentiates itself, against float64 numpy, and against
finite differences.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import parametrax as px
from parametrax._numerics import cayley_map

from _helpers import normal

# float32 tolerances, chosen for matrices of norm ~1 (condition number of I - X ~ 2)
VALUE_ATOL = 1e-5
GRAD_ATOL = 5e-5
GRAD_RTOL = 1e-4
# check_grads compares against central differences with step eps; float32 needs a loose bound
# (second order is checked in float64, tests/x64/test_cayley_vjp_x64.py)
FD_EPS = 1e-2
FD_TOL = 2e-2


def plain_cayley(x):
    eye = jnp.broadcast_to(jnp.eye(x.shape[-1], dtype=x.dtype), x.shape)
    return jnp.linalg.solve(eye - x, eye + x)


def _skew(x):
    return x - jnp.swapaxes(x, -1, -2)


def _inputs(shape, *, skew, dtype=jnp.float32, seed=0):
    n = shape[-1]
    x = normal(seed, shape, dtype) / np.sqrt(n)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        x = x + 1j * normal(seed + 1, shape, jnp.float32).astype(dtype) / np.sqrt(n)
    # a general (not skew) matrix is kept small so that I - X stays well conditioned
    return 0.5 * _skew(x) if skew else 0.3 * x


SHAPES = [(1, 1), (3, 3), (8, 8), (2, 5, 5), (2, 3, 4, 4)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("skew", [True, False], ids=["skew", "general"])
def test_value_matches_plain_solve(shape, skew):
    x = _inputs(shape, skew=skew)
    chex.assert_trees_all_close(cayley_map(x), plain_cayley(x), atol=VALUE_ATOL)
    chex.assert_trees_all_close(jax.jit(cayley_map)(x), plain_cayley(x), atol=VALUE_ATOL)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("skew", [True, False], ids=["skew", "general"])
def test_grad_matches_plain_solve(shape, skew):
    x = _inputs(shape, skew=skew)
    w = normal(7, shape)
    g_custom = jax.grad(lambda x: jnp.sum(jnp.sin(cayley_map(x)) * w))(x)
    g_plain = jax.grad(lambda x: jnp.sum(jnp.sin(plain_cayley(x)) * w))(x)
    chex.assert_trees_all_close(g_custom, g_plain, atol=GRAD_ATOL, rtol=GRAD_RTOL)


@pytest.mark.parametrize("shape", [(3, 3), (2, 4, 4)], ids=str)
def test_jvp_matches_plain_solve(shape):
    x = _inputs(shape, skew=False)
    t = normal(3, shape)
    _, d_custom = jax.jvp(cayley_map, (x,), (t,))
    _, d_plain = jax.jvp(plain_cayley, (x,), (t,))
    chex.assert_trees_all_close(d_custom, d_plain, atol=GRAD_ATOL, rtol=GRAD_RTOL)


@pytest.mark.parametrize("skew", [True, False], ids=["skew", "general"])
def test_finite_differences(skew):
    x = _inputs((4, 4), skew=skew, seed=3)
    # forward and reverse mode against central differences (first order in float32)
    check_grads(
        cayley_map, (x,), order=1, modes=["fwd", "rev"], eps=FD_EPS, atol=FD_TOL, rtol=FD_TOL
    )


def test_complex_grad_matches_plain_solve():
    x = _inputs((4, 4), skew=False, dtype=jnp.complex64)
    w = normal(5, (4, 4)).astype(jnp.complex64)
    f = lambda c: lambda x: jnp.real(jnp.sum(c(x) * w))  # noqa: E731
    chex.assert_trees_all_close(
        jax.grad(f(cayley_map))(x), jax.grad(f(plain_cayley))(x), atol=GRAD_ATOL, rtol=GRAD_RTOL
    )


def test_vmap_of_grad_matches_batched():
    x = _inputs((3, 4, 4), skew=True)
    g = jax.grad(lambda x: jnp.sum(cayley_map(x) ** 3))
    chex.assert_trees_all_close(jax.vmap(g)(x), g(x), atol=GRAD_ATOL)


def test_hessian_matches_plain_solve():
    x = _inputs((3, 3), skew=False)
    f = lambda c: lambda x: jnp.sum(c(x) ** 2)  # noqa: E731
    chex.assert_trees_all_close(
        jax.hessian(f(cayley_map))(x), jax.hessian(f(plain_cayley))(x), atol=1e-4, rtol=1e-3
    )


def _primitive_counts(jaxpr, acc=None):
    acc = {} if acc is None else acc
    for eqn in jaxpr.eqns:
        acc[eqn.primitive.name] = acc.get(eqn.primitive.name, 0) + 1
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                _primitive_counts(inner, acc)
    return acc


def test_cayley_parametrization_uses_the_rule():
    """``Cayley`` and the chain ``[Skew, Cayley]`` go through the custom rule: the gradient holds
    the forward's one LU and one solve (the rule reuses the forward's inverse), where JAX's own rule for ``jnp.linalg.solve`` adds a
    second (transposed) solve; and the chain's gradient equals the plain version's."""
    x = normal(0, (5, 5))

    def chain(x):
        return px.cayley(px.skew(x))

    def plain(x):
        return plain_cayley(px.skew(x))

    counts = {}
    for name, f in (("custom", chain), ("plain", plain)):
        jaxpr = jax.make_jaxpr(jax.grad(lambda x, f=f: jnp.sum(f(x) * x)))(x).jaxpr
        counts[name] = _primitive_counts(jaxpr)
    assert counts["custom"]["lu"] == 1 and counts["custom"]["custom_linear_solve"] == 1
    assert counts["plain"]["lu"] == 1 and counts["plain"]["custom_linear_solve"] == 2

    g1 = jax.grad(lambda x: jnp.sum(chain(x) * x))(x)
    g2 = jax.grad(lambda x: jnp.sum(plain(x) * x))(x)
    chex.assert_trees_all_close(g1, g2, atol=GRAD_ATOL, rtol=GRAD_RTOL)


def test_training_keeps_orthogonality():
    """A few SGD steps through the custom rule stay on the orthogonal group."""
    x = 0.1 * normal(1, (6, 6))
    target = jnp.eye(6)[::-1]
    loss = lambda x: jnp.sum((px.cayley(px.skew(x)) - target) ** 2)  # noqa: E731
    step = jax.jit(lambda x: x - 0.05 * jax.grad(loss)(x))
    l0 = loss(x)
    for _ in range(20):
        x = step(x)
        q = px.cayley(px.skew(x))
        chex.assert_trees_all_close(q.T @ q, jnp.eye(6), atol=1e-5)
    assert loss(x) < l0
