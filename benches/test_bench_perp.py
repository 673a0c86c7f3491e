"""Throughput of perpetual funding settlement: ``exchange.products.perp.settle_funding`` over 10,000
positions per funding interval, for 200 intervals.

Each interval: a seeded random funding rate (``funding_rate`` of a random premium, so capped)
and mark are accrued into a ``FundingIndex`` (untimed), then every position is settled from the
previous index value (timed: the ``settle_funding`` call alone). Positions are redrawn (balanced)
between some intervals, outside the timing. The benchmark checks conservation on every interval
(deltas sum to zero, the pool's balance never negative), so a broken settlement cannot report a
figure. It times itself with ``time.perf_counter`` (figures exist under ``--benchmark-disable``
too) and puts them in ``benchmark.extra_info``.

Units: positions/s (positions settled per second), seconds.
"""

from __future__ import annotations

import random
import statistics
import time
from fractions import Fraction

from exchange.products.perp import FundingIndex, MarginTier, PerpSpec, funding_rate, settle_funding

N_POSITIONS = 10_000
INTERVALS = 200
SEED = 5
POOL = "funding-pool"

SPEC = PerpSpec(
    name="H100-PERP",
    underlying="H100-RENTAL",
    gpu_hours_per_contract=100,
    tick_size="0.001",
    funding_interval_ns=8 * 3600 * 10**9,
    impact_notional_lots=10,
    mark_basis_halflife_ns=3600 * 10**9,
    margin_tiers=[
        MarginTier(max_position_lots=100, initial_margin_ppm=50_000, maintenance_margin_ppm=25_000)
    ],
    max_price=1_000_000,
)


def balanced_positions(rng: random.Random, accounts: list[str]) -> dict[str, int]:
    """Signed lots per account summing to zero: every account but the last random, the last
    taking the other side of the net."""
    positions = {a: rng.randrange(-500, 501) for a in accounts[:-1]}
    positions[accounts[-1]] = -sum(positions.values())
    return positions


def run() -> dict:
    rng = random.Random(SEED)
    accounts = [f"trader-{i:05d}" for i in range(N_POSITIONS)]
    positions = balanced_positions(rng, accounts)
    index = FundingIndex()
    pool = 0
    seconds = []
    for _ in range(INTERVALS):
        if rng.random() < 0.25:
            positions = balanced_positions(rng, accounts)
        entries = dict.fromkeys(accounts, index.cumulative)
        rate = funding_rate(Fraction(rng.randrange(-50_000, 50_001), 1_000_000), SPEC)
        index.accrue(rate, rng.randrange(5_000, 15_000), SPEC.tick_value)
        t0 = time.perf_counter()
        deltas = settle_funding(positions, entries, index.cumulative, POOL)
        seconds.append(time.perf_counter() - t0)
        assert sum(deltas.values()) == 0
        pool += deltas[POOL]
        assert pool >= 0
    median = statistics.median(seconds)
    return {
        "positions": N_POSITIONS,
        "intervals": INTERVALS,
        "median_s": median,
        "best_s": min(seconds),
        "positions_per_s": N_POSITIONS / median,
        "total_s": sum(seconds),
        "pool_minor_units": pool,
    }


def test_settle_funding_throughput(benchmark, capsys):
    results: dict = {}

    def target() -> None:
        results.update(run())

    benchmark.pedantic(target, rounds=1, iterations=1)
    benchmark.extra_info.update(results)
    with capsys.disabled():
        print(
            f"\n[perp funding] settle_funding, {N_POSITIONS:,} positions x {INTERVALS} "
            f"intervals: {results['positions_per_s']:,.0f} positions/s (median "
            f"{results['median_s'] * 1e3:.2f} ms an interval, best "
            f"{results['best_s'] * 1e3:.2f} ms); pool kept {results['pool_minor_units']:,} "
            "minor units of rounding"
        )
