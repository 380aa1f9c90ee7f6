r"""Projection after the step (Keras's ``kernel_constraint``), as an optax transform.

parametrax's usual semantics *reparametrize*: the model stores raw values and reads
``forward(raw)``, so the constraint holds by construction. Some users want Keras's semantics
instead: the parameters *are* the constrained values, the optimizer steps on them freely, and
each step ends by projecting them back onto the set. :func:`project` gives that as an optax
``GradientTransformation``: chained after any optimizer, its update makes

    params + updates == projection(params + raw_updates)

for the leaves the ``spec`` names (``{path_or_glob: chain}``, as in :mod:`parametrax.tree`),
and leaves every other update untouched. (``optax.apply_updates`` adds the two, so the new
parameters equal the projection up to one floating-point rounding per entry.)

The projection of a chain is its ``forward ∘ right_inverse``, registration included (exactly
what :func:`parametrax.tree.register` followed by :func:`parametrax.tree.constrain` computes):
the catalog's projections, shared with the reparametrized path. That is a true projection
(idempotent, the identity on the set) for the entries whose right inverse projects: the three
Keras constraints below, ``SphereEmbedded``, ``Stiefel`` / ``Orthogonal`` (the polar factor),
``LowerTriangular``, ``CorrelationCholesky``, ``Hurwitz`` (a documented shift), ... Each
entry's docstring says what its right inverse does off the set; an entry without a right
inverse gives ``forward(value)``, which is generally not a projection.

Keras's three classics, ready to use (each a :class:`parametrax.Parametrization` whose
``forward`` is the projection itself and whose right inverse is the identity, so it also works
in a reparametrizing spec):

* :func:`max_norm` (:class:`MaxNorm`): vectors along ``axis`` of norm at most ``max_value``;
* :func:`unit_norm` (:class:`UnitNorm`): vectors along ``axis`` of norm 1;
* :func:`non_neg` (:class:`NonNeg`): entries ``>= 0``.

Keras's default ``axis=0`` is kept: for a Flax ``Dense`` kernel ``(in, out)`` it constrains
each output unit's incoming weight vector. Only :func:`project` needs optax, and this module
imports it only inside :func:`project`: it is not a run-time dependency of parametrax's own
code (flax itself depends on optax, so it is installed wherever parametrax is).

>>> import jax.numpy as jnp, optax
>>> from parametrax import projections
>>> params = {"w": jnp.array([[3.0, 0.0], [4.0, 0.1]])}
>>> tx = optax.chain(optax.sgd(0.1), projections.project({"w": projections.max_norm(1.0)}))
>>> state = tx.init(params)
>>> grads = {"w": jnp.zeros((2, 2))}
>>> updates, state = tx.update(grads, state, params)
>>> new = optax.apply_updates(params, updates)
>>> bool(jnp.all(jnp.linalg.norm(new["w"], axis=0) <= 1.0 + 1e-6))
True
>>> new["w"][:, 1].tolist()   # a column already inside the ball is kept
[0.0, 0.10000000149011612]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp

from parametrax import tree as _tree
from parametrax._core import Parametrization
from parametrax._errors import ParametrizationError
from parametrax._numerics import (
    check_axis_field,
    default_atol,
    normalize_axes,
    require_inexact,
    safe_norm,
)

__all__ = [
    "project",
    "project_params",
    "ProjectState",
    "max_norm",
    "unit_norm",
    "non_neg",
    "MaxNorm",
    "UnitNorm",
    "NonNeg",
]

Array = jax.Array


# ------------------------------------------------------------------------------------------------
# Keras's constraints
# ------------------------------------------------------------------------------------------------
class _AlongAxis(Parametrization):
    """What the norm constraints share: their ``axis`` field (declared by each, so that
    ``MaxNorm(max_value, axis)`` keeps Keras's argument order) is the axis (or axes) the norm
    runs over: an int, a tuple of ints, or None for the whole tensor."""

    if TYPE_CHECKING:  # each subclass declares the field itself (for its argument order)

        @property
        def axis(self) -> int | tuple[int, ...] | None: ...

    def __post_init__(self):
        check_axis_field(self, allow_none=True)

    def _norm(self, x: Array) -> Array:
        require_inexact(self, x, real=True)
        return safe_norm(x, axis=normalize_axes(self, self.axis, x.shape), keepdims=True)


class MaxNorm(_AlongAxis):
    r"""Vectors along ``axis`` of norm at most ``max_value`` (Keras's ``MaxNorm``).

    ``forward(w) = w * min(1, max_value / ||w||)``: the Euclidean projection onto the ball
    (a vector inside it is returned exactly; Keras multiplies every vector by
    ``min(||w||, max_value) / (eps + ||w||)``, which shrinks those inside by a factor
    ``1 - eps/||w||``). ``right_inverse`` is the identity. Shapes: any.

    ``in_manifold(x, atol)``: every norm is ``<= max_value + atol * max(1, max_value)``.
    ``sample``: a standard normal array, projected.

    Args:
      max_value: the largest norm, a positive float (Keras's default 2).
      axis: the axis or axes of the norm (Keras's default 0), or None for the whole tensor.

    >>> import jax.numpy as jnp
    >>> MaxNorm(2.0, axis=-1)(jnp.array([[3.0, 4.0], [1.0, 0.0]])).tolist()
    [[1.2000000476837158, 1.600000023841858], [1.0, 0.0]]
    """

    max_value: float = 2.0
    axis: int | tuple[int, ...] | None = 0

    def __post_init__(self):
        m = self.max_value
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m < float("inf"):
            raise ParametrizationError(
                f"`MaxNorm`: `max_value` must be a positive finite float; got {m!r}."
            )
        super().__post_init__()

    def forward(self, x: Array) -> Array:
        n = self._norm(x)
        over = n > self.max_value
        scale = jnp.where(over, self.max_value / jnp.where(over, n, 1.0), 1.0)
        return x * scale.astype(x.dtype)

    def right_inverse(self, value: Array) -> Array:
        return value

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """Every norm along ``axis`` is ``<= max_value + atol * max(1, max_value)``."""
        atol = default_atol(x.dtype) if atol is None else atol
        return jnp.all(self._norm(x) <= self.max_value + atol * max(1.0, self.max_value))

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """A standard normal array, projected onto the ball."""
        return self.forward(jax.random.normal(key, tuple(shape), dtype))


class UnitNorm(_AlongAxis):
    r"""Vectors along ``axis`` of unit norm (Keras's ``UnitNorm``).

    ``forward(w) = w / ||w||`` (the Euclidean projection onto the unit sphere; Keras divides by
    ``eps + ||w||``). A zero vector stays zero (it has no nearest unit vector; its gradient is
    0, not NaN), so it is off the set. ``right_inverse`` is the identity. Shapes: any.
    :class:`parametrax.SphereEmbedded` is the same map with ``radius`` and the default
    ``axis=-1``.

    ``in_manifold(x, atol)``: every norm is within ``atol`` of 1. ``sample``: a normalised
    standard normal array (uniform on the sphere).

    >>> import jax.numpy as jnp
    >>> UnitNorm()(jnp.array([[3.0, 0.0], [4.0, 2.0]])).tolist()
    [[0.6000000238418579, 0.0], [0.800000011920929, 1.0]]
    """

    axis: int | tuple[int, ...] | None = 0

    def forward(self, x: Array) -> Array:
        n = self._norm(x)
        return x / jnp.where(n > 0, n, jnp.ones_like(n))

    def right_inverse(self, value: Array) -> Array:
        return value

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """Every norm along ``axis`` is within ``atol`` of 1."""
        atol = default_atol(x.dtype) if atol is None else atol
        return jnp.all(jnp.abs(self._norm(x) - 1) <= atol)

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """Uniform on the unit sphere (a normalised Gaussian)."""
        return self.forward(jax.random.normal(key, tuple(shape), dtype))


class NonNeg(Parametrization):
    r"""Non-negative entries (Keras's ``NonNeg``): ``forward(w) = max(w, 0)``.

    The Euclidean projection onto the non-negative orthant (Keras multiplies by ``w >= 0``,
    the same values). ``right_inverse`` is the identity. As a *reparametrization* its gradient
    is 0 wherever ``w < 0``, so entries that go negative stop training: use
    :class:`parametrax.Positive` to reparametrize, ``NonNeg`` to project. Shapes: any.

    ``in_manifold(x)``: ``all(x >= 0)`` (exact: ``atol`` is not used). ``sample``: the absolute
    value of a standard normal array.

    >>> import jax.numpy as jnp
    >>> NonNeg()(jnp.array([-1.0, 0.0, 2.0])).tolist()
    [0.0, 0.0, 2.0]
    """

    def forward(self, x: Array) -> Array:
        require_inexact(self, x, real=True)
        return jnp.maximum(x, jnp.zeros((), x.dtype))

    def right_inverse(self, value: Array) -> Array:
        return value

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """``all(x >= 0)`` (``atol`` is not used)."""
        del atol
        return jnp.all(x >= 0)

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """``|z|``, ``z`` standard normal."""
        return jnp.abs(jax.random.normal(key, tuple(shape), dtype))


def max_norm(max_value: float = 2.0, axis: int | tuple[int, ...] | None = 0) -> MaxNorm:
    """Keras's ``max_norm``: :class:`MaxNorm` (``axis=0``: each column of a Dense kernel)."""
    return MaxNorm(max_value=max_value, axis=axis)


def unit_norm(axis: int | tuple[int, ...] | None = 0) -> UnitNorm:
    """Keras's ``unit_norm``: :class:`UnitNorm` (``axis=0``: each column of a Dense kernel)."""
    return UnitNorm(axis=axis)


def non_neg() -> NonNeg:
    """Keras's ``non_neg``: :class:`NonNeg`."""
    return NonNeg()


# ------------------------------------------------------------------------------------------------
# The projection of a tree, and the optax transform
# ------------------------------------------------------------------------------------------------
def project_params(spec: Any, params: Any, *, key: Array | None = None) -> Any:
    """The tree ``params`` with every leaf the ``spec`` names replaced by its projection
    ``forward(right_inverse(leaf))`` (through each chain, registration included: see the module
    docstring); other leaves are returned as they are (the same objects). Jit-friendly.

    Args:
      spec: ``{path_or_glob: parametrization or chain}``, as for :func:`parametrax.tree.register`.
      params: any pytree of arrays.
      key: a PRNG key for the links that own variables (their registration draws from it);
        default ``jax.random.key(0)``.
    """
    key = jax.random.key(0) if key is None else key
    raw, state = _tree.register(spec, params, key=key)
    return _tree.constrain(spec, raw, state)


class ProjectState(NamedTuple):
    """The state of :func:`project`: nothing (projections keep no state between steps)."""


def project(spec: Any, *, key: Array | None = None):
    """An optax ``GradientTransformation`` that projects the updated parameters onto the sets
    of ``spec`` after each step (Keras's ``kernel_constraint`` semantics).

    Chain it *after* the optimizer: ``optax.chain(optax.adam(1e-3), project(spec))``. Its
    ``update(updates, state, params)`` needs ``params`` and returns, for each leaf the spec
    names, ``projection(params + updates) - params`` (so that ``optax.apply_updates`` lands on
    the projection), and every other update unchanged. The projection is
    :func:`project_params` (``forward ∘ right_inverse`` of each chain, see the module
    docstring), evaluated once per step. Imports optax on first call (optax is not a run-time
    dependency of parametrax).

    Args:
      spec: ``{path_or_glob: parametrization or chain}``, e.g. ``{"**/kernel": max_norm(3.0)}``;
        the paths are those of the params tree the optimizer updates. A key that matches no
        leaf is an error (raised at the first ``update``).
      key: a PRNG key for chains whose links own variables (default ``jax.random.key(0)``),
        the same at every step.

    Raises:
      ParametrizationError: at ``update`` when ``params`` is not given.
    """
    try:
        import optax
    except ImportError as e:  # pragma: no cover - optax is a test dependency here
        raise ImportError(
            "parametrax.projections.project builds an optax GradientTransformation and needs "
            "optax: `pip install optax`."
        ) from e
    from parametrax.tree import Spec

    spec = Spec.of(spec)  # a bad spec fails here, not at the first step

    def init_fn(params):
        del params
        return ProjectState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ParametrizationError(
                "`parametrax.projections.project` needs the current parameters to project the "
                "updated ones: call `tx.update(updates, state, params)` (with `optax.chain`, "
                "pass `params` to the chain's update)."
            )
        new = jax.tree.map(
            lambda p, u: jnp.asarray(p + u).astype(jnp.asarray(p).dtype), params, updates
        )
        projected = project_params(spec, new, key=key)
        # A leaf the spec does not name comes back as the very object given (see
        # project_params): its update is passed through untouched, bit for bit.
        out = jax.tree.map(
            lambda u, p, n, q: u if q is n else (q - p).astype(jnp.asarray(u).dtype),
            updates,
            params,
            new,
            projected,
        )
        return out, state

    return optax.GradientTransformation(init_fn, update_fn)
