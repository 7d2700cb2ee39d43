"""Read a manifest's YAML into plain data, refusing hostile documents while parsing.

The document is read event by event (libyaml's C parser when present) and built without
recursion, so every limit is checked as the events arrive and an over-limit manifest is refused
after reading only as far as the limit: nesting depth, YAML nodes counted after alias expansion
("billion laughs"), scalar length, number length, and a budget of CPU time. The same pass
refuses what would otherwise be silently wrong: duplicate keys (naming both lines), tags other
than YAML's plain types, control characters in values. Mapping keys are always text, so a
field path is made of names and indices only.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from core.domain import JobError
from manifests.errors import MAX_ERRORS, ManifestInvalid, format_path

try:  # libyaml: about five times faster than the pure-Python parser
    from yaml.cyaml import CParser as _EventParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _EventParser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)

        def dispose(self) -> None:
            pass


MAX_MANIFEST_BYTES = 1 << 20  # 1 MiB: a manifest with hundreds of inputs is ~50 kB
MAX_NODES = 20_000  # after alias expansion; 500 inputs with overrides need under 10,000
MAX_DEPTH = 32  # the deepest value of a manifest is 8 levels down (a face_map entry's path)
MAX_SCALAR_CHARS = 4096  # a path may be 1024 characters
MAX_NUMBER_CHARS = 32  # far beyond any option's range; Python refuses 4,300+ digit integers
# A backstop: within the limits above a load takes well under 0.2 s of CPU. CPU time, not the
# wall clock, so a busy machine never refuses a manifest a quiet one accepts.
LOAD_BUDGET_SECONDS = 2.0
# libyaml's own nesting cap (1000 levels), as its scanner words it.
_LIBYAML_TOO_DEEP = "exceeded maximum nesting depth"

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"

# YAML 1.1 reads `9:16` as the base-60 integer 556, so `aspect: 9:16` — the obvious way to
# write an aspect — would fail as "not a string". YAML 1.2 dropped base-60; so do we. Dates are
# text too: no option is a date, and `version: 2001-01-01` should say "must be 1", not fail
# on a datetime.
_BASE_60 = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")


_IMPLICIT = {
    first: [(_STR, _BASE_60)] * (first in "-+0123456789")
    + [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}
_DECIMAL = re.compile(r"[-+]?[1-9][0-9]*\Z|0\Z")


def _plain_tag(value: str) -> str:
    """The type YAML gives an unquoted scalar (PyYAML's resolver, with _IMPLICIT's changes)."""
    for tag, regexp in _IMPLICIT.get(value[:1], ()):
        if regexp.match(value):
            return tag
    return _STR


# Text the reader refuses before parsing: C0 controls other than tab and line breaks, DEL,
# C1 controls (NEL included), and the non-characters U+FFFE/U+FFFF.
_BAD_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff]")
# In a value (after escapes such as "\x07" are decoded) only tab and line breaks may remain.
_BAD_VALUE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _refuse(code: str, message: str, where: str | None = None) -> ManifestInvalid:
    return ManifestInvalid([JobError(code=code, message=message, field=where)])


def _at(line: int, column: int) -> str:
    return f"line {line}, column {column}"


def decode(data: bytes) -> str:
    """UTF-8 (a byte-order mark is fine) without control characters, or ManifestInvalid."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise _refuse(
            "MANIFEST_TOO_LARGE",
            f"manifest is {len(data)} bytes; the limit is {MAX_MANIFEST_BYTES}",
        )
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _refuse("MANIFEST_ENCODING", "the manifest is UTF-16; save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8-sig")
        line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
        raise _refuse(
            "MANIFEST_ENCODING",
            f"not UTF-8 text: byte 0x{data[exc.start]:02X} ({exc.reason})",
            _at(line, column),
        ) from None
    bad = _BAD_TEXT.search(text)
    if bad:
        i = bad.start()
        line, column = text.count("\n", 0, i) + 1, i - text.rfind("\n", 0, i)
        raise _refuse(
            "MANIFEST_ENCODING",
            f"control character U+{ord(bad.group()):04X} in the manifest",
            _at(line, column),
        )
    return text


@dataclass
class _Open:
    """A mapping or sequence being built."""

    value: dict[str, Any] | list[Any]
    path: tuple[str | int, ...]
    anchor: str | None
    nodes_before: int
    depth: int
    deepest: int
    key: str | None = None  # mappings: the key whose value comes next
    merge_next: bool = False  # mappings: the next value is a `<<` merge
    merges: list[tuple[Any, int]] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)  # key → line it was written on


@dataclass
class _Anchor:
    value: Any
    nodes: int  # after expansion
    height: int  # levels below it
    done: bool


class _Reader:
    def __init__(self, text: str, budget: float) -> None:
        self.text = text
        self.deadline = time.thread_time() + budget
        self.budget = budget
        constructor = SafeConstructor()
        self.scalar_types = {
            _INT: constructor.construct_yaml_int,
            _FLOAT: constructor.construct_yaml_float,
            _BOOL: constructor.construct_yaml_bool,
            _NULL: constructor.construct_yaml_null,
        }
        self.anchors: dict[str, _Anchor] = {}
        self.stack: list[_Open] = []
        self.nodes = 0
        self.errors: list[JobError] = []
        self.root: Any = None
        self.have_root = False

    # -- errors ----------------------------------------------------------------------------
    def _where(self, path: tuple[str | int, ...], mark: Any) -> str:
        return format_path(path) if path else _at(mark.line + 1, mark.column + 1)

    def _error(
        self, code: str, message: str, path: tuple[str | int, ...], mark: Any, line: bool = True
    ) -> None:
        if path and line:  # a field path says which field; the line helps find it in the text
            message += f" (line {mark.line + 1})"
        self.errors.append(JobError(code=code, message=message, field=self._where(path, mark)))
        if len(self.errors) > MAX_ERRORS:
            raise ManifestInvalid(self.errors)

    # -- building --------------------------------------------------------------------------
    def _child_path(self) -> tuple[str | int, ...]:
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.value, list):
            return (*top.path, len(top.value))
        return (*top.path, "<<" if top.merge_next else str(top.key))

    def _count(self, added: int, height: int, mark: Any) -> None:
        self.nodes += added
        if self.nodes > MAX_NODES:
            raise _refuse(
                "MANIFEST_TOO_LARGE",
                f"more than {MAX_NODES} YAML nodes (after expanding aliases)",
                _at(mark.line + 1, mark.column + 1),
            )
        depth = len(self.stack) + height
        if depth > MAX_DEPTH:
            raise _refuse(
                "MANIFEST_TOO_DEEP",
                f"nested deeper than {MAX_DEPTH} levels",
                _at(mark.line + 1, mark.column + 1),
            )
        if self.stack and depth > self.stack[-1].deepest:
            self.stack[-1].deepest = depth

    def _attach(self, value: Any, mark: Any) -> None:
        if not self.stack:
            self.root, self.have_root = value, True
            return
        top = self.stack[-1]
        if isinstance(top.value, list):
            top.value.append(value)
        elif top.merge_next:
            top.merges.append((value, mark.line + 1))
            top.merge_next = False
        else:
            assert top.key is not None
            top.value[top.key] = value
            top.key = None

    def _key(self, event: yaml.Event, top: _Open) -> None:
        """`event` comes where `top` (a mapping) expects a key."""
        line = event.start_mark.line + 1
        if not isinstance(event, yaml.ScalarEvent):
            self._error(
                "MANIFEST_FIELD",
                "a key must be a plain name, not a list, a mapping or an alias",
                top.path,
                event.start_mark,
            )
            raise ManifestInvalid(self.errors)  # its value cannot be placed; stop here
        name = event.value
        if name == "<<" and event.tag in (None, "!") and event.implicit[0]:  # a merge key
            top.merge_next = True
            self._count(1, 1, event.start_mark)
            return
        if len(name) > 256 or _BAD_VALUE.search(name):
            self._error(
                "MANIFEST_FIELD",
                "a key must be a short printable name",
                top.path,
                event.start_mark,
            )
            name = f"?{len(top.lines)}"
        self._count(1, 1, event.start_mark)
        first = top.lines.get(name)
        if first is not None:
            self._error(
                "MANIFEST_DUPLICATE_KEY",
                f"duplicate key {name} (lines {first} and {line}); a key may appear once",
                (*top.path, name),
                event.start_mark,
                line=False,
            )
        else:
            top.lines[name] = line
        if event.anchor:  # `&k name: …` lets `*k` repeat the name as a value
            self.anchors[event.anchor] = _Anchor(name, 1, 1, done=True)
        top.key = name

    def _scalar(self, event: yaml.ScalarEvent) -> Any:
        value, mark = event.value, event.start_mark
        tag = event.tag
        if tag in (None, "!"):
            tag = _plain_tag(value) if event.implicit[0] else _STR
        problem = None
        if len(value) > MAX_SCALAR_CHARS:
            problem = f"a value of {len(value)} characters; the limit is {MAX_SCALAR_CHARS}"
        elif _BAD_VALUE.search(value):
            bad = _BAD_VALUE.search(value)
            assert bad is not None
            problem = f"control character U+{ord(bad.group()):04X} in a value"
        elif tag == _STR:
            return value
        elif tag in (_INT, _FLOAT) and len(value) > MAX_NUMBER_CHARS:
            problem = f"a number of {len(value)} characters; the limit is {MAX_NUMBER_CHARS}"
        elif tag == _INT and _DECIMAL.match(value):
            return int(value)
        elif tag not in self.scalar_types:
            problem = f"the YAML tag {tag} is not allowed here"
        else:
            try:
                return self.scalar_types[tag](yaml.ScalarNode(tag, value, mark, mark))
            except (ValueError, KeyError, ArithmeticError):
                shown = value if len(value) <= 40 else value[:40] + "…"
                problem = f"{shown} is not a valid {tag.rsplit(':')[-1]}"
        self._error("MANIFEST_FIELD", problem, self._child_path(), mark)
        return None

    def _start(self, event: yaml.CollectionStartEvent, path: tuple[str | int, ...]) -> None:
        is_map = isinstance(event, yaml.MappingStartEvent)
        if event.tag not in (None, "!", _MAP if is_map else _SEQ):
            self._error(
                "MANIFEST_FIELD",
                f"the YAML tag {event.tag} is not allowed here",
                path,
                event.start_mark,
            )
        value: dict[str, Any] | list[Any] = {} if is_map else []
        self._count(1, 1, event.start_mark)
        if event.anchor:
            self.anchors[event.anchor] = _Anchor(value, 0, 0, done=False)
        self._attach(value, event.start_mark)
        depth = len(self.stack) + 1
        self.stack.append(_Open(value, path, event.anchor, self.nodes - 1, depth, depth))

    def _end(self, event: yaml.Event) -> None:
        done = self.stack.pop()
        if self.stack and done.deepest > self.stack[-1].deepest:
            self.stack[-1].deepest = done.deepest
        if done.merges:
            self._merge(done, event)
        if done.anchor:
            self.anchors[done.anchor] = _Anchor(
                done.value, self.nodes - done.nodes_before, done.deepest - done.depth + 1, True
            )

    def _merge(self, done: _Open, event: yaml.Event) -> None:
        """`<<: *base` or `<<: [*a, *b]`: keys written in the mapping win, then earlier ones."""
        assert isinstance(done.value, dict)
        for merged, line in done.merges:
            sources = merged if isinstance(merged, list) else [merged]
            if not all(isinstance(s, dict) for s in sources):
                self._error(
                    "MANIFEST_FIELD",
                    f"`<<` merges a mapping or a list of mappings (line {line})",
                    done.path,
                    event.start_mark,
                    line=False,
                )
                continue
            for source in sources:
                for key, value in source.items():
                    done.value.setdefault(key, value)

    def _alias(self, event: yaml.AliasEvent) -> None:
        anchor = self.anchors.get(event.anchor)
        line = event.start_mark.line + 1
        if anchor is None or not anchor.done:
            problem = "is not defined" if anchor is None else "is inside its own anchor"
            raise _refuse(
                "MANIFEST_YAML",
                f"alias *{event.anchor} {problem}",
                _at(line, event.start_mark.column + 1),
            )
        self._count(anchor.nodes, anchor.height, event.start_mark)
        self._attach(anchor.value, event.start_mark)

    # -- the event loop ----------------------------------------------------------------------
    def read(self) -> Any:
        parser = _EventParser(self.text)
        try:
            return self._read(parser)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = _at(mark.line + 1, mark.column + 1) if mark else None
            problem = " ".join((exc.problem or str(exc)).split())  # one line
            if _LIBYAML_TOO_DEEP in problem:
                # libyaml (PyYAML 6.0.4's bundled copy) caps nesting itself and, scanning
                # ahead, can hit its cap before our count reaches MAX_DEPTH: the same finding.
                raise _refuse(
                    "MANIFEST_TOO_DEEP", f"nested deeper than {MAX_DEPTH} levels", where
                ) from None
            raise _refuse("MANIFEST_YAML", f"YAML syntax error: {problem}", where) from None
        except yaml.YAMLError as exc:
            raise _refuse("MANIFEST_YAML", "YAML error: " + " ".join(str(exc).split())) from None
        finally:
            parser.dispose()

    def _read(self, parser: Any) -> Any:
        documents = 0
        steps = 0
        while True:
            event = parser.get_event()
            if event is None or isinstance(event, yaml.StreamEndEvent):
                break
            steps += 1
            if not steps & 1023 and time.thread_time() > self.deadline:
                raise _refuse(
                    "MANIFEST_TOO_LARGE", f"reading the manifest took over {self.budget:g} s of CPU"
                )
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    mark = event.start_mark
                    raise _refuse(
                        "MANIFEST_YAML",
                        "a manifest is one YAML document; this is a second one",
                        _at(mark.line + 1, mark.column + 1),
                    )
                continue
            if isinstance(event, (yaml.StreamStartEvent, yaml.DocumentEndEvent)):
                continue
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                self._end(event)
                continue
            top = self.stack[-1] if self.stack else None
            if (
                top is not None
                and isinstance(top.value, dict)
                and top.key is None
                and not top.merge_next
            ):
                self._key(event, top)
                continue
            if isinstance(event, yaml.AliasEvent):
                self._alias(event)
            elif isinstance(event, yaml.ScalarEvent):
                self._count(1, 1, event.start_mark)
                value = self._scalar(event)
                if event.anchor:
                    self.anchors[event.anchor] = _Anchor(value, 1, 1, done=True)
                self._attach(value, event.start_mark)
            else:
                self._start(event, self._child_path())
        return self.root if self.have_root else None


def read_document(data: bytes, budget: float = LOAD_BUDGET_SECONDS) -> tuple[Any, list[JobError]]:
    """Manifest bytes → (plain data, the errors that did not stop the reading).

    Limits, broken YAML and bad text raise ManifestInvalid at once. A duplicate key, a bad
    value or tag is listed instead, so the caller can report it together with the model's
    errors: the data holds the last of the duplicates, and None where a value was refused.
    """
    reader = _Reader(decode(data), budget)
    document = reader.read()
    return document, reader.errors


def read_yaml(data: bytes, budget: float = LOAD_BUDGET_SECONDS) -> Any:
    """Manifest bytes → plain data (dicts with text keys, lists, scalars), or ManifestInvalid."""
    document, errors = read_document(data, budget)
    if errors:
        raise ManifestInvalid(errors)
    return document
