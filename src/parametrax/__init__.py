"""parametrax: functional parametrizations for JAX and Flax.

The JAX answer to PyTorch's ``torch.nn.utils.parametrize``: a parametrization is a pure
``forward`` / ``right_inverse`` pair; models store raw values and read ``forward(raw)``.

The public API, one name per object (the alias policy is in ``parametrax._deprecation``):

* ``px.Parametrized`` -- the linen front's entry point; the rest of the linen front is
  ``px.linen`` (``constrain``, ``assign``, ``remove_parametrizations``, ``update_base``, ...);
* ``px.tree`` -- the same operations on any pytree, without Flax;
* ``px.nnx`` -- torch's in-place workflow on NNX modules; ``px.equinox`` -- equinox Modules
  (imported on first use: equinox is optional); ``px.interop.torch`` -- torch checkpoints
  (``state_dict``) into parametrax variables (torch itself is never imported);
* the catalog (``px.Orthogonal``, ``px.SpectralNorm``, ``px.Stiefel``, ...; every entry of
  ``parametrax.catalog``), the contract (``Parametrization``, ``as_parametrization``) and the
  errors; ``parametrax.testing`` is the contract kit for your own parametrizations.

See ``ARCHITECTURE.md`` for which module owns what.
"""

from parametrax import (
    linen,
    nnx,
    projections,  # imports optax only when `project` is called
    tree,
)
from parametrax._core import Parametrization, as_parametrization
from parametrax._deprecation import module_getattr as _module_getattr
from parametrax._errors import (
    AxisError,
    NotParametrizedError,
    ParametrizationError,
    ParametrizationTypeError,
    RightInverseError,
    ShapeError,
    SpecError,
)
from parametrax.catalog import (
    PSSD,
    SL,
    SO,
    AlmostOrthogonal,
    Cayley,
    Cholesky,
    ConvSpectralNorm,
    CorrelationCholesky,
    FixedRank,
    Grassmannian,
    Hurwitz,
    Interval,
    Invertible,
    LowerTriangular,
    LowRank,
    MatrixExp,
    Ordered,
    Orthogonal,
    Positive,
    PositiveDefinite,
    ProductManifold,
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
    conv_singular_values,
    matrix_exp,
    skew,
    symmetric,
)
from parametrax.linen import Parametrized
from parametrax.tree import Spec

__version__ = "0.2.0.dev0"

_MOVED = {
    # the linen front's functions live in px.linen (px.Parametrized stays at the top)
    "constrained": "parametrax.linen:constrain",
    "assign": "parametrax.linen:assign",
    "remove_parametrizations": "parametrax.linen:remove_parametrizations",
    "is_parametrized": "parametrax.linen:is_parametrized",
    "type_before_parametrizations": "parametrax.linen:type_before_parametrizations",
    "spec_of": "parametrax.linen:spec_of",
    "STATE_COLLECTION": "parametrax.linen:STATE_COLLECTION",
    "update_base": "parametrax.tree:update_base",
    # second names and helpers that were public by accident
    "PSD": "parametrax:PositiveDefinite",
    "inv_softplus": "parametrax._numerics:inv_softplus",
    "FunctionParametrization": "parametrax._core:FunctionParametrization",
    "ORTHOGONAL_MAPS": "parametrax.catalog.orthogonal:ORTHOGONAL_MAPS",
}
_deprecated = _module_getattr(__name__, _MOVED)


def __getattr__(name: str):
    # `px.equinox` is imported on first use: equinox is an optional dependency; `px.interop`
    # (checkpoints of other libraries) likewise, as few users need it.
    if name in ("equinox", "interop"):
        import importlib

        return importlib.import_module(f"parametrax.{name}")
    return _deprecated(name)


__all__ = [
    "Parametrization",
    "as_parametrization",
    "Spec",
    "Parametrized",
    "linen",
    "tree",
    "nnx",
    # errors
    "ParametrizationError",
    "ParametrizationTypeError",
    "ShapeError",
    "AxisError",
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
    "SpectralNorm",
    "WeightNorm",
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
    "Positive",
    "Interval",
    "Simplex",
    "LowerTriangular",
    "Cholesky",
    "Ordered",
    "symmetric",
    "skew",
    "cayley",
    "matrix_exp",
    "Hurwitz",
    "CorrelationCholesky",
    "ConvSpectralNorm",
    "conv_singular_values",
    "ProductManifold",
    "projections",
]
