"""The manifold catalog in one namespace (geotorch's catalog, in JAX) plus ``update_base``.

=====================  ==========================================  =====================
entry                  set                                         state
=====================  ==========================================  =====================
``Stiefel``            orthonormal columns (tall) / rows (wide)    base (N x N)
``SO``                 square orthogonal, det +1                   base (n x n)
``Grassmannian``       subspaces (orthonormal representative)      base (N x N)
``Sphere``             fixed norm along ``axis`` (exp map)         base (value's shape)
``SphereEmbedded``     fixed norm along ``axis`` (projection)      -
``PositiveDefinite``   symmetric positive definite (``PSD``)       base (n x n)
``PSSD``               symmetric positive semidefinite             base (n x n)
``PSSDLowRank``        PSSD of rank <= r                           base (n x n)
``PSSDFixedRank``      PSSD of rank r                              base (n x n)
``LowRank``            rank <= r                                   base_u, base_v
``FixedRank``          rank r                                      base_u, base_v
``Invertible``         det > 0 (GL+)                               base_u, base_v
``SL``                 det = 1                                     base_u, base_v
``AlmostOrthogonal``   singular values in [1 - lam, 1 + lam]       base_u, base_v
``Positive``           > 0 (softplus / exp)                        -
``Interval``           (low, high)                                 -
``Simplex``            probability vectors along ``axis``          -
``LowerTriangular``    tril                                        -
``Cholesky``           tril with a positive diagonal               -
``Ordered``            strictly increasing along ``axis``          -
=====================  ==========================================  =====================

Every entry is a frozen, hashable dataclass with ``in_manifold(x, atol)`` and
``sample(key, shape, dtype)``. Matrix entries act on the last two axes and broadcast over the
leading ones. Entries with state follow the variables protocol of
:class:`parametrax.Parametrization` and have ``update_base``; :func:`update_base` applies it
over a whole raw tree (jit-friendly).
"""

from parametrax.tree._update_base import has_base, update_base
from parametrax.catalog._scalar import inv_softplus
from parametrax.catalog.constraints import (
    Cholesky,
    Interval,
    LowerTriangular,
    Ordered,
    Positive,
    Simplex,
)
from parametrax.catalog.lowrank import SL, AlmostOrthogonal, FixedRank, Invertible, LowRank
from parametrax.catalog.psd import PSD, PSSD, PositiveDefinite, PSSDFixedRank, PSSDLowRank
from parametrax.catalog.sphere import Sphere, SphereEmbedded
from parametrax.catalog.stiefel import SO, Grassmannian, Stiefel

__all__ = [
    "Stiefel",
    "SO",
    "Grassmannian",
    "Sphere",
    "SphereEmbedded",
    "PositiveDefinite",
    "PSD",
    "PSSD",
    "PSSDLowRank",
    "PSSDFixedRank",
    "LowRank",
    "FixedRank",
    "Invertible",
    "SL",
    "AlmostOrthogonal",
    "Positive",
    "Interval",
    "Simplex",
    "LowerTriangular",
    "Cholesky",
    "Ordered",
    "update_base",
    "has_base",
    "inv_softplus",
]
