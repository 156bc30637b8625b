"""The docs point at things that exist: every `-m module` they tell a user to run has a `__main__`, every
relative link resolves, and nothing cites a document that is not in the repository."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_RUN_MODULE = re.compile(r"(?:python3?|torchrun\b[^`\n]*?)\s-m\s+([A-Za-z_][\w.]*)")
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [REPO / line for line in out.splitlines() if (REPO / line).is_file()]


def runnable(module: str) -> bool:
    """`python -m module` does something: a package with `__main__`, or a module with a main guard."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return False
    if spec.submodule_search_locations:  # a package
        return importlib.util.find_spec(f"{module}.__main__") is not None
    return "__main__" in Path(spec.origin).read_text()


def test_every_documented_module_runs() -> None:
    stdlib_and_tools = {"pytest", "pip", "venv", "grpc_tools.protoc", "http.server", "json.tool"}
    bad = []
    for doc in tracked("*.md"):
        for module in _RUN_MODULE.findall(doc.read_text()):
            if module not in stdlib_and_tools and not runnable(module):
                bad.append(f"{doc.relative_to(REPO)}: -m {module}")
    assert bad == [], f"documented `-m` modules that do nothing: {bad}"


def test_runnable_tells_a_library_module_from_an_entry_point() -> None:
    assert runnable("eureka_cli") and not runnable("eureka_cli.main")


def test_relative_links_resolve() -> None:
    bad = []
    for doc in tracked("*.md"):
        for target in _LINK.findall(doc.read_text()):
            if "://" not in target and not target.startswith("mailto:") and not (doc.parent / target).exists():
                bad.append(f"{doc.relative_to(REPO)}: {target}")
    assert bad == [], f"links to missing files: {bad}"


def test_no_citation_of_a_document_outside_the_repository() -> None:
    cited = [str(p.relative_to(REPO)) for p in tracked() if p.suffix in {".py", ".md", ".yaml", ".json", ".tpl"}
             and p != Path(__file__).resolve() and "DESIGN.md" in p.read_text(errors="replace")]
    assert cited == [], f"DESIGN.md is not in the repository; say what is meant instead: {cited}"
