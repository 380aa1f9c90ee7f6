"""Paths and globs over trees: the one place that turns a tree position into a spec key.

A *path* is a ``/``-joined string naming one leaf of a pytree. For a nested mapping it is the
keys (``"Dense_0/kernel"``); for any other pytree it is JAX's key path with each entry written
plainly: dict keys as themselves, attribute names (dataclasses, equinox Modules, NamedTuples)
by name, sequence indices as numbers (``"layers/0/weight"``).

A spec key is an exact path or a glob: ``*``, ``?`` and ``[...]`` (a character class, as in
:mod:`fnmatch`: ``"Dense_[02]/kernel"``) match within one path segment; ``**`` matches any
number of segments (``"**/kernel"``). The fronts (linen, NNX, equinox) use these functions; no
front keeps its own copy.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

import jax

__all__ = [
    "flatten",
    "get_path",
    "set_path",
    "to_dict",
    "prune",
    "glob_match",
    "is_glob",
    "matches",
    "listing",
    "key_entry_str",
    "key_path_str",
    "leaves_with_paths",
]

_GLOB_CHARS = set("*?[")


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


def get_path(tree: Mapping, path: str) -> Any:
    """The node of the nested mapping ``tree`` at ``path`` (``KeyError`` if absent)."""
    node: Any = tree
    for seg in path.split("/"):
        node = node[seg]
    return node


def set_path(tree: dict, path: str, value: Any) -> None:
    """Sets ``tree[path] = value`` in place, creating intermediate dicts."""
    segs = path.split("/")
    node = tree
    for seg in segs[:-1]:
        node = node.setdefault(seg, {})
    node[segs[-1]] = value


def to_dict(tree: Mapping) -> dict:
    """A plain-dict deep copy of the mapping structure (leaves are shared, they are immutable)."""
    return {k: (to_dict(v) if isinstance(v, Mapping) else v) for k, v in tree.items()}


def prune(tree: Mapping) -> dict:
    """Drops the empty sub-dicts left behind after moving leaves out."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            v = prune(v)
            if not v:
                continue
        out[k] = v
    return out


def glob_match(pattern: list[str], segs: list[str]) -> bool:
    """Whether the path segments ``segs`` match the glob segments ``pattern``."""
    if not pattern:
        return not segs
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(glob_match(rest, segs[i:]) for i in range(len(segs) + 1))
    return bool(segs) and fnmatch.fnmatchcase(segs[0], head) and glob_match(rest, segs[1:])


def is_glob(key: str) -> bool:
    """Whether a spec key is a glob (contains ``*``, ``?`` or ``[``)."""
    return any(c in _GLOB_CHARS for c in key)


def matches(key: str, path: str) -> bool:
    """Whether the spec key ``key`` (exact path or glob) names ``path``."""
    return key == path or (is_glob(key) and glob_match(key.split("/"), path.split("/")))


def listing(paths: Iterable[str], limit: int = 30) -> str:
    """```a`, `b` and 3 more`` for error messages."""
    paths = sorted(paths)
    shown = ", ".join(f"`{p}`" for p in paths[:limit])
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return (shown + more) if paths else "(none)"


def key_entry_str(entry: Any) -> str:
    """One JAX key-path entry written plainly: a dict key, an attribute name or an index."""
    tu = jax.tree_util
    if isinstance(entry, tu.DictKey):
        return str(entry.key)
    if isinstance(entry, tu.GetAttrKey):
        return entry.name
    if isinstance(entry, tu.SequenceKey):
        return str(entry.idx)
    if isinstance(entry, tu.FlattenedIndexKey):
        return str(entry.key)
    return str(entry).strip(".[]'\"")


def key_path_str(key_path: Iterable[Any]) -> str:
    """A JAX key path as a spec path: ``(GetAttrKey('layers'), SequenceKey(0), ...)`` ->
    ``"layers/0/..."``."""
    return "/".join(key_entry_str(e) for e in key_path)


def leaves_with_paths(tree: Any, is_leaf=None) -> tuple[list[tuple[str, Any]], Any]:
    """``([(path, leaf), ...], treedef)`` of any pytree, paths as :func:`key_path_str`."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    return [(key_path_str(kp), leaf) for kp, leaf in flat], treedef
