"""Small helpers shared by the NNX operations: argument checks, messages, Variables, mode."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from parametrax._core import describe
from parametrax._errors import ParametrizationError, ParametrizationTypeError, chain_repr
from parametrax.nnx import _compat

Array = jax.Array
_MODE_ATTRS = ("use_running_average", "deterministic")
_SHARDING_METADATA = ("out_sharding", "sharding", "sharding_names", "mesh", "sharding_rules")


def _require_module(module: Any, what: str) -> None:
    if not isinstance(module, nnx.Module):
        raise ParametrizationTypeError(
            f"{what}: expected a flax.nnx Module instance; got {type(module).__name__}. "
            "For flax.linen use `parametrax.Parametrized(base, spec)`."
        )


def _resolve_key(rngs: Any, key: Any, what: str) -> Array | None:
    if rngs is not None and key is not None:
        raise ParametrizationTypeError(f"{what}: pass `rngs=` or `key=`, not both.")
    if rngs is not None:
        if not isinstance(rngs, nnx.Rngs):
            raise ParametrizationTypeError(
                f"{what}: `rngs` must be an nnx.Rngs; got {type(rngs).__name__}."
            )
        return rngs.params()
    return key


def _spec(x: Any) -> str:
    return f"shape {tuple(x.shape)} and dtype {jnp.dtype(x.dtype).name}"


def _chain_str(chain) -> str:
    return chain_repr(chain)


def _like(var: nnx.Variable, value: Any) -> nnx.Variable:
    """A new Variable of ``var``'s type and metadata (sharding dropped if the shape differs)."""
    metadata = var.get_metadata()
    old = var.get_value()
    if getattr(old, "shape", None) != getattr(value, "shape", None):
        for k in _SHARDING_METADATA:
            metadata.pop(k, None)
    return type(var).from_metadata(value, metadata)


def _check_mutable(modules: list, variables: list[nnx.Variable], what: str) -> None:
    """Raises before anything changes if nnx would refuse a mutation (wrong trace level)."""
    ok = all(_compat.module_is_mutable_here(m) for m in modules) and all(
        _compat.variable_is_mutable_here(v) for v in variables
    )
    if not ok:
        raise ParametrizationError(
            f"{what}: the module was created outside the current JAX transformation, so it "
            "cannot be changed from inside it; register, assign or remove outside the "
            "transformation (or build the module inside it)."
        )


def _infer_mode(module: Any, default: bool = False) -> bool:
    """``use_running_average`` for a new chain: the host's own flag, else the first submodule's."""
    for attr in _MODE_ATTRS:
        v = vars(module).get(attr)
        if isinstance(v, bool):
            return v
    for _, sub in nnx.iter_modules(module):
        if sub is module:
            continue
        for attr in _MODE_ATTRS:
            v = vars(sub).get(attr)
            if isinstance(v, bool):
                return v
    return default


def _needs_key(chain) -> bool:
    return any(p.has_variables for p in chain)


def _missing_key_error(what: str, chain) -> ParametrizationError:
    owners = ", ".join(describe(p) for p in chain if p.has_variables)
    return ParametrizationError(
        f"{what}: {owners} owns variables (init_variables) and needs random numbers to make "
        "them; pass `rngs=nnx.Rngs(...)` or `key=jax.random.key(...)`."
    )
