"""LocalStore details beyond the contract (tests/contract/): objects are plain files under the
bucket folder, temporaries never stay behind, and no name reaches outside the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.storage.base import PreconditionFailed
from core.storage.local import LocalStore

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


def test_listing_while_folders_vanish_never_raises(store: LocalStore) -> None:
    """The stitch deletes parts (and so their folders) while `serve` scans the bucket."""
    import threading

    store.write_bytes(BUCKET, "c7/clip.mp4", b"x")
    stop = threading.Event()

    def churn() -> None:
        n = 0
        while not stop.is_set():
            names = [f"_dropbatch/jobs/j{n % 3}/parts/{k:04d}/d/part.mp4" for k in range(4)]
            for name in names:
                store.write_bytes(BUCKET, name, b"p")
            for name in names:
                store.delete(BUCKET, name)
            n += 1

    worker = threading.Thread(target=churn, daemon=True)
    worker.start()
    failures: list[BaseException] = []
    try:
        for i in range(1000):
            try:
                found = store.list(BUCKET, "_dropbatch/" if i % 2 else "")
                store.list(BUCKET, "_dropbatch/jobs/j1/parts/0001/d/", recursive=False)
            except Exception as exc:  # every kind of failure is counted
                failures.append(exc)
                continue
            if i % 2 == 0:
                assert "c7/clip.mp4" in [info.name for info in found]
    finally:
        stop.set()
        worker.join(timeout=30)
    assert failures == [], f"{len(failures)} of 1000 scans raised, first: {failures[0]!r}"
