"""Weight normalisation on a real data set: scikit-learn's handwritten digits.

Run:  python examples/weight_norm_classifier.py        # under a minute on 2 CPU cores

``sklearn.datasets.load_digits`` ships inside scikit-learn (1797 8x8 images, 10 classes; no
download). Two MLPs with the same initial weights are trained with plain SGD + momentum on the
same mini-batches; one has every Dense kernel reparametrized as ``g * v / ||v||``
(Salimans & Kingma 2016):

    Parametrized(MLP(), {"*/kernel": WeightNorm()})

``WeightNorm`` stores ``g`` (one scale per output unit, shape ``(1, out)``) and ``v`` as
``params/parametrizations/<layer>/kernel/original0`` and ``original1``; registration sets
``g = ||W||`` so the wrapped model starts out computing exactly what the plain one computes.
The script prints both test accuracies, checks the weight-normed model learns the task
(test accuracy >= 90% with the default flags), and plots the training curves to
``weight_norm_classifier.png``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

import parametrax as px
from parametrax.catalog.norms import WeightNorm


def load(seed: int):
    from sklearn.datasets import load_digits  # noqa: PLC0415 - the examples extra

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)  # pixel values 0..16
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    cut = int(0.8 * len(x))
    tr, te = idx[:cut], idx[cut:]
    mean = x[tr].mean(0)
    std = x[tr].std(0) + 1e-3
    x = (x - mean) / std
    return (x[tr], y[tr].astype(np.int32)), (x[te], y[te].astype(np.int32))


class MLP(nn.Module):
    width: int = 128
    depth: int = 2

    @nn.compact
    def __call__(self, x):
        for i in range(self.depth):
            x = nn.relu(nn.Dense(self.width, name=f"fc{i}")(x))
        return nn.Dense(10, name="head")(x)


def train(weight_norm: bool, data, args):
    (xtr, ytr), (xte, yte) = data
    base = MLP(args.width, args.depth)
    model = px.Parametrized(base, {"*/kernel": WeightNorm()}) if weight_norm else base
    params = jax.jit(model.init)(jax.random.key(args.seed), xtr[:2])["params"]
    if weight_norm:
        shapes = jax.tree.map(jnp.shape, params["parametrizations"])
        print("  weight-norm raw parameters:", {k: v["kernel"] for k, v in shapes.items()})
    opt = optax.sgd(args.lr, momentum=0.9)
    opt_state = opt.init(params)

    def loss_fn(params, x, y):
        logits = model.apply({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def accuracy(params, x, y):
        return jnp.mean(jnp.argmax(model.apply({"params": params}, x), -1) == y)

    rng = np.random.default_rng(args.seed)  # same batches for both models
    n = len(xtr)
    per_epoch = max(1, n // args.batch)
    curve, accs = [], []
    name = "weight norm" if weight_norm else "plain"
    for _ in tqdm(range(args.epochs), desc=f"{name:>11}", file=sys.stdout, disable=args.quiet):
        perm = rng.permutation(n)
        total = 0.0
        for b in range(per_epoch):
            idx = perm[b * args.batch : (b + 1) * args.batch]
            params, opt_state, loss = step(params, opt_state, xtr[idx], ytr[idx])
            total += float(loss)
        curve.append(total / per_epoch)
        accs.append(float(accuracy(params, xte, yte)))
    return np.array(curve), np.array(accs)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, (curve, accs) in results.items():
        a1.plot(np.arange(1, len(curve) + 1), curve, marker=".", label=name)
        a2.plot(np.arange(1, len(accs) + 1), accs, marker=".", label=name)
    a1.set_yscale("log")
    a1.set_xlabel("epoch")
    a1.set_ylabel("training cross-entropy")
    a2.set_xlabel("epoch")
    a2.set_ylabel("test accuracy")
    a1.legend()
    a2.legend()
    fig.suptitle("load_digits, MLP, SGD + momentum: weight norm vs plain")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--epochs",
        "--steps",
        dest="epochs",
        type=int,
        default=30,
        help="training epochs (default 30)",
    )
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(pathlib.Path(__file__).with_suffix(".png")))
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    data = load(args.seed)
    print(f"load_digits: {len(data[0][0])} training, {len(data[1][0])} test images")
    results = {}
    for wn in (False, True):
        name = "weight norm" if wn else "plain"
        results[name] = train(wn, data, args)
        curve, accs = results[name]
        print(
            f"{name:>11}: final training loss {curve[-1]:.4f}, test accuracy {100 * accs[-1]:.1f}%"
        )
    if not args.no_plot:
        plot(results, args.out)
        print(f"plot: {args.out}")
    if args.epochs >= 30:
        acc = results["weight norm"][1][-1]
        assert acc >= 0.9, f"weight norm: test accuracy {acc:.3f} < 0.9"
        print("[ok] the weight-normed MLP reaches >= 90% test accuracy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
