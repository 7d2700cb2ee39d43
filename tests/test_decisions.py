"""docs/decisions/ stays a record one can look a decision up in: one short file per decision
with the same sections, numbered 0001.. without gaps, every one in the index (and nothing else),
and every reference to a record, anywhere in the repository, naming a file that exists."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DECISIONS = ROOT / "docs" / "decisions"
RECORD_NAME = re.compile(r"(\d{4})-[a-z0-9]+(?:-[a-z0-9]+)*\.md")
SECTIONS = (
    "**Context.**",
    "**Decision.**",
    "**Alternatives weighed.**",
    "**Status:**",
    "**Date:**",
)
MAX_LINES = 20
# Built from parts so that this file does not itself name the notebook the records replaced.
OLD_NOTEBOOK = "DESIGN" + "-DECISIONS"
OUTSIDE = "../" + "shared"
# Where a record can be named from: a repository path, a path relative to docs/, or a link
# from a file beside the records.
REFERENCE = re.compile(r"(?:docs/)?decisions/(\d{4}-[A-Za-z0-9._-]+?\.md)")
LOCAL_LINK = re.compile(r"\]\((\d{4}-[A-Za-z0-9._-]+?\.md)\)")


def records() -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in sorted(DECISIONS.glob("*.md")):
        if path.name == "README.md":
            continue
        match = RECORD_NAME.fullmatch(path.name)
        assert match, f"{path.name}: a record is named NNNN-short-slug.md"
        number = int(match[1])
        assert number not in found, f"{path.name} and {found[number].name} share a number"
        found[number] = path
    return found


def repository_files() -> list[Path]:
    """The files a checkout holds: git's view (tracked, and new files not ignored) when this is
    a git work tree, else every file outside hidden folders."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        names = [name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        names = []
        for folder, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
            names += [os.path.relpath(os.path.join(folder, f), ROOT) for f in files]
    return [ROOT / name for name in names if (ROOT / name).is_file()]


def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # binary (video, images) or unreadable: holds no reference


def test_records_are_numbered_from_one_without_gaps() -> None:
    numbers = sorted(records())
    assert numbers, "docs/decisions/ holds no record"
    assert numbers == list(range(1, len(numbers) + 1)), f"gaps or a wrong start: {numbers}"


def test_every_record_has_its_sections_and_stays_short() -> None:
    all_records = records()
    for number, path in all_records.items():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        assert lines[0].startswith(f"# {number:04d}. "), (
            f"{path.name}: title is '# NNNN. <decision>'"
        )
        assert len(lines[0]) > len(f"# {number:04d}. ") + 10, f"{path.name}: the title states it"
        for section in SECTIONS:
            assert text.count(section) == 1, f"{path.name}: needs exactly one {section}"
        assert len(lines) <= MAX_LINES, f"{path.name}: {len(lines)} lines (at most {MAX_LINES})"
        assert re.search(r"\*\*Date:\*\* \d{4}-\d{2}-\d{2}\b", text), f"{path.name}: Date"
        status = re.search(r"\*\*Status:\*\* (.*?)(?: ·|$)", text, re.M)
        assert status, f"{path.name}: Status"
        superseded = re.fullmatch(r"superseded by \[(\d{4})\]\((\d{4})-[^)]+\.md\)", status[1])
        assert status[1].startswith("accepted") or superseded, (
            f"{path.name}: status is 'accepted' or 'superseded by [NNNN](NNNN-….md)', "
            f"not {status[1]!r}"
        )
        if superseded:
            assert superseded[1] == superseded[2] and int(superseded[1]) in all_records, (
                f"{path.name}: superseded by a record that does not exist"
            )


def test_the_index_lists_every_record_and_only_those() -> None:
    index = (DECISIONS / "README.md").read_text(encoding="utf-8")
    rows = [line for line in index.splitlines() if re.match(r"\| \d{4} \|", line)]
    listed: dict[str, str] = {}
    dates: dict[str, str] = {}
    for row in rows:
        number, title, status, date = [cell.strip() for cell in row.strip("|").split("|")]
        link = re.fullmatch(r"\[.+\]\(((\d{4})-[^)]+\.md)\)", title)
        assert link and link[2] == number, f"index row {number}: links its own record"
        assert link[1] not in listed, f"{link[1]} is listed twice"
        listed[link[1]] = status
        dates[link[1]] = date
    names = {path.name: path for path in records().values()}
    unknown, unlisted = sorted(set(listed) - set(names)), sorted(set(names) - set(listed))
    assert not unknown, f"the index lists records that do not exist: {unknown}"
    assert not unlisted, f"records missing from the index: {unlisted}"
    for name, status in listed.items():
        record = names[name].read_text(encoding="utf-8")
        word = "accepted" if status == "accepted" else f"superseded by [{status[-4:]}]"
        assert f"**Status:** {word}" in record, f"{name}: the index says {status!r}"
        assert f"**Date:** {dates[name]}" in record, f"{name}: the index says {dates[name]}"


def test_every_record_named_in_the_repository_exists() -> None:
    existing = {path.name for path in records().values()}
    missing = []
    for path in repository_files():
        text = text_of(path)
        if text is None:
            continue
        named = set(REFERENCE.findall(text))
        if path.parent == DECISIONS:
            named |= set(LOCAL_LINK.findall(text))
        missing += [f"{path.relative_to(ROOT)} names {name}" for name in named - existing]
    assert missing == []


def test_nothing_points_at_the_old_notebook_or_outside_the_repository() -> None:
    assert not (ROOT / "docs" / f"{OLD_NOTEBOOK}.md").exists()
    offenders = []
    for path in repository_files():
        text = text_of(path)
        if text is None:
            continue
        offenders += [
            f"{path.relative_to(ROOT)}: {word}" for word in (OLD_NOTEBOOK, OUTSIDE) if word in text
        ]
    assert offenders == []
