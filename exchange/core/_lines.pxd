# The canonical lines' C interface (exchange/core/_lines.pyx): the buffer and its writers, and
# the LineBatch sink, for the compiled parts that write events without an Event tuple
# (exchange/kernel/_kernel.pyx) or encode batches (exchange/store/_writer.pyx).

from cpython.object cimport PyObject

from exchange.core._compact cimport Tokens


cdef struct Buf:
    char* data       # the bytes written so far (malloc'd; grown by doubling)
    Py_ssize_t len   # bytes used
    Py_ssize_t cap   # bytes allocated


# each appends to ``b`` (MemoryError if it cannot grow)
cdef int put_bytes(Buf* b, const char* s, Py_ssize_t n) except -1
cdef int put_u64(Buf* b, unsigned long long v, bint negative) except -1
cdef int put_text(Buf* b, const char* s, Py_ssize_t n) except -1
# 0 (_DONE) written; 1 (_ORJSON) not the C encoder's: the caller rewinds b.len and asks orjson
cdef int put_value(Buf* b, PyObject* value, int depth) except -1
cdef int put_event(Buf* b, object event, object dumps, object options, bint c) except -1


cdef struct _Table:
    # tokens (a JSON string with its quotes, as a line holds it) -> their index, open addressing
    Py_ssize_t mask         # slots - 1 (a power of two)
    Py_ssize_t* slots       # per slot: a token's index, or -1
    const char** s          # per token: its bytes (held by the Tap's lists)
    Py_ssize_t* n           # per token: its length
    Py_ssize_t count


cdef struct _Str:
    # a cached value of a short JSON token (a string with its quotes, or an event's data)
    Py_ssize_t n            # the token's length (0: empty slot)
    char s[112]
    PyObject* obj           # a strong reference


cdef class Tap:
    # a reader of a LineBatch's lines: the bot runner's market-data tap (clients/runner.py)
    cdef object on_wanted      # on_wanted(t): at a wanted line of a t not yet announced
    cdef object on_take        # on_take(): before take hands over a line not yet scanned
    cdef bint has_at           # whether a wanted line of t ``at`` was announced (and not reset)
    cdef long long at
    cdef long long next_seq    # the seq of the first line not yet scanned
    cdef list held             # the tokens' bytes (the tables point into them)
    cdef _Table kinds          # the kinds it knows (wanted ones first)
    cdef Py_ssize_t n_wanted   # kinds[0:n_wanted] are wanted
    cdef char* quiet           # per kind: 1 if an account-less line of it changes no account
    cdef _Table accounts       # the watched accounts
    cdef char* stale           # per account: named by a line since the last scan's report
    cdef char* flagged         # per kind: 1 if scan reports where its events are
    cdef object wanted_set     # the wanted kinds (str), for a line decoded by ``decode``
    cdef object event          # the type events are built as (Event)
    cdef object decode         # decode(line bytes) -> an Event: the lines the builder leaves
    cdef _Str* strs            # the str cache (_STRS slots, direct-mapped by hash)
    cdef _Str* datas           # the data cache (_DATAS slots): shared, read-only values
    cdef int _cached(self, _Str* cache, Py_ssize_t slots, const char* s, Py_ssize_t n,
                     bint text, PyObject** out) except -1
    cdef short* col_kind       # the last scan's columns (malloc'd, grown by doubling)
    cdef int* col_account
    cdef int* col_counterparty
    cdef long long* col_t
    cdef Py_ssize_t col_cap
    cdef Py_ssize_t n_scanned  # lines in the last scan
    cdef long long scan_first  # the seq of the last scan's first line

    cdef int line_ended(self, const char* line, Py_ssize_t n, long long t) except -1
    cdef int _str(self, const char* s, Py_ssize_t n, PyObject** out) except -1
    cdef int _scalar(self, const char* s, Py_ssize_t n, PyObject** out) except -1
    cdef object _event(self, const char* line, Py_ssize_t n, const char** starts,
                       Py_ssize_t* sizes)


cdef class LineBatch:
    cdef Buf buf
    cdef Py_ssize_t* ends      # per line: the offset just past its newline
    cdef long long* ts         # per line: its event's t (ns)
    cdef Py_ssize_t count      # lines held
    cdef Py_ssize_t lines_cap  # lines allocated in ends and ts
    cdef long long first       # the seq of the first line held (the next one when empty)
    cdef object dumps
    cdef object options
    cdef bytes codes
    cdef object names
    cdef Py_ssize_t n_fields
    cdef object bad_check      # (seq, reason or None, the event's seq) of the first refused
    cdef object bad_encode     # (seq, orjson's refusal) of the first orjson refused
    cdef Py_ssize_t appended   # lines written by append (the others: by the kernel)
    cdef Tap tap               # the reader told of wanted lines and asked before a take, or None
    # the stored form (store_compact): ``buf`` holds the line being written only, ``tok`` the
    # lines held as the token streams of their batches (``ends`` offsets into it)
    cdef bint stored
    cdef Tokens tok
    cdef Py_ssize_t per_batch  # events a batch (batches start at seqs 1 + k * per_batch)
    cdef long long opened      # the seq of the last batch's first line (its format byte written)
    cdef long long next_open   # the seq of the next batch's first line
    cdef Py_ssize_t* raws      # per line (stored form): its JSON line's bytes with its newline,
                               # or a lower bound of them (see _raw_size)

    cdef int end_line(self, long long t) except -1
    # the stored form, a line written as tokens (the compiled kernel): open_batch before it
    # (at its seq); after its end code the kernel notes it in ends, ts and raws (a lower
    # bound of its JSON line's bytes, newline included), growing them with _grow_lines
    cdef int open_batch(self, long long seq) except -1
    cdef Py_ssize_t _taking(self, Py_ssize_t n) except -1
    cdef tuple _remove(self, Py_ssize_t n)
    cdef int _to_lines(self) except -1
    cdef int _stored_line(self) except -1
    cdef int _grow_lines(self) except -1
    cdef Py_ssize_t _raw_size(self, Py_ssize_t n) except -2
    cdef bytes _stored_blob(self, Py_ssize_t n)


cdef inline bint quiet_at(LineBatch lines, long long t) noexcept:
    """Whether ending a line of ``t`` (ns) runs no Python: no tap reads ``lines``, or its tap
    has announced ``t`` already (``Tap.line_ended`` returns at once). A writer that must
    bring its engine up to date before Python may run needs it only when this is False."""
    return lines.tap is None or (lines.tap.has_at and lines.tap.at == t)
