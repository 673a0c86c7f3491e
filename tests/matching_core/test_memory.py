"""Memory: pools grow on demand, and a million resting orders fit well under 200 MB."""

import tracemalloc

import numpy as np

from matching_core import MESSAGE_DTYPE, OrderBook

MB = 1 << 20


def _resting_orders(n):
    """n non-crossing limit orders spread over 2,000 price levels per side."""
    m = np.zeros(n, dtype=MESSAGE_DTYPE)
    m["order_id"] = np.arange(n)
    m["account"] = np.arange(n) % 1_000
    m["side"] = np.arange(n) % 2
    m["price"] = np.where(
        m["side"] == 0, 10_000 - np.arange(n) % 2_000, 10_001 + np.arange(n) % 2_000
    )
    m["qty"] = 1 + np.arange(n) % 7
    return m


def test_a_million_resting_orders_stay_under_200_mb():
    messages = _resting_orders(1_000_000)
    tracemalloc.start()  # the pools use PyMem_Raw* and numpy buffers: both are traced
    try:
        book = OrderBook()
        fills = book.process(messages)
        current, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(fills) == 0 and len(book) == 1_000_000
    assert book.memory_bytes() < 200 * MB
    assert current < 200 * MB
    assert book.memory_bytes() <= current  # the book's own accounting is not an undercount


def test_pools_start_small_and_grow():
    book = OrderBook()
    empty = book.memory_bytes()
    assert empty < 1 * MB
    book.process(_resting_orders(50_000))
    assert book.memory_bytes() > empty
    assert len(book) == 50_000
    assert book.order_qty(49_999) == 1 + 49_999 % 7
