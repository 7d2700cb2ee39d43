"""swap's `face_map` with real embeddings: a clip of two real people in turn (Obama, Biden),
obama → the astronaut, biden → the cameraman. Every frame gets the right identity: in the
published face annotations, and in the job's output pixels, where the test swapper leaves a
tint that says which source it was given.

The test swapper's output is 0.5·(1 − target) + 0.25 + 0.2·tanh(latent · tint) per RGB
channel (tests/face_models.py), so inside the pasted face out + 0.5·in − 0.75 (in 0..1) is
that source's constant tint: measured per frame and matched to the nearer source.
"""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from skimage.data import astronaut, camera

from core.config import Settings
from core.status import open_status
from core.status.model import JobState
from dropbatch.inbox import find_inbox
from processors.base import ProcessorContext
from processors.swap.options import SwapOptions
from processors.swap.processor import SwapProcessor
from tests.media_fixtures import encode_frames
from tests.real_chain import (
    ANALYSER,
    SWAPPER,
    build_real_store,
    cli_env,
    dropbatch,
    run_task,
    write_face_image,
)

WIDTH, HEIGHT, FPS = 640, 360, 24
SEGMENT = 12  # frames per turn: obama, biden, obama, biden
TURNS = ("obama", "biden", "obama", "biden")
# Square cuts around each portrait's face (pixels of the originals), shown at 320×320.
CUTS = {"obama.jpg": (154, 0, 680), "biden.jpg": (154, 0, 816)}  # x0, y0, side
AT = (160, 20)
MANIFEST = f"""\
version: 1
inputs: [turns.mp4]
chain:
  - swap:
      analyser: {ANALYSER}
      model: {SWAPPER}
      det_size: 320
      face_map:
        - {{reference: faces/obama2.jpg, source: faces/astronaut.png}}
        - {{reference: faces/biden.jpg, source: faces/cameraman.png}}
output: {{preset: ultrafast, crf: 16}}
compute: {{gpu: none, chunk_seconds: 1, max_parallel_tasks: 2, max_retries: 0}}
"""


def portrait(path: Path) -> np.ndarray:
    x0, y0, side = CUTS[path.name]
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb[y0 : y0 + side, x0 : x0 + side], (320, 320), interpolation=cv2.INTER_AREA)


def turns_clip(path: Path, real_asset) -> list[str]:
    """The clip, and who is on screen in each frame."""
    faces = {who: portrait(real_asset(f"{who}.jpg")) for who in ("obama", "biden")}
    frames, who_when = [], []
    for who in TURNS:
        frame = np.full((HEIGHT, WIDTH, 3), 70, np.uint8)
        frame[AT[1] : AT[1] + 320, AT[0] : AT[0] + 320] = faces[who]
        frames += [frame] * SEGMENT
        who_when += [who] * SEGMENT
    encode_frames(path, frames, fps=FPS, size=(WIDTH, HEIGHT), crf=14)
    return who_when


def decode(path: Path) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(-1, HEIGHT, WIDTH, 3)


def tint(latent: np.ndarray, swapper: Path) -> np.ndarray:
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(swapper)).graph.initializer}
    return 0.2 * np.tanh(latent.reshape(1, -1) @ weights["tint"]).reshape(3)


@pytest.mark.slow
def test_face_map_swaps_each_person_for_their_own_source_on_every_frame(
    real_asset, tmp_path: Path
) -> None:
    store = build_real_store(tmp_path / "models", real_asset)
    inbox = tmp_path / "inbox"
    folder = inbox / "turns"
    folder.mkdir(parents=True)
    who_when = turns_clip(folder / "turns.mp4", real_asset)
    for name in ("obama2.jpg", "biden.jpg"):
        (folder / "faces").mkdir(exist_ok=True)
        shutil.copy(real_asset(name), folder / "faces" / name)
    write_face_image(folder / "faces" / "astronaut.png", astronaut())
    write_face_image(folder / "faces" / "cameraman.png", np.repeat(camera()[..., None], 3, 2))
    (folder / "manifest.yaml").write_text(MANIFEST)

    done = dropbatch(
        "run", str(folder / "manifest.yaml"), "--quiet", env=cli_env(store, tmp_path / "cache")
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = find_inbox(folder)  # the inbox `run` made of the manifest's folder
    assert found is not None
    [record] = open_status(Settings(**found.store_settings())).recent(5)
    assert record.state == JobState.SUCCEEDED, record.error
    [item] = record.plan.items
    assert len(item.chunks) == 2

    # The annotations one task publishes: each frame's face carries its source's index.
    info = item.info
    ctx = ProcessorContext(
        info=info,
        rate=Fraction(info.fps_num, info.fps_den),
        width=info.width,
        height=info.height,
        folder=folder,
        model_store=str(store),
    )
    single = run_task(item, folder / item.video, ctx, 0, None, (0, info.frame_count))
    expected = [{"obama": 0, "biden": 1}[who] for who in who_when]
    applied = [[f.identity for f in faces] for faces in single.annotations["faces"]]
    assert applied == [[e] for e in expected]

    # The output's pixels: the tint inside each pasted face is its source's.
    swap = SwapProcessor(SwapOptions(**item.chain[0]["options"]), ctx)
    tints = [tint(latent, store / "test_swapper.onnx") for latent in swap.latents]
    assert np.abs(tints[0] - tints[1]).max() > 0.05  # the two sources are told apart
    before, after = decode(folder / "turns.mp4"), decode(folder / "out" / "turns.mp4")
    assert len(after) == len(before) == len(who_when)
    for index, faces in enumerate(single.annotations["faces"]):
        [face] = faces
        (lx, ly), (rx, ry) = face.kps[0], face.kps[4]  # left eye, right mouth corner
        core = (slice(round(ly), round(ry)), slice(round(lx), round(rx)))
        measured = np.median(
            (after[index][core] + 0.5 * before[index][core].astype(float)) / 255 - 0.75,
            axis=0,
        )
        measured = np.median(measured, axis=0)
        nearest = int(np.argmin([np.abs(measured - t).sum() for t in tints]))
        assert nearest == expected[index], (index, who_when[index], measured, tints)
