"""Per-step costs and the common chains' speed on 1080p real footage, one face and two.

    python bench/chain.py [--seconds 1] [--models .cache/cost-models] [--write]

Footage (tests/real_assets.py): `one` is the Pexels clip (640×360, one person) scaled to
1920×1080; `two` is two real clips side by side, each scaled to 1080 high and its middle
960 columns kept (Pexels left, single_face.mp4 right), with the Pexels soundtrack.

Models: crop runs the real YOLO11n, swap and enhance the real SCRFD-500m + ArcFace MBF pack.
The swapper, the restorer (GFPGAN's name) and Wav2Lip are the files in `--models` (the
architecture-true stand-ins bench/cost_models.py writes) where that folder holds them, else
the signature models of tests/face_models.py, tests/enhance_models.py and
tests/lipsync_fixtures.py, whose own cost is far below the real networks'. The output says
which were used.

Each step runs alone, on the decoded frames in memory, as a one-step chain (so its own cost is
its wall time); decode (ffmpeg → RGB) and encode (RGB → x264 veryfast) are steps too. With one
face and two, the difference is the step's cost per extra face; the rest its cost per frame
at 1080p. `--write` stores them as the `cpu-2core` kind of processors/step_costs.yaml, the
table the planner and `dropbatch cost` estimate a job's speed from. Then the four common
chains run end to end on the one-face clip (decode and encode included) and the last line is
`chain: crop A fps, crop→swap B, swap→enhance C, full D`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from skimage.data import astronaut  # noqa: E402

from processors.base import ProcessorContext  # noqa: E402
from processors.chain import Chain  # noqa: E402
from processors.media.frames import EncodeSettings, FrameBatch, FrameReader, FrameWriter  # noqa: E402
from processors.media.probe import probe  # noqa: E402
from processors.step_costs import TABLE_PATH  # noqa: E402
from tests.real_assets import asset  # noqa: E402
from tests.real_chain import ANALYSER, SWAPPER, YOLO, build_real_store, write_face_image  # noqa: E402

# The cost-true stand-ins bench/cost_models.py writes, and the store file each replaces.
COST_MODELS = {
    "inswapper_128.onnx": "test_swapper.onnx",
    "gfpgan_1.4.onnx": "gfpgan_1.4.onnx",
    "wav2lip_gan_96.onnx": "wav2lip_gan_96.onnx",
}
WIDTH, HEIGHT = 1920, 1080
STEPS = ("decode", "crop", "swap", "enhance", "lipsync", "encode")
CHAINS = {
    "crop": ("crop",),
    "crop→swap": ("crop", "swap"),
    "swap→enhance": ("swap", "enhance"),
    "full": ("crop", "swap", "enhance", "lipsync"),
}


def step(name: str, *, cropped: bool = False, extra: dict | None = None) -> dict:
    """One step as a planned chain has it. After a 9:16 crop the face fills the frame and
    SCRFD-500m at 640 misses a face that large (bench/RESULTS.md): det_size 320 there.
    `extra`: options per step added on top (bench/gpu.py: `tensorrt`, `device`)."""
    det = 320 if cropped else 640
    options = {
        "crop": {"aspect": "9:16", "detector": "yolo-onnx", "model": YOLO, "detect_every": 1},
        "swap": {"analyser": ANALYSER, "model": SWAPPER, "source": "astronaut.png",
                 "det_size": det, "target": "all"},
        "enhance": {"analyser": ANALYSER, "det_size": det, "target": "all", "batch_size": 8},
        "lipsync": {"batch_size": 16},
    }[name]  # fmt: skip
    return {"name": name, "options": {**options, **(extra or {}).get(name, {})}}


def footage(folder: Path, seconds: float) -> dict[str, Path]:
    one, two = folder / "one.mp4", folder / "two.mp4"
    x264 = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "14", "-pix_fmt", "yuv420p"]
    audio = ["-c:a", "aac", "-b:a", "96k"]
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(asset("pexels.mp4")), "-t", f"{seconds}",
         "-vf", f"scale={WIDTH}:{HEIGHT}", *x264, *audio, str(one)],
        check=True, timeout=300,
    )  # fmt: skip
    # Both at 30 fps first: hstack pairs frames by timestamp, and single_face.mp4's would
    # never line up with the Pexels clip's. single_face.mp4 is 2.4 s: the pair is at most that.
    half = f"fps=30,scale=-2:{HEIGHT},crop={WIDTH // 2}:{HEIGHT}"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-t", f"{seconds}", "-i", str(asset("pexels.mp4")),
         "-t", f"{seconds}", "-i", str(asset("single_face.mp4")),
         "-filter_complex", f"[0:v]{half}[a];[1:v]{half}[b];[a][b]hstack=inputs=2:shortest=1[v]",
         "-map", "[v]", "-map", "0:a", *x264, *audio, str(two)],
        check=True, timeout=300,
    )  # fmt: skip
    return {"one": one, "two": two}


def store_with(models: Path, folder: Path) -> tuple[Path, str]:
    store = build_real_store(folder, asset, convs=3)
    present = [name for name in COST_MODELS if (models / name).is_file()]
    for name in present:
        target = store / COST_MODELS[name]
        target.unlink()
        target.symlink_to((models / name).resolve())
    where = models.resolve()
    where = where.relative_to(ROOT) if where.is_relative_to(ROOT) else where
    if present:
        # The store's catalog pins the test swapper's bytes: re-pin to the file now there.
        build_pins(store)
        used = f"cost-true ({where}: {', '.join(present)})"
        if len(present) < len(COST_MODELS):
            used += "; the rest signature models (tests/*_models.py)"
        return store, used
    return store, f"signature models (tests/*_models.py; no cost-true models in {where})"


def build_pins(store: Path) -> None:
    import hashlib

    catalog = yaml.safe_load((store / "catalog.yaml").read_text())
    for entry in catalog["models"].values():
        for name in entry.get("files", []):
            data = (store / name).read_bytes()
            entry.setdefault("sha256", {})[name] = hashlib.sha256(data).hexdigest()
            entry.setdefault("size", {})[name] = len(data)
    (store / "catalog.yaml").write_text(yaml.safe_dump(catalog))


def decode(source: Path) -> tuple[list[FrameBatch], float]:
    info = probe(str(source))
    started = time.perf_counter()
    reader = FrameReader.for_video(str(source), info, 0, None, batch_size=8)
    try:
        batches = list(reader)
    finally:
        reader.close()
    return batches, time.perf_counter() - started


def encode(batches: list[FrameBatch], width: int, height: int, rate: Fraction, out: Path) -> float:
    started = time.perf_counter()
    writer = FrameWriter(
        out, width=width, height=height, rate=rate,
        settings=EncodeSettings(crf=20, preset="veryfast"),
    )  # fmt: skip
    for batch in batches:
        writer.write(batch.frames)
    writer.close()
    return time.perf_counter() - started


class Timed:
    """A processor whose push/flush wall time is added to `spent[name]`."""

    def __init__(self, inner, spent: dict[str, float]) -> None:
        self.inner, self.spent, self.name = inner, spent, inner.name

    def output_size(self) -> tuple[int, int]:
        return self.inner.output_size()

    def _timed(self, call, *args):
        started = time.perf_counter()
        try:
            out = call(*args)
        finally:
            self.spent[self.name] = self.spent.get(self.name, 0.0) + time.perf_counter() - started
        # The faces swap found (its annotation): a step timed on frames with no face found
        # would be timed doing nothing.
        for found in out.annotations.get("faces", []) if self.name == "swap" else []:
            self.spent["faces"] = self.spent.get("faces", 0) + len(found or [])
        return out

    def push(self, batch: FrameBatch) -> FrameBatch:
        return self._timed(self.inner.push, batch)

    def flush(self) -> FrameBatch:
        return self._timed(self.inner.flush)


def run_chain(
    steps: list[dict], batches: list[FrameBatch], ctx: ProcessorContext, frames: int
) -> tuple[list[FrameBatch], dict[str, float], tuple[int, int]]:
    spent: dict[str, float] = {}
    chain = Chain(steps, ctx)
    chain.processors = [Timed(p, spent) for p in chain.processors]
    kept: list[FrameBatch] = []
    chain.run(batches, kept.append, keep=(0, frames))
    return kept, spent, (chain.width, chain.height)


def context(clip: Path, store: Path, work: Path) -> tuple[ProcessorContext, Fraction]:
    info = probe(str(clip))
    rate = Fraction(info.fps_num, info.fps_den)
    ctx = ProcessorContext(
        info=info, rate=rate, width=info.width, height=info.height, folder=work,
        model_store=str(store), audio_path=str(clip),
    )  # fmt: skip
    return ctx, rate


def measure_steps(
    clips: dict[str, Path], store: Path, work: Path, extra: dict | None = None, repeat: int = 1
) -> dict[str, dict[str, float]]:
    """Milliseconds per frame of each step alone, per clip (`one`, `two`): the least of
    `repeat` rounds (on a shared machine the others' load only ever adds time)."""
    rounds = [_measure_steps(clips, store, work, extra) for _ in range(repeat)]
    return {
        kind: {name: min(r[kind][name] for r in rounds) for name in rounds[0][kind]}
        for kind in rounds[0]
    }


def _measure_steps(
    clips: dict[str, Path], store: Path, work: Path, extra: dict | None
) -> dict[str, dict[str, float]]:
    ms: dict[str, dict[str, float]] = {}
    for kind, clip in clips.items():
        ctx, rate = context(clip, store, work)
        batches, seconds = decode(clip)
        frames = sum(len(b) for b in batches)
        ms[kind] = {"decode": 1000 * seconds / frames}
        for name in ("crop", "swap", "enhance", "lipsync"):
            _, spent, _ = run_chain([step(name, extra=extra)], batches, ctx, frames)
            ms[kind][name] = 1000 * spent[name] / frames
            if name == "swap":
                print(f"{kind}: swap found {spent.get('faces', 0) / frames:.2f} faces a frame")
        seconds = encode(batches, ctx.width, ctx.height, rate, work / f"{kind}-enc.mp4")
        ms[kind]["encode"] = 1000 * seconds / frames
        print(f"{kind}: {frames} frames {ctx.width}x{ctx.height}", flush=True)
    return ms


def step_table(ms: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per step: its cost per frame and per extra face (one face and two: the difference)."""
    print(f"{'step':<8} {'1 face':>8} {'2 faces':>8} {'frame_ms':>9} {'face_ms':>8}")
    table: dict[str, dict[str, float]] = {}
    for name in STEPS:
        a, b = ms["one"][name], ms["two"][name]
        faced = name in ("swap", "enhance", "lipsync")
        per_face = max(0.0, b - a) if faced else 0.0
        entry = {"frame_ms": round(max(0.0, a - per_face), 1)}
        if faced:
            entry["face_ms"] = round(per_face, 1)
        table[name] = entry
        print(f"{name:<8} {a:8.1f} {b:8.1f} {entry['frame_ms']:9.1f} {per_face:8.1f}")
    return table


def measure_chains(
    clip: Path, store: Path, work: Path, extra: dict | None = None
) -> dict[str, float]:
    """Frames per second of each common chain, end to end (decode and encode included)."""
    ctx, rate = context(clip, store, work)
    fps: dict[str, float] = {}
    for label, names in CHAINS.items():
        batches, seconds = decode(clip)
        frames = sum(len(b) for b in batches)
        steps = [step(n, cropped="crop" in names, extra=extra) for n in names]
        kept, spent, (w, h) = run_chain(steps, batches, ctx, frames)
        faces = spent.pop("faces", None)
        seconds += sum(spent.values()) + encode(kept, w, h, rate, work / "chain.mp4")
        fps[label] = frames / seconds
        found = "" if faces is None else f", swap found {faces / frames:.2f} faces a frame"
        print(f"{label}: {frames} frames → {w}x{h}, {seconds:.1f} s{found}", flush=True)
    return fps


def chain_line(fps: dict[str, float]) -> str:
    return (
        f"chain: crop {fps['crop']:.1f} fps, crop→swap {fps['crop→swap']:.1f}, "
        f"swap→enhance {fps['swap→enhance']:.1f}, full {fps['full']:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--models", type=Path, default=ROOT / ".cache" / "cost-models")
    parser.add_argument("--repeat", type=int, default=2, help="rounds; the least is kept")
    parser.add_argument("--write", action="store_true", help="store the cpu-2core column")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-chain-") as tmp:
        work = Path(tmp)
        store, used = store_with(args.models, work / "models")
        clips = footage(work, args.seconds)
        write_face_image(work / "astronaut.png", astronaut())
        print(f"models: {used}")
        print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, {args.seconds:g} s clips")
        table = step_table(measure_steps(clips, store, work, repeat=args.repeat))
        if args.write:
            source = (
                f"bench/chain.py --seconds {args.seconds:g} --repeat {args.repeat} on the shared "
                f"2-core machine (load {os.getloadavg()[0]:.0f})"
            )
            write_column("cpu-2core", table, f"{source}; models: {used}")
            print(f"wrote the cpu-2core column of {TABLE_PATH.relative_to(ROOT)}")
        fps = measure_chains(clips["one"], store, work)
    print(chain_line(fps))


def write_column(kind: str, table: dict[str, dict[str, float]], source: str) -> None:
    """Replace one VM kind's figures in the table, keeping every other kind as it is."""
    data = yaml.safe_load(TABLE_PATH.read_text())
    data["kinds"][kind] = {"measured": True, "source": source, "steps": table}
    header = "".join(
        line + "\n" for line in TABLE_PATH.read_text().splitlines() if line.startswith("#")
    )
    TABLE_PATH.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


if __name__ == "__main__":
    main()
