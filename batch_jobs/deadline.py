"""The trigger's overall deadline for planning one event's manifests.

An event-driven Cloud Function is stopped at its timeout (540 s) without a word; a job caught
mid-planning would stay RECEIVED and every redelivery would plan it again. Planning therefore
runs inside `trigger_deadline_seconds` (below the timeout): each probe is cut short at the
deadline, and the job ends FAILED `PLANNING_TIMEOUT` naming the inputs not yet probed, while
the function still has time to record it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Deadline:
    seconds: float  # the setting, for messages
    until: float  # a time.monotonic() instant

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(seconds=seconds, until=time.monotonic() + seconds)

    def passed(self) -> bool:
        return time.monotonic() >= self.until


class PlanningDeferred(Exception):
    """Manifests an event concerns that were not evaluated before the deadline: raised after
    the others are recorded, so the event is delivered again and the rest evaluated then."""
