"""The encoder choice: NVENC only where ffmpeg lists it AND it really encodes, x264 otherwise;
one encoder per item; the exact command lines of both encoders.

Two real ffmpeg builds stand for two kinds of machine, nothing stubbed: this machine's own
(Debian's: it lists h264_nvenc and the cuda hwaccel, and with no NVIDIA driver here the
encode fails, as on a driverless VM) and the static build the imageio-ffmpeg wheel ships (no
NVENC and no cuda compiled in). Whether NVENC works here is found out independently of the
code under test: by encoding real footage with it.
"""

from __future__ import annotations

import os
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from batch_jobs.encoder_choice import EncoderUnavailable, encoder_record, item_encoder
from batch_jobs.workspace import WorkArea
from core.storage.local import LocalStore
from processors.media import encoders, ffmpeg
from processors.media.assemble import concat_and_mux
from processors.media.encoders import (
    NVENC,
    X264,
    best_encoder,
    decode_args,
    encoder_args,
    lists_cuda_decode,
    lists_nvenc,
)
from processors.media.ffmpeg import MediaError
from processors.media.frames import EncodeSettings, FrameReader, FrameWriter
from processors.media.probe import probe
from tests.media_fixtures import ffprobe_json

WORK = WorkArea("w", "inbox/")  # the work bucket's area for the inbox "inbox"
LOGGED = '#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n'  # the real ffmpeg, logged


@pytest.fixture(autouse=True)
def fresh_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts as a new task process on a machine that never probed."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    encoders._nvenc_works.cache_clear()
    yield
    encoders._nvenc_works.cache_clear()


def listing(binary: str, flag: str) -> str:
    return subprocess.run(
        [binary, "-hide_banner", flag], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, target: str) -> Path:
    """`target` installed as the `ffmpeg` on PATH (a link to the binary itself)."""
    folder = tmp_path / f"bin-{name}"
    folder.mkdir()
    (folder / "ffmpeg").symlink_to(target)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    assert ffmpeg.binary("ffmpeg") == str(folder / "ffmpeg")
    return folder / "ffmpeg"


def static_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import imageio_ffmpeg

    return on_path(tmp_path, monkeypatch, "static", imageio_ffmpeg.get_ffmpeg_exe())


def encode(path: Path, source: str, encoder: str, first: int = 0, count: int = 6) -> Path:
    """Frames [first, first + count) of real footage written by FrameWriter with `encoder`."""
    info = probe(source)
    rate = Fraction(info.fps_num, info.fps_den)
    writer = FrameWriter(
        path,
        width=info.width,
        height=info.height,
        rate=rate,
        settings=EncodeSettings(crf=30, preset="ultrafast", encoder=encoder),
    )
    for batch in FrameReader.for_video(source, info, first, count):
        writer.write(batch.frames)
    writer.close()
    return path


def nvenc_encodes_here(tmp_path: Path, source: str) -> bool:
    """The independent answer: does a real NVENC encode of real footage succeed here?"""
    try:
        encode(tmp_path / "nvenc-try.mp4", source, NVENC)
    except (MediaError, BrokenPipeError):
        return False
    return True


def h264_frames(path: Path) -> int:
    entries = ["-count_frames", "-show_entries", "stream=codec_name,nb_read_frames"]
    stream = ffprobe_json(path, *entries)["streams"][0]
    assert stream["codec_name"] == "h264"
    return int(stream["nb_read_frames"])


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


def test_the_listings_of_two_real_builds_are_read_for_nvenc_and_nvdec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    debian = ffmpeg.binary("ffmpeg")
    assert lists_nvenc(listing(debian, "-encoders"))
    assert lists_cuda_decode(listing(debian, "-hwaccels"))
    static = str(static_ffmpeg(tmp_path, monkeypatch))
    assert not lists_nvenc(listing(static, "-encoders"))
    assert not lists_cuda_decode(listing(static, "-hwaccels"))
    # Both list x264: the fallback exists on either.
    assert all(" libx264 " in listing(b, "-encoders") for b in (debian, static))


def test_an_ffmpeg_without_nvenc_gets_x264_and_writes_decodable_h264(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_asset
) -> None:
    static_ffmpeg(tmp_path, monkeypatch)
    assert best_encoder() == X264
    assert decode_args() == []  # no NVDEC either
    part = encode(tmp_path / "part.mp4", str(real_asset("pexels.mp4")), best_encoder())
    assert b"x264 - core" in part.read_bytes()  # x264's own SEI: really x264
    assert h264_frames(part) == 6


def test_nvenc_only_where_it_really_encodes_and_nvdec_only_with_it(
    tmp_path: Path, real_asset
) -> None:
    """This machine's ffmpeg lists NVENC and cuda; the choice follows what really encodes."""
    source = str(real_asset("pexels.mp4"))
    works = nvenc_encodes_here(tmp_path, source)
    assert best_encoder() == (NVENC if works else X264)
    if not works:
        # Listing the cuda hwaccel is not enough: NVDEC goes with a working NVENC only.
        assert decode_args() == []
    part = encode(tmp_path / "part.mp4", source, best_encoder())
    assert h264_frames(part) == 6
    # Whatever decoder is chosen, it gives the frames the software decoder gives.
    info = probe(source)
    chosen = FrameReader.for_video(source, info, 0, 6, decode=tuple(decode_args()))
    software = FrameReader.for_video(source, info, 0, 6)
    assert np.array_equal(
        np.concatenate([b.frames for b in chosen]), np.concatenate([b.frames for b in software])
    )


def test_a_machine_without_nvenc_probes_once_not_in_every_task_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import imageio_ffmpeg

    folder = tmp_path / "bin-logged"
    folder.mkdir()
    script = folder / "ffmpeg"
    log = folder / "calls.log"
    script.write_text(LOGGED.format(log=log, real=imageio_ffmpeg.get_ffmpeg_exe()))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")

    def probes() -> int:
        return log.read_text().count("-encoders") if log.exists() else 0

    assert best_encoder() == X264 and probes() == 1
    encoders._nvenc_works.cache_clear()  # as a new task process starts
    assert best_encoder() == X264 and probes() == 1  # remembered: no new probe
    # A new ffmpeg (another size or time stamp) is probed again.
    script.write_text(script.read_text() + "# upgraded\n")
    encoders._nvenc_works.cache_clear()
    assert best_encoder() == X264 and probes() == 2


def test_the_first_part_decides_the_items_encoder_and_later_parts_follow(
    tmp_path: Path, real_asset
) -> None:
    store = LocalStore(tmp_path / "store")
    here = NVENC if nvenc_encodes_here(tmp_path, str(real_asset("pexels.mp4"))) else X264
    assert item_encoder(store, WORK, "db-1", 0) == here
    assert store.read_bytes("w", encoder_record(WORK, "db-1", 0)).decode() == here
    # Item 1 was started on a machine without NVENC: every machine follows it with x264.
    store.write_bytes("w", encoder_record(WORK, "db-1", 1), X264.encode())
    assert item_encoder(store, WORK, "db-1", 1) == X264
    # Item 2 was started with NVENC on a GPU machine: one without NVENC cannot continue it,
    # it fails (Batch retries it elsewhere) rather than put an x264 part among NVENC ones.
    store.write_bytes("w", encoder_record(WORK, "db-1", 2), NVENC.encode())
    if here == X264:
        with pytest.raises(EncoderUnavailable, match="h264_nvenc"):
            item_encoder(store, WORK, "db-1", 2)
    else:
        assert item_encoder(store, WORK, "db-1", 2) == NVENC


def test_the_fallback_writes_frame_exact_x264_parts_that_stitch_by_stream_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_asset
) -> None:
    static_ffmpeg(tmp_path, monkeypatch)
    store = LocalStore(tmp_path / "store")
    source = str(real_asset("pexels.mp4"))
    info = probe(source)
    encoder = item_encoder(store, WORK, "db-3", 0)
    assert encoder == X264
    rate = Fraction(info.fps_num, info.fps_den)
    parts = [
        encode(tmp_path / f"part-{n}.mp4", source, encoder, first, count)
        for n, (first, count) in enumerate([(0, 7), (7, 5)])
    ]
    assert b"x264 - core" in parts[0].read_bytes()  # x264's own SEI: really x264
    output = tmp_path / "out.mp4"
    concat_and_mux(parts, output, audio_source=None, audio_offset=0.0, duration=float(12 / rate))
    assert h264_frames(output) == 12
