"""The NNX graph nodes a parametrized module holds, and where to find them on a host.

``module.parametrizations`` is a :class:`ParametrizationDict`; each entry a
:class:`ParametrizationList` (the raw value(s) and the links); each link a
:class:`ParametrizationLink` (the parametrization and its params / state Variables).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
from flax import nnx

from parametrax._core import Parametrization, describe
from parametrax._errors import ParametrizationError
from parametrax.nnx import _compat
from parametrax.nnx._memo import _evaluate

Array = jax.Array
PARAMETRIZATIONS = "parametrizations"


class ParametrizationState(nnx.Variable):
    """Non-trainable state owned by a parametrization (a pruning mask, spectral norm's ``u``,
    ``v``, a trivialization's base point). Not an ``nnx.Param``, so ``nnx.grad`` and
    ``nnx.Optimizer(..., wrt=nnx.Param)`` leave it alone."""


# ------------------------------------------------------------------------------------------------
# The containers: module.parametrizations[name][i]
# ------------------------------------------------------------------------------------------------
class ParametrizationLink(nnx.Module):
    """One link of a chain: the parametrization (static) and its variables as attributes.

    ``link.parametrization`` is the frozen parametrization object; each learnable param is an
    ``nnx.Param`` attribute and each state entry a :class:`ParametrizationState` attribute, named
    as ``init_variables`` named them (torch: ``parametrizations.weight.0.<name>``).
    """

    if _compat.LEAN_GRAPH:  # NNX's graph traversal, per nnx.jit call: see _compat.lean_flatten
        _graph_node_flatten = _compat.lean_flatten
        _graph_node_init = _compat.lean_init
        _graph_node_clear = _compat.lean_clear

    def __init__(self, parametrization: Parametrization, params: dict, state: dict):
        for kind, entries in (("params", params), ("state", state)):
            for k in entries:
                if (
                    not isinstance(k, str)
                    or not k.isidentifier()
                    or k.startswith("_")
                    or hasattr(ParametrizationLink, k)
                ):
                    raise ParametrizationError(
                        f"{describe(parametrization)}.init_variables returned the {kind} entry "
                        f"{k!r}; variable names must be identifiers that do not start with `_` "
                        f"and are not attributes of nnx.Module (e.g. `scale`, `u`, `mask`)."
                    )
        clash = sorted(set(params) & set(state))
        if clash:
            raise ParametrizationError(
                f"{describe(parametrization)}.init_variables returned {clash} both as params "
                "and as state; each variable name must be unique within a parametrization."
            )
        self.parametrization = parametrization
        self._px_param_names = tuple(params)
        self._px_state_names = tuple(state)
        for k, v in params.items():
            setattr(self, k, nnx.Param(v))
        for k, v in state.items():
            setattr(self, k, ParametrizationState(v))

    @property
    def params(self) -> dict:
        return {k: getattr(self, k).get_value() for k in self._px_param_names}

    @property
    def state(self) -> dict:
        return {k: getattr(self, k).get_value() for k in self._px_state_names}

    @property
    def variables(self) -> dict:
        return {"params": self.params, "state": self.state}


_compat.ELIDABLE.add(ParametrizationLink)  # a link owning no variables is not a graph node


class ParametrizationList(nnx.Module):
    """The chain of one parametrized variable: torch's ``ParametrizationList``.

    Holds the raw value(s) as ``original`` (or ``original0``, ``original1``, ...), the links as
    ``self[0]``, ``self[1]``, ... (attributes ``"0"``, ``"1"``, so ``nnx.state`` paths read
    ``parametrizations/kernel/"0"/mask``, torch's ``parametrizations.weight.0.mask``; the keys
    are strings because JAX cannot sort a dict mixing ``0`` and ``"original"``), and three
    static fields: ``original_names``, ``unsafe`` and ``use_running_average`` (the train/eval
    flag, see the module docstring).
    Calling it (``plist()``) evaluates the chain, like torch's ``ParametrizationList.forward``.
    """

    if _compat.LEAN_GRAPH:  # NNX's graph traversal, per nnx.jit call: see _compat.lean_flatten
        _graph_node_flatten = _compat.lean_flatten
        _graph_node_init = _compat.lean_init
        _graph_node_clear = _compat.lean_clear

    def __init__(
        self,
        originals: dict[str, nnx.Variable],
        links: list[ParametrizationLink],
        *,
        unsafe: bool,
        use_running_average: bool,
    ):
        for n, var in originals.items():
            setattr(self, n, var)
        for i, link in enumerate(links):
            setattr(self, str(i), link)
        self.original_names = tuple(originals)
        self.unsafe = unsafe
        self.use_running_average = use_running_average

    def __len__(self) -> int:
        n = 0
        while str(n) in vars(self):
            n += 1
        return n

    def __getitem__(self, i: int) -> ParametrizationLink:
        n = len(self)
        if not isinstance(i, int) or not -n <= i < n:
            raise IndexError(f"the chain has {n} parametrization(s); got index {i!r}.")
        return vars(self)[str(i % n)]

    def __iter__(self) -> Iterator[ParametrizationLink]:
        return (vars(self)[str(i)] for i in range(len(self)))

    @property
    def chain(self) -> tuple[Parametrization, ...]:
        return tuple(link.parametrization for link in self)

    @property
    def is_tensor(self) -> bool:
        """Whether the raw value is one array (``original``), as torch's ``is_tensor``."""
        return self.original_names == ("original",)

    def set_view(self, use_running_average: bool | None = None):
        """Used by ``nnx.view(model, use_running_average=...)``."""
        if use_running_average is not None:
            self.use_running_average = use_running_average

    def __call__(self) -> Array:
        return _evaluate(self)


class ParametrizationDict(nnx.Module):
    """``module.parametrizations``: one :class:`ParametrizationList` attribute per parametrized
    name. ``name in d``, ``d[name]``, ``list(d)`` and ``len(d)`` work as on a dict."""

    if _compat.LEAN_GRAPH:  # NNX's graph traversal, per nnx.jit call: see _compat.lean_flatten
        _graph_node_flatten = _compat.lean_flatten
        _graph_node_init = _compat.lean_init
        _graph_node_clear = _compat.lean_clear

    def _px_names(self) -> list[str]:
        return sorted(k for k, v in vars(self).items() if isinstance(v, ParametrizationList))

    def __getitem__(self, name: str) -> ParametrizationList:
        # (every read of a parametrized attribute comes here: one dict lookup, no sorted listing)
        entry = vars(self).get(name) if isinstance(name, str) else None
        if not isinstance(entry, ParametrizationList):
            raise KeyError(name)
        return entry

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and isinstance(vars(self).get(name), ParametrizationList)

    def __iter__(self) -> Iterator[str]:
        return iter(self._px_names())

    def __len__(self) -> int:
        return len(self._px_names())


def _is_generated(cls: type) -> bool:
    return "_px_base" in vars(cls)


def _pdict(module: Any) -> ParametrizationDict | None:
    if not _is_generated(type(module)):
        return None
    d = vars(module).get(PARAMETRIZATIONS)
    return d if isinstance(d, ParametrizationDict) else None


def _base_of(module: Any) -> type:
    cls = type(module)
    return cls._px_base if _is_generated(cls) else cls


def _qualified(module: Any, name: str) -> str:
    return f"`{_base_of(module).__name__}.{name}`"


def is_parametrized(module: Any, name: str | None = None) -> bool:
    """Whether ``module`` has a parametrized variable, or whether ``name`` is one."""
    d = _pdict(module)
    if d is None:
        return False
    return len(d) > 0 if name is None else name in d


def type_before_parametrizations(module: Any) -> type:
    """The class ``module`` had before its first registration (torch's helper of that name)."""
    return _base_of(module)


def _names_str(module: Any) -> str:
    d = _pdict(module)
    return ", ".join(f"`{n}`" for n in d) if d else "none"


def _variable_names(module: Any) -> list[str]:
    names = [k for k, v in vars(module).items() if isinstance(v, nnx.Variable)]
    d = _pdict(module)
    if d is not None:
        names += list(d)
    return sorted(names)
