"""Media I/O over real files: probe, frame-exact chunked decode, split encode, stitch and mux.

Every video here is made by ffmpeg in `media_fixtures` and measured back by ffmpeg, so the
expectations come from how the fixture was built, never from the code under test.
"""

from __future__ import annotations

import itertools
import shutil
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from media_fixtures import (
    SAMPLE_RATE,
    beep_onsets,
    code_frame,
    ffprobe_json,
    flash_times,
    frame_indices,
    frame_times,
    has_stream,
    make_index_video,
    make_sync_video,
    read_code,
    write_wav,
)

from core.domain import VideoInfo
from processors.base import ProcessorContext
from processors.chain import Chain, concat_batches
from processors.media.assemble import audio_offset_for, concat_and_mux
from processors.media.ffmpeg import MediaError
from processors.media.frames import EncodeSettings, FrameBatch, FrameReader, FrameWriter
from processors.media.probe import probe

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="needs ffmpeg and ffprobe",
)

SECONDS = 6.0  # long enough that chunks past 2 s really seek into the file
NTSC = Fraction(30000, 1001)
# The display rotation ffmpeg applies to a `rotate=90` tag is a quarter turn that
# np.rot90(frame, 3) undoes (checked against the ffmpeg CLI's own autorotated decode).
UNDO_ROTATE_90 = 3


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    return {
        "cfr": make_index_video(folder / "cfr.mp4", fps=30, duration=SECONDS),
        "ntsc": make_index_video(folder / "ntsc.mp4", fps=NTSC, duration=SECONDS, audio="none"),
        "vfr_jitter": make_index_video(folder / "jitter.mp4", vfr="jitter", duration=SECONDS),
        "vfr_gaps": make_index_video(folder / "gaps.mp4", vfr="gaps", duration=SECONDS),
        "rotated": make_index_video(folder / "rotated.mp4", duration=2.0, rotation=90),
        "silent": make_index_video(folder / "silent.mp4", duration=2.0, audio="none"),
    }


def rate_of(info: VideoInfo) -> Fraction:
    return Fraction(info.fps_num, info.fps_den)


def read_frames(
    source: Path, info: VideoInfo, first: int = 0, count: int | None = None, batch_size: int = 8
) -> FrameBatch:
    reader = FrameReader(
        str(source),
        width=info.width,
        height=info.height,
        rate=rate_of(info),
        start_time=info.start_time,
        first=first,
        count=count,
        batch_size=batch_size,
    )
    try:
        batches = list(reader)
    finally:
        reader.close()
    assert batches, f"no frames decoded from {first}"
    return concat_batches(batches)


def split_transcode(
    source: Path, info: VideoInfo, bounds: list[int], work: Path, *, audio: bool = True
) -> Path:
    """What the tasks and the stitch do: one part per [a, b) chunk, then concat + mux."""
    rate = rate_of(info)
    ctx = ProcessorContext(info=info, rate=rate, width=info.width, height=info.height)
    parts = []
    for n, (start, end) in enumerate(itertools.pairwise(bounds)):
        last = end >= info.frame_count
        chain = Chain([{"name": "noop", "options": {}}], ctx)
        reader = FrameReader.for_video(
            str(source), info, start, None if last else end - start, batch_size=7
        )
        part = work / f"part-{n:03d}.mp4"
        writer = FrameWriter(
            part,
            width=chain.width,
            height=chain.height,
            rate=rate,
            settings=EncodeSettings(crf=18, preset="ultrafast"),
        )
        try:
            emitted = chain.run(reader, lambda b, w=writer: w.write(b.frames), keep=(start, end))
        finally:
            reader.close()
        writer.close()
        assert emitted == end - start, f"chunk {n} emitted {emitted} of {end - start}"
        parts.append(part)
    output = work / "output.mp4"
    concat_and_mux(
        parts,
        output,
        audio_source=str(source) if audio else None,
        audio_offset=audio_offset_for(info.start_time, info.format_start_time, rate),
        duration=float(bounds[-1] / rate),
    )
    return output


# -- the fixtures themselves ------------------------------------------------------------------


def test_frame_code_round_trips_and_rejects_noise() -> None:
    for index in (0, 1, 2, 37, 1000, 4095):
        assert read_code(code_frame(index)) == index
    assert read_code(np.full((240, 320, 3), 128, np.uint8)) == -1
    assert read_code(np.zeros((240, 320, 3), np.uint8)) == -1  # all-zero word fails the check


def test_index_fixture_reads_back_every_frame(media: dict[str, Path]) -> None:
    assert frame_indices(media["cfr"]) == list(range(180))
    assert frame_indices(media["ntsc"]) == list(range(180))
    assert frame_indices(media["rotated"], rotate_back=UNDO_ROTATE_90) == list(range(60))


# -- probe ------------------------------------------------------------------------------------


def test_probe_reads_a_constant_rate_video(media: dict[str, Path]) -> None:
    info = probe(str(media["cfr"]))
    assert rate_of(info) == 30
    assert info.frame_count == 180
    assert (info.width, info.height, info.rotation) == (320, 240, 0)
    assert info.duration == pytest.approx(SECONDS, abs=0.05)
    assert info.has_audio
    assert not info.variable_frame_rate
    assert info.codec == "h264"


def test_probe_keeps_ntsc_rate_exact(media: dict[str, Path]) -> None:
    info = probe(str(media["ntsc"]))
    assert (info.fps_num, info.fps_den) == (30000, 1001)
    assert info.frame_count == 180
    assert not info.variable_frame_rate


def test_probe_flags_variable_rate_and_snaps_to_a_standard_rate(media: dict[str, Path]) -> None:
    info = probe(str(media["vfr_jitter"]))
    assert info.variable_frame_rate
    # Captured at 30 fps with a jittery clock: the grid must be 30 or its NTSC twin, not the
    # raw average (about 29.9) nor ffprobe's r_frame_rate guess.
    assert rate_of(info) in (Fraction(30), NTSC)
    assert abs(info.frame_count - 180) <= 1


def test_probe_flags_dropped_frames_as_variable_rate(media: dict[str, Path]) -> None:
    info = probe(str(media["vfr_gaps"]))
    assert info.variable_frame_rate
    # Captured at 30 fps with a second at 15: the average (27.5) is no rate to encode at;
    # the capture rate is.
    assert rate_of(info) == 30


def test_probe_reports_display_size_of_a_rotated_video(media: dict[str, Path]) -> None:
    info = probe(str(media["rotated"]))
    assert (info.width, info.height) == (240, 320)
    assert info.rotation in (90, 270)
    assert info.frame_count == 60


def test_probe_sees_no_audio(media: dict[str, Path]) -> None:
    assert probe(str(media["silent"])).has_audio is False
    assert probe(str(media["cfr"])).has_audio is True


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_probe_rejects_a_corrupt_file_with_a_clear_message(
    media: dict[str, Path], tmp_path: Path, damage: str
) -> None:
    good = media["cfr"].read_bytes()
    bad = tmp_path / f"{damage}.mp4"
    if damage == "truncated":  # an upload cut short: the moov atom (at the end) is gone
        bad.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        bad.write_bytes(np.random.default_rng(7).integers(0, 256, 20000, np.uint8).tobytes())
    else:
        bad.write_bytes(b"")
    with pytest.raises(MediaError) as caught:
        probe(str(bad))
    message = str(caught.value)
    assert "not a readable video" in message
    assert "Traceback" not in message and len(message) < 500


def test_probe_rejects_audio_only_and_still_images(tmp_path: Path) -> None:
    wav = tmp_path / "voice.wav"
    write_wav(wav, np.zeros(SAMPLE_RATE))
    png = tmp_path / "face.png"
    assert cv2.imwrite(str(png), code_frame(5))
    for path in (wav, png):
        with pytest.raises(MediaError, match="no video stream"):
            probe(str(path))


# -- FrameReader ------------------------------------------------------------------------------


CHUNK_BOUNDS = [0, 37, 64, 101, 150]  # arbitrary; past 60 the reader really seeks


@pytest.mark.parametrize("kind", ["cfr", "ntsc", "vfr_jitter", "vfr_gaps"])
def test_chunked_decode_equals_full_decode(media: dict[str, Path], kind: str) -> None:
    source = media[kind]
    info = probe(str(source))
    full = read_frames(source, info)
    full_codes = [read_code(f) for f in full.frames]
    assert -1 not in full_codes
    assert full.indices.tolist() == list(range(len(full)))
    assert abs(len(full) - info.frame_count) <= 1

    pieces = []
    for start, end in zip(CHUNK_BOUNDS, [*CHUNK_BOUNDS[1:], None], strict=True):
        batch = read_frames(source, info, start, None if end is None else end - start, 5)
        assert batch.indices.tolist() == list(range(start, start + len(batch)))
        pieces.append(batch)
    chunked = concat_batches(pieces)
    assert [read_code(f) for f in chunked.frames] == full_codes
    assert np.array_equal(chunked.frames, full.frames)  # byte-identical, not just the codes


@pytest.mark.parametrize("kind", ["cfr", "ntsc"])
def test_constant_rate_decode_is_every_source_frame_once(media: dict[str, Path], kind: str) -> None:
    info = probe(str(media[kind]))
    full = read_frames(media[kind], info)
    assert [read_code(f) for f in full.frames] == list(range(180))


@pytest.mark.parametrize("kind", ["vfr_jitter", "vfr_gaps"])
def test_variable_rate_decode_shows_the_frame_of_each_grid_time(
    media: dict[str, Path], kind: str
) -> None:
    source = media[kind]
    info = probe(str(source))
    rate = rate_of(info)
    shown_at = dict(zip(frame_indices(source), frame_times(source), strict=True))
    times = sorted(shown_at.values())
    slack = max(np.diff(times)) + 0.5 / float(rate) + 1e-3
    codes = [read_code(f) for f in read_frames(source, info).frames]
    assert codes == sorted(codes), "the decode went back in time"
    for k, code in enumerate(codes):
        assert abs(shown_at[code] - k / float(rate)) <= slack, f"grid frame {k} shows {code}"
    if kind == "vfr_jitter":  # jitter under half a frame: still every frame exactly once
        assert codes == list(range(180))


def test_rotated_video_decodes_upright_at_display_size(media: dict[str, Path]) -> None:
    info = probe(str(media["rotated"]))
    batch = read_frames(media["rotated"], info, 10, 20)
    assert batch.frames.shape == (20, 320, 240, 3)
    assert [read_code(np.rot90(f, UNDO_ROTATE_90)) for f in batch.frames] == list(range(10, 30))


def test_frame_writer_refuses_odd_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        FrameWriter(
            tmp_path / "x.mp4", width=321, height=240, rate=Fraction(30), settings=EncodeSettings()
        )


# -- split encode, concat and mux ------------------------------------------------------------


def video_frame_count(path: Path) -> int:
    doc = ffprobe_json(path, "-select_streams", "v:0", "-count_frames",
                       "-show_entries", "stream=nb_read_frames")  # fmt: skip
    return int(doc["streams"][0]["nb_read_frames"])


@pytest.mark.parametrize("kind", ["cfr", "ntsc"])
def test_split_encode_concatenates_every_frame_exactly_once(
    media: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    source = media[kind]
    info = probe(str(source))
    rate = rate_of(info)
    bounds = [0, 29, 90, 91, 150, info.frame_count]  # a one-frame part, too
    output = split_transcode(source, info, bounds, tmp_path, audio=info.has_audio)

    assert video_frame_count(output) == info.frame_count
    assert frame_indices(output) == list(range(info.frame_count))
    # Every frame on the constant grid: no timestamp drift or gap at the seams.
    times = np.array(frame_times(output))
    assert np.abs(times - np.arange(len(times)) / float(rate)).max() < 1e-3
    assert has_stream(output, "audio") == info.has_audio


def test_split_encode_with_audio_keeps_it_the_video_length(
    media: dict[str, Path], tmp_path: Path
) -> None:
    source = media["cfr"]
    info = probe(str(source))
    output = split_transcode(source, info, [0, 50, 120, info.frame_count], tmp_path)
    doc = ffprobe_json(output, "-show_entries", "stream=codec_type,duration")
    durations = {s["codec_type"]: float(s["duration"]) for s in doc["streams"]}
    assert set(durations) == {"video", "audio"}
    assert durations["video"] == pytest.approx(SECONDS, abs=1e-3)
    assert abs(durations["audio"] - durations["video"]) < 0.05


def test_no_audio_input_muxes_video_only(media: dict[str, Path], tmp_path: Path) -> None:
    source = media["silent"]
    info = probe(str(source))
    output = split_transcode(source, info, [0, 23, info.frame_count], tmp_path, audio=False)
    assert not has_stream(output, "audio")
    assert frame_indices(output) == list(range(info.frame_count))


@pytest.mark.parametrize("fps", [Fraction(30), NTSC], ids=["30", "29.97"])
def test_split_encode_keeps_audio_and_video_in_sync(tmp_path: Path, fps: Fraction) -> None:
    # The video starts 0.2 s after the audio, as phones do: the mux must cut the audio there.
    sync = make_sync_video(tmp_path / "sync.mp4", fps=fps, video_delay=0.2)
    frame = 1 / float(fps)
    source_flashes, source_beeps = flash_times(sync.path), beep_onsets(sync.path)
    assert source_flashes == pytest.approx(list(sync.flashes), abs=1e-3)
    assert source_beeps == pytest.approx(list(sync.flashes), abs=2e-3)

    info = probe(str(sync.path))
    work = tmp_path / "work"
    work.mkdir()
    output = split_transcode(sync.path, info, [0, 17, 40, info.frame_count], work)
    flashes, beeps = flash_times(output), beep_onsets(output)
    assert len(flashes) == len(sync.flashes)
    assert len(beeps) == len(sync.flashes)
    for flash, beep in zip(flashes, beeps, strict=True):
        assert abs(flash - beep) <= frame, f"flash at {flash:.3f}s, beep at {beep:.3f}s"
    # And the whole picture moved by the delay, not by anything else.
    expected = [t - sync.video_delay for t in sync.flashes]
    assert flashes == pytest.approx(expected, abs=frame)


def test_concat_rejects_missing_parts(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="stitch failed"):
        concat_and_mux(
            [tmp_path / "nope.mp4"],
            tmp_path / "out.mp4",
            audio_source=None,
            audio_offset=0.0,
            duration=1.0,
        )
    assert not (tmp_path / "out.concat.txt").exists()
