"""The sink of lines (``exchange.core._lines.LineBatch``): a recorded run's events kept as their
canonical lines, handed over a batch at a time as the blob the store keeps, and refused where
the store refuses them -- at the batch that holds the event, with the store's reason."""

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.core import _lines
from exchange.core.events import TYPED_FIELDS, Event, decode, encode
from exchange.store.compact import compact, expand
from exchange.store.event_store import _CODES, EventStore


def lines_batch() -> _lines.LineBatch:
    """A LineBatch checking as a recorded run's does (the store's column codes)."""
    return _lines.LineBatch(1, _CODES, TYPED_FIELDS, len(Event._fields))


def event(seq: int, t: int = 0, **fields) -> Event:
    base = dict.fromkeys(Event._fields)
    base.update({"seq": seq, "t": t, "kind": "Fill", "instrument": "SPOT", "account": "alice"})
    base.update(fields)
    return Event(**base)


values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 63) - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 1 << 62), values), min_size=1, max_size=20), st.data())
def test_taken_lines_are_the_events_encoded_and_the_rest_stays_for_the_next_take(rows, data):
    events = [event(seq, t, data={"v": value}) for seq, (t, value) in enumerate(rows, 1)]
    lines = lines_batch()
    for e in events:
        lines.append(e)
    assert len(lines) == len(events)
    n = data.draw(st.integers(1, len(events)))
    blob, first, count, last_t = lines.take(n)
    assert (first, count, last_t) == (1, n, events[n - 1].t)
    assert blob == b"".join(encode(e) + b"\n" for e in events[:n])
    assert (len(lines), lines.first) == (len(events) - n, n + 1)
    if len(lines):  # the rest, then, as its own batch
        blob, first, count, last_t = lines.take(len(lines))
        assert blob == b"".join(encode(e) + b"\n" for e in events[n:])
        assert (first, count, last_t) == (n + 1, len(events) - n, events[-1].t)


def test_an_event_the_c_encoder_leaves_to_orjson_gets_orjson_s_bytes():
    lines = lines_batch()
    odd = event(1, data={"price": 1.5, "name": "é\u2028\x00"})  # a float: orjson's
    lines.append(odd)
    assert lines.take(1)[0] == orjson.dumps(tuple(odd), option=orjson.OPT_SORT_KEYS) + b"\n"


def store_refusal(events: list, first: int) -> str:
    """What the store says of this batch (:meth:`EventStore.encode_batch`), past its prefix."""
    with pytest.raises(ValueError) as refused:
        EventStore.encode_batch(events, first, 1)
    return str(refused.value).split(" not stored: ", 1)[1]


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(event(3, price=10.0), id="float-price"),
        pytest.param(event(3, qty=1 << 63), id="qty-past-int64"),
        pytest.param(event(3, account=5), id="account-not-text"),
        pytest.param(event(3)._replace(kind=None), id="kind-null"),
        pytest.param(event(3, data={"x": 1 << 64}), id="orjson-refuses-a-value"),
    ],
)
def test_a_refused_event_raises_at_the_take_of_its_batch_with_the_store_s_reason(bad):
    lines = lines_batch()
    batch = [event(1), event(2), bad, event(4)]
    for e in batch:
        lines.append(e)  # never raises: the engine is in the middle of a command
    blob, first, count, _ = lines.take(2)  # the batch before it is stored as usual
    assert blob == encode(batch[0]) + b"\n" + encode(batch[1]) + b"\n"
    with pytest.raises(_lines.BadLine) as refused:
        lines.take(2)
    assert (refused.value.seq, refused.value.position) == (3, 0)
    assert refused.value.reason == store_refusal(batch[2:], 3)


def test_a_seq_that_does_not_follow_is_refused_with_the_seq_it_holds():
    lines = lines_batch()
    lines.append(event(1))
    lines.append(event(5))
    with pytest.raises(_lines.BadLine) as refused:
        lines.take(2)
    assert (refused.value.seq, refused.value.position, refused.value.reason) == (2, 1, None)
    assert refused.value.got == 5


def test_the_check_s_refusal_comes_before_orjson_s_as_the_store_reports_them():
    lines = lines_batch()
    batch = [event(1, data={"x": 1 << 64}), event(2, price="ten")]
    for e in batch:
        lines.append(e)
    with pytest.raises(_lines.BadLine) as refused:
        lines.take(2)
    assert refused.value.seq == 2
    assert refused.value.reason == store_refusal(batch, 1)


def test_taking_from_an_empty_batch_is_an_error():
    with pytest.raises(ValueError, match="no lines"):
        lines_batch().take(1)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 1 << 62), values), min_size=1, max_size=12), st.data())
def test_take_into_writes_the_blob_take_gives_at_the_offset_and_leaves_the_rest(rows, data):
    events = [event(seq, t, data={"v": value}) for seq, (t, value) in enumerate(rows, 1)]
    taken, placed = lines_batch(), lines_batch()
    for e in events:
        taken.append(e)
        placed.append(e)
    n = data.draw(st.integers(1, len(events)))
    blob, first, count, last_t = taken.take(n)
    size = placed.size_of(n)
    offset = data.draw(st.integers(0, 64))
    target = bytearray(b"\xee" * (offset + size + 8))
    assert placed.take_into(n, target, offset) == (first, count, last_t, len(blob))
    assert bytes(target[offset : offset + size]) == blob
    assert target[:offset] == b"\xee" * offset and target[offset + size :] == b"\xee" * 8
    assert (len(placed), placed.first, placed.nbytes) == (len(taken), taken.first, taken.nbytes)


def test_take_into_a_place_too_small_takes_nothing():
    lines = lines_batch()
    lines.append(event(1))
    size = lines.size_of(1)
    with pytest.raises(ValueError, match="do not fit"):
        lines.take_into(1, bytearray(size + 4), 5)
    with pytest.raises(ValueError, match="do not fit"):
        lines.take_into(1, bytearray(size), -1)
    assert (len(lines), lines.first) == (1, 1)
    assert lines.size_of(5) == size and lines_batch().size_of(1) == 0


def test_take_into_refuses_a_batch_with_a_bad_event_as_take_does():
    lines = lines_batch()
    for e in (event(1), event(2, price=10.0)):
        lines.append(e)
    with pytest.raises(_lines.BadLine) as refused:
        lines.take_into(2, bytearray(lines.size_of(2)), 0)
    assert (refused.value.seq, refused.value.position) == (2, 1)
    assert len(lines) == 0


# ---------------------------------------------------------------- the stored form (decision 106)
def stored_batch(batch_size: int) -> _lines.LineBatch:
    lines = lines_batch()
    lines.store_compact(batch_size)
    return lines


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.lists(st.tuples(st.integers(0, 1 << 62), values), min_size=1, max_size=30),
    st.integers(1, 8),
)
def test_lines_kept_in_stored_form_are_taken_as_compact_of_each_batch_s_lines(rows, size):
    events = [event(seq, t, data={"v": value}) for seq, (t, value) in enumerate(rows, 1)]
    plain, stored = lines_batch(), stored_batch(size)
    for e in events:
        plain.append(e)
        stored.append(e)
    assert stored.stored and not plain.stored
    while len(plain):
        n = min(size, len(plain))  # whole batches, the last one short
        blob, first, count, last_t = plain.take(n)
        assert stored.size_of(n) == len(compact(blob))
        assert stored.take(n) == (compact(blob), first, count, last_t)
    assert len(stored) == 0 and stored.nbytes == 0


def test_a_batch_taken_short_ends_there_and_the_next_line_starts_another():
    lines = stored_batch(3)
    for seq in (1, 2):
        lines.append(event(seq))
    with pytest.raises(ValueError, match="a batch at a time"):
        lines.take(1)  # a token stream is taken whole
    short = lines.take(2)[0]
    for seq in (3, 4, 5, 6):
        lines.append(event(seq))
    assert expand(short) == b"".join(encode(event(s)) + b"\n" for s in (1, 2))
    following = lines.take(3)[0]  # seqs 3-5: a batch of its own, from seq 3
    assert following == compact(b"".join(encode(event(s)) + b"\n" for s in (3, 4, 5)))
    assert lines.take(1)[0] == compact(encode(event(6)) + b"\n")


def test_a_refused_event_raises_at_the_take_of_its_stored_batch_as_in_lines():
    lines = stored_batch(2)
    for e in (event(1), event(2), event(3, price=10.0), event(4)):
        lines.append(e)
    assert lines.take(2)[0] == compact(b"".join(encode(event(s)) + b"\n" for s in (1, 2)))
    with pytest.raises(_lines.BadLine) as refused:
        lines.take(2)
    assert (refused.value.seq, refused.value.position) == (3, 0)


def test_a_tap_turns_lines_kept_in_stored_form_back_to_lines():
    lines = stored_batch(2)
    for seq in (1, 2, 3):
        lines.append(event(seq))
    tap = _lines.Tap(["Fill"], [], ["alice"], print, lambda: tap.scan(lines), Event, decode)
    lines.watch(tap)
    assert not lines.stored and len(lines) == 3
    lines.append(event(4))
    assert [e.seq for e in tap.scan(lines)[0]] == [4]  # (the tap reads from the next line)
    blob = lines.take(4)[0]  # lines again: any number at a time
    assert blob == b"".join(encode(event(s)) + b"\n" for s in (1, 2, 3, 4))


def test_the_stored_form_starts_with_no_line_held_and_no_tap():
    lines = lines_batch()
    lines.append(event(1))
    with pytest.raises(ValueError, match="no line held"):
        lines.store_compact(2)
    with pytest.raises(ValueError, match="batch_size"):
        lines_batch().store_compact(0)
    tapped = lines_batch()
    tapped.watch(_lines.Tap(["Fill"], [], ["alice"], print, lambda: None, Event, decode))
    with pytest.raises(ValueError, match="no tap"):
        tapped.store_compact(2)
