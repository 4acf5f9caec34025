"""Import contracts: imports go downward only (STYLE.md's layer picture).

experiments -> public API -> training -> (rewrites, transforms, analysis) -> graph ->
(models, data, and the package's private cores ``jaxprune/_*.py``). Rewrites, transforms and
analysis do not import each other: what two of them share lives below them. Experiments,
benchmarks and notebooks use the public API only (no ``jaxprune.<pkg>._private`` module).
"""

import ast
import pathlib

import pytest

import jaxprune

ROOT = pathlib.Path(jaxprune.__file__).parent
LEVEL = {"training": 3, "rewrites": 2, "transforms": 2, "analysis": 2, "graph": 1}
SIBLINGS = {"rewrites", "transforms", "analysis"}


def _level(part: str) -> int:
    return LEVEL.get(part, 0)  # models, data, _types, _losses, other private cores


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno


def _package_violations():
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel == pathlib.Path("__init__.py"):
            continue  # the public API imports from every layer
        src = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for module, line in _imports(path):
            parts = module.split(".")
            if parts[0] != "jaxprune" or len(parts) < 2:
                continue
            dst = parts[1]
            if dst == src:
                continue
            where = f"jaxprune/{rel}:{line} imports {module}"
            if _level(dst) > _level(src):
                out.append(f"upward: {where}")
            elif src in SIBLINGS and dst in SIBLINGS:
                out.append(f"sideways: {where}")
    return out


def test_package_imports_go_downward_only():
    assert _package_violations() == []


@pytest.mark.parametrize("folder", ["experiments", "benchmarks"])
def test_scripts_use_the_public_api_only(folder):
    bad = []
    for path in sorted((ROOT.parent / folder).rglob("*.py")):
        for module, line in _imports(path):
            parts = module.split(".")
            if parts[0] == "jaxprune" and any(p.startswith("_") for p in parts[1:]):
                bad.append(f"{path.name}:{line} imports {module}")
    assert bad == []


def test_importing_jaxprune_starts_no_backend():
    # jax.distributed.initialize (multi-process) and XLA flags must still work after the import
    import subprocess
    import sys

    packages = ["analysis", "data", "graph", "models", "rewrites", "training", "transforms"]
    code = (
        "import jaxprune\n"
        + "".join(f"import jaxprune.{p}\n" for p in packages)
        + "from jax._src import xla_bridge\nprint(sorted(xla_bridge._backends))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
