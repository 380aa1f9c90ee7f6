"""The contract kit itself: it passes good parametrizations and catches broken ones."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

import parametrax as px
from parametrax.catalog import Positive, Sphere
from parametrax.testing import check_parametrization, check_round_trip, default_atol, prepare

from _helpers import Counter, RankOne, Scale

KEY = jax.random.key(0)


# ------------------------------------------------------------------------------------------------
# Good parametrizations a user might write
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PositiveExp(px.Parametrization):
    def forward(self, x):
        return jnp.exp(x)

    def right_inverse(self, y):
        return jnp.log(y)

    def in_manifold(self, y, atol=None):
        return jnp.all(y > 0)

    def sample(self, key, shape, dtype=jnp.float32):
        return jnp.exp(jax.random.normal(key, shape, dtype))


def test_good_user_parametrizations_pass():
    check_parametrization(PositiveExp(), (3, 2), KEY)
    check_parametrization(RankOne(), (2, 4, 3), KEY)
    check_parametrization(Scale(2.0), (3,), KEY)


def test_plain_callable_and_forward_only_pass():
    check_parametrization(jnp.tanh, (4,), KEY)  # no right inverse, no in_manifold: skipped


def test_default_atol_per_dtype():
    assert default_atol(jnp.float32) == 1e-4
    assert default_atol(jnp.bfloat16) == 1e-2


# ------------------------------------------------------------------------------------------------
# Broken parametrizations: each must fail with the check it breaks named
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class OffManifold(px.Parametrization):
    """Claims positive values (in_manifold, sample) but its forward is the identity."""

    def forward(self, x):
        return x

    def right_inverse(self, y):
        return y

    def in_manifold(self, y, atol=None):
        return jnp.all(y > 0)

    def sample(self, key, shape, dtype=jnp.float32):
        return 0.01 * jnp.exp(jax.random.normal(key, shape, dtype))


@dataclasses.dataclass(frozen=True)
class WrongInverse(PositiveExp):
    def right_inverse(self, y):
        return jnp.log(y) + 0.1


@dataclasses.dataclass(frozen=True)
class ChangesDtype(PositiveExp):
    def forward(self, x):
        return jnp.exp(x).astype(jnp.bfloat16)


@dataclasses.dataclass(frozen=True)
class ChangesShape(px.Parametrization):
    def forward(self, x):
        return x[..., :-1]


@dataclasses.dataclass(frozen=True, eq=False)
class IdentityEq(px.Parametrization):
    """eq=False: instances compare by identity, so every copy re-traces under jit."""

    def forward(self, x):
        return 2 * x


@dataclasses.dataclass(frozen=True)
class ListField(PositiveExp):
    sizes: list = dataclasses.field(default_factory=lambda: [1, 2])


class HashById(px.Parametrization):
    """Equal by value but hashed by identity: an equal copy misses jit's cache."""

    def __eq__(self, other):
        return type(other) is type(self)

    def __hash__(self):
        return id(self)

    def forward(self, x):
        return 2 * x


@dataclasses.dataclass(frozen=True)
class JitDiffers(px.Parametrization):
    def forward(self, x):
        if isinstance(x, jax.core.Tracer):
            return x + 1e-2
        return x


@dataclasses.dataclass(frozen=True)
class NaiveSphere(px.Parametrization):
    """The exponential map of the unit sphere at e0 with the textbook ``sin(t)/t`` behind a
    ``where``: finite values but NaN gradients at ``t = 0``, which is right_inverse(e0)."""

    def _tangent(self, x):
        return x.at[..., 0].set(0.0)

    def forward(self, x):
        v = self._tangent(x)
        t = jnp.linalg.norm(v, axis=-1, keepdims=True)
        e0 = jnp.zeros_like(x).at[..., 0].set(1.0)
        return jnp.cos(t) * e0 + jnp.where(t > 0, jnp.sin(t) / t, 1.0) * v

    def right_inverse(self, y):
        c = jnp.clip(y[..., :1], -1.0, 1.0)
        theta = jnp.arccos(c)
        safe = jnp.where(theta > 0, theta / jnp.where(theta > 0, jnp.sin(theta), 1.0), 1.0)
        return self._tangent(y) * safe

    def in_manifold(self, y, atol=1e-4):
        return jnp.all(jnp.abs(jnp.linalg.norm(y, axis=-1) - 1) <= atol)

    def sample(self, key, shape, dtype=jnp.float32):
        return jnp.zeros(shape, dtype).at[..., 0].set(1.0)


@dataclasses.dataclass(frozen=True)
class MutatesState(Scale):
    def init_variables(self, key, value):
        return {"params": {"s": jnp.asarray(2.0, value.dtype)}, "state": {"n": jnp.zeros(())}}

    def apply(self, variables, x, *, update_state=False):
        n = variables["state"]["n"]
        return variables["params"]["s"] * x, {"n": n + 1}  # ignores update_state


@dataclasses.dataclass(frozen=True)
class BadUpdateBase(Scale):
    def update_base(self, variables, x):
        return x * 0, variables["state"]  # resets the raw value without moving any base


@pytest.mark.parametrize(
    "p, shape, check",
    [
        (OffManifold(), (8,), "on the manifold after forward"),
        (WrongInverse(), (3,), "round trip on a given point"),
        (ChangesDtype(), (3,), "shape and dtype kept"),
        (ChangesShape(), (3,), "shape and dtype kept"),
        (IdentityEq(), (3,), "configuration"),
        (HashById(), (3,), "configuration"),
        (JitDiffers(), (3,), "jit == eager"),
        (NaiveSphere(), (2, 3), "finite gradients"),
        (MutatesState(), (3,), "state"),
        (BadUpdateBase(), (3,), "update_base"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, px.Parametrization) else None,
)
def test_broken_parametrizations_fail(p, shape, check):
    with pytest.raises(AssertionError, match=f"failed the check `{check}`"):
        check_parametrization(p, shape, KEY)


def test_unhashable_configuration_fails():
    with pytest.raises(AssertionError, match="configuration.*not hashable"):
        check_parametrization(ListField(), (3,), KEY)


def test_message_names_parametrization_shape_and_numbers():
    with pytest.raises(AssertionError) as info:
        check_parametrization(WrongInverse(), (2, 3), KEY)
    msg = str(info.value)
    assert "`WrongInverse`" in msg and "shape=(2, 3)" in msg and "float32" in msg
    assert "max abs difference" in msg


def test_whole_tensor_sphere_needs_check_vmap_off():
    # Sphere(axis=None) normalises the whole tensor, batch axes included: the kit flags it ...
    with pytest.raises(AssertionError, match="failed the check `vmap == broadcasting`"):
        check_parametrization(Sphere(axis=None), (4,), KEY)
    # ... and accepts it once told that it does not broadcast.
    check_parametrization(Sphere(axis=None), (4,), KEY, check_vmap=False)


def test_strict_tolerance_is_honoured():
    # A tiny atol makes an otherwise exact float32 map fail the round trip.
    with pytest.raises(AssertionError, match="round trip"):
        check_parametrization(Positive(), (3,), KEY, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Stateful links, restricted raw domains, named checks alone
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StaleUpdate(Scale):
    """Advances its state under update_state=True but returns the value of the old state."""

    def init_variables(self, key, value):
        return {"params": {}, "state": {"s": jnp.asarray(2.0, value.dtype)}}

    def apply(self, variables, x, *, update_state=False):
        s = variables["state"]["s"]
        return s * x, ({"s": s + 1} if update_state else variables["state"])

    def apply_inverse(self, variables, value, *, key=None):
        return value / variables["state"]["s"], variables["state"]


def test_stateful_links_pass_with_and_without_broadcasting():
    check_parametrization(Counter(), (3,), KEY)  # integer state advanced by update_state
    check_parametrization(Counter(), (2, 3), KEY, broadcasts=False)  # vmap == loop, shared state


def test_update_state_value_must_be_its_state_value():
    with pytest.raises(AssertionError, match="failed the check `state`.*update_state=True"):
        check_parametrization(StaleUpdate(), (3,), KEY)


class Sqrt(px.Parametrization):
    """sqrt: NaN on negative raw values, so only raws >= 0 are in its domain."""

    def forward(self, x):
        return jnp.sqrt(x)

    def right_inverse(self, y):
        return y**2


def positive_raw(x):
    return jnp.abs(x) + 0.1


def test_restricted_raw_domain():
    # Drawn from a normal, half the raws are negative and forward is NaN there: the kit fails ...
    with pytest.raises(AssertionError, match="failed the check"):
        check_parametrization(Sqrt(), (4, 3), KEY)
    # ... and the contract holds on the raws the map is meant for.
    check_parametrization(Sqrt(), (4, 3), KEY, raw_domain=positive_raw)


def test_named_check_alone():
    check_round_trip(prepare(PositiveExp(), (3,), KEY))
    with pytest.raises(AssertionError, match="failed the check `round trip on a given point`"):
        check_round_trip(prepare(WrongInverse(), (3,), KEY))
