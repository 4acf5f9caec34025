"""Import contracts: imports go downward only (STYLE.md's layer picture).

experiments -> public API -> training -> (rewrites, transforms, analysis) -> graph ->
(models, data). Every subpackage of ``jaxprune/`` has its place in :data:`LEVEL`: a new one
must be placed deliberately. Rewrites, transforms and analysis do not import each other: what two
of them share lives below them.

The package's private top-level modules (``jaxprune/_losses.py``, ``_describe.py``,
``_data_checks.py``, ``_types.py``, ...) are the shared cores of STYLE.md ("a small ``_core``"):
they sit below everything, import no subpackage, and any package may import them.

Inside the library every import is absolute and names a module of at least two parts
(``import jaxprune`` or ``from jaxprune import x`` would hide an upward import), and no package
imports another package's private module (a ``_``-prefixed part after the package, as
``jaxprune.rewrites._prune``) or private name: it imports the package's public names
(``from jaxprune.rewrites import prune_units``). The graph engine's surface for writing rewrites
and analyses is the public module ``jaxprune.graph.extend``. Experiments, benchmarks and
notebooks use the public API only.
"""

import ast
import json
import pathlib

import pytest

import jaxprune

ROOT = pathlib.Path(jaxprune.__file__).parent
LEVEL = {
    "training": 3,
    "rewrites": 2,
    "transforms": 2,
    "analysis": 2,
    "graph": 1,
    "models": 0,
    "data": 0,
}
SIBLINGS = {"rewrites", "transforms", "analysis"}
CORE_LEVEL = -1  # the private top-level modules: below every subpackage


def _cores(root: pathlib.Path) -> set[str]:
    return {p.stem for p in root.glob("_*.py") if p.name != "__init__.py"}


def _imports(path: pathlib.Path):
    """Yields ``(module, level, imported names, line)`` for every import statement."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            yield node.module or "", node.level, names, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, 0, [], node.lineno


def _violations(rel: pathlib.Path, path: pathlib.Path, src: str, cores: set[str]) -> list[str]:  # noqa: C901
    """The import-contract violations of one library file in package (or core) ``src``."""

    def level(part: str) -> int:
        return CORE_LEVEL if part in cores else LEVEL[part]

    out = []
    for module, dots, names, line in _imports(path):
        where = f"jaxprune/{rel}:{line}"
        if dots:
            out.append(f"relative: {where} imports {'.' * dots}{module}")
            continue
        parts = module.split(".")
        if parts[0] != "jaxprune":
            continue
        if len(parts) < 2:
            out.append(f"too short: {where} imports {module} {names}")
            continue
        where = f"{where} imports {module}"
        dst = parts[1]
        if dst not in cores and dst not in LEVEL:
            out.append(f"unclassified: {where} ({dst!r} is not in LEVEL)")
            continue
        if dst == src:
            continue
        private = [p for p in parts[2:] if p.startswith("_")]
        if private:
            out.append(f"private module: {where}")
        hidden = [n for n in names if n.startswith("_")]
        if hidden:
            out.append(f"private name: {where} {hidden}")
        if level(dst) > level(src):
            out.append(f"upward: {where}")
        elif src in SIBLINGS and dst in SIBLINGS:
            out.append(f"sideways: {where}")
    return out


def _package_violations(root: pathlib.Path = ROOT) -> list[str]:
    out, cores = [], _cores(root)
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel == pathlib.Path("__init__.py"):
            continue  # the public API imports from every layer
        src = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        out += _violations(rel, path, src, cores)
    return out


def test_package_imports_go_downward_only():
    assert _package_violations() == []


def test_every_subpackage_has_a_level():
    subpackages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert subpackages == set(LEVEL)


def _fake_library(tmp_path, files: dict[str, str]) -> pathlib.Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    "file, text, expected",
    [
        ("training/_x.py", "import jaxprune\n", "too short: jaxprune/training/_x.py:1"),
        ("graph/_x.py", "from jaxprune import rewrites\n", "too short: jaxprune/graph/_x.py:1"),
        ("rewrites/_x.py", "from . import _prune\n", "relative: jaxprune/rewrites/_x.py:1"),
        ("analysis/_x.py", "from .._losses import accuracy\n", "relative: jaxprune/analysis/"),
        (
            "training/_x.py",
            "from jaxprune.rewrites._prune import prune_units\n",
            "private module: jaxprune/training/_x.py:1 imports jaxprune.rewrites._prune",
        ),
        (
            "training/_x.py",
            "import jaxprune.graph._rewritten\n",
            "private module: jaxprune/training/_x.py:1 imports jaxprune.graph._rewritten",
        ),
        (
            "training/_x.py",
            "from jaxprune.rewrites import _check_fraction\n",
            "private name: jaxprune/training/_x.py:1 imports jaxprune.rewrites ['_check_fraction']",
        ),
        (
            "rewrites/_x.py",
            "from jaxprune.pruning import prune\n",
            "unclassified: jaxprune/rewrites/_x.py:1 imports jaxprune.pruning",
        ),
        ("graph/_x.py", "from jaxprune.rewrites import fuse\n", "upward: jaxprune/graph/_x.py:1"),
        ("_core.py", "from jaxprune.models import MLP\n", "upward: jaxprune/_core.py:1"),
        ("analysis/_x.py", "from jaxprune.rewrites import fuse\n", "sideways: jaxprune/analysis"),
    ],
)
def test_the_contract_check_flags(tmp_path, file, text, expected):
    root = _fake_library(tmp_path, {"__init__.py": "", "_core.py": "", file: text})
    found = _package_violations(root)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_the_contract_check_allows(tmp_path):
    allowed = {
        "training/_x.py": "from jaxprune.rewrites import prune_units\n",
        "rewrites/_x.py": "from jaxprune.graph.extend import RewriteSpec\n",
        "analysis/_x.py": "from jaxprune._losses import accuracy\nimport jaxprune.graph\n",
        "graph/_x.py": "from jaxprune._data_checks import check_finite\n",
        "models/_x.py": "from jaxprune.models._mlp import MLP\n",
        "transforms/_x.py": "from jaxprune._types import Params\n",
    }
    cores = {f"{name}.py": "" for name in ("_losses", "_data_checks", "_types")}
    assert _package_violations(_fake_library(tmp_path, {**cores, **allowed})) == []


def test_the_graph_extension_surface_is_explicit():
    import jaxprune.graph.extend as extend

    assert extend.__all__ == sorted(extend.__all__), "keep __all__ sorted"
    for name in extend.__all__:
        assert not name.startswith("_")
        assert getattr(extend, name) is not None
    assert not set(extend.__all__) & set(jaxprune.graph.__all__), "import those from jaxprune.graph"


def _notebook_source(path: pathlib.Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    lines = "\n".join(code).splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))


@pytest.mark.parametrize("folder", ["experiments", "benchmarks", "notebooks"])
def test_scripts_use_the_public_api_only(folder, tmp_path):
    bad, seen = [], 0
    for path in sorted((ROOT.parent / folder).rglob("*")):
        if path.suffix == ".ipynb":
            source = tmp_path / f"{path.stem}.py"
            source.write_text(_notebook_source(path))
        elif path.suffix == ".py":
            source = path
        else:
            continue
        for module, _, names, line in _imports(source):
            parts = module.split(".")
            seen += parts[0] == "jaxprune"
            if parts[0] == "jaxprune" and any(p.startswith("_") for p in parts[1:] + names):
                bad.append(f"{path.name}:{line} imports {module} {names}")
    assert seen > 0 and bad == []


def test_importing_jaxprune_starts_no_backend():
    # jax.distributed.initialize (multi-process) and XLA flags must still work after the import
    import subprocess
    import sys

    packages = sorted(LEVEL) + ["graph.extend"]
    code = (
        "import jaxprune\n"
        + "".join(f"import jaxprune.{p}\n" for p in packages)
        + "from jax._src import xla_bridge\nprint(sorted(xla_bridge._backends))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
