"""Tests of the seeded order-flow generator ``matching_core.streams``."""

from __future__ import annotations

import numpy as np
import pytest

from matching_core import (
    MESSAGE_DTYPE,
    REPORT_DTYPE,
    Op,
    OrderBook,
    OrderType,
    ReferenceBook,
    Reject,
    Side,
    TimeInForce,
)
from matching_core.streams import KIND_PROBS, generate_stream, mix

N = 30_000


@pytest.fixture(scope="module")
def stream() -> np.ndarray:
    return generate_stream(N, seed=11)


@pytest.fixture(scope="module")
def replay(stream):
    """The stream played through the reference book: (reports, fills, book)."""
    book = ReferenceBook()
    reports = np.zeros(len(stream), dtype=REPORT_DTYPE)
    fills = book.process(stream, reports)
    return reports, fills, book


def test_dtype_and_length(stream):
    assert stream.dtype == MESSAGE_DTYPE
    assert len(stream) == N
    assert len(generate_stream(0)) == 0
    assert generate_stream(0).dtype == MESSAGE_DTYPE


def test_same_seed_same_bytes(stream):
    again = generate_stream(N, seed=11)
    assert again.tobytes() == stream.tobytes()


def test_different_seed_different_stream(stream):
    other = generate_stream(N, seed=12)
    assert other.tobytes() != stream.tobytes()
    assert generate_stream(2_000, seed=11, mid=500).tobytes() != stream[:2_000].tobytes()


def test_reference_and_cython_books_give_the_same_stream():
    """The generator's liveness tracking does not depend on which (correct) book it uses."""
    via_cython = generate_stream(8_000, seed=5, book_factory=OrderBook)
    via_reference = generate_stream(8_000, seed=5, book_factory=ReferenceBook)
    differ = np.flatnonzero(via_cython != via_reference)
    assert len(differ) == 0, (
        f"the books answered differently while generating: first differing message {differ[0]}"
        " (replay generate_stream(8_000, seed=5) through both books to find where)"
    )


def test_mix_within_tolerance(stream):
    m = mix(stream)
    limit_p, cancel_p, marketable_p, amend_p = KIND_PROBS
    tol = 0.015  # 4+ standard deviations at N = 30 000, plus the few start-up fallbacks
    assert m["n"] == N
    assert abs(m["limit"] - limit_p) < tol
    assert abs(m["cancel"] - cancel_p) < tol
    assert abs(m["marketable"] - marketable_p) < tol
    assert 0.01 <= m["amend"] <= 0.02
    assert m["other"] == 0.0
    assert abs(m["limit"] + m["cancel"] + m["marketable"] + m["amend"] - 1.0) < 1e-12
    # about 55 / 35 / 10 with amends counted with the limit adds
    assert abs(m["limit"] + m["amend"] - 0.55) < tol
    # the finer mix: mostly GTC, a few IOC / FOK / post-only, both sides
    assert 0.03 < m["market"] < 0.06
    assert 0.03 < m["ioc"] < 0.06
    assert 0.005 < m["fok"] < 0.015
    assert 0.01 < m["post_only"] < 0.025
    adds = m["limit"] + m["marketable"]
    assert abs(m["buy"] / adds - 0.5) < 0.02


def test_mix_of_empty_and_handmade():
    assert mix(np.zeros(0, dtype=MESSAGE_DTYPE))["n"] == 0
    msgs = np.zeros(4, dtype=MESSAGE_DTYPE)
    msgs["op"] = [Op.ADD, Op.ADD, Op.CANCEL, 7]
    msgs["type"] = [OrderType.LIMIT, OrderType.MARKET, 0, 0]
    m = mix(msgs)
    assert (m["limit"], m["marketable"], m["cancel"], m["amend"], m["other"]) == (
        0.25,
        0.25,
        0.25,
        0.0,
        0.25,
    )


def test_field_ranges(stream):
    add = stream["op"] == Op.ADD
    limit = add & (stream["type"] == OrderType.LIMIT)
    market = add & (stream["type"] == OrderType.MARKET)
    amend = stream["op"] == Op.AMEND
    cancel = stream["op"] == Op.CANCEL
    # prices in ticks: positive for limits and amends, >= 0 (0 = no protection) for market
    assert (stream["price"][limit | amend] > 0).all()
    assert (stream["price"][market] >= 0).all()
    assert (stream["price"][market] == 0).mean() > 0.5
    # quantities in lots: 1..100, skewed small
    q = stream["qty"][add | amend]
    assert q.min() >= 1 and q.max() <= 100
    assert np.median(stream["qty"][add]) <= 10
    assert (stream["qty"][cancel] == 0).all()
    assert set(np.unique(stream["side"][add]).tolist()) == {Side.BUY, Side.SELL}
    assert set(np.unique(stream["tif"][limit]).tolist()) == {
        TimeInForce.GTC,
        TimeInForce.IOC,
        TimeInForce.FOK,
    }
    assert (stream["post_only"][stream["tif"] != TimeInForce.GTC] == 0).all()
    assert (stream["post_only"][~limit] == 0).all()
    assert stream["account"].min() >= 1 and stream["account"].max() <= 50
    # prices cluster around the (slowly drifting) mid, which starts at 10 000 ticks
    assert (np.abs(stream["price"][limit] - 10_000) <= 100).mean() > 0.99


def test_add_ids_unique_and_increasing(stream):
    ids = stream["order_id"][stream["op"] == Op.ADD]
    assert (np.diff(ids) > 0).all()
    assert len(np.unique(ids)) == len(ids)


def test_cancels_and_amends_target_live_orders(stream, replay):
    """The generator tracks liveness exactly, so replayed from an empty book every cancel is
    accepted; an amend can only fail POST_ONLY_WOULD_CROSS (a post-only order moved through
    the touch)."""
    reports, _, _ = replay
    cancels = reports["reject"][stream["op"] == Op.CANCEL]
    assert len(cancels) > 0.3 * N
    assert (cancels == Reject.OK).all(), np.bincount(cancels)
    amends = reports["reject"][stream["op"] == Op.AMEND]
    assert len(amends) > 0
    assert np.isin(amends, [Reject.OK, Reject.POST_ONLY_WOULD_CROSS]).all()
    assert (amends == Reject.OK).mean() > 0.95
    # cancels remove what was open: every cancel removes at least one lot
    assert (reports["cancelled"][stream["op"] == Op.CANCEL] >= 1).all()


def test_adds_mostly_accepted_and_flow_trades(stream, replay):
    reports, fills, book = replay
    add = stream["op"] == Op.ADD
    rejects = reports["reject"][add]
    # only post-only-would-cross and FOK-not-fillable are expected
    assert np.isin(
        rejects, [Reject.OK, Reject.POST_ONLY_WOULD_CROSS, Reject.FOK_NOT_FILLABLE]
    ).all()
    assert (rejects == Reject.OK).mean() > 0.99
    # a realistic, two-sided, trading book
    assert len(fills) > 0.1 * N
    assert (fills["qty"] > 0).all()
    assert book.best_bid() is not None and book.best_ask() is not None
    assert book.best_bid() < book.best_ask()
    assert 10 <= len(book) <= 5_000


def test_amends_both_reduce_and_move(stream):
    am = np.flatnonzero(stream["op"] == Op.AMEND)
    # find each amend's target's current price by replaying prices of adds/amends in order
    price_of: dict[int, int] = {}
    same = moved = 0
    ids = stream["order_id"].tolist()
    prices = stream["price"].tolist()
    ops = stream["op"].tolist()
    for i, op in enumerate(ops):
        if op == Op.ADD:
            price_of[ids[i]] = prices[i]
        elif op == Op.AMEND:
            if prices[i] == price_of[ids[i]]:
                same += 1
            else:
                moved += 1
            price_of[ids[i]] = prices[i]
    assert same + moved == len(am)
    assert same > 0.2 * len(am) and moved > 0.2 * len(am)


def test_arguments_validated():
    with pytest.raises(ValueError):
        generate_stream(-1)
    with pytest.raises(ValueError):
        generate_stream(10, accounts=0)
    with pytest.raises(ValueError):
        generate_stream(10, mid=0)


def test_low_mid_stays_positive():
    s = generate_stream(20_000, seed=1, mid=20)
    limit = (s["op"] != Op.CANCEL) & (s["type"] == OrderType.LIMIT)
    assert (s["price"][limit] >= 1).all()
    assert (s["price"] >= 0).all()


def test_an_order_flow_first_chunk_is_generate_stream(stream):
    from matching_core.streams import OrderFlow

    assert OrderFlow(11).take(N).tobytes() == stream.tobytes()


def test_an_order_flow_taken_in_chunks_targets_only_live_orders():
    """A stream taken a chunk at a time carries its book, mid and live orders across the
    chunks: replayed from an empty book, every cancel of it is accepted and every add id is
    unique and rising, as for one generate_stream call."""
    from matching_core.streams import OrderFlow

    flow = OrderFlow(3, accounts=6)
    chunks = [flow.take(k) for k in (1, 999, 4_000, 0, 5_000)]
    messages = np.concatenate(chunks)
    reports = np.zeros(len(messages), dtype=REPORT_DTYPE)
    ReferenceBook().process(messages, reports)
    cancels = reports["reject"][messages["op"] == Op.CANCEL]
    assert len(cancels) > 1_000
    assert (cancels == Reject.OK).all(), np.bincount(cancels)
    adds = messages["order_id"][messages["op"] == Op.ADD]
    assert (np.diff(adds) > 0).all() and adds[-1] <= len(messages)


def test_an_order_flow_keeps_only_live_orders():
    """Memory flat in the stream's length: after many chunks the generator holds the fields of
    the orders still resting in its book, nothing of the ones that left it. (The reference
    loop's dicts; the compiled loop's C tables: test_streams_compiled.py.)"""
    from matching_core.streams import OrderFlow

    flow = OrderFlow(9, accounts=10, compiled=False)
    for _ in range(40):
        flow.take(2_000)
    live = flow.live_ids()
    assert len(flow._orders) == len(live) == len(flow._book)
    assert len(live) < 2_000
