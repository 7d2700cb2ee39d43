"""README's "Quality of the face steps" shows before/after images (docs/quality/*.jpg) that
bench/quality_previews.py makes: every image the section references exists, is a readable
JPEG within the size limits, and the script makes exactly those names (so renaming one in
either place, or dropping an image, fails here). Fast: nothing is rerun, only files are read."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "docs" / "quality"
MAX_HEIGHT = 480  # px: panels are side by side, each at most this tall
MAX_TOTAL = 600 * 1024  # bytes, every image together


def quality_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Quality of the face steps\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def referenced() -> list[str]:
    return re.findall(r"\]\(docs/quality/([^)\s]+)\)", quality_section())


def script_names() -> list[str]:
    spec = importlib.util.spec_from_file_location(
        "quality_previews", ROOT / "bench" / "quality_previews.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines functions only: no model runs on import
    return list(module.PREVIEWS)


def test_readme_shows_exactly_the_images_the_script_makes() -> None:
    names = referenced()
    assert names, "README's quality section references no docs/quality image"
    assert len(names) == len(set(names)), names
    assert sorted(names) == sorted(script_names())
    # Nothing stale beside them: an image renamed in both places leaves no orphan behind.
    assert sorted(p.name for p in FOLDER.iterdir()) == sorted(names)


def test_every_image_is_a_small_readable_jpeg() -> None:
    total = 0
    for name in referenced():
        path = FOLDER / name
        assert path.is_file(), f"README references docs/quality/{name}, which does not exist"
        data = path.read_bytes()
        total += len(data)
        assert name.endswith(".jpg") and data[:3] == b"\xff\xd8\xff", f"{name} is not a JPEG"
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None, f"{name} cannot be decoded"
        height, width = image.shape[:2]
        assert height <= MAX_HEIGHT, f"{name} is {height} px tall"
        assert width >= 2 * 64, f"{name} is {width} px wide: not two panels side by side"
    assert total <= MAX_TOTAL, f"docs/quality/ images take {total // 1024} KB"
