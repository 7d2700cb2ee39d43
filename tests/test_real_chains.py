"""The chains (tests/real_chain.py, CHAINS) as a user runs them: `dropbatch run` (and `dropbatch
serve`) on three seconds of real footage, with the real detectors (YOLO11n for crop; SCRFD-500m
+ ArcFace MBF as swap's analyser pack, whose detector lipsync also takes from the store when no
swap runs before it) and the test-signature swapper, restorers and Wav2Lip from a model store
folder.

Each job ends SUCCEEDED with every frame and the soundtrack; the same chain run in process
chunk by chunk (each chunk with its pre- and post-roll, as its task decodes it) equals one task
over the whole clip, frame for frame, and the job's encoded output is that result.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from skimage.data import astronaut

from core.config import Settings
from core.status import open_status
from core.status.model import JobRecord, JobState
from tests.real_chain import (
    CHAINS,
    build_real_store,
    chain_manifest,
    chunked_and_single,
    cli_env,
    dropbatch,
    run_task,
    task_context,
    trim,
    write_face_image,
)

CLIP_START, CLIP_SECONDS = 9.0, 2.5  # she faces the camera, smiling and talking
# Through `dropbatch serve` instead of `dropbatch run` (the rest go through `run`).
SERVED = ("crop", "swap", "lipsync")


@pytest.fixture(scope="session")
def real_store(tmp_path_factory: pytest.TempPathFactory, real_asset) -> Path:
    return build_real_store(tmp_path_factory.mktemp("real-store"), real_asset)


@pytest.fixture(scope="session")
def pexels_clip(tmp_path_factory: pytest.TempPathFactory, real_asset) -> Path:
    folder = tmp_path_factory.mktemp("pexels")
    return trim(real_asset("pexels.mp4"), folder / "talk.mp4", CLIP_START, CLIP_SECONDS)


def probe_streams(path: Path) -> dict[str, dict]:
    doc = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(path)],
            capture_output=True, text=True, check=True, timeout=120,
        ).stdout
    )  # fmt: skip
    return {s["codec_type"]: s for s in doc["streams"]}


def decode_rgb(path: Path, width: int, height: int) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def job_record(inbox: Path) -> JobRecord:
    """The one job in the store of the local inbox folder `inbox` (`<inbox>/.dropbatch/`)."""
    settings = Settings(local_root=inbox.parent, local_state=inbox / ".dropbatch")
    [record] = open_status(settings).recent(5)
    return record


def drop_job(folder: Path, clip: Path, steps: tuple[str, ...]) -> None:
    folder.mkdir(parents=True)
    shutil.copy(clip, folder / "talk.mp4")  # a symlink out of the folder is refused
    write_face_image(folder / "faces" / "astronaut.png", astronaut())
    (folder / "manifest.yaml").write_text(chain_manifest(steps))


@pytest.mark.slow
@pytest.mark.parametrize("steps", CHAINS, ids=["-".join(c) for c in CHAINS])
def test_every_chain_runs_on_real_footage_and_chunks_equal_one_task(
    steps: tuple[str, ...], real_store: Path, pexels_clip: Path, tmp_path: Path
) -> None:
    env = cli_env(real_store, tmp_path / "model-cache")
    inbox = tmp_path / "inbox"
    name = "-".join(steps)
    folder = inbox / name
    drop_job(folder, pexels_clip, steps)
    if steps == SERVED:
        done = dropbatch("serve", "--inbox", str(inbox), "--once", "--poll", "0.2", env=env)
        bucket = inbox
    else:
        done = dropbatch("run", str(folder / "manifest.yaml"), "--quiet", env=env)
        bucket = folder  # no inbox above it: run makes the manifest's folder one
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    record = job_record(bucket)
    assert record.state == JobState.SUCCEEDED, (record.error, record.errors)
    mirror = json.loads((folder / "manifest.status.json").read_text())
    assert mirror["state"] == "SUCCEEDED"

    # Every frame, at the size the chain makes, with the clip's own soundtrack.
    [item] = record.plan.items
    info = item.info
    assert len(item.chunks) >= 3
    frames = item.frames or info.frame_count
    assert frames == info.frame_count >= round(CLIP_SECONDS * 23.976) - 1
    out = folder / "out" / "talk.mp4"
    streams = probe_streams(out)
    width, height = (202, 360) if "crop" in steps else (info.width, info.height)
    assert (streams["video"]["width"], streams["video"]["height"]) == (width, height)
    assert int(streams["video"]["nb_read_frames"]) == frames
    fps = info.fps_num / info.fps_den
    assert "audio" in streams
    assert abs(float(streams["audio"]["duration"]) - frames / fps) <= 2 / fps + 0.05

    # The chunks, each as its task runs it, equal one task over the whole clip.
    ctx = task_context(item, bucket, folder, real_store)
    chunked, single = chunked_and_single(item, bucket / item.video, ctx)
    assert chunked.indices.tolist() == single.indices.tolist() == list(range(frames))
    for index, (a, b) in enumerate(zip(chunked.frames, single.frames, strict=True)):
        assert np.array_equal(a, b), f"{name}: frame {index} differs between chunks and one task"
    # The job's output is that result, up to the encoder's rounding.
    encoded = decode_rgb(out, width, height).astype(np.int16)
    assert np.abs(encoded - single.frames).mean() < 3.0

    # Each step did its work on the real face: against the same frames with only the crop
    # (or none), decoded as the tasks decode them.
    def only(names: tuple[str, ...]) -> np.ndarray:
        part = item.model_copy(update={"chain": [s for s in item.chain if s["name"] in names]})
        ctx = task_context(part, bucket, folder, real_store)
        return run_task(part, bucket / item.video, ctx, 0, None, (0, frames)).frames

    plain = only(()).astype(np.int16)
    cropped = only(("crop",)).astype(np.int16) if "crop" in steps else plain
    if "crop" in steps:
        # The 9:16 window follows her: it is not parked at the centre of the frame.
        x_centre = (info.width - width) // 2
        centred = plain[:, :, x_centre : x_centre + width]
        assert (np.abs(cropped - centred).mean(axis=(1, 2, 3)) > 4).mean() > 0.3
    if steps == ("crop",):
        assert np.array_equal(cropped, single.frames)
        return
    diff = np.abs(single.frames.astype(np.int16) - cropped)
    if "swap" in steps:  # the test swapper inverts the face it pastes
        assert diff.mean() > 8, diff.mean(axis=(1, 2, 3))
    if "enhance" in steps:  # the test restorer changes the swapped face's colours again
        swapped = only(tuple(s for s in steps if s != "enhance")).astype(np.int16)
        restored = (np.abs(single.frames - swapped).max(axis=3) > 3).sum(axis=(1, 2))
        assert (restored > 100).mean() >= 0.9, restored
    # A face step pastes into (nearly) every frame: her face is on screen throughout.
    touched = (diff.max(axis=3) > 3).sum(axis=(1, 2))
    assert (touched > 100).mean() >= 0.9, touched


# -- the full chain on the cloud path --------------------------------------------------------
# The built functions, the Batch stand-in, fake-gcs-server and the Firestore emulator
# (tests/test_batch_end_to_end.py); the model store is a gs:// prefix there.
from tests.test_batch_end_to_end import built_function, cloud  # noqa: E402, F401

FULL = ("crop", "swap", "lipsync")


@pytest.fixture
def gcs_model_store(real_store: Path, gcs_emulator: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The store's files in a bucket of their own, as DROPBATCH_MODEL_STORE for the functions
    and (through the Job's environment) the tasks."""
    import uuid

    from core.storage.gcs import GcsStore

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    store = GcsStore(project="acme-video")
    bucket = f"models-{uuid.uuid4().hex[:10]}"
    store.client.create_bucket(bucket)
    for path in sorted(real_store.iterdir()):
        store.upload_file(bucket, f"store/{path.name}", path.resolve())
    uri = f"gs://{bucket}/store/"
    monkeypatch.setenv("DROPBATCH_MODEL_STORE", uri)
    return uri


@pytest.mark.slow
@pytest.mark.parametrize("cloud", [("emulators",)], indirect=True)
def test_the_full_chain_runs_on_the_cloud_path(
    gcs_model_store: str,
    cloud: dict,  # noqa: F811 (the fixture imported above)
    pexels_clip: Path,
    tmp_path: Path,
) -> None:
    from google.cloud import batch_v1

    store, bucket = cloud["store"], cloud["bucket"]
    face = write_face_image(tmp_path / "astronaut.png", astronaut())
    store.upload_file(bucket, "full/talk.mp4", pexels_clip, content_type="video/mp4")
    store.upload_file(bucket, "full/faces/astronaut.png", face, content_type="image/png")
    store.write_bytes(bucket, "full/manifest.yaml", chain_manifest(FULL).encode())
    # Storage itself notifies the function of each upload (the emulators' front): wait for
    # its answers. Posting the event again here raced that delivery, and the duplicate
    # returned while the first was still launching (the record had no Batch job name yet).
    for name in ("full/talk.mp4", "full/faces/astronaut.png", "full/manifest.yaml"):
        generation = store.stat(bucket, name).generation
        assert cloud["notifications"].wait_delivered(bucket, name, generation) == 200
    [record] = open_status(Settings.from_env()).recent(5, manifest="full/manifest.yaml")
    assert record.batch_job, (record.state, record.error, record.errors)
    job = cloud["standin"].wait(record.batch_job, timeout=900)
    final = open_status(Settings.from_env()).get(record.job_id)
    assert final is not None and final.state == JobState.SUCCEEDED, final and final.error
    assert job.status.state == batch_v1.JobStatus.State.SUCCEEDED
    [item] = final.plan.items
    assert len(item.chunks) >= 3
    out = tmp_path / "out.mp4"
    store.download_file(bucket, "full/out/talk.mp4", out)
    streams = probe_streams(out)
    assert (streams["video"]["width"], streams["video"]["height"]) == (202, 360)
    assert int(streams["video"]["nb_read_frames"]) == item.info.frame_count
    fps = item.info.fps_num / item.info.fps_den
    assert abs(float(streams["audio"]["duration"]) - item.info.frame_count / fps) <= 2 / fps + 0.05
    # The tasks fetched every model from the bucket into the VM's cache and verified it.
    stamps = {p.name for p in cloud["standin"].volume_root.rglob("*.verified")}
    assert {
        "yolo11n.onnx.verified",
        "scrfd_500m_bnkps.onnx.verified",
        "w600k_mbf.onnx.verified",
        "test_swapper.onnx.verified",
        "wav2lip_gan_96.onnx.verified",
    } <= stamps
