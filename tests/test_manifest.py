"""Manifest loading: the examples we ship, the JSON Schema, every way a user gets it wrong."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from core.domain import JobError
from manifests.loader import MAX_MANIFEST_BYTES, ManifestInvalid, load_manifest
from manifests.model import InputItem, Manifest
from manifests.schema import SCHEMA_FILE, manifest_schema, schema_text
from processors.crop.options import CropOptions
from processors.swap.options import SwapOptions

EXAMPLES = sorted((Path(__file__).parents[1] / "manifests" / "examples").glob("*.yaml"))


def errors_of(text: str | bytes) -> list[JobError]:
    data = text.encode() if isinstance(text, str) else text
    with pytest.raises(ManifestInvalid) as caught:
        load_manifest(data)
    assert caught.value.errors, "ManifestInvalid must say why"
    return caught.value.errors


def only_error(text: str | bytes) -> JobError:
    errors = errors_of(text)
    assert len(errors) == 1, errors
    return errors[0]


# -- examples and schema ---------------------------------------------------------------------


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads(path: Path) -> None:
    manifest = load_manifest(path.read_bytes())
    assert manifest.version == 1
    assert manifest.inputs


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid_under_the_schema(path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    jsonschema.Draft202012Validator(manifest_schema()).validate(yaml.safe_load(path.read_text()))


def test_examples_cover_the_documented_features() -> None:
    manifests = [load_manifest(p.read_bytes()) for p in EXAMPLES]
    chains = [[s.name for s in m.chain] for m in manifests]
    assert ["crop", "swap", "lipsync"] in chains
    assert any(i.video.endswith("*.mp4") and i.overrides.crop for m in manifests for i in m.inputs)
    assert any(i.output_name for m in manifests for i in m.inputs)
    swaps = [m.step("swap") for m in manifests if m.step("swap")]
    assert any(s.face_map for s in swaps)
    assert any(not m.compute.spot for m in manifests)


def test_schema_file_is_up_to_date() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), (
        "manifests/manifest.schema.json is stale: run `python -m manifests.schema`"
    )


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = json.loads(schema_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"]
    assert schema["title"]
    assert schema_text().endswith("}\n")
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_accepts_shorthands_and_rejects_unknown_keys() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(manifest_schema())
    shorthand = {
        "version": 1,
        "inputs": "talk.mp4",
        "chain": ["crop", {"swap": {"source": "a.jpg"}}],
    }
    assert not list(validator.iter_errors(shorthand))
    typo = {"version": 1, "inputs": ["talk.mp4"], "compute": {"chunk_second": 5}}
    assert list(validator.iter_errors(typo))
    unknown_step = {"version": 1, "inputs": ["talk.mp4"], "chain": ["blur"]}
    assert list(validator.iter_errors(unknown_step))


# -- shorthands ------------------------------------------------------------------------------


def test_single_input_shorthand() -> None:
    manifest = load_manifest(b"version: 1\ninputs: talk.mp4\n")
    assert manifest.inputs == [InputItem(video="talk.mp4")]


def test_bare_step_name_uses_defaults() -> None:
    manifest = load_manifest(b"version: 1\ninputs: talk.mp4\nchain: [crop]\n")
    assert [s.name for s in manifest.chain] == ["crop"]
    assert manifest.step("crop") == CropOptions()


def test_step_with_empty_value_uses_defaults() -> None:
    manifest = load_manifest(b"version: 1\ninputs: talk.mp4\nchain:\n  - crop:\n")
    assert manifest.step("crop") == CropOptions()


def test_single_swap_source_becomes_a_list() -> None:
    manifest = load_manifest(
        b"version: 1\ninputs: talk.mp4\nchain: [{swap: {source: faces/alex.jpg}}]\n"
    )
    swap = manifest.step("swap")
    assert isinstance(swap, SwapOptions)
    assert swap.source == ["faces/alex.jpg"]


def test_unquoted_aspect_is_read_as_a_ratio_not_a_base_60_number() -> None:
    # YAML 1.1 reads 9:16 as 556 and 1:1 as 61; a user writing them plainly means ratios.
    manifest = load_manifest(
        b"version: 1\n"
        b"inputs: [{video: a.mp4, overrides: {crop: {aspect: 1:1}}}]\n"
        b"chain: [{crop: {aspect: 16:9}}]\n"
    )
    assert manifest.step("crop").aspect == "16:9"
    assert manifest.inputs[0].overrides.crop == {"aspect": "1:1"}


def test_modest_anchors_and_aliases_are_allowed() -> None:
    manifest = load_manifest(
        b"version: 1\n"
        b"inputs:\n"
        b"  - {video: a.mp4, overrides: {crop: &square {aspect: '1:1'}}}\n"
        b"  - {video: b.mp4, overrides: {crop: *square}}\n"
        b"chain: [crop]\n"
    )
    assert [i.overrides.crop for i in manifest.inputs] == [{"aspect": "1:1"}] * 2


# -- what a user can get wrong -----------------------------------------------------------------

BAD_FIELDS = {
    "unknown top-level key": (
        "version: 1\ninputs: a.mp4\nchian: [crop]\n",
        "chian",
        "unknown key",
    ),
    "unknown nested key": (
        "version: 1\ninputs: a.mp4\ncompute: {chunk_second: 5}\n",
        "compute.chunk_second",
        "unknown key",
    ),
    "unknown key in a step": (
        "version: 1\ninputs: a.mp4\nchain: [{crop: {aspekt: '1:1'}}]\n",
        "chain[0].crop.aspekt",
        "unknown key",
    ),
    "unknown step": (
        "version: 1\ninputs: a.mp4\nchain: [blur]\n",
        "chain[0].blur",
        "unknown key",
    ),
    "wrong type": (
        "version: 1\ninputs: a.mp4\ncompute: {max_parallel_tasks: lots}\n",
        "compute.max_parallel_tasks",
        "integer",
    ),
    "missing version": (
        "inputs: a.mp4\n",
        "version",
        "required",
    ),
    "parent path": (
        "version: 1\ninputs: ../other/a.mp4\n",
        "inputs[0].video",
        "'..'",
    ),
    "parent path in the middle": (
        "version: 1\ninputs: clips/../../a.mp4\n",
        "inputs[0].video",
        "'..'",
    ),
    "absolute path": (
        "version: 1\ninputs: /etc/passwd\n",
        "inputs[0].video",
        "absolute",
    ),
    "URL path": (
        "version: 1\ninputs: https://example.com/a.mp4\n",
        "inputs[0].video",
        "URL",
    ),
    "gs URL as swap source": (
        "version: 1\ninputs: a.mp4\nchain: [{swap: {source: 'gs://b/alex.jpg'}}]\n",
        "chain[0].swap.source[0]",
        "URL",
    ),
    "parent path as lipsync audio": (
        "version: 1\ninputs: a.mp4\nchain: [{lipsync: {audio: ../voice.wav}}]\n",
        "chain[0].lipsync.audio",
        "'..'",
    ),
    "bad aspect": (
        "version: 1\ninputs: a.mp4\nchain: [{crop: {aspect: wide}}]\n",
        "chain[0].crop.aspect",
        "W:H",
    ),
    "zero aspect": (
        "version: 1\ninputs: a.mp4\nchain: [{crop: {aspect: '0:16'}}]\n",
        "chain[0].crop.aspect",
        "W:H",
    ),
    "duplicated step": (
        "version: 1\ninputs: a.mp4\nchain: [crop, crop]\n",
        "chain",
        "once",
    ),
    "wrong step order": (
        "version: 1\ninputs: a.mp4\nchain: [lipsync, crop]\n",
        "chain",
        "order",
    ),
    "swap without source": (
        "version: 1\ninputs: a.mp4\nchain: [swap]\n",
        "chain[0].swap",
        "source",
    ),
    "two steps in one entry": (
        "version: 1\ninputs: a.mp4\nchain: [{crop: {}, lipsync: {}}]\n",
        "chain[0]",
        "exactly one",
    ),
    "no inputs": (
        "version: 1\ninputs: []\n",
        "inputs",
        "at least 1",
    ),
    # pydantic reads 1, 0, "yes", "on" as booleans; a switch is written true or false.
    "number as a switch": (
        "version: 1\ninputs: a.mp4\nchain: [{swap: {source: a.jpg, occlusion: 1}}]\n",
        "chain[0].swap.occlusion",
        "true or false",
    ),
    "word as a switch": (
        "version: 1\ninputs: a.mp4\nchain: [{swap: {source: a.jpg, mouth_mask: 'yes'}}]\n",
        "chain[0].swap.mouth_mask",
        "true or false",
    ),
    "number as a compute switch": (
        "version: 1\ninputs: a.mp4\ncompute: {spot: 0}\n",
        "compute.spot",
        "true or false",
    ),
}


@pytest.mark.parametrize("case", BAD_FIELDS, ids=str)
def test_bad_field_reports_its_path_and_reason(case: str) -> None:
    text, field, reason = BAD_FIELDS[case]
    error = only_error(text)
    assert error.code == "MANIFEST_FIELD"
    assert error.field == field
    assert reason in error.message
    assert field in str(ManifestInvalid([error]))


def test_overrides_are_checked_against_their_step() -> None:
    text = (
        "version: 1\n"
        "inputs:\n"
        "  - {video: a.mp4, overrides: {crop: {aspect: wide, colour: red}}}\n"
        "  - {video: b.mp4, overrides: {lipsync: {batch_size: 8}}}\n"
        'chain: [{crop: {aspect: "9:16"}}]\n'
    )
    found = {(e.field, e.message) for e in errors_of(text)}
    assert {f for f, _ in found} == {
        "inputs[0].overrides.crop.aspect",
        "inputs[0].overrides.crop.colour",
        "inputs[1].overrides.lipsync",
    }
    assert ("inputs[0].overrides.crop.colour", "unknown key") in found
    assert ("inputs[1].overrides.lipsync", "the chain has no lipsync step to override") in found
    ok = text.replace("aspect: wide, colour: red", 'aspect: "1:1"').replace(
        "b.mp4, overrides: {lipsync: {batch_size: 8}}", "b.mp4"
    )
    assert load_manifest(ok.encode()).inputs[0].overrides.crop == {"aspect": "1:1"}


def test_all_errors_are_reported_at_once() -> None:
    errors = errors_of(
        "version: 1\n"
        "inputs: ../a.mp4\n"
        "chain: [{crop: {aspect: sideways}}]\n"
        "compute: {chunk_second: 3}\n"
    )
    assert sorted(e.field for e in errors) == [
        "chain[0].crop.aspect",
        "compute.chunk_second",
        "inputs[0].video",
    ]


def test_chain_order_is_reported_alongside_other_errors() -> None:
    errors = errors_of("version: 1\ninputs: /abs.mp4\nchain: [lipsync, crop]\n")
    assert sorted(e.field for e in errors) == ["chain", "inputs[0].video"]


def test_yaml_syntax_error_says_where() -> None:
    error = only_error("version: 1\ninputs:\n  - a.mp4\n chain: [crop\n")
    assert error.code == "MANIFEST_YAML"
    match = re.fullmatch(r"line (\d+), column (\d+)", error.field or "")
    assert match, error.field
    assert 3 <= int(match[1]) <= 5  # the error is at or just after the bad line 4


def test_unclosed_bracket_points_past_the_last_line() -> None:
    error = only_error("version: 1\ninputs: [a.mp4\n")
    assert error.code == "MANIFEST_YAML"
    assert error.field is not None and error.field.startswith("line ")


def test_manifest_over_one_mebibyte_is_refused() -> None:
    data = b"version: 1\ninputs: a.mp4\n#" + b"x" * MAX_MANIFEST_BYTES
    assert len(data) > 1 << 20
    error = only_error(data)
    assert error.code == "MANIFEST_TOO_LARGE"


def test_manifest_just_under_the_limit_loads() -> None:
    head = b"version: 1\ninputs: a.mp4\n#"
    data = head + b"x" * (MAX_MANIFEST_BYTES - len(head) - 1) + b"\n"
    assert len(data) == MAX_MANIFEST_BYTES
    assert load_manifest(data).inputs[0].video == "a.mp4"


def test_billion_laughs_is_refused_quickly() -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        aliases = ",".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{aliases}]")
    data = ("\n".join(lines) + "\n").encode()
    assert len(data) < 2000
    started = time.perf_counter()
    error = only_error(data)
    assert time.perf_counter() - started < 2.0
    assert error.code == "MANIFEST_TOO_LARGE"


@pytest.mark.parametrize("text", ["- a.mp4\n- b.mp4\n", "just text\n", "42\n"], ids=repr)
def test_document_that_is_not_a_mapping_is_refused(text: str) -> None:
    assert only_error(text).code == "MANIFEST_SHAPE"


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "~\n"], ids=repr)
def test_empty_document_is_refused(text: str) -> None:
    error = only_error(text)
    assert error.code == "MANIFEST_EMPTY"
    assert "empty" in error.message


def test_non_utf8_manifest_is_refused() -> None:
    assert only_error(b"version: 1\ninputs: \xff\xfe.mp4\n").code == "MANIFEST_ENCODING"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_manifest_round_trips_through_its_own_dump(path: Path) -> None:
    # Plans and task arguments carry the manifest as JSON; reading it back must not fail.
    manifest = load_manifest(path.read_bytes())
    assert Manifest.model_validate(manifest.model_dump()) == manifest
    assert Manifest.model_validate_json(manifest.model_dump_json()) == manifest


def test_two_empty_steps_in_one_entry_are_refused() -> None:
    error = only_error("version: 1\ninputs: a.mp4\nchain:\n  - crop:\n    swap:\n")
    assert error.field == "chain[0]"


def test_files_named_by_overrides_are_waited_for_like_the_chains() -> None:
    from manifests.resolve import resolve_inputs

    manifest = load_manifest(
        b"version: 1\n"
        b"inputs:\n"
        b"  - {video: a.mp4, overrides: {lipsync: {audio: a-voice.wav}}}\n"
        b"  - b.mp4\n"
        b"chain: [{lipsync: {audio: voice.wav}}]\n"
    )
    waiting = resolve_inputs(manifest, {"a.mp4", "b.mp4", "voice.wav"}, "out/", 500).missing
    assert [(e.field, e.code) for e in waiting] == [
        ("inputs[0].overrides.lipsync.audio", "INPUT_MISSING")
    ]
    everything = {"a.mp4", "b.mp4", "voice.wav", "a-voice.wav"}
    assert resolve_inputs(manifest, everything, "out/", 500).missing == []
