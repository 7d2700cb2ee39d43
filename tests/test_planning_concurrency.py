"""The trigger probes a manifest's inputs `probe_concurrency` at a time: the VideoInfo, audio
and errors it plans from are those of one input after another, in input order; one object
version is still probed once; and a many-input manifest on Cloud Storage (fake-gcs-server) is
planned well inside an event-driven function's 540 s (bench/planning.py measures 500)."""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_jobs.probing import InputProber, ProbeCache
from core.status.model import JobState
from core.storage.local import LocalStore
from manifests.loader import load_manifest
from manifests.model import MAX_INPUTS
from manifests.resolve import resolve_inputs
from tests.planning_scale import make_clip, plan_inputs

FUNCTION_LIMIT_SECONDS = 540  # an event-driven Cloud Function's longest run
SCALE_INPUTS = 100  # the test's share of the 500 bench/planning.py plans (2-core CI budget)


class CountingStore(LocalStore):
    """The real local store, counting the media sources it opens (one per probe)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.opened: list[str] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def media_source(self, bucket: str, name: str) -> Iterator[str]:
        with self._lock:
            self.opened.append(name)
        with super().media_source(bucket, name) as source:
            yield source


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=60)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good and bad inputs side by side: clips with and without a sound track, one cut short,
    one that is not a video, a voice-over and a broken voice-over."""
    root = tmp_path_factory.mktemp("root")
    inbox = root / "inbox" / "m"
    inbox.mkdir(parents=True)
    talk = make_clip(inbox / "talk.mp4")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=32x32:rate=10", "-t", "0.5", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(inbox / "mute.mp4"))  # fmt: skip
    ffmpeg("-f", "lavfi", "-i", "sine", "-t", "0.5", str(inbox / "voice.wav"))
    data = talk.read_bytes()
    (inbox / "short.mp4").write_bytes(data[: len(data) * 3 // 10])
    (inbox / "notes.mp4").write_bytes(b"not a video, a text file renamed\n" * 40)
    (inbox / "broken.wav").write_bytes(b"RIFF" + bytes(200))
    return root


MANIFEST = """\
version: 1
inputs:
  - {video: talk.mp4, output_name: o0.mp4}
  - {video: short.mp4, output_name: o1.mp4}
  - {video: mute.mp4, output_name: o2.mp4}
  - {video: talk.mp4, output_name: o3.mp4}
  - {video: notes.mp4, output_name: o4.mp4}
  - {video: mute.mp4, audio: voice.wav, output_name: o5.mp4}
  - {video: talk.mp4, audio: broken.wav, output_name: o6.mp4}
  - {video: talk.mp4, output_name: o7.mp4}
  - {video: short.mp4, output_name: o8.mp4}
  - {video: mute.mp4, output_name: o9.mp4}
  - {video: talk.mp4, output_name: o10.mp4}
  - {video: notes.mp4, output_name: o11.mp4}
chain: [{lipsync: {}}]
"""


def probe_all(root: Path, concurrency: int) -> tuple[object, object, object, object, list]:
    store = CountingStore(root)
    listing = {
        info.name.removeprefix("m/"): (info.generation, info.size)
        for info in store.list("inbox", "m/")
    }
    manifest = load_manifest(MANIFEST.encode())
    resolution = resolve_inputs(manifest, set(listing), manifest.output.prefix, MAX_INPUTS)
    assert not resolution.errors and not resolution.missing
    prober = InputProber(store, ProbeCache(64), "inbox", "m/", concurrency)
    probed, errors = prober.videos(resolution.items, listing)
    opened_for_videos = list(store.opened)
    speech, speech_errors = prober.speech(manifest, probed)
    return probed, errors, speech, speech_errors, opened_for_videos


def test_concurrent_probing_gives_the_sequential_results_and_errors_in_input_order(
    folder: Path,
) -> None:
    sequential = probe_all(folder, 1)
    concurrent = probe_all(folder, 8)
    probed, errors, speech, speech_errors, _ = concurrent
    assert concurrent[:4] == sequential[:4]  # VideoInfo, audio and every JobError field
    assert [item.index for item, _ in probed] == [0, 2, 3, 5, 6, 7, 9, 10]
    assert [(e.code, e.field) for e in errors] == [
        ("INPUT_TRUNCATED", "inputs[1].video"),
        ("INPUT_UNREADABLE", "inputs[4].video"),
        ("INPUT_TRUNCATED", "inputs[8].video"),
        ("INPUT_UNREADABLE", "inputs[11].video"),
    ]
    names = ["short.mp4", "notes.mp4"] * 2
    assert [e.uri for e in errors] == [LocalStore(folder).uri("inbox", f"m/{n}") for n in names]
    assert [(e.code, e.field) for e in speech_errors] == [
        ("AUDIO_MISSING", "inputs[2].video"),
        ("INPUT_UNREADABLE", "inputs[6].audio"),
        ("AUDIO_MISSING", "inputs[9].video"),
    ]
    found = [None if a is None else round(a.duration, 1) for a in speech]
    assert found == [0.5, None, 0.5, 0.5, None, 0.5, None, 0.5]


def test_one_object_version_is_probed_once_when_probes_overlap(folder: Path) -> None:
    *_, opened = probe_all(folder, 8)  # 12 inputs naming 4 videos
    # talk and mute probed once each, however many inputs name them; a failed probe is not
    # remembered (short and notes are tried per input, as one after another would).
    assert sorted(opened) == sorted(
        ["m/talk.mp4", "m/mute.mp4"] + ["m/short.mp4", "m/notes.mp4"] * 2
    )


def test_a_many_input_manifest_on_cloud_storage_is_planned_well_inside_the_limit(
    gcs_emulator: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    clip = make_clip(tmp_path / "clip.mp4")
    planned = plan_inputs(clip, SCALE_INPUTS, 16, tmp_path / "status.sqlite")
    assert JobState.QUEUED in [h.state for h in planned.record.history], planned.record.error
    assert planned.record.plan is not None and len(planned.record.plan.items) == SCALE_INPUTS
    print(f"\n{SCALE_INPUTS} inputs planned on fake-gcs-server in {planned.seconds:.1f} s")
    # Generous: the same rate would plan MAX_INPUTS in the function's limit.
    assert planned.seconds < FUNCTION_LIMIT_SECONDS * SCALE_INPUTS / MAX_INPUTS
