"""ONNX Runtime sessions, loaded once per process.

A worker (batch_jobs/task.py) builds a fresh chain for every chunk it claims, because the
steps keep per-chunk state (camera path, face tracks); their models are what is expensive to
set up, so every step opens them here and a second chunk, or a second item with the same
models, reuses the session. A session is keyed by the file (path, size, modification time),
the providers and the options, so a changed file or another provider list gets its own.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from processors.sessions import session_providers

_sessions: dict[tuple, Any] = {}
_lock = threading.Lock()


def onnx_session(
    path: Path | str,
    providers: list[Any],
    *,
    spinning: bool = True,
    log_severity: int | None = None,
) -> Any:
    """An `onnxruntime.InferenceSession` for the file, shared by every caller in this process
    that asks for the same file, providers and options. Raises what onnxruntime raises."""
    import onnxruntime as ort

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
            # TensorRT, when asked for, with its engine caches in the VM's shared model folder.
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=session_providers(providers)
            )
            _sessions[key] = session
        return session


def loaded_sessions() -> int:
    """How many distinct sessions this process holds (what the workers bench reports)."""
    with _lock:
        return len(_sessions)
