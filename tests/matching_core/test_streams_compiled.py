"""The order-flow generator's compiled loop (``matching_core._streams``) against its
reference (the Python loop of ``OrderFlow.take``): the same bytes, chunk after chunk, and the
same live orders; and the stream's published bytes, which both must keep."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# (_streams imported, not skipped when missing: a tree whose extension is not built fails)
from matching_core import REPORT_DTYPE, Op, OrderBook, ReferenceBook, _streams
from matching_core.streams import OrderFlow, generate_stream


def _digest(messages: np.ndarray) -> str:
    return hashlib.sha256(messages.tobytes()).hexdigest()[:16]


def _pair(seed: int, **kwargs) -> tuple[OrderFlow, OrderFlow]:
    compiled = OrderFlow(seed, compiled=True, **kwargs)
    reference = OrderFlow(seed, compiled=False, **kwargs)
    assert compiled._player is not None and reference._player is None
    return compiled, reference


def _assert_same(compiled: OrderFlow, reference: OrderFlow, chunks: list[int]) -> np.ndarray:
    """Take ``chunks`` from both; each chunk's bytes and the live ids after it agree."""
    out = []
    for c, k in enumerate(chunks):
        a, b = compiled.take(k), reference.take(k)
        assert a.dtype == b.dtype and len(a) == len(b) == k
        if a.tobytes() != b.tobytes():
            first = int(np.flatnonzero(a != b)[0]) if k else -1
            pytest.fail(
                f"chunk {c} (of {k}): first differing message {first}: {a[first]} != {b[first]}"
            )
        assert compiled.live_ids() == reference.live_ids(), f"after chunk {c}"
        out.append(a)
    return np.concatenate(out) if out else np.zeros(0, dtype=a.dtype)


# The published bytes of the stream (computed by the reference loop before the compiled one
# existed): any change to the model, the draws or the loops shows here.
PUBLISHED = {
    "generate_stream(30_000, seed=11)": "aad6d23424704272",
    "generate_stream(20_000, seed=1, mid=20)": "6fad456bf04e0dbd",
}
PUBLISHED_CHUNKS = {
    # OrderFlow(7, accounts=8): the flow scenario's generator (its first chunks of 65 536)
    (7, 8, (65_536, 65_536, 0, 1, 4_000)): [
        "631dd9ed5f2be471",
        "73c67d9c59593fc0",
        "e3b0c44298fc1c14",
        "0ad6dfac40eca8cc",
        "a79d7803a3de73e3",
    ],
    (3, 6, (1, 999, 4_000, 0, 5_000)): [
        "2b8bb107c4c4dca1",
        "c5eec7df5b84b6d9",
        "c262c87bee7e2e5a",
        "e3b0c44298fc1c14",
        "bd69c39a3170d1f9",
    ],
}


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "reference"])
def test_published_stream_bytes(compiled):
    assert (
        _digest(generate_stream(30_000, seed=11, compiled=compiled))
        == PUBLISHED["generate_stream(30_000, seed=11)"]
    )
    assert (
        _digest(generate_stream(20_000, seed=1, mid=20, compiled=compiled))
        == PUBLISHED["generate_stream(20_000, seed=1, mid=20)"]
    )


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "reference"])
@pytest.mark.parametrize("case", list(PUBLISHED_CHUNKS), ids=["seed7", "seed3"])
def test_published_chunk_bytes(compiled, case):
    seed, accounts, chunks = case
    flow = OrderFlow(seed, accounts=accounts, compiled=compiled)
    assert [_digest(flow.take(k)) for k in chunks] == PUBLISHED_CHUNKS[case]


def test_the_default_runs_the_compiled_loop_only_on_the_cython_book():
    assert isinstance(OrderFlow(1)._player, _streams.Player)
    assert OrderFlow(1, book_factory=OrderBook)._player is not None
    assert OrderFlow(1, book_factory=ReferenceBook)._player is None
    assert OrderFlow(1, compiled=False)._player is None
    with pytest.raises(ValueError, match="compiled=True"):
        OrderFlow(1, book_factory=ReferenceBook, compiled=True)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    mid=st.one_of(st.integers(1, 40), st.integers(41, 20_000)),
    accounts=st.integers(1, 12),
    chunks=st.lists(
        st.one_of(st.sampled_from([0, 1, 2]), st.integers(0, 1_500)), min_size=1, max_size=6
    ),
)
def test_compiled_and_reference_give_the_same_chunks(seed, mid, accounts, chunks):
    """Any seed, starting mid (ticks; low ones reflect at the floor and trade a lot), number
    of accounts and chunking: the same bytes and live ids after every chunk."""
    compiled, reference = _pair(seed, mid=mid, accounts=accounts)
    _assert_same(compiled, reference, chunks)


def test_a_long_stream_through_many_fills_and_amends():
    """Enough messages that the live list, the id table and the book's fill buffer grow,
    with every path of the loop taken many times (checked on the stream itself): cancels,
    amends that reduce in place, amends that move and trade (in part or in full), adds that
    take makers out."""
    compiled, reference = _pair(5, mid=17, accounts=2)
    messages = _assert_same(compiled, reference, [7, 20_000, 1, 13_000, 0, 9_000])
    reports = np.zeros(len(messages), dtype=REPORT_DTYPE)
    fills = ReferenceBook().process(messages, reports)
    amend = messages["op"] == Op.AMEND
    assert (messages["op"] == Op.CANCEL).sum() > 10_000
    assert amend.sum() > 400
    assert (amend & (reports["cancelled"] > 0) & (reports["filled"] == 0)).sum() > 100  # reduce
    assert (amend & (reports["filled"] > 0) & (reports["resting"] > 0)).sum() >= 2  # in part
    assert (amend & (reports["filled"] > 0) & (reports["resting"] == 0)).sum() > 10  # in full
    assert len(fills) > 5_000
    # the live set is the book's resting orders, nothing more (the ids a cancel can name)
    held, entries = compiled._player.held()
    assert held == entries == len(compiled.live_ids()) == len(compiled._book)
    assert compiled.live_ids() == {int(i) for i in compiled._book.snapshot()["order_id"]}


def test_an_amend_moved_below_one_tick_is_floored():
    """A live order at 1 or 2 ticks (a low mid, a far passive offset) moved down by an amend:
    the amend's price is floored at 1 tick (seed 22 has one in its first 40 000 messages)."""
    compiled, reference = _pair(22, mid=16, accounts=2)
    messages = _assert_same(compiled, reference, [40_000])
    assert ((messages["op"] == Op.AMEND) & (messages["price"] == 1)).any()


def test_the_compiled_flow_keeps_only_live_orders():
    """Memory flat in the stream's length: after many chunks the compiled loop holds the
    orders still resting in its book, nothing of the ones that left it."""
    flow = OrderFlow(9, accounts=10, compiled=True)
    for _ in range(40):
        flow.take(2_000)
    held, entries = flow._player.held()
    assert held == entries == len(flow.live_ids()) == len(flow._book)
    assert 0 < held < 2_000
    assert flow._player.memory_bytes() < 200_000
