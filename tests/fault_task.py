"""A task command for tests: runs the real `python -m batch_jobs.task`, logging when each
attempt starts and ends, and injecting the faults a test asks for on a task's first attempt:
exit 1 before work (`fail_once`), SIGKILL once frames are flowing (`kill_mid_chunk`), or SIGKILL
while the job is STITCHING (`kill_in_stitch`). Cloud Batch sees the same exits from real VMs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dropbatch.config import Settings
from dropbatch.status import open_status


def main() -> int:
    index = int(os.environ["BATCH_TASK_INDEX"])
    attempt = int(os.environ.get("BATCH_TASK_RETRY_ATTEMPT", "0"))
    plan = json.loads(os.environ.get("FAULT_PLAN", "{}"))
    log = Path(os.environ["FAULT_LOG"])
    job_id = os.environ["DROPBATCH_JOB_ID"]

    def record(what: str) -> None:
        with open(log, "a") as handle:
            handle.write(
                json.dumps({"task": index, "attempt": attempt, "what": what, "at": time.time()})
                + "\n"
            )

    record("start")
    if attempt == 0 and index in plan.get("fail_once", []):
        record("fail")
        return 1
    proc = subprocess.Popen([sys.executable, "-m", "batch_jobs.task"])
    status = open_status(Settings.from_env())
    kill_mid = attempt == 0 and index in plan.get("kill_mid_chunk", [])
    kill_stitch = attempt == 0 and plan.get("kill_in_stitch", False)
    while proc.poll() is None:
        if kill_mid:
            progress = [p for p in status.progress(job_id) if p.task_index == index]
            if progress and 0 < progress[0].frames_done < progress[0].frames_total:
                proc.send_signal(signal.SIGKILL)
                record("killed-mid-chunk")
        if kill_stitch:
            job = status.get(job_id)
            if job and job.stitch_leases:
                proc.send_signal(signal.SIGKILL)
                record("killed-in-stitch")
        time.sleep(0.02)
    record(f"end:{proc.returncode}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
