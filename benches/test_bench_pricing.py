"""Marking RVS positions: 10,000 positions per mark cycle, model value plus mark.

One **cycle** is what the exchange does for every open RVS position at a mark: the model value
per GPU (Black-76 put on the resale index, discounted at ``RATE``), the level premium per
period (``premium_from_value``), and the mark in ticks against that series' book
(``rvs_mark``: the one float -> int rounding, the liquidity test, the clamp). Two variants:

- ``scalar``: a Python loop calling ``discount_factor``, ``black76_put``,
  ``premium_from_value`` and ``rvs_mark`` per position;
- ``array``: ``black76_put_array`` over all positions at once (numpy), the premium as one
  array division, then the integer ``rvs_mark`` per position (the mark stays scalar: it is
  exact integer arithmetic after one exact rational rounding).

Plus the model alone (``model scalar`` / ``model array``: puts per second). The positions are
seeded and built untimed; each benchmark times itself with ``time.perf_counter`` around the
cycle only (figures exist under ``--benchmark-disable`` too) and reports the **median** round.
Correctness gate: both variants must give the same marks and sources as a reference cycle
computed untimed, and the array values must agree with the scalar ones to 1e-12.

Units: positions/s (positions marked per second), puts/s, seconds per cycle.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import numpy as np
import pytest

from exchange.products.pricing import (
    black76_put,
    black76_put_array,
    discount_factor,
    premium_from_value,
    rvs_mark,
)

N_POSITIONS = 10_000
ROUNDS = 7
SEED = 2027
RATE = 0.04  # continuously compounded, per year
TICK_SIZE = "0.01"  # USD per tick of premium per month per GPU
MAX_SPREAD_TICKS = 50
MIN_DEPTH_LOTS = 5

RESULTS: dict[str, dict[str, Any]] = {}


def make_positions(n: int, seed: int) -> dict[str, Any]:
    """``n`` seeded RVS positions: the model inputs as arrays and lists, and a book per series.

    Resale index 5,000-40,000 USD per GPU, floor 40-110 % of it, volatility 15-80 %, 1-60
    months to maturity (monthly premiums), books: about 60 % liquid (spread 1-50 ticks, depth
    5-50 lots), the rest wide, thin or one-sided; mids within +-80 ticks of the model's
    premium (at least 150 ticks), so some liquid books are clamped.
    """
    rng = np.random.default_rng(seed)
    index = rng.uniform(5_000.0, 40_000.0, n)
    floor = index * rng.uniform(0.4, 1.1, n)
    sigma = rng.uniform(0.15, 0.8, n)
    months = rng.integers(1, 61, n)
    t_years = months / 12.0
    model_ticks = [
        round(
            premium_from_value(black76_put(f, k, s, t, discount_factor(RATE, t)), int(m))
            / float(TICK_SIZE)
        )
        for f, k, s, t, m in zip(
            index.tolist(),
            floor.tolist(),
            sigma.tolist(),
            t_years.tolist(),
            months.tolist(),
            strict=True,
        )
    ]
    kind = rng.choice(["liquid", "wide", "thin", "one-sided"], n, p=[0.6, 0.15, 0.15, 0.1])
    mid = np.maximum(np.array(model_ticks) + rng.integers(-80, 81, n), 150)
    spread = np.where(kind == "wide", rng.integers(51, 200, n), rng.integers(1, 51, n))
    bid = (mid - spread // 2).tolist()
    ask = (mid - spread // 2 + spread).tolist()
    bid_depth = rng.integers(5, 51, n)
    ask_depth = rng.integers(5, 51, n)
    ask_depth = np.where(kind == "thin", rng.integers(0, 5, n), ask_depth).tolist()
    bid_depth = bid_depth.tolist()
    one_sided = (kind == "one-sided").tolist()
    books = [
        (None if gone else b, a, bq, aq)
        for gone, b, a, bq, aq in zip(one_sided, bid, ask, bid_depth, ask_depth, strict=True)
    ]
    return {
        "arrays": (index, floor, sigma, t_years, months.astype(np.float64)),
        "rows": list(
            zip(
                index.tolist(),
                floor.tolist(),
                sigma.tolist(),
                t_years.tolist(),
                months.tolist(),
                strict=True,
            )
        ),
        "books": books,
    }


def cycle_scalar(positions: dict[str, Any]) -> list[tuple[int, str]]:
    """One mark cycle, one position at a time."""
    marks = []
    for (index, floor, sigma, t, months), (bid, ask, bid_qty, ask_qty) in zip(
        positions["rows"], positions["books"], strict=True
    ):
        value = black76_put(index, floor, sigma, t, discount_factor(RATE, t))
        premium = premium_from_value(value, months)
        marks.append(
            rvs_mark(
                premium, TICK_SIZE, bid, ask, MAX_SPREAD_TICKS, MIN_DEPTH_LOTS, bid_qty, ask_qty
            )
        )
    return marks


def cycle_array(positions: dict[str, Any]) -> list[tuple[int, str]]:
    """One mark cycle: the model on arrays, the (integer) mark per position."""
    index, floor, sigma, t_years, months = positions["arrays"]
    values = black76_put_array(index, floor, sigma, t_years, np.exp(-RATE * t_years))
    premiums = (values / months).tolist()
    return [
        rvs_mark(premium, TICK_SIZE, bid, ask, MAX_SPREAD_TICKS, MIN_DEPTH_LOTS, bid_qty, ask_qty)
        for premium, (bid, ask, bid_qty, ask_qty) in zip(premiums, positions["books"], strict=True)
    ]


def model_scalar(positions: dict[str, Any]) -> list[float]:
    return [
        black76_put(index, floor, sigma, t, discount_factor(RATE, t))
        for index, floor, sigma, t, _ in positions["rows"]
    ]


def model_array(positions: dict[str, Any]) -> np.ndarray:
    index, floor, sigma, t_years, _ = positions["arrays"]
    return black76_put_array(index, floor, sigma, t_years, np.exp(-RATE * t_years))


@pytest.fixture(scope="module")
def positions() -> dict[str, Any]:
    return make_positions(N_POSITIONS, SEED)


@pytest.fixture(scope="module")
def reference(positions) -> dict[str, Any]:
    """The untimed reference: a scalar cycle's marks and the scalar model values."""
    return {"marks": cycle_scalar(positions), "values": model_scalar(positions)}


def report(capsys, line: str) -> None:
    with capsys.disabled():
        print(f"\n[pricing] {line}")


def timed(benchmark, function, positions) -> tuple[Any, float, int]:
    """Run ``function(positions)`` for ``ROUNDS`` rounds under pytest-benchmark (one under
    ``--benchmark-disable``); return the last result, the median of our own per-round timings
    (seconds) and the number of rounds timed."""
    seconds: list[float] = []
    out: dict[str, Any] = {}

    def target() -> None:
        t0 = time.perf_counter()
        out["result"] = function(positions)
        seconds.append(time.perf_counter() - t0)

    benchmark.pedantic(target, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    kept = seconds[-ROUNDS:]  # the warm-up round is timed too: leave it out
    return out["result"], statistics.median(kept), len(kept)


@pytest.mark.parametrize("variant", ["scalar", "array"])
def test_mark_cycle(benchmark, positions, reference, capsys, variant):
    function = cycle_scalar if variant == "scalar" else cycle_array
    marks, median_s, rounds = timed(benchmark, function, positions)
    assert marks == reference["marks"]  # same ticks and sources as the reference cycle
    rate = N_POSITIONS / median_s
    from_book = sum(1 for _, source in marks if source == "book")
    RESULTS[f"cycle_{variant}"] = {"median_s": median_s, "positions_per_s": rate}
    benchmark.extra_info.update(median_s=median_s, positions_per_s=rate, from_book=from_book)
    report(capsys, f"mark cycle {variant:<6} {N_POSITIONS:,} positions: {rate:,.0f} positions/s "
           f"({median_s * 1e3:.1f} ms a cycle, median of {rounds}); {from_book:,} marks from "
           f"the book, {N_POSITIONS - from_book:,} from the model")  # fmt: skip


@pytest.mark.parametrize("variant", ["scalar", "array"])
def test_model_only(benchmark, positions, reference, capsys, variant):
    function = model_scalar if variant == "scalar" else model_array
    values, median_s, rounds = timed(benchmark, function, positions)
    values = np.asarray(values)
    want = np.asarray(reference["values"])
    index, floor, *_ = positions["arrays"]
    assert np.all(np.abs(values - want) <= 1e-12 * want + 1e-14 * np.maximum(index, floor))
    rate = N_POSITIONS / median_s
    RESULTS[f"model_{variant}"] = {"median_s": median_s, "puts_per_s": rate}
    benchmark.extra_info.update(median_s=median_s, puts_per_s=rate)
    report(capsys, f"model only {variant:<6} {rate:,.0f} puts/s ({median_s * 1e3:.2f} ms for "
           f"{N_POSITIONS:,}, median of {rounds})")  # fmt: skip


def test_positions_are_sane(positions, reference):
    """The seeded portfolio exercises both mark sources and every book kind."""
    sources = [source for _, source in reference["marks"]]
    assert 0.4 < sources.count("book") / N_POSITIONS < 0.8
    assert all(math.isfinite(v) and v >= 0.0 for v in reference["values"])
    assert any(bid is None for bid, *_ in positions["books"])
