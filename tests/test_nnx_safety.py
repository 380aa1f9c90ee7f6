"""The NNX front's promises on bad values, state and serialisation (issues 13 §3 and 16).

* NaN/Inf is refused at every entry point that stores arrays (registration, assignment, the raw
  values and state a right inverse produces), and a refused or failed operation leaves the module
  bit-identical (every value of ``nnx.split``, the class and the attributes).
* A base module writing a variable whose chain inverse moves state keeps that state (under
  ``nnx.jit`` too), so the value reads back.
* Pickle and ``copy.deepcopy`` round-trip a parametrized module.
* Registration takes an explicit train/eval flag.

Oracles: the value assigned, closed-form sets (QᵀQ = I, det, unit norm, eigenvalues), NumPy.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import parametrax as px
from parametrax import nnx as pnnx

from _helpers import F32_ATOL, Counter, Exp


def linear(seed=0, n=3):
    return nnx.Linear(n, n, rngs=nnx.Rngs(seed))


def snapshot(module):
    graphdef, state = nnx.split(module)
    flat = {
        path: np.asarray(v.get_value() if isinstance(v, nnx.Variable) else v)
        for path, v in nnx.to_flat_state(state)
    }
    return type(module), graphdef, flat, sorted(vars(module))


def _bits(x):
    return np.ascontiguousarray(np.atleast_1d(x)).view(np.uint8)


def assert_unchanged(module, snap):
    cls, graphdef, flat, keys = snapshot(module)
    assert cls is snap[0] and graphdef == snap[1] and keys == snap[3]
    assert flat.keys() == snap[2].keys()
    for k in flat:  # bit-identical, NaN included
        np.testing.assert_array_equal(_bits(flat[k]), _bits(snap[2][k]))


@dataclasses.dataclass(frozen=True)
class StateFromInverse(px.Parametrization):
    """Identity whose apply_inverse stores 1 / value[0, 0] as state (Inf for a zero entry)."""

    def init_variables(self, key, value):
        return {"params": {}, "state": {"c": jnp.ones((), value.dtype)}}

    def apply(self, variables, x, *, update_state=False):
        return x, variables["state"]

    def apply_inverse(self, variables, value, *, key):
        return value, {"c": 1.0 / value[0, 0]}


@dataclasses.dataclass(frozen=True)
class BadStateInverse(px.Parametrization):
    """apply_inverse counts its calls in ``c``; from the second call on (an assignment after
    registration) it also returns an entry init_variables did not make."""

    def init_variables(self, key, value):
        return {"params": {}, "state": {"c": jnp.zeros((), jnp.int32)}}

    def apply(self, variables, x, *, update_state=False):
        return x, variables["state"]

    def apply_inverse(self, variables, value, *, key):
        c = variables["state"]["c"]
        extra = {"wrong": jnp.zeros(())} if int(c) >= 1 else {}
        return 2.0 * value, {"c": c + 1, **extra}


BAD = [jnp.nan, jnp.inf, -jnp.inf]


# ------------------------------------------------------------------------------------------------
# NaN / Inf
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", BAD)
def test_registering_a_non_finite_value_is_refused_and_changes_nothing(bad):
    layer = linear()
    layer.kernel[...] = layer.kernel[...].at[1, 2].set(bad)
    snap = snapshot(layer)
    with pytest.raises(
        px.ParametrizationError,
        match=r"register_parametrization\(\[Symmetric\] on `Linear.kernel`\): the value to "
        r"register contains 1 (NaN|Inf) among 9 entries",
    ):
        pnnx.register_parametrization(layer, "kernel", px.symmetric)
    assert_unchanged(layer, snap)


@pytest.mark.parametrize("bad", BAD)
def test_assigning_a_non_finite_value_is_refused_and_changes_nothing(bad):
    layer = linear()
    pnnx.register_parametrization(layer, "kernel", px.symmetric)
    snap = snapshot(layer)
    x = jnp.eye(3).at[0, 0].set(bad)
    with pytest.raises(
        px.ParametrizationError,
        match=r"assigning to `Linear.kernel`: the value assigned contains 1 (NaN|Inf)",
    ):
        layer.kernel = x
    assert_unchanged(layer, snap)
    with pytest.raises(px.ParametrizationError, match="the value assigned contains"):
        pnnx.assign(layer, "kernel", x)
    assert_unchanged(layer, snap)


def test_a_finite_value_whose_right_inverse_is_not_finite_is_refused():
    layer = linear()
    layer.kernel[...] = jnp.abs(layer.kernel[...]) + 0.1
    pnnx.register_parametrization(layer, "kernel", Exp())
    np.testing.assert_allclose(layer.kernel, jnp.abs(linear().kernel[...]) + 0.1, rtol=1e-6)
    snap = snapshot(layer)
    value = jnp.ones((3, 3)).at[0, 1].set(-2.0)  # log(-2) = NaN
    with pytest.raises(
        px.RightInverseError,
        match=r"the value is finite, but the chain \[Exp\].*the raw value `original` has 1 NaN",
    ):
        layer.kernel = value
    assert_unchanged(layer, snap)
    value = value.at[0, 1].set(0.0)  # log(0) = -Inf
    with pytest.raises(px.RightInverseError, match="`original` has 1 Inf"):
        layer.kernel = value
    assert_unchanged(layer, snap)
    # At registration as well.
    fresh = linear()
    fresh.kernel[...] = value
    snap = snapshot(fresh)
    with pytest.raises(px.RightInverseError, match=r"register_parametrization.*`original` has"):
        pnnx.register_parametrization(fresh, "kernel", Exp())
    assert_unchanged(fresh, snap)


def test_non_finite_state_produced_by_a_right_inverse_is_refused():
    layer = linear()
    pnnx.register_parametrization(layer, "kernel", StateFromInverse(), key=jax.random.key(0))
    snap = snapshot(layer)
    with pytest.raises(
        px.RightInverseError, match=r"link 0 \(`StateFromInverse`\) state `c` has 1 Inf"
    ):
        layer.kernel = jnp.zeros((3, 3))
    assert_unchanged(layer, snap)


def test_cayley_of_a_rotation_by_pi_is_refused_not_stored():
    """Issue 16's example: [skew, cayley] cannot represent eigenvalue -1."""
    layer = linear()
    pnnx.register_parametrization(layer, "kernel", [px.skew, px.cayley])
    snap = snapshot(layer)
    with pytest.raises(px.ParametrizationError):
        layer.kernel = jnp.diag(jnp.array([-1.0, -1.0, 1.0]))
    assert_unchanged(layer, snap)


def test_inconsistent_state_from_apply_inverse_leaves_the_raw_value_alone():
    layer = linear()
    pnnx.register_parametrization(layer, "kernel", BadStateInverse(), key=jax.random.key(0))
    snap = snapshot(layer)
    with pytest.raises(
        px.ParametrizationError,
        match=r"`BadStateInverse`.apply_inverse \(link 0\) returned state entries \['c', 'wrong'\], "
        r"but init_variables made \['c'\]",
    ):
        layer.kernel = jnp.eye(3)
    assert_unchanged(layer, snap)


# ------------------------------------------------------------------------------------------------
# State moved by a right inverse, written by the base module
# ------------------------------------------------------------------------------------------------
class Host(nnx.Module):
    def __init__(self, n):
        self.lin = nnx.Linear(n, n, rngs=nnx.Rngs(0))

    def reset(self, value):
        self.lin.kernel = value  # the base module writes its own (parametrized) variable


def _rotation(n, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return jnp.asarray(q, jnp.float32)


def _targets(n):
    q = _rotation(n, 1)  # far from the registered base (a different random rotation)
    a = np.random.default_rng(2).standard_normal((n, n))
    pd = jnp.asarray(a @ a.T + n * np.eye(n), jnp.float32)
    s = np.random.default_rng(3).standard_normal((n, n))
    sphere = jnp.asarray(s / np.linalg.norm(s, axis=-1, keepdims=True), jnp.float32)
    return [(px.SO(), q), (px.Orthogonal(), q), (px.PositiveDefinite(), pd), (px.Sphere(), sphere)]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "nnx.jit"])
@pytest.mark.parametrize("i", range(4), ids=["SO", "Orthogonal", "PositiveDefinite", "Sphere"])
def test_a_base_module_write_keeps_the_state_its_inverse_moves(i, jit):
    n = 4
    p, target = _targets(n)[i]
    host = Host(n)
    pnnx.register_parametrization(host.lin, "kernel", p, key=jax.random.key(0))
    state0 = jax.tree.map(np.asarray, nnx.state(host, pnnx.ParametrizationState))
    reset = nnx.jit(Host.reset) if jit else Host.reset
    reset(host, target)
    np.testing.assert_allclose(host.lin.kernel, target, atol=2e-4)
    moved = jax.tree.map(np.asarray, nnx.state(host, pnnx.ParametrizationState))
    if i in (0, 1):  # the orthogonal trivializations move their base to the target
        assert not all(
            np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state0), jax.tree.leaves(moved))
        )


# ------------------------------------------------------------------------------------------------
# Pickle and deepcopy
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_pickle_and_deepcopy_round_trip(how):
    layer = linear(seed=4)
    pnnx.register_parametrization(layer, "kernel", [px.skew, px.cayley])
    pnnx.register_parametrization(layer, "bias", Counter(), key=jax.random.key(0))
    layer.eval()  # Counter's state stays put on reads
    want = np.asarray(layer.kernel)
    other = pickle.loads(pickle.dumps(layer)) if how == "pickle" else copy.deepcopy(layer)
    assert type(other) is type(layer) and isinstance(other, nnx.Linear)
    np.testing.assert_array_equal(other.kernel, want)
    assert snapshot(other)[2].keys() == snapshot(layer)[2].keys()
    for k, v in snapshot(other)[2].items():
        np.testing.assert_array_equal(v, snapshot(layer)[2][k])
    # The copy is independent and still parametrized.
    q = _rotation(3, 5)
    other.kernel = q
    np.testing.assert_allclose(other.kernel, q, atol=F32_ATOL)
    np.testing.assert_array_equal(layer.kernel, want)
    pnnx.remove_parametrizations(other, "kernel")
    assert pnnx.is_parametrized(layer, "kernel") and not pnnx.is_parametrized(other, "kernel")


# ------------------------------------------------------------------------------------------------
# Train / eval at registration
# ------------------------------------------------------------------------------------------------
def test_registration_takes_an_explicit_mode():
    class Model(nnx.Module):
        def __init__(self):
            self.lin = linear()
            self.bn = nnx.BatchNorm(3, rngs=nnx.Rngs(0))

    model = Model()
    model.eval()
    # nnx.Linear records no mode; the flag says it.
    pnnx.register_parametrization(
        model.lin, "kernel", Counter(), key=jax.random.key(0), use_running_average=True
    )
    pl = model.lin.parametrizations.kernel
    assert pl.use_running_average is True
    _ = model.lin.kernel  # the read itself is under test
    assert int(pl[0].count[...]) == 0  # eval: no state update
    # A later registration on the same host follows its already parametrized sibling.
    pnnx.register_parametrization(model.lin, "bias", Counter(), key=jax.random.key(1))
    assert model.lin.parametrizations.bias.use_running_average is True
    # Appending with an explicit flag sets the chain's flag.
    pnnx.register_parametrization(model.lin, "kernel", px.symmetric, use_running_average=False)
    assert pl.use_running_average is False
    _ = model.lin.kernel  # the read itself is under test
    assert int(pl[0].count[...]) == 1
    with pytest.raises(px.ParametrizationTypeError, match="`use_running_average` must be a bool"):
        pnnx.register_parametrization(model.lin, "kernel", px.symmetric, use_running_average=1)
