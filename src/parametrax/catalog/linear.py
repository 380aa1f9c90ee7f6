"""Linear subspaces of square matrices: ``Symmetric`` and ``Skew`` (the PyTorch tutorial's first
examples). The maps onto the orthogonal group (``Cayley``, ``MatrixExp``) are in
:mod:`parametrax.catalog.orthogonal`."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from parametrax._core import Parametrization
from parametrax._errors import ParametrizationTypeError
from parametrax._numerics import default_atol, mT, require_square, widen
from parametrax.catalog._broadcasts import ExactClassBroadcasts

__all__ = ["Symmetric", "Skew", "symmetric", "skew", "SQUARE_HINT"]

Array = jax.Array

#: Appended to the square-shape error of the square-only maps.
SQUARE_HINT = " For a non-square kernel use `Orthogonal` (tall or wide) or reshape the variable."
_SQUARE_HINT = SQUARE_HINT


def _tri(x: Array, lower: bool, k: int = 0) -> Array:
    """The triangle holding the raw values: ``tril(x, -k)`` (lower) or ``triu(x, k)`` (upper)."""
    return jnp.tril(x, -k) if lower else jnp.triu(x, k)


def _scaled_gap(x: Array, y: Array, atol: float | None) -> Array:
    """``max|x - y| <= atol * max(1, max|x|)`` over the whole array (one boolean)."""
    atol = default_atol(x.dtype) if atol is None else atol
    x, y = widen(x), widen(y)
    scale = jnp.maximum(1.0, jnp.max(jnp.abs(x), initial=0.0))
    return jnp.max(jnp.abs(x - y), initial=0.0) <= atol * scale


class _Triangle(Parametrization):
    """What ``Symmetric`` and ``Skew`` share: the ``lower`` field (which triangle of the raw
    array holds the values), its check, and the repr. The automatic dataclass step writes a
    field-by-field ``__repr__`` on every class whose own body sets none, so each member names
    this one (a user subclass keeps the dataclass repr, as before)."""

    lower: bool = False

    def __post_init__(self):
        if not isinstance(self.lower, bool):
            raise ParametrizationTypeError(
                f"`{type(self).__name__}`: `lower` (which triangle holds the raw values: True the "
                f"lower, False the upper) must be a bool; got {type(self.lower).__name__} "
                f"{self.lower!r}."
            )

    def __repr__(self) -> str:
        """``Skew()`` / ``Skew(lower=True)``: the default triangle is not spelled out (the repr
        of today's default entries is unchanged)."""
        return f"{type(self).__name__}(lower=True)" if self.lower else f"{type(self).__name__}()"


class Symmetric(_Triangle):
    r"""Symmetric matrices ``A = Aᵀ`` from one triangle of the raw ``X`` (diagonal included).

    ``lower=False`` (the default, the PyTorch tutorial's ``Symmetric``):
    ``X -> triu(X) + triu(X, 1)ᵀ``, ``right_inverse(A) = triu(A)``. ``lower=True`` (geotorch's
    default, ``Symmetric(lower=True)``): ``X -> tril(X) + tril(X, -1)ᵀ``,
    ``right_inverse(A) = tril(A)``. The other triangle of ``X`` is ignored (its gradient is 0).
    The right inverse is exact for symmetric ``A``; for a non-symmetric ``A`` it returns the
    symmetric matrix sharing its chosen triangle (a projection, not the nearest point).

    Shapes: ``(..., n, n)`` (square on the last two axes, batched over leading ones), real or
    complex (``A = Aᵀ``, not Hermitian).

    ``in_manifold(x, atol=None)``: ``max|x - xᵀ| <= atol * max(1, max|x|)`` over the whole array
    (relative to the largest entry, absolute below 1; non-strict; ``atol`` defaults to
    :func:`parametrax.testing.default_atol` of ``x.dtype``).

    ``sample(key, shape, dtype)``: ``(G + Gᵀ)/√2`` with ``G`` standard normal: the Gaussian
    orthogonal ensemble (off-diagonal entries ``N(0, 1)``, diagonal entries ``N(0, 2)``,
    independent up to symmetry).

    >>> import jax.numpy as jnp
    >>> from parametrax import Symmetric, symmetric
    >>> x = jnp.arange(9.0).reshape(3, 3)
    >>> A = symmetric(x)                     # the upper triangle
    >>> bool(jnp.all(A == A.T)), A[1, 0].item()
    (True, 1.0)
    >>> Symmetric(lower=True)(x)[0, 1].item()   # the lower triangle
    3.0
    """

    broadcasts = ExactClassBroadcasts()
    __repr__ = _Triangle.__repr__

    def forward(self, x: Array) -> Array:
        require_square(self, x, _SQUARE_HINT)
        return _tri(x, self.lower) + mT(_tri(x, self.lower, 1))

    def right_inverse(self, value: Array) -> Array:
        require_square(self, value, _SQUARE_HINT)
        return _tri(value, self.lower)

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """``max|x - xᵀ| <= atol * max(1, max|x|)`` (see the class docstring)."""
        require_square(self, x, _SQUARE_HINT)
        return _scaled_gap(x, mT(x), atol)

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """``(G + Gᵀ)/√2``, ``G`` standard normal (the Gaussian orthogonal ensemble)."""
        g = jax.random.normal(key, tuple(shape), dtype)
        require_square(self, g, _SQUARE_HINT)
        return ((widen(g) + mT(widen(g))) / jnp.sqrt(2.0)).astype(dtype)


class Skew(_Triangle):
    r"""Skew-symmetric matrices ``A = -Aᵀ`` from one strict triangle of the raw ``X``.

    ``lower=False`` (the default, the PyTorch tutorial's ``Skew``): ``X -> U - Uᵀ`` with
    ``U = triu(X, 1)``, ``right_inverse(A) = triu(A, 1)``. ``lower=True`` (geotorch's default,
    ``Skew(lower=True)``, and the Skew of PyTorch's own test suite): ``X -> L - Lᵀ`` with
    ``L = tril(X, -1)``, ``right_inverse(A) = tril(A, -1)``. The two give different values for
    the same raw input (``Skew(lower=True)(X) = -Skew()(Xᵀ)``). The diagonal and the other
    triangle of ``X`` are ignored. The right inverse is exact for skew-symmetric ``A``.

    Shapes: ``(..., n, n)``, real or complex (``A = -Aᵀ``, not skew-Hermitian).

    ``in_manifold(x, atol=None)``: ``max|x + xᵀ| <= atol * max(1, max|x|)`` over the whole
    array (relative to the largest entry, absolute below 1; non-strict; the diagonal must be 0
    to that tolerance).

    ``sample(key, shape, dtype)``: ``(G - Gᵀ)/√2`` with ``G`` standard normal: off-diagonal
    entries ``N(0, 1)`` (independent up to the sign symmetry), zero diagonal.

    >>> import jax.numpy as jnp
    >>> from parametrax import Skew, skew
    >>> x = jnp.arange(9.0).reshape(3, 3)
    >>> S = skew(x)                          # the strict upper triangle
    >>> bool(jnp.all(S == -S.T)), S[0, 1].item()
    (True, 1.0)
    >>> Skew(lower=True)(x)[1, 0].item()     # the strict lower triangle
    3.0
    """

    broadcasts = ExactClassBroadcasts()
    __repr__ = _Triangle.__repr__

    def forward(self, x: Array) -> Array:
        require_square(self, x, _SQUARE_HINT)
        a = _tri(x, self.lower, 1)
        return a - mT(a)

    def right_inverse(self, value: Array) -> Array:
        require_square(self, value, _SQUARE_HINT)
        return _tri(value, self.lower, 1)

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """``max|x + xᵀ| <= atol * max(1, max|x|)`` (see the class docstring)."""
        require_square(self, x, _SQUARE_HINT)
        return _scaled_gap(x, -mT(x), atol)

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """``(G - Gᵀ)/√2``, ``G`` standard normal (zero diagonal, off-diagonal ``N(0, 1)``)."""
        g = jax.random.normal(key, tuple(shape), dtype)
        require_square(self, g, _SQUARE_HINT)
        return ((widen(g) - mT(widen(g))) / jnp.sqrt(2.0)).astype(dtype)


symmetric = Symmetric()
skew = Skew()
