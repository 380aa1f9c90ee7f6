"""The documentation's runnable snippets run: every ```python block of the pages listed here is
executed (each block in a fresh namespace, in page order) and must not raise; each block asserts
its own claims (orthogonality, round trips, restored types)."""

from __future__ import annotations

import pathlib
import re
import sys
import types
import warnings

import jax
import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
PAGES = ["index.md", "getting_started.md", "concepts.md", "recipes.md"]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks():
    for page in PAGES:
        text = (DOCS / page).read_text(encoding="utf-8")
        for i, m in enumerate(_BLOCK.finditer(text)):
            pad = "\n" * text[: m.start(1)].count("\n")  # tracebacks point at the page's lines
            yield pytest.param(page, pad + m.group(1), id=f"{page}[{i}]")


def test_pages_have_snippets():
    counts = {p: len(_BLOCK.findall((DOCS / p).read_text(encoding="utf-8"))) for p in PAGES}
    assert all(counts.values()), f"a listed page has no ```python block: {counts}"


@pytest.mark.parametrize(("page", "code"), list(_blocks()))
def test_snippet_runs(page, code):
    pytest.importorskip("equinox")
    pytest.importorskip("optax")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the docs use no deprecated name
        # a real module: classes defined by a snippet (flax Modules are dataclasses) need one
        mod = types.ModuleType("_parametrax_docs_snippet")
        sys.modules[mod.__name__] = mod
        try:
            # The snippets are user code that trains with optax.adam, whose bias correction is not
            # strict-clean (``decay ** count``, see ``_helpers.standard_promotion``).
            with jax.numpy_dtype_promotion("standard"):
                exec(compile(code, f"docs/{page}", "exec"), mod.__dict__)
        finally:
            del sys.modules[mod.__name__]
