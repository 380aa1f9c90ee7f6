"""ConvSpectralNorm and conv_singular_values (issue 14; equinox issue 810): the norm of the
convolution operator, not of the reshaped kernel.

Oracles, all outside the code under test: flax's ``nn.Conv`` (the operator is the layer's), the
operator materialised as a dense matrix (``jax.jacfwd`` on a tiny input) and numpy's SVD of it,
closed forms (a box filter's gain on a constant image), finite differences, random inputs.
"""

import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import parametrax as px
from parametrax import nnx as pnnx
from parametrax import tree as ptree
from parametrax.catalog.conv_norm import ConvSpectralNorm, conv_singular_values

from _helpers import rand, standard_promotion

KEY = jax.random.key(0)
STATE = px.linen.STATE_COLLECTION
# float32 SVDs of a few hundred x few hundred matrices, and FFTs: ~100 ulps
F32_RTOL = 1e-4
# power iteration after many warm-up iterations: an estimate, converging from below
POWER_RTOL = 2e-3


def dense(p, kernel):
    """The operator ``x -> conv(x, K)`` on one input as a dense (out, in) matrix (float64)."""
    cin = kernel.shape[-2] * p.feature_group_count
    x0 = jnp.zeros(p.input_shape + (cin,), jnp.float32)
    jac = jax.jacfwd(lambda x: p.conv(x, jnp.asarray(kernel)))(x0)
    n_in = x0.size
    return np.asarray(jac, np.float64).reshape(-1, n_in)


def top_sv(m):
    return float(np.linalg.svd(m, compute_uv=False)[0])


def flax_conv(p, kernel, x):
    """What flax's nn.Conv computes with this kernel on one input (no bias)."""
    nd = kernel.ndim - 2
    pad = p.padding
    if isinstance(pad, tuple):
        pad = [q if isinstance(q, tuple) else (q, q) for q in pad]
    layer = nn.Conv(
        kernel.shape[-1],
        kernel.shape[:nd],
        strides=p.strides,
        padding=pad,
        kernel_dilation=p.dilation,
        feature_group_count=p.feature_group_count,
        use_bias=False,
        precision=jax.lax.Precision.HIGHEST,
    )
    return layer.apply({"params": {"kernel": jnp.asarray(kernel)}}, jnp.asarray(x)[None])[0]


# (kernel shape, ConvSpectralNorm kwargs): 1-D, 2-D, 3-D; every padding form; strides; dilation
CONFIGS = [
    pytest.param((3, 3, 2, 3), {"input_shape": (5, 4)}, id="2d-same"),
    pytest.param((3, 3, 2, 3), {"input_shape": (6, 5), "padding": "VALID"}, id="2d-valid"),
    pytest.param((3, 3, 2, 2), {"input_shape": (6, 6), "strides": 2}, id="2d-stride2"),
    pytest.param(
        (2, 3, 2, 3), {"input_shape": (6, 5), "strides": (1, 2), "padding": 1}, id="2d-int"
    ),
    pytest.param((3, 3, 1, 2), {"input_shape": (7, 7), "dilation": 2}, id="2d-dilation2"),
    pytest.param((3, 3, 2, 3), {"input_shape": (5, 4), "padding": "CIRCULAR"}, id="2d-circular"),
    pytest.param((3, 3, 2, 2), {"input_shape": (5, 5), "padding": "REFLECT"}, id="2d-reflect"),
    pytest.param((3, 3, 2, 4), {"input_shape": (4, 4), "feature_group_count": 2}, id="2d-groups"),
    pytest.param((3, 2, 3), {"input_shape": (9,), "padding": "CAUSAL"}, id="1d-causal"),
    pytest.param((4, 2, 3), {"input_shape": (8,), "padding": ((2, 1),)}, id="1d-pairs"),
    pytest.param((2, 2, 2, 2, 2), {"input_shape": (3, 4, 3)}, id="3d-same"),
]


@pytest.mark.parametrize("shape, kw", CONFIGS)
def test_operator_is_flax_conv(shape, kw):
    p = ConvSpectralNorm(**kw)
    k = rand(1, shape)
    x = rand(2, p.input_shape + (shape[-2] * p.feature_group_count,))
    np.testing.assert_allclose(
        p.conv(jnp.asarray(x), jnp.asarray(k)), flax_conv(p, k, x), rtol=F32_RTOL, atol=1e-5
    )


@pytest.mark.parametrize("shape, kw", CONFIGS)
def test_power_iteration_converges_to_the_dense_operator_norm(shape, kw):
    p = ConvSpectralNorm(**kw, n_warmup_iterations=400)
    k = rand(3, shape)
    want = top_sv(dense(p, k))
    v = p.init_variables(KEY, jnp.asarray(k))
    out, _ = p.apply(v, jnp.asarray(k))
    sigma = float(k.ravel()[0] / out.ravel()[0])
    assert sigma <= want * (1 + F32_RTOL)  # a Rayleigh quotient: never above the norm
    np.testing.assert_allclose(sigma, want, rtol=POWER_RTOL)
    # the normalised kernel's operator has norm 1
    np.testing.assert_allclose(top_sv(dense(p, np.asarray(out))), 1.0, rtol=POWER_RTOL)


@pytest.mark.parametrize(
    "shape, input_shape, dilation, groups",
    [
        ((3, 3, 2, 3), (5, 4), 1, 1),
        ((3, 3, 2, 2), (6, 7), 2, 1),
        ((3, 3, 2, 4), (4, 4), 1, 2),
        ((5, 2, 2), (3,), 1, 1),  # a kernel longer than the input wraps around
        ((3, 2, 2), (6,), 1, 1),
        ((2, 2, 2, 1, 2), (3, 3, 4), 1, 1),
    ],
)
def test_fft_singular_values_are_all_the_dense_operators(shape, input_shape, dilation, groups):
    k = rand(4, shape)
    p = ConvSpectralNorm(
        input_shape, padding="CIRCULAR", dilation=dilation, feature_group_count=groups
    )
    s = np.asarray(
        conv_singular_values(k, input_shape, dilation=dilation, feature_group_count=groups)
    )
    assert s.shape[:-1] == input_shape
    assert np.all(np.diff(s, axis=-1) <= 0)  # decreasing along the last axis
    want = np.linalg.svd(dense(p, k), compute_uv=False)
    got = np.sort(s.ravel())[::-1]
    want = want[: got.size]  # the dense matrix's rank-limited tail beyond min(N c_in, N c_out)
    np.testing.assert_allclose(got, want, rtol=F32_RTOL, atol=1e-4 * want[0])


def test_box_filter_closed_form():
    # the all-ones k x k filter, one channel: the gain on a constant image is k^2 (frequency 0)
    # while the reshaped kernel (a k^2 vector) has norm k
    for kk in (2, 3):
        k = jnp.ones((kk, kk, 1, 1))
        s = conv_singular_values(k, (6, 6))
        np.testing.assert_allclose(float(s.max()), kk * kk, rtol=F32_RTOL)
        np.testing.assert_allclose(float(jnp.linalg.norm(k.reshape(-1, 1), 2)), kk, rtol=1e-6)


def test_power_iteration_converges_to_the_fft_exact_value():
    k = jnp.asarray(rand(5, (3, 3, 4, 4)))
    exact = ConvSpectralNorm((12, 12), padding="CIRCULAR", exact=True)
    want = float(exact.sigma(k))
    np.testing.assert_allclose(want, float(conv_singular_values(k, (12, 12)).max()), rtol=1e-6)
    errs = []
    for n in (10, 100, 1000):  # the estimate rises towards the exact value with the iterations
        p = ConvSpectralNorm((12, 12), padding="CIRCULAR", n_warmup_iterations=n)
        st = p.init_variables(KEY, k)["state"]
        errs.append(want - float(p.sigma(k, st["u"], st["v"])))
    assert all(e >= -want * F32_RTOL for e in errs), errs  # from below: a Rayleigh quotient
    assert errs[0] > errs[1] > errs[2] and errs[2] <= 1e-3 * want, errs
    # and the training applies (one iteration each) continue from there
    p = ConvSpectralNorm((12, 12), padding="CIRCULAR", n_warmup_iterations=100)
    v = p.init_variables(KEY, k)
    step = jax.jit(lambda v: p.apply(v, k, update_state=True)[1])
    for _ in range(900):
        v = {"params": {}, "state": step(v)}
    np.testing.assert_allclose(
        float(p.sigma(k, v["state"]["u"], v["state"]["v"])), want - errs[2], rtol=F32_RTOL
    )


def test_operator_norm_bounds_the_gain_and_the_reshaped_norm_does_not():
    """The docs' claim: on nn.Conv's default kernel, SpectralNorm (the reshaped matrix) leaves a
    gain above 1; ConvSpectralNorm bounds ||conv(x)|| / ||x|| by 1 on random and worst inputs."""
    conv = nn.Conv(4, (3, 3), use_bias=False, precision=jax.lax.Precision.HIGHEST)
    x_shape = (6, 6, 3)
    k = conv.init(KEY, jnp.zeros((1,) + x_shape))["params"]["kernel"]
    p = ConvSpectralNorm(x_shape[:2], n_warmup_iterations=400)
    a = dense(p, k)
    op_norm, mat_norm = top_sv(a), top_sv(np.asarray(k).reshape(-1, 4))
    assert op_norm > 1.5 * mat_norm  # they differ, by far

    def gain(kernel, xs):
        y = conv.apply({"params": {"kernel": kernel}}, xs)
        return np.linalg.norm(np.asarray(y).reshape(len(xs), -1), axis=1) / np.linalg.norm(
            np.asarray(xs).reshape(len(xs), -1), axis=1
        )

    xs = jnp.asarray(rand(6, (256,) + x_shape))
    worst = np.linalg.svd(a)[2][0].reshape((1,) + x_shape).astype(np.float32)  # top right s.v.
    # SpectralNorm of the reshaped kernel: the worst input is amplified by op_norm / mat_norm
    k_mat = ptree.constrain(
        {"k": px.SpectralNorm()}, *ptree.register({"k": px.SpectralNorm()}, {"k": k}, key=KEY)
    )["k"]
    np.testing.assert_allclose(gain(k_mat, worst)[0], op_norm / mat_norm, rtol=POWER_RTOL)
    assert gain(k_mat, worst)[0] > 1.5
    # ConvSpectralNorm: every random input and the worst one have gain <= 1 (to the estimate)
    spec = {"k": p}
    k_op = ptree.constrain(spec, *ptree.register(spec, {"k": k}, key=KEY))["k"]
    g = gain(k_op, xs)
    assert np.all(g <= 1 + POWER_RTOL), g.max()
    assert np.all(g > 0.05)
    np.testing.assert_allclose(gain(k_op, worst)[0], 1.0, rtol=POWER_RTOL)


def test_exact_gradient_matches_finite_differences():
    p = ConvSpectralNorm((5, 5), padding="CIRCULAR", exact=True)
    k = jnp.asarray(rand(7, (3, 3, 2, 2)))
    c = jnp.asarray(rand(8, (3, 3, 2, 2)))
    d = jnp.asarray(rand(9, (3, 3, 2, 2)))

    def f(k):
        return jnp.sum(c * p.apply({"params": {}, "state": {}}, k)[0])

    g = jax.grad(f)(k)
    assert np.all(np.isfinite(g))
    h = 1e-2
    fd = (f(k + h * d) - f(k - h * d)) / (2 * h)
    np.testing.assert_allclose(float(jnp.sum(g * d)), float(fd), rtol=2e-2, atol=2e-3)


def test_power_gradient_treats_u_v_as_constants():
    p = ConvSpectralNorm((4, 4), padding="VALID")
    k = jnp.asarray(rand(10, (2, 2, 2, 3)))
    v = p.init_variables(KEY, k)
    u0, v0 = v["state"]["u"], v["state"]["v"]
    c = jnp.asarray(rand(11, k.shape))

    def f(k):
        return jnp.sum(c * p.apply(v, k)[0])

    # closed form: d/dK sum(c * K / s), s = <u, A_K v> linear in K, ds/dK = grad of <u, A_K v>
    s = p.sigma(k, u0, v0)
    ds = jax.grad(lambda kk: jnp.vdot(u0, p.conv(v0, kk)))(k)
    want = c / s - jnp.sum(c * k) / s**2 * ds
    np.testing.assert_allclose(jax.grad(f)(k), want, rtol=F32_RTOL, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# The fronts: linen, NNX, the tree API
# ------------------------------------------------------------------------------------------------
def test_linen_conv_layout_train_eval_and_gain():
    p = ConvSpectralNorm((8, 8))
    model = px.Parametrized(nn.Conv, {"kernel": p})(features=4, kernel_size=(3, 3), use_bias=False)
    x = jnp.asarray(rand(12, (2, 8, 8, 3)))
    v = jax.jit(model.init)(KEY, x)
    assert jax.tree.map(jnp.shape, v) == {
        "params": {"parametrizations": {"kernel": {"original": (3, 3, 3, 4)}}},
        STATE: {"parametrizations": {"kernel": {"0": {"u": (8, 8, 4), "v": (8, 8, 3)}}}},
    }
    y_train, mutated = jax.jit(lambda v, x: model.apply(v, x, mutable=[STATE]))(v, x)
    u_new = mutated[STATE]["parametrizations"]["kernel"]["0"]["u"]
    assert not np.array_equal(u_new, v[STATE]["parametrizations"]["kernel"]["0"]["u"])
    v1 = {**v, **mutated}
    np.testing.assert_allclose(model.apply(v1, x), y_train, rtol=F32_RTOL, atol=1e-6)
    k = px.linen.constrain(model, v1)["params"]["kernel"]
    np.testing.assert_allclose(top_sv(dense(p, k)), 1.0, rtol=5e-3)
    gains = np.linalg.norm(np.asarray(y_train).reshape(2, -1), axis=1) / np.linalg.norm(
        np.asarray(x).reshape(2, -1), axis=1
    )
    assert np.all(gains <= 1 + 5e-3)


def test_linen_training_keeps_the_operator_norm():
    p = ConvSpectralNorm((6, 6), padding="CIRCULAR", exact=True)
    model = px.Parametrized(nn.Conv, {"kernel": p})(
        features=2, kernel_size=(3, 3), padding="CIRCULAR"
    )
    x = jnp.asarray(rand(13, (4, 6, 6, 2)))
    target = 5.0 * jnp.asarray(rand(14, (4, 6, 6, 2)))
    v = model.init(KEY, x)
    assert v.get(STATE, {}) in ({}, {"parametrizations": {"kernel": {"0": {}}}})
    tx = standard_promotion(optax.adam(5e-2))

    @jax.jit
    def step(params, opt):
        def loss(params):
            return jnp.mean((model.apply({**v, "params": params}, x) - target) ** 2)

        l, g = jax.value_and_grad(loss)(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, l

    params, opt = v["params"], tx.init(v["params"])
    for _ in range(10):
        params, opt, _ = step(params, opt)
        k = px.linen.constrain(model, {**v, "params": params})["params"]["kernel"]
        np.testing.assert_allclose(top_sv(dense(p, k)), 1.0, rtol=F32_RTOL)


def test_nnx_register_exact_and_power():
    for p in (
        ConvSpectralNorm((6, 6), padding="CIRCULAR", exact=True),
        ConvSpectralNorm((6, 6), n_warmup_iterations=300),
    ):
        layer = nnx.Conv(2, 3, (3, 3), padding=p.padding, use_bias=False, rngs=nnx.Rngs(0))
        pnnx.register_parametrization(layer, "kernel", p, rngs=nnx.Rngs(1))
        k = np.asarray(layer.kernel)
        np.testing.assert_allclose(top_sv(dense(p, k)), 1.0, rtol=POWER_RTOL)
        x = jnp.asarray(rand(15, (16, 6, 6, 2)))
        g = np.linalg.norm(np.asarray(layer(x)).reshape(16, -1), axis=1) / np.linalg.norm(
            np.asarray(x).reshape(16, -1), axis=1
        )
        assert np.all(g <= 1 + POWER_RTOL)


def test_tree_assign_is_a_no_op_for_the_value_read_back_and_reconverges_otherwise():
    p = ConvSpectralNorm((5, 5), padding="VALID", n_warmup_iterations=200)
    spec = {"k": p}
    k = jnp.asarray(rand(16, (3, 3, 2, 2)))
    raw, st = ptree.register(spec, {"k": k}, key=KEY)
    y = ptree.constrain(spec, raw, st)["k"]
    raw2, st2 = ptree.assign(spec, raw, st, {"k": y})
    jax.tree.map(np.testing.assert_array_equal, st2, st)  # kept: u, v already read y as y
    np.testing.assert_allclose(ptree.constrain(spec, raw2, st2)["k"], y, rtol=1e-5, atol=1e-7)
    raw3, st3 = ptree.assign(spec, raw, st, {"k": 3.0 * k + 1.0})  # a new weight: re-converge
    y3 = ptree.constrain(spec, raw3, st3)["k"]
    np.testing.assert_allclose(top_sv(dense(p, y3)), 1.0, rtol=POWER_RTOL)


# ------------------------------------------------------------------------------------------------
# Configuration and errors
# ------------------------------------------------------------------------------------------------
def test_config_is_hashable_and_lists_become_tuples():
    a = ConvSpectralNorm([8, 8], strides=[1, 1], padding=[(1, 1), 1], dilation=[1, 1])
    b = ConvSpectralNorm((8, 8), strides=(1, 1), padding=((1, 1), 1), dilation=(1, 1))
    assert a == b and hash(a) == hash(b)
    assert a.input_shape == (8, 8) and a.padding == ((1, 1), 1)
    assert ConvSpectralNorm(5).input_shape == (5,)
    assert ConvSpectralNorm((4,), padding="same").padding == "SAME"


def test_errors():
    with pytest.raises(px.ParametrizationTypeError, match="`input_shape` must be the spatial"):
        ConvSpectralNorm(())
    with pytest.raises(px.ParametrizationError, match="needs padding='CIRCULAR' and strides=1"):
        ConvSpectralNorm((4, 4), exact=True)
    with pytest.raises(px.ParametrizationError, match="needs padding='CIRCULAR' and strides=1"):
        ConvSpectralNorm((4, 4), padding="CIRCULAR", strides=2, exact=True)
    with pytest.raises(px.ParametrizationError, match="unknown `padding` 'FULL'"):
        ConvSpectralNorm((4, 4), padding="FULL")
    with pytest.raises(px.ParametrizationTypeError, match="`strides` must be a positive int"):
        ConvSpectralNorm((4, 4), strides=0)
    with pytest.raises(px.ParametrizationError, match="`n_power_iterations` must be positive"):
        ConvSpectralNorm((4, 4), n_power_iterations=0)
    p = ConvSpectralNorm((4, 4))
    with pytest.raises(px.ShapeError, match=r"has 2 spatial axis\(es\) but `input_shape`"):
        ConvSpectralNorm((4,)).init_variables(KEY, jnp.ones((3, 3, 2, 2)))
    with pytest.raises(px.ShapeError, match="at least one spatial axis"):
        p.init_variables(KEY, jnp.ones((3, 2)))
    with pytest.raises(px.ShapeError, match="real floating-point"):
        p.init_variables(KEY, jnp.ones((3, 3, 2, 2), jnp.int32))
    with pytest.raises(px.ShapeError, match="empty output"):
        ConvSpectralNorm((2, 2), padding="VALID").init_variables(KEY, jnp.ones((3, 3, 1, 1)))
    with pytest.raises(px.ParametrizationError, match="the kernel is all zero"):
        ptree.register({"k": p}, {"k": jnp.zeros((3, 3, 2, 2))}, key=KEY)
    st = p.init_variables(KEY, jnp.ones((3, 3, 2, 2)))["state"]
    with pytest.raises(px.ShapeError, match=r"must be the output's \(4, 4, 5\)"):
        p.apply({"params": {}, "state": st}, jnp.ones((3, 3, 2, 5)))
    with pytest.raises(px.ShapeError, match="`input_shape` is the spatial shape"):
        conv_singular_values(jnp.ones((3, 3, 2, 2)), (4,))


def test_docs_norms_page_examples_run():
    page = pathlib.Path(__file__).resolve().parent.parent / "docs" / "catalog" / "norms.md"
    text = page.read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    assert blocks, "the norms page has a runnable example"
    for code in blocks:
        exec(compile(code, str(page), "exec"), {"__name__": "_norms_page"})  # noqa: S102
