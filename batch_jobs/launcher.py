"""Launchers hand a planned job to an engine: Cloud Batch, or the local executor."""

from __future__ import annotations

from typing import Protocol

from core.config import Settings
from core.status.model import EngineWait, JobRecord


class LaunchError(Exception):
    pass


class Launcher(Protocol):
    def launch(self, record: JobRecord, settings: Settings) -> str:
        """Start the job's tasks; return the engine's job name. Idempotent per job id."""
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
