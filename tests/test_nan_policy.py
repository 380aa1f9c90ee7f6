"""parametrax's one NaN / Inf policy (``parametrax._finite``) at every entry point, and the clear
errors issue 16 asks for in the core and the fronts.

* The value registered or assigned, on every front, is refused when it holds NaN / Inf.
* A finite value whose right inverse produces NaN / Inf (raw values, an intermediate link's
  output, link state, ``init_variables``' variables) is refused, naming the path, the chain, the
  link and what was found; so is a registered value the chain maps off the finite numbers.
* Traced values are not checked (documented).
* ``NotImplementedError`` from a right inverse counts as "no right inverse" only when the link
  says so; a right_inverse returning the wrong number of arrays and ``update_base`` without its
  state are clear errors.
* SpectralNorm's right inverse resets ``u``, ``v`` (assigning ``W`` reads back ``W / sigma(W)``
  with NumPy's sigma) and refuses an all-zero value.
* linen: a base module's write through a state-moving inverse keeps the state (or says why not).
* ``bake`` refuses to bake a non-finite value.

Oracles: NumPy (``np.isnan``, ``np.linalg.norm(.., 2)``, ``np.linalg.svd``), closed forms.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import parametrax as px
from parametrax import tree as ptree

from _helpers import Exp

KEY = jax.random.key(0)


@dataclasses.dataclass(frozen=True)
class NanInit(px.Parametrization):
    """Identity whose init_variables makes a NaN state entry."""

    def init_variables(self, key, value):
        return {"params": {}, "state": {"s": jnp.full((), jnp.nan, value.dtype)}}

    def apply(self, variables, x, *, update_state=False):
        return x, variables["state"]

    def apply_inverse(self, variables, value, *, key):
        return value, variables["state"]


def _frozen(tree):
    return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def _same(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


# ------------------------------------------------------------------------------------------------
# The value given, on every front
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_tree_register_refuses_a_non_finite_value(bad):
    w = np.eye(3, dtype=np.float32)
    w[1, 2] = bad
    kind = "NaN" if np.isnan(bad) else "Inf"
    with pytest.raises(
        px.ParametrizationError,
        match=rf"parametrizing `w` with \[Skew\]: the value to register contains 1 {kind} among "
        "9 entries",
    ):
        ptree.register({"w": px.skew}, {"w": jnp.asarray(w)})


def test_bfloat16_nan_is_seen():
    w = jnp.ones((2, 2), jnp.bfloat16).at[0, 0].set(jnp.nan)
    with pytest.raises(px.ParametrizationError, match="1 NaN among 4 entries"):
        ptree.register({"w": px.skew}, {"w": w})


def test_linen_init_refuses_a_nan_kernel_naming_the_module_and_path():
    def nan_init(key, shape, dtype=jnp.float32):
        return jnp.full(shape, jnp.nan, dtype)

    model = px.Parametrized(nn.Dense, {"kernel": px.skew})(3, kernel_init=nan_init)
    with pytest.raises(
        px.ParametrizationError,
        match=r"`ParametrizedDense`: parametrizing `kernel` with \[Skew\]: the value to register "
        "contains 9 NaN",
    ):
        model.init(KEY, jnp.ones((1, 3)))


def test_equinox_front_refuses_a_nan_value():
    eqx = pytest.importorskip("equinox")
    lin = eqx.nn.Linear(3, 3, key=KEY)
    lin = eqx.tree_at(lambda m: m.weight, lin, jnp.full((3, 3), jnp.nan))
    with pytest.raises(px.ParametrizationError, match="the value to register contains 9 NaN"):
        px.equinox.Parametrized(lin, {"weight": px.skew}, key=KEY)


def test_linen_base_module_writing_nan_to_a_parametrized_variable_is_refused():
    class Writes(nn.Module):
        @nn.compact
        def __call__(self, x, target):
            v = self.variable("stats", "w", lambda: jnp.eye(3))
            v.value = target
            return x

    model = px.Parametrized(Writes, {"stats:w": px.skew})()
    variables = model.init(KEY, jnp.ones(3), jnp.eye(3))
    with pytest.raises(
        px.ParametrizationError,
        match=r"`ParametrizedWrites` writing `stats:w`: parametrizing `w` with \[Skew\]: the value "
        "assigned contains 1 NaN",
    ):
        model.apply(variables, jnp.ones(3), jnp.eye(3).at[0, 1].set(jnp.nan), mutable=["stats"])


# ------------------------------------------------------------------------------------------------
# What a right inverse produces from a finite value
# ------------------------------------------------------------------------------------------------
def test_a_finite_value_whose_raw_value_is_nan_is_refused_at_registration_and_assignment():
    spec = {"w": Exp()}
    value = jnp.ones((2, 2)).at[0, 1].set(-2.0)  # log(-2) = NaN
    with np.errstate(invalid="ignore"):  # the NaN is the point; numpy would warn
        assert np.isnan(np.log(np.float32(-2.0)))
    with pytest.raises(
        px.RightInverseError,
        match=r"parametrizing `w` with \[Exp\]: the value is finite, but the chain \[Exp\] "
        r"turned it into non-finite values: the raw value `original` has 1 NaN among 4 entries "
        r"\(from link 0 \(`Exp`\)'s right inverse\)",
    ):
        ptree.register(spec, {"w": value})
    raw, state = ptree.register(spec, {"w": jnp.ones((2, 2))})
    before = _frozen(raw)
    with pytest.raises(px.RightInverseError, match="`original` has 1 Inf"):
        ptree.assign(spec, raw, state, {"w": jnp.ones((2, 2)).at[1, 1].set(0.0)})  # log 0
    _same(raw, before)


def test_the_link_that_produced_the_non_finite_intermediate_is_named():
    """[Exp, Symmetric] given -1s: Symmetric keeps the upper triangle (zeros below), then link
    0's log gives NaN for the -1s and -Inf for the zero."""
    value = -jnp.ones((2, 2))
    with pytest.raises(
        px.RightInverseError,
        match=r"turned it into non-finite values: the raw value `original` has 3 NaN and 1 Inf among "
        r"4 entries \(from link 0 \(`Exp`\)'s right inverse\)",
    ):
        ptree.register({"w": [Exp(), px.symmetric]}, {"w": value})


def test_linen_assign_of_a_value_the_chain_cannot_represent_changes_nothing():
    layer = px.Parametrized(nn.Dense(3), {"kernel": [px.skew, px.cayley]})
    v = layer.init(KEY, jnp.ones((1, 3)))
    before = _frozen(v)
    with pytest.raises(
        px.RightInverseError,
        match=r"assign to `ParametrizedDense`.*`kernel`.*Cayley.*eigenvalue -1",
    ):
        px.linen.assign(layer, v, {"kernel": -jnp.eye(3)})
    _same(v, before)


def test_non_finite_variables_from_init_variables_are_refused():
    with pytest.raises(
        px.RightInverseError,
        match=r"link 0 \(`NanInit`\) state `s` has 1 NaN among 1 entries "
        r"\(from its init_variables\)",
    ):
        ptree.register({"w": NanInit()}, {"w": jnp.ones(3)}, key=KEY)


def test_nnx_appended_link_with_non_finite_variables_is_numbered_in_the_stored_chain():
    layer = nnx.Linear(3, 3, rngs=nnx.Rngs(0))
    px.nnx.register_parametrization(layer, "kernel", px.skew)
    with pytest.raises(px.RightInverseError, match=r"link 1 \(`NanInit`\) state `s`"):
        px.nnx.register_parametrization(layer, "kernel", NanInit(), key=KEY)
    assert len(layer.parametrizations["kernel"]) == 1


def test_a_registered_value_the_chain_maps_to_inf_is_refused():
    """A plain function has no right inverse: the raw value is the value itself, and exp of
    1e4 overflows float32. (`[symmetric, matrix_exp]` no longer does: expm clamps symmetric
    input to the dtype's range.)"""
    value = 1e4 * np.ones((3, 3), dtype=np.float32)
    with np.errstate(over="ignore"):  # the overflow is the point; numpy would warn
        assert np.isinf(np.exp(np.float32(1e4)))
    with pytest.raises(
        px.RightInverseError, match="maps the raw values it stored back to a value with .*(NaN|Inf)"
    ):
        ptree.register({"w": jnp.exp}, {"w": jnp.asarray(value)})


def test_traced_values_are_not_checked():
    """Documented: a tracer has no contents; under jit the NaN is stored as given."""
    spec = {"w": px.skew}
    raw, state = ptree.register(spec, {"w": jnp.eye(3)})
    f = jax.jit(lambda r, s, x: ptree.assign(spec, r, s, {"w": x})[0])
    out = f(raw, state, jnp.full((3, 3), jnp.nan))
    assert np.isnan(np.asarray(out["parametrizations"]["w"]["original"])).any()


# ------------------------------------------------------------------------------------------------
# NotImplementedError, arity, update_base
# ------------------------------------------------------------------------------------------------
def _unsupported(x):
    raise NotImplementedError("Unsupported dtype bfloat16")  # what LAPACK says, deep inside


@dataclasses.dataclass(frozen=True)
class DeepNotImplemented(px.Parametrization):
    def forward(self, x):
        return x

    def right_inverse(self, value):
        return _unsupported(value)


@dataclasses.dataclass(frozen=True)
class DeclaresNone(px.Parametrization):
    """Torch's convention: the link's own right_inverse raises NotImplementedError."""

    def forward(self, x):
        return 2 * x

    def right_inverse(self, value):
        raise NotImplementedError("no right inverse")


def test_not_implemented_inside_a_right_inverse_is_not_swallowed():
    with pytest.raises(
        px.RightInverseError,
        match=r"the right inverse of `DeepNotImplemented` failed with NotImplementedError: "
        "Unsupported dtype bfloat16",
    ) as info:
        ptree.register({"w": DeepNotImplemented()}, {"w": jnp.ones(3)})
    assert isinstance(info.value.__cause__, NotImplementedError)


def test_not_implemented_raised_by_the_link_itself_means_no_right_inverse():
    raw, state = ptree.register({"w": DeclaresNone()}, {"w": jnp.ones(3)})
    np.testing.assert_array_equal(raw["parametrizations"]["w"]["original"], np.ones(3))
    # torch's orthogonal(map=None) on a square matrix resolves to matrix_exp: none either
    w = np.random.default_rng(0).standard_normal((3, 3)).astype(np.float32)
    p = px.Orthogonal(None, use_trivialization=False)
    raw, _ = ptree.register({"w": p}, {"w": jnp.asarray(w)})
    np.testing.assert_array_equal(raw["parametrizations"]["w"]["original"], w)


@dataclasses.dataclass(frozen=True)
class TwoForOne(px.Parametrization):
    def forward(self, x):
        return 2 * x

    def right_inverse(self, value):
        return value / 2, value


@dataclasses.dataclass(frozen=True)
class OneForTwo(px.Parametrization):
    def forward(self, a, b):
        return a * b

    def right_inverse(self, value):
        return value


@pytest.mark.parametrize("unsafe", [False, True])
def test_right_inverse_arity_mismatch_is_a_clear_error(unsafe):
    with pytest.raises(
        px.RightInverseError,
        match=r"parametrizing `w` with \[TwoForOne\]: `TwoForOne`.right_inverse returned 2 arrays, "
        r"but its forward takes 1 raw array \(signature \(x\)\)",
    ):
        ptree.register({"w": TwoForOne()}, {"w": jnp.ones(3)}, unsafe=unsafe)
    with pytest.raises(
        px.RightInverseError,
        match=r"`OneForTwo`.right_inverse returned 1 array, but its forward takes 2 raw arrays",
    ):
        ptree.register({"w": OneForTwo()}, {"w": jnp.ones(3)}, unsafe=unsafe)


def test_update_base_without_its_state_names_the_path_the_entry_and_the_fix():
    spec = {"w": px.SO()}
    raw, state = ptree.register(spec, {"w": jnp.eye(3)}, key=KEY)
    with pytest.raises(
        px.ParametrizationError,
        match=r"update_base at `w`: `SO` \(link 0 of the chain\) reads its variable 'base', which "
        r"it was not given: it received params \[\] and state \[\]\. Pass back the state made at "
        "registration",
    ):
        px.tree.update_base(spec, raw, {})
    px.tree.update_base(spec, raw, state)  # with it: fine


# ------------------------------------------------------------------------------------------------
# SpectralNorm
# ------------------------------------------------------------------------------------------------
def _sigma(w):
    return np.linalg.norm(np.asarray(w, np.float64), 2)


@pytest.mark.parametrize("shape", [(3, 3), (4, 6), (6, 4)])
def test_spectral_norm_assignment_reads_back_w_over_numpy_sigma(shape):
    spec = {"w": px.SpectralNorm()}
    rng = np.random.default_rng(1)
    raw, state = ptree.register(
        spec, {"w": jnp.asarray(rng.standard_normal(shape), jnp.float32)}, key=KEY
    )
    for w in (
        3 * np.eye(*shape),
        5 * rng.standard_normal(shape),
        1e-6 * rng.standard_normal(shape),
    ):
        w = w.astype(np.float32)
        raw, state = ptree.assign(spec, raw, state, {"w": jnp.asarray(w)})
        out = np.asarray(ptree.constrain(spec, raw, state)["w"])
        np.testing.assert_allclose(out, w / _sigma(w), rtol=1e-4, atol=1e-5)


def test_spectral_norm_reassigning_the_value_read_back_is_a_no_op():
    spec = {"w": px.SpectralNorm()}
    w = np.random.default_rng(4).standard_normal((4, 3)).astype(np.float32)
    raw, state = ptree.register(spec, {"w": jnp.asarray(w)}, key=KEY)
    # stale u, v (a training step moved the raw value; no power iteration since)
    raw = jax.tree.map(lambda r: r + 0.3, raw)
    y = ptree.constrain(spec, raw, state)["w"]
    assert abs(_sigma(y) - 1) > 1e-3  # off the set under the stale estimate
    raw2, state2 = ptree.assign(spec, raw, state, {"w": y})
    _same(state2, state)
    np.testing.assert_allclose(ptree.constrain(spec, raw2, state2)["w"], y, rtol=1e-5, atol=1e-6)


def test_spectral_norm_registration_reads_back_w_over_numpy_sigma_with_a_small_gap():
    """15 power iterations do not converge with sigma_2 / sigma_1 = 0.999; the SVD does."""
    u, _, vh = np.linalg.svd(np.random.default_rng(2).standard_normal((5, 5)))
    w = (u @ np.diag([1.0, 0.999, 0.5, 0.2, 0.1]) @ vh).astype(np.float32)
    spec = {"w": px.SpectralNorm()}
    raw, state = ptree.register(spec, {"w": jnp.asarray(w)}, key=KEY)
    out = np.asarray(ptree.constrain(spec, raw, state)["w"])
    np.testing.assert_allclose(out, w / _sigma(w), rtol=1e-4, atol=1e-5)


def test_spectral_norm_bfloat16_assignment():
    spec = {"w": px.SpectralNorm()}
    w = jnp.asarray(np.random.default_rng(3).standard_normal((4, 3)), jnp.bfloat16)
    raw, state = ptree.register(spec, {"w": w}, key=KEY)
    raw, state = ptree.assign(spec, raw, state, {"w": 2 * w})
    out = np.asarray(ptree.constrain(spec, raw, state)["w"], np.float64)
    assert abs(_sigma(out) - 1) < 3e-2  # bf16 rounding of W and u, v


@pytest.mark.parametrize("shape", [(3, 4), (5,)])
def test_spectral_norm_refuses_an_all_zero_value(shape):
    spec = {"w": px.SpectralNorm()}
    with pytest.raises(
        px.ParametrizationError,
        match=r"parametrizing `w` with \[SpectralNorm\]: "
        ".*the value is all zero",
    ):
        ptree.register(spec, {"w": jnp.zeros(shape)}, key=KEY)
    raw, state = ptree.register(spec, {"w": jnp.ones(shape)}, key=KEY)
    before = (_frozen(raw), _frozen(state))
    with pytest.raises(px.ParametrizationError, match="the value is all zero"):
        ptree.assign(spec, raw, state, {"w": jnp.zeros(shape)})
    _same((raw, state), before)


# ------------------------------------------------------------------------------------------------
# linen: a base module's write through a state-moving inverse
# ------------------------------------------------------------------------------------------------
class WritesKernel(nn.Module):
    """A Dense-like module that overwrites its own kernel with ``target`` when given one."""

    @nn.compact
    def __call__(self, x, target=None):
        k = self.param("kernel", nn.initializers.orthogonal(), (3, 3))
        if target is not None:
            self.put_variable("params", "kernel", target)
        return x @ k


def _rotation():
    c, s = np.cos(0.7), np.sin(0.7)
    return jnp.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], jnp.float32)


@pytest.mark.parametrize("p", [px.SO(), px.Orthogonal(), px.SpectralNorm()], ids=str)
def test_linen_module_writing_its_own_kernel_keeps_the_moved_state(p):
    model = px.Parametrized(WritesKernel, {"kernel": p})()
    x = jnp.ones((1, 3))
    variables = model.init(KEY, x)
    target = _rotation()
    _, mutated = model.apply(variables, x, target, mutable=["params", px.linen.STATE_COLLECTION])
    got = np.asarray(px.linen.constrain(model, {**variables, **mutated})["params"]["kernel"])
    np.testing.assert_allclose(got, np.asarray(target), atol=1e-5)  # sigma(rotation) = 1


def test_linen_write_through_a_state_moving_inverse_without_mutable_state_is_an_error():
    model = px.Parametrized(WritesKernel, {"kernel": px.SO()})()
    x = jnp.ones((1, 3))
    variables = model.init(KEY, x)
    with pytest.raises(
        px.ParametrizationError,
        match=r"`ParametrizedWritesKernel`: the base module wrote the parametrized variable\(s\) "
        r"`kernel`, whose right inverse moves link state .* not mutable",
    ):
        model.apply(variables, x, _rotation(), mutable=["params"])


# ------------------------------------------------------------------------------------------------
# bake
# ------------------------------------------------------------------------------------------------
def test_bake_refuses_a_non_finite_constrained_value():
    spec = {"w": px.skew}
    raw, state = ptree.register(spec, {"w": jnp.eye(3), "b": jnp.ones(2)})
    raw["parametrizations"]["w"]["original"] = jnp.full((3, 3), jnp.nan)  # a diverged step
    with pytest.raises(
        px.ParametrizationError,
        match=r"parametrizing `w` with \[Skew\]: cannot remove .* contains \d+ NaN .*already "
        "non-finite",
    ):
        ptree.remove_parametrizations(spec, raw, state)
    tree, _ = ptree.remove_parametrizations(
        spec, raw, state, leave_parametrized=False
    )  # the raw value: allowed
    assert np.isnan(np.asarray(tree["w"])).all()
    assert "b" in tree
