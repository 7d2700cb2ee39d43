"""The one-task job `dropbatch doctor` runs on a task VM: the trigger's own Job for a one-chunk
record, its command swapped for `python -m batch_jobs.selfcheck`, created through the trigger's
Batch launcher (or run by the local executor); and the wait for its report, which comes back
through the status store under the job's id.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

from batch_jobs.selfcheck import GPU_ENV, SELFCHECK_COMMANDS
from core.config import Settings
from core.domain import Chunk, Plan, PlannedItem, VideoInfo
from core.status.base import StatusStore
from core.status.model import CheckReport, JobRecord

POLL_SECONDS = 0.5
# After the engine says the job ended, how long a report may still take to be readable.
REPORT_GRACE_SECONDS = 10.0


def selfcheck_record(check_id: str, bucket: str, gpu: str, spot: bool) -> JobRecord:
    """The job record the Job builder takes: one item of one chunk (so one task), on the
    compute asked for, no retries (a failed check fails the same way again)."""
    info = VideoInfo(duration=1.0, fps_num=1, fps_den=1, frame_count=1, width=2, height=2)
    item = PlannedItem(
        index=0,
        video="",
        output="",
        preview="",
        info=info,
        chunks=[Chunk(index=0, start_frame=0, end_frame=1)],
    )
    plan = Plan(
        items=[item], max_parallel_tasks=1, max_retries=0, gpu=gpu, spot=spot, chunk_seconds=1
    )
    manifest = f"_dropbatch/doctor/{check_id}"
    return JobRecord(
        job_id=check_id,
        bucket=bucket,
        manifest=manifest,
        manifest_generation=0,
        manifest_uri=f"{bucket}/{manifest}",
        plan=plan,
    )


EngineState = Callable[[], str]  # "" while running, else why it ended (or "ended")


def launch_on_batch(settings: Settings, record: JobRecord) -> tuple[str, EngineState]:
    """The trigger's Job for this record with the self-check as its command, created through
    the trigger's launcher; returns the job's name and how to ask whether it ended."""
    from google.cloud import batch_v1

    from batch_jobs.batch_launcher import BatchLauncher, failure_reason
    from batch_jobs.cloud_batch import build_job

    assert record.plan is not None
    job = build_job(record, settings)
    spec = job.task_groups[0].task_spec
    container = next(r.container for r in spec.runnables if r.container.image_uri)
    container.commands = list(SELFCHECK_COMMANDS)  # the image's python, our module
    spec.environment.variables[GPU_ENV] = record.plan.gpu
    launcher = BatchLauncher(settings)
    name = launcher.submit(record.job_id, job, settings)
    ended = (batch_v1.JobStatus.State.SUCCEEDED, batch_v1.JobStatus.State.FAILED)

    def state() -> str:
        current = launcher.client.get_job(name=name)
        if current.status.state not in ended:
            return ""
        return failure_reason(current) or current.status.state.name

    return name, state


def launch_locally(settings: Settings, record: JobRecord) -> tuple[str, EngineState]:
    """One process on this machine, as the local executor runs a task."""
    from batch_jobs.local_executor import LocalExecutor

    assert record.plan is not None
    outcome: list[str] = []

    def notify(_name: str, state: str, reason: str) -> None:
        if state in ("SUCCEEDED", "FAILED"):
            outcome.append(reason or state)

    executor = LocalExecutor(
        job_name=f"local/{record.job_id}",
        task_count=1,
        parallelism=1,
        max_retries=0,
        env={
            **settings.to_env(),
            "DROPBATCH_JOB_ID": record.job_id,
            GPU_ENV: record.plan.gpu,
        },
        command=[sys.executable, *SELFCHECK_COMMANDS],
        notify=notify,
    )
    thread = threading.Thread(target=executor.run, name=f"doctor-{record.job_id}", daemon=True)
    thread.start()
    return record.job_id, lambda: outcome[0] if outcome else ""


def await_report(
    status: StatusStore, check_id: str, ended: EngineState, timeout: float
) -> CheckReport | str:
    """The VM's report, or why none came."""
    deadline = time.monotonic() + timeout
    ended_at = None
    while time.monotonic() < deadline:
        report = status.get_check(check_id)
        if report is not None and report.finished:
            return report
        reason = ended()
        if reason and ended_at is None:
            ended_at = time.monotonic()
        if ended_at is not None and time.monotonic() - ended_at > REPORT_GRACE_SECONDS:
            return f"the job ended without a report: {reason}"
        time.sleep(POLL_SECONDS)
    return f"no report within {timeout:g} s"
