"""register / forward / constrain / assign / remove_parametrizations over any pytree.

Two layouts of the raw tree, chosen by the tree given to :func:`register`:

* **A nested mapping** (a params dict, linen's variables) gets torch's ``state_dict`` layout:
  every parametrized leaf moves under a top-level ``parametrizations`` entry::

      tree  = {"Dense_0": {"kernel": K, "bias": b}}
      raw   = {"Dense_0": {"bias": b},
               "parametrizations": {"Dense_0": {"kernel": {"original": right_inverse(K),
                                                            "0": {<link 0 learnable params>}}}}}

* **Any other pytree** (an equinox Module, a dataclass, a NamedTuple, a list, a dict holding
  lists) keeps its structure and type: each parametrized leaf is replaced in place by a
  :class:`RawLeaf` node holding the same ``{"original": ..., "0": {...}}`` entries, so
  ``eqx.filter_grad``, ``eqx.filter_jit`` and optax see its raw arrays as ordinary leaves.

In both layouts the state is a dict ``{"parametrizations": {<path>: {"<i>": {<link i state>}}}}``
and ``constrain(spec, raw, state)`` gives back a tree of the input's structure and type in
which every parametrized leaf is ``forward(original)``. Train ``raw`` with any optax optimizer:
the constraint holds by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from parametrax import _core, _finite
from parametrax._errors import (
    NotParametrizedError,
    ParametrizationError,
    ParametrizationTypeError,
    ShapeError,
    SpecError,
    chain_repr,
    with_context,
)
from parametrax.tree import _grouping
from parametrax.tree._spec import Spec
from parametrax.tree.paths import (
    get_path,
    glob_match,
    is_glob,
    key_entry_str,
    key_path_str,
    leaves_with_paths,
    listing,
    prune,
    set_path,
    to_dict,
)

__all__ = [
    "PARAMETRIZATIONS",
    "RawLeaf",
    "register",
    "forward",
    "constrain",
    "assign",
    "remove_parametrizations",
    "parametrized_paths",
]

PARAMETRIZATIONS = "parametrizations"


# ------------------------------------------------------------------------------------------------
# The in-place node of the pytree layout
# ------------------------------------------------------------------------------------------------
@jax.tree_util.register_pytree_with_keys_class
class RawLeaf:
    """A parametrized leaf of a non-mapping pytree: its raw arrays, in place of the value.

    ``entries`` is the same mapping the dict layout stores under ``parametrizations/<path>``:
    ``original`` (or ``original0``, ``original1``, ...) and, for links with learnable
    variables, ``"<i>": {name: array}``. A pytree node: its arrays are leaves with key paths
    ``<path>/original``, ``<path>/0/<name>``.
    """

    __slots__ = ("entries",)

    def __init__(self, entries: Mapping):
        self.entries = dict(entries)

    def tree_flatten_with_keys(self):
        keys = tuple(sorted(self.entries))
        return [(jax.tree_util.DictKey(k), self.entries[k]) for k in keys], keys

    def tree_flatten(self):
        keys = tuple(sorted(self.entries))
        return [self.entries[k] for k in keys], keys

    @classmethod
    def tree_unflatten(cls, keys, children):
        return cls(dict(zip(keys, children)))

    def __repr__(self) -> str:
        shapes = jax.tree.map(lambda a: getattr(a, "shape", a), self.entries)
        return f"RawLeaf({shapes})"


def _is_raw_leaf(x: Any) -> bool:
    return isinstance(x, RawLeaf)


def _stop(x: Any) -> bool:
    """Flattening stops at raw leaves and at ``None`` (a variable left unset is a leaf here, so a
    spec naming it gets "expected an array", not "matches nothing")."""
    return x is None or isinstance(x, RawLeaf)


# ------------------------------------------------------------------------------------------------
# Messages
# ------------------------------------------------------------------------------------------------
def _add_note(err: BaseException, context: str) -> None:
    """Adds ``context`` (which variable, which chain) to an error raised by user code inside a
    chain, keeping its type and its own notes (Python >= 3.11; a no-op before)."""
    if hasattr(err, "add_note"):
        err.add_note(f"(parametrax: raised while {context})")


def _context(path: str, chain: tuple) -> str:
    return f"parametrizing `{path}` with {chain_repr(chain)}"


def _check_leaf(path: str, leaf: Any, chain: tuple) -> jax.Array:
    if not (isinstance(leaf, jax.Array) or hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
        raise ParametrizationTypeError(
            f"{_context(path, chain)}: expected an array at `{path}`, got {type(leaf).__name__}."
        )
    return leaf


def _unique_paths(flat: list[tuple[str, Any]]) -> None:
    seen: set[str] = set()
    for p, _ in flat:
        if p in seen:
            raise SpecError(
                f"two leaves of the tree have the same path `{p}` (e.g. a dict key holding `/`); "
                "spec keys could not tell them apart. Rename one of them."
            )
        seen.add(p)


# ------------------------------------------------------------------------------------------------
# Slots: where a parametrized variable's raw arrays live, in either layout
# ------------------------------------------------------------------------------------------------
def _find_slots(node: Mapping, prefix: str = "") -> dict[str, Mapping]:
    out = {}
    for k, v in node.items():
        if not isinstance(v, Mapping):
            continue
        p = f"{prefix}{k}"
        if "original" in v or "original0" in v:
            out[p] = v
        else:
            out.update(_find_slots(v, p + "/"))
    return out


def _slot_parts(slot: Mapping, nlinks: int):
    originals = {k: v for k, v in slot.items() if k.startswith("original")}
    params = [dict(slot.get(str(i), {})) for i in range(nlinks)]
    return originals, params


def _state_parts(state: Mapping | None, path: str, nlinks: int):
    node: Any = {}
    if state:
        try:
            node = get_path(state[PARAMETRIZATIONS], path)
        except (KeyError, TypeError):
            node = {}
    return [dict(node.get(str(i), {})) for i in range(nlinks)]


def _make_slot(originals: dict, params: list[dict]) -> dict:
    slot = dict(originals)
    for i, p in enumerate(params):
        if p:
            slot[str(i)] = dict(p)
    return slot


def _put_state(state: dict, path: str, link_state: list[dict]) -> None:
    entry = {str(i): dict(s) for i, s in enumerate(link_state) if s}
    if entry:
        set_path(state.setdefault(PARAMETRIZATIONS, {}), path, entry)


def _drop_state(state: dict, path: str) -> None:
    if PARAMETRIZATIONS not in state:
        return
    segs = path.split("/")
    try:
        parent = (
            get_path(state[PARAMETRIZATIONS], "/".join(segs[:-1]))
            if len(segs) > 1
            else (state[PARAMETRIZATIONS])
        )
    except KeyError:
        return
    parent.pop(segs[-1], None)


class _RawTree:
    """A raw tree seen through its layout: the slots it holds and how to rebuild it."""

    def __init__(self, raw: Any):
        self.raw = raw
        self.mapping = isinstance(raw, Mapping) and PARAMETRIZATIONS in raw
        if self.mapping:
            self.slots: dict[str, Mapping] = _find_slots(raw[PARAMETRIZATIONS])
            return
        flat, self.treedef = leaves_with_paths(raw, is_leaf=_stop)
        self.flat = flat
        self.slots = {p: leaf.entries for p, leaf in flat if _is_raw_leaf(leaf)}
        if not self.slots:
            if isinstance(raw, Mapping):
                where = f"top-level keys: {listing(map(str, raw.keys()))}"
            else:
                where = f"a {type(raw).__name__} without `RawLeaf` nodes"
            raise NotParametrizedError(
                f"the tree has no `{PARAMETRIZATIONS}` entry and no `RawLeaf` node: it is not a "
                f"raw tree made by `register` ({where})."
            )

    def resolve(self, spec: Spec) -> dict[str, tuple[Mapping, tuple]]:
        resolved = spec.resolve(self.slots, what="raw tree's parametrizations")
        unclaimed = set(self.slots) - set(resolved)
        if unclaimed:
            raise SpecError(
                "the raw tree holds parametrized variables no spec key names: "
                f"{listing(unclaimed)}."
            )
        return {p: (self.slots[p], resolved[p][1]) for p in resolved}

    def with_slots(self, new_slots: Mapping[str, dict]) -> Any:
        """A new raw tree with the slots at the given paths replaced."""
        if self.mapping:
            out = to_dict(self.raw)
            for path, slot in new_slots.items():
                set_path(out[PARAMETRIZATIONS], path, slot)
            return out
        leaves = [RawLeaf(new_slots[p]) if p in new_slots else leaf for p, leaf in self.flat]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def with_values(self, values: Mapping[str, Any]) -> Any:
        """A new tree with the slots at the given paths replaced by plain values (the rest of
        the slots stay); with every slot replaced it has the registered tree's layout."""
        if self.mapping:
            out = to_dict(self.raw)
            for path in values:
                segs = path.split("/")
                parent = (
                    get_path(out[PARAMETRIZATIONS], "/".join(segs[:-1]))
                    if len(segs) > 1
                    else (out[PARAMETRIZATIONS])
                )
                del parent[segs[-1]]
            out = prune(out)
            for path, value in values.items():
                set_path(out, path, value)
            return out
        leaves = [values[p] if p in values else leaf for p, leaf in self.flat]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def _leaf_at(tree: Any, path: str) -> Any:
    if isinstance(tree, Mapping):
        try:
            return get_path(tree, path)
        except (KeyError, TypeError):
            pass
    return dict(leaves_with_paths(tree)[0])[path]


def _mapping_reachable(tree: Any, path: str) -> bool:
    node = tree
    for seg in path.split("/"):
        if not isinstance(node, Mapping) or seg not in node:
            return False
        node = node[seg]
    return True


# ------------------------------------------------------------------------------------------------
# Public operations
# ------------------------------------------------------------------------------------------------
def register(
    spec: Any,
    tree: Any,
    *,
    key: jax.Array | None = None,
    unsafe: bool = False,
    update_state: bool = False,
) -> tuple[Any, dict]:
    """Registers ``spec`` on ``tree`` (torch's ``register_parametrization``, functionally).

    ``tree`` is any pytree: a nested mapping of arrays (a params dict) or any other pytree (an
    equinox Module or its ``eqx.partition`` half, a dataclass, a NamedTuple, a list). Spec keys
    are the leaves' ``/``-joined key paths (``"Dense_0/kernel"``, ``"layers/0/weight"``) or
    globs. Each matched leaf ``W`` is replaced by its raw arrays ``right_inverse(W)``: under
    ``parametrizations/<path>/original`` for a nested mapping (torch's ``state_dict`` layout),
    in place as a :class:`RawLeaf` otherwise (or ``original0``, ``original1``, ... when the
    first link's right_inverse returns several arrays). Parametrizations that own variables
    initialise them from ``key``. With ``unsafe=False`` a chain whose forward changes the shape
    or dtype is refused. Concrete values containing NaN or Inf are refused, and so are non-finite
    raw values or link variables the chain produces from a finite value (the NaN / Inf policy,
    :mod:`parametrax._finite`; traced values are not checked). Returns ``(raw, state)``;
    ``tree`` is never modified and nothing is returned on error.

    >>> import jax.numpy as jnp, parametrax as px
    >>> raw, state = px.tree.register({"1": px.skew}, [jnp.ones(2), jnp.eye(2)])
    >>> type(raw).__name__, type(raw[1]).__name__
    ('list', 'RawLeaf')
    """
    spec = Spec.of(spec)
    if isinstance(tree, Mapping) and PARAMETRIZATIONS in tree:
        raise SpecError(
            f"the tree already has a top-level `{PARAMETRIZATIONS}` entry: it is already a raw "
            "tree. Use `assign` to set values, or `remove_parametrizations` first to start again."
        )
    flat, treedef = leaves_with_paths(tree, is_leaf=_stop)
    if any(_is_raw_leaf(leaf) for _, leaf in flat):
        raise SpecError(
            "the tree already holds `RawLeaf` nodes: it is already a raw tree. Use `assign` to "
            "set values, or `remove_parametrizations` first to start again."
        )
    _unique_paths(flat)
    leaves = dict(flat)
    resolved = spec.resolve([p for p, _ in flat])
    paths = sorted(resolved)
    keys = dict(zip(paths, jax.random.split(key, len(paths)))) if key is not None else {}
    state: dict = {}
    slots = {}
    for path in paths:
        _, chain = resolved[path]
        leaf = _check_leaf(path, leaves[path], chain)
        try:
            originals, params, lstate = _core.chain_register(
                chain, leaf, key=keys.get(path), unsafe=unsafe, update_state=update_state
            )
        except ParametrizationError as e:
            raise with_context(e, _context(path, chain)) from e.__cause__
        except Exception as e:
            _add_note(e, _context(path, chain))
            raise
        slots[path] = _make_slot(originals, params)
        _put_state(state, path, lstate)
    if isinstance(tree, Mapping) and all(_mapping_reachable(tree, p) for p in paths):
        raw = to_dict(tree)
        for path in paths:
            segs = path.split("/")
            parent = get_path(raw, "/".join(segs[:-1])) if len(segs) > 1 else raw
            del parent[segs[-1]]
        raw = prune(raw)
        raw[PARAMETRIZATIONS] = {}
        for path, slot in slots.items():
            set_path(raw[PARAMETRIZATIONS], path, slot)
        return raw, state
    new_leaves = [RawLeaf(slots[p]) if p in slots else leaf for p, leaf in flat]
    return jax.tree_util.tree_unflatten(treedef, new_leaves), state


def forward(
    spec: Any,
    raw: Any,
    state: Mapping | None = None,
    *,
    update_state: bool = False,
    group: bool = True,
) -> tuple[Any, dict]:
    """Evaluates every chain once: ``raw tree -> (constrained tree, new state)``.

    The constrained tree has the structure and type of the tree given to :func:`register`. With
    ``update_state=True`` stateful parametrizations advance their state (e.g. a power
    iteration); otherwise the returned state equals ``state``.

    ``group=True`` (default) evaluates variables with equal chains on equal shapes and dtypes
    (a stack of same-shaped orthogonal layers) as one batched map where that was measured to
    pay; the values and gradients are those of evaluating each variable alone (see
    :mod:`parametrax.tree._grouping`). ``group=False`` evaluates each variable alone.

    A repeat eager read of the same structure reuses the resolution of its first read (a
    :class:`_Plan`); see "Repeat eager reads" below.
    """
    return _forward(spec, raw, state, update_state, group, True)  # type: ignore[return-value]


def _forward(
    spec: Any, raw: Any, state: Any, update_state: Any, group: Any, want_state: bool
) -> tuple[Any, dict | None]:
    """:func:`forward`; ``want_state=False`` (:func:`constrain`) may skip building the new state
    (a repeat read returns ``None`` for it)."""
    found = None
    if type(update_state) is bool and type(group) is bool:
        found = _plan_lookup(spec, raw, state, update_state, group)
        if found is not None and found[0] is not None:
            plan, leaves = found[0], found[1]
            return plan.run(leaves, raw, state, update_state, group, want_state)
    out, new_state, spec_n, view, items, results = _forward_resolved(
        spec, raw, state, update_state=update_state, group=group
    )
    if found is not None:  # a concrete read whose structure has no plan yet: make one
        _, leaves, sleaves, key = found
        _plan_store(key, spec_n, view, raw, leaves, state, sleaves, items, results, out, new_state)
    return out, new_state


def _forward_resolved(
    spec: Any, raw: Any, state: Mapping | None, *, update_state: bool, group: bool
) -> tuple[Any, dict, Spec, _RawTree, dict, dict]:
    """:func:`forward`'s general path: the outputs, and what a :class:`_Plan` is made from."""
    if not isinstance(group, bool):
        raise ParametrizationTypeError(f"`group` must be a bool; got {group!r}.")
    spec = Spec.of(spec)
    view = _RawTree(raw)
    slots = view.resolve(spec)
    new_state = to_dict(state) if state else {}
    items = {}
    for path, (slot, chain) in slots.items():
        originals, params = _slot_parts(slot, len(chain))
        items[path] = (chain, originals, params, _state_parts(state, path, len(chain)))
    results = _evaluate(items, update_state=update_state, group=group)
    values = {}
    for path in slots:
        values[path], lstate = results[path]
        _put_state(new_state, path, lstate)
    return view.with_values(values), new_state, spec, view, items, results


def _evaluate(items: dict, *, update_state: bool, group: bool) -> dict[str, tuple]:
    """Each variable's ``(value, link_state)``: ``items`` maps its path to ``(chain, originals,
    params, state)``; groups of equal chains as one batched map where that pays."""
    results: dict[str, tuple] = {}
    for paths in _grouping.group_paths(items, group=group):
        if len(paths) > 1:
            out = _grouping.forward_group([items[p] for p in paths], update_state=update_state)
            if out is not None:
                results.update(zip(paths, out))
                continue
        for path in paths:
            results[path] = _forward_one(path, *items[path], update_state=update_state)
    return results


def _forward_one(
    path: str, chain: tuple, originals: dict, params: list, lstate: list, *, update_state: bool
) -> tuple[Any, list[dict]]:
    """One variable's chain, errors naming the variable."""
    try:
        return _core.chain_forward(chain, originals, params, lstate, update_state=update_state)
    except ParametrizationError as e:
        raise with_context(e, _context(path, chain)) from e.__cause__
    except Exception as e:
        _add_note(e, _context(path, chain))
        raise


def constrain(spec: Any, raw: Any, state: Mapping | None = None, *, group: bool = True) -> Any:
    """``forward`` without state updates: the constrained tree only (``group``: see
    :func:`forward`)."""
    return _forward(spec, raw, state, False, group, False)[0]


def parametrized_paths(spec: Any, raw: Any) -> list[str]:
    """The paths (in the original tree's layout) that are parametrized in ``raw``."""
    return sorted(_RawTree(raw).resolve(Spec.of(spec)))


def _select(slots: Mapping, names: Any, *, verb: str) -> list[str]:
    if names is None:
        return sorted(slots)
    if isinstance(names, str):
        names = [names]
    chosen: list[str] = []
    for name in names:
        name = name.strip("/")
        if name in slots:
            hit = [name]
        elif is_glob(name):
            hit = [p for p in slots if glob_match(name.split("/"), p.split("/"))]
        else:
            hit = []
        if not hit:
            raise NotParametrizedError(
                f"cannot {verb} `{name}`: it is not parametrized; the parametrized variables "
                f"are {listing(slots)}."
            )
        chosen.extend(h for h in hit if h not in chosen)
    return sorted(chosen)


def assign(
    spec: Any,
    raw: Any,
    state: Mapping | None,
    values: Mapping[str, Any],
    *,
    key: jax.Array | None = None,
) -> tuple[Any, dict]:
    """Torch's ``module.weight = X`` for each ``path: X`` in ``values``.

    Runs each chain's right_inverse (reverse order) and returns new ``(raw, state)`` whose
    constrained value at ``path`` is ``forward(right_inverse(X))``; the raw tree keeps its
    layout and type. The value must have the shape and dtype of the current constrained value;
    the raw arrays keep theirs. Concrete values containing NaN or Inf are refused, and so are
    non-finite raw values or state the right inverse produces from a finite value (the NaN / Inf
    policy, :mod:`parametrax._finite`; traced values are not checked). Nothing is returned on
    error.
    """
    spec = Spec.of(spec)
    if not isinstance(values, Mapping):
        raise ParametrizationTypeError(
            "values must be a mapping {path: array}, e.g. {'kernel': X}; got "
            f"{type(values).__name__}."
        )
    globs = [k for k in values if not isinstance(k, str) or is_glob(k)]
    if globs:
        raise SpecError(
            f"assign takes exact variable paths, not globs or non-strings; got {globs[0]!r} "
            f"among the keys {listing(map(str, values))}."
        )
    values = {k.strip("/"): v for k, v in values.items()}
    view = _RawTree(raw)
    slots = view.resolve(spec)
    paths = _select(slots, list(values), verb="assign to")
    current, _ = jax.eval_shape(lambda r, s: forward(spec, r, s), raw, state or {})
    new_state = to_dict(state) if state else {}
    keys = dict(zip(paths, jax.random.split(key, len(paths)))) if key is not None else {}
    new_slots = {}
    for path in paths:
        slot, chain = slots[path]
        value = values[path]
        ctx = _context(path, chain)
        if not (isinstance(value, jax.Array) or hasattr(value, "shape")):
            raise ParametrizationTypeError(
                f"{ctx}: the value assigned must be an array, got {type(value).__name__}."
            )
        value = jnp.asarray(value)
        want = _leaf_at(current, path)
        if tuple(value.shape) != tuple(want.shape) or value.dtype != want.dtype:
            raise ShapeError(
                f"{ctx}: the value assigned has shape {tuple(value.shape)} and dtype "
                f"{value.dtype.name}; expected shape {tuple(want.shape)} and dtype "
                f"{jnp.dtype(want.dtype).name} (those of the current value)."
            )
        originals, params = _slot_parts(slot, len(chain))
        lstate = _state_parts(state, path, len(chain))
        try:
            originals, lstate = _core.chain_right_inverse(
                chain, value, originals, params, lstate, key=keys.get(path)
            )
        except ParametrizationError as e:
            raise with_context(e, ctx) from e.__cause__
        except Exception as e:
            _add_note(e, f"assigning to `{path}` through {chain_repr(chain)}")
            raise
        new_slots[path] = _make_slot(originals, params)
        _put_state(new_state, path, lstate)
    return view.with_slots(new_slots), new_state


def remove_parametrizations(
    spec: Any,
    raw: Any,
    state: Mapping | None = None,
    *,
    names: Any = None,
    leave_parametrized: bool = True,
) -> tuple[Any, dict]:
    """Removes parametrizations (torch's ``remove_parametrizations``), returning ``(tree, state)``.

    ``names`` are variable paths or globs (default: all). With ``leave_parametrized=True`` each
    removed variable keeps its current constrained value (refused when that is concretely
    NaN / Inf: :mod:`parametrax._finite`); with ``False`` it becomes the raw
    ``original`` (refused when the chain stores several raw arrays, as in torch). When every
    variable is removed the result has the plain tree's layout and type, and the state is ``{}``.
    """
    spec = Spec.of(spec)
    view = _RawTree(raw)
    slots = view.resolve(spec)
    paths = _select(slots, names, verb="remove the parametrization of")
    if not leave_parametrized:
        for path in paths:
            slot, chain = slots[path]
            if "original" not in slot:
                n = len([k for k in slot if k.startswith("original")])
                raise ParametrizationError(
                    f"{_context(path, chain)}: cannot leave unparametrized "
                    "(`leave_parametrized=False`) a variable parametrized in terms of "
                    f"{n} arrays (original0..original{n - 1}); use leave_parametrized=True."
                )
    if leave_parametrized:
        constrained, _ = forward(spec, raw, state)
        values = {path: _leaf_at(constrained, path) for path in paths}
        for path in paths:
            found = _finite.nonfinite(values[path])
            if found is not None:
                slot, chain = slots[path]
                bad_raw = [
                    k
                    for k, v in jax.tree_util.tree_leaves_with_path(dict(slot))
                    if _finite.nonfinite(v) is not None
                ]
                why = (
                    "its raw values are already non-finite (an optimizer step diverged?)"
                    if bad_raw
                    else "its raw values are finite: the chain maps them off the finite numbers"
                )
                raise ParametrizationError(
                    f"{_context(path, chain)}: cannot remove the parametrization with "
                    f"`leave_parametrized=True`: the constrained value contains {found} ({why}); "
                    "refusing to bake it into a plain variable (the NaN / Inf policy). Assign a "
                    "finite value first, or remove with `leave_parametrized=False` to keep the "
                    "raw value."
                )
    else:
        values = {path: slots[path][0]["original"] for path in paths}
    new_state = to_dict(state) if state else {}
    for path in paths:
        _drop_state(new_state, path)
    return view.with_values(values), prune(new_state)


# ------------------------------------------------------------------------------------------------
# Repeat eager reads: a plan per structure
# ------------------------------------------------------------------------------------------------
# An eager `forward` / `constrain` spends most of its Python on bookkeeping that depends only on
# the structure of its inputs: resolving the spec's keys and globs against the raw tree's paths,
# finding each variable's raw arrays and state, the grouping analysis, rebuilding the outputs.
# A read whose inputs are concrete records that work in a `_Plan`, cached on
#
#     (the spec: a `Spec`, or a snapshot of the spec dict's items (a chain written as a list
#      taken as the tuple it stands for); the raw tree's treedef; the state's treedef;
#      update_state; group),
#
# and a later read with the same key is: two flattens (C++), one dict lookup, the chains (each
# through `_core.chain_forward`, as before: one compiled call of the chain for an eager read),
# and the outputs rebuilt the way the general path builds them (the same dicts with the same key
# order, the same pytree types, the pass-through leaves the very same objects). A plan is made
# from a general read that succeeded, and kept only when its inputs for that read are that read's
# (the same arrays) and its rebuild of that read's outputs is identical to them; a structure
# refused once (a mapping that is not a plain dict inside the raw tree or the state, say) is
# remembered as such and read by the general path. Keys and plans hold no arrays (treedefs,
# chains, indices); the cache is bounded like `_core._COMPILED`.
#
# Everything else takes the general path, so its errors and messages are today's: a tracer
# anywhere in the inputs (under `jax.jit`, `jax.grad`, `jax.eval_shape` the tree API traces as
# before), a mapping where an array was, a spec that is neither a dict nor a `Spec`, an
# unhashable spec or treedef, a non-bool `update_state` or `group`. Errors raised by a chain are
# raised by `_forward_one` on both paths.
_PLANS: dict = {}
_PLANS_MAX = 512
_NO_PLAN = object()  # a key whose structure the general path always reads
_PLAIN_TYPES: set[type] = set()  # leaf types a plan may take: seen, and not tracers or mappings


def _plain_leaves(leaves: list) -> bool:
    """Whether no leaf is a tracer or a mapping (one set of types, checked against those seen)."""
    types = set(map(type, leaves))
    if types <= _PLAIN_TYPES:
        return True
    for t in types - _PLAIN_TYPES:
        if issubclass(t, (jax.core.Tracer, Mapping, RawLeaf)):
            return False
        _PLAIN_TYPES.add(t)
    return True


def _plan_lookup(spec: Any, raw: Any, state: Any, update_state: bool, group: bool):
    """``(plan or None, raw leaves, state leaves, key)`` for a concrete read, or ``None``: the
    general path, no plan made."""
    t = type(spec)
    if t is dict:
        s: Any = tuple(spec.items())
    elif t is Spec:
        s = spec
    else:
        return None
    try:
        leaves, tdef = jax.tree_util.tree_flatten(raw)
        sleaves, sdef = jax.tree_util.tree_flatten(state)
    except Exception:
        return None
    if not _plain_leaves(leaves + sleaves):
        return None
    key = (s, tdef, sdef, update_state, group)
    try:
        plan = _PLANS.get(key)
    except TypeError:  # an unhashable spec value: a chain written as a list, or worse
        if t is not dict:
            return None
        s = tuple((k, tuple(v) if type(v) is list else v) for k, v in s)
        key = (s, tdef, sdef, update_state, group)
        try:
            plan = _PLANS.get(key)
        except Exception:
            return None
    except Exception:  # a treedef whose node data cannot be compared
        return None
    if plan is _NO_PLAN:
        return None
    return plan, leaves, sleaves, key


def _plan_store(key, spec, view, raw, leaves, state, sleaves, items, results, out, new_state):
    try:
        plan = _Plan.make(spec, view, raw, leaves, state, items, results, out, new_state)
    except Exception:  # never fail a read that has its value: read by the general path
        plan = None
    try:
        while len(_PLANS) >= _PLANS_MAX:  # drop the oldest
            _PLANS.pop(next(iter(_PLANS)), None)
        _PLANS[key] = _NO_PLAN if plan is None else plan
    except Exception:
        pass


def _dict_only(x: Any) -> bool:
    """Whether every mapping reachable from ``x`` through mappings is a plain ``dict`` (so that
    :func:`to_dict` of it is :func:`_copy_dicts`, and its structure is its treedef's)."""
    if type(x) is dict:
        return all(_dict_only(v) for v in x.values())
    return not isinstance(x, Mapping)


def _copy_dicts(d: dict) -> dict:
    """:func:`to_dict` of a tree whose mappings are plain dicts."""
    return {k: (_copy_dicts(v) if type(v) is dict else v) for k, v in d.items()}


def _copy_pruned(d: dict, skip: Any = None) -> dict:
    """``prune(to_dict(d))`` without the top-level entry ``skip``, for plain dicts."""
    out = {}
    for k, v in d.items():
        if k == skip:
            continue
        if type(v) is dict:
            v = _copy_pruned(v)
            if not v:
                continue
        out[k] = v
    return out


def _identical(a: Any, b: Any) -> bool:
    """The same leaves (``is``) in dicts with the same keys in the same order."""
    if a is b:
        return True
    if type(a) is dict:
        return type(b) is dict and list(a) == list(b) and all(_identical(a[k], b[k]) for k in a)
    return False


def _key_strs(kp: Any) -> tuple:
    return tuple(key_entry_str(e) for e in kp)


class _Plan:
    """What a read of one structure resolved: each variable's chain, where its raw arrays (leaf
    indices of the flattened raw tree) and state (keys) are, and how to rebuild the outputs."""

    __slots__ = ("mapping", "variables", "outputs", "groupable", "stop_def", "stop_index")
    mapping: bool
    variables: tuple
    outputs: tuple
    groupable: bool
    stop_def: Any
    stop_index: tuple

    def run(
        self, leaves: list, raw: Any, state: Any, update_state: bool, group: bool, want_state: bool
    ) -> tuple[Any, dict | None]:
        get = leaves.__getitem__
        items = {}
        for path, chain, onames, oidx, pspec, ssegs, skeys in self.variables:
            originals = dict(zip(onames, map(get, oidx)))
            params = [dict(zip(names, map(get, idx))) for names, idx in pspec]
            if skeys is None:
                lstate: list = [{} for _ in chain]
            else:
                node = state
                for seg in ssegs:
                    node = node[seg]
                lstate = [{} if k is None else dict(node[k]) for k in skeys]
            items[path] = (chain, originals, params, lstate)
        if self.groupable:
            results = _evaluate(items, update_state=update_state, group=group)
        else:
            results = {
                p: _forward_one(p, *item, update_state=update_state) for p, item in items.items()
            }
        return self.rebuild(leaves, raw, state, results, want_state)

    def rebuild(
        self, leaves: list, raw: Any, state: Any, results: dict, want_state: bool = True
    ) -> tuple[Any, dict | None]:
        new_state = None
        if want_state:
            new_state = _copy_dicts(state) if state else {}
            for path, names in self.outputs:
                entry = {k: dict(s) for k, s in zip(names, results[path][1]) if s}  # _put_state
                if entry:
                    set_path(new_state.setdefault(PARAMETRIZATIONS, {}), path, entry)
        values = [results[path][0] for path, _ in self.outputs]
        if self.mapping:
            out = _copy_pruned(raw, PARAMETRIZATIONS)
            for (path, _), value in zip(self.outputs, values):
                set_path(out, path, value)
        else:
            pool = leaves + values
            pool.append(None)
            out = self.stop_def.unflatten(list(map(pool.__getitem__, self.stop_index)))
        return out, new_state

    @classmethod
    def make(cls, spec, view, raw, leaves, state, items, results, out, new_state):
        """The plan of this read, or None when the structure is one the general path reads."""
        if state and not _dict_only(state):
            return None
        if view.mapping and not _dict_only(raw):
            return None
        flat, _ = jax.tree_util.tree_flatten_with_path(raw)
        if len(flat) != len(leaves):
            return None
        index = {_key_strs(kp): i for i, (kp, _) in enumerate(flat)}
        if len(index) != len(flat):  # two leaves whose key paths read alike
            return None
        self = cls()
        self.mapping = view.mapping
        prefixes: dict[str, tuple] = {}
        stop_flat: list
        stop_flat, self.stop_def = jax.tree_util.tree_flatten_with_path(raw, is_leaf=_stop)
        if self.mapping:
            prefixes = {p: (PARAMETRIZATIONS, *p.split("/")) for p in items}
        else:
            prefixes = {
                key_path_str(kp): _key_strs(kp) for kp, leaf in stop_flat if _is_raw_leaf(leaf)
            }
        variables = []
        for path, (chain, originals, params, lstate) in items.items():
            pre = prefixes[path]
            onames = tuple(originals)
            oidx = tuple(index[pre + (n,)] for n in onames)
            pspec = tuple(
                (tuple(p), tuple(index[pre + (str(i), n)] for n in p)) for i, p in enumerate(params)
            )
            node: Any = None
            if state:
                try:
                    node = get_path(state[PARAMETRIZATIONS], path)
                except (KeyError, TypeError):
                    node = None
            if node is None:
                ssegs, skeys = (), None
            else:
                ssegs = (PARAMETRIZATIONS, *path.split("/"))
                skeys = tuple(str(i) if str(i) in node else None for i in range(len(chain)))
            variables.append((path, chain, onames, oidx, pspec, ssegs, skeys))
            # the plan's inputs for this read are this read's
            if any(leaves[i] is not originals[n] for n, i in zip(onames, oidx)):
                return None
            for p, (names, idx) in zip(params, pspec):
                if any(leaves[i] is not p[n] for n, i in zip(names, idx)):
                    return None
            if skeys is not None:
                got = [{} if k is None else dict(node[k]) for k in skeys]
                if not all(_identical(a, b) for a, b in zip(got, lstate)):
                    return None
            elif any(lstate):
                return None
        self.variables = tuple(variables)
        self.outputs = tuple((p, tuple(str(i) for i in range(len(items[p][0])))) for p in items)
        self.groupable = _grouping.candidates(items) >= 2
        stop_index = []
        if not self.mapping:
            order = {p: k for k, p in enumerate(items)}
            for kp, leaf in stop_flat:
                if _is_raw_leaf(leaf):
                    stop_index.append(len(leaves) + order[key_path_str(kp)])
                elif leaf is None:
                    stop_index.append(-1)
                else:
                    i = index[_key_strs(kp)]
                    if leaves[i] is not leaf:
                        return None
                    stop_index.append(i)
        self.stop_index = tuple(stop_index)
        # its rebuild of this read's outputs is this read's outputs
        out2, state2 = self.rebuild(leaves, raw, state, results)
        if not _identical(state2, new_state):
            return None
        if self.mapping:
            if not _identical(out2, out):
                return None
        else:
            a, ta = jax.tree_util.tree_flatten(out2, is_leaf=_stop)
            b, tb = jax.tree_util.tree_flatten(out, is_leaf=_stop)
            if (ta, len(a)) != (tb, len(b)) or any(x is not y for x, y in zip(a, b)):
                return None
        return self
