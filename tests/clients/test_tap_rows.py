"""``Tap.scan_rows``, the compiled bot runner's scan (issue #20): the same scan as
``Tap.scan`` -- the same stale accounts, flagged places and columns -- with the lines whose
fields the runner's publish does not read as thin rows (plain tuples: the first four or five
fields, then None) instead of ``Event`` objects, and every other wanted line the Event
``scan`` builds.

Two taps read the same lines, one with ``scan`` and one with ``scan_rows`` and random masks;
each row must be the Event, or the thin row of exactly the fields the masks keep. A kept field
the C builder leaves to ``decode`` (an escaped string) gives the Event.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.core import _lines
from exchange.core.events import TYPED_FIELDS, Event, decode
from exchange.store.event_store import _CODES

WANTED = ["Fill", "OrderAccepted", "OrderRejected", "OrderRested"]
QUIET = ["IndexPublished", "MarkPrice"]
ACCOUNTS = ["alice", "bob", 'q"uote\\d']
FIELDS = len(Event._fields)


def tapped():
    lines = _lines.LineBatch(1, _CODES, TYPED_FIELDS, FIELDS)
    tap = _lines.Tap(
        WANTED, QUIET, ACCOUNTS, lambda t: None, lambda: None, Event, decode, ["OrderRejected"]
    )
    lines.watch(tap)
    return lines, tap


def plain(value):
    """Whether a kept field is one the C builder reads (a str JSON writes without escapes)."""
    return not isinstance(value, str) or not any(c in '"\\' or ord(c) < 0x20 for c in value)


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
names = st.none() | st.sampled_from([*ACCOUNTS, "carol"]) | text
row = st.tuples(
    st.sampled_from([*WANTED, *QUIET, "Fee", "InstrumentExpired"]),
    st.sampled_from(["SPOT", "PERP"]) | text,
    names,
    names,
    st.none() | st.integers(-(1 << 40), 1 << 40),
    st.none() | st.dictionaries(st.sampled_from(["reason", "rate"]), text, max_size=2),
)


def check(rows, thin_kinds, thin_accounts):
    events = [
        Event(seq, seq // 3, kind, instrument, account, seq, "buy", price, 2, 7, other, 9, data)
        for seq, (kind, instrument, account, other, price, data) in enumerate(rows, 1)
    ]
    a, tap_a = tapped()
    b, tap_b = tapped()
    assert tap_b.kinds == WANTED + QUIET
    for e in events:
        a.append(e)
        b.append(e)
    want = tap_a.scan(a)
    got = tap_b.scan_rows(b, thin_kinds, thin_accounts)
    assert got[1:] == want[1:]  # stale, flagged
    assert {k: v.tolist() for k, v in tap_b.columns.items()} == {
        k: v.tolist() for k, v in tap_a.columns.items()
    }
    assert len(got[0]) == len(want[0])
    thinned = 0
    for r, e in zip(got[0], want[0], strict=True):
        k = WANTED.index(e.kind)
        keep = 0
        if thin_kinds[k] == 1:
            keep = 4
        elif (
            thin_kinds[k] == 2
            and e.account in ACCOUNTS
            and thin_accounts[ACCOUNTS.index(e.account)]
        ):
            keep = 5
        if keep and all(plain(v) for v in e[:keep]):
            assert type(r) is tuple and r == tuple(e[:keep]) + (None,) * (FIELDS - keep)
            thinned += 1
        else:
            assert type(r) is Event and r == e
    return thinned


masks = st.tuples(
    st.binary(min_size=len(WANTED + QUIET), max_size=8).map(lambda b: bytes(x % 3 for x in b)),
    st.binary(min_size=len(ACCOUNTS), max_size=4).map(lambda b: bytes(x % 2 for x in b)),
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(rows=st.lists(row, min_size=1, max_size=12), masks=masks)
def test_scan_rows_gives_scans_events_or_their_thin_rows(rows, masks):
    check(rows, *masks)


def test_thin_rows_keep_four_or_five_fields_and_the_rest_is_the_event():
    rows = [
        ("OrderRested", "SPOT", "alice", None, 5, None),
        ("OrderAccepted", "SPOT", "alice", None, 5, {"reason": "x"}),
        ("OrderAccepted", "SPOT", "bob", None, 5, None),
        ("OrderAccepted", "SPOT", "carol", None, 5, None),
        ("Fill", "SPOT", "alice", "bob", 5, None),
        ("OrderRested", 'S"P', "alice", None, 5, None),  # an escaped instrument: the Event
        ("OrderAccepted", "SPOT", 'q"uote\\d', None, 5, None),  # an escaped account
    ]
    kinds = bytes([0, 2, 2, 1, 0, 0])
    assert check(rows, kinds, bytes([1, 0, 1])) == 2
    assert check(rows, bytes(6), bytes(3)) == 0


def test_scan_rows_needs_a_byte_per_kind_and_per_account():
    lines, tap = tapped()
    with pytest.raises(ValueError):
        tap.scan_rows(lines, bytes(5), bytes(3))
    with pytest.raises(ValueError):
        tap.scan_rows(lines, bytes(6), bytes(2))
    assert tap.scan_rows(lines, bytes(6), bytes(3)) is None
