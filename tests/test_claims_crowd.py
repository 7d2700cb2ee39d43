"""A crowd of workers on one job, on the Firestore emulator: 100 workers (threads running the
real claim and done code, tests/crowd.py) over a 1,000-chunk job. Every chunk is done exactly
once, no worker fails, and no document is written more than once a second, sustained
(Firestore's limit per document; writes counted at the client, see tests/crowd.py). And a
transaction Firestore keeps aborting is retried by the store until it lands."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from core.status.firestore import FirestoreStatusStore
from core.status.model import JobRecord
from tests.crowd import CommitCounter, crowd_plan, run_crowd

WORKERS = 100
ITEMS, CHUNKS_PER_ITEM = 4, 250  # 1,000 chunks
SUSTAINED_WINDOW = 5.0  # seconds
FIRESTORE_SUSTAINED_WRITES = 1.0  # per second and document


@pytest.fixture
def store(
    firestore_emulator: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FirestoreStatusStore]:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator)
    yield FirestoreStatusStore(f"crowd-{uuid.uuid4().hex[:10]}", project="dropbatch-test")


def test_a_hundred_workers_do_a_thousand_chunks_once_each_within_firestores_write_rate(
    store: FirestoreStatusStore,
) -> None:
    plan = crowd_plan(ITEMS, CHUNKS_PER_ITEM, WORKERS)
    counter = CommitCounter(store)
    crowd = run_crowd(store, "crowd-job", plan, WORKERS)
    burst, burst_doc = counter.busiest(1.0)
    sustained, sustained_doc = counter.busiest(SUSTAINED_WINDOW)
    job_writes = len(counter.writes.get(store._ref("crowd-job")._document_path, []))
    print(
        f"\n{WORKERS} workers, {ITEMS * CHUNKS_PER_ITEM} chunks: {crowd.seconds:.1f} s; "
        f"{counter.total()} document writes in {len(counter.writes)} documents "
        f"({counter.failed} commits refused and retried); busiest document: {burst} writes in "
        f"1 s ({'/'.join(burst_doc.split('/')[-3:])}), {sustained} in {SUSTAINED_WINDOW:.0f} s "
        f"= {sustained / SUSTAINED_WINDOW:.2f}/s sustained; job document: {job_writes} writes; "
        f"claim reads: {crowd.reads['all']} of every claim, {crowd.reads['pending']} of the "
        f"open ones"
    )
    assert crowd.failures == [] and crowd.alive == 0
    assert sorted(crowd.done_by) == plan.tasks()  # every chunk done...
    assert all(len(workers) == 1 for workers in crowd.done_by.values())  # ...exactly once
    assert crowd.second == 0
    assert sorted(set(crowd.completed)) == list(range(ITEMS))
    assert store.done_counts("crowd-job") == dict.fromkeys(range(ITEMS), CHUNKS_PER_ITEM)
    assert store.count_done("crowd-job") == ITEMS * CHUNKS_PER_ITEM
    assert all(c.done and c.grants == 1 for c in store.claims("crowd-job"))
    assert sustained / SUSTAINED_WINDOW <= FIRESTORE_SUSTAINED_WRITES, sustained_doc


def test_a_done_mark_whose_transaction_firestore_keeps_aborting_lands_after_backoff(
    firestore_emulator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """25 commits in a row answered ABORTED: more than the client library's own 10 tries of a
    transaction (after which it raises ValueError). The store retries the transaction with a
    pause and the chunk is recorded done, once; the worker is told it was first. (The worker
    would retry a failed done mark too, `persist`: this is the store's own retry.)"""
    from batch_jobs.claims import finish_claim
    from tests.firestore_faults import aborting_firestore

    with aborting_firestore(firestore_emulator, abort_commits=25) as (host, relay):
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", host)
        store = FirestoreStatusStore(f"aborts-{uuid.uuid4().hex[:10]}", project="dropbatch-test")
        record = JobRecord(job_id="job", bucket="inbox", manifest="m.yaml", manifest_generation=1,
                           manifest_uri="gs://inbox/m.yaml", plan=crowd_plan(4, 10, 2))  # fmt: skip
        assert store.create(record)  # a plain write, not a transaction: not aborted
        assert finish_claim(store, "job", 2, 7) is True  # marked by this call
        assert relay.aborted == 25
        assert finish_claim(store, "job", 2, 7) is False
        assert store.count_done("job", 2) == 1 and store.done_counts("job") == {2: 1}
