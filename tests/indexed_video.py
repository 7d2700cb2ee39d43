"""Videos whose frames carry their own index (big blocks that survive H.264), for checking
that chunked output has exactly the input's frames in order."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

BITS = 12
BLOCK = 40  # px; the code sits in the centre 240×80 so a centred crop keeps it
Y0 = 80


def _x0(width: int) -> int:
    return (width - 6 * BLOCK) // 2


def draw_index(frame: np.ndarray, index: int) -> None:
    for bit in range(BITS):
        row, col = divmod(bit, 6)
        value = 255 if (index >> bit) & 1 else 0
        x0 = _x0(frame.shape[1]) + col * BLOCK
        frame[Y0 + row * BLOCK : Y0 + (row + 1) * BLOCK, x0 : x0 + BLOCK] = value


def read_index(frame: np.ndarray) -> int:
    value = 0
    for bit in range(BITS):
        row, col = divmod(bit, 6)
        y = Y0 + row * BLOCK + BLOCK // 2
        x = _x0(frame.shape[1]) + col * BLOCK + BLOCK // 2
        if frame[y - 8 : y + 8, x - 8 : x + 8].mean() > 128:
            value |= 1 << bit
    return value


def make_indexed_video(
    path: Path,
    frames: int,
    fps: int = 30,
    size: tuple[int, int] = (320, 240),
    audio: bool = True,
    preset: str = "veryfast",
) -> None:
    width, height = size
    args = [
        "ffmpeg",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
        "-framerate",
        str(fps),
        "-i",
        "pipe:0",
    ]
    if audio:
        args += [
            "-f",
            "lavfi",
            "-t",
            f"{frames / fps:.3f}",
            "-i",
            "sine=frequency=300",
            "-c:a",
            "aac",
        ]
    args += ["-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p", str(path)]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    rng = np.random.default_rng(0)
    noise = rng.integers(60, 120, (height, width, 3), dtype=np.uint8)
    for i in range(frames):
        frame = np.roll(noise, i, axis=1).copy()
        draw_index(frame, i)
        proc.stdin.write(frame.tobytes())
    proc.stdin.close()
    assert proc.wait() == 0


def decoded_indices(path: Path) -> list[int]:
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    width, height = (int(v) for v in probe.stdout.strip().split(","))
    raw = subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-map",
            "0:v:0",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "pipe:1",
        ],
        capture_output=True,
        check=True,
    ).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)
    return [read_index(f) for f in frames]
