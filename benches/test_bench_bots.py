"""Callbacks delivered per second to 100 in-process bots on a busy book (issue #6).

The market is the ``products`` scenario's (``ProductsScenario``: the H100 rental index hourly,
the resale index daily, ``H100-PERP`` funded every 8 hours, two swap series, margin cycles)
without its scripted participants. 100 funded accounts each get a bot through
``BotRunner.add``:

* 10 market makers (``clients.strategies.MarketMaker`` on ``H100-PERP``, 2 levels a side,
  half-spreads of 15..42 ticks, requoting on every index print and every 10 minutes: a cancel-all
  and four new orders each time);
* 90 light bots (:class:`Light`) that count their callbacks and send a market order of 1-3 lots
  at seeded Poisson times (mean gap 2 hours: 45 orders an hour between them).

Every bot watches the perpetual's book, so each change of it (a requote, a trade) is an
``on_book`` for all 100 bots, each trade an ``on_trade`` for all 100. Latency: 1 ms plus up to
2 ms of seeded jitter each way, so the makers' requotes arrive at different instants.
One simulated day is run (about 413,000 callbacks, 32,000 events). Events go to a counting
sink: no SQLite, so the figure is the runner, the bots and the exchange's matching.

Each round builds a fresh market (untimed) and times ``runner.start`` + ``sim.run`` with
``time.perf_counter``. Callbacks are counted by the bots themselves (``self.calls += 1`` in
every callback they receive), so the figure is callbacks actually invoked. Two variants, same
seed: every bot under the default per-callback budget (``DEFAULT_LINES``, call and line counting,
:mod:`clients.budget`) and every bot with ``budget_lines=None``; the budget's cost is their
ratio. Asserted: every bot received callbacks, trades happened, every round of both variants
gives the same callback counts bot by bot and the same state hash (behaviour must not depend
on the budget). No timing is asserted.

Units: callbacks/s (callbacks invoked per second of wall time), us per callback.
"""

from __future__ import annotations

import statistics
import time

from clients.bot import Bot
from clients.budget import DEFAULT_LINES
from clients.latency import Latency
from clients.runner import BotRunner
from clients.strategies import MarketMaker
from exchange.clock import Simulator
from exchange.engine import DAY_NS, Exchange
from exchange.scenario_products import HOUR_NS, ProductsScenario

SEED = 7
MAKERS = 10
LIGHT = 90
SESSION_NS = DAY_NS
ROUNDS = 3
MINUTE_NS = 60 * 10**9
LATENCY = Latency(fixed_ns=1_000_000, jitter_ns=2_000_000)
INSTRUMENT = "H100-PERP"


class CountingMaker(MarketMaker):
    """The reference market maker, counting every callback it receives."""

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.calls = 0

    def on_start(self, ctx):
        self.calls += 1
        super().on_start(ctx)

    def on_book(self, ctx, book):
        self.calls += 1
        super().on_book(ctx, book)

    def on_trade(self, ctx, trade):
        self.calls += 1

    def on_order(self, ctx, update):
        self.calls += 1

    def on_fill(self, ctx, fill):
        self.calls += 1

    def on_index(self, ctx, index):
        self.calls += 1
        super().on_index(ctx, index)

    def on_mark(self, ctx, mark):
        self.calls += 1

    def on_funding(self, ctx, funding):
        self.calls += 1

    def on_margin_call(self, ctx, call):
        self.calls += 1
        super().on_margin_call(ctx, call)

    def on_timer(self, ctx, tag):
        self.calls += 1
        super().on_timer(ctx, tag)

    def on_stop(self, ctx):
        self.calls += 1


class Light(Bot):
    """Counts its callbacks; sends a market order of 1-3 lots at seeded Poisson times."""

    books = (INSTRUMENT,)

    def __init__(self, mean_gap_ns: int = 2 * HOUR_NS) -> None:
        self.mean_gap_ns = mean_gap_ns
        self.calls = 0
        self.orders = 0
        self.fills = 0

    def _next(self, ctx) -> None:
        ctx.schedule(ctx.now + 1 + int(ctx.rng.exponential(self.mean_gap_ns)), "trade")

    def on_start(self, ctx):
        self.calls += 1
        self._next(ctx)

    def on_timer(self, ctx, tag):
        self.calls += 1
        side = "buy" if ctx.rng.random() < 0.5 else "sell"
        ctx.submit(INSTRUMENT, side, 0, int(ctx.rng.integers(1, 4)), order_type="market")
        self.orders += 1
        self._next(ctx)

    def on_fill(self, ctx, fill):
        self.calls += 1
        self.fills += 1

    def on_book(self, ctx, book):
        self.calls += 1

    def on_trade(self, ctx, trade):
        self.calls += 1

    def on_order(self, ctx, update):
        self.calls += 1

    def on_index(self, ctx, index):
        self.calls += 1

    def on_mark(self, ctx, mark):
        self.calls += 1

    def on_funding(self, ctx, funding):
        self.calls += 1

    def on_margin_call(self, ctx, call):
        self.calls += 1

    def on_stop(self, ctx):
        self.calls += 1


def build(budget_lines: int | None):
    """A fresh market with 100 bots attached (not started). Returns what a round needs."""
    counter = [0]

    def sink(event) -> None:
        counter[0] += 1

    scenario = ProductsScenario(days=45)
    engine, sim = Exchange(sink), Simulator()
    engine.start("bots-bench", SEED, {})
    scenario.setup(engine)
    scenario.schedule_market(engine, sim, SEED)
    runner = BotRunner(engine, sim, SEED)
    bots: list[Bot] = []
    for i in range(MAKERS + LIGHT):
        name = f"mm-{i:02d}" if i < MAKERS else f"light-{i:02d}"
        engine.open_account(name, stp="cancel-resting")
        engine.credit(name, 10_000_000_00)
        if i < MAKERS:
            bot: Bot = CountingMaker(
                instrument=INSTRUMENT,
                index="H100-RENTAL",
                levels=2,
                size=10,
                half_spread=15 + 3 * i,
                requote_ns=10 * MINUTE_NS,
            )
        else:
            bot = Light()
        runner.add(name, name, bot, latency=LATENCY, budget_lines=budget_lines)
        bots.append(bot)
    return engine, sim, runner, bots, counter


def session(engine, sim, runner, bots, counter) -> dict:
    t0 = time.perf_counter()
    runner.start(SESSION_NS)
    sim.run(SESSION_NS, on_step=engine.advance)
    seconds = time.perf_counter() - t0
    calls = [bot.calls for bot in bots]
    return {
        "seconds": seconds,
        "calls": calls,
        "events": counter[0],
        "orders": sum(getattr(bot, "orders", 0) for bot in bots),
        "light_fills": sum(getattr(bot, "fills", 0) for bot in bots),
        "state_hash": engine.state_hash(),
    }


RESULTS: dict[str, dict] = {}


def _bench(benchmark, capsys, variant: str, budget_lines: int | None) -> None:
    rounds: list[dict] = []

    def setup():
        return (*build(budget_lines),), {}

    def target(*args) -> None:
        rounds.append(session(*args))

    benchmark.pedantic(target, setup=setup, rounds=ROUNDS, iterations=1)
    first = rounds[0]
    calls = first["calls"]
    assert min(calls) > 0, "a bot received no callback"
    assert first["orders"] > 0 and first["light_fills"] > 0, "the light bots never traded"
    for other in rounds[1:]:  # the same seed gives the same session, round after round
        assert other["calls"] == calls and other["state_hash"] == first["state_hash"]
    seconds = statistics.median(r["seconds"] for r in rounds)
    total = sum(calls)
    result = {
        "budget_lines": budget_lines,
        "rounds": len(rounds),
        "round_seconds": [round(r["seconds"], 3) for r in rounds],
        "median_s": seconds,
        "callbacks": total,
        "callbacks_per_s": total / seconds,
        "us_per_callback": seconds / total * 1e6,
        "maker_callbacks": sum(calls[:MAKERS]),
        "light_callbacks": sum(calls[MAKERS:]),
        "events": first["events"],
        "light_orders": first["orders"],
        "calls": calls,
        "state_hash": first["state_hash"],
    }
    RESULTS[variant] = result
    benchmark.extra_info.update({k: v for k, v in result.items() if k != "calls"})
    line = (
        f"\n[bots] {variant:<9} {MAKERS + LIGHT} bots, {total:,} callbacks, "
        f"{result['events']:,} events in {seconds:.2f} s (median of {len(rounds)}): "
        f"{result['callbacks_per_s']:,.0f} callbacks/s ({result['us_per_callback']:.1f} us each)"
    )
    if {"budget", "no_budget"} <= RESULTS.keys():
        with_budget, without = RESULTS["budget"], RESULTS["no_budget"]
        assert with_budget["calls"] == without["calls"], "the budget changed what bots received"
        assert with_budget["state_hash"] == without["state_hash"], "the budget changed the run"
        ratio = with_budget["median_s"] / without["median_s"]
        extra_us = (with_budget["median_s"] - without["median_s"]) / total * 1e6
        benchmark.extra_info.update(budget_slowdown=ratio, budget_us_per_callback=extra_us)
        line += (
            f"\n[bots] the budget's cost: {ratio:.2f}x the time without it "
            f"({extra_us:+.1f} us a callback)"
        )
    with capsys.disabled():
        print(line)


def test_callbacks_with_budget(benchmark, capsys):
    _bench(benchmark, capsys, "budget", DEFAULT_LINES)


def test_callbacks_without_budget(benchmark, capsys):
    _bench(benchmark, capsys, "no_budget", None)
