"""Who is speaking, for `subject: speaker`: voice activity from the audio and mouth movement
of each face on screen.

Voice: the speech the step is given (the chain's speech: lipsync's audio, or the input's
track) decoded whole, as 16 kHz mono, so every task reads the same samples; a frame is voiced
when its RMS is above a floor and a tenth of the loudest frame's. Mouth: faces by OpenCV's
Haar cascade (weight-free, on the detectors' small grey copy); the mouth is the lower part
of the face box, and its movement is the mean absolute change of that patch since the frame
before, less half the change of the eyes' patch (a head that moves or a light that changes
moves both; blinks move only the eyes, so not all of it). A box's score on a frame is its
face's mouth movement while the frame is voiced: it depends on two frames and the audio
only, so chunks score exactly as one task.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import cv2
import numpy as np

from processors.crop.boxes import Box
from processors.crop.detectors import scaled_gray

SAMPLE_RATE = 16000
VOICE_FLOOR = 0.01  # RMS (full scale 1.0) below which a frame is silence, whatever the track
VOICE_SHARE = 0.1  # ... and below this share of the loudest frame's RMS
MOUTH_FLOOR = 0.1  # grey levels of patch change that compression noise alone reaches
EYES_SHARE = 0.5  # how much of the eyes' change (head motion, light) is taken off the mouth's
PATCH = (32, 16)  # mouth and eyes patches are compared at this size (w, h)
Face = tuple[float, float, float, float]  # x, y, w, h in the small grey copy


def voiced_frames(samples: np.ndarray, rate: Fraction, frames: int) -> np.ndarray:
    """Per video frame: True where the audio under it has voice."""
    per = SAMPLE_RATE / float(rate)
    rms = np.zeros(frames, np.float32)
    for i in range(frames):
        piece = samples[round(i * per) : round((i + 1) * per)]
        if len(piece):
            rms[i] = float(np.sqrt(np.mean(piece.astype(np.float64) ** 2)))
    loudest = float(rms.max()) if frames else 0.0
    return rms > max(VOICE_FLOOR, VOICE_SHARE * loudest)


class MouthMotion:
    """Faces and their mouth movement on a frame, given the frame before."""

    def __init__(self) -> None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"cannot load {path}")

    def faces(self, frame: np.ndarray) -> tuple[np.ndarray, float, list[Face]]:
        gray, scale = scaled_gray(frame)
        found = self._cascade.detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24)
        )
        return gray, scale, [tuple(map(float, f)) for f in found]  # type: ignore[misc]

    def movement(self, gray: np.ndarray, before: np.ndarray, face: Face) -> float:
        x, y, w, h = face
        mouth = (x + 0.25 * w, y + 0.68 * h, x + 0.75 * w, y + 1.05 * h)
        eyes = (x + 0.15 * w, y + 0.2 * h, x + 0.85 * w, y + 0.45 * h)
        change = [_change(gray, before, region) for region in (mouth, eyes)]
        return max(0.0, change[0] - EYES_SHARE * change[1] - MOUTH_FLOOR)


def _change(gray: np.ndarray, before: np.ndarray, region: Box) -> float:
    height, width = gray.shape
    x0, y0 = max(0, int(region[0])), max(0, int(region[1]))
    x1, y1 = min(width, int(region[2]) + 1), min(height, int(region[3]) + 1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0.0
    a = cv2.resize(gray[y0:y1, x0:x1], PATCH, interpolation=cv2.INTER_AREA)
    b = cv2.resize(before[y0:y1, x0:x1], PATCH, interpolation=cv2.INTER_AREA)
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def box_scores(
    boxes: Sequence[Box], faces: Sequence[tuple[Face, float]], scale: float, voiced: bool
) -> list[float]:
    """Each person box's speaking score: the mouth movement of the faces whose centre lies in
    it (the most moving one), on a voiced frame; 0 on silence."""
    scores = []
    for x0, y0, x1, y1 in boxes:
        best = 0.0
        for (fx, fy, fw, fh), motion in faces:
            cx, cy = (fx + fw / 2) / scale, (fy + fh / 2) / scale
            if x0 <= cx <= x1 and y0 <= cy <= y1:
                best = max(best, motion)
        scores.append(best / 255.0 if voiced else 0.0)
    return scores
