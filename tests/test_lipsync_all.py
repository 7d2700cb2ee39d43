"""`lipsync.target: all` for one audio: every face on screen speaks it, found by the step's own
real SCRFD or handed on by an earlier swap step, and a chunked run equals one task.

Material: tests/speaker_fixtures.py's two real people side by side (the Pexels host, the
single_face.mp4 guest), the real analyser pack and the Wav2Lip test-signature model. For
occlusion: tests/test_occlusion_chain.py's real Pexels frames with a hand over the mouth, beside
the same frames without it, and its test XSeg (a pixel is covered where it is bluer than red).
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from core.domain import PlannedItem, VideoInfo
from manifests.loader import ManifestInvalid, load_manifest
from processors.base import ProcessorContext
from processors.chain import concat_batches
from processors.faces import FaceAnalyser
from processors.lipsync.blend import BOX_LANDMARKS
from processors.lipsync.faces import face_shape, smooth_all
from processors.lipsync.options import LipsyncOptions
from processors.lipsync.processor import LipsyncProcessor
from processors.media.frames import FrameBatch
from processors.swap.options import SwapOptions
from processors.swap.processor import SwapProcessor
from tests.lipsync_fixtures import build_test_model
from tests.media_fixtures import decode_all, run_in_chunks
from tests.real_chain import ANALYSER, SWAPPER, build_real_store, run_task, task_context
from tests.test_lipsync_speakers import HALF, LEFT, RIGHT, material, plan_text, run_whole
from tests.test_occlusion_chain import held, speech, store, unoccluded
from tests.test_swap_masks import HEIGHT, WIDTH, clip, folder

# The modules' fixtures, used here.
__all__ = ["clip", "folder", "held", "material", "speech", "store"]
EVERY = slice(None)
SYNCED = 5000  # pixels of a half that differ where its face was synced (as test_lipsync_target)


def planned_one(material: dict, options: str, before: str = "", batch: int = 8) -> PlannedItem:
    text = (
        f"version: 1\ninputs: [two.mp4]\nchain:\n{before}"
        f"  - lipsync: {{audio: guest.wav, length_policy: pad, batch_size: {batch}, "
        f"det_size: 320{options}}}\n"
        "output: {preset: ultrafast, crf: 18}\n"
        "compute: {gpu: none, chunk_seconds: 1.0, max_parallel_tasks: 2, max_retries: 0}\n"
    )
    return plan_text(material, text)


def moved(out: np.ndarray, before: np.ndarray, half: tuple) -> int:
    """Pixels of this half that differ, over all frames."""
    return int((out[(EVERY, *half)] != before[(EVERY, *half)]).any(-1).sum())


@pytest.fixture(scope="module")
def every(material: dict) -> tuple[PlannedItem, FrameBatch]:
    item = planned_one(material, ", target: all")
    return item, run_whole(material, item)


def test_every_face_speaks_with_target_all_and_one_with_largest(material: dict, every) -> None:
    item, out = every
    source = decode_all(material["files"]["two.mp4"], item.info)
    largest = run_whole(material, planned_one(material, "")).frames
    # `largest`: one face speaks, the other half is left byte for byte.
    left, right = moved(largest, source, LEFT), moved(largest, source, RIGHT)
    assert min(left, right) == 0 and max(left, right) > SYNCED, (left, right)
    spoke = LEFT if left else RIGHT
    quiet = RIGHT if left else LEFT
    # `all`: both faces speak; the largest one exactly as `largest` syncs it (faces are
    # independent of each other), the other one too.
    assert moved(out.frames, source, quiet) > SYNCED
    assert np.array_equal(out.frames[(EVERY, *spoke)], largest[(EVERY, *spoke)])
    # Not just somewhere in the half: the mouth moves in (nearly) every frame of both.
    for half in (LEFT, RIGHT):
        per_frame = (out.frames[(EVERY, *half)] != source[(EVERY, *half)]).any(-1).sum((1, 2))
        assert (per_frame > 200).mean() > 0.9, per_frame


def test_chunked_run_equals_one_task(material: dict, every) -> None:
    item, whole = every
    ctx = task_context(item, material["folder"], material["folder"], material["store"])
    pieces = run_in_chunks(
        item, lambda *task: run_task(item, material["files"]["two.mp4"], ctx, *task)
    )
    chunked = concat_batches([piece for _, piece in pieces])
    assert len(pieces) == 2 and chunked.indices.tolist() == whole.indices.tolist()
    assert np.array_equal(chunked.frames, whole.frames)


def test_each_face_is_smoothed_on_its_own_and_a_missed_frame_is_bridged(
    material: dict, real_asset
) -> None:
    detector = FaceAnalyser(
        real_asset("scrfd_500m_bnkps.onnx"), None, det_size=320, providers=["CPUExecutionProvider"]
    )
    frames = decode_all(material["files"]["two.mp4"], material["info"])[10:15]
    window = [
        sorted(face_shape(f.box, f.kps, BOX_LANDMARKS) for f in detector.detect(frame))
        for frame in frames
    ]
    assert [len(w) for w in window] == [2] * 5  # host (left) first, then the guest
    both = smooth_all(window, 2)
    assert len(both) == 2 and both[0][2] <= HALF[0] <= both[1][0]
    # Each face's box is the mean of its own boxes, not pulled towards the other face.
    for k, box in enumerate(both):
        assert np.allclose(box, np.mean([w[k] for w in window], axis=0))
    # The detector misses the host in the middle frame: bridged from her neighbours' boxes,
    # unless the faces came from an earlier step (its "no face" is a decision).
    missed = [*window[:2], window[2][1:], *window[3:]]
    guest, host = smooth_all(missed, 2)  # the faces found first, then the bridged ones
    assert guest == both[1]
    assert np.allclose(host, np.mean([w[0] for k, w in enumerate(window) if k != 2], axis=0))
    assert smooth_all(missed, 2, bridge=False) == [both[1]]
    # A face found in the middle frame only is synced there too (no vote between faces).
    alone = [w[1:] for w in window[:2]] + [window[2]] + [w[1:] for w in window[3:]]
    assert len(smooth_all(alone, 2)) == 2


def test_batch_size_bounds_faces_a_call_and_one_face_per_call_still_syncs_every_face(
    material: dict, every, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_asset,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    item, whole = every
    source = decode_all(material["files"]["two.mp4"], item.info)
    # Three faces a call: a frame's two faces are split between calls, the frames the same.
    odd = planned_one(material, ", target: all", batch=3)
    assert np.array_equal(run_whole(material, odd).frames, whole.frames)
    # An export that fails a call of two (its batch declared open): one face per call.
    monkeypatch.setenv("DROPBATCH_MODEL_CACHE", str(tmp_path / "model-cache"))
    single = build_real_store(tmp_path / "single", real_asset)
    build_test_model(single / "wav2lip_gan_96.onnx", names=("source", "target"), one_only=True)
    ctx = task_context(item, material["folder"], material["folder"], single)
    with caplog.at_level(logging.INFO, logger="dropbatch.lipsync"):
        out = run_task(item, material["files"]["two.mp4"], ctx, 0, None, (0, len(source)))
    assert "one face per call" in caplog.text
    assert np.array_equal(out.frames, whole.frames)
    assert min(moved(out.frames, source, LEFT), moved(out.frames, source, RIGHT)) > SYNCED


# Swap puts the astronaut on every face; its analysis hands both faces on to lipsync.
SWAP_ALL = (
    f"  - swap: {{analyser: {ANALYSER}, model: {SWAPPER}, source: faces/astronaut.png, "
    "target: all, det_size: 320}\n"
)


def test_after_a_swap_every_face_it_found_speaks(material: dict) -> None:
    item = planned_one(material, ", target: all", before=SWAP_ALL)
    out = run_whole(material, item).frames
    swapped = run_whole(material, item.model_copy(update={"chain": item.chain[:1]})).frames
    source = decode_all(material["files"]["two.mp4"], item.info)
    # Both faces were swapped (the test swapper inverts them), so lipsync got both.
    assert min(moved(swapped, source, LEFT), moved(swapped, source, RIGHT)) > SYNCED
    # Lipsync moves both mouths of the swapped frames (the halves' inner parts: a swap's
    # paste box may reach a few pixels past the middle).
    inner_left, inner_right = np.s_[:, : HALF[0] - 20], np.s_[:, HALF[0] + 20 :]
    assert moved(out, swapped, inner_left) > SYNCED
    assert moved(out, swapped, inner_right) > SYNCED
    largest = run_whole(material, planned_one(material, "", before=SWAP_ALL)).frames
    assert min(moved(largest, swapped, inner_left), moved(largest, swapped, inner_right)) == 0


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (", target: all, detect_every: 3", "with `target: all` every face is found on every"),
        (", target: all, speakers: [{reference: a.png, audio: a.wav}]",
         "either `target: all` or `speakers`"),
    ],
    ids=["detect-every", "speakers"],
)  # fmt: skip
def test_all_options_that_cannot_work_are_refused_with_the_field(options: str, says: str) -> None:
    text = f"version: 1\ninputs: [v.mp4]\nchain: [{{lipsync: {{audio: a.wav{options}}}}}]\n"
    with pytest.raises(ManifestInvalid) as err:
        load_manifest(text.encode())
    found = {(e.field, e.message) for e in err.value.errors}
    assert any(f == "chain[0].lipsync" and says in m for f, m in found), found


# -- occlusion, several faces a frame --------------------------------------------------------
def context(store: Path, folder: Path, speech: Path | None, frames: int) -> ProcessorContext:
    """Two of the Pexels frames side by side: twice as wide."""
    width = 2 * WIDTH
    info = VideoInfo(duration=1, fps_num=24, fps_den=1, frame_count=frames, width=width,
                     height=HEIGHT)  # fmt: skip
    return ProcessorContext(
        info=info, rate=Fraction(24), width=width, height=HEIGHT, folder=folder,
        model_store=str(store), audio_path=speech, frames=frames,
    )  # fmt: skip


def run(proc: LipsyncProcessor | SwapProcessor, batch: FrameBatch) -> FrameBatch:
    return concat_batches([b for b in (proc.push(batch), proc.flush()) if len(b)])


def test_every_face_keeps_what_covers_its_mouth(
    held: tuple, clip: np.ndarray, store: Path, folder: Path, speech: Path
) -> None:
    hand_frames, inner = held
    frames = np.concatenate([hand_frames, clip], axis=2)
    hand = np.concatenate([inner, np.zeros_like(inner)], axis=2)
    right = np.zeros(frames.shape[:3], bool)
    right[:, :, WIDTH:] = True
    batch = FrameBatch(frames, np.arange(len(frames), dtype=np.int64))
    ctx = context(store, folder, speech, len(frames))

    def lipsync(batch: FrameBatch, **options: object) -> FrameBatch:
        opts = LipsyncOptions(smoothing_frames=0, det_size=320, target="all", **options)
        return run(LipsyncProcessor(opts, ctx), batch)

    def check(kept: FrameBatch, painted: FrameBatch, before: np.ndarray) -> None:
        for i in range(len(frames)):
            # The hand stays; the mouth around it and the other face's mouth are synced.
            assert np.array_equal(kept.frames[i][hand[i]], before[i][hand[i]]), i
            assert (kept.frames[i] != before[i])[:, :WIDTH].any(-1).sum() > 500, i
            assert (kept.frames[i] != before[i])[right[i]].any(-1).sum() > 1000, i
            # Without the occlusion the hand is painted over.
            assert (painted.frames[i] != before[i])[hand[i]].any(-1).mean() > 0.8, i

    # Our own occluder, on each face's crop.
    check(lipsync(batch, occlusion=True), lipsync(batch), frames)
    # A swap's occlusion of every face, carried on its faces.
    swap = SwapProcessor(
        SwapOptions(analyser=ANALYSER, model=SWAPPER, source="faces/astronaut.png", det_size=320,
                    target="all", occlusion=True),
        ctx,
    )  # fmt: skip
    swapped = run(swap, batch)
    assert all(len(found) == 2 for found in swapped.annotations["faces"])
    check(lipsync(swapped), lipsync(unoccluded(swapped)), swapped.frames)
