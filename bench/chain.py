"""Chain benchmark: the whole chain (crop → swap → lipsync) on the real Pexels clip, and where
the time goes.

    python bench/chain.py [--seconds 19.7] [--chunk-seconds 5] [--detect-every 1]

The clip (19.7 s, 640×360, a real person) and the real detectors come from registry packages
(tests/real_assets.py): YOLO11n for crop (`yolo-onnx`), SCRFD-500m + ArcFace MBF as swap's
analyser pack; the swapper and Wav2Lip are models with the real signatures
(tests/face_models.py, tests/lipsync_fixtures.py with three untrained convolutions), so their
own cost is far below the real networks' — the detectors, decode, encode and stitch are real.

One run, every stage timed in it. The clip is planned into chunks as a job would be; each
chunk is done as its task does it (pre-/post-roll decoded, the chain built fresh, its own
frames kept, an H.264 part written), then the parts are stitched with the soundtrack. Unlike a
task, the stages run one after another, not overlapped (decode and encode have their own
threads in a task), so each one's wall time is its own:

- decode: ffmpeg → RGB frames in memory (FrameReader), pre/post-roll included
- crop, swap, lipsync: each step's push/flush (its models, tracking, paste-back)
- encode: frames → H.264 part (FrameWriter, RGB → YUV on its thread, x264)
- stitch: parts concatenated by stream copy, audio muxed (concat_and_mux)

The last line is the summary: `chain: X fps, slowest stage: NAME (Y %)`, X = output frames /
the sum of all stages.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from skimage.data import astronaut  # noqa: E402

from batch_jobs.plan import build_plan  # noqa: E402
from manifests.model import Manifest  # noqa: E402
from manifests.resolve import ResolvedItem  # noqa: E402
from processors.base import ProcessorContext  # noqa: E402
from processors.chain import Chain  # noqa: E402
from processors.media.assemble import audio_offset_for, concat_and_mux  # noqa: E402
from processors.media.frames import EncodeSettings, FrameBatch, FrameReader, FrameWriter  # noqa: E402
from processors.media.probe import probe  # noqa: E402
from tests.real_assets import asset  # noqa: E402
from tests.real_chain import (  # noqa: E402
    ANALYSER,
    SWAPPER,
    YOLO,
    build_real_store,
    trim,
    write_face_image,
)

STAGES = ("decode", "crop", "swap", "lipsync", "encode", "stitch")


class Timed:
    """A processor whose push/flush time is added to `spent[name]`; for a step that publishes
    face annotations, the frames in which it found a face are counted in `faces`."""

    def __init__(self, inner, spent: dict[str, float], faces: dict[str, int]) -> None:
        self.inner, self.spent, self.faces, self.name = inner, spent, faces, inner.name

    def output_size(self) -> tuple[int, int]:
        return self.inner.output_size()

    def _timed(self, call, *args):
        started = time.perf_counter()
        try:
            out = call(*args)
        finally:
            self.spent[self.name] += time.perf_counter() - started
        if self.name == "swap":
            found = out.annotations.get("faces", [])
            self.faces[self.name] = self.faces.get(self.name, 0) + sum(bool(f) for f in found)
            self.faces["seen"] = self.faces.get("seen", 0) + len(out)
        return out

    def push(self, batch: FrameBatch) -> FrameBatch:
        return self._timed(self.inner.push, batch)

    def flush(self) -> FrameBatch:
        return self._timed(self.inner.flush)


def manifest_for(chunk_seconds: float, detect_every: int) -> Manifest:
    return Manifest.model_validate(
        {
            "version": 1,
            "inputs": "talk.mp4",
            "chain": [
                {"crop": {"aspect": "9:16", "detector": "yolo-onnx", "model": YOLO,
                          "detect_every": detect_every}},
                # det_size 320: after a 9:16 crop her face fills the frame, and SCRFD-500m at
                # 640 misses a face that large (see bench/RESULTS.md)
                {"swap": {"analyser": ANALYSER, "model": SWAPPER, "source": "astronaut.png",
                          "det_size": 320}},
                {"lipsync": {"batch_size": 16}},
            ],
            "output": {"preset": "veryfast", "crf": 20},
            "compute": {"chunk_seconds": chunk_seconds},
        }
    )  # fmt: skip


def decode(source: Path, info, first: int, count: int | None, spent: dict) -> list[FrameBatch]:
    started = time.perf_counter()
    reader = FrameReader.for_video(str(source), info, first, count, batch_size=8)
    try:
        batches = list(reader)
    finally:
        reader.close()
    spent["decode"] += time.perf_counter() - started
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0, help="0: the whole clip")
    parser.add_argument("--chunk-seconds", type=float, default=5.0)
    parser.add_argument("--detect-every", type=int, default=1)
    args = parser.parse_args()
    spent = dict.fromkeys(STAGES, 0.0)
    faces: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-chain-") as tmp:
        work = Path(tmp)
        store = build_real_store(work / "models", asset, convs=3)
        folder = work / "job"
        folder.mkdir()
        source = folder / "talk.mp4"
        if args.seconds:
            trim(asset("pexels.mp4"), source, 0.0, args.seconds)
        else:
            source.symlink_to(asset("pexels.mp4"))
        write_face_image(folder / "astronaut.png", astronaut())
        info = probe(str(source))
        manifest = manifest_for(args.chunk_seconds, args.detect_every)
        plan = build_plan(manifest, "", [(ResolvedItem(0, "talk.mp4", None, None), info)])
        [item] = plan.items
        rate = Fraction(info.fps_num, info.fps_den)
        ctx = ProcessorContext(
            info=info, rate=rate, width=info.width, height=info.height, folder=folder,
            model_store=str(store), audio_path=str(source),
        )  # fmt: skip
        print(
            f"{info.frame_count} frames {info.width}x{info.height} @ {float(rate):.3f} fps, "
            f"{len(item.chunks)} chunks, detect_every {args.detect_every}, "
            f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        parts, frames_out = [], 0
        for chunk in item.chunks:
            first = chunk.start_frame - chunk.preroll
            last = chunk.end_frame >= info.frame_count
            count = None if last else chunk.end_frame + chunk.postroll - first
            batches = decode(source, info, first, count, spent)
            chain = Chain(item.chain, ctx)  # built per chunk, as each task builds its own
            chain.processors = [Timed(p, spent, faces) for p in chain.processors]
            kept: list[FrameBatch] = []
            chain.run(batches, kept.append, keep=(chunk.start_frame, chunk.end_frame))
            started = time.perf_counter()
            part = work / f"part-{chunk.index:03d}.mp4"
            writer = FrameWriter(
                part, width=chain.width, height=chain.height, rate=rate,
                settings=EncodeSettings(crf=20, preset="veryfast"),
            )  # fmt: skip
            for batch in kept:
                writer.write(batch.frames)
                frames_out += len(batch)
            writer.close()
            spent["encode"] += time.perf_counter() - started
            parts.append(part)
            done = sum(spent.values())
            print(f"chunk {chunk.index}: {frames_out} frames, {done:.1f} s so far", flush=True)
        started = time.perf_counter()
        concat_and_mux(
            parts,
            work / "output.mp4",
            audio_source=str(source),
            audio_offset=audio_offset_for(info.start_time, info.format_start_time, rate),
            duration=float(frames_out / rate),
        )
        spent["stitch"] += time.perf_counter() - started
    total = sum(spent.values())
    # A header may count one frame more than decodes (the Pexels clip's does): tasks allow it.
    assert info.frame_count - 1 <= frames_out <= info.frame_count, (frames_out, info.frame_count)
    print(f"{'stage':<8} {'seconds':>8} {'share':>7} {'ms/frame':>9}")
    for stage in STAGES:
        print(
            f"{stage:<8} {spent[stage]:8.2f} {100 * spent[stage] / total:6.1f}% "
            f"{1000 * spent[stage] / frames_out:9.1f}"
        )
    print(f"{'total':<8} {total:8.2f}  100.0% {1000 * total / frames_out:9.1f}")
    # Counted over every frame swap saw, pre-/post-roll included.
    print(
        f"swap found her face in {faces.get('swap', 0)} of the {faces.get('seen', 0)} frames it saw"
    )
    slowest = max(STAGES, key=lambda s: spent[s])
    print(
        f"chain: {frames_out / total:.2f} fps, slowest stage: {slowest} "
        f"({100 * spent[slowest] / total:.0f} %)"
    )


if __name__ == "__main__":
    main()
