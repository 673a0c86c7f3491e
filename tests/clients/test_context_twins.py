"""The Context's twins: ``clients.context.Context`` (the reference, plain Python) and
``clients._context.Context`` (what in-process bots of the compiled runner act through) do the
same thing for any sequence of calls -- valid or not, inside a callback or outside it, after a
stop, with hostile arguments and attributes -- under any budget: the same results, errors,
messages and tracebacks, the same outbox, timers and state, the same units charged (the same
budget left, the same overrun point) and the same recursion depth; and a session's log is
byte-identical whichever runs."""

from __future__ import annotations

import inspect
import sys
import traceback

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import clients.runner as runner_module
from clients import _budget, _context, _runner, budget
from clients import context as reference
from clients.budget import BudgetExceeded, run_within
from clients.context import AccountView, OpenOrder
from clients.runner import BotRunner, describe
from exchange.core.clock import Simulator
from exchange.kernel.compiled import CompiledExchange
from exchange.kernel.engine import Exchange
from exchange.sessions import session
from exchange.store.event_store import EventStore
from tests.clients.test_bot_budget import no_collection
from tests.clients.test_runner_twins import _depth

Counter = _budget.Counter  # the compiled counter (its units left are read)
TWINS = {"python": reference.Context, "compiled": _context.Context}
#: The methods the compiled twin runs in C (the others are the reference's own functions).
COMPILED = (
    "submit",
    "cancel",
    "amend",
    "cancel_all",
    "schedule",
    "balance",
    "positions",
    "open_orders",
    "_begin",
    "_drain",
)
PUBLIC = (
    "submit",
    "cancel",
    "amend",
    "cancel_all",
    "deposit",
    "withdraw",
    "schedule",
    "log",
    "balance",
    "positions",
    "open_orders",
    "book",
)


@pytest.fixture(params=sorted(TWINS))
def context_class(request):
    """The Context twin a test runs with (each test: once with each)."""
    return TWINS[request.param]


# ---------------------------------------------------------------------- hostile values
# Values whose comparisons, truth or conversion run Python code (charged by the budget, so
# the compiled twin must let the reference's code run them), made afresh for every run.
class Eq(str):
    """A str whose ``==`` runs Python code (a loop: charged by line)."""

    def __eq__(self, other):
        total = 0
        for ch in str(self):
            total += ord(ch)
        return str.__eq__(self, other)

    __hash__ = str.__hash__


class Truthy(int):
    """An int whose truth and conversion run Python code."""

    def __bool__(self):
        return int(self) != 0

    def __int__(self):
        return int.__int__(self) + 0

    def __index__(self):
        return int.__int__(self)


class Raising:
    """Raises from everything a context might ask of it."""

    def __bool__(self):
        raise ValueError("no truth")

    def __eq__(self, other):
        raise ValueError("no equality")

    __hash__ = object.__hash__

    def __int__(self):
        raise ValueError("no int")

    def __repr__(self):
        return "Raising()"


class Appender(list):
    """A list whose ``append`` is Python code."""

    def append(self, item):
        list.append(self, item)


def make(token):
    """The value a token stands for (fresh objects each run)."""
    if not isinstance(token, tuple):
        return token
    kind, value = token
    if kind == "eq":
        return Eq(value)
    if kind == "truthy":
        return Truthy(value)
    if kind == "raising":
        return Raising()
    if kind == "appender":
        return Appender()
    if kind == "view":
        return view(*[make(v) for v in value])
    if kind == "short":
        return tuple.__new__(AccountView, value)
    if kind == "tuple":
        return tuple(make(item) for item in value)
    raise AssertionError(kind)


def view(cash=1_000, positions="dict", orders=2, instrument="str"):
    """An account view: ``positions`` a dict or not, ``orders`` resting orders whose
    instrument is a plain str or a str whose ``==`` is Python."""
    held = {"H100-PERP": 3, "B200-PERP": -1}
    kinds = {"dict": held, "items": list(held.items()), "eq": {Eq("H100-PERP"): 3}}
    name = {"str": "H100-PERP", "eq": Eq("H100-PERP")}[instrument]
    made = tuple(
        OpenOrder(i, name if i % 2 else "B200-PERP", "buy", 100 + i, 1 + i) for i in range(orders)
    )
    return AccountView(cash, kinds[positions], made)


def plain(value):
    """A value compared between the twins: hostile objects by their type and value."""
    if isinstance(value, list | tuple):
        return (type(value).__name__, [plain(v) for v in value])
    if isinstance(value, dict):
        return ("dict", [(plain(k), plain(v)) for k, v in value.items()])
    if isinstance(value, Eq | Truthy):
        return (type(value).__name__, str(value))
    if isinstance(value, Raising | np.random.Generator):
        return type(value).__name__
    return value


MISSING = "<missing>"
STATE = ("name", "account", "now", "stopped", "_account", "_books", "_outbox", "_timers")


def state(ctx):
    """The context's attributes (or that one was deleted), compared between the twins."""
    return [plain(getattr(ctx, name, MISSING)) for name in (*STATE, "_next_ref")]


# ---------------------------------------------------------------------- operations
names = st.sampled_from(["H100-PERP", "B200-PERP", ("eq", "H100-PERP"), None, 7])
numbers = st.sampled_from([0, 1, 100, -5, True, None, 2.5, ("truthy", 0), ("truthy", 3)])
anything = st.one_of(names, numbers, st.just(("raising", None)))
CALLS = {
    "submit": st.one_of(
        st.tuples(  # as bots call it
            st.tuples(names, st.sampled_from(["buy", "sell"]), numbers, numbers).map(list),
            st.dictionaries(
                st.sampled_from(["order_type", "tif", "post_only"]),
                st.sampled_from(["limit", "market", "ioc", True, False]),
                max_size=3,
            ),
        ),
        st.tuples(  # anything
            st.lists(st.one_of(names, numbers), min_size=3, max_size=5),
            st.dictionaries(
                st.sampled_from(["order_type", "tif", "post_only", "instrument", "bogus"]),
                st.one_of(st.sampled_from(["limit", "market", ("eq", "market")]), anything),
                max_size=2,
            ),
        ),
    ),
    "cancel": st.tuples(st.lists(anything, max_size=2), st.just({})),
    "amend": st.tuples(st.lists(numbers, min_size=2, max_size=4), st.just({})),
    "cancel_all": st.tuples(
        st.lists(names, max_size=2),
        st.dictionaries(st.sampled_from(["instrument", "bogus"]), names, max_size=1),
    ),
    "schedule": st.tuples(
        st.lists(st.one_of(numbers, st.just(("raising", None))), min_size=0, max_size=3),
        st.dictionaries(st.sampled_from(["tag", "at"]), anything, max_size=1),
    ),
    "balance": st.tuples(st.lists(numbers, max_size=1), st.just({})),
    "positions": st.tuples(st.lists(numbers, max_size=1), st.just({})),
    "open_orders": st.tuples(
        st.lists(names, max_size=2),
        st.dictionaries(st.sampled_from(["instrument", "bogus"]), names, max_size=1),
    ),
    "book": st.tuples(st.lists(names, min_size=1, max_size=1), st.just({})),
    "deposit": st.tuples(st.lists(numbers, min_size=1, max_size=1), st.just({})),
    "_begin": st.tuples(
        st.tuples(
            numbers,
            st.one_of(
                st.none(),
                st.tuples(
                    st.just("view"),
                    st.tuples(
                        numbers,
                        st.sampled_from(["dict", "items", "eq"]),
                        st.integers(0, 4),
                        st.sampled_from(["str", "eq"]),
                    ),
                ),
                st.just(("tuple", (1, 2))),
            ),
        ).map(list),
        st.just({}),
    ),
    "_drain": st.tuples(st.just([]), st.just({})),
}
SETS = {
    "stopped": st.sampled_from([True, False, 0, None, ("truthy", 1)]),
    "_next_ref": st.sampled_from([5, 2**70, True, ("truthy", 4), "x"]),
    "_outbox": st.sampled_from([("appender", None), ("tuple", ())]),
    "_timers": st.sampled_from([("appender", None), ("tuple", ())]),
    "_account": st.sampled_from(
        [None, ("tuple", (1, 2, 3)), ("tuple", ()), ("short", (5,)), ("view", (5, "dict", 1))]
    ),
    "now": numbers,
}
calls = st.one_of(
    *[st.tuples(st.just("call"), st.just(name), spec) for name, spec in CALLS.items()]
)
changes = st.one_of(
    *[st.tuples(st.just("set"), st.just(name), value) for name, value in SETS.items()],
    st.tuples(st.just("del"), st.sampled_from(STATE[:-1] + ("_next_ref",)), st.none()),
)
operation = st.one_of(calls, calls, calls, changes)  # mostly calls


def perform(ctx, op, log):
    """Do one operation on ``ctx`` and log what came of it."""
    kind, name, spec = op
    try:
        if kind == "set":
            setattr(ctx, name, make(spec))
            return
        if kind == "del":
            delattr(ctx, name)
            return
        args, kwargs = spec
        result = getattr(ctx, name)(
            *[make(a) for a in args], **{k: make(v) for k, v in kwargs.items()}
        )
        log.append(("returned", name, plain(result)))
    except Exception as exc:  # noqa: BLE001 - compared between the twins
        log.append(("raised", type(exc).__name__, str(exc), exc))  # described afterwards


def run(cls, ops, lines, counter="compiled", begin=True):
    """Run ``ops`` as one callback of a fresh ``cls`` context within ``lines`` units (None:
    no budget) counted by ``counter`` (``"compiled"``: its units left are reported too), after
    a delivery began (``begin``) or not (calls outside a callback)."""
    ctx = cls("bot", "acct", np.random.default_rng(5))
    if begin:
        ctx._begin(11, view())
        ctx._books["H100-PERP"] = "a book view"
    log: list = []

    def callback():
        for op in ops:
            perform(ctx, op, log)
        return "done"

    left = installed = None
    with no_collection():
        try:
            if lines is None or counter == "python":
                result = run_within(lines, callback, counter=counter)
            else:
                tracer = Counter(lines)
                tracer.start()
                try:
                    result = callback()
                finally:
                    installed = tracer.stop()
                    left = tracer.left
            outcome = ("returned", result)
        except BaseException as exc:  # noqa: BLE001 - compared between the twins
            outcome = (type(exc).__name__, str(exc), describe(exc), frames(exc))
    # tracebacks formatted out here: their first formatting reads files (linecache), which
    # would charge the first twin to run more than the second
    # (and every frame of the traceback, unfiltered: the compiled twin adds none of its own)
    log = [
        (*entry[:3], describe(entry[3]), frames(entry[3])) if entry[0] == "raised" else entry
        for entry in log
    ]
    return outcome, log, state(ctx), left, installed


def frames(exc):
    """Every frame of ``exc``'s traceback: file, line and function."""
    return [(f.filename, f.lineno, f.name) for f in traceback.extract_tb(exc.__traceback__)]


def same(ops, lines, counter="compiled", begin=True):
    python = run(reference.Context, ops, lines, counter, begin)
    compiled = run(_context.Context, ops, lines, counter, begin)
    assert compiled == python
    return python


# ---------------------------------------------------------------------- the differential test
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(operation, min_size=1, max_size=8),
    lines=st.one_of(st.integers(0, 60), st.just(10**6), st.none()),
    begin=st.booleans(),
)
def test_any_calls_do_the_same_in_both_twins_under_any_budget(ops, lines, begin):
    """The same results, errors (messages, tracebacks), state, units left and overrun point."""
    outcome, _, _, left, _ = same(ops, lines, begin=begin)
    if lines is not None and outcome[0] == "returned":
        # and an overrun exactly where the reference overruns: one unit less fails
        needed = lines - left
        assert needed >= 0
        if needed:
            short = same(ops, needed - 1, begin=begin)
            assert short[0][0] == "BudgetExceeded"


instruments = st.sampled_from(["H100-PERP", "B200-PERP"])
honest = st.one_of(
    st.tuples(
        st.just("submit"),
        st.tuples(instruments, st.sampled_from(["buy", "sell"]), st.integers(0, 200), st.just(2)),
        st.fixed_dictionaries(
            {},
            optional={
                "order_type": st.sampled_from(["limit", "market"]),
                "tif": st.sampled_from(["gtc", "ioc"]),
                "post_only": st.booleans(),
            },
        ),
    ),
    st.tuples(st.just("cancel"), st.tuples(st.integers(1, 9)), st.just({})),
    st.tuples(st.just("amend"), st.tuples(st.integers(1, 9), st.just(5), st.just(2)), st.just({})),
    st.tuples(st.just("cancel_all"), st.tuples(instruments) | st.just(()), st.just({})),
    st.tuples(st.just("schedule"), st.tuples(st.integers(0, 99)), st.just({})),
    st.tuples(st.just("balance"), st.just(()), st.just({})),
    st.tuples(st.just("positions"), st.just(()), st.just({})),
    st.tuples(st.just("open_orders"), st.tuples(instruments) | st.just(()), st.just({})),
    st.tuples(st.just("book"), st.tuples(instruments), st.just({})),
    st.tuples(
        st.just("_begin"),
        st.tuples(
            st.just(7),
            st.tuples(st.just("view"), st.tuples(st.just(5), st.just("dict"), st.integers(0, 6))),
        ),
        st.just({}),
    ),
    st.tuples(st.just("_drain"), st.just(()), st.just({})),
).map(lambda call: ("call", call[0], (list(call[1]), call[2])))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(honest, min_size=1, max_size=10), lines=st.integers(0, 80) | st.just(10**6))
def test_calls_as_bots_make_them_charge_and_overrun_as_the_reference(ops, lines):
    """The compiled twin's own paths: the same units, the same overrun point."""
    outcome, _, _, left, _ = same(ops, lines)
    if outcome[0] == "returned":
        assert same(ops, lines - left - 1)[0][0] == "BudgetExceeded"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(operation, min_size=1, max_size=6), lines=st.integers(0, 40))
def test_under_the_python_counter_the_compiled_twin_runs_the_reference(ops, lines):
    same(ops, lines, counter="python")


def test_a_sequence_of_honest_calls_overruns_where_the_reference_does():
    calls = [
        ("call", "submit", (["H100-PERP", "buy", 100, 2], {})),
        ("call", "submit", (["H100-PERP", "sell", 0, 1], {"order_type": "market"})),
        ("call", "submit", (["H100-PERP", "sell", 5, 1], {"tif": "ioc", "post_only": True})),
        ("call", "cancel", ([4], {})),
        ("call", "amend", ([4, 101, 3], {})),
        ("call", "cancel_all", ([], {})),
        ("call", "cancel_all", (["H100-PERP"], {})),
        ("call", "schedule", ([50, "tag"], {})),
        ("call", "balance", ([], {})),
        ("call", "positions", ([], {})),
        ("call", "open_orders", ([], {})),
        ("call", "open_orders", (["H100-PERP"], {})),
        ("call", "book", (["H100-PERP"], {})),
        ("call", "_begin", ([12, ("view", (5, "dict", 3, "str"))], {})),
        ("call", "_drain", ([], {})),
    ]
    for lines in range(0, 130, 3):
        same(calls, lines)
    outcome, _, _, _, installed = same(calls, 10**6)
    assert outcome == ("returned", "done") and installed


#: What each method costs the budget: the reference's Python calls (and the list
#: comprehension's line events: its first line and one a resting order).
UNITS = {
    "submit": (("H100-PERP", "buy", 100, 1), {"tif": "ioc"}, 2),
    "cancel": ((3,), {}, 2),
    "amend": ((3, 100, 2), {}, 2),
    "cancel_all": (("H100-PERP",), {}, 2),
    "schedule": ((5,), {"tag": "t"}, 1),
    "balance": ((), {}, 2),
    "positions": ((), {}, 2),
    "open_orders": (("H100-PERP",), {}, 4 + 3),
    "book": (("H100-PERP",), {}, 1),
    "deposit": ((5,), {}, 2),
    "_begin": ((4, None), {}, 1),
    "_drain": ((), {}, 1),
}


@pytest.mark.parametrize("name", sorted(UNITS))
def test_each_method_charges_the_reference_s_units(context_class, name):
    args, kwargs, units = UNITS[name]
    ctx = context_class("bot", "acct", np.random.default_rng(5))
    ctx._begin(3, view(orders=3))
    method = getattr(ctx, name)
    tracer = Counter(100)
    with no_collection():
        tracer.start()
        try:
            method(*args, **kwargs)
        finally:
            assert tracer.stop()
    assert 100 - tracer.left == units


# ---------------------------------------------------------------------- recursion


def _at_depth(cls, name, args, left, lines):
    """Recurse until ``left`` levels are left, then call ``ctx.name(*args)``: what comes of
    it, and the state after."""
    ctx = cls("bot", "acct", np.random.default_rng(5))
    ctx._begin(3, view())

    def callback():
        deepest = _depth()

        def down(i):
            if i < deepest - left:
                return down(i + 1)
            try:
                return ("returned", getattr(ctx, name)(*args))
            except BaseException as exc:  # noqa: BLE001 - compared between the twins
                return ("raised", exc)  # described up here: no levels left down there

        try:
            return down(0)
        except RecursionError as exc:  # on the way down: no context call made
            return ("raised", exc)

    with no_collection():
        tracer = Counter(lines) if lines is not None else None
        if tracer is not None:
            tracer.start()
        try:
            how, got = callback()
        finally:
            installed = tracer.stop() if tracer is not None else None
    if how == "raised":
        got = (type(got).__name__, str(got), describe(got))
    else:
        got = ("returned", plain(got))
    return got, state(ctx), None if tracer is None else tracer.left, installed


@pytest.mark.parametrize("lines", [None, 10**6])
def test_deep_recursion_then_a_context_call_fails_at_the_same_depth(lines):
    calls = {
        "submit": ("H100-PERP", "buy", 100, 1),
        "cancel_all": (),
        "schedule": (5, "t"),
        "balance": (),
        "positions": (),
        "open_orders": ("H100-PERP",),
        "_begin": (4, view()),
        "_drain": (),
        "book": ("H100-PERP",),
    }
    failed = set()
    for name, args in calls.items():
        for left in range(-3, 9):
            python = _at_depth(reference.Context, name, args, left, lines)
            compiled = _at_depth(_context.Context, name, args, left, lines)
            assert compiled == python, (name, left)
            if python[0][0] == "RecursionError":
                failed.add(name)
    assert failed == set(calls)  # each fails near the limit (the test reaches it)


# ---------------------------------------------------------------------- the fast path
@pytest.mark.parametrize("lines", [None, 1_000])
def test_the_compiled_twin_runs_its_own_code_unless_it_must_not(lines):
    """Inside a budget with units to spare (or none at all) none of the reference's code runs
    (a profile function sees every Python frame started); where it must, it does."""
    codes = {getattr(reference.Context, name).__code__: name for name in COMPILED}
    ran: list[str] = []

    def profiler(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            ran.append(codes[frame.f_code])

    ctx = _context.Context("bot", "acct", np.random.default_rng(1))

    def everything():
        ctx._begin(3, view())
        ctx.submit("H100-PERP", "buy", 100, 1, tif="ioc")
        ctx.submit("H100-PERP", "buy", 0, 1, order_type="market")
        ctx.cancel(1)
        ctx.amend(1, 2, 3)
        ctx.cancel_all("H100-PERP")
        ctx.cancel_all(instrument=None)
        ctx.schedule(5)
        ctx.schedule(6, tag="t")
        ctx.balance()
        ctx.positions()
        ctx.open_orders("H100-PERP")
        ctx.open_orders(instrument=None)
        ctx._drain()

    def unusual():
        ctx.submit("H100-PERP", "buy", price=100, qty=1)  # by keyword: the reference binds
        ctx.schedule(Truthy(5))  # int(at) runs Python code
        ctx.open_orders(Eq("H100-PERP"))  # so does == of each resting order's instrument

    with no_collection():
        sys.setprofile(profiler)
        try:
            run_within(lines, everything, counter="compiled")
            assert ran == []
            run_within(lines, unusual, counter="compiled")
        finally:
            sys.setprofile(None)
    assert ran == ["submit", "schedule", "open_orders"]


def test_a_budget_about_to_be_overrun_runs_the_reference_which_overruns_in_its_frames():
    ctx = _context.Context("bot", "acct", np.random.default_rng(1))
    ctx._begin(3, view())
    with no_collection(), pytest.raises(BudgetExceeded) as overrun:
        run_within(2, lambda: ctx.submit("H100-PERP", "buy", 100, 1), counter="compiled")
    # the lambda's call, submit's: _send's call overruns, in _send
    assert describe(overrun.value).splitlines()[-2].endswith("in _send")
    assert ctx._outbox == [] and ctx._next_ref == 2


# ---------------------------------------------------------------------- the API
def test_both_twins_offer_the_same_api_with_the_same_docstrings():
    compiled, python = _context.Context, reference.Context
    assert compiled.__name__ == python.__name__ == "Context"
    assert compiled.__doc__ == python.__doc__
    for name in (*PUBLIC, "_begin", "_drain", "_send", "_view"):
        assert getattr(compiled, name).__doc__ == getattr(python, name).__doc__, name
    for name in COMPILED:
        ours = inspect.signature(getattr(compiled, name))
        theirs = inspect.signature(getattr(python, name))
        assert list(ours.parameters)[1:] == list(theirs.parameters)[1:], name
        assert [p.default for p in ours.parameters.values()] == [
            p.default for p in theirs.parameters.values()
        ], name


def test_a_context_is_made_with_its_name_account_and_generator(context_class):
    rng = np.random.default_rng(9)
    ctx = context_class("b", "acct", rng)
    assert (ctx.name, ctx.account, ctx.rng, ctx.now, ctx.stopped) == ("b", "acct", rng, 0, False)
    assert ctx._account is None and ctx._books == {} and ctx._next_ref == 1
    assert ctx._drain() == ([], [])
    ctx.note = "mine"  # a bot may keep its own attributes on it
    assert ctx.note == "mine"
    with pytest.raises(AttributeError, match="'Context' object has no attribute 'nope'"):
        ctx.nope  # noqa: B018


def test_every_bot_s_context_is_a_context_whichever_runner_made_it(context_class):
    """A bot may check ``isinstance(ctx, clients.context.Context)``: the compiled twin is
    registered as a virtual subclass of the reference."""
    ctx = context_class("b", "acct", np.random.default_rng(9))
    assert isinstance(ctx, reference.Context)
    assert issubclass(_context.Context, reference.Context)
    assert not isinstance(object(), reference.Context)


def test_outside_a_callback_account_queries_raise_and_a_stopped_bot_may_not_act(context_class):
    ctx = context_class("b", "acct", np.random.default_rng(9))
    for query in (ctx.balance, ctx.positions, ctx.open_orders):
        with pytest.raises(RuntimeError, match="only inside a callback"):
            query()
    ctx.stopped = True
    with pytest.raises(reference.BotStopped, match="bot 'b' has been stopped"):
        ctx.submit("H100-PERP", "buy", 1, 1)
    with pytest.raises(reference.BotStopped):
        ctx.schedule(5)
    assert ctx._next_ref == 2  # submit takes its ref before _send refuses (as the reference)
    assert ctx._drain() == ([], [])


# ---------------------------------------------------------------------- which twin runs
def test_the_compiled_runner_gives_the_compiled_context_and_the_reference_the_reference(
    monkeypatch,
):
    compiled_runner = _runner.CompiledRunner(CompiledExchange(lambda event: None), Simulator(), 1)
    reference_runner = BotRunner(Exchange(lambda event: None), Simulator(), 1)

    def context_of(runner):
        return type(runner_module._new_context(runner, "b", "a", np.random.default_rng(1)))

    assert context_of(compiled_runner) is _context.Context
    assert context_of(reference_runner) is reference.Context
    monkeypatch.setattr(runner_module, "CONTEXT", "python")
    assert context_of(compiled_runner) is reference.Context
    monkeypatch.setattr(runner_module, "CONTEXT", "compiled")
    monkeypatch.setattr(budget, "COUNTER", "python")
    assert context_of(compiled_runner) is reference.Context


def _digest(tmp_path, scenario, twin, **overrides):
    db = tmp_path / f"{scenario}-{twin}.db"
    old = runner_module.CONTEXT
    runner_module.CONTEXT = twin
    try:
        session.run(scenario, db, seed=7, overrides=overrides or None)
    finally:
        runner_module.CONTEXT = old
    with EventStore.open(db, mode="r") as store:
        return store.digest()


@pytest.mark.parametrize(
    ("scenario", "overrides"), [("guarantor-spiral", {"days": 4}), ("second-derivative", {})]
)
def test_a_session_log_is_byte_identical_with_either_context(tmp_path, scenario, overrides):
    assert sys.modules.get("exchange.kernel.compiled") is not None
    compiled = _digest(tmp_path, scenario, "compiled", **overrides)
    assert compiled == _digest(tmp_path, scenario, "python", **overrides)
