"""No two jobs or items write one output object, and what is ours is known by our marker, not
by a folder's name: a user's manifest or input may live in a folder called `out`."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from batch_jobs.intake import Intake, StorageEvent
from batch_jobs.local_executor import LocalLauncher
from batch_jobs.workspace import work_area
from core.config import Settings
from core.jobstatus import JOB_KEY, ROLE_KEY
from core.status import open_status
from core.status.base import StatusStore
from core.status.model import JobRecord, JobState
from core.storage.local import LocalStore
from tests.indexed_video import make_indexed_video
from tests.local_jobs import wait_local_job


def crop(aspect: str, video: str = "clip.mp4", prefix: str = "out/") -> str:
    return (
        f'version: 1\ninputs: [{video}]\nchain: [{{crop: {{aspect: "{aspect}"}}}}]\n'
        f"output: {{prefix: {prefix}, preset: ultrafast}}\n"
        "compute: {chunk_seconds: 1, max_parallel_tasks: 2, max_retries: 0}\n"
    )


class CountingEngine:
    """The engine seam answered at once, for tests about what launches, not how it runs."""

    def __init__(self) -> None:
        self.launched: list[str] = []

    def launch(self, record: JobRecord, settings: Settings) -> str:
        self.launched.append(record.job_id)
        return f"engine/{record.job_id}"

    def failure_reason(self, job_name: str) -> str:
        return ""


@pytest.fixture
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    make_indexed_video(path, 20, audio=False, preset="ultrafast")
    return path


def counting_intake(
    deployment: dict,
) -> tuple[Settings, LocalStore, StatusStore, CountingEngine, Intake]:
    """The trigger's intake over the deployment's inbox and status, with the counting engine."""
    settings = Settings.from_env()
    store, status, engine = LocalStore(deployment["root"]), open_status(settings), CountingEngine()
    return settings, store, status, engine, Intake(settings, store, status, engine)


def drop(deployment: dict, name: str, data: bytes) -> StorageEvent:
    path = deployment["inbox"] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    info = LocalStore(deployment["root"]).stat("inbox", name)
    return StorageEvent("inbox", name, info.generation, metadata=info.metadata)


def test_two_manifests_writing_one_output_the_second_is_refused_naming_both(
    deployment: dict, video: Path
) -> None:
    settings = Settings.from_env()
    store, status = LocalStore(deployment["root"]), open_status(settings)
    intake = Intake(settings, store, status, LocalLauncher())
    drop(deployment, "c/clip.mp4", video.read_bytes())
    [first] = intake.handle(drop(deployment, "c/square.yaml", crop("1:1").encode()))
    [second] = intake.handle(drop(deployment, "c/tall.yaml", crop("9:16").encode()))
    refused = status.get(second)
    assert refused is not None and refused.state == JobState.INVALID
    assert refused.error is not None and refused.error.code == "OUTPUT_TAKEN"
    assert refused.error.field == "inputs[0]"
    assert refused.error.uri == store.uri("inbox", "c/out/clip.mp4")
    assert store.uri("inbox", "c/square.yaml") in refused.error.message
    assert wait_local_job(first, timeout=240)
    done = status.get(first)
    assert done is not None and done.state == JobState.SUCCEEDED, done.error
    assert store.stat("inbox", "c/out/clip.mp4").metadata[JOB_KEY] == first
    # The same manifest uploaded again is a re-run: it writes over its own output.
    [again] = intake.handle(drop(deployment, "c/square.yaml", crop("1:1").encode() + b"\n"))
    assert again != first
    assert wait_local_job(again, timeout=240)
    assert status.get(again).state == JobState.SUCCEEDED
    assert store.stat("inbox", "c/out/clip.mp4").metadata[JOB_KEY] == again


def test_of_two_manifests_evaluated_at_once_exactly_one_launches(
    deployment: dict, video: Path
) -> None:
    _, _, status, engine, intake = counting_intake(deployment)
    drop(deployment, "c/clip.mp4", video.read_bytes())
    events = [drop(deployment, f"c/m{i}.yaml", crop(f"{i + 1}:1").encode()) for i in range(4)]
    barrier = threading.Barrier(len(events))
    jobs: list[str] = []

    def deliver(ev: StorageEvent) -> None:
        barrier.wait()
        jobs.extend(intake.handle(ev))

    threads = [threading.Thread(target=deliver, args=(ev,)) for ev in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    states = sorted(status.get(j).state for j in jobs)
    assert states == [JobState.INVALID] * 3 + [JobState.QUEUED]
    assert len(engine.launched) == 1


def test_a_deleted_manifest_frees_its_output_names(deployment: dict, video: Path) -> None:
    settings, store, status, _, intake = counting_intake(deployment)
    drop(deployment, "c/clip.mp4", video.read_bytes())
    intake.handle(drop(deployment, "c/old.yaml", crop("1:1").encode()))
    store.delete("inbox", "c/old.yaml")
    [job] = intake.handle(drop(deployment, "c/new.yaml", crop("9:16").encode()))
    assert status.get(job).state == JobState.QUEUED
    work = work_area(settings, "inbox")
    assert b"c/new.yaml" in store.read_bytes(work.bucket, work.claim("c/out/clip.mp4"))


def test_a_users_file_at_the_output_name_is_refused_not_overwritten(
    deployment: dict, video: Path
) -> None:
    _, store, status, engine, intake = counting_intake(deployment)
    drop(deployment, "c/clip.mp4", video.read_bytes())
    drop(deployment, "c/results/clip.mp4", b"the user's own file")
    [job] = intake.handle(drop(deployment, "c/m.yaml", crop("1:1", prefix="results/").encode()))
    record = status.get(job)
    assert record.state == JobState.INVALID and record.error.code == "OUTPUT_EXISTS"
    assert record.error.uri == store.uri("inbox", "c/results/clip.mp4")
    assert engine.launched == []


def test_a_manifest_in_a_folder_named_out_is_seen(deployment: dict, video: Path) -> None:
    _, _, status, _, intake = counting_intake(deployment)
    drop(deployment, "c/out/clip.mp4", video.read_bytes())
    [job] = intake.handle(drop(deployment, "c/out/job.yaml", crop("1:1").encode()))
    assert status.get(job).state == JobState.QUEUED
    assert status.get(job).plan.items[0].output == "c/out/out/clip.mp4"


def test_an_input_under_out_is_found_when_the_outputs_go_elsewhere(
    deployment: dict, video: Path
) -> None:
    _, _, status, _, intake = counting_intake(deployment)
    manifest = crop("1:1", video="out/clip.mp4", prefix="results/").encode()
    [job] = intake.handle(drop(deployment, "c/job.yaml", manifest))
    assert status.get(job).state == JobState.WAITING_FOR_INPUTS
    assert intake.handle(drop(deployment, "c/out/clip.mp4", video.read_bytes())) == [job]
    record = status.get(job)
    assert record.state == JobState.QUEUED
    assert record.plan.items[0].video == "c/out/clip.mp4"
    assert record.plan.items[0].output == "c/results/clip.mp4"


def test_what_we_write_under_the_output_prefix_starts_nothing(
    deployment: dict, video: Path
) -> None:
    _, store, status, _, intake = counting_intake(deployment)
    # A manifest waiting for `clip.mp4`, and our output named like it lands in its out/.
    [job] = intake.handle(drop(deployment, "c/job.yaml", crop("1:1", video='"**/*.mp4"').encode()))
    ours = store.write_bytes(
        "inbox", "c/out/other.mp4", video.read_bytes(), metadata={ROLE_KEY: "output"}
    )
    ev = StorageEvent("inbox", ours.name, ours.generation, metadata=ours.metadata)
    assert intake.handle(ev) == []
    assert status.get(job).state == JobState.WAITING_FOR_INPUTS
