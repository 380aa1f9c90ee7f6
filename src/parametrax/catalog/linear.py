"""Linear subspaces of square matrices: ``Symmetric`` and ``Skew`` (the PyTorch tutorial's first
examples). The maps onto the orthogonal group (``Cayley``, ``MatrixExp``) are in
:mod:`parametrax.catalog.orthogonal`."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from parametrax._core import Parametrization
from parametrax._numerics import mT, require_square

__all__ = ["Symmetric", "Skew", "symmetric", "skew", "SQUARE_HINT"]

Array = jax.Array

#: Appended to the square-shape error of the square-only maps.
SQUARE_HINT = (
    " For a non-square kernel use `Orthogonal` (tall or wide) or reshape the variable."
)
_SQUARE_HINT = SQUARE_HINT


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
        require_square(self, x, _SQUARE_HINT)
        return jnp.triu(x) + mT(jnp.triu(x, 1))

    def right_inverse(self, value: Array) -> Array:
        require_square(self, value, _SQUARE_HINT)
        return jnp.triu(value)


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
        require_square(self, x, _SQUARE_HINT)
        a = jnp.triu(x, 1)
        return a - mT(a)

    def right_inverse(self, value: Array) -> Array:
        require_square(self, value, _SQUARE_HINT)
        return jnp.triu(value, 1)


symmetric = Symmetric()
skew = Skew()
