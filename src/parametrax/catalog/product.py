r"""Products of parametrizations on blocks of one array: ``ProductManifold`` (geotorch's
``ProductManifold``, made one link of a chain).

geotorch's ``ProductManifold(manifolds)`` maps a *tuple* of tensors to a tuple of tensors. A
parametrax variable is one array, so here the product acts on contiguous **blocks of one
array**: the array is cut along ``axis`` into blocks of the given ``sizes``, part ``i``
constrains block ``i``, and the blocks are put back together. The set is the product
``M_1 x ... x M_k`` of the parts' sets, laid out side by side along ``axis``. (To constrain
several separate arrays, give each its own spec entry: that is the product already.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from parametrax import _core
from parametrax._core import Parametrization, Variables, as_parametrization, empty_variables
from parametrax._errors import (
    ParametrizationError,
    ParametrizationTypeError,
    RightInverseError,
    ShapeError,
    describe,
    with_context,
)
from parametrax._numerics import normalize_axes

__all__ = ["ProductManifold"]

Array = jax.Array


class ProductManifold(Parametrization):
    r"""Several parametrizations acting on blocks of one array, composed as one link.

    ``ProductManifold(parts, sizes, axis=-1)``: the value ``Y`` is cut along ``axis`` into
    consecutive blocks ``Y_1, ..., Y_k`` of lengths ``sizes`` (which must add up to the length
    of that axis), and::

        forward(X)        = concat_axis(p_1(X_1), ..., p_k(X_k))
        right_inverse(Y)  = concat_axis(p_1⁻¹(Y_1), ..., p_k⁻¹(Y_k))

    so the set is ``M_1 x ... x M_k`` (block ``i`` in the set of part ``i``) and the raw array
    has the value's shape. A part is a parametrization or ``None`` (the block is left
    unconstrained: the identity). Each part sees its block as a whole array, so a matrix part
    needs ``axis`` to be a batch axis or one of the matrix axes: e.g. ``sizes=(3, 2)`` on the
    last axis of a ``(5, 5)`` kernel gives the parts ``(5, 3)`` and ``(5, 2)`` blocks.

    * **State**: a part with variables (a base point, power-iteration vectors, a mask) keeps
      them under ``part{i}_{name}`` (``i`` the part's index), in ``params`` or ``state`` as the
      part made them; the link has variables only when some part has.
    * **Right inverse**: each part's ``apply_inverse`` on its block. A part without a right
      inverse counts as the identity at registration (as in a chain) and the product cannot be
      assigned through (``has_right_inverse`` is false).
    * ``update_base`` (dynamic trivialization) moves the base of every part that has one; the
      others keep their raw block.
    * ``in_manifold(x, atol=None)``: every block is in its part's set, by the part's own rule
      (``None`` parts: always); available only when every constrained part has
      ``in_manifold``. ``sample(key, shape, dtype)``: each block from its part's ``sample``
      (independent keys; ``None`` parts: standard normal); available only when every
      constrained part has ``sample``.
    * Errors: ``sizes`` that do not add up to the axis' length, an axis out of range, a part
      that refuses its block's shape (the part's own error, prefixed with the part and the
      block), and a part whose raw is several arrays (``WeightNorm``) or not of its block's
      shape: one raw array of the value's shape is stored.

    Args:
      parts: a tuple (or list) of parametrizations or ``None``, one per block.
      sizes: the blocks' lengths along ``axis`` (positive ints, one per part).
      axis: the axis that is cut (an int; default the last).

    >>> import jax, jax.numpy as jnp
    >>> import parametrax as px
    >>> p = px.ProductManifold((px.Simplex(), px.Positive(), None), sizes=(3, 2, 1))
    >>> y = p(jnp.zeros((2, 6)))                 # per row: a simplex, two positives, a free one
    >>> [round(float(v), 3) for v in y[0]]
    [0.333, 0.333, 0.333, 0.693, 0.693, 0.0]
    >>> bool(p.in_manifold(y))
    True
    >>> bool(jnp.allclose(p(p.right_inverse(y)), y))
    True
    """

    parts: tuple = ()
    sizes: tuple = ()
    axis: int = -1

    def __post_init__(self):
        parts, sizes = self.parts, self.sizes
        if not isinstance(parts, (tuple, list)) or not parts:
            raise ParametrizationTypeError(
                "`ProductManifold`: `parts` must be a non-empty tuple of parametrizations (or "
                f"None for an unconstrained block); got {parts!r}."
            )
        norm: list[Parametrization | None] = []
        for i, p in enumerate(parts):
            if p is None:
                norm.append(None)
            elif isinstance(p, (tuple, list)):
                raise ParametrizationTypeError(
                    f"`ProductManifold`: part {i} is a {type(p).__name__} (a chain); a part is "
                    "one parametrization or None. Chain after the product instead, or use the "
                    "entry that is the chain (e.g. `SO()` for `[Skew, Cayley]`)."
                )
            else:
                norm.append(as_parametrization(p))
        if isinstance(sizes, list):
            sizes = tuple(sizes)
        if not isinstance(sizes, tuple) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes
        ):
            raise ParametrizationTypeError(
                "`ProductManifold`: `sizes` must be a tuple of positive ints (the blocks' "
                f"lengths along `axis`); got {self.sizes!r}."
            )
        if len(sizes) != len(norm):
            raise ParametrizationError(
                f"`ProductManifold`: {len(norm)} part(s) but {len(sizes)} size(s) {sizes}; give "
                "one size per part."
            )
        if isinstance(self.axis, bool) or not isinstance(self.axis, int):
            raise ParametrizationTypeError(
                f"`ProductManifold`: `axis` must be an int; got {self.axis!r}."
            )
        object.__setattr__(self, "parts", tuple(norm))
        object.__setattr__(self, "sizes", sizes)

    # --- blocks ---------------------------------------------------------------------------------
    def _axis(self, x) -> int:
        (axis,) = normalize_axes(self, self.axis, x.shape)
        total = sum(self.sizes)
        if x.shape[axis] != total:
            raise ShapeError(
                f"{describe(self)}: `sizes`={self.sizes} add up to {total}, but axis "
                f"{self.axis} of the array of shape {tuple(x.shape)} has length "
                f"{x.shape[axis]}; the sizes must add up to that axis' length."
            )
        return axis

    def _blocks(self, x: Array) -> tuple[int, list[Array]]:
        axis = self._axis(x)
        cuts, start = [], 0
        for s in self.sizes[:-1]:
            start += s
            cuts.append(start)
        return axis, jnp.split(x, cuts, axis=axis)

    def _where(self, i: int, block: Array | jax.ShapeDtypeStruct) -> str:
        return (
            f"{describe(self)} part {i} ({describe(self.parts[i])}) on its block of shape "
            f"{tuple(block.shape)}"
        )

    def _call(self, i: int, block: Array | jax.ShapeDtypeStruct, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ParametrizationError as e:
            raise with_context(e, self._where(i, block)) from e.__cause__

    @staticmethod
    def _own(i: int, variables: Variables) -> Variables:
        prefix = f"part{i}_"
        return {
            kind: {
                k[len(prefix) :]: v
                for k, v in variables.get(kind, {}).items()
                if k.startswith(prefix)
            }
            for kind in ("params", "state")
        }

    @staticmethod
    def _prefixed(i: int, tree: dict) -> dict:
        return {f"part{i}_{k}": v for k, v in tree.items()}

    # --- the variables protocol -------------------------------------------------------------------
    @property
    def has_variables(self) -> bool:
        return any(p is not None and p.has_variables for p in self.parts)

    @property
    def has_right_inverse(self) -> bool:
        return all(p is None or p.has_right_inverse for p in self.parts)

    def init_variables(self, key: Array, value: Array) -> Variables:
        _, blocks = self._blocks(value)
        keys = jax.random.split(key, len(self.parts))
        out = empty_variables()
        for i, (p, block) in enumerate(zip(self.parts, blocks)):
            if p is None or not p.has_variables:
                continue
            v = self._call(i, block, p.init_variables, keys[i], block)
            out["params"].update(self._prefixed(i, v["params"]))
            out["state"].update(self._prefixed(i, v["state"]))
        return out

    def apply(self, variables: Variables, x: Array, *, update_state: bool = False):
        axis, blocks = self._blocks(x)
        outs, state = [], dict(variables["state"])
        for i, (p, block) in enumerate(zip(self.parts, blocks)):
            if p is None:
                outs.append(block)
                continue
            y, st = self._call(
                i, block, p.apply, self._own(i, variables), block, update_state=update_state
            )
            if tuple(y.shape) != tuple(block.shape):
                raise ShapeError(
                    f"{self._where(i, block)}: the part returned shape {tuple(y.shape)}; each "
                    "part must keep its block's shape."
                )
            outs.append(y.astype(block.dtype))
            state.update(self._prefixed(i, st))
        return jnp.concatenate(outs, axis=axis), state

    def forward(self, x: Array) -> Array:
        return self.apply(empty_variables(), x)[0]

    def apply_inverse(self, variables: Variables, value: Array, *, key=None):
        axis, blocks = self._blocks(value)
        n = len(self.parts)
        keys = [None] * n if key is None else list(jax.random.split(key, n))
        raws, state = [], dict(variables["state"])
        for i, (p, block) in enumerate(zip(self.parts, blocks)):
            if p is None:
                raws.append(block)
                continue
            own = self._own(i, variables)
            got = self._call(
                i, block, _core._register_inverse, p, own["params"], own["state"], block, keys[i]
            )
            if got is _core._NO_INVERSE:  # no right inverse: the identity (as in a chain)
                raws.append(block)
                continue
            raw, st = got
            if not hasattr(raw, "shape") or tuple(raw.shape) != tuple(block.shape):
                what = (
                    f"{len(raw)} arrays"
                    if isinstance(raw, (tuple, list))
                    else f"shape {tuple(getattr(raw, 'shape', ()))}"
                )
                raise RightInverseError(
                    f"{self._where(i, block)}: its right inverse returned {what}; a part of a "
                    "`ProductManifold` must store one raw array of its block's shape (parts "
                    "with several raw arrays, such as `WeightNorm`, cannot be parts)."
                )
            raws.append(raw.astype(block.dtype))
            state.update(self._prefixed(i, st))
        return jnp.concatenate(raws, axis=axis), state

    def right_inverse(self, value: Array) -> Array:
        if self.has_variables:
            raise NotImplementedError(
                f"{describe(self)} has a part with variables: assign through "
                "`apply_inverse(variables, value, key=...)` (registration and `assign` do)."
            )
        return self.apply_inverse(empty_variables(), value)[0]

    # --- optional methods: present when the parts have them --------------------------------------
    @property
    def update_base(self):  # type: ignore[override]  # per instance: None unless every part has it
        if not any(p is not None and callable(p.update_base) for p in self.parts):
            return None
        return self._update_base

    def _update_base(self, variables: Variables, x: Array):
        axis, blocks = self._blocks(x)
        raws, state = [], dict(variables["state"])
        for i, (p, block) in enumerate(zip(self.parts, blocks)):
            if p is None or not callable(p.update_base):
                raws.append(block)
                continue
            raw, st = self._call(i, block, p.update_base, self._own(i, variables), block)
            raws.append(raw)
            state.update(self._prefixed(i, st))
        return jnp.concatenate(raws, axis=axis), state

    @property
    def in_manifold(self):  # type: ignore[override]  # per instance: None unless every part has it
        if not all(p is None or callable(p.in_manifold) for p in self.parts):
            return None
        return self._in_manifold

    def _in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """Every block in its part's set (the part's own rule and tolerance)."""
        _, blocks = self._blocks(x)
        ok = jnp.asarray(True)
        for i, (p, block) in enumerate(zip(self.parts, blocks)):
            if p is not None:
                ok = ok & jnp.all(self._call(i, block, p.in_manifold, block, atol))
        return ok

    @property
    def sample(self):  # type: ignore[override]  # per instance: None unless every part has it
        if not all(p is None or callable(p.sample) for p in self.parts):
            return None
        return self._sample

    def _sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """Each block from its part's ``sample`` (``None`` parts: standard normal)."""
        shape = tuple(shape)
        axis = self._axis(jax.ShapeDtypeStruct(shape, dtype))
        keys = jax.random.split(key, len(self.parts))
        outs = []
        for i, (p, s) in enumerate(zip(self.parts, self.sizes)):
            block_shape = shape[:axis] + (s,) + shape[axis + 1 :]
            if p is None:
                outs.append(jax.random.normal(keys[i], block_shape, dtype))
            else:
                block = jax.ShapeDtypeStruct(block_shape, dtype)
                outs.append(self._call(i, block, p.sample, keys[i], block_shape, dtype))
        return jnp.concatenate(outs, axis=axis)
