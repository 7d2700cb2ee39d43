"""Hostile manifests: mutations of valid ones, as an adversarial uploader would write them.

Each mutation is a function of a `random.Random`, so the property test (hypothesis drives the
random source and shrinks it) and `bench/hostile_manifests.py` (a seeded tally over thousands
of documents, run against any version of the loader) draw from the same documents. Nothing
here imports the loader.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path

# What an error's `field` may be: a path of names, quoted keys and indices
# (`chain[1].swap.source[0]`, `compute["chunk seconds"]`), or a place in the text.
FIELD_PATH = re.compile(
    r'(?:[A-Za-z_][A-Za-z0-9_-]*|\["(?:[^"\\]|\\.)*"\])'
    r'(?:\.[A-Za-z_][A-Za-z0-9_-]*|\["(?:[^"\\]|\\.)*"\]|\[\d+\])*'
    r"|line \d+, column \d+|\(manifest\)"
)

EXAMPLES = sorted((Path(__file__).parents[1] / "manifests" / "examples").glob("*.yaml"))

SMALL = [
    b"version: 1\ninputs: talk.mp4\nchain: [crop]\n",
    b"version: 1\ninputs:\n  - video: clips/*.mp4\n    overrides: {crop: {aspect: '1:1'}}\n"
    b"chain:\n  - crop: {aspect: '9:16'}\n  - swap: {source: [faces/a.jpg]}\n",
    b"version: 1\ninputs: [{video: a.mp4, audio: v.wav}]\nchain: [{lipsync: {audio: v.wav}}]\n"
    b"compute: {chunk_seconds: 5, max_parallel_tasks: 4}\noutput: {prefix: out/, crf: 20}\n",
]


def bases() -> list[bytes]:
    return [*SMALL, *(p.read_bytes() for p in EXAMPLES)]


def _base(rng: random.Random) -> bytes:
    return rng.choice(bases())


def _with(rng: random.Random, snippet: bytes) -> bytes:
    """A valid manifest with `snippet` placed somewhere a value or key can go."""
    where = rng.randrange(4)
    if where == 0:  # an extra top-level key
        return _base(rng) + b"x: " + snippet + b"\n"
    if where == 1:  # as the inputs
        return b"version: 1\ninputs: " + snippet + b"\nchain: [crop]\n"
    if where == 2:  # as an option of a step
        key = rng.choice([b"aspect", b"padding", b"detect_every", b"model", b"bogus"])
        return b"version: 1\ninputs: a.mp4\nchain: [{crop: {" + key + b": " + snippet + b"}}]\n"
    field = rng.choice([b"compute: {crf: ", b"output: {crf: ", b"compute: {chunk_seconds: "])
    return b"version: 1\ninputs: a.mp4\n" + field + snippet + b"}\n"


def nesting(rng: random.Random) -> bytes:
    depth = rng.choice([8, 31, 33, 64, 200, 1000, 10_000, 100_000, 400_000])
    kind = rng.randrange(4)
    if kind == 0:
        snippet = b"[" * depth + b"]" * depth
    elif kind == 1:
        snippet = b"{a: " * depth + b"1" + b"}" * depth
    elif kind == 2:
        snippet = b"[" * depth  # never closed
    else:
        depth = min(depth, 1000)  # block style: indentation grows with depth
        lines = [b"  " * i + b"a:" for i in range(depth)]
        return _base(rng) + b"deep:\n" + b"\n".join(b"  " + line for line in lines) + b" 1\n"
    return _with(rng, snippet)


def huge_numbers(rng: random.Random) -> bytes:
    digits = rng.choice([19, 20, 33, 300, 4299, 4301, 10_000, 100_000])
    body = b"".join(b"%d" % rng.randrange(10) for _ in range(min(digits, 64)))
    number = (b"9" + body * (digits // max(len(body), 1) + 1))[:digits]
    form = rng.randrange(7)
    if form == 1:
        number = b"-" + number
    elif form == 2:
        number = b"0x" + number
    elif form == 3:
        number = number[: digits // 2] + b"." + number[digits // 2 :] + b"e99999"
    elif form == 4:
        number = b"1_" * (digits // 2) + b"1"
    elif form == 5:
        number = b"!!int '" + number + b"'"
    elif form == 6:
        return b"version: " + number + b"\ninputs: a.mp4\n"
    return _with(rng, number)


def random_bytes(rng: random.Random) -> bytes:
    data = bytearray(_base(rng))
    for _ in range(rng.randint(1, 16)):
        pos = rng.randrange(len(data) + 1)
        if rng.random() < 0.5:
            data[pos:pos] = bytes([rng.randrange(256)])
        elif pos < len(data):
            data[pos] = rng.randrange(256)
    return bytes(data)


CONTROL = [*range(0, 32), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029, 0x200B, 0x200E, 0x202E]
CONTROL += [0xFEFF, 0xFFFE, 0xFFFF, 0xE000, 0x1F600]


def control_chars(rng: random.Random) -> bytes:
    code = rng.choice(CONTROL)
    if rng.random() < 0.5:  # raw, somewhere in the text
        data = _base(rng)
        pos = rng.randrange(len(data) + 1)
        return data[:pos] + chr(code).encode("utf-8", "surrogatepass") + data[pos:]
    # escaped in a double-quoted path: the parser decodes it into the value
    escape = rng.choice([f"\\x{code:02x}", f"\\u{code:04x}", "\\0", "\\a", "\\e", "\\N", "\\ud800"])
    if code > 0xFF and escape.startswith("\\x"):
        escape = f"\\u{code:04x}"
    path = rng.choice(["clip{}.mp4", "{}clip.mp4", "clips/{}/a.mp4"]).format(escape)
    return _paths_doc(rng, f'"{path}"'.encode())


def duplicate_keys(rng: random.Random) -> bytes:
    data = _base(rng)
    lines = data.split(b"\n")
    choice = rng.randrange(3)
    if choice == 0:  # a top-level line written twice
        keyed = [i for i, line in enumerate(lines) if line[:1].isalpha()]
        i = rng.choice(keyed)
        lines.insert(rng.randrange(i + 1, len(lines) + 1), lines[i])
        return b"\n".join(lines)
    if choice == 1:
        return b"version: 1\ninputs: [{video: a.mp4, video: b.mp4}]\n"
    key = rng.choice([b"crf", b"'crf'", b'"crf"', b"? crf"])
    return b"version: 1\ninputs: a.mp4\noutput: {crf: 20, " + key + b": 30}\n"


def billion_laughs(rng: random.Random) -> bytes:
    width, levels = rng.randint(2, 20), rng.randint(1, 12)
    lines = [b'a0: &a0 ["lol"' + b', "lol"' * (width - 1) + b"]"]
    for level in range(1, levels):
        aliases = b", ".join([b"*a%d" % (level - 1)] * width)
        lines.append(b"a%d: &a%d [%s]" % (level, level, aliases))
    where = rng.randrange(2)
    head = b"version: 1\ninputs: a.mp4\n" if where else b""
    return head + b"\n".join(lines) + b"\n"


ODD_YAML = [
    b"!!python/object/apply:os.system ['true']",
    b"!!python/name:os.system",
    b"!!binary aGVsbG8=",
    b"!!set {a, b}",
    b"!!omap [a: 1, b: 2]",
    b"!!pairs [a: 1]",
    b"!!timestamp 2001-01-01",
    b"2001-01-01",
    b"2001-12-14t21:59:43.10-05:00",
    b"!custom x",
    b"!!int abc",
    b"!!float x",
    b"!!bool maybe",
    b"!!null x",
    b"!!str [a]",
    b"!!map [a]",
    b"!<tag:yaml.org,2002:str> x",
    b"&a x",
    b"*nowhere",
    b"&r [*r]",
    b"&m {a: *m}",
    b".nan",
    b"-.inf",
    b"0o17",
    b"1:30",
    b"~",
    b"[]",
    b"{}",
    b"[1, [2, [3]]]",
    b"{<<: 5}",
    b"{<<: [1, 2]}",
    b"{? [a] : b}",
    b"{? {a: b} : c}",
    b"|\n  text\n",
    b'"\\ud800"',
]

ODD_DOCS = [
    b"%YAML 1.1\n---\nversion: 1\ninputs: a.mp4\n",
    b"%YAML 2.0\n---\nversion: 1\ninputs: a.mp4\n",
    b"%TAG ! tag:evil.example,2000:\n---\nversion: 1\ninputs: !x a.mp4\n",
    b"version: 1\ninputs: a.mp4\n---\nversion: 1\ninputs: b.mp4\n",
    b"---\n...\n---\n",
    b"version: 1\ninputs: a.mp4\n...\ngarbage: [\n",
    b"base: &b {aspect: '1:1'}\nversion: 1\ninputs: a.mp4\n",
    b"version: 1\ninputs: [{video: a.mp4, overrides: {crop: {<<: *b}}}]\n",
    b"version: 1\ninputs: a.mp4\nchain: [{crop: &c {aspect: '1:1'}}, {swap: {<<: *c}}]\n",
    b"version: 1\ninputs: a.mp4\nchain: [{crop: &c {aspect: '1:1'}}]\noutput: {<<: [*c, *c]}\n",
    b"*a : b\nversion: 1\n",
    b"&a version: 1\ninputs: *a\n",
    b"? - a\n  - b\n: c\n",
    b"\xef\xbb\xbfversion: 1\ninputs: a.mp4\n",
    b"\xef\xbb\xbf\xef\xbb\xbfversion: 1\ninputs: a.mp4\n",
    "version: 1\ninputs: a.mp4\n".encode("utf-16"),
    "version: 1\ninputs: é.mp4\n".encode("latin-1"),
    "version: 1\ninputs: a.mp4\n".encode("utf-32"),
    b"",
    b"\n",
    b"- a\n- b\n",
    b"42",
    b"version: 1\n\tinputs: a.mp4\n",
    b"version: 1\ninputs: a.mp4\r\nchain: [crop]\r\n",
    b"version: 1\rinputs: a.mp4\r",
]


def odd_yaml(rng: random.Random) -> bytes:
    if rng.random() < 0.4:
        return rng.choice(ODD_DOCS)
    snippet = rng.choice(ODD_YAML)
    if rng.random() < 0.3:  # as a key
        return b"version: 1\ninputs: a.mp4\ncompute: {" + snippet + b": 1}\n"
    return _with(rng, snippet)


GLOB_ALPHABET = "**??[[]]!^-ab.Z/ \\{}"


def _glob_text(rng: random.Random) -> str:
    choice = rng.randrange(4)
    if choice == 0:  # catastrophic backtracking for a regex translation
        return "*a" * rng.randint(5, 60) + "*b.mp4"
    if choice == 1:
        return "".join(rng.choice(GLOB_ALPHABET) for _ in range(rng.randint(1, 40)))
    if choice == 2:
        return rng.choice(
            ["a[]b.mp4", "a[!]b.mp4", "[z-a].mp4", "a[/]b", "[", "]", "[[]", "x[*].mp4", "**/**/*"]
        )
    return "**/" * rng.randint(1, 30) + "*a" * rng.randint(1, 30) + "?[ab]"


def globs(rng: random.Random) -> bytes:
    text = _glob_text(rng).replace("'", "''")
    return f"version: 1\ninputs:\n  - video: '{text}'\nchain: [crop]\n".encode()


PATH_PARTS = [
    "./", "../", "/", "~", "C:", "\\", " ", "\t", "x", "clip.mp4", "\u200b", "\u202e", "\u00a0",
    "\u3000", "//", "://", ".", "..", "a b", "é", "\U0001f600", "gs:", "-", "out/", "\u2028",
]  # fmt: skip


def _paths_doc(rng: random.Random, path: bytes) -> bytes:
    field = rng.randrange(6)
    if field == 0:
        return b"version: 1\ninputs: " + path + b"\n"
    if field == 1:
        return b"version: 1\ninputs: [{video: a.mp4, audio: " + path + b"}]\n"
    if field == 2:
        return b"version: 1\ninputs: a.mp4\nchain: [{swap: {source: " + path + b"}}]\n"
    if field == 3:
        return (
            b"version: 1\ninputs: a.mp4\nchain: [{swap: {face_map: [{reference: "
            + path
            + b", source: s.jpg}]}}]\n"
        )
    if field == 4:
        return b"version: 1\ninputs: a.mp4\nchain: [{lipsync: {audio: " + path + b"}}]\n"
    return b"version: 1\ninputs: a.mp4\noutput: {prefix: " + path + b"}\n"


def paths(rng: random.Random) -> bytes:
    text = "".join(rng.choice(PATH_PARTS) for _ in range(rng.randint(1, 8)))
    quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t") + '"'
    return _paths_doc(rng, quoted.encode("utf-8", "surrogatepass"))


def odd_keys(rng: random.Random) -> bytes:
    key = rng.choice(
        [b"1", b"~", b"null", b"2001-01-01", b"true", b"on", b"1.5", b'""', b"'a.b'", b"'a b'",
         b'"\\x07"', b"'[0]'", b"x" * 5000, b"'" + b"k" * 300 + b"'", b"<<", b"!!int 3", b"-1"]
    )  # fmt: skip
    where = rng.choice([b"", b"compute: {", b"chain: [{crop: {", b"inputs: [{video: a.mp4, "])
    close = {b"": b"", b"compute: {": b"}", b"chain: [{crop: {": b"}}]"}.get(where, b"}]")
    head = b"version: 1\n" + (b"inputs: a.mp4\n" if where != b"inputs: [{video: a.mp4, " else b"")
    if where == b"":
        return head + b"inputs: a.mp4\n" + key + b": 1\n"
    return head + where + key + b": 1" + close + b"\n"


def many_nodes(rng: random.Random) -> bytes:
    count = rng.choice([100, 501, 5_000, 19_990, 20_001, 100_000, 199_000, 262_000, 524_000])
    style = rng.randrange(3)
    if style == 0:
        items = b"[" + b"1," * count + b"]"
        return b"version: 1\ninputs: a.mp4\nx: " + items + b"\n"
    if style == 1:
        return b"version: 1\ninputs:\n" + b"- a\n" * min(count, 262_000)
    keys = b"".join(b"k%d: 1," % i for i in range(min(count, 25_000)))  # past the node limit
    return b"version: 1\ninputs: a.mp4\nx: {" + keys + b"}\n"


def splice(rng: random.Random) -> bytes:
    a, b = _base(rng), _base(rng)
    cut = rng.randrange(len(a) + 1)
    if rng.random() < 0.5:
        return a[:cut]
    lines = (a[:cut] + b[rng.randrange(len(b) + 1) :]).split(b"\n")
    rng.shuffle(lines)
    return b"\n".join(lines)


def values(rng: random.Random) -> bytes:
    value = rng.choice([*ODD_YAML, b"true", b"false", b"1.0", b"'1'", b"yes", b"x" * 5000, b"0"])
    field = rng.choice(
        [b"version: %s\ninputs: a.mp4\n", b"version: 1\ninputs: a.mp4\ncompute: {spot: %s}\n",
         b"version: 1\ninputs: a.mp4\nchain: [{crop: {max_speed: %s}}]\n",
         b"version: 1\ninputs: a.mp4\nchain: [{lipsync: {pads: %s}}]\n",
         b"version: 1\ninputs: a.mp4\nchain: %s\n", b"version: 1\ninputs: %s\n",
         b"version: 1\ninputs: a.mp4\noutput: %s\n"]
    )  # fmt: skip
    return field % value


MUTATIONS: dict[str, Callable[[random.Random], bytes]] = {
    "nesting": nesting,
    "huge_numbers": huge_numbers,
    "random_bytes": random_bytes,
    "control_chars": control_chars,
    "duplicate_keys": duplicate_keys,
    "billion_laughs": billion_laughs,
    "odd_yaml": odd_yaml,
    "globs": globs,
    "paths": paths,
    "odd_keys": odd_keys,
    "many_nodes": many_nodes,
    "splice": splice,
    "values": values,
}

# Object names a manifest's globs are matched against: the 40-character name that made a
# backtracking regex hang, names with glob characters, deep folders.
FOLDER = {
    "a" * 40,
    "a" * 39 + "b.mp4",
    "clips/" + "a" * 40 + ".mp4",
    "Interview [final].mp4",
    "talk.mp4",
    "a.mp4",
    "clip.mp4",
    "/".join(["a"] * 60) + "/b.mp4",
    "x*.mp4",
}
