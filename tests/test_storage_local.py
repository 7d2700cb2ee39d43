"""LocalStore: a folder that must behave like a Cloud Storage bucket, preconditions included."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

from dropbatch.storage.base import NotFound, PreconditionFailed
from dropbatch.storage.local import LocalStore

BUCKET = "inbox"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "root")


def put_by_hand(store: LocalStore, name: str, data: bytes) -> Path:
    """What a user's `cp` does: a plain file write, no store involved."""
    path = store.root / BUCKET / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- write, read, stat -------------------------------------------------------------------------


def test_write_then_read_and_stat(store: LocalStore) -> None:
    info = store.write_bytes(BUCKET, "campaign-7/manifest.yaml", b"version: 1\n")
    assert store.read_bytes(BUCKET, "campaign-7/manifest.yaml") == b"version: 1\n"
    stat = store.stat(BUCKET, "campaign-7/manifest.yaml")
    assert stat == info
    assert (stat.bucket, stat.name, stat.size) == (BUCKET, "campaign-7/manifest.yaml", 11)
    assert stat.generation > 0
    assert abs(stat.updated - time.time()) < 60


def test_object_is_a_plain_file_under_the_bucket_folder(store: LocalStore) -> None:
    store.write_bytes(BUCKET, "a/b.txt", b"hello")
    assert (store.root / BUCKET / "a" / "b.txt").read_bytes() == b"hello"
    assert store.local_path(BUCKET, "a/b.txt") == store.root / BUCKET / "a" / "b.txt"


def test_file_copied_in_by_hand_is_an_object(store: LocalStore) -> None:
    put_by_hand(store, "talk.mp4", b"\x00" * 100)
    info = store.stat(BUCKET, "talk.mp4")
    assert info.size == 100
    assert info.generation > 0
    assert info.content_type == "video/mp4"
    assert info.metadata == {}


def test_ranged_read_returns_at_most_limit_bytes(store: LocalStore) -> None:
    data = bytes(range(256)) * 4
    store.write_bytes(BUCKET, "blob", data)
    assert store.read_bytes(BUCKET, "blob", limit=10) == data[:10]
    assert store.read_bytes(BUCKET, "blob", limit=0) == b""
    assert store.read_bytes(BUCKET, "blob", limit=10_000) == data


def test_upload_and_download_file(store: LocalStore, tmp_path: Path) -> None:
    source = tmp_path / "part-0001.mp4"
    source.write_bytes(b"part data")
    info = store.upload_file(BUCKET, "job/parts/0001.mp4", source, content_type="video/mp4")
    assert info.size == len(b"part data")
    target = tmp_path / "down" / "copy.mp4"
    store.download_file(BUCKET, "job/parts/0001.mp4", target)
    assert target.read_bytes() == b"part data"


def test_delete_removes_the_object(store: LocalStore) -> None:
    store.write_bytes(BUCKET, "x.txt", b"x", metadata={"k": "v"})
    store.delete(BUCKET, "x.txt")
    with pytest.raises(NotFound):
        store.stat(BUCKET, "x.txt")
    assert store.write_bytes(BUCKET, "x.txt", b"y").metadata == {}


# -- list ------------------------------------------------------------------------------------


def test_list_by_prefix_sorted_by_name(store: LocalStore) -> None:
    for name in ["c7/talk.mp4", "c7/faces/alex.jpg", "c7/manifest.yaml", "c8/other.mp4", "top"]:
        store.write_bytes(BUCKET, name, name.encode())
    assert [i.name for i in store.list(BUCKET)] == [
        "c7/faces/alex.jpg",
        "c7/manifest.yaml",
        "c7/talk.mp4",
        "c8/other.mp4",
        "top",
    ]
    assert [i.name for i in store.list(BUCKET, "c7/")] == [
        "c7/faces/alex.jpg",
        "c7/manifest.yaml",
        "c7/talk.mp4",
    ]
    assert [i.name for i in store.list(BUCKET, "c7/t")] == ["c7/talk.mp4"]
    assert [i.name for i in store.list(BUCKET, "c7/", recursive=False)] == [
        "c7/manifest.yaml",
        "c7/talk.mp4",
    ]
    sizes = {i.name: i.size for i in store.list(BUCKET, "c8/")}
    assert sizes == {"c8/other.mp4": len(b"c8/other.mp4")}


def test_list_ignores_hidden_files_and_folders(store: LocalStore) -> None:
    store.write_bytes(BUCKET, "c7/talk.mp4", b"v")
    put_by_hand(store, "c7/.talk.mp4.swp", b"editor")
    put_by_hand(store, ".DS_Store", b"finder")
    put_by_hand(store, ".git/config", b"git")
    put_by_hand(store, "c7/.tmp/part", b"temp")
    assert [i.name for i in store.list(BUCKET)] == ["c7/talk.mp4"]


def test_list_of_missing_bucket_or_prefix_is_empty(store: LocalStore) -> None:
    assert store.list("nobody") == []
    store.write_bytes(BUCKET, "a/b", b"")
    assert store.list(BUCKET, "zzz/") == []
    assert store.list(BUCKET, "zzz/q") == []


# -- generations and preconditions -------------------------------------------------------------


def test_generation_changes_on_overwrite_and_strictly_increases(store: LocalStore) -> None:
    generations = [
        store.write_bytes(BUCKET, "status.json", b"%d" % i).generation for i in range(50)
    ]
    assert all(a < b for a, b in itertools.pairwise(generations))
    assert store.stat(BUCKET, "status.json").generation == generations[-1]
    assert store.read_bytes(BUCKET, "status.json") == b"49"


def test_create_only_succeeds_once(store: LocalStore) -> None:
    first = store.write_bytes(BUCKET, "out/talk.mp4", b"first", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        store.write_bytes(BUCKET, "out/talk.mp4", b"second", if_generation_match=0)
    assert store.read_bytes(BUCKET, "out/talk.mp4") == b"first"
    assert store.stat(BUCKET, "out/talk.mp4").generation == first.generation


def test_create_only_fails_when_a_user_put_the_file_there(store: LocalStore) -> None:
    put_by_hand(store, "out/talk.mp4", b"user's own")
    with pytest.raises(PreconditionFailed):
        store.write_bytes(BUCKET, "out/talk.mp4", b"ours", if_generation_match=0)
    assert store.read_bytes(BUCKET, "out/talk.mp4") == b"user's own"


def test_match_on_current_generation_succeeds_and_stale_fails(store: LocalStore) -> None:
    v1 = store.write_bytes(BUCKET, "doc", b"v1")
    v2 = store.write_bytes(BUCKET, "doc", b"v2", if_generation_match=v1.generation)
    assert v2.generation > v1.generation
    with pytest.raises(PreconditionFailed):
        store.write_bytes(BUCKET, "doc", b"v3", if_generation_match=v1.generation)
    assert store.read_bytes(BUCKET, "doc") == b"v2"
    assert store.stat(BUCKET, "doc").generation == v2.generation


def test_match_on_a_generation_of_a_missing_object_fails(store: LocalStore) -> None:
    with pytest.raises(PreconditionFailed):
        store.write_bytes(BUCKET, "never", b"x", if_generation_match=12345)
    with pytest.raises(NotFound):
        store.stat(BUCKET, "never")


def test_failed_precondition_leaves_no_temporary_files(store: LocalStore) -> None:
    store.write_bytes(BUCKET, "f", b"1", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        store.write_bytes(BUCKET, "f", b"2", if_generation_match=0)
    assert sorted(p.name for p in (store.root / BUCKET).iterdir()) == ["f"]


def test_concurrent_create_only_has_exactly_one_winner(store: LocalStore) -> None:
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    winners: list[int] = []
    losers: list[int] = []
    unexpected: list[BaseException] = []
    lock = threading.Lock()

    def attempt(index: int) -> None:
        barrier.wait()
        try:
            store.write_bytes(BUCKET, "stitch.claim", b"%d" % index, if_generation_match=0)
        except PreconditionFailed:
            with lock:
                losers.append(index)
        except BaseException as exc:  # surfaced below; a thread cannot fail the test itself
            with lock:
                unexpected.append(exc)
        else:
            with lock:
                winners.append(index)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not unexpected
    assert len(winners) == 1
    assert len(losers) == threads_count - 1
    assert store.read_bytes(BUCKET, "stitch.claim") == b"%d" % winners[0]


# -- metadata ------------------------------------------------------------------------------------


def test_metadata_and_content_type_are_kept_for_our_writes(store: LocalStore) -> None:
    info = store.write_bytes(
        BUCKET, "out/talk.mp4", b"v", content_type="video/mp4", metadata={"job_id": "j-1"}
    )
    assert info.metadata == {"job_id": "j-1"}
    stat = store.stat(BUCKET, "out/talk.mp4")
    assert stat.metadata == {"job_id": "j-1"}
    assert stat.content_type == "video/mp4"
    assert [i.metadata for i in store.list(BUCKET, "out/")] == [{"job_id": "j-1"}]


def test_metadata_is_replaced_by_the_next_write(store: LocalStore) -> None:
    store.write_bytes(BUCKET, "o", b"1", metadata={"a": "1"})
    assert store.write_bytes(BUCKET, "o", b"2", metadata={"b": "2"}).metadata == {"b": "2"}
    assert store.write_bytes(BUCKET, "o", b"3").metadata == {}
    assert store.stat(BUCKET, "o").metadata == {}


def test_metadata_is_dropped_when_the_file_is_overwritten_by_hand(store: LocalStore) -> None:
    ours = store.write_bytes(
        BUCKET, "c7/manifest.yaml", b"v1", content_type="text/x-yaml", metadata={"job_id": "j-1"}
    )
    time.sleep(0.05)  # a person copies the new version in later, not in the same clock tick
    put_by_hand(store, "c7/manifest.yaml", b"version 2 from the user")
    stat = store.stat(BUCKET, "c7/manifest.yaml")
    assert stat.generation != ours.generation
    assert stat.metadata == {}
    assert stat.content_type != "text/x-yaml"
    assert stat.size == len(b"version 2 from the user")


# -- missing objects and bad names ---------------------------------------------------------------


def test_missing_object_raises_not_found(store: LocalStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        store.stat(BUCKET, "nope.mp4")
    with pytest.raises(NotFound):
        store.read_bytes(BUCKET, "nope.mp4")
    with pytest.raises(NotFound):
        store.read_bytes(BUCKET, "nope.mp4", limit=10)
    with pytest.raises(NotFound):
        store.delete(BUCKET, "nope.mp4")
    with pytest.raises(NotFound):
        store.download_file(BUCKET, "nope.mp4", tmp_path / "x")
    with pytest.raises(NotFound), store.media_source(BUCKET, "nope.mp4"):
        pass


def test_a_folder_is_not_an_object(store: LocalStore) -> None:
    store.write_bytes(BUCKET, "c7/talk.mp4", b"v")
    with pytest.raises(NotFound):
        store.stat(BUCKET, "c7")
    with pytest.raises(NotFound):
        store.read_bytes(BUCKET, "c7")


@pytest.mark.parametrize(
    "name", ["../escape.txt", "a/../../escape.txt", "a/..", "..", "/etc/passwd", "a\\b", ""]
)
def test_names_that_could_escape_the_bucket_are_rejected(
    store: LocalStore, tmp_path: Path, name: str
) -> None:
    with pytest.raises(ValueError):
        store.write_bytes(BUCKET, name, b"x")
    with pytest.raises(ValueError):
        store.read_bytes(BUCKET, name)
    with pytest.raises(ValueError):
        store.stat(BUCKET, name)
    assert not (tmp_path / "escape.txt").exists()
    assert not (store.root / "escape.txt").exists()


@pytest.mark.parametrize("bucket", ["..", "../other", "/abs"])
def test_bucket_names_that_could_escape_are_rejected(store: LocalStore, bucket: str) -> None:
    with pytest.raises(ValueError):
        store.write_bytes(bucket, "x", b"x")
