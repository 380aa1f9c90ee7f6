"""Symmetric positive (semi)definite matrices through an eigendecomposition (geotorch's ``PSD``,
``PSSD``, ``PSSDLowRank``, ``PSSDFixedRank``).

Every entry computes ``A = Q diag(f(λ)) Qᵀ`` with ``Q`` an ``n x r`` matrix with orthonormal
columns (trivialized at a base point kept as state, as in :mod:`parametrax.catalog.stiefel`) and
``λ`` the eigenvalue parameters. The raw array is ONE ``(..., n, n)`` array, packed as geotorch
does: ``λ`` is its diagonal ``raw[..., i, i]`` for ``i < r``; ``Q`` is read from the strict lower
triangle of its first ``r`` columns; the rest (upper triangle, and the trailing diagonal when
``r < n``) is unused and gets zero gradient. So the raw value has the constrained value's shape
(optimizers, sharding annotations and ``leave_parametrized=False`` work unchanged).

State: ``{"base": (..., n, r)}``, the base point kept as its frame (orthonormal columns,
completed by Householder, never stored ``n x n``: :mod:`parametrax._numerics.tall`; a whole
``(..., n, n)`` base from before issue 12 is still read). ``apply_inverse(variables, A)``
symmetrises ``A``, takes its ``r`` largest eigenpairs, moves the base to their eigenvectors and
stores ``f^{-1}`` of the eigenvalues on the diagonal. Eigenvalues outside the image of ``f`` are
moved into it first: that is the projection used when registering a value that is not on the
manifold, e.g. a random kernel. For ``|λ|`` (PSSD, PSSDLowRank: a closed set) negative
eigenvalues are clipped to 0. For softplus / exp (PositiveDefinite, PSSDFixedRank: open sets)
an eigenvalue too small to count (below ``max(default_atol(dtype) * max(1, λ_max), tiny)``,
the tolerance ``in_manifold`` uses) is raised
strictly inside, to ``interior_margin(dtype) * max(1, λ_max)`` (``1e-2`` in float32, ``0.2`` in
half precision; :func:`parametrax._numerics.scalar.raise_small`), whose raw value ``f^{-1}``
(``>= -4.6``) is where gradients reach it. The forward maps clamp ``f(λ)`` to ``>= tiny``
(softplus / exp underflow to 0 below about -87 in float32), and PSSDFixedRank's keeps
``λ_i >= rank_floor(dtype) * max(1, λ_max)`` (``1e-3`` in float32), so any raw value maps onto the set.
``update_base`` moves the base to the current eigenvectors and zeroes the ``Q`` part of the raw
array, keeping the value.

Dtypes: bfloat16 / float16 values are computed in float32 (XLA has no half-precision ``eigh``
on CPU) and the results cast back.

Scalar maps ``f``: a name from the class's closed table, a hashable callable (then values cannot
be assigned: no inverse), or a pair ``(f, f_inverse)`` of hashable callables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp

from parametrax._core import Variables
from parametrax._errors import describe
from parametrax._numerics import (
    check_positive_int,
    complete,
    default_atol,
    draw_init,
    eye_frame,
    haar,
    mT,
    require_rank,
    require_square,
    wide_dtype,
    widen,
)
from parametrax._numerics import scalar as S
from parametrax.catalog import _trivialization as T

__all__ = ["PositiveDefinite", "PSD", "PSSD", "PSSDLowRank", "PSSDFixedRank"]

Array = jax.Array


def _sym(a: Array) -> Array:
    return 0.5 * (a + mT(a))


def _lower_cols_mask(n: int, k: int, r: int) -> Array:
    rows = jnp.arange(n)[:, None]
    cols = jnp.arange(k)[None, :]
    return (rows > cols) & (cols < r)


def _set_diag(x: Array, vals: Array) -> Array:
    r = vals.shape[-1]
    idx = jnp.arange(r)
    return x.at[..., idx, idx].set(vals)


class _SymEigen(T.Trivialized):
    """Shared implementation: ``Q diag(f(λ)) Qᵀ`` with a trivialized ``Q``."""

    _f_names: ClassVar[tuple[str, ...]] = ("softplus", "exp")

    # subclasses: _rank(n), _fmap() and in-manifold extras
    def __post_init__(self):
        super().__post_init__()
        owner = type(self).__name__
        # the family's subclasses declare `rank` and `f` (or not); read them by name
        if "rank" in self.__dataclass_fields__:
            check_positive_int(owner, "rank", getattr(self, "rank"))  # noqa: B009
        if "f" in self.__dataclass_fields__:
            S.check_scalar_map(owner, "f", getattr(self, "f"), self._f_names)  # noqa: B009

    @property
    def has_right_inverse(self) -> bool:
        """False when ``f`` was given as a callable without its inverse."""
        return self._fmap().inv is not None

    def _fmap(self) -> S.ScalarMap:
        return S.resolve_scalar_map(getattr(self, "f", "abs"))

    def _floor(self, dtype) -> float:
        """The smallest ratio ``f(λ) / max(1, max f(λ))`` the forward keeps (0: only ``tiny``)."""
        return 0.0

    def _keep(self, dtype) -> float:
        """The ratio below which ``apply_inverse`` raises an eigenvalue (positive maps)."""
        return default_atol(dtype)

    def _eigs(self, lam: Array, dtype) -> Array:
        m = self._fmap()
        w = m.f(lam)
        if m.closed:  # |λ|: [0, inf) contains its end
            return w
        w = S.positive_image(w)
        ratio = self._floor(dtype)
        return S.floor_ratio(w, ratio) if ratio else w

    def _rank(self, x: Array | jax.ShapeDtypeStruct) -> int:
        rank = getattr(self, "rank", None)
        if rank is None:
            require_square(self, x, real=True)
            return x.shape[-1]
        require_rank(self, x, rank, square=True, real=True)
        return rank

    # --- variables protocol ---------------------------------------------------------------------
    def init_variables(self, key: Array, value: Array) -> Variables:
        del key
        r = self._rank(value)
        n = value.shape[-1]
        return {"params": {}, "state": {"base": eye_frame(value.shape[:-2], n, r, value.dtype)}}

    def _compute(self, base: Array, x: Array) -> Array:
        r = self._rank(x)
        n = x.shape[-1]
        dtype = x.dtype
        T.require_base(self, base, n, r, "the base point `state['base']`")
        x, base = widen(x), widen(base)
        q = T.stiefel_point(base, x[..., :, :r], self.triv)
        lam = jnp.diagonal(x, axis1=-2, axis2=-1)[..., :r]
        w = self._eigs(lam, dtype)
        return _sym((q * w[..., None, :]) @ mT(q)).astype(dtype)

    def apply(self, variables: Variables, x: Array, *, update_state: bool = False):
        del update_state
        return self._compute(variables["state"]["base"], x), variables["state"]

    def forward(self, x: Array) -> Array:
        """The map at the canonical base (the identity), without state."""
        self._rank(x)
        n = x.shape[-1]
        return self._compute(eye_frame(x.shape[:-2], n, self._rank(x), x.dtype), x)

    def apply_inverse(self, variables: Variables, value: Array, *, key=None):
        del key
        r = self._rank(value)
        n = value.shape[-1]
        m = self._fmap()
        inv = S.inverse_or_raise(type(self).__name__, m)
        w, v = jnp.linalg.eigh(_sym(widen(value)))
        w_r, v_r = w[..., n - r :], v[..., :, n - r :]
        if m.closed:
            w_r = S.clip_to_image(m, w_r, 0.0)
        else:
            top = jnp.max(w, axis=-1, keepdims=True)
            w_r = S.raise_small(w_r, top, self._keep(value.dtype), value.dtype)
        lam = inv(w_r)
        raw = _set_diag(jnp.zeros_like(value), lam.astype(value.dtype))
        old = variables["state"].get("base")
        if old is not None and r < n and old.shape[-1] == n:  # a whole base stays whole
            v_r = complete(v_r)
        return raw, {**variables["state"], "base": v_r.astype(value.dtype)}

    def right_inverse(self, value: Array) -> Array:
        raise NotImplementedError(
            f"{describe(self)} keeps the eigenvectors' base point as state: assign through "
            "`apply_inverse(variables, value, key=...)` (registration and `assign` do)."
        )

    def update_base(self, variables: Variables, x: Array):
        """Moves the base to the current eigenvectors and zeroes the Q part of ``x``."""
        r = self._rank(x)
        n = x.shape[-1]
        base = variables["state"]["base"]
        new = T.moved_base(base, x[..., :, :r], self.triv)
        raw = jnp.where(_lower_cols_mask(n, n, r), jnp.zeros_like(x), x)
        return raw, {**variables["state"], "base": new}

    # --- manifold utilities ---------------------------------------------------------------------
    def _eig_ok(self, w: Array, tol: Array, r: int) -> Array:
        raise NotImplementedError

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        r = self._rank(x)
        atol = default_atol(x.dtype) if atol is None else atol
        x = widen(x)
        w = jnp.linalg.eigvalsh(_sym(x))
        scale = jnp.maximum(1.0, jnp.max(jnp.abs(w), axis=-1, keepdims=True))
        tol = atol * scale
        sym_ok = jnp.max(jnp.abs(x - mT(x)), axis=(-2, -1)) <= tol[..., 0]
        return jnp.all(sym_ok & self._eig_ok(w, tol, r))

    def _sample_eigs(self, key: Array, shape: tuple, dtype) -> Array:
        wide = wide_dtype(dtype)
        return self._eigs(jax.random.normal(key, shape, wide), dtype)

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
        """A random point of the set, of shape ``shape`` (geotorch's ``sample(init_, eps)``).

        * ``init=None`` (default): ``Q diag(f(z)) Qᵀ`` with ``Q`` Haar (``n x r``) and ``z``
          standard normal.
        * ``init``: a JAX initializer ``init(key, shape, dtype)`` (e.g.
          ``jax.nn.initializers.glorot_normal()``, geotorch's default ``xavier_normal_``) draws
          ``W`` and the sample is ``W Wᵀ`` (a Wishart matrix for a Gaussian ``init``, as in
          geotorch) restricted to its ``r`` largest eigenpairs, with the eigenvalues moved onto
          the set (positive entries: raised to ``max(rank_floor, default_atol)(dtype) * max(1,
          λ_max)``, the floor the forward keeps). ``key`` goes to ``init`` unchanged.
        * ``eps`` (PositiveDefinite, PSSDFixedRank only; geotorch's): a lower bound on the kept
          eigenvalues, on top of that floor. PSSD and PSSDLowRank (eigenvalues may be 0) refuse
          it.
        * ``factorized=True`` returns ``(L, Q)`` (``eigh``'s order, as geotorch): eigenvalues
          ``(..., r)`` and orthonormal ``Q`` ``(..., n, r)`` with the sample ``Q diag(L) Qᵀ``.
        """
        shape = tuple(shape)
        r = self._rank(jax.ShapeDtypeStruct(shape, dtype))
        wide = wide_dtype(dtype)
        closed = self._fmap().closed
        if eps is not None and closed:
            from parametrax._errors import ParametrizationError

            raise ParametrizationError(
                f"`{type(self).__name__}.sample`: `eps` (a floor on the eigenvalues) applies to "
                f"PositiveDefinite and PSSDFixedRank; {type(self).__name__} allows zero "
                f"eigenvalues (got eps={eps!r})."
            )
        if init is None:
            kq, kw = jax.random.split(key)
            q = haar(kq, shape[:-2], shape[-1], r, wide)
            w = self._sample_eigs(kw, shape[:-2] + (r,), dtype).astype(wide)
        else:
            x = widen(draw_init(self, init, key, shape, dtype))
            w, q = jnp.linalg.eigh(x @ mT(x))
            n = shape[-1]
            w, q = w[..., n - r :], q[..., :, n - r :]
        if closed:
            w = jnp.maximum(w, 0.0)  # eigh's rounding
        else:
            ratio = max(self._floor(dtype), self._keep(dtype))
            top = jnp.max(w, axis=-1, keepdims=True)
            low = jnp.maximum(ratio * jnp.maximum(1.0, top), 0.0 if eps is None else eps)
            w = jnp.maximum(w, low.astype(w.dtype))
        if factorized:
            return w.astype(dtype), q.astype(dtype)
        return _sym((q * w[..., None, :]) @ mT(q)).astype(dtype)


class PositiveDefinite(_SymEigen):
    r"""Symmetric positive definite matrices: ``A = Q diag(f(λ)) Qᵀ`` with ``f > 0``.

    Shapes ``(..., n, n)``. The eigenvalues of ``A`` are exactly ``f`` of the raw eigenvalue
    parameters (the raw diagonal, at the canonical base). ``f`` is ``"softplus"`` (default) or
    ``"exp"`` (or a callable / ``(f, f_inverse)`` pair mapping onto ``(0, inf)``). Raw layout and
    state: module docstring. ``PSD`` is the same class under geotorch's name (geotorch's
    ``PSD`` is positive *definite*; for semidefinite use :class:`PSSD`).

    >>> import jax, jax.numpy as jnp
    >>> from parametrax.catalog.psd import PositiveDefinite
    >>> x = jnp.diag(jnp.array([-1.0, 0.0, 2.0]))
    >>> A = PositiveDefinite().forward(x)
    >>> bool(jnp.allclose(jnp.linalg.eigvalsh(A), jax.nn.softplus(jnp.array([-1.0, 0.0, 2.0]))))
    True
    """

    f: str | Callable | tuple = "softplus"

    def _eig_ok(self, w, tol, r):
        return jnp.min(w, axis=-1) > 0


PSD = PositiveDefinite


class PSSD(_SymEigen):
    r"""Symmetric positive semidefinite matrices: ``A = Q diag(|λ|) Qᵀ`` (geotorch's ``PSSD``).

    Shapes ``(..., n, n)``. ``apply_inverse`` clips negative eigenvalues to 0 (the nearest PSSD
    matrix in the Frobenius norm). Raw layout and state: module docstring.
    """

    _f_names: ClassVar[tuple[str, ...]] = ("abs",)

    def _eig_ok(self, w, tol, r):
        return jnp.min(w, axis=-1) >= -tol[..., 0]


class PSSDLowRank(_SymEigen):
    r"""Symmetric positive semidefinite matrices of rank at most ``rank``:
    ``A = Q diag(|λ|) Qᵀ`` with ``Q`` ``n x rank`` (geotorch's ``PSSDLowRank``).

    Shapes ``(..., n, n)`` with ``rank <= n``. ``apply_inverse`` keeps the ``rank`` largest
    eigenpairs, negative ones clipped to 0 (the nearest such matrix in the Frobenius norm).
    """

    _f_names: ClassVar[tuple[str, ...]] = ("abs",)
    rank: int

    def _eig_ok(self, w, tol, r):
        n = w.shape[-1]
        small = jnp.all(jnp.abs(w[..., : n - r]) <= tol, axis=-1) if n > r else True
        return (jnp.min(w, axis=-1) >= -tol[..., 0]) & small


class PSSDFixedRank(_SymEigen):
    r"""Symmetric positive semidefinite matrices of rank exactly ``rank``:
    ``A = Q diag(f(λ)) Qᵀ`` with ``Q`` ``n x rank`` and ``f > 0`` (softplus by default; geotorch's
    ``PSSDFixedRank``).

    Shapes ``(..., n, n)`` with ``rank <= n``. ``in_manifold`` checks that the ``n - rank``
    smallest eigenvalues are 0 and the others positive, to ``atol * max(1, |A|)``. The forward
    keeps the nonzero eigenvalues ``>= rank_floor(dtype) * max(1, λ_max)`` (``1e-3`` in float32, ``0.1``
    in half precision, ten times that tolerance), so every raw value maps onto a matrix of
    numerical rank exactly ``rank``; ``apply_inverse`` raises kept eigenvalues below the
    tolerance ``default_atol(dtype) * max(1, λ_max)`` (e.g. the missing ones of a value of lower
    rank) to ``interior_margin(dtype) * max(1, λ_max)``; those between the tolerance and the
    floor are kept and the forward raises them to the floor.
    """

    rank: int
    f: str | Callable | tuple = "softplus"

    def _floor(self, dtype):
        return S.rank_floor(dtype)

    def _eig_ok(self, w, tol, r):
        n = w.shape[-1]
        small = jnp.all(jnp.abs(w[..., : n - r]) <= tol, axis=-1) if n > r else True
        return (w[..., n - r] > tol[..., 0]) & small
