"""SpectralNorm and WeightNorm: closed forms, state semantics (train/eval), layouts, the linen
wrapper, gradients and errors. (Side-by-side numbers against torch are in test_torch_parity.py.)"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import parametrax as px
from parametrax import AxisError
from parametrax import tree as ptree
from parametrax.catalog.norms import SpectralNorm, WeightNorm

from _helpers import rand, standard_promotion

F32_ATOL = 1e-5
F32_RTOL = 1e-4
KEY = jax.random.key(0)
STATE = px.linen.STATE_COLLECTION


def unit(seed, n):
    x = rand(seed, (n,))
    return (x / np.linalg.norm(x)).astype(np.float32)


def close(a, b, rtol=F32_RTOL, atol=F32_ATOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def variables(state):
    return {"params": {}, "state": state}


# ================================================================================================
# SpectralNorm
# ================================================================================================
def power_closed_form(w, v0, k):
    """After k iterations from v0: v_k ∝ (W^T W)^k v0, u_k ∝ W v_{k-1} (numpy, float64)."""
    w = np.asarray(w, np.float64)
    v = np.asarray(v0, np.float64)
    for _ in range(k - 1):
        v = w.T @ (w @ v)
    u = w @ v
    u /= np.linalg.norm(u)
    v = w.T @ u
    return u, v / np.linalg.norm(v)


@jax.jit
def _train3(w, state):
    p = SpectralNorm()
    for _ in range(3):
        _, state = p.apply(variables(state), w, update_state=True)
    return p.apply(variables(state), w, update_state=False)


def test_power_iteration_closed_form_and_iterations_per_apply():
    w = rand(0, (3, 5))  # read as a Flax kernel (in=3, out=5): the matrix is w.T (5, 3)
    u0, v0 = unit(1, 5), unit(2, 3)
    out, state = _train3(jnp.asarray(w), {"u": u0, "v": v0})
    u, v = power_closed_form(w.T, v0, 3)  # three applies = three iterations
    close(state["u"], u)
    close(state["v"], v)
    sigma = u @ w.T @ v
    close(out, w / sigma)


def test_n_power_iterations_per_apply():
    w = rand(3, (4, 4))
    u0, v0 = unit(4, 4), unit(5, 4)
    p = SpectralNorm(n_power_iterations=4)
    out, state = p.apply(variables({"u": u0, "v": v0}), w, update_state=True)
    u, v = power_closed_form(w.T, v0, 4)
    close(state["u"], u)
    close(state["v"], v)


def test_eval_reuses_stored_vectors_and_changes_nothing():
    w = rand(6, (4, 3))
    st = {"u": unit(7, 3), "v": unit(8, 4)}
    out, new = SpectralNorm().apply(variables(st), w, update_state=False)
    assert new is st
    close(out, w / (st["u"] @ w.T @ st["v"]))  # sigma from the stored (inconsistent) u, v: no abs


def test_init_runs_15_warm_up_iterations_and_estimates_sigma():
    # a clear spectral gap: 15 iterations converge
    u_, _, vh = np.linalg.svd(rand(9, (6, 6)))
    w = (u_ @ np.diag([5.0, 1.0, 0.5, 0.2, 0.1, 0.0]) @ vh).astype(np.float32)
    st = SpectralNorm().init_variables(KEY, w)["state"]
    assert st["u"].shape == (6,) and st["v"].shape == (6,)
    out, _ = SpectralNorm().apply(variables(st), w)
    close(np.linalg.norm(np.asarray(out), 2), 1.0, atol=1e-4)


def test_registration_with_state_update_iterates_once_more():
    w = rand(10, (5, 3))
    spec = {"w": SpectralNorm()}
    _, st15 = ptree.register(spec, {"w": w}, key=KEY)
    _, st16 = ptree.register(spec, {"w": w}, key=KEY, update_state=True)
    s15 = st15["parametrizations"]["w"]["0"]
    u, v = power_closed_form(w.T, s15["v"], 1)  # one more iteration from the 15-iteration state
    close(st16["parametrizations"]["w"]["0"]["u"], u)
    close(st16["parametrizations"]["w"]["0"]["v"], v)


def test_gradient_treats_u_v_as_constants():
    w = rand(11, (4, 3))  # kernel (in=4, out=3): matrix W = w.T (3, 4)
    r = rand(12, (4, 3))
    st = {"u": unit(13, 3), "v": unit(14, 4)}
    p = SpectralNorm()

    def loss(w, update):
        out, _ = p.apply(variables(st), w, update_state=update)
        return jnp.sum(out * r)

    for update in (False, True):
        u, v = (st["u"], st["v"]) if not update else power_closed_form(w.T, st["v"], 1)
        sigma = u @ w.T @ v
        # closed form (spec §14.4), u and v constants; transposed back to the kernel layout
        expected = r / sigma - np.sum(w * r) / sigma**2 * np.outer(u, v).T
        close(jax.grad(loss)(w, update), expected)


def test_vector_is_normalised_without_state():
    p = SpectralNorm()
    x = rand(15, (6,))
    assert p.init_variables(KEY, x) == {"params": {}, "state": {}}
    out, st = p.apply(variables({}), x, update_state=True)
    close(out, x / np.linalg.norm(x))
    assert st == {}
    z = jnp.zeros(4)  # eps keeps it finite, with a finite gradient
    np.testing.assert_array_equal(p.apply(variables({}), z)[0], z)
    g = jax.grad(lambda x: jnp.sum(p.apply(variables({}), x)[0]))(z)
    assert np.all(np.isfinite(g))


def test_complex_sigma_is_real_and_result_has_unit_norm():
    w = rand(16, (4, 4), jnp.complex64)
    spec = {"w": SpectralNorm(n_power_iterations=20)}
    raw, st = ptree.register(spec, {"w": w}, key=KEY, update_state=True)
    out = np.asarray(ptree.constrain(spec, raw, st)["w"])
    close(np.linalg.norm(out, 2), 1.0, atol=1e-3)
    s = st["parametrizations"]["w"]["0"]
    sigma = np.vdot(s["u"], np.asarray(w).T @ s["v"])  # vdot conjugates u
    assert abs(sigma.imag) < 1e-4 * abs(sigma.real)


def test_matrix_view_output_axis_first_rest_in_c_order():
    w = rand(17, (2, 3, 4, 5))  # a Flax Conv kernel (kh, kw, in, out)
    mat = np.asarray(SpectralNorm().matrix_view(w))
    np.testing.assert_array_equal(mat, np.moveaxis(w, -1, 0).reshape(5, 24))
    mat2 = np.asarray(SpectralNorm(axis=(2, 3)).matrix_view(w))
    np.testing.assert_array_equal(mat2, w.transpose(2, 3, 0, 1).reshape(20, 6))
    torch_layout = w.transpose(3, 2, 0, 1)  # (out, in, kh, kw)
    mat_t = np.asarray(SpectralNorm(axis=0).matrix_view(torch_layout))  # torch's dim=0
    assert mat_t.shape == (5, 24)
    # the same rows; the columns are a permutation (torch flattens (in, kh, kw), Flax (kh, kw, in))
    permuted = mat_t.reshape(5, 4, 2, 3).transpose(0, 2, 3, 1).reshape(5, 24)
    np.testing.assert_array_equal(permuted, mat)


def test_linen_conv_layout_and_train_eval():
    conv = px.Parametrized(nn.Conv, {"kernel": SpectralNorm()})(features=3, kernel_size=(2, 2))
    x = rand(18, (1, 4, 4, 2))
    v = jax.jit(conv.init)(KEY, x)
    assert jax.tree.map(jnp.shape, v) == {
        "params": {"bias": (3,), "parametrizations": {"kernel": {"original": (2, 2, 2, 3)}}},
        STATE: {"parametrizations": {"kernel": {"0": {"u": (3,), "v": (8,)}}}},
    }

    @jax.jit
    def train_then_eval(v, x):
        y_train, mutated = conv.apply(v, x, mutable=[STATE])  # training: u, v advance
        v1 = {**v, **mutated}
        return y_train, mutated, conv.apply(v1, x), conv.apply(v1, x)  # evaluation, twice

    y1, m1, e1, e2 = train_then_eval(v, x)
    changed = m1[STATE]["parametrizations"]["kernel"]["0"]["u"]
    assert not np.array_equal(changed, v[STATE]["parametrizations"]["kernel"]["0"]["u"])
    close(e1, y1)  # eval output equals the last train output
    np.testing.assert_array_equal(e1, e2)  # and evaluation changes nothing


def test_dense_general_output_axes_tuple():
    # nn.DenseGeneral(features=(2, 3)) has a kernel (in, 2, 3): the output axes are (-2, -1)
    k = rand(19, (4, 2, 3))
    spec = {"kernel": SpectralNorm(n_power_iterations=30, axis=(-2, -1))}
    raw, st = ptree.register(spec, {"kernel": k}, key=KEY, update_state=True)
    s = st["parametrizations"]["kernel"]["0"]
    assert s["u"].shape == (6,) and s["v"].shape == (4,)
    out = ptree.constrain(spec, raw, st)["kernel"]
    close(np.linalg.norm(np.asarray(out).reshape(4, 6), 2), 1.0, atol=1e-4)


def test_spectral_norm_config_and_hash():
    assert SpectralNorm() == SpectralNorm(1, 1e-12, -1)
    assert hash(SpectralNorm()) == hash(SpectralNorm(1, 1e-12, -1))
    assert SpectralNorm(axis=[0, 1]) == SpectralNorm(axis=(0, 1))  # lists normalised to tuples
    assert SpectralNorm(axis=0) != SpectralNorm(axis=-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SpectralNorm().eps = 1.0


@pytest.mark.parametrize("n", [0, -1])
def test_error_n_power_iterations_not_positive(n):
    msg = f"Expected n_power_iterations to be positive, but got n_power_iterations={n}"
    with pytest.raises(px.ParametrizationError, match=msg):
        SpectralNorm(n_power_iterations=n)


@pytest.mark.parametrize("n", [1.5, True, "2"])
def test_error_n_power_iterations_not_int(n):
    with pytest.raises(px.ParametrizationTypeError, match="`n_power_iterations` must be an int"):
        SpectralNorm(n_power_iterations=n)


def test_error_eps_and_axis_types():
    with pytest.raises(px.ParametrizationError, match="`eps` must be a non-negative float"):
        SpectralNorm(eps=-1.0)
    msg = "`axis` must be an int, a non-empty tuple of ints; got None"
    with pytest.raises(px.ParametrizationTypeError, match=msg):
        SpectralNorm(axis=None)
    with pytest.raises(px.ParametrizationTypeError, match="`axis` must be"):
        WeightNorm(axis=1.0)


def test_error_axis_out_of_range_is_index_error_and_changes_nothing():
    layer = px.Parametrized(nn.Dense(3), {"kernel": SpectralNorm(axis=2)})
    with pytest.raises(AxisError, match=r"range of \[-2, 1\] but got 2") as e:
        layer.init(KEY, jnp.ones((1, 4)))
    assert isinstance(e.value, IndexError) and isinstance(e.value, px.ShapeError)
    with pytest.raises(AxisError, match="repeated axis"):
        SpectralNorm(axis=(0, -2)).matrix_view(jnp.ones((2, 3)))


def test_error_missing_or_misshapen_state():
    w = jnp.ones((4, 3))
    with pytest.raises(px.ParametrizationError, match="needs its state `u`, `v`"):
        SpectralNorm().apply(variables({}), w)
    msg = r"the matrix view of this array is 3x4, so they must be \(3,\), \(4,\)"
    with pytest.raises(px.ShapeError, match=msg):
        SpectralNorm().apply(variables({"u": jnp.ones(4), "v": jnp.ones(3)}), w)


# ================================================================================================
# WeightNorm
# ================================================================================================
@pytest.mark.parametrize(
    "axis,g_shape",
    [(0, (3, 1, 1)), (-1, (1, 1, 5)), (1, (1, 4, 1)), ((0, 2), (3, 1, 5)), (None, ())],
    ids=str,
)
def test_g_shapes_and_exact_round_trip(axis, g_shape):
    w = rand(20, (3, 4, 5))
    p = WeightNorm(axis=axis)
    g, v = p.right_inverse(w)
    assert g.shape == g_shape
    keep = () if axis is None else ((axis,) if isinstance(axis, int) else axis)
    others = tuple(a for a in range(3) if a not in [k % 3 for k in keep])
    close(g, np.sqrt(np.sum(w.astype(np.float64) ** 2, axis=others, keepdims=axis is not None)))
    np.testing.assert_array_equal(v, w)
    np.testing.assert_array_equal(p(g, v), w)  # forward(right_inverse(W)) == W, exactly


def test_exact_round_trip_under_jit():
    w = rand(21, (4, 3))
    p = WeightNorm()
    np.testing.assert_array_equal(jax.jit(lambda w: p(*p.right_inverse(w)))(w), w)


def test_linen_dense_computes_what_it_computed_before():
    x = rand(22, (2, 4))
    layer = px.Parametrized(nn.Dense(3), {"kernel": WeightNorm()})
    v = layer.init(KEY, x)
    assert jax.tree.map(jnp.shape, v) == {
        "params": {
            "bias": (3,),
            "parametrizations": {"kernel": {"original0": (1, 3), "original1": (4, 3)}},
        }
    }
    plain = nn.Dense(3).init(KEY, x)
    v_raw = v["params"]["parametrizations"]["kernel"]["original1"]
    np.testing.assert_array_equal(v_raw, plain["params"]["kernel"])
    np.testing.assert_array_equal(layer.apply(v, x), nn.Dense(3).apply(plain, x))


def test_gradient_closed_form():
    g0 = rand(23, (1, 3))
    v0 = rand(24, (4, 3))
    r = rand(25, (4, 3))
    p = WeightNorm()
    gg, gv = jax.grad(lambda g, v: jnp.sum(p(g, v) * r), argnums=(0, 1))(g0, v0)
    n = np.linalg.norm(v0, axis=0, keepdims=True)
    vhat = v0 / n
    close(gg, np.sum(r * vhat, axis=0, keepdims=True))  # spec §15.5
    close(gv, (g0 / n) * (r - vhat * np.sum(vhat * r, axis=0, keepdims=True)))


def test_zero_slice_gives_zero_output_and_finite_gradients():
    w = np.array(rand(26, (4, 3)))
    w[:, 1] = 0
    p = WeightNorm()
    g, v = p.right_inverse(w)
    np.testing.assert_array_equal(p(g, v), w)
    grads = jax.grad(lambda g, v: jnp.sum(p(g, v) ** 2), argnums=(0, 1))(g, v)
    assert all(np.all(np.isfinite(x)) for x in grads)


def test_training_moves_g_and_v():
    layer = px.Parametrized(nn.Dense, {"kernel": WeightNorm()})(features=3)
    x, y = rand(27, (8, 4)), rand(28, (8, 3))
    params = layer.init(KEY, x)["params"]
    opt = standard_promotion(optax.adam(1e-2))

    @jax.jit
    def train(params):
        def step(carry, _):
            params, s = carry
            loss = lambda p: jnp.mean((layer.apply({"params": p}, x) - y) ** 2)
            l, g = jax.value_and_grad(loss)(params)
            u, s = opt.update(g, s, params)
            return (optax.apply_updates(params, u), s), l

        return jax.lax.scan(step, (params, opt.init(params)), None, length=50)

    (new, _), losses = train(params)
    assert float(losses[-1]) < float(losses[0])
    for name in ("original0", "original1"):
        old = params["parametrizations"]["kernel"][name]
        assert float(jnp.max(jnp.abs(new["parametrizations"]["kernel"][name] - old))) > 1e-3


def test_embed_axis0_normalises_each_embedding():
    emb = px.Parametrized(nn.Embed(5, 3), {"embedding": WeightNorm(axis=0)})
    v = emb.init(KEY, jnp.array([0, 1]))
    g = v["params"]["parametrizations"]["embedding"]["original0"]
    assert g.shape == (5, 1)
    g2 = 2.0 * g
    v2 = jax.tree.map(lambda x: x, v)
    v2["params"]["parametrizations"]["embedding"]["original0"] = g2
    e = px.linen.constrain(emb, v2)["params"]["embedding"]
    close(np.linalg.norm(e, axis=1, keepdims=True), np.abs(g2))


def test_from_torch_dim_mapping():
    assert WeightNorm.from_torch(0) == WeightNorm(axis=0)
    assert WeightNorm.from_torch(1) == WeightNorm(axis=1)
    assert WeightNorm.from_torch(-1) == WeightNorm(axis=None)  # torch: -1 is the whole tensor
    assert WeightNorm.from_torch(None) == WeightNorm(axis=None)
    assert WeightNorm.from_torch(-2) == WeightNorm(axis=-2)
    assert WeightNorm() == WeightNorm(axis=-1) != WeightNorm(axis=None)


def test_weight_norm_errors():
    with pytest.raises(AxisError, match=r"range of \[-2, 1\] but got 3"):
        WeightNorm(axis=3).right_inverse(jnp.ones((2, 2)))
    with pytest.raises(px.ShapeError, match=r"g has shape \(3, 1\) .* needs g of shape \(1, 3\)"):
        WeightNorm()(jnp.ones((3, 1)), jnp.ones((4, 3)))
    with pytest.raises(px.ShapeError, match="floating-point"):
        WeightNorm().right_inverse(jnp.ones((2, 2), jnp.int32))


# ================================================================================================
# SpectralNorm(learnable_scale=True): sigmaReparam (Zhai et al. 2023), (gamma, W) -> gamma W / sigma
# ================================================================================================
def _sigma_np(w):
    return float(np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)[0])


def test_learnable_scale_closed_form_on_diagonal_matrices():
    w = jnp.diag(jnp.array([3.0, -4.0, 0.5]))  # sigma = 4, the top pair is e_2, -e_2
    p = SpectralNorm(learnable_scale=True)
    v0 = p.init_variables(KEY, w)
    (gamma, raw_w), st = p.apply_inverse(v0, w, key=None)
    assert gamma.shape == () and gamma.dtype == w.dtype
    close(gamma, 4.0)  # gamma = sigma(W): the registered value is W itself
    np.testing.assert_array_equal(raw_w, w)
    out, _ = p.apply(variables(st), gamma, raw_w)
    close(out, w)
    for g in (2.0, -0.5):
        out, _ = p.apply(variables(st), jnp.float32(g), raw_w)
        close(out, np.diag([3.0, -4.0, 0.5]) * g / 4.0)
        close(_sigma_np(out), abs(g))  # the spectral norm of the value is |gamma|


def test_learnable_scale_registration_keeps_the_value_and_lays_out_gamma_first():
    w = rand(30, (5, 3))
    spec = {"w": SpectralNorm(learnable_scale=True)}
    raw, st = ptree.register(spec, {"w": w}, key=KEY)
    r = raw["parametrizations"]["w"]
    assert jax.tree.map(jnp.shape, r) == {"original0": (), "original1": (5, 3)}
    close(r["original0"], _sigma_np(w))
    close(ptree.constrain(spec, raw, st)["w"], w)
    # training steps (u, v advance) change the value only by the power iteration's drift
    y, _ = ptree.forward(spec, raw, st, update_state=True)
    close(y["w"], w, atol=1e-4)


def test_learnable_scale_gradient_wrt_gamma_and_w():
    w = rand(31, (4, 3))
    c = rand(32, (4, 3))
    p = SpectralNorm(learnable_scale=True)
    st = {"u": unit(33, 3), "v": unit(34, 4)}
    gamma = jnp.float32(1.7)
    sigma = float(st["u"] @ w.T @ st["v"])

    def loss(gamma, w):
        out, _ = p.apply(variables(st), gamma, w)
        return jnp.sum(out * c)

    g_gamma, g_w = jax.grad(loss, argnums=(0, 1))(gamma, jnp.asarray(w))
    close(g_gamma, np.sum(c * w) / sigma)  # d/dgamma (gamma W / sigma) = W / sigma
    # d/dW with u, v constants: gamma times SpectralNorm's closed form
    expected = 1.7 * (c / sigma - np.sum(w * c) / sigma**2 * np.outer(st["u"], st["v"]).T)
    close(g_w, expected)
    # and a central finite difference in gamma (float64 numpy on the closed-form forward)
    h = 1e-2
    fd = (loss(gamma + h, w) - loss(gamma - h, w)) / (2 * h)
    close(g_gamma, fd, rtol=1e-3, atol=1e-3)


def test_learnable_scale_papers_init_gamma_one_by_assigning_w_over_sigma():
    w = rand(35, (4, 4))
    spec = {"w": SpectralNorm(learnable_scale=True)}
    raw, st = ptree.register(spec, {"w": w}, key=KEY)
    unit_w = np.asarray(w) / _sigma_np(w)
    raw, st = ptree.assign(spec, raw, st, {"w": unit_w})
    close(raw["parametrizations"]["w"]["original0"], 1.0)
    close(ptree.constrain(spec, raw, st)["w"], unit_w)


def test_learnable_scale_vector_and_zero_refused():
    p = SpectralNorm(learnable_scale=True)
    x = jnp.array([3.0, 4.0])
    (gamma, raw_x), st = p.apply_inverse(p.init_variables(KEY, x), x, key=None)
    assert st == {}
    close(gamma, 5.0)
    close(p.apply(variables(st), jnp.float32(10.0), raw_x)[0], [6.0, 8.0])
    with pytest.raises(px.ParametrizationError, match="all zero"):
        ptree.register({"w": p}, {"w": jnp.zeros((3, 2))}, key=KEY)


def test_learnable_scale_linen_dense_trains_gamma():
    dense = px.Parametrized(nn.Dense, {"kernel": SpectralNorm(learnable_scale=True)})(features=3)
    plain = nn.Dense(features=3)
    x = rand(36, (8, 4))
    v = dense.init(KEY, x)
    pk = v["params"]["parametrizations"]["kernel"]
    assert jax.tree.map(jnp.shape, pk) == {"original0": (), "original1": (4, 3)}
    # registration keeps the layer's function: same output as the plain Dense
    vp = plain.init(KEY, x)
    close(dense.apply(v, x), plain.apply(vp, x))
    target = 3.0 * rand(37, (8, 3))
    tx = standard_promotion(optax.adam(3e-2))

    def loss(params, state):
        y, mutated = dense.apply({"params": params, STATE: state}, x, mutable=[STATE])
        return jnp.mean((y - target) ** 2), mutated[STATE]

    @jax.jit
    def step(params, state, opt):
        (l, state), g = jax.value_and_grad(loss, has_aux=True)(params, state)
        assert g["parametrizations"]["kernel"]["original0"].shape == ()
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), state, opt, l

    params, state, opt = v["params"], v[STATE], tx.init(v["params"])
    g0 = float(params["parametrizations"]["kernel"]["original0"])
    losses = []
    for _ in range(60):
        params, state, opt, l = step(params, state, opt)
        losses.append(float(l))
    assert losses[-1] < 0.5 * losses[0]
    g1 = float(params["parametrizations"]["kernel"]["original0"])
    assert abs(g1 - g0) > 1e-2  # gamma is trained
    k = px.linen.constrain(dense, {"params": params, STATE: state})["params"]["kernel"]
    close(_sigma_np(k), abs(g1), rtol=2e-2, atol=2e-2)  # ||kernel||_2 = |gamma| (u, v lag a bit)


def test_learnable_scale_nnx_register_keeps_value():
    from flax import nnx

    from parametrax import nnx as pnnx

    layer = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    k0 = np.asarray(layer.kernel[...])
    pnnx.register_parametrization(
        layer, "kernel", SpectralNorm(learnable_scale=True), rngs=nnx.Rngs(1)
    )
    close(layer.kernel, k0)
    close(layer.parametrizations.kernel.original0[...], _sigma_np(k0))


def test_learnable_scale_errors():
    with pytest.raises(px.ParametrizationTypeError, match="`learnable_scale` must be a bool"):
        SpectralNorm(learnable_scale=1)
    p = SpectralNorm(learnable_scale=True)
    w = rand(38, (3, 3))
    st = p.init_variables(KEY, w)["state"]
    with pytest.raises(px.ParametrizationTypeError, match=r"takes 2 raw arrays, \(gamma, W\)"):
        p.apply(variables(st), w)
    with pytest.raises(px.ShapeError, match="must be a 0-d array; got shape \\(3,\\)"):
        p.apply(variables(st), jnp.ones(3), w)
    with pytest.raises(px.ParametrizationTypeError, match="takes 1 raw array, W; got 2"):
        SpectralNorm().apply(variables(st), jnp.float32(1.0), w)
    assert SpectralNorm(learnable_scale=True) == SpectralNorm(learnable_scale=True)
    assert hash(SpectralNorm(learnable_scale=True)) == hash(SpectralNorm(learnable_scale=True))
    assert SpectralNorm(learnable_scale=True) != SpectralNorm()


# ================================================================================================
# SpectralNorm(exact=True): the true largest singular value (an SVD under stop_gradient), no state
# ================================================================================================
def _np_matrix(w, axis):
    """The matrix view, in numpy: output axes to the front (rows), the rest flattened (C order)."""
    w = np.asarray(w, np.float64)
    axes = tuple(a % w.ndim for a in ((axis,) if isinstance(axis, int) else axis))
    moved = np.moveaxis(w, axes, tuple(range(len(axes))))
    return moved.reshape(int(np.prod([w.shape[a] for a in axes])), -1)


@pytest.mark.parametrize(
    "shape,axis",
    [
        ((6, 3), -1),  # Dense kernel: matrix (3, 6), wide
        ((3, 6), -1),  # matrix (6, 3), tall
        ((4, 4), 0),  # square, torch's dim=0
        ((2, 2, 3, 5), -1),  # a Conv kernel: matrix (5, 12)
        ((2, 3, 4), (0, 2)),  # several output axes: matrix (8, 3)
    ],
    ids=str,
)
def test_exact_value_is_w_over_largest_singular_value(shape, axis):
    w = rand(40, shape)
    p = SpectralNorm(axis=axis, exact=True)
    vs = p.init_variables(KEY, w)
    assert vs == {"params": {}, "state": {}}  # no power-iteration state
    sigma = np.linalg.svd(_np_matrix(w, axis), compute_uv=False)[0]  # numpy float64 oracle
    for update in (True, False):  # train and evaluation: the same value, nothing to update
        out, st = p.apply(vs, w, update_state=update)
        assert st == {}
        close(out, np.asarray(w, np.float64) / sigma)


def test_exact_registration_and_batched_tree():
    w = rand(41, (2, 2, 3, 4))
    spec = {"kernel": SpectralNorm(exact=True)}
    raw, st = ptree.register(spec, {"kernel": w}, key=KEY, update_state=True)
    assert jax.tree.leaves(st) == []  # no state anywhere
    out = ptree.constrain(spec, raw, st)["kernel"]
    close(out, np.asarray(w, np.float64) / np.linalg.norm(_np_matrix(w, -1), 2))
    # vmap over a batch of weights: each divided by its own sigma
    ws = jnp.stack([w, 3 * w[::-1]])
    p = SpectralNorm(exact=True)
    outs = jax.vmap(lambda x: p.apply(variables({}), x)[0])(ws)
    for o, x in zip(np.asarray(outs), np.asarray(ws)):
        close(o, x / np.linalg.norm(_np_matrix(x, -1), 2))


def _np_loss(w, r):
    """numpy float64: sum(r * W / sigma_max(W)), W a Flax kernel (the matrix is W^T)."""
    return float(np.sum(r * w / np.linalg.norm(w.T, 2)))


def test_exact_gradient_matches_finite_differences():
    # a clear spectral gap (3, 1, 0.5): sigma_max is simple and differentiable
    u_, _, vh = np.linalg.svd(rand(42, (4, 4)))
    w = (u_[:, :3] @ np.diag([3.0, 1.0, 0.5]) @ vh[:3, :3]).astype(np.float32)  # (4, 3)
    r = rand(43, (4, 3)).astype(np.float64)
    p = SpectralNorm(exact=True)
    g = jax.grad(lambda x: jnp.sum(p.apply(variables({}), x)[0] * r))(jnp.asarray(w))
    w64, h = w.astype(np.float64), 1e-6
    fd = np.zeros_like(w64)
    for i in np.ndindex(w64.shape):  # central differences on the numpy float64 oracle
        e = np.zeros_like(w64)
        e[i] = h
        fd[i] = (_np_loss(w64 + e, r) - _np_loss(w64 - e, r)) / (2 * h)
    close(g, fd, rtol=1e-3, atol=1e-4)
    # and forward mode agrees (every catalog entry supports jacfwd)
    jf = jax.jacfwd(lambda x: jnp.sum(p.apply(variables({}), x)[0] * r))(jnp.asarray(w))
    close(jf, fd, rtol=1e-3, atol=1e-4)


def test_exact_gradient_finite_where_sigma_is_repeated():
    # an orthogonal W: every singular value is 1, the SVD's derivative is 0/0 there
    q, _ = np.linalg.qr(rand(44, (4, 4)))
    q = q.astype(np.float32)
    r = rand(45, (4, 4))
    p = SpectralNorm(exact=True)

    def loss(x):
        return jnp.sum(p.apply(variables({}), x)[0] * r)

    g = np.asarray(jax.grad(loss)(jnp.asarray(q)), np.float64)
    assert np.all(np.isfinite(g))
    # sigma = 1, so the gradient of sum(r * W / sigma) is r - sum(r * Q) * d sigma, with
    # d sigma = u1 v1^T for whichever top pair (u1, v1) the SVD picked (a subgradient: the pair
    # is not unique). Every choice gives a rank-1 difference of Frobenius norm |sum(r * Q)|.
    diff = r - g
    s_diff = np.linalg.svd(diff, compute_uv=False)
    close(s_diff[0], abs(np.sum(r * q)), rtol=1e-4, atol=1e-5)
    assert np.all(s_diff[1:] <= 1e-5), s_diff
    jf = np.asarray(jax.jacfwd(loss)(jnp.asarray(q)))
    assert np.all(np.isfinite(jf))


def test_exact_bfloat16_widens_the_svd():
    w = rand(46, (5, 3))
    wb = jnp.asarray(w, jnp.bfloat16)
    out, _ = SpectralNorm(exact=True).apply(variables({}), wb)
    assert out.dtype == jnp.bfloat16
    s = np.linalg.norm(np.asarray(out, np.float64).T, 2)
    assert abs(s - 1) <= 2e-2, s  # a few bfloat16 ulps (eps 2^-8)
    g = jax.grad(lambda x: jnp.sum(SpectralNorm(exact=True).apply(variables({}), x)[0]))(wb)
    assert g.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(g, np.float32)))


def test_exact_zero_and_learnable_scale():
    p = SpectralNorm(exact=True)
    z = jnp.zeros((3, 4))
    out, _ = p.apply(variables({}), z)  # sigma = 0: returned unchanged, finite gradients
    assert np.all(np.asarray(out) == 0)
    g = jax.grad(lambda x: jnp.sum(p.apply(variables({}), x)[0]))(z)
    assert np.all(np.isfinite(np.asarray(g)))
    with pytest.raises(px.ParametrizationError, match="the value is all zero"):
        p.apply_inverse(variables({}), z)
    # sigmaReparam with the exact sigma: gamma = sigma(W), forward(right_inverse(W)) == W
    w = rand(47, (4, 3))
    sr = SpectralNorm(learnable_scale=True, exact=True)
    vs = sr.init_variables(KEY, w)
    (gamma, raw_w), st = sr.apply_inverse(vs, w)
    assert st == {}
    close(gamma, np.linalg.norm(np.asarray(w, np.float64).T, 2))
    out, _ = sr.apply(variables(st), 2 * gamma, raw_w, update_state=True)
    close(out, 2 * np.asarray(w))
    close(np.linalg.norm(np.asarray(out, np.float64).T, 2), 2 * float(gamma))


def test_exact_errors_and_config():
    with pytest.raises(px.ParametrizationTypeError, match="`exact` must be a bool; got 1"):
        SpectralNorm(exact=1)
    with pytest.raises(px.ParametrizationTypeError, match="`exact` must be a bool; got 'yes'"):
        SpectralNorm(exact="yes")
    assert SpectralNorm(exact=True) != SpectralNorm()
    assert hash(SpectralNorm(exact=True)) == hash(SpectralNorm(exact=True))
    with pytest.raises(px.ShapeError, match="at least 1 dimension"):
        SpectralNorm(exact=True).apply(variables({}), jnp.float32(1.0))
    with pytest.raises(px.ParametrizationTypeError, match="takes 1 raw array, W; got 2"):
        SpectralNorm(exact=True).apply(variables({}), jnp.float32(1.0), jnp.ones((2, 2)))
