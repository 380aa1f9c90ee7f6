"""The normalised, hashable spec ``{path_or_glob: chain}``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from parametrax import _core
from parametrax._core import Parametrization
from parametrax._errors import (
    ParametrizationError,
    ParametrizationTypeError,
    SpecError,
    with_context,
)
from parametrax.tree.paths import glob_match, is_glob, listing

__all__ = ["Spec"]


@dataclasses.dataclass(frozen=True)
class Spec:
    """A normalised, hashable spec: ``((key, (p0, p1, ...)), ...)`` in the user's order.

    Build it with :meth:`Spec.of` from ``{path_or_glob: parametrization or [chain]}``. Keys are
    exact ``/``-separated paths (``"Dense_0/kernel"``, ``"layers/0/weight"``) or globs: ``*``,
    ``?`` and ``[...]`` (a character class, ``"Dense_[02]/kernel"``) match within one path
    segment, ``**`` matches any number of segments (``"**/kernel"``).
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
                raise with_context(e, f"spec key `{key}`") from e.__cause__
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
            elif is_glob(key):
                pat = key.split("/")
                matched = [p for p in paths if glob_match(pat, p.split("/"))]
            else:
                matched = []
            if not matched:
                under = [p for p in paths if p.startswith(key + "/")]
                if under:
                    raise SpecError(
                        f"spec key `{key}` names a subtree, not a variable; name a leaf such "
                        f"as {listing(under, 5)} (or use a glob like `{key}/*`)."
                    )
                raise SpecError(
                    f"spec key `{key}` matches no variable of the {what}; the variables are: "
                    f"{listing(paths)}."
                )
            for p in matched:
                if p in out:
                    raise SpecError(
                        f"spec keys `{out[p][0]}` and `{key}` both claim the variable `{p}`; "
                        "give each variable one chain (a list) under one key."
                    )
                out[p] = (key, chain)
        return out
