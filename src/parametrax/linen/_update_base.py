"""``update_base`` for a linen ``Parametrized`` model's variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from parametrax import tree as _tree
from parametrax.linen._collections import STATE_COLLECTION
from parametrax.linen._functions import _check_variables, _require_parametrized

__all__ = ["update_base"]


def update_base(model: Any, variables: Mapping, *, when: Any = True) -> dict:
    """Moves the base point of every trivialized parametrization of ``model`` to its current
    value and resets its raw array (``parametrax.tree.update_base`` on the ``params``
    collection and its ``parametrization_state``); returns new variables with the same
    constrained values. ``when`` may be a traced boolean (``step % K == 0`` under ``jax.jit``).

    >>> import jax, jax.numpy as jnp, flax.linen as nn, parametrax as px
    >>> model = px.Parametrized(nn.Dense(3), {"kernel": px.SO()})
    >>> variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
    >>> moved = px.linen.update_base(model, variables)
    >>> bool(jnp.allclose(px.linen.constrain(model, moved)["params"]["kernel"],
    ...                   px.linen.constrain(model, variables)["params"]["kernel"], atol=1e-5))
    True
    """
    cls = _require_parametrized(model, "update_base")
    plain = _check_variables(variables, "update_base")
    spec = _tree.Spec.of({k: c for k, c in cls._px_spec.entries if ":" not in k})
    params, state = _tree.update_base(
        spec, plain.get("params", {}), plain.get(STATE_COLLECTION, {}), when=when
    )
    out = dict(plain)
    out["params"] = params
    if state or STATE_COLLECTION in plain:
        out[STATE_COLLECTION] = state
    return out
