"""``best_levels`` and ``top``: a book's best levels as ``(price, qty)`` tuples of Python ints,
built without arrays (issue #20, the bots' book views and the mark's impact walk).

The Cython book against the reference on random message streams, compared after every
message: both give the same levels, and those are ``depth``'s arrays as lists.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matching_core import MESSAGE_DTYPE, Op, OrderBook, ReferenceBook, Side
from tests.matching_core.test_differential import MAX_PRICE, MAX_QTY, message, stp_setup
from tests.matching_core.test_orders_of import resting

SIZES = (0, 1, 2, 3, 64, 1_000)


def _as_depth(book, side, n):
    prices, qtys = book.depth(side, n)
    return tuple(zip(prices.tolist(), qtys.tolist(), strict=True))


def check_same_levels(book, ref):
    for n in SIZES:
        for side in (Side.BUY, Side.SELL):
            got = book.best_levels(side, n)
            assert type(got) is tuple
            assert got == ref.best_levels(side, n) == _as_depth(book, side, n), (side, n)
            assert all(type(p) is int and type(q) is int for p, q in got)
        assert book.top(n) == (book.best_levels(Side.BUY, n), book.best_levels(Side.SELL, n))
        assert ref.top(n) == book.top(n)


def check_stream(rows, stp):
    default, per_account = stp
    fast = OrderBook(max_price=MAX_PRICE, max_qty=MAX_QTY, stp=default)
    ref = ReferenceBook(max_price=MAX_PRICE, max_qty=MAX_QTY, stp=default)
    for account, mode in sorted(per_account.items()):
        fast.set_stp(account, mode)
        ref.set_stp(account, mode)
    messages = np.array(rows, dtype=MESSAGE_DTYPE)
    for i in range(len(messages)):
        fast.process(messages[i : i + 1])
        ref.process(messages[i : i + 1])
        check_same_levels(fast, ref)


streams = st.lists(st.one_of(resting, resting, message), min_size=5, max_size=40)
budget = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@budget
@given(streams, stp_setup)
def test_best_levels_equal_the_reference_and_depth_after_every_message(rows, stp):
    check_stream(rows, stp)


@pytest.mark.acceptance
@settings(budget, max_examples=400)
@given(streams, stp_setup)
def test_best_levels_equal_the_reference_and_depth_on_many_streams(rows, stp):
    check_stream(rows, stp)


def test_a_book_deeper_than_the_scratch_space_gives_every_level_best_first():
    # more than 64 levels a side (the C scratch on the stack): the heap path is the same
    rng = np.random.default_rng(14)
    n = 2_000
    m = np.zeros(n, dtype=MESSAGE_DTYPE)
    m["op"] = rng.choice([Op.ADD, Op.CANCEL], n, p=[0.9, 0.1])
    m["order_id"] = np.arange(n) % 1_500
    m["account"] = rng.integers(0, 4, n)
    m["side"] = rng.integers(0, 2, n)
    m["price"] = np.where(m["side"] == 0, rng.integers(1, 400, n), rng.integers(401, 800, n))
    m["qty"] = rng.integers(1, 10, n)
    fast, ref = OrderBook(max_price=1_000), ReferenceBook(max_price=1_000)
    for start in range(0, n, 250):
        fast.process(m[start : start + 250])
        ref.process(m[start : start + 250])
        check_same_levels(fast, ref)
    assert min(fast.level_count(Side.BUY), fast.level_count(Side.SELL)) > 64
    bids = fast.best_levels(Side.BUY, 65)
    assert len(bids) == 65 and [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)


@pytest.mark.parametrize("cls", [OrderBook, ReferenceBook], ids=["cython", "reference"])
def test_best_levels_reject_an_unknown_side_and_a_negative_count(cls):
    book = cls(max_price=1_000)
    book.submit(1, 1, Side.BUY, 100, 5)
    with pytest.raises(ValueError):
        book.best_levels(2, 1)
    with pytest.raises(ValueError):
        book.best_levels(Side.BUY, -1)
    with pytest.raises(ValueError):
        book.top(-1)
    assert book.top(5) == (((100, 5),), ())
