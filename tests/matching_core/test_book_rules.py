"""The order-book specification (docs/matching_core.md), one rule per test.

Every test runs against both the Cython ``OrderBook`` and the ``ReferenceBook``; the expected
values are worked out by hand from the specification.
"""

import numpy as np
import pytest

from matching_core import MESSAGE_DTYPE, REPORT_DTYPE, Op, OrderType, Reject, StpMode
from matching_core import Side as S
from matching_core import TimeInForce as T

BUY, SELL = S.BUY, S.SELL


def fills(book):
    """The last call's fills as (taker, maker, price, qty) tuples."""
    return [
        (int(f["taker_order_id"]), int(f["maker_order_id"]), int(f["price"]), int(f["qty"]))
        for f in book.fills
    ]


def resting(book):
    """The whole book as (side, price, order_id, qty) tuples in priority order."""
    return [
        (int(r["side"]), int(r["price"]), int(r["order_id"]), int(r["qty"]))
        for r in book.snapshot()
    ]


# ------------------------------------------------------------------------ price-time priority
def test_better_price_trades_first(book):
    book.submit(1, 1, SELL, 102, 5)
    book.submit(2, 1, SELL, 101, 5)
    assert book.submit(3, 2, BUY, 102, 7) == Reject.OK
    assert fills(book) == [(3, 2, 101, 5), (3, 1, 102, 2)]
    assert resting(book) == [(SELL, 102, 1, 3)]


def test_earlier_order_at_same_price_trades_first(book):
    book.submit(1, 1, BUY, 100, 5)
    book.submit(2, 1, BUY, 100, 5)
    book.submit(3, 2, SELL, 100, 6)
    assert fills(book) == [(3, 1, 100, 5), (3, 2, 100, 1)]
    assert resting(book) == [(BUY, 100, 2, 4)]


def test_trade_price_is_the_resting_orders_price(book):
    book.submit(1, 1, SELL, 100, 5)
    book.submit(2, 2, BUY, 110, 5)
    assert fills(book) == [(2, 1, 100, 5)]


def test_limit_order_does_not_trade_beyond_its_price(book):
    book.submit(1, 1, SELL, 100, 5)
    book.submit(2, 1, SELL, 103, 5)
    book.submit(3, 2, BUY, 101, 8)
    assert fills(book) == [(3, 1, 100, 5)]
    assert (book.last_filled, book.last_resting, book.last_cancelled) == (5, 3, 0)
    assert resting(book) == [(BUY, 101, 3, 3), (SELL, 103, 2, 5)]


def test_gtc_remainder_rests_at_its_limit_behind_orders_already_there(book):
    book.submit(1, 1, BUY, 100, 4)
    book.submit(2, 2, SELL, 99, 6)  # trades 4 at 100, rests 2 at 99
    assert (book.last_filled, book.last_resting) == (4, 2)
    book.submit(3, 3, SELL, 99, 1)
    assert resting(book) == [(SELL, 99, 2, 2), (SELL, 99, 3, 1)]
    book.submit(4, 4, BUY, 99, 3)
    assert fills(book) == [(4, 2, 99, 2), (4, 3, 99, 1)]


def test_queries_report_best_prices_depth_and_levels(book):
    assert book.best_bid() is None and book.best_ask() is None
    for oid, (side, price, qty) in enumerate(
        [(BUY, 99, 1), (BUY, 100, 2), (BUY, 100, 3), (BUY, 97, 4), (SELL, 103, 5), (SELL, 102, 6)]
    ):
        book.submit(oid, 1, side, price, qty)
    assert book.best_bid() == 100 and book.best_ask() == 102
    prices, qtys = book.depth(BUY, 2)
    assert prices.tolist() == [100, 99] and qtys.tolist() == [5, 1]
    prices, qtys = book.depth(SELL, 10)
    assert prices.tolist() == [102, 103] and qtys.tolist() == [6, 5]
    assert prices.dtype == np.int64 and qtys.dtype == np.int64
    assert book.level_qty(BUY, 100) == 5 and book.level_qty(BUY, 98) == 0
    assert book.level_count(BUY) == 3 and book.level_count(SELL) == 2
    assert len(book) == 6
    assert book.order_qty(2) == 3 and book.order_qty(99) == 0


def test_emptied_levels_disappear_from_best_price_and_depth(book):
    book.submit(1, 1, SELL, 101, 1)
    book.submit(2, 1, SELL, 102, 1)
    book.cancel(1)
    assert book.best_ask() == 102
    assert book.depth(SELL, 5)[0].tolist() == [102]
    assert book.level_count(SELL) == 1
    book.submit(3, 1, SELL, 101, 4)  # the old price comes back as a fresh level
    assert book.depth(SELL, 5)[0].tolist() == [101, 102]
    assert book.level_qty(SELL, 101) == 4


# ------------------------------------------------------------------------ time in force
def test_ioc_trades_what_crosses_and_cancels_the_rest(book):
    book.submit(1, 1, SELL, 100, 3)
    assert book.submit(2, 2, BUY, 100, 5, T.IOC) == Reject.OK
    assert fills(book) == [(2, 1, 100, 3)]
    assert (book.last_filled, book.last_resting, book.last_cancelled) == (3, 0, 2)
    assert len(book) == 0


def test_fok_fills_completely_across_levels(book):
    book.submit(1, 1, SELL, 100, 3)
    book.submit(2, 1, SELL, 101, 2)
    assert book.submit(3, 2, BUY, 101, 5, T.FOK) == Reject.OK
    assert fills(book) == [(3, 1, 100, 3), (3, 2, 101, 2)]
    assert len(book) == 0


def test_fok_at_exact_depth_fills(book):
    book.submit(1, 1, SELL, 100, 4)
    assert book.submit(2, 2, BUY, 100, 4, T.FOK) == Reject.OK
    assert book.last_filled == 4


def test_fok_one_lot_beyond_depth_is_rejected_and_book_untouched(book):
    book.submit(1, 1, SELL, 100, 4)
    book.submit(2, 1, SELL, 102, 9)  # beyond the FOK's limit: does not count
    before = resting(book)
    assert book.submit(3, 2, BUY, 101, 5, T.FOK) == Reject.FOK_NOT_FILLABLE
    assert fills(book) == [] and resting(book) == before


def test_market_order_sweeps_levels_and_never_rests(book):
    book.submit(1, 1, SELL, 100, 2)
    book.submit(2, 1, SELL, 150, 2)
    assert book.submit_market(3, 2, BUY, 10) == Reject.OK
    assert fills(book) == [(3, 1, 100, 2), (3, 2, 150, 2)]
    assert (book.last_filled, book.last_resting, book.last_cancelled) == (4, 0, 6)
    assert len(book) == 0


def test_market_order_stops_at_its_protection_price(book):
    book.submit(1, 1, BUY, 100, 2)
    book.submit(2, 1, BUY, 95, 2)
    assert book.submit_market(3, 2, SELL, 10, protection=98) == Reject.OK
    assert fills(book) == [(3, 1, 100, 2)]
    assert book.last_cancelled == 8
    assert resting(book) == [(BUY, 95, 2, 2)]


def test_market_order_on_empty_side_is_accepted_and_cancelled(book):
    assert book.submit_market(1, 1, BUY, 3) == Reject.OK
    assert (book.last_filled, book.last_cancelled) == (0, 3)


# ------------------------------------------------------------------------ post-only
def test_post_only_that_would_cross_is_rejected_not_slid(book):
    book.submit(1, 1, SELL, 100, 1)
    assert book.submit(2, 2, BUY, 100, 1, post_only=True) == Reject.POST_ONLY_WOULD_CROSS
    assert resting(book) == [(SELL, 100, 1, 1)]


def test_post_only_that_does_not_cross_rests(book):
    book.submit(1, 1, SELL, 100, 1)
    assert book.submit(2, 2, BUY, 99, 1, post_only=True) == Reject.OK
    assert resting(book) == [(BUY, 99, 2, 1), (SELL, 100, 1, 1)]


def test_post_only_is_only_valid_on_gtc_limit_orders(book):
    assert book.submit(1, 1, BUY, 99, 1, T.IOC, post_only=True) == Reject.INVALID_POST_ONLY


# ------------------------------------------------------------------------ rejections
@pytest.mark.parametrize(
    "args, code",
    [
        ((1, 1, BUY, 100, 0), Reject.NON_POSITIVE_QTY),
        ((1, 1, BUY, 100, -5), Reject.NON_POSITIVE_QTY),
        ((1, 1, BUY, 100, 1_001), Reject.QTY_OUT_OF_RANGE),
        ((1, 1, BUY, 0, 1), Reject.NON_POSITIVE_PRICE),
        ((1, 1, BUY, -3, 1), Reject.NON_POSITIVE_PRICE),
        ((1, 1, BUY, 1_001, 1), Reject.PRICE_OUT_OF_RANGE),
        ((1, 1, 2, 100, 1), Reject.INVALID_SIDE),
        ((1, 1, BUY, 100, 1, 3), Reject.INVALID_TIF),
    ],
)
def test_invalid_limit_orders_are_rejected_with_their_reason(book, args, code):
    book.submit(50, 1, SELL, 500, 1)
    assert book.submit(*args) == code
    assert resting(book) == [(SELL, 500, 50, 1)]
    assert book.fill_count == 0


def test_checks_run_in_the_specified_order(book):
    # a bad side wins over a bad quantity, and a bad quantity over a bad price
    assert book.submit(1, 1, 7, 0, 0) == Reject.INVALID_SIDE
    assert book.submit(1, 1, BUY, 0, 0) == Reject.NON_POSITIVE_QTY


def test_market_protection_price_must_be_in_range(book):
    assert book.submit_market(1, 1, BUY, 1, protection=-1) == Reject.NON_POSITIVE_PRICE
    assert book.submit_market(1, 1, BUY, 1, protection=1_001) == Reject.PRICE_OUT_OF_RANGE


def test_duplicate_resting_order_id_is_rejected(book):
    book.submit(1, 1, BUY, 100, 1)
    assert book.submit(1, 2, SELL, 200, 1) == Reject.DUPLICATE_ORDER_ID
    assert book.submit_market(1, 2, SELL, 1) == Reject.DUPLICATE_ORDER_ID
    assert resting(book) == [(BUY, 100, 1, 1)]


def test_id_of_a_filled_order_may_be_reused(book):
    book.submit(1, 1, BUY, 100, 1)
    book.submit(2, 2, SELL, 100, 1)
    assert book.submit(1, 1, BUY, 90, 1) == Reject.OK


def test_cancel_of_unknown_or_filled_order_is_rejected(book):
    assert book.cancel(5) == Reject.UNKNOWN_ORDER_ID
    book.submit(1, 1, BUY, 100, 1)
    book.submit(2, 2, SELL, 100, 1)
    assert book.cancel(1) == Reject.UNKNOWN_ORDER_ID
    assert book.cancel(2) == Reject.UNKNOWN_ORDER_ID  # the IOC-like remainder never rested


def test_cancel_removes_the_open_quantity(book):
    book.submit(1, 1, BUY, 100, 5)
    book.submit(2, 2, SELL, 100, 2)
    assert book.cancel(1) == Reject.OK
    assert book.last_cancelled == 3
    assert len(book) == 0 and book.best_bid() is None


# ------------------------------------------------------------------------ amend
def test_amend_reducing_quantity_keeps_time_priority(book):
    book.submit(1, 1, BUY, 100, 5)
    book.submit(2, 1, BUY, 100, 5)
    assert book.amend(1, 100, 2) == Reject.OK
    assert (book.last_resting, book.last_cancelled) == (2, 3)
    book.submit(3, 2, SELL, 100, 3)
    assert fills(book) == [(3, 1, 100, 2), (3, 2, 100, 1)]


def test_amend_increasing_quantity_loses_priority(book):
    book.submit(1, 1, BUY, 100, 5)
    book.submit(2, 1, BUY, 100, 5)
    assert book.amend(1, 100, 6) == Reject.OK
    assert resting(book) == [(BUY, 100, 2, 5), (BUY, 100, 1, 6)]


def test_amend_to_new_price_loses_priority(book):
    book.submit(1, 1, BUY, 100, 5)
    book.submit(2, 1, BUY, 101, 5)
    assert book.amend(1, 101, 5) == Reject.OK
    assert resting(book) == [(BUY, 101, 2, 5), (BUY, 101, 1, 5)]
    assert book.level_count(BUY) == 1


def test_amend_across_the_spread_trades_like_a_new_order(book):
    book.submit(1, 1, SELL, 102, 3)
    book.submit(2, 2, BUY, 100, 5)
    assert book.amend(2, 102, 5) == Reject.OK
    assert fills(book) == [(2, 1, 102, 3)]
    assert (book.last_filled, book.last_resting) == (3, 2)
    assert resting(book) == [(BUY, 102, 2, 2)]


def test_post_only_amend_that_would_cross_is_rejected_and_order_kept(book):
    book.submit(1, 1, SELL, 102, 3)
    book.submit(2, 2, BUY, 100, 5, post_only=True)
    assert book.amend(2, 102, 5) == Reject.POST_ONLY_WOULD_CROSS
    assert resting(book) == [(BUY, 100, 2, 5), (SELL, 102, 1, 3)]


def test_amend_validation(book):
    book.submit(1, 1, BUY, 100, 5)
    assert book.amend(1, 100, 0) == Reject.NON_POSITIVE_QTY
    assert book.amend(1, 0, 1) == Reject.NON_POSITIVE_PRICE
    assert book.amend(1, 1_001, 1) == Reject.PRICE_OUT_OF_RANGE
    assert book.amend(9, 100, 1) == Reject.UNKNOWN_ORDER_ID
    assert resting(book) == [(BUY, 100, 1, 5)]


# ------------------------------------------------------------------------ self-trade prevention
def _self_cross(book):
    book.submit(1, 7, SELL, 100, 2)  # own resting order, best
    book.submit(2, 8, SELL, 100, 2)  # someone else's, behind it
    return book.submit(3, 7, BUY, 100, 3)


def test_self_trade_is_allowed_when_stp_is_off(book):
    assert book.stp(7) == StpMode.NONE
    _self_cross(book)
    assert fills(book) == [(3, 1, 100, 2), (3, 2, 100, 1)]


def test_stp_cancel_resting_removes_own_order_and_keeps_matching(book):
    book.set_stp(7, StpMode.CANCEL_RESTING)
    _self_cross(book)
    assert fills(book) == [(3, 2, 100, 2)]
    assert book.stp_cancels[["order_id", "account", "qty"]].tolist() == [(1, 7, 2)]
    assert resting(book) == [(BUY, 100, 3, 1)]


def test_stp_cancel_incoming_cancels_the_remainder_and_keeps_resting(book):
    book.set_stp(7, StpMode.CANCEL_INCOMING)
    _self_cross(book)
    assert fills(book) == [] and len(book.stp_cancels) == 0
    assert (book.last_filled, book.last_resting, book.last_cancelled) == (0, 0, 3)
    assert resting(book) == [(SELL, 100, 1, 2), (SELL, 100, 2, 2)]


def test_stp_cancel_both_removes_resting_and_incoming(book):
    book.set_stp(7, StpMode.CANCEL_BOTH)
    _self_cross(book)
    assert fills(book) == []
    assert book.stp_cancels["order_id"].tolist() == [1]
    assert book.last_cancelled == 3
    assert resting(book) == [(SELL, 100, 2, 2)]


def test_stp_is_per_account_and_the_book_default_applies_to_others(make_book):
    book = make_book(stp=StpMode.CANCEL_INCOMING)
    book.set_stp(7, StpMode.NONE)
    assert _self_cross(book) == Reject.OK
    assert fills(book)[0] == (3, 1, 100, 2)  # account 7 opted out
    assert book.stp(8) == StpMode.CANCEL_INCOMING


def test_fok_with_stp_cancel_resting_does_not_count_own_orders(book):
    book.set_stp(7, StpMode.CANCEL_RESTING)
    book.submit(1, 7, SELL, 100, 5)
    book.submit(2, 8, SELL, 100, 2)
    assert book.submit(3, 7, BUY, 100, 3, T.FOK) == Reject.FOK_NOT_FILLABLE
    assert len(book.stp_cancels) == 0 and book.order_qty(1) == 5  # rejected FOK cancels nothing
    assert book.submit(4, 7, BUY, 100, 2, T.FOK) == Reject.OK
    assert fills(book) == [(4, 2, 100, 2)] and book.stp_cancels["order_id"].tolist() == [1]


def test_fok_with_stp_cancel_incoming_counts_only_orders_ahead_of_own(book):
    book.set_stp(7, StpMode.CANCEL_INCOMING)
    book.submit(1, 8, SELL, 100, 2)
    book.submit(2, 7, SELL, 100, 5)
    book.submit(3, 8, SELL, 100, 5)
    assert book.submit(4, 7, BUY, 100, 3, T.FOK) == Reject.FOK_NOT_FILLABLE
    assert book.submit(5, 7, BUY, 100, 2, T.FOK) == Reject.OK


# ------------------------------------------------------------------------ batch API
def test_batch_gives_the_same_outcome_as_per_call(make_book):
    msgs = np.zeros(6, dtype=MESSAGE_DTYPE)
    msgs[0] = (1, 1, 100, 5, Op.ADD, SELL, OrderType.LIMIT, T.GTC, 0)
    msgs[1] = (2, 2, 101, 3, Op.ADD, BUY, OrderType.LIMIT, T.GTC, 0)
    msgs[2] = (3, 2, 0, 1, Op.ADD, BUY, OrderType.MARKET, 0, 0)
    msgs[3] = (1, 0, 0, 0, Op.CANCEL, 0, 0, 0, 0)
    msgs[4] = (1, 0, 0, 0, Op.CANCEL, 0, 0, 0, 0)
    msgs[5] = (1, 0, 99, 1, 9, 0, 0, 0, 0)
    batch = make_book()
    reports = np.zeros(6, dtype=REPORT_DTYPE)
    out = batch.process(msgs, reports)
    assert out[["taker_order_id", "maker_order_id", "price", "qty", "msg_index"]].tolist() == [
        (2, 1, 100, 3, 1),
        (3, 1, 100, 1, 2),
    ]
    assert reports.tolist() == [
        (0, 0, 5, 0),
        (0, 3, 0, 0),
        (0, 1, 0, 0),
        (0, 0, 0, 1),
        (Reject.UNKNOWN_ORDER_ID, 0, 0, 0),
        (Reject.INVALID_OP, 0, 0, 0),
    ]
    single = make_book()
    assert single.submit(1, 1, SELL, 100, 5) == 0
    assert single.submit(2, 2, BUY, 101, 3) == 0
    assert single.fills[["taker_order_id", "maker_order_id", "msg_index"]].tolist() == [(2, 1, 1)]
    assert single.submit_market(3, 2, BUY, 1) == 0
    assert single.cancel(1) == 0 and single.cancel(1) == Reject.UNKNOWN_ORDER_ID
    assert np.array_equal(single.snapshot(), batch.snapshot())
    assert single.messages_processed == 5 and batch.messages_processed == 6


def test_batch_rejects_wrong_dtype_and_wrong_report_length(make_book):
    book = make_book()
    with pytest.raises(TypeError):
        book.process(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError):
        book.process(np.zeros(3, dtype=MESSAGE_DTYPE), np.zeros(2, dtype=REPORT_DTYPE))
    assert book.messages_processed == 0


def test_per_call_fill_buffer_holds_only_the_last_calls_fills(book):
    book.submit(1, 1, SELL, 100, 1)
    book.submit(2, 2, BUY, 100, 1)
    assert book.fill_count == 1
    book.submit(3, 1, SELL, 100, 1)
    assert book.fill_count == 0 and len(book.fills) == 0


def test_many_fills_in_one_call_grow_the_buffer(book):
    for i in range(1_000):
        book.submit(i, 1, SELL, 1 + i % 50, 1)
    assert book.submit_market(5_000, 2, BUY, 1_000) == Reject.OK
    assert book.fill_count == 1_000
    assert book.fills["price"].tolist() == sorted(book.fills["price"].tolist())
