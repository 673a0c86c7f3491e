"""A reader of a LineBatch's lines (``exchange.core._lines.Tap``, issue #20 point 4): the
events of wanted kinds built from the lines exactly as ``decode`` gives them, the watched
accounts the lines name, one announcement per instant, and no line taken before it is read."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.core import _lines
from exchange.core.events import TYPED_FIELDS, Event, decode, encode
from exchange.store.event_store import _CODES

WANTED = ["Fill", "OrderRejected", "OrderAccepted"]
QUIET = ["IndexPublished"]
ACCOUNTS = ["alice", "bob", 'q"uote\\d']


def event(seq: int, t: int = 0, **fields) -> Event:
    base = dict.fromkeys(Event._fields)
    base.update({"seq": seq, "t": t, "kind": "Fill", "instrument": "SPOT", "account": "alice"})
    base.update(fields)
    return Event(**base)


def tapped(**kwargs):
    """A LineBatch checked as a recorded run's, watched by a Tap; the calls it made."""
    calls: list = []
    lines = _lines.LineBatch(1, _CODES, TYPED_FIELDS, len(Event._fields))
    tap = _lines.Tap(
        kwargs.get("wanted", WANTED),
        QUIET,
        ACCOUNTS,
        lambda t: calls.append(("wanted", t)),
        kwargs.get("on_take", lambda: calls.append(("take",))),
        Event,
        decode,
        ["OrderRejected"],
    )
    lines.watch(tap)
    return lines, tap, calls


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)  # no lone surrogate
scalars = st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 63) - 1) | text
values = st.recursive(
    scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
names = st.none() | st.sampled_from([*ACCOUNTS, "carol", "ali"]) | text


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([*WANTED, *QUIET, "Fee", "InstrumentExpired"]),
            names,
            names,
            st.none() | st.integers(-(1 << 63), (1 << 63) - 1),
            values,
        ),
        min_size=1,
        max_size=12,
    )
)
def test_a_scan_builds_the_wanted_events_as_decode_gives_them_and_reports_the_accounts(rows):
    lines, tap, _ = tapped()
    events = [
        event(
            seq, seq // 3, kind=kind, account=account, counterparty=other, amount=amount, data=data
        )
        for seq, (kind, account, other, amount, data) in enumerate(rows, 1)
    ]
    for e in events:
        lines.append(e)
    got, stale, flagged = tap.scan(lines)
    expected = [decode(encode(e)) for e in events if e.kind in WANTED]
    assert got == expected
    assert all(type(e) is Event for e in got)
    assert flagged == ([i for i, e in enumerate(expected) if e.kind == "OrderRejected"] or None)
    # an event names its account, and its counterparty beside an account; an account-less
    # event of a kind not quiet may change every account
    named = set()
    every = False
    for e in events:
        if e.account is not None:
            named |= {ACCOUNTS.index(a) for a in (e.account, e.counterparty) if a in ACCOUNTS}
        elif e.kind not in QUIET:
            every = True
    assert stale == (True if every else sorted(named) if named else None)
    columns = tap.columns
    kinds = [*WANTED, *QUIET]
    assert columns["seq"].tolist() == [e.seq for e in events]
    assert columns["t"].tolist() == [e.t for e in events]
    assert columns["kind"].tolist() == [
        kinds.index(e.kind) if e.kind in kinds else -1 for e in events
    ]
    for field in ("account", "counterparty"):
        code = [
            -1
            if getattr(e, field) is None
            else ACCOUNTS.index(getattr(e, field))
            if getattr(e, field) in ACCOUNTS
            else -2
            for e in events
        ]
        assert columns[field].tolist() == code
    assert tap.scan(lines) is None  # nothing new


def test_the_first_wanted_line_of_an_instant_is_announced_once_until_reset():
    lines, tap, calls = tapped()
    lines.append(event(1, 5, kind="Fee"))  # not wanted: nothing
    lines.append(event(2, 5, kind="Fill"))
    lines.append(event(3, 5, kind="OrderAccepted"))  # the instant is announced already
    lines.append(event(4, 6, kind="IndexPublished"))
    lines.append(event(5, 6, kind="Fill"))  # a new instant
    assert calls == [("wanted", 5), ("wanted", 6)]
    tap.reset()  # the reader handled them: the next wanted line is announced again
    lines.append(event(6, 6, kind="Fill"))
    lines.append(event(7, 6, kind="Fill"))
    assert calls == [("wanted", 5), ("wanted", 6), ("wanted", 6)]


def test_take_has_the_tap_scan_the_lines_before_they_leave():
    holder: list = []
    lines, tap, _ = tapped(on_take=lambda: holder.append(tap.scan(lines)))
    for seq in range(1, 6):
        lines.append(event(seq, seq))
    blob, first, count, _ = lines.take(3)
    assert (first, count) == (1, 3)
    assert [e.seq for e in holder[0][0]] == [1, 2, 3, 4, 5]  # it read all there were
    assert tap.next_seq == 6
    lines.take(2)  # read already: not asked again
    assert len(holder) == 1


def test_take_refuses_lines_the_tap_did_not_read():
    lines, tap, _ = tapped(on_take=lambda: None)  # a reader that does not scan
    lines.append(event(1))
    with pytest.raises(RuntimeError, match="before their reader scanned them"):
        lines.take(1)


def test_a_line_batch_takes_one_tap_and_the_tap_reads_from_the_next_line():
    lines = _lines.LineBatch(1, _CODES, TYPED_FIELDS, len(Event._fields))
    lines.append(event(1))
    tap = _lines.Tap(WANTED, QUIET, ACCOUNTS, print, print, Event, decode)
    lines.watch(tap)
    assert lines.tap is tap and tap.next_seq == 2
    with pytest.raises(ValueError, match="already"):
        lines.watch(_lines.Tap(WANTED, QUIET, ACCOUNTS, print, print, Event, decode))
    lines.append(event(2))
    got, _, _ = tap.scan(lines)
    assert [e.seq for e in got] == [2]


def test_a_placeholder_for_an_event_orjson_refused_is_skipped_and_may_change_every_account():
    lines, tap, _ = tapped()
    lines.append(event(1, data={"v": 1 << 70}))  # orjson refuses it: a placeholder line
    lines.append(event(2))
    got, stale, _ = tap.scan(lines)
    assert [e.seq for e in got] == [2]
    assert stale is True
    assert tap.columns["kind"].tolist() == [-2, 0]
