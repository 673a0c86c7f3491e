"""What the compiled runner builds in C for a bot, against the reference (issue #20).

``clients._runner.CompiledRunner`` makes a bot's account snapshot with
``exchange.kernel._views.account_snapshot`` (an ``AccountView`` of ``OpenOrder`` tuples built
without a Python call per order), its book views' levels with ``_views.book_levels`` and
checks a command's size without serialising it when a bound proves it small
(``clients._runner._small``). Each must give exactly what the reference runner
(``clients.runner.BotRunner``) gives: the same values of the same types, the same refusals.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import clients.runner as runner_module
from clients.bot import BookLevel, Bot
from clients.context import AccountView, OpenOrder
from clients.runner import BotRunner
from exchange.core import _lines
from exchange.core import events as ev
from exchange.core.clock import Simulator
from exchange.core.events import TYPED_FIELDS, Event
from exchange.kernel import _views
from exchange.kernel.compiled import CompiledExchange
from exchange.kernel.engine import DAY_NS, Exchange
from exchange.sessions.scenario_products import ProductsScenario
from exchange.store.event_store import _CODES
from tests.clients.test_runner_twins import CALLBACKS
from tests.clients.test_strategies import GpuOwner, Lender, MarketMaker, Momentum, NoiseTaker

# every test here runs with both runner twins (tests/clients/conftest.py)
pytestmark = pytest.mark.usefixtures("twin")


def _checking(bot: Bot, engine: Exchange, account: str, checked: list, wrong: list) -> Bot:
    """``bot`` with every callback first checking what its context reads of the account
    against the reference's ``Exchange.account_view`` of the exchange as it is now (nothing
    runs on the exchange while a delivery's callbacks run), values and types: each check's
    orders counted in ``checked``, each difference noted in ``wrong``."""
    for name in CALLBACKS:
        original = getattr(bot, name)

        def check(ctx, *payload, _original=original):
            cash, positions, orders = Exchange.account_view(engine, account)
            want = (cash, list(positions.items()), [OpenOrder(*o) for o in orders])
            got = ctx.open_orders()
            if (ctx.balance(), list(ctx.positions().items()), got) != want or [
                type(v) for o in got for v in (o, *o)
            ] != [type(v) for o in want[2] for v in (o, *o)]:
                wrong.append((account, ctx.now, want, got))
            checked.append(len(got))
            return _original(ctx, *payload)

        setattr(bot, name, check)  # in the instance's dict: heard, called as it is
    return bot


def test_every_account_a_bot_reads_is_the_exchanges_on_the_compiled_engine():
    """Five strategies on the compiled engine, the runner reading its lines (the tap): at
    every callback the bot's snapshot (built in C by the compiled twin) is the reference's
    view of the account then -- after fills, cancels, amends, funding and margin calls."""
    lines = _lines.LineBatch(1, _CODES, TYPED_FIELDS, len(Event._fields))
    engine, sim = CompiledExchange(lines.append), Simulator()
    engine.start("test", 3, {})
    scenario = ProductsScenario(days=45)
    scenario.setup(engine)
    engine.open_account("momo", stp="cancel-resting")
    engine.credit("momo", 1_000_000_00)
    scenario.schedule_market(engine, sim, 3)
    runner = BotRunner(engine, sim, 3)
    checked: list[int] = []
    wrong: list = []
    for account, bot in (
        ("maker", MarketMaker(size=25)),
        ("taker", NoiseTaker(limit_ppm=200_000)),
        ("momo", Momentum()),
        ("owner", GpuOwner(gpus=1_000)),
        ("lender", Lender(collateral_gpus=200)),
    ):
        runner.add(
            account, account, _checking(bot, engine, account, checked, wrong), budget_lines=None
        )
    runner.start(4 * DAY_NS)
    sim.run(4 * DAY_NS, on_step=engine.advance)
    assert not wrong, wrong[0]
    assert runner._tap is not None  # the lines were read: snapshots made stale by the scans
    assert len(checked) > 1_000 and max(checked) >= 3  # many reads, of several orders


# ---------------------------------------------------------------- the views' functions
class _Level(tuple):
    """A tuple subclass without NamedTuple's machinery: made as tuple.__new__ makes it."""


resting = st.lists(
    st.tuples(
        st.integers(0, 3),  # account
        st.integers(0, 1),  # side
        st.integers(90, 110),  # price
        st.integers(1, 9),  # qty
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resting, st.integers(0, 8))
def test_book_levels_are_the_books_top_as_named_levels(orders, depth):
    from matching_core import OrderBook

    book = OrderBook()
    for order_id, (account, side, price, qty) in enumerate(orders, 1):
        book.submit(order_id, account, side, price, qty)

    class Wrapped:  # not the C book: read through its top
        def top(self, n):
            return book.top(n)

    class Listed:  # a top of lists, which tuple.__new__ takes as the reference's _new does
        def top(self, n):
            return [[list(level) for level in side] for side in book.top(n)]

    for level_type in (BookLevel, _Level):
        want = tuple(
            tuple(tuple.__new__(level_type, level) for level in side) for side in book.top(depth)
        )
        for source in (book, Wrapped(), Listed()):
            got = _views.book_levels(source, depth, level_type)
            assert got == want
            assert type(got) is tuple and all(type(side) is tuple for side in got)
            assert all(type(level) is level_type for side in got for level in side)
            assert all(type(v) is int for side in got for level in side for v in level)


def test_book_levels_refuse_what_top_and_tuple_new_refuse():
    from matching_core import OrderBook

    with pytest.raises(ValueError, match="n must be >= 0"):
        _views.book_levels(OrderBook(), -1, BookLevel)
    with pytest.raises(TypeError):
        _views.book_levels(OrderBook(), 5, list)
    with pytest.raises(TypeError):
        _views.book_levels(OrderBook(), 5, "BookLevel")


def test_an_account_snapshot_is_the_account_view_as_named_tuples():
    engine = CompiledExchange(lambda event: None)
    engine.start("test", 3, {})
    ProductsScenario(days=45).setup(engine)
    instruments = sorted(engine.instruments)
    book = instruments[0]
    for i in range(5):
        engine.handle(
            {
                "type": "submit",
                "account": "maker",
                "instrument": book,
                "side": "buy" if i % 2 else "sell",
                "price": 100_000 + (i - 2) * 1_000 + (0 if i % 2 else 5_000),
                "qty": 1 + i,
                "order_type": "limit",
                "tif": "gtc",
                "post_only": False,
            }
        )
    for name in sorted(engine.accounts):
        view = _views.account_snapshot(engine, name, AccountView, OpenOrder)
        cash, positions, orders = Exchange.account_view(engine, name)
        assert view == AccountView(cash, positions, tuple(OpenOrder(*o) for o in orders))
        assert type(view) is AccountView and type(view.orders) is tuple
        assert all(type(o) is OpenOrder for o in view.orders)
    assert len(_views.account_snapshot(engine, "maker", AccountView, OpenOrder).orders) == 5
    with pytest.raises(KeyError):
        _views.account_snapshot(engine, "nobody", AccountView, OpenOrder)
    with pytest.raises(TypeError):
        _views.account_snapshot(engine, "maker", dict, OpenOrder)


# ---------------------------------------------------------------- a command's size
def _admitted(runner_class, commands: list[Any]):
    """What the runner's ``_admit`` makes of one delivery's ``commands``: the commands it
    passes on, the refusals recorded, or the exception it raises."""
    events: list = []
    engine = Exchange(events.append)
    engine.start("test", 3, {})
    engine.open_account("bot", stp="cancel-resting")
    runner = runner_class(engine, Simulator(), 3)
    runner.add("bot", "bot", Bot())
    slot = runner.slots[0]
    outbox = [(None, command) for command in commands]
    try:
        passed, _ = runner._admit(slot, outbox, [], "on_index")
    except Exception as exc:  # noqa: BLE001 - compared between the twins
        return type(exc), str(exc)
    refused = [
        (e.data["reason"], e.data["command"]) for e in events if e.kind == ev.COMMAND_REJECTED
    ]
    return passed, refused


texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(max_codepoint=0x1F), min_size=600, max_size=800),
    st.text(alphabet=st.sampled_from('a"\\\x01\n\u00e9'), min_size=0, max_size=1_500),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=1_300),
)
values = st.one_of(
    texts,
    st.integers(-(2**70), 2**70),
    st.integers(-(2**63), 2**64 - 1),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
)
commands = st.dictionaries(
    st.one_of(st.sampled_from(["type", "amount", "pad", "instrument", "account"]), texts),
    values,
    max_size=6,
).map(lambda d: {"type": "deposit", "amount": 1, **d} if "type" not in d else d)


@pytest.mark.parametrize("twin", ["python"], indirect=True)  # compares both itself
@settings(
    max_examples=150,
    deadline=None,
    # the pinned twin fixture only names the reference: nothing in it to reset between inputs
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(commands, min_size=1, max_size=4))
@example([{"type": "deposit", "amount": 1, "pad": "\x01" * 700}])  # 4,2xx bytes escaped
@example([{"type": "deposit", "amount": 1, "pad": "x" * 4_040}])  # at the limit
@example([{"type": "deposit", "amount": 1, "pad": "x" * 4_070}])  # just past it
@example([{"type": "deposit", "amount": 2**64}])  # an int orjson refuses
@example([{"type": "deposit", "amount": 1, "pad": "\ud800"}])  # a str orjson refuses
def test_both_twins_pass_and_refuse_the_same_commands_whatever_their_size(twin, commands):
    from clients import _runner

    python = _admitted(runner_module.BotRunner, [dict(c) for c in commands])
    compiled = _admitted(_runner.CompiledRunner, [dict(c) for c in commands])
    assert python == compiled
    if isinstance(python, tuple) and isinstance(python[0], list):
        for _, command in python[0]:  # what passed is within the limit, as measured
            assert len(orjson.dumps(command)) <= 4_096


@pytest.mark.parametrize("twin", ["python"], indirect=True)  # runs both itself
def test_a_command_at_the_byte_limit_passes_and_one_past_it_is_refused(twin):
    from clients import _runner

    for runner_class in (runner_module.BotRunner, _runner.CompiledRunner):
        base = {"type": "deposit", "amount": 1, "account": "bot", "pad": ""}
        room = 4_096 - len(orjson.dumps(base))
        passed, refused = _admitted(runner_class, [{**base, "pad": "x" * room}])
        assert len(passed) == 1 and not refused
        passed, refused = _admitted(runner_class, [{**base, "pad": "x" * (room + 1)}])
        assert not passed and refused[0][0].startswith("command: 4,097 bytes")
        escaped = {**base, "pad": "\x01" * (room // 6 + 1)}  # 6 bytes a character in JSON
        passed, refused = _admitted(runner_class, [escaped])
        assert not passed and "bytes, more than the 4,096" in refused[0][0]
