"""Issue 16, open sets: every raw value maps onto the set, and a projection lands strictly inside
with a margin that keeps the raw value where gradients reach it.

Oracles are independent of the library: membership in numpy (float64, on the values the library
returned), closed forms (softplus, sigmoid), numpy SVD / eigh / det / Cholesky. The margin the
library documents is ``1e-2`` (float32) / ``0.2`` (half precision) relative to ``max(1, scale)``;
the rank floor of the fixed-rank entries ``1e-3`` (float32) / ``0.1`` (half precision).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import parametrax as px
from parametrax import tree as ptree

KEY = jax.random.key(0)
# raw values an optimizer reaches: Adam with a large learning rate moves ~lr per step
EXTREME = np.array([-1e4, -300.0, -104.0, -88.0, -20.0, 0.0, 20.0, 88.0, 300.0])


def f64(x):
    return np.asarray(jnp.asarray(x, jnp.float32), np.float64)


def softplus64(x):
    return np.logaddexp(0.0, np.asarray(x, np.float64))


def register(p, value, key=KEY):
    spec = {"w": p}
    raw, state = ptree.register(spec, {"w": jnp.asarray(value)}, key=key)
    return raw, state, f64(ptree.constrain(spec, raw, state)["w"])


def raw_of(raw):
    return f64(raw["parametrizations"]["w"]["original"])


# ------------------------------------------------------------------------------------------------
# Forward: any raw value maps onto the set
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("f", ["softplus", "exp"])
def test_positive_forward_of_any_raw_value_is_positive(f, dtype):
    x = jnp.asarray(EXTREME[:6], dtype)  # exp(20+) overflows float16; the low end is the point
    y = f64(px.Positive(f=f)(x))
    assert np.all(y > 0), y
    # unchanged where f(x) is a normal number (the clamp only replaces underflow)
    want = softplus64(f64(x)) if f == "softplus" else np.exp(f64(x))
    normal = want >= float(jnp.finfo(dtype).tiny)
    np.testing.assert_allclose(y[normal], want[normal], rtol=2 * float(jnp.finfo(dtype).eps))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_cholesky_forward_of_a_very_negative_diagonal_is_a_factor(dtype):
    x = jnp.asarray(np.diag([-1e4, -300.0, 0.0]) + np.tril(np.ones((3, 3)), -1), dtype)
    y = f64(px.Cholesky()(x))
    assert np.all(np.diag(y) > 0) and np.all(np.triu(y, 1) == 0), y


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_simplex_forward_of_extreme_logits_is_strictly_positive(dtype):
    x = jnp.asarray([[-300.0, 0.0, 300.0], [0.0, 0.0, 0.0], [-1e4, -1e4, 1e4]], dtype)
    y = f64(px.Simplex()(x))
    assert np.all(y > 0), y
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-2 if dtype == jnp.bfloat16 else 1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_ordered_forward_never_rounds_into_a_tie(dtype):
    # steps softplus(-300) = 0 and softplus(-5) far below an ulp of 1000: ties in plain cumsum
    x = jnp.asarray([[1000.0, -300.0, -300.0, -5.0, 2.0], [0.0, -1e4, -1e4, -1e4, -1e4]], dtype)
    y = f64(px.Ordered()(x))
    assert np.all(np.diff(y, axis=-1) > 0), y


def test_ordered_forward_keeps_a_strictly_increasing_result_bit_for_bit():
    x = jax.random.normal(KEY, (5, 7))
    o = px.Ordered()
    steps = softplus64(f64(x)[:, 1:])
    want = np.concatenate([f64(x)[:, :1], f64(x)[:, :1] + np.cumsum(steps, -1)], -1)
    np.testing.assert_allclose(f64(o(x)), want, rtol=1e-6, atol=1e-6)
    y = o(x)
    assert bool(jnp.all(o(o.right_inverse(y)) == y)) or np.allclose(
        f64(o(o.right_inverse(y))), f64(y), rtol=1e-6
    )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("ends", [(-1.0, 3.0), (0.1, 0.3), (-1e-3, 1e-3)])
def test_interval_forward_of_any_raw_value_is_strictly_inside(ends, dtype):
    # (0.1, 0.3) are not representable: the ends are compared in float64, as the set is
    lo, hi = ends
    y = f64(px.Interval(lo, hi)(jnp.asarray(EXTREME, dtype)).astype(jnp.float32))
    assert np.all((y > lo) & (y < hi)), y


def test_interval_without_a_representable_interior_is_refused():
    p = px.Interval(1.0, 1.0 + 1e-9)
    with pytest.raises(px.ParametrizationError, match="no float32 number lies strictly inside"):
        p(jnp.zeros(2, jnp.float32))
    with pytest.raises(px.ParametrizationError, match="bfloat16"):
        px.Interval(1.0, 1.001).right_inverse(jnp.ones(2, jnp.bfloat16))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_fixed_rank_forward_of_a_very_negative_singular_parameter_keeps_the_rank(dtype):
    x = jnp.asarray(np.diag([5.0, -300.0, 0.0])[:, :3], dtype)
    floor = 1e-3 if dtype == jnp.float32 else 0.1
    for p in (px.FixedRank(2), px.FixedRank(2, f="exp")):
        sv = np.linalg.svd(f64(p.forward(x)), compute_uv=False)
        assert sv[1] >= 0.99 * floor * sv[0] and sv[2] <= 1e-6 * sv[0], (p, sv)


def test_pssd_fixed_rank_forward_of_a_very_negative_eigen_parameter_keeps_the_rank():
    x = jnp.diag(jnp.array([-1e4, 3.0, 0.0], jnp.float32))
    w = np.linalg.eigvalsh(f64(px.PSSDFixedRank(2).forward(x)))
    assert w[1] >= 0.99e-3 * w[2] and abs(w[0]) <= 1e-6 * w[2], w


@pytest.mark.parametrize("f", ["softplus", "exp"])
def test_sl_forward_of_extreme_raw_values_is_finite_with_det_one(f):
    x = jnp.diag(jnp.array([-300.0, 0.0, 300.0], jnp.float32))
    y = f64(px.SL(f=f).forward(x))
    assert np.all(np.isfinite(y))
    assert abs(np.linalg.det(y) - 1) < 1e-4, np.linalg.det(y)


def test_positive_definite_forward_of_a_very_negative_eigen_parameter_is_positive():
    w = np.diag(f64(px.PositiveDefinite().forward(jnp.diag(jnp.array([-300.0, 1.0])))))
    assert np.all(w > 0), w


# ------------------------------------------------------------------------------------------------
# Right inverses: strictly inside, with a margin gradients reach; exact on the set
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,margin", [(jnp.float32, 1e-2), (jnp.bfloat16, 0.2)])
def test_positive_right_inverse_raises_off_set_values_to_the_margin(dtype, margin):
    p = px.Positive()
    y = jnp.asarray([-5.0, 0.0, -0.0, 1e-3, 1.0, 1e4], dtype)
    out = f64(p(p.right_inverse(y)))
    np.testing.assert_allclose(out[:3], margin, rtol=1e-2)
    # softplus(inv_softplus(y)) carries ~|log y| eps of conditioning (7 eps at 1e-3)
    np.testing.assert_allclose(out[3:], f64(y)[3:], rtol=16 * float(jnp.finfo(dtype).eps))
    raw = f64(p.right_inverse(y))[:3]
    assert np.all(1 / (1 + np.exp(-raw)) >= 0.9 * margin)  # softplus' at the raised raw values


def test_positive_right_inverse_is_exact_on_tiny_positive_values():
    y = jnp.array([1e-30, 1e-20, 1e-6], jnp.float32)
    np.testing.assert_allclose(
        f64(px.Positive()(px.Positive().right_inverse(y))), f64(y), rtol=1e-5
    )


def test_positive_registered_from_zeros_has_live_gradients():
    p = px.Positive()
    raw = p.right_inverse(jnp.zeros(4))
    g = f64(jax.grad(lambda r: jnp.sum(p(r)))(raw))
    assert np.all(g >= 9e-3), g  # softplus'(inv_softplus(1e-2)) = 1 - e^-0.01 ~ 1e-2


def test_interval_right_inverse_moves_off_set_values_the_margin_inside():
    p = px.Interval(-1.0, 3.0)
    y = f64(p(p.right_inverse(jnp.array([-7.0, -1.0, 3.0, 9.0, 0.5], jnp.float32))))
    np.testing.assert_allclose(y[:4], [-0.96, -0.96, 2.96, 2.96], rtol=1e-5)  # 1e-2 * width 4
    np.testing.assert_allclose(y[4], 0.5, rtol=1e-6)


@pytest.mark.parametrize("axis", [-1, 0])
def test_simplex_right_inverse_of_batched_values_with_zeros(axis):
    v = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5], [-1.0, 2.0, 2.0]])
    v = v if axis == -1 else v.T
    p = px.Simplex(axis=axis)
    y = f64(p(p.right_inverse(jnp.asarray(v, jnp.float32))))
    assert np.all(y > 0), y
    np.testing.assert_allclose(y.sum(axis), 1.0, atol=1e-6)
    yv = y if axis == -1 else y.T
    np.testing.assert_allclose(yv[0], 1 / 3, rtol=1e-6)  # no positive entry: uniform
    np.testing.assert_allclose(yv[2], [0.2, 0.3, 0.5], rtol=1e-5)  # on the set: exact
    np.testing.assert_allclose(yv[1], np.array([1e-2, 1, 1e-2]) / 1.02, rtol=1e-5)


def test_ordered_right_inverse_of_ties_and_decreases():
    p = px.Ordered()
    v = jnp.array([[0.0, 0.0, 0.0, 0.0], [3.0, 3.0, -1.0, 4.0]], jnp.float32)
    y = f64(p(p.right_inverse(v)))
    assert np.all(np.diff(y, axis=-1) > 0), y
    # raised steps are m * max(1, max|y|): 1e-2 for the zeros, 4e-2 for the second row; the
    # increasing step (-1 -> 4) is kept
    np.testing.assert_allclose(np.diff(y[0]), 1e-2, rtol=1e-4)
    np.testing.assert_allclose(y[1], [3.0, 3.04, 3.08, 8.08], rtol=1e-5)


def test_cholesky_right_inverse_of_a_negative_diagonal():
    v = np.array([[-2.0, 0.0, 0.0], [1.0, 0.0, 0.0], [3.0, -1.0, -4.0]], np.float32)
    p = px.Cholesky()
    raw = f64(p.right_inverse(jnp.asarray(v)))
    y = f64(p(jnp.asarray(raw, jnp.float32)))
    np.testing.assert_allclose(np.diag(y), 4e-2, rtol=1e-4)  # 1e-2 * max|tril(v)| = 4e-2
    np.testing.assert_allclose(np.tril(y, -1), np.tril(v, -1))
    np.linalg.cholesky(y @ y.T)  # positive definite
    assert np.all(np.diag(raw) > -4.0)  # inv_softplus(0.04) = -3.2: gradients reach it


@pytest.mark.parametrize("p", [px.FixedRank(2), px.FixedRank(2, f="exp")], ids=["softplus", "exp"])
@pytest.mark.parametrize("shape", [(5, 3), (3, 5)])
def test_fixed_rank_of_lower_rank_values_has_the_rank_with_a_margin(p, shape):
    rng = np.random.default_rng(0)
    for value in (
        np.zeros(shape),
        np.outer(rng.standard_normal(shape[0]), rng.standard_normal(shape[1])),
    ):
        _, _, y = register(p, value.astype(np.float32))
        sv = np.linalg.svd(y, compute_uv=False)
        assert sv[1] >= 0.99e-2 * max(1.0, sv[0]) and sv[2] <= 1e-5 * max(1.0, sv[0]), sv


def test_pssd_fixed_rank_of_a_rank_one_value_has_rank_two():
    v = np.outer([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]).astype(np.float32)
    _, _, y = register(px.PSSDFixedRank(2), v)
    w = np.linalg.eigvalsh(y)
    np.testing.assert_allclose(w[-1], 30.0, rtol=1e-4)  # the kept eigenvalue, exact
    np.testing.assert_allclose(w[-2], 1e-2 * 30.0, rtol=1e-3)  # raised to the margin
    assert np.all(np.abs(w[:2]) <= 1e-5 * 30.0), w


def test_positive_definite_of_singular_and_negative_values_is_positive_definite():
    for v in (np.zeros((3, 3)), -np.eye(3), np.outer([1.0, 2.0, 2.0], [1.0, 2.0, 2.0])):
        _, _, y = register(px.PositiveDefinite(), v.astype(np.float32))
        w = np.linalg.eigvalsh(0.5 * (y + y.T))
        assert w[0] >= 0.99e-2 * max(1.0, w[-1]), (v, w)


def test_invertible_of_a_rank_deficient_value_is_invertible():
    v = np.outer([1.0, 2.0, 3.0], [1.0, -1.0, 2.0]).astype(np.float32)
    _, _, y = register(px.Invertible(), v)
    sv = np.linalg.svd(y, compute_uv=False)
    assert np.linalg.det(y) > 0 and sv[-1] >= 0.99e-2 * sv[0], sv


def test_sl_of_a_rank_deficient_value_has_det_one():
    v = np.outer([1.0, 2.0, 3.0, 1.0], [1.0, -1.0, 2.0, 0.5]).astype(np.float32)
    for p in (px.SL(), px.SL(f="exp")):
        _, _, y = register(p, v)
        assert abs(np.linalg.det(y) - 1) < 1e-4, np.linalg.det(y)


def test_almost_orthogonal_projection_lands_inside_the_band_where_gradients_reach():
    v = np.diag([3.0, 1.0, 0.0]).astype(np.float32)
    for f in ("sin", "tanh", "scaled_sigmoid"):
        raw, _, y = register(px.AlmostOrthogonal(0.5, f=f), v)
        sv = np.linalg.svd(y, compute_uv=False)
        np.testing.assert_allclose(sv, [1 + 0.5 * 0.99, 1.0, 1 - 0.5 * 0.99], rtol=1e-5)
        s = np.diag(raw_of(raw))
        deriv = {
            "sin": np.cos(s),
            "tanh": 1 - np.tanh(s) ** 2,
            "scaled_sigmoid": 0.5 * (1 - np.tanh(s / 2) ** 2),
        }[f]
        assert np.all(np.abs(deriv) >= 5e-3), (f, s)


# ------------------------------------------------------------------------------------------------
# Half precision: the SVD / eigh entries compute in float32 and land on their sets
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize(
    "name",
    [
        "LowRank",
        "FixedRank",
        "Invertible",
        "SL",
        "AlmostOrthogonal",
        "PositiveDefinite",
        "PSSD",
        "PSSDLowRank",
        "PSSDFixedRank",
    ],
)
def test_half_precision_svd_and_eigh_entries_register_on_their_sets(name, dtype):
    p = {
        "LowRank": px.LowRank(2),
        "FixedRank": px.FixedRank(2),
        "Invertible": px.Invertible(),
        "SL": px.SL(),
        "AlmostOrthogonal": px.AlmostOrthogonal(0.5),
        "PositiveDefinite": px.PositiveDefinite(),
        "PSSD": px.PSSD(),
        "PSSDLowRank": px.PSSDLowRank(2),
        "PSSDFixedRank": px.PSSDFixedRank(2),
    }[name]
    v = 3.0 * np.random.default_rng(1).standard_normal((4, 4))
    raw, state, y = register(p, jnp.asarray(v, dtype))
    assert raw["parametrizations"]["w"]["original"].dtype == dtype
    assert np.all(np.isfinite(y))
    tol = 0.1  # a few bfloat16 ulps (2^-8) of a 4 x 4 product
    sv = np.linalg.svd(y, compute_uv=False)
    w = np.linalg.eigvalsh(0.5 * (y + y.T))
    scale = max(1.0, sv[0])
    if name in ("LowRank", "PSSDLowRank"):
        assert sv[2] <= tol * scale, sv
    if name in ("FixedRank", "PSSDFixedRank"):
        assert sv[2] <= tol * scale and sv[1] > tol * scale, sv
    if name == "Invertible":
        assert np.linalg.det(y) > 0
    if name == "SL":
        assert abs(np.linalg.det(y) - 1) <= 4 * tol
    if name == "AlmostOrthogonal":
        assert np.all(np.abs(sv - 1) <= 0.5 + tol), sv
    if name.startswith("P"):
        assert np.max(np.abs(y - y.T)) <= tol * scale and w[0] >= -tol * scale, w
    if name == "PositiveDefinite":
        assert w[0] > 0, w
    # the right inverse itself runs (no NotImplementedError from a half-precision SVD / eigh)
    # and a value on the set reads back as itself, to bfloat16 rounding of a 4 x 4 product
    on_set = p.sample(KEY, (4, 4), dtype)
    raw, state = p.apply_inverse(p.init_variables(KEY, on_set), on_set)
    assert raw.dtype == dtype
    back = f64(p.apply({"params": {}, "state": state}, raw)[0])
    np.testing.assert_allclose(back, f64(on_set), atol=tol * max(1.0, np.abs(f64(on_set)).max()))


def test_invertible_forward_of_a_very_negative_singular_parameter_stays_invertible():
    x = jnp.diag(jnp.array([3.0, -300.0, 1.0], jnp.float32))
    sv = np.linalg.svd(f64(px.Invertible().forward(x)), compute_uv=False)
    assert sv[-1] >= 0.99e-3 * sv[0], sv
