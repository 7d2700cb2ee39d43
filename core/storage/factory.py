"""Choose the storage backend from settings (never from whether we are under test)."""

from __future__ import annotations

from core.config import Settings
from core.storage.base import ObjectStore


def open_store(settings: Settings) -> ObjectStore:
    if settings.storage == "local":
        from core.storage.local import LocalStore

        return LocalStore(settings.local_root, settings.local_state_dir)
    if settings.storage == "gcs":
        from core.storage.gcs import GcsStore

        return GcsStore(project=settings.project or None)
    raise NotImplementedError(f"storage backend {settings.storage!r} is not available")
