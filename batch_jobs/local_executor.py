"""Run a job's tasks on this machine the way Cloud Batch would.

Each task is a separate process (`python -m batch_jobs.task`) with `BATCH_TASK_INDEX` and
`BATCH_TASK_COUNT` set, `parallelism` at a time; a task that exits non-zero (or is killed) is
retried up to `max_retries` times; job state changes go to the same reconcile handler that
Cloud Batch's Pub/Sub notifications reach. This is for one machine and for tests: it is not,
and must not grow into, a scheduler.
"""

from __future__ import annotations

import logging
import os
import queue
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from dropbatch.config import Settings
from dropbatch.logs import event, relay
from dropbatch.status.model import JobRecord

log = logging.getLogger("dropbatch.executor")

Notify = Callable[[str, str, str], None]  # (job_name, new_state, reason)


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
    ) -> None:
        self.job_name = job_name
        self.task_count = task_count
        self.parallelism = max(1, min(parallelism, task_count))
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
        for attempt in range(self.max_retries + 1):
            code, tail = self._attempt(index, attempt)
            if code == 0:
                return TaskOutcome(index, attempt + 1, 0, tail)
            if code == MISCONFIGURED or (
                self.retry_exit_codes is not None and code not in self.retry_exit_codes
            ):
                return TaskOutcome(index, attempt + 1, code, tail)
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
        for i in range(self.task_count):
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
            reason = (
                f"{len(failed)} of {self.task_count} task(s) failed; task {first.index} exited "
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


class LocalLauncher:
    """Launches each job once, on a background thread of this process."""

    _shared: LocalLauncher | None = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        self._jobs: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    @classmethod
    def shared(cls) -> LocalLauncher:
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def launch(self, record: JobRecord, settings: Settings) -> str:
        from batch_jobs.reconcile import BatchNotification, apply_notification
        from dropbatch.status import open_status
        from dropbatch.storage import open_store

        name = f"local/{record.job_id}"
        with self._lock:
            if record.job_id in self._jobs:
                return name  # the same job id again: already running (Batch: ALREADY_EXISTS)
            plan = record.plan
            assert plan is not None
            store, status = open_store(settings), open_status(settings)

            def notify(job_name: str, state: str, reason: str) -> None:
                apply_notification(store, status, BatchNotification(job_name, state, reason))

            executor = LocalExecutor(
                job_name=name,
                task_count=len(plan.tasks()),
                parallelism=min(
                    len(plan.tasks()), plan.max_parallel_tasks, settings.local_workers or 10**6
                ),
                max_retries=plan.max_retries,
                env={**settings.to_env(), "DROPBATCH_JOB_ID": record.job_id},
                command=task_command(settings),
                notify=notify,
            )
            thread = threading.Thread(target=executor.run, name=f"job-{record.job_id}")
            self._jobs[record.job_id] = thread
            thread.start()
        return name

    def failure_reason(self, job_name: str) -> str:
        return ""  # the executor's own notifications already carry the reason

    def wait(self, job_id: str, timeout: float | None = None) -> bool:
        thread = self._jobs.get(job_id)
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def wait_all(self, timeout: float | None = None) -> None:
        for thread in list(self._jobs.values()):
            thread.join(timeout)
