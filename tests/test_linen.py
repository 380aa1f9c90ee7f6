"""The linen front: Parametrized, constrained, assign, remove_parametrizations, is_parametrized."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import parametrax as px
from parametrax import Parametrized, cayley, skew

from _helpers import (
    MLP,
    Counter,
    Double,
    RankOne,
    Scale,
    key_normal,
    orthogonality_error,
    skew_error,
    standard_promotion,
    symmetry_error,
)

KEY = jax.random.key(0)
X3 = jnp.ones((2, 3))


def shapes(tree):
    return jax.tree.map(jnp.shape, tree)


# --- the design card ---------------------------------------------------------------------------
def test_design_card_usage_gives_orthogonal_kernel():
    OrthoDense = Parametrized(nn.Dense, {"kernel": [skew, cayley]})
    layer = OrthoDense(features=3)
    variables = layer.init(KEY, X3)
    k = px.linen.constrain(layer, variables)["params"]["kernel"]
    assert orthogonality_error(k) < 1e-5
    y = layer.apply(variables, X3)
    np.testing.assert_allclose(y, X3 @ k + variables["params"]["bias"], rtol=1e-6, atol=1e-6)
    # instance in, instance out
    layer2 = Parametrized(nn.Dense(3), {"kernel": [skew, cayley]})
    assert type(layer2) is OrthoDense and layer2 == layer
    assert isinstance(layer2, nn.Dense)


# --- variables layout --------------------------------------------------------------------------
def test_paths_dense():
    layer = Parametrized(nn.Dense, {"kernel": [skew, cayley]})(features=3)
    assert shapes(layer.init(KEY, X3)) == {
        "params": {"bias": (3,), "parametrizations": {"kernel": {"original": (3, 3)}}}
    }


def test_paths_mlp_glob_and_state_collection():
    model = Parametrized(MLP, {"*/kernel": px.RandomPruning(0.5)})()
    v = model.init(KEY, jnp.ones((1, 4)))
    assert shapes(v) == {
        "params": {
            "Dense_0": {"bias": (4,)},
            "Dense_1": {"bias": (4,)},
            "parametrizations": {
                "Dense_0": {"kernel": {"original": (4, 4)}},
                "Dense_1": {"kernel": {"original": (4, 4)}},
            },
        },
        "parametrization_state": {
            "parametrizations": {
                "Dense_0": {"kernel": {"0": {"mask": (4, 4)}}},
                "Dense_1": {"kernel": {"0": {"mask": (4, 4)}}},
            }
        },
    }
    c = px.linen.constrain(model, v)
    mask = v["parametrization_state"]["parametrizations"]["Dense_0"]["kernel"]["0"]["mask"]
    np.testing.assert_array_equal(
        c["params"]["Dense_0"]["kernel"],
        v["params"]["parametrizations"]["Dense_0"]["kernel"]["original"] * mask,
    )


def test_paths_exact_nested_key():
    model = Parametrized(MLP, {"Dense_1/kernel": px.symmetric})()
    v = model.init(KEY, jnp.ones((1, 4)))
    assert shapes(v["params"]["parametrizations"]) == {"Dense_1": {"kernel": {"original": (4, 4)}}}
    assert "kernel" in v["params"]["Dense_0"]
    assert symmetry_error(px.linen.constrain(model, v)["params"]["Dense_1"]["kernel"]) == 0


def test_conv_kernel_skew_on_last_two_axes():
    # A Conv kernel is (kh, kw, in, out): matrix maps act on (in, out), batched over (kh, kw).
    conv = Parametrized(nn.Conv(4, (3, 3)), {"kernel": skew})
    v = conv.init(KEY, jnp.ones((1, 8, 8, 4)))
    k = px.linen.constrain(conv, v)["params"]["kernel"]
    assert k.shape == (3, 3, 4, 4)
    assert skew_error(k) == 0
    y = conv.apply(v, jnp.ones((1, 8, 8, 4)))
    np.testing.assert_allclose(
        y, nn.Conv(4, (3, 3)).apply(px.linen.constrain(conv, v), jnp.ones((1, 8, 8, 4))), atol=1e-6
    )


def test_rnn_recurrent_kernel():
    rnn = Parametrized(nn.RNN(nn.SimpleCell(5)), {"cell/h/kernel": [skew, px.matrix_exp]})
    xs = key_normal(1, (2, 7, 3))
    v = rnn.init(KEY, xs)
    assert shapes(v["params"]["parametrizations"]) == {
        "cell": {"h": {"kernel": {"original": (5, 5)}}}
    }
    k = px.linen.constrain(rnn, v)["params"]["cell"]["h"]["kernel"]
    assert orthogonality_error(k) < 1e-5
    np.testing.assert_allclose(
        rnn.apply(v, xs), nn.RNN(nn.SimpleCell(5)).apply(px.linen.constrain(rnn, v), xs), atol=1e-6
    )


def test_nested_inside_parent_keeps_plain_names():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = Parametrized(nn.Dense(3), {"kernel": skew})(x)
            x = Parametrized(nn.Dense(3, name="named"), {"kernel": skew})(x)
            return nn.Dense(3)(x)

    v = Net().init(KEY, X3)
    assert sorted(v["params"]) == ["Dense_0", "Dense_1", "named"]
    assert (
        "parametrizations" in v["params"]["Dense_0"] and "parametrizations" in v["params"]["named"]
    )


def test_setup_submodule():
    class Net(nn.Module):
        def setup(self):
            self.enc = Parametrized(nn.Dense(3), {"kernel": skew})

        def __call__(self, x):
            return self.enc(x)

    v = Net().init(KEY, X3)
    assert shapes(v) == {
        "params": {"enc": {"bias": (3,), "parametrizations": {"kernel": {"original": (3, 3)}}}}
    }


def test_other_methods_are_forwarded():
    emb = Parametrized(nn.Embed(5, 5), {"embedding": px.symmetric})
    v = emb.init(KEY, jnp.array([0, 1]))
    e = px.linen.constrain(emb, v)["params"]["embedding"]
    np.testing.assert_allclose(
        emb.apply(v, jnp.ones((1, 5)), method="attend"), jnp.ones((1, 5)) @ e.T, atol=1e-6
    )


# --- init is registration ----------------------------------------------------------------------
def test_init_reproduces_plain_module_with_exact_inverse():
    plain_v = nn.Dense(3).init(KEY, X3)
    layer = Parametrized(nn.Dense(3), {"kernel": Double()})
    v = layer.init(KEY, X3)
    np.testing.assert_allclose(
        v["params"]["parametrizations"]["kernel"]["original"], plain_v["params"]["kernel"] / 2
    )
    np.testing.assert_allclose(layer.apply(v, X3), nn.Dense(3).apply(plain_v, X3), rtol=1e-6)


def test_init_projects_non_orthogonal_kernel_through_chain():
    # Skew's right_inverse keeps triu(K, 1): the constrained value is the skew part of K's upper triangle.
    plain_k = nn.Dense(3).init(KEY, X3)["params"]["kernel"]
    layer = Parametrized(nn.Dense(3), {"kernel": skew})
    k = px.linen.constrain(layer, layer.init(KEY, X3))["params"]["kernel"]
    np.testing.assert_allclose(k, jnp.triu(plain_k, 1) - jnp.triu(plain_k, 1).T)


def test_multi_array_originals_and_link_params():
    layer = Parametrized(nn.Dense(4), {"kernel": [RankOne(), Scale(2.0)]})
    v = layer.init(KEY, jnp.ones((1, 3)))
    assert shapes(v["params"]["parametrizations"]) == {
        "kernel": {"original0": (3,), "original1": (4,), "1": {"s": ()}}
    }
    k = px.linen.constrain(layer, v)["params"]["kernel"]
    assert np.linalg.matrix_rank(np.asarray(k), tol=1e-5) == 1
    g = jax.grad(lambda p: jnp.sum(layer.apply({"params": p}, jnp.ones((1, 3))) ** 2))(v["params"])
    for leaf in jax.tree.leaves(g["parametrizations"]):
        assert float(jnp.abs(leaf).sum()) > 0


# --- training ----------------------------------------------------------------------------------
def test_optax_training_keeps_orthogonal_every_step():
    layer = Parametrized(nn.Dense, {"kernel": [skew, cayley]})(features=4)
    x = key_normal(2, (16, 4))
    target = x @ px.matrix_exp(px.skew(key_normal(3, (4, 4))))  # reachable: det +1
    params = layer.init(KEY, x)["params"]
    opt = standard_promotion(optax.adam(0.05))
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        loss, g = jax.value_and_grad(
            lambda p: jnp.mean((layer.apply({"params": p}, x) - target) ** 2)
        )(params)
        u, state = opt.update(g, state)
        return optax.apply_updates(params, u), state, loss

    losses = []
    for _ in range(60):
        params, state, loss = step(params, state)
        losses.append(float(loss))
        assert (
            orthogonality_error(px.linen.constrain(layer, {"params": params})["params"]["kernel"])
            < 1e-5
        )
    assert losses[-1] < 0.3 * losses[0]


def test_link_params_are_trained():
    layer = Parametrized(nn.Dense(3, use_bias=False), {"kernel": [skew, cayley, Scale()]})
    x = key_normal(4, (8, 3))
    v = layer.init(KEY, x)
    target = 3.0 * layer.apply(v, x)
    loss = lambda p: jnp.mean((layer.apply({"params": p}, x) - target) ** 2)
    p = v["params"]
    for _ in range(60):
        p = jax.tree.map(lambda a, g: a - 0.05 * g, p, jax.grad(loss)(p))
    assert abs(float(p["parametrizations"]["kernel"]["2"]["s"]) - 3.0) < 0.2


# --- state: updated only when the state collection is mutable ----------------------------------
def test_state_updates_only_when_mutable():
    layer = Parametrized(nn.Dense(3), {"kernel": Counter()})
    v = layer.init(KEY, X3)
    n = lambda v: int(v["parametrization_state"]["parametrizations"]["kernel"]["0"]["count"])
    assert (
        n(v) == 1
    )  # registration ran one updating forward (torch: the check forward in train mode)
    layer.apply(v, X3)  # eval: nothing mutable, nothing changes
    _, upd = layer.apply(v, X3, mutable=["parametrization_state"])
    assert n(upd) == 2
    v2 = {**v, **upd}
    _, upd2 = layer.apply(v2, X3, mutable=["parametrization_state"])
    assert n(upd2) == 3


# --- caching: the chain runs once per apply -----------------------------------------------------
def _count_in_jaxpr(jaxpr, prim_name, inside=False):
    """(count outside any scan/while body, count inside one) of a primitive in a jaxpr."""
    out, ins = 0, 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == prim_name:
            if inside:
                ins += 1
            else:
                out += 1
        loops = eqn.primitive.name in ("scan", "while")
        for sub in _subjaxprs(eqn):
            o, i = _count_in_jaxpr(sub, prim_name, inside or loops)
            out, ins = out + o, ins + i
    return out, ins


def _subjaxprs(eqn):
    for v in eqn.params.values():
        vals = v if isinstance(v, (tuple, list)) else [v]
        for x in vals:
            if hasattr(x, "jaxpr") and hasattr(x.jaxpr, "eqns"):
                yield x.jaxpr
            elif hasattr(x, "eqns"):
                yield x


def so_init(key, shape, dtype=jnp.float32):
    """flax's orthogonal init with det +1: [skew, cayley] cannot reach det -1 (it refuses it)."""
    q = nn.initializers.orthogonal()(key, shape, dtype)
    return q.at[:, 0].multiply(jnp.sign(jnp.linalg.det(q)))


def test_rnn_scan_evaluates_the_map_once_not_per_step():
    T, H = 100, 16
    xs = key_normal(5, (4, T, 3))
    spec = {"cell/h/kernel": [skew, cayley]}  # cayley = one LU factorization per evaluation
    rnn = Parametrized(nn.RNN(nn.SimpleCell(H, recurrent_kernel_init=so_init)), spec)
    v = rnn.init(KEY, xs)
    jaxpr = jax.make_jaxpr(lambda v, xs: rnn.apply(v, xs))(v, xs).jaxpr
    outside, inside = _count_in_jaxpr(jaxpr, "lu")
    assert (outside, inside) == (1, 0)

    # The check can fail: parametrizing the cell inside the scan puts the map in the loop body,
    # where it runs T times.
    naive = nn.RNN(
        Parametrized(nn.SimpleCell, {"h/kernel": [skew, cayley]})(H, recurrent_kernel_init=so_init)
    )
    nv = naive.init(KEY, xs)
    n_out, n_in = _count_in_jaxpr(
        jax.make_jaxpr(lambda v, xs: naive.apply(v, xs))(nv, xs).jaxpr, "lu"
    )
    assert n_in >= 1

    # And at run time, under jit: a counting parametrization fires once per apply.
    calls = []

    def counted(x):
        jax.debug.callback(lambda: calls.append(1))
        return x

    crnn = Parametrized(nn.RNN(nn.SimpleCell(H)), {"cell/h/kernel": [skew, counted]})
    cv = crnn.init(KEY, xs)
    jax.effects_barrier()
    calls.clear()
    f = jax.jit(crnn.apply)
    jax.block_until_ready(f(cv, xs))
    jax.effects_barrier()
    assert len(calls) == 1
    jax.block_until_ready(f(cv, xs))
    jax.effects_barrier()
    assert len(calls) == 2


def test_equal_models_trace_once():
    traces = []

    def f(model, v, x):
        traces.append(1)
        return model.apply(v, x)

    jf = jax.jit(f, static_argnums=0)
    m1 = Parametrized(nn.Dense, {"kernel": [skew, cayley]})(features=3)
    m2 = Parametrized(nn.Dense(3), {"kernel": [px.Skew(), px.Cayley()]})
    v = m1.init(KEY, X3)
    jf(m1, v, X3)
    jf(m2, v, X3)
    assert len(traces) == 1
    jf(Parametrized(nn.Dense(3), {"kernel": [px.Skew(), px.Cayley(), Double()]}), v, X3)
    assert len(traces) == 2


# --- buffers (non-params collections) -----------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FirstZero(px.Parametrization):
    def forward(self, x):
        return x.at[0].set(0.0)

    def right_inverse(self, y):
        return y


class BN(nn.Module):
    train: bool = False

    @nn.compact
    def __call__(self, x):
        return nn.BatchNorm(use_running_average=not self.train)(x)


def test_parametrize_a_buffer():
    model = Parametrized(BN(train=True), {"batch_stats:BatchNorm_0/var": FirstZero()})
    x = key_normal(6, (8, 3)) + 2.0
    v = model.init(KEY, x)
    assert shapes(v["batch_stats"]) == {
        "BatchNorm_0": {"mean": (3,)},
        "parametrizations": {"BatchNorm_0": {"var": {"original": (3,)}}},
    }
    c = px.linen.constrain(model, v)
    np.testing.assert_array_equal(c["batch_stats"]["BatchNorm_0"]["var"], [0.0, 1.0, 1.0])
    # Training updates the running stats; the parametrized one goes through right_inverse.
    _, upd = model.apply(v, x, mutable=["batch_stats"])
    v2 = {**v, **upd}
    var = px.linen.constrain(model, v2)["batch_stats"]["BatchNorm_0"]["var"]
    assert float(var[0]) == 0.0 and float(var[1]) != 1.0
    base, bv = px.linen.remove_parametrizations(model, v2)
    assert shapes(bv["batch_stats"]) == {"BatchNorm_0": {"mean": (3,), "var": (3,)}}
    np.testing.assert_array_equal(bv["batch_stats"]["BatchNorm_0"]["var"], var)


# --- constrained / assign / remove / queries ----------------------------------------------------
def test_assign_sets_constrained_value():
    layer = Parametrized(nn.Dense(3), {"kernel": [skew, cayley]})
    v = layer.init(KEY, X3)
    q = px.cayley(px.skew(key_normal(8, (3, 3))))
    v2 = px.linen.assign(layer, v, {"kernel": q})
    np.testing.assert_allclose(px.linen.constrain(layer, v2)["params"]["kernel"], q, atol=1e-5)
    np.testing.assert_array_equal(v2["params"]["bias"], v["params"]["bias"])
    assert (
        v["params"]["parametrizations"]["kernel"]["original"]
        is not v2["params"]["parametrizations"]["kernel"]["original"]
    )


def test_remove_leave_parametrized_true_and_false():
    layer = Parametrized(nn.Dense(3), {"kernel": [skew, cayley]})
    v = layer.init(KEY, X3)
    y = layer.apply(v, X3)
    base, bv = px.linen.remove_parametrizations(layer, v)
    assert type(base) is nn.Dense and base.features == 3
    assert shapes(bv) == {"params": {"bias": (3,), "kernel": (3, 3)}}
    np.testing.assert_allclose(base.apply(bv, X3), y, atol=1e-6)
    base, bv = px.linen.remove_parametrizations(layer, v, leave_parametrized=False)
    np.testing.assert_array_equal(
        bv["params"]["kernel"], v["params"]["parametrizations"]["kernel"]["original"]
    )


def test_remove_some_keeps_the_rest():
    model = Parametrized(MLP, {"*/kernel": skew})()
    v = model.init(KEY, jnp.ones((1, 4)))
    m2, v2 = px.linen.remove_parametrizations(model, v, "Dense_0/kernel")
    assert px.linen.is_parametrized(m2, "Dense_1/kernel") and not px.linen.is_parametrized(
        m2, "Dense_0/kernel"
    )
    np.testing.assert_allclose(
        m2.apply(v2, jnp.ones((1, 4))), model.apply(v, jnp.ones((1, 4))), atol=1e-6
    )


def test_remove_multi_array_originals():
    layer = Parametrized(nn.Dense(4), {"kernel": RankOne()})
    v = layer.init(KEY, jnp.ones((1, 3)))
    with pytest.raises(
        px.ParametrizationError, match=r"cannot leave unparametrized \(`leave_parametrized=False`\)"
    ):
        px.linen.remove_parametrizations(layer, v, leave_parametrized=False)
    base, bv = px.linen.remove_parametrizations(layer, v)
    np.testing.assert_allclose(
        bv["params"]["kernel"], px.linen.constrain(layer, v)["params"]["kernel"]
    )


def test_queries():
    layer = Parametrized(nn.Dense(3), {"kernel": skew})
    assert px.linen.is_parametrized(layer) and px.linen.is_parametrized(layer, "kernel")
    assert not px.linen.is_parametrized(layer, "bias") and not px.linen.is_parametrized(nn.Dense(3))
    assert px.linen.type_before_parametrizations(layer) is nn.Dense
    assert px.linen.type_before_parametrizations(nn.Dense(3)) is nn.Dense
    glob = Parametrized(MLP, {"*/kernel": skew})()
    assert px.linen.is_parametrized(glob, "Dense_7/kernel")


def test_wrapping_twice_appends_to_the_chain():  # init semantics: tests/test_linen_wrapping.py
    once = Parametrized(nn.Dense, {"kernel": skew})
    twice = Parametrized(once, {"kernel": cayley})
    assert px.linen.spec_of(twice) == px.linen.spec_of(
        Parametrized(nn.Dense, {"kernel": [skew, cayley]})
    )
    assert twice is Parametrized(once, {"kernel": cayley})  # made once


# --- errors: each pinned, nothing half-changed --------------------------------------------------
def test_error_unknown_path_lists_existing():
    layer = Parametrized(nn.Dense(3), {"weight": skew})
    with pytest.raises(
        px.SpecError,
        match=r"`ParametrizedDense`: spec key `weight` matches no variable of the tree; the variables are: `bias`, `kernel`",
    ):
        layer.init(KEY, X3)


def test_error_glob_matching_nothing():
    with pytest.raises(px.SpecError, match=r"spec key `\*/weight` matches no variable"):
        Parametrized(MLP, {"*/weight": skew})().init(KEY, jnp.ones((1, 4)))


def test_error_unknown_collection():
    with pytest.raises(
        px.SpecError,
        match=r"names the collection\(s\) \['batch_stats'\], which `Dense` does not create",
    ):
        Parametrized(nn.Dense(3), {"batch_stats:mean": skew}).init(KEY, X3)


def test_error_non_square_for_square_map():
    with pytest.raises(
        px.ShapeError,
        match=r"parametrizing `kernel` with \[Skew, Cayley\]: `Cayley` acts on square matrices .* got shape \(3, 5\)",
    ):
        Parametrized(nn.Dense(5), {"kernel": [skew, cayley]}).init(KEY, X3)


def test_error_shape_changing_forward_without_unsafe():
    flat = lambda k: k.reshape(-1)
    with pytest.raises(
        px.ShapeError,
        match=r"may not change the shape or dtype of the variable unless `unsafe=True`",
    ):
        Parametrized(nn.Dense(3), {"kernel": flat}).init(KEY, X3)


def test_error_assign_without_right_inverse_leaves_variables():
    layer = Parametrized(nn.Dense(3), {"kernel": [skew, px.matrix_exp]})
    v = layer.init(KEY, X3)
    before = jax.tree.map(np.asarray, v)
    with pytest.raises(
        px.RightInverseError,
        match=r"assign to `ParametrizedDense`: parametrizing `kernel` with \[Skew, MatrixExp\]: cannot assign through the chain .* `MatrixExp` does not implement right_inverse",
    ):
        px.linen.assign(layer, v, {"kernel": jnp.eye(3)})
    jax.tree.map(np.testing.assert_array_equal, v, before)


def test_error_assign_wrong_shape_and_unknown_name():
    layer = Parametrized(nn.Dense(3), {"kernel": skew})
    v = layer.init(KEY, X3)
    with pytest.raises(
        px.ShapeError, match=r"has shape \(2, 2\) and dtype float32; expected shape \(3, 3\)"
    ):
        px.linen.assign(layer, v, {"kernel": jnp.eye(2)})
    with pytest.raises(
        px.NotParametrizedError, match=r"cannot assign to `bias`: it is not parametrized"
    ):
        px.linen.assign(layer, v, {"bias": jnp.ones(3)})


def test_error_remove_unparametrized():
    layer = Parametrized(nn.Dense(3), {"kernel": skew})
    v = layer.init(KEY, X3)
    with pytest.raises(
        px.NotParametrizedError,
        match=r"`bias` is not parametrized in `ParametrizedDense`; the parametrized variables are `kernel`",
    ):
        px.linen.remove_parametrizations(layer, v, "bias")
    with pytest.raises(px.NotParametrizedError, match=r"`Dense` is not a parametrized module"):
        px.linen.remove_parametrizations(nn.Dense(3), v)


def test_error_bad_base_and_spec():
    with pytest.raises(
        px.ParametrizationTypeError,
        match=r"`base` must be a flax.linen Module class, instance or class partial.*; got function <function .*<lambda> at ",
    ):
        Parametrized(lambda x: x, {"kernel": skew})
    with pytest.raises(px.ParametrizationTypeError, match=r"a spec must be a mapping"):
        Parametrized(nn.Dense, [skew])
    with pytest.raises(
        px.ParametrizationTypeError,
        match=r"spec key `kernel`: expected a Parametrization or a callable, got str",
    ):
        Parametrized(nn.Dense, {"kernel": "skew"})


def test_failed_init_stores_nothing():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            try:
                Parametrized(nn.Dense(5), {"kernel": skew})(x)
            except px.ShapeError:
                pass
            return nn.Dense(2)(x)

    v = Net().init(KEY, X3)
    assert sorted(v["params"]) == ["Dense_1"]


def test_apply_with_everything_mutable_leaves_params_alone():
    # A chain without right_inverse: a write-back through it would raise.
    layer = Parametrized(nn.Dense(3), {"kernel": [skew, px.matrix_exp]})
    v = layer.init(KEY, X3)
    y, new = layer.apply(v, X3, mutable=True)
    jax.tree.map(np.testing.assert_array_equal, new["params"], v["params"])
    np.testing.assert_array_equal(y, layer.apply(v, X3))


def test_unsafe_allows_dtype_changing_forward():
    to_bf16 = lambda k: k.astype(jnp.bfloat16)
    with pytest.raises(
        px.ShapeError,
        match=r"dtype float32, the parametrized value has shape \(3, 3\) and dtype bfloat16",
    ):
        Parametrized(nn.Dense(3), {"kernel": to_bf16}).init(KEY, X3)
    layer = Parametrized(nn.Dense(3), {"kernel": to_bf16}, unsafe=True)
    # flax's Dense promotes its float32 input with the bfloat16 kernel: mixed on purpose here
    with jax.numpy_dtype_promotion("standard"):
        v = layer.init(KEY, X3)
        assert layer.apply(v, X3).shape == (2, 3)
    assert v["params"]["parametrizations"]["kernel"]["original"].dtype == jnp.float32
    assert px.linen.constrain(layer, v)["params"]["kernel"].dtype == jnp.bfloat16


def test_remove_with_several_exact_spec_keys():
    # Regression: removal resolved each path against the whole spec one path at a time, so any
    # spec with two exact keys failed with "spec key ... matches no variable".
    model = Parametrized(MLP, {"Dense_0/kernel": skew, "Dense_1/kernel": px.symmetric})()
    v = model.init(KEY, jnp.ones((1, 4)))
    y = model.apply(v, jnp.ones((1, 4)))
    m2, v2 = px.linen.remove_parametrizations(model, v, "Dense_1/kernel")
    assert px.linen.is_parametrized(m2, "Dense_0/kernel") and not px.linen.is_parametrized(
        m2, "Dense_1/kernel"
    )
    np.testing.assert_allclose(m2.apply(v2, jnp.ones((1, 4))), y, atol=1e-6)
    base, bv = px.linen.remove_parametrizations(model, v)
    assert type(base) is MLP
    np.testing.assert_allclose(base.apply(bv, jnp.ones((1, 4))), y, atol=1e-6)
