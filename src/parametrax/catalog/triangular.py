"""Triangular matrices: ``LowerTriangular`` and ``Cholesky`` (tril with a positive diagonal)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from parametrax._core import Parametrization
from parametrax._numerics import (
    POSITIVE_MAPS,
    check_scalar_map,
    default_atol,
    has_inverse,
    inverse_or_raise,
    max_abs,
    positive_image,
    raise_into,
    require_matrix,
    require_square,
    resolve_scalar_map,
)

__all__ = ["LowerTriangular", "Cholesky"]

Array = jax.Array


class LowerTriangular(Parametrization):
    r"""Lower-triangular matrices: ``x -> tril(x)`` on the last two axes (any ``n x k``).

    ``right_inverse = tril`` (exact on the set). The strict upper triangle of the raw array is
    unused (zero gradient).
    """

    def forward(self, x: Array) -> Array:
        require_matrix(self, x, real=True)
        return jnp.tril(x)

    def right_inverse(self, value: Array) -> Array:
        require_matrix(self, value, real=True)
        return jnp.tril(value)

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """Membership: ``max |triu(x, 1)| <= atol`` over the whole array (absolute, non-strict,
        default ``default_atol(x.dtype)``)."""
        require_matrix(self, x, real=True)
        return max_abs(jnp.triu(x, 1)) <= (default_atol(x.dtype) if atol is None else atol)

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """``tril`` of a standard normal matrix."""
        return self.forward(jax.random.normal(key, tuple(shape), dtype))


class Cholesky(Parametrization):
    r"""Cholesky factors: lower-triangular square matrices with a positive diagonal,
    ``x -> tril(x, -1) + diag(f(diag x))`` (``f``: ``"softplus"`` default, or ``"exp"``).

    Shapes ``(..., n, n)``. ``forward`` clamps the diagonal ``f(diag x)`` to ``>= tiny`` (the
    smallest positive normal number; softplus / exp underflow to 0 below about -87 in float32),
    so every raw value maps onto a factor with a positive diagonal. ``right_inverse`` keeps the
    lower triangle and replaces the diagonal by ``f^{-1}`` of it (exact for a diagonal
    ``>= tiny``). Diagonal entries below ``tiny`` (``<= 0``: off the set) are first raised to
    ``m * max(1, max |tril(value)|)`` per matrix, ``m = interior_margin(dtype)`` (``1e-2``;
    ``0.2`` in half precision): strictly inside, with a raw value ``>= f^{-1}(m) = -4.6`` where
    gradients reach it. ``L Lᵀ`` then ranges over the positive definite matrices (TFP's
    ``FillScaleTriL`` without the vector packing).
    """

    f: str | Callable | tuple = "softplus"

    def __post_init__(self):
        check_scalar_map("Cholesky", "f", self.f, POSITIVE_MAPS)

    @property
    def has_right_inverse(self) -> bool:
        """False when ``f`` was given as a callable without its inverse."""
        return has_inverse(self.f)

    def _diag_map(self, x: Array, fn) -> Array:
        require_square(self, x, real=True)
        n = x.shape[-1]
        d = jnp.diagonal(x, axis1=-2, axis2=-1)
        idx = jnp.arange(n)
        return jnp.tril(x, -1).at[..., idx, idx].set(fn(d))

    def forward(self, x: Array) -> Array:
        f = resolve_scalar_map(self.f).f
        return self._diag_map(x, lambda d: positive_image(f(d)))

    def right_inverse(self, value: Array) -> Array:
        inv = inverse_or_raise("Cholesky", resolve_scalar_map(self.f))
        require_square(self, value, real=True)
        scale = jnp.max(jnp.abs(jnp.tril(value)), axis=(-2, -1), initial=0.0)[..., None]

        def diag(d):
            return inv(raise_into(d, ~(d >= jnp.finfo(d.dtype).tiny), scale))

        return self._diag_map(value, diag)

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """Membership: square, ``max |triu(x, 1)| <= atol`` (absolute, default
        ``default_atol(x.dtype)``) and ``diag(x) > 0`` (strict, exact)."""
        require_square(self, x, real=True)
        return (
            max_abs(jnp.triu(x, 1)) <= (default_atol(x.dtype) if atol is None else atol)
        ) & jnp.all(jnp.diagonal(x, axis1=-2, axis2=-1) > 0)

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """``forward`` of a standard normal matrix."""
        return self.forward(jax.random.normal(key, tuple(shape), dtype))
