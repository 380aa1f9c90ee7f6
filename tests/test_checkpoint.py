"""Checkpoints of parametrized linen models with orbax-checkpoint.

* variables (``params`` with the raw ``original``s and the ``parametrization_state`` collection)
  restore exactly, and the restored model computes the same outputs;
* a jitted optax run interrupted, checkpointed (params and optimizer state) and resumed from disk
  follows the uninterrupted trajectory bit for bit on CPU;
* restoring executes no code: orbax writes JSON metadata and raw array chunks (OCDBT /
  tensorstore), never a pickle.
"""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import parametrax as px

from _helpers import standard_promotion

ocp = pytest.importorskip("orbax.checkpoint")

KEY = jax.random.key(0)
PICKLE_MAGIC = b"\x80"  # every pickle protocol >= 2 stream starts with PROTO (0x80)


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(6)(x))
        return nn.Dense(6)(x)


def make_model():
    return px.Parametrized(
        Net(), {"Dense_0/kernel": [px.skew, px.cayley], "Dense_1/kernel": px.RandomPruning(0.5)}
    )


def _abstract(tree):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _save(path, tree):
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path, tree)
        ckpt.wait_until_finished()


def _restore(path, like):
    with ocp.StandardCheckpointer() as ckpt:
        return ckpt.restore(path, _abstract(like))


def _assert_identical(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_variables_round_trip_and_outputs_are_identical(tmp_path):
    model = make_model()
    x = jax.random.normal(jax.random.key(1), (4, 6))
    v = model.init(KEY, x)
    assert set(v) == {"params", "parametrization_state"}
    _save(tmp_path / "ckpt", v)
    restored = _restore(tmp_path / "ckpt", v)
    _assert_identical(restored, v)
    np.testing.assert_array_equal(model.apply(restored, x), model.apply(v, x))
    _assert_identical(px.linen.constrain(model, restored), px.linen.constrain(model, v))


def test_restore_without_a_target_gives_the_same_tree(tmp_path):
    # Restoring with no target structure still yields nested dicts of arrays: the layout is
    # plain data (paths and arrays), nothing class-specific is stored.
    model = make_model()
    v = model.init(KEY, jnp.ones((1, 6)))
    _save(tmp_path / "ckpt", v)
    with ocp.StandardCheckpointer() as ckpt:
        restored = ckpt.restore(tmp_path / "ckpt")
    _assert_identical(restored, v)


def test_checkpoint_directory_holds_no_pickle(tmp_path):
    model = make_model()
    v = model.init(KEY, jnp.ones((1, 6)))
    _save(tmp_path / "ckpt", v)
    files = [f for f in (tmp_path / "ckpt").rglob("*") if f.is_file()]
    assert files
    for f in files:
        assert f.suffix not in (".pkl", ".pickle", ".npy"), f
        head = f.read_bytes()[:2]
        assert not head.startswith(PICKLE_MAGIC), f"{f} looks like a pickle stream"
    # The metadata files are JSON: what orbax stores besides the raw array chunks.
    metadata = [f for f in files if f.name in ("_METADATA", "_CHECKPOINT_METADATA")]
    assert metadata
    for f in metadata:
        json.loads(f.read_text())
    tree_md = json.loads((tmp_path / "ckpt" / "_METADATA").read_text())
    assert "parametrizations" in json.dumps(tree_md)  # the raw layout is visible in plain text


def test_interrupted_training_resumes_bit_for_bit(tmp_path):
    model = make_model()
    x = jax.random.normal(jax.random.key(1), (16, 6))
    y = jax.random.normal(jax.random.key(2), (16, 6))
    v = model.init(KEY, x)
    state = {"parametrization_state": v["parametrization_state"]}
    opt = standard_promotion(optax.adam(0.05))

    @jax.jit
    def step(params, opt_state):
        loss, g = jax.value_and_grad(
            lambda p: jnp.mean((model.apply({"params": p, **state}, x) - y) ** 2)
        )(params)
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def run(params, opt_state, n):
        losses = []
        for _ in range(n):
            params, opt_state, loss = step(params, opt_state)
            losses.append(np.asarray(loss))
        return params, opt_state, losses

    p0, o0 = v["params"], opt.init(v["params"])
    p_full, o_full, l_full = run(p0, o0, 20)

    p_half, o_half, l_first = run(p0, o0, 10)
    _save(tmp_path / "step10", {"params": p_half, "opt_state": o_half, **state})
    del p_half, o_half
    like = {"params": p0, "opt_state": o0, **state}
    restored = _restore(tmp_path / "step10", like)
    assert isinstance(restored["opt_state"][0], optax.ScaleByAdamState)
    p_res, o_res, l_second = run(restored["params"], restored["opt_state"], 10)

    np.testing.assert_array_equal(np.array(l_first + l_second), np.array(l_full))
    _assert_identical(p_res, p_full)
    _assert_identical(o_res, o_full)
    k = px.linen.constrain(model, {"params": p_res, **state})["params"]["Dense_0"]["kernel"]
    np.testing.assert_allclose(np.asarray(k).T @ np.asarray(k), np.eye(6), atol=1e-5)


def test_restored_model_can_be_baked_and_served_by_the_plain_module(tmp_path):
    model = make_model()
    x = jnp.ones((2, 6))
    v = model.init(KEY, x)
    _save(tmp_path / "ckpt", v)
    restored = _restore(tmp_path / "ckpt", v)
    base, base_vars = px.linen.remove_parametrizations(model, restored)
    assert type(base) is Net and set(base_vars) == {"params"}
    np.testing.assert_allclose(base.apply(base_vars, x), model.apply(v, x), rtol=1e-6, atol=1e-6)
    _save(tmp_path / "baked", base_vars)
    _assert_identical(_restore(tmp_path / "baked", base_vars), base_vars)
