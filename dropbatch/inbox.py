"""Which local inbox a path is in, and the settings that open that inbox's one store.

A local inbox is a folder holding `.dropbatch/INBOX`; the rest of `.dropbatch/` is its store
(status.sqlite, the work bucket `work/`, object metadata, locks). Every command finds the inbox
the way git finds `.git`: the nearest folder at or above a path (or the working directory) that
holds the marker. The inbox folder is a bucket: the store's root is its parent, the bucket its
name, an object's name its path inside the inbox
(docs/decisions/0075-one-store-per-local-inbox.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core.config import Settings

STATE_DIR = ".dropbatch"  # also the local store's state folder (core.storage.local)
MARKER = "INBOX"
MARKER_TEXT = (
    "This folder is a dropbatch inbox. Beside this file is its store: status.sqlite (every job\n"
    "of the inbox), work/ (chunk parts, output-name claims), meta/ and locks/. Every dropbatch\n"
    "command run on a path inside the inbox uses it. Deleting .dropbatch/ forgets the jobs.\n"
)


@dataclass(frozen=True)
class LocalInbox:
    """A local inbox folder (absolute, symbolic links resolved) and where its store is."""

    folder: Path

    @property
    def bucket(self) -> str:
        return self.folder.name

    @property
    def root(self) -> Path:
        return self.folder.parent

    @property
    def state(self) -> Path:
        return self.folder / STATE_DIR

    def object_name(self, path: Path) -> str:
        """The object name of a path inside the inbox ('' for the inbox itself)."""
        relative = _absolute(path).relative_to(self.folder).as_posix()
        return "" if relative == "." else relative

    def store_settings(self) -> dict[str, object]:
        """The settings that make storage, status and tasks use this inbox's store."""
        return {
            "storage": "local",
            "local_root": self.root,
            "local_state": self.state,
        }

    def mark(self) -> None:
        """Make the folder an inbox (idempotent): the marker, and the store folder beside it."""
        self.state.mkdir(parents=True, exist_ok=True)
        marker = self.state / MARKER
        if not marker.is_file():
            marker.write_text(MARKER_TEXT)


def _absolute(path: Path) -> Path:
    """The path with symbolic links resolved, also where its end does not exist (a deleted
    manifest): the commands and the store must name a folder the same way."""
    return Path(path).expanduser().resolve()


def is_inbox(folder: Path) -> bool:
    return (folder / STATE_DIR / MARKER).is_file()


def find_inbox(path: Path) -> LocalInbox | None:
    """The inbox `path` (a file, a folder, or something deleted) is in: the nearest folder at
    or above it holding the marker; None when there is none."""
    here = _absolute(path)
    for folder in (here, *here.parents):
        if is_inbox(folder):
            return LocalInbox(folder)
    return None


def inboxes_near(cwd: Path) -> list[LocalInbox]:
    """The inboxes a command run in `cwd` without a path means: the one `cwd` is in, else
    those directly in `cwd` (`dropbatch serve --inbox ./inbox` is started beside its inbox,
    and `dropbatch status ID` beside it should find its jobs)."""
    found = find_inbox(cwd)
    if found is not None:
        return [found]
    try:
        children = sorted(entry.path for entry in os.scandir(cwd) if entry.is_dir())
    except OSError:
        return []
    return [LocalInbox(_absolute(Path(child))) for child in children if is_inbox(Path(child))]


def inbox_for_manifest(manifest: Path) -> LocalInbox:
    """The inbox a manifest is in; when no folder above it is one yet, its own folder (as a
    first `dropbatch run` makes it)."""
    return find_inbox(manifest.parent) or LocalInbox(_absolute(manifest.parent))


def nested_inboxes(inbox: LocalInbox, names: list[str]) -> set[str]:
    """The folders (object names with a trailing '/') among `names`' folders that are inboxes
    of their own: nearest marker wins, so their objects belong to their own store."""
    folders: set[str] = set()
    for name in names:
        parts = name.split("/")[:-1]
        folders.update("/".join(parts[: i + 1]) + "/" for i in range(len(parts)))
    return {folder for folder in folders if is_inbox(inbox.folder / folder)}


def legacy_store(inbox: LocalInbox) -> Path | None:
    """The status file `dropbatch serve --inbox` kept beside the inbox before inboxes had a
    store of their own (`<parent>/.dropbatch/status.sqlite`), if there is one."""
    old = inbox.root / STATE_DIR / "status.sqlite"
    return old if old.is_file() and not is_inbox(inbox.root) else None


def settings_for(inbox: LocalInbox, base: Settings, **overrides: object) -> Settings:
    """`base` (the user's DROPBATCH_* settings) with this inbox's store and local tasks."""
    update = {**inbox.store_settings(), "launcher": "local", **overrides}
    return base.model_copy(update=update)
