"""Errors no retry can mend end the job at once, with their place: an input deleted after
the job was planned, a symbolic link out of the inbox; and a job that ends FAILED leaves no
parts behind on this machine, as in the cloud."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from tests.indexed_video import make_indexed_video
from tests.test_cli import dropbatch

MANIFEST = (
    "version: 1\ninputs: [clip.mp4]\noutput: {preset: ultrafast}\n"
    "compute: {chunk_seconds: 1, max_parallel_tasks: 1, max_retries: 3}\n"
)


def test_an_input_deleted_after_planning_fails_at_once_naming_its_uri(tmp_path: Path) -> None:
    folder = tmp_path / "inbox" / "job"
    folder.mkdir(parents=True)
    clip = folder / "clip.mp4"
    make_indexed_video(clip, 60, preset="ultrafast", audio=False)
    (folder / "manifest.yaml").write_text(MANIFEST)
    attempts = tmp_path / "attempts"
    # The job is planned (the trigger probed the clip); then the clip is deleted before the
    # worker reads it: each attempt of the task deletes it again and runs the real task.
    task = (
        f"echo attempt >> {shlex.quote(str(attempts))}; rm -f {shlex.quote(str(clip))}; "
        f"exec {shlex.quote(sys.executable)} -m batch_jobs.task"
    )
    env = {"DROPBATCH_TASK_COMMAND": shlex.join(["sh", "-c", task])}
    proc = dropbatch("run", "--quiet", str(folder / "manifest.yaml"), cwd=tmp_path, env=env)
    assert proc.returncode == 1, proc.stderr
    assert attempts.read_text().count("attempt") == 1  # not retried: it cannot come back
    mirror = json.loads((folder / "manifest.status.json").read_text())
    assert mirror["state"] == "FAILED"
    error = mirror["error"]
    assert error["code"] == "INPUT_GONE"
    assert error["uri"].endswith("job/clip.mp4")
    assert "upload it again" in error["message"]


# A worker that does one chunk with the real task code, then dies (exit 1).
ONE_CHUNK_THEN_DIE = (
    "import os, sys; from batch_jobs.task import run_task; from core import logs; "
    "from core.config import Settings; logs.setup(); "
    "run_task(Settings.from_env(), os.environ['DROPBATCH_JOB_ID'], "
    "int(os.environ['BATCH_TASK_INDEX']), 0, max_chunks=1); sys.exit(1)"
)


def test_a_failed_job_leaves_no_parts_in_the_local_work_folder(tmp_path: Path) -> None:
    folder = tmp_path / "inbox" / "job"
    folder.mkdir(parents=True)
    make_indexed_video(folder / "clip.mp4", 90, preset="ultrafast", audio=False)
    (folder / "manifest.yaml").write_text(MANIFEST.replace("max_retries: 3", "max_retries: 0"))
    env = {"DROPBATCH_TASK_COMMAND": shlex.join([sys.executable, "-c", ONE_CHUNK_THEN_DIE])}
    proc = dropbatch("run", "--quiet", str(folder / "manifest.yaml"), cwd=tmp_path, env=env)
    assert proc.returncode == 1, proc.stderr
    assert json.loads((folder / "manifest.status.json").read_text())["state"] == "FAILED"
    state = folder / ".dropbatch"  # `run` makes the manifest's folder an inbox (dropbatch.inbox)
    assert (state / "work" / "job" / "outputs").is_dir()  # the work folder is where we look
    left = [p for p in state.rglob("*") if "jobs" in p.parts]  # parts, tiles, their metadata
    assert left == []


def test_a_missing_object_of_the_jobs_own_is_retried_not_blamed_on_the_input() -> None:
    """Workers race over the job's own objects (a stitch empties the parts folder another
    worker reads its encoder choice from): that absence may pass, so it is retried."""
    from batch_jobs.task import task_failure
    from core.storage.base import NotFound

    internal = "gs://work/inbox/jobs/db-job-1/"
    own = task_failure(NotFound(f"{internal}parts/0000/encoder.txt"), internal)
    assert (own.exit_code, own.code) == (1, "")
    gone = task_failure(NotFound("gs://inbox/job/clip.mp4"), internal)
    assert (gone.exit_code, gone.code, gone.uri) == (2, "INPUT_GONE", "gs://inbox/job/clip.mp4")
