"""Metadata boxes (``nn.Partitioned`` and friends): unbox to compute, rebox to store.

The chains compute on plain arrays; what the wrapper stores goes back into the box its variable
came in (when the shape still fits), so ``nn.with_partitioning`` annotations survive
registration, assignment and removal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flax.core import meta

from parametrax.tree import PARAMETRIZATIONS
from parametrax.tree import paths as _paths


def _is_box(x: Any) -> bool:
    return isinstance(x, meta.AxisMetadata)


def unbox(tree: Any) -> Any:
    return meta.unbox(tree)


def _rebox_like(new: Any, old: Any) -> Any:
    """Puts ``new`` back in the box ``old`` came in, when the shapes still fit."""
    if _is_box(old):
        inner = old.unbox()
        if getattr(inner, "shape", None) == getattr(new, "shape", None):
            return old.replace_boxed(new)
    return new


def rebox_raw(raw: dict, boxed_tree: Mapping) -> dict:
    """Reboxes originals whose variable was boxed (same shape), and every plain leaf as before."""
    flat_boxed = {}
    for path, leaf in _paths.flatten(boxed_tree).items():
        flat_boxed[path] = leaf
    out = {}
    for k, v in raw.items():
        if k == PARAMETRIZATIONS:
            out[k] = _rebox_slots(v, flat_boxed, "")
        else:
            out[k] = rebox_plain(v, boxed_tree.get(k))
    return out


def rebox_plain(v: Any, old: Any) -> Any:
    if isinstance(v, Mapping):
        return {
            k: rebox_plain(x, old.get(k) if isinstance(old, Mapping) else None)
            for k, x in v.items()
        }
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


def rebox_state(state: Mapping, boxed_tree: Mapping) -> dict:
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


def boxes_after_bake(boxed_col: Mapping, baked: Mapping, paths: list[str]) -> dict:
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
