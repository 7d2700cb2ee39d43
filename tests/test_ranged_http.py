"""The loopback HTTP server ffmpeg reads stored objects through: byte ranges as HTTP defines
them, and no more fetched from storage than the reader takes (plus one window)."""

from __future__ import annotations

import http.client
import os
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

import pytest

from core.storage.ranged_http import FIRST_WINDOW, Transfer, parse_range, serve_object

DATA = os.urandom(3 << 20) + bytes(range(256)) * 4096  # 4 MiB


def read(start: int, end: int) -> bytes:
    return DATA[start : end + 1]


def get(url: str, range_header: str | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers={"Range": range_header} if range_header else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), b""


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-", (0, 99)),
        ("bytes=10-19", (10, 19)),
        ("bytes=90-500", (90, 99)),
        ("bytes=-5", (95, 99)),
        ("bytes=-500", (0, 99)),
        ("bytes=0-1,5-6", None),  # several ranges: the whole object, as servers may answer
    ],
)
def test_range_headers_are_read_as_http_defines_them(header, expected) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=150-200", "bytes=-0", "bytes=20-10"])
def test_unsatisfiable_ranges_are_refused(header: str) -> None:
    with pytest.raises(ValueError):
        parse_range(header, 100)


def test_whole_object_ranges_and_refusals_over_http() -> None:
    with serve_object("c7/talk.mp4", len(DATA), "video/mp4", read) as url:
        assert url.endswith("/talk.mp4")
        status, headers, body = get(url)
        assert (status, body == DATA, headers["Accept-Ranges"]) == (200, True, "bytes")
        status, headers, body = get(url, "bytes=1000-1999")
        assert (status, body) == (206, DATA[1000:2000])
        assert headers["Content-Range"] == f"bytes 1000-1999/{len(DATA)}"
        status, _, body = get(url, f"bytes={len(DATA) - 10}-")
        assert (status, body) == (206, DATA[-10:])
        status, headers, _ = get(url, f"bytes={len(DATA)}-")
        assert (status, headers["Content-Range"]) == (416, f"bytes */{len(DATA)}")
        parsed = urlparse(url)
        assert get(f"{parsed.scheme}://{parsed.netloc}/guess/talk.mp4")[0] == 404


def test_a_reader_that_hangs_up_stops_the_fetching() -> None:
    big = 64 << 20
    transfer = Transfer(size=big)

    def slow_read(start: int, end: int) -> bytes:
        time.sleep(0.02)  # storage is never instant: ffmpeg's hang-up lands between windows
        return b"\x00" * (end - start + 1)

    with serve_object("big.mp4", big, "video/mp4", slow_read, transfer) as url:
        parsed = urlparse(url)
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        connection.request("GET", parsed.path, headers={"Range": "bytes=0-"})
        response = connection.getresponse()
        assert len(response.read(100)) == 100
        response.close()
        connection.close()  # what ffmpeg does at a seek
        time.sleep(1.0)
        print(f"\nfetched {transfer.fetched} of {big} after reading 100 bytes")
        # The window it was sent, and at most the next one fetched while it hung up.
        assert transfer.fetched <= FIRST_WINDOW + 2 * FIRST_WINDOW
