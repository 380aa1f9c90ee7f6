"""The parametrization contract, the loose-input converter and chain evaluation.

Nothing here knows about trees, Flax or NNX: this is the maths of one parametrized array.
Registration (:func:`chain_register`, :func:`chain_append`) and assignment
(:func:`chain_right_inverse`) apply parametrax's one NaN / Inf policy, documented in
:mod:`parametrax._finite`; every front goes through them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

import jax
import jax.numpy as jnp
import numpy as np

from parametrax import _finite
from parametrax._errors import (  # describe, name_of: re-exported for the fronts
    ParametrizationError,
    ParametrizationTypeError,
    RightInverseError,
    ShapeError,
    chain_repr,
    describe,
    name_of,
)

__all__ = [
    "Parametrization",
    "FunctionParametrization",
    "as_parametrization",
    "as_chain",
    "describe",
    "name_of",
    "empty_variables",
    "original_names",
]

Array = jax.Array
# Variables of one parametrization: {"params": {name: array}, "state": {name: array}}.
Variables = dict


def empty_variables() -> Variables:
    return {"params": {}, "state": {}}


if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:  # the marker only informs type checkers; no runtime dependency on typing_extensions

    def dataclass_transform(**_kwargs):
        return lambda cls: cls


_AUTO = "_parametrax_auto_dataclass"  # what the automatic dataclass step added to a class


class _ParametrizationMeta(type):
    """Lets an explicit ``@dataclasses.dataclass(...)`` on a subclass win over the automatic one.

    ``Parametrization.__init_subclass__`` turns every subclass into a frozen dataclass as soon
    as its body runs; a decorator written on the class runs after that. ``dataclasses`` starts
    by setting ``__dataclass_params__``: when it does so on a class that was made a dataclass
    automatically, the methods and field defaults of the automatic step are taken back first,
    so the decorator sees the class as written (``eq=False``, ``frozen=False``, ``kw_only``
    fields and ``default_factory`` then behave exactly as the decorator alone would make them).
    """

    def __setattr__(cls, name, value):
        if name == "__dataclass_params__" and _AUTO in cls.__dict__:
            added, saved = cls.__dict__[_AUTO]
            type.__delattr__(cls, _AUTO)
            for attr in added:
                type.__delattr__(cls, attr)
            for attr, original in saved.items():
                type.__setattr__(cls, attr, original)
        super().__setattr__(name, value)


def _forward_unimplemented(self: Parametrization, *raw: Array) -> Array:
    raise NotImplementedError(f"{type(self).__name__} does not implement forward")


def _apply_default(
    self: Parametrization, variables: Variables, *raw: Array, update_state: bool = False
) -> tuple[Array, dict]:
    del update_state
    return self.forward(*raw), variables["state"]


# Every subclass is made a frozen dataclass by ``__init_subclass__``: this tells type checkers so.
@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
class Parametrization(metaclass=_ParametrizationMeta):
    """A pure ``forward`` / ``right_inverse`` pair: the unit every parametrax API works with.

    The contract a subclass keeps:

    * ``forward(*raw)`` maps the raw (unconstrained) array(s) to the constrained one. Only the
      first parametrization of a chain may take several raw arrays (those its ``right_inverse``
      returned, stored as ``original0``, ``original1``, ...).
    * ``right_inverse(value)`` maps a constrained value back to raw array(s) with
      ``forward(right_inverse(value)) == value`` for every ``value`` on the constraint set (it need
      not be a true inverse elsewhere: it may project). It returns one array, or a tuple of arrays
      when ``forward`` takes several (a count ``forward`` cannot take is a clear error at
      registration). A parametrization without a right inverse simply does not override it;
      then initialisation treats it as the identity and assigning through it is an error
      (torch's behaviour). One with a right inverse for some inputs only raises
      ``NotImplementedError`` from its own ``right_inverse`` for the others (initialisation then
      treats it as the identity too); a ``NotImplementedError`` raised deeper, in code the right
      inverse calls, is an error (see :func:`chain_register`).
    * What is stored must be finite: see :mod:`parametrax._finite` (the NaN / Inf policy).
    * A chain ``[p0, p1, ..., pk]`` computes ``pk(...p1(p0(raw)))``: ``forward`` runs in list
      order, ``right_inverse`` in reverse order (as in torch; the opposite of ``distrax.Chain``).
    * Shape and dtype are kept: ``forward(x).shape == x.shape``. A forward that changes them is
      refused at registration unless ``unsafe=True`` is passed.
    * Matrix parametrizations act on the last two axes and broadcast over leading ones.
    * Subclasses are frozen, hashable dataclasses whose fields are plain hyperparameters (no
      arrays, no lambdas): equal configurations compare equal, so ``jax.jit`` never re-traces.
      Every subclass is made a frozen dataclass automatically when it is defined (as equinox
      does), so the decorator is optional; an explicit ``@dataclasses.dataclass(...)`` replaces
      the automatic one (then its options, e.g. ``frozen=False``, are the ones that hold). A
      family base declares the fields its members share once (``kw_only`` where members add
      required fields after them).

    Optional methods (declared here as ``None``; a subclass that has them defines them, and
    ``callable(getattr(p, name, None))`` tells whether it does):

    * ``in_manifold(x, atol=None) -> bool array``: whether ``x`` is on the constraint set, to
      ``atol`` (default :func:`parametrax._numerics.default_atol` of ``x.dtype``);
    * ``sample(key, shape, dtype=float32) -> array``: a random point of the set;
    * ``update_base(variables, *raw) -> (raw, state)``: dynamic trivialization (moves a base
      point kept as state to the current value; the value is unchanged).

    Extra variables (the one protocol both the linen and the NNX fronts consume). A
    parametrization that owns variables overrides three methods instead of the two above:

    * ``init_variables(key, value) -> {"params": {...}, "state": {...}}`` makes them at
      registration, from a PRNG key and the value this link produces at registration.
      ``params`` are learnable (trained with the raw values); ``state`` is not (a pruning mask,
      spectral norm's ``u``/``v``, a trivialization base point).
    * ``apply(variables, *raw, update_state=False) -> (value, new_state)`` is the forward pass.
      ``update_state`` is true when the caller asks for state updates (training); otherwise the
      returned state must equal ``variables["state"]``.
    * ``apply_inverse(variables, value, *, key) -> (raw, new_state)`` is the right inverse; it may
      move the state (torch's dynamic trivialization sets the base point here).

    The defaults of these three delegate to ``forward`` / ``right_inverse`` with no variables.
    """

    #: Whether an eager read (no tracer among the inputs) of a chain holding this link may run
    #: as one compiled call (see :func:`compiles_eagerly`): ``None`` (the default) means yes for
    #: parametrax's own classes and no for user classes; a subclass whose ``forward`` is pure
    #: JAX (no concrete-value reads, no Python side effects per call) may set ``True``.
    compile_eagerly: ClassVar[bool | None] = None
    in_manifold: ClassVar[Callable[..., Array] | None] = None
    sample: ClassVar[Callable[..., Array] | None] = None
    update_base: ClassVar[Callable[..., tuple] | None] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        before = dict(cls.__dict__)
        annotations = cls.__dict__.get("__annotations__", {})
        dataclasses.dataclass(frozen=True)(cls)
        added = tuple(
            n for n in cls.__dict__ if n not in before and not n.startswith("__dataclass_")
        )
        saved = {
            n: before[n]
            for n in annotations
            if n in before and cls.__dict__.get(n, _AUTO) is not before[n]
        }
        type.__setattr__(cls, _AUTO, (added, saved))

    # --- the simple protocol -------------------------------------------------------------------
    # ``forward(*raw)`` and ``apply(variables, *raw, update_state=False)``: each subclass fixes
    # how many raw arrays it takes, so they are typed as callables of any arity (as torch types
    # ``nn.Module.forward``); the defaults are the functions above.
    forward: ClassVar[Callable[..., Array]] = _forward_unimplemented

    def right_inverse(self, value: Array) -> Array | tuple[Array, ...]:
        raise NotImplementedError(f"{type(self).__name__} does not implement right_inverse")

    # --- the variables protocol ----------------------------------------------------------------
    def init_variables(self, key: Array, value: Array) -> Variables:
        del key, value
        return empty_variables()

    apply: ClassVar[Callable[..., tuple[Array, dict]]] = _apply_default

    def apply_inverse(self, variables: Variables, value: Array, *, key: Array | None):
        del key
        return self.right_inverse(value), variables["state"]

    # --- conveniences --------------------------------------------------------------------------
    @property
    def has_right_inverse(self) -> bool:
        cls = type(self)
        return (
            cls.right_inverse is not Parametrization.right_inverse
            or cls.apply_inverse is not Parametrization.apply_inverse
        )

    @property
    def has_variables(self) -> bool:
        return type(self).init_variables is not Parametrization.init_variables

    def batching_pays(self, shape: tuple) -> bool:
        """Whether evaluating this link once on a stack of raw values (each of ``shape``) was
        measured faster than evaluating it once per value: grouped evaluation
        (:mod:`parametrax.tree`) stacks a chain only when one of its links says so (and every
        link declares ``broadcasts = True``). Default: False."""
        del shape
        return False

    def __call__(self, *raw: Array) -> Array:
        """``p(x)`` is ``p.forward(x)`` for parametrizations without variables."""
        if self.has_variables:
            raise ParametrizationTypeError(
                f"{describe(self)} owns variables; call `p.apply(variables, x)` (variables from "
                "`p.init_variables(key, x)`) instead of `p(x)`."
            )
        return self.forward(*raw)


class FunctionParametrization(Parametrization):
    """A plain callable used as a forward-only parametrization (no right inverse).

    Made by :func:`as_parametrization` when a spec holds a function. It hashes like the function
    (by identity), so pass the same function object to avoid re-traces.
    """

    fn: Callable[..., Array]
    wraps_function: ClassVar[bool] = True  # messages name the function (see _errors.name_of)

    def forward(self, *raw: Array) -> Array:
        return self.fn(*raw)

    def __repr__(self) -> str:
        return f"FunctionParametrization({getattr(self.fn, '__qualname__', repr(self.fn))})"


def as_parametrization(obj: Any) -> Parametrization:
    """The one converter that accepts loose input: a Parametrization or a plain callable."""
    if isinstance(obj, Parametrization):
        try:
            hash(obj)
        except TypeError as e:
            raise ParametrizationTypeError(
                f"{describe(obj)} is not hashable ({e}); parametrizations must be frozen "
                "dataclasses whose fields are plain hyperparameters (no arrays, lists or dicts), "
                "otherwise jax.jit cannot cache on them. Use tuples instead of lists, and "
                "`@dataclasses.dataclass(frozen=True)`."
            ) from None
        return obj
    if inspect.isclass(obj) and issubclass(obj, Parametrization):
        raise ParametrizationTypeError(
            f"got the class `{obj.__name__}` where a parametrization instance was expected; "
            f"write `{obj.__name__}()` instead of `{obj.__name__}`."
        )
    if inspect.isclass(obj):
        # Calling a class with an array constructs an object (a flax module, say), not an array.
        raise ParametrizationTypeError(
            f"got the class `{obj.__name__}` where a parametrization was expected (a "
            "Parametrization instance such as `Skew()`, or a function of arrays); a class called "
            "on an array constructs an object, not the constrained array."
        )
    if callable(obj):
        try:
            hash(obj)
        except TypeError:
            raise ParametrizationTypeError(
                f"the callable {obj!r} is not hashable; wrap it in a frozen Parametrization "
                "dataclass."
            ) from None
        return FunctionParametrization(obj)
    raise ParametrizationTypeError(
        f"expected a Parametrization or a callable, got {type(obj).__name__} {obj!r}."
    )


def as_chain(obj: Any) -> tuple[Parametrization, ...]:
    """Normalises ``p`` or ``[p0, p1, ...]`` to a non-empty tuple of parametrizations."""
    if isinstance(obj, (list, tuple)):
        if not obj:
            raise ParametrizationError(
                "a chain needs one or more parametrizations; got an empty list."
            )
        return tuple(as_parametrization(p) for p in obj)
    return (as_parametrization(obj),)


def original_names(n: int | None) -> tuple[str, ...]:
    """``("original",)`` for a single raw array (n is None), else ``original0 .. original{n-1}``."""
    if n is None:
        return ("original",)
    return tuple(f"original{i}" for i in range(n))


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, jnp.ndarray)) or (
        hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, (tuple, list))
    )


def _spec_of(x: Any) -> str:
    return f"shape {tuple(x.shape)} and dtype {jnp.dtype(x.dtype).name}"


def _split(key: Array | None, n: int) -> list[Array | None]:
    if key is None:
        return [None] * n
    return list(jax.random.split(key, n))


def _as_raw_tuple(raw: Any, link: Parametrization, first: bool) -> tuple[tuple[Array, ...], bool]:
    """Returns (arrays, is_sequence); validates what a right_inverse returned."""
    if _is_array(raw):
        return (raw,), False
    if isinstance(raw, Sequence) and not isinstance(raw, str):
        if not first:
            raise RightInverseError(
                f"{describe(link)}.right_inverse returned a {type(raw).__name__} of "
                f"{len(raw)}; only the first parametrization of a chain may return several "
                "arrays, the others must return one array."
            )
        if len(raw) == 0:
            raise RightInverseError(
                f"{describe(link)}.right_inverse returned an empty {type(raw).__name__}; "
                "expected an array or a non-empty sequence of arrays."
            )
        for i, r in enumerate(raw):
            if not _is_array(r):
                raise RightInverseError(
                    f"{describe(link)}.right_inverse must return an array or a sequence of "
                    f"arrays; element {i} of the sequence is a {type(r).__name__}."
                )
        return tuple(raw), True
    raise RightInverseError(
        f"{describe(link)}.right_inverse must return an array or a sequence of arrays "
        f"(list, tuple); got {type(raw).__name__}."
    )


def _make_variables(link: Parametrization, key: Array | None, value: Array) -> tuple[dict, dict]:
    """``(params, state)`` of ``link`` made at registration from ``key`` and the value it sees."""
    if not link.has_variables:
        return {}, {}
    if key is None:
        raise ParametrizationError(
            f"{describe(link)} owns variables and needs a PRNG key to initialise them; pass `key=`."
        )
    v = link.init_variables(key, value)
    return dict(v["params"]), dict(v["state"])


def chain_register(
    chain: tuple[Parametrization, ...],
    value: Array,
    *,
    key: Array | None,
    unsafe: bool = False,
    update_state: bool = False,
) -> tuple[dict[str, Array], list[dict], list[dict]]:
    """Torch's registration: ``right_inverse`` of the initial value, in reverse chain order.

    Returns ``(originals, link_params, link_state)`` where ``originals`` maps ``original`` (or
    ``original0``, ...) to arrays and the two lists hold each link's variables in chain order.
    A link without a right inverse counts as the identity here (torch's behaviour at
    registration; assignment refuses it): one whose ``has_right_inverse`` is false, or whose own
    ``right_inverse`` / ``apply_inverse`` raises ``NotImplementedError`` itself (torch's way of
    saying "none for this input", e.g. ``Orthogonal(map=None)`` resolving to the matrix
    exponential). A ``NotImplementedError`` raised deeper, inside the code a right inverse
    calls (LAPACK's "Unsupported dtype", a bug), is not swallowed: it becomes a
    :class:`RightInverseError` naming the link, with the original as its cause.

    The NaN / Inf policy (:mod:`parametrax._finite`) is applied: the value, each link's variables
    and right-inverse output, and (unless ``unsafe``) the value computed from the stored raw
    values must be finite when concrete.
    """
    value = jnp.asarray(value)
    _finite.check_value(value, "the value to register")
    n = len(chain)
    init_keys = _split(key, 2 * n)
    params: list[dict] = [{}] * n
    state: list[dict] = [{}] * n
    current: Any = value
    is_seq = False
    for i in reversed(range(n)):
        link = chain[i]
        params[i], state[i] = _make_variables(link, init_keys[i], current)
        _finite.check_link(chain, i, params=params[i], state=state[i], producer="init_variables")
        raw = _register_inverse(link, params[i], state[i], current, init_keys[n + i])
        if raw is _NO_INVERSE:
            raw = current
        else:
            raw, st = raw
            state[i] = dict(st)
        raws, is_seq = _as_raw_tuple(raw, link, first=(i == 0))
        current = raws if is_seq else raws[0]
        outputs = _named(raws, is_seq) if i == 0 else raws
        _finite.check_link(chain, i, outputs=outputs, state=state[i])
    raws = current if is_seq else (current,)
    if not is_seq:
        (r,) = raws
        if jnp.dtype(r.dtype) != jnp.dtype(value.dtype):
            raise ShapeError(
                "when right_inverse returns one array it may not change the dtype: the initial "
                f"value has dtype {jnp.dtype(value.dtype).name}, right_inverse returned "
                f"{jnp.dtype(r.dtype).name}."
            )
    _check_arity(chain[0], raws, params[0], state[0])
    originals = dict(zip(original_names(len(raws) if is_seq else None), raws))
    if not unsafe:
        out, _ = _forward_ops(chain, originals, params, state, update_state=False)
        if not _is_array(out):
            raise ShapeError(
                f"a parametrization must return an array; the chain returned {type(out).__name__}."
            )
        if tuple(out.shape) != tuple(value.shape) or jnp.dtype(out.dtype) != jnp.dtype(value.dtype):
            raise ShapeError(
                "registering a parametrization may not change the shape or dtype of the "
                f"variable unless `unsafe=True`: the variable has {_spec_of(value)}, the "
                f"parametrized value has {_spec_of(out)}."
            )
        found = _finite.nonfinite(out)
        if found is not None:
            raise _finite.produced_error(
                chain,
                [f"the chain maps the raw values it stored back to a value with {found}"],
            )
    if update_state:
        _, state = _forward_ops(chain, originals, params, state, update_state=True)
    return originals, params, state


_NO_INVERSE = object()


def _named(raws: tuple, is_seq: bool) -> dict[str, Any]:
    return dict(zip(original_names(len(raws) if is_seq else None), raws))


def _register_inverse(link: Parametrization, params: dict, state: dict, value: Any, key: Any):
    """``link.apply_inverse`` at registration: ``(raw, state)``, or ``_NO_INVERSE`` when the link
    has no right inverse (see :func:`chain_register` for the rule)."""
    try:
        return link.apply_inverse({"params": params, "state": state}, value, key=key)
    except NotImplementedError as e:
        if not link.has_right_inverse or _raised_by_own_inverse(link, e):
            return _NO_INVERSE
        raise RightInverseError(
            f"the right inverse of {describe(link)} failed with NotImplementedError: {e} "
            f"(on a value of {_spec_of(value)}). {describe(link)} has a right inverse "
            "(`has_right_inverse` is true) and the error was raised inside the code it calls, "
            "not by the link itself, so it is not taken as 'no right inverse' (which would store "
            "the value itself as the raw value): e.g. a LAPACK routine without this dtype."
        ) from e


def _raised_by_own_inverse(link: Parametrization, err: BaseException) -> bool:
    """Whether ``err`` was raised by a ``right_inverse`` / ``apply_inverse`` method of ``link``'s
    class itself (its innermost frame is one of them), not by code they call."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    codes = set()
    for klass in type(link).__mro__:
        for name in ("right_inverse", "apply_inverse"):
            fn = klass.__dict__.get(name)
            fn = inspect.unwrap(fn) if callable(fn) else None
            code = getattr(fn, "__code__", None)
            if code is not None and klass is not Parametrization:
                codes.add(code)
    return tb.tb_frame.f_code in codes


def _check_arity(link: Parametrization, raws: tuple, params: dict, state: dict) -> None:
    """Refuses raw arrays the first link's forward cannot take (a right_inverse returning two
    arrays for a one-array forward, or one for two), before calling it."""
    fn: Callable[..., Any]
    if link.has_variables or type(link).apply is not Parametrization.apply:
        fn, args = link.apply, ({"params": params, "state": state}, *raws)
        what = "apply(variables, *raw)"
    elif getattr(type(link), "wraps_function", False):
        fn, args, what = cast(FunctionParametrization, link).fn, raws, "the function"
    else:
        fn, args, what = link.forward, raws, "forward"
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return
    try:
        sig.bind(*args)
    except TypeError:
        pos = [
            p
            for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if what.startswith("apply"):
            pos = pos[1:]
        takes = f"{len(pos)} raw array{'s' if len(pos) != 1 else ''}"
        raise RightInverseError(
            f"{describe(link)}.right_inverse returned {len(raws)} "
            f"array{'s' if len(raws) != 1 else ''}, but its {what} takes {takes} "
            f"(signature {sig}): right_inverse must return one array per raw argument of "
            "forward (a tuple only when forward takes several)."
        ) from None


def chain_forward(
    chain: tuple[Parametrization, ...],
    originals: dict[str, Array],
    params: Sequence[dict],
    state: Sequence[dict],
    *,
    update_state: bool = False,
) -> tuple[Array, list[dict]]:
    """Evaluates the chain once; returns ``(value, new_link_state)``.

    Every front reads values through here. An eager read (no input is a tracer) of a chain that
    compiles eagerly (:func:`compiles_eagerly`) runs as one compiled call of the chain, cached on
    the chain and ``update_state`` and the inputs' shapes and dtypes, instead of op by op: about
    as fast as the jitted map, with the same values. Traced inputs (inside ``jax.jit``,
    ``jax.grad``, ``nnx.jit``, ...) are evaluated op by op into the enclosing trace, as before.
    See :func:`_forward_compiled` for what is kept identical (errors, state identity).
    """
    if _EAGER_COMPILE[0] and type(update_state) is bool:
        compiled = _compiled_for(chain, update_state)
        if compiled is not None:
            inputs = _eager_inputs(originals, params, state)
            if inputs is not None:
                return _forward_compiled(chain, update_state, compiled, *inputs)
    return _forward_ops(chain, originals, params, state, update_state=update_state)


# ------------------------------------------------------------------------------------------------
# Eager reads: one compiled call of the chain
# ------------------------------------------------------------------------------------------------
# An eager read costs what the jitted map costs (one C++ jit dispatch) plus the Python here, so
# the per-read Python is kept to: one dict lookup on (chain, update_state) giving a jitted
# callable built for that chain (no static arguments for jit to hash), one pass over the input
# dicts checking each array's type and sharding, and rebuilding the state dicts.
#
# Chains (with their update_state flag) whose compiled evaluation failed but whose op-by-op one
# succeeded (a link reading concrete values, say): evaluated op by op from then on. Chains are
# frozen dataclasses of hyperparameters, so this holds no model alive.
_OPS_ONLY: set = set()
_EAGER_COMPILE = [True]  # the switch `_op_by_op()` turns off (benchmarks, tests)
# (chain, update_state) -> the chain's jitted evaluation, or None when it is evaluated op by op
# (a link that does not compile eagerly, or one in `_OPS_ONLY`). Bounded: past `_COMPILED_MAX`
# chains the oldest entry is dropped (with its compiled executables), as jax.jit's own cache of
# static arguments is bounded.
_COMPILED: dict = {}
_COMPILED_MAX = 512


@contextlib.contextmanager
def _op_by_op():
    """Within it every eager read is evaluated op by op (the path before eager compilation):
    what benchmarks and tests compare the compiled path with."""
    before = _EAGER_COMPILE[0]
    _EAGER_COMPILE[0] = False
    try:
        yield
    finally:
        _EAGER_COMPILE[0] = before


def compiles_eagerly(link: Parametrization) -> bool:
    """Whether an eager read of a chain holding ``link`` may run as one compiled call.

    A class says so with a ``compile_eagerly`` class attribute (``True`` / ``False``). Without
    one, parametrax's own parametrizations do and user code does not: a user's ``forward`` may
    read concrete values (``float(x)``, NumPy), or have Python side effects that a compiled call
    would run once per compilation instead of once per read (torch's tutorial counts its
    evaluations that way). A plain function used as a parametrization never does. Read once per
    chain, at its first eager read (:func:`_compiled_for`).
    """
    declared = getattr(type(link), "compile_eagerly", None)
    if isinstance(declared, bool):
        return declared
    if getattr(type(link), "wraps_function", False):
        return False
    return type(link).__module__.startswith("parametrax.")


def _compiled_for(chain: tuple, update_state: bool) -> Callable | None:
    """The jitted evaluation of ``chain`` (built on first use), or None: op by op."""
    key = (chain, update_state)
    try:
        return _COMPILED[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable chain cannot be cached: op by op
        return None
    compiled = None
    if key not in _OPS_ONLY and all(compiles_eagerly(link) for link in chain):
        compiled = jax.jit(functools.partial(_traced_chain, chain, update_state))
    while len(_COMPILED) >= _COMPILED_MAX:  # drop the oldest
        _COMPILED.pop(next(iter(_COMPILED)), None)
    _COMPILED[key] = compiled
    return compiled


def _compiled_cache_size() -> int:
    """How many executables the compiled eager reads hold (tests: no retrace per read)."""
    return sum(f._cache_size() for f in _COMPILED.values() if f is not None)


_SINGLE_DEVICE = jax.sharding.SingleDeviceSharding
_ARRAY_IMPL = type(jnp.zeros(()))  # JAX's concrete array class


def _eager_leaf(x: Any) -> bool:
    """Whether ``x`` is a concrete array a compiled call may take (a JAX array that is not a
    tracer, or a NumPy array) and is not explicitly sharded (the op-by-op path gathers those)."""
    if isinstance(x, jax.core.Tracer):
        return False
    if type(getattr(x, "sharding", None)) is _SINGLE_DEVICE:  # the common case, checked fast
        return True
    if isinstance(x, np.ndarray):
        return True
    return isinstance(x, jax.Array) and _explicit_sharding(x) is None


def _eager_dict(d: Mapping) -> dict | None:
    """``d`` as a plain dict when every leaf in it is an :func:`_eager_leaf`, else None."""
    if type(d) is not dict:
        d = dict(d)
    for x in d.values():
        # the common case (a concrete single-device JAX array), checked without a tree walk
        if type(x) is _ARRAY_IMPL and type(x.sharding) is _SINGLE_DEVICE:
            continue
        # a tracer (a traced read), a non-array leaf (jit would turn it into an array) or an
        # explicitly sharded array: op by op
        if not all(_eager_leaf(leaf) for leaf in jax.tree.leaves(x)):
            return None
    return d


def _eager_inputs(originals, params, state) -> tuple[dict, list, list] | None:
    """The inputs of a compiled read (plain dicts and lists), or None: evaluate op by op."""
    if not originals:
        return None
    o = _eager_dict(originals)
    ps = [_eager_dict(p) for p in params]
    ss = [_eager_dict(s) for s in state]
    if o is None or None in ps or None in ss:
        return None
    return o, ps, ss


def _traced_chain(chain, update_state, originals, params, state):
    """The chain, traced once per (chain, update_state, input shapes and dtypes).

    An output that is an input unchanged (a link returning its state as given, the usual case
    without ``update_state``) comes back as ``None`` (an empty pytree), so that the caller can
    return the very input array, as op-by-op evaluation does (callers compare state by identity
    to skip writes)."""
    value: Array | None
    value, new_state = _forward_ops(chain, originals, params, state, update_state=update_state)
    value = None if value is originals.get(_first_name(originals)) else value
    new_state = [
        {k: (None if k in s_in and v is s_in[k] else v) for k, v in s_out.items()}
        for s_in, s_out in zip(state, new_state)
    ]
    return value, new_state


def _forward_compiled(chain, update_state, compiled, originals, params, state):
    """:func:`chain_forward` as one compiled call (``compiled``, from :func:`_compiled_for`);
    falls back to op-by-op evaluation when the compiled call fails.

    Errors: a compiled call that raises (a link's check on shapes or on the variables it was
    given, raised while tracing, or a link that needs concrete values) is evaluated again op by
    op, so the error raised is exactly today's (type, message, cause). When the op-by-op
    evaluation succeeds instead, the chain is evaluated op by op from then on (it is not retried
    each read). Stored values are never checked on the hot path (:mod:`parametrax._finite`), so
    nothing concrete is lost by compiling.

    State identity: a state array the chain hands back unchanged is the very input array, as op
    by op. The state dicts keep the input's key order (jit hands dicts back with sorted keys),
    which is op by op's order when a link keeps its keys; a key a link adds comes after.
    """
    try:
        value, out_state = compiled(originals, params, state)
    except Exception:
        result = _forward_ops(chain, originals, params, state, update_state=update_state)
        _OPS_ONLY.add((chain, update_state))
        _COMPILED[(chain, update_state)] = None
        return result
    if value is None:
        value = originals[_first_name(originals)]
    new_state: list[dict] = []
    for s_in, s_out in zip(state, out_state):
        if not s_out:
            new_state.append({})
            continue
        if s_out.keys() == s_in.keys():  # the common case: the same keys, in the input's order
            new_state.append({k: (s_in[k] if s_out[k] is None else s_out[k]) for k in s_in})
            continue
        order = [k for k in s_in if k in s_out] + [k for k in s_out if k not in s_in]
        new_state.append(
            {k: (s_in[k] if s_out[k] is None and k in s_in else s_out[k]) for k in order}
        )
    return value, new_state


def _first_name(originals: Mapping) -> str:
    return "original" if "original" in originals else "original0"


def _forward_ops(
    chain: tuple[Parametrization, ...],
    originals: dict[str, Array],
    params: Sequence[dict],
    state: Sequence[dict],
    *,
    update_state: bool = False,
) -> tuple[Array, list[dict]]:
    """Evaluates the chain op by op; returns ``(value, new_link_state)``.

    Under JAX's explicit sharding mode (arrays whose type names mesh axes), the raw arrays and
    link variables are gathered before the chain and the value is resharded like the first raw
    array after it: matrix maps mix rows and columns (``A - Aᵀ``, a solve, ``expm``), which
    explicitly sharded types refuse. Under the default (auto) mode XLA chooses the collectives.
    A link state handed back as given is the caller's own array, not its gathered copy (callers
    compare state by identity: the linen front to see whether it advanced).
    """
    if "original" in originals:
        args: tuple = (originals["original"],)
    else:
        args = tuple(originals[f"original{i}"] for i in range(len(originals)))
    out_sharding = _explicit_sharding(args[0]) if args else None
    given = None
    if any(_explicit_sharding(a) is not None for a in jax.tree.leaves((args, params, state))):
        given = list(state)
        args, params, state = jax.tree.map(_gather, (args, list(params), list(state)))
    new_state = []
    x: Any = None
    for i, link in enumerate(chain):
        variables = {"params": params[i], "state": state[i]}
        with _missing_variables(link, i, variables):
            if i == 0:
                x, st = link.apply(variables, *args, update_state=update_state)
            else:
                x, st = link.apply(variables, x, update_state=update_state)
        if given is not None:
            kept = {k for k, v in st.items() if k in state[i] and v is state[i][k]}
            st = {k: given[i][k] if k in kept else v for k, v in st.items()}
        new_state.append(dict(st))
    if out_sharding is not None and _is_array(x) and tuple(x.shape) == tuple(args[0].shape):
        x = jax.sharding.reshard(x, out_sharding)
    return x, new_state


def _explicit_sharding(x: Any) -> Any:
    """``x``'s sharding when its type shards axes explicitly (JAX's explicit mode), else None."""
    typeof = getattr(jax, "typeof", None)
    if typeof is None or not hasattr(jax.sharding, "reshard") or not _is_array(x):
        return None
    try:
        sharding = typeof(x).sharding
    except Exception:  # not a JAX value (a NumPy array): nothing explicit about it
        return None
    spec = getattr(sharding, "spec", None)
    mesh = getattr(sharding, "mesh", None)
    if spec is None or mesh is None or getattr(mesh, "empty", True):
        return None
    return sharding if any(axis is not None for axis in spec) else None


def _gather(x: Any) -> Any:
    sharding = _explicit_sharding(x)
    if sharding is None:
        return x
    replicated = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
    return jax.sharding.reshard(x, replicated)


@contextlib.contextmanager
def _missing_variables(link: Parametrization, i: int, variables: Variables):
    """Turns the KeyError of a link reading a variable it was not given into a clear error.

    It happens when the state made at registration is not passed back (to a forward, an
    assignment or ``update_base``).
    """
    try:
        yield
    except KeyError as e:
        if not link.has_variables:
            raise
        got = {k: sorted(v) for k, v in variables.items()}
        raise ParametrizationError(
            f"{describe(link)} (link {i} of the chain) reads its variable {e}, which it was not "
            f"given: it received params {got['params']} and state {got['state']}. Pass back the "
            "state made at registration (the `state` returned by `register`, or the linen "
            "`parametrization_state` collection)."
        ) from None


def chain_update_base(
    chain: tuple[Parametrization, ...],
    originals: dict[str, Array],
    params: Sequence[dict],
    state: Sequence[dict],
) -> tuple[dict[str, Array], list[dict]]:
    """Dynamic trivialization: ``chain[0].update_base(variables, *raw)``, the stored raw values
    and link state after moving the first link's base point to the current value.

    A link state not passed back (the state made at registration) is a clear error naming the
    missing entry, as in :func:`chain_forward`.
    """
    link = chain[0]
    if link.update_base is None:  # the fronts only call this for a link that has update_base
        raise ParametrizationTypeError(f"{describe(link)} has no update_base.")
    variables = {"params": params[0], "state": state[0]}
    if "original" in originals:
        args: tuple = (originals["original"],)
    else:
        args = tuple(originals[f"original{i}"] for i in range(len(originals)))
    with _missing_variables(link, 0, variables):
        out, st = link.update_base(variables, *args)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    names = original_names(len(outs) if isinstance(out, (tuple, list)) else None)
    if set(names) != set(originals):
        raise RightInverseError(
            f"{describe(link)}.update_base returned {len(outs)} array(s) ({', '.join(names)}) "
            f"but the variable stores {len(originals)} ({', '.join(sorted(originals))})."
        )
    new_state = [dict(s) for s in state]
    new_state[0] = dict(st)
    return dict(zip(names, outs)), new_state


def chain_right_inverse(
    chain: tuple[Parametrization, ...],
    value: Array,
    originals: dict[str, Array],
    params: Sequence[dict],
    state: Sequence[dict],
    *,
    key: Array | None,
) -> tuple[dict[str, Array], list[dict]]:
    """Torch's ``module.weight = value``: right_inverse in reverse order, checked against the
    stored originals (same names, shapes and dtypes: stricter than torch, which lets an identity
    right_inverse silently reshape the original), and by the NaN / Inf policy
    (:mod:`parametrax._finite`: the value, and each link's output and state)."""
    for link in chain:
        if not link.has_right_inverse:
            raise RightInverseError(
                f"cannot assign through the chain {chain_repr(chain)}: "
                f"{describe(link)} does not implement right_inverse."
            )
    _finite.check_value(value, "the value assigned")
    n = len(chain)
    keys = _split(key, n)
    new_state = [dict(s) for s in state]
    current: Any = value
    is_seq = False
    for i in reversed(range(n)):
        link = chain[i]
        variables = {"params": params[i], "state": new_state[i]}
        with _missing_variables(link, i, variables):
            raw, st = link.apply_inverse(variables, current, key=keys[i])
        new_state[i] = dict(st)
        raws, is_seq = _as_raw_tuple(raw, link, first=(i == 0))
        current = raws if is_seq else raws[0]
        outputs = _named(raws, is_seq) if i == 0 else raws
        _finite.check_link(chain, i, outputs=outputs, state=new_state[i])
    raws = current if is_seq else (current,)
    names = original_names(len(raws) if is_seq else None)
    if set(names) != set(originals):
        raise RightInverseError(
            f"right_inverse returned {len(raws)} array(s) ({', '.join(names)}) but the variable "
            f"stores {len(originals)} ({', '.join(sorted(originals))})."
        )
    out = {}
    for name, r in zip(names, raws):
        old = originals[name]
        if tuple(r.shape) != tuple(old.shape) or jnp.dtype(r.dtype) != jnp.dtype(old.dtype):
            raise RightInverseError(
                f"right_inverse returned {_spec_of(r)} for `{name}`, which has {_spec_of(old)}."
            )
        out[name] = r
    return out, new_state


def chain_append(
    chain: tuple[Parametrization, ...],
    value: Array,
    *,
    key: Array | None,
    unsafe: bool = False,
    offset: int = 0,
) -> tuple[list[dict], list[dict]]:
    """Torch's repeated registration: appends ``chain`` to a chain whose value is ``value``.

    The raw values stay as they are (the new value is ``chain(value)``), so nothing is inverted;
    each new link gets its variables from ``init_variables(key, its input)`` and, unless
    ``unsafe``, is checked on the current value: its forward, and its right inverse if it has
    one, must keep the shape and dtype (torch §2.A). Returns ``(link_params, link_state)`` of
    the new links, in chain order. Nothing is changed: the caller stores the links. The new
    links' variables must be finite (:mod:`parametrax._finite`); ``offset`` (the length of the
    stored chain) numbers them in messages.
    """
    n = len(chain)
    keys = _split(key, 2 * n)
    params: list[dict] = []
    state: list[dict] = []
    y: Any = value
    for j, link in enumerate(chain):
        link_params, link_state = _make_variables(link, keys[j], y)
        variables = {"params": link_params, "state": link_state}
        _finite.check_link(
            chain,
            j,
            params=variables["params"],
            state=variables["state"],
            producer="init_variables",
            offset=offset,
        )
        params.append(variables["params"])
        state.append(variables["state"])
        if unsafe and not any(q.has_variables for q in chain[j + 1 :]):
            continue  # later links need no input to initialise: nothing left to compute
        try:
            x, _ = link.apply(variables, y, update_state=False)
        except TypeError as e:
            raise ParametrizationTypeError(
                f"calling {describe(link)} on the current value ({_spec_of(y)}) raised "
                f"TypeError: {e}. Only the first parametrization of a chain may take several "
                "raw arrays."
            ) from e
        if not unsafe:
            _check_appended(link, y, x, "returned")
            if link.has_right_inverse:
                z = _register_inverse(link, variables["params"], variables["state"], x, keys[n + j])
                z = None if z is _NO_INVERSE else z[0]
                if z is not None:
                    (z,), _ = _as_raw_tuple(z, link, first=False)
                    _check_appended(link, y, z, "right_inverse returned")
        y = x
    return params, state


def _check_appended(link: Parametrization, before: Any, after: Any, verb: str) -> None:
    err = RightInverseError if verb.startswith("right_inverse") else ShapeError
    if not _is_array(after):
        raise err(
            f"a parametrization must return an array; {describe(link)} {verb} "
            f"{type(after).__name__}."
        )
    if tuple(after.shape) != tuple(before.shape) or jnp.dtype(after.dtype) != jnp.dtype(
        before.dtype
    ):
        raise err(
            f"appending {describe(link)} may not change the shape or dtype unless "
            f"`unsafe=True`: the current value has {_spec_of(before)}, {describe(link)} {verb} "
            f"{_spec_of(after)}."
        )
