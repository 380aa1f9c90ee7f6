"""Shared machinery of the trivialized manifolds: the ``triv`` field and its table of maps
Skew(n) -> SO(n), skew matrices read from raw columns, points and base moves, sampling options.
The numerics they use (``expm``, the Cayley map, projections, sampling) live in
:mod:`parametrax._numerics`.

A *trivialization* parametrizes a point of the orthogonal group (or of a Stiefel manifold) as
``B @ triv(A)`` where ``A`` is skew-symmetric (built from the raw array) and ``B`` is a base
point kept as non-trainable state (Lezcano-Casado 2019, "Trivializations for gradient-based
optimization on manifolds"). Assigning a value moves the base to it and zeroes the raw array,
so ``forward(right_inverse(Y)) == Y`` exactly for every point, without a matrix logarithm.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from parametrax._core import Parametrization
from parametrax._errors import ParametrizationError, ParametrizationTypeError, describe
from parametrax._numerics import cayley_half, expm, mT, newton_schulz

Array = jax.Array


# ------------------------------------------------------------------------------------------------
# Maps Skew(n) -> SO(n)
# ------------------------------------------------------------------------------------------------
TRIVIALIZATIONS = {"expm": expm, "cayley": cayley_half}


def check_triv(owner: str, triv) -> None:
    valid = ", ".join(repr(k) for k in TRIVIALIZATIONS)
    if isinstance(triv, str):
        if triv not in TRIVIALIZATIONS:
            raise ParametrizationError(
                f"`{owner}`: unknown `triv`={triv!r}; expected one of {valid}, or a callable "
                "mapping one n x n skew-symmetric matrix to an orthogonal one."
            )
        return
    if not callable(triv):
        raise ParametrizationTypeError(
            f"`{owner}`: `triv` must be one of {valid} or a callable; got "
            f"{type(triv).__name__} {triv!r}."
        )
    try:
        hash(triv)
    except TypeError:
        raise ParametrizationTypeError(
            f"`{owner}`: `triv`={triv!r} is not hashable; pass a plain function defined once."
        ) from None


def apply_triv(triv, a: Array) -> Array:
    """``triv`` on every ``n x n`` matrix of ``a`` (the callable sees one matrix; vmapped)."""
    if isinstance(triv, str):
        return TRIVIALIZATIONS[triv](a)  # both named maps are batched natively
    fn = triv
    if a.ndim == 2:
        return fn(a)
    flat = a.reshape((-1,) + a.shape[-2:])
    return jax.vmap(fn)(flat).reshape(a.shape)


def triv_name(triv) -> str:
    return triv if isinstance(triv, str) else getattr(triv, "__name__", repr(triv))


class Trivialized(Parametrization):
    """Base of the entries trivialized at a base point: declares the ``triv`` field once
    (keyword-only, so members may add required fields such as ``rank``) and checks it."""

    triv: str | Callable = dataclasses.field(default="expm", kw_only=True)

    def __post_init__(self):
        check_triv(type(self).__name__, self.triv)


# ------------------------------------------------------------------------------------------------
# Skew matrices from raw columns, points and base moves
# ------------------------------------------------------------------------------------------------
def skew_from_cols(cols: Array, n: int, *, horizontal: bool = False) -> Array:
    """The ``n x n`` skew matrix ``[[S, -Bᵀ], [B, 0]]`` read from the strict lower part of the
    ``(..., n, r)`` array ``cols``: ``S`` (r x r) from its top block, ``B`` from rows ``r:``.

    ``horizontal=True`` drops ``S`` (the Grassmannian's horizontal space).
    """
    r = cols.shape[-1]
    low = jnp.tril(cols, -1)
    if horizontal:
        rows = jnp.arange(n)[:, None] >= r
        low = jnp.where(rows, low, jnp.zeros_like(low))
    if r < n:
        pad = jnp.zeros(cols.shape[:-1] + (n - r,), cols.dtype)
        low = jnp.concatenate([low, pad], axis=-1)
    return low - mT(low)


@functools.partial(jax.jit, static_argnames=("triv", "horizontal"))
def stiefel_point(base: Array, cols: Array, triv, *, horizontal: bool = False) -> Array:
    """``(base @ triv(A))[..., :r]`` for ``A = skew_from_cols(cols)``: a point of V(n, r)."""
    n, r = cols.shape[-2:]
    q = apply_triv(triv, skew_from_cols(cols, n, horizontal=horizontal))
    return base @ q[..., :, :r]


@functools.partial(jax.jit, static_argnames=("triv", "horizontal"))
def moved_base(base: Array, cols: Array, triv, *, horizontal: bool = False) -> Array:
    """The new base ``base @ triv(A)`` (re-orthogonalised): raw zero there gives the same point."""
    n = cols.shape[-2]
    q = apply_triv(triv, skew_from_cols(cols, n, horizontal=horizontal))
    return newton_schulz(base @ q)


# ------------------------------------------------------------------------------------------------
# Sampling options
# ------------------------------------------------------------------------------------------------
SAMPLE_INITS = ("uniform", "torus")


def check_init(p, init: str) -> None:
    if init not in SAMPLE_INITS:
        raise ParametrizationError(
            f"{describe(p)}.sample: unknown `init`={init!r}; expected one of "
            f"{', '.join(repr(i) for i in SAMPLE_INITS)}."
        )
