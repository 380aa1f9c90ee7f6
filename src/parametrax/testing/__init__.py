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
the shape and dtype, and the numbers); each check is also a function of its own, run on a
:class:`Subject` made by :func:`prepare` (see :mod:`parametrax.testing.checks`):

1. :func:`check_configuration` -- **configuration**: ``p`` is hashable and a new instance with
   the same hyperparameters (``dataclasses.replace``) compares and hashes equal;
2. :func:`check_sample` -- **sample** (when ``p.sample`` exists): ``p.sample(key, shape,
   dtype)`` has that shape and dtype and, when ``p.in_manifold`` exists, ``in_manifold(sample)``;
3. :func:`check_shape_dtype` -- **shape and dtype kept**: ``forward(raw)`` for a generic raw has
   ``shape`` and ``dtype`` and is finite; the raw arrays of ``right_inverse`` keep the dtype;
4. :func:`check_manifold` -- **on the manifold after forward**: ``in_manifold(forward(raw))``;
5. :func:`check_round_trip` -- **round trip on a given point**: ``forward(right_inverse(sample))
   == sample``; **round trip**: ``forward(right_inverse(y)) == y`` for ``y = forward(raw)``;
6. :func:`check_jit` -- **jit == eager** for forward; **trace once**: a ``jax.jit`` with the
   parametrization as a static argument traces once for ``p`` and for an equal copy;
7. :func:`check_state` -- **state**: with ``update_state=False`` the returned state equals the
   state given; with ``update_state=True`` it keeps its structure, shapes and dtypes, and the
   value returned is the value of the state returned;
8. :func:`check_gradients` -- **finite gradients** of ``sum(c * forward(raw))`` at a generic raw
   and at ``right_inverse(sample)`` (often a special point, e.g. raw zero for trivializations);
9. :func:`check_update_base` -- **update_base** (when ``p.update_base`` exists): the value is
   unchanged by moving the base;
10. :func:`check_vmap` -- **vmap == broadcasting**: calling ``p`` on the stacked raw equals
    ``vmap``, with the variables registration makes for the stacked value (a per-value state
    such as a trivialization's base is mapped with it, the rest shared); for a map of the whole
    tensor (``broadcasts=False``: ``Sphere(axis=None)``, ``WeightNorm``), **vmap == loop**:
    ``vmap`` of ``apply`` / ``apply_inverse`` over a batch of raws, the variables shared,
    equals a loop.

Parametrizations without ``in_manifold`` / ``sample`` / a right inverse skip those checks (pass
``in_manifold=`` to check membership with an oracle of your own). Parametrizations with
variables (``init_variables`` / ``apply`` / ``apply_inverse``) are run through that protocol;
without a sample and with a right inverse, the kit starts from ``forward`` of a random raw. A
parametrization whose raw is several arrays needs a sample (or ``value=``) so the kit learns the
raw shapes from its right inverse. A parametrization whose forward is meant for only part of the
raw space (Householder's diagonal of +-1, a Cayley map of skew matrices) passes ``raw_domain=``,
a projection onto that part applied to every raw the kit draws.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from parametrax._errors import ParametrizationError
from parametrax.testing import checks as _checks
from parametrax.testing._subject import Subject, default_atol, prepare
from parametrax.testing.checks import (
    ALL_QUANTITIES,
    CHECKS,
    VMAP_QUANTITIES,
    check_configuration,
    check_gradients,
    check_jit,
    check_manifold,
    check_round_trip,
    check_sample,
    check_shape_dtype,
    check_state,
    check_update_base,
    check_vmap,
)

__all__ = [
    "check_parametrization",
    "default_atol",
    "prepare",
    "Subject",
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
]


def check_parametrization(
    p: Any,
    shape,
    key: jax.Array,
    *,
    dtype=jnp.float32,
    atol: float | None = None,
    value: jax.Array | None = None,
    check_vmap: bool = True,
    broadcasts: bool = True,
    raw_domain: Callable | None = None,
    in_manifold: Callable | None = None,
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
      check_vmap: run the vmap checks at all.
      broadcasts: ``p`` acts on trailing axes, so a stacked raw is a batch (false for a map of
        the whole tensor: ``Sphere(axis=None)``, ``WeightNorm``, ``SpectralNorm``; the vmap
        check then compares ``vmap`` with a loop instead).
      raw_domain: a function ``(*raw) -> raw`` projecting raw arrays (of any leading batch
        shape) onto the raws ``forward`` is meant for; applied to every raw the kit draws.
        Default: every raw is valid.
      in_manifold: ``(y, atol) -> bool``, a membership test used instead of ``p.in_manifold``
        (an independent oracle, or one for a parametrization without ``in_manifold``).

    Raises:
      AssertionError: naming the failed check and the numbers.
    """
    check_configuration(p)
    s = prepare(
        p,
        shape,
        key,
        dtype=dtype,
        atol=atol,
        value=value,
        raw_domain=raw_domain,
        in_manifold=in_manifold,
        broadcasts=broadcasts,
    )
    check_sample(s)
    check_shape_dtype(s)  # eager first: a wrong shape is reported before anything is traced
    names = ALL_QUANTITIES + (VMAP_QUANTITIES if check_vmap else ())
    try:
        s.compute(names, "raw")
    except (ValueError, TypeError, IndexError, ParametrizationError):
        if check_vmap:  # a map that cannot take a leading axis: say so, clearly
            _checks.check_vmap(s)
        raise
    s.compute(names, "start")
    for check in CHECKS:
        if check not in (check_sample, check_shape_dtype):  # run above
            check(s)
    if check_vmap:
        _checks.check_vmap(s)
