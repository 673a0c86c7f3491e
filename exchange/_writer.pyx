# cython: language_level=3, boundscheck=False, wraparound=False
"""The event store's append loop in C: encode, checksum and bind each event straight to SQLite.

Python's ``sqlite3`` module binds every parameter through its adapter machinery (and binds
``None`` by raising and clearing an exception); building the flat parameter list alone cost
about a microsecond an event. Here each event's typed fields are bound with
``sqlite3_bind_int64`` / ``sqlite3_bind_text`` / ``sqlite3_bind_null`` on one prepared
statement, on **the same SQLite connection** the store's Python ``sqlite3.Connection`` holds —
so the rows join the store's own transaction (batch row, ``sessions.last_seq``, snapshot) and
commit or roll back with it. The connection handle is read from the ``sqlite3.Connection``
object (CPython keeps it as the first field); :class:`EventWriter` checks it by asking SQLite
for the database's file name, and the store falls back to the Python path when it cannot be
used. Payloads are ``exchange.events.encode``'s canonical bytes, made by calling orjson with the
options ``exchange.events`` defines (``dumps(tuple(event), None, ENCODE_OPTIONS)``, what
``encode`` does) without a Python call per event; tests hold the rows of this path and of the
store's Python path (which calls ``encode``) equal.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.sequence cimport PySequence_Tuple
from cpython.unicode cimport PyUnicode_AsUTF8AndSize

from exchange._sqlite cimport (
    SQLITE_DONE,
    SQLITE_OK,
    sqlite3,
    sqlite3_bind_int64,
    sqlite3_bind_null,
    sqlite3_bind_text,
    sqlite3_errmsg,
    sqlite3_finalize,
    sqlite3_prepare_v2,
    sqlite3_reset,
    sqlite3_step,
    sqlite3_stmt,
    store_handle,
)


cdef class EventWriter:
    """Appends events to the ``events`` table through ``connection``'s own SQLite handle.

    Args:
        connection: the store's ``sqlite3.Connection`` (kept alive by the writer).
        path: the database file (absolute); the handle must name the same file.
        sql: ``INSERT INTO events (<typed fields>, payload, crc, batch) VALUES (?, ...)``.
        n_typed: how many typed fields lead each event (the rest is ``data``).
        dumps: ``orjson.dumps``.
        options: ``exchange.events.ENCODE_OPTIONS``.
        crc32: ``zlib.crc32``.

    Raises:
        ValueError: the handle cannot be used (the store then uses the Python path).
    """

    cdef sqlite3* db
    cdef sqlite3_stmt* stmt
    cdef sqlite3_stmt* many
    cdef int rows_per_many
    cdef object connection
    cdef object dumps
    cdef object options
    cdef object crc32
    cdef int n_typed

    def __cinit__(self, connection, str path, str sql, int n_typed, dumps, options, crc32,
                  str many_sql="", int rows_per_many=0):
        self.db = NULL
        self.stmt = NULL
        self.many = NULL
        self.rows_per_many = 0
        cdef sqlite3* db = store_handle(connection, path)
        self.connection = connection
        self.dumps = dumps
        self.options = options
        self.crc32 = crc32
        self.n_typed = n_typed
        cdef bytes text = sql.encode()
        if sqlite3_prepare_v2(db, text, -1, &self.stmt, NULL) != SQLITE_OK:
            raise ValueError(sqlite3_errmsg(db).decode("utf-8", "replace"))
        if rows_per_many > 1:
            text = many_sql.encode()
            if sqlite3_prepare_v2(db, text, -1, &self.many, NULL) != SQLITE_OK:
                raise ValueError(sqlite3_errmsg(db).decode("utf-8", "replace"))
            self.rows_per_many = rows_per_many
        self.db = db

    def __dealloc__(self):
        self.close()

    def close(self):
        """Finalise the statements (before the connection closes)."""
        if self.stmt != NULL:
            sqlite3_finalize(self.stmt)
            self.stmt = NULL
        if self.many != NULL:
            sqlite3_finalize(self.many)
            self.many = NULL

    def first_bad(self, events, long long first, Py_ssize_t n_fields):
        """The position in ``events`` of the first one that is not a tuple of ``n_fields``
        items whose seq (item 0) is ``first`` + its position; -1 if every one is. The
        store's checks before a batch, in one C loop instead of a Python one."""
        cdef Py_ssize_t k = 0
        for event in events:
            if not isinstance(event, tuple) or len(<tuple>event) != n_fields:
                return k
            if <object>PyTuple_GET_ITEM(event, 0) != first + k:
                return k
            k += 1
        return -1

    cdef int _bind(self, sqlite3_stmt* stmt, int base, tuple event, const char* payload,
                   Py_ssize_t size, long long crc, long long batch) except -1:
        """Bind one event's row at parameter ``base + 1``...; raises ValueError/OverflowError.
        ``payload`` must stay valid until the statement has been stepped (SQLITE_STATIC).
        ``event`` has at least ``n_typed`` items (``write`` checked its length)."""
        cdef int i
        cdef int n_typed = self.n_typed
        cdef Py_ssize_t length
        cdef const char* utf8
        cdef PyObject* item
        for i in range(n_typed):
            # the tuple's own slot, borrowed: indexing through the sequence protocol (an
            # Event is a tuple subclass) was a fifth of the append loop
            item = PyTuple_GET_ITEM(event, i)
            value = <object>item
            if value is None:
                sqlite3_bind_null(stmt, base + i + 1)
            elif type(value) is str:
                utf8 = PyUnicode_AsUTF8AndSize(value, &length)
                sqlite3_bind_text(stmt, base + i + 1, utf8, <int>length, NULL)
            elif type(value) is int:
                sqlite3_bind_int64(stmt, base + i + 1, <long long>value)
            else:
                raise ValueError(
                    f"{type(value).__name__} in typed field {i} of event {event[0]!r}"
                )
        sqlite3_bind_text(stmt, base + n_typed + 1, payload, <int>size, NULL)
        sqlite3_bind_int64(stmt, base + n_typed + 2, crc)
        sqlite3_bind_int64(stmt, base + n_typed + 3, batch)
        return 0

    cdef int _step(self, sqlite3_stmt* stmt, first_seq) except -1:
        cdef int rc = sqlite3_step(stmt)
        sqlite3_reset(stmt)
        if rc != SQLITE_DONE:
            message = sqlite3_errmsg(self.db).decode("utf-8", "replace")
            raise ValueError(f"rows from seq {first_seq!r} not stored: {message}")
        return 0

    def write(self, events, long long batch):
        """Insert ``events`` (rows of ``batch``) inside the caller's open transaction, in
        statements of ``rows_per_many`` rows and single rows for the rest. Returns the
        payloads, each followed by a newline, as one ``bytearray`` (what the batch digest
        hashes). Raises ValueError on an event that is not a tuple and on a value SQLite or
        int64 cannot take, with the reason; the caller's transaction then rolls back.

        Each payload is copied into that one buffer as soon as it is encoded and its bytes
        object dropped: keeping a batch of orjson's bytes objects alive cost 2-10 us an event
        (each is allocated with spare capacity and shrunk, so holding thousands of them keeps
        the allocator growing the heap), against 0.15-0.4 us when the object is freed at once.
        """
        if self.stmt == NULL:
            raise ValueError("the writer is closed")
        events = list(events)
        cdef Py_ssize_t n = len(events)
        for event in events:
            if not isinstance(event, tuple) or len(<tuple>event) < self.n_typed:
                raise ValueError(
                    f"an event must be a tuple (exchange.events.Event) of at least "
                    f"{self.n_typed} fields, not {event!r:.200}"
                )
        cdef bytearray joined = bytearray()
        cdef Py_ssize_t* offsets = <Py_ssize_t*>PyMem_Malloc((n + 1) * sizeof(Py_ssize_t))
        cdef long long* crcs = <long long*>PyMem_Malloc((n + 1) * sizeof(long long))
        if offsets == NULL or crcs == NULL:
            PyMem_Free(offsets)
            PyMem_Free(crcs)
            raise MemoryError()
        cdef Py_ssize_t done = 0
        cdef Py_ssize_t k
        cdef int r
        cdef int per = self.rows_per_many
        cdef const char* base
        dumps = self.dumps
        options = self.options
        crc32 = self.crc32
        try:
            for k in range(n):
                payload = dumps(PySequence_Tuple(events[k]), None, options)
                offsets[k] = len(joined)
                crcs[k] = crc32(payload)
                joined += payload
                joined += b"\n"
            offsets[n] = len(joined)
            base = PyByteArray_AS_STRING(joined)  # stable: joined does not change below
            try:
                if per > 1:
                    while done + per <= n:
                        for r in range(per):
                            k = done + r
                            self._bind(self.many, r * (self.n_typed + 3), <tuple>events[k],
                                       base + offsets[k], offsets[k + 1] - offsets[k] - 1,
                                       crcs[k], batch)
                        self._step(self.many, events[done][0])
                        done += per
                while done < n:
                    self._bind(self.stmt, 0, <tuple>events[done], base + offsets[done],
                               offsets[done + 1] - offsets[done] - 1, crcs[done], batch)
                    self._step(self.stmt, events[done][0])
                    done += 1
            except OverflowError:
                raise ValueError("an integer does not fit in int64") from None
        finally:
            PyMem_Free(offsets)
            PyMem_Free(crcs)
        return joined
