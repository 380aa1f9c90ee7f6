"""The Flax NNX front: PyTorch's in-place ``parametrize`` workflow on ``flax.nnx`` modules.

::

    from flax import nnx
    import parametrax as px
    from parametrax import nnx as pnnx

    layer = nnx.Linear(3, 3, rngs=nnx.Rngs(0))
    pnnx.register_parametrization(layer, "kernel", [px.skew, px.cayley])
    layer.kernel                       # orthogonal: computed from the stored raw value
    layer.parametrizations.kernel.original   # the raw value, an nnx.Param
    layer.kernel = Q                   # runs the right_inverse chain (reverse order)
    pnnx.remove_parametrizations(layer, "kernel")   # back to a plain nnx.Linear

How ``module.<name>`` works
---------------------------
As in torch, the first registration swaps the instance's class for a generated subclass
``Parametrized<Class>`` of the original class (``isinstance(layer, nnx.Linear)`` still holds) that
has a ``property`` per parametrized name. The getter evaluates the chain on the stored raw
value(s); the setter runs the right_inverse chain. The generated class is cached per
``(class, parametrized names)``, so two models of the same structure share it and ``nnx.jit``
does not re-trace for them. The variable itself is moved from ``module.<name>`` to
``module.parametrizations.<name>.original`` (``original0``, ``original1``, ... when the first
parametrization's ``right_inverse`` returns several arrays), keeping its Variable type: an
``nnx.Param`` stays an ``nnx.Param`` (and a single-array original keeps the very same Variable
object), an ``nnx.BatchStat`` or plain ``nnx.Variable`` (torch's buffers) keeps its type and so
gets no gradient. Everything lives in the instance's ``__dict__`` as ordinary NNX nodes, so
``nnx.split`` / ``nnx.merge`` / ``nnx.state`` / ``nnx.jit`` / ``nnx.grad`` / ``nnx.vmap`` see a
regular module graph::

    parametrizations/kernel/original     the raw value (same Variable type as before)
    parametrizations/kernel/0/<name>     learnable params of link 0 (nnx.Param)
    parametrizations/kernel/0/<name>     state of link 0 (ParametrizationState, not a Param)

so ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` trains exactly the raw values and the
parametrizations' own params. Create the optimizer *after* registering: the paths change.

Evaluating the map once per step
--------------------------------
XLA does not deduplicate repeated matrix functions (see DESIGN.md), so the property memoizes:
under a JAX transformation (``nnx.jit``, ``nnx.grad``, ``nnx.vmap``, ...) a read whose inputs are
the *same* traced arrays as an earlier read in the *same* trace (raw values, the links' params
and state, the chain, and the mode) returns the earlier result. A model that reads
``self.kernel`` three times per ``nnx.jit`` step therefore puts the map in the jaxpr once. This
is a pure optimisation: the map is a pure function of exactly those inputs, so it changes no
value, and eager code is unaffected (every eager read recomputes, as in torch). It keys on
object identity and the current trace, so it never returns a tracer of a finished trace.

``cached()`` is torch's context manager, for eager code and for stateful maps: inside it each
parametrized value is computed once and reused, and a stateful parametrization advances its
state on the first read only (one power iteration per step, as torch). Unlike torch, the cache
never goes stale: assigning ``module.<name> = X``, appending a parametrization, or an optimizer
update of the raw values (a new array) gives a fresh value inside the context.

Stepping fast
-------------
``nnx.jit`` flattens and unflattens the whole module graph in Python on every call, and a
parametrized variable adds graph nodes: the ``parametrizations`` dict and the chain in the model,
their two path levels in each optimizer slot, and the raw value(s). The containers keep that
lean (``_compat.lean_flatten``: no NNX state node per container, their static fields in one
static element, and a link that owns no variables is not a node at all; ``vars(plist)`` still
holds it and it stays the same object across calls; with flax's newer graph internals, e.g.
0.12.8, see ``_compat.LEAN_GRAPH``, else NNX's own protocol). Measured on a 20-layer 32x32 MLP with
``WeightNorm`` kernels (``benchmarks/nnx_overhead.py --clock thread``, CPU): 200-250 us per
parametrized layer per step over a plain ``nnx.Linear``, 130-160 us over a hand-written layer
with the same Variables (``g``, ``v``); the lean containers cut about a quarter of it (992 -> 716
Python calls per layer per step). The chain itself runs only while tracing. Faster recipes skip
the traversal, and with them a parametrized layer costs what a hand-written layer with the same
Variables costs (``docs/recipes.md``, "NNX: the fastest stepping")::

    step = nnx.jit_partial(train_step, model, optimizer, graph=False)  # flax >= 0.12.5
    for x, y in batches:
        loss = step(x, y)                         # x0.16-0.18 of a plain model's nnx.jit step

``nnx.cached_partial(nnx.jit(train_step), model, optimizer)`` (x0.4-0.5), or split once and
``jax.jit`` a pure function of the state (``nnx.merge`` inside the step, return
``nnx.state(...)``; x0.23-0.24). Register parametrizations and create the optimizer *before*
any of them; after changing the graph (registering, removing, ``model.eval()``) build it again.

Train / eval
------------
Each ``ParametrizationList`` has a ``use_running_average`` flag, the attribute ``nnx.BatchNorm``
and ``nnx.SpectralNorm`` use, so ``model.train()`` / ``model.eval()`` / ``nnx.view(model,
use_running_average=...)`` toggle it. ``use_running_average=False`` (train): a read of a stateful
parametrization (spectral norm's power iteration, the test suite's counters) updates its state;
``True`` (eval): reads reuse the stored state and change nothing. At registration the flag is
taken from the host (its own ``use_running_average`` / ``deterministic`` attribute, else the
first submodule that has one, a sibling parametrization included), defaulting to train, as
torch's ``training=True``. NNX keeps no mode on layers such as ``nnx.Linear``, and a child cannot
see its parent, so registering on one after ``model.eval()`` needs
``register_parametrization(..., use_running_average=True)`` (or ``model.eval()`` again).

Differences from torch, on purpose
----------------------------------
* A failed registration or assignment leaves the module exactly as it was (torch may have
  overwritten the weight already, spec §2.B.4).
* Appending a parametrization checks it against the current value without advancing state;
  removing with ``leave_parametrized=True`` bakes the value a read in eval mode gives (torch runs
  one more power iteration first).
* ``transfer_parametrizations_and_params`` copies the raw values, params and state instead of
  sharing them (torch shares the objects, which its own spec lists as a bug).
* Assigning checks that right_inverse returns the stored shapes and dtypes (torch lets an
  identity right_inverse silently reshape the original).
* ``right_inverse`` that needs random numbers gets ``key`` from :func:`assign`; the property
  setter passes ``key=None`` (torch uses its global RNG).
* A parametrized module pickles and ``copy.deepcopy``-s (the pickle names the base class and the
  parametrized names; the generated class is rebuilt on load); torch refuses. For checkpoints,
  ``nnx.state`` (e.g. with orbax) is still the portable route.
* NaN / Inf is refused wherever arrays are stored: the value registered or assigned, and the raw
  values and link variables a right inverse or ``init_variables`` produces from it (a finite value
  the chain cannot represent, such as Cayley given a rotation by π): parametrax's one policy,
  applied by the core and documented in ``parametrax._finite``; traced
  values are not checked.

Package layout
--------------
* ``_containers``: the graph nodes (``ParametrizationDict`` / ``List`` / ``Link``,
  ``ParametrizationState``) and where to find them on a host module.
* ``_classes``: the generated ``Parametrized<Class>`` subclasses and their properties.
* ``_memo``: evaluating a chain on a module, the per-trace memo and ``cached()``.
* ``_register`` / ``_assign`` / ``_remove``: the operations.
* ``_util``: argument checks, messages, Variable copies, the train/eval inference.
* ``_compat``: every use of private Flax / JAX attributes, each commented (flax 0.12).
"""

from __future__ import annotations

from parametrax.nnx._assign import assign
from parametrax.nnx._containers import (
    ParametrizationDict,
    ParametrizationLink,
    ParametrizationList,
    ParametrizationState,
    is_parametrized,
    type_before_parametrizations,
)
from parametrax.nnx._memo import cached
from parametrax.nnx._register import register_parametrization
from parametrax.nnx._remove import (
    remove_parametrizations,
    transfer_parametrizations_and_params,
)

__all__ = [
    "register_parametrization",
    "remove_parametrizations",
    "is_parametrized",
    "type_before_parametrizations",
    "transfer_parametrizations_and_params",
    "cached",
    "assign",
    "ParametrizationState",
    "ParametrizationDict",
    "ParametrizationList",
    "ParametrizationLink",
]
