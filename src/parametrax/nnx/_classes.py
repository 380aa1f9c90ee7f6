"""The generated ``Parametrized<Class>`` subclasses: one property per parametrized name."""

from __future__ import annotations

import threading
import types
from typing import Any

from parametrax.nnx import _compat
from parametrax.nnx._assign import _assign
from parametrax.nnx._containers import PARAMETRIZATIONS
from parametrax.nnx._memo import _evaluate

_CLASSES: dict[tuple[type, frozenset], type] = {}
_CLASSES_LOCK = threading.Lock()


def _make_property(name: str) -> property:
    def getter(self):
        return _evaluate(vars(self)[PARAMETRIZATIONS][name])

    def setter(self, value):
        _assign(self, name, value, key=None)

    return property(
        getter,
        setter,
        doc=f"`{name}`, computed by the parametrization chain from "
        f"`parametrizations.{name}.original`; assigning runs its right_inverse.",
    )


def _px_setattr(self, attr: str, value: Any) -> None:
    cls = type(self)
    if attr in cls._px_names:
        _assign(self, attr, value, key=None)
    else:
        cls._px_base.__setattr__(self, attr, value)


def _px_reduce(self):
    """Pickling (and ``copy.deepcopy``): the generated class is not importable by name, so the
    pickle names the base class and the parametrized names, and rebuilds the class on load."""
    cls = type(self)
    return _unpickle, (cls._px_base, tuple(sorted(cls._px_names))), self.__getstate__()


def _unpickle(base: type, names: tuple[str, ...]) -> Any:
    cls: Any = _parametrized_class(base, frozenset(names))  # a generated nnx.Module class
    return cls.__new__(cls)


def _parametrized_class(base: type, names: frozenset) -> type:
    key = (base, names)
    with _CLASSES_LOCK:
        cls = _CLASSES.get(key)
        if cls is not None:
            return cls
        namespace: dict[str, Any] = {
            "_px_base": base,
            "_px_names": names,
            "__module__": base.__module__,
            "__qualname__": f"Parametrized{base.__qualname__}",
            "__doc__": f"`{base.__name__}` with parametrized "
            f"{', '.join(f'`{n}`' for n in sorted(names))} (made by "
            "`parametrax.nnx.register_parametrization`).",
            "__setattr__": _px_setattr,
            "__reduce__": _px_reduce,
        }
        for n in names:
            namespace[n] = _make_property(n)
        kwds = {"pytree": _compat.pytree_flag(base)}
        cls = types.new_class(
            f"Parametrized{base.__name__}", (base,), kwds, lambda ns: ns.update(namespace)
        )
        _CLASSES[key] = cls
        return cls
