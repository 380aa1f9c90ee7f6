"""PyTorch's "Parametrizations Tutorial", line by line, on Flax NNX modules with parametrax.nnx.

Run:  python examples/tutorial_nnx.py

Every claim the script prints is also asserted, so the script doubles as a test. The original:
https://pytorch.org/tutorials/intermediate/parametrizations.html (by Mario Lezcano). Where the
original is wrong (its CayleyMap.right_inverse reads a global variable; its last section says
"Same as Before" for a value that is not) this version says so and asserts what is true.

Layout note: a torch ``Linear`` weight is (out, in), a Flax ``kernel`` is (in, out); a torch
Conv2d weight is (out, in, kh, kw), a Flax Conv kernel (kh, kw, in, out). Matrix
parametrizations act on the last two axes, so a Flax conv kernel is constrained per (in, out)
slice, one per spatial tap.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import parametrax as px
from parametrax import nnx as parametrize

rngs = nnx.Rngs(0)
key = jax.random.key(0)


def section(title: str) -> None:
    print(f"\n=== {title} ===")


def check(claim: str, ok) -> None:
    assert bool(ok), claim
    print(f"  [ok] {claim}")


def dist(a, b) -> float:
    """torch.dist: the Frobenius norm of a - b."""
    return float(jnp.linalg.norm(jnp.asarray(a) - jnp.asarray(b)))


# -----------------------------------------------------------------------------------------------
section("Implementing parametrizations by hand")


def symmetric(X):
    return jnp.triu(X) + jnp.swapaxes(jnp.triu(X, 1), -1, -2)


X = jax.random.uniform(key, (3, 3))
A = symmetric(X)
check("symmetric(X) is symmetric", jnp.allclose(A, A.T))
print(A)


class LinearSymmetric(nnx.Module):
    def __init__(self, n_features, *, rngs):
        self.weight = nnx.Param(jax.random.uniform(rngs.params(), (n_features, n_features)))

    def __call__(self, x):
        A = symmetric(self.weight[...])
        return x @ A


layer = LinearSymmetric(3, rngs=rngs)
out = layer(jax.random.uniform(key, (8, 3)))
check("the hand-written layer works like a linear layer", out.shape == (8, 3))
# It reimplements the layer, welds the constraint to it, and recomputes A on every use.

# -----------------------------------------------------------------------------------------------
section("Introduction to parametrizations")
# The only thing we write is the parametrization: a small frozen dataclass with a forward.


@dataclasses.dataclass(frozen=True)
class Symmetric(px.Parametrization):
    def forward(self, X):
        return jnp.triu(X) + jnp.swapaxes(jnp.triu(X, 1), -1, -2)


layer = nnx.Linear(3, 3, rngs=rngs)
parametrize.register_parametrization(layer, "kernel", Symmetric())
A = layer.kernel
check("the kernel of the nnx.Linear is now symmetric", jnp.allclose(A, A.T))
print(A)


@dataclasses.dataclass(frozen=True)
class Skew(px.Parametrization):
    def forward(self, X):
        A = jnp.triu(X, 1)
        return A - jnp.swapaxes(A, -1, -2)


cnn = nnx.Conv(in_features=5, out_features=5, kernel_size=(3, 3), rngs=rngs)
parametrize.register_parametrization(cnn, "kernel", Skew())
print(cnn.kernel[0, 1])
print(cnn.kernel[2, 2])
check(
    "every (in, out) slice of the conv kernel is skew-symmetric",
    jnp.all(cnn.kernel == -jnp.swapaxes(cnn.kernel, -1, -2)),
)
check("the parametrized conv runs unchanged", cnn(jnp.ones((1, 8, 8, 5))).shape == (1, 8, 8, 5))

# -----------------------------------------------------------------------------------------------
section("Inspecting a parametrized module")
# 1) layer.kernel is a property, 2) there is a layer.parametrizations attribute,
# 3) the unparametrized kernel moved to layer.parametrizations.kernel.original.
layer = nnx.Linear(3, 3, rngs=rngs)
print(f"Unparametrized: {type(layer).__name__}")
plain_state = jax.tree.map(jnp.shape, nnx.state(layer))
parametrize.register_parametrization(layer, "kernel", Symmetric())
print(f"Parametrized:   {type(layer).__name__}")
check("the class is a generated subclass of nnx.Linear", isinstance(layer, nnx.Linear))
check(
    "type_before_parametrizations gives nnx.Linear back",
    parametrize.type_before_parametrizations(layer) is nnx.Linear,
)
check("`kernel` is a property of the new class", isinstance(type(layer).kernel, property))

print(layer.parametrizations)
print(layer.parametrizations.kernel)
print(layer.parametrizations.kernel[0].parametrization)
check(
    "layer.parametrizations.kernel[0] holds our Symmetric",
    layer.parametrizations.kernel[0].parametrization == Symmetric(),
)

print("state before:", plain_state)
state = jax.tree.map(jnp.shape, nnx.state(layer))
print("state after: ", state)
paths = {path for path, _ in nnx.to_flat_state(nnx.state(layer))}
check(
    "the Param `kernel` moved to parametrizations/kernel/original",
    paths == {("bias",), ("parametrizations", "kernel", "original")}
    and isinstance(layer.parametrizations.kernel.original, nnx.Param),
)
print(layer.parametrizations.kernel.original)

symmetric_p = Symmetric()
weight_orig = layer.parametrizations.kernel.original[...]
print("dist(layer.kernel, symmetric(original)) =", dist(layer.kernel, symmetric_p(weight_orig)))
check(
    "the parametrization does exactly what the manual version did",
    dist(layer.kernel, symmetric_p(weight_orig)) == 0.0,
)

# -----------------------------------------------------------------------------------------------
section("Parametrizations are first-class citizens")
# layer.parametrizations is an nnx Module inside the layer, so the NNX rules for variables
# apply: a parametrization's learnable parameters are nnx.Param (trained with the model) and
# its buffers are ParametrizationState (not trained), and nnx.split / nnx.jit / nnx.state see
# them like any other variable.


@dataclasses.dataclass(frozen=True)
class Scale(px.Parametrization):
    """X -> s * X with a learnable scalar s (a parametrization with its own parameter)."""

    def init_variables(self, key, value):
        return {"params": {"s": jnp.ones((), value.dtype)}, "state": {}}

    def apply(self, variables, X, *, update_state=False):
        return variables["params"]["s"] * X, variables["state"]


layer = nnx.Linear(3, 3, rngs=rngs)
parametrize.register_parametrization(layer, "kernel", Symmetric())
parametrize.register_parametrization(layer, "kernel", Scale(), rngs=rngs)
params = nnx.state(layer, nnx.Param)
print(jax.tree.map(jnp.shape, params))
check(
    "the parametrization's `s` is an nnx.Param of the layer",
    isinstance(layer.parametrizations.kernel[1].s, nnx.Param),
)
optimizer = nnx.Optimizer(layer, optax.sgd(0.1), wrt=nnx.Param)
x = jax.random.normal(key, (8, 3))
grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(layer)
optimizer.update(layer, grads)
check("an optimizer step moves `s` too", float(layer.parametrizations.kernel[1].s[...]) != 1.0)
check("and the kernel stays symmetric", jnp.allclose(layer.kernel, layer.kernel.T))

# -----------------------------------------------------------------------------------------------
section("Caching the value of a parametrization")
computations = []


@dataclasses.dataclass(frozen=True)
class NoisyParametrization(px.Parametrization):
    def forward(self, X):
        print("Computing the Parametrization")
        computations.append(1)
        return X


layer = nnx.Linear(4, 4, rngs=rngs)
parametrize.register_parametrization(layer, "kernel", NoisyParametrization())
computations.clear()
print("Here, layer.kernel is recomputed every time we call it")
foo = layer.kernel + layer.kernel.T
bar = layer.kernel.sum()
check("eager code computes it on each of the 3 reads", len(computations) == 3)
computations.clear()
with parametrize.cached():
    print("Here, it is computed just the first time layer.kernel is called")
    foo = layer.kernel + layer.kernel.T
    bar = layer.kernel.sum()
check("inside cached() it is computed once", len(computations) == 1)

# Under nnx.jit no context is needed: reads of the same traced raw value in one trace are
# memoized, so a model that reads its kernel several times puts the map in the program once.
computations.clear()
step = nnx.jit(lambda m, x: m(x) + m(x) + m(x))
step(layer, jnp.ones((2, 4)))
check(
    "nnx.jit traces the map once although the layer is called three times", len(computations) == 1
)

# Unlike torch, an assignment inside cached() is not hidden by a stale cache entry.
layer = nnx.Linear(4, 4, rngs=rngs)
parametrize.register_parametrization(layer, "kernel", px.symmetric)  # has a right_inverse
with parametrize.cached():
    before = layer.kernel
    layer.kernel = jnp.eye(4)
    check(
        "inside cached(), a read after an assignment sees the new value (torch: the stale one)",
        jnp.all(layer.kernel == jnp.eye(4)) and not jnp.all(before == jnp.eye(4)),
    )

# -----------------------------------------------------------------------------------------------
section("Concatenating parametrizations")


@dataclasses.dataclass(frozen=True)
class CayleyMap(px.Parametrization):
    """(I + X)(I - X)^{-1}, with the identity kept as a buffer as the tutorial does."""

    n: int

    def init_variables(self, key, value):
        return {"params": {}, "state": {"Id": jnp.eye(self.n, dtype=value.dtype)}}

    def apply(self, variables, X, *, update_state=False):
        Id = variables["state"]["Id"]
        # (I + X)(I - X)^{-1} == (I - X)^{-1}(I + X): the two factors commute
        return jnp.linalg.solve(Id - X, Id + X), variables["state"]


layer = nnx.Linear(3, 3, rngs=rngs)
parametrize.register_parametrization(layer, "kernel", Skew())
parametrize.register_parametrization(layer, "kernel", CayleyMap(3), rngs=rngs)
X = layer.kernel
print("dist(X.T @ X, I) =", dist(X.T @ X, jnp.eye(3)))
check("Skew then CayleyMap: the kernel is orthogonal", dist(X.T @ X, jnp.eye(3)) < 1e-5)
check(
    "CayleyMap's buffer `Id` is state, not a trainable Param",
    isinstance(layer.parametrizations.kernel[1].Id, parametrize.ParametrizationState),
)


@dataclasses.dataclass(frozen=True)
class MatrixExponential(px.Parametrization):
    def forward(self, X):
        return jax.scipy.linalg.expm(X)


layer_orthogonal = nnx.Linear(3, 3, rngs=rngs)
parametrize.register_parametrization(layer_orthogonal, "kernel", Skew())
parametrize.register_parametrization(layer_orthogonal, "kernel", MatrixExponential())
X = layer_orthogonal.kernel
print("dist(X.T @ X, I) =", dist(X.T @ X, jnp.eye(3)))
check("Skew then MatrixExponential: orthogonal", dist(X.T @ X, jnp.eye(3)) < 1e-5)

layer_spd = nnx.Linear(3, 3, rngs=rngs)
parametrize.register_parametrization(layer_spd, "kernel", Symmetric())
parametrize.register_parametrization(layer_spd, "kernel", MatrixExponential())
X = layer_spd.kernel
print("dist(X, X.T) =", dist(X, X.T), "| eigenvalues:", jnp.linalg.eigvalsh(X))
check("Symmetric then MatrixExponential: symmetric", dist(X, X.T) < 1e-5)
check("... and positive definite", jnp.all(jnp.linalg.eigvalsh(X) > 0.0))

# -----------------------------------------------------------------------------------------------
section("Initializing parametrizations")


@dataclasses.dataclass(frozen=True)
class Skew(px.Parametrization):  # noqa: F811  (upgraded, as in the tutorial)
    def forward(self, X):
        A = jnp.triu(X, 1)
        return A - jnp.swapaxes(A, -1, -2)

    def right_inverse(self, A):
        # We assume that A is skew-symmetric; we keep the upper triangle, which forward uses.
        return jnp.triu(A, 1)


layer = nnx.Linear(3, 3, rngs=rngs)
parametrize.register_parametrization(layer, "kernel", Skew())
X = jax.random.uniform(jax.random.key(1), (3, 3))
X = X - X.T  # X is now skew-symmetric
layer.kernel = X  # Initialize layer.kernel to be X
print("dist(layer.kernel, X) =", dist(layer.kernel, X))
check("assigning a skew-symmetric X makes layer.kernel == X", dist(layer.kernel, X) < 1e-6)


@dataclasses.dataclass(frozen=True)
class CayleyMap(px.Parametrization):  # noqa: F811
    n: int

    def init_variables(self, key, value):
        return {"params": {}, "state": {"Id": jnp.eye(self.n, dtype=value.dtype)}}

    def apply(self, variables, X, *, update_state=False):
        Id = variables["state"]["Id"]
        return jnp.linalg.solve(Id - X, Id + X), variables["state"]

    def apply_inverse(self, variables, A, *, key=None):
        # Assume A orthogonal: X = (A + I)^{-1}(A - I). The tutorial's version reads a global
        # `X` here instead of its argument `A`; this one inverts the value it is given.
        Id = variables["state"]["Id"]
        return jnp.linalg.solve(A + Id, A - Id), variables["state"]


layer_orthogonal = nnx.Linear(3, 3, rngs=rngs)
parametrize.register_parametrization(layer_orthogonal, "kernel", Skew())
parametrize.register_parametrization(layer_orthogonal, "kernel", CayleyMap(3), rngs=rngs)
# Sample an orthogonal matrix with positive determinant
X = nnx.initializers.orthogonal()(jax.random.key(2), (3, 3))
if jnp.linalg.det(X) < 0.0:
    X = X.at[0].multiply(-1.0)
layer_orthogonal.kernel = X
print("dist(layer_orthogonal.kernel, X) =", dist(layer_orthogonal.kernel, X))
check(
    "assigning an orthogonal X through Skew + CayleyMap gives X back",
    dist(layer_orthogonal.kernel, X) < 1e-5,
)

# This initialization step can be written more succinctly as
# layer_orthogonal.kernel = orthogonal_(layer_orthogonal.kernel); in JAX we draw a new matrix:
Y = nnx.initializers.orthogonal()(jax.random.key(3), (3, 3))
Y = jnp.where(jnp.linalg.det(Y) < 0, Y.at[0].multiply(-1.0), Y)
layer_orthogonal.kernel = Y
check(
    "a second assignment takes the new matrix (not the tutorial's global X)",
    dist(layer_orthogonal.kernel, Y) < 1e-5,
)

try:
    layer_spd.kernel = jnp.eye(3)
    raise AssertionError("MatrixExponential has no right_inverse: assignment must fail")
except px.RightInverseError as e:
    print("Symmetric + MatrixExponential refuses assignment:", e)
check("assigning through a map without right_inverse is a clear RightInverseError", True)


@dataclasses.dataclass(frozen=True)
class PruningParametrization(px.Parametrization):
    p_drop: float = 0.2

    def init_variables(self, key, X):
        # sample zeros with probability p_drop
        mask = jax.random.bernoulli(key, 1.0 - self.p_drop, X.shape).astype(X.dtype)
        return {"params": {}, "state": {"mask": mask}}

    def apply(self, variables, X, *, update_state=False):
        return X * variables["state"]["mask"], variables["state"]

    def apply_inverse(self, variables, A, *, key=None):
        return A, variables["state"]


# forward(right_inverse(A)) == A only when A has zeros where the mask has: an assigned matrix
# comes out pruned.
layer = nnx.Linear(4, 3, rngs=nnx.Rngs(4))
X = jax.random.uniform(jax.random.key(5), layer.kernel.shape)
print(f"Initialization matrix:\n{X}")
parametrize.register_parametrization(layer, "kernel", PruningParametrization(), rngs=nnx.Rngs(1))
layer.kernel = X
print(f"\nInitialized kernel:\n{layer.kernel}")
mask = layer.parametrizations.kernel[0].mask[...]
check("the assigned matrix comes out pruned: kernel == X * mask", jnp.all(layer.kernel == X * mask))
check("and the mask did zero some entries", float(mask.sum()) < mask.size)

# -----------------------------------------------------------------------------------------------
section("Removing parametrizations")
layer = nnx.Linear(3, 3, rngs=rngs)
print("Before:", type(layer).__name__)
before = layer.kernel[...]
print(before)
parametrize.register_parametrization(layer, "kernel", Skew())
print("\nParametrized:", type(layer).__name__)
print(layer.kernel)
skewed = layer.kernel
parametrize.remove_parametrizations(layer, "kernel")
print("\nAfter. Kernel has skew-symmetric values but it is unconstrained:", type(layer).__name__)
print(layer.kernel)
check("after removal the layer is a plain nnx.Linear again", type(layer) is nnx.Linear)
check(
    "the kernel is an nnx.Param holding the skew-symmetric value",
    isinstance(layer.kernel, nnx.Param) and jnp.all(layer.kernel[...] == skewed),
)
check(
    "... and the state has its plain layout back",
    jax.tree.map(jnp.shape, nnx.state(layer))
    == jax.tree.map(jnp.shape, nnx.state(nnx.Linear(3, 3, rngs=rngs))),
)

layer = nnx.Linear(3, 3, rngs=rngs)
print("\nBefore:", type(layer).__name__)
before = layer.kernel[...]
print(before)
parametrize.register_parametrization(layer, "kernel", Skew())
print("\nParametrized:", type(layer).__name__)
print(layer.kernel)
parametrize.remove_parametrizations(layer, "kernel", leave_parametrized=False)
print("\nAfter, with leave_parametrized=False:", type(layer).__name__)
print(layer.kernel)
# The tutorial says "Same as Before" here. It is the raw `original`, which registration set to
# right_inverse(before) = triu(before, 1), because this Skew has a right_inverse.
check(
    "leave_parametrized=False leaves the raw original: triu(before, 1)",
    jnp.all(layer.kernel[...] == jnp.triu(before, 1)),
)
check(
    "... which is not the value before registration (the tutorial's 'Same as Before')",
    not jnp.all(layer.kernel[...] == before),
)

print("\nAll tutorial claims hold.")
