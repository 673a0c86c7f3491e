"""A bot cannot escape its budget, nor stop a session (issue #17, point 4).

(a) The budget counts work no single line can hide: a one-line ``while True: pass`` is stopped;
a callback that removes or replaces the trace function, or swallows its overrun, fails.
(b) Whatever a bot raises -- ``SystemExit``, its own ``KeyboardInterrupt``, any
``BaseException`` -- stops that bot only; a real SIGINT while a bot runs still interrupts the
run, whose log then resumes.

Tests of a bot that could hang the session today arm a wall-clock alarm that raises inside it
(a guard so that the test ends, never an assertion on time)."""

from __future__ import annotations

import collections
import contextlib
import gc
import itertools
import os
import signal
import subprocess
import sys
import time

import pytest

from clients.bot import Bot
from clients.budget import BudgetExceeded, run_within
from clients.gateway import BotEntry, serve_session
from clients.latency import Latency
from exchange.core import events as ev
from exchange.sessions.session import verify
from exchange.store.event_store import EventStore
from tests.clients.test_gateway import ShortProducts
from tests.clients.test_runner import MS, Quoter, market

# every test here runs with both runner twins (tests/clients/conftest.py)
pytestmark = pytest.mark.usefixtures("twin")


class Hung(Exception):
    """Raised by the test's alarm inside a bot that nothing else stopped."""


@contextlib.contextmanager
def alarm(seconds: float):
    def ring(signum, frame):
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run(bot: Bot, days: int = 1, budget_lines: int | None = 20_000):
    """The products market, a quoting maker, and ``bot`` on ``taker`` (one index print a
    simulated hour reaches it as ``on_index``)."""
    engine, sim, runner, events, end = market(days=days)
    runner.add("mm", "maker", Quoter(), latency=Latency(fixed_ns=MS))
    runner.add("bad", "taker", bot, latency=Latency(fixed_ns=MS), budget_lines=budget_lines)
    runner.start(end)
    try:
        with alarm(20):
            sim.run(end, on_step=engine.advance)
    except KeyboardInterrupt:
        pytest.fail("a bot's KeyboardInterrupt ended the whole run")
    return engine, events, end


def failures(events):
    return [e for e in events if e.kind == ev.BOT_FAILED]


def assert_only_the_bot_failed(events, end, cause, callback="on_index"):
    """The bot failed once, with ``cause``; the maker quoted to the end of the session."""
    (failed,) = failures(events)
    assert failed.account == "taker" and failed.data["cause"] == cause, failed.data
    assert failed.data["callback"] == callback
    assert "Hung" not in failed.data["detail"]
    quotes = [e for e in events if e.kind == ev.ORDER_ACCEPTED and e.account == "maker"]
    assert quotes[-1].t > end - 2 * 3_600 * 10**9 > failed.t
    return failed


# ---------------------------------------------------------------------- (a) the budget
def test_a_function_that_loops_costs_its_call_plus_its_executed_lines():
    def ten_lines():
        total = 0
        for i in range(4):
            total += i
        return total

    # the call + (1 + 5 turns of the for line + 4 bodies + return = 11 line events) = 12
    assert run_within(12, ten_lines) == 6
    with pytest.raises(BudgetExceeded, match="budget of 11 lines"):
        run_within(11, ten_lines)


def test_a_function_without_a_loop_costs_one_a_call_whatever_its_length():
    def step():
        x = 1
        y = x + 1
        return y

    def caller():
        step()
        step()
        step()
        return 4

    # caller + 3 calls of step = 4, however many lines each runs (9 + 4 of them here)
    assert run_within(4, caller) == 4
    with pytest.raises(BudgetExceeded, match="budget of 3 lines"):
        run_within(3, caller)


def test_a_c_iterator_calling_a_loop_free_function_forever_is_stopped_after_budget_calls():
    seen = []

    def record(x):
        seen.append(x)
        return x

    def forever():
        return collections.deque(map(record, itertools.count()), maxlen=0)

    with pytest.raises(BudgetExceeded, match="budget of 100 lines"):
        run_within(100, forever)
    assert seen == list(range(99))  # 100 = forever's call + 99 calls of record; the 100th stops


ONE_LINE_LOOPS = {
    "while True": "def spin():\n    while True: pass\n",
    "while 1": "def spin():\n    while 1: pass\n",
    "while not None": "def spin():\n    while not None: pass\n",
    "while ...": "def spin():\n    while ...: pass\n",
}


@pytest.mark.parametrize("source", ONE_LINE_LOOPS.values(), ids=ONE_LINE_LOOPS.keys())
def test_a_one_line_infinite_loop_is_stopped_by_the_budget(source):
    namespace: dict = {}
    exec(compile(source, "spinner.py", "exec"), namespace)

    class Spinner(Bot):
        def on_index(self, ctx, index):
            namespace["spin"]()

    engine, events, end = run(Spinner())
    failed = assert_only_the_bot_failed(events, end, "budget")
    assert "BudgetExceeded: callback exceeded its budget of 20,000 lines" in failed.data["detail"]
    assert "spinner.py:2 in spin" in failed.data["detail"]


def test_a_one_line_loop_is_stopped_at_the_same_point_on_every_run():
    class Spinner(Bot):
        def on_index(self, ctx, index):
            ctx.deposit(1)
            while True: pass  # fmt: skip # noqa: E701

    logs = []
    for _ in range(2):
        engine, events, end = run(Spinner())
        assert_only_the_bot_failed(events, end, "budget")
        logs.append(events)
    assert logs[0] == logs[1]


def test_removing_the_trace_function_inside_a_callback_does_not_escape_the_budget():
    class Untracer(Bot):
        def on_index(self, ctx, index):
            sys.settrace(None)
            n = 0
            while True:
                n += 1

    engine, events, end = run(Untracer())
    failed = assert_only_the_bot_failed(events, end, "budget")
    assert "exceeded its budget" in failed.data["detail"]


@pytest.mark.parametrize("tracer", [None, lambda frame, event, arg: None], ids=["none", "own"])
def test_a_callback_that_changes_the_trace_function_fails_when_it_returns(tracer):
    class Untracer(Bot):
        def on_index(self, ctx, index):
            sys.settrace(tracer)

    engine, events, end = run(Untracer())
    failed = assert_only_the_bot_failed(events, end, "budget")
    assert failed.data["detail"].endswith(
        "BudgetExceeded: callback called sys.settrace, which a budgeted bot may not"
    )
    assert sys.gettrace() is None or "coverage" in type(sys.gettrace()).__module__


def test_a_callback_that_swallows_its_overrun_still_fails():
    class Swallower(Bot):
        def on_index(self, ctx, index):
            try:
                while True:
                    pass
            except BaseException:  # noqa: BLE001 - the point of the test
                ctx.deposit(1)

    engine, events, end = run(Swallower())
    failed = assert_only_the_bot_failed(events, end, "budget")
    assert "(and caught the overrun)" in failed.data["detail"]
    assert not [e for e in events if e.kind == ev.DEPOSIT and e.t > 0]


def test_a_budgeted_callback_leaves_sys_settrace_as_it_was_outside_callbacks():
    calls = []
    run_within(1_000, lambda: None)
    before = sys.gettrace()
    sys.settrace(lambda *a: calls.append(a))  # outside any callback: the real settrace
    try:
        assert sys.gettrace() is not before
    finally:
        sys.settrace(before)


# ---------------------------------------------------------------------- (b) BaseException
class ExitsOnce(Bot):
    """Raises ``exc`` in its first on_index."""

    def __init__(self, exc: BaseException):
        self.exc = exc

    def on_index(self, ctx, index):
        raise self.exc


class Custom(BaseException):
    pass


class Unprintable(Exception):
    def __str__(self):
        raise SystemExit("from __str__")


@pytest.mark.parametrize(
    "exc, text",
    [
        (SystemExit(0), "SystemExit: 0"),
        (KeyboardInterrupt(), "KeyboardInterrupt: "),
        (GeneratorExit(), "GeneratorExit: "),
        (Custom("mine"), "Custom: mine"),
        (Unprintable(), "Unprintable: <unprintable>"),
    ],
    ids=["SystemExit", "KeyboardInterrupt", "GeneratorExit", "BaseException", "bad __str__"],
)
def test_whatever_a_bot_raises_stops_that_bot_only(exc, text):
    engine, events, end = run(ExitsOnce(exc))
    failed = assert_only_the_bot_failed(events, end, "raised")
    assert failed.data["detail"].endswith(text)


def test_sys_exit_in_a_callback_leaves_a_finished_log_with_the_bot_failed(tmp_path):
    db = tmp_path / "exit.db"
    bots = [
        BotEntry("mm", "maker", Quoter(), Latency(fixed_ns=MS)),
        BotEntry("bad", "taker", ExitsOnce(SystemExit(0)), Latency(fixed_ns=MS)),
    ]
    serve_session(ShortProducts(2), 7, db, (), bots=bots)
    with EventStore.open(db, mode="r") as store:
        assert store.session["status"] == "finished"
        (failed,) = store.events(kind=ev.BOT_FAILED)
    assert failed.account == "taker" and failed.data["detail"].endswith("SystemExit: 0")
    assert verify(db).ok


# ---------------------------------------------------------------------- real interrupts
class Interrupted(Quoter):
    """A maker that, when ``armed``, sends this process a real SIGINT while its 30th
    ``on_index`` runs (``swallow``: and catches the ``KeyboardInterrupt`` itself)."""

    def __init__(self, armed: bool, swallow: bool = False):
        super().__init__()
        self.armed, self.swallow, self.prints = armed, swallow, 0

    def on_index(self, ctx, index):
        super().on_index(ctx, index)
        self.prints += 1
        if self.armed and self.prints == 30:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(10**8):  # the handler runs at the next instruction
                    pass
            except KeyboardInterrupt:
                if not self.swallow:
                    raise


def session(db, maker, resume=False):
    bots = [BotEntry("mm", "maker", maker, Latency(fixed_ns=MS))]
    return serve_session(
        ShortProducts(3), 7, db, (), bots=bots, resume=resume, batch_size=50, snapshot_every=1_000
    )


@pytest.mark.parametrize("swallow", [False, True], ids=["raised", "caught by the bot"])
def test_a_real_interrupt_while_a_bot_runs_interrupts_the_run_and_the_log_resumes(
    tmp_path, swallow
):
    whole = tmp_path / "whole.db"
    session(whole, Interrupted(armed=False))
    db = tmp_path / "cut.db"
    with pytest.raises(KeyboardInterrupt):
        session(db, Interrupted(armed=True, swallow=swallow))
    with EventStore.open(db, mode="r") as store:
        assert store.session["status"] == "running"
        assert not list(store.events(kind=ev.BOT_FAILED))
    summary = session(db, Interrupted(armed=False), resume=True)
    assert summary.resumed_from > 0
    with EventStore.open(db, mode="r") as cut, EventStore.open(whole, mode="r") as full:
        assert list(cut.payloads(1, cut.last_seq)) == list(full.payloads(1, full.last_seq))
    assert verify(db).ok


SLEEPY_CLI = """
import os, sys, time
from clients.strategies import STRATEGIES, MarketMaker

class SleepyMaker(MarketMaker):
    # the reference maker; with GPUEX_TEST_SLEEP set, it writes that file in its 30th on_index
    # and sleeps there (what a slow bot does while the user presses Ctrl-C)
    def on_index(self, ctx, index):
        super().on_index(ctx, index)
        self.prints = getattr(self, "prints", 0) + 1
        marker = os.environ.get("GPUEX_TEST_SLEEP")
        if marker and self.prints == 30:
            open(marker, "w").close()
            time.sleep(120)

STRATEGIES["market_maker"] = SleepyMaker
from exchange.cli import main
main()
"""


def test_ctrl_c_while_a_bot_sleeps_in_a_callback_interrupts_gpuex_run_and_resume_finishes_it(
    tmp_path,
):
    script = tmp_path / "gpuex_sleepy.py"
    script.write_text(SLEEPY_CLI)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root}
    env.pop("GPUEX_TEST_SLEEP", None)

    def gpuex(db, *extra, sleep=None, wait=True):
        command = [sys.executable, str(script), "run", "generation-shock", "--set", "days=3"]
        command += ["--db", str(db), "--batch-size", "50", "--snapshot-every", "1000"]
        command += ["--no-report", "--quiet", *extra]
        run_env = env if sleep is None else {**env, "GPUEX_TEST_SLEEP": str(sleep)}
        process = subprocess.Popen(
            command, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        if wait:
            out, err = process.communicate(timeout=300)
            assert process.returncode == 0, err
        return process

    marker = tmp_path / "asleep"
    cut = tmp_path / "cut.db"
    process = gpuex(cut, sleep=marker, wait=False)
    deadline = time.monotonic() + 300  # a guard against a hang, not a measurement
    while not marker.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the bot never reached its sleep"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1 and "Aborted!" in err, err
    with EventStore.open(cut, mode="r") as store:
        assert store.session["status"] == "running" and store.last_seq > 0
        assert not list(store.events(kind=ev.BOT_FAILED))
    gpuex(cut, "--resume")
    whole = tmp_path / "whole.db"
    gpuex(whole)
    with EventStore.open(cut, mode="r") as a, EventStore.open(whole, mode="r") as b:
        assert a.session["status"] == "finished"
        assert list(a.payloads(1, a.last_seq)) == list(b.payloads(1, b.last_seq))
    assert verify(cut).ok


def test_sys_exit_in_a_remote_bots_callback_stops_that_bot_as_in_process(tmp_path):
    from tests.clients.test_gateway import remote_bot, serve

    db = tmp_path / "served.db"
    bots = [
        BotEntry("mm", "maker", Quoter(), Latency(fixed_ns=MS)),
        BotEntry("bad", "taker", None, Latency(fixed_ns=MS), remote=True),
    ]
    summary, results = serve(db, ["taker"], bots, {"taker": remote_bot(ExitsOnce(SystemExit(3)))})
    assert results["taker"].failure.cause == "raised"  # the client went on to the end
    with EventStore.open(db, mode="r") as store:
        assert store.session["status"] == "finished"
        (failed,) = store.events(kind=ev.BOT_FAILED)
    assert failed.account == "taker" and failed.data["cause"] == "raised"
    assert failed.data["callback"] == "on_index"
    assert failed.data["detail"].endswith("SystemExit: 3")


# ---------------------------------------------------------------------- the compiled counter
# ``clients._budget`` counts in C what ``run_within``'s Python counter counts (issue #20, point
# 4): the same units at every event, so the same budget fails at the same point, with the same
# error, and a session's log is byte-identical whichever counter runs.
COUNTERS = ("compiled", "python")


def loop_free_calls(log):
    def step(x):
        y = x + 1
        z = y * 2
        return z

    a = step(1)
    log.append(a)
    b = step(a)
    log.append(b)
    return step(a + b)


def for_and_while_loops(log):
    total = 0
    for i in range(20):
        total += i
        log.append(total)
    n = 0
    while n < 15:
        n += 2
        log.append(n)
    return total + n


def comprehensions(log):
    squares = [i * i for i in range(30)]
    log.append(sum(squares))
    evens = {i for i in squares if i % 2 == 0}
    log.append(len(evens))
    table = {i: [j for j in range(i)] for i in range(6)}
    log.append(len(table))
    return sum(x for x in squares if x > 10)


def generators_resumed(log):
    def count_to(n):
        i = 0
        while i < n:
            received = yield i
            if received:
                i += received
            i += 1

    def two():
        yield 1
        yield 2

    for value in count_to(8):
        log.append(value)
    pair = two()
    log.append(next(pair))
    log.append(next(pair))
    pair.close()  # resumed once more (GeneratorExit): here, not when collected
    sent = count_to(20)
    log.append(next(sent))
    log.append(sent.send(5))
    try:
        sent.throw(ValueError("stop"))
    except ValueError:
        log.append("thrown")
    return sum(count_to(6))


def recursion(log):
    def fib(n):
        if n < 2:
            return n
        return fib(n - 1) + fib(n - 2)

    def walk(depth):
        total = 0
        for _ in range(2):
            total += 1
        return total + (walk(depth - 1) if depth else 0)

    log.append(fib(10))
    return walk(12)


def one_line_spin_guarded(log):
    def maybe_spin(n):
        total = 0
        for i in range(n):
            total += i
        if n < 0:
            while True: pass  # fmt: skip # noqa: E701
        return total

    for n in range(5):
        log.append(maybe_spin(n))
    return log[-1]


def one_line_spin_forever(log):
    log.append("spinning")
    while True: pass  # fmt: skip # noqa: E701


def exceptions_caught_inside(log):
    def check(i):
        if i % 3 == 0:
            raise ValueError(i)
        return i

    for i in range(12):
        try:
            log.append(check(i))
        except ValueError:
            log.append(-i)
        finally:
            log.append("f")
    try:
        {}["missing"]
    except KeyError:
        log.append("key")
    return len(log)


def c_calling_python_back(log):
    def double(x):
        return x * 2

    def triangle(x):
        total = 0
        for i in range(x):
            total += i
        return total

    log.extend(map(double, range(10)))
    log.extend(map(triangle, range(6)))
    log.append(sorted(range(10), key=lambda v: -v))
    log.append(list(filter(lambda v: v % 3, range(12))))
    return len(log)


def getattr_and_properties(log):
    class Lazy:
        def __init__(self):
            self.real = 1

        def __getattr__(self, name):
            total = 0
            for ch in name:
                total += ord(ch)
            return total

        @property
        def twice(self):
            return self.real * 2

    obj = Lazy()
    log.append(obj.abc)
    log.append(obj.real)
    log.append(obj.twice)
    log.append(getattr(obj, "xyz", None))
    return obj.abc + obj.twice


def nested_closures(log):
    def outer(n):
        def middle(m):
            def inner(k):
                return n + m + k

            return [inner(k) for k in range(m)]

        return [middle(m) for m in range(n)]

    log.append(outer(5))
    return outer(3)


def stdlib_and_code_made_on_the_fly(log):
    from fractions import Fraction

    log.append(str(sum(Fraction(1, d) for d in range(1, 8))))
    namespace: dict = {}
    exec(
        "def made(n):\n    t = 0\n    for i in range(n):\n        t += i\n    return t\n", namespace
    )
    log.append(namespace["made"](10))  # a new code object each run: classified each time
    with contextlib.suppress(KeyError):
        raise KeyError("x")
    return log[-1]


def recursion_to_the_limit_caught(log):
    def down(n):
        log.append(n)
        for _ in range(1):
            down(n + 1)

    try:
        down(0)
    except RecursionError as exc:
        log.append(str(exc))
    return len(log)


def a_nested_budget(log):
    def loop(n):
        total = 0
        for i in range(n):
            total += i
        return total

    try:
        log.append(run_within(30, loop, 10))
        log.append(run_within(30, loop, 40))
    except BudgetExceeded as exc:
        log.append(str(exc))
    return loop(25)


CORPUS = [
    loop_free_calls,
    for_and_while_loops,
    comprehensions,
    generators_resumed,
    recursion,
    one_line_spin_guarded,
    one_line_spin_forever,
    exceptions_caught_inside,
    c_calling_python_back,
    getattr_and_properties,
    nested_closures,
    stdlib_and_code_made_on_the_fly,
    recursion_to_the_limit_caught,
    a_nested_budget,
]


@contextlib.contextmanager
def no_collection():
    """No cyclic garbage collection meanwhile: a collection inside a budgeted call finalises
    whatever it finds (a test framework's generator, say), and those Python frames count
    against the budget too, under either counter, at a point set by the process's history."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def outcome(fn, lines, counter):
    """What ``fn`` does within ``lines`` units counted by ``counter`` (the default counter is
    switched too, for the budgets ``fn`` opens itself): its result or its error, and the log
    of its progress."""
    from clients import budget

    log: list = []
    default, budget.COUNTER = budget.COUNTER, counter
    try:
        with no_collection():
            return ("returned", run_within(lines, fn, log, counter=counter), log)
    except BaseException as exc:  # noqa: BLE001 - compared between the counters
        return (type(exc).__name__, str(exc), log)
    finally:
        budget.COUNTER = default


def smallest_budget(fn, counter, cap=1 << 16):
    """The smallest budget within which ``fn`` returns (``cap`` if it never does below it):
    the number of units it spends, found by bisection."""
    low, high = -1, 1  # low fails, high is tried
    while outcome(fn, high, counter)[0] != "returned":
        low, high = high, high * 2
        if high > cap:
            return cap
    while high - low > 1:
        middle = (low + high) // 2
        if outcome(fn, middle, counter)[0] == "returned":
            high = middle
        else:
            low = middle
    return high


@pytest.mark.parametrize("fn", CORPUS, ids=[fn.__name__ for fn in CORPUS])
def test_the_compiled_and_the_python_counters_spend_the_same_units(fn):
    compiled, python = (smallest_budget(fn, counter) for counter in COUNTERS)
    assert compiled == python
    if fn not in (one_line_spin_forever, recursion_to_the_limit_caught):
        assert 0 < compiled < 1 << 16  # it returns, within a budget found
    assert outcome(fn, compiled, "compiled")[0] == "returned" or compiled == 1 << 16


@pytest.mark.parametrize("fn", CORPUS, ids=[fn.__name__ for fn in CORPUS])
def test_under_any_budget_both_counters_stop_a_callback_at_the_same_point(fn):
    needed = smallest_budget(fn, "python")
    budgets = sorted({0, 1, 2, 3, needed // 3, needed // 2, needed - 2, needed - 1, needed})
    budgets += list(range(4, min(needed, 200), 7))
    for lines in budgets:
        assert outcome(fn, lines, "compiled") == outcome(fn, lines, "python"), lines


def test_a_generator_resumed_across_callbacks_counts_the_same_under_both_counters():
    def outcomes(counter):
        def numbers():
            i = 0
            while True:
                yield i
                for _ in range(i):
                    i += 1

        gen = numbers()
        seen = []
        with no_collection():
            for lines in (1, 3, 5, 9, 2, 40, 0, 100):
                try:
                    seen.append(run_within(lines, next, gen, counter=counter))
                except (BudgetExceeded, StopIteration) as exc:
                    seen.append(repr(exc))
        return seen

    compiled = outcomes("compiled")
    assert compiled == outcomes("python")
    assert any("exceeded" in str(item) for item in compiled)


@pytest.mark.parametrize("counter", COUNTERS)
def test_a_callback_that_removes_the_counter_with_the_real_settrace_fails(counter):
    from clients import budget

    def untrace():
        budget._SETTRACE(None)  # the interpreter's own, reached past the guard
        return 1

    with pytest.raises(BudgetExceeded, match="removed the budget's trace function"):
        run_within(1_000, untrace, counter=counter)
    assert sys.gettrace() is None or "coverage" in type(sys.gettrace()).__module__


@pytest.mark.parametrize("counter", COUNTERS)
def test_the_guard_refuses_sys_settrace_under_either_counter_and_counting_goes_on(counter):
    def untrace_then_loop():
        sys.settrace(None)
        total = 0
        for i in range(100):
            total += i
        return total

    with pytest.raises(BudgetExceeded, match="budget of 50 lines"):
        run_within(50, untrace_then_loop, counter=counter)
    with pytest.raises(BudgetExceeded, match="called sys.settrace"):
        run_within(1_000, untrace_then_loop, counter=counter)


@pytest.mark.parametrize("counter", COUNTERS)
def test_a_swallowed_overrun_fails_under_either_counter(counter):
    def swallow():
        try:
            while True: pass  # fmt: skip # noqa: E701
        except BaseException:  # noqa: BLE001 - the point of the test
            return "escaped"

    with pytest.raises(BudgetExceeded, match="and caught the overrun"):
        run_within(1_000, swallow, counter=counter)


def test_the_compiled_counter_puts_back_the_trace_function_it_found():
    from clients import budget

    seen = []

    def outer_tracer(frame, event, arg):
        seen.append(event)

    before = sys.gettrace()
    budget._SETTRACE(outer_tracer)
    try:
        run_within(1_000, lambda: None, counter="compiled")
        assert sys.gettrace() is outer_tracer
    finally:
        budget._SETTRACE(before)


def test_the_compiled_counter_is_the_default_on_python_3_11():
    from clients import _budget, budget

    assert budget.COUNTER == "compiled"
    tracers = []
    run_within(1_000, lambda: tracers.append(sys.gettrace()))
    assert type(tracers[0]) is _budget.Counter


class Misbehaving(Bot):
    """One of several ways to fail in ``on_index`` (``how``), after some honest work."""

    def __init__(self, how: str):
        self.how, self.prints = how, 0

    def on_index(self, ctx, index):
        self.prints += 1
        total = 0
        for i in range(self.prints * 20):  # more work each print: "loop" overruns on a later one
            total += i
        if self.how == "spin" and self.prints == 2:
            while True: pass  # fmt: skip # noqa: E701
        if self.how == "swallow" and self.prints == 3:
            try:
                while True:
                    pass
            except BaseException:  # noqa: BLE001 - the point of the test
                ctx.deposit(1)
        if self.how == "recurse" and self.prints == 2:
            self.down(0)
        if self.how == "recurse, caught" and self.prints == 4:
            try:
                self.down(0)
            except RecursionError:
                ctx.deposit(1)
        if self.how == "settrace" and self.prints == 2:
            sys.settrace(None)
        if self.prints % 2:
            ctx.deposit(1)

    def down(self, n):
        return self.down(n + 1)


def test_a_session_log_is_byte_identical_whichever_counter_runs(monkeypatch):
    from clients import budget

    ways = {
        "loop": "exceeded its budget",
        "spin": "exceeded its budget",
        "swallow": "(and caught the overrun)",
        "recurse": "RecursionError: maximum recursion depth exceeded",
        "recurse, caught": "removed the budget's trace function",  # the counter was: as ever
        "settrace": "called sys.settrace",
    }
    logs = {}
    for counter in COUNTERS:
        monkeypatch.setattr(budget, "COUNTER", counter)
        engine, sim, runner, events, end = market(days=1)
        runner.add("mm", "maker", Quoter(), latency=Latency(fixed_ns=MS))
        for how in ways:
            engine.open_account(how)
            engine.credit(how, 1_000_000)
            lines = 5_000 if how.startswith("recurse") else 1_000
            runner.add(how, how, Misbehaving(how), latency=Latency(fixed_ns=MS), budget_lines=lines)
        runner.start(end)
        with alarm(60), no_collection():
            sim.run(end, on_step=engine.advance)
        logs[counter] = [ev.encode(e) for e in events]
        details = {e.account: e.data["detail"] for e in failures(events)}
        assert details.keys() == ways.keys()
        for how, text in ways.items():
            assert text in details[how], (counter, how)
    assert logs["compiled"] == logs["python"]
