"""Wav2Lip / Wav2Lip-GAN (96×96) through onnxruntime, batched at a fixed batch size.

Every call runs exactly `batch_size` samples (a short batch is padded with copies of its
first sample): one input shape for the whole job means one kernel choice, so a frame's result
does not depend on which other frames shared its batch — part of what makes chunked output
equal single-task output — and CUDA/TensorRT providers never re-plan for a new shape. A file
that declares an open batch is tried with a call of two at set-up; one that fails it (an export
that works only with one) runs one face per call, logged once: `batch_size` is an upper bound.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from processors.models.sessions import input_dtype, model_session

log = logging.getLogger("dropbatch.lipsync")
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
        self.session = model_session(path, providers, ModelUnusable, log_severity=3)
        self.mel_input, self.face_input = _signature(self.session, path.name)
        self.output = self.session.get_outputs()[0].name
        # A half-precision export takes float16 inputs (onnxruntime does not convert them).
        inputs = {i.name: i for i in self.session.get_inputs()}
        self._mel_dtype = input_dtype(inputs[self.mel_input])
        self._face_dtype = input_dtype(inputs[self.face_input])
        # Some exports fix the batch dimension (often to 1); that size is then the only one.
        fixed = next(i for i in self.session.get_inputs() if i.name == self.face_input).shape[0]
        self.batch_size = fixed if isinstance(fixed, int) and fixed > 0 else batch_size
        self.providers = self.session.get_providers()
        open_batch = not (isinstance(fixed, int) and fixed > 0)
        if open_batch and self.batch_size > 1 and not self._takes_two():
            log.warning(
                "%s declares a dynamic batch but fails a call of two faces: one face per call",
                path.name,
            )
            self.batch_size = 1

    def _takes_two(self) -> bool:
        """Whether a call of two (blank) samples runs and gives two faces back."""
        try:
            out = self.session.run(
                [self.output],
                {
                    self.mel_input: np.zeros((2, 1, 80, 16), self._mel_dtype),
                    self.face_input: np.zeros((2, 6, FACE_SIZE, FACE_SIZE), self._face_dtype),
                },
            )[0]
        except Exception:  # onnxruntime's errors share no narrower base
            return False
        return tuple(out.shape)[:1] == (2,)

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
                self.mel_input: np.ascontiguousarray(mels, self._mel_dtype),
                self.face_input: np.ascontiguousarray(faces, self._face_dtype),
            },
        )[0]
        return np.asarray(out[:n], np.float32)


# Input names exports are known to use, for files whose shapes are not declared: FaceFusion's
# (source = mel, target = faces), Wav2Lip's own forward() arguments, and the plain ones.
MEL_NAMES = ("source", "mel", "audio_sequences", "audio")
FACE_NAMES = ("target", "face", "face_sequences", "faces")


def _signature(session, name: str) -> tuple[str, str]:
    """(mel input name, face input name): told apart by shape, since exports name them
    differently; by name when the shapes are not declared."""
    inputs = session.get_inputs()
    mel = face = None
    for item in inputs:
        shape = list(item.shape)
        if len(shape) == 4 and shape[1:] == [1, 80, 16]:
            mel = item.name
        elif len(shape) == 4 and shape[1:] == [6, FACE_SIZE, FACE_SIZE]:
            face = item.name
    # A name decides only for an input whose shape is not declared: a declared wrong shape
    # (a 256×256 face) stays wrong whatever it is called.
    names = [i.name for i in inputs if not all(isinstance(d, int) for d in list(i.shape)[1:])]
    if mel is None or face is None:
        by_name = (
            next((n for n in MEL_NAMES if n in names), None),
            next((n for n in FACE_NAMES if n in names), None),
        )
        # Only when neither input is claimed by shape for the other role.
        mel = mel or (by_name[0] if by_name[0] != face else None)
        face = face or (by_name[1] if by_name[1] != mel else None)
    if len(inputs) != 2 or mel is None or face is None or mel == face:
        got = ", ".join(f"{i.name}{list(i.shape)}" for i in inputs)
        raise ModelUnusable(
            f"{name} is not a Wav2Lip 96×96 model: expected inputs mel [B,1,80,16] and "
            f"face [B,6,96,96] (or, undeclared, named source/target), got {got}"
        )
    return mel, face
