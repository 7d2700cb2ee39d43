"""Whether this worker's models must run on the GPU, and the runtime's own reason when they
cannot.

A job whose compute asks for a GPU (`compute.gpu: l4`) must never run its models on the CPU
in silence: ONNX Runtime falls back to the CPU when its CUDA provider does not load, with only
a log line to say so, and torch reports "no CUDA" as plain False. The task declares the
requirement once for its process (`gpu_required_here`, as it bounds OpenCV's threads once);
every session (processors/models/sessions.py) and the ultralytics detector check it when they
load, and a model that cannot run on CUDA raises `GpuUnavailable`: a setup error with its own
status code, which ends the task with exit 2 (not retried) and the job FAILED with the reason.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from processors.spec import StepSetupError

GPU_UNAVAILABLE = "GPU_UNAVAILABLE"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)
# What to do, said once in every GpuUnavailable message.
ADVICE = (
    "the job's compute asks for a GPU (compute.gpu); run it where CUDA works, or set "
    "compute.gpu: none to run it on the CPU"
)

# Set by the task for its whole process: it runs one job, whose compute decides.
_required = False


class GpuUnavailable(StepSetupError):
    """A model of a job that asked for a GPU cannot run on it here; the message names the
    model file and the runtime's reason."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"{model}: cannot run on the GPU: {reason}; {ADVICE}", GPU_UNAVAILABLE)
        self.model = model
        self.reason = reason


def gpu_required() -> bool:
    """Whether the models this process loads must run on the GPU."""
    return _required


@contextlib.contextmanager
def gpu_required_here(required: bool) -> Iterator[None]:
    """Require the GPU (or not) for every model this process loads meanwhile. Process-wide on
    purpose: a model may be loaded on any thread of the worker (a detector loads on the
    first frames without faces), and a worker process runs one job."""
    global _required
    before, _required = _required, required
    try:
        yield
    finally:
        _required = before


def onnx_cuda_missing(ort: Any) -> str:
    """Why this onnxruntime offers no GPU provider at all, or "" when it offers one."""
    available = ort.get_available_providers()
    if any(p in available for p in GPU_PROVIDERS):
        return ""
    return (
        f"onnxruntime {ort.__version__} here is a build without CUDA (its providers: "
        f"{', '.join(available)}); the GPU needs the onnxruntime-gpu package"
    )


def onnx_cuda_load_error(ort: Any) -> str:
    """The error loading onnxruntime's CUDA provider library, as its dynamic loader gives it
    (the same words onnxruntime logs before it falls back to the CPU: a missing libcublas or
    libcudnn, say); "" when the library loads."""
    capi = Path(ort.__file__).parent / "capi"
    shared, cuda = (
        capi / "libonnxruntime_providers_shared.so",
        capi / "libonnxruntime_providers_cuda.so",
    )
    if not cuda.exists():
        return f"{cuda.name} is not in {capi}"
    try:
        # onnxruntime loads the shared bridge first, globally; the CUDA library links to it.
        ctypes.CDLL(str(shared), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(cuda))
    except OSError as exc:
        return f"onnxruntime cannot load {cuda.name}: {exc}"
    return ""


def onnx_fell_back(ort: Any, session: Any) -> str:
    """Why a session that was asked for a GPU provider came out without one ("" when it has
    one): the provider library's load error, else what the machine shows."""
    if any(p in session.get_providers() for p in GPU_PROVIDERS):
        return ""
    reason = onnx_cuda_load_error(ort) or (
        "onnxruntime loaded its CUDA provider but did not activate it (no usable GPU or "
        "driver: see its log above)"
    )
    return f"{reason} (the session has only {', '.join(session.get_providers())})"


def torch_cuda_missing(torch: Any) -> str:
    """Why torch cannot use CUDA here ("" when it can): a CPU-only build, or CUDA's own
    initialisation error (no driver, no device)."""
    if torch.cuda.is_available():
        return ""
    if getattr(torch.version, "cuda", None) is None:
        return f"torch {torch.__version__} is a build without CUDA"
    try:
        torch.cuda.init()
    except Exception as exc:  # torch's own words: "Found no NVIDIA driver on your system…"
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}): {exc}"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device"
