"""The pure pytree API, usable without Flax (plain JAX, optax, equinox).

Any pytree works: a nested params dict keeps torch's ``state_dict`` layout (parametrized leaves
move under ``parametrizations/<path>/original``); any other pytree (an equinox Module, a
dataclass, a NamedTuple, a list) keeps its structure and type, each parametrized leaf replaced
in place by a :class:`RawLeaf` holding its raw arrays. Spec keys are ``/``-joined key paths
(dict keys, attribute names, sequence indices: ``"layers/0/weight"``) or globs (``*``, ``?``,
``[...]`` within a segment, ``**`` across segments); see :mod:`parametrax.tree.paths`.

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

from parametrax._deprecation import module_getattr as _module_getattr
from parametrax.tree import paths
from parametrax.tree._ops import (
    PARAMETRIZATIONS,
    RawLeaf,
    assign,
    constrain,
    forward,
    parametrized_paths,
    register,
    remove_parametrizations,
)
from parametrax.tree._spec import Spec
from parametrax.tree._update_base import has_base, update_base
from parametrax.tree.paths import flatten

__all__ = [
    "PARAMETRIZATIONS",
    "Spec",
    "RawLeaf",
    "register",
    "forward",
    "constrain",
    "assign",
    "remove_parametrizations",
    "parametrized_paths",
    "flatten",
    "update_base",
    "has_base",
    "paths",
]

__getattr__ = _module_getattr(__name__, {"bake": "parametrax.tree:remove_parametrizations"})
