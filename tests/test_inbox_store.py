"""One store per local inbox, found from anywhere in it: `run` and `serve` on one inbox agree on
one job (real processes, real ffmpeg), and `status`, `jobs` and `doctor` find that inbox's
store from any folder in it or beside it, also once the manifest is deleted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest

from dropbatch.cli import main
from tests.indexed_video import make_indexed_video
from tests.test_cli import run_cli
from tests.test_doctor import clean_env, doctor

ROOT = Path(__file__).resolve().parent.parent
GOOD = (
    'version: 1\ninputs: [clip.mp4]\nchain: [{crop: {aspect: "1:1"}}]\n'
    "output: {preset: ultrafast}\ncompute: {chunk_seconds: 1, max_parallel_tasks: 2}\n"
)
ACTIVE = {"QUEUED", "RUNNING", "STITCHING"}


def command_env(extra: dict | None = None) -> dict:
    """This machine's environment without a local root or status file of its own: the inbox
    alone must decide where the store is."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(extra or {})}
    for key in ("DROPBATCH_LOCAL_ROOT", "DROPBATCH_SQLITE_PATH", "DROPBATCH_LOCAL_STATE"):
        env.pop(key, None)
    return env


def dropbatch(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli(args, cwd, command_env(env))


def inbox_with_job(tmp_path: Path, frames: int = 30) -> Path:
    """`inbox/job/` with a short real video and its manifest; returns the manifest."""
    folder = tmp_path / "inbox" / "job"
    folder.mkdir(parents=True)
    make_indexed_video(folder / "clip.mp4", frames, preset="ultrafast", audio=False)
    (folder / "manifest.yaml").write_text(GOOD)
    return folder / "manifest.yaml"


def mirror(manifest: Path) -> dict:
    return json.loads(manifest.with_name("manifest.status.json").read_text())


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def gated_env(gate: Path) -> dict[str, str]:
    """The environment whose job tasks wait for the file `gate` before they run."""
    return {
        "DROPBATCH_TASK_COMMAND": f"{sys.executable} {ROOT / 'tests' / 'gated_task.py'}",
        "TASK_GATE": str(gate),
    }


def cli_process(args: list[str], cwd: Path, env: dict[str, str], **popen: Any) -> subprocess.Popen:
    """`dropbatch ARGS` started in `cwd` with `env` over the test environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "dropbatch.cli", *args], cwd=cwd, env=command_env(env), **popen
    )


def start_serve(folder: Path, env: dict[str, str], **popen: Any) -> subprocess.Popen:
    """`dropbatch serve` on the inbox under `folder`, quiet, polling every 0.2 s."""
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    return cli_process(
        ["serve", "--inbox", "inbox", "--poll", "0.2"], folder, env, **quiet, **popen
    )


def start_run(manifest: Path, cwd: Path, env: dict[str, str], err: IO[str]) -> subprocess.Popen:
    """`dropbatch run --quiet MANIFEST` in `cwd`: its report piped as text, its log to `err`."""
    args = ["run", "--quiet", str(manifest)]
    return cli_process(args, cwd, env, stdout=subprocess.PIPE, stderr=err, text=True)


def mirror_state(manifest: Path) -> str:
    try:
        return mirror(manifest)["state"]
    except (OSError, ValueError):  # not written yet, or being replaced right now
        return ""


def test_run_follows_the_job_serve_is_running_on_the_same_manifest(tmp_path: Path) -> None:
    manifest = inbox_with_job(tmp_path, frames=60)
    gate = tmp_path / "gate"  # the job's tasks wait for it: run meets the job while it runs
    env = gated_env(gate)
    serve = start_serve(tmp_path, env)
    run_err = tmp_path / "run.err"
    try:
        wait_for(lambda: mirror_state(manifest) in ACTIVE, 120, "serve to start the job")
        with run_err.open("w") as err:
            run = start_run(manifest, tmp_path / "inbox" / "job", env, err)
            try:
                wait_for(lambda: "following it" in run_err.read_text(), 60, "run to follow it")
            except AssertionError:
                run.kill()  # it never followed: it waits on a job of its own
                raise
            finally:
                gate.touch()
                out, _ = run.communicate(timeout=240)
        wait_for(lambda: mirror_state(manifest) == "SUCCEEDED", 120, "serve's job to succeed")
    finally:
        gate.touch()
        serve.terminate()
        serve.wait(timeout=60)
    assert run.returncode == 0, run_err.read_text()
    job_id = mirror(manifest)["job_id"]
    assert f"job {job_id}: SUCCEEDED" in out
    assert f"output: {manifest.parent / 'out' / 'clip.mp4'}" in out
    # Beside serve (where it was started), `jobs` reads the inbox's store: one job, not two.
    jobs = dropbatch("jobs", cwd=tmp_path).stdout.splitlines()
    assert len(jobs) == 1 and job_id in jobs[0] and "SUCCEEDED" in jobs[0], jobs


def test_run_continues_the_job_it_follows_when_the_serve_running_it_is_killed(
    tmp_path: Path,
) -> None:
    manifest = inbox_with_job(tmp_path)
    gate = tmp_path / "gate"
    env = gated_env(gate)
    serve = start_serve(
        tmp_path,
        env,
        start_new_session=True,  # its own process group: its tasks die with it below
    )
    run_err = tmp_path / "run.err"
    try:
        wait_for(lambda: mirror_state(manifest) in ACTIVE, 120, "serve to start the job")
        with run_err.open("w") as err:
            run = start_run(manifest, tmp_path, env, err)
            try:
                wait_for(lambda: "following it" in run_err.read_text(), 60, "run to follow it")
                os.killpg(serve.pid, signal.SIGKILL)  # serve and the tasks it started
                serve.wait(30)
                wait_for(lambda: "continuing it here" in run_err.read_text(), 60, "a take-over")
            except AssertionError:
                run.kill()  # nobody runs the job: it would follow it forever
                raise
            finally:
                gate.touch()
                out, _ = run.communicate(timeout=240)
    finally:
        gate.touch()
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(30)
    assert run.returncode == 0, run_err.read_text()
    assert f"job {mirror(manifest)['job_id']}: SUCCEEDED" in out
    assert (manifest.parent / "out" / "clip.mp4").is_file()


def test_a_manifest_version_that_ran_is_reported_by_run_not_run_again(tmp_path: Path) -> None:
    manifest = inbox_with_job(tmp_path)
    served = dropbatch("serve", "--inbox", "inbox", "--once", "--poll", "0.2", cwd=tmp_path)
    assert served.returncode == 0, served.stderr
    assert mirror(manifest)["state"] == "SUCCEEDED"
    before = manifest.with_name("manifest.status.json").read_text()

    again = dropbatch("run", "--quiet", str(manifest), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "ran already" in again.stderr and "--again" in again.stderr
    assert f"job {mirror(manifest)['job_id']}: SUCCEEDED" in again.stdout
    # Nothing was run again, so nothing was written: the status file is the one serve left.
    assert manifest.with_name("manifest.status.json").read_text() == before

    # `--again` is a new manifest generation: a new job, run as a re-upload would be.
    fresh = dropbatch("run", "--quiet", "--again", str(manifest), cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    assert mirror(manifest)["job_id"] != json.loads(before)["job_id"]


def test_serve_leaves_alone_an_inbox_that_a_run_made_inside_it(tmp_path: Path) -> None:
    manifest = inbox_with_job(tmp_path)
    ran = dropbatch("run", "--quiet", str(manifest), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert mirror(manifest)["state"] == "SUCCEEDED"

    served = dropbatch("serve", "--inbox", "inbox", "--once", "--poll", "0.2", cwd=tmp_path)
    assert served.returncode == 0, served.stderr
    assert mirror(manifest)["state"] == "SUCCEEDED"  # not INVALID OUTPUT_EXISTS
    # No inbox above the manifest when it ran: its folder became one, with the store inside
    # it; serve says it leaves it alone (its jobs are in that store).
    assert (manifest.parent / ".dropbatch" / "INBOX").is_file()
    assert "nested inbox not served" in served.stderr and str(manifest.parent) in served.stderr
    status = dropbatch("status", str(manifest), "--json", cwd=tmp_path)
    assert json.loads(status.stdout)["state"] == "SUCCEEDED", status.stderr


def test_status_finds_a_job_by_id_folder_and_deleted_manifest_from_anywhere(
    tmp_path: Path,
) -> None:
    manifest = inbox_with_job(tmp_path)
    served = dropbatch("serve", "--inbox", "inbox", "--once", "--poll", "0.2", cwd=tmp_path)
    assert served.returncode == 0, served.stderr
    job_id = mirror(manifest)["job_id"]
    inbox = tmp_path / "inbox"
    (manifest.parent / "out" / "sub").mkdir()

    # By id: from a folder deep in the inbox, and from beside it, where serve was started.
    for cwd in (manifest.parent / "out" / "sub", tmp_path):
        by_id = dropbatch("status", job_id, "--json", cwd=cwd)
        assert by_id.returncode == 0, (cwd, by_id.stderr)
        assert json.loads(by_id.stdout)["state"] == "SUCCEEDED"

    # A folder: the jobs under it, from the inbox itself or from a folder in it.
    for folder in (inbox, manifest.parent):
        listed = dropbatch("status", str(folder), cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert job_id in listed.stdout and "SUCCEEDED" in listed.stdout
    other = inbox / "other"
    other.mkdir()
    assert dropbatch("status", str(other), cwd=tmp_path).returncode == 1  # no job under it

    # The manifest deleted: its job's record still knows its path.
    manifest.unlink()
    gone = dropbatch("status", "inbox/job/manifest.yaml", "--json", cwd=tmp_path)
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout)["job_id"] == job_id

    # Outside any inbox: said, with what makes one, not a traceback.
    lost = dropbatch("status", str(tmp_path / "elsewhere" / "m.yaml"), cwd=tmp_path)
    assert lost.returncode == 1 and "in no dropbatch inbox" in lost.stderr
    assert "Traceback" not in lost.stderr


def test_doctor_on_a_local_inbox_checks_that_inbox_and_its_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    clean_env(monkeypatch, tmp_path)  # the working directory is tmp_path
    (tmp_path / "inbox").mkdir()
    code, lines = doctor(capsys, "--inbox", "inbox")
    assert code == 0, lines
    assert lines["inbox bucket"][0] == f"ok    inbox bucket     {tmp_path / 'inbox'} is there"
    store = tmp_path / "inbox" / ".dropbatch" / "status.sqlite"
    assert f"SQLite {store} answers" in lines["status store"][0]

    # An inbox not made yet: the folder `serve --inbox` would watch, and nothing created.
    code = main(["doctor", "--inbox", "new-inbox"])
    said = capsys.readouterr().out
    assert code == 1
    assert f"mkdir -p {tmp_path / 'new-inbox'}" in said, said
    assert ".dropbatch-data" not in said
    assert not (tmp_path / "new-inbox").exists() and not (tmp_path / ".dropbatch-data").exists()


def test_submit_to_a_folder_in_an_inbox_writes_through_that_inbox_store(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    served = dropbatch("serve", "--inbox", "inbox", "--once", "--poll", "0.1", cwd=tmp_path)
    assert served.returncode == 0, served.stderr
    files = [tmp_path / "clip.mp4", tmp_path / "job.yaml"]
    files[0].write_bytes(b"\x00" * 64)
    files[1].write_text(GOOD)
    sent = dropbatch("submit", *map(str, files), "inbox/c1", cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    assert sorted(p.name for p in (inbox / "c1").iterdir()) == ["clip.mp4", "job.yaml"]
    # The type note of the video is the inbox's (bucket `inbox`, object `c1/clip.mp4`), in its
    # one store: no store of a bucket `c1` beside it.
    assert (inbox / ".dropbatch" / "meta" / "inbox" / "c1" / "clip.mp4.json").is_file()
    assert not (inbox / ".dropbatch" / "meta" / "c1").exists()

    # A folder in no inbox: the files land, and no store is made (serve or run says where).
    loose = dropbatch("submit", *map(str, files), "loose/c2", cwd=tmp_path)
    assert loose.returncode == 0, loose.stderr
    assert sorted(p.name for p in (tmp_path / "loose").rglob("*")) == ["c2", "clip.mp4", "job.yaml"]
