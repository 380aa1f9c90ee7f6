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
