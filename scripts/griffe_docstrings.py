"""A griffe extension for the site's API pages (mkdocs.yml: mkdocstrings ``extensions``).

visionkit's docstrings are reStructuredText-flavoured (``:param x:`` fields, ``:class:`` roles).
mkdocstrings' Sphinx parser reads the fields but shows the roles literally, and attaches a
paragraph that follows the field list to the last field. This extension, applied to every
docstring before it is parsed:

- turns ``:class:`~pkg.mod.Name``` (and ``:func:``, ``:meth:``, ``:attr:``, ``:mod:``,
  ``:exc:``, ``:data:``, ``:obj:``) into an optional cross-reference: a link where the
  target is documented on the site, plain code otherwise (``~`` shows the last component);
- drops RST's ``::`` literal-block markers (the indented block is code in Markdown too);
- moves paragraphs that follow the field list and are not indented (so, in RST, not part
  of the last field) before the field list, where they read as part of the description.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(class|func|meth|attr|mod|exc|data|obj):`(~?)([\w.]+)(\(\))?`")
_FIELD = re.compile(
    r"^:(param|parameter|arg|argument|key|keyword|type|raises?|except|returns?|rtype|yields?|var|ivar|cvar)\b"
)


def _role(match: re.Match[str]) -> str:
    short, target = match[2] == "~", match[3]
    label = target.rsplit(".", 1)[-1] if short else target
    label += match[4] or ""
    return f'<autoref identifier="{target}" optional><code>{label}</code></autoref>'


def _literal_markers(text: str) -> str:
    """RST's ``::`` before an indented literal block: a line of its own goes, ``Text::`` becomes ``Text:``."""
    text = re.sub(r"(?m)^[ \t]*::[ \t]*\n", "", text)
    text = re.sub(r"(?m)[ \t]+::[ \t]*$", "", text)
    return re.sub(r"(?m)(\S)::[ \t]*$", r"\1:", text)


def fix_docstring(text: str) -> str:
    """The docstring ``text`` with roles converted and trailing paragraphs moved up."""
    text = _literal_markers(_ROLE.sub(_role, text))
    lines = text.splitlines()
    first_field = next((i for i, line in enumerate(lines) if _FIELD.match(line)), None)
    if first_field is None:
        return text
    fields: list[str] = []
    trailing: list[str] = []
    in_fields = True
    blank = False
    for line in lines[first_field:]:
        if not line.strip():
            (fields if in_fields else trailing).append(line)
            blank = True
            continue
        if in_fields and (_FIELD.match(line) or line[:1].isspace() or not blank):
            fields.append(line)
        elif _FIELD.match(line):
            in_fields = True
            fields.append(line)
        else:
            in_fields = False
            trailing.append(line)
        blank = False
    if not any(line.strip() for line in trailing):
        return text
    head = lines[:first_field]
    while head and not head[-1].strip():
        head.pop()
    body = [*head, "", *[t for t in _strip(trailing)], "", *_strip(fields)]
    return "\n".join(body).strip("\n")


def _strip(block: list[str]) -> list[str]:
    start, end = 0, len(block)
    while start < end and not block[start].strip():
        start += 1
    while end > start and not block[end - 1].strip():
        end -= 1
    return block[start:end]


class SphinxDocstrings(griffe.Extension):
    """Apply :func:`fix_docstring` to every object's docstring when it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fix_docstring(obj.docstring.value)
