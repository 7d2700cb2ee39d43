"""ONNX Runtime provider lists with the TensorRT caches in the VM's shared model folder.

TensorRT builds an engine for each model (and input shape) the first time a session runs it:
minutes for the larger networks. The engine and its timing cache are written under the model
cache (`DROPBATCH_MODEL_CACHE`; on Cloud Batch the host folder every task on the VM mounts,
batch_jobs/cloud_batch.py), so only a VM's first worker pays the build and every later
worker, chunk or retry on that VM loads the engine. ONNX Runtime keys the cached engines by
the model and the TensorRT version, so a changed model builds anew instead of loading a stale
engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

TENSORRT = "TensorrtExecutionProvider"
ENGINE_FOLDER = "tensorrt-engines"


def engine_cache(cache: Path | None = None) -> Path:
    """Where TensorRT engines and timing caches live: beside the verified model copies."""
    if cache is None:
        from processors.models.cache import default_cache

        cache = default_cache()
    return cache / ENGINE_FOLDER


def session_providers(
    providers: Sequence[str], cache: Path | None = None
) -> list[str | tuple[str, dict[str, str]]]:
    """`providers` as InferenceSession takes them, TensorRT with its caches switched on."""
    out: list[str | tuple[str, dict[str, str]]] = []
    for name in providers:
        if name != TENSORRT:
            out.append(name)
            continue
        folder = engine_cache(cache)
        folder.mkdir(parents=True, exist_ok=True)
        out.append(
            (
                name,
                {
                    "trt_engine_cache_enable": "True",
                    "trt_engine_cache_path": str(folder),
                    "trt_timing_cache_enable": "True",
                    "trt_timing_cache_path": str(folder),
                },
            )
        )
    return out
