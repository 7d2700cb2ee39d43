# ruff: noqa: F811  (the `cloud` fixture, imported, is every test's parameter)
"""The warm pool on the cloud path: the built functions (functions-framework), Cloud Storage on
fake-gcs-server, Firestore on its emulator, and the Batch stand-in running each capacity job's
own command (`python -m batch_jobs.pool`) and environment as its "VMs"
(tests/test_batch_end_to_end.py's `cloud` fixture with "emulators" and "pool": fifteen seconds of
warm time). What a real VM adds — its boot, its GPU — is not here."""

from __future__ import annotations

import os
import signal

import pytest
from google.cloud import batch_v1

from core.config import Settings
from core.status import open_status
from core.status.model import JobRecord, JobState, PoolWorker
from dropbatch.watcher import storage_cloud_event
from tests.indexed_video import decoded_indices
from tests.polling import wait_for
from tests.test_batch_end_to_end import (  # noqa: F401  (fixtures)
    FRAMES,
    MANIFEST,
    POOL_WARM_MINUTES,
    built_function,
    cloud,
    download,
    post_twenty_times,
    upload,
)

POOLED = [("emulators", "pool")]
FINAL = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.INVALID)


def the_job(folder: str) -> JobRecord | None:
    found = open_status(Settings.from_env()).recent(50, manifest=f"{folder}/job.yaml")
    return found[0] if found else None


def submit(cloud: dict, folder: str, frames: int = FRAMES) -> None:
    assert upload(cloud, f"{folder}/clip.mp4", frames=frames) == 200
    assert upload(cloud, f"{folder}/job.yaml", MANIFEST.encode()) == 200


def ended(folder: str, timeout: float = 240) -> JobRecord:
    def final() -> JobRecord | None:
        record = the_job(folder)
        return record if record is not None and record.state in FINAL else None

    return wait_for(final, timeout, f"job {folder} to end")  # type: ignore[return-value]


def assert_frame_exact(cloud: dict, folder: str, frames: int = FRAMES) -> None:
    assert decoded_indices(download(cloud, f"{folder}/out/clip.mp4")) == list(range(frames))


def workers() -> list[PoolWorker]:
    return open_status(Settings.from_env()).pool_workers()


@pytest.mark.parametrize("cloud", POOLED, indirect=True)
def test_a_second_job_runs_on_the_first_jobs_warm_workers_and_launches_no_capacity(
    cloud: dict,
) -> None:
    standin = cloud["standin"]
    # The second upload's video goes up first (a video alone starts nothing): its manifest
    # can then follow the first job's end at once, well within the warm time, on a loaded
    # machine too.
    assert upload(cloud, "second/clip.mp4", frames=FRAMES) == 200
    submit(cloud, "first")
    first = ended("first")
    assert first.state == JobState.SUCCEEDED, first.error
    assert upload(cloud, "second/job.yaml", MANIFEST.encode()) == 200
    assert_frame_exact(cloud, "first")
    # No warm worker when it arrived: capacity for what it wants (workers: 2), labelled as
    # pool capacity, running the pool worker.
    [launch] = standin.requests
    assert launch.job.labels["dropbatch-role"] == "pool-capacity"
    [group] = launch.job.task_groups
    assert group.task_count == 2 == first.capacity_launched
    assert list(group.task_spec.runnables[-1].container.commands) == ["-m", "batch_jobs.pool"]
    # Eventarc delivers at least once: twenty more deliveries of its manifest count nothing
    # again and launch nothing.
    again = storage_cloud_event(cloud["store"].stat(cloud["bucket"], "second/job.yaml"))
    assert set(post_twenty_times(cloud, again)) == {200}
    second = ended("second")
    assert second.state == JobState.SUCCEEDED, second.error
    assert_frame_exact(cloud, "second")
    assert len(standin.requests) == 1  # nothing launched for the second job
    assert (second.capacity_launched, second.capacity_jobs, second.batch_job) == (0, [], None)
    # Its chunks were claimed by the first job's workers.
    status = open_status(Settings.from_env())
    pids = {w.process.pid for w in workers() if w.process is not None}
    holders = {c.holder.process.pid for c in status.claims(second.job_id) if c.holder}
    assert holders and holders <= pids
    assert all(c.seconds > 0 for c in status.claims(second.job_id))  # its VM time, per chunk
    # The warm time passes with nothing to claim: the workers exit, the capacity job ends.
    job = standin.wait(first.batch_job, timeout=POOL_WARM_MINUTES * 60 + 90)
    assert job.status.state == batch_v1.JobStatus.State.SUCCEEDED
    assert {w.state for w in workers()} == {"gone"}
    assert all(w.idle_seconds >= POOL_WARM_MINUTES * 60 * 0.9 for w in workers())
    # The capacity job's end did not touch the jobs it served.
    assert the_job("first").state == the_job("second").state == JobState.SUCCEEDED


@pytest.mark.parametrize("cloud", POOLED, indirect=True)
def test_a_pool_worker_killed_mid_chunk_loses_it_and_the_output_is_frame_exact_stitched_once(
    cloud: dict,
) -> None:
    frames = FRAMES * 2  # five one-second chunks for two workers
    submit(cloud, "killed", frames)

    def busy() -> list[PoolWorker]:
        return [w for w in workers() if w.state in ("busy", "finishing") and w.process and w.owner]

    victim = wait_for(busy, 120, "a worker holding a chunk")[0]  # type: ignore[index]
    assert victim.process is not None and victim.item is not None and victim.chunk is not None
    os.kill(victim.process.pid, signal.SIGKILL)  # the VM gone mid-chunk
    record = ended("killed")
    assert record.state == JobState.SUCCEEDED, record.error
    assert_frame_exact(cloud, "killed", frames)
    assert record.items_stitched == [0] and len(record.stitch_claims) == 1  # stitched once
    status = open_status(Settings.from_env())
    [taken] = [
        c for c in status.claims(record.job_id) if (c.item, c.chunk) == (victim.item, victim.chunk)
    ]
    assert taken.done and taken.grants >= 2  # taken over from the killed worker


@pytest.mark.parametrize("cloud", POOLED, indirect=True)
def test_a_job_whose_input_is_gone_fails_alone_and_the_pool_goes_on(cloud: dict) -> None:
    """Two jobs on the same warm workers; the second's video is deleted once it is planned:
    that job ends FAILED naming it, the first still ends SUCCEEDED on the same workers."""
    submit(cloud, "long", FRAMES * 3)
    wait_for(lambda: [w for w in workers() if w.state == "busy"], 120, "the pool at work")
    submit(cloud, "gone")
    cloud["store"].delete(cloud["bucket"], "gone/clip.mp4")
    gone = ended("gone")
    assert gone.state == JobState.FAILED
    assert gone.error is not None and gone.error.code == "INPUT_GONE"
    assert gone.error.uri and gone.error.uri.endswith("gone/clip.mp4")
    long = ended("long")
    assert long.state == JobState.SUCCEEDED, long.error
    assert_frame_exact(cloud, "long", FRAMES * 3)
