"""One table of every exported parametrization, each row run through the contract kit
(``parametrax.testing.check_parametrization``), and a test that the table misses no entry.

A row is a single link with the kit options it needs: ``raw_domain`` where ``forward`` is meant
for part of the raw space only, ``broadcasts=False`` for a map of the whole tensor, ``value``
where the raw is several arrays, ``in_manifold`` as an independent oracle where the entry has
no ``in_manifold`` of its own. A row the entry fails is ``xfail(strict=True)`` with its root
cause, so fixing the entry turns it into a failure that asks for the mark to go.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import parametrax as px
from parametrax.testing import check_parametrization

from _helpers import stable_id

KEY = jax.random.key(0)


# ------------------------------------------------------------------------------------------------
# Raw domains and independent membership oracles (numpy, not the entries' own code)
# ------------------------------------------------------------------------------------------------
def skew_part(x):
    """Raw domain of a map of skew matrices (Cayley, the exponential onto SO(n))."""
    return x - jnp.swapaxes(x, -1, -2)


def symmetric_part(x):
    """Raw domain of the exponential onto the symmetric positive-definite matrices."""
    return (x + jnp.swapaxes(x, -1, -2)) / 2


def unit_diagonal(x):
    """Householder's raw domain (torch's ``orthogonal``): the diagonal of the tall raw is +-1
    (``forward`` scales column ``j`` by ``trunc(X[j, j])`` with no gradient, so a diagonal
    entry in (-1, 1) gives a zero column). Tall shapes only."""
    n, k = x.shape[-2:]
    assert n >= k, "unit_diagonal is for tall raws"
    d = jnp.diagonal(x, axis1=-2, axis2=-1)
    sign = jnp.where(d >= 0, 1.0, -1.0).astype(x.dtype)
    return jnp.where(jnp.eye(n, k, dtype=bool), sign[..., None, :], x)


def _np(y):
    return np.asarray(y, np.float64)


def is_symmetric(y, atol):
    y = _np(y)
    return bool(np.max(np.abs(y - np.swapaxes(y, -1, -2))) <= atol)


def is_skew(y, atol):
    y = _np(y)
    return bool(np.max(np.abs(y + np.swapaxes(y, -1, -2))) <= atol)


def is_orthonormal(y, atol):
    """Orthonormal columns (tall) or rows (wide)."""
    y = _np(y)
    if y.shape[-2] < y.shape[-1]:
        y = np.swapaxes(y, -1, -2)
    gram = np.swapaxes(y, -1, -2) @ y
    return bool(np.max(np.abs(gram - np.eye(y.shape[-1]))) <= atol)


def is_rotation(y, atol):
    return is_orthonormal(y, atol) and bool(np.all(np.linalg.det(_np(y)) > 0))


def is_spd(y, atol):
    y = _np(y)
    return is_symmetric(y, atol) and bool(np.all(np.linalg.eigvalsh(y) > 0))


def in_open_unit_interval(y, atol):
    return bool(np.all(np.abs(_np(y)) < 1))


def is_hurwitz(y, atol, alpha=0.0):
    """numpy's eigenvalues: every real part < -alpha (strict)."""
    return bool(np.all(np.linalg.eigvals(_np(y)).real < -alpha))


def is_correlation_cholesky(y, atol):
    """Lower triangular, positive diagonal, and ``L Lᵀ`` a correlation matrix (numpy)."""
    y = _np(y)
    c = y @ np.swapaxes(y, -1, -2)
    return (
        bool(np.max(np.abs(np.triu(y, 1))) <= atol)
        and bool(np.all(np.diagonal(y, axis1=-2, axis2=-1) > 0))
        and bool(np.max(np.abs(np.diagonal(c, axis1=-2, axis2=-1) - 1)) <= atol)
        and bool(np.all(np.linalg.eigvalsh(c) > 0))
    )


def gaussian(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def cayley_full(a):
    """A user trivialization: the Cayley map without the 1/2 (module level: hashable)."""
    eye = jnp.eye(a.shape[-1], dtype=a.dtype)
    return jnp.linalg.solve(eye - a, eye + a)


def row(p, shape, marks=(), **opts):
    ident = f"{stable_id(p)}-{'x'.join(map(str, shape))}"
    return pytest.param(p, shape, opts, id=ident, marks=marks)


# ------------------------------------------------------------------------------------------------
# The table: every exported parametrization, with its options
# ------------------------------------------------------------------------------------------------
TABLE = [
    # --- the tutorial's linear catalog --------------------------------------------------------
    row(px.symmetric, (3, 3), in_manifold=is_symmetric),
    row(px.Symmetric(), (2, 3, 3), in_manifold=is_symmetric),
    row(px.skew, (3, 3), in_manifold=is_skew),
    row(px.cayley, (3, 3), raw_domain=skew_part, in_manifold=is_rotation),
    row(px.matrix_exp, (3, 3), raw_domain=symmetric_part, in_manifold=is_spd),
    row(px.MatrixExp(), (2, 3, 3), raw_domain=skew_part, in_manifold=is_rotation),
    row(px.RandomPruning(), (3, 4)),
    row(px.RandomPruning(0.25), (2, 3)),
    row(px.as_parametrization(jnp.tanh), (4,), in_manifold=in_open_unit_interval),
    # --- Orthogonal: every map, with and without the trivialization ---------------------------
    row(px.Orthogonal(), (4, 4), in_manifold=is_orthonormal),  # square: matrix_exp
    row(
        px.Orthogonal(), (5, 3), raw_domain=unit_diagonal, in_manifold=is_orthonormal
    ),  # householder
    row(px.Orthogonal(map="cayley"), (2, 3, 4), in_manifold=is_orthonormal),  # wide, batched
    row(
        px.Orthogonal(map="householder", use_trivialization=False),
        (5, 3),
        raw_domain=unit_diagonal,
        in_manifold=is_orthonormal,
    ),
    row(
        px.Orthogonal(map="matrix_exp", use_trivialization=False),
        (4, 4),
        in_manifold=is_orthonormal,
    ),
    row(px.Orthogonal(map="cayley", use_trivialization=False), (4, 3), in_manifold=is_orthonormal),
    # --- norms (maps of the whole tensor: no broadcasting over a leading axis) ----------------
    row(px.SpectralNorm(), (4, 3), broadcasts=False),
    row(px.SpectralNorm(axis=(0, 2), n_power_iterations=3), (2, 3, 2), broadcasts=False),
    row(px.SpectralNorm(), (5,), broadcasts=False),  # 1-D: plain normalisation, no state
    row(px.SpectralNorm(exact=True), (4, 3), broadcasts=False),  # the SVD's sigma, no state
    row(px.SpectralNorm(axis=(0, 2), exact=True), (2, 3, 2), broadcasts=False),
    row(px.WeightNorm(), (4, 3), broadcasts=False, value=gaussian((4, 3))),
    row(px.WeightNorm(axis=None), (3, 4), broadcasts=False, value=gaussian((3, 4))),
    row(px.WeightNorm(axis=(0, 2)), (2, 3, 2), broadcasts=False, value=gaussian((2, 3, 2))),
    # --- orthogonal-group manifolds (expm, the default, once per family; cayley compiles faster)
    row(px.Stiefel(), (5, 3)),
    row(px.Stiefel(triv="cayley"), (3, 5)),  # wide: orthonormal rows
    row(px.Stiefel(triv=cayley_full), (4, 2)),  # a user trivialization
    row(px.SO(), (2, 3, 3)),
    row(px.Grassmannian(triv="cayley"), (5, 2)),
    # --- spheres --------------------------------------------------------------------------------
    row(px.Sphere(radius=2.0), (3, 4)),
    row(px.Sphere(axis=-2), (3, 4)),
    row(px.Sphere(axis=None), (4,), broadcasts=False),
    row(px.SphereEmbedded(axis=-2), (3, 4)),
    # --- symmetric family -----------------------------------------------------------------------
    row(px.PositiveDefinite(), (4, 4)),  # PSD is the same class
    row(px.PSSD(triv="cayley"), (3, 3)),
    row(px.PSSDLowRank(2, triv="cayley"), (4, 4)),
    row(px.PSSDFixedRank(2, triv="cayley"), (4, 4)),
    # --- SVD family -------------------------------------------------------------------------------
    row(px.LowRank(2, triv="cayley"), (5, 4)),
    row(px.FixedRank(2, triv="cayley"), (3, 5)),
    row(px.Invertible(triv="cayley"), (3, 3)),
    row(px.SL(triv="cayley"), (3, 3)),
    row(px.AlmostOrthogonal(0.5, triv="cayley"), (4, 3)),
    # --- elementwise and vector constraints -------------------------------------------------------
    row(px.Positive(), (2, 3)),
    row(px.Positive(f="exp"), (4,)),
    row(px.Interval(-1.0, 2.0), (4,)),
    row(px.Simplex(), (2, 4)),
    row(px.Simplex(axis=0), (4, 2), broadcasts=False),  # the leading axis is the simplex's
    row(px.LowerTriangular(), (3, 4)),
    row(px.Cholesky(), (3, 3)),
    row(px.Cholesky(f="exp"), (2, 3, 3)),
    row(px.Ordered(), (2, 5)),
    row(px.Ordered(axis=0, f="exp"), (4, 2), broadcasts=False),
    # --- issue 14: Hurwitz, correlation Cholesky factors, Keras's projections ------------------
    row(px.Hurwitz(), (3, 3), in_manifold=is_hurwitz),
    row(px.Hurwitz(alpha=0.5), (2, 4, 4), in_manifold=functools.partial(is_hurwitz, alpha=0.5)),
    row(px.CorrelationCholesky(), (4, 4), in_manifold=is_correlation_cholesky),
    row(px.CorrelationCholesky(), (2, 3, 3)),
    row(px.projections.max_norm(1.5), (3, 4), broadcasts=False),  # axis=0: the leading axis
    row(px.projections.MaxNorm(2.0, axis=-1), (3, 4)),
    row(px.projections.unit_norm(), (4, 2), broadcasts=False),
    row(px.projections.UnitNorm(axis=-1), (2, 3)),
    row(px.projections.non_neg(), (2, 3)),
    # --- issue 14: sigmaReparam (SpectralNorm with a learnable scale) ---------------------------
    row(px.SpectralNorm(learnable_scale=True), (4, 3), broadcasts=False, value=gaussian((4, 3))),
    row(px.SpectralNorm(learnable_scale=True), (5,), broadcasts=False, value=gaussian((5,))),
    row(
        px.SpectralNorm(learnable_scale=True, exact=True),
        (4, 3),
        broadcasts=False,
        value=gaussian((4, 3)),
    ),
    # --- issue 14: the convolution's operator norm (kernels: a map of the whole tensor) --------
    row(px.ConvSpectralNorm((5,)), (3, 2, 3), broadcasts=False),
    row(
        px.ConvSpectralNorm((5, 4), strides=2, padding="VALID", n_power_iterations=2),
        (2, 2, 2, 3),
        broadcasts=False,
    ),
    row(
        px.ConvSpectralNorm((4, 4), padding="CIRCULAR", exact=True), (2, 2, 2, 2), broadcasts=False
    ),
    # --- issue 14: Skew / Symmetric on the lower triangle (and their own in_manifold, sample) --
    row(px.Symmetric(lower=True), (2, 3, 3), in_manifold=is_symmetric),
    row(px.Skew(lower=True), (4, 4), in_manifold=is_skew),
    row(px.Skew(lower=True), (2, 3, 3)),
    # --- issue 14: ProductManifold (blocks of one array) -------------------------------------------
    row(px.ProductManifold((px.Positive(), px.Simplex(), None), sizes=(2, 3, 1)), (2, 6)),
    row(px.ProductManifold((px.Stiefel(triv="cayley"), px.Positive()), sizes=(2, 2)), (4, 4)),
    row(
        px.ProductManifold((px.Symmetric(lower=True), px.Sphere()), sizes=(3, 2), axis=-2),
        (5, 3),
        broadcasts=False,
    ),
]


@pytest.mark.parametrize("p, shape, opts", TABLE)
def test_contract(p, shape, opts):
    check_parametrization(p, shape, KEY, **opts)


def test_table_covers_every_exported_parametrization():
    exported = {
        obj
        for obj in (getattr(px, name) for name in px.__all__)
        if isinstance(obj, type) and issubclass(obj, px.Parametrization)
    } - {px.Parametrization}
    covered = {type(param.values[0]) for param in TABLE}
    missing = sorted(cls.__name__ for cls in exported - covered)
    assert not missing, f"exported parametrizations without a row in TABLE: {missing}"
    # and every exported instance (px.symmetric, ...) is the object of a row
    instances = [n for n in px.__all__ if isinstance(getattr(px, n), px.Parametrization)]
    rows = {id(param.values[0]) for param in TABLE}
    assert all(id(getattr(px, n)) in rows for n in instances), instances
