"""README's configuration table and core/config.py agree: every setting is documented
under its environment name and file key, with its real default."""

from __future__ import annotations

import re
from pathlib import Path

from core.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent


def table_rows() -> dict[str, tuple[str, str]]:
    """env name (without DROPBATCH_) -> (file key or "", default cell) of the table's rows."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        found = re.fullmatch(r"`([A-Z_]+)`(?: / `([a-z_]+)`)?.*", cells[0]) if cells else None
        if found and len(cells) == 3:
            rows[found[1]] = (found[2] or "", cells[1])
    return rows


def test_every_setting_is_in_the_readme_table_under_its_names() -> None:
    rows = table_rows()
    for name in Settings.model_fields:
        assert name.upper() in rows, f"{ENV_PREFIX}{name.upper()} is not in README's table"
        assert rows[name.upper()][0] == name, f"{name.upper()}: file key should be `{name}`"
    documented = {env for env, (key, _) in rows.items() if key}
    assert documented == {name.upper() for name in Settings.model_fields}


def test_the_table_shows_each_plain_default() -> None:
    rows = table_rows()
    for name, field in Settings.model_fields.items():
        default = field.default
        if default in (None, "") or isinstance(default, Path):
            continue  # derived or unset: the table says what happens instead
        if isinstance(default, bool):
            shown = str(default).lower()
        elif isinstance(default, float):
            shown = f"{default:g}"
        else:
            shown = str(default)
        cell = rows[name.upper()][1]
        assert f"`{shown}`" in cell, f"{name.upper()}: default {shown!r}, README says {cell!r}"
