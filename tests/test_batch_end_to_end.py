"""End to end through Cloud Batch's API: the function source built by
`dropbatch.build_function`, served by functions-framework over HTTP, launches on the Batch
stand-in, which runs the Job's own command and environment as the tasks; Batch-style Pub/Sub
notifications reach `on_batch_state` from the same build. Storage and status are the local
backends, or (`cloud` fixture with "emulators") Cloud Storage on fake-gcs-server and Firestore on
its emulator: the same code, chosen by configuration only."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloudevents.http import CloudEvent
from google.cloud import batch_v1

from batch_jobs.batch_launcher import batch_client
from batch_jobs.capacity import queued_since
from batch_jobs.reconcile import BatchNotification
from batch_jobs.workspace import work_area
from core.config import Settings
from core.status import open_status
from core.status.model import JobRecord, JobState
from core.storage.gcs import GcsStore
from core.storage.local import LocalStore
from dropbatch.build_function import build
from dropbatch.watcher import storage_cloud_event
from tests.batch_standin import BatchStandin, pubsub_event
from tests.function_servers import FunctionServer, function_env
from tests.indexed_video import decoded_indices, make_indexed_video
from tests.storage_notifications import StorageNotifications

MANIFEST = (
    "version: 1\ninputs: [clip.mp4]\nchain: [{crop: {aspect: '1:1'}}]\n"
    "output: {preset: ultrafast}\n"
    "compute: {gpu: l4, spot: true, chunk_seconds: 1, max_parallel_tasks: 2, workers: 2,"
    " max_retries: 1}\n"
)
FRAMES = 75  # 2.5 s at 30 fps: 3 chunks
WAIT_SECONDS = 15  # input_wait_seconds on the emulators: long enough to see a manifest wait
POOL_WARM_MINUTES = 0.25  # with "pool": fifteen seconds of warm time
QUEUED_TIMEOUT = 30.0  # s, with "queued_timeout": long enough for a sweep tick inside it


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
    # The planner sizes the crop's pre/post-roll from its path arithmetic; nothing of the
    # crop that decodes or detects comes along.
    assert not (built_function / "processors" / "crop" / "processor.py").exists()
    assert not (built_function / "processors" / "crop" / "detectors.py").exists()
    assert not (built_function / "dropbatch" / "cli.py").exists()
    # The catalog: each step's models.yaml, read through the registry.
    for step in ("crop", "swap", "lipsync"):
        assert (built_function / "processors" / step / "models.yaml").is_file()


# What a real VM has that no Job carries (its credentials); here, where the emulators listen.
EMULATOR_HOSTS = ("STORAGE_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST")


@pytest.fixture
def cloud(
    deployment: dict, built_function: Path, monkeypatch: pytest.MonkeyPatch, request
) -> Iterator[dict]:
    """The built functions and the Batch stand-in. Indirect params (a tuple): "pool" runs jobs
    on the warm pool (warm_minutes POOL_WARM_MINUTES), else each on its own Batch job; "hold"
    keeps jobs waiting for VMs until `standin.release`; "queued_timeout" gives up on an
    unstarted job after QUEUED_TIMEOUT s; "emulators" puts the inbox and work buckets on
    fake-gcs-server and the status on the Firestore emulator instead of the local backends;
    storage then notifies `on_inbox_object` of every object finalized in the inbox, as a
    storage trigger does (tests/storage_notifications.py), and `on_sweep` is served too."""
    options = set(getattr(request, "param", ()))
    notifications = None
    env = {
        "DROPBATCH_LAUNCHER": "batch",
        "DROPBATCH_PROJECT": "acme-video",
        "DROPBATCH_REGION": "us-central1",
        "DROPBATCH_IMAGE": "us-central1-docker.pkg.dev/acme-video/dropbatch/task:test",
        "DROPBATCH_JOB_SERVICE_ACCOUNT": "dropbatch-job@acme-video.iam.gserviceaccount.com",
        "DROPBATCH_NOTIFICATION_TOPIC": "projects/acme-video/topics/dropbatch-batch-state",
        # Each job on Batch jobs of its own, as with warm_minutes 0; the warm pool's own
        # tests (tests/test_pool_cloud.py) ask for the pool ("pool").
        "DROPBATCH_WARM_MINUTES": str(POOL_WARM_MINUTES if "pool" in options else 0),
    }
    if "emulators" in options:
        notifications = StorageNotifications(request.getfixturevalue("gcs_emulator"))
        env.update(
            STORAGE_EMULATOR_HOST=notifications.host,
            FIRESTORE_EMULATOR_HOST=request.getfixturevalue("firestore_emulator"),
            DROPBATCH_STORAGE="gcs",
            DROPBATCH_STATUS="firestore",
            DROPBATCH_FIRESTORE_COLLECTION=f"batch-e2e-{uuid.uuid4().hex[:10]}",
            DROPBATCH_WORK_BUCKET=f"work-{uuid.uuid4().hex[:10]}",
            DROPBATCH_INPUT_WAIT_SECONDS=str(WAIT_SECONDS),
        )
    if "queued_timeout" in options:
        env["DROPBATCH_QUEUED_TIMEOUT_MINUTES"] = str(QUEUED_TIMEOUT / 60)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if "emulators" in options:
        store = GcsStore(project="acme-video")
        bucket = f"inbox-{uuid.uuid4().hex[:10]}"
        store.client.create_bucket(bucket)
        store.client.create_bucket(env["DROPBATCH_WORK_BUCKET"])
    else:
        store, bucket = LocalStore(deployment["root"]), deployment["bucket"]
    standin = BatchStandin(
        hold="hold" in options,
        vm_env={k: os.environ[k] for k in EMULATOR_HOSTS if k in os.environ},
    )
    standin.start()
    monkeypatch.setenv("DROPBATCH_BATCH_EMULATOR_HOST", standin.endpoint)
    logs = deployment["tmp"]
    inbox_fn = FunctionServer(built_function, "on_inbox_object", logs / "inbox-fn.log").start()
    state_fn = FunctionServer(built_function, "on_batch_state", logs / "state-fn.log").start()
    standin.on_notification = lambda event: _expect_ok(state_fn.post(event))
    sweep_fn = None
    if notifications is not None:
        notifications.watch(bucket, inbox_fn.post)
        sweep_fn = FunctionServer(built_function, "on_sweep", logs / "sweep-fn.log").start()
    try:
        yield {
            **deployment,
            "standin": standin,
            "inbox_fn": inbox_fn,
            "state_fn": state_fn,
            "sweep_fn": sweep_fn,
            "notifications": notifications,
            "store": store,
            "bucket": bucket,
        }
    finally:
        standin.release.set()
        standin.stop()
        for server in (inbox_fn, state_fn, sweep_fn):
            if server is not None:
                server.stop()
        if notifications is not None:
            notifications.close()


def _expect_ok(code: int) -> None:
    assert code == 200, code


def put(cloud: dict, name: str, data: bytes = b"", frames: int = 0) -> None:
    """What `gsutil cp` (or a copy into the folder) does: a plain object, none of our metadata."""
    store, bucket = cloud["store"], cloud["bucket"]
    if frames:
        path = cloud["tmp"] / "videos" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        make_indexed_video(path, frames, audio=True, preset="ultrafast")
        store.upload_file(bucket, name, path, content_type="video/mp4")
    else:
        store.write_bytes(bucket, name, data, content_type="application/x-yaml")


def event_for(cloud: dict, name: str) -> CloudEvent:
    return storage_cloud_event(cloud["store"].stat(cloud["bucket"], name))


def upload(cloud: dict, name: str, data: bytes | None = None, frames: int = 0) -> int:
    """Upload, and the trigger's answer to the upload's event: storage's own notification
    where it sends one (the emulators), else the event posted as Eventarc would."""
    put(cloud, name, data or b"", frames)
    notifications = cloud.get("notifications")
    if notifications is not None:
        generation = cloud["store"].stat(cloud["bucket"], name).generation
        return notifications.wait_delivered(cloud["bucket"], name, generation)
    return cloud["inbox_fn"].post(event_for(cloud, name))


def the_record(cloud: dict, manifest: str | None = None) -> JobRecord:
    [record] = open_status(Settings.from_env()).recent(10, manifest=manifest)
    return record


def states_notified(standin: BatchStandin) -> list[str]:
    return [e.data["message"]["attributes"]["NewJobState"] for e in standin.notifications]


def download(cloud: dict, name: str) -> Path:
    path = cloud["tmp"] / "downloads" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    cloud["store"].download_file(cloud["bucket"], name, path)
    return path


def run_to_success(cloud: dict, folder: str) -> JobRecord:
    """Upload a video and its manifest; the job runs on the stand-in and ends SUCCEEDED with
    every frame of the video, in order, in the output object."""
    assert upload(cloud, f"{folder}/clip.mp4", frames=FRAMES) == 200
    assert upload(cloud, f"{folder}/job.yaml", MANIFEST.encode()) == 200
    record = the_record(cloud, f"{folder}/job.yaml")
    assert record.batch_job == f"projects/acme-video/locations/us-central1/jobs/{record.job_id}"
    job = cloud["standin"].wait(record.batch_job)
    final = open_status(Settings.from_env()).get(record.job_id)
    assert final is not None and final.state == JobState.SUCCEEDED, final and final.error
    assert job.status.state == batch_v1.JobStatus.State.SUCCEEDED
    assert final.outputs == [cloud["store"].uri(cloud["bucket"], f"{folder}/out/clip.mp4")]
    assert decoded_indices(download(cloud, f"{folder}/out/clip.mp4")) == list(range(FRAMES))
    return final


def assert_the_job_is_what_the_manifest_asked(request: batch_v1.CreateJobRequest) -> None:
    """MANIFEST's compute: gpu l4, spot, 3 chunks pulled by the 2 workers it asks for,
    max_retries 1."""
    wire = request.job
    [group] = wire.task_groups
    assert (group.task_count, group.parallelism) == (2, 2)
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


def post_twenty_times(cloud: dict, event: CloudEvent) -> list[int]:
    """Eventarc's at-least-once delivery at its worst: 10 copies at once, then 10 more."""
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
    return codes


def fail_on_batch(cloud: dict, folder: str) -> JobRecord:
    """A job whose input vanishes while it waits for VMs: every task fails at once (exit 2:
    no retry brings the input back), Batch says FAILED through Pub/Sub to `on_batch_state`,
    and the record ends FAILED with Batch's reason, INPUT_GONE naming the input."""
    standin = cloud["standin"]
    standin.release.clear()  # jobs created from now on wait in SCHEDULED
    put(cloud, f"{folder}/clip.mp4", frames=FRAMES)
    assert upload(cloud, f"{folder}/job.yaml", MANIFEST.encode()) == 200
    record = the_record(cloud, f"{folder}/job.yaml")
    assert record.state == JobState.QUEUED
    cloud["store"].delete(cloud["bucket"], f"{folder}/clip.mp4")
    standin.release.set()
    job = standin.wait(record.batch_job)
    assert job.status.state == batch_v1.JobStatus.State.FAILED
    final = open_status(Settings.from_env()).get(record.job_id)
    assert final is not None and final.state == JobState.FAILED
    assert final.error is not None and final.error.code == "INPUT_GONE"
    assert (final.error.uri or "").endswith(f"{folder}/clip.mp4")
    # Batch's account (from GetJob's status events), then the first failed task's own words.
    assert "2 task(s) failed; task 0 exited with code 2 after 1 attempt(s)" in final.error.message
    # The chunk it last held: a worker that fails releases its chunk, and its retry (or the
    # other worker) may claim another one first.
    assert re.search(r"task 0 \(chunk [0-2]\): ", final.error.message), final.error.message
    assert "clip.mp4" in final.error.message
    assert states_notified(standin)[-1] == "FAILED"
    progress = open_status(Settings.from_env()).progress(record.job_id)
    assert {p.attempt for p in progress} == {0}  # exit 2 is not retried
    mirror = cloud["store"].read_bytes(cloud["bucket"], f"{folder}/job.status.json").decode()
    assert '"FAILED"' in mirror and "exited with code 2" in mirror
    return final


def test_upload_runs_on_batch_and_the_job_on_the_wire_is_what_was_asked(cloud: dict) -> None:
    run_to_success(cloud, "c1")
    assert states_notified(cloud["standin"]) == [
        "QUEUED",
        "SCHEDULED",
        "RUNNING",
        "SUCCEEDED",
    ]
    [request] = cloud["standin"].requests
    assert_the_job_is_what_the_manifest_asked(request)


def test_workers_auto_starts_one_vm_for_a_short_video(cloud: dict) -> None:
    """Without `workers`, the planner weighs the work against a VM's start-up (250 s on
    batch-debian, the trigger's settings): 2.5 s of video is worth one VM, not two."""
    put(cloud, "c8/clip.mp4", frames=FRAMES)
    auto = MANIFEST.replace(" workers: 2,", "")
    assert upload(cloud, "c8/job.yaml", auto.encode()) == 200
    record = the_record(cloud, "c8/job.yaml")
    assert record.plan is not None and len(record.plan.tasks()) == 3
    [request] = cloud["standin"].requests
    [group] = request.job.task_groups
    assert (group.task_count, group.parallelism) == (1, 1)
    cloud["standin"].wait(record.batch_job)
    final = the_record(cloud, "c8/job.yaml")
    assert final.state == JobState.SUCCEEDED, final.error
    assert decoded_indices(download(cloud, "c8/out/clip.mp4")) == list(range(FRAMES))


def test_the_same_storage_event_20_times_creates_one_batch_job(cloud: dict) -> None:
    put(cloud, "c2/clip.mp4", frames=FRAMES)
    put(cloud, "c2/job.yaml", MANIFEST.encode())
    assert post_twenty_times(cloud, event_for(cloud, "c2/job.yaml")) == [200] * 20
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


def test_a_failed_batch_job_moves_the_record_to_failed_with_the_reason(cloud: dict) -> None:
    fail_on_batch(cloud, "c3")


@pytest.mark.parametrize("cloud", [("emulators",)], indirect=True)
def test_on_the_emulators_one_upload_runs_once_on_batch_and_failures_reach_firestore(
    cloud: dict,
) -> None:
    """The issue's whole path on the Google Cloud stand-ins: fake-gcs-server holds the bucket,
    the Firestore emulator the status, the built functions run over HTTP, the Batch stand-in's
    "VMs" run the Job's own command and environment (plus the emulator hosts, as a VM has its
    credentials). Storage notifies the trigger of every object finalized in the inbox, Cloud
    Scheduler's sweep reaches `on_sweep`, and storage can refuse a read."""
    standin = cloud["standin"]
    assert cloud["store"].uri(cloud["bucket"], "x").startswith("gs://")
    # A manifest whose video never comes waits, until the scheduled sweep ends it (below).
    waiting = a_manifest_waits_for_its_video(cloud, "c9")
    # An upload ends stitched in the bucket and SUCCEEDED in Firestore; the Job asked for
    # what the manifest asks for.
    record = run_to_success(cloud, "c1")
    [request] = standin.requests
    assert_the_job_is_what_the_manifest_asked(request)
    mirror = cloud["store"].read_bytes(cloud["bucket"], "c1/job.status.json").decode()
    assert '"SUCCEEDED"' in mirror
    internal_objects_stay_in_the_work_bucket(cloud, record)
    # Storage notified the trigger of every object finalized in the inbox, ours included;
    # only the user's two uploads made it do anything.
    only_user_uploads_make_the_trigger_work(cloud, "c1", {"c1/clip.mp4", "c1/job.yaml"})
    # The same storage CloudEvent 20 times, 10 at once: one Batch job.
    put(cloud, "c2/clip.mp4", frames=FRAMES)
    put(cloud, "c2/job.yaml", MANIFEST.encode())
    assert post_twenty_times(cloud, event_for(cloud, "c2/job.yaml")) == [200] * 20
    second = the_record(cloud, "c2/job.yaml")
    assert second.job_id != record.job_id
    assert sorted(standin.jobs) == sorted([record.batch_job, second.batch_job])
    assert len({(r.job_id, r.request_id) for r in standin.requests}) == 2
    log = (cloud["tmp"] / "inbox-fn.log").read_text().splitlines()
    assert sum('"job launched"' in line and second.job_id in line for line in log) == 1
    standin.wait(second.batch_job)
    second = the_record(cloud, "c2/job.yaml")
    assert second.state == JobState.SUCCEEDED, second.error
    assert [h.state for h in second.history].count(JobState.QUEUED) == 1
    # Batch's FAILED notification, through on_batch_state, moves the Firestore record.
    fail_on_batch(cloud, "c3")
    # Cloud Scheduler's tick, through Pub/Sub to on_sweep, ends the manifest that waited.
    the_sweep_ends_it(cloud, waiting)
    # An exception while planning ends the job with its reason, once: no endless retry.
    a_probe_that_raises_ends_the_job_failed(cloud, "c8")


def sweep_tick(cloud: dict) -> int:
    """What Eventarc delivers to on_sweep for the message Cloud Scheduler publishes."""
    event = pubsub_event("projects/acme-video/topics/dropbatch-sweep", {}, "sweep")
    return cloud["sweep_fn"].post(event)


def a_manifest_waits_for_its_video(cloud: dict, folder: str) -> JobRecord:
    assert upload(cloud, f"{folder}/job.yaml", MANIFEST.encode()) == 200
    record = the_record(cloud, f"{folder}/job.yaml")
    assert record.state == JobState.WAITING_FOR_INPUTS
    assert sweep_tick(cloud) == 200
    if time.time() - record.created_at < WAIT_SECONDS - 2:  # a tick inside the wait: no change
        assert the_record(cloud, f"{folder}/job.yaml").state == JobState.WAITING_FOR_INPUTS
    return record


def the_sweep_ends_it(cloud: dict, waiting: JobRecord) -> None:
    time.sleep(max(0.0, waiting.created_at + WAIT_SECONDS - time.time()))
    assert sweep_tick(cloud) == 200
    final = the_record(cloud, waiting.manifest)
    assert final.state == JobState.INVALID
    assert final.error is not None and final.error.code == "INPUT_MISSING"
    assert final.error.field == "inputs[0].video"
    folder = waiting.manifest.rsplit("/", 1)[0]
    assert final.error.uri == cloud["store"].uri(cloud["bucket"], f"{folder}/clip.mp4")
    mirror = json.loads(cloud["store"].read_bytes(cloud["bucket"], f"{folder}/job.status.json"))
    assert mirror["state"] == "INVALID" and mirror["error"]["code"] == "INPUT_MISSING"


def a_probe_that_raises_ends_the_job_failed(cloud: dict, folder: str) -> None:
    """Storage refuses to read the video (a permission or key problem): the probe raises, the
    job ends FAILED saying so, the function answers 200 so the event is not redelivered, and
    a redelivery anyway finds the job finished."""
    put(cloud, f"{folder}/clip.mp4", b"never read: storage refuses")
    cloud["notifications"].refuse_reads(cloud["bucket"], f"{folder}/clip.mp4")
    assert upload(cloud, f"{folder}/job.yaml", MANIFEST.encode()) == 200
    record = the_record(cloud, f"{folder}/job.yaml")
    assert record.state == JobState.FAILED and record.batch_job is None
    assert record.error is not None and record.error.code == "STORAGE_UNAVAILABLE"
    assert "403" in record.error.message
    assert record.error.uri == cloud["store"].uri(cloud["bucket"], f"{folder}/job.yaml")
    mirror = json.loads(cloud["store"].read_bytes(cloud["bucket"], f"{folder}/job.status.json"))
    assert mirror["state"] == "FAILED" and mirror["error"]["code"] == "STORAGE_UNAVAILABLE"
    assert cloud["inbox_fn"].post(event_for(cloud, f"{folder}/job.yaml")) == 200
    assert the_record(cloud, f"{folder}/job.yaml").revision == record.revision


def internal_objects_stay_in_the_work_bucket(cloud: dict, record: JobRecord) -> None:
    """Parts, tiles and claims were written to the work bucket, never the inbox; the stitch
    deleted the parts and tiles, the claims on the output names stay."""
    store, notifications = cloud["store"], cloud["notifications"]
    work = work_area(Settings.from_env(), cloud["bucket"])
    assert work.bucket != cloud["bucket"]
    written = [
        r["name"]
        for r in notifications.finalized
        if r["bucket"] == work.bucket and f"/jobs/{record.job_id}/" in r["name"]
    ]
    assert sum(name.endswith(".mp4") for name in written) == record.chunks_total
    assert store.list(work.bucket, work.jobs_folder()) == []
    claims = store.list(work.bucket, work.claims_folder())
    assert len(claims) == 2 and all(c.metadata.get("dropbatch-role") == "claim" for c in claims)
    assert store.list(cloud["bucket"], "_dropbatch/") == []


def only_user_uploads_make_the_trigger_work(cloud: dict, folder: str, uploads: set[str]) -> None:
    """Every object finalized in the folder reached on_inbox_object (storage notifies the
    trigger of each); the ones we wrote (status files, output, preview) returned at once:
    only the user's uploads were routed on ("storage event" is logged past the routing)."""
    notifications = cloud["notifications"]
    notifications.idle()
    delivered = [d for d in notifications.deliveries if d.name.startswith(f"{folder}/")]
    assert delivered and all(d.status == 200 for d in delivered)
    log = [
        json.loads(line)
        for line in (cloud["tmp"] / "inbox-fn.log").read_text().splitlines()
        if line.startswith("{") and '"storage event"' in line
    ]
    worked = sorted(e["object"] for e in log if e["object"].startswith(f"{folder}/"))
    assert worked == sorted(uploads)
    ours = [d for d in delivered if d.name not in uploads]
    roles = Counter(d.metadata.get("dropbatch-role") for d in ours)
    assert set(roles) == {"status", "output"}, roles
    work = work_area(Settings.from_env(), cloud["bucket"])
    internal = sum(r["bucket"] == work.bucket for r in notifications.finalized)
    print(
        f"\n{folder}: {len(delivered)} trigger invocations for one job: {len(worked)} user "
        f"uploads did work; {roles['status']} status-file and {roles['output']} output/preview "
        f"writes returned at once; {internal} work-bucket writes invoked nothing"
    )


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


@pytest.mark.parametrize("cloud", [("hold",)], indirect=True)
def test_deleting_the_batch_job_cancels_the_record(cloud: dict) -> None:
    upload(cloud, "c5/clip.mp4", frames=FRAMES)
    upload(cloud, "c5/job.yaml", MANIFEST.encode())
    record = the_record(cloud)
    client = batch_client(Settings.from_env())
    tasks = client.list_tasks(parent=f"{record.batch_job}/taskGroups/group0")
    assert [t.status.state.name for t in tasks] == ["PENDING"] * 2  # two workers
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
    assert [t.status.state.name for t in tasks] == ["SUCCEEDED"] * 2  # two workers
    assert all(t.status.status_events[-1].task_execution.exit_code == 0 for t in tasks)


def test_a_function_killed_mid_launch_is_recovered_by_the_redelivery(cloud: dict) -> None:
    standin = cloud["standin"]
    upload(cloud, "c7/clip.mp4", frames=FRAMES)
    put(cloud, "c7/job.yaml", MANIFEST.encode())
    event = event_for(cloud, "c7/job.yaml")
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
    assert cloud["inbox_fn"].post(event) == 200  # Eventarc delivers the event again
    record = the_record(cloud)
    assert record.batch_job and len(standin.jobs) == 1
    assert standin.creates_arrived == 2  # the redelivery launched again, with the same ids
    assert len({(r.job_id, r.request_id) for r in standin.requests}) == 1
    standin.wait(record.batch_job)
    assert the_record(cloud).state == JobState.SUCCEEDED


# What Batch says of a job it cannot start: its quota check, and Compute Engine's answer to
# the VMs it asks for.
QUOTA_EVENT = (
    "Quota checking process decides to delay scheduling for the job {uid} due to inadequate"
    " GPUS_ALL_REGIONS quota [Quota: GPUS_ALL_REGIONS, limit: 0, usage: 0, wanted: 2.]."
)
ZONE_EVENT = (
    "VM in Managed Instance Group meets error: Batch Error: code -"
    " CODE_GCE_ZONE_RESOURCE_POOL_EXHAUSTED, description - The zone"
    " 'projects/acme-video/zones/us-central1-a' does not have enough resources available to"
    " fulfill the request. Try a different zone, or try again later."
)


def cli_status(cloud: dict, manifest: str) -> str:
    """`dropbatch status gs://…/job.yaml`, as a user runs it against the deployment."""
    uri = cloud["store"].uri(cloud["bucket"], manifest)
    done = subprocess.run(
        [sys.executable, "-m", "dropbatch.cli", "status", uri],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DROPBATCH_CONFIG": ""},
    )
    return done.stdout + done.stderr


@pytest.mark.parametrize("cloud", [("hold", "emulators", "queued_timeout")], indirect=True)
def test_a_job_batch_never_starts_shows_batchs_reason_then_ends_no_capacity(cloud: dict) -> None:
    """No GPU quota keeps one job QUEUED; no L4 left in the allowed zone keeps another
    SCHEDULED (our RUNNING, no worker ever reports). Cloud Scheduler's sweep looks both up on
    Batch: the reason is in the record, the status file and `dropbatch status`; past
    queued_timeout_minutes the sweep deletes them on Batch and they end FAILED NO_CAPACITY
    with Batch's reason (the deletion's own notification does not turn that into CANCELLED)."""
    standin = cloud["standin"]
    assert upload(cloud, "q1/clip.mp4", frames=FRAMES) == 200
    assert upload(cloud, "q1/job.yaml", MANIFEST.encode()) == 200
    quota = the_record(cloud, "q1/job.yaml")
    assert quota.state == JobState.QUEUED and quota.batch_job
    quota_text = QUOTA_EVENT.format(uid=standin.jobs[quota.batch_job].uid)
    standin.report(quota.batch_job, quota_text)
    assert upload(cloud, "q2/clip.mp4", frames=FRAMES) == 200
    assert upload(cloud, "q2/job.yaml", MANIFEST.encode()) == 200
    zones = the_record(cloud, "q2/job.yaml")
    standin.report(zones.batch_job, ZONE_EVENT, state=batch_v1.JobStatus.State.SCHEDULED)
    assert the_record(cloud, "q2/job.yaml").state == JobState.RUNNING  # Batch: SCHEDULED

    # A tick inside the timeout: Batch's reasons are recorded and shown; nothing is deleted.
    assert sweep_tick(cloud) == 200
    inside = time.time() - queued_since(quota)
    for manifest, text, state in (
        ("q1/job.yaml", quota_text, "QUEUED"),
        ("q2/job.yaml", ZONE_EVENT, "SCHEDULED"),
    ):
        record = the_record(cloud, manifest)
        assert record.engine_wait is not None, manifest
        assert (record.engine_wait.state, record.engine_wait.reason) == (state, text)
        mirror = json.loads(
            cloud["store"].read_bytes(cloud["bucket"], manifest.replace(".yaml", ".status.json"))
        )
        assert mirror["waiting_for_capacity"]["events"][-1]["description"] == text
        assert f"waiting for capacity: {text}" in cli_status(cloud, manifest)
    if inside < QUEUED_TIMEOUT - 2:
        assert standin.deletes == []
        assert {quota.batch_job, zones.batch_job} <= set(standin.jobs)

    # Past the timeout: deleted on Batch, FAILED NO_CAPACITY with Batch's own words.
    latest = max(queued_since(the_record(cloud, m)) for m in ("q1/job.yaml", "q2/job.yaml"))
    time.sleep(max(0.0, latest + QUEUED_TIMEOUT - time.time()))
    assert sweep_tick(cloud) == 200
    assert sorted(d.name for d in standin.deletes) == sorted([quota.batch_job, zones.batch_job])
    assert not {quota.batch_job, zones.batch_job} & set(standin.jobs)
    for manifest, text in (("q1/job.yaml", quota_text), ("q2/job.yaml", ZONE_EVENT)):
        final = the_record(cloud, manifest)
        assert final.state == JobState.FAILED, (manifest, final.error)
        assert final.error is not None and final.error.code == "NO_CAPACITY"
        assert text in final.error.message
        mirror = json.loads(
            cloud["store"].read_bytes(cloud["bucket"], manifest.replace(".yaml", ".status.json"))
        )
        assert mirror["state"] == "FAILED" and mirror["error"]["code"] == "NO_CAPACITY"
        assert text in cli_status(cloud, manifest)
    # The deletions' DELETION_IN_PROGRESS notifications reached on_batch_state and changed
    # nothing: the jobs stay FAILED NO_CAPACITY.
    assert states_notified(standin).count("DELETION_IN_PROGRESS") == 2
