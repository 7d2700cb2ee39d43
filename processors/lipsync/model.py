"""Wav2Lip / Wav2Lip-GAN (96×96) through onnxruntime, batched at a fixed batch size.

Every call runs exactly `batch_size` samples (a short batch is padded with copies of its
first sample): one input shape for the whole job means one kernel choice, so a frame's result
does not depend on which other frames shared its batch — part of what makes chunked output
equal single-task output — and CUDA/TensorRT providers never re-plan for a new shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FACE_SIZE = 96
PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


class ModelUnusable(Exception):
    """The file is not a Wav2Lip 96×96 ONNX model, or onnxruntime is missing."""


class Wav2LipModel:
    def __init__(self, path: Path, batch_size: int) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelUnusable(
                "lipsync needs onnxruntime: pip install onnxruntime (CPU) or the gpu extra"
            ) from None
        available = set(ort.get_available_providers())
        providers = [p for p in PROVIDERS if p in available]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelUnusable(f"{path.name} cannot be loaded by onnxruntime: {exc}") from None
        self.mel_input, self.face_input = _signature(self.session, path.name)
        self.output = self.session.get_outputs()[0].name
        # Some exports fix the batch dimension (often to 1); that size is then the only one.
        fixed = self.session.get_inputs()[0].shape[0]
        self.batch_size = fixed if isinstance(fixed, int) and fixed > 0 else batch_size
        self.providers = self.session.get_providers()

    def run(self, mels: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """mels [n, 1, 80, 16], faces [n, 6, 96, 96] (0..1) → [n, 3, 96, 96] (0..1), n ≤ B."""
        n = len(mels)
        if n < self.batch_size:
            pad = self.batch_size - n
            mels = np.concatenate([mels, np.repeat(mels[:1], pad, axis=0)])
            faces = np.concatenate([faces, np.repeat(faces[:1], pad, axis=0)])
        out = self.session.run(
            [self.output],
            {
                self.mel_input: np.ascontiguousarray(mels, np.float32),
                self.face_input: np.ascontiguousarray(faces, np.float32),
            },
        )[0]
        return out[:n]


def _signature(session, name: str) -> tuple[str, str]:
    """(mel input name, face input name), told apart by shape: exports name them differently."""
    inputs = session.get_inputs()
    mel = face = None
    for item in inputs:
        shape = list(item.shape)
        if len(shape) == 4 and shape[1:] == [1, 80, 16]:
            mel = item.name
        elif len(shape) == 4 and shape[1:] == [6, FACE_SIZE, FACE_SIZE]:
            face = item.name
    if len(inputs) != 2 or mel is None or face is None:
        got = ", ".join(f"{i.name}{list(i.shape)}" for i in inputs)
        raise ModelUnusable(
            f"{name} is not a Wav2Lip 96×96 model: expected inputs mel [B,1,80,16] and "
            f"face [B,6,96,96], got {got}"
        )
    return mel, face
