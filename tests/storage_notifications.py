"""Cloud Storage's object notifications for fake-gcs-server, which has none of its own (its
events need a Pub/Sub emulator): an HTTP front every client talks to instead of the server.

Every upload the server completes (a multipart upload, or the last request of a resumable one,
answered with the new object's resource) is an `object.finalized` in that bucket. For a
watched bucket the front delivers it as Eventarc does for a storage trigger: one CloudEvent per
finalized object version, whoever wrote it, after the write has returned, concurrently. Every
other request passes through unchanged, except that the front can refuse reads of an object,
as storage does when a permission or key is missing.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cloudevents.http import CloudEvent

FINALIZED = "google.cloud.storage.object.v1.finalized"
UPLOAD_PATH = "/upload/storage/v1/b/"


def finalized_event(resource: dict) -> CloudEvent:
    """The CloudEvent Eventarc delivers for a finalized object: the object's resource as the
    JSON API returns it (int64 fields as strings) is the data."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    bucket, name = resource["bucket"], resource["name"]
    return CloudEvent(
        {
            "type": FINALIZED,
            "source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
            "subject": f"objects/{name}",
            "id": f"{bucket}/{name}/{resource['generation']}",
            "time": now,
        },
        resource,
    )


@dataclass
class Delivery:
    bucket: str
    name: str
    generation: int
    metadata: dict[str, str]
    status: int = 0  # the function's HTTP answer; 0 while in flight
    seconds: float = 0.0


class StorageNotifications:
    """The front: `host` goes into STORAGE_EMULATOR_HOST of everything that talks to storage;
    `watch(bucket, deliver)` subscribes a function (`deliver(event) -> HTTP status`)."""

    def __init__(self, target: str, workers: int = 4) -> None:
        self.target = target.rstrip("/")
        parsed = urllib.parse.urlsplit(self.target)
        self._target_address = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self._watched: dict[str, Callable[[CloudEvent], int]] = {}
        self._refused: set[tuple[str, str]] = set()
        self._slow: dict[tuple[str, str], float] = {}  # object → seconds each data read waits
        self._closing = threading.Event()
        # Bucket IAM policies (fake-gcs-server has none): bucket → the policy JSON the JSON
        # API's `GET /storage/v1/b/B/iam` answers.
        self.bucket_policies: dict[str, dict] = {}
        self.finalized: list[dict] = []  # every object version the server finalized, in order
        self.deliveries: list[Delivery] = []
        self._lock = threading.Condition()
        self._queue: queue.Queue[dict | None] = queue.Queue()
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _relay(self) -> None:
                front._relay(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _relay

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.host = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._threads = [threading.Thread(target=self._server.serve_forever, daemon=True)]
        self._threads += [
            threading.Thread(target=self._deliver_loop, daemon=True) for _ in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    # -- what tests set up and read ------------------------------------------------------
    def watch(self, bucket: str, deliver: Callable[[CloudEvent], int]) -> None:
        with self._lock:
            self._watched[bucket] = deliver

    def refuse_reads(self, bucket: str, name: str) -> None:
        """Answer 403 to every read of this object's metadata or data from now on."""
        with self._lock:
            self._refused.add((bucket, name))

    def slow_reads(self, bucket: str, name: str, seconds: float) -> None:
        """Hold every read of this object's data for `seconds` before serving it (a cold,
        throttled or far-away object); its metadata still answers at once."""
        with self._lock:
            self._slow[(bucket, name)] = seconds

    def wait_delivered(self, bucket: str, name: str, generation: int, timeout: float = 120) -> int:
        """The function's answer to the delivery of that object version (waits for it)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for d in self.deliveries:
                    if (d.bucket, d.name, d.generation) == (bucket, name, generation) and d.status:
                        return d.status
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no delivery of gs://{bucket}/{name}#{generation}")
                self._lock.wait(left)

    def idle(self, timeout: float = 120) -> None:
        """Wait until every finalized object of a watched bucket has been delivered."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("deliveries still in flight")
                self._lock.wait(min(left, 0.1))

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        for _ in self._threads[1:]:
            self._queue.put(None)

    # -- the relay -----------------------------------------------------------------------
    def _relay(self, handler: BaseHTTPRequestHandler) -> None:
        body = _request_body(handler)
        if handler.command == "GET" and self._is_refused(handler.path):
            _answer(handler, 403, b'{"error": {"code": 403, "message": "Forbidden"}}', {})
            return
        if handler.command == "GET" and "alt=media" in handler.path:
            self._closing.wait(self._slowness(handler.path))
        policy = self._bucket_policy(handler)
        if policy is not None:
            _answer(handler, *policy, {"Content-Type": "application/json"})
            return
        connection = http.client.HTTPConnection(*self._target_address, timeout=120)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() != "host"}
            headers["Host"] = f"{self._target_address[0]}:{self._target_address[1]}"
            headers.pop("Transfer-Encoding", None)
            headers["Content-Length"] = str(len(body))
            connection.request(handler.command, handler.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            out_headers = {k: v for k, v in response.getheaders()}
        finally:
            connection.close()
        # Links the server hands out (a resumable session's Location) must lead back here.
        data = data.replace(self.target.encode(), self.host.encode())
        for key, value in list(out_headers.items()):
            out_headers[key] = value.replace(self.target, self.host)
        if (
            handler.command in ("POST", "PUT")
            and handler.path.startswith(UPLOAD_PATH)
            and response.status in (200, 201)
        ):
            with contextlib.suppress(ValueError):
                resource = json.loads(data)
                # fake-gcs-server answers a resumable upload's middle chunks with a resource
                # of generation 0: only the last one finalizes the object.
                if resource.get("kind") == "storage#object" and int(resource["generation"]):
                    self._finalized(resource)  # queued before the writer hears back
        _answer(handler, response.status, data, out_headers)

    def _bucket_policy(self, handler: BaseHTTPRequestHandler) -> tuple[int, bytes] | None:
        """(status, body) for a read of a bucket's IAM policy; None for any other request."""
        parts = urllib.parse.urlsplit(handler.path).path.split("/")
        # /storage/v1/b/B/iam
        if handler.command != "GET" or len(parts) != 6 or parts[1:4] != ["storage", "v1", "b"]:
            return None
        if parts[5] != "iam":
            return None
        with self._lock:
            policy = self.bucket_policies.get(parts[4])
        if policy is None:
            return 404, b'{"error": {"code": 404, "message": "no policy"}}'
        body = {"kind": "storage#policy", "resourceId": f"projects/_/buckets/{parts[4]}",
                "version": 3, "etag": "CAE=", **policy}  # fmt: skip
        return 200, json.dumps(body).encode()

    def _is_refused(self, path: str) -> bool:
        target = _object_of(path)
        with self._lock:
            return target is not None and target in self._refused

    def _slowness(self, path: str) -> float:
        target = _object_of(path)
        with self._lock:
            return self._slow.get(target, 0.0) if target is not None else 0.0

    def _finalized(self, resource: dict) -> None:
        with self._lock:
            self.finalized.append(resource)
            if resource["bucket"] in self._watched:
                self._queue.put(resource)

    def _deliver_loop(self) -> None:
        while (resource := self._queue.get()) is not None:
            with self._lock:
                deliver = self._watched[resource["bucket"]]
                record = Delivery(
                    resource["bucket"],
                    resource["name"],
                    int(resource["generation"]),
                    dict(resource.get("metadata") or {}),
                )
                self.deliveries.append(record)
            started = time.monotonic()
            try:
                status = deliver(finalized_event(resource))
            except Exception:
                status = 599  # the function could not be reached
            with self._lock:
                record.status, record.seconds = status, time.monotonic() - started
                self._queue.task_done()
                self._lock.notify_all()


def _object_of(path: str) -> tuple[str, str] | None:
    """(bucket, name) of an object's path: /storage/v1/b/B/o/NAME or
    /download/storage/v1/b/B/o/NAME; None for any other path."""
    parts = urllib.parse.urlsplit(path).path.split("/")
    with contextlib.suppress(ValueError, IndexError):  # not an object's path
        at = parts.index("b")
        if parts[at + 2] == "o":
            return parts[at + 1], urllib.parse.unquote("/".join(parts[at + 3 :]))
    return None


def _request_body(handler: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in handler.headers.get("Transfer-Encoding", ""):
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                handler.rfile.readline()
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _answer(handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict) -> None:
    handler.send_response(status)
    skip = {"content-length", "transfer-encoding", "connection"}
    for key, value in headers.items():
        if key.lower() not in skip:
            handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)


@contextlib.contextmanager
def storage_notifications(target: str) -> Iterator[StorageNotifications]:
    front = StorageNotifications(target)
    try:
        yield front
    finally:
        front.close()
