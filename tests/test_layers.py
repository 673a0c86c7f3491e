"""Layers point down: clients -> exchange -> matching_core, never the other way."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "matching_core": {"exchange", "clients"},
    "exchange": {"clients"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level package names a Python or Cython source file imports."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".pyx":  # Cython is not Python syntax: read its import lines directly
        return set(re.findall(r"^\s*(?:from|c?import)\s+([A-Za-z_]\w*)", text, re.MULTILINE))
    names = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_above_it(layer):
    sources = sorted((ROOT / layer).rglob("*.py")) + sorted((ROOT / layer).rglob("*.pyx"))
    assert sources, f"no sources found for {layer}"
    for source in sources:
        upward = imported_packages(source) & FORBIDDEN[layer]
        assert not upward, f"{source.relative_to(ROOT)} imports {sorted(upward)}"


def test_the_import_scanner_sees_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom exchange.store.event_store import X\nfrom . import sibling\n")
    assert imported_packages(probe) == {"os", "exchange"}
