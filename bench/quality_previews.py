"""Before/after preview images for README's "Quality of the face steps" (docs/quality/*.jpg).

    python bench/quality_previews.py [--only NAME ...] [--out docs/quality]

Each image is built from the same code paths and material as the real-footage tests: the real
clips and portraits and the real YOLO11n / SCRFD-500m / ArcFace MBF files of
`tests.real_assets.asset`, the fixtures of tests/reframe_fixtures.py, tests/speaker_fixtures.py,
tests/test_swap_masks.py and tests/test_occlusion_chain.py, and the helpers those tests run the
steps with. The crop previews are real end to end (real detectors on real footage). The face
steps' previews run the TEST-SIGNATURE swapper, restorer, Wav2Lip and XSeg stand-ins (no real
weights exist here): where a face was repainted, the pixels are the stand-in's, not what real
weights give; what the image shows is which pixels a step changes and which it keeps. Every
panel says so in its label.

Every panel is at most PANEL_HEIGHT pixels tall with its label; JPEG quality QUALITY.
tests/test_quality_previews.py checks README references exactly the names in PREVIEWS.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PANEL_HEIGHT = 480  # px, label included
PANEL_WIDTH = 720  # px: a wide frame is shown smaller, so the image stays small
QUALITY = 80
GREEN = (0, 220, 0)
STAND_IN = "test-signature model: not real weights' pixels"

Panel = tuple[np.ndarray, list[str]]  # RGB image, its label's lines


# -- composing --------------------------------------------------------------------------------
def labelled(image: np.ndarray, lines: list[str], height: int = PANEL_HEIGHT) -> np.ndarray:
    """The image scaled to fit under its label, the label drawn on a dark band above it."""
    band = 10 + 18 * len(lines)
    scale = min((height - band) / image.shape[0], PANEL_WIDTH / image.shape[1], 4.0)
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    shown = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    width = max(size[0], max(8 * len(line) for line in lines) + 12)
    out = np.full((band + size[1], width, 3), 24, np.uint8)
    out[band:, (width - size[0]) // 2 : (width - size[0]) // 2 + size[0]] = shown
    for k, line in enumerate(lines):
        cv2.putText(out, line, (6, 19 + 18 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (255, 255, 255), 1, cv2.LINE_AA)  # fmt: skip
    return out


def side_by_side(before: Panel, after: Panel) -> np.ndarray:
    """before | after, each labelled, on one dark canvas (BGR, for cv2.imwrite)."""
    panels = [labelled(image, lines) for image, lines in (before, after)]
    height = max(p.shape[0] for p in panels)
    gap = np.full((height, 8, 3), 255, np.uint8)
    padded = [
        np.concatenate([p, np.full((height - p.shape[0], p.shape[1], 3), 24, np.uint8)])
        for p in panels
    ]
    return cv2.cvtColor(np.concatenate([padded[0], gap, padded[1]], axis=1), cv2.COLOR_RGB2BGR)


def around(image: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    """The part of the image around a box, `margin` box sizes on each side."""
    x0, y0, x1, y1 = box
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    h, w = image.shape[:2]
    top, bottom = max(0, int(y0 - my)), min(h, int(y1 + my))
    left, right = max(0, int(x0 - mx)), min(w, int(x1 + mx))
    return image[top:bottom, left:right]


def analyser():
    from processors.faces import FaceAnalyser
    from tests.real_assets import asset

    return FaceAnalyser(
        asset("scrfd_500m_bnkps.onnx"), None, det_size=320, providers=["CPUExecutionProvider"]
    )


# -- crop (real detectors, real footage) -----------------------------------------------------
def crop_camera(tmp: Path) -> tuple[Panel, Panel]:
    """tests/test_real_crop_reframe.py's camera test: the Pexels clip's first 300 frames with
    YOLO11n, `track` against `auto`; the windows of every 6th frame of auto's first still piece
    drawn over that piece's middle frame."""
    from processors.crop.options import CropOptions
    from tests.real_assets import asset
    from tests.real_chain import YOLO, build_real_store
    from tests.test_real_crop_reframe import crop_run, frames_of

    clip = asset("pexels.mp4")
    store = str(build_real_store(tmp / "models", asset))
    stop = 300
    yolo = {"detector": "yolo-onnx", "model": YOLO, "detect_every": 2}
    auto, _ = crop_run(clip, CropOptions(camera="auto", **yolo), 0, stop, model_store=store)
    tracked, _ = crop_run(clip, CropOptions(camera="track", **yolo), 0, stop, model_store=store)
    piece = round(4 * 24000 / 1001)
    modes = auto.modes
    still = [
        p for p in range(0, stop - piece + 1, piece) if modes[p] == "still" == modes[p + piece - 1]
    ]
    if not still:
        raise RuntimeError(f"camera auto chose no still piece: {set(modes.values())}")
    start = still[0]
    frame = frames_of(clip, start + piece // 2 + 1)[start + piece // 2]

    def drawn(windows: dict[int, tuple[int, int, int, int]]) -> np.ndarray:
        out = frame.copy()
        for i in range(start, start + piece, 6):
            x, y, w, h = windows[i]
            cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), GREEN, 1)
        return out

    seconds = f"{start / 24000 * 1001:.0f}-{(start + piece) / 24000 * 1001:.0f} s"
    return (
        (drawn(tracked.windows), ["BEFORE camera: track (YOLO11n, real)",
                                  f"windows every 6th frame, {seconds}: a band"]),
        (drawn(auto.windows), ["AFTER camera: auto -> still (YOLO11n, real)",
                               "same frames: one window, no motion"]),
    )  # fmt: skip


def crop_fit_blur(tmp: Path) -> tuple[Panel, Panel]:
    """tests/test_real_crop_reframe.py's fit test: two real portraits at the ends of a 1280×720
    frame, 9:16 with `subject: all`; frame 6 of `fit: crop` and of `fit: blur`."""
    from processors.crop.options import CropOptions
    from tests.real_assets import asset
    from tests.test_real_crop_reframe import crop_run, two_portraits

    clip = two_portraits(asset, tmp / "two.mp4")
    _, blurred = crop_run(clip, CropOptions(aspect="9:16", subject="all", fit="blur"))
    _, cropped = crop_run(clip, CropOptions(aspect="9:16", subject="all"))
    return (
        (cropped[6], ["BEFORE fit: crop", "9:16, subject: all:", "neither person whole"]),
        (blurred[6], ["AFTER fit: blur", "both whole, padding", "a blurred copy"]),
    )


def crop_speaker(tmp: Path) -> tuple[Panel, Panel]:
    """tests/reframe_fixtures.py's two real people taking turns (each their own espeak-ng
    sentence): the window over the middle frame of the host's first turn and of the guest's
    first turn, with the default `subject: largest` and with `subject: speaker`."""
    from processors.crop.options import CropOptions
    from tests.real_assets import asset
    from tests.reframe_fixtures import turns_clip
    from tests.test_real_crop_reframe import crop_run, frames_of

    clip, speaking = turns_clip(tmp / "turns.mp4", asset)
    largest, _ = crop_run(clip, CropOptions(aspect="9:16"))
    speaker, _ = crop_run(clip, CropOptions(aspect="9:16", subject="speaker"), audio_path=str(clip))
    frames = frames_of(clip)
    picks = []
    for who in (0, 1):
        turn = [i for i, s in enumerate(speaking) if s == who]
        picks.append(turn[len(turn) // 4])  # in their first turn (each speaks twice)

    def drawn(windows: dict[int, tuple[int, int, int, int]]) -> np.ndarray:
        rows = []
        for who, i in zip(("left speaks", "right speaks"), picks, strict=True):
            out = frames[i].copy()
            x, y, w, h = windows[i]
            cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), GREEN, 2)
            cv2.putText(out, who, (8, out.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                        (255, 255, 0), 2, cv2.LINE_AA)  # fmt: skip
            rows.append(out)
        return np.concatenate(rows)

    return (
        (drawn(largest.windows), ["BEFORE subject: largest (real footage)",
                                  "the window stays on one person"]),
        (drawn(speaker.windows), ["AFTER subject: speaker (real footage)",
                                  "the window is on whoever speaks"]),
    )  # fmt: skip


# -- face steps (real detector and footage, test-signature models) ---------------------------
def pexels_frames(count: int) -> np.ndarray:
    """tests/test_swap_masks.py's `clip`: frames of the Pexels clip from START."""
    from tests.real_assets import asset
    from tests.test_swap_masks import HEIGHT, START, WIDTH

    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-ss", f"{START}", "-i", str(asset("pexels.mp4")),
         "-frames:v", str(count), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(-1, HEIGHT, WIDTH, 3).copy()


def face_store(tmp: Path) -> tuple[Path, Path]:
    """tests/test_swap_masks.py's `store` and `folder`: the real analyser, the test swapper,
    restorers, Wav2Lip and occluder, an identity swapper; the astronaut as the source face."""
    from skimage.data import astronaut

    from tests.mask_models import add_test_swapper, build_occluder, build_spatial_swapper
    from tests.real_assets import asset
    from tests.real_chain import build_real_store, write_face_image
    from tests.test_swap_masks import IDENTITY

    store = build_real_store(tmp / "models", asset)
    build_occluder(store / "xseg_1.onnx")
    build_spatial_swapper(store / "identity_swapper.onnx", shift=0)
    add_test_swapper(store, IDENTITY, "identity_swapper.onnx", "tests/mask_models.py")
    folder = tmp / "job"
    write_face_image(folder / "faces" / "astronaut.png", astronaut())
    return store, folder


def occlusion(tmp: Path) -> tuple[Panel, Panel]:
    """tests/test_occlusion_chain.py: a real Pexels frame with the hand (a real photo cut in a
    hand's shape) over the mouth, swap with `occlusion: true`, then enhance and lipsync; with
    the swap's occlusion dropped from the faces (as before it travelled) and kept."""
    from processors.media.frames import FrameBatch
    from tests.lipsync_fixtures import speech_wav
    from tests.test_occlusion_chain import enhance, lipsync, unoccluded
    from tests.test_swap_masks import swap, with_hand

    store, folder = face_store(tmp)
    detector = analyser()
    frames = pexels_frames(2)
    box = detector.detect(frames[0])[0].box
    held = np.stack([with_hand(f, detector.detect(f)[0].kps)[0] for f in frames])
    swapped = swap(held, store, folder, occlusion=True)
    speech = speech_wav(tmp / "speech.wav", silence=0.0)

    def chain(batch: FrameBatch) -> np.ndarray:
        return lipsync(enhance(batch, store, folder), store, folder, speech).frames[0]

    return (
        (around(chain(unoccluded(swapped)), box, 0.45),
         ["BEFORE swap > enhance > lipsync,", "occlusion not passed on: the",
          "hand is repainted as face", STAND_IN]),
        (around(chain(swapped), box, 0.45),
         ["AFTER swap (occlusion: true) > enhance", "> lipsync: the hand is kept",
          "as the swap left it", STAND_IN]),
    )  # fmt: skip


class _BlackFill:
    """cv2 as processors.swap.processor saw it before the fix: the aligned crop's outside
    filled black instead of repeating the frame's edge (used for the BEFORE panel only)."""

    def __getattr__(self, name: str) -> object:
        return getattr(cv2, name)

    @staticmethod
    def warpAffine(src, matrix, size, **kwargs):
        if kwargs.get("borderMode") == cv2.BORDER_REPLICATE:
            kwargs["borderMode"] = cv2.BORDER_CONSTANT
        return cv2.warpAffine(src, matrix, size, **kwargs)


def frame_edge(tmp: Path) -> tuple[Panel, Panel]:
    """tests/test_swap_masks.py's edge test: the real frame moved left until the face leaves it
    (the right strip repeats the last column), swapped with the identity stand-in; the swap
    crop filled black past the edge (before) and repeating the edge (after)."""
    import processors.swap.processor as swap_module
    from tests.test_swap_masks import IDENTITY, swap

    store, folder = face_store(tmp)
    frame = pexels_frames(1)[0]
    box = analyser().detect(frame)[0].box
    dx = int((box[0] + box[2]) / 2 - 0.3 * (box[2] - box[0]))
    moved = cv2.copyMakeBorder(frame[:, dx:], 0, 0, 0, dx, cv2.BORDER_REPLICATE)
    after = swap(moved[None], store, folder, model=IDENTITY)
    real_cv2 = swap_module.cv2
    swap_module.cv2 = _BlackFill()
    try:
        before = swap(moved[None], store, folder, model=IDENTITY)
    finally:
        swap_module.cv2 = real_cv2
    _, y0, _, y1 = after.annotations["faces"][0][0].box.astype(int)
    # A strip of the face's middle at the frame's left edge, zoomed 4x (the fringe was one
    # column), a light stripe to its left so a dark edge column shows.
    rows = slice(y0 + (y1 - y0) * 3 // 10, y0 + (y1 - y0) * 6 // 10)

    def zoom(image: np.ndarray) -> np.ndarray:
        part = cv2.copyMakeBorder(
            image[rows, :48], 0, 0, 3, 0, cv2.BORDER_CONSTANT, value=(230,) * 3
        )
        return cv2.resize(part, None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)

    level = [float(b.frames[0][rows, 0].astype(float).mean()) for b in (before, after)]
    edge = float(moved[rows, 0].astype(float).mean())
    return (
        (zoom(before.frames[0]), ["BEFORE swap crop black", "past the edge: dark fringe",
                                  f"edge column {level[0] - edge:+.0f} levels",
                                  "identity stand-in swapper"]),
        (zoom(after.frames[0]), ["AFTER swap crop repeats", "the edge: no fringe",
                                 f"edge column {level[1] - edge:+.0f} levels",
                                 "identity stand-in swapper"]),
    )  # fmt: skip


def lipsync_all(tmp: Path) -> tuple[Panel, Panel]:
    """tests/test_lipsync_all.py: tests/speaker_fixtures.py's two real people side by side, one
    audio (guest.wav), lipsync with the default `target: largest` and with `target: all`; the
    frame where both faces changed most."""
    from skimage.data import astronaut

    from processors.media.probe import probe
    from tests.media_fixtures import decode_all
    from tests.real_assets import asset
    from tests.real_chain import build_real_store, write_face_image
    from tests.speaker_fixtures import reference_images, speech_tracks, two_face_clip
    from tests.test_lipsync_all import planned_one
    from tests.test_lipsync_speakers import FRAMES, HALF, run_whole

    folder = tmp / "speakers"
    folder.mkdir()
    clip = two_face_clip(folder / "two.mp4", asset, FRAMES)
    files = {"two.mp4": clip, **reference_images(folder, asset), **speech_tracks(folder)}
    write_face_image(folder / "faces" / "astronaut.png", astronaut())
    store = build_real_store(tmp / "speaker-models", asset)
    material = {"folder": folder, "files": files, "store": store, "info": probe(str(clip))}
    largest = run_whole(material, planned_one(material, "")).frames
    every = run_whole(material, planned_one(material, ", target: all")).frames
    source = decode_all(clip, material["info"])
    moved = (every != source).any(-1)
    both = np.minimum(moved[:, :, : HALF[0]].sum((1, 2)), moved[:, :, HALF[0] :].sum((1, 2)))
    i = int(np.argmax(both))
    return (
        (largest[i], ["BEFORE lipsync target: largest", "one face synced, the other kept",
                      f"(real footage, frame {i}) {STAND_IN}"]),
        (every[i], ["AFTER lipsync target: all", "both faces synced to the one audio",
                    f"(real footage, frame {i}) {STAND_IN}"]),
    )  # fmt: skip


PREVIEWS: dict[str, Callable[[Path], tuple[Panel, Panel]]] = {
    "crop-camera.jpg": crop_camera,
    "crop-fit-blur.jpg": crop_fit_blur,
    "crop-speaker.jpg": crop_speaker,
    "occlusion-chain.jpg": occlusion,
    "frame-edge.jpg": frame_edge,
    "lipsync-target-all.jpg": lipsync_all,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(PREVIEWS), default=sorted(PREVIEWS))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "quality")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        began = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            before, after = PREVIEWS[name](Path(tmp))
        image = side_by_side(before, after)
        path = args.out / name
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
        size = f"{image.shape[1]}x{image.shape[0]}, {path.stat().st_size // 1024} KB"
        print(f"{path.relative_to(ROOT)}: {size}, {time.monotonic() - began:.0f} s", flush=True)


if __name__ == "__main__":
    main()
