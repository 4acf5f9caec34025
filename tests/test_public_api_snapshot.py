"""The public names are a snapshot: adding, removing or renaming one is a deliberate change.

``tests/public_api.txt`` lists ``module.name`` for every name in the ``__all__`` of
``jaxprune``, its subpackages and ``jaxprune.graph.extend``. After a deliberate change,
regenerate it with ``python tests/test_public_api_snapshot.py`` and commit the diff.
"""

import importlib
import sys
from pathlib import Path

import jaxprune

SNAPSHOT = Path(__file__).with_name("public_api.txt")
MODULES = [
    "jaxprune",
    "jaxprune.analysis",
    "jaxprune.data",
    "jaxprune.graph",
    "jaxprune.graph.extend",
    "jaxprune.models",
    "jaxprune.rewrites",
    "jaxprune.training",
    "jaxprune.transforms",
]


def public_names() -> list[str]:
    return [f"{m}.{n}" for m in MODULES for n in sorted(importlib.import_module(m).__all__)]


def test_public_names_match_the_committed_snapshot():
    expected = SNAPSHOT.read_text().split()
    got = public_names()
    added = sorted(set(got) - set(expected))
    removed = sorted(set(expected) - set(got))
    assert not added and not removed, (
        f"public names changed: added {added}, removed {removed}; if deliberate, run "
        "`python tests/test_public_api_snapshot.py` and commit tests/public_api.txt"
    )


def test_every_subpackage_is_in_the_snapshot():
    root = Path(jaxprune.__file__).parent
    subpackages = {
        f"jaxprune.{p.parent.name}" for p in root.glob("*/__init__.py") if p.parent.name[0] != "_"
    }
    assert subpackages <= set(MODULES)


def test_the_package_ships_its_type_hints():
    assert (Path(jaxprune.__file__).parent / "py.typed").is_file()


if __name__ == "__main__":
    SNAPSHOT.write_text("\n".join(public_names()) + "\n")
    sys.stdout.write(f"wrote {SNAPSHOT}\n")
