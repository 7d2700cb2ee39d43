"""The job record: what the status store holds and what `.status.json` mirrors.

One `JobRecord` per job (a Firestore document, or a SQLite row holding its JSON); per-task
progress in `TaskProgress`, one per task (a worker), because progress is written often and the
job record is contended by the transactions that count finished chunks; which worker holds
which chunk in `ChunkClaim`, one per chunk, for the same reason.
"""

from __future__ import annotations

import time
from enum import StrEnum

from pydantic import BaseModel, Field

from dropbatch.domain import JobError, Plan


class JobState(StrEnum):
    RECEIVED = "RECEIVED"
    INVALID = "INVALID"
    WAITING_FOR_INPUTS = "WAITING_FOR_INPUTS"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    STITCHING = "STITCHING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL_STATES = frozenset(
    {JobState.INVALID, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
)
# States from which an incoming event may still (re)evaluate the manifest and launch.
LAUNCHABLE_STATES = frozenset({JobState.RECEIVED, JobState.WAITING_FOR_INPUTS})


class StateChange(BaseModel):
    state: JobState
    at: float


class ProcessOwner(BaseModel):
    """A process, named so that another process can tell whether it is still running: its
    host, its pid, and when it started (so a pid reused by a later process is not it)."""

    host: str
    pid: int
    started: str = ""  # boot id and start time in clock ticks (Linux); "" where unknown


class LeaseHolder(BaseModel):
    """Who holds a stitch lease or a chunk claim, so it can be known dead before the lease
    runs out."""

    process: ProcessOwner | None = None
    task_index: int | None = None  # BATCH_TASK_INDEX
    attempt: int | None = None  # BATCH_TASK_RETRY_ATTEMPT


class StitchLease(BaseModel):
    owner: str
    expires_at: float
    holder: LeaseHolder | None = None


class ChunkClaim(BaseModel):
    """Which worker processes one chunk: a lease like the stitch lease, kept on a document of
    its own (one per chunk) so claiming and renewing never contend on the job record."""

    item: int
    chunk: int
    owner: str = ""  # the claiming worker's id; "" while never claimed
    expires_at: float = 0.0  # renewed by the holder's heartbeat while it works
    holder: LeaseHolder | None = None
    done: bool = False
    grants: int = 0  # how many times it was claimed: 1, plus one per takeover


class WorkersChosen(BaseModel):
    """How many workers the local executor started for a job, and why that many (the
    machine's cores and memory, or a number asked for; batch_jobs/worker_memory.py)."""

    count: int
    reason: str


class JobRecord(BaseModel):
    job_id: str
    bucket: str
    manifest: str  # object name
    manifest_generation: int
    manifest_uri: str
    state: JobState = JobState.RECEIVED
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    history: list[StateChange] = Field(default_factory=list)
    error: JobError | None = None
    errors: list[JobError] = Field(default_factory=list)  # every problem, when there are several
    waiting_for: list[JobError] = Field(default_factory=list)
    plan: Plan | None = None
    chunks_total: int = 0
    # item index (as str, JSON keys) → chunk indices done; a set so retries never double count.
    chunks_done: dict[str, list[int]] = Field(default_factory=dict)
    stitch_leases: dict[str, StitchLease] = Field(default_factory=dict)
    items_stitched: list[int] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    batch_job: str | None = None
    # The local executor running the job's tasks (`dropbatch serve` or `dropbatch run`); a
    # restarted serve resumes the job when this process is gone (docs/DESIGN-DECISIONS.md).
    executor: ProcessOwner | None = None
    stitch_claims: list[StitchLease] = Field(default_factory=list)  # every lease ever granted
    workers: WorkersChosen | None = None  # the local executor's last choice
    revision: int = 0

    @property
    def folder(self) -> str:
        head, _, _ = self.manifest.rpartition("/")
        return f"{head}/" if head else ""

    @property
    def done_count(self) -> int:
        return sum(len(v) for v in self.chunks_done.values())

    def set_state(self, state: JobState, now: float | None = None) -> None:
        if state == self.state and self.history:
            return
        at = now or time.time()
        self.state = state
        self.history.append(StateChange(state=state, at=at))

    def summary(self) -> dict:
        """What `<manifest-stem>.status.json` mirrors for people who only have gsutil."""
        return {
            "job_id": self.job_id,
            "state": self.state.value,
            "manifest": self.manifest_uri,
            "manifest_generation": self.manifest_generation,
            "outputs": self.outputs,
            "error": self.error.model_dump(exclude_none=True) if self.error else None,
            "errors": [e.model_dump(exclude_none=True) for e in self.errors],
            "waiting_for": [w.model_dump(exclude_none=True) for w in self.waiting_for],
            "chunks": {"done": self.done_count, "total": self.chunks_total},
            **({"workers": self.workers.model_dump()} if self.workers else {}),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "history": [{"state": h.state.value, "at": h.at} for h in self.history],
        }


class TaskProgress(BaseModel):
    """One worker (a Batch task): the chunk it works on now, and how many it has finished."""

    job_id: str
    task_index: int
    item: int  # the chunk it works on (or worked on last)
    chunk: int
    state: str = "RUNNING"  # RUNNING | SUCCEEDED | FAILED
    attempt: int = 0
    frames_done: int = 0
    frames_total: int = 0
    fps: float = 0.0
    message: str = ""
    code: str = ""  # a FAILED task's error code when its cause has one (MODEL_INCOMPATIBLE, …)
    uri: str = ""  # a FAILED task's object at fault (INPUT_GONE: the input's URI)
    # The heartbeat: a running task rewrites its progress at least every few seconds.
    updated_at: float = Field(default_factory=time.time)
    owner: ProcessOwner | None = None  # the task's process
    chunks_done: int = 0  # chunks this attempt of the worker finished


class CheckResult(BaseModel):
    """One line of `dropbatch doctor`'s checklist: what was checked, whether it holds, what
    was seen, and what to do when it does not."""

    name: str
    ok: bool
    detail: str = ""
    fix: str = ""


class CheckReport(BaseModel):
    """What `python -m batch_jobs.selfcheck` found on a task VM, keyed by the check's id (the
    id of the one-task job `dropbatch doctor` launched). `finished` is False while the doctor's
    placeholder waits for the VM's report."""

    check_id: str
    host: str = ""
    finished: bool = False
    results: list[CheckResult] = Field(default_factory=list)
    updated_at: float = Field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.finished and all(r.ok for r in self.results)
