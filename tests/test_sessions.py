"""TensorRT engines are cached in the VM's shared model folder: the folder the Batch Job mounts
into every task as DROPBATCH_MODEL_CACHE, so a VM's first worker builds and later ones load."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnxruntime
import pytest

from batch_jobs.cloud_batch import MODEL_CACHE_MOUNT, task_environment
from core.config import Settings
from core.status.model import JobRecord
from processors.sessions import ENGINE_FOLDER, TENSORRT, engine_cache, session_providers

# ONNX Runtime's own names and parsing for TensorRT provider options (onnxruntime's
# core/providers/tensorrt/tensorrt_execution_provider_info.cc: its ProviderOptionsParser
# refuses any other key; core/common/parse_string.h: the only spellings a bool option takes).
# The CPU build in this suite never parses them (it warns that TensorRT is not available and
# drops the entry), so the keys and values are checked against these, and the entry's shape
# by a real session below.
ORT_TENSORRT_PATH_OPTIONS = {"trt_engine_cache_path", "trt_timing_cache_path"}
ORT_TENSORRT_BOOL_OPTIONS = {
    "trt_engine_cache_enable", "trt_timing_cache_enable", "trt_fp16_enable", "trt_int8_enable",
    "trt_dump_subgraphs", "trt_force_timing_cache", "trt_detailed_build_log",
}  # fmt: skip
ORT_BOOL_SPELLINGS = {"0", "1", "False", "True", "false", "true"}


def open_strictly(model: Path, providers: list) -> tuple[onnxruntime.InferenceSession, list[str]]:
    """A real session as a GPU worker opens one (processors/models/sessions.py): without
    onnxruntime's silent retry on the CPU, so a provider entry it refuses raises. Returns the
    session and onnxruntime's warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = onnxruntime.InferenceSession(str(model), providers=providers, enable_fallback=0)
    return session, [str(w.message) for w in caught]


def test_tensorrt_gets_its_engine_and_timing_caches_in_the_model_cache(tmp_path: Path) -> None:
    from tests.yolo_test_model import build  # a real ONNX graph, built here

    chosen = session_providers(
        [TENSORRT, "CUDAExecutionProvider", "CPUExecutionProvider"], tmp_path
    )
    (name, options), *rest = chosen
    assert name == TENSORRT and rest == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    # Options ONNX Runtime knows, in the form its parser takes: strings, bools spelled its way,
    # both caches switched on and pointing at one existing folder in the model cache.
    assert set(options) <= ORT_TENSORRT_PATH_OPTIONS | ORT_TENSORRT_BOOL_OPTIONS, options
    assert all(isinstance(v, str) for v in options.values())
    bools = {k: v for k, v in options.items() if k in ORT_TENSORRT_BOOL_OPTIONS}
    assert set(bools.values()) <= ORT_BOOL_SPELLINGS
    assert bools["trt_engine_cache_enable"] in {"1", "True", "true"}
    assert bools["trt_timing_cache_enable"] in {"1", "True", "true"}
    folder = tmp_path / ENGINE_FOLDER
    assert folder.is_dir()
    assert {options[k] for k in ORT_TENSORRT_PATH_OPTIONS} == {str(folder)}
    # The list as a real InferenceSession takes it: a provider name onnxruntime knows, entries
    # of the (name, options) shape. Where TensorRT is not built in it is dropped with a warning
    # and the session runs on the next provider it has.
    model = build(tmp_path / "m.onnx")
    session, warned = open_strictly(model, [(name, options), "CPUExecutionProvider"])
    assert session.get_providers()[-1] == "CPUExecutionProvider"
    if TENSORRT not in onnxruntime.get_available_providers():
        assert session.get_providers() == ["CPUExecutionProvider"]
        assert [w for w in warned if TENSORRT not in w] == []


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
