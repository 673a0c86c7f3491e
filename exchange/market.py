"""The market schedule: the exchange's own timed actions for the products it lists.

Index publications, marks (which follow every publication of their index), funding of
perpetuals, premiums and maturities of residual value swaps, and margin cycles (when the
session has margin) are scheduled here, all at
``MARKET`` priority so that at equal times they come before participants' commands. The
schedule is a pure function of the listed products, the index specs, the session's dates and
the seed: a live run and a verification build exactly the same one.
"""

from __future__ import annotations

from datetime import date

from exchange.clock import MARKET, Simulator
from exchange.engine import Exchange
from exchange.index import IndexSpec, index_prints


def schedule_market(
    engine: Exchange,
    sim: Simulator,
    *,
    epoch: date,
    indices: list[IndexSpec],
    end_ns: int,
    seed: int,
) -> None:
    """Schedule every exchange-timed action from 0 to ``end_ns`` (simulated ns since
    ``epoch``) for the indices given and the instruments already listed on ``engine``."""
    engine.epoch = epoch
    for spec in indices:
        times, ticks = index_prints(spec, epoch, 0, end_ns, seed)
        for t, value in zip(times.tolist(), ticks.tolist(), strict=True):
            sim.schedule(t, engine.publish_index, spec.name, value, priority=MARKET)
    for name, listing in engine.instruments.items():
        spec = listing.spec
        if spec.kind == "perp":
            t = spec.funding_interval_ns
            while t <= end_ns:
                sim.schedule(t, engine.fund, name, priority=MARKET)
                t += spec.funding_interval_ns
        elif spec.kind == "rvs":
            for day in spec.premium_dates():
                t = engine.date_ns(day)
                if 0 < t <= end_ns:
                    sim.schedule(t, engine.charge_premium, name, priority=MARKET)
            maturity = engine.date_ns(spec.maturity)
            if 0 < maturity <= end_ns:
                sim.schedule(maturity, engine.expire, name, priority=MARKET)
    if engine.margin is not None:  # last, so at equal times it sees prints, funding, premiums
        t = engine.margin.interval_ns
        while t <= end_ns:
            sim.schedule(t, engine.margin_cycle, priority=MARKET)
            t += engine.margin.interval_ns
