"""Real test videos made with ffmpeg, and readers that measure them back.

An index video shows, in every frame, that frame's own number as a 4×4 grid of big black and
white blocks (12 bits of index, 4 bits of check), which survives H.264 at any sane quality and
any rescale; `frame_indices` decodes a file and reads the numbers back, so a test can say
exactly which source frame ended up where. A sync video flashes white frames at known times
with a beep in the audio at the same instants; `flash_times` and `beep_onsets` measure both in
any file, so a test can check audio/video sync after a split encode and a mux.

Everything here talks to ffmpeg/ffprobe directly, never through the code under test.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import wave
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import numpy as np

from core.domain import Chunk, PlannedItem, VideoInfo
from processors.chain import Chain, concat_batches
from processors.media.frames import FrameBatch, FrameReader

T = TypeVar("T")

SIZE = (320, 240)
SAMPLE_RATE = 48000
GRID = 4  # code blocks per side
INDEX_BITS = 12
DARK, LIGHT = 16, 235  # video-range black and white: nothing to clip
BEEP_HZ = 1000.0
BEEP_SECONDS = 0.06

# A variable-frame-rate retime of a 30 fps source, as setpts / select expressions.
#   jitter: every frame 0, 6 or 12 ms late (a phone's uneven capture clock around 30 fps)
#   gaps:   seconds 3 to 4 at 15 fps (a phone dropping frames in low light)
VFR_RETIMES = {
    "jitter": ("", "settb=1/90000,setpts='(N/30+0.006*mod(N\\,3))/TB'"),
    "gaps": ("select='not(between(n\\,90\\,119)*mod(n\\,2))'", "settb=1/90000,setpts=PTS"),
}


# -- the frame code ---------------------------------------------------------------------------


def _check(index: int) -> int:
    return ((index & 0xF) ^ ((index >> 4) & 0xF) ^ ((index >> 8) & 0xF) ^ 0xA) & 0xF


def code_bits(index: int) -> list[int]:
    if not 0 <= index < 2**INDEX_BITS:
        raise ValueError(f"index {index} does not fit in {INDEX_BITS} bits")
    word = index | (_check(index) << INDEX_BITS)
    return [(word >> b) & 1 for b in range(GRID * GRID)]


def code_frame(index: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """An RGB frame whose blocks spell `index` (row-major, least significant bit first)."""
    width, height = size
    bits = np.array(code_bits(index), np.uint8).reshape(GRID, GRID)
    levels = np.where(bits == 1, LIGHT, DARK).astype(np.uint8)
    rows = (np.arange(height) * GRID) // height
    cols = (np.arange(width) * GRID) // width
    plane = levels[rows[:, None], cols[None, :]]
    return np.repeat(plane[:, :, None], 3, axis=2)


def read_code(frame: np.ndarray) -> int:
    """The index a frame's blocks spell, or -1 when the check bits disagree (not a code)."""
    gray = frame.mean(axis=2) if frame.ndim == 3 else frame.astype(np.float64)
    height, width = gray.shape
    word = 0
    for b in range(GRID * GRID):
        r, c = divmod(b, GRID)
        # The middle half of each block: far from the edges compression smears.
        y0, y1 = (4 * r + 1) * height // (4 * GRID), (4 * r + 3) * height // (4 * GRID)
        x0, x1 = (4 * c + 1) * width // (4 * GRID), (4 * c + 3) * width // (4 * GRID)
        if gray[y0:y1, x0:x1].mean() > (DARK + LIGHT) / 2:
            word |= 1 << b
    index = word & (2**INDEX_BITS - 1)
    return index if word >> INDEX_BITS == _check(index) else -1


# -- ffmpeg / ffprobe ---------------------------------------------------------------------------


def _ffmpeg(args: Sequence[str], stdin: bytes | None = None) -> bytes:
    quiet = ["-hide_banner", "-loglevel", "error", "-y"]
    if stdin is None:
        quiet.append("-nostdin")
    proc = subprocess.run(["ffmpeg", *quiet, *args], input=stdin, capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)}: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def ffprobe_json(path: Path | str, *entries: str) -> dict:
    proc = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", *entries, str(path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return json.loads(proc.stdout)


def stream_start(path: Path | str, kind: str) -> float:
    doc = ffprobe_json(path, "-select_streams", f"{kind}:0", "-show_entries", "stream=start_time")
    return float(doc["streams"][0].get("start_time") or 0.0)


def has_stream(path: Path | str, kind: str) -> bool:
    doc = ffprobe_json(path, "-show_entries", "stream=codec_type")
    return any(s.get("codec_type") == kind for s in doc["streams"])


def _rate_text(fps: Fraction | int | str) -> str:
    rate = Fraction(fps)
    return f"{rate.numerator}/{rate.denominator}"


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    pcm = np.clip(samples, -1.0, 1.0)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((pcm * 32767).astype("<i2").tobytes())


def encode_frames(
    path: Path,
    frames: Iterable[np.ndarray],
    *,
    fps: Fraction | int | str = 30,
    size: tuple[int, int] = SIZE,
    audio: Sequence[str] = (),
    video_delay: float = 0.0,
    vfr: str | None = None,
    crf: int = 18,
) -> None:
    """rawvideo RGB frames piped from numpy → H.264 MP4 (+ AAC from the `audio` input args)."""
    width, height = size
    data = b"".join(np.ascontiguousarray(f, np.uint8).tobytes() for f in frames)
    args = []
    if video_delay:
        args += ["-itsoffset", f"{video_delay:.6f}"]
    args += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}"]
    args += ["-framerate", _rate_text(fps), "-i", "pipe:0", *audio, "-map", "0:v"]
    if audio:
        args += ["-map", "1:a", "-c:a", "aac", "-b:a", "96k"]
    if vfr is not None:
        select, retime = VFR_RETIMES[vfr]
        args += ["-vf", ",".join(f for f in (select, retime) if f)]
        args += ["-enc_time_base", "1:90000", "-video_track_timescale", "90000"]
    # passthrough keeps the timestamps we made (an -itsoffset start, a VFR retime) as they are.
    args += ["-fps_mode", "vfr" if vfr else "passthrough"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-crf", str(crf), "-pix_fmt", "yuv420p"]
    args += ["-g", "40", "-f", "mp4", str(path)]
    _ffmpeg(args, stdin=data)


def set_rotation(source: Path, target: Path, degrees: int) -> None:
    """Tag the video stream with a display rotation (a phone held upright), by stream copy.

    ffmpeg 5.1 has no -display_rotation; the mov muxer turns the `rotate` tag into a display
    matrix only when the stream is copied (an encode drops it).
    """
    _ffmpeg(["-i", str(source), "-map", "0", "-c", "copy",
             "-metadata:s:v:0", f"rotate={degrees}", str(target)])  # fmt: skip


# -- index videos ---------------------------------------------------------------------------


def make_index_video(
    path: Path,
    *,
    fps: Fraction | int | str = 30,
    duration: float = 2.0,
    size: tuple[int, int] = SIZE,
    audio: str = "tone",  # "tone" or "none"
    rotation: int = 0,
    vfr: str | None = None,  # None, or a key of VFR_RETIMES (the source is then 30 fps)
) -> Path:
    rate = Fraction(30) if vfr else Fraction(fps)
    count = round(duration * rate)
    audio_args: list[str] = []
    if audio == "tone":
        audio_args = ["-f", "lavfi", "-t", f"{duration:.6f}",
                      "-i", f"sine=frequency=440:sample_rate={SAMPLE_RATE}"]  # fmt: skip
    elif audio != "none":
        raise ValueError(f"audio must be 'tone' or 'none', not {audio!r}")
    frames = (code_frame(i, size) for i in range(count))
    if rotation:
        plain = path.with_name(path.stem + ".unrotated.mp4")
        encode_frames(plain, frames, fps=rate, size=size, audio=audio_args, vfr=vfr)
        set_rotation(plain, path, rotation)
        plain.unlink()
    else:
        encode_frames(path, frames, fps=rate, size=size, audio=audio_args, vfr=vfr)
    return path


def decode_gray(path: Path | str, side: int = 32) -> np.ndarray:
    """Every stored frame (no frame-rate conversion), autorotated, squashed to side×side gray.

    Square output keeps the code readable whatever the display orientation.
    """
    raw = _ffmpeg([
        "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
        "-vf", f"scale={side}:{side}:flags=area", "-pix_fmt", "gray", "-f", "rawvideo", "pipe:1",
    ])  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(-1, side, side)


def frame_indices(path: Path | str, *, rotate_back: int = 0) -> list[int]:
    """The code read back from every stored frame, in presentation order (-1: unreadable).

    `rotate_back` quarter turns (np.rot90's k) undo a display rotation before reading.
    """
    return [read_code(np.rot90(f, rotate_back)) for f in decode_gray(path)]


def frame_times(path: Path | str) -> list[float]:
    """Presentation time of every stored video frame, in order."""
    doc = ffprobe_json(
        path, "-select_streams", "v:0", "-show_entries", "frame=best_effort_timestamp_time"
    )
    return [float(f["best_effort_timestamp_time"]) for f in doc["frames"]]


# -- sync videos ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncVideo:
    path: Path
    fps: Fraction
    flashes: tuple[float, ...]  # seconds on the file's timeline: a white frame and a beep
    video_delay: float  # where the first video frame sits (the audio starts at 0)


def make_sync_video(
    path: Path,
    *,
    fps: Fraction | int | str = 30,
    duration: float = 3.0,
    flash_frames: Sequence[int] = (9, 33, 61),
    video_delay: float = 0.0,
    size: tuple[int, int] = SIZE,
) -> SyncVideo:
    """Dark frames, white at each of `flash_frames`; a beep at each flash's presentation time.

    `video_delay` starts the video later than the audio (as phones often do), which a mux
    must compensate for.
    """
    rate = Fraction(fps)
    count = round((duration - video_delay) * rate)
    flashes = tuple(video_delay + float(k / rate) for k in flash_frames)
    dark = np.full((size[1], size[0], 3), 40, np.uint8)
    light = np.full((size[1], size[0], 3), 240, np.uint8)
    frames = (light if i in flash_frames else dark for i in range(count))
    samples = np.zeros(round(duration * SAMPLE_RATE))
    beep = np.arange(round(BEEP_SECONDS * SAMPLE_RATE))
    for t in flashes:
        at = round(t * SAMPLE_RATE)
        samples[at : at + len(beep)] = 0.5 * np.sin(2 * np.pi * BEEP_HZ * beep / SAMPLE_RATE)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "beeps.wav"
        write_wav(wav, samples)
        encode_frames(
            path, frames, fps=rate, size=size, audio=["-i", str(wav)], video_delay=video_delay
        )
    return SyncVideo(path, rate, flashes, video_delay)


def flash_times(path: Path | str, threshold: float = 160) -> list[float]:
    """Presentation times of the white frames."""
    means = decode_gray(path, side=16).reshape(-1, 256).mean(axis=1)
    times = frame_times(path)
    assert len(times) == len(means), "ffprobe and ffmpeg disagree on the frame count"
    return [t for t, m in zip(times, means, strict=True) if m > threshold]


def decode_audio(path: Path | str, rate: int = SAMPLE_RATE) -> tuple[np.ndarray, float]:
    """Mono float samples of the first audio stream and the time of the first one."""
    raw = _ffmpeg([
        "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", str(rate),
        "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1",
    ])  # fmt: skip
    return np.frombuffer(raw, "<i2").astype(np.float64) / 32768, stream_start(path, "a")


def beep_onsets(path: Path | str, threshold: float = 0.1) -> list[float]:
    """Times where the audio rises from silence above `threshold` (beeps are 60 ms apart+)."""
    samples, start = decode_audio(path)
    loud = np.flatnonzero(np.abs(samples) > threshold)
    if len(loud) == 0:
        return []
    # A new onset is a loud sample after at least 0.2 s of quiet.
    starts = loud[np.concatenate(([True], np.diff(loud) > 0.2 * SAMPLE_RATE))]
    return [start + float(s) / SAMPLE_RATE for s in starts]


def decode_all(source: Path | str, info: VideoInfo) -> np.ndarray:
    """Every frame of a probed video, decoded the way tasks decode ([N, H, W, 3] RGB)."""
    reader = FrameReader.for_video(str(source), info, 0, None)
    try:
        return concat_batches(list(reader)).frames
    finally:
        reader.close()


def run_chain_over(chain: Chain, reader: FrameReader, keep: tuple[int, int]) -> FrameBatch:
    """The frames in [keep) of `chain` run over what `reader` decodes, as one batch; the reader
    is closed whatever happens."""
    out: list[FrameBatch] = []
    try:
        chain.run(reader, out.append, keep=keep)
    finally:
        reader.close()
    return concat_batches(out)


def run_in_chunks(
    item: PlannedItem, run: Callable[[int, int | None, tuple[int, int]], T]
) -> list[tuple[Chunk, T]]:
    """Each of the item's chunks as its task runs it: decode from its pre-roll to the end of
    its post-roll (the last chunk to the end of the video), keep its own frames.
    `run(first, count, keep)` does one task's work."""
    results = []
    for chunk in item.chunks:
        first = chunk.start_frame - chunk.preroll
        last = chunk.end_frame >= item.info.frame_count
        count = None if last else chunk.end_frame + chunk.postroll - first
        results.append((chunk, run(first, count, (chunk.start_frame, chunk.end_frame))))
    return results
