"""The Cython book equals the reference book: same fills, rejections, STP cancels and final state.

Hypothesis draws short adversarial streams (a handful of ids and prices so that cancels of filled
orders, duplicate ids, amends across the spread, FOK at exact depth and self-trades are common,
plus malformed codes and out-of-range values); a seeded million-message stream checks the two
books on realistic flow at scale.
"""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matching_core import (
    MESSAGE_DTYPE,
    REPORT_DTYPE,
    Op,
    OrderBook,
    OrderType,
    ReferenceBook,
    StpMode,
)
from matching_core.streams import generate_stream

MAX_PRICE = 20
MAX_QTY = 12

message = st.tuples(
    st.integers(0, 11),  # order_id: a small pool, so ids collide and get reused
    st.integers(0, 3),  # account
    st.one_of(st.integers(8, 14), st.integers(-1, MAX_PRICE + 1)),  # price, mostly near mid
    st.one_of(st.integers(1, 6), st.integers(-1, MAX_QTY + 1)),  # qty
    st.sampled_from([Op.ADD] * 6 + [Op.CANCEL] * 2 + [Op.AMEND] * 2 + [3]),
    st.sampled_from([0, 0, 0, 1, 1, 1, 2]),  # side (2 is invalid)
    st.sampled_from([OrderType.LIMIT] * 4 + [OrderType.MARKET, 2]),
    st.sampled_from([0, 0, 0, 1, 2, 2, 3]),  # tif (3 is invalid)
    st.sampled_from([0, 0, 0, 1, 2]),  # post_only (2 is invalid)
)
stp_setup = st.tuples(
    st.sampled_from(list(StpMode)),
    st.dictionaries(st.integers(0, 3), st.sampled_from(list(StpMode)), max_size=4),
)


def _run(book_cls, messages, stp, limits=(MAX_PRICE, MAX_QTY)):
    default, per_account = stp
    book = book_cls(max_price=limits[0], max_qty=limits[1], stp=default)
    for account, mode in sorted(per_account.items()):
        book.set_stp(account, mode)
    reports = np.zeros(len(messages), dtype=REPORT_DTYPE)
    fills = book.process(messages, reports)
    return book, fills, reports


def assert_same(messages, stp, limits=(MAX_PRICE, MAX_QTY)):
    fast, fast_fills, fast_reports = _run(OrderBook, messages, stp, limits)
    ref, ref_fills, ref_reports = _run(ReferenceBook, messages, stp, limits)
    bad = np.nonzero(fast_reports != ref_reports)[0]
    assert bad.size == 0, f"first differing report at message {bad[:1]}"
    assert np.array_equal(fast_fills, ref_fills)
    assert np.array_equal(fast.stp_cancels, ref.stp_cancels)
    assert np.array_equal(fast.snapshot(), ref.snapshot())
    assert len(fast) == len(ref)
    assert (fast.best_bid(), fast.best_ask()) == (ref.best_bid(), ref.best_ask())
    for side in (0, 1):
        assert fast.level_count(side) == ref.level_count(side)
        for a, b in zip(fast.depth(side, 5), ref.depth(side, 5), strict=True):
            assert np.array_equal(a, b)
    return fast, fast_reports


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(message, max_size=120), stp_setup)
def test_cython_book_equals_reference_on_random_streams(rows, stp):
    assert_same(np.array(rows, dtype=MESSAGE_DTYPE), stp)


@settings(max_examples=150, deadline=None)
@given(st.lists(message, max_size=80), stp_setup)
def test_per_call_api_equals_batch_api(rows, stp):
    messages = np.array(rows, dtype=MESSAGE_DTYPE)
    batch, _, reports = _run(OrderBook, messages, stp)
    single = OrderBook(max_price=MAX_PRICE, max_qty=MAX_QTY, stp=stp[0])
    for account, mode in sorted(stp[1].items()):
        single.set_stp(account, mode)
    fills = []
    for i, m in enumerate(messages):
        oid, acct, price, qty = (
            int(m["order_id"]),
            int(m["account"]),
            int(m["price"]),
            int(m["qty"]),
        )
        if m["op"] == Op.ADD and m["type"] == OrderType.MARKET and not m["post_only"]:
            code = single.submit_market(oid, acct, int(m["side"]), qty, price)
        elif m["op"] == Op.ADD and m["type"] == OrderType.LIMIT:
            code = single.submit(
                oid, acct, int(m["side"]), price, qty, int(m["tif"]), int(m["post_only"])
            )
        elif m["op"] == Op.CANCEL:
            code = single.cancel(oid)
        elif m["op"] == Op.AMEND:
            code = single.amend(oid, price, qty)
        else:
            continue  # not expressible per call (a bad op/type code, a post-only market)
        report = (code, single.last_filled, single.last_resting, single.last_cancelled)
        assert report == tuple(reports[i].tolist())
        for f in single.fills.tolist():
            fills.append(f[:6] + (i,))  # per-call msg_index counts calls; the batch's, rows
    assert fills == batch.fills.tolist()
    assert np.array_equal(single.snapshot(), batch.snapshot())


def test_many_levels_survive_heap_compaction():
    # wide price range and many cancels: empty levels pile up and force compactions
    rng = np.random.default_rng(11)
    n = 60_000
    m = np.zeros(n, dtype=MESSAGE_DTYPE)
    m["op"] = rng.choice([Op.ADD, Op.CANCEL], n, p=[0.55, 0.45])
    m["order_id"] = rng.integers(0, 5_000, n)
    m["account"] = rng.integers(0, 20, n)
    m["side"] = rng.integers(0, 2, n)
    m["price"] = rng.integers(1, 5_000, n)
    m["qty"] = rng.integers(1, 10, n)
    m["tif"] = rng.choice(3, n, p=[0.9, 0.05, 0.05])
    book, reports = assert_same(m, (StpMode.CANCEL_RESTING, {}), limits=(10_000, 100))
    assert (reports["reject"] == 0).sum() > n // 2
    assert book.level_count(0) > 100


def test_million_message_seeded_stream_matches_reference():
    messages = generate_stream(1_000_000, seed=2024)
    book, reports = assert_same(
        messages, (StpMode.NONE, {3: StpMode.CANCEL_BOTH}), limits=(1 << 40, 1 << 20)
    )
    assert (reports["filled"] > 0).sum() > 10_000  # the stream really trades
