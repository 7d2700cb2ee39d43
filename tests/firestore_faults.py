"""A gRPC relay in front of the Firestore emulator that answers some commits ABORTED, the way
real Firestore answers a transaction that lost to a concurrent one (the npm emulator runs
transactions without isolation and never aborts one). Everything else passes through as raw
bytes, so the client talks real Firestore RPCs to a real server."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
from google.cloud.firestore_v1.types import CommitRequest

STREAMING = ("BatchGetDocuments", "RunQuery", "RunAggregationQuery", "PartitionQuery")


class AbortingRelay(grpc.GenericRpcHandler):
    """Relays every RPC to `target`; the first `abort_commits` commits of a transaction are
    answered ABORTED instead (never reaching the emulator, so nothing of theirs is written).
    A plain write (no transaction) is never aborted, as in Firestore."""

    def __init__(self, target: str, abort_commits: int) -> None:
        self.channel = grpc.insecure_channel(target)
        self.to_abort = abort_commits
        self.aborted = 0
        self._lock = threading.Lock()

    def _abort_this(self) -> bool:
        with self._lock:
            if self.aborted < self.to_abort:
                self.aborted += 1
                return True
            return False

    def service(self, call: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = call.method
        if method.rsplit("/", 1)[-1] in STREAMING:
            relay_stream = self.channel.unary_stream(method)
            return grpc.unary_stream_rpc_method_handler(
                lambda request, context: iter(relay_stream(request))
            )
        relay = self.channel.unary_unary(method)

        def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
            if (
                method.endswith("/Commit")
                and CommitRequest.deserialize(request).transaction
                and self._abort_this()
            ):
                context.abort(grpc.StatusCode.ABORTED, "transaction aborted (injected contention)")
            return relay(request)

        return grpc.unary_unary_rpc_method_handler(unary)


@contextlib.contextmanager
def aborting_firestore(target: str, abort_commits: int) -> Iterator[tuple[str, AbortingRelay]]:
    """Yields the relay's FIRESTORE_EMULATOR_HOST value and the relay (its `aborted` count)."""
    relay = AbortingRelay(target, abort_commits)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=[relay])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", relay
    finally:
        server.stop(grace=None)
        relay.channel.close()
