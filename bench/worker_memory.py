"""Worker memory benchmark: one worker's peak resident memory per chain and frame size.

    python bench/worker_memory.py [--seconds 6] [--heights 360 1080] [--chains crop crop-haar]

Each case runs a real job with `dropbatch run --workers 1` (the local executor, the real task
process, real ffmpeg): the real Pexels footage (tests/real_assets.py) scaled to each height,
the chains of tests/real_chain.py (real YOLO11n, SCRFD-500m + ArcFace MBF, the test-signature
swapper). The worker logs its own peak RSS and its largest child's (a decoder or an encoder)
when it finishes (`task finished`: `peak_rss_mb`); the bench samples /proc every 50 ms for the
worker's whole tree (the task process and its ffmpeg decoder and encoder): `worker_mb` is the
largest sum seen, what one more worker costs the machine. Figures go to
bench/RESULTS.md ("Worker memory"); batch_jobs/worker_memory.py sizes local workers by them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STEPS = {  # a chain's name here → its steps in tests/real_chain.py's STEP_YAML
    "none": (),  # decode → encode: the worker itself
    "crop": ("crop",),
    "crop-haar": ("crop",),
    "swap": ("swap",),
    "lipsync": ("lipsync",),
    "swap-enhance": ("swap", "enhance"),
}


def scaled_clip(source: Path, target: Path, height: int, seconds: float) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-t", f"{seconds}",
         "-vf", f"scale=-2:{height}", "-c:v", "libx264", "-preset", "ultrafast",
         "-pix_fmt", "yuv420p", "-c:a", "aac", str(target)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return target


def manifest_text(chain: str, seconds: float) -> str:
    from tests.real_chain import STEP_YAML, chain_manifest

    text = chain_manifest(STEPS[chain], video="clip.mp4", chunk_seconds=seconds / 2)
    if chain == "none":
        text = text.replace("chain:\n\n", "chain: []\n")
    if chain == "crop-haar":
        text = text.replace(STEP_YAML["crop"], 'crop: {aspect: "9:16", detector: opencv-face}')
    return text


def measure(chain: str, height: int, seconds: float, store: Path, work: Path) -> dict:
    from tests.real_assets import asset
    from tests.real_chain import cli_env, write_face_image

    folder = work / f"{chain}-{height}" / "inbox" / "job"
    folder.mkdir(parents=True)
    scaled_clip(asset("pexels.mp4"), folder / "clip.mp4", height, seconds)
    if chain.startswith("swap"):
        from skimage.data import astronaut

        write_face_image(folder / "faces" / "astronaut.png", astronaut())
    (folder / "manifest.yaml").write_text(manifest_text(chain, seconds))
    env = {**cli_env(store, work / "cache"), "DROPBATCH_LOG_LEVEL": "INFO"}
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dropbatch.cli", "--log-format", "json", "run", "--workers",
             "1", str(folder / "manifest.yaml")],
            env=env, stdout=subprocess.DEVNULL, stderr=err, text=True,
        )  # fmt: skip
        tree_peak = 0.0
        while proc.poll() is None:
            tree_peak = max(tree_peak, worker_tree_mb(proc.pid))
            time.sleep(0.05)
        err.seek(0)
        stderr = err.read()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{chain} at {height}p exited {proc.returncode}: {stderr[-3000:]}")
    finished = []
    for line in stderr.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("message") == "task finished":
            finished.append(entry)
    [last] = finished
    width = int(
        subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
             "stream=width", "-of", "csv=p=0", str(folder / "clip.mp4")],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    return {
        "chain": chain,
        "frame": f"{width}x{height}",
        "peak_rss_mb": last["peak_rss_mb"],
        "worker_mb": round(tree_peak, 1),
        "wall_s": round(wall, 1),
    }


def _processes() -> dict[int, tuple[int, str, float]]:
    """pid → (parent pid, command line, resident MB) for every process /proc shows."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            rss_pages = int((entry / "statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        found[int(entry.name)] = (parent, cmdline, rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**20)
    return found


def worker_tree_mb(root: int) -> float:
    """The resident MB of the worker processes under `root` (batch_jobs.task) and all their
    descendants (ffmpeg): the memory the workers take together."""
    procs = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in procs.items():
        children.setdefault(parent, []).append(pid)

    def tree(pid: int) -> float:
        return procs[pid][2] + sum(tree(c) for c in children.get(pid, []))

    def workers(pid: int) -> list[int]:
        if "batch_jobs.task" in procs[pid][1]:
            return [pid]
        return [w for c in children.get(pid, []) for w in workers(c)]

    return sum(tree(w) for w in workers(root)) if root in procs else 0.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--heights", type=int, nargs="+", default=[360, 1080])
    parser.add_argument("--chains", nargs="+", default=["crop", "crop-haar"], choices=STEPS)
    args = parser.parse_args()
    from tests.real_assets import asset
    from tests.real_chain import build_real_store

    with tempfile.TemporaryDirectory(prefix="worker-memory-") as tmp:
        work = Path(tmp)
        store = build_real_store(work / "models", asset)
        for chain in args.chains:
            for height in args.heights:
                print(json.dumps(measure(chain, height, args.seconds, store, work)), flush=True)
    print(f"load average: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
