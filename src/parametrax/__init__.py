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
    AxisError,
    NotParametrizedError,
    ParametrizationError,
    ParametrizationTypeError,
    RightInverseError,
    ShapeError,
    SpecError,
)
from parametrax.tree import Spec, update_base
from parametrax._numerics import inv_softplus
from parametrax.catalog import (
    ORTHOGONAL_MAPS,
    PSD,
    PSSD,
    SL,
    SO,
    AlmostOrthogonal,
    Cayley,
    Cholesky,
    FixedRank,
    Grassmannian,
    Interval,
    Invertible,
    LowerTriangular,
    LowRank,
    MatrixExp,
    Ordered,
    Orthogonal,
    Positive,
    PositiveDefinite,
    PSSDFixedRank,
    PSSDLowRank,
    RandomPruning,
    Simplex,
    Skew,
    SpectralNorm,
    Sphere,
    SphereEmbedded,
    Stiefel,
    Symmetric,
    WeightNorm,
    cayley,
    matrix_exp,
    skew,
    symmetric,
)
from parametrax.catalog import CorrelationCholesky, Hurwitz
from parametrax import projections  # imports optax only when `project` is called
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
    # issue 14's first slice
    "Hurwitz",
    "CorrelationCholesky",
    "projections",
]
