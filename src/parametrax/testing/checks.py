"""The named checks of the contract kit, each usable alone.

Every check but :func:`check_configuration` takes a :class:`~parametrax.testing.Subject` made by
:func:`~parametrax.testing.prepare`, and raises an ``AssertionError`` naming the check, the
parametrization, the shape and dtype, and the numbers:

>>> import jax, jax.numpy as jnp
>>> import parametrax as px
>>> from parametrax.testing import prepare, check_round_trip, check_vmap
>>> s = prepare(px.Symmetric(), (3, 3), jax.random.key(0))
>>> check_round_trip(s)   # forward(right_inverse(y)) == y
>>> check_vmap(s)         # vmap == a loop, and == calling on the stacked raw

:func:`~parametrax.testing.check_parametrization` runs them all, in the order of ``CHECKS``,
sharing one compilation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from parametrax._core import as_parametrization, describe
from parametrax._errors import ParametrizationError
from parametrax.testing._subject import Subject, twin

__all__ = [
    "check_configuration",
    "check_sample",
    "check_shape_dtype",
    "check_manifold",
    "check_round_trip",
    "check_jit",
    "check_state",
    "check_gradients",
    "check_update_base",
    "check_vmap",
    "CHECKS",
    "ALL_QUANTITIES",
]

#: The quantities every check together needs (computed in one jit by check_parametrization).
ALL_QUANTITIES = ("apply", "round_trip", "grad", "update_state", "update_base")
#: The quantities of :func:`check_vmap` (traced first on their own, for a clear message).
VMAP_QUANTITIES = ("vmap_loop", "broadcast")


def check_configuration(p) -> None:
    """`configuration`: ``p`` is a hashable parametrization and a new instance with the same
    hyperparameters (``dataclasses.replace``) compares and hashes equal, so ``jax.jit`` with
    ``p`` static does not re-trace for every instance."""
    try:
        p = as_parametrization(p)
    except ParametrizationError as e:
        raise AssertionError(f"check_parametrization: `configuration`: {e}") from None
    copy_ = twin(p)
    prefix = f"check_parametrization({describe(p)}) failed the check `configuration`: "
    if not (copy_ == p):
        raise AssertionError(
            prefix + "an equal copy (the same hyperparameters in a new instance) does not compare "
            "equal; make it a frozen dataclass whose fields are plain hyperparameters, or "
            "jax.jit re-traces for every instance."
        )
    if hash(copy_) != hash(p):
        raise AssertionError(prefix + "an equal copy hashes differently.")


def check_sample(s: Subject) -> None:
    """`sample`: ``p.sample(key, shape, dtype)`` has that shape and dtype and satisfies
    ``in_manifold``; `value`: a ``value`` given satisfies ``in_manifold``. Nothing to check
    without either."""
    if s.value_source == "sample":
        v = s.value
        if tuple(v.shape) != s.shape or jnp.dtype(v.dtype) != s.dtype:
            s.fail(
                "sample",
                f"sample(key, {s.shape}, {s.dtype.name}) returned shape {tuple(v.shape)} and "
                f"dtype {jnp.dtype(v.dtype).name}.",
            )
        s.require_member("sample", s.value_flag, v, "sample")
    elif s.value_source == "value":
        s.require_member("value", s.value_flag, s.value, "the given value")


def check_shape_dtype(s: Subject) -> None:
    """`shape and dtype kept`: eager ``forward(raw)`` of a generic raw has the shape and dtype
    and is finite (eager: it runs before anything is traced). :func:`check_round_trip` checks
    the dtype of the raw arrays ``right_inverse`` returns."""
    y = s.eager()
    if not hasattr(y, "shape") or tuple(y.shape) != s.shape or jnp.dtype(y.dtype) != s.dtype:
        got = (
            f"shape {tuple(y.shape)} and dtype {jnp.dtype(y.dtype).name}"
            if hasattr(y, "shape")
            else type(y).__name__
        )
        s.fail(
            "shape and dtype kept",
            f"forward returned {got}; expected shape {s.shape} and dtype {s.dtype.name}.",
        )
    if not np.all(np.isfinite(np.asarray(y))):
        s.fail("shape and dtype kept", "forward of a random raw value is not finite.")


def check_manifold(s: Subject) -> None:
    """`on the manifold after forward`: ``in_manifold(forward(raw))`` for a generic raw (p's
    own ``in_manifold``, or the ``in_manifold`` option given to :func:`prepare`)."""
    out = s.get("apply")
    s.require_member("on the manifold after forward", out["member"], out["y"], "forward(raw)")


def check_round_trip(s: Subject) -> None:
    """`round trip on a given point`: ``forward(right_inverse(value)) == value`` for the sample
    (or the value given); `shape and dtype kept`: the raw arrays keep the dtype; `round trip`: ``forward(right_inverse(y)) == y`` for ``y`` the forward
    of a generic raw and of the starting raw. Skipped without a right inverse."""
    if not s.has_inverse:
        return
    for i, r in enumerate(s.get("round_trip")["raws"]):
        if jnp.dtype(r.dtype) != s.dtype:
            s.fail(
                "shape and dtype kept",
                f"right_inverse returned dtype {jnp.dtype(r.dtype).name} for raw array {i}.",
            )
    if s.start_from_value:
        s.close(
            "round trip on a given point",
            s.get("apply", "start")["y"],
            s.value,
            "forward(right_inverse(value)) for the sample (or the value given)",
        )
    start = "right_inverse(sample)" if s.start_from_value else "the starting raw value"
    for at, where in (("raw", "raw"), ("start", start)):
        s.close(
            "round trip",
            s.get("round_trip", at)["value"],
            s.get("apply", at)["y"],
            f"forward(right_inverse(y)) for y = forward({where})",
        )


def check_jit(s: Subject) -> None:
    """`jit == eager`: jitted forward equals eager forward; `trace once`: a ``jax.jit`` with the
    parametrization as a static argument traces once for ``p`` and for an equal copy."""
    s.close(
        "jit == eager", s.get("apply")["y"], s.eager(), "jit(forward)(raw) against forward(raw)"
    )
    names = next((n for n, _ in s._cache), ("apply",))
    before = s.traces.count(names)
    s.compute(names, p=twin(s.p))
    traced = s.traces.count(names)
    if traced != 1:
        s.fail(
            "trace once",
            f"jax.jit with the parametrization as a static argument traced {traced} times for "
            f"the parametrization and an equal copy (expected 1; {before} before the copy): "
            "equal configurations must compare and hash equal.",
        )


def check_state(s: Subject) -> None:
    """`state`: ``apply(..., update_state=False)`` returns the state it was given. With state,
    ``apply(..., update_state=True)`` returns a state of the same structure, shapes and dtypes,
    a value with the shape and dtype kept and on the manifold, and that value is the one its
    returned state gives (``apply`` with the new state and ``update_state=False``)."""
    out = s.get("apply")
    s.tree_close(
        "state", out["state"], s.variables["state"], "state returned by apply(update_state=False)"
    )
    if not s.stateful:
        return
    up = s.get("update_state")
    got = jax.tree.map(lambda x: (tuple(x.shape), jnp.dtype(x.dtype).name), up["state"])
    want = jax.tree.map(lambda x: (tuple(x.shape), jnp.dtype(x.dtype).name), s.variables["state"])
    if got != want:
        s.fail(
            "state",
            f"apply(update_state=True) returned a state {got} (shape, dtype per leaf) where "
            f"{want} was given.",
        )
    y = up["y"]
    if tuple(y.shape) != s.shape or jnp.dtype(y.dtype) != s.dtype:
        s.fail(
            "state",
            f"apply(update_state=True) returned shape {tuple(y.shape)} and dtype "
            f"{jnp.dtype(y.dtype).name}; expected {s.shape} and {s.dtype.name}.",
        )
    s.close(
        "state",
        up["again"],
        y,
        "apply(new state, update_state=False) against the value apply(update_state=True) "
        "returned with that state",
    )
    s.require_member("state", up["member"], y, "apply(raw, update_state=True)")


def check_gradients(s: Subject) -> None:
    """`finite gradients` of ``sum(c * forward(raw))`` at a generic raw and at the starting raw
    (``right_inverse(sample)``, often a special point: raw zero for trivializations)."""
    start = "right_inverse(sample)" if s.start_from_value else "the starting raw value"
    for at, where in (("raw", "a random raw value"), ("start", start)):
        grad = s.get("grad", at)
        for i in s.inexact:
            if not np.all(np.isfinite(np.asarray(grad[i]))):
                s.fail(
                    "finite gradients", f"the gradient at {where} (raw array {i}) is not finite."
                )


def check_update_base(s: Subject) -> None:
    """`update_base` (when ``p.update_base`` exists): moving the base leaves the value unchanged
    and on the manifold."""
    if not s.has_base:
        return
    out = s.get("update_base")
    s.close("update_base", out["y"], s.get("apply")["y"], "the value after update_base")
    s.require_member("update_base", out["member"], out["y"], "the value after update_base")


def check_vmap(s: Subject) -> None:
    """`vmap == broadcasting` (when ``s.broadcasts``: ``p`` acts on trailing axes): ``p``
    called on the stacked raw equals ``vmap`` over the batch, with the variables that
    ``init_variables`` and ``apply_inverse`` make for the stacked value (a leaf that grows a
    leading axis with the value, like a trivialization's base, is mapped; one that keeps its
    shape is shared). The same for the right inverse: the raw arrays and the value read back.

    `vmap == loop` (a map of the whole tensor, ``broadcasts=False``: ``Sphere(axis=None)``,
    ``WeightNorm``, ``SpectralNorm``): over a batch of raws with the variables shared, ``vmap``
    of ``apply`` (with state, also ``update_state=True``: the value and the new state) and of
    ``apply_inverse`` (raw and state) equals a sequential loop.
    """
    for name in VMAP_QUANTITIES:
        err = None if s.cached(name) else s.trace_error((name,))
        if err is not None:
            check = "vmap == loop" if name == "vmap_loop" else "vmap == broadcasting"
            s.fail(
                check,
                "forward or right_inverse fails on a value with an extra leading axis: "
                f"{type(err).__name__}: {err}",
            )
    loop = s.get("vmap_loop")
    if loop is not None:
        s.tree_close(
            "vmap == loop",
            loop["vmap"],
            loop["loop"],
            "vmap(apply / apply_inverse) against a loop, variables shared",
        )
    res = s.get("broadcast")
    if res is not None:
        s.close(
            "vmap == broadcasting",
            res["broadcast"],
            res["vmap"],
            "forward(stacked raw) against vmap(forward)",
        )
        if s.has_inverse:
            s.tree_close(
                "vmap == broadcasting",
                res["inv_broadcast"],
                res["inv_vmap"],
                "right_inverse(stacked value) (raws and the value read back) against "
                "vmap(right_inverse)",
            )


#: Every check on a subject, in the order check_parametrization runs them.
CHECKS = (
    check_sample,
    check_shape_dtype,
    check_manifold,
    check_round_trip,
    check_jit,
    check_state,
    check_gradients,
    check_update_base,
)
