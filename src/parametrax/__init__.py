"""parametrax: functional parametrizations for JAX and Flax.

The JAX answer to PyTorch's ``torch.nn.utils.parametrize``: a parametrization is a pure
``forward`` / ``right_inverse`` pair; models store raw values and read ``forward(raw)``.
"""

from parametrax import nnx, tree
from parametrax._core import (
    FunctionParametrization,
    Parametrization,
    as_parametrization,
)
from parametrax._errors import (
    NotParametrizedError,
    ParametrizationError,
    ParametrizationTypeError,
    RightInverseError,
    ShapeError,
    SpecError,
)
from parametrax.tree import Spec
from parametrax.catalog.linear import (
    Cayley,
    MatrixExp,
    RandomPruning,
    Skew,
    Symmetric,
    cayley,
    matrix_exp,
    skew,
    symmetric,
)
from parametrax.catalog.manifolds import (
    PSD,
    PSSD,
    SL,
    SO,
    AlmostOrthogonal,
    Cholesky,
    FixedRank,
    Grassmannian,
    Interval,
    Invertible,
    LowerTriangular,
    LowRank,
    Ordered,
    Positive,
    PositiveDefinite,
    PSSDFixedRank,
    PSSDLowRank,
    Simplex,
    Sphere,
    SphereEmbedded,
    Stiefel,
    inv_softplus,
    update_base,
)
from parametrax.catalog.norms import AxisError, SpectralNorm, WeightNorm
from parametrax.catalog.orthogonal import ORTHOGONAL_MAPS, Orthogonal
from parametrax.linen import (
    STATE_COLLECTION,
    Parametrized,
    assign,
    constrained,
    is_parametrized,
    remove_parametrizations,
    spec_of,
    type_before_parametrizations,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    # `px.equinox` is imported on first use: equinox is an optional dependency.
    if name == "equinox":
        import importlib

        return importlib.import_module("parametrax.equinox")
    raise AttributeError(f"module 'parametrax' has no attribute {name!r}")

__all__ = [
    "Parametrization",
    "FunctionParametrization",
    "as_parametrization",
    "Spec",
    "tree",
    "nnx",
    # errors
    "ParametrizationError",
    "ParametrizationTypeError",
    "ShapeError",
    "SpecError",
    "RightInverseError",
    "NotParametrizedError",
    # catalog
    "Symmetric",
    "Skew",
    "Cayley",
    "MatrixExp",
    "RandomPruning",
    "Orthogonal",
    "ORTHOGONAL_MAPS",
    "SpectralNorm",
    "WeightNorm",
    "AxisError",
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
    "inv_softplus",
    "symmetric",
    "skew",
    "cayley",
    "matrix_exp",
    # linen front
    "Parametrized",
    "STATE_COLLECTION",
    "constrained",
    "assign",
    "remove_parametrizations",
    "is_parametrized",
    "type_before_parametrizations",
    "spec_of",
]
