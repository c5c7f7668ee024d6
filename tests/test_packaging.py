"""One namespace: hotstage installs as `hotstage.*` alone, `import hotstage` works and knows its version.

The design card's folders stay at the top of the repository (acquisition/ devices/ plans/ analysis/ simulated/);
pyproject.toml maps each to `hotstage.<folder>`. These tests fail when a new sub-package is not listed (it would
be missing from an installed wheel), when the distribution would put another top-level name into site-packages,
or when `hotstage --version` breaks.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("acquisition", "analysis", "devices", "plans", "simulated")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_source_package_is_installed_under_hotstage() -> None:
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {"hotstage"} | {
        "hotstage." + ".".join(init.parent.relative_to(REPO).parts)
        for layer in LAYERS for init in (REPO / layer).rglob("__init__.py")}
    assert listed == found, f"pyproject.toml packages differ: missing {found - listed}, stale {listed - found}"


def test_nothing_but_hotstage_lands_in_site_packages() -> None:
    dist = importlib.metadata.distribution("hotstage")
    assert (dist.read_text("top_level.txt") or "").split() == ["hotstage"]
    mapping = _pyproject()["tool"]["setuptools"]["package-dir"]
    assert set(mapping) == {"hotstage"} | {f"hotstage.{layer}" for layer in LAYERS}


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_import_as_hotstage_modules(layer: str) -> None:
    module = importlib.import_module(f"hotstage.{layer}")
    assert Path(module.__file__).resolve().parent == REPO / layer


def test_version_from_the_package_and_the_command() -> None:
    import hotstage

    assert hotstage.__version__ == importlib.metadata.version("hotstage") == _pyproject()["project"]["version"]
    out = subprocess.run([sys.executable, "-m", "hotstage", "--version"], capture_output=True, text=True,
                         cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"hotstage {hotstage.__version__}"


def test_bare_layer_names_are_not_importable_outside_the_repository() -> None:
    code = "import importlib.util as u; print([n for n in %r if u.find_spec(n)])" % (LAYERS,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
