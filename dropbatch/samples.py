"""Sample media for `dropbatch demo` (and the tests): a real face from imagery that ships in
the scikit-image wheel, moving over a canvas, with real synthesized speech when espeak-ng is
installed."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np

from processors.media import ffmpeg

SPEECH = (
    "Hello from drop batch. This video was dropped into an inbox folder, split into chunks, "
    "cropped around the person in parallel tasks, and stitched back together."
)


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # 512×512 RGB photo: a face and an upper body


def write_source_face(path: Path) -> Path:
    """Another real face for a swap's source: the cameraman (scikit-image's `camera`)."""
    from skimage import data

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.repeat(data.camera()[..., None], 3, axis=2))
    return path


def subject_box(t: float, duration: float, canvas: tuple[int, int], size: int) -> tuple[int, int]:
    """Top-left of the subject at time t: a slow sweep left → right and back."""
    width, height = canvas
    phase = 0.5 - 0.5 * np.cos(2 * np.pi * t / max(duration, 1e-6))
    x = round(phase * (width - size))
    y = (height - size) // 2
    return x, y


def render_frame(
    t: float, duration: float, canvas: tuple[int, int], size: int, portrait: np.ndarray
) -> np.ndarray:
    width, height = canvas
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = (40, 60, 80)
    # A faint moving gradient so the encoder sees real motion in the background too.
    ramp = ((np.arange(width) + int(t * 40)) % 256).astype(np.uint8) // 4
    frame[:, :, 1] = frame[:, :, 1] + ramp[None, :]
    x, y = subject_box(t, duration, canvas, size)
    frame[y : y + size, x : x + size] = portrait
    return frame


def speech_wav(path: Path, text: str = SPEECH) -> bool:
    """Real speech from espeak-ng if it is installed; False otherwise."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return False
    subprocess.run(
        [exe, "-v", "en-us", "-s", "150", "-w", str(path), text], check=True, capture_output=True
    )
    return True


def make_talking_video(
    path: Path,
    *,
    duration: float = 12.0,
    fps: int = 30,
    canvas: tuple[int, int] = (1280, 720),
    subject: int = 400,
    audio: str = "speech",  # "speech", "tone" or "none"
    crf: int = 18,
) -> None:
    portrait = cv2.resize(astronaut(), (subject, subject), interpolation=cv2.INTER_AREA)
    frames = round(duration * fps)
    with tempfile.TemporaryDirectory() as tmp:
        audio_args: list[str] = []
        if audio == "speech":
            wav = Path(tmp) / "speech.wav"
            if speech_wav(wav):
                audio_args = ["-i", str(wav), "-af", "apad", "-t", f"{duration:.3f}"]
            else:
                audio = "tone"
        if audio == "tone":
            audio_args = ["-f", "lavfi", "-t", f"{duration:.3f}", "-i", "sine=frequency=440"]
        args = [
            *ffmpeg.base(), "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-s", f"{canvas[0]}x{canvas[1]}", "-framerate", str(fps), "-i", "pipe:0",
            *audio_args, "-map", "0:v",
        ]  # fmt: skip
        if audio_args:
            args += ["-map", "1:a", "-c:a", "aac", "-b:a", "128k"]
        args += [
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            str(crf),
            "-pix_fmt",
            "yuv420p",
            "-frames:v",
            str(frames),
            str(path),
        ]
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin is not None
        for i in range(frames):
            proc.stdin.write(render_frame(i / fps, duration, canvas, subject, portrait).tobytes())
        proc.stdin.close()
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.wait() != 0:
            raise RuntimeError(f"could not make the sample video: {err}")
