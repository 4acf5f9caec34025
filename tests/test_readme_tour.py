"""The README's tour runs as written, and what it prints holds (outputs compared numerically)."""

import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _tour_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index("## A tour in a few lines")
    end = text.index("\n## ", start + 3)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def test_tour_runs_and_its_claims_hold():
    blocks = _tour_blocks()
    assert len(blocks) == 2
    first: dict = {}
    exec(compile(blocks[0], "README-tour-1", "exec"), first)
    graph, active = first["graph"], first["active"]
    assert set(graph.units) == {"Dense_0", "Dense_2"}
    assert set(active) == set(graph.units)
    # the frozen units' kernel columns did not move in reinit; the dead ones' rows are zeroed
    dead = first["dead"]["Dense_0"]
    np.testing.assert_array_equal(np.asarray(first["params"]["Dense_1"]["kernel"])[dead], 0.0)

    second: dict = {}
    exec(compile(blocks[1], "README-tour-2", "exec"), second)
    x, net, variables = second["x"], second["net"], second["variables"]
    small, small_vars = second["small"], second["small_vars"]
    np.testing.assert_allclose(
        small.apply(small_vars, x), net.apply(variables, x), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        second["restored"].call(second["narrow_vars"], x), second["masked"], rtol=1e-5, atol=1e-5
    )
    size = second["size"]
    assert size(second["narrow_vars"]) < size(small_vars) < size(variables)


def test_readme_fits_a_page():
    assert len((ROOT / "README.md").read_bytes()) <= 12 * 1024


def test_readme_links_resolve():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    assert len(links) >= 10
    missing = [link for link in links if "://" not in link and not (ROOT / link).exists()]
    assert not missing, missing
