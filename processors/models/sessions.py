"""ONNX Runtime sessions, loaded once per process.

A worker (batch_jobs/task.py) builds a fresh chain for every chunk it claims, because the
steps keep per-chunk state (camera path, face tracks); their models are what is expensive to
set up, so every step opens them here and a second chunk, or a second item with the same
models, reuses the session. A session is keyed by the file (path, size, modification time),
the providers and the options, so a changed file or another provider list gets its own.

When the worker's job asks for a GPU (processors/gpu.py), a session must come out with CUDA
or TensorRT active: ONNX Runtime would otherwise fall back to the CPU with only a log line.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.logs import event
from processors.gpu import (
    CUDA,
    GPU_PROVIDERS,
    GpuUnavailable,
    gpu_required,
    onnx_cuda_missing,
    onnx_fell_back,
)
from processors.sessions import session_providers

log = logging.getLogger("dropbatch.models")

_sessions: dict[tuple, Any] = {}
_lock = threading.Lock()


def onnx_session(
    path: Path | str,
    providers: list[Any],
    *,
    spinning: bool = True,
    log_severity: int | None = None,
    cpu_by_choice: bool = False,
) -> Any:
    """An `onnxruntime.InferenceSession` for the file, shared by every caller in this process
    that asks for the same file, providers and options. Raises what onnxruntime raises, and
    `GpuUnavailable` when the process requires the GPU and the session is not on it (unless
    the step's own options chose the CPU: `cpu_by_choice`)."""
    import onnxruntime as ort

    on_gpu = gpu_required() and not cpu_by_choice
    if on_gpu:
        missing = onnx_cuda_missing(ort)
        if missing:
            raise GpuUnavailable(Path(path).name, missing)
        if not any(_name(p) in GPU_PROVIDERS for p in providers):
            providers = [CUDA, *providers]
    stat = os.stat(path)
    key = (
        os.path.realpath(path),
        stat.st_size,
        stat.st_mtime_ns,
        repr(providers),
        spinning,
        log_severity,
    )
    with _lock:
        session = _sessions.get(key)
        if session is None:
            options = ort.SessionOptions()
            if not spinning:
                # Idle worker threads would otherwise spin between runs, taking the CPU the
                # decoder thread and the rest of the chain need.
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            if log_severity is not None:
                options.log_severity_level = log_severity
            loading = time.perf_counter()
            session = _create(ort, path, options, providers, on_gpu)
            _sessions[key] = session
            # Once per file and process: a warm-pool worker logs it once however many jobs
            # it serves (tests count these).
            event(
                log,
                "model loaded",
                model=Path(path).name,
                seconds=round(time.perf_counter() - loading, 3),
                process=os.getpid(),
            )
    if on_gpu:  # a new session, or one this process opened before the GPU was required
        reason = onnx_fell_back(ort, session)
        if reason:
            raise GpuUnavailable(Path(path).name, reason)
    return session


def model_session(
    path: Path, providers: list[Any], unusable: Callable[[str], Exception], **options: Any
) -> Any:
    """`onnx_session` for a step's model file: a file onnxruntime cannot load is the file's
    fault, raised as `unusable(message)` naming it; `GpuUnavailable` is not (its own status
    code says what it is) and passes unchanged."""
    try:
        return onnx_session(path, providers, **options)
    except GpuUnavailable:
        raise
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise unusable(f"{path.name} cannot be loaded by onnxruntime: {exc}") from None


def describe_io(items: list[Any]) -> str:
    """A session's inputs or outputs as an error shows them: `name[d0,d1,…]`, comma-separated."""
    return ", ".join(f"{i.name}[{','.join(str(d) for d in i.shape)}]" for i in items)


def input_dtype(item: Any) -> type:
    """The numpy type to feed an input: a half-precision export takes float16 (onnxruntime does
    not convert), everything else float32."""
    import numpy as np

    return np.float16 if item.type == "tensor(float16)" else np.float32


def _name(provider: Any) -> str:
    return provider[0] if isinstance(provider, tuple) else provider


def _create(ort: Any, path: Path | str, options: Any, providers: list[Any], on_gpu: bool) -> Any:
    # TensorRT, when asked for, with its engine caches in the VM's shared model folder.
    chosen = session_providers(providers)
    if not on_gpu:
        return ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    try:
        # Without onnxruntime's own retry on the CPU, so a provider that fails says why.
        return ort.InferenceSession(
            str(path), sess_options=options, providers=chosen, enable_fallback=0
        )
    except Exception as exc:
        try:  # the file itself may be what fails: then that is the error to report
            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception:
            raise exc from None
        raise GpuUnavailable(Path(path).name, f"onnxruntime: {exc}") from None
