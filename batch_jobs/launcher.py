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


def open_launcher(settings: Settings) -> Launcher:
    if settings.launcher == "local":
        from batch_jobs.local_executor import LocalLauncher

        return LocalLauncher()  # one per caller: its jobs run on this process
    if settings.launcher == "batch":
        from batch_jobs.batch_launcher import BatchLauncher

        return BatchLauncher(settings)
    raise NotImplementedError(f"launcher {settings.launcher!r} is not available")
