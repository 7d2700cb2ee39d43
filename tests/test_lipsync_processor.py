"""The lipsync step on real video and real speech, with a test model of Wav2Lip's signature:
the mouth follows the speech, faceless frames pass through untouched, the blend leaves no box,
batching and chunking change nothing."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from batch_jobs.plan import build_plan
from core.domain import PlannedItem, VideoInfo
from manifests.model import Manifest
from manifests.resolve import ResolvedItem
from processors.base import ProcessorContext
from processors.chain import Chain, ChainSetupError, concat_batches
from processors.faces import ANNOTATION, FaceContractError
from processors.lipsync.blend import lower_face_mask
from processors.lipsync.faces import context_reach
from processors.lipsync.options import LipsyncOptions
from processors.media.frames import FrameBatch, FrameReader
from processors.media.probe import probe
from processors.media.speech import probe_audio
from tests.lipsync_fixtures import (
    face_box_at,
    face_frame,
    make_face_video,
    make_model_store,
    read_wav,
    speech_wav,
)
from tests.media_fixtures import decode_all as decode_video
from tests.media_fixtures import run_chain_over, run_in_chunks

FPS = 25
NO_FACE = frozenset(range(60, 66)) | frozenset(range(95, 103))  # one stretch spans a seam


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("lipsync")
    speech = speech_wav(tmp / "speech.wav", silence=1.0)
    samples, rate = read_wav(speech)
    frames = int(len(samples) / rate * FPS)
    video = make_face_video(tmp / "talk.mp4", frames, fps=FPS, no_face=NO_FACE)
    return {
        "speech": speech,
        "video": video,
        "info": probe(str(video)),
        "store": make_model_store(tmp / "models"),
        "samples": samples,
        "rate": rate,
    }


def context(material: dict, **changes: object) -> ProcessorContext:
    info: VideoInfo = material["info"]
    values: dict = {
        "info": info,
        "rate": Fraction(info.fps_num, info.fps_den),
        "width": info.width,
        "height": info.height,
        "model_store": str(material["store"]),
        "audio_path": str(material["speech"]),
        "frames": info.frame_count,
    }
    values.update(changes)
    return ProcessorContext(**values)


def planned(material: dict, options: dict, chunk_seconds: float) -> PlannedItem:
    manifest = Manifest.model_validate(
        {
            "version": 1,
            "inputs": [{"video": "talk.mp4", "audio": "speech.wav"}],
            "chain": [{"lipsync": options}],
            "compute": {"chunk_seconds": chunk_seconds},
        }
    )
    item = ResolvedItem(0, "talk.mp4", "speech.wav", None)
    speech = probe_audio(str(material["speech"]))
    return build_plan(manifest, "", [(item, material["info"])], [speech]).items[0]


def run_chain(
    material: dict, item: PlannedItem, first: int, count: int | None, keep: tuple[int, int]
) -> FrameBatch:
    """One task's work: decode [first, first+count), run a fresh chain, keep [keep)."""
    info = item.info
    rate = Fraction(info.fps_num, info.fps_den)
    chain = Chain(item.chain, context(material, frames=item.frames))
    reader = FrameReader(
        str(material["video"]),
        width=info.width,
        height=info.height,
        rate=rate,
        start_time=info.start_time,
        first=first,
        count=count,
        batch_size=6,
    )
    return run_chain_over(chain, reader, keep)


def decode_all(material: dict) -> np.ndarray:
    return decode_video(material["video"], material["info"])


@pytest.fixture(scope="module")
def whole(material: dict) -> tuple[PlannedItem, FrameBatch, np.ndarray]:
    item = planned(material, {"batch_size": 8}, chunk_seconds=3600)
    out = run_chain(material, item, 0, None, (0, item.info.frame_count))
    return item, out, decode_all(material)


def mouth_change(before: np.ndarray, after: np.ndarray, index: int) -> float:
    """Mean absolute change over the lower half of the true face box."""
    x0, y0, x1, y1 = (round(v) for v in face_box_at(index))
    mid = (y0 + y1) // 2
    region = (slice(mid, y1), slice(x0, x1))
    return float(np.abs(after[region].astype(int) - before[region].astype(int)).mean())


def speech_level(material: dict, index: int) -> float:
    """RMS of the speech over the 0.2 s the model hears for frame `index` (from the WAV)."""
    samples, rate = material["samples"], material["rate"]
    start = round(index / FPS * rate)
    piece = samples[start : start + round(0.2 * rate)]
    return float(np.sqrt(np.mean(piece**2))) if len(piece) else 0.0


def test_mouth_changes_with_speech_energy(whole, material: dict) -> None:
    _, out, source = whole
    assert out.indices.tolist() == list(range(len(source)))
    faces = [i for i in range(len(source)) if i not in NO_FACE]
    change = np.array([mouth_change(source[i], out.frames[i], i) for i in faces])
    level = np.array([speech_level(material, i) for i in faces])
    silent = level < 1e-3
    loud = level > np.percentile(level[~silent], 50)
    assert silent.sum() > 10 and loud.sum() > 10
    # Silence: the model returns the face as given (only resampling blur remains).
    assert change[silent].mean() < 0.4 * change[loud].mean()
    assert np.corrcoef(change, np.log(level + 1e-4))[0, 1] > 0.6


def test_frames_without_a_face_are_byte_identical(whole) -> None:
    _, out, source = whole
    for i in sorted(NO_FACE):
        assert np.array_equal(out.frames[i], source[i]), f"faceless frame {i} changed"
    changed = [i for i in range(len(source)) if not np.array_equal(out.frames[i], source[i])]
    assert set(changed) <= set(range(len(source))) - NO_FACE
    assert len(changed) > len(source) // 2


def test_only_the_lower_face_changes_and_the_box_edge_does_not(whole) -> None:
    _, out, source = whole
    for i in range(0, len(source), 7):
        if i in NO_FACE:
            continue
        diff = np.abs(out.frames[i].astype(int) - source[i].astype(int)).max(axis=2)
        ys, xs = np.nonzero(diff)
        x0, y0, x1, y1 = face_box_at(i)
        height = y1 - y0
        # Every change sits inside the face box (pads 10 px down) and below its upper third.
        assert xs.min() >= x0 - 4 and xs.max() <= x1 + 4, i
        assert ys.min() >= y0 + height / 3 and ys.max() <= y1 + 14, i


def test_blend_mask_is_feathered_with_no_edge() -> None:
    for h, w in ((96, 96), (131, 104), (40, 33), (400, 380)):
        mask = lower_face_mask(h, w)[:, :, 0]
        assert mask.max() > 0.95
        border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
        assert not border.any(), "the mask reaches the box edge: a square would show"
        assert not mask[: int(h * 0.3)].any(), "the upper face (given to the model) is kept"
        steps = max(np.abs(np.diff(mask, axis=0)).max(), np.abs(np.diff(mask, axis=1)).max())
        # Feathered over a few percent of the crop: no step a viewer would see as an edge.
        assert steps < 15 / min(h, w) + 0.02, "no hard edge inside the box either"


def test_batch_size_changes_no_frame(whole, material: dict) -> None:
    _, reference, _ = whole
    for batch in (1, 32):
        item = planned(material, {"batch_size": batch}, chunk_seconds=3600)
        out = run_chain(material, item, 0, 60, (0, 60))
        assert np.array_equal(out.frames, reference.frames[:60]), batch


@pytest.mark.parametrize(
    "options",
    [{"batch_size": 8}, {"batch_size": 8, "detect_every": 4, "smoothing_frames": 1}],
    ids=["every-frame", "keyframes"],
)
def test_chunked_run_equals_single_run_frame_for_frame(
    whole, material: dict, options: dict
) -> None:
    frames = material["info"].frame_count
    single = whole[1]
    if "detect_every" in options:
        item = planned(material, options, chunk_seconds=3600)
        single = run_chain(material, item, 0, None, (0, frames))
    reach = context_reach(LipsyncOptions(**options))
    item = planned(material, options, chunk_seconds=frames / FPS / 4 + 0.01)
    assert len(item.chunks) == 4
    assert all(c.preroll == reach for c in item.chunks[1:]) and item.chunks[0].postroll == reach
    pieces = run_in_chunks(item, lambda *task: run_chain(material, item, *task))
    for chunk, piece in pieces:
        assert piece.indices.tolist() == list(range(chunk.start_frame, chunk.end_frame))
    chunked = concat_batches([piece for _, piece in pieces])
    assert chunked.indices.tolist() == single.indices.tolist()
    diff = np.abs(chunked.frames.astype(int) - single.frames.astype(int))
    assert diff.max() == 0, f"frames {sorted(set(np.nonzero(diff)[0].tolist()))} differ"


def test_keyframe_detection_follows_the_face(material: dict) -> None:
    item = planned(material, {"detect_every": 5}, chunk_seconds=3600)
    out = run_chain(material, item, 0, 50, (0, 50))
    source = decode_all(material)[:50]
    for i in range(50):
        ys, xs = np.nonzero(np.abs(out.frames[i].astype(int) - source[i].astype(int)).max(axis=2))
        x0, y0, x1, y1 = face_box_at(i)
        assert len(xs) and xs.min() >= x0 - 4 and xs.max() <= x1 + 4, i
        assert ys.min() >= y0 and ys.max() <= y1 + 14, i


def test_an_annotation_that_breaks_the_face_contract_is_named(material: dict) -> None:
    # Faces from a swap step are tested with swap's real output (tests/contract/); here only
    # what a consumer does with something that is not the contract: say so, by name.
    chain = Chain([{"name": "lipsync", "options": {"batch_size": 4}}], context(material))
    frame = face_frame(40)
    batch = FrameBatch(frame[None], np.arange(40, 41), {ANNOTATION: [[{"bbox": [0, 0, 9, 9]}]]})
    with pytest.raises(FaceContractError, match="holds a dict, not a Face"):
        chain.run([batch], lambda _: None, keep=(0, material["info"].frame_count))


def test_missing_audio_or_bad_model_is_a_clear_setup_error(material: dict, tmp_path: Path):
    with pytest.raises(ChainSetupError, match="no audio"):
        Chain([{"name": "lipsync", "options": {}}], context(material, audio_path=None))
    (tmp_path / "wav2lip_gan_96.onnx").write_bytes(b"not a model")
    with pytest.raises(ChainSetupError, match=r"wav2lip_gan_96\.onnx"):
        Chain([{"name": "lipsync", "options": {}}], context(material, model_store=str(tmp_path)))
    with pytest.raises(ChainSetupError, match="model store"):
        Chain([{"name": "lipsync", "options": {"model": "wav2lip"}}], context(
            material, model_store=str(tmp_path)))  # fmt: skip
