"""The Flax linen front: ``Parametrized(base, spec)`` and the functions that act on its variables.

How it works: the wrapper is a subclass of the base module class (so it has the same fields and
``isinstance(layer, nn.Dense)`` holds, as torch's injected class does) whose methods run the base
module *functionally*. At ``init`` it initialises the base module, registers the spec on the
base variables (right_inverse of the initial values) and stores the raw tree in its own scope.
At ``apply`` it evaluates every chain once, hands the constrained variables to the base module's
``apply`` and writes back whatever the base module mutated (a write to a parametrized variable
goes through its chain's right inverse, like torch's setter, and keeps the link state that
inverse moves, a trivialization's base or a spectral norm's ``u``, ``v``: pass
``parametrization_state`` as mutable, or the call says the write would be lost). NaN / Inf is
refused at ``init``, ``assign`` and such writes (``parametrax._finite``). The constraint is
therefore computed once per ``apply``, however often the base module reads the value (an RNN
scanning 100 steps over its recurrent kernel evaluates the map once, not 100 times).

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

A train step must therefore list the collection next to its own: with BatchNorm,
``loss, updates = model.apply(v, x, mutable=["batch_stats", "parametrization_state"])`` and keep
both collections of ``updates`` (in a ``TrainState``, hold ``parametrization_state`` beside
``batch_stats``). A step ported with ``mutable=["batch_stats"]`` alone would freeze the power
iteration; so when the params are being differentiated (``jax.grad`` / ``value_and_grad`` /
``jvp``, under ``jit`` or ``vmap`` too), the state collection is immutable, and some link's state
would really move (a spectral norm's ``u``, ``v``; not a pruning mask), the wrapper emits a
:class:`FrozenStateWarning` at trace time. To freeze the state on purpose, filter that warning.
A ``grad`` taken outside ``jit`` of an already jitted function cannot be seen and does not warn.

Wrapping twice: ``Parametrized(Parametrized(B, s1), s2)`` is torch's repeated registration. On a
variable ``s1`` parametrizes, ``s2``'s links are appended to the one chain and registered on top
of the constrained value (their own right inverse runs and its result is dropped; ``original``
is untouched), so at init the value is ``p2(W0)``. ``Parametrized(B, {k: s1 + s2})`` instead
registers through every right inverse (the value stays ``W0`` where the chain can represent it).

Lifted transforms: a stateful parametrized cell inside ``nn.RNN`` / ``nn.scan`` cannot write its
state (the transform does not carry ``parametrization_state``): ``init`` says so with the two
fixes, parametrize the whole ``nn.RNN`` (the chain is then evaluated once per apply, not per
step) or add the collection to ``variable_broadcast``.

``nn.tabulate``: the inner modules get their rows (with their unparametrized variables), but the
raw arrays of parametrized variables are listed in the wrapper's row: they live at
``params/parametrizations/<path>/original`` (torch's ``state_dict`` layout, which the checkpoint
format and ``remove_parametrizations`` rely on), not inside the inner modules' scopes, and
tabulate reports each row's own scope. The totals count every raw array once.

Why not ``nn.map_variables`` (what Flax's own ``SpectralNorm`` uses). Tried
(``nn.map_variables(nn.Dense, "params", forward_fn, right_inverse_fn, init=True)``), it cannot
keep these rules: (1) its ``map_in_fn`` / ``map_out_fn`` are pure functions of the collections,
with no rng (a stateful link's ``init_variables`` and a random right inverse need a key) and no
way to ask whether ``parametrization_state`` is mutable (the train/eval rule above); (2) with
``init=True`` it runs the base module twice at init and applies ``map_out_fn`` again to the
constrained values afterwards, i.e. re-runs every right inverse on ``forward(right_inverse(W0))``;
and on any mutable ``apply`` it maps *every* variable back through the right inverse, not only the
ones the base module wrote (this wrapper re-assigns only those); (3) the lifted module is
auto-named ``Map_variablesDense_0``, not ``Dense_0``, so a parametrized layer no longer lives where
the plain one would and baked variables no longer fit the plain model. Flax's ``SpectralNorm``
sidesteps (1) by writing its state from inside the closure and accepts (3) (its variables sit
under ``layer_instance``).

Package layout::

    __init__.py      the public names (this docstring: how the wrapper works, its rules)
    _wrapper.py      Parametrized, the class it builds (init registers, apply evaluates once)
    _functions.py    constrain, assign, remove_parametrizations, is_parametrized, spec_of, ...
    _collections.py  the spec split per variable collection; evaluating every chain; error context
    _boxes.py        metadata boxes (nn.Partitioned ...): unbox to compute, rebox to store
    _compat.py       the only module that touches private Flax internals, one function per use
"""

from parametrax._deprecation import module_getattr as _module_getattr
from parametrax.linen._collections import STATE_COLLECTION, FrozenStateWarning
from parametrax.linen._functions import (
    assign,
    constrain,
    is_parametrized,
    remove_parametrizations,
    spec_of,
    type_before_parametrizations,
)
from parametrax.linen._update_base import update_base
from parametrax.linen._wrapper import Parametrized

__getattr__ = _module_getattr(__name__, {"constrained": "parametrax.linen:constrain"})

__all__ = [
    "Parametrized",
    "STATE_COLLECTION",
    "FrozenStateWarning",
    "constrain",
    "update_base",
    "assign",
    "remove_parametrizations",
    "is_parametrized",
    "type_before_parametrizations",
    "spec_of",
]
