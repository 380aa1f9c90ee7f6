"""Pruning masks: ``RandomPruning`` (the PyTorch tutorial's example of a right inverse that is
not a true inverse)."""

from __future__ import annotations

import jax

from parametrax._core import Parametrization, Variables
from parametrax._errors import ParametrizationError, describe
from parametrax._numerics import require_inexact

__all__ = ["RandomPruning"]

Array = jax.Array


class RandomPruning(Parametrization):
    r"""A fixed random pruning mask: ``X -> X * mask``, ``mask ~ Bernoulli(1 - p_drop)``.

    The mask is drawn once, from the PRNG key given at registration, and kept as non-trainable
    state (``state["mask"]``, same shape and dtype as the variable). ``right_inverse`` is the
    identity, so this is the tutorial's example of a right inverse that is not a true inverse:
    after assigning ``X`` the constrained value is ``X * mask``, not ``X``.

    No ``in_manifold`` and no ``sample``: the set (zeros where the mask is 0) depends on the
    state, which ``in_manifold(x, atol)`` does not receive.

    Args:
      p_drop: probability that an entry is zeroed, in ``[0, 1)``.
    """

    p_drop: float = 0.5

    def __post_init__(self):
        if not (isinstance(self.p_drop, (int, float)) and 0.0 <= self.p_drop < 1.0):
            raise ParametrizationError(
                f"`RandomPruning`: `p_drop` must be a float in [0, 1); got {self.p_drop!r}."
            )

    def init_variables(self, key: Array, value: Array) -> Variables:
        require_inexact(self, value)
        keep = jax.random.bernoulli(key, 1.0 - self.p_drop, value.shape)
        return {"params": {}, "state": {"mask": keep.astype(value.dtype)}}

    def apply(self, variables: Variables, x: Array, *, update_state: bool = False):
        del update_state
        mask = variables["state"]["mask"]
        if mask.shape != x.shape:
            raise ParametrizationError(
                f"{describe(self)}: the stored mask has shape {tuple(mask.shape)} but the "
                f"value has shape {tuple(x.shape)}."
            )
        return x * mask, variables["state"]

    def apply_inverse(self, variables: Variables, value: Array, *, key=None):
        del key
        return value, variables["state"]
