"""The package type-checks (mypy, configured in pyproject.toml) and its public functions are
annotated, so the checker sees the signatures users call."""

import importlib
import inspect
import pathlib
import subprocess
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Packages whose public functions carry full annotations (every parameter and the return).
ANNOTATED = [
    "jaxprune",
    "jaxprune.analysis",
    "jaxprune.data",
    "jaxprune.graph",
    "jaxprune.models",
    "jaxprune.rewrites",
    "jaxprune.training",
    "jaxprune.transforms",
]


def test_mypy_passes(tmp_path):
    pytest.importorskip("mypy")
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def _unannotated(module: types.ModuleType) -> dict[str, list[str]]:
    """``{name: [unannotated parameters, "return"]}`` of the module's public functions."""
    out = {}
    for name in module.__all__:
        fn = getattr(module, name)
        if not inspect.isfunction(fn):
            continue
        sig = inspect.signature(fn)
        missing = [p.name for p in sig.parameters.values() if p.annotation is p.empty]
        if sig.return_annotation is sig.empty:
            missing.append("return")
        if missing:
            out[f"{module.__name__}.{name}"] = missing
    return out


@pytest.mark.parametrize("module", ANNOTATED)
def test_public_functions_are_annotated(module):
    assert _unannotated(importlib.import_module(module)) == {}


def test_the_annotation_check_names_each_gap():
    def typed(x: int, *args: int, **kw: str) -> int:
        return x

    def bare(x, y: int, **kw):
        return y

    fake = types.ModuleType("fake")
    fake.typed, fake.bare, fake.CONSTANT = typed, bare, 3
    fake.__all__ = ["CONSTANT", "bare", "typed"]
    assert _unannotated(fake) == {"fake.bare": ["x", "kw", "return"]}
