"""Tests of the Flax NNX front (parametrax.nnx): torch's parametrize workflow on nnx Modules.

Oracles are closed forms (triu, outer products, 2 * x, W * mask), invariants (orthogonality,
symmetry), plain flax modules fed the expected kernel, and jaxpr primitive counts of the plain
map; never parametrax's own output.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax._src import core as jax_core

import parametrax as px
from parametrax import nnx as pnnx
from parametrax.nnx import ParametrizationState

from _helpers import (
    F32_ATOL,
    Counter,
    Double,
    RankOne,
    Scale,
    orthogonality_error,
    run_script,
    skew_error,
    standard_promotion,
    symmetry_error,
)

X3 = jnp.arange(6.0).reshape(2, 3) / 6.0


# ------------------------------------------------------------------------------------------------
# Test-local parametrizations
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NormalizeByStoredNorm(px.Parametrization):
    """Spectral-norm-like: x / n, where train reads first set n = ||x|| (stop_gradient), and
    eval reads use the stored n. Starts from n = 1."""

    def init_variables(self, key, value):
        return {"params": {}, "state": {"n": jnp.ones((), value.dtype)}}

    def apply(self, variables, x, *, update_state=False):
        n = variables["state"]["n"]
        if update_state:
            n = jax.lax.stop_gradient(jnp.linalg.norm(x))
        return x / n, {"n": n}


@dataclasses.dataclass(frozen=True)
class FirstRow(px.Parametrization):
    """Changes the shape: (n, m) -> (1, m)."""

    def forward(self, x):
        return x[:1]


@dataclasses.dataclass(frozen=True)
class ZerosInverseFirstRow(px.Parametrization):
    """torch's atomicity quirk (spec §2.B.4): right_inverse -> zeros, forward changes shape."""

    def forward(self, x):
        return x[:1]

    def right_inverse(self, value):
        return jnp.zeros_like(value)


@dataclasses.dataclass(frozen=True)
class WrongShapeInverse(px.Parametrization):
    def forward(self, x):
        return x

    def right_inverse(self, value):
        return value[:1]


@dataclasses.dataclass(frozen=True)
class CubeRoot(px.Parametrization):
    """A forward with a distinctive primitive (`cbrt`) to count in jaxprs."""

    def forward(self, x):
        return jax.lax.cbrt(x)


def linear(n_in=3, n_out=3, seed=0):
    return nnx.Linear(n_in, n_out, rngs=nnx.Rngs(seed))


def snapshot(module):
    """Everything an error must leave unchanged: class, graph structure and every value."""
    graphdef, state = nnx.split(module)
    flat = {
        path: np.asarray(v.get_value() if isinstance(v, nnx.Variable) else v)
        for path, v in nnx.to_flat_state(state)
    }
    return type(module), graphdef, flat, sorted(vars(module))


def assert_unchanged(module, snap):
    cls, graphdef, flat, keys = snapshot(module)
    assert cls is snap[0]
    assert graphdef == snap[1]
    assert sorted(vars(module)) == snap[3] == keys
    assert flat.keys() == snap[2].keys()
    for k in flat:
        np.testing.assert_array_equal(flat[k], snap[2][k])


def paths(module, *filters):
    return {p for p, _ in nnx.to_flat_state(nnx.state(module, *filters))}


def count_primitive(jaxpr, name: str) -> int:
    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name == name
        for sub in jax_core.jaxprs_in_params(eqn.params):
            n += count_primitive(sub, name)
    return n


# ------------------------------------------------------------------------------------------------
# Registration
# ------------------------------------------------------------------------------------------------
def test_register_moves_the_variable_and_swaps_the_class():
    layer = linear()
    w = layer.kernel[...]
    kernel_var = layer.kernel
    out = pnnx.register_parametrization(layer, "kernel", px.symmetric)
    assert out is layer
    assert type(layer).__name__ == "ParametrizedLinear"
    assert isinstance(layer, nnx.Linear) and type(layer) is not nnx.Linear
    assert pnnx.type_before_parametrizations(layer) is nnx.Linear
    assert pnnx.is_parametrized(layer) and pnnx.is_parametrized(layer, "kernel")
    assert not pnnx.is_parametrized(layer, "bias")
    assert paths(layer) == {("bias",), ("parametrizations", "kernel", "original")}
    # The same Variable object now stores right_inverse(W) = triu(W).
    assert layer.parametrizations.kernel.original is kernel_var
    np.testing.assert_array_equal(kernel_var[...], jnp.triu(w))
    # Symmetric's forward of triu(W): the symmetric matrix with W's upper triangle.
    expected = jnp.triu(w) + jnp.triu(w, 1).T
    assert symmetry_error(layer.kernel) == 0.0
    np.testing.assert_array_equal(layer.kernel, expected)
    # nnx.Linear reads the constrained kernel without change.
    x = jnp.ones((2, 3))
    np.testing.assert_allclose(layer(x), x @ expected + layer.bias[...], atol=F32_ATOL)


def test_two_models_share_one_generated_class_and_one_jit_trace():
    a, b = linear(seed=0), linear(seed=1)
    for m in (a, b):
        pnnx.register_parametrization(m, "kernel", px.skew)
    assert type(a) is type(b)
    traces = []

    @nnx.jit
    def f(m, x):
        traces.append(1)
        return m(x)

    f(a, X3)
    f(b, X3)
    assert len(traces) == 1


def test_conv_kernel_slices():
    conv = nnx.Conv(4, 4, kernel_size=(3, 3), rngs=nnx.Rngs(0))
    pnnx.register_parametrization(conv, "kernel", px.skew)
    k = conv.kernel
    assert k.shape == (3, 3, 4, 4)
    assert skew_error(k) == 0.0
    # Oracle: a plain nnx.Conv holding the expected kernel computes the same thing.
    plain = nnx.Conv(4, 4, kernel_size=(3, 3), rngs=nnx.Rngs(0))
    w = plain.kernel[...]
    a = jnp.triu(w, 1)
    plain.kernel[...] = a - jnp.swapaxes(a, -1, -2)
    x = jax.random.normal(jax.random.key(1), (1, 5, 5, 4))
    np.testing.assert_allclose(conv(x), plain(x), atol=F32_ATOL)


def test_user_module_reads_the_constrained_value():
    class Model(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.array([[1.0, 2.0], [3.0, 4.0]]))

        def __call__(self, x):
            return x @ self.w[...] + jnp.sum(self.w)  # both ways of reading

    m = Model()
    pnnx.register_parametrization(m, "w", px.symmetric)
    sym = jnp.array([[1.0, 2.0], [2.0, 4.0]])
    x = jnp.ones((1, 2))
    np.testing.assert_array_equal(m(x), x @ sym + jnp.sum(sym))


@pytest.mark.parametrize("var_type", [nnx.BatchStat, nnx.Variable])
def test_non_param_variables_keep_their_type_and_get_no_gradient(var_type):
    class Model(nnx.Module):
        def __init__(self):
            self.buf = var_type(jnp.eye(2) * 3.0)
            self.p = nnx.Param(jnp.ones(()))

        def __call__(self):
            return jnp.sum(self.buf * self.p)

    m = Model()
    pnnx.register_parametrization(m, "buf", Double())
    original = m.parametrizations.buf.original
    assert type(original) is var_type
    np.testing.assert_array_equal(original[...], jnp.eye(2) * 1.5)
    np.testing.assert_array_equal(m.buf, jnp.eye(2) * 3.0)
    grads = nnx.grad(lambda m: m())(m)
    assert {p for p, _ in nnx.to_flat_state(grads)} == {("p",)}
    pnnx.remove_parametrizations(m, "buf")
    assert type(vars(m)["buf"]) is var_type and type(m) is Model


def test_chain_given_as_list_runs_right_inverse_through_every_link():
    layer = linear()
    w = layer.kernel[...]
    pnnx.register_parametrization(layer, "kernel", [px.symmetric, Double()])
    # right_inverse in reverse order: triu(W / 2); forward: 2 * sym(triu(W / 2)).
    np.testing.assert_allclose(
        layer.parametrizations.kernel.original[...], jnp.triu(w / 2), atol=F32_ATOL
    )
    np.testing.assert_allclose(layer.kernel, jnp.triu(w) + jnp.triu(w, 1).T, atol=F32_ATOL)


def test_registration_keeps_the_function_for_true_right_inverses():
    layer = linear()
    q, _ = jnp.linalg.qr(layer.kernel[...])
    q = q * jnp.sign(jnp.linalg.det(q))  # det +1, Cayley's range
    layer.kernel[...] = q
    pnnx.register_parametrization(layer, "kernel", [px.skew, px.cayley])
    np.testing.assert_allclose(layer.kernel, q, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Appending (torch §2.A)
# ------------------------------------------------------------------------------------------------
def test_append_does_not_reinitialise():
    layer = linear()
    pnnx.register_parametrization(layer, "kernel", px.symmetric)
    raw = layer.parametrizations.kernel.original[...]
    before = layer.kernel
    pnnx.register_parametrization(layer, "kernel", Double())
    assert len(layer.parametrizations.kernel) == 2
    assert layer.parametrizations.kernel.chain == (px.symmetric, Double())
    np.testing.assert_array_equal(layer.parametrizations.kernel.original[...], raw)
    np.testing.assert_array_equal(layer.kernel, 2.0 * before)


def test_append_with_variables_and_paths():
    layer = linear()
    pnnx.register_parametrization(layer, "kernel", px.symmetric)
    before = layer.kernel
    pnnx.register_parametrization(layer, "kernel", Scale(1.5), key=jax.random.key(0))
    assert paths(layer) == {
        ("bias",),
        ("parametrizations", "kernel", "original"),
        ("parametrizations", "kernel", "1", "s"),
    }
    assert isinstance(layer.parametrizations.kernel[1].s, nnx.Param)
    np.testing.assert_allclose(layer.kernel, 1.5 * before, atol=F32_ATOL)


def test_append_checks_and_atomicity():
    layer = linear()
    pnnx.register_parametrization(layer, "kernel", px.symmetric)
    snap = snapshot(layer)
    with pytest.raises(
        px.ShapeError,
        match=r"\[FirstRow\] on `Linear.kernel`.*the current value has shape \(3, 3\) and "
        r"dtype float32, `FirstRow` returned shape \(1, 3\)",
    ):
        pnnx.register_parametrization(layer, "kernel", FirstRow())
    assert_unchanged(layer, snap)
    with pytest.raises(
        px.RightInverseError,
        match=r"`WrongShapeInverse` may not change the shape.*right_inverse returned shape \(1, 3\)",
    ):
        pnnx.register_parametrization(layer, "kernel", WrongShapeInverse())
    assert_unchanged(layer, snap)
    with pytest.raises(px.ParametrizationTypeError, match="positional argument.*several raw"):
        pnnx.register_parametrization(layer, "kernel", RankOne())
    assert_unchanged(layer, snap)
    # unsafe skips the checks (torch: nothing is called).
    pnnx.register_parametrization(layer, "kernel", FirstRow(), unsafe=True)
    assert layer.kernel.shape == (1, 3) and layer.parametrizations.kernel.unsafe


def test_multi_input_first_parametrization_rank_one():
    layer = linear(seed=3)
    w = layer.kernel[...]
    pnnx.register_parametrization(layer, "kernel", RankOne())
    pl = layer.parametrizations.kernel
    assert not pl.is_tensor and pl.original_names == ("original0", "original1")
    assert paths(layer, nnx.Param) == {
        ("bias",),
        ("parametrizations", "kernel", "original0"),
        ("parametrizations", "kernel", "original1"),
    }
    assert isinstance(pl.original0, nnx.Param) and pl.original0.shape == (3,)
    # Oracle: the best rank-one approximation of W (Eckart-Young).
    u, s, vh = np.linalg.svd(np.asarray(w))
    np.testing.assert_allclose(layer.kernel, s[0] * np.outer(u[:, 0], vh[0]), atol=1e-5)
    # Appending keeps the originals: RankOne then Double gives 2 * old (torch's test).
    old = layer.kernel
    pnnx.register_parametrization(layer, "kernel", Double())
    np.testing.assert_allclose(layer.kernel, 2.0 * old, atol=F32_ATOL)
    # Assigning a rank-one matrix reproduces it.
    a, b = jnp.array([1.0, -2.0, 0.5]), jnp.array([0.3, 1.0, 2.0])
    layer.kernel = jnp.outer(a, b)
    np.testing.assert_allclose(layer.kernel, jnp.outer(a, b), atol=1e-5)
    with pytest.raises(px.ParametrizationError, match=r"leave_parametrized=False.*2 raw arrays"):
        pnnx.remove_parametrizations(layer, "kernel", leave_parametrized=False)
    pnnx.remove_parametrizations(layer, "kernel")
    assert type(layer) is nnx.Linear and isinstance(layer.kernel, nnx.Param)
    np.testing.assert_allclose(layer.kernel[...], jnp.outer(a, b), atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Assignment
# ------------------------------------------------------------------------------------------------
def test_assignment_runs_the_right_inverse_chain():
    layer = linear()
    pnnx.register_parametrization(layer, "kernel", [px.skew, px.cayley])
    q = px.matrix_exp(px.skew(jax.random.normal(jax.random.key(7), (3, 3))))
    layer.kernel = q
    np.testing.assert_allclose(layer.kernel, q, atol=1e-5)
    # The raw value is the strict upper triangle of the inverse Cayley transform.
    eye = jnp.eye(3)
    expected_raw = jnp.triu(jnp.linalg.solve(q + eye, q - eye), 1)
    np.testing.assert_allclose(layer.parametrizations.kernel.original[...], expected_raw, atol=1e-5)
    # An nnx.Variable is assigned by value too.
    layer.kernel = nnx.Param(jnp.eye(3))
    np.testing.assert_allclose(layer.kernel, jnp.eye(3), atol=1e-6)


def test_assignment_keeps_link_params_and_updates_state():
    layer = linear()
    pnnx.register_parametrization(layer, "kernel", [Counter(), Scale(1.5)], rngs=nnx.Rngs(0))
    layer.kernel = jnp.full((3, 3), 3.0)
    np.testing.assert_allclose(layer.parametrizations.kernel.original[...], 2.0, atol=F32_ATOL)
    np.testing.assert_allclose(layer.kernel, 3.0, atol=F32_ATOL)


def test_assignment_errors_leave_the_module_unchanged():
    layer = linear()
    pnnx.register_parametrization(layer, "kernel", [px.skew, px.matrix_exp])
    snap = snapshot(layer)
    with pytest.raises(
        px.RightInverseError,
        match=r"assigning to `Linear.kernel`: cannot assign through the chain \[Skew, "
        r"MatrixExp\]: `MatrixExp` does not implement right_inverse",
    ):
        layer.kernel = jnp.eye(3)
    assert_unchanged(layer, snap)
    with pytest.raises(
        px.ParametrizationTypeError,
        match="assigning to `Linear.kernel`: expected an array; got str",
    ):
        layer.kernel = "eye"
    assert_unchanged(layer, snap)

    other = linear()
    pnnx.register_parametrization(other, "kernel", px.symmetric)
    snap = snapshot(other)
    with pytest.raises(
        px.RightInverseError,
        match=r"assigning to `Linear.kernel`: right_inverse returned shape \(4, 4\) and dtype "
        r"float32 for `original`, which has shape \(3, 3\)",
    ):
        other.kernel = jnp.eye(4)
    assert_unchanged(other, snap)


def test_assign_function_and_not_parametrized_error():
    layer = linear()
    with pytest.raises(
        px.NotParametrizedError, match=r"assign: `Linear.kernel` is not parametrized"
    ):
        pnnx.assign(layer, "kernel", jnp.eye(3))
    pnnx.register_parametrization(layer, "kernel", px.symmetric)
    assert pnnx.assign(layer, "kernel", 2 * jnp.eye(3), key=jax.random.key(0)) is layer
    np.testing.assert_array_equal(layer.kernel, 2 * jnp.eye(3))


# ------------------------------------------------------------------------------------------------
# Errors on registration and removal: clear message, module exactly as before
# ------------------------------------------------------------------------------------------------
class WithExtras(nnx.Module):
    def __init__(self):
        self.lin = linear()
        self.arr = nnx.data(jnp.ones((2, 2)))
        self.scale = 3
        self.none_var = nnx.Variable(None)


@pytest.mark.parametrize(
    "name, parametrization, kwargs, error, pattern",
    [
        (
            "kernal",
            px.symmetric,
            {},
            px.SpecError,
            r"`Linear` has no variable `kernal`; its variables are `bias`, `kernel`",
        ),
        (
            "in_features",
            px.symmetric,
            {},
            px.ParametrizationTypeError,
            r"`Linear.in_features`.*the attribute is a int; expected an nnx.Variable",
        ),
        (
            "kernel",
            FirstRow(),
            {},
            px.ShapeError,
            r"\[FirstRow\] on `Linear.kernel`.*may not change the shape or dtype.*"
            r"shape \(3, 3\).*shape \(1, 3\)",
        ),
        ("kernel", ZerosInverseFirstRow(), {}, px.ShapeError, r"may not change the shape"),
        (
            "kernel",
            px.RandomPruning(0.5),
            {},
            px.ParametrizationError,
            r"`RandomPruning` owns variables .* pass `rngs=nnx.Rngs\(...\)` or `key=",
        ),
        ("kernel", px.Symmetric, {}, px.ParametrizationTypeError, r"write `Symmetric\(\)`"),
        (
            "kernel",
            px.symmetric,
            {"unsafe": 1},
            px.ParametrizationTypeError,
            "`unsafe` must be a bool",
        ),
    ],
)
def test_registration_errors_leave_the_module_exactly_as_it_was(
    name, parametrization, kwargs, error, pattern
):
    layer = linear()
    snap = snapshot(layer)
    with pytest.raises(error, match=pattern):
        pnnx.register_parametrization(layer, name, parametrization, **kwargs)
    assert_unchanged(layer, snap)
    assert not pnnx.is_parametrized(layer)


def test_registration_errors_on_other_attributes():
    m = WithExtras()
    snap = snapshot(m)
    with pytest.raises(
        px.ParametrizationTypeError, match=r"`WithExtras.arr`.*ArrayImpl.*Wrap it in a Variable"
    ):
        pnnx.register_parametrization(m, "arr", px.symmetric)
    with pytest.raises(
        px.ParametrizationTypeError, match=r"`WithExtras.lin`.*the attribute is a Linear"
    ):
        pnnx.register_parametrization(m, "lin", px.symmetric)
    with pytest.raises(
        px.ParametrizationTypeError, match=r"the Variable holds a NoneType; expected an array"
    ):
        pnnx.register_parametrization(m, "none_var", px.symmetric)
    with pytest.raises(
        px.ParametrizationTypeError, match="expected a flax.nnx Module instance; got dict"
    ):
        pnnx.register_parametrization({}, "kernel", px.symmetric)
    assert_unchanged(m, snap)


def test_atomicity_beats_torch_quirk():
    # torch overwrites the weight with right_inverse's zeros before the shape check fails.
    layer = linear()
    w = layer.kernel[...]
    with pytest.raises(px.ShapeError):
        pnnx.register_parametrization(layer, "kernel", ZerosInverseFirstRow())
    np.testing.assert_array_equal(layer.kernel[...], w)


def test_a_failed_second_registration_keeps_the_first():
    layer = linear()
    pnnx.register_parametrization(layer, "kernel", px.symmetric)
    snap = snapshot(layer)
    with pytest.raises(px.ShapeError):
        pnnx.register_parametrization(layer, "bias", FirstRow())
    assert_unchanged(layer, snap)


def test_remove_errors():
    layer = linear()
    snap = snapshot(layer)
    with pytest.raises(
        px.NotParametrizedError,
        match=r"remove_parametrizations: `Linear.kernel` is not parametrized "
        r"\(parametrized: none\)",
    ):
        pnnx.remove_parametrizations(layer, "kernel")
    assert_unchanged(layer, snap)
    pnnx.register_parametrization(layer, "kernel", px.symmetric)
    snap = snapshot(layer)
    with pytest.raises(
        px.NotParametrizedError,
        match=r"`Linear.bias` is not parametrized \(parametrized: `kernel`\)",
    ):
        pnnx.remove_parametrizations(layer, "bias")
    assert_unchanged(layer, snap)


# ------------------------------------------------------------------------------------------------
# Removal
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("leave", [True, False])
def test_remove_restores_class_variable_and_layout(leave):
    layer = linear()
    w = layer.kernel[...]
    var = layer.kernel
    plain_paths = paths(layer)
    pnnx.register_parametrization(layer, "kernel", px.skew)
    pnnx.remove_parametrizations(layer, "kernel", leave_parametrized=leave)
    assert type(layer) is nnx.Linear
    assert not pnnx.is_parametrized(layer) and "parametrizations" not in vars(layer)
    assert paths(layer) == plain_paths
    assert layer.kernel is var  # the very same Variable object
    a = jnp.triu(w, 1)
    np.testing.assert_array_equal(layer.kernel[...], a - a.T if leave else a)
    layer.kernel[...] = jnp.eye(3)  # a plain Variable again
    np.testing.assert_array_equal(layer(jnp.eye(3)), jnp.eye(3))


def test_partial_removal_keeps_the_other_parametrization():
    layer = linear()
    pnnx.register_parametrization(layer, "kernel", px.symmetric)
    pnnx.register_parametrization(layer, "bias", Double())
    assert type(layer).__name__ == "ParametrizedLinear"
    assert set(pnnx.is_parametrized(layer, n) for n in ("kernel", "bias")) == {True}
    b = layer.bias
    pnnx.remove_parametrizations(layer, "kernel")
    assert pnnx.is_parametrized(layer, "bias") and not pnnx.is_parametrized(layer, "kernel")
    assert isinstance(layer.kernel, nnx.Param)
    np.testing.assert_array_equal(layer.bias, b)
    pnnx.remove_parametrizations(layer, "bias")
    assert type(layer) is nnx.Linear


def test_unsafe_shape_change_is_baked_on_removal():
    layer = linear()
    w = layer.kernel[...]
    pnnx.register_parametrization(layer, "kernel", FirstRow(), unsafe=True)
    assert layer.kernel.shape == (1, 3)
    pnnx.remove_parametrizations(layer, "kernel")
    np.testing.assert_array_equal(layer.kernel[...], w[:1])


def test_nested_parametrization_on_original():
    layer = linear()
    w = layer.kernel[...]
    pnnx.register_parametrization(layer, "kernel", Double())
    pnnx.register_parametrization(layer.parametrizations.kernel, "original", px.symmetric)
    inner = layer.parametrizations.kernel.parametrizations.original
    assert paths(layer) == {
        ("bias",),
        ("parametrizations", "kernel", "parametrizations", "original", "original"),
    }
    # raw = triu(W / 2); value = 2 * sym(raw)
    np.testing.assert_allclose(inner.original[...], jnp.triu(w / 2), atol=F32_ATOL)
    np.testing.assert_allclose(layer.kernel, jnp.triu(w) + jnp.triu(w, 1).T, atol=F32_ATOL)
    layer.kernel = 4.0 * jnp.eye(3)  # outer right_inverse, then the nested one
    np.testing.assert_allclose(inner.original[...], 2.0 * jnp.eye(3), atol=F32_ATOL)
    pnnx.remove_parametrizations(layer.parametrizations.kernel, "original")
    assert type(layer.parametrizations.kernel) is pnnx.ParametrizationList
    np.testing.assert_allclose(layer.kernel, 4.0 * jnp.eye(3), atol=F32_ATOL)


# ------------------------------------------------------------------------------------------------
# cached()
# ------------------------------------------------------------------------------------------------
_CALLS: list = []


@dataclasses.dataclass(frozen=True)
class Noisy(px.Parametrization):
    """The tutorial's NoisyParametrization (identity), recording each evaluation."""

    def forward(self, x):
        _CALLS.append(1)
        return x

    def right_inverse(self, value):
        return value


def _noisy_layer():
    layer = linear()
    pnnx.register_parametrization(layer, "kernel", [px.symmetric, Noisy()])
    _CALLS.clear()
    return layer, _CALLS


def test_eager_reads_recompute_and_cached_computes_once():
    layer, calls = _noisy_layer()
    a, b = layer.kernel, layer.kernel
    assert len(calls) == 2 and a is not b
    calls.clear()
    with pnnx.cached():
        a, b = layer.kernel, layer.kernel
        with pnnx.cached():  # nested contexts reuse the outer cache
            c = layer.kernel
    assert len(calls) == 1 and a is b is c
    calls.clear()
    with pnnx.cached():
        _ = layer.kernel  # the read itself is under test
    assert len(calls) == 1  # cleared when the outermost context exited


def test_cached_never_returns_stale_values():
    layer, calls = _noisy_layer()
    with pnnx.cached():
        before = layer.kernel
        layer.kernel = 2.0 * jnp.eye(3)  # torch would keep returning `before`
        np.testing.assert_array_equal(layer.kernel, 2.0 * jnp.eye(3))
        pnnx.register_parametrization(layer, "kernel", Double())  # appending
        np.testing.assert_array_equal(layer.kernel, 4.0 * jnp.eye(3))
        layer.parametrizations.kernel.original[...] = jnp.zeros((3, 3))  # an optimizer update
        np.testing.assert_array_equal(layer.kernel, jnp.zeros((3, 3)))
    assert not np.array_equal(before, jnp.zeros((3, 3)))


def test_cached_with_stateful_parametrization_updates_state_once():
    layer = linear()
    pnnx.register_parametrization(layer, "kernel", Counter(), rngs=nnx.Rngs(0))
    count = layer.parametrizations.kernel[0].count
    for _ in range(3):
        _ = layer.kernel  # the read itself is under test
    assert int(count[...]) == 3  # torch: every access runs the update
    with pnnx.cached():
        for _ in range(3):
            _ = layer.kernel  # the read itself is under test
    assert int(count[...]) == 4


# ------------------------------------------------------------------------------------------------
# Train / eval and state
# ------------------------------------------------------------------------------------------------
def test_train_eval_flag_controls_state_updates():
    layer = linear()
    pnnx.register_parametrization(layer, "kernel", NormalizeByStoredNorm(), key=jax.random.key(0))
    pl = layer.parametrizations.kernel
    assert pl.use_running_average is False  # torch's default: training
    raw = pl.original[...]
    k_train = layer.kernel  # train read: n <- ||raw||
    np.testing.assert_allclose(k_train, raw / np.linalg.norm(raw), atol=F32_ATOL)
    np.testing.assert_allclose(pl[0].n[...], np.linalg.norm(raw), rtol=1e-6)
    layer.eval()
    assert pl.use_running_average is True
    state_before = nnx.state(layer, ParametrizationState)
    pl.original[...] = 2.0 * raw  # eval reuses the stored n
    np.testing.assert_allclose(layer.kernel, 2.0 * raw / np.linalg.norm(raw), atol=F32_ATOL)
    assert jax.tree.all(
        jax.tree.map(
            lambda a, b: bool(a == b), state_before, nnx.state(layer, ParametrizationState)
        )
    )
    pl.original[...] = raw
    np.testing.assert_allclose(layer.kernel, k_train, atol=F32_ATOL)  # eval == last train step
    layer.train()
    assert pl.use_running_average is False
    if hasattr(nnx, "view"):  # flax >= 0.12.2; the floor (0.12.1) has only train()/eval()
        view = nnx.view(layer, use_running_average=True)
        assert (
            view.parametrizations.kernel.use_running_average is True
            and pl.use_running_average is False
        )


def test_registration_takes_the_host_mode():
    class Block(nnx.Module):
        def __init__(self):
            self.lin = linear()
            self.drop = nnx.Dropout(0.5, rngs=nnx.Rngs(0))

    block = Block()
    block.eval()
    pnnx.register_parametrization(block.lin, "kernel", Counter(), key=jax.random.key(0))
    # An nnx.Linear has no mode flag of its own (NNX keeps modes on Dropout / BatchNorm) and a
    # child cannot see its parent, so this chain starts in train mode (torch's default) ...
    assert block.lin.parametrizations.kernel.use_running_average is False
    block.eval()  # ... until the next model.eval()
    assert block.lin.parametrizations.kernel.use_running_average is True
    # Registering on the Block itself takes its Dropout's flag.
    block2 = Block()
    block2.eval()
    block2.w = nnx.Param(jnp.ones((2, 2)))
    pnnx.register_parametrization(block2, "w", Counter(), key=jax.random.key(0))
    assert block2.parametrizations.w.use_running_average is True
    _ = block2.w  # the read itself is under test
    assert int(block2.parametrizations.w[0].count[...]) == 0
    block2.train()
    _ = block2.w  # the read itself is under test
    assert int(block2.parametrizations.w[0].count[...]) == 1


def test_state_updates_propagate_out_of_nnx_grad():
    layer = linear()
    pnnx.register_parametrization(
        layer, "kernel", [Counter(), NormalizeByStoredNorm()], rngs=nnx.Rngs(0)
    )
    raw = layer.parametrizations.kernel.original[...]
    grads = nnx.grad(lambda m: jnp.sum(m(X3) ** 2))(layer)
    assert int(layer.parametrizations.kernel[0].count[...]) == 1
    np.testing.assert_allclose(
        layer.parametrizations.kernel[1].n[...], np.linalg.norm(raw), rtol=1e-6
    )
    assert {p for p, _ in nnx.to_flat_state(grads)} == {
        ("bias",),
        ("parametrizations", "kernel", "original"),
    }


def test_changing_a_module_from_inside_a_foreign_trace_is_refused_cleanly():
    layer = linear()
    snap = snapshot(layer)

    @jax.jit
    def f(x):
        pnnx.register_parametrization(layer, "kernel", px.symmetric)
        return x

    with pytest.raises(
        px.ParametrizationError, match="created outside the current JAX transformation"
    ):
        f(1.0)
    assert_unchanged(layer, snap)


def test_random_pruning_state_and_training():
    layer = linear(4, 4)
    pnnx.register_parametrization(layer, "kernel", px.RandomPruning(0.5), rngs=nnx.Rngs(1))
    mask_var = layer.parametrizations.kernel[0].mask
    assert type(mask_var) is ParametrizationState
    mask = mask_var[...]
    assert 0 < float(mask.sum()) < mask.size
    np.testing.assert_array_equal(layer.kernel, layer.parametrizations.kernel.original[...] * mask)
    optimizer = nnx.Optimizer(layer, optax.sgd(0.1), wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(2), (8, 4))

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(x) ** 2))(model)
        optimizer.update(model, grads)
        return loss, grads

    loss0, grads = step(layer, optimizer)
    grad_raw = grads["parametrizations"]["kernel"]["original"][...]
    np.testing.assert_array_equal(grad_raw * (1 - mask), 0.0)  # pruned entries get no gradient
    assert ("parametrizations", "kernel", "0", "mask") not in {
        p for p, _ in nnx.to_flat_state(grads)
    }
    for _ in range(3):
        loss, _ = step(layer, optimizer)
    assert float(loss) < float(loss0)
    np.testing.assert_array_equal(mask_var[...], mask)
    np.testing.assert_array_equal(layer.kernel * (1 - mask), 0.0)


def test_stateful_updates_under_jit_follow_the_mode():
    class TwoReads(nnx.Module):
        def __init__(self):
            self.lin = linear()

        def __call__(self, x):
            return self.lin(self.lin(x))

    model = TwoReads()
    pnnx.register_parametrization(model.lin, "kernel", Counter(), rngs=nnx.Rngs(0))
    count = model.lin.parametrizations.kernel[0].count
    f = nnx.jit(lambda m, x: m(x))

    @nnx.jit
    def f_cached(m, x):
        with pnnx.cached():
            return m(x)

    f(model, X3)
    assert int(count[...]) == 2  # one update per read, as eager code (and torch) does
    f_cached(model, X3)
    assert int(count[...]) == 3  # once per step inside cached()
    model.eval()
    f(model, X3)
    assert int(count[...]) == 3


# ------------------------------------------------------------------------------------------------
# Evaluating the map once per step under nnx.jit
# ------------------------------------------------------------------------------------------------
class ThreeReads(nnx.Module):
    def __init__(self, n=4):
        self.lin = nnx.Linear(n, n, rngs=nnx.Rngs(0))

    def __call__(self, x):
        return self.lin(self.lin(self.lin(x)))


def test_jaxpr_has_the_map_once_although_the_kernel_is_read_three_times():
    from parametrax import _numerics as px_numerics

    model = ThreeReads()
    pnnx.register_parametrization(model.lin, "kernel", [px.skew, px.matrix_exp])
    graphdef, state = nnx.split(model)
    step = nnx.jit(lambda m, x: m(x))
    jaxpr = jax.make_jaxpr(lambda s, x: step(nnx.merge(graphdef, s), x))(state, jnp.ones((1, 4)))
    # Oracle: the primitives of one expm (the one MatrixExp uses).
    one_expm = jax.make_jaxpr(px_numerics.expm)(jnp.ones((4, 4))).jaxpr
    for prim in ("while", "custom_jvp_call", "exp2"):
        assert count_primitive(one_expm, prim) > 0
        assert count_primitive(jaxpr.jaxpr, prim) == count_primitive(one_expm, prim), prim
    assert count_primitive(jaxpr.jaxpr, "dot_general") >= 3  # the kernel is used three times


def test_jaxpr_of_a_training_step_has_one_forward_map():
    model = ThreeReads()
    pnnx.register_parametrization(model.lin, "kernel", [px.symmetric, CubeRoot()])
    graphdef, state = nnx.split(model)

    def loss(m, x):
        return jnp.sum(m(x) ** 2)

    def value_only(s, x):
        return loss(nnx.merge(graphdef, s), x)

    def with_grad(s, x):
        return nnx.value_and_grad(loss)(nnx.merge(graphdef, s), x)

    x = jnp.ones((2, 4))
    assert count_primitive(jax.make_jaxpr(value_only)(state, x).jaxpr, "cbrt") == 1
    plain = jax.make_jaxpr(jax.value_and_grad(lambda a: jnp.sum(jax.lax.cbrt(a))))(jnp.ones(3))
    assert count_primitive(jax.make_jaxpr(with_grad)(state, x).jaxpr, "cbrt") == count_primitive(
        plain.jaxpr, "cbrt"
    )


def test_one_evaluation_per_jitted_training_step():
    calls = []

    def noisy(x):
        jax.debug.callback(lambda: calls.append(1))
        return x

    model = ThreeReads()
    pnnx.register_parametrization(model.lin, "kernel", [px.skew, noisy])
    optimizer = nnx.Optimizer(model, optax.sgd(0.01), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x):
        loss, grads = nnx.value_and_grad(lambda m: jnp.sum(m(x) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    jax.effects_barrier()
    calls.clear()
    for _ in range(3):
        step(model, optimizer, jnp.ones((2, 4)))
    jax.effects_barrier()
    assert len(calls) == 3


def test_memo_never_leaks_tracers():
    layer = linear()
    pnnx.register_parametrization(layer, "kernel", [px.skew, px.cayley])
    eager = layer(X3)
    closed = jax.jit(lambda x: layer(x))  # an eager module read inside a closure trace
    np.testing.assert_allclose(closed(X3), eager, atol=F32_ATOL)
    np.testing.assert_allclose(layer(X3), eager, atol=F32_ATOL)  # eager read after the trace

    @nnx.jit
    def inner_scan(m, x):
        def body(c, _):
            return c + jnp.sum(m.kernel), None  # read inside an inner trace first

        c, _ = jax.lax.scan(body, 0.0, None, length=2)
        return c + jnp.sum(m.kernel) + m(x).sum()  # then in the outer trace

    expected = 3 * jnp.sum(layer.kernel) + layer(X3).sum()
    np.testing.assert_allclose(inner_scan(layer, X3), expected, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# The NNX stack: grad, optimizer, split/merge, vmap, checkpoints
# ------------------------------------------------------------------------------------------------
def test_optimizer_trains_exactly_raw_values_and_link_params():
    layer = linear()
    pnnx.register_parametrization(layer, "kernel", [px.skew, px.cayley])
    pnnx.register_parametrization(layer, "kernel", Scale(1.5), rngs=nnx.Rngs(0))
    pnnx.register_parametrization(layer, "bias", Counter(), rngs=nnx.Rngs(0))
    layer.eval()
    optimizer = nnx.Optimizer(layer, standard_promotion(optax.adam(0.05)), wrt=nnx.Param)
    expected = {
        ("parametrizations", "kernel", "original"),
        ("parametrizations", "kernel", "2", "s"),
        ("parametrizations", "bias", "original"),
    }
    assert paths(layer, nnx.Param) == expected
    assert paths(layer, ParametrizationState) == {("parametrizations", "bias", "0", "count")}
    # adam's first moments cover exactly the Params.
    mu = {
        p[p.index("mu") + 1 :]
        for p, _ in nnx.to_flat_state(nnx.state(optimizer.opt_state))
        if "mu" in p
    }
    assert mu == expected
    x = jax.random.normal(jax.random.key(0), (16, 3))
    # A reachable target: the initial rotation turned a little further, scaled by 2 (s: 1.5 -> 2).
    rotation = px.cayley(px.skew(0.2 * jax.random.normal(jax.random.key(1), (3, 3))))
    target = x @ (2.0 * (layer.kernel / 1.5) @ rotation)

    @nnx.jit
    def step(model, optimizer):
        def loss_fn(m):
            return jnp.mean((m(x) - target) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = []
    for _ in range(25):
        losses.append(float(step(layer, optimizer)))
        q = layer.kernel / layer.parametrizations.kernel[2].s[...]
        assert orthogonality_error(q) < 1e-4  # the constraint holds at every step
    assert losses[-1] < 0.1 * losses[0]
    assert abs(float(layer.parametrizations.kernel[2].s[...]) - 2.0) < 0.2


def test_split_merge_state_round_trip_and_jit_equals_eager():
    layer = linear()
    pnnx.register_parametrization(
        layer, "kernel", [px.symmetric, px.RandomPruning(0.3)], rngs=nnx.Rngs(2)
    )
    graphdef, state = nnx.split(layer)
    clone = nnx.merge(graphdef, state)
    assert type(clone) is type(layer)
    np.testing.assert_array_equal(clone.kernel, layer.kernel)
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(layer, X3), layer(X3), atol=F32_ATOL)
    # nnx.state / nnx.update round trip into a freshly built model
    fresh = linear(seed=9)
    pnnx.register_parametrization(
        fresh, "kernel", [px.symmetric, px.RandomPruning(0.3)], rngs=nnx.Rngs(5)
    )
    assert not np.array_equal(fresh(X3), layer(X3))
    nnx.update(fresh, jax.tree.map(jnp.copy, nnx.state(layer)))
    np.testing.assert_array_equal(fresh(X3), layer(X3))
    # deepcopy / nnx.clone copy the parametrizations too
    c = nnx.clone(layer)
    c.parametrizations.kernel.original[...] = jnp.zeros((3, 3))
    assert not np.array_equal(layer.kernel, c.kernel)


def test_orbax_checkpoint_restores_identical_outputs(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    model = linear()
    pnnx.register_parametrization(model, "kernel", [px.skew, px.cayley])
    pnnx.register_parametrization(model, "kernel", px.RandomPruning(0.5), rngs=nnx.Rngs(3))
    state = nnx.state(model)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "ckpt", state)
    checkpointer.wait_until_finished()

    restored_model = nnx.eval_shape(lambda: _build_for_restore())
    graphdef, abstract_state = nnx.split(restored_model)
    restored = checkpointer.restore(tmp_path / "ckpt", abstract_state)
    model2 = nnx.merge(graphdef, restored)
    np.testing.assert_array_equal(model2(X3), model(X3))
    np.testing.assert_array_equal(
        model2.parametrizations.kernel[2].mask[...], model.parametrizations.kernel[2].mask[...]
    )


def _build_for_restore():
    m = linear(seed=11)
    pnnx.register_parametrization(m, "kernel", [px.skew, px.cayley])
    pnnx.register_parametrization(m, "kernel", px.RandomPruning(0.5), rngs=nnx.Rngs(4))
    return m


def test_vmap_ensemble():
    @nnx.vmap(in_axes=0, out_axes=0)
    def create(key):
        m = nnx.Linear(3, 3, rngs=nnx.Rngs(key))
        pnnx.register_parametrization(m, "kernel", [px.skew, px.cayley])
        return m

    ensemble = create(jax.random.split(jax.random.key(0), 4))
    assert ensemble.parametrizations.kernel.original.shape == (4, 3, 3)
    kernels = ensemble.kernel  # matrix maps broadcast over the ensemble axis
    assert orthogonality_error(kernels) < 1e-5
    assert not np.allclose(kernels[0], kernels[1])
    y = nnx.vmap(lambda m, x: m(x), in_axes=(0, None))(ensemble, X3)
    expected = jnp.einsum("bi,eio->ebo", X3, kernels) + ensemble.bias[...][:, None, :]
    np.testing.assert_allclose(y, expected, atol=F32_ATOL)


# ------------------------------------------------------------------------------------------------
# Transfer
# ------------------------------------------------------------------------------------------------
def test_transfer_copies_instead_of_sharing():
    src = linear(seed=0)
    pnnx.register_parametrization(
        src, "kernel", [px.symmetric, px.RandomPruning(0.5)], rngs=nnx.Rngs(1)
    )
    dst = linear(seed=5)
    assert pnnx.transfer_parametrizations_and_params(src, dst) is dst
    assert type(dst) is type(src) and pnnx.is_parametrized(dst, "kernel")
    np.testing.assert_array_equal(dst.kernel, src.kernel)
    np.testing.assert_array_equal(
        dst.parametrizations.kernel.original[...], src.parametrizations.kernel.original[...]
    )
    assert dst.parametrizations.kernel.original is not src.parametrizations.kernel.original
    before = src.kernel
    dst.parametrizations.kernel.original[...] = jnp.zeros((3, 3))  # training one ...
    dst.parametrizations.kernel[1].mask[...] = jnp.ones((3, 3))
    np.testing.assert_array_equal(src.kernel, before)  # ... leaves the other alone
    pnnx.remove_parametrizations(dst, "kernel")
    assert pnnx.is_parametrized(src, "kernel")

    # into a module without the attribute, by name
    class Empty(nnx.Module):
        pass

    e = pnnx.transfer_parametrizations_and_params(src, Empty(), "kernel")
    np.testing.assert_array_equal(e.kernel, src.kernel)
    assert pnnx.type_before_parametrizations(e) is Empty
    # from an unparametrized module: nothing happens
    plain = linear()
    assert pnnx.transfer_parametrizations_and_params(linear(), plain) is plain
    assert type(plain) is nnx.Linear


def test_transfer_errors_leave_the_target_unchanged():
    src = linear()
    pnnx.register_parametrization(src, "kernel", px.symmetric)
    wrong = linear(4, 3)
    snap = snapshot(wrong)
    with pytest.raises(
        px.ShapeError,
        match=r"`Linear.kernel` has shape \(4, 3\) and dtype float32 but `Linear.kernel` has "
        r"shape \(3, 3\)",
    ):
        pnnx.transfer_parametrizations_and_params(src, wrong)
    assert_unchanged(wrong, snap)
    with pytest.raises(px.NotParametrizedError, match=r"`Linear.bias` is not parametrized"):
        pnnx.transfer_parametrizations_and_params(src, wrong, "bias")
    assert_unchanged(wrong, snap)
    dst = linear()
    pnnx.register_parametrization(dst, "kernel", px.skew)
    snap = snapshot(dst)
    with pytest.raises(px.ParametrizationError, match="already parametrized; remove it first"):
        pnnx.transfer_parametrizations_and_params(src, dst)
    assert_unchanged(dst, snap)


# ------------------------------------------------------------------------------------------------
# The tutorial
# ------------------------------------------------------------------------------------------------
def test_tutorial_nnx_runs():
    out = run_script("examples/tutorial_nnx.py")
    assert "All tutorial claims hold." in out
    assert out.count("[ok]") >= 25
