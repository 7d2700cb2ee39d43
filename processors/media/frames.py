"""Decode a chunk to RGB frames and encode frames to an H.264 part, each on its own thread.

Frames cross the pipes as planar yuv420p, half the bytes of rgb24, and the RGB conversion
runs in OpenCV on the pipe threads instead of in ffmpeg's single-threaded swscale: this is
what keeps the no-op chain close to plain ffmpeg (bench/plumbing.py). Both directions use
BT.601 limited range, swscale's default for untagged video, so a no-op round trip returns the
decoded YUV up to rounding. Odd frame sizes (no 4:2:0 layout) cross as rgb24.

Every frame of a video has a global index on one constant-rate grid: the decoder runs ffmpeg's
`fps` filter over absolute timestamps (-copyts) and trims at an exact grid index, so a chunk
decoded on its own yields the very frames a whole-video decode would — variable-frame-rate
input included (the probe picks a grid rate on which no source frame shares a slot, so the
filter only repeats frames, never drops one). Reading stops after the chunk's frame count
instead of trusting an end time.
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from core.domain import VideoInfo
from processors.media import ffmpeg
from processors.media.encoders import X264, encoder_args
from processors.media.ffmpeg import MediaError

# How far before a chunk to start decoding: enough for any frame gap in VFR input.
SEEK_MARGIN_SECONDS = 2.0
# Larger pipe buffers mean fewer wakeups per frame (a 1080p yuv420p frame is 3 MB).
PIPE_BYTES = 1 << 20
_END = object()


def pipe_format(width: int, height: int) -> str:
    """The raw pixel format frames of this size cross a pipe in."""
    return "yuv420p" if width % 2 == 0 and height % 2 == 0 else "rgb24"


def _widen_pipe(fd: int) -> None:
    # F_SETPIPE_SZ (Linux); capped by /proc/sys/fs/pipe-max-size, harmless where refused.
    with contextlib.suppress(OSError, AttributeError):
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


@dataclass(frozen=True)
class FrameBatch:
    """Frames [B, H, W, 3] RGB uint8 and their global frame indices.

    `annotations` carries per-frame facts one step hands to a later one (for example the face
    analysis of `swap`, which `lipsync` reuses instead of detecting again): name -> a list with
    one entry per frame, in frame order. A step that changes geometry must drop or map them.
    """

    frames: np.ndarray
    indices: np.ndarray
    annotations: dict[str, list] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)

    def take(self, mask: np.ndarray) -> FrameBatch:
        """The frames (and their annotations) where the boolean mask is true."""
        keep = np.flatnonzero(mask)
        return FrameBatch(
            self.frames[keep],
            self.indices[keep],
            {k: [v[i] for i in keep] for k, v in self.annotations.items()},
        )

    @staticmethod
    def empty(height: int, width: int) -> FrameBatch:
        return FrameBatch(np.empty((0, height, width, 3), np.uint8), np.empty((0,), np.int64))


def grid_origin(start_time: float, rate: Fraction) -> int:
    """The grid index ffmpeg's fps filter gives the first frame of the stream."""
    return round(Fraction(start_time).limit_denominator(1_000_000) * rate)


class FrameReader:
    """Frames [first, first+count) of a video, decoded by ffmpeg on a background thread."""

    def __init__(
        self,
        source: str,
        *,
        width: int,
        height: int,
        rate: Fraction,
        start_time: float,
        first: int,
        count: int | None,
        batch_size: int = 8,
        prefetch_batches: int = 4,
        threads: int | None = None,
        decode: tuple[str, ...] = (),
    ) -> None:
        """`decode`: input options for the decoder, e.g. `("-hwaccel", "cuda")` from
        `encoders.decode_args()`; the frames are the same either way."""
        self.width, self.height, self.first, self.count = width, height, first, count
        self.batch_size = batch_size
        origin = grid_origin(start_time, rate)
        seek = max(0.0, start_time + float(first / rate) - SEEK_MARGIN_SECONDS)
        vf = f"fps=fps={rate.numerator}/{rate.denominator},trim=start_pts={origin + first}"
        # Scale to the probed display size: guards against odd sample aspect ratios.
        vf += f",scale={width}:{height}:flags=bicubic"
        self._format = pipe_format(width, height)
        args = [
            *ffmpeg.base(threads=threads), *decode, *ffmpeg.seek_input(source, seek),
            "-map", "0:v:0", "-vf", vf, *ffmpeg.raw_video_output(self._format),
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
        )
        assert self._proc.stdout is not None
        _widen_pipe(self._proc.stdout.fileno())
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch_batches)
        self._stderr = b""
        self._thread = threading.Thread(target=self._pump, name="decode", daemon=True)
        self._thread.start()

    @classmethod
    def for_video(
        cls, source: str, info: VideoInfo, first: int, count: int | None, **options: object
    ) -> FrameReader:
        """Frames of a probed video at its display size on its output frame grid."""
        return cls(
            source,
            width=info.width,
            height=info.height,
            rate=Fraction(info.fps_num, info.fps_den),
            start_time=info.start_time,
            first=first,
            count=count,
            **options,  # type: ignore[arg-type]
        )

    def _read_into(self, buf: np.ndarray) -> bool:
        """Fill `buf` with the next raw frame; False at end of stream."""
        assert self._proc.stdout is not None
        view = memoryview(buf).cast("B")
        got = 0
        while got < len(view):
            n = self._proc.stdout.readinto(view[got:])
            if not n:
                return False
            got += n
        return True

    def _pump(self) -> None:
        h, w = self.height, self.width
        yuv = self._format == "yuv420p"
        raw = np.empty((h * 3 // 2, w) if yuv else (h, w, 3), np.uint8)
        produced = 0
        try:
            while self.count is None or produced < self.count:
                want = self.batch_size
                if self.count is not None:
                    want = min(want, self.count - produced)
                frames = np.empty((want, h, w, 3), np.uint8)
                n = 0
                while n < want:
                    target = raw if yuv else frames[n]
                    if not self._read_into(target):
                        break
                    if yuv:
                        cv2.cvtColor(raw, cv2.COLOR_YUV2RGB_I420, dst=frames[n])
                    n += 1
                if n:
                    idx = np.arange(self.first + produced, self.first + produced + n)
                    self._queue.put(FrameBatch(frames[:n], idx))
                    produced += n
                if n < want:
                    break
        finally:
            if self._proc.poll() is None:
                self._proc.kill()
            assert self._proc.stderr is not None
            self._stderr = self._proc.stderr.read()
            self._proc.wait()
            self._queue.put(_END)

    def __iter__(self) -> Iterator[FrameBatch]:
        while True:
            item = self._queue.get()
            if item is _END:
                break
            yield item
        self._thread.join()
        # Killed by us (-9) after reading enough is fine; any other failure is an error.
        if self._proc.returncode not in (0, -9):
            raise MediaError(f"decode failed: {self._stderr.decode(errors='replace').strip()}")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        # Drain so the pump thread can finish.
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.1)


@dataclass(frozen=True)
class EncodeSettings:
    """`encoder`: `libx264` or `h264_nvenc` (processors.media.encoders); every part of an
    item must share it, so it is chosen once per item, never here."""

    crf: int = 20
    preset: str = "medium"
    threads: int | None = None
    encoder: str = X264


class FrameWriter:
    """Frames → H.264 MP4 part (x264 or NVENC, as the settings say); frames are handed to
    ffmpeg from a background thread."""

    def __init__(
        self, path: Path, *, width: int, height: int, rate: Fraction, settings: EncodeSettings
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"H.264 needs even dimensions, got {width}x{height}")
        self.width, self.height = width, height
        args = [
            *ffmpeg.base(threads=settings.threads),
            *ffmpeg.raw_video_input(width, height, rate, pix_fmt="yuv420p"),
            *encoder_args(settings.encoder, settings.crf, settings.preset, settings.threads),
            *ffmpeg.track_timescale(rate), "-an", "-f", "mp4", str(path),
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self._proc.stdin is not None
        _widen_pipe(self._proc.stdin.fileno())
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self.frames_written = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._pump, name="encode", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self._proc.stdin is not None
        yuv = np.empty((self.height * 3 // 2, self.width), np.uint8)
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    break
                for frame in item:
                    # Converted here, on the encode thread, so it overlaps the chain's work.
                    cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420, dst=yuv)
                    self._proc.stdin.write(memoryview(yuv).cast("B"))
                self.frames_written += len(item)
        except BaseException as exc:  # a broken pipe means ffmpeg died; report it on close
            self._error = exc
            while self._queue.get() is not _END:
                pass
        finally:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()

    def write(self, frames: np.ndarray) -> None:
        if len(frames) == 0:
            return
        if frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"frame shape {frames.shape[1:]} != {(self.height, self.width, 3)}")
        self._queue.put(frames)

    def close(self) -> None:
        self._queue.put(_END)
        self._thread.join()
        assert self._proc.stderr is not None
        stderr = self._proc.stderr.read().decode(errors="replace").strip()
        code = self._proc.wait()
        if code != 0 or self._error is not None:
            raise MediaError(f"encode failed: {stderr or self._error}")
