"""Assignment: ``module.<name> = X`` and :func:`assign` run the chain's right inverse."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from parametrax import _core
from parametrax._core import chain_right_inverse
from parametrax._errors import (
    NotParametrizedError,
    ParametrizationError,
    ParametrizationTypeError,
    with_context,
)
from parametrax.nnx._containers import (
    PARAMETRIZATIONS,
    _names_str,
    _qualified,
    is_parametrized,
)
from parametrax.nnx._memo import (
    _check_state,
    _inputs,
    _invalidate,
    _state_variables,
    _write_state,
)
from parametrax.nnx._util import _check_mutable, _require_module

Array = jax.Array


def _assign(module: Any, name: str, value: Any, *, key: Array | None) -> None:
    what = f"assigning to {_qualified(module, name)}"
    plist = vars(module)[PARAMETRIZATIONS][name]
    if isinstance(value, nnx.Variable):
        value = value.get_value()
    if not _core._is_array(value):
        try:
            value = jnp.asarray(value)
        except (TypeError, ValueError):
            raise ParametrizationTypeError(
                f"{what}: expected an array; got {type(value).__name__}."
            ) from None
    originals, params, state = _inputs(plist)
    try:
        raw, new_state = chain_right_inverse(plist.chain, value, originals, params, state, key=key)
        _check_state(plist, new_state, "apply_inverse")
    except ParametrizationError as e:
        raise with_context(e, what) from e.__cause__
    targets = [v for v in vars(plist).values() if isinstance(v, nnx.Variable)]
    _check_mutable([plist], targets + _state_variables(plist), what)
    for n, r in raw.items():
        target = vars(plist).get(n)
        if isinstance(target, nnx.Variable):
            target.set_value(r)
        else:  # a nested parametrization on `original`: its own right_inverse runs
            setattr(plist, n, r)
    _write_state(plist, new_state, "apply_inverse")
    _invalidate(plist)


def assign(module: nnx.Module, name: str, value: Any, *, key: Array | None = None) -> nnx.Module:
    """``module.<name> = value`` with a PRNG ``key`` for right inverses that draw random numbers
    (e.g. completing a non-square orthogonal base). Returns ``module``."""
    _require_module(module, "assign")
    if not is_parametrized(module, name):
        raise NotParametrizedError(
            f"assign: {_qualified(module, name)} is not parametrized (parametrized: "
            f"{_names_str(module)})."
        )
    _assign(module, name, value, key=key)
    return module
