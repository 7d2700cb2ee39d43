"""Backend pairs for the contract suite: every test here runs once per backend, with the same
assertions. Storage: a local folder and Cloud Storage (fake-gcs-server). Status: SQLite and
Firestore (the npm emulator). Each test gets a fresh bucket / collection."""

from __future__ import annotations

import mimetypes
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import Settings
from core.status.base import StatusStore
from core.storage import open_store
from tests.contract.backends import StatusBackend, StorageBackend


@pytest.fixture(params=["local", "gcs"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageBackend]:
    if request.param == "local":
        settings = Settings(storage="local", local_root=tmp_path / "root")
        store = open_store(settings)
        bucket = "inbox"

        def put_local(name: str, data: bytes) -> None:
            path = settings.local_root / bucket / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        yield StorageBackend("local", store, bucket, put_local)
        return
    host = request.getfixturevalue("gcs_emulator")
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", host)
    from google.cloud import storage as gcs

    client = gcs.Client()
    bucket = f"contract-{uuid.uuid4().hex[:12]}"
    client.create_bucket(bucket)

    def put_gcs(name: str, data: bytes) -> None:
        blob = client.bucket(bucket).blob(name)
        blob.upload_from_string(
            data, content_type=mimetypes.guess_type(name)[0] or "application/octet-stream"
        )

    yield StorageBackend("gcs", open_store(Settings(storage="gcs")), bucket, put_gcs)


@pytest.fixture(params=["sqlite", "firestore"])
def status_backend(request: pytest.FixtureRequest, tmp_path: Path) -> StatusBackend:
    if request.param == "sqlite":
        return StatusBackend(
            "sqlite", Settings(status="sqlite", sqlite_path=tmp_path / "state" / "status.sqlite")
        )
    host = request.getfixturevalue("firestore_emulator")
    request.getfixturevalue("monkeypatch").setenv("FIRESTORE_EMULATOR_HOST", host)
    settings = Settings(
        status="firestore",
        project="dropbatch-test",
        firestore_collection=f"contract-{uuid.uuid4().hex[:12]}",
    )
    return StatusBackend("firestore", settings, {"FIRESTORE_EMULATOR_HOST": host})


@pytest.fixture
def status(status_backend: StatusBackend) -> StatusStore:
    return status_backend.open()
