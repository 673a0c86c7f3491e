"""An account's resting orders come from the books, not from a walk of every order of the
exchange (issue #20): ``Exchange.account_view``, ``_cancel_all`` (cancel-all, a failed bot,
a default, a liquidation's ``cancel_orders_in``) and ``cancel_book``.

The oracle is the walk they replaced: ``Exchange.orders`` (order id -> ``LiveOrder``) in its
insertion order, which is oldest first by entry, not by order id -- an amend that loses
priority deletes and re-inserts its order. Each check runs with ``Exchange.orders`` swapped
for a dict that refuses to be walked, on both engines (``exchange.kernel.engines``), on
states hypothesis builds from many accounts' submits, amends, cancels and cancel-alls across
three instruments.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.core import events as ev
from exchange.kernel.engines import ENGINES, engine_class
from exchange.products.instruments import InstrumentSpec

NAMES = ("ann", "bob", "cat")
SPECS = tuple(
    InstrumentSpec(name=f"GPU-{k}", tick_size="0.001", contract_multiplier="100", max_price=1_000)
    for k in "ABC"
)
INSTRUMENTS = tuple(spec.name for spec in SPECS)
STP = ("none", "cancel-resting", "cancel-incoming", "cancel-both")
NO_STP = ("none",) * len(NAMES)
SIDES = ("buy", "sell")
#: Each side's lowest price, ticks: buys reach 102 and sells go down to 98, so that most
#: orders rest and some trade
PRICES = (92, 98)


class _NoWalk(dict):
    """``Exchange.orders`` that fails a test when walked (lookups, inserts and pops work)."""

    def _walk(self, *args):
        raise AssertionError("walked every resting order of the exchange")

    __iter__ = items = keys = values = _walk


@contextmanager
def no_walk(ex):
    guard = _NoWalk(ex.orders)
    ex.orders = guard
    try:
        yield
    finally:
        ex.orders = dict(dict.items(guard))  # the same orders, in the same order


def walked_orders(ex, name):
    """What ``account_view`` listed before: the walk of ``Exchange.orders``."""
    return [
        (
            oid,
            o.instrument,
            SIDES[o.side],
            o.price,
            ex.instruments[o.instrument].book.order_qty(oid),
        )
        for oid, o in ex.orders.items()
        if o.account == name
    ]


def exchange(engine, stps=NO_STP):
    events = []
    ex = engine_class(engine)(events.append)
    ex.start("test", 1, {})
    for spec in SPECS:
        ex.list_instrument(spec)
    for name, stp in zip(NAMES, stps, strict=True):
        ex.open_account(name, stp=stp)
        ex.credit(name, 10**12)
    return ex, events


def own_order(ex, name, pick):
    mine = sorted(oid for oid, o in dict.items(ex.orders) if o.account == name)
    return mine[pick % len(mine)] if mine else None


def apply(ex, op):
    """One drawn command: a submit (gtc or ioc), an amend of one of the account's orders
    (to a drawn price and qty, which mostly loses priority, or to fewer lots at its price,
    which keeps it), a cancel, or a cancel-all (the engine's own path for it)."""
    kind, who, where, side, step, qty, pick = op
    name, instrument = NAMES[who], INSTRUMENTS[where]
    if kind in ("submit", "ioc"):
        command = {"type": "submit", "account": name, "instrument": instrument}
        command |= {"side": SIDES[side], "price": PRICES[side] + step, "qty": qty}
        return ex.handle(command | ({"tif": "ioc"} if kind == "ioc" else {}))
    if kind == "cancel_all":
        return ex.handle({"type": "cancel_all", "account": name, "instrument": instrument})
    mine = sorted(oid for oid, o in ex.orders.items() if o.account == name)
    if not mine:
        return None
    order_id = mine[pick % len(mine)]
    if kind == "cancel":
        return ex.handle({"type": "cancel", "account": name, "order_id": order_id})
    order = ex.orders[order_id]
    price = PRICES[order.side] + step
    if kind == "keep":
        open_qty = ex.instruments[order.instrument].book.order_qty(order_id)
        price, qty = order.price, max(1, open_qty - 1)
    command = {"type": "amend", "account": name, "order_id": order_id, "price": price}
    return ex.handle(command | {"qty": qty})


op = st.tuples(
    st.sampled_from(["submit"] * 6 + ["ioc"] + ["amend"] * 3 + ["keep", "cancel", "cancel_all"]),
    st.integers(0, len(NAMES) - 1),
    st.integers(0, len(INSTRUMENTS) - 1),
    st.integers(0, 1),
    st.integers(0, 10),  # ticks above the side's lowest price (PRICES)
    st.integers(1, 5),  # qty, lots
    st.integers(0, 50),  # which of the account's orders an amend or cancel takes
)
ops = st.lists(op, min_size=20, max_size=50)
stps = st.tuples(*[st.sampled_from(STP)] * len(NAMES))
engines = pytest.mark.parametrize("engine", sorted(ENGINES))
#: A few examples in the default run (its time budget); the acceptance run draws many more
budget = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
long_budget = settings(budget, max_examples=300)


def check_views(engine, ops, stp):
    """After every command, each account's view lists the walk's orders, and its cash and
    non-zero positions."""
    ex, _events = exchange(engine, stp)
    for step in ops:
        apply(ex, step)
        for name in NAMES:
            want = walked_orders(ex, name)
            with no_walk(ex):
                cash, positions, orders = ex.account_view(name)
            assert orders == want, (name, step)
            account = ex.accounts[name]
            assert cash == account.cash
            assert positions == {k: v for k, v in sorted(account.positions.items()) if v}


def check_cancel_all(engine, ops, stp, who, where):
    """``_cancel_all`` of each account, from ``who`` on -- in one instrument (``where``; all
    of them when < 0), then in all -- cancels the walk's orders in the walk's order, and
    leaves it none there."""
    ex, events = exchange(engine, stp)
    for step in ops:
        apply(ex, step)
    first = None if where < 0 else INSTRUMENTS[where]
    for name in NAMES[who:] + NAMES[:who]:
        for instrument in (first, None):
            want = [oid for oid, _i, *_ in walked_orders(ex, name) if instrument in (None, _i)]
            mark = len(events)
            with no_walk(ex):
                ex._cancel_all(name, "liquidation", instrument)
            assert [(e.kind, e.order_id, e.account) for e in events[mark:]] == [
                (ev.ORDER_CANCELLED, oid, name) for oid in want
            ], (name, instrument)
            assert all(e.data == {"reason": "liquidation"} for e in events[mark:])
            for key in INSTRUMENTS if instrument is None else (instrument,):
                assert ex.instruments[key].book.orders_of(ex.accounts[name].index) == []
                assert ex.accounts[name].open_lots.get(key, [0, 0]) == [0, 0]
            assert not [oid for oid in want if oid in ex.orders]
    assert not ex.orders


def check_cancel_book(engine, ops, stp, where):
    """``cancel_book`` cancels the walk's orders of the instrument in the walk's order."""
    ex, events = exchange(engine, stp)
    for step in ops:
        apply(ex, step)
    instrument = INSTRUMENTS[where]
    want = [(oid, o.account) for oid, o in ex.orders.items() if o.instrument == instrument]
    mark = len(events)
    with no_walk(ex):
        ex.cancel_book(instrument, "expired")
    assert [(e.kind, e.order_id, e.account) for e in events[mark:]] == [
        (ev.ORDER_CANCELLED, oid, account) for oid, account in want
    ]
    assert len(ex.instruments[instrument].book) == 0
    assert all(o.instrument != instrument for o in ex.orders.values())


@engines
@budget
@given(ops=ops, stp=stps)
def test_account_view_lists_the_walks_orders_without_walking_every_order(engine, ops, stp):
    check_views(engine, ops, stp)


@engines
@budget
@given(ops=ops, stp=stps, who=st.integers(0, len(NAMES) - 1), where=st.integers(-1, 2))
def test_cancel_all_cancels_the_walks_orders_oldest_first_without_walking_every_order(
    engine, ops, stp, who, where
):
    check_cancel_all(engine, ops, stp, who, where)


@engines
@budget
@given(ops=ops, stp=stps, where=st.integers(0, 2))
def test_cancel_book_cancels_the_walks_orders_oldest_first_without_walking_every_order(
    engine, ops, stp, where
):
    check_cancel_book(engine, ops, stp, where)


@pytest.mark.acceptance
@engines
@long_budget
@given(ops=ops, stp=stps, who=st.integers(0, len(NAMES) - 1), where=st.integers(-1, 2))
def test_views_and_cancels_list_the_walks_orders_on_many_states(engine, ops, stp, who, where):
    check_views(engine, ops, stp)
    check_cancel_all(engine, ops, stp, who, where)
    check_cancel_book(engine, ops, stp, max(where, 0))


@engines
def test_an_order_amended_out_of_priority_comes_after_newer_orders_in_every_instrument(engine):
    # Exchange.orders' insertion order is not order id order: the amend re-inserts order 1
    ex, events = exchange(engine)
    a, b = INSTRUMENTS[:2]
    for instrument, price in ((a, 100), (b, 100), (a, 101)):
        command = {"type": "submit", "account": "ann", "instrument": instrument}
        assert ex.handle(command | {"side": "buy", "price": price, "qty": 2}).ok
    assert ex.handle({"type": "amend", "account": "ann", "order_id": 1, "price": 99, "qty": 2}).ok
    assert list(ex.orders) == [2, 3, 1]
    with no_walk(ex):
        orders = ex.account_view("ann")[2]
    assert orders == [(2, b, "buy", 100, 2), (3, a, "buy", 101, 2), (1, a, "buy", 99, 2)]
    mark = len(events)
    with no_walk(ex):
        ex._cancel_all("ann", "bot failed")
    assert [e.order_id for e in events[mark:]] == [2, 3, 1]
    assert ex.account_view("ann")[2] == []
