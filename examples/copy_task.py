"""The copying-memory task (Arjovsky et al. 2016) with orthogonal RNNs, as in expRNN.

Run:  python examples/copy_task.py                 # defaults: a few minutes on 2 CPU cores
      python examples/copy_task.py --paper         # expRNN's setting: L=1000, hidden 190,
                                                   # batch 128, 4000 iterations (hours on CPU)

The input is ``K`` symbols drawn from 8, then ``L`` blanks, a marker, and ``K - 1``
blanks (length ``L + 2K``); the target is ``L + K`` blanks and then the ``K`` symbols, the
first of them due at the marker. A model that does not
remember anything predicts blanks perfectly and guesses the symbols, which gives the
memoryless baseline ``K ln 8 / (L + 2K)`` (cross-entropy averaged over every time step).

Models (Lezcano-Casado & Martínez-Rubio 2019, "Cheap orthogonal constraints in neural networks",
whose setup this follows):

* ``expm`` / ``cayley``: a modReLU RNN whose recurrent kernel is orthogonal,
  ``Parametrized(model, {"**/h/kernel": Orthogonal(map=...)})``, initialised with Henaff et
  al.'s block-diagonal rotations. The orthogonal raw parameters train at a tenth of the
  learning rate (``optax.multi_transform``). ``--retract-every N`` turns on the dynamic
  trivialization: every ``N`` steps the base point moves to the current kernel
  (``parametrax.assign``, torch's ``layer.weight = layer.weight``).
* ``rnn``: an unconstrained RNN with the same initial recurrent kernel, trained with one
  learning rate: by default the classic ``tanh`` RNN of Arjovsky et al.'s comparison
  (``--rnn-cell modrelu`` gives the orthogonal models' cell without the constraint, which on
  long delays diverges rather than learning).
* ``lstm``: an LSTM of the same hidden size.

With the trivialization's base point at the initial kernel the raw skew matrix stays small,
where ``expm(A)`` and the Cayley map ``(I - A/2)^{-1}(I + A/2)`` agree up to ``O(|A|^3)``: the
``expm`` and ``cayley`` curves nearly coincide. With the default flags the script asserts that
the orthogonal RNNs end far below the baseline while the unconstrained RNN stays near it. The
loss curves go to ``copy_task.png``.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

import parametrax as px
from parametrax.catalog.orthogonal import Orthogonal

N_SYMBOLS = 8  # data symbols 1..8; 0 is the blank, 9 the marker
N_IN = 10
N_OUT = 9
PATH = "**/h/kernel"  # the recurrent kernel of the cell, wherever Flax puts it

DEFAULTS = dict(
    L=100,
    K=10,
    hidden=128,
    batch=128,
    iterations=400,
    lr=1e-3,
    models="expm,cayley,rnn,lstm",
    retract_every=0,
    seed=0,
    rnn_cell="tanh",
)
PAPER = dict(L=1000, hidden=190, batch=128, iterations=4000)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
def copy_batch(key, batch: int, L: int, K: int):
    """Inputs ``(batch, L + 2K)`` int and targets ``(batch, L + 2K)`` int (expRNN's layout)."""
    seq = jax.random.randint(key, (batch, K), 1, N_SYMBOLS + 1)
    x = jnp.concatenate(
        [
            seq,
            jnp.zeros((batch, L), jnp.int32),
            jnp.full((batch, 1), 9, jnp.int32),
            jnp.zeros((batch, K - 1), jnp.int32),
        ],
        axis=1,
    )
    y = jnp.concatenate([jnp.zeros((batch, L + K), jnp.int32), seq], axis=1)
    return x, y


def baseline(L: int, K: int) -> float:
    return K * math.log(N_SYMBOLS) / (L + 2 * K)


# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------
def henaff_init(key, shape, dtype=jnp.float32):
    """An orthogonal matrix ``expm(A)``, ``A`` block-diagonal with 2x2 blocks ``[[0, s], [-s, 0]]``,
    ``s ~ U(-pi, pi)``: eigenvalues spread evenly over the unit circle (Henaff et al. 2016)."""
    n = shape[-1]
    s = jax.random.uniform(key, (n // 2,), dtype, -math.pi, math.pi)
    a = jnp.zeros((n, n), dtype)
    idx = jnp.arange(n // 2) * 2
    a = a.at[idx, idx + 1].set(s).at[idx + 1, idx].set(-s)
    return jax.scipy.linalg.expm(a)


def modrelu(z, b):
    """``sign(z) relu(|z| + b)`` (Arjovsky et al. 2016), real case."""
    return jnp.sign(z) * nn.relu(jnp.abs(z) + b)


class Cell(nn.RNNCellBase):
    """``h' = act(W_i x + W_h h)``; ``act`` is modReLU (with a learned bias) or ``tanh``."""

    features: int
    activation: str = "modrelu"

    @nn.compact
    def __call__(self, h, x):
        pre = nn.Dense(
            self.features, use_bias=False, name="i", kernel_init=nn.initializers.he_normal()
        )(x) + nn.Dense(self.features, use_bias=False, name="h", kernel_init=henaff_init)(h)
        b = self.param("b", nn.initializers.uniform(0.02), (self.features,))
        h = modrelu(pre, b - 0.01) if self.activation == "modrelu" else jnp.tanh(pre + b - 0.01)
        return h, h

    @nn.nowrap
    def initialize_carry(self, rng, input_shape):
        return jnp.zeros(input_shape[:-1] + (self.features,))

    @property
    def num_feature_axes(self) -> int:
        return 1


class CopyModel(nn.Module):
    hidden: int
    cell: str = "modrelu"  # "modrelu", "tanh" or "lstm"

    @nn.compact
    def __call__(self, tokens):
        x = jax.nn.one_hot(tokens, N_IN)
        if self.cell == "lstm":
            cell = nn.OptimizedLSTMCell(self.hidden)
        else:
            cell = Cell(self.hidden, self.cell)
        h = nn.RNN(cell)(x)
        return nn.Dense(N_OUT)(h)


def make_model(kind: str, hidden: int, rnn_cell: str = "tanh"):
    if kind == "lstm":
        return CopyModel(hidden, "lstm")
    if kind == "rnn":
        return CopyModel(hidden, rnn_cell)
    m = {"expm": "matrix_exp", "cayley": "cayley"}[kind]
    # Wrap the whole model (not the cell): the kernel is computed once per apply, not per step.
    return px.Parametrized(CopyModel(hidden), {PATH: Orthogonal(map=m)})


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------
def optimizer(lr: float, orthogonal: bool):
    """RMSprop (torch's defaults: alpha 0.99); the orthogonal raw parameters at lr / 10."""
    rms = lambda lr: optax.rmsprop(lr, decay=0.99, eps=1e-8)  # noqa: E731
    if not orthogonal:
        return rms(lr)

    def labels(params):
        return {
            k: jax.tree.map(lambda _, k=k: "orth" if k == "parametrizations" else "rest", v)
            for k, v in params.items()
        }

    return optax.multi_transform({"orth": rms(lr / 10), "rest": rms(lr)}, labels)


def train(kind: str, args, key) -> np.ndarray:
    model = make_model(kind, args.hidden, args.rnn_cell)
    k_init, k_data = jax.random.split(key)
    x0, _ = copy_batch(k_data, 2, args.L, args.K)
    variables = jax.jit(model.init)(k_init, x0)  # jit: one compile, not one per op
    params = variables["params"]
    rest = {k: v for k, v in variables.items() if k != "params"}
    opt = optimizer(args.lr, kind in ("expm", "cayley"))
    opt_state = opt.init(params)

    def loss_fn(params, rest, x, y):
        logits = model.apply({"params": params, **rest}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(params, opt_state, rest, key):
        x, y = copy_batch(key, args.batch, args.L, args.K)
        loss, grads = jax.value_and_grad(loss_fn)(params, rest, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = np.zeros(args.iterations)
    keys = jax.random.split(k_data, args.iterations)
    bar = tqdm(
        range(args.iterations),
        desc=f"{kind:>6}",
        file=sys.stdout,
        mininterval=1.0,
        disable=args.quiet,
    )
    for i in bar:
        params, opt_state, loss = step(params, opt_state, rest, keys[i])
        losses[i] = float(loss)
        if not np.isfinite(losses[i]):
            losses[i:] = np.nan
            break
        if args.retract_every and kind in ("expm", "cayley") and (i + 1) % args.retract_every == 0:
            # dynamic trivialization: move the base point to the current kernel
            v = {"params": params, **rest}
            current = px.linen.constrain(model, v)
            kernel = _get(current["params"], _kernel_path(current["params"]))
            v = px.linen.assign(model, v, {_kernel_path(current["params"]): kernel})
            params = v["params"]
            rest = {k: x for k, x in v.items() if k != "params"}
        if i % 20 == 0:
            bar.set_postfix(loss=f"{losses[i]:.4f}")
    return losses


def _kernel_path(tree, prefix=""):
    for k, v in tree.items():
        p = f"{prefix}{k}"
        if k == "parametrizations":
            continue
        if isinstance(v, dict):
            if "h" in v and isinstance(v["h"], dict) and "kernel" in v["h"]:
                return f"{p}/h/kernel"
            found = _kernel_path(v, p + "/")
            if found:
                return found
    return None


def _get(tree, path):
    for seg in path.split("/"):
        tree = tree[seg]
    return tree


def smooth_final(losses: np.ndarray, frac: float = 0.1) -> float:
    n = max(1, int(len(losses) * frac))
    return float(np.mean(losses[-n:]))


def plot(curves: dict, args, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for kind, losses in curves.items():
        ax.plot(losses, label=kind, lw=1)
    ax.axhline(
        baseline(args.L, args.K),
        color="k",
        ls="--",
        lw=1,
        label=f"memoryless baseline K ln8/(L+2K) = {baseline(args.L, args.K):.4f}",
    )
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy")
    ax.set_title(
        f"Copying memory task, L={args.L}, K={args.K}, hidden {args.hidden}, batch {args.batch}"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--L", type=int, help=f"delay (default {DEFAULTS['L']})")
    ap.add_argument("--K", type=int, help=f"symbols to copy (default {DEFAULTS['K']})")
    ap.add_argument("--hidden", type=int, help=f"hidden size (default {DEFAULTS['hidden']})")
    ap.add_argument("--batch", type=int, help=f"batch size (default {DEFAULTS['batch']})")
    ap.add_argument(
        "--iterations",
        "--steps",
        dest="iterations",
        type=int,
        help=f"training iterations (default {DEFAULTS['iterations']})",
    )
    ap.add_argument("--lr", type=float, help=f"RMSprop learning rate (default {DEFAULTS['lr']})")
    ap.add_argument("--models", help=f"comma-separated subset of {DEFAULTS['models']}")
    ap.add_argument(
        "--retract-every",
        dest="retract_every",
        type=int,
        help="dynamic trivialization: move the base every N steps (default 0: off)",
    )
    ap.add_argument("--seed", type=int, help="PRNG seed (default 0)")
    ap.add_argument(
        "--rnn-cell",
        dest="rnn_cell",
        help="the unconstrained RNN's activation: tanh (default) or modrelu",
    )
    ap.add_argument(
        "--paper",
        action="store_true",
        help="expRNN's setting: L=1000, hidden 190, batch 128, 4000 iterations",
    )
    ap.add_argument(
        "--out",
        default=str(pathlib.Path(__file__).with_suffix(".png")),
        help="where to save the plot",
    )
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    given = {k for k in DEFAULTS if getattr(args, k) is not None}
    args.is_default = not given and not args.paper
    for k, v in DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, PAPER.get(k, v) if args.paper else v)
    return args


def main(argv=None) -> int:
    args = parse(argv)
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    for k in kinds:
        if k not in ("expm", "cayley", "rnn", "lstm"):
            raise SystemExit(f"unknown model {k!r}; choose from expm, cayley, rnn, lstm")
    base = baseline(args.L, args.K)
    print(
        f"copying task: L={args.L}, K={args.K}, sequence length {args.L + 2 * args.K}, "
        f"hidden {args.hidden}, batch {args.batch}, {args.iterations} iterations; "
        f"baseline {base:.4f}"
    )
    key = jax.random.key(args.seed)
    curves, final = {}, {}
    t0 = time.perf_counter()
    for kind in kinds:
        curves[kind] = train(kind, args, key)  # same key: same data and same initial kernel
        final[kind] = smooth_final(curves[kind])
        print(f"  {kind:>6}: final loss {final[kind]:.5f}  ({final[kind] / base:.3f} x baseline)")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    if not args.no_plot:
        plot(curves, args, pathlib.Path(args.out))
        print(f"plot: {args.out}")
    if args.is_default:
        for k in ("expm", "cayley"):
            assert final[k] < 0.1 * base, f"{k}: {final[k]:.4f} is not far below {base:.4f}"
        assert final["rnn"] > 0.7 * base, f"rnn: {final['rnn']:.4f} is not near {base:.4f}"
        print(
            "[ok] the orthogonal RNNs end far below the memoryless baseline; the "
            "unconstrained RNN does not."
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
