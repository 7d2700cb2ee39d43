"""Globs in `inputs[].video`: parsed and checked at load time, matched without backtracking.

Syntax (a path is a glob when it holds `*`, `?` or `[`):

- `*` any run of characters within one folder name, `?` one character (never `/`);
- `[abc]`, `[a-z]`, `[!abc]` one character of (or not of) a class; a class must hold at least
  one character, ranges must run upwards, and `/` cannot be in one;
- a folder name that is exactly `**` spans any number of folders (`clips/**/*.mp4`); anywhere
  else `**` is just `*`;
- a glob character stands for itself inside brackets: `Interview [[]final].mp4` names the file
  `Interview [final].mp4` (what Python's `glob.escape` writes).

Matching never backtracks more than one level: within a folder name the pieces between `*`s
have a fixed length and each is placed at its leftmost fit (greedy, which is exact for `*`), and
the folder names between `**`s are placed the same way. Each piece is a quantifier-free regex,
so the cost is bounded by (pattern length × name length) character steps, run in C.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GLOB_CHARS = frozenset("*?[")


class GlobError(ValueError):
    """The pattern is malformed; the message says how to write it."""


@dataclass(frozen=True)
class _Segment:
    """One folder name of a pattern: fixed-length pieces joined by `*`."""

    pieces: tuple[re.Pattern[str], ...]  # len ≥ 1; `*` between consecutive pieces
    lengths: tuple[int, ...]
    literal: str | None  # the exact name when the segment has no wildcard at all

    def matches(self, name: str) -> bool:
        if self.literal is not None:
            return name == self.literal
        first, last = self.pieces[0], self.pieces[-1]
        head, tail = self.lengths[0], self.lengths[-1]
        if len(self.pieces) == 1:
            return len(name) == head and first.fullmatch(name) is not None
        if head + tail > len(name) or not first.fullmatch(name, 0, head):
            return False
        end = len(name) - tail
        if not last.fullmatch(name, end):
            return False
        pos = head
        for k in range(1, len(self.pieces) - 1):
            piece = self.pieces[k]
            found = piece.search(name, pos, end)  # leftmost fit: greedy is exact for `*`
            if found is None:
                return False
            pos = found.end()
        return True


_ANY_SEGMENTS = None  # a `**` folder name
_CLASS_WITH_SLASH = re.compile(r"\[[^\]/]*/[^\]]*\]")


@dataclass(frozen=True)
class Glob:
    """A parsed pattern; `match(name)` tests a path relative to the manifest's folder."""

    pattern: str
    segments: tuple[_Segment | None, ...]  # None: `**`
    groups: tuple[tuple[_Segment, ...], ...]  # the runs of segments between `**`s

    @property
    def literal(self) -> str | None:
        """The one name this pattern can match, when it has no wildcard (only escapes)."""
        if any(s is None or s.literal is None for s in self.segments):
            return None
        return "/".join(s.literal for s in self.segments if s is not None)

    def match(self, name: str) -> bool:
        parts, groups = name.split("/"), self.groups
        if len(groups) == 1:
            return len(parts) == len(groups[0]) and _fits(groups[0], parts, 0)
        first, last = groups[0], groups[-1]
        end = len(parts) - len(last)
        if end < len(first) or not _fits(first, parts, 0) or not _fits(last, parts, end):
            return False
        pos = len(first)
        for group in groups[1:-1]:  # leftmost fit of each run of names between `**`s
            while True:
                if pos + len(group) > end:
                    return False
                if _fits(group, parts, pos):
                    break
                pos += 1
            pos += len(group)
        return True


def _fits(group: tuple[_Segment, ...], parts: list[str], pos: int) -> bool:
    """Each segment of `group` matches the name part at `pos`, `pos + 1`, …"""
    if pos + len(group) > len(parts):
        return False
    return all(segment.matches(parts[pos + k]) for k, segment in enumerate(group))


def _split_on_globstar(segments: tuple[_Segment | None, ...]) -> tuple[tuple[_Segment, ...], ...]:
    groups: list[list[_Segment]] = [[]]
    for segment in segments:
        if segment is None:
            groups.append([])
        else:
            groups[-1].append(segment)
    return tuple(tuple(group) for group in groups)


def is_glob(value: str) -> bool:
    return any(c in GLOB_CHARS for c in value)


def _class(pattern: str, start: int) -> tuple[str, int]:
    """Parse the class opening at `pattern[start] == '['`: (regex, index after `]`)."""
    i = start + 1
    negate = i < len(pattern) and pattern[i] in "!^"
    if negate:
        i += 1
    members: list[str] = []
    while i < len(pattern) and pattern[i] != "]":
        low = pattern[i]
        if i + 2 < len(pattern) and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            high = pattern[i + 2]
            if high < low:
                raise GlobError(f"the range {low}-{high} runs backwards")
            members.append(f"{re.escape(low)}-{re.escape(high)}")
            if low <= "/" <= high:
                raise GlobError("a [...] class cannot match '/'")
            i += 3
            continue
        if low == "/":
            raise GlobError("a [...] class cannot match '/'")
        members.append(re.escape(low))
        i += 1
    if i >= len(pattern):
        raise GlobError("'[' opens a class that is never closed; write '[[]' for a literal '['")
    if not members:
        raise GlobError(
            f"{pattern[start : i + 1]} is an empty class; write '[[]' for a literal '['"
        )
    body = "".join(members)
    return (f"[^/{body}]" if negate else f"[{body}]"), i + 1


def _segment(text: str) -> _Segment:
    pieces: list[list[str]] = [[]]
    literal: list[str] | None = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "*":
            while i < len(text) and text[i] == "*":  # `**` inside a name is `*`
                i += 1
            pieces.append([])
            literal = None
            continue
        if c == "?":
            pieces[-1].append("[^/]")
            literal = None
            i += 1
            continue
        if c == "[":
            regex, after = _class(text, i)
            inner = text[i + 1 : after - 1]
            if len(inner) == 1 and inner in GLOB_CHARS:  # `[[]`, `[*]`, `[?]`: an escape
                pieces[-1].append(re.escape(inner))
                if literal is not None:
                    literal.append(inner)
            else:
                pieces[-1].append(regex)
                literal = None
            i = after
            continue
        pieces[-1].append(re.escape(c))
        if literal is not None:
            literal.append(c)
        i += 1
    return _Segment(
        pieces=tuple(re.compile("".join(p), re.DOTALL) for p in pieces),
        lengths=tuple(len(p) for p in pieces),
        literal=None if literal is None else "".join(literal),
    )


def parse_glob(pattern: str) -> Glob:
    """Parse and check a pattern; raises GlobError with the reason a user needs."""
    if _CLASS_WITH_SLASH.search(pattern):
        raise GlobError("a [...] class cannot match '/'")
    segments = tuple(
        _ANY_SEGMENTS if part == "**" else _segment(part) for part in pattern.split("/")
    )
    return Glob(pattern=pattern, segments=segments, groups=_split_on_globstar(segments))
