"""The market schedule: the exchange's own timed actions for the products it lists.

Index publications, marks (which follow every publication of their index), funding of
perpetuals, premiums and maturities of residual value swaps are scheduled here at ``MARKET``
priority, so that at equal times they come before participants' commands; margin cycles (when
the session has margin) at ``CLEARING`` priority, after those commands: a cycle closes its
nanosecond (a deposit at a call's deadline is applied before the cycle that checks it). A
cycle an index move triggers is queued the same way, at the print's nanosecond. The
schedule is a pure function of the listed products, the index specs, the session's dates and
the seed: a live run and a verification build exactly the same one.
"""

from __future__ import annotations

from datetime import date

from exchange.core.clock import CLEARING, MARKET, Simulator
from exchange.kernel.engine import Exchange
from exchange.products.index import IndexSpec, RentalGlut, index_prints


def schedule_market(
    engine: Exchange,
    sim: Simulator,
    *,
    epoch: date,
    indices: list[IndexSpec],
    end_ns: int,
    seed: int,
    glut: RentalGlut | None = None,
) -> None:
    """Schedule every exchange-timed action from 0 to ``end_ns`` (simulated ns since
    ``epoch``) for the indices given and the instruments already listed on ``engine``.
    ``glut``: the credit economy's rental-price factor, which the rental indices take
    (``exchange.products.index.index_prints``); None: no economy, nothing changes."""
    engine.epoch = epoch
    # a year of hourly prints is tens of thousands of entries, scheduled twice per run (the
    # rehearsal, then the run): the bound method and the clock's method are looked up once
    schedule, publish_index = sim.schedule, engine.publish_index
    for spec in indices:
        times, ticks = index_prints(spec, epoch, 0, end_ns, seed, glut=glut)
        name = spec.name
        for t, value in zip(times.tolist(), ticks.tolist(), strict=True):
            schedule(t, publish_index, name, value, priority=MARKET)
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
    if engine.margin is not None:  # after prints, funding, premiums and commands of its ns
        t = engine.margin.interval_ns
        while t <= end_ns:
            sim.schedule(t, engine.margin_cycle, priority=CLEARING)
            t += engine.margin.interval_ns
        requested: list[int] = []  # the ns of the last triggered cycle queued

        def triggered() -> None:
            if engine.last_cycle_t != engine.t:  # a scheduled cycle of this ns saw the move
                engine.margin_cycle()

        def request_cycle() -> None:
            if requested != [engine.t]:  # one triggered cycle per ns, however many prints
                requested[:] = [engine.t]
                sim.schedule(engine.t, triggered, priority=CLEARING)

        engine.request_cycle = request_cycle
