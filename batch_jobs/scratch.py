"""A task's temporary files, all in one folder that names its owner, so that what a killed
task leaves behind is removed by the next task or executor on the machine.

The folder is `<tmp>/dropbatch-task-<pid>-<start>` (`<tmp>`: `tempfile.gettempdir()`, i.e.
`$TMPDIR`); inside the task every `tempfile` call and every child process (ffmpeg) writes
under it. It is removed when the task ends, also on SIGTERM (Batch's preemption notice, a
`kill`); after a SIGKILL the folder stays until `sweep_dead` finds its owner gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from batch_jobs.liveness import process_started
from core.logs import event

log = logging.getLogger("dropbatch.scratch")
PREFIX = "dropbatch-task-"


def _folder_name(pid: int, started: str) -> str:
    ticks = started.rsplit(":", 1)[-1] if started else "0"
    return f"{PREFIX}{pid}-{ticks}"


def _owner_gone(folder: Path) -> bool:
    try:
        pid_text, ticks = folder.name[len(PREFIX) :].split("-", 1)
        pid = int(pid_text)
    except ValueError:
        return False  # not one of ours
    if pid == os.getpid():
        return False
    started = process_started(pid)
    if started is None:
        return True
    if started == "":  # no /proc: the pid alone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return ticks != "0" and started.rsplit(":", 1)[-1] != ticks  # the pid was reused


def sweep_dead(root: Path | None = None) -> int:
    """Remove the scratch folders of tasks that are no longer running; how many went."""
    root = Path(root or tempfile.gettempdir())
    removed = 0
    for folder in root.glob(PREFIX + "*"):
        if folder.is_dir() and _owner_gone(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    if removed:
        event(log, "scratch swept", folders=removed, root=str(root))
    return removed


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SystemExit unwinds every `with`/`finally` (temporary files, the stitch lease) on its way.
    sys.exit(128 + signum)


@contextlib.contextmanager
def task_scratch() -> Iterator[Path]:
    """This process's scratch folder for the duration of the block (the task's whole run)."""
    sweep_dead()
    root = Path(tempfile.gettempdir())
    pid = os.getpid()
    folder = root / _folder_name(pid, process_started(pid) or "")
    folder.mkdir(exist_ok=True)
    saved = (tempfile.tempdir, os.environ.get("TMPDIR"))
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    tempfile.tempdir = str(folder)
    os.environ["TMPDIR"] = str(folder)  # ffmpeg and other children write here too
    try:
        yield folder
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(folder, ignore_errors=True)
