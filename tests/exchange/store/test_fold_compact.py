"""The fold reads the stored (compact) form directly: ``Kernel.parse_compact`` against its
reference, ``Kernel.parse`` of the expanded blob.

``parse_compact(stored, ...)`` must give what ``parse(expand(stored), ...)`` gives, record for
record -- the typed fields, the null bits, the cached strings, the rows left to Python --
wherever it gives a batch, and give one wherever ``parse`` does on a stored form ``compact``
wrote; on a stored form ``expand`` refuses it gives none (the caller then expands: the old
refusal). The folds fed from the stored form (``CompiledFold.apply_stored``, a replay's
``fold_store``) hold the same state as from the blob after every batch, and the journal,
which now compacts each blob once and folds that form, stores exactly the bytes it stored.
"""

from __future__ import annotations

import sqlite3

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.core.events import TYPED_FIELDS
from exchange.sessions import session
from exchange.sessions.scenarios import scenario_names
from exchange.store import _fold
from exchange.store import compact as compact_module
from exchange.store import event_store as event_store_module
from exchange.store.compact import FORMAT_RAW, FORMAT_TOKENS, CompactError, compact, expand
from exchange.store.event_store import DamagedLogError, EventStore, _typed_line
from exchange.store.fold import CompiledFold, Fold, _rule_names
from exchange.store.journal import Journal, _ThreadedJournal

from .test_fold_compiled import assert_same

N_TYPED = len(TYPED_FIELDS)
#: Scenario sizes that keep each log small (as the engines' differential tests do).
SHORT = {
    "flow": {"messages": 3_000},
    "guarantor-spiral": {"days": 20},
    "guarantor-spiral-bilateral": {"days": 20},
    "h100-depreciation": {"days": 20},
}
#: Whatever a reader raises where the callers fall back (``EventStore._decode``'s list).
FALLBACK_ERRORS = (orjson.JSONDecodeError, TypeError, ValueError, IndexError)


def kernel() -> _fold.Kernel:
    return _fold.Kernel(_rule_names(CompiledFold()))


def outcome(read, data: bytes, first: int, count: int):
    """What a reader made of ``data``: ``("batch", rows, slow flags)``, ``("none",)`` or
    ``("error",)`` (one the callers fall back on)."""
    try:
        batch = read(data, first, count, N_TYPED, _typed_line)
    except FALLBACK_ERRORS:
        return ("error",)
    if batch is None:
        return ("none",)
    n = len(batch)
    return ("batch", [batch.row(i) for i in range(n)], [batch.slow(i) for i in range(n)])


def typed_shape(rows):
    """Rows with each value's type visible (``1 == True`` would hide a divergence)."""
    return [[(type(v).__name__, v) for v in row] for row in rows]


def assert_same_outcome(stored: bytes, first: int, count: int) -> None:
    """``parse_compact(stored)`` is ``parse(expand(stored))`` (given that it expands)."""
    k = kernel()
    expected = outcome(k.parse, expand(stored), first, count)
    found = outcome(k.parse_compact, stored, first, count)
    assert found[0] == expected[0]
    if found[0] == "batch":
        assert typed_shape(found[1]) == typed_shape(expected[1])
        assert found[2] == expected[2]


def stored_batches(path):
    """``(first, last, stored)`` of each batch of the log at ``path``, as the file holds it."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT first_seq, last_seq, events FROM batches ORDER BY batch"
        ).fetchall()
    finally:
        conn.close()


def test_the_reader_holds_the_stored_forms_nesting_limit():
    assert _fold.COMPACT_MAX_DEPTH == compact_module.MAX_DEPTH


# ------------------------------------------------------------------ every built-in scenario
@pytest.mark.parametrize("scenario", scenario_names())
def test_every_built_in_scenarios_batches_read_and_fold_from_the_stored_form_as_from_the_blob(
    tmp_path, scenario
):
    path = tmp_path / "log.db"
    session.run(scenario, path, seed=7, overrides=SHORT.get(scenario))
    batches = stored_batches(path)
    assert len(batches) >= 2
    k = kernel()
    from_blob, from_stored, reference = CompiledFold(), CompiledFold(), Fold()
    for first, last, stored in batches:
        count = last - first + 1
        assert stored[0] == FORMAT_TOKENS
        blob = expand(stored)
        parsed = k.parse(blob, first, count, N_TYPED, _typed_line)
        for n in (count, -1):  # a checked read knows the count, an unchecked one not
            read = k.parse_compact(stored, first, n, N_TYPED, _typed_line)
            assert read is not None and len(read) == len(parsed) == count
            for i in range(count):
                row = read.row(i)
                assert typed_shape([row]) == typed_shape([parsed.row(i)])
                assert read.slow(i) == parsed.slow(i)
                # the kernel's cached strings, not copies (the rules compare them by identity)
                assert all(
                    a is b for a, b in zip(row, parsed.row(i), strict=True) if type(a) is str
                )
        from_blob.apply_blob(blob, first, count)
        from_stored.apply_stored(stored, first, count)
        reference.apply_stored(stored, first, count)
        assert from_stored.seq == last
        assert from_stored.to_json() == from_blob.to_json() == reference.to_json()
        assert from_stored.state_hash() == from_blob.state_hash()
    assert_same(from_stored, reference)


def test_a_replay_reads_each_batchs_stored_form_without_expanding_it(tmp_path, monkeypatch):
    path = tmp_path / "flow.db"
    session.run("flow", path, seed=3, overrides={"messages": 2_000}, batch_size=500)
    expanded = []
    real_expand = compact_module.expand

    def counting(data):
        expanded.append(len(data))
        return real_expand(data)

    monkeypatch.setattr(event_store_module, "expand", counting)
    with EventStore.open(path) as store:
        last = store.last_seq
        folded = CompiledFold().fold_store(store, 1, last)
    assert expanded == []  # every batch read from its tokens
    monkeypatch.undo()
    with EventStore.open(path) as store:
        assert_same(folded, Fold().fold_store(store, 1, last))
    with EventStore.open(path, checked=False) as store:  # unchecked: any number of events
        assert_same(CompiledFold().fold_store(store, 1, last), folded)
        middle = CompiledFold().fold_store(store, 1, 1234)
    assert middle.seq == 1234


@pytest.mark.parametrize("checked", [True, False])
def test_a_stored_form_that_does_not_expand_is_still_the_damaged_log_it_was(tmp_path, checked):
    path = tmp_path / "flow.db"
    session.run("flow", path, seed=3, overrides={"messages": 1_000}, batch_size=500)
    conn = sqlite3.connect(path)
    (stored,) = conn.execute("SELECT events FROM batches WHERE batch = 2").fetchone()
    damaged = stored[:-1]  # the last line unfinished: expand refuses it
    with pytest.raises(CompactError):
        expand(damaged)
    assert kernel().parse_compact(damaged, 1, -1, N_TYPED, _typed_line) is None
    conn.execute("UPDATE batches SET events = ? WHERE batch = 2", (damaged,))
    conn.commit()
    conn.close()
    with EventStore.open(path, checked=checked) as store:
        with pytest.raises(DamagedLogError) as without:
            for _row in store.rows(1, None):
                pass
        with pytest.raises(DamagedLogError) as replayed:
            CompiledFold().fold_store(store, 1, store.last_seq)
    assert str(replayed.value) == str(without.value)
    assert "do not expand" in str(replayed.value)


# ------------------------------------------------------------------ generated blobs
_TEXT = st.text(alphabet=st.sampled_from('ab,[]{}":\\\n\t\u00e9\u2603 nul-0'), max_size=5)
_INT = st.integers(-(2**63), 2**64 - 1) | st.sampled_from(
    [0, 1, 79, 80, 10**17, 10**18 - 1, 10**18, -(10**18) + 1, -(10**18), -(2**63), 2**63 - 1]
)
_FIELD = st.none() | _TEXT | _INT | st.booleans() | st.sampled_from([1.5, -0.0, [], {"a": 1}])
#: an event's usual field, as the C reader takes it
_PLAIN = (
    st.none()
    | st.sampled_from(["trader-01", "H100-SPOT", "Fill", "buy"])
    | st.integers(-(10**6), 10**6)
)
#: many distinct names: a batch's string table past index 127 (the 0x0B code)
_NAME = st.integers(0, 400).map(lambda i: f"acct-{i}")


@st.composite
def event_lines(draw, seq):
    """One line of a batch: an event's shape (its seq and t, its kind, 9 typed fields, a
    payload), now and then with a field the C reader leaves to Python, a line the tokenizer
    keeps raw, or not an event at all."""
    shape = draw(st.sampled_from(["event", "event", "event", "odd", "raw", "other"]))
    t = draw(st.integers(0, 10**12) | st.sampled_from([-1, 2**63 - 1]))
    if shape == "other":
        value = draw(st.lists(_FIELD, max_size=14) | _FIELD)
        return orjson.dumps(value)
    fields = [seq, t, draw(st.sampled_from(["Fill", "Fee", "OrderRested", "x\\u00e9"]))]
    typed = _FIELD if shape == "odd" else (_PLAIN | _NAME)
    fields += [draw(typed) for _ in range(9)]
    if shape == "odd" and draw(st.booleans()):
        fields[draw(st.integers(0, 2))] = draw(_FIELD)
    fields.append(draw(st.none() | st.dictionaries(_TEXT | _NAME, _FIELD, max_size=3)))
    line = orjson.dumps(fields)
    if shape == "raw":  # whitespace, or bytes after the value: a raw line
        line = draw(st.sampled_from([line.replace(b",", b", ", 1), line + b" ", line[:-1]]))
    return line


@st.composite
def blobs(draw):
    first = draw(st.integers(1, 5))
    n = draw(st.integers(0, 12))
    seqs = [first + i for i in range(n)]
    if n and draw(st.integers(0, 9)) == 0:  # a seq out of order
        seqs[draw(st.integers(0, n - 1))] += draw(st.sampled_from([-1, 1, 7]))
    lines = [draw(event_lines(seq)) for seq in seqs]
    blob = b"".join(line + b"\n" for line in lines)
    if draw(st.integers(0, 9)) == 0:
        blob = blob[:-1]  # no newline at the end: a FORMAT_RAW batch
    count = draw(st.sampled_from([n, -1, n, max(n - 1, 0), n + 1]))
    return blob, first, count


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blobs())
def test_parse_compact_reads_any_blobs_stored_form_as_parse_reads_the_blob(case):
    blob, first, count = case
    stored = compact(blob)
    assert_same_outcome(stored, first, count)


def test_the_generated_blobs_reach_every_kind_of_line():
    """The cases the property above must meet, made sure of (a generator that drifted
    would pass it vacuously)."""
    names = [f"acct-{i}" for i in range(200)]
    plain = [
        [i + 1, 5, "Fill", None, names[i], i, "buy", 10, 1, -10, names[-i], 3, None]
        for i in range(200)
    ]
    head = [5, "Fee", "a", "a", None, None, None, None, 7, None, None]  # fields 1..11
    # one field each that the JSON reader leaves to Python (its line a row), and the edges
    # it takes (18 digits)
    odd = {
        3: "x\\u00e9",  # an escape
        7: 10**18,  # 19 digits
        9: -(10**18),
        5: True,
        8: -0.0,
        10: 1.5,
        6: [],
    }
    lines = [orjson.dumps(e) for e in plain]
    for seq, (field, value) in enumerate(odd.items(), 201):
        fields = [seq, *head, {"k": "\\"}]
        fields[field] = value
        lines.append(orjson.dumps(fields))
    edge = [208, *head, None]
    edge[5], edge[7], edge[9] = 10**18 - 1, -(10**18) + 1, 0  # taken in C
    lines.append(orjson.dumps(edge))
    lines += [b"[209, 9]", b'[210,10,"Fee"]', orjson.dumps([211, *head])]  # raw; 3 and 12 fields
    blob = b"".join(line + b"\n" for line in lines)
    stored = compact(blob)
    assert stored[0] == FORMAT_TOKENS and 0x0B in stored and 0x0E in stored
    k = kernel()
    read = k.parse_compact(stored, 1, len(lines), N_TYPED, _typed_line)
    parsed = k.parse(blob, 1, len(lines), N_TYPED, _typed_line)
    slow = [False] * 200 + [True] * len(odd) + [False] + [True] * 3
    assert [read.slow(i) for i in range(len(read))] == slow
    assert [parsed.slow(i) for i in range(len(parsed))] == slow
    rows = [read.row(i) for i in range(len(read))]
    assert typed_shape(rows) == typed_shape([parsed.row(i) for i in range(len(parsed))])
    assert_same_outcome(compact(b"[1,2"), 1, 1)  # a FORMAT_RAW batch
    assert compact(b"[1,2")[0] == FORMAT_RAW


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blobs(), st.data())
def test_a_damaged_stored_form_is_never_read_as_another_batch(case, data):
    """Bytes flipped or cut off: the reader gives a batch only where ``expand`` takes the
    bytes and ``parse`` gives that batch of them; else none, or an error its callers fall
    back on (then ``expand`` refuses the bytes as it did)."""
    blob, first, count = case
    stored = bytearray(compact(blob))
    if data.draw(st.booleans()) and len(stored) > 1:
        del stored[data.draw(st.integers(1, len(stored) - 1)) :]
    for _ in range(data.draw(st.integers(1, 3))):
        stored[data.draw(st.integers(0, len(stored) - 1))] = data.draw(st.integers(0, 255))
    stored = bytes(stored)
    found = outcome(kernel().parse_compact, stored, first, count)
    try:
        blob = expand(stored)
    except CompactError:
        assert found[0] != "batch"
        return
    if found[0] == "batch":
        expected = outcome(kernel().parse, blob, first, count)
        assert expected[0] == "batch"
        assert typed_shape(found[1]) == typed_shape(expected[1]) and found[2] == expected[2]


@pytest.mark.parametrize(
    "payload",
    [
        None,
        "a reason",
        7,
        10**17,
        True,
        {},
        {"reason": "user"},
        {"command": {"account": "trader-01", "qty": 5, "post_only": False, "x": None}},
        {"a": {}, "b": {"c": {}}},
        {"deep": {"d": {"d": {"d": {"d": {"d": {"d": {"d": {"d": {"d": 1}}}}}}}}}},
        [1, 2],
        {"list": [1, {"a": 2}]},
        {"number": 1.5},
        {"big": 2**64 - 1},
        -0.0,
    ],
)
@pytest.mark.parametrize("extra", [False, True])
def test_an_events_payload_of_any_shape_is_read_from_the_stored_form_as_from_the_blob(
    payload, extra
):
    """Element 12 of an event's line (its payload) is read by a short walk for the shapes
    events have -- a scalar, or objects of scalars and objects -- and by the general walk
    from there for the rest (an array, a raw number, nesting past 8, a 14th element): both
    as ``parse`` reads the blob (decision 113)."""
    fields = [1, 10**12, "Fill", "H100-SPOT", "trader-01", 3, "buy", 100, 5, -500, None, None]
    lines = [fields + [payload] + ([{"more": 1}] if extra else []) for _ in range(2)]
    lines[1][0] = 2
    blob = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    assert_same_outcome(compact(blob), 1, 2)


def test_malformed_token_forms_are_refused_within_their_bytes():
    """Each fault ``expand`` refuses (the stored form's specification), found by the reader
    too, none read past the end."""
    k = kernel()
    head = b"\x01\x01\x11\x12\x0a\x01K" + b"\x05" * 9 + b"\x05"  # [1,2,"K",null x9,null
    assert k.parse_compact(head + b"\x02\x00", 1, 1, N_TYPED, _typed_line) is not None
    faults = [
        head,  # ends inside a line
        head + b"\x02",  # no end code
        head + b"\x02\x02\x00",  # unbalanced close
        head + b"\x04\x00",  # the wrong close
        head + b"\x0f\x02\x00",  # an unused code
        head + b"\x60\x02\x00",
        head + b"\x0e\x00\x02\x00",  # a raw line inside a line
        head + b"\x03\x11\x04\x02\x00",  # a key that is not a string
        # an event's payload (element 12: read by the short walk, decision 113)
        head[:-1] + b"\x03\x11\x05\x04\x02\x00",  # a key that is not a string
        head[:-1] + b"\x03\x0a\x01K\x04\x02\x00",  # a key without its value
        head[:-1] + b"\x03\x0a\x01K\x05\x02\x00",  # an object not closed
        head[:-1] + b"\x03\x0a\x01K\x03\x04",  # an object closed, its parent not: the end
        head[:-1] + b"\x03\x04\x04\x02\x00",  # one close too many
        head[:-1] + b"\x03\x80\x11\x02\x00",  # its end missing before the array's
        head + b"\x0c\x02\x00",  # a seq code out of place
        head + b"\x81\x02\x00",  # a string index past the table
        head + b"\x0b\x05\x02\x00",
        head + b"\x0a\x02\x5c\x71\x02\x00",  # an escape JSON does not have
        head + b"\x0a\x01\x22\x02\x00",  # a quote in a string
        head + b"\x0a\x01\x1f\x02\x00",  # a control byte
        head + b"\x0a\x05\x02\x00",  # a string past the end
        head + b"\x08\x80\x00\x02\x00",  # a varint not minimal
        head + b"\x08" + b"\xff" * 9 + b"\x02\x02\x00",  # past 64 bits
        head + b"\x08\xff",  # truncated
        head + b"\x09\x011\x02\x00",  # a raw number the 0x08 code holds
        head + b"\x09\x021.\x02\x00",  # not a JSON number
        head + b"\x02\x00\x05",  # a line unfinished at the end
        head + b"\x02\x11\x00",  # a second value
        b"\x01\x0e\x01\n",  # a raw line holding a newline
        b"\x01\x0e\x05ab",  # a raw line past the end
        b"\x01",  # no line
        b"\x02\x00",  # an unknown format
        b"",
        b"\x01"
        + b"\x01" * (compact_module.MAX_DEPTH + 1)
        + b"\x02" * (compact_module.MAX_DEPTH + 1)
        + b"\x00",
    ]
    for stored in faults:
        with pytest.raises(CompactError):
            expand(stored)
        assert k.parse_compact(stored, 1, -1, N_TYPED, _typed_line) is None, stored


# ------------------------------------------------------------------ the journal
def _blobs_of(path):
    """``(blob, first, count)`` of each batch of the log at ``path``."""
    return [(expand(s), first, last - first + 1) for first, last, s in stored_batches(path)]


def _stored_rows(path, tables=("batches", "snapshots", "events")):
    """Every row of the batches, their snapshots and projection (``events``) at ``path``."""
    conn = sqlite3.connect(path)
    try:
        return [
            conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()  # noqa: S608
            for table in tables
        ]
    finally:
        conn.close()


def _new_store(path):
    return EventStore.create(path, scenario="unit", seed=1, config={}, code_version="test")


@pytest.mark.parametrize("fold", [CompiledFold, Fold])
def test_the_journal_stores_exactly_the_rows_append_blob_stores(tmp_path, fold):
    """In line and in the journaller (its committing thread), the batch compacted once by
    the journal is the row ``append_blob`` of the blob writes: the same stored bytes, digest
    and chain, the same snapshots, the same projection rows where the file has one."""
    source = tmp_path / "source.db"
    session.run("flow", source, seed=5, overrides={"messages": 1_500}, batch_size=400)
    batches = _blobs_of(source)
    assert len(batches) >= 4
    every = batches[1][1] + batches[1][2] - 1  # a snapshot at the second batch's end
    before = Journal(_new_store(tmp_path / "before.db"), every, fold())
    in_line = Journal(_new_store(tmp_path / "in_line.db"), every, fold())
    for journal in (before, in_line):  # the projection kept up to date: from the blob
        journal.store.build_indexes()
    _new_store(tmp_path / "threaded.db").close()
    threaded = _ThreadedJournal(str(tmp_path / "threaded.db"), every, fold())
    for blob, first, count in batches:
        # the journal as it was: the blob folded, then stored (compacted by the store)
        before.fold_blob(blob, first, count)
        before.store.append_blob(blob, first, count, before._snapshot())
        in_line.record_blob(blob, first, count)
        threaded.record_blob(blob, first, count)
    threaded.finish(0, before.fold.state_hash())
    threaded.close()
    for journal in (before, in_line):
        journal.store.close()
    expected = _stored_rows(tmp_path / "before.db")
    assert expected[1] and len(expected[2]) == batches[-1][1] + batches[-1][2] - 1
    assert _stored_rows(tmp_path / "in_line.db") == expected
    assert _stored_rows(tmp_path / "threaded.db", ("batches", "snapshots")) == expected[:2]
    assert_same(in_line.fold, before.fold)
    assert_same(threaded.fold, before.fold)


def test_append_stored_writes_the_row_append_blob_writes(tmp_path):
    source = tmp_path / "source.db"
    session.run("flow", source, seed=6, overrides={"messages": 600}, batch_size=250)
    stores = [_new_store(tmp_path / f"{name}.db") for name in ("blob", "stored", "group")]
    batches = _blobs_of(source)
    for blob, first, count in batches:
        stores[0].append_blob(blob, first, count)
        stores[1].append_stored(compact(blob), first, count)
    stores[2].append_blobs([(compact(b), f, c, None, None) for b, f, c in batches], stored=True)
    for store in stores:
        store.close()
    rows = [
        _stored_rows(tmp_path / f"{name}.db", ("batches",)) for name in ("blob", "stored", "group")
    ]
    assert rows[0][0] and rows[1] == rows[0] and rows[2] == rows[0]
