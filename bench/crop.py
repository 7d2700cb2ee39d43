"""Crop benchmark: detection every 3rd frame vs every frame, same detector, one run.

    python bench/crop.py [--seconds 10] [--size 1280x720] [--fps 30] [--repeats 2]
                         [--detectors yolo-suit,opencv-face]

On one test clip (`dropbatch.samples.make_talking_video`: skimage's astronaut sweeping over
a canvas; cached in bench/.work/), for each detector: the crop step as a task runs it —
FrameReader (decode on its own thread) → CropProcessor → a sink (no encode: the encoder is
not the crop's cost, and bench/plumbing.py measures it) — once with `detect_every: 1` and
once with `detect_every: 3`, interleaved, best of `--repeats`. Reported per detector:

- fps of both and their ratio (throughput with detect_every 3 / with every frame), and the
  ratio of CPU seconds (ours + ffmpeg's), which does not move with the machine's load;
- the mean distance between the two runs' window centres, in % of the frame width.

Detectors (no trained YOLO weights can be downloaded here):
- `yolo-suit` (the summary line): YOLOv8n built from ultralytics' yaml, untrained, exported
  to ONNX in the ultralytics venv (tests/gpu_venv.py) and run by our onnxruntime backend on
  the CPU — the real network's cost — whose boxes are dropped for those of the YOLO-signature
  test model (tests/yolo_test_model.py, also through our backend), which boxes the
  astronaut's white suit. Realistic timing and a centre error that means something.
- `yolo-onnx`: the untrained YOLOv8n alone. Realistic timing; it finds nobody, so both runs
  hold the centre and its centre error (0) means nothing.
- `opencv-face`: the weight-free CPU default (Haar); it really finds the face.

The last line is the first detector's: `crop: X× per-frame, centre error: Y % width`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".work"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from plumbing import Sample, make_clip, measure, wait_quiet  # noqa: E402

from core.domain import VideoInfo  # noqa: E402
from processors.base import ProcessorContext  # noqa: E402
from processors.crop.detector_choice import make_detector  # noqa: E402
from processors.crop.detectors import Box  # noqa: E402
from processors.crop.options import CropOptions  # noqa: E402
from processors.crop.processor import CropProcessor  # noqa: E402
from processors.media.frames import FrameBatch, FrameReader  # noqa: E402
from processors.media.probe import probe  # noqa: E402

EXPORT = """
import sys
from pathlib import Path
from ultralytics import YOLO
out = Path(sys.argv[1])
model = YOLO("yolov8n.yaml")
model.save(str(out.with_suffix(".pt")))
exported = YOLO(str(out.with_suffix(".pt"))).export(format="onnx", imgsz=640, verbose=False)
Path(exported).replace(out)
"""


def yolo_store() -> Path:
    """bench/.work/models/yolov8n.onnx: an untrained YOLOv8n exported by ultralytics."""
    from gpu_venv import ensure_venv
    from yolo_test_model import build

    store = WORK / "models"
    onnx = store / "yolov8n.onnx"
    if not (store / "suit.onnx").exists():
        build(store / "suit.onnx", dynamic_batch=True, decoys=False)
    if not onnx.exists():
        store.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "YOLO_CONFIG_DIR": str(WORK / "yolo-config"), "YOLO_OFFLINE": "1"}
        subprocess.run(
            [str(ensure_venv()), "-c", EXPORT, str(onnx)],
            check=True, cwd=store, env=env, capture_output=True,
        )  # fmt: skip
    return store


class CostedBoxes:
    """A detector with YOLOv8n's cost and boxes that mean something on the bench clip: it
    runs the untrained YOLOv8n (and drops what it says), then returns the boxes of the
    YOLO-signature test model (tests/yolo_test_model.py), which boxes the astronaut's white
    suit. Both through our onnxruntime backend, batched alike."""

    def __init__(self, store: Path) -> None:
        self.cost = make_detector("yolo-onnx", weights=store / "yolov8n.onnx", device="cpu")
        self.boxes = make_detector("yolo-onnx", weights=store / "suit.onnx", device="cpu")
        self.batch_size = self.cost.batch_size

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Box]]:
        self.cost.detect(frames)
        return self.boxes.detect(frames)


def run_crop(
    clip: Path, info: VideoInfo, options: dict, store: Path | None
) -> tuple[Sample, dict[int, tuple[int, int, int, int]]]:
    rate = Fraction(info.fps_num, info.fps_den)
    ctx = ProcessorContext(
        info=info, rate=rate, width=info.width, height=info.height, model_store=str(store or "")
    )
    detector = None
    if options["detector"] == "yolo-suit":
        assert store is not None
        options, detector = {**options, "detector": "yolo-onnx"}, CostedBoxes(store)
    # The step as the chain builds it (with the bench's detector handed in for yolo-suit).
    crop = CropProcessor(CropOptions(**options), ctx, detector=detector)
    frames = 0

    def sink(batch: FrameBatch) -> None:
        nonlocal frames
        frames += len(batch)

    with measure() as sample:
        reader = FrameReader(
            str(clip), width=info.width, height=info.height, rate=rate,
            start_time=info.start_time, first=0, count=None,
        )  # fmt: skip
        try:
            for batch in reader:
                sink(crop.push(batch))
            sink(crop.flush())
        finally:
            reader.close()
    assert frames == info.frame_count, (frames, info.frame_count)
    return sample, dict(crop.windows)


def centre_error(a: dict, b: dict, width: int) -> float:
    """Mean distance of window centres, in % of the frame width."""
    dist = [
        np.hypot((a[i][0] + a[i][2] / 2) - (b[i][0] + b[i][2] / 2),
                 (a[i][1] + a[i][3] / 2) - (b[i][1] + b[i][3] / 2))
        for i in a
    ]  # fmt: skip
    return 100 * float(np.mean(dist)) / width


def bench_detector(
    name: str, clip: Path, info: VideoInfo, repeats: int, store: Path | None
) -> tuple[float, float]:
    best: dict[int, Sample] = {}
    windows: dict[int, dict] = {}
    for _ in range(repeats):
        for every in (1, 3):
            wait_quiet(5)
            options = {"aspect": "9:16", "detector": name, "detect_every": every}
            sample, windows[every] = run_crop(clip, info, options, store)
            if every not in best or sample.wall < best[every].wall:
                best[every] = sample
            fps = info.frame_count / sample.wall
            print(f"  {name:12s} detect_every {every}: {fps:6.1f} fps  {sample.line()}")
    ratio = best[1].wall / best[3].wall
    error = centre_error(windows[1], windows[3], info.width)
    fps1, fps3 = (info.frame_count / best[k].wall for k in (1, 3))
    # CPU seconds do not depend on what else the machine runs: the steadier ratio.
    cpu_ratio = best[1].cpu / best[3].cpu
    ms1, ms3 = (1000 * best[k].cpu / info.frame_count for k in (1, 3))
    print(
        f"{name}: best {fps1:.1f} fps every frame, {fps3:.1f} fps every 3rd: {ratio:.2f}× "
        f"(CPU {ms1:.1f} vs {ms3:.1f} ms/frame: {cpu_ratio:.2f}×), "
        f"centre error {error:.2f} % width"
    )
    return ratio, error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--detectors", default="yolo-suit,opencv-face")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    WORK.mkdir(parents=True, exist_ok=True)
    clip = make_clip(args.seconds, width, height, args.fps)
    info = probe(str(clip))
    print(f"clip {clip.name}: {info.frame_count} frames, {width}x{height}, {os.cpu_count()} CPUs")
    results = {}
    for name in args.detectors.split(","):
        store = yolo_store() if name.startswith("yolo") else None
        started = time.perf_counter()
        results[name] = bench_detector(name, clip, info, args.repeats, store)
        print(f"  ({time.perf_counter() - started:.0f} s)")
    name = next(iter(results))
    ratio, error = results[name]
    print(f"crop: {ratio:.2f}× per-frame, centre error: {error:.2f} % width")
    return 0


if __name__ == "__main__":
    sys.exit(main())
