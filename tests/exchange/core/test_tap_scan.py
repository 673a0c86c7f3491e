"""The Tap's scan of a line's scalar fields, one table look-up per byte and bounded by the
line's newline (``exchange/core/_lines.pyx`` ``_skip``), and its reuse of what it has found (a
kind's, a watched account's str from its tables; the ``t`` of the line before): the same
events as ``decode`` gives, for tokens of every length -- strings with quotes, backslashes
and escapes at any place, numbers of 1 to 20 characters -- and for runs of lines that share
or change their ``t``."""

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.core.events import decode, encode
from tests.exchange.core.test_lines_tap import ACCOUNTS, QUIET, WANTED, event, tapped

#: strings of 0 to 40 characters, the JSON-special ones (quote, backslash, control
#: characters: escaped in a line) often
long_text = st.text(
    st.sampled_from(['"', "\\", "\n", "\x01", "a", "b", "é", "-", ",", "]", "0"])
    | st.characters(blacklist_categories=("Cs",)),
    max_size=40,
)
numbers = st.none() | st.integers(-(1 << 63), (1 << 63) - 1) | st.integers(-999, 999)
names = st.none() | st.sampled_from([*ACCOUNTS, "carol"]) | long_text


@settings(max_examples=80, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([*WANTED, *QUIET, "Fee"]),
            long_text,  # instrument
            names,  # account
            names,  # counterparty
            numbers,  # order id
            numbers,  # price
            st.integers(0, 3),  # t: the same as the line before's, or a new one
        ),
        min_size=1,
        max_size=10,
    )
)
def test_a_scan_reads_tokens_of_any_length_as_decode_does(rows):
    lines, tap, _ = tapped()
    t = 10**16
    events = []
    for seq, (kind, instrument, account, other, order_id, price, step) in enumerate(rows, 1):
        t += step * 987_654_321
        events.append(
            event(
                seq,
                t,
                kind=kind,
                instrument=instrument,
                account=account,
                counterparty=other,
                order_id=order_id,
                price=price,
            )
        )
    for e in events:
        lines.append(e)
    got, _, _ = tap.scan(lines)
    assert got == [decode(encode(e)) for e in events if e.kind in WANTED]
    assert [type(v) for e in got for v in e] == [
        type(v) for e in events if e.kind in WANTED for v in decode(encode(e))
    ]
