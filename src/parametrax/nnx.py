"""The Flax NNX front: PyTorch's in-place ``parametrize`` workflow on ``flax.nnx`` modules.

::

    from flax import nnx
    import parametrax as px
    from parametrax import nnx as pnnx

    layer = nnx.Linear(3, 3, rngs=nnx.Rngs(0))
    pnnx.register_parametrization(layer, "kernel", [px.skew, px.cayley])
    layer.kernel                       # orthogonal: computed from the stored raw value
    layer.parametrizations.kernel.original   # the raw value, an nnx.Param
    layer.kernel = Q                   # runs the right_inverse chain (reverse order)
    pnnx.remove_parametrizations(layer, "kernel")   # back to a plain nnx.Linear

How ``module.<name>`` works
---------------------------
As in torch, the first registration swaps the instance's class for a generated subclass
``Parametrized<Class>`` of the original class (``isinstance(layer, nnx.Linear)`` still holds) that
has a ``property`` per parametrized name. The getter evaluates the chain on the stored raw
value(s); the setter runs the right_inverse chain. The generated class is cached per
``(class, parametrized names)``, so two models of the same structure share it and ``nnx.jit``
does not re-trace for them. The variable itself is moved from ``module.<name>`` to
``module.parametrizations.<name>.original`` (``original0``, ``original1``, ... when the first
parametrization's ``right_inverse`` returns several arrays), keeping its Variable type: an
``nnx.Param`` stays an ``nnx.Param`` (and a single-array original keeps the very same Variable
object), an ``nnx.BatchStat`` or plain ``nnx.Variable`` (torch's buffers) keeps its type and so
gets no gradient. Everything lives in the instance's ``__dict__`` as ordinary NNX nodes, so
``nnx.split`` / ``nnx.merge`` / ``nnx.state`` / ``nnx.jit`` / ``nnx.grad`` / ``nnx.vmap`` see a
regular module graph::

    parametrizations/kernel/original     the raw value (same Variable type as before)
    parametrizations/kernel/0/<name>     learnable params of link 0 (nnx.Param)
    parametrizations/kernel/0/<name>     state of link 0 (ParametrizationState, not a Param)

so ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` trains exactly the raw values and the
parametrizations' own params. Create the optimizer *after* registering: the paths change.

Evaluating the map once per step
--------------------------------
XLA does not deduplicate repeated matrix functions (see DESIGN.md), so the property memoizes:
under a JAX transformation (``nnx.jit``, ``nnx.grad``, ``nnx.vmap``, ...) a read whose inputs are
the *same* traced arrays as an earlier read in the *same* trace (raw values, the links' params
and state, the chain, and the mode) returns the earlier result. A model that reads
``self.kernel`` three times per ``nnx.jit`` step therefore puts the map in the jaxpr once. This
is a pure optimisation: the map is a pure function of exactly those inputs, so it changes no
value, and eager code is unaffected (every eager read recomputes, as in torch). It keys on
object identity and the current trace, so it never returns a tracer of a finished trace.

``cached()`` is torch's context manager, for eager code and for stateful maps: inside it each
parametrized value is computed once and reused, and a stateful parametrization advances its
state on the first read only (one power iteration per step, as torch). Unlike torch, the cache
never goes stale: assigning ``module.<name> = X``, appending a parametrization, or an optimizer
update of the raw values (a new array) gives a fresh value inside the context.

Train / eval
------------
Each ``ParametrizationList`` has a ``use_running_average`` flag, the attribute ``nnx.BatchNorm``
and ``nnx.SpectralNorm`` use, so ``model.train()`` / ``model.eval()`` / ``nnx.view(model,
use_running_average=...)`` toggle it. ``use_running_average=False`` (train): a read of a stateful
parametrization (spectral norm's power iteration, the test suite's counters) updates its state;
``True`` (eval): reads reuse the stored state and change nothing. At registration the flag is
taken from the host (its own ``use_running_average`` / ``deterministic`` attribute, else the
first submodule that has one), defaulting to train, as torch's ``training=True``.

Differences from torch, on purpose
----------------------------------
* A failed registration or assignment leaves the module exactly as it was (torch may have
  overwritten the weight already, spec §2.B.4).
* Appending a parametrization checks it against the current value without advancing state;
  removing with ``leave_parametrized=True`` bakes the value a read in eval mode gives (torch runs
  one more power iteration first).
* ``transfer_parametrizations_and_params`` copies the raw values, params and state instead of
  sharing them (torch shares the objects, which its own spec lists as a bug).
* Assigning checks that right_inverse returns the stored shapes and dtypes (torch lets an
  identity right_inverse silently reshape the original).
* ``right_inverse`` that needs random numbers gets ``key`` from :func:`assign`; the property
  setter passes ``key=None`` (torch uses its global RNG).
* Serialisation goes through ``nnx.state`` (e.g. orbax); the generated classes do not pickle
  (torch also refuses to pickle parametrized modules).
"""

from __future__ import annotations

import contextlib
import copy
import threading
import types
import weakref
from collections.abc import Iterator
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
from flax import nnx

from parametrax import _core
from parametrax._core import (
    Parametrization,
    as_chain,
    chain_forward,
    chain_register,
    chain_right_inverse,
    describe,
    empty_variables,
)
from parametrax._errors import (
    NotParametrizedError,
    ParametrizationError,
    ParametrizationTypeError,
    RightInverseError,
    ShapeError,
    SpecError,
    with_context,
)

__all__ = [
    "register_parametrization",
    "remove_parametrizations",
    "is_parametrized",
    "type_before_parametrizations",
    "transfer_parametrizations_and_params",
    "cached",
    "assign",
    "ParametrizationState",
    "ParametrizationDict",
    "ParametrizationList",
    "ParametrizationLink",
]

Array = jax.Array
PARAMETRIZATIONS = "parametrizations"
_MODE_ATTRS = ("use_running_average", "deterministic")
_SHARDING_METADATA = ("out_sharding", "sharding", "sharding_names", "mesh", "sharding_rules")


class ParametrizationState(nnx.Variable):
    """Non-trainable state owned by a parametrization (a pruning mask, spectral norm's ``u``,
    ``v``, a trivialization's base point). Not an ``nnx.Param``, so ``nnx.grad`` and
    ``nnx.Optimizer(..., wrt=nnx.Param)`` leave it alone."""


# ------------------------------------------------------------------------------------------------
# The containers: module.parametrizations[name][i]
# ------------------------------------------------------------------------------------------------
class ParametrizationLink(nnx.Module):
    """One link of a chain: the parametrization (static) and its variables as attributes.

    ``link.parametrization`` is the frozen parametrization object; each learnable param is an
    ``nnx.Param`` attribute and each state entry a :class:`ParametrizationState` attribute, named
    as ``init_variables`` named them (torch: ``parametrizations.weight.0.<name>``).
    """

    def __init__(self, parametrization: Parametrization, params: dict, state: dict):
        for kind, entries in (("params", params), ("state", state)):
            for k in entries:
                if (
                    not isinstance(k, str)
                    or not k.isidentifier()
                    or k.startswith("_")
                    or hasattr(ParametrizationLink, k)
                ):
                    raise ParametrizationError(
                        f"{describe(parametrization)}.init_variables returned the {kind} entry "
                        f"{k!r}; variable names must be identifiers that do not start with `_` "
                        f"and are not attributes of nnx.Module (e.g. `scale`, `u`, `mask`)."
                    )
        clash = sorted(set(params) & set(state))
        if clash:
            raise ParametrizationError(
                f"{describe(parametrization)}.init_variables returned {clash} both as params "
                "and as state; each variable name must be unique within a parametrization."
            )
        self.parametrization = parametrization
        self._px_param_names = tuple(params)
        self._px_state_names = tuple(state)
        for k, v in params.items():
            setattr(self, k, nnx.Param(v))
        for k, v in state.items():
            setattr(self, k, ParametrizationState(v))

    @property
    def params(self) -> dict:
        return {k: getattr(self, k).get_value() for k in self._px_param_names}

    @property
    def state(self) -> dict:
        return {k: getattr(self, k).get_value() for k in self._px_state_names}

    @property
    def variables(self) -> dict:
        return {"params": self.params, "state": self.state}


class ParametrizationList(nnx.Module):
    """The chain of one parametrized variable: torch's ``ParametrizationList``.

    Holds the raw value(s) as ``original`` (or ``original0``, ``original1``, ...), the links as
    ``self[0]``, ``self[1]``, ... (attributes ``"0"``, ``"1"``, so ``nnx.state`` paths read
    ``parametrizations/kernel/"0"/mask``, torch's ``parametrizations.weight.0.mask``; the keys
    are strings because JAX cannot sort a dict mixing ``0`` and ``"original"``), and three
    static fields: ``original_names``, ``unsafe`` and ``use_running_average`` (the train/eval
    flag, see the module docstring).
    Calling it (``plist()``) evaluates the chain, like torch's ``ParametrizationList.forward``.
    """

    def __init__(
        self,
        originals: dict[str, nnx.Variable],
        links: list[ParametrizationLink],
        *,
        unsafe: bool,
        use_running_average: bool,
    ):
        for n, var in originals.items():
            setattr(self, n, var)
        for i, link in enumerate(links):
            setattr(self, str(i), link)
        self.original_names = tuple(originals)
        self.unsafe = unsafe
        self.use_running_average = use_running_average

    def __len__(self) -> int:
        n = 0
        while str(n) in vars(self):
            n += 1
        return n

    def __getitem__(self, i: int) -> ParametrizationLink:
        n = len(self)
        if not isinstance(i, int) or not -n <= i < n:
            raise IndexError(f"the chain has {n} parametrization(s); got index {i!r}.")
        return vars(self)[str(i % n)]

    def __iter__(self) -> Iterator[ParametrizationLink]:
        return (vars(self)[str(i)] for i in range(len(self)))

    @property
    def chain(self) -> tuple[Parametrization, ...]:
        return tuple(link.parametrization for link in self)

    @property
    def is_tensor(self) -> bool:
        """Whether the raw value is one array (``original``), as torch's ``is_tensor``."""
        return self.original_names == ("original",)

    def set_view(self, use_running_average: bool | None = None):
        """Used by ``nnx.view(model, use_running_average=...)``."""
        if use_running_average is not None:
            self.use_running_average = use_running_average

    def __call__(self) -> Array:
        return _evaluate(self)


class ParametrizationDict(nnx.Module):
    """``module.parametrizations``: one :class:`ParametrizationList` attribute per parametrized
    name. ``name in d``, ``d[name]``, ``list(d)`` and ``len(d)`` work as on a dict."""

    def _px_names(self) -> list[str]:
        return sorted(k for k, v in vars(self).items() if isinstance(v, ParametrizationList))

    def __getitem__(self, name: str) -> ParametrizationList:
        if name not in self._px_names():
            raise KeyError(name)
        return vars(self)[name]

    def __contains__(self, name: object) -> bool:
        return name in self._px_names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._px_names())

    def __len__(self) -> int:
        return len(self._px_names())


# ------------------------------------------------------------------------------------------------
# Generated classes
# ------------------------------------------------------------------------------------------------
_CLASSES: dict[tuple[type, frozenset], type] = {}
_CLASSES_LOCK = threading.Lock()


def _make_property(name: str) -> property:
    def getter(self):
        return _evaluate(vars(self)[PARAMETRIZATIONS][name])

    def setter(self, value):
        _assign(self, name, value, key=None)

    return property(
        getter,
        setter,
        doc=f"`{name}`, computed by the parametrization chain from "
        f"`parametrizations.{name}.original`; assigning runs its right_inverse.",
    )


def _px_setattr(self, attr: str, value: Any) -> None:
    cls = type(self)
    if attr in cls._px_names:
        _assign(self, attr, value, key=None)
    else:
        cls._px_base.__setattr__(self, attr, value)


def _parametrized_class(base: type, names: frozenset) -> type:
    key = (base, names)
    with _CLASSES_LOCK:
        cls = _CLASSES.get(key)
        if cls is not None:
            return cls
        namespace: dict[str, Any] = {
            "_px_base": base,
            "_px_names": names,
            "__module__": base.__module__,
            "__qualname__": f"Parametrized{base.__qualname__}",
            "__doc__": f"`{base.__name__}` with parametrized "
            f"{', '.join(f'`{n}`' for n in sorted(names))} (made by "
            "`parametrax.nnx.register_parametrization`).",
            "__setattr__": _px_setattr,
        }
        for n in names:
            namespace[n] = _make_property(n)
        kwds = {"pytree": base._pytree__is_pytree}
        cls = types.new_class(
            f"Parametrized{base.__name__}", (base,), kwds, lambda ns: ns.update(namespace)
        )
        _CLASSES[key] = cls
        return cls


def _is_generated(cls: type) -> bool:
    return "_px_base" in vars(cls)


def _pdict(module: Any) -> ParametrizationDict | None:
    if not _is_generated(type(module)):
        return None
    d = vars(module).get(PARAMETRIZATIONS)
    return d if isinstance(d, ParametrizationDict) else None


def _base_of(module: Any) -> type:
    cls = type(module)
    return cls._px_base if _is_generated(cls) else cls


def _qualified(module: Any, name: str) -> str:
    return f"`{_base_of(module).__name__}.{name}`"


# ------------------------------------------------------------------------------------------------
# Evaluation, memoization and cached()
# ------------------------------------------------------------------------------------------------
class _CacheState(threading.local):
    def __init__(self):
        self.depth = 0
        self.entries: dict[int, tuple[Any, tuple]] = {}


_CACHE = _CacheState()
# Per-trace memo: plist -> (chain, trace, raw inputs, state inputs, update flag, value).
_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _current_trace():
    return jax.extend.core.get_opaque_trace_state(convention="nnx")


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def _value_of(x: Any) -> Any:
    return x.get_value() if isinstance(x, nnx.Variable) else x


def _inputs(plist: ParametrizationList):
    originals = {n: _value_of(getattr(plist, n)) for n in plist.original_names}
    links = list(plist)
    params = [link.params for link in links]
    state = [link.state for link in links]
    return originals, params, state


def _invalidate(plist: ParametrizationList) -> None:
    _CACHE.entries.pop(id(plist), None)
    _MEMO.pop(plist, None)


def _state_variables(plist: ParametrizationList) -> list[nnx.Variable]:
    return [getattr(link, k) for link in plist for k in link._px_state_names]


def _write_state(plist: ParametrizationList, new_state: list[dict]) -> None:
    for link, st in zip(plist, new_state):
        if set(st) != set(link._px_state_names):
            raise ParametrizationError(
                f"{describe(link.parametrization)}.apply returned state entries "
                f"{sorted(st)}, but init_variables made {sorted(link._px_state_names)}."
            )
        for k, v in st.items():
            var = getattr(link, k)
            if v is not var.get_value():
                var.set_value(v)


def _evaluate(plist: ParametrizationList, *, update_state: bool | None = None) -> Array:
    """The chain's value; advances state when in train mode (``update_state`` overrides)."""
    chain = plist.chain
    originals, params, state = _inputs(plist)
    update = (not plist.use_running_average) if update_state is None else update_state
    trace = _current_trace()
    raw_in = tuple(originals.values()) + tuple(jax.tree.leaves(params))
    state_in = tuple(jax.tree.leaves(state))
    if _CACHE.depth:
        hit = _CACHE.entries.get(id(plist))
        if hit is not None:
            _, (c, t, r, v) = hit
            if c == chain and t == trace and _same(r, raw_in):
                return v
    memo = _MEMO.get(plist)
    if memo is not None:
        c, t, r, s, u, v = memo
        if c == chain and t == trace and u == update and _same(r, raw_in) and _same(s, state_in):
            return v
    value, new_state = chain_forward(chain, originals, params, state, update_state=update)
    if update:
        _write_state(plist, new_state)
    if isinstance(value, jax.core.Tracer):
        _MEMO[plist] = (chain, trace, raw_in, state_in, update, value)
    if _CACHE.depth:
        _CACHE.entries[id(plist)] = (plist, (chain, trace, raw_in, value))
    return value


@contextlib.contextmanager
def cached():
    """Torch's ``parametrize.cached()``: inside it each parametrized value is computed once.

    The first read of ``module.<name>`` computes the value (advancing a stateful
    parametrization's state once, in train mode) and later reads return the same array.
    Contexts nest; the cache is cleared when the outermost one exits. Unlike torch, entries
    never go stale: assigning ``module.<name> = X``, appending a parametrization, or a new raw
    value (an optimizer update) recomputes. Usable in eager code and inside a traced step (an
    entry is only reused in the trace that computed it).
    """
    _CACHE.depth += 1
    try:
        yield
    finally:
        _CACHE.depth -= 1
        if _CACHE.depth == 0:
            _CACHE.entries.clear()


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------
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
    return "[" + ", ".join(describe(p) for p in chain) + "]"


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
    ok = True
    for m in modules:
        trace_state = getattr(getattr(m, "_pytree__state", None), "trace_state", None)
        ok = ok and (trace_state is None or trace_state.is_valid())
    for v in variables:
        trace_state = getattr(v, "_trace_state", None)
        ok = ok and (v.hijax or trace_state is None or trace_state.is_valid())
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


def _variable_names(module: Any) -> list[str]:
    names = [k for k, v in vars(module).items() if isinstance(v, nnx.Variable)]
    d = _pdict(module)
    if d is not None:
        names += list(d)
    return sorted(names)


def _needs_key(chain) -> bool:
    return any(p.has_variables for p in chain)


def _missing_key_error(what: str, chain) -> ParametrizationError:
    owners = ", ".join(describe(p) for p in chain if p.has_variables)
    return ParametrizationError(
        f"{what}: {owners} owns variables (init_variables) and needs random numbers to make "
        "them; pass `rngs=nnx.Rngs(...)` or `key=jax.random.key(...)`."
    )


# ------------------------------------------------------------------------------------------------
# register_parametrization
# ------------------------------------------------------------------------------------------------
def register_parametrization(
    module: nnx.Module,
    name: str,
    parametrization: Any,
    *,
    unsafe: bool = False,
    rngs: nnx.Rngs | None = None,
    key: Array | None = None,
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
    key = _resolve_key(rngs, key, what)
    chain = as_chain(parametrization)
    what = f"register_parametrization({_chain_str(chain)} on {_qualified(module, name)})"
    if is_parametrized(module, name):
        _append(module, name, chain, unsafe=unsafe, key=key, what=what)
    else:
        _register_first(module, name, chain, unsafe=unsafe, key=key, what=what)
    return module


def _register_first(module, name, chain, *, unsafe, key, what) -> None:
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
            f"{what}: the {type(var).__name__} holds a {type(value).__name__}; expected an "
            "array."
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
    plist = ParametrizationList(
        orig_vars, links, unsafe=unsafe, use_running_average=_infer_mode(module)
    )
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
    object.__setattr__(module, "__class__", _parametrized_class(_base_of(module), names))
    _invalidate(plist)


def _append(module, name, chain, *, unsafe, key, what) -> None:
    plist = vars(module)[PARAMETRIZATIONS][name]
    if key is None and _needs_key(chain):
        raise _missing_key_error(what, chain)
    keys = (
        list(jax.random.split(key, 2 * len(chain)))
        if key is not None
        else [None] * (2 * len(chain))
    )
    y = _evaluate(plist, update_state=False)
    new_links = []
    for j, p in enumerate(chain):
        variables = p.init_variables(keys[j], y) if p.has_variables else empty_variables()
        variables = {"params": dict(variables["params"]), "state": dict(variables["state"])}
        link = ParametrizationLink(p, variables["params"], variables["state"])
        new_links.append(link)
        last = j == len(chain) - 1
        if unsafe and (last or not any(q.has_variables for q in chain[j + 1 :])):
            continue
        try:
            x, _ = p.apply(variables, y, update_state=False)
        except TypeError as e:
            raise ParametrizationTypeError(
                f"{what}: calling {describe(p)} on the current value ({_spec(y)}) raised "
                f"TypeError: {e}. Only the first parametrization of a chain may take several "
                "raw arrays."
            ) from e
        if unsafe:
            y = x
            continue
        if not _core._is_array(x):
            raise ShapeError(
                f"{what}: a parametrization must return an array; {describe(p)} returned "
                f"{type(x).__name__}."
            )
        if tuple(x.shape) != tuple(y.shape) or jnp.dtype(x.dtype) != jnp.dtype(y.dtype):
            raise ShapeError(
                f"{what}: registering a parametrization may not change the shape or dtype "
                f"unless `unsafe=True`: module.{name} has {_spec(y)}, {describe(p)} returned "
                f"{_spec(x)}."
            )
        if p.has_right_inverse:
            try:
                z, _ = p.apply_inverse(variables, x, key=keys[len(chain) + j])
            except NotImplementedError:
                z = None
            if z is not None:
                if not _core._is_array(z):
                    raise RightInverseError(
                        f"{what}: {describe(p)}.right_inverse must return one array when it "
                        f"is appended to a chain; got {type(z).__name__}."
                    )
                if tuple(z.shape) != tuple(y.shape) or jnp.dtype(z.dtype) != jnp.dtype(y.dtype):
                    raise RightInverseError(
                        f"{what}: {describe(p)}.right_inverse must keep the shape and dtype "
                        f"unless `unsafe=True`: module.{name} has {_spec(y)}, right_inverse "
                        f"returned {_spec(z)}."
                    )
        y = x
    _check_mutable([plist], [], what)
    n = len(plist)
    for j, link in enumerate(new_links):
        setattr(plist, str(n + j), link)
    if unsafe:
        plist.unsafe = True
    _invalidate(plist)


# ------------------------------------------------------------------------------------------------
# Assignment
# ------------------------------------------------------------------------------------------------
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
    _write_state(plist, new_state)
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


# ------------------------------------------------------------------------------------------------
# Queries, removal, transfer
# ------------------------------------------------------------------------------------------------
def is_parametrized(module: Any, name: str | None = None) -> bool:
    """Whether ``module`` has a parametrized variable, or whether ``name`` is one."""
    d = _pdict(module)
    if d is None:
        return False
    return len(d) > 0 if name is None else name in d


def type_before_parametrizations(module: Any) -> type:
    """The class ``module`` had before its first registration (torch's helper of that name)."""
    return _base_of(module)


def _names_str(module: Any) -> str:
    d = _pdict(module)
    return ", ".join(f"`{n}`" for n in d) if d else "none"


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
            value = _value_of(getattr(plist, "original"))
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
        object.__setattr__(module, "__class__", _parametrized_class(base, remaining))
    else:
        object.__setattr__(module, "__class__", base)
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
    object.__setattr__(
        to_module, "__class__", _parametrized_class(_base_of(to_module), frozenset(pdict))
    )
    return to_module
