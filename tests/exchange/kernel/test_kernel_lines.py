"""The compiled kernel's typed lines (``exchange/kernel/_kernel.pyx``): a command's events written
into a recorded run's sink (a ``LineBatch``) field by field -- ints from C, literals as
constant bytes, a command's mapping in its sorted-key order with no dict built -- must be,
line for line, ``encode`` of the reference engine's events, including where the typed writers
hand over to the generic path: amounts past int64 and past uint64 (orjson's refusal: the
batch's ``take`` raises ``BadLine`` at that seq on both), account names that need escapes or
are not ASCII, and a reader of the lines (a ``Tap``) that runs Python as a line ends and
reads the engine there.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.core import _lines
from exchange.core import events as ev
from exchange.core.accounts import ExposureRates
from exchange.core.events import Event, decode, encode
from exchange.kernel.compiled import CompiledExchange, row_command
from exchange.kernel.engine import Exchange
from exchange.products.instruments import InstrumentSpec
from tests.markets import START

#: A spot instrument whose notionals cross 2**63 and 2**64 minor units within a few lots:
#: a tick is worth 10**8 minor units and prices run up to 2**35 ticks (the most the compiled
#: path takes: price x tick value below 2**62). Its limits are lifted (rates 0), so such
#: orders pass the pre-trade checks on both engines and their fills reach the writers.
BIG = InstrumentSpec(
    name="BIG.SPOT",
    tick_size="1",
    contract_multiplier="1000000",
    max_price=1 << 35,
    maker_fee_bps=-1,
    taker_fee_bps=5,
)
TOP = BIG.max_price
#: ASCII names the compiled path takes (quotes, backslashes and control characters escaped),
#: and names it leaves to the reference (not ASCII) but whose fills and fees, as makers, the
#: kernel writes.
NAMES = ("alice", 'q"uote', "back\\slash", "tab\tand\x01ctl", "ünï", "日本")
CASH = 10**12


def _engines() -> tuple[Exchange, list[Event], CompiledExchange, _lines.LineBatch]:
    """A reference engine (its events kept) and a compiled one writing into a LineBatch,
    with :data:`BIG` listed, its limits lifted, and every one of :data:`NAMES` funded."""
    events: list[Event] = []
    reference = Exchange(events.append)
    lines = _lines.LineBatch(1)
    compiled = CompiledExchange(lines.append)
    for engine in (reference, compiled):
        engine.epoch = START
        engine.start("kernel-lines", 1, {})
        engine.list_instrument(BIG)
        engine.instruments[BIG.name].limits = ExposureRates(0, 0, 0, 0)
        for name in NAMES:
            engine.open_account(name)
            engine.credit(name, CASH)
    return reference, events, compiled, lines


def _check_lines(events: list[Event], done: int, lines: _lines.LineBatch) -> int:
    """The lines written since event ``done`` are ``encode`` of the reference's events; where
    orjson refuses one, ``take`` refuses the batch at its seq. Returns the events checked."""
    expected: list[bytes | None] = []
    for event in events[done:]:
        try:
            expected.append(encode(event))
        except orjson.JSONEncodeError:
            expected.append(None)
    assert len(lines) == len(expected)
    if not expected:
        return done
    if None in expected:
        with pytest.raises(_lines.BadLine) as refused:
            lines.take(len(lines))
        assert refused.value.seq == events[done + expected.index(None)].seq
    else:
        blob = lines.take(len(lines))[0]
        assert blob.split(b"\n")[:-1] == expected
    return len(events)


side = st.sampled_from(["buy", "sell"])
who = st.sampled_from(NAMES)
# near the top of the range (notionals of a few lots past 2**63 and 2**64), and low
prices = st.integers(TOP - 6, TOP) | st.integers(1, 40)
lots = st.integers(1, 12)
order_ids = st.integers(1, 30)
steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("submit"), who, side, prices, lots, st.sampled_from(["gtc", "ioc", "fok"])
        ),
        # (a post-only order that would cross is an OrderRejected: a typed line too)
        st.tuples(st.just("post_only"), who, side, prices, lots),
        st.tuples(st.just("market"), who, side, lots),
        st.tuples(st.just("cancel"), who, order_ids),
        st.tuples(st.just("amend"), who, order_ids, prices, lots),
        st.tuples(st.just("row_cancel"), who, order_ids),
        st.tuples(st.just("row_amend"), who, order_ids, prices, lots),
    ),
    min_size=5,
    max_size=40,
)


def _commands(step: tuple) -> tuple[dict[str, Any], tuple | None]:
    """The command a step sends, and the flow row (``handle_row``'s arguments after the
    engine) the compiled engine takes it as, if it is a row."""
    kind, name = step[0], step[1]
    if kind == "submit":
        _, _, side_name, price, qty, tif = step
        command = {"type": "submit", "account": name, "instrument": BIG.name, "side": side_name}
        return command | {"price": price, "qty": qty, "tif": tif}, None
    if kind == "post_only":
        _, _, side_name, price, qty = step
        command = {"type": "submit", "account": name, "instrument": BIG.name, "side": side_name}
        return command | {"price": price, "qty": qty, "post_only": True}, None
    if kind == "market":
        _, _, side_name, qty = step
        command = {"type": "submit", "account": name, "instrument": BIG.name, "side": side_name}
        return command | {"order_type": "market", "qty": qty}, None
    if kind in ("cancel", "row_cancel"):
        row = (name, BIG.name, 1, step[2], 0, 0, 0, 0, 0, 0)
        return {"type": "cancel", "account": name, "order_id": step[2]}, (
            row if kind == "row_cancel" else None
        )
    _, _, order_id, price, qty = step
    row = (name, BIG.name, 2, order_id, price, qty, 0, 0, 0, 0)
    command = {"type": "amend", "account": name, "order_id": order_id}
    return command | {"price": price, "qty": qty}, (row if kind == "row_amend" else None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_typed_lines_are_the_reference_s_encoded_events_past_int64_and_with_escaped_names(
    stream,
):
    """Any stream of submits, market orders, cancels and amends (as mappings and as flow
    rows) near the top of :data:`BIG`'s range, by accounts of every kind of name, gives the
    reference's results and, line for line, its encoded events (or the same refusal)."""
    reference, events, compiled, lines = _engines()
    done = _check_lines(events, 0, lines)
    for step in stream:
        command, row = _commands(step)
        expected = reference.handle(dict(command))
        if row is not None:
            assert row_command(*row) == command  # the row stands for that command
            got = compiled.handle_row(*row)
        else:
            got = compiled.handle(dict(command))
        assert got == expected
        assert compiled.seq == reference.seq
        done = _check_lines(events, done, lines)
    # (the state hash refuses balances past int64, which these trades make: the records)
    assert compiled.accounts == reference.accounts
    assert compiled.orders == reference.orders


@pytest.mark.parametrize(
    ("taker_side", "qty", "typed"),
    [
        ("sell", 2, True),  # the seller paid under 2**63
        ("sell", 3, True),  # 2**63 .. 2**64 - 1: orjson's uint64
        ("sell", 7, False),  # past 2**64
        ("buy", 2, True),  # the buyer pays, above -2**63
        ("buy", 3, False),  # below -2**63
    ],
)
def test_a_fill_amount_is_typed_up_to_uint64_and_past_it_is_the_generic_path_s(
    taker_side, qty, typed
):
    """The typed Fill writes a taker's amount down to -2**63 and up to 2**64 - 1 (orjson's
    int64 and uint64) and hands an amount past either bound to the generic path (an Event
    given to ``append``), whose bytes orjson refuses, as it refuses the reference's event:
    ``take`` raises at that seq on both."""
    reference, events, compiled, lines = _engines()
    done = _check_lines(events, 0, lines)
    maker_side = "buy" if taker_side == "sell" else "sell"
    for engine in (reference, compiled):  # the maker's own command is the reference's
        engine.handle(
            {
                "type": "submit",
                "account": "ünï",
                "instrument": BIG.name,
                "side": maker_side,
                "price": TOP,
                "qty": qty,
            }
        )
    done = _check_lines(events, done, lines)
    appended = lines.appended
    for engine in (reference, compiled):
        engine.handle(
            {
                "type": "submit",
                "account": 'q"uote',
                "instrument": BIG.name,
                "side": taker_side,
                "price": TOP,
                "qty": qty,
            }
        )
    fill = next(e for e in reversed(events) if e.kind == ev.FILL)
    notional = TOP * qty * BIG.tick_value
    assert fill.amount == (notional if taker_side == "sell" else -notional)
    assert lines.appended == appended + (0 if typed else 1)  # only the Fill, if any
    _check_lines(events, done, lines)


@pytest.mark.parametrize("seq", [3, 95, 995, 10**12 - 5, (1 << 62) - 9])
def test_a_command_s_lines_count_their_seq_up_across_a_power_of_ten(seq):
    """The kernel counts a command's seqs up in their decimal digits (written once per
    command, then carried per line): two orders' lines crossing 9 -> 10, 99 -> 100, ... hold
    the seqs ``encode`` gives the reference's events."""
    reference, events, compiled, _ = _engines()
    lines = _lines.LineBatch(seq + 1)
    for engine in (reference, compiled):
        engine.seq = seq  # (a session resumed that far: the next event is seq + 1)
    compiled._sink = lines.append  # a recorded run's sink, from seq + 1 on
    done = len(events)
    for raw in (
        {
            "type": "submit",
            "account": "alice",
            "instrument": BIG.name,
            "side": "sell",
            "price": 30,
            "qty": 2,
        },
        {
            "type": "submit",
            "account": 'q"uote',
            "instrument": BIG.name,
            "side": "buy",
            "price": 31,
            "qty": 3,
        },
    ):
        assert compiled.handle(dict(raw)) == reference.handle(dict(raw))
    assert lines.appended == 0  # the kernel wrote every line
    assert compiled.seq == reference.seq == seq + len(events) - done >= seq + 8
    _check_lines(events, done, lines)


# ---------------------------------------------------------------------- a reader of the lines
WANTED = (ev.FILL, ev.ORDER_RESTED)


def _watch(lines: _lines.LineBatch, on_wanted) -> _lines.Tap:
    """A Tap on ``lines`` announcing fills and rests (``on_wanted(t)``), as the bot runner's
    does, that scans whatever is taken."""
    tap = _lines.Tap(WANTED, (), list(NAMES), on_wanted, lambda: tap.scan(lines), Event, decode)
    lines.watch(tap)
    return tap


def test_a_tap_running_python_as_a_line_ends_sees_the_engine_at_that_event():
    """A Tap's ``on_wanted`` runs as a wanted line ends, in the middle of a command: there
    the engine is at that event, as a listener of the reference engine sees it at the same
    event -- its ``seq`` that line's (the kernel keeps ``seq`` in C between lines and must
    write it back before a line ends) and the step the event announces done."""
    reference, events, compiled, lines = _engines()
    done = _check_lines(events, 0, lines)
    seen: dict[str, list[tuple[int, int, int]]] = {"reference": [], "compiled": []}

    def look(name: str, engine: Exchange, seq: int) -> None:
        seen[name].append((seq, engine.seq, engine.accounts["alice"].positions.get(BIG.name, 0)))

    announced: list[int] = []

    def listener(event: Event) -> None:  # the Tap's rule: the first wanted line per instant
        if event.kind in WANTED and (not announced or announced[-1] != event.t):
            announced.append(event.t)
            look("reference", reference, event.seq)

    reference.subscribe(listener)
    _watch(lines, lambda t: look("compiled", compiled, lines.first + len(lines) - 1))
    for engine in (reference, compiled):
        engine.handle(
            {
                "type": "submit",
                "account": "alice",
                "instrument": BIG.name,
                "side": "sell",
                "price": 30,
                "qty": 5,
            }
        )
        engine.advance(engine.t + 1_000)
        engine.handle(
            {
                "type": "submit",
                "account": "tab\tand\x01ctl",
                "instrument": BIG.name,
                "side": "buy",
                "price": 30,
                "qty": 9,
            }
        )
    assert seen["compiled"] == seen["reference"]
    assert len(seen["compiled"]) == 2  # the rest, then the fill (mid-command: fees follow)
    assert all(line_seq == engine_seq for line_seq, engine_seq, _ in seen["compiled"])
    _check_lines(events, done, lines)
