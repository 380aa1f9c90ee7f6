"""Parametrized models on 8 (host) devices: partitioning annotations, model and data parallel
training under jax.jit with shardings, shard_map and pmap, each compared with the single-device
computation. Runs in its own process with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (see ``tests/test_subprocess_suites.py``).
"""

import os
import pathlib
import runpy

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import parametrax as px

from _helpers import standard_promotion

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEY = jax.random.key(0)
N = 8
TOL = 1e-5  # float32: sharded reductions sum in a different order than the single-device ones

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")


def auto_mesh(shape, names):
    """A mesh whose axes XLA shards automatically (``jax.make_mesh`` defaults to explicit axes,
    where even a plain flax Megatron MLP needs ``out_sharding`` on its row-sharded matmul)."""
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(names))


def partitioned(names):
    return nn.with_partitioning(nn.initializers.lecun_normal(), names)


class ShardedMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(N, kernel_init=partitioned((None, "model")))(x)
        return nn.Dense(N, kernel_init=partitioned(("model", None)))(jnp.tanh(x))


SPEC = {"Dense_0/kernel": [px.skew, px.cayley], "Dense_1/kernel": [px.skew, px.matrix_exp]}


def orth_err(k):
    k = np.asarray(k, np.float64)
    return float(np.max(np.abs(k.T @ k - np.eye(k.shape[-1]))))


def assert_close(a, b, atol=TOL):
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol), a, b
    )


def data():
    x = jax.random.normal(jax.random.key(1), (32, N))
    y = jnp.sin(x) @ jax.random.normal(jax.random.key(2), (N, N))
    return x, y


def make_step(model, opt):
    def step(params, opt_state, x, y):
        loss, g = jax.value_and_grad(lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2))(
            params
        )
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def single_device_run(model, params, opt, x, y, steps):
    step = jax.jit(make_step(model, opt))
    o = opt.init(params)
    for _ in range(steps):
        params, o, loss = step(params, o, x, y)
    return params, loss


def test_this_process_runs_strict_like_the_main_suite():
    """tests/conftest.py reaches this subprocess suite: dtypes are not promoted implicitly."""
    if os.environ.get("JAX_NUMPY_DTYPE_PROMOTION", "strict") != "strict":
        pytest.skip("JAX_NUMPY_DTYPE_PROMOTION asks for another mode")
    assert jax.config.jax_numpy_dtype_promotion == "strict"
    with pytest.raises(jax.dtypes.TypePromotionError):
        jnp.ones(2, jnp.float32) + jnp.ones(2, jnp.int32)


# --- annotations ---------------------------------------------------------------------------------
def test_partition_specs_are_kept_on_originals_state_and_after_removal():
    dense = nn.Dense(
        N,
        kernel_init=partitioned((None, "model")),
        bias_init=nn.with_partitioning(nn.initializers.zeros, ("model",)),
    )
    model = px.Parametrized(dense, {"kernel": [px.skew, px.cayley, px.RandomPruning(0.5)]})
    x = jnp.ones((2, N))
    v = model.init(KEY, x)
    want = {
        "params": {
            "bias": P("model"),
            "parametrizations": {"kernel": {"original": P(None, "model")}},
        },
        # the pruning mask has the kernel's shape, so it is sharded like the kernel
        px.linen.STATE_COLLECTION: {
            "parametrizations": {"kernel": {"2": {"mask": P(None, "model")}}}
        },
    }
    assert nn.get_partition_spec(v) == want
    assert nn.get_partition_spec(jax.eval_shape(model.init, KEY, x)) == want
    _, mutated = model.apply(v, x, mutable=True)
    assert nn.get_partition_spec(mutated) == want
    assert nn.get_partition_spec(px.linen.assign(model, v, {"kernel": jnp.eye(N)})) == want
    _, plain = px.linen.remove_parametrizations(model, v)
    assert nn.get_partition_spec(plain) == {
        "params": {"bias": P("model"), "kernel": P(None, "model")}
    }
    # the baked variables shard exactly like the plain module's own
    assert nn.get_partition_spec(plain) == nn.get_partition_spec(dense.init(KEY, x))


# --- model parallel (Auto axes) and shard_map: examples/sharding.py asserts both ------------------
def test_sharding_example_model_parallel_and_shard_map():
    """The README's example: Megatron-sharded parametrized kernels trained under jit on a (2, 4)
    mesh follow the single-device trajectory; a shard_map data-parallel step equals the
    single-device step."""
    # the example trains with optax.adam, whose own step is not strict-clean (tests/_helpers.py)
    with jax.numpy_dtype_promotion("standard"):
        runpy.run_path(str(ROOT / "examples" / "sharding.py"), run_name="__main__")


# --- explicit sharding mode: the array types carry the mesh axes --------------------------------
@pytest.mark.parametrize(
    "chain",
    [[px.skew, px.matrix_exp], [px.symmetric], [px.skew, px.cayley, px.RandomPruning(0.3)]],
    ids=["matrix_exp", "symmetric", "cayley+pruning"],
)
def test_explicit_mode_column_sharded_kernel_trains_like_one_device(chain):
    # A - Aᵀ, a solve or expm of an explicitly column-sharded matrix is a sharding type error
    # unless the chain gathers it first (parametrax does, then reshards the value like the raw).
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
    dense = nn.Dense(N, kernel_init=partitioned((None, "model")))
    model = px.Parametrized(dense, {"kernel": chain})
    x, y = data()
    specs = nn.get_partition_spec(jax.eval_shape(model.init, KEY, x))
    v = nn.unbox(
        jax.jit(model.init, out_shardings=jax.tree.map(lambda s: NamedSharding(mesh, s), specs))(
            KEY, x
        )
    )
    state = {k: a for k, a in v.items() if k != "params"}
    opt = standard_promotion(optax.adam(0.05))

    def step(p, o, x, y):
        loss, g = jax.value_and_grad(
            lambda p: jnp.mean((model.apply({"params": p, **state}, x) - y) ** 2)
        )(p)
        u, o = opt.update(g, o, p)
        return optax.apply_updates(p, u), o, loss

    batch = NamedSharding(mesh, P("data", None))
    with jax.set_mesh(mesh):
        jstep = jax.jit(step)
        p, o = v["params"], opt.init(v["params"])
        for _ in range(5):
            p, o, loss = jstep(p, o, jax.device_put(x, batch), jax.device_put(y, batch))
        raw = p["parametrizations"]["kernel"]["original"]
        assert jax.typeof(raw).sharding.spec == P(None, "model")
        # a state the chain hands back unchanged (the pruning mask) is stored as given: sharded
        _, new = model.apply({"params": p, **state}, x, mutable=[px.linen.STATE_COLLECTION])
        state_specs = {k: s for k, s in specs.items() if k != "params"}
        assert jax.tree.map(lambda a: jax.typeof(a).sharding.spec, new) == state_specs
        assert jax.tree.all(jax.tree.map(lambda a, b: a is b, new, state))

    single = jax.tree.map(lambda a: jax.device_put(np.asarray(a), jax.devices()[0]), v)
    state = {k: a for k, a in single.items() if k != "params"}
    jstep = jax.jit(step)
    p1, o1 = single["params"], opt.init(single["params"])
    for _ in range(5):
        p1, o1, loss1 = jstep(p1, o1, x, y)
    assert_close(p, p1)
    np.testing.assert_allclose(loss, loss1, rtol=1e-5)


# --- data parallel: params replicated, batch sharded ---------------------------------------------
def test_data_parallel_training_matches_single_device():
    mesh = auto_mesh((8,), ("data",))
    model = px.Parametrized(ShardedMLP(), SPEC)
    x, y = data()
    opt = standard_promotion(optax.adam(0.05))
    params = nn.unbox(model.init(KEY, x)["params"])
    replicated = NamedSharding(mesh, P())
    batch = NamedSharding(mesh, P("data", None))
    step = jax.jit(make_step(model, opt), out_shardings=(replicated, replicated, replicated))
    p, o = jax.device_put((params, opt.init(params)), replicated)
    xs, ys = jax.device_put(x, batch), jax.device_put(y, batch)
    for _ in range(15):
        p, o, loss = step(p, o, xs, ys)
    p_ref, loss_ref = single_device_run(model, params, opt, x, y, 15)
    assert_close(p, p_ref)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)


def _sgd_reference(model, params, x, y, lr=0.1):
    g = jax.grad(lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2))(params)
    return jax.tree.map(lambda a, b: a - lr * b, params, g)


def test_pmap_data_parallel_step():
    model = px.Parametrized(ShardedMLP(), SPEC)
    x, y = data()
    params = nn.unbox(model.init(KEY, x)["params"])
    n = jax.local_device_count()

    def local_step(p, x, y):
        g = jax.grad(lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2))(p)
        g = jax.lax.pmean(g, "batch")
        return jax.tree.map(lambda a, b: a - 0.1 * b, p, g)

    replicated = jax.tree.map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), params)
    out = jax.pmap(local_step, axis_name="batch")(
        replicated, x.reshape(n, -1, N), y.reshape(n, -1, N)
    )
    expected = _sgd_reference(model, params, x, y)
    for i in range(n):
        assert_close(jax.tree.map(lambda a, i=i: a[i], out), expected)
