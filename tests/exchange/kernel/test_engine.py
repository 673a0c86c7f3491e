"""The exchange engine: commands become events, money moves only through events."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.core import events as ev
from exchange.products.instruments import InstrumentSpec, fee
from exchange.store.fold import Fold
from tests.exchange.conftest import SPEC, Harness, order_actions, play

TICK_VALUE = SPEC.tick_value  # 0.001 $/GPU-hour x 100 GPU-hours = 10 cents a tick a lot


def test_tick_value_is_whole_minor_units():
    assert TICK_VALUE == 10
    with pytest.raises(ValueError, match="not whole"):
        InstrumentSpec(name="X", tick_size="0.0001", contract_multiplier="1")


def test_fees_round_half_away_from_zero_once():
    assert fee(10_000, 5) == 5
    assert fee(15, 5) == 0 and fee(1_000, 5) == 1  # 0.0075 -> 0, 0.5 -> 1
    assert fee(1_000, -5) == -1


def test_fill_moves_cash_and_positions_between_the_two_sides(ex):
    ex.submit("alice", "sell", 10_000, 3)
    mark = len(ex.events)
    result = ex.submit("bob", "buy", 10_000, 2)
    assert result.ok
    assert ex.kinds(mark) == [ev.COMMAND_RECEIVED, ev.ORDER_ACCEPTED, ev.FILL, ev.FEE, ev.FEE]
    notional = 10_000 * 2 * TICK_VALUE
    fill = ex.events[mark + 2]
    assert (fill.account, fill.side, fill.amount, fill.qty) == ("bob", "buy", -notional, 2)
    assert (fill.counterparty, fill.counter_order_id) == ("alice", 1)
    bob, alice = ex.engine.accounts["bob"], ex.engine.accounts["alice"]
    assert bob.positions["H100-RENTAL"] == 2 and alice.positions["H100-RENTAL"] == -2
    assert bob.cash == 1_000_000 - notional - fee(notional, 5)
    assert alice.cash == 1_000_000 + notional - fee(notional, -1)  # a maker rebate
    assert ex.engine.pools["fees"] == fee(notional, 5) + fee(notional, -1)


def test_remainder_rests_and_ioc_remainder_is_cancelled(ex):
    mark = len(ex.events)
    ex.submit("alice", "buy", 9_990, 5)
    assert ex.kinds(mark)[-1] == ev.ORDER_RESTED
    mark = len(ex.events)
    ex.submit("bob", "sell", 9_990, 8, tif="ioc")
    cancelled = ex.events[-1]
    assert (cancelled.kind, cancelled.qty, cancelled.data["reason"]) == (
        ev.ORDER_CANCELLED,
        3,
        "ioc",
    )


@pytest.mark.parametrize(
    "command, reason",
    [
        (
            {
                "type": "submit",
                "account": "alice",
                "instrument": "H100-RENTAL",
                "side": "up",
                "price": 1,
                "qty": 1,
            },
            "side",
        ),
        (
            {
                "type": "submit",
                "account": "alice",
                "instrument": "H100-RENTAL",
                "side": "buy",
                "price": 1,
                "qty": 0,
            },
            "qty",
        ),
        (
            {
                "type": "submit",
                "account": "alice",
                "instrument": "H100-RENTAL",
                "side": "buy",
                "price": 100_001,
                "qty": 1,
            },
            "outside",
        ),
        (
            {
                "type": "submit",
                "account": "alice",
                "instrument": "NOPE",
                "side": "buy",
                "price": 1,
                "qty": 1,
            },
            "unknown instrument",
        ),
        (
            {
                "type": "submit",
                "account": "mallory",
                "instrument": "H100-RENTAL",
                "side": "buy",
                "price": 1,
                "qty": 1,
            },
            "unknown account",
        ),
        (
            {
                "type": "submit",
                "account": "alice",
                "instrument": "H100-RENTAL",
                "side": "buy",
                "price": 1,
                "qty": 1,
                "extra": 1,
            },
            "extra",
        ),
        ({"type": "withdraw", "account": "alice", "amount": 1_000_001}, "exceeds"),
        ({"type": "teleport", "account": "alice"}, "teleport"),
        ("free text", "dictionary"),
        (
            {
                "type": "submit",
                "account": "alice",
                "instrument": "H100-RENTAL",
                "side": "buy",
                "order_type": "market",
                "qty": 1,
                "tif": "fok",
            },
            "market",
        ),
    ],
)
def test_invalid_command_is_one_rejection_event_and_changes_nothing(ex, command, reason):
    before = ex.engine.state_hash()
    mark = len(ex.events)
    result = ex.engine.handle(command)
    assert not result.ok and reason in result.reason
    assert ex.kinds(mark) == [ev.COMMAND_REJECTED]
    assert ex.events[-1].data["reason"] == result.reason
    assert ex.engine.state_hash() == before


def test_an_account_may_not_cancel_or_amend_another_accounts_order(ex):
    order_id = ex.submit("alice", "buy", 9_000, 1).order_id
    for command in (
        {"type": "cancel", "account": "bob", "order_id": order_id},
        {"type": "amend", "account": "bob", "order_id": order_id, "price": 9_001, "qty": 1},
    ):
        mark = len(ex.events)
        assert not ex.engine.handle(command).ok
        assert ex.kinds(mark) == [ev.COMMAND_REJECTED]
    assert ex.engine.orders[order_id].account == "alice"
    assert ex.engine.handle({"type": "cancel", "account": "alice", "order_id": order_id}).ok


def test_book_rejection_is_an_order_rejected_event(ex):
    ex.submit("alice", "sell", 10_000, 1)
    mark = len(ex.events)
    result = ex.submit("bob", "buy", 10_000, 5, tif="fok")
    assert not result.ok and result.reason == "fok_not_fillable"
    assert ex.kinds(mark) == [ev.COMMAND_RECEIVED, ev.ORDER_REJECTED]


def test_amend_keeps_or_loses_priority_as_the_book_does(ex):
    first = ex.submit("alice", "buy", 9_000, 5).order_id
    ex.engine.handle(
        {"type": "amend", "account": "alice", "order_id": first, "price": 9_000, "qty": 3}
    )
    assert ex.events[-1].data["priority"] == "kept"
    ex.engine.handle(
        {"type": "amend", "account": "alice", "order_id": first, "price": 9_001, "qty": 3}
    )
    assert ex.kinds(len(ex.events) - 2) == [ev.ORDER_AMENDED, ev.ORDER_RESTED]
    assert ex.events[-2].data["priority"] == "lost"


def test_stp_cancel_of_a_resting_order_is_an_event():
    h = Harness()
    h.open("carol", 10**9, stp="cancel-resting")
    resting = h.submit("carol", "sell", 10_000, 2).order_id
    mark = len(h.events)
    h.submit("carol", "buy", 10_000, 1)
    cancels = [e for e in h.since(mark) if e.kind == ev.ORDER_CANCELLED]
    assert [(e.order_id, e.data["reason"]) for e in cancels] == [(resting, "stp")]
    assert resting not in h.engine.orders


def test_withdrawal_and_deposit_are_events_and_move_external_totals(ex):
    assert ex.engine.handle({"type": "deposit", "account": "bob", "amount": 500}).ok
    assert ex.engine.handle({"type": "withdraw", "account": "bob", "amount": 200}).ok
    assert ex.kinds(len(ex.events) - 4) == [
        ev.COMMAND_RECEIVED,
        ev.DEPOSIT,
        ev.COMMAND_RECEIVED,
        ev.WITHDRAWAL,
    ]
    assert ex.engine.accounts["bob"].cash == 1_000_300
    assert (ex.engine.deposited, ex.engine.withdrawn) == (2_000_500, 200)


def test_events_have_contiguous_sequence_numbers_and_non_decreasing_time(ex):
    ex.engine.advance(1_000)
    ex.submit("alice", "buy", 9_000, 1)
    ex.engine.advance(2_000)
    ex.submit("bob", "sell", 9_000, 1)
    assert [e.seq for e in ex.events] == list(range(1, len(ex.events) + 1))
    times = [e.t for e in ex.events]
    assert times == sorted(times) and times[-1] == 2_000
    with pytest.raises(ValueError):
        ex.engine.advance(1_999)


# ------------------------------------------------------------------ property: conservation
actions = order_actions(max_size=80)


@settings(max_examples=150, deadline=None)
@given(actions)
def test_cash_and_positions_are_conserved_after_every_event_and_fold_matches_live(steps):
    h = play(steps)
    # fold event by event: cash + fees + withdrawals - deposits == 0, positions net to zero
    fold = Fold()
    for event in h.events:
        fold.apply(*event)
        total = sum(fold.cash.values()) + sum(fold.pools.values()) + fold.withdrawn - fold.deposited
        assert total == 0, f"cash created or lost at seq {event.seq}"
        net = sum(p.get("H100-RENTAL", 0) for p in fold.positions.values())
        assert net == 0, f"positions do not net to zero at seq {event.seq}"
    assert fold.state_hash() == h.engine.state_hash()


# ------------------------------------------------------------------ property: bad input
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
VALID = {
    "type": "submit",
    "account": "alice",
    "instrument": "H100-RENTAL",
    "side": "buy",
    "price": 9_000,
    "qty": 1,
}
BAD_VALUES = {
    "type": st.sampled_from(["", "Submit", "cancel ", None, 3]),
    "account": st.sampled_from(["", "mallory", None, 7, "x" * 65]),
    "instrument": st.sampled_from(["", "h100-rental", None]),
    "side": st.sampled_from(["BUY", "", None, 0, True]),
    "price": st.one_of(
        st.integers(max_value=0),
        st.integers(min_value=100_001),
        st.floats(),
        st.text(max_size=3),
        st.booleans(),
    ),
    "qty": st.one_of(
        st.integers(max_value=0),
        st.integers(min_value=1 << 62 + 1),
        st.floats(),
        st.just("1"),
        st.booleans(),
    ),
}


@st.composite
def malformed_commands(draw):
    kind = draw(st.integers(0, 2))
    if kind == 0:  # one field of a valid command broken
        key = draw(st.sampled_from(sorted(BAD_VALUES)))
        return {**VALID, key: draw(BAD_VALUES[key])}
    if kind == 1:  # a valid command with an unknown extra field
        return {
            **VALID,
            draw(st.text(min_size=1, max_size=6).filter(lambda k: k not in VALID)): draw(
                json_values
            ),
        }
    return draw(json_values.filter(lambda v: not isinstance(v, dict) or "type" not in v))


@settings(max_examples=300, deadline=None)
@given(malformed_commands())
def test_malformed_commands_change_nothing_but_add_one_rejection(command):
    h = Harness()
    h.open("alice", 1_000_000)
    h.submit("alice", "sell", 9_500, 3)
    before, mark = h.engine.state_hash(), len(h.events)
    result = h.engine.handle(command)
    assert not result.ok and result.reason
    assert h.kinds(mark) == [ev.COMMAND_REJECTED]
    assert h.engine.state_hash() == before


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.one_of(st.text(max_size=5), st.integers(0, 3)),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(1 << 70), 1 << 70),
            st.floats(allow_nan=False),
            st.text(max_size=5),
        ),
        max_size=6,
    )
)
def test_a_command_is_logged_as_its_values_with_sorted_keys_and_relogs_unchanged(raw):
    """What the log keeps of a command is the command itself (keys sorted, values untouched;
    an infinite float, which JSON cannot hold, as null) when it is JSON; a repr when it is not
    (a non-string key, an int beyond 64 bits); and logging the logged form again changes
    nothing, so a logged command re-executes identically."""
    import math

    import orjson

    from exchange.core.commands import jsonable

    got = jsonable(raw)
    representable = all(type(k) is str for k in raw) and all(
        type(v) is not int or -(1 << 63) <= v < (1 << 64) for v in raw.values()
    )
    if representable:
        finite = {
            k: None if type(v) is float and not math.isfinite(v) else v for k, v in raw.items()
        }
        assert got == finite and list(got) == sorted(raw)
    else:
        assert list(got) == ["unserialisable"] and got["unserialisable"] == repr(raw)[:1_000]
    assert jsonable(got) == got and list(jsonable(got)) == list(got)
    assert orjson.loads(orjson.dumps(got)) == got
