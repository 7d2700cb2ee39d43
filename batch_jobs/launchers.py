"""`open_launcher`: the launcher the settings name. Apart from launcher.py (the interface and
LaunchError, which the launchers themselves import), so no circle of files runs through it."""

from __future__ import annotations

from batch_jobs.launcher import Launcher
from core.config import Settings


def open_launcher(settings: Settings) -> Launcher:
    if settings.launcher == "local":
        from batch_jobs.local_executor import LocalLauncher

        return LocalLauncher()  # one per caller: its jobs run on this process
    if settings.launcher == "batch":
        from batch_jobs.batch_launcher import BatchLauncher

        return BatchLauncher(settings)
    raise NotImplementedError(f"launcher {settings.launcher!r} is not available")
