"""The catalog's one rule for declaring ``broadcasts`` (read by grouped evaluation,
:mod:`parametrax.tree`): a matrix map that acts on the last two axes and broadcasts over
leading ones says so for exactly its own class, never for a subclass, which may change the
maths and declares for itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, overload

__all__ = ["ExactClassBroadcasts"]


class ExactClassBroadcasts:
    """``broadcasts = ExactClassBroadcasts()`` in a class body: an instance of exactly that class
    acts on the last two axes and broadcasts over leading ones, so grouped evaluation may stack
    equal chains; an instance of a subclass does not (a subclass may change the maths and
    declares for itself). With ``when`` (a predicate on the instance), only where it also holds.

    Read-only on instances, like a property.
    """

    def __init__(self, when: Callable[[Any], bool] | None = None):
        self._when = when
        self._owner: type | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        self._owner = owner

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> ExactClassBroadcasts: ...
    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> bool: ...
    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return type(obj) is self._owner and (self._when is None or bool(self._when(obj)))

    def __set__(self, obj: object, value: object) -> None:
        raise AttributeError(f"`{type(obj).__name__}.broadcasts` is read-only")
