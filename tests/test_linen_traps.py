"""The linen front on models written the way Flax's own examples write them (issue 13 §2)."""

import functools
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import parametrax as px
from parametrax import Parametrized, skew

from _helpers import skew_error

KEY = jax.random.key(0)


class Net(nn.Module):
    width: int = 3
    depth: int = 1

    @nn.compact
    def __call__(self, x):
        for _ in range(self.depth):
            x = nn.Dense(self.width)(x)
        return x


class AutoEncoder(nn.Module):
    def setup(self):
        self.enc = nn.Dense(3)
        self.dec = nn.Dense(3)

    def __call__(self, x):
        return self.dec(self.enc(x))

    def encode(self, x):
        return self.enc(x)


def test_class_partial_gives_the_same_partial_of_the_parametrized_class():
    Net2 = functools.partial(Net, width=4, depth=2)  # as Flax's ResNet18 = partial(ResNet, ...)
    PNet2 = Parametrized(Net2, {"*/kernel": skew})
    assert isinstance(PNet2, functools.partial) and PNet2.keywords == {"width": 4, "depth": 2}
    model = PNet2()
    assert (model.width, model.depth) == (4, 2) and px.is_parametrized(model, "Dense_1/kernel")
    v = model.init(KEY, jnp.ones((1, 4)))
    plain = Net2().init(KEY, jnp.ones((1, 4)))
    k = px.constrained(model, v)["params"]["Dense_1"]["kernel"]
    assert skew_error(k) == 0.0
    # init registered the plain model's kernel: its strict upper triangle is kept
    np.testing.assert_array_equal(np.triu(k, 1), np.triu(plain["params"]["Dense_1"]["kernel"], 1))


def test_method_given_as_the_base_class_function_is_the_named_method():
    model = Parametrized(AutoEncoder(), {"*/kernel": skew})
    x = jnp.arange(6.0).reshape(2, 3)
    v = model.init(KEY, x)
    by_name = model.apply(v, x, method="encode")
    by_function = model.apply(v, x, method=AutoEncoder.encode)
    np.testing.assert_array_equal(by_function, by_name)
    c = px.constrained(model, v)["params"]["enc"]
    np.testing.assert_allclose(by_name, x @ c["kernel"] + c["bias"], rtol=1e-6)
    v2 = model.init(KEY, x, method=AutoEncoder.encode)
    assert "enc" in v2["params"]["parametrizations"] and "dec" not in v2["params"]["parametrizations"]
