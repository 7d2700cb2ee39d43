"""The warm pool on one machine: `dropbatch serve` keeps its workers, with their loaded models,
between jobs (batch_jobs/pool.py), launches workers only for what the free ones do not cover
(batch_jobs/pool_capacity.py), and its workers exit once the warm time passes idle.

Real serve processes, real footage, the real YOLO11n file; the counts come from the logs the
workers and the trigger write."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import Settings
from core.status import open_status
from tests.polling import wait_for
from tests.real_chain import cli_env, trim

ROOT = Path(__file__).resolve().parent.parent
YOLO_CROP = (
    "version: 1\ninputs: [clip.mp4]\n"
    'chain: [{crop: {aspect: "9:16", detector: yolo-onnx, model: yolo11n, detect_every: 4}}]\n'
    "output: {preset: ultrafast}\ncompute: {chunk_seconds: 1, gpu: none}\n"
)
HAAR_CROP = (
    'version: 1\ninputs: [clip.mp4]\nchain: [{crop: {aspect: "1:1"}}]\n'
    "output: {preset: ultrafast}\ncompute: {chunk_seconds: 1, gpu: none}\n"
)


@pytest.fixture(scope="module")
def footage(real_asset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trim(real_asset("pexels.mp4"), tmp_path_factory.mktemp("pool") / "clip.mp4", 1.0, 2.0)


@pytest.fixture(scope="module")
def yolo_store(real_asset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store with the real YOLO11n file (the packaged catalog knows it)."""
    store = tmp_path_factory.mktemp("pool-models")
    (store / "yolo11n.onnx").symlink_to(real_asset("yolo11n.onnx"))
    return store


def start_serve(inbox: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dropbatch.cli",
            "--log-format",
            "json",
            "serve",
            "--inbox",
            str(inbox),
            "--poll",
            "0.2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        start_new_session=True,
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def entries(log: Path) -> list[dict]:
    found = []
    for line in log.read_text().splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def said(log: Path, message: str) -> list[dict]:
    return [e for e in entries(log) if e.get("message") == message]


def state_of(folder: Path) -> str:
    try:
        return json.loads((folder / "manifest.status.json").read_text())["state"]
    except (OSError, ValueError):
        return ""


def drop(inbox: Path, name: str, clip: Path, manifest: str) -> Path:
    folder = inbox / name
    folder.mkdir(parents=True)
    shutil.copy(clip, folder / "clip.mp4")
    (folder / "manifest.yaml").write_text(manifest)
    return folder


def finished(folder: Path, timeout: float = 240) -> str:
    wait_for(
        lambda: state_of(folder) in ("SUCCEEDED", "FAILED", "INVALID"), timeout, f"{folder.name}"
    )
    return state_of(folder)


def serve_env(tmp: Path, store: Path, warm_minutes: float) -> dict[str, str]:
    env = cli_env(store, tmp / "cache")
    env["DROPBATCH_WARM_MINUTES"] = str(warm_minutes)
    return env


def test_serve_keeps_its_workers_warm_and_loads_each_model_once_for_a_folder_of_uploads(
    tmp_path: Path, footage: Path, yolo_store: Path
) -> None:
    """Three uploads dropped one after another, each after the last finished: the workers
    launched for the first (one per chunk on this machine) serve all three; YOLO11n is loaded
    once per worker process, all for the first job, none for the later two, which launch
    nothing."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    log = tmp_path / "serve.log"
    proc = start_serve(inbox, serve_env(tmp_path, yolo_store, warm_minutes=1.0), log)
    jobs = []
    try:
        for n in range(3):
            folder = drop(inbox, f"upload-{n}", footage, YOLO_CROP)
            assert finished(folder) == "SUCCEEDED", (folder / "manifest.status.json").read_text()
            summary = json.loads((folder / "manifest.status.json").read_text())
            assert summary["outputs"]
            jobs.append(summary["job_id"])
    finally:
        stop(proc)
    started = said(log, "pool worker started")
    counted = said(log, "pool counted")
    assert [e["job_id"] for e in counted] == jobs
    assert counted[0]["launching"] == len(started) >= 1
    assert [e["launching"] for e in counted[1:]] == [0, 0], counted
    loads = said(log, "model loaded")
    assert [e["model"] for e in loads] == ["yolo11n.onnx"] * len(started), loads
    assert {e["job_id"] for e in loads} == {jobs[0]}
    assert len({e["process"] for e in loads}) == len(started)
    # Every later job ran on those same workers.
    ran = {(e["job_id"], e["pool_worker"]) for e in said(log, "chunk finished")}
    assert {job for job, _ in ran} == set(jobs)
    assert {w for _, w in ran} <= {e["pool_worker"] for e in started}
    status = open_status(Settings(local_state=inbox / ".dropbatch"))
    workers = status.pool_workers()
    assert sorted(w.worker_id for w in workers) == sorted(e["pool_worker"] for e in started)
    assert all(w.state == "gone" and w.busy_seconds > 0 for w in workers), workers
    assert sum(w.jobs for w in workers) >= 3


def test_warm_workers_exit_after_the_warm_time_and_the_next_upload_launches_again(
    tmp_path: Path, footage: Path, yolo_store: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    log = tmp_path / "serve.log"
    warm = 0.1  # six seconds
    proc = start_serve(inbox, serve_env(tmp_path, yolo_store, warm_minutes=warm), log)
    try:
        first = drop(inbox, "first", footage, HAAR_CROP)
        assert finished(first) == "SUCCEEDED"
        ended = time.monotonic()
        exits = wait_for(lambda: said(log, "pool worker exits"), 60, "the warm worker to exit")
        waited = time.monotonic() - ended
        assert exits[0]["idle_seconds"] >= warm * 60
        assert waited < warm * 60 + 30  # it does not linger either
        second = drop(inbox, "second", footage, HAAR_CROP)
        assert finished(second) == "SUCCEEDED"
    finally:
        stop(proc)
    first_count, second_count = (e["launching"] for e in said(log, "pool counted"))
    assert first_count >= 1 and second_count >= 1  # nobody was left to take the second
    assert len(said(log, "pool worker started")) == first_count + second_count


def block_part(inbox: Path, job_id: str, item: int, chunk: int) -> None:
    """A folder where the chunk's part is to be stored: storing it fails, on every try and on
    every worker (a stand-in for a store that keeps refusing one object)."""
    from batch_jobs.workspace import work_area
    from core.storage.local import LocalStore
    from dropbatch.inbox import LocalInbox, settings_for

    settings = settings_for(LocalInbox(inbox), Settings())
    work = work_area(settings, inbox.name)
    store = LocalStore(settings.local_root, settings.local_state_dir)
    store._path(work.bucket, work.part(job_id, item, chunk)).mkdir(parents=True)


def test_a_chunk_that_keeps_failing_fails_its_own_job_only(
    tmp_path: Path, footage: Path, yolo_store: Path
) -> None:
    """Two uploads on the same warm workers; one job's second chunk cannot be stored. That
    chunk fails on every try, whichever worker takes it: after max_retries + 1 failures,
    counted on the chunk's claim, that job is FAILED with the reason; the other job, and the
    workers, go on."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    manifest = HAAR_CROP.replace("gpu: none}", "gpu: none, max_retries: 1}")
    log = tmp_path / "serve.log"
    proc = start_serve(inbox, serve_env(tmp_path, yolo_store, warm_minutes=0.2), log)
    try:
        broken = drop(inbox, "broken", footage, manifest)
        # Queued: its workers are still starting (a second or more of imports and model
        # checks) when its second chunk's part is made unstorable.
        wait_for(lambda: state_of(broken), 30, "the job to be queued")
        job_id = json.loads((broken / "manifest.status.json").read_text())["job_id"]
        block_part(inbox, job_id, 0, 1)
        good = drop(inbox, "good", footage, manifest)
        assert finished(broken) == "FAILED"
        assert finished(good) == "SUCCEEDED", (good / "manifest.status.json").read_text()

        def all_exited() -> bool:  # no worker died of it: each runs to its warm time's end
            started = {e["pool_worker"] for e in said(log, "pool worker started")}
            return started == {e["pool_worker"] for e in said(log, "pool worker exits")}

        wait_for(all_exited, 90, "every worker to reach the end of its warm time")
    finally:
        stop(proc)
    error = json.loads((broken / "manifest.status.json").read_text())["error"]
    assert error["code"] == "TASKS_FAILED"
    assert "failed 2 times (max_retries 1)" in error["message"], error
    assert "part-00001.mp4" in error["message"]  # the chunk's own reason
    status = open_status(Settings(local_state=inbox / ".dropbatch"))
    failing = [c for c in status.claims(job_id) if c.failures]
    assert [c.failures for c in failing] == [2] and not failing[0].done


def test_a_short_job_behind_a_long_one_gets_a_fair_share_of_the_busy_workers(
    tmp_path: Path, yolo_store: Path
) -> None:
    """The cap leaves no room for new workers: a short job arriving while a long one holds
    every worker is served by those workers after their current chunk (the fewest-workers
    rule), not after the long job's last chunk is claimed (oldest first would be)."""
    from tests.indexed_video import make_indexed_video

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    long_clip, short_clip = tmp_path / "long.mp4", tmp_path / "short.mp4"
    make_indexed_video(long_clip, 30 * 20, audio=False, preset="ultrafast")  # 20 chunks
    make_indexed_video(short_clip, 30 * 2, audio=False, preset="ultrafast")  # 2 chunks
    env = serve_env(tmp_path, yolo_store, warm_minutes=0.2)
    env["DROPBATCH_POOL_MAX_WORKERS"] = "2"
    env["DROPBATCH_LOCAL_WORKERS"] = "2"
    log = tmp_path / "serve.log"
    proc = start_serve(inbox, env, log)
    status = open_status(Settings(local_state=inbox / ".dropbatch"))
    try:
        long = drop(inbox, "long", long_clip, HAAR_CROP)
        wait_for(lambda: len(said(log, "chunk finished")) >= 2, 120, "the long job under way")
        short = drop(inbox, "short", short_clip, HAAR_CROP)
        assert finished(short) == "SUCCEEDED"
        long_id = json.loads((long / "manifest.status.json").read_text())["job_id"]
        done_then = status.count_done(long_id)
        assert finished(long) == "SUCCEEDED"
    finally:
        stop(proc)
    assert done_then <= 12, f"the short job waited for {done_then} of the long job's 20 chunks"
    counted = said(log, "pool counted")
    assert [e["launching"] for e in counted] == [2, 0]  # the cap: the short job launched none


def test_a_restarted_serve_resumes_its_pool_job_from_the_chunks_done(
    tmp_path: Path, yolo_store: Path
) -> None:
    """serve killed mid-job with its pool workers (one process group): `dropbatch status` says
    the job is stalled; the next serve launches workers for it again, which do only the chunks
    not done; the output is every frame once, stitched once."""
    from tests.indexed_video import decoded_indices, make_indexed_video

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    clip = tmp_path / "clip.mp4"
    make_indexed_video(clip, 30 * 8, audio=False, preset="ultrafast")
    env = serve_env(tmp_path, yolo_store, warm_minutes=0.2)
    log = tmp_path / "serve.log"
    first = start_serve(inbox, env, log)
    status = open_status(Settings(local_state=inbox / ".dropbatch"))
    folder = drop(inbox, "job", clip, HAAR_CROP)
    try:
        job_id = wait_for(lambda: json.loads((folder / "manifest.status.json").read_text())
                          ["job_id"] if state_of(folder) else "", 60, "the job")  # fmt: skip
        wait_for(lambda: 2 <= status.count_done(job_id) < 6, 120, "the job half done")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # serve and its pool workers
        first.wait(30)
    done_before = {c.chunk for c in status.claims(job_id) if c.done}
    shown = subprocess.run(
        [sys.executable, "-m", "dropbatch.cli", "status", job_id],
        env=env, cwd=inbox, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "RUNNING" in shown.stdout and "stalled:" in shown.stdout, shown
    second = start_serve(inbox, env, tmp_path / "serve2.log")
    try:
        assert finished(folder) == "SUCCEEDED", (folder / "manifest.status.json").read_text()
    finally:
        stop(second)
    [relaunched] = said(tmp_path / "serve2.log", "pool capacity relaunched")
    assert relaunched["job_id"] == job_id
    claims = {c.chunk: c for c in status.claims(job_id)}
    assert all(claims[c].grants == 1 for c in done_before)  # nothing done was done again
    record = status.get(job_id)
    assert record is not None and len(record.stitch_claims) == 1
    out = inbox / "job" / "out" / "clip.mp4"
    assert decoded_indices(out) == list(range(30 * 8))
