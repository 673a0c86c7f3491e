# cython: language_level=3, boundscheck=False, wraparound=False
"""The event store's typed rows, read in C: what a replay folds.

Python's ``sqlite3`` cursor makes a new ``str`` for every text value of every row; a replay
reads five text columns of a million rows (kind, instrument, account, side, counterparty),
which take a handful of distinct values. :class:`RowReader` steps a prepared statement on
**the store's own connection** (its handle read and checked by ``exchange/_sqlite.pxd``,
as for :mod:`exchange._writer`) and hands out, for each column, the same ``str`` object for the same
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
from libc.string cimport memcmp

from exchange._sqlite cimport (
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

    def __cinit__(self, connection, str path, str sql, params=()):
        self.db = NULL
        self.stmt = NULL
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
            raise StopIteration
        if gpuex_connection_db(self.connection) == NULL:
            # the store was closed under the rows, as a cursor's would be
            self.close()
            raise ProgrammingError("Cannot operate on a closed database.")
        cdef int rc = sqlite3_step(self.stmt)
        if rc == SQLITE_DONE:
            self.close()
            raise StopIteration
        if rc != SQLITE_ROW:
            message = sqlite3_errmsg(self.db).decode("utf-8", "replace")
            self.close()
            raise DatabaseError(message)
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
