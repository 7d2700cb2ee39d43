"""SqliteStatusStore: create-if-absent, read-modify-write transactions across processes, queries."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from dropbatch.status.base import JobNotFound
from dropbatch.status.model import JobError, JobRecord, JobState, TaskProgress
from dropbatch.status.sqlite import SqliteStatusStore

PROCESSES = 4
APPENDS_PER_PROCESS = 25


def record(
    job_id: str = "job-1",
    *,
    bucket: str = "inbox",
    manifest: str = "c7/manifest.yaml",
    state: JobState = JobState.RECEIVED,
    created_at: float = 1000.0,
) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        bucket=bucket,
        manifest=manifest,
        manifest_generation=1,
        manifest_uri=f"gs://{bucket}/{manifest}",
        state=state,
        created_at=created_at,
        updated_at=created_at,
    )


@pytest.fixture
def store(tmp_path: Path) -> SqliteStatusStore:
    return SqliteStatusStore(tmp_path / "state" / "status.sqlite")


# -- create and get ----------------------------------------------------------------------------


def test_create_only_if_absent(store: SqliteStatusStore) -> None:
    assert store.create(record(state=JobState.QUEUED)) is True
    assert store.create(record(state=JobState.FAILED)) is False
    stored = store.get("job-1")
    assert stored is not None
    assert stored.state == JobState.QUEUED


def test_get_returns_what_was_created(store: SqliteStatusStore) -> None:
    original = record()
    original.error = JobError(code="X", message="y", field="chain[0]")
    original.chunks_done = {"0": [1, 2]}
    store.create(original)
    stored = store.get("job-1")
    assert stored is not None
    assert stored.revision >= 1
    assert stored.model_dump(exclude={"revision"}) == original.model_dump(exclude={"revision"})


def test_get_of_unknown_job_is_none(store: SqliteStatusStore) -> None:
    assert store.get("nobody") is None


def test_records_survive_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "status.sqlite"
    SqliteStatusStore(path).create(record())
    reopened = SqliteStatusStore(path)
    assert reopened.get("job-1") is not None
    assert reopened.create(record()) is False


# -- transact ------------------------------------------------------------------------------------


def test_transact_increments_revision_only_when_the_record_changed(
    store: SqliteStatusStore,
) -> None:
    store.create(record())
    start = store.get("job-1")
    assert start is not None

    unchanged, result = store.transact("job-1", lambda r: r.state)
    assert result == JobState.RECEIVED
    assert unchanged.revision == start.revision
    assert store.get("job-1").revision == start.revision

    def to_queued(r: JobRecord) -> str:
        r.set_state(JobState.QUEUED, now=2000.0)
        return "moved"

    changed, result = store.transact("job-1", to_queued)
    assert result == "moved"
    assert changed.revision == start.revision + 1
    stored = store.get("job-1")
    assert stored.revision == start.revision + 1
    assert stored.state == JobState.QUEUED
    assert stored.updated_at >= start.updated_at

    again, _ = store.transact("job-1", to_queued)  # already QUEUED: set_state is a no-op
    assert again.revision == start.revision + 1


def test_transact_on_unknown_job_raises(store: SqliteStatusStore) -> None:
    with pytest.raises(JobNotFound):
        store.transact("nobody", lambda r: None)


def test_transact_that_raises_writes_nothing(store: SqliteStatusStore) -> None:
    store.create(record())

    def half_done(r: JobRecord) -> None:
        r.set_state(JobState.RUNNING)
        raise RuntimeError("task crashed mid-update")

    with pytest.raises(RuntimeError):
        store.transact("job-1", half_done)
    stored = store.get("job-1")
    assert stored.state == JobState.RECEIVED
    assert stored.revision == 1
    store.transact("job-1", lambda r: r.set_state(JobState.RUNNING))  # the lock was released
    assert store.get("job-1").state == JobState.RUNNING


def test_marking_a_chunk_done_twice_counts_once(store: SqliteStatusStore) -> None:
    store.create(record())

    def mark(r: JobRecord) -> None:
        done = r.chunks_done.setdefault("0", [])
        if 3 not in done:
            done.append(3)

    first, _ = store.transact("job-1", mark)
    retry, _ = store.transact("job-1", mark)
    assert retry.chunks_done == {"0": [3]}
    assert retry.revision == first.revision


def _append_many(path: str, worker: int, barrier: multiprocessing.synchronize.Barrier) -> None:
    store = SqliteStatusStore(Path(path))
    barrier.wait()
    for i in range(APPENDS_PER_PROCESS):
        value = worker * APPENDS_PER_PROCESS + i
        store.transact("job-1", lambda r, v=value: r.chunks_done.setdefault("0", []).append(v))


def test_concurrent_transactions_from_several_processes_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "status.sqlite"
    store = SqliteStatusStore(path)
    store.create(record())
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    workers = [
        context.Process(target=_append_many, args=(str(path), w, barrier)) for w in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0] * PROCESSES

    stored = store.get("job-1")
    total = PROCESSES * APPENDS_PER_PROCESS
    assert sorted(stored.chunks_done["0"]) == list(range(total))
    assert stored.revision == 1 + total


# -- recent ----------------------------------------------------------------------------------------


@pytest.fixture
def history(store: SqliteStatusStore) -> SqliteStatusStore:
    jobs = [
        record("a", bucket="inbox", manifest="c7/m.yaml", state=JobState.SUCCEEDED, created_at=1),
        record("b", bucket="inbox", manifest="c8/m.yaml", state=JobState.FAILED, created_at=3),
        record("c", bucket="other", manifest="c7/m.yaml", state=JobState.RUNNING, created_at=2),
        record("d", bucket="inbox", manifest="c7/m.yaml", state=JobState.RUNNING, created_at=4),
    ]
    for job in jobs:
        assert store.create(job)
    return store


def ids(records: list[JobRecord]) -> list[str]:
    return [r.job_id for r in records]


def test_recent_is_newest_first_and_limited(history: SqliteStatusStore) -> None:
    assert ids(history.recent()) == ["d", "b", "c", "a"]
    assert ids(history.recent(limit=2)) == ["d", "b"]


def test_recent_filters_by_bucket_manifest_and_state(history: SqliteStatusStore) -> None:
    assert ids(history.recent(bucket="inbox")) == ["d", "b", "a"]
    assert ids(history.recent(manifest="c7/m.yaml")) == ["d", "c", "a"]
    assert ids(history.recent(bucket="inbox", manifest="c7/m.yaml")) == ["d", "a"]
    assert ids(history.recent(states=[JobState.RUNNING])) == ["d", "c"]
    assert ids(history.recent(states=[JobState.FAILED, JobState.SUCCEEDED])) == ["b", "a"]
    assert ids(history.recent(bucket="other", states=[JobState.FAILED])) == []
    assert ids(history.recent(states=[])) == ["d", "b", "c", "a"]


def test_recent_sees_state_changed_by_transact(history: SqliteStatusStore) -> None:
    history.transact("c", lambda r: r.set_state(JobState.CANCELLED))
    assert ids(history.recent(states=[JobState.RUNNING])) == ["d"]
    assert ids(history.recent(states=[JobState.CANCELLED])) == ["c"]


# -- progress ------------------------------------------------------------------------------------


def test_progress_is_listed_by_task_index_and_replaced_per_task(store: SqliteStatusStore) -> None:
    for task in (2, 0, 1):
        store.put_progress(TaskProgress(job_id="job-1", task_index=task, item=0, chunk=task))
    store.put_progress(TaskProgress(job_id="job-2", task_index=0, item=0, chunk=0))
    store.put_progress(
        TaskProgress(
            job_id="job-1", task_index=1, item=0, chunk=1, frames_done=50, frames_total=100
        )
    )
    listed = store.progress("job-1")
    assert [p.task_index for p in listed] == [0, 1, 2]
    assert listed[1].frames_done == 50
    assert listed[1].frames_total == 100
    assert [p.job_id for p in store.progress("job-2")] == ["job-2"]
    assert store.progress("nobody") == []
