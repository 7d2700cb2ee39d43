"""The `dropbatch` command against the cloud stand-ins: `submit` to gs:// (manifest last) or a
local inbox; `status` / `jobs` reading Firestore; settings from a config file, env winning."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from core.status.firestore import FirestoreStatusStore
from core.status.model import JobRecord, JobState
from core.storage.gcs import GcsStore
from tests.test_cli import GOOD, dropbatch


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 1000)
    (tmp_path / "voice.wav").write_bytes(b"RIFF" + b"\x00" * 100)
    (tmp_path / "job.yaml").write_text(GOOD)
    return [tmp_path / "job.yaml", tmp_path / "clip.mp4", tmp_path / "voice.wav"]


def test_submit_uploads_inputs_first_and_the_manifest_last(
    gcs_emulator: str, tmp_path: Path, files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    store = GcsStore()
    bucket = f"submit-{uuid.uuid4().hex[:10]}"
    store.client.create_bucket(bucket)
    proc = dropbatch(
        "submit", *map(str, files), f"gs://{bucket}/campaign-9",
        cwd=tmp_path, env={"STORAGE_EMULATOR_HOST": gcs_emulator},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    uploaded = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("upload")]
    assert uploaded[-1] == f"gs://{bucket}/campaign-9/job.yaml"
    assert sorted(uploaded) == sorted(f"gs://{bucket}/campaign-9/{f.name}" for f in files)
    objects = {i.name: i for i in store.list(bucket)}
    assert sorted(objects) == ["campaign-9/clip.mp4", "campaign-9/job.yaml", "campaign-9/voice.wav"]
    manifest = objects["campaign-9/job.yaml"]
    assert all(manifest.generation > i.generation for i in objects.values() if i is not manifest)
    assert all(i.metadata == {} for i in objects.values())  # a user's upload, not ours
    assert objects["campaign-9/clip.mp4"].content_type == "video/mp4"
    assert f"dropbatch status gs://{bucket}/campaign-9/job.yaml" in proc.stdout


def test_submit_refuses_an_invalid_manifest_before_uploading_anything(
    tmp_path: Path, files: list[Path]
) -> None:
    files[0].write_text(GOOD + "colour: red\n")
    inbox = tmp_path / "inbox" / "c1"
    proc = dropbatch("submit", *map(str, files), str(inbox), cwd=tmp_path)
    assert proc.returncode == 2
    assert "colour" in proc.stderr
    assert not inbox.exists() or list(inbox.iterdir()) == []


def test_submit_to_a_local_inbox_folder(tmp_path: Path, files: list[Path]) -> None:
    inbox = tmp_path / "inbox" / "c1"
    proc = dropbatch("submit", *map(str, files), str(inbox), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in inbox.iterdir()) == ["clip.mp4", "job.yaml", "voice.wav"]
    assert (inbox / "job.yaml").read_text() == GOOD
    assert proc.stdout.splitlines()[2].endswith("job.yaml")


def _record(job_id: str, bucket: str, state: JobState) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        bucket=bucket,
        manifest="c7/job.yaml",
        manifest_generation=1,
        manifest_uri=f"gs://{bucket}/c7/job.yaml",
        state=state,
        chunks_total=4,
    )


def test_status_and_jobs_read_firestore_named_in_a_config_file(
    firestore_emulator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator)
    collection = f"cli-{uuid.uuid4().hex[:10]}"
    from batch_jobs.claims import finish_claim

    store = FirestoreStatusStore(collection, project="cfg-project")
    store.create(_record("job-cli-1", "acme-inbox", JobState.RUNNING))
    for chunk in (0, 1):  # two of its four chunks done: their claims say so
        finish_claim(store, "job-cli-1", 0, chunk)
    config = tmp_path / "dropbatch.toml"
    config.write_text(
        f'status = "firestore"\nproject = "cfg-project"\nfirestore_collection = "{collection}"\n'
    )
    env = {"FIRESTORE_EMULATOR_HOST": firestore_emulator}

    status = dropbatch("status", "gs://acme-inbox/c7/job.yaml", "--json", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    summary = json.loads(status.stdout)
    assert (summary["job_id"], summary["state"]) == ("job-cli-1", "RUNNING")
    assert summary["chunks"] == {"done": 2, "total": 4}

    jobs = dropbatch("jobs", cwd=tmp_path, env=env)
    assert jobs.returncode == 0, jobs.stderr
    assert "job-cli-1" in jobs.stdout and "RUNNING" in jobs.stdout and " 2/4 " in jobs.stdout

    # The environment wins over the file: another collection holds no such job.
    elsewhere = {**env, "DROPBATCH_FIRESTORE_COLLECTION": f"{collection}-other"}
    missing = dropbatch("status", "gs://acme-inbox/c7/job.yaml", cwd=tmp_path, env=elsewhere)
    assert missing.returncode == 1 and "no job found" in missing.stderr


def test_a_config_file_with_an_unknown_setting_is_refused_by_name(tmp_path: Path) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text('status = "sqlite"\nstatuss = "firestore"\n')
    proc = dropbatch("jobs", cwd=tmp_path, env={"DROPBATCH_CONFIG": str(config)})
    assert proc.returncode == 2
    assert "statuss" in proc.stderr and str(config) in proc.stderr
