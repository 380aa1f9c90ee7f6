"""Wrapping a parametrized linen module again: torch's repeated registration, checked against torch.

torch (spec §2.A): registering on an already parametrized tensor appends the link and leaves the
stored ``original`` untouched, so the value becomes ``p_new(current value)``. The new link's
right_inverse runs (its result dropped); the earlier links' right inverses do not run again.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import parametrax as px
from parametrax import Parametrized, cayley, skew

from _helpers import Counter, Double, Scale

torch = pytest.importorskip("torch")
tpar = torch.nn.utils.parametrize

KEY = jax.random.key(0)
X3 = jnp.ones((2, 3))


class TDouble(torch.nn.Module):
    def forward(self, x):
        return 2 * x

    def right_inverse(self, y):
        return y / 2


class TSkew(torch.nn.Module):
    def forward(self, x):
        return torch.triu(x, 1) - torch.triu(x, 1).T

    def right_inverse(self, a):
        return torch.triu(a, 1)


def torch_twice(kernel, first, second):
    """A torch module holding ``kernel`` as its tensor ``weight`` (the same matrix, not torch's
    layout: the maps act on the matrix as stored), registered twice; returns the weight and the
    stored original."""
    lin = torch.nn.Linear(3, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(np.asarray(kernel)))
    tpar.register_parametrization(lin, "weight", first)
    tpar.register_parametrization(lin, "weight", second)
    return (
        lin.weight.detach().numpy(),
        lin.parametrizations.weight.original.detach().numpy(),
    )


def test_twice_wrapped_double_matches_torch_and_is_not_the_one_chain():
    plain = nn.Dense(3).init(KEY, X3)["params"]["kernel"]
    twice = Parametrized(Parametrized(nn.Dense(3), {"kernel": Double()}), {"kernel": Double()})
    v = twice.init(KEY, X3)
    weight, original = torch_twice(plain, TDouble(), TDouble())
    np.testing.assert_allclose(px.linen.constrain(twice, v)["params"]["kernel"], weight, rtol=1e-6)
    np.testing.assert_allclose(
        v["params"]["parametrizations"]["kernel"]["original"], original, rtol=1e-6
    )
    np.testing.assert_allclose(weight, 2 * np.asarray(plain), rtol=1e-6)  # torch: p_new(W0)
    # One wrap with the chain [Double, Double] registers through both right inverses instead.
    once = Parametrized(nn.Dense(3), {"kernel": [Double(), Double()]})
    np.testing.assert_allclose(
        px.linen.constrain(once, once.init(KEY, X3))["params"]["kernel"], plain, rtol=1e-6
    )


def test_twice_wrapped_skew_then_cayley_matches_torch():
    plain = nn.Dense(3).init(KEY, X3)["params"]["kernel"]
    twice = Parametrized(Parametrized(nn.Dense, {"kernel": skew}), {"kernel": cayley})(3)
    v = twice.init(KEY, X3)
    weight, original = torch_twice(plain, TSkew(), _TorchCayley())
    k = px.linen.constrain(twice, v)["params"]["kernel"]
    np.testing.assert_allclose(k, weight, atol=1e-5)
    np.testing.assert_allclose(
        v["params"]["parametrizations"]["kernel"]["original"], original, atol=1e-6
    )
    np.testing.assert_allclose(k.T @ k, np.eye(3), atol=1e-5)


class _TorchCayley(torch.nn.Module):
    def forward(self, a):
        i = torch.eye(a.shape[-1], dtype=a.dtype)
        return torch.linalg.solve(i - a, i + a)  # parametrax's Cayley: (I - A)^{-1} (I + A)


def test_twice_wrapped_appended_link_variables_and_new_paths():
    plain = nn.Dense(3).init(KEY, X3)["params"]
    inner = Parametrized(nn.Dense(3), {"kernel": Double()})
    twice = Parametrized(inner, {"kernel": [Scale(3.0), Counter()], "bias": Double()})
    v = twice.init(KEY, X3)
    slot = v["params"]["parametrizations"]["kernel"]
    # The appended links are links 1 and 2 of the one chain, their variables initialised on top.
    assert sorted(slot) == ["1", "original"] and float(slot["1"]["s"]) == 3.0
    assert set(v["parametrization_state"]["parametrizations"]["kernel"]) == {"2"}
    c = px.linen.constrain(twice, v)["params"]
    np.testing.assert_allclose(
        c["kernel"], 3 * plain["kernel"], rtol=1e-6
    )  # Scale(3)(W0): W0 untouched
    # bias was not parametrized before: a first registration, exact at init.
    np.testing.assert_allclose(c["bias"], plain["bias"], atol=0)
    assert "bias" not in v["params"]
    # the spec is the one merged chain, and the class is made once
    assert px.linen.spec_of(twice).chain_for("kernel") == (Double(), Scale(3.0), Counter())
    assert (
        type(twice)
        is Parametrized(inner, {"kernel": [Scale(3.0), Counter()], "bias": Double()}).__class__
    )


# --- a missing parametrization_state names the collection and the fix ---------------------------
def test_missing_state_collection_names_it_and_shows_the_apply_call():
    layer = Parametrized(nn.Dense(3), {"kernel": px.SpectralNorm()})
    v = layer.init(KEY, X3)
    fix = (
        r"the link state \(`kernel` link 0\) lives in `parametrization_state`: "
        r"`model.apply\(variables, x\)` to use it, `model.apply\(variables, x, "
        r"mutable=\[\"parametrization_state\"\]\)` to also advance it"
    )
    with pytest.raises(
        px.ParametrizationError, match=r"no `parametrization_state` collection.*" + fix
    ):
        layer.apply({"params": v["params"]}, X3)
    with pytest.raises(
        px.ParametrizationError, match=r"collection given has no entry for `kernel` link 0.*" + fix
    ):
        layer.apply({"params": v["params"], "parametrization_state": {}}, X3)
    with pytest.raises(px.ParametrizationError, match=fix):
        px.linen.constrain(layer, {"params": v["params"]})
