"""Choose the storage backend from settings (never from whether we are under test)."""

from __future__ import annotations

from dropbatch.config import Settings
from dropbatch.storage.base import ObjectStore


def open_store(settings: Settings) -> ObjectStore:
    if settings.storage == "local":
        from dropbatch.storage.local import LocalStore

        return LocalStore(settings.local_root, settings.local_state_dir)
    if settings.storage == "gcs":
        from dropbatch.storage.gcs import GcsStore

        return GcsStore(project=settings.project or None)
    raise NotImplementedError(f"storage backend {settings.storage!r} is not available")
