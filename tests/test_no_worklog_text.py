"""The project's text speaks to its readers: no phrases from a work log."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PHRASES = re.compile(
    r"this session|last session|previous session|earlier session|sessions? ago|the session"
    r"|lent to this task",
    re.IGNORECASE,
)


def _texts() -> list[Path]:
    paths = [ROOT / "README.md", ROOT / "mkdocs.yml"]
    for folder in ("docs", "jaxprune", "experiments", "benchmarks", "notebooks"):
        for suffix in ("*.md", "*.py", "*.ipynb", "*.json"):
            paths += (ROOT / folder).rglob(suffix)
    paths += (ROOT / "results").rglob("*.md")
    return sorted(paths)


def test_the_scan_sees_the_project():
    names = {p.relative_to(ROOT).as_posix() for p in _texts()}
    assert {"README.md", "docs/index.md", "jaxprune/__init__.py"} <= names
    assert any(n.startswith("notebooks/") for n in names)
    assert any(n.startswith("results/") for n in names)
    assert PHRASES.search("as measured in the previous session")


@pytest.mark.parametrize("phrase", ["this session's run", "Last session", "lent to this task"])
def test_the_phrases_are_caught(phrase):
    assert PHRASES.search(f"numbers from {phrase} here")


def test_no_work_log_phrases():
    found = []
    for path in _texts():
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if PHRASES.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:120]}")
    assert not found, "\n".join(found)
