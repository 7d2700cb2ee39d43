"""Serve one stored object to ffmpeg/ffprobe over loopback HTTP, with byte ranges.

ffmpeg's http protocol seeks with `Range` requests, so probing a video reads its headers and
a task decodes only its chunk. Each request is answered from storage in growing windows
(64 KiB doubling to 2 MiB): the first reads after a seek stay small, a long sequential read
gets large requests, and when ffmpeg hangs up (it does, at every seek) we notice before
fetching the next window, so at most the window in flight is wasted.
Reading through our own client (instead of a signed URL) needs no signing permission and
works the same against an emulator.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import re
import secrets
import select
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

log = logging.getLogger("dropbatch.storage.http")

FIRST_WINDOW = 64 << 10
MAX_WINDOW = 2 << 20
SEND_BUFFER = 256 << 10
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")

# (start, end inclusive) -> the bytes of the object in that range
ReadRange = Callable[[int, int], bytes]


@dataclass
class Transfer:
    """What one served object cost: bytes fetched from storage and sent to the reader."""

    size: int
    fetched: int = 0
    sent: int = 0
    requests: int = 0


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single `bytes=` range; None for the whole object.

    Raises ValueError when the range lies outside the object (HTTP 416).
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None  # multi-range or malformed: serve the whole object, as servers may
    first, last = match.group(1), match.group(2)
    if not first:  # a suffix range: the last N bytes
        length = int(last)
        if length == 0:
            raise ValueError("empty suffix range")
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise ValueError(f"range {header} outside 0..{size - 1}")
    return start, end


def _handler(path: str, size: int, content_type: str, read: ReadRange, transfer: Transfer):
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass  # ffmpeg opens a connection per seek; one log line each would be noise

        def setup(self) -> None:
            super().setup()
            # Little in flight: what ffmpeg never reads before a seek is not fetched for it.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            if self.path != path:
                self.send_error(404)
                return
            try:
                wanted = parse_range(self.headers.get("Range"), size)
            except ValueError:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = wanted if wanted else (0, size - 1)
            self.send_response(206 if wanted else 200)
            self.send_header("Content-Type", content_type)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(max(0, end - start + 1)))
            if wanted:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if body and size:
                self._stream(start, end)

        def _stream(self, start: int, end: int) -> None:
            window, position = FIRST_WINDOW, start
            with lock:
                transfer.requests += 1
            while position <= end:
                if position > start and self._reader_left():
                    return
                last = min(end, position + window - 1)
                data = read(position, last)
                with lock:
                    transfer.fetched += len(data)
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    return  # ffmpeg seeked elsewhere or has what it needs
                with lock:
                    transfer.sent += len(data)
                if len(data) < last - position + 1:
                    return  # the object ended early (it cannot change: reads are pinned)
                position = last + 1
                window = min(window * 2, MAX_WINDOW)

        def _reader_left(self) -> bool:
            """ffmpeg sends nothing after its request: a readable socket means it hung up."""
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            try:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                return True

    return Handler


@contextlib.contextmanager
def serve_object(
    name: str, size: int, content_type: str, read: ReadRange, transfer: Transfer | None = None
) -> Iterator[str]:
    """A URL on 127.0.0.1 that serves the object until the block ends.

    The path carries a random token (other local users cannot guess it) and the object's
    base name, whose extension ffmpeg uses as a format hint.
    """
    transfer = transfer or Transfer(size=size)
    path = f"/{secrets.token_urlsafe(16)}/{quote(posixpath.basename(name) or 'object')}"
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), _handler(path, size, content_type, read, transfer)
    )
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="ranged-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}"
    finally:
        server.shutdown()
        server.server_close()
        log.debug(
            "served %s: fetched %d of %d bytes in %d request(s)",
            name,
            transfer.fetched,
            size,
            transfer.requests,
        )
