"""The pure pytree core: spec matching and forward / right_inverse / removal over trees.

No Flax here. A *tree* is a nested mapping of arrays (a params dict). Registering a spec on a
tree gives the *raw tree*, laid out like torch's ``state_dict``::

    tree  = {"Dense_0": {"kernel": K, "bias": b}}
    raw   = {"Dense_0": {"bias": b},
             "parametrizations": {"Dense_0": {"kernel": {"original": right_inverse(K),
                                                          "0": {<link 0 learnable params>}}}}}
    state = {"parametrizations": {"Dense_0": {"kernel": {"0": {<link 0 state>}}}}}

``constrain(spec, raw, state)`` gives back a tree with the layout of ``tree`` in which every
parametrized leaf is ``forward(original)``. Train ``raw`` with any optax optimizer: the
constraint holds by construction.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from parametrax import _core
from parametrax._core import Parametrization, name_of
from parametrax._errors import (
    NotParametrizedError,
    ParametrizationError,
    ParametrizationTypeError,
    ShapeError,
    SpecError,
    with_context,
)

__all__ = [
    "Spec",
    "register",
    "constrain",
    "forward",
    "assign",
    "bake",
    "parametrized_paths",
    "flatten",
    "PARAMETRIZATIONS",
]

PARAMETRIZATIONS = "parametrizations"
_GLOB_CHARS = set("*?[")


# ------------------------------------------------------------------------------------------------
# Paths
# ------------------------------------------------------------------------------------------------
def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": x}}`` -> ``{"a/b": x}``; leaves are anything that is not a Mapping."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        p = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, p + "/"))
        else:
            out[p] = v
    return out


def _get(tree: Mapping, path: str) -> Any:
    node: Any = tree
    for seg in path.split("/"):
        node = node[seg]
    return node


def _set(tree: dict, path: str, value: Any) -> None:
    segs = path.split("/")
    node = tree
    for seg in segs[:-1]:
        node = node.setdefault(seg, {})
    node[segs[-1]] = value


def _to_dict(tree: Mapping) -> dict:
    """A plain-dict deep copy of the mapping structure (leaves are shared, they are immutable)."""
    return {k: (_to_dict(v) if isinstance(v, Mapping) else v) for k, v in tree.items()}


def _prune(tree: dict) -> dict:
    """Drops empty sub-dicts left behind after moving leaves out."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            v = _prune(dict(v))
            if not v:
                continue
        out[k] = v
    return out


def _glob_match(pattern: list[str], segs: list[str]) -> bool:
    if not pattern:
        return not segs
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_glob_match(rest, segs[i:]) for i in range(len(segs) + 1))
    return bool(segs) and fnmatch.fnmatchcase(segs[0], head) and _glob_match(rest, segs[1:])


def _is_glob(key: str) -> bool:
    return any(c in _GLOB_CHARS for c in key)


def _listing(paths: Iterable[str], limit: int = 30) -> str:
    paths = sorted(paths)
    shown = ", ".join(f"`{p}`" for p in paths[:limit])
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return (shown + more) if paths else "(none)"


# ------------------------------------------------------------------------------------------------
# Spec
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Spec:
    """A normalised, hashable spec: ``((key, (p0, p1, ...)), ...)`` in the user's order.

    Build it with :meth:`Spec.of` from ``{path_or_glob: parametrization or [chain]}``. Keys are
    exact ``/``-separated paths (``"Dense_0/kernel"``) or globs: ``*``, ``?`` and ``[...]`` match
    within one path segment, ``**`` matches any number of segments (``"**/kernel"``).
    """

    entries: tuple[tuple[str, tuple[Parametrization, ...]], ...]

    @classmethod
    def of(cls, spec: Any) -> Spec:
        if isinstance(spec, Spec):
            return spec
        if not isinstance(spec, Mapping):
            raise ParametrizationTypeError(
                "a spec must be a mapping {path_or_glob: parametrization or [chain]}, e.g. "
                f'{{"kernel": [skew, cayley]}}; got {type(spec).__name__}.'
            )
        if not spec:
            raise SpecError("the spec is empty: name at least one variable to parametrize.")
        entries = []
        for key, chain in spec.items():
            if not isinstance(key, str) or not key:
                raise ParametrizationTypeError(
                    f"spec keys must be non-empty path strings like 'kernel' or '*/kernel'; got "
                    f"{key!r}."
                )
            try:
                entries.append((key.strip("/"), _core.as_chain(chain)))
            except ParametrizationError as e:
                raise with_context(e, f"spec key `{key}`") from None
        return cls(tuple(entries))

    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.entries)

    def chain_for(self, key: str) -> tuple[Parametrization, ...]:
        return dict(self.entries)[key]

    def resolve(self, paths: Iterable[str], *, what: str = "tree") -> dict[str, tuple[str, tuple]]:
        """Maps each matched leaf path to ``(spec_key, chain)``.

        Errors: a key matching nothing (listing the paths that exist), a key naming a subtree
        rather than a leaf, and two keys claiming the same leaf.
        """
        paths = list(paths)
        pathset = set(paths)
        out: dict[str, tuple[str, tuple]] = {}
        for key, chain in self.entries:
            if key in pathset:
                matched = [key]
            elif _is_glob(key):
                pat = key.split("/")
                matched = [p for p in paths if _glob_match(pat, p.split("/"))]
            else:
                matched = []
            if not matched:
                under = [p for p in paths if p.startswith(key + "/")]
                if under:
                    raise SpecError(
                        f"spec key `{key}` names a subtree, not a variable; name a leaf such "
                        f"as {_listing(under, 5)} (or use a glob like `{key}/*`)."
                    )
                raise SpecError(
                    f"spec key `{key}` matches no variable of the {what}; the variables are: "
                    f"{_listing(paths)}."
                )
            for p in matched:
                if p in out:
                    raise SpecError(
                        f"spec keys `{out[p][0]}` and `{key}` both claim the variable `{p}`; "
                        "give each variable one chain (a list) under one key."
                    )
                out[p] = (key, chain)
        return out


def _add_note(err: BaseException, context: str) -> None:
    """Adds ``context`` (which variable, which chain) to an error raised by user code inside a
    chain, keeping its type (Python >= 3.11; a no-op before)."""
    if hasattr(err, "add_note"):
        err.add_note(f"(parametrax: raised while {context})")


def _chain_name(chain: tuple) -> str:
    return "[" + ", ".join(name_of(p) for p in chain) + "]"


def _context(path: str, chain: tuple) -> str:
    return f"parametrizing `{path}` with {_chain_name(chain)}"


def _check_leaf(path: str, leaf: Any, chain: tuple) -> jax.Array:
    if not (isinstance(leaf, jax.Array) or hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
        raise ParametrizationTypeError(
            f"{_context(path, chain)}: expected an array at `{path}`, got "
            f"{type(leaf).__name__}."
        )
    return leaf


# ------------------------------------------------------------------------------------------------
# Slots: where a parametrized variable's raw arrays live in the raw tree
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
            node = _get(state[PARAMETRIZATIONS], path)
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
        _set(state.setdefault(PARAMETRIZATIONS, {}), path, entry)


def _slots(spec: Spec, raw: Mapping) -> dict[str, tuple[Mapping, tuple]]:
    if PARAMETRIZATIONS not in raw:
        raise NotParametrizedError(
            f"the tree has no `{PARAMETRIZATIONS}` entry: it is not a raw tree made by "
            "`register` (top-level keys: "
            f"{_listing(raw.keys())})."
        )
    found = _find_slots(raw[PARAMETRIZATIONS])
    resolved = spec.resolve(found, what="raw tree's parametrizations")
    unclaimed = set(found) - set(resolved)
    if unclaimed:
        raise SpecError(
            f"the raw tree holds parametrized variables no spec key names: {_listing(unclaimed)}."
        )
    return {p: (found[p], resolved[p][1]) for p in resolved}


# ------------------------------------------------------------------------------------------------
# Public operations
# ------------------------------------------------------------------------------------------------
def register(
    spec: Any,
    tree: Mapping,
    *,
    key: jax.Array | None = None,
    unsafe: bool = False,
    update_state: bool = False,
) -> tuple[dict, dict]:
    """Registers ``spec`` on ``tree`` (torch's ``register_parametrization``, functionally).

    Each matched leaf ``W`` is replaced by its raw arrays ``right_inverse(W)`` under
    ``parametrizations/<path>/original`` (or ``original0``, ``original1``, ... when the first
    link's right_inverse returns several arrays). Parametrizations that own variables initialise
    them from ``key``. With ``unsafe=False`` a chain whose forward changes the shape or dtype is
    refused. Returns ``(raw, state)``; ``tree`` is never modified and nothing is returned on error.
    """
    spec = Spec.of(spec)
    if not isinstance(tree, Mapping):
        raise ParametrizationTypeError(
            "register: `tree` must be a nested mapping of arrays (a params dict such as "
            f"{{'kernel': W}}); got {type(tree).__name__}."
        )
    if PARAMETRIZATIONS in tree:
        raise SpecError(
            f"the tree already has a top-level `{PARAMETRIZATIONS}` entry: it is already a raw "
            "tree. Use `assign` to set values, or `bake` first to start again."
        )
    flat = flatten(tree)
    resolved = spec.resolve(flat)
    keys = dict(zip(sorted(resolved), jax.random.split(key, len(resolved)))) if key is not None else {}
    raw = _to_dict(tree)
    state: dict = {}
    slots = {}
    for path in sorted(resolved):
        _, chain = resolved[path]
        leaf = _check_leaf(path, flat[path], chain)
        try:
            originals, params, lstate = _core.chain_register(
                chain, leaf, key=keys.get(path), unsafe=unsafe, update_state=update_state
            )
        except ParametrizationError as e:
            raise with_context(e, _context(path, chain)) from None
        except Exception as e:
            _add_note(e, _context(path, chain))
            raise
        slots[path] = _make_slot(originals, params)
        _put_state(state, path, lstate)
    for path in resolved:
        segs = path.split("/")
        parent = _get(raw, "/".join(segs[:-1])) if len(segs) > 1 else raw
        del parent[segs[-1]]
    raw = _prune(raw)
    raw[PARAMETRIZATIONS] = {}
    for path, slot in slots.items():
        _set(raw[PARAMETRIZATIONS], path, slot)
    return raw, state


def forward(
    spec: Any, raw: Mapping, state: Mapping | None = None, *, update_state: bool = False
) -> tuple[dict, dict]:
    """Evaluates every chain once: ``raw tree -> (constrained tree, new state)``.

    The constrained tree has the layout of the tree given to :func:`register`. With
    ``update_state=True`` stateful parametrizations advance their state (e.g. a power
    iteration); otherwise the returned state equals ``state``.
    """
    spec = Spec.of(spec)
    slots = _slots(spec, raw)
    out = _prune(_to_dict({k: v for k, v in raw.items() if k != PARAMETRIZATIONS}))
    new_state = _to_dict(state) if state else {}
    for path, (slot, chain) in slots.items():
        originals, params = _slot_parts(slot, len(chain))
        lstate = _state_parts(state, path, len(chain))
        try:
            value, lstate = _core.chain_forward(
                chain, originals, params, lstate, update_state=update_state
            )
        except ParametrizationError as e:
            raise with_context(e, _context(path, chain)) from None
        except Exception as e:
            _add_note(e, _context(path, chain))
            raise
        _set(out, path, value)
        _put_state(new_state, path, lstate)
    return out, new_state


def constrain(spec: Any, raw: Mapping, state: Mapping | None = None) -> dict:
    """``forward`` without state updates: the constrained tree only."""
    return forward(spec, raw, state, update_state=False)[0]


def parametrized_paths(spec: Any, raw: Mapping) -> list[str]:
    """The paths (in the original tree's layout) that are parametrized in ``raw``."""
    return sorted(_slots(Spec.of(spec), raw))


def _select(spec: Spec, slots: Mapping, names: Any, *, verb: str) -> list[str]:
    if names is None:
        return sorted(slots)
    if isinstance(names, str):
        names = [names]
    chosen: list[str] = []
    for name in names:
        name = name.strip("/")
        if name in slots:
            hit = [name]
        elif _is_glob(name):
            hit = [p for p in slots if _glob_match(name.split("/"), p.split("/"))]
        else:
            hit = []
        if not hit:
            raise NotParametrizedError(
                f"cannot {verb} `{name}`: it is not parametrized; the parametrized variables "
                f"are {_listing(slots)}."
            )
        chosen.extend(h for h in hit if h not in chosen)
    return sorted(chosen)


def _finite_check(path: str, value: Any) -> None:
    if isinstance(value, jax.core.Tracer):
        return  # cannot look inside traced values; documented
    if not bool(jnp.all(jnp.isfinite(value))):
        raise ParametrizationError(
            f"the value assigned to `{path}` contains NaN or Inf; refusing to store it (a "
            "non-finite raw value would poison every later step)."
        )


def assign(
    spec: Any,
    raw: Mapping,
    state: Mapping | None,
    values: Mapping[str, Any],
    *,
    key: jax.Array | None = None,
) -> tuple[dict, dict]:
    """Torch's ``module.weight = X`` for each ``path: X`` in ``values``.

    Runs each chain's right_inverse (reverse order) and returns new ``(raw, state)`` whose
    constrained value at ``path`` is ``forward(right_inverse(X))``. The value must have the
    shape and dtype of the current constrained value; the raw arrays keep theirs. Concrete
    values containing NaN or Inf are refused. Nothing is returned on error.
    """
    spec = Spec.of(spec)
    if not isinstance(values, Mapping):
        raise ParametrizationTypeError(
            "values must be a mapping {path: array}, e.g. {'kernel': X}; got "
            f"{type(values).__name__}."
        )
    globs = [k for k in values if not isinstance(k, str) or _is_glob(k)]
    if globs:
        raise SpecError(
            f"assign takes exact variable paths, not globs or non-strings; got {globs[0]!r} "
            f"among the keys {_listing(map(str, values))}."
        )
    values = {k.strip("/"): v for k, v in values.items()}
    slots = _slots(spec, raw)
    paths = _select(spec, slots, list(values), verb="assign to")
    current, _ = jax.eval_shape(lambda r, s: forward(spec, r, s), raw, state or {})
    new_raw = _to_dict(raw)
    new_state = _to_dict(state) if state else {}
    keys = dict(zip(paths, jax.random.split(key, len(paths)))) if key is not None else {}
    for path in paths:
        slot, chain = slots[path]
        value = values[path]
        ctx = _context(path, chain)
        if not (isinstance(value, jax.Array) or hasattr(value, "shape")):
            raise ParametrizationTypeError(
                f"{ctx}: the value assigned must be an array, got {type(value).__name__}."
            )
        value = jnp.asarray(value)
        want = _get(current, path)
        if tuple(value.shape) != tuple(want.shape) or value.dtype != want.dtype:
            raise ShapeError(
                f"{ctx}: the value assigned has shape {tuple(value.shape)} and dtype "
                f"{value.dtype.name}; expected shape {tuple(want.shape)} and dtype "
                f"{jnp.dtype(want.dtype).name} (those of the current value)."
            )
        _finite_check(path, value)
        originals, params = _slot_parts(slot, len(chain))
        lstate = _state_parts(state, path, len(chain))
        try:
            originals, lstate = _core.chain_right_inverse(
                chain, value, originals, params, lstate, key=keys.get(path)
            )
        except ParametrizationError as e:
            raise with_context(e, ctx) from None
        except Exception as e:
            _add_note(e, f"assigning to `{path}` through {_chain_name(chain)}")
            raise
        _set(new_raw[PARAMETRIZATIONS], path, _make_slot(originals, params))
        _put_state(new_state, path, lstate)
    return new_raw, new_state


def bake(
    spec: Any,
    raw: Mapping,
    state: Mapping | None = None,
    *,
    names: Any = None,
    leave_parametrized: bool = True,
) -> tuple[dict, dict]:
    """Removes parametrizations (torch's ``remove_parametrizations``), returning ``(tree, state)``.

    ``names`` are variable paths or globs (default: all). With ``leave_parametrized=True`` each
    removed variable keeps its current constrained value; with ``False`` it becomes the raw
    ``original`` (refused when the chain stores several raw arrays, as in torch). When every
    variable is removed the result has the plain tree's layout and the state is ``{}``.
    """
    spec = Spec.of(spec)
    slots = _slots(spec, raw)
    paths = _select(spec, slots, names, verb="remove the parametrization of")
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
    constrained, _ = forward(spec, raw, state) if leave_parametrized else ({}, {})
    out = _to_dict(raw)
    new_state = _to_dict(state) if state else {}
    for path in paths:
        slot, _chain = slots[path]
        value = _get(constrained, path) if leave_parametrized else slot["original"]
        segs = path.split("/")
        parent = _get(out[PARAMETRIZATIONS], "/".join(segs[:-1])) if len(segs) > 1 else out[
            PARAMETRIZATIONS
        ]
        del parent[segs[-1]]
        if PARAMETRIZATIONS in new_state:
            try:
                sparent = (
                    _get(new_state[PARAMETRIZATIONS], "/".join(segs[:-1]))
                    if len(segs) > 1
                    else new_state[PARAMETRIZATIONS]
                )
                sparent.pop(segs[-1], None)
            except KeyError:
                pass
        _set(out, path, value)
    out = _prune(out)
    new_state = _prune(new_state)
    return out, new_state

