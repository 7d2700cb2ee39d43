"""Person detectors behind one interface, chosen by `crop.detector`.

Every backend takes a batch of RGB frames and returns, per frame, the person boxes in that
frame's pixels. `opencv-face` (Haar cascade, extended from the face to the upper body a
talking-head framing needs) and `opencv-hog` (OpenCV's HOG people detector) ship inside the
opencv wheel and need no model store; `yolo-onnx` runs an exported YOLO through onnxruntime;
`yolo` runs YOLO through ultralytics (the GPU image), from `.engine`, `.pt` or `.onnx` weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import cv2
import numpy as np

from processors.crop.boxes import Box

DETECT_WIDTH = 480  # the opencv detectors look at a copy this wide: cheap on 1080p/4K input


class Detector(Protocol):
    batch_size: int  # frames per call that keeps this backend busy

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Box]]:
        """Person boxes in each RGB frame [H, W, 3] uint8."""
        ...


class DetectorSetupError(Exception):
    """A detector cannot be built (model file missing or unreadable, runtime absent)."""


def scaled_gray(frame: np.ndarray) -> tuple[np.ndarray, float]:
    """Grey copy at most DETECT_WIDTH wide for the OpenCV detectors, and its scale."""
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

    batch_size = 8

    def __init__(self) -> None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise DetectorSetupError(f"cannot load {path}")

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Box]]:
        return [self._one(frame) for frame in frames]

    def _one(self, frame: np.ndarray) -> list[Box]:
        gray, scale = scaled_gray(frame)
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
    batch_size = 8

    def __init__(self) -> None:
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Box]]:
        return [self._one(frame) for frame in frames]

    def _one(self, frame: np.ndarray) -> list[Box]:
        gray, scale = scaled_gray(frame)
        rects, weights = self._hog.detectMultiScale(gray, winStride=(8, 8), scale=1.05)
        return [
            (x / scale, y / scale, (x + w) / scale, (y + h) / scale)
            for (x, y, w, h), score in zip(rects, np.ravel(weights), strict=False)
            if score > 0.3
        ]
