# cython: language_level=3, boundscheck=False, wraparound=False
"""The event store's typed rows, read in C: what a replay folds.

One row per batch (schemas 3 to 5): :func:`typed_rows` (at the end) parses the typed fields of
each event of a batch blob -- the JSON lines, which the store expands from the row's stored
form (schemas 4 and 5, ``exchange.store.compact.expand``) before it hands them here;
:class:`RowReader` reads the projection's rows (filtered reads of a log that has it,
unchecked: the store proves the projection against the blobs first). A replay's
own reader is the compiled fold's (``exchange.store._fold.Kernel.parse``: the same lines, the
same values, into typed records instead of tuples).

Python's ``sqlite3`` cursor makes a new ``str`` for every text value of every row; a replay
reads five text columns of a million rows (kind, instrument, account, side, counterparty),
which take a handful of distinct values. :class:`RowReader` steps a prepared statement on
**the store's own connection** (its handle read and checked by ``exchange/store/_sqlite.pxd``,
as for :mod:`exchange.store._writer`) and hands out, for each column, the same ``str`` object for the same
bytes while it has fewer than :data:`CACHED` distinct values: equal values, fewer objects.
The rows are the tuples the cursor would give (tests compare them on real logs).
"""

from sqlite3 import DatabaseError, ProgrammingError

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_FromLongLong
from cpython.float cimport PyFloat_FromDouble
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memchr, memcmp

from exchange.store._sqlite cimport (
    SQLITE_DONE,
    SQLITE_FLOAT,
    SQLITE_INTEGER,
    SQLITE_NULL,
    SQLITE_OK,
    SQLITE_ROW,
    SQLITE_TEXT,
    SQLITE_TRANSIENT,
    gpuex_connection_db,
    sqlite3,
    sqlite3_bind_int64,
    sqlite3_bind_text,
    sqlite3_column_blob,
    sqlite3_column_bytes,
    sqlite3_column_count,
    sqlite3_column_double,
    sqlite3_column_int64,
    sqlite3_column_text,
    sqlite3_column_type,
    sqlite3_errmsg,
    sqlite3_finalize,
    sqlite3_prepare_v2,
    sqlite3_step,
    sqlite3_stmt,
    store_handle,
)

#: Distinct text values remembered per column (the rest are made afresh each time).
CACHED = 32

cdef class RowReader:
    """Iterates the rows of ``sql`` (with ``params``: ints and strs) on ``connection``, a
    ``sqlite3.Connection`` to the file ``path`` (absolute), as tuples; kept alive, with the
    connection, until exhausted or closed.

    Raises:
        ValueError: the handle cannot be used, the statement cannot be prepared or a parameter
            is neither int nor str (the store then reads through Python's sqlite3).
        sqlite3.DatabaseError: SQLite fails while stepping (a damaged file).
        sqlite3.ProgrammingError: the connection was closed before the rows were read.
    """

    cdef sqlite3* db
    cdef sqlite3_stmt* stmt
    cdef object connection
    cdef int ncols
    cdef list keys     # per column: the bytes of the remembered values
    cdef list values   # per column: the str made of them, in the same order
    cdef object __weakref__  # the store closes the readers it handed out
    cdef bint finished  # read to the end (else a closed reader was closed under its rows)

    def __cinit__(self, connection, str path, str sql, params=()):
        self.db = NULL
        self.stmt = NULL
        self.finished = False
        cdef sqlite3* db = store_handle(connection, path)
        self.connection = connection
        cdef bytes text = sql.encode()
        if sqlite3_prepare_v2(db, text, -1, &self.stmt, NULL) != SQLITE_OK:
            raise ValueError(sqlite3_errmsg(db).decode("utf-8", "replace"))
        self.db = db
        cdef int i = 1
        cdef bytes encoded
        for value in params:
            if type(value) is int:
                sqlite3_bind_int64(self.stmt, i, value)
            elif type(value) is str:
                encoded = (<str>value).encode()
                sqlite3_bind_text(self.stmt, i, encoded, len(encoded), SQLITE_TRANSIENT)
            else:
                self.close()
                raise ValueError(f"cannot bind {type(value).__name__}")
            i += 1
        self.ncols = sqlite3_column_count(self.stmt)
        self.keys = [[] for _ in range(self.ncols)]
        self.values = [[] for _ in range(self.ncols)]

    def __dealloc__(self):
        if self.stmt != NULL:
            sqlite3_finalize(self.stmt)
            self.stmt = NULL

    def close(self):
        """Finalise the statement (also done at the end of the rows)."""
        if self.stmt != NULL:
            sqlite3_finalize(self.stmt)
            self.stmt = NULL

    def __iter__(self):
        return self

    def __next__(self):
        if self.stmt == NULL:
            if self.finished:
                raise StopIteration
            # closed before the end (by its store, say): not an end of the rows
            raise ProgrammingError("Cannot operate on a closed database.")
        if gpuex_connection_db(self.connection) == NULL:
            # the store was closed under the rows, as a cursor's would be
            self.close()
            raise ProgrammingError("Cannot operate on a closed database.")
        cdef int rc = sqlite3_step(self.stmt)
        if rc == SQLITE_DONE:
            self.close()
            self.finished = True
            raise StopIteration
        if rc != SQLITE_ROW:
            message = sqlite3_errmsg(self.db).decode("utf-8", "replace")
            self.close()
            raise DatabaseError(message)
        return self._row()

    cdef tuple _row(self):
        """The row's columns as a tuple, text as str (see ``_text``)."""
        cdef tuple row = PyTuple_New(self.ncols)
        cdef int i, kind
        cdef object value
        for i in range(self.ncols):
            kind = sqlite3_column_type(self.stmt, i)
            if kind == SQLITE_INTEGER:
                value = PyLong_FromLongLong(sqlite3_column_int64(self.stmt, i))
            elif kind == SQLITE_NULL:
                value = None
            elif kind == SQLITE_TEXT:
                value = self._text(i)
            elif kind == SQLITE_FLOAT:
                value = PyFloat_FromDouble(sqlite3_column_double(self.stmt, i))
            else:
                value = PyBytes_FromStringAndSize(
                    <const char*>sqlite3_column_blob(self.stmt, i), sqlite3_column_bytes(self.stmt, i)
                )
            Py_INCREF(value)
            PyTuple_SET_ITEM(row, i, value)
        return row

    cdef object _text(self, int i):
        cdef const char* text = <const char*>sqlite3_column_text(self.stmt, i)
        cdef Py_ssize_t size = sqlite3_column_bytes(self.stmt, i)
        cdef list keys = <list>self.keys[i]
        cdef list values = <list>self.values[i]
        cdef Py_ssize_t k
        cdef bytes key
        for k in range(len(keys)):
            key = <bytes>keys[k]
            if PyBytes_GET_SIZE(key) == size and memcmp(PyBytes_AS_STRING(key), text, size) == 0:
                return values[k]
        value = PyUnicode_DecodeUTF8(text, size, NULL)  # strict, as the sqlite3 cursor
        if len(keys) < CACHED:
            keys.append(PyBytes_FromStringAndSize(text, size))
            values.append(value)
        return value


# ---------------------------------------------------------------------- the blobs
cdef inline bint _is_digit(char c):
    return b"0" <= c <= b"9"


def typed_rows(bytes blob, long long first, Py_ssize_t count, Py_ssize_t n_typed, fallback):
    """The typed fields of each event of a batch blob (expanded: one event a line, each
    ``encode(e)``: ``[seq,t,"kind",...,counter_order_id,data]``), as tuples of their first
    ``n_typed`` fields, parsed in C without decoding ``data``: what a replay folds. A line whose
    leading fields are not plain ints, ``null`` or strings without escapes goes to
    ``fallback(line)`` (which decodes it in Python, or raises).

    None when the blob is not ``count`` events (``count`` < 0: any number) of seqs ``first``,
    ``first + 1``... in order (the caller then says what is wrong)."""
    cdef const char* src = PyBytes_AS_STRING(blob)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(blob)
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t p, end, q, k = 0, i
    cdef long long value, expected
    cdef bint negative, fast
    cdef const char* nl
    cdef object row, item
    out = []
    if n and src[n - 1] != b"\n":
        return None
    while pos < n:
        nl = <const char*>memchr(src + pos, b"\n", n - pos)
        end = nl - src
        expected = first + k
        p = pos
        fast = src[p] == b"["
        p += 1
        row = PyTuple_New(n_typed)
        i = 0
        while fast and i < n_typed:
            if p >= end:
                fast = False
                break
            if src[p] == b"n":
                if end - p < 4 or memcmp(src + p, b"null", 4) != 0:
                    fast = False
                    break
                item = None
                p += 4
            elif src[p] == b'"':
                q = p + 1
                while q < end and src[q] != b'"' and src[q] != b"\\":
                    q += 1
                if q >= end or src[q] != b'"':
                    fast = False  # an escape: Python decodes it
                    break
                item = PyUnicode_DecodeUTF8(src + p + 1, q - p - 1, NULL)
                p = q + 1
            elif src[p] == b"-" or _is_digit(src[p]):
                negative = src[p] == b"-"
                if negative:
                    p += 1
                q = p
                value = 0
                while q < end and _is_digit(src[q]) and q - p < 18:
                    value = value * 10 + (src[q] - 48)
                    q += 1
                if q == p or (q < end and (_is_digit(src[q]) or src[q] in b".eE")):
                    fast = False  # beyond 18 digits, or not an int: Python decodes it
                    break
                item = PyLong_FromLongLong(-value if negative else value)
                p = q
            else:
                fast = False
                break
            if p >= end or src[p] != b",":
                fast = False
                break
            p += 1
            Py_INCREF(item)
            PyTuple_SET_ITEM(row, i, item)
            i += 1
        if not fast:
            row = fallback(blob[pos:end])
        if row[0] != expected:
            return None
        out.append(row)
        k += 1
        pos = end + 1
    if count >= 0 and k != count:
        return None
    return out
