"""The compiled order path (``exchange.kernel._kernel``,
:class:`exchange.kernel.compiled.CompiledExchange`):
unit specifications of its fast path against the reference engine.

Each case sets up the same market on a reference :class:`~exchange.kernel.engine.Exchange` and a
:class:`CompiledExchange`, sends both the same commands and requires the same encoded events,
the same ``Result`` (type included) and the same state; and it counts the compiled engine's
calls of ``Exchange.handle`` (its fallback to the reference): zero for a command the fast path
must take, one for a command it cannot prove valid. So a compiled engine that silently always
fell back fails here, as does one that took a command it cannot prove.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.core import _lines
from exchange.core import events as ev
from exchange.core.commands import MAX_EXPOSURE
from exchange.core.events import encode
from exchange.kernel import _kernel
from exchange.kernel.compiled import CompiledExchange, row_command
from exchange.kernel.engine import Exchange, Result
from tests.fuzz.mutator import PERP, RVS, SPOT
from tests.markets import START

ACCOUNTS = {"alice": "none", "bob": "none", "carol": "cancel-resting", "dave": "cancel-incoming"}
CASH = 10**12


def _open_market(engine: Exchange) -> None:
    """Start ``engine`` at ``START`` with the spot, perpetual and swap listed and every account
    of ``ACCOUNTS`` opened with ``CASH``."""
    engine.epoch = START
    engine.start("compiled-test", 1, {})
    for spec in (SPOT, PERP, RVS):
        engine.list_instrument(spec)
    for name, stp in ACCOUNTS.items():
        engine.open_account(name, stp=stp)
        engine.credit(name, CASH)


class Twin:
    """A reference engine and a compiled one with the same market: a spot instrument (maker
    rebate, taker fee), the H100 perpetual and a swap series; four accounts, two of them with
    self-trade prevention, each credited :data:`CASH` minor units."""

    def __init__(self) -> None:
        self.events: dict[str, list] = {"reference": [], "compiled": []}
        self.reference = Exchange(self.events["reference"].append)
        self.compiled = CompiledExchange(self.events["compiled"].append)
        for engine in self.engines:
            _open_market(engine)

    @property
    def engines(self) -> tuple[Exchange, Exchange]:
        return self.reference, self.compiled

    def send(self, raw: Any) -> Result:
        """``handle(raw)`` on both (each its own copy of a dict, as a client would send it);
        checks the results and the events so far are the same; returns the compiled result."""
        expected = self.reference.handle(dict(raw) if type(raw) is dict else raw)
        got = self.compiled.handle(dict(raw) if type(raw) is dict else raw)
        assert type(got) is Result
        assert got == expected
        self.check()
        return got

    def check(self) -> None:
        reference, compiled = (
            [encode(event) for event in self.events[name]] for name in ("reference", "compiled")
        )
        assert compiled == reference
        assert self.compiled.seq == self.reference.seq
        assert self.compiled.state_hash() == self.reference.state_hash()
        # what the canonical state leaves out: the engines' own records of resting orders
        assert self.compiled.orders == self.reference.orders
        assert self.compiled.next_order_id == self.reference.next_order_id
        for name, account in self.reference.accounts.items():
            assert self.compiled.accounts[name] == account  # cash, positions, bases, open lots

    def kinds(self, mark: int) -> list[str]:
        return [event.kind for event in self.events["compiled"][mark:]]


def submit(account: str, side: str, price: int, qty: int, instrument: str = SPOT.name, **extra):
    return {
        "type": "submit",
        "account": account,
        "instrument": instrument,
        "side": side,
        "price": price,
        "qty": qty,
        **extra,
    }


# ---------------------------------------------------------------------- the fast path
def test_a_resting_limit_order_takes_the_compiled_path_with_the_reference_s_events(fallbacks):
    twin = Twin()
    mark = len(twin.events["compiled"])
    result = twin.send(submit("alice", "buy", 1_000, 3))
    assert result == Result(True, 1)
    assert twin.kinds(mark) == [ev.COMMAND_RECEIVED, ev.ORDER_ACCEPTED, ev.ORDER_RESTED]
    assert fallbacks == []


def test_the_command_received_records_every_field_of_the_model_defaults_included(fallbacks):
    twin = Twin()
    mark = len(twin.events["compiled"])
    twin.send(
        {
            "type": "submit",
            "account": "bob",
            "instrument": SPOT.name,
            "side": "sell",
            "qty": 2,
            "order_type": "market",
        }
    )
    received = twin.events["compiled"][mark]
    assert received.data == {
        "command": {
            "account": "bob",
            "type": "submit",
            "instrument": SPOT.name,
            "side": "sell",
            "order_type": "market",
            "price": 0,
            "qty": 2,
            "tif": "gtc",
            "post_only": False,
        }
    }
    assert fallbacks == []


@pytest.mark.parametrize("instrument", [SPOT.name, PERP.name, RVS.name])
def test_a_crossing_order_fills_pays_fees_and_moves_cash_positions_and_bases_as_the_reference(
    fallbacks, instrument
):
    twin = Twin()
    for price in (1_000, 1_001, 1_002):
        twin.send(submit("bob", "sell", price, 2, instrument))
    mark = len(twin.events["compiled"])
    twin.send(submit("alice", "buy", 1_002, 5, instrument))  # takes 2 + 2 + 1 lots
    kinds = twin.kinds(mark)
    assert kinds.count(ev.FILL) == 3
    assert ev.ORDER_RESTED not in kinds
    assert twin.compiled.instruments[instrument].last_price == 1_002
    assert twin.compiled.accounts["alice"].positions[instrument] == 5
    assert fallbacks == []


def test_fees_are_paid_into_the_pool_and_a_fee_of_zero_is_no_event(fallbacks):
    twin = Twin()
    # a notional of 2,000 minor units (10 a tick): a 5 bps fee of 1, a -1 bps rebate of 0
    twin.send(submit("bob", "sell", 200, 1))
    mark = len(twin.events["compiled"])
    twin.send(submit("alice", "buy", 200, 1))
    fees = [e for e in twin.events["compiled"][mark:] if e.kind == ev.FEE]
    assert [(e.account, e.data["role"]) for e in fees] == [("alice", "taker")]
    twin.send(submit("bob", "sell", 100_000, 40))
    twin.send(submit("alice", "buy", 100_000, 40))  # a maker rebate this time
    assert twin.compiled.pools["fees"] == twin.reference.pools["fees"] != 0
    assert fallbacks == []


@pytest.mark.parametrize(
    "extra, reason",
    [({"tif": "ioc"}, "ioc"), ({"tif": "fok"}, None), ({"order_type": "market"}, "market")],
)
def test_a_remainder_is_cancelled_with_its_reason_or_a_fok_refused_by_the_book(
    fallbacks, extra, reason
):
    twin = Twin()
    twin.send(submit("bob", "sell", 1_000, 2))
    mark = len(twin.events["compiled"])
    order = submit("alice", "buy", 1_000, 5, **extra)
    if extra.get("order_type") == "market":
        del order["price"]
    result = twin.send(order)
    events = twin.events["compiled"][mark:]
    if reason is None:
        assert events[-1].kind == ev.ORDER_REJECTED
        assert result == Result(False, result.order_id, "fok_not_fillable")
    else:
        assert events[-1].kind == ev.ORDER_CANCELLED
        assert events[-1].data == {"reason": reason}
        assert events[-1].qty == 3
    assert fallbacks == []


def test_a_post_only_order_that_would_cross_is_the_book_s_rejection(fallbacks):
    twin = Twin()
    twin.send(submit("bob", "sell", 1_000, 2))
    result = twin.send(submit("alice", "buy", 1_000, 1, post_only=True))
    assert result.reason == "post_only_would_cross"
    assert fallbacks == []


@pytest.mark.parametrize("account", ["carol", "dave"])
def test_self_trade_prevention_cancels_as_the_reference(fallbacks, account):
    twin = Twin()
    twin.send(submit(account, "sell", 1_000, 2))
    twin.send(submit("bob", "sell", 1_001, 2))
    mark = len(twin.events["compiled"])
    twin.send(submit(account, "buy", 1_001, 3))
    cancels = [
        e.data["reason"] for e in twin.events["compiled"][mark:] if e.kind == ev.ORDER_CANCELLED
    ]
    assert cancels == ["stp"]
    assert fallbacks == []


def test_cancel_takes_the_order_off_the_book(fallbacks):
    twin = Twin()
    order_id = twin.send(submit("alice", "buy", 1_000, 3)).order_id
    mark = len(twin.events["compiled"])
    assert twin.send({"type": "cancel", "account": "alice", "order_id": order_id}) == Result(
        True, order_id
    )
    assert twin.kinds(mark) == [ev.COMMAND_RECEIVED, ev.ORDER_CANCELLED]
    assert twin.compiled.orders == {}
    assert fallbacks == []


@pytest.mark.parametrize(
    "price, qty, priority", [(1_000, 2, "kept"), (1_000, 5, "lost"), (1_003, 3, "lost")]
)
def test_an_amend_keeps_or_loses_priority_and_may_trade(fallbacks, price, qty, priority):
    twin = Twin()
    twin.send(submit("bob", "sell", 1_002, 1))
    order_id = twin.send(submit("alice", "buy", 1_000, 3)).order_id
    mark = len(twin.events["compiled"])
    command = {
        "type": "amend",
        "account": "alice",
        "order_id": order_id,
        "price": price,
        "qty": qty,
    }
    assert twin.send(command) == Result(True, order_id)
    amended = [e for e in twin.events["compiled"][mark:] if e.kind == ev.ORDER_AMENDED]
    assert amended[0].data == {"priority": priority}
    assert fallbacks == []


def test_an_amend_the_book_refuses_is_an_order_rejected(fallbacks):
    twin = Twin()
    twin.send(submit("bob", "sell", 1_002, 1))
    order_id = twin.send(submit("alice", "buy", 1_000, 3, post_only=True)).order_id
    command = {"type": "amend", "account": "alice", "order_id": order_id, "price": 1_002, "qty": 3}
    assert twin.send(command).reason == "post_only_would_cross"
    assert fallbacks == []


def test_deposit_and_withdraw_move_cash_across_the_boundary(fallbacks):
    twin = Twin()
    assert twin.send({"type": "deposit", "account": "alice", "amount": 5_000}) == Result(True)
    assert twin.send({"type": "withdraw", "account": "alice", "amount": 7_000}) == Result(True)
    assert twin.compiled.accounts["alice"].cash == CASH - 2_000
    assert (twin.compiled.deposited, twin.compiled.withdrawn) == (4 * CASH + 5_000, 7_000)
    assert fallbacks == []


@pytest.mark.parametrize("instrument", [None, SPOT.name, "absent"])
def test_cancel_all_cancels_the_account_s_orders_oldest_first(fallbacks, instrument):
    twin = Twin()
    for spec, price in ((SPOT, 1_000), (PERP, 9_000), (SPOT, 999)):
        twin.send(submit("alice", "buy", price, 1, spec.name))
    twin.send(submit("bob", "buy", 998, 1))
    command: dict[str, Any] = {"type": "cancel_all", "account": "alice"}
    if instrument != "absent":
        command["instrument"] = instrument
    mark = len(twin.events["compiled"])
    assert twin.send(command) == Result(True)
    cancelled = [e.order_id for e in twin.events["compiled"][mark:] if e.kind == ev.ORDER_CANCELLED]
    assert cancelled == ([1, 3] if instrument == SPOT.name else [1, 2, 3])
    assert fallbacks == []


def test_a_listener_added_by_subscribe_sees_every_event_of_the_compiled_path(fallbacks):
    twin = Twin()
    heard: list = []
    twin.compiled.subscribe(heard.append)
    twin.reference.subscribe(lambda event: None)
    mark = len(twin.events["compiled"])
    twin.send(submit("bob", "sell", 1_000, 2))
    twin.send(submit("alice", "buy", 1_000, 3))
    assert heard == twin.events["compiled"][mark:]
    assert fallbacks == []


def test_into_a_line_sink_the_kernel_writes_its_lines_and_a_listener_still_gets_events(
    fallbacks,
):
    """A recorded run's sink (a LineBatch's ``append``) gets the compiled path's events as
    lines written by the kernel (no Event made: ``append`` not called), the same bytes as
    ``encode`` of the reference's; once ``subscribe`` puts a listener before it, the kernel
    makes Events again, and the listener and the lines both get every one."""
    twin = Twin()
    lines = _lines.LineBatch(1)
    engine = CompiledExchange(lines.append)
    _open_market(engine)
    by_append = lines.appended
    for raw in (submit("bob", "sell", 1_000, 2), submit("alice", "buy", 1_000, 3)):
        assert engine.handle(dict(raw)) == twin.send(raw)
    assert lines.appended == by_append  # the kernel wrote the trade's lines itself
    heard: list = []
    engine.subscribe(heard.append)
    raw = submit("carol", "sell", 1_000, 1)
    assert engine.handle(dict(raw)) == twin.send(raw)
    assert len(heard) == lines.appended - by_append > 0
    blob = lines.take(len(lines))[0]
    assert blob == b"".join(encode(event) + b"\n" for event in twin.events["reference"])
    assert fallbacks == []


# ---------------------------------------------------------------------- the reference's commands
GOOD = submit("alice", "buy", 1_000, 3)


class Key(str):
    """A ``str`` subclass: equal to its text as a dict key, but ``jsonable`` refuses it."""


def _with(**fields) -> dict[str, Any]:
    return {**GOOD, **fields}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(_with(qty=True), id="bool-qty"),
        pytest.param(_with(post_only=1), id="int-post-only"),
        pytest.param(_with(colour="red"), id="extra-key"),
        pytest.param(_with(price=1_000.0), id="float-price"),
        pytest.param(_with(price=np.int64(1_000)), id="numpy-int"),
        pytest.param(_with(qty=0), id="zero-qty"),
        pytest.param(_with(qty=(1 << 62) + 1), id="qty-past-the-model"),
        pytest.param(_with(side="up"), id="bad-literal"),
        pytest.param(_with(account="x" * 65), id="65-char-name"),
        pytest.param({"type": "submit", "account": "alice"}, id="missing-fields"),
        pytest.param({"type": "teleport", "account": "alice"}, id="unknown-type"),
        pytest.param({"type": "cancel_all", "account": "alice", "instrument": ""}, id="empty-name"),
        pytest.param("not even a mapping", id="non-dict"),
        pytest.param([("type", "submit")], id="list"),
    ],
)
def test_a_command_the_fast_path_cannot_prove_is_the_reference_s_rejection(fallbacks, raw):
    twin = Twin()
    mark = len(twin.events["compiled"])
    result = twin.send(raw)
    assert not result.ok
    assert twin.kinds(mark) == [ev.COMMAND_REJECTED]
    assert fallbacks == [raw]
    twin.send(GOOD)  # and the valid command beside it is the compiled path's
    assert fallbacks == [raw]


def test_a_command_keyed_by_a_str_subclass_is_refused_as_the_reference_refuses_it(fallbacks):
    twin = Twin()
    order_id = twin.send(GOOD).order_id
    mark = len(twin.events["compiled"])
    # the reference cannot serialise the key, so cannot parse the command: the order stays
    result = twin.send({Key("type"): "cancel", "account": "alice", "order_id": order_id})
    assert not result.ok and twin.kinds(mark) == [ev.COMMAND_REJECTED]
    assert order_id in twin.compiled.orders


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(_with(account="mallory"), "unknown account 'mallory'", id="unknown-account"),
        pytest.param(
            _with(instrument="NOPE"), "unknown instrument 'NOPE'", id="unknown-instrument"
        ),
        pytest.param(_with(price=100_000_000), "ticks is outside", id="price-out-of-range"),
        pytest.param(_with(price=0), "price: 0 ticks is outside", id="limit-at-zero"),
        pytest.param(
            _with(order_type="market", price=100_000_000),
            "price (protection): 100000000 ticks",
            id="protection-out-of-range",
        ),
        pytest.param(_with(qty=10**9 + 1), "past the limit of", id="position-limit"),
        pytest.param(_with(qty=(1 << 62) - 1), "past the limit of", id="qty-past-the-fast-bounds"),
        pytest.param(_with(order_type="market", tif="ioc"), "neither tif", id="market-with-tif"),
        pytest.param(_with(post_only=True, tif="fok"), "only a gtc", id="post-only-fok"),
        pytest.param(
            {"type": "cancel", "account": "alice", "order_id": 99},
            "no resting order 99 of account 'alice'",
            id="no-such-order",
        ),
        pytest.param(
            {"type": "cancel", "account": "nobody", "order_id": 1},
            "unknown account 'nobody'",
            id="cancel-of-an-unknown-account",
        ),
        pytest.param(
            {"type": "amend", "account": "alice", "order_id": 99, "price": 1_000, "qty": 1},
            "no resting order 99",
            id="amend-no-such-order",
        ),
        pytest.param(
            {"type": "withdraw", "account": "alice", "amount": CASH + 1},
            "exceeds the account's cash",
            id="overdraw",
        ),
        pytest.param(
            {"type": "deposit", "account": "alice", "amount": 10**17},
            "past the ledger's bound",
            id="past-bound",
        ),
        pytest.param(
            {"type": "deposit", "account": "mallory", "amount": 1},
            "unknown account",
            id="deposit-of-an-unknown-account",
        ),
        pytest.param(
            {"type": "cancel_all", "account": "alice", "instrument": "NOPE"},
            "unknown instrument 'NOPE'",
            id="cancel-all-unknown-instrument",
        ),
    ],
)
def test_a_refusal_the_kernel_can_prove_is_compiled_with_the_reference_s_event(
    fallbacks, raw, reason
):
    twin = Twin()
    mark = len(twin.events["compiled"])
    result = twin.send(raw)  # the same CommandRejected (command, reason, account) and Result
    assert not result.ok and reason in result.reason
    assert twin.kinds(mark) == [ev.COMMAND_REJECTED]
    assert fallbacks == []


def test_refusals_of_other_accounts_orders_and_of_a_defaulted_account_are_compiled(fallbacks):
    twin = Twin()
    order_id = twin.send(GOOD).order_id
    for raw in (
        {"type": "cancel", "account": "bob", "order_id": order_id},
        {"type": "amend", "account": "bob", "order_id": order_id, "price": 1_000, "qty": 1},
    ):
        assert "no resting order" in twin.send(raw).reason
    for engine in twin.engines:
        engine.defaulted.append("bob")
    assert "has defaulted" in twin.send({**GOOD, "account": "bob"}).reason
    assert "has defaulted" in twin.send({"type": "withdraw", "account": "bob", "amount": 1}).reason
    assert fallbacks == []
    assert twin.send({"type": "deposit", "account": "bob", "amount": 1}).ok  # allowed: reference
    assert len(fallbacks) == 1


def test_an_amend_outside_the_price_range_or_past_a_limit_is_a_compiled_refusal(fallbacks):
    twin = Twin()
    order_id = twin.send(GOOD).order_id
    amend = {"type": "amend", "account": "alice", "order_id": order_id, "price": 1_000}
    assert "outside" in twin.send({**amend, "price": 100_000_000, "qty": 3}).reason
    assert "past the limit" in twin.send({**amend, "qty": 10**9 + 1}).reason
    assert fallbacks == []
    assert order_id in twin.compiled.orders  # untouched


def test_under_a_collateral_call_an_order_that_reduces_is_compiled_and_others_refused(
    fallbacks,
):
    twin = Twin()
    twin.send(submit("bob", "sell", 1_000, 3))
    twin.send(submit("alice", "buy", 1_000, 3))  # alice holds +3
    for engine in twin.engines:
        engine.calls["alice"] = [1_000, 0]  # as a margin cycle's CollateralCall leaves it
    refused = twin.send(submit("alice", "buy", 1_000, 1))
    assert "under a collateral call" in refused.reason and "position +3" in refused.reason
    assert not twin.send(submit("alice", "sell", 1_100, 4)).ok  # more than it holds
    assert twin.send(submit("alice", "sell", 1_100, 3)).ok  # reduces: accepted
    assert fallbacks == []


def test_a_submit_on_an_expired_instrument_is_a_compiled_refusal(fallbacks):
    twin = Twin()
    for engine in twin.engines:
        engine.instruments[RVS.name].expired = True
    assert "has expired" in twin.send(submit("alice", "buy", 100, 1, RVS.name)).reason
    twin.send(GOOD)
    assert fallbacks == []


def test_a_deposit_of_a_defaulted_account_is_left_to_the_reference(fallbacks):
    twin = Twin()
    for engine in twin.engines:
        engine.defaulted.append("alice")
    assert twin.send({"type": "deposit", "account": "alice", "amount": 10}).ok  # still allowed
    assert len(fallbacks) == 1
    assert not twin.send(GOOD).ok  # its orders are refused (compiled)
    twin.send({**GOOD, "account": "bob"})  # another account's order stays compiled
    assert len(fallbacks) == 1


@pytest.mark.parametrize("where", ["instance", "class"])
def test_an_order_path_method_patched_on_the_engine_is_honoured_until_the_patch_is_undone(
    fallbacks, monkeypatch, where
):
    twin = Twin()
    seen: list = []
    after_match = Exchange._after_match

    def spy(self, *args):
        seen.append(self)
        return after_match(self, *args)

    if where == "instance":
        monkeypatch.setattr(twin.compiled, "_after_match", spy.__get__(twin.compiled))
    else:
        monkeypatch.setattr(Exchange, "_after_match", spy)
    twin.send(GOOD)
    assert twin.compiled in seen and len(fallbacks) == 1
    monkeypatch.undo()
    seen.clear()
    fallbacks.clear()
    monkeypatch.setattr(Exchange, "handle", _counting(Exchange.handle, fallbacks))
    twin.send(GOOD)
    assert seen == [] and fallbacks == []


def _counting(handle, handed):
    def counting(self, raw):
        if isinstance(self, CompiledExchange):
            handed.append(raw)
        return handle(self, raw)

    return counting


def test_a_subclass_overriding_an_order_path_method_runs_it_and_one_that_does_not_is_compiled(
    fallbacks,
):
    class Audited(CompiledExchange):
        def _check_limits(self, account, listing, side, qty, released=0):
            raise ValueError("audited")

    class Quiet(CompiledExchange):
        def mark(self, name):  # not on the order path
            pass

    for engine_class, handed in ((Audited, 1), (Quiet, 0)):
        fallbacks.clear()
        engine = engine_class(lambda event: None)
        engine.list_instrument(SPOT)
        engine.open_account("alice")
        engine.credit("alice", CASH)
        result = engine.handle(GOOD)
        assert len(fallbacks) == handed
        if handed:
            assert result.reason == "command: cannot be checked (ValueError: audited)"
        else:
            assert result == Result(True, 1)


def test_an_order_past_a_limit_is_a_compiled_refusal_and_one_already_past_it_the_reference_s(
    fallbacks,
):
    twin = Twin()
    rates = twin.compiled.instruments[SPOT.name].limits
    at_limit = MAX_EXPOSURE // rates.position  # lots whose worst value is the limit, or just under
    assert twin.send(submit("alice", "buy", 1_000, at_limit)).ok
    assert fallbacks == []
    result = twin.send(submit("bob", "buy", 1_000, at_limit + 1))
    assert "past the limit" in result.reason
    assert fallbacks == []
    # the past-a-limit branch that lets an order through (it makes nothing worse) stays the
    # reference's: the compiled check proves only orders within the limits
    for engine in twin.engines:
        engine.accounts["alice"].positions[SPOT.name] = 10**9 + 5  # past MAX_POSITION_LOTS
    assert twin.send(submit("alice", "sell", 1_000, 1)).ok
    assert len(fallbacks) == 1


# ---------------------------------------------------------------------- rows taken as values
row_accounts = st.sampled_from([*ACCOUNTS, "mallory"])
row_ints = st.integers(1, 40) | st.sampled_from([0, 10**9 + 1, 1 << 62, (1 << 62) + 1])


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(
            row_accounts,
            st.sampled_from([SPOT.name, PERP.name, "NOPE"]),
            st.integers(0, 2),  # op
            row_ints,  # order id
            st.integers(990, 1_010) | st.sampled_from([0, 1_000_001, 1 << 62]),  # price
            row_ints,  # qty
            st.integers(0, 1),  # side
            st.integers(0, 1),  # order type
            st.integers(0, 2),  # tif
            st.integers(0, 1),  # post-only
        ),
        min_size=1,
        max_size=60,
    )
)
def test_a_row_taken_as_values_is_the_mapping_it_stands_for(rows):
    """``handle_row(*row)`` on the compiled engine and ``handle(row_command(*row))`` on the
    reference: the same events, results and state, whether the row is run by the kernel,
    refused by it or (an id of 0, a qty past the model) handed to the mapping's path."""
    twin = Twin()
    for row in rows:
        expected = twin.reference.handle(row_command(*row))
        got = twin.compiled.handle_row(*row)
        assert type(got) is Result and got == expected
        twin.check()


def test_rows_the_kernel_cannot_prove_take_the_mapping_s_path(fallbacks):
    twin = Twin()
    unproven = [
        ("alice", SPOT.name, 1, 0, 0, 1, 0, 0, 0, 0),  # a cancel of order id 0
        ("alice", SPOT.name, 0, 0, 1_000, 0, 0, 0, 0, 0),  # a submit of 0 lots
        ("alice", SPOT.name, 0, 0, 1_000, True, 0, 0, 0, 0),  # a bool for an int
    ]
    for row in unproven:
        expected = twin.reference.handle(row_command(*row))
        assert twin.compiled.handle_row(*row) == expected
        twin.check()
    assert fallbacks == [row_command(*row) for row in unproven]
    fallbacks.clear()
    row = ("alice", SPOT.name, 0, 0, 1_000, 3, 0, 0, 0, 0)
    assert twin.compiled.handle_row(*row) == twin.reference.handle(row_command(*row))
    twin.check()
    assert fallbacks == []  # a valid row: the kernel's


def test_a_row_the_kernel_runs_builds_no_mapping(monkeypatch, fallbacks):
    built: list[tuple] = []

    def building(*row):
        built.append(row)
        return row_command(*row)

    monkeypatch.setattr(_kernel, "row_command", building)
    twin = Twin()
    rest = ("alice", SPOT.name, 0, 0, 1_000, 3, 0, 0, 0, 0)
    assert twin.compiled.handle_row(*rest) == twin.reference.handle(row_command(*rest))
    cancel = ("alice", SPOT.name, 1, 1, 0, 0, 0, 0, 0, 0)
    assert twin.compiled.handle_row(*cancel) == twin.reference.handle(row_command(*cancel))
    twin.check()
    assert built == [] and fallbacks == []
    refused = ("alice", SPOT.name, 1, 1, 0, 0, 0, 0, 0, 0)  # no longer resting
    assert twin.compiled.handle_row(*refused) == twin.reference.handle(row_command(*refused))
    twin.check()
    assert built == [refused] and fallbacks == []  # the mapping only for the refusal's log


def test_a_row_sent_to_an_engine_whose_handle_is_wrapped_goes_through_the_wrapper():
    seen: list[Any] = []

    class Wrapped(CompiledExchange):
        def handle(self, raw):
            seen.append(raw)
            return super().handle(raw)

    engine = Wrapped(lambda event: None)
    engine.list_instrument(SPOT)
    engine.open_account("alice")
    engine.credit("alice", CASH)
    row = ("alice", SPOT.name, 0, 0, 1_000, 3, 0, 0, 0, 0)
    assert engine.handle_row(*row) == Result(True, 1)
    assert seen == [row_command(*row)]
    engine.__dict__["handle"] = engine.handle  # a patch on the instance: the same
    engine.handle_row("alice", SPOT.name, 1, 1, 0, 0, 0, 0, 0, 0)
    assert seen[-1] == {"type": "cancel", "account": "alice", "order_id": 1}


def test_a_row_with_a_code_out_of_range_is_a_driver_s_error():
    engine = CompiledExchange(lambda event: None)
    with pytest.raises(ValueError, match="out of range"):
        engine.handle_row("alice", SPOT.name, 3, 0, 1_000, 3, 0, 0, 0, 0)
