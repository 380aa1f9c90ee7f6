"""Every use of Flax NNX (and JAX) internals by the NNX front, in one place.

Each helper says what it reads, why the public API does not give it, and which versions it was
written against (flax 0.12.x, jax 0.10.x; the project's floor is flax 0.12). When flax changes
one of these, this module is the only file to touch.
"""

from __future__ import annotations

import types
from typing import Any

import jax
import jax.core
import jax.extend
import jax.extend.core
from flax import nnx

try:  # the lean graph-node protocol below needs flax's newer (0.12.x) graph internals
    from flax.nnx import graphlib as _graphlib
    from flax.nnx import pytreelib as _pytreelib
    from flax.typing import HashableMapping as _HashableMapping

    _graphlib.DataElem, _graphlib.StaticElem  # noqa: B018 - the attributes it uses
    _pytreelib.PytreeState(False, False)._initializing  # noqa: B018
    LEAN_GRAPH = all(
        hasattr(nnx.Module, a) for a in ("_pytree__is_pytree", "_pytree__has_int_keys")
    ) and hasattr(_HashableMapping({}), "_mapping")
except (ImportError, AttributeError, TypeError):  # e.g. flax 0.12.1: NNX's own protocol is used
    LEAN_GRAPH = False


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


# The eager (top-level) trace's token: an NNX read there with concrete inputs computes a concrete
# value, which the per-trace memo never stores, so such a read skips the memo (see
# ``_memo._evaluate``). Taken at import (almost always at top level: if this module is first
# imported inside a trace, the token is that trace's and no later trace equals it, so reads merely
# take the general path).
TOP_LEVEL_TRACE = current_trace()


# ------------------------------------------------------------------------------------------------
# Variable values without ``Variable.get_value`` / ``set_value``'s generic path (eager reads)
# ------------------------------------------------------------------------------------------------
# flax 0.12's ``get_value`` copies the value with ``jax.tree.map``, asks ``is_array_ref`` (a
# ``jax.typeof`` and isinstance checks) and looks for ``on_get_value`` hooks; ``set_value`` does the
# same for ``on_set_value``. For the common value (a concrete JAX array, no hooks: the copy of a
# leaf is the leaf itself, an ``ArrayImpl`` is never an array ref) both reduce to reading or
# setting the private slot ``Variable._raw_value`` (after NNX's own trace check,
# ``Variable._check_can_update``, which ``set_value`` runs too).
# Everything else (tracers, refs, hijax variables, hooks) goes through the public methods.
# Written against flax 0.12.x (``Variable.__slots__`` holds ``_raw_value`` and ``_var_metadata``);
# ``FAST_VALUES`` is False where they are missing, and the public methods are always used.
_ARRAY_IMPL = type(jax.numpy.zeros(()))
FAST_VALUES = all(
    isinstance(getattr(nnx.Variable, a, None), types.MemberDescriptorType)
    for a in ("_raw_value", "_var_metadata")
) and callable(getattr(nnx.Variable, "_check_can_update", None))
_VARIABLE_TYPES: set[type] = set()  # the nnx.Variable subclasses seen (an exact-type check)


def is_variable(x: Any) -> bool:
    """``isinstance(x, nnx.Variable)`` without NNX's Python ``__instancecheck__`` per call."""
    t = type(x)
    if t in _VARIABLE_TYPES:
        return True
    if isinstance(x, nnx.Variable):
        _VARIABLE_TYPES.add(t)
        return True
    return False


def get_value(var: nnx.Variable) -> Any:
    """``var.get_value()``, read straight from the slot for a concrete array without hooks."""
    if FAST_VALUES:
        raw = var._raw_value
        if type(raw) is _ARRAY_IMPL and "on_get_value" not in var._var_metadata:
            return raw
    return var.get_value()


def set_value(var: nnx.Variable, value: Any) -> None:
    """``var.set_value(value)``, set straight into the slot (after NNX's trace check) for a
    concrete array replacing one, without hooks."""
    if (
        FAST_VALUES
        and type(value) is _ARRAY_IMPL
        and type(var._raw_value) is _ARRAY_IMPL
        and "on_set_value" not in var._var_metadata
    ):
        var._check_can_update()  # what set_raw_value and Variable.__setattr__ both check
        object.__setattr__(var, "_raw_value", value)
    else:
        var.set_value(value)


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
# ``pytreelib.PytreeState``, ``flax.typing.HashableMapping``); ``LEAN_GRAPH`` is False where they are
# missing (flax 0.12.1 has ``flax.nnx.graph`` and no ``DataElem``), and the containers then keep
# NNX's own protocol: same behaviour, the old cost.
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
        return self is other or (type(other) is StaticAttributes and self.items == other.items)

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


# Container types whose instances without data (no Variables, no sub-nodes: a link of a
# parametrization that owns no variables) are carried as a static value of their parent instead of
# as a graph node of their own; see ``ElidedNode``. Filled by ``_containers``.
ELIDABLE: set[type] = set()


class ElidedNode:
    """A data-free container (an ``ELIDABLE`` instance) carried as one static value.

    Such a node holds nothing NNX would pass to a transformation, so a graph node for it only
    costs time (one NodeDef to flatten, hash, compare and unflatten per call). Its parent gives it
    as ``(key, ElidedNode(type, static items))`` in its own static bundle; :func:`lean_init` puts
    back the very same object when the parent is refilled in place (``nnx.jit`` writing results
    back into the caller's module) and builds an equal one otherwise (``nnx.merge``, inside a
    trace). It is not listed by ``nnx.iter_graph`` / ``nnx.iter_modules`` (it has nothing to
    visit); ``vars(parent)`` still holds it.
    """

    __slots__ = ("type", "items", "_hash")

    def __init__(self, type_: type, items: tuple):
        self.type = type_
        self.items = items
        self._hash: int | None = None

    def __eq__(self, other: object) -> bool:
        return self is other or (
            type(other) is ElidedNode and self.type is other.type and self.items == other.items
        )

    def __hash__(self) -> int:
        h = self._hash
        if h is None:
            h = self._hash = hash((self.type, self.items))
        return h

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.items if k not in (_STATE, _NODES))
        return f"{self.type.__name__}({shown})"

    def __reduce__(self):
        return ElidedNode, (self.type, self.items)

    def matches(self, obj: Any) -> bool:
        """Whether ``obj`` can stand for this node (same type, equal static values)."""
        if type(obj) is not self.type:
            return False
        d = vars(obj)
        if len(d) != len(self.items):
            return False
        for k, v in self.items:
            if k == _STATE or k == _NODES:
                continue
            w = d.get(k, _MISSING)
            # equal, not only identical: a cached trace hands back the static values of the
            # model it was traced with (as for NNX's own static fields)
            if w is not v and not (type(w) is type(v) and w == v):
                return False
        return True

    def build(self) -> Any:
        obj: Any = object.__new__(self.type)
        lean_init(obj, ((STATIC_KEY, StaticAttributes(self.items)),))
        return obj


_MISSING = object()


def _split(node: Any, cls: Any) -> tuple[list, list]:
    """``node``'s attributes as NNX would give them: (data children, static items)."""
    d = vars(node)
    flags = _plain(d.get(_NODES, cls._pytree__nodes))
    data_elem = _graphlib.DataElem
    children: list = []
    static: list = []
    for k, v in d.items():
        if k == _STATE:
            static.append((k, (v._initializing, v._is_setup)))
        elif k == _NODES:
            static.append((k, tuple(_plain(v).items())))
        elif flags.get(k, False):
            vcls = type(v)
            if vcls in ELIDABLE and vcls._pytree__is_pytree and not vcls._pytree__has_int_keys:
                sub_children, sub_static = _split(v, vcls)
                if not sub_children:
                    sub_static.sort()
                    static.append((k, ElidedNode(vcls, tuple(sub_static))))
                    continue
            children.append((k, data_elem(v)))
        else:
            static.append((k, v))
    return children, static


def _plain(mapping: Any) -> Any:
    """The dict inside a ``flax.typing.HashableMapping`` (its ``_mapping``): ``Mapping.get`` and
    ``items`` on the wrapper run Python-level ABC methods per key, which this path calls per
    attribute per step."""
    return mapping._mapping if type(mapping) is _HashableMapping else mapping


def lean_flatten(node: Any) -> tuple[list, type]:
    """``_graph_node_flatten`` for the containers: data attributes as NNX gives them, sorted by
    key (data-free ``ELIDABLE`` children excepted, see :class:`ElidedNode`), then every other
    attribute in one :class:`StaticAttributes` under ``STATIC_KEY``."""
    cls = type(node)
    if not cls._pytree__is_pytree or cls._pytree__has_int_keys:
        return nnx.Module._graph_node_flatten(node)  # the layouts this fast path does not cover
    children, static = _split(node, cls)
    # (keys are unique strings, so sorting the (key, value) pairs never compares values)
    children.sort()
    static.sort()
    children.append((STATIC_KEY, _graphlib.StaticElem(StaticAttributes(tuple(static)))))
    return children, cls


def lean_clear(node: Any) -> None:
    """``_graph_node_clear``: empties ``node`` but keeps its elidable children for
    :func:`lean_init` to reuse (so ``layer.parametrizations.w[0]`` stays the same object across
    ``nnx.jit`` calls)."""
    d = vars(node)
    kept = {k: v for k, v in d.items() if type(v) in ELIDABLE}
    d.clear()
    d.update(kept)


def lean_init(node: Any, attributes: Any) -> None:
    """``_graph_node_init`` matching :func:`lean_flatten` (and plain NNX attribute lists)."""
    setattr_ = object.__setattr__
    d = vars(node)
    kept = set(d) if d else None  # elidable children lean_clear left for reuse
    for name, value in attributes:
        if name == STATIC_KEY and type(value) is StaticAttributes:
            for k, v in value.items:
                if k == _STATE:
                    v = _pytreelib.PytreeState(*v)
                elif k == _NODES:
                    v = _HashableMapping(dict(v), copy=False)
                elif type(v) is ElidedNode:
                    old = d.get(k)
                    v = old if old is not None and v.matches(old) else v.build()
                    if kept:
                        kept.discard(k)
                setattr_(node, k, v)
        else:
            name = name if isinstance(name, str) else str(name)
            setattr_(node, name, value)
            if kept:
                kept.discard(name)
    if kept:
        for k in kept:
            del d[k]
