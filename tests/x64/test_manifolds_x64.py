"""The manifold catalog in float64 (run in its own process with JAX_ENABLE_X64=1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from parametrax import _numerics as N
from parametrax._numerics import inv_softplus
from parametrax.catalog import (
    SL,
    SO,
    AlmostOrthogonal,
    Cholesky,
    Interval,
    LowRank,
    Ordered,
    Positive,
    PositiveDefinite,
    PSSDFixedRank,
    Simplex,
    Sphere,
    Stiefel,
)
from parametrax.testing import check_parametrization, default_atol

KEY = jax.random.key(0)
F64 = jnp.float64
ATOL = default_atol(F64)  # 1e-9, relative to max(1, |expected|)

# One row per family and per elementwise entry (the float32 suite runs every entry; this one checks
# that float64 flows through each code path: scalar maps, trivializations, eigh / svd
# projections). cayley where the trivialization is not the point: it compiles faster.
CATALOG = [
    (Stiefel(), (4, 2)),
    (SO(triv="cayley"), (3, 3)),
    (Sphere(), (2, 3)),
    (PositiveDefinite(triv="cayley"), (3, 3)),
    (PSSDFixedRank(2, triv="cayley"), (3, 3)),
    (LowRank(2, triv="cayley"), (4, 3)),
    (SL(triv="cayley"), (3, 3)),
    (AlmostOrthogonal(0.5, f="tanh", triv="cayley"), (3, 2)),
    (Positive(), (3,)),
    (Interval(0.0, 1.0), (3,)),
    (Simplex(), (2, 3)),
    (Cholesky(f="exp"), (3, 3)),
    (Ordered(), (4,)),
]


def test_x64_is_on():
    assert jnp.zeros(1).dtype == jnp.float64


@pytest.mark.parametrize("p, shape", CATALOG, ids=[f"{p!r}-{s}" for p, s in CATALOG])
def test_catalog_contract_float64(p, shape):
    check_parametrization(p, shape, KEY, dtype=F64)


def test_expm_float64_accuracy():
    g = jax.random.normal(jax.random.key(1), (2, 6, 6), F64)
    for scale in (1e-3, 1.0, 10.0):
        a = scale * (g - jnp.swapaxes(g, -1, -2))
        q = np.asarray(jax.jit(N.expm)(a))
        want = np.asarray(jax.vmap(jax.scipy.linalg.expm)(a))
        np.testing.assert_allclose(q, want, atol=1e-12 * max(1.0, scale))
        err = np.max(np.abs(np.swapaxes(q, -1, -2) @ q - np.eye(6)))
        assert err < 1e-13 * max(1.0, scale)


def test_so_round_trip_is_exact_to_float64_rounding():
    p = SO()
    q = p.sample(jax.random.key(2), (5, 5), F64)

    @jax.jit
    def round_trip(q):
        variables = p.init_variables(KEY, q)
        raw, state = p.apply_inverse(variables, q)
        return p.apply({"params": {}, "state": state}, raw + 1e-3)[0], raw

    moved, raw = round_trip(q)
    assert np.all(np.asarray(raw) == 0.0)
    assert float(jnp.max(jnp.abs(moved.T @ moved - jnp.eye(5)))) < 1e-14


def test_inv_softplus_float64_range():
    y = jnp.array([1e-300, 1e-100, 1e-12, 1.0, 30.0, 700.0, 1e10], F64)
    x = inv_softplus(y)
    assert np.all(np.isfinite(np.asarray(x)))
    np.testing.assert_allclose(
        jax.nn.softplus(x), y, rtol=1e-13
    )  # exp(-230) carries |x| * eps relative error
