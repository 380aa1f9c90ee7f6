"""The NaN / Inf policy of parametrax: what is stored must be finite.

This module is the one place the policy lives; :mod:`parametrax._core` applies it, so every front
(``parametrax.tree``, the linen ``Parametrized`` wrapper and its functions, ``parametrax.nnx``,
``parametrax.equinox``) gets the same rule with the same messages, the front adding which variable
it was (the path) in front of the message.

The rule
--------
Every entry point that stores arrays refuses a **concrete** non-finite array, before anything is
stored (a refused call returns nothing and changes nothing):

* **the value given**: the initial value at registration (``tree.register``, linen ``init``, NNX
  ``register_parametrization``, equinox ``Parametrized``) and the value assigned (``tree.assign``,
  linen ``assign`` and a base module writing a parametrized variable, NNX ``assign`` and
  ``layer.kernel = X``). Message: ``the value to register contains 2 NaN among 9 entries``.
* **what the chain produces from a finite value**: after each link's right inverse (run in reverse
  chain order), its output (the next link's input, or the stored raw values for link 0) and the
  state it returns; at registration also the link variables ``init_variables`` makes, and the
  value the chain then computes from the raw values it stored (when the registration checks the
  forward, i.e. without ``unsafe=True``). A finite value whose right inverse is not finite is a
  value the chain cannot represent (``[skew, cayley]`` given a rotation by pi, a ``log`` of a
  value <= 0); it is a :class:`~parametrax.RightInverseError` naming the chain, the link, and
  what it returned: ``the value is finite, but the chain [`Skew`, `Cayley`] turned it into
  non-finite values: link 1 (`Cayley`)'s right inverse returned 9 NaN among 9 entries``.
* **removing** a parametrization with ``leave_parametrized=True`` (``tree.remove_parametrizations``, linen
  ``remove_parametrizations``) refuses a non-finite constrained value rather than bake it into
  a plain variable.

Forward evaluation (``constrain``, a model's ``apply``, a read of an NNX attribute) is not
checked: it is the hot path, runs traced, and a non-finite output there comes from non-finite
raw values that an optimizer wrote.

Traced values are not checked
-----------------------------
A value that is a JAX tracer (registration or assignment inside ``jax.jit``, ``jax.grad``,
``jax.vmap``, ``nnx.jit``, a jitted ``model.init``) has no contents to inspect, so none of the
checks above runs on it, and a non-finite traced value is stored as given. To check inside a
transformation, use ``jax.config.update("jax_debug_nans", True)`` or
``jax.experimental.checkify``; or register / assign outside the transformation, which is where
these calls usually run. The contents of a concrete array are read on the host with NumPy (so
the check works inside a foreign trace, where a ``jnp`` reduction would be staged out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from parametrax._errors import ParametrizationError, RightInverseError, chain_repr, describe

__all__ = ["nonfinite", "check_value", "check_link", "produced_error"]


def nonfinite(x: Any) -> str | None:
    """``"2 NaN among 9 entries"`` when concrete ``x`` holds NaN/Inf, else ``None``.

    ``None`` for a tracer (its contents are unknown), a non-array, and integer or boolean arrays
    (always finite).
    """
    if isinstance(x, jax.core.Tracer) or not (hasattr(x, "dtype") and hasattr(x, "shape")):
        return None
    try:
        if not jnp.issubdtype(jnp.result_type(x), jnp.inexact):
            return None
    except TypeError:
        return None
    a = np.asarray(x)
    if a.dtype.kind not in "fc":  # ml_dtypes (bfloat16, float8): compare in float32
        a = a.astype(np.float32)
    if np.isfinite(a).all():
        return None
    nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
    found = " and ".join(f"{n} {k}" for n, k in ((nan, "NaN"), (inf, "Inf")) if n)
    return f"{found} among {a.size} entries"


def check_value(value: Any, subject: str) -> None:
    """Refuses a non-finite value given by the user (``subject``: "the value to register")."""
    found = nonfinite(value)
    if found is not None:
        raise ParametrizationError(
            f"{subject} contains {found}; refusing to store it (a non-finite raw value would "
            "poison every later step). Nothing was changed."
        )


def check_link(
    chain: Sequence[Any],
    i: int,
    *,
    outputs: Mapping[str, Any] | Sequence[Any] | None = None,
    params: Mapping[str, Any] | None = None,
    state: Mapping[str, Any] | None = None,
    producer: str = "right inverse",
    offset: int = 0,
) -> None:
    """Refuses non-finite arrays that link ``i`` of ``chain`` produced from a finite input.

    ``outputs``: what its right inverse returned (for link 0, the raw values by name
    ``{"original": ...}``; for a later link, the one array it hands to link ``i - 1``);
    ``params`` / ``state``: its variables (``producer`` says which method made them).
    ``offset`` numbers the links of an appended chain as links of the stored one.
    """
    link = f"link {i + offset} ({describe(chain[i])})"
    problems = []
    if isinstance(outputs, Mapping):
        for n, r in outputs.items():
            found = nonfinite(r)
            if found is not None:
                problems.append(f"the raw value `{n}` has {found} (from {link}'s {producer})")
    elif outputs is not None:
        for r in outputs:
            found = nonfinite(r)
            if found is not None:
                problems.append(f"{link}'s {producer} returned {found}")
    for kind, entries in (("param", params), ("state", state)):
        for k, v in (entries or {}).items():
            found = nonfinite(v)
            if found is not None:
                problems.append(f"{link} {kind} `{k}` has {found} (from its {producer})")
    if problems:
        raise produced_error(chain, problems)


def produced_error(chain: Sequence[Any], problems: list[str]) -> RightInverseError:
    """The error for non-finite arrays a chain produced from a finite value."""
    chain_str = chain_repr(chain)
    return RightInverseError(
        f"the value is finite, but the chain {chain_str} turned it into non-finite values: "
        f"{'; '.join(problems)}. The chain cannot represent this value (e.g. Cayley cannot "
        'represent an eigenvalue -1: use `Orthogonal(map="cayley")`, which moves its base '
        "point). Nothing was changed."
    )
