"""The bot runner: latency in simulated time, ordering, isolation, failure and the budget."""

from __future__ import annotations

import pytest

from clients.bot import Bot
from clients.latency import Latency, Link
from clients.runner import BotRunner, bot_rng, describe
from exchange.core import events as ev
from exchange.core.clock import Simulator
from exchange.core.events import encode
from exchange.kernel.engine import DAY_NS, Exchange
from exchange.sessions.scenario_products import ProductsScenario

# every test here runs with both runner twins (tests/clients/conftest.py)
pytestmark = pytest.mark.usefixtures("twin")
MS = 1_000_000


def market(days: int = 45, seed: int = 3):
    """A products market (indices, perp, swaps, margin) without its scripted participants."""
    events: list = []
    scenario = ProductsScenario(days=45)
    engine, sim = Exchange(events.append), Simulator()
    engine.start("test", seed, {})
    scenario.setup(engine)
    scenario.schedule_market(engine, sim, seed)
    return engine, sim, BotRunner(engine, sim, seed), events, days * DAY_NS


class Recorder(Bot):
    """Remembers when and what it was told."""

    def __init__(self):
        self.seen: list[tuple[int, str, object]] = []

    def on_start(self, ctx):
        self.seen.append((ctx.now, "start", None))

    def on_index(self, ctx, index):
        self.seen.append((ctx.now, "index", index))

    def on_order(self, ctx, update):
        self.seen.append((ctx.now, "order", update))

    def on_fill(self, ctx, fill):
        self.seen.append((ctx.now, "fill", fill))

    def on_book(self, ctx, book):
        self.seen.append((ctx.now, "book", book))


class Quoter(Recorder):
    """Quotes once around each rental print and remembers its refs."""

    def __init__(self, size=5):
        super().__init__()
        self.size, self.refs = size, []

    def on_index(self, ctx, index):
        super().on_index(ctx, index)
        if index.index == "H100-RENTAL":
            ctx.cancel_all("H100-PERP")
            self.refs.append(ctx.submit("H100-PERP", "buy", index.value - 20, self.size))
            self.refs.append(ctx.submit("H100-PERP", "sell", index.value + 20, self.size))


def test_market_data_reaches_a_bot_exactly_its_latency_after_the_event():
    engine, sim, runner, events, end = market(days=2)
    bot = Recorder()
    runner.add("r", "maker", bot, latency=Latency(fixed_ns=3 * MS))
    runner.start(end)
    sim.run(end, on_step=engine.advance)
    # what was printed early enough to arrive before the session ended
    prints = [e for e in events if e.kind == ev.INDEX_PUBLISHED and e.t + 3 * MS <= end]
    got = [(t, x) for t, what, x in bot.seen if what == "index"]
    assert len(got) == len(prints) > 0
    for (t, index), event in zip(got, prints, strict=True):
        assert index.t == event.t and index.value == event.price
        assert t == event.t + 3 * MS


def test_commands_reach_the_exchange_after_the_latency_and_in_order():
    engine, sim, runner, events, end = market(days=2)
    runner.add("q", "maker", Quoter(), latency=Latency(fixed_ns=2 * MS, jitter_ns=MS))
    runner.start(end)
    sim.run(end, on_step=engine.advance)
    prints = {e.t for e in events if e.kind == ev.INDEX_PUBLISHED and e.instrument == "H100-RENTAL"}
    received = [e for e in events if e.kind == ev.COMMAND_RECEIVED and e.account == "maker"]
    assert received
    # each command arrives 2..3 ms (data) + 2..3 ms (command) after the print it answers
    for e in received:
        assert any(4 * MS <= e.t - p <= 6 * MS for p in prints)
    assert [e.t for e in received] == sorted(e.t for e in received)


def test_links_never_reorder_and_jitter_is_seeded():
    a = Link(Latency(fixed_ns=10, jitter_ns=1_000), bot_rng(1, "x", 1))
    b = Link(Latency(fixed_ns=10, jitter_ns=1_000), bot_rng(1, "x", 1))
    times_a = [a.arrival(t) for t in range(0, 5_000, 7)]
    assert times_a == [b.arrival(t) for t in range(0, 5_000, 7)]
    assert times_a == sorted(times_a)
    c = Link(Latency(fixed_ns=10, jitter_ns=1_000), bot_rng(2, "x", 1))
    assert times_a != [c.arrival(t) for t in range(0, 5_000, 7)]


def test_a_bot_hears_only_about_its_own_orders_and_fills_with_its_refs():
    engine, sim, runner, events, end = market(days=3)
    maker, taker = Quoter(size=3), Recorder()

    class Taker(Recorder):
        def on_book(self, ctx, book):
            super().on_book(ctx, book)
            if book.best_ask is not None and ctx.positions().get("H100-PERP", 0) < 10:
                ctx.submit(book.instrument, "buy", 0, 1, order_type="market")

    taker = Taker()
    runner.add("m", "maker", maker)
    runner.add("t", "taker", taker)
    runner.start(end)
    sim.run(end, on_step=engine.advance)
    mine = {e.order_id for e in events if e.kind == ev.ORDER_ACCEPTED and e.account == "maker"}
    orders = [x for _, what, x in maker.seen if what == "order"]
    fills = [x for _, what, x in maker.seen if what == "fill"]
    assert orders and fills
    assert {u.order_id for u in orders} <= mine
    assert {f.order_id for f in fills} <= mine
    accepted = [u for u in orders if u.status == "accepted"]
    assert [u.ref for u in accepted] == maker.refs[: len(accepted)]
    assert all(f.liquidity == "maker" for f in fills)
    taker_fills = [x for _, what, x in taker.seen if what == "fill"]
    assert taker_fills and all(f.liquidity == "taker" for f in taker_fills)


class Raises(Quoter):
    def on_fill(self, ctx, fill):
        raise ZeroDivisionError("bad arithmetic in the strategy")


class Spins(Bot):
    def on_index(self, ctx, index):
        while True:
            pass


def _run_with(bot, other=None, days=3):
    engine, sim, runner, events, end = market(days=days)
    runner.add("bad", "maker", bot)
    if other is not None:
        runner.add("good", "taker", other)
    runner.start(end)
    sim.run(end, on_step=engine.advance)
    return engine, events


def test_a_bot_that_raises_is_stopped_its_orders_cancelled_and_the_session_goes_on():
    class Taker(Bot):
        def on_book(self, ctx, book):
            if book.best_ask is not None:
                ctx.submit(book.instrument, "buy", 0, 1, order_type="market")

    engine, events = _run_with(Raises(), Taker())
    failed = [e for e in events if e.kind == ev.BOT_FAILED]
    assert len(failed) == 1
    data = failed[0].data
    assert data["bot"] == "bad" and data["cause"] == "raised" and data["callback"] == "on_fill"
    assert "ZeroDivisionError: bad arithmetic" in data["detail"]
    assert "/" not in data["detail"]  # no machine-specific paths in the log
    after = [e for e in events if e.seq > failed[0].seq]
    assert not any(e.kind == ev.COMMAND_RECEIVED and e.account == "maker" for e in after)
    assert not [o for o in engine.orders.values() if o.account == "maker"]
    # the index prints and margin cycles went on to the end
    assert any(e.kind == ev.INDEX_PUBLISHED for e in after)


def test_a_bot_that_loops_forever_is_stopped_by_its_budget():
    engine, events = _run_with(Spins())
    failed = [e for e in events if e.kind == ev.BOT_FAILED]
    assert len(failed) == 1 and failed[0].data["cause"] == "budget"
    assert failed[0].data["callback"] == "on_index"
    assert events[-1].t > failed[0].t


def test_the_same_seed_gives_the_same_events_with_bots():
    def once(seed):
        engine, sim, runner, events, end = market(days=2, seed=seed)
        runner.add("q", "maker", Quoter(), latency=Latency(fixed_ns=MS, jitter_ns=5 * MS))
        runner.start(end)
        sim.run(end, on_step=engine.advance)
        return [encode(e) for e in events]

    assert once(5) == once(5)
    assert once(5) != once(6)


def test_describe_strips_directories():
    try:
        raise ValueError("x")
    except ValueError as exc:
        text = describe(exc)
    assert "test_runner.py:" in text and "/" not in text
