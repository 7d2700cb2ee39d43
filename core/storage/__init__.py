"""Object storage: one interface, a local-folder backend and Cloud Storage."""

from core.storage.base import (
    NotFound,
    ObjectInfo,
    ObjectStore,
    PreconditionFailed,
    folder_of,
    join_name,
)
from core.storage.factory import open_store

__all__ = [
    "NotFound",
    "ObjectInfo",
    "ObjectStore",
    "PreconditionFailed",
    "folder_of",
    "join_name",
    "open_store",
]
