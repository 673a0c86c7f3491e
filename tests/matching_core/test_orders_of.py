"""``orders_of``: one account's resting orders, in the order they entered the book (issue #20,
the exchange's account view and cancel-all without a walk of every order).

The Cython book against the reference on random operation streams (the differential test's
adversarial messages, one call at a time, compared after every call), then the rules both
books follow: entry order is neither price nor order id order, an amend that keeps priority
keeps its place and one that loses it re-enters, and entries of different books merge.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matching_core import MESSAGE_DTYPE, Op, OrderBook, OrderType, ReferenceBook, Side
from tests.matching_core.test_differential import MAX_PRICE, MAX_QTY, message, stp_setup

ACCOUNTS = (None, 0, 1, 2, 3)  # the message strategies' accounts, and every order

#: Mostly valid limit orders and amends, so that accounts hold several orders at several
#: levels and amends move them (the differential test's messages, mixed in, add the rest)
resting = st.tuples(
    st.integers(0, 15),  # order_id
    st.integers(0, 3),  # account
    st.integers(5, 15),  # price
    st.integers(1, 6),  # qty
    st.sampled_from([Op.ADD] * 5 + [Op.CANCEL] + [Op.AMEND] * 3),
    st.sampled_from([0, 1]),  # side
    st.just(OrderType.LIMIT),
    st.sampled_from([0] * 6 + [1, 2]),  # tif: mostly GTC
    st.sampled_from([0] * 6 + [1]),  # post_only
)


def _books(stp):
    default, per_account = stp
    books = []
    for cls in (OrderBook, ReferenceBook):
        book = cls(max_price=MAX_PRICE, max_qty=MAX_QTY, stp=default)
        for account, mode in sorted(per_account.items()):
            book.set_stp(account, mode)
        books.append(book)
    return books


def _without_entries(orders):
    return [row[1:] for row in orders]


def check_same_orders(rows, stp):
    """Both books, one message at a time: after each, every account's list (and the list of
    every order) holds the same orders in the same order, entries increasing."""
    fast, ref = _books(stp)
    messages = np.array(rows, dtype=MESSAGE_DTYPE)
    for i in range(len(messages)):
        fast.process(messages[i : i + 1])
        ref.process(messages[i : i + 1])
        for account in ACCOUNTS:
            got, want = fast.orders_of(account), ref.orders_of(account)
            # the entries count every book in the process: equal in order, not in value
            assert _without_entries(got) == _without_entries(want), (i, account)
            entries = [row[0] for row in got]
            assert entries == sorted(set(entries)), (i, account)
    # every resting order once, with what the snapshot says of it
    listed = sorted((oid, side, price, qty) for _e, oid, side, price, qty in fast.orders_of())
    snap = sorted(
        (int(r["order_id"]), int(r["side"]), int(r["price"]), int(r["qty"]))
        for r in fast.snapshot()
    )
    assert listed == snap


#: the acceptance run (python -m pytest -m acceptance) draws ten times the default run's
streams = st.lists(st.one_of(resting, resting, resting, message), min_size=10, max_size=40)
budget = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@budget
@given(streams, stp_setup)
def test_cython_orders_of_equals_reference_after_every_call(rows, stp):
    check_same_orders(rows, stp)


@pytest.mark.acceptance
@settings(budget, max_examples=400)
@given(streams, stp_setup)
def test_cython_orders_of_equals_reference_on_many_streams(rows, stp):
    check_same_orders(rows, stp)


def test_orders_are_listed_in_entry_order_not_price_or_id_order(book):
    book.submit(9, 1, Side.BUY, 100, 5)
    book.submit(4, 1, Side.SELL, 300, 2)
    book.submit(7, 2, Side.BUY, 100, 1)  # another account, same level
    book.submit(2, 1, Side.BUY, 150, 3)  # better price, later
    assert _without_entries(book.orders_of(1)) == [
        (9, Side.BUY, 100, 5),
        (4, Side.SELL, 300, 2),
        (2, Side.BUY, 150, 3),
    ]
    assert [row[1] for row in book.orders_of()] == [9, 4, 7, 2]
    assert book.orders_of(3) == []


def test_amend_keeping_priority_keeps_the_entry_and_losing_it_re_enters(book):
    book.submit(1, 1, Side.BUY, 100, 5)
    book.submit(2, 1, Side.BUY, 100, 5)
    book.submit(3, 1, Side.BUY, 90, 5)
    first = book.orders_of(1)
    book.amend(1, 100, 4)  # fewer lots at the same price: priority kept
    assert [row[:2] for row in book.orders_of(1)] == [row[:2] for row in first]
    assert book.orders_of(1)[0][4] == 4
    book.amend(2, 95, 5)  # a new price: priority lost, the order enters again
    assert [row[1] for row in book.orders_of(1)] == [1, 3, 2]
    book.amend(1, 100, 6)  # more lots: priority lost too
    assert [row[1] for row in book.orders_of(1)] == [3, 2, 1]


def test_filled_and_cancelled_orders_leave_the_list(book):
    book.submit(1, 1, Side.SELL, 100, 2)
    book.submit(2, 1, Side.SELL, 101, 2)
    book.submit(3, 1, Side.SELL, 102, 2)
    book.submit(10, 2, Side.BUY, 101, 3)  # takes order 1 and one lot of order 2
    book.cancel(3)
    assert _without_entries(book.orders_of(1)) == [(2, Side.SELL, 101, 1)]
    assert book.orders_of(2) == []


def test_entries_of_two_books_merge_into_the_order_the_orders_entered_them(make_book):
    one, two = make_book(max_price=1_000), make_book(max_price=1_000)
    one.submit(1, 1, Side.BUY, 100, 1)
    two.submit(2, 1, Side.BUY, 100, 1)
    one.submit(3, 1, Side.BUY, 101, 1)
    two.submit(4, 1, Side.SELL, 200, 1)
    one.amend(1, 99, 1)  # re-enters after all of them
    merged = sorted(one.orders_of(1) + two.orders_of(1))
    assert [row[1] for row in merged] == [2, 3, 4, 1]


def test_a_deep_book_lists_each_accounts_orders_as_the_reference_does():
    # more orders than orders_of's fixed scratch space (32), at scattered prices, with
    # amends that move them: the lists still equal the reference's, message by message
    rng = np.random.default_rng(20)
    n = 3_000
    m = np.zeros(n, dtype=MESSAGE_DTYPE)
    m["op"] = rng.choice([Op.ADD, Op.CANCEL, Op.AMEND], n, p=[0.6, 0.1, 0.3])
    m["order_id"] = rng.integers(0, 400, n)
    m["account"] = rng.integers(0, 4, n)
    m["side"] = rng.integers(0, 2, n)
    m["price"] = np.where(m["side"] == 0, rng.integers(1, 120, n), rng.integers(100, 220, n))
    m["qty"] = rng.integers(1, 10, n)
    fast, ref = OrderBook(max_price=300), ReferenceBook(max_price=300)
    deepest = 0
    for start in range(0, n, 50):
        fast.process(m[start : start + 50])
        ref.process(m[start : start + 50])
        deepest = max(deepest, len(fast))
        for account in ACCOUNTS:
            assert _without_entries(fast.orders_of(account)) == _without_entries(
                ref.orders_of(account)
            )
    assert deepest > 100
