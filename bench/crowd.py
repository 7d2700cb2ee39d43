"""Crowd benchmark: many workers claiming and finishing the chunks of one job on the Firestore
emulator, through the real claim and done code (`ChunkPicker`, `record_done`; the chunk's work
is trivial): how long the bookkeeping takes, and the most writes any one document takes, in a
1 s and a 5 s window (Firestore sustains about one write a second per document). Writes are
counted at the client (tests/crowd.py).

    python bench/crowd.py [--workers 100] [--items 4] [--chunks-per-item 250]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.status.firestore import FirestoreStatusStore  # noqa: E402
from tests.crowd import CommitCounter, crowd_plan, run_crowd  # noqa: E402
from tests.servers import firestore_emulator  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--items", type=int, default=4)
    parser.add_argument("--chunks-per-item", type=int, default=250)
    args = parser.parse_args()
    plan = crowd_plan(args.items, args.chunks_per_item, args.workers)
    chunks = args.items * args.chunks_per_item
    with tempfile.TemporaryDirectory() as tmp, firestore_emulator(Path(tmp)) as host:
        os.environ["FIRESTORE_EMULATOR_HOST"] = host
        store = FirestoreStatusStore(f"bench-{uuid.uuid4().hex[:8]}", project="bench")
        counter = CommitCounter(store)
        crowd = run_crowd(store, "bench-job", plan, args.workers, timeout=600)
        burst, where = counter.busiest(1.0)
        sustained, _ = counter.busiest(5.0)
        once = sum(len(w) == 1 for w in crowd.done_by.values())
        print(f"{args.workers} workers, {chunks} chunks ({args.items} items) on "
              f"{os.cpu_count()} cores: {crowd.seconds:.1f} s, {once} chunks done once, "
              f"{len(crowd.failures)} workers failed, {crowd.alive} still running")  # fmt: skip
        print(f"writes: {counter.total()} in {len(counter.writes)} documents, "
              f"{counter.failed} commits refused; busiest document {burst} in 1 s "
              f"({'/'.join(where.split('/')[-3:])}), {sustained} in 5 s = "
              f"{sustained / 5:.2f}/s sustained")  # fmt: skip
        print(f"claim reads: {crowd.reads['all']} of every claim, "
              f"{crowd.reads['pending']} of the open ones")  # fmt: skip


if __name__ == "__main__":
    main()
