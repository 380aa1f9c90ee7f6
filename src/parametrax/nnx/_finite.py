"""The NNX front's NaN/Inf policy: what is stored must be finite.

One rule at every entry point that stores arrays: registration (the initial value, the raw
values and link variables the chain's right inverse / ``init_variables`` produce), appending (the
new links' variables) and assignment (the value assigned, the raw values and state its right
inverse produces). A non-finite raw value would poison every later step, and a finite value
whose right inverse yields NaN/Inf (e.g. Cayley given a rotation by π) is not representable by
that chain. The check runs before anything is written, so a refused value leaves the module
exactly as it was. Traced values (registration or assignment inside a JAX transformation)
cannot be inspected and are not checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from parametrax._core import Parametrization, describe
from parametrax._errors import ParametrizationError, RightInverseError


def nonfinite(x: Any) -> str | None:
    """``"2 NaN among 9 entries"`` when concrete ``x`` holds NaN/Inf, else ``None``.

    Computed with NumPy on the host: inside a foreign trace a jnp reduction of a concrete array
    would be staged out (a tracer).
    """
    if isinstance(x, jax.core.Tracer) or not jnp.issubdtype(jnp.result_type(x), jnp.inexact):
        return None
    a = np.asarray(x)
    if np.isfinite(a).all():
        return None
    nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
    found = " and ".join(f"{n} {k}" for n, k in ((nan, "NaN"), (inf, "Inf")) if n)
    return f"{found} among {a.size} entries"


def check_value(what: str, value: Any, subject: str) -> None:
    """Refuses a non-finite value given by the user (``subject``: "the value to register")."""
    found = nonfinite(value)
    if found is not None:
        raise ParametrizationError(
            f"{what}: {subject} contains {found}; refusing to store it (a non-finite raw value "
            "would poison every later step). Nothing was changed."
        )


def check_produced(
    what: str,
    chain: Sequence[Parametrization],
    originals: Mapping[str, Any],
    params: Sequence[Mapping[str, Any]],
    state: Sequence[Mapping[str, Any]],
    *,
    offset: int = 0,
) -> None:
    """Refuses non-finite raw values or link variables produced from a finite value.

    ``params`` / ``state`` hold the variables of ``chain``'s links, which are links
    ``offset, offset + 1, ...`` of the stored chain (for messages).
    """
    problems = []
    for n, r in originals.items():
        found = nonfinite(r)
        if found is not None:
            problems.append(f"the raw value `{n}` has {found}")
    for i, link in enumerate(chain):
        for kind, entries in (("param", params[i]), ("state", state[i])):
            for k, v in entries.items():
                found = nonfinite(v)
                if found is not None:
                    problems.append(
                        f"link {offset + i} ({describe(link)}) {kind} `{k}` has {found}"
                    )
    if problems:
        chain_str = "[" + ", ".join(describe(p) for p in chain) + "]"
        raise RightInverseError(
            f"{what}: the value is finite, but the chain {chain_str} turned it into non-finite "
            f"values: {'; '.join(problems)}. The chain cannot represent this value (e.g. "
            "Cayley cannot represent an eigenvalue -1: use `Orthogonal(map=\"cayley\")`, which "
            "moves its base point). Nothing was changed."
        )
