"""The Flax linen front: ``Parametrized(base, spec)`` and the functions that act on its variables.

How it works: the wrapper is a subclass of the base module class (so it has the same fields and
``isinstance(layer, nn.Dense)`` holds, as torch's injected class does) whose methods run the base
module *functionally*. At ``init`` it initialises the base module, registers the spec on the
base variables (right_inverse of the initial values) and stores the raw tree in its own scope.
At ``apply`` it evaluates every chain once, hands the constrained variables to the base module's
``apply`` and writes back whatever the base module mutated. The constraint is therefore computed
once per ``apply``, however often the base module reads the value (an RNN scanning 100 steps
over its recurrent kernel evaluates the map once, not 100 times).

Variables layout (torch's ``state_dict``, functionally)::

    params/<every unparametrized param, where the base module puts it>
    params/parametrizations/<path>/original            (or original0, original1, ...)
    params/parametrizations/<path>/<i>/<name>          learnable params of link i
    parametrization_state/parametrizations/<path>/<i>/<name>   state of link i (mask, u, v, base)

Spec keys address the ``params`` collection; ``"<collection>:<path>"`` addresses another
collection (torch's buffers), e.g. ``"batch_stats:BatchNorm_0/mean"``; its raw values live in
``<collection>/parametrizations/...`` and its link state under
``parametrization_state/<collection>/parametrizations/...``.

Train and eval: stateful parametrizations (a spectral norm's power iteration) advance their
state exactly when the ``parametrization_state`` collection is mutable, i.e. when you call
``model.apply(variables, x, mutable=["parametrization_state"])``. A plain ``apply`` reuses the
stored state and changes nothing.

Package layout::

    __init__.py      the public names (this docstring: how the wrapper works, its rules)
    _wrapper.py      Parametrized and the class it builds (init = registration, apply = evaluate once)
    _functions.py    constrained / assign / remove_parametrizations / is_parametrized / spec_of / ...
    _collections.py  the spec split per variable collection; evaluating every chain; error context
    _boxes.py        metadata boxes (nn.Partitioned ...): unbox to compute, rebox to store
    _compat.py       the only module that touches private Flax internals, one function per use
"""

from parametrax.linen._collections import STATE_COLLECTION, FrozenStateWarning
from parametrax.linen._functions import (
    assign,
    constrained,
    is_parametrized,
    remove_parametrizations,
    spec_of,
    type_before_parametrizations,
)
from parametrax.linen._wrapper import Parametrized

__all__ = [
    "Parametrized",
    "STATE_COLLECTION",
    "FrozenStateWarning",
    "constrained",
    "assign",
    "remove_parametrizations",
    "is_parametrized",
    "type_before_parametrizations",
    "spec_of",
]
