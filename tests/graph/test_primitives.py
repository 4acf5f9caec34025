"""The registry of primitives (``jaxprune/graph/_primitives.py``) stays the one place that
names JAX primitives: every name in it is a primitive of the installed JAX (or listed as a
former name), and no other module of the package keeps a set of primitive names of its own."""

import ast
import pathlib
import sys

import jax
import jax.lax
import jax.nn
import jax.numpy as jnp
import jax.random
import pytest
from jax.extend.core import Primitive

from jaxprune.graph import _primitives as registry

PACKAGE = pathlib.Path(registry.__file__).resolve().parents[1]


def _jax_primitive_names() -> frozenset[str]:
    """The names of every primitive object defined in JAX's loaded modules."""
    x = jnp.ones((2, 3))
    jax.jit(jax.nn.relu)(x)  # loads the modules that define the call primitives
    jax.random.bits(jax.random.key(0), (2,))
    names = set()
    for name, module in list(sys.modules.items()):
        if not name.startswith("jax") or module is None:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Primitive):
                names.add(value.name)
    return frozenset(names)


JAX_NAMES = _jax_primitive_names()


def _registry_sets() -> dict[str, frozenset[str]]:
    out = {}
    for name in registry.__all__:
        value = getattr(registry, name)
        if name == "SHAPE_PARAMS":  # names of primitives' parameters, not of primitives
            continue
        if isinstance(value, dict):  # keyed by primitive name
            out[name] = frozenset(value)
        else:
            out[name] = value
    return out


REGISTRY_NAMES = frozenset().union(*_registry_sets().values())
KNOWN = JAX_NAMES | REGISTRY_NAMES


def test_registry_names_are_jax_primitives():
    assert {"add", "dot_general", "conv_general_dilated", "reduce_window_max"} <= JAX_NAMES
    unknown = {
        f"{set_name}: {name}"
        for set_name, names in _registry_sets().items()
        for name in names
        if name not in JAX_NAMES and name not in registry.LEGACY
    }
    assert not unknown, f"not primitives of jax {jax.__version__}: {sorted(unknown)}"
    # A former name that is a primitive again belongs in its set, not in LEGACY.
    assert not registry.LEGACY & JAX_NAMES
    # LEGACY only marks names that another set uses.
    used = frozenset().union(*(v for k, v in _registry_sets().items() if k != "LEGACY"))
    assert registry.LEGACY <= used


def test_registry_views_are_built_from_the_sets():
    # Views hand-checked against the sets they refine: a name added to a set reaches them.
    assert registry.ELEMENTWISE == (
        registry.LINEAR_UNARY | registry.NONLINEAR_UNARY | registry.BINARY
    )
    assert registry.FUSION_PASS - registry.ELEMENTWISE == {"custom_jvp_call", "stop_gradient"}
    assert registry.AFFINE_ARITH <= registry.BINARY
    assert registry.STREAM_JOIN <= registry.BINARY
    assert registry.POOL <= registry.REDUCE | registry.REDUCE_WINDOW
    assert registry.FUSION_POOL <= registry.REDUCE_WINDOW
    assert registry.AFFINE_ELEMENTWISE - registry.AFFINE_ARITH == {
        "neg",
        "convert_element_type",
        "copy",
    }
    assert registry.SHAPE_PARAMS == {"shape", "new_sizes", "sharding", "out_sharding"}


def _strings(node) -> list[str] | None:
    elts = getattr(node, "elts", None)
    if elts is None or not all(
        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in elts
    ):
        return None
    return [e.value for e in elts]


def own_primitive_sets(source: str) -> list[tuple[int, list[str]]]:
    """``(line, names)`` of every collection of primitive names ``source`` writes out: a set
    literal with two or more, a module-level tuple or list of two or more, or three or more in
    a membership test (``name in ("add", "sub", "mul")``)."""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Set):
            names = [n for n in (_strings(node) or []) if n in KNOWN]
            if len(names) >= 2:
                found.append((node.lineno, names))
        elif isinstance(node, ast.Compare) and any(
            isinstance(op, (ast.In, ast.NotIn)) for op in node.ops
        ):
            for comp in node.comparators:
                if isinstance(comp, (ast.Tuple, ast.List)):
                    names = _strings(comp) or []
                    if len(names) >= 3 and all(n in KNOWN for n in names):
                        found.append((node.lineno, names))
    for stmt in tree.body:
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and isinstance(
            stmt.value, (ast.Tuple, ast.List)
        ):
            names = _strings(stmt.value) or []
            if len(names) >= 2 and all(n in KNOWN for n in names):
                found.append((stmt.lineno, names))
    return found


@pytest.mark.parametrize(
    "source, lines",
    [
        ('_EW = {"add", "mul", "neg"}\n', [1]),
        ('_PASS = ("reshape", "copy")\n', [1]),
        ('def f(n):\n    return n in ("add", "sub", "add_any")\n', [2]),
        ('x = frozenset({"tanh", "exp"})\n', [1]),
        # Not primitive names, two names in a rule's own test, one name: all fine.
        ('KINDS = {"dense", "conv"}\nOK = n in ("slice", "split") or n == "pad"\n', []),
    ],
)
def test_scanner_finds_collections_of_primitive_names(source, lines):
    assert [line for line, _ in own_primitive_sets(source)] == lines


def test_no_module_keeps_its_own_primitive_set():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_primitives.py":
            continue
        for line, names in own_primitive_sets(path.read_text()):
            offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {sorted(names)}")
    assert not offenders, (
        "primitive names belong in jaxprune/graph/_primitives.py (see its docstring):\n"
        + "\n".join(offenders)
    )
