"""End to end through Cloud Batch's API: the function source built by
`dropbatch.build_function`, served by functions-framework over HTTP, launches on the Batch
stand-in, which runs the Job's own command and environment as the tasks; Batch-style Pub/Sub
notifications reach `on_batch_state` from the same build. Storage and status are the local
backends (the Cloud Storage / Firestore ones plug in by configuration)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import batch_v1

from batch_jobs.batch_launcher import batch_client
from batch_jobs.reconcile import BatchNotification
from dropbatch.build_function import build
from dropbatch.config import Settings
from dropbatch.status import open_status
from dropbatch.status.model import JobRecord, JobState
from dropbatch.storage.local import LocalStore
from dropbatch.watcher import storage_cloud_event
from tests.batch_standin import BatchStandin, pubsub_event
from tests.function_servers import FunctionServer, function_env
from tests.indexed_video import decoded_indices, make_indexed_video

MANIFEST = (
    "version: 1\ninputs: [clip.mp4]\nchain: [{crop: {aspect: '1:1'}}]\n"
    "output: {preset: ultrafast}\n"
    "compute: {gpu: l4, spot: true, chunk_seconds: 1, max_parallel_tasks: 2, max_retries: 1}\n"
)
FRAMES = 75  # 2.5 s at 30 fps: 3 chunks


@pytest.fixture(scope="module")
def built_function(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("function") / "source"
    build(out)
    return out


def test_the_build_is_self_contained(built_function: Path) -> None:
    where = subprocess.run(
        [sys.executable, "-c", "import main, triggers.main as t; print(t.__file__)"],
        cwd=built_function,
        env=function_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.strip()
    assert Path(where).resolve() == (built_function / "triggers" / "main.py").resolve()
    requirements = (built_function / "requirements.txt").read_text().split()
    names = {r.split(">")[0].split("=")[0].split("<")[0] for r in requirements}
    assert {"functions-framework", "google-cloud-batch", "pydantic", "pyyaml"} <= names
    # Only what the functions import: not the task runtime, the processors or the CLI.
    assert not (built_function / "batch_jobs" / "task.py").exists()
    assert not (built_function / "processors" / "crop").exists()
    assert not (built_function / "dropbatch" / "cli.py").exists()
    assert (built_function / "processors" / "models" / "catalog.yaml").is_file()


@pytest.fixture
def cloud(
    deployment: dict, built_function: Path, monkeypatch: pytest.MonkeyPatch, request
) -> Iterator[dict]:
    hold = getattr(request, "param", False)
    standin = BatchStandin(hold=hold)
    standin.start()
    for key, value in {
        "DROPBATCH_LAUNCHER": "batch",
        "DROPBATCH_BATCH_ENDPOINT": standin.endpoint,
        "DROPBATCH_PROJECT": "acme-video",
        "DROPBATCH_REGION": "us-central1",
        "DROPBATCH_IMAGE": "us-central1-docker.pkg.dev/acme-video/dropbatch/task:test",
        "DROPBATCH_JOB_SERVICE_ACCOUNT": "dropbatch-job@acme-video.iam.gserviceaccount.com",
        "DROPBATCH_NOTIFICATION_TOPIC": "projects/acme-video/topics/dropbatch-batch-state",
    }.items():
        monkeypatch.setenv(key, value)
    logs = deployment["tmp"]
    inbox_fn = FunctionServer(built_function, "on_inbox_object", logs / "inbox-fn.log").start()
    state_fn = FunctionServer(built_function, "on_batch_state", logs / "state-fn.log").start()
    standin.on_notification = lambda event: _expect_ok(state_fn.post(event))
    try:
        yield {
            **deployment,
            "standin": standin,
            "inbox_fn": inbox_fn,
            "state_fn": state_fn,
            "store": LocalStore(deployment["root"]),
        }
    finally:
        standin.release.set()
        standin.stop()
        inbox_fn.stop()
        state_fn.stop()


def _expect_ok(code: int) -> None:
    assert code == 200, code


def upload(cloud: dict, name: str, data: bytes | None = None, frames: int = 0) -> int:
    path = cloud["inbox"] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if frames:
        make_indexed_video(path, frames, audio=True, preset="ultrafast")
    else:
        path.write_bytes(data or b"")
    return cloud["inbox_fn"].post(storage_cloud_event(cloud["store"].stat("inbox", name)))


def the_record(cloud: dict) -> JobRecord:
    [record] = open_status(Settings.from_env()).recent(10)
    return record


def states_notified(standin: BatchStandin) -> list[str]:
    return [e.data["message"]["attributes"]["NewJobState"] for e in standin.notifications]


def test_upload_runs_on_batch_and_the_job_on_the_wire_is_what_was_asked(cloud: dict) -> None:
    assert upload(cloud, "c1/clip.mp4", frames=FRAMES) == 200
    assert upload(cloud, "c1/job.yaml", MANIFEST.encode()) == 200
    record = the_record(cloud)
    assert record.batch_job == f"projects/acme-video/locations/us-central1/jobs/{record.job_id}"
    job = cloud["standin"].wait(record.batch_job)
    final = open_status(Settings.from_env()).get(record.job_id)
    assert final is not None and final.state == JobState.SUCCEEDED, final and final.error
    assert job.status.state == batch_v1.JobStatus.State.SUCCEEDED
    out = cloud["inbox"] / "c1/out/clip.mp4"
    assert decoded_indices(out) == list(range(FRAMES))
    assert states_notified(cloud["standin"]) == [
        "QUEUED",
        "SCHEDULED",
        "RUNNING",
        "SUCCEEDED",
    ]

    [request] = cloud["standin"].requests
    wire = request.job
    [group] = wire.task_groups
    assert (group.task_count, group.parallelism) == (3, 2)
    assert group.task_spec.max_retry_count == 1
    [policy] = group.task_spec.lifecycle_policies
    assert policy.action == batch_v1.LifecyclePolicy.Action.RETRY_TASK
    assert 50001 in policy.action_condition.exit_codes
    [instance] = wire.allocation_policy.instances
    assert instance.install_gpu_drivers
    assert instance.policy.accelerators[0].type_ == "nvidia-l4"
    assert instance.policy.provisioning_model == batch_v1.AllocationPolicy.ProvisioningModel.SPOT
    [note] = wire.notifications
    assert note.pubsub_topic == "projects/acme-video/topics/dropbatch-batch-state"
    assert note.message.type_ == batch_v1.JobNotification.Type.JOB_STATE_CHANGED


def test_the_same_storage_event_20_times_creates_one_batch_job(cloud: dict) -> None:
    upload(cloud, "c2/clip.mp4", frames=FRAMES)
    path = cloud["inbox"] / "c2/job.yaml"
    path.write_text(MANIFEST)
    event = storage_cloud_event(cloud["store"].stat("inbox", "c2/job.yaml"))
    codes: list[int] = []
    threads = [
        threading.Thread(target=lambda: codes.append(cloud["inbox_fn"].post(event)))
        for _ in range(10)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes.extend(cloud["inbox_fn"].post(event) for _ in range(10))
    assert codes == [200] * 20
    standin = cloud["standin"]
    # Deliveries that found the claim taken but no job recorded yet launch again: the same
    # job id and request id, so Batch holds one job.
    assert len(standin.jobs) == 1
    assert len({(r.job_id, r.request_id) for r in standin.requests}) == 1
    [name] = standin.jobs
    standin.wait(name)
    final = the_record(cloud)
    assert final.state == JobState.SUCCEEDED, final.error
    assert [h.state for h in final.history].count(JobState.QUEUED) == 1


@pytest.mark.parametrize("cloud", [True], indirect=True)
def test_a_failed_batch_job_moves_the_record_to_failed_with_the_reason(cloud: dict) -> None:
    standin = cloud["standin"]  # holds jobs in SCHEDULED until released
    upload(cloud, "c3/clip.mp4", frames=FRAMES)
    upload(cloud, "c3/job.yaml", MANIFEST.encode())
    record = the_record(cloud)
    assert record.state == JobState.QUEUED
    (cloud["inbox"] / "c3/clip.mp4").unlink()  # the input vanishes before the VMs start
    standin.release.set()
    job = standin.wait(record.batch_job)
    assert job.status.state == batch_v1.JobStatus.State.FAILED
    final = open_status(Settings.from_env()).get(record.job_id)
    assert final is not None and final.state == JobState.FAILED
    assert final.error is not None and final.error.code == "TASKS_FAILED"
    # Batch's account (from GetJob's status events), then the first failed task's own words.
    assert "3 task(s) failed; task 0 exited with code 1 after 2 attempt(s)" in final.error.message
    assert "task 0 (chunk 0):" in final.error.message and "clip.mp4" in final.error.message
    assert states_notified(standin)[-1] == "FAILED"
    progress = open_status(Settings.from_env()).progress(record.job_id)
    assert {p.attempt for p in progress} == {1}  # exit 1 is retried, max_retries (1) times
    mirror = (cloud["inbox"] / "c3/job.status.json").read_text()
    assert '"FAILED"' in mirror and "exited with code 1" in mirror


def test_a_notification_naming_the_full_job_resource_is_understood(cloud: dict) -> None:
    upload(cloud, "c4/clip.mp4", frames=FRAMES)
    upload(cloud, "c4/job.yaml", MANIFEST.encode())
    record = the_record(cloud)
    cloud["standin"].wait(record.batch_job)
    late = pubsub_event(
        "projects/acme-video/topics/dropbatch-batch-state",
        {"JobName": record.batch_job, "NewJobState": "FAILED", "Type": "JOB_STATE_CHANGED"},
        "late duplicate",
    )
    assert cloud["state_fn"].post(late) == 200
    # A terminal record stays as it is: notifications arrive late and out of order.
    assert the_record(cloud).state == JobState.SUCCEEDED
    note = BatchNotification.from_pubsub(late.data["message"]["attributes"], "")
    assert note is not None and note.job_id == record.job_id
    task_level = {"JobName": record.job_id, "NewTaskState": "FAILED", "Type": "TASK_STATE_CHANGED"}
    assert BatchNotification.from_pubsub(task_level, "") is None


@pytest.mark.parametrize("cloud", [True], indirect=True)
def test_deleting_the_batch_job_cancels_the_record(cloud: dict) -> None:
    upload(cloud, "c5/clip.mp4", frames=FRAMES)
    upload(cloud, "c5/job.yaml", MANIFEST.encode())
    record = the_record(cloud)
    client = batch_client(Settings.from_env())
    tasks = client.list_tasks(parent=f"{record.batch_job}/taskGroups/group0")
    assert [t.status.state.name for t in tasks] == ["PENDING"] * 3
    client.delete_job(name=record.batch_job).result(timeout=60)
    final = the_record(cloud)
    assert final.state == JobState.CANCELLED
    assert final.error is not None and final.error.code == "CANCELLED"
    assert "deleted" in final.error.message.lower()


def test_list_tasks_reports_each_tasks_exit(cloud: dict) -> None:
    upload(cloud, "c6/clip.mp4", frames=FRAMES)
    upload(cloud, "c6/job.yaml", MANIFEST.encode())
    record = the_record(cloud)
    cloud["standin"].wait(record.batch_job)
    client = batch_client(Settings.from_env())
    tasks = list(client.list_tasks(parent=f"{record.batch_job}/taskGroups/group0"))
    assert [t.status.state.name for t in tasks] == ["SUCCEEDED"] * 3
    assert all(t.status.status_events[-1].task_execution.exit_code == 0 for t in tasks)


def test_a_function_killed_mid_launch_is_recovered_by_the_redelivery(cloud: dict) -> None:
    standin = cloud["standin"]
    upload(cloud, "c7/clip.mp4", frames=FRAMES)
    (cloud["inbox"] / "c7/job.yaml").write_text(MANIFEST)
    event = storage_cloud_event(cloud["store"].stat("inbox", "c7/job.yaml"))
    standin.admit_creates.clear()

    def deliver_into_a_dying_instance() -> None:
        with contextlib.suppress(OSError):  # the connection dies with the instance
            cloud["inbox_fn"].post(event, timeout=60)

    first = threading.Thread(target=deliver_into_a_dying_instance)
    first.start()
    deadline = time.time() + 120
    while standin.creates_arrived == 0 and time.time() < deadline:
        time.sleep(0.05)
    assert standin.creates_arrived == 1
    cloud["inbox_fn"].kill()  # the instance dies with CreateJob in flight
    claimed = the_record(cloud)
    assert claimed.state == JobState.QUEUED and claimed.batch_job is None
    standin.admit_creates.set()  # Batch did create it; the answer never reached anyone
    first.join(120)
    deadline = time.time() + 120  # its tasks start and move the record on, nameless
    while the_record(cloud).state == JobState.QUEUED and time.time() < deadline:
        time.sleep(0.1)
    assert the_record(cloud).batch_job is None
    cloud["inbox_fn"].start()
    assert cloud["inbox_fn"].post(event) == 200
    print(
        "DEBUG after", the_record(cloud).state, the_record(cloud).batch_job, standin.creates_arrived
    )  # Eventarc delivers the event again
    record = the_record(cloud)
    assert record.batch_job and len(standin.jobs) == 1
    assert standin.creates_arrived == 2  # the redelivery launched again, with the same ids
    assert len({(r.job_id, r.request_id) for r in standin.requests}) == 1
    standin.wait(record.batch_job)
    assert the_record(cloud).state == JobState.SUCCEEDED
