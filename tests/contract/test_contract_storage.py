"""The ObjectStore contract, held by the local folder and by Cloud Storage (fake-gcs-server):
the same tests and assertions for both. Backend-only details live in test_storage_local.py and
test_storage_gcs.py."""

from __future__ import annotations

import itertools
import os
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from core.storage.base import NotFound, PreconditionFailed
from processors.media.frames import FrameReader
from processors.media.probe import probe
from tests.contract.backends import StorageBackend
from tests.indexed_video import make_indexed_video, read_index

# -- write, read, stat -------------------------------------------------------------------------


def test_write_then_read_and_stat(storage: StorageBackend) -> None:
    store, bucket = storage.store, storage.bucket
    info = store.write_bytes(bucket, "campaign-7/manifest.yaml", b"version: 1\n")
    assert store.read_bytes(bucket, "campaign-7/manifest.yaml") == b"version: 1\n"
    stat = store.stat(bucket, "campaign-7/manifest.yaml")
    assert stat == info
    assert (stat.bucket, stat.name, stat.size) == (bucket, "campaign-7/manifest.yaml", 11)
    assert stat.generation > 0
    assert abs(stat.updated - time.time()) < 60


def test_uri_names_the_object(storage: StorageBackend) -> None:
    uri = storage.store.uri(storage.bucket, "c7/talk.mp4")
    assert uri.endswith(f"{storage.bucket}/c7/talk.mp4")


def test_object_put_there_by_a_user_is_an_object(storage: StorageBackend) -> None:
    storage.put_by_hand("talk.mp4", b"\x00" * 100)
    info = storage.store.stat(storage.bucket, "talk.mp4")
    assert info.size == 100
    assert info.generation > 0
    assert info.content_type == "video/mp4"
    assert info.metadata == {}


def test_unspecified_content_type_is_guessed_from_the_name(storage: StorageBackend) -> None:
    info = storage.store.write_bytes(storage.bucket, "notes/readme.txt", b"hi")
    assert info.content_type == "text/plain"
    assert storage.store.stat(storage.bucket, "notes/readme.txt").content_type == "text/plain"


def test_ranged_read_returns_at_most_limit_bytes(storage: StorageBackend) -> None:
    store, bucket = storage.store, storage.bucket
    data = bytes(range(256)) * 4
    store.write_bytes(bucket, "blob", data)
    assert store.read_bytes(bucket, "blob", limit=10) == data[:10]
    assert store.read_bytes(bucket, "blob", limit=0) == b""
    assert store.read_bytes(bucket, "blob", limit=10_000) == data


def test_upload_and_download_file(storage: StorageBackend, tmp_path: Path) -> None:
    store, bucket = storage.store, storage.bucket
    source = tmp_path / "part-0001.mp4"
    source.write_bytes(b"part data")
    info = store.upload_file(bucket, "job/parts/0001.mp4", source, content_type="video/mp4")
    assert info.size == len(b"part data")
    target = tmp_path / "down" / "copy.mp4"
    store.download_file(bucket, "job/parts/0001.mp4", target)
    assert target.read_bytes() == b"part data"


def test_large_file_streams_up_and_down_intact(storage: StorageBackend, tmp_path: Path) -> None:
    """Bigger than one request (Cloud Storage: resumable upload, chunked download)."""
    store, bucket = storage.store, storage.bucket
    source = tmp_path / "big.bin"
    data = os.urandom(3 << 20) * 7  # 21 MiB, random so nothing compresses it away
    source.write_bytes(data)
    info = store.upload_file(
        bucket, "out/big.bin", source, metadata={"dropbatch-role": "output"}, if_generation_match=0
    )
    assert info.size == len(data)
    assert store.stat(bucket, "out/big.bin").metadata == {"dropbatch-role": "output"}
    with pytest.raises(PreconditionFailed):
        store.upload_file(bucket, "out/big.bin", source, if_generation_match=0)
    replaced = store.upload_file(bucket, "out/big.bin", source, if_generation_match=info.generation)
    assert replaced.generation > info.generation
    target = tmp_path / "down" / "big.bin"
    store.download_file(bucket, "out/big.bin", target)
    assert target.stat().st_size == len(data)
    assert target.read_bytes() == data
    assert [p.name for p in target.parent.iterdir()] == ["big.bin"]  # no partial left behind


def test_delete_removes_the_object(storage: StorageBackend) -> None:
    store, bucket = storage.store, storage.bucket
    store.write_bytes(bucket, "x.txt", b"x", metadata={"k": "v"})
    store.delete(bucket, "x.txt")
    with pytest.raises(NotFound):
        store.stat(bucket, "x.txt")
    assert store.write_bytes(bucket, "x.txt", b"y").metadata == {}


# -- list ------------------------------------------------------------------------------------


def test_list_by_prefix_sorted_by_name(storage: StorageBackend) -> None:
    store, bucket = storage.store, storage.bucket
    for name in ["c7/talk.mp4", "c7/faces/alex.jpg", "c7/manifest.yaml", "c8/other.mp4", "top"]:
        store.write_bytes(bucket, name, name.encode())
    assert [i.name for i in store.list(bucket)] == [
        "c7/faces/alex.jpg",
        "c7/manifest.yaml",
        "c7/talk.mp4",
        "c8/other.mp4",
        "top",
    ]
    assert [i.name for i in store.list(bucket, "c7/")] == [
        "c7/faces/alex.jpg",
        "c7/manifest.yaml",
        "c7/talk.mp4",
    ]
    assert [i.name for i in store.list(bucket, "c7/t")] == ["c7/talk.mp4"]
    assert [i.name for i in store.list(bucket, "c7/", recursive=False)] == [
        "c7/manifest.yaml",
        "c7/talk.mp4",
    ]
    assert [i.name for i in store.list(bucket, "", recursive=False)] == ["top"]
    sizes = {i.name: i.size for i in store.list(bucket, "c8/")}
    assert sizes == {"c8/other.mp4": len(b"c8/other.mp4")}


def test_list_skips_hidden_names(storage: StorageBackend) -> None:
    storage.store.write_bytes(storage.bucket, "c7/talk.mp4", b"v")
    for name in ["c7/.talk.mp4.swp", ".DS_Store", ".git/config", "c7/.tmp/part"]:
        storage.put_by_hand(name, b"hidden")
    assert [i.name for i in storage.store.list(storage.bucket)] == ["c7/talk.mp4"]


def test_list_of_missing_bucket_or_prefix_is_empty(storage: StorageBackend) -> None:
    store, bucket = storage.store, storage.bucket
    assert store.list("nobody-has-this-bucket") == []
    store.write_bytes(bucket, "a/b", b"")
    assert store.list(bucket, "zzz/") == []
    assert store.list(bucket, "zzz/q") == []


# -- generations and preconditions -------------------------------------------------------------


def test_generation_changes_on_overwrite_and_strictly_increases(storage: StorageBackend) -> None:
    store, bucket = storage.store, storage.bucket
    generations = [
        store.write_bytes(bucket, "status.json", b"%d" % i).generation for i in range(30)
    ]
    assert all(a < b for a, b in itertools.pairwise(generations))
    assert store.stat(bucket, "status.json").generation == generations[-1]
    assert store.read_bytes(bucket, "status.json") == b"29"


def test_create_only_succeeds_once(storage: StorageBackend) -> None:
    store, bucket = storage.store, storage.bucket
    first = store.write_bytes(bucket, "out/talk.mp4", b"first", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        store.write_bytes(bucket, "out/talk.mp4", b"second", if_generation_match=0)
    assert store.read_bytes(bucket, "out/talk.mp4") == b"first"
    assert store.stat(bucket, "out/talk.mp4").generation == first.generation


def test_create_only_fails_when_a_user_put_the_object_there(
    storage: StorageBackend, tmp_path: Path
) -> None:
    store, bucket = storage.store, storage.bucket
    storage.put_by_hand("out/talk.mp4", b"user's own")
    with pytest.raises(PreconditionFailed):
        store.write_bytes(bucket, "out/talk.mp4", b"ours", if_generation_match=0)
    ours = tmp_path / "ours.mp4"
    ours.write_bytes(b"ours")
    with pytest.raises(PreconditionFailed):
        store.upload_file(bucket, "out/talk.mp4", ours, if_generation_match=0)
    assert store.read_bytes(bucket, "out/talk.mp4") == b"user's own"


def test_match_on_current_generation_succeeds_and_stale_fails(storage: StorageBackend) -> None:
    store, bucket = storage.store, storage.bucket
    v1 = store.write_bytes(bucket, "doc", b"v1")
    v2 = store.write_bytes(bucket, "doc", b"v2", if_generation_match=v1.generation)
    assert v2.generation > v1.generation
    with pytest.raises(PreconditionFailed):
        store.write_bytes(bucket, "doc", b"v3", if_generation_match=v1.generation)
    assert store.read_bytes(bucket, "doc") == b"v2"
    assert store.stat(bucket, "doc").generation == v2.generation


def test_match_on_a_generation_of_a_missing_object_fails(storage: StorageBackend) -> None:
    store, bucket = storage.store, storage.bucket
    with pytest.raises(PreconditionFailed):
        store.write_bytes(bucket, "never", b"x", if_generation_match=12345)
    with pytest.raises(NotFound):
        store.stat(bucket, "never")


def test_failed_precondition_leaves_nothing_behind(storage: StorageBackend) -> None:
    store, bucket = storage.store, storage.bucket
    store.write_bytes(bucket, "f", b"1", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        store.write_bytes(bucket, "f", b"2", if_generation_match=0)
    assert [i.name for i in store.list(bucket)] == ["f"]


def test_concurrent_create_only_has_exactly_one_winner(storage: StorageBackend) -> None:
    store, bucket = storage.store, storage.bucket
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    winners: list[int] = []
    losers: list[int] = []
    unexpected: list[BaseException] = []
    lock = threading.Lock()

    def attempt(index: int) -> None:
        barrier.wait()
        try:
            store.write_bytes(bucket, "stitch.claim", b"%d" % index, if_generation_match=0)
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
        thread.join(timeout=60)
    assert not unexpected
    assert len(winners) == 1
    assert len(losers) == threads_count - 1
    assert store.read_bytes(bucket, "stitch.claim") == b"%d" % winners[0]


# -- metadata ------------------------------------------------------------------------------------


def test_metadata_and_content_type_are_kept_for_our_writes(storage: StorageBackend) -> None:
    store, bucket = storage.store, storage.bucket
    info = store.write_bytes(
        bucket, "out/talk.mp4", b"v", content_type="video/mp4", metadata={"job_id": "j-1"}
    )
    assert info.metadata == {"job_id": "j-1"}
    stat = store.stat(bucket, "out/talk.mp4")
    assert stat.metadata == {"job_id": "j-1"}
    assert stat.content_type == "video/mp4"
    assert [i.metadata for i in store.list(bucket, "out/")] == [{"job_id": "j-1"}]


def test_metadata_is_replaced_by_the_next_write(storage: StorageBackend) -> None:
    store, bucket = storage.store, storage.bucket
    store.write_bytes(bucket, "o", b"1", metadata={"a": "1"})
    assert store.write_bytes(bucket, "o", b"2", metadata={"b": "2"}).metadata == {"b": "2"}
    assert store.write_bytes(bucket, "o", b"3").metadata == {}
    assert store.stat(bucket, "o").metadata == {}


def test_metadata_is_dropped_when_a_user_overwrites_the_object(storage: StorageBackend) -> None:
    store, bucket = storage.store, storage.bucket
    ours = store.write_bytes(
        bucket, "c7/manifest.yaml", b"v1", content_type="text/x-yaml", metadata={"job_id": "j-1"}
    )
    time.sleep(0.05)  # a person copies the new version in later, not in the same clock tick
    storage.put_by_hand("c7/manifest.yaml", b"version 2 from the user")
    stat = store.stat(bucket, "c7/manifest.yaml")
    assert stat.generation > ours.generation
    assert stat.metadata == {}
    assert stat.content_type != "text/x-yaml"
    assert stat.size == len(b"version 2 from the user")


# -- missing objects and bad names ---------------------------------------------------------------


def test_missing_object_raises_not_found(storage: StorageBackend, tmp_path: Path) -> None:
    store, bucket = storage.store, storage.bucket
    with pytest.raises(NotFound):
        store.stat(bucket, "nope.mp4")
    with pytest.raises(NotFound):
        store.read_bytes(bucket, "nope.mp4")
    with pytest.raises(NotFound):
        store.read_bytes(bucket, "nope.mp4", limit=10)
    with pytest.raises(NotFound):
        store.read_bytes(bucket, "nope.mp4", limit=0)
    with pytest.raises(NotFound):
        store.delete(bucket, "nope.mp4")
    with pytest.raises(NotFound):
        store.download_file(bucket, "nope.mp4", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(NotFound), store.media_source(bucket, "nope.mp4"):
        pass


def test_a_folder_is_not_an_object(storage: StorageBackend) -> None:
    store, bucket = storage.store, storage.bucket
    store.write_bytes(bucket, "c7/talk.mp4", b"v")
    with pytest.raises(NotFound):
        store.stat(bucket, "c7")
    with pytest.raises(NotFound):
        store.read_bytes(bucket, "c7")


@pytest.mark.parametrize(
    "name", ["../escape.txt", "a/../../escape.txt", "a/..", "..", "/etc/passwd", "a\\b", ""]
)
def test_names_that_could_escape_a_folder_are_rejected(storage: StorageBackend, name: str) -> None:
    store, bucket = storage.store, storage.bucket
    with pytest.raises(ValueError):
        store.write_bytes(bucket, name, b"x")
    with pytest.raises(ValueError):
        store.read_bytes(bucket, name)
    with pytest.raises(ValueError):
        store.stat(bucket, name)


@pytest.mark.parametrize("bucket", ["..", "../other", "/abs"])
def test_bucket_names_that_could_escape_are_rejected(storage: StorageBackend, bucket: str) -> None:
    with pytest.raises(ValueError):
        storage.store.write_bytes(bucket, "x", b"x")


# -- media: what ffprobe and ffmpeg read through media_source ----------------------------------


@pytest.fixture(scope="module")
def indexed_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    make_indexed_video(path, 150, fps=30, size=(320, 240), audio=True, preset="ultrafast")
    return path


def test_probe_through_media_source_matches_the_file(
    storage: StorageBackend, indexed_clip: Path
) -> None:
    storage.store.upload_file(storage.bucket, "c7/clip.mp4", indexed_clip, content_type="video/mp4")
    with storage.store.media_source(storage.bucket, "c7/clip.mp4") as source:
        assert probe(source) == probe(str(indexed_clip))


def test_a_chunk_decodes_through_media_source_with_a_seek(
    storage: StorageBackend, indexed_clip: Path
) -> None:
    storage.store.upload_file(storage.bucket, "c7/clip.mp4", indexed_clip, content_type="video/mp4")
    with storage.store.media_source(storage.bucket, "c7/clip.mp4") as source:
        info = probe(source)
        reader = FrameReader(
            source,
            width=info.width,
            height=info.height,
            rate=Fraction(info.fps_num, info.fps_den),
            start_time=info.start_time,
            first=100,
            count=20,
        )
        frames = np.concatenate([batch.frames for batch in reader])
    assert [read_index(frame) for frame in frames] == list(range(100, 120))
