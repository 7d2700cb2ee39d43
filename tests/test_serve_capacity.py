"""`dropbatch serve` gives up on a local job whose tasks never start, through the same
launcher interface and timeout as the cloud sweep (batch_jobs/capacity.py): a job launched by
a `dropbatch run` that hangs before starting its tasks stays QUEUED; serve looks it up (the
record and `dropbatch status` say who should be running it), and past
queued_timeout_minutes it ends FAILED NO_CAPACITY saying so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_jobs.ids import job_id_for
from batch_jobs.liveness import process_started
from core.config import Settings
from core.jobstatus import transition
from core.status import open_status
from core.status.model import JobRecord, JobState, ProcessOwner
from core.storage.local import LocalStore
from dropbatch.inbox import LocalInbox

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = (
    'version: 1\ninputs: [clip.mp4]\nchain: [{crop: {aspect: "1:1"}}]\n'
    "output: {preset: ultrafast}\n"
)


def cli(*args: str, minutes: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DROPBATCH_QUEUED_TIMEOUT_MINUTES": str(minutes)}
    for key in ("DROPBATCH_LOCAL_ROOT", "DROPBATCH_SQLITE_PATH", "DROPBATCH_CONFIG"):
        env.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "dropbatch.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@pytest.fixture
def hung_launcher() -> Iterator[subprocess.Popen]:
    """A live process recorded as a job's executor that never starts its tasks (a `dropbatch
    run` stuck before them)."""
    proc = subprocess.Popen(["sleep", "600"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def queued_by(inbox: Path, owner: subprocess.Popen) -> JobRecord:
    """The manifest's job, QUEUED on the local executor by `owner`, as `dropbatch run` leaves
    it between its claim and its tasks."""
    local = LocalInbox(inbox.resolve())
    local.mark()  # the inbox serve watches, with its own store (dropbatch.inbox)
    settings = Settings(**local.store_settings())
    store = LocalStore(settings.local_root, settings.local_state_dir)
    info = store.write_bytes("inbox", "c/job.yaml", MANIFEST.encode())
    status = open_status(settings)
    job_id = job_id_for("inbox", "c/job.yaml", info.generation)
    status.create(
        JobRecord(
            job_id=job_id,
            bucket="inbox",
            manifest="c/job.yaml",
            manifest_generation=info.generation,
            manifest_uri=store.uri("inbox", "c/job.yaml"),
            batch_job=f"local/{job_id}",
            executor=ProcessOwner(
                host=os.uname().nodename, pid=owner.pid, started=process_started(owner.pid) or ""
            ),
        )
    )
    assert transition(store, status, job_id, JobState.QUEUED)
    record = status.get(job_id)
    assert record is not None
    return record


def test_serve_ends_a_local_job_whose_tasks_never_start(
    tmp_path: Path, hung_launcher: subprocess.Popen
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    record = queued_by(inbox, hung_launcher)
    manifest = inbox / "c" / "job.yaml"

    # Inside the timeout: serve looks it up and says who should be running it.
    served = cli("serve", "--inbox", str(inbox), "--poll", "0.1", "--once")
    assert served.returncode == 0, served.stderr[-2000:]
    status = open_status(Settings(**LocalInbox(inbox.resolve()).store_settings()))
    waiting = status.get(record.job_id)
    assert waiting is not None and waiting.state == JobState.QUEUED
    assert waiting.engine_wait is not None
    said = f"its executor (pid {hung_launcher.pid} on {os.uname().nodename}) has not started"
    assert said in waiting.engine_wait.reason
    shown = cli("status", str(manifest)).stdout
    assert f"waiting for capacity: {said}" in shown, shown

    # Past it (0.6 s here): FAILED NO_CAPACITY with that reason, in the record and the file.
    served = cli("serve", "--inbox", str(inbox), "--poll", "0.1", "--once", minutes=0.01)
    assert served.returncode == 0, served.stderr[-2000:]
    final = status.get(record.job_id)
    assert final is not None and final.state == JobState.FAILED
    assert final.error is not None and final.error.code == "NO_CAPACITY"
    assert said in final.error.message
    mirror = json.loads((inbox / "c" / "job.status.json").read_text())
    assert mirror["state"] == "FAILED" and mirror["error"]["code"] == "NO_CAPACITY"
    assert "waiting_for_capacity" not in mirror  # settled: the wait is history
