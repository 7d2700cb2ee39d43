"""Masks that limit what of a swapped face is pasted: an XSeg occluder (keep what covers the
face) and a BiSeNet face parser (paste only chosen regions).

Both run on the aligned crop of the original frame, before the swap, so a mask is in crop
coordinates and is warped back with the crop (processors/swap/paste.py): the paste stays
inside the face's box. The step combines them with the box's feathered mask by taking the
minimum of all.

The models are FaceFusion's ONNX exports; their contracts, read from the published models:

- occluder (xseg_1/2/3.onnx): input `[1, 256, 256, 3]` — NHWC, BGR, 0..1; output
  `[1, 256, 256, 1]`, the probability that a pixel is face (1) rather than something in front
  of it (0).
- parser (bisenet_resnet_18/34.onnx): input `[1, 3, 512, 512]` — NCHW, RGB, ImageNet mean and
  standard deviation; output `[1, 19, 512, 512]`, one score per CelebAMask-HQ class.

A mask is resized to the crop, then softened the way FaceFusion softens its own: blurred, and
everything under one half dropped, so a mask's edge fades inwards and never lets a sliver of
the swapped face spill over what it should keep.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from processors.models.sessions import describe_io, input_dtype, model_session
from processors.swap.options import FACE_REGIONS
from processors.swap.swapper import SwapperUnusable

# CelebAMask-HQ's class indices as BiSeNet face parsers number them (0 is the background;
# 7–9 ears and earring, 14–18 neck, necklace, cloth, hair, hat are not face regions).
REGION_CLASSES = {
    "skin": 1,
    "left-eyebrow": 2,
    "right-eyebrow": 3,
    "left-eye": 4,
    "right-eye": 5,
    "glasses": 6,
    "nose": 10,
    "mouth": 11,
    "upper-lip": 12,
    "lower-lip": 13,
}
assert tuple(REGION_CLASSES) == FACE_REGIONS, "the manifest's region names and the classes differ"
PARSER_CLASSES = 19
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# FaceFusion blurs a mask's edge by 5 px on its crops; a fixed fraction of the crop keeps the
# edge the same shape at every pixel_boost.
EDGE = 0.02


class MaskModelUnusable(SwapperUnusable):
    """The file is not the occluder or parser it is named as; the message names its shapes."""


def _session(path: Path, providers: list[str]):
    try:
        import onnxruntime  # noqa: F401  (only: is it installed)
    except ImportError:
        raise MaskModelUnusable("swap masks need onnxruntime (pip install onnxruntime)") from None
    return model_session(path, providers, MaskModelUnusable)


def _side(dim: object, default: int) -> int:
    return dim if isinstance(dim, int) else default


def soften(mask: np.ndarray) -> np.ndarray:
    """Blur the edge, drop what falls under one half, stretch the rest back to 0..1."""
    blurred = cv2.GaussianBlur(mask.clip(0, 1), (0, 0), mask.shape[0] * EDGE)
    return ((blurred.clip(0.5, 1) - 0.5) * 2).astype(np.float32)


class Occluder:
    """An XSeg occluder: where in an aligned crop the face shows (1) or is covered (0)."""

    EXPECTED = "input [1,S,S,3] (NHWC) and output [1,S,S,1]"

    def __init__(self, path: Path, providers: list[str]) -> None:
        self.session = _session(path, providers)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        out = list(outputs[0].shape) if outputs else []
        one_channel = len(out) == 4 and (out[3] == 1 or not isinstance(out[3], int))
        if len(shape) != 4 or shape[3] != 3 or not one_channel:
            raise MaskModelUnusable(
                f"{path.name} is not an XSeg occluder: expected {self.EXPECTED}, got inputs "
                f"{describe_io(inputs)}; outputs {describe_io(outputs)}"
            )
        self.input = inputs[0].name
        self.dtype = input_dtype(inputs[0])
        self.size = (_side(shape[2], 256), _side(shape[1], 256))  # (width, height)

    def mask(self, crop: np.ndarray) -> np.ndarray:
        """A float32 [n, n] weight for an aligned RGB uint8 crop [n, n, 3]."""
        side = crop.shape[0]
        bgr = cv2.resize(crop, self.size, interpolation=cv2.INTER_AREA)[..., ::-1]
        blob = (bgr[None].astype(np.float32) / 255.0).astype(self.dtype)
        face = np.asarray(self.session.run(None, {self.input: blob})[0][0], np.float32)
        face = cv2.resize(face[..., 0].clip(0, 1), (side, side), interpolation=cv2.INTER_LINEAR)
        return soften(face)


class FaceParser:
    """A BiSeNet face parser: which pixels of an aligned crop are the chosen face regions."""

    EXPECTED = f"input [1,3,S,S] (NCHW) and output [1,{PARSER_CLASSES},S,S]"

    def __init__(self, path: Path, providers: list[str]) -> None:
        self.session = _session(path, providers)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        out = list(outputs[0].shape) if outputs else []
        classes = len(out) == 4 and (out[1] == PARSER_CLASSES or not isinstance(out[1], int))
        if len(shape) != 4 or shape[1] != 3 or not classes:
            raise MaskModelUnusable(
                f"{path.name} is not a BiSeNet face parser: expected {self.EXPECTED}, got inputs "
                f"{describe_io(inputs)}; outputs {describe_io(outputs)}"
            )
        self.input = inputs[0].name
        self.dtype = input_dtype(inputs[0])
        self.size = (_side(shape[3], 512), _side(shape[2], 512))  # (width, height)

    def mask(self, crop: np.ndarray, regions: Sequence[str]) -> np.ndarray:
        """A float32 [n, n] weight: 1 on the regions, 0 elsewhere, softened at the edges."""
        side = crop.shape[0]
        rgb = cv2.resize(crop, self.size, interpolation=cv2.INTER_LINEAR).astype(np.float32)
        blob = ((rgb / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None]
        scores = self.session.run(None, {self.input: blob.astype(self.dtype)})[0][0]
        if scores.shape[0] != PARSER_CLASSES:  # an export whose shapes left it open
            raise MaskModelUnusable(
                f"the face parser gave {scores.shape[0]} class scores, not {PARSER_CLASSES}"
            )
        # A pixel is wanted when a chosen class scores highest there: the same as "argmax is
        # one of them" (but for exact ties), an order of magnitude faster than argmax over
        # 19 planes of 512×512.
        chosen = [REGION_CLASSES[r] for r in regions]
        wanted = scores[chosen].max(0) >= scores.max(0)
        area = cv2.resize(wanted.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
        return soften(area)
