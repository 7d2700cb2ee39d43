"""What a contract test gets: one backend, its handle, and how a user's own tool writes to it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from core.config import Settings
from core.status import open_status
from core.status.base import StatusStore
from core.storage.base import ObjectStore


@dataclass
class StorageBackend:
    name: str
    store: ObjectStore
    bucket: str
    # What a user's own tool does (cp into the folder, gsutil cp): no metadata of ours.
    put_by_hand: Callable[[str, bytes], None]


@dataclass
class StatusBackend:
    name: str
    settings: Settings
    env: dict[str, str] = field(default_factory=dict)  # what another process needs to reach it

    def open(self) -> StatusStore:
        return open_status(self.settings)
