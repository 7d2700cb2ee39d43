"""Launchers hand a planned job to an engine: Cloud Batch, or the local executor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from core.config import Settings
from core.status.model import EngineWait, JobRecord


class LaunchError(Exception):
    pass


@dataclass(frozen=True)
class Capacity:
    """Warm-pool capacity (batch_jobs/pool_capacity.py): `workers` pool workers of `pool`,
    launched as the engine job `name` (an id: Batch's job id rule)."""

    name: str
    pool: str
    workers: int


class Launcher(Protocol):
    # Whether it launches warm-pool capacity (`launch_capacity`) when warm_minutes is set.
    pools: bool

    def launch(self, record: JobRecord, settings: Settings) -> str:
        """Start the job's tasks; return the engine's job name. Idempotent per job id."""
        ...

    def launch_capacity(self, record: JobRecord, settings: Settings, capacity: Capacity) -> str:
        """Start `capacity.workers` pool workers (batch_jobs/pool.py), their first look at
        `record`'s job; return the engine's name for them. Idempotent per capacity name."""
        ...

    def failure_reason(self, job_name: str) -> str:
        """Why the engine's job ended, as far as the engine knows ('' if it cannot say)."""
        ...

    def look_up(self, record: JobRecord) -> EngineWait | None:
        """The engine's state and latest events for a job it has not started (no task
        running yet); None once it has started, or when it does not know the job."""
        ...

    def delete(self, record: JobRecord) -> None:
        """Delete the engine's job (one that never started); gone already is fine."""
        ...
