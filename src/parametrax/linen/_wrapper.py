"""``Parametrized(base, spec)``: the wrapper class, made once per ``(base, spec, unsafe, group)``."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import flax.linen as nn
import jax

from parametrax import tree as _tree
from parametrax._errors import (
    ParametrizationError,
    ParametrizationTypeError,
    ShapeError,
    SpecError,
)
from parametrax.linen import _compat
from parametrax.linen._boxes import rebox_plain, rebox_raw, rebox_state, unbox
from parametrax.linen._collections import (
    PARAMS,
    STATE_COLLECTION,
    FrozenStateWarning,
    by_collection,
    constrain_collections,
    explained,
    state_merge,
    state_slice,
)
from parametrax.tree import PARAMETRIZATIONS, Spec
from parametrax.tree import paths as _paths


def _base_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")]


def _unbind(value: Any) -> Any:
    """Module-valued fields (an RNN's cell) are cloned unbound for the functional base call."""

    def one(x):
        if isinstance(x, nn.Module):
            return _compat.unbound_copy(x)
        return x

    return jax.tree.map(one, value, is_leaf=lambda x: isinstance(x, nn.Module))


def _wrapped_method_names(base: type) -> list[str]:
    # whether instances are callable (a class itself always is): B004's `callable(base)` is wrong
    names = ["__call__"] if callable(getattr(base, "__call__", None)) else []  # noqa: B004
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


if TYPE_CHECKING:
    # The mixin is only ever combined with an ``nn.Module`` (``_parametrized_class``): type its
    # methods against the module API they call.
    _MixinBase = nn.Module
else:
    _MixinBase = object


class _ParametrizedMixin(_MixinBase):
    """Behaviour shared by every class ``Parametrized`` builds (see the module docstring)."""

    # Set on each class by ``_parametrized_class``.
    _px_spec: ClassVar[Spec]
    _px_layers: ClassVar[tuple[Spec, ...]]
    _px_unsafe: ClassVar[bool]
    _px_group: ClassVar[bool]
    _px_base: ClassVar[type]

    # `apply(v, x, method=Base.encode)`: flax would call the base class's function on the wrapper,
    # whose `setup` submodules live only inside the functional base call; route it by name.
    def apply(self, variables, *args, method=None, **kwargs):
        return super().apply(variables, *args, method=self._px_method(method), **kwargs)

    def init(self, rngs, *args, method=None, **kwargs):
        return super().init(rngs, *args, method=self._px_method(method), **kwargs)

    def init_with_output(self, rngs, *args, method=None, **kwargs):
        return super().init_with_output(rngs, *args, method=self._px_method(method), **kwargs)

    def _px_method(self, method: Any) -> Any:
        """``Base.fn`` (the base class's own function) becomes ``"fn"``, the wrapped method."""
        name = getattr(method, "__name__", None)
        base = type(self)._px_base
        if (
            isinstance(name, str)
            and inspect.isfunction(method)
            and getattr(base, name, None) is method
            and name in _wrapped_method_names(base)
        ):
            return name
        return method

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
                cls._px_spec, unbox(stored), update_state=update_state, group=cls._px_group
            )
        if not update_state and not initialising and STATE_COLLECTION in stored:
            self._px_warn_if_frozen(cls, method, stored)
        mutable = [
            col
            for col in set(base_vars) | {"intermediates"}
            if col != STATE_COLLECTION and self.is_mutable_collection(col)
        ]
        out = base.apply(
            base_vars, *args, rngs=rngs, method=method, mutable=mutable or False, **kwargs
        )
        state_now = new_state if update_state else unbox(stored.get(STATE_COLLECTION, {}))
        written = None
        if mutable:
            out, mutated = out
            if not initialising:  # at init the values were just stored: keep them as made
                written = self._px_write_back(mutated, stored, by_col, base_vars, state_now)
        if written is not None:
            state_now = written
        if (update_state and new_state) or written is not None:
            for k, v in state_now.items():
                old = stored.get(STATE_COLLECTION, {}).get(k)
                self.put_variable(STATE_COLLECTION, k, rebox_plain(v, old))
        return out

    def _px_warn_if_frozen(
        self, cls: type[_ParametrizedMixin], method: str, stored: Mapping
    ) -> None:
        """Warns when params are differentiated and a link would advance its state, but
        ``parametrization_state`` is immutable: a train step ported with
        ``mutable=["batch_stats"]`` would silently freeze a spectral norm's power iteration.

        A link state counts as advanced when the chain hands back another array than the one it
        was given: ``chain_forward`` returns a state a link did not move as the very array given
        (compiled, grouped, or gathered under explicit sharding), so identity is the link's own
        word, sound eagerly and on tracers; values are never compared (no device sync, nothing
        to compare under jit). A link returning an equal copy is therefore reported."""
        plain = unbox(stored)
        if not any(
            _compat.is_differentiated(x)
            for col in by_collection(cls._px_spec)
            for x in jax.tree.leaves(plain.get(col, {}))
        ):
            return
        _, advanced = constrain_collections(
            cls._px_spec, plain, update_state=True, group=cls._px_group
        )
        before = _paths.flatten(plain[STATE_COLLECTION])
        moved = sorted(p for p, v in _paths.flatten(advanced).items() if v is not before.get(p))
        if moved:
            warnings.warn(
                FrozenStateWarning(
                    f"`{cls.__name__}.{method}`: the params are differentiated but "
                    f"`{STATE_COLLECTION}` is not mutable, so the link state "
                    f"{', '.join(f'`{p}`' for p in moved[:4])}{' ...' if len(moved) > 4 else ''} "
                    "stays frozen at its stored value (no power iteration). In a train step "
                    f'pass `mutable=[..., "{STATE_COLLECTION}"]` and keep the state it '
                    "returns; to freeze it on purpose, filter "
                    "`parametrax.linen.FrozenStateWarning`."
                ),
                stacklevel=4,
            )

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
        layers = [by_collection(layer) for layer in cls._px_layers]
        results = {}
        state_tree: dict = {}
        cols = sorted(by_col)
        keys = dict(zip(cols, jax.random.split(key, len(cols)))) if key is not None else {}
        for col in cols:
            try:
                raw, st = _register_layers(
                    [layer[col] for layer in layers if col in layer],
                    unbox(init_vars[col]),
                    key=keys.get(col),
                    unsafe=cls._px_unsafe,
                    update_state=self.is_mutable_collection(STATE_COLLECTION),
                )
            except ParametrizationError as e:
                where = f" in collection `{col}`" if col != PARAMS else ""
                raise type(e)(f"`{cls.__name__}`{where}: {e}") from e.__cause__
            results[col] = rebox_raw(raw, init_vars[col])
            state_merge(state_tree, col, rebox_state(st, init_vars[col]))
        if state_tree and not self.is_mutable_collection(STATE_COLLECTION):
            # At init every collection is mutable unless a lifted transform (nn.scan, nn.RNN,
            # nn.vmap ...) around this module does not carry the state collection.
            raise ParametrizationError(
                f"`{cls.__name__}` registers link state in `{STATE_COLLECTION}`, which is "
                "immutable here: a lifted transform around it (`nn.RNN`, `nn.scan`, "
                f"`nn.vmap`, ...) does not carry `{STATE_COLLECTION}`. Either parametrize the "
                "whole transformed module, which also evaluates the chain once per apply "
                'instead of once per step: `Parametrized(nn.RNN(cell), {"cell/<path>": ...})`; '
                "or let the transform carry the collection: `nn.RNN(cell, variable_broadcast="
                f'["params", "{STATE_COLLECTION}"])` (for `nn.scan`, add it to '
                "`variable_broadcast`)."
            )
        # Nothing is stored until every collection registered without error.
        for col, tree in init_vars.items():
            tree = results.get(col, tree)
            for k, v in tree.items():
                self.put_variable(col, k, v)
        for k, v in state_tree.items():
            self.put_variable(STATE_COLLECTION, k, v)

    def _px_write_back(
        self, mutated: Mapping, stored: Mapping, by_col: Mapping, given: Mapping, state: Mapping
    ) -> dict | None:
        """Stores what the base module wrote. A write to a parametrized variable goes through
        its chain's right inverse (torch's setter), from the link ``state`` of this call
        (advanced by the forward when training); returns the new state tree when such a write
        moved link state (a trivialization's base, a spectral norm's ``u``, ``v``), else
        ``None``. Moved state that ``parametrization_state`` cannot take (not mutable) is an
        error: dropping it would lose the write."""
        cls = type(self)
        state_tree = dict(state)
        moved: list[str] = []
        for col, tree in mutated.items():
            if col == "intermediates":
                for k, v in tree.items():
                    self.put_variable(col, k, v)
                continue
            if col in by_col:
                parametrized = set(_tree.parametrized_paths(by_col[col], unbox(stored[col])))
                flat = _paths.flatten(tree)
                given_flat = _paths.flatten(given.get(col, {}))
                # Only values the base module actually wrote (a new object, not the array it
                # was handed) go back through right_inverse; apply(..., mutable=True) must not
                # re-assign every parametrized variable.
                changed = [
                    p for p in parametrized if p in flat and flat[p] is not given_flat.get(p)
                ]
                # The base module wrote to a parametrized variable (e.g. a running average that
                # is parametrized): store it through the right_inverse chain, like torch's setter.
                raw = unbox(stored[col])
                if changed:
                    before = state_slice(state_tree, col)
                    names = [p if col == PARAMS else f"{col}:{p}" for p in changed]
                    what = f"`{cls.__name__}` writing {_paths.listing(names)}"
                    with explained(cls, what, stored):
                        raw, after = _tree.assign(
                            by_col[col], raw, before, {p: flat[p] for p in changed}
                        )
                    old_leaves = {id(x) for x in jax.tree.leaves(before)}
                    if any(id(x) not in old_leaves for x in jax.tree.leaves(after)):
                        moved += names
                        state_merge(state_tree, col, after)
                for p, v in flat.items():
                    if p not in parametrized:
                        _paths.set_path(raw, p, v)
                for k, v in raw.items():
                    self.put_variable(col, k, rebox_plain(v, stored[col].get(k)))
            else:
                for k, v in tree.items():
                    self.put_variable(col, k, rebox_plain(v, stored.get(col, {}).get(k)))
        if not moved:
            return None
        if not self.is_mutable_collection(STATE_COLLECTION):
            raise ParametrizationError(
                f"`{cls.__name__}`: the base module wrote the parametrized variable(s) "
                f"{', '.join(f'`{p}`' for p in moved)}, whose right inverse moves link state "
                f"(kept in `{STATE_COLLECTION}`), but `{STATE_COLLECTION}` is not mutable here, "
                "so the write would be lost. Pass "
                f'`mutable=[..., "{STATE_COLLECTION}"]` and keep the state it returns.'
            )
        return state_tree


@functools.cache
def _parametrized_class(
    base: type, layers: tuple[Spec, ...], unsafe: bool, group: bool = True
) -> type:
    """The class for ``base`` wrapped once per spec in ``layers`` (inner first)."""
    spec = functools.reduce(_merge_specs, layers)
    namespace: dict[str, Any] = {
        "_px_spec": spec,
        "_px_layers": layers,
        "_px_unsafe": unsafe,
        "_px_group": group,
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


def _register_layers(
    layers: list[Spec], tree: Mapping, *, key: Any, unsafe: bool, update_state: bool
) -> tuple[dict, dict]:
    """Registers the first spec on ``tree``, then each later one as torch's repeated registration.

    A later spec's links on a variable an earlier spec parametrized are *appended*: they see the
    current constrained value (their ``init_variables`` and right_inverse run on it, the right
    inverse's result is dropped) and the stored ``original`` is not touched, so the constrained
    value becomes ``p_new(current)`` (torch's ``register_parametrization`` on a parametrized
    tensor, spec §2.A). On a variable no earlier spec names, a later spec registers as usual.
    """
    raw, state = _tree.register(layers[0], tree, key=key, unsafe=unsafe, update_state=update_state)
    merged = layers[0]
    for k, spec in enumerate(layers[1:], start=1):
        sub = jax.random.fold_in(key, k) if key is not None else None
        resolved = merged.resolve(_tree.parametrized_paths(merged, raw))
        lengths = {path: len(chain) for path, (_, chain) in resolved.items()}
        current, _ = _tree.forward(merged, raw, state)
        # `unsafe=True`: the shapes are checked once, on the whole chain, below.
        new_raw, new_state = _tree.register(
            spec, current, key=sub, unsafe=True, update_state=update_state
        )
        for path in _tree.parametrized_paths(spec, new_raw):
            slot = _paths.get_path(new_raw[PARAMETRIZATIONS], path)
            link_state = _slot_at(new_state, path)
            if path not in lengths:  # a first registration: take the whole slot
                _paths.set_path(raw.setdefault(PARAMETRIZATIONS, {}), path, slot)
                if link_state:
                    _paths.set_path(state.setdefault(PARAMETRIZATIONS, {}), path, link_state)
                _drop(raw, path)
                continue
            n = lengths[path]
            old = _paths.get_path(raw[PARAMETRIZATIONS], path)
            for i, v in slot.items():
                if not i.startswith("original"):
                    old[str(n + int(i))] = v
            if link_state:
                node = _slot_at(state, path)
                node.update({str(n + int(i)): v for i, v in link_state.items()})
                _paths.set_path(state.setdefault(PARAMETRIZATIONS, {}), path, node)
        merged = _merge_specs(merged, spec)
    if len(layers) > 1 and not unsafe:
        out, _ = _tree.forward(merged, raw, state)
        flat, before = _paths.flatten(out), _paths.flatten(tree)
        for path in _tree.parametrized_paths(merged, raw):
            a, b = flat[path], before[path]
            if tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype:
                raise ShapeError(
                    f"parametrizing `{path}`: the appended links change the variable's shape "
                    f"or dtype ({b.dtype}{list(b.shape)} -> {a.dtype}{list(a.shape)}); pass "
                    "`unsafe=True` to allow it."
                )
    return raw, state


def _slot_at(state: Mapping, path: str) -> dict:
    try:
        node = _paths.get_path(state[PARAMETRIZATIONS], path)
    except (KeyError, TypeError):
        return {}
    return dict(node)


def _drop(raw: dict, path: str) -> None:
    """Removes the plain leaf at ``path`` (now parametrized) and the dicts it leaves empty."""
    segs = path.split("/")
    nodes = [raw]
    for seg in segs[:-1]:
        nodes.append(nodes[-1][seg])
    del nodes[-1][segs[-1]]
    for node, seg in zip(reversed(nodes[:-1]), reversed(segs[:-1])):
        if node[seg]:
            break
        del node[seg]


def Parametrized(  # noqa: N802
    base: Any, spec: Any, *, unsafe: bool = False, group: bool = True
) -> Any:
    """Wraps a linen module so that the variables named in ``spec`` are parametrized.

    Args:
      base: a ``nn.Module`` subclass (returns a subclass, like ``nn.remat``:
        ``Parametrized(nn.Dense, spec)(features=3)``), an instance (returns a wrapping
        instance with the same fields: ``Parametrized(nn.Dense(3), spec)``) or a class-like
        ``functools.partial`` (returns the same partial of the parametrized class:
        ``Parametrized(partial(ResNet, stage_sizes=...), spec)(num_classes=10)``). Wrapping a
        parametrized module again is torch's repeated registration: on a variable already
        parametrized the new links are appended to its chain and registered on top of its
        constrained value (only their own right inverse runs, its result dropped; the stored
        ``original`` is untouched), so at init the value becomes ``p_new(W0)``. One wrap with
        the whole chain instead runs every link's right inverse.
      spec: ``{path_or_glob: parametrization or [p0, p1, ...]}``. Paths are ``/``-separated
        variable paths inside the base module's ``params`` (``"kernel"``, ``"Dense_0/kernel"``,
        ``"cell/hh/kernel"``); ``*`` matches within a segment and ``**`` across segments
        (``"*/kernel"``, ``"**/kernel"``); ``"<collection>:<path>"`` addresses another
        collection. A key matching nothing is an error listing the paths that exist.
      unsafe: allow chains whose forward changes the variable's shape or dtype.
      group: evaluate variables with equal chains on equal shapes and dtypes (a stack of
        same-shaped orthogonal layers under ``"**/kernel"``) as one batched map where that was
        measured to pay (:func:`parametrax.tree.forward`); values and gradients are those of
        evaluating each variable alone. ``False`` evaluates each variable alone. Wrapping
        again keeps grouping only if both wraps allow it.

    Example::

        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> from parametrax import Parametrized, skew, cayley
        >>> from parametrax.linen import constrain
        >>> layer = Parametrized(nn.Dense, {"kernel": [skew, cayley]})(features=3)
        >>> variables = layer.init(jax.random.key(0), jnp.ones((1, 3)))
        >>> jax.tree.map(jnp.shape, variables)
        {'params': {'bias': (3,), 'parametrizations': {'kernel': {'original': (3, 3)}}}}
        >>> K = constrain(layer, variables)["params"]["kernel"]
        >>> bool(jnp.allclose(K.T @ K, jnp.eye(3), atol=1e-5))
        True
    """
    spec = Spec.of(spec)
    if not isinstance(unsafe, bool):
        raise ParametrizationTypeError(f"`unsafe` must be a bool; got {unsafe!r}.")
    if not isinstance(group, bool):
        raise ParametrizationTypeError(f"`group` must be a bool; got {group!r}.")
    if inspect.isclass(base) and issubclass(base, nn.Module):
        if issubclass(base, _ParametrizedMixin):
            return _parametrized_class(
                base._px_base,
                (*base._px_layers, spec),
                base._px_unsafe or unsafe,
                base._px_group and group,
            )
        # A class hashes by identity; mypy checks flax's instance-level `Module.__hash__` here.
        return _parametrized_class(base, (spec,), unsafe, group)  # type: ignore[arg-type]
    if isinstance(base, functools.partial) and inspect.isclass(base.func):
        # Flax's examples define models as class-like partials
        # (`ResNet18 = partial(ResNet, stage_sizes=...)`): the answer is the same partial of the
        # parametrized class.
        return functools.partial(
            Parametrized(base.func, spec, unsafe=unsafe, group=group), *base.args, **base.keywords
        )
    if isinstance(base, nn.Module):
        cls = Parametrized(type(base), spec, unsafe=unsafe, group=group)
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
        "Parametrized(base, spec): `base` must be a flax.linen Module class, instance or "
        "class partial (e.g. `nn.Dense`, `nn.Dense(3)` or `functools.partial(nn.Dense, 3)`); "
        f"got {type(base).__name__} {base!r}."
    )
