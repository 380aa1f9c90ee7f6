"""Matrices through a singular value decomposition (geotorch's ``LowRank``, ``FixedRank``,
``GLp``, ``SL``, ``AlmostOrthogonal``).

Every entry computes ``X = U diag(σ(s)) Vᵀ`` with ``U`` (``N x r``) and ``V`` (``K x r``) with
orthonormal columns, each trivialized at a base point kept as state (as in
:mod:`parametrax.catalog.stiefel`), and ``σ`` a map of the singular value parameters ``s``
specific to each entry. Shapes ``(..., n, k)``; a wide matrix (``n < k``) is handled
transposed, so below ``N = max(n, k)``, ``K = min(n, k)`` and the raw array means its
transpose when wide.

Raw layout: ONE array of the value's shape, packed as geotorch does. On the tall ``N x K`` raw
``X``: ``s = diag(X)[:r]``; ``U`` is read from the strict lower triangle of ``X[:, :r]``;
``V`` from the strict upper triangle of ``X[:r, :]`` (transposed); the rest is unused (zero
gradient). For square full-rank entries (``Invertible``, ``SL``) this uses every entry once,
``n²`` parameters for the ``n²``-dimensional GL(n).

State: ``{"base_u": (..., N, r), "base_v": (..., K, r)}``, the base points kept as their
frames (orthonormal columns; completed to orthogonal matrices by Householder, never stored
``N x N``: issue 12, :mod:`parametrax._numerics.tall`; a whole ``N x N`` / ``K x K`` base from
before is still read and kept whole).
``apply_inverse(variables, X)`` takes the SVD of ``X`` (the ``r`` largest singular triples),
moves the bases to the singular vectors and stores ``σ^{-1}`` of the singular values on the raw
diagonal: exact on the manifold, and the nearest-point projection (truncated SVD, clipped
singular values) elsewhere. ``update_base`` moves both bases to the current factors and zeroes
their raw parts, keeping ``s`` and the value.

Open sets (issue 16): for the entries whose singular values must be positive, a singular value
too small to count (below ``max(default_atol(dtype) * max(1, σ_max), tiny)``, the tolerance
``in_manifold`` uses) is raised strictly inside, to ``interior_margin(dtype) * max(1, σ_max)``
(:func:`parametrax._numerics.scalar.raise_small`; ``1e-2`` in float32, ``0.2`` in half
precision), where its raw value ``f^{-1}`` stays where gradients reach it. The forward maps
clamp ``f(s)`` to ``>= tiny`` (softplus / exp underflow to 0), and the fixed-rank, invertible
and special-linear ones keep ``σ_min >= rank_floor(dtype) * max(1, σ_max)`` (``1e-3`` in float32),
so every raw value maps onto the set numerically, not only in exact arithmetic.

Dtypes: bfloat16 / float16 values are computed in float32 (XLA has no half-precision SVD on
CPU) and the results cast back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp

from parametrax._core import Variables
from parametrax._errors import ParametrizationError, describe
from parametrax._numerics import (
    check_positive_int,
    complete,
    default_atol,
    draw_init,
    eye_frame,
    flip_last_col,
    haar,
    haar_special,
    mT,
    require_matrix,
    require_rank,
    require_square,
    wide_dtype,
    widen,
)
from parametrax._numerics import scalar as S
from parametrax.catalog import _trivialization as T

__all__ = ["LowRank", "FixedRank", "Invertible", "SL", "AlmostOrthogonal"]

Array = jax.Array


def _frame_like(old: Array | None, y: Array) -> Array:
    """The new base frame ``y``, completed to ``n x n`` where the state holds a whole base (the
    layout before issue 12), so that the state keeps its shapes."""
    n, r = y.shape[-2:]
    return complete(y) if old is not None and r < n and old.shape[-1] == n else y


def _masks(n: int, k: int, r: int) -> tuple[Array, Array]:
    rows = jnp.arange(n)[:, None]
    cols = jnp.arange(k)[None, :]
    lower = (rows > cols) & (cols < r)
    upper = (cols > rows) & (rows < r)
    return lower, upper


class _SVDFamily(T.Trivialized):
    """Shared implementation of ``U diag(σ(s)) Vᵀ``; subclasses define the σ map."""

    _square_only = False
    _f_names: ClassVar[tuple[str, ...]] = ("softplus", "exp")

    def __post_init__(self):
        super().__post_init__()
        owner = type(self).__name__
        fields = self.__dataclass_fields__
        # the family's subclasses declare `rank` and `f` (or not); read them by name
        if "rank" in fields:
            check_positive_int(owner, "rank", getattr(self, "rank"))  # noqa: B009
        if "f" in fields:
            S.check_scalar_map(owner, "f", getattr(self, "f"), self._f_names)  # noqa: B009

    @property
    def has_right_inverse(self) -> bool:
        """False when ``f`` was given as a callable without its inverse."""
        return "f" not in self.__dataclass_fields__ or S.has_inverse(getattr(self, "f"))  # noqa: B009

    # --- subclass hooks -------------------------------------------------------------------------
    def _sigma(self, s: Array, dtype) -> Array:
        """Singular values from their raw parameters (``dtype``: the value's, for its
        tolerances; ``s`` may be wider)."""
        raise NotImplementedError

    def _sigma_inverse(self, sigma: Array, top: Array, dtype) -> Array:
        """Raw parameters from the kept singular values ``sigma`` (``top``: the largest singular
        value of the value, shape ``(..., 1)``), projected onto the entry's set."""
        raise NotImplementedError

    def _fix_det(self) -> bool:
        return False

    def _sv_ok(self, sv: Array, tol: Array, r: int, x: Array) -> Array:
        raise NotImplementedError

    def _sample_sigma(self, key: Array, shape: tuple, dtype) -> Array:
        return self._sigma(jax.random.normal(key, shape, dtype), dtype)

    # --- shapes ---------------------------------------------------------------------------------
    def _rank(self, x: Array | jax.ShapeDtypeStruct) -> int:
        if self._square_only:
            require_square(self, x, real=True)
            return x.shape[-1]
        rank = getattr(self, "rank", None)
        if rank is None:
            require_matrix(self, x, real=True)
            return min(x.shape[-2:])
        require_rank(self, x, rank, real=True)
        return rank

    @staticmethod
    def _wide(x: Array) -> bool:
        return x.shape[-2] < x.shape[-1]

    def _tall(self, x: Array) -> Array:
        return mT(x) if self._wide(x) else x

    def _untall(self, y: Array, like: Array) -> Array:
        return mT(y) if self._wide(like) else y

    # --- variables protocol ---------------------------------------------------------------------
    def init_variables(self, key: Array | None, value: Array) -> Variables:
        del key
        r = self._rank(value)
        big, small = max(value.shape[-2:]), min(value.shape[-2:])
        batch = value.shape[:-2]
        return {
            "params": {},
            "state": {
                "base_u": eye_frame(batch, big, r, value.dtype),
                "base_v": eye_frame(batch, small, r, value.dtype),
            },
        }

    def _compute(self, state: dict, raw: Array) -> Array:
        r = self._rank(raw)
        dtype = raw.dtype
        x = widen(self._tall(raw))
        big, small = x.shape[-2:]
        bu, bv = state["base_u"], state["base_v"]
        T.require_base(self, bu, big, r, "the base point `state['base_u']`")
        T.require_base(self, bv, small, r, "the base point `state['base_v']`")
        bu, bv = widen(bu), widen(bv)
        u = T.stiefel_point(bu, x[..., :, :r], self.triv)
        v = T.stiefel_point(bv, mT(x[..., :r, :]), self.triv)
        sigma = self._sigma(jnp.diagonal(x, axis1=-2, axis2=-1)[..., :r], dtype)
        return self._untall(((u * sigma[..., None, :]) @ mT(v)).astype(dtype), raw)

    def apply(self, variables: Variables, x: Array, *, update_state: bool = False):
        del update_state
        return self._compute(variables["state"], x), variables["state"]

    def forward(self, x: Array) -> Array:
        """The map at the canonical bases (identities), without state."""
        state = self.init_variables(None, x)["state"]
        return self._compute(state, x)

    def apply_inverse(self, variables: Variables, value: Array, *, key=None):
        del key
        r = self._rank(value)
        y = widen(self._tall(value))
        u, sv, vh = jnp.linalg.svd(y, full_matrices=False)
        if self._fix_det():
            neg = jnp.linalg.det(u) * jnp.linalg.det(vh) < 0
            u = flip_last_col(u, neg)
        u_r, v_r, sv_r = u[..., :, :r], mT(vh)[..., :, :r], sv[..., :r]
        s = self._sigma_inverse(sv_r, sv[..., :1], value.dtype).astype(value.dtype)
        idx = jnp.arange(r)
        raw = jnp.zeros(y.shape, value.dtype).at[..., idx, idx].set(s)
        old = variables["state"]
        state = {
            **old,
            "base_u": _frame_like(old.get("base_u"), u_r).astype(value.dtype),
            "base_v": _frame_like(old.get("base_v"), v_r).astype(value.dtype),
        }
        return self._untall(raw, value), state

    def right_inverse(self, value: Array) -> Array:
        raise NotImplementedError(
            f"{describe(self)} keeps the singular vectors' base points as state: assign "
            "through `apply_inverse(variables, value, key=...)` (registration and `assign` do)."
        )

    def update_base(self, variables: Variables, raw: Array):
        """Moves both bases to the current factors and zeroes their raw parts; ``s`` and the
        value are unchanged."""
        r = self._rank(raw)
        x = self._tall(raw)
        state = variables["state"]
        bu = T.moved_base(state["base_u"], x[..., :, :r], self.triv)
        bv = T.moved_base(state["base_v"], mT(x[..., :r, :]), self.triv)
        n, k = x.shape[-2:]
        lower, upper = _masks(n, k, r)
        x = jnp.where(lower | upper, jnp.zeros_like(x), x)
        return self._untall(x, raw), {**state, "base_u": bu, "base_v": bv}

    # --- manifold utilities ---------------------------------------------------------------------
    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        r = self._rank(x)
        atol = default_atol(x.dtype) if atol is None else atol
        x = widen(x)
        sv = jnp.linalg.svd(x, compute_uv=False)
        tol = atol * jnp.maximum(1.0, sv[..., :1])
        return jnp.all(self._sv_ok(sv, tol, r, x))

    def sample(
        self,
        key: Array,
        shape,
        dtype=jnp.float32,
        *,
        init: Callable | None = None,
        eps: float | None = None,
        factorized: bool = False,
    ):
        """A random point of the set, of shape ``shape`` (geotorch's ``sample(init_, eps,
        factorized)``).

        * ``init=None`` (default): ``U diag(σ(z)) Vᵀ`` with ``U``, ``V`` Haar (det +1 for
          square full-rank entries) and ``z`` standard normal.
        * ``init``: a JAX initializer ``init(key, shape, dtype)`` (e.g.
          ``jax.nn.initializers.glorot_normal()``, geotorch's default ``xavier_normal_``) draws
          ``X`` of ``shape``, which is projected onto the set by its SVD: the ``rank`` largest
          singular triples, the singular values moved onto the entry's set (FixedRank /
          Invertible: raised to the forward's floor ``rank_floor(dtype) * max(1, σ_max)``;
          Invertible / SL: the sign of the determinant fixed on the smallest singular vector;
          SL: divided by their geometric mean; AlmostOrthogonal: clipped to ``[1 - lam,
          1 + lam]``). So the singular values of the sample are those of the draw where the
          set allows, and ``key`` goes to ``init`` unchanged (``init(key, shape, dtype)`` is the
          draw).
        * ``eps`` (FixedRank, Invertible, SL only; geotorch's): a lower bound on the singular
          values, applied on top of the entry's own floor (SL: to the drawn ones, before the
          normalisation to ``det = 1``, as geotorch). ``LowRank`` and ``AlmostOrthogonal`` have
          no floor to set and refuse it.
        * ``factorized=True`` returns ``(U, S, V)`` with ``U`` ``(..., n, r)``, ``S``
          ``(..., r)`` (non-negative), ``V`` ``(..., k, r)`` and the sample ``U diag(S) Vᵀ``, in
          the orientation of ``shape``.
        """
        shape = tuple(shape)
        r = self._rank(jax.ShapeDtypeStruct(shape, dtype))
        big, small = max(shape[-2:]), min(shape[-2:])
        batch = shape[:-2]
        wide = wide_dtype(dtype)
        if eps is not None and not self._sample_has_floor():
            raise ParametrizationError(
                f"`{type(self).__name__}.sample`: `eps` (a floor on the singular values) applies "
                f"to FixedRank, Invertible and SL; {type(self).__name__} has no floor to set "
                f"(got eps={eps!r})."
            )
        if init is None:
            ku, kv, ks = jax.random.split(key, 3)
            if self._fix_det():
                u, v = haar_special(ku, batch, big, wide), haar_special(kv, batch, small, wide)
            else:
                u, v = haar(ku, batch, big, r, wide), haar(kv, batch, small, r, wide)
            sigma = widen(self._sample_sigma(ks, batch + (r,), dtype))
            v = v * jnp.where(sigma < 0, -1.0, 1.0).astype(wide)[..., None, :]  # S >= 0
            sigma = jnp.abs(sigma)
        else:
            x = widen(draw_init(self, init, key, shape, dtype))
            x = mT(x) if shape[-2] < shape[-1] else x
            u, sigma, vh = jnp.linalg.svd(x, full_matrices=False)
            if self._fix_det():  # square: u, vh are n x n
                u = flip_last_col(u, jnp.linalg.det(u) * jnp.linalg.det(vh) < 0)
            u, sigma, v = u[..., :, :r], sigma[..., :r], mT(vh)[..., :, :r]
        sigma = self._sample_project(sigma, dtype, eps)
        if factorized:
            u, sigma, v = u.astype(dtype), sigma.astype(dtype), v.astype(dtype)
            return (v, sigma, u) if shape[-2] < shape[-1] else (u, sigma, v)
        x = ((u * sigma[..., None, :]) @ mT(v)).astype(dtype)
        return mT(x) if shape[-2] < shape[-1] else x

    def _sample_has_floor(self) -> bool:
        return isinstance(self, (_PositiveSigma, SL))

    def _sample_project(self, sigma: Array, dtype, eps: float | None) -> Array:
        """The sampled singular values (``>= 0``, last axis) moved onto the entry's set."""
        if isinstance(self, _PositiveSigma):
            ratio = max(self._floor(dtype), self._keep(dtype))
            top = jnp.max(sigma, axis=-1, keepdims=True)
            low = jnp.maximum(ratio * jnp.maximum(1.0, top), 0.0 if eps is None else eps)
            return jnp.maximum(sigma, low.astype(sigma.dtype))
        if isinstance(self, SL):
            tiny = jnp.finfo(sigma.dtype).tiny
            l = jnp.log(jnp.maximum(sigma, tiny if eps is None else max(float(eps), float(tiny))))
            l = jnp.maximum(l, jnp.max(l, axis=-1, keepdims=True) + jnp.log(S.rank_floor(dtype)))
            return jnp.exp(l - jnp.mean(l, axis=-1, keepdims=True))
        if isinstance(self, AlmostOrthogonal):
            return jnp.clip(sigma, 1.0 - self.lam, 1.0 + self.lam)
        return sigma


class LowRank(_SVDFamily):
    r"""Matrices of rank at most ``rank``: ``X = U diag(s) Vᵀ`` (any real ``s``).

    Shapes ``(..., n, k)``, ``rank <= min(n, k)``. ``apply_inverse`` is the truncated SVD (the
    nearest matrix of rank ``<= rank``, Eckart–Young). Raw layout and state: module docstring.
    geotorch's ``LowRank``.

    >>> import jax, jax.numpy as jnp
    >>> from parametrax.catalog.lowrank import LowRank
    >>> X = LowRank(rank=2).forward(jax.random.normal(jax.random.key(0), (5, 4)))
    >>> int(jnp.linalg.matrix_rank(X))
    2
    """

    rank: int

    def _sigma(self, s, dtype):
        return s

    def _sigma_inverse(self, sigma, top, dtype):
        return sigma

    def _sv_ok(self, sv, tol, r, x):
        return jnp.all(sv[..., r:] <= tol, axis=-1)


class _PositiveSigma:
    """σ = f(s) for a positive ``f`` (the ``f`` field): FixedRank's and Invertible's hooks.
    ``_floor(dtype)``: the smallest ratio σ / max(1, σ_max) the forward keeps (0: only ``tiny``);
    ``_keep(dtype)``: the ratio below which ``apply_inverse`` raises a singular value: the rank
    tolerance ``default_atol`` (a singular value between it and the forward's floor is kept,
    and the forward moves it up to the floor: a move of at most ``rank_floor * max(1, σ_max)``,
    continuous in the value)."""

    def _floor(self, dtype) -> float:
        return 0.0

    def _keep(self, dtype) -> float:
        return default_atol(dtype)

    def _sigma(self, s, dtype):
        sigma = S.positive_image(S.resolve_scalar_map(getattr(self, "f")).f(s))  # noqa: B009
        ratio = self._floor(dtype)
        return S.floor_ratio(sigma, ratio) if ratio else sigma

    def _sigma_inverse(self, sigma, top, dtype):
        inv = S.inverse_or_raise(type(self).__name__, S.resolve_scalar_map(getattr(self, "f")))  # noqa: B009
        return inv(S.raise_small(sigma, top, self._keep(dtype), dtype))


class FixedRank(_PositiveSigma, _SVDFamily):
    r"""Matrices of rank exactly ``rank``: ``X = U diag(f(s)) Vᵀ`` with ``f > 0``.

    Shapes ``(..., n, k)``, ``rank <= min(n, k)``. ``f``: ``"softplus"`` (default), ``"exp"``,
    a callable or an ``(f, f_inverse)`` pair. geotorch's ``FixedRank``.

    The forward map keeps ``σ_i >= rank_floor(dtype) * max(1, σ_max)`` (``1e-3`` in float32, ``0.1``
    in half precision: ten times ``in_manifold``'s rank tolerance), so every raw value maps onto
    a matrix of numerical rank exactly ``rank``; the image is the rank-``rank`` matrices whose
    kept singular values are within that ratio of the largest. ``apply_inverse`` is the
    truncated SVD; kept singular values below the rank tolerance ``default_atol(dtype) *
    max(1, σ_max)`` (e.g. the missing ones of a value of lower rank) are raised to
    ``interior_margin(dtype) * max(1, σ_max)`` (``1e-2`` in float32, ``0.2`` in half
    precision); those between the tolerance and the floor are kept and the forward raises
    them to the floor.
    """

    rank: int
    f: str | Callable | tuple = "softplus"

    def _floor(self, dtype):
        return S.rank_floor(dtype)

    def _sv_ok(self, sv, tol, r, x):
        return jnp.all(sv[..., r:] <= tol, axis=-1) & (sv[..., r - 1] > tol[..., 0])


class Invertible(_PositiveSigma, _SVDFamily):
    r"""Square matrices with positive determinant, ``GL⁺(n)``: ``X = U diag(f(s)) Vᵀ`` with
    ``U, V`` orthogonal of constant ``det U · det V = 1`` and ``f > 0``.

    Shapes ``(..., n, n)``. ``f``: ``"softplus"`` (default), ``"exp"``, a callable or an
    ``(f, f_inverse)`` pair. The forward keeps ``σ_i >= rank_floor(dtype) * max(1, σ_max)``
    (``1e-3`` in float32, ``0.1`` in half precision) as :class:`FixedRank` does: with only
    ``f(s) >= tiny``, an optimizer that drives one raw value far negative makes the matrix
    numerically singular and the sign of its determinant a matter of rounding. ``apply_inverse`` is
    exact on GL⁺ (singular values above ``default_atol(dtype) * max(1, σ_max)``); for ``det X <= 0`` it
    negates the singular vector of the smallest singular value, and it raises singular values
    below ``default_atol * max(1, σ_max)`` (a numerically singular value) to ``interior_margin(dtype) *
    max(1, σ_max)``. geotorch's ``GLp``.
    """

    _square_only = True
    f: str | Callable | tuple = "softplus"

    def _floor(self, dtype):
        return S.rank_floor(dtype)

    def _fix_det(self):
        return True

    def _sv_ok(self, sv, tol, r, x):
        sign, _ = jnp.linalg.slogdet(x)
        return sign > 0


class SL(_SVDFamily):
    r"""The special linear group ``SL(n)``: ``det X = 1``. ``X = U diag(σ) Vᵀ`` with
    ``σ = f(s) / (∏ f(s))^{1/n}`` and ``det U · det V = 1``.

    Shapes ``(..., n, n)``. ``f``: ``"softplus"`` (default), ``"exp"`` (then
    ``σ = exp(s - mean(s))``), a callable or an ``(f, f_inverse)`` pair. geotorch's ``SL``.

    The normalisation is computed in log space, ``σ = exp(l - mean(l))`` with ``l = log f(s)``
    evaluated without underflow (``log softplus(s) = s`` below -15), so ``det = 1`` holds
    exactly in the singular values even where ``f(s)`` itself underflows to 0 (where the
    direct ``f(s) / (∏ f(s))^{1/n}`` is ``0 * inf = NaN``). ``l`` is first raised to
    ``max(l) + log(rank_floor(dtype))`` (``σ_min >= 1e-3 σ_max`` in float32; ``σ_max >= 1`` on SL): a matrix with
    ``det = 1`` that rounding can tell from a singular one, and ``exp`` that cannot overflow.
    ``apply_inverse`` is exact on SL(n) within that ratio; elsewhere it raises the singular
    values below ``default_atol(dtype) * max(1, σ_max)`` (numerically zero) to
    ``interior_margin(dtype) * max(1, σ_max)``, divides
    them by their geometric mean (in log space) and fixes the sign as :class:`Invertible` does.
    """

    _square_only = True
    f: str | Callable | tuple = "softplus"

    def _fix_det(self):
        return True

    def _sigma(self, s, dtype):
        l = S.log_positive(S.resolve_scalar_map(self.f), s)
        l = jnp.maximum(l, jnp.max(l, axis=-1, keepdims=True) + jnp.log(S.rank_floor(dtype)))
        return jnp.exp(l - jnp.mean(l, axis=-1, keepdims=True))

    def _sigma_inverse(self, sigma, top, dtype):
        m = S.resolve_scalar_map(self.f)
        inv = S.inverse_or_raise(type(self).__name__, m)
        l = jnp.log(S.raise_small(sigma, top, default_atol(dtype), dtype))
        return inv(jnp.exp(l - jnp.mean(l, axis=-1, keepdims=True)))

    def _sv_ok(self, sv, tol, r, x):
        sign, logdet = jnp.linalg.slogdet(x)
        n = x.shape[-1]
        return (sign > 0) & (jnp.abs(jnp.expm1(logdet)) <= n * tol[..., 0])


class AlmostOrthogonal(_SVDFamily):
    r"""Matrices whose singular values lie in ``[1 - lam, 1 + lam]``:
    ``X = U diag(1 + lam f(s)) Vᵀ`` with ``f`` onto ``[-1, 1]`` (geotorch's
    ``AlmostOrthogonal``).

    Shapes ``(..., n, k)`` (all ``min(n, k)`` singular values are constrained). ``lam`` in
    ``(0, 1]``; ``f``: ``"sin"`` (default), ``"tanh"``, ``"scaled_sigmoid"`` (``2σ(x) - 1``,
    computed as ``tanh(x / 2)``), a callable or an ``(f, f_inverse)`` pair. ``apply_inverse``
    is exact strictly inside the band. A singular value on or beyond an edge of the band
    (``|σ - 1| >= lam``) is moved inside to ``1 ± lam (1 - m)``, ``m = interior_margin(dtype)``
    (``1e-2``; ``0.2`` in half precision): at an edge itself ``sin'`` (``tanh'``) is 0 (or the
    raw value infinite), so a raw value there would never move again; at ``1 - m`` the raw
    value is ``asin(0.99) = 1.43`` (``atanh(0.99) = 2.6``) where the derivative is ``~0.14``
    (``~0.02``) and gradients reach it.
    """

    _f_names: ClassVar[tuple[str, ...]] = ("sin", "tanh", "scaled_sigmoid")
    lam: float
    f: str | Callable | tuple = "sin"

    def __post_init__(self):
        super().__post_init__()
        lam = self.lam
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0 < lam <= 1:
            raise ParametrizationError(
                f"`AlmostOrthogonal`: `lam` must be a float in (0, 1]; got {lam!r}. (For "
                "lam = 0, exactly orthogonal matrices, use `Stiefel` or `SO`.)"
            )

    def _sigma(self, s, dtype):
        return 1.0 + self.lam * S.resolve_scalar_map(self.f).f(s)

    def _sigma_inverse(self, sigma, top, dtype):
        m = S.resolve_scalar_map(self.f)
        inv = S.inverse_or_raise(type(self).__name__, m)
        t = (sigma - 1.0) / self.lam
        edge = 1.0 - S.interior_margin(dtype)
        t = jnp.where(jnp.abs(t) < 1.0, t, jnp.where(t < 0, -edge, edge))
        return inv(S.clip_to_image(m, t, float(jnp.finfo(sigma.dtype).eps)))

    def _sv_ok(self, sv, tol, r, x):
        return jnp.all(jnp.abs(sv - 1.0) <= self.lam + tol, axis=-1)

    _DISTRIBUTIONS: ClassVar[tuple[str, ...]] = ("uniform", "torus")

    def sample(
        self,
        key: Array,
        shape,
        dtype=jnp.float32,
        *,
        distribution: str | None = None,
        init: Callable | None = None,
        eps: float | None = None,
        factorized: bool = False,
    ):
        """A random point of shape ``shape``.

        * ``distribution=None`` (default): ``U diag(1 + lam f(z)) Vᵀ`` with ``U``, ``V`` Haar and
          ``z`` standard normal; with ``init`` (a JAX initializer ``init(key, shape, dtype)``)
          the draw's singular values clipped to ``[1 - lam, 1 + lam]`` (see
          :meth:`_SVDFamily.sample`, which also describes ``factorized``).
        * ``distribution="uniform"``: an orthogonal matrix (all singular values 1), Haar on the
          Stiefel manifold / O(n) (geotorch's ``AlmostOrthogonal.sample()`` default, which
          samples SO(n); ``det = -1`` is on this set too).
        * ``distribution="torus"``: the torus initialisation for recurrent kernels, as
          ``SO.sample(init="torus")``: block-diagonal 2x2 rotations by angles ``U(-π, π)`` (the
          first ``K`` columns when non-square); geotorch draws the same with ``triv="expm"``.
        """
        if distribution is None:
            # `eps` is refused there as for every entry without a floor of its own
            return super().sample(key, shape, dtype, init=init, eps=eps, factorized=factorized)
        if distribution not in self._DISTRIBUTIONS:
            raise ParametrizationError(
                "`AlmostOrthogonal.sample`: `distribution` has to be one of None, "
                + ", ".join(f'"{d}"' for d in self._DISTRIBUTIONS)
                + f"; got {distribution!r}."
            )
        if init is not None or eps is not None or factorized:
            raise ParametrizationError(
                f"`AlmostOrthogonal.sample`: `init`, `eps` and `factorized` apply to "
                f"distribution=None; "
                f'distribution="{distribution}" samples an orthogonal matrix.'
            )
        from parametrax._numerics import torus

        shape = tuple(shape)
        self._rank(jax.ShapeDtypeStruct(shape, dtype))
        big, small = max(shape[-2:]), min(shape[-2:])
        if distribution == "torus":
            q = torus(key, shape[:-2], big, dtype, small)  # O(big small), not big x big
        else:
            q = haar(key, shape[:-2], big, small, dtype)
        return mT(q) if shape[-2] < shape[-1] else q
