"""The equinox front: a parametrized equinox Module, as thin as the linen one.

:class:`Parametrized` wraps any equinox Module (or any pytree with a ``__call__``) and stores the
raw arrays of the variables a spec names, in place (``parametrax.tree``'s pytree layout). Calling
it computes every chain once, builds the constrained copy of the wrapped module and calls that:
the wrapped module is never mutated (equinox's own ``WeightNorm`` works the same way). Spec
keys are the wrapped module's key paths joined by ``/``: ``"weight"``, ``"layers/0/weight"``,
``"layers/*/weight"``.

Layout: equinox stores a Linear's weight as ``(out, in)`` and a Conv's as
``(out, in, *kernel)`` -- torch's layout, not Flax's. Matrix parametrizations act on the last
two axes, so ``Orthogonal()`` on ``eqx.nn.Linear(in, out)``'s weight constrains the
``(out, in)`` matrix (orthonormal rows when ``out <= in``), exactly what torch's
``orthogonal(nn.Linear(in, out))`` constrains; ``SpectralNorm()`` and ``WeightNorm()`` read the
whole matrix and ``axis=0`` as torch's ``dim=0``.

Training (stateless chains, the common case)::

    spec = {"layers/*/weight": px.Orthogonal(use_trivialization=False)}
    model = px.equinox.Parametrized(eqx.nn.MLP(2, 2, 16, 2, key=k), spec)
    opt_state = optim.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(model, opt_state, x, y):
        grads = eqx.filter_grad(loss)(model, x, y)            # loss calls model(x)
        updates, opt_state = optim.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), opt_state

Stateful chains (spectral norm's ``u``, ``v``; a pruning mask; the trivialization base of
``Orthogonal()``, ``Stiefel()``, ``SO()``, ...) keep
their state in an ``eqx.nn.State``, the way ``eqx.nn.BatchNorm`` and ``eqx.nn.SpectralNorm``
do: build with ``model, state = eqx.nn.make_with_state(px.equinox.Parametrized)(module, spec,
key=k)`` and call ``out, state = model(x, state=state)`` (``inference=True`` evaluates with the
stored state and returns it unchanged). The state never reaches the gradient.

``px.equinox.constrain(model, state)`` is the plain wrapped module with the constrained
values (torch's ``m.weight`` for every variable), ``assign`` is torch's ``m.weight = X``,
``remove_parametrizations`` is torch's and ``update_base`` moves trivialization bases.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax

from parametrax import tree as ptree
from parametrax._errors import ParametrizationError, ParametrizationTypeError
from parametrax.tree import Spec

__all__ = [
    "Parametrized",
    "constrain",
    "assign",
    "remove_parametrizations",
    "update_base",
    "spec_of",
]


def _has_leaves(tree: Any) -> bool:
    return bool(jax.tree.leaves(tree))


class Parametrized(eqx.Module):
    """An equinox Module whose parametrized arrays are stored raw.

    Args:
      module: the module to parametrize (any pytree with a ``__call__``).
      spec: ``{key_path_or_glob: parametrization or [chain]}``.
      key: a PRNG key, needed when a link owns variables (a pruning mask, spectral norm's
        ``u``/``v``, a trivialization base).
      unsafe: allow chains that change the shape or dtype (torch's ``unsafe=True``).

    Build a stateful one with ``eqx.nn.make_with_state(Parametrized)(module, spec, key=k)``.

    >>> import jax, jax.numpy as jnp, equinox as eqx, parametrax as px
    >>> lin = eqx.nn.Linear(5, 3, key=jax.random.key(0))
    >>> model = px.equinox.Parametrized(lin, {"weight": px.Orthogonal(use_trivialization=False)})
    >>> W = px.equinox.constrain(model).weight                 # (out, in) = (3, 5)
    >>> bool(jnp.allclose(W @ W.T, jnp.eye(3), atol=1e-5))
    True
    >>> model(jnp.ones(5)).shape
    (3,)

    A stateful chain (``Orthogonal()`` keeps its trivialization base as state):

    >>> model, state = eqx.nn.make_with_state(px.equinox.Parametrized)(
    ...     lin, {"weight": px.Orthogonal()}, key=jax.random.key(1))
    >>> y, state = model(jnp.ones(5), state=state)
    >>> y.shape
    (3,)
    """

    raw: Any
    spec: Spec = eqx.field(static=True)
    state_index: eqx.nn.StateIndex | None

    def __init__(
        self, module: Any, spec: Any, *, key: jax.Array | None = None, unsafe: bool = False
    ):
        if isinstance(module, Parametrized):
            raise ParametrizationTypeError(
                "`module` is already a px.equinox.Parametrized; parametrize the wrapped module "
                "once with one spec holding every chain (`{path: [p0, p1]}`)."
            )
        spec = Spec.of(spec)
        raw, state = ptree.register(spec, module, key=key, unsafe=unsafe)
        self.raw = raw
        self.spec = spec
        self.state_index = eqx.nn.StateIndex(state) if _has_leaves(state) else None

    @property
    def stateful(self) -> bool:
        """Whether some link owns state (then calls take and return an ``eqx.nn.State``)."""
        return self.state_index is not None

    def _pstate(self, state: Any) -> dict:
        if not self.stateful:
            return {}
        if state is None:
            raise ParametrizationError(
                "this Parametrized module has stateful parametrizations (their state lives in an "
                "`eqx.nn.State`): build it with `model, state = "
                "eqx.nn.make_with_state(px.equinox.Parametrized)(module, spec, key=key)` and "
                "call `out, state = model(x, state=state)`."
            )
        return jax.lax.stop_gradient(state.get(self.state_index))

    def __call__(self, *args: Any, state: Any = None, inference: bool = False, **kwargs: Any):
        """Calls the wrapped module with the constrained values.

        Stateless spec: returns what the wrapped module returns. Stateful spec: pass
        ``state=``; returns ``(output, new_state)``, the state advanced unless ``inference``.
        """
        if not self.stateful:
            if state is not None:
                raise ParametrizationError(
                    "`state=` was given but no parametrization of this module has state; call "
                    "`model(x)`."
                )
            return ptree.constrain(self.spec, self.raw)(*args, **kwargs)
        pstate = self._pstate(state)
        module, new = ptree.forward(self.spec, self.raw, pstate, update_state=not inference)
        out = module(*args, **kwargs)
        if not inference:
            state = state.set(self.state_index, jax.lax.stop_gradient(new))
        return out, state


def _check(model: Any, fn: str) -> Parametrized:
    if not isinstance(model, Parametrized):
        raise ParametrizationTypeError(
            f"{fn}: expected a px.equinox.Parametrized module; got {type(model).__name__}."
        )
    return model


def spec_of(model: Parametrized) -> Spec:
    """The spec ``model`` was built with."""
    return _check(model, "spec_of").spec


def constrain(model: Parametrized, state: Any = None) -> Any:
    """The wrapped module with every parametrized array replaced by its constrained value."""
    model = _check(model, "constrain")
    return ptree.constrain(model.spec, model.raw, model._pstate(state))


def assign(
    model: Parametrized,
    values: Mapping[str, Any],
    state: Any = None,
    *,
    key: jax.Array | None = None,
):
    """Torch's ``m.weight = X``: returns the new model (and the new state, when stateful) whose
    constrained value at each path is ``forward(right_inverse(X))``."""
    model = _check(model, "assign")
    raw, pstate = ptree.assign(model.spec, model.raw, model._pstate(state), values, key=key)
    new = eqx.tree_at(lambda m: m.raw, model, raw)
    if model.stateful:
        return new, state.set(model.state_index, pstate)
    return new


def remove_parametrizations(
    model: Parametrized, state: Any = None, *, leave_parametrized: bool = True
) -> Any:
    """Torch's ``remove_parametrizations`` for every variable: the plain wrapped module, holding
    the constrained values (or the raw ``original`` with ``leave_parametrized=False``)."""
    model = _check(model, "remove_parametrizations")
    module, _ = ptree.remove_parametrizations(
        model.spec, model.raw, model._pstate(state), leave_parametrized=leave_parametrized
    )
    return module


def update_base(model: Parametrized, state: Any, *, when: Any = True):
    """Moves every trivialization base to its current value (``parametrax.tree.update_base``);
    returns the new ``(model, state)``."""
    model = _check(model, "update_base")
    raw, pstate = ptree.update_base(model.spec, model.raw, model._pstate(state), when=when)
    new = eqx.tree_at(lambda m: m.raw, model, raw)
    if model.stateful:
        state = state.set(model.state_index, pstate)
    return new, state
