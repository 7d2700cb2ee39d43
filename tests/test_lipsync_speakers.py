"""Lipsync with several speakers on real footage: two real people side by side (the Pexels clip
and single_face.mp4), identified by the real analyser pack (SCRFD-500m + ArcFace MBF) against
reference images cut from other moments of the same clips, each synced by the Wav2Lip
test-signature model to their own espeak-ng speech.

Each face follows only its own speaker's track; a face matching no speaker is untouched; a
face's speaker holds through a frame whose embedding wavers; chunked equals one task; through
the real intake, missing speaker tracks wait and then launch, the output carries the mix, and a
reference with two faces or none is INVALID naming its field.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.data import astronaut

from batch_jobs.intake import StorageEvent
from batch_jobs.plan import build_plan
from batch_jobs.probing import InputProber, ProbeCache
from core.config import Settings
from core.domain import PlannedItem
from core.status import open_status
from core.status.model import JobRecord, JobState
from core.storage.local import LocalStore
from manifests.loader import ManifestInvalid, load_manifest
from manifests.resolve import ResolvedItem
from processors.chain import concat_batches
from processors.faces import FaceAnalyser
from processors.lipsync.speakers import SpeakerAssignment
from processors.media.frames import FrameBatch
from processors.media.probe import probe
from processors.swap.tracking import distance
from tests.lipsync_fixtures import read_wav
from tests.media_fixtures import SAMPLE_RATE, decode_all, decode_audio, run_in_chunks
from tests.real_chain import (
    ANALYSER,
    SWAPPER,
    build_real_store,
    run_task,
    task_context,
    write_face_image,
)
from tests.speaker_fixtures import (
    GUEST_DELAY,
    HALF,
    reference_images,
    speech_tracks,
    two_face_clip,
)

FRAMES = 36  # 1.5 s at 23.976 fps
LEFT, RIGHT = np.s_[:, : HALF[0]], np.s_[:, HALF[0] :]  # the host's half, the guest's half


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory, real_asset) -> dict:
    folder = tmp_path_factory.mktemp("speakers")
    clip = two_face_clip(folder / "two.mp4", real_asset, FRAMES)
    files = {"two.mp4": clip, **reference_images(folder, real_asset), **speech_tracks(folder)}
    write_face_image(folder / "faces" / "astronaut.png", astronaut())
    store = build_real_store(tmp_path_factory.mktemp("speaker-models"), real_asset)
    info = probe(str(clip))
    return {"folder": folder, "files": files, "store": store, "info": info}


def manifest_text(
    speakers: list[tuple[str, str]], extra: str = "", chunk: float = 1.0, before: str = ""
) -> str:
    listed = ", ".join(f"{{reference: {r}, audio: {a}}}" for r, a in speakers)
    return (
        f"version: 1\ninputs: [two.mp4]\nchain:\n{before}"
        f"  - lipsync: {{analyser: {ANALYSER}, batch_size: 8, det_size: 320, "
        f"speakers: [{listed}]{extra}}}\n"
        "output: {preset: ultrafast, crf: 18}\n"
        f"compute: {{gpu: none, chunk_seconds: {chunk}, max_parallel_tasks: 2, max_retries: 0}}\n"
    )


def planned(
    material: dict, speakers: list[tuple[str, str]], extra: str = "", before: str = ""
) -> PlannedItem:
    """The item as the trigger plans it: the real prober on the material's folder."""
    return plan_text(material, manifest_text(speakers, extra, before=before))


def plan_text(material: dict, text: str) -> PlannedItem:
    """The manifest `text` over the material's two.mp4, planned as the trigger plans it (the
    real prober on the material's folder)."""
    manifest = load_manifest(text.encode())
    folder: Path = material["folder"]
    prober = InputProber(LocalStore(folder.parent), ProbeCache(8), folder.name, "", 1)
    item = ResolvedItem(0, "two.mp4", None, None)
    speech, errors = prober.speech(manifest, [(item, material["info"])])
    assert not errors, errors
    return build_plan(manifest, "", [(item, material["info"])], speech).items[0]


def run_whole(material: dict, item: PlannedItem) -> FrameBatch:
    ctx = task_context(item, material["folder"], material["folder"], material["store"])
    total = item.frames or item.info.frame_count
    return run_task(item, material["files"]["two.mp4"], ctx, 0, None, (0, total))


BOTH = [("host.png", "host.wav"), ("guest.png", "guest.wav")]
PAD = ", length_policy: pad"  # every run keeps the clip's frames, whatever its tracks' lengths


@pytest.fixture(scope="module")
def both(material: dict) -> tuple[PlannedItem, FrameBatch]:
    item = planned(material, BOTH, PAD)
    return item, run_whole(material, item)


def changed(after: np.ndarray, before: np.ndarray) -> np.ndarray:
    """Per frame: the mean absolute change."""
    return np.abs(after.astype(int) - before.astype(int)).mean(axis=(1, 2, 3))


def test_each_face_moves_only_with_its_own_speakers_speech(material: dict, both) -> None:
    item, out = both
    source = decode_all(material["files"]["two.mp4"], item.info)
    assert out.indices.tolist() == list(range(FRAMES)) and item.frames == FRAMES
    host_only = run_whole(material, planned(material, [BOTH[0]], PAD))
    a, d = out.frames, host_only.frames
    # The host's face is the same whether or not there is a guest speaking beside her.
    assert np.array_equal(a[(slice(None), *LEFT)], d[(slice(None), *LEFT)])
    # A face that matches no speaker is left byte for byte.
    assert np.array_equal(d[(slice(None), *RIGHT)], source[(slice(None), *RIGHT)])
    # The host speaks in the first half second: her mouth moves then, and rests after.
    host_moves = changed(a[(slice(None), *LEFT)], source[(slice(None), *LEFT)])
    assert host_moves[:12].mean() > 2 * host_moves[-6:].mean()
    # The guest is quiet for GUEST_DELAY, then speaks: his mouth moves only then.
    guest_moves = changed(a[(slice(None), *RIGHT)], source[(slice(None), *RIGHT)])
    speaking = slice(round((GUEST_DELAY + 0.2) * 24), FRAMES)
    assert guest_moves[speaking].mean() > 2 * guest_moves[:10].mean()


# Swap puts the astronaut on the host only; its analysis embeds every face, before the swap.
SWAP_HOST = (
    f"  - swap: {{analyser: {ANALYSER}, model: {SWAPPER}, source: faces/astronaut.png, "
    "target: reference, reference: host.png, det_size: 320}\n"
)


def test_after_a_swap_the_host_is_still_known_by_her_face_before_it(material: dict) -> None:
    item = planned(material, BOTH, PAD, before=SWAP_HOST)
    out = run_whole(material, item).frames
    swapped = run_whole(material, item.model_copy(update={"chain": item.chain[:1]})).frames
    source = decode_all(material["files"]["two.mp4"], item.info)
    # The swap changed the host's face (the test swapper inverts it) and left the guest's
    # (its paste box, larger than her face, may reach a few pixels past the middle).
    guest_side = np.s_[:, :, HALF[0] + 20 :]
    assert changed(swapped[(slice(None), *LEFT)], source[(slice(None), *LEFT)]).min() > 1
    assert np.array_equal(swapped[guest_side], source[guest_side])
    # Her swapped face no longer looks like her reference, yet lipsync syncs it to her track:
    # it matched her by swap's embedding of her face before the swap (same pack), on swap's
    # faces. The guest's face follows his track.
    host = changed(out[(slice(None), *LEFT)], swapped[(slice(None), *LEFT)])
    guest = changed(out[guest_side], swapped[guest_side])
    assert host[:12].mean() > 0.5 and host[:12].mean() > 2 * host[-6:].mean()
    speaking = slice(round((GUEST_DELAY + 0.2) * 24), FRAMES)
    assert guest[speaking].mean() > 2 * guest[:10].mean()


def test_chunked_run_equals_one_task(material: dict, both) -> None:
    item, whole = both
    assert len(item.chunks) == 2
    ctx = task_context(item, material["folder"], material["folder"], material["store"])
    pieces = run_in_chunks(
        item, lambda *task: run_task(item, material["files"]["two.mp4"], ctx, *task)
    )
    chunked = concat_batches([piece for _, piece in pieces])
    assert chunked.indices.tolist() == whole.indices.tolist()
    assert np.array_equal(chunked.frames, whole.frames)


def test_a_faces_speaker_holds_through_a_wavering_frame(material: dict, real_asset) -> None:
    analyser = FaceAnalyser(
        real_asset("scrfd_500m_bnkps.onnx"),
        real_asset("w600k_mbf.onnx"),
        providers=["CPUExecutionProvider"],
    )
    frames = decode_all(material["files"]["two.mp4"], material["info"])[:12]
    refs = [
        cv2.cvtColor(cv2.imread(str(material["files"][n])), cv2.COLOR_BGR2RGB)
        for n in ("host.png", "guest.png")
    ]
    identities = [analyser.embed(r, analyser.detect(r)[0]) for r in refs]
    assignment = SpeakerAssignment(identities, threshold=0.6)
    for index, frame in enumerate(frames):
        faces = [f.with_(embedding=analyser.embed(frame, f)) for f in analyser.detect(frame)]
        if index == 6:  # one frame where each face's embedding looks like the other person
            faces = [
                f.with_(embedding=g.embedding) for f, g in zip(faces, faces[::-1], strict=True)
            ]
            nearest = [
                int(np.argmin([distance(f.embedding, r) for r in identities])) for f in faces
            ]
            hosts = [f for f, who in zip(faces, nearest, strict=True) if who == 0]
            assert hosts and hosts[0].box[0] >= HALF[0], "the frame alone would swap them"
        assignment.add(index, faces)
    for index in range(12):
        host, guest = assignment.speakers_at(index)
        assert host is not None and host.box[2] <= HALF[0], index
        assert guest is not None and guest.box[0] >= HALF[0], index


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        (
            "chain: [{lipsync: {speakers: [{reference: a.png, audio: a.wav}, "
            "{reference: a.png, audio: b.wav}]}}]",
            "chain[0].lipsync",
            "each speaker needs their own `reference` image",
        ),
        (
            "chain: [{lipsync: {detect_every: 3, speakers: [{reference: a.png, audio: a.wav}]}}]",
            "chain[0].lipsync",
            "with `speakers` every frame is matched",
        ),
        (
            "chain: [{lipsync: {speakers: [{reference: a.png}]}}]",
            "chain[0].lipsync.speakers[0].audio",
            "required",
        ),
    ],
    ids=["same-reference", "detect-every", "no-audio"],
)
def test_speaker_options_that_cannot_work_are_refused_with_the_field(
    text: str, field: str, message: str
) -> None:
    with pytest.raises(ManifestInvalid) as caught:
        load_manifest(f"version: 1\ninputs: [two.mp4]\n{text}\n".encode())
    errors = {(e.field, e.message) for e in caught.value.errors}
    assert any(f == field and message in m for f, m in errors), errors


def test_a_given_audio_is_the_soundtrack_and_the_longest_track_sets_the_length(
    material: dict,
) -> None:
    mixed = planned(material, BOTH, ", length_policy: extend")
    given = planned(material, BOTH, ", length_policy: extend, audio: host.wav")
    samples, rate = read_wav(material["files"]["guest.wav"])
    longest = round(len(samples) / rate * 24000 / 1001)
    assert mixed.frames == given.frames == longest > FRAMES
    assert (mixed.audio, mixed.mix) == (None, ["host.wav", "guest.wav"])
    assert (given.audio, given.mix) == ("host.wav", [])


# -- through the real intake ----------------------------------------------------------------
def deliver(name: str, root: Path) -> list[str]:
    from triggers.main import intake

    info = LocalStore(root).stat("inbox", name)
    return intake().handle(StorageEvent("inbox", name, info.generation))


def job(job_id: str) -> JobRecord:
    record = open_status(Settings.from_env()).get(job_id)
    assert record is not None
    return record


def envelope(samples: np.ndarray, rate: int, start: float, end: float) -> float:
    piece = samples[round(start * rate) : round(end * rate)]
    return float(np.sqrt(np.mean(piece**2)))


@pytest.mark.slow
def test_missing_speaker_tracks_wait_then_the_job_runs_with_their_mix(
    deployment: dict, monkeypatch: pytest.MonkeyPatch, material: dict
) -> None:
    from tests.local_jobs import wait_local_job
    from triggers.main import intake

    monkeypatch.setenv("DROPBATCH_MODEL_STORE", str(material["store"]))
    intake.cache_clear()
    folder = deployment["inbox"] / "talk"
    folder.mkdir()
    for name in ("two.mp4", "host.png", "guest.png"):
        shutil.copyfile(material["files"][name], folder / name)
    (folder / "manifest.yaml").write_text(manifest_text(BOTH))
    [job_id] = deliver("talk/manifest.yaml", deployment["root"])
    record = job(job_id)
    assert record.state == JobState.WAITING_FOR_INPUTS
    assert [(w.field, w.uri) for w in record.waiting_for] == [
        (f"chain[0].lipsync.speakers[{j}].audio", str(folder / n))
        for j, n in enumerate(("host.wav", "guest.wav"))
    ]
    mirror = json.loads((folder / "manifest.status.json").read_text())
    assert mirror["state"] == "WAITING_FOR_INPUTS"
    for name in ("host.wav", "guest.wav"):
        shutil.copyfile(material["files"][name], folder / name)
        deliver(f"talk/{name}", deployment["root"])
        if name == "host.wav":  # one of two: still waiting, now only for the other
            waiting = [w.field for w in job(job_id).waiting_for]
            assert waiting == ["chain[0].lipsync.speakers[1].audio"]
    assert wait_local_job(job_id, timeout=600)
    record = job(job_id)
    assert record.state == JobState.SUCCEEDED, (record.error, record.errors)
    [item] = record.plan.items
    assert item.mix == ["talk/host.wav", "talk/guest.wav"] and item.audio is None
    assert item.frames == FRAMES and len(item.chunks) == 2  # trim: the clip is the shorter
    # The output carries both speakers: the host alone at first, the guest alone later.
    heard, _ = decode_audio(folder / "out" / "two.mp4")
    for name, (start, end) in (("host.wav", (0.05, 0.5)), ("guest.wav", (1.0, 1.4))):
        said, rate = read_wav(material["files"][name])
        expected = envelope(said, rate, start, end)
        assert expected > 0.03
        assert 0.5 < envelope(heard, SAMPLE_RATE, start, end) / expected < 2, name


@pytest.mark.parametrize("bad", ["two-faces", "no-face", "too-many-pixels"])
def test_a_reference_with_two_faces_or_none_is_invalid_naming_the_field(
    deployment: dict, monkeypatch: pytest.MonkeyPatch, material: dict, real_asset, bad: str
) -> None:
    from triggers.main import intake

    monkeypatch.setenv("DROPBATCH_MODEL_STORE", str(material["store"]))
    intake.cache_clear()
    folder = deployment["inbox"] / "bad"
    folder.mkdir()
    for name in ("two.mp4", "host.png", "host.wav", "guest.wav"):
        shutil.copyfile(material["files"][name], folder / name)
    if bad == "two-faces":
        shutil.copyfile(real_asset("multi_face.jpg"), folder / "guest.jpg")
    elif bad == "too-many-pixels":  # 48 million pixels: refused from its header, not decoded
        from tests.huge_images import write_constant_png

        write_constant_png(folder / "guest.jpg", 8000, 6000)
    else:  # the door behind the guest: a real photo with no face in it
        frame = cv2.imread(str(material["files"]["guest.png"]))
        cv2.imwrite(str(folder / "guest.jpg"), frame[:120, 480:])
    text = manifest_text([BOTH[0], ("guest.jpg", "guest.wav")])
    (folder / "manifest.yaml").write_text(text)
    [job_id] = deliver("bad/manifest.yaml", deployment["root"])
    record = job(job_id)
    field = "chain[0].lipsync.speakers[1].reference"
    assert record.state == JobState.INVALID
    assert record.error is not None
    assert (record.error.code, record.error.field) == ("FACE_IMAGE", field)
    assert record.error.uri == str(folder / "guest.jpg")
    expected = {"two-faces": "faces in guest.jpg", "no-face": "no face"}
    assert expected.get(bad, "8000×6000 pixels") in record.error.message
    mirror = json.loads((folder / "manifest.status.json").read_text())
    assert mirror["state"] == "INVALID" and mirror["error"]["field"] == field


def test_models_check_lists_the_analyser_speakers_need(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from dropbatch.cli import main
    from tests.lipsync_fixtures import make_model_store

    models = make_model_store(tmp_path / "models")  # Wav2Lip only: no analyser pack
    manifest = tmp_path / "job.yaml"
    one = "version: 1\ninputs: [v.mp4]\nchain: [{lipsync: {%s}}]\n"
    monkeypatch.setenv("DROPBATCH_MODEL_CACHE", str(tmp_path / "cache"))

    def check(options: str) -> tuple[int, dict]:
        manifest.write_text(one % options)
        code = main(
            ["models", "check", "--store", str(models), "--manifest", str(manifest), "--json"]
        )
        files = json.loads(capsys.readouterr().out)["files"]
        return code, {(f["model"], f["file"]): f["state"] for f in files}

    code, states = check(f"analyser: {ANALYSER}")  # one speaker: no analyser needed
    assert code == 0 and {m for m, _ in states} == {"wav2lip_gan_96"}
    code, states = check(f"analyser: {ANALYSER}, speakers: [{{reference: a.png, audio: a.wav}}]")
    assert states[(ANALYSER, "scrfd_500m_bnkps.onnx")] == "missing"
    assert states[(ANALYSER, "w600k_mbf.onnx")] == "missing"
    assert code != 0


def test_a_missing_analyser_pack_is_invalid_naming_the_option(
    deployment: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.lipsync_fixtures import make_model_store
    from triggers.main import intake

    store = make_model_store(deployment["tmp"] / "models")  # Wav2Lip only: no analyser pack
    monkeypatch.setenv("DROPBATCH_MODEL_STORE", str(store))
    intake.cache_clear()
    folder = deployment["inbox"] / "nopack"
    folder.mkdir()
    (folder / "manifest.yaml").write_text(manifest_text(BOTH))
    [job_id] = deliver("nopack/manifest.yaml", deployment["root"])
    record = job(job_id)
    assert record.state == JobState.INVALID and record.error is not None
    assert (record.error.code, record.error.field) == ("MODEL_MISSING", "chain[0].lipsync.analyser")
    assert ANALYSER in record.error.message
