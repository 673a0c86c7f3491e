"""The compiled fold (``CompiledFold``, its hot rules in C) against its reference (``Fold``):
the same state -- dicts in the same order, ``state_hash``, ``to_json`` -- after every batch, on
engine sessions, on malformed streams (refused with the same ``FoldError``) and on recorded
logs read from SQLite."""

from __future__ import annotations

import os
import shutil

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.core import events as ev
from exchange.core.events import TYPED_FIELDS, Event, encode
from exchange.sessions import session
from exchange.store import _reader
from exchange.store import fold as fold_module
from exchange.store.event_store import EventStore, _typed_line
from exchange.store.fold import CompiledFold, Fold, FoldError, fold_class
from tests.exchange.conftest import order_actions, play
from tests.exchange.store.test_store import batch_range, forge_blob

N_TYPED = len(TYPED_FIELDS)


def _shape(value):
    """``value`` with its dicts' order and every type made visible to ``==`` (``1 == 1.0 ==
    True`` and ``{a, b} == {b, a}`` would hide a divergence the snapshots show)."""
    if isinstance(value, dict):
        return ("dict", [(_shape(k), _shape(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_shape(v) for v in value])
    return (type(value).__name__, value)


def state(fold: Fold):
    """Everything a fold holds, in order (its rule table and kernel aside)."""
    return _shape({k: v for k, v in vars(fold).items() if k not in ("_apply", "_kernel")})


def assert_same(compiled: Fold, reference: Fold) -> None:
    assert state(compiled) == state(reference)
    assert compiled.to_json() == reference.to_json()
    assert compiled.state_hash() == reference.state_hash()


def outcome(call):
    """``call()``'s FoldError as ``(seq, message)``, or None."""
    try:
        call()
    except FoldError as exc:
        return exc.seq, str(exc)
    return None


class OneBlob:
    """The store's side of :meth:`Fold.fold_store` for one batch blob of seqs ``first..``:
    the reference reads its rows (``typed_rows``, as the store does), the compiled fold its
    records (``parse``)."""

    def __init__(self, blob: bytes, first: int) -> None:
        self.blob = blob
        self.first = first

    def rows(self, first, last, parse=None, parse_stored=None):
        # parse_stored (the stored form's reader) unused: this store holds the blob itself
        # (test_fold_compact.py holds parse_compact to parse)
        reader = _reader.typed_rows if parse is None else parse
        events = reader(self.blob, self.first, -1, N_TYPED, _typed_line)
        assert events is not None, "a blob of seqs in order"
        a, b = first - self.first, last - self.first + 1
        return iter(events[a:b]) if parse is None else iter([(events, a, b)])


def test_the_compiled_fold_is_built_and_replays_by_default_unless_the_reference_is_named(
    spiral_log, monkeypatch
):
    # without the extension CompiledFold is the reference itself, and these tests would
    # compare it with itself
    assert CompiledFold()._kernel is not None
    assert os.environ.get("GPUEX_FOLD", "compiled") == fold_module.DEFAULT_FOLD
    monkeypatch.setattr(fold_module, "DEFAULT_FOLD", "compiled")
    assert type(session.replay(spiral_log, 100)) is CompiledFold
    assert type(session.replay(spiral_log, 100, fold="reference")) is Fold
    monkeypatch.setattr(fold_module, "DEFAULT_FOLD", "reference")  # GPUEX_FOLD=reference
    assert type(session.state_at(spiral_log, 100)) is Fold
    with pytest.raises(ValueError, match="unknown fold 'fast'; folds: compiled, reference"):
        fold_class("fast")


# ------------------------------------------------------------------ the reader
_TEXT = st.text(alphabet=st.sampled_from('ab,[]{}":\\\n\t\u00e9\u2603 nul-0'), max_size=6)
_INT = st.integers(-(2**63), 2**64 - 1) | st.sampled_from(
    [0, 9, 10, 12345678, 99999999, 10**8, 10**17, 10**18 - 1, 10**18, -(10**18), 2**63]
)
_FIELD = st.none() | _TEXT | _INT


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(*[_FIELD] * 10, st.just(ev.FILL) | _TEXT), min_size=1, max_size=5))
def test_the_compiled_folds_reader_reads_every_line_as_the_stores_reader_does(lines):
    """``Kernel.parse`` (a replay's reader) against ``typed_rows`` (the store's): the same
    values of the same types for any text (escapes, non-ASCII) and any int (beyond 18 digits,
    beyond 64 bits), and the same verdict on a blob that is not the seqs asked for."""
    rows = [(seq, f[0], f[10], *f[1:10]) for seq, f in enumerate(lines, 5)]
    blob = b"".join(orjson.dumps([*row, {"x": 1}]) + b"\n" for row in rows)
    kernel = CompiledFold()._kernel

    def both(first, count):
        expected = _reader.typed_rows(blob, first, count, N_TYPED, _typed_line)
        batch = kernel.parse(blob, first, count, N_TYPED, _typed_line)
        got = None if batch is None else [batch.row(i) for i in range(len(batch))]
        return _shape(got), _shape(expected)

    got, expected = both(5, len(rows))
    assert got == expected and expected[1] is not None
    for first, count in ((6, len(rows)), (5, len(rows) + 1), (5, len(rows) - 1), (5, -1)):
        got, expected = both(first, count)
        assert got == expected


# ------------------------------------------------------------------ engine sessions
actions = order_actions(max_size=60)


def _session(steps) -> list[Event]:
    return play(steps).events


@settings(max_examples=60, deadline=None)
@given(actions, st.lists(st.integers(1, 40), max_size=8))
def test_compiled_and_reference_folds_agree_after_every_batch_of_an_engine_session(steps, cuts):
    events = _session(steps)
    reference, rows, blobs = Fold(), CompiledFold(), CompiledFold()
    start = 0
    for size in [*cuts, len(events)]:
        batch = events[start : start + size]
        if not batch:
            break
        reference.apply_all(batch)
        rows.apply_all(batch)  # the journal's path: events
        blob = b"".join(encode(e) + b"\n" for e in batch)
        blobs.fold_store(OneBlob(blob, batch[0].seq), batch[0].seq, batch[-1].seq)  # a replay's
        assert_same(rows, reference)
        assert_same(blobs, reference)
        start += size


# ------------------------------------------------------------------ malformed streams
ACCOUNTS = ["alice", "bob", "ghost", None, 7]
INSTRUMENTS = ["H100", "PERP", "nope", None]
NUMBERS = [None, 0, 1, 3, 7, 10_000, -5, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, True, "9"]
SIDES = ["buy", "sell", None, "spot", "b\u00fcy", 'b"uy']
HOT = [ev.FEE, ev.FILL, ev.ORDER_ACCEPTED, ev.ORDER_REJECTED, ev.ORDER_RESTED]
HOT += [ev.ORDER_CANCELLED, ev.ORDER_AMENDED, ev.DEPOSIT, ev.WITHDRAWAL, ev.CLOSE_OUT]
KINDS = HOT + [ev.COMMAND_RECEIVED, ev.MARK_PRICE, ev.ACCOUNT_OPENED, ev.RATING_CHANGED, "Odd"]

#: A start every stream shares: a spot and a perp listed, two funded accounts, resting orders.
OPENING = [
    (ev.INSTRUMENT_LISTED, "H100", None, None, "spot", None, None, 10),
    (ev.INSTRUMENT_LISTED, "PERP", None, None, "perp", None, None, 10),
    (ev.ACCOUNT_OPENED, None, "alice", None, None, None, None, None),
    (ev.ACCOUNT_OPENED, None, "bob", None, None, None, None, None),
    (ev.DEPOSIT, None, "alice", None, None, None, None, 1_000_000),
    (ev.DEPOSIT, None, "bob", None, None, None, None, 1_000_000),
    (ev.ORDER_RESTED, "H100", "alice", 1, "sell", 10_000, 10, None),
    (ev.ORDER_RESTED, "H100", "bob", 3, "buy", 9_000, 7, None),
    (ev.ORDER_RESTED, "PERP", "bob", 7, "sell", 10_000, 10, None),
]

field_rows = st.tuples(
    st.sampled_from(KINDS),
    st.sampled_from(INSTRUMENTS),
    st.sampled_from(ACCOUNTS),
    st.sampled_from(NUMBERS),  # order_id
    st.sampled_from(SIDES),
    st.sampled_from(NUMBERS),  # price
    st.sampled_from(NUMBERS),  # qty
    st.sampled_from(NUMBERS),  # amount
    st.sampled_from(ACCOUNTS),  # counterparty
    st.sampled_from(NUMBERS),  # counter_order_id
    st.sampled_from([0] * 8 + [1, -1]),  # off the next seq
)


def _stream(drawn) -> list[tuple]:
    rows = []
    for k, (kind, instrument, account, oid, side, price, qty, amount) in enumerate(OPENING, 1):
        rows.append((k, k, kind, instrument, account, oid, side, price, qty, amount, None, None))
    for off, fields in ((f[-1], f[:-1]) for f in drawn):
        seq = len(rows) + 1 + off
        rows.append((seq, seq * 10, *fields))
    return rows


@settings(max_examples=150, deadline=None)
@given(st.lists(field_rows, min_size=1, max_size=25))
def test_a_malformed_event_is_refused_by_both_folds_with_the_same_fold_error(drawn):
    """Events of wrong types, unknown accounts and instruments, huge ints, out of order: the
    compiled fold must refuse the same event with the same FoldError, and otherwise leave the
    same state (a rule that raises half way leaves what it changed, in both)."""
    rows = _stream(drawn)
    reference, compiled = Fold(), CompiledFold()
    for row in rows:  # one event a call: the state after each, and each refusal
        assert outcome(lambda r=row: compiled.apply_all([r])) == outcome(
            lambda r=row: reference.apply_all([r])
        )
        assert state(compiled) == state(reference)
    # the same events as a replay reads them: one blob, parsed in C (escapes and ints beyond
    # 18 digits left to Python), folded until the first refusal
    # (renumbered: a blob the store reads has its seqs in order)
    blob = b"".join(orjson.dumps([k, *row[1:], None]) + b"\n" for k, row in enumerate(rows, 1))
    last = len(rows)
    reference, compiled = Fold(), CompiledFold()
    refused = outcome(lambda: compiled.fold_store(OneBlob(blob, 1), 1, last))
    assert refused == outcome(lambda: reference.fold_store(OneBlob(blob, 1), 1, last))
    assert state(compiled) == state(reference)


# ------------------------------------------------------------------ recorded logs
@pytest.fixture(scope="module")
def flow_log(tmp_path_factory):
    """A short ``flow`` session (the replay bench's scenario: the hot kinds), snapshots every
    1,000 events."""
    path = tmp_path_factory.mktemp("fold") / "flow.db"
    session.run(
        "flow",
        path,
        seed=3,
        overrides={"messages": 3_000},
        batch_size=500,
        snapshot_every=1_000,
    )
    return path


def _seqs(path) -> list[int]:
    with EventStore.open(path) as store:
        last = store.last_seq
    return [1, 2, 999, 1_000, 1_001, 1_733, last // 2, last - 1, last]


@pytest.mark.parametrize("log", ["flow_log", "spiral_log"])
def test_a_recorded_log_replays_to_the_same_state_with_either_fold(log, request):
    """``flow`` (spot: nearly every event compiled) and the SPIRAL session (perps, margin,
    default: most rules in Python, between compiled ones), read from SQLite as replays and
    ``state_at`` read them (snapshots or not, checked or not, in slices)."""
    path = request.getfixturevalue(log)
    with EventStore.open(path) as store:
        recorded = store.session["final_state_hash"]
    folds = {
        name: session.replay(path, use_snapshots=False, fold=name) for name in fold_module.FOLDS
    }
    assert type(folds["compiled"]) is CompiledFold and type(folds["reference"]) is Fold
    assert folds["reference"].state_hash() == recorded
    assert_same(folds["compiled"], folds["reference"])
    for seq in _seqs(path):
        assert_same(session.state_at(path, seq), session.state_at(path, seq, fold="reference"))
    with EventStore.open(path, checked=False) as store:  # verify's read: unchecked, in slices
        steps = []
        folded = session._fold_from(store, None, False, lambda done, _: steps.append(done))
    assert type(folded) is fold_class() and steps[-1] == folded.seq
    assert_same(folded, folds["reference"])


def _forge(path, seq, old: bytes, new: bytes) -> None:
    """Rewrite event ``seq``'s line (``old`` -> ``new``), digest and chain recomputed: a log
    every store check passes, whose event cannot be folded."""
    with EventStore.open(path) as store:
        batch = next(b for b in range(1, store.batch_count + 1) if batch_range(path, b)[1] >= seq)
    first, _last = batch_range(path, batch)

    def edit(blob: bytes) -> bytes:
        lines = blob.split(b"\n")
        assert old in lines[seq - first], lines[seq - first]
        lines[seq - first] = lines[seq - first].replace(old, new, 1)
        return b"\n".join(lines)

    forge_blob(path, batch, edit)


def _first(path, kind: str) -> tuple[int, bytes]:
    with EventStore.open(path) as store:
        for row, line in zip(store.rows(), store.payloads(), strict=True):
            if row[2] == kind and row[0] > 1_500:
                return row[0], line
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind, old, new",
    [
        (ev.FEE, b'"trader-', b'"ghost-'),  # an unknown account
        (ev.FEE, b'"trader-', b'"tr\\"ader-'),  # the same, escaped: Python reads the line
        (ev.FILL, b'"H100-SPOT",', b'"H100-SPOT",1.5,'),  # a float, the fields shifted
        (ev.ORDER_RESTED, b'"H100-SPOT"', b"5"),  # an instrument of another type
        (ev.ORDER_CANCELLED, b'"H100-SPOT"', b"null"),
        (ev.ORDER_AMENDED, b'"H100-SPOT"', b'"H100-GONE"'),  # an instrument never listed
    ],
)
def test_a_forged_log_is_refused_by_both_folds_at_the_same_seq(flow_log, tmp_path, kind, old, new):
    path = tmp_path / "forged.db"
    shutil.copy(flow_log, path)
    seq, line = _first(path, kind)
    _forge(path, seq, old, new)
    refusals = {}
    for name in fold_module.FOLDS:
        with pytest.raises(FoldError) as caught:
            session.replay(path, use_snapshots=False, fold=name)
        refusals[name] = (caught.value.seq, str(caught.value))
    assert refusals["compiled"] == refusals["reference"]
    assert refusals["compiled"][0] == seq


# ------------------------------------------------------------------ the held ledger
# Within one call the compiled fold holds cash, the fee pool and the orders that come to rest
# in C, and writes them back before a Python rule, before an error and at the end of the
# call (exchange/store/_fold.pyx, "the held ledger"): these streams put the held paths
# between calls, Python rules and values past int64.
BIG = 2**62
HELD_OPENING = [
    (ev.INSTRUMENT_LISTED, "H100", None, None, "spot", None, None, 10, None, None),
    (ev.INSTRUMENT_LISTED, "PERP", None, None, "perp", None, None, 10, None, None),
    (ev.ACCOUNT_OPENED, None, "alice", None, None, None, None, None, None, None),
    (ev.ACCOUNT_OPENED, None, "bob", None, None, None, None, None, None, None),
    (ev.ACCOUNT_OPENED, None, "carol", None, None, None, None, None, None, None),
    (ev.DEPOSIT, None, "alice", None, None, None, None, 1_000, None, None),
    (ev.DEPOSIT, None, "bob", None, None, None, None, 1_000, None, None),
    (ev.ORDER_RESTED, "H100", "bob", 1, "sell", 100, 5, None, None, None),  # before any call
]
_WHO = st.sampled_from(["alice", "bob", "carol"])
_OID = st.integers(1, 6)
_AMOUNT = st.sampled_from([1, -3, 250, BIG, -BIG, 2**63 - 1])
held_ops = st.one_of(
    st.tuples(
        st.just(ev.ORDER_RESTED),
        st.sampled_from(["H100", "H100", "NEW"]),
        _WHO,
        _OID,
        st.sampled_from(["buy", "sell"]),
        st.sampled_from([100, 101]),
        st.integers(1, 5),
        st.none(),
        st.none(),
        st.none(),
    ),
    st.tuples(
        st.just(ev.ORDER_CANCELLED),
        st.sampled_from(["H100", "NEW"]),
        _WHO,
        _OID,
        st.none(),
        st.none(),
        st.none(),
        st.none(),
        st.none(),
        st.none(),
    ),
    st.tuples(
        st.just(ev.ORDER_AMENDED),
        st.just("H100"),
        _WHO,
        _OID,
        st.none(),
        st.sampled_from([100, 101]),
        st.integers(1, 6),
        st.none(),
        st.none(),
        st.none(),
    ),
    st.tuples(
        st.just(ev.FILL),
        st.sampled_from(["H100", "H100", "NEW", "PERP"]),
        _WHO,
        _OID,
        st.sampled_from(["buy", "sell"]),
        st.sampled_from([100, 101]),
        st.integers(1, 3),
        _AMOUNT,
        _WHO,
        _OID,
    ),
    st.tuples(
        st.just(ev.FEE),
        st.none(),
        _WHO,
        st.none(),
        st.none(),
        st.none(),
        st.none(),
        _AMOUNT,
        st.none(),
        st.none(),
    ),
    st.tuples(
        st.sampled_from([ev.DEPOSIT, ev.WITHDRAWAL]),
        st.none(),
        st.sampled_from(["alice", "dave"]),
        st.none(),
        st.none(),
        st.none(),
        st.none(),
        _AMOUNT,
        st.none(),
        st.none(),
    ),
    # Python rules between held events: a key inserted into cash, a book listed, a mark
    st.tuples(st.just(ev.ACCOUNT_OPENED), st.none(), st.just("dave"), *[st.none()] * 7),
    st.tuples(
        st.just(ev.INSTRUMENT_LISTED),
        st.just("NEW"),
        st.none(),
        st.none(),
        st.just("spot"),
        st.none(),
        st.none(),
        st.just(10),
        st.none(),
        st.none(),
    ),
    st.tuples(
        st.just(ev.MARK_PRICE),
        st.just("H100"),
        st.none(),
        st.none(),
        st.none(),
        st.just(100),
        st.none(),
        st.just(1),
        st.none(),
        st.none(),
    ),
)


def _held_rows(ops) -> list[tuple]:
    return [(k, k * 10, *op) for k, op in enumerate([*HELD_OPENING, *ops], 1)]


def _try(call):
    try:
        return call()
    except TypeError as exc:  # orjson's: an int past 64 bits (cash can be one)
        return repr(exc)


def _assert_same_held(compiled: Fold, reference: Fold) -> None:
    assert state(compiled) == state(reference)
    for name in ("to_json", "state_hash"):
        assert _try(getattr(compiled, name)) == _try(getattr(reference, name))


def _fold_calls(rows, cuts, read: str):
    """Fold ``rows`` in calls of ``cuts`` events (the rest: one call) with both folds,
    ``read`` the compiled one's input (``rows``: tuples, ``blob``: parsed in C): the state
    after each call must be the reference's, and a refusal the same refusal."""
    reference, compiled = Fold(), CompiledFold()
    start = 0
    for size in [*cuts, len(rows)]:
        part = rows[start : start + size]
        if not part:
            break
        if read == "rows":
            got = outcome(lambda p=part: compiled.apply_all(p))
        else:
            blob = b"".join(orjson.dumps([*row, None]) + b"\n" for row in part)
            first, last = part[0][0], part[-1][0]
            got = outcome(
                lambda b=blob, f=first, la=last: compiled.fold_store(OneBlob(b, f), f, la)
            )
        assert got == outcome(lambda p=part: reference.apply_all(p))
        _assert_same_held(compiled, reference)
        if got is not None:
            return got
        start += size
    return None


@settings(max_examples=150, deadline=None)
@given(
    st.lists(held_ops, min_size=1, max_size=40),
    st.lists(st.integers(1, 15), max_size=4),
    st.sampled_from(["rows", "blob"]),
)
def test_the_held_ledger_leaves_the_references_state_after_every_call(ops, cuts, read):
    """Orders rested and cancelled, amended, filled (partly, to zero, below) in one call or
    across calls; fees, deposits and fills moving cash past int64; Python rules (an account
    opened, a book listed, a mark, an unknown account's deposit) between held events: the
    same state -- every dict's contents and key order -- after each call, the same refusal."""
    _fold_calls(_held_rows(ops), cuts, read)


def _one_call(ops, read="rows"):
    rows = _held_rows(ops)
    assert _fold_calls(rows, [], read) is None
    compiled = CompiledFold()
    compiled.apply_all(rows)
    return compiled


REST = (ev.ORDER_RESTED, "H100")


@pytest.mark.parametrize("read", ["rows", "blob"])
def test_orders_rested_in_a_call_reach_their_book_alive_in_the_references_key_order(read):
    ops = [
        (*REST, "alice", 4, "buy", 100, 2, None, None, None),
        (*REST, "carol", 2, "buy", 100, 3, None, None, None),
        (*REST, "alice", 3, "sell", 101, 1, None, None, None),
        (ev.ORDER_CANCELLED, "H100", "alice", 3, *[None] * 6),  # rested and cancelled
        (*REST, "alice", 3, "sell", 101, 4, None, None, None),  # rested again: at the end
        (*REST, "carol", 2, "buy", 101, 9, None, None, None),  # again, alive: its place kept
        (ev.ORDER_CANCELLED, "H100", "bob", 1, *[None] * 6),  # from before the call
        (*REST, "bob", 5, "sell", 101, 1, None, None, None),
        (*REST, "bob", 5, "sell", 101, 2, None, None, None),  # again, alive...
        (ev.ORDER_CANCELLED, "H100", "bob", 5, *[None] * 6),  # ...and cancelled: gone
        (ev.FEE, None, "carol", None, None, None, None, -7, None, None),
        (ev.FEE, None, "alice", None, None, None, None, -5, None, None),
    ]
    fold = _one_call(ops, read)
    assert list(fold.books["H100"].items()) == [
        (4, ["buy", 100, "alice", 2, 9]),
        (2, ["buy", 101, "carol", 9, 14]),
        (3, ["sell", 101, "alice", 4, 13]),
    ]
    assert list(fold.cash.items()) == [("alice", 995), ("bob", 1_000), ("carol", -7)]
    assert fold.pools["fees"] == 12


@pytest.mark.parametrize("read", ["rows", "blob"])
def test_a_held_order_filled_partly_then_cancelled_or_to_zero_leaves_its_book(read):
    fill = (ev.FILL, "H100")
    ops = [
        (*fill, "alice", 9, "buy", 100, 1, -100, "bob", 1),  # positions inserted (Python)
        (*fill, "carol", 9, "buy", 100, 1, -100, "bob", 1),
        (*REST, "carol", 2, "sell", 100, 5, None, None, None),
        (*REST, "carol", 3, "sell", 100, 2, None, None, None),
        (*fill, "alice", 9, "buy", 100, 2, -200, "carol", 2),  # partly
        (*fill, "alice", 9, "buy", 100, 2, -200, "carol", 3),  # to zero
        (*fill, "alice", 9, "buy", 100, 1, -100, "bob", 1),  # the order from before the call
        (ev.ORDER_AMENDED, "H100", "carol", 2, None, 100, 2, None, None, None),  # 3 -> 2
    ]
    fold = _one_call(ops, read)
    assert list(fold.books["H100"].items()) == [
        (1, ["sell", 100, "bob", 2, 8]),
        (2, ["sell", 100, "carol", 2, 11]),
    ]
    assert fold.cash == {"alice": 400, "bob": 1_300, "carol": 300}
    assert fold.positions == {"alice": {"H100": 6}, "bob": {"H100": -3}, "carol": {"H100": -3}}
    cancel = [(ev.ORDER_CANCELLED, "H100", "carol", 2, *[None] * 6)]
    assert list(_one_call(ops + cancel, read).books["H100"]) == [1]


def test_a_position_past_int64_is_left_to_python():
    fill = (ev.FILL, "H100", "alice", 9, "buy", 100)
    ops = [
        (*REST, "carol", 5, "sell", 100, 10, None, None, None),
        (ev.FILL, "H100", "bob", 9, "buy", 100, 5, -500, "carol", 5),  # positions inserted
        (*fill, 1, -100, "bob", 1),
        (*REST, "bob", 4, "sell", 100, 2**63 - 1, None, None, None),
        (*fill, 2**62, -1, "bob", 4),
        (*fill, 2**62, -1, "bob", 4),  # the taker's past int64 (the maker's not): Python's
        (*fill, 1, -1, "bob", 4),
    ]
    fold = _one_call(ops)
    assert fold.positions["alice"] == {"H100": 2 + 2**63}
    assert fold.positions["bob"] == {"H100": 3 - 2**63}
    assert fold.books["H100"][4] == ["sell", 100, "bob", -2, 12]


def test_cash_past_int64_and_python_rules_between_held_events():
    """A fee that takes cash past int64 is left to Python (its big int kept: later held
    events on that account go to Python too); an account opened and a deposit to it between
    fees: cash's keys in the reference's order."""
    fee = (ev.FEE, None)
    ops = [
        (*fee, "alice", None, None, None, None, 2**63 - 1, None, None),  # past int64
        (*fee, "bob", None, None, None, None, -1, None, None),
        (ev.ACCOUNT_OPENED, None, "dave", *[None] * 7),
        (ev.DEPOSIT, None, "dave", None, None, None, None, 5, None, None),
        (*fee, "alice", None, None, None, None, 1, None, None),
        (*fee, "dave", None, None, None, None, -2, None, None),
    ]
    for read in ("rows", "blob"):
        fold = _one_call(ops, read)
        assert list(fold.cash.items()) == [
            ("alice", 1_000 + 2**63),
            ("bob", 999),
            ("carol", 0),
            ("dave", 3),
        ]
        assert fold.pools["fees"] == -(2**63 - 1 - 1 + 1 - 2)  # minus the fees


def test_an_account_given_as_different_str_objects_is_one_held_cash():
    """The held cash is found by the account object's address, then by equality: two
    objects of one account (rows from different sources) move one cash."""
    alice = ["".join(["ali", "ce"]) for _ in range(3)]
    assert alice[0] is not alice[1] and alice[0] == "alice"
    ops = [(ev.FEE, None, who, None, None, None, None, -10, None, None) for who in alice]
    ops.append((ev.FILL, "H100", alice[2], 5, "buy", 100, 1, -100, "bob", 1))
    fold = _one_call(ops)
    assert fold.cash == {"alice": 870, "bob": 1_100, "carol": 0}
    assert fold.pools["fees"] == 30


def test_held_positions_and_last_prices_follow_fills_across_instruments():
    """A fill holds both accounts' positions and the instrument's last price (keys present
    already; the first fill of an account's position is the Python rule's): fills switching
    between two spot instruments, a self-trade, in one call."""
    listed = (ev.INSTRUMENT_LISTED, "NEW", None, None, "spot", None, None, 10, None, None)
    fill = ev.FILL
    ops = [
        listed,
        (*REST, "carol", 2, "sell", 100, 9, None, None, None),
        (ev.ORDER_RESTED, "NEW", "carol", 3, "sell", 50, 9, None, None, None),
        (fill, "H100", "alice", 9, "buy", 100, 1, -100, "carol", 2),  # positions inserted
        (fill, "NEW", "alice", 9, "buy", 50, 1, -50, "carol", 3),
        (fill, "H100", "alice", 9, "buy", 101, 2, -200, "carol", 2),  # held from here on
        (fill, "NEW", "alice", 9, "sell", 51, 1, 51, "carol", 3),
        (fill, "H100", "carol", 9, "buy", 102, 1, -102, "carol", 2),  # a self-trade
        (fill, "H100", "alice", 9, "buy", None, 1, -100, "carol", 2),  # no price: None
    ]
    fold = _one_call(ops)
    assert fold.positions == {
        "alice": {"H100": 4, "NEW": 0},
        "bob": {},
        "carol": {"H100": -4, "NEW": 0},
    }
    assert list(fold.last_price.items()) == [("H100", None), ("PERP", None), ("NEW", 51)]
    assert fold.cash == {"alice": 1_000 - 400 - 50 + 51, "bob": 1_000, "carol": 400 - 1}
    assert list(fold.books["H100"].items()) == [
        (1, ["sell", 100, "bob", 5, 8]),
        (2, ["sell", 100, "carol", 4, 10]),
    ]


def test_a_forged_state_whose_pools_are_its_cash_holds_nothing():
    """The held cash and fee pool are written back to cash and pools: when the two are one
    dict (a forged state) nothing is held, and a fee to an account named ``fees`` nets to
    zero as in the reference."""
    folds = Fold(), CompiledFold()
    for fold in folds:
        fold.cash = {"fees": 5, "alice": 1}
        fold.pools = fold.cash
    fee = (ev.FEE, None)
    rows = [
        (1, 1, *fee, "fees", None, None, None, None, 2, None, None),
        (2, 2, *fee, "alice", None, None, None, None, 3, None, None),
    ]
    for fold in folds:
        fold.apply_all(rows)
    assert folds[1].cash == {"fees": 2, "alice": 4}
    assert state(folds[1]) == state(folds[0])  # (no state_hash: the pools are not there)
