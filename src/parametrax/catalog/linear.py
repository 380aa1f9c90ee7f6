"""The PyTorch tutorial's catalog: Symmetric, Skew, Cayley, MatrixExp and a random pruning mask."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from parametrax._core import Parametrization, Variables, describe
from parametrax._errors import ParametrizationError
from parametrax._numerics import eye_like, mT, require_inexact, require_square, solve

__all__ = [
    "Symmetric",
    "Skew",
    "Cayley",
    "MatrixExp",
    "RandomPruning",
    "symmetric",
    "skew",
    "cayley",
    "matrix_exp",
    "cayley_map",
]

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Symmetric(Parametrization):
    r"""Symmetric matrices from the upper triangle: ``X -> triu(X) + triu(X, 1)^T``.

    Shapes: ``(..., n, n)`` (square on the last two axes, batched over leading ones).
    ``right_inverse(A) = triu(A)`` is exact for symmetric ``A`` (it reads only the upper
    triangle, so for a non-symmetric ``A`` it returns the symmetric matrix sharing its upper
    triangle). PyTorch tutorial, "Implementing parametrizations by hand".

    >>> import jax.numpy as jnp
    >>> from parametrax import symmetric
    >>> A = symmetric(jnp.arange(9.0).reshape(3, 3))
    >>> bool(jnp.all(A == A.T))
    True
    """

    def forward(self, x: Array) -> Array:
        require_square(self, x)
        return jnp.triu(x) + mT(jnp.triu(x, 1))

    def right_inverse(self, value: Array) -> Array:
        require_square(self, value)
        return jnp.triu(value)


@dataclasses.dataclass(frozen=True)
class Skew(Parametrization):
    r"""Skew-symmetric matrices from the strict upper triangle: ``X -> A - A^T``, ``A = triu(X, 1)``.

    Shapes: ``(..., n, n)``. ``right_inverse(A) = triu(A, 1)`` is exact for skew-symmetric
    ``A``. This is the tutorial's Skew (upper triangle); PyTorch's own test suite uses the lower
    triangle, which gives different values for the same raw input.

    >>> import jax.numpy as jnp
    >>> from parametrax import skew
    >>> S = skew(jnp.arange(9.0).reshape(3, 3))
    >>> bool(jnp.all(S == -S.T))
    True
    """

    def forward(self, x: Array) -> Array:
        require_square(self, x)
        a = jnp.triu(x, 1)
        return a - mT(a)

    def right_inverse(self, value: Array) -> Array:
        require_square(self, value)
        return jnp.triu(value, 1)


def _widen(x: Array) -> Array:
    """``x`` in at least float32: XLA has no LU or expm for bfloat16 / float16 on CPU, and their
    8- / 11-bit mantissas would lose the constraint anyway. Results are cast back to ``x.dtype``."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


@jax.custom_jvp
def cayley_map(x: Array) -> Array:
    r"""``Q = (I - X)^{-1} (I + X)`` by one solve, with a derivative that reuses ``Q``.

    Since ``I + X = 2I - (I - X)``, ``Q = 2 (I - X)^{-1} - I``, i.e. ``(I - X)^{-1} = (I + Q)/2``
    for *any* square ``X``. Hence

        dQ = (I - X)^{-1} dX (I + Q) = 1/2 (I + Q) dX (I + Q)

    and the reverse-mode gradient is ``1/2 (I + Q)^T G (I + Q)^T``: two matrix products, no
    second LU factorization, no triangular solves (``jnp.linalg.solve``'s own rule reuses the
    LU factors but still runs two triangular solves and a product per backward pass). Written
    as a ``custom_jvp`` rather than a ``custom_vjp`` so that forward mode (``jax.jvp``,
    ``jax.jacfwd``, Hessians) keeps working; JAX transposes the linear rule for reverse mode.
    Acts on the last two axes and broadcasts over leading ones.
    """
    eye = eye_like(x)
    return solve(eye - x, eye + x)


@cayley_map.defjvp
def _cayley_map_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    q = cayley_map(x)
    p = q + eye_like(q)  # (I + Q) = 2 (I - X)^{-1}
    hi = jax.lax.Precision.HIGHEST
    dq = 0.5 * jnp.matmul(jnp.matmul(p, dx, precision=hi), p, precision=hi)
    return q, dq


@dataclasses.dataclass(frozen=True)
class Cayley(Parametrization):
    r"""The Cayley map ``X -> (I + X)(I - X)^{-1}``, computed as the solve ``(I - X)^{-1}(I + X)``.

    The two factors commute, so both forms are equal. Fed a skew-symmetric ``X`` (chain it after
    :class:`Skew`) it returns an orthogonal matrix with determinant +1 and no eigenvalue -1; this
    is the tutorial's ``CayleyMap`` (no factor 1/2, unlike ``Orthogonal(map="cayley")``).
    Defined when ``X`` has no eigenvalue 1 (always true for skew-symmetric ``X``).

    Cost: the forward pass is one LU factorization and its two triangular solves; the
    derivative needs no second factorization and no solve at all (see :func:`cayley_map`:
    ``(I - X)^{-1} = (I + Q)/2``, so the gradient is two matrix products).

    ``right_inverse(A) = (A + I)^{-1}(A - I)``, the inverse Cayley map, exact when ``A`` has no
    eigenvalue -1 (an orthogonal matrix with det +1 in general position). The tutorial's version
    reads a global variable instead of its argument; this one does not.

    >>> import jax, jax.numpy as jnp
    >>> from parametrax import skew, cayley
    >>> Q = cayley(skew(jax.random.normal(jax.random.key(0), (4, 4))))
    >>> bool(jnp.allclose(Q.T @ Q, jnp.eye(4), atol=1e-5))
    True
    """

    def forward(self, x: Array) -> Array:
        require_square(self, x)
        return cayley_map(_widen(x)).astype(x.dtype)

    def right_inverse(self, value: Array) -> Array:
        require_square(self, value)
        wide = _widen(value)
        eye = eye_like(wide)
        return solve(wide + eye, wide - eye).astype(value.dtype)


@dataclasses.dataclass(frozen=True)
class MatrixExp(Parametrization):
    r"""The matrix exponential ``X -> expm(X)`` (``jax.scipy.linalg.expm``).

    Chained after :class:`Skew` it gives orthogonal matrices with det +1; after
    :class:`Symmetric`, symmetric positive-definite ones. Like the tutorial's
    ``MatrixExponential`` it has no right inverse, so assigning through a chain that contains
    it is an error (use ``Orthogonal(map="matrix_exp")``, whose trivialization can be assigned).

    >>> import jax, jax.numpy as jnp
    >>> from parametrax import symmetric, matrix_exp
    >>> P = matrix_exp(symmetric(jax.random.normal(jax.random.key(0), (3, 3))))
    >>> bool(jnp.all(jnp.linalg.eigvalsh(P) > 0))
    True
    """

    def forward(self, x: Array) -> Array:
        require_square(self, x)
        wide = _widen(x)
        if x.ndim == 2:
            return jsl.expm(wide).astype(x.dtype)
        flat = wide.reshape((-1,) + x.shape[-2:])
        return jax.vmap(jsl.expm)(flat).reshape(x.shape).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class RandomPruning(Parametrization):
    r"""A fixed random pruning mask: ``X -> X * mask``, ``mask ~ Bernoulli(1 - p_drop)``.

    The mask is drawn once, from the PRNG key given at registration, and kept as non-trainable
    state (``state["mask"]``, same shape and dtype as the variable). ``right_inverse`` is the
    identity, so this is the tutorial's example of a right inverse that is not a true inverse:
    after assigning ``X`` the constrained value is ``X * mask``, not ``X``.

    Args:
      p_drop: probability that an entry is zeroed, in ``[0, 1)``.
    """

    p_drop: float = 0.5

    def __post_init__(self):
        if not (isinstance(self.p_drop, (int, float)) and 0.0 <= self.p_drop < 1.0):
            raise ParametrizationError(
                f"`RandomPruning`: `p_drop` must be a float in [0, 1); got {self.p_drop!r}."
            )

    def init_variables(self, key: Array, value: Array) -> Variables:
        require_inexact(self, value)
        keep = jax.random.bernoulli(key, 1.0 - self.p_drop, value.shape)
        return {"params": {}, "state": {"mask": keep.astype(value.dtype)}}

    def apply(self, variables: Variables, x: Array, *, update_state: bool = False):
        del update_state
        mask = variables["state"]["mask"]
        if mask.shape != x.shape:
            raise ParametrizationError(
                f"{describe(self)}: the stored mask has shape {tuple(mask.shape)} but the "
                f"value has shape {tuple(x.shape)}."
            )
        return x * mask, variables["state"]

    def apply_inverse(self, variables: Variables, value: Array, *, key=None):
        del key
        return value, variables["state"]


symmetric = Symmetric()
skew = Skew()
cayley = Cayley()
matrix_exp = MatrixExp()
