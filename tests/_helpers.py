"""Small shared test utilities (tolerances are named per dtype, never library defaults)."""

import dataclasses
import os
import pathlib
import re
import subprocess
import sys
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import parametrax as px

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Smoke runs check behaviour, not speed: a lower XLA optimisation level halves compile time.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"

ATOL = {jnp.float32: 1e-5, jnp.float64: 1e-12}
F32_ATOL = 1e-5
F32_RTOL = 1e-4


def run_script(script: str, *args: str, timeout: int = 300, fast_compile: bool = False) -> str:
    """Run the repository's ``script`` (a path from the root) in a fresh Python from the root;
    assert it exits 0 (showing the tail of its output if not) and return its stdout."""
    env = dict(os.environ)
    if fast_compile:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + FAST_COMPILE).strip()
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def orthogonality_error(q):
    q = np.asarray(q)
    k = q.shape[-1]
    return float(np.max(np.abs(np.swapaxes(q, -1, -2).conj() @ q - np.eye(k))))


def symmetry_error(a):
    a = np.asarray(a)
    return float(np.max(np.abs(a - np.swapaxes(a, -1, -2))))


def skew_error(a):
    a = np.asarray(a)
    return float(np.max(np.abs(a + np.swapaxes(a, -1, -2))))


def rand(seed_or_rng, shape, dtype=np.float32, scale=1.0):
    """Standard normal numpy draws, ``scale`` times, complex when ``dtype`` is (independent real
    and imaginary parts). Takes a seed or a ``np.random.Generator``. Numpy, not jax.random: no
    per-shape compilation in eager tests."""
    rng = (
        seed_or_rng
        if isinstance(seed_or_rng, np.random.Generator)
        else np.random.default_rng(seed_or_rng)
    )
    x = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return (scale * x).astype(dtype)


def normal(seed, shape, dtype=np.float32, scale=1.0):
    """``scale`` times standard normal draws from numpy, as a jax array of ``dtype`` (real). Numpy,
    not jax.random: no per-shape compilation in eager tests."""
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def key_normal(seed, shape, dtype=jnp.float32):
    """``jax.random.normal`` under ``jax.random.key(seed)`` (the draws some tests were tuned on)."""
    return jax.random.normal(jax.random.key(seed), shape, dtype)


def standard_promotion(tx):
    """``tx`` (an optax transformation) with its ``init`` and ``update`` traced under standard dtype
    promotion. The tests run strict (tests/conftest.py), but optax 0.2.8's own arithmetic is not
    strict-clean: ``optax.tree_utils.tree_bias_correction`` (adam, adamw, adafactor, ...) computes
    ``decay ** count``, a Python float to an int32 power. Only optax's step is let through; the
    gradients and everything parametrax computes stay strict."""

    def init(params):
        with jax.numpy_dtype_promotion("standard"):
            return tx.init(params)

    def update(updates, state, params=None, **extra_args):
        with jax.numpy_dtype_promotion("standard"):
            return tx.update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(init, update)


# --- test-local parametrizations and modules shared by several test files -----------------------
@dataclasses.dataclass(frozen=True)
class Double(px.Parametrization):
    """X -> 2 X, with an exact right inverse."""

    def forward(self, x):
        return 2 * x

    def right_inverse(self, y):
        return y / 2


@dataclasses.dataclass(frozen=True)
class RankOne(px.Parametrization):
    """PyTorch's test RankOne: forward(x, y) = x y^T (two raw arrays, original0 and original1);
    right_inverse projects onto rank one through the SVD. Batched over leading axes."""

    def forward(self, x, y):
        return x[..., :, None] * y[..., None, :]

    def right_inverse(self, z):
        u, s, vh = jnp.linalg.svd(z, full_matrices=False)
        r = jnp.sqrt(s[..., 0])
        return u[..., :, 0] * r[..., None], vh[..., 0, :] * r[..., None]

    def sample(self, key, shape, dtype=jnp.float32):
        ku, kv = jax.random.split(key)
        u = jax.random.normal(ku, shape[:-1], dtype)
        v = jax.random.normal(kv, shape[:-2] + shape[-1:], dtype)
        return u[..., :, None] * v[..., None, :]


@dataclasses.dataclass(frozen=True)
class Scale(px.Parametrization):
    """A learnable scalar ``s`` initialised to ``init``: x -> s x (variables protocol, params
    only)."""

    init: float = 1.0

    def init_variables(self, key, value):
        return {"params": {"s": jnp.asarray(self.init, value.dtype)}, "state": {}}

    def apply(self, variables, x, *, update_state=False):
        return variables["params"]["s"] * x, variables["state"]

    def apply_inverse(self, variables, value, *, key=None):
        return value / variables["params"]["s"], variables["state"]


@dataclasses.dataclass(frozen=True)
class Exp(px.Parametrization):
    """exp / log: a finite value <= 0 has a non-finite right inverse."""

    def forward(self, x):
        return jnp.exp(x)

    def right_inverse(self, value):
        return jnp.log(value)


@dataclasses.dataclass(frozen=True)
class Counter(px.Parametrization):
    """Identity with a state ``count`` that advances once per read that updates state."""

    def init_variables(self, key, value):
        return {"params": {}, "state": {"count": jnp.zeros((), jnp.int32)}}

    def apply(self, variables, x, *, update_state=False):
        c = variables["state"]["count"]
        return x, {"count": c + 1 if update_state else c}

    def apply_inverse(self, variables, value, *, key=None):
        return value, variables["state"]


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(nn.relu(nn.Dense(4)(x)))


def stable_id(value) -> str:
    """``repr(value)`` without memory addresses (``<function exp at 0x7f...>`` -> ``<function
    exp>``): a test id must be the same in every process, or pytest-xdist's workers disagree on
    what they collected."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


# ------------------------------------------------------------------------------------------------
# A small pytree model of a registered dataclass inside a NamedTuple (the tree API's tests of
# arbitrary pytrees: tests/test_tree_pytrees.py, tests/test_tree_fast_paths.py)
# ------------------------------------------------------------------------------------------------
@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Layer:
    w: jax.Array
    b: jax.Array


class Pair(NamedTuple):
    first: Layer
    second: Layer | None
