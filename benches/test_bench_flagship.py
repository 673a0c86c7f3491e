"""The flagship scenario end to end: `guarantor-spiral`, a one-year session of 8 bots (#7).

Times ``session.run("guarantor-spiral", db, seed=7)`` as ``gpuex run`` does it: scenario load and
validation, the market schedule (a year of hourly and daily index prints, marks, funding,
premiums, daily margin cycles), the 8 in-process bots under their default per-callback budget,
the engine, the fold kept for snapshots and the SQLite log with ``normal`` durability, closed
and indexed. One round (a log cannot be re-recorded in place), timed with
``time.perf_counter`` so the figure exists under ``--benchmark-disable`` too.

Goal (issue #7): under 60 s on this machine. Goal (issue #20): the compiled kernel (the default
engine) at least 3x faster than the reference engine (``--engine reference``, the plain-Python
``Exchange``), both timed in the same run. They are reported PASS/MISS, not asserted (the
figures depend on the machine). Asserted, as facts of the scenario: the log has events, the
guarantor defaulted (a ``Default`` event on its account), and both engines recorded the same
log (the same chain digest).

Units: seconds of wall time, events/s (events recorded per second of wall time).
"""

from __future__ import annotations

import time
from pathlib import Path

from exchange.core import events as ev
from exchange.kernel.engine import DAY_NS
from exchange.sessions import session
from exchange.store.event_store import EventStore

SCENARIO = "guarantor-spiral"
SEED = 7
GOAL_S = 60.0
RATIO_GOAL = 3.0  # issue #20: compiled / reference, same run

RESULTS: dict[str, float] = {}  # seconds, by engine
LOGS: dict[str, Path] = {}  # the log each engine recorded


def _timed_run(path: Path, engine: str):
    t0 = time.perf_counter()
    summary = session.run(SCENARIO, path, seed=SEED, engine=engine)
    RESULTS[engine] = time.perf_counter() - t0
    LOGS[engine] = path
    return summary


def test_flagship_year(benchmark, tmp_path, capsys):
    path = tmp_path / "guarantor-spiral.db"
    summary = benchmark.pedantic(_timed_run, args=(path, "compiled"), rounds=1, iterations=1)
    seconds = RESULTS["compiled"]
    assert summary.events > 0
    with EventStore.open(path, mode="r") as store:
        defaults = list(store.events(kind=ev.DEFAULT, account="guarantor"))
    assert defaults, "the guarantor did not default"
    default_day = defaults[0].t / DAY_NS
    result = {
        "seconds": seconds,
        "events": summary.events,
        "events_per_s": summary.events / seconds,
        "guarantor_default_day": round(default_day, 2),
        "goal_s": GOAL_S,
        "status": "PASS" if seconds < GOAL_S else "MISS",
    }
    benchmark.extra_info.update(result)
    with capsys.disabled():
        print(
            f"\n[flagship] {SCENARIO} seed {SEED}: {summary.events:,} events in {seconds:.1f} s "
            f"({result['events_per_s']:,.0f} events/s); guarantor defaulted on day "
            f"{default_day:.1f}; goal < {GOAL_S:.0f} s: {result['status']}"
        )


def test_flagship_year_against_the_reference_engine(benchmark, tmp_path, capsys):
    """The same year run by the reference engine; the ratio to the compiled kernel's run above
    is issue #20's goal for the flagship (at least 3x), measured in one run of the benches."""
    path = tmp_path / "guarantor-spiral-reference.db"
    if "compiled" not in RESULTS:  # the test above was deselected: time the compiled run here
        _timed_run(tmp_path / "guarantor-spiral-compiled.db", "compiled")
    summary = benchmark.pedantic(_timed_run, args=(path, "reference"), rounds=1, iterations=1)
    ratio = RESULTS["reference"] / RESULTS["compiled"]
    benchmark.extra_info.update(reference_s=RESULTS["reference"], ratio=round(ratio, 2))
    with EventStore.open(LOGS["compiled"]) as a, EventStore.open(path) as b:
        assert a.digest() == b.digest(), "the engines recorded different logs"
    with capsys.disabled():
        print(
            f"\n[flagship] reference engine: {summary.events:,} events in "
            f"{RESULTS['reference']:.1f} s; the compiled kernel {RESULTS['compiled']:.1f} s, "
            f"{ratio:.2f}x faster; goal {RATIO_GOAL:.0f}x: "
            f"{'PASS' if ratio >= RATIO_GOAL else 'MISS'}"
        )
