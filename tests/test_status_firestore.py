"""FirestoreStatusStore beyond the contract: the document layout people see in the console,
progress writes at most once a second per task document, and collection / database chosen by
settings."""

from __future__ import annotations

import itertools
import time
import uuid

import pytest

from core.config import Settings
from core.domain import JobError
from core.status import open_status
from core.status.firestore import FirestoreStatusStore
from core.status.model import JobRecord, JobState, TaskProgress

PROJECT = "dropbatch-test"


@pytest.fixture
def emulator(firestore_emulator: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator)
    return firestore_emulator


def _record(job_id: str = "job-1") -> JobRecord:
    return JobRecord(
        job_id=job_id,
        bucket="inbox",
        manifest="c7/job.yaml",
        manifest_generation=1_795_288_545_046_154,
        manifest_uri="gs://inbox/c7/job.yaml",
    )


def test_the_job_document_shows_state_and_error_as_fields(emulator: str) -> None:
    store = FirestoreStatusStore(f"layout-{uuid.uuid4().hex[:8]}", project=PROJECT)
    store.create(_record())

    def fail(r: JobRecord) -> None:
        r.set_state(JobState.FAILED)
        r.error = JobError(code="TASKS_FAILED", message="task 3 exited 1")

    store.transact("job-1", fail)
    fields = store.jobs.document("job-1").get().to_dict()
    assert fields["state"] == "FAILED"
    assert fields["error"] == {"code": "TASKS_FAILED", "message": "task 3 exited 1"}
    assert fields["manifest_uri"] == "gs://inbox/c7/job.yaml"
    assert fields["manifest_generation"] == 1_795_288_545_046_154
    assert fields["revision"] == 2
    revisions = [d.id for d in store.jobs.document("job-1").collection("revisions").stream()]
    assert revisions == ["0000000002"]


def test_progress_writes_to_one_task_document_are_a_second_apart(emulator: str) -> None:
    store = FirestoreStatusStore(f"rate-{uuid.uuid4().hex[:8]}", project=PROJECT)
    document = store.jobs.document("job-1").collection("tasks").document("000000")
    progress = TaskProgress(job_id="job-1", task_index=0, item=0, chunk=0, frames_total=100)
    written: list[float] = []
    deadline = time.monotonic() + 3.5
    frames = 0
    while time.monotonic() < deadline:  # a task reporting every 50 ms
        frames += 1
        store.put_progress(progress.model_copy(update={"frames_done": frames}))
        snapshot = document.get()
        stamp = snapshot.update_time.timestamp()
        if not written or stamp != written[-1]:
            written.append(stamp)
        time.sleep(0.05)
    store.put_progress(progress.model_copy(update={"frames_done": 100, "state": "SUCCEEDED"}))
    written.append(document.get().update_time.timestamp())
    gaps = [b - a for a, b in itertools.pairwise(written)]
    assert 3 <= len(written) <= 6
    assert min(gaps) >= 0.99
    assert store.progress("job-1")[0].state == "SUCCEEDED"


def test_collection_and_database_come_from_settings(emulator: str) -> None:
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    first = open_status(Settings(status="firestore", project=PROJECT, firestore_collection=name))
    other_collection = open_status(
        Settings(status="firestore", project=PROJECT, firestore_collection=name + "-b")
    )
    other_database = open_status(
        Settings(
            status="firestore",
            project=PROJECT,
            firestore_collection=name,
            firestore_database="reports",
        )
    )
    assert first.create(_record())
    assert first.get("job-1") is not None
    assert other_collection.get("job-1") is None
    assert other_database.get("job-1") is None
    assert other_database.create(_record())  # the same id, another database: another job
