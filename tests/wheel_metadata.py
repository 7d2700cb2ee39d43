"""A locked wheel's own METADATA, read from the registry: the file the lock pins (its version
and one of its sha256 hashes), found in PyPI's JSON simple index, and only its METADATA member
read out of the zip with HTTP range requests (onnxruntime-gpu and torch publish no separate
PEP 658 metadata, and their wheels are hundreds of MB). Read once, then kept in
`.cache/wheel-metadata/<sha256>.<member>`; the registry, not this machine's pip configuration
(local indexes, find-links, constraints), is what is read. `wheel_member` reads any other file
the same way (torchvision states its CUDA only in `torchvision/version.py`).
"""

from __future__ import annotations

import email.parser
import io
import json
import re
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "wheel-metadata"
INDEX = "https://pypi.org/simple"
TIMEOUT = 60
# The image's interpreter (Ubuntu 24.04: CPython 3.12) on x86_64: its own ABI or a pure/stable one.
IMAGE_WHEEL = r"-(?:cp312-cp312|py3-none)-manylinux[^-]*x86_64\.whl$"


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: frozenset[str]


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(path: Path) -> dict[str, Pin]:
    """`name==version` and its `--hash=sha256:…` lines, as uv and pip-tools write them."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pins = {}
    for line in text.splitlines():
        found = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)", line)
        if found:
            name = normal(found.group(1))
            hashes = frozenset(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
            pins[name] = Pin(name, found.group(2), hashes)
    return pins


class _Ranges(io.RawIOBase):
    """A remote file, readable and seekable through HTTP range requests."""

    def __init__(self, url: str, size: int) -> None:
        self.url, self.size, self.pos = url, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        end = min(self.pos + len(buffer), self.size)
        if end <= self.pos:
            return 0
        request = urllib.request.Request(self.url, headers={"Range": f"bytes={self.pos}-{end - 1}"})
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            if response.status != 206:
                raise OSError(f"{self.url}: no range support (HTTP {response.status})")
            data = response.read()
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


def _index_file(pin: Pin, tag: str) -> dict:
    """The index's entry for the pinned wheel for `tag` (say `cp312-…manylinux…x86_64`) whose
    sha256 is one of the lock's."""
    request = urllib.request.Request(
        f"{INDEX}/{pin.name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        files = json.load(response)["files"]
    prefix = f"{pin.name.replace('-', '_')}-{pin.version}-"
    matching = [
        f
        for f in files
        if f["filename"].lower().startswith(prefix)
        and re.search(tag, f["filename"])
        and f["hashes"].get("sha256") in pin.hashes
    ]
    if not matching:
        raise LookupError(f"no {tag} wheel of {pin.name}=={pin.version} with a locked hash")
    return matching[0]


def wheel_member(pin: Pin, member: str, tag: str = IMAGE_WHEEL) -> str:
    """The text of the first file in the locked wheel whose path matches `member` (a regex)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    key = re.sub(r"[^A-Za-z0-9]+", "_", member).strip("_")
    for digest in sorted(pin.hashes):
        cached = CACHE / f"{digest}.{key}"
        if cached.is_file():
            return cached.read_text()
    entry = _index_file(pin, tag)
    remote = io.BufferedReader(_Ranges(entry["url"], entry["size"]), buffer_size=1 << 18)
    with zipfile.ZipFile(remote) as wheel:
        [name] = [n for n in wheel.namelist() if re.fullmatch(member, n)][:1]
        text = wheel.read(name).decode()
    (CACHE / f"{entry['hashes']['sha256']}.{key}").write_text(text)
    return text


def wheel_metadata(pin: Pin, tag: str = IMAGE_WHEEL) -> list[str]:
    """The Requires-Dist lines of the locked wheel's METADATA."""
    text = wheel_member(pin, r"[^/]+\.dist-info/METADATA", tag)
    return email.parser.Parser().parsestr(text).get_all("Requires-Dist") or []


def cuda_majors(requires: list[str]) -> tuple[set[tuple[int, int | None]], set[int]]:
    """(CUDA (major, minor-or-None) pairs, cuDNN majors) a wheel's requirements name:
    `nvidia-cuda-runtime-cu13~=13.0`, `cuda-toolkit[…]==13.0.3`, `nvidia-cudnn-cu13~=9.0`."""
    cuda: set[tuple[int, int | None]] = set()
    cudnn: set[int] = set()
    for line in requires:
        found = re.match(r"\s*([A-Za-z0-9._-]+)\s*(?:\[[^\]]*\])?\s*([^;]*)", line)
        name, spec = normal(found.group(1)), found.group(2)
        version = re.search(r"(?:==|~=|>=)\s*(\d+)(?:\.(\d+))?", spec)
        if name in ("cuda-toolkit", "nvidia-cuda-runtime") or re.fullmatch(
            r"nvidia-cuda-runtime-cu\d+", name
        ):
            if version:
                cuda.add((int(version.group(1)), int(version.group(2) or 0)))
            else:
                cuda.add((int(re.search(r"cu(\d+)$", name).group(1)), None))
        elif re.fullmatch(r"nvidia-cudnn-cu\d+", name) and version:
            cudnn.add(int(version.group(1)))
    return cuda, cudnn
