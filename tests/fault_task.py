"""A task command for tests: runs the real `python -m batch_jobs.task`, logging when each
attempt starts and ends, and injecting the faults a test asks for on a task's first attempt:
exit 1 before work (`fail_once`), SIGKILL once frames are flowing (`kill_mid_chunk`), SIGTERM
then (`term_mid_chunk`), SIGSTOP then (`stop_mid_chunk`: the worker process is frozen, alive,
until the test sends it SIGCONT), or SIGKILL while the job is STITCHING (`kill_in_stitch`); or it
starts two workers at once that race for the same chunks (`race`). Each kill
logs the scratch folders the task had (`scratch`) and, once it is gone, which are left
(`scratch_left`). Cloud Batch sees the same exits from real VMs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.config import Settings
from core.status import open_status


def main() -> int:
    index = int(os.environ["BATCH_TASK_INDEX"])
    attempt = int(os.environ.get("BATCH_TASK_RETRY_ATTEMPT", "0"))
    plan = json.loads(os.environ.get("FAULT_PLAN", "{}"))
    log = Path(os.environ["FAULT_LOG"])
    job_id = os.environ["DROPBATCH_JOB_ID"]

    def record(what: str, **extra: object) -> None:
        entry = {"task": index, "attempt": attempt, "what": what, "at": time.time(), **extra}
        with open(log, "a") as handle:
            handle.write(json.dumps(entry) + "\n")

    def scratch_of(pid: int) -> list[str]:
        root = Path(os.environ.get("TMPDIR") or tempfile.gettempdir())
        return sorted(p.name for p in root.glob(f"dropbatch-task-{pid}-*"))

    record("start")
    if attempt == 0 and index in plan.get("fail_once", []):
        record("fail")
        return 1
    if attempt == 0 and index in plan.get("race", []):
        # A second worker (index + 100) started at the same moment: both race for the chunks.
        twin_env = {**os.environ, "BATCH_TASK_INDEX": str(index + 100)}
        twins = [
            subprocess.Popen([sys.executable, "-m", "batch_jobs.task"]),
            subprocess.Popen([sys.executable, "-m", "batch_jobs.task"], env=twin_env),
        ]
        codes = [twin.wait() for twin in twins]
        record("race-end", codes=codes)
        return max(codes)
    proc = subprocess.Popen([sys.executable, "-m", "batch_jobs.task"])
    status = open_status(Settings.from_env())
    kill_mid = attempt == 0 and index in plan.get("kill_mid_chunk", [])
    term_mid = attempt == 0 and index in plan.get("term_mid_chunk", [])
    stop_mid = attempt == 0 and index in plan.get("stop_mid_chunk", [])
    kill_stitch = attempt == 0 and plan.get("kill_in_stitch", False)
    killed: list[str] = []
    while proc.poll() is None:
        if kill_mid or term_mid:
            progress = [p for p in status.progress(job_id) if p.task_index == index]
            if progress and 0 < progress[0].frames_done < progress[0].frames_total:
                killed = scratch_of(proc.pid)
                proc.send_signal(signal.SIGKILL if kill_mid else signal.SIGTERM)
                record("killed-mid-chunk" if kill_mid else "terminated-mid-chunk", scratch=killed)
                kill_mid = term_mid = False
        if stop_mid:
            progress = [p for p in status.progress(job_id) if p.task_index == index]
            if progress and 0 < progress[0].frames_done < progress[0].frames_total:
                proc.send_signal(signal.SIGSTOP)  # the test sends SIGCONT when it wants
                record("stopped-mid-chunk", pid=proc.pid, chunk=progress[0].chunk)
                stop_mid = False
        if kill_stitch:
            job = status.get(job_id)
            if job and job.stitch_leases:
                killed = scratch_of(proc.pid)
                proc.send_signal(signal.SIGKILL)
                record("killed-in-stitch", scratch=killed)
                kill_stitch = False
        time.sleep(0.02)
    extra = {"scratch_left": scratch_of(proc.pid)} if killed else {}
    record(f"end:{proc.returncode}", **extra)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
