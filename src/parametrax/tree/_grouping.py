"""Grouped evaluation: variables with equal chains on equal shapes evaluated as one batched map.

A stack of ``L`` same-shaped layers, each constrained by the same chain (``Orthogonal()`` on
every ``Dense(64)`` kernel), costs ``L`` separate maps when each variable is evaluated alone:
``L`` LU factorizations, ``L`` scaling-and-squaring loops compiled one after another. Matrix
maps act on the last two axes and broadcast over leading ones, so the ``L`` raw values can be
stacked, the chain evaluated once on the stack, and the result unstacked (through identical
dynamic slices, not ``jnp.unstack``'s constant-offset ones, which XLA compiled as L distinct
kernels: see "Stacking and unstacking" below). Measured in ``benchmarks/grouped.py`` (figures
in ``benchmarks/results.md``).

The result is the per-variable result: the same maths on the same numbers (see
``tests/default_xla/test_grouping.py``, which checks values and gradients of both paths). What
may be grouped:

* Only chains whose every link is known to act on trailing axes and to broadcast over a
  leading batch axis, its variables batched with the value (the contract kit's
  ``broadcasts=True``, checked by its ``vmap == broadcasting`` test). A link says so with a
  ``broadcasts`` class attribute or property (``True`` / ``False``; the catalog's matrix maps
  declare it, the trivialized ones only with a named ``triv``, never a user callable); without
  one it is not grouped. A map of the whole tensor (``SpectralNorm``, ``WeightNorm``, ``Sphere(axis=None)``)
  is never grouped: stacking would change what it normalises.
* Only variables whose chains are equal (parametrizations are frozen dataclasses: equal
  configurations compare equal) and whose raw arrays and link variables have equal tree
  structure, shapes, dtypes and weak types.
* Only where it was measured to pay (:func:`worth_grouping`): two or more variables, matrices
  of at most :data:`MAX_GROUP_N` rows and columns, and a chain holding a link whose
  ``batching_pays(shape)`` says so (in the catalog: a matrix exponential, i.e. ``MatrixExp``,
  ``Orthogonal`` resolving to ``"matrix_exp"``, a trivialization with ``triv="expm"``). On the
  2-core CPU of ``benchmarks/results.md`` (quiet run) a grouped Cayley stack took 1.15-1.41x
  the step time of L separate maps: the batched Cayley map itself gains little over L separate
  ones and the stacking costs more than that, so Cayley-only chains are evaluated alone. From
  n = 128 on a matrix-exponential stack gains no step time (0.96-1.06x) but still compiles
  2-8x faster; n = 128 is still grouped, larger matrices are not.
* Never under JAX's explicit sharding mode (the stack would have to be sharded too).

A group whose batched evaluation raises is evaluated again variable by variable, so every
error names its variable exactly as without grouping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from parametrax import _core

__all__ = ["MAX_GROUP_N", "group_paths", "forward_group", "worth_grouping", "broadcasts"]

#: The largest matrix side (``max`` of the last two sizes) that is grouped by default.
MAX_GROUP_N = 128


def broadcasts(link: _core.Parametrization) -> bool:
    """Whether ``link`` acts on trailing axes and broadcasts over a leading batch axis, its
    variables batched with the value (so a stack of raw values is a batch): the link's own
    ``broadcasts`` declaration (a class attribute or property); undeclared links are not
    grouped."""
    declared = getattr(link, "broadcasts", None)
    return declared if isinstance(declared, bool) else False


def _matrix_side(shape: tuple) -> int:
    return max(shape[-2:]) if len(shape) >= 2 else (shape[-1] if shape else 1)


def _pays(link: Any, shape: tuple) -> bool:
    pays = getattr(link, "batching_pays", None)  # Parametrization's default: False
    return bool(pays(shape)) if callable(pays) else False


def worth_grouping(chain: tuple, count: int, shape: tuple) -> bool:
    """The default rule: group ``count`` variables of raw ``shape`` under ``chain`` when that was
    measured to pay (see the module docstring)."""
    shape = tuple(shape)
    return (
        count >= 2
        and _matrix_side(shape) <= MAX_GROUP_N
        and any(_pays(link, shape) for link in chain)
    )


# ------------------------------------------------------------------------------------------------
# Stacking and unstacking with one compiled kernel per role, not one per member
# ------------------------------------------------------------------------------------------------
# ``jnp.unstack(v)`` lowers to L slices with constant offsets, and the transpose of ``jnp.stack``
# (in every backward pass) to L more. XLA fuses each slice with its producer or consumer, and a
# constant offset makes each of those L fusions a different kernel, compiled on its own (XLA's
# CPU backend compiles one kernel per distinct fusion and reuses identical ones): measured, an
# L = 64 stack of Orthogonal(map="matrix_exp") kernels spent most of its compile time on them
# (``docs/benchmarks.md``, grouped section). Reading member ``i`` with a dynamic slice at an
# index XLA cannot constant-fold (an ``optimization_barrier`` over the indices) gives L identical
# kernels, compiled once. The derivatives are written so that no slice with a constant offset
# (and no sum of L zero-padded arrays) appears in either mode: the tangent of a stack is a chain
# of in-place dynamic updates (its transpose: dynamic slices), the tangent of an unstack is
# ``jnp.unstack`` (its transpose: one concatenate). Values are exact copies either way.


def _indices(count: int) -> jax.Array:
    return lax.optimization_barrier(jnp.arange(count, dtype=jnp.int32))


def _dynamic_unstack(x: jax.Array) -> tuple:
    idx = _indices(x.shape[0])
    return tuple(lax.dynamic_index_in_dim(x, idx[i], keepdims=False) for i in range(x.shape[0]))


def _dynamic_stack(xs: tuple) -> jax.Array:
    idx = _indices(len(xs))
    out = jnp.zeros((len(xs), *jnp.shape(xs[0])), jnp.result_type(xs[0]))
    for i, x in enumerate(xs):
        out = lax.dynamic_update_index_in_dim(out, x, idx[i], axis=0)
    return out


@jax.custom_jvp
def _stack_inexact(xs: tuple) -> jax.Array:
    return jnp.stack(xs)


@_stack_inexact.defjvp
def _stack_inexact_jvp(primals, tangents):
    (xs,), (ts,) = primals, tangents
    return _stack_inexact(xs), _dynamic_stack(ts)


@jax.custom_jvp
def _unstack_inexact(x: jax.Array) -> tuple:
    return _dynamic_unstack(x)


@_unstack_inexact.defjvp
def _unstack_inexact_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return _unstack_inexact(x), tuple(jnp.unstack(t))


@jax.jit
def _stack(*xs: jax.Array) -> jax.Array:
    """``jnp.stack(xs)``, differentiated without constant-offset slices (see above)."""
    if not jnp.issubdtype(jnp.result_type(xs[0]), jnp.inexact):
        return jnp.stack(xs)  # integer / boolean leaves carry no derivative
    return _stack_inexact(tuple(xs))


@jax.jit
def _unstack(x: jax.Array) -> tuple:
    """``tuple(jnp.unstack(x))`` as L identical dynamic slices (see above)."""
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        return tuple(jnp.unstack(x))
    return _unstack_inexact(x)


def _aval(x: Any) -> tuple:
    weak = bool(getattr(x, "weak_type", False))
    return (tuple(jnp.shape(x)), jnp.dtype(jnp.result_type(x)).name, weak)


def _key(chain: tuple, originals: Mapping, params: Sequence, state: Sequence) -> Any:
    """What must be equal for two variables to share one batched evaluation; ``None`` when the
    variable cannot be grouped at all."""
    if not all(broadcasts(link) for link in chain):
        return None
    parts = (dict(originals), [dict(p) for p in params], [dict(s) for s in state])
    leaves, treedef = jax.tree.flatten(parts)
    if not leaves or not all(_core._is_array(x) for x in leaves):
        return None
    if any(_core._explicit_sharding(x) is not None for x in leaves):
        return None
    try:
        return (chain, treedef, tuple(_aval(x) for x in leaves))
    except TypeError:  # an unhashable chain: evaluated alone
        return None


def candidates(items: Mapping[str, tuple]) -> int:
    """How many of the variables (``items`` as in :func:`group_paths`) have chains whose every
    link broadcasts: with fewer than two, nothing is grouped."""
    return sum(all(broadcasts(link) for link in entry[0]) for entry in items.values())


def group_paths(items: Mapping[str, tuple], *, group: bool = True) -> list[list[str]]:
    """Splits the variables into evaluation groups, in the order of ``items``.

    ``items`` maps a path to ``(chain, originals, params, state)``. Each returned list is
    evaluated together; a list of one is evaluated alone. With ``group=False`` every variable
    is alone.
    """
    if not group:
        return [[p] for p in items]
    # Fewer than two variables whose links all broadcast: nothing can group, and the keys below
    # (a flatten and the avals of every leaf) would cost an eager read ~20 µs for nothing.
    if candidates(items) < 2:
        return [[p] for p in items]
    by_key: dict[Any, list[str]] = {}
    out: list[list[str]] = []
    for path, (chain, originals, params, state) in items.items():
        key = _key(chain, originals, params, state)
        if key is None:
            out.append([path])
            continue
        if key not in by_key:
            by_key[key] = []
            out.append(by_key[key])
        by_key[key].append(path)
    final: list[list[str]] = []
    for paths in out:
        chain, first = items[paths[0]][:2]
        shape = jnp.shape(next(iter(first.values())))
        if len(paths) > 1 and not worth_grouping(chain, len(paths), shape):
            final.extend([p] for p in paths)
        else:
            final.append(paths)
    return final


def forward_group(
    members: Sequence[tuple], *, update_state: bool
) -> list[tuple[jax.Array, list[dict]]] | None:
    """Evaluates the equal chains of ``members`` (each ``(chain, originals, params, state)``) as
    one batched map; returns each member's ``(value, link_state)`` as :func:`chain_forward`
    would, or ``None`` when the batched evaluation fails (the caller then evaluates each member
    alone, which reports the error with its variable's name).

    A link state returned unchanged (the very stacked array) gives each member back its own
    array, so callers comparing state by identity see it unmoved.
    """
    chain = members[0][0]
    count = len(members)
    try:
        parts = [
            (dict(o), [dict(p) for p in ps], [dict(s) for s in st]) for _, o, ps, st in members
        ]
        originals, params, state = jax.tree.map(_stack, *parts)
        value, new_state = _core.chain_forward(
            chain, originals, params, state, update_state=update_state
        )
        one = jnp.shape(next(iter(parts[0][0].values())))
        if not _core._is_array(value) or tuple(value.shape) != (count, *one):
            return None
        values = _unstack(value)
        states: list[list[dict]] = [[{} for _ in chain] for _ in range(count)]
        for j, link_state in enumerate(new_state):
            for name, leaf in link_state.items():
                stacked_in = state[j].get(name)
                if leaf is stacked_in:
                    for i in range(count):
                        states[i][j][name] = parts[i][2][j][name]
                    continue
                if not _core._is_array(leaf) or jnp.shape(leaf)[:1] != (count,):
                    return None
                for i, x in enumerate(_unstack(leaf)):
                    states[i][j][name] = x
    except Exception:  # evaluated alone instead, which names the variable in any error
        return None
    return list(zip(values, states))
