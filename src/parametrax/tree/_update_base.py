"""Dynamic trivialization over trees: geotorch's ``update_base`` as a pure, jit-friendly function.

A trivialized parametrization (``SO``, ``Stiefel``, ``Sphere``, ``PositiveDefinite``,
``LowRank``, ...) computes its value from a base point (state) and a raw array. Optimisation
works best when the raw array stays small, so every K steps one moves the base to the current
value and resets the raw array (Lezcano-Casado 2019, "dynamic trivializations"). This module
does that for every such parametrization of a raw tree made by :func:`parametrax.tree.register`,
or of a linen ``Parametrized`` model's variables::

    raw, state = update_base(spec, raw, state, when=step % 100 == 0)   # inside jax.jit

    # linen: the params collection and its state
    params, pstate = update_base(spec_of(model), variables["params"],
                                 variables["parametrization_state"])

The constrained values are unchanged (up to rounding drift, which the move removes). ``when``
may be a traced boolean: the move then runs under ``lax.cond`` (no Python branching on traced
values). Remember to reset the optimizer state of the moved raw arrays if its moments matter
(the raw coordinates change meaning at a move); Adam copes well without.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from parametrax._core import chain_update_base, describe
from parametrax._errors import ParametrizationError, SpecError, with_context
from parametrax.tree._ops import (
    _make_slot,
    _put_state,
    _RawTree,
    _slot_parts,
    _state_parts,
)
from parametrax.tree._spec import Spec
from parametrax.tree.paths import to_dict

__all__ = ["update_base", "has_base"]


def has_base(p: Any) -> bool:
    """Whether ``p`` supports dynamic trivialization (has ``update_base(variables, *raw)``)."""
    return callable(getattr(p, "update_base", None))


def _rebase(spec: Spec, raw: Any, state: dict) -> tuple[Any, dict]:
    view = _RawTree(raw)
    slots = view.resolve(spec)
    new_state = to_dict(state)
    new_slots = {}
    for path, (slot, chain) in sorted(slots.items()):
        for i, link in enumerate(chain[1:], start=1):
            if has_base(link):
                raise SpecError(
                    f"update_base: `{path}` has the trivialized {describe(link)} at position {i} "
                    "of its chain; only the first parametrization of a chain reads the stored "
                    "raw array, so only its base can move. Put it first."
                )
        if not has_base(chain[0]):
            continue
        originals, params = _slot_parts(slot, len(chain))
        lstate = _state_parts(state, path, len(chain))
        try:
            new_originals, lstate = chain_update_base(chain, originals, params, lstate)
        except ParametrizationError as e:
            raise with_context(e, f"update_base at `{path}`") from e.__cause__
        new_slots[path] = _make_slot(new_originals, params)
        _put_state(new_state, path, lstate)
    if not new_slots:
        raise SpecError(
            "update_base: no parametrization in the spec has a base point to move (a "
            "trivialized one, i.e. with an `update_base` method, first in its chain: e.g. "
            "`SO`, `Stiefel`, `Sphere`, `PositiveDefinite`, `LowRank`)."
        )
    return view.with_slots(new_slots), new_state


def update_base(
    spec: Any, raw: Any, state: Mapping | None = None, *, when: Any = True
) -> tuple[Any, dict]:
    """Moves the base point of every trivialized parametrization in ``spec`` to its current value
    and resets its raw array; returns new ``(raw, state)`` with the same structure.

    Args:
      spec: the spec the raw tree was registered with (``{path: chain}`` or a ``Spec``).
      raw: the raw tree (``register``'s first output, or a linen model's ``params``).
      state: the state tree (``register``'s second output, or the linen model's
        ``parametrization_state`` collection).
      when: a Python or traced boolean; when false the inputs come back unchanged. Under
        ``jax.jit`` pass e.g. ``step % K == 0``: the move runs under ``lax.cond``.

    Raises:
      SpecError: no parametrization of the spec has a base, or a trivialized one is not the
        first link of its chain.
    """
    spec = Spec.of(spec)
    if isinstance(raw, Mapping):
        raw = to_dict(raw)
    state = to_dict(state) if state else {}
    if isinstance(when, bool):
        return _rebase(spec, raw, state) if when else (raw, state)
    return jax.lax.cond(
        jnp.asarray(when, bool),
        lambda ops: _rebase(spec, *ops),
        lambda ops: ops,
        (raw, state),
    )
