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

from parametrax._core import Parametrization
from parametrax._errors import ParametrizationError, ParametrizationTypeError, describe
from parametrax._numerics import (
    apply_frame,
    cayley_half,
    complete,
    expm,
    newton_schulz,
    require_shape,
    skew_blocks,
    skew_dense,
    skew_map_columns,
)

Array = jax.Array


# ------------------------------------------------------------------------------------------------
# Maps Skew(n) -> SO(n)
# ------------------------------------------------------------------------------------------------
TRIVIALIZATIONS: dict[str, Callable[[Array], Array]] = {"expm": expm, "cayley": cayley_half}


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
# Points and base moves on tall frames (issue 12: O(n r^2), never n x n for the named maps)
# ------------------------------------------------------------------------------------------------
def triv_columns(triv, cols: Array, *, horizontal: bool = False) -> Array:
    """``triv(A)[..., :, :r]`` for the skew ``A = [[S, -Cᵀ], [C, 0]]`` read from the
    ``(..., n, r)`` raw columns (``S`` from the strict lower part of the top block, dropped
    when ``horizontal``; ``C`` the bottom rows). The named maps (``"expm"``, ``"cayley"``) run
    on ``2r x 2r`` (:func:`parametrax._numerics.skew_map_columns`: the exact map, in
    O(n r²)); a callable ``triv`` is a map of one ``n x n`` skew matrix, so it gets the dense
    ``A`` (O(n³), as the callable's contract requires)."""
    s, c = skew_blocks(cols, horizontal=horizontal)
    if isinstance(triv, str):
        return skew_map_columns(s, c, TRIVIALIZATIONS[triv])
    return apply_triv(triv, skew_dense(s, c))[..., :, : cols.shape[-1]]


def require_base(p, base: Array, n: int, r: int, what: str) -> None:
    """A base point is kept as its ``(..., n, r)`` frame; a whole ``(..., n, n)`` base (the
    layout before issue 12) is still read."""
    if tuple(base.shape[-2:]) != (n, n):
        require_shape(p, base.shape[-2:], (n, r), what)


@functools.partial(jax.jit, static_argnames=("triv", "horizontal"))
def stiefel_point(base: Array, cols: Array, triv, *, horizontal: bool = False) -> Array:
    """``B triv(A)[..., :r]``, a point of V(n, r), for the base ``B`` kept as its ``(..., n,
    r)`` frame (completed by Householder: :func:`parametrax._numerics.apply_frame`) or given
    whole, ``(..., n, n)``."""
    return apply_frame(base, triv_columns(triv, cols, horizontal=horizontal))


@functools.partial(jax.jit, static_argnames=("triv", "horizontal"))
def moved_base(base: Array, cols: Array, triv, *, horizontal: bool = False) -> Array:
    """The new base: the current point (one Newton–Schulz step removes rounding drift), a frame
    in the layout of ``base``: raw zero there gives the same point. A whole ``n x n`` base is
    completed again (its Householder completion), so the state keeps its shapes."""
    n, r = cols.shape[-2:]
    new = newton_schulz(stiefel_point(base, cols, triv, horizontal=horizontal))
    return complete(new) if r < n and base.shape[-1] == n else new


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
