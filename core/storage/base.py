"""The storage interface every backend implements, modelled on Cloud Storage.

Objects live in buckets under flat names; every object version has a generation number, and
writes can be made conditional on it (`if_generation_match=0` means "only if absent") so we
never overwrite a user's object by accident and never stitch twice into the same output.
"""

from __future__ import annotations

import contextlib
import posixpath
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol


class NotFound(Exception):
    """The object does not exist."""


class OutsideBucket(NotFound):
    """A local object whose path leads out of its bucket's folder (a symbolic link, of the
    file or of a folder on its way). Refused for reads and writes alike: to every caller it is
    no object of this bucket, and the message says why."""


class PreconditionFailed(Exception):
    """A generation precondition did not hold; nothing was written."""


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    name: str
    generation: int
    size: int
    updated: float  # seconds since the epoch
    content_type: str = "application/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)


GS_SCHEME = "gs://"


def split_gs_uri(uri: str) -> tuple[str, str]:
    """gs://bucket/some/name -> (bucket, some/name); the name may be empty or a folder/.
    Raises ValueError for a URI that is not gs:// or names no bucket."""
    if not uri.startswith(GS_SCHEME):
        raise ValueError(f"{uri}: not a {GS_SCHEME} URI")
    bucket, _, name = uri[len(GS_SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"{uri}: no bucket in the URI")
    return bucket, name


def gs_bucket(uri: str) -> str:
    """The bucket a gs:// URI names; "" for a URI that names none or a local path."""
    try:
        return split_gs_uri(uri)[0]
    except ValueError:
        return ""


class ObjectStore(Protocol):
    """What the trigger, the planner and the tasks need from storage."""

    def uri(self, bucket: str, name: str) -> str:
        """How a person should see this object in messages (gs://… or a local path)."""
        ...

    def stat(self, bucket: str, name: str) -> ObjectInfo:
        """Existence and metadata; raises NotFound."""
        ...

    def list(self, bucket: str, prefix: str = "", recursive: bool = True) -> list[ObjectInfo]:
        """Objects whose names start with `prefix`, sorted by name, hidden names skipped;
        `recursive=False` stops at the next '/'. A missing bucket lists as empty."""
        ...

    def read_bytes(self, bucket: str, name: str, limit: int | None = None) -> bytes:
        """At most `limit` bytes from the start (a ranged read), the whole object if None."""
        ...

    def write_bytes(
        self,
        bucket: str,
        name: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
        if_generation_match: int | None = None,
    ) -> ObjectInfo: ...

    def upload_file(
        self,
        bucket: str,
        name: str,
        path: Path,
        *,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
        if_generation_match: int | None = None,
    ) -> ObjectInfo: ...

    def download_file(self, bucket: str, name: str, path: Path) -> None: ...

    def delete(self, bucket: str, name: str) -> None: ...

    def local_path(self, bucket: str, name: str) -> Path | None:
        """A filesystem path for the object if the backend has one (no copy needed)."""
        ...

    def media_source(self, bucket: str, name: str) -> contextlib.AbstractContextManager[str]:
        """Something ffmpeg/ffprobe can open with ranged reads: a path or a URL."""
        ...


def check_name(name: str) -> None:
    """Reject names that could leave a bucket folder: every backend refuses the same ones."""
    parts = PurePosixPath(name).parts
    if not name or name.startswith("/") or ".." in parts or "\\" in name:
        raise ValueError(f"invalid object name {name!r}")


def is_hidden(name: str) -> bool:
    """A name with a part starting with '.': our temporaries, editor swap files, .DS_Store.
    Listings skip them on every backend so a folder means the same thing everywhere."""
    return any(part.startswith(".") for part in name.split("/"))


def join_name(*parts: str) -> str:
    return posixpath.join(*[p for p in parts if p])


def folder_of(name: str) -> str:
    """The folder part of an object name, with a trailing slash ('' at the bucket root)."""
    head = posixpath.dirname(name)
    return f"{head}/" if head else ""
