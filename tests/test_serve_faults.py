"""`dropbatch serve` as a user runs it, with hostile uploads beside a good one: every upload's
job ends with its reason, serve keeps serving, and a restart replays no crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.indexed_video import make_indexed_video

ROOT = Path(__file__).resolve().parent.parent
GOOD = (
    'version: 1\ninputs: [clip.mp4]\nchain: [{crop: {aspect: "1:1"}}]\n'
    "output: {preset: ultrafast}\ncompute: {chunk_seconds: 1, max_parallel_tasks: 1}\n"
)
POISON = {
    "bel": b"version: 1\ninputs: [clip.mp4]\n\x07chain: [{crop: {}}]\n",
    "glob": b'version: 1\ninputs: ["a[]b.mp4"]\nchain: [{crop: {}}]\n',
    "deep": b"version: 1\nx: " + b"[" * 20000 + b"]" * 20000 + b"\n",
    "binary": bytes(range(256)) * 8,
}


def serve(inbox: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for key in ("DROPBATCH_LOCAL_ROOT", "DROPBATCH_SQLITE_PATH"):
        env.pop(key, None)
    command = ["serve", "--inbox", str(inbox), "--poll", "0.2", *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "dropbatch.cli", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def states(inbox: Path) -> dict[str, str]:
    found = {}
    for mirror in inbox.rglob("*.status.json"):
        try:
            found[mirror.parent.name] = json.loads(mirror.read_text())["state"]
        except ValueError:  # being replaced right now
            continue
    return found


def test_poison_uploads_beside_a_good_one_leave_serve_serving(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "good").mkdir(parents=True)
    make_indexed_video(inbox / "good" / "clip.mp4", 30, audio=False, preset="ultrafast")
    for case, body in POISON.items():
        (inbox / case).mkdir()
        (inbox / case / "clip.mp4").write_bytes((inbox / "good" / "clip.mp4").read_bytes())
        (inbox / case / "manifest.yaml").write_bytes(body)
    (inbox / "good" / "manifest.yaml").write_text(GOOD)
    proc = serve(inbox)
    try:
        deadline = time.time() + 180
        expected = {"good": "SUCCEEDED", **{case: "INVALID" for case in POISON}}
        while time.time() < deadline and states(inbox) != expected and proc.poll() is None:
            time.sleep(0.5)
        alive = proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert alive, err[-3000:]
    assert states(inbox) == expected, err[-3000:]
    assert (inbox / "good" / "out" / "clip.mp4").is_file()
    for case in POISON:
        error = json.loads((inbox / case / "manifest.status.json").read_text())["error"]
        assert error["code"] and error["message"], case
    assert "delivery failed" not in err  # the trigger contained each one itself
    before = {p: p.read_bytes() for p in inbox.rglob("*.status.json")}
    again = serve(inbox, "--once")
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err[-3000:]
    assert "Traceback" not in err and '"severity": "ERROR"' not in err
    assert {p: p.read_bytes() for p in inbox.rglob("*.status.json")} == before


def test_an_object_whose_delivery_raised_is_reported_again_a_few_times(tmp_path: Path) -> None:
    from core.storage.local import LocalStore
    from dropbatch.watcher import MAX_DELIVERIES, FolderWatcher

    store = LocalStore(tmp_path)
    store.write_bytes("inbox", "c/manifest.yaml", b"version: 1\n")
    watcher = FolderWatcher(store, "inbox")
    assert watcher.scan() == []  # first sight: the upload may still be growing
    reported = 0
    for _ in range(MAX_DELIVERIES + 3):
        for info in watcher.scan():
            reported += 1
            watcher.failed(info)  # as serve does when the delivery raised
    assert reported == MAX_DELIVERIES
    store.write_bytes("inbox", "c/manifest.yaml", b"version: 1\ninputs: [a.mp4]\n")
    watcher.scan()
    assert [i.name for i in watcher.scan()] == ["c/manifest.yaml"]  # a new version: new tries
