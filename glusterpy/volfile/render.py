"""Writing a parsed volfile back in canonical form.

Canonical form: one `volume NAME` block per volume in definition order, indented by four
spaces, `type` first, the options in the order they were written, `subvolumes` last, then
`end-volume`, with a blank line between volumes. A word is quoted (with backslash escapes)
when it would not read back as the same single word otherwise. Comments are not kept.

Invariant: `parse_text(render(v))` has the same volumes, types, options and subvolumes as `v`.
"""

from __future__ import annotations

import logging

from glusterpy.volfile.model import Volfile, VolumeDef
from glusterpy.volfile.parse import KEYWORDS

log = logging.getLogger(__name__)

INDENT = "    "
# Characters that end an unquoted word, start a comment or would be refused unquoted.
_NEEDS_QUOTES = frozenset(' \t\r\n#"\\`')
# Characters a quoted string writes with a backslash in front.
_ESCAPED = frozenset('"\\`')


def quote(word: str) -> str:
    """`word` as the volfile lexer will read it back: bare when possible, quoted otherwise."""
    if "\n" in word:
        raise ValueError(f"a volfile word cannot contain a newline: {word!r}")
    if word and word not in KEYWORDS and not _NEEDS_QUOTES.intersection(word):
        return word
    escaped = "".join("\\" + c if c in _ESCAPED else c for c in word)
    return f'"{escaped}"'


def render_volume(volume: VolumeDef) -> str:
    lines = [f"volume {quote(volume.name)}", f"{INDENT}type {quote(volume.type)}"]
    for key, value in volume.options.items():
        lines.append(f"{INDENT}option {quote(key)} {quote(value)}")
    if volume.subvolumes:
        names = " ".join(quote(name) for name in volume.subvolumes)
        lines.append(f"{INDENT}subvolumes {names}")
    lines.append("end-volume")
    return "\n".join(lines) + "\n"


def render(volfile: Volfile) -> str:
    """The whole volfile in canonical form, ending with a newline."""
    return "\n".join(render_volume(volume) for volume in volfile.volumes)
