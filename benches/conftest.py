"""Shared fixtures and the end-of-session summary of the matching benchmarks.

Units: throughput in messages per second (msg/s), durations in seconds, latencies in
nanoseconds. See ``benches/README.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from matching_core import REPORT_DTYPE, ReferenceBook
from matching_core.streams import generate_stream

#: The benchmark stream: this many messages of ``generate_stream(N_MESSAGES, SEED)``.
N_MESSAGES = 1_000_000
SEED = 7

#: Goals. The ratio is asserted (``test_goals``); the absolute figures depend on the machine,
#: so they are reported PASS/MISS in the summary but not asserted.
BATCH_GOAL_MSG_S = 3_000_000
PER_CALL_GOAL_MSG_S = 1_000_000
BATCH_OVER_REFERENCE_GOAL = 30.0

#: Filled by the benchmarks of this session, read by ``test_goals`` and the summary below.
#: ``RESULTS[name]`` for name in ``batch``, ``per_call``, ``reference``: ``seconds`` (each
#: round's own ``perf_counter`` timing), ``median_s``, ``msg_per_s`` (n / median_s),
#: ``rounds``. ``RESULTS["latency"]``: ``overhead_ns`` and ``{submit,cancel}_{p50,p99}_ns``
#: and the sample counts.
RESULTS: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="session")
def stream() -> np.ndarray:
    """The seeded benchmark stream (``MESSAGE_DTYPE``), generated once per session."""
    return generate_stream(N_MESSAGES, SEED)


@pytest.fixture(scope="session")
def stream_rows(stream: np.ndarray) -> list[tuple]:
    """The stream as a list of Python tuples (order_id, account, price, qty, op, side, type,
    tif, post_only), converted once, outside every timing."""
    return stream.tolist()


@pytest.fixture(scope="session")
def reference_outcome(stream: np.ndarray) -> dict[str, Any]:
    """What the reference book does with the stream (untimed): the oracle every timed run is
    checked against, so that a benchmark of a broken book fails instead of reporting a
    figure. Keys: ``fills`` (FILL_DTYPE), ``reports`` (REPORT_DTYPE), ``snapshot``
    (RESTING_DTYPE of the final book)."""
    book = ReferenceBook()
    reports = np.zeros(len(stream), dtype=REPORT_DTYPE)
    fills = book.process(stream, reports)
    return {"fills": fills, "reports": reports, "snapshot": book.snapshot()}


@pytest.fixture(scope="session")
def bench_results() -> dict[str, dict[str, Any]]:
    """The session's results (:data:`RESULTS`), filled by the benchmarks."""
    return RESULTS


@pytest.fixture(scope="session")
def bench_goals() -> dict[str, float]:
    """The goals: msg/s for ``batch_msg_s`` and ``per_call_msg_s``, a ratio for
    ``batch_over_reference``."""
    return {
        "batch_msg_s": BATCH_GOAL_MSG_S,
        "per_call_msg_s": PER_CALL_GOAL_MSG_S,
        "batch_over_reference": BATCH_OVER_REFERENCE_GOAL,
    }


def _status(value: float, goal: float) -> str:
    return "PASS" if value >= goal else "MISS"


def summary_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    """The summary table as text lines (empty when no benchmark ran)."""
    if not any(k in results for k in ("batch", "per_call", "reference", "latency")):
        return []
    lines = [
        f"{N_MESSAGES:,} messages of generate_stream(n, seed={SEED}); own perf_counter timing, "
        "median over rounds, fresh book each round",
        f"{'api':<12}{'rounds':>7}{'median s':>11}{'msg/s':>14}{'goal msg/s':>14}  status",
    ]
    goals = {"batch": BATCH_GOAL_MSG_S, "per_call": PER_CALL_GOAL_MSG_S}
    for name in ("batch", "per_call", "reference"):
        r = results.get(name)
        if r is None:
            lines.append(f"{name:<12}{'(not run)':>7}")
            continue
        goal = goals.get(name)
        goal_s = f">= {goal:,}" if goal else "-"
        status = _status(r["msg_per_s"], goal) if goal else "-"
        lines.append(
            f"{name:<12}{r['rounds']:>7}{r['median_s']:>11.4f}{r['msg_per_s']:>14,.0f}"
            f"{goal_s:>14}  {status}"
        )
    ref = results.get("reference")
    if ref is not None:
        for name, goal in (("batch", BATCH_OVER_REFERENCE_GOAL), ("per_call", None)):
            r = results.get(name)
            if r is None:
                continue
            ratio = r["msg_per_s"] / ref["msg_per_s"]
            goal_s = f"goal >= {goal:.0f}x  {_status(ratio, goal)}" if goal else "(no goal)"
            lines.append(f"ratio {name}/reference: {ratio:,.1f}x  {goal_s}")
    lat = results.get("latency")
    if lat is not None:
        lines.append(
            f"per-call latency, ns, net of the {lat['overhead_ns']:.0f} ns cost of an empty "
            "perf_counter_ns() pair:"
        )
        for kind in ("submit", "cancel"):
            lines.append(
                f"  {kind:<7} p50 {lat[kind + '_p50_ns']:>7.0f}   p99 {lat[kind + '_p99_ns']:>7.0f}"
                f"   ({lat[kind + '_samples']:,} calls)"
            )
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    lines = summary_lines(RESULTS)
    if not lines:
        return
    terminalreporter.section("gpuex matching benchmarks")
    for line in lines:
        terminalreporter.write_line(line)
