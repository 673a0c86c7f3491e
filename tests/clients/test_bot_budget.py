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
from exchange import events as ev
from exchange.session import verify
from exchange.store import EventStore
from tests.clients.test_gateway import ShortProducts
from tests.clients.test_runner import MS, Quoter, market


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
