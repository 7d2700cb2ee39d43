"""No function in batch_jobs/, processors/ or manifests/ runs over 60 lines: a longer one is
split into named stages (batch_jobs/task.py's worker is the model), so each reads at a glance.

Measured by ast, a function from its `def` (decorators excluded) to its last line, nested ones
counted on their own as well as inside their parent."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("batch_jobs", "processors", "manifests")
MAX_LINES = 60
# Functions that cannot be split without losing what they say, with the reason. Empty: every
# one fits today; an entry here is a decision, not a way round the rule.
ALLOWED: dict[str, str] = {}


def long_functions(root: Path, limit: int = MAX_LINES) -> list[tuple[int, str]]:
    """(lines, 'path:line name') of every function over `limit` lines, longest first."""
    found = []
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > limit:
                        where = f"{path.relative_to(root).as_posix()}:{node.name}"
                        found.append((lines, where))
    return sorted(found, reverse=True)


def test_no_function_over_sixty_lines() -> None:
    too_long = [f"{where} ({lines} lines)" for lines, where in long_functions(ROOT)
                if where not in ALLOWED]  # fmt: skip
    assert too_long == []


def test_the_check_sees_a_long_function(tmp_path: Path) -> None:
    (tmp_path / "batch_jobs").mkdir()
    body = "".join(f"    x{n} = {n}\n" for n in range(MAX_LINES))  # def + 60 lines: 61
    (tmp_path / "batch_jobs" / "long.py").write_text(
        f"def long():\n{body}\n\ndef short():\n    pass\n"
    )
    assert long_functions(tmp_path) == [(MAX_LINES + 1, "batch_jobs/long.py:long")]
