"""Cloud Storage as an ObjectStore (google-cloud-storage 3.x), behaving exactly as LocalStore.

- Generation preconditions go to the server (`ifGenerationMatch`, 0 = must not exist) and a
  412 becomes PreconditionFailed: we never overwrite a user's object, never stitch twice.
- Large files stream: uploads above 8 MiB are resumable in CHUNK_SIZE pieces, downloads are
  chunked into a temporary file that is renamed into place only when complete.
- `media_source` serves the object to ffmpeg over loopback HTTP with byte ranges (see
  `ranged_http`), so probing reads headers and a task reads only its chunk.
- The client library honours STORAGE_EMULATOR_HOST itself (endpoint and anonymous
  credentials); this module has no emulator switch of its own.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.api_core import exceptions as google_errors
from google.cloud import storage

from core.storage.base import (
    NotFound,
    ObjectInfo,
    PreconditionFailed,
    check_name,
    is_hidden,
)
from core.storage.ranged_http import Transfer, serve_object

DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Resumable upload / chunked download piece; a multiple of 256 KiB as the API requires.
CHUNK_SIZE = 16 << 20
# Above this the client library switches from one multipart request to a resumable upload.
MULTIPART_LIMIT = 8 << 20


def _content_type(name: str, given: str) -> str:
    """Like gsutil and LocalStore: an unspecified type is guessed from the name."""
    if given != DEFAULT_CONTENT_TYPE:
        return given
    return mimetypes.guess_type(name)[0] or DEFAULT_CONTENT_TYPE


class GcsStore:
    def __init__(self, client: storage.Client | None = None, project: str | None = None) -> None:
        self.client = client or storage.Client(project=project or None)
        self.last_transfer: Transfer | None = None  # what the latest media_source read

    def uri(self, bucket: str, name: str) -> str:
        return f"gs://{bucket}/{name}"

    def _blob(self, bucket: str, name: str, **kwargs: Any) -> storage.Blob:
        check_name(bucket)
        check_name(name)
        return self.client.bucket(bucket).blob(name, **kwargs)

    def _info(self, blob: storage.Blob) -> ObjectInfo:
        return ObjectInfo(
            bucket=blob.bucket.name,
            name=blob.name,
            generation=int(blob.generation or 0),
            size=int(blob.size or 0),
            updated=blob.updated.timestamp() if blob.updated else 0.0,
            content_type=blob.content_type or DEFAULT_CONTENT_TYPE,
            metadata=dict(blob.metadata or {}),
        )

    @contextlib.contextmanager
    def _errors(self, bucket: str, name: str) -> Iterator[None]:
        """The library's HTTP errors as the ObjectStore's own exceptions."""
        try:
            yield
        except google_errors.NotFound:
            raise NotFound(self.uri(bucket, name)) from None
        except google_errors.PreconditionFailed as exc:
            raise PreconditionFailed(f"{self.uri(bucket, name)}: {exc.message}") from None

    # -- reads ---------------------------------------------------------------------------
    def stat(self, bucket: str, name: str) -> ObjectInfo:
        blob = self._blob(bucket, name)
        with self._errors(bucket, name):
            blob.reload()
        return self._info(blob)

    def list(self, bucket: str, prefix: str = "", recursive: bool = True) -> list[ObjectInfo]:
        check_name(bucket)
        blobs = self.client.list_blobs(
            bucket, prefix=prefix or None, delimiter=None if recursive else "/"
        )
        try:
            found = [self._info(b) for b in blobs if not is_hidden(b.name)]
        except google_errors.NotFound:
            return []  # no such bucket: nothing in it, as for a missing local folder
        return sorted(found, key=lambda info: info.name)

    def read_bytes(self, bucket: str, name: str, limit: int | None = None) -> bytes:
        blob = self._blob(bucket, name)
        if limit is not None and limit <= 0:
            self.stat(bucket, name)  # still NotFound for a missing object
            return b""
        with self._errors(bucket, name):
            # A ranged GET: the manifest reader asks for at most its size limit + 1 byte.
            return blob.download_as_bytes(start=0, end=None if limit is None else limit - 1)

    def download_file(self, bucket: str, name: str, path: Path) -> None:
        blob = self._blob(bucket, name, chunk_size=CHUNK_SIZE)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.parent / f".{path.name}.part-{uuid.uuid4().hex}"
        try:
            with self._errors(bucket, name), open(partial, "wb") as handle:
                blob.download_to_file(handle)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)

    def local_path(self, bucket: str, name: str) -> Path | None:
        return None

    @contextlib.contextmanager
    def media_source(self, bucket: str, name: str) -> Iterator[str]:
        info = self.stat(bucket, name)
        # Pinned to the generation we saw: a replaced object fails the read, never mixes.
        blob = self._blob(bucket, name, generation=info.generation)

        def read(start: int, end: int) -> bytes:
            return blob.download_as_bytes(start=start, end=end, checksum=None)

        transfer = Transfer(size=info.size)
        self.last_transfer = transfer
        with serve_object(name, info.size, info.content_type, read, transfer) as url:
            yield url

    # -- writes --------------------------------------------------------------------------
    def _prepare(
        self, bucket: str, name: str, metadata: dict[str, str] | None, **kwargs: Any
    ) -> storage.Blob:
        blob = self._blob(bucket, name, **kwargs)
        blob.metadata = dict(metadata) if metadata else None
        return blob

    def write_bytes(
        self,
        bucket: str,
        name: str,
        data: bytes,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: dict[str, str] | None = None,
        if_generation_match: int | None = None,
    ) -> ObjectInfo:
        blob = self._prepare(bucket, name, metadata)
        with self._errors(bucket, name):
            blob.upload_from_string(
                data,
                content_type=_content_type(name, content_type),
                if_generation_match=if_generation_match,
            )
        return self._info(blob)

    def upload_file(
        self,
        bucket: str,
        name: str,
        path: Path,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: dict[str, str] | None = None,
        if_generation_match: int | None = None,
    ) -> ObjectInfo:
        size = Path(path).stat().st_size
        if if_generation_match is not None and size > MULTIPART_LIMIT:
            # The server checks the precondition when the upload completes; checking first
            # too saves sending gigabytes that would be refused at the end.
            self._check_generation(bucket, name, if_generation_match)
        blob = self._prepare(bucket, name, metadata, chunk_size=CHUNK_SIZE)
        with self._errors(bucket, name):
            blob.upload_from_filename(
                str(path),
                content_type=_content_type(name, content_type),
                if_generation_match=if_generation_match,
            )
        return self._info(blob)

    def _check_generation(self, bucket: str, name: str, expected: int) -> None:
        try:
            have = self.stat(bucket, name).generation
        except NotFound:
            have = 0
        if have != expected:
            raise PreconditionFailed(
                f"{self.uri(bucket, name)}: generation is {have}, expected {expected}"
            )

    def delete(self, bucket: str, name: str) -> None:
        blob = self._blob(bucket, name)
        with self._errors(bucket, name):
            blob.delete()
