"""The CDS model of a listed series: the closed-form flat-hazard fast path against the general
piecewise model it replaced, per model call and over the built-in ``second-derivative``.

A **model call** is what the exchange computes for a series at a valuation date and a spread
in ticks, once per mark and per initial-margin shock (``exchange.risk.cds_market._legs``, uncached):
the flat hazard repricing the spread over the series' remaining schedule, then the protection
leg and the risky annuity on it. ``fast``: ``cds.flat_calibrate`` (Newton in ``log h`` on the
closed-form legs); ``reference``: the secant method on the general ``HazardCurve`` legs (the
listing's model before issue #21's speed work, kept as the reference). The inputs are
``N_CALLS`` seeded points shaped like the built-in's series (effective 2024-01-01, maturity
2030-12-20, 40 % recovery; valuation any day before maturity; 30-3,000 bps), built untimed.

Timed with ``time.perf_counter`` around the calls only (figures exist under
``--benchmark-disable`` too). Correctness gate: every fast call within
``cds_market.FAST_PATH_TOLERANCE`` (relative) of the reference's. Asserted: the ratio of the two
measured in the same run (``RATIO_GOAL``), never a wall-clock figure (a loaded machine would
fail it). Reported: the built-in's run on each model, in the same run, and the two logs'
digests (equal: the fast path changes no integer).

Units: model calls per second, seconds.
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import date, timedelta
from typing import Any

import pytest
from timing import timed_median

from exchange.products.cds import CdsSpec
from exchange.risk import cds_market
from exchange.sessions import session
from exchange.store.event_store import EventStore

N_CALLS = 200
ROUNDS = 7
REFERENCE_ROUNDS = 3
SEED = 21
#: The fast path must make at least this many model calls for each of the reference's, both
#: timed in the same run (measured: 17-20x on a loaded machine).
RATIO_GOAL = 10.0

SPEC = CdsSpec(
    name="CRWV-CDS-2030-12-C500",
    reference_entity="CoreWeave",
    coupon_bps=500,
    effective=date(2024, 1, 1),
    maturity=date(2030, 12, 20),
)

RESULTS: dict[str, dict[str, Any]] = {}


def make_points(n: int = N_CALLS, seed: int = SEED) -> list[tuple[date, int]]:
    """``n`` seeded ``(valuation, spread ticks)`` of :data:`SPEC`."""
    rng = random.Random(seed)
    days = (SPEC.maturity - SPEC.effective).days
    return [
        (SPEC.effective + timedelta(days=rng.randrange(days)), rng.randrange(30, 3_001))
        for _ in range(n)
    ]


def model_calls(points: list[tuple[date, int]], reference: bool) -> list[tuple[float, float]]:
    """The uncached model call of each point: ``(Prot, RPV01)``."""
    legs = cds_market._legs.__wrapped__  # the lru_cache's function: every call computes
    return [legs(SPEC, valuation, ticks, reference) for valuation, ticks in points]


@pytest.fixture(scope="module")
def points() -> list[tuple[date, int]]:
    return make_points()


@pytest.fixture(scope="module")
def reference(points) -> dict[str, Any]:
    """The reference's answers and its seconds per call (median of a few rounds)."""
    seconds = []
    for _ in range(REFERENCE_ROUNDS):
        t0 = time.perf_counter()
        answers = model_calls(points, True)
        seconds.append(time.perf_counter() - t0)
    return {"answers": answers, "s_per_call": statistics.median(seconds) / len(points)}


def report(capsys, line: str) -> None:
    with capsys.disabled():
        print(f"\n[cds] {line}")


def timed(benchmark, function) -> tuple[Any, float, int]:
    """:func:`timing.timed_median` over ``ROUNDS`` rounds."""
    return timed_median(benchmark, function, ROUNDS)


def test_fast_model_calls_against_the_reference(benchmark, points, reference, capsys):
    answers, median_s, rounds = timed(benchmark, lambda: model_calls(points, False))
    for got, want in zip(answers, reference["answers"], strict=True):
        assert got == pytest.approx(want, rel=cds_market.FAST_PATH_TOLERANCE, abs=0.0)
    fast_rate = len(points) / median_s
    reference_rate = 1.0 / reference["s_per_call"]
    ratio = fast_rate / reference_rate
    RESULTS["calls"] = {"fast_per_s": fast_rate, "reference_per_s": reference_rate}
    benchmark.extra_info.update(fast_per_s=fast_rate, reference_per_s=reference_rate, ratio=ratio)
    report(
        capsys,
        f"model calls: fast {fast_rate:,.0f}/s (median of {rounds}), reference "
        f"{reference_rate:,.0f}/s: {ratio:.1f}x (asserted >= {RATIO_GOAL:.0f}x)",
    )
    assert ratio >= RATIO_GOAL, f"only {ratio:.1f}x the reference (goal {RATIO_GOAL:.0f}x)"


def _clear_caches() -> None:
    for cached in (
        cds_market._legs,
        cds_market._entity_hazard,
        cds_market._model_spread,
        cds_market._schedule,
    ):
        cached.cache_clear()


def test_the_built_in_on_each_model(benchmark, tmp_path, monkeypatch, capsys):
    """``second-derivative`` at seed 7 on the reference model, then on the fast path, the model
    caches emptied before each (one round each: a run is seconds)."""
    seconds: dict[str, float] = {}
    digests: dict[str, str] = {}

    def run(name: str) -> None:
        _clear_caches()
        t0 = time.perf_counter()
        session.run("second-derivative", tmp_path / f"{name}.db", seed=7)
        seconds[name] = time.perf_counter() - t0

    with monkeypatch.context() as patch:
        patch.setattr(cds_market, "REFERENCE_MODEL", True)
        run("reference")
    benchmark.pedantic(lambda: run("fast"), rounds=1, iterations=1)
    for name in seconds:
        with EventStore.open(tmp_path / f"{name}.db") as store:
            digests[name] = store.digest()
    assert digests["fast"] == digests["reference"]
    RESULTS["built-in"] = seconds
    benchmark.extra_info.update(**{f"{name}_s": s for name, s in seconds.items()})
    report(
        capsys,
        f"second-derivative (seed 7): {seconds['fast']:.2f} s on the fast path, "
        f"{seconds['reference']:.2f} s on the reference model "
        f"({seconds['reference'] / seconds['fast']:.1f}x), the same log",
    )
