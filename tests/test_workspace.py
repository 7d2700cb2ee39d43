"""Where internal objects go (batch_jobs/workspace.py): never where the trigger would act on
them. With a work bucket, nothing internal is in the inbox at all; in a one-bucket setup, every
internal name is one the router skips."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_jobs.intake import is_manifest, is_own_write
from batch_jobs.workspace import work_area
from core.config import Settings
from core.storage.local import LocalStore


def internal_names(settings: Settings, inbox: str) -> list[str]:
    work = work_area(settings, inbox)
    return [
        work.part("db-job-1", 0, 3),
        work.preview_tile("db-job-1", 0, "0-in"),
        work.claim("c/out/clip.mp4"),
        # A claim of an output named like a manifest is still a claim, not a manifest.
        work.claim("c/out/job.yaml"),
    ]


@pytest.mark.parametrize(
    "settings",
    [Settings(storage="local"), Settings(storage="gcs", work_bucket="acme-work")],
    ids=["local-default", "gcs-work-bucket"],
)
def test_with_a_work_bucket_nothing_internal_lands_in_the_inbox(settings: Settings) -> None:
    work = work_area(settings, "inbox")
    assert work.bucket != "inbox"
    # One work bucket serves several inboxes: their names never meet.
    other = work_area(settings, "inbox-2")
    assert set(internal_names(settings, "inbox")).isdisjoint(internal_names(settings, "inbox-2"))
    assert other.bucket == work.bucket


@pytest.mark.parametrize("work_bucket", ["", "inbox"], ids=["unset", "same-as-inbox"])
def test_in_a_one_bucket_setup_every_internal_name_is_skipped_by_the_router(
    work_bucket: str,
) -> None:
    settings = Settings(storage="gcs", work_bucket=work_bucket)
    assert work_area(settings, "inbox").bucket == "inbox"
    for name in internal_names(settings, "inbox"):
        assert is_own_write(name, {}), name  # even with its metadata lost


def test_the_local_work_bucket_is_a_folder_beside_the_status_file(tmp_path: Path) -> None:
    settings = Settings(storage="local", local_root=tmp_path)
    work = work_area(settings, "inbox")
    store = LocalStore(tmp_path)
    name = work.part("db-job-1", 0, 0)
    store.write_bytes(work.bucket, name, b"part", metadata={"dropbatch-role": "part"})
    assert store.stat(work.bucket, name).metadata == {"dropbatch-role": "part"}
    assert (tmp_path / ".dropbatch" / "work" / "inbox" / "jobs").is_dir()
    assert store.list("inbox") == []
    assert not is_manifest(name)
