"""The claim decision and `chunk_seconds: auto`: pure functions the workers and bench/cloud.py
share."""

from __future__ import annotations

import pytest

from batch_jobs.chunk_size import ROLL_SHARE, auto_chunk_seconds
from batch_jobs.claims import next_claim
from dropbatch.status.model import ChunkClaim

NOW = 1000.0


def test_next_claim_takes_free_then_expired_or_dead_chunks_and_none_when_all_are_held() -> None:
    chunks = [
        ChunkClaim(item=0, chunk=0, done=True),
        ChunkClaim(item=0, chunk=1, owner="a", expires_at=NOW + 30),  # live lease
        ChunkClaim(item=0, chunk=2, owner="b", expires_at=NOW - 1),  # lease ran out
        ChunkClaim(item=1, chunk=0),  # never claimed
    ]
    assert (next_claim(chunks, NOW).item, next_claim(chunks, NOW).chunk) == (0, 2)
    # The worker's own item first (its chain and side inputs are set up).
    assert (next_claim(chunks, NOW, prefer_item=1).item) == 1
    held = [chunks[0], chunks[1]]
    assert next_claim(held, NOW) is None
    # A holder known dead loses its chunk before its lease runs out.
    dead = next_claim(held, NOW, dead=lambda c: "gone" if c.owner == "a" else "")
    assert dead is not None and dead.chunk == 1


def chunks_of(seconds: float, chunk: float) -> int:
    return -(-round(seconds * 30) // round(chunk * 30))


@pytest.mark.parametrize("minutes", [1 / 60, 1, 10, 60])
@pytest.mark.parametrize("context", [0, 15, 200])
def test_auto_chunks_give_each_worker_several_and_keep_roll_under_five_percent(
    minutes: float, context: int
) -> None:
    seconds, workers = minutes * 60, 10
    chunk = auto_chunk_seconds(seconds, 30.0, workers, context, context)
    frames = chunk * 30
    assert 2 * context / (frames + 2 * context) <= ROLL_SHARE + 1e-9
    count = chunks_of(seconds, chunk)
    if minutes == 1 / 60:
        assert count == 1  # a one-second video is one chunk
    if minutes >= 10 and context <= 15:
        assert count >= 3 * workers  # long enough: at least three chunks per worker
    if minutes >= 10 and context == 200:
        # Big context: the roll bound sets the length, just within it.
        assert 2 * context / (frames + 2 * context) > ROLL_SHARE * 0.95
    if minutes == 60:
        assert count >= workers
    if minutes == 1 and context == 0:
        assert 4 <= chunk <= 6  # short video: short chunks, but not so short that setup rules


def test_an_explicit_chunk_length_wins_over_auto() -> None:
    from batch_jobs.plan import build_plan
    from dropbatch.domain import VideoInfo
    from manifests.loader import load_manifest
    from manifests.resolve import ResolvedItem

    info = VideoInfo(duration=600, fps_num=30, fps_den=1, frame_count=18000, width=64, height=64)
    item = ResolvedItem(index=0, video="a.mp4", audio=None, output_name=None)
    for text, expected in [("", 30), ("compute: {chunk_seconds: 60}\n", 10)]:
        manifest = load_manifest(f"version: 1\ninputs: a.mp4\n{text}".encode())
        plan = build_plan(manifest, "", [(item, info)])
        assert len(plan.items[0].chunks) == expected
        assert plan.parallelism == 10
