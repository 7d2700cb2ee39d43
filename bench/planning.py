"""Planning benchmark: how long the trigger takes to plan a 500-input manifest on Cloud Storage
(fake-gcs-server), probing one input at a time vs `probe_concurrency` at a time.

    python bench/planning.py [--inputs 500] [--concurrency 16]

Every input is the same tiny real clip uploaded under its own name, so each is its own object
version and is probed (headers, then the tail check) through ranged reads. The time is the
whole evaluation of the manifest: list the folder, probe every input, plan, claim the outputs,
record QUEUED. An event-driven Cloud Function has 540 s for all of it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.status.model import JobState  # noqa: E402
from tests.planning_scale import make_clip, plan_inputs  # noqa: E402
from tests.servers import fake_gcs_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clip = make_clip(work / "clip.mp4")
        (work / "gcs").mkdir()
        with fake_gcs_server(work / "gcs") as host:
            os.environ["STORAGE_EMULATOR_HOST"] = host
            times = {}
            for bound in (1, args.concurrency):
                planned = plan_inputs(clip, args.inputs, bound, work / f"status-{bound}.sqlite")
                assert JobState.QUEUED in [h.state for h in planned.record.history], planned.record
                assert len(planned.record.plan.items) == args.inputs
                times[bound] = planned.seconds
                print(f"probe_concurrency={bound}: {args.inputs} inputs planned in "
                      f"{planned.seconds:.1f} s", flush=True)  # fmt: skip
    print(f"planning {args.inputs} inputs: sequential {times[1]:.1f} s, "
          f"concurrent ({args.concurrency}) {times[args.concurrency]:.1f} s, "
          f"{times[1] / times[args.concurrency]:.1f}x on {os.cpu_count()} cores")  # fmt: skip


if __name__ == "__main__":
    main()
