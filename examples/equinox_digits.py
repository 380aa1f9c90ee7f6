"""An equinox CNN with orthogonal and spectrally normalised weights, on scikit-learn's digits.

Run:  python examples/equinox_digits.py        # about a minute on 2 CPU cores

``sklearn.datasets.load_digits`` ships inside scikit-learn (1797 8x8 images, 10 classes; no
download). The model is a plain equinox CNN; parametrax constrains it without touching its
code::

    spec = {"conv/weight": px.SpectralNorm(axis=0),          # (out, in, kh, kw): torch's dim=0
            "hidden/weight": px.Orthogonal(map="cayley")}    # (out, in) = (64, 128): orthonormal rows
    model, state = eqx.nn.make_with_state(px.equinox.Parametrized)(cnn, spec, key=k)

Both chains own state (spectral norm's ``u``, ``v``; the orthogonal map's trivialization base),
so it lives in an ``eqx.nn.State`` and the model is called as ``model(x, state=state)``. The
training loop is the usual ``eqx.filter_jit`` + ``eqx.filter_value_and_grad`` + optax AdamW
(weight decay on the raw arrays). The script checks, after training, that the hidden weight has
orthonormal rows, that the conv kernel's matrix (``(out, in*kh*kw)``, torch's ``dim=0`` view)
has spectral norm 1 (after the power iteration has caught up with the last step), that the test accuracy is at least 90 % with the default flags, and that
``px.equinox.remove_parametrizations`` gives back a plain ``CNN`` computing the same outputs.
"""

from __future__ import annotations

import argparse
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import parametrax as px


def load(seed: int):
    from sklearn.datasets import load_digits  # noqa: PLC0415 - the examples extra

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    cut = int(0.8 * len(x))
    tr, te = idx[:cut], idx[cut:]
    return (x[tr], y[tr].astype(np.int32)), (x[te], y[te].astype(np.int32))


class CNN(eqx.Module):
    conv: eqx.nn.Conv2d
    hidden: eqx.nn.Linear
    head: eqx.nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv = eqx.nn.Conv2d(1, 8, 3, padding=1, key=k1)
        self.hidden = eqx.nn.Linear(8 * 4 * 4, 64, key=k2)
        self.head = eqx.nn.Linear(64, 10, key=k3)

    def __call__(self, x):  # one (1, 8, 8) image
        h = jax.nn.relu(self.conv(x))
        h = h.reshape(8, 4, 2, 4, 2).max(axis=(2, 4))  # 2x2 max pool
        h = jax.nn.relu(self.hidden(h.reshape(-1)))
        return self.head(h)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-accuracy", type=float, default=0.9)
    args = ap.parse_args(argv)

    (xtr, ytr), (xte, yte) = load(args.seed)
    key = jax.random.key(args.seed)
    spec = {"conv/weight": px.SpectralNorm(axis=0), "hidden/weight": px.Orthogonal(map="cayley")}
    model, state = eqx.nn.make_with_state(px.equinox.Parametrized)(CNN(key), spec, key=key)
    optim = optax.adamw(args.lr, weight_decay=1e-4)
    params = lambda m: eqx.filter(m, eqx.is_inexact_array)  # noqa: E731
    opt_state = optim.init(params(model))

    def loss_fn(m, state, x, y):
        batch_model = jax.vmap(lambda xi: m(xi, state=state), out_axes=(0, None))
        logits, new_state = batch_model(x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, new_state

    @eqx.filter_jit
    def step(m, state, opt_state, x, y):
        (loss, state), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(m, state, x, y)
        updates, opt_state = optim.update(grads, opt_state, params(m))
        return eqx.apply_updates(m, updates), state, opt_state, loss

    @eqx.filter_jit
    def accuracy(m, state, x, y):
        logits = jax.vmap(lambda xi: m(xi, state=state, inference=True)[0])(x)
        return jnp.mean(jnp.argmax(logits, -1) == y)

    rng = np.random.default_rng(args.seed)
    first = last = None
    for _ in range(args.steps):
        idx = rng.integers(0, len(xtr), args.batch)
        model, state, opt_state, loss = step(model, state, opt_state, xtr[idx], ytr[idx])
        first = float(loss) if first is None else first
        last = float(loss)
    acc = float(accuracy(model, state, xte, yte))

    # The power iteration runs once per training step, so the stored u, v lag the last update
    # a little (as in torch); a few more iterations at the final weights converge them.
    catch_up = eqx.filter_jit(lambda m, s: m(xte[0], state=s)[1])
    for _ in range(200):
        state = catch_up(model, state)
    plain = px.equinox.constrain(model, state)
    w = np.asarray(plain.hidden.weight)
    ortho = float(np.max(np.abs(w @ w.T - np.eye(w.shape[0]))))
    conv = np.asarray(plain.conv.weight).reshape(plain.conv.weight.shape[0], -1)
    sigma = float(np.linalg.norm(conv, 2))
    baked = px.equinox.remove_parametrizations(model, state)
    same = float(
        np.max(
            np.abs(
                jax.vmap(baked)(xte[:32])
                - jax.vmap(lambda xi: model(xi, state=state, inference=True)[0])(xte[:32])
            )
        )
    )
    print(f"loss {first:.3f} -> {last:.3f}; test accuracy {acc:.3f}")
    print(f"hidden weight max|W Wᵀ - I| = {ortho:.2e}; conv matrix spectral norm = {sigma:.4f}")
    print(f"baked {type(baked).__name__} vs parametrized outputs: max diff {same:.2e}")
    ok = (
        ortho < 1e-4
        and abs(sigma - 1) < 1e-3
        and same < 1e-4
        and type(baked) is CNN
        and last < first
        and acc >= args.min_accuracy
    )
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
