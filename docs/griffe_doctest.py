"""griffe extension for the API reference: docstrings as written for doctest, rendered right.

jaxprune's docstrings carry their runnable examples as bare ``>>>`` blocks (doctest runs them)
and quote code in reStructuredText's double backticks. Markdown would read an example's
``params["Dense_0"]["kernel"]`` as a reference link, so each ``>>>`` block (its ``...``
continuation lines and expected output, up to a blank line) is put in a ``pycon`` code fence,
and a ``:class:`~a.b.C``` role becomes the code span ``C``.
"""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|obj):`~?([\w.]+)`")


def fence_doctests(text: str) -> str:
    """Wraps each bare ``>>>`` block of ``text`` in a ``pycon`` fence, keeping its indentation.

    >>> fence_doctests(chr(10).join(["Text.", "", ">>> 1", "1", "", "More."])).splitlines()
    ['Text.', '', '```pycon', '>>> 1', '1', '```', '', 'More.']
    """
    out, lines, i = [], text.splitlines(), 0
    in_fence = False
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith("```"):
            in_fence = not in_fence
        if in_fence or not stripped.startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(stripped)]
        out.append(f"{indent}```pycon")
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        out.append(f"{indent}```")
    return "\n".join(out)


def _unrole(text: str) -> str:
    return _ROLE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)


class DoctestFences(griffe.Extension):
    """Fences bare doctest blocks and unwraps Sphinx roles in every docstring."""

    def on_instance(self, *, node, obj, agent, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(_unrole(obj.docstring.value))
