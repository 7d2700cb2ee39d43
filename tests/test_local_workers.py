"""Local workers are bounded by the machine: `local_workers: auto` never starts more workers
than the cores and the available memory hold (batch_jobs/worker_memory.py); a number asked
for is taken; the choice and its reason are in the job's record and status file."""

from __future__ import annotations

import json
from pathlib import Path

from batch_jobs.worker_count import LOCAL
from batch_jobs.worker_memory import (
    MEMORY_SHARE,
    Machine,
    choose_local_workers,
    plan_worker_mb,
    this_machine,
)
from core.config import Settings
from dropbatch.cost import synthetic_plan
from manifests.model import ComputeOptions
from tests.indexed_video import make_indexed_video
from tests.test_cli import dropbatch

CROP = [{"crop": {"aspect": "9:16", "detector": "yolo-onnx", "model": "yolo11n"}}]
TEN_MINUTES_1080P = synthetic_plan(
    ComputeOptions(max_parallel_tasks=8), 600, chain=CROP, size=(1920, 1080), speed=LOCAL
)


def test_the_issue_case_runs_no_more_workers_than_two_cores() -> None:
    # 10 minutes of 1080p crop planned for 8 workers, on the 2-core, 24 GB machine.
    assert TEN_MINUTES_1080P.parallelism == 8
    choice = choose_local_workers(TEN_MINUTES_1080P, Settings(), Machine(2, 20_000))
    assert choice.count == 2
    assert "2 core(s)" in choice.reason and "MB a worker" in choice.reason


def test_memory_bounds_the_workers_when_it_is_short() -> None:
    size = plan_worker_mb(TEN_MINUTES_1080P)
    assert 1000 < size < 2000  # the 1080p crop measured at about 1.2 GB (bench/RESULTS.md)
    machine = Machine(cores=16, available_mb=3.5 * size / MEMORY_SHARE)
    assert choose_local_workers(TEN_MINUTES_1080P, Settings(), machine).count == 3


def test_a_bigger_frame_is_a_bigger_worker() -> None:
    small = synthetic_plan(ComputeOptions(), 60, chain=CROP, size=(640, 360), speed=LOCAL)
    assert plan_worker_mb(small) < plan_worker_mb(TEN_MINUTES_1080P)


def test_even_one_worker_too_big_still_runs_one_and_says_so() -> None:
    choice = choose_local_workers(TEN_MINUTES_1080P, Settings(), Machine(8, 200))
    assert choice.count == 1 and "may not fit" in choice.reason


def test_a_number_asked_for_is_taken_as_given() -> None:
    choice = choose_local_workers(TEN_MINUTES_1080P, Settings(local_workers=5), Machine(2, 100))
    assert choice.count == 5 and "local_workers is 5" in choice.reason


def test_the_job_never_gets_more_than_it_planned() -> None:
    one = synthetic_plan(ComputeOptions(workers=1), 600, chain=CROP, speed=LOCAL)
    assert choose_local_workers(one, Settings(), Machine(64, 10**6)).count == 1


def test_this_machine_is_read() -> None:
    machine = this_machine()
    assert machine.cores >= 1 and machine.available_mb > 0


def test_a_run_records_how_many_workers_it_started_and_why(tmp_path: Path) -> None:
    """Through the real `dropbatch run`: a job planned for 8 workers starts at most as many
    as this machine has cores, and its status file says why."""
    folder = tmp_path / "inbox" / "job"
    folder.mkdir(parents=True)
    make_indexed_video(folder / "clip.mp4", 200, preset="ultrafast", audio=False)
    (folder / "manifest.yaml").write_text(
        "version: 1\ninputs: [clip.mp4]\noutput: {preset: ultrafast}\n"
        "compute: {chunk_seconds: 1, max_parallel_tasks: 8}\n"
    )
    proc = dropbatch("run", "--quiet", str(folder / "manifest.yaml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    mirror = json.loads((folder / "manifest.status.json").read_text())
    workers = mirror["workers"]
    cores = this_machine().cores
    assert 1 <= workers["count"] <= min(8, cores), workers
    assert f"{cores} core(s)" in workers["reason"]
    assert "of the job's 7 worker(s)" in workers["reason"]  # 7 one-second chunks planned
    shown = dropbatch("status", str(folder / "manifest.yaml"), cwd=tmp_path)
    assert f"  workers: {workers['reason']}" in shown.stdout
