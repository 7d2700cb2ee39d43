"""How the launcher reaches Cloud Batch: a regional or private endpoint through the client's
`client_options` over TLS with credentials, and the plaintext stand-in switch only by its own
name. The TLS side runs against the Batch stand-in serving a certificate made here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_jobs.batch_launcher import batch_client
from batch_jobs.launcher import LaunchError
from core.config import Settings
from tests.batch_standin import BatchStandin

ROOT = Path(__file__).resolve().parent.parent
JOB = "projects/acme-video/locations/us-central1/jobs/missing"

# In its own interpreter: gRPC reads its root certificates (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH)
# once per process, and this process may already have opened TLS channels with the system's.
CLIENT = """
import json, sys
from google.api_core import exceptions
from google.oauth2.credentials import Credentials
from batch_jobs.batch_launcher import batch_client
from core.config import Settings

client = batch_client(Settings.from_env(), credentials=Credentials(token="endpoint-test-token"))
try:
    client.get_job(name=sys.argv[1], retry=None, timeout=20)
    outcome = "found"
except exceptions.GoogleAPICallError as exc:
    outcome = type(exc).__name__
print(json.dumps({"outcome": outcome, "host": client._transport._host}))
"""


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


@pytest.fixture
def tls_standin(certificate: tuple[Path, Path]) -> Iterator[BatchStandin]:
    key, cert = certificate
    server = BatchStandin(run_jobs=False, tls=(key.read_bytes(), cert.read_bytes()))
    server.start()
    yield server
    server.stop()


def call(settings: dict[str, str], roots: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPBATCH_")}
    env.update(settings, PYTHONPATH=str(ROOT), GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=str(roots))
    result = subprocess.run(
        [sys.executable, "-c", CLIENT, JOB],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout)


def test_an_api_endpoint_goes_over_tls_with_credentials(
    tls_standin: BatchStandin, certificate: tuple[Path, Path]
) -> None:
    reply = call({"DROPBATCH_BATCH_API_ENDPOINT": tls_standin.endpoint}, certificate[1])
    assert reply == {"outcome": "NotFound", "host": tls_standin.endpoint}  # it was answered
    [metadata] = tls_standin.metadata
    assert metadata["authorization"] == "Bearer endpoint-test-token"


def test_the_plaintext_emulator_switch_cannot_reach_a_tls_endpoint(
    tls_standin: BatchStandin, certificate: tuple[Path, Path]
) -> None:
    reply = call({"DROPBATCH_BATCH_EMULATOR_HOST": tls_standin.endpoint}, certificate[1])
    assert reply["outcome"] == "ServiceUnavailable"
    assert tls_standin.metadata == []


def test_the_emulator_switch_is_plaintext_without_credentials(
    certificate: tuple[Path, Path],
) -> None:
    plain = BatchStandin(run_jobs=False)
    plain.start()
    try:
        reply = call({"DROPBATCH_BATCH_EMULATOR_HOST": plain.endpoint}, certificate[1])
        assert reply["outcome"] == "NotFound"
        [metadata] = plain.metadata
        assert "authorization" not in metadata
        # The TLS path does not talk to a plaintext server.
        reply = call({"DROPBATCH_BATCH_API_ENDPOINT": plain.endpoint}, certificate[1])
        assert reply["outcome"] == "ServiceUnavailable"
        assert len(plain.metadata) == 1
    finally:
        plain.stop()


def test_both_switches_at_once_are_refused_by_name() -> None:
    settings = Settings(
        batch_emulator_host="127.0.0.1:1", batch_api_endpoint="batch.us-central1.rep.googleapis.com"
    )
    with pytest.raises(LaunchError, match="DROPBATCH_BATCH_EMULATOR_HOST and DROPBATCH_BATCH_API"):
        batch_client(settings)
