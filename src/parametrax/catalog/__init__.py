"""The catalog: every parametrization parametrax ships, one module per family, named after its
maths. Each module uses only :mod:`parametrax._core` (the base type), :mod:`parametrax._errors`
and :mod:`parametrax._numerics` (plus :mod:`._trivialization`, the trivialized families' shared
``triv`` field and base-point maths).

=====================  ==========================================  =====================  ===============
entry                  set                                         state                  module
=====================  ==========================================  =====================  ===============
``Symmetric``          symmetric matrices (``lower``: triangle)    -                      ``linear``
``Skew``               skew-symmetric matrices                     -                      ``linear``
``Cayley``             ``(I - X)^-1 (I + X)`` (SO(n) after Skew)   -                      ``orthogonal``
``MatrixExp``          ``expm(X)`` (no right inverse)              -                      ``orthogonal``
``Orthogonal``         torch's ``orthogonal`` (tall / wide)        base (N x N)           ``orthogonal``
``Stiefel``            orthonormal columns (tall) / rows (wide)    base (N x N)           ``stiefel``
``SO``                 square orthogonal, det +1                   base (n x n)           ``stiefel``
``Grassmannian``       subspaces (orthonormal representative)      base (N x N)           ``stiefel``
``Sphere``             fixed norm along ``axis`` (exp map)         base (value's shape)   ``sphere``
``SphereEmbedded``     fixed norm along ``axis`` (projection)      -                      ``sphere``
``PositiveDefinite``   symmetric positive definite                 base (n x n)           ``psd``
``PSSD``               symmetric positive semidefinite             base (n x n)           ``psd``
``PSSDLowRank``        PSSD of rank <= r                           base (n x n)           ``psd``
``PSSDFixedRank``      PSSD of rank r                              base (n x n)           ``psd``
``LowRank``            rank <= r                                   base_u, base_v         ``lowrank``
``FixedRank``          rank r                                      base_u, base_v         ``lowrank``
``Invertible``         det > 0 (GL+)                               base_u, base_v         ``lowrank``
``SL``                 det = 1                                     base_u, base_v         ``lowrank``
``AlmostOrthogonal``   singular values in [1 - lam, 1 + lam]       base_u, base_v         ``lowrank``
``SpectralNorm``       ``W / sigma(W)`` (power iteration)          u, v                   ``norms``
``WeightNorm``         ``g v / ||v||`` (two raw arrays)            -                      ``norms``
``Positive``           > 0 (softplus / exp)                        -                      ``positive``
``Interval``           (low, high)                                 -                      ``positive``
``Simplex``            probability vectors along ``axis``          -                      ``simplex``
``Ordered``            strictly increasing along ``axis``          -                      ``ordered``
``LowerTriangular``    tril                                        -                      ``triangular``
``Cholesky``           tril with a positive diagonal               -                      ``triangular``
``RandomPruning``      ``X * mask`` (a fixed random mask)          mask                   ``pruning``
``Hurwitz``            eigenvalues with real part < -alpha         - (two raw arrays)     ``hurwitz``
CorrelationCholesky    tril, diag > 0, unit rows (``L Lᵀ``: corr)  -                      ``correlation``
ConvSpectralNorm       conv kernel / its operator norm             u, v (or - if exact)   ``conv_norm``
ProductManifold        blocks along ``axis``, each in its part's   the parts', prefixed   ``product``
                       set (``M_1 x ... x M_k``)                   ``part{i}_``
=====================  ==========================================  =====================  ===============

Every entry is a frozen, hashable dataclass (automatically: see :class:`parametrax.Parametrization`).
The manifolds (from ``Stiefel`` on, and ``Positive`` .. ``Cholesky``) have
``in_manifold(x, atol)`` and ``sample(key, shape, dtype)``. Matrix entries act on the last two
axes and broadcast over the leading ones. Entries with state follow the variables protocol of
:class:`parametrax.Parametrization`; the trivialized ones (a base point) have ``update_base``,
which :func:`parametrax.tree.update_base` applies over a whole raw tree (jit-friendly).
"""

from parametrax.catalog.conv_norm import ConvSpectralNorm, conv_singular_values
from parametrax.catalog.correlation import CorrelationCholesky
from parametrax.catalog.hurwitz import Hurwitz
from parametrax.catalog.linear import Skew, Symmetric, skew, symmetric
from parametrax.catalog.lowrank import SL, AlmostOrthogonal, FixedRank, Invertible, LowRank
from parametrax.catalog.norms import SpectralNorm, WeightNorm
from parametrax.catalog.ordered import Ordered
from parametrax.catalog.orthogonal import (
    Cayley,
    MatrixExp,
    Orthogonal,
    cayley,
    matrix_exp,
)
from parametrax.catalog.positive import Interval, Positive
from parametrax.catalog.product import ProductManifold
from parametrax.catalog.pruning import RandomPruning
from parametrax.catalog.psd import PSSD, PositiveDefinite, PSSDFixedRank, PSSDLowRank
from parametrax.catalog.simplex import Simplex
from parametrax.catalog.sphere import Sphere, SphereEmbedded
from parametrax.catalog.stiefel import SO, Grassmannian, Stiefel
from parametrax.catalog.triangular import Cholesky, LowerTriangular

__all__ = [
    "Symmetric",
    "Skew",
    "Cayley",
    "MatrixExp",
    "Orthogonal",
    "Stiefel",
    "SO",
    "Grassmannian",
    "Sphere",
    "SphereEmbedded",
    "PositiveDefinite",
    "PSSD",
    "PSSDLowRank",
    "PSSDFixedRank",
    "LowRank",
    "FixedRank",
    "Invertible",
    "SL",
    "AlmostOrthogonal",
    "SpectralNorm",
    "WeightNorm",
    "Positive",
    "Interval",
    "Simplex",
    "Ordered",
    "LowerTriangular",
    "Cholesky",
    "RandomPruning",
    "symmetric",
    "skew",
    "cayley",
    "matrix_exp",
    "Hurwitz",
    "CorrelationCholesky",
    "ConvSpectralNorm",
    "conv_singular_values",
    "ProductManifold",
]
