"""Micro-benchmarks: the cost of each orthogonal map, and compile time vs model size."""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _harness import Runner, measure
from expm_variants import expm_reverse_only
from workloads import HAVE_TORCH, ortho_map_jax, orthogonal_matrix, skew_lower

import parametrax as px
from parametrax.catalog import Cayley, Skew
from parametrax.catalog.orthogonal import Orthogonal


# ------------------------------------------------------------------------------------------------
# Cost of one orthogonal map, forward + backward, on an n x n matrix
# ------------------------------------------------------------------------------------------------
def _jax_fb(fn, x, w):
    g = jax.jit(jax.value_and_grad(lambda x: jnp.sum(fn(x) * w)))

    def call():
        v, gr = g(x)
        jax.block_until_ready(gr)

    return call


def _plain_cayley_tutorial(x):
    a = jnp.triu(x, 1)
    a = a - a.T
    eye = jnp.eye(x.shape[-1], dtype=x.dtype)
    return jnp.linalg.solve(eye - a, eye + a)


def map_cost(
    n: int, *, rounds: int, round_s: float, householder_max: int, torch_ok=True, quick: bool = False
):
    """Seconds for value_and_grad of ``sum(map(X) * W)`` for every map, interleaved.
    ``quick``: the Cayley maps only (the matrix exponentials dominate compile time)."""
    rng = np.random.default_rng(n)
    x = jnp.asarray((rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32))
    w = jnp.asarray(rng.standard_normal((n, n)).astype(np.float32))
    maps = ["matrix_exp", "cayley"] + (["householder"] if n <= householder_max else [])
    if quick:
        maps = ["cayley"]
    runners = []
    for m in maps:
        o = Orthogonal(map=m, use_trivialization=False)
        runners.append(Runner(f"parametrax Orthogonal {m}", _jax_fb(o.forward, x, w), 0.0))
    # the tutorial chain [Skew, Cayley]: parametrax's custom rule vs jnp.linalg.solve autodiff
    chain = lambda x: Cayley()(Skew()(x))  # noqa: E731
    runners.append(Runner("parametrax [Skew, Cayley]", _jax_fb(chain, x, w), 0.0))
    runners.append(Runner("jax solve [skew, cayley]", _jax_fb(_plain_cayley_tutorial, x, w), 0.0))
    runners.append(
        Runner(
            "jax (hand-written) cayley", _jax_fb(lambda x: ortho_map_jax(x, "cayley"), x, w), 0.0
        )
    )
    if not quick:
        runners.append(
            Runner(
                "expm, reverse-only squarings (experiment)",
                _jax_fb(lambda x: expm_reverse_only(skew_lower(x)), x, w),
                0.0,
            )
        )
    if torch_ok and HAVE_TORCH:
        import torch  # noqa: PLC0415
        from torch.nn.utils.parametrizations import orthogonal  # noqa: PLC0415

        xt = torch.tensor(np.asarray(x))
        wt = torch.tensor(np.asarray(w))
        for m in maps:
            lin = torch.nn.Linear(n, n, bias=False)
            orthogonal(lin, orthogonal_map=m, use_trivialization=False)
            p = lin.parametrizations.weight[0]
            xr = xt.clone().requires_grad_(True)

            def call(p=p, xr=xr):
                xr.grad = None
                (p(xr) * wt).sum().backward()

            runners.append(Runner(f"torch {m}", lambda c=call: c(), 0.0))
    res = measure(runners, rounds=rounds, warmup=1, round_s=round_s, max_steps=30)
    return {name: r["median_s"] for name, r in res.items()}


# ------------------------------------------------------------------------------------------------
# Compile time vs number of parametrized layers
# ------------------------------------------------------------------------------------------------
class Stack(nn.Module):
    depth: int
    width: int = 64

    @nn.compact
    def __call__(self, x):
        for i in range(self.depth):
            x = jnp.tanh(nn.Dense(self.width, name=f"l{i}")(x))
        return x


def compile_time(depth: int, *, width: int = 64, map_name: str = "matrix_exp"):
    """Seconds to trace + lower and to compile one training step with ``depth`` orthogonal
    layers: parametrax vs the hand-written model."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, width)).astype(np.float32)
    y = rng.standard_normal((8, width)).astype(np.float32)
    opt = optax.adam(1e-3)
    out = {}

    model = px.Parametrized(Stack(depth, width), {"l*/kernel": Orthogonal(map=map_name)})
    variables = model.init(jax.random.key(0), x)
    params = variables["params"]
    rest = {k: v for k, v in variables.items() if k != "params"}

    def px_loss(p, rest, x, y):
        return jnp.mean((model.apply({"params": p, **rest}, x) - y) ** 2)

    bases = [jnp.asarray(orthogonal_matrix(rng, width)) for _ in range(depth)]
    hparams = [{"x": -jnp.eye(width), "b": jnp.zeros(width)} for _ in range(depth)]

    def jax_loss(ps, bases, x, y):
        h = x
        for p, b in zip(ps, bases):
            h = jnp.tanh(h @ (b @ ortho_map_jax(p["x"], map_name)) + p["b"])
        return jnp.mean((h - y) ** 2)

    for name, loss, p, aux in [
        ("parametrax", px_loss, params, rest),
        ("jax (hand-written)", jax_loss, hparams, bases),
    ]:

        def step(p, o, aux, x, y, loss=loss):
            l, g = jax.value_and_grad(loss)(p, aux, x, y)
            u, o = opt.update(g, o, p)
            return optax.apply_updates(p, u), o, l

        o = opt.init(p)
        t0 = time.perf_counter()
        lowered = jax.jit(step).lower(p, o, aux, x, y)
        t1 = time.perf_counter()
        lowered.compile()
        t2 = time.perf_counter()
        out[name] = {"trace_lower_s": t1 - t0, "compile_s": t2 - t1, "total_s": t2 - t0}
    return out


# ------------------------------------------------------------------------------------------------
# Base operations, JAX vs torch: what the library does not control
# ------------------------------------------------------------------------------------------------
def _torch_fb(fn, *args):
    """torch forward + backward of ``sum(fn(*args))`` w.r.t. every argument."""
    args = [a.clone().requires_grad_(True) for a in args]

    def call():
        for a in args:
            a.grad = None
        fn(*args).sum().backward()

    return call


def primitives(
    *,
    n_sizes=(256, 512),
    batch=128,
    convs=((3, 64, 32), (64, 64, 16)),
    rnn=(64, 100, 32, 256),
    rounds: int,
    round_s: float,
    torch_ok: bool = True,
):
    """Seconds for forward + backward (w.r.t. every input, as in a training step) of the
    operations the workloads are built from, JAX and torch interleaved.

    Returns ``{op: {"jax": s, "torch": s or None}}``. ``convs`` are W3's layers
    ``(in channels, out channels, input size)``: 4×4 kernels, stride 2, padding 1, batch 64.
    ``rnn`` is W2's recurrence ``(batch, steps, inputs, hidden)`` without the orthogonal map:
    ``lax.scan`` of a tanh cell (the hand-written model) against torch's fused ``nn.RNN``.
    """
    rng = np.random.default_rng(0)
    have_torch = torch_ok and HAVE_TORCH
    if have_torch:
        import torch  # noqa: PLC0415
    jax_fns, torch_fns = {}, {}

    def add(op, jfn, jargs, tfn, targs):  # tfn None: no torch counterpart
        jargs = tuple(jnp.asarray(a) for a in jargs)
        g = jax.jit(jax.grad(lambda *a: jnp.sum(jfn(*a)), argnums=tuple(range(len(jargs)))))

        def call(g=g, jargs=jargs):
            jax.block_until_ready(g(*jargs))

        jax_fns[op] = call
        if have_torch and tfn is not None:
            targs = [torch.tensor(np.asarray(a)) for a in targs]
            # the two sides must compute the same thing (layouts differ): compare the sums
            with torch.no_grad():
                ts = float(tfn(*targs).double().sum())
            js = float(jnp.sum(jfn(*jargs)))
            scale = float(jnp.sum(jnp.abs(jfn(*jargs)))) + 1e-12
            if abs(ts - js) > 1e-4 * scale:
                raise AssertionError(f"{op}: JAX and torch disagree (sum {js:.6g} vs {ts:.6g})")
            torch_fns[op] = _torch_fb(tfn, *targs)

    for n in n_sizes:
        a = (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        x = rng.standard_normal((batch, n)).astype(np.float32)
        add(f"matmul {n}×{n} @ {n}×{n}", jnp.matmul, (a, b), lambda a, b: a @ b, (a, b))
        add(f"dense {batch}×{n} @ {n}×{n}", jnp.matmul, (x, a), lambda x, w: x @ w, (x, a))
        m = np.eye(n, dtype=np.float32) - 0.5 * (a - a.T)  # a Cayley system matrix
        add(
            f"solve {n}×{n}",
            jnp.linalg.solve,
            (m, b),
            lambda m, b: torch.linalg.solve(m, b),
            (m, b),
        )
    for cin, cout, hw in convs:
        xs = rng.standard_normal((64, hw, hw, cin)).astype(np.float32)
        k = (rng.standard_normal((4, 4, cin, cout)) / np.sqrt(16 * cin)).astype(np.float32)

        def jconv(x, k):
            return jax.lax.conv_general_dilated(
                x, k, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
            )

        def tconv(x, k):
            return torch.nn.functional.conv2d(x, k, stride=2, padding=1)

        add(
            f"conv 4×4/2 {cin}→{cout}, 64×{hw}×{hw}",
            jconv,
            (xs, k),
            tconv,
            (xs.transpose(0, 3, 1, 2).copy(), k.transpose(3, 2, 0, 1).copy()),
        )
    if rnn is not None:  # W2's recurrence alone: lax.scan vs torch's fused nn.RNN
        batch_, steps, inputs, hidden = rnn
        xs = rng.standard_normal((batch_, steps, inputs)).astype(np.float32)
        wi = (rng.standard_normal((inputs, hidden)) / np.sqrt(inputs)).astype(np.float32)
        wh = orthogonal_matrix(rng, hidden)
        bias = np.zeros(hidden, np.float32)

        def jrnn(x, wi, wh, b):
            def cell(h, xt):
                return jnp.tanh(xt @ wi + b + h @ wh), None

            h0 = jnp.zeros((x.shape[0], wh.shape[0]), x.dtype)
            return jax.lax.scan(cell, h0, jnp.swapaxes(x, 0, 1))[0]

        trnn = None
        if have_torch:
            module = torch.nn.RNN(inputs, hidden, batch_first=True)

            def trnn(x, wih, whh, b):
                p = {
                    "weight_ih_l0": wih,
                    "weight_hh_l0": whh,
                    "bias_ih_l0": b,
                    "bias_hh_l0": torch.zeros_like(b),
                }
                return torch.func.functional_call(module, p, (x,))[0][:, -1]

        add(
            f"RNN recurrence h={hidden}, T={steps}, batch {batch_}",
            jrnn,
            (xs, wi, wh, bias),
            trnn,
            (xs, wi.T.copy(), wh.T.copy(), bias),
        )
    runners = [Runner(f"jax {op}", f, 0.0) for op, f in jax_fns.items()]
    runners += [Runner(f"torch {op}", f, 0.0) for op, f in torch_fns.items()]
    res = measure(runners, rounds=rounds, warmup=2, round_s=round_s, max_steps=200)
    return {
        op: {
            "jax": res[f"jax {op}"]["median_s"],
            "torch": res[f"torch {op}"]["median_s"] if op in torch_fns else None,
        }
        for op in jax_fns
    }
