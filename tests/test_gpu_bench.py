"""bench/gpu.py, the prepared GPU run: where there is no GPU it measures nothing and says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from gpu import EXIT_NO_GPU, NO_GPU, kind_name, ort_wheel  # noqa: E402


def test_without_a_gpu_it_says_so_and_fails(tmp_path: Path) -> None:
    # A PATH with no nvidia-smi: what a machine without the NVIDIA driver has.
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--out", str(tmp_path / "gpu.json")],
        env={"PATH": str(tmp_path), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == EXIT_NO_GPU, run.stdout + run.stderr
    assert run.stdout.splitlines()[-1].startswith(NO_GPU), run.stdout
    assert "nothing measured" in run.stdout
    assert not (tmp_path / "gpu.json").exists()


def test_the_gpu_names_its_column() -> None:
    assert kind_name("NVIDIA L4") == "l4"
    assert kind_name("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def test_a_carried_wheel_is_taken_only_for_its_cuda(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DROPBATCH_WHEELS", str(tmp_path))
    (tmp_path / "onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_27_x86_64.whl").write_bytes(b"")
    assert ort_wheel("13.0").name.startswith("onnxruntime_gpu-1.31.1")
    assert ort_wheel("12.4") is None  # 1.27 and later are CUDA 13 builds
    (tmp_path / "onnxruntime_gpu-1.26.0-cp312-cp312-manylinux_2_27_x86_64.whl").write_bytes(b"")
    assert ort_wheel("12.4").name.startswith("onnxruntime_gpu-1.26.0")
