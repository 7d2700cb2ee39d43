"""Cloud Batch, simulated: what one job costs and how long it waits, against the GPU-time floor.

    python bench/cloud.py [--gpu-factor 10] [--preemptions-per-hour 0.1] [--runs 20]
                          [--workers auto|N] [--driver-in-image] [--measured S,F,P]
                          [--chain bench/chains/full.yaml] [--pool-cap 20]

First it measures, once, on this machine, the real-model chain (crop with YOLO11n `yolo-onnx`
→ swap with the real SCRFD-500m/ArcFace analyser and the test swapper, tests/real_chain.py) on
a few seconds of the real Pexels clip, done as a worker does a chunk (decode with its pre-roll,
the chain, the H.264 part): the worker's setup (building the chain: imports, model load), and,
from two chunk lengths, the per-frame cost and the per-chunk fixed cost.

Then it runs the job through the model `dropbatch cost` uses (dropbatch/cost.py): the REAL
planner (batch_jobs/plan.build_plan, the manifest's default `compute`) cuts a 1, 10 and
60-minute 1080p30 video with this chain into chunks and sizes its workers (`compute.workers`:
auto, from the same figures); the workers on Spot L4 VMs pull the chunks with their claim
rule; each VM pays the documented start-up; Spot preemptions arrive at the given rate
(averaged over `--runs` seeds). The per-frame cost is the measured one divided by
`--gpu-factor` (the L4 against this machine's shared CPU cores);
the per-chunk fixed cost and the setup are taken as measured (they are decode/encode starts,
uploads and model loads, not GPU work). Sources for every figure: bench/RESULTS.md.

Then the warm pool of issue 22 (dropbatch/pool_cost.py), on the figures `dropbatch cost` uses
(the chain's speed from the step-cost table, `--chain`, default bench/chains/full.yaml; the
documented start-up, 17 s setup, 2.6 s per chunk; no preemptions): a burst of 20 one-minute
1080p30 uploads 30 s apart, then a 10-minute one 30 s after the last, and one 1-minute upload
alone, each on VMs of its own (today) and on a pool that keeps idle workers 5 or 15 minutes;
then the levers the pool's rules allow, and rule changes for comparison, each on a line.
`--measured` skips the measurement: the rest runs in seconds.

The line before the last: `cloud: X× floor at 10 min, Y× at 60 min, 10 min video in Z min`
(default `compute`). Last line: `pool: burst X× floor, p50 Y min; 10 min video in Z min at W×
floor` (warm 5 minutes, the documented start-up).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from skimage.data import astronaut  # noqa: E402

from batch_jobs.claims import next_claim  # noqa: E402
from batch_jobs.plan import build_plan  # noqa: E402
from batch_jobs.task import chunk_context  # noqa: E402
from batch_jobs.worker_count import (  # noqa: E402
    DRIVER_INSTALL_SECONDS,
    IMAGE_PULL_SECONDS,
    VM_BOOT_SECONDS,
    job_throughput,
)
from dropbatch.cost import (  # noqa: E402
    Throughput,
    estimate,
    hourly_rate,
    synthetic_plan,
)
from dropbatch.pool_cost import (  # noqa: E402
    ALONE,
    BURST,
    POOL_CAP,
    Planner,
    PoolRun,
    per_job_vms,
    planner,
    simulate_pool,
)
from manifests.loader import load_manifest  # noqa: E402
from manifests.model import ComputeOptions, Manifest  # noqa: E402
from manifests.resolve import ResolvedItem  # noqa: E402
from processors.chain import Chain  # noqa: E402
from processors.media.frames import EncodeSettings, FrameReader, FrameWriter  # noqa: E402
from processors.media.probe import probe  # noqa: E402
from tests.real_assets import asset  # noqa: E402
from tests.real_chain import ANALYSER, SWAPPER, YOLO, build_real_store, trim, write_face_image  # noqa: E402

# The workers' own claim rule (batch_jobs/claims.py), run on the simulated claims.
CLAIM_RULE = next_claim

# VM start-up on Batch, from documented figures (bench/RESULTS.md, "Cloud model"): the
# planner's own (batch_jobs/worker_count.py), and the ultralytics image's longer pull.
IMAGE_PULL_SECONDS = {"slim": IMAGE_PULL_SECONDS, "ultralytics": 150.0}
# A worker's start on the VM that this machine cannot show: the container's start and the CUDA
# context and cuDNN/ONNX Runtime session initialisation on the GPU (estimate).
GPU_WORKER_START_SECONDS = 15.0
CHAIN = [
    {"crop": {"aspect": "9:16", "detector": "yolo-onnx", "model": YOLO}},
    {"swap": {"analyser": ANALYSER, "model": SWAPPER, "source": "astronaut.png", "det_size": 320}},
]
MINUTES = (1, 10, 60)
WARM_MINUTES = (5, 15)


def measure(seconds: float) -> tuple[float, float, float, float]:
    """(worker setup s, per-chunk fixed s, per-frame s, clip fps) of the real-model chain."""
    with tempfile.TemporaryDirectory(prefix="bench-cloud-") as tmp:
        work = Path(tmp)
        store = build_real_store(work / "models", asset)
        folder = work / "job"
        folder.mkdir()
        source = trim(asset("pexels.mp4"), folder / "talk.mp4", 2.0, seconds)
        write_face_image(folder / "astronaut.png", astronaut())
        info = probe(str(source))
        rate = Fraction(info.fps_num, info.fps_den)
        manifest = Manifest.model_validate(
            {"version": 1, "inputs": "talk.mp4", "chain": CHAIN, "compute": {"chunk_seconds": 1}}
        )
        [item] = build_plan(manifest, "", [(ResolvedItem(0, "talk.mp4", None, None), info)]).items
        ctx = chunk_context(item, str(store), folder, None)  # the task's own (no speech here)
        started = time.perf_counter()
        Chain(item.chain, ctx)  # the first build: fetch into the cache, imports, model load
        setup = time.perf_counter() - started

        def chunk_time(first: int, count: int) -> float:
            """One chunk as a worker does it (the chain's models already loaded once)."""
            started = time.perf_counter()
            chain = Chain(item.chain, ctx)
            built = time.perf_counter() - started
            reader = FrameReader.for_video(str(source), info, first, count)
            writer = FrameWriter(
                work / "part.mp4", width=chain.width, height=chain.height, rate=rate,
                settings=EncodeSettings(crf=20, preset="veryfast"),
            )  # fmt: skip
            try:
                chain.run(reader, lambda b: writer.write(b.frames), keep=(first, first + count))
            finally:
                reader.close()
            writer.close()
            return time.perf_counter() - started - built

        # Three chunk lengths from the same start, the best of two runs each (this machine is
        # shared), and a least-squares line through them: slope = per frame, intercept = fixed.
        lengths = [max(4, info.frame_count // d) for d in (8, 4, 2)]
        first = chunk_time(0, lengths[0])  # the sessions' first runs, the page cache
        times = [min(chunk_time(0, n) for _ in range(2)) for n in lengths]
        mean_n, mean_t = statistics.mean(lengths), statistics.mean(times)
        per_frame = sum(
            (n - mean_n) * (t - mean_t) for n, t in zip(lengths, times, strict=True)
        ) / sum((n - mean_n) ** 2 for n in lengths)
        fixed = max(0.0, mean_t - per_frame * mean_n)
        # A worker's first chunk pays its sessions' first runs once: setup, not per chunk.
        setup += max(0.0, first - (fixed + per_frame * lengths[0]))
        return setup, fixed, per_frame, float(rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu-factor", type=float, default=10.0)
    parser.add_argument("--preemptions-per-hour", type=float, default=0.1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--clip-seconds", type=float, default=4.0)
    parser.add_argument("--driver-in-image", action="store_true")
    parser.add_argument("--image", choices=sorted(IMAGE_PULL_SECONDS), default="slim")
    parser.add_argument(
        "--chunk-seconds", help="compute.chunk_seconds (default: the manifest's default)"
    )
    parser.add_argument("--workers", default="auto", help="compute.workers (default: auto)")
    parser.add_argument(
        "--chain",
        default=str(ROOT / "bench" / "chains" / "full.yaml"),
        help="manifest whose chain and compute the pool scenarios run (default: the full chain)",
    )
    parser.add_argument("--pool-cap", type=int, default=POOL_CAP, help="live workers at most")
    parser.add_argument(
        "--measured",
        help="SETUP,FIXED,PER_FRAME seconds from an earlier run, instead of measuring again",
    )
    args = parser.parse_args()

    if args.measured:
        setup, fixed, per_frame = map(float, args.measured.split(","))
        clip_fps = 0.0
    else:
        setup, fixed, per_frame, clip_fps = measure(args.clip_seconds)
        print(f"measured: --measured {setup:.3f},{fixed:.3f},{per_frame:.4f}")
    fps = args.gpu_factor / per_frame
    startup = VM_BOOT_SECONDS + IMAGE_PULL_SECONDS[args.image]
    startup += 0.0 if args.driver_in_image else DRIVER_INSTALL_SECONDS
    speed = Throughput(
        frames_per_second=fps,
        vm_startup_seconds=startup,
        worker_setup_seconds=setup + GPU_WORKER_START_SECONDS,
        chunk_overhead_seconds=fixed,
        preemptions_per_vm_hour=args.preemptions_per_hour,
    )
    print(
        f"measured here (640x360 @ {clip_fps:.3g} fps, crop yolo11n + swap): setup {setup:.2f} s "
        f"(+{GPU_WORKER_START_SECONDS:g} s container and GPU start), "
        f"chunk fixed {fixed:.2f} s, {1 / per_frame:.1f} fps on this CPU → {fps:.0f} fps on "
        f"an L4 (×{args.gpu_factor:g}); VM start-up {startup:.0f} s; Spot preemptions "
        f"{args.preemptions_per_hour:g}/VM-hour"
    )
    workers = args.workers if args.workers == "auto" else int(args.workers)
    compute = ComputeOptions(workers=workers)
    if args.chunk_seconds:
        seconds = args.chunk_seconds
        chunk = seconds if seconds == "auto" else float(seconds)
        compute = ComputeOptions(workers=workers, chunk_seconds=chunk)
    header = ("video", "chunks", "VMs", "VM-hours", "USD", "wall", "×floor")
    print(f"compute.workers: {args.workers}")
    print("{:>6} {:>6} {:>5} {:>9} {:>7} {:>8} {:>7}".format(*header))
    found = {m: run(compute, m, speed, args.runs, show=True) for m in MINUTES}
    # The same job with ten workers asked for: the wait the 6-minute target is about.
    ten = run(compute.model_copy(update={"workers": 10}), 10, speed, args.runs)
    print(f"workers: 10: 10 min video in {ten[1] / 60:.1f} min at {ten[0]:.1f}× floor")
    pool = pool_scenarios(Path(args.chain), startup, args.pool_cap)
    print(
        f"cloud: {found[10][0]:.1f}× floor at 10 min, {found[60][0]:.1f}× at 60 min, "
        f"10 min video in {found[10][1] / 60:.1f} min"
    )
    print(pool)


def pool_scenarios(chain: Path, startup: float, cap: int) -> str:
    """Print the pool scenarios side by side, the levers and the rule changes; return the
    `pool:` line (warm 5 minutes, this start-up, the issue's rules)."""
    manifest = load_manifest(chain.read_bytes())
    plan = planner(manifest=manifest)
    # `dropbatch cost`'s figures: the chain's own speed from the step-cost table (0), the
    # documented start-up, setup, chunk and stitch costs; no preemptions.
    speed = Throughput(frames_per_second=0, vm_startup_seconds=startup)
    _, provisioning, hourly = hourly_rate(manifest.compute)
    first = plan(ALONE[0], speed)
    fps = job_throughput(speed, first.gpu, first.items).frames_per_second
    print(
        f"pool (issue 22, simulated): 20 × 1 min 1080p30 uploads 30 s apart, then 10 min 30 s "
        f"after the last; {chain.name} at {fps:.1f} fps (step-cost table); VM start-up "
        f"{startup:.0f} s + setup {speed.worker_setup_seconds:g} s once per VM; cap {cap}; "
        f"{provisioning} ${hourly:.3f}/VM-h"
    )

    def pool(
        warm_minutes: float,
        figures: Throughput = speed,
        chunks: Planner = plan,
        live_cap: int = cap,
        **rules: Any,
    ) -> PoolRun:
        """The burst on a pool keeping idle workers `warm_minutes`."""
        return simulate_pool(
            BURST, figures, chunks, warm_seconds=warm_minutes * 60, cap=live_cap, **rules
        )

    runs = [per_job_vms(BURST, speed, plan)] + [pool(w) for w in WARM_MINUTES]
    alone = [per_job_vms(ALONE, speed, plan)] + [
        simulate_pool(ALONE, speed, plan, warm_seconds=w * 60, cap=cap) for w in WARM_MINUTES
    ]
    names = ["per-job VMs"] + [f"pool warm {w}" for w in WARM_MINUTES]

    def hours(r: PoolRun, digits: int) -> str:
        return f"{r.vm_seconds / 3600:.{digits}f} ({r.idle_seconds / 3600:.{digits}f})"

    rows: list[tuple[str, list[str]]] = [
        ("burst: USD", [f"${r.vm_seconds / 3600 * hourly:.2f}" for r in runs]),
        ("burst: VM-hours (idle warm)", [hours(r, 2) for r in runs]),
        ("burst: × floor", [f"{r.ratio:.2f}×" for r in runs]),
        ("burst: VMs started", [f"{r.vms_started}" for r in runs]),
        ("burst: upload→output p50", [f"{r.wait_quantile(0.5) / 60:.1f} min" for r in runs]),
        ("burst: upload→output p95", [f"{r.wait_quantile(0.95) / 60:.1f} min" for r in runs]),
        ("10 min video: upload→output", [f"{r.jobs[-1].wait_seconds / 60:.1f} min" for r in runs]),
        ("10 min video: × its floor", [f"{r.jobs[-1].ratio:.2f}×" for r in runs]),
        (
            "10 min video: workers (free)",
            [f"{r.jobs[-1].workers} ({r.jobs[-1].free})" for r in runs],
        ),
        ("one 1 min upload: USD", [f"${r.vm_seconds / 3600 * hourly:.3f}" for r in alone]),
        ("one 1 min upload: VM-h (idle)", [hours(r, 3) for r in alone]),
        ("one 1 min upload: × floor", [f"{r.ratio:.2f}×" for r in alone]),
    ]
    print(f"{'':32}" + "".join(f"{n:>16}" for n in names))
    for label, cells in rows:
        print(f"{label:32}" + "".join(f"{c:>16}" for c in cells))
    boot = Throughput(frames_per_second=0, vm_startup_seconds=VM_BOOT_SECONDS)
    print("levers within the rules (warm 5):")
    print(f"  boot image (start-up {VM_BOOT_SECONDS:g} s): {summary(pool(5, boot))}")
    print(f"  planner not told the free workers: {summary(pool(5, plan_with_free=False))}")
    for other in (10, 40):
        print(f"  cap {other}: {summary(pool(5, live_cap=other))}")
    print("rule changes (not the issue's rules; for comparison):")
    print(f"  free only if free before a new VM is ready: {summary(pool(5, free_rule='soon'))}")
    print(f"  that + boot image: {summary(pool(5, boot, free_rule='soon'))}")
    print(f"  that + boot image + warm 1 min: {summary(pool(1, boot, free_rule='soon'))}")
    print("another start (warm 5, the issue's rules): 6 workers idle at the first upload")
    print(f"  pool already warm: {summary(pool(5, idle_at_start=6))}")
    thirty = manifest.model_copy(
        update={"compute": manifest.compute.model_copy(update={"chunk_seconds": 30})}
    )
    short = pool(5, chunks=planner(manifest=thirty), idle_at_start=6)
    floor_s = first.chunk_seconds
    print(f"  that + compute.chunk_seconds: 30 (auto: {floor_s:g} s): {summary(short)}")
    # What no rule can beat: a 1-minute upload on a worker idle when it arrives (one chunk:
    # the planner's shortest for this chain holds the whole minute).
    warm = Throughput(frames_per_second=0, vm_startup_seconds=0, worker_setup_seconds=0)
    least = simulate_pool(ALONE, warm, plan, warm_seconds=0).jobs[0]
    print(
        f"bound: the least wait for a 1 min upload (a worker idle when it arrives, {least.chunks} "
        f"chunk(s)): {least.wait_seconds / 60:.2f} min"
    )
    five = runs[1]
    return (
        f"pool: burst {five.ratio:.1f}× floor, p50 {five.wait_quantile(0.5) / 60:.1f} min; "
        f"10 min video in {five.jobs[-1].wait_seconds / 60:.1f} min at {five.jobs[-1].ratio:.1f}× "
        "floor"
    )


def summary(run: PoolRun) -> str:
    """One pool run on one line: the burst's × floor and waits, the 10-minute video's."""
    long = run.jobs[-1]
    return (
        f"burst {run.ratio:.2f}× floor ({run.idle_seconds / 3600:.2f} VM-h idle warm), "
        f"p50 {run.wait_quantile(0.5) / 60:.1f} min, p95 {run.wait_quantile(0.95) / 60:.1f} min; "
        f"10 min video in {long.wait_seconds / 60:.1f} min at {long.ratio:.2f}× floor"
    )


def run(
    compute: ComputeOptions, minutes: int, speed: Throughput, runs: int, show: bool = False
) -> tuple[float, float]:
    """(× floor, wall seconds) of one video, averaged over `runs` seeds (preemptions). The
    planner sizes `workers: auto` with the same figures the simulation runs on, as the trigger
    does with the deployment's (`CHAIN_FPS`, `VM_STARTUP_SECONDS`)."""
    plan = synthetic_plan(compute, minutes * 60, 30.0, CHAIN, speed=speed)
    done = [
        estimate(plan, compute, speed, seed=seed, claim_rule=CLAIM_RULE) for seed in range(runs)
    ]
    hours = statistics.mean(r.vm_hours for r in done)
    wall = statistics.mean(r.wall_seconds for r in done)
    ratio = hours / done[0].floor_hours
    if show:
        usd = statistics.mean(r.usd for r in done)
        vms = statistics.mean(r.vms for r in done)
        print(
            f"{minutes:>4} m {done[0].chunks:>6} {vms:>5.1f} {hours:>9.3f} {usd:>7.3f} "
            f"{wall / 60:>6.1f} m {ratio:>6.2f}×"
        )
    return ratio, wall


if __name__ == "__main__":
    main()
