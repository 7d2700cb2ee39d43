"""Job status: the record model, the store interface, and its backends."""

from core.config import Settings
from core.domain import JobError
from core.status.base import JobNotFound, StatusStore
from core.status.model import TERMINAL_STATES, JobRecord, JobState, TaskProgress


def open_status(settings: Settings) -> StatusStore:
    if settings.status == "sqlite":
        from core.status.sqlite import SqliteStatusStore

        return SqliteStatusStore(settings.sqlite_file)
    if settings.status == "firestore":
        from core.status.firestore import FirestoreStatusStore

        return FirestoreStatusStore(
            settings.firestore_collection,
            project=settings.project or None,
            database=settings.firestore_database,
        )
    raise NotImplementedError(f"status backend {settings.status!r} is not available")


__all__ = [
    "TERMINAL_STATES",
    "JobError",
    "JobNotFound",
    "JobRecord",
    "JobState",
    "StatusStore",
    "TaskProgress",
    "open_status",
]
