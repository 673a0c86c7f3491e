"""The compiled engine against the reference (issue #20, point 2): the same inputs must give
byte-identical events, equal results and equal state hashes.

``exchange.kernel.engines.ENGINES`` holds both: ``compiled``
(:class:`exchange.kernel.compiled.CompiledExchange`,
the engine sessions run by default) and ``reference`` (the plain-Python
:class:`exchange.kernel.engine.Exchange`), as ``ReferenceBook`` is the book's reference. Four
levels:

* :class:`Twin` drives one engine of each kind with the same calls -- set-up, commands (valid
  and hostile), timers -- and compares, after every call, the encoded events it produced, the
  value it returned (or the exception it raised) and, at the end, the state hash. Hypothesis
  writes the call streams; the seeded mutation fuzzer of ``tests.fuzz.mutator`` sends volume.
* every built-in scenario with its bots, run by ``session.run`` once with each engine: the two
  logs must hold the same bytes event for event, and the same session row.
* test_engine.py's hand-worked cases, run on each engine: the same events.
* the harness itself can fail: an engine tampered to emit one different event is caught,
  naming the first seq that differs.

And the plumbing: ``session.run``/``verify``/``plan``, a sweep's runs and a served session run
on the engine named, an unknown name fails before any file exists, and a log made by one
engine verifies and resumes with the other.

A failure names the first differing seq and both events' bytes; hypothesis prints the call
stream that led there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.core import _lines
from exchange.core import events as ev
from exchange.core.commands import MAX_EXPOSURE, CommandError, jsonable, parse_command
from exchange.core.events import Event, decode, encode
from exchange.kernel.compiled import CompiledExchange
from exchange.kernel.engine import Exchange
from exchange.kernel.engines import ENGINES
from exchange.risk.margin_cycle import AuctionBidder, MarginConfig
from exchange.sessions import session, sweep
from exchange.sessions.scenarios import load_scenario, scenario_names
from exchange.store.compact import compact, expand
from exchange.store.event_store import EventStore
from tests.exchange import conftest
from tests.exchange.conftest import SPIRAL
from tests.exchange.kernel import test_engine as engine_unit_tests
from tests.exchange.kernel.handed import handed_to_reference
from tests.fuzz.mutator import ACCOUNTS, HOSTILE, INSTRUMENTS, PERP, RVS, SPOT, STP, Fuzzer
from tests.markets import HOUR_NS, START

#: The order every comparison names the engines in: the reference says what is right.
NAMES = ("reference", "compiled")
INDICES = ("H100-RENTAL", "H100-RESALE")


class Divergence(AssertionError):
    """The engines disagree: the message names the first differing seq (or value)."""


# ---------------------------------------------------------------------- the comparisons
def first_difference(
    expected: Iterator[bytes], got: Iterator[bytes], names: tuple[str, str] = NAMES
) -> str | None:
    """Where two streams of encoded events (``exchange.core.events.encode``) first differ, as one
    message naming the seq and both payloads; None if they are equal. The seq is the event's
    own (its first field), or for a missing event the one after the last common one."""
    last = 0
    for a, b in zip(_padded(expected), _padded(got), strict=True):
        if a == b:
            if a is None:
                return None
            last = orjson.loads(a)[0]
            continue
        seq = orjson.loads(a if a is not None else b)[0]
        if a is None or b is None:
            seq = last + 1
        return (
            f"the engines diverge at seq {seq}:\n"
            f"  {names[0]:>9}: {_shown(a)}\n"
            f"  {names[1]:>9}: {_shown(b)}"
        )
    return None  # pragma: no cover - _padded ends both streams with None


def _padded(payloads: Iterator[bytes]) -> Iterator[bytes | None]:
    """The payloads, then None for ever (so that a shorter stream shows where it ends)."""
    yield from payloads
    while True:
        yield None


def _shown(payload: bytes | None) -> str:
    if payload is None:
        return "(no event)"
    text = payload.decode()
    return text if len(text) <= 600 else f"{text[:600]}... ({len(text):,} chars)"


def assert_same_events(
    expected: list[bytes], got: list[bytes], what: str, names: tuple[str, str] = NAMES
) -> None:
    """Raise :class:`Divergence` naming the first differing seq, and ``what`` led there."""
    problem = first_difference(iter(expected), iter(got), names)
    if problem is not None:
        raise Divergence(f"{problem}\n  after: {what}")


def assert_same_logs(a: Path, b: Path) -> None:
    """Two session logs hold the same events, byte for byte, and the same session (scenario,
    seed, stored configuration, status, final state hash); else :class:`Divergence` naming
    the first differing seq."""
    with EventStore.open(a, mode="r") as one, EventStore.open(b, mode="r") as two:
        problem = first_difference(
            one.payloads(1, one.last_seq), two.payloads(1, two.last_seq), (a.stem, b.stem)
        )
        if problem is not None:
            raise Divergence(problem)
        keys = ("scenario", "seed", "config", "status", "final_state_hash")
        rows = [{k: store.session[k] for k in keys} for store in (one, two)]
    if rows[0] != rows[1]:
        raise Divergence(f"the session rows differ: {rows[0]} != {rows[1]}")


# ---------------------------------------------------------------------- the twin engines
class EnginePair:
    """The reference and the compiled engine (``exchange.kernel.engines.ENGINES``, read when
    built, so a test may put another class in), each recording its events: what
    :class:`Twin` and the other differential tests build their market on. With ``lines``,
    the compiled engine's sink is a recorded run's: a LineBatch, into which the kernel writes
    its events' lines with no Event made."""

    def __init__(self, lines: bool = False, stored: int | None = None) -> None:
        self.events: dict[str, list[Event]] = {name: [] for name in NAMES}
        sinks = {name: self.events[name].append for name in NAMES}
        self.lines = _lines.LineBatch(1) if lines or stored else None
        self.stored = stored  # batches of this many lines kept in their stored form
        self.tap_after = 1 << 62  # calls after which a tap reads the lines (see check)
        if stored:
            self.lines.store_compact(stored)
        if self.lines is not None:
            sinks["compiled"] = self.lines.append
        self.engines: dict[str, Exchange] = {name: ENGINES[name](sinks[name]) for name in NAMES}
        self.compared = 0  # events checked so far (the same number on both)
        self.trail: list[str] = []  # the calls so far, for a failure's message

    def outcomes(self, method: str, args: tuple) -> dict[str, Any]:
        """``engine.method(*args)`` on both engines: what each returned, or the text of
        what it raised (an exception is an outcome to compare)."""
        outcomes = {}
        for name, engine in self.engines.items():
            try:
                outcomes[name] = getattr(engine, method)(*args)
            except Exception as exc:  # noqa: BLE001 - an exception is an outcome to compare
                outcomes[name] = f"raised {type(exc).__name__}: {exc}"
        return outcomes

    def check(self) -> None:
        """The events since the last check are the same on both engines (a failure names
        the last few calls, the latest first)."""
        start = self.compared
        new = {name: [encode(e) for e in self.events[name][start:]] for name in NAMES}
        if self.stored and self.lines.stored and len(self.trail) >= self.tap_after:
            lines = self.lines  # the lines held, typed ones among them, back to JSON lines
            tap = _lines.Tap(["Fill"], [], ["alice"], print, lambda: tap.scan(lines), Event, decode)
            lines.watch(tap)
            assert not lines.stored
        if self.stored and self.lines.stored:  # its batches' stored forms, whole ones
            blob = b""
            while len(self.lines):  # (a batch taken short ends there: the next starts anew)
                stored = self.lines.take(min(self.stored, len(self.lines)))[0]
                assert compact(expand(stored)) == stored  # the form compact gives its lines
                blob += expand(stored)
            new["compiled"] = blob.split(b"\n")[:-1]
        elif self.lines is not None:  # the compiled engine's lines, as the store would get them
            blob = self.lines.take(len(self.lines))[0] if len(self.lines) else b""
            new["compiled"] = blob.split(b"\n")[:-1]
        recent = " <- ".join(reversed(self.trail[-6:]))
        assert_same_events(new["reference"], new["compiled"], recent)
        self.compared += len(new["reference"])


class Twin(EnginePair):
    """A reference and a compiled engine (``exchange.kernel.engines.ENGINES``, read when built, so a
    test may put another class in) on the fuzzer's market: a spot instrument, the H100
    perpetual and a residual value swap, four accounts with every self-trade mode, and
    optionally margin (calls, liquidations, defaults, auctions, the waterfall); each account
    is credited ``cash`` (minor units: a little makes the pre-trade checks refuse and price
    gaps default).

    :meth:`call` makes the same call on both and checks it, so that a divergence is caught at
    the call that caused it."""

    def __init__(
        self,
        seed: int = 1,
        margin: bool = False,
        cash: int = 10**12,
        lines: bool = False,
        stored: int | None = None,
    ) -> None:
        super().__init__(lines, stored)
        for engine in self.engines.values():
            engine.epoch = START
            if margin:
                engine.margin = MarginConfig(
                    cure_ns=8 * HOUR_NS,
                    auction_bidders=[
                        AuctionBidder(account="dave", discount_ppm=200_000, max_lots=10**6)
                    ],
                )
        self.call("start", "differential", seed, {})
        for spec in (SPOT, PERP, RVS):
            self.call("list_instrument", spec)
        for name, stp in zip(ACCOUNTS, STP, strict=True):
            self.call("open_account", name, stp)
            self.call("credit", name, cash)
            if margin:
                self.call("contribute", name, 10**9)
        if margin:
            self.call("fund_pool", "insurance", 10**10)
        for name, ticks in zip(INDICES, (10_000, 15_000), strict=True):
            self.call("publish_index", name, ticks)

    @property
    def reference(self) -> Exchange:
        return self.engines["reference"]

    def call(self, method: str, *args: Any) -> Any:
        """``engine.method(*args)`` on both engines; raise :class:`Divergence` unless both
        emitted the same events and returned the same value, of the same types (or raised the
        same exception). Returns the reference's outcome."""
        what = f"{method}{_args(args)}"
        self.trail.append(what)
        outcomes = self.outcomes(method, args)
        self.check()
        one, two = outcomes["reference"], outcomes["compiled"]
        if one != two or repr(one) != repr(two):  # (repr: the types too, a bool for an int)
            raise Divergence(
                f"{what}: the reference returned {outcomes['reference']!r:.300}, the compiled "
                f"engine {outcomes['compiled']!r:.300}"
            )
        return outcomes["reference"]

    def handle(self, command: Any) -> Any:
        return self.call("handle", command)

    def later(self, hours: int) -> None:
        """Both clocks ``hours`` simulated hours on."""
        self.call("advance", self.reference.t + hours * HOUR_NS)

    def finish(self) -> str:
        """The state hashes agree (and the session ends the same way); returns the hash."""
        self.call("state_hash")
        return self.call("end")


def _args(args: tuple) -> str:
    text = repr(args) if len(args) != 1 else f"({args[0]!r})"
    return text if len(text) <= 300 else f"{text[:300]}...)"


# ---------------------------------------------------------------------- the call streams
def weighted(*choices: tuple[int, Any]):
    """One of the strategies, each ``weight`` times as likely as a weight of one."""
    return st.sampled_from([s for weight, s in choices for _ in range(weight)]).flatmap(
        lambda chosen: chosen
    )


huge = st.sampled_from(
    [10**17, 10**17 + 1, 1 << 62, (1 << 63) - 1, 1 << 63, 1 << 64, -(1 << 63), 10**30]
)
odd = st.sampled_from(HOSTILE) | st.booleans() | st.floats() | huge | st.text(max_size=12)
accounts = weighted(
    (15, st.sampled_from(ACCOUNTS)), (1, st.sampled_from(["mallory", "", "ALICE", "alice "]))
)
instruments = weighted(
    (15, st.sampled_from(INSTRUMENTS)), (1, st.sampled_from(["H100-RENTAL", "nope"]))
)
#: Prices near where each instrument trades (index 10,000 ticks; swap premiums near 500),
#: and now and then the edges of the price range.
CENTRES = {SPOT.name: 10_000, PERP.name: 10_000, RVS.name: 500}
edge_prices = st.sampled_from([0, 1, 999_999, 1_000_000, 1_000_001])
qtys = weighted(
    (16, st.integers(1, 20)),
    (1, st.sampled_from([0, 50, 1_000, 10**6, 10**9, (1 << 62) - 1])),
    (1, huge),
)
order_ids = st.integers(1, 40)  # live, filled, cancelled and never-given ids alike
amounts = weighted(
    (6, st.integers(1, 10**9)), (1, st.sampled_from([10**12, 4 * 10**16, 10**17, 10**17 + 1]))
)


@st.composite
def prices_for(draw, instrument: Any) -> int:
    centre = CENTRES.get(instrument, 10_000)
    if draw(st.integers(0, 19)) == 0:
        return draw(edge_prices)
    return draw(st.integers(centre - 12, centre + 12))


@st.composite
def submits(draw) -> dict[str, Any]:
    """A submit of any order type, time in force and post-only flag (limit GTC most)."""
    instrument = draw(instruments)
    command = {
        "type": "submit",
        "account": draw(accounts),
        "instrument": instrument,
        "side": draw(st.sampled_from(["buy", "sell"])),
        "qty": draw(qtys),
    }
    order_type = draw(st.sampled_from(["limit"] * 4 + ["market", None, None]))
    if order_type is not None:
        command["order_type"] = order_type
    if order_type != "market" or draw(st.booleans()):
        command["price"] = draw(prices_for(instrument))
    tif = draw(st.sampled_from(["gtc", "ioc", "fok", None, None, None]))
    if tif is not None and (order_type != "market" or draw(st.integers(0, 4)) == 0):
        command["tif"] = tif
    if draw(st.integers(0, 5)) == 0:
        command["post_only"] = draw(st.booleans())
    return command


@st.composite
def amends(draw) -> dict[str, Any]:
    command = {"type": "amend", "account": draw(accounts), "order_id": draw(order_ids)}
    if draw(st.integers(0, 3)):
        command["price"] = draw(prices_for(draw(st.sampled_from(INSTRUMENTS))))
    if draw(st.integers(0, 3)):
        command["qty"] = draw(qtys)
    return command


def _command(kind: str, required: dict, optional: dict | None = None, who=None):
    """A ``kind`` command from ``who`` (default: any of ``accounts``)."""
    return st.fixed_dictionaries(
        {"type": st.just(kind), "account": accounts if who is None else who, **required},
        optional=optional or {},
    )


commands = weighted(
    (10, submits()),
    (3, _command("cancel", {"order_id": order_ids})),
    (2, amends()),
    (1, _command("cancel_all", {}, {"instrument": instruments})),
    (1, _command("deposit", {"amount": amounts})),
    (1, _command("withdraw", {"amount": amounts})),
    (
        1,
        _command(
            "bot_failed",
            {"bot": st.just("b"), "cause": st.sampled_from(["raised", "budget", "timeout"])},
        ),
    ),
)


@st.composite
def malformed(draw) -> Any:
    """A command spoilt one to three times: a field retyped (bools, floats, huge ints, text,
    containers, None) or dropped, an unknown field added; or a hostile value in its place."""
    if draw(st.integers(0, 7)) == 0:
        return draw(odd)
    command = dict(draw(commands))
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["retype", "retype", "drop", "extra"]))
        if how == "retype" or not command:
            command[draw(st.sampled_from(sorted(command) or ["type"]))] = draw(odd)
        elif how == "drop":
            del command[draw(st.sampled_from(sorted(command)))]
        else:
            command[draw(st.sampled_from(["extra", "Type", "", "account "]))] = draw(odd)
    return command


#: The exchange's own actions, as a session's market schedule makes them (expiry rarely: it
#: ends the swap for the rest of the stream).
TIMERS = ["advance"] * 3 + ["publish_index"] * 3 + ["mark", "fund", "premium", "margin_cycle"] * 2
TIMERS += ["reject", "expire"]


@st.composite
def timers(draw) -> tuple:
    kind = draw(st.sampled_from(TIMERS))
    if kind == "advance":
        return ("advance", draw(st.integers(1, 72)))
    if kind == "publish_index":
        # small moves mostly, and now and then a gap that calls, liquidates and defaults
        name = draw(st.sampled_from(INDICES))
        centre = 10_000 if name == "H100-RENTAL" else 15_000
        ticks = draw(
            weighted((6, st.integers(centre - 300, centre + 300)), (1, st.integers(1, 30_000)))
        )
        return ("publish_index", name, ticks)
    if kind == "mark":
        return ("mark", draw(st.sampled_from(INSTRUMENTS)))
    if kind == "reject":  # what the socket gateway and the bot runner record
        source = draw(st.sampled_from(["gateway", "runner"]))
        return ("reject", draw(commands | odd), draw(st.text(max_size=20)), source, draw(accounts))
    name = {"fund": PERP.name, "premium": RVS.name, "expire": RVS.name}.get(kind)
    method = {"premium": "charge_premium"}.get(kind, kind)
    return (method,) if name is None else (method, name)


steps = st.lists(
    weighted(
        (6, st.tuples(st.just("handle"), commands)),
        (1, st.tuples(st.just("handle"), malformed())),
        (2, timers()),
    ),
    min_size=40,
    max_size=150,
)

#: Deterministic and bounded: the whole file stays within about a minute (100 examples a
#: test since 2026-12-05, 160 before: CI's 15-minute budget).
DIFFERENTIAL = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def play(twin: Twin, step: tuple) -> None:
    """One step of a stream on both engines."""
    if step[0] == "advance":
        twin.later(step[1])
    elif step[0] == "reject":
        _, raw, reason, source, account = step
        twin.call("reject", raw, reason, source, account)
    else:
        twin.call(*step)


@DIFFERENTIAL
@given(steps, st.booleans(), st.sampled_from([10**12, 3 * 10**6, 5 * 10**5]), st.integers(0, 3))
def test_any_stream_of_commands_and_timers_gives_identical_events_results_and_state(
    stream, margin, cash, seed
):
    twin = Twin(seed, margin=margin, cash=cash)
    for number, step in enumerate(stream, 1):
        play(twin, step)
        if number % 10 == 0:  # the whole state, now and then: not only what the events show
            twin.call("state_hash")
    twin.finish()


@settings(DIFFERENTIAL, max_examples=30)
@given(steps, st.booleans(), st.sampled_from([10**12, 3 * 10**6]), st.integers(0, 3))
def test_the_compiled_engine_s_lines_are_the_encoded_events_of_the_reference(
    stream, margin, cash, seed
):
    """The compiled engine writing into a LineBatch (a recorded run's sink: its own events'
    lines written by the kernel, the Python paths' Events encoded by ``append``) gives, line
    for line, ``encode`` of the reference engine's events."""
    twin = Twin(seed, margin=margin, cash=cash, lines=True)
    for step in stream:
        play(twin, step)
    twin.finish()
    assert twin.lines.appended < twin.compared  # the kernel wrote lines itself


@settings(DIFFERENTIAL, max_examples=30)
@given(steps, st.booleans(), st.sampled_from([10**12, 3 * 10**6]), st.integers(0, 3), st.data())
def test_the_compiled_engine_s_stored_lines_are_the_compacted_events_of_the_reference(
    stream, margin, cash, seed, data
):
    """The compiled engine writing into a LineBatch that keeps the stored form (decision 106:
    its typed lines written as tokens, with no JSON; the Python paths' Events tokenized as
    they end) gives, batch for batch, ``compact`` of the reference engine's encoded events."""
    twin = Twin(seed, margin=margin, cash=cash, stored=data.draw(st.sampled_from([1, 3, 7, 50])))
    # a tap (a bot runner's) turns the lines held back to lines, at some call's check
    twin.tap_after = len(twin.trail) + data.draw(st.integers(0, 2 * len(stream) + 1))
    for step in stream:
        play(twin, step)
    twin.finish()
    assert twin.lines.appended < twin.compared  # the kernel wrote lines itself


def test_one_line_batches_of_large_values_are_stored_as_compact_stores_them():
    """A stored batch's choice of tokens or raw lines is ``compact``'s, though the kernel
    counts only a lower bound of its typed lines' JSON bytes (decision 111): one-line
    batches of fills with large prices, quantities and cash (each int one varint of several
    bytes, counted as one digit), their strings new to each batch, are the batches where the
    bound falls below the tokens and the lines' bytes are counted from the tokens."""
    twin = Twin(0, margin=False, cash=10**17, stored=1)
    for price, qty in ((999_999, 10**9 - 1), (987_654, 123_456_789), (1, 1)):
        for account, side in (("alice", "sell"), ("bob", "buy")):
            twin.call(
                "handle",
                {
                    "type": "submit",
                    "account": account,
                    "instrument": SPOT.name,
                    "side": side,
                    "order_type": "limit",
                    "price": price,
                    "qty": qty,
                },
            )
    twin.finish()
    assert twin.lines.appended < twin.compared  # the kernel wrote lines itself


# ---------------------------------------------------------------------- refusals, compiled
#: Well-formed commands (every field as its model takes it) aimed at the engine's refusals:
#: unknown and defaulted accounts, order ids no longer (or never) resting or another's,
#: unknown instruments, prices outside the range, market orders with a time in force,
#: post-only orders that are not gtc (and post-only crosses, FOK orders the book cannot fill:
#: the book's refusals), orders under a collateral call, past a limit, withdrawals past the
#: cash and deposits past the ledger's bound.
aimed_accounts = weighted(
    (15, st.sampled_from(ACCOUNTS)), (1, st.sampled_from(["mallory", "ALICE", "alice "]))
)
out_of_range = st.sampled_from([1, 999_999, 1_000_000, 1_000_001, 10**7, 1 << 62])
aimed_qtys = weighted(
    (8, st.integers(1, 20)),
    (1, st.sampled_from([10**9, 10**9 + 1, MAX_EXPOSURE // 10_000, (1 << 62) - 1])),
)


@st.composite
def aimed_submits(draw) -> dict[str, Any]:
    instrument = draw(instruments)
    order_type = draw(st.sampled_from(["limit", "limit", "market"]))
    command = {
        "type": "submit",
        "account": draw(aimed_accounts),
        "instrument": instrument,
        "side": draw(st.sampled_from(["buy", "sell"])),
        "qty": draw(aimed_qtys),
        "order_type": order_type,
    }
    price = draw(weighted((4, prices_for(instrument)), (1, out_of_range), (1, st.just(0))))
    if order_type == "limit" or draw(st.booleans()):
        command["price"] = price
    tif = draw(st.sampled_from(["gtc", "ioc", "fok", None, None]))
    if tif is not None and (order_type == "limit" or draw(st.integers(0, 3)) == 0):
        command["tif"] = tif
    if draw(st.integers(0, 3)) == 0:
        command["post_only"] = draw(st.booleans())
    return command


@st.composite
def aimed_amends(draw) -> dict[str, Any]:
    price = draw(weighted((4, prices_for(draw(st.sampled_from(INSTRUMENTS)))), (1, out_of_range)))
    return {
        "type": "amend",
        "account": draw(aimed_accounts),
        "order_id": draw(order_ids),
        "price": max(price, 1),
        "qty": draw(aimed_qtys),
    }


def _aimed(kind: str, required: dict, optional: dict | None = None):
    return _command(kind, required, optional, who=aimed_accounts)


aimed = weighted(
    (6, aimed_submits()),
    (4, _aimed("cancel", {"order_id": order_ids})),
    (3, aimed_amends()),
    (1, _aimed("cancel_all", {}, {"instrument": instruments})),
    (1, _aimed("deposit", {"amount": amounts})),
    (1, _aimed("withdraw", {"amount": amounts})),
)
aimed_steps = st.lists(
    weighted((6, st.tuples(st.just("handle"), aimed)), (2, timers())), min_size=40, max_size=120
)


@DIFFERENTIAL
@given(aimed_steps, st.booleans(), st.sampled_from([10**12, 3 * 10**6]), st.integers(0, 3))
def test_streams_aimed_at_the_refusals_give_identical_events_and_the_kernel_runs_them(
    stream, margin, cash, seed
):
    """Byte-identical events, results and state on both engines; and every refusal of a
    well-formed command is the compiled engine's own (none is handed to the reference),
    except a deposit of a defaulted account, which the reference runs (decision 49)."""
    twin = Twin(seed, margin=margin, cash=cash)
    with handed_to_reference() as handed:
        for step in stream:
            if step[0] != "handle":
                play(twin, step)
                continue
            command = step[1]
            defaulted = command["account"] in twin.reference.defaulted
            before = len(handed)
            result = twin.handle(command)
            if len(handed) > before and not result.ok:
                assert command["type"] == "deposit" and defaulted, (command, result.reason)
    twin.finish()


@pytest.mark.parametrize("margin", [False, True], ids=["no-margin", "margin"])
@pytest.mark.parametrize("kind", ["hostile", "valid"])
def test_the_seeded_fuzzer_s_volume_gives_identical_events_on_both_engines(kind, margin):
    """Fifteen thousand commands from ``tests.fuzz.mutator`` -- mutated (``hostile``: mostly
    refused, so mostly the reference's path on both) or well-formed (``valid``: mostly the
    compiled path) -- their order ids following the twin's orders, the exchange's timed
    actions every 250 of them."""
    twin = Twin(seed=5, margin=margin)
    source = Fuzzer(seed=11, margin=margin)
    source.engine = twin.reference  # the commands' order ids follow the twin's orders
    draw = source.hostile if kind == "hostile" else source.valid
    walk = dict(zip(INDICES, (10_000, 15_000), strict=True))
    for number in range(1, 15_001):
        twin.handle(draw())
        if number % 250 == 0:
            twin.later(8)
            for name in INDICES:
                walk[name] = min(1_000_000, max(1, walk[name] + source.rng.randint(-300, 300)))
                twin.call("publish_index", name, walk[name])
            twin.call("fund", PERP.name)
            if number % 5_000 == 0:
                twin.call("charge_premium", RVS.name)
            twin.call("margin_cycle")
    twin.finish()
    kinds = {e.kind for e in twin.events["reference"]}
    assert {ev.FILL, ev.FEE, ev.COMMAND_REJECTED, ev.ORDER_CANCELLED} <= kinds  # all exercised


#: test_engine.py's hand-worked cases on the ``ex`` fixture's market
UNIT_CASES = [
    case
    for name, case in sorted(vars(engine_unit_tests).items())
    if name.startswith("test_") and list(inspect.signature(case).parameters) == ["ex"]
]


@pytest.mark.parametrize("case", UNIT_CASES, ids=lambda case: case.__name__)
def test_the_engine_unit_tests_hand_worked_cases_give_the_same_events_on_both_engines(case):
    logs = {}
    for name in NAMES:
        ex = conftest.Harness(name)  # the ``ex`` fixture's market, on this engine
        assert type(ex.engine) is ENGINES[name]
        ex.open("alice", 1_000_000)
        ex.open("bob", 1_000_000)
        case(ex)  # its own assertions hold on either engine
        logs[name] = [encode(e) for e in ex.events]
    assert_same_events(logs["reference"], logs["compiled"], case.__name__)


# ---------------------------------------------------------------------- the harness can fail
def _spot(account: str, side: str) -> dict[str, Any]:
    """Two lots of the spot instrument at 10,000 ticks (a taker pays a 5 bps fee)."""
    return {
        "type": "submit",
        "account": account,
        "instrument": SPOT.name,
        "side": side,
        "price": 10_000,
        "qty": 2,
    }


def _tampered(base: type[Exchange], kind: str, change: Callable[[Event], Event]) -> type:
    """``base`` with every event of ``kind`` changed by ``change`` on its way to the sink."""

    class Tampered(base):  # type: ignore[misc, valid-type]
        def __init__(self, sink: Callable[[Event], Any]) -> None:
            def tampering(event: Event) -> None:
                sink(change(event) if event.kind == kind else event)

            super().__init__(tampering)

    return Tampered


def test_a_fee_off_by_one_is_caught_naming_the_first_differing_seq(monkeypatch):
    off_by_one = _tampered(ENGINES["compiled"], ev.FEE, lambda e: e._replace(amount=e.amount + 1))
    monkeypatch.setitem(ENGINES, "compiled", off_by_one)
    twin = Twin()
    twin.handle(_spot("alice", "sell"))
    with pytest.raises(Divergence) as caught:
        twin.handle(_spot("bob", "buy"))
    fee = next(e for e in twin.events["reference"] if e.kind == ev.FEE)
    assert f"diverge at seq {fee.seq}:" in str(caught.value)
    assert "bob" in str(caught.value)  # and it names the call that led there


def test_a_missing_event_is_caught_at_the_seq_where_one_engine_stops(monkeypatch):
    class Silent(ENGINES["compiled"]):  # type: ignore[misc, valid-type]
        def __init__(self, sink):
            super().__init__(lambda e: None if e.kind == ev.ORDER_RESTED else sink(e))

    monkeypatch.setitem(ENGINES, "compiled", Silent)
    twin = Twin()
    with pytest.raises(Divergence) as caught:
        twin.handle(_spot("alice", "sell"))
    rested = next(e for e in twin.events["reference"] if e.kind == ev.ORDER_RESTED)
    assert f"diverge at seq {rested.seq}:" in str(caught.value)
    assert "(no event)" in str(caught.value)


def test_a_different_result_is_caught_even_with_the_same_events(monkeypatch):
    class Forgetful(ENGINES["compiled"]):  # type: ignore[misc, valid-type]
        def handle(self, raw):
            return super().handle(raw)._replace(order_id=None)

    monkeypatch.setitem(ENGINES, "compiled", Forgetful)
    twin = Twin()
    with pytest.raises(Divergence, match="returned"):
        twin.handle(_spot("alice", "sell"))


def test_two_logs_that_differ_in_one_rejection_are_caught_at_its_seq(tmp_path, monkeypatch):
    """A session run on an engine that words its rejections differently (nothing the fold
    reads, so the run itself finishes): the log comparison names the first rejection."""
    worded = _tampered(
        ENGINES["compiled"],
        ev.COMMAND_REJECTED,
        lambda e: e._replace(data={**e.data, "reason": e.data["reason"] + "!"}),
    )
    monkeypatch.setitem(ENGINES, "compiled", worded)
    small = {"messages": 1_000, "malformed_every": 100}
    paths = {}
    for name in NAMES:
        paths[name] = tmp_path / f"{name}.db"
        session.run("flow", paths[name], seed=3, overrides=small, engine=name)
    with pytest.raises(Divergence) as caught:
        assert_same_logs(paths["reference"], paths["compiled"])
    with EventStore.open(paths["reference"], mode="r") as store:
        first = next(iter(store.events(kind=ev.COMMAND_REJECTED))).seq
    assert f"diverge at seq {first}:" in str(caught.value)


# ---------------------------------------------------------------------- every scenario
#: Shortened built-in scenarios (the ones a full run of which takes more than ~3 s); the
#: others run in full. Each still has its bots trade, its timers and margin run.
SHORT: dict[str, dict[str, Any]] = {
    "flow": {"messages": 5_000},
    "guarantor-spiral": {"days": 30},
    "guarantor-spiral-bilateral": {"days": 30},
    "h100-depreciation": {"days": 30},
}


def run_on_both(tmp_path: Path, scenario: str, overrides=None, seed=None) -> dict[str, Path]:
    """The scenario run by ``session.run`` on each engine; the logs must be identical."""
    paths, hashes = {}, {}
    for name in NAMES:
        paths[name] = tmp_path / f"{name}.db"
        summary = session.run(scenario, paths[name], seed=seed, overrides=overrides, engine=name)
        hashes[name] = summary.state_hash
    assert_same_logs(paths["reference"], paths["compiled"])
    assert hashes["reference"] == hashes["compiled"]
    return paths


@pytest.mark.parametrize("scenario", scenario_names())
def test_every_built_in_scenario_with_its_bots_logs_the_same_bytes_on_both_engines(
    tmp_path, scenario
):
    run_on_both(tmp_path, scenario, SHORT.get(scenario))


def test_a_products_session_through_defaults_and_the_waterfall_logs_the_same_bytes(tmp_path):
    """The post-mortem tests' spiral (seed 2): calls, two defaults, an auction, auto-
    deleveraging and the waterfall."""
    paths = run_on_both(tmp_path, "products", SPIRAL, seed=2)
    with EventStore.open(paths["compiled"], mode="r") as store:
        kinds = {e.kind for e in store.events(kind=(ev.DEFAULT, ev.WATERFALL_DRAW))}
    assert kinds == {ev.DEFAULT, ev.WATERFALL_DRAW}


@pytest.mark.acceptance
@pytest.mark.parametrize("scenario", scenario_names())
def test_every_built_in_scenario_in_full_logs_the_same_bytes_on_both_engines(tmp_path, scenario):
    run_on_both(tmp_path, scenario)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_flow_rows_taken_as_values_by_the_compiled_engine_log_the_bytes_of_the_mappings(
    tmp_path, monkeypatch, seed
):
    """The flow driver hands the compiled engine each generated row's values
    (``CompiledExchange.handle_row``) and the reference engine the mapping: the logs are the
    same bytes, submits, cancels and amends alike."""
    ops: list[int] = []
    typed = CompiledExchange.handle_row

    def counting(self, name, instrument, op, *row):
        ops.append(op)
        return typed(self, name, instrument, op, *row)

    monkeypatch.setattr(CompiledExchange, "handle_row", counting)
    small = {"messages": 3_000, "traders": 4, "cash_every": 97, "malformed_every": 89}
    run_on_both(tmp_path, "flow", small, seed=seed)
    assert len(ops) == small["messages"]  # every row, on the compiled run only
    assert set(ops) == {0, 1, 2}


def test_on_flow_only_commands_that_do_not_parse_are_handed_to_the_reference(tmp_path, fallbacks):
    """The refusals `flow` provokes -- cancels and amends of orders no longer resting (most of
    them), an unknown account, a withdrawal past the cash -- are compiled; what reaches
    ``Exchange.handle`` is only the malformed commands, at most one every
    ``malformed_every`` messages."""
    handed = fallbacks
    small = {"messages": 6_000, "malformed_every": 200}
    path = tmp_path / "flow.db"
    session.run("flow", path, seed=2, overrides=small)
    with EventStore.open(path, mode="r") as store:
        commands = sum(1 for _ in store.events(kind=(ev.COMMAND_RECEIVED, ev.COMMAND_REJECTED)))
        reasons = [e.data["reason"] for e in store.events(kind=ev.COMMAND_REJECTED)]
    not_resting = sum("no resting order" in reason for reason in reasons)
    assert not_resting > len(handed)  # the commonest refusal is there, and compiled
    for raw in handed:
        with pytest.raises(CommandError):
            parse_command(jsonable(raw))
    assert len(handed) / commands <= 1 / small["malformed_every"]


# ---------------------------------------------------------------------- the engine chosen
def count_engines_built(monkeypatch) -> list[str]:
    """From now on, the name of every engine built (``ENGINES`` entries that say so)."""
    built: list[str] = []
    for name in NAMES:

        class Counted(ENGINES[name]):  # type: ignore[misc, valid-type]
            label = name

            def __init__(self, sink):
                built.append(self.label)
                super().__init__(sink)

        monkeypatch.setitem(ENGINES, name, Counted)
    return built


def test_a_session_runs_and_verifies_on_the_engine_it_is_given(tmp_path, monkeypatch):
    built = count_engines_built(monkeypatch)
    path = tmp_path / "s.db"
    session.run("flow", path, seed=1, overrides={"messages": 300}, engine="reference")
    assert set(built) == {"reference"}  # the rehearsal and the run
    built.clear()
    assert session.verify(path, engine="reference").ok
    assert built == ["reference"]
    built.clear()
    assert session.verify(path).ok
    assert built == ["compiled"]  # the default


def test_an_unknown_engine_is_a_session_error_naming_the_choices_and_creating_nothing(tmp_path):
    path = tmp_path / "n.db"
    for call in (
        lambda: session.run("flow", path, engine="nonsense"),
        lambda: session.plan("flow", engine="nonsense"),
    ):
        with pytest.raises(session.SessionError, match="compiled, reference"):
            call()
    assert list(tmp_path.iterdir()) == []
    session.run("flow", path, seed=1, overrides={"messages": 300})
    with pytest.raises(session.SessionError, match="nonsense"):
        session.verify(path, engine="nonsense")


@pytest.mark.parametrize(
    ("recorder", "checker"), [("compiled", "reference"), ("reference", "compiled")]
)
def test_a_log_recorded_by_one_engine_verifies_with_the_other(tmp_path, recorder, checker):
    path = tmp_path / "s.db"
    session.run("products", path, seed=2, overrides={"days": 45}, engine=recorder)
    verdict = session.verify(path, engine=checker)
    assert verdict.ok, verdict.problems


class Crash(Exception):
    pass


@pytest.mark.parametrize(
    ("recorder", "resumer"), [("compiled", "reference"), ("reference", "compiled")]
)
def test_a_log_crashed_on_one_engine_resumes_on_the_other_to_the_same_bytes(
    tmp_path, recorder, resumer
):
    small = {"messages": 2_000, "traders": 5, "cash_every": 300, "malformed_every": 250}
    kw = {"seed": 3, "overrides": small, "batch_size": 100, "snapshot_every": 500}
    whole = session.run("flow", tmp_path / "whole.db", engine=recorder, **kw)
    crashed = tmp_path / "crashed.db"
    batches = 0

    def crash_after_five_batches(_events: int) -> None:
        nonlocal batches
        batches += 1
        if batches == 5:
            raise Crash

    with pytest.raises(Crash):
        session.run("flow", crashed, engine=recorder, on_batch=crash_after_five_batches, **kw)
    resumed = session.run("flow", crashed, resume=True, engine=resumer)
    assert resumed.resumed_from == 500
    assert resumed.state_hash == whole.state_hash
    assert_same_logs(Path(whole.path), crashed)


def test_a_sweep_run_on_either_engine_gives_the_same_record(monkeypatch):
    built = count_engines_built(monkeypatch)
    spec = sweep.expand_grid("products", sweep.parse_params("products", ["days=45"]), [3])[0]
    built.clear()  # (expand_grid rehearses each grid point)
    records = {}
    for name in NAMES:
        records[name] = sweep.run_one(spec, engine=name)
        assert records[name]["status"] == "ok", records[name]["error"]
        assert set(built) == {name}
        built.clear()
    assert records["reference"] == records["compiled"]  # the engine is not in the record


def test_a_sweep_with_an_unknown_engine_fails_before_it_writes_anything(tmp_path):
    with pytest.raises(sweep.SweepError, match="compiled, reference"):
        sweep.run_sweep([], tmp_path / "out", engine="nonsense", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_served_session_runs_on_the_engine_it_is_given(tmp_path, monkeypatch):
    from clients.gateway import serve_session

    built = count_engines_built(monkeypatch)
    model = load_scenario("guarantor-spiral", {"days": 3})
    summary = serve_session(model, 7, tmp_path / "served.db", engine="reference")
    assert set(built) == {"reference"}
    assert session.verify(summary.path, engine="compiled").state_hash == summary.state_hash
