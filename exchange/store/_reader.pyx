# cython: language_level=3, boundscheck=False, wraparound=False
"""The event store's typed rows, read in C: what a replay folds.

Schema 3 (one row per batch): :func:`typed_rows` (at the end) parses the typed fields of each
event of a batch blob; :class:`RowReader` reads the projection's rows (filtered reads of a log
that has it, unchecked: the store proves the projection against the blobs first). The
checked mode of :class:`RowReader` described below (crc, columns against the payload, batch
digests) served schema 2's per-event rows; the store no longer uses it (left for its removal).

Python's ``sqlite3`` cursor makes a new ``str`` for every text value of every row; a replay
reads five text columns of a million rows (kind, instrument, account, side, counterparty),
which take a handful of distinct values. :class:`RowReader` steps a prepared statement on
**the store's own connection** (its handle read and checked by ``exchange/store/_sqlite.pxd``,
as for :mod:`exchange.store._writer`) and hands out, for each column, the same ``str`` object for the same
bytes while it has fewer than :data:`CACHED` distinct values: equal values, fewer objects.
The rows are the tuples the cursor would give (tests compare them on real logs).

With ``check`` (a *checked* read) each row must also prove itself before it is handed out:
its seq is the next one expected, the crc of its payload is the stored one, and its typed
columns are the start of its payload (``[seq,t,"kind",...,counter_order_id,`` formatted in C
from the columns and compared byte for byte, which is what decoding the payload and comparing
would say, at a fraction of the cost). A row that fails, or that the C comparison cannot judge
(text with escapes or non-ASCII), goes to ``check(raw_row, expected_seq)``, which raises the
damage it finds or returns to accept the row; with ``batch_ends`` (the last seq of each
batch the rows span, in order), the payloads of each batch are handed to ``check.batch(k,
data)`` once its last row is read, which compares their digest with the committed one; at
the end ``check(None, expected_seq)`` is
called (it raises if rows are missing before ``last``), and ``check.corrupt(message,
expected_seq)`` if SQLite fails to read a row.
"""

from sqlite3 import DatabaseError, ProgrammingError

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_FromLongLong
from cpython.float cimport PyFloat_FromDouble
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_DecodeUTF8
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.string cimport memchr, memcmp, memcpy

from exchange.store._sqlite cimport (
    SQLITE_DONE,
    SQLITE_FLOAT,
    SQLITE_INTEGER,
    SQLITE_NULL,
    SQLITE_OK,
    SQLITE_BLOB,
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

# CRC-32 (IEEE 802.3, reflected; the same as zlib.crc32), for checked reads: slice-by-8,
# eight table lookups per 8 bytes (about three times the speed of a byte at a time, and no
# link to zlib needed)
cdef unsigned int CRC_TABLE[8][256]


cdef void _crc_tables():
    cdef unsigned int c
    cdef int n, k
    for n in range(256):
        c = n
        for k in range(8):
            c = (<unsigned int>0xEDB88320 ^ (c >> 1)) if (c & 1) else (c >> 1)
        CRC_TABLE[0][n] = c
    for n in range(256):
        c = CRC_TABLE[0][n]
        for k in range(1, 8):
            c = CRC_TABLE[0][c & 0xFF] ^ (c >> 8)
            CRC_TABLE[k][n] = c


_crc_tables()


cdef inline unsigned int crc32(const unsigned char* p, Py_ssize_t size) noexcept nogil:
    cdef unsigned int c = <unsigned int>0xFFFFFFFF
    cdef unsigned int one, two
    while size >= 8:
        one = c ^ (p[0] | (<unsigned int>p[1] << 8) | (<unsigned int>p[2] << 16)
                   | (<unsigned int>p[3] << 24))
        two = p[4] | (<unsigned int>p[5] << 8) | (<unsigned int>p[6] << 16) | (<unsigned int>p[7] << 24)
        c = (CRC_TABLE[7][one & 0xFF] ^ CRC_TABLE[6][(one >> 8) & 0xFF]
             ^ CRC_TABLE[5][(one >> 16) & 0xFF] ^ CRC_TABLE[4][one >> 24]
             ^ CRC_TABLE[3][two & 0xFF] ^ CRC_TABLE[2][(two >> 8) & 0xFF]
             ^ CRC_TABLE[1][(two >> 16) & 0xFF] ^ CRC_TABLE[0][two >> 24])
        p += 8
        size -= 8
    while size > 0:
        c = CRC_TABLE[0][(c ^ p[0]) & 0xFF] ^ (c >> 8)
        p += 1
        size -= 1
    return c ^ <unsigned int>0xFFFFFFFF


cdef inline Py_ssize_t decimal(long long value, char* out) noexcept nogil:
    """``value`` in decimal into ``out`` (at least 21 bytes); the number of bytes. What
    orjson writes for an int, without snprintf's cost."""
    cdef char digits[24]
    cdef Py_ssize_t n = 0, k = 0
    cdef unsigned long long v
    if value < 0:
        out[0] = b'-'
        k = 1
        v = <unsigned long long>(-(value + 1)) + 1
    else:
        v = <unsigned long long>value
    while True:
        digits[n] = <char>(48 + v % 10)
        n += 1
        v //= 10
        if v == 0:
            break
    while n > 0:
        n -= 1
        out[k] = digits[n]
        k += 1
    return k


def payload_crc(bytes data):
    """The CRC-32 the checked read computes (equal to ``zlib.crc32``; tests compare them)."""
    return crc32(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))


cdef class RowReader:
    """Iterates the rows of ``sql`` (with ``params``: ints and strs) on ``connection``, a
    ``sqlite3.Connection`` to the file ``path`` (absolute), as tuples; kept alive, with the
    connection, until exhausted or closed.

    A checked read (``check`` given; see the module docstring): the statement's columns are
    the typed fields, then ``CAST(payload AS BLOB)``, ``crc`` and a match flag (0: the row is
    checked but not handed out, as when a filter does not select it); the rows handed out are
    the typed fields, plus the payload (bytes) with ``with_payload``. ``first`` is the seq the
    first row must have, ``last`` (-1: none) the seq the rows must reach.

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
    cdef object check  # checked reads: the judge of a row the C checks do not pass
    cdef int ntyped    # checked reads: the typed columns (the rest: payload, crc, match)
    cdef long long expect  # checked reads: the seq the next row must have
    cdef long long last
    cdef bint with_payload
    cdef list batch_ends  # checked reads: the last seq of each batch the rows cover
    cdef Py_ssize_t batch_k
    cdef long long batch_end  # -1: no batch digests to check
    cdef char* buf  # the current batch's payloads, each followed by a newline
    cdef Py_ssize_t buf_len, buf_cap
    cdef object __weakref__  # the store closes the readers it handed out
    cdef bint finished  # read to the end (else a closed reader was closed under its rows)

    def __cinit__(self, connection, str path, str sql, params=(), check=None,
                  long long first=1, long long last=-1, bint with_payload=False,
                  batch_ends=None):
        self.db = NULL
        self.stmt = NULL
        self.finished = False
        self.buf = NULL
        self.buf_len = 0
        self.buf_cap = 0
        self.batch_ends = list(batch_ends) if batch_ends else []
        self.batch_k = 0
        self.batch_end = self.batch_ends[0] if self.batch_ends else -1
        self.check = check
        self.expect = first
        self.last = last
        self.with_payload = with_payload
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
        self.ntyped = self.ncols - 3
        if check is not None and self.ntyped < 1:
            self.close()
            raise ValueError("a checked read needs the typed columns, payload, crc and match")
        self.keys = [[] for _ in range(self.ncols)]
        self.values = [[] for _ in range(self.ncols)]

    def __dealloc__(self):
        if self.stmt != NULL:
            sqlite3_finalize(self.stmt)
            self.stmt = NULL
        if self.buf != NULL:
            PyMem_Free(self.buf)
            self.buf = NULL

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
        if self.check is not None:
            return self._next_checked()
        cdef int rc = sqlite3_step(self.stmt)
        if rc == SQLITE_DONE:
            self.close()
            self.finished = True
            raise StopIteration
        if rc != SQLITE_ROW:
            message = sqlite3_errmsg(self.db).decode("utf-8", "replace")
            self.close()
            raise DatabaseError(message)
        return self._row(self.ncols, False)

    cdef object _next_checked(self):
        cdef int rc
        cdef int verdict
        cdef int n = self.ntyped
        while True:
            rc = sqlite3_step(self.stmt)
            if rc == SQLITE_DONE:
                self.close()
                self.check(None, self.expect)  # raises if rows are missing at the end
                self.finished = True
                raise StopIteration
            if rc != SQLITE_ROW:
                message = sqlite3_errmsg(self.db).decode("utf-8", "replace")
                self.close()
                self.check.corrupt(message, self.expect)  # raises, naming the seq
                raise DatabaseError(message)
            verdict = self._verdict()
            if verdict != 1:
                try:
                    self.check(self._raw(), self.expect)  # raises, or accepts the row
                except BaseException:
                    self.close()
                    raise
            self.expect = sqlite3_column_int64(self.stmt, 0) + 1
            if self.batch_end >= 0:
                self._hash_row()
            if self.expect - 1 == self.last:
                # the last row proved itself: say so now, not only at the end of the rows
                # (a caller may stop at the row it wanted, the last one)
                self.check(None, self.expect)
            if sqlite3_column_int64(self.stmt, n + 2) == 0:
                continue  # checked, not selected
            if self.with_payload:
                return self._row(n + 1, False)
            return self._row(n, False)

    cdef int _hash_row(self) except -1:
        """Add the row's payload to its batch's bytes; at the batch's last seq hand them to
        ``check.batch(k, data)``, which compares their digest with the stored one."""
        cdef int n = self.ntyped
        cdef const char* payload = <const char*>sqlite3_column_blob(self.stmt, n)
        cdef Py_ssize_t size = sqlite3_column_bytes(self.stmt, n)
        cdef Py_ssize_t need = self.buf_len + size + 1
        cdef char* grown
        if need > self.buf_cap:
            grown = <char*>PyMem_Realloc(self.buf, need * 2)
            if grown == NULL:
                raise MemoryError()
            self.buf = grown
            self.buf_cap = need * 2
        memcpy(self.buf + self.buf_len, payload, size)
        self.buf[self.buf_len + size] = b'\n'
        self.buf_len = need
        if self.expect - 1 == self.batch_end:
            data = PyBytes_FromStringAndSize(self.buf, self.buf_len)
            self.buf_len = 0
            try:
                self.check.batch(self.batch_k, data)  # raises on a digest mismatch
            except BaseException:
                self.close()
                raise
            self.batch_k += 1
            if self.batch_k < len(self.batch_ends):
                self.batch_end = self.batch_ends[self.batch_k]
            else:
                self.batch_end = -1
        return 0

    cdef int _verdict(self):
        """1: the row is sound; 0: it is not; -1: the C checks cannot tell (escapes)."""
        cdef sqlite3_stmt* stmt = self.stmt
        cdef int n = self.ntyped
        if sqlite3_column_type(stmt, 0) != SQLITE_INTEGER:
            return 0
        if sqlite3_column_int64(stmt, 0) != self.expect:
            return 0
        if sqlite3_column_type(stmt, n + 1) != SQLITE_INTEGER:
            return 0
        if sqlite3_column_type(stmt, n + 2) != SQLITE_INTEGER:
            return 0
        cdef int payload_type = sqlite3_column_type(stmt, n)
        if payload_type != SQLITE_BLOB and payload_type != SQLITE_TEXT:
            return 0
        cdef const unsigned char* payload = <const unsigned char*>sqlite3_column_blob(stmt, n)
        cdef Py_ssize_t size = sqlite3_column_bytes(stmt, n)
        if payload == NULL:
            return 0
        if <long long>crc32(payload, size) != sqlite3_column_int64(stmt, n + 1):
            return 0
        return self._prefix(payload, size)

    cdef int _prefix(self, const unsigned char* p, Py_ssize_t size):
        """Are the typed columns, as canonical JSON, the start of the payload ``p``?"""
        cdef sqlite3_stmt* stmt = self.stmt
        cdef char buf[32]
        cdef Py_ssize_t pos = 1
        cdef Py_ssize_t length, j
        cdef const unsigned char* text
        cdef unsigned char c
        cdef int i, kind
        if size < 1 or p[0] != b'[':
            return 0
        for i in range(self.ntyped):
            if i:
                if pos >= size or p[pos] != b',':
                    return 0
                pos += 1
            kind = sqlite3_column_type(stmt, i)
            if kind == SQLITE_INTEGER:
                length = decimal(sqlite3_column_int64(stmt, i), buf)
                if pos + length > size or memcmp(p + pos, buf, length) != 0:
                    return 0
                pos += length
            elif kind == SQLITE_NULL:
                if pos + 4 > size or memcmp(p + pos, b"null", 4) != 0:
                    return 0
                pos += 4
            elif kind == SQLITE_TEXT:
                text = sqlite3_column_text(stmt, i)
                length = sqlite3_column_bytes(stmt, i)
                for j in range(length):
                    c = text[j]
                    if c < 0x20 or c >= 0x80 or c == b'"' or c == b'\\':
                        return -1  # escaped or non-ASCII in JSON: the Python check decides
                if pos + length + 2 > size or p[pos] != b'"':
                    return 0
                if memcmp(p + pos + 1, text, length) != 0 or p[pos + 1 + length] != b'"':
                    return 0
                pos += length + 2
            else:
                return 0
        if pos >= size or p[pos] != b',':
            return 0
        return 1

    cdef tuple _raw(self):
        """The whole row for the Python check: text as bytes (it may not be UTF-8)."""
        return self._row(self.ncols, True)

    cdef tuple _row(self, int ncols, bint text_as_bytes):
        """The first ``ncols`` columns as a tuple: text as str (see ``_text``), or as bytes
        with ``text_as_bytes`` (``_raw``'s rows). The flag is a required argument because a
        cdef method's optional ones are passed in a struct on every call, and it is tested
        on text columns only: the per-row path pays nothing measurable for sharing the loop."""
        cdef tuple row = PyTuple_New(ncols)
        cdef int i, kind
        cdef object value
        for i in range(ncols):
            kind = sqlite3_column_type(self.stmt, i)
            if kind == SQLITE_INTEGER:
                value = PyLong_FromLongLong(sqlite3_column_int64(self.stmt, i))
            elif kind == SQLITE_NULL:
                value = None
            elif kind == SQLITE_TEXT and not text_as_bytes:
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


# ---------------------------------------------------------------------- schema 3: the blobs
cdef inline bint _is_digit(char c):
    return b"0" <= c <= b"9"


def typed_rows(bytes blob, long long first, Py_ssize_t count, Py_ssize_t n_typed, fallback):
    """The typed fields of each event of a batch blob (schema 3: one event a line, each
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
