"""Running one manifest on this machine, as `dropbatch run` and `dropbatch demo` do: the local
intake, the progress line while the job runs, the report at its end; and the catalog names a
manifest needs (`dropbatch models check`, `dropbatch doctor`). Apart from cli.py so the demo and
the doctor use them without importing the command line (no circle of files)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from core.config import Settings
from core.status.model import TERMINAL_STATES, JobRecord, JobState
from dropbatch.inbox import LocalInbox, inbox_for_manifest, settings_for

if TYPE_CHECKING:
    from batch_jobs.intake import Intake

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def _inbox_settings(inbox: LocalInbox, **overrides: object) -> Settings:
    """Settings for the embedded default on a local inbox's one store, honouring DROPBATCH_*
    overrides.

    The inbox the user's path is in decides where the store is (dropbatch/inbox.py): a
    DROPBATCH_LOCAL_ROOT set for other uses would otherwise send the command to look for the
    manifest in another tree. Storage and launcher are this machine's whatever the
    environment says; the status store (and its file) stays configurable.
    """
    return settings_for(inbox, Settings.from_env(os.environ), **overrides)


def local_intake(settings: Settings, pools: bool = False):
    """The trigger's intake built from `settings` alone, with a local launcher of its own:
    nothing goes through this process's environment (tasks get theirs from the launcher).
    `pools`: its jobs run on a warm pool of worker processes kept `warm_minutes` between
    jobs (`dropbatch serve`); else each job on its own workers (`dropbatch run`)."""
    from batch_jobs.intake import Intake
    from batch_jobs.local_executor import LocalLauncher
    from core.status import open_status
    from core.storage import open_store

    return Intake(settings, open_store(settings), open_status(settings), LocalLauncher(pools=pools))


def run_manifest(manifest: Path, workers: int | str | None, again: bool, quiet: bool) -> int:
    from batch_jobs.ids import job_id_for
    from batch_jobs.intake import StorageEvent, is_manifest
    from core import logs

    manifest = manifest.resolve()
    if not manifest.is_file():
        print(f"{manifest}: no such file", file=sys.stderr)
        return EXIT_INVALID
    if not is_manifest(manifest.name):  # the trigger would treat it as an input, not run it
        print(f"{manifest}: not a manifest (a .yaml or .yml file, name not starting with '.')",
              file=sys.stderr)  # fmt: skip
        return EXIT_INVALID
    if again:
        os.utime(manifest)  # a new generation is a new job, as a re-upload would be
    inbox = inbox_for_manifest(manifest)
    inbox.mark()
    settings = _inbox_settings(inbox)
    if workers:
        settings = settings.model_copy(update={"local_workers": workers})
    logs.setup()
    intake = local_intake(settings)
    store, status, launcher = intake.store, intake.status, intake.launcher
    name = inbox.object_name(manifest)
    info = store.stat(inbox.bucket, name)
    # The same manifest generation is the same job whoever saw it first: a `serve` on this
    # inbox, or an earlier `run`. Then this run follows that job instead of starting another.
    existing = status.get(job_id_for(inbox.bucket, name, info.generation))
    if existing is None:
        # Run it now: inputs missing now make it INVALID at once instead of waiting for them.
        intake.settings = settings.model_copy(update={"input_wait_seconds": 0.0})
    handled = intake.handle(StorageEvent(inbox.bucket, name, info.generation))
    if not handled:  # an object of ours (an output, a status file), which the trigger skips
        print(f"{manifest}: written by dropbatch, not a manifest to run", file=sys.stderr)
        return EXIT_INVALID
    [job_id] = handled
    if existing is not None:
        print(_joined_line(existing), file=sys.stderr)
    watch(
        status, job_id, quiet=quiet, until_done=True, tick=lambda: continue_stranded(intake, job_id)
    )
    # The job's state is final before its last task has exited: let the tasks finish, so
    # their last log lines are shown and no task outlives the command.
    launcher.wait(job_id, timeout=60)
    record = status.get(job_id)
    assert record is not None
    return report(record)


def _joined_line(existing: JobRecord) -> str:
    if existing.state in TERMINAL_STATES:
        return (
            f"dropbatch: this manifest version ran already as job {existing.job_id} "
            f"({existing.state.value}); `--again` runs it again"
        )
    return (
        f"dropbatch: this manifest version is job {existing.job_id} already "
        f"({existing.state.value}, started by a `dropbatch serve` or `run` on this inbox); "
        "following it"
    )


def pool_stranded(intake: Intake, record: JobRecord) -> bool:
    """No worker of the job's warm pool is alive (or starting): nothing will run it."""
    from batch_jobs.pool_capacity import pool_alive
    from batch_jobs.pool_rules import starting_grace

    return not pool_alive(intake.status, record.pool, starting_grace(intake.settings))


def continue_stranded(intake: Intake, job_id: str) -> None:
    """A followed job whose executor died (the `serve` that ran it was stopped) continues on
    this process from its done chunks, as the next `serve` would resume it."""
    from batch_jobs.liveness import executor_alive

    record = intake.status.get(job_id)
    if record is None or record.state in TERMINAL_STATES or record.plan is None:
        return
    if record.pool:
        if not pool_stranded(intake, record):
            return
        # The serve whose warm pool ran it is gone: this process runs it on workers of its
        # own from its done chunks, as a job launched without the pool.
        record, _ = intake.status.transact(job_id, lambda r: setattr(r, "pool", ""))
    elif not (record.batch_job or "").startswith("local/") or executor_alive(
        record, intake.status.progress(job_id)
    ):
        return  # not a local job, or its executor still runs it
    if intake.launcher.start(record, intake.settings, replacing=record.executor):
        print(f"dropbatch: the process running job {job_id} is gone; continuing it here",
              file=sys.stderr)  # fmt: skip


def report(record: JobRecord) -> int:
    print(f"job {record.job_id}: {record.state.value}")
    for output in record.outputs:
        print(f"  output: {output}")
    problems = record.errors or ([record.error] if record.error else [])
    for e in problems:
        print(f"  error: {e.line()}", file=sys.stderr)
    if record.state == JobState.WAITING_FOR_INPUTS:  # what to upload for it to start
        for w in record.waiting_for:
            print(
                f"  waiting for: {w.uri}  ({w.line()})" if w.uri else f"  waiting for: {w.line()}"
            )
    status_file = record.manifest_uri.rsplit(".", 1)[0] + ".status.json"
    print(f"  status: {status_file}")
    if record.state == JobState.SUCCEEDED:
        return EXIT_OK
    return EXIT_INVALID if record.state == JobState.INVALID else EXIT_FAILED


def progress_line(record: JobRecord, done: int, width: int = 30) -> str:
    """`done`: the job's finished chunks (`StatusStore.count_done`)."""
    total = record.chunks_total
    fill = int(width * done / total) if total else 0
    bar = "#" * fill + "-" * (width - fill)
    return f"{record.state.value:<19} [{bar}] {done}/{total} chunks"


def watch(
    status,
    job_id: str,
    *,
    quiet: bool = False,
    until_done: bool = True,
    tick: Callable[[], None] | None = None,
) -> None:
    """Show the job's progress until it ends; `tick` runs between polls."""
    last = ""
    while True:
        record = status.get(job_id)
        if record is None:
            return
        line = progress_line(record, status.count_done(job_id))
        if not quiet and line != last:
            tasks = status.progress(job_id)
            running = [t for t in tasks if t.state == "RUNNING"]
            extra = (
                "  "
                + " ".join(f"w{t.task_index}:{t.frames_done}/{t.frames_total}" for t in running[:6])
                if running
                else ""
            )
            stream = sys.stderr
            if stream.isatty():  # one line, redrawn in place
                print(f"\r{line}{extra}".ljust(100), end="", file=stream, flush=True)
            else:
                print(f"{line}{extra}", file=stream)
            last = line
        if record.state in TERMINAL_STATES or not until_done:
            if not quiet and sys.stderr.isatty():
                print(file=sys.stderr)
            return
        if tick is not None:
            tick()
        time.sleep(0.5)


def _manifest_models(path: Path) -> list[str]:
    """Every catalog name a manifest's chain (with each item's overrides) needs."""
    from manifests.loader import load_manifest
    from manifests.steps import input_steps
    from processors.models.store import models_for_step

    manifest = load_manifest(path.read_bytes())
    names: list[str] = []
    for item in manifest.inputs:
        for run in input_steps(manifest, item.overrides.model_dump(exclude_none=True)):
            needs = models_for_step(run.name, run.options.model_dump(mode="json"), run.faces_given)
            names += [n for n in needs if n not in names]
    return names
