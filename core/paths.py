"""Rules for paths a manifest may name: relative, inside the manifest's folder, plain.

A path is normalised before anything compares it with an object name (`./clips/a.mp4` and
`clips/./a.mp4` are `clips/a.mp4`), so what validates is what matches. Everything that would
make a name ambiguous, invisible or an escape is refused with the reason.
"""

from __future__ import annotations

import unicodedata

from core.globs import GlobError, is_glob, parse_glob

__all__ = ["check_relative_path", "check_video_pattern", "is_glob"]

# Unicode categories no file name of ours may hold: controls (Cc), format characters such as
# the zero-width space or the right-to-left override (Cf), lone surrogates (Cs), and line or
# paragraph separators (Zl, Zp). They make two different names look the same.
_REFUSED_CATEGORIES = {
    "Cc": "control",
    "Cf": "format",
    "Cs": "surrogate",
    "Zl": "line separator",
    "Zp": "paragraph separator",
}


def _invisible(value: str) -> str | None:
    for c in value:
        kind = _REFUSED_CATEGORIES.get(unicodedata.category(c))
        if kind:
            return f"contains the {kind} character U+{ord(c):04X}"
    return None


def check_relative_path(value: str) -> str:
    """The normalised path, or ValueError with the reason a user needs."""
    problem = _invisible(value)
    if problem:
        raise ValueError(problem)
    if "\\" in value:
        raise ValueError("use '/' as the separator (a backslash is not allowed in a path)")
    if value.startswith("/") or value.startswith("~") or (len(value) > 1 and value[1] == ":"):
        raise ValueError("must be relative to the manifest's folder, not absolute")
    if "://" in value:
        raise ValueError("must be a path in the manifest's folder, not a URL")
    parts = value.split("/")
    if ".." in parts:
        raise ValueError("must not contain '..' (nothing outside the manifest's folder)")
    kept = [p for p in parts if p != "."]
    if not kept or kept == [""]:
        raise ValueError("must name a file inside the manifest's folder")
    if kept[-1] == "":
        raise ValueError("ends with '/': name a file, not a folder")
    if "" in kept:
        raise ValueError("has an empty folder name ('//')")
    for part in kept:
        if part != part.strip():
            raise ValueError(f"'{part}' starts or ends with a space")
    return "/".join(kept)


def check_video_pattern(value: str) -> str:
    """A video path or glob: the path rules, then the glob syntax (see `core.globs`)."""
    normal = check_relative_path(value)
    if is_glob(normal):
        try:
            parse_glob(normal)
        except GlobError as exc:
            raise ValueError(f"bad glob: {exc}") from None
    return normal
