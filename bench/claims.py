"""Output-claim benchmark: how long the trigger takes to claim the outputs and previews of a
500-input manifest on Cloud Storage (fake-gcs-server): `claim_outputs` (one listing per
output folder, then a create-only write per name in name order) vs the baseline it replaced
(a stat of each output in the inbox, then its claim), side by side in one run.

    python bench/claims.py [--inputs 500]

Every run claims in a fresh work bucket, so each claim is a first claim.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batch_jobs.outputs import _claim, claim_outputs  # noqa: E402
from batch_jobs.workspace import WorkArea  # noqa: E402
from core.domain import Plan, PlannedItem, VideoInfo  # noqa: E402
from core.storage.base import NotFound  # noqa: E402
from core.storage.gcs import GcsStore  # noqa: E402
from tests.servers import fake_gcs_server  # noqa: E402


def plan_of(count: int) -> Plan:
    info = VideoInfo(duration=1, fps_num=30, fps_den=1, frame_count=30, width=32, height=32)
    return Plan(
        items=[
            PlannedItem(index=i, video=f"f/in-{i:03d}.mp4", output=f"f/out/in-{i:03d}.mp4",
                        preview=f"f/out/in-{i:03d}.preview.jpg", info=info, chain=[])
            for i in range(count)
        ]
    )  # fmt: skip


def baseline(store: GcsStore, work: WorkArea, inbox: str, plan: Plan) -> list[str]:
    """What claiming did before: a stat of each output in the inbox, then its claim."""
    taken = []
    for item in plan.items:
        for output in (item.output, item.preview):
            with contextlib.suppress(NotFound):
                store.stat(inbox, output)
            holder, _ = _claim(store, work, inbox, output, "f/job.yaml", "job")
            if holder is not None:
                taken.append(output)
    return taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=500)
    args = parser.parse_args()
    plan = plan_of(args.inputs)
    fields = [f"inputs[{i}]" for i in range(args.inputs)]
    with tempfile.TemporaryDirectory() as tmp, fake_gcs_server(Path(tmp)) as host:
        os.environ["STORAGE_EMULATOR_HOST"] = host
        store = GcsStore(project="bench")
        inbox = f"inbox-{uuid.uuid4().hex[:8]}"
        store.client.create_bucket(inbox)
        times = {}
        for way in ("baseline", "ours"):
            work = WorkArea(f"work-{uuid.uuid4().hex[:8]}", f"{inbox}/")
            store.client.create_bucket(work.bucket)
            started, cpu = time.monotonic(), time.process_time()
            if way == "ours":
                problems = claim_outputs(store, work, inbox, "f/job.yaml", "job", plan, fields)
            else:
                problems = baseline(store, work, inbox, plan)
            times[way] = time.monotonic() - started
            cpu = time.process_time() - cpu
            assert problems == [], problems
            assert len(store.list(work.bucket)) == 2 * args.inputs
            print(f"{way}: {2 * args.inputs} claims in {times[way]:.2f} s "
                  f"({1000 * times[way] / args.inputs:.1f} ms an input; {cpu:.2f} s of our CPU)",
                  flush=True)  # fmt: skip
    print(f"claiming the outputs of {args.inputs} inputs: {times['ours']:.2f} s, baseline "
          f"{times['baseline']:.2f} s, {times['baseline'] / times['ours']:.1f}x "
          f"on {os.cpu_count()} cores")  # fmt: skip


if __name__ == "__main__":
    main()
