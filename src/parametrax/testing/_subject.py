"""What the named checks share: a parametrization prepared for checking (:class:`Subject`), its
tolerances and comparisons, and the traced quantities the checks compare.

:func:`prepare` draws everything once from one key (the starting value, the variables, a random
raw value, a batch of raw values); :meth:`Subject.compute` evaluates the quantities a check needs
in one ``jax.jit`` (one compilation for all the checks of :func:`check_parametrization`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from parametrax._core import Parametrization, as_parametrization, describe
from parametrax._errors import ParametrizationError
from parametrax._numerics import default_atol  # the one tolerance table, shared with in_manifold

__all__ = ["Subject", "prepare", "default_atol", "BATCH", "NOISE"]

#: Size of the batch the vmap checks stack.
BATCH = 3
#: Standard deviation of the noise that moves the starting raw value to a generic one.
NOISE = 0.5


# ------------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------------
def twin(p):
    """A new instance with the same hyperparameters (``dataclasses.replace``; else a copy)."""
    if dataclasses.is_dataclass(p) and not isinstance(p, type):
        try:
            return dataclasses.replace(p)
        except (TypeError, ValueError):
            pass
    return copy.copy(p)


def as_tuple(raw) -> tuple:
    if isinstance(raw, (tuple, list)):
        return tuple(raw)
    return (raw,)


def fwd(p: Parametrization, variables, raws):
    out, _ = p.apply(variables, *raws, update_state=False)
    return out


def inv(p: Parametrization, variables, value, key):
    raw, state = p.apply_inverse(variables, value, key=key)
    return as_tuple(raw), dict(state)


def with_state(variables, state):
    return {"params": variables["params"], "state": state}


def _plain(variables):
    return {"params": dict(variables["params"]), "state": dict(variables["state"])}


def _rng(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded from ``key``: the kit's own noise costs no XLA compilation."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        data = jax.random.key_data(key)
    else:
        data = key
    return np.random.default_rng([int(v) for v in np.asarray(data).ravel()])


def _normal(rng: np.random.Generator, shape, dtype) -> jax.Array:
    return jnp.asarray(rng.standard_normal(tuple(shape)).astype(dtype))


def _is_inexact(r) -> bool:
    return jnp.issubdtype(r.dtype, jnp.inexact)


# ------------------------------------------------------------------------------------------------
# The subject
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class Subject:
    """A parametrization prepared for the named checks (made by :func:`prepare`).

    Attributes:
      p: the parametrization.
      shape, dtype, atol: the shape and dtype of the constrained value; the tolerance.
      broadcasts: whether ``p`` acts on trailing axes (so a stacked raw is a batch).
      raw_domain: the projection onto the valid raw values, or None (every raw is valid).
      value: the starting point on the set (the sample or the value given), or None.
      value_source: ``"sample"``, ``"value"`` or None.
      start_from_value: whether the starting raw is ``right_inverse(value)``.
      variables: ``{"params": ..., "state": ...}`` (after the right inverse of ``value``).
      raws0: the starting raw arrays; raws: a generic raw (``raws0`` plus noise, in the domain);
      raws_b: a batch of ``BATCH`` generic raws stacked on a new leading axis.
      cot: a random cotangent for the gradient check; key: the key of the right inverse.
    """

    p: Parametrization
    shape: tuple
    dtype: Any
    atol: float
    broadcasts: bool
    raw_domain: Callable | None
    membership: Callable | None
    traceable_membership: bool
    value: Any
    value_source: str | None
    value_flag: Any
    start_from_value: bool
    variables: dict
    raws0: tuple
    raws: tuple
    raws_b: tuple
    cot: Any
    key: Any
    name: str = ""
    traces: list = dataclasses.field(default_factory=list)
    _cache: dict = dataclasses.field(default_factory=dict)
    _eager: Any = None
    _jitted: Any = None

    def __post_init__(self):
        self.name = describe(self.p)
        self._jitted = jax.jit(self._evaluate, static_argnums=(0, 1))

    # --- what p offers -------------------------------------------------------------------------
    @property
    def has_inverse(self) -> bool:
        return self.p.has_right_inverse

    @property
    def has_base(self) -> bool:
        return callable(getattr(self.p, "update_base", None))

    @property
    def has_membership(self) -> bool:
        return self.membership is not None

    @property
    def stateful(self) -> bool:
        """Whether p keeps state (``update_state`` may change it)."""
        return bool(jax.tree.leaves(self.variables["state"]))

    @property
    def inexact(self) -> list[int]:
        return [i for i, r in enumerate(self.raws) if _is_inexact(r)]

    # --- failures and comparisons --------------------------------------------------------------
    def fail(self, check: str, msg: str):
        raise AssertionError(
            f"check_parametrization({self.name}, shape={self.shape}, dtype={self.dtype.name}) "
            f"failed the check `{check}`: {msg}"
        )

    def close(self, check: str, got, want, what: str):
        got, want = np.asarray(got), np.asarray(want)
        if got.shape != want.shape:
            try:
                want = np.broadcast_to(want, got.shape)
            except ValueError:
                self.fail(check, f"{what}: shape {got.shape} where {want.shape} was expected.")
        if not np.all(np.isfinite(got)) and np.all(np.isfinite(want)):
            self.fail(check, f"{what} contains NaN or Inf.")
        if got.size == 0:
            return
        err = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
        scale = max(1.0, float(np.max(np.abs(want))))
        if not err <= self.atol * scale:
            self.fail(
                check,
                f"{what}: max abs difference {err:.3g} > atol {self.atol:g} x "
                f"max(1, max|expected|) = {self.atol * scale:.3g}.",
            )

    def tree_close(self, check: str, got, want, what: str):
        gt: Any  # a PyTreeDef: jax's annotation of it does not resolve for type checkers
        wt: Any
        gl, gt = jax.tree.flatten(got)
        wl, wt = jax.tree.flatten(want)
        if gt != wt:
            self.fail(check, f"{what}: tree structure {gt} where {wt} was expected.")
        for i, (g, w) in enumerate(zip(gl, wl, strict=True)):
            self.close(check, g, w, f"{what} (leaf {i})")

    def member_flag(self, y):
        """``all(in_manifold(y))`` as a traced boolean, or None (no membership test, or one that
        is not traceable: it then runs eagerly in :meth:`require_member`)."""
        if self.membership is None or not self.traceable_membership:
            return None
        return jnp.all(self.membership(y, self.atol))

    def require_member(self, check: str, flag, y, what: str):
        if self.membership is None:
            return
        ok = flag if flag is not None else self.membership(y, self.atol)
        if not bool(np.all(np.asarray(ok))):
            self.fail(check, f"in_manifold({what}, atol={self.atol:g}) is false.")

    # --- the eager forward ---------------------------------------------------------------------
    def eager(self):
        """``forward(raws)`` evaluated eagerly (no jit), computed once."""
        if self._eager is None:
            self._eager = fwd(self.p, self.variables, self.raws)
        return self._eager

    # --- the traced quantities -----------------------------------------------------------------
    def _evaluate(self, p_, names, variables, raws, cot, key, raws_b):
        self.traces.append(names)
        return {n: QUANTITIES[n](self, p_, variables, raws, cot, key, raws_b) for n in names}

    def _args(self, at: str):
        raws = self.raws if at == "raw" else self.raws0
        return self.variables, raws, self.cot, self.key, self.raws_b

    def compute(self, names, at: str = "raw", p=None) -> dict:
        """The quantities ``names`` (keys of ``QUANTITIES``) in one jit, at the generic raw
        (``at="raw"``) or at the starting raw (``at="start"``); ``p`` replaces the subject's
        parametrization (the trace-once check passes an equal copy). Cached per
        ``(names, at)``."""
        names = tuple(names)
        if p is not None:
            return self._jitted(p, names, *self._args(at))
        if (names, at) not in self._cache:
            self._cache[(names, at)] = self._jitted(self.p, names, *self._args(at))
        return self._cache[(names, at)]

    def cached(self, name: str, at: str = "raw") -> bool:
        return any(where == at and name in names for names, where in self._cache)

    def get(self, name: str, at: str = "raw"):
        """One quantity, from any bundle already computed, else computed alone."""
        for (names, where), out in self._cache.items():
            if where == at and name in names:
                return out[name]
        return self.compute((name,), at)[name]

    def trace_error(self, names) -> Exception | None:
        """Traces ``names`` without compiling; the exception if tracing fails (a map that cannot
        take a leading axis fails here, with its own message), else None."""
        try:
            jax.eval_shape(
                lambda v, r, c, k, rb: {
                    n: QUANTITIES[n](self, self.p, v, r, c, k, rb) for n in names
                },
                *self._args("raw"),
            )
        except (ValueError, TypeError, IndexError, ParametrizationError) as e:
            return e
        return None


# ------------------------------------------------------------------------------------------------
# The quantities (traced; each returns a pytree, None where it does not apply)
# ------------------------------------------------------------------------------------------------
def _q_apply(s, p, variables, raws, cot, key, raws_b):
    y, state = p.apply(variables, *raws, update_state=False)
    return {"y": y, "state": dict(state), "member": s.member_flag(y)}


def _q_round_trip(s, p, variables, raws, cot, key, raws_b):
    if not s.has_inverse:
        return None
    r2, s2 = inv(p, variables, fwd(p, variables, raws), key)
    return {"raws": r2, "value": fwd(p, with_state(variables, s2), r2)}


def _q_grad(s, p, variables, raws, cot, key, raws_b):
    if not s.inexact:
        return None
    return jax.grad(lambda rs: jnp.sum(fwd(p, variables, rs) * cot).real)(raws)


def _q_update_state(s, p, variables, raws, cot, key, raws_b):
    if not s.stateful:  # nothing to update
        return None
    y, state = p.apply(variables, *raws, update_state=True)
    again = fwd(p, with_state(variables, dict(state)), raws)
    return {"y": y, "state": dict(state), "again": again, "member": s.member_flag(y)}


def _q_update_base(s, p, variables, raws, cot, key, raws_b):
    if not s.has_base:
        return None
    nr, ns = p.update_base(variables, *raws)
    y = fwd(p, with_state(variables, dict(ns)), as_tuple(nr))
    return {"y": y, "member": s.member_flag(y)}


def _q_vmap_loop(s, p, variables, raws, cot, key, raws_b):
    """vmap and a sequential loop (``lax.map``) over the batch, the variables shared. Only for
    a map that does not broadcast: for one that does, :func:`_q_broadcast` checks vmap already
    (against the stacked call, shared variables shared and per-value ones mapped)."""
    if s.broadcasts:
        return None

    def one(rs):
        out = {"y": fwd(p, variables, rs)}
        if s.stateful:
            yu, su = p.apply(variables, *rs, update_state=True)
            out["update_state"] = {"y": yu, "state": dict(su)}
        if s.has_inverse:
            r2, s2 = inv(p, variables, out["y"], key)
            out["inverse"] = {"raws": r2, "state": s2}
        return out

    return {"vmap": jax.vmap(one)(raws_b), "loop": lax.map(one, raws_b)}


def _batch_axes(s, batched, single):
    """``in_axes`` for variables made for the stacked value: 0 for a leaf that grew a leading
    batch axis, None for one shared by the batch (same shape as for one value)."""

    def axis(b, one):
        if tuple(b.shape) == (BATCH,) + tuple(one.shape):
            return 0
        if tuple(b.shape) == tuple(one.shape):
            return None
        raise ValueError(
            f"a variable has shape {tuple(one.shape)} for one value and {tuple(b.shape)} for "
            f"{BATCH} values stacked: neither shared nor one per value"
        )

    try:
        return jax.tree.map(axis, batched, single)
    except ValueError as e:
        raise ValueError(f"init_variables on a stacked value: {e}") from None


def _q_broadcast(s, p, variables, raws, cot, key, raws_b):
    """Calling p on the stacked raw against vmap over the batch, with the variables that
    registration makes for the stacked value (per-value leaves mapped, shared leaves shared)."""
    if not s.broadcasts:
        return None
    yb = jax.vmap(lambda rs: fwd(p, variables, rs))(raws_b)
    vb0 = _plain(p.init_variables(key, yb))
    vb, out = vb0, {}
    if s.has_inverse:
        r2, st = inv(p, vb0, yb, key)
        vb = with_state(vb0, st)
        out["inv_broadcast"] = {"raws": r2, "value": fwd(p, vb, r2)}
    axes = _batch_axes(s, vb, variables)
    out["broadcast"] = fwd(p, vb, raws_b)
    out["vmap"] = jax.vmap(lambda v, rs: fwd(p, v, rs), in_axes=(axes, 0))(vb, raws_b)
    if s.has_inverse:

        def round_trip(v, y):
            r2_, s2_ = inv(p, v, y, key)
            return {"raws": r2_, "value": fwd(p, with_state(v, s2_), r2_)}

        # from the variables before the inverse, as the stacked call above
        out["inv_vmap"] = jax.vmap(round_trip, in_axes=(axes, 0))(vb0, yb)
    return out


QUANTITIES = {
    "apply": _q_apply,
    "round_trip": _q_round_trip,
    "grad": _q_grad,
    "update_state": _q_update_state,
    "update_base": _q_update_base,
    "vmap_loop": _q_vmap_loop,
    "broadcast": _q_broadcast,
}


# ------------------------------------------------------------------------------------------------
# Preparing a subject
# ------------------------------------------------------------------------------------------------
def _domain(raw_domain, raws: tuple) -> tuple:
    if raw_domain is None:
        return raws
    out = as_tuple(raw_domain(*raws))
    if len(out) != len(raws) or any(
        tuple(o.shape) != tuple(r.shape) or o.dtype != r.dtype for o, r in zip(out, raws)
    ):
        raise ValueError(
            "check_parametrization: `raw_domain` must return arrays of the shapes and dtypes it "
            f"was given ({[(tuple(r.shape), r.dtype.name) for r in raws]}); got "
            f"{[(tuple(jnp.shape(o)), jnp.asarray(o).dtype.name) for o in out]}."
        )
    return tuple(jnp.asarray(o) for o in out)


def prepare(
    p: Any,
    shape,
    key: jax.Array,
    *,
    dtype=jnp.float32,
    atol: float | None = None,
    value: jax.Array | None = None,
    raw_domain: Callable | None = None,
    in_manifold: Callable | None = None,
    broadcasts: bool = True,
) -> Subject:
    """Prepares ``p`` for the named checks (the options are those of
    :func:`~parametrax.testing.check_parametrization`).

    Draws, from ``key`` alone: the starting value (``p.sample``, or ``value``), the variables
    (``init_variables``, then the right inverse of the starting value), the starting raw
    (``right_inverse(value)``, else a random raw in the domain), a generic raw (the starting
    raw plus noise, in the domain) and a batch of generic raws for the vmap checks.

    Raises:
      AssertionError: when ``p`` is not a parametrization (the `configuration` check).
    """
    shape = tuple(int(s) for s in shape)
    dtype = jnp.dtype(dtype)
    atol = default_atol(dtype) if atol is None else float(atol)
    try:
        p = as_parametrization(p)
    except ParametrizationError as e:
        raise AssertionError(f"check_parametrization: `configuration`: {e}") from None
    rng = _rng(key)
    k_sample, k_init, k_inv = jax.random.split(key, 3)

    membership = in_manifold
    if membership is None and callable(getattr(p, "in_manifold", None)):
        membership = p.in_manifold
    spec = jax.ShapeDtypeStruct(shape, dtype)
    # in_manifold runs inside the jitted checks when it is traceable (it should be: it returns a
    # traced boolean), else eagerly (an in_manifold written with Python control flow).
    traceable = False
    if membership is not None:
        try:
            jax.eval_shape(lambda y_: membership(y_, atol), spec)
            traceable = True
        except jax.errors.JAXTypeError:
            pass

    given = None if value is None else jnp.asarray(value, dtype)
    use_sample = given is None and callable(getattr(p, "sample", None))
    start_from_value = (given is not None or use_sample) and p.has_right_inverse
    fallback = _normal(rng, shape, dtype)

    def flag_of(v):
        if membership is None or not traceable:
            return None
        return jnp.all(membership(v, atol))

    def setup(given_, fallback_, k_sample_, k_init_, k_inv_):
        v = p.sample(k_sample_, shape, dtype) if use_sample else given_
        flag = None if v is None else flag_of(v)
        variables = _plain(p.init_variables(k_init_, fallback_ if v is None else v))
        raws0 = None
        if start_from_value:
            raws0, st = inv(p, variables, v, k_inv_)
            variables = with_state(variables, st)
        return v, flag, variables, raws0

    v, flag, variables, raws0 = jax.jit(setup)(given, fallback, k_sample, k_init, k_inv)
    if raws0 is None:
        raws0 = _domain(raw_domain, (_normal(rng, shape, dtype),))

    def perturb(rs):
        return tuple(
            r + _normal(rng, r.shape, r.dtype) * NOISE if _is_inexact(r) else r for r in rs
        )

    raws = _domain(raw_domain, perturb(raws0))
    cot = _normal(rng, shape, dtype)
    raws_b = tuple(jnp.stack([perturb((r,))[0] for _ in range(BATCH)]) for r in raws)
    raws_b = _domain(raw_domain, raws_b)
    return Subject(
        p=p,
        shape=shape,
        dtype=dtype,
        atol=atol,
        broadcasts=broadcasts,
        raw_domain=raw_domain,
        membership=membership,
        traceable_membership=traceable,
        value=v,
        value_source="sample" if use_sample else ("value" if given is not None else None),
        value_flag=flag,
        start_from_value=start_from_value,
        variables=variables,
        raws0=tuple(raws0),
        raws=raws,
        raws_b=raws_b,
        cot=cot,
        key=k_inv,
    )
