"""A truncated or undecodable upload is INVALID at the trigger, naming the file, before any
task spends time on it; a whole file of the same kind passes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from batch_jobs.intake import StorageEvent
from core.config import Settings
from core.status import open_status
from core.status.model import JobState
from core.storage.local import LocalStore
from processors.media.probe import TruncatedVideo, check_tail, probe

CROP = (
    'version: 1\ninputs: [clip.mp4]\nchain: [{crop: {aspect: "1:1"}}]\n'
    "output: {preset: ultrafast}\ncompute: {chunk_seconds: 2, max_retries: 0}\n"
)


@pytest.fixture(scope="module")
def faststart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phone-style MP4: index at the front (faststart), 1 s GOP, AAC audio."""
    path = tmp_path_factory.mktemp("media") / "whole.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440", "-t", "4", "-c:v", "libx264",
         "-preset", "veryfast", "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac",
         "-movflags", "+faststart", str(path)],
        check=True, timeout=120,
    )  # fmt: skip
    return path


def damaged(whole: Path, target: Path, how: str) -> Path:
    data = bytearray(whole.read_bytes())
    if how == "first-30-percent":
        data = data[: int(len(data) * 0.3)]
    else:  # the bytes are all there, the last 30 % of them zeros (a failed disk write)
        cut = int(len(data) * 0.7)
        data[cut:] = bytes(len(data) - cut)
    target.write_bytes(bytes(data))
    return target


def test_a_whole_file_passes_the_tail_check(faststart: Path) -> None:
    check_tail(str(faststart), probe(str(faststart)))


@pytest.mark.parametrize("container", ["ts", "mkv", "flv"])
def test_whole_files_in_other_containers_pass(
    faststart: Path, tmp_path: Path, container: str
) -> None:
    """MPEG-TS seeks land past the last keyframe: the check reads again from further back
    before it calls a file short."""
    copy = tmp_path / f"whole.{container}"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(faststart), "-c", "copy", str(copy)],
        check=True, timeout=60,
    )  # fmt: skip
    check_tail(str(copy), probe(str(copy)))


@pytest.mark.parametrize("name", ["pexels.mp4", "face_noface.mov"])
def test_real_footage_passes(real_asset, name: str) -> None:
    path = real_asset(name)
    check_tail(str(path), probe(str(path)))


@pytest.mark.parametrize("how", ["first-30-percent", "zeroed-tail"])
def test_a_damaged_upload_is_invalid_at_the_trigger_naming_the_file(
    deployment: dict, faststart: Path, how: str
) -> None:
    from triggers.main import intake

    folder = deployment["inbox"] / "c"
    folder.mkdir()
    damaged(faststart, folder / "clip.mp4", how)
    info = probe(str(folder / "clip.mp4"))  # the headers alone do not tell
    assert info.duration == pytest.approx(4.0, abs=0.1)
    with pytest.raises(TruncatedVideo):
        check_tail(str(folder / "clip.mp4"), info)
    (folder / "job.yaml").write_text(CROP)
    generation = LocalStore(deployment["root"]).stat("inbox", "c/job.yaml").generation
    [job_id] = intake().handle(StorageEvent("inbox", "c/job.yaml", generation))
    record = open_status(Settings.from_env()).get(job_id)
    assert record is not None and record.state == JobState.INVALID
    assert record.error is not None and record.error.code == "INPUT_TRUNCATED"
    assert record.error.field == "inputs[0].video"
    assert record.error.uri and record.error.uri.endswith("c/clip.mp4")
    assert record.chunks_total == 0  # nothing was planned or launched
    mirror = json.loads((folder / "job.status.json").read_text())
    assert mirror["error"]["code"] == "INPUT_TRUNCATED"


def test_the_whole_file_is_planned_and_launched(deployment: dict, faststart: Path) -> None:
    from triggers.main import intake

    folder = deployment["inbox"] / "c"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(faststart.read_bytes())
    (folder / "job.yaml").write_text(CROP)
    generation = LocalStore(deployment["root"]).stat("inbox", "c/job.yaml").generation
    [job_id] = intake().handle(StorageEvent("inbox", "c/job.yaml", generation))
    record = open_status(Settings.from_env()).get(job_id)
    assert record is not None and JobState.QUEUED in [h.state for h in record.history]
    assert record.chunks_total == 2
