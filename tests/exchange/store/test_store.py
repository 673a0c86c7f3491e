"""The SQLite event store: round trips, atomic batches, the checksum chain, read-only opens,
durability pragmas, and verify_store locating every kind of damage.

Events are small synthetic ones built directly (no engine)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import zlib
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.core.events import TYPED_FIELDS, Event, encode
from exchange.store import event_store as store_module
from exchange.store.compact import compact, expand
from exchange.store.event_store import (
    SCHEMA_VERSION,
    ZERO_CHAIN,
    EventStore,
    StoreError,
    verify_store,
)

ROOT = Path(__file__).resolve().parents[3]
ACCOUNTS = ("alice", "bob", "carol")


def make_event(seq: int) -> Event:
    """A deterministic synthetic event of one of five shapes."""
    t = seq * 1_000
    account = ACCOUNTS[seq % 3]
    shape = seq % 5
    if shape == 0:
        command = {"type": "submit", "side": "buy", "price": 100 + seq % 7, "qty": 1 + seq % 4}
        return Event(seq, t, "CommandReceived", account=account, data={"command": command})
    if shape == 1:
        return Event(
            seq,
            t,
            "OrderAccepted",
            "H100",
            account,
            seq,
            "buy",
            100 + seq % 7,
            3,
            data={"tif": "gtc"},
        )
    if shape == 2:
        return Event(seq, t, "OrderRested", "H100", account, seq - 1, "buy", 100 + seq % 7, 3)
    if shape == 3:
        return Event(
            seq,
            t,
            "Fill",
            "A100",
            account,
            seq - 2,
            "sell",
            101,
            2,
            -20_200,
            ACCOUNTS[(seq + 1) % 3],
            seq - 7,
            {"trade_id": seq},
        )
    return Event(seq, t, "Deposit", account=account, amount=1_000_000)


def make_events(first: int, n: int) -> list[Event]:
    return [make_event(s) for s in range(first, first + n)]


def new_store(path: Path, **kw) -> EventStore:
    args = {"scenario": "unit", "seed": 7, "config": {"n": 1}, "code_version": "test"}
    args.update(kw)
    return EventStore.create(path, **args)


def build(path: Path, sizes=(10, 10, 10, 10), snapshot_at: int | None = None) -> None:
    """A closed store with batches of the given sizes (seqs 1..sum(sizes))."""
    with new_store(path) as store:
        seq = 1
        for size in sizes:
            snap = None
            if snapshot_at is not None and seq <= snapshot_at < seq + size:
                snap = (snapshot_at, '{"x":1}', "h" * 64)
            store.append(make_events(seq, size), snap)
            seq += size


def sql(path: Path, statement: str, params=()) -> None:
    """Tamper with a closed store behind the store's back."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(statement, params)
    conn.close()


def batch_range(path: Path, batch: int) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    row = conn.execute("SELECT first_seq, last_seq FROM batches WHERE batch = ?", (batch,))
    first, last = row.fetchone()
    conn.close()
    return first, last


def blob_of(path: Path, batch: int) -> bytes:
    """Batch ``batch``'s blob (its JSON lines): its stored form, expanded."""
    conn = sqlite3.connect(path)
    stored = conn.execute("SELECT events FROM batches WHERE batch = ?", (batch,)).fetchone()[0]
    conn.close()
    return expand(stored)


def forge_blob(path: Path, batch: int, edit, *, digest: bool = True, chain: bool = True) -> None:
    """Replace batch ``batch``'s blob by ``edit(blob)`` behind the store's back (stored in
    its compact form, as the store would); with ``digest`` recompute its digest, with
    ``chain`` too the chain from it on (a careful forger: a consistent rewrite)."""
    conn = sqlite3.connect(path)
    with conn:
        stored = conn.execute("SELECT events FROM batches WHERE batch = ?", (batch,)).fetchone()
        new = compact(edit(expand(stored[0])))
        conn.execute("UPDATE batches SET events = ? WHERE batch = ?", (new, batch))
        if digest:  # schema 5: the digest is the stored bytes'
            conn.execute(
                "UPDATE batches SET digest = ? WHERE batch = ?",
                (hashlib.sha256(new).hexdigest(), batch),
            )
        if chain:
            rows = conn.execute(
                "SELECT batch, digest FROM batches WHERE batch >= ? ORDER BY batch", (batch,)
            ).fetchall()
            previous = conn.execute(
                "SELECT coalesce((SELECT chain FROM batches WHERE batch = ?), ?)",
                (batch - 1, ZERO_CHAIN),
            ).fetchone()[0]
            for number, row_digest in rows:
                previous = hashlib.sha256(
                    bytes.fromhex(previous) + bytes.fromhex(row_digest)
                ).hexdigest()
                conn.execute("UPDATE batches SET chain = ? WHERE batch = ?", (previous, number))
    conn.close()


def project(path: Path) -> Path:
    """Build the projection (and its indexes) of the closed store at ``path``."""
    with EventStore.open(path, mode="a") as store:
        store.build_indexes()
    return path


@pytest.fixture
def db(tmp_path) -> Path:
    """A closed, clean store: 4 batches of 10 events (seqs 1..40), a snapshot at 20."""
    path = tmp_path / "s.db"
    build(path, snapshot_at=20)
    return path


# ------------------------------------------------------------------ round trip
def test_round_trip(tmp_path):
    path = tmp_path / "s.db"
    events = make_events(1, 25)
    with new_store(path, started_t=5) as store:
        store.append(events[:10])
        store.append(events[10:], snapshot=(25, '{"state":1}', "ab" * 32))
        assert store.last_seq == 25
        assert store.batch_count == 2
        assert list(store.events()) == events
    with EventStore.open(path) as store:
        assert list(store.events()) == events
        assert list(store.payloads()) == [encode(e) for e in events]
        assert list(store.rows()) == [tuple(e[: len(TYPED_FIELDS)]) for e in events]
        assert list(store.events(5, 7)) == events[4:7]  # stop inclusive
        assert list(store.payloads(24)) == [encode(events[23]), encode(events[24])]
        assert [e.seq for e in store.events(kind="Fill")] == [3, 8, 13, 18, 23]
        assert [e.seq for e in store.events(kind=("Fill", "Deposit"), stop=10)] == [3, 4, 8, 9]
        assert [e.seq for e in store.events(account="bob", kind="Fill")] == [13]
        assert [e.seq for e in store.events(instrument="A100", start=10)] == [13, 18, 23]
        assert [e.seq for e in store.events(order_id=11)] == [11, 12, 13]
        assert [e.seq for e in store.events(counterparty="alice")] == [8, 23]
        assert [r[0] for r in store.rows(kind="OrderRested")] == [3 + 5 * i - 1 for i in range(5)]
        assert store.latest_snapshot(24) is None
        assert store.latest_snapshot(25) == (25, '{"state":1}', "ab" * 32)
        assert list(store.snapshots()) == [(25, '{"state":1}', "ab" * 32)]
        info = store.session
        assert info["scenario"] == "unit" and info["seed"] == 7 and info["config"] == '{"n":1}'
        assert info["status"] == "running" and info["last_seq"] == 25
        assert info["started_t"] == 5 and info["durability"] == "normal"
        assert store.last_seq == 25 and store.batch_count == 2
        with pytest.raises(ValueError, match="cannot filter"):
            list(store.rows(side="buy"))


def test_finish_and_resume_in_append_mode(tmp_path):
    path = tmp_path / "s.db"
    with new_store(path) as store:
        store.append(make_events(1, 10))
        chain = store.digest()
    with EventStore.open(path, mode="a") as store:
        assert store.last_seq == 10 and store.batch_count == 1 and store.digest() == chain
        with pytest.raises(ValueError, match="expected 11"):
            store.append(make_events(12, 3))
        store.append(make_events(11, 5))
        store.finish(123_000, "f" * 64)
        with pytest.raises(StoreError, match="finished"):
            store.append(make_events(16, 1))
    with EventStore.open(path) as store:
        info = store.session
        assert (info["status"], info["finished_t"], info["final_state_hash"]) == (
            "finished",
            123_000,
            "f" * 64,
        )
        assert [e.seq for e in store.events()] == list(range(1, 16))
    assert verify_store(path).ok


def test_filters_use_the_indexes_once_built(db):
    """Each filter is answered from its index, in seq order, without a sort (the rowid, seq,
    ends every index); a seq range narrows the same search. (A closed store has none until
    build_indexes: see the next test.)"""
    with EventStore.open(db, mode="a") as store:
        store.build_indexes()
    conn = sqlite3.connect(db)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {
        "idx_events_kind",
        "idx_events_account",
        "idx_events_instrument",
        "idx_events_counterparty",
        "idx_events_order_id",
        "idx_events_t",
    } <= names
    queries = {
        "kind = 'Fill'": "idx_events_kind",
        "kind IN ('Fill', 'Fee')": "idx_events_kind",
        "account = 'bob'": "idx_events_account",  # partial index: account IS NOT NULL
        "account IN ('bob', 'carol')": "idx_events_account",
        "instrument = 'H100'": "idx_events_instrument",
        "counterparty = 'bob'": "idx_events_counterparty",
        "order_id = 11": "idx_events_order_id",
    }
    for where, index in queries.items():
        plan = " ".join(
            str(r)
            for r in conn.execute(
                f"EXPLAIN QUERY PLAN SELECT payload FROM events WHERE seq >= 1 AND {where} "
                "ORDER BY seq"
            )
        )
        assert index in plan, (where, plan)
        if " IN " not in where:  # one key: one range of the index, already in seq order
            assert "TEMP B-TREE" not in plan, (where, plan)
    conn.close()


def test_neither_finish_nor_close_builds_the_indexes_only_build_indexes_does(tmp_path):
    """Issue #20: the indexes are a projection built on demand. A sealed, closed log has none,
    reads and verifies as it is, and build_indexes adds them (idempotent) without changing a
    row, the chain or the verdict."""
    path = tmp_path / "s.db"
    with new_store(path) as store:
        store.append(make_events(1, 30))
        store.finish(30_000, "f" * 64)
        assert len(store.missing_indexes()) == len(store_module.INDEXES)
    names = [store_module._index_name(columns) for columns in store_module.INDEXES]
    with EventStore.open(path) as store:
        assert store.missing_indexes() == names
        events, digest = list(store.events()), store.digest()
        assert [e.seq for e in store.events(kind="Fill")] == [
            e.seq for e in events if e.kind == "Fill"
        ]
    assert verify_store(path).ok
    with EventStore.open(path, mode="a") as store:
        assert store.build_indexes() == names
        assert store.build_indexes() == []  # nothing missing: nothing built
    with EventStore.open(path) as store:
        assert store.missing_indexes() == []
        assert list(store.events()) == events and store.digest() == digest
        assert list(store.events(kind="Fill", check=False)) == [
            e for e in events if e.kind == "Fill"
        ]
    assert verify_store(path).ok
    assert not Path(f"{path}-wal").exists()  # built and closed: one file again


def test_build_indexes_reports_each_index_and_commits_them_together(tmp_path):
    path = tmp_path / "s.db"
    build(path)
    calls = []

    def progress(done, total):
        calls.append((done, total))
        if done == 3:
            raise KeyboardInterrupt  # an interrupted build commits none of them

    with EventStore.open(path, mode="a") as store:
        with pytest.raises(KeyboardInterrupt):
            store.build_indexes(progress)
        assert len(store.missing_indexes()) == len(store_module.INDEXES)
        calls.clear()
        store.build_indexes(lambda done, total: calls.append((done, total)))
        n = len(store_module.INDEXES)
        assert calls == [(k, n) for k in range(1, n + 1)]
        assert store.missing_indexes() == []


def test_a_read_only_store_cannot_build_indexes(db):
    with EventStore.open(db) as store, pytest.raises(StoreError, match="read-only"):
        store.build_indexes()
    with EventStore.open(db) as store:
        assert len(store.missing_indexes()) == len(store_module.INDEXES)


def test_identical_inputs_give_identical_files(tmp_path):
    build(tmp_path / "a.db", sizes=(7, 20, 3), snapshot_at=27)
    build(tmp_path / "b.db", sizes=(7, 20, 3), snapshot_at=27)
    assert (tmp_path / "a.db").read_bytes() == (tmp_path / "b.db").read_bytes()


def test_absent_fields_are_null_columns_of_the_projection(tmp_path):
    """None fields are bound as NaN when the projection is built (faster than None in
    Python's sqlite3), which SQLite stores as NULL: the columns must be NULL, not REAL."""
    path = tmp_path / "s.db"
    build(path, sizes=(10,))
    project(path)
    conn = sqlite3.connect(path)
    deposit = conn.execute(
        "SELECT typeof(instrument), typeof(order_id), typeof(side), typeof(price), "
        "typeof(qty), typeof(counterparty), typeof(counter_order_id), typeof(amount) "
        "FROM events WHERE kind = 'Deposit' LIMIT 1"
    ).fetchone()
    assert deposit == ("null",) * 7 + ("integer",)
    assert conn.execute("SELECT count(*) FROM events WHERE typeof(price) = 'real'").fetchone() == (
        0,
    )
    conn.close()
    with EventStore.open(path) as store:
        assert list(store.events()) == make_events(1, 10)


def test_background_checkpoints_keep_the_wal_bounded_and_files_identical(tmp_path, monkeypatch):
    """With a background checkpoint after every batch and the writer's own one every few
    batches, the WAL restarts instead of growing, and the files stay byte-identical."""
    monkeypatch.setattr(store_module, "_BG_CHECKPOINT_BYTES", 1)
    monkeypatch.setattr(store_module, "_WAL_RESTART_BYTES", 64 << 10)
    for name in ("a.db", "b.db"):
        path = tmp_path / name
        wal = Path(str(path) + "-wal")
        largest = 0
        with new_store(path) as store:
            for first in range(1, 300 * 50, 50):
                store.append(make_events(first, 50))
                largest = max(largest, wal.stat().st_size)
        assert largest < 4 << 20, largest  # some 15 MB of WAL frames were written in all
        assert not wal.exists()
        assert verify_store(path).ok
    assert (tmp_path / "a.db").read_bytes() == (tmp_path / "b.db").read_bytes()


def test_create_refuses_an_existing_file(db, tmp_path):
    with pytest.raises(FileExistsError):
        new_store(db)
    empty = tmp_path / "empty.db"
    empty.touch()
    new_store(empty).close()  # an empty file is fine
    with pytest.raises(ValueError, match="durability"):
        new_store(tmp_path / "x.db", durability="fast")
    assert not (tmp_path / "x.db").exists()


# ------------------------------------------------------------------ atomic append
def test_invalid_batch_writes_nothing(tmp_path):
    path = tmp_path / "s.db"
    store = new_store(path)
    store.append(make_events(1, 5))
    before = (store.last_seq, store.batch_count, store.digest())
    bad_batches = [
        make_events(7, 3),  # gap after 5
        make_events(5, 3),  # overlaps
        make_events(6, 2) + make_events(9, 1),  # hole inside the batch
        make_events(6, 3)[:2] + [make_event(8)._replace(kind=None)],  # NOT NULL kind
        make_events(6, 2) + [make_event(8)._replace(price="cheap")],  # text in an int field
        make_events(6, 2) + [make_event(8)._replace(price=True)],  # a bool is no int here
        make_events(6, 2) + [make_event(8)._replace(account=7)],  # an int in a text field
        make_events(6, 2) + [make_event(8)._replace(t=None)],  # NOT NULL t
    ]
    for bad in bad_batches:
        with pytest.raises(ValueError):
            store.append(bad)
    with pytest.raises(ValueError, match="snapshot"):
        store.append(make_events(6, 2), snapshot=(9, "{}", "h"))
    assert (store.last_seq, store.batch_count, store.digest()) == before
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT max(last_seq) FROM batches").fetchone() == (5,)
    assert conn.execute("SELECT count(*) FROM batches").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM snapshots").fetchone() == (0,)
    assert conn.execute("SELECT last_seq FROM sessions").fetchone() == (5,)
    conn.close()
    store.append(make_events(6, 3), snapshot=(8, "{}", "h"))  # the store still works
    assert store.last_seq == 8 and store.batch_count == 2
    store.close()
    assert verify_store(path).ok


# ------------------------------------------------------------------ chain
def test_chain_matches_an_independent_computation(tmp_path):
    path = tmp_path / "s.db"
    sizes = (3, 1, 8)
    chain = "0" * 64
    expected = []
    with new_store(path) as store:
        assert store.digest() == ZERO_CHAIN == chain
        seq = 1
        for size in sizes:
            events = make_events(seq, size)
            store.append(events)
            blob = b"".join(encode(e) + b"\n" for e in events)
            # schema 5: the digest is the stored bytes' (the blob's compact form)
            digest = hashlib.sha256(compact(blob)).hexdigest()
            chain = hashlib.sha256(bytes.fromhex(chain) + bytes.fromhex(digest)).hexdigest()
            expected.append((len(expected) + 1, seq, seq + size - 1, blob, digest, chain))
            assert store.digest() == chain
            seq += size
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT * FROM batches ORDER BY batch").fetchall()
    conn.close()
    # the events column holds the blob's compact form, which expands to the blob (the lines
    # joined) byte for byte; the digest is the compact form's (schema 5), not the blob's
    assert [r[3] for r in rows] == [compact(e[3]) for e in expected]
    assert [(*r[:3], expand(r[3]), *r[4:]) for r in rows] == expected
    with EventStore.open(path) as store:
        assert store.digest() == chain
    report = verify_store(path)
    assert report.ok and report.last_chain == chain
    assert (report.events, report.batches) == (12, 3)


# ------------------------------------------------------------------ opening
def test_schema_version_mismatch_is_a_clear_error(db):
    sql(db, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match=f"schema_version 99, expected {SCHEMA_VERSION}"):
        EventStore.open(db)
    with pytest.raises(StoreError, match="schema_version 99"):
        EventStore.open(db, mode="a")
    report = verify_store(db)
    assert not report.ok and "schema_version 99" in report.problems[0]


def test_not_a_store(tmp_path):
    plain = tmp_path / "plain.db"
    sql(plain, "CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="not a gpuex event store"):
        EventStore.open(plain)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not an SQLite file at all" * 100)
    with pytest.raises(StoreError):
        EventStore.open(junk)
    assert not verify_store(junk).ok
    with pytest.raises(FileNotFoundError):
        EventStore.open(tmp_path / "missing.db")
    report = verify_store(tmp_path / "missing.db")
    assert not report.ok and "cannot open" in report.problems[0]


def test_read_only_open_changes_nothing(db):
    before = sorted(os.listdir(db.parent))
    data, mtime = db.read_bytes(), db.stat().st_mtime_ns
    with EventStore.open(db, mode="r") as store:
        assert len(list(store.events())) == 40
        assert store.latest_snapshot(40)[0] == 20
        with pytest.raises(StoreError, match="read-only"):
            store.append(make_events(41, 1))
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store._conn.execute("DELETE FROM batches")
    assert verify_store(db).ok
    assert db.read_bytes() == data and db.stat().st_mtime_ns == mtime
    assert sorted(os.listdir(db.parent)) == before


#: a writer that dies inside a rollback-journal transaction, after its changes reached the
#: file (a one-page cache spills them): it leaves a hot journal behind
DIES_MID_TRANSACTION = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size=1")
conn.execute("BEGIN")
conn.execute("UPDATE batches SET events = zeroblob(length(events)), digest = 'x'")
conn.execute("INSERT INTO snapshots SELECT seq + 1000, state, state_hash FROM snapshots")
print("changed", flush=True)
time.sleep(60)
"""


def test_a_read_only_open_rolls_back_a_writer_killed_mid_transaction(db):
    with EventStore.open(db, mode="r") as store:
        committed = list(store.payloads())
    writer = subprocess.Popen(
        [sys.executable, "-c", DIES_MID_TRANSACTION, str(db)], stdout=subprocess.PIPE
    )
    assert writer.stdout.readline() == b"changed\n"
    writer.kill()
    writer.wait()
    journal = db.with_name(db.name + "-journal")
    assert journal.exists() and journal.stat().st_size > 0  # hot
    plain = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):  # what SQLite alone does
        plain.execute("SELECT count(*) FROM batches").fetchone()
    plain.close()
    with EventStore.open(db, mode="r") as store:  # the last committed state, as it was
        assert list(store.payloads()) == committed
        assert [row[0] for row in store.snapshots()] == [20]
    assert not journal.exists() or journal.stat().st_size == 0
    assert verify_store(db).ok


def test_reader_sees_a_live_writer(tmp_path):
    path = tmp_path / "s.db"
    writer = new_store(path)
    writer.append(make_events(1, 10))
    with EventStore.open(path) as reader:
        assert reader.last_seq == 10
        writer.append(make_events(11, 10))
        assert reader.last_seq == 20 and len(list(reader.payloads())) == 20
        assert verify_store(path).ok
    writer.close()


@pytest.mark.parametrize(("durability", "level"), [("normal", 1), ("full", 2)])
def test_durability_pragmas(tmp_path, durability, level):
    path = tmp_path / "s.db"
    store = new_store(path, durability=durability)
    assert store.durability == durability
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == level
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.append(make_events(1, 3))
    store.close()
    with EventStore.open(path, mode="a") as store:  # reopened: the stored durability again
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == level
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn = sqlite3.connect(path)  # closed: back to a single self-contained file
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()
    assert sorted(os.listdir(tmp_path)) == ["s.db"]


CRASHER = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, sys.argv[2])
    from tests.exchange.store.test_store import make_events, new_store
    from pathlib import Path
    store = new_store(Path(sys.argv[1]))
    for b in range(5):
        store.append(make_events(1 + 10 * b, 10))
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint
    """
)


def test_sigkill_loses_no_committed_batch(tmp_path):
    path = tmp_path / "s.db"
    proc = subprocess.run([sys.executable, "-c", CRASHER, str(path), str(ROOT)], check=False)
    assert proc.returncode == -9
    report = verify_store(path)
    assert report.ok, report.problems
    assert (report.events, report.batches) == (50, 5)
    with EventStore.open(path, mode="a") as store:  # resume where it stopped
        assert store.last_seq == 50 and store.session["status"] == "running"
        store.append(make_events(51, 10))
    assert verify_store(path).ok


# ------------------------------------------------------------------ tampering
def test_clean_store_verifies(db, tmp_path):
    report = verify_store(db)
    assert report.ok and report.problems == []
    assert (report.events, report.batches, report.first_bad_seq) == (40, 4, None)
    empty = tmp_path / "empty.db"
    new_store(empty).close()
    assert verify_store(empty).ok


def test_an_edited_byte_of_a_blob_breaks_its_batch_digest(db):
    # seq 17 rests 3 lots: [17, t, "OrderRested", ..., price, 3, null, ...] -> 4 lots
    forge_blob(db, 2, lambda b: b.replace(b",3,null,", b",4,null,", 1), digest=False, chain=False)
    report = verify_store(db)
    assert not report.ok
    assert report.first_bad_seq == 11 and report.first_bad_batch == 2  # located to its batch
    assert any("batch 2 (seqs 11..20): digest mismatch" in p for p in report.problems)


def test_an_edited_blob_with_its_digest_recomputed_breaks_the_chain(db):
    forge_blob(db, 3, lambda b: b.replace(b'"trade_id":23', b'"trade_id":24'), chain=False)
    report = verify_store(db)
    assert not report.ok and report.first_bad_batch == 3 and report.first_bad_seq == 21
    assert any("batch 3 (seqs 21..30): chain break" in p for p in report.problems)


def test_an_edited_projection_column_is_found_by_verify(db):
    project(db)
    sql(db, "UPDATE events SET price = price + 1 WHERE seq = 12")
    report = verify_store(db)
    assert not report.ok and report.first_bad_seq == 12
    assert any("seq 12: projection column price=" in p for p in report.problems)


def test_a_forged_event_whose_typed_field_has_another_type_is_found_by_verify(db):
    # seq 12 rests 3 lots; 3.0 == 3 in Python and is canonical JSON: the type must be checked
    forge_blob(db, 2, lambda b: b.replace(b",105,3,null,", b",105,3.0,null,", 1))
    report = verify_store(db)
    assert not report.ok and report.first_bad_seq == 12, report.problems
    assert any("seq 12: qty is 3.0 (float), not an integer" in p for p in report.problems)


def test_a_projection_column_that_is_not_utf8_is_reported_as_an_edit_not_as_corruption(db):
    project(db)
    sql(db, "UPDATE events SET account = CAST(X'ff41' AS TEXT) WHERE seq = 14")
    report = verify_store(db)
    assert not report.ok and report.first_bad_seq == 14 and report.events == 40
    assert [p for p in report.problems if "seq 14: projection column account=" in p]
    assert not any("corrupt" in p for p in report.problems)


def test_verify_store_reports_progress_up_to_every_event(tmp_path):
    path = tmp_path / "long.db"
    build(path, sizes=(5_000,) * 8)
    calls = []
    assert verify_store(path, progress=lambda done, total: calls.append((done, total))).ok
    assert calls[-1] == (40_000, 40_000)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert len(calls) > 2 and {total for _, total in calls} == {40_000}


def _without_line(blob: bytes, k: int) -> bytes:
    lines = blob.split(b"\n")
    del lines[k]
    return b"\n".join(lines)


def test_an_event_deleted_from_its_blob_is_found_even_when_digest_and_chain_are_forged(db):
    forge_blob(db, 2, lambda b: _without_line(b, 4))  # seq 15
    report = verify_store(db)
    assert not report.ok and report.first_bad_seq == 15 and report.first_bad_batch == 2
    assert any("seq 15: the payload is event seq 16" in p for p in report.problems)
    assert any(
        "batch 2 (seqs 11..20): its blob holds 9 events, not 10" in p for p in report.problems
    )


def test_a_row_deleted_from_the_projection_is_found_by_verify(db):
    project(db)
    sql(db, "DELETE FROM events WHERE seq = 15")
    report = verify_store(db)
    assert not report.ok and report.first_bad_seq == 15 and report.first_bad_batch == 2
    assert any("seq 15 missing from the projection" in p for p in report.problems)


def _swapped(blob: bytes, i: int, j: int) -> bytes:
    lines = blob.split(b"\n")
    lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


def test_swapped_events(db):
    forge_blob(db, 3, lambda b: _swapped(b, 1, 5))  # seqs 22 and 26, digest and chain forged
    report = verify_store(db)
    assert not report.ok and report.first_bad_seq == 22
    assert any("seq 22: the payload is event seq 26" in p for p in report.problems)
    assert any("seq 26: the payload is event seq 22" in p for p in report.problems)


def test_deleted_last_batch(db):
    first, last = batch_range(db, 4)
    sql(db, "DELETE FROM batches WHERE batch = 4")
    report = verify_store(db)
    assert not report.ok and report.first_bad_seq == first == 31
    assert any(f"seqs {first}..{last} missing at the end" in p for p in report.problems)


def test_deleted_batch_row(db):
    sql(db, "DELETE FROM batches WHERE batch = 2")
    report = verify_store(db)
    assert not report.ok and report.first_bad_batch == 2 and report.first_bad_seq == 11
    assert any("batch 2 missing" in p for p in report.problems)
    assert any("batch 3 starts at seq 21, but the previous" in p for p in report.problems)


def test_edited_batch_row(db):
    sql(db, "UPDATE batches SET chain = ? WHERE batch = 3", ("1" * 64,))
    report = verify_store(db)
    assert not report.ok and report.first_bad_batch == 3 and report.first_bad_seq == 21
    assert any("batch 3 (seqs 21..30): chain break" in p for p in report.problems)


def test_truncated_file(db):
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.truncate(size // 2)
    report = verify_store(db)
    assert not report.ok
    assert any("corrupt or truncated" in p or "corrupt" in p for p in report.problems)


def test_truncated_large_file_names_the_last_intact_seq(tmp_path):
    path = tmp_path / "big.db"
    build(path, sizes=(500,) * 8)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size * 2 // 3)  # the leaves of the first batches intact
    report = verify_store(path)
    assert not report.ok
    assert "corrupt or truncated" in report.problems[0]
    intact = [p for p in report.problems if "were read intact" in p]
    assert len(intact) == 1, report.problems
    last = int(intact[0].split("up to seq ")[1].split()[0])
    assert 0 < last < 4000 and report.first_bad_seq == last + 1 and report.events == last


def test_garbage_in_the_middle_of_the_file(db):
    data = bytearray(db.read_bytes())
    # a whole page: garbage in a page's unused space would be no damage at all
    page_size = int.from_bytes(data[16:18], "big")
    page_size = 65_536 if page_size == 1 else page_size
    middle = (len(data) // 2) // page_size * page_size
    data[middle : middle + page_size] = b"\xff" * page_size
    db.write_bytes(bytes(data))
    report = verify_store(db)  # must report, not raise
    assert not report.ok


# ------------------------------------------------------------------ properties
ascii_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
small_int = st.integers(min_value=-(10**12), max_value=10**12)


@st.composite
def event_at(draw, seq: int) -> Event:
    maybe = st.none()
    return Event(
        seq,
        seq * 1_000 + draw(st.integers(0, 999)),
        draw(st.sampled_from(["Fill", "OrderAccepted", "OrderRested", "CommandReceived"])),
        draw(maybe | ascii_text),
        draw(maybe | ascii_text),
        draw(maybe | small_int),
        draw(maybe | st.sampled_from(["buy", "sell"])),
        draw(maybe | small_int),
        draw(maybe | small_int),
        draw(maybe | small_int),
        draw(maybe | ascii_text),
        draw(maybe | small_int),
        draw(maybe | st.dictionaries(ascii_text, small_int | ascii_text, max_size=3)),
    )


@st.composite
def batches(draw) -> list[list[Event]]:
    sizes = draw(st.lists(st.integers(1, 6), min_size=1, max_size=6))
    out, seq = [], 1
    for size in sizes:
        out.append([draw(event_at(s)) for s in range(seq, seq + size)])
        seq += size
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=batches(), data=st.data())
def test_random_appends_verify_and_any_byte_edit_is_located(batches, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.db"
        with new_store(path) as store:
            for batch in batches:
                store.append(batch)
            events = [e for batch in batches for e in batch]
            assert list(store.events()) == events
        report = verify_store(path)
        assert report.ok, report.problems
        assert report.events == len(events) and report.batches == len(batches)
        victim = data.draw(st.sampled_from(events))
        payload = encode(victim)
        pos = data.draw(st.integers(0, len(payload) - 1))
        new = data.draw(st.sampled_from([c for c in b'0123456789abcxyz"{}:,' if c != payload[pos]]))
        number = next(k for k, batch in enumerate(batches, 1) if victim in batch)
        first = batches[number - 1][0].seq
        start = sum(len(encode(e)) + 1 for e in batches[number - 1] if e.seq < victim.seq)

        def edit(blob: bytes) -> bytes:
            return blob[: start + pos] + bytes([new]) + blob[start + pos + 1 :]

        forge_blob(path, number, edit, digest=False, chain=False)
        report = verify_store(path)
        assert not report.ok
        # located to its batch (no per-event checksum: the batch's digest proves the events)
        assert report.first_bad_batch == number, report.problems
        assert first <= report.first_bad_seq <= victim.seq, report.problems
        with EventStore.open(path) as store:  # and every checked read stops at the batch
            with pytest.raises(store_module.DamagedLogError) as caught:
                list(store.events())
            assert caught.value.seq == first


def _dump(path: Path) -> list:
    conn = sqlite3.connect(path)
    try:
        return [
            conn.execute("SELECT * FROM batches ORDER BY batch").fetchall(),
            conn.execute("SELECT seq, state, state_hash FROM snapshots ORDER BY seq").fetchall(),
        ]
    finally:
        conn.close()


def test_the_c_writer_and_the_python_path_store_the_same_rows(tmp_path, monkeypatch):
    """The batch blob is checked and encoded in C (exchange.store._writer) where it can be; the
    Python path it falls back to must store exactly the same batches and snapshots."""
    from exchange.store import _writer

    probe = new_store(tmp_path / "probe.db")
    assert probe._c is _writer  # the C path is the one in use here
    probe.close()
    fast = tmp_path / "c.db"
    build(fast, snapshot_at=20)

    monkeypatch.setattr(store_module, "_writer", lambda: None)
    slow = tmp_path / "py.db"
    build(slow, snapshot_at=20)
    assert _dump(fast) == _dump(slow)
    assert verify_store(slow).ok and verify_store(fast).ok


@pytest.mark.parametrize("path", ["c", "python"])
def test_both_append_paths_reject_a_bad_batch_whole_and_keep_going(tmp_path, monkeypatch, path):
    if path == "python":
        from exchange.store import event_store as store_module

        monkeypatch.setattr(store_module, "_writer", lambda: None)
    store = new_store(tmp_path / "r.db")
    try:
        store.append(make_events(1, 3))
        bad = make_events(4, 2)
        bad[1] = bad[1]._replace(price=1 << 63)  # JSON takes it; an int64 column does not
        with pytest.raises(ValueError, match="int64|too large"):
            store.append(bad)
        with pytest.raises(ValueError, match="kind|NOT NULL"):
            store.append([make_event(4)._replace(kind=None)])
        assert store.last_seq == 3
        store.append(make_events(4, 2))
        assert store.last_seq == 5
    finally:
        store.close()


def test_index_build_spills_sorted_runs_and_gives_the_writer_its_cache_back(tmp_path):
    """The indexes are built with a small page cache (the sorter's in-memory runs; quicker
    for large logs) and the writer's own cache is restored afterwards; the indexes built
    that way are the ones a large cache builds, page for page."""
    from exchange.store import event_store as store_module

    paths = []
    # 64 KiB: the 20,000 keys of each index spill into several sorted runs
    for kib in (64, store_module._CACHE_KIB):
        path = tmp_path / f"cache-{kib}.db"
        with new_store(path) as store:
            for first in range(1, 20_001, 2_000):
                store.append(make_events(first, 2_000))
            sizes = []
            original = store._conn.execute

            def spy(statement, *args, _original=original, _sizes=sizes):
                if statement.startswith("CREATE INDEX"):
                    _sizes.append(_original("PRAGMA cache_size").fetchone()[0])
                return _original(statement, *args)

            store_module._INDEX_SORT_CACHE_KIB, saved = kib, store_module._INDEX_SORT_CACHE_KIB
            store._conn = _Spy(store._conn, spy)
            try:
                store.build_indexes()
            finally:
                store._conn = store._conn.wrapped
                store_module._INDEX_SORT_CACHE_KIB = saved
            assert sizes == [-kib] * len(store_module.INDEXES)
            restored = store._conn.execute("PRAGMA cache_size").fetchone()[0]
            assert restored == -store_module._CACHE_KIB
        paths.append(path)
    assert paths[0].read_bytes() == paths[1].read_bytes()


class _Spy:
    """A connection whose ``execute`` is replaced (sqlite3.Connection's cannot be)."""

    def __init__(self, wrapped, execute):
        self.wrapped, self.execute = wrapped, execute

    def __getattr__(self, name):
        return getattr(self.wrapped, name)


@pytest.mark.parametrize("path_taken", ["c", "python"])
def test_an_event_that_is_not_a_tuple_of_its_fields_is_refused_with_a_reason_and_nothing_is_stored(
    tmp_path, monkeypatch, path_taken
):
    from exchange.store import event_store as store_module

    if path_taken == "python":
        monkeypatch.setattr(store_module, "_writer", lambda: None)
    path = tmp_path / "s.db"
    with new_store(path) as store:
        store.append(make_events(1, 3))
        row = list(make_events(4, 1)[0])  # the right fields, as a list: taken (the journaller's)
        with pytest.raises(ValueError, match="must be a tuple"):
            store.append([{"seq": 4}])
        with pytest.raises(ValueError, match="13 fields of Event"):
            store.append([tuple(row[:12])])
        assert store.last_seq == 3
        store.append(make_events(4, 2))
    with EventStore.open(path) as store:
        assert [e.seq for e in store.events()] == [1, 2, 3, 4, 5]
    assert verify_store(path).ok


# ------------------------------------------------------------------ the C row reader
def _rows_both_ways(path, monkeypatch, **query):
    """``rows(**query)`` of the projection read in C and through a Python cursor."""
    if not EventStore.open(path).has_projection():
        project(path)
    with EventStore.open(path, mode="r") as store:
        fast = store.rows(**query)
        from exchange.store._reader import RowReader

        assert isinstance(fast, RowReader)  # the C path is the one in use here
        fast = list(fast)
        with monkeypatch.context() as patch:
            patch.setattr(store_module, "_row_reader", lambda *args: None)
            slow = list(store.rows(**query))
    return fast, slow


@pytest.mark.parametrize(
    "query",
    [
        {"kind": "Fill"},
        {"kind": ["Fill", "Deposit", "OrderRested", "OrderAccepted", "CommandReceived"]},
        {"account": ["alice", "carol"], "start": 5},
        {"order_id": 11},
        {"counterparty": "nobody"},
    ],
)
def test_the_c_reader_gives_the_rows_a_cursor_gives(db, monkeypatch, query):
    fast, slow = _rows_both_ways(db, monkeypatch, **query)
    assert fast == slow
    assert [[type(v) for v in row] for row in fast] == [[type(v) for v in row] for row in slow]


def test_the_c_reader_gives_one_str_per_distinct_text_value(db, monkeypatch):
    fast, _slow = _rows_both_ways(db, monkeypatch, account=list(ACCOUNTS))
    kinds = {}
    for row in fast:
        assert kinds.setdefault(row[2], row[2]) is row[2]  # equal kinds: the same object


@pytest.mark.parametrize("source", ["blobs", "projection"])
def test_a_read_stops_cleanly_when_abandoned_or_its_store_closes(db, source):
    if source == "projection":
        project(db)
    store = EventStore.open(db, mode="r")
    rows = store.rows(account=list(ACCOUNTS)) if source == "projection" else store.rows()
    assert next(rows)[0] == 1  # abandoned after one row: the file still closes and reopens
    store.close()
    with pytest.raises((sqlite3.ProgrammingError, StopIteration)):
        next(rows)
    with EventStore.open(db, mode="a") as again:
        assert [r[0] for r in again.rows(39)] == [39, 40]


# ------------------------------------------------------------------ one self-contained file
def _in_rollback_mode_alone(path: Path) -> bool:
    """The file is in rollback-journal mode (header bytes 18-19 are 1, 1) with no -wal, -shm
    or -journal file beside it."""
    beside = [p.name for p in path.parent.iterdir() if p.name.startswith(path.name + "-")]
    return path.read_bytes()[18:20] == b"\x01\x01" and beside == []


def _abandoned_reads(path: Path) -> None:
    """Every way of reading the store, each left after its first row, then closed."""
    reader = EventStore.open(path, mode="r")
    for rows in (
        reader.payloads(1, 40),
        reader.rows(1, 40),
        reader.rows(check=False),
        reader.events(),
        reader.events(kind="Fill"),
        reader.snapshots(),
    ):
        next(iter(rows), None)
    reader.close()


def _refused_batch(store: EventStore) -> None:
    with pytest.raises(ValueError):
        store.append(make_events(store.last_seq + 2, 3))  # a gap


def _failing_with_block(store: EventStore) -> None:
    with pytest.raises(RuntimeError), store:
        store.append(make_events(store.last_seq + 1, 5))
        raise RuntimeError("the run fails")


@pytest.mark.parametrize(
    "ending",
    [
        lambda store: store.close(),
        lambda store: (store.finish(99, "h" * 64), store.close()),
        lambda store: (_refused_batch(store), store.close()),
        lambda store: _failing_with_block(store),
        lambda store: (_abandoned_reads(store.path), store.close()),
    ],
    ids=["closed", "finished", "after-a-refused-batch", "failing-inside-with", "abandoned-reader"],
)
def test_every_way_a_writer_ends_leaves_one_self_contained_file(tmp_path, ending):
    path = tmp_path / "s.db"
    build(path)
    store = EventStore.open(path, mode="a")
    store.append(make_events(41, 10))
    ending(store)
    assert not store.left_in_wal
    assert _in_rollback_mode_alone(path)
    assert verify_store(path).ok


def test_a_reader_closed_mid_iteration_does_not_hold_the_file(db):
    # an abandoned iteration used to leave its statement unfinished: SQLite then keeps the
    # connection alive after close(), which stopped the writer's switch out of WAL mode
    writer = EventStore.open(db, mode="a")
    _abandoned_reads(db)
    writer.close()
    assert not writer.left_in_wal and _in_rollback_mode_alone(db)


def test_a_wal_mode_file_copied_alone_reads_and_verifies_without_files_beside_it(db, tmp_path):
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    conn.close()  # the last connection: the -wal goes, the header stays in WAL mode
    alone = tmp_path / "copy"
    alone.mkdir()
    copy = alone / "s.db"
    copy.write_bytes(db.read_bytes())
    assert copy.read_bytes()[18:20] == b"\x02\x02"
    assert verify_store(copy).ok
    with EventStore.open(copy, mode="r") as store:
        assert [e.seq for e in store.events()] == list(range(1, 41))
    assert sorted(p.name for p in alone.iterdir()) == ["s.db"]  # no -wal, no -shm made


# ------------------------------------------------------------------ checked reads
def _checked_both_ways(path, **query):
    """A checked read from the blobs, then from the projection: the rows, or the error."""

    def read():
        with EventStore.open(path, mode="r") as store:
            try:
                return list(store.rows(**query))
            except store_module.DamagedLogError as exc:
                return ("damaged", exc.seq, exc.problem)

    blobs = read()
    project(path)
    return blobs, read()


@pytest.mark.parametrize(
    "query",
    [{"kind": "Fill"}, {"account": ["alice", "carol"]}, {"kind": "Fill", "start": 15, "stop": 33}],
)
def test_a_filtered_read_gives_the_same_rows_from_the_blobs_and_from_the_projection(db, query):
    blobs, projection = _checked_both_ways(db, **query)
    assert blobs == projection and blobs
    with EventStore.open(db) as store:
        assert list(store.rows(check=False, **query)) == blobs
        events = list(store.events(**query))
    assert [tuple(e[: len(TYPED_FIELDS)]) for e in events] == blobs


@pytest.mark.parametrize(
    "tamper, seq",
    [
        ("UPDATE batches SET chain = '" + "1" * 64 + "' WHERE batch = 3", 21),
        (  # the blob edited (stored compact again), its digest not recomputed
            lambda db: forge_blob(
                db,
                3,
                lambda b: b.replace(b'"trade_id":23', b'"trade_id":24'),
                digest=False,
                chain=False,
            ),
            21,
        ),
        ("UPDATE sessions SET last_seq = 45", 41),
        ("UPDATE sessions SET last_seq = 30", 31),  # on a batch boundary: the batches say
        ("DELETE FROM batches WHERE batch = 2", 11),
    ],
)
def test_a_checked_read_names_the_damaged_batch(db, tamper, seq):
    if callable(tamper):
        tamper(db)
    else:
        sql(db, tamper)
    with EventStore.open(db) as store, pytest.raises(store_module.DamagedLogError) as caught:
        list(store.rows(start=25))
    assert caught.value.seq == seq, caught.value


@pytest.mark.parametrize(
    "tamper, seq",
    [
        ("DELETE FROM events WHERE seq = 15", 15),
        ("DELETE FROM events WHERE seq = 40", 40),
        ("UPDATE events SET price = price + 1 WHERE seq = 12", 12),
        ("UPDATE events SET kind = 'Deposit' WHERE seq = 13", 13),  # hides a Fill from kind=
        ("UPDATE events SET account = CAST(X'ff41' AS TEXT) WHERE seq = 14", 14),
        ("UPDATE events SET payload = payload || ' ' WHERE seq = 22", 22),
        ("INSERT INTO events (seq, t, kind, payload, batch) VALUES (41, 1, 'Fill', '[]', 4)", 41),
    ],
)
def test_a_checked_filtered_read_of_a_tampered_projection_names_the_row(db, tamper, seq):
    project(db)
    sql(db, tamper)
    with EventStore.open(db) as store, pytest.raises(store_module.DamagedLogError) as caught:
        list(store.rows(kind="Fill"))
    assert caught.value.seq == seq, caught.value
    assert "projection" in caught.value.problem


def test_the_ends_of_int64_and_escaped_text_go_through_the_blob_and_the_projection(tmp_path):
    path = tmp_path / "ends.db"
    extremes = [
        Event(1, 0, "Deposit", account="alice", amount=-(2**63)),
        Event(2, 2**63 - 1, "Fill", "H100", "bob", 2**63 - 1, "sell", 0, -1, -(2**63) + 1),
        Event(3, 3, "Deposit", account='caf\u00e9 "quoted"', amount=10, data={"x": "\n,]"}),
    ]
    with new_store(path) as store:
        store.append(extremes)
        store.finish(3, "h" * 64)
    with EventStore.open(path) as store:
        assert list(store.events()) == extremes
        assert list(store.rows()) == [tuple(e[: len(TYPED_FIELDS)]) for e in extremes]
    project(path)
    with EventStore.open(path) as store:
        assert list(store.events(kind=["Deposit", "Fill"])) == extremes
    assert verify_store(path).ok


def test_a_store_opened_unchecked_trusts_the_file_and_a_checked_one_does_not(db):
    # checked=False is for a log the caller has just written or verified (a run's summary)
    project(db)
    sql(db, "UPDATE events SET price = price + 1 WHERE seq = 12")
    with EventStore.open(db, checked=False) as trusting:
        assert len(list(trusting.rows(kind="OrderRested"))) == 8
        with pytest.raises(store_module.DamagedLogError, match="seq 12: projection column price="):
            list(trusting.rows(kind="OrderRested", check=True))
    with EventStore.open(db) as checking, pytest.raises(store_module.DamagedLogError):
        list(checking.rows(kind="OrderRested"))


# ------------------------------------------------------------------ the projection on demand
def test_ensure_projection_builds_it_only_on_a_closed_finished_writable_log(tmp_path, monkeypatch):
    path = tmp_path / "s.db"
    build(path)
    before = path.read_bytes()
    assert EventStore.ensure_projection(path) is False  # unfinished: not ours to change
    with EventStore.open(path, mode="a") as writer:
        writer.finish(40_000, "h" * 64)
        assert EventStore.ensure_projection(path) is False  # live: a writer has it open
    sealed = path.read_bytes()
    assert sealed != before
    with monkeypatch.context() as patch:  # read-only storage (root may write anything)
        patch.setattr(store_module.os, "access", lambda *args: False)
        assert EventStore.ensure_projection(path) is False
    assert path.read_bytes() == sealed
    with EventStore.open(path) as store:
        events = list(store.events())
        assert not store.has_projection() and store.missing_indexes() != []
    assert EventStore.ensure_projection(path) is True
    with EventStore.open(path) as store:
        assert store.has_projection() and store.missing_indexes() == []
        assert list(store.events()) == events
        assert list(store.events(kind="Fill")) == [e for e in events if e.kind == "Fill"]
    built = path.read_bytes()
    assert EventStore.ensure_projection(path) is True  # present: nothing written again
    assert path.read_bytes() == built
    assert verify_store(path).ok


def test_a_writer_keeps_the_projection_it_has_up_to_date(tmp_path):
    path = tmp_path / "s.db"
    build(path)
    project(path)
    with EventStore.open(path, mode="a") as store:
        store.append(make_events(41, 5))
    with EventStore.open(path) as store:
        assert [e.seq for e in store.events(kind="Fill")] == [3, 8, 13, 18, 23, 28, 33, 38, 43]
    assert verify_store(path).ok


# ------------------------------------------------------------------ schema 2 and its migration
#: schema 2's layout, as docs/event_store.md documents it (the writer of it is gone)
SCHEMA_2 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE sessions (session_id TEXT NOT NULL, scenario TEXT NOT NULL, seed INTEGER NOT NULL,
    code_version TEXT, config TEXT, durability TEXT, status TEXT NOT NULL,
    last_seq INTEGER NOT NULL, started_t INTEGER, finished_t INTEGER, final_state_hash TEXT)
    STRICT;
CREATE TABLE events (seq INTEGER PRIMARY KEY, t INTEGER NOT NULL, kind TEXT NOT NULL,
    instrument TEXT, account TEXT, order_id INTEGER, side TEXT, price INTEGER, qty INTEGER,
    amount INTEGER, counterparty TEXT, counter_order_id INTEGER, payload TEXT NOT NULL,
    crc INTEGER NOT NULL, batch INTEGER NOT NULL) STRICT;
CREATE TABLE batches (batch INTEGER PRIMARY KEY, first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL, digest TEXT NOT NULL, chain TEXT NOT NULL) STRICT;
CREATE TABLE snapshots (seq INTEGER PRIMARY KEY, state TEXT NOT NULL, state_hash TEXT NOT NULL)
    STRICT;
"""


def schema_2_store(path: Path, sizes=(10, 10, 10, 10), snapshot_at=20) -> str:
    """A finished schema-2 store of ``make_events`` in batches of ``sizes``, built by hand:
    one row per event (payload, crc), the batch digest over the payloads each followed by a
    newline, the chain. Returns its last chain."""
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_2)
    fields = ",".join(TYPED_FIELDS)
    with conn:
        conn.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("format", "gpuex-event-store"), ("schema_version", "2"), ("typed_fields", fields)],
        )
        chain, seq = ZERO_CHAIN, 1
        for batch, size in enumerate(sizes, 1):
            events = make_events(seq, size)
            for e in events:
                payload = encode(e)
                conn.execute(
                    f"INSERT INTO events ({fields}, payload, crc, batch) VALUES "
                    f"({', '.join('?' * (len(TYPED_FIELDS) + 3))})",
                    (*e[: len(TYPED_FIELDS)], payload.decode(), zlib.crc32(payload), batch),
                )
            digest = hashlib.sha256(b"".join(encode(e) + b"\n" for e in events)).hexdigest()
            chain = hashlib.sha256(bytes.fromhex(chain) + bytes.fromhex(digest)).hexdigest()
            conn.execute(
                "INSERT INTO batches VALUES (?, ?, ?, ?, ?)",
                (batch, seq, seq + size - 1, digest, chain),
            )
            seq += size
        conn.execute("INSERT INTO snapshots VALUES (?, ?, ?)", (snapshot_at, '{"x":1}', "h" * 64))
        conn.execute(
            "INSERT INTO sessions VALUES ('s2', 'unit', 7, 'test', '{\"n\":1}', 'normal', "
            "'finished', ?, 0, 99000, ?)",
            (seq - 1, "f" * 64),
        )
    conn.close()
    return chain


def test_a_schema_2_log_is_refused_with_the_command_that_migrates_it(tmp_path):
    path = tmp_path / "old.db"
    schema_2_store(path)
    for mode in ("r", "a"):
        with pytest.raises(StoreError, match="schema_version 2, expected 5") as caught:
            EventStore.open(path, mode=mode)
        assert f"`gpuex migrate {path}`" in str(caught.value)
    report = verify_store(path)
    assert not report.ok and "gpuex migrate" in report.problems[0]


def schema_5_chain(path: Path) -> list[tuple[str, str]]:
    """``(digest, chain)`` of each batch of the store at ``path``, computed here from its
    stored bytes (schema 5: sha256 of the ``events`` column as it is, chained)."""
    conn = sqlite3.connect(path)
    try:
        stored = [r[0] for r in conn.execute("SELECT events FROM batches ORDER BY batch")]
    finally:
        conn.close()
    chain, out = ZERO_CHAIN, []
    for column in stored:
        digest = hashlib.sha256(column).hexdigest()
        chain = hashlib.sha256(bytes.fromhex(chain) + bytes.fromhex(digest)).hexdigest()
        out.append((digest, chain))
    return out


def test_migrate_carries_the_events_session_and_snapshots_over_under_a_new_chain(tmp_path):
    path = tmp_path / "old.db"
    chain = schema_2_store(path, sizes=(7, 20, 3), snapshot_at=27)
    old = sqlite3.connect(path)
    old_batches = old.execute("SELECT * FROM batches ORDER BY batch").fetchall()
    old_session = old.execute("SELECT * FROM sessions").fetchall()
    old.close()
    assert store_module.migrate_store(path) == (30, 3)
    assert verify_store(path).ok
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.db"]  # nothing left beside
    new = sqlite3.connect(path)
    rows = new.execute("SELECT * FROM batches ORDER BY batch").fetchall()
    # the same batches; the digests and chain are the stored bytes' (schema 5)
    assert [r[:3] for r in rows] == [r[:3] for r in old_batches]
    assert [r[4:] for r in rows] == schema_5_chain(path)
    assert new.execute("SELECT * FROM sessions").fetchall() == old_session
    assert new.execute("SELECT * FROM snapshots").fetchall() == [(27, '{"x":1}', "h" * 64)]
    new.close()
    with EventStore.open(path) as store:
        assert store.digest() == schema_5_chain(path)[-1][1] != chain
        assert list(store.events()) == make_events(1, 30)
        assert list(store.payloads()) == [encode(e) for e in make_events(1, 30)]
    # the same events in the same batches written by this gpuex: the same batch rows
    native = tmp_path / "native.db"
    with new_store(native, session_id="s2") as store:
        for first, size in ((1, 7), (8, 20), (28, 3)):
            store.append(make_events(first, size))
    assert _dump(native)[0] == _dump(path)[0]
    with pytest.raises(StoreError, match="nothing to migrate"):
        store_module.migrate_store(path)


def test_migrate_refuses_a_damaged_schema_2_log_and_leaves_it_as_it_was(tmp_path):
    path = tmp_path / "old.db"
    schema_2_store(path)
    sql(path, "UPDATE events SET payload = replace(payload, '\"trade_id\":23', '\"trade_id\":24')")
    assert_migrate_refused(path, r"batch 3 \(seqs 21..30\): digest mismatch")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.db"]


def assert_migrate_refused(path, match: str) -> None:
    """``migrate_store(path)`` raises a StoreError matching ``match`` and leaves the file as
    it was, byte for byte."""
    before = path.read_bytes()
    with pytest.raises(StoreError, match=match):
        store_module.migrate_store(path)
    assert path.read_bytes() == before


# ------------------------------------------------------------------ schemas 3, 4, migrated
def older_store(
    path: Path, version: int, sizes=(10, 10, 10, 10), snapshot_at=20, projection=False
) -> str:
    """A finished store of ``make_events`` in batches of ``sizes``, as schema ``version`` (3
    or 4) wrote it: today's tables, each batch's ``events`` the blob itself (schema 3: the
    JSON lines) or its compact form (schema 4), its ``digest`` the JSON lines' sha256 (both)
    and the chain over those; with ``projection`` the per-event table too (built here by
    today's writer). Returns its last chain."""
    build(path, sizes, snapshot_at)
    if projection:
        project(path)
    conn = sqlite3.connect(path)
    chain = ZERO_CHAIN
    with conn:
        rows = conn.execute("SELECT batch, events FROM batches ORDER BY batch").fetchall()
        for batch, stored in rows:
            blob = expand(stored)
            digest = hashlib.sha256(blob).hexdigest()  # schemas 2-4: the JSON lines'
            chain = hashlib.sha256(bytes.fromhex(chain) + bytes.fromhex(digest)).hexdigest()
            conn.execute(
                "UPDATE batches SET events = ?, digest = ?, chain = ? WHERE batch = ?",
                (blob if version == 3 else stored, digest, chain, batch),
            )
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
        conn.execute("UPDATE sessions SET status = 'finished', final_state_hash = ?", ("f" * 64,))
    conn.close()
    return chain


def schema_3_store(path: Path, sizes=(10, 10, 10, 10), snapshot_at=20, projection=False) -> str:
    """:func:`older_store` of schema 3."""
    return older_store(path, 3, sizes, snapshot_at, projection)


def schema_4_store(path: Path, sizes=(10, 10, 10, 10), snapshot_at=20, projection=False) -> str:
    """:func:`older_store` of schema 4."""
    return older_store(path, 4, sizes, snapshot_at, projection)


OLDER = {3: "each batch's events stored as plain JSON lines", 4: "its JSON lines"}


@pytest.mark.parametrize("version", [3, 4])
def test_a_schema_3_or_4_log_is_refused_with_the_command_that_migrates_it(tmp_path, version):
    path = tmp_path / "old.db"
    older_store(path, version)
    before = path.read_bytes()
    for mode in ("r", "a"):
        with pytest.raises(StoreError, match=f"schema_version {version}, expected 5") as caught:
            EventStore.open(path, mode=mode)
        assert f"convert it with `gpuex migrate {path}`" in str(caught.value)
        assert OLDER[version] in str(caught.value)
    report = verify_store(path)
    assert not report.ok and "gpuex migrate" in report.problems[0]
    assert path.read_bytes() == before


@pytest.mark.parametrize("projection", [False, True])
@pytest.mark.parametrize("version", [3, 4])
def test_migrate_rewrites_a_schema_3_or_4_log_with_its_events_session_and_snapshots(
    tmp_path, version, projection
):
    path = tmp_path / "old.db"
    chain = older_store(path, version, sizes=(7, 20, 3), snapshot_at=27, projection=projection)
    old = sqlite3.connect(path)
    old_batches = old.execute("SELECT * FROM batches ORDER BY batch").fetchall()
    old_session = old.execute("SELECT * FROM sessions").fetchall()
    old.close()
    sizes = ((1, 7), (8, 20), (28, 3))
    blobs = [b"".join(encode(e) + b"\n" for e in make_events(f, n)) for f, n in sizes]
    # the fixture is of its schema: the blobs as they are (3) or compact (4), under digests
    # of the JSON lines
    assert [r[3] for r in old_batches] == (blobs if version == 3 else [compact(b) for b in blobs])
    assert [r[4] for r in old_batches] == [hashlib.sha256(b).hexdigest() for b in blobs]
    assert store_module.migrate_store(path) == (30, 3)
    assert verify_store(path).ok
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.db"]  # nothing left beside
    new = sqlite3.connect(path)
    rows = new.execute("SELECT * FROM batches ORDER BY batch").fetchall()
    # the same batches, each blob stored compact, under the stored bytes' digests and chain
    assert [r[:3] for r in rows] == [r[:3] for r in old_batches]
    assert [r[3] for r in rows] == [compact(b) for b in blobs]
    assert [expand(r[3]) for r in rows] == blobs
    assert [r[4:] for r in rows] == schema_5_chain(path)
    assert new.execute("SELECT * FROM sessions").fetchall() == old_session
    assert new.execute("SELECT * FROM snapshots").fetchall() == [(27, '{"x":1}', "h" * 64)]
    assert new.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("5",)
    new.close()
    with EventStore.open(path) as store:
        assert store.digest() == schema_5_chain(path)[-1][1] != chain
        assert not store.has_projection()  # not carried over: gpuex index builds it
        assert list(store.events()) == make_events(1, 30)
        assert list(store.payloads()) == [encode(e) for e in make_events(1, 30)]
    with pytest.raises(StoreError, match="nothing to migrate"):
        store_module.migrate_store(path)


def _edit_older_blob(path: Path, version: int, batch: int, edit) -> None:
    """Replace batch ``batch``'s JSON lines by ``edit(lines)`` in a schema-3 or -4 store,
    stored as that schema stores them, its digest and chain left as they were."""
    stored = _stored(path, batch)
    blob = edit(stored if version == 3 else expand(stored))
    new = blob if version == 3 else compact(blob)
    sql(path, "UPDATE batches SET events = ? WHERE batch = ?", (new, batch))


@pytest.mark.parametrize("version", [3, 4])
def test_migrate_refuses_a_damaged_schema_3_or_4_log_and_leaves_it_as_it_was(tmp_path, version):
    path = tmp_path / "old.db"
    older_store(path, version)
    # an event edited behind the store's back: its batch's old digest no longer holds (the
    # new digest, the stored bytes', would be computed afresh: only the old one can tell)
    _edit_older_blob(
        path, version, 3, lambda blob: blob.replace(b'"trade_id":23', b'"trade_id":24')
    )
    assert_migrate_refused(path, r"batch 3 \(seqs 21..30\): digest mismatch")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.db"]


@pytest.mark.parametrize("version", [3, 4])
def test_migrate_checks_the_old_chain_as_it_reads(tmp_path, version):
    """A forger who edits a batch and recomputes its old digest but not the chain: the new
    file's chain is new, so only the old chain, recomputed while reading, can tell."""
    path = tmp_path / "old.db"
    older_store(path, version)

    def forged(blob: bytes) -> bytes:
        return blob.replace(b'"trade_id":23', b'"trade_id":24')

    _edit_older_blob(path, version, 3, forged)
    blob = forged(b"".join(encode(e) + b"\n" for e in make_events(21, 10)))
    digest = hashlib.sha256(blob).hexdigest()
    sql(path, "UPDATE batches SET digest = ? WHERE batch = 3", (digest,))
    assert_migrate_refused(path, r"batch 3 \(seqs 21..30\): chain break")


def test_migrate_refuses_a_schema_4_stored_form_that_does_not_expand(tmp_path):
    path = tmp_path / "old.db"
    schema_4_store(path)
    sql(path, "UPDATE batches SET events = ? WHERE batch = 2", (b"\xfe",))
    assert_migrate_refused(path, r"batch 2 \(seqs 11..20\): its stored events do not")


def test_migrate_refuses_what_it_cannot_convert(tmp_path):
    path = tmp_path / "s.db"
    build(path)
    with pytest.raises(StoreError, match="already schema_version 5; nothing to migrate"):
        store_module.migrate_store(path)
    sql(path, "UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema_version 1; only 2, 3, 4 can be migrated"):
        store_module.migrate_store(path)


# ------------------------------------------------------------------ a damaged stored form
def _stored(path: Path, batch: int) -> bytes:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT events FROM batches WHERE batch = ?", (batch,)).fetchone()[0]
    finally:
        conn.close()


#: stored forms of batch 3 (seqs 21..30) that do not expand: the codec's own verdict
DAMAGED_STORED_FORMS = {
    "empty": lambda stored: b"",
    "an unknown format byte": lambda stored: b"\xfe" + stored[1:],
}


@pytest.mark.parametrize("damage", DAMAGED_STORED_FORMS.values(), ids=DAMAGED_STORED_FORMS.keys())
@pytest.mark.parametrize("projection", [False, True])
@pytest.mark.parametrize("batch", [3, 4])  # 4: the last (its seqs are not "missing at the end")
def test_a_stored_form_that_does_not_expand_is_a_damaged_batch(db, damage, projection, batch):
    if projection:
        project(db)
    first = batch * 10 - 9
    stored = damage(_stored(db, batch))
    with pytest.raises(store_module.CompactError):
        expand(stored)
    sql(db, "UPDATE batches SET events = ? WHERE batch = ?", (stored, batch))
    said = f"batch {batch} (seqs {first}..{first + 9}): its stored events are damaged: they do "
    said += "not expand"
    for check in (True, False):  # an unchecked read cannot read it either
        with EventStore.open(db) as store, pytest.raises(store_module.DamagedLogError) as caught:
            list(store.events(start=first + 4, check=check))
        assert caught.value.seq == first and said in caught.value.problem, caught.value
    with EventStore.open(db) as store:
        before = list(range(1, first))
        assert [e.seq for e in store.events(stop=first - 1)] == before  # before it: sound
        after = list(range(first + 10, 41))
        assert [r[0] for r in store.rows(start=first + 10)] == after  # after it too
        with pytest.raises(store_module.DamagedLogError, match="do not expand"):
            list(store.rows(start=first + 9, stop=first + 9))  # a read of one of its seqs
    report = verify_store(db)
    assert not report.ok and (report.first_bad_seq, report.first_bad_batch) == (first, batch)
    # one problem, not "missing at the end" nor its projection rows "no event of the log"
    assert [p for p in report.problems if "seq" in p] == [
        p for p in report.problems if p.startswith(said)
    ]
    assert report.problems[0].startswith(said), report.problems


def test_a_stored_form_that_hashes_right_but_does_not_expand_is_a_damaged_batch(db):
    """Schema 5 hashes the stored bytes before expanding them: a forger who recomputes the
    digest and the chain over a stored form that does not expand passes both, and the
    expansion still refuses it, checked read or verify."""
    sql(db, "UPDATE batches SET events = ? WHERE batch = 2", (b"\xfe",))
    conn = sqlite3.connect(db)
    with conn:  # the careful forger: digest and chain of the damaged bytes, from batch 2 on
        chain = conn.execute("SELECT chain FROM batches WHERE batch = 1").fetchone()[0]
        rows = conn.execute("SELECT batch, events FROM batches WHERE batch >= 2 ORDER BY batch")
        for batch, stored in rows.fetchall():
            digest = hashlib.sha256(stored).hexdigest()
            chain = hashlib.sha256(bytes.fromhex(chain) + bytes.fromhex(digest)).hexdigest()
            conn.execute(
                "UPDATE batches SET digest = ?, chain = ? WHERE batch = ?", (digest, chain, batch)
            )
    conn.close()
    with EventStore.open(db) as store, pytest.raises(store_module.DamagedLogError) as caught:
        list(store.events())
    assert caught.value.seq == 11 and "do not expand" in caught.value.problem
    report = verify_store(db)
    assert not report.ok and report.first_bad_seq == 11
    assert "do not expand" in report.problems[0] and "chain" not in report.problems[0]


def test_a_stored_form_damaged_into_other_lines_is_a_digest_mismatch(db):
    """A stored form that still expands, to lines other than those committed: the digest
    (of the expanded blob) tells."""
    blob = expand(_stored(db, 3)).replace(b'"trade_id":23', b'"trade_id":24')
    sql(db, "UPDATE batches SET events = ? WHERE batch = 3", (compact(blob),))
    with EventStore.open(db) as store, pytest.raises(store_module.DamagedLogError) as caught:
        list(store.payloads())
    assert caught.value.seq == 21 and "digest mismatch" in caught.value.problem
    report = verify_store(db)
    assert not report.ok and report.first_bad_batch == 3
    assert any("batch 3 (seqs 21..30): digest mismatch" in p for p in report.problems)


#: docs/event_store.md's post-mortem queries, as they are documented (kind 'Default'); the
#: one over the blobs with the store's ``expand`` registered as an SQL function (Python)
BLOB_QUERY = """
SELECT json_extract(e.value, '$[0]') AS seq, json_extract(e.value, '$[1]') AS t,
       json_extract(e.value, '$[4]') AS account, json_extract(e.value, '$[12]') AS data
FROM batches,
     json_each('[' || replace(rtrim(CAST(expand(events) AS TEXT), char(10)), char(10), ',')
               || ']') AS e
WHERE json_extract(e.value, '$[2]') = 'Default'
ORDER BY seq
"""
PROJECTION_QUERY = """
SELECT seq, t, account, json_extract(payload, '$[12]') AS data
FROM events WHERE kind = 'Default' ORDER BY seq
"""


@pytest.mark.parametrize("kind", ["Fill", "CommandReceived"])
def test_the_documented_plain_sql_reads_the_blobs_and_the_projection_alike(db, kind):
    with EventStore.open(db) as store:
        expected = [
            (e.seq, e.t, e.account, None if e.data is None else orjson.dumps(e.data).decode())
            for e in store.events(kind=kind)
        ]
    assert expected
    conn = sqlite3.connect(db)
    conn.create_function("expand", 1, expand, deterministic=True)
    assert conn.execute(BLOB_QUERY.replace("'Default'", f"'{kind}'")).fetchall() == expected
    conn.close()
    project(db)
    conn = sqlite3.connect(db)
    assert conn.execute(PROJECTION_QUERY.replace("'Default'", f"'{kind}'")).fetchall() == expected
    conn.close()


_ANY_TEXT = st.text(alphabet=st.sampled_from('ab,[]{}":\\\n\t\u00e9\u2603 nul-0'), max_size=6)
_ANY_INT = st.integers(-(2**63), 2**63 - 1)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.none() | _ANY_TEXT, st.none() | _ANY_INT, st.none() | _ANY_TEXT | _ANY_INT),
        min_size=1,
        max_size=5,
    )
)
def test_the_typed_fields_parsed_in_c_are_the_decoded_events(fields):
    """A replay's rows come from each line's start, parsed in C (exchange.store._reader.typed_rows):
    they must be the decoded events' typed fields, whatever the text and ints hold."""
    from exchange.store._reader import typed_rows

    events = [
        Event(seq, -seq, "Fill", text, text, number, None, number, None, None, text, None, data)
        for seq, (text, number, data) in enumerate(fields, 5)
    ]
    blob = b"".join(encode(e) + b"\n" for e in events)
    rows = typed_rows(blob, 5, len(events), len(TYPED_FIELDS), store_module._typed_line)
    assert rows == [tuple(e[: len(TYPED_FIELDS)]) for e in events]
    assert [[type(v) for v in r] for r in rows] == [
        [type(v) for v in e[: len(TYPED_FIELDS)]] for e in events
    ]
    assert typed_rows(blob, 6, len(events), len(TYPED_FIELDS), store_module._typed_line) is None
    assert typed_rows(blob, 5, len(events) + 1, len(TYPED_FIELDS), store_module._typed_line) is None


def test_a_writers_close_deletes_a_large_wal_whole_and_frees_it_off_the_closing_thread(
    tmp_path, monkeypatch
):
    """Freeing a WAL of tens of MiB costs the kernel 0.1 s, at the end of a run: the close
    checkpoints the WAL and lets SQLite delete it (not truncate it first), and a descriptor
    it held lets another thread drop the deleted file's blocks."""
    import contextlib
    import threading

    monkeypatch.setattr(store_module, "_FREE_AFTER_BYTES", 1)  # this small WAL counts as large
    path = tmp_path / "s.db"
    build(path)
    store = EventStore.open(path, mode="a")
    store.append(make_events(41, 10))
    mine = os.open(f"{path}-wal", os.O_RDONLY)
    wal = os.fstat(mine)
    closed_on = []
    close = os.close

    def noting_close(fd):
        with contextlib.suppress(OSError):
            st = os.fstat(fd)
            if fd != mine and (st.st_dev, st.st_ino) == (wal.st_dev, wal.st_ino):
                closed_on.append(threading.current_thread())
        close(fd)

    monkeypatch.setattr(os, "close", noting_close)
    try:
        store.close()
        for thread in threading.enumerate():
            if thread.name == "gpuex-wal-free":
                thread.join(30)
        after = os.fstat(mine)
    finally:
        close(mine)
    assert _in_rollback_mode_alone(path)  # gone from the folder when close returns
    assert after.st_nlink == 0 and after.st_size == wal.st_size  # deleted whole, not emptied
    assert closed_on and threading.main_thread() not in closed_on
    assert verify_store(path).ok
    with EventStore.open(path) as reopened:
        assert reopened.last_seq == 50
