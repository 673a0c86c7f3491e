"""An in-process bot acts for its own account only, and cannot reach the exchange (issue #17,
point 1), nor run a session away with timers or steps (point 3b).

Each attack is the one reported: a command rewritten to another account, a ``bot_failed``
slipped into the outbox, a command changed after it was sent, the exchange reached through the
context. After each, the log shows no foreign withdrawal, no ``BotFailed`` for the victim, and
the victim's orders intact."""

from __future__ import annotations

import gc
import types
from functools import partial

import orjson
import pytest

from clients import _runner
from clients.bot import Bot
from clients.latency import Latency
from clients.runner import (
    DEFAULT_MAX_COMMANDS,
    DEFAULT_MAX_STEPS,
    DEFAULT_MAX_TIMERS,
    MAX_COMMAND_BYTES,
    BotRunner,
    LocalDriver,
    Slot,
)
from exchange.core import events as ev
from exchange.core.clock import Simulator
from exchange.kernel.engine import Exchange
from exchange.store.fold import Fold
from tests.clients.test_runner import MS, Quoter, market
from tests.clients.test_strategies import every_strategy_session

# every test here runs with both runner twins (tests/clients/conftest.py)
pytestmark = pytest.mark.usefixtures("twin")


def run(attacker: Bot, days: int = 2, **options):
    """The products market with a quoting ``maker`` and ``attacker`` trading ``taker``."""
    engine, sim, runner, events, end = market(days=days)
    maker = Quoter()
    runner.add("mm", "maker", maker, latency=Latency(fixed_ns=MS))
    runner.add("evil", "taker", attacker, latency=Latency(fixed_ns=MS), **options)
    runner.start(end)
    sim.run(end, on_step=engine.advance)
    return engine, events, maker


def of(events, kind, account=None):
    return [e for e in events if e.kind == kind and account in (None, e.account)]


def assert_maker_untouched(engine, events, maker):
    """No command, withdrawal or BotFailed for the maker but its own bot's, which kept
    quoting to the end; the fold of the log reaches the live state."""
    assert not of(events, ev.WITHDRAWAL, "maker")
    assert not of(events, ev.BOT_FAILED, "maker")
    received = of(events, ev.COMMAND_RECEIVED, "maker")
    assert received and {e.data["command"]["type"] for e in received} <= {"submit", "cancel_all"}
    accepted = of(events, ev.ORDER_ACCEPTED, "maker")
    assert len(accepted) == len(maker.refs)  # every quote it sent, none cancelled for it
    assert engine.account_view("maker")[2]  # its last quotes still rest
    fold = Fold().apply_all(events)
    assert fold.state_hash() == engine.state_hash()


def test_a_command_rewritten_to_another_account_is_refused_against_the_bot_that_sent_it():
    class Thief(Bot):
        def on_start(self, ctx):
            ctx.withdraw(1000)
            ctx._outbox[-1][1]["account"] = "maker"

    engine, events, maker = run(Thief())
    (rejected,) = of(events, ev.COMMAND_REJECTED)
    assert rejected.account == "taker" and rejected.data["source"] == "runner"
    assert rejected.data["reason"] == "unauthorised: bot 'evil' trades 'taker', not 'maker'"
    assert rejected.data["command"] == {"account": "maker", "amount": 1000, "type": "withdraw"}
    assert not of(events, ev.WITHDRAWAL)
    assert_maker_untouched(engine, events, maker)


def test_a_bot_failed_command_from_a_bot_is_refused_and_the_victim_keeps_trading():
    class Framer(Bot):
        def on_start(self, ctx):
            ctx._outbox.append(
                (None, {"type": "bot_failed", "account": "maker", "bot": "mm", "cause": "raised"})
            )
            ctx._outbox.append((None, {"type": "bot_failed", "bot": "evil", "cause": "raised"}))

    engine, events, maker = run(Framer())
    assert not of(events, ev.BOT_FAILED)
    rejected = of(events, ev.COMMAND_REJECTED)
    assert [e.account for e in rejected] == ["taker", "taker"]
    assert {e.data["reason"] for e in rejected} == {
        "unauthorised: bot_failed is sent by the runner, never by a bot"
    }
    assert_maker_untouched(engine, events, maker)


def test_only_trading_command_types_leave_a_bots_outbox():
    class Odd(Bot):
        def on_start(self, ctx):
            ctx._outbox.append((None, {"type": "credit", "amount": 10**9}))
            ctx._outbox.append((None, ["deposit", 5]))
            ctx.deposit(7)

    engine, events, maker = run(Odd())
    reasons = [e.data["reason"] for e in of(events, ev.COMMAND_REJECTED, "taker")]
    assert reasons == [
        "type: expected one of submit, cancel, amend, cancel_all, deposit, withdraw, got 'credit'",
        "command: expected a mapping",
    ]
    assert [e.amount for e in of(events, ev.DEPOSIT, "taker") if e.t > 0] == [7]
    assert_maker_untouched(engine, events, maker)


def test_a_command_without_an_account_is_stamped_with_the_bots_own():
    class Bare(Bot):
        def on_start(self, ctx):
            ctx.deposit(11)
            del ctx._outbox[-1][1]["account"]

    engine, events, maker = run(Bare())
    (deposit,) = [e for e in of(events, ev.DEPOSIT) if e.t > 0]
    assert deposit.account == "taker" and deposit.amount == 11


def test_a_command_changed_after_its_callback_returned_arrives_as_sent():
    class Changer(Bot):
        def on_start(self, ctx):
            ctx.deposit(100)
            self.sent = ctx._outbox[-1][1]
            ctx.schedule(ctx.now + 1, "change")  # fires before the command arrives

        def on_timer(self, ctx, tag):
            self.sent.update(amount=10**9, account="maker")

    engine, events, maker = run(Changer(), days=1)
    (deposit,) = [e for e in of(events, ev.DEPOSIT) if e.t > 0]
    assert deposit.account == "taker" and deposit.amount == 100
    assert not of(events, ev.COMMAND_REJECTED)
    assert_maker_untouched(engine, events, maker)


def test_the_exchange_cannot_be_reached_through_the_context():
    """The reported path: the account source's closure held the exchange."""

    class Climber(Bot):
        def on_start(self, ctx):
            cells = ctx._account_source.__closure__
            engine = next(c.cell_contents for c in cells if hasattr(c.cell_contents, "handle"))
            engine.handle({"type": "withdraw", "account": "maker", "amount": 1000})

    engine, events, maker = run(Climber())
    (failed,) = of(events, ev.BOT_FAILED)
    assert failed.account == "taker" and failed.data["cause"] == "raised"
    assert "AttributeError" in failed.data["detail"]
    assert not of(events, ev.WITHDRAWAL)
    assert_maker_untouched(engine, events, maker)


# both twins' runner, slot and link classes (tests/clients/conftest.py)
_FORBIDDEN = (
    Exchange,
    Simulator,
    BotRunner,
    Slot,
    LocalDriver,
    _runner.CompiledRunner,
    _runner.CSlot,
    _runner.CLink,
)


def _reachable(roots) -> list[object]:
    """Every object reachable from ``roots`` through attributes, containers, closures, bound
    methods and partials (not through modules and classes: code is shared, state is not)."""
    seen: dict[int, object] = {}
    todo = list(roots)
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type | types.ModuleType):
            continue
        seen[id(obj)] = obj
        if isinstance(obj, dict):
            todo.extend(obj.keys())
            todo.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            todo.extend(obj)
        elif isinstance(obj, types.FunctionType):
            todo.extend(c.cell_contents for c in obj.__closure__ or () if c.cell_contents)
            todo.extend(obj.__defaults__ or ())
        elif isinstance(obj, types.MethodType):
            todo.extend((obj.__self__, obj.__func__))
        elif isinstance(obj, partial):
            todo.extend((obj.func, obj.args, obj.keywords))
        for name in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, name):
                todo.append(getattr(obj, name))
        # the compiled twin's objects (clients._runner.CSlot...) keep their fields in C: read
        # through their type's descriptors
        if type(obj).__module__ in ("clients._runner", "clients._context"):
            for name, field in vars(type(obj)).items():
                if isinstance(field, types.GetSetDescriptorType) and hasattr(obj, name):
                    todo.append(getattr(obj, name))
        if hasattr(obj, "__dict__") and not isinstance(obj, types.FunctionType):
            todo.append(vars(obj))
    return list(seen.values())


def test_nothing_a_bot_holds_leads_to_the_exchange_the_clock_or_the_runner():
    class Keeper(Quoter):
        """Keeps everything it is handed."""

        def __init__(self):
            super().__init__()
            self.kept = []

        def on_start(self, ctx):
            self.ctx = ctx
            self.kept.append((ctx.balance(), ctx.open_orders()))

        def on_book(self, ctx, book):
            super().on_book(ctx, book)
            self.kept.append((ctx.positions(), ctx.open_orders(), ctx._account))

        def on_trade(self, ctx, trade):
            self.kept.append(trade)

    engine, sim, runner, events, end = market(days=2)
    bot = Keeper()
    runner.add("k", "maker", bot)
    runner.start(end)
    sim.run(end // 2, on_step=engine.advance)  # mid-session, its context live
    assert len(bot.kept) > 10 and bot.ctx._account is not None
    found = [type(o).__name__ for o in _reachable([bot]) if isinstance(o, _FORBIDDEN)]
    assert not found
    # whereas the exchange is found from the runner's side (the walk can see it)
    assert any(isinstance(o, Exchange) for o in _reachable([runner.slots[0]]))
    assert gc.get_referrers  # in-process is no sandbox: gc still finds everything (docs)


# ---------------------------------------------------------------------- limits (3b)
class Bomb(Bot):
    """Answers every timer with ``fanout`` timers at ``now + 1`` (gives up, raising, after
    ``give_up`` callbacks, so that the test ends even where no limit stops it)."""

    def __init__(self, fanout: int, give_up: int = 200_000):
        self.fanout, self.give_up, self.calls = fanout, give_up, 0

    def on_start(self, ctx):
        ctx.schedule(ctx.now + 1, "tick")

    def on_timer(self, ctx, tag):
        self.calls += 1
        if self.calls > self.give_up:
            raise RuntimeError("no limit stopped the timer bomb")
        for _ in range(self.fanout):
            ctx.schedule(ctx.now + 1, "tick")


def test_a_timer_bomb_is_stopped_by_the_limit_on_pending_timers():
    engine, events, maker = run(Bomb(fanout=2))
    (failed,) = of(events, ev.BOT_FAILED)
    assert failed.account == "taker" and failed.data["cause"] == "limit"
    assert failed.data["callback"] == "on_timer"
    assert failed.data["detail"] == (
        f"timers: {DEFAULT_MAX_TIMERS + 1:,} pending, more than the limit of "
        f"{DEFAULT_MAX_TIMERS:,} (max_timers)"
    )
    assert failed.t < 10 * MS  # within the bomb's first simulated millisecond or so
    assert_maker_untouched(engine, events, maker)


def test_a_bot_spinning_on_one_timer_is_stopped_by_the_limit_on_steps_per_second():
    bomb = Bomb(fanout=1)
    engine, events, maker = run(bomb)
    (failed,) = of(events, ev.BOT_FAILED)
    assert failed.data["cause"] == "limit" and failed.data["callback"] == "on_timer"
    assert failed.data["detail"] == (
        f"steps: more than {DEFAULT_MAX_STEPS:,} deliveries in the simulated second from 0 ns "
        f"(limit max_steps={DEFAULT_MAX_STEPS:,})"
    )
    # on_start and the first market data were deliveries of that second too
    assert DEFAULT_MAX_STEPS - 10 < bomb.calls < DEFAULT_MAX_STEPS
    assert_maker_untouched(engine, events, maker)


def test_the_limits_are_set_per_bot():
    engine, events, maker = run(Bomb(fanout=2, give_up=30), max_timers=5)
    (failed,) = of(events, ev.BOT_FAILED)
    assert failed.data["detail"] == "timers: 6 pending, more than the limit of 5 (max_timers)"
    bomb = Bomb(fanout=1, give_up=25_000)
    engine, events, maker = run(bomb, days=1, max_steps=None, max_timers=None)
    (failed,) = of(events, ev.BOT_FAILED)  # no limit: it ran until it gave up itself
    assert failed.data["cause"] == "raised" and bomb.calls == 25_001


def test_the_step_limit_counts_each_simulated_second_afresh():
    class Steady(Bot):
        """Three timers a simulated second, every second, all session long."""

        def on_start(self, ctx):
            ctx.schedule(ctx.now + 1, 0)

        def on_timer(self, ctx, n):
            self.calls = getattr(self, "calls", 0) + 1
            second = ctx.now // 10**9
            ctx.schedule(ctx.now + 300 * MS if n < 2 else (second + 1) * 10**9, (n + 1) % 3)

    steady = Steady()
    engine, events, maker = run(steady, days=1, max_steps=50)
    assert not of(events, ev.BOT_FAILED) and steady.calls > 3 * 86_000
    engine, events, maker = run(Steady(), days=1, max_steps=2)
    (failed,) = of(events, ev.BOT_FAILED)
    assert failed.data["cause"] == "limit" and failed.t < 10**9


class Flood(Bot):
    """Answers its start with ``n`` one-lot deposits at once."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_start(self, ctx):
        for _ in range(self.n):
            ctx.deposit(1)


def test_a_bot_sends_at_most_max_commands_in_answer_to_one_delivery():
    engine, events, maker = run(Flood(DEFAULT_MAX_COMMANDS))
    assert not of(events, ev.BOT_FAILED)
    assert len([e for e in of(events, ev.DEPOSIT, "taker") if e.t > 0]) == DEFAULT_MAX_COMMANDS
    engine, events, maker = run(Flood(DEFAULT_MAX_COMMANDS + 1))
    (failed,) = of(events, ev.BOT_FAILED)
    assert failed.account == "taker" and failed.data["cause"] == "limit"
    assert failed.data["detail"] == (
        f"commands: {DEFAULT_MAX_COMMANDS + 1:,} sent in answer to one delivery, more than the "
        f"limit of {DEFAULT_MAX_COMMANDS:,} (max_commands)"
    )
    assert not [e for e in of(events, ev.DEPOSIT, "taker") if e.t > 0]  # none of them sent
    assert_maker_untouched(engine, events, maker)
    engine, events, maker = run(Flood(DEFAULT_MAX_COMMANDS + 1), max_commands=None)
    assert not of(events, ev.BOT_FAILED)


def test_a_command_too_long_for_the_log_is_refused_and_recorded_cut():
    class Stuffer(Bot):
        def on_start(self, ctx):
            ctx.submit("x" * 1_000_000, "buy", 1, 1)
            ctx.deposit(3)

    engine, events, maker = run(Stuffer())
    (rejected,) = of(events, ev.COMMAND_REJECTED, "taker")
    assert rejected.data["source"] == "runner"
    assert rejected.data["reason"] == (
        f"command: 1,000,133 bytes, more than the {MAX_COMMAND_BYTES:,} a command may take"
    )
    assert len(orjson.dumps(rejected.data)) < 2 * MAX_COMMAND_BYTES
    assert [e.amount for e in of(events, ev.DEPOSIT, "taker") if e.t > 0] == [3]
    assert_maker_untouched(engine, events, maker)


def test_a_remote_timer_bomb_is_stopped_by_the_same_limit(tmp_path):
    from clients.gateway import BotEntry
    from exchange.store.event_store import EventStore
    from tests.clients.test_gateway import remote_bot, serve

    db = tmp_path / "served.db"
    bots = [
        BotEntry("mm", "maker", Quoter(), Latency(fixed_ns=MS)),
        BotEntry("evil", "taker", None, Latency(fixed_ns=MS), remote=True),
    ]
    serve(db, ["taker"], bots, {"taker": remote_bot(Bomb(fanout=2, give_up=5_000))}, days=1)
    with EventStore.open(db, mode="r") as store:
        assert store.session["status"] == "finished"
        (failed,) = store.events(kind=ev.BOT_FAILED)
    assert failed.account == "taker" and failed.data["cause"] == "limit"
    assert failed.data["detail"].startswith(f"timers: {DEFAULT_MAX_TIMERS + 1:,} pending")


# ---------------------------------------------------------------------- the account snapshot
def test_the_account_a_bot_sees_is_the_exchanges_account_at_every_delivery(monkeypatch):
    """The runner remakes a bot's snapshot only after an event that may have changed its
    account; checked against the exchange's own account at every delivery of a session of
    every strategy, with a guarantor called and defaulting."""
    from clients.context import AccountView, OpenOrder

    checked: list[bool] = []
    made = BotRunner._snapshot

    def checking(self, slot):
        cached = slot.snapshot is not None
        view = made(self, slot)
        cash, positions, orders = self.engine.account_view(slot.account)
        assert view == AccountView(cash, positions, tuple(OpenOrder(*o) for o in orders))
        checked.append(cached)
        return view

    monkeypatch.setattr(BotRunner, "_snapshot", checking)
    s = every_strategy_session()
    kinds = {e.kind for e in s.events}
    assert {
        ev.FILL,
        ev.DEFAULT,
        ev.VARIATION_MARGIN,
        ev.FUNDING_PAID,
        ev.INSTRUMENT_EXPIRED,
    } <= kinds
    assert ev.BOT_FAILED not in kinds
    # most deliveries reuse the snapshot, and every one of them was right
    assert len(checked) > 10_000 and sum(checked) > len(checked) // 2


def test_a_log_holding_the_runners_refusals_verifies(tmp_path):
    """``verify`` records a refusal of the runner again (never executes the refused command:
    that would withdraw from the maker) and the re-execution matches the log."""
    from clients.gateway import BotEntry, serve_session
    from exchange.sessions.session import verify
    from exchange.store.event_store import EventStore
    from tests.clients.test_gateway import ShortProducts

    class Thief(Bot):
        def on_index(self, ctx, index):
            ctx.withdraw(1000)
            ctx._outbox[-1][1]["account"] = "maker"
            ctx._outbox.append((None, {"type": "bot_failed", "bot": "mm", "cause": "raised"}))

    db = tmp_path / "refused.db"
    bots = [
        BotEntry("mm", "maker", Quoter(), Latency(fixed_ns=MS)),
        BotEntry("evil", "taker", Thief(), Latency(fixed_ns=MS)),
    ]
    serve_session(ShortProducts(2), 7, db, (), bots=bots)
    with EventStore.open(db, mode="r") as store:
        rejected = list(store.events(kind=ev.COMMAND_REJECTED))
        assert not list(store.events(kind=ev.WITHDRAWAL))
        assert not list(store.events(kind=ev.BOT_FAILED))
    assert len(rejected) > 40 and {e.data["source"] for e in rejected} == {"runner"}
    assert verify(db).ok


class _Unhashable(type):
    def __hash__(cls):
        raise RuntimeError("a metaclass whose hash raises")

    def __eq__(cls, other):
        raise RuntimeError("a metaclass whose equality raises")


class _Hostile(metaclass=_Unhashable):
    pass


def test_a_command_holding_a_value_of_a_hostile_type_is_refused_and_the_session_goes_on():
    class Smuggler(Bot):
        def on_start(self, ctx):
            ctx._outbox.append(
                (None, {"type": "deposit", "account": "taker", "amount": _Hostile()})
            )
            ctx.deposit(9)

    engine, events, maker = run(Smuggler())
    (rejected,) = of(events, ev.COMMAND_REJECTED, "taker")
    assert rejected.data["source"] == "runner"
    assert [e.amount for e in of(events, ev.DEPOSIT, "taker") if e.t > 0] == [9]
    assert not of(events, ev.BOT_FAILED)
    assert_maker_untouched(engine, events, maker)
