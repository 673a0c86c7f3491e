"""Start-up of a run's store (issue #20): creating the log imports no module a run does not
need. sqlite_utils (with click, pluggy and dateutil) was 40-50 ms of every run's start-up
when :meth:`EventStore.create` made its tables through it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_CREATE_AND_REPORT = """
import sqlite3, sys
from exchange.store.event_store import EventStore
store = EventStore.create(
    sys.argv[1], scenario="s", seed=3, config={"k": 1}, code_version="v", started_t=5
)
store.close()
loaded = sorted(m for m in ("sqlite_utils", "click", "pluggy", "dateutil") if m in sys.modules)
tables = sqlite3.connect(sys.argv[1]).execute(
    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
).fetchall()
print(",".join(loaded) or "-", ",".join(name for (name,) in tables))
"""


def test_creating_a_store_imports_neither_sqlite_utils_nor_its_dependencies(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-c", _CREATE_AND_REPORT, str(tmp_path / "run.db")],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded, tables = done.stdout.split()
    assert loaded == "-"
    assert tables == "batches,meta,sessions,snapshots"
