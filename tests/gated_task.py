"""A task command for tests: waits until the file `$TASK_GATE` exists, then becomes the real
task (`python -m batch_jobs.task`). It holds a job QUEUED/RUNNING for as long as a test needs,
so a second command can meet the job while it runs, whatever the machine's speed."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

GATE_TIMEOUT = 300.0  # a test that never opens the gate must not leave tasks behind forever


def main() -> None:
    gate = Path(os.environ["TASK_GATE"])
    deadline = time.monotonic() + GATE_TIMEOUT
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    os.execv(sys.executable, [sys.executable, "-m", "batch_jobs.task"])


if __name__ == "__main__":
    main()
