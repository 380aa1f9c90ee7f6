"""The Cayley map's custom derivative (``parametrax._numerics.cayley_map``).

``Cayley.forward`` computes ``Q = (I - X)^{-1}(I + X)`` as ``2M - I`` with ``M = (I - X)^{-1}``
from one solve against ``I``, and differentiates it with the closed form ``dQ = 2 M dX M`` (no
second factorization, no solve in the backward pass). These tests pin it against the plain
``jnp.linalg.solve`` version that JAX differentiates itself, against float64 numpy, and against
finite differences.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import parametrax as px
from parametrax._numerics import cayley_map

from _helpers import key_normal

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
    x = key_normal(seed, shape, dtype) / math.sqrt(n)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        x = x + 1j * key_normal(seed + 1, shape, jnp.float32).astype(dtype) / math.sqrt(n)
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
    w = key_normal(7, shape)
    g_custom = jax.grad(lambda x: jnp.sum(jnp.sin(cayley_map(x)) * w))(x)
    g_plain = jax.grad(lambda x: jnp.sum(jnp.sin(plain_cayley(x)) * w))(x)
    chex.assert_trees_all_close(g_custom, g_plain, atol=GRAD_ATOL, rtol=GRAD_RTOL)


@pytest.mark.parametrize("shape", [(3, 3), (2, 4, 4)], ids=str)
def test_jvp_matches_plain_solve(shape):
    x = _inputs(shape, skew=False)
    t = key_normal(3, shape)
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
    w = key_normal(5, (4, 4)).astype(jnp.complex64)
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
    x = key_normal(0, (5, 5))

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
    x = 0.1 * key_normal(1, (6, 6))
    target = jnp.eye(6)[::-1]
    loss = lambda x: jnp.sum((px.cayley(px.skew(x)) - target) ** 2)  # noqa: E731
    step = jax.jit(lambda x: x - 0.05 * jax.grad(loss)(x))
    l0 = loss(x)
    for _ in range(20):
        x = step(x)
        q = px.cayley(px.skew(x))
        chex.assert_trees_all_close(q.T @ q, jnp.eye(6), atol=1e-5)
    assert loss(x) < l0


# ------------------------------------------------------------------------------------------------
# Against float64 numpy (issue 15.4: Q = 2 (I - X)^{-1} - I, dQ = 2 M dX M)
# ------------------------------------------------------------------------------------------------
def _np_cayley(x):
    x = np.asarray(x, np.complex128 if np.iscomplexobj(x) else np.float64)
    eye = np.broadcast_to(np.eye(x.shape[-1]), x.shape)
    return np.linalg.solve(eye - x, eye + x)


def _np_skew(shape, norm, seed, complex_=False):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(shape)
    if complex_:
        g = g + 1j * rng.standard_normal(shape)
    a = g - np.conj(np.swapaxes(g, -1, -2))
    return a * norm / np.linalg.norm(a, axis=(-2, -1), keepdims=True)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("norm", [1e-2, 1.0, 30.0, 1e4])
def test_value_matches_float64_numpy_batched(norm, complex_):
    """Batched skew(-Hermitian) input over a wide range of norms: the float32 value is as close
    to float64 numpy's solve as the conditioning allows, and orthogonal (unitary) to 2e-6 + 10 u ‖X‖₂."""
    a = _np_skew((2, 3, 9, 9), norm, seed=4, complex_=complex_)
    dtype = jnp.complex64 if complex_ else jnp.float32
    xj = jnp.asarray(a, dtype)
    q = np.asarray(jax.jit(cayley_map)(xj), np.complex128)
    # the oracle takes the float32-rounded input: at large norms the map itself amplifies the
    # input's rounding, which is not the computation's error; a backward-stable solve is
    # accurate to about u * cond(I - X) (u = 2^-24), 10 u cond allowed, 2e-6 at least
    cond = float(np.max(np.linalg.cond(np.eye(9) - np.asarray(xj, np.complex128))))
    np.testing.assert_allclose(
        q, _np_cayley(np.asarray(xj)), atol=max(2e-6, 10 * 2.0**-24 * cond), rtol=0
    )
    # a real skew matrix of odd size has the eigenvalue 0: Q's eigenvalue 1 there is perturbed
    # by about u * |X| (the LU's backward error), in the solve form too; elsewhere Q ~ -I
    bound = 2e-6 + 10 * 2.0**-24 * float(np.max(np.linalg.norm(a, 2, axis=(-2, -1))))
    orth = np.abs(np.conj(np.swapaxes(q, -1, -2)) @ q - np.eye(9)).max()
    assert orth < bound, f"max|Q^H Q - I| = {orth:.2e} at |X|_F = {norm}; expected < {bound:.1e}"


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_jvp_and_vjp_match_numpy_finite_differences(complex_):
    """The JVP equals float64 central differences of numpy's Cayley map, and the VJP is its
    transpose: sum(G * J t) = sum(J^T G * t) for random batched t and G."""
    shape = (2, 6, 6)
    rng = np.random.default_rng(11)
    x = 0.4 * _np_skew(shape, 3.0, seed=5, complex_=complex_) + 0.1 * rng.standard_normal(shape)
    t = rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if complex_ else 0)
    g = rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if complex_ else 0)
    h = 1e-6
    fd = (_np_cayley(x + h * t) - _np_cayley(x - h * t)) / (2 * h)
    dtype = jnp.complex64 if complex_ else jnp.float32
    xj, tj, gj = (jnp.asarray(v, dtype) for v in (x, t, g))
    q, dq = jax.jvp(cayley_map, (xj,), (tj,))
    scale = np.abs(fd).max()
    np.testing.assert_allclose(np.asarray(dq), fd, atol=1e-5 * scale, rtol=0)
    np.testing.assert_allclose(np.asarray(q), _np_cayley(x), atol=1e-5)
    _, vjp = jax.vjp(cayley_map, xj)
    (xbar,) = vjp(gj)
    # JAX's VJP is the plain (conjugate-free) transpose, also for complex dtypes: sum(G * J t)
    lhs = np.sum(g * fd)
    rhs = np.sum(np.asarray(xbar, np.complex128) * t)
    assert abs(lhs - rhs) <= 1e-4 * max(1.0, abs(lhs)), (lhs, rhs)


def test_jacfwd_matches_jacrev():
    x = _inputs((4, 4), skew=False, seed=2)
    chex.assert_trees_all_close(
        jax.jacfwd(cayley_map)(x), jax.jacrev(cayley_map)(x), atol=GRAD_ATOL, rtol=GRAD_RTOL
    )


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_is_computed_in_float32(dtype):
    x = _inputs((2, 5, 5), skew=True).astype(dtype)
    q = cayley_map(x)
    assert q.dtype == dtype
    want = cayley_map(x.astype(jnp.float32)).astype(dtype)
    chex.assert_trees_all_close(q.astype(jnp.float32), want.astype(jnp.float32), atol=0)


@pytest.mark.parametrize("norm", [0.1, 5.0, 200.0])
def test_round_trip_through_the_inverse_cayley(norm):
    """forward(right_inverse(Q)) == Q for Q = Cayley(skew raw), batched, across norms."""
    a = jnp.asarray(np.triu(_np_skew((3, 7, 7), norm, seed=8), 1), jnp.float32)
    q = px.cayley(px.skew(a))
    back = px.cayley(px.skew(px.skew.right_inverse(px.cayley.right_inverse(q))))
    chex.assert_trees_all_close(back, q, atol=1e-5)
