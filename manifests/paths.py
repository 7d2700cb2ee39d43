"""Rules for paths a manifest may name: relative, inside the manifest's folder, plain."""

from __future__ import annotations

import posixpath

GLOB_CHARS = set("*?[")


def check_relative_path(value: str) -> None:
    """Raise ValueError (with the reason a user needs) for a path that could escape."""
    if "\x00" in value or any(ord(c) < 32 for c in value):
        raise ValueError("contains control characters")
    if "\\" in value:
        raise ValueError("use '/' as the separator")
    if value.startswith("/") or value.startswith("~") or (len(value) > 1 and value[1] == ":"):
        raise ValueError("must be relative to the manifest's folder, not absolute")
    if "://" in value:
        raise ValueError("must be a path in the manifest's folder, not a URL")
    parts = value.split("/")
    if ".." in parts:
        raise ValueError("must not contain '..' (nothing outside the manifest's folder)")
    normal = posixpath.normpath(value)
    if normal in (".", "") or normal.startswith("../"):
        raise ValueError("must name a file inside the manifest's folder")


def is_glob(value: str) -> bool:
    return any(c in GLOB_CHARS for c in value)
