"""What the runner hands a bot: only the messages of callbacks it overrides (and book views,
which ``ctx.book()`` keeps); a batch with nothing the bot hears is counted and its views kept,
and no callback machinery runs. The log and every callback that runs are those of a runner
that hands every bot everything (``clients.runner._hearing`` answering ``None``)."""

from __future__ import annotations

import pytest

import clients.runner as runner_module
from clients.bot import Bot
from clients.latency import Latency
from clients.runner import BotRunner
from exchange.core import events as ev
from exchange.core.clock import Simulator
from exchange.kernel.engine import DAY_NS, Exchange
from exchange.sessions import session
from exchange.sessions.scenario_products import ProductsScenario
from exchange.store.event_store import EventStore

# every test here runs with both runner twins (tests/clients/conftest.py)
pytestmark = pytest.mark.usefixtures("twin")
MS = 1_000_000
HOUR = 3_600 * 10**9


def _market(days: int):
    """A products market (indices, perp, swaps, margin) without its scripted participants."""
    events: list = []
    scenario = ProductsScenario(days=45)
    engine, sim = Exchange(events.append), Simulator()
    engine.start("test", 3, {})
    scenario.setup(engine)
    scenario.schedule_market(engine, sim, 3)
    return engine, sim, BotRunner(engine, sim, 3), events, days * DAY_NS


class Quoter(Bot):
    """Quotes around each rental print."""

    books = ("H100-PERP",)

    def on_index(self, ctx, index):
        if index.index == "H100-RENTAL":
            ctx.cancel_all("H100-PERP")
            ctx.submit("H100-PERP", "buy", index.value - 20, 3)
            ctx.submit("H100-PERP", "sell", index.value + 20, 3)


class Taker(Bot):
    """Lifts the offer whenever the book shows one (a trade, fills, order updates)."""

    books = ("H100-PERP",)

    def on_book(self, ctx, book):
        if book.best_ask is not None and ctx.positions().get("H100-PERP", 0) < 10:
            ctx.submit(book.instrument, "buy", 0, 1, order_type="market")


class IndexOnly(Bot):
    """Overrides on_index only."""

    def __init__(self):
        self.prints = 0

    def on_index(self, ctx, index):
        self.prints += 1


class Watcher(Bot):
    """Overrides on_timer only: reads the book it was last shown, every hour."""

    def __init__(self):
        self.seen: list = []

    def on_start(self, ctx):
        ctx.schedule(ctx.now + HOUR, "look")

    def on_timer(self, ctx, tag):
        self.seen.append((ctx.now, ctx.book("H100-PERP")))
        ctx.schedule(ctx.now + HOUR, "look")


class Twin(Watcher):
    """A Watcher that also overrides on_book (so every view reaches a callback)."""

    def on_book(self, ctx, book):
        pass


def _dispatched(monkeypatch) -> list[tuple[str, list[str]]]:
    """Record every batch handed to a bot's callbacks: (bot name, callback names)."""
    handed: list[tuple[str, list[str]]] = []
    dispatch = runner_module.dispatch

    def recording(bot, ctx, messages, *args):
        handed.append((ctx.name, [name for name, _ in messages]))
        return dispatch(bot, ctx, messages, *args)

    monkeypatch.setattr(runner_module, "dispatch", recording)
    return handed


@pytest.mark.parametrize("twin", ["python"], indirect=True)  # patches the reference's dispatch
def test_a_bot_is_handed_only_the_callbacks_it_overrides_and_the_book_views(monkeypatch):
    handed = _dispatched(monkeypatch)
    engine, sim, runner, events, end = _market(days=2)
    index_only = IndexOnly()
    runner.add("q", "maker", Quoter())
    runner.add("t", "taker", Taker())
    runner.add("i", "owner", index_only)
    runner.start(end)
    sim.run(end, on_step=engine.advance)
    assert any(e.kind == ev.FILL for e in events)  # trades, fills and order updates were told
    names = {name for bot, batch in handed if bot == "i" for name in batch}
    # no on_trade, on_mark, on_funding (book views travel, for ctx.book(), with what it hears)
    assert "on_index" in names and names <= {"on_start", "on_index", "on_book", "on_stop"}
    assert index_only.prints > 0
    taker = {name for bot, batch in handed if bot == "t" for name in batch}
    assert "on_order" not in taker and "on_fill" not in taker and "on_book" in taker


@pytest.mark.parametrize("twin", ["python"], indirect=True)  # patches the reference's dispatch
def test_a_batch_the_bot_hears_nothing_of_is_not_handed_over_but_keeps_its_book_views(
    monkeypatch,
):
    handed = _dispatched(monkeypatch)
    engine, sim, runner, events, end = _market(days=2)
    watcher, twin = Watcher(), Twin()
    runner.add("q", "maker", Quoter())
    runner.add("t", "taker", Taker())
    # the same latency (no jitter): both are shown every view at the same time
    runner.add("w", "owner", watcher, latency=Latency(fixed_ns=2 * MS))
    runner.add("v", "guarantor", twin, latency=Latency(fixed_ns=2 * MS))
    runner.start(end)
    sim.run(end, on_step=engine.advance)
    # the watcher is handed its own timers only; the twin every book view too
    assert {name for bot, batch in handed if bot == "w" for name in batch} == {
        "on_start",
        "on_timer",
        "on_stop",
    }
    assert "on_book" in {name for bot, batch in handed if bot == "v" for name in batch}
    # yet ctx.book() showed the watcher every view, as it showed the twin
    assert len(watcher.seen) > 40 and sum(book is not None for _, book in watcher.seen) > 40
    assert watcher.seen == twin.seen


@pytest.mark.parametrize("twin", ["python"], indirect=True)  # patches the reference's dispatch
def test_a_batch_the_bot_hears_nothing_of_still_counts_toward_its_step_limit(monkeypatch):
    handed = _dispatched(monkeypatch)
    engine, sim, runner, events, end = _market(days=2)
    runner.add("q", "maker", Quoter())
    runner.add("t", "taker", Taker())
    # two deliveries a simulated second: its start and the first print's instant, then the
    # third -- the book view after the quoter's orders rest, alone in its batch -- stops it
    runner.add("w", "owner", Bot(), max_steps=2)
    runner.start(end)
    sim.run(end, on_step=engine.advance)
    failed = [e for e in events if e.kind == ev.BOT_FAILED]
    assert len(failed) == 1 and failed[0].account == "owner" and failed[0].t < 10**9
    assert failed[0].data["cause"] == "limit" and "max_steps=2" in failed[0].data["detail"]
    assert failed[0].data["callback"] == "on_book"  # named by its batch, though not overridden
    assert [batch for bot, batch in handed if bot == "w"] == [["on_start"]]


def test_which_callbacks_a_bot_overrides_is_read_when_the_runner_starts(monkeypatch):
    class Late(Bot):
        def __init__(self):
            self.prints = []

        def on_start(self, ctx):
            self.on_index = lambda ctx, index: self.prints.append(index)

    engine, sim, runner, events, end = _market(days=1)
    late = Late()
    runner.add("l", "owner", late)
    runner.start(end)
    sim.run(end, on_step=engine.advance)
    assert any(e.kind == ev.INDEX_PUBLISHED for e in events)
    assert late.prints == []  # not overridden at the start: no print is made for it


def _session(monkeypatch, tmp_path, hearing: bool, tap: bool):
    """The flagship's first days: its log digest and every callback that ran (bot, time,
    callback, payload, the book views its context held)."""
    ran: list = []
    run_within = runner_module.run_within

    def recording(lines, fn, *args):
        ctx = args[0]
        ran.append((ctx.name, ctx.now, fn.__name__, args[1:], dict(ctx._books)))
        return run_within(lines, fn, *args)

    with monkeypatch.context() as patch:
        patch.setattr(runner_module, "run_within", recording)
        patch.setattr(runner_module, "TAP_LINES", tap)
        # the reference runner's own run_within is what is recorded (the compiled twin's
        # callbacks are held to the same log in test_runner_twins.py)
        patch.setattr(runner_module, "RUNNER", "python")
        if not hearing:
            patch.setattr(runner_module, "_hearing", lambda driver: None)
        db = tmp_path / f"flagship-{hearing}-{tap}.db"
        session.run("guarantor-spiral", db, seed=7, overrides={"days": 8})
    with EventStore.open(db, mode="r") as store:
        return store.digest(), ran


@pytest.mark.parametrize("twin", ["python"], indirect=True)  # patches the reference's run_within
def test_the_flagship_runs_the_same_callbacks_and_log_as_when_every_bot_hears_everything(
    monkeypatch, tmp_path
):
    # the reference: every bot handed everything, through the listener; against the default
    # (the lines' tap); the listener with hearing is the small markets' above
    everything = _session(monkeypatch, tmp_path, hearing=False, tap=False)
    heard = _session(monkeypatch, tmp_path, hearing=True, tap=True)
    assert heard[0] == everything[0]
    assert len(heard[1]) > 1_000
    assert heard[1] == everything[1]
