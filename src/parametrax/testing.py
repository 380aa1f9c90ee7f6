"""The contract kit: run the whole parametrization contract on a parametrization you wrote.

>>> import dataclasses, jax, jax.numpy as jnp
>>> import parametrax as px
>>> from parametrax.testing import check_parametrization
>>> @dataclasses.dataclass(frozen=True)
... class Exp(px.Parametrization):
...     def forward(self, x):
...         return jnp.exp(x)
...     def right_inverse(self, y):
...         return jnp.log(y)
>>> check_parametrization(Exp(), (3, 2), jax.random.key(0))   # silent when the contract holds

What is checked (each failure is an ``AssertionError`` naming the check, the parametrization,
the shape and dtype, and the numbers):

1. **configuration**: ``p`` is hashable and a new instance with the same hyperparameters
   (``dataclasses.replace``) compares and hashes equal;
2. **sample** (when ``p.sample`` exists): ``p.sample(key, shape, dtype)`` has that shape and
   dtype and, when ``p.in_manifold`` exists, ``in_manifold(sample)``;
3. **round trip on a given point**: ``forward(right_inverse(sample)) == sample``;
4. **shape and dtype kept**: ``forward(raw)`` for a random raw has ``shape`` and ``dtype`` and
   is finite; **on the manifold after forward**: ``in_manifold(forward(raw))``;
5. **round trip**: ``forward(right_inverse(y)) == y`` for that ``y``; the raw arrays keep the
   dtype;
6. **state**: with ``update_state=False`` the returned state equals the state given;
7. **jit == eager** for forward and for the round trip; **trace once**: a ``jax.jit`` with the
   parametrization as a static argument traces once for ``p`` and for an equal copy;
8. **vmap == broadcasting**: ``vmap(forward)`` over a new leading axis of the raw array(s)
   equals calling forward on the stacked raw (the variables are shared), and the same for the
   right inverse (pass ``check_vmap=False`` for a parametrization that acts on the whole
   tensor, e.g. ``Sphere(axis=None)``);
9. **finite gradients** of ``sum(c * forward(raw))`` at a random raw and at
   ``right_inverse(sample)`` (often a special point, e.g. raw zero for trivializations);
10. **update_base** (when ``p.update_base`` exists): the value is unchanged by moving the base.

Parametrizations without ``in_manifold`` / ``sample`` / a right inverse skip those checks.
Parametrizations with variables (``init_variables`` / ``apply`` / ``apply_inverse``) are run
through that protocol; without a sample and with a right inverse, the kit starts from
``forward`` of a random raw. A parametrization whose raw is several arrays needs a sample (or
``value=``) so the kit learns the raw shapes from its right inverse.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from parametrax._core import Parametrization, as_parametrization, describe
from parametrax._errors import ParametrizationError

__all__ = ["check_parametrization", "default_atol"]

_DEFAULT_ATOL = {2: 1e-2, 4: 1e-4, 8: 1e-9}
_BATCH = 3
_NOISE = 0.5


def default_atol(dtype) -> float:
    """The kit's tolerance per dtype (float16/bfloat16 1e-2, float32 1e-4, float64 1e-9); errors
    are measured relative to ``max(1, max|expected|)``."""
    return _DEFAULT_ATOL.get(jnp.dtype(dtype).itemsize, 1e-4)


class _Ctx:
    def __init__(self, p, shape, dtype, atol):
        self.p, self.shape, self.dtype, self.atol = p, shape, dtype, atol
        self.name = describe(p)

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
        gl, gt = jax.tree.flatten(got)
        wl, wt = jax.tree.flatten(want)
        if gt != wt:
            self.fail(check, f"{what}: tree structure {gt} where {wt} was expected.")
        for i, (g, w) in enumerate(zip(gl, wl, strict=True)):
            self.close(check, g, w, f"{what} (leaf {i})")


def _twin(p):
    """A new instance with the same hyperparameters (``dataclasses.replace``; else a copy)."""
    if dataclasses.is_dataclass(p):
        try:
            return dataclasses.replace(p)
        except (TypeError, ValueError):
            pass
    return copy.copy(p)


def _as_tuple(raw) -> tuple:
    if isinstance(raw, (tuple, list)):
        return tuple(raw)
    return (raw,)


def _fwd(p: Parametrization, variables, raws):
    out, _ = p.apply(variables, *raws, update_state=False)
    return out


def _inv(p: Parametrization, variables, value, key):
    raw, state = p.apply_inverse(variables, value, key=key)
    return _as_tuple(raw), dict(state)


def _with_state(variables, state):
    return {"params": variables["params"], "state": state}


def _rng(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded from ``key``: the kit's own noise costs no XLA compilation."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        data = jax.random.key_data(key)
    else:
        data = key
    return np.random.default_rng([int(v) for v in np.asarray(data).ravel()])


def _normal(rng: np.random.Generator, shape, dtype) -> jax.Array:
    return jnp.asarray(rng.standard_normal(tuple(shape)).astype(dtype))


def check_parametrization(
    p: Any,
    shape,
    key: jax.Array,
    *,
    dtype=jnp.float32,
    atol: float | None = None,
    value: jax.Array | None = None,
    check_vmap: bool = True,
) -> None:
    """Runs the parametrization contract on ``p`` for values of ``shape`` and ``dtype``.

    Args:
      p: a :class:`parametrax.Parametrization` (or a plain callable, checked as a forward-only
        parametrization).
      shape: the shape of the constrained value (and, for single-array raws, of the raw).
      key: a PRNG key; all randomness comes from it.
      dtype: the floating dtype to check in.
      atol: tolerance for every comparison, relative to ``max(1, max|expected|)``, and the
        ``atol`` handed to ``in_manifold``; default :func:`default_atol` of ``dtype``.
      value: a point of the constraint set to start from (default ``p.sample(...)`` when it
        exists, else ``forward`` of a random raw).
      check_vmap: run the vmap == broadcasting check (false for parametrizations that act on
        the whole tensor rather than on trailing axes).

    Raises:
      AssertionError: naming the failed check and the numbers.
    """
    shape = tuple(int(s) for s in shape)
    dtype = jnp.dtype(dtype)
    atol = default_atol(dtype) if atol is None else float(atol)
    try:
        p = as_parametrization(p)
    except ParametrizationError as e:
        raise AssertionError(f"check_parametrization: `configuration`: {e}") from None
    ctx = _Ctx(p, shape, dtype, atol)
    rng = _rng(key)
    k_sample, k_init, k_inv = jax.random.split(key, 3)

    # 1. configuration --------------------------------------------------------------------------
    twin = _twin(p)
    if not (twin == p):
        ctx.fail(
            "configuration",
            "an equal copy (the same hyperparameters in a new instance) does not compare equal; "
            "make it a frozen dataclass whose fields are plain hyperparameters, or jax.jit "
            "re-traces for every instance.",
        )
    if hash(twin) != hash(p):
        ctx.fail("configuration", "an equal copy hashes differently.")

    has_sample = callable(getattr(p, "sample", None))
    has_check = callable(getattr(p, "in_manifold", None))
    has_inverse = p.has_right_inverse
    has_base = callable(getattr(p, "update_base", None))
    spec = jax.ShapeDtypeStruct(shape, dtype)
    # in_manifold runs inside the jitted checks when it is traceable (it should be: it returns a
    # traced boolean), else eagerly (an in_manifold written with Python control flow).
    traceable_check = False
    if has_check:
        try:
            jax.eval_shape(lambda y_: p.in_manifold(y_, atol), spec)
            traceable_check = True
        except jax.errors.JAXTypeError:
            pass

    def manifold_flag(y_):
        return jnp.all(p.in_manifold(y_, atol)) if traceable_check else None

    def require_manifold(check: str, flag, y, what: str):
        if not has_check:
            return
        ok = flag if flag is not None else p.in_manifold(y, atol)
        if not bool(np.all(np.asarray(ok))):
            ctx.fail(check, f"in_manifold({what}, atol={atol:g}) is false.")

    # 2-3. sample, variables and the raw structure (one jit) --------------------------------------
    given = None if value is None else jnp.asarray(value, dtype)
    use_sample = given is None and has_sample
    start_from_value = (given is not None or use_sample) and has_inverse
    fallback = _normal(rng, shape, dtype)

    def setup(given_, fallback_, k_sample_, k_init_, k_inv_):
        v = p.sample(k_sample_, shape, dtype) if use_sample else given_
        flag = None if v is None else manifold_flag(v)
        variables = p.init_variables(k_init_, fallback_ if v is None else v)
        variables = {"params": dict(variables["params"]), "state": dict(variables["state"])}
        raws0 = None
        if start_from_value:
            raws0, st = _inv(p, variables, v, k_inv_)
            variables = _with_state(variables, st)
        return v, flag, variables, raws0

    value, flag, variables, raws0 = jax.jit(setup)(given, fallback, k_sample, k_init, k_inv)
    if use_sample:
        if tuple(value.shape) != shape or jnp.dtype(value.dtype) != dtype:
            ctx.fail(
                "sample",
                f"sample(key, {shape}, {dtype.name}) returned shape {tuple(value.shape)} and "
                f"dtype {jnp.dtype(value.dtype).name}.",
            )
        require_manifold("sample", flag, value, "sample")
    elif value is not None:
        require_manifold("value", flag, value, "the given value")
    if raws0 is None:
        raws0 = (_normal(rng, shape, dtype),)

    def perturb(rs):
        return tuple(
            r + _normal(rng, r.shape, r.dtype) * _NOISE
            if jnp.issubdtype(r.dtype, jnp.inexact)
            else r
            for r in rs
        )

    raws = perturb(raws0)
    inexact = [i for i, r in enumerate(raws) if jnp.issubdtype(r.dtype, jnp.inexact)]
    cot = _normal(rng, shape, dtype)

    # 4. eager forward: shape, dtype, finiteness, manifold ---------------------------------------
    y = _fwd(p, variables, raws)
    if not hasattr(y, "shape") or tuple(y.shape) != shape or jnp.dtype(y.dtype) != dtype:
        got = (
            f"shape {tuple(y.shape)} and dtype {jnp.dtype(y.dtype).name}"
            if hasattr(y, "shape")
            else type(y).__name__
        )
        ctx.fail(
            "shape and dtype kept",
            f"forward returned {got}; expected shape {shape} and dtype {dtype.name}.",
        )
    if not np.all(np.isfinite(np.asarray(y))):
        ctx.fail("shape and dtype kept", "forward of a random raw value is not finite.")

    # 5-7, 9, 10: one jit, traced once for p, an equal copy and a second raw value --------------
    traces: list[int] = []

    raws_b = tuple(jnp.stack([perturb((r,))[0] for _ in range(_BATCH)]) for r in raws)

    def batched(p_, variables_, raws_b_):
        yv = jax.vmap(lambda rs: _fwd(p_, variables_, rs))(raws_b_)
        out = {"vmap": yv, "broadcast": _fwd(p_, variables_, raws_b_)}
        if has_inverse:
            out["inv_vmap"] = jax.vmap(lambda v: _inv(p_, variables_, v, None))(yv)
            out["inv_broadcast"] = _inv(p_, variables_, yv, None)
        return out

    if check_vmap:
        try:  # tracing only: a map that cannot take a leading axis fails here, clearly
            jax.eval_shape(lambda v_, rb_: batched(p, v_, rb_), variables, raws_b)
        except (ValueError, TypeError) as e:
            ctx.fail(
                "vmap == broadcasting",
                "forward or right_inverse fails on a value with an extra leading axis: "
                f"{type(e).__name__}: {e}",
            )

    def all_in_one(p_, variables_, raws_, cot_, key_, raws_b_):
        traces.append(1)
        out: dict = {"batched": batched(p_, variables_, raws_b_) if check_vmap else None}
        y_, st_out = p_.apply(variables_, *raws_, update_state=False)
        out["y"], out["state"] = y_, dict(st_out)
        out["on_manifold"] = manifold_flag(y_)
        if has_inverse:
            r2, s2 = _inv(p_, variables_, y_, key_)
            out["raw_dtypes"] = r2
            out["round_trip"] = _fwd(p_, _with_state(variables_, s2), r2)
        if inexact:
            out["grad"] = jax.grad(lambda rs: jnp.sum(_fwd(p_, variables_, rs) * cot_).real)(raws_)
        if has_base:
            nr, ns = p_.update_base(variables_, *raws_)
            y3 = _fwd(p_, _with_state(variables_, dict(ns)), _as_tuple(nr))
            out["after_update_base"] = y3
            out["after_update_base_on_manifold"] = manifold_flag(y3)
        return out

    jitted = jax.jit(all_in_one, static_argnums=0)
    out = jitted(p, variables, raws, cot, k_inv, raws_b)
    out0 = jitted(p, variables, raws0, cot, k_inv, raws_b)  # at the starting raw (e.g. zero)
    start = "right_inverse(sample)" if start_from_value else "the starting raw value"
    if start_from_value:
        ctx.close(
            "round trip on a given point",
            out0["y"],
            value,
            "forward(right_inverse(value)) for the sample (or the value given)",
        )
    ctx.close("jit == eager", out["y"], y, "jit(forward)(raw) against forward(raw)")
    require_manifold("on the manifold after forward", out["on_manifold"], y, "forward(raw)")
    ctx.tree_close(
        "state", out["state"], variables["state"], "state returned by apply(update_state=False)"
    )
    if has_inverse:
        for i, r in enumerate(out["raw_dtypes"]):
            if jnp.dtype(r.dtype) != dtype:
                ctx.fail(
                    "shape and dtype kept",
                    f"right_inverse returned dtype {jnp.dtype(r.dtype).name} for raw array {i}.",
                )
        ctx.close(
            "round trip", out["round_trip"], y, "forward(right_inverse(y)) for y = forward(raw)"
        )
        ctx.close(
            "round trip",
            out0["round_trip"],
            out0["y"],
            f"forward(right_inverse(y)) for y = forward({start})",
        )
    for where, res in (("a random raw value", out), (start, out0)):
        for i in inexact:
            if not np.all(np.isfinite(np.asarray(res["grad"][i]))):
                ctx.fail(
                    "finite gradients", f"the gradient at {where} (raw array {i}) is not finite."
                )
    if has_base:
        ctx.close("update_base", out["after_update_base"], y, "the value after update_base")
        require_manifold(
            "update_base",
            out["after_update_base_on_manifold"],
            out["after_update_base"],
            "the value after update_base",
        )
    jitted(twin, variables, raws, cot, k_inv, raws_b)
    if len(traces) != 1:
        ctx.fail(
            "trace once",
            f"jax.jit with the parametrization as a static argument traced {len(traces)} times "
            "for the parametrization and an equal copy (expected 1): equal configurations must "
            "compare and hash equal.",
        )

    # 8. vmap == broadcasting (computed in the same jit) -------------------------------------------
    if check_vmap:
        res = out["batched"]
        ctx.close(
            "vmap == broadcasting",
            res["broadcast"],
            res["vmap"],
            "forward(stacked raw) against vmap(forward)",
        )
        if has_inverse:
            ctx.tree_close(
                "vmap == broadcasting",
                res["inv_broadcast"],
                res["inv_vmap"],
                "right_inverse(stacked value) against vmap(right_inverse)",
            )
