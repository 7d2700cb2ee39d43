"""The storage trigger through functions-framework: routing, upload order, duplicate events,
and every kind of bad input ending INVALID with its field or object named."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import pytest
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent
from flask import Flask
from functions_framework import create_app

from core.config import Settings
from core.status import open_status
from core.status.model import JobRecord, JobState
from core.storage.local import LocalStore
from dropbatch.watcher import storage_cloud_event
from tests.indexed_video import make_indexed_video

SOURCE = str(Path(__file__).resolve().parent.parent / "triggers" / "main.py")
CROP = (
    'version: 1\ninputs: [{video: clip.mp4}]\nchain: [{crop: {aspect: "1:1"}}]\n'
    "compute: {chunk_seconds: 1, max_parallel_tasks: 2}\noutput: {preset: ultrafast}\n"
)


def deliver(store: LocalStore, bucket: str, name: str, app: Flask | None = None) -> int:
    """Post the object's finalized event to the function, as Eventarc does; returns HTTP code."""
    client = (app or create_app("on_inbox_object", SOURCE, "cloudevent")).test_client()
    headers, body = to_structured(storage_cloud_event(store.stat(bucket, name)))
    return client.post("/", headers=headers, data=body).status_code


def records(deployment: dict) -> list[JobRecord]:
    return open_status(Settings.from_env()).recent(100)


def wait_done(job_id: str, timeout: float = 120) -> JobRecord:
    from tests.local_jobs import wait_local_job

    wait_local_job(job_id, timeout)
    record = open_status(Settings.from_env()).get(job_id)
    assert record is not None
    return record


@pytest.fixture
def store(deployment: dict) -> LocalStore:
    return LocalStore(deployment["root"])


def put(deployment: dict, name: str, data: bytes | None = None, video: int = 0) -> None:
    path = deployment["inbox"] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if video:
        make_indexed_video(path, video, audio=False, preset="ultrafast")
    else:
        path.write_bytes(data or b"")


def test_video_then_manifest_runs(deployment: dict, store: LocalStore) -> None:
    put(deployment, "c1/clip.mp4", video=45)
    assert deliver(store, "inbox", "c1/clip.mp4") == 200
    assert records(deployment) == []  # a video alone starts nothing
    put(deployment, "c1/job.yaml", CROP.encode())
    assert deliver(store, "inbox", "c1/job.yaml") == 200
    [record] = records(deployment)
    final = wait_done(record.job_id)
    assert final.state == JobState.SUCCEEDED, final.error
    assert (deployment["inbox"] / "c1/out/clip.mp4").is_file()
    mirror = json.loads((deployment["inbox"] / "c1/job.status.json").read_text())
    assert mirror["state"] == "SUCCEEDED" and mirror["job_id"] == record.job_id
    assert mirror["outputs"] == final.outputs


def test_manifest_then_video_waits_then_runs(deployment: dict, store: LocalStore) -> None:
    put(deployment, "c2/job.yaml", CROP.encode())
    deliver(store, "inbox", "c2/job.yaml")
    [record] = records(deployment)
    assert record.state == JobState.WAITING_FOR_INPUTS
    assert [w.field for w in record.waiting_for] == ["inputs[0].video"]
    mirror = json.loads((deployment["inbox"] / "c2/job.status.json").read_text())
    assert mirror["state"] == "WAITING_FOR_INPUTS"
    put(deployment, "c2/clip.mp4", video=40)
    deliver(store, "inbox", "c2/clip.mp4")
    final = wait_done(record.job_id)
    assert final.state == JobState.SUCCEEDED, final.error
    states = [h.state for h in final.history]
    assert states.index(JobState.WAITING_FOR_INPUTS) < states.index(JobState.QUEUED)


def test_duplicate_events_make_one_job(deployment: dict, store: LocalStore) -> None:
    put(deployment, "c3/clip.mp4", video=40)
    put(deployment, "c3/job.yaml", CROP.encode())
    codes: list[int] = []
    # One function instance serving ten deliveries at once (gen2 concurrency). The app is
    # built before the threads start: Flask compiles its routes with `compile()`, which
    # CPython 3.11.7 does not make thread-safe ("AST constructor recursion depth mismatch").
    app = create_app("on_inbox_object", SOURCE, "cloudevent")
    threads = [
        threading.Thread(target=lambda: codes.append(deliver(store, "inbox", "c3/job.yaml", app)))
        for _ in range(10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in range(10):
        codes.append(deliver(store, "inbox", "c3/job.yaml"))
    assert codes == [200] * 20
    [record] = records(deployment)
    final = wait_done(record.job_id)
    assert final.state == JobState.SUCCEEDED, final.error
    assert [h.state for h in final.history].count(JobState.QUEUED) == 1
    assert len(final.stitch_claims) == 1
    starts = (
        [json.loads(line) for line in Path(deployment["tmp"], "tasks.log").read_text().splitlines()]
        if Path(deployment["tmp"], "tasks.log").exists()
        else []
    )
    # Without the fault wrapper nothing logs; the per-task records show one attempt each.
    progress = open_status(Settings.from_env()).progress(record.job_id)
    assert len(progress) == final.chunks_total and all(p.attempt == 0 for p in progress)
    assert starts == []


def test_our_own_writes_never_trigger(deployment: dict, store: LocalStore) -> None:
    # Known by our marker (outputs carry it wherever output.prefix puts them) and our own
    # places; a folder called `out` means nothing (tests/test_output_ownership.py).
    store.write_bytes("inbox", "c4/out/clip.mp4", b"x", metadata={"dropbatch-role": "output"})
    put(deployment, "c4/job.status.json", b"{}")
    put(deployment, "_dropbatch/jobs/x/parts/0000/part-00000.mp4", b"x")
    put(deployment, "_dropbatch/outputs/claim.yaml", CROP.encode())
    store.write_bytes(
        "inbox", "c4/results/other.yaml", CROP.encode(), metadata={"dropbatch-role": "output"}
    )
    for name in [
        "c4/out/clip.mp4",
        "c4/job.status.json",
        "_dropbatch/jobs/x/parts/0000/part-00000.mp4",
        "_dropbatch/outputs/claim.yaml",
        "c4/results/other.yaml",
    ]:
        deliver(store, "inbox", name)
    assert records(deployment) == []


BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "version: 1\ninputs: [clip.mp4]\n"
)

BAD = {
    "yaml": ("version: 1\ninputs: [clip.mp4\n", "MANIFEST_YAML", "line "),
    "unknown": (CROP + "colour: red\n", "MANIFEST_FIELD", "colour"),
    "type": (
        CROP.replace("chunk_seconds: 1", "chunk_seconds: soon"),
        "MANIFEST_FIELD",
        "compute.chunk_seconds",
    ),
    "dotdot": (CROP.replace("clip.mp4", "../c0/clip.mp4"), "MANIFEST_FIELD", "inputs[0].video"),
    "absolute": (CROP.replace("clip.mp4", "/etc/passwd"), "MANIFEST_FIELD", "inputs[0].video"),
    "huge": (CROP + "#" + "x" * (10 << 20) + "\n", "MANIFEST_TOO_LARGE", None),
    # Hostile bytes that once escaped the loader as other exceptions (issue 11).
    "bel": (CROP.replace("clip.mp4", "clip\x07.mp4"), "MANIFEST_ENCODING", "line 2, column 22"),
    "empty-class": (CROP.replace("clip.mp4", "'c[]lip.mp4'"), "MANIFEST_FIELD", "inputs[0].video"),
    "nested": (CROP + "x: " + "[" * 5000 + "]" * 5000 + "\n", "MANIFEST_TOO_DEEP", "line 6"),
    "huge-int": (CROP + "y: 1" + "0" * 5000 + "\n", "MANIFEST_FIELD", "y"),
    "duplicate": (CROP + "version: 1\n", "MANIFEST_DUPLICATE_KEY", "version"),
    "bomb": (BOMB, "MANIFEST_TOO_LARGE", None),
    "swap": (
        CROP.replace('[{crop: {aspect: "1:1"}}]', "[{swap: {source: clip.mp4}}]"),
        "MODEL_MISSING",
        "chain[0].swap.analyser",  # buffalo_l, the first it needs
    ),
    # One input switches its crop to YOLO: that model must be in the store too.
    "override-model": (
        CROP.replace(
            "inputs: [{video: clip.mp4}]",
            "inputs: [{video: clip.mp4, overrides: {crop: {detector: yolo-onnx}}}]",
        ),
        "MODEL_MISSING",
        "inputs[0].overrides.crop.model",
    ),
    "override-invalid": (
        CROP.replace(
            "inputs: [{video: clip.mp4}]",
            "inputs: [{video: clip.mp4, overrides: {crop: {aspect: wide}}}]",
        ),
        "MANIFEST_FIELD",
        "inputs[0].overrides.crop.aspect",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_manifest_ends_invalid_and_touches_nothing(
    deployment: dict, store: LocalStore, case: str
) -> None:
    text, code, field = BAD[case]
    put(deployment, "bad/clip.mp4", video=10)
    put(deployment, "bad/job.yaml", text.encode())
    before = {p: p.stat().st_mtime_ns for p in deployment["inbox"].rglob("*") if p.is_file()}
    assert deliver(store, "inbox", "bad/job.yaml") == 200
    [record] = records(deployment)
    assert record.state == JobState.INVALID
    assert record.error is not None and record.error.code == code
    if field:
        assert record.error.field and record.error.field.startswith(field)
    assert JobState.QUEUED not in [h.state for h in record.history]
    mirror = json.loads((deployment["inbox"] / "bad/job.status.json").read_text())
    assert mirror["state"] == "INVALID" and mirror["error"]["code"] == code
    after = {
        p: p.stat().st_mtime_ns
        for p in deployment["inbox"].rglob("*")
        if p.is_file() and p.name != "job.status.json"
    }
    assert after == before


def test_missing_file_ends_invalid_after_the_wait(
    deployment: dict, store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from triggers import main as trigger_main

    monkeypatch.setenv("DROPBATCH_INPUT_WAIT_SECONDS", "0")
    trigger_main.intake.cache_clear()
    put(deployment, "m/job.yaml", CROP.encode())
    deliver(store, "inbox", "m/job.yaml")
    [record] = records(deployment)
    assert record.state == JobState.INVALID
    assert record.error.code == "INPUT_MISSING" and record.error.field == "inputs[0].video"


def test_corrupt_video_is_invalid_naming_the_object(deployment: dict, store: LocalStore) -> None:
    put(deployment, "k/clip.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    put(deployment, "k/job.yaml", CROP.encode())
    deliver(store, "inbox", "k/job.yaml")
    [record] = records(deployment)
    assert record.state == JobState.INVALID
    assert record.error.code == "INPUT_UNREADABLE"
    assert record.error.uri and record.error.uri.endswith("k/clip.mp4")
    assert record.error.field == "inputs[0].video"


def test_the_scheduled_sweep_ends_an_expired_waiting_manifest(
    deployment: dict, store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cloud Scheduler → Pub/Sub → on_sweep: the cloud's counterpart of serve's sweep timer."""
    from triggers import main as trigger_main

    put(deployment, "m/job.yaml", CROP.encode())
    deliver(store, "inbox", "m/job.yaml")
    [waiting] = records(deployment)
    assert waiting.state == JobState.WAITING_FOR_INPUTS

    def tick() -> int:
        client = create_app("on_sweep", SOURCE, "cloudevent").test_client()
        # What Eventarc delivers for a Cloud Scheduler Pub/Sub target's message.
        event = CloudEvent(
            {
                "type": "google.cloud.pubsub.topic.v1.messagePublished",
                "source": "//pubsub.googleapis.com/projects/acme-video/topics/dropbatch-sweep",
            },
            {"message": {"data": base64.b64encode(b"sweep").decode(), "messageId": "1"}},
        )
        headers, body = to_structured(event)
        return client.post("/", headers=headers, data=body).status_code

    assert tick() == 200  # within DROPBATCH_INPUT_WAIT_SECONDS: still waiting
    [record] = records(deployment)
    assert record.state == JobState.WAITING_FOR_INPUTS

    monkeypatch.setenv("DROPBATCH_INPUT_WAIT_SECONDS", "0")
    trigger_main.intake.cache_clear()
    assert tick() == 200
    [record] = records(deployment)
    assert record.state == JobState.INVALID
    assert record.error.code == "INPUT_MISSING" and record.error.field == "inputs[0].video"
    status = json.loads((deployment["inbox"] / "m" / "job.status.json").read_text())
    assert status["state"] == "INVALID"
