"""The spec split per variable collection, and evaluating every chain of a variables dict.

Spec keys address ``params``; ``"<collection>:<path>"`` addresses another collection. The link
state of ``params`` chains lives at ``parametrization_state/parametrizations/...``, that of
another collection's chains at ``parametrization_state/<collection>/parametrizations/...``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeGuard

from parametrax import tree as _tree
from parametrax._errors import NotParametrizedError, ParametrizationError, SpecError
from parametrax.tree import PARAMETRIZATIONS, Spec
from parametrax.tree import paths as _paths

if TYPE_CHECKING:  # _wrapper imports this module
    from parametrax.linen._wrapper import _ParametrizedMixin

STATE_COLLECTION = "parametrization_state"
PARAMS = "params"


class FrozenStateWarning(UserWarning):
    """A chain whose state would advance (a spectral norm's power iteration) is differentiated
    with the ``parametrization_state`` collection immutable, so its state stays frozen."""


def split_key(key: str) -> tuple[str, str]:
    if ":" in key:
        col, path = key.split(":", 1)
        if not col or not path:
            raise SpecError(
                f"spec key `{key}`: expected `<path>` (in params) or `<collection>:<path>`."
            )
        return col, path
    return PARAMS, key


def by_collection(spec: Spec) -> dict[str, Spec]:
    out: dict[str, list] = {}
    for key, chain in spec.entries:
        col, path = split_key(key)
        out.setdefault(col, []).append((path, chain))
    return {col: Spec(tuple(entries)) for col, entries in out.items()}


def state_slice(state_tree: Mapping | None, col: str) -> dict:
    if not state_tree:
        return {}
    if col == PARAMS:
        return {k: v for k, v in state_tree.items() if k == PARAMETRIZATIONS}
    return dict(state_tree.get(col, {}))


def state_merge(state_tree: dict, col: str, sub: Mapping) -> None:
    if not sub:
        if col != PARAMS:
            state_tree.pop(col, None)
        else:
            state_tree.pop(PARAMETRIZATIONS, None)
        return
    if col == PARAMS:
        state_tree[PARAMETRIZATIONS] = sub[PARAMETRIZATIONS]
    else:
        state_tree[col] = dict(sub)


@contextlib.contextmanager
def explained(
    cls: type[_ParametrizedMixin], what: str, variables: Mapping
):  # what: already formatted
    """Re-raises errors about the variables handed to a parametrized module with the module's
    name and, when the cause is a missing collection or foreign variables, what to pass instead."""
    by_col = by_collection(cls._px_spec)
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
        # The hints are chosen from the structure of what was given, never from message text.
        hint = ""
        foreign = [col for col in by_col if not _has_raw(variables[col])]
        stateless = [] if foreign else links_without_variables(cls._px_spec, variables)
        if isinstance(e, NotParametrizedError) and foreign:
            hint = (
                f" These are not the variables of a `{cls.__name__}` (a plain "
                f"`{cls._px_base.__name__}`'s, or another model's?): pass the variables "
                f"`{cls.__name__}.init` returned, or convert plain ones with "
                "`parametrax.tree.register`."
            )
        elif stateless:
            where = ", ".join(stateless)
            given = (
                f"The variables have no `{STATE_COLLECTION}` collection"
                if STATE_COLLECTION not in variables
                else f"The `{STATE_COLLECTION}` collection given has no entry for {where}"
            )
            hint = (
                f" {given}: pass every collection `init` returned; the link state ({where}) "
                f"lives in `{STATE_COLLECTION}`: `model.apply(variables, x)` to use it, "
                f'`model.apply(variables, x, mutable=["{STATE_COLLECTION}"])` to also advance '
                f'it (training); holding params apart, pass `{{"params": params, '
                f'"{STATE_COLLECTION}": variables["{STATE_COLLECTION}"]}}`.'
            )
        raise type(e)(f"{what}: {e}{hint}") from e.__cause__


def _has_raw(tree: Any) -> TypeGuard[Mapping]:
    return isinstance(tree, Mapping) and PARAMETRIZATIONS in tree


def links_without_variables(spec: Spec, variables: Mapping) -> list[str]:
    """The links (``"`kernel` link 0"``) that own variables but find none in ``variables``.

    A link whose ``init_variables`` made params keeps them at
    ``<col>/parametrizations/<path>/<i>``, one that made state at
    ``parametrization_state/[<col>/]parametrizations/<path>/<i>``; a link owning variables with
    neither entry was handed variables without the state ``init`` made.
    """
    out = []
    state_tree = variables.get(STATE_COLLECTION) or {}
    for col, col_spec in by_collection(spec).items():
        raw = variables.get(col)
        if not _has_raw(raw):
            continue
        try:
            paths = _tree.parametrized_paths(col_spec, raw)
            resolved = col_spec.resolve(paths)
        except ParametrizationError:
            continue
        state = state_slice(state_tree, col)
        for path in sorted(resolved):
            chain = resolved[path][1]
            slot = _lookup(raw[PARAMETRIZATIONS], path)
            node = _lookup(state.get(PARAMETRIZATIONS, {}), path)
            for i, link in enumerate(chain):
                if link.has_variables and not slot.get(str(i)) and not node.get(str(i)):
                    name = path if col == PARAMS else f"{col}:{path}"
                    out.append(f"`{name}` link {i}")
    return out


def _lookup(tree: Mapping, path: str) -> Mapping:
    try:
        node = _paths.get_path(tree, path)
    except (KeyError, TypeError):
        return {}
    return node if isinstance(node, Mapping) else {}


def constrain_collections(
    spec: Spec, variables: Mapping, *, update_state: bool, group: bool = True
):
    """Every chain of every collection evaluated once (``group``: equal chains on equal shapes
    as one batched map, :func:`parametrax.tree.forward`); returns ``(variables, state)``."""
    by_col = by_collection(spec)
    state_tree = dict(variables.get(STATE_COLLECTION, {}))
    new_state = dict(state_tree)
    out = {}
    for col, tree in variables.items():
        if col == STATE_COLLECTION:
            continue
        if col in by_col:
            value, st = _tree.forward(
                by_col[col],
                tree,
                state_slice(state_tree, col),
                update_state=update_state,
                group=group,
            )
            out[col] = value
            state_merge(new_state, col, st)
        else:
            out[col] = tree
    return out, new_state
