"""A griffe extension for the API pages: fence the docstrings' doctest examples.

parametrax's docstrings are plain/Google style with bare ``>>>`` doctest blocks (pytest runs
them). Rendered as Markdown, a bare ``x["params"]["kernel"]`` line reads as a reference link and
breaks ``mkdocs build --strict``; here each run of ``>>>`` / ``...`` lines and the output lines
after it becomes a fenced ``pycon`` block. The source docstrings are not changed.
"""

from __future__ import annotations

import re

import griffe

_PROMPT = re.compile(r"^(\s*)(>>>|\.\.\.)( |$)")


def fence_doctests(text: str) -> str:
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _PROMPT.match(lines[i])
        if not m or lines[i].lstrip().startswith("..."):
            out.append(lines[i])
            i += 1
            continue
        indent = m.group(1)
        block = []
        while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
            block.append(lines[i][len(indent) :])
            i += 1
        out.extend([f"{indent}```pycon", *(indent + b for b in block), f"{indent}```"])
    return "\n".join(out)


class FenceDoctests(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
