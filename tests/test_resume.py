"""Nothing is stranded: a `dropbatch serve` killed mid-job resumes it when restarted (from
the chunks already done), a killed stitcher is replaced without waiting out its lease, and
killed tasks leave no temporary folders behind. Tasks run through tests/fault_task.py, which
logs each attempt and injects the kills."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pytest

from batch_jobs.intake import StorageEvent
from core.config import Settings
from core.status import open_status
from core.status.model import JobRecord, JobState
from core.storage.local import LocalStore
from tests.indexed_video import decoded_indices, make_indexed_video
from tests.polling import wait_for as poll_until

ROOT = Path(__file__).resolve().parent.parent


# Looking every 50 ms: the half-done window these tests catch is short.
wait_for = partial(poll_until, every=0.05)


FAULT_TASK = f"{sys.executable} {ROOT / 'tests' / 'fault_task.py'}"
FPS = 30


def manifest(chunk_seconds: int) -> str:
    return (
        "version: 1\ninputs: [clip.mp4]\n"
        'chain: [{crop: {aspect: "1:1", smoothing_seconds: 0.2}}]\n'
        "output: {preset: ultrafast, crf: 30}\n"
        f"compute: {{chunk_seconds: {chunk_seconds}, max_parallel_tasks: 2, max_retries: 2}}\n"
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 s of indexed frames: 8 one-second chunks, or 4 two-second ones."""
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    make_indexed_video(path, 8 * FPS, fps=FPS, size=(320, 240), audio=True, preset="ultrafast")
    return path


def task_log(tmp: Path) -> list[dict]:
    path = tmp / "tasks.log"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def scratch_folders(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir())


def run_in_process(deployment: dict, clip: Path, chunk_seconds: int, plan: dict, monkeypatch):
    """Trigger the manifest in this process (local executor); returns (record, seconds)."""
    from tests.local_jobs import wait_local_job
    from triggers.main import intake

    monkeypatch.setenv("DROPBATCH_TASK_COMMAND", FAULT_TASK)
    monkeypatch.setenv("FAULT_PLAN", json.dumps(plan))
    intake.cache_clear()
    folder = deployment["inbox"] / "job"
    folder.mkdir()
    shutil.copy(clip, folder / "clip.mp4")
    (folder / "manifest.yaml").write_text(manifest(chunk_seconds))
    info = LocalStore(deployment["root"]).stat("inbox", "job/manifest.yaml")
    started = time.monotonic()
    [job_id] = intake().handle(StorageEvent("inbox", "job/manifest.yaml", info.generation))
    assert wait_local_job(job_id, timeout=300)
    seconds = time.monotonic() - started
    record = open_status(Settings.from_env()).get(job_id)
    assert record is not None
    return record, seconds


def assert_frame_exact(deployment: dict, record: JobRecord) -> None:
    assert record.state == JobState.SUCCEEDED, record.error
    assert decoded_indices(deployment["inbox"] / "job/out/clip.mp4") == list(range(8 * FPS))


# -- a killed stitcher ---------------------------------------------------------------------
def test_a_killed_stitcher_is_replaced_in_seconds_with_the_default_lease(
    deployment: dict, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DROPBATCH_STITCH_LEASE_SECONDS", "300")  # the default
    record, seconds = run_in_process(deployment, clip, 4, {"kill_in_stitch": True}, monkeypatch)
    # The wrapper kills every first attempt still alive once a lease exists: the stitcher
    # first (a task still exiting may go with it).
    kills = [e for e in task_log(deployment["tmp"]) if e["what"] == "killed-in-stitch"]
    assert kills
    killed_at = min(e["at"] for e in kills)
    assert_frame_exact(deployment, record)
    assert len(record.stitch_claims) == 2  # the dead stitcher's lease, then its replacement
    assert record.items_stitched == [0]
    replaced_after = record.stitch_claims[1].expires_at - 300 - killed_at
    print(
        f"killed stitcher replaced {replaced_after:.1f} s after the kill; "
        f"job took {seconds:.1f} s with a 300 s lease"
    )
    assert seconds < 60


# -- two workers, one chunk ----------------------------------------------------------------
def test_two_workers_racing_for_the_last_chunk_process_it_once_and_stitch_once(
    deployment: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    second = tmp_path / "clip.mp4"
    make_indexed_video(second, FPS, fps=FPS, size=(320, 240), audio=True, preset="ultrafast")
    record, _ = run_in_process(deployment, second, 8, {"race": [0]}, monkeypatch)
    assert record.chunks_total == 1
    assert record.state == JobState.SUCCEEDED, record.error
    assert decoded_indices(deployment["inbox"] / "job/out/clip.mp4") == list(range(FPS))
    [race] = [e for e in task_log(deployment["tmp"]) if e["what"] == "race-end"]
    assert race["codes"] == [0, 0]  # the loser found nothing left and ended cleanly
    status = open_status(Settings.from_env())
    [claim] = status.claims(record.job_id)
    assert (claim.grants, claim.done) == (1, True)
    workers = {w.task_index: w.chunks_done for w in status.progress(record.job_id)}
    assert sorted(workers.values()) == [0, 1] and set(workers) == {0, 100}
    assert len(record.stitch_claims) == 1


# -- a worker stopped mid-chunk -------------------------------------------------------------
def test_a_chunk_held_by_a_stopped_worker_is_taken_over_when_its_lease_runs_out(
    deployment: dict, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker 0 is frozen (SIGSTOP) mid-chunk, alive but silent: worker 1 does the other
    chunk, then waits for the frozen one's lease (longer than a chunk takes), takes its chunk
    over and stitches, while worker 0 is still stopped. Then worker 0 wakes (SIGCONT) and
    finishes its chunk too, second: the output, the done-set and the stitch stay as they
    were."""
    from batch_jobs.workspace import work_area
    from tests.local_jobs import wait_local_job
    from triggers.main import intake

    lease = 15.0  # longer than worker 1 takes for its own chunk: it has to wait
    monkeypatch.setenv("DROPBATCH_CLAIM_LEASE_SECONDS", str(lease))
    monkeypatch.setenv("DROPBATCH_TASK_COMMAND", FAULT_TASK)
    monkeypatch.setenv("FAULT_PLAN", json.dumps({"stop_mid_chunk": [0]}))
    intake.cache_clear()
    folder = deployment["inbox"] / "job"
    folder.mkdir()
    shutil.copy(clip, folder / "clip.mp4")
    (folder / "manifest.yaml").write_text(manifest(4))  # 2 chunks, 2 workers
    info = LocalStore(deployment["root"]).stat("inbox", "job/manifest.yaml")
    [job_id] = intake().handle(StorageEvent("inbox", "job/manifest.yaml", info.generation))
    status = open_status(Settings.from_env())
    stop = wait_for(
        lambda: next(
            (e for e in task_log(deployment["tmp"]) if e["what"] == "stopped-mid-chunk"), None
        ),
        120,
        "worker 0 to be stopped mid-chunk",
    )
    pid = stop["pid"]
    try:

        def ended() -> JobRecord | None:
            record = status.get(job_id)
            return (
                record if record and record.state in (JobState.SUCCEEDED, JobState.FAILED) else None
            )

        # Without a takeover the job would stay RUNNING 3/4 for as long as worker 0 sleeps.
        final = wait_for(ended, 90, "the job to end while worker 0 is stopped")
        after = time.time() - stop["at"]
        assert after < lease + 45  # the lease, then the chunk again (and a stitch) on a busy CI
        assert Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
        assert_frame_exact(deployment, final)
        taken = {c.chunk: c for c in status.claims(job_id)}[stop["chunk"]]
        assert taken.grants == 2 and taken.done  # frozen worker's grant, then the takeover
        assert taken.holder is not None and taken.holder.task_index == 1
        output = folder / "out/clip.mp4"
        before = (output.read_bytes(), output.stat().st_mtime_ns, status.done_counts(job_id))
        print(f"worker 0 stopped mid-chunk; job SUCCEEDED {after:.1f} s later (lease {lease} s)")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert wait_local_job(job_id, timeout=120)
    ends = [e for e in task_log(deployment["tmp"]) if e["what"].startswith("end")]
    assert sorted((e["task"], e["what"]) for e in ends) == [(0, "end:0"), (1, "end:0")]
    # Worker 0 finished its chunk after waking, second: nothing changed.
    again = status.get(job_id)
    assert again.state == JobState.SUCCEEDED
    assert (again.items_stitched, again.outputs) == (final.items_stitched, final.outputs)
    assert len(again.stitch_claims) == 1
    assert (output.read_bytes(), output.stat().st_mtime_ns, status.done_counts(job_id)) == before
    assert {c.chunk: (c.grants, c.done) for c in status.claims(job_id)}[stop["chunk"]] == (2, True)
    work = work_area(Settings.from_env(), "inbox")
    store = LocalStore(deployment["root"])
    assert store.list(work.bucket, work.parts_folder(job_id, 0)) == []  # no late part left
    woke = [p for p in status.progress(job_id) if p.task_index == 0]
    assert [(p.state, p.chunks_done) for p in woke] == [("SUCCEEDED", 0)]


# -- temporary files -----------------------------------------------------------------------
def test_killed_tasks_leave_no_temporary_folders(
    deployment: dict, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = deployment["tmp"] / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # the tasks' temporary folder root
    plan = {"kill_mid_chunk": [0], "term_mid_chunk": [1]}
    record, _ = run_in_process(deployment, clip, 2, plan, monkeypatch)
    assert_frame_exact(deployment, record)
    assert len(record.stitch_claims) == 1
    # Each killed worker's chunk was taken over by a worker alive (or the retry).
    grants = [c.grants for c in open_status(Settings.from_env()).claims(record.job_id)]
    assert sorted(grants) == [1, 1, 2, 2]
    log = task_log(deployment["tmp"])
    killed = [e for e in log if e["what"] == "killed-mid-chunk"]
    assert sorted(e["task"] for e in killed) == [0]
    # Each killed task had its scratch folder, and the SIGKILL left it behind...
    assert all(len(e["scratch"]) == 1 for e in killed)
    ends = {e["task"]: e for e in log if e["what"].startswith("end") and e["attempt"] == 0}
    assert all(ends[e["task"]]["scratch_left"] == e["scratch"] for e in killed)
    # ...while SIGTERM lets the task remove its own on the way out.
    [termed] = [e for e in log if e["what"] == "terminated-mid-chunk"]
    assert len(termed["scratch"]) == 1 and ends[1]["scratch_left"] == []
    assert ends[1]["what"] != "end:0"
    # After the job, nothing: later tasks and the executor removed what dead tasks left.
    assert scratch_folders(scratch) == []


# -- serve killed and restarted ------------------------------------------------------------
def start_serve(inbox: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dropbatch.cli",
                "serve",
                "--inbox",
                str(inbox),
                "--poll",
                "0.2",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: tasks die with it below
        )


def test_a_restarted_serve_resumes_the_job_its_predecessor_left(
    deployment: dict, clip: Path, tmp_path: Path
) -> None:
    inbox = deployment["inbox"]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {
        **os.environ,
        "DROPBATCH_TASK_COMMAND": FAULT_TASK,
        "FAULT_PLAN": "{}",
        # The job's own workers, wrapped by the fault task that logs each attempt; serve's
        # warm pool resumes the same way (tests/test_pool_local.py).
        "DROPBATCH_WARM_MINUTES": "0",
        "TMPDIR": str(scratch),
        "PYTHONPATH": str(ROOT),
    }
    status = open_status(Settings.from_env())
    serve_log = tmp_path / "serve.log"
    first = start_serve(inbox, env, serve_log)
    procs = [first]
    try:
        folder = inbox / "job"
        folder.mkdir()
        shutil.copy(clip, folder / "clip.mp4")
        (folder / "manifest.yaml").write_text(manifest(1))

        def mid_job() -> JobRecord | None:
            [record] = status.recent(1) or [None]
            running = record and [p for p in status.progress(record.job_id) if p.frames_done]
            if record and 2 <= status.count_done(record.job_id) < 6 and running:
                return record
            return None

        wait_for(mid_job, 120, "the job half done")
        os.killpg(first.pid, signal.SIGKILL)  # serve and every task it started
        first.wait(30)
        [stranded] = status.recent(1)
        done_before = {c.chunk for c in status.claims(stranded.job_id) if c.done}
        assert stranded.state == JobState.RUNNING
        assert 2 <= len(done_before) < 8
        killed_at = time.time()
        # Nothing moves while no serve runs, and `dropbatch status` says why.
        shown = subprocess.run(
            [sys.executable, "-m", "dropbatch.cli", "status", stranded.job_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "RUNNING" in shown.stdout and "stalled:" in shown.stdout, shown
        assert status.get(stranded.job_id).revision == stranded.revision

        second = start_serve(inbox, env, serve_log)
        procs.append(second)
        restarted, restarted_at = time.monotonic(), time.time()

        def finished() -> JobRecord | None:
            record = status.get(stranded.job_id)
            return (
                record if record and record.state in (JobState.SUCCEEDED, JobState.FAILED) else None
            )

        final = wait_for(finished, 180, "the resumed job to end")
        resumed_in = time.monotonic() - restarted
        assert final.state == JobState.SUCCEEDED, final.error
        assert decoded_indices(folder / "out/clip.mp4") == list(range(8 * FPS))
        # Only the unfinished chunks ran again; the done ones were kept (claimed once, before
        # the kill).
        after = [e for e in task_log(deployment["tmp"]) if e["at"] > killed_at]
        claims = {c.chunk: c for c in status.claims(stranded.job_id)}
        rerun = {c for c, claim in claims.items() if claim.expires_at - 60 > killed_at}
        assert rerun == set(range(8)) - done_before
        assert all(claims[c].grants == 1 for c in done_before)
        assert status.done_counts(stranded.job_id) == {0: 8}
        assert len(final.stitch_claims) == 1
        assert final.executor is not None and final.executor.pid == second.pid
        assert "resuming job" in serve_log.read_text()
        assert (
            "stalled:"
            not in subprocess.run(
                [sys.executable, "-m", "dropbatch.cli", "status", stranded.job_id],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        )
        # What the killed tasks left in their scratch folders is gone too.
        wait_for(lambda: scratch_folders(scratch) == [], 30, "scratch folders to be removed")
        first_task = min(e["at"] for e in after if e["what"] == "start") - restarted_at
        print(
            f"serve restarted: first task {first_task:.1f} s later, job done after "
            f"{resumed_in:.1f} s ({len(rerun)} of 8 chunks rerun)"
        )
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)


def test_a_job_stitched_just_before_its_executor_died_ends_succeeded_on_resume(
    deployment: dict, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stitcher finished the item, then died before moving the job to SUCCEEDED (its
    executor with it): the restarted serve runs no task and the job ends SUCCEEDED."""
    from batch_jobs.local_executor import LocalLauncher, resume_stranded
    from tests.contract.test_contract_status import dead_process

    record, _ = run_in_process(deployment, clip, 4, {}, monkeypatch)
    assert_frame_exact(deployment, record)
    status = open_status(Settings.from_env())
    gone = dead_process()

    def died_mid_stitch(r: JobRecord) -> None:
        r.state, r.executor = JobState.STITCHING, gone

    status.transact(record.job_id, died_mid_stitch)
    starts = len([e for e in task_log(deployment["tmp"]) if e["what"] == "start"])
    launcher = LocalLauncher()  # a fresh serve process's launcher
    assert resume_stranded(launcher, Settings.from_env()) == [record.job_id]
    assert launcher.wait(record.job_id, timeout=60)
    final = status.get(record.job_id)
    assert final.state == JobState.SUCCEEDED, final.error
    assert len([e for e in task_log(deployment["tmp"]) if e["what"] == "start"]) == starts
    # Nothing left to resume: a second look finds the job finished.
    assert resume_stranded(LocalLauncher(), Settings.from_env()) == []


def test_a_task_that_outlived_its_executor_is_waited_for_not_doubled(deployment: dict) -> None:
    """A serve killed alone leaves its running tasks behind; the executor that resumes the job
    starts a task's chunk again only once the old task process is gone."""
    from batch_jobs.liveness import current_owner, process_started
    from batch_jobs.local_executor import await_orphan
    from core.status.model import TaskProgress
    from tests.contract.test_contract_status import record as a_record

    status = open_status(Settings.from_env())
    status.create(a_record("job-o", state=JobState.RUNNING))
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = process_started(orphan.pid) or ""
        owner = current_owner().model_copy(update={"pid": orphan.pid, "started": started})
        status.put_progress(
            TaskProgress(job_id="job-o", task_index=0, item=0, chunk=0, owner=owner)
        )
        waited = threading.Thread(target=await_orphan, args=(status, "job-o", 0))
        waited.start()
        waited.join(2.0)
        assert waited.is_alive()  # the old task still runs: its chunk is not started again
        orphan.kill()
        orphan.wait()
        waited.join(5.0)
        assert not waited.is_alive()  # it is gone: the chunk may run now
    finally:
        orphan.kill()
        orphan.wait()
