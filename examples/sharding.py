"""Parametrized models on several devices: model parallel, data parallel and shard_map.

Runs on one CPU by simulating 8 devices (set before JAX is imported):

    python examples/sharding.py

On a multi-host cluster call ``jax.distributed.initialize()`` first and build the mesh from
``jax.devices()`` (all hosts' devices); nothing below changes. Every claim is asserted.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import parametrax as px  # noqa: E402

N = 8


def ok(claim):
    print(f"[ok] {claim}")


class MLP(nn.Module):
    """Megatron-style pair: the first kernel split by columns, the second by rows."""

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.lecun_normal()
        x = nn.Dense(N, kernel_init=nn.with_partitioning(init, (None, "model")))(x)
        return nn.Dense(N, kernel_init=nn.with_partitioning(init, ("model", None)))(jnp.tanh(x))


def main():
    assert jax.device_count() >= 8, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
    model = px.Parametrized(MLP(), {"*/kernel": [px.skew, px.cayley]})
    key = jax.random.key(0)
    x = jax.random.normal(jax.random.key(1), (32, N))
    y = jnp.sin(x) @ jax.random.normal(jax.random.key(2), (N, N))
    opt = optax.adam(0.05)

    def train_step(params, opt_state, x, y):
        loss_fn = lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    # 1. Model parallel. The raw `original` of each kernel keeps the kernel's annotation, so the
    #    usual flax recipe (eval_shape -> get_partition_spec -> jit with out_shardings) shards it.
    #    (Auto axes: XLA inserts the collectives. `jax.make_mesh` defaults to Explicit axes, where
    #    flax's row-sharded second matmul needs an explicit `out_sharding`; see the README.)
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    specs = nn.get_partition_spec(jax.eval_shape(model.init, key, x))
    raw_spec = specs["params"]["parametrizations"]["Dense_0"]["kernel"]["original"]
    assert raw_spec == P(None, "model")
    ok(f"the raw original of Dense_0/kernel carries the kernel's annotation {raw_spec}")
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
    params = nn.unbox(jax.jit(model.init, out_shardings=shardings)(key, x)["params"])
    raw = params["parametrizations"]["Dense_0"]["kernel"]["original"]
    assert raw.addressable_shards[0].data.shape == (N, N // 4)
    ok(f"it is stored in 8 shards of shape {raw.addressable_shards[0].data.shape}")

    batch = NamedSharding(mesh, P("data", None))
    param_shardings = shardings["params"]

    @jax.jit
    def sharded_step(p, o, x, y):  # keep the updated params in the annotated layout
        p, o, loss = train_step(p, o, x, y)
        return jax.lax.with_sharding_constraint(p, param_shardings), o, loss

    p, o = params, opt.init(params)
    xs, ys = jax.device_put(x, batch), jax.device_put(y, batch)
    for _ in range(20):
        p, o, loss = sharded_step(p, o, xs, ys)
    raw1 = p["parametrizations"]["Dense_1"]["kernel"]["original"]
    assert raw1.sharding.is_equivalent_to(NamedSharding(mesh, P("model", None)), raw1.ndim)
    for name in ("Dense_0", "Dense_1"):
        k = np.asarray(px.linen.constrain(model, {"params": p})["params"][name]["kernel"])
        assert np.allclose(k.T @ k, np.eye(N), atol=1e-5)
    ok(f"20 sharded Adam steps: loss {float(loss):.4f}, kernels still sharded and orthogonal")

    # The same run on one device follows the same trajectory (up to summation order).
    single = jax.tree.map(lambda a: jax.device_put(np.asarray(a), jax.devices()[0]), params)
    p1, o1 = single, opt.init(single)
    step = jax.jit(train_step)
    for _ in range(20):
        p1, o1, loss1 = step(p1, o1, x, y)
    diff = max(
        jax.tree.leaves(
            jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), p, p1)
        )
    )
    assert abs(float(loss) - float(loss1)) < 1e-5 and diff < 1e-5
    ok(f"one device gives the same loss ({float(loss1):.4f}) and parameters (max diff {diff:.1e})")

    # 2. Data parallel with shard_map: params replicated, each device sees 1/8 of the batch.
    dmesh = jax.make_mesh((8,), ("data",))

    def local_sgd(p, x, y):
        loss_fn = lambda p: jax.lax.pmean(
            jnp.mean((model.apply({"params": p}, x) - y) ** 2), "data"
        )
        return jax.tree.map(lambda a, g: a - 0.1 * g, p, jax.grad(loss_fn)(p))

    sgd = jax.jit(
        jax.shard_map(local_sgd, mesh=dmesh, in_specs=(P(), P("data"), P("data")), out_specs=P())
    )
    dbatch = NamedSharding(dmesh, P("data", None))
    p_dp = sgd(
        jax.device_put(single, NamedSharding(dmesh, P())),
        jax.device_put(x, dbatch),
        jax.device_put(y, dbatch),
    )
    g = jax.grad(lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2))(single)
    expected = jax.tree.map(lambda a, b: a - 0.1 * b, single, g)
    err = max(
        jax.tree.leaves(
            jax.tree.map(
                lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), p_dp, expected
            )
        )
    )
    assert err < 1e-5
    ok(f"shard_map data-parallel SGD step equals the single-device step (max diff {err:.1e})")
    print("All sharding claims hold.")


if __name__ == "__main__":
    main()
