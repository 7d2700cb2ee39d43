"""One prepared GPU run: the per-step costs and the common chains on the GPU this machine has.

    python bench/gpu.py [--seconds 2] [--models .cache/cost-models] [--out bench/gpu-results.json]

Made for a lent machine with one NVIDIA GPU and no internet, to finish within 8 minutes:

1. `nvidia-smi` names the GPU and the driver's CUDA version. No GPU: it says so on a line
   starting `gpu: no NVIDIA GPU found` and exits 3, having measured nothing.
2. onnxruntime must offer CUDAExecutionProvider. If the installed one does not, a venv
   (`.cache/venv-ort-gpu`, the system's packages visible) gets onnxruntime-gpu from wheels
   carried in the repository tree (`wheels/`, or DROPBATCH_WHEELS): onnxruntime-gpu ≥ 1.27 for
   CUDA 13, 1.26 for CUDA 12 (PyPI's builds). With no internet there is nothing else to
   install from: with no matching wheel it says so on a line starting `gpu: no onnxruntime
   with CUDAExecutionProvider` (with the `pip download` to carry one) and exits 4.
3. Every model file of the bench store (the real YOLO11n, SCRFD-500m, ArcFace MBF; the
   swapper, restorer and Wav2Lip from `--models` where present, else the signature models)
   is timed alone on the CUDA provider and on TensorRT at fp32 and fp16; an fp16 result is
   kept only if its output is finite and not blank (not constant) — else `fp16: blank`.
4. NVDEC decode and NVENC encode at 1080p → 720×1280 with ffmpeg (`-hwaccel cuda`,
   `h264_nvenc`), frames per second.
5. bench/chain.py's per-step timings (one face and two) and the four chains, with swap's and
   enhance's `tensorrt: true` and crop's `device: cuda`.

It writes the JSON (`--out`) and the GPU's kind in processors/step_costs.yaml (`l4` on an
NVIDIA L4, else the name nvidia-smi gives, lower-cased with dashes), marked measured. Its last
line is bench/chain.py's `chain: …` line for this GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NO_GPU = "gpu: no NVIDIA GPU found"
NO_ORT = "gpu: no onnxruntime with CUDAExecutionProvider"
EXIT_NO_GPU, EXIT_NO_ORT = 3, 4
VENV = ROOT / ".cache" / "venv-ort-gpu"
IN_VENV = "DROPBATCH_GPU_BENCH_VENV"  # set when this script re-runs itself in the venv


def find_gpu() -> dict[str, str] | None:
    """The GPU's name, driver and CUDA version, from nvidia-smi; None when there is none."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        query = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        banner = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
    except (subprocess.SubprocessError, OSError):
        return None
    first = query.stdout.strip().splitlines()
    if not first:
        return None
    name, driver = (part.strip() for part in first[0].split(",", 1))
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", banner.stdout)
    return {"name": name, "driver": driver, "cuda": cuda.group(1) if cuda else ""}


def kind_name(gpu: str) -> str:
    """The table's VM kind for this GPU: `l4` for an L4 (the deployment's), else its name."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
    return "l4" if slug in ("nvidia-l4", "l4") else slug


def has_cuda_provider(python: str) -> bool:
    code = "import onnxruntime as o; print('CUDAExecutionProvider' in o.get_available_providers())"
    run = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    return run.returncode == 0 and run.stdout.strip() == "True"


def ort_wheel(cuda: str) -> Path | None:
    """A carried onnxruntime-gpu wheel built for this CUDA major version."""
    folder = Path(os.environ.get("DROPBATCH_WHEELS") or ROOT / "wheels")
    major = int(cuda.split(".")[0]) if cuda else 0
    for wheel in sorted(folder.glob("onnxruntime_gpu-*.whl"), reverse=True):
        version = tuple(int(x) for x in wheel.name.split("-")[1].split(".")[:2])
        if (major >= 13 and version >= (1, 27)) or (major == 12 and version < (1, 27)):
            return wheel
    return None


def ensure_ort(gpu: dict[str, str]) -> str | None:
    """A python whose onnxruntime has CUDAExecutionProvider: this one, or the venv with a
    carried wheel; None (having said why) when there is none."""
    if has_cuda_provider(sys.executable):
        return sys.executable
    python = VENV / "bin" / "python"
    if python.is_file() and has_cuda_provider(str(python)):
        return str(python)
    wheel = ort_wheel(gpu["cuda"])
    if wheel is None:
        print(
            f"{NO_ORT}: the installed onnxruntime lacks it and no onnxruntime-gpu wheel for "
            f"CUDA {gpu['cuda'] or '?'} is in wheels/ (no internet here). Carry one: pip "
            "download --no-deps -d wheels onnxruntime-gpu==1.31.1 (CUDA 13; ==1.26.* for CUDA "
            "12); nothing measured",
            flush=True,
        )
        return None
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-index", "--no-deps", str(wheel)],
        check=True, timeout=300,
    )  # fmt: skip
    if not has_cuda_provider(str(python)):
        print(f"{NO_ORT}: {wheel.name} installed in {VENV} but offers no CUDA provider "
              "(its CUDA/cuDNN libraries missing?); nothing measured", flush=True)  # fmt: skip
        return None
    return str(python)


def time_model(path: Path, providers: list, runs: int = 20) -> dict[str, float | str]:
    """One model's ms per call on `providers`, on random input; whether its output is blank."""
    import numpy as np
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # onnxruntime raises its own types: record, go on
        return {"error": str(exc).splitlines()[0][:200]}
    rng = np.random.default_rng(0)
    feed = {}
    for item in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in item.shape]
        if item.name == "weight" or item.type == "tensor(double)":
            feed[item.name] = np.array([0.5], np.float64)
            continue
        dtype = np.float16 if item.type == "tensor(float16)" else np.float32
        if len(shape) == 4 and shape[2] == 1 and shape[3] == 1:
            shape[2] = shape[3] = 640  # a dynamic image size: the detectors' 640
        feed[item.name] = rng.uniform(-1, 1, shape).astype(dtype)
    out = session.run(None, feed)  # warm-up (TensorRT builds its engine here)
    started = time.perf_counter()
    for _ in range(runs):
        out = session.run(None, feed)
    ms = 1000 * (time.perf_counter() - started) / runs
    first = np.asarray(out[0], np.float32)
    blank = not np.isfinite(first).all() or float(first.std()) == 0.0
    return {"ms": round(ms, 2), "blank": blank}


def time_models(store: Path) -> dict[str, dict]:
    cache = store / "trt-cache"
    trt = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}
    results = {}
    for path in sorted(store.glob("*.onnx")):
        row = {
            "cuda": time_model(path, ["CUDAExecutionProvider"]),
            "tensorrt_fp32": time_model(path, [("TensorrtExecutionProvider", trt),
                                               "CUDAExecutionProvider"]),
            "tensorrt_fp16": time_model(path, [("TensorrtExecutionProvider",
                                                {**trt, "trt_fp16_enable": True}),
                                               "CUDAExecutionProvider"]),
        }  # fmt: skip
        if row["tensorrt_fp16"].get("blank"):
            row["tensorrt_fp16"] = {"fp16": "blank"}
        results[path.name] = row
        print(f"{path.name}: {json.dumps(row)}", flush=True)
    return results


def ffmpeg_fps(clip: Path, work: Path) -> dict[str, float | str]:
    """NVDEC decode alone, NVENC encode alone, and the two with a scale to 720×1280."""
    frames = int(
        subprocess.run(
            ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
             "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(clip)],
            capture_output=True, text=True, check=True, timeout=120,
        ).stdout.strip()
    )  # fmt: skip
    synthetic = f"testsrc2=size=720x1280:rate=30,trim=end_frame={frames}"
    jobs = {
        "nvdec_1080p": ["-hwaccel", "cuda", "-i", str(clip), "-f", "null", "-"],
        "nvenc_720x1280": ["-f", "lavfi", "-i", synthetic, "-c:v", "h264_nvenc",
                           "-preset", "p4", str(work / "enc.mp4")],
        "nvdec_scale_nvenc": ["-hwaccel", "cuda", "-i", str(clip), "-vf", "scale=720:1280",
                              "-c:v", "h264_nvenc", "-preset", "p4", str(work / "both.mp4")],
    }  # fmt: skip
    fps: dict[str, float | str] = {}
    for label, args in jobs.items():
        started = time.perf_counter()
        run = subprocess.run(["ffmpeg", "-v", "error", "-y", *args], capture_output=True,
                             text=True, timeout=180)  # fmt: skip
        seconds = time.perf_counter() - started
        fps[label] = round(frames / seconds, 1) if run.returncode == 0 else run.stderr[-200:]
        print(f"{label}: {fps[label]}", flush=True)
    return fps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--models", type=Path, default=ROOT / ".cache" / "cost-models")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "gpu-results.json")
    args = parser.parse_args()
    gpu = find_gpu()
    if gpu is None:
        print(f"{NO_GPU} (nvidia-smi missing or failing): nothing measured", flush=True)
        return EXIT_NO_GPU
    print(f"gpu: {gpu['name']}, driver {gpu['driver']}, CUDA {gpu['cuda']}", flush=True)
    if not os.environ.get(IN_VENV):
        python = ensure_ort(gpu)
        if python is None:
            return EXIT_NO_ORT
        if python != sys.executable:  # measure inside the venv whose onnxruntime has CUDA
            env = {**os.environ, IN_VENV: "1", "PYTHONPATH": str(ROOT)}
            return subprocess.run([python, __file__, *sys.argv[1:]], env=env).returncode
    from skimage.data import astronaut

    from bench.chain import (
        chain_line,
        footage,
        measure_chains,
        measure_steps,
        step_table,
        store_with,
        write_column,
    )
    from tests.real_chain import write_face_image

    extra = {"crop": {"device": "cuda"}, "swap": {"tensorrt": True}, "enhance": {"tensorrt": True}}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        work = Path(tmp)
        store, used = store_with(args.models, work / "models")
        print(f"models: {used}", flush=True)
        clips = footage(work, args.seconds)
        write_face_image(work / "astronaut.png", astronaut())
        models = time_models(store)
        video = ffmpeg_fps(clips["one"], work)
        table = step_table(measure_steps(clips, store, work, extra))
        fps = measure_chains(clips["one"], store, work, extra)
    kind = kind_name(gpu["name"])
    result = {"gpu": gpu, "kind": kind, "models_used": used, "models": models,
              "video": video, "steps": table, "chains": fps}  # fmt: skip
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    source = f"bench/gpu.py on {gpu['name']} (driver {gpu['driver']}); models: {used}"
    write_column(kind, table, source)
    print(f"wrote {args.out} and the {kind} column of processors/step_costs.yaml")
    print(chain_line(fps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
