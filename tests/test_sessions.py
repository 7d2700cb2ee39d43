"""TensorRT engines are cached in the VM's shared model folder: the folder the Batch Job mounts
into every task as DROPBATCH_MODEL_CACHE, so a VM's first worker builds and later ones load."""

from __future__ import annotations

from pathlib import Path

import onnxruntime
import pytest

from batch_jobs.cloud_batch import MODEL_CACHE_MOUNT, task_environment
from dropbatch.config import Settings
from dropbatch.status.model import JobRecord
from processors.sessions import ENGINE_FOLDER, TENSORRT, engine_cache, session_providers


def test_tensorrt_gets_its_engine_and_timing_caches_in_the_model_cache(tmp_path: Path) -> None:
    chosen = session_providers(
        [TENSORRT, "CUDAExecutionProvider", "CPUExecutionProvider"], tmp_path
    )
    (name, options), *rest = chosen
    assert name == TENSORRT and rest == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    folder = tmp_path / ENGINE_FOLDER
    assert folder.is_dir()
    assert options["trt_engine_cache_enable"] == "True"
    assert options["trt_engine_cache_path"] == options["trt_timing_cache_path"] == str(folder)


def test_on_batch_the_engines_land_in_the_vms_shared_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = JobRecord(
        job_id="db-x", bucket="b", manifest="m.yaml", manifest_generation=1, manifest_uri="gs://b/m"
    )
    for key, value in task_environment(record, Settings()).items():
        monkeypatch.setenv(key, value)
    assert engine_cache() == Path(MODEL_CACHE_MOUNT) / ENGINE_FOLDER


def test_without_tensorrt_the_list_is_unchanged_and_a_real_session_opens(tmp_path: Path) -> None:
    from tests.yolo_test_model import build  # a real ONNX graph, built here

    providers = session_providers(["CPUExecutionProvider"], tmp_path)
    assert providers == ["CPUExecutionProvider"] and not (tmp_path / ENGINE_FOLDER).exists()
    model = build(tmp_path / "m.onnx")
    session = onnxruntime.InferenceSession(str(model), providers=providers)
    assert session.get_providers() == ["CPUExecutionProvider"]
