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

Each session builds a fresh market (untimed) and times ``runner.start`` + ``sim.run`` with
``time.perf_counter``. Callbacks are counted by the bots themselves (``self.calls += 1`` in
every callback they receive), so the figure is callbacks actually invoked. Four variants, same
seed: every bot under the default per-callback budget (``DEFAULT_LINES``, call and line counting,
:mod:`clients.budget`) counted by the compiled counter (``budget``, the default), the same
budget counted by the Python reference counter (``python_budget``) and every bot with
``budget_lines=None`` (``no_budget``) -- these three on the reference engine, clock and runner --
and the default budget on the kernel a session runs by default (``compiled``: the compiled
engine, clock, runner and contexts; the same callbacks, bot by bot, and the same state hash
are asserted). A round runs one session of each, in an order rotated
from round to round, so that a change in the machine's load weighs on them alike; each
variant's time is its median over the rounds. Each budget's cost is its ratio to
``no_budget``, and the compiled counter's gain its ratio to the Python one. Asserted: every bot
received callbacks, trades happened, every session of every variant gives the same callback
counts bot by bot and the same state hash (behaviour must not depend on the budget, nor on
which counter counts it). No timing is asserted. The process's CPU time
(``time.process_time``) is reported beside the wall time: on a loaded machine it varies less.

Units: callbacks/s (callbacks invoked per second of wall time), us per callback.
"""

from __future__ import annotations

import statistics
import time

from clients import budget
from clients.bot import Bot
from clients.budget import DEFAULT_LINES
from clients.latency import Latency
from clients.runner import make_runner
from clients.strategies import MarketMaker
from exchange.kernel.engine import DAY_NS
from exchange.kernel.engines import clock_class, engine_class
from exchange.sessions.scenario_products import HOUR_NS, ProductsScenario

SEED = 7
MAKERS = 10
LIGHT = 90
SESSION_NS = DAY_NS
ROUNDS = 2  # each round runs every variant once, in a rotated order
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


def build(budget_lines: int | None, kernel: str = "reference"):
    """A fresh market with 100 bots attached (not started), on the ``kernel`` named (the
    engine, its clock and :func:`clients.runner.make_runner`'s runner for it: the compiled
    engine gets the compiled runner and contexts). Returns what a round needs."""
    counter = [0]

    def sink(event) -> None:
        counter[0] += 1

    scenario = ProductsScenario(days=45)
    engine, sim = engine_class(kernel)(sink), clock_class(kernel)()
    engine.start("bots-bench", SEED, {})
    scenario.setup(engine)
    scenario.schedule_market(engine, sim, SEED)
    runner = make_runner(engine, sim, SEED)
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
    t0, c0 = time.perf_counter(), time.process_time()
    runner.start(SESSION_NS)
    sim.run(SESSION_NS, on_step=engine.advance)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    calls = [bot.calls for bot in bots]
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "calls": calls,
        "events": counter[0],
        "orders": sum(getattr(bot, "orders", 0) for bot in bots),
        "light_fills": sum(getattr(bot, "fills", 0) for bot in bots),
        "state_hash": engine.state_hash(),
    }


#: Variant -> (budget_lines, counter, kernel). The first three run the reference engine and
#: runner (the budget's cost is measured there); ``compiled`` is what a session runs by
#: default: the compiled engine, clock, runner and contexts, under the default budget.
VARIANTS = {
    "budget": (DEFAULT_LINES, "compiled", "reference"),
    "python_budget": (DEFAULT_LINES, "python", "reference"),
    "no_budget": (None, "compiled", "reference"),
    "compiled": (DEFAULT_LINES, "compiled", "compiled"),
}
RESULTS: dict[str, dict] = {}


def _summary(variant: str, rounds: list[dict]) -> dict:
    first = rounds[0]
    calls = first["calls"]
    assert min(calls) > 0, "a bot received no callback"
    assert first["orders"] > 0 and first["light_fills"] > 0, "the light bots never traded"
    for other in rounds[1:]:  # the same seed gives the same session, round after round
        assert other["calls"] == calls and other["state_hash"] == first["state_hash"]
    seconds = statistics.median(r["seconds"] for r in rounds)
    total = sum(calls)
    budget_lines, counter, _kernel = VARIANTS[variant]
    return {
        "budget_lines": budget_lines,
        "counter": counter if budget_lines is not None else None,
        "rounds": len(rounds),
        "round_seconds": [round(r["seconds"], 3) for r in rounds],
        "median_s": seconds,
        "median_cpu_s": statistics.median(r["cpu_seconds"] for r in rounds),
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


def test_callbacks_with_and_without_budget(benchmark, capsys):
    rounds: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    order = list(VARIANTS)

    def setup():
        return (*(build(VARIANTS[variant][0], VARIANTS[variant][2]) for variant in order),), {}

    def target(*markets) -> None:
        for variant, market in zip(order, markets, strict=True):
            default, budget.COUNTER = budget.COUNTER, VARIANTS[variant][1]  # run_within reads it
            try:
                rounds[variant].append(session(*market))
            finally:
                budget.COUNTER = default
        order.append(order.pop(0))  # the next round starts with the next variant

    benchmark.pedantic(target, setup=setup, rounds=ROUNDS, iterations=1)
    lines = []
    for variant in VARIANTS:
        result = RESULTS[variant] = _summary(variant, rounds[variant])
        benchmark.extra_info.update(
            {f"{variant}_{k}": v for k, v in result.items() if k not in ("calls", "state_hash")}
        )
        lines.append(
            f"[bots] {variant:<13} {MAKERS + LIGHT} bots, {result['callbacks']:,} callbacks, "
            f"{result['events']:,} events in {result['median_s']:.2f} s (median of "
            f"{result['rounds']}): {result['callbacks_per_s']:,.0f} callbacks/s "
            f"({result['us_per_callback']:.1f} us each)"
        )
    without = RESULTS["no_budget"]
    for name in ("budget", "python_budget"):
        assert RESULTS[name]["calls"] == without["calls"], "the budget changed what bots received"
        assert RESULTS[name]["state_hash"] == without["state_hash"], "the budget changed the run"
    compiled, python = RESULTS["budget"], RESULTS["python_budget"]
    assert compiled["state_hash"] == python["state_hash"], "the two counters differ"
    kernel = RESULTS["compiled"]
    assert kernel["calls"] == compiled["calls"], "the compiled stack changed what bots received"
    assert kernel["state_hash"] == compiled["state_hash"], "the compiled stack changed the run"
    total = without["callbacks"]
    costs = {}
    for name, label in (("budget", "compiled"), ("python_budget", "Python")):
        ratio = RESULTS[name]["median_s"] / without["median_s"]
        extra_us = costs[name] = (RESULTS[name]["median_s"] - without["median_s"]) / total * 1e6
        cpu_ratio = RESULTS[name]["median_cpu_s"] / without["median_cpu_s"]
        cpu_us = (RESULTS[name]["median_cpu_s"] - without["median_cpu_s"]) / total * 1e6
        benchmark.extra_info.update(
            {
                f"{name}_slowdown": ratio,
                f"{name}_us_per_callback": extra_us,
                f"{name}_cpu_slowdown": cpu_ratio,
                f"{name}_cpu_us_per_callback": cpu_us,
            }
        )
        lines.append(
            f"[bots] the budget's cost, {label} counter: {ratio:.2f}x the time without it "
            f"({extra_us:+.1f} us a callback; CPU time {cpu_ratio:.2f}x, {cpu_us:+.1f} us)"
        )
    gain = compiled["median_s"] / python["median_s"]
    cpu_gain = compiled["median_cpu_s"] / python["median_cpu_s"]
    benchmark.extra_info.update(compiled_over_python=gain, compiled_over_python_cpu=cpu_gain)
    lines.append(
        f"[bots] compiled against Python counter: {gain:.2f}x the time, "
        f"{costs['budget'] - costs['python_budget']:+.1f} us a callback (CPU time {cpu_gain:.2f}x)"
    )
    speedup = compiled["median_s"] / kernel["median_s"]
    benchmark.extra_info.update(compiled_stack_speedup=speedup)
    lines.append(
        f"[bots] the compiled engine, clock, runner and contexts (a session's default), same "
        f"budget: {kernel['callbacks_per_s']:,.0f} callbacks/s, {speedup:.2f}x the reference's"
    )
    with capsys.disabled():
        print("\n" + "\n".join(lines))
