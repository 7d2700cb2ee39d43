"""The `dropbatch` command as a user runs it: exit codes, what it prints, serve on a folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.indexed_video import make_indexed_video

ROOT = Path(__file__).resolve().parent.parent
GOOD = (
    'version: 1\ninputs: [clip.mp4]\nchain: [{crop: {aspect: "1:1"}}]\n'
    "output: {preset: ultrafast}\ncompute: {chunk_seconds: 1, max_parallel_tasks: 2}\n"
)


def run_cli(
    args: tuple[str, ...], cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess:
    """`dropbatch ARGS` as a user runs it, in `cwd` with exactly `env`; its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "dropbatch.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def dropbatch(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli(args, cwd, {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_validate_reports_every_error_with_its_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ninputs: [../x.mp4]\ncompute: {chunk_second: 3, spot: maybe}\n")
    proc = dropbatch("validate", str(bad), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3
    assert any("inputs[0].video" in line for line in lines)
    assert any("compute.chunk_second: unknown key" in line for line in lines)
    assert any("compute.spot" in line for line in lines)
    as_json = json.loads(dropbatch("validate", "--json", str(bad), cwd=tmp_path).stdout)
    assert as_json["valid"] is False and len(as_json["errors"]) == 3


def test_validate_checks_files_exist_unless_told_not_to(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(GOOD)
    missing = dropbatch("validate", str(manifest), cwd=tmp_path)
    assert missing.returncode == 2 and "inputs[0].video" in missing.stdout
    assert dropbatch("validate", "--no-files", str(manifest), cwd=tmp_path).returncode == 0
    (tmp_path / "clip.mp4").write_bytes(b"")
    assert dropbatch("validate", str(manifest), cwd=tmp_path).returncode == 0


def test_schema_command_prints_the_committed_schema(tmp_path: Path) -> None:
    proc = dropbatch("schema", cwd=tmp_path)
    assert proc.stdout == (ROOT / "manifests" / "manifest.schema.json").read_text()


def test_run_then_status(tmp_path: Path) -> None:
    folder = tmp_path / "inbox" / "campaign"
    folder.mkdir(parents=True)
    make_indexed_video(folder / "clip.mp4", 50, preset="ultrafast")
    (folder / "manifest.yaml").write_text(GOOD)
    proc = dropbatch("run", "--quiet", str(folder / "manifest.yaml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"output: {folder / 'out' / 'clip.mp4'}" in proc.stdout
    status = dropbatch("status", str(folder / "manifest.yaml"), cwd=tmp_path)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    assert "worker   0" in status.stdout and "chunk(s) done" in status.stdout
    # No inbox above it: run made the manifest's folder one; `jobs` beside it reads its store.
    jobs = dropbatch("jobs", cwd=tmp_path / "inbox")
    assert "SUCCEEDED" in jobs.stdout


def test_run_invalid_manifest_exits_2(tmp_path: Path) -> None:
    folder = tmp_path / "inbox" / "c"
    folder.mkdir(parents=True)
    (folder / "manifest.yaml").write_text(GOOD)  # clip.mp4 never arrives
    proc = dropbatch("run", "--quiet", str(folder / "manifest.yaml"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "inputs[0].video" in proc.stderr
    mirror = json.loads((folder / "manifest.status.json").read_text())
    assert mirror["state"] == "INVALID" and mirror["error"]["field"] == "inputs[0].video"


def test_serve_runs_what_lands_in_the_inbox(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    folder = inbox / "drop"
    folder.mkdir(parents=True)
    make_indexed_video(folder / "clip.mp4", 40, preset="ultrafast")
    (folder / "manifest.yaml").write_text(GOOD)
    proc = dropbatch("serve", "--inbox", str(inbox), "--once", "--poll", "0.2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (folder / "out" / "clip.mp4").is_file()
    mirror = json.loads((folder / "manifest.status.json").read_text())
    assert mirror["state"] == "SUCCEEDED"
    # README's flow: the manifest's path finds the job serve ran (bucket `inbox`, object
    # `drop/manifest.yaml`), not a job in a bucket named after the manifest's folder.
    status = dropbatch("status", str(folder / "manifest.yaml"), "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "SUCCEEDED"
