"""Error classes shared by every layer of parametrax.

Every error parametrax raises for bad input is a subclass of :class:`ParametrizationError`,
itself a :class:`ValueError` (or a :class:`TypeError` subclass for wrong kinds of objects), so
``except ValueError`` keeps working for callers that do not know about parametrax.
"""

from __future__ import annotations

__all__ = [
    "ParametrizationError",
    "ParametrizationTypeError",
    "ShapeError",
    "SpecError",
    "RightInverseError",
    "NotParametrizedError",
]


class ParametrizationError(ValueError):
    """Base class of the errors parametrax raises for bad input."""


class ParametrizationTypeError(TypeError, ParametrizationError):
    """An object of the wrong kind was given where a parametrization or an array was expected."""


class ShapeError(ParametrizationError):
    """An array has a shape or dtype the parametrization cannot accept, or a forward changed it."""


class SpecError(ParametrizationError):
    """A spec key matches nothing, matches a subtree, or two keys claim the same variable."""


class RightInverseError(ParametrizationError):
    """Assigning through a chain failed: a link has no right_inverse, or it returned the wrong thing."""


class NotParametrizedError(ParametrizationError):
    """Asked to remove or assign a variable that is not parametrized."""


def with_context(err: ParametrizationError, context: str) -> ParametrizationError:
    """Returns a copy of ``err`` (same class) whose message starts with ``context``."""
    new = type(err)(f"{context}: {err}")
    new.__cause__ = err.__cause__
    return new
