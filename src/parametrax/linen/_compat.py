"""Every use of a private or undocumented Flax linen internal, in one place.

Nothing else in ``parametrax.linen`` touches Flax beyond its public API (``nn.Module``,
``init``/``apply``, ``variables``, ``put_variable``, ``make_rng``, ``is_mutable_collection``,
``flax.core.meta``). Each function below says which internal it reads, why the wrapper needs it
and which Flax versions it was checked against (0.10 .. 0.12.8, the range ``pyproject.toml``
allows); when Flax changes one of them, this module is the only one to edit, and each function
degrades to a documented fallback rather than failing.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax


def is_first_draw(module: nn.Module, name: str) -> bool:
    """Whether ``module`` has not yet drawn from its rng stream ``name`` in this ``init``/``apply``.

    Reads ``Scope.rng_counters`` (a private attribute of ``flax.core.scope.Scope``, present with
    this meaning, ``{stream: draws so far}``, in Flax 0.6 .. 0.12.8). The wrapper needs it to
    hand the base module the wrapper's own, not yet consumed, stream on first use, so that
    ``Parametrized(nn.Dense(3), spec)`` initialises the very kernel ``nn.Dense(3)`` would; no
    public API tells whether a stream was drawn from. Without the attribute every draw counts
    as the first (the base module then still initialises deterministically, from the stream).
    """
    counters = getattr(module.scope, "rng_counters", None)
    if not isinstance(counters, dict):
        return True
    return counters.get(name, 0) == 0


def root_rng(module: nn.Module, name: str) -> Any:
    """The (lazy) rng ``name`` of ``module``'s scope before any draw: ``Scope.rngs[name]``.

    ``Scope.rngs`` is a public attribute of the (internal) ``flax.core.scope.Scope`` class,
    unchanged in Flax 0.6 .. 0.12.8; the wrapper hands it, as is, to the base module's ``init``
    so the base draws what it would draw unwrapped (see :func:`is_first_draw`).
    """
    assert module.scope is not None  # called from a bound module's method only
    return module.scope.rngs[name]


def rng_names(module: nn.Module) -> list[str]:
    """The rng streams ``module`` was given in this ``init``/``apply`` (``Scope.rngs``' keys).

    Linen has no public listing of the streams (only ``has_rng(name)`` for a known name); the
    wrapper forwards every stream to the base module, whose stream names it cannot know.
    """
    assert module.scope is not None  # called from a bound module's method only
    return sorted(module.scope.rngs)


def unbound_copy(module: nn.Module) -> nn.Module:
    """A deep, unbound copy of a module-valued field (an RNN's cell), for the functional base call.

    ``Module.clone``'s ``_deep_clone`` keyword is private (Flax 0.7.5 .. 0.12.8): a plain
    ``clone(parent=None)`` keeps the field's own submodule fields bound to their old parent, and
    the base module's ``apply`` then refuses them. Without the keyword (older or newer Flax),
    the plain clone is used.
    """
    try:
        return module.clone(parent=None, _deep_clone=True)
    except TypeError:  # a Flax whose clone takes no `_deep_clone`
        return module.clone(parent=None)


def is_nowrap(fn: Any) -> bool:
    """Whether a method was marked ``@nn.nowrap``: Flax sets the attribute ``nowrap = True`` on it.

    The attribute is how Flax itself recognises these methods (``module.py``, Flax 0.7 .. 0.12.8)
    and is not documented; the wrapper must not route such helper methods (which run outside any
    scope) through the base module's ``apply``.
    """
    return bool(getattr(fn, "nowrap", False))


def is_differentiated(x: Any) -> bool:
    """Whether ``x`` is being differentiated: a JAX autodiff tracer, possibly under vmap/jit.

    JAX has no public predicate for this. ``jax.grad`` / ``jax.value_and_grad`` trace with
    ``LinearizeTracer`` (JAX >= 0.5, private: ``jax._src.interpreters.ad``), ``jax.jvp`` /
    ``jacfwd`` with ``JVPTracer`` (public as ``jax.interpreters.ad.JVPTracer``); a ``vmap``
    above them wraps them in a ``BatchTracer`` whose ``val`` holds them. The type names and the
    ``primal`` / ``val`` attributes are what JAX 0.4.30 .. 0.10.2 use. When JAX changes them
    this answers False: the wrapper then only loses its frozen-state warning.
    """
    for _ in range(16):
        if not isinstance(x, jax.core.Tracer):
            return False
        if type(x).__name__ in ("JVPTracer", "LinearizeTracer"):
            return True
        nxt = getattr(x, "val", None)
        if nxt is None:
            return False
        x = nxt
    return False
