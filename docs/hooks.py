"""mkdocs hooks: pages built from the repository's committed files at build time.

* ``notebooks/*.ipynb`` join the site (mkdocs-jupyter executes them);
* ``results/**/*.png`` join the site, so paper pages show the experiments' own figures;
* ``<!-- results: NAME -->`` in a page becomes the experiment's section: the configuration read
  from ``results/NAME/results.json``, the table the experiment rendered from that JSON
  (``results/NAME/table.md``, the paper's numbers labelled as the paper's) and its figures;
* ``<!-- bench-machines -->`` becomes a table of where and when each benchmark JSON was measured;
* ``{{bench FILE KEY.PATH FORMAT}}`` becomes one number read from ``benchmarks/results/FILE``.

Anything missing (a results directory, a JSON key) is an error that fails the build.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
BENCH = ROOT / "benchmarks" / "results"

_RESULTS_MARK = re.compile(r"<!-- results: ([\w/]+) -->")
_BENCH_NUMBER = re.compile(r"\{\{bench (\S+) (.+?) (\S+)\}\}")


@event_priority(100)  # before mkdocs-jupyter looks for notebooks
def on_files(files, config):
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        files.append(_file(config, f"notebooks/{path.name}", path))
    for path in sorted(RESULTS.rglob("*.png")):
        files.append(_file(config, f"results/{path.relative_to(RESULTS).as_posix()}", path))
    return files


def _file(config, src_uri: str, path: Path) -> File:
    return File(
        src_uri,
        src_dir=str(path.parents[src_uri.count("/")]),
        dest_dir=config["site_dir"],
        use_directory_urls=config["use_directory_urls"],
    )


def on_page_markdown(markdown, page, config, files):
    depth = page.file.src_uri.count("/")
    up = "../" * depth
    markdown = _RESULTS_MARK.sub(lambda m: results_section(m.group(1), up), markdown)
    markdown = markdown.replace("<!-- bench-machines -->", bench_machines())
    return _BENCH_NUMBER.sub(lambda m: bench_number(*m.groups()), markdown)


def results_section(name: str, up: str = "") -> str:
    """The configuration, table and figures of ``results/<name>/`` as markdown."""
    folder = RESULTS / name
    saved = json.loads((folder / "results.json").read_text())
    config = saved.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"results/{name}/results.json: expected a 'config' mapping")
    where = ", ".join(
        f"{k}: {saved[k]}" for k in ("backend", "devices") if k in saved and saved[k] is not None
    )
    rows = "\n".join(f"| `{k}` | `{json.dumps(v)}` |" for k, v in config.items())
    table = (folder / "table.md").read_text()
    # the experiment's own headings sit one level below the page's section
    table = re.sub(r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", table, flags=re.M)
    figures = "\n\n".join(
        f"![{p.stem}]({up}results/{name}/{p.name})" for p in sorted(folder.glob("*.png"))
    )
    return (
        f"### Configuration of the committed run (`results/{name}/results.json`)\n\n"
        + (f"Measured on {where}.\n\n" if where else "")
        + "| setting | value |\n|---|---|\n"
        + rows
        + "\n\n### Tables (`table.md`, rendered by the experiment from `results.json`)\n\n"
        + table
        + ("\n\n### Figures\n\n" + figures if figures else "")
        + "\n"
    )


def _bench(file: str) -> dict:
    return json.loads((BENCH / file).read_text())


def bench_number(file: str, path: str, fmt: str) -> str:
    """One value of ``benchmarks/results/<file>`` at the dotted ``path``, formatted."""
    value = _bench(file)
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return format(value, fmt)


def bench_machines() -> str:
    rows = []
    for path in sorted(BENCH.glob("*.json")):
        machine = json.loads(path.read_text()).get("machine", {})
        rows.append(
            f"| `{path.name}` | {machine.get('date', '?')} | {machine.get('processor', '?')}, "
            f"{machine.get('cpu_count', '?')} cores | {machine.get('backend', '?')} "
            f"({len(machine.get('devices', [])) or '?'} device(s)) | {machine.get('jax', '?')} |"
        )
    return "| file | measured | machine | backend | jax |\n|---|---|---|---|---|\n" + "\n".join(
        rows
    )
