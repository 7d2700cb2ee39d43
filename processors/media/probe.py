"""Learn a video's shape from its headers (ffprobe), without decoding it."""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction

from core.domain import VideoInfo
from processors.media.ffmpeg import MediaError, ProbeTimeout, binary, ffprobe

# Each ffprobe run's own limit (s). The packet pass reads the whole file, so it gets more.
PROBE_SECONDS = 120.0
PACKET_PASS_FACTOR = 2.5

# Output rates we snap a variable-frame-rate input to (phones record VFR around these).
STANDARD_RATES = [
    Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30),
    Fraction(50), Fraction(60000, 1001), Fraction(60),
]  # fmt: skip


def _fraction(text: str | None) -> Fraction | None:
    if not text or text in ("0/0", "0/1"):
        return None
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def _rotation(stream: dict) -> int:
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            return round(float(side["rotation"])) % 360
    tag = (stream.get("tags") or {}).get("rotate")
    return int(tag) % 360 if tag else 0


def choose_rate(r_rate: Fraction | None, avg_rate: Fraction | None) -> tuple[Fraction, bool]:
    """The constant output rate, and whether the input is variable-frame-rate."""
    if r_rate and avg_rate and abs(r_rate - avg_rate) / avg_rate < Fraction(1, 1000):
        return r_rate, False
    guess = avg_rate or r_rate
    if guess is None:
        raise MediaError("no frame rate in the video stream")
    nearest = min(STANDARD_RATES, key=lambda r: abs(r - guess))
    if abs(nearest - guess) / guess < Fraction(8, 100):
        return nearest, r_rate is not None and avg_rate is not None
    if r_rate in STANDARD_RATES:  # dropped frames pull the average down; the nominal rate holds
        return r_rate, True
    return guess.limit_denominator(1001), True


# Rates tried, after the headers' choice, when that choice would drop a frame of a VFR input:
# the standard rates, then high-speed capture rates.
FAST_RATES = [Fraction(90), Fraction(100), Fraction(120), Fraction(240)]


def packet_times(
    source: str, time_base: Fraction, timeout: float = PROBE_SECONDS, until: float | None = None
) -> list[Fraction]:
    """Presentation times (s) of the first video stream's packets, in display order.

    One demux pass over the file (it reads the packets and decodes none): cheap next to a
    decode, but a whole read, so the probe does it only for a file whose headers say its rate
    varies.
    """
    args = [
        binary("ffprobe"), "-v", "error", "-select_streams", "v:0",
        "-show_entries", "packet=pts", "-of", "csv=p=0", source,
    ]  # fmt: skip
    try:
        proc = ffprobe(args, timeout * PACKET_PASS_FACTOR, until)
    except ProbeTimeout as exc:
        if exc.deadline:
            raise  # the caller's time is up: it must know, not plan on
        return []  # the header facts stand (a slow remote read must not fail the trigger)
    if proc.returncode != 0:
        return []  # the header facts stand; a damaged file fails in probe or at decode
    stamps = [int(v) for v in proc.stdout.split() if v.strip().lstrip("-").isdigit()]
    return sorted(Fraction(v) * time_base for v in stamps)


def _slot(time: Fraction, rate: Fraction) -> int:
    # The grid slot ffmpeg's fps filter rounds a frame to (nearest, halves away from zero).
    return math.floor(time * rate + Fraction(1, 2))


def drops_no_frame(times: list[Fraction], rate: Fraction) -> bool:
    """Whether every frame lands in a grid slot of its own at `rate` (the fps filter keeps
    only the last of the frames that share a slot)."""
    slots = [_slot(t, rate) for t in times]
    return all(b > a for a, b in itertools.pairwise(slots))


def rate_for_every_frame(
    times: list[Fraction], chosen: Fraction, nominal: Fraction | None
) -> Fraction:
    """The output rate for a VFR input: one that shows every source frame.

    Tried in order: the headers' choice (`chosen`), the stream's nominal rate when it is a
    standard one, then the standard and high-speed rates above `chosen`; the first on which
    no two frames share a slot wins. Slower stretches hold each frame for its own duration,
    so timing is kept. Frames closer than 1/240 s (no camera records faster) are the one
    case that still drops: a higher rate would only multiply the frames to process.
    """
    candidates = [chosen]
    if nominal in STANDARD_RATES and nominal > chosen:
        candidates.append(nominal)
    candidates += [r for r in [*STANDARD_RATES, *FAST_RATES] if r > chosen]
    for rate in candidates:
        if drops_no_frame(times, rate):
            return rate
    return max(chosen, FAST_RATES[-1])


def _video_stream(streams: list[dict]) -> dict | None:
    """The first video stream that is not a cover picture."""
    return next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video"
            and not (s.get("disposition") or {}).get("attached_pic")
        ),
        None,
    )


def probe(source: str, timeout: float = PROBE_SECONDS, until: float | None = None) -> VideoInfo:
    """The video's shape from its headers; each ffprobe run stops after `timeout` s and never
    runs past `until` (time.monotonic()), raising ProbeTimeout."""
    args = [
        binary("ffprobe"), "-v", "error", "-print_format", "json",
        "-show_format", "-show_streams", source,
    ]  # fmt: skip
    proc = ffprobe(args, timeout, until)
    if proc.returncode != 0:
        last = (proc.stderr or "").strip().splitlines()
        raise MediaError(f"not a readable video ({last[-1] if last else 'ffprobe failed'})")
    doc = json.loads(proc.stdout or "{}")
    fmt = doc.get("format", {})
    # A still image (png_pipe, jpeg_pipe, image2...) decodes as a one-frame "video" stream.
    format_name = str(fmt.get("format_name") or "")
    is_image = format_name == "image2" or format_name.endswith("_pipe")
    streams = [] if is_image else doc.get("streams", [])
    video = _video_stream(streams)
    if video is None:
        raise MediaError("no video stream (is this an audio file or an image?)")
    nominal = _fraction(video.get("r_frame_rate"))
    rate, vfr = choose_rate(nominal, _fraction(video.get("avg_frame_rate")))
    last_slot = 0
    if vfr:  # headers only say the rate varies; the packets say by how much
        base = _fraction(video.get("time_base")) or Fraction(1, 90000)
        times = packet_times(source, base, timeout, until)
        if len(times) > 1:
            rate = rate_for_every_frame(times, rate, nominal)
            last_slot = _slot(times[-1], rate) - _slot(times[0], rate)
    duration = float(video.get("duration") or fmt.get("duration") or 0)
    if duration <= 0:
        raise MediaError("the video has no duration (truncated or still being written?)")
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if width <= 0 or height <= 0:
        raise MediaError("the video stream has no picture size")
    rotation = _rotation(video)
    if rotation in (90, 270):
        width, height = height, width
    nb_frames = int(video.get("nb_frames") or 0)
    frame_count = nb_frames if (nb_frames and not vfr) else round(duration * rate)
    frame_count = max(frame_count, last_slot + 1)
    return VideoInfo(
        duration=duration,
        fps_num=rate.numerator,
        fps_den=rate.denominator,
        frame_count=max(1, frame_count),
        width=width,
        height=height,
        rotation=rotation,
        has_audio=any(s.get("codec_type") == "audio" for s in streams),
        variable_frame_rate=vfr,
        start_time=float(video.get("start_time") or 0.0),
        format_start_time=float(fmt.get("start_time") or 0.0),
        codec=str(video.get("codec_name") or ""),
    )


TAIL_SECONDS = 1.0  # how much of the end of the video the trigger decodes
TAIL_RETRY_SECONDS = 10.0  # from further back, when the first read decoded too little


class TruncatedVideo(MediaError):
    """The headers promise more video than the file holds (an upload cut short)."""


def _last_frame_time(
    source: str, start: float, timeout: float, until: float | None
) -> float | None:
    """The timestamp of the last video frame that decodes when reading from `start` (s)."""
    args = [
        binary("ffprobe"), "-v", "error", "-select_streams", "v:0",
        "-read_intervals", f"{start:.6f}%", "-show_entries", "frame=best_effort_timestamp_time",
        "-of", "csv=p=0", source,
    ]  # fmt: skip
    proc = ffprobe(args, timeout, until)
    times = []
    for line in proc.stdout.splitlines():
        try:
            times.append(float(line.strip().rstrip(",")))
        except ValueError:
            continue  # N/A: a frame without a timestamp
    return max(times, default=None)


def check_tail(
    source: str, info: VideoInfo, timeout: float = PROBE_SECONDS, until: float | None = None
) -> None:
    """Raise TruncatedVideo unless the last second of the video stream is there and decodes.

    A truncated upload of a faststart MP4 keeps its index at the front, so the header probe
    passes and the tasks fail only after their retries ("decoded 18 of 30 frames"), the GPU
    time spent. ffprobe seeks to the keyframe before the last second (a ranged read where the
    source is a URL) and decodes from there to the end: the cost is one GOP, not the file.
    Some demuxers (MPEG-TS) land past the last keyframe and decode nothing; only when a
    second read from further back (TAIL_RETRY_SECONDS) falls short too is the file refused.
    """
    rate = Fraction(info.fps_num, info.fps_den)
    end = info.start_time + info.duration
    # The last frame starts one frame before the end; allow a few frames of rounding in the
    # container's durations (and a VFR tail whose frames come further apart).
    slack = max(float(4 / rate), 0.25)
    last = None
    for margin in (TAIL_SECONDS, TAIL_RETRY_SECONDS):
        reached = _last_frame_time(source, max(info.start_time, end - margin), timeout, until)
        last = reached if last is None or (reached is not None and reached > last) else last
        if last is not None and last >= end - slack:
            return
    reached_text = "no frame decodes" if last is None else f"frames decode only to {last:.2f} s"
    raise TruncatedVideo(
        f"the end of the video is missing or does not decode: its headers say it lasts "
        f"to {end:.2f} s, but {reached_text} (an upload that did not finish? upload the whole "
        "file again)"
    )
