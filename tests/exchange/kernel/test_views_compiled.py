"""The compiled engine's ``account_view`` (``exchange.kernel._views``) against the reference's
(``Exchange.account_view``) on the same engine, after every command (issue #20).

Hypothesis draws many accounts' submits, ioc orders, amends (out of priority and in it),
cancels and cancel-alls across three instruments (``test_account_orders``'s commands), so that
accounts rest orders in several books, trade into and out of positions and amend orders behind
newer ones; after each, every account's view from both must be the same value, the positions
in the same order. One instrument's book is sometimes wrapped in a Python class, which the
compiled view reads through ``orders_of`` and merges with the C books' orders.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.kernel.compiled import CompiledExchange
from exchange.kernel.engine import Exchange
from tests.exchange.kernel.test_account_orders import (
    INSTRUMENTS,
    NAMES,
    NO_STP,
    apply,
    budget,
    exchange,
    ops,
    stps,
)


class _PyBook:
    """A C book behind a Python class: not the C ``OrderBook`` to the compiled view."""

    def __init__(self, book):
        self._book = book

    def __getattr__(self, name):
        return getattr(self._book, name)


def same_view(ex, name):
    got, want = ex.account_view(name), Exchange.account_view(ex, name)
    assert got == want, name
    assert list(got[1].items()) == list(want[1].items()), name  # names in the same order
    assert [type(v) for o in got[2] for v in o] == [type(v) for o in want[2] for v in o]
    return got


def check(ops, stp, wrapped):
    ex, _events = exchange("compiled", stp)
    assert type(ex) is CompiledExchange
    assert type(ex).account_view is not Exchange.account_view  # the compiled one runs
    if wrapped >= 0:
        listing = ex.instruments[INSTRUMENTS[wrapped]]
        listing.book = _PyBook(listing.book)
    for step in ops:
        apply(ex, step)
        for name in NAMES:
            same_view(ex, name)


@budget
@given(ops=ops, stp=stps, wrapped=st.integers(-1, len(INSTRUMENTS) - 1))
def test_compiled_account_view_is_the_references_after_every_command(ops, stp, wrapped):
    check(ops, stp, wrapped)


@pytest.mark.acceptance
@given(ops=ops, stp=stps, wrapped=st.integers(-1, len(INSTRUMENTS) - 1))
@settings(budget, max_examples=300)
def test_compiled_account_view_is_the_references_on_many_states(ops, stp, wrapped):
    check(ops, stp, wrapped)


@pytest.mark.parametrize("wrapped", [-1, 1])
def test_many_orders_in_several_books_merge_by_entry(wrapped):
    # more orders than the view's stack rows (64), across three books, some amended behind
    # newer ones: the heap path and the merge of books
    ex, _events = exchange("compiled", NO_STP)
    if wrapped >= 0:
        listing = ex.instruments[INSTRUMENTS[wrapped]]
        listing.book = _PyBook(listing.book)
    for k in range(150):
        name, instrument = NAMES[k % 2], INSTRUMENTS[k % 3]
        command = {"type": "submit", "account": name, "instrument": instrument}
        assert ex.handle(command | {"side": "buy", "price": 50 + k % 40, "qty": 1 + k % 3}).ok
    for order_id in range(1, 150, 7):
        order = ex.orders[order_id]
        command = {"type": "amend", "account": order.account, "order_id": order_id}
        assert ex.handle(command | {"price": order.price + 1, "qty": 2}).ok
    for name in NAMES:
        same_view(ex, name)
    assert len(ex.account_view("ann")[2]) == 75


def test_positions_are_sorted_by_name_without_zeros_and_an_unknown_account_raises():
    ex, _events = exchange("compiled", NO_STP)
    ex.accounts["ann"].positions.update({"GPU-C": 3, "GPU-A": 0, "GPU-B": -2})
    assert list(same_view(ex, "ann")[1].items()) == [("GPU-B", -2), ("GPU-C", 3)]
    ex.accounts["bob"].positions.update({"GPU-C": 0})
    assert same_view(ex, "bob")[1] == {}
    ex.accounts["cat"].positions.update({"GPU-C": 4})
    assert same_view(ex, "cat")[1] == {"GPU-C": 4}
    with pytest.raises(KeyError):
        ex.account_view("nobody")
    with pytest.raises(KeyError):
        Exchange.account_view(ex, "nobody")


def test_an_account_whose_records_are_not_plain_dicts_gets_the_references_view():
    # a read-only mapping (not a dict): the C walks would misread it
    from types import MappingProxyType

    ex, _events = exchange("compiled", NO_STP)
    command = {"type": "submit", "account": "ann", "instrument": INSTRUMENTS[0]}
    assert ex.handle(command | {"side": "buy", "price": 95, "qty": 2}).ok
    account = ex.accounts["ann"]
    account.positions = MappingProxyType({"GPU-B": 1, "GPU-A": 2})
    view = same_view(ex, "ann")
    assert list(view[1]) == ["GPU-A", "GPU-B"] and len(view[2]) == 1
    account.positions = {}
    account.open_lots = MappingProxyType(account.open_lots)
    assert len(same_view(ex, "ann")[2]) == 1
