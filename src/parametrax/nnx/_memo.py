"""Evaluating a chain on a module: the per-trace memo and torch's ``cached()``."""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
from flax import nnx

from parametrax._core import chain_forward, describe
from parametrax._errors import ParametrizationError
from parametrax.nnx import _compat

if TYPE_CHECKING:
    from parametrax.nnx._containers import ParametrizationList

Array = jax.Array


class _CacheState(threading.local):
    def __init__(self):
        self.depth = 0
        self.entries: dict[int, tuple[Any, tuple]] = {}


_CACHE = _CacheState()
# Per-trace memo: plist -> (chain, trace, raw inputs, state inputs, update flag, value).
_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ARRAY_IMPL = type(jnp.zeros(()))  # JAX's concrete array class


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def _value_of(x: Any) -> Any:
    return _compat.get_value(x) if _compat.is_variable(x) else x


def _links(plist: ParametrizationList) -> list:
    """``list(plist)``: the links ``"0"``, ``"1"``, ... in one pass over ``vars(plist)``."""
    d = vars(plist)
    links: list = []
    while (k := str(len(links))) in d:
        links.append(d[k])
    return links


def _inputs(plist: ParametrizationList, links: list | None = None):
    originals = {n: _value_of(getattr(plist, n)) for n in plist.original_names}
    if links is None:
        links = _links(plist)
    get = _compat.get_value
    params = [{k: get(getattr(link, k)) for k in link._px_param_names} for link in links]
    state = [{k: get(getattr(link, k)) for k in link._px_state_names} for link in links]
    return originals, params, state


def _invalidate(plist: ParametrizationList) -> None:
    _CACHE.entries.pop(id(plist), None)
    _MEMO.pop(plist, None)


def _state_variables(plist: ParametrizationList) -> list[nnx.Variable]:
    return [getattr(link, k) for link in plist for k in link._px_state_names]


def _same_spec(v: Any, old: Any) -> bool:
    """Whether ``v`` has ``old``'s shape and dtype (as :func:`_check_state` compares them); a
    concrete array of the very same shape and dtype is answered without ``jnp.result_type``."""
    if v is old:
        return True
    if type(v) is _ARRAY_IMPL and type(old) is _ARRAY_IMPL:
        if v.shape == old.shape and v.dtype == old.dtype:
            return True
    return jnp.shape(v) == jnp.shape(old) and jnp.result_type(v) == jnp.result_type(old)


def _check_state(
    plist: ParametrizationList, new_state: list[dict], method: str, links: list | None = None
) -> None:
    """Raises unless ``new_state`` has each link's entries with their shapes and dtypes."""
    for i, (link, st) in enumerate(zip(_links(plist) if links is None else links, new_state)):
        if set(st) != set(link._px_state_names):
            raise ParametrizationError(
                f"{describe(link.parametrization)}.{method} (link {i}) returned state entries "
                f"{sorted(st)}, but init_variables made {sorted(link._px_state_names)}."
            )
        for k, v in st.items():
            old = _compat.get_value(getattr(link, k))
            if not _same_spec(v, old):
                raise ParametrizationError(
                    f"{describe(link.parametrization)}.{method} (link {i}) returned state `{k}` "
                    f"of shape {jnp.shape(v)} and dtype {jnp.result_type(v).name}; it has shape "
                    f"{jnp.shape(old)} and dtype {jnp.result_type(old).name}."
                )


def _write_state(
    plist: ParametrizationList,
    new_state: list[dict],
    method: str = "apply",
    links: list | None = None,
) -> None:
    if links is None:
        links = _links(plist)
    _check_state(plist, new_state, method, links)
    for link, st in zip(links, new_state):
        for k, v in st.items():
            var = getattr(link, k)
            if v is not _compat.get_value(var):
                _compat.set_value(var, v)


def _evaluate(plist: ParametrizationList, *, update_state: bool | None = None) -> Array:
    """The chain's value; advances state when in train mode (``update_state`` overrides)."""
    links = _links(plist)
    chain = tuple(link.parametrization for link in links)
    originals, params, state = _inputs(plist, links)
    update = (not plist.use_running_average) if update_state is None else update_state
    trace = _compat.current_trace()
    # An eager read (top-level trace, no cached() context) never finds a memo entry: entries hold
    # traced values, each keyed on its own trace. It skips the lookup and the input keys.
    eager = not _CACHE.depth and trace == _compat.TOP_LEVEL_TRACE
    raw_in = state_in = None
    if not eager:
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
            if (
                c == chain
                and t == trace
                and u == update
                and _same(r, raw_in)
                and _same(s, state_in)
            ):
                return v
    value, new_state = chain_forward(chain, originals, params, state, update_state=update)
    if update:
        _write_state(plist, new_state, links=links)
    if isinstance(value, jax.core.Tracer):
        if raw_in is None:  # (a tracer read at top level: a leaked tracer)
            raw_in = tuple(originals.values()) + tuple(jax.tree.leaves(params))
            state_in = tuple(jax.tree.leaves(state))
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
