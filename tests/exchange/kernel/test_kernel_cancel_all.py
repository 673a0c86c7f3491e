"""The compiled kernel's cancel-all command (``exchange.kernel._kernel._cancel_all``) asks the
books for the account's resting orders (``OrderBook.orders_of``), as ``Exchange._cancel_all``
does, instead of walking every resting order of the exchange (issue #20).

Each check sends the same ``cancel_all`` command to a reference engine and a compiled one
built by the same commands, with the compiled engine's ``orders`` swapped for a dict that
refuses to be walked, and requires the compiled path to take it (no call of
``Exchange.handle``, its fallback to the reference) with the reference's events, in the
reference's order (oldest entry first, across instruments), and the same state after.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from exchange.core import events as ev
from exchange.core.events import encode
from tests.exchange.kernel.handed import handed_to_reference
from tests.exchange.kernel.test_account_orders import (
    INSTRUMENTS,
    NAMES,
    apply,
    budget,
    exchange,
    no_walk,
    ops,
    stps,
)


def pair(commands, stp):
    """A reference and a compiled engine (``test_account_orders``' market), each sent
    ``commands`` (``apply``'s drawn steps); their event lists."""
    engines = {}
    for engine in ("reference", "compiled"):
        ex, events = exchange(engine, stp)
        for step in commands:
            apply(ex, step)
        engines[engine] = ex, events
    return engines


def cancel_all_unwalked(engines, name, instrument):
    """Send ``name``'s cancel-all (in ``instrument``; all when None) to both engines, the
    compiled one unable to walk its orders; check the same result, events and state; return
    the order ids the compiled engine cancelled."""
    command = {"type": "cancel_all", "account": name, "instrument": instrument}
    (reference, ref_events), (compiled, events) = engines["reference"], engines["compiled"]
    mark = len(events)
    expected = reference.handle(dict(command))
    with no_walk(compiled):
        got = compiled.handle(dict(command))
    assert got == expected
    assert [encode(e) for e in events] == [encode(e) for e in ref_events]
    assert compiled.state_hash() == reference.state_hash()
    assert list(compiled.orders.items()) == list(reference.orders.items())
    assert compiled.accounts == reference.accounts  # open lots included
    return [e.order_id for e in events[mark:] if e.kind == ev.ORDER_CANCELLED]


def test_the_compiled_cancel_all_cancels_oldest_entry_first_without_walking_every_order(
    fallbacks,
):
    # ann's order 1 loses its priority (an amend to a new price): it re-enters after 2 and 3,
    # so entry order (the walk's) is not order id order; bob's order 4 stays
    a, b = INSTRUMENTS[:2]
    commands = [
        {"type": "submit", "account": "ann", "instrument": a, "side": "buy", "price": 100},
        {"type": "submit", "account": "ann", "instrument": b, "side": "sell", "price": 120},
        {"type": "submit", "account": "ann", "instrument": a, "side": "buy", "price": 101},
        {"type": "submit", "account": "bob", "instrument": a, "side": "buy", "price": 99},
        {"type": "amend", "account": "ann", "order_id": 1, "price": 98},
    ]
    engines = {}
    for engine in ("reference", "compiled"):
        ex, events = exchange(engine)
        for command in commands:
            assert ex.handle(command | {"qty": 2}).ok
        engines[engine] = ex, events
    assert list(engines["compiled"][0].orders) == [2, 3, 4, 1]
    assert cancel_all_unwalked(engines, "ann", None) == [2, 3, 1]
    assert cancel_all_unwalked(engines, "bob", b) == []
    assert cancel_all_unwalked(engines, "bob", a) == [4]
    assert not engines["compiled"][0].orders
    assert fallbacks == []


@budget
@given(commands=ops, stp=stps, who=st.integers(0, len(NAMES) - 1), where=st.integers(-1, 2))
def test_the_compiled_cancel_all_is_the_reference_s_without_walking_every_order(
    commands, stp, who, where
):
    engines = pair(commands, stp)
    first = None if where < 0 else INSTRUMENTS[where]
    with handed_to_reference() as handed:  # (hypothesis runs a function-scoped fixture once)
        for name in NAMES[who:] + NAMES[:who]:
            for instrument in (first, None):
                cancel_all_unwalked(engines, name, instrument)
    assert handed == []
    assert not engines["compiled"][0].orders
