"""The whole chain on real footage: crop → swap (occlusion, regions, pixel boost 256) → enhance
→ lipsync with two speakers, as a user runs it (`dropbatch run`), on the two-face clip of
tests/speaker_fixtures.py (the Pexels host and the single_face.mp4 guest side by side).

The real YOLO11n (crop), SCRFD-500m + ArcFace MBF (swap's analysis, which enhance and lipsync
reuse), and test models with the real signatures for the swapper, occluder, parser, restorer
and Wav2Lip. Swap puts the astronaut on the host only (target `reference`); lipsync still knows
her as the host, by swap's embedding of her face before the swap, and syncs each face to its
own speech. The job ends SUCCEEDED with the speakers' mix as its soundtrack, and the chunks, each
as its task runs it, equal one task over the whole clip.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from skimage.data import astronaut

from core.status.model import JobState
from tests.enhance_models import build_enhance_store
from tests.mask_models import build_occluder, build_parser
from tests.real_chain import (
    ANALYSER,
    SWAPPER,
    YOLO,
    build_real_store,
    chunked_and_single,
    cli_env,
    dropbatch,
    run_task,
    task_context,
    write_face_image,
)
from tests.speaker_fixtures import reference_images, speech_tracks, two_face_clip
from tests.test_real_chains import decode_rgb, job_record, probe_streams

FRAMES = 26  # two chunks (24 + 2 frames): both speakers speak within them
WIDTH, HEIGHT = 540, 180  # crop to 3:1 around both people (subject: all)
MANIFEST = f"""\
version: 1
inputs: [two.mp4]
chain:
  - crop: {{aspect: "3:1", detector: yolo-onnx, model: {YOLO}, subject: all, detect_every: 4}}
  - swap:
      analyser: {ANALYSER}
      model: {SWAPPER}
      source: faces/astronaut.png
      target: reference
      reference: host.png
      det_size: 320
      occlusion: true
      regions: [skin, nose, mouth]
      pixel_boost: 256
  - enhance: {{model: gfpgan_1.4, analyser: {ANALYSER}}}
  - lipsync:
      analyser: {ANALYSER}
      batch_size: 8
      speakers:
        - {{reference: host.png, audio: host.wav}}
        - {{reference: guest.png, audio: guest.wav}}
output: {{preset: ultrafast, crf: 18}}
compute: {{gpu: none, chunk_seconds: 1, max_parallel_tasks: 2, max_retries: 0}}
"""


@pytest.fixture(scope="module")
def full_store(tmp_path_factory: pytest.TempPathFactory, real_asset) -> Path:
    """The real detectors and the test swapper (tests/real_chain.py), with the test occluder,
    parser and restorers under the packaged catalog's names."""
    folder = build_real_store(tmp_path_factory.mktemp("full-store"), real_asset)
    build_occluder(folder / "xseg_1.onnx")
    build_parser(folder / "bisenet_resnet_34.onnx")
    return build_enhance_store(folder)


@pytest.mark.slow
def test_crop_swap_masks_enhance_and_two_speakers_run_and_chunks_equal_one_task(
    full_store: Path, real_asset, tmp_path: Path
) -> None:
    folder = tmp_path / "inbox" / "full"
    folder.mkdir(parents=True)
    two_face_clip(folder / "two.mp4", real_asset, FRAMES)
    reference_images(folder, real_asset)
    speech_tracks(folder)
    write_face_image(folder / "faces" / "astronaut.png", astronaut())
    (folder / "manifest.yaml").write_text(MANIFEST)
    env = cli_env(full_store, tmp_path / "model-cache")
    done = dropbatch("run", str(folder / "manifest.yaml"), "--quiet", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    record = job_record(folder)  # no inbox above it: run made the manifest's folder one
    assert record.state == JobState.SUCCEEDED, (record.error, record.errors)
    assert json.loads((folder / "manifest.status.json").read_text())["state"] == "SUCCEEDED"
    [item] = record.plan.items
    assert [s["name"] for s in item.chain] == ["crop", "swap", "enhance", "lipsync"]
    # `dropbatch run` serves the manifest's folder as the bucket: names are relative to it.
    assert item.mix == ["host.wav", "guest.wav"] and len(item.chunks) == 2
    out = folder / "out" / "two.mp4"
    streams = probe_streams(out)
    assert (streams["video"]["width"], streams["video"]["height"]) == (WIDTH, HEIGHT)
    assert int(streams["video"]["nb_read_frames"]) == FRAMES
    assert "audio" in streams

    # The chunks, each as its task runs it, equal one task over the whole clip.
    ctx = task_context(item, folder, folder, full_store)
    chunked, single = chunked_and_single(item, folder / item.video, ctx)
    assert chunked.indices.tolist() == single.indices.tolist() == list(range(FRAMES))
    for index, (a, b) in enumerate(zip(chunked.frames, single.frames, strict=True)):
        assert np.array_equal(a, b), f"frame {index} differs between chunks and one task"
    encoded = decode_rgb(out, WIDTH, HEIGHT).astype(np.int16)
    assert np.abs(encoded - single.frames).mean() < 3.0

    # Lipsync moved both mouths: against the same chain without it, the host's side (the
    # swapped face, matched by her face before the swap) and the guest's side both changed.
    without = item.model_copy(update={"chain": item.chain[:3]})
    ctx = task_context(without, folder, folder, full_store)
    before = run_task(without, folder / item.video, ctx, 0, None, (0, FRAMES)).frames
    changed = np.abs(single.frames.astype(np.int16) - before).max(axis=3) > 3
    columns = changed.sum(axis=(0, 1))
    assert columns[: WIDTH // 2].sum() > 200 and columns[WIDTH // 2 :].sum() > 200, columns
