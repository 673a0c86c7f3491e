"""The bot runner reading a recorded run's events from their lines (``clients.runner.TAP_LINES``,
issue #20 point 4) against its listener of every event (``Exchange.subscribe``, the reference):
the same log byte for byte (its chain digest) and, for every bot, the same deliveries -- every
callback's messages in order, the account snapshot it reads, what it sends back."""

from __future__ import annotations

from pathlib import Path

import pytest

import clients.runner as runner_module
from clients.bot import Bot
from clients.runner import BotRunner, LocalDriver
from exchange.core import _lines
from exchange.core.clock import Simulator
from exchange.core.events import TYPED_FIELDS, Event
from exchange.kernel.engine import DAY_NS, Exchange
from exchange.sessions import session
from exchange.sessions.scenario_products import ProductsScenario
from exchange.store.event_store import _CODES, EventStore

# every test here runs with both runner twins (tests/clients/conftest.py)
pytestmark = pytest.mark.usefixtures("twin")

SEED = 3


def _record(monkeypatch, tap: bool):
    """Run with the runner reading lines (``tap``) or listening; returns what every bot's
    driver was given and gave back, and whether each runner started did read the lines."""
    monkeypatch.setattr(runner_module, "TAP_LINES", tap)
    deliveries: list = []
    tapped: list[bool] = []
    deliver, start = LocalDriver.deliver, BotRunner.start

    def recording_deliver(self, now, messages, account):
        out = deliver(self, now, messages, account)
        deliveries.append((self.ctx.name, now, list(messages), account(), out))
        return out

    def recording_start(self, end_ns):
        start(self, end_ns)
        tapped.append(self._tap is not None)

    monkeypatch.setattr(LocalDriver, "deliver", recording_deliver)
    monkeypatch.setattr(BotRunner, "start", recording_start)
    return deliveries, tapped


def _log(db: Path) -> tuple[str, list[bytes]]:
    with EventStore.open(db, mode="r") as store:
        return store.digest(), list(store.payloads())


def _both(monkeypatch, tmp_path, name, **kwargs):
    """Run ``session.run(name, ...)`` listening, then reading lines: both runs' log and
    deliveries, after checking that each took the path asked for."""
    results = []
    for tap in (False, True):
        with monkeypatch.context() as patch:
            deliveries, tapped = _record(patch, tap)
            db = tmp_path / f"{name}-{tap}.db"
            session.run(name, db, **kwargs)
        assert tapped and all(t is tap for t in tapped)
        results.append((_log(db), deliveries))
    return results


def _kinds(deliveries) -> set[str]:
    return {name for _, _, messages, _, _ in deliveries for name, _ in messages}


def test_the_flagship_gives_every_bot_the_same_deliveries_and_the_same_log_from_the_lines(
    monkeypatch, tmp_path
):
    listened, read = _both(monkeypatch, tmp_path, "guarantor-spiral", overrides={"days": 30})
    assert read[0] == listened[0]  # the chain digest and every payload
    assert read[1] == listened[1]
    assert len(read[1]) > 1_000
    assert {"on_book", "on_trade", "on_fill", "on_funding", "on_mark"} <= _kinds(read[1])


# ------------------------------------------------------------------ the products market, test bots
class Records(Bot):
    """Remembers every callback, its arguments and the account it read."""

    def __init__(self):
        self.seen: list = []

    def _note(self, ctx, name, payload=None):
        self.seen.append(
            (ctx.now, name, payload, ctx.balance(), ctx.positions(), ctx.open_orders())
        )

    def on_start(self, ctx):
        self._note(ctx, "start")

    def on_book(self, ctx, book):
        self._note(ctx, "book", book)

    def on_trade(self, ctx, trade):
        self._note(ctx, "trade", trade)

    def on_order(self, ctx, update):
        self._note(ctx, "order", update)

    def on_fill(self, ctx, fill):
        self._note(ctx, "fill", fill)

    def on_index(self, ctx, index):
        self._note(ctx, "index", index)

    def on_mark(self, ctx, mark):
        self._note(ctx, "mark", mark)

    def on_funding(self, ctx, funding):
        self._note(ctx, "funding", funding)

    def on_margin_call(self, ctx, call):
        self._note(ctx, "margin_call", call)

    def on_timer(self, ctx, tag):
        self._note(ctx, "timer", tag)


class Quotes(Records):
    """Quotes the perpetual around each rental print; a bad price now and then (rejected,
    with its ref) and a command no bot may send (refused by the runner, no ref)."""

    def on_index(self, ctx, index):
        super().on_index(ctx, index)
        if index.index != "H100-RENTAL":
            return
        ctx.cancel_all("H100-PERP")
        ctx.submit("H100-PERP", "buy", index.value - 20, 5)
        ctx.submit("H100-PERP", "sell", index.value + 20, 5)
        if len(self.seen) % 7 == 0:
            ctx.submit("H100-PERP", "buy", -5, 1)  # refused by the exchange: a ref comes back
            ctx.schedule(ctx.now + 1, "again")
        if len(self.seen) % 11 == 0:
            ctx._send({"type": "bot_failed", "instrument": "H100-PERP"}, 99)


class Takes(Records):
    """Withdraws nearly all its cash, then buys at the market on every book with an ask:
    fills, a position that pays or earns funding, and margin calls once it outgrows the
    cash."""

    def on_start(self, ctx):
        super().on_start(ctx)
        ctx.withdraw(ctx.balance() - 20_000_00)

    def on_book(self, ctx, book):
        super().on_book(ctx, book)
        if book.instrument == "H100-PERP" and book.asks:
            ctx.submit("H100-PERP", "buy", 0, 3, order_type="market")


class Raises(Records):
    """Fails at its third index print."""

    def on_index(self, ctx, index):
        super().on_index(ctx, index)
        if sum(entry[1] == "index" for entry in self.seen) == 3:
            raise ZeroDivisionError("bad arithmetic")


def test_the_products_market_with_test_bots_gives_the_same_callbacks_and_log_from_the_lines(
    monkeypatch, tmp_path
):
    bots_of_run = []

    def drive(engine, sim):
        bots = {"maker": Quotes(), "taker": Takes(), "owner": Raises()}
        runner = BotRunner(engine, sim, SEED)
        for account, bot in bots.items():
            runner.add(account, account, bot)
        runner.start(ProductsScenario(days=45).end_ns)
        bots_of_run.append(bots)

    listened, read = _both(
        monkeypatch, tmp_path, "products", seed=SEED, overrides={"days": 45}, drive=drive
    )
    assert read[0] == listened[0]
    assert read[1] == listened[1]
    first, second = bots_of_run
    for account in first:
        assert second[account].seen == first[account].seen, account
    seen = [entry for bot in second.values() for entry in bot.seen]
    names = {entry[1] for entry in seen}
    assert {"fill", "funding", "order", "book", "trade", "timer", "mark", "margin_call"} <= names
    rejected = [e[2] for e in seen if e[1] == "order" and e[2].status == "rejected"]
    assert any(update.ref is not None for update in rejected)
    assert any(update.ref is None for update in rejected)  # the runner's refusal
    assert any(b"BotFailed" in line for line in read[0][1])


# ------------------------------------------------------------------ unrecorded: the listener stays
def test_an_exchange_whose_sink_is_not_a_line_batch_keeps_the_listener():
    events: list = []
    engine, sim = Exchange(events.append), Simulator()
    engine.start("test", SEED, {})
    runner = BotRunner(engine, sim, SEED)
    runner.start(DAY_NS)
    assert runner._tap is None and engine.line_sink() is None


def test_a_line_batch_already_read_by_another_tap_keeps_the_listener_for_the_second_runner():
    lines = _lines.LineBatch(1, _CODES, TYPED_FIELDS, len(Event._fields))
    engine, sim = Exchange(lines.append), Simulator()
    engine.start("test", SEED, {})
    first, second = BotRunner(engine, sim, SEED), BotRunner(engine, sim, SEED)
    first.start(DAY_NS)
    assert first._tap is not None and lines.tap is first._tap
    second.start(DAY_NS)
    assert second._tap is None and engine.line_sink() is None  # subscribed: a tee now


@pytest.mark.parametrize("tap", [False, True])
def test_a_snapshot_read_in_the_instant_of_the_change_sees_it(monkeypatch, tap):
    """A delivery at the same instant as the fill, before the publish, reads the account
    after the fill (the lines are scanned before the snapshot is read)."""
    monkeypatch.setattr(runner_module, "TAP_LINES", tap)
    lines = _lines.LineBatch(1, _CODES, TYPED_FIELDS, len(Event._fields))
    scenario = ProductsScenario(days=45)
    engine, sim = Exchange(lines.append), Simulator()
    engine.start("test", SEED, {})
    scenario.setup(engine)
    runner = BotRunner(engine, sim, SEED)
    seen = []

    class Reads(Bot):
        def on_timer(self, ctx, tag):
            seen.append(ctx.balance())

    runner.add("reads", "maker", Reads())
    runner.start(DAY_NS)
    cash = engine.accounts["maker"].cash
    slot = runner.slots[0]
    # at one instant: a read (the snapshot made), a deposit, a read again
    sim.schedule(100, runner._timer, slot, "read")
    sim.schedule(100, engine.handle, {"type": "deposit", "account": "maker", "amount": 7})
    sim.schedule(100, runner._timer, slot, "read")
    slot.timers += 2
    sim.run(200, on_step=engine.advance)
    assert seen == [cash, cash + 7]
    assert (runner._tap is not None) is tap
