"""Lipsync manifests through the local flow: trigger → plan (length policy) → chunked tasks
with the test model from a model store folder → stitch with the new audio, once."""

from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from batch_jobs.intake import StorageEvent
from core.config import Settings
from core.status import open_status
from core.status.model import JobRecord, JobState
from core.storage.local import LocalStore
from tests.lipsync_fixtures import (
    beep_wav,
    face_box_at,
    make_face_video,
    make_model_store,
    read_wav,
    speech_wav,
)
from tests.media_fixtures import (
    SAMPLE_RATE,
    beep_onsets,
    decode_audio,
    flash_times,
    make_sync_video,
)

FPS = 25


def run_manifest(
    deployment: dict, monkeypatch: pytest.MonkeyPatch, folder: str, files: dict, manifest: str
) -> JobRecord:
    from tests.local_jobs import wait_local_job
    from triggers.main import intake

    monkeypatch.setenv("DROPBATCH_MODEL_STORE", str(make_model_store(deployment["tmp"] / "models")))
    intake.cache_clear()
    target = deployment["inbox"] / folder
    target.mkdir()
    for name, path in files.items():
        shutil.copyfile(path, target / name)  # a copy: links out of the inbox are refused
    (target / "manifest.yaml").write_text(manifest)
    store = LocalStore(deployment["root"])
    info = store.stat("inbox", f"{folder}/manifest.yaml")
    [job_id] = intake().handle(StorageEvent("inbox", f"{folder}/manifest.yaml", info.generation))
    assert wait_local_job(job_id, timeout=600)
    record = open_status(Settings.from_env()).get(job_id)
    assert record is not None
    assert record.state == JobState.SUCCEEDED, (record.error, record.errors)
    return record


def stream_info(path: Path) -> dict[str, dict]:
    doc = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
    )
    return {s["codec_type"]: s for s in doc["streams"]}


def envelope(samples: np.ndarray, rate: int, step: float = 0.02) -> np.ndarray:
    n = int(len(samples) / (rate * step))
    bins = samples[: n * int(rate * step)].reshape(n, -1)
    return np.sqrt((bins**2).mean(axis=1))


@pytest.mark.slow
def test_lipsync_job_extends_to_the_speech_in_four_chunks(
    deployment: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    speech = speech_wav(tmp_path / "speech.wav", "Hello there, this is a short test of the mouth.")
    samples, rate = read_wav(speech)
    audio_seconds = len(samples) / rate
    video_frames = int(audio_seconds * FPS * 0.6)  # the speech outlasts the video
    video = make_face_video(tmp_path / "talk.mp4", video_frames, fps=FPS)
    expected = round(audio_seconds * FPS)
    chunk = expected / FPS / 4 + 0.01
    record = run_manifest(
        deployment,
        monkeypatch,
        "talk",
        {"talk.mp4": video, "speech.wav": speech},
        f"""\
version: 1
inputs: [talk.mp4]
chain:
  - lipsync: {{audio: speech.wav, length_policy: extend, batch_size: 8}}
output: {{preset: ultrafast, crf: 20}}
compute: {{gpu: none, chunk_seconds: {chunk:.3f}, max_parallel_tasks: 2}}
""",
    )
    item = record.plan.items[0]
    assert item.frames == expected and len(item.chunks) == 4
    assert item.audio == "talk/speech.wav"
    out = deployment["inbox"] / "talk/out/talk.mp4"
    streams = stream_info(out)
    assert int(streams["video"]["nb_read_frames"]) == expected > video_frames
    assert abs(float(streams["audio"]["duration"]) - expected / FPS) <= 1 / FPS + 0.03
    # The soundtrack is the speech, in step with the frames (lag ≤ 1 frame).
    heard, _ = decode_audio(out)
    said, _ = decode_audio(speech)
    a, b = envelope(heard, SAMPLE_RATE), envelope(said, SAMPLE_RATE)
    n = min(len(a), len(b))
    lags = range(-3, 4)  # 20 ms steps: ±60 ms
    scores = [np.corrcoef(np.roll(a[:n], k), b[:n])[0, 1] for k in lags]
    assert max(scores) > 0.95 and abs(lags[int(np.argmax(scores))]) * 0.02 <= 1 / FPS
    # Past the video's end its last frame is held while the mouth keeps moving.
    frames = decode_rgb(out, 320, 240)
    held = frames[video_frames:]
    assert np.abs(held[:, :60].astype(int) - held[:1, :60].astype(int)).mean() < 2
    x0, y0, x1, y1 = (round(v) for v in face_box_at(video_frames - 1))
    mouths = held[:, (y0 + y1) // 2 : y1, x0:x1].astype(float).mean(axis=(1, 2, 3))
    assert mouths.max() - mouths.min() > 3


def decode_rgb(path: Path, width: int, height: int) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def dominant_hz(samples: np.ndarray, at: float) -> float:
    piece = samples[round(at * SAMPLE_RATE) + 200 : round(at * SAMPLE_RATE) + 2600]
    spectrum = np.abs(np.fft.rfft(piece * np.hanning(len(piece))))
    return float(np.fft.rfftfreq(len(piece), 1 / SAMPLE_RATE)[int(np.argmax(spectrum))])


@pytest.mark.slow
def test_lipsync_output_carries_the_new_audio_in_sync(
    deployment: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fps = Fraction(30)
    flashes = (9, 33, 61)
    # Own soundtrack: 1 kHz beeps. New audio: 600 Hz beeps at the flash frames.
    plain = make_sync_video(tmp_path / "flash.mp4", fps=fps, flash_frames=flashes)
    late = make_sync_video(tmp_path / "late.mp4", fps=fps, flash_frames=flashes, video_delay=0.2)
    voice = beep_wav(tmp_path / "voice.wav", 3.0, [k / 30 for k in flashes], hz=600)
    record = run_manifest(
        deployment,
        monkeypatch,
        "sync",
        {"flash.mp4": plain.path, "late.mp4": late.path, "voice.wav": voice},
        """\
version: 1
inputs:
  - {video: flash.mp4, audio: voice.wav}
  - late.mp4
chain: [lipsync]
output: {preset: ultrafast}
compute: {gpu: none, chunk_seconds: 1, max_parallel_tasks: 2}
""",
    )
    assert [i.audio for i in record.plan.items] == ["sync/voice.wav", None]
    for name, hz in (("flash.mp4", 600), ("late.mp4", 1000)):
        out = deployment["inbox"] / "sync/out" / name
        seen, heard = flash_times(out), beep_onsets(out)
        assert len(seen) == len(heard) == 3, (name, seen, heard)
        for v, a in zip(seen, heard, strict=True):
            assert abs(v - a) <= 1 / 30, (name, seen, heard)
        samples, start = decode_audio(out)
        assert abs(dominant_hz(samples, heard[0] - start) - hz) < 30, name


@pytest.mark.parametrize(
    ("audio_line", "code", "field"),
    [
        ("", "AUDIO_MISSING", "inputs[0].video"),  # a silent video and no lipsync audio
        ("audio: notes.wav", "INPUT_UNREADABLE", "chain[0].lipsync.audio"),
    ],
)
def test_lipsync_without_usable_speech_is_invalid_with_the_field(
    deployment: dict,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    audio_line: str,
    code: str,
    field: str,
) -> None:
    from triggers.main import intake

    monkeypatch.setenv("DROPBATCH_MODEL_STORE", str(make_model_store(tmp_path / "models")))
    intake.cache_clear()
    folder = deployment["inbox"] / "mute"
    folder.mkdir()
    make_face_video(folder / "talk.mp4", 10, fps=FPS)  # no audio track
    (folder / "notes.wav").write_text("these are not sounds")
    (folder / "manifest.yaml").write_text(
        f"version: 1\ninputs: [talk.mp4]\nchain: [{{lipsync: {{{audio_line}}}}}]\n"
    )
    store = LocalStore(deployment["root"])
    info = store.stat("inbox", "mute/manifest.yaml")
    [job_id] = intake().handle(StorageEvent("inbox", "mute/manifest.yaml", info.generation))
    record = open_status(Settings.from_env()).get(job_id)
    assert record is not None and record.state == JobState.INVALID
    assert record.error is not None
    assert (record.error.code, record.error.field) == (code, field)
    mirror = json.loads((folder / "manifest.status.json").read_text())
    assert mirror["error"]["field"] == field


def test_hold_last_frame_fills_past_the_video_end() -> None:
    from batch_jobs.task import hold_last_frame
    from processors.media.frames import FrameBatch

    frames = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    decoded = [FrameBatch(frames[i : i + 4], np.arange(i, min(i + 4, 10))) for i in (0, 4, 8)]
    out = list(hold_last_frame(decoded, 7, 15))
    indices = np.concatenate([b.indices for b in out]).tolist()
    values = np.concatenate([b.frames[:, 0, 0, 0] for b in out]).tolist()
    assert indices == list(range(7, 15))
    assert values == [7, 8, 9, 9, 9, 9, 9, 9]
    # A chunk wholly past the end decodes only the last frame and holds it.
    only_last = [FrameBatch(frames[9:10], np.array([9]))]
    out = list(hold_last_frame(only_last, 12, 15))
    assert np.concatenate([b.indices for b in out]).tolist() == [12, 13, 14]
    assert all((b.frames == 9).all() for b in out)
