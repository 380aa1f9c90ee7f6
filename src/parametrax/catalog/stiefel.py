"""The orthogonal-group family (geotorch's ``SO``, ``Stiefel``, ``Grassmannian``), trivialized with
a base point kept as state.

Every entry here owns state (the variables protocol of :class:`parametrax.Parametrization`)::

    variables = p.init_variables(key, W)            # {"params": {}, "state": {"base": (..., N, K)}}
    raw, state = p.apply_inverse(variables, W, key=key)   # base <- W (projected), raw <- 0
    Q, _ = p.apply({"params": {}, "state": state}, raw)   # Q == W, exactly, for W on the manifold

The forward map is ``Q = (B @ triv(A))[..., :, :K]`` with ``B`` the base (an ``N x N``
orthogonal matrix, ``N = max(n, k)``, ``K = min(n, k)``, kept in the state as its ``N x K``
frame ``Y`` and completed to ``B = [Y, Y_perp]`` by Householder, never stored ``N x N``; a
whole ``N x N`` base from before issue 12 is still read) and ``A`` the ``N x N`` skew matrix
``[[S, -Cᵀ], [C, 0]]`` read from the raw array: ``S`` (K x K) from the strict lower triangle of
its top block and ``C`` from its bottom ``N - K`` rows. The raw array has the value's shape; its
upper triangle (diagonal included) is unused and gets zero gradient. Wide matrices (n < k) are
handled transposed (orthonormal rows), tall ones have orthonormal columns: the constraint sits on
the smaller side, as in torch and geotorch, so a Flax ``(in, out)`` kernel and a torch
``(out, in)`` weight get the same constraint.

``triv`` is ``"expm"`` (the matrix exponential, surjective), ``"cayley"``
(``(I - A/2)^{-1}(I + A/2)``, cheaper, misses rotations by π) or any hashable callable mapping
one ``N x N`` skew matrix to an orthogonal one (it is vmapped over leading axes). The two named
maps never build ``A``: ``triv(A)[:, :K]`` is computed exactly from a ``2K x 2K`` matrix when
``N > 2K`` (:mod:`parametrax._numerics.tall`), so a step costs O(N K²) time and O(N K)
memory; a callable gets the dense ``N x N`` ``A`` its contract promises.

Dynamic trivialization (geotorch's ``update_base``): ``p.update_base(variables, raw)`` returns
``(zeros, {"base": Y'})`` with ``Y'`` the current point (one Newton–Schulz step on the
``N x K`` frame): the base moves there and the raw array is reset, the constrained value is
unchanged. The new base is completed by Householder from ``Y'`` (not ``(B triv(A))[:, K:]``):
the same point at raw zero, the same set, other coordinates away from it. On whole trees, use
:func:`parametrax.tree.update_base`, which works inside ``jax.jit`` (``when=``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from parametrax._core import Variables
from parametrax._errors import describe
from parametrax._numerics import (
    complete,
    default_atol,
    eye_frame,
    haar,
    haar_special,
    keep_or_project,
    mT,
    on_manifold_tol,
    orthonormality_error,
    polar,
    require_matrix,
    require_square,
    special_polar,
    torus,
    widen,
)
from parametrax.catalog import _trivialization as T
from parametrax.catalog._broadcasts import ExactClassBroadcasts

__all__ = ["Stiefel", "SO", "Grassmannian"]

Array = jax.Array


def _named_triv(p: _OrthogonalFamily) -> bool:
    """Grouped evaluation (:mod:`parametrax.tree`) stacks an entry with a named ``triv``; what a
    user callable does on a batch is unknown."""
    return isinstance(p.triv, str)


class _OrthogonalFamily(T.Trivialized):
    """Shared implementation; subclasses set the three class flags below."""

    _square_only = False  # SO
    _special = False  # det +1 (SO)
    _horizontal = False  # Grassmannian: no rotation within the subspace

    # --- grouped evaluation (parametrax.tree); each member declares `broadcasts` itself -------
    def batching_pays(self, shape: tuple) -> bool:
        """With ``triv="expm"``: a batched matrix exponential was measured faster than a loop."""
        del shape
        return self.triv == "expm"

    # --- shapes ---------------------------------------------------------------------------------
    def _check(self, x: Array | jax.ShapeDtypeStruct) -> None:
        if self._square_only:
            require_square(
                self, x, " For orthonormal columns of a non-square matrix use `Stiefel`.", real=True
            )
        else:
            require_matrix(self, x, real=True)

    @staticmethod
    def _wide(x: Array) -> bool:
        return x.shape[-2] < x.shape[-1]

    def _tall(self, x: Array) -> Array:
        return mT(x) if self._wide(x) else x

    # --- the variables protocol -----------------------------------------------------------------
    def init_variables(self, key: Array, value: Array) -> Variables:
        """The canonical base (the identity) as its frame ``eye(N, K)``; :meth:`apply_inverse`
        moves it to a value."""
        del key
        self._check(value)
        n, k = max(value.shape[-2:]), min(value.shape[-2:])
        return {"params": {}, "state": {"base": eye_frame(value.shape[:-2], n, k, value.dtype)}}

    def _base(self, variables: Variables, x: Array) -> Array:
        base = variables["state"]["base"]
        n, k = max(x.shape[-2:]), min(x.shape[-2:])
        T.require_base(self, base, n, k, "the base point `state['base']`")
        return base

    def apply(self, variables: Variables, x: Array, *, update_state: bool = False):
        del update_state
        self._check(x)
        base = self._base(variables, x)
        # half dtypes: computed in float32 (base and raw widened), rounded once at the end
        q = T.stiefel_point(
            widen(base), widen(self._tall(x)), self.triv, horizontal=self._horizontal
        ).astype(x.dtype)
        return (mT(q) if self._wide(x) else q), variables["state"]

    def forward(self, x: Array) -> Array:
        """The map at the canonical base ``B = I``: ``triv(A)[..., :, :K]`` (no state)."""
        self._check(x)
        n, k = max(x.shape[-2:]), min(x.shape[-2:])
        base = eye_frame(x.shape[:-2], n, k, x.dtype)
        return self.apply({"params": {}, "state": {"base": base}}, x)[0]

    def project(self, value: Array) -> Array:
        """The nearest point of the manifold (polar factor; SO: special polar); a value already
        on it (:func:`~parametrax._numerics.on_manifold_tol`: ``100 eps``; bfloat16 / float16:
        ``2 eps`` of the half dtype, i.e. a rounded point of the manifold) is returned
        unchanged. Computed in float32 for half dtypes."""
        self._check(value)
        return self._project_wide(value).astype(value.dtype)

    def _project_wide(self, value: Array) -> Array:
        """:meth:`project` in at least float32 (the result is not cast back)."""
        y = widen(self._tall(value))
        err = orthonormality_error(y)
        ok = jnp.isfinite(err) & (err <= on_manifold_tol(value.dtype))
        if self._special:
            proj = special_polar(y)
            ok = ok & (jnp.linalg.det(y) > 0)
        else:
            proj = polar(y)
        out = keep_or_project(y, proj, ok)
        return mT(out) if self._wide(value) else out

    def apply_inverse(self, variables: Variables, value: Array, *, key=None):
        """Moves the base to ``value`` (projected onto the manifold) and returns raw zeros:
        exact for every point of the manifold."""
        del key
        self._check(value)
        y = self._tall(self._project_wide(value))
        old = variables["state"].get("base")
        n, k = y.shape[-2:]
        if old is not None and k < n and old.shape[-1] == n:  # a whole base stays whole
            y = complete(y)
        return jnp.zeros_like(value), {**variables["state"], "base": y.astype(value.dtype)}

    def right_inverse(self, value: Array) -> Array:
        raise NotImplementedError(
            f"{describe(self)} is trivialized at a base point kept as state: assign through "
            "`apply_inverse(variables, value, key=...)` (registration and `assign` do), which "
            "moves the base to the value. Without a base there is no right inverse for "
            f"triv={T.triv_name(self.triv)!r} (torch's `orthogonal` refuses this too)."
        )

    def update_base(self, variables: Variables, x: Array):
        """Dynamic trivialization: ``(zeros, state with base <- B @ triv(A))``; the value is
        unchanged (one Newton–Schulz step also removes rounding drift from the new base)."""
        self._check(x)
        base = self._base(variables, x)
        new = T.moved_base(
            widen(base), widen(self._tall(x)), self.triv, horizontal=self._horizontal
        ).astype(base.dtype)
        return jnp.zeros_like(x), {**variables["state"], "base": new}

    # --- manifold utilities ---------------------------------------------------------------------
    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """Whether every matrix of ``x`` has orthonormal columns (rows if wide) to ``atol``
        (``max |XᵀX - I| <= atol``; SO also needs ``det > 0``). A traced boolean scalar."""
        self._check(x)
        atol = default_atol(x.dtype) if atol is None else atol
        y = widen(self._tall(x))
        ok = orthonormality_error(y) <= atol
        if self._special:
            ok = ok & (jnp.linalg.det(y) > 0)
        return jnp.all(ok)

    def sample(self, key: Array, shape, dtype=jnp.float32, init: str = "uniform") -> Array:
        """A random point of shape ``shape``.

        ``init="uniform"``: Haar measure (sign-fixed QR of a Gaussian matrix; SO: det +1);
        ``init="torus"``: the torus initialisation for recurrent kernels (Henaff et al. 2016):
        block-diagonal 2x2 rotations with angles uniform in ``(-π, π)``, whatever the ``triv``
        (for non-square shapes, the first ``K`` columns, built in O(N K) without the ``N x N``
        matrix). geotorch's torus initialisation equals this only with ``triv="expm"``: it
        pushes its angles through the manifold's ``triv``, so its Cayley torus has angles
        ``2 atan(b / 2)``, ``b ~ U(-π, π)``, in ``(-2.01, 2.01)`` and not uniform.
        """
        T.check_init(self, init)
        shape = tuple(shape)
        self._check(jax.ShapeDtypeStruct(shape, dtype))
        n, k = max(shape[-2:]), min(shape[-2:])
        batch = shape[:-2]
        if init == "torus":
            q = torus(key, batch, n, dtype, k)  # O(N K): never the N x N matrix
        elif self._special:
            q = haar_special(key, batch, n, dtype)
        else:
            q = haar(key, batch, n, k, dtype)
        return mT(q) if shape[-2] < shape[-1] else q


class Stiefel(_OrthogonalFamily):
    r"""Matrices with orthonormal columns (tall, ``n >= k``) or rows (wide): the Stiefel
    manifold ``V(max, min)``; square matrices give the orthogonal group O(n) (the determinant of
    the base point is kept; use :class:`SO` to pin it to +1).

    ``Q = (B @ triv(A))[..., :, :k]`` with ``B`` a base point (state) and ``A`` skew, read from
    the raw array (module docstring). Shapes ``(..., n, k)``; leading axes are batch axes.
    ``apply_inverse`` is exact on the manifold and projects (polar factor) elsewhere, so
    registering a random kernel starts from its nearest orthonormal matrix. geotorch's
    ``Stiefel`` / ``orthogonal``; Lezcano-Casado & Martínez-Rubio 2019.

    Args:
      triv: ``"expm"``, ``"cayley"`` or a hashable callable ``Skew(N) -> SO(N)``.

    >>> import jax, jax.numpy as jnp
    >>> from parametrax.catalog.stiefel import Stiefel
    >>> p = Stiefel()
    >>> W = jax.random.normal(jax.random.key(0), (5, 3))
    >>> variables = p.init_variables(jax.random.key(1), W)
    >>> raw, state = p.apply_inverse(variables, W)
    >>> Q, _ = p.apply({"params": {}, "state": state}, raw + 0.1)
    >>> bool(p.in_manifold(Q))
    True
    """

    broadcasts = ExactClassBroadcasts(when=_named_triv)


class SO(_OrthogonalFamily):
    r"""The special orthogonal group ``SO(n)``: square orthogonal matrices with ``det = +1``.

    ``Q = B @ triv(A)``, ``A = L - Lᵀ`` with ``L`` the strict lower triangle of the raw
    ``(..., n, n)`` array and ``B`` a base point in SO(n) kept as state. ``apply_inverse`` is
    exact on SO(n) and projects elsewhere (the special polar factor: polar decomposition with
    the last singular vector flipped when the determinant is negative). geotorch's ``SO``.

    Args:
      triv: ``"expm"``, ``"cayley"`` or a hashable callable ``Skew(n) -> SO(n)``.

    >>> import jax, jax.numpy as jnp
    >>> from parametrax.catalog.stiefel import SO
    >>> Q = SO().forward(jax.random.normal(jax.random.key(0), (4, 4)))
    >>> bool(jnp.allclose(jnp.linalg.det(Q), 1.0, atol=1e-5))
    True
    """

    _square_only = True
    _special = True
    broadcasts = ExactClassBroadcasts(when=_named_triv)


class Grassmannian(_OrthogonalFamily):
    r"""The Grassmannian ``Gr(n, k)`` of ``k``-dimensional subspaces of ``R^n``, represented by
    matrices with orthonormal columns (rows if wide) spanning the subspace.

    ``Q = (B @ triv(A))[..., :, :k]`` with ``A = [[0, -Cᵀ], [C, 0]]``: only the bottom
    ``n - k`` rows of the raw array are used (the horizontal directions), so the parametrization
    moves the subspace and never rotates within it. ``in_manifold`` checks orthonormality of the
    representative. geotorch's ``Grassmannian``.

    Args:
      triv: ``"expm"``, ``"cayley"`` or a hashable callable ``Skew(N) -> SO(N)``.
    """

    _horizontal = True
    broadcasts = ExactClassBroadcasts(when=_named_triv)
