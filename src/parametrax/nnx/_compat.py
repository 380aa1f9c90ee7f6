"""Every use of Flax NNX (and JAX) internals by the NNX front, in one place.

Each helper says what it reads, why the public API does not give it, and which versions it was
written against (flax 0.12.x, jax 0.10.x; the project's floor is flax 0.12). When flax changes
one of these, this module is the only file to touch.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.core
import jax.extend
import jax.extend.core
from flax import nnx
from flax.nnx import graphlib as _graphlib
from flax.nnx import pytreelib as _pytreelib
from flax.typing import HashableMapping as _HashableMapping


def pytree_flag(cls: type[nnx.Pytree]) -> bool:
    """The ``pytree=`` class keyword ``cls`` was created with (``Module._pytree__is_pytree``).

    The generated ``Parametrized<Class>`` subclass must be created with the same flag as its base,
    or NNX would flatten it differently from the base class. flax 0.12 keeps the flag only in this
    private class attribute (set by ``Pytree.__init_subclass__``); there is no public getter.
    """
    return cls._pytree__is_pytree


def current_trace() -> Any:
    """An opaque token of the current JAX trace, as NNX computes it for its own trace checks.

    The memo keys on it so that a value traced under one transformation is never returned in
    another. ``get_opaque_trace_state(convention="nnx")`` is the hook jax (0.4.36+) exposes for
    flax; it lives in ``jax.extend`` and is used by flax 0.12's ``nnx.tracers``.
    """
    return _get_opaque_trace_state(convention="nnx")


# jax 0.10 moved the hook from ``jax.core`` (where flax 0.12.1-0.12.x with jax 0.8-0.9 find it)
# to ``jax.extend.core``; take whichever this jax has.
_get_opaque_trace_state = (
    getattr(jax.extend.core, "get_opaque_trace_state", None) or jax.core.get_opaque_trace_state
)


def module_is_mutable_here(module: Any) -> bool:
    """Whether NNX lets ``module``'s attributes be set at the current trace level.

    NNX refuses (with its own error, after part of an operation may already have run) to mutate a
    module created outside the current transformation. Checking first keeps failed operations
    atomic. flax 0.12 stores the creation trace in the private ``module._pytree__state.trace_state``
    (a ``TraceState`` with ``is_valid()``); a missing attribute means "no restriction".
    """
    trace_state = getattr(getattr(module, "_pytree__state", None), "trace_state", None)
    return trace_state is None or trace_state.is_valid()


def variable_is_mutable_here(var: nnx.Variable) -> bool:
    """Whether NNX lets ``var``'s value be set at the current trace level.

    Same reason as :func:`module_is_mutable_here`. flax 0.12 keeps the creation trace in the
    private ``Variable._trace_state``; hijax Variables (``var.hijax``, flax 0.12) are always
    settable.
    """
    trace_state = getattr(var, "_trace_state", None)
    return bool(getattr(var, "hijax", False)) or trace_state is None or trace_state.is_valid()


def set_class(module: Any, cls: type) -> None:
    """Swaps ``module``'s class (to or from a generated ``Parametrized<Class>``), as torch does.

    ``nnx.Module.__setattr__`` would treat ``__class__`` as a graph attribute, so this goes through
    ``object.__setattr__``. Not private API, but it bypasses NNX on purpose: any flax version.
    """
    object.__setattr__(module, "__class__", cls)


# ------------------------------------------------------------------------------------------------
# A lean graph-node protocol for the parametrization containers (the per-step cost of nnx.jit)
# ------------------------------------------------------------------------------------------------
# ``nnx.jit`` (and ``nnx.split`` / ``nnx.merge``, ``nnx.grad``, ...) walks the whole module graph in
# Python on every call: ``Pytree._graph_node_flatten`` gives each attribute, and for every
# ``nnx.Module`` this includes ``_pytree__state`` (a pytree node of its own: one more NodeDef to
# build, hash, compare and unflatten) and ``_pytree__nodes`` (a ``HashableMapping`` whose hash
# sorts its items with a Python key function, every call), then one ``Static`` per static field.
# A parametrized variable adds three such modules (dict, list, link), so this was most of the
# 160-210 us per layer. ``lean_flatten`` / ``lean_init`` replace the two hooks for those classes:
# the data attributes (Variables, links) are given to NNX exactly as before (same keys, same
# ``DataElem`` wrapping, so ``nnx.state`` paths and the Variables' treatment do not change), and
# everything else goes into ONE static element whose hash is one tuple hash.
# ``_pytree__state`` is not a node any more: flax's own pytree flattening of it keeps only
# ``(initializing, is_setup)`` and makes a fresh ``PytreeState`` (stamped with the current trace) on
# unflatten; ``lean_init`` does the same from the bundle. Written against flax 0.12.x
# (``Pytree._graph_node_flatten`` / ``_graph_node_init``, ``graphlib.DataElem`` / ``StaticElem``,
# ``pytreelib.PytreeState``, ``flax.typing.HashableMapping``).
_STATE = "_pytree__state"
_NODES = "_pytree__nodes"
STATIC_KEY = "_px_static"


class StaticAttributes:
    """The static attributes of one container, as one hashable graph attribute.

    ``items`` is a tuple of ``(name, value)``; ``_pytree__state`` is carried as its
    ``(initializing, is_setup)`` flags and ``_pytree__nodes`` as its items. Not a pytree, so
    ``nnx.iter_graph`` / ``nnx.recursive_map`` see it as one opaque static value.
    """

    __slots__ = ("items", "_hash")

    def __init__(self, items: tuple):
        self.items = items
        self._hash: int | None = None

    def __eq__(self, other: object) -> bool:
        return self is other or (
            type(other) is StaticAttributes and self.items == other.items  # type: ignore[attr-defined]
        )

    def __hash__(self) -> int:
        h = self._hash
        if h is None:
            h = self._hash = hash(self.items)
        return h

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.items if k not in (_STATE, _NODES))
        return f"StaticAttributes({shown})"

    def __reduce__(self):
        return StaticAttributes, (self.items,)


def lean_flatten(node: Any) -> tuple[list, type]:
    """``_graph_node_flatten`` for the containers: data attributes as NNX gives them, sorted by
    key, then every other attribute in one :class:`StaticAttributes` under ``STATIC_KEY``."""
    cls = type(node)
    if not cls._pytree__is_pytree or cls._pytree__has_int_keys:
        return nnx.Module._graph_node_flatten(node)  # the layouts this fast path does not cover
    d = vars(node)
    flags = d.get(_NODES, cls._pytree__nodes)
    data_elem = _graph_lib_data_elem
    children = []
    static = []
    for k, v in d.items():
        if k == _STATE:
            static.append((k, (v.initializing, v.is_setup)))
        elif k == _NODES:
            static.append((k, tuple(v.items())))
        elif flags.get(k, False):
            children.append((k, data_elem(v)))
        else:
            static.append((k, v))
    children.sort(key=_first)
    static.sort(key=_first)
    children.append((STATIC_KEY, _graphlib.StaticElem(StaticAttributes(tuple(static)))))
    return children, cls


def lean_init(node: Any, attributes: Any) -> None:
    """``_graph_node_init`` matching :func:`lean_flatten` (and plain NNX attribute lists)."""
    setattr_ = object.__setattr__
    for name, value in attributes:
        if name == STATIC_KEY and type(value) is StaticAttributes:
            for k, v in value.items:
                if k == _STATE:
                    v = _pytreelib.PytreeState(*v)
                elif k == _NODES:
                    v = _HashableMapping(dict(v), copy=False)
                setattr_(node, k, v)
        else:
            setattr_(node, name if isinstance(name, str) else str(name), value)


def _first(item: tuple) -> Any:
    return item[0]


_graph_lib_data_elem = _graphlib.DataElem
