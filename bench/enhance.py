"""Enhance benchmark: box-local paste-back vs a full-frame warp-and-blend, and batch 8 vs batch 1.

    python bench/enhance.py [--repeats 20] [--frames 16] [--convs 2]

The frame: 1920×1080 with two real people side by side (the obama and biden portraits of the
real-model tier, scaled to fill the height), their faces found by the real SCRFD-500m.

(a) paste-back, per frame (both faces): our `processors.swap.paste.paste_back` with the enhance
    step's FFHQ mask (the restored 512 crop and its mask warped into the face's box only,
    blended there in one pass) vs a full-frame warp-and-blend — the restored crop and its mask
    warped to the whole 1080p frame and every pixel blended in float, then mixed with the
    frame by `blend`, as FaceFusion's enhancer pastes. Same restored crops and matrices; median
    of `--repeats` interleaved runs; MAD: mean absolute difference of the two results inside
    the faces' boxes (8-bit).
(b) the whole step (`EnhanceProcessor`: align, restore, paste back) on `--frames` frames, the
    faces handed on as swap hands them (no detection in the loop), `batch_size` 8 vs 1.

The restorer is the test model with GFPGAN's exact signature (tests/enhance_models.py) plus
`--convs` untrained 3×3 convolutions at 512×512, so each face costs real work; what batching
saves on a GPU with the real 300 MB GFPGAN is not what it saves here.
Last line: `enhance: X× full-frame paste, batch 8: Y× batch 1`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.domain import VideoInfo  # noqa: E402
from processors.base import ProcessorContext  # noqa: E402
from processors.enhance.align import aligned_crop, ffhq_matrix, restore_mask  # noqa: E402
from processors.enhance.processor import EnhanceProcessor  # noqa: E402
from processors.faces import Face, FaceAnalyser, annotate  # noqa: E402
from processors.media.frames import FrameBatch  # noqa: E402
from processors.swap.paste import box_of, paste_back  # noqa: E402
from tests.enhance_models import build_enhance_store, restyle  # noqa: E402
from tests.real_assets import asset  # noqa: E402

HD = (1920, 1080)
BLEND = 0.8  # the step's default blend, 80


def two_portraits() -> np.ndarray:
    """obama left, biden right, each scaled to the frame's height and centred in its half."""
    frame = np.zeros((HD[1], HD[0], 3), np.uint8)
    for half, name in enumerate(("obama.jpg", "biden.jpg")):
        rgb = cv2.cvtColor(cv2.imread(str(asset(name))), cv2.COLOR_BGR2RGB)
        scale = HD[1] / rgb.shape[0]
        big = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        width = min(big.shape[1], HD[0] // 2)
        x0 = half * HD[0] // 2 + (HD[0] // 2 - width) // 2
        cut = (big.shape[1] - width) // 2
        frame[:, x0 : x0 + width] = big[: HD[1], cut : cut + width]
    return frame


def full_frame_paste(frame: np.ndarray, crop: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The reference: crop and mask warped to the whole frame, every pixel blended in float,
    then the result mixed with the frame by the blend."""
    inverse = cv2.invertAffineTransform(matrix)
    size = (frame.shape[1], frame.shape[0])
    mask = cv2.warpAffine(restore_mask(crop.shape[0]), inverse, size).clip(0, 1)[..., None]
    face = cv2.warpAffine(crop, inverse, size, borderMode=cv2.BORDER_REPLICATE)
    pasted = mask * face + (1 - mask) * frame
    mixed = cv2.addWeighted(
        frame.astype(np.float32), 1 - BLEND, pasted.astype(np.float32), BLEND, 0
    )
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def bench_paste(frame: np.ndarray, faces: list[Face], repeats: int) -> tuple[float, float, float]:
    matrices = [ffhq_matrix(f.kps, 512) for f in faces]
    crops = [restyle(aligned_crop(frame, m, 512)) for m in matrices]  # "restored" crops
    mask = restore_mask(512)
    theirs, ours = [], []
    for _ in range(repeats):  # interleaved, so load on the machine hits both alike
        t = time.perf_counter()
        full = frame
        for crop, matrix in zip(crops, matrices, strict=True):
            full = full_frame_paste(full, crop, matrix)
        theirs.append(time.perf_counter() - t)
        mine = frame.copy()
        t = time.perf_counter()
        for crop, matrix in zip(crops, matrices, strict=True):
            paste_back(mine, crop, matrix, opacity=BLEND, mask=mask)
        ours.append(time.perf_counter() - t)
    diffs = []
    for matrix in matrices:
        x0, y0, x1, y1 = box_of(matrix, 512, HD[0], HD[1])
        diffs.append(np.abs(mine[y0:y1, x0:x1].astype(int) - full[y0:y1, x0:x1]).mean())
    return statistics.median(theirs), statistics.median(ours), float(np.mean(diffs))


def bench_step(frame: np.ndarray, faces: list[Face], frames: int, convs: int) -> dict[int, float]:
    rng = np.random.default_rng(2)
    noise = rng.integers(-2, 3, size=(frames, *frame.shape), dtype=np.int16)
    clip = np.clip(frame[None].astype(np.int16) + noise, 0, 255).astype(np.uint8)
    annotations = annotate({}, [faces] * frames)
    fps = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DROPBATCH_MODEL_CACHE"] = str(Path(tmp) / "cache")
        store = build_enhance_store(Path(tmp) / "store", convs=convs)
        info = VideoInfo(
            duration=frames / 25, fps_num=25, fps_den=1, frame_count=frames, width=HD[0],
            height=HD[1],
        )  # fmt: skip
        ctx = ProcessorContext(
            info=info, rate=Fraction(25), width=HD[0], height=HD[1], model_store=str(store)
        )
        results = {}
        for batch in (8, 1, 8, 1):  # twice each, interleaved; the first of each warms up
            proc = EnhanceProcessor({"batch_size": batch, "analyser": "none"}, ctx)
            start = time.perf_counter()
            out = proc.push(FrameBatch(clip, np.arange(frames), annotations))
            fps[batch] = frames / (time.perf_counter() - start)
            results[batch] = out.frames
        assert np.array_equal(results[8], results[1]), "batch 8 and batch 1 differ"
    return fps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--convs", type=int, default=2)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core each, like a task held to one core; fair to both sides
    print(f"cpu: {os.cpu_count()} cores, opencv {cv2.__version__}, numpy {np.__version__}")
    frame = two_portraits()
    detector = FaceAnalyser(asset("scrfd_500m_bnkps.onnx"), None)
    faces = detector.detect(frame)
    assert len(faces) == 2, f"expected the two portraits' faces, found {len(faces)}"
    widths = [round(float(f.box[2] - f.box[0])) for f in faces]
    print(f"frame {HD[0]}×{HD[1]}, two faces, boxes {widths} px wide (real SCRFD-500m)")
    theirs, mine, mad = bench_paste(frame, faces, args.repeats)
    print(f"full-frame warp-and-blend (1080p, 2 faces): {theirs * 1000:.2f} ms")
    print(f"our box-local paste-back  (1080p, 2 faces): {mine * 1000:.2f} ms   MAD {mad:.2f}")
    fps = bench_step(frame, faces, args.frames, args.convs)
    print(f"enhance step, {args.frames} frames × 2 faces, stand-in restorer ({args.convs} convs):")
    print(f"  batch 8: {fps[8]:.2f} fps   batch 1: {fps[1]:.2f} fps")
    print(
        f"enhance: {theirs / mine:.1f}× full-frame paste, batch 8: {fps[8] / fps[1]:.2f}× batch 1"
    )


if __name__ == "__main__":
    main()
