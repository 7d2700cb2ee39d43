"""The one error a manifest load raises, and the field paths its errors carry.

A field path is names and indices (`chain[1].swap.source[0]`); a key that is not a plain name
is quoted (`compute["chunk seconds"]`), so a path never shows a Python repr. An error with no
field (the file is not UTF-8, the YAML does not parse) says the line and column instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from core.domain import JobError

MAX_ERRORS = 50  # reported at once; the rest are counted
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_LONGEST_KEY = 60


class ManifestInvalid(Exception):
    """The manifest cannot run; `errors` says every reason, each with its field path."""

    def __init__(self, errors: list[JobError]) -> None:
        if len(errors) > MAX_ERRORS:
            more = len(errors) - MAX_ERRORS
            errors = [
                *errors[:MAX_ERRORS],
                JobError(code=errors[MAX_ERRORS].code, message=f"… and {more} more errors"),
            ]
        super().__init__("; ".join(e.line() for e in errors))
        self.errors = errors


def format_path(parts: Iterable[str | int]) -> str:
    """('chain', 0, 'crop', 'aspect') → 'chain[0].crop.aspect'; odd keys are quoted."""
    out = ""
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
            continue
        text = str(part)
        if _NAME.match(text):
            out += f".{text}" if out else text
        else:
            shown = text if len(text) <= _LONGEST_KEY else text[:_LONGEST_KEY] + "…"
            out += f"[{json.dumps(shown)}]"  # ASCII, every control character escaped
    return out or "(manifest)"
