"""The import rules of docs/architecture.md, enforced: each folder has one job and imports flow one way.

    acquisition → plans, devices, simulated, analysis      (the session, storage, CLI: may import everything)
    simulated   → devices, analysis                        (emulators and physics reuse drivers' and numerics' code)
    plans       → devices                                  (types and helpers only)
    analysis/live → analysis, event_model                  (callbacks around the numerics)
    analysis    → nothing of hotstage's, and no bluesky/ophyd/pyvisa/tiled (pure numerics)
    devices     → nothing of hotstage's

Every import statement is read from the source (lazy imports inside functions included), so a shortcut taken in a
function body fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("acquisition", "plans", "devices", "simulated", "analysis")
ALLOWED: dict[str, set[str]] = {
    "acquisition": set(PACKAGES),
    "simulated": {"simulated", "devices", "analysis"},
    "plans": {"plans", "devices"},
    "analysis.live": {"analysis"},
    "analysis": {"analysis"},
    "devices": {"devices"},
}
FORBIDDEN_THIRD_PARTY: dict[str, set[str]] = {
    "analysis": {"bluesky", "ophyd", "pyvisa", "tiled", "event_model", "databroker"},
    "analysis.live": {"bluesky", "ophyd", "pyvisa", "tiled", "databroker"},
    "devices": {"bluesky", "tiled", "databroker"},
}


def _layer(path: Path) -> str:
    """The rule a module falls under: its top-level folder, or analysis.live for the callbacks."""
    parts = path.relative_to(REPO).parts
    if parts[0] == "analysis" and len(parts) > 2 and parts[1] == "live":
        return "analysis.live"
    return parts[0]


def _root(module: str) -> str:
    """The layer an imported module belongs to: `hotstage.plans.x` -> `plans`; a third-party name as it is."""
    parts = module.split(".")
    if parts[0] == "hotstage" and len(parts) > 1:
        return parts[1]
    return parts[0]


def _imported_roots(path: Path) -> set[tuple[str, int]]:
    """Layers/top-level names of every absolute import in a module (relative imports stay inside their package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {(_root(alias.name), node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add((_root(node.module), node.lineno))
    return out


MODULES = sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def test_every_package_is_covered() -> None:
    assert len(MODULES) > 50  # the layout moved: this test would pass vacuously
    assert {_layer(p) for p in MODULES} == set(ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_flow_one_way(path: Path) -> None:
    layer = _layer(path)
    bad = []
    for root, line in sorted(_imported_roots(path)):
        if root in PACKAGES and root not in ALLOWED[layer]:
            bad.append(f"line {line}: {layer} imports {root}")
        if root in FORBIDDEN_THIRD_PARTY.get(layer, set()):
            bad.append(f"line {line}: {layer} imports {root} (not allowed in this layer)")
    assert not bad, f"{path.relative_to(REPO)}: " + "; ".join(bad)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_use_the_hotstage_namespace(path: Path) -> None:
    """`import plans` would only work from a source checkout: installed, the layers exist as hotstage.* alone."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bare = [node.lineno for node in ast.walk(tree)
            if (isinstance(node, ast.Import) and any(a.name.split(".")[0] in PACKAGES for a in node.names))
            or (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                and node.module.split(".")[0] in PACKAGES)]
    assert not bare, f"{path.relative_to(REPO)}: bare layer import on line(s) {bare}; use hotstage.<layer>"
