"""Decode a chunk to RGB frames and encode frames to an H.264 part, each on its own thread.

Every frame of a video has a global index on one constant-rate grid: the decoder runs ffmpeg's
`fps` filter over absolute timestamps (-copyts) and trims at an exact grid index, so a chunk
decoded on its own yields the very frames a whole-video decode would — variable-frame-rate
input included. Reading stops after the chunk's frame count instead of trusting an end time.
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

import numpy as np

from processors.media import ffmpeg
from processors.media.ffmpeg import MediaError

# How far before a chunk to start decoding: enough for any frame gap in VFR input.
SEEK_MARGIN_SECONDS = 2.0
_END = object()


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
    ) -> None:
        self.width, self.height, self.first, self.count = width, height, first, count
        self.batch_size = batch_size
        origin = grid_origin(start_time, rate)
        seek = max(0.0, start_time + float(first / rate) - SEEK_MARGIN_SECONDS)
        vf = f"fps=fps={rate.numerator}/{rate.denominator},trim=start_pts={origin + first}"
        # Scale to the probed display size: guards against odd sample aspect ratios.
        vf += f",scale={width}:{height}:flags=bicubic"
        args = [
            *ffmpeg.base(threads=threads), *ffmpeg.seek_input(source, seek),
            "-map", "0:v:0", "-vf", vf, *ffmpeg.raw_video_output(),
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
        )
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch_batches)
        self._stderr = b""
        self._thread = threading.Thread(target=self._pump, name="decode", daemon=True)
        self._thread.start()

    def _read_frame(self, size: int) -> bytes | None:
        assert self._proc.stdout is not None
        buf = bytearray()
        while len(buf) < size:
            piece = self._proc.stdout.read(size - len(buf))
            if not piece:
                return None
            buf += piece
        return bytes(buf)

    def _pump(self) -> None:
        size = self.width * self.height * 3
        produced = 0
        try:
            while self.count is None or produced < self.count:
                want = self.batch_size
                if self.count is not None:
                    want = min(want, self.count - produced)
                frames = []
                for _ in range(want):
                    data = self._read_frame(size)
                    if data is None:
                        break
                    frames.append(np.frombuffer(data, np.uint8).reshape(self.height, self.width, 3))
                if frames:
                    idx = np.arange(self.first + produced, self.first + produced + len(frames))
                    self._queue.put(FrameBatch(np.stack(frames), idx))
                    produced += len(frames)
                if len(frames) < want:
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
    crf: int = 20
    preset: str = "medium"
    threads: int | None = None


class FrameWriter:
    """Frames → H.264 MP4 part; frames are handed to ffmpeg from a background thread."""

    def __init__(
        self, path: Path, *, width: int, height: int, rate: Fraction, settings: EncodeSettings
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"H.264 needs even dimensions, got {width}x{height}")
        self.width, self.height = width, height
        args = [
            *ffmpeg.base(threads=settings.threads),
            *ffmpeg.raw_video_input(width, height, rate),
            *ffmpeg.h264(settings.crf, settings.preset, settings.threads),
            *ffmpeg.track_timescale(rate), "-an", "-f", "mp4", str(path),
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self.frames_written = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._pump, name="encode", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self._proc.stdin is not None
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    break
                self._proc.stdin.write(np.ascontiguousarray(item).tobytes())
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
