"""``register_parametrization``: first registration and appending to a chain."""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from parametrax import _core
from parametrax._core import as_chain, chain_append, chain_register
from parametrax._errors import (
    ParametrizationError,
    ParametrizationTypeError,
    SpecError,
    with_context,
)
from parametrax.nnx import _compat
from parametrax.nnx._classes import _parametrized_class
from parametrax.nnx._containers import (
    PARAMETRIZATIONS,
    ParametrizationDict,
    ParametrizationLink,
    ParametrizationList,
    _base_of,
    _qualified,
    _variable_names,
    is_parametrized,
)
from parametrax.nnx._memo import _evaluate, _invalidate
from parametrax.nnx._util import (
    _chain_str,
    _check_mutable,
    _infer_mode,
    _like,
    _missing_key_error,
    _needs_key,
    _require_module,
    _resolve_key,
)

Array = jax.Array


def register_parametrization(
    module: nnx.Module,
    name: str,
    parametrization: Any,
    *,
    unsafe: bool = False,
    rngs: nnx.Rngs | None = None,
    key: Array | None = None,
    use_running_average: bool | None = None,
) -> nnx.Module:
    """Torch's ``register_parametrization`` for an NNX module; returns ``module``.

    First registration on ``name``: the variable's value ``W`` is replaced by the raw value(s)
    ``right_inverse(W)`` (the chain's right inverses in reverse order; a missing one counts as
    the identity), stored at ``module.parametrizations.<name>.original`` (``original0``, ...
    for several arrays), and ``module.<name>`` becomes ``forward(raw)``. A forward that changes
    the shape or dtype is refused unless ``unsafe=True``.

    Registering again on a parametrized ``name`` appends to its chain without touching the raw
    values (torch §2.A): afterwards ``module.<name> == p(old value)``. Unless ``unsafe``, ``p``
    is checked on the current value: its forward, and its right_inverse if it has one, must keep
    the shape and dtype.

    Args:
      module: an ``nnx.Module`` instance, changed in place.
      name: an attribute holding an ``nnx.Variable`` of an array (``nnx.Param``, a
        ``BatchStat``, a plain ``nnx.Variable``), or an already parametrized name.
      parametrization: a Parametrization, a plain callable, or a list of them (registered as
        one chain, right_inverse running through all of them).
      unsafe: skip the shape and dtype checks of the forward.
      rngs: ``nnx.Rngs`` feeding parametrizations that own variables (``rngs.params()``).
      key: a PRNG key, instead of ``rngs``.
      use_running_average: the chain's train/eval flag (``True``: eval, stateful links keep
        their state). ``None`` (default) takes the host's mode: its own
        ``use_running_average`` / ``deterministic`` attribute, else the first submodule's (a
        ``BatchNorm``, ``Dropout`` or an already parametrized variable), else train. A host
        without such attributes (``nnx.Linear``, ``nnx.Conv``) does not record a parent's
        ``model.eval()``: registering on it after ``eval()``, pass ``use_running_average=True``
        or call ``model.eval()`` again after registering. Appending to a chain with an
        explicit flag sets the whole chain's flag.

    On error nothing changes: the module's class, its state and its attributes are as before.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import parametrax as px
    >>> from parametrax import nnx as pnnx
    >>> layer = nnx.Linear(3, 3, rngs=nnx.Rngs(0))
    >>> _ = pnnx.register_parametrization(layer, "kernel", [px.skew, px.cayley])
    >>> type(layer).__name__, isinstance(layer, nnx.Linear)
    ('ParametrizedLinear', True)
    >>> Q = layer.kernel
    >>> bool(jnp.allclose(Q.T @ Q, jnp.eye(3), atol=1e-5))
    True
    """
    what = f"register_parametrization(`{type(module).__name__}`, {name!r})"
    _require_module(module, "register_parametrization")
    if not isinstance(name, str):
        raise ParametrizationTypeError(f"{what}: `name` must be a str; got {type(name).__name__}.")
    if not isinstance(unsafe, bool):
        raise ParametrizationTypeError(f"{what}: `unsafe` must be a bool; got {unsafe!r}.")
    if use_running_average is not None and not isinstance(use_running_average, bool):
        raise ParametrizationTypeError(
            f"{what}: `use_running_average` must be a bool or None; got {use_running_average!r}."
        )
    key = _resolve_key(rngs, key, what)
    chain = as_chain(parametrization)
    what = f"register_parametrization({_chain_str(chain)} on {_qualified(module, name)})"
    if is_parametrized(module, name):
        _append(module, name, chain, unsafe=unsafe, key=key, what=what, mode=use_running_average)
    else:
        _register_first(
            module, name, chain, unsafe=unsafe, key=key, what=what, mode=use_running_average
        )
    return module


def _register_first(module, name, chain, *, unsafe, key, what, mode) -> None:
    attrs = vars(module)
    if name == PARAMETRIZATIONS or name not in attrs:
        raise SpecError(
            f"{what}: `{_base_of(module).__name__}` has no variable `{name}`; its variables "
            f"are {', '.join(f'`{n}`' for n in _variable_names(module)) or 'none'}."
        )
    var = attrs[name]
    if not isinstance(var, nnx.Variable):
        hint = (
            f" Wrap it in a Variable first: `module.{name} = nnx.Param(value)` (trainable) or "
            f"`nnx.Variable(value)` (a buffer)."
            if _core._is_array(var)
            else ""
        )
        raise ParametrizationTypeError(
            f"{what}: the attribute is a {type(var).__name__}; expected an nnx.Variable holding "
            f"an array (nnx.Param, nnx.BatchStat, nnx.Variable).{hint}"
        )
    value = var.get_value()
    if not _core._is_array(value):
        raise ParametrizationTypeError(
            f"{what}: the {type(var).__name__} holds a {type(value).__name__}; expected an array."
        )
    existing = attrs.get(PARAMETRIZATIONS)
    if existing is not None and not isinstance(existing, ParametrizationDict):
        raise ParametrizationError(
            f"{what}: the module already has an attribute `{PARAMETRIZATIONS}` "
            f"({type(existing).__name__}); parametrax needs that name."
        )
    if key is None and _needs_key(chain):
        raise _missing_key_error(what, chain)
    try:
        originals, params, state = chain_register(chain, value, key=key, unsafe=unsafe)
    except ParametrizationError as e:
        raise with_context(e, what) from e.__cause__
    if "original" in originals:
        orig_vars = {"original": var}
    else:
        orig_vars = {n: _like(var, r) for n, r in originals.items()}
    links = [ParametrizationLink(p, params[i], state[i]) for i, p in enumerate(chain)]
    mode = _infer_mode(module) if mode is None else mode
    plist = ParametrizationList(orig_vars, links, unsafe=unsafe, use_running_average=mode)
    _check_mutable([module, existing] if existing is not None else [module], [var], what)
    # Commit: nothing below raises for valid input.
    pdict = existing if existing is not None else ParametrizationDict()
    delattr(module, name)
    if "original" in originals:
        var.set_value(originals["original"])
    setattr(pdict, name, plist)
    if existing is None:
        setattr(module, PARAMETRIZATIONS, pdict)
    names = frozenset(pdict)
    _compat.set_class(module, _parametrized_class(_base_of(module), names))
    _invalidate(plist)


def _append(module, name, chain, *, unsafe, key, what, mode) -> None:
    plist = vars(module)[PARAMETRIZATIONS][name]
    if key is None and _needs_key(chain):
        raise _missing_key_error(what, chain)
    y = _evaluate(plist, update_state=False)
    try:
        params, state = chain_append(chain, y, key=key, unsafe=unsafe, offset=len(plist))
    except ParametrizationError as e:
        raise with_context(e, what) from e.__cause__
    new_links = [ParametrizationLink(p, params[j], state[j]) for j, p in enumerate(chain)]
    _check_mutable([plist], [], what)
    n = len(plist)
    for j, link in enumerate(new_links):
        setattr(plist, str(n + j), link)
    if unsafe:
        plist.unsafe = True
    if mode is not None:
        plist.use_running_average = mode
    _invalidate(plist)
