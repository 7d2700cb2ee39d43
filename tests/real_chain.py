"""The product as a user runs it: a model store folder with the real detectors (YOLO11n,
SCRFD-500m, ArcFace MBF) beside the test-signature swapper and Wav2Lip, real footage trimmed
from the Pexels clip, and the helpers that run a chain one task at a time or chunk by chunk.

The real files sit under the packaged catalog's names (yolo11n, scrfd_500m_mbf); with the
store's own catalog.yaml (which pins yolo11n.onnx and adds the test swapper, the way a user adds
a model the packaged catalog does not know) every real file a task loads is sha256-verified.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import yaml

from batch_jobs.task import chunk_context, speech_object
from core.domain import PlannedItem
from processors.base import ProcessorContext
from processors.chain import Chain, concat_batches
from processors.media.frames import FrameBatch, FrameReader
from tests.enhance_models import build_enhance_store
from tests.face_models import build_swapper
from tests.lipsync_fixtures import make_model_store
from tests.media_fixtures import run_chain_over, run_in_chunks
from tests.test_cli import run_cli

ROOT = Path(__file__).resolve().parent.parent

# Catalog names the manifests use.
YOLO = "yolo11n"
ANALYSER = "scrfd_500m_mbf"  # SCRFD-500m (batch-dim outputs) + ArcFace MobileFaceNet
SWAPPER = "test_swapper"
REAL_FILES = {YOLO: ["yolo11n.onnx"], ANALYSER: ["scrfd_500m_bnkps.onnx", "w600k_mbf.onnx"]}

# The chains the real-footage tests run (steps run in the registry's order): every combination
# of crop, swap and lipsync but swap alone, which runs as swap → enhance instead.
CHAINS = [
    ("crop",),
    ("swap", "enhance"),
    ("lipsync",),
    ("crop", "swap"),
    ("crop", "lipsync"),
    ("swap", "lipsync"),
    ("crop", "swap", "lipsync"),
]
STEP_YAML = {
    "crop": f'crop: {{aspect: "9:16", detector: yolo-onnx, model: {YOLO}, detect_every: 4}}',
    "swap": (
        f"swap: {{analyser: {ANALYSER}, model: {SWAPPER}, source: faces/astronaut.png, "
        "det_size: 320}"
    ),
    "enhance": f"enhance: {{analyser: {ANALYSER}, blend: 100, batch_size: 8}}",
    "lipsync": "lipsync: {batch_size: 8}",  # the video's own soundtrack is the speech
}


def chain_manifest(
    steps: tuple[str, ...], video: str = "talk.mp4", chunk_seconds: float = 1
) -> str:
    lines = "\n".join(f"  - {STEP_YAML[s]}" for s in steps)
    return (
        f"version: 1\ninputs: [{video}]\nchain:\n{lines}\n"
        "output: {preset: ultrafast, crf: 18}\n"
        # The CPU on purpose: this machine has no GPU (a `gpu: l4` job fails GPU_UNAVAILABLE).
        f"compute: {{gpu: none, chunk_seconds: {chunk_seconds}, max_parallel_tasks: 2, "
        "max_retries: 0}\n"
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_real_store(folder: Path, real_asset: Callable[[str], Path], *, convs: int = 0) -> Path:
    """A model store folder: the real detector files under their catalog names, the test
    swapper, every Wav2Lip name, and a catalog.yaml that registers the test swapper. `convs`:
    untrained convolutions in the Wav2Lip stand-in, so a benchmark sees real work there."""
    make_model_store(folder, convs=convs)  # every Wav2Lip name, the test signature
    for files in REAL_FILES.values():
        for name in files:
            target = folder / name
            if not target.exists():
                target.symlink_to(real_asset(name))
    build_swapper(folder / "test_swapper.onnx")
    build_enhance_store(folder)  # the restorers' test signatures, under the catalog's names

    def pins(names: list[str]) -> dict:
        return {
            "sha256": {n: _sha256(folder / n) for n in names},
            "size": {n: (folder / n).stat().st_size for n in names},
        }

    # yolo11n and the scrfd_500m_mbf pack are in the packaged catalog. The store's own
    # catalog.yaml pins yolo11n.onnx (unpinned there: users export their own) and adds the
    # test swapper, a model the packaged catalog does not know.
    models = {
        YOLO: {"files": REAL_FILES[YOLO], **pins(REAL_FILES[YOLO])},
        SWAPPER: {
            "step": "swap",
            "role": "swapper",
            "files": ["test_swapper.onnx"],
            **pins(["test_swapper.onnx"]),
            "licence": "test",
            "source": "tests/face_models.py",
        },
    }
    (folder / "catalog.yaml").write_text(yaml.safe_dump({"models": models}))
    return folder


def trim(source: Path, target: Path, start: float, seconds: float) -> Path:
    """A few seconds of real footage, re-encoded (frame-exact start, audio kept)."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-ss", f"{start}", "-i", str(source), "-t", f"{seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-crf", "14", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "96k", str(target)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return target


def write_face_image(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def cli_env(store: Path, cache: Path) -> dict[str, str]:
    """A user's shell: no DROPBATCH_* settings but the model store (and a private cache)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPBATCH_")}
    env.update(
        DROPBATCH_MODEL_STORE=str(store),
        DROPBATCH_MODEL_CACHE=str(cache),
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    return env


def dropbatch(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    """The `dropbatch` command, as a user runs it."""
    return run_cli(args, ROOT, env, timeout)


def task_context(
    item: PlannedItem, bucket: Path, folder: Path, store: Path | str
) -> ProcessorContext:
    """What a task gives its chain: the task's own context builder
    (batch_jobs.task.chunk_context), the speech object a path under the bucket folder."""
    speech = speech_object(item)
    return chunk_context(item, str(store), folder, bucket / speech if speech else None)


def run_task(
    item: PlannedItem, source: Path, ctx: ProcessorContext, first: int, count: int | None,
    keep: tuple[int, int],
) -> FrameBatch:  # fmt: skip
    """One task's work, in process: decode [first, first+count), a freshly built chain, the
    frames in [keep)."""
    chain = Chain(item.chain, ctx)
    reader = FrameReader.for_video(str(source), item.info, first, count, batch_size=8)
    return run_chain_over(chain, reader, keep)


def chunked_and_single(
    item: PlannedItem, source: Path, ctx: ProcessorContext
) -> tuple[FrameBatch, FrameBatch]:
    """The item run as its chunks' tasks run it, and as one task over the whole video."""
    pieces = run_in_chunks(item, lambda *task: run_task(item, source, ctx, *task))
    for chunk, piece in pieces:
        assert piece.indices.tolist() == list(range(chunk.start_frame, chunk.end_frame))
    total = item.frames or item.info.frame_count
    single = run_task(item, source, ctx, 0, None, (0, total))
    return concat_batches([p for _, p in pieces]), single
