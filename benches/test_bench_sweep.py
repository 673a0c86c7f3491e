"""Sweeps: runs per minute on a local Dask cluster (2 workers) against a plain sequential loop.

The same ``RUNS`` short versions of the flagship both ways: ``guarantor-spiral`` cut to 45 days,
with the guarantor's reserve and assets set to nothing and $500k at the exchange (so its first
call is one it cannot meet, and it defaults on most seeds; since the flagship's spiral of the
ninth session its own first call can come after day 45), seeds 1..RUNS. Each is a whole
``exchange.sessions.sweep.run_one``: a session into a temporary SQLite log, the post-mortem summary,
the log deleted.

* ``sequential``: ``run_one`` over the specs in a loop, in this process.
* ``cluster``: ``run_sweep`` on an already running LocalCluster (2 processes, 1 thread each,
  workers warmed up by one import), into a fresh output directory (so nothing is skipped):
  scheduling, the runs, the per-run JSON records, results.csv and summary.html.
* ``cluster+start``: ``run_sweep(workers=2)`` as the command line runs it, starting and
  stopping its own LocalCluster.

Figures: runs per minute (RUNS / seconds x 60) and the ratio cluster / sequential, reported
(machine-dependent: a 2-core VM caps it below 2x), not asserted. What is asserted is that the
cluster's records equal the sequential ones (state hashes, default facts), so a broken sweep
cannot report a figure. Each variant times itself with ``time.perf_counter`` (one round), so
the figures exist under ``--benchmark-disable`` too.
"""

from __future__ import annotations

import time

import pytest

from exchange.sessions import sweep

RUNS = 4  # 8 until the eighth session; 4 still fill both workers twice, at half the CI time
SCENARIO = "guarantor-spiral"
GRID = ["guarantor.capital=5e5", "guarantor.reserve=0", "guarantor.assets=0", "days=45"]

RESULTS: dict[str, float] = {}


@pytest.fixture(scope="module")
def specs():
    return sweep.expand_grid(SCENARIO, sweep.parse_params(SCENARIO, GRID), range(1, RUNS + 1))


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as c,
        distributed.Client(c) as client,
    ):
        # warm: imports done before timing
        client.run(lambda: __import__("exchange.sessions.sweep"))
        yield c


@pytest.fixture(scope="module")
def sequential_records(specs):
    """The oracle (and the sequential timing, if that benchmark did not run first)."""
    if "sequential_records" not in RESULTS:
        _sequential(specs)
    return RESULTS["sequential_records"]


def _sequential(specs):
    t0 = time.perf_counter()
    records = [sweep.run_one(s) for s in specs]
    RESULTS["sequential_s"] = time.perf_counter() - t0
    RESULTS["sequential_records"] = sorted(records, key=lambda r: r["run_id"])
    return records


def _per_min(seconds: float) -> float:
    return RUNS / seconds * 60


def test_sequential_loop(benchmark, specs):
    records = benchmark.pedantic(_sequential, args=(specs,), rounds=1, iterations=1)
    assert all(r["status"] == "ok" for r in records)
    assert any(r["defaults"] for r in records)
    rate = _per_min(RESULTS["sequential_s"])
    benchmark.extra_info.update(runs=RUNS, runs_per_min=round(rate, 1))
    print(
        f"\n[sweep] sequential: {RUNS} runs in {RESULTS['sequential_s']:.2f} s, {rate:.1f} runs/min"
    )


def test_local_cluster(benchmark, specs, cluster, sequential_records, tmp_path):
    outs = iter(range(100))

    def timed():
        t0 = time.perf_counter()
        result = sweep.run_sweep(
            specs,
            tmp_path / f"out{next(outs)}",
            scheduler=cluster.scheduler_address,
            progress=False,
        )
        RESULTS["cluster_s"] = time.perf_counter() - t0
        return result

    result = benchmark.pedantic(timed, rounds=1, iterations=1)
    assert result.executed == RUNS and result.failed == 0
    assert result.records == sequential_records
    rate = _per_min(RESULTS["cluster_s"])
    ratio = RESULTS["sequential_s"] / RESULTS["cluster_s"]
    benchmark.extra_info.update(runs=RUNS, runs_per_min=round(rate, 1), ratio=round(ratio, 2))
    print(
        f"\n[sweep] local cluster, 2 workers: {RUNS} runs in {RESULTS['cluster_s']:.2f} s, "
        f"{rate:.1f} runs/min; cluster / sequential = {ratio:.2f}x"
    )


def test_local_cluster_with_start(benchmark, specs, sequential_records, tmp_path):
    def timed():
        t0 = time.perf_counter()
        result = sweep.run_sweep(specs, tmp_path / "cold", workers=2, progress=False)
        RESULTS["cold_s"] = time.perf_counter() - t0
        return result

    result = benchmark.pedantic(timed, rounds=1, iterations=1)
    assert result.records == sequential_records
    rate = _per_min(RESULTS["cold_s"])
    ratio = RESULTS["sequential_s"] / RESULTS["cold_s"]
    benchmark.extra_info.update(runs=RUNS, runs_per_min=round(rate, 1), ratio=round(ratio, 2))
    print(
        f"\n[sweep] run_sweep(workers=2) starting its own cluster: {RUNS} runs in "
        f"{RESULTS['cold_s']:.2f} s, {rate:.1f} runs/min; / sequential = {ratio:.2f}x"
    )
