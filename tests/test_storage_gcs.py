"""GcsStore beyond the contract: what crosses the wire. Probing a large video through
`media_source` fetches its headers, not the file; decoding one chunk fetches about that chunk.
Bytes are counted by a TCP relay in front of fake-gcs-server, not by our own code."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlparse

import pytest

from core.storage.gcs import GcsStore
from processors.media.frames import FrameReader
from processors.media.probe import probe
from tests.servers import CountingRelay

SECONDS = 120
LOOPS = 12


@pytest.fixture(scope="module")
def large_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-minute 4 Mbit/s video (about 60 MB), index (moov) at the end as cameras write it,
    so the probe has to seek to the tail. Encoded once, then looped by stream copy."""
    folder = tmp_path_factory.mktemp("big")
    part, path = folder / "part.mp4", folder / "talk.mp4"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30,noise=alls=12:allf=t",
         "-f", "lavfi", "-i", "sine=frequency=300", "-t", str(SECONDS // LOOPS),
         "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "4M", "-maxrate", "4M",
         "-bufsize", "4M", "-c:a", "aac", "-shortest", str(part)],
        check=True,
    )  # fmt: skip
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-stream_loop", str(LOOPS - 1), "-i", str(part),
         "-c", "copy", str(path)],
        check=True,
    )  # fmt: skip
    return path


@pytest.fixture
def relayed(gcs_emulator: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingRelay]:
    relay = CountingRelay(urlparse(gcs_emulator).port or 80)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{relay.port}")
    yield relay
    relay.close()


@pytest.fixture
def uploaded(relayed: CountingRelay, large_video: Path) -> tuple[GcsStore, str, int]:
    store = GcsStore()
    bucket = f"wire-{uuid.uuid4().hex[:10]}"
    store.client.create_bucket(bucket)
    info = store.upload_file(bucket, "c7/talk.mp4", large_video, content_type="video/mp4")
    return store, bucket, info.size


def test_probing_a_large_video_fetches_its_headers_not_the_file(
    relayed: CountingRelay, uploaded: tuple[GcsStore, str, int], large_video: Path
) -> None:
    store, bucket, size = uploaded
    relayed.reset()
    with store.media_source(bucket, "c7/talk.mp4") as source:
        info = probe(source)
    fetched = relayed.downstream
    print(f"\nprobe: {fetched} of {size} bytes from Cloud Storage ({fetched / size:.2%})")
    assert info == probe(str(large_video))
    # ffprobe reads the index at the tail and about 5 s of packets (its analyzeduration).
    assert fetched < size * 0.10
    assert store.last_transfer is not None and store.last_transfer.fetched <= fetched


def test_decoding_one_chunk_fetches_about_that_chunk(
    relayed: CountingRelay, uploaded: tuple[GcsStore, str, int]
) -> None:
    store, bucket, size = uploaded
    with store.media_source(bucket, "c7/talk.mp4") as source:
        info = probe(source)
        relayed.reset()
        rate = Fraction(info.fps_num, info.fps_den)
        reader = FrameReader(
            source, width=info.width, height=info.height, rate=rate,
            start_time=info.start_time, first=100 * 30, count=30,
        )  # fmt: skip
        frames = sum(len(batch) for batch in reader)
    fetched = relayed.downstream
    print(f"\none 1 s chunk of {SECONDS} s: {fetched} of {size} bytes ({fetched / size:.2%})")
    assert frames == 30
    # From the keyframe before the 2 s seek margin (GOP 250 = 8.3 s) to the chunk's end, plus
    # the stream analysis at open and the window in flight when the decoder was stopped.
    assert fetched < size * 0.25
