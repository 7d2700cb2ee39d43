"""A job that asks for a GPU runs its models on the GPU or stops at setup with
GPU_UNAVAILABLE: never a quiet CPU run. This machine has no GPU and the CPU-only onnxruntime,
so a `gpu: l4` job here is exactly the VM whose CUDA provider does not load."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import onnxruntime as ort
import pytest

from core.config import Settings
from core.status import open_status
from dropbatch.inbox import find_inbox
from dropbatch.samples import make_talking_video
from processors.crop.yolo_onnx import OnnxYoloDetector
from processors.gpu import GPU_UNAVAILABLE, GpuUnavailable, gpu_required_here
from processors.models.sessions import onnx_session
from tests.yolo_test_model import build

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = """\
version: 1
inputs: talk.mp4
chain: [{{crop: {{aspect: "9:16", detector: yolo-onnx, model: yolov8n}}}}]
output: {{preset: ultrafast, crf: 23}}
compute: {{gpu: {gpu}, chunk_seconds: 2, max_parallel_tasks: 2, max_retries: 3}}
"""
CPU_ONLY = "onnxruntime-gpu"  # what the reason tells a CPU-only onnxruntime to install


@pytest.fixture(scope="module")
def yolo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("models")
    build(store / "yolov8n.onnx")
    return store


def test_a_session_a_gpu_job_loads_without_cuda_names_the_file_and_onnxruntimes_reason(
    yolo: Path,
) -> None:
    assert "CUDAExecutionProvider" not in ort.get_available_providers()  # this machine
    with gpu_required_here(True), pytest.raises(GpuUnavailable) as raised:
        onnx_session(yolo / "yolov8n.onnx", ["CPUExecutionProvider"])
    error = raised.value
    assert error.code == GPU_UNAVAILABLE
    assert str(error).startswith("yolov8n.onnx: cannot run on the GPU: ")
    assert f"onnxruntime {ort.__version__}" in str(error) and CPU_ONLY in str(error)
    assert "compute.gpu: none" in str(error)  # what to do


def test_a_session_opened_before_the_gpu_was_required_is_not_handed_to_a_gpu_job(
    yolo: Path,
) -> None:
    session = onnx_session(yolo / "yolov8n.onnx", ["CPUExecutionProvider"])
    assert session.get_providers() == ["CPUExecutionProvider"]  # no GPU asked: the CPU
    with gpu_required_here(True), pytest.raises(GpuUnavailable):
        onnx_session(yolo / "yolov8n.onnx", ["CPUExecutionProvider"])


def test_a_steps_own_device_cpu_is_honoured_in_a_gpu_job(yolo: Path) -> None:
    with gpu_required_here(True):
        detector = OnnxYoloDetector(yolo / "yolov8n.onnx", device="cpu")
        assert not detector.on_gpu
        with pytest.raises(GpuUnavailable):  # `auto` may not quietly become the CPU
            OnnxYoloDetector(yolo / "yolov8n.onnx", device="auto")


def run_job(tmp_path: Path, yolo: Path, gpu: str) -> tuple[subprocess.CompletedProcess, float]:
    """`dropbatch run` on a 5 s video of a person with the yolo-onnx crop, as a user runs it."""
    folder = (
        tmp_path / "inbox" / "job"
    )  # `run` takes the folder as the bucket, its parent as the root
    folder.mkdir(parents=True)
    make_talking_video(folder / "talk.mp4", duration=5, fps=15, canvas=(640, 360), subject=240)
    (folder / "manifest.yaml").write_text(MANIFEST.format(gpu=gpu))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPBATCH_")}
    env.update(DROPBATCH_MODEL_STORE=str(yolo), PYTHONPATH=str(ROOT))
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "dropbatch.cli", "run", str(folder / "manifest.yaml")],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    return proc, time.monotonic() - started


def test_a_gpu_job_on_a_machine_without_cuda_fails_gpu_unavailable_at_setup(
    tmp_path: Path, yolo: Path
) -> None:
    proc, seconds = run_job(tmp_path, yolo, "l4")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "yolov8n.onnx: cannot run on the GPU" in proc.stderr  # the command's error line
    folder = tmp_path / "inbox" / "job"
    inbox = find_inbox(folder)  # the inbox `run` made of the manifest's folder
    assert inbox is not None
    status = open_status(Settings(**inbox.store_settings()))
    [record] = status.recent(1)
    assert record.state == "FAILED"
    assert record.error is not None and record.error.code == GPU_UNAVAILABLE
    assert "yolov8n.onnx: cannot run on the GPU" in record.error.message
    assert CPU_ONLY in record.error.message  # onnxruntime's reason, not a generic one
    # Never a CPU run: no chunk was processed, and no task was retried (max_retries 3).
    assert status.count_done(record.job_id) == 0 and record.outputs == []
    assert not (folder / "out").exists()
    tasks = status.progress(record.job_id)
    assert tasks and all(t.attempt == 0 and t.code == GPU_UNAVAILABLE for t in tasks)
    # The file beside the manifest says the same.
    summary = json.loads((folder / "manifest.status.json").read_text())
    assert summary["state"] == "FAILED" and summary["error"]["code"] == GPU_UNAVAILABLE
    assert "yolov8n.onnx: cannot run on the GPU" in summary["error"]["message"]
    # It fails within seconds, at setup: no model work, no retry (`bench/RESULTS.md`).
    print(f"gpu: l4 job on a CPU machine ended FAILED {GPU_UNAVAILABLE} in {seconds:.1f} s")
    assert seconds < 120
    # What the workers ran on is recorded once for the machine, as it is: no GPU.
    [machine] = record.machines
    assert machine.gpus == [] and machine.onnxruntime == ort.__version__
    assert machine.providers == ["CPUExecutionProvider"] and not machine.nvenc
    assert summary["machines"][0]["providers"] == ["CPUExecutionProvider"]


def test_status_shows_the_machines_a_job_ran_on(tmp_path: Path, yolo: Path) -> None:
    proc, _ = run_job(tmp_path, yolo, "none")  # a CPU job runs its models on the CPU
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = tmp_path / "inbox/job/manifest.yaml"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "dropbatch.cli", "status", str(manifest)]
    text = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    [line] = [x for x in text.splitlines() if x.startswith("  machine ")]
    assert f"no GPU; onnxruntime {ort.__version__} on CPUExecutionProvider; NVENC no" in line
    shown = json.loads(
        subprocess.run(
            [*command, "--json"], capture_output=True, text=True, env=env, check=True
        ).stdout
    )
    [machine] = shown["machines"]
    assert machine["gpus"] == [] and machine["onnxruntime"] == ort.__version__
    assert machine["host"] and machine["machine"]
    assert shutil.which("ffmpeg")  # the facts' NVENC "no" is a probe's answer, not a gap
