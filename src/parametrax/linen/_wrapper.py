"""``Parametrized(base, spec)``: the wrapper class, made once per ``(base, spec, unsafe)``."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax

from parametrax import _tree
from parametrax._errors import ParametrizationError, ParametrizationTypeError, SpecError
from parametrax._tree import PARAMETRIZATIONS, Spec
from parametrax.linen import _compat
from parametrax.linen._boxes import rebox_plain, rebox_raw, rebox_state, unbox
from parametrax.linen._collections import (
    PARAMS,
    STATE_COLLECTION,
    by_collection,
    constrain_collections,
    explained,
    state_merge,
    state_slice,
)


def _base_fields(cls: type) -> list[str]:
    return [
        f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")
    ]


def _unbind(value: Any) -> Any:
    """Module-valued fields (an RNN's cell) are cloned unbound for the functional base call."""

    def one(x):
        if isinstance(x, nn.Module):
            return _compat.unbound_copy(x)
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
            if inspect.isfunction(value) and not _compat.is_nowrap(value):
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
        by_col = by_collection(cls._px_spec)
        rngs = {name: self._px_rng(name) for name in _compat.rng_names(self)}
        initialising = self.is_initializing() and not any(
            self.has_variable(col, PARAMETRIZATIONS) for col in by_col
        )
        if initialising:
            self._px_register(base, by_col, rngs, method, args, kwargs)
        stored = {col: dict(tree) for col, tree in self.variables.items()}
        update_state = self.is_mutable_collection(STATE_COLLECTION) and not initialising
        with explained(cls, f"`{cls.__name__}.{method}`", stored):
            base_vars, new_state = constrain_collections(
                cls._px_spec, unbox(stored), update_state=update_state
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
                self.put_variable(STATE_COLLECTION, k, rebox_plain(v, old))
        return out

    def _px_rng(self, name: str) -> Any:
        """The rng stream handed to the base module.

        On a module's first use of a stream this is the wrapper's own (lazy) stream, so the base
        module draws exactly what it would draw unwrapped: ``Parametrized(nn.Dense(3), spec)``
        initialises the same kernel as ``nn.Dense(3)`` before registering it. Later calls in the
        same ``apply`` get fresh keys, as a plain module's would.
        """
        first = _compat.is_first_draw(self, name)
        key = self.make_rng(name)  # consume one draw so a second call differs
        return _compat.root_rng(self, name) if first else key

    def _px_register(self, base, by_col, rngs, method, args, kwargs) -> None:
        cls = type(self)
        init_vars = base.init(rngs, *args, method=method, **kwargs)
        init_vars = {col: dict(tree) for col, tree in init_vars.items()}
        key = self.make_rng(PARAMS) if self.has_rng(PARAMS) else None
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
                    unbox(init_vars[col]),
                    key=keys.get(col),
                    unsafe=cls._px_unsafe,
                    update_state=self.is_mutable_collection(STATE_COLLECTION),
                )
            except ParametrizationError as e:
                where = f" in collection `{col}`" if col != PARAMS else ""
                raise type(e)(f"`{cls.__name__}`{where}: {e}") from None
            results[col] = rebox_raw(raw, init_vars[col])
            state_merge(state_tree, col, rebox_state(st, init_vars[col]))
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
                    _tree.parametrized_paths(by_col[col], unbox(stored[col]))
                )
                flat = _tree.flatten(tree)
                given_flat = _tree.flatten(given.get(col, {}))
                # Only values the base module actually wrote (a new object, not the array it
                # was handed) go back through right_inverse; apply(..., mutable=True) must not
                # re-assign every parametrized variable.
                changed = [p for p in parametrized if p in flat and flat[p] is not given_flat.get(p)]
                # The base module wrote to a parametrized variable (e.g. a running average that
                # is parametrized): store it through the right_inverse chain, like torch's setter.
                raw = unbox(stored[col])
                state = state_slice(unbox(stored.get(STATE_COLLECTION, {})), col)
                if changed:
                    raw, state = _tree.assign(
                        by_col[col], raw, state, {p: flat[p] for p in changed}
                    )
                for p, v in flat.items():
                    if p not in parametrized:
                        _tree._set(raw, p, v)
                for k, v in raw.items():
                    self.put_variable(col, k, rebox_plain(v, stored[col].get(k)))
            else:
                for k, v in tree.items():
                    self.put_variable(col, k, rebox_plain(v, stored.get(col, {}).get(k)))


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
