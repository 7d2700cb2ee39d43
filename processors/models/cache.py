"""Where verified model copies (and the TensorRT engines beside them) live on this machine.
Apart from store.py so the session builders below the step registry need not import the store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.config import Settings


def default_cache(settings: Settings | None = None) -> Path:
    from core.config import Settings

    settings = settings or Settings.from_env()
    if settings.model_cache:
        return Path(settings.model_cache)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dropbatch" / "models"
