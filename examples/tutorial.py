"""PyTorch's "Parametrizations Tutorial", section by section, in JAX with parametrax.

Run:  python examples/tutorial.py

Every claim the script prints is also asserted, so the script doubles as a test. The original:
https://pytorch.org/tutorials/intermediate/parametrizations.html
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

import parametrax as px
from parametrax import Parametrized

key = jax.random.key(0)


def section(title: str) -> None:
    print(f"\n=== {title} ===")


def check(claim: str, ok: bool) -> None:
    assert ok, claim
    print(f"  [ok] {claim}")


def max_abs(x) -> float:
    return float(jnp.max(jnp.abs(x)))


# -----------------------------------------------------------------------------------------------
section("Implementing parametrizations by hand")
# The tutorial first writes a layer that stores a raw matrix and uses its symmetric part.


class LinearSymmetric(nn.Module):
    n_features: int

    @nn.compact
    def __call__(self, x):
        w = self.param("weight", nn.initializers.normal(1.0), (self.n_features, self.n_features))
        a = jnp.triu(w)
        return x @ (a + jnp.triu(a, 1).T)


layer = LinearSymmetric(3)
x = jax.random.normal(key, (8, 3))
v = layer.init(key, x)
print("LinearSymmetric output shape:", layer.apply(v, x).shape)
# This works, but the constraint is welded into one layer. Parametrizations separate the two.

# -----------------------------------------------------------------------------------------------
section("Introduction to parametrizations")
# torch:  parametrize.register_parametrization(nn.Linear(3, 3), "weight", Symmetric())
layer = Parametrized(nn.Dense(3), {"kernel": px.symmetric})
v = layer.init(key, x)
A = px.linen.constrain(layer, v)["params"]["kernel"]
print("A =\n", A)
check("the kernel is symmetric: A == A.T", bool(jnp.all(A == A.T)))

# Skew on a Conv kernel. A Flax Conv kernel is (kh, kw, in, out); matrix maps act on the last
# two axes, so each (in, out) slice, one per spatial position, is skew-symmetric.
conv = Parametrized(nn.Conv(features=5, kernel_size=(3, 3)), {"kernel": px.skew})
cv = conv.init(key, jnp.ones((1, 8, 8, 5)))
K = px.linen.constrain(conv, cv)["params"]["kernel"]
print("conv kernel shape (kh, kw, in, out):", K.shape)
check(
    "every (in, out) slice of the conv kernel is skew-symmetric",
    bool(jnp.all(K == -jnp.swapaxes(K, -1, -2))),
)

# -----------------------------------------------------------------------------------------------
section("Inspecting a parametrized module")
print("type:", type(layer).__name__, "| is a nn.Dense:", isinstance(layer, nn.Dense))
print("variables:", jax.tree.map(jnp.shape, v))
original = v["params"]["parametrizations"]["kernel"]["original"]
print("original (the raw, unconstrained values) =\n", original)
check("the raw value lives at params/parametrizations/kernel/original", original.shape == (3, 3))
check(
    "the kernel is computed from it: A == Symmetric(original)",
    bool(jnp.all(A == px.symmetric(original))),
)

# -----------------------------------------------------------------------------------------------
section("Parametrizations are first-class citizens")
# A parametrization may own variables: learnable parameters trained with the model, and
# non-trainable state. Here a learnable scale; px.RandomPruning below keeps a mask as state.


@dataclasses.dataclass(frozen=True)
class LearnableScale(px.Parametrization):
    """X -> s * X with a learnable scalar s."""

    def init_variables(self, key, value):
        return {"params": {"s": jnp.ones((), value.dtype)}, "state": {}}

    def apply(self, variables, x, *, update_state=False):
        return variables["params"]["s"] * x, variables["state"]

    def apply_inverse(self, variables, value, *, key=None):
        return value / variables["params"]["s"], variables["state"]


scaled = Parametrized(nn.Dense(3), {"kernel": [px.symmetric, LearnableScale()]})
sv = scaled.init(key, x)
print("variables:", jax.tree.map(jnp.shape, sv["params"]))
grads = jax.grad(lambda p: jnp.sum(scaled.apply({"params": p}, x) ** 2))(sv["params"])
check(
    "the parametrization's own parameter gets a gradient",
    max_abs(grads["parametrizations"]["kernel"]["1"]["s"]) > 0,
)

# -----------------------------------------------------------------------------------------------
section("Caching the value of a parametrization")
# torch recomputes the parametrization on every access unless you use `cached()`. parametrax
# evaluates each chain exactly once per apply, before the wrapped module runs.
calls = []


def noisy(X):
    jax.debug.callback(lambda: calls.append(1))
    return X


class ReadsTwice(nn.Module):
    @nn.compact
    def __call__(self, x):
        dense = nn.Dense(3)
        return dense(x) + dense(x)  # reads the kernel twice


model = Parametrized(ReadsTwice(), {"Dense_0/kernel": [px.symmetric, noisy]})
mv = model.init(key, x)
jax.effects_barrier()
calls.clear()
apply = jax.jit(model.apply)
for _ in range(3):
    apply(mv, x).block_until_ready()
jax.effects_barrier()
print("applies: 3, parametrization evaluations:", len(calls))
check("the parametrization runs once per apply although the kernel is read twice", len(calls) == 3)

# -----------------------------------------------------------------------------------------------
section("Concatenating parametrizations")
eye = jnp.eye(3)
layer_orthogonal = Parametrized(nn.Dense(3), {"kernel": [px.skew, px.cayley]})
ov = layer_orthogonal.init(key, x)
Q = px.linen.constrain(layer_orthogonal, ov)["params"]["kernel"]
print("Skew + Cayley: |Q^T Q - I| =", max_abs(Q.T @ Q - eye))
check("Skew + Cayley gives an orthogonal kernel", max_abs(Q.T @ Q - eye) < 1e-5)

layer_expm = Parametrized(nn.Dense(3), {"kernel": [px.skew, px.matrix_exp]})
Q2 = px.linen.constrain(layer_expm, layer_expm.init(key, x))["params"]["kernel"]
print("Skew + MatrixExp: |Q^T Q - I| =", max_abs(Q2.T @ Q2 - eye))
check("Skew + MatrixExp gives an orthogonal kernel", max_abs(Q2.T @ Q2 - eye) < 1e-5)

layer_spd = Parametrized(nn.Dense(3), {"kernel": [px.symmetric, px.matrix_exp]})
S = px.linen.constrain(layer_spd, layer_spd.init(key, x))["params"]["kernel"]
eigs = jnp.linalg.eigvalsh(S)
print("Symmetric + MatrixExp: eigenvalues =", eigs)
check(
    "Symmetric + MatrixExp gives a positive definite kernel",
    max_abs(S - S.T) < 1e-5 and float(eigs.min()) > 0,
)

# -----------------------------------------------------------------------------------------------
section("Initializing parametrizations")
# torch:  layer_orthogonal.weight = X   ->   px.assign returns new variables.
X = px.matrix_exp(px.skew(jax.random.normal(jax.random.key(1), (3, 3))))  # orthogonal, det +1
ov = px.linen.assign(layer_orthogonal, ov, {"kernel": X})
Q = px.linen.constrain(layer_orthogonal, ov)["params"]["kernel"]
print("after assigning X: |kernel - X| =", max_abs(Q - X))
check(
    "assigning an orthogonal X makes the kernel X (Cayley's right inverse)", max_abs(Q - X) < 1e-5
)

# The tutorial's CayleyMap.right_inverse read a global `X`, so a second assignment silently
# restored the first. parametrax's inverts the value it is given:
X2 = px.matrix_exp(px.skew(jax.random.normal(jax.random.key(2), (3, 3))))
ov = px.linen.assign(layer_orthogonal, ov, {"kernel": X2})
Q = px.linen.constrain(layer_orthogonal, ov)["params"]["kernel"]
check("a second assignment takes the new matrix, not the old one", max_abs(Q - X2) < 1e-5)

# Assigning through a chain with no right inverse is a clear error, as in torch.
try:
    px.linen.assign(layer_expm, layer_expm.init(key, x), {"kernel": X})
    raise AssertionError("assignment should fail")
except px.RightInverseError as e:
    print("Skew + MatrixExp refuses assignment:", str(e)[:100], "...")

# A right inverse need not be a true inverse: the pruning mask. Its right_inverse is the
# identity, so after assigning W the kernel reads W * mask, not W.
pruned = Parametrized(nn.Dense(4), {"kernel": px.RandomPruning(p_drop=0.5)})
pv = pruned.init(key, jnp.ones((1, 4)))
mask = pv["parametrization_state"]["parametrizations"]["kernel"]["0"]["mask"]
print("pruning mask (non-trainable state, drawn from the init key):\n", mask)
W = jnp.ones((4, 4))
pv = px.linen.assign(pruned, pv, {"kernel": W})
P = px.linen.constrain(pruned, pv)["params"]["kernel"]
check("after assigning W the pruned kernel is W * mask", bool(jnp.all(P == W * mask)))
check("the mask zeroes some entries", float(mask.sum()) < mask.size)

# -----------------------------------------------------------------------------------------------
section("Removing parametrizations")
layer = Parametrized(nn.Dense(3), {"kernel": px.symmetric})
v = layer.init(key, x)
A = px.linen.constrain(layer, v)["params"]["kernel"]
base, base_v = px.linen.remove_parametrizations(layer, v)
print("after removal:", type(base).__name__, jax.tree.map(jnp.shape, base_v))
check(
    "leave_parametrized=True keeps the symmetric value",
    bool(jnp.all(base_v["params"]["kernel"] == A)),
)
check(
    "the plain Dense computes what the parametrized one did",
    max_abs(base.apply(base_v, x) - layer.apply(v, x)) < 1e-6,
)

base, base_v = px.linen.remove_parametrizations(layer, v, leave_parametrized=False)
check(
    "leave_parametrized=False leaves the raw original (its upper triangle)",
    bool(
        jnp.all(base_v["params"]["kernel"] == v["params"]["parametrizations"]["kernel"]["original"])
    ),
)
print("\nAll tutorial claims hold.")
