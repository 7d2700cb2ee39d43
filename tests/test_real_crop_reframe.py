"""Crop's reframing on real footage: two real people taking turns (tests/reframe_fixtures.py)
framed by who speaks, two real portraits far apart shown whole with `fit: blur`, and the
camera mode per shot on the real Pexels clip. Faces to check against are found
independently, by the real SCRFD-500m on the input frames."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.data import coffee

from core.domain import VideoInfo
from processors.base import ProcessorContext
from processors.crop.options import CropOptions
from processors.crop.processor import CropProcessor
from processors.faces import FaceAnalyser
from processors.media.frames import FrameReader
from processors.media.probe import probe
from tests.media_fixtures import encode_frames
from tests.real_chain import YOLO, build_real_store
from tests.reframe_fixtures import HALF, turns_clip

HOLD_RATE = 0.9


def clip_context(clip: Path, **context: object) -> tuple[VideoInfo, ProcessorContext]:
    """The probed clip, and the context a task gives its chain over the whole of it."""
    info = probe(str(clip))
    rate = Fraction(info.fps_num, info.fps_den)
    return info, ProcessorContext(
        info=info, rate=rate, width=info.width, height=info.height, **context
    )


def crop_run(
    clip: Path, options: CropOptions, first: int = 0, stop: int | None = None, **context
) -> tuple[CropProcessor, dict[int, np.ndarray]]:
    """The crop over frames [first, stop) of `clip`, as a task runs its chunk with context."""
    info, ctx = clip_context(clip, **context)
    crop = CropProcessor(options, ctx)
    count = None if stop is None else stop - first
    out: dict[int, np.ndarray] = {}
    reader = FrameReader.for_video(str(clip), info, first, count, batch_size=8)
    try:
        for batch in reader:
            done = crop.push(batch)
            out.update(zip(done.indices.tolist(), done.frames, strict=True))
    finally:
        reader.close()
    done = crop.flush()
    out.update(zip(done.indices.tolist(), done.frames, strict=True))
    return crop, out


def frames_of(clip: Path, count: int | None = None) -> list[np.ndarray]:
    info = probe(str(clip))
    reader = FrameReader.for_video(str(clip), info, 0, count, batch_size=8)
    try:
        return [frame for batch in reader for frame in batch.frames]
    finally:
        reader.close()


@pytest.mark.slow
def test_speaker_framing_holds_whoever_speaks_on_real_footage(real_asset, tmp_path: Path) -> None:
    clip, speaking = turns_clip(tmp_path / "turns.mp4", real_asset)
    options = CropOptions(aspect="9:16", subject="speaker")
    crop, _ = crop_run(clip, options, audio_path=str(clip))
    windows = crop.windows
    faces = FaceAnalyser(real_asset("scrfd_500m_bnkps.onnx"), None, det_size=320)
    held, seen = [], 0
    for i, frame in enumerate(frames_of(clip)):
        who = speaking[i] if i < len(speaking) else None
        if who is None:
            continue
        # The speaker's face: SCRFD's face in their half; its nose and mouth corners must be
        # in the window.
        mine = [f for f in faces.detect(frame) if (f.kps[2, 0] >= HALF[0]) == (who == 1)]
        if not mine:
            continue
        seen += 1
        x, _, w, _ = windows[i]
        kps = mine[0].kps[2:]
        held.append(bool(((kps[:, 0] >= x) & (kps[:, 0] <= x + w)).all()))
    rate = float(np.mean(held))
    print(f"\nspeaker held on {rate:.1%} of {seen} frames where one person speaks")
    assert seen >= 0.9 * sum(s is not None for s in speaking)
    assert rate >= HOLD_RATE
    # Not by accident: the window is on the left for some turns and the right for others.
    centres = {windows[i][0] + windows[i][2] / 2 >= HALF[0] for i in windows}
    assert centres == {False, True}
    # Two chunks, each with the context the crop declares, give the single task's windows.
    total = len(windows)
    middle = total // 2
    chunked: dict[int, tuple[int, int, int, int]] = {}
    for start, end in ((0, middle), (middle, total)):
        first = max(0, start - crop.lookbehind)
        stop = min(total, end + crop.lookahead)
        part, _ = crop_run(clip, options, first, stop, audio_path=str(clip))
        chunked.update({i: part.windows[i] for i in range(start, end)})
    assert chunked == windows


def two_portraits(real_asset, target: Path, frames: int = 12) -> Path:
    """Two real portraits at the far ends of a 1280×720 frame, over a real photo without a
    face (scikit-image's coffee cup), so the padding has something to blur."""
    canvas = cv2.resize(coffee(), (1280, 720))
    for name, x in (("obama.jpg", 0), ("biden.jpg", 1280 - 320)):
        image = cv2.cvtColor(cv2.imread(str(real_asset(name))), cv2.COLOR_BGR2RGB)
        scale = 320 / image.shape[1]
        image = cv2.resize(image, (320, min(720, round(image.shape[0] * scale))))
        canvas[160 : 160 + image.shape[0], x : x + 320] = image[: 720 - 160]
    encode_frames(target, [canvas] * frames, fps=24, size=(1280, 720))
    return target


@pytest.mark.slow
def test_fit_blur_shows_two_people_far_apart_whole_on_blurred_padding(
    real_asset, tmp_path: Path
) -> None:
    clip = two_portraits(real_asset, tmp_path / "two.mp4")
    faces = FaceAnalyser(real_asset("scrfd_500m_bnkps.onnx"), None, det_size=640)
    assert len(faces.detect(frames_of(clip)[0])) == 2
    options = CropOptions(aspect="9:16", subject="all", fit="blur")
    crop, out = crop_run(clip, options)
    frame = out[6]
    assert frame.shape == (720, 404, 3)
    # Both people, whole, in the output.
    assert len(faces.detect(frame)) == 2
    # Above and below them, a blurred copy of the frame: not flat, but without the edges the
    # people themselves have.
    _, _, w, h = crop.windows[6]
    shown = round(h * 404 / w)
    top = (720 - shown) // 2
    sharpness = [
        float(cv2.Laplacian(cv2.cvtColor(part, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())
        for part in (frame[: top - 4], frame[top + 4 : top + shown - 4])
    ]
    assert top >= 100 and frame[: top - 4].std() > 3
    assert sharpness[0] < 0.2 * sharpness[1], sharpness
    # Cropped to the aspect instead, one of them is cut off.
    _, cropped = crop_run(clip, CropOptions(aspect="9:16", subject="all"))
    assert len(faces.detect(cropped[6])) < 2


@pytest.mark.slow
def test_camera_auto_on_real_footage_holds_still_pieces_without_motion(
    real_asset, tmp_path: Path
) -> None:
    clip = real_asset("pexels.mp4")
    store = str(build_real_store(tmp_path / "models", real_asset))
    stop = 300  # 12.5 s: three full shot pieces of 4 s and a short one
    yolo = {"detector": "yolo-onnx", "model": YOLO, "detect_every": 2}
    auto, _ = crop_run(clip, CropOptions(camera="auto", **yolo), 0, stop, model_store=store)
    tracked, _ = crop_run(clip, CropOptions(camera="track", **yolo), 0, stop, model_store=store)
    modes = auto.modes
    print(f"\ncamera modes over {stop} frames: {''.join(modes[i][0] for i in sorted(modes))}")
    piece = round(4 * 24000 / 1001)
    full = range(0, stop - piece + 1, piece)
    still = [p for p in full if modes[p] == "still" == modes[p + piece - 1]]
    assert still and set(modes.values()) != {"still"}  # decided per piece
    faces = FaceAnalyser(real_asset("scrfd_500m_bnkps.onnx"), None, det_size=320)
    frames = frames_of(clip, stop)
    for start in still:
        inner = range(start + piece // 4, start + 3 * piece // 4)  # away from the ramps
        assert len({auto.windows[i] for i in inner}) == 1  # not one pixel of motion
        xs = [tracked.windows[i][0] for i in inner]
        assert max(xs) - min(xs) >= 3  # tracking the same frames moves the camera
        for i in inner:
            found = faces.detect(frames[i])
            x, _, w, _ = auto.windows[i]
            assert found and ((found[0].kps[:, 0] >= x) & (found[0].kps[:, 0] <= x + w)).all()


@pytest.mark.slow
def test_a_crop_only_chain_hears_the_videos_own_track_through_the_task(
    real_asset, tmp_path: Path
) -> None:
    """The planner → task → crop seam for a chain with no lipsync: the item planned the real
    way, its context built by the task's own builder, gives speaker framing the video's own
    track, so the crop decides by voice as it does when handed the audio directly (without
    it, crop falls back to mouth movement alone and says so)."""
    from batch_jobs.plan import build_plan
    from manifests.model import Manifest
    from manifests.resolve import ResolvedItem
    from processors.chain import Chain
    from tests.real_chain import task_context

    clip, _ = turns_clip(tmp_path / "turns.mp4", real_asset)
    crop = {"aspect": "9:16", "subject": "speaker"}
    manifest = Manifest.model_validate(
        {"version": 1, "inputs": "turns.mp4", "chain": [{"crop": crop}],
         "compute": {"gpu": "none"}}
    )  # fmt: skip
    info = probe(str(clip))
    item = build_plan(manifest, "", [(ResolvedItem(0, "turns.mp4", None, None), info)]).items[0]
    ctx = task_context(item, tmp_path, tmp_path, "")
    assert ctx.audio_path == tmp_path / "turns.mp4"  # the video's own track
    [built] = Chain(item.chain, ctx).processors
    assert isinstance(built, CropProcessor)
    direct, _ = crop_run(clip, CropOptions(**crop), audio_path=str(clip))
    assert built._voiced is not None and direct._voiced is not None
    assert np.array_equal(built._voiced, direct._voiced)
