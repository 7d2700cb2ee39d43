"""Decided facts about what lands in an inbox: a symbolic link that leads out of it is refused
(as an input and as the output folder), and of several audio tracks the first is kept."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from core.storage.base import OutsideBucket
from core.storage.local import LocalStore
from tests.indexed_video import make_indexed_video
from tests.test_cli import GOOD, dropbatch

FIRST_HZ, SECOND_HZ = 440, 1000


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    make_indexed_video(path, 30, preset="ultrafast", audio=False)
    return path


def campaign(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox" / "campaign"
    folder.mkdir(parents=True)
    (folder / "manifest.yaml").write_text(GOOD)
    return folder


def status_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.status.json").read_text())


def test_an_input_linked_to_a_file_outside_the_inbox_is_invalid_naming_it(
    tmp_path: Path, clip: Path
) -> None:
    folder = campaign(tmp_path)
    private = tmp_path / "private"
    private.mkdir()
    (private / "secret.mp4").write_bytes(clip.read_bytes())
    (folder / "clip.mp4").symlink_to(private / "secret.mp4")
    proc = dropbatch("run", str(folder / "manifest.yaml"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    error = status_of(folder)["error"]
    assert status_of(folder)["state"] == "INVALID"
    assert error["field"] == "inputs[0].video"
    assert error["uri"] == str(folder / "clip.mp4")
    assert "symbolic link" in error["message"]
    assert "Traceback" not in proc.stderr


def test_an_out_folder_linked_outside_the_inbox_is_refused_before_any_work(
    tmp_path: Path, clip: Path
) -> None:
    folder = campaign(tmp_path)
    (folder / "clip.mp4").write_bytes(clip.read_bytes())
    target = tmp_path / "somewhere-else"
    target.mkdir()
    (folder / "out").symlink_to(target, target_is_directory=True)
    proc = dropbatch("run", str(folder / "manifest.yaml"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    record = status_of(folder)
    assert record["state"] == "INVALID"
    assert record["error"]["field"] == "output.prefix"
    assert record["error"]["uri"] == str(folder / "out" / "clip.mp4")
    assert list(target.iterdir()) == []


def test_a_link_that_stays_inside_the_bucket_is_an_object_like_any_other(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    (tmp_path / "inbox" / "takes").mkdir(parents=True)
    (tmp_path / "inbox" / "takes" / "a.mp4").write_bytes(b"take one")
    (tmp_path / "inbox" / "latest.mp4").symlink_to(tmp_path / "inbox" / "takes" / "a.mp4")
    (tmp_path / "outside.mp4").write_bytes(b"not ours")
    (tmp_path / "inbox" / "leak.mp4").symlink_to(tmp_path / "outside.mp4")
    assert store.read_bytes("inbox", "latest.mp4") == b"take one"
    with pytest.raises(OutsideBucket, match=r"leak\.mp4"):
        store.read_bytes("inbox", "leak.mp4")
    with pytest.raises(OutsideBucket):
        store.write_bytes("inbox", "leak.mp4", b"overwrite")
    assert (tmp_path / "outside.mp4").read_bytes() == b"not ours"


def _two_track_clip(path: Path) -> None:
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=1",
         "-f", "lavfi", "-i", f"sine=frequency={FIRST_HZ}:duration=1",
         "-f", "lavfi", "-i", f"sine=frequency={SECOND_HZ}:duration=1",
         "-map", "0:v", "-map", "1:a", "-map", "2:a",
         "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(path)],
        check=True,
    )  # fmt: skip


def _audio_streams(path: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries", "stream=index",
         "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return len(out.split())


def _dominant_hz(path: Path) -> float:
    pcm = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1",
         "-ar", "16000", "-f", "s16le", "pipe:1"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    samples = np.frombuffer(pcm, np.int16).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / 16000)[np.argmax(spectrum)])


def test_of_two_audio_tracks_the_output_keeps_the_first(tmp_path: Path) -> None:
    folder = campaign(tmp_path)
    _two_track_clip(folder / "clip.mp4")
    assert _audio_streams(folder / "clip.mp4") == 2
    proc = dropbatch("run", str(folder / "manifest.yaml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = folder / "out" / "clip.mp4"
    assert _audio_streams(out) == 1
    assert _dominant_hz(out) == pytest.approx(FIRST_HZ, abs=10)


def test_a_manifest_linked_from_outside_the_inbox_is_invalid_saying_so(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "drop").mkdir(parents=True)
    (tmp_path / "theirs.yaml").write_text(GOOD)
    (inbox / "drop" / "manifest.yaml").symlink_to(tmp_path / "theirs.yaml")
    proc = dropbatch("serve", "--inbox", str(inbox), "--once", "--poll", "0.2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    error = status_of(inbox / "drop")["error"]
    assert error["code"] == "MANIFEST_OUTSIDE" and "symbolic link" in error["message"]
