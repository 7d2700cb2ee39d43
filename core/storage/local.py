"""A folder that behaves like a Cloud Storage bucket: `<root>/<bucket>/<object name>`.

Generations are the file's modification time in microseconds (Cloud Storage generations are
creation timestamps too), so a file a user copies in by hand has one without any sidecar.
Writes go to a hidden temporary file and are renamed into place under a per-bucket lock, which
makes generation preconditions atomic between processes on one machine. Custom metadata that
we attach to our own writes lives in the store's state folder (`<root>/.dropbatch/meta/`, or a
local inbox's own `<inbox>/.dropbatch/meta/`), keyed by generation so a file overwritten by hand
does not inherit it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mimetypes
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from core.storage.base import (
    NotFound,
    ObjectInfo,
    OutsideBucket,
    PreconditionFailed,
    is_hidden,
)
from core.storage.base import check_name as _check_name

STATE_DIR = ".dropbatch"


def _files_under(start: Path, recursive: bool) -> Iterator[Path]:
    """Entries below `start`, symlinked folders not followed. A folder that vanishes while
    we walk it (a stitch deletes parts and prunes their empty folders) is simply empty:
    objects come and go, and a listing is a snapshot that may miss the ones that went."""
    if not recursive:
        try:
            with os.scandir(start) as entries:
                yield from (Path(entry.path) for entry in entries)
        except (FileNotFoundError, NotADirectoryError):
            return
        return
    # os.walk skips folders it cannot read (its onerror is None), unlike Path.rglob.
    for folder, _, files in os.walk(start):
        yield from (Path(folder, name) for name in files)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if absent) between processes. flock, not a
    lock file's existence: a process killed while holding it never leaves it held."""
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class LocalStore:
    def __init__(self, root: Path, state: Path | None = None) -> None:
        self.root = Path(root).resolve()
        # Object metadata and bucket locks: every process of one store must name the same
        # folder (Settings.local_state_dir), or they would not see each other's writes.
        self.state = Path(state).resolve() if state is not None else self.root / STATE_DIR

    # -- paths ---------------------------------------------------------------------------
    def _path(self, bucket: str, name: str) -> Path:
        _check_name(bucket)
        _check_name(name)
        path = self.root / bucket / name
        self._check_inside(bucket, name, path)
        return path

    def _check_inside(self, bucket: str, name: str, path: Path) -> None:
        """Every path we read or write is resolved here, so a symlink in the inbox (an input
        linked to a file elsewhere, an `out/` linked to another folder) can neither show us
        files outside the bucket nor make us write there. A link that stays inside is fine;
        so is a bucket folder that is itself a link (the inbox may live anywhere)."""
        top = (self.root / bucket).resolve()
        real = path.resolve()
        if real != top and top not in real.parents:
            raise OutsideBucket(
                f"{self.uri(bucket, name)} leads through a symbolic link to {real}, outside "
                f"{top}; refused: copy the file in (or write outputs to a real folder)"
            )

    def _meta_path(self, bucket: str, name: str) -> Path:
        return self.state / "meta" / bucket / (name + ".json")

    def _bucket_lock(self, bucket: str) -> contextlib.AbstractContextManager[None]:
        lock_file = self.state / "locks" / f"{bucket}.lock"
        # A bucket name may hold a slash (the work bucket `.dropbatch/work`).
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        return file_lock(lock_file)

    def uri(self, bucket: str, name: str) -> str:
        return str(self.root / bucket / name)

    # -- reads ---------------------------------------------------------------------------
    def _info(self, bucket: str, name: str, path: Path) -> ObjectInfo:
        try:
            st = path.stat()
        except FileNotFoundError:
            raise NotFound(self.uri(bucket, name)) from None
        if not path.is_file():
            raise NotFound(self.uri(bucket, name))
        generation = st.st_mtime_ns // 1000
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        metadata: dict[str, str] = {}
        meta_file = self._meta_path(bucket, name)
        if meta_file.exists():
            try:
                sidecar = json.loads(meta_file.read_text())
                if sidecar.get("generation") == generation:
                    metadata = dict(sidecar.get("metadata", {}))
                    content_type = sidecar.get("content_type", content_type)
            except (OSError, ValueError):
                pass
        return ObjectInfo(
            bucket=bucket,
            name=name,
            generation=generation,
            size=st.st_size,
            updated=st.st_mtime,
            content_type=content_type,
            metadata=metadata,
        )

    def stat(self, bucket: str, name: str) -> ObjectInfo:
        return self._info(bucket, name, self._path(bucket, name))

    def list(self, bucket: str, prefix: str = "", recursive: bool = True) -> list[ObjectInfo]:
        base = self.root / bucket
        if not base.is_dir():
            return []
        start = base / prefix if prefix.endswith("/") else base / (os.path.dirname(prefix) or ".")
        if not start.is_dir():
            return []
        found: list[ObjectInfo] = []
        for path in _files_under(start, recursive):
            if not path.is_file() or is_hidden(path.relative_to(base).as_posix()):
                continue  # hidden files are our temporaries or the user's editor swap files
            name = path.relative_to(base).as_posix()
            if not name.startswith(prefix):
                continue
            with contextlib.suppress(NotFound):
                found.append(self._info(bucket, name, path))
        return sorted(found, key=lambda info: info.name)

    def read_bytes(self, bucket: str, name: str, limit: int | None = None) -> bytes:
        path = self._path(bucket, name)
        try:
            with open(path, "rb") as handle:
                return handle.read() if limit is None else handle.read(limit)
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(self.uri(bucket, name)) from None

    def download_file(self, bucket: str, name: str, path: Path) -> None:
        source = self._path(bucket, name)
        if not source.is_file():
            raise NotFound(self.uri(bucket, name))
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)

    def local_path(self, bucket: str, name: str) -> Path | None:
        return self._path(bucket, name)

    @contextlib.contextmanager
    def media_source(self, bucket: str, name: str) -> Iterator[str]:
        path = self._path(bucket, name)
        if not path.is_file():
            raise NotFound(self.uri(bucket, name))
        yield str(path)

    # -- writes --------------------------------------------------------------------------
    def _commit(
        self,
        bucket: str,
        name: str,
        fill: callable,  # type: ignore[valid-type]
        content_type: str,
        metadata: dict[str, str] | None,
        if_generation_match: int | None,
    ) -> ObjectInfo:
        target = self._path(bucket, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
        try:
            fill(tmp)
            with self._bucket_lock(bucket):
                current: ObjectInfo | None
                try:
                    current = self.stat(bucket, name)
                except NotFound:
                    current = None
                if if_generation_match is not None:
                    have = current.generation if current else 0
                    if have != if_generation_match:
                        raise PreconditionFailed(
                            f"{self.uri(bucket, name)}: generation is {have}, "
                            f"expected {if_generation_match}"
                        )
                if current is not None:
                    # Generations must strictly increase on overwrite, even within one µs.
                    new_ns = max(os.stat(tmp).st_mtime_ns, (current.generation + 1) * 1000)
                    os.utime(tmp, ns=(new_ns, new_ns))
                os.replace(tmp, target)
                info = self._info(bucket, name, target)
                meta_file = self._meta_path(bucket, name)
                if metadata or content_type != "application/octet-stream":
                    meta_file.parent.mkdir(parents=True, exist_ok=True)
                    meta_file.write_text(
                        json.dumps(
                            {
                                "generation": info.generation,
                                "metadata": metadata or {},
                                "content_type": content_type,
                            }
                        )
                    )
                else:
                    meta_file.unlink(missing_ok=True)
                return self._info(bucket, name, target)
        finally:
            tmp.unlink(missing_ok=True)

    def write_bytes(
        self,
        bucket: str,
        name: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
        if_generation_match: int | None = None,
    ) -> ObjectInfo:
        return self._commit(
            bucket,
            name,
            lambda p: p.write_bytes(data),
            content_type,
            metadata,
            if_generation_match,
        )

    def upload_file(
        self,
        bucket: str,
        name: str,
        path: Path,
        *,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
        if_generation_match: int | None = None,
    ) -> ObjectInfo:
        return self._commit(
            bucket,
            name,
            lambda p: shutil.copyfile(path, p),
            content_type,
            metadata,
            if_generation_match,
        )

    def delete(self, bucket: str, name: str) -> None:
        path = self._path(bucket, name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise NotFound(self.uri(bucket, name)) from None
        meta = self._meta_path(bucket, name)
        meta.unlink(missing_ok=True)
        # Folders do not exist in a bucket: drop the ones this delete left empty (of the
        # objects and of their metadata).
        for parent, top in (
            (path.parent, self.root / bucket),
            (meta.parent, self.root / STATE_DIR / "meta" / bucket),
        ):
            while parent != top and parent.is_dir() and not any(parent.iterdir()):
                with contextlib.suppress(OSError):  # another writer filled it meanwhile
                    parent.rmdir()
                parent = parent.parent
