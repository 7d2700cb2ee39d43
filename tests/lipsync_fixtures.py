"""Test material for lipsync: a model with Wav2Lip's exact signature, real speech, a face video.

The model is built with `onnx.helper`: inputs mel [B,1,80,16] and face [B,6,96,96], output
[B,3,96,96]. Its output is the unmasked face darkened in proportion to the mel window's mean
level, so louder speech visibly changes the mouth region and silence barely does — the property
the real model's training gives it, reduced to something a test can measure. `convs` adds a
few untrained 3×3 convolutions (a tiny share of the output) so a benchmark has real work per
sample.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from skimage.data import astronaut

from tests.media_fixtures import encode_frames, write_wav

SPEECH_TEXT = "Hello there. This sentence is spoken to test the mouth, one word at a time."
# The face in skimage's 512×512 astronaut photo (forehead to chin, ear to ear), by eye.
FACE_IN_PORTRAIT = (175, 60, 275, 185)
DARKEN = 0.8  # how far full-scale speech darkens the test model's output


def build_test_model(
    path: Path,
    *,
    convs: int = 0,
    opset: int = 17,
    batch: int | str = "batch",
    names: tuple[str, str] = ("mel", "face"),
    face_first: bool = False,
    declared: bool = True,
    fp16: bool = False,
    one_only: bool = False,
) -> Path:
    """`batch`: a symbolic or fixed batch dimension; `names`: the two inputs' names (mel,
    face); `face_first`: the face input comes first in the graph; `declared=False`: only the
    rank is declared (every dimension symbolic), as some exports leave it; `fp16`: float16
    inputs and output, as a half-precision conversion without kept IO types has; `one_only`:
    the batch stays declared open but both inputs are reshaped to a batch of 1 first, as some
    exports do: any call of more than one face fails."""
    io_type = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT

    def dims(*rest: int) -> list:
        return [batch, *rest] if declared else [batch, "c", "h", "w"]

    mel_input, face_input = names
    mel = helper.make_tensor_value_info(mel_input, io_type, dims(1, 80, 16))
    face = helper.make_tensor_value_info(face_input, io_type, dims(6, 96, 96))
    out = helper.make_tensor_value_info("out", io_type, dims(3, 96, 96))
    # The float32 body reads `mel_name`/`face_name`: the inputs, or their float32 casts.
    mel_name, face_name = (f"{mel_input}_f32", f"{face_input}_f32") if fp16 else names
    const = {
        "starts": np.array([3], np.int64),
        "ends": np.array([6], np.int64),
        "axes": np.array([1], np.int64),
        "four": np.array(4.0, np.float32),
        "eighth": np.array(1.0 / 8.0 * DARKEN, np.float32),
        "one": np.array(1.0, np.float32),
        "tiny": np.array(1e-3, np.float32),
    }
    casts = [
        helper.make_node("Cast", [src], [dst], to=TensorProto.FLOAT)
        for src, dst in ((mel_input, mel_name), (face_input, face_name))
    ]
    reshapes = []
    if one_only:
        const["one_mel"] = np.array([1, 1, 80, 16], np.int64)
        const["one_face"] = np.array([1, 6, 96, 96], np.int64)
        reshapes = [
            helper.make_node("Reshape", [mel_name, "one_mel"], ["mel_one"]),
            helper.make_node("Reshape", [face_name, "one_face"], ["face_one"]),
        ]
        mel_name, face_name = "mel_one", "face_one"
    nodes = [
        *(casts if fp16 else []),
        *reshapes,
        helper.make_node("Slice", [face_name, "starts", "ends", "axes"], ["reference"]),
        helper.make_node("ReduceMean", [mel_name], ["level"], axes=[1, 2, 3], keepdims=1),
        # level in −4..4 → darkening in 0..DARKEN
        helper.make_node("Add", ["level", "four"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "eighth"], ["dark"]),
        helper.make_node("Sub", ["one", "dark"], ["gain"]),
        helper.make_node("Mul", ["reference", "gain"], ["darkened"]),
    ]
    rng = np.random.default_rng(7)
    last = "darkened"
    if convs:
        channels, prev = 32, face_name
        for k in range(convs):
            cout = 3 if k == convs - 1 else channels
            cin = 6 if k == 0 else channels
            weight = (rng.standard_normal((cout, cin, 3, 3)) * 0.1).astype(np.float32)
            const[f"w{k}"] = weight
            nodes.append(helper.make_node("Conv", [prev, f"w{k}"], [f"c{k}"], pads=[1, 1, 1, 1]))
            if k < convs - 1:
                nodes.append(helper.make_node("Relu", [f"c{k}"], [f"r{k}"]))
                prev = f"r{k}"
        nodes.append(helper.make_node("Tanh", [f"c{convs - 1}"], ["texture"]))
        nodes.append(helper.make_node("Mul", ["texture", "tiny"], ["faint"]))
        nodes.append(helper.make_node("Add", ["darkened", "faint"], ["mixed"]))
        last = "mixed"
    if fp16:
        nodes.append(helper.make_node("Cast", [last], ["out"], to=TensorProto.FLOAT16))
    else:
        nodes.append(helper.make_node("Identity", [last], ["out"]))
    graph = helper.make_graph(
        nodes,
        "wav2lip_test",
        [face, mel] if face_first else [mel, face],
        [out],
        initializer=[numpy_helper.from_array(v, k) for k, v in const.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_model_store(folder: Path, *, convs: int = 0) -> Path:
    """A model store folder with every catalog name for lipsync (FaceFusion's and own exports);
    the default, wav2lip_gan_96, is FaceFusion's file layout: inputs `source` and `target`."""
    folder.mkdir(parents=True, exist_ok=True)
    build_test_model(folder / "wav2lip_gan_96.onnx", convs=convs, names=("source", "target"))
    shutil.copy(folder / "wav2lip_gan_96.onnx", folder / "wav2lip_96.onnx")
    build_test_model(folder / "wav2lip_gan.onnx", convs=convs)
    shutil.copy(folder / "wav2lip_gan.onnx", folder / "wav2lip.onnx")
    return folder


def add_light_pack(folder: Path, real_asset: Callable[[str], Path]) -> Path:
    """The real light analyser pack's files (SCRFD-500m, ArcFace MBF: the names the catalog's
    light pack lists) copied into the store `folder`."""
    for name in ("scrfd_500m_bnkps.onnx", "w600k_mbf.onnx"):
        shutil.copy(real_asset(name), folder / name)
    return folder


def speech_wav(path: Path, text: str = SPEECH_TEXT, *, silence: float = 1.0) -> Path:
    """Real speech (espeak-ng, 22.05 kHz mono) with `silence` seconds of quiet on each side."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text],
        check=True,
        capture_output=True,
        timeout=120,
    )
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(raw),
         "-af", f"adelay={int(silence * 1000)}:all=1,apad=pad_dur={silence}", str(path)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    raw.unlink()
    return path


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    import wave

    with wave.open(str(path)) as f:
        data = np.frombuffer(f.readframes(f.getnframes()), "<i2").astype(np.float64) / 32768
        return data, f.getframerate()


def face_frame(index: int, size: tuple[int, int] = (320, 240), face: bool = True) -> np.ndarray:
    """The astronaut, 200 px, drifting slowly; `face=False` gives the same scene without her."""
    width, height = size
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = (40, 60, 80)
    frame[:, :, 1] += (((np.arange(width) + index) % 64) // 2).astype(np.uint8)[None, :]
    if face:
        portrait = cv2.resize(astronaut(), (200, 200), interpolation=cv2.INTER_AREA)
        x = 40 + round(20 * np.sin(index / 15))
        frame[20:220, x : x + 200] = portrait
    return frame


def face_box_at(index: int) -> tuple[float, float, float, float]:
    """Where the astronaut's face is in `face_frame(index)` (ground truth, frame pixels)."""
    x = 40 + round(20 * np.sin(index / 15))
    s = 200 / 512
    x0, y0, x1, y1 = FACE_IN_PORTRAIT
    return x + x0 * s, 20 + y0 * s, x + x1 * s, 20 + y1 * s


def make_face_video(
    path: Path,
    frames: int,
    *,
    fps: Fraction | int = 25,
    no_face: set[int] | frozenset[int] = frozenset(),
    audio: Path | None = None,
) -> Path:
    audio_args = ["-i", str(audio)] if audio else []
    encode_frames(
        path,
        (face_frame(i, face=i not in no_face) for i in range(frames)),
        fps=fps,
        audio=audio_args,
        crf=12,
    )
    return path


def beep_wav(
    path: Path, seconds: float, beeps: list[float], *, hz: float = 600.0, rate: int = 48000
) -> Path:
    samples = np.zeros(round(seconds * rate))
    tone = np.arange(round(0.06 * rate))
    for t in beeps:
        at = round(t * rate)
        samples[at : at + len(tone)] = 0.5 * np.sin(2 * np.pi * hz * tone / rate)
    write_wav(path, samples, rate)
    return path
