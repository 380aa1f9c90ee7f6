"""The functions on ``(model, variables)``: torch's ``parametrize`` module-level functions."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import jax

from parametrax import tree as _tree
from parametrax._errors import NotParametrizedError, ParametrizationTypeError
from parametrax.linen._boxes import boxes_after_bake, rebox_plain, unbox
from parametrax.linen._collections import (
    PARAMS,
    STATE_COLLECTION,
    by_collection,
    constrain_collections,
    explained,
    split_key,
    state_merge,
    state_slice,
)
from parametrax.linen._wrapper import Parametrized, _parametrized_class, _ParametrizedMixin
from parametrax.tree import Spec
from parametrax.tree import paths as _paths


def _require_parametrized(model: Any, what: str) -> type[_ParametrizedMixin]:
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


def constrain(model: Any, variables: Mapping) -> dict:
    """The variables the base module sees (torch's ``layer.weight``): every chain evaluated once,
    without state updates, with the layout of the plain base module's variables.

    >>> # constrain(layer, variables)["params"]["kernel"]
    """
    cls = _require_parametrized(model, "constrain")
    variables = _check_variables(variables, "constrain")
    with explained(cls, f"constrain(`{cls.__name__}`)", variables):
        out, _ = constrain_collections(
            cls._px_spec, unbox(variables), update_state=False, group=cls._px_group
        )
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
    by_col = by_collection(cls._px_spec)
    per_col: dict[str, dict] = {}
    for k, v in values.items():
        col, path = split_key(k)
        if col not in by_col or col not in variables:
            raise NotParametrizedError(
                f"assign: `{k}` is not parametrized in `{cls.__name__}` (spec keys: "
                f"{', '.join(f'`{s}`' for s in cls._px_spec.keys())})."
            )
        per_col.setdefault(col, {})[path] = v
    new = dict(variables)
    state_tree = dict(unbox(variables.get(STATE_COLLECTION, {})))
    cols = sorted(per_col)
    keys = dict(zip(cols, jax.random.split(key, len(cols)))) if key is not None else {}
    for col in cols:
        with explained(cls, f"assign to `{cls.__name__}`", variables):
            raw, st = _tree.assign(
                by_col[col],
                unbox(variables[col]),
                state_slice(state_tree, col),
                per_col[col],
                key=keys.get(col),
            )
        new[col] = rebox_plain(raw, variables[col])
        state_merge(state_tree, col, st)
    if STATE_COLLECTION in variables or state_tree:
        new[STATE_COLLECTION] = rebox_plain(state_tree, variables.get(STATE_COLLECTION, {}))
    return new


def remove_parametrizations(
    model: Any,
    variables: Mapping,
    names: Any = None,
    *,
    leave_parametrized: bool = True,
) -> tuple[Any, dict]:  # a module, or a module class for a class
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
    by_col = by_collection(cls._px_spec)
    plain = unbox(variables)
    what = f"remove_parametrizations from `{cls.__name__}`"
    # Resolve every spec key to exact paths so partial removal can rebuild a spec.
    exact: dict[str, tuple] = {}
    with explained(cls, what, variables):
        for col, spec in by_col.items():
            # Resolve all paths at once: resolving one path alone fails on the other keys.
            resolved = spec.resolve(_tree.parametrized_paths(spec, plain[col]))
            for path, (_, chain) in sorted(resolved.items()):
                key = path if col == PARAMS else f"{col}:{path}"
                exact[key] = chain
    if names is None:
        chosen = list(exact)
    else:
        chosen = []
        for name in [names] if isinstance(names, str) else list(names):
            hits = [
                k for k in exact if k == name or _paths.glob_match(name.split("/"), k.split("/"))
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
        col_names = [split_key(k)[1] for k in chosen if split_key(k)[0] == col]
        if not col_names:
            continue
        with explained(cls, what, variables):
            tree, st = _tree.remove_parametrizations(
                by_col[col],
                plain[col],
                state_slice(state_tree, col),
                names=col_names,
                leave_parametrized=leave_parametrized,
            )
        new[col] = rebox_plain(tree, boxes_after_bake(variables[col], tree, col_names))
        state_merge(state_tree, col, st)
    if state_tree:
        new[STATE_COLLECTION] = rebox_plain(state_tree, variables.get(STATE_COLLECTION, {}))
    else:
        new.pop(STATE_COLLECTION, None)
    base = model._px_make_base() if not inspect.isclass(model) else cls._px_base
    remaining = [k for k in exact if k not in chosen]
    if not remaining:
        return base, new
    spec = Spec(tuple((k, exact[k]) for k in remaining))
    if inspect.isclass(model):
        return _parametrized_class(cls._px_base, (spec,), cls._px_unsafe, cls._px_group), new
    return Parametrized(base, spec, unsafe=cls._px_unsafe, group=cls._px_group), new


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
