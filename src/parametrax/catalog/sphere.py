"""Spheres: vectors (rows, columns, or whole tensors) of a fixed norm (geotorch's ``Sphere`` and
``SphereEmbedded``).

``axis`` names the axes the norm is taken over, as in ``jnp.linalg.norm``: ``-1`` (default)
makes every vector along the last axis a point of the sphere (the rows of a matrix), ``-2`` the
columns (each output unit's weight vector of a Flax ``(in, out)`` Dense kernel), ``(-2, -1)``
every matrix, ``None`` the whole tensor. Use negative axes so that extra leading (batch) axes
broadcast; ``axis=None`` normalises everything, batch axes included.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from parametrax._core import Parametrization, Variables
from parametrax._errors import ParametrizationError, ShapeError, describe
from parametrax._numerics import (
    check_axis_field,
    default_atol,
    normalize_axes,
    require_inexact,
    safe_norm,
    widen,
)

__all__ = ["Sphere", "SphereEmbedded"]

Array = jax.Array


class _SphereBase(Parametrization):
    """The fields both spheres share: ``radius`` (positive) and ``axis`` (the module docstring)."""

    radius: float = 1.0
    axis: int | tuple[int, ...] | None = -1

    def __post_init__(self):
        r = self.radius
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0:
            raise ParametrizationError(
                f"{describe(self)}: `radius` must be a positive float; got {r!r}."
            )
        check_axis_field(self, allow_none=True)

    def _axes(self, x: Array) -> tuple[int, ...]:
        require_inexact(self, x, real=True)
        return normalize_axes(self, self.axis, x.shape)

    def _norm(self, x: Array) -> Array:
        """The norm over ``axis`` in at least float32 (not cast back)."""
        return safe_norm(widen(x), axis=self._axes(x), keepdims=True)

    def _canonical(self, x: Array) -> Array:
        """``e_0`` along ``axis`` (the first coordinate vector), broadcast to ``x``'s shape."""
        axes = self._axes(x)
        idx = jnp.ones((), bool)
        for a in axes:
            shape = [1] * x.ndim
            shape[a] = x.shape[a]
            idx = idx & (jnp.arange(x.shape[a]).reshape(shape) == 0)
        return jnp.broadcast_to(idx, x.shape).astype(x.dtype)

    def _unit(self, x: Array) -> Array:
        """``x / |x|`` over ``axis``, in at least float32 (not cast back); ``e_0`` where the
        vector is zero. Scaled by its largest entry first, so that no finite vector underflows
        to a zero norm or overflows to an infinite one (the map is scale-invariant, so the
        scale carries no gradient)."""
        axes = self._axes(x)
        xw = widen(x)
        m = lax.stop_gradient(jnp.max(jnp.abs(xw), axis=axes, keepdims=True))
        zero = m == 0
        y = xw / jnp.where(zero, jnp.ones_like(m), m)
        n = safe_norm(y, axis=axes, keepdims=True)
        u = y / jnp.where(n > 0, n, jnp.ones_like(n))
        return jnp.where(zero, self._canonical(xw), u)

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """Membership: every vector along ``axis`` has norm ``radius`` to
        ``atol * max(1, radius)`` (relative to the radius, absolute below radius 1; non-strict;
        default ``atol`` ``default_atol(x.dtype)``). A zero vector is out."""
        atol = default_atol(x.dtype) if atol is None else atol
        err = jnp.abs(self._norm(x) - self.radius)
        return jnp.all(err <= atol * max(1.0, float(self.radius)))

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """Uniform on the sphere (a normalised Gaussian), scaled by ``radius``."""
        g = jax.random.normal(key, tuple(shape), dtype)
        return (self.radius * self._unit(g)).astype(dtype)


class SphereEmbedded(_SphereBase):
    r"""The sphere by projection: ``x -> radius * x / ||x||`` (norm over ``axis``).

    Shapes: any; ``axis`` as in the module docstring. ``right_inverse(y) = y`` is exact on the
    sphere (it projects any other non-zero value). A zero vector has no direction: it maps to
    the fixed point ``radius * e_0`` (the first coordinate vector along ``axis``), and its right
    inverse is ``radius * e_0``, so a zero initial value (``kernel_init=zeros``) registers on
    the sphere with a raw value the gradient reaches (geotorch returns the zero vector, off the
    sphere). Every finite raw value maps onto the sphere: the norm is taken after scaling by
    the largest entry (no underflow of tiny vectors, no overflow of huge ones). bfloat16 /
    float16 are computed in float32. geotorch's ``SphereEmbedded``.

    >>> import jax.numpy as jnp
    >>> from parametrax.catalog.sphere import SphereEmbedded
    >>> y = SphereEmbedded(radius=2.0)(jnp.array([[3.0, 4.0], [1.0, 0.0]]))
    >>> y.tolist()
    [[1.2000000476837158, 1.600000023841858], [2.0, 0.0]]
    """

    def forward(self, x: Array) -> Array:
        return (self.radius * self._unit(x)).astype(x.dtype)

    def right_inverse(self, value: Array) -> Array:
        self._axes(value)
        zero = self._norm(value) == 0
        return jnp.where(zero, self.radius * self._canonical(value), value).astype(value.dtype)


class Sphere(_SphereBase):
    r"""The sphere by the exponential map at a base point ``b`` (state, unit norm):

    ``y = radius * (cos(|v|) b + sin(|v|) v / |v|)``, ``v = x - <x, b> b``

    (the raw ``x`` projected onto the tangent space at ``b``; norms and inner products over
    ``axis``). ``apply_inverse`` moves ``b`` to ``value / |value|`` and returns raw zeros: exact
    on the sphere. ``update_base`` moves ``b`` to the current point. Gradients are finite at
    ``v = 0`` (``sinc`` and a safe norm). geotorch's ``Sphere``.

    Shapes: any; ``axis`` as in the module docstring. Without state, :meth:`forward` uses the
    base ``b = e_0`` (the first coordinate vector along ``axis``). A zero value has no
    direction: ``apply_inverse`` keeps the old base there (``e_0`` at registration), a point of
    the sphere. bfloat16 / float16 are computed in float32 (the base is stored in the value's
    dtype).
    """

    def init_variables(self, key: Array, value: Array) -> Variables:
        del key
        return {"params": {}, "state": {"base": self._canonical(value)}}

    def _exp(self, base: Array, x: Array) -> Array:
        axes = self._axes(x)
        try:
            ok = jnp.broadcast_shapes(base.shape, x.shape) == tuple(x.shape)
        except ValueError:
            ok = False
        if not ok:
            raise ShapeError(
                f"{describe(self)}: the base point `state['base']` has shape "
                f"{tuple(base.shape)}; expected {tuple(x.shape)}, the raw array's shape (or a "
                "shape that broadcasts to it)."
            )
        x, base = widen(x), widen(base)  # half dtypes: computed in float32, not cast back
        v = x - jnp.sum(x * base, axis=axes, keepdims=True) * base
        t = safe_norm(v, axis=axes, keepdims=True)
        return jnp.cos(t) * base + jnp.sinc(t / jnp.pi) * v

    def apply(self, variables: Variables, x: Array, *, update_state: bool = False):
        del update_state
        y = self.radius * self._exp(variables["state"]["base"], x)
        return y.astype(x.dtype), variables["state"]

    def forward(self, x: Array) -> Array:
        return (self.radius * self._exp(self._canonical(x), x)).astype(x.dtype)

    def apply_inverse(self, variables: Variables, value: Array, *, key=None):
        del key
        old = variables["state"]["base"]
        unit = self._unit(value)
        # A zero vector has no direction: keep the old base there (on the sphere).
        zero = self._norm(value) == 0
        base = jnp.where(zero, widen(old), unit).astype(old.dtype)
        return jnp.zeros_like(value), {**variables["state"], "base": base}

    def right_inverse(self, value: Array) -> Array:
        raise NotImplementedError(
            f"{describe(self)} keeps its base point as state: assign through `apply_inverse` "
            "(registration and `assign` do). For a stateless sphere use `SphereEmbedded`."
        )

    def update_base(self, variables: Variables, x: Array):
        """``(zeros, state with base <- current point / radius)``; the value is unchanged."""
        base = variables["state"]["base"]
        y = self._exp(base, x)
        return jnp.zeros_like(x), {**variables["state"], "base": self._unit(y).astype(base.dtype)}
