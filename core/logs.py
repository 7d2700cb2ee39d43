"""One JSON object per log line, which Cloud Logging parses into structured entries.

Fields: severity, message, time, and whatever context the caller binds (job_id, task_index,
chunk). `message` is a fixed event name ("task finished") and the details are fields, so a
search for an event never depends on its details; README lists the events.

Functions and tasks always log JSON. The `dropbatch` command is for people: it logs one plain
line per event (`text`, no tracebacks) unless asked for JSON (`--log-format json`), and
re-renders the JSON lines of the tasks it runs in the same format.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

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


class TextFormatter(logging.Formatter):
    """`warning: task attempt failed (task_index=0, exit_code=1)`: one line, for a terminal.

    An exception shows as its type and message only: a person reads what went wrong, and
    the traceback is in the JSON format for whoever debugs the code.
    """

    def format(self, record: logging.LogRecord) -> str:
        fields = {**(getattr(record, "fields", {}) or {})}
        fields.pop("logger", None)
        details = ", ".join(f"{k}={_plain(v)}" for k, v in fields.items() if v is not None)
        line = f"{record.levelname.lower()}: {record.getMessage()}"
        if details:
            line += f" ({details})"
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line += f": {type(exc).__name__}: {exc}"
        return line.replace("\n", " ")


def _plain(value: Any) -> str:
    if isinstance(value, dict):  # an error: {code, message, field, uri}
        where = value.get("field") or value.get("uri")
        text = str(value.get("message", value))
        return f"{where}: {text}" if where else text
    return str(value)


class StderrHandler(logging.StreamHandler):
    """Lines on whatever `sys.stderr` is when a line is written, not the stream it was when
    logging was set up: a redirect (or a test runner's capture) may replace it later."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


class TerminalHandler(StderrHandler):
    """Text lines on stderr; on a terminal each first clears the progress line that
    `dropbatch run` redraws in place, so the two never run into one another."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            on_terminal = self.stream.isatty()
        except (AttributeError, OSError, ValueError):
            on_terminal = False
        if on_terminal:
            self.stream.write("\r\x1b[K")
        super().emit(record)


FORMATS = ("text", "json")
_HANDLER_FLAG = "_dropbatch_handler"


def env_level(default: int = logging.INFO) -> int:
    """DROPBATCH_LOG_LEVEL as a logging level (`default` when unset or unknown)."""
    level = logging.getLevelName(os.environ.get("DROPBATCH_LOG_LEVEL", "").upper())
    return level if isinstance(level, int) else default


def setup(level: int | None = None, fmt: str = "json") -> None:
    """Log lines on stderr at `level` (default DROPBATCH_LOG_LEVEL, else INFO); tasks inherit
    the level. `fmt`: `json` (functions, tasks, `--log-format json`) or `text` (people).
    The first call wins, so a command's choice holds for everything it calls."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(FORMATS)}")
    root = logging.getLogger()
    if any(getattr(h, _HANDLER_FLAG, False) for h in root.handlers):
        return
    handler = StderrHandler() if fmt == "json" else TerminalHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    setattr(handler, _HANDLER_FLAG, True)
    root.addHandler(handler)
    root.setLevel(env_level() if level is None else level)


def relay(line: str) -> None:
    """Pass on a log line a child process (a task) wrote: as is when we log JSON ourselves,
    else as an event of ours, so it is formatted and filtered like our own lines."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, _HANDLER_FLAG, False)]
    if not ours or isinstance(ours[0].formatter, JsonFormatter):
        sys.stderr.write(line if line.endswith("\n") else line + "\n")
        return
    try:
        entry = json.loads(line)
    except ValueError:
        entry = None
    if not isinstance(entry, dict) or "message" not in entry:
        # Not one of our lines (a crashed interpreter's traceback): the task's failure
        # reaches the person through the job's error; the text is kept for debugging.
        logging.getLogger("dropbatch.task").debug(line.rstrip())
        return
    level = logging.getLevelName(str(entry.pop("severity", "INFO")))
    name = str(entry.pop("logger", "dropbatch.task"))
    message = str(entry.pop("message"))
    for key in ("time", "exception", LABELS_KEY):
        entry.pop(key, None)
    logging.getLogger(name).log(
        level if isinstance(level, int) else logging.INFO, message, extra={"fields": entry}
    )


def bind(**fields: Any) -> None:
    """Context added to every line this process logs from now on (job_id, task_index…)."""
    _CONTEXT.update({k: v for k, v in fields.items() if v is not None})


def event(logger: logging.Logger, message: str, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, message, extra={"fields": fields})
