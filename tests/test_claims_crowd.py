"""A crowd of workers on one job, on the Firestore emulator: 100 workers (threads, each with the
real `ChunkPicker` and `record_done` a task runs, around a chunk whose work is trivial) over a
1,000-chunk job. Every chunk is done exactly once, no worker fails, and no document is written
more than once a second, sustained (Firestore's limit per document).

How writes are counted: at the client, every Commit RPC the Firestore client sends (every
transaction's commit and every plain write goes through it) is wrapped; once a commit returns,
each document it wrote is stamped with that moment. Per document, the most writes in any
sliding window of 1 s and of 5 s are then found; "sustained" is the 5 s figure / 5.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from batch_jobs.claims import ChunkPicker, record_done
from dropbatch.domain import Chunk, Plan, PlannedItem, VideoInfo
from dropbatch.status.firestore import FirestoreStatusStore
from dropbatch.status.model import JobRecord, JobState, LeaseHolder

WORKERS = 100
ITEMS, CHUNKS_PER_ITEM = 4, 250  # 1,000 chunks
SUSTAINED_WINDOW = 5.0  # seconds
FIRESTORE_SUSTAINED_WRITES = 1.0  # per second and document


class CommitCounter:
    """Stamps each document a committed write touched (see the module doc)."""

    def __init__(self, store: FirestoreStatusStore) -> None:
        self.writes: dict[str, list[float]] = collections.defaultdict(list)
        self.failed = 0
        self._lock = threading.Lock()
        api = store.client._firestore_api
        send = api.commit

        def commit(*args: object, **kwargs: object) -> object:
            request = kwargs.get("request") or args[0]
            try:
                response = send(*args, **kwargs)
            except Exception:
                with self._lock:
                    self.failed += 1
                raise
            now = time.monotonic()
            with self._lock:
                for write in request["writes"] if isinstance(request, dict) else request.writes:
                    name = write.update.name if write.update.name else write.delete
                    self.writes[name].append(now)
            return response

        api.commit = commit

    def busiest(self, window: float) -> tuple[int, str]:
        """The most writes any one document took in `window` seconds, and which document."""
        best, where = 0, ""
        for name, stamps in self.writes.items():
            stamps = sorted(stamps)
            first = 0
            for last, at in enumerate(stamps):
                while at - stamps[first] > window:
                    first += 1
                if last - first + 1 > best:
                    best, where = last - first + 1, name
        return best, where


def crowd_plan() -> Plan:
    info = VideoInfo(duration=1000, fps_num=30, fps_den=1, frame_count=30_000, width=64, height=64)
    items = [
        PlannedItem(
            index=i,
            video=f"in-{i}.mp4",
            output=f"out/in-{i}.mp4",
            preview=f"out/in-{i}.jpg",
            info=info,
            chunks=[Chunk(index=c, start_frame=c * 30, end_frame=(c + 1) * 30) for c in range(250)],
        )
        for i in range(ITEMS)
    ]
    return Plan(items=items, max_parallel_tasks=WORKERS)


@pytest.fixture
def store(
    firestore_emulator: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FirestoreStatusStore]:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator)
    yield FirestoreStatusStore(f"crowd-{uuid.uuid4().hex[:10]}", project="dropbatch-test")


def test_a_hundred_workers_do_a_thousand_chunks_once_each_within_firestores_write_rate(
    store: FirestoreStatusStore,
) -> None:
    plan = crowd_plan()
    job_id = "crowd-job"
    record = JobRecord(job_id=job_id, bucket="inbox", manifest="m.yaml", manifest_generation=1,
                       manifest_uri="gs://inbox/m.yaml", state=JobState.RUNNING, plan=plan,
                       chunks_total=ITEMS * CHUNKS_PER_ITEM)  # fmt: skip
    assert store.create(record)
    counter = CommitCounter(store)
    done_by: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
    completed: list[int] = []  # items whose last chunk a worker saw complete
    failures: list[str] = []
    pickers: list[ChunkPicker] = []
    lock = threading.Lock()
    start = threading.Barrier(WORKERS)

    def worker(index: int) -> None:
        try:
            picker = ChunkPicker(
                store,
                job_id,
                plan,
                f"worker-{index}",
                LeaseHolder(task_index=index, attempt=0),
                task_index=index,
                task_count=WORKERS,
            )
            with lock:
                pickers.append(picker)
            start.wait()
            while (claim := picker.next()) is not None:
                with lock:  # the chunk's "work"
                    done_by[(claim.item, claim.chunk)].append(index)
                finished = record_done(store, job_id, plan, claim.item, claim.chunk)
                assert finished.first
                if finished.item_complete:
                    with lock:
                        completed.append(claim.item)
        except Exception as exc:  # a worker that fails is what this test looks for
            with lock:
                failures.append(f"worker {index}: {type(exc).__name__}: {exc}")

    began = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    seconds = time.monotonic() - began

    burst, burst_doc = counter.busiest(1.0)
    sustained, sustained_doc = counter.busiest(SUSTAINED_WINDOW)
    reads = collections.Counter()
    for picker in pickers:
        reads.update(picker.reads)
    print(
        f"\n{WORKERS} workers, {ITEMS * CHUNKS_PER_ITEM} chunks: {seconds:.1f} s; "
        f"{sum(map(len, counter.writes.values()))} document writes in "
        f"{len(counter.writes)} documents ({counter.failed} commits failed and were retried); "
        f"busiest document: {burst} writes in 1 s ({burst_doc.rsplit('/', 3)[-3:]}), "
        f"{sustained} in {SUSTAINED_WINDOW:.0f} s = {sustained / SUSTAINED_WINDOW:.2f}/s "
        f"sustained ({sustained_doc.rsplit('/', 3)[-3:]}); job document writes: "
        f"{len(counter.writes.get(store._ref(job_id)._document_path, []))}; claim reads: "
        f"{reads['all']} of every claim, {reads['pending']} of the open ones"
    )
    assert failures == []
    assert not any(t.is_alive() for t in threads)
    assert sorted(done_by) == plan.tasks()  # every chunk done...
    assert all(len(workers) == 1 for workers in done_by.values())  # ...exactly once
    assert sorted(set(completed)) == list(range(ITEMS))
    assert store.done_counts(job_id) == dict.fromkeys(range(ITEMS), CHUNKS_PER_ITEM)
    assert store.count_done(job_id) == ITEMS * CHUNKS_PER_ITEM
    assert all(c.done and c.grants == 1 for c in store.claims(job_id))
    assert sustained / SUSTAINED_WINDOW <= FIRESTORE_SUSTAINED_WRITES


def test_a_done_mark_whose_transaction_firestore_keeps_aborting_lands_after_backoff(
    firestore_emulator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """25 commits in a row answered ABORTED: more than the client library's own 10 tries of a
    transaction (after which it raises ValueError). The store retries the transaction with a
    pause and the chunk is recorded done, once; the worker is told it was first. (The worker
    would retry a failed done mark too, `persist`: this is the store's own retry.)"""
    from batch_jobs.claims import finish_claim
    from tests.firestore_faults import aborting_firestore

    plan = crowd_plan()
    with aborting_firestore(firestore_emulator, abort_commits=25) as (host, relay):
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", host)
        store = FirestoreStatusStore(f"aborts-{uuid.uuid4().hex[:10]}", project="dropbatch-test")
        record = JobRecord(job_id="job", bucket="inbox", manifest="m.yaml", manifest_generation=1,
                           manifest_uri="gs://inbox/m.yaml", plan=plan)  # fmt: skip
        assert store.create(record)  # a plain write, not a transaction: not aborted
        assert finish_claim(store, "job", 2, 7) is True  # marked by this call
        assert relay.aborted == 25
        assert finish_claim(store, "job", 2, 7) is False
        assert store.count_done("job", 2) == 1 and store.done_counts("job") == {2: 1}
