"""The event store: one SQLite file per session, append-only, checksummed, replayable.

Layout (schema version :data:`SCHEMA_VERSION`; see ``docs/event_store.md``):

* ``meta`` (key, value): ``format`` = ``gpuex-event-store``, ``schema_version``, and
  ``typed_fields`` (the comma-joined :data:`exchange.core.events.TYPED_FIELDS` the projection's
  columns are made for).
* ``sessions``: one row -- session id, scenario, seed, code version, config (canonical JSON),
  durability, status (``running`` | ``finished``), ``last_seq``, ``started_t`` and
  ``finished_t`` (simulated ns), ``final_state_hash``.
* ``batches``: the log itself, one row per batch: ``batch`` (1, 2, 3, ...), ``first_seq``,
  ``last_seq``, ``events`` (the batch's *blob* -- every event's canonical payload,
  :func:`exchange.core.events.encode`, followed by ``b"\\n"``, in seq order -- stored in its
  compact form, :func:`exchange.store.compact.compact`; every read expands it first, but a
  replay's, which reads the tokens themselves: ``rows(..., parse_stored=...)``, decision 101),
  ``digest`` (sha256 hex of the stored bytes, the compact form -- schema 5; schemas 2-4
  hashed the JSON lines, 5x more bytes) and ``chain`` (sha256 hex of
  ``bytes.fromhex(previous chain) + bytes.fromhex(digest)``; the chain before batch 1 is 64
  zeros). The last chain (:meth:`EventStore.digest`) identifies the whole log; the same
  events in the same batches had another chain in schemas 2-4.
* ``snapshots``: ``seq``, ``state`` (JSON), ``state_hash`` -- caches of folded state.
* ``events`` (only once built: *the projection*): one row per event -- ``seq``, the typed
  fields of :class:`~exchange.core.events.Event` as columns, ``payload`` (the event's line of its
  batch, as text) and ``batch`` -- with the post-mortem indexes, for plain-SQL post-mortems.
  Built by :meth:`EventStore.build_indexes` (``gpuex index PATH``) or
  :meth:`EventStore.ensure_projection` (the read commands, on a closed, writable file), in
  one transaction; never on a run's path.

Nothing in a file depends on the wall clock or on chance: the same events appended in the same
batches give the same file, byte for byte (the default session id is derived from the
scenario, seed, config and code version).

**Durability.** Appends go through SQLite's write-ahead log (WAL) while a writer has the file
open. ``durability="normal"`` runs with ``PRAGMA synchronous=NORMAL``: a commit is a write to
the WAL without fsync, and the WAL is fsynced only at checkpoints (a background thread runs
them every few MiB of appends, see ``_BG_CHECKPOINT_BYTES``). That is safe against an
application crash (an exception, ``SIGKILL``): every committed batch survives, because it is in
the operating system's page cache. A power loss or an OS crash can lose the last committed
batches (those written since the last checkpoint), but never corrupts the file: after
recovery the log ends at an earlier batch boundary and its chain still verifies.
``durability="full"`` (``PRAGMA synchronous=FULL``) fsyncs the WAL at every commit, so a
committed batch survives power loss too, at the cost of one fsync per batch.

**Checked reads.** :meth:`EventStore.events`, :meth:`EventStore.rows` and
:meth:`EventStore.payloads` read the batch blobs: each batch proves itself by its digest and
the chain (checked once per store up to ``sessions.last_seq``), and each event of it must be
the next seq. With filters and the projection present, they read the projection instead,
once it has been proved equal to the blobs (a projection row that differs raises
:class:`DamagedLogError` naming its seq).

**Closed files.** A writer's :meth:`~EventStore.close` checkpoints the WAL and switches the
file back to the rollback-journal mode, so a closed store is one self-contained file and a
read-only open (``mode="r"``, an SQLite ``mode=ro`` URI) creates and changes nothing -- except
after a writer killed inside that switch: its hot journal is rolled back first (see
``_connect_ro``), which restores the last committed state and changes no committed byte.

Units: ``t``/``started_t``/``finished_t`` in simulated nanoseconds; sequence numbers count
events from 1; throughput figures in events per second.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import os
import re
import sqlite3
import threading
import typing
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from exchange.core.events import ENCODE_OPTIONS, TYPED_FIELDS, Event, decode, encode
from exchange.store.compact import CompactError, compact, expand

#: Bump whenever the layout of the file changes.
SCHEMA_VERSION = 5  # 5: the digest over the stored bytes (4: over the JSON lines, stored
# compact; 3: stored as they are; 2: one row per event)
#: The schemas ``gpuex migrate`` converts to :data:`SCHEMA_VERSION`, and what a file of each
#: holds (said when ``open`` refuses one).
_SCHEMAS_BEFORE = {
    "2": "one row per event, written by an older gpuex",
    "3": "each batch's events stored as plain JSON lines, written by an older gpuex",
    "4": "each batch's digest over its JSON lines, written by an older gpuex",
}
#: The ``meta`` value of ``format`` that marks a gpuex event store.
FORMAT = "gpuex-event-store"
#: The chain value before the first batch.
ZERO_CHAIN = "0" * 64
DURABILITY_PRAGMAS = {"full": "FULL", "normal": "NORMAL"}

_N_TYPED = len(TYPED_FIELDS)
_TYPED_COLUMNS = ", ".join(TYPED_FIELDS)
if Event._fields != (*TYPED_FIELDS, "data"):  # append() relies on it (see there)
    raise ImportError(
        "exchange.store.event_store expects Event's fields to be TYPED_FIELDS + ('data',)"
    )
_N_FIELDS = len(Event._fields)
#: The projection's columns: the typed fields, the event's line of its batch, the batch.
_PROJECTION_COLUMNS = (*TYPED_FIELDS, "payload", "batch")
_ONE_ROW = f"({', '.join('?' * len(_PROJECTION_COLUMNS))})"
_INSERT_PROJECTION = f"INSERT INTO events ({', '.join(_PROJECTION_COLUMNS)}) VALUES {_ONE_ROW}"
#: Rows per multi-row INSERT when the projection is built (14 columns -> 1,400 parameters):
#: one statement step per 100 rows instead of per row.
_ROWS_PER_INSERT = 100
_INSERT_PROJECTION_MANY = (
    f"INSERT INTO events ({', '.join(_PROJECTION_COLUMNS)}) VALUES "
    + ", ".join([_ONE_ROW] * _ROWS_PER_INSERT)
)
#: Post-mortem indexes (columns) of the projection, created by
#: :meth:`EventStore.build_indexes`. Those on nullable columns are partial (``WHERE col IS
#: NOT NULL``): smaller and quicker to build, and SQLite still uses them for ``col = ?`` and
#: ``col IN (...)``. ``seq`` is the rowid, which every SQLite index carries as its last key
#: column, so an index on ``(kind)`` already serves ``kind = ? AND seq BETWEEN ? AND ?
#: ORDER BY seq`` without a sort.
INDEXES = (
    ("kind",),
    ("account",),
    ("instrument",),
    ("counterparty",),
    ("order_id",),
    ("t",),
)
_NOT_NULL_COLUMNS = ("seq", "t", "kind")

#: The tables of a new store (:meth:`EventStore.create`), in the words ``sqlite_utils``'s
#: ``Table.create`` gave them until it left the writer's path: the schema a reader sees in
#: ``sqlite_master`` is unchanged.
_CREATE_META = """CREATE TABLE "meta" (
   "key" TEXT PRIMARY KEY,
   "value" TEXT NOT NULL
) STRICT"""
_CREATE_SESSIONS = """CREATE TABLE "sessions" (
   "session_id" TEXT NOT NULL,
   "scenario" TEXT NOT NULL,
   "seed" INTEGER NOT NULL,
   "code_version" TEXT,
   "config" TEXT,
   "durability" TEXT,
   "status" TEXT NOT NULL,
   "last_seq" INTEGER NOT NULL,
   "started_t" INTEGER,
   "finished_t" INTEGER,
   "final_state_hash" TEXT
) STRICT"""
_CREATE_BATCHES = """CREATE TABLE "batches" (
   "batch" INTEGER PRIMARY KEY,
   "first_seq" INTEGER NOT NULL,
   "last_seq" INTEGER NOT NULL,
   "events" BLOB NOT NULL,
   "digest" TEXT NOT NULL,
   "chain" TEXT NOT NULL
) STRICT"""
_CREATE_SNAPSHOTS = """CREATE TABLE "snapshots" (
   "seq" INTEGER PRIMARY KEY,
   "state" TEXT NOT NULL,
   "state_hash" TEXT NOT NULL
) STRICT"""
#: Event fields usable as filters in :meth:`EventStore.events` / :meth:`EventStore.rows`.
FILTER_FIELDS = ("kind", "account", "instrument", "order_id", "counterparty", "counter_order_id")
#: Page size of new stores (SQLite's default is 4,096). Larger pages mean fewer WAL frames,
#: hence fewer write calls per commit and fewer pages to checkpoint; 16 KiB measured better
#: than 4 KiB for appends (see benches/README.md). Existing files keep their page size.
_PAGE_SIZE = 16_384
#: WAL checkpoints. SQLite's automatic checkpoint is off for a writer; instead a background
#: thread (:class:`_Checkpointer`) checkpoints after every ``_BG_CHECKPOINT_BYTES`` of
#: appended payload (about 1.3 MiB of WAL), copying pages and fsyncing off the appending
#: thread (what is left at the writer's close is copied and synced on the run's path: the
#: less, the sooner it returns; decision 114), and after every ``_WAL_RESTART_BYTES`` (about
#: 60 MiB of WAL) the writer itself
#: checkpoints what is left (the last few batches) between two transactions, so that the
#: next transaction restarts the WAL from its beginning instead of growing the file.
_BG_CHECKPOINT_BYTES = 1 << 20
_WAL_RESTART_BYTES = 48 << 20
#: A writer's page cache. Appends touch only the B-tree's right edge and every committed page
#: is in the WAL, so a cache that holds a transaction (a few batches: well under 1 MiB on
#: ``flow``) serves them; a larger one only grows, each new page of it faulted in and zeroed
#: by the kernel (64 MiB, until decision 105, cost the journaller ~0.04 s of CPU on the
#: kernel bench, appends nothing). Index builds set their own (``_INDEX_SORT_CACHE_KIB``).
_CACHE_KIB = 8_192
#: A writer's close leaves the freeing of a deleted WAL at least this large to a thread
#: (:func:`_release`); a smaller one costs less than the thread.
_FREE_AFTER_BYTES = 8 << 20
#: The page cache while the indexes are built, which bounds each in-memory run of SQLite's
#: sorter (see :meth:`EventStore.build_indexes`).
_INDEX_SORT_CACHE_KIB = 4_096
_BUSY_TIMEOUT_S = 10.0
_MAX_REPORTED_PROBLEMS = 200
#: Long reads (``verify_store``, ``session.verify``) report their progress every this many
#: events: often enough for a progress bar, rarely enough to cost nothing.
PROGRESS_EVERY = 16_384
#: ``{None: nan}.get`` maps None to NaN, which SQLite binds as NULL (see ``_insert_projection``).
_NULL_AS_NAN = {None: float("nan")}
_new_tuple = tuple.__new__
_UNSET = object()  # an attribute not found yet


class _Checkpointer:
    """Background WAL checkpoints for a writer: a daemon thread with its own connection runs
    ``PRAGMA wal_checkpoint(PASSIVE)`` when :meth:`request` is called, so that copying WAL
    pages into the database file and the fsyncs happen off the appending thread (SQLite
    releases the GIL while it checkpoints). A passive checkpoint never blocks the writer or
    readers; it copies what it can and fsyncs the WAL before and the database after.

    The writer also checkpoints itself, less often (:meth:`checkpoint_now`): only a
    checkpoint that completes between two of its transactions lets SQLite restart the WAL
    from its start (bounding the WAL file), and by then the background thread has already
    copied most of the pages.

    The checkpoint timing depends on threads, but not the file: a checkpoint copies
    committed pages, and what a closed store holds is decided by its transactions alone."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._wake = threading.Event()
        self._lock = threading.Lock()  # held while either side checkpoints
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="gpuex-checkpoint", daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(str(self._path), timeout=_BUSY_TIMEOUT_S)
        except sqlite3.Error:
            return  # no background checkpoints: the writer's own ones still run
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop:
                    return
                # busy or failed: the next request (or the writer's own checkpoint) catches up
                with self._lock, contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            conn.close()

    def checkpoint_now(self, conn: sqlite3.Connection) -> bool:
        """A passive checkpoint on the writer's connection ``conn``, between two of its
        transactions, once the background thread is idle. True if it copied the whole WAL:
        SQLite then restarts the WAL at the next transaction."""
        with self._lock:
            try:
                _busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.OperationalError:
                return False
        return frames == done

    def stop(self) -> None:
        """Checkpoint no more; a checkpoint under way finishes on its own (:meth:`close`
        waits for it)."""
        self._stop = True
        self._wake.set()

    def close(self) -> None:
        self.stop()
        self._thread.join()


class StoreError(Exception):
    """The file is not a usable gpuex event store (wrong schema version, not a store, sealed)."""


class DamagedLogError(StoreError):
    """A read met an event row that does not prove itself (see :meth:`EventStore.rows`):
    ``seq`` is where, ``problem`` what. ``gpuex verify`` lists every problem of the file."""

    def __init__(self, path: Path | str, seq: int, problem: str) -> None:
        self.path = path
        self.seq = seq
        self.problem = problem
        super().__init__(f"{path}: damaged log at seq {seq}: {problem}")

    def __reduce__(self):  # rebuilt from its fields where it crosses processes
        return type(self), (self.path, self.seq, self.problem)


class IndexBuildError(StoreError):
    """SQLite could not build the post-mortem indexes (a full disk or temporary directory,
    say). The log is untouched by it -- as complete and sound as before -- and a later
    :meth:`EventStore.build_indexes` (``gpuex index PATH``) builds them."""


def _column_type(name: str) -> type:
    """SQLite column type of an Event field, from its annotation (``int | None`` -> int)."""
    hint = typing.get_type_hints(Event)[name]
    options = set(typing.get_args(hint)) - {type(None)} or {hint}
    if options == {int}:
        return int
    if options == {str}:
        return str
    raise TypeError(f"Event.{name}: no SQLite column type for {hint!r}")


#: Per typed field, what :func:`exchange.store._writer.first_bad` requires (``i``/``s``: an int /
#: a str, NOT NULL; ``I``/``S``: or None): the checks schema 2's STRICT columns made.
_CODES = bytes(
    (ord("i") if _column_type(name) is int else ord("s")) - (0 if name in _NOT_NULL_COLUMNS else 32)
    for name in TYPED_FIELDS
)


def _writer() -> Any:
    """``exchange.store._writer`` (the batch blob in C), or None when it is not built (the store
    then checks and encodes in Python: the same blob)."""
    try:
        from exchange.store import _writer
    except ImportError:  # pragma: no cover - the extension is part of every install
        return None
    return _writer


def _first_bad_py(events: Sequence[Any], first: int) -> tuple[int, str | None] | None:
    """:func:`exchange.store._writer.first_bad` in Python (the same verdicts)."""
    for k, event in enumerate(events):
        if not isinstance(event, tuple | list):
            return k, f"an event must be a tuple (exchange.core.events.Event), not {event!r:.200}"
        if len(event) != _N_FIELDS:
            return k, f"events must have the {_N_FIELDS} fields of Event"
        if type(event[0]) is not int or event[0] != first + k:
            return k, None
        for i in range(1, _N_TYPED):
            value, code = event[i], chr(_CODES[i])
            name = TYPED_FIELDS[i]
            if value is None:
                if code in "is":
                    return k, f"event seq {first + k}: {name} is None (NOT NULL)"
            elif code in "iI":
                if type(value) is not int:
                    return k, (
                        f"event seq {first + k}: {name} is {value!r:.80} "
                        f"({type(value).__name__}), not an integer"
                    )
                if not -(1 << 63) <= value < 1 << 63:
                    return k, f"event seq {first + k}: {name} {value} does not fit in int64"
            elif type(value) is not str:
                return k, (
                    f"event seq {first + k}: {name} is {value!r:.80} "
                    f"({type(value).__name__}), not text"
                )
    return None


def _encode_batch_py(events: Sequence[Any]) -> bytes:
    """:func:`exchange.store._writer.encode_batch` in Python (the same blob)."""
    dumps = orjson.dumps
    return b"".join([dumps(tuple(e), option=ENCODE_OPTIONS) + b"\n" for e in events])


def _row_reader(conn: sqlite3.Connection, path: Path, sql: str, params: list[Any]) -> Any:
    """The typed rows of ``sql`` read in C (``exchange.store._reader``), or None when that
    path is not built or cannot take this connection, its text factory or these parameters
    (the store then reads through a Python ``sqlite3`` cursor: the same rows)."""
    if conn.text_factory is not str:
        return None
    try:
        from exchange.store._reader import RowReader
    except ImportError:  # pragma: no cover - the extension is part of every install
        return None
    try:
        return RowReader(conn, str(path.resolve()), sql, params)
    except ValueError:
        return None


def _index_name(columns: Sequence[str]) -> str:
    return "idx_events_" + "_".join(columns)


def _ro_uri(path: Path) -> str:
    return path.resolve().as_uri() + "?mode=ro"


#: SQLite's "attempt to write a readonly database" when a read-only connection finds a hot
#: journal: a rollback journal left by a writer that died inside a transaction.
_SQLITE_READONLY_ROLLBACK = 776


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch ``conn``'s database to WAL, running the pragma to its end.

    Not ``sqlite_utils.Database.enable_wal``: it leaves the pragma's cursor, with its one row
    unread, in a local of ``Database.execute``. ``PRAGMA journal_mode`` is a write statement to
    SQLite, and while that cursor lives the statement stays active, so the next SAVEPOINT fails
    with "cannot open savepoint - SQL statements in progress". Normally the cursor dies on
    return, but anything holding the frame keeps it alive: a sampling profiler (Dask's, in
    every sweep worker), a tracer (issue #17, point 14). Fetching the row resets the statement
    at once, whoever holds what."""
    conn.execute("PRAGMA journal_mode=WAL").fetchall()


def _wal_file_alone(path: Path) -> bool:
    """Is ``path`` in WAL mode (header bytes 18-19) with no ``-wal`` file beside it, nor a
    ``-journal``? No writer has it open then (a writer's WAL file exists while it is open).

    A non-empty ``-journal`` beside it may be hot: the header's WAL bytes are then the
    uncommitted half of a switch to or from WAL (a writer killed inside it), and the file
    must be read as SQLite reads it, journal rolled back first, not as it lies (immutable).
    A kill inside the WAL switch of a new, empty file left one: read as it lay, the file
    showed a header and no tables, whereas rolled back it is empty."""
    try:
        with path.open("rb") as f:
            header = f.read(20)
    except OSError:
        return False
    if header[18:20] != b"\x02\x02" or Path(f"{path}-wal").exists():
        return False
    try:
        return Path(f"{path}-journal").stat().st_size == 0
    except FileNotFoundError:
        return True


def _hold_large_wal(path: Path) -> int | None:
    """A descriptor of ``path``'s WAL file if it holds at least ``_FREE_AFTER_BYTES`` (else
    None), taken before a writer's close deletes it: see :func:`_release`."""
    try:
        fd = os.open(f"{path}-wal", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        if os.fstat(fd).st_size >= _FREE_AFTER_BYTES:
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _release(fd: int) -> None:
    """Close ``fd``, a descriptor of a WAL file (:func:`_hold_large_wal`), on a thread of its
    own when SQLite has deleted the file, else here.

    Deleting a WAL of tens of MiB frees its blocks and page cache in the kernel: 0.1 s for
    100 MiB measured (a 1M-event run's), on the writer's close, which is the end of a run.
    Whoever closes the last descriptor of a deleted file pays for that, so the close holds
    one and lets a thread drop it: the freeing runs on the machine's other core, the run
    returns. The file is gone from the folder when the close returns, its content already
    checkpointed into the database and synced; only the kernel's bookkeeping is left."""
    try:
        gone = os.fstat(fd).st_nlink == 0
    except OSError:
        gone = False
    if gone:
        threading.Thread(target=os.close, args=(fd,), name="gpuex-wal-free", daemon=True).start()
    else:
        os.close(fd)


def _database(conn: sqlite3.Connection) -> Any:
    """``conn`` wrapped in a ``sqlite_utils.Database`` (its table creation, for the
    projection). Imported here, not with the module: sqlite_utils (and numpy with it) is half
    of the journaller's start-up (0.2-0.3 s of 0.4-0.6 s, measured), and neither a run (its
    store's creation included: :meth:`EventStore.create` writes plain SQL) nor the journaller
    needs it."""
    import sqlite_utils

    return sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)


def _connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection (SQLite ``mode=ro`` URI): it cannot change the file's content.

    One exception, which changes no committed byte: a writer killed inside a rollback-journal
    transaction (a store's ``close`` leaves WAL mode in one, so a run killed at that moment
    does) leaves a *hot journal*, which a read-only connection may not roll back and so
    cannot read past. A short read-write connection then lets SQLite roll it back, as any
    writer's open would, restoring the last committed state; the read-only one follows."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such event store")

    def read_only() -> sqlite3.Connection:
        uri = _ro_uri(path)
        if _wal_file_alone(path):
            # a file left in WAL mode whose -wal is gone (copied alone, say): everything it
            # holds is in the file, and an ordinary read-only open would create -wal and -shm
            # files beside it, or fail where it cannot (read-only storage)
            uri += "&immutable=1"
        return sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT_S)

    conn = read_only()
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", None) != _SQLITE_READONLY_ROLLBACK:
            return conn  # not a store, damaged...: the caller's first query says so its way
        conn.close()
        recovering = sqlite3.connect(str(path), timeout=_BUSY_TIMEOUT_S)
        try:
            recovering.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            recovering.close()
        conn = read_only()  # rolled back, the file may be one left in WAL mode, alone
    except BaseException:
        conn.close()
        raise
    return conn


def _chain(previous: str, digest: str) -> str:
    return hashlib.sha256(bytes.fromhex(previous) + bytes.fromhex(digest)).hexdigest()


def _stored_problem(batch: Any, first: Any, last: Any, exc: CompactError) -> str:
    """What is wrong with batch ``batch``'s ``events`` column when it does not expand."""
    return (
        f"batch {batch} (seqs {first}..{last}): its stored events are damaged: they do not "
        f"expand ({exc}; the batch row was edited, or the file damaged)"
    )


def _expand_stored(path: Path, batch: Any, first: Any, last: Any, stored: Any) -> Any:
    """The blob (the JSON lines) of batch ``batch`` whose ``events`` column holds ``stored``
    (its compact form); ``stored`` itself when it is not bytes (a NULL, a text: the callers
    say so, as of any blob that is not its events). A stored form that does not expand is
    :class:`DamagedLogError` at the batch's first seq, whatever the read (a digest cannot
    even be computed)."""
    if type(stored) is not bytes:
        return stored
    try:
        return expand(stored)
    except CompactError as exc:
        seq = first if type(first) is int else 1
        raise DamagedLogError(path, seq, _stored_problem(batch, first, last, exc)) from None


def _default_session_id(scenario: str, seed: int, config_json: str, code_version: str) -> str:
    ident = orjson.dumps(
        {"scenario": scenario, "seed": seed, "config": config_json, "code_version": code_version},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(ident).hexdigest()[:32]


def _check_header(conn: sqlite3.Connection, path: Path) -> None:
    """Raise :class:`StoreError` unless ``conn`` is a gpuex store of this schema version (a
    store of schema 2, 3 or 4 is refused with the command that converts it)."""
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            # what a run killed while creating its file left before creation was atomic
            raise StoreError(
                f"{path}: holds no event log (an SQLite file with no tables: nothing was "
                "ever committed to it; `gpuex run --resume` starts it afresh)"
            )
        if "meta" not in tables:
            raise StoreError(f"{path}: not a gpuex event store (no meta table)")
        meta = dict(conn.execute("SELECT key, value FROM meta"))
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a readable SQLite event store ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise StoreError(f"{path}: not a gpuex event store (meta.format={meta.get('format')!r})")
    found = meta.get("schema_version")
    if found in _SCHEMAS_BEFORE:
        raise StoreError(
            f"{path}: event store schema_version {found}, expected {SCHEMA_VERSION} "
            f"({_SCHEMAS_BEFORE[found]}); convert it with `gpuex migrate {path}`"
        )
    if found != str(SCHEMA_VERSION):
        raise StoreError(
            f"{path}: event store schema_version {found}, expected {SCHEMA_VERSION} "
            "(written by another version of gpuex)"
        )
    fields = meta.get("typed_fields")
    if fields != ",".join(TYPED_FIELDS):
        raise StoreError(
            f"{path}: event store typed_fields {fields!r}, expected {','.join(TYPED_FIELDS)!r}"
        )
    missing = {"sessions", "batches", "snapshots"} - tables
    if missing:
        raise StoreError(f"{path}: damaged event store (missing tables {sorted(missing)})")


def _blob_fields(blob: bytes) -> list[Any]:
    """The events of a batch blob, each as the list of its fields, in one orjson call: the
    lines joined by commas inside brackets are one JSON array (compact JSON holds no raw
    newline). Raises ``orjson.JSONDecodeError`` for a blob that is not one event a line."""
    return orjson.loads(b"[" + blob[:-1].replace(b"\n", b",") + b"]")


def _batch_problem(batch: Any, first: int, last: int, blob: Any) -> tuple[int, str] | None:
    """Where and why the blob of batch ``batch`` (seqs ``first..last``) is not its events,
    one a line, seqs ``first..last`` in order: ``(seq, problem)``, or None if it is."""
    where = f"batch {batch} (seqs {first}..{last})"
    if type(blob) is not bytes:
        kind = "NULL" if blob is None else type(blob).__name__
        return first, f"{where}: its events are {kind}, not a blob (the batch row was edited)"
    lines = blob.split(b"\n")
    if lines.pop() != b"":
        return first + len(lines), f"{where}: its events blob does not end with a newline"
    for i, line in enumerate(lines):
        seq = first + i
        try:
            event = decode(line)
        except (ValueError, TypeError) as exc:
            return seq, f"seq {seq}: the payload is not a valid event ({exc})"
        if event.seq != seq:
            return (
                seq,
                f"seq {seq}: the payload is event seq {event.seq} (events reordered or moved)",
            )
    if len(lines) != last - first + 1:
        seq = first + len(lines) if len(lines) < last - first + 1 else last + 1
        return seq, f"{where}: its blob holds {len(lines)} events, not {last - first + 1}"
    return None


def _sound_fields(blob: Any, first: int, last: int) -> list[Any] | None:
    """The events of a batch blob as field lists when they are seqs ``first..last`` in
    order, each of the ``Event`` fields; None otherwise (:func:`_batch_problem` says why)."""
    if type(blob) is not bytes or not blob.endswith(b"\n"):
        return None
    try:
        fields = _blob_fields(blob)
        if (
            len(fields) == last - first + 1
            and all(type(f) is list and len(f) == _N_FIELDS for f in fields)
            and [f[0] for f in fields] == list(range(first, last + 1))
        ):
            return fields
    except orjson.JSONDecodeError:
        pass
    return None


def _c_reader() -> Any:
    """``exchange.store._reader`` (the typed fields of a blob parsed in C), or None."""
    try:
        from exchange.store import _reader
    except ImportError:  # pragma: no cover - the extension is part of every install
        return None
    return _reader


_READER = _c_reader()


def _typed_line(line: bytes) -> tuple:
    """The typed fields of one event line, decoded in Python (what the C parser leaves)."""
    return tuple(orjson.loads(line)[:_N_TYPED])


def _decode(blob: Any, first: int, last: int | None, typed: bool | Callable) -> Any:
    """The events of a batch blob whose seqs are ``first..last`` in order (``last`` None:
    however many, unchecked): each event's field list, or with ``typed`` the tuple of its
    typed fields -- parsed in C from each line's start, ``data`` left undecoded (a replay
    folds only those; decoding whole events was the largest cost of a replay). ``typed`` may
    be a parser with ``typed_rows``'s signature and verdicts (the compiled fold's
    ``Kernel.parse``): its result (typed records), or where it finds the blob unsound, the
    typed rows as without it. None if the blob is not those events (:func:`_batch_problem`
    says why)."""
    if callable(typed):
        if type(blob) is bytes:
            try:
                count = -1 if last is None else last - first + 1
                parsed = typed(blob, first, count, _N_TYPED, _typed_line)
            except (orjson.JSONDecodeError, TypeError, ValueError, IndexError):
                parsed = None
            if parsed is not None:
                return parsed
        typed = True  # the same verdict, and rows, as a read without the parser
    if typed and _READER is not None and type(blob) is bytes:
        try:
            count = -1 if last is None else last - first + 1
            rows = _READER.typed_rows(blob, first, count, _N_TYPED, _typed_line)
        except (orjson.JSONDecodeError, TypeError, ValueError, IndexError):
            rows = None
        if rows is not None:
            return rows
    if last is None:
        fields = _blob_fields(blob)
    else:
        fields = _sound_fields(blob, first, last)
        if fields is None:
            return None
    return [tuple(f[:_N_TYPED]) for f in fields] if typed else fields


def _parse_stored(parse: Callable, stored: bytes, first: int, last: int | None) -> Any:
    """What ``parse`` (``Kernel.parse_compact``: :func:`_decode`'s parser, reading a batch's
    stored form) makes of batch ``first..last``'s stored bytes (``last`` None: however many
    events); None where it is not sure of them (nor raises): the caller expands the stored
    form and reads the blob as without it, its verdicts and errors then."""
    try:  # a NULL or a text (not bytes): TypeError, and the blob's reader says what it is
        count = -1 if last is None else last - first + 1
        return parse(stored, first, count, _N_TYPED, _typed_line)
    except (orjson.JSONDecodeError, TypeError, ValueError, IndexError, OverflowError):
        return None  # (a seq past int64: the blob's reader raises it, after expand's verdict)


def _filter(filters: dict[str, Any]) -> Callable[[list], bool] | None:
    """The typed-field filters as a test of an event's field list (None: no filter).
    A filter value that is a list/tuple/set matches any of its values."""
    tests = []
    for name, value in filters.items():
        if value is None:
            continue
        if name not in FILTER_FIELDS:
            raise ValueError(f"cannot filter on {name!r}; filters: {', '.join(FILTER_FIELDS)}")
        wanted = frozenset(value) if isinstance(value, list | tuple | set | frozenset) else {value}
        tests.append((TYPED_FIELDS.index(name), wanted))
    if not tests:
        return None
    if len(tests) == 1:
        ((i, wanted),) = tests
        return lambda f: f[i] in wanted
    return lambda f: all(f[i] in wanted for i, wanted in tests)


def _insert_projection(conn: sqlite3.Connection, batch: int, blob: bytes, fields: list) -> None:
    """Insert the projection's rows of a batch -- typed fields, the event's line (as text),
    batch -- :data:`_ROWS_PER_INSERT` a statement, then one by one for the rest. None goes in
    as NaN, which SQLite binds as NULL (Python's sqlite3 adapts None through its adapter
    protocol, which raises and clears an AttributeError per value)."""
    nullable = _NULL_AS_NAN.get
    values: list[Any] = []
    extend, add = values.extend, values.append
    for line, f in zip(blob.split(b"\n"), fields):  # noqa: B905 - the blob ends in a newline
        typed = f[:_N_TYPED]
        extend(map(nullable, typed, typed))
        add(line.decode())
        add(batch)
    width = len(_PROJECTION_COLUMNS)
    chunk = width * _ROWS_PER_INSERT
    full = len(fields) // _ROWS_PER_INSERT * chunk
    if full:
        conn.executemany(
            _INSERT_PROJECTION_MANY, [values[i : i + chunk] for i in range(0, full, chunk)]
        )
    if full < len(values):
        conn.executemany(
            _INSERT_PROJECTION, [values[i : i + width] for i in range(full, len(values), width)]
        )


def _projection_mismatch(
    row: tuple | None, seq: int, line: bytes, fields: list, batch: int
) -> tuple[int, str] | None:
    """How the projection's ``row`` (typed columns, payload as bytes, batch), read where seq
    ``seq`` was expected, differs from that event (its ``line`` and ``fields`` in ``batch``):
    ``(seq, problem)``, or None if it is that event."""
    if row is None or (type(row[0]) is int and row[0] > seq):
        return seq, f"seq {seq} missing from the projection (its row deleted)"
    if row[0] != seq:
        return seq, f"projection row seq {row[0]!r} out of order after seq {seq - 1}"
    payload = row[_N_TYPED]
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "surrogateescape")
    if payload != line:
        return seq, (
            f"seq {seq}: the projection's payload differs from the event in batch {batch} "
            "(the projection was edited)"
        )
    for i in range(1, _N_TYPED):
        if row[i] != fields[i] or type(row[i]) is not type(fields[i]):
            return seq, (
                f"seq {seq}: projection column {TYPED_FIELDS[i]}={row[i]!r} disagrees with the "
                f"event's {TYPED_FIELDS[i]}={fields[i]!r} (the projection was edited)"
            )
    if row[_N_TYPED + 1] != batch:
        return seq, (
            f"seq {seq}: projection column batch={row[_N_TYPED + 1]!r}, but batch {batch} "
            "holds the event (the projection was edited)"
        )
    return None


def _where(start: int, stop: int | None, filters: dict[str, Any]) -> tuple[str, list[Any]]:
    """SQL WHERE clause (seq range, inclusive, plus typed-column filters) and its parameters.

    A filter value that is a list/tuple/set matches any of its values."""
    clauses = ["seq >= ?"]
    params: list[Any] = [max(start, 1)]
    if stop is not None:
        clauses.append("seq <= ?")
        params.append(stop)
    for name, value in filters.items():
        if value is None:
            continue
        if name not in FILTER_FIELDS:
            raise ValueError(f"cannot filter on {name!r}; filters: {', '.join(FILTER_FIELDS)}")
        if isinstance(value, list | tuple | set | frozenset):
            values = sorted(value)
            if not values:
                return "0", []
            clauses.append(f"{name} IN ({', '.join('?' * len(values))})")
            params.extend(values)
        else:
            clauses.append(f"{name} = ?")
            params.append(value)
    return " AND ".join(clauses), params


class EventStore:
    """An open event store. Make one with :meth:`create` or :meth:`open`; use it as a context
    manager or call :meth:`close`.

    Writers (``create``, ``open(mode="a")``) append batches with :meth:`append`; readers
    (``open(mode="r")``) never change the file. All reads work in both modes.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, mode: str) -> None:
        """Internal: use :meth:`create` or :meth:`open`."""
        self._conn: sqlite3.Connection = conn
        self._sqlite_utils: Any = None  # see _db
        self.path = path
        self.mode = mode
        self._last_seq = 0
        self._batch_count = 0
        self._chain = ZERO_CHAIN
        self._finished = False
        self._handed_off = False  # see hand_off
        #: the projection's rows 1.._projection_proven were found equal to the blobs
        self._projection_proven = -1
        #: whether reads are checked by default (see :meth:`open`)
        self.checked = True
        #: (sessions.last_seq, batch rows) when the batch rows were last found to chain
        self._chained_to: tuple[int, int] | None = None
        #: the cursors and readers handed out, closed by close(): a statement left unfinished
        #: (an abandoned iteration) would keep the connection alive after close() -- SQLite
        #: closes it only once every statement is finalised -- and a connection alive on a
        #: WAL file stops its writer's switch back to a single file
        self._open: weakref.WeakSet = weakref.WeakSet()
        self._ranges: list[tuple[int, int, int, str]] = []
        #: set by a writer's :meth:`close` when another connection kept the file in WAL mode
        self.left_in_wal = False
        self.durability = "normal"
        self._checkpointer: _Checkpointer | None = None
        self._c_module: Any = _UNSET  # see _c
        self._projected = False  # a writer keeps a projection it found up to date
        self._bg_bytes = 0  # payload bytes since the last background checkpoint request
        self._wal_bytes = 0  # payload bytes since the writer's last complete checkpoint
        self._header_written = False  # see _write

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        scenario: str,
        seed: int,
        config: dict[str, Any],
        code_version: str,
        durability: str = "normal",
        session_id: str | None = None,
        started_t: int = 0,
    ) -> EventStore:
        """Create a new store at ``path`` (which must not exist, or be empty) and open it for
        appending.

        Atomic: the store is made in ``PATH-creating`` (its tables and session row in one
        transaction, fsynced) and renamed to ``path``, so a process killed while creating
        leaves either no file at ``path`` or a whole store with nothing appended yet (the
        ``-creating`` file such a kill leaves is removed by the next ``create`` of ``path``).

        Args:
            scenario: the scenario's name.
            seed: the seed of every random source of the session.
            config: the session's configuration (JSON-serialisable; stored as canonical JSON).
            code_version: the version of the code that writes the log.
            durability: ``"normal"`` (``PRAGMA synchronous=NORMAL``: survives an application
                crash, may lose the last batches on power loss) or ``"full"`` (fsync of the WAL
                at every commit). See the module docstring.
            session_id: defaults to a hash of scenario, seed, config and code version (never
                random, so that reruns give identical files).
            started_t: simulated start time, ns.

        Raises:
            FileExistsError: ``path`` exists and is not empty.
            ValueError: unknown ``durability``.
        """
        if durability not in DURABILITY_PRAGMAS:
            raise ValueError(
                f"durability must be one of {sorted(DURABILITY_PRAGMAS)}, not {durability!r}"
            )
        path = Path(path)
        if path.exists() and path.stat().st_size > 0:
            raise FileExistsError(f"{path} already exists and is not empty")
        for suffix in ("-wal", "-journal"):
            side = Path(str(path) + suffix)
            if side.exists() and side.stat().st_size > 0:
                raise FileExistsError(f"{side} exists: a previous database's journal")
        config_json = orjson.dumps(config, option=orjson.OPT_SORT_KEYS).decode()
        if session_id is None:
            session_id = _default_session_id(scenario, seed, config_json, code_version)
        # Built beside ``path`` and renamed into place once committed, so that a process
        # killed while creating leaves no file at ``path`` or a whole store, never a shell.
        # Built at ``path`` itself, the WAL switch committed a header page on its own before
        # the schema's transaction: a kill after it left a file with no tables, and a kill
        # inside it a hot journal that a reader's immutable open ignored (decision in
        # docs/decisions.md; tests/exchange/store/test_create_crash.py).
        building = Path(f"{path}-creating")
        building.unlink(missing_ok=True)  # a killed creation's: never at ``path``, no use
        conn = sqlite3.connect(str(building), timeout=_BUSY_TIMEOUT_S)
        try:
            conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")  # before the first table
            # a file that is discarded unless complete needs no journal on disk, nor SQLite's
            # syncs: it is fsynced once, whole, before the rename
            conn.execute("PRAGMA journal_mode=MEMORY").fetchall()
            conn.execute("PRAGMA synchronous=OFF")
            # plain SQL, not sqlite_utils: importing it (with click, pluggy and dateutil) was
            # 40-50 ms of every run's start-up; the tables are the ones it made, same text
            conn.execute("BEGIN")
            conn.execute(_CREATE_META)
            conn.executemany(
                'INSERT INTO "meta" ("key", "value") VALUES (?, ?)',
                [
                    ("format", FORMAT),
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("typed_fields", ",".join(TYPED_FIELDS)),
                ],
            )
            conn.execute(_CREATE_SESSIONS)
            conn.execute(
                'INSERT INTO "sessions" ("session_id", "scenario", "seed", "code_version", '
                '"config", "durability", "status", "last_seq", "started_t", "finished_t", '
                '"final_state_hash") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                (
                    session_id,
                    scenario,
                    seed,
                    code_version,
                    config_json,
                    durability,
                    "running",
                    0,
                    started_t,
                    None,
                    None,
                ),
            )
            conn.execute(_CREATE_BATCHES)
            conn.execute(_CREATE_SNAPSHOTS)
            conn.execute("COMMIT")
            conn.close()
            with building.open("rb") as built:
                os.fsync(built.fileno())  # its bytes on disk before its name (power loss)
            os.replace(building, path)
        except BaseException:
            conn.close()
            building.unlink(missing_ok=True)
            raise
        with contextlib.suppress(OSError):  # the rename on disk too (where a folder opens)
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        # then the writer's own connection, as `open(path, "a")` makes one: a kill inside the
        # switch to WAL leaves a hot journal over the whole store, which the next open rolls
        # back (see _connect_ro)
        conn = sqlite3.connect(str(path), timeout=_BUSY_TIMEOUT_S)
        try:
            _enable_wal(conn)
            store = cls(conn, path, "a")
            store._configure_writer(durability)
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def open(cls, path: str | Path, mode: str = "r", *, checked: bool = True) -> EventStore:
        """Open an existing store: ``mode="r"`` read-only (creates and changes nothing; an
        SQLite ``mode=ro`` connection), ``mode="a"`` to append (a crashed session can be
        continued: the last committed batch is where it resumes).

        ``checked``: the default of :meth:`events`' and :meth:`rows`' ``check`` -- False only
        for a log the caller has just written or verified itself (a run's own summary).

        Raises:
            FileNotFoundError: no file at ``path``.
            StoreError: not a gpuex store, or another schema version (a schema-2, -3 or -4 file: the
                message names ``gpuex migrate PATH``).
            ValueError: unknown ``mode``.
        """
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', not {mode!r}")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such event store")
        if mode == "r":
            conn = _connect_ro(path)
        else:
            conn = sqlite3.connect(str(path), timeout=_BUSY_TIMEOUT_S)
        try:
            _check_header(conn, path)
            store = cls(conn, path, mode)
            store.checked = checked
            info = store.session
            store.durability = info["durability"]
            store._finished = info["status"] == "finished"
            if mode == "a":
                _enable_wal(conn)
                store._configure_writer(info["durability"])
                store._last_seq = info["last_seq"]
                last = conn.execute(
                    "SELECT batch, chain FROM batches ORDER BY batch DESC LIMIT 1"
                ).fetchone()
                if last is not None:
                    store._batch_count, store._chain = last
                store._projected = store.has_projection()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{path}: cannot open the event store ({exc})") from exc
        except BaseException:
            conn.close()
            raise
        return store

    def _configure_writer(self, durability: str) -> None:
        if durability not in DURABILITY_PRAGMAS:
            raise StoreError(f"{self.path}: unknown durability {durability!r} in sessions")
        self.durability = durability
        conn = self._conn
        conn.execute(f"PRAGMA synchronous={DURABILITY_PRAGMAS[durability]}")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # see _BG_CHECKPOINT_BYTES
        conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        self._checkpointer = _Checkpointer(self.path)

    @property
    def _c(self) -> Any:
        """``exchange.store._writer`` (the batch blob in C), or None; found on first use. Not
        at the store's opening: the journaller's store never encodes (it stores the run's
        blobs as they are), and the extension's import pulls in numpy through
        ``exchange.core._lines`` -- 40 ms of the journaller's start-up, and an OpenBLAS
        thread that spins for ~0.1 s of CPU after it (measured), on the core the run's
        batches are committed from."""
        if self._c_module is _UNSET:
            self._c_module = _writer()
        return self._c_module

    @property
    def _db(self) -> Any:
        """The connection as a ``sqlite_utils.Database`` (made on first use: see
        :func:`_database`)."""
        if self._sqlite_utils is None:
            self._sqlite_utils = _database(self._conn)
        return self._sqlite_utils

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        """One transaction (a savepoint inside one already open): committed at the end of
        the block, rolled back if it raises. ``sqlite_utils.Database.atomic``'s semantics,
        without importing sqlite_utils on a writer's path (see :func:`_database`)."""
        conn = self._conn
        if conn.in_transaction:
            conn.execute("SAVEPOINT gpuex_atomic")
            try:
                yield
            except BaseException:
                # a failure may have ended the whole transaction, savepoint included
                if conn.in_transaction:
                    conn.execute("ROLLBACK TO SAVEPOINT gpuex_atomic")
                    conn.execute("RELEASE SAVEPOINT gpuex_atomic")
                raise
            conn.execute("RELEASE SAVEPOINT gpuex_atomic")
            return
        conn.execute("BEGIN")
        try:
            yield
        except BaseException:
            if conn.in_transaction:  # a no-op where the failure rolled it back already
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ writing
    def append(
        self,
        events: Sequence[Event],
        snapshot: tuple[int, str, str] | None = None,
        *,
        encoded: bytes | None = None,
    ) -> None:
        """Commit ``events`` as one batch, in one transaction: one ``batches`` row (the
        events' blob, its digest and the chain), the optional ``snapshot`` ``(seq,
        state_json, state_hash)`` and the new ``sessions.last_seq``. Either all of it is
        written or nothing is.

        ``events``: ``Event`` tuples (or lists of their fields). ``encoded``: their blob when
        the caller has it already (``encode(e) + b"\\n"`` for each event, in order -- the
        caller's guarantee, tested there); else it is encoded here.

        Raises:
            ValueError: the seqs do not continue the log contiguously (``events[0].seq`` must
                be ``last_seq + 1``), an event cannot be stored (not the ``Event`` fields, no
                ``t``/``kind``, a typed field of the wrong type or beyond int64), or the
                snapshot's seq is outside ``1..new last_seq`` or already taken.
            StoreError: the store is read-only or the session is finished.
        """
        self._check_writable()
        first = self._last_seq + 1
        n = len(events)
        last = first + n - 1
        batch = self._batch_count + 1
        if snapshot is not None and not 1 <= snapshot[0] <= last:
            raise ValueError(f"snapshot seq {snapshot[0]} outside 1..{last}")
        if n == 0 and snapshot is None:
            return
        if encoded is None:
            blob = self.encode_batch(events, first, batch, self._c)
        else:
            self.encode_batch(events, first, batch, self._c, check_only=True)
            blob = encoded if n else b""
        self._commit(n, blob, batch, first, last, snapshot)

    @staticmethod
    def encode_batch(
        events: Sequence[Any],
        first: int,
        batch: int,
        c: Any = None,
        *,
        check_only: bool = False,
    ) -> bytes:
        """The blob :meth:`append` stores for ``events`` as the log's batch ``batch`` whose
        first seq is ``first`` (``encode(e) + b"\\n"`` for each event, in order), after the
        checks :meth:`append` makes, with its errors: every event is checked before anything
        is encoded. ``c``: ``exchange.store._writer`` (None: found here; without the extension
        the same checks and blob in Python). With ``check_only``, only the checks (``b""``).

        A run that hands its batches to the journaller checks and encodes each one here, in
        its own process, and sends the blob (:meth:`append_blob` then stores it as it is).

        Raises:
            ValueError: as :meth:`append`, naming ``batch`` and its seqs.
        """
        n = len(events)
        last = first + n - 1
        if c is None:
            c = _writer()
        # every event is checked before anything is written (what schema 2's STRICT columns
        # refused, now that the events are one blob), in one C loop
        if c is not None:
            bad = c.first_bad(events, first, _N_FIELDS, _CODES, TYPED_FIELDS)
        else:
            bad = _first_bad_py(events, first)
        if bad is not None:
            position, reason = bad
            if reason is None:
                reason = (
                    f"event seq {events[position][0]!r} at position {position} of the batch: "
                    f"expected {first + position} (the log ends at seq {first - 1}; seqs "
                    "must be contiguous)"
                )
            raise ValueError(f"batch {batch} (seqs {first}..{last}) not stored: {reason}")
        if check_only or not n:
            return b""
        try:
            if c is not None:  # in C, orjson only for what the C encoder leaves to it
                return c.encode_batch(events, orjson.dumps, ENCODE_OPTIONS)
            return _encode_batch_py(events)
        except orjson.JSONEncodeError as exc:
            raise ValueError(f"batch {batch} (seqs {first}..{last}) not stored: {exc}") from exc

    def append_blob(
        self,
        blob: bytes,
        first: int,
        count: int,
        snapshot: tuple[int, str, str] | None = None,
    ) -> None:
        """:meth:`append` of a batch given as its blob: ``count`` events of seqs ``first``,
        ``first + 1``..., checked and encoded by :meth:`encode_batch` (the caller's guarantee:
        the journaller's run made it there, and the journaller's fold parsed it as those
        seqs). Checked here: that ``first`` continues the log, and the snapshot's seq.

        Raises:
            ValueError: ``first`` is not ``last_seq + 1``, ``count`` < 1, or the snapshot's seq
                is outside ``1..new last_seq`` or already taken.
            StoreError: as :meth:`append`.
        """
        self.append_blobs([(blob, first, count, snapshot, None)])

    def append_stored(
        self,
        stored: bytes,
        first: int,
        count: int,
        snapshot: tuple[int, str, str] | None = None,
    ) -> None:
        """:meth:`append_blob` of a batch given as its stored form, ``compact(blob)`` (the
        journal compacts each blob once, folds that form and stores it: not compacted a
        second time here). The same row, digest (sha256 of ``stored``) and chain as
        :meth:`append_blob` of the blob; the caller's guarantee that ``stored`` is
        ``compact(blob)`` of a blob :meth:`encode_batch` made. Raises as :meth:`append_blob`."""
        self.append_blobs([(stored, first, count, snapshot, None)], stored=True)

    def append_blobs(
        self,
        batches: Sequence[tuple[bytes, int, int, tuple[int, str, str] | None, str | None]],
        *,
        stored: bool = False,
    ) -> None:
        """:meth:`append_blob` of several batches in one transaction: ``batches`` holds
        ``(blob, first, count, snapshot, digest)`` per batch, in log order (``digest``: the
        sha256 hex of the blob's stored form, ``compact(blob)``, when the caller has it, else
        None: computed after compacting); with ``stored``, each ``blob`` is that stored form
        already (:meth:`append_stored`). The statements are those of
        one :meth:`append_blob` per batch, in the same order, so the file is the same page
        for page; only the commits are fewer (the journaller's, when batches have queued up
        behind a commit: one WAL commit, not one per batch).

        If that transaction fails, the batches are appended again one transaction each, as
        one :meth:`append_blob` each would have been: every batch before the one refused is
        committed, and the error is that batch's.

        Raises:
            ValueError, StoreError: as :meth:`append_blob`, for the first batch refused.
        """
        if len(batches) == 1:
            blob, first, count, snapshot, digest = batches[0]
            self._check_blob(first, count, snapshot)
            batch = self._batch_count + 1
            if stored:
                self._commit(count, None, batch, first, first + count - 1, snapshot, digest, blob)
            else:
                self._commit(count, blob, batch, first, first + count - 1, snapshot, digest)
            return
        state = (self._last_seq, self._batch_count, self._chain, self._header_written)
        size = 0
        try:
            with self._atomic():
                for blob, first, count, snapshot, digest in batches:
                    self._check_blob(first, count, snapshot)
                    batch = self._batch_count + 1
                    last = first + count - 1
                    if stored:
                        size += self._write(count, None, batch, first, last, snapshot, digest, blob)
                    else:
                        size += self._write(count, blob, batch, first, last, snapshot, digest)
                    self._last_seq, self._batch_count = last, batch
        except BaseException as exc:
            self._last_seq, self._batch_count, self._chain, self._header_written = state
            if not isinstance(exc, Exception):
                raise
            failed = True
        else:
            failed = False
        if failed:  # one by one, as many transactions: the batch that fails raises
            for one in batches:
                self.append_blobs([one], stored=stored)
            return
        self._after_commit(size)

    def _check_blob(self, first: int, count: int, snapshot: tuple[int, str, str] | None) -> None:
        """:meth:`append_blob`'s checks of a batch of ``count`` events from seq ``first``."""
        self._check_writable()
        batch = self._batch_count + 1
        last = first + count - 1
        if count < 1 or first != self._last_seq + 1:
            raise ValueError(
                f"batch {batch} (seqs {first}..{last}) not stored: it does not continue the log "
                f"(the log ends at seq {self._last_seq}; seqs must be contiguous)"
            )
        if snapshot is not None and not 1 <= snapshot[0] <= last:
            raise ValueError(f"snapshot seq {snapshot[0]} outside 1..{last}")

    def _check_writable(self) -> None:
        if self.mode != "a":
            raise StoreError(f"{self.path}: opened read-only")
        if self._finished:
            raise StoreError(f"{self.path}: session is finished; the log is sealed")
        if self._handed_off:
            raise StoreError(f"{self.path}: handed off to another writer")

    def _commit(
        self,
        n: int,
        blob: bytes | None,
        batch: int,
        first: int,
        last: int,
        snapshot,
        digest: str | None = None,
        stored: bytes | None = None,
    ) -> None:
        """One batch's transaction (``n`` events, ``first..last``, as ``blob``, or its stored
        form ``stored``; ``digest``: the stored form's sha256 hex, or None to compute it): see
        :meth:`_write`. All or nothing."""
        chain, header = self._chain, self._header_written
        try:
            with self._atomic():
                size = self._write(n, blob, batch, first, last, snapshot, digest, stored)
        except BaseException:
            self._chain, self._header_written = chain, header
            raise
        if n:
            self._last_seq = last
            self._batch_count = batch
            self._after_commit(size)

    def _write(
        self,
        n: int,
        blob: bytes | None,
        batch: int,
        first: int,
        last: int,
        snapshot,
        digest: str | None,
        stored: bytes | None = None,
    ) -> int:
        """One batch's statements, inside a transaction: the batch row (the blob's compact
        form, ``stored`` when the caller has it, else ``compact(blob)``; that form's digest
        and the chain; the chain is advanced, the caller restores it
        if the transaction rolls back), the projection's rows if the file has one,
        ``sessions.last_seq`` and the optional snapshot. A value SQLite refuses becomes a
        ``ValueError`` naming the batch. Returns the bytes written (the stored form and the
        snapshot's state: what the WAL grows by, for the checkpoints' bookkeeping)."""
        conn = self._conn
        size = 0
        try:
            if n:
                if not self._header_written:
                    # SQLite's file change counter (header bytes 24-27) counts the connections
                    # that wrote page 1, each once (it writes its own last read of the counter
                    # + 1). Page 1 changes when the file grows; a raw blob grew it at nearly
                    # every batch, a compact one may not, so the counter depended on which of
                    # the run and its journaller happened to grow the file. Setting the
                    # header's user_version (to the 0 it is) writes page 1 in each writer's
                    # first batch: the counter is one per writing connection again, whenever
                    # the journaller took over (test_journal.py compares the files).
                    conn.execute("PRAGMA user_version = 0")
                    self._header_written = True
                if stored is None:
                    stored = compact(blob)
                if digest is None:  # schema 5: over the stored bytes (2-4: the JSON lines)
                    digest = hashlib.sha256(stored).hexdigest()
                chain = _chain(self._chain, digest)
                size = len(stored)
                conn.execute(
                    "INSERT INTO batches (batch, first_seq, last_seq, events, digest, chain) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (batch, first, last, stored, digest, chain),
                )
                if self._projected:  # kept up to date once built (a writer's own choice)
                    if blob is None:
                        blob = expand(stored)
                    _insert_projection(conn, batch, blob, _blob_fields(blob))
                conn.execute("UPDATE sessions SET last_seq = ?", (last,))
                self._chain = chain
            if snapshot is not None:
                seq, state_json, state_hash = snapshot
                conn.execute(
                    "INSERT INTO snapshots (seq, state, state_hash) VALUES (?, ?, ?)",
                    (seq, state_json, state_hash),
                )
                size += len(state_json)
        except (sqlite3.IntegrityError, sqlite3.InterfaceError, OverflowError, ValueError) as exc:
            # a NOT NULL or type (STRICT) violation, an unbindable or too large value
            raise ValueError(f"batch {batch} (seqs {first}..{last}) not stored: {exc}") from exc
        return size

    def _after_commit(self, size: int) -> None:
        """Checkpoint bookkeeping after a commit of ``size`` payload bytes (see
        ``_BG_CHECKPOINT_BYTES``)."""
        checkpointer = self._checkpointer
        if checkpointer is None:
            return
        self._wal_bytes += size
        self._bg_bytes += size
        if self._wal_bytes >= _WAL_RESTART_BYTES:
            self._bg_bytes = 0
            if checkpointer.checkpoint_now(self._conn):
                self._wal_bytes = 0  # else a reader holds old pages: try again next batch
        elif self._bg_bytes >= _BG_CHECKPOINT_BYTES:
            self._bg_bytes = 0
            checkpointer.request()

    def finish(self, t: int, state_hash: str) -> None:
        """Seal the session (one transaction): status ``finished``, ``finished_t`` = ``t``
        (simulated ns) and the final state hash. The post-mortem indexes are not built here
        (off the run's critical path: :meth:`build_indexes`, ``gpuex index``)."""
        if self.mode != "a":
            raise StoreError(f"{self.path}: opened read-only")
        with self._atomic():
            self._conn.execute(
                "UPDATE sessions SET status = 'finished', finished_t = ?, final_state_hash = ?",
                (t, state_hash),
            )
        self._finished = True

    # ------------------------------------------------------------------ the projection
    def has_projection(self) -> bool:
        """Whether the file holds the projection (the per-event ``events`` table)."""
        return (
            self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
            ).fetchone()
            is not None
        )

    def missing_indexes(self) -> list[str]:
        """Names of the post-mortem indexes (:data:`INDEXES`) the file lacks, in
        :data:`INDEXES` order: all of them until the projection has been built
        (:meth:`build_indexes`, ``gpuex index``, :meth:`ensure_projection`), none after. A file
        without them is complete and sound."""
        present = {
            row[0]
            for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        return [name for name in map(_index_name, INDEXES) if name not in present]

    def build_indexes(self, progress: Callable[[int, int], None] | None = None) -> list[str]:
        """Build the projection -- the per-event ``events`` table from the batch blobs (read
        checked: a damaged log raises :class:`DamagedLogError`), and its post-mortem indexes
        (:data:`INDEXES`) -- what is missing of it, in one transaction, and return the names
        of the indexes made (empty if none was missing: idempotent). ``gpuex index PATH``
        calls it; a writer that has built it keeps it up to date as it appends.

        ``progress(done, total)`` is called after each index is created (``total``: the
        number missing), inside the transaction: nothing is committed before the last.

        Raises:
            StoreError: the store was opened read-only.
            IndexBuildError: SQLite cannot build them (a full disk or temporary directory);
                the log is untouched (nothing of the build is committed).
        """
        if self.mode != "a":
            raise StoreError(f"{self.path}: opened read-only")
        missing = self.missing_indexes()
        if not missing and self.has_projection():
            return []
        try:
            self._build_indexes(progress)
        except sqlite3.Error as exc:
            raise IndexBuildError(
                f"{self.path}: its indexes could not be built (SQLite: {exc}); the log is "
                f"untouched, and `gpuex index {self.path}` builds them once SQLite can"
            ) from exc
        return missing

    def _build_indexes(self, progress: Callable[[int, int], None] | None = None) -> None:
        # SQLite's sorter holds up to cache_size of index keys in memory before it writes a
        # sorted run to a temporary file. Runs of a few MiB sort within the CPU caches and
        # merge quickly; one run of every key (the writer's 64 MiB cache) took 25-30 % longer
        # to build the indexes of a million events (measured; see benches/README.md).
        self._conn.execute(f"PRAGMA cache_size=-{_INDEX_SORT_CACHE_KIB}")
        conn = self._conn
        try:
            missing = set(self.missing_indexes())
            todo = [columns for columns in INDEXES if _index_name(columns) in missing]
            with self._db.atomic():
                if not self.has_projection():
                    columns = {name: _column_type(name) for name in TYPED_FIELDS}
                    columns.update({"payload": str, "batch": int})
                    self._db["events"].create(
                        columns, pk="seq", not_null=["t", "kind", "payload", "batch"], strict=True
                    )
                    for batch, _first, fields, blob in self._blobs(1, None, True, True):
                        _insert_projection(conn, batch, blob, fields)
                for done, columns in enumerate(todo, 1):
                    where = ""
                    if columns[0] not in _NOT_NULL_COLUMNS:
                        where = f" WHERE {columns[0]} IS NOT NULL"
                    conn.execute(
                        f"CREATE INDEX IF NOT EXISTS {_index_name(columns)} "
                        f"ON events ({', '.join(columns)}){where}"
                    )
                    if progress is not None:
                        progress(done, len(todo))
        finally:
            conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        self._projected = True

    @classmethod
    def ensure_projection(cls, path: str | Path) -> bool:
        """Build the projection of the log at ``path`` if it lacks it and may be changed: a
        closed file (rollback-journal mode, nothing beside it: no writer has it open), of a
        finished session, that this process may write. The read commands (``inspect``,
        ``export``, ``report``) call it when they open a log; their reads then filter the
        projection instead of decoding every batch. True if the file has the projection
        afterwards; False, and nothing changed, otherwise -- read-only, live, unfinished, not
        a store, damaged (the reads then say how), or SQLite failed -- the reads then use
        the blobs."""
        path = Path(path)
        try:
            with path.open("rb") as f:
                header = f.read(20)
            if header[18:20] != b"\x01\x01":  # WAL: a writer has it open, or was killed
                return False
            for suffix in ("-wal", "-journal", "-shm"):
                if Path(f"{path}{suffix}").exists():
                    return False
            if not (os.access(path, os.W_OK) and os.access(path.parent or Path("."), os.W_OK)):
                return False
            with cls.open(path, "r") as store:
                if store.session["status"] != "finished":
                    return False
                if store.has_projection() and not store.missing_indexes():
                    return True
            with cls.open(path, "a") as store:
                store.build_indexes()
            return True
        except (OSError, StoreError, sqlite3.Error):
            return False

    def hand_off(self) -> None:
        """Stop appending through this store, so that another writer can append to the log
        (a run hands its batches to the journaller process this way; see
        :mod:`exchange.store.journal`). The connection stays open and idle; :meth:`close` later
        finishes the file as it always does. Appending here afterwards is refused.

        A background checkpoint under way is not waited for (up to 0.09 s measured, on the
        run's path): a passive checkpoint copies committed frames and never blocks a writer,
        so the next writer appends meanwhile (its own checkpoints find SQLite's checkpoint
        lock taken, and catch up at the next one); :meth:`close` waits for it."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self._handed_off = True

    def detach(self) -> None:
        """Close a writer's connection as a crash would: nothing sealed, no indexes built, the
        file left in WAL mode (the journaller's way out; the run's store closes the file).
        Idempotent; a no-op after :meth:`close`."""
        conn = self._conn
        if conn is None:
            return
        self._stop_writing()
        conn.close()
        self._conn = None  # type: ignore[assignment]

    def _stop_writing(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None

    def close(self) -> None:
        """Close the store. A writer first checkpoints the WAL and returns the file to
        rollback-journal mode (skipped while other connections use the file), so that the
        closed store is a single file; it builds no index (see :meth:`build_indexes`).
        Idempotent."""
        conn = self._conn
        if conn is None:
            return
        self._stop_writing()
        for rows in list(self._open):
            with contextlib.suppress(Exception):
                rows.close()
        self._open.clear()
        wal = None
        try:
            if self.mode == "a":
                wal = _hold_large_wal(self.path)
                try:
                    if conn.in_transaction:  # left open by a failure: nothing of it is wanted
                        conn.rollback()
                    conn.execute("PRAGMA busy_timeout=0")
                    # the switch checkpoints the whole WAL (it holds the file alone), syncs
                    # the database and deletes the WAL
                    mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
                except sqlite3.OperationalError:
                    mode = "wal"
                # "wal" still: another connection has the file open (SQLite refuses the
                # switch); the WAL stays until the last one closes, emptied here
                self.left_in_wal = mode.lower() == "wal"
                if self.left_in_wal:
                    with contextlib.suppress(sqlite3.OperationalError):
                        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.close()
            self._conn = None  # type: ignore[assignment]
            if wal is not None:
                _release(wal)

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ state
    @property
    def session(self) -> dict[str, Any]:
        """The ``sessions`` row as a dict: session_id, scenario, seed, code_version, config
        (the canonical JSON text), durability, status, last_seq, started_t, finished_t (ns),
        final_state_hash."""
        cursor = self._conn.execute("SELECT * FROM sessions")
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor]
        if len(rows) != 1:
            raise StoreError(f"{self.path}: damaged event store ({len(rows)} sessions rows)")
        problem = session_problem(rows[0])
        if problem is not None:
            raise StoreError(f"{self.path}: damaged event store: sessions.{problem}")
        return rows[0]

    @property
    def last_seq(self) -> int:
        """The seq of the last committed event (0 for an empty log)."""
        if self.mode == "a":
            return self._last_seq
        rows = self._conn.execute("SELECT last_seq FROM sessions").fetchall()
        if len(rows) != 1 or type(rows[0][0]) is not int or rows[0][0] < 0:
            raise StoreError(
                f"{self.path}: damaged event store: sessions.last_seq is "
                f"{[r[0] for r in rows]!r}, not one count of events"
            )
        return rows[0][0]

    @property
    def batch_count(self) -> int:
        """Number of committed batches."""
        if self.mode == "a":
            return self._batch_count
        return self._conn.execute("SELECT coalesce(max(batch), 0) FROM batches").fetchone()[0]

    def digest(self) -> str:
        """The chain value of the last batch (sha256 hex): identifies the whole log. 64 zeros
        for an empty log."""
        if self.mode == "a":
            return self._chain
        row = self._conn.execute("SELECT chain FROM batches ORDER BY batch DESC LIMIT 1").fetchone()
        return row[0] if row else ZERO_CHAIN

    def kind_counts(self) -> dict[str, int]:
        """Number of events of each kind, by kind name (sorted), from the batch blobs."""
        counts: dict[str, int] = {}
        for f in self._selected(1, None, None, {}, typed=True):
            counts[f[2]] = counts.get(f[2], 0) + 1
        return dict(sorted(counts.items()))

    # ------------------------------------------------------------------ reading
    def events(
        self,
        start: int = 1,
        stop: int | None = None,
        *,
        kind: str | Iterable[str] | None = None,
        account: str | Iterable[str] | None = None,
        instrument: str | Iterable[str] | None = None,
        order_id: int | Iterable[int] | None = None,
        counterparty: str | Iterable[str] | None = None,
        counter_order_id: int | Iterable[int] | None = None,
        check: bool | None = None,
    ) -> Iterator[Event]:
        """Decoded events with ``start <= seq <= stop`` (``stop`` None: to the end), in seq
        order, filtered on the typed fields (each filter: one value or a list/tuple/set of
        values; ``account`` matches the ``account`` field only -- a Fill's maker is its
        ``counterparty``).

        Without filters, or without the projection, the events come from the batch blobs
        (filters applied as they are decoded). With filters and the projection, they come
        from the projection (by SQL).

        ``check`` (the store's default, see :meth:`open`: True unless opened with
        ``checked=False``): every batch read proves itself -- its blob's digest is the one
        the chain commits to (the chain checked once per store up to ``sessions.last_seq``),
        its events are its seqs in order -- and a projection is read only once every row of it
        has been found equal to the blobs, and then as a table scan (``NOT INDEXED``: an
        index is only what ``verify`` found it when it last ran). A batch or row that fails
        raises :class:`DamagedLogError` naming a seq. ``check=False``: trust the file (the
        projection, its indexes) -- for a log just verified."""
        filters = {
            "kind": kind,
            "account": account,
            "instrument": instrument,
            "order_id": order_id,
            "counterparty": counterparty,
            "counter_order_id": counter_order_id,
        }
        check = self.checked if check is None else check
        if self._use_projection(filters, check):
            if check:  # the rows proved, not one more
                stop = (
                    self._projection_proven if stop is None else min(stop, self._projection_proven)
                )
            where, params = _where(start, stop, filters)
            hint = " NOT INDEXED" if check else ""
            sql = f"SELECT payload FROM events{hint} WHERE {where} ORDER BY seq"
            for (payload,) in self._track(self._conn.execute(sql, params)):
                yield decode(payload)
            return
        new = _new_tuple
        for f in self._selected(start, stop, check, filters):
            yield new(Event, f)

    def rows(
        self,
        start: int = 1,
        stop: int | None = None,
        *,
        check: bool | None = None,
        parse: Callable | None = None,
        parse_stored: Callable | None = None,
        **filters: Any,
    ) -> Iterator[tuple]:
        """The typed fields (:data:`~exchange.core.events.TYPED_FIELDS` order) of the events with
        ``start <= seq <= stop``, as tuples; same sources, filters and ``check`` as
        :meth:`events`.

        ``parse`` (no filters): a parser of batch blobs with the signature and verdicts of
        ``exchange.store._reader.typed_rows`` (the compiled fold's ``Kernel.parse``); the rows
        then come one batch at a time as ``(events, a, b)``, the events ``a..b-1`` of
        ``events`` being those of ``start..stop`` in the batch: ``events`` is what the parser
        made of the blob (proved as without it), or the list of its typed rows where the
        parser found it unsound and an unchecked read takes it all the same.
        ``parse_stored`` (with ``parse``): its twin reading a batch's stored form (the compiled
        fold's ``Kernel.parse_compact``), tried first on the stored bytes themselves (after
        the digest check of a checked read, unchanged): its result where it gives one (what
        ``parse`` gives of the expanded blob), else the batch is expanded and read as without
        it (the same verdicts)."""
        check = self.checked if check is None else check
        if parse is not None:
            if any(value is not None for value in filters.values()):
                raise ValueError("rows(parse=...) reads whole batches: no filters")
            return self._track(self._typed(start, stop, check, filters, parse, parse_stored))
        if self._use_projection(filters, check):
            if check:  # the rows proved, not one more
                stop = (
                    self._projection_proven if stop is None else min(stop, self._projection_proven)
                )
            where, params = _where(start, stop, filters)
            hint = " NOT INDEXED" if check else ""
            sql = f"SELECT {_TYPED_COLUMNS} FROM events{hint} WHERE {where} ORDER BY seq"
            # in C, with one str per distinct text value; else the cursor itself
            reader = _row_reader(self._conn, self.path, sql, params)
            return self._track(reader if reader is not None else self._conn.execute(sql, params))
        return self._track(self._typed(start, stop, check, filters))

    def _typed(
        self,
        start: int,
        stop: int | None,
        check: bool,
        filters: dict[str, Any],
        parse: Callable | None = None,
        parse_stored: Callable | None = None,
    ):
        if parse is None:
            yield from self._selected(start, stop, check, filters, typed=True)
            return
        lo = max(start, 1)
        for _batch, first, events, _blob in self._blobs(lo, stop, check, parse, parse_stored):
            n = len(events)
            a = max(lo - first, 0)
            b = n if stop is None else min(n, stop - first + 1)
            if a < b:
                yield events, a, b

    def payloads(
        self, start: int = 1, stop: int | None = None, *, check: bool | None = None
    ) -> Iterator[bytes]:
        """The stored canonical bytes of the events ``start..stop`` (inclusive), in seq order,
        each its line of its batch blob: for byte-identical comparisons with
        :func:`~exchange.core.events.encode`. ``check`` as in :meth:`events`."""
        check = self.checked if check is None else check
        lo = max(start, 1)
        for _batch, first, fields, blob in self._blobs(lo, stop, check, typed=True):
            lines = blob.split(b"\n")
            a = max(lo - first, 0)
            b = len(fields) if stop is None else min(len(fields), stop - first + 1)
            yield from lines[a:b]

    def _selected(
        self,
        start: int,
        stop: int | None,
        check: bool | None,
        filters: dict[str, Any],
        typed: bool = False,
    ) -> Iterator[Any]:
        """The events ``start..stop`` the filters select, from the blobs: field lists, or
        with ``typed`` tuples of the typed fields."""
        keep = _filter(filters)
        lo = max(start, 1)
        if check is None:
            check = self.checked
        for _batch, first, fields, _blob in self._blobs(lo, stop, check, typed):
            if lo > first or (stop is not None and stop < first + len(fields) - 1):
                fields = fields[max(lo - first, 0) : None if stop is None else stop - first + 1]
            if keep is None:
                yield from fields
            else:
                for f in fields:
                    if keep(f):
                        yield f

    def _blobs(
        self,
        start: int,
        stop: int | None,
        check: bool,
        typed: bool | Callable = False,
        parse_stored: Callable | None = None,
    ) -> Iterator[tuple[int, int, Any, bytes | None]]:
        """``(batch, first_seq, events, blob)`` of each batch that holds events of
        ``start..stop``, in order; ``events``: each event's field list, or with ``typed`` the
        tuple of its typed fields (parsed in C, ``data`` not decoded), or what a parser given
        as ``typed`` made of the blob (see :func:`_decode`).
        ``blob`` is the batch's JSON lines, its stored form expanded (a stored form that does
        not expand is :class:`DamagedLogError`, checked or not); None where ``parse_stored``
        (a parser of stored forms, the twin of ``typed``, see :func:`_parse_stored`) read the
        stored form itself.
        Checked: the batch rows chain up to ``sessions.last_seq`` (see :meth:`_batches_over`)
        and each blob is the one its digest names and its seqs in order, else
        :class:`DamagedLogError`."""
        if not check:
            sql = "SELECT batch, first_seq, last_seq, events FROM batches WHERE last_seq >= ?"
            params: list[Any] = [start]
            if stop is not None:
                sql += " AND first_seq <= ?"
                params.append(stop)
            cursor = self._track(self._conn.execute(sql + " ORDER BY batch", params))
            for batch, first, last_of, stored in cursor:
                if parse_stored is not None:
                    parsed = _parse_stored(parse_stored, stored, first, None)
                    if parsed is not None:
                        yield batch, first, parsed, None
                        continue
                blob = _expand_stored(self.path, batch, first, last_of, stored)
                yield batch, first, _decode(blob, first, None, typed), blob
            return
        last = self.last_seq if stop is None else min(stop, self.last_seq)
        ranges = self._batches_over(start, last)
        if not ranges:
            return
        path = self.path
        cursor = self._track(
            self._conn.execute(
                "SELECT batch, first_seq, last_seq, events FROM batches "
                "WHERE batch >= ? AND batch <= ? ORDER BY batch",
                (ranges[0][0], ranges[-1][0]),
            )
        )
        k = 0
        try:
            for batch, first, last_of, stored in cursor:
                committed, first_seq, last_seq, digest = ranges[k]
                where = f"batch {committed} (seqs {first_seq}..{last_seq})"
                if (batch, first, last_of) != (committed, first_seq, last_seq):
                    raise DamagedLogError(path, first_seq, f"{where}: its row changed while read")
                # the stored bytes are hashed first (schema 5: the digest is theirs, 5x fewer
                # bytes than the JSON lines), then expanded
                if type(stored) is not bytes or hashlib.sha256(stored).hexdigest() != digest:
                    # a stored form that does not expand says so (the more precise verdict)
                    _expand_stored(path, batch, first, last_of, stored)
                    raise DamagedLogError(
                        path,
                        first,
                        f"{where}: digest mismatch: its events differ from what was "
                        "committed (the batch's blob was edited)",
                    )
                if parse_stored is not None:
                    parsed = _parse_stored(parse_stored, stored, first, last_of)
                    if parsed is not None:
                        yield batch, first, parsed, None
                        k += 1
                        continue
                blob = _expand_stored(path, batch, first, last_of, stored)
                fields = _decode(blob, first, last_of, typed)
                if fields is None:
                    seq, problem = _batch_problem(batch, first, last_of, blob) or (
                        first,
                        f"{where}: its events are not its seqs in order",
                    )
                    raise DamagedLogError(path, seq, problem)
                yield batch, first, fields, blob
                k += 1
        except sqlite3.DatabaseError as exc:
            seq = ranges[min(k, len(ranges) - 1)][1]
            raise DamagedLogError(
                path,
                seq,
                f"the file is corrupt here (SQLite: {exc}); the batches before it proved sound",
            ) from None
        if k < len(ranges):
            raise DamagedLogError(path, ranges[k][1], f"batch {ranges[k][0]} missing")

    def _use_projection(self, filters: dict[str, Any], check: bool) -> bool:
        """Whether a filtered read goes to the projection: a filter is given and the file has
        the projection -- once proved equal to the blobs, for a checked read."""
        for name in filters:
            if name not in FILTER_FIELDS:
                raise ValueError(f"cannot filter on {name!r}; filters: {', '.join(FILTER_FIELDS)}")
        if all(value is None for value in filters.values()):
            return False
        if not self.has_projection():
            return False
        if check:
            self._prove_projection()
        return True

    def _prove_projection(self) -> None:
        """Raise :class:`DamagedLogError` unless the projection's rows are the events of the
        blobs, seq for seq (typed columns, payload, batch), up to ``sessions.last_seq``:
        checked once per store (again only once the log has grown)."""
        last = self.last_seq
        if self._projection_proven >= last:
            return
        path = self.path
        cursor = self._track(
            self._conn.execute(
                f"SELECT {_TYPED_COLUMNS}, CAST(payload AS BLOB), batch FROM events NOT INDEXED "
                "ORDER BY seq"
            )
        )
        seq = 1
        try:
            rows = iter(cursor)
            for batch, first, fields, blob in self._blobs(1, last, True, True):
                lines = blob.split(b"\n")
                for i, f in enumerate(fields):
                    seq = first + i
                    problem = _projection_mismatch(next(rows, None), seq, lines[i], f, batch)
                    if problem is not None:
                        raise DamagedLogError(path, *problem)
            extra = next(rows, None)
            if extra is not None:
                raise DamagedLogError(
                    path,
                    extra[0] if type(extra[0]) is int else last + 1,
                    f"projection row seq {extra[0]!r} is no event of the log (the projection "
                    "was edited)",
                )
        except sqlite3.DatabaseError as exc:
            raise DamagedLogError(
                path, seq, f"the projection cannot be read here ({exc}; the projection was edited)"
            ) from None
        self._projection_proven = last

    def _batches_over(self, first: int, last: int) -> list[tuple[int, int, int, str]]:
        """The batch rows ``(batch, first_seq, last_seq, digest)`` whose ranges meet
        ``first..last``, once every batch row of the log has been found to chain from the
        first to ``sessions.last_seq`` and end there (else :class:`DamagedLogError` at the
        first seq of the batch that breaks it)."""
        if last < first:
            return []
        # one statement, one snapshot: a live writer commits its batch row and last_seq
        # together, and both are read as of the same commit
        rows = self._conn.execute(
            "SELECT batch, first_seq, last_seq, digest, chain, "
            "(SELECT last_seq FROM sessions) FROM batches ORDER BY batch"
        ).fetchall()
        claimed = rows[0][5] if rows else self.last_seq
        if self._chained_to != (claimed, len(rows)):
            rows = [row[:5] for row in rows]
            found = _Problems()
            _check_batches(rows, found)
            end = rows[-1][2] if rows else 0
            if not found.items and end != claimed:
                found.add(
                    f"the batches end at seq {end}, sessions.last_seq at {claimed}",
                    min(end, claimed) + 1,
                )
            if found.items:
                _, _, _, seq, _, text = min(found.items)
                raise DamagedLogError(self.path, seq or 1, text)
            self._ranges = [(b, f, la, d) for b, f, la, d, _ in rows]
            self._chained_to = (claimed, len(rows))
        ranges = self._ranges
        k = max(bisect.bisect_right([r[1] for r in ranges], first) - 1, 0)
        over = []
        while k < len(ranges) and ranges[k][1] <= last:
            over.append(ranges[k])
            k += 1
        return over

    def _track(self, rows: Any) -> Any:
        """``rows`` (a cursor, a C reader or a generator over one), closed with the store."""
        self._open.add(rows)
        return rows

    def snapshots(self) -> Iterator[tuple[int, str, str]]:
        """Every snapshot ``(seq, state_json, state_hash)`` in seq order."""
        cursor = self._conn.execute("SELECT seq, state, state_hash FROM snapshots ORDER BY seq")
        # not `yield from`: closing this generator would then close the cursor, which may be
        # closed already (with the store)
        for row in self._track(cursor):  # noqa: UP028
            yield row

    def latest_snapshot(self, at_or_before: int) -> tuple[int, str, str] | None:
        """The snapshot with the largest seq ``<= at_or_before``: ``(seq, state_json,
        state_hash)``, or None."""
        return self._conn.execute(
            "SELECT seq, state, state_hash FROM snapshots WHERE seq <= ? ORDER BY seq DESC LIMIT 1",
            (at_or_before,),
        ).fetchone()


# ---------------------------------------------------------------------- verification
@dataclass
class VerifyReport:
    """What :func:`verify_store` found. ``first_bad_seq`` is the lowest seq any problem names
    (None if none names one), ``first_bad_batch`` the lowest batch number; ``events`` and
    ``batches`` count the rows read; ``last_chain`` is the stored chain of the last batch."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    first_bad_seq: int | None = None
    first_bad_batch: int | None = None
    events: int = 0
    batches: int = 0
    last_chain: str = ZERO_CHAIN


class _Problems:
    """Problems found, each ``(rank, seq key, order found, seq, batch, text)``; sorted, they
    read file-level damage first, then by seq, then problems without a seq."""

    def __init__(self) -> None:
        self.items: list[tuple[int, float, int, int | None, int | None, str]] = []

    def add(
        self, text: str, seq: int | None = None, batch: int | None = None, *, file: bool = False
    ) -> None:
        key = 0.0 if file else float(seq) if seq is not None else float("inf")
        self.items.append((0 if file else 1, key, len(self.items), seq, batch, text))


def verify_store(
    path: str | Path, progress: Callable[[int, int], None] | None = None
) -> VerifyReport:
    """Check a store read-only, without trusting it: every event's checksum, that its typed
    columns agree with its payload and the payload's own seq with the row's, that seqs run
    1..last without gaps, that every event belongs to the batch covering it, every batch's
    digest against its events and the chain from batch to batch, ``sessions.last_seq``
    against the events present, the ``sessions`` row against the log's ``SessionStarted`` and
    ``SessionEnded``, and SQLite's own ``integrity_check`` (every page, and every index entry
    against its row: a corrupt index names the seq whose entry is wrong). Never raises for a
    damaged file: a file that is not a store, truncated or corrupt gives ``ok=False`` and
    problems saying so (with the last seq read intact, and for a truncated file which tables
    and indexes lost pages). Problems are listed in seq order.

    ``progress(done, total)``, if given, is called as the events are scanned (every
    :data:`PROGRESS_EVERY` events, and once at the end): events checked so far and the
    number the log claims to hold."""
    path = Path(path)
    found = _Problems()
    report = VerifyReport(ok=False)
    try:
        conn = _connect_ro(path)
    except (OSError, sqlite3.Error) as exc:
        report.problems = [f"cannot open {path}: {exc}"]
        return report
    try:
        _verify(conn, path, found, report, progress)
    finally:
        conn.close()
    items = sorted(found.items)
    seqs = [item[3] for item in items if item[3] is not None]
    batches = [item[4] for item in items if item[4] is not None]
    report.first_bad_seq = min(seqs) if seqs else None
    report.first_bad_batch = min(batches) if batches else None
    texts = [item[5] for item in items]
    if len(texts) > _MAX_REPORTED_PROBLEMS:
        extra = len(texts) - _MAX_REPORTED_PROBLEMS
        texts = texts[:_MAX_REPORTED_PROBLEMS] + [f"... and {extra} more problems"]
    report.problems = texts
    report.ok = not texts
    return report


def _corrupt(found: _Problems, exc: Exception, where: str, last_read: int | None) -> None:
    """Record that SQLite could not read part of the file (``last_read``: the last seq read
    before the failure, when the failure happened while reading events)."""
    text = f"file is corrupt or truncated (SQLite: {exc}) while reading {where}"
    if last_read is None:
        found.add(text, file=True)
    elif last_read:
        found.add(
            f"{text}; events up to seq {last_read} were read intact", last_read + 1, file=True
        )
    else:
        found.add(f"{text}; no event could be read", 1, file=True)


def _lenient_text(raw: bytes) -> str:
    # a damaged TEXT value must not stop the scan with a UnicodeDecodeError
    return raw.decode("utf-8", "surrogateescape")


def _verify(
    conn: sqlite3.Connection,
    path: Path,
    found: _Problems,
    report: VerifyReport,
    progress: Callable[[int, int], None] | None,
) -> None:
    conn.text_factory = _lenient_text
    try:
        _check_header(conn, path)
    except StoreError as exc:
        if not isinstance(exc.__cause__, sqlite3.DatabaseError):
            found.add(str(exc))
            return
        # SQLite refuses a file shorter than its header says. Say so, then salvage: with
        # writable_schema (harmless on a read-only connection) it reads the pages present,
        # so the scan below can tell how far the events are intact.
        found.add(
            f"file is corrupt or truncated: SQLite refuses to read it ({exc.__cause__})", file=True
        )
        cut = _truncation(conn, path)
        if cut:
            found.add(cut, file=True)
        try:
            conn.execute("PRAGMA writable_schema=ON")
            _check_header(conn, path)
        except (StoreError, sqlite3.DatabaseError):
            found.add("no event could be read", 1, file=True)
            return
        salvage = True
    else:
        salvage = False
    # sessions
    session_last: int | None = None
    try:
        sessions = conn.execute("SELECT last_seq FROM sessions").fetchall()
        if len(sessions) != 1:
            found.add(f"sessions table has {len(sessions)} rows, expected 1")
        else:
            session_last = sessions[0][0]
    except sqlite3.DatabaseError as exc:
        _corrupt(found, exc, "the sessions table", None)
    # batches: numbering, ranges, chain. Each link is checked against the stored previous
    # chain, so one edited batch row is reported once, not again for every later batch.
    try:
        batch_rows = conn.execute(
            "SELECT batch, first_seq, last_seq, digest, chain FROM batches ORDER BY batch"
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        # a truncated or damaged table: the rows one by one, as far as they can be read (a
        # row's b-tree path may be intact where a scan's is not)
        batch_rows, rows_error = [], exc
        try:
            while True:
                row = conn.execute(
                    "SELECT batch, first_seq, last_seq, digest, chain FROM batches WHERE batch = ?",
                    (len(batch_rows) + 1,),
                ).fetchone()
                if row is None:
                    break
                batch_rows.append(row)
        except sqlite3.DatabaseError as cut:
            rows_error = cut
        if not salvage or not batch_rows:
            _corrupt(found, exc, "the batches table", None)
            rows_error = None
    else:
        rows_error = None
    report.batches = len(batch_rows)
    _check_batches(batch_rows, found)
    report.last_chain = batch_rows[-1][4] if batch_rows else ZERO_CHAIN
    batch_last = batch_rows[-1][2] if batch_rows and type(batch_rows[-1][2]) is int else 0
    digests = {r[0]: r[3] for r in batch_rows}
    # the events: each batch's blob against its digest, each event of it
    try:
        projected = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
        ).fetchone()
    except sqlite3.DatabaseError:
        projected = None
    scan = _BlobScan(found, digests)
    claimed = max(batch_last, session_last or 0)
    scan_progress = None if progress is None else lambda done: progress(done, claimed)
    try:
        scan.run(conn, [r[0] for r in batch_rows], scan_progress, bool(projected))
    except sqlite3.DatabaseError as exc:
        _corrupt(found, exc, "the batches", scan.last_read)
        broken = True
    else:
        broken = False
        if rows_error is not None:  # the batch rows themselves stopped there
            _corrupt(found, rows_error, "the batches", scan.last_read)
            broken = True
    report.events = scan.count
    max_seq = scan.last_read
    if progress is not None:
        progress(scan.count, max(claimed, scan.count))
    if not broken and not salvage:
        # the end of the log (a batch whose stored form does not expand is there, damaged)
        present = max(max_seq, scan.last_unreadable)
        if claimed > present:
            what = (
                f"seq {present + 1}" if claimed == present + 1 else f"seqs {present + 1}..{claimed}"
            )
            found.add(
                f"log truncated: {what} missing at the end (sessions.last_seq = "
                f"{session_last}, the last batch ends at seq {batch_last}, the last event "
                f"present is seq {present})",
                present + 1,
            )
        if session_last is not None and max_seq > session_last:
            found.add(
                f"events after sessions.last_seq {session_last}: seqs "
                f"{session_last + 1}..{max_seq}",
                session_last + 1,
            )
    # snapshots
    try:
        for (seq,) in conn.execute("SELECT seq FROM snapshots ORDER BY seq"):
            if not 1 <= seq <= max(max_seq, session_last or 0):
                found.add(f"snapshot at seq {seq} is outside the log 1..{max_seq}", seq)
    except sqlite3.DatabaseError as exc:
        _corrupt(found, exc, "the snapshots table", None)
    # the sessions row against the log's own first and last events
    _check_session(conn, scan, found)
    # pages the queries above did not touch (free pages, the projection's indexes), and every
    # index entry against its row: integrity_check (quick_check would not compare an
    # index's keys with the table, so an edited key would pass, and filtered reads of an
    # unchecked projection would skip the event)
    _check_integrity(conn, found, None if broken else max_seq)


class _BlobScan:
    """One pass over the batch blobs in batch order: each blob against its digest, each
    event of it (decodes, its seq where it stands, canonical, typed fields of their types),
    and, when the file has the projection, each projection row against its event."""

    def __init__(self, found: _Problems, digests: dict[Any, Any]) -> None:
        self.found = found
        self.digests = digests  # batch -> the digest its row commits to
        self.count = 0
        self.last_read = 0
        #: the last seq of a batch whose stored form does not expand (0: none)
        self.last_unreadable = 0
        self.first_event: Event | None = None  # seq 1, when it decodes
        self.last_event: Event | None = None  # the last event read, when it decodes

    def run(
        self,
        conn: sqlite3.Connection,
        numbers: list[Any],
        progress: Callable[[int], None] | None = None,
        projected: bool = False,
    ) -> None:
        """Scan the blobs of the batches ``numbers``, in that order, each read by its key (a
        truncated file is read as far as it goes); ``progress(n)`` is called with the count
        of events read so far every :data:`PROGRESS_EVERY` events."""
        found = self.found
        items = found.items
        rows: Iterator[tuple] | None = None
        pending: tuple | None = None
        if projected:
            conn.text_factory = _lenient_text
            rows = iter(
                conn.execute(
                    f"SELECT {_TYPED_COLUMNS}, CAST(payload AS BLOB), batch FROM events "
                    "ORDER BY seq"
                )
            )
            pending = next(rows, None)
        next_report = PROGRESS_EVERY
        for number in numbers:
            row = conn.execute(
                "SELECT batch, first_seq, last_seq, events FROM batches WHERE batch = ?",
                (number,),
            ).fetchone()
            if row is None:
                continue
            batch, first, last, blob = row
            if type(batch) is not int or type(first) is not int or type(last) is not int:
                continue  # reported with the batch rows
            bad_before = len(items)
            where = f"batch {batch} (seqs {first}..{last})"
            if type(blob) is not bytes:
                kind = "NULL" if blob is None else type(blob).__name__
                found.add(f"{where}: its events are {kind}, not a blob", first, batch)
                continue
            # schema 5: the digest is the stored bytes' (hashed before they are expanded)
            digest_ok = hashlib.sha256(blob).hexdigest() == self.digests.get(batch)
            try:
                blob = expand(blob)  # the stored form -> the JSON lines
            except CompactError as exc:
                found.add(_stored_problem(batch, first, last, exc), first, batch)
                # its events cannot be read (not "read intact"), but the row says where they
                # were: not "missing at the end", and the projection's rows of them are not
                # "no event of the log"
                self.last_unreadable = max(self.last_unreadable, last)
                while (
                    rows is not None
                    and pending is not None
                    and type(pending[0]) is int
                    and pending[0] <= last
                ):
                    pending = next(rows, None)
                continue
            lines = blob.split(b"\n")
            if lines.pop() != b"":
                found.add(f"{where}: its events blob does not end with a newline", first, batch)
            if len(lines) != last - first + 1:
                found.add(
                    f"{where}: its blob holds {len(lines)} events, not {last - first + 1}",
                    first + min(len(lines), last - first + 1),
                    batch,
                )
            for i, line in enumerate(lines):
                seq = first + i
                self.check_event(seq, line, batch)
                if rows is not None:
                    # the projection's rows up to this seq: those before it are extra
                    while pending is not None and type(pending[0]) is int and pending[0] < seq:
                        found.add(
                            f"projection row seq {pending[0]} is no event of the log (the "
                            "projection was edited)",
                            pending[0],
                            batch,
                        )
                        pending = next(rows, None)
                    try:
                        fields = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        fields = None
                    if type(fields) is list and len(fields) == _N_FIELDS:
                        problem = _projection_mismatch(pending, seq, line, fields, batch)
                        if problem is not None:
                            found.add(problem[1], problem[0], batch)
                        if pending is not None and pending[0] == seq:
                            pending = next(rows, None)
                self.count += 1
                if progress is not None and self.count >= next_report:
                    progress(self.count)
                    next_report += PROGRESS_EVERY
            if not digest_ok:
                located = [item[3] for item in items[bad_before:] if item[3] is not None]
                found.add(
                    f"{where}: digest mismatch: its events differ from what was committed",
                    min(located, default=first),
                    batch,
                )
            for j in range(bad_before, len(items)):
                rank, key, order, s, b, text = items[j]
                items[j] = (rank, key, order, s, batch if b is None else b, text)
            self.last_read = max(self.last_read, first + len(lines) - 1)
        while rows is not None and pending is not None:
            found.add(
                f"projection row seq {pending[0]!r} is no event of the log (the projection was "
                "edited)",
                pending[0] if type(pending[0]) is int else None,
            )
            pending = next(rows, None)

    def check_event(self, seq: int, line: bytes, batch: int) -> None:
        """The event at ``seq``'s place: it decodes, is that seq, is in canonical form and
        its typed fields are of their columns' types."""
        found = self.found
        try:
            event = decode(line)
            canonical = encode(event) == line
        except (ValueError, TypeError) as exc:
            found.add(f"seq {seq}: payload is not a valid event ({exc})", seq)
            return
        if seq == 1:
            self.first_event = event
        self.last_event = event
        if event.seq != seq:
            found.add(
                f"seq {seq}: the payload is event seq {event.seq} (events reordered or moved)",
                seq,
            )
            return
        if not canonical:
            found.add(f"seq {seq}: payload is not in canonical form (edited)", seq)
        bad = _first_bad_py((event,), seq)
        if bad is not None:
            found.add(f"seq {seq}: {bad[1]}", seq)


#: ``PRAGMA integrity_check`` lines that name a row of an index (the rowid is the seq).
_INDEX_ROW = re.compile(r"row (\d+) missing from index (\w+)")
_INDEX_COUNT = re.compile(r"(wrong # of entries|non-unique entry) in index (\w+)")
_PAGE = re.compile(r"(?:On tree page|Page) (\d+)")


def _check_integrity(conn: sqlite3.Connection, found: _Problems, intact: int | None) -> None:
    """SQLite's ``integrity_check``: the b-tree pages, and each index against the table.
    An index problem names the index and the seq whose entry is wrong; a page problem the
    page and the table or index that owns it (``dbstat``, where SQLite has it)."""
    try:
        lines = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(100)")]
    except sqlite3.DatabaseError as exc:
        lines = [str(exc)]
    if lines == ["ok"]:
        return
    other = []
    for line in lines:
        row = _INDEX_ROW.search(line)
        count = _INDEX_COUNT.search(line)
        if row:
            seq, index = int(row.group(1)), row.group(2)
            found.add(
                f"index {index} is corrupt: its entry for seq {seq} is missing or wrong (the "
                "event itself is intact; filtered reads of an unchecked index would skip it)",
                seq,
            )
        elif count:
            found.add(f"index {count.group(2)} is corrupt: {count.group(1)} in it", file=True)
        else:
            other.append(" ".join(line.split()))
    if other:
        detail = "; ".join(other)
        if len(detail) > 300:
            detail = detail[:300] + " ..."
        owners = _page_owners(conn, [int(m) for m in _PAGE.findall(detail)])
        found.add(f"file is corrupt (SQLite integrity_check: {detail}){owners}", file=True)
        if intact is not None:
            found.add(f"the log reads intact up to seq {intact}", file=True)


def _page_owners(conn: sqlite3.Connection, pages: list[int]) -> str:
    """``"; page P is in NAME, ..."`` for the first few ``pages``, or "" when SQLite cannot
    say (no ``dbstat``, or a file too damaged to walk)."""
    said = []
    for page in dict.fromkeys(pages[:5]):
        try:
            row = conn.execute("SELECT name FROM dbstat WHERE pageno = ?", (page,)).fetchone()
        except sqlite3.DatabaseError:
            return ""
        if row is not None:
            said.append(f"page {page} is in {row[0]}")
    return "; " + ", ".join(said) if said else ""


def session_problem(row: dict[str, Any]) -> str | None:
    """What is wrong with a ``sessions`` row (``EventStore.session``), or None."""
    status = row.get("status")
    if status not in ("running", "finished"):
        return f"status is {status!r}, not 'running' or 'finished'"
    for name, kind in (("scenario", str), ("seed", int), ("last_seq", int), ("config", str)):
        if type(row.get(name)) is not kind:
            return f"{name} is {row.get(name)!r}, not {'text' if kind is str else 'an integer'}"
    if row["last_seq"] < 0:
        return f"last_seq is {row['last_seq']}, below 0"
    if row.get("durability") not in DURABILITY_PRAGMAS:
        return f"durability is {row.get('durability')!r}, not one of {sorted(DURABILITY_PRAGMAS)}"
    try:
        config = orjson.loads(row["config"])
    except orjson.JSONDecodeError:
        config = None
    if type(config) is not dict:
        return f"config is not a JSON object ({row['config'][:80]!r})"
    if status == "finished" and type(row.get("final_state_hash")) is not str:
        return "the session is finished but has no final_state_hash"
    return None


def _check_session(conn: sqlite3.Connection, scan: _BlobScan, found: _Problems) -> None:
    """The ``sessions`` row must be well-formed and say what the log's ``SessionStarted`` (its
    scenario, seed and configuration) and, once finished, its ``SessionEnded`` (the final
    state hash) say."""
    try:
        cursor = conn.execute("SELECT * FROM sessions")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    except sqlite3.DatabaseError:
        return  # reported with the sessions table above
    if len(rows) != 1:
        return  # idem
    row = rows[0]
    problem = session_problem(row)
    if problem is not None:
        found.add(f"sessions row: {problem} (the sessions table was edited)", file=True)
        return
    started = scan.first_event
    if started is not None and started.kind == "SessionStarted" and type(started.data) is dict:
        config = orjson.loads(row["config"])
        config.pop("_recorder", None)  # how it was recorded (batch size...), not the session
        told = {"scenario": row["scenario"], "seed": row["seed"], "config": config}
        for name, value in told.items():
            if started.data.get(name) != value:
                found.add(
                    f"sessions.{name} disagrees with the log's SessionStarted event (seq 1): "
                    "the sessions table was edited",
                    file=True,
                )
    ended = scan.last_event
    if (
        row["status"] == "finished"
        and ended is not None
        and ended.kind == "SessionEnded"
        and type(ended.data) is dict
        and ended.data.get("state_hash") != row["final_state_hash"]
    ):
        found.add(
            f"sessions.final_state_hash disagrees with the log's SessionEnded event (seq "
            f"{ended.seq}): the sessions table was edited",
            file=True,
        )


def _truncation(conn: sqlite3.Connection, path: Path) -> str | None:
    """Where a file shorter than its header says was cut, and which tables and indexes lost
    pages (by their root pages, from the schema; a b-tree's pages follow its root in a
    store, whose indexes are built last). None if the file is as long as its header says."""
    try:
        with path.open("rb") as f:
            header = f.read(100)
        size = path.stat().st_size
    except OSError:
        return None
    if len(header) < 100:
        return None
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65_536 if page_size == 1 else page_size
    claimed = int.from_bytes(header[28:32], "big")
    present = size // page_size
    if not page_size or present >= claimed:
        return None
    try:
        conn.execute("PRAGMA writable_schema=ON")  # read the schema page as it is
        indexes = sorted(
            (r[1], r[0])
            for r in conn.execute(
                "SELECT name, rootpage FROM sqlite_master WHERE type = 'index' AND rootpage > "
                "(SELECT max(rootpage) FROM sqlite_master WHERE type = 'table')"
            )
        )
    except sqlite3.DatabaseError:
        indexes = []
    # the post-mortem indexes are built after the log (gpuex index), each in pages after
    # its root and before the next one's: those whose pages reach past the end. (The tables
    # grow page by page, interleaved: the scan of the events says how far they are intact.)
    hit = [
        name
        for k, (root, name) in enumerate(indexes)
        if k + 1 == len(indexes) or indexes[k + 1][0] > present
    ]
    where = f"; pages lost from {', '.join(hit)}" if hit else ""
    return (
        f"file truncated: it ends in page {present + 1} of the {claimed} its header counts "
        f"({size:,} bytes of {claimed * page_size:,}){where}"
    )


def _check_batches(batch_rows: list[tuple], found: _Problems) -> list[tuple[int, int, int, str]]:
    """Check numbering, ranges and chain links of the batch rows; return their ranges
    ``(first_seq, last_seq, batch, digest)`` sorted by first_seq."""
    ranges = []
    previous_chain, expected_batch, expected_first = ZERO_CHAIN, 1, 1
    for row in batch_rows:
        batch, first, last, digest, chain = row
        if not (
            type(batch) is int
            and type(first) is int
            and type(last) is int
            and isinstance(digest, str)
            and isinstance(chain, str)
        ):
            found.add(
                f"unreadable batch row {row!r} after batch {expected_batch - 1}",
                expected_first,
                expected_batch,
            )
            continue
        if batch != expected_batch:
            missing = (
                f"batch {expected_batch}"
                if batch == expected_batch + 1
                else f"batches {expected_batch}..{batch - 1}"
            )
            found.add(
                f"{missing} missing (batch rows deleted): the chain breaks before batch {batch}",
                expected_first,
                expected_batch,
            )
        if first != expected_first:
            found.add(
                f"batch {batch} starts at seq {first}, but the previous batch ends at seq "
                f"{expected_first - 1}",
                min(first, expected_first),
                batch,
            )
        if last < first:
            found.add(f"batch {batch} has an empty range {first}..{last}", first, batch)
        try:
            link = _chain(previous_chain, digest)
        except (ValueError, TypeError):
            link = None
        if link != chain:
            found.add(
                f"batch {batch} (seqs {first}..{last}): chain break: its chain does not follow "
                "from the previous batch's chain and its digest (a batch row was edited or "
                "deleted)",
                first,
                batch,
            )
        ranges.append((first, last, batch, digest))
        previous_chain = chain
        expected_batch, expected_first = batch + 1, last + 1
    ranges.sort()
    return ranges


# ---------------------------------------------------------------------- migration
def migrate_store(path: str | Path) -> tuple[int, int]:
    """Rewrite the store at ``path`` of schema 2 (one row per event), 3 (one row per batch,
    its blob stored as it is) or 4 (the blob stored compact, its digest the JSON lines') as a
    store of :data:`SCHEMA_VERSION` (the blob stored compact, the digest over the stored
    bytes) and return ``(events, batches)``. ``gpuex migrate PATH`` calls it.

    Each batch's blob is, in schema 2, its events' stored payloads, each followed by a
    newline -- the bytes schema 2's batch digest hashed -- in schema 3 the ``events`` column
    itself and in schema 4 that column expanded. The old digests are the blobs': each blob's
    sha256 is checked equal to its old digest and the old chain recomputed and checked batch
    by batch before the batch is written (under a new digest, its stored form's, and so a
    new chain), and a batch that fails either stops the migration (a damaged log: ``gpuex
    verify`` with the gpuex that wrote it says where). The events are checked as
    :meth:`EventStore.append` checks them. The session row and the snapshots are copied as
    they are. Atomic: the new file is written beside (``PATH.migrating``), verified, then
    renamed over ``PATH``; a failure leaves ``PATH`` as it was. The projection is not
    carried over (``gpuex index PATH``).

    Raises:
        FileNotFoundError: no file at ``path``.
        StoreError: not a gpuex store, not of schema 2, 3 or 4, open by a writer (a ``-wal`` or
            ``-journal`` beside it), or damaged.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such event store")
    for suffix in ("-wal", "-journal"):
        if Path(f"{path}{suffix}").exists():
            raise StoreError(
                f"{path}: a {suffix[1:]} file is beside it (a writer has it open, or was killed "
                "with it open); close it with the gpuex that wrote it first"
            )
    old = _connect_ro(path)
    tmp = path.with_name(path.name + ".migrating")
    found: str | None = None  # the file's schema_version
    try:
        try:
            meta = dict(old.execute("SELECT key, value FROM meta"))
            if meta.get("format") != FORMAT:
                raise StoreError(f"{path}: not a gpuex event store")
            found = meta.get("schema_version")
            if found == str(SCHEMA_VERSION):
                raise StoreError(f"{path}: already schema_version {found}; nothing to migrate")
            if found not in _SCHEMAS_BEFORE:
                raise StoreError(
                    f"{path}: schema_version {found}; only "
                    f"{', '.join(_SCHEMAS_BEFORE)} can be migrated"
                )
            if meta.get("typed_fields") != ",".join(TYPED_FIELDS):
                raise StoreError(f"{path}: typed_fields {meta.get('typed_fields')!r} differ")
            cursor = old.execute("SELECT * FROM sessions")
            names = [d[0] for d in cursor.description]
            sessions = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
            if len(sessions) != 1 or session_problem(sessions[0]) is not None:
                raise StoreError(f"{path}: damaged sessions row; not migrated")
            session = sessions[0]
            batches = old.execute(
                "SELECT batch, first_seq, last_seq, digest, chain FROM batches ORDER BY batch"
            ).fetchall()
            snapshots = old.execute(
                "SELECT seq, state, state_hash FROM snapshots ORDER BY seq"
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: cannot read the store ({exc})") from exc
        for side in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-journal"), Path(f"{tmp}-shm")):
            side.unlink(missing_ok=True)  # a migration killed before its rename
        new = EventStore.create(
            tmp,
            scenario=session["scenario"],
            seed=session["seed"],
            config=orjson.loads(session["config"]),
            code_version=session["code_version"] or "",
            durability=session["durability"],
            session_id=session["session_id"],
            started_t=session["started_t"] or 0,
        )
        count = 0
        old_chain = ZERO_CHAIN  # the old file's chain, recomputed as its batches are read
        try:
            for batch, first, last, digest, chain in batches:
                where = f"{path}: batch {batch} (seqs {first}..{last})"
                try:
                    if found == "2":
                        blob, events = _schema_2_batch(old, first, last)
                    else:
                        blob, events = _schema_3_batch(old, batch, first, last, found == "4")
                except sqlite3.DatabaseError as exc:
                    raise StoreError(f"{where}: cannot be read ({exc}); not migrated") from exc
                if blob is None:
                    raise StoreError(f"{where}: {events}; not migrated")
                # schemas 2-4: the digest is the JSON lines'
                if hashlib.sha256(blob).hexdigest() != digest:
                    raise StoreError(f"{where}: digest mismatch (a damaged log); not migrated")
                # the new chain differs (schema 5's digests are the stored bytes'), so the old
                # one is checked here, as it is read
                try:
                    old_chain = _chain(old_chain, digest)
                except (ValueError, TypeError):
                    old_chain = None
                if old_chain != chain:
                    raise StoreError(f"{where}: chain break (a damaged log); not migrated")
                if events is None:  # the digest holds, yet the blob is not its events
                    raise StoreError(
                        f"{where}: its events are not seqs {first}..{last} in order, one a "
                        "line (a damaged log); not migrated"
                    )
                try:
                    new.append(events, encoded=blob)
                except ValueError as exc:
                    raise StoreError(f"{where}: {exc}; not migrated") from exc
                if new.batch_count != batch:
                    raise StoreError(f"{where}: batches not numbered 1, 2, ...; not migrated")
                count += len(events)
            if count != session["last_seq"]:
                raise StoreError(
                    f"{path}: sessions.last_seq {session['last_seq']}, but the batches hold "
                    f"{count} events; not migrated"
                )
            with new._db.atomic():
                new._conn.executemany(
                    "INSERT INTO snapshots (seq, state, state_hash) VALUES (?, ?, ?)", snapshots
                )
                new._conn.execute(
                    "UPDATE sessions SET code_version = ?, config = ?, status = ?, "
                    "finished_t = ?, final_state_hash = ?",
                    (
                        session["code_version"],
                        session["config"],
                        session["status"],
                        session["finished_t"],
                        session["final_state_hash"],
                    ),
                )
        finally:
            new.close()
        report = verify_store(tmp)
        if not report.ok:
            raise StoreError(f"{path}: the migrated log does not verify: {report.problems[0]}")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        old.close()
    os.replace(tmp, path)
    return count, len(batches)


def _schema_2_batch(old: sqlite3.Connection, first: int, last: int) -> tuple[Any, Any]:
    """Of a schema-2 store: the blob of the batch of seqs ``first..last`` (its events'
    payloads, each followed by a newline) and its events; or ``(None, what is wrong)``."""
    rows = old.execute(
        "SELECT seq, CAST(payload AS BLOB) FROM events WHERE seq >= ? AND seq <= ? ORDER BY seq",
        (first, last),
    ).fetchall()
    if [r[0] for r in rows] != list(range(first, last + 1)):
        return None, "event rows missing"
    blob = b"".join([r[1] + b"\n" for r in rows])
    try:
        events = [decode(r[1]) for r in rows]
    except (ValueError, TypeError):
        events = None  # a digest mismatch, unless the log was rewritten consistently
    return blob, events


def _schema_3_batch(
    old: sqlite3.Connection, batch: int, first: int, last: int, compacted: bool = False
) -> tuple[Any, Any]:
    """Of a schema-3 store (or schema 4, ``compacted``: the column holds the compact form,
    expanded here): batch ``batch``'s blob (the JSON lines) and its events as field lists
    (None if they are not seqs ``first..last`` in order); or ``(None, what is wrong)``."""
    row = old.execute("SELECT events FROM batches WHERE batch = ?", (batch,)).fetchone()
    if row is None or type(row[0]) is not bytes:
        return None, "its events are not a blob"
    blob = row[0]
    if compacted:
        try:
            blob = expand(blob)
        except CompactError as exc:
            return None, f"its stored events do not expand ({exc}; a damaged log)"
    return blob, _sound_fields(blob, first, last)
