"""The benchmark workloads, each built three ways from the same initial weights.

* ``parametrax``: the Flax model wrapped in :class:`parametrax.Parametrized`.
* ``jax (hand-written)``: the same model in plain JAX, the constraint inlined in the loss and
  computed once per step: the zero-overhead limit for parametrax.
* ``flax + inline``: the *unwrapped* Flax model, with the constraint computed by hand in the
  loss and the constrained kernel passed in its params: what parametrax replaces. The gap
  between this and ``jax (hand-written)`` belongs to Flax,
  the gap between parametrax and this is the library's own overhead.
* ``torch``: ``torch.nn.utils.parametrizations`` on the same model (optional), with and without
  ``parametrize.cached()``.

Every builder returns a list of :class:`_harness.Runner`. Layouts: a Flax ``Dense`` kernel
``(in, out)`` is the transpose of torch's ``Linear.weight`` ``(out, in)``; a Flax ``Conv``
kernel ``(kh, kw, in, out)`` is torch's ``(out, in, kh, kw)`` permuted, and Flax's NHWC
flatten order ``(h, w, c)`` differs from torch's NCHW ``(c, h, w)``, so the head after a
flatten is permuted too. The initial loss of every runner is checked to agree.
"""

from __future__ import annotations

import importlib.util

import flax.linen as nn
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import optax
from _harness import Runner, jax_runner

import parametrax as px
from parametrax.catalog.norms import SpectralNorm, WeightNorm
from parametrax.catalog.orthogonal import Orthogonal

HAVE_TORCH = importlib.util.find_spec("torch") is not None

PX = "parametrax"
JAX = "jax (hand-written)"
FLAX_INLINE = "flax + inline"
TORCH = "torch"
TORCH_CACHED = "torch + cached()"


def _peers():
    """``peers.py`` (flax's and equinox's own wrappers, parametrax's NNX front), imported only
    when asked for: it needs equinox."""
    import peers  # noqa: PLC0415

    return peers


def _torch():
    import torch  # noqa: PLC0415 - optional dependency, imported only when available

    return torch


# ------------------------------------------------------------------------------------------------
# Shared helpers
# ------------------------------------------------------------------------------------------------
def orthogonal_matrix(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random orthogonal matrix with det +1 (float32), orthogonal to float32 precision."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    q = q * np.sign(np.diag(r))[None, :]
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.astype(np.float32)


def mse(a, b):
    return jnp.mean((a - b) ** 2)


def skew_lower(x):
    """``tril(X) - tril(X)^T``: the skew matrix torch's ``orthogonal`` builds from a square X."""
    y = jnp.tril(x)
    return y - y.T


def ortho_map_jax(x, map_name: str):
    """The hand-written orthogonal map of torch's ``orthogonal`` (square, no base)."""
    a = skew_lower(x)
    if map_name == "matrix_exp":
        return jsl.expm(a)
    if map_name == "cayley":
        eye = jnp.eye(a.shape[-1], dtype=a.dtype)
        return jnp.linalg.solve(eye - 0.5 * a, eye + 0.5 * a)
    raise ValueError(map_name)


def check_losses(name: str, runners: list[Runner], rtol: float = 2e-4) -> float:
    """The initial losses agree (same weights, same batch); returns the largest relative gap."""
    ref = runners[0].loss0
    gap = max(abs(r.loss0 - ref) / max(abs(ref), 1e-12) for r in runners)
    if gap > rtol:
        listing = ", ".join(f"{r.name}: {r.loss0:.7g}" for r in runners)
        raise AssertionError(f"{name}: initial losses disagree ({listing})")
    return gap


def _torch_step(model, opt, loss_fn, cached: bool):
    from torch.nn.utils import parametrize  # noqa: PLC0415

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        if cached:
            with parametrize.cached():
                loss = loss_fn()
        else:
            loss = loss_fn()
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step, step()  # loss0: the first step's loss, at the initial weights


def torch_runners(make, with_cached: bool = True, label: str = "") -> list[Runner]:
    """Two torch runners (uncached, cached) from ``make() -> (model, opt, loss_fn)``; each
    gets its own copy of the model so their weights do not interact."""
    out = []
    variants = [(TORCH, False)] + ([(TORCH_CACHED, True)] if with_cached else [])
    for name, cached in variants:
        model, opt, loss_fn = make()
        step, loss0 = _torch_step(model, opt, loss_fn, cached)
        out.append(Runner(name + label, step, loss0))
    return out


def _t(a):
    torch = _torch()
    return torch.tensor(np.asarray(a))


def _torch_linear(kernel, bias=None):
    """A ``torch.nn.Linear`` holding a Flax-layout ``(in, out)`` kernel (``weight`` is its
    transpose) and ``bias``; no bias when ``bias`` is None."""
    torch = _torch()
    lin = torch.nn.Linear(*kernel.shape, bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(_t(np.asarray(kernel).T))
        if bias is not None:
            lin.bias.copy_(_t(bias))
    return lin


# ------------------------------------------------------------------------------------------------
# W1: Dense n x n with an orthogonal kernel
# ------------------------------------------------------------------------------------------------
def w1_dense(
    n: int,
    map_name: str,
    *,
    batch: int = 128,
    seed: int = 0,
    torch_ok: bool = True,
    inline: bool = True,
    peers: bool = False,
):
    rng = np.random.default_rng(seed)
    w0 = orthogonal_matrix(rng, n)  # an orthogonal start: every framework keeps it as the base
    b0 = (0.1 * rng.standard_normal(n)).astype(np.float32)
    x = rng.standard_normal((batch, n)).astype(np.float32)
    y = rng.standard_normal((batch, n)).astype(np.float32)
    opt = optax.adam(1e-3)
    runners = []

    if map_name == "tutorial_cayley":
        return _w1_tutorial(n, w0, b0, x, y, opt, seed, torch_ok, inline)

    # parametrax
    model = px.Parametrized(nn.Dense, {"kernel": Orthogonal(map=map_name)})(features=n)
    variables = model.init(jax.random.key(seed), x)
    variables = px.linen.assign(
        model, variables, {"kernel": jnp.asarray(w0)}, key=jax.random.key(1)
    )
    variables = jax.tree.map(lambda a: a, dict(variables))
    params = dict(variables["params"])
    params["bias"] = jnp.asarray(b0)
    rest = {k: v for k, v in variables.items() if k != "params"}

    def px_loss(params, rest, x, y):
        return mse(model.apply({"params": params, **rest}, x), y)

    runners.append(jax_runner(PX, px_loss, params, rest, (x, y), opt))

    # hand-written JAX: raw X starts at -I (torch's right inverse), base B = w0
    hparams = {"x": -jnp.eye(n, dtype=jnp.float32), "b": jnp.asarray(b0)}

    def jax_loss(p, base, x, y):
        k = base @ ortho_map_jax(p["x"], map_name)
        return mse(x @ k + p["b"], y)

    runners.append(jax_runner(JAX, jax_loss, hparams, jnp.asarray(w0), (x, y), opt))

    dense = nn.Dense(n)

    def flax_loss(p, base, x, y):
        k = base @ ortho_map_jax(p["x"], map_name)
        return mse(dense.apply({"params": {"kernel": k, "bias": p["b"]}}, x), y)

    if inline:
        runners.append(jax_runner(FLAX_INLINE, flax_loss, hparams, jnp.asarray(w0), (x, y), opt))
    if peers:
        runners += _peers().w1_nnx(n, map_name, w0, b0, x, y, opt)

    if torch_ok and HAVE_TORCH:
        torch = _torch()
        from torch.nn.utils.parametrizations import orthogonal  # noqa: PLC0415

        xt, yt = _t(x), _t(y)

        def make():
            lin = _torch_linear(w0, b0)
            orthogonal(lin, orthogonal_map=map_name)
            o = torch.optim.Adam(lin.parameters(), lr=1e-3)
            return lin, o, lambda: torch.nn.functional.mse_loss(lin(xt), yt)

        runners += torch_runners(make)
    return runners


def _tutorial_cayley_jax(x):
    """The tutorial chain ``[Skew, Cayley]`` as a user writes it: ``jnp.linalg.solve``."""
    a = jnp.triu(x, 1)
    a = a - a.T
    eye = jnp.eye(x.shape[-1], dtype=x.dtype)
    return jnp.linalg.solve(eye - a, eye + a)


def _w1_tutorial(n, w0, b0, x, y, opt, seed, torch_ok, inline=True):
    """W1 with PyTorch tutorial's chain ``[Skew, Cayley]`` (no trivialization base): the
    workload where parametrax's Cayley derivative replaces JAX's differentiation of
    ``jnp.linalg.solve``."""
    runners = []
    model = px.Parametrized(nn.Dense, {"kernel": [px.Skew(), px.Cayley()]})(features=n)
    variables = model.init(jax.random.key(seed), x)
    variables = px.linen.assign(model, variables, {"kernel": jnp.asarray(w0)})
    params = jax.tree.map(lambda a: a, dict(variables["params"]))
    params["bias"] = jnp.asarray(b0)
    raw0 = params["parametrizations"]["kernel"]["original"]

    def px_loss(params, _, x, y):
        return mse(model.apply({"params": params}, x), y)

    runners.append(jax_runner(PX, px_loss, params, (), (x, y), opt))

    def jax_loss(p, _, x, y):
        return mse(x @ _tutorial_cayley_jax(p["x"]) + p["b"], y)

    runners.append(jax_runner(JAX, jax_loss, {"x": raw0, "b": jnp.asarray(b0)}, (), (x, y), opt))

    dense = nn.Dense(n)

    def flax_loss(p, _, x, y):
        k = _tutorial_cayley_jax(p["x"])
        return mse(dense.apply({"params": {"kernel": k, "bias": p["b"]}}, x), y)

    if inline:
        runners.append(
            jax_runner(FLAX_INLINE, flax_loss, {"x": raw0, "b": jnp.asarray(b0)}, (), (x, y), opt)
        )

    if torch_ok and HAVE_TORCH:
        torch = _torch()
        from torch.nn.utils import parametrize  # noqa: PLC0415

        class Skew(torch.nn.Module):  # the tutorial's classes, verbatim but for right_inverse
            def forward(self, X):
                A = X.triu(1)
                return A - A.transpose(-1, -2)

            def right_inverse(self, A):
                return A.triu(1)

        class CayleyMap(torch.nn.Module):
            def __init__(self, n):
                super().__init__()
                self.register_buffer("Id", torch.eye(n))

            def forward(self, X):
                return torch.linalg.solve(self.Id - X, self.Id + X)

            def right_inverse(self, A):
                return torch.linalg.solve(A + self.Id, A - self.Id)

        xt, yt = _t(x), _t(y)

        def make():
            lin = _torch_linear(w0, b0)
            parametrize.register_parametrization(lin, "weight", Skew())
            parametrize.register_parametrization(lin, "weight", CayleyMap(n))
            with torch.no_grad():
                lin.weight = _t(w0.T)  # through both right inverses, as parametrax.assign
            o = torch.optim.Adam(lin.parameters(), lr=1e-3)
            return lin, o, lambda: torch.nn.functional.mse_loss(lin(xt), yt)

        runners += torch_runners(make)
    return runners


# ------------------------------------------------------------------------------------------------
# W2: RNN with an orthogonal recurrent kernel
# ------------------------------------------------------------------------------------------------
class RNNModel(nn.Module):
    hidden: int
    classes: int = 10

    @nn.compact
    def __call__(self, x):
        # return_carry: the classifier reads the final state only. Without it nn.RNN stacks all
        # T hidden states for the output and backpropagates through the stack, which cost 25-35%
        # of the step here (measured); lax.scan in the hand-written model keeps no outputs either.
        h, _ = nn.RNN(nn.SimpleCell(self.hidden), return_carry=True, name="rnn")(x)
        return nn.Dense(self.classes, name="out")(h)


def _xent(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def w2_rnn(
    *,
    hidden=256,
    inputs=32,
    steps=100,
    batch=64,
    seed=0,
    torch_ok=True,
    torch_loop=True,
    inline=True,
):
    rng = np.random.default_rng(seed)
    wi = (rng.standard_normal((inputs, hidden)) / np.sqrt(inputs)).astype(np.float32)
    bi = (0.1 * rng.standard_normal(hidden)).astype(np.float32)
    wh = orthogonal_matrix(rng, hidden)
    wo = (rng.standard_normal((hidden, 10)) / np.sqrt(hidden)).astype(np.float32)
    bo = np.zeros(10, np.float32)
    x = rng.standard_normal((batch, steps, inputs)).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    opt = optax.adam(1e-3)
    runners = []

    # the cell is built inside the compact __call__, so Flax names it SimpleCell_0
    path = "SimpleCell_0/h/kernel"
    spec = {path: Orthogonal(map="matrix_exp")}
    model = px.Parametrized(RNNModel(hidden), spec)
    variables = model.init(jax.random.key(seed), x)
    variables = px.linen.assign(model, variables, {path: jnp.asarray(wh)})
    params = jax.tree.map(lambda a: a, dict(variables["params"]))
    params["SimpleCell_0"] = {"i": {"kernel": jnp.asarray(wi), "bias": jnp.asarray(bi)}}
    params["out"] = {"kernel": jnp.asarray(wo), "bias": jnp.asarray(bo)}
    rest = {k: v for k, v in variables.items() if k != "params"}

    def px_loss(params, rest, x, y):
        return _xent(model.apply({"params": params, **rest}, x), y)

    runners.append(jax_runner(PX, px_loss, params, rest, (x, y), opt))

    hparams = {
        "wi": jnp.asarray(wi),
        "bi": jnp.asarray(bi),
        "x": -jnp.eye(hidden, dtype=jnp.float32),
        "wo": jnp.asarray(wo),
        "bo": jnp.asarray(bo),
    }

    def jax_loss(p, base, x, y):
        k = base @ ortho_map_jax(p["x"], "matrix_exp")  # once per step, outside the scan

        def cell(h, xt):
            h = jnp.tanh(xt @ p["wi"] + p["bi"] + h @ k)
            return h, None

        h, _ = jax.lax.scan(cell, jnp.zeros((x.shape[0], hidden), x.dtype), jnp.swapaxes(x, 0, 1))
        return _xent(h @ p["wo"] + p["bo"], y)

    runners.append(jax_runner(JAX, jax_loss, hparams, jnp.asarray(wh), (x, y), opt))

    plain_model = RNNModel(hidden)

    def flax_loss(p, base, x, y):
        k = base @ ortho_map_jax(p["x"], "matrix_exp")  # once per step, outside nn.RNN
        q = {
            "SimpleCell_0": {"i": {"kernel": p["wi"], "bias": p["bi"]}, "h": {"kernel": k}},
            "out": {"kernel": p["wo"], "bias": p["bo"]},
        }
        return _xent(plain_model.apply({"params": q}, x), y)

    if inline:
        runners.append(jax_runner(FLAX_INLINE, flax_loss, hparams, jnp.asarray(wh), (x, y), opt))

    if torch_ok and HAVE_TORCH:
        torch = _torch()
        from torch.nn.utils.parametrizations import orthogonal  # noqa: PLC0415

        xt, yt = _t(x), torch.tensor(y.astype(np.int64))
        ce = torch.nn.functional.cross_entropy

        def make_fused():  # torch's fused nn.RNN reads the weight once per forward
            rnn = torch.nn.RNN(inputs, hidden, batch_first=True)
            out = _torch_linear(wo, bo)
            with torch.no_grad():
                rnn.weight_ih_l0.copy_(_t(wi.T))
                rnn.bias_ih_l0.copy_(_t(bi))
                rnn.bias_hh_l0.zero_()
                rnn.weight_hh_l0.copy_(_t(wh.T))
            orthogonal(rnn, "weight_hh_l0", orthogonal_map="matrix_exp")
            m = torch.nn.ModuleList([rnn, out])
            o = torch.optim.Adam(m.parameters(), lr=1e-3)
            return m, o, lambda: ce(out(rnn(xt)[0][:, -1]), yt)

        runners += torch_runners(make_fused, label=" [nn.RNN]")

        if torch_loop:

            def make_loop():  # the expRNN-style cell, stepped in Python: reads W every step
                i, h_, out = _torch_linear(wi, bi), _torch_linear(wh), _torch_linear(wo, bo)
                orthogonal(h_, orthogonal_map="matrix_exp")
                m = torch.nn.ModuleList([i, h_, out])
                o = torch.optim.Adam(m.parameters(), lr=1e-3)

                def loss():
                    h = torch.zeros(batch, hidden)
                    for t in range(steps):
                        h = torch.tanh(i(xt[:, t]) + h_(h))
                    return ce(out(h), yt)

                return m, o, loss

            runners += torch_runners(make_loop, label=" [cell loop]")
    return runners


# ------------------------------------------------------------------------------------------------
# W3: a 3-conv discriminator with spectral norm on every conv
# ------------------------------------------------------------------------------------------------
class Disc(nn.Module):
    channels: int = 64

    @nn.compact
    def __call__(self, x):  # NHWC
        for i in range(3):
            x = nn.Conv(
                self.channels, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), name=f"conv{i}"
            )(x)
            x = nn.leaky_relu(x, 0.2)
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(1, name="head")(x)[:, 0]


def _bce(logits, labels):
    return optax.sigmoid_binary_cross_entropy(logits, labels).mean()


def _conv(x, k, b):
    y = jax.lax.conv_general_dilated(
        x, k, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + b


def _normalize(v, eps=1e-12):
    return v / jnp.maximum(jnp.linalg.norm(v), eps)


def w3_disc(
    *,
    spectral: bool,
    channels=64,
    size=32,
    batch=64,
    seed=0,
    torch_ok=True,
    inline=True,
    peers=False,
):
    rng = np.random.default_rng(seed)
    shapes = [(4, 4, 3, channels), (4, 4, channels, channels), (4, 4, channels, channels)]
    ks = [(rng.standard_normal(s) / np.sqrt(np.prod(s[:3]))).astype(np.float32) for s in shapes]
    bs = [(0.01 * rng.standard_normal(channels)).astype(np.float32) for _ in shapes]
    side = size // 8
    hk = (rng.standard_normal((side * side * channels, 1)) / 32).astype(np.float32)
    hb = np.zeros(1, np.float32)
    x = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 2, batch).astype(np.float32)
    opt = optax.adam(2e-4, b1=0.5, b2=0.999)
    label = " + SN" if spectral else ""
    runners = []

    base = Disc(channels)
    if spectral:
        model = px.Parametrized(base, {"conv?/kernel": SpectralNorm(n_power_iterations=1)})
    else:
        model = base
    variables = model.init(jax.random.key(seed), x)
    variables = jax.tree.map(lambda a: a, dict(variables))
    plain = {
        f"conv{i}": {"kernel": jnp.asarray(ks[i]), "bias": jnp.asarray(bs[i])} for i in range(3)
    }
    plain["head"] = {"kernel": jnp.asarray(hk), "bias": jnp.asarray(hb)}
    if spectral:
        # store the same kernels through the right inverse (identity for SpectralNorm), keep
        # the u, v drawn at init (shared with the other implementations below)
        variables = px.linen.assign(
            model, variables, {f"conv{i}/kernel": jnp.asarray(ks[i]) for i in range(3)}
        )
        params = jax.tree.map(lambda a: a, dict(variables["params"]))
        for i in range(3):
            params[f"conv{i}"] = {"bias": jnp.asarray(bs[i])}
        params["head"] = plain["head"]
        rest = {k: v for k, v in variables.items() if k != "params"}
        sn_state = rest[px.linen.STATE_COLLECTION]["parametrizations"]
        uv = [
            (sn_state[f"conv{i}"]["kernel"]["0"]["u"], sn_state[f"conv{i}"]["kernel"]["0"]["v"])
            for i in range(3)
        ]

        def px_loss(params, rest, x, y):
            out, upd = model.apply(
                {"params": params, **rest}, x, mutable=[px.linen.STATE_COLLECTION]
            )
            return _bce(out, y), {**rest, **upd}

        runners.append(
            jax_runner(PX + label, px_loss, params, rest, (x, y), opt, loss_updates_aux=True)
        )
    else:

        def flax_loss(p, _, x, y):
            return _bce(model.apply({"params": p}, x), y)

        runners.append(jax_runner("flax" + label, flax_loss, plain, (), (x, y), opt))

    # hand-written JAX
    def forward(p, x, kernels):
        for i in range(3):
            x = jax.nn.leaky_relu(_conv(x, kernels[i], p[f"conv{i}"]["bias"]), 0.2)
        x = x.reshape((x.shape[0], -1))
        return (x @ p["head"]["kernel"] + p["head"]["bias"])[:, 0]

    if spectral:

        def sn(k, u, v, update):
            mat = jnp.moveaxis(k, -1, 0).reshape(k.shape[-1], -1)  # (out, kh*kw*in)
            if update:
                m = jax.lax.stop_gradient(mat)
                u = _normalize(m @ v)
                v = _normalize(m.T @ u)
            sigma = u @ (mat @ v)
            return k / sigma, (u, v)

        def jax_loss(p, uv, x, y):
            res = [sn(p[f"conv{i}"]["kernel"], *uv[i], True) for i in range(3)]
            out = forward(p, x, [r[0] for r in res])
            return _bce(out, y), [r[1] for r in res]

        runners.append(
            jax_runner(JAX + label, jax_loss, plain, uv, (x, y), opt, loss_updates_aux=True)
        )

        def with_kernels(p, kernels):
            q = {k: dict(v) for k, v in p.items()}
            for i in range(3):
                q[f"conv{i}"]["kernel"] = kernels[i]
            return q

        def flax_loss(p, uv, x, y):
            res = [sn(p[f"conv{i}"]["kernel"], *uv[i], True) for i in range(3)]
            out = base.apply({"params": with_kernels(p, [r[0] for r in res])}, x)
            return _bce(out, y), [r[1] for r in res]

        if inline:
            runners.append(
                jax_runner(
                    FLAX_INLINE + label, flax_loss, plain, uv, (x, y), opt, loss_updates_aux=True
                )
            )
        if peers:
            runners += _peers().w3_peers(
                channels=channels, ks=ks, bs=bs, hk=hk, hb=hb, uv=uv, x=x, y=y, opt=opt, seed=seed
            )
    else:
        runners.append(
            jax_runner(
                JAX + label,
                lambda p, _, x, y: _bce(
                    forward(p, x, [p[f"conv{i}"]["kernel"] for i in range(3)]), y
                ),
                plain,
                (),
                (x, y),
                opt,
            )
        )

    if torch_ok and HAVE_TORCH:
        torch = _torch()
        from torch.nn.utils.parametrizations import spectral_norm  # noqa: PLC0415

        xt, yt = _t(np.transpose(x, (0, 3, 1, 2)).copy()), _t(y)
        # head: flax flattens (h, w, c), torch (c, h, w)
        hk_t = hk.reshape(side, side, channels).transpose(2, 0, 1).reshape(1, -1)

        def make():
            convs = []
            for i in range(3):
                c = torch.nn.Conv2d(shapes[i][2], channels, 4, stride=2, padding=1)
                with torch.no_grad():
                    c.weight.copy_(_t(np.transpose(ks[i], (3, 2, 0, 1)).copy()))
                    c.bias.copy_(_t(bs[i]))
                if spectral:
                    spectral_norm(c)
                    u, v = (np.asarray(a) for a in uv[i])
                    # flax's matrix view flattens (kh, kw, in), torch's (in, kh, kw)
                    v_t = v.reshape(4, 4, shapes[i][2]).transpose(2, 0, 1).reshape(-1)
                    with torch.no_grad():
                        c.parametrizations.weight[0]._u.copy_(_t(u))
                        c.parametrizations.weight[0]._v.copy_(_t(v_t))
                convs.append(c)
            head = torch.nn.Linear(side * side * channels, 1)
            with torch.no_grad():
                head.weight.copy_(_t(hk_t))
                head.bias.copy_(_t(hb))
            layers = []
            for c in convs:
                layers += [c, torch.nn.LeakyReLU(0.2)]
            net = torch.nn.Sequential(*layers, torch.nn.Flatten(), head)
            net.train()
            o = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999))
            bce = torch.nn.functional.binary_cross_entropy_with_logits
            return net, o, lambda: bce(net(xt)[:, 0], yt)

        runners += torch_runners(make, with_cached=spectral, label=label)
    return runners


# ------------------------------------------------------------------------------------------------
# W4: a 3 x 512 MLP with weight norm on every Dense
# ------------------------------------------------------------------------------------------------
class MLP(nn.Module):
    width: int = 512
    depth: int = 3
    classes: int = 10

    @nn.compact
    def __call__(self, x):
        for i in range(self.depth):
            x = nn.relu(nn.Dense(self.width, name=f"fc{i}")(x))
        return nn.Dense(self.classes, name="head")(x)


def w4_mlp(
    *,
    weight_norm: bool,
    width=512,
    depth=3,
    inputs=784,
    batch=256,
    seed=0,
    torch_ok=True,
    inline=True,
    peers=False,
):
    rng = np.random.default_rng(seed)
    dims = [inputs] + [width] * depth + [10]
    names = [f"fc{i}" for i in range(depth)] + ["head"]
    ws = [
        (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        for a, b in zip(dims, dims[1:])
    ]
    bs = [(0.01 * rng.standard_normal(b)).astype(np.float32) for b in dims[1:]]
    x = rng.standard_normal((batch, inputs)).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    opt = optax.adam(1e-3)
    label = " + WN" if weight_norm else ""
    runners = []
    plain = {
        n: {"kernel": jnp.asarray(w), "bias": jnp.asarray(b)} for n, w, b in zip(names, ws, bs)
    }

    base = MLP(width, depth)
    if weight_norm:
        model = px.Parametrized(base, {"*/kernel": WeightNorm()})
        variables = model.init(jax.random.key(seed), x)
        variables = px.linen.assign(
            model, variables, {f"{n}/kernel": plain[n]["kernel"] for n in names}
        )
        params = jax.tree.map(lambda a: a, dict(variables["params"]))
        for n in names:
            params[n] = {"bias": plain[n]["bias"]}

        def px_loss(p, _, x, y):
            return _xent(model.apply({"params": p}, x), y)

        runners.append(jax_runner(PX + label, px_loss, params, (), (x, y), opt))
    else:

        def flax_loss(p, _, x, y):
            return _xent(base.apply({"params": p}, x), y)

        runners.append(jax_runner("flax" + label, flax_loss, plain, (), (x, y), opt))

    def forward(ws_bs, x):
        for i, (w, b) in enumerate(ws_bs):
            x = x @ w + b
            if i < len(ws_bs) - 1:
                x = jax.nn.relu(x)
        return x

    if weight_norm:
        gv = {
            n: {
                "g": jnp.linalg.norm(plain[n]["kernel"], axis=0, keepdims=True),
                "v": plain[n]["kernel"],
                "b": plain[n]["bias"],
            }
            for n in names
        }

        def jax_loss(p, _, x, y):
            layers = [
                (
                    p[n]["g"] * p[n]["v"] / jnp.linalg.norm(p[n]["v"], axis=0, keepdims=True),
                    p[n]["b"],
                )
                for n in names
            ]
            return _xent(forward(layers, x), y)

        runners.append(jax_runner(JAX + label, jax_loss, gv, (), (x, y), opt))

        def flax_loss(p, _, x, y):
            q = {
                n: {
                    "kernel": p[n]["g"]
                    * p[n]["v"]
                    / jnp.linalg.norm(p[n]["v"], axis=0, keepdims=True),
                    "bias": p[n]["b"],
                }
                for n in names
            }
            return _xent(base.apply({"params": q}, x), y)

        if inline:
            runners.append(jax_runner(FLAX_INLINE + label, flax_loss, gv, (), (x, y), opt))
        if peers:
            runners += _peers().w4_peers(
                width=width, depth=depth, names=names, ws=ws, bs=bs, x=x, y=y, opt=opt, seed=seed
            )
    else:

        def jax_plain_loss(p, _, x, y):
            return _xent(forward([(p[n]["kernel"], p[n]["bias"]) for n in names], x), y)

        runners.append(jax_runner(JAX + label, jax_plain_loss, plain, (), (x, y), opt))

    if torch_ok and HAVE_TORCH:
        torch = _torch()
        from torch.nn.utils.parametrizations import weight_norm as t_wn  # noqa: PLC0415

        xt, yt = _t(x), torch.tensor(y.astype(np.int64))

        def make():
            layers = []
            for w, b in zip(ws, bs):
                lin = _torch_linear(w, b)
                if weight_norm:
                    t_wn(lin)
                layers += [lin, torch.nn.ReLU()]
            net = torch.nn.Sequential(*layers[:-1])
            o = torch.optim.Adam(net.parameters(), lr=1e-3)
            return net, o, lambda: torch.nn.functional.cross_entropy(net(xt), yt)

        runners += torch_runners(make, with_cached=weight_norm, label=label)
    return runners
