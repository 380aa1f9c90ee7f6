"""The linen front on models written the way Flax's own examples write them (issue 13 §2)."""

import functools
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import parametrax as px
from parametrax import Parametrized, skew

from _helpers import MLP, skew_error

KEY = jax.random.key(0)


class Net(nn.Module):
    width: int = 3
    depth: int = 1

    @nn.compact
    def __call__(self, x):
        for _ in range(self.depth):
            x = nn.Dense(self.width)(x)
        return x


class AutoEncoder(nn.Module):
    def setup(self):
        self.enc = nn.Dense(3)
        self.dec = nn.Dense(3)

    def __call__(self, x):
        return self.dec(self.enc(x))

    def encode(self, x):
        return self.enc(x)


def test_class_partial_gives_the_same_partial_of_the_parametrized_class():
    Net2 = functools.partial(Net, width=4, depth=2)  # as Flax's ResNet18 = partial(ResNet, ...)
    PNet2 = Parametrized(Net2, {"*/kernel": skew})
    assert isinstance(PNet2, functools.partial) and PNet2.keywords == {"width": 4, "depth": 2}
    model = PNet2()
    assert (model.width, model.depth) == (4, 2) and px.linen.is_parametrized(
        model, "Dense_1/kernel"
    )
    v = model.init(KEY, jnp.ones((1, 4)))
    plain = Net2().init(KEY, jnp.ones((1, 4)))
    k = px.linen.constrain(model, v)["params"]["Dense_1"]["kernel"]
    assert skew_error(k) == 0.0
    # init registered the plain model's kernel: its strict upper triangle is kept
    np.testing.assert_array_equal(np.triu(k, 1), np.triu(plain["params"]["Dense_1"]["kernel"], 1))


def test_method_given_as_the_base_class_function_is_the_named_method():
    model = Parametrized(AutoEncoder(), {"*/kernel": skew})
    x = jnp.arange(6.0).reshape(2, 3)
    v = model.init(KEY, x)
    by_name = model.apply(v, x, method="encode")
    by_function = model.apply(v, x, method=AutoEncoder.encode)
    np.testing.assert_array_equal(by_function, by_name)
    c = px.linen.constrain(model, v)["params"]["enc"]
    np.testing.assert_allclose(by_name, x @ c["kernel"] + c["bias"], rtol=1e-6)
    v2 = model.init(KEY, x, method=AutoEncoder.encode)
    assert (
        "enc" in v2["params"]["parametrizations"] and "dec" not in v2["params"]["parametrizations"]
    )


# --- differentiating a stateful chain with its state immutable ----------------------------------
def _loss(model, variables, mutable):
    def loss(params):
        out = model.apply({**variables, "params": params}, jnp.ones((2, 3)), mutable=mutable)
        return jnp.sum(out[0] if mutable else out)

    return loss


def test_grad_with_state_immutable_warns_that_the_power_iteration_is_frozen():
    model = Parametrized(nn.Dense(3), {"kernel": px.SpectralNorm()})
    v = model.init(KEY, jnp.ones((2, 3)))
    with pytest.warns(
        px.linen.FrozenStateWarning,
        match=r"`parametrization_state` is not mutable.*"
        r"`parametrizations/kernel/0/u`.*mutable=\[\.\.\., \"parametrization_state\"\]",
    ):
        jax.grad(_loss(model, v, ["batch_stats"]))(v["params"])  # a ported BatchNorm train step
    with pytest.warns(px.linen.FrozenStateWarning):
        jax.jit(jax.vmap(jax.grad(_loss(model, v, False)), in_axes=None, axis_size=2))(v["params"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jax.grad(_loss(model, v, ["batch_stats", "parametrization_state"]))(v["params"])
        model.apply(v, jnp.ones((2, 3)))  # evaluation: not differentiated
        jax.jit(lambda v: model.apply(v, jnp.ones((2, 3))))(v)


def test_grad_with_state_that_never_moves_does_not_warn():
    model = Parametrized(nn.Dense(3), {"kernel": px.RandomPruning(0.5)})  # a mask: fixed state
    v = model.init(KEY, jnp.ones((2, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jax.grad(_loss(model, v, False))(v["params"])


_EXPLICIT = hasattr(jax, "set_mesh") and hasattr(jax.sharding, "reshard")


def _explicit_column_sharded(chain):
    """A Dense whose kernel (and so a kernel-shaped link state) is column-sharded on a one-device
    mesh in JAX's explicit mode: the chain gathers its inputs before the maps."""
    mesh = jax.make_mesh((1,), ("model",), axis_types=(jax.sharding.AxisType.Explicit,))
    init = nn.with_partitioning(nn.initializers.lecun_normal(), (None, "model"))
    model = Parametrized(nn.Dense(3, kernel_init=init), {"kernel": chain})
    specs = nn.get_partition_spec(jax.eval_shape(model.init, KEY, jnp.ones((2, 3))))
    shardings = jax.tree.map(lambda s: jax.sharding.NamedSharding(mesh, s), specs)
    v = nn.unbox(jax.jit(model.init, out_shardings=shardings)(KEY, jnp.ones((2, 3))))
    return mesh, model, v


@pytest.mark.skipif(not _EXPLICIT, reason="JAX without explicit sharding")
def test_explicitly_sharded_state_the_chain_hands_back_is_not_reported_as_advanced():
    # The chain gathers the sharded mask; handing it back unchanged is no advance (eagerly and
    # traced), and a mutable apply stores the very mask given, sharding kept.
    mesh, model, v = _explicit_column_sharded([px.skew, px.RandomPruning(0.5)])
    mask = v["parametrization_state"]["parametrizations"]["kernel"]["1"]["mask"]
    assert jax.typeof(mask).sharding.spec == jax.sharding.PartitionSpec(None, "model")
    with jax.set_mesh(mesh), warnings.catch_warnings():
        warnings.simplefilter("error")
        jax.grad(_loss(model, v, False))(v["params"])
        jax.jit(jax.grad(_loss(model, v, False)))(v["params"])
        _, new = model.apply(v, jnp.ones((2, 3)), mutable=["parametrization_state"])
        _, new_jit = jax.jit(
            lambda v: model.apply(v, jnp.ones((2, 3)), mutable=["parametrization_state"])
        )(v)
    for state in (new, new_jit):
        kept = state["parametrization_state"]["parametrizations"]["kernel"]["1"]["mask"]
        assert jax.typeof(kept).sharding.spec == jax.typeof(mask).sharding.spec
        np.testing.assert_array_equal(kept, mask)
    assert new["parametrization_state"]["parametrizations"]["kernel"]["1"]["mask"] is mask


@pytest.mark.skipif(not _EXPLICIT, reason="JAX without explicit sharding")
def test_explicitly_sharded_state_that_advances_still_warns():
    mesh, model, v = _explicit_column_sharded([px.SpectralNorm(), px.RandomPruning(0.5)])
    with jax.set_mesh(mesh):
        for grad in (jax.grad, lambda f: jax.jit(jax.grad(f))):
            with pytest.warns(px.linen.FrozenStateWarning) as record:
                grad(_loss(model, v, False))(v["params"])
            (message,) = {str(w.message) for w in record}
            assert "`parametrizations/kernel/0/u`" in message and "mask" not in message


# --- a stateful parametrized cell inside nn.RNN ---------------------------------------------------
def _rnn(**rnn_kwargs):
    cell = Parametrized(nn.SimpleCell, {"h/kernel": px.SpectralNorm()})

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.RNN(cell(4), **rnn_kwargs)(x)

    return Model()


def test_stateful_cell_inside_rnn_fails_at_init_with_both_fixes():
    with pytest.raises(
        px.ParametrizationError,
        match=r"`parametrization_state`, which is immutable "
        r"here.*`Parametrized\(nn.RNN\(cell\), \{\"cell/<path>\": \.\.\.\}\)`.*"
        r"variable_broadcast=\[\"params\", \"parametrization_state\"\]",
    ):
        _rnn().init(KEY, jnp.ones((2, 5, 3)))


@pytest.mark.parametrize("fix", ["broadcast", "wrap the rnn"])
def test_both_fixes_in_the_message_work_and_advance_the_state(fix):
    x = jnp.ones((2, 5, 3))
    if fix == "broadcast":
        model = _rnn(variable_broadcast=["params", "parametrization_state"])
    else:
        model = Parametrized(nn.RNN(nn.SimpleCell(4)), {"cell/h/kernel": px.SpectralNorm()})
    v = model.init(KEY, x)
    y, new = model.apply(v, x, mutable=["parametrization_state"])
    before, after = jax.tree.leaves(v["parametrization_state"]), jax.tree.leaves(new)
    assert len(before) == 2 and all(not np.array_equal(a, b) for a, b in zip(before, after))
    # eval reuses the stored u, v: with the advanced ones it gives the training output
    np.testing.assert_allclose(model.apply({**v, **new}, x), y, rtol=1e-5, atol=1e-6)


def test_tabulate_lists_inner_rows_and_counts_every_raw_array_once():
    model = Parametrized(MLP(), {"*/kernel": skew})
    table = nn.tabulate(model, KEY, compute_flops=False, console_kwargs={"width": 200})(
        jnp.ones((1, 4))
    )
    rows = [line for line in table.splitlines() if "│ Dense_0 " in line or "│ Dense_1 " in line]
    assert len(rows) == 2  # the inner modules' rows are there
    raw = model.init(KEY, jnp.ones((1, 4)))["params"]
    n = sum(a.size for a in jax.tree.leaves(raw))
    assert n == 2 * 16 + 2 * 4 and f"Total Parameters: {n} " in table
