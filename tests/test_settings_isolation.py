"""Settings travel as values, not through this process's environment: two intakes built the
way `dropbatch run` and `serve` build theirs (`local_intake`) run side by side in one process,
each job in its own store with its own settings, and each task gets `task_threads` from the
settings of the intake that launched it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from batch_jobs.intake import StorageEvent
from core.config import Settings
from core.status.model import JobState
from dropbatch.local_run import local_intake
from tests.indexed_video import make_indexed_video
from tests.local_jobs import wait_local_job

CROP = (
    "version: 1\ninputs: [clip.mp4]\nchain: [{crop: {aspect: '1:1'}}]\n"
    "output: {preset: ultrafast}\ncompute: {chunk_seconds: 5}\n"
)


def threads_logged(job_id: str, caplog: pytest.LogCaptureFixture, stderr: str) -> list[int]:
    """`threads` of each "task started" line of the job: relayed as a log record when this
    process logs text, or passed on as the task's JSON line when it logs JSON (or not at all)."""
    found = [
        r.fields["threads"]
        for r in caplog.records
        if r.getMessage() == "task started" and getattr(r, "fields", {}).get("job_id") == job_id
    ]
    for line in stderr.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("message") == "task started" and entry.get("job_id") == job_id:
            found.append(entry["threads"])
    return found


def test_two_intakes_in_one_process_keep_their_own_settings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture,
) -> None:
    for key in [k for k in os.environ if k.startswith("DROPBATCH_")]:
        monkeypatch.delenv(key)
    caplog.set_level("INFO")
    before = dict(os.environ)
    clip = tmp_path / "clip.mp4"
    make_indexed_video(clip, 8, size=(320, 240), audio=False, preset="ultrafast")
    jobs = {}
    for name, threads in (("a", 1), ("b", 3)):
        root = tmp_path / name
        (root / "inbox" / "job").mkdir(parents=True)
        (root / "inbox" / "job" / "clip.mp4").write_bytes(clip.read_bytes())
        (root / "inbox" / "job" / "job.yaml").write_text(CROP)
        settings = Settings(local_root=root, input_wait_seconds=0, task_threads=threads)
        intake = local_intake(settings)
        info = intake.store.stat("inbox", "job/job.yaml")
        [job_id] = intake.handle(StorageEvent("inbox", "job/job.yaml", info.generation))
        jobs[name] = (intake, job_id, threads)
    assert jobs["a"][0].launcher is not jobs["b"][0].launcher
    for _, job_id, _ in jobs.values():
        assert wait_local_job(job_id, timeout=120)
    stderr = capfd.readouterr().err
    for name, (intake, job_id, threads) in jobs.items():
        record = intake.status.get(job_id)
        assert record is not None and record.state == JobState.SUCCEEDED, record
        assert record.outputs == [intake.store.uri("inbox", "job/out/clip.mp4")]
        assert (tmp_path / name / "inbox" / "job" / "out" / "clip.mp4").is_file()
        assert threads_logged(job_id, caplog, stderr) == [threads]
    # Each status store knows only its own job.
    assert [r.job_id for r in jobs["a"][0].status.recent(10)] == [jobs["a"][1]]
    assert [r.job_id for r in jobs["b"][0].status.recent(10)] == [jobs["b"][1]]
    assert dict(os.environ) == before  # nothing was written into this process's environment
