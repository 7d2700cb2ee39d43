"""A phone-style variable-frame-rate clip through a real `dropbatch run`: every source frame
reaches the output, in order, each shown from its own source time."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from processors.media.probe import drops_no_frame, packet_times, probe
from tests.indexed_video import decoded_indices, draw_index
from tests.test_cli import dropbatch

SIZE = (320, 240)
# (first index, frame count, fps): half a second at 30, one second at 10 (low light), then
# 1.5 s at 30 again.
SEGMENTS = [(0, 15, 30), (15, 10, 10), (25, 45, 30)]
SOURCE_FRAMES = sum(n for _, n, _ in SEGMENTS)  # 70 frames in 3.0 s


def source_time(index: int) -> Fraction:
    """When source frame `index` is shown, from how the clip is built."""
    start = Fraction(0)
    for first, count, fps in SEGMENTS:
        if index < first + count:
            return start + Fraction(index - first, fps)
        start += Fraction(count, fps)
    raise IndexError(index)


def _segment(path: Path, first: int, count: int, fps: int) -> None:
    width, height = SIZE
    args = [
        "ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
        "-s", f"{width}x{height}", "-framerate", str(fps), "-i", "pipe:0",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-video_track_timescale", "90000", str(path),
    ]  # fmt: skip
    noise = np.random.default_rng(0).integers(60, 120, (height, width, 3), dtype=np.uint8)
    frames = []
    for i in range(first, first + count):
        frame = np.roll(noise, i, axis=1).copy()
        draw_index(frame, i)
        frames.append(frame.tobytes())
    subprocess.run(args, input=b"".join(frames), check=True)


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Segments encoded at their own rates, joined by stream copy: the timestamps are the
    segments' own, as a phone writes them (no re-timing by a filter)."""
    folder = tmp_path_factory.mktemp("vfr")
    parts = []
    for first, count, fps in SEGMENTS:
        parts.append(folder / f"seg{first}.mp4")
        _segment(parts[-1], first, count, fps)
    listing = folder / "parts.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    clip = folder / "phone.mp4"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
         "-c", "copy", str(clip)],
        check=True,
    )  # fmt: skip
    return clip


def output_times(path: Path) -> list[float]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time",
         "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [float(v.strip(",")) for v in out.split()]


def test_the_clip_is_variable_rate_and_a_header_rate_would_drop_frames(vfr_clip: Path) -> None:
    times = packet_times(str(vfr_clip), Fraction(1, 90000))
    assert times == [source_time(i) for i in range(SOURCE_FRAMES)]
    # What the headers alone suggest (the 23.3 fps average, snapped to 23.976) loses frames.
    assert not drops_no_frame(times, Fraction(24000, 1001))
    info = probe(str(vfr_clip))
    assert info.variable_frame_rate
    assert drops_no_frame(times, Fraction(info.fps_num, info.fps_den))


def test_vfr_clip_keeps_every_source_frame_through_a_chunked_run(
    vfr_clip: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "inbox" / "phone"
    folder.mkdir(parents=True)
    (folder / "phone.mp4").write_bytes(vfr_clip.read_bytes())
    # 1 s chunks: a chunk edge falls inside the slow second, another in the fast part.
    (folder / "manifest.yaml").write_text(
        'version: 1\ninputs: [phone.mp4]\nchain: [{crop: {aspect: "1:1"}}]\n'
        "output: {preset: ultrafast}\ncompute: {chunk_seconds: 1, max_parallel_tasks: 2}\n"
    )
    proc = dropbatch("run", str(folder / "manifest.yaml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = folder / "out" / "phone.mp4"

    shown = decoded_indices(out)
    times = output_times(out)
    assert len(times) == len(shown)
    first_at: dict[int, int] = {}
    for position, index in enumerate(shown):
        first_at.setdefault(index, position)
    # Every source frame, in order: none dropped, none shown again after a later one.
    runs = [index for k, index in enumerate(shown) if k == 0 or index != shown[k - 1]]
    assert runs == list(range(SOURCE_FRAMES))
    # Each one appears at its own source time (within half an output frame), so a frame is
    # held only for its source duration: the 10 fps second is not stretched or squeezed.
    step = times[1] - times[0]
    for index, position in first_at.items():
        assert abs(times[position] - float(source_time(index))) <= step / 2 + 1e-3, index
    # The capture rate shows every frame (24 or 25 could not): 30 fps, 90 frames in 3.0 s.
    assert step == pytest.approx(1 / 30, abs=1e-4)
    assert len(shown) == 90
