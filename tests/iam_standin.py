"""A local stand-in for the IAM policy reads `dropbatch doctor --canary` makes outside Cloud
Storage: `getIamPolicy` of a Pub/Sub topic (GET, as Pub/Sub's REST API has it), of a service
account (IAM API) and of a project (Resource Manager), over HTTP on loopback, answering each
resource's policy JSON as Google's APIs do (`version`, `etag`, `bindings` with conditions).
Bucket policies are served by the storage front (tests/storage_notifications.py) on the JSON
API's own path, so the google-cloud-storage client reads them.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SUFFIX = ":getIamPolicy"


class IamStandin:
    def __init__(self) -> None:
        self.policies: dict[str, dict] = {}  # resource (projects/P/…) → policy JSON
        self.reads: list[str] = []  # every resource read, in order
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = self.path.split("?", 1)[0]
                status, body = 404, {"error": {"code": 404, "message": f"{path}: not found"}}
                if path.startswith("/v1/") and path.endswith(SUFFIX):
                    resource = path[len("/v1/") : -len(SUFFIX)]
                    standin.reads.append(resource)
                    if resource in standin.policies:
                        status, body = (
                            200,
                            {"version": 3, "etag": "BwY=", **standin.policies[resource]},
                        )
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
