"""Pixel boost benchmark: what swapping a face at 256 or 512 costs against 128, in one run.

    python bench/pixel_boost.py [--repeats 30]

A 1080p frame with one real face (the astronaut photo as a ~450 px close-up, as in
bench/paste_back.py). Per face, at each `pixel_boost` (128, 256, 512), median of `--repeats`
interleaved runs:

CPU time of the process (onnxruntime's threads included), so a busy shared machine does not
count its neighbours' work.

- swap: `Swapper.swap` on the aligned crop — the k×k sub-grid split, k² model runs, the join;
- face: the whole per-face work of the step — align (warp the crop out of the frame), swap,
  paste back into the face's box.

The swapper is the test model with inswapper_128's signature (tests/face_models.py): its
inference is a few element-wise operations, far cheaper than inswapper's, so the swap ratio
here is the overhead side of the k² (each run's fixed cost plus the split and join); with the
real model, inference dominates and the swap costs close to k² = 4× and 16×.
Last line: `pixel boost (swap per face): 256 = X× 128, 512 = Y× 128`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.paste_back import hd_frame  # noqa: E402
from processors.faces import align_matrix  # noqa: E402
from processors.swap.paste import paste_back  # noqa: E402
from processors.swap.swapper import Swapper  # noqa: E402
from tests.face_models import build_swapper  # noqa: E402

SIDES = (128, 256, 512)


def measure(swapper: Swapper, repeats: int) -> dict[int, tuple[float, float]]:
    """side -> (swap seconds, whole face seconds), medians."""
    frame, face = hd_frame()
    kps = np.array(face.kps, np.float32)
    latent = swapper.latent(np.random.default_rng(1).standard_normal(512).astype(np.float32))
    swaps: dict[int, list[float]] = {s: [] for s in SIDES}
    faces: dict[int, list[float]] = {s: [] for s in SIDES}
    for _ in range(repeats):  # interleaved, so load on the machine hits every size alike
        for side in SIDES:
            out = frame.copy()
            # CPU time of this process (onnxruntime's threads included): on a shared machine
            # wall time measures the neighbours as much as the work.
            start = time.process_time()
            matrix = align_matrix(kps, side)
            crop = cv2.warpAffine(frame, matrix, (side, side), borderValue=0.0)
            t_swap = time.process_time()
            swapped = swapper.swap(crop, latent)
            swaps[side].append(time.process_time() - t_swap)
            paste_back(out, swapped, matrix)
            faces[side].append(time.process_time() - start)
    return {s: (statistics.median(swaps[s]), statistics.median(faces[s])) for s in SIDES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core, like a task held to one core
    print(f"cpu: {os.cpu_count()} cores, opencv {cv2.__version__}, numpy {np.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        model = build_swapper(Path(tmp) / "test_swapper.onnx")
        swapper = Swapper(model, ["CPUExecutionProvider"])
        results = measure(swapper, args.repeats)
    for side, (swap, face) in results.items():
        runs = (side // 128) ** 2
        print(
            f"pixel_boost {side}: swap {swap * 1000:.2f} ms ({runs} model runs), "
            f"align + swap + paste {face * 1000:.2f} ms per face"
        )
    base = results[128][0]
    print(
        f"pixel boost (swap per face): 256 = {results[256][0] / base:.1f}× 128, "
        f"512 = {results[512][0] / base:.1f}× 128"
    )


if __name__ == "__main__":
    main()
