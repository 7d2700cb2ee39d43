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

from core.domain import JobError, Plan


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
# Handed to the engine and not ended: what workers (a warm pool's included) may still work on.
ENGINE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING, JobState.STITCHING})


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
    its own (one per chunk) so claiming, renewing and finishing never contend on the job
    record. `done` is the chunk's entry in the job's done-set: set once, never unset."""

    item: int
    chunk: int
    owner: str = ""  # the claiming worker's id; "" while never claimed
    expires_at: float = 0.0  # renewed by the holder's heartbeat while it works
    holder: LeaseHolder | None = None
    done: bool = False
    grants: int = 0  # how many times it was claimed: 1, plus one per takeover
    # Warm pool (batch_jobs/pool.py): how many times processing it failed, and the last
    # reason; past the job's max_retries the job fails, whichever worker ran it.
    failures: int = 0
    last_failure: str = ""
    seconds: float = 0.0  # worker seconds the finished chunk took (its job's VM-seconds)


class EngineEvent(BaseModel):
    """One of the engine's status events for a job (Batch: `status.status_events`)."""

    type: str = ""
    description: str
    at: float = 0.0  # the engine's event time (0: it gave none)


class EngineWait(BaseModel):
    """What the engine said of a job it has not started, at the sweep's latest look: its
    state (Batch: QUEUED or SCHEDULED) and its latest status events, which carry its reason
    (quota exceeded, no resources in the zones, an image that cannot be pulled)."""

    state: str
    events: list[EngineEvent] = Field(default_factory=list)  # oldest first, the latest few
    checked_at: float = Field(default_factory=time.time)
    # Set once the job waited past queued_timeout_minutes and its engine job is deleted: the
    # deletion's own notification then ends it FAILED NO_CAPACITY, not CANCELLED.
    gave_up_after: float | None = None  # seconds waited

    @property
    def reason(self) -> str:
        return next((e.description for e in reversed(self.events) if e.description), "")


class MachineFacts(BaseModel):
    """One machine a job's workers ran on (a VM; locally this computer), as the first worker
    there found it: enough to tell a GPU VM that ran without its GPU, or a driver older than
    the image's CUDA, from the job record alone."""

    machine: str  # the kernel's boot id: one per VM, shared by every container on it
    host: str = ""
    gpus: list[str] = Field(default_factory=list)  # models nvidia-smi lists; [] none visible
    driver: str = ""  # NVIDIA driver version
    cuda: str = ""  # the newest CUDA the driver runs (nvidia-smi)
    onnxruntime: str = ""  # its version; "" when not installed
    # Providers active on a probe session, the one it runs on first (CUDA when it works).
    providers: list[str] = Field(default_factory=list)
    nvenc: bool = False  # ffmpeg encodes with h264_nvenc here
    nvdec: bool = False  # ffmpeg decodes with -hwaccel cuda here
    recorded_at: float = Field(default_factory=time.time)

    def line(self) -> str:
        """One line for `dropbatch status`."""
        gpu = ", ".join(self.gpus) or "no GPU"
        if self.gpus:
            gpu += f" (driver {self.driver or '?'}, CUDA {self.cuda or '?'})"
        ort = (
            f"onnxruntime {self.onnxruntime} on {', '.join(self.providers) or '?'}"
            if self.onnxruntime
            else "no onnxruntime"
        )
        video = f"NVENC {'yes' if self.nvenc else 'no'}, NVDEC {'yes' if self.nvdec else 'no'}"
        return f"{self.host or self.machine}: {gpu}; {ort}; {video}"


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
    # Which chunks are done is on their claims (`ChunkClaim.done`, `StatusStore.done_counts`),
    # not here: a crowd of workers finishing chunks would all write this one document.
    stitch_leases: dict[str, StitchLease] = Field(default_factory=dict)
    items_stitched: list[int] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    batch_job: str | None = None
    # When a trigger started probing this manifest's inputs (wall clock). A record still
    # launchable long after it (past trigger_deadline_seconds) was left by a function stopped
    # mid-planning: a redelivery ends it PLANNING_TIMEOUT instead of planning it again.
    planning_since: float | None = None
    # The engine's account of a job it has not started yet (the sweep looks it up).
    engine_wait: EngineWait | None = None
    # The local executor running the job's tasks (`dropbatch serve` or `dropbatch run`); a
    # restarted serve resumes the job when this process is gone
    # (docs/decisions/0022-serve-resumes-dead-executors-jobs.md).
    executor: ProcessOwner | None = None
    stitch_claims: list[StitchLease] = Field(default_factory=list)  # every lease ever granted
    # The machines its workers ran on, each recorded once by its first worker.
    machines: list[MachineFacts] = Field(default_factory=list)
    workers: WorkersChosen | None = None  # the local executor's last choice
    # The warm pool this job runs on ('' : its own workers, launched for it alone) and the
    # capacity launched when it arrived (0: warm workers took it; batch_jobs/pool.py).
    pool: str = ""
    capacity_launched: int = 0
    capacity_jobs: list[str] = Field(default_factory=list)  # the engine's names, in order
    # The trigger counted the pool for it and launched what it lacked (possibly nothing): a
    # redelivered event does not count (and launch) again.
    pool_counted: bool = False
    revision: int = 0

    @property
    def folder(self) -> str:
        head, _, _ = self.manifest.rpartition("/")
        return f"{head}/" if head else ""

    def set_state(self, state: JobState, now: float | None = None) -> None:
        if state == self.state and self.history:
            return
        at = now or time.time()
        self.state = state
        self.history.append(StateChange(state=state, at=at))

    def summary(self, chunks_done: int, vm_seconds: float | None = None) -> dict:
        """What `<manifest-stem>.status.json` mirrors for people who only have gsutil;
        `chunks_done` from the claims (`StatusStore.done_counts`), `vm_seconds` the sum of
        their worker seconds (core/status/costs.vm_time) where the caller read them."""
        return {
            "job_id": self.job_id,
            "state": self.state.value,
            "manifest": self.manifest_uri,
            "manifest_generation": self.manifest_generation,
            "outputs": self.outputs,
            "error": self.error.model_dump(exclude_none=True) if self.error else None,
            "errors": [e.model_dump(exclude_none=True) for e in self.errors],
            "waiting_for": [w.model_dump(exclude_none=True) for w in self.waiting_for],
            "chunks": {"done": chunks_done, "total": self.chunks_total},
            **({"workers": self.workers.model_dump()} if self.workers else {}),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "history": [{"state": h.state.value, "at": h.at} for h in self.history],
            **(
                {"waiting_for_capacity": self.engine_wait.model_dump()}
                if self.engine_wait is not None and self.state not in TERMINAL_STATES
                else {}
            ),
            "machines": [m.model_dump() for m in self.machines],
            **({"vm_seconds": vm_seconds} if vm_seconds is not None else {}),
            **(
                {"pool": self.pool, "capacity_launched": self.capacity_launched}
                if self.pool
                else {}
            ),
        }


class PoolWorker(BaseModel):
    """A worker of the warm pool (batch_jobs/pool.py), one document each: what the trigger
    counts before it launches capacity and what a free worker weighs jobs by. Written by its
    worker on every change and as its heartbeat; written `starting` by the launcher for each
    worker it launches, until that worker's first beat."""

    worker_id: str  # `<engine job>-<task index>`: a retried task keeps its document
    pool: str  # the image and machine kind it runs (batch_jobs/pool.pool_key)
    engine_job: str  # the capacity job (Cloud Batch) or local launch it runs in
    state: str = "starting"  # starting | busy | finishing | idle | exiting | gone
    job_id: str = ""  # the job it works on now (or last)
    item: int | None = None  # the chunk it holds now, if any
    chunk: int | None = None
    owner: str = ""  # its claim owner id (what its claims' `owner` says)
    launched_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)  # the heartbeat
    busy_seconds: float = 0.0  # seconds spent on chunks and stitches, every job together
    idle_seconds: float = 0.0  # seconds up with nothing to do: the deployment's warm cost
    jobs: int = 0  # jobs it worked on
    process: ProcessOwner | None = None


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
