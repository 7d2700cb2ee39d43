"""LocalStore details beyond the contract (tests/contract/): objects are plain files under the
bucket folder, temporaries never stay behind, and no name reaches outside the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from dropbatch.storage.base import PreconditionFailed
from dropbatch.storage.local import LocalStore

BUCKET = "inbox"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "root")


def test_object_is_a_plain_file_under_the_bucket_folder(store: LocalStore) -> None:
    store.write_bytes(BUCKET, "a/b.txt", b"hello")
    assert (store.root / BUCKET / "a" / "b.txt").read_bytes() == b"hello"
    assert store.local_path(BUCKET, "a/b.txt") == store.root / BUCKET / "a" / "b.txt"


def test_failed_precondition_leaves_no_temporary_files(store: LocalStore) -> None:
    store.write_bytes(BUCKET, "f", b"1", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        store.write_bytes(BUCKET, "f", b"2", if_generation_match=0)
    assert sorted(p.name for p in (store.root / BUCKET).iterdir()) == ["f"]


def test_deleting_the_last_object_of_a_folder_removes_the_folder(store: LocalStore) -> None:
    store.write_bytes(BUCKET, "c7/parts/p1", b"x")
    store.write_bytes(BUCKET, "c7/keep", b"x")
    store.delete(BUCKET, "c7/parts/p1")
    assert not (store.root / BUCKET / "c7" / "parts").exists()
    assert (store.root / BUCKET / "c7" / "keep").is_file()


@pytest.mark.parametrize("name", ["../escape.txt", "a/../../escape.txt", "/etc/passwd"])
def test_names_that_could_escape_write_nothing_outside_the_root(
    store: LocalStore, tmp_path: Path, name: str
) -> None:
    with pytest.raises(ValueError):
        store.write_bytes(BUCKET, name, b"x")
    assert not (tmp_path / "escape.txt").exists()
    assert not (store.root / "escape.txt").exists()
