"""One JSON object per log line, which Cloud Logging parses into structured entries.

Fields: severity, message, time, and whatever context the caller binds (job_id, task_index,
chunk). `message` is a fixed event name ("task finished") and the details are fields, so a
search for an event never depends on its details; README lists the events.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

_CONTEXT: dict[str, Any] = {}
LABELS_KEY = "logging.googleapis.com/labels"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname if record.levelname != "WARNING" else "WARNING",
            "message": record.getMessage(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "logger": record.name,
        }
        entry.update(_CONTEXT)
        entry.update(getattr(record, "fields", {}) or {})
        if entry.get("job_id"):
            # Cloud Logging turns this into entry labels: `labels.dropbatch_job="…"` finds
            # every line of a job, from the function and from its Batch tasks alike.
            entry[LABELS_KEY] = {"dropbatch_job": str(entry["job_id"])}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(level: int | None = None) -> None:
    """JSON lines on stderr at DROPBATCH_LOG_LEVEL (default INFO); tasks inherit the level."""
    if level is None:
        level = logging.getLevelName(os.environ.get("DROPBATCH_LOG_LEVEL", "INFO").upper())
        level = level if isinstance(level, int) else logging.INFO
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)


def bind(**fields: Any) -> None:
    """Context added to every line this process logs from now on (job_id, task_index…)."""
    _CONTEXT.update({k: v for k, v in fields.items() if v is not None})


def event(logger: logging.Logger, message: str, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, message, extra={"fields": fields})
