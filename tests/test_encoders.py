"""The encoder choice: NVENC only where ffmpeg lists it AND a test encode succeeds, x264
otherwise; one encoder per item; the exact command lines of both encoders.

No GPU here. A small `ffmpeg` wrapper on PATH stands in for the machines we cannot have: one
whose ffmpeg lists h264_nvenc but fails to encode with it (a driverless VM, as Debian's ffmpeg
is on any machine without an NVIDIA driver), one whose ffmpeg lacks it, and one where the
one-frame test encode succeeds. Everything else it passes to the real ffmpeg, so the fallback
output below is a real x264 encode of real footage.
"""

from __future__ import annotations

import os
import stat
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from batch_jobs.encoder_choice import EncoderUnavailable, encoder_record, item_encoder
from batch_jobs.workspace import WorkArea
from dropbatch.storage.local import LocalStore
from processors.media import encoders, ffmpeg
from processors.media.assemble import concat_and_mux
from processors.media.encoders import NVENC, X264, best_encoder, decode_args, encoder_args
from processors.media.frames import EncodeSettings, FrameReader, FrameWriter
from processors.media.probe import probe
from tests.media_fixtures import ffprobe_json

WORK = WorkArea("w", "inbox/")  # the work bucket's area for the inbox "inbox"
WRAPPER = """#!/bin/sh
# {mode}: listed-broken | missing | works
echo "$*" >> "{log}"
case " $* " in
  *" -encoders "*)
    "{real}" "$@" | grep -v h264_nvenc
    [ "{mode}" = missing ] || echo " V....D h264_nvenc           NVIDIA NVENC H.264 encoder"
    exit 0 ;;
  *" h264_nvenc "*)
    [ "{mode}" = works ] && exit 0
    echo "Cannot load libcuda.so.1" >&2; exit 1 ;;
esac
exec "{real}" "$@"
"""


def fake_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> Path:
    real = ffmpeg.binary("ffmpeg")
    folder = tmp_path / f"bin-{mode}"
    folder.mkdir()
    script = folder / "ffmpeg"
    script.write_text(WRAPPER.format(mode=mode, real=real, log=folder / "calls.log"))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert ffmpeg.binary("ffmpeg") == str(script)
    return script


def test_x264_and_nvenc_command_lines_map_the_manifests_quality() -> None:
    assert encoder_args(X264, 23, "veryfast", threads=2) == [
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
        "-x264-params", "threads=2",
    ]  # fmt: skip
    # crf → cq under VBR with no bitrate cap; preset → p1…p7; threads are x264's only.
    assert encoder_args(NVENC, 23, "veryfast", threads=2) == [
        "-c:v", "h264_nvenc", "-preset", "p2", "-tune", "hq", "-rc", "vbr", "-cq", "23",
        "-b:v", "0", "-profile:v", "high", "-pix_fmt", "yuv420p",
    ]  # fmt: skip
    # cq 0 is "automatic" to NVENC: crf 0 asks for the best quality, cq 1.
    lossless = encoder_args(NVENC, 0, "medium")
    assert lossless[lossless.index("-cq") + 1] == "1"
    presets = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower"]
    steps = [int(encoders.NVENC_PRESETS[p][1]) for p in presets]
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == 7  # faster never slower
    assert encoders.NVENC_PRESETS["medium"] == "p4"  # FFmpeg's own alias for medium
    with pytest.raises(ValueError, match="unknown encoder"):
        encoder_args("libx265", 20, "medium")


@pytest.mark.parametrize(("mode", "expected"), [("listed-broken", X264), ("missing", X264)])
def test_x264_where_nvenc_is_missing_or_fails_its_test_encode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, expected: str
) -> None:
    fake_ffmpeg(tmp_path, monkeypatch, mode)
    assert best_encoder() == expected
    assert decode_args() == []  # no NVDEC either


def test_a_machine_without_nvenc_probes_once_not_in_every_task_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def test_encodes(script: Path) -> int:
        return (script.parent / "calls.log").read_text().count("h264_nvenc -preset")

    broken = fake_ffmpeg(tmp_path, monkeypatch, "listed-broken")
    assert best_encoder() == X264 and test_encodes(broken) == 1
    encoders._nvenc_works.cache_clear()  # as a new task process starts
    assert best_encoder() == X264 and test_encodes(broken) == 1  # remembered: no new probe
    # A working NVENC is never remembered: a machine that loses it must not be told it has it.
    working = fake_ffmpeg(tmp_path, monkeypatch, "works")
    assert best_encoder() == NVENC
    encoders._nvenc_works.cache_clear()
    assert best_encoder() == NVENC and test_encodes(working) == 2


def test_nvenc_and_nvdec_where_the_test_encode_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_ffmpeg(tmp_path, monkeypatch, "works")
    assert best_encoder() == NVENC
    listed = subprocess.run(
        [ffmpeg.binary("ffmpeg"), "-hide_banner", "-hwaccels"], capture_output=True, text=True
    ).stdout.split()
    assert decode_args() == (["-hwaccel", "cuda"] if "cuda" in listed else [])


def test_the_first_part_decides_the_items_encoder_and_later_parts_follow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "store")
    fake_ffmpeg(tmp_path, monkeypatch, "works")
    assert item_encoder(store, WORK, "db-1", 0) == NVENC
    assert store.read_bytes("w", encoder_record(WORK, "db-1", 0)).decode() == NVENC
    # Item 1 was started on a machine without NVENC: a GPU machine follows it with x264.
    store.write_bytes("w", encoder_record(WORK, "db-1", 1), X264.encode())
    assert item_encoder(store, WORK, "db-1", 1) == X264
    # A machine without NVENC cannot continue item 0: it fails (Batch retries it elsewhere)
    # rather than put an x264 part among NVENC ones.
    fake_ffmpeg(tmp_path, monkeypatch, "listed-broken")
    with pytest.raises(EncoderUnavailable, match="h264_nvenc"):
        item_encoder(store, WORK, "db-1", 0)
    assert item_encoder(store, WORK, "db-2", 0) == X264


def test_the_fallback_writes_frame_exact_x264_parts_that_stitch_by_stream_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_asset
) -> None:
    fake_ffmpeg(tmp_path, monkeypatch, "listed-broken")
    store = LocalStore(tmp_path / "store")
    source = str(real_asset("pexels.mp4"))
    info = probe(source)
    encoder = item_encoder(store, WORK, "db-3", 0)
    assert encoder == X264
    rate = Fraction(info.fps_num, info.fps_den)
    parts = []
    for n, (first, count) in enumerate([(0, 7), (7, 5)]):
        reader = FrameReader.for_video(source, info, first, count, decode=tuple(decode_args()))
        part = tmp_path / f"part-{n}.mp4"
        writer = FrameWriter(
            part,
            width=info.width,
            height=info.height,
            rate=rate,
            settings=EncodeSettings(crf=30, preset="ultrafast", encoder=encoder),
        )
        for batch in reader:
            writer.write(batch.frames)
        writer.close()
        parts.append(part)
    assert b"x264 - core" in parts[0].read_bytes()  # x264's own SEI: really x264
    output = tmp_path / "out.mp4"
    concat_and_mux(parts, output, audio_source=None, audio_offset=0.0, duration=float(12 / rate))
    entries = ["-count_frames", "-show_entries", "stream=codec_name,nb_read_frames"]
    stream = ffprobe_json(output, *entries)["streams"][0]
    assert stream["codec_name"] == "h264" and int(stream["nb_read_frames"]) == 12
