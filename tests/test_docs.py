"""The documentation site builds with warnings as errors, and its pages say what the code does.

``mkdocs build --strict`` executes the notebooks (mkdocs-jupyter), renders the API reference
from the docstrings (mkdocstrings) and checks every internal link and anchor. Code blocks of the
guides fenced as ``python`` run here, each page in one namespace (``py`` fences are shown only).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXECUTED_PAGES = sorted(DOCS.glob("how-to/*.md")) + [DOCS / "getting-started.md"]


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("the docs extra is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return out


def test_site_builds_strict_with_every_page(site):
    for page in ("index", "concepts", "troubleshooting", "benchmarks", "api/graph", "papers"):
        assert (site / page / "index.html").exists() or (site / f"{page}.html").exists(), page
    # the API reference is rendered from the docstrings, examples as code
    graph = (site / "api" / "graph" / "index.html").read_text()
    assert "jaxprune.graph.trace" in graph and "highlight" in graph


def test_notebooks_are_executed_at_build(site):
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        html = (site / "notebooks" / nb.stem / "index.html").read_text()
        # every notebook draws at least one figure: its output is an embedded image
        assert "data:image/png;base64" in html, nb.name


def test_paper_pages_show_the_committed_results(site):
    html = (site / "papers" / "000-collapse-reinit" / "index.html").read_text()
    saved = json.loads((ROOT / "results" / "paint_collapse" / "results.json").read_text())
    assert f"<code>{json.dumps(saved['config']['seeds'])}</code>" in html
    # the experiment's table, its paper columns labelled, and its figure
    assert "Table 1" in html and "paper" in html
    assert (site / "results" / "paint_collapse" / "paintings.png").exists()
    assert "results/paint_collapse/paintings.png" in html


def test_benchmark_numbers_come_from_the_json(site):
    saved = json.loads((ROOT / "benchmarks" / "results" / "prune_resnet.json").read_text())
    html = (site / "benchmarks" / "index.html").read_text()
    assert f"{saved['speedup']:.2f}×" in html
    assert saved["machine"]["date"] in html


def test_doctest_blocks_are_fenced_for_markdown(monkeypatch):
    pytest.importorskip("griffe")
    monkeypatch.syspath_prepend(str(DOCS))
    from griffe_doctest import fence_doctests

    text = 'Args:\n  x: a value.\n\n>>> f(x["a"])\n1\n\nAfter.'
    assert fence_doctests(text).splitlines() == [
        "Args:",
        "  x: a value.",
        "",
        "```pycon",
        '>>> f(x["a"])',
        "1",
        "```",
        "",
        "After.",
    ]


@pytest.mark.parametrize("page", EXECUTED_PAGES, ids=lambda p: p.stem)
def test_guide_code_runs(page):
    blocks = _python_blocks(page)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{page.relative_to(ROOT)}[{i}]", "exec"), namespace)
    # each guide states its result as assertions inside its code
    if blocks:
        assert any("assert" in b for b in blocks), page.name
