"""The canonical bytes written in C (``exchange.core._lines``, the store's
``exchange.store._writer``: ``encode_event``,
``encode_batch``) against their definition, orjson itself
(:func:`exchange.core.events.encode`): the same bytes for every event, and for every event orjson
refuses the same refusal (an int past 64 bits, a lone surrogate, a key that is not a str, nesting
past orjson's limit); what the C encoder does not write (a float, a subclass) goes to orjson."""

import collections
import enum

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.core import _lines as _writer  # the encoder; the store re-exports it
from exchange.core.events import ENCODE_OPTIONS, Event, encode
from exchange.sessions import session
from exchange.store import event_store as store_module
from exchange.store.event_store import EventStore

DUMPS = orjson.dumps

INT_EDGES = [
    0,
    -1,
    (1 << 63) - 1,
    1 << 63,  # past int64: orjson writes it (unsigned)
    (1 << 64) - 1,
    1 << 64,  # past uint64: refused
    -(1 << 63),
    -(1 << 63) - 1,  # below int64: refused
    1 << 100,
    -(1 << 100),
    10**18,
    -(10**19),
]


class Text(str):
    pass


class Number(int):
    pass


class Colour(enum.IntEnum):
    RED = 1


class Mapping(dict):
    pass


def outcome(write, *args):
    """What a call gives: its bytes, or its exception's type and message."""
    try:
        return "bytes", write(*args)
    except Exception as exc:  # noqa: BLE001 - the refusal itself is compared
        return "refused", type(exc), str(exc)


def c_event(event):
    return _writer.encode_event(event, DUMPS, ENCODE_OPTIONS)


def orjson_batch(events):
    """The batch blob as orjson writes it: each event's ``encode`` and a newline."""
    return b"".join([encode(e) + b"\n" for e in events])


# every character, and the ones JSON escapes (or might) more often than chance gives them
specials = st.sampled_from('\x00\x01\x08\t\n\x0b\x0c\r\x1f"\\/\x7f\x80\u2028\ud7ff\ue000\uffff')
characters = st.one_of(
    st.characters(),
    specials,
    specials,
    st.sampled_from(["\U00010000", "\U0001f600", "\U0010ffff", "é", "€"]),
)
texts = st.text(characters, max_size=24)
#: ints orjson writes (int64 and uint64)
ints = st.one_of(
    st.integers(-(1 << 63), (1 << 64) - 1),
    st.sampled_from([i for i in INT_EDGES if -(1 << 63) <= i < 1 << 64]),
    st.integers(-3, 3),
)
#: and ints of any size (past 64 bits: refused)
any_ints = st.one_of(st.integers(), st.sampled_from(INT_EDGES), ints)


def json_values(scalars, keys):
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.lists(inner, max_size=4).map(tuple),
            st.dictionaries(keys, inner, max_size=6),
        ),
        max_leaves=8,
    )


def make_events(ints, scalars, keys):
    """Events whose fields are ``scalars`` or JSON of them (``data``: a dict with ``keys``)."""
    values = json_values(scalars, keys)
    datas = st.one_of(st.none(), st.dictionaries(keys, values, max_size=8))
    fields = st.one_of(st.none(), ints, texts, values)  # as events hold them, or anything
    return st.builds(Event, ints, ints, texts, *[fields] * 9, datas)


# what the C encoder writes itself: ints within 64 bits, str, None, bool, dicts with str keys,
# lists, tuples
events = make_events(ints, st.one_of(st.none(), st.booleans(), ints, texts), texts)
# and now and then what it leaves to orjson: an int past 64 bits or a lone surrogate (refused),
# a float, a subclass of str, int or dict, an OrderedDict, a key that is not a str (refused)
foreign = st.one_of(
    st.sampled_from([i for i in INT_EDGES if not -(1 << 63) <= i < 1 << 64]),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2),
    st.floats(allow_nan=False, allow_infinity=False),
    texts.map(Text),
    st.integers(-5, 5).map(Number),
    st.just(Colour.RED),
    st.dictionaries(texts, ints, max_size=2).map(Mapping),
    st.dictionaries(texts, ints, max_size=2).map(collections.OrderedDict),
)
mixed_events = make_events(
    any_ints,
    st.one_of(st.none(), st.booleans(), any_ints, texts, foreign),
    st.one_of(texts, texts, texts, st.integers(0, 3), st.text(st.characters(categories=["Cs"]))),
)


@settings(max_examples=150, deadline=None)
@given(events)
def test_an_event_encodes_in_c_to_exactly_orjsons_bytes_or_orjsons_refusal(event):
    assert outcome(c_event, event) == outcome(encode, event)


@settings(max_examples=80, deadline=None)
@given(mixed_events)
def test_an_event_holding_what_the_c_encoder_leaves_to_orjson_gets_orjsons_outcome(event):
    assert outcome(c_event, event) == outcome(encode, event)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(events, mixed_events), max_size=4))
def test_a_batch_blob_is_orjsons_bytes_or_its_refusal(batch):
    rows = [list(e) for e in batch[::2]] + list(batch[1::2])  # lists of the fields too
    assert outcome(_writer.encode_batch, rows, DUMPS, ENCODE_OPTIONS) == outcome(orjson_batch, rows)


@pytest.mark.parametrize("value", INT_EDGES)
def test_ints_at_and_past_the_64_bit_edges_are_written_or_refused_as_orjson_does(value):
    for event in (Event(1, value, "k"), Event(1, 2, "k", data={"a": [value]})):
        assert outcome(c_event, event) == outcome(encode, event)
        assert outcome(_writer.encode_batch, [event], DUMPS, ENCODE_OPTIONS) == outcome(
            orjson_batch, [event]
        )


def test_keys_sort_by_their_utf8_bytes_as_orjson_sorts_them():
    # UTF-16 order would put the astral key (a surrogate pair, 0xD800...) before U+E000
    data = {"\U00010000": 1, "\uffff": 2, "\ue000": 3, "b": 4, "ab": 5, "a": 6, "": 7, "é": 8}
    event = Event(1, 2, "k", data=data | {"nested": {k: k for k in reversed(data)}})
    assert c_event(event) == encode(event)
    many = Event(1, 2, "k", data={f"k{i * 7919 % 1000}": i for i in range(40)})  # past 16 keys
    assert c_event(many) == encode(many)


def test_strings_are_escaped_as_orjson_escapes_them():
    text = "".join(map(chr, range(0x90))) + '"\\/\u2028\u2029\U0001f600' * 3
    for cut in range(0, 40):  # every alignment of the eight-byte scan
        event = Event(1, 2, text[cut:], data={text[cut:]: text[: cut + 9]})
        assert c_event(event) == encode(event)


@pytest.mark.parametrize("levels", [60, 70, 251, 252, 253, 254, 300])
def test_nesting_is_written_or_refused_as_orjson_does_in_an_event_and_in_a_batch(levels):
    for make in (list, lambda inner: {"k": inner}):
        inner = 1
        for _ in range(levels):
            inner = make([inner]) if make is list else make(inner)
        event = Event(1, 2, "k", data={"deep": inner})
        assert outcome(c_event, event) == outcome(encode, event)
        assert outcome(_writer.encode_batch, [event], DUMPS, ENCODE_OPTIONS) == outcome(
            orjson_batch, [event]
        )


def test_a_fallbacks_dumps_that_encodes_another_batch_does_not_garble_the_first():
    """The encoder keeps its buffer between batches; a call made while one is in use (here
    from the ``dumps`` of an event it leaves to orjson, as another thread could) gets its own."""
    inner_batch = [Event(9, 9, "inner", data={"x": "y" * 100})]
    seen = []

    def dumps(obj, default, options):
        seen.append(_writer.encode_batch(inner_batch, orjson.dumps, options))
        return orjson.dumps(obj, default, options)

    batch = [Event(1, 2, "a", data={"n": 1}), Event(2, 3, "b", data={"f": 0.5}), Event(3, 4, "c")]
    assert _writer.encode_batch(batch, dumps, ENCODE_OPTIONS) == orjson_batch(batch)
    assert seen == [orjson_batch(inner_batch)]


def test_an_event_is_encoded_as_tuple_of_it_gives_even_from_a_tuple_that_iterates_otherwise():
    class Reordered(tuple):
        def __iter__(self):
            return iter((*self[1:], self[0]))

    odd = Reordered((None, 1, 2, "k", None, None, None, None, None, None, None, None, None))
    expected = orjson.dumps(tuple(odd), option=ENCODE_OPTIONS)
    assert expected.startswith(b"[1,2,")  # tuple() of it follows its __iter__
    assert _writer.encode_event(odd, DUMPS, ENCODE_OPTIONS) == expected
    assert _writer.encode_batch([odd], DUMPS, ENCODE_OPTIONS) == expected + b"\n"


def test_other_options_are_left_to_dumps():
    event = Event(1, 2, "k", data={"b": 1, "a": 2})
    assert _writer.encode_event(event, DUMPS, 0) == orjson.dumps(tuple(event))
    assert _writer.encode_batch([event], DUMPS, 0) == orjson.dumps(tuple(event)) + b"\n"


# ------------------------------------------------------------------ recorded sessions
FLOW = {"messages": 3_000, "traders": 5}
FLOW_RECORDING = {"overrides": FLOW, "batch_size": 200, "snapshot_every": 2_000}


@pytest.fixture
def event_dumps(monkeypatch):
    """Count orjson calls that encode one event or one batch of events (the module attribute
    the store and the journaller call through)."""
    calls = []
    dumps = orjson.dumps

    def counting(obj, *args, **kwargs):
        if type(obj) is tuple and len(obj) == len(Event._fields):
            calls.append(obj[2])  # its kind
        elif type(obj) is list and obj and type(obj[0]) is tuple:
            calls.append("array")
        return dumps(obj, *args, **kwargs)

    monkeypatch.setattr(orjson, "dumps", counting)
    return calls


class OrjsonLines:
    """The run's sink of lines (``exchange.core._lines.LineBatch``) in Python: each event
    kept, and encoded by orjson itself at :meth:`take`."""

    #: lines, not their stored form: ``store_compact`` leaves them so (the recorder asks
    #: ``stored`` at each take)
    stored = False

    def __init__(self, first=1, *_checks):
        self.first, self.events = first, []

    def store_compact(self, batch_size):
        pass

    def __len__(self):
        return len(self.events)

    def append(self, event):
        self.events.append(event)

    def take(self, n):
        batch, self.events = self.events[:n], self.events[n:]
        first, self.first = self.first, self.first + len(batch)
        blob = b"".join(orjson.dumps(tuple(e), option=ENCODE_OPTIONS) + b"\n" for e in batch)
        return blob, first, len(batch), batch[-1].t


def by_orjson_only(monkeypatch):
    """Record with no C encoder: the store's and the run's lines both orjson's."""
    monkeypatch.setattr(store_module, "_writer", lambda: None)
    monkeypatch.setattr(session, "LineBatch", OrjsonLines)


def chain(path):
    with EventStore.open(path) as store:
        return store.digest(), store.last_seq


@pytest.mark.parametrize(
    "scenario, recording", [("flow", FLOW_RECORDING), ("second-derivative", {})]
)
def test_a_recorded_session_is_encoded_in_c_and_its_log_is_the_one_orjson_gives(
    tmp_path, monkeypatch, event_dumps, scenario, recording
):
    def record(name):
        path = tmp_path / f"{name}.db"
        session.run(scenario, path, journal_after=None, **recording)
        return chain(path)

    in_c = record("c")
    # no event went to orjson but the one holding floats (a scenario's configuration)
    assert set(event_dumps) <= {"SessionStarted"} and len(event_dumps) <= 1
    left_to_orjson = len(event_dumps)
    by_orjson_only(monkeypatch)
    by_orjson = record("orjson")
    assert len(event_dumps) == left_to_orjson + by_orjson[1]  # every event, by orjson
    assert in_c == by_orjson


def test_the_journaller_hand_off_is_encoded_in_c_and_gives_the_log_orjson_gives(
    tmp_path, monkeypatch, event_dumps
):
    def record(name, journal_after):
        path = tmp_path / f"{name}.db"
        session.run("flow", path, journal_after=journal_after, **FLOW_RECORDING)
        return chain(path)

    from exchange.store.journal import Journaller

    ready, sent = Journaller.ready, []

    def waiting_ready(self):  # hand over at once: every batch goes through the journaller
        self._from.poll(30)
        return ready(self)

    send = Journaller._send

    def counting_send(self, message):
        # a message of batches placed in the ring tells of several
        sent.extend([message[0]] * (len(message[1]) if message[0] == "ring" else 1))
        return send(self, message)

    monkeypatch.setattr(Journaller, "ready", waiting_ready)
    monkeypatch.setattr(Journaller, "_send", counting_send)
    journalled = record("journal", 0)
    assert sent.count("batch") + sent.count("ring") >= 10
    # no event went to orjson but the one holding floats (a scenario's configuration): the
    # blobs the run sent were written in C
    assert set(event_dumps) <= {"SessionStarted"} and len(event_dumps) <= 1
    by_orjson_only(monkeypatch)
    assert journalled == record("orjson", None)
