"""Workers benchmark: workers that pull chunks vs one process per chunk, in one run.

    python bench/workers.py [--seconds 60] [--chunks 12] [--parallel 2] [--detect-every 4]

The clip: the real Pexels footage (tests/real_assets.py, 19.7 s, 640×360) looped to
`--seconds`, planned into `--chunks` chunks. The chain: crop with the real YOLO11n through the
`yolo-onnx` detector, then swap with the real analyser pack (SCRFD-500m + ArcFace MBF) and the
test swapper (tests/face_models.py) — the model store of tests/real_chain.py. Both modes run the
same job (a local store, SQLite status) through the real task code, `--parallel` at a time:

- workers: `--parallel` processes of `python -m batch_jobs.task`, each claiming chunks until
  none is left (models loaded once per process, side inputs once per item);
- one process per chunk: `--chunks` processes, `--parallel` at a time, each the same task code
  limited to one chunk (`run_task(..., max_chunks=1)`): what a Batch task did before workers.

Setup share = the processes' time outside frame work and stitch, over all their time: each
process's wall time minus, for each chunk it did, the chunk's seconds less its chain build
(`chunk finished` log: `seconds`, `chain_setup_seconds`), minus its stitch (`stitched` log).
It holds interpreter start, imports, status reads, claims, side-input fetch, model checks and
loads, and each chunk's chain build.

The last line: `workers: X× one-process-per-chunk, setup share: Y % → Z %` with X the CPU
seconds one process per chunk spent (its processes and their ffmpeg children) over those the
workers spent — the machine time a job costs; on a machine shared with other work the wall
times move with its load (both are printed, with the load average) — Y its setup share, Z the
workers'.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUCKET = "bench"
FOLDER = "in/"


def one_chunk() -> int:
    """`python bench/workers.py --one-chunk`: a task limited to one chunk (mode b)."""
    from batch_jobs.task import run_task
    from core import logs
    from core.config import Settings

    logs.setup()
    index = int(os.environ["BATCH_TASK_INDEX"])
    return run_task(Settings.from_env(), os.environ["DROPBATCH_JOB_ID"], index, 0, max_chunks=1)


@dataclass
class Process:
    wall: float
    log: list[dict]

    def work(self) -> float:
        """Seconds of frame work: every chunk's time less its chain build."""
        return sum(
            e["seconds"] - e.get("chain_setup_seconds", 0.0)
            for e in self.log
            if e.get("message") == "chunk finished"
        )

    def stitch(self) -> float:
        return sum(e["seconds"] for e in self.log if e.get("message") == "stitched")

    def chunks(self) -> int:
        return sum(e.get("message") == "chunk finished" for e in self.log)


@dataclass
class ModeRun:
    name: str
    wall: float = 0.0
    cpu: float = 0.0  # CPU seconds of its processes (and their ffmpeg children)
    processes: list[Process] = field(default_factory=list)

    @property
    def setup_share(self) -> float:
        total = sum(p.wall for p in self.processes)
        setup = sum(p.wall - p.work() - p.stitch() for p in self.processes)
        return setup / total


def run_process(command: list[str], env: dict[str, str]) -> Process:
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    entries = []
    for line in proc.stderr.splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    if proc.returncode != 0:
        raise RuntimeError(f"{command} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return Process(wall, entries)


def decoded_frame_count(path: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return int(out.strip())


def make_clip(target: Path, seconds: float) -> Path:
    from tests.real_assets import asset

    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(asset("pexels.mp4")),
         "-t", f"{seconds}", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "16",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", str(target)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return target


def queue_job(root: Path, job_id: str, clip: Path, store: Path, args) -> tuple[object, dict]:
    """A queued job in a local deployment under `root`, planned as the trigger plans it."""
    from skimage.data import astronaut

    from batch_jobs.containment import new_record
    from batch_jobs.plan import build_plan
    from core.config import Settings
    from core.jobstatus import transition
    from core.status import open_status
    from core.status.model import LAUNCHABLE_STATES, JobState
    from core.storage.local import LocalStore
    from manifests.model import Manifest
    from manifests.resolve import ResolvedItem
    from processors.media.probe import probe
    from tests.real_chain import ANALYSER, SWAPPER, YOLO, write_face_image

    folder = root / BUCKET / FOLDER
    folder.mkdir(parents=True)
    os.link(clip, folder / "clip.mp4")
    write_face_image(folder / "astronaut.png", astronaut())
    info = probe(str(folder / "clip.mp4"))
    manifest = Manifest.model_validate(
        {
            "version": 1,
            "inputs": "clip.mp4",
            "chain": [
                {"crop": {"aspect": "9:16", "detector": "yolo-onnx", "model": YOLO,
                          "detect_every": args.detect_every}},
                {"swap": {"analyser": ANALYSER, "model": SWAPPER, "source": "astronaut.png",
                          "det_size": 320}},
            ],
            "output": {"preset": "veryfast", "crf": 20},
            "compute": {"gpu": "none", "chunk_seconds": args.seconds / args.chunks,
                        "max_parallel_tasks": args.parallel, "max_retries": 0},
        }
    )  # fmt: skip
    plan = build_plan(manifest, FOLDER, [(ResolvedItem(0, "clip.mp4", None, None), info)])
    settings = Settings(local_root=root, model_store=str(store), model_cache=str(root / "cache"))
    local, status = LocalStore(root), open_status(settings)
    name = f"{FOLDER}bench.yaml"
    status.create(new_record(job_id, (BUCKET, name, 1), local.uri(BUCKET, name)))
    transition(local, status, job_id, JobState.RECEIVED)
    transition(
        local, status, job_id, JobState.QUEUED, allowed_from=LAUNCHABLE_STATES,
        plan=plan, chunks_total=len(plan.items[0].chunks),
    )  # fmt: skip
    env = {
        **os.environ,
        **settings.to_env(),
        "DROPBATCH_JOB_ID": job_id,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return status, env


def run_mode(name: str, commands: list[list[str]], env: dict[str, str], parallel: int) -> ModeRun:
    """Run the commands `parallel` at a time (task index = position), timing the whole."""
    run = ModeRun(name)
    pending = list(enumerate(commands))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def lane() -> None:
        while True:
            with lock:
                if not pending or errors:
                    return
                index, command = pending.pop(0)
            try:
                done = run_process(command, {**env, "BATCH_TASK_INDEX": str(index)})
            except BaseException as exc:
                errors.append(exc)
                return
            with lock:
                run.processes.append(done)

    started = time.perf_counter()
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    lanes = [threading.Thread(target=lane) for _ in range(parallel)]
    for t in lanes:
        t.start()
    for t in lanes:
        t.join()
    run.wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    run.cpu = (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime)
    if errors:
        raise errors[0]
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--chunks", type=int, default=12)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--detect-every", type=int, default=4)
    parser.add_argument("--one-chunk", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_chunk:
        sys.exit(one_chunk())

    from core.status.model import JobState
    from processors.media.frames import FrameReader  # noqa: F401  (warm the import cache)
    from processors.media.probe import probe
    from tests.real_assets import asset
    from tests.real_chain import build_real_store

    work = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    try:
        store = build_real_store(work / "models", asset)
        clip = make_clip(work / "clip.mp4", args.seconds)
        info = probe(str(clip))
        print(
            f"{args.seconds:g} s clip ({info.frame_count} frames {info.width}x{info.height} @ "
            f"{info.fps:.3f} fps) in {args.chunks} chunks, {args.parallel} at a time; "
            f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        task = [sys.executable, "-m", "batch_jobs.task"]
        single = [sys.executable, str(Path(__file__).resolve()), "--one-chunk"]
        runs = []
        for name, commands in (
            ("workers", [task] * args.parallel),
            ("one process per chunk", [single] * args.chunks),
        ):
            root = work / name.replace(" ", "-")
            status, env = queue_job(root, f"bench-{len(runs)}", clip, store, args)
            run = run_mode(name, commands, env, args.parallel)
            record = status.get(env["DROPBATCH_JOB_ID"])
            if record.state != JobState.SUCCEEDED:
                raise RuntimeError(f"{name}: the job ended {record.state}: {record.error}")
            output = root / BUCKET / record.plan.items[0].output
            frames = decoded_frame_count(output)
            busy = sum(p.wall for p in run.processes)
            frame_work = sum(p.work() for p in run.processes)
            print(
                f"{name:<22} {run.wall:7.1f} s wall, {len(run.processes)} processes "
                f"(chunks each {sorted(p.chunks() for p in run.processes)}), process time "
                f"{busy:.1f} s of which frame work {frame_work:.1f} s, setup share "
                f"{100 * run.setup_share:.1f} %, CPU {run.cpu:.1f} s, output {frames} frames, "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            runs.append(run)
        workers, per_chunk = runs
        print(
            f"workers: {per_chunk.cpu / workers.cpu:.2f}× one-process-per-chunk, "
            f"setup share: {100 * per_chunk.setup_share:.0f} % → "
            f"{100 * workers.setup_share:.0f} %"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
