"""Memory flat in the length of a run (issue #20): peak RSS of `flow` sessions of different
lengths, each recorded by ``session.run`` in a fresh interpreter (its own peak, nothing of the
test process's), as ``gpuex run flow`` records it (journaller included).

Goal (issue #20): a 10-million-order run's peak RSS within 1.5x of a 1-million-order run's.
The default run measures 100,000 against 1,000,000 orders (the same tenfold length, within
CI's time) and asserts the ratio, a figure measured in this run; the
goal's own sizes run on request (``python -m pytest -m acceptance benches/test_bench_memory.py``,
about ten minutes). Units: MiB of the run process's peak resident set size: ``VmHWM`` of
``/proc/self/status``, which starts afresh at ``exec`` -- ``ru_maxrss`` does not, and would
report the forking test process's own peak (``ru_maxrss`` where there is no ``/proc``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

GOAL_RATIO = 1.5

_CHILD = """
import json, resource, sys
from pathlib import Path
from exchange.sessions import session
summary = session.run("flow", sys.argv[1], seed=7, overrides={"messages": int(sys.argv[2])})
status = Path("/proc/self/status")
if status.exists():
    hwm = [line for line in status.read_text().splitlines() if line.startswith("VmHWM:")]
    peak_kib = int(hwm[0].split()[1])
else:
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"events": summary.events, "peak_mib": peak_kib / 1024}))
"""


def _peak(tmp_path, orders: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / f"flow-{orders}.db"), str(orders)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _compare(benchmark, capsys, tmp_path, short: int, long: int) -> None:
    results = {}

    def measure():
        results["short"] = _peak(tmp_path, short)
        results["long"] = _peak(tmp_path, long)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    a, b = results["short"], results["long"]
    ratio = b["peak_mib"] / a["peak_mib"]
    benchmark.extra_info.update(short_mib=a["peak_mib"], long_mib=b["peak_mib"], ratio=ratio)
    with capsys.disabled():
        print(
            f"\n[memory] flow peak RSS: {short:,} orders ({a['events']:,} events) "
            f"{a['peak_mib']:.0f} MiB, {long:,} orders ({b['events']:,} events) "
            f"{b['peak_mib']:.0f} MiB: {ratio:.2f}x (goal <= {GOAL_RATIO}x: "
            f"{'PASS' if ratio <= GOAL_RATIO else 'MISS'})"
        )
    assert b["events"] > 9 * a["events"]
    assert ratio <= GOAL_RATIO, f"peak RSS grew {ratio:.2f}x over a tenfold longer run"


def test_peak_memory_is_flat_in_the_length_of_a_run(benchmark, capsys, tmp_path):
    _compare(benchmark, capsys, tmp_path, 50_000, 500_000)


@pytest.mark.acceptance
def test_peak_memory_of_ten_million_orders_within_the_goal(benchmark, capsys, tmp_path):
    _compare(benchmark, capsys, tmp_path, 1_000_000, 10_000_000)
