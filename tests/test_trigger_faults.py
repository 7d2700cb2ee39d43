"""Whatever goes wrong while the trigger evaluates a manifest, the job ends INVALID (the user
can fix it) or FAILED (ours), with a code, a message and the field or object — in the status
store and in `.status.json` — and nothing raises out of the trigger. A job never stays
RECEIVED."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from batch_jobs.intake import Intake, StorageEvent
from batch_jobs.local_executor import LocalLauncher
from core.config import Settings
from core.status import open_status
from core.status.model import JobState
from core.storage.local import LocalStore
from tests.face_models import FRAME_H, FRAME_W, build_swapper, two_people, write_catalog
from tests.indexed_video import make_indexed_video
from tests.media_fixtures import encode_frames

ROOT = Path(__file__).resolve().parent.parent
SWAP = """\
version: 1
inputs: [talk.mp4]
chain:
  - swap: {analyser: broken_faces, model: test_swapper, source: faces/astronaut.png}
output: {preset: ultrafast}
compute: {gpu: none, chunk_seconds: 1, max_retries: 0}
"""
CROP = (
    'version: 1\ninputs: [clip.mp4]\nchain: [{crop: {aspect: "1:1"}}]\n'
    "output: {preset: ultrafast}\ncompute: {chunk_seconds: 1}\n"
)


def garbage_model_store(folder: Path, detector: str = "html") -> Path:
    """A store whose analyser pack holds a detector no runtime can use: bytes that are not
    ONNX (a failed download saved from an HTML error page), or a real ONNX model of another
    kind (the swapper saved under the detector's name)."""
    folder.mkdir(parents=True)
    build_swapper(folder / "test_swapper.onnx")
    if detector == "html":
        (folder / "broken_det.onnx").write_bytes(b"<html>rate limited</html>\n" * 40)
    else:
        (folder / "broken_det.onnx").write_bytes((folder / "test_swapper.onnx").read_bytes())
    (folder / "broken_rec.onnx").write_bytes(b"\x08\x07" + os.urandom(2000))

    write_catalog(folder, "broken_faces", ("broken_det.onnx", "broken_rec.onnx"))
    return folder


@pytest.mark.parametrize("detector", ["html", "another-model"])
def test_a_model_that_will_not_load_ends_the_job_invalid_with_an_error_line(
    tmp_path: Path, detector: str
) -> None:
    folder = tmp_path / "inbox" / "job"
    (folder / "faces").mkdir(parents=True)
    encode_frames(folder / "talk.mp4", [two_people()] * 5, fps=25, size=(FRAME_W, FRAME_H))
    image = cv2.cvtColor(two_people(cameraman=False), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(folder / "faces" / "astronaut.png"), image)
    (folder / "manifest.yaml").write_text(SWAP)
    store = garbage_model_store(tmp_path / "models", detector)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DROPBATCH_MODEL_STORE": str(store),
        "DROPBATCH_MODEL_CACHE": str(tmp_path / "model-cache"),
        "DROPBATCH_CHECK_FACES": "1",
    }
    env.pop("DROPBATCH_LOCAL_ROOT", None)
    proc = subprocess.run(
        [sys.executable, "-m", "dropbatch.cli", "run", "--quiet", str(folder / "manifest.yaml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode == 2, proc.stderr
    assert "INVALID" in proc.stdout
    assert "error: chain[0].swap." in proc.stderr and "broken_faces" in proc.stderr
    mirror = json.loads((folder / "manifest.status.json").read_text())
    assert mirror["state"] == "INVALID"
    error = mirror["error"]
    # The model store's own check (MODEL_INCOMPATIBLE) or, for a failure it does not know,
    # the trigger's containment (MODEL_UNLOADABLE): either names the step and the file.
    assert error["code"] in ("MODEL_INCOMPATIBLE", "MODEL_CORRUPT", "MODEL_UNLOADABLE"), error
    assert error["field"].startswith("chain[0].swap.")
    assert "broken_det.onnx" in error["message"] + (error.get("uri") or "")


class FailingStore(LocalStore):
    """The real local store with a fault: reads under `broken` fail with EIO (a disk going
    bad, a bucket whose permissions were revoked) — every time, or the first `times` times;
    `writes_fail` breaks writes too."""

    def __init__(
        self, root: Path, broken: str, writes_fail: bool = False, times: int | None = None
    ) -> None:
        super().__init__(root)
        self.broken, self.writes_fail, self.times = broken, writes_fail, times
        self.calls = 0

    def _fault(self, name: str) -> None:
        if name.startswith(self.broken) and (self.times is None or self.calls < self.times):
            self.calls += 1
            raise OSError(errno.EIO, "Input/output error", name)

    def list(self, bucket: str, prefix: str = "", recursive: bool = True):
        self._fault(prefix)
        return super().list(bucket, prefix, recursive)

    def read_bytes(self, bucket: str, name: str, limit: int | None = None) -> bytes:
        self._fault(name)
        return super().read_bytes(bucket, name, limit)

    def write_bytes(self, bucket: str, name: str, data: bytes, **kwargs) -> object:
        if self.writes_fail:
            self._fault(name)
        return super().write_bytes(bucket, name, data, **kwargs)


@pytest.mark.parametrize("writes_fail", [False, True], ids=["reads-fail", "all-fail"])
def test_storage_that_keeps_failing_ends_the_job_failed(
    deployment: dict, writes_fail: bool
) -> None:
    settings = Settings.from_env()
    store = FailingStore(deployment["root"], "c1/", writes_fail=writes_fail)
    (deployment["inbox"] / "c1").mkdir()
    make_indexed_video(deployment["inbox"] / "c1" / "clip.mp4", 10, audio=False)
    (deployment["inbox"] / "c1" / "job.yaml").write_text(CROP)
    status = open_status(settings)
    intake = Intake(settings, store, status, LocalLauncher())
    generation = store.stat("inbox", "c1/job.yaml").generation
    [job_id] = intake.handle(StorageEvent("inbox", "c1/job.yaml", generation))
    record = status.get(job_id)
    assert record is not None and record.state == JobState.FAILED
    assert record.error is not None and record.error.code == "STORAGE_UNAVAILABLE"
    assert record.error.uri and record.error.uri.endswith("c1/job.yaml")
    assert "Input/output error" in record.error.message
    assert store.calls >= 3  # tried again before giving up: a passing fault is not fatal
    mirror = deployment["inbox"] / "c1" / "job.status.json"
    if writes_fail:
        assert not mirror.exists()  # nowhere to write it; the status store has the record
    else:
        assert json.loads(mirror.read_text())["error"]["code"] == "STORAGE_UNAVAILABLE"


def test_a_storage_fault_that_passes_costs_a_retry_not_the_job(deployment: dict) -> None:
    settings = Settings.from_env()
    store = FailingStore(deployment["root"], "c2/", times=2)
    (deployment["inbox"] / "c2").mkdir()
    (deployment["inbox"] / "c2" / "job.yaml").write_text(CROP)  # clip.mp4 comes later
    status = open_status(settings)
    intake = Intake(settings, store, status, LocalLauncher())
    generation = store.stat("inbox", "c2/job.yaml").generation
    [job_id] = intake.handle(StorageEvent("inbox", "c2/job.yaml", generation))
    record = status.get(job_id)
    assert store.calls == 2
    assert record is not None and record.state == JobState.WAITING_FOR_INPUTS, record.error
    assert record.error is None


POISON = {
    "bel": b"version: 1\ninputs: [clip.mp4]\n\x07chain: [{crop: {}}]\n",
    "bad-glob": b'version: 1\ninputs: ["a[]b.mp4"]\nchain: [{crop: {}}]\n',
}


@pytest.mark.parametrize("case", sorted(POISON))
def test_validate_and_run_print_an_error_line_for_a_poison_manifest(
    tmp_path: Path, case: str
) -> None:
    folder = tmp_path / "inbox" / "c"
    folder.mkdir(parents=True)
    (folder / "m.yaml").write_bytes(POISON[case])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DROPBATCH_LOCAL_ROOT", None)
    for command in ("validate", "run"):
        proc = subprocess.run(
            [sys.executable, "-m", "dropbatch.cli", command, str(folder / "m.yaml")],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert "Traceback" not in proc.stdout + proc.stderr, command
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
    assert "m.yaml: " in proc.stderr or "error: " in proc.stderr
    mirror = json.loads((folder / "m.status.json").read_text())
    assert mirror["state"] == "INVALID" and mirror["error"]["message"]


def test_a_plan_firestore_cannot_hold_ends_the_job_invalid(
    deployment: dict, firestore_emulator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim that records the plan (`transition` to QUEUED, as `Intake._launch` does)
    raises the real store's RecordTooLarge; containment ends the job on it."""
    import uuid

    from batch_jobs.containment import contain
    from core.domain import Plan, PlannedItem, VideoInfo
    from core.jobstatus import transition
    from core.status.base import RecordTooLarge
    from core.status.model import LAUNCHABLE_STATES, JobRecord

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator)
    status = open_status(
        Settings(
            status="firestore",
            project="dropbatch-test",
            firestore_collection=f"faults-{uuid.uuid4().hex[:12]}",
        )
    )
    store = LocalStore(deployment["root"])
    (deployment["inbox"] / "c").mkdir()
    (deployment["inbox"] / "c" / "job.yaml").write_text(CROP)
    generation = store.stat("inbox", "c/job.yaml").generation
    job_id = "db-c-job-toolarge"
    uri = store.uri("inbox", "c/job.yaml")
    status.create(JobRecord(job_id=job_id, bucket="inbox", manifest="c/job.yaml",
                            manifest_generation=generation, manifest_uri=uri))  # fmt: skip
    info = VideoInfo(duration=1, fps_num=30, fps_den=1, frame_count=30, width=64, height=64)
    noise = os.urandom(1 << 20).hex()  # 2 MiB that no compressor shrinks below 900 kB
    plan = Plan(
        items=[
            PlannedItem(index=0, video="c/clip.mp4", output="c/out/clip.mp4",
                        preview="c/out/clip.preview.jpg", info=info,
                        chain=[{"name": "crop", "options": {"note": noise}}])
        ]
    )  # fmt: skip
    with pytest.raises(RecordTooLarge) as raised:
        transition(store, status, job_id, JobState.QUEUED, allowed_from=LAUNCHABLE_STATES,
                   plan=plan)  # fmt: skip
    contain(store, status, job_id, ("inbox", "c/job.yaml", generation), raised.value)
    record = status.get(job_id)
    assert record is not None and record.state == JobState.INVALID
    assert record.error is not None and record.error.code == "JOB_TOO_LARGE"
    assert record.error.field == "inputs" and "split the manifest" in record.error.message
    mirror = json.loads((deployment["inbox"] / "c" / "job.status.json").read_text())
    assert mirror["state"] == "INVALID" and mirror["error"]["code"] == "JOB_TOO_LARGE"
