"""`dropbatch` as a person sees it: a progress line, the outputs or one error line, plain log
lines (JSON only when asked), no traceback for what a user can cause."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.indexed_video import make_indexed_video
from tests.test_cli import GOOD, ROOT, dropbatch


def on_terminal(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run the command with stdout and stderr on a pseudo-terminal; (exit code, screen)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dropbatch.cli", *args],
        cwd=cwd,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )
    os.close(follower)
    screen = b""
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the command closed the terminal
            break
        if not data:
            break
        screen += data
    os.close(leader)
    return proc.wait(timeout=300), screen.decode(errors="replace")


def json_lines(text: str) -> list[dict]:
    found = []
    for line in text.splitlines():
        try:
            entry = json.loads(line.strip())
        except ValueError:
            continue
        if isinstance(entry, dict):
            found.append(entry)
    return found


def inbox_with(tmp_path: Path, frames: int | None = 40) -> Path:
    folder = tmp_path / "inbox" / "campaign"
    folder.mkdir(parents=True)
    if frames:
        make_indexed_video(folder / "clip.mp4", frames, preset="ultrafast", audio=False)
    (folder / "manifest.yaml").write_text(GOOD)
    return folder / "manifest.yaml"


def test_run_on_a_terminal_shows_progress_a_plain_warning_and_the_outputs(tmp_path: Path) -> None:
    manifest = inbox_with(tmp_path)
    # A local root set for other uses (here: an empty folder elsewhere) changes nothing: the
    # manifest's own folder is where the run looks and writes.
    foreign = tmp_path / "elsewhere"
    foreign.mkdir()
    env = {
        "DROPBATCH_LOCAL_ROOT": str(foreign),
        # Task 0's first attempt fails (exit 1): the retry shows as one plain warning line.
        "DROPBATCH_TASK_COMMAND": f"{sys.executable} {ROOT / 'tests' / 'fault_task.py'}",
        "FAULT_PLAN": json.dumps({"fail_once": [0]}),
        "FAULT_LOG": str(tmp_path / "faults.jsonl"),
    }
    code, screen = on_terminal("run", str(manifest), cwd=tmp_path, env=env)
    assert code == 0, screen
    assert "\r" in screen and "2/2 chunks" in screen  # one progress line, redrawn in place
    assert "SUCCEEDED" in screen
    # The warning first clears the progress line, so it starts a line of its own.
    warning = "\r\x1b[Kwarning: task attempt failed (task_index=0, attempt=0, exit_code=1)"
    assert warning in screen
    assert f"output: {manifest.parent / 'out' / 'clip.mp4'}" in screen
    assert json_lines(screen) == []
    assert "Traceback" not in screen
    assert (manifest.parent / "out" / "clip.mp4").is_file()
    assert list(foreign.iterdir()) == []


def test_task_log_lines_are_shown_plain_unless_json_is_asked_for(tmp_path: Path) -> None:
    manifest = inbox_with(tmp_path)
    proc = dropbatch("run", str(manifest), cwd=tmp_path, env={"DROPBATCH_LOG_LEVEL": "INFO"})
    assert proc.returncode == 0, proc.stderr
    # The tasks write JSON (Cloud Logging reads it); the command re-renders their lines.
    assert json_lines(proc.stderr) == []
    assert "info: task finished (" in proc.stderr
    assert "info: stitched (" in proc.stderr

    again = dropbatch(
        "run", "--again", "--log-format", "json", str(manifest), cwd=tmp_path,
        env={"DROPBATCH_LOG_LEVEL": "INFO"},
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    events = {entry["message"] for entry in json_lines(again.stderr)}
    assert {"task finished", "stitched", "job succeeded"} <= events


def test_a_local_root_set_elsewhere_does_not_hide_the_manifest(tmp_path: Path) -> None:
    manifest = inbox_with(tmp_path, frames=None)  # clip.mp4 never arrives: INVALID, fast
    env = {"DROPBATCH_LOCAL_ROOT": str(tmp_path / "elsewhere")}
    proc = dropbatch("run", str(manifest), cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip().startswith("error:")]
    assert len(errors) == 1 and "inputs[0].video" in errors[0]
    assert "Traceback" not in proc.stderr
    status = dropbatch("status", str(manifest), cwd=tmp_path, env=env)
    assert "INVALID" in status.stdout, status.stderr


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["run", "{tmp}/nowhere/manifest.yaml"], {}, "no such file"),
        (["run", "{tmp}/inbox/campaign/manifest.yaml"], {"DROPBATCH_STATUS": "mysql"}, "status"),
        (["submit", "{tmp}/inbox/campaign/manifest.yaml", "{tmp}/a-file/sub"], {}, "a-file"),
        (["run", "{tmp}/inbox/campaign/notes.txt"], {}, "not a manifest"),
    ],
    ids=["missing-manifest", "bad-setting", "destination-under-a-file", "not-a-manifest"],
)
def test_user_errors_are_one_line_without_a_traceback(
    tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    inbox_with(tmp_path, frames=None)
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "inbox" / "campaign" / "notes.txt").write_text("not a manifest")
    proc = dropbatch(*(a.format(tmp=tmp_path) for a in args), cwd=tmp_path, env=env)
    assert proc.returncode in (1, 2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_log_format_json_is_taken_before_or_after_the_command(tmp_path: Path, where: str) -> None:
    manifest = inbox_with(tmp_path, frames=None)  # INVALID at once: no tasks to wait for
    flag = ["--log-format", "json"]
    args = [*flag, "run", str(manifest)] if where == "before" else ["run", str(manifest), *flag]
    proc = dropbatch(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    invalid = [e for e in json_lines(proc.stderr) if e["message"] == "job invalid"]
    assert len(invalid) == 1 and invalid[0]["error"]["field"] == "inputs[0].video"


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--workers", "-1", "{manifest}"],
        ["run", "--workers", "0", "{manifest}"],
        ["run", "--workers", "x", "{manifest}"],
        ["serve", "--inbox", "{tmp}/inbox", "--once", "--workers", "0"],
        ["jobs", "--limit", "99999999999999999999"],
        ["jobs", "--limit", "0"],
    ],
    ids=["workers-negative", "workers-zero", "workers-word", "serve-workers-zero", "huge-limit",
         "zero-limit"],
)  # fmt: skip
def test_a_bad_count_is_a_usage_error_and_starts_no_job(tmp_path: Path, args: list[str]) -> None:
    manifest = inbox_with(tmp_path)
    args = [a.format(manifest=manifest, tmp=tmp_path) for a in args]
    proc = dropbatch(*args, cwd=tmp_path, env={"DROPBATCH_LOCAL_ROOT": str(tmp_path / "inbox")})
    assert proc.returncode == 2, proc.stderr
    assert "error: argument" in proc.stderr and "Traceback" not in proc.stderr
    assert not (manifest.parent / "manifest.status.json").exists()  # no job was created
    assert not (tmp_path / "inbox" / ".dropbatch").exists()


def test_workers_auto_is_taken(tmp_path: Path) -> None:
    manifest = inbox_with(tmp_path)
    proc = dropbatch("run", "--quiet", "--workers", "auto", str(manifest), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_submit_to_cloud_storage_without_credentials_says_how_to_log_in(tmp_path: Path) -> None:
    manifest = inbox_with(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "CLOUDSDK_"))}
    # No credentials anywhere: no key file, no gcloud login under this HOME, and a metadata
    # server that refuses at once (as off Google Cloud).
    env.update(HOME=str(home), GCE_METADATA_HOST="127.0.0.1:9", GCE_METADATA_IP="127.0.0.1:9")
    proc = subprocess.run(
        [sys.executable, "-m", "dropbatch.cli", "submit", str(manifest.parent / "clip.mp4"),
         str(manifest), "gs://some-inbox/campaign/"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**env, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "gcloud auth application-default login" in lines[0]


def test_status_of_a_waiting_job_names_the_files_it_waits_for(tmp_path: Path) -> None:
    manifest = inbox_with(tmp_path, frames=None)  # clip.mp4 not uploaded yet
    inbox = tmp_path / "inbox"
    proc = dropbatch("serve", "--inbox", str(inbox), "--once", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    status = dropbatch("status", str(manifest), cwd=tmp_path)
    assert "WAITING_FOR_INPUTS" in status.stdout, status.stdout + status.stderr
    waiting = [line for line in status.stdout.splitlines() if "waiting for:" in line]
    assert len(waiting) == 1 and "campaign/clip.mp4" in waiting[0]
    assert "inputs[0].video" in waiting[0]
