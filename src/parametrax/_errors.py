"""Error classes shared by every layer of parametrax, and the helpers that write their messages.

Every error parametrax raises for bad input is a subclass of :class:`ParametrizationError`,
itself a :class:`ValueError` (or a :class:`TypeError` subclass for wrong kinds of objects), so
``except ValueError`` keeps working for callers that do not know about parametrax.

Message helpers (one of each, used by every layer):

* :func:`name_of` / :func:`describe`: a parametrization in prose (``Skew`` / ```Skew```,
  ``function `tanh``` for a plain callable);
* :func:`chain_repr`: a chain in prose, ``[Skew, tanh]``;
* :func:`with_context`: adds where an error happened (which variable, which chain), keeping
  its class, its cause and its notes.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = [
    "ParametrizationError",
    "ParametrizationTypeError",
    "ShapeError",
    "AxisError",
    "SpecError",
    "RightInverseError",
    "NotParametrizedError",
    "name_of",
    "describe",
    "chain_repr",
    "with_context",
]


class ParametrizationError(ValueError):
    """Base class of the errors parametrax raises for bad input."""


class ParametrizationTypeError(TypeError, ParametrizationError):
    """An object of the wrong kind was given where a parametrization or an array was expected."""


class ShapeError(ParametrizationError):
    """An array has a shape or dtype the parametrization cannot accept, or a forward changed it."""


class AxisError(ShapeError, IndexError):
    """An ``axis`` out of range for the array, or repeated (an ``IndexError`` too, as torch
    raises)."""


class SpecError(ParametrizationError):
    """A spec key matches nothing, matches a subtree, or two keys claim the same variable."""


class RightInverseError(ParametrizationError):
    """Assigning through a chain failed: a link has no right_inverse, or it returned the wrong thing."""


class NotParametrizedError(ParametrizationError):
    """Asked to remove or assign a variable that is not parametrized."""


# ------------------------------------------------------------------------------------------------
# Message helpers
# ------------------------------------------------------------------------------------------------
def name_of(p: Any) -> str:
    """The bare name of a parametrization: its class name, or the name of the plain callable it
    wraps (a parametrization wrapping a function sets the class attribute ``wraps_function`` and
    keeps the function in ``fn``)."""
    if getattr(type(p), "wraps_function", False):
        fn = p.fn
        return getattr(fn, "__qualname__", repr(fn))
    return type(p).__name__


def describe(p: Any) -> str:
    """A parametrization in a sentence: ```Skew```, or ``function `tanh``` for a plain callable."""
    if getattr(type(p), "wraps_function", False):
        return f"function `{name_of(p)}`"
    return f"`{name_of(p)}`"


def chain_repr(chain: Any) -> str:
    """A chain in a sentence, by bare names in chain order: ``[Skew, Cayley]``."""
    return "[" + ", ".join(name_of(p) for p in chain) + "]"


def with_context(err: BaseException, context: str) -> BaseException:
    """``err`` with ``context`` (where it happened) added; raise the result
    ``from err.__cause__`` (``from None`` would drop the cause this copies).

    A :class:`ParametrizationError` (parametrax's own message) comes back as a copy of the same
    class whose message starts with ``context``, with the original's ``__cause__`` and notes.
    Any other exception (raised by user code inside a chain) keeps its type and message: the
    context is added to it as a note, ``(parametrax: raised while <context>)``, and the same
    object comes back.
    """
    if isinstance(err, ParametrizationError):
        new = type(err)(f"{context}: {err}")
        new.__cause__ = err.__cause__
        if sys.version_info >= (3, 11):  # exception notes are new in Python 3.11
            for note in getattr(err, "__notes__", ()):
                new.add_note(note)
        return new
    if hasattr(err, "add_note"):
        err.add_note(f"(parametrax: raised while {context})")
    return err
