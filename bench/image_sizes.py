"""What each Dockerfile.gpu target installs into its virtual environment, measured.

    python bench/image_sizes.py SLIM_VENV [ULTRALYTICS_VENV]

SLIM_VENV: a venv with the `gpu` extra's packages (`pip install ".[gpu]"`, what the slim
target installs). ULTRALYTICS_VENV: any venv with torch and ultralytics installed; the
ultralytics target is the slim one plus every distribution of it that the slim venv lacks.
Sizes are the files each distribution's RECORD lists, as they lie on disk (what `du` of
site-packages adds up to), so the numbers are the image layer's uncompressed size.
"""

from __future__ import annotations

import sys
from importlib.metadata import Distribution, distributions
from pathlib import Path

MB = 1 << 20


def site_packages(venv: Path) -> Path:
    [found] = sorted(venv.glob("lib/python3*/site-packages"))
    return found


def sizes(venv: Path) -> dict[str, int]:
    """distribution name (normalised) -> bytes on disk of its files."""
    root = site_packages(venv)
    out: dict[str, int] = {}
    for dist in distributions(path=[str(root)]):
        name = dist.metadata["Name"].lower().replace("_", "-")
        out[name] = out.get(name, 0) + _bytes(dist, root)
    return out


def _bytes(dist: Distribution, root: Path) -> int:
    total = 0
    for file in dist.files or []:
        path = root / file
        if path.is_file():
            total += path.stat().st_size
    return total


def report(title: str, table: dict[str, int], top: int = 8) -> int:
    total = sum(table.values())
    print(f"{title}: {total / MB:,.0f} MB in {len(table)} distributions")
    for name, size in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {name:32s} {size / MB:8,.0f} MB")
    return total


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    slim = sizes(Path(argv[0]))
    slim_total = report("slim (the gpu extra)", slim)
    if len(argv) > 1:
        extra = {k: v for k, v in sizes(Path(argv[1])).items() if k not in slim}
        extra_total = report("ultralytics adds", extra)
        print(f"ultralytics target: {(slim_total + extra_total) / MB:,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
