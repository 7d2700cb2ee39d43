"""The warm pool: a worker that outlives its job (docs/decisions/0119-warm-pool-of-workers.md).

A task launched as pool capacity (`DROPBATCH_POOL` set: the image and machine kind it runs)
does not stop when its first job has no chunk left. After every chunk it looks at every job of
its pool that has a chunk it could claim now and takes one chunk of the job with the fewest
workers (batch_jobs/pool_rules.pick_job); with nothing to claim it stitches what nobody
stitches, then waits, and exits once `warm_minutes` pass with nothing to claim. Models (and
TensorRT engines) stay loaded in the process between jobs: the session cache is keyed by file
(processors/models/sessions.py).

Each worker keeps one small document (`PoolWorker`): its state, the job and chunk it holds, and
its busy and idle seconds; rewritten on every change and every few seconds as its heartbeat.
The trigger counts these before it launches capacity (batch_jobs/pool_capacity.py).

A job's state comes from its claims, not from the engine: RUNNING when a worker starts on
it, FAILED when one chunk failed `max_retries + 1` times (counted on the chunk's claim,
batch_jobs/task.pooled_chunk_failed), SUCCEEDED when its last item is stitched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field

from batch_jobs.claims import claimable, dead_for
from batch_jobs.leases import Renewer
from batch_jobs.liveness import HEARTBEAT_SECONDS, current_owner
from batch_jobs.pool_rules import (
    BUSY_STATES,
    ENGINE_ENV,
    POOL_ENV,
    POOL_WORKER_SECONDS,
    JobLoad,
    pick_job,
    starting_grace,
    worker_alive,
)
from batch_jobs.task import Worker, do_claim, start_worker, stitch_item_of
from batch_jobs.worker import WorkerSetup, unstitched_items
from core import logs
from core.config import Settings
from core.logs import event
from core.status import open_status
from core.status.base import StatusStore
from core.status.model import ENGINE_STATES, JobRecord, LeaseHolder, PoolWorker
from core.storage import open_store
from core.storage.base import ObjectStore
from processors.gpu import gpu_required_here

log = logging.getLogger("dropbatch.pool")

IDLE_POLL_SECONDS = 2.0  # a worker with nothing to claim looks again this often
LOOK_TRIES = 10  # looks at the pool's jobs failing in a row before the worker gives up
WRITE_INTERVAL = 1.0  # Firestore sustains about one write a second per document


def progress_index(worker_id: str) -> int:
    """The worker's task index in each job's progress records: stable and, across the pool's
    workers, distinct in practice (two capacity jobs both have a task 0)."""
    return zlib.crc32(worker_id.encode()) & 0x7FFFFFFF


# -- this worker's document: state, heartbeat, busy and idle seconds ---------------------------
class PoolMember:
    """Writes this worker's `PoolWorker` document: at every state change (at most one write
    a second) and every HEARTBEAT_SECONDS from a thread (`leases.Renewer`), adding the time
    since the last write to its busy or idle seconds."""

    def __init__(self, status: StatusStore, doc: PoolWorker) -> None:
        self.status, self.doc = status, doc
        self._lock = threading.Lock()
        self._since = time.time()
        self._written = 0.0
        # A Renewer ticks every third of its "lease": every HEARTBEAT_SECONDS here.
        self._beat = Renewer(
            self._heartbeat, 3 * HEARTBEAT_SECONDS, "pool-heartbeat", "pool heartbeat failed"
        )

    def set(self, state: str, job_id: str | None = None, **fields: object) -> None:
        with self._lock:
            if job_id is not None:
                self.doc.job_id = job_id
            for key, value in fields.items():
                setattr(self.doc, key, value)
            self._write(state)

    def _write(self, state: str) -> None:
        now = time.time()
        spent = now - self._since
        if self.doc.state in BUSY_STATES:
            self.doc.busy_seconds = round(self.doc.busy_seconds + spent, 3)
        elif self.doc.state in ("idle", "exiting"):
            self.doc.idle_seconds = round(self.doc.idle_seconds + spent, 3)
        self._since = now
        self.doc.state = state
        pause = self._written + WRITE_INTERVAL - now
        if pause > 0:
            time.sleep(pause)
        self.doc.updated_at = time.time()
        self.status.put_worker(self.doc)
        self._written = time.time()

    def _heartbeat(self) -> bool:
        with self._lock:
            if time.time() - self._written >= HEARTBEAT_SECONDS:
                self._write(self.doc.state)
        return True  # beat until the worker stops

    def __enter__(self) -> PoolMember:
        self._beat.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._beat.__exit__(*exc)
        with contextlib.suppress(Exception):
            self.set("gone", item=None, chunk=None)


# -- what a free worker sees -------------------------------------------------------------------
def job_loads(
    status: StatusStore, pool: str, holder: LeaseHolder, starting_grace: float
) -> tuple[list[JobLoad], dict[str, JobRecord]]:
    """Every open job of the pool as a free worker weighs it: chunks it could claim now
    (never claimed, lease run out, holder dead) and live workers on it."""
    now = time.time()
    records = {
        r.job_id: r for r in status.by_state(list(ENGINE_STATES)) if r.pool == pool and r.plan
    }
    on_job: dict[str, int] = {}
    for w in status.pool_workers(pool, present=True):
        if w.state in BUSY_STATES and worker_alive(w, now, starting_grace):
            on_job[w.job_id] = on_job.get(w.job_id, 0) + 1
    dead = dead_for(holder)
    loads = []
    for record in records.values():
        pending = status.claims(record.job_id, pending=True)
        done = status.count_done(record.job_id)
        never = max(0, record.chunks_total - done - len(pending))
        free = never + sum(1 for c in pending if claimable(c, now, dead))
        loads.append(JobLoad(record.job_id, record.created_at, free, on_job.get(record.job_id, 0)))
    return loads, records


# -- the worker --------------------------------------------------------------------------------
@dataclass
class PoolWorkerRun:
    """One pool worker's state across the jobs it serves."""

    settings: Settings
    store: ObjectStore
    status: StatusStore
    member: PoolMember
    pool: str
    index: int  # its task index in every job's progress records
    attempt: int
    warm_seconds: float
    starting_grace: float
    holder: LeaseHolder
    jobs: dict[str, tuple[Worker, WorkerSetup]] = field(default_factory=dict)
    current: str | None = None

    def job(self, record: JobRecord) -> tuple[Worker, WorkerSetup]:
        """The job's worker state (its claim picker, its side inputs), set up once per job."""
        found = self.jobs.get(record.job_id)
        if found is None:
            worker = start_worker(
                self.settings, self.store, self.status, record, record.job_id, self.index,
                self.attempt, None,
            )  # fmt: skip
            worker.pooled = True
            found = (worker, WorkerSetup(self.store, record))
            self.jobs[record.job_id] = found
            self.member.doc.jobs += 1
        return found

    def forget(self, open_jobs: dict[str, JobRecord]) -> None:
        """Jobs that ended: their side inputs go."""
        for job_id in [j for j in self.jobs if j not in open_jobs]:
            worker, setup = self.jobs.pop(job_id)
            setup.__exit__(None, None, None)
            progress = worker.reporter.progress
            if progress.state == "RUNNING":  # this worker is done with it, as a task would be
                with contextlib.suppress(Exception):
                    worker.reporter.update(progress.frames_done, force=True, state="SUCCEEDED")


def run_pool_worker(
    settings: Settings, first_job: str, index: int, attempt: int, pool: str, engine_job: str
) -> int:
    """A warm-pool worker: chunks of its pool's jobs, fairest job first, until `warm_minutes`
    pass with nothing to claim; its exit code (2 only when this machine cannot run the
    pool's GPU jobs at all)."""
    store, status = open_store(settings), open_status(settings)
    worker_id = f"{engine_job.rsplit('/', 1)[-1]}-{index}"
    logs.bind(pool_worker=worker_id)
    me = current_owner()
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    doc = PoolWorker(
        worker_id=worker_id, pool=pool, engine_job=engine_job, job_id=first_job, owner=owner,
        process=me,
    )  # fmt: skip
    with contextlib.suppress(Exception):  # keep the launch time the launcher wrote
        doc.launched_at = next(
            w.launched_at
            for w in status.pool_workers(pool, present=True)
            if w.worker_id == worker_id
        )
    run = PoolWorkerRun(
        settings, store, status, PoolMember(status, doc), pool, progress_index(worker_id),
        attempt, settings.warm_minutes * 60, starting_grace(settings),
        LeaseHolder(process=me, task_index=index, attempt=attempt), current=first_job,
    )  # fmt: skip
    gpu = pool.split("|")[1] != "none"
    with gpu_required_here(gpu), run.member:
        run.member.set("idle")
        event(log, "pool worker started", pool=pool, warm_seconds=run.warm_seconds)
        try:
            return serve_pool(run)
        finally:
            run.forget({})


def serve_pool(run: PoolWorkerRun) -> int:
    """The loop: the fairest job's next chunk, or orphaned stitches, or a wait; the exit code."""
    idle_since: float | None = None
    up_since = time.time()
    troubles = 0
    while time.time() - up_since < POOL_WORKER_SECONDS:
        try:
            loads, records = job_loads(run.status, run.pool, run.holder, run.starting_grace)
        except Exception as exc:  # the store unreachable for a moment: look again shortly
            troubles += 1
            event(log, "pool look failed", logging.WARNING, reason=str(exc), tries=troubles)
            if troubles >= LOOK_TRIES:
                raise  # exit 1: Batch retries the task, the local launcher frees its chunk
            time.sleep(IDLE_POLL_SECONDS * troubles)
            continue
        troubles = 0
        run.forget(records)
        pick = pick_job(loads, run.current)
        if pick is not None:
            idle_since = None
            code = take_one(run, records[pick], loads)
            if code:
                return code
            continue
        code = stitch_orphans(run, records)
        if code:
            return code
        now = time.time()
        idle_since = idle_since or now
        if now - idle_since >= run.warm_seconds:
            run.member.set("exiting", item=None, chunk=None)
            # One last look after saying so: a trigger that counted this worker free before
            # the write above launched nothing for its job, and that job is in the store by
            # now (it is recorded before the count).
            again, _ = job_loads(run.status, run.pool, run.holder, run.starting_grace)
            if pick_job(again) is None:
                event(log, "pool worker exits", idle_seconds=round(now - idle_since, 1))
                return 0
            continue
        if run.member.doc.state != "idle":
            run.member.set("idle", item=None, chunk=None)
        time.sleep(IDLE_POLL_SECONDS)
    event(log, "pool worker retires", hours=POOL_WORKER_SECONDS / 3600)
    return 0


def take_one(run: PoolWorkerRun, record: JobRecord, loads: list[JobLoad]) -> int:
    """One chunk of `record`'s job, claimed and processed (and its item stitched if it was the
    last); 0, or the worker's exit code."""
    worker, setup = run.job(record)
    run.current = record.job_id
    claim = worker.picker.next(wait=False)
    if claim is None:  # another worker was quicker: weigh the jobs again
        time.sleep(0.2)
        return 0
    left = next((load.claimable for load in loads if load.job_id == record.job_id), 0)
    # The job's last free chunk: this worker will be free soon, and a new job may count on it.
    state = "finishing" if left <= 1 else "busy"
    run.member.set(
        state, job_id=record.job_id, item=claim.item, chunk=claim.chunk, owner=worker.owner
    )
    logs.bind(job_id=record.job_id)
    code = do_claim(worker, setup, claim)
    # Free again: a trigger counting the pool from now on may count on this worker.
    run.member.set("idle", item=None, chunk=None)
    return code


def stitch_orphans(run: PoolWorkerRun, records: dict[str, JobRecord]) -> int:
    """Items whose chunks are all done and whom nobody stitches (their stitcher died)."""
    for job_id, record in records.items():
        if run.status.count_done(job_id) < record.chunks_total:
            continue
        for item in unstitched_items(run.status, job_id, run.holder):
            worker, _ = run.job(record)
            run.member.set("busy", job_id=job_id, item=None, chunk=None)
            logs.bind(job_id=job_id)
            stitch_item_of(worker, item)  # a pooled worker's stitch fails its job, not it
    return 0


def main() -> int:
    """`python -m batch_jobs.pool`: a capacity task (Cloud Batch, or `dropbatch serve`'s)."""
    from batch_jobs.scratch import task_scratch

    logs.setup()
    settings = Settings.from_env()
    pool, engine_job = os.environ.get(POOL_ENV, ""), os.environ.get(ENGINE_ENV, "")
    job_id = os.environ.get("DROPBATCH_JOB_ID", "")
    try:
        index = int(os.environ["BATCH_TASK_INDEX"])
    except (KeyError, ValueError):
        index = -1
    if not pool or not engine_job or index < 0:
        missing = [n for n, v in ((POOL_ENV, pool), (ENGINE_ENV, engine_job)) if not v]
        reason = f"{', '.join(missing) or 'BATCH_TASK_INDEX'} is not set"
        event(log, "pool worker failed", logging.ERROR, reason=reason)
        return 2
    attempt = int(os.environ.get("BATCH_TASK_RETRY_ATTEMPT", "0") or 0)
    with task_scratch():
        return run_pool_worker(settings, job_id, index, attempt, pool, engine_job)


if __name__ == "__main__":
    sys.exit(main())
