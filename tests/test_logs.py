"""Log lines Cloud Logging parses: one JSON object per line with severity, message, time and
the job's context; the event names a user searches for are fixed and listed in README."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

from core import logs

ROOT = Path(__file__).resolve().parent.parent


def test_a_task_line_carries_severity_message_job_task_and_chunk() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("dropbatch.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    saved = dict(logs._CONTEXT)
    try:
        logs.bind(job_id="db-talk-0123456789ab", task_index=4, chunk=2, item=0)
        logs.event(logger, "task finished", seconds=3.5, fps=85.7)
        logs.event(logger, "task failed", logging.ERROR, reason="decoded 10 of 300 frames")
    finally:
        logs._CONTEXT.clear()
        logs._CONTEXT.update(saved)
        logger.removeHandler(handler)
    finished, failed = (json.loads(line) for line in stream.getvalue().splitlines())
    assert finished["severity"] == "INFO" and finished["message"] == "task finished"
    assert (finished["job_id"], finished["task_index"], finished["chunk"]) == (
        "db-talk-0123456789ab",
        4,
        2,
    )
    assert finished["fps"] == 85.7
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", finished["time"])
    assert finished[logs.LABELS_KEY] == {"dropbatch_job": "db-talk-0123456789ab"}
    assert failed["severity"] == "ERROR" and failed["reason"] == "decoded 10 of 300 frames"


def test_every_fixed_event_name_is_listed_in_readme() -> None:
    names = set()
    for path in [
        *ROOT.glob("batch_jobs/*.py"),
        *ROOT.glob("dropbatch/*.py"),
        *ROOT.glob("triggers/*.py"),
    ]:
        names.update(re.findall(r'event\(\s*log,\s*"([^"]+)"', path.read_text()))
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Logs") :]
    section = section[: section.index("\n## ", 4)] if "\n## " in section[4:] else section
    assert {"job launched", "task started", "task finished", "task failed", "stitched"} <= names
    missing = [name for name in sorted(names) if f"`{name}`" not in section]
    assert not missing, f"events not listed in README's Logs section: {missing}"
