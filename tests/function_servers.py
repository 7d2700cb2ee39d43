"""Serve a built Cloud Functions folder with functions-framework over HTTP on loopback, as its
own process whose imports come from that folder only (no repository on its path)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def function_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra or {})
    return env


class FunctionServer:
    def __init__(self, source: Path, target: str, log: Path) -> None:
        self.source, self.target, self.log = source, target, log
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> FunctionServer:
        self.port = free_port()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "functions_framework",
                    "--target",
                    self.target,
                    "--source",
                    "main.py",
                    "--signature-type",
                    "cloudevent",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                cwd=self.source,
                env=function_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own process group: the server may fork a worker, and stopping or killing
                # it must take the whole group.
                start_new_session=True,
            )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.target} exited: {self.log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.target} did not listen within {timeout} s")

    def post(self, event: CloudEvent, timeout: float = 120) -> int:
        headers, body = to_structured(event)
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def _signal(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """The instance dies at once (SIGKILL), whatever it is doing."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(20)

    def stop(self) -> None:
        if self.proc is None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait(20)
        self._signal(signal.SIGKILL)  # a forked worker that outlived its parent
