r"""Cholesky factors of correlation matrices: ``CorrelationCholesky`` (TFP's
``CorrelationCholesky`` bijector, numpyro's ``corr_cholesky`` constraint).

A lower-triangular ``L`` with a positive diagonal and rows of unit norm is exactly the Cholesky
factor of a correlation matrix ``C = L Lᵀ`` (symmetric positive definite, unit diagonal): the
support of the LKJ prior on Cholesky factors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from parametrax._core import Parametrization
from parametrax._numerics import default_atol, max_abs, require_square

__all__ = ["CorrelationCholesky"]

Array = jax.Array
# Where a row of a value given to right_inverse has a diagonal entry <= 0 (not on the set), the
# entry is replaced by this fraction of the norm of the row's off-diagonal part.
_DIAGONAL_FLOOR = 1e-2


def _row_norms(x: Array) -> Array:
    return jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))


class CorrelationCholesky(Parametrization):
    r"""Cholesky factors of correlation matrices: lower triangular, positive diagonal, unit rows.

    The map (TFP's ``CorrelationCholesky``, without the vector packing): the raw ``X`` is an
    ``(..., n, n)`` array whose **strict lower triangle** holds the ``n(n-1)/2`` free numbers
    (its diagonal and upper triangle are unused: zero gradient)::

        W = tril(X, -1) + I,      L = W / ||W||_rows      (each row divided by its norm)

    Row ``i`` of ``W`` ends in a 1, so its norm is ``>= 1`` (no division by a small number) and
    ``L[i, i] = 1 / ||W_i|| > 0``. Every ``L`` of the set is reached, so ``C = L Lᵀ`` ranges over
    all correlation matrices; ``L[0] = e_0`` always. For ``n = 2`` with ``t = X[1, 0]``:
    ``L = [[1, 0], [t, 1] / sqrt(1 + t²)]`` and the correlation is ``t / sqrt(1 + t²)``.

    ``right_inverse(L) = tril(L, -1) / diag(L)`` (each row divided by its diagonal entry; the
    diagonal and upper triangle of the raw are 0): exact on the set. For any other value
    ``forward(right_inverse(V))`` is the row-normalised lower triangle of ``V``, which is the
    nearest point of the set (Frobenius) when ``diag(V) > 0``; a diagonal entry ``<= 0`` is
    first replaced by ``10⁻² ·`` the norm of its row's off-diagonal part (``1`` for a row that
    is all zero), a point strictly inside the set.

    ``in_manifold(x, atol)``: square, real, ``max |triu(x, 1)| <= atol``, ``diag(x) > 0``
    (strict) and ``max | ||row|| - 1 | <= atol`` (default ``atol``:
    :func:`parametrax._numerics.default_atol` of the dtype).

    ``sample(key, shape)``: ``forward`` of a standard normal raw (not the LKJ distribution; use
    numpyro's ``LKJCholesky`` or TFP's for that).

    Shapes ``(..., n, n)``, real floating point; leading axes are batch axes.

    >>> import jax, numpy as np
    >>> from parametrax.catalog.correlation import CorrelationCholesky
    >>> cc = CorrelationCholesky()
    >>> L = np.asarray(cc(jax.random.normal(jax.random.key(0), (4, 4))))
    >>> bool(np.allclose(np.linalg.norm(L, axis=-1), 1.0, atol=1e-6))   # unit rows
    True
    >>> C = L @ L.T                                                       # a correlation matrix
    >>> bool(np.allclose(np.diag(C), 1.0, atol=1e-6) and np.linalg.eigvalsh(C).min() > 0)
    True
    >>> bool(np.allclose(cc(cc.right_inverse(L)), L, atol=1e-6))
    True
    """

    def forward(self, x: Array) -> Array:
        require_square(self, x, real=True)
        w = jnp.tril(x, -1) + jnp.eye(x.shape[-1], dtype=x.dtype)
        return w / _row_norms(w)

    def right_inverse(self, value: Array) -> Array:
        require_square(self, value, real=True)
        d = jnp.diagonal(value, axis1=-2, axis2=-1)
        off = jnp.tril(value, -1)
        r = _row_norms(off)[..., 0]
        floor = jnp.where(r > 0, _DIAGONAL_FLOOR * r, jnp.ones_like(r))
        d = jnp.where(d > 0, d, floor)
        return off / d[..., :, None]

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """Membership: square, ``max |triu(x, 1)| <= atol``, ``diag(x) > 0`` and
        ``max | ||row|| - 1 | <= atol`` over the whole array (``atol`` absolute, default
        ``default_atol(x.dtype)``; the diagonal condition strict)."""
        require_square(self, x, real=True)
        atol = default_atol(x.dtype) if atol is None else atol
        return (
            (max_abs(jnp.triu(x, 1)) <= atol)
            & jnp.all(jnp.diagonal(x, axis1=-2, axis2=-1) > 0)
            & (max_abs(_row_norms(x) - 1) <= atol)
        )

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """``forward`` of a standard normal raw of ``shape``."""
        return self.forward(jax.random.normal(key, tuple(shape), dtype))
