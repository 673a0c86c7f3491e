"""Start-up of a session (issue #20): loading a scenario imports only what it uses. The credit
economy's model (``exchange.credit.economy`` and its schedule: records, agents, 25-30 ms of
start-up) is imported by a scenario that has an economy, not by every scenario."""

from __future__ import annotations

import subprocess
import sys

_LOAD_AND_REPORT = """
import sys
from exchange.sessions.scenarios import load_scenario
load_scenario(sys.argv[1])
economy = ("exchange.credit.economy", "exchange.credit.economy_schedule")
print(",".join(m for m in economy if m in sys.modules) or "-")
"""


def load_and_report(name: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_AND_REPORT, name], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_a_scenario_without_an_economy_does_not_import_the_economy_model():
    assert load_and_report("guarantor-spiral") == "-"
