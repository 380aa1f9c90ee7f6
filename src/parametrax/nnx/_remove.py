"""``remove_parametrizations`` and ``transfer_parametrizations_and_params``."""

from __future__ import annotations

import copy

import jax.numpy as jnp
from flax import nnx

from parametrax import _core
from parametrax._errors import (
    NotParametrizedError,
    ParametrizationError,
    ParametrizationTypeError,
    ShapeError,
)
from parametrax.nnx import _compat
from parametrax.nnx._classes import _parametrized_class
from parametrax.nnx._containers import (
    PARAMETRIZATIONS,
    ParametrizationDict,
    ParametrizationList,
    _base_of,
    _names_str,
    _qualified,
    is_parametrized,
)
from parametrax.nnx._memo import _evaluate, _invalidate, _value_of
from parametrax.nnx._util import _check_mutable, _infer_mode, _like, _require_module, _spec


def _original_variable(plist: ParametrizationList) -> nnx.Variable:
    """The Variable that stores ``original``, following nested parametrizations (torch §11)."""
    var = vars(plist).get("original")
    if isinstance(var, nnx.Variable):
        return var
    return _original_variable(vars(plist)[PARAMETRIZATIONS]["original"])


def remove_parametrizations(
    module: nnx.Module, name: str, *, leave_parametrized: bool = True
) -> nnx.Module:
    """Torch's ``remove_parametrizations``: ``module.<name>`` becomes a plain Variable again.

    With ``leave_parametrized=True`` it holds the value a read gives now (in eval semantics:
    the state is not advanced; inside ``cached()`` the cached value); with ``False`` the raw
    ``original`` (refused when the chain stores several raw arrays). A single raw array goes
    back in its own Variable object (type and metadata kept); several give a new Variable of
    ``original0``'s type. When nothing stays parametrized the module gets its class back.
    Returns ``module``.
    """
    _require_module(module, "remove_parametrizations")
    if not is_parametrized(module, name):
        raise NotParametrizedError(
            f"remove_parametrizations: {_qualified(module, name)} is not parametrized "
            f"(parametrized: {_names_str(module)})."
        )
    what = f"remove_parametrizations({_qualified(module, name)})"
    pdict = vars(module)[PARAMETRIZATIONS]
    plist = pdict[name]
    if plist.is_tensor:
        var = _original_variable(plist)
        if leave_parametrized:
            value = _evaluate(plist, update_state=False)
        else:
            value = _value_of(plist.original)
        new_var = var
    else:
        if not leave_parametrized:
            raise ParametrizationError(
                f"{what}: cannot leave unparametrized (`leave_parametrized=False`) a variable "
                f"parametrized in terms of {len(plist.original_names)} raw arrays "
                f"({', '.join(plist.original_names)}); use `leave_parametrized=True`."
            )
        value = _evaluate(plist, update_state=False)
        var = vars(plist)[plist.original_names[0]]
        new_var = _like(var, value)
    _check_mutable([module, pdict], [var], what)
    remaining = frozenset(pdict) - {name}
    base = _base_of(module)
    delattr(pdict, name)
    if remaining:
        _compat.set_class(module, _parametrized_class(base, remaining))
    else:
        _compat.set_class(module, base)
        delattr(module, PARAMETRIZATIONS)
    if new_var is var and var.get_value() is not value:
        var.set_value(value)
    setattr(module, name, new_var)
    _invalidate(plist)
    return module


def transfer_parametrizations_and_params(
    from_module: nnx.Module, to_module: nnx.Module, name: str | None = None
) -> nnx.Module:
    """Torch's ``transfer_parametrizations_and_params``, but copying: ``to_module`` gets its own
    copy of the chain, raw values, params and state of ``name`` (default: every parametrized
    name), so training or removing on one module never changes the other. Returns
    ``to_module``.

    If ``to_module`` has the variable, it must have the shape and dtype of
    ``from_module.<name>``; it is replaced. A name already parametrized on ``to_module`` is an
    error (remove it first). Nothing happens when ``from_module`` is not parametrized.
    """
    _require_module(from_module, "transfer_parametrizations_and_params")
    _require_module(to_module, "transfer_parametrizations_and_params")
    if not is_parametrized(from_module):
        return to_module
    src = vars(from_module)[PARAMETRIZATIONS]
    names = list(src) if name is None else [name]
    what = (
        f"transfer_parametrizations_and_params(`{_base_of(from_module).__name__}` -> "
        f"`{_base_of(to_module).__name__}`)"
    )
    existing = vars(to_module).get(PARAMETRIZATIONS)
    if existing is not None and not isinstance(existing, ParametrizationDict):
        raise ParametrizationError(
            f"{what}: the target already has an attribute `{PARAMETRIZATIONS}` "
            f"({type(existing).__name__}); parametrax needs that name."
        )
    copies = {}
    for n in names:
        if n not in src:
            raise NotParametrizedError(
                f"{what}: {_qualified(from_module, n)} is not parametrized (parametrized: "
                f"{_names_str(from_module)})."
            )
        if is_parametrized(to_module, n):
            raise ParametrizationError(
                f"{what}: {_qualified(to_module, n)} is already parametrized; remove it first "
                "(`remove_parametrizations`)."
            )
        plist = src[n]
        current = vars(to_module).get(n)
        if current is not None:
            if not isinstance(current, nnx.Variable) or not _core._is_array(current.get_value()):
                raise ParametrizationTypeError(
                    f"{what}: {_qualified(to_module, n)} is a {type(current).__name__}; "
                    "expected an nnx.Variable holding an array (or no attribute)."
                )
            expected = _evaluate(plist, update_state=False)
            got = current.get_value()
            if tuple(got.shape) != tuple(expected.shape) or jnp.dtype(got.dtype) != jnp.dtype(
                expected.dtype
            ):
                raise ShapeError(
                    f"{what}: {_qualified(to_module, n)} has {_spec(got)} but "
                    f"{_qualified(from_module, n)} has {_spec(expected)}."
                )
        elif hasattr(type(to_module), n):
            raise ParametrizationTypeError(
                f"{what}: `{type(to_module).__name__}` has a class attribute `{n}`; cannot "
                "parametrize it."
            )
        new = copy.deepcopy(plist)
        new.use_running_average = _infer_mode(to_module, default=plist.use_running_average)
        copies[n] = new
    _check_mutable([to_module] + ([existing] if existing is not None else []), [], what)
    pdict = existing if existing is not None else ParametrizationDict()
    for n, new in copies.items():
        if n in vars(to_module):
            delattr(to_module, n)
        setattr(pdict, n, new)
    if existing is None:
        setattr(to_module, PARAMETRIZATIONS, pdict)
    _compat.set_class(to_module, _parametrized_class(_base_of(to_module), frozenset(pdict)))
    return to_module
