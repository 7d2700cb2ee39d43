"""Person detectors behind one interface. The defaults ship inside the opencv wheel.

`opencv-face` finds frontal faces with a Haar cascade and extends each to the upper body a
talking-head framing needs; `opencv-hog` is OpenCV's HOG people detector for full bodies.
Detection runs on a copy scaled to `DETECT_WIDTH`, which keeps it cheap on 1080p/4K input.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

DETECT_WIDTH = 480

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels


class Detector(Protocol):
    def detect(self, frame: np.ndarray) -> list[Box]:
        """Person boxes in an RGB frame."""
        ...


def _scaled_gray(frame: np.ndarray) -> tuple[np.ndarray, float]:
    height, width = frame.shape[:2]
    scale = min(1.0, DETECT_WIDTH / width)
    small = (
        frame
        if scale == 1.0
        else cv2.resize(
            frame, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA
        )
    )
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), scale


class HaarFaceDetector:
    """Faces → person boxes (a face spans about a third of the shoulders' width)."""

    def __init__(self) -> None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"cannot load {path}")

    def detect(self, frame: np.ndarray) -> list[Box]:
        gray, scale = _scaled_gray(frame)
        faces = self._cascade.detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24)
        )
        height, width = frame.shape[:2]
        boxes: list[Box] = []
        for x, y, w, h in faces:
            x, y, w, h = (v / scale for v in (x, y, w, h))
            boxes.append(
                (
                    max(0.0, x - w),
                    max(0.0, y - 0.5 * h),
                    min(float(width), x + 2 * w),
                    min(float(height), y + 4 * h),
                )
            )
        return boxes


class HogPeopleDetector:
    def __init__(self) -> None:
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def detect(self, frame: np.ndarray) -> list[Box]:
        gray, scale = _scaled_gray(frame)
        rects, weights = self._hog.detectMultiScale(gray, winStride=(8, 8), scale=1.05)
        return [
            (x / scale, y / scale, (x + w) / scale, (y + h) / scale)
            for (x, y, w, h), score in zip(rects, np.ravel(weights), strict=False)
            if score > 0.3
        ]


def make_detector(name: str) -> Detector:
    if name == "opencv-face":
        return HaarFaceDetector()
    if name == "opencv-hog":
        return HogPeopleDetector()
    raise ValueError(f"detector {name!r} needs the model store (not available in this build)")
