"""Lipsync step benchmark: frames per second of the step itself, batch 1 vs batch 32.

    python bench/lipsync.py [--width 1280 --height 720] [--frames 96] [--repeats 2]
                            [--detect-every 1]

Runs `processors.lipsync.processor.LipsyncProcessor` (through `Chain`, as a task does) over
frames already in memory — decoding and encoding are the plumbing benchmark's business — with
a test model of Wav2Lip's exact signature (`tests/lipsync_fixtures.build_test_model`, with
three untrained 3×3 convolutions, 6→32→32→3 at 96×96, so each sample costs real work; the
real Wav2Lip is far heavier) on onnxruntime's CPU provider unless CUDA is there. The frames
show a face (skimage's astronaut) that the step detects itself (OpenCV Haar); the speech is
espeak-ng's. Both batch sizes run interleaved, `--repeats` times each, and the best run of
each counts (a shared machine only ever makes a run slower). Also shown: the model alone on
random inputs at both batch sizes, to tell the model's batching gain from the step's.

The last line is the summary: `lipsync: X fps at batch 32, Y× batch 1`.
"""

from __future__ import annotations

import argparse
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
from processors.chain import Chain  # noqa: E402
from processors.lipsync.model import Wav2LipModel  # noqa: E402
from processors.media.frames import FrameBatch  # noqa: E402
from tests.lipsync_fixtures import face_frame, make_model_store, speech_wav  # noqa: E402

FPS = 25


def frames_at(width: int, height: int, count: int) -> np.ndarray:
    return np.stack(
        [
            cv2.resize(face_frame(i), (width, height), interpolation=cv2.INTER_LINEAR)
            for i in range(count)
        ]
    )


def run_step(ctx: ProcessorContext, frames: np.ndarray, batch: int, every: int) -> float:
    """Seconds for the step over all frames, fed 8 at a time as the decoder does."""
    options = {"batch_size": batch, "detect_every": every}
    chain = Chain([{"name": "lipsync", "options": options}], ctx)
    started = time.perf_counter()
    out: list[FrameBatch] = []
    batches = (
        FrameBatch(frames[i : i + 8], np.arange(i, min(i + 8, len(frames))))
        for i in range(0, len(frames), 8)
    )
    emitted = chain.run(batches, out.append, keep=(0, len(frames)))
    elapsed = time.perf_counter() - started
    assert emitted == len(frames)
    return elapsed


def model_only(store: Path, batch: int, samples: int = 64) -> float:
    model = Wav2LipModel(store / "wav2lip_gan_96.onnx", batch)
    rng = np.random.default_rng(0)
    mels = rng.standard_normal((batch, 1, 80, 16)).astype(np.float32)
    faces = rng.random((batch, 6, 96, 96)).astype(np.float32)
    model.run(mels, faces)  # warm-up
    started = time.perf_counter()
    for _ in range(max(1, samples // batch)):
        model.run(mels, faces)
    return max(1, samples // batch) * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--detect-every", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-lipsync-") as tmp:
        work = Path(tmp)
        store = make_model_store(work / "models", convs=3)
        speech = speech_wav(work / "speech.wav", silence=0.2)
        frames = frames_at(args.width, args.height, args.frames)
        rate = Fraction(FPS)
        info = VideoInfo(
            duration=args.frames / FPS,
            fps_num=FPS,
            fps_den=1,
            frame_count=args.frames,
            width=args.width,
            height=args.height,
        )
        ctx = ProcessorContext(
            info=info,
            rate=rate,
            width=args.width,
            height=args.height,
            model_store=str(store),
            audio_path=str(speech),
            frames=args.frames,
        )
        providers = Wav2LipModel(store / "wav2lip_gan_96.onnx", 1).providers
        print(
            f"{args.frames} frames {args.width}x{args.height}, detect_every "
            f"{args.detect_every}, providers {providers}"
        )
        best: dict[int, float] = {1: float("inf"), 32: float("inf")}
        for r in range(args.repeats):
            for batch in (1, 32):
                seconds = run_step(ctx, frames, batch, args.detect_every)
                best[batch] = min(best[batch], seconds)
                print(f"  run {r + 1}: batch {batch:2d}: {args.frames / seconds:7.1f} fps")
        for batch in (1, 32):
            print(f"  model alone, batch {batch:2d}: {model_only(store, batch):7.1f} samples/s")
        fps1, fps32 = args.frames / best[1], args.frames / best[32]
        print(f"lipsync: {fps32:.1f} fps at batch 32, {fps32 / fps1:.2f}× batch 1")


if __name__ == "__main__":
    main()
