"""The pure pytree API, usable without Flax (plain JAX, optax, equinox).

>>> import jax, jax.numpy as jnp
>>> from parametrax import tree as ptree, skew, cayley
>>> params = {"w": jnp.eye(3), "b": jnp.zeros(3)}
>>> raw, state = ptree.register({"w": [skew, cayley]}, params)
>>> sorted(raw)
['b', 'parametrizations']
>>> W = ptree.constrain({"w": [skew, cayley]}, raw, state)["w"]
>>> bool(jnp.allclose(W, jnp.eye(3)))
True
"""

from parametrax._dynamic import update_base
from parametrax._tree import (
    PARAMETRIZATIONS,
    Spec,
    assign,
    bake,
    constrain,
    flatten,
    forward,
    parametrized_paths,
    register,
)

__all__ = [
    "PARAMETRIZATIONS",
    "Spec",
    "register",
    "forward",
    "constrain",
    "assign",
    "bake",
    "parametrized_paths",
    "flatten",
    "update_base",
]
