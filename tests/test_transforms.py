"""Every JAX / Flax transform around a ``Parametrized`` model, each compared with the
untransformed computation (a Python loop over members or steps, eager evaluation, finite
differences for derivatives)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import parametrax as px
from parametrax import Parametrized, cayley, skew

from _helpers import standard_promotion

KEY = jax.random.key(0)
N = 4
X = jax.random.normal(jax.random.key(1), (3, N))
OrthoDense = Parametrized(nn.Dense, {"kernel": [skew, cayley]})
PrunedDense = Parametrized(nn.Dense, {"kernel": px.RandomPruning(0.5)})
ATOL = 1e-6  # float32 outputs of a few 4x4 products: differences come from op fusion only


def close(a, b, atol=ATOL):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=atol, rtol=1e-5), a, b)


def member(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


@pytest.fixture(scope="module")
def ortho():
    layer = OrthoDense(N)
    return layer, layer.init(KEY, X)


# --- jax.jit -------------------------------------------------------------------------------------
def test_jit_init_and_apply_equal_eager(ortho):
    layer, v = ortho
    close(jax.jit(layer.init)(KEY, X), v)
    close(jax.jit(layer.apply)(v, X), layer.apply(v, X))
    close(jax.jit(px.linen.constrain, static_argnums=0)(layer, v), px.linen.constrain(layer, v))


# --- jax.grad, jvp: against finite differences ---------------------------------------------------
def test_grad_and_jvp_match_finite_differences():
    layer = OrthoDense(N)  # Cayley has a custom JVP: forward and reverse mode both go through it
    v = layer.init(KEY, X)
    raw = v["params"]["parametrizations"]["kernel"]["original"]

    def f(r):
        p = {"bias": v["params"]["bias"], "parametrizations": {"kernel": {"original": r}}}
        return jnp.sum(jnp.sin(layer.apply({"params": p}, X)))

    check_grads(f, (raw,), order=1, modes=["fwd", "rev"], atol=2e-2, rtol=2e-2, eps=1e-2)


def test_grad_equals_the_chain_rule_through_the_constrained_kernel(ortho):
    # d loss / d raw = vjp of the map applied to d loss / d kernel of the plain Dense.
    layer, v = ortho
    loss_plain = lambda pv: jnp.sum(nn.Dense(N).apply(pv, X) ** 2)
    g_kernel = jax.grad(loss_plain)(px.linen.constrain(layer, v))["params"]["kernel"]
    raw = v["params"]["parametrizations"]["kernel"]["original"]
    _, vjp = jax.vjp(lambda r: px.cayley(px.skew(r)), raw)
    (expected,) = vjp(g_kernel)
    g = jax.grad(lambda p: jnp.sum(layer.apply({"params": p}, X) ** 2))(v["params"])
    close(g["parametrizations"]["kernel"]["original"], expected, atol=1e-5)


# --- jax.vmap: ensembles -------------------------------------------------------------------------
# References below run one member at a time under plain jax.jit (jit == eager is tested above).
def test_vmap_ensemble_over_init_keys_and_apply():
    layer = OrthoDense(N)
    keys = jax.random.split(KEY, 5)
    ensemble = jax.jit(jax.vmap(layer.init, in_axes=(0, None)))(keys, X)
    assert ensemble["params"]["parametrizations"]["kernel"]["original"].shape == (5, N, N)
    out = jax.jit(jax.vmap(layer.apply, in_axes=(0, None)))(ensemble, X)
    init, apply = jax.jit(layer.init), jax.jit(layer.apply)
    for i, k in enumerate(keys):
        vi = init(k, X)
        close(member(ensemble, i), vi)
        close(out[i], apply(vi, X))
        kernel = px.linen.constrain(layer, member(ensemble, i))["params"]["kernel"]
        np.testing.assert_allclose(kernel.T @ kernel, np.eye(N), atol=1e-5)


def test_vmap_ensemble_with_state_and_per_member_grads():
    layer = PrunedDense(N)
    keys = jax.random.split(KEY, 3)
    ensemble = jax.jit(jax.vmap(layer.init, in_axes=(0, None)))(keys, X)
    masks = ensemble["parametrization_state"]["parametrizations"]["kernel"]["0"]["mask"]
    assert masks.shape == (3, N, N) and not np.array_equal(masks[0], masks[1])
    loss = lambda p, s: jnp.sum(layer.apply({"params": p, **s}, X) ** 2)
    state = {"parametrization_state": ensemble["parametrization_state"]}
    grads = jax.jit(jax.vmap(jax.grad(loss)))(ensemble["params"], state)
    grad = jax.jit(jax.grad(loss))
    for i in range(3):
        close(member(grads, i), grad(member(ensemble["params"], i), member(state, i)))


# --- remat ---------------------------------------------------------------------------------------
def test_nn_remat_around_a_parametrized_module(ortho):
    layer, v = ortho
    remat = nn.remat(OrthoDense)(N)
    close(remat.init(KEY, X), v)
    close(remat.apply(v, X), layer.apply(v, X))
    loss = lambda m: jax.grad(lambda p: jnp.sum(m.apply({"params": p}, X) ** 2))(v["params"])
    close(loss(remat), loss(layer))


def test_jax_checkpoint_around_apply(ortho):
    layer, v = ortho
    f = lambda p: jnp.sum(jnp.tanh(layer.apply({"params": p}, X)))
    g_ckpt = jax.jit(jax.grad(jax.checkpoint(f)))(v["params"])
    close(g_ckpt, jax.grad(f)(v["params"]), atol=1e-5)


def test_remat_inside_a_parent_module():
    class Net(nn.Module):
        remat: bool

        @nn.compact
        def __call__(self, x):
            cls = nn.remat(OrthoDense) if self.remat else OrthoDense
            return jnp.sum(cls(N, name="layer")(x) ** 2)

    v = Net(remat=False).init(KEY, X)
    close(Net(remat=True).init(KEY, X), v)
    g = lambda net: jax.grad(lambda p: net.apply({"params": p}, X))(v["params"])
    close(g(Net(remat=True)), g(Net(remat=False)))


# --- nn.scan and nn.vmap -------------------------------------------------------------------------
class Block(nn.Module):
    @nn.compact
    def __call__(self, c, _):
        return jnp.tanh(OrthoDense(N)(c)), None


def test_nn_scan_over_parametrized_layers_equals_a_loop():
    depth = 3
    stack = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=depth)()
    v = jax.jit(stack.init)(KEY, X, None)
    (name,) = v["params"]
    layers = v["params"][name]
    assert layers["parametrizations"]["kernel"]["original"].shape == (depth, N, N)
    out, _ = jax.jit(stack.apply)(v, X, None)
    c = X
    apply = jax.jit(OrthoDense(N).apply)
    for i in range(depth):
        c = jnp.tanh(apply({"params": member(layers, i)}, c))
        k = px.linen.constrain(OrthoDense(N), {"params": member(layers, i)})["params"]["kernel"]
        np.testing.assert_allclose(k.T @ k, np.eye(N), atol=1e-5)
    close(out, c)


def test_nn_scan_with_broadcast_params_shares_one_layer():
    # variable_broadcast: one parametrized layer applied at every step (an RNN-style loop).
    steps = 4
    stack = nn.scan(
        Block, variable_broadcast="params", split_rngs={"params": False}, length=steps
    )()
    v = stack.init(KEY, X, None)
    (name,) = v["params"]
    layer_v = {"params": v["params"][name]}
    out, _ = stack.apply(v, X, None)
    c = X
    for _ in range(steps):
        c = jnp.tanh(OrthoDense(N).apply(layer_v, c))
    close(out, c)


def test_nn_vmap_equals_a_loop_and_keeps_state_per_member():
    vm = nn.vmap(
        PrunedDense,
        variable_axes={"params": 0, px.linen.STATE_COLLECTION: 0},
        split_rngs={"params": True},
        in_axes=0,
    )(N)
    xs = jax.random.normal(jax.random.key(2), (4, 3, N))
    v = jax.jit(vm.init)(KEY, xs)
    assert v[px.linen.STATE_COLLECTION]["parametrizations"]["kernel"]["0"]["mask"].shape == (
        4,
        N,
        N,
    )
    out = jax.jit(vm.apply)(v, xs)
    apply = jax.jit(PrunedDense(N).apply)
    for i in range(4):
        close(out[i], apply(member(v, i), xs[i]))


# --- lax.scan training loops and donation --------------------------------------------------------
def _train_setup():
    layer = OrthoDense(N)
    v = layer.init(KEY, X)
    y = X @ px.matrix_exp(px.skew(jax.random.normal(jax.random.key(3), (N, N))))
    opt = standard_promotion(optax.adam(0.05))

    def step(params, opt_state):
        loss, g = jax.value_and_grad(lambda p: jnp.mean((layer.apply({"params": p}, X) - y) ** 2))(
            params
        )
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return layer, v["params"], opt, step


def test_lax_scan_training_loop_equals_python_loop():
    layer, params, opt, step = _train_setup()
    n = 25

    @jax.jit
    def scanned(p, o):
        def body(carry, _):
            p, o, loss = step(*carry)
            return (p, o), loss

        (p, o), losses = jax.lax.scan(body, (p, o), None, length=n)
        return p, o, losses

    p_scan, _, l_scan = scanned(params, opt.init(params))
    jstep = jax.jit(step)
    p, o, losses = params, opt.init(params), []
    for _ in range(n):
        p, o, loss = jstep(p, o)
        losses.append(loss)
    close(l_scan, jnp.stack(losses), atol=1e-5)
    close(p_scan, p, atol=1e-5)
    assert float(l_scan[-1]) < float(l_scan[0])


def test_donated_buffers_give_the_same_result():
    layer, params, opt, step = _train_setup()
    plain = jax.jit(step)
    donating = jax.jit(step, donate_argnums=(0, 1))
    p_ref, o_ref = params, opt.init(params)
    p, o = jax.tree.map(jnp.copy, (params, opt.init(params)))
    for _ in range(5):
        p_ref, o_ref, l_ref = plain(p_ref, o_ref)
        old = p
        p, o, loss = donating(p, o)
        assert old["parametrizations"]["kernel"]["original"].is_deleted()
        np.testing.assert_array_equal(loss, l_ref)
    close(p, p_ref, atol=0)
    close(o, o_ref, atol=0)


def test_stateful_update_under_jit_equals_eager():
    counter_layer = PrunedDense(N)
    v = counter_layer.init(KEY, X)
    f = lambda v: counter_layer.apply(v, X, mutable=[px.linen.STATE_COLLECTION])
    y_j, s_j = jax.jit(f)(v)
    y_e, s_e = f(v)
    close(y_j, y_e)
    close(s_j, s_e)
