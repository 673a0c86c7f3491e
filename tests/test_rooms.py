"""The exchange's rooms (issue #20, point 5): each room imports only the rooms before it, no
two modules import each other (type-only imports included), and the old module names still
import as the moved modules."""

from __future__ import annotations

import ast
import importlib
import re
import sys
import warnings
from pathlib import Path

import pytest

import exchange

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "exchange"
#: The rooms, lowest first: a room may import itself and the rooms before it.
ORDER = ["core", "products", "risk", "kernel", "store", "credit", "postmortem", "sessions"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    found = {}
    for path in sorted(PKG.rglob("*")):
        if path.suffix in (".py", ".pyx", ".pxd") and "build" not in path.parts:
            found.setdefault(module_name(path), path)
    return found


MODULES = sources()


def imports_of(path: Path) -> set[str]:
    """The ``exchange`` modules a source imports, at run time or for type hints alike."""
    text = path.read_text(encoding="utf-8")
    named: set[str] = set()
    if path.suffix in (".pyx", ".pxd"):
        for m in re.finditer(r"^\s*from\s+(exchange[\w.]*)\s+c?import\s+([\w, ]+)", text, re.M):
            named.update(f"{m.group(1)}.{n.strip().split(' ')[0]}" for n in m.group(2).split(","))
            named.add(m.group(1))
        named.update(re.findall(r"^\s*c?import\s+(exchange[\w.]*)", text, re.M))
    else:
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                named.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                named.add(node.module)
                named.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in named if n in MODULES and n != "exchange"}


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_lives_in_a_room():
    loose = sorted(
        m for m in MODULES if m.count(".") == 1 and m != "exchange.cli" and room_of(m) not in ORDER
    )
    assert not loose, f"modules outside the rooms: {loose}"


@pytest.mark.parametrize("room", ORDER)
def test_a_room_imports_only_the_rooms_before_it(room):
    allowed = set(ORDER[: ORDER.index(room) + 1])
    found = []
    for module, path in MODULES.items():
        if room_of(module) != room:
            continue
        for target in sorted(imports_of(path)):
            if room_of(target) not in allowed:
                found.append(f"{module} imports {target}")
    assert not found, "\n".join(found)


def test_no_two_modules_import_each_other():
    graph = {m: imports_of(p) - {m} for m, p in MODULES.items()}
    # a package's __init__ importing its own modules is how re-exports work, not a circle
    for m in graph:
        if MODULES[m].name == "__init__.py":
            graph[m] = {t for t in graph[m] if not t.startswith(m + ".")}
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t) :] + [t]))
            elif t not in state:
                visit(t, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not cycles, "\n".join(cycles)


def test_the_scanner_sees_imports_made_only_for_type_hints(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from exchange.kernel.engine import Exchange\n"
        "from exchange.core import events as ev\n"
    )
    assert imports_of(probe) == {"exchange.kernel.engine", "exchange.core.events", "exchange.core"}


@pytest.mark.parametrize("old", sorted(exchange.MOVED))
def test_an_old_module_name_imports_the_moved_module_with_a_warning(old):
    new = importlib.import_module(exchange.MOVED[old])
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is new
    assert any(
        issubclass(w.category, DeprecationWarning) and exchange.MOVED[old] in str(w.message)
        for w in caught
    )


def test_the_old_store_and_postmortem_imports_keep_working():
    from exchange.postmortem import facts
    from exchange.postmortem.analysis import facts as moved_facts
    from exchange.store import EventStore, verify_store
    from exchange.store.event_store import EventStore as Moved
    from exchange.store.event_store import verify_store as moved_verify

    assert (EventStore, verify_store, facts) == (Moved, moved_verify, moved_facts)
