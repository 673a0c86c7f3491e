"""The event store: one SQLite file per session, append-only, checksummed, replayable.

Layout (schema version :data:`SCHEMA_VERSION`; see ``docs/event_store.md``):

* ``meta`` (key, value): ``format`` = ``gpuex-event-store``, ``schema_version``, and
  ``typed_fields`` (the comma-joined :data:`exchange.events.TYPED_FIELDS` the columns were
  made for).
* ``sessions``: one row -- session id, scenario, seed, code version, config (canonical JSON),
  durability, status (``running`` | ``finished``), ``last_seq``, ``started_t`` and
  ``finished_t`` (simulated ns), ``final_state_hash``.
* ``events``: one row per event: ``seq`` (primary key), the typed fields of
  :class:`~exchange.events.Event` as columns, ``payload`` (the canonical JSON of
  :func:`exchange.events.encode`, as text), ``crc`` (``zlib.crc32`` of the payload bytes) and
  ``batch`` (the number of the batch that committed it).
* ``batches``: ``batch`` (1, 2, 3, ...), ``first_seq``, ``last_seq``, ``digest`` (sha256 hex of
  each payload followed by ``b"\\n"``, in seq order) and ``chain`` (sha256 hex of
  ``bytes.fromhex(previous chain) + bytes.fromhex(digest)``; the chain before batch 1 is 64
  zeros). The last chain (:meth:`EventStore.digest`) identifies the whole log.
* ``snapshots``: ``seq``, ``state`` (JSON), ``state_hash`` -- caches of folded state.

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

**Indexes.** The post-mortem indexes -- ``(kind)``, ``(account)``, ``(instrument)``,
``(counterparty)``, ``(order_id)``, ``(t)``, each ordered by ``seq`` within a key (the rowid
ends every index) -- are a projection of the ``events`` table for users' plain-SQL
post-mortems, built on demand only: by :meth:`EventStore.build_indexes` (``gpuex index
PATH``), never by :meth:`~EventStore.append`, :meth:`~EventStore.finish` or
:meth:`~EventStore.close` (issue #20: building them at the seal was about 62 % of the
storage floor of a run). No read of this package goes through them: checked reads (the
default) filter the table itself, on columns checked against the payloads (see
:meth:`EventStore.events`), and unchecked reads work the same with or without them. Their
presence is the only difference between an indexed and an unindexed file, so it is not part
of :data:`SCHEMA_VERSION`.

**Checked reads.** :meth:`EventStore.events` and :meth:`EventStore.rows` check every row of
the range as they read it -- seqs without a gap up to ``sessions.last_seq``, the crc, the typed
columns against the payload, each batch's digest and the batch chain -- in C
(``exchange._reader``), and raise :class:`DamagedLogError` naming the seq of the first row that
does not prove itself.

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
import re
import sqlite3
import threading
import typing
import weakref
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import sqlite_utils

from exchange.events import ENCODE_OPTIONS, TYPED_FIELDS, Event, decode, encode

#: Bump whenever the layout of the file changes.
SCHEMA_VERSION = 2  # 2: payloads are JSON arrays in Event field order
#: The ``meta`` value of ``format`` that marks a gpuex event store.
FORMAT = "gpuex-event-store"
#: The chain value before the first batch.
ZERO_CHAIN = "0" * 64
DURABILITY_PRAGMAS = {"full": "FULL", "normal": "NORMAL"}

_N_TYPED = len(TYPED_FIELDS)
_TYPED_COLUMNS = ", ".join(TYPED_FIELDS)
_EVENT_COLUMNS = (*TYPED_FIELDS, "payload", "crc", "batch")
if Event._fields != (*TYPED_FIELDS, "data"):  # append() relies on it (see there)
    raise ImportError("exchange.store expects Event's fields to be TYPED_FIELDS + ('data',)")
_N_COLUMNS = len(_EVENT_COLUMNS)
_N_FIELDS = len(Event._fields)
#: Rows per multi-row INSERT statement on the append path (15 columns -> 1,500 parameters,
#: far below SQLite's limit of 32,766).
_ROWS_PER_INSERT = 100
_ONE_ROW = "(" + ", ".join("?" * _N_COLUMNS) + ")"
_INSERT_ONE = f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) VALUES {_ONE_ROW}"
_INSERT_MANY = f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) VALUES " + ", ".join(
    [_ONE_ROW] * _ROWS_PER_INSERT
)
#: Post-mortem indexes (columns), created by :meth:`EventStore.build_indexes`. Those on
#: nullable columns are partial (``WHERE col IS NOT NULL``): smaller and quicker to build, and
#: SQLite still uses them for ``col = ?`` and ``col IN (...)``. ``seq`` is the rowid, which
#: every SQLite index carries as its last key column, so an index on ``(kind)`` already
#: serves ``kind = ? AND seq BETWEEN ? AND ? ORDER BY seq`` without a sort; naming ``seq``
#: too stored it twice and made each of these indexes 25-30 % slower to build.
INDEXES = (
    ("kind",),
    ("account",),
    ("instrument",),
    ("counterparty",),
    ("order_id",),
    ("t",),
)
_NOT_NULL_COLUMNS = ("seq", "t", "kind")
#: Event fields usable as filters in :meth:`EventStore.events` / :meth:`EventStore.rows`.
FILTER_FIELDS = ("kind", "account", "instrument", "order_id", "counterparty", "counter_order_id")
#: Page size of new stores (SQLite's default is 4,096). Larger pages mean fewer WAL frames,
#: hence fewer write calls per commit and fewer pages to checkpoint; 16 KiB measured better
#: than 4 KiB for appends (see benches/README.md). Existing files keep their page size.
_PAGE_SIZE = 16_384
#: WAL checkpoints. SQLite's automatic checkpoint is off for a writer; instead a background
#: thread (:class:`_Checkpointer`) checkpoints after every ``_BG_CHECKPOINT_BYTES`` of
#: appended payload (about 5 MiB of WAL), copying pages and fsyncing off the appending
#: thread, and after every ``_WAL_RESTART_BYTES`` (about 60 MiB of WAL) the writer itself
#: checkpoints what is left (the last few batches) between two transactions, so that the
#: next transaction restarts the WAL from its beginning instead of growing the file.
_BG_CHECKPOINT_BYTES = 4 << 20
_WAL_RESTART_BYTES = 48 << 20
_CACHE_KIB = 65_536
#: The page cache while the indexes are built, which bounds each in-memory run of SQLite's
#: sorter (see :meth:`EventStore.build_indexes`).
_INDEX_SORT_CACHE_KIB = 4_096
_BUSY_TIMEOUT_S = 10.0
_MAX_REPORTED_PROBLEMS = 200
#: Long reads (``verify_store``, ``session.verify``) report their progress every this many
#: events: often enough for a progress bar, rarely enough to cost nothing.
PROGRESS_EVERY = 16_384
_UNSET = object()
#: ``{None: nan}.get`` maps None to NaN, which SQLite binds as NULL (see ``append``).
_NULL_AS_NAN = {None: float("nan")}


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

    def close(self) -> None:
        self._stop = True
        self._wake.set()
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


def _event_writer(conn: sqlite3.Connection, path: Path) -> Any:
    """The C append path for ``conn`` (``exchange._writer``), or None when it is not built or
    cannot use this connection's handle (the store then binds through Python's sqlite3)."""
    try:
        from exchange._writer import EventWriter
    except ImportError:  # pragma: no cover - the extension is part of every install
        return None
    try:
        return EventWriter(
            conn,
            str(path.resolve()),
            _INSERT_ONE,
            _N_TYPED,
            orjson.dumps,
            ENCODE_OPTIONS,
            zlib.crc32,
            _INSERT_MANY,
            _ROWS_PER_INSERT,
        )
    except ValueError:  # pragma: no cover - a Python whose sqlite3.Connection differs
        return None


def _row_reader(
    conn: sqlite3.Connection,
    path: Path,
    sql: str,
    params: list[Any],
    check: Callable[[tuple | None, int], None] | None = None,
    first: int = 1,
    last: int = -1,
    with_payload: bool = False,
    batch_ends: list[int] | None = None,
) -> Any:
    """The typed rows of ``sql`` read in C (``exchange._reader``; a checked read with
    ``check``), or None when that path is not built or cannot take this connection, its
    text factory or these parameters (the store then reads through a Python ``sqlite3``
    cursor: the same rows, the same checks)."""
    if conn.text_factory is not str:
        return None
    try:
        from exchange._reader import RowReader
    except ImportError:  # pragma: no cover - the extension is part of every install
        return None
    try:
        return RowReader(
            conn, str(path.resolve()), sql, params, check, first, last, with_payload, batch_ends
        )
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
    """Is ``path`` in WAL mode (header bytes 18-19) with no ``-wal`` file beside it? No
    writer has it open then (a writer's WAL file exists while it is open)."""
    try:
        with path.open("rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return header[18:20] == b"\x02\x02" and not Path(f"{path}-wal").exists()


def _connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection (SQLite ``mode=ro`` URI): it cannot change the file's content.

    One exception, which changes no committed byte: a writer killed inside a rollback-journal
    transaction (a store's ``close`` leaves WAL mode in one, so a run killed at that moment
    does) leaves a *hot journal*, which a read-only connection may not roll back and so
    cannot read past. A short read-write connection then lets SQLite roll it back, as any
    writer's open would, restoring the last committed state; the read-only one follows."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such event store")
    uri = _ro_uri(path)
    if _wal_file_alone(path):
        # a file left in WAL mode whose -wal is gone (copied alone, say): everything it holds
        # is in the file, and an ordinary read-only open would create -wal and -shm files
        # beside it, or fail where it cannot (read-only storage)
        uri += "&immutable=1"
    conn = sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT_S)
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
        conn = sqlite3.connect(_ro_uri(path), uri=True, timeout=_BUSY_TIMEOUT_S)
    except BaseException:
        conn.close()
        raise
    return conn


def _chain(previous: str, digest: str) -> str:
    return hashlib.sha256(bytes.fromhex(previous) + bytes.fromhex(digest)).hexdigest()


def _default_session_id(scenario: str, seed: int, config_json: str, code_version: str) -> str:
    ident = orjson.dumps(
        {"scenario": scenario, "seed": seed, "config": config_json, "code_version": code_version},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(ident).hexdigest()[:32]


def _check_header(conn: sqlite3.Connection, path: Path) -> None:
    """Raise :class:`StoreError` unless ``conn`` is a gpuex store of this schema version."""
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            raise StoreError(f"{path}: not a gpuex event store (no meta table)")
        meta = dict(conn.execute("SELECT key, value FROM meta"))
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a readable SQLite event store ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise StoreError(f"{path}: not a gpuex event store (meta.format={meta.get('format')!r})")
    found = meta.get("schema_version")
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
    missing = {"sessions", "events", "batches", "snapshots"} - tables
    if missing:
        raise StoreError(f"{path}: damaged event store (missing tables {sorted(missing)})")


def _match(filters: dict[str, Any]) -> tuple[str, list[Any]]:
    """The typed-column filters as one SQL condition (``1``: none) and its parameters."""
    where, params = _where(1, None, filters)
    where, params = where.removeprefix("seq >= ?"), params[1:]
    return (f"coalesce({where.removeprefix(' AND ')}, 0)" if where else "1"), params


class _RowJudge:
    """The Python side of a checked read: called with an event row the C checks did not pass
    (typed columns, payload, crc, match; text may be bytes) and the seq expected there, it
    raises :class:`DamagedLogError` saying what is wrong, or returns if nothing is (text the C
    comparison leaves to it). Called with ``None`` at the end of the rows: it raises if seqs
    up to ``last`` are missing, else tells ``proved``."""

    def __init__(
        self,
        path: Path,
        last: int,
        proved: Callable[[int], None] | None = None,
        batches: Sequence[tuple[int, int, int, str]] = (),
    ):
        self.path = path
        self.last = last
        self.proved = proved  # told the last seq once every row up to it has proved itself
        self.batches = batches  # (batch, first_seq, last_seq, digest) the rows span

    def batch(self, k: int, data: bytes) -> None:
        """The payloads of ``batches[k]``, each followed by a newline: raise unless their
        digest is the one committed."""
        batch, first, last, digest = self.batches[k]
        if hashlib.sha256(data).hexdigest() != digest:
            raise DamagedLogError(
                self.path,
                first,
                f"batch {batch} (seqs {first}..{last}): digest mismatch: its events differ from "
                "what was committed (an event edited with its crc recomputed)",
            )

    def corrupt(self, message: str, expected: int) -> None:
        """SQLite failed reading the row expected to be seq ``expected``."""
        raise DamagedLogError(
            self.path,
            expected,
            f"the file is corrupt here (SQLite: {message}); the rows before it proved sound",
        )

    def __call__(self, row: tuple | None, expected: int) -> None:
        def damaged(seq: int, problem: str) -> DamagedLogError:
            return DamagedLogError(self.path, seq, problem)

        if row is None:
            if expected > self.last:  # the end, every row sound
                if self.proved is not None:
                    self.proved(self.last)
                return
            what = f"seq {expected}" if expected == self.last else f"seqs {expected}..{self.last}"
            raise damaged(
                expected,
                f"{what} missing at the end (sessions.last_seq says {self.last}): event rows "
                "deleted or the log truncated",
            )
        row = tuple(
            _lenient_text(v) if type(v) is bytes and i < _N_TYPED else v for i, v in enumerate(row)
        )
        seq, payload, crc = row[0], row[_N_TYPED], row[_N_TYPED + 1]
        if type(seq) is not int:
            raise damaged(expected, f"an event row has seq {seq!r}, not an integer")
        if seq != expected:
            if seq > expected:
                missing = (
                    f"seq {expected}" if seq == expected + 1 else f"seqs {expected}..{seq - 1}"
                )
                raise damaged(expected, f"{missing} missing (event rows deleted)")
            raise damaged(seq, f"seq {seq} is out of order after seq {expected - 1}")
        if isinstance(payload, str):
            payload = payload.encode("utf-8", "surrogateescape")
        if not isinstance(payload, bytes):
            raise damaged(seq, f"the payload is {payload!r}, not text")
        if zlib.crc32(payload) != crc:
            raise damaged(
                seq,
                f"payload checksum mismatch (stored crc {crc!r}, payload's "
                f"{zlib.crc32(payload)}): the payload was edited",
            )
        try:
            event = decode(payload)
        except (ValueError, TypeError) as exc:
            raise damaged(seq, f"the payload is not a valid event ({exc})") from None
        if event.seq != seq:
            raise damaged(seq, f"the payload is event seq {event.seq} (events reordered or moved)")
        for i in range(1, _N_TYPED):
            if row[i] != event[i] or type(row[i]) is not type(event[i]):
                raise damaged(
                    seq,
                    f"column {TYPED_FIELDS[i]}={row[i]!r} disagrees with the payload's "
                    f"{TYPED_FIELDS[i]}={event[i]!r} (typed column edited)",
                )
        if type(row[_N_TYPED + 2]) is not int:
            raise damaged(seq, "the row's columns cannot be compared (typed column edited)")


def _checked_rows_py(
    conn: sqlite3.Connection,
    sql: str,
    params: list[Any],
    judge: _RowJudge,
    first: int,
    with_payload: bool,
) -> Iterator[tuple]:
    """A checked read through a Python cursor (when the C reader cannot be used): the same
    checks as ``exchange._reader``'s, the same rows."""
    crc32, dumps = zlib.crc32, orjson.dumps
    expected = first
    width = _N_TYPED + 1 if with_payload else _N_TYPED
    ends = [b[2] for b in judge.batches]
    k, hashed = 0, []
    try:
        cursor = conn.execute(sql, params)
    except sqlite3.DatabaseError as exc:
        judge.corrupt(str(exc), expected)
    try:
        for row in cursor:
            typed, payload = row[:_N_TYPED], row[_N_TYPED]
            if not (
                row[0] == expected
                and type(payload) is bytes
                and crc32(payload) == row[_N_TYPED + 1]
                and payload.startswith(dumps(typed)[:-1] + b",")
            ):
                judge(row, expected)
            expected = row[0] + 1
            if k < len(ends):
                hashed.append(payload)
                if row[0] == ends[k]:
                    judge.batch(k, b"\n".join(hashed) + b"\n")
                    k, hashed = k + 1, []
            if row[-1]:
                yield row[:width]
    except sqlite3.DatabaseError as exc:
        if not str(exc).startswith("Could not decode"):
            judge.corrupt(str(exc), expected)
        raise DamagedLogError(
            judge.path, expected, "a typed column is not valid UTF-8 (typed column edited)"
        ) from None
    judge(None, expected)


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

    def __init__(self, db: sqlite_utils.Database, path: Path, mode: str) -> None:
        """Internal: use :meth:`create` or :meth:`open`."""
        self._db = db
        self._conn: sqlite3.Connection = db.conn
        self.path = path
        self.mode = mode
        self._last_seq = 0
        self._batch_count = 0
        self._chain = ZERO_CHAIN
        self._finished = False
        self._handed_off = False  # see hand_off
        self._proven = 0  # seqs 1.._proven proved themselves in a checked read (see _checked)
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
        self._writer: Any = None  # exchange._writer.EventWriter, when the C path is usable
        self._bg_bytes = 0  # payload bytes since the last background checkpoint request
        self._wal_bytes = 0  # payload bytes since the writer's last complete checkpoint

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
        conn = sqlite3.connect(str(path), timeout=_BUSY_TIMEOUT_S)
        db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
        try:
            conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")  # before the first table
            _enable_wal(conn)
            store = cls(db, path, "a")
            store._configure_writer(durability)
            with db.atomic():
                db["meta"].create(
                    {"key": str, "value": str}, pk="key", not_null=["value"], strict=True
                )
                db["meta"].insert_all(
                    [
                        {"key": "format", "value": FORMAT},
                        {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                        {"key": "typed_fields", "value": ",".join(TYPED_FIELDS)},
                    ]
                )
                db["sessions"].create(
                    {
                        "session_id": str,
                        "scenario": str,
                        "seed": int,
                        "code_version": str,
                        "config": str,
                        "durability": str,
                        "status": str,
                        "last_seq": int,
                        "started_t": int,
                        "finished_t": int,
                        "final_state_hash": str,
                    },
                    not_null=["session_id", "scenario", "seed", "status", "last_seq"],
                    strict=True,
                )
                db["sessions"].insert(
                    {
                        "session_id": session_id,
                        "scenario": scenario,
                        "seed": seed,
                        "code_version": code_version,
                        "config": config_json,
                        "durability": durability,
                        "status": "running",
                        "last_seq": 0,
                        "started_t": started_t,
                        "finished_t": None,
                        "final_state_hash": None,
                    }
                )
                columns = {name: _column_type(name) for name in TYPED_FIELDS}
                columns.update({"payload": str, "crc": int, "batch": int})
                db["events"].create(
                    columns,
                    pk="seq",
                    not_null=["t", "kind", "payload", "crc", "batch"],
                    strict=True,
                )
                db["batches"].create(
                    {"batch": int, "first_seq": int, "last_seq": int, "digest": str, "chain": str},
                    pk="batch",
                    not_null=["first_seq", "last_seq", "digest", "chain"],
                    strict=True,
                )
                db["snapshots"].create(
                    {"seq": int, "state": str, "state_hash": str},
                    pk="seq",
                    not_null=["state", "state_hash"],
                    strict=True,
                )
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
            StoreError: not a gpuex store, or another schema version.
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
            db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
            store = cls(db, path, mode)
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
        self._writer = _UNSET  # made at the first append, once the tables exist

    # ------------------------------------------------------------------ writing
    def append(self, events: Sequence[Event], snapshot: tuple[int, str, str] | None = None) -> None:
        """Commit ``events`` as one batch, in one transaction, with its batch row (digest and
        chain), the optional ``snapshot`` ``(seq, state_json, state_hash)`` and the new
        ``sessions.last_seq``. Either all of it is written or nothing is.

        Raises:
            ValueError: the seqs do not continue the log contiguously (``events[0].seq`` must
                be ``last_seq + 1``), an event cannot be stored (e.g. no ``t``/``kind``), or
                the snapshot's seq is outside ``1..new last_seq`` or already taken.
            StoreError: the store is read-only or the session is finished.
        """
        if self.mode != "a":
            raise StoreError(f"{self.path}: opened read-only")
        if self._finished:
            raise StoreError(f"{self.path}: session is finished; the log is sealed")
        if self._handed_off:
            raise StoreError(f"{self.path}: handed off to another writer")
        first = self._last_seq + 1
        n = len(events)
        last = first + n - 1
        if snapshot is not None and not 1 <= snapshot[0] <= last:
            raise ValueError(f"snapshot seq {snapshot[0]} outside 1..{last}")
        if n == 0 and snapshot is None:
            return
        batch = self._batch_count + 1
        if self._writer is _UNSET:
            self._writer = _event_writer(self._conn, self.path)
        if self._writer is not None:
            self._append_in_c(events, snapshot, batch, first, last)
            return
        # The Python path, when the C writer cannot be used (tests check both give the same
        # file). Encode once per event. A row's values are the event's typed fields, then the
        # payload as text, its crc and the batch number, all in one flat list that is cut
        # into multi-row INSERTs below. None goes in as NaN, which SQLite
        # binds as NULL: Python's sqlite3 adapts None through its adapter protocol, which
        # raises and clears an AttributeError per value (about 0.35 us per None, several per
        # event; see benches/README.md), while a float binds directly. Only the str payload
        # is kept (holding the n bytes objects from orjson costs more than the decode,
        # measured); the batch digest hashes the payload texts joined, in one call.
        values: list[Any] = []
        extend = values.extend
        add = values.append
        crc32 = zlib.crc32
        nullable = _NULL_AS_NAN.get
        for position, event in enumerate(events):
            # what the C writer's first_bad checks
            if (
                not isinstance(event, tuple)
                or len(event) != _N_FIELDS
                or event[0] != first + position
            ):
                raise self._refusal(event, position, first)
            payload = encode(event)
            typed = event[:_N_TYPED]
            extend(map(nullable, typed, typed))
            add(payload.decode())
            add(crc32(payload))
            add(batch)
        # The hot path uses the sqlite3 connection directly: sqlite-utils' insert_all builds a
        # dict per row and re-derives the column list per chunk, several times slower. Rows go
        # in _ROWS_PER_INSERT per statement (one multi-row INSERT) to cut the per-row
        # statement overhead.
        width = _N_COLUMNS * _ROWS_PER_INSERT
        full = (n // _ROWS_PER_INSERT) * width
        chunks = [values[i : i + width] for i in range(0, full, width)]
        rest = [values[i : i + _N_COLUMNS] for i in range(full, len(values), _N_COLUMNS)]
        conn = self._conn

        def insert() -> bytes:
            if chunks:
                conn.executemany(_INSERT_MANY, chunks)
            if rest:
                conn.executemany(_INSERT_ONE, rest)
            texts = values[_N_TYPED::_N_COLUMNS]
            texts.append("")
            return "\n".join(texts).encode()

        self._commit(n, batch, first, last, snapshot, insert)

    def _refusal(self, event: Any, position: int, first: int) -> ValueError:
        """Why ``event``, at ``position`` of a batch that should start at seq ``first``,
        cannot be appended."""
        if not isinstance(event, tuple):
            return ValueError(
                f"an event must be a tuple (exchange.events.Event), not {event!r:.200}"
            )
        if len(event) != _N_FIELDS:
            return ValueError(f"events must have the {_N_FIELDS} fields of Event")
        return ValueError(
            f"event seq {event[0]} at position {position} of the batch: expected "
            f"{first + position} (the log ends at seq {self._last_seq}; seqs must be contiguous)"
        )

    def _append_in_c(self, events, snapshot, batch: int, first: int, last: int) -> None:
        """:meth:`append` through :class:`exchange._writer.EventWriter`: the same rows, batch
        row, snapshot and ``last_seq``, in one transaction of the same connection."""
        writer = self._writer
        position = writer.first_bad(events, first, _N_FIELDS)
        if position >= 0:
            raise self._refusal(events[position], position, first)
        self._commit(
            len(events),
            batch,
            first,
            last,
            snapshot,
            lambda: writer.write(events, batch),
        )

    def _commit(self, n: int, batch: int, first: int, last: int, snapshot, insert) -> None:
        """One batch's transaction, whichever path inserts the rows: ``insert()`` writes the
        ``n`` events and returns their payloads, each followed by a newline; then the batch row
        (digest and chain), ``sessions.last_seq`` and the optional snapshot. All or nothing; a value
        SQLite refuses becomes a ``ValueError`` naming the batch."""
        chain = self._chain
        joined = b""
        conn = self._conn
        try:
            with self._db.atomic():
                if n:
                    joined = insert()
                    digest = hashlib.sha256(joined).hexdigest()
                    chain = _chain(self._chain, digest)
                    conn.execute(
                        "INSERT INTO batches (batch, first_seq, last_seq, digest, chain) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (batch, first, last, digest, chain),
                    )
                    conn.execute("UPDATE sessions SET last_seq = ?", (last,))
                if snapshot is not None:
                    seq, state_json, state_hash = snapshot
                    conn.execute(
                        "INSERT INTO snapshots (seq, state, state_hash) VALUES (?, ?, ?)",
                        (seq, state_json, state_hash),
                    )
        except (sqlite3.IntegrityError, sqlite3.InterfaceError, OverflowError, ValueError) as exc:
            # a NOT NULL or type (STRICT) violation, an unbindable or too large value
            raise ValueError(f"batch {batch} (seqs {first}..{last}) not stored: {exc}") from exc
        if n:
            self._last_seq = last
            self._batch_count = batch
            self._chain = chain
            self._after_commit(len(joined) + (len(snapshot[1]) if snapshot else 0))

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
        with self._db.atomic():
            self._conn.execute(
                "UPDATE sessions SET status = 'finished', finished_t = ?, final_state_hash = ?",
                (t, state_hash),
            )
        self._finished = True

    def missing_indexes(self) -> list[str]:
        """Names of the post-mortem indexes (:data:`INDEXES`) the file lacks, in
        :data:`INDEXES` order: all of them until :meth:`build_indexes` (``gpuex index``) has
        run on the file, none after. A file without them is complete and sound."""
        present = {
            row[0]
            for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        return [name for name in map(_index_name, INDEXES) if name not in present]

    def build_indexes(self, progress: Callable[[int, int], None] | None = None) -> list[str]:
        """Create the post-mortem indexes (:data:`INDEXES`) that are missing, in one
        transaction, and return their names (empty if none was missing: idempotent). Only
        this builds them (``gpuex index PATH`` calls it); no read of this package needs them.

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
        if not missing:
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
        try:
            # Raw SQL: sqlite-utils' create_index cannot make partial indexes.
            missing = set(self.missing_indexes())
            todo = [columns for columns in INDEXES if _index_name(columns) in missing]
            with self._db.atomic():
                for done, columns in enumerate(todo, 1):
                    where = ""
                    if columns[0] not in _NOT_NULL_COLUMNS:
                        where = f" WHERE {columns[0]} IS NOT NULL"
                    self._conn.execute(
                        f"CREATE INDEX IF NOT EXISTS {_index_name(columns)} "
                        f"ON events ({', '.join(columns)}){where}"
                    )
                    if progress is not None:
                        progress(done, len(todo))
        finally:
            self._conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")

    def hand_off(self) -> None:
        """Stop appending through this store, so that another writer can append to the log
        (a run hands its batches to the journaller process this way; see
        :mod:`exchange.journal`). The connection stays open and idle; :meth:`close` later
        finishes the file as it always does. Appending here afterwards is refused."""
        self._stop_writing()
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
        if self._writer is not None and self._writer is not _UNSET:
            self._writer.close()
        self._writer = None
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
        try:
            if self.mode == "a":
                try:
                    if conn.in_transaction:  # left open by a failure: nothing of it is wanted
                        conn.rollback()
                    conn.execute("PRAGMA busy_timeout=0")
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
                except sqlite3.OperationalError:
                    mode = "wal"
                # "wal" still: another connection has the file open (SQLite refuses the
                # switch without an error); the WAL stays until the last one closes
                self.left_in_wal = mode.lower() == "wal"
        finally:
            conn.close()
            self._conn = None  # type: ignore[assignment]

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
        rows = list(self._db["sessions"].rows)
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
        """Number of events of each kind, by kind name (sorted)."""
        # NOT INDEXED: counted from the table, not from an index that nothing checked
        rows = self._conn.execute(
            "SELECT kind, count(*) FROM events NOT INDEXED GROUP BY kind ORDER BY kind"
        )
        return dict(rows.fetchall())

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
        order, filtered on the typed columns (each filter: one value or a list/tuple/set of
        values; ``account`` matches the ``account`` column only -- a Fill's maker is its
        ``counterparty``).

        ``check`` (the store's default, see :meth:`open`: True unless opened with
        ``checked=False``): every row of the range is checked as it is read, selected by
        the filters or not -- seqs contiguous up to ``sessions.last_seq``, the payload's crc,
        the typed columns against the payload -- and the filters are applied to the table
        itself, never through an index (an index is only what ``verify`` checked when it
        last ran); a row that fails raises :class:`DamagedLogError` naming its seq. ``check=
        False``: trust the file (the indexes, the columns) -- for a log just verified."""
        filters = {
            "kind": kind,
            "account": account,
            "instrument": instrument,
            "order_id": order_id,
            "counterparty": counterparty,
            "counter_order_id": counter_order_id,
        }
        path = self.path
        if not (self.checked if check is None else check):
            where, params = _where(start, stop, filters)
            sql = f"SELECT payload FROM events WHERE {where} ORDER BY seq"
            for (payload,) in self._track(self._conn.execute(sql, params)):
                yield decode(payload)
            return
        for row in self._checked(start, stop, filters, with_payload=True):
            try:
                event = decode(row[_N_TYPED])
            except (ValueError, TypeError) as exc:
                raise DamagedLogError(
                    path, row[0], f"the payload is not an event ({exc})"
                ) from None
            yield event

    def rows(
        self,
        start: int = 1,
        stop: int | None = None,
        *,
        check: bool | None = None,
        **filters: Any,
    ) -> Iterator[tuple]:
        """The typed columns (:data:`~exchange.events.TYPED_FIELDS` order) of the events with
        ``start <= seq <= stop``, as tuples, without decoding JSON; same filters and ``check``
        as :meth:`events` (a checked read of a whole log costs about a third more than an
        unchecked one: the crc and the comparison are done in C; see docs/event_store.md)."""
        if self.checked if check is None else check:
            return self._checked(start, stop, filters, with_payload=False)
        where, params = _where(start, stop, filters)
        sql = f"SELECT {_TYPED_COLUMNS} FROM events WHERE {where} ORDER BY seq"
        # in C, with one str per distinct text value: the rows 1.9x quicker, a replay 1.4x;
        # else the cursor itself, which yields the row tuples with no Python frame per row
        reader = _row_reader(self._conn, self.path, sql, params)
        return self._track(reader if reader is not None else self._conn.execute(sql, params))

    def _checked(
        self, start: int, stop: int | None, filters: dict[str, Any], *, with_payload: bool
    ) -> Iterator[tuple]:
        """A checked read (see :meth:`events`): every row of ``start..stop`` (to
        ``sessions.last_seq``) proves itself; those the filters select are handed out. Rows
        proved by an earlier checked read through this store (a prefix of the log) are not
        checked again: the next reads of a command are filtered table scans only."""
        for name in filters:
            if name not in FILTER_FIELDS:
                raise ValueError(f"cannot filter on {name!r}; filters: {', '.join(FILTER_FIELDS)}")
        last = self.last_seq
        if stop is not None:
            last = min(stop, last)
        first = max(start, 1)
        match, params = _match(filters)
        payload = ", CAST(payload AS BLOB)" if with_payload else ""
        if last <= self._proven:
            # NOT INDEXED: the rows come from the table, never through an index (the
            # indexes are only what `verify` found them when it last ran)
            where, params = _where(first, last, filters)
            sql = (
                f"SELECT {_TYPED_COLUMNS}{payload} FROM events NOT INDEXED "
                f"WHERE {where} ORDER BY seq"
            )
            reader = _row_reader(self._conn, self.path, sql, params)
            return self._track(reader if reader is not None else self._conn.execute(sql, params))
        # every row of the batches the range touches is read and checked (their digests
        # need all of them); those outside the range are not handed out
        batches = self._batches_over(first, last)
        scan_first, scan_last = (batches[0][1], batches[-1][2]) if batches else (first, last)
        sql = (
            f"SELECT {_TYPED_COLUMNS}, CAST(payload AS BLOB), crc, "
            f"(seq >= ? AND seq <= ? AND {match}) FROM events "
            "NOT INDEXED WHERE seq >= ? AND seq <= ? ORDER BY seq"
        )
        params = [first, last, *params, scan_first, scan_last]
        proved = self._proved if scan_first <= self._proven + 1 else None
        judge = _RowJudge(self.path, scan_last, proved, batches)
        ends = [b[2] for b in batches]
        reader = _row_reader(
            self._conn, self.path, sql, params, judge, scan_first, scan_last, with_payload, ends
        )
        if reader is None:
            reader = _checked_rows_py(self._conn, sql, params, judge, scan_first, with_payload)
        return self._track(reader)

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

    def _proved(self, last: int) -> None:
        self._proven = max(self._proven, last)

    def payloads(self, start: int = 1, stop: int | None = None) -> Iterator[bytes]:
        """The stored canonical bytes of the events ``start..stop`` (inclusive), in seq order:
        for byte-identical comparisons with :func:`~exchange.events.encode`."""
        where, params = _where(start, stop, {})
        cursor = self._track(
            self._conn.execute(
                f"SELECT CAST(payload AS BLOB) FROM events WHERE {where} ORDER BY seq", params
            )
        )
        for (payload,) in cursor:
            yield payload

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
        _corrupt(found, exc, "the batches table", None)
        batch_rows = []
    report.batches = len(batch_rows)
    ranges = _check_batches(batch_rows, found)
    report.last_chain = batch_rows[-1][4] if batch_rows else ZERO_CHAIN
    batch_last = batch_rows[-1][2] if batch_rows else 0
    # events, in seq order, against their batch ranges
    scan = _EventScan(ranges, found, salvage)
    scanned_from = len(found.items)
    claimed = max(batch_last, session_last or 0)
    scan_progress = None if progress is None else lambda done: progress(done, claimed)
    conn.text_factory = str  # SQLite's text decoded in C, not by a Python call per value
    try:
        try:
            scan.run(conn, scan_progress)
        except sqlite3.OperationalError as exc:
            if not str(exc).startswith("Could not decode"):
                raise
            # a text value that is not UTF-8 (an edited column): scan again, decoding text
            # leniently, so that it is reported as the edit it is
            del found.items[scanned_from:]
            conn.text_factory = _lenient_text
            scan = _EventScan(ranges, found, salvage)
            scan.run(conn, scan_progress)
    except sqlite3.DatabaseError as exc:
        _corrupt(found, exc, "the events", scan.last_read)
        broken = True
    else:
        broken = False
    finally:
        conn.text_factory = _lenient_text
    report.events = scan.count
    max_seq = scan.last_read
    if progress is not None:
        progress(scan.count, max(claimed, scan.count))
    # batch digests against the events (only those read completely)
    for k, (first, last, batch, digest) in enumerate(ranges):
        if broken and last > max_seq:
            break
        hasher = scan.hashers.get(k)
        computed = (hasher or hashlib.sha256()).hexdigest()
        if computed != digest:
            found.add(
                f"batch {batch} (seqs {first}..{last}): digest mismatch: its events differ from "
                "what was committed",
                scan.first_problem_in.get(k, first),
                batch,
            )
    if not broken:
        # the end of the log
        if claimed > max_seq:
            what = (
                f"seq {max_seq + 1}" if claimed == max_seq + 1 else f"seqs {max_seq + 1}..{claimed}"
            )
            found.add(
                f"log truncated: {what} missing at the end (sessions.last_seq = "
                f"{session_last}, the last batch ends at seq {batch_last}, the last event "
                f"present is seq {max_seq})",
                max_seq + 1,
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
    # pages the queries above did not touch (indexes, free pages), and every index entry
    # against its row: integrity_check (quick_check would not compare an index's keys with
    # the table, so an edited key would pass, and filtered reads would skip the event)
    _check_integrity(conn, found, None if broken else max_seq)


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
            found.add(f"the events table reads intact up to seq {intact}", file=True)


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


def _check_session(conn: sqlite3.Connection, scan: _EventScan, found: _Problems) -> None:
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


class _EventScan:
    """One pass over the events in seq order: per-event checks and per-batch digests."""

    def __init__(
        self, ranges: list[tuple[int, int, int, str]], found: _Problems, salvage: bool
    ) -> None:
        self.salvage = salvage  # reading a truncated file: a garbage row means "end of data"
        self.ranges = ranges
        self.firsts = [r[0] for r in ranges]
        self.found = found
        self.hashers: dict[int, Any] = {}
        self.first_problem_in: dict[int, int] = {}
        self.count = 0
        self.last_read = 0
        self.first_event: Event | None = None  # seq 1, when it decodes
        self.last_event: Event | None = None  # the last event read, when it decodes

    def run(self, conn: sqlite3.Connection, progress: Callable[[int], None] | None = None) -> None:
        """Scan the events; ``progress(n)`` is called with the count read so far every
        :data:`PROGRESS_EVERY` events."""
        found, ranges, firsts, fields = self.found, self.ranges, self.firsts, TYPED_FIELDS
        items = found.items
        hashers = self.hashers
        crc32 = zlib.crc32
        count = self.count
        last_read = self.last_read
        expected = 1
        cursor = conn.execute(
            f"SELECT {_TYPED_COLUMNS}, CAST(payload AS BLOB), typeof(payload), crc, batch "
            "FROM events ORDER BY seq"
        )
        try:
            for row in cursor:
                seq = row[0]
                bad_before = len(items)
                payload, payload_type, crc, batch_col = row[_N_TYPED:]
                if type(seq) is not int or seq < expected or payload is None:
                    if self.salvage:
                        raise sqlite3.DatabaseError(f"unreadable event row after seq {last_read}")
                    found.add(f"event row with seq {seq!r}: not a valid seq (they count from 1)")
                    continue
                count += 1
                if progress is not None and not count % PROGRESS_EVERY:
                    progress(count)
                if seq != expected:
                    missing = (
                        f"seq {expected}" if seq == expected + 1 else f"seqs {expected}..{seq - 1}"
                    )
                    found.add(f"{missing} missing (event rows deleted)", expected)
                expected = seq + 1
                k = bisect.bisect_right(firsts, seq) - 1
                covering = k if k >= 0 and ranges[k][1] >= seq else None
                if covering is None:
                    found.add(
                        f"seq {seq}: belongs to no batch (its batch column says {batch_col})", seq
                    )
                elif ranges[covering][2] != batch_col:
                    first, last, batch = ranges[covering][:3]
                    found.add(
                        f"seq {seq}: batch column says {batch_col}, but batch {batch} "
                        f"covers seqs {first}..{last}",
                        seq,
                    )
                if payload_type != "text":
                    found.add(f"seq {seq}: payload is {payload_type}, not text", seq)
                if covering is not None:
                    hasher = hashers.get(covering)
                    if hasher is None:
                        hasher = hashers[covering] = hashlib.sha256()
                    hasher.update(payload)
                    hasher.update(b"\n")
                computed = crc32(payload)
                if computed != crc:
                    found.add(
                        f"seq {seq}: payload checksum mismatch (stored crc {crc}, payload's "
                        f"{computed}): the payload was edited",
                        seq,
                    )
                try:
                    event = decode(payload)
                    canonical = encode(event) == payload
                except (ValueError, TypeError) as exc:
                    found.add(f"seq {seq}: payload is not a valid event ({exc})", seq)
                else:
                    if seq == 1:
                        self.first_event = event
                    self.last_event = event
                    if event.seq != seq:
                        found.add(
                            f"seq {seq}: the payload is event seq {event.seq} (events reordered "
                            "or moved)",
                            seq,
                        )
                    elif not canonical:
                        found.add(f"seq {seq}: payload is not in canonical form (edited)", seq)
                    # the columns agree with the payload if equal and of the same types (1 == 1.0
                    # == True): two C-level comparisons; field by field only to say which differ
                    typed, told = row[1:_N_TYPED], event[1:_N_TYPED]
                    if typed != told or [*map(type, typed)] != [*map(type, told)]:
                        for i in range(1, _N_TYPED):
                            if row[i] != event[i] or type(row[i]) is not type(event[i]):
                                found.add(
                                    f"seq {seq}: column {fields[i]}={row[i]!r} disagrees with the "
                                    f"payload's {fields[i]}={event[i]!r} (typed column edited)",
                                    seq,
                                )
                if len(items) > bad_before and covering is not None:
                    batch_no = ranges[covering][2]
                    for j in range(bad_before, len(items)):
                        rank, key, order, s, b, text = items[j]
                        items[j] = (rank, key, order, s, batch_no if b is None else b, text)
                    self.first_problem_in.setdefault(covering, seq)
                if seq > last_read:
                    last_read = seq
        finally:
            # also when a read error ends the scan: the caller reports how far it got
            self.count, self.last_read = count, last_read
