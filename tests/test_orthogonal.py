"""Orthogonal: closed forms, the manifold constraint, trivialization semantics, the linen wrapper,
training, and errors. (Side-by-side numbers against torch are in test_torch_parity.py.)"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import parametrax as px
from parametrax import tree as ptree
from parametrax.catalog.orthogonal import ORTHOGONAL_MAPS, Orthogonal

from _helpers import rand, standard_promotion

F32_ATOL = 1e-5
F32_RTOL = 1e-4
ORTH_TOL = 1e-5  # max |Q^H Q - I| for float32
KEY = jax.random.key(0)
MAPS = ORTHOGONAL_MAPS


def orth_err(q):
    """Deviation from orthonormal columns (tall) or rows (wide), over the whole batch."""
    q = np.asarray(q)
    if q.shape[-2] < q.shape[-1]:
        q = np.swapaxes(q, -1, -2)
    k = q.shape[-1]
    return float(np.max(np.abs(np.swapaxes(q, -1, -2).conj() @ q - np.eye(k))))


def qr_positive(w):
    """Closed-form oracle: the Q factor of w = QR with diag(R) > 0 (Q^T's for wide w)."""
    w = np.asarray(w, np.complex128 if np.iscomplexobj(w) else np.float64)
    wide = w.shape[-2] < w.shape[-1]
    if wide:
        w = np.swapaxes(w, -1, -2)
    q, r = np.linalg.qr(w)
    d = np.diagonal(r, axis1=-2, axis2=-1)
    q = q * (d / np.abs(d))[..., None, :]
    return np.swapaxes(q, -1, -2) if wide else q


def with_unit_diagonal(x):
    """Householder raw values are meant to keep a +-1 diagonal."""
    x = np.array(x)
    k = min(x.shape[-2:])
    idx = np.arange(k)
    x[..., idx, idx] = np.where(np.arange(k) % 2 == 0, 1.0, -1.0)
    return x


def constrained_after_register(p, w, key=KEY):
    raw, state = ptree.register({"w": p}, {"w": w}, key=key)
    return raw, state, ptree.constrain({"w": p}, raw, state)["w"]


# --- the default rule and closed forms ------------------------------------------------------
def test_default_map_is_torchs_rule():
    p = Orthogonal()
    assert p.resolved_map(jnp.ones((4, 4))) == "matrix_exp"
    assert p.resolved_map(jnp.ones((5, 3))) == "householder"
    assert p.resolved_map(jnp.ones((3, 5))) == "householder"
    assert p.resolved_map(jnp.ones((5, 3), jnp.complex64)) == "matrix_exp"
    assert Orthogonal("cayley").resolved_map(jnp.ones((5, 3))) == "cayley"


def test_matrix_exp_2x2_is_a_rotation():
    # tril keeps b = x[1, 0]; A = [[0, -b], [b, 0]]; expm(A) is the rotation by b
    b = 0.7
    q = Orthogonal("matrix_exp", False)(jnp.array([[0.3, 9.0], [b, -2.0]]))
    np.testing.assert_allclose(q, [[np.cos(b), -np.sin(b)], [np.sin(b), np.cos(b)]], atol=1e-6)


def test_cayley_2x2_uses_half_a():
    b = 0.7
    th = 2 * np.arctan(b / 2)  # (I - A/2)^-1 (I + A/2) with A = [[0, -b], [b, 0]]
    q = Orthogonal("cayley", False)(jnp.array([[0.3, 9.0], [b, -2.0]]))
    np.testing.assert_allclose(q, [[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]], atol=1e-6)


def test_householder_one_column_closed_form():
    a, d = 0.6, -1.0
    tau = 2 / (1 + a * a)
    q = Orthogonal("householder", False)(jnp.array([[d], [a], [0.0]]))
    np.testing.assert_allclose(q[:, 0], d * np.array([1 - tau, -tau * a, 0.0]), atol=1e-6)


def _reflector_product_f64(x):
    """H_1 ... H_k E in float64, one explicit reflector at a time (torch's householder map with
    the diagonal left out): H_j = I - 2 v v^T / v^T v, v = e_j + tril(x, -1)[:, j]."""
    x = np.asarray(x, np.float64)
    n, k = x.shape
    vs = np.tril(x, -1) + np.eye(n, k)
    q = np.eye(n)
    for j in range(k):
        v = vs[:, j]
        q = q - 2.0 * np.outer(q @ v, v) / (v @ v)
    return q[:, :k]


@pytest.mark.parametrize("shape", [(6, 6), (9, 4), (64, 64), (200, 48)])
@pytest.mark.parametrize("scale", [1e-3, 0.1, 1.0, 30.0])
def test_householder_product_matches_explicit_reflectors(shape, scale):
    # the compact WY form in the library against the textbook product, float64
    x = rand(7, shape) * np.float32(scale)
    x[np.arange(shape[1]), np.arange(shape[1])] = 1.5  # torch's int(diag) = 1: no sign flips
    q = np.asarray(Orthogonal("householder", False)(jnp.asarray(x)), np.float64)
    np.testing.assert_allclose(q, _reflector_product_f64(x), atol=2e-6)
    assert orth_err(q) < 3e-6


def test_householder_batched_matches_explicit_reflectors():
    x = rand(8, (3, 2, 7, 5)) * np.float32(0.3)
    q = np.asarray(Orthogonal("householder", False)(jnp.asarray(x)))
    for idx in np.ndindex(3, 2):
        sub = x[idx].copy()
        d = np.where(np.diagonal(sub) < 0, -1.0, 1.0)  # column j times sign(diag_j), sign(0)=1
        np.testing.assert_allclose(q[idx], _reflector_product_f64(sub) * d, atol=2e-6)


def test_householder_backward_memory_is_linear_in_the_matrix():
    # One n x k buffer per reflector would be k * n * k floats (67 MB at 256 x 256); the
    # compact WY form needs a few n x k buffers. XLA's own accounting of the compiled gradient.
    n = 256
    w = jnp.ones((n, n), jnp.float32)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(Orthogonal("householder", False)(x) * w)))
    temp = grad.lower(jnp.zeros((n, n), jnp.float32)).compile().memory_analysis()
    if temp is None:
        pytest.skip("backend without memory analysis")
    assert temp.temp_size_in_bytes <= 16 * n * n * 4, temp.temp_size_in_bytes


def test_complex_matrix_exp_1x1_is_a_phase():
    z = 0.3 + 0.8j
    q = Orthogonal("matrix_exp", False)(jnp.array([[z]], jnp.complex64))
    np.testing.assert_allclose(q, [[np.exp(2j * z.imag)]], atol=1e-6)


def test_householder_scales_columns_by_the_sign_of_the_diagonal():
    # Not torch's int(diag) (which gives column scales 0, -1, 2 here): sign with sign(0) = +1,
    # so every finite raw diagonal gives orthonormal columns.
    x = np.zeros((5, 4), np.float32)
    x[np.arange(4), np.arange(4)] = [0.5, -1.7, 2.3, 0.0]
    q = np.asarray(Orthogonal("householder", False)(x), np.float64)
    np.testing.assert_allclose(q.T @ q, np.eye(4), atol=1e-6)
    # zero tails: v_j = e_j, H_j flips e_j, so Q = -E times the signs
    np.testing.assert_allclose(q, -np.eye(5, 4) * [1.0, -1.0, 1.0, 1.0], atol=1e-7)
    g = jax.grad(lambda y: jnp.sum(Orthogonal("householder", False)(y) * 3.0))(jnp.asarray(x))
    assert np.all(np.diagonal(np.asarray(g)) == 0)  # the signs get no gradient


@pytest.mark.parametrize("decay", ["adamw", "lion"])
def test_householder_stays_orthonormal_under_weight_decay(decay):
    # torch's defect: the stored -1 decays to -0.9999999, int() gives 0, the column vanishes.
    tx = {
        "adamw": standard_promotion(optax.adamw(1e-3, weight_decay=1e-2)),
        "lion": optax.lion(1e-3, weight_decay=1.0),
    }[decay]
    p = Orthogonal("householder", False)
    x = p.right_inverse(jnp.asarray(rand(3, (6, 3))))
    assert set(np.abs(np.diagonal(np.asarray(x))).tolist()) == {1.0}
    opt = tx.init(x)
    for _ in range(3):
        upd, opt = tx.update(jnp.zeros_like(x), opt, x)  # only the decay moves x
        x = optax.apply_updates(x, upd)
    assert np.all(np.abs(np.diagonal(np.asarray(x))) < 1)  # trunc would give 0 columns
    assert orth_err(np.asarray(p(x), np.float64)) < 1e-5


@pytest.mark.parametrize("shape", [(4, 4), (6, 3), (3, 6)])
@pytest.mark.parametrize("triv", [True, False])
@pytest.mark.parametrize("m", MAPS)
def test_rank_deficient_values_give_orthonormal_columns(m, triv, shape):
    # sign(0) = 0 in the QR sign fix (and in the Householder reflectors) zeroed these columns
    rng = np.random.default_rng(4)
    low = np.outer(rng.standard_normal(shape[0]), rng.standard_normal(shape[1]))
    col0 = rng.standard_normal(shape)
    col0[:, 1] = 0.0
    p = Orthogonal(m, triv)
    for w in (np.zeros(shape), low, col0):
        raw, state = ptree.register({"w": p}, {"w": jnp.asarray(w, jnp.float32)}, key=KEY)
        q = np.asarray(ptree.constrain({"w": p}, raw, state)["w"], np.float64)
        assert np.all(np.isfinite(q)) and orth_err(q) < 1e-5


# --- the constraint holds for generic raw values ---------------------------------------------
CONSTRAINT_CASES = [
    (m, shape, dt)
    for m in MAPS
    for shape in [(4, 4), (2, 3, 5)]
    for dt in (jnp.float32, jnp.complex64)
    if not (m == "householder" and dt == jnp.complex64)
]


@pytest.mark.parametrize("m,shape,dt", CONSTRAINT_CASES, ids=str)
def test_orthogonal_for_generic_raw_and_base(m, shape, dt):
    x = rand(1, shape, dt)
    if m == "householder":
        x = with_unit_diagonal(x)
    n = max(shape[-2:])
    base = qr_positive(rand(2, shape[:-2] + (n, n), dt)).astype(dt)
    p = Orthogonal(m)
    q, state = p.apply({"params": {}, "state": {"base": base}}, x)
    assert q.shape == shape and q.dtype == dt
    assert orth_err(q) < ORTH_TOL
    assert state["base"] is base  # the base only moves through the right inverse
    # torch's trivialization start value: all three maps send -I to eye(n, k), so the value is
    # the first k columns of the base (tall view)
    minus_eye = np.broadcast_to(-np.eye(*shape[-2:], dtype=dt), shape)
    q0, _ = p.apply({"params": {}, "state": {"base": base}}, minus_eye)
    k = min(shape[-2:])
    first_k = base[..., :, :k]
    expected = first_k if shape[-2] >= shape[-1] else np.swapaxes(first_k, -1, -2)
    np.testing.assert_allclose(q0, expected, atol=1e-6)


def test_identity_base_equals_no_trivialization_exactly():
    x = rand(1, (4, 4))
    eye = np.eye(4, dtype=np.float32)
    np.testing.assert_array_equal(
        Orthogonal("cayley").apply({"params": {}, "state": {"base": eye}}, x)[0],
        Orthogonal("cayley", False)(x),
    )


@pytest.mark.parametrize("m", ["cayley", "householder"])
def test_batch_equals_vmap_and_jit_equals_eager(m):
    x = with_unit_diagonal(rand(3, (3, 5, 2)))
    f = Orthogonal(m, use_trivialization=False)
    batched = f(x)
    np.testing.assert_allclose(jax.vmap(f)(x), batched, atol=1e-6)
    np.testing.assert_allclose(jax.jit(f)(x), batched, atol=1e-6)


# --- gradients (torch's test_orthogonal_parametrization structure) ----------------------------
@pytest.mark.parametrize(
    "m,shape",
    # (matrix_exp: the same structure is asserted on its gradients in test_torch_parity.py)
    [("cayley", (5, 3)), ("cayley", (3, 5)), ("householder", (5, 3)), ("householder", (3, 5))],
    ids=str,
)
def test_gradient_structure(m, shape):
    x = with_unit_diagonal(rand(4, shape))
    c = rand(5, shape)
    g = np.asarray(jax.grad(lambda x: jnp.sum(Orthogonal(m, False)(x) * c))(x))
    tall_g = g if shape[0] >= shape[1] else g.T
    assert np.all(np.triu(tall_g, 1) == 0)  # the strict upper part (tall view) is not read
    assert np.all(np.diagonal(tall_g) == 0)  # diagonal: cancels (skew) or .int() (householder)
    assert np.max(np.abs(g)) > 0


def test_complex_gradient_has_zero_real_diagonal():
    x = rand(6, (4, 4), jnp.complex64)
    c = rand(7, (4, 4), jnp.complex64)
    g = jax.grad(lambda x: jnp.sum(jnp.real(Orthogonal("cayley", False)(x) * c)))(x)
    assert np.all(np.real(np.diagonal(g)) == 0)
    assert np.max(np.abs(np.imag(np.diagonal(g)))) > 0


# --- initialization and assignment ------------------------------------------------------------
@pytest.mark.parametrize(
    "p,shape",
    [
        (Orthogonal(), (5, 3)),  # householder, trivialized
        (Orthogonal("cayley"), (2, 3, 5)),
        (Orthogonal("householder", False), (3, 5)),
    ],
    ids=repr,
)
def test_non_orthogonal_initial_value_becomes_its_qr_q(p, shape):
    w = rand(8, shape)
    _, _, q = constrained_after_register(p, w)
    np.testing.assert_allclose(q, qr_positive(w), atol=F32_ATOL)


def test_complex_initial_value_becomes_its_qr_q():
    w = rand(9, (5, 3), jnp.complex64)
    _, _, q = constrained_after_register(Orthogonal(), w)
    np.testing.assert_allclose(q, qr_positive(w), atol=F32_ATOL)


def test_square_orthogonal_initial_value_kept_exactly():
    w = qr_positive(rand(10, (4, 4))).astype(np.float32)
    w[:, 1] *= -1  # det -1, negative "R diagonal": kept as is
    raw, state, q = constrained_after_register(Orthogonal(), w)
    np.testing.assert_array_equal(state["parametrizations"]["w"]["0"]["base"], w)
    np.testing.assert_array_equal(raw["parametrizations"]["w"]["original"], -np.eye(4))
    np.testing.assert_allclose(q, w, atol=1e-6)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5)], ids=str)
def test_orthonormal_non_square_value_reproduced_and_base_kept_as_its_frame(shape):
    # issue 12: the base of a non-square value is kept as its n x k frame (tall view), never
    # n x n; at raw = -I the value is that frame, bit for bit
    w = qr_positive(rand(11, shape)).astype(np.float32)
    w[..., 0] *= -1  # not the positive-R normalisation: still reproduced
    raw, state, q = constrained_after_register(Orthogonal("cayley"), w)
    np.testing.assert_allclose(q, w, atol=F32_ATOL)
    base = np.asarray(state["parametrizations"]["w"]["0"]["base"])
    tall_q = np.asarray(q) if shape[0] >= shape[1] else np.asarray(q).T
    assert base.shape == (5, 3) and orth_err(base) < ORTH_TOL
    np.testing.assert_array_equal(tall_q, base)
    np.testing.assert_array_equal(raw["parametrizations"]["w"]["original"], -np.eye(*shape))


def test_frame_base_needs_no_key_and_is_the_qr_q():
    # the frame is the value's QR Q factor (diag(R) > 0), the same for every key; the
    # completion to n x n is the frame's Householder completion, not random columns, and
    # assignment needs no key
    w = rand(12, (5, 3))
    spec = {"w": Orthogonal()}
    raw, state = ptree.register(spec, {"w": w}, key=KEY)
    raw2, state2 = ptree.assign(spec, raw, state, {"w": rand(13, (5, 3))})  # no key
    assert state2["parametrizations"]["w"]["0"]["base"].shape == (5, 3)
    for key in (jax.random.key(1), jax.random.key(2)):
        b = ptree.register(spec, {"w": w}, key=key)[1]
        np.testing.assert_array_equal(
            b["parametrizations"]["w"]["0"]["base"], state["parametrizations"]["w"]["0"]["base"]
        )
    np.testing.assert_allclose(
        state["parametrizations"]["w"]["0"]["base"], qr_positive(w), atol=F32_ATOL
    )


@pytest.mark.parametrize("m", MAPS)
def test_dynamic_trivialization_moves_the_base(m):
    p = Orthogonal(m)
    spec = {"w": p}
    raw, state, _ = constrained_after_register(p, rand(13, (4, 4)))
    x = with_unit_diagonal(-np.eye(4) + 0.3 * rand(14, (4, 4))).astype(np.float32)
    moved = {"parametrizations": {"w": {"original": x}}}
    current = ptree.constrain(spec, moved, state)["w"]
    raw2, state2 = ptree.assign(spec, moved, state, {"w": current})
    np.testing.assert_allclose(ptree.constrain(spec, raw2, state2)["w"], current, atol=F32_ATOL)
    np.testing.assert_array_equal(raw2["parametrizations"]["w"]["original"], -np.eye(4))
    np.testing.assert_allclose(state2["parametrizations"]["w"]["0"]["base"], current, atol=F32_ATOL)


def test_assign_random_matrix_gives_its_qr_q():
    p = Orthogonal("householder", use_trivialization=False)
    raw, state, _ = constrained_after_register(p, rand(15, (5, 3)))
    r = rand(16, (5, 3))
    raw2, state2 = ptree.assign({"w": p}, raw, state, {"w": r})
    q = ptree.constrain({"w": p}, raw2, state2)["w"]
    np.testing.assert_allclose(q, qr_positive(r), atol=F32_ATOL)


# --- the linen wrapper ------------------------------------------------------------------------
X = jnp.ones((2, 4))


def test_linen_dense_layout_and_init_is_qr_of_the_plain_kernel():
    layer = px.Parametrized(nn.Dense, {"kernel": Orthogonal()})(features=3)
    v = layer.init(KEY, X)
    assert jax.tree.map(jnp.shape, v) == {
        "params": {"bias": (3,), "parametrizations": {"kernel": {"original": (4, 3)}}},
        "parametrization_state": {"parametrizations": {"kernel": {"0": {"base": (4, 3)}}}},
    }
    plain = nn.Dense(3).init(KEY, X)["params"]["kernel"]
    k = px.linen.constrain(layer, v)["params"]["kernel"]
    np.testing.assert_allclose(k, qr_positive(plain), atol=F32_ATOL)  # no transpose anywhere
    y = layer.apply(v, X)
    np.testing.assert_allclose(y, X @ k + v["params"]["bias"], atol=1e-6)


def test_linen_remove_leave_parametrized_false_gives_minus_identity():
    layer = px.Parametrized(nn.Dense(3), {"kernel": Orthogonal()})
    v = layer.init(KEY, X)
    _, plain = px.linen.remove_parametrizations(layer, v, leave_parametrized=False)
    np.testing.assert_array_equal(plain["params"]["kernel"], -np.eye(4, 3))  # torch's quirk
    _, plain = px.linen.remove_parametrizations(layer, v)
    k = px.linen.constrain(layer, v)["params"]["kernel"]
    np.testing.assert_allclose(plain["params"]["kernel"], k)


TRAIN_CASES = [  # every map, with its base point (square, wide and tall kernels)
    ("matrix_exp", True, 4),
    ("cayley", True, 6),
    ("householder", True, 2),
]


@pytest.mark.parametrize(
    "m,triv,features", TRAIN_CASES, ids=[f"{m}-{t}-{f}" for m, t, f in TRAIN_CASES]
)
def test_adam_200_steps_under_jit_stays_orthogonal(m, triv, features):
    layer = px.Parametrized(nn.Dense, {"kernel": Orthogonal(m, use_trivialization=triv)})(
        features=features
    )
    x = rand(17, (16, 4))
    y = rand(18, (16, features))
    v = jax.jit(layer.init)(KEY, x)
    params, rest = v["params"], {k: a for k, a in v.items() if k != "params"}
    opt = standard_promotion(optax.adam(3e-2))

    def loss(params):
        return jnp.mean((layer.apply({"params": params, **rest}, x) - y) ** 2)

    @jax.jit
    def train(params):
        def step(carry, _):
            params, state = carry
            l, g = jax.value_and_grad(loss)(params)
            updates, state = opt.update(g, state, params)
            params = optax.apply_updates(params, updates)
            k = px.linen.constrain(layer, {"params": params, **rest})["params"]["kernel"]
            kk = k if k.shape[0] >= k.shape[1] else k.T
            err = jnp.max(jnp.abs(kk.T @ kk - jnp.eye(kk.shape[1])))
            return (params, state), (l, err)

        return jax.lax.scan(step, (params, opt.init(params)), None, length=200)

    (params, _), (losses, errs) = train(params)
    assert float(jnp.max(errs)) < ORTH_TOL  # after every one of the 200 steps
    assert float(losses[-1]) < float(losses[0])
    raw = params["parametrizations"]["kernel"]["original"]
    raw0 = v["params"]["parametrizations"]["kernel"]["original"]
    assert float(jnp.max(jnp.abs(raw - raw0))) > 1e-2  # the raw values did move


# --- configuration --------------------------------------------------------------------------
def test_equal_configs_hash_equal_and_trace_once():
    a, b = Orthogonal("cayley", False), Orthogonal(map="cayley", use_trivialization=False)
    assert a == b and hash(a) == hash(b) and a is not b
    assert Orthogonal() != Orthogonal(use_trivialization=False)
    traces = []

    def f(p, x):
        traces.append(1)
        return p(x)

    jf = jax.jit(f, static_argnums=0)
    jf(a, jnp.ones((3, 2)))
    jf(b, jnp.ones((3, 2)))
    assert len(traces) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.map = "householder"


def test_has_variables_only_with_trivialization():
    assert Orthogonal().has_variables and not Orthogonal(use_trivialization=False).has_variables


# --- errors -----------------------------------------------------------------------------------
def test_error_unknown_map_lists_valid_names():
    valid = '"matrix_exp", "cayley", "householder" or None; got \'foo\''
    with pytest.raises(px.ParametrizationError, match=valid):
        Orthogonal("foo")


def test_error_use_trivialization_not_bool():
    with pytest.raises(px.ParametrizationTypeError, match="`use_trivialization` must be a bool"):
        Orthogonal(use_trivialization=1)


@pytest.mark.parametrize("p", [Orthogonal(), Orthogonal("householder", False)], ids=repr)
def test_error_vector(p):
    with pytest.raises(px.ShapeError, match=r"acts on matrices .* shape \(3,\) with 1 dimension"):
        ptree.register({"b": p}, {"b": jnp.ones(3)}, key=KEY)


def test_error_vector_through_linen_stores_nothing():
    layer = px.Parametrized(nn.Dense(3), {"bias": Orthogonal()})
    with pytest.raises(px.ShapeError, match=r"`ParametrizedDense`.*`bias`.*acts on matrices"):
        layer.init(KEY, X)


def test_error_complex_householder():
    with pytest.raises(px.ShapeError, match="householder parametrization does not support complex"):
        Orthogonal("householder", False)(jnp.ones((4, 3), jnp.complex64))


def test_error_integer_dtype():
    with pytest.raises(px.ShapeError, match="floating-point or complex"):
        Orthogonal(use_trivialization=False)(jnp.ones((3, 3), jnp.int32))


def test_error_called_directly_with_trivialization():
    with pytest.raises(px.ParametrizationTypeError, match="owns variables"):
        Orthogonal()(jnp.ones((3, 3)))
    with pytest.raises(px.ParametrizationTypeError, match="apply_inverse"):
        Orthogonal().right_inverse(jnp.eye(3))


def test_error_bad_base():
    msg = r"base point has shape \(3, 3\).*needs a base of shape \(5, 3\) \(or a whole base of shape \(5, 5\)\)"
    with pytest.raises(px.ShapeError, match=msg):
        Orthogonal().apply({"params": {}, "state": {"base": jnp.eye(3)}}, jnp.ones((5, 3)))
    with pytest.raises(px.ParametrizationError, match="needs its state `base`"):
        Orthogonal().apply({"params": {}, "state": {}}, jnp.ones((5, 3)))


def _frozen(tree):
    return jax.tree.map(np.array, tree)


def test_error_assign_wrong_shape_changes_nothing():
    layer = px.Parametrized(nn.Dense(3), {"kernel": Orthogonal()})
    v = layer.init(KEY, X)
    before = _frozen(v)
    with pytest.raises(px.ShapeError, match=r"has shape \(5, 5\).*expected shape \(4, 3\)"):
        px.linen.assign(layer, v, {"kernel": jnp.ones((5, 5))}, key=KEY)
    jax.tree.map(np.testing.assert_array_equal, v, before)


def test_error_assign_without_key_to_a_whole_non_square_base_changes_nothing():
    # a state holding a whole n x n base (torch's layout) keeps it at assignment: its random
    # completion needs a key; the frame registration makes needs none
    layer = px.Parametrized(nn.Dense(3), {"kernel": Orthogonal()})
    v = layer.init(KEY, X)
    v2 = px.linen.assign(layer, v, {"kernel": jnp.eye(4, 3)})  # frame: no key needed
    np.testing.assert_array_equal(px.linen.constrain(layer, v2)["params"]["kernel"], jnp.eye(4, 3))
    st = {"parametrizations": {"kernel": {"0": {"base": jnp.eye(4)}}}}
    v = {**v, "parametrization_state": st}
    before = _frozen(v)
    with pytest.raises(px.ParametrizationError, match="needs a PRNG key; pass `key=`"):
        px.linen.assign(layer, v, {"kernel": jnp.eye(4, 3)})
    jax.tree.map(np.testing.assert_array_equal, v, before)
    v3 = px.linen.assign(layer, v, {"kernel": jnp.eye(4, 3)}, key=KEY)
    assert v3["parametrization_state"]["parametrizations"]["kernel"]["0"]["base"].shape == (4, 4)


@pytest.mark.parametrize("m", ["matrix_exp", "cayley"])
def test_error_assign_without_trivialization_is_not_implemented(m):
    layer = px.Parametrized(nn.Dense(3), {"kernel": Orthogonal(m, use_trivialization=False)})
    v = layer.init(KEY, X)  # registration swallows it: the initial kernel is the raw value
    plain = nn.Dense(3).init(KEY, X)["params"]["kernel"]
    np.testing.assert_array_equal(v["params"]["parametrizations"]["kernel"]["original"], plain)
    before = _frozen(v)
    # has_right_inverse is false, so the chain refuses before calling anything ...
    assert not Orthogonal(m, use_trivialization=False).has_right_inverse
    with pytest.raises(px.RightInverseError, match="`Orthogonal` does not implement right_inverse"):
        px.linen.assign(layer, v, {"kernel": jnp.eye(4, 3)}, key=KEY)
    jax.tree.map(np.testing.assert_array_equal, v, before)
    # ... and calling the right inverse directly gives torch's message.
    msg = "not possible to assign to the matrix exponential or the Cayley"
    with pytest.raises(NotImplementedError, match=msg):
        Orthogonal(m, use_trivialization=False).right_inverse(jnp.eye(4, 3))


@pytest.mark.parametrize("m", ORTHOGONAL_MAPS)
@pytest.mark.parametrize("dt", [jnp.bfloat16, jnp.float16])
def test_half_precision_is_computed_in_float32(m, dt):
    """One dtype rule with Cayley/MatrixExp: bfloat16/float16 are widened to float32 for the
    maths and cast back (no deep jax.scipy / LAPACK TypeError)."""
    w = jax.random.normal(KEY, (5, 3))
    for triv in (False, True):
        p = Orthogonal(m, use_trivialization=triv)
        raw, st = ptree.register({"w": p}, {"w": w.astype(dt)}, key=KEY)
        q = ptree.constrain({"w": p}, raw, st)["w"]
        assert q.dtype == dt
        want = ptree.constrain({"w": p}, *ptree.register({"w": p}, {"w": w}, key=KEY))["w"]
        np.testing.assert_allclose(np.asarray(q, np.float32), want, atol=2e-2)
        qf = np.asarray(q, np.float32)
        np.testing.assert_allclose(qf.T @ qf, np.eye(3), atol=3e-2)


# --- the tutorial's Cayley map: values with an eigenvalue -1 are refused ------------------------
def _rotation(theta, n=3):
    q = np.eye(n)
    q[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    return q.astype(np.float32)


def _det_minus_one(n, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) > 0:
        q[:, 0] *= -1
    return q.astype(np.float32)


@pytest.mark.parametrize(
    "value",
    [
        _rotation(np.pi),
        -np.eye(4, dtype=np.float32),
        np.eye(4, dtype=np.float32)[[1, 0, 3, 2]],
        _det_minus_one(5, 0),
        _rotation(np.pi - 1e-4),
    ],
    ids=["pi", "-I", "perm", "det-1", "pi-1e-4"],
)
def test_cayley_right_inverse_refuses_an_eigenvalue_minus_one(value):
    with pytest.raises(px.RightInverseError, match=r'eigenvalue .*-1.*Orthogonal\(map="cayley"\)'):
        px.cayley.right_inverse(jnp.asarray(value))
    with pytest.raises(px.RightInverseError, match="eigenvalue"):
        ptree.register({"w": [px.skew, px.cayley]}, {"w": jnp.asarray(value)})


def test_cayley_right_inverse_keeps_values_short_of_the_bound():
    # an angle pi - d has raw eigenvalue cot(d / 2): 200 at d = 0.01, kept and exact
    value = _rotation(np.pi - 1e-2)
    x = np.asarray(px.cayley.right_inverse(jnp.asarray(value)), np.float64)
    np.testing.assert_allclose(np.linalg.norm(x, 2), 1 / np.tan(5e-3), rtol=1e-3)
    eye = np.eye(3)
    np.testing.assert_allclose(np.linalg.solve(eye - x, eye + x), value, atol=1e-5)


def test_cayley_right_inverse_batched_names_the_bad_matrix_and_nans_under_jit():
    batch = jnp.stack([jnp.eye(3), jnp.asarray(_rotation(np.pi)), jnp.asarray(_rotation(0.3))])
    with pytest.raises(px.RightInverseError, match=r"batch index \(1,\)"):
        px.cayley.right_inverse(batch)
    out = np.asarray(jax.jit(px.cayley.right_inverse)(batch))  # cannot raise: NaN, not huge
    assert np.all(np.isnan(out[1])) and np.all(np.isfinite(out[[0, 2]]))
    np.testing.assert_allclose(out[0], 0.0, atol=1e-7)


@pytest.mark.parametrize("scale", [10.0, 1e2, 1e3, 1e4])
def test_matrix_exp_orthogonality_within_the_documented_bound(scale):
    # The docstring's measured range: max |Q^T Q - I| <= 1.5e-7 ||A||_1 in float32 (no
    # re-orthogonalisation: each squaring doubles the rounding error).
    x = rand(11, (4, 6, 6)) * np.float32(scale)
    a = np.tril(x, -1) - np.swapaxes(np.tril(x, -1), -1, -2)
    norm1 = np.max(np.sum(np.abs(a), axis=-2), axis=-1)
    q = np.asarray(Orthogonal("matrix_exp", False)(jnp.asarray(x)), np.float64)
    for qi, ni in zip(q, norm1):
        assert orth_err(qi) <= 1.5e-7 * ni + 1e-6


@pytest.mark.parametrize("m", ["matrix_exp", "cayley"])
def test_complex_zero_and_batched_rank_deficient_values_are_unitary(m):
    z = np.zeros((2, 5, 3), np.complex64)
    z[1] = rand(12, (5, 3)) + 1j * rand(13, (5, 3))
    z[1][:, 2] = 0
    p = Orthogonal(m)
    raw, state = ptree.register({"w": p}, {"w": jnp.asarray(z)}, key=KEY)
    q = np.asarray(ptree.constrain({"w": p}, raw, state)["w"])
    assert np.all(np.isfinite(q)) and orth_err(q) < 1e-5
