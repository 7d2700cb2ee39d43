"""Plumbing benchmark: what our task runtime costs over plain ffmpeg, and how it scales.

    python bench/plumbing.py [--seconds 30] [--chunk-seconds 5] [--preset medium] [--crf 20]

On one test clip (made with `dropbatch.samples.make_talking_video`, cached in bench/.work/):

(a) plumbing vs ffmpeg: `process_chunk` — the code a task runs: FrameReader (decode on its own
    thread) → Chain([noop]) → FrameWriter (encode on its own thread) — over the whole clip as
    one chunk, vs `ffmpeg -i clip -c:v libx264 -preset P -crf C -pix_fmt yuv420p` with the same
    encoder settings; one ffmpeg/x264 thread each. Ratio = t(ffmpeg) / t(ours). Also shown, not
    in the ratio: both held to one core, which is what each task gets in (b).
(b) parallel: a whole local job (LocalLauncher → worker processes, `python -m batch_jobs.task`,
    pulling chunks → stitch, SQLite status + LocalStore under bench/.work/) with chain [noop],
    every task held to one
    core (DROPBATCH_TASK_THREADS=1, and a wrapper task command that pins each task to a free
    core), 1 worker vs 2 workers. Ratio = t(1 worker) / t(2 workers).
(c) stitch: the share of the 2-worker job's wall time between its STITCHING and SUCCEEDED
    state changes.

Wall times on a shared machine move with whatever else runs, so every measurement also shows
the CPU seconds we used and the core-seconds other processes took meanwhile (/proc/stat).
The last line is the summary: `plumbing: X× ffmpeg, parallel: Y×, stitch: Z %`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".work"
BUCKET = "bench"
LOCKS_ENV, CORES_ENV = "DROPBATCH_BENCH_CORE_LOCKS", "DROPBATCH_BENCH_CORES"


# -- the task wrapper: `python bench/plumbing.py --pinned-task` ----------------------------
def pinned_task() -> None:
    """Take a free core (a lock file per core, held across exec), pin to it, run the task."""
    locks = Path(os.environ[LOCKS_ENV])
    cores = [int(c) for c in os.environ[CORES_ENV].split(",")]
    while True:
        for core in cores:
            fd = os.open(locks / f"core-{core}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            os.set_inheritable(fd, True)  # the task keeps the core until it exits
            os.sched_setaffinity(0, {core})  # inherited by the task's ffmpeg processes
            os.execv(sys.executable, [sys.executable, "-m", "batch_jobs.task"])
        time.sleep(0.01)  # both taken: the executor started us before a task fully exited


# -- measuring ------------------------------------------------------------------------------
def _busy_seconds() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _cpu() -> tuple[float, float]:
    """CPU seconds of this process (all threads) and of the children it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


@dataclass
class Sample:
    wall: float = 0.0
    own: float = 0.0  # CPU seconds of this (Python) process
    kids: float = 0.0  # CPU seconds of its children (ffmpeg, tasks and their ffmpeg)
    others: float = 0.0  # core-seconds other processes on the machine used meanwhile

    @property
    def cpu(self) -> float:
        return self.own + self.kids

    def line(self) -> str:
        return (
            f"{self.wall:6.2f} s wall, CPU-s {self.cpu:6.2f} (python {self.own:5.2f}, "
            f"children {self.kids:6.2f}), others used {self.others / max(self.wall, 1e-9):4.2f} "
            "cores"
        )


def wait_quiet(max_wait: float, threshold: float = 0.25) -> float:
    """Wait (at most max_wait s) until other processes use under `threshold` cores."""
    start = time.perf_counter()
    while True:
        busy, (own, kids) = _busy_seconds(), _cpu()
        time.sleep(0.5)
        own2, kids2 = _cpu()
        others = (_busy_seconds() - busy - (own2 - own) - (kids2 - kids)) / 0.5
        waited = time.perf_counter() - start
        if others < threshold or waited >= max_wait:
            return waited


@contextlib.contextmanager
def measure() -> Iterator[Sample]:
    sample = Sample()
    busy, (own, kids), start = _busy_seconds(), _cpu(), time.perf_counter()
    try:
        yield sample
    finally:
        sample.wall = time.perf_counter() - start
        own2, kids2 = _cpu()
        sample.own, sample.kids = own2 - own, kids2 - kids
        sample.others = max(0.0, _busy_seconds() - busy - sample.cpu)


@contextlib.contextmanager
def on_core(core: int | None) -> Iterator[None]:
    """Pin this thread (and the threads and processes it starts) to one core."""
    if core is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def frame_count(path: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
         "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(out.strip().rstrip(","))


# -- the clip -------------------------------------------------------------------------------
def make_clip(seconds: float, width: int, height: int, fps: int) -> Path:
    from dropbatch.samples import make_talking_video

    clip = WORK / f"clip-{seconds:g}s-{width}x{height}-{fps}fps.mp4"
    if not clip.exists():
        tmp = clip.with_suffix(".tmp.mp4")
        make_talking_video(tmp, duration=seconds, fps=fps, canvas=(width, height))
        tmp.rename(clip)
    return clip


# -- (a) plumbing vs ffmpeg -----------------------------------------------------------------
def run_ffmpeg(clip: Path, out: Path, preset: str, crf: int, threads: int) -> Sample:
    from processors.media import ffmpeg

    args = [
        ffmpeg.binary("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-threads", str(threads), "-i", str(clip), "-map", "0:v:0",
        "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
        "-threads", str(threads), "-an", str(out),
    ]  # fmt: skip
    with measure() as sample:
        subprocess.run(args, check=True)
    return sample


@dataclass
class Plumbing:
    """process_chunk over the whole clip as one chunk, with its own store and status."""

    clip: Path
    preset: str
    crf: int
    root: Path = field(init=False)

    def __post_init__(self) -> None:
        from core.config import Settings
        from core.status import open_status
        from core.storage.local import LocalStore
        from processors.media.probe import probe

        self.root = WORK / "plumbing"
        shutil.rmtree(self.root, ignore_errors=True)
        (self.root / BUCKET).mkdir(parents=True)
        os.link(self.clip, self.root / BUCKET / "clip.mp4")
        self.settings = Settings(local_root=self.root)
        self.store, self.status = LocalStore(self.root), open_status(self.settings)
        self.info = probe(str(self.root / BUCKET / "clip.mp4"))

    def run(self, threads: int, attempt: int) -> tuple[Sample, Path]:
        from batch_jobs.task import ProgressReporter, process_chunk
        from batch_jobs.workspace import work_area
        from core.domain import Chunk, PlannedItem
        from core.status.model import TaskProgress

        frames = self.info.frame_count
        item = PlannedItem(
            index=0,
            video="clip.mp4",
            output="out/clip.mp4",
            preview="out/clip.preview.jpg",
            info=self.info,
            chain=[{"name": "noop", "options": {}}],
            encode={"crf": self.crf, "preset": self.preset},
            chunks=[Chunk(index=0, start_frame=0, end_frame=frames)],
        )
        job_id = f"bench-plumbing-{attempt}"
        progress = TaskProgress(job_id=job_id, task_index=0, item=0, chunk=0, frames_total=frames)
        reporter = ProgressReporter(self.status, progress)
        with measure() as sample:
            process_chunk(
                self.store, self.settings, self.status, job_id, BUCKET,
                item, item.chunks[0], reporter, threads,
            )  # fmt: skip
        work = work_area(self.settings, BUCKET)
        return sample, self.root / work.bucket / work.part(job_id, 0, 0)


# -- (b) a whole local job ------------------------------------------------------------------
@dataclass
class JobRun:
    workers: int
    chunks: int
    sample: Sample
    history: dict[str, float]
    stitch_log_seconds: float | None
    output_frames: int

    @property
    def stitch_seconds(self) -> float:
        return self.history["SUCCEEDED"] - self.history["STITCHING"]


def run_job(
    clip: Path, workers: int, cores: list[int], chunk_seconds: float, preset: str, crf: int
) -> JobRun:
    from batch_jobs.containment import new_record
    from batch_jobs.local_executor import LocalLauncher
    from batch_jobs.plan import build_plan
    from core.config import Settings
    from core.jobstatus import transition
    from core.status import open_status
    from core.status.model import LAUNCHABLE_STATES, JobState
    from core.storage.local import LocalStore
    from manifests.model import MAX_INPUTS, Manifest
    from manifests.resolve import resolve_inputs
    from processors.media.probe import probe

    root = WORK / f"job-{workers}w"
    shutil.rmtree(root, ignore_errors=True)
    folder = "in/"
    (root / BUCKET / folder).mkdir(parents=True)
    os.link(clip, root / BUCKET / folder / "clip.mp4")
    locks = root / "core-locks"
    locks.mkdir()
    settings = Settings(
        local_root=root,
        local_workers=workers,
        input_wait_seconds=0.0,
        task_command=f"{sys.executable} {Path(__file__).resolve()} --pinned-task",
    )
    os.environ.update(
        {
            "DROPBATCH_TASK_THREADS": "1",
            LOCKS_ENV: str(locks),
            CORES_ENV: ",".join(map(str, cores)),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
    )
    store, status = LocalStore(root), open_status(settings)

    # The planner, as the trigger runs it; manifests have no noop step, so the chain is
    # swapped for one after planning (the plan, chunks and encoder settings are the real ones).
    manifest = Manifest.model_validate(
        {
            "version": 1,
            "inputs": ["clip.mp4"],
            "chain": [],
            "output": {"crf": crf, "preset": preset},
            "compute": {"gpu": "none", "chunk_seconds": chunk_seconds, "max_parallel_tasks": 100},
        }
    )
    [item] = resolve_inputs(manifest, {"clip.mp4"}, manifest.output.prefix, MAX_INPUTS).items
    info = probe(str(root / BUCKET / folder / "clip.mp4"))
    plan = build_plan(manifest, folder, [(item, info)])
    plan.items[0].chain = [{"name": "noop", "options": {}}]
    chunks = len(plan.items[0].chunks)

    job_id = f"bench-{workers}w"
    name = f"{folder}bench.yaml"
    status.create(new_record(job_id, (BUCKET, name, 1), store.uri(BUCKET, name)))
    transition(store, status, job_id, JobState.RECEIVED)
    transition(
        store, status, job_id, JobState.QUEUED,
        allowed_from=LAUNCHABLE_STATES, plan=plan, chunks_total=chunks,
    )  # fmt: skip
    record = status.get(job_id)
    assert record is not None

    log_path = WORK / f"job-{workers}w.log"
    launcher = LocalLauncher()
    with open(log_path, "w") as log_file:
        real_stderr, sys.stderr = sys.stderr, log_file  # the executor relays task logs here
        try:
            with measure() as sample:
                launcher.launch(record, settings)
                launcher.wait(job_id)
        finally:
            sys.stderr = real_stderr
    record = status.get(job_id)
    assert record is not None
    if record.state != JobState.SUCCEEDED:
        raise RuntimeError(
            f"{workers}-worker job ended {record.state}: {record.error} ({log_path})"
        )
    stitch_log = None
    for line in log_path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("message") == "stitched":
                stitch_log = float(entry["seconds"])
    output = root / BUCKET / plan.items[0].output
    return JobRun(
        workers=workers,
        chunks=chunks,
        sample=sample,
        history={h.state.value: h.at for h in record.history},
        stitch_log_seconds=stitch_log,
        output_frames=frame_count(output),
    )


# -- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="clip length")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--preset", default="medium", help="x264 preset (the manifest default)")
    parser.add_argument("--crf", type=int, default=20, help="x264 CRF (the manifest default)")
    parser.add_argument("--chunk-seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=2, help="(a): best of N, interleaved")
    parser.add_argument("--no-one-core", action="store_true", help="skip (a) held to one core")
    parser.add_argument(
        "--quiet-wait", type=float, default=5.0,
        help="before each measurement wait up to this long for other processes to go idle",
    )  # fmt: skip
    parser.add_argument("--pinned-task", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pinned_task:
        pinned_task()
        return 2  # not reached: pinned_task execs the task
    sys.path.insert(0, str(ROOT))
    WORK.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in args.size.split("x"))
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        print(f"warning: only {len(cores)} core(s) usable; (b) needs 2", file=sys.stderr)
    started = time.perf_counter()

    clip = make_clip(args.seconds, width, height, args.fps)
    plumbing = Plumbing(clip, args.preset, args.crf)
    frames = plumbing.info.frame_count
    print(
        f"machine: {os.cpu_count()} cores ({len(cores)} usable), load {os.getloadavg()[0]:.2f}; "
        f"clip: {clip.name} ({frames} frames); x264 -preset {args.preset} -crf {args.crf}"
    )

    # (a) one ffmpeg/x264 thread each; best wall time of N interleaved runs.
    ff_out = WORK / "ffmpeg-out.mp4"
    ffs, ours, runs = [], [], 0
    part = ff_out
    for _ in range(max(1, args.repeats)):
        wait_quiet(args.quiet_wait)
        ffs.append(run_ffmpeg(clip, ff_out, args.preset, args.crf, threads=1))
        wait_quiet(args.quiet_wait)
        sample, part = plumbing.run(threads=1, attempt=runs)
        ours.append(sample)
        runs += 1
    ff = min(ffs, key=lambda s: s.wall)
    our = min(ours, key=lambda s: s.wall)
    for label, samples, best, path in (("ffmpeg", ffs, ff, ff_out), ("ours  ", ours, our, part)):
        print(
            f"(a) {label} threads=1: {frames / best.wall:5.1f} fps, {best.line()}; "
            f"{path.stat().st_size / 1e6:.2f} MB, {frame_count(path)} frames; "
            f"walls {' '.join(f'{s.wall:.2f}' for s in samples)}"
        )
    plumbing_ratio = ff.wall / our.wall
    print(
        f"(a) plumbing = {plumbing_ratio:.2f}× ffmpeg (wall, best of {len(ffs)}); "
        f"by CPU-s: {ff.cpu / our.cpu:.2f}×"
    )
    if not args.no_one_core:
        with on_core(cores[-1]):
            wait_quiet(args.quiet_wait)
            ff1 = run_ffmpeg(clip, ff_out, args.preset, args.crf, threads=1)
            wait_quiet(args.quiet_wait)
            our1, _ = plumbing.run(threads=1, attempt=runs)
        print(f"(a) ffmpeg one core:  {frames / ff1.wall:5.1f} fps, {ff1.line()}")
        print(f"(a) ours   one core:  {frames / our1.wall:5.1f} fps, {our1.line()}")
        print(f"(a) one core (what each task gets in b): ours = {ff1.wall / our1.wall:.2f}× ffmpeg")

    # (b) and (c): whole local jobs, every task on one core.
    jobs: dict[int, JobRun] = {}
    for workers in (1, 2):
        wait_quiet(args.quiet_wait)
        job = run_job(clip, workers, cores[:workers], args.chunk_seconds, args.preset, args.crf)
        jobs[workers] = job
        h = job.history
        print(
            f"(b) {workers} worker{'s' if workers > 1 else ' '}: {job.chunks} chunks, "
            f"{frames / job.sample.wall:5.1f} fps, {job.sample.line()}; "
            f"QUEUED→STITCHING {h['STITCHING'] - h['QUEUED']:.2f} s, "
            f"STITCHING→SUCCEEDED {job.stitch_seconds:.2f} s "
            f"(stitch log {job.stitch_log_seconds} s); output {job.output_frames} frames"
        )
    parallel = jobs[1].sample.wall / jobs[2].sample.wall
    two = jobs[2]
    stitch = 100 * two.stitch_seconds / two.sample.wall
    print(f"(b) parallel = {parallel:.2f}× (CPU-s 2 workers / 1 worker = "
          f"{two.sample.cpu / jobs[1].sample.cpu:.2f})")  # fmt: skip
    print(f"(c) stitch = {two.stitch_seconds:.2f} s of the 2-worker job's {two.sample.wall:.2f} s")
    print(f"bench took {time.perf_counter() - started:.0f} s")
    print(
        f"plumbing: {plumbing_ratio:.2f}× ffmpeg, parallel: {parallel:.2f}×, stitch: {stitch:.1f} %"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
