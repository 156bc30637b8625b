"""Small modules: none under services/ or shared/ grows past 350 lines without its docstring saying why
(a line starting `Size:`)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIMIT = 350


def oversized(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > LIMIT:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if not any(line.startswith("Size:") for line in doc.splitlines()):
                out.append(f"{path.relative_to(root.parent)} ({text.count(chr(10))} lines)")
    return out


def test_modules_stay_small() -> None:
    assert oversized(REPO / "services") + oversized(REPO / "shared") == []


def test_a_long_module_needs_its_reason(tmp_path: Path) -> None:
    body = "x = 1\n" * (LIMIT + 1)
    (tmp_path / "long.py").write_text('"""A module."""\n' + body)
    (tmp_path / "explained.py").write_text('"""A module.\n\nSize: one table the reader wants in one place.\n"""\n' + body)
    assert [p.split(" ")[0] for p in oversized(tmp_path)] == [f"{tmp_path.name}/long.py"]
