"""Status in Firestore: one document per job, one per task, in a configurable collection and
database. It behaves exactly as the SQLite store (the contract tests hold both to it).

Layout, under `<collection>/<job_id>`:
- the job document: the fields people filter and read in the console (state, bucket,
  manifest, timings, outputs, error) and `record`, the whole JobRecord as zlib-compressed JSON
  (the plan of a manifest with hundreds of inputs stays far below the 1 MiB document limit,
  and its thousands of chunk entries are not index entries);
- `tasks/<index>`: per-task progress, written at most once a second per document, the rate a
  Firestore document sustains;
- `revisions/<n>`: one empty document per committed revision of the job record;
- `claims/<item>-<chunk>`: a chunk's claim (which worker processes it, until when, and whether
  it is done: the job's done-set is these, counted by queries, so a finished chunk never
  writes the job document), written only by the few transactions of that chunk (claim,
  renewal every third of the lease, done), with its own `claims/<item>-<chunk>/revisions/<n>`
  guards.

Self-check reports (`dropbatch doctor`) live beside it in `<collection>_checks/<check_id>`, so
the job queries never meet them; the warm pool's workers in `<collection>_workers/<id>`
(one small document each, written by its worker every few seconds at most).

`transact` is a read-modify-write in a Firestore transaction that also *creates*
`revisions/<n+1>`. Creating a document that exists fails the whole commit, so of two writers
that read revision n only one can commit revision n+1, whatever the server's concurrency mode
(the npm emulator runs transactions without isolation; this guard is what it does enforce);
the loser re-reads and tries again.
"""

from __future__ import annotations

import random
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

from google.api_core import exceptions as google_errors
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from core.status.base import JobNotFound, RecordTooLarge, StatusContention
from core.status.model import (
    CheckReport,
    ChunkClaim,
    JobRecord,
    JobState,
    PoolWorker,
    TaskProgress,
)

T = TypeVar("T")

PROGRESS_INTERVAL = 1.0  # seconds between writes to one task document
MAX_RECORD_BYTES = 900_000  # compressed; a document may hold 1 MiB including field names
COMMIT_ATTEMPTS = 50  # revision races before giving up (each loser re-reads and retries)
COMMIT_BACKOFF_CAP = 1.0  # seconds: the longest pause between two tries of one transaction


def _encode(record: JobRecord) -> dict[str, Any]:
    packed = zlib.compress(record.model_dump_json().encode(), 6)
    if len(packed) > MAX_RECORD_BYTES:
        raise RecordTooLarge(
            f"job {record.job_id}: status record is {len(packed)} bytes compressed, over the "
            f"{MAX_RECORD_BYTES} a Firestore document holds; split the manifest"
        )
    return {
        "job_id": record.job_id,
        "bucket": record.bucket,
        "manifest": record.manifest,
        "folder": record.folder,  # by_state's filter: the manifest's folder, '' at the root
        "manifest_uri": record.manifest_uri,
        "manifest_generation": record.manifest_generation,
        "state": record.state.value,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "revision": record.revision,
        "chunks_total": record.chunks_total,
        "outputs": list(record.outputs),
        "error": record.error.model_dump(exclude_none=True) if record.error else None,
        "batch_job": record.batch_job,
        "record": packed,
    }


def _decode(fields: dict[str, Any]) -> JobRecord:
    return JobRecord.model_validate_json(zlib.decompress(fields["record"]))


# Every state of a pool worker but `gone` (core.status.model.PoolWorker.state).
PRESENT_WORKER_STATES = ("starting", "busy", "finishing", "idle", "exiting")


class FirestoreStatusStore:
    def __init__(
        self,
        collection: str = "dropbatch_jobs",
        *,
        project: str | None = None,
        database: str = "(default)",
        client: firestore.Client | None = None,
    ) -> None:
        # FIRESTORE_EMULATOR_HOST, when set, is honoured by the client library itself.
        self.client = client or firestore.Client(project=project or None, database=database)
        self.jobs = self.client.collection(collection)
        self.checks = self.client.collection(f"{collection}_checks")
        self.workers = self.client.collection(f"{collection}_workers")
        self._written: dict[tuple[str, int], tuple[float, str]] = {}
        self._written_lock = threading.Lock()

    def _ref(self, job_id: str) -> firestore.DocumentReference:
        return self.jobs.document(job_id)

    # -- create and get ------------------------------------------------------------------
    def create(self, record: JobRecord) -> bool:
        record.revision = max(record.revision, 1)
        try:
            self._ref(record.job_id).create(_encode(record))
        except google_errors.AlreadyExists:
            return False
        return True

    def get(self, job_id: str) -> JobRecord | None:
        snapshot = self._ref(job_id).get()
        return _decode(snapshot.to_dict()) if snapshot.exists else None

    # -- transact ------------------------------------------------------------------------
    def transact(self, job_id: str, mutate: Callable[[JobRecord], T]) -> tuple[JobRecord, T]:
        ref = self._ref(job_id)

        @firestore.transactional
        def attempt(transaction: firestore.Transaction) -> tuple[JobRecord, T]:
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists:
                raise JobNotFound(job_id)
            record = _decode(snapshot.to_dict())
            before = record.model_dump_json()
            result = mutate(record)
            if record.model_dump_json() != before:
                record.revision += 1
                record.updated_at = time.time()
                guard = ref.collection("revisions").document(f"{record.revision:010d}")
                transaction.create(guard, {"at": record.updated_at})  # first, see module doc
                transaction.set(ref, _encode(record))
            return record, result

        return self._commit(
            lambda: attempt(self.client.transaction(max_attempts=10)),
            f"job {job_id}: {COMMIT_ATTEMPTS} writers in a row won the race",
        )

    def _commit(self, run: Callable[[], T], contended: str) -> T:
        """Run a transaction until it commits: a lost revision race (AlreadyExists, see the
        module doc) or a transaction Firestore aborted for contention — which the client
        library retries itself, then gives up on with a ValueError — is read again and applied
        again after a random, growing pause, so a crowd of writers spreads out instead of
        colliding again. After COMMIT_ATTEMPTS: `StatusContention`, nothing written."""
        for tries in range(COMMIT_ATTEMPTS):
            try:
                return run()
            except (google_errors.AlreadyExists, google_errors.Aborted):
                pass
            except ValueError as exc:
                if not isinstance(exc.__cause__, google_errors.Aborted):
                    raise  # the mutation's own error (a ValidationError is a ValueError too)
            time.sleep(random.uniform(0, min(COMMIT_BACKOFF_CAP, 0.02 * 2 ** min(tries, 10))))
        raise StatusContention(contended)

    # -- chunk claims ----------------------------------------------------------------------
    def _claims(self, job_id: str) -> firestore.CollectionReference:
        return self._ref(job_id).collection("claims")

    def claims(self, job_id: str, *, pending: bool = False) -> list[ChunkClaim]:
        query: Any = self._claims(job_id)
        if pending:
            query = query.where(filter=FieldFilter("done", "==", False))
        found = [ChunkClaim.model_validate(d.to_dict()["claim"]) for d in query.stream()]
        return sorted(found, key=lambda c: (c.item, c.chunk))

    def transact_claim(
        self, job_id: str, item: int, chunk: int, mutate: Callable[[ChunkClaim], T]
    ) -> tuple[ChunkClaim, T]:
        ref = self._claims(job_id).document(f"{item:06d}-{chunk:06d}")

        @firestore.transactional
        def attempt(transaction: firestore.Transaction) -> tuple[ChunkClaim, T]:
            snapshot = ref.get(transaction=transaction)
            fields = snapshot.to_dict() if snapshot.exists else {}
            claim = (
                ChunkClaim.model_validate(fields["claim"])
                if fields
                else ChunkClaim(item=item, chunk=chunk)
            )
            before = claim.model_dump_json()
            result = mutate(claim)
            if claim.model_dump_json() != before:
                revision = int(fields.get("revision", 0)) + 1
                # The same guard as the job record's (module doc): one writer per revision.
                guard = ref.collection("revisions").document(f"{revision:010d}")
                transaction.create(guard, {"at": time.time()})
                # `item` and `done` beside the claim, top level: what the done queries filter
                # on (one single-field index each, built by Firestore without asking).
                written = {
                    "claim": claim.model_dump(mode="json"),
                    "revision": revision,
                    "item": claim.item,
                    "done": claim.done,
                }
                transaction.set(ref, written)
            return claim, result

        return self._commit(
            lambda: attempt(self.client.transaction(max_attempts=10)),
            f"job {job_id}: chunk {item}/{chunk} claim kept losing races",
        )

    def done_counts(self, job_id: str) -> dict[int, int]:
        # Only the item number of each done claim crosses the wire (one read per done chunk;
        # `dropbatch status` and the status file ask, a few times a job).
        done = self._claims(job_id).where(filter=FieldFilter("done", "==", True)).select(["item"])
        counts: dict[int, int] = {}
        for snapshot in done.stream():
            item = int(snapshot.get("item"))
            counts[item] = counts.get(item, 0) + 1
        return dict(sorted(counts.items()))

    def count_done(self, job_id: str, item: int | None = None) -> int:
        # An aggregation: billed as one read per 1000 index entries, not one per chunk, so
        # every finished chunk can ask whether its item is complete.
        query: Any = self._claims(job_id).where(filter=FieldFilter("done", "==", True))
        if item is not None:
            query = query.where(filter=FieldFilter("item", "==", item))
        [[result]] = query.count(alias="done").get()
        return int(result.value)

    # -- queries -------------------------------------------------------------------------
    def recent(
        self,
        limit: int = 20,
        *,
        bucket: str | None = None,
        manifest: str | None = None,
        states: list[JobState] | None = None,
    ) -> list[JobRecord]:
        filters = []
        if bucket is not None:
            filters.append(FieldFilter("bucket", "==", bucket))
        if manifest is not None:
            filters.append(FieldFilter("manifest", "==", manifest))
        if states:
            filters.append(FieldFilter("state", "in", [s.value for s in states]))
        if not filters:
            newest = self.jobs.order_by("created_at", direction=firestore.Query.DESCENDING)
            return [_decode(s.to_dict()) for s in newest.limit(limit).stream()]
        # Filtered queries (one manifest's jobs, the waiting ones) match few documents: they
        # are sorted here, so no composite index has to be deployed for each combination.
        query: Any = self.jobs
        for condition in filters:
            query = query.where(filter=condition)
        found = [_decode(s.to_dict()) for s in query.stream()]
        found.sort(key=lambda r: r.created_at, reverse=True)
        return found[:limit]

    def by_state(
        self,
        states: list[JobState],
        *,
        bucket: str | None = None,
        folders: list[str] | None = None,
    ) -> list[JobRecord]:
        if not states:
            return []
        base: Any = self.jobs.where(filter=FieldFilter("state", "in", [s.value for s in states]))
        if bucket is not None:
            base = base.where(filter=FieldFilter("bucket", "==", bucket))
        # One query per folder of the chain (a few): equality filters only, which Firestore
        # serves from its single-field indexes, no composite index to deploy.
        queries = (
            [base]
            if folders is None
            else [base.where(filter=FieldFilter("folder", "==", f)) for f in dict.fromkeys(folders)]
        )
        found = {s.id: _decode(s.to_dict()) for query in queries for s in query.stream()}
        return sorted(found.values(), key=lambda r: (r.created_at, r.job_id))

    # -- progress ------------------------------------------------------------------------
    def put_progress(self, progress: TaskProgress) -> None:
        key = (progress.job_id, progress.task_index)
        with self._written_lock:
            last_at, last_state = self._written.get(key, (0.0, ""))
        wait = last_at + PROGRESS_INTERVAL - time.time()
        if wait > 0:
            if progress.state == last_state:
                return  # a newer frame count follows within the second; this one can go
            time.sleep(wait)  # a state change must land, one interval after the last write
        self._ref(progress.job_id).collection("tasks").document(f"{progress.task_index:06d}").set(
            progress.model_dump(mode="json")
        )
        # Timed once the write has returned: the server committed it by then, so the next
        # commit lands a full interval later; a caller pacing itself 1 s after its own call
        # returns (ProgressReporter) is never dropped.
        with self._written_lock:
            self._written[key] = (time.time(), progress.state)

    def progress(self, job_id: str) -> list[TaskProgress]:
        tasks = self._ref(job_id).collection("tasks").order_by("task_index")
        return [TaskProgress.model_validate(s.to_dict()) for s in tasks.stream()]

    # -- the warm pool's workers: one small document each, `<collection>_workers/<id>` --------
    def put_worker(self, worker: PoolWorker) -> None:
        self.workers.document(worker.worker_id).set(worker.model_dump(mode="json"))

    def pool_workers(self, pool: str | None = None, *, present: bool = False) -> list[PoolWorker]:
        query: Any = self.workers
        if pool is not None:
            query = query.where(filter=FieldFilter("pool", "==", pool))
        if present:  # equality filters only: served by single-field indexes, no composite one
            query = query.where(filter=FieldFilter("state", "in", list(PRESENT_WORKER_STATES)))
        found = [PoolWorker.model_validate(s.to_dict()) for s in query.stream()]
        return sorted(found, key=lambda w: w.worker_id)

    # -- self-checks ---------------------------------------------------------------------
    def put_check(self, report: CheckReport) -> None:
        self.checks.document(report.check_id).set(report.model_dump(mode="json"))

    def get_check(self, check_id: str) -> CheckReport | None:
        snapshot = self.checks.document(check_id).get()
        return CheckReport.model_validate(snapshot.to_dict()) if snapshot.exists else None
