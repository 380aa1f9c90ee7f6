"""Peer implementations timed next to parametrax on W1, W3 and W4 (issue 15, point 5).

What a JAX user compares parametrax with: Flax linen's and Flax NNX's own ``SpectralNorm`` /
``WeightNorm`` wrappers, equinox's, and parametrax's own NNX front. Every builder here returns
:class:`_harness.Runner` objects that start from the weights, batch and power-iteration vectors
of the workload's parametrax runner, so their first losses agree with it and
``workloads.check_losses`` cross-checks them like every other runner; ``run.py`` times them
interleaved with it.

The wrappers do not all compute the same thing after the first step (``results.md``, "Peers"):

* ``flax.linen.SpectralNorm`` draws ``u`` at random and runs only ``n_steps`` power iterations
  per call, no warm-up: its first sigma estimates are rough unless ``u`` is set (here it is
  set to parametrax's converged ``u``, so that the losses can be compared).
* ``flax.nnx.SpectralNorm`` / ``WeightNorm`` write the normalised kernel back into the wrapped
  layer's ``kernel`` Param at every call (the raw value is lost: the next step's gradient is
  applied to the normalised kernel), and ``nnx.WeightNorm`` keeps its scales in a plain dict,
  not in an ``nnx.Param``: ``nnx.Optimizer`` never trains them, so every column keeps its
  initial norm forever. Here the scales are set to the initial column norms (so that the first
  losses agree); by default they are ones.
* equinox's ``SpectralNorm`` runs 15 warm-up iterations at construction as torch does, and its
  ``WeightNorm`` initialises ``g`` to the weight's norms (the same semantics as parametrax).

The NNX runners are stepped as NNX users step them: ``nnx.jit`` of a step that calls
``nnx.value_and_grad`` and ``nnx.Optimizer.update``; their compile figure is the first call
(trace + compile + one step) and they have no XLA memory figure.
"""

from __future__ import annotations

import time

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _harness import Runner, jax_runner
from flax import nnx
from flax.traverse_util import flatten_dict, unflatten_dict

import parametrax as px
from parametrax.catalog.orthogonal import Orthogonal

LINEN_SN = "flax.linen SpectralNorm"
NNX_SN = "flax.nnx SpectralNorm"
EQX_SN = "equinox SpectralNorm"
LINEN_WN = "flax.linen WeightNorm"
NNX_WN = "flax.nnx WeightNorm"
EQX_WN = "equinox WeightNorm"
PX_NNX = "parametrax nnx"
PEER_PREFIXES = ("flax.linen", "flax.nnx", "equinox", PX_NNX)


def is_peer(name: str) -> bool:
    return name.startswith(PEER_PREFIXES)


def _xent(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _bce(logits, labels):
    return optax.sigmoid_binary_cross_entropy(logits, labels).mean()


def nnx_runner(
    name: str,
    model: nnx.Module,
    loss_fn,
    batch: tuple,
    opt: optax.GradientTransformation,
    note: str = "",
) -> Runner:
    """A runner for an NNX ``model`` trained with ``nnx.Optimizer(model, opt, wrt=nnx.Param)``
    and ``loss_fn(model, *batch)``: the step NNX's documentation writes."""
    optimizer = nnx.Optimizer(model, opt, wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, *batch):
        loss, grads = nnx.value_and_grad(loss_fn)(model, *batch)
        optimizer.update(model, grads)
        return loss

    def step() -> float:
        return float(jax.block_until_ready(train_step(model, optimizer, *batch)))

    t0 = time.perf_counter()
    loss0 = step()  # the first call traces and compiles
    return Runner(name, step, loss0, time.perf_counter() - t0, None, note)


# ------------------------------------------------------------------------------------------------
# W1: the NNX front of parametrax
# ------------------------------------------------------------------------------------------------
def w1_nnx(n: int, map_name: str, w0, b0, x, y, opt) -> list[Runner]:
    layer = nnx.Linear(n, n, rngs=nnx.Rngs(0))
    layer.kernel.set_value(jnp.asarray(w0))
    layer.bias.set_value(jnp.asarray(b0))
    px.nnx.register_parametrization(
        layer, "kernel", Orthogonal(map=map_name), key=jax.random.key(1)
    )

    def loss(model, x, y):
        return jnp.mean((model(x) - y) ** 2)

    return [nnx_runner(PX_NNX, layer, loss, (jnp.asarray(x), jnp.asarray(y)), opt)]


# ------------------------------------------------------------------------------------------------
# W3: a 3-conv discriminator with spectral norm on every conv
# ------------------------------------------------------------------------------------------------
class _LinenSNDisc(nn.Module):
    channels: int

    @nn.compact
    def __call__(self, x):
        for i in range(3):
            conv = nn.Conv(
                self.channels, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), name=f"conv{i}"
            )
            x = nn.SpectralNorm(conv, n_steps=1, name=f"sn{i}")(x, update_stats=True)
            x = nn.leaky_relu(x, 0.2)
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(1, name="head")(x)[:, 0]


def _set_leaves(tree: dict, pick) -> dict:
    """``tree`` with each leaf replaced by ``pick(path_tuple, leaf)``."""
    flat = flatten_dict(tree)
    return unflatten_dict({k: pick(k, v) for k, v in flat.items()})


def w3_peers(*, channels, ks, bs, hk, hb, uv, x, y, opt, seed=0) -> list[Runner]:
    """W3's discriminator under flax.linen's, flax.nnx's and equinox's ``SpectralNorm``.
    ``uv``: parametrax's converged ``(u, v)`` per conv (``u`` over the output channels, ``v``
    over the flattened ``(kh, kw, in)`` axis)."""
    runners = []
    side = x.shape[1] // 8

    # flax.linen
    model = _LinenSNDisc(channels)
    variables = model.init(jax.random.key(seed), x)

    def pick_param(path, leaf):
        for i in range(3):
            if f"conv{i}" in path or f"sn{i}" in path:
                return jnp.asarray(ks[i] if path[-1] == "kernel" else bs[i])
        return jnp.asarray(hk if path[-1] == "kernel" else hb)

    def pick_stat(path, leaf):
        i = next(i for i in range(3) if f"sn{i}" in path or any(f"conv{i}" in p for p in path))
        if path[-1].endswith("/u"):
            return jnp.asarray(uv[i][0]).reshape(leaf.shape)
        return leaf

    params = _set_leaves(dict(variables["params"]), pick_param)
    stats = {"batch_stats": _set_leaves(dict(variables["batch_stats"]), pick_stat)}

    def linen_loss(p, stats, x, y):
        out, upd = model.apply({"params": p, **stats}, x, mutable=["batch_stats"])
        return _bce(out, y), {**stats, **upd}

    runners.append(
        jax_runner(LINEN_SN, linen_loss, params, stats, (x, y), opt, loss_updates_aux=True)
    )

    # flax.nnx
    class NNXDisc(nnx.Module):
        def __init__(self, rngs):
            cins = [3, channels, channels]
            self.convs = nnx.List(
                [
                    nnx.SpectralNorm(
                        nnx.Conv(
                            cin,
                            channels,
                            (4, 4),
                            strides=(2, 2),
                            padding=((1, 1), (1, 1)),
                            rngs=rngs,
                        ),
                        rngs=rngs,
                    )
                    for cin in cins
                ]
            )
            self.head = nnx.Linear(side * side * channels, 1, rngs=rngs)

        def __call__(self, x):
            for c in self.convs:
                x = nnx.leaky_relu(c(x), 0.2)
            return self.head(x.reshape((x.shape[0], -1)))[:, 0]

    m = NNXDisc(nnx.Rngs(seed))
    for i, c in enumerate(m.convs):
        c.layer_instance.kernel.set_value(jnp.asarray(ks[i]))
        c.layer_instance.bias.set_value(jnp.asarray(bs[i]))
        c.batch_stats[("kernel", "u")].set_value(jnp.asarray(uv[i][0]).reshape(1, -1))
    m.head.kernel.set_value(jnp.asarray(hk))
    m.head.bias.set_value(jnp.asarray(hb))
    runners.append(
        nnx_runner(
            NNX_SN, m, lambda model, x, y: _bce(model(x), y), (jnp.asarray(x), jnp.asarray(y)), opt
        )
    )

    # equinox (channels first, one sample at a time, vmapped over the batch)
    keys = jax.random.split(jax.random.key(seed), 8)
    cins = [3, channels, channels]
    layers = []
    for i in range(3):
        conv = eqx.nn.Conv2d(cins[i], channels, 4, stride=2, padding=1, key=keys[i])
        conv = eqx.tree_at(
            lambda c: (c.weight, c.bias),
            conv,
            (jnp.asarray(np.transpose(ks[i], (3, 2, 0, 1))), jnp.asarray(bs[i]).reshape(-1, 1, 1)),
        )
        layers.append(eqx.nn.SpectralNorm(conv, "weight", key=keys[3 + i]))
    head = eqx.nn.Linear(side * side * channels, 1, key=keys[6])
    hk_t = hk.reshape(side, side, channels).transpose(2, 0, 1).reshape(1, -1)
    head = eqx.tree_at(lambda h: (h.weight, h.bias), head, (jnp.asarray(hk_t), jnp.asarray(hb)))

    class EqxDisc(eqx.Module):
        convs: list
        head: eqx.nn.Linear

        def __call__(self, x, state):
            for c in self.convs:
                x, state = c(x, state)
                x = jax.nn.leaky_relu(x, 0.2)
            return self.head(x.reshape(-1))[0], state

    emodel = EqxDisc(layers, head)
    state = eqx.nn.State(emodel)
    for i, c in enumerate(emodel.convs):  # parametrax's u, v; v reordered to (in, kh, kw)
        u, v = (np.asarray(a) for a in uv[i])
        v = v.reshape(4, 4, cins[i]).transpose(2, 0, 1).reshape(-1)
        state = state.set(c.uv_index, (jnp.asarray(u), jnp.asarray(v)))
    eparams, estatic = eqx.partition(emodel, eqx.is_inexact_array)
    xe = jnp.asarray(np.transpose(x, (0, 3, 1, 2)))

    def eqx_loss(p, state, x, y):
        model = eqx.combine(p, estatic)
        out, state = jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(
            x, state
        )
        return _bce(out, y), state

    runners.append(
        jax_runner(
            EQX_SN, eqx_loss, eparams, state, (xe, jnp.asarray(y)), opt, loss_updates_aux=True
        )
    )
    return runners


# ------------------------------------------------------------------------------------------------
# W4: an MLP with weight norm on every Dense
# ------------------------------------------------------------------------------------------------
class _LinenWNMLP(nn.Module):
    width: int
    depth: int
    classes: int = 10

    @nn.compact
    def __call__(self, x):
        for i in range(self.depth):
            x = nn.relu(nn.WeightNorm(nn.Dense(self.width, name=f"fc{i}"), name=f"wn{i}")(x))
        return nn.WeightNorm(nn.Dense(self.classes, name="head"), name="wnhead")(x)


def w4_peers(*, width, depth, names, ws, bs, x, y, opt, seed=0) -> list[Runner]:
    """W4's MLP under flax.linen's, flax.nnx's and equinox's ``WeightNorm``, each starting
    from the same kernels (scales set to the kernels' column norms)."""
    runners = []
    norms = [np.linalg.norm(w, axis=0) for w in ws]
    idx = {n: i for i, n in enumerate(names)}

    # flax.linen
    model = _LinenWNMLP(width, depth)
    variables = model.init(jax.random.key(seed), x)

    def pick(path, leaf):
        layer = next(
            n
            for n in names
            if n in path or n.replace("fc", "wn") in path or (n == "head" and "wnhead" in path)
        )
        i = idx[layer]
        if path[-1] == "kernel":
            return jnp.asarray(ws[i])
        if path[-1] == "bias":
            return jnp.asarray(bs[i])
        if path[-1].endswith("scale"):
            return jnp.asarray(norms[i]).reshape(leaf.shape)
        raise KeyError(path)

    params = _set_leaves(dict(variables["params"]), pick)

    def linen_loss(p, _, x, y):
        return _xent(model.apply({"params": p}, x), y)

    runners.append(jax_runner(LINEN_WN, linen_loss, params, (), (x, y), opt))

    # flax.nnx
    dims = [ws[0].shape[0]] + [width] * depth + [ws[-1].shape[1]]

    class NNXMLP(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List(
                [
                    nnx.WeightNorm(nnx.Linear(a, b, rngs=rngs), rngs=rngs)
                    for a, b in zip(dims, dims[1:])
                ]
            )

        def __call__(self, x):
            for i, layer in enumerate(self.layers):
                x = layer(x)
                if i < len(self.layers) - 1:
                    x = nnx.relu(x)
            return x

    m = NNXMLP(nnx.Rngs(seed))
    for i, wn in enumerate(m.layers):
        wn.layer_instance.kernel.set_value(jnp.asarray(ws[i]))
        wn.layer_instance.bias.set_value(jnp.asarray(bs[i]))
        (path,) = list(wn.scales)
        wn.scales[path] = jnp.asarray(norms[i])
    runners.append(
        nnx_runner(
            NNX_WN, m, lambda model, x, y: _xent(model(x), y), (jnp.asarray(x), jnp.asarray(y)), opt
        )
    )

    # equinox (torch layout: weight (out, in); norms over every axis but the first)
    keys = jax.random.split(jax.random.key(seed), len(ws))
    elayers = []
    for i, (w, b) in enumerate(zip(ws, bs)):
        lin = eqx.nn.Linear(*w.shape, key=keys[i])
        lin = eqx.tree_at(lambda l: (l.weight, l.bias), lin, (jnp.asarray(w.T), jnp.asarray(b)))
        elayers.append(eqx.nn.WeightNorm(lin))

    def eforward(layers, x):
        for i, layer in enumerate(layers):
            x = layer(x)
            if i < len(layers) - 1:
                x = jax.nn.relu(x)
        return x

    eparams, estatic = eqx.partition(elayers, eqx.is_inexact_array)

    def eqx_loss(p, _, x, y):
        layers = eqx.combine(p, estatic)
        return _xent(jax.vmap(lambda xi: eforward(layers, xi))(x), y)

    runners.append(jax_runner(EQX_WN, eqx_loss, eparams, (), (x, y), opt))
    return runners
