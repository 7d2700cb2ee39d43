"""Is a task, a stitcher or a local executor still alive? The rules a restarted `dropbatch
serve` and a waiting stitcher go by (docs/decisions/0021-liveness-recorded-not-guessed.md).

A process is recorded as a `ProcessOwner` (host, pid, start time). On the same host that is
exact: the process is alive while a process with that pid *and that start time* exists (a pid
reused by a later process does not count). From another host it cannot be checked; there the
task's heartbeat (its progress record, rewritten every `HEARTBEAT_SECONDS`) decides.
"""

from __future__ import annotations

import os
import socket
import time
from functools import cache
from pathlib import Path

from core.status.model import JobRecord, ProcessOwner, TaskProgress

HEARTBEAT_SECONDS = 5.0  # a running task rewrites its progress at least this often
HEARTBEAT_TIMEOUT = 30.0  # no heartbeat for this long: the task is taken for dead


@cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_started(pid: int) -> str | None:
    """Boot id and start time (clock ticks) of a running process; None if there is none.

    "" where /proc is not there (not Linux): then only the pid is known."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent
        return None
    return f"{_boot_id()}:{fields[19]}"


def current_owner() -> ProcessOwner:
    pid = os.getpid()
    return ProcessOwner(host=socket.gethostname(), pid=pid, started=process_started(pid) or "")


def owner_alive(owner: ProcessOwner) -> bool | None:
    """True/False on this host; None for a process on another host (not checkable here)."""
    if owner.host != socket.gethostname():
        return None
    started = process_started(owner.pid)
    if started == "":  # no /proc: the pid alone
        try:
            os.kill(owner.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return started is not None and (not owner.started or started == owner.started)


def task_alive(progress: TaskProgress, now: float | None = None) -> bool:
    """A task counts as running while its record says RUNNING and its process is alive (this
    host) or its heartbeat is recent (another host)."""
    if progress.state != "RUNNING":
        return False
    alive = owner_alive(progress.owner) if progress.owner else None
    if alive is not None:
        return alive
    return (now or time.time()) - progress.updated_at < HEARTBEAT_TIMEOUT


def executor_alive(record: JobRecord, tasks: list[TaskProgress], now: float | None = None) -> bool:
    """Is someone still running the job's tasks? On this host its executor process decides
    (tasks it left running are waited for by whoever resumes the job); an executor on another
    host, or none recorded, counts as alive while any task's heartbeat or the record is fresh.
    """
    if record.executor is not None:
        alive = owner_alive(record.executor)
        if alive is not None:
            return alive
    now = now or time.time()
    return any(task_alive(p, now) for p in tasks) or now - record.updated_at < HEARTBEAT_TIMEOUT
