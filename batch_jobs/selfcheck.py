"""`python -m batch_jobs.selfcheck`: what a task needs from its VM and image, checked where the
task would run. `dropbatch doctor` launches it as a one-task job (the task's own Job, command
swapped) and reads its report back from the status store under the job's id.

Checks: the GPU is visible, an onnxruntime session opens (on CUDA when a GPU is expected),
ffmpeg encodes a few frames (and ffprobe reads them back), the model cache is writable. Each
result says what to fix. Run by hand in the image
(`docker run --entrypoint python IMAGE -m batch_jobs.selfcheck`), it prints the same results
without a status store.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any

from core import logs
from core.config import Settings
from core.logs import event
from core.status.model import CheckReport, CheckResult, MachineFacts

log = logging.getLogger("dropbatch.selfcheck")

# The compute the checked job asks for (`l4` or `none`), set by `dropbatch doctor` on the Job:
# with `none`, no GPU is expected and onnxruntime is checked on the CPU.
GPU_ENV = "DROPBATCH_SELFCHECK_GPU"
SELFCHECK_COMMANDS = ("-m", "batch_jobs.selfcheck")

# y = x + x over a [1, 4] float tensor: an ONNX model (IR 7, opset 13) small enough to carry
# here, so the check needs neither the `onnx` package nor a model store.
# tests/test_doctor.py rebuilds it with onnx.helper and compares.
ADD_MODEL = base64.b64decode(
    "CAcSCWRyb3BiYXRjaDpFCg4KAXgKAXgSAXkiA0FkZBIJc2VsZmNoZWNrWhMKAXgSDgoMCAESCAoCCAEKAggEYhMK"
    "AXkSDgoMCAESCAoCCAEKAggEQgQKABAN"
)
CUDA = "CUDAExecutionProvider"
ENCODE_FRAMES = 8


def _nvidia_smi(*args: str) -> str:
    """nvidia-smi's output, "" where there is none (no nvidia-smi in the image, no driver)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return ""
    try:
        return subprocess.run([smi, *args], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def check_gpu(expect_gpu: bool) -> CheckResult:
    """A GPU this process can reach: `nvidia-smi -L`, else its /dev/nvidia* devices (the
    host's /proc/driver/nvidia would show GPUs a container was not given)."""
    listed = _nvidia_smi("-L").splitlines()
    seen = [line.strip() for line in listed if line.startswith("GPU ")]
    if not seen:  # no nvidia-smi in the image: the device nodes the container was given
        seen = sorted(str(p) for p in Path("/dev").glob("nvidia[0-9]*"))
    if seen:
        return CheckResult(name="gpu", ok=True, detail="; ".join(seen))
    if not expect_gpu:
        return CheckResult(name="gpu", ok=True, detail="no GPU (none expected)")
    return CheckResult(
        name="gpu",
        ok=False,
        detail="no GPU visible (no nvidia-smi output, no /dev/nvidia0…)",
        fix="the job's VM has no working GPU driver: check the Batch job's accelerator and "
        "install_gpu_drivers (or, with gpu_driver_preinstalled, that the boot image was built "
        "with infra/boot-image/), the region's L4 quota, and that the pinned driver branch "
        "runs the image's CUDA (batch_jobs/cloud_batch.py, GPU_DRIVER_VERSION)",
    )


def check_onnxruntime(expect_gpu: bool) -> CheckResult:
    """A session opens and runs on CUDA when a GPU is expected, else on the CPU."""
    name = "onnxruntime"
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as exc:
        return CheckResult(
            name=name,
            ok=False,
            detail=str(exc),
            fix="install onnxruntime-gpu in the image (pip install '.[gpu]'), or onnxruntime "
            "for a CPU deployment ('.[cpu]')",
        )
    # CUDA whenever this onnxruntime has it (as the chain chooses); required only if expected.
    available = ort.get_available_providers()
    try:
        session = probe_session(ort)
        [out] = session.run(None, {"x": np.arange(4, dtype=np.float32)[None]})
    except Exception as exc:  # the runtime's own errors: one line for the checklist
        return CheckResult(
            name=name,
            ok=False,
            detail=f"session failed: {exc}",
            fix="the image's onnxruntime cannot run a model: rebuild it from Dockerfile.gpu",
        )
    used = session.get_providers()[0]
    if out.tolist() != [[0.0, 2.0, 4.0, 6.0]]:
        return CheckResult(name=name, ok=False, detail=f"{used} computed {out.tolist()}")
    if expect_gpu and used != CUDA:
        return CheckResult(
            name=name,
            ok=False,
            detail=f"ran on {used}, not CUDA (onnxruntime {ort.__version__}: "
            f"{', '.join(available)})",
            fix="the CUDA provider did not load: the image needs onnxruntime-gpu (not "
            "onnxruntime) built for its CUDA and cuDNN, and a visible GPU",
        )
    return CheckResult(name=name, ok=True, detail=f"onnxruntime {ort.__version__} on {used}")


def probe_session(ort: Any) -> Any:
    """A session of the tiny model on CUDA where this onnxruntime offers it, else the CPU:
    its `get_providers()` says what a model actually runs on here."""
    available = ort.get_available_providers()
    wanted = [p for p in (CUDA, "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(ADD_MODEL, providers=wanted)


def machine_facts(machine: str) -> MachineFacts:
    """What machine `machine` has for a job's workers (the job record keeps one per
    machine): GPUs, driver and CUDA (nvidia-smi), onnxruntime and the providers a session
    gets, whether ffmpeg encodes with NVENC and decodes with NVDEC. Whatever is absent is
    recorded as absent, never as an error: the facts are what the worker saw."""
    from processors.media.encoders import decode_args, nvenc_available

    facts = MachineFacts(machine=machine, host=socket.gethostname())
    for line in _nvidia_smi(
        "--query-gpu=name,driver_version", "--format=csv,noheader"
    ).splitlines():
        name, _, driver = line.rpartition(",")
        if name.strip():
            facts.gpus.append(name.strip())
            facts.driver = driver.strip()
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", _nvidia_smi()) if facts.gpus else None
    facts.cuda = cuda.group(1) if cuda else ""
    try:
        import onnxruntime as ort
    except ImportError:  # the default install has none; a chain that needs it says so itself
        ort = None
    if ort is not None:
        facts.onnxruntime = ort.__version__
        try:
            facts.providers = list(probe_session(ort).get_providers())
        except Exception as exc:  # installed, yet no session opens: recorded as it is
            event(log, "machine facts: no onnxruntime session", logging.WARNING, reason=str(exc))
    try:
        facts.nvenc = nvenc_available()
        facts.nvdec = "-hwaccel" in decode_args()
    except Exception as exc:  # no ffmpeg: the task's own encode says so, with its reason
        event(log, "machine facts: ffmpeg not probed", logging.WARNING, reason=str(exc))
    return facts


def check_ffmpeg(threads: int | None = None) -> CheckResult:
    """ffmpeg encodes a few frames through the task's own writer; ffprobe reads them back."""
    import numpy as np

    from processors.media.frames import EncodeSettings, FrameWriter
    from processors.media.probe import probe

    fix = "install ffmpeg (with ffprobe and libx264) in the image and keep it on PATH"
    try:
        with tempfile.TemporaryDirectory(prefix="dropbatch-selfcheck-") as folder:
            path = Path(folder) / "check.mp4"
            writer = FrameWriter(
                path,
                width=64,
                height=64,
                rate=Fraction(25),
                settings=EncodeSettings(preset="ultrafast", threads=threads),
            )
            writer.write(np.full((ENCODE_FRAMES, 64, 64, 3), 128, np.uint8))
            writer.close()
            info = probe(str(path))
    except Exception as exc:  # MediaError or OSError: either way ffmpeg is not usable
        return CheckResult(name="ffmpeg", ok=False, detail=str(exc), fix=fix)
    if info.frame_count != ENCODE_FRAMES:
        return CheckResult(
            name="ffmpeg",
            ok=False,
            detail=f"encoded {ENCODE_FRAMES} frames, read back {info.frame_count}",
            fix=fix,
        )
    return CheckResult(name="ffmpeg", ok=True, detail=f"encoded {ENCODE_FRAMES} frames (H.264)")


def check_model_cache(settings: Settings) -> CheckResult:
    """The folder tasks keep verified models in takes a file, as the task's user."""
    from processors.models.store import default_cache

    cache = default_cache(settings)
    probe_file = cache / f".selfcheck-{uuid.uuid4().hex}"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        probe_file.write_bytes(b"dropbatch")
        probe_file.unlink()
    except OSError as exc:
        return CheckResult(
            name="model cache",
            ok=False,
            detail=f"{cache}: {exc.strerror or exc}",
            fix=f"make {cache} writable by the task's user (uid {os.getuid()}): on Batch the "
            "Job's first runnable creates the VM's folder for the image's user; or set "
            "DROPBATCH_MODEL_CACHE to a writable folder",
        )
    return CheckResult(name="model cache", ok=True, detail=f"{cache} is writable")


def run_checks(settings: Settings, expect_gpu: bool) -> list[CheckResult]:
    threads = settings.task_threads or None
    return [
        check_gpu(expect_gpu),
        check_onnxruntime(expect_gpu),
        check_ffmpeg(threads),
        check_model_cache(settings),
    ]


def main() -> int:
    logs.setup()
    settings = Settings.from_env()
    check_id = os.environ.get("DROPBATCH_JOB_ID", "")
    expect_gpu = os.environ.get(GPU_ENV, "l4") != "none"
    results = run_checks(settings, expect_gpu)
    for r in results:
        level = logging.INFO if r.ok else logging.ERROR
        event(log, "self-check", level, check=r.name, ok=r.ok, detail=r.detail, fix=r.fix)
    report = CheckReport(
        check_id=check_id, host=socket.gethostname(), finished=True, results=results
    )
    if check_id:
        from core.status import open_status

        open_status(settings).put_check(report)
    else:  # by hand: the results are the output
        for r in results:
            print(f"{'ok' if r.ok else 'FAIL':<5} {r.name:<12} {r.detail}")
            if r.fix:
                print(f"{'':<5} {'fix:':<12} {r.fix}")
    # Non-zero on any failure, so the Batch job's own state says so too (it is not retried:
    # the doctor's job allows no retries).
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
