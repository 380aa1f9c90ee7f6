"""Elementwise and vector constraints: ``Positive``, ``Interval``, ``Simplex``, ``LowerTriangular``,
``Cholesky``, ``Ordered`` (the constraints TFP's bijectors and numpyro's ``constraints`` offer).

All are stateless (plain ``forward`` / ``right_inverse``), keep shape and dtype, and have exact
inverses on their sets: ``forward(right_inverse(y)) == y`` up to rounding, including for very
large and very small positive values (the inverse softplus is computed stably, see
:func:`parametrax.catalog._scalar.inv_softplus`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from parametrax._core import Parametrization, describe
from parametrax._errors import ParametrizationError, ParametrizationTypeError, ShapeError
from parametrax.catalog import _scalar as S
from parametrax.catalog import _trivialization as T

__all__ = ["Positive", "Interval", "Simplex", "LowerTriangular", "Cholesky", "Ordered"]

Array = jax.Array

_POSITIVE_FS = ("softplus", "exp")


def _check_axis(owner: str, axis) -> None:
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise ParametrizationTypeError(f"`{owner}`: `axis` must be an int; got {axis!r}.")


def _norm_axis(p, x: Array, axis: int) -> int:
    T.require_real_float(p, x)
    if x.ndim == 0 or not -x.ndim <= axis < x.ndim:
        raise ShapeError(
            f"{describe(p)}: `axis`={axis} is out of range for an array of shape "
            f"{tuple(x.shape)} ({x.ndim} dimension(s))."
        )
    return axis % x.ndim


def _floor(y: Array) -> Array:
    """``max(y, tiny)``: keeps every positive normal number (so inverses stay exact on the set)
    and turns values <= 0 into the smallest positive one, whose raw value is finite."""
    return jnp.maximum(y, jnp.finfo(y.dtype).tiny)


def _atol(x: Array, atol):
    return T.default_atol(x.dtype) if atol is None else atol


@dataclasses.dataclass(frozen=True)
class Positive(Parametrization):
    r"""Positive values: ``x -> f(x)`` with ``f`` ``"softplus"`` (default) or ``"exp"`` (or a
    callable / ``(f, f_inverse)`` pair onto ``(0, inf)``).

    Shapes: any. ``right_inverse`` is the exact inverse on ``y > 0`` (``log`` or the stable
    inverse softplus, exact down to the smallest normal number). Values ``<= 0`` are first
    raised to that smallest number, so registering a kernel with negative entries gives finite
    but nearly dead raw values there: register on positive values, or assign a ``sample``.

    >>> import jax.numpy as jnp
    >>> from parametrax.catalog.constraints import Positive
    >>> p = Positive()
    >>> y = jnp.array([1e-20, 1.0, 1e4])
    >>> bool(jnp.allclose(p(p.right_inverse(y)), y, rtol=1e-6))
    True
    """

    f: str | Callable | tuple = "softplus"

    def __post_init__(self):
        S.check_scalar_map("Positive", "f", self.f, _POSITIVE_FS)

    def forward(self, x: Array) -> Array:
        T.require_real_float(self, x)
        return S.resolve_scalar_map(self.f).f(x)

    def right_inverse(self, value: Array) -> Array:
        T.require_real_float(self, value)
        return S.inverse_or_raise("Positive", S.resolve_scalar_map(self.f))(_floor(value))

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """``all(x > 0)`` (a strict inequality: ``atol`` is not used)."""
        del atol
        return jnp.all(x > 0)

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """``f(z)``, ``z`` standard normal."""
        return self.forward(jax.random.normal(key, tuple(shape), dtype))


@dataclasses.dataclass(frozen=True)
class Interval(Parametrization):
    r"""Values in the open interval ``(low, high)``: ``x -> low + (high - low) sigmoid(x)``.

    Shapes: any. ``right_inverse(y) = logit((y - low) / (high - low))``, exact inside the
    interval; values at or beyond its ends are first moved to the nearest representable
    interior fraction (finite raw values).

    >>> import jax.numpy as jnp
    >>> from parametrax.catalog.constraints import Interval
    >>> Interval(-1.0, 3.0)(jnp.array([-50.0, 0.0, 50.0])).tolist()
    [-1.0, 1.0, 3.0]
    """

    low: float
    high: float

    def __post_init__(self):
        for name in ("low", "high"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ParametrizationTypeError(
                    f"`Interval`: `{name}` must be a Python float; got {type(v).__name__} {v!r} "
                    "(arrays are not hashable configuration)."
                )
        if not self.low < self.high:
            raise ParametrizationError(
                f"`Interval`: needs `low` < `high`; got low={self.low!r}, high={self.high!r}."
            )

    def forward(self, x: Array) -> Array:
        T.require_real_float(self, x)
        return self.low + (self.high - self.low) * jax.nn.sigmoid(x)

    def right_inverse(self, value: Array) -> Array:
        T.require_real_float(self, value)
        p = (value - self.low) / (self.high - self.low)
        p = jnp.clip(p, jnp.finfo(p.dtype).tiny, 1 - jnp.finfo(p.dtype).epsneg)
        return jnp.log(p) - jnp.log1p(-p)

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """``all(low < x < high)`` (strict: ``atol`` is not used)."""
        del atol
        return jnp.all((x > self.low) & (x < self.high))

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """Uniform on ``(low, high)``."""
        u = jax.random.uniform(key, tuple(shape), dtype, minval=1e-3, maxval=1.0 - 1e-3)
        return self.low + (self.high - self.low) * u


@dataclasses.dataclass(frozen=True)
class Simplex(Parametrization):
    r"""The open probability simplex along ``axis``: ``x -> softmax(x, axis)``.

    Shapes: any with at least one dimension. ``right_inverse(y) = log y - mean(log y)`` (the
    zero-sum representative: exact for ``y > 0`` summing to 1). The raw array keeps the value's
    shape, so it carries one redundant degree of freedom per vector (the softmax ignores shifts).
    """

    axis: int = -1

    def __post_init__(self):
        _check_axis("Simplex", self.axis)

    def forward(self, x: Array) -> Array:
        return jax.nn.softmax(x, axis=_norm_axis(self, x, self.axis))

    def right_inverse(self, value: Array) -> Array:
        ax = _norm_axis(self, value, self.axis)
        logp = jnp.log(jnp.maximum(value, jnp.finfo(value.dtype).tiny))
        return logp - jnp.mean(logp, axis=ax, keepdims=True)

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """``x > 0`` and every vector sums to 1 to ``atol``."""
        ax = _norm_axis(self, x, self.axis)
        return jnp.all(x > 0) & jnp.all(jnp.abs(jnp.sum(x, axis=ax) - 1) <= _atol(x, atol))

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """Uniform on the simplex (``Dirichlet(1, ..., 1)``, via normalised exponentials)."""
        shape = tuple(shape)
        _norm_axis(self, jax.ShapeDtypeStruct(shape, dtype), self.axis)
        e = jax.random.exponential(key, shape, dtype)
        return e / jnp.sum(e, axis=self.axis, keepdims=True)


@dataclasses.dataclass(frozen=True)
class LowerTriangular(Parametrization):
    r"""Lower-triangular matrices: ``x -> tril(x)`` on the last two axes (any ``n x k``).

    ``right_inverse = tril`` (exact on the set). The strict upper triangle of the raw array is
    unused (zero gradient).
    """

    def forward(self, x: Array) -> Array:
        T.require_matrix(self, x)
        return jnp.tril(x)

    def right_inverse(self, value: Array) -> Array:
        T.require_matrix(self, value)
        return jnp.tril(value)

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """``max |triu(x, 1)| <= atol``."""
        T.require_matrix(self, x)
        return T.max_abs(jnp.triu(x, 1)) <= _atol(x, atol)

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """``tril`` of a standard normal matrix."""
        return self.forward(jax.random.normal(key, tuple(shape), dtype))


@dataclasses.dataclass(frozen=True)
class Cholesky(Parametrization):
    r"""Cholesky factors: lower-triangular square matrices with a positive diagonal,
    ``x -> tril(x, -1) + diag(f(diag x))`` (``f``: ``"softplus"`` default, or ``"exp"``).

    Shapes ``(..., n, n)``. ``right_inverse`` replaces the diagonal by ``f^{-1}`` of it (exact
    for a positive diagonal; entries ``<= 0`` are first raised to the smallest normal number).
    ``L Lᵀ`` then ranges over the positive definite matrices (TFP's ``FillScaleTriL`` without
    the vector packing).
    """

    f: str | Callable | tuple = "softplus"

    def __post_init__(self):
        S.check_scalar_map("Cholesky", "f", self.f, _POSITIVE_FS)

    def _diag_map(self, x: Array, fn) -> Array:
        T.require_square(self, x)
        n = x.shape[-1]
        d = jnp.diagonal(x, axis1=-2, axis2=-1)
        idx = jnp.arange(n)
        return jnp.tril(x, -1).at[..., idx, idx].set(fn(d))

    def forward(self, x: Array) -> Array:
        return self._diag_map(x, S.resolve_scalar_map(self.f).f)

    def right_inverse(self, value: Array) -> Array:
        inv = S.inverse_or_raise("Cholesky", S.resolve_scalar_map(self.f))
        return self._diag_map(value, lambda d: inv(_floor(d)))

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """Square, ``max |triu(x, 1)| <= atol`` and ``diag(x) > 0``."""
        T.require_square(self, x)
        return (T.max_abs(jnp.triu(x, 1)) <= _atol(x, atol)) & jnp.all(
            jnp.diagonal(x, axis1=-2, axis2=-1) > 0
        )

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """``forward`` of a standard normal matrix."""
        return self.forward(jax.random.normal(key, tuple(shape), dtype))


@dataclasses.dataclass(frozen=True)
class Ordered(Parametrization):
    r"""Strictly increasing vectors along ``axis``:
    ``y_0 = x_0``, ``y_i = y_{i-1} + f(x_i)`` (``f``: ``"softplus"`` default, or ``"exp"`` as
    TFP's ``Ascending``).

    Shapes: any with at least one dimension. ``right_inverse``: ``x_0 = y_0``,
    ``x_i = f^{-1}(y_i - y_{i-1})`` (exact for increasing ``y``; non-increasing steps are first
    raised to the smallest normal number, so the raw value stays finite).
    """

    axis: int = -1
    f: str | Callable | tuple = "softplus"

    def __post_init__(self):
        _check_axis("Ordered", self.axis)
        S.check_scalar_map("Ordered", "f", self.f, _POSITIVE_FS)

    def forward(self, x: Array) -> Array:
        ax = _norm_axis(self, x, self.axis)
        x = jnp.moveaxis(x, ax, -1)
        steps = S.resolve_scalar_map(self.f).f(x[..., 1:])
        y = jnp.concatenate([x[..., :1], x[..., :1] + jnp.cumsum(steps, axis=-1)], axis=-1)
        return jnp.moveaxis(y, -1, ax)

    def right_inverse(self, value: Array) -> Array:
        ax = _norm_axis(self, value, self.axis)
        y = jnp.moveaxis(value, ax, -1)
        inv = S.inverse_or_raise("Ordered", S.resolve_scalar_map(self.f))
        x = jnp.concatenate([y[..., :1], inv(_floor(jnp.diff(y, axis=-1)))], axis=-1)
        return jnp.moveaxis(x, -1, ax)

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """``all(diff(x, axis) > 0)`` (strict: ``atol`` is not used)."""
        del atol
        ax = _norm_axis(self, x, self.axis)
        return jnp.all(jnp.diff(x, axis=ax) > 0)

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """Sorted standard normal draws (the order statistics)."""
        ax = _norm_axis(self, jax.ShapeDtypeStruct(tuple(shape), dtype), self.axis)
        return jnp.sort(jax.random.normal(key, tuple(shape), dtype), axis=ax)
