"""The Flax linen front: ``Parametrized(base, spec)`` and the functions that act on its variables.

How it works: the wrapper is a subclass of the base module class (so it has the same fields and
``isinstance(layer, nn.Dense)`` holds, as torch's injected class does) whose methods run the base
module *functionally*. At ``init`` it initialises the base module, registers the spec on the
base variables (right_inverse of the initial values) and stores the raw tree in its own scope.
At ``apply`` it evaluates every chain once, hands the constrained variables to the base module's
``apply`` and writes back whatever the base module mutated. The constraint is therefore computed
once per ``apply``, however often the base module reads the value (an RNN scanning 100 steps
over its recurrent kernel evaluates the map once, not 100 times).

Variables layout (torch's ``state_dict``, functionally)::

    params/<every unparametrized param, where the base module puts it>
    params/parametrizations/<path>/original            (or original0, original1, ...)
    params/parametrizations/<path>/<i>/<name>          learnable params of link i
    parametrization_state/parametrizations/<path>/<i>/<name>   state of link i (mask, u, v, base)

Spec keys address the ``params`` collection; ``"<collection>:<path>"`` addresses another
collection (torch's buffers), e.g. ``"batch_stats:BatchNorm_0/mean"``; its raw values live in
``<collection>/parametrizations/...`` and its link state under
``parametrization_state/<collection>/parametrizations/...``.

Train and eval: stateful parametrizations (a spectral norm's power iteration) advance their
state exactly when the ``parametrization_state`` collection is mutable, i.e. when you call
``model.apply(variables, x, mutable=["parametrization_state"])``. A plain ``apply`` reuses the
stored state and changes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
from flax.core import meta

from parametrax import tree as _tree
from parametrax.tree import paths as _paths
from parametrax._errors import (
    NotParametrizedError,
    ParametrizationError,
    ParametrizationTypeError,
    SpecError,
)
from parametrax.tree import PARAMETRIZATIONS, Spec

__all__ = [
    "Parametrized",
    "STATE_COLLECTION",
    "constrained",
    "assign",
    "remove_parametrizations",
    "is_parametrized",
    "type_before_parametrizations",
    "spec_of",
]

STATE_COLLECTION = "parametrization_state"
_PARAMS = "params"


# ------------------------------------------------------------------------------------------------
# Spec per collection
# ------------------------------------------------------------------------------------------------
def _split_key(key: str) -> tuple[str, str]:
    if ":" in key:
        col, path = key.split(":", 1)
        if not col or not path:
            raise SpecError(
                f"spec key `{key}`: expected `<path>` (in params) or `<collection>:<path>`."
            )
        return col, path
    return _PARAMS, key


def _by_collection(spec: Spec) -> dict[str, Spec]:
    out: dict[str, list] = {}
    for key, chain in spec.entries:
        col, path = _split_key(key)
        out.setdefault(col, []).append((path, chain))
    return {col: Spec(tuple(entries)) for col, entries in out.items()}


def _state_slice(state_tree: Mapping | None, col: str) -> dict:
    if not state_tree:
        return {}
    if col == _PARAMS:
        return {k: v for k, v in state_tree.items() if k == PARAMETRIZATIONS}
    return dict(state_tree.get(col, {}))


def _state_merge(state_tree: dict, col: str, sub: Mapping) -> None:
    if not sub:
        if col != _PARAMS:
            state_tree.pop(col, None)
        else:
            state_tree.pop(PARAMETRIZATIONS, None)
        return
    if col == _PARAMS:
        state_tree[PARAMETRIZATIONS] = sub[PARAMETRIZATIONS]
    else:
        state_tree[col] = dict(sub)


# ------------------------------------------------------------------------------------------------
# Boxed metadata (nn.Partitioned and friends): unbox to compute, rebox to store
# ------------------------------------------------------------------------------------------------
def _is_box(x: Any) -> bool:
    return isinstance(x, meta.AxisMetadata)


def _unbox(tree: Any) -> Any:
    return meta.unbox(tree)


def _rebox_like(new: Any, old: Any) -> Any:
    """Puts ``new`` back in the box ``old`` came in, when the shapes still fit."""
    if _is_box(old):
        inner = old.unbox()
        if getattr(inner, "shape", None) == getattr(new, "shape", None):
            return old.replace_boxed(new)
    return new


def _rebox_raw(raw: dict, boxed_tree: Mapping) -> dict:
    """Reboxes originals whose variable was boxed (same shape), and every plain leaf as before."""
    flat_boxed = {}
    for path, leaf in _paths.flatten(boxed_tree).items():
        flat_boxed[path] = leaf
    out = {}
    for k, v in raw.items():
        if k == PARAMETRIZATIONS:
            out[k] = _rebox_slots(v, flat_boxed, "")
        else:
            out[k] = _rebox_plain(v, boxed_tree.get(k))
    return out


def _rebox_plain(v: Any, old: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _rebox_plain(x, old.get(k) if isinstance(old, Mapping) else None) for k, x in v.items()}
    return _rebox_like(v, old)


def _rebox_slots(node: Mapping, flat_boxed: Mapping, prefix: str) -> dict:
    out = {}
    for k, v in node.items():
        p = f"{prefix}{k}"
        if isinstance(v, Mapping) and ("original" in v or "original0" in v):
            # The originals, and link params of the variable's shape, take the variable's box.
            out[k] = _rebox_all(v, flat_boxed.get(p))
        elif isinstance(v, Mapping):
            out[k] = _rebox_slots(v, flat_boxed, p + "/")
        else:
            out[k] = v
    return out


def _rebox_all(node: Any, box: Any) -> Any:
    """Every leaf of ``node`` whose shape is the boxed variable's goes in a copy of its box."""
    if isinstance(node, Mapping):
        return {k: _rebox_all(v, box) for k, v in node.items()}
    return _rebox_like(node, box)


def _rebox_state(state: Mapping, boxed_tree: Mapping) -> dict:
    """Link state of a boxed variable (a pruning mask) takes the variable's box when the shapes
    match, so a sharded kernel's mask is sharded like it; other state stays unboxed (replicated).
    """
    out = dict(state)
    if PARAMETRIZATIONS not in state:
        return out
    node = _paths.to_dict(state[PARAMETRIZATIONS])
    for path, leaf in _paths.flatten(boxed_tree).items():
        if not _is_box(leaf):
            continue
        try:
            entry = _paths.get_path(node, path)
        except (KeyError, TypeError):
            continue
        _paths.set_path(node, path, _rebox_all(entry, leaf))
    out[PARAMETRIZATIONS] = node
    return out


def _boxes_after_bake(boxed_col: Mapping, baked: Mapping, paths: list[str]) -> dict:
    """A box source for a baked collection: each un-parametrized variable takes the box of its
    raw original of the same shape (``nn.with_partitioning`` annotations survive removal)."""
    src = _paths.to_dict(boxed_col)
    for path in paths:
        try:
            slot = _paths.get_path(boxed_col[PARAMETRIZATIONS], path)
            value = _paths.get_path(baked, path)
        except (KeyError, TypeError):
            continue
        for name in sorted(k for k in slot if k.startswith("original")):
            box = slot[name]
            if _is_box(box) and getattr(box.unbox(), "shape", None) == getattr(value, "shape", 0):
                _paths.set_path(src, path, box)
                break
    return src


# ------------------------------------------------------------------------------------------------
# The wrapper class
# ------------------------------------------------------------------------------------------------
def _base_fields(cls: type) -> list[str]:
    return [
        f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")
    ]


def _unbind(value: Any) -> Any:
    """Module-valued fields (an RNN's cell) are cloned unbound for the functional base call."""

    def one(x):
        if isinstance(x, nn.Module):
            return x.clone(parent=None, _deep_clone=True)
        return x

    return jax.tree.map(one, value, is_leaf=lambda x: isinstance(x, nn.Module))


def _wrapped_method_names(base: type) -> list[str]:
    names = ["__call__"] if callable(getattr(base, "__call__", None)) else []
    for klass in base.__mro__:
        if klass is nn.Module or not issubclass(klass, nn.Module):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name in ("setup",) or name in names:
                continue
            if inspect.isfunction(value) and not getattr(value, "nowrap", False):
                names.append(name)
    return names


def _make_method(name: str):
    def method(self, *args, **kwargs):
        return self._px_run(name, args, kwargs)

    method.__name__ = name
    method.__qualname__ = name
    return method


def _setup_noop(self) -> None:
    """The base module's ``setup`` runs inside the functional base call, not here."""


class _ParametrizedMixin:
    """Behaviour shared by every class ``Parametrized`` builds (see the module docstring)."""

    _px_spec: Spec
    _px_unsafe: bool
    _px_base: type

    def _px_make_base(self) -> nn.Module:
        base = type(self)._px_base
        kwargs = {n: _unbind(getattr(self, n)) for n in _base_fields(base)}
        return base(**kwargs, parent=None)

    def _px_run(self, method: str, args: tuple, kwargs: dict) -> Any:
        cls = type(self)
        base = self._px_make_base()
        by_col = _by_collection(cls._px_spec)
        rngs = {name: self._px_rng(name) for name in sorted(self.scope.rngs)}
        initialising = self.is_initializing() and not any(
            self.has_variable(col, PARAMETRIZATIONS) for col in by_col
        )
        if initialising:
            self._px_register(base, by_col, rngs, method, args, kwargs)
        stored = {col: dict(tree) for col, tree in self.variables.items()}
        update_state = self.is_mutable_collection(STATE_COLLECTION) and not initialising
        with _explained(cls, f"`{cls.__name__}.{method}`", stored):
            base_vars, new_state = _constrain_collections(
                cls._px_spec, _unbox(stored), update_state=update_state
            )
        mutable = [
            col
            for col in set(base_vars) | {"intermediates"}
            if col != STATE_COLLECTION and self.is_mutable_collection(col)
        ]
        out = base.apply(
            base_vars, *args, rngs=rngs, method=method, mutable=mutable or False, **kwargs
        )
        if mutable:
            out, mutated = out
            if not initialising:  # at init the values were just stored: keep them as made
                self._px_write_back(mutated, stored, by_col, base_vars)
        if update_state and new_state:
            for k, v in new_state.items():
                old = stored.get(STATE_COLLECTION, {}).get(k)
                self.put_variable(STATE_COLLECTION, k, _rebox_plain(v, old))
        return out

    def _px_rng(self, name: str) -> Any:
        """The rng stream handed to the base module.

        On a module's first use of a stream this is the wrapper's own (lazy) stream, so the base
        module draws exactly what it would draw unwrapped: ``Parametrized(nn.Dense(3), spec)``
        initialises the same kernel as ``nn.Dense(3)`` before registering it. Later calls in the
        same ``apply`` get fresh keys, as a plain module's would.
        """
        counters = getattr(self.scope, "rng_counters", {})
        first = counters.get(name, 0) == 0
        key = self.make_rng(name)  # consume one draw so a second call differs
        return self.scope.rngs[name] if first else key

    def _px_register(self, base, by_col, rngs, method, args, kwargs) -> None:
        cls = type(self)
        init_vars = base.init(rngs, *args, method=method, **kwargs)
        init_vars = {col: dict(tree) for col, tree in init_vars.items()}
        key = self.make_rng(_PARAMS) if self.has_rng(_PARAMS) else None
        missing = sorted(set(by_col) - set(init_vars))
        if missing:
            raise SpecError(
                f"`{cls.__name__}`: the spec names the collection(s) {missing}, which "
                f"`{cls._px_base.__name__}` does not create; it creates {sorted(init_vars)}."
            )
        results = {}
        state_tree: dict = {}
        cols = sorted(by_col)
        keys = dict(zip(cols, jax.random.split(key, len(cols)))) if key is not None else {}
        for col in cols:
            try:
                raw, st = _tree.register(
                    by_col[col],
                    _unbox(init_vars[col]),
                    key=keys.get(col),
                    unsafe=cls._px_unsafe,
                    update_state=self.is_mutable_collection(STATE_COLLECTION),
                )
            except ParametrizationError as e:
                where = f" in collection `{col}`" if col != _PARAMS else ""
                raise type(e)(f"`{cls.__name__}`{where}: {e}") from None
            results[col] = _rebox_raw(raw, init_vars[col])
            _state_merge(state_tree, col, _rebox_state(st, init_vars[col]))
        # Nothing is stored until every collection registered without error.
        for col, tree in init_vars.items():
            tree = results.get(col, tree)
            for k, v in tree.items():
                self.put_variable(col, k, v)
        for k, v in state_tree.items():
            self.put_variable(STATE_COLLECTION, k, v)

    def _px_write_back(
        self, mutated: Mapping, stored: Mapping, by_col: Mapping, given: Mapping
    ) -> None:
        for col, tree in mutated.items():
            if col == "intermediates":
                for k, v in tree.items():
                    self.put_variable(col, k, v)
                continue
            if col in by_col:
                parametrized = set(
                    _tree.parametrized_paths(by_col[col], _unbox(stored[col]))
                )
                flat = _paths.flatten(tree)
                given_flat = _paths.flatten(given.get(col, {}))
                # Only values the base module actually wrote (a new object, not the array it
                # was handed) go back through right_inverse; apply(..., mutable=True) must not
                # re-assign every parametrized variable.
                changed = [p for p in parametrized if p in flat and flat[p] is not given_flat.get(p)]
                # The base module wrote to a parametrized variable (e.g. a running average that
                # is parametrized): store it through the right_inverse chain, like torch's setter.
                raw = _unbox(stored[col])
                state = _state_slice(_unbox(stored.get(STATE_COLLECTION, {})), col)
                if changed:
                    raw, state = _tree.assign(
                        by_col[col], raw, state, {p: flat[p] for p in changed}
                    )
                for p, v in flat.items():
                    if p not in parametrized:
                        _paths.set_path(raw, p, v)
                for k, v in raw.items():
                    self.put_variable(col, k, _rebox_plain(v, stored[col].get(k)))
            else:
                for k, v in tree.items():
                    self.put_variable(col, k, _rebox_plain(v, stored.get(col, {}).get(k)))


@contextlib.contextmanager
def _explained(cls: type, what: str, variables: Mapping):  # what: already formatted
    """Re-raises errors about the variables handed to a parametrized module with the module's
    name and, when the cause is a missing collection or foreign variables, what to pass instead."""
    by_col = _by_collection(cls._px_spec)
    missing = sorted(col for col in by_col if col not in variables)
    if missing:
        raise NotParametrizedError(
            f"{what}: the variables have no {', '.join(f'`{c}`' for c in missing)} "
            f"collection; got the collections {sorted(variables) or '(none)'}. Pass the "
            f"variables `{cls.__name__}.init` returned."
        )
    try:
        yield
    except ParametrizationError as e:
        hint = ""
        if isinstance(e, NotParametrizedError) and f"no `{PARAMETRIZATIONS}` entry" in str(e):
            hint = (
                f" These are not the variables of a `{cls.__name__}` (a plain "
                f"`{cls._px_base.__name__}`'s, or another model's?): pass the variables "
                f"`{cls.__name__}.init` returned, or convert plain ones with "
                "`parametrax.tree.register`."
            )
        elif STATE_COLLECTION not in variables and "which it was not given" in str(e):
            hint = (
                f" The variables have no `{STATE_COLLECTION}` collection: pass every collection "
                "`init` returned."
            )
        raise type(e)(f"{what}: {e}{hint}") from None


def _constrain_collections(spec: Spec, variables: Mapping, *, update_state: bool):
    by_col = _by_collection(spec)
    state_tree = dict(variables.get(STATE_COLLECTION, {}))
    new_state = dict(state_tree)
    out = {}
    for col, tree in variables.items():
        if col == STATE_COLLECTION:
            continue
        if col in by_col:
            value, st = _tree.forward(
                by_col[col], tree, _state_slice(state_tree, col), update_state=update_state
            )
            out[col] = value
            _state_merge(new_state, col, st)
        else:
            out[col] = tree
    return out, new_state


@functools.lru_cache(maxsize=None)
def _parametrized_class(base: type, spec: Spec, unsafe: bool) -> type:
    namespace: dict[str, Any] = {
        "_px_spec": spec,
        "_px_unsafe": unsafe,
        "_px_base": base,
        "setup": _setup_noop,
        "__module__": base.__module__,
        "__doc__": (
            f"`{base.__name__}` with parametrized variables "
            f"{', '.join(f'`{k}`' for k in spec.keys())} (made by `parametrax.Parametrized`)."
        ),
    }
    for name in _wrapped_method_names(base):
        namespace[name] = _make_method(name)
    return type(f"Parametrized{base.__name__}", (_ParametrizedMixin, base), namespace)


def _merge_specs(inner: Spec, outer: Spec) -> Spec:
    merged: dict[str, tuple] = dict(inner.entries)
    for key, chain in outer.entries:
        merged[key] = merged.get(key, ()) + chain
    return Spec(tuple(merged.items()))


def Parametrized(base: Any, spec: Any, *, unsafe: bool = False) -> Any:  # noqa: N802
    """Wraps a linen module so that the variables named in ``spec`` are parametrized.

    Args:
      base: a ``nn.Module`` subclass (returns a subclass, like ``nn.remat``:
        ``Parametrized(nn.Dense, spec)(features=3)``) or an instance (returns a wrapping
        instance with the same fields: ``Parametrized(nn.Dense(3), spec)``). Wrapping a
        parametrized module again appends to the chains (torch's repeated registration).
      spec: ``{path_or_glob: parametrization or [p0, p1, ...]}``. Paths are ``/``-separated
        variable paths inside the base module's ``params`` (``"kernel"``, ``"Dense_0/kernel"``,
        ``"cell/hh/kernel"``); ``*`` matches within a segment and ``**`` across segments
        (``"*/kernel"``, ``"**/kernel"``); ``"<collection>:<path>"`` addresses another
        collection. A key matching nothing is an error listing the paths that exist.
      unsafe: allow chains whose forward changes the variable's shape or dtype.

    Example::

        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> from parametrax import Parametrized, skew, cayley, constrained
        >>> layer = Parametrized(nn.Dense, {"kernel": [skew, cayley]})(features=3)
        >>> variables = layer.init(jax.random.key(0), jnp.ones((1, 3)))
        >>> jax.tree.map(jnp.shape, variables)
        {'params': {'bias': (3,), 'parametrizations': {'kernel': {'original': (3, 3)}}}}
        >>> K = constrained(layer, variables)["params"]["kernel"]
        >>> bool(jnp.allclose(K.T @ K, jnp.eye(3), atol=1e-5))
        True
    """
    spec = Spec.of(spec)
    if not isinstance(unsafe, bool):
        raise ParametrizationTypeError(f"`unsafe` must be a bool; got {unsafe!r}.")
    if inspect.isclass(base) and issubclass(base, nn.Module):
        if issubclass(base, _ParametrizedMixin):
            return _parametrized_class(
                base._px_base, _merge_specs(base._px_spec, spec), base._px_unsafe or unsafe
            )
        return _parametrized_class(base, spec, unsafe)
    if isinstance(base, nn.Module):
        cls = Parametrized(type(base), spec, unsafe=unsafe)
        kwargs = {n: getattr(base, n) for n in _base_fields(cls._px_base)}
        if base.scope is not None:
            # Made inside a compact method, the base instance is already attached to its parent
            # under its (explicit or automatic) name: the wrapper takes over that scope, so the
            # parametrized layer lives exactly where the plain one would.
            return cls(**kwargs, name=base.name, parent=base.scope)
        if base.name is not None:
            kwargs["name"] = base.name  # an explicitly named layer keeps its name
        return cls(**kwargs)
    raise ParametrizationTypeError(
        "Parametrized(base, spec): `base` must be a flax.linen Module class or instance "
        f"(e.g. `nn.Dense` or `nn.Dense(3)`); got {type(base).__name__} {base!r}."
    )


# ------------------------------------------------------------------------------------------------
# Functions on (model, variables)
# ------------------------------------------------------------------------------------------------
def _require_parametrized(model: Any, what: str) -> type:
    cls = model if inspect.isclass(model) else type(model)
    if not (inspect.isclass(cls) and issubclass(cls, _ParametrizedMixin)):
        raise NotParametrizedError(
            f"{what}: `{getattr(cls, '__name__', cls)}` is not a parametrized module; wrap it "
            "with `parametrax.Parametrized(base, spec)` first."
        )
    return cls


def _check_variables(variables: Any, what: str) -> dict:
    if not isinstance(variables, Mapping):
        raise ParametrizationTypeError(
            f"{what}: `variables` must be the dict returned by `model.init`; got "
            f"{type(variables).__name__}."
        )
    return {col: dict(tree) for col, tree in variables.items()}


def spec_of(model: Any) -> Spec:
    """The normalised spec of a parametrized module (instance or class)."""
    return _require_parametrized(model, "spec_of")._px_spec


def constrained(model: Any, variables: Mapping) -> dict:
    """The variables the base module sees (torch's ``layer.weight``): every chain evaluated once,
    without state updates, with the layout of the plain base module's variables.

    >>> # constrained(layer, variables)["params"]["kernel"]
    """
    cls = _require_parametrized(model, "constrained")
    variables = _check_variables(variables, "constrained")
    with _explained(cls, f"constrained(`{cls.__name__}`)", variables):
        out, _ = _constrain_collections(cls._px_spec, _unbox(variables), update_state=False)
    return out


def assign(
    model: Any, variables: Mapping, values: Mapping[str, Any], *, key: jax.Array | None = None
) -> dict:
    """Torch's ``layer.weight = X``: returns new variables whose constrained value at each path
    is ``forward(right_inverse(X))``.

    ``values`` maps variable paths (``"kernel"``, ``"Dense_0/kernel"``, or
    ``"<collection>:<path>"``) to arrays of the current value's shape and dtype. ``key`` feeds
    parametrizations whose right_inverse draws random numbers (the completion of a non-square
    orthogonal base). ``variables`` is never modified; on error nothing is returned.
    """
    cls = _require_parametrized(model, "assign")
    variables = _check_variables(variables, "assign")
    if not isinstance(values, Mapping):
        raise ParametrizationTypeError(
            f"assign: `values` must be a mapping {{path: array}}; got {type(values).__name__}."
        )
    by_col = _by_collection(cls._px_spec)
    per_col: dict[str, dict] = {}
    for k, v in values.items():
        col, path = _split_key(k)
        if col not in by_col or col not in variables:
            raise NotParametrizedError(
                f"assign: `{k}` is not parametrized in `{cls.__name__}` (spec keys: "
                f"{', '.join(f'`{s}`' for s in cls._px_spec.keys())})."
            )
        per_col.setdefault(col, {})[path] = v
    new = dict(variables)
    state_tree = dict(_unbox(variables.get(STATE_COLLECTION, {})))
    cols = sorted(per_col)
    keys = dict(zip(cols, jax.random.split(key, len(cols)))) if key is not None else {}
    for col in cols:
        with _explained(cls, f"assign to `{cls.__name__}`", variables):
            raw, st = _tree.assign(
                by_col[col],
                _unbox(variables[col]),
                _state_slice(state_tree, col),
                per_col[col],
                key=keys.get(col),
            )
        new[col] = _rebox_plain(raw, variables[col])
        _state_merge(state_tree, col, st)
    if STATE_COLLECTION in variables or state_tree:
        new[STATE_COLLECTION] = _rebox_plain(state_tree, variables.get(STATE_COLLECTION, {}))
    return new


def remove_parametrizations(
    model: Any,
    variables: Mapping,
    names: Any = None,
    *,
    leave_parametrized: bool = True,
) -> tuple[nn.Module, dict]:
    """Torch's ``remove_parametrizations``: returns ``(module, variables)``.

    ``names``: variable paths or globs to unparametrize (default: all). When all are removed,
    ``module`` is the plain base module (unbound, same fields) and ``variables`` is what it
    accepts; otherwise ``module`` is a ``Parametrized`` base with the remaining chains. With
    ``leave_parametrized=True`` removed variables keep their constrained values; with ``False``
    they become the raw ``original`` (refused for chains storing several raw arrays, like weight
    norm's ``(g, v)``).
    """
    cls = _require_parametrized(model, "remove_parametrizations")
    variables = _check_variables(variables, "remove_parametrizations")
    by_col = _by_collection(cls._px_spec)
    plain = _unbox(variables)
    what = f"remove_parametrizations from `{cls.__name__}`"
    # Resolve every spec key to exact paths so partial removal can rebuild a spec.
    exact: dict[str, tuple] = {}
    with _explained(cls, what, variables):
        for col, spec in by_col.items():
            # Resolve all paths at once: resolving one path alone fails on the other keys.
            resolved = spec.resolve(_tree.parametrized_paths(spec, plain[col]))
            for path, (_, chain) in sorted(resolved.items()):
                key = path if col == _PARAMS else f"{col}:{path}"
                exact[key] = chain
    if names is None:
        chosen = list(exact)
    else:
        chosen = []
        for name in [names] if isinstance(names, str) else list(names):
            hits = [
                k
                for k in exact
                if k == name or _paths.glob_match(name.split("/"), k.split("/"))
            ]
            if not hits:
                raise NotParametrizedError(
                    f"remove_parametrizations: `{name}` is not parametrized in "
                    f"`{cls.__name__}`; the parametrized variables are "
                    f"{', '.join(f'`{k}`' for k in sorted(exact))}."
                )
            chosen += [h for h in hits if h not in chosen]
    new = dict(variables)
    state_tree = dict(plain.get(STATE_COLLECTION, {}))
    for col in sorted(by_col):
        col_names = [
            _split_key(k)[1] for k in chosen if _split_key(k)[0] == col
        ]
        if not col_names:
            continue
        with _explained(cls, what, variables):
            tree, st = _tree.bake(
                by_col[col],
                plain[col],
                _state_slice(state_tree, col),
                names=col_names,
                leave_parametrized=leave_parametrized,
            )
        new[col] = _rebox_plain(tree, _boxes_after_bake(variables[col], tree, col_names))
        _state_merge(state_tree, col, st)
    if state_tree:
        new[STATE_COLLECTION] = _rebox_plain(state_tree, variables.get(STATE_COLLECTION, {}))
    else:
        new.pop(STATE_COLLECTION, None)
    base = model._px_make_base() if not inspect.isclass(model) else cls._px_base
    remaining = [k for k in exact if k not in chosen]
    if not remaining:
        return base, new
    spec = Spec(tuple((k, exact[k]) for k in remaining))
    if inspect.isclass(model):
        return _parametrized_class(cls._px_base, spec, cls._px_unsafe), new
    return Parametrized(base, spec, unsafe=cls._px_unsafe), new


def is_parametrized(model: Any, name: str | None = None) -> bool:
    """Whether ``model`` (instance or class) is parametrized, or whether ``name`` is: ``name`` is
    compared to the spec keys, exactly or through their globs."""
    cls = model if inspect.isclass(model) else type(model)
    if not (inspect.isclass(cls) and issubclass(cls, _ParametrizedMixin)):
        return False
    if name is None:
        return True
    if not isinstance(name, str):
        raise ParametrizationTypeError(
            f"is_parametrized: `name` must be a variable path string like 'kernel'; got "
            f"{type(name).__name__} {name!r}."
        )
    for key in cls._px_spec.keys():
        if key == name or _paths.glob_match(key.split("/"), name.split("/")):
            return True
    return False


def type_before_parametrizations(model: Any) -> type:
    """The base module class (torch's ``type_before_parametrizations``)."""
    cls = model if inspect.isclass(model) else type(model)
    if inspect.isclass(cls) and issubclass(cls, _ParametrizedMixin):
        return cls._px_base
    return cls

