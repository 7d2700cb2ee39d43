"""`dropbatch doctor` end to end: against a Google Cloud deployment stood in by fake-gcs-server,
the Firestore emulator and the Batch stand-in (which runs the self-check job's own command on
this CPU machine), and against the embedded default (a folder, SQLite, the local executor).
It passes on a healthy deployment and names each broken part, with its fix, on a broken one."""

from __future__ import annotations

import hashlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropbatch.cli import main
from tests.batch_standin import BatchStandin

ROOT = Path(__file__).resolve().parent.parent
HEALTHY = (
    "version: 1\ninputs: [clip.mp4]\n"
    "chain: [{crop: {detector: yolo-onnx, model: yolo11n}}]\ncompute: {gpu: none}\n"
)
# The default compute (an L4) on a machine without one, and a model nobody uploaded.
BROKEN = "version: 1\ninputs: [clip.mp4]\nchain: [{crop: {detector: yolo-onnx, model: yolov8n}}]\n"


def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No DROPBATCH_* or config file of the machine running the tests."""
    for key in [k for k in os.environ if k.startswith("DROPBATCH_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "laptop-cache"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def doctor(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, dict[str, list[str]]]:
    """Exit code and the checklist: check name → its lines ("ok …"/"FAIL …", then "fix: …")."""
    code = main(["doctor", "--timeout", "120", *args])
    lines: dict[str, list[str]] = {}
    last = ""
    captured = capsys.readouterr()
    print(captured.err, file=sys.stderr)  # shown when the test fails
    for line in captured.out.splitlines():
        words = line.split(maxsplit=1)
        if words and words[0] in ("ok", "FAIL"):
            last = line[len("  ok    ") :].split("  ")[0].strip()
            lines.setdefault(last, []).append(line.strip())
        elif words and words[0] == "fix:":
            lines[last].append(line.strip())
    return code, lines


@pytest.fixture
def cloud_deployment(
    gcs_emulator: str,
    firestore_emulator: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    real_asset,
) -> Iterator[dict]:
    from core.storage.gcs import GcsStore

    clean_env(monkeypatch, tmp_path)
    emulators = {
        "STORAGE_EMULATOR_HOST": gcs_emulator,
        "FIRESTORE_EMULATOR_HOST": firestore_emulator,
    }
    for key, value in emulators.items():
        monkeypatch.setenv(key, value)
    store = GcsStore(project="acme-video")
    inbox, work, models = (
        f"{what}-{uuid.uuid4().hex[:10]}" for what in ("inbox", "work", "models")
    )
    for bucket in (inbox, work, models):
        store.client.create_bucket(bucket)
    # A real model, its hash pinned by the store's own catalog (the packaged one leaves it open).
    yolo = real_asset("yolo11n.onnx")
    digest = hashlib.sha256(yolo.read_bytes()).hexdigest()
    store.upload_file(models, "store/yolo11n.onnx", yolo)
    catalog = (
        "models:\n  yolo11n:\n    step: crop\n    files: [yolo11n.onnx]\n"
        f"    sha256: {{yolo11n.onnx: {digest}}}\n"
    )
    store.write_bytes(models, "store/catalog.yaml", catalog.encode())
    standin = BatchStandin(vm_env=emulators)
    standin.start()
    settings = {
        "STORAGE": "gcs",
        "STATUS": "firestore",
        "FIRESTORE_COLLECTION": f"doctor-{uuid.uuid4().hex[:10]}",
        "PROJECT": "acme-video",
        "LAUNCHER": "batch",
        "REGION": "us-central1",
        "IMAGE": "us-central1-docker.pkg.dev/acme-video/dropbatch/task@sha256:" + "0" * 64,
        "JOB_SERVICE_ACCOUNT": "dropbatch-job@acme-video.iam.gserviceaccount.com",
        "NOTIFICATION_TOPIC": "projects/acme-video/topics/dropbatch-batch-state",
        "MODEL_STORE": f"gs://{models}/store/",
        "WORK_BUCKET": work,
        "BATCH_EMULATOR_HOST": standin.endpoint,
    }
    for key, value in settings.items():
        monkeypatch.setenv(f"DROPBATCH_{key}", value)
    (tmp_path / "healthy.yaml").write_text(HEALTHY)
    (tmp_path / "broken.yaml").write_text(BROKEN)
    try:
        yield {
            "inbox": inbox,
            "work": work,
            "standin": standin,
            "tmp": tmp_path,
            "emulators": emulators,
        }
    finally:
        standin.stop()


def test_doctor_passes_on_a_healthy_cloud_deployment_and_names_each_broken_part(
    cloud_deployment: dict, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = cloud_deployment
    tmp, standin = deployment["tmp"], deployment["standin"]
    code, lines = doctor(capsys, "--inbox", f"gs://{deployment['inbox']}/", "--manifest",
                         str(tmp / "healthy.yaml"))  # fmt: skip
    assert code == 0, lines
    assert all(line[0].startswith("ok") for line in lines.values()), lines
    assert "sha256 verified" in lines["model"][0] and "yolo11n.onnx present" in lines["model"][0]
    for name in ("gpu", "onnxruntime", "ffmpeg", "model cache"):
        assert name in lines, f"the self-check reported no {name!r} line: {lines}"
    # What reached Batch is the task's Job with the self-check as its command.
    [request] = standin.requests
    spec = request.job.task_groups[0].task_spec
    assert spec.runnables[-1].container.commands == ["-m", "batch_jobs.selfcheck"]
    assert request.job.task_groups[0].task_count == 1 and spec.max_retry_count == 0

    assert lines["work bucket"][0].endswith(f"gs://{deployment['work']}/ answers")

    # Now break it: buckets that are not there, a model nobody uploaded, and VMs whose image
    # lacks ffmpeg and whose model cache cannot be created.
    monkeypatch.setenv("DROPBATCH_WORK_BUCKET", "no-such-work")
    (tmp / "not-a-folder").write_text("")
    monkeypatch.setenv("DROPBATCH_MODEL_CACHE", str(tmp / "not-a-folder" / "models"))
    empty_bin = tmp / "bin"
    empty_bin.mkdir()
    standin.vm_env = {**deployment["emulators"], "PATH": str(empty_bin)}
    code, lines = doctor(capsys, "--inbox", "gs://no-such-inbox/", "--manifest",
                         str(tmp / "broken.yaml"))  # fmt: skip
    assert code == 1
    failed = {name for name, got in lines.items() if got[0].startswith("FAIL")}
    assert failed == {
        "inbox bucket", "work bucket", "model", "gpu", "onnxruntime", "ffmpeg", "model cache"
    }  # fmt: skip
    assert lines["status store"][0].startswith("ok") and lines["self-check job"][0].startswith("ok")
    assert "gs://no-such-inbox/: no such bucket" in lines["inbox bucket"][0]
    assert "gs://no-such-work/: no such bucket" in lines["work bucket"][0]
    assert "yolov8n: yolov8n.onnx missing" in lines["model"][0]
    # ffmpeg or ffprobe, whichever it misses first: imageio-ffmpeg (dev extra) brings an ffmpeg
    # without an ffprobe when none is on PATH.
    assert any(f"{tool} is not installed" in lines["ffmpeg"][0] for tool in ("ffmpeg", "ffprobe"))
    assert "not-a-folder/models" in lines["model cache"][0]
    assert "no GPU visible" in lines["gpu"][0]
    for name in failed:
        assert lines[name][1].startswith("fix: "), lines[name]
    assert standin.requests[-1].job.allocation_policy.instances[0].policy.accelerators


def test_doctor_passes_on_the_embedded_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    clean_env(monkeypatch, tmp_path)
    monkeypatch.setenv("DROPBATCH_LOCAL_ROOT", str(tmp_path / "root"))
    (tmp_path / "root" / "inbox").mkdir(parents=True)
    code, lines = doctor(capsys, "--inbox", "inbox")
    assert code == 0, lines
    assert set(lines) == {
        "inbox bucket", "status store", "model store", "self-check job",
        "gpu", "onnxruntime", "ffmpeg", "model cache",
    }  # fmt: skip
    assert str(tmp_path / "root" / ".dropbatch" / "status.sqlite") in lines["status store"][0]

    # A status store that cannot open: named, and no self-check is launched whose report
    # could never come back; a model store folder that is not there.
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("DROPBATCH_SQLITE_PATH", str(tmp_path / "a-file" / "status.sqlite"))
    monkeypatch.setenv("DROPBATCH_MODEL_STORE", str(tmp_path / "no-models"))
    code, lines = doctor(capsys, "--inbox", "inbox")
    assert code == 1
    assert lines["status store"][0].startswith("FAIL") and "a-file" in lines["status store"][0]
    assert (
        lines["model store"][0].startswith("FAIL") and "no such folder" in lines["model store"][0]
    )
    assert lines["self-check job"][0].startswith("FAIL  self-check job   not run")
    assert lines["inbox bucket"][0].startswith("ok")


def test_the_self_checks_onnx_model_is_x_plus_x_built_by_onnx_helper() -> None:
    """batch_jobs/selfcheck.py carries its model as bytes (the image has no `onnx`)."""
    import onnx
    from onnx import TensorProto, helper

    from batch_jobs.selfcheck import ADD_MODEL

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "selfcheck", [x], [y])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="dropbatch"
    )
    model.ir_version = 7
    carried = onnx.load_from_string(ADD_MODEL)
    onnx.checker.check_model(carried)
    assert carried == model
