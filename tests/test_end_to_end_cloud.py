"""End to end on the Google Cloud stand-ins: fake-gcs-server holds the inbox bucket, the npm
Firestore emulator the status, and functions-framework serves `triggers.main:on_inbox_object`
over HTTP on a port, as Cloud Functions does. The test uploads like `gsutil cp` and posts the
Eventarc storage CloudEvents (int64 fields as strings). Tasks run on the local launcher, so a
fault-injecting task command can stand in; the same path through Cloud Batch (the built function
and the Batch stand-in on these emulators) is tests/test_batch_end_to_end.py."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloudevents.conversion import to_structured

from batch_jobs.ids import job_id_for
from core.status.firestore import FirestoreStatusStore
from core.status.model import TERMINAL_STATES, JobRecord, JobState
from core.storage.gcs import GcsStore
from dropbatch.watcher import storage_cloud_event
from tests.indexed_video import decoded_indices, make_indexed_video
from tests.servers import START_TIMEOUT, free_port

ROOT = Path(__file__).resolve().parent.parent
FRAMES = 90
MANIFEST = (
    'version: 1\ninputs: [clip.mp4]\nchain: [{crop: {aspect: "1:1"}}]\n'
    "output: {preset: ultrafast}\ncompute: {chunk_seconds: 1, max_parallel_tasks: 2}\n"
)


class Deployment:
    def __init__(self, root: Path, storage_host: str, firestore_host: str) -> None:
        self.root = root
        self.bucket = f"inbox-{uuid.uuid4().hex[:10]}"
        self.collection = f"e2e-{uuid.uuid4().hex[:10]}"
        self.env = {
            "STORAGE_EMULATOR_HOST": storage_host,
            "FIRESTORE_EMULATOR_HOST": firestore_host,
            "DROPBATCH_STORAGE": "gcs",
            "DROPBATCH_STATUS": "firestore",
            "DROPBATCH_PROJECT": "dropbatch-test",
            "DROPBATCH_FIRESTORE_COLLECTION": self.collection,
            "DROPBATCH_LAUNCHER": "local",
            "DROPBATCH_LOCAL_ROOT": str(root / "unused-local-root"),
            "DROPBATCH_STITCH_LEASE_SECONDS": "30",
            "DROPBATCH_TASK_COMMAND": shlex.join(
                [sys.executable, str(ROOT / "tests/fault_task.py")]
            ),
            "FAULT_LOG": str(root / "tasks.log"),
            "FAULT_PLAN": "{}",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        self.log = root / "function.log"
        self.url = ""
        self.store = GcsStore()
        self.status = FirestoreStatusStore(self.collection, project="dropbatch-test")

    def upload(self, name: str, path: Path | None = None, data: bytes = b"") -> None:
        """What `gsutil cp` does: a plain upload, none of our metadata."""
        blob = self.store.client.bucket(self.bucket).blob(name)
        if path is not None:
            blob.upload_from_filename(str(path), content_type="video/mp4")
        else:
            blob.upload_from_string(data, content_type="application/x-yaml")

    def post_event(self, name: str) -> int:
        """POST the object's `finalized` CloudEvent to the function, as Eventarc does."""
        headers, body = to_structured(storage_cloud_event(self.store.stat(self.bucket, name)))
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status

    def wait_terminal(self, job_id: str, timeout: float = 300) -> JobRecord:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.status.get(job_id)
            if record is not None and record.state in TERMINAL_STATES:
                return record
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} not finished after {timeout} s: {record}")

    def run_manifest(self, name: str) -> JobRecord:
        """MANIFEST uploaded as `name` and its event posted: the job's record once it ends."""
        self.upload(name, data=MANIFEST.encode())
        assert self.post_event(name) == 200
        generation = self.store.stat(self.bucket, name).generation
        return self.wait_terminal(job_id_for(self.bucket, name, generation))

    def function_log(self) -> list[dict]:
        entries = []
        for line in self.log.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue  # gunicorn's own lines
        return entries


@pytest.fixture(scope="module")
def cloud(
    tmp_path_factory: pytest.TempPathFactory, gcs_emulator: str, firestore_emulator: str
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("cloud")
    saved = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST")}
    os.environ.update(
        STORAGE_EMULATOR_HOST=gcs_emulator, FIRESTORE_EMULATOR_HOST=firestore_emulator
    )
    deployment = Deployment(root, gcs_emulator, firestore_emulator)
    deployment.store.client.create_bucket(deployment.bucket)
    port = free_port()
    deployment.url = f"http://127.0.0.1:{port}/"
    with open(deployment.log, "wb") as log:
        server = subprocess.Popen(
            ["functions-framework", "--target", "on_inbox_object", "--signature-type",
             "cloudevent", "--source", str(ROOT / "triggers" / "main.py"),
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env={**os.environ, **deployment.env}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert server.poll() is None, deployment.log.read_text()
            try:
                urllib.request.urlopen(deployment.url, timeout=5)
                break
            except urllib.error.HTTPError:
                break  # it answers (a GET is not a CloudEvent): it is up
            except OSError:
                assert time.monotonic() < deadline, "functions-framework did not start"
                time.sleep(0.2)
        yield deployment
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    make_indexed_video(path, FRAMES, fps=30, audio=True, preset="ultrafast")
    return path


def test_upload_to_the_bucket_ends_stitched_in_the_bucket_and_succeeded_in_firestore(
    cloud: Deployment, clip: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    cloud.upload("c1/clip.mp4", clip)
    assert cloud.post_event("c1/clip.mp4") == 200
    record = cloud.run_manifest("c1/job.yaml")
    print(f"\nend to end on the emulators: {time.monotonic() - started:.1f} s")

    assert record.state == JobState.SUCCEEDED, record.error
    assert record.outputs == [f"gs://{cloud.bucket}/c1/out/clip.mp4"]
    assert record.chunks_total == 3 and cloud.status.count_done(record.job_id) == 3
    output = cloud.store.stat(cloud.bucket, "c1/out/clip.mp4")
    assert output.metadata == {"dropbatch-role": "output", "dropbatch-job": record.job_id}
    cloud.store.download_file(cloud.bucket, "c1/out/clip.mp4", tmp_path / "out.mp4")
    assert decoded_indices(tmp_path / "out.mp4") == list(range(FRAMES))
    mirror = json.loads(cloud.store.read_bytes(cloud.bucket, "c1/job.status.json"))
    assert mirror["state"] == "SUCCEEDED" and mirror["outputs"] == record.outputs
    assert mirror["chunks"] == {"done": 3, "total": 3}
    assert cloud.store.list(cloud.bucket, "_dropbatch/jobs/") == []  # parts deleted
    # What stays is the manifest's claim on its output names (batch_jobs/outputs.py).
    claims = [
        json.loads(cloud.store.read_bytes(cloud.bucket, c.name))
        for c in cloud.store.list(cloud.bucket, "_dropbatch/outputs/")
    ]
    assert sorted((c["output"], c["manifest"]) for c in claims) == [
        ("c1/out/clip.mp4", "c1/job.yaml"), ("c1/out/clip.preview.jpg", "c1/job.yaml")
    ]  # fmt: skip
    # Two workers pulled the three chunks; each says how many it did, in Firestore. One that
    # waited for the other's last chunk ends at its next look (CLAIM_POLL_SECONDS), after
    # the stitch.
    deadline = time.monotonic() + 30
    while {p.state for p in cloud.status.progress(record.job_id)} != {"SUCCEEDED"}:
        assert time.monotonic() < deadline, cloud.status.progress(record.job_id)
        time.sleep(0.2)
    progress = cloud.status.progress(record.job_id)
    assert [(p.task_index, p.state) for p in progress] == [(0, "SUCCEEDED"), (1, "SUCCEEDED")]
    assert sum(p.chunks_done for p in progress) == 3
    assert [(c.chunk, c.done, c.grants) for c in cloud.status.claims(record.job_id)] == [
        (0, True, 1), (1, True, 1), (2, True, 1)
    ]  # fmt: skip


def test_the_same_event_posted_twenty_times_creates_one_job(cloud: Deployment, clip: Path) -> None:
    cloud.upload("c2/clip.mp4", clip)
    cloud.upload("c2/job.yaml", data=MANIFEST.encode())
    codes: list[int] = []
    lock = threading.Lock()

    def post() -> None:
        code = cloud.post_event("c2/job.yaml")
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=post) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for _ in range(10):
        post()
    assert codes == [200] * 20

    generation = cloud.store.stat(cloud.bucket, "c2/job.yaml").generation
    job_id = job_id_for(cloud.bucket, "c2/job.yaml", generation)
    record = cloud.wait_terminal(job_id)
    assert record.state == JobState.SUCCEEDED, record.error
    assert [
        r.job_id for r in cloud.status.recent(10, bucket=cloud.bucket, manifest="c2/job.yaml")
    ] == [job_id]
    launched = [
        e
        for e in cloud.function_log()
        if e.get("message") == "job launched" and e.get("job_id") == job_id
    ]
    assert len(launched) == 1
    assert [h.state for h in record.history].count(JobState.QUEUED) == 1
    assert len(record.stitch_claims) == 1
    starts = [
        json.loads(line)
        for line in Path(cloud.env["FAULT_LOG"]).read_text().splitlines()
        if json.loads(line)["what"] == "start"
    ]
    assert sorted(e["task"] for e in starts if e["at"] >= record.created_at) == [0, 1]


def test_an_unreadable_video_ends_invalid_naming_its_gs_uri(cloud: Deployment) -> None:
    cloud.upload("c3/clip.mp4", data=b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    record = cloud.run_manifest("c3/job.yaml")
    assert record.state == JobState.INVALID
    assert record.error is not None and record.error.code == "INPUT_UNREADABLE"
    assert record.error.uri == f"gs://{cloud.bucket}/c3/clip.mp4"
    assert record.error.field == "inputs[0].video"
    mirror = json.loads(cloud.store.read_bytes(cloud.bucket, "c3/job.status.json"))
    assert mirror["error"]["uri"] == f"gs://{cloud.bucket}/c3/clip.mp4"


def test_a_users_object_at_the_output_name_is_never_overwritten(
    cloud: Deployment, clip: Path
) -> None:
    cloud.upload("c4/clip.mp4", clip)
    cloud.upload("c4/out/clip.mp4", data=b"the user's own edit")
    record = cloud.run_manifest("c4/job.yaml")
    # Refused by the trigger, before any task (the stitch still checks, for an object that
    # appears while the job runs).
    assert record.state == JobState.INVALID
    assert record.error is not None and record.error.code == "OUTPUT_EXISTS"
    assert record.error.uri == f"gs://{cloud.bucket}/c4/out/clip.mp4"
    assert record.batch_job is None
    assert cloud.store.read_bytes(cloud.bucket, "c4/out/clip.mp4") == b"the user's own edit"
