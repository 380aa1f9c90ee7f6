"""The alias policy, in one place.

Every public object has exactly one name. A name that was public and has moved (or was a second
name for the same thing) keeps working for one minor release: reading it returns the object
under its one name and emits a :class:`DeprecationWarning` saying which name to use. It is then
removed. The moved names and their replacements are listed in ``CHANGELOG.md``.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping


def module_getattr(module: str, moved: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` serving the names in ``moved`` (``old -> "pkg.mod:new"``) with a
    DeprecationWarning; any other name raises AttributeError as usual."""

    def __getattr__(name: str):
        if name in moved:
            target = moved[name]
            mod, _, attr = target.partition(":")
            new = f"{mod}.{attr}".replace("parametrax.", "px.", 1)
            warnings.warn(
                f"`{module.replace('parametrax', 'px', 1)}.{name}` is deprecated and will be "
                f"removed in the next minor release; use `{new}` (one name per object).",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(importlib.import_module(mod), attr)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
