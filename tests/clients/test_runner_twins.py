"""The runner's twins give the same session: ``clients.runner.BotRunner`` (the reference) and
``clients._runner.CompiledRunner`` (what the compiled engine's sessions run), on the same
engine, with random bot behaviours -- honest trading, timers, hostile outboxes, commands for
another account, floods, failures, budget overruns, recursion to the limit -- must record the
same log and hand every bot the same callbacks."""

from __future__ import annotations

import contextlib

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import clients.runner as runner_module
from clients import _runner
from clients.bot import Bot
from clients.latency import Latency
from clients.runner import BotRunner, make_runner
from exchange.core import events as ev
from exchange.core.events import encode
from exchange.kernel.compiled import CompiledExchange
from exchange.kernel.engine import DAY_NS, Exchange
from exchange.sessions import session
from exchange.store.event_store import EventStore
from tests.clients.test_runner import MS, market

TWINS = (BotRunner, _runner.CompiledRunner)
CALLBACKS = (
    "on_start",
    "on_book",
    "on_trade",
    "on_order",
    "on_fill",
    "on_index",
    "on_mark",
    "on_funding",
    "on_margin_call",
    "on_timer",
)


def _depth() -> int:
    """How deep a bot can recurse from here (the runner's frames above it count)."""
    n = 0

    def down():
        nonlocal n
        n += 1
        down()

    with contextlib.suppress(RecursionError):
        down()
    return n


def act(action: str, ctx, count: int) -> None:
    """One behaviour of a scripted bot (``count``: its callbacks so far)."""
    side = "buy" if count % 2 else "sell"
    if action == "quote":
        book = ctx.book("H100-PERP")
        mid = 100_000
        if book is not None and book.bids and book.asks:
            mid = (book.bids[0].price + book.asks[0].price) // 2
        ctx.submit("H100-PERP", side, mid + (count % 7 - 3) * 10, 1 + count % 3)
    elif action == "take":
        ctx.submit("H100-PERP", side, 0, 1 + count % 2, order_type="market")
    elif action == "cancel":
        for order in ctx.open_orders()[:2]:
            ctx.cancel(order.order_id)
    elif action == "amend":
        for order in ctx.open_orders("H100-PERP")[:1]:
            ctx.amend(order.order_id, order.price + 10, order.qty + 1)
    elif action == "cancel_all":
        ctx.cancel_all("H100-PERP" if count % 2 else None)
    elif action == "timer":
        ctx.schedule(ctx.now + (count % 3) * MS, ("tag", count))
    elif action == "past_timer":
        ctx.schedule(ctx.now - 5)
    elif action == "balance":
        ctx.deposit(1 + ctx.balance() % 97 + len(ctx.positions()))
    elif action == "depth":
        ctx.deposit(_depth())
    elif action == "raise":
        raise ValueError(f"scripted failure at {count}")
    elif action == "exit":
        raise SystemExit(3)
    elif action == "spin":  # overruns a small budget; bounded, for the runs without one
        for _ in range(100_000):
            pass
    elif action == "replace_outbox":
        ctx._outbox = ("not", "a list")
    elif action == "bad_pair":
        ctx._outbox.append(["ref", {"type": "deposit", "amount": 1}])
    elif action == "other_account":
        ctx._outbox.append((None, {"type": "deposit", "account": "owner", "amount": 5}))
    elif action == "not_trading":
        ctx._send({"type": "bot_failed" if count % 2 else "open_account", "name": "x"})
    elif action == "odd_command":
        ctx._outbox.append((7, {"type": "deposit", "amount": 2, "nested": {"a": [1, 2]}}))
    elif action == "huge":
        ctx._send({"type": "deposit", "amount": 1, "pad": "x" * 70_000})
    elif action == "flood":
        for _ in range(40):
            ctx.deposit(1)
    elif action == "timer_bomb":
        for i in range(30):
            ctx.schedule(ctx.now + 1 + i)
    elif action == "shadow_begin":  # the runner must call the instance's _begin: time stops
        ctx._begin = lambda now, account: None
    elif action == "shadow_drain":  # ... and its _drain: nothing sent from now on
        ctx._drain = lambda: ([], [])


ACTIONS = (
    "quote",
    "quote",
    "take",
    "cancel",
    "amend",
    "cancel_all",
    "timer",
    "past_timer",
    "balance",
    "depth",
    "raise",
    "exit",
    "spin",
    "replace_outbox",
    "bad_pair",
    "other_account",
    "not_trading",
    "odd_command",
    "huge",
    "flood",
    "timer_bomb",
    "shadow_begin",
    "shadow_drain",
    "nothing",
)


#: Callbacks in which a scripted bot acts (it records the later ones and does nothing).
ACTS = 200


def scripted(plan: dict[str, tuple[str, ...]]) -> Bot:
    """A bot overriding only the callbacks of ``plan``, each running its actions in turn;
    it records every callback it receives (time, name, payload, the books its context
    holds)."""

    def make(name, actions):
        def callback(self, ctx, payload=None):
            self.seen.append((ctx.now, name, payload, tuple(sorted(ctx._books))))
            count = len(self.seen)
            if count <= ACTS:  # then quiet: a chain of timers without limits ends
                act(actions[count % len(actions)], ctx, count)

        callback.__name__ = name
        return callback

    namespace = {name: make(name, actions) for name, actions in plan.items()}
    cls = type("Scripted", (Bot,), namespace)
    bot = cls()
    bot.seen = []
    return bot


ACCOUNTS = ("maker", "taker", "owner")
plans = st.dictionaries(
    st.sampled_from(CALLBACKS), st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=4)
)
options = st.fixed_dictionaries(
    {
        "budget_lines": st.sampled_from([None, 3_000, 1_000_000]),
        "max_commands": st.sampled_from([None, 25, 100]),
        "max_timers": st.sampled_from([None, 20, 1_000]),
        "max_steps": st.sampled_from([None, 40, 10_000, 40.5]),
        "latency": st.sampled_from([MS, 2 * MS]),
        "jitter": st.sampled_from([0, MS // 2]),
    }
)
bots = st.lists(st.tuples(plans, options), min_size=1, max_size=3)


def assert_same(python, compiled) -> None:
    """The two twins' (log lines, bots' callbacks) are equal; on a difference, say where in
    a few lines (pytest's diff of two long lists would take minutes)."""
    for what, a, b in (("log", python[0], compiled[0]), ("callbacks", python[1], compiled[1])):
        if a != b:
            if what == "callbacks":
                a = [entry for seen in a for entry in seen]
                b = [entry for seen in b for entry in seen]
            pairs = enumerate(zip(a, b, strict=False))
            at = next((i for i, (x, y) in pairs if x != y), min(len(a), len(b)))
            tail_a = a[at] if at < len(a) else "<end>"
            tail_b = b[at] if at < len(b) else "<end>"
            pytest.fail(f"{what} differs at {at}: python {tail_a!r:.300} compiled {tail_b!r:.300}")


def _session(runner_class, specs, days: float = 0.5):
    """The products market on the reference engine with ``specs``' bots run by
    ``runner_class``: the log's lines and what each bot was handed."""
    engine, sim, _, events, _ = market(days=1)
    end = int(days * DAY_NS)
    runner = runner_class(engine, sim, 3)
    made = []
    for account, (plan, option) in zip(ACCOUNTS, specs, strict=False):
        option = dict(option)
        latency = Latency(fixed_ns=option.pop("latency"), jitter_ns=option.pop("jitter"))
        bot = scripted(plan)
        runner.add(account, account, bot, latency=latency, **option)
        made.append(bot)
    runner.start(end)
    sim.run(end, on_step=engine.advance)
    return [encode(e) for e in events], [bot.seen for bot in made]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(bots)
def test_both_twins_record_the_same_log_for_any_bot_behaviour(specs):
    python = _session(BotRunner, specs, days=1)
    compiled = _session(_runner.CompiledRunner, specs, days=1)
    assert_same(python, compiled)


#: (behaviour: its callbacks' actions, its budget, the BotFailed cause and the detail's start
#: it must end with, or None; the rejections it must leave)
HOSTILE = {
    "refused commands": (
        {"on_index": ("quote", "other_account", "not_trading", "odd_command", "huge", "bad_pair")},
        5_000,
        ("raised", "outbox: a 'list' object"),
        4,
    ),
    "budget": ({"on_index": ("quote", "spin")}, 5_000, ("budget", "Traceback"), 0),
    "timers": ({"on_index": ("timer_bomb",)}, 5_000, ("limit", "timers: 60 pending"), 0),
    "commands": ({"on_index": ("flood",)}, 5_000, ("limit", "commands: 80 sent"), 0),
    "raises": ({"on_index": ("quote", "raise")}, 5_000, ("raised", "Traceback"), 0),
    "exits": ({"on_index": ("exit",)}, None, ("raised", "Traceback"), 0),
    "replaced outbox": ({"on_index": ("replace_outbox",)}, 5_000, ("raised", "the outbox"), 0),
    "steps": (
        {"on_start": ("timer",), "on_timer": ("past_timer",)},
        None,
        ("limit", "steps: more than 40"),
        0,
    ),
    "recursion": ({"on_index": ("depth", "quote")}, None, None, 0),
    # the runner's protocol shadowed by instance attributes (the compiled runner runs a plain
    # compiled Context's _begin and _drain in C: not this one's)
    "shadowed begin": ({"on_index": ("quote", "shadow_begin", "timer")}, 5_000, None, 0),
    "shadowed drain": ({"on_index": ("quote", "quote", "shadow_drain", "quote")}, 5_000, None, 0),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_bot_fails_alike_in_both_twins(case):
    """Each hostile behaviour beside an honest quoter: the same log from both twins, the bot
    stopped as docs/bots.md says (or not at all), what it may not send refused."""
    plan, budget, failure, refused = HOSTILE[case]
    honest = {"on_index": ("quote", "quote", "cancel_all"), "on_fill": ("balance",)}
    option = {
        "budget_lines": 5_000,
        "max_commands": 25,
        "max_timers": 20,
        "max_steps": 40,
        "latency": MS,
        "jitter": MS // 3,
    }
    specs = [(honest, option), (plan, {**option, "budget_lines": budget})]
    python = _session(BotRunner, specs, days=1)
    compiled = _session(_runner.CompiledRunner, specs, days=1)
    assert_same(python, compiled)
    events = [orjson.loads(line) for line in python[0]]
    failed = [e[12] for e in events if e[2] == ev.BOT_FAILED]
    if failure is None:
        assert not failed
    else:
        assert [(f["bot"], f["cause"]) for f in failed] == [("taker", failure[0])]
        assert failure[1] in failed[0]["detail"]
    rejected = [e for e in events if e[2] == ev.COMMAND_REJECTED and e[4] == "taker"]
    assert len(rejected) == refused


@pytest.mark.parametrize("name", ["_begin", "_drain", "_books", "_outbox", "_timers"])
def test_the_runner_uses_a_patched_context_class_protocol_in_both_twins(monkeypatch, name):
    """A Context class whose runner-side attribute is replaced (after the compiled runner
    last found it plain): both twins go through the replacement, every time."""
    from clients import _context
    from clients import context as reference

    calls = {BotRunner: 0, _runner.CompiledRunner: 0}
    # one bot hearing books (the runner stores them in _dispatch), one not (_quiet)
    hears = {"on_index": ("quote", "timer"), "on_timer": ("quote",), "on_book": ("nothing",)}
    deaf = {"on_index": ("quote", "timer"), "on_timer": ("quote",)}
    option = {"budget_lines": 5_000, "latency": MS, "jitter": 0}
    specs = [(hears, option), (deaf, option)]
    _session(_runner.CompiledRunner, specs, days=0.05)  # the class found plain
    for runner_class, cls in (
        (BotRunner, reference.Context),
        (_runner.CompiledRunner, _context.Context),
    ):
        original = cls.__dict__.get(name)  # None: an instance attribute (the reference)
        if name in ("_begin", "_drain"):

            def counted(*args, _original=original, _twin=runner_class):
                calls[_twin] += 1
                return _original(*args)

            monkeypatch.setattr(cls, name, counted)
        else:

            def get(self, _original=original, _twin=runner_class):
                calls[_twin] += 1
                return _original.__get__(self)

            def put(self, value, _original=original):
                _original.__set__(self, value)

            if cls is reference.Context:  # an instance attribute there: a property over it
                attribute = "_glue_" + name

                def get(self, _attribute=attribute, _twin=runner_class):  # noqa: F811
                    calls[_twin] += 1
                    return getattr(self, _attribute)

                def put(self, value, _attribute=attribute):  # noqa: F811
                    setattr(self, _attribute, value)

            monkeypatch.setattr(cls, name, property(get, put), raising=False)
        try:
            if runner_class is BotRunner:
                python = _session(runner_class, specs, days=0.3)
            else:
                compiled = _session(runner_class, specs, days=0.3)
        finally:
            monkeypatch.undo()
    assert_same(python, compiled)
    assert calls[BotRunner] > 0
    if name in ("_outbox", "_timers"):
        # the compiled Context's own C methods use its fields (only the runner reads these)
        assert calls[_runner.CompiledRunner] > 0
    else:
        assert calls[_runner.CompiledRunner] == calls[BotRunner]


@pytest.mark.parametrize("name", ["_outbox", "_timers", "_books"])
def test_a_deleted_runner_side_attribute_fails_alike_in_both_twins(name):
    """``del ctx._outbox`` (or ``_timers``, ``_books``) in a callback: the runner's next read
    of it raises the same AttributeError from both twins (a deleted field of the compiled
    Context is read through its attribute, not in C)."""
    outcomes = []
    for runner_class in TWINS:
        engine, sim, _, events, _ = market(days=1)
        runner = runner_class(engine, sim, 3)

        class Deleting(Bot):  # hears no book: they reach it through _quiet
            done = False

            def on_index(self, ctx, payload):
                if not self.done:
                    self.done = True
                    ctx.submit("H100-PERP", "buy", 99_000, 1)
                    delattr(ctx, name)

        runner.add("maker", "maker", Deleting(), latency=Latency(fixed_ns=MS, jitter_ns=0))
        runner.start(DAY_NS)
        with pytest.raises(AttributeError) as info:
            sim.run(DAY_NS, on_step=engine.advance)
        outcomes.append(([encode(e) for e in events], type(info.value), str(info.value)))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][2] == f"'Context' object has no attribute '{name}'"


def test_a_bot_recursing_to_the_limit_finds_the_same_depth_in_both_twins():
    """The runner's C frames stand in for the reference's Python ones (``DEPTH``)."""
    plan = {"on_start": ("depth",), "on_index": ("depth", "timer"), "on_timer": ("depth",)}
    depths = {}
    for runner_class in TWINS:
        for budget in (None, 1_000_000):
            option = {"budget_lines": budget, "latency": MS, "jitter": 0}
            log, seen = _session(runner_class, [(plan, option)], days=0.2)
            assert [line for line in log if b'"Deposit' in line]
            depths[runner_class, budget] = log, seen
    for budget in (None, 1_000_000):
        assert_same(depths[BotRunner, budget], depths[_runner.CompiledRunner, budget])


def _recorded(tmp_path, twin: str, days: int = 4):
    """The flagship's first days on the compiled engine (the lines' tap) with ``twin``."""
    db = tmp_path / f"flagship-{twin}.db"
    old = runner_module.RUNNER
    runner_module.RUNNER = twin
    try:
        session.run("guarantor-spiral", db, seed=7, overrides={"days": days})
    finally:
        runner_module.RUNNER = old
    with EventStore.open(db, mode="r") as store:
        return store.digest()


def test_the_flagship_records_the_same_log_with_either_twin(tmp_path):
    assert _recorded(tmp_path, "compiled") == _recorded(tmp_path, "python")


def test_the_compiled_engine_gets_the_compiled_twin_and_the_reference_the_reference(
    monkeypatch,
):
    from exchange.core.clock import Simulator

    compiled = CompiledExchange(lambda event: None)
    reference = Exchange(lambda event: None)
    assert type(make_runner(compiled, Simulator(), 1)) is _runner.CompiledRunner
    assert type(make_runner(reference, Simulator(), 1)) is BotRunner
    monkeypatch.setattr(runner_module, "RUNNER", "python")
    assert type(make_runner(compiled, Simulator(), 1)) is BotRunner


def _funding_told(runner_class, rows):
    """What a bot hearing ``on_funding`` is handed when one publish reads ``rows`` (Events,
    and thin rows as ``Tap.scan_rows`` gives them)."""
    engine, sim, _, _events, _ = market(days=1)
    runner = runner_class(engine, sim, 3)
    bot = scripted({"on_funding": ("quote",)})
    runner.add("maker", "maker", bot, latency=Latency(fixed_ns=MS, jitter_ns=0))
    runner.start(DAY_NS)
    t = engine.t
    runner._pending[:] = rows
    runner._publish()
    sim.run(t + 10 * MS, on_step=engine.advance)
    return [seen for seen in bot.seen if seen[1] == "on_funding"]


def test_a_funding_payment_is_told_the_rate_of_its_instrument_announced_before_it():
    # the rate a FundingPaid is told is the last FundingRate of its instrument with a smaller
    # seq in the same publish (BotRunner._last_rate; the twin's reads rows by index, thin
    # rows among them)
    def rate(seq, instrument, value):
        return ev.Event(
            seq,
            0,
            ev.FUNDING_RATE,
            instrument,
            None,
            None,
            None,
            100,
            None,
            None,
            None,
            None,
            {"rate": value},
        )

    paid = ev.Event(
        13, 0, ev.FUNDING_PAID, "H100-PERP", "maker", None, None, None, 4, -7, None, None, None
    )
    thin = (12, 0, ev.ORDER_RESTED, "H100-PERP") + (None,) * 9
    rows = [
        rate(10, "H100-PERP", "0.1"),
        rate(11, "H100-RVS-LONG", "0.2"),
        thin,
        paid,
        rate(14, "H100-PERP", "0.3"),
    ]
    events = [row for row in rows if type(row) is ev.Event]  # the reference reads no thin row
    told = {BotRunner: _funding_told(BotRunner, events)}
    told[_runner.CompiledRunner] = _funding_told(_runner.CompiledRunner, rows)
    assert told[BotRunner] == told[_runner.CompiledRunner]
    # the payment first (its own news), then the three rates announced
    assert [(f[2].rate, f[2].position) for f in told[BotRunner]] == [
        ("0.1", 4),
        ("0.1", None),
        ("0.2", None),
        ("0.3", None),
    ]


@pytest.mark.parametrize(
    "lines",
    [0, 1, -1, -2, -(10**30), 10**30, 2**63 - 1, 2**63, 2**63 - 2, True, 5.5, -3.0],
)
def test_the_compiled_counter_clamps_a_budget_as_min_and_max_would(lines):
    # an int's budget is clamped in C (no min()/max() call per callback): to what the
    # reference's ``min(max(lines, -1), 2**63 - 1)`` gives, for any int or other number
    from clients._budget import Counter

    counter = Counter(lines)
    assert counter.left == int(min(max(lines, -1), 2**63 - 1))  # a C long long
    assert counter.lines is lines
