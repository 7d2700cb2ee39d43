"""Planning runs inside `trigger_deadline_seconds`: an input that storage serves slowly keeps
ffprobe waiting, the deadline stops it, and the job ends FAILED PLANNING_TIMEOUT naming the
inputs not yet probed, before the function's own timeout would have killed it silently (the
job left RECEIVED, every redelivery planning it again). A probe that runs past its own limit
is an error about that input. Real ffprobe, real fake-gcs-server behind a front that holds
one object's reads, the real trigger through functions-framework."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloudevents.conversion import to_structured
from functions_framework import create_app

from core.config import Settings
from core.status import open_status
from core.status.model import JobRecord, JobState
from core.storage.gcs import GcsStore
from dropbatch.watcher import storage_cloud_event
from tests.indexed_video import make_indexed_video
from tests.storage_notifications import StorageNotifications

SOURCE = str(Path(__file__).resolve().parent.parent / "triggers" / "main.py")
MANIFEST = (
    "version: 1\ninputs: [fast.mp4, slow.mp4]\nchain: [{crop: {aspect: '1:1'}}]\n"
    "output: {preset: ultrafast}\ncompute: {chunk_seconds: 1}\n"
)
HELD = 900.0  # seconds storage holds each read of the slow object: longer than any limit


@pytest.fixture
def inbox(deployment: dict, gcs_emulator: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """The inbox on fake-gcs-server, reached through a front that can hold an object's reads;
    status in SQLite, tasks on the local launcher."""
    front = StorageNotifications(gcs_emulator)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", front.host)
    monkeypatch.setenv("DROPBATCH_STORAGE", "gcs")
    monkeypatch.setenv("DROPBATCH_PROJECT", "deadline-test")
    store = GcsStore(project="deadline-test")
    bucket = f"inbox-{uuid.uuid4().hex[:10]}"
    store.client.create_bucket(bucket)
    clip = deployment["tmp"] / "clip.mp4"
    make_indexed_video(clip, 30, audio=False, preset="ultrafast")
    for name in ("c/fast.mp4", "c/slow.mp4"):
        store.upload_file(bucket, name, clip, content_type="video/mp4")
    front.slow_reads(bucket, "c/slow.mp4", HELD)
    try:
        yield {"store": store, "bucket": bucket, "front": front, "clip": clip}
    finally:
        front.close()


def deliver(inbox: dict, name: str) -> int:
    """Eventarc's delivery of the object's finalized event to on_inbox_object."""
    app = create_app("on_inbox_object", SOURCE, "cloudevent")
    headers, body = to_structured(storage_cloud_event(inbox["store"].stat(inbox["bucket"], name)))
    return app.test_client().post("/", headers=headers, data=body).status_code


def the_record() -> JobRecord:
    [record] = open_status(Settings.from_env()).recent(10)
    return record


def mirror(inbox: dict) -> dict:
    return json.loads(inbox["store"].read_bytes(inbox["bucket"], "c/job.status.json"))


def test_planning_past_the_deadline_fails_naming_the_input_not_probed(
    inbox: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DROPBATCH_TRIGGER_DEADLINE_SECONDS", "6")
    inbox["store"].write_bytes(inbox["bucket"], "c/job.yaml", MANIFEST.encode())
    started = time.monotonic()
    assert deliver(inbox, "c/job.yaml") == 200
    took = time.monotonic() - started
    record = the_record()
    assert record.state == JobState.FAILED, record.error
    assert record.error is not None and record.error.code == "PLANNING_TIMEOUT"
    slow_uri = f"gs://{inbox['bucket']}/c/slow.mp4"
    # Only the input not probed is named; the one that was probed is not.
    assert [(e.code, e.field, e.uri) for e in record.errors] == [
        ("PLANNING_TIMEOUT", "inputs[1].video", slow_uri)
    ]
    assert "inputs[1].video" in record.error.message and slow_uri in record.error.message
    assert "fast.mp4" not in record.error.message
    assert mirror(inbox)["error"]["code"] == "PLANNING_TIMEOUT"
    assert mirror(inbox)["errors"][0]["uri"] == slow_uri
    # Stopped at the deadline, well inside a function's 540 s: the record says why.
    assert 6 <= took < 6 + 30, took
    print(f"\nplanning stopped at the 6 s deadline; the delivery answered after {took:.1f} s")
    # A redelivery of the same event (retry is on) does not plan the job again.
    started = time.monotonic()
    assert deliver(inbox, "c/job.yaml") == 200
    assert time.monotonic() - started < 5
    assert the_record().revision == record.revision


def test_a_delivery_stopped_mid_planning_is_not_planned_again(
    inbox: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The function was stopped while probing (its instance killed: no word recorded). The
    record says when planning began; the redelivery after the deadline ends the job instead
    of probing the slow input again."""
    import multiprocessing

    monkeypatch.setenv("DROPBATCH_TRIGGER_DEADLINE_SECONDS", "4")
    inbox["store"].write_bytes(inbox["bucket"], "c/job.yaml", MANIFEST.encode())
    # A long deadline in the first instance, so it is still probing when it is killed.
    context = multiprocessing.get_context("fork")
    first = context.Process(target=_deliver_with_deadline, args=(inbox, "c/job.yaml", "600"))
    first.start()
    record = None
    for _ in range(200):
        record = next(iter(open_status(Settings.from_env()).recent(10)), None)
        if record is not None and record.planning_since is not None:
            break
        time.sleep(0.1)
    assert record is not None and record.planning_since is not None
    first.kill()
    first.join()
    assert the_record().state == JobState.RECEIVED  # what a killed function leaves
    time.sleep(max(0.0, record.planning_since + 4 - time.time()))
    started = time.monotonic()
    assert deliver(inbox, "c/job.yaml") == 200
    assert time.monotonic() - started < 3  # nothing probed again (a probe: 4 s)
    final = the_record()
    assert final.state == JobState.FAILED
    assert final.error is not None and final.error.code == "PLANNING_TIMEOUT"
    assert "never finished" in final.error.message
    assert mirror(inbox)["state"] == "FAILED"


def _deliver_with_deadline(inbox: dict, name: str, seconds: str) -> None:
    import os

    from triggers import main as trigger_main

    os.environ["DROPBATCH_TRIGGER_DEADLINE_SECONDS"] = seconds
    trigger_main.intake.cache_clear()
    deliver(inbox, name)


def test_a_probe_past_its_own_limit_is_an_error_about_that_input(
    inbox: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DROPBATCH_PROBE_TIMEOUT_SECONDS", "3")
    inbox["store"].write_bytes(inbox["bucket"], "c/job.yaml", MANIFEST.encode())
    assert deliver(inbox, "c/job.yaml") == 200
    record = the_record()
    assert record.state == JobState.INVALID, record.error
    slow_uri = f"gs://{inbox['bucket']}/c/slow.mp4"
    assert [(e.code, e.field, e.uri) for e in record.errors] == [
        ("INPUT_PROBE_TIMEOUT", "inputs[1].video", slow_uri)
    ]
    assert "within 3 s" in record.errors[0].message
    assert mirror(inbox)["error"]["code"] == "INPUT_PROBE_TIMEOUT"


def test_manifests_the_deadline_leaves_unchecked_are_checked_on_the_redelivery(
    inbox: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two manifests wait for one video; it arrives, served slowly. Its event's deadline ends
    the first manifest's planning and leaves the second unchecked: the delivery fails (so
    Eventarc delivers it again) with the first recorded; the redelivery checks the second."""
    monkeypatch.setenv("DROPBATCH_TRIGGER_DEADLINE_SECONDS", "4")
    store, bucket = inbox["store"], inbox["bucket"]
    body = MANIFEST.replace("[fast.mp4, slow.mp4]", "[late.mp4]").encode()
    for name in ("w/m1.yaml", "w/m2.yaml"):
        store.write_bytes(bucket, name, body)
        assert deliver(inbox, name) == 200
    status = open_status(Settings.from_env())
    assert {r.state for r in status.recent(10)} == {JobState.WAITING_FOR_INPUTS}
    inbox["front"].slow_reads(bucket, "w/late.mp4", HELD)
    store.upload_file(bucket, "w/late.mp4", inbox["clip"], content_type="video/mp4")
    assert deliver(inbox, "w/late.mp4") == 500  # redelivered by Eventarc (retry is on)
    states = {r.manifest: r.state for r in status.recent(10)}
    assert states == {"w/m1.yaml": JobState.FAILED, "w/m2.yaml": JobState.WAITING_FOR_INPUTS}
    first = {r.manifest: r for r in status.recent(10)}["w/m1.yaml"]
    assert deliver(inbox, "w/late.mp4") == 200
    after = {r.manifest: r for r in status.recent(10)}
    assert after["w/m1.yaml"].revision == first.revision  # not planned again
    second = after["w/m2.yaml"]
    assert second.state == JobState.FAILED
    assert second.error is not None and second.error.code == "PLANNING_TIMEOUT"
    assert second.error.uri == f"gs://{bucket}/w/late.mp4"
