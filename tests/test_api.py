"""The curated public surface: every exported name exists, nothing private leaks."""

import importlib

import pytest

import jaxprune

SUBPACKAGES = ["analysis", "data", "models", "rewrites", "training", "transforms"]


def test_top_level_all_resolves():
    for name in jaxprune.__all__:
        assert hasattr(jaxprune, name), name
    assert {"collapse", *SUBPACKAGES} <= set(jaxprune.__all__)


@pytest.mark.parametrize("sub", SUBPACKAGES)
def test_subpackage_all_is_explicit_and_public(sub):
    module = importlib.import_module(f"jaxprune.{sub}")
    assert module.__all__ == sorted(module.__all__), "keep __all__ sorted"
    for name in module.__all__:
        assert not name.startswith("_")
        assert getattr(module, name) is not None


def test_rewrites_never_import_training_code():
    import pathlib

    for path in pathlib.Path(jaxprune.__file__).parent.joinpath("rewrites").glob("*.py"):
        text = path.read_text()
        assert "jaxprune.training" not in text, path


def test_harness_has_eight_fake_devices():
    import jax

    assert jax.device_count() == 8
