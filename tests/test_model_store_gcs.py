"""A `gs://bucket/models/` model store read through the Cloud Storage backend, on
fake-gcs-server: the store functions, a task's fetch into its VM cache, and the trigger's model
check with DROPBATCH_MODEL_STORE set to the bucket (the inbox stays local: the store is Cloud
Storage whatever the inbox backend is)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import Settings
from core.status.model import JobState
from core.storage.gcs import GcsStore
from core.storage.local import LocalStore
from processors.models.store import (
    ModelCorrupt,
    ModelMissing,
    fetch_models,
    open_model_store,
    require_models,
)
from tests.test_model_store import FILES, PACK, write_store

LIPSYNC_MODEL = b"not really onnx, and unpinned in the catalog"


@pytest.fixture
def bucket_store(
    gcs_emulator: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[str, GcsStore, str]]:
    """(gs:// URI, client, bucket) of a store holding test_pack (pinned by the store's own
    catalog.yaml) and wav2lip_gan_96 (unpinned), uploaded as `gsutil cp` would."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.setenv("DROPBATCH_MODEL_CACHE", str(tmp_path / "vm-cache"))
    store = GcsStore(project="dropbatch-test")
    bucket = f"models-{uuid.uuid4().hex[:10]}"
    store.client.create_bucket(bucket)
    folder = write_store(tmp_path / "src", FILES, {"test_pack": PACK})
    (folder / "wav2lip_gan_96.onnx").write_bytes(LIPSYNC_MODEL)
    for path in sorted(folder.iterdir()):
        store.upload_file(bucket, f"models/{path.name}", path)
    yield f"gs://{bucket}/models/", store, bucket


def test_a_model_in_the_bucket_is_valid_and_fetched_verified(
    bucket_store: tuple[str, GcsStore, str], tmp_path: Path
) -> None:
    uri, _, _ = bucket_store
    settings = Settings.from_env()
    assert settings.storage == "local"  # the gs:// store still reads Cloud Storage
    require_models("lipsync", {}, uri, settings)
    [fetched] = fetch_models("lipsync", {}, uri, settings).values()
    assert fetched.path.read_bytes() == LIPSYNC_MODEL
    assert fetched.path.is_relative_to(tmp_path / "vm-cache")  # a copy, in DROPBATCH_MODEL_CACHE
    store = open_model_store(uri, settings)
    assert store is not None and store.uri == uri
    pack = store.fetch("test_pack")
    assert {n: p.read_bytes() for n, p in pack.paths.items()} == FILES
    assert [r.state for r in store.check(["test_pack"])] == ["present", "present"]


def test_a_model_missing_from_the_bucket_names_the_model_and_the_store(
    bucket_store: tuple[str, GcsStore, str],
) -> None:
    uri, store, bucket = bucket_store
    with pytest.raises(ModelMissing) as err:
        require_models("swap", {"source": ["face.jpg"]}, uri, Settings.from_env())
    assert "buffalo_l" in str(err.value) and uri in str(err.value)
    assert err.value.store == uri
    store.delete(bucket, "models/b.onnx")
    with pytest.raises(ModelMissing, match=r"test_pack .*b\.onnx"):
        open_model_store(uri, Settings.from_env()).require("test_pack")


def test_a_corrupt_model_in_the_bucket_is_caught_by_its_hash_at_fetch(
    bucket_store: tuple[str, GcsStore, str], tmp_path: Path
) -> None:
    uri, store, bucket = bucket_store
    data = bytearray(FILES["a.onnx"])
    data[100] ^= 0xFF  # same size: the trigger's cheap check passes, only the hash can tell
    store.write_bytes(bucket, "models/a.onnx", bytes(data))
    opened = open_model_store(uri, Settings.from_env())
    assert opened is not None
    opened.require("test_pack")
    with pytest.raises(ModelCorrupt, match=r"test_pack: a\.onnx in the model store gs://.*sha256"):
        opened.fetch("test_pack")
    cached = {p.name for p in (tmp_path / "vm-cache").rglob("*.onnx")}
    assert "a.onnx" not in cached  # the bad copy never lands in the VM cache


def test_the_trigger_checks_models_in_a_gs_store(
    deployment: dict, bucket_store: tuple[str, GcsStore, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_trigger import deliver, put, records
    from triggers import main as trigger_main

    uri, _, _ = bucket_store
    monkeypatch.setenv("DROPBATCH_MODEL_STORE", uri)
    # The manifest's tasks should not run here: only the trigger's verdict matters.
    monkeypatch.setenv("DROPBATCH_TASK_COMMAND", "true")
    trigger_main.intake.cache_clear()
    inbox = LocalStore(deployment["root"])
    put(deployment, "s/clip.mp4", video=5)
    put(deployment, "s/face.jpg", b"jpeg")
    swap = b"version: 1\ninputs: [clip.mp4]\nchain: [{swap: {source: face.jpg}}]\n"
    put(deployment, "s/job.yaml", swap)
    assert deliver(inbox, "inbox", "s/job.yaml") == 200
    [record] = records(deployment)
    assert record.state == JobState.INVALID
    assert record.error is not None and record.error.code == "MODEL_MISSING"
    assert record.error.field == "chain[0].swap.analyser"  # buffalo_l is the missing one
    assert "buffalo_l" in record.error.message and uri in record.error.message
    assert record.error.uri == uri

    # A chain whose model is in the bucket passes the check.
    crop = b"version: 1\ninputs: [clip.mp4]\nchain: [{crop: {detector: yolo}}]\n"
    put(deployment, "y/clip.mp4", video=5)
    put(deployment, "y/job.yaml", crop)
    assert deliver(inbox, "inbox", "y/job.yaml") == 200
    [record] = [r for r in records(deployment) if r.manifest == "y/job.yaml"]
    assert record.state == JobState.INVALID and record.error.code == "MODEL_MISSING"
    assert "yolov8n" in record.error.message and uri in record.error.message
    _, store, bucket = bucket_store
    store.write_bytes(bucket, "models/yolov8n.onnx", os.urandom(64))
    put(deployment, "z/clip.mp4", video=5)
    put(deployment, "z/job.yaml", crop)
    assert deliver(inbox, "inbox", "z/job.yaml") == 200
    [record] = [r for r in records(deployment) if r.manifest == "z/job.yaml"]
    # The trigger accepted the models and launched. The task command is `true`, so the local
    # executor may already have ended the job (no parts to stitch) by the time we read it:
    # what counts is that it was queued, never refused at the trigger.
    assert JobState.QUEUED in [change.state for change in record.history], record.error
    assert record.state != JobState.INVALID, record.error
