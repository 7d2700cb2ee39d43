"""Run a job's tasks on this machine the way Cloud Batch would.

Each task is a worker, a separate process (`python -m batch_jobs.task`) with
`BATCH_TASK_INDEX` and `BATCH_TASK_COUNT` set, `parallelism` at a time, that claims chunks
until none is left; a task that exits non-zero (or is killed) is
retried up to `max_retries` times; job state changes go to the same reconcile handler that
Cloud Batch's Pub/Sub notifications reach. This is for one machine and for tests: it is not,
and must not grow into, a scheduler.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from batch_jobs.launcher import Capacity
from batch_jobs.leases import release_task_leases
from batch_jobs.liveness import current_owner, executor_alive, owner_alive, task_alive
from batch_jobs.pool_rules import ENGINE_ENV, POOL_ENV
from batch_jobs.scratch import sweep_dead
from batch_jobs.worker_memory import WorkerChoice, choose_local_workers
from batch_jobs.workspace import work_area
from core.config import Settings
from core.logs import event, relay
from core.status.base import StatusStore
from core.status.model import (
    ENGINE_STATES,
    EngineEvent,
    EngineWait,
    JobRecord,
    JobState,
    ProcessOwner,
    WorkersChosen,
)
from core.storage.base import NotFound, ObjectStore

log = logging.getLogger("dropbatch.executor")
RESUME_SCAN = 1000  # unfinished jobs looked at when serve starts

Notify = Callable[[str, str, str], None]  # (job_name, new_state, reason)
AttemptEnded = Callable[[int, int, int], None]  # (task index, attempt, exit code)


def task_command(settings: Settings) -> list[str]:
    if settings.task_command:
        return shlex.split(settings.task_command)
    return [sys.executable, "-m", "batch_jobs.task"]


@dataclass
class TaskOutcome:
    index: int
    attempts: int
    exit_code: int
    tail: str


# batch_jobs.task exits 2 when the chain cannot be set up (a model of the wrong kind, a bad
# side image): every retry would fail the same way, so none is made (Batch never lists 2).
MISCONFIGURED = 2


class LocalExecutor:
    def __init__(
        self,
        job_name: str,
        task_count: int,
        parallelism: int,
        max_retries: int,
        env: dict[str, str],
        command: list[str],
        notify: Notify,
        retry_exit_codes: frozenset[int] | None = None,
        base_env: dict[str, str] | None = None,
        task_indices: list[int] | None = None,
        first_attempts: dict[int, int] | None = None,
        attempt_ended: AttemptEnded | None = None,
        before_task: Callable[[int], None] | None = None,
    ) -> None:
        self.job_name = job_name
        self.task_count = task_count
        # Which tasks to run (None: all); a resumed job runs only its unfinished chunks.
        self.task_indices = list(range(task_count)) if task_indices is None else task_indices
        # A resumed task continues its attempt count, so it supersedes its dead predecessor.
        self.first_attempts = first_attempts or {}
        self.attempt_ended = attempt_ended
        self.before_task = before_task
        self.parallelism = max(1, min(parallelism, len(self.task_indices) or 1))
        self.max_retries = max_retries
        self.env = env
        self.command = command
        self.notify = notify
        # None: retry any failure but MISCONFIGURED (the local default); else only these exit
        # codes, the way a Cloud Batch RETRY_TASK lifecycle policy does.
        self.retry_exit_codes = retry_exit_codes
        self.outcomes: list[TaskOutcome] = []
        # The environment tasks start from (None: this process's); a container's is its own.
        self.base_env = base_env

    def _attempt(self, index: int, attempt: int) -> tuple[int, str]:
        env = {
            **(os.environ if self.base_env is None else self.base_env),
            **self.env,
            "BATCH_TASK_INDEX": str(index),
            "BATCH_TASK_COUNT": str(self.task_count),
            "BATCH_TASK_RETRY_ATTEMPT": str(attempt),
            "BATCH_JOB_ID": self.job_name.rsplit("/", 1)[-1],
        }
        proc = subprocess.Popen(
            self.command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        tail: list[str] = []
        assert proc.stderr is not None
        for line in proc.stderr:  # task logs (JSON lines) pass through to ours
            relay(line)
            tail = [*tail[-19:], line.rstrip()]
        return proc.wait(), "\n".join(tail)

    def _run_task(self, index: int) -> TaskOutcome:
        code, tail = 0, ""
        if self.before_task is not None:
            self.before_task(index)
        first = self.first_attempts.get(index, 0)
        for attempt in range(first, first + self.max_retries + 1):
            code, tail = self._attempt(index, attempt)
            if self.attempt_ended is not None:
                self.attempt_ended(index, attempt, code)
            if code == 0:
                return TaskOutcome(index, attempt - first + 1, 0, tail)
            if code == MISCONFIGURED or (
                self.retry_exit_codes is not None and code not in self.retry_exit_codes
            ):
                return TaskOutcome(index, attempt - first + 1, code, tail)
            event(
                log,
                "task attempt failed",
                logging.WARNING,
                task_index=index,
                attempt=attempt,
                exit_code=code,
            )
        return TaskOutcome(index, self.max_retries + 1, code, tail)

    def run(self) -> str:
        self.notify(self.job_name, "SCHEDULED", "")
        self.notify(self.job_name, "RUNNING", "")
        pending: queue.Queue[int] = queue.Queue()
        for i in self.task_indices:
            pending.put(i)
        outcomes = self.outcomes
        lock = threading.Lock()

        def worker() -> None:
            while True:
                try:
                    index = pending.get_nowait()
                except queue.Empty:
                    return
                outcome = self._run_task(index)
                with lock:
                    outcomes.append(outcome)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(self.parallelism)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        failed = sorted((o for o in outcomes if o.exit_code != 0), key=lambda o: o.index)
        if failed:
            first = failed[0]
            ran = len(self.task_indices)
            reason = (
                f"{len(failed)} of {ran} task(s) failed; task {first.index} exited "
                f"{first.exit_code} after {first.attempts} attempt(s): "
                f"{_last_message(first.tail)}"
            )
            self.notify(self.job_name, "FAILED", reason)
            return "FAILED"
        self.notify(self.job_name, "SUCCEEDED", "")
        return "SUCCEEDED"


def _last_message(tail: str) -> str:
    import json

    for line in reversed(tail.splitlines()):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("severity") in ("ERROR", "CRITICAL"):
            return str(entry.get("reason") or entry.get("message"))
    lines = tail.strip().splitlines()
    return lines[-1] if lines else "no output"


def worker_count(record: JobRecord, settings: Settings) -> WorkerChoice:
    """The workers a (re)started executor runs: the job's parallelism, at most `local_workers`
    or, with `auto`, what this machine's cores and memory hold (batch_jobs/worker_memory.py).
    A resumed job runs as many: they claim what is left (chunks not done, items not stitched);
    none if every item is stitched."""
    assert record.plan is not None
    if len(record.items_stitched) == len(record.plan.items):
        # every output is there (the stitcher died before saying SUCCEEDED)
        return WorkerChoice(0, "every item is stitched already")
    return choose_local_workers(record.plan, settings)


def remove_leftovers(store: ObjectStore, settings: Settings, record: JobRecord) -> None:
    """Delete the parts and preview tiles of a job that ended without stitching them (FAILED,
    CANCELLED): nothing reads them any more. On Cloud Storage the work bucket's lifecycle rule
    does this (infra/storage.tf); on this machine they would stay for good."""
    work = work_area(settings, record.bucket)
    leftovers = store.list(work.bucket, work.job_folder(record.job_id))
    for leftover in leftovers:
        with contextlib.suppress(NotFound):  # another process removed it meanwhile
            store.delete(work.bucket, leftover.name)
    if leftovers:
        event(log, "leftover parts removed", job_id=record.job_id, objects=len(leftovers))


def claim_executor(
    status: StatusStore, job_id: str, me: ProcessOwner, replacing: ProcessOwner | None = None
) -> bool:
    """Record this process as the job's executor unless another live one is recorded
    (`replacing`: one the caller found dead by its heartbeats, on another host)."""

    def mutate(record: JobRecord) -> bool:
        current = record.executor
        if current not in (None, me, replacing) and owner_alive(current) is not False:
            return False
        record.executor = me
        return True

    _, claimed = status.transact(job_id, mutate)
    return claimed


def executor_thread_name(job_id: str) -> str:
    """The name of the thread that runs a local job's tasks (what a waiting caller looks for)."""
    return f"job-{job_id}"


def _job_executor(
    record: JobRecord,
    fresh: JobRecord,
    settings: Settings,
    store: ObjectStore,
    status: StatusStore,
    workers: int,
) -> LocalExecutor:
    """The executor for the job's `workers` tasks: retries, notifications and leases as Cloud
    Batch and our reconciler handle them."""
    from batch_jobs.reconcile import BatchNotification, apply_notification

    assert fresh.plan is not None
    name = f"local/{record.job_id}"
    indices = list(range(workers))
    # A task that ran before (a resumed job) continues its attempt count.
    first_attempts = {
        p.task_index: p.attempt + 1
        for p in status.progress(record.job_id)
        if p.task_index in indices
    }

    def notify(job_name: str, state: str, reason: str) -> None:
        apply_notification(store, status, BatchNotification(job_name, state, reason))

    def attempt_ended(index: int, attempt: int, code: int) -> None:
        if code != 0:  # its process is gone: whatever it held is free now
            release_task_leases(status, record.job_id, index, attempt)
            sweep_dead()

    executor = LocalExecutor(
        job_name=name,
        task_count=workers,
        parallelism=workers,
        max_retries=fresh.plan.max_retries,
        env={**settings.to_env(), "DROPBATCH_JOB_ID": record.job_id},
        command=task_command(settings),
        notify=notify,
        task_indices=indices,
        first_attempts=first_attempts,
        attempt_ended=attempt_ended,
        before_task=lambda index: await_orphan(status, record.job_id, index),
    )
    return executor


class LocalLauncher:
    """Launches each job once, on a background thread of this process.

    One per intake, handed to it by whoever builds it (`dropbatch run`, `serve`, the trigger's
    own `open_launcher`): two intakes in one process never share jobs or settings.
    """

    def __init__(self, pools: bool = False) -> None:
        self._jobs: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        # `dropbatch serve` keeps a warm pool (warm_minutes): its workers are processes of
        # this one that outlive their first job (batch_jobs/pool.py); `dropbatch run` does not.
        self.pools = pools
        self._pool: list[subprocess.Popen] = []
        self._pool_threads: list[threading.Thread] = []
        self._settings: Settings | None = None  # the settings its pool was launched with

    def launch_capacity(self, record: JobRecord, settings: Settings, capacity: Capacity) -> str:
        """`capacity.workers` pool worker processes, each looking at `record`'s job first."""
        from batch_jobs.pool_capacity import release_workers
        from core.status import open_status

        status = open_status(settings)
        self._settings = settings
        # This process runs the job's (pool) workers: what `dropbatch status` and a following
        # `run` check, as for a job's own executor.
        me = current_owner()
        status.transact(record.job_id, lambda r: setattr(r, "executor", me))
        for index in range(capacity.workers):
            env = {
                **os.environ,
                **settings.to_env(),
                "DROPBATCH_JOB_ID": record.job_id,
                POOL_ENV: capacity.pool,
                ENGINE_ENV: capacity.name,
                "BATCH_TASK_INDEX": str(index),
                "BATCH_TASK_COUNT": str(capacity.workers),
                "BATCH_TASK_RETRY_ATTEMPT": "0",
            }
            proc = subprocess.Popen(
                [sys.executable, "-m", "batch_jobs.pool"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            worker_id = f"{capacity.name}-{index}"

            def follow(proc: subprocess.Popen = proc, worker_id: str = worker_id) -> None:
                assert proc.stderr is not None
                for line in proc.stderr:  # its logs (JSON lines) pass through to ours
                    relay(line)
                code = proc.wait()
                if code != 0:  # whatever it held is free now, and it is not counted any more
                    freed = release_workers(status, capacity.name, worker_id)
                    event(log, "pool worker ended", logging.WARNING, worker=worker_id,
                          exit_code=code, chunks_released=freed)  # fmt: skip
                sweep_dead()

            thread = threading.Thread(target=follow, name=f"pool-{worker_id}", daemon=True)
            thread.start()
            with self._lock:
                self._pool.append(proc)
                self._pool_threads.append(thread)
        return f"local-pool/{capacity.name}"

    def stop_pool(self, timeout: float = 30.0) -> None:
        """Stop this process's pool workers (serve is stopping): SIGTERM, which each turns
        into a clean exit; its held chunk is taken over when its lease runs out."""
        with self._lock:
            procs, threads = list(self._pool), list(self._pool_threads)
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for thread in threads:
            thread.join(timeout)

    def launch(self, record: JobRecord, settings: Settings) -> str:
        self.start(record, settings)
        return f"local/{record.job_id}"

    def start(
        self, record: JobRecord, settings: Settings, replacing: ProcessOwner | None = None
    ) -> bool:
        """Run the job's unfinished tasks on this process; False if it runs already (here, or
        in another live process), True if this call started it."""
        from core.status import open_status
        from core.storage import open_store

        with self._lock:
            if record.job_id in self._jobs:
                return False  # the same job id again: already running (Batch: ALREADY_EXISTS)
            store, status = open_store(settings), open_status(settings)
            if not claim_executor(status, record.job_id, current_owner(), replacing):
                # Another live process (a `dropbatch run`, another serve) runs its tasks.
                event(log, "job runs elsewhere", job_id=record.job_id)
                return False
            fresh = status.get(record.job_id)
            assert fresh is not None and fresh.plan is not None
            choice = worker_count(fresh, settings)
            workers = choice.count
            chosen = WorkersChosen(count=choice.count, reason=choice.reason)
            status.transact(record.job_id, lambda r: setattr(r, "workers", chosen))
            event(log, "local workers", job_id=record.job_id, workers=workers, why=choice.reason)
            executor = _job_executor(record, fresh, settings, store, status, workers)

            def run() -> None:
                executor.run()
                sweep_dead()
                ended = status.get(record.job_id)
                if ended is not None and ended.state in (JobState.FAILED, JobState.CANCELLED):
                    remove_leftovers(store, settings, ended)

            thread = threading.Thread(target=run, name=executor_thread_name(record.job_id))
            self._jobs[record.job_id] = thread
            thread.start()
        return True

    def failure_reason(self, job_name: str) -> str:
        return ""  # the executor's own notifications already carry the reason

    def look_up(self, record: JobRecord) -> EngineWait | None:
        """A local executor moves its job to RUNNING as it starts, so only a QUEUED job is
        unstarted: launched by a process that stopped (or hangs) before starting its tasks."""
        thread = self._jobs.get(record.job_id)
        if record.state != JobState.QUEUED or (thread is not None and thread.is_alive()):
            return None
        if record.pool:  # the warm pool's workers take it; with none alive the pool sweep
            return None  # launches them again (batch_jobs/pool_capacity.sweep_pool)
        owner = record.executor
        if owner is not None and owner_alive(owner) is not False:
            said = f"its executor (pid {owner.pid} on {owner.host}) has not started its tasks"
        else:
            said = (
                "no executor runs its tasks: the process that launched it stopped before "
                "starting them (`dropbatch serve` resumes such jobs when it starts)"
            )
        return EngineWait(state="QUEUED", events=[EngineEvent(type="LOCAL", description=said)])

    def delete(self, record: JobRecord) -> None:
        """Nothing here runs it (look_up said so); a task an executor elsewhere starts later
        reads the record, FAILED by then, and exits (batch_jobs/task.py)."""

    def wait(self, job_id: str, timeout: float | None = None) -> bool:
        thread = self._jobs.get(job_id)
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def wait_all(self, timeout: float | None = None) -> None:
        for thread in list(self._jobs.values()):
            thread.join(timeout)
        if self.pools:
            self._wait_pooled(timeout)

    def _wait_pooled(self, timeout: float | None) -> None:
        """Until every job of this process's pool has ended (or its workers are all gone),
        then the pool stops: `serve --once` leaves nothing running."""
        from core.status import open_status

        settings = self._settings
        if settings is None:
            return
        status = open_status(settings)
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            with self._lock:
                alive = any(p.poll() is None for p in self._pool)
            open_jobs = [r for r in status.by_state(list(ENGINE_STATES)) if r.pool]
            if not alive or not open_jobs:
                break
            time.sleep(0.5)
        self.stop_pool()


ORPHAN_CHECK_SECONDS = 0.5


def await_orphan(status: StatusStore, job_id: str, index: int) -> None:
    """A task of a dead executor may still run (its parent died alone): let it finish rather
    than run the chunk twice at once. Its chunk is then done, or it died and we run it."""
    while any(p.task_index == index and task_alive(p) for p in status.progress(job_id)):
        time.sleep(ORPHAN_CHECK_SECONDS)


def resume_stranded(launcher: object, settings: Settings) -> list[str]:
    """Relaunch the local jobs whose executor died (a killed `dropbatch serve` or `run`): from
    their done chunks, on this process. Called when `dropbatch serve` starts."""
    from core.status import open_status

    if not isinstance(launcher, LocalLauncher):
        return []  # Cloud Batch runs its jobs whatever happens to this process
    sweep_dead()  # what tasks killed with the previous serve left in the temporary folder
    status = open_status(settings)
    resumed = []
    for record in status.recent(
        RESUME_SCAN, states=[JobState.QUEUED, JobState.RUNNING, JobState.STITCHING]
    ):
        if record.plan is None or not (record.batch_job or "").startswith("local/"):
            continue
        if executor_alive(record, status.progress(record.job_id)):
            continue
        if launcher.start(record, settings, replacing=record.executor):
            event(
                log,
                "job resumed",
                job_id=record.job_id,
                chunks_done=status.count_done(record.job_id),
                chunks_total=record.chunks_total,
            )
            resumed.append(record.job_id)
    return resumed
