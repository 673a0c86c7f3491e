"""Start-up of a run's journaller (issue #20, decision 108): the process imports the package's
modules from their bytecode, never compiling a source. An install in place (``pip install
-e .``, as the README and CI install) writes the bytecode beside the sources (``setup.py``'s
``BuildInPlace``); without it, where Python writes no bytecode itself
(``PYTHONDONTWRITEBYTECODE``, a read-only checkout), every journaller compiled ~30 ms of
source as it started, while its run recorded in line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import exchange

ROOT = Path(exchange.__file__).resolve().parents[1]

#: What ``python -m exchange.store.journal`` imports, in a process that writes no bytecode,
#: reporting each of the package's sources it had to compile.
_IMPORT_AND_REPORT = """
import importlib._bootstrap_external as bootstrap, sys
compiled = []
source_to_code = bootstrap.SourceLoader.source_to_code
def spy(self, data, path, *args, **kwargs):
    if str(path).startswith(sys.argv[1]):
        compiled.append(str(path))
    return source_to_code(self, data, path, *args, **kwargs)
bootstrap.SourceLoader.source_to_code = spy
import runpy
runpy.run_module("exchange.store.journal", run_name="not_main")
print("\\n".join(compiled) or "-")
"""


def test_the_journaller_imports_the_package_from_bytecode_not_source():
    done = subprocess.run(
        [sys.executable, "-P", "-c", _IMPORT_AND_REPORT, str(ROOT)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(ROOT)),
        check=True,
    )
    assert done.stdout.strip() == "-", (
        "the journaller compiles these sources at each start (no fresh bytecode: reinstall "
        "with `pip install -e .`, or `python setup.py build_ext --inplace`):\n" + done.stdout
    )
