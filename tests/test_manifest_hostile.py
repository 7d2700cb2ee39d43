"""Manifests written to hurt: whatever the bytes, the loader answers ManifestInvalid (with
field paths) or a Manifest, quickly; globs match in linear time; `dropbatch validate` prints
one line per error and never a traceback.

Times are checked as CPU time of this thread: the suite shares two cores with other work, and
what these tests pin is the work a document costs, not the machine's load. A wall-clock bound
(generous) still catches anything that waits instead of working.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.domain import JobError
from core.globs import GlobError, parse_glob
from dropbatch.cli import main as dropbatch_main
from manifests.loader import ManifestInvalid, load_manifest
from manifests.resolve import resolve_inputs
from tests.hostile_manifests import FIELD_PATH, FOLDER, MUTATIONS

ROOT = Path(__file__).resolve().parents[1]
HEAD = "version: 1\ninputs: a.mp4\n"
DOCUMENTS = 2000
WALL_SLACK = 5.0  # a loaded box may stall us; a hang is still caught


@contextmanager
def budget(cpu_seconds: float) -> Iterator[Callable[[], float]]:
    """Assert the block costs under `cpu_seconds` of CPU (and not absurdly long on the wall)."""
    cpu, wall = time.thread_time(), time.perf_counter()
    yield lambda: time.thread_time() - cpu
    spent, waited = time.thread_time() - cpu, time.perf_counter() - wall
    assert spent < cpu_seconds, f"{spent:.3f} s of CPU (limit {cpu_seconds} s)"
    assert waited < cpu_seconds * WALL_SLACK, f"{waited:.3f} s on the wall"


def errors_of(data: str | bytes) -> list[JobError]:
    with pytest.raises(ManifestInvalid) as caught:
        load_manifest(data.encode() if isinstance(data, str) else data)
    assert caught.value.errors
    return caught.value.errors


def only_error(data: str | bytes) -> JobError:
    errors = errors_of(data)
    assert len(errors) == 1, errors
    return errors[0]


def check_answer(data: bytes) -> str:
    """Load `data`; only ManifestInvalid may escape, and its fields are field paths.
    Returns the outcome; a loaded manifest's inputs are also matched against FOLDER."""
    try:
        manifest = load_manifest(data)
    except ManifestInvalid as exc:
        for error in exc.errors:
            assert error.field is None or FIELD_PATH.fullmatch(error.field), error
            assert error.message and "\n" not in error.message, error
        return "invalid"
    resolve_inputs(manifest, set(FOLDER), manifest.output.prefix, 500)
    return "loaded"


# -- the property: thousands of hostile documents -----------------------------------------------

# A many-nodes document costs ~50× a small one (it is read up to the node limit), so it is
# drawn less often to keep the run short; every mutation is still drawn many times.
WEIGHTED = [name for name in sorted(MUTATIONS) for _ in range(1 if name == "many_nodes" else 3)]


def test_hostile_documents_get_only_manifest_invalid_and_quickly() -> None:
    seen: Counter[str] = Counter()
    slowest = [0.0]

    @settings(
        max_examples=DOCUMENTS,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.sampled_from(WEIGHTED), st.randoms(use_true_random=False))
    def one_document(name: str, rng: random.Random) -> None:
        data = MUTATIONS[name](rng)
        with budget(1.0) as spent:
            outcome = check_answer(data)
        slowest[0] = max(slowest[0], spent())
        seen[name] += 1
        seen[outcome] += 1

    one_document()
    documents = seen["invalid"] + seen["loaded"]
    print(f"\n{documents} documents, {dict(seen)}, slowest {slowest[0]:.3f} s CPU")
    assert documents >= DOCUMENTS
    assert set(MUTATIONS) <= set(seen)
    assert seen["invalid"] > DOCUMENTS / 2 and seen["loaded"] > 0  # the mutations do bite


def test_validate_prints_one_line_per_error_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(11)
    names = sorted(MUTATIONS)
    codes: Counter[int] = Counter()
    for i in range(200):
        folder = tmp_path / f"m{i}"
        folder.mkdir()
        manifest = folder / "manifest.yaml"
        manifest.write_bytes(MUTATIONS[names[i % len(names)]](rng))
        for name in ("a.mp4", "talk.mp4", "Interview [final].mp4"):
            (folder / name).write_bytes(b"")
        code = dropbatch_main(["validate", str(manifest)])  # an exception fails the test
        out, err = capsys.readouterr()
        codes[code] += 1
        assert code in (0, 2)
        assert "Traceback" not in out + err
        lines = out.splitlines()
        assert lines and all(line.startswith(f"{manifest}: ") for line in lines), out
        assert (code == 0) == (lines == [f"{manifest}: valid"])
    assert codes[2] > 100


@pytest.mark.parametrize(
    "data",
    [b"version: 1\ninputs: a\x07.mp4\n", b"version: 1\ninputs: 'a[]b.mp4'\n", b"\xff\xfe\x00"],
    ids=["BEL byte", "empty glob class", "UTF-16 bytes"],
)
def test_validate_command_refuses_poison_with_one_line(tmp_path: Path, data: bytes) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_bytes(data)
    proc = subprocess.run(
        [sys.executable, "-m", "dropbatch.cli", "validate", str(manifest)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stdout.splitlines()) == 1
    assert proc.stdout.startswith(f"{manifest}: ")


def test_validate_of_a_folder_or_a_missing_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert dropbatch_main(["validate", str(tmp_path)]) == 2
    assert dropbatch_main(["validate", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "directory" in err[0].lower() and "no such file" in err[1].lower()


# -- each finding, pinned -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "nested",
    ["[" * 10_000 + "]" * 10_000, "{a: " * 10_000 + "1" + "}" * 10_000, "[" * 50_000],
    ids=["lists", "mappings", "unclosed"],
)
def test_deep_nesting_is_refused_with_its_line_not_a_recursion_error(nested: str) -> None:
    with budget(1.0):
        error = only_error(f"version: 1\ninputs: a.mp4\nx: {nested}\n")
    assert error.code == "MANIFEST_TOO_DEEP"
    assert error.field is not None and error.field.startswith("line 3, column ")


def test_block_nesting_past_the_limit_is_refused() -> None:
    lines = [" " * i + "a:" for i in range(40)]
    error = only_error(
        "version: 1\ninputs: a.mp4\nx:\n" + "\n".join(" " + x for x in lines) + " 1\n"
    )
    assert error.code == "MANIFEST_TOO_DEEP"


@pytest.mark.parametrize("digits", [40, 4301, 100_000])
def test_huge_integer_is_a_field_error_not_a_value_error(digits: int) -> None:
    error = only_error(f"version: 1\ninputs: a.mp4\noutput: {{crf: {'9' * digits}}}\n")
    assert error.field == "output.crf"
    assert "characters; the limit is" in error.message


def test_integer_and_float_forms_within_the_limit_still_load_and_validate() -> None:
    error = only_error("version: 1\ninputs: a.mp4\noutput: {crf: 0x40}\n")
    assert (error.field, error.message) == (
        "output.crf",
        "Input should be less than or equal to 51",
    )
    manifest = load_manifest(b"version: 1\ninputs: a.mp4\ncompute: {chunk_seconds: 1_5.0}\n")
    assert manifest.compute.chunk_seconds == 15.0


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b"version: 1\ninputs: a\xff.mp4\n", "line 2, column 10"),
        (b"version: 1\ninputs: \xe2\x82.mp4\n", "line 2, column 9"),
        (b"version: 1\ninputs: a\x07.mp4\n", "line 2, column 10"),
        (b"version: 1\n\x1b[31minputs: a.mp4\n", "line 2, column 1"),
        (b"version: 1\ninputs: a\xc2\x85.mp4\n", "line 2, column 10"),
        (b"version: 1\x00\ninputs: a.mp4\n", "line 1, column 11"),
    ],
    ids=["invalid byte", "cut sequence", "BEL", "ESC", "NEL", "NUL"],
)
def test_bad_text_is_refused_with_line_and_column(data: bytes, where: str) -> None:
    error = only_error(data)
    assert error.code == "MANIFEST_ENCODING"
    assert error.field == where


def test_utf8_byte_order_mark_is_fine_and_utf16_is_refused_by_name() -> None:
    assert load_manifest(b"\xef\xbb\xbfversion: 1\ninputs: a.mp4\n").inputs[0].video == "a.mp4"
    error = only_error("version: 1\ninputs: a.mp4\n".encode("utf-16"))
    assert "UTF-16" in error.message


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ('"clip\\a.mp4"', "control character U+0007"),
        ('"clip\\x1b.mp4"', "control character U+001B"),
        ('"clip\\u200b.mp4"', "format character U+200B"),
        ('"\\u202emp4.exe"', "format character U+202E"),
        ('"clip\\u2028.mp4"', "line separator character U+2028"),
        ('" clip.mp4"', "starts or ends with a space"),
        ('"clip.mp4 "', "starts or ends with a space"),
        ('"clips /a.mp4"', "starts or ends with a space"),
        ('"clips\\\\a.mp4"', "backslash"),
        ('"clips//a.mp4"', "empty folder name"),
        ('"clips/"', "name a file"),
        ('"./"', "inside the manifest's folder"),
        ('"a/../../b.mp4"', "'..'"),
        ('"/abs.mp4"', "absolute"),
        ('"~/a.mp4"', "absolute"),
        ('"C:/a.mp4"', "absolute"),
    ],
)
@pytest.mark.parametrize(
    "field",
    ["inputs[0].video", "inputs[0].audio", "chain[0].swap.source[0]", "chain[0].lipsync.audio"],
)
def test_bad_path_is_refused_with_its_field_and_reason(path: str, reason: str, field: str) -> None:
    manifest = {
        "inputs[0].video": f"version: 1\ninputs: [{{video: {path}}}]\n",
        "inputs[0].audio": f"version: 1\ninputs: [{{video: a.mp4, audio: {path}}}]\n",
        "chain[0].swap.source[0]": f"{HEAD}chain: [{{swap: {{source: [{path}]}}}}]\n",
        "chain[0].lipsync.audio": f"{HEAD}chain: [{{lipsync: {{audio: {path}}}}}]\n",
    }[field]
    errors = errors_of(manifest)
    assert [e.field for e in errors] == [field]
    assert reason in errors[0].message, errors[0].message


def test_surrogate_escape_is_refused() -> None:
    error = only_error('version: 1\ninputs: "\\ud800.mp4"\n')
    assert error.field is not None and FIELD_PATH.fullmatch(error.field)


def test_duplicate_key_names_the_key_and_both_lines() -> None:
    error = only_error("version: 1\ninputs: a.mp4\noutput: {crf: 20}\ninputs: b.mp4\n")
    assert error.code == "MANIFEST_DUPLICATE_KEY"
    assert error.field == "inputs"
    assert "duplicate key inputs (lines 2 and 4)" in error.message


def test_duplicate_key_is_found_in_nested_mappings_and_across_quoting() -> None:
    error = only_error("version: 1\ninputs:\n  - {video: a.mp4, 'video': b.mp4}\n")
    assert error.field == "inputs[0].video"
    assert "lines 3 and 3" in error.message


@pytest.mark.parametrize("value", ["true", "1.0", "'1'", "2001-01-01", "[1]", "~"])
def test_version_must_be_the_integer_1(value: str) -> None:
    error = only_error(f"version: {value}\ninputs: a.mp4\n")
    assert error.field == "version"


def test_true_for_a_number_is_refused() -> None:
    error = only_error("version: 1\ninputs: a.mp4\ncompute: {max_retries: true}\n")
    assert (error.field, error.message) == (
        "compute.max_retries",
        "must be a number, not true/false",
    )


def test_dot_slash_path_is_normalised_and_then_matches() -> None:
    manifest = load_manifest(b"version: 1\ninputs: [./clip.mp4, {video: clips/./b.mp4}]\n")
    assert [i.video for i in manifest.inputs] == ["clip.mp4", "clips/b.mp4"]
    resolution = resolve_inputs(manifest, {"clip.mp4", "clips/b.mp4"}, "out/", 500)
    assert resolution.complete
    assert [item.video for item in resolution.items] == ["clip.mp4", "clips/b.mp4"]


def test_a_file_named_with_brackets_is_named_by_escaping_them() -> None:
    manifest = load_manifest(b"version: 1\ninputs: 'Interview [[]final].mp4'\n")
    folder = {"Interview [final].mp4", "Interview f.mp4", "Interview [[]final].mp4"}
    resolution = resolve_inputs(manifest, folder, "out/", 500)
    assert [item.video for item in resolution.items] == ["Interview [final].mp4"]


def test_a_bracket_name_written_plainly_is_a_glob_and_the_wait_says_how_to_escape() -> None:
    manifest = load_manifest(b"version: 1\ninputs: 'Interview [final].mp4'\n")
    resolution = resolve_inputs(manifest, {"Interview [final].mp4"}, "out/", 500)
    assert resolution.items == []
    (waiting,) = resolution.missing
    assert waiting.field == "inputs[0].video"
    assert "write Interview [[]final].mp4" in waiting.message


@pytest.mark.parametrize(
    ("glob", "reason"),
    [
        ("a[]b.mp4", "empty class"),
        ("a[!]b.mp4", "empty class"),
        ("a[b.mp4", "never closed"),
        ("[z-a].mp4", "runs backwards"),
        ("a[/]b.mp4", "cannot match '/'"),
    ],
)
def test_malformed_glob_is_a_field_error(glob: str, reason: str) -> None:
    error = only_error(f"version: 1\ninputs: ['{glob}']\n")
    assert error.field == "inputs[0].video"
    assert reason in error.message


def test_backtracking_glob_answers_in_under_a_second() -> None:
    pattern = "*a" * 30 + "*b.mp4"
    manifest = load_manifest(f"version: 1\ninputs: ['{pattern}']\n".encode())
    folder = {"a" * 40, "a" * 39 + ".mp4", "a" * 29 + "b.mp4", "a" * 35 + "b.mp4"}
    with budget(1.0):
        resolution = resolve_inputs(manifest, folder, "out/", 500)
    assert [item.video for item in resolution.items] == ["a" * 35 + "b.mp4"]


def test_longest_globs_against_longest_names_stay_fast() -> None:
    glob = parse_glob("*a" * 500 + "*b")
    deep = parse_glob("/".join(["**"] * 100 + ["*a"] * 100 + ["b"]))
    with budget(1.0):
        assert not glob.match("a" * 1024)
        assert glob.match("a" * 600 + "b")
        assert not deep.match("/".join(["a"] * 500 + ["c"]))
        assert deep.match("/".join(["a"] * 500 + ["b"]))


def _reference_match(pattern: str, name: str) -> bool:
    """An independent, exponential-time matcher: fnmatch per folder name, `**` by search."""
    import fnmatch
    from functools import cache

    parts, names = pattern.split("/"), name.split("/")

    @cache
    def match(i: int, j: int) -> bool:
        if i == len(parts):
            return j == len(names)
        if parts[i] == "**":
            return any(match(i + 1, k) for k in range(j, len(names) + 1))
        if j == len(names):
            return False
        return fnmatch.fnmatchcase(names[j], parts[i]) and match(i + 1, j + 1)

    return match(0, 0)


def test_glob_matching_agrees_with_a_reference_matcher() -> None:
    rng = random.Random(5)
    checked = 0
    for _ in range(20_000):
        pattern = "".join(rng.choice("ab*?/[]!-") for _ in range(rng.randint(1, 9)))
        name = "".join(rng.choice("ab/") for _ in range(rng.randint(0, 9)))
        try:
            glob = parse_glob(pattern)
        except GlobError:
            continue
        checked += 1
        assert glob.match(name) == _reference_match(pattern, name), (pattern, name)
    assert checked > 5_000


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("clips/*.mp4", "clips/a.mp4", "clips/x/a.mp4"),
        ("clips/**/*.mp4", "clips/x/y/a.mp4", "other/a.mp4"),
        ("**/*.mp4", "a.mp4", "a.mov"),
        ("clips**.mp4", "clipsX.mp4", "clips/x.mp4"),
        ("take[0-9].mp4", "take7.mp4", "takeX.mp4"),
        ("take[!0-9].mp4", "takeX.mp4", "take7.mp4"),
        ("x[*].mp4", "x*.mp4", "xa.mp4"),
        ("?.mp4", "a.mp4", "/.mp4"),
    ],
)
def test_glob_semantics(pattern: str, yes: str, no: str) -> None:
    glob = parse_glob(pattern)
    assert glob.match(yes)
    assert not glob.match(no)


def test_one_mebibyte_of_524k_list_items_is_refused_in_under_a_second() -> None:
    data = b"version: 1\ninputs: a.mp4\nx: [" + b"1," * 524_000 + b"]\n"
    assert 1_000_000 < len(data) <= 1 << 20
    with budget(1.0):
        error = only_error(data)
    assert error.code == "MANIFEST_TOO_LARGE"


def test_400_kb_of_199k_list_items_is_answered_in_under_a_second() -> None:
    data = b"version: 1\ninputs: a.mp4\nx:\n" + b"- a\n" * 99_500
    assert 390_000 < len(data) < 410_000
    with budget(1.0):
        error = only_error(data)
    assert error.code == "MANIFEST_TOO_LARGE"


def test_500_inputs_with_overrides_load_well_inside_the_limits() -> None:
    items = "".join(
        f"  - {{video: clips/v{i}.mp4, output_name: o{i}.mp4, "
        f"overrides: {{crop: {{aspect: '1:1', padding: 0.2}}}}}}\n"
        for i in range(500)
    )
    with budget(1.0):
        manifest = load_manifest(f"version: 1\nchain: [crop]\ninputs:\n{items}".encode())
    assert len(manifest.inputs) == 500


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("version: 1\ninputs: a.mp4\ncompute: {1: x}\n", 'compute["1"]'),
        ("version: 1\ninputs: a.mp4\ncompute: {~: x}\n", 'compute["~"]'),
        ("version: 1\ninputs: a.mp4\ncompute: {2001-01-01: x}\n", 'compute["2001-01-01"]'),
        ("version: 1\ninputs: a.mp4\ncompute: {'a b': x}\n", 'compute["a b"]'),
        ("version: 1\ninputs: a.mp4\ncompute: {'': x}\n", 'compute[""]'),
        ('version: 1\ninputs: a.mp4\ncompute: {"x\\u200b": 1}\n', 'compute["x\\u200b"]'),
        ("version: 1\ninputs: a.mp4\n'[0]': x\n", '["[0]"]'),
        ("version: 1\ninputs: [1]\n", "inputs[0]"),
        (
            "version: 1\ninputs: a.mp4\nchain: [{crop: {aspect: 2001-01-01}}]\n",
            "chain[0].crop.aspect",
        ),
    ],
)
def test_error_fields_are_paths_never_python_reprs(text: str, field: str) -> None:
    error = only_error(text)
    assert error.field == field
    assert FIELD_PATH.fullmatch(field)


def test_key_that_is_a_list_is_refused_with_its_line() -> None:
    error = only_error("version: 1\ninputs: a.mp4\ncompute:\n  ? [a]\n  : b\n")
    assert error.field == "compute"
    assert "plain name" in error.message and "(line 4)" in error.message


@pytest.mark.parametrize(
    ("snippet", "reason"),
    [
        ("!!python/object/apply:os.system ['true']", "python/object/apply:os.system"),
        ("!!binary aGVsbG8=", "binary"),
        ("!!set {a, b}", "set"),
        ("!custom x", "!custom"),
        ("!!int abc", "abc is not a valid int"),
        ("!!timestamp 2001-01-01", "timestamp"),
    ],
)
def test_tags_beyond_plain_data_are_field_errors(snippet: str, reason: str) -> None:
    error = only_error(f"version: 1\ninputs: a.mp4\noutput: {{crf: {snippet}}}\n")
    assert error.field == "output.crf"
    assert reason in error.message


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("version: 1\ninputs: a.mp4\nx: &r [*r]\n", "inside its own anchor"),
        ("version: 1\ninputs: *nowhere\n", "not defined"),
        ("version: 1\ninputs: a.mp4\n---\nversion: 1\n", "one YAML document"),
    ],
)
def test_alias_and_document_tricks_are_yaml_errors(text: str, reason: str) -> None:
    error = only_error(text)
    assert error.code == "MANIFEST_YAML"
    assert reason in error.message


def test_billion_laughs_at_every_width_is_refused_quickly() -> None:
    for width in (2, 10, 50):
        lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
        for level in range(1, 30):
            lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
        with budget(1.0):
            error = only_error("\n".join(lines) + "\n")
        assert error.code in ("MANIFEST_TOO_LARGE", "MANIFEST_TOO_DEEP")


def test_merge_keys_merge_and_written_keys_win() -> None:
    manifest = load_manifest(
        b"version: 1\n"
        b"inputs:\n"
        b"  - {video: a.mp4, overrides: {crop: &square {aspect: '1:1', padding: 0.3}}}\n"
        b"  - {video: b.mp4, overrides: {crop: {<<: *square, padding: 0.1}}}\n"
        b"chain: [crop]\n"
    )
    assert manifest.inputs[1].overrides.crop == {"aspect": "1:1", "padding": 0.1}


def test_many_errors_are_reported_with_a_count_of_the_rest() -> None:
    keys = ", ".join(f"k{i}: 1" for i in range(120))
    errors = errors_of(f"version: 1\ninputs: a.mp4\ncompute: {{{keys}}}\n")
    assert len(errors) == 51
    assert errors[-1].message == "… and 70 more errors"


def test_reader_errors_and_model_errors_are_reported_together() -> None:
    errors = errors_of(
        'version: true\ninputs: ["clip\\a.mp4", " b.mp4"]\noutput: {crf: 20, crf: 30}\n'
    )
    assert [(e.field, e.code) for e in errors] == [
        ("inputs[0]", "MANIFEST_FIELD"),  # the control character, not also "not a string"
        ("output.crf", "MANIFEST_DUPLICATE_KEY"),
        ("version", "MANIFEST_FIELD"),
        ("inputs[1].video", "MANIFEST_FIELD"),
    ]
