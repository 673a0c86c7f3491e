# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled fold's loop (:class:`exchange.store.fold.CompiledFold`): the hot rules of
:class:`exchange.store.fold.Fold` in C, on the fold's own state (its dicts and lists).

A replay spends its time on a handful of kinds (on ``flow``: CommandReceived 29 %,
OrderAccepted 19 %, Fee 16 %, OrderRested 15 %, OrderCancelled 11 %, Fill 8 %). :class:`Kernel`
runs those rules -- ``_fee``, ``_fill`` (spot), ``_numbered``, ``_rested``, ``_cancelled``,
``_amended``, ``_deposit``, ``_withdrawal`` and the kinds without a rule -- in a C loop, and
hands every other event to the reference's own ``Fold.apply`` in sequence order, so the two
folds hold the same state after every event.

The rules run on typed records (:class:`Batch`), parsed in C straight from a batch blob's lines
(:meth:`Kernel.parse`: no Python tuple per event), or from the batch's stored form, the token
stream of :mod:`exchange.store.compact` (:meth:`Kernel.parse_compact`, the reader of a replay and
of the journal: a string is read once per batch, an int from its varint; the same records as
``parse`` of the expanded blob, and none where it is not sure of that, the caller then expanding
the batch), or taken from rows (:meth:`Kernel.apply_rows`: events or tuples).

Exactness, the whole point of a fast path with a reference: a compiled rule first checks every
condition under which its Python twin could raise or do something else (a key missing, a value
that is not a plain ``int``, an instrument that is not ``spot``...); only when all hold does it
change anything, with the same dict and list operations in the same order (the dicts' order is
part of the snapshots). Otherwise the event goes to ``Fold.apply``, which does what it does,
error included. ``seq``, ``t`` and ``next_order_id`` are kept in C during a run of compiled
events and written back to the fold before any Python rule runs and at the end of each call.

So is the held ledger (decision 92's, for the fold): inside one call each account's cash and
the fee pool are int64 slots (a Fee, a Deposit, a spot Fill: no dict operation, no new int), so
are the position in one instrument of each account a spot fill moves and the last price it
sets (the keys present already: the first fill of a position, a price never set, are the
Python rule's), and the orders that come to rest in the call are entries of a C table (order id, side, price,
account, qty, seq, alive) that a cancel, an amend or a fill of them updates in place; most of
them are cancelled or filled within the call and never reach a dict. Written back at the same
moments as seq: the cash, the pool, the positions and the last price to their keys (present
before they were held: no key order changes), the orders still alive inserted into their books in the order they came to
rest. Every other insertion into a book -- a Python rule's, a rest the held path does not take
-- writes the held orders back first, so each book gets the reference's key order. A value
the slots cannot hold (an int past int64, one that would go past it) is left, with its event,
to the reference's rule, after the write-back.
"""

from cpython.object cimport PyObject, Py_EQ, PyObject_RichCompareBool
from cpython.ref cimport Py_INCREF
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_SetItem, PyDict_DelItem, PyDict_CheckExact
# (PyDict_GetItem saves and restores the error state at every call: a cost here)
from cpython.dict cimport PyDict_GetItemWithError as PyDict_GetItem
from cpython.list cimport PyList_New, PyList_SET_ITEM, PyList_CheckExact, PyList_GET_SIZE
from cpython.long cimport PyLong_FromLongLong, PyLong_CheckExact
from cpython.mem cimport PyMem_Malloc, PyMem_Free, PyMem_Calloc, PyMem_Realloc
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.tuple cimport PyTuple_Check
from cpython.unicode cimport PyUnicode_DecodeUTF8, PyUnicode_CheckExact
from libc.string cimport memchr, memcmp, memcpy, memset

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1
    void _incref "Py_INCREF"(PyObject* o)
    void _decref "Py_DECREF"(PyObject* o)

cdef extern from *:
    int __builtin_ctzll(unsigned long long x) nogil
    bint __builtin_saddll_overflow(long long a, long long b, long long* out) nogil
    bint __builtin_ssubll_overflow(long long a, long long b, long long* out) nogil

#: The typed fields a record holds (``exchange.core.events.TYPED_FIELDS``).
N_TYPED = 12

cdef enum:
    K_NOOP = 0
    K_COLD = 1
    K_FEE = 2
    K_FILL = 3
    K_NUMBERED = 4
    K_RESTED = 5
    K_CANCELLED = 6
    K_AMENDED = 7
    K_DEPOSIT = 8
    K_WITHDRAWAL = 9

#: The reference rules compiled here, by their name in ``Fold``; a kind whose rule is not
#: one of them runs its Python rule. A kind with no rule at all only advances seq and t.
COMPILED_RULES = {
    "_fee": K_FEE, "_fill": K_FILL, "_numbered": K_NUMBERED, "_rested": K_RESTED,
    "_cancelled": K_CANCELLED, "_amended": K_AMENDED, "_deposit": K_DEPOSIT,
    "_withdrawal": K_WITHDRAWAL,
}

# bits of Rec.nulls: which int fields are null
cdef enum:
    N_ORDER_ID = 1
    N_PRICE = 2
    N_QTY = 4
    N_AMOUNT = 8
    N_COUNTER_ORDER_ID = 16

#: Distinct strings a kernel remembers (a log's accounts, instruments, kinds, sides); the
#: rest are made afresh each time.
CACHED = 1 << 16

cdef object FEES = "fees"
cdef object SPOT = "spot"
cdef object BUY = "buy"
cdef object ZERO = 0
cdef object NO_KEY = object()  # no instrument remembered (None is one: a forged log's)


cdef struct Rec:
    long long seq
    long long t
    long long order_id
    long long price
    long long qty
    long long amount
    long long counter_order_id
    PyObject* kind         # borrowed: the kernel's cache (or the batch's) keeps them alive
    PyObject* instrument   # Py_None for null
    PyObject* account
    PyObject* side
    PyObject* counterparty
    int tag                # K_*
    int nulls              # N_*
    Py_ssize_t slow        # >= 0: the event is the batch's Python row of that index


cdef struct Alias:
    # the held ledger's account -> cash slot, by the account object's address
    PyObject* key          # owned; NULL: empty
    Py_ssize_t slot


cdef struct HeldCash:
    PyObject* account      # owned
    long long value
    PyObject* pdict        # owned: positions[account], once a fill held a position of it
    PyObject* pkey         # owned: the instrument whose position is held (NULL: none)
    long long pos


cdef struct Held:
    # an order come to rest in the current call (see Kernel._rested)
    PyObject* book         # owned
    PyObject* side         # owned
    PyObject* account      # owned
    long long order_id
    long long price
    long long qty
    long long seq
    bint alive


# The most books whose new orders are held at once (more: the held ones are written back).
cdef enum:
    MAX_HELD_BOOKS = 16


cdef struct Slot:
    unsigned long long hash
    unsigned long long head  # the first 8 bytes (fewer: packed), and the last 8
    unsigned long long tail
    Py_ssize_t size
    const char* data       # the UTF-8 bytes of ``text`` (kept in ``Kernel.keep``)
    PyObject* text
    int tag


cdef inline object _plus(object a, long long b):
    """``a + b`` for an exact int ``a``: in C when it fits, else Python's big ints."""
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(a, &overflow)
    cdef long long out
    if overflow == 0 and not __builtin_saddll_overflow(v, b, &out):
        return PyLong_FromLongLong(out)
    return a + PyLong_FromLongLong(b)


cdef inline object _minus(object a, long long b):
    """``a - b`` for an exact int ``a``."""
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(a, &overflow)
    cdef long long out
    if overflow == 0 and not __builtin_ssubll_overflow(v, b, &out):
        return PyLong_FromLongLong(out)
    return a - PyLong_FromLongLong(b)


cdef inline bint _small(object o, long long* out):
    """Is ``o`` an exact int within C's long long (its value in ``out``)?"""
    cdef int overflow = 0
    if not PyLong_CheckExact(o):
        return False
    out[0] = PyLong_AsLongLongAndOverflow(o, &overflow)
    return overflow == 0


cdef inline bint _text_or_none(PyObject* o):
    return o == <PyObject*>None or PyUnicode_CheckExact(<object>o)


cdef inline object _int_or_none(Rec* r, long long value, int bit):
    if r.nulls & bit:
        return None
    return PyLong_FromLongLong(value)


cdef inline Py_ssize_t _quote(const char* src, Py_ssize_t q, Py_ssize_t end) noexcept nogil:
    """Where the first ``"`` or backslash at or after ``q`` is (``end`` if none before it):
    eight bytes at a time (a byte equal to either is a zero byte of the word xor-ed with it;
    the lowest such flag is exact)."""
    cdef unsigned long long v, x, y
    while q + 8 <= end:
        memcpy(&v, src + q, 8)
        x = v ^ 0x2222222222222222ULL
        y = v ^ 0x5C5C5C5C5C5C5C5CULL
        x = ((x - 0x0101010101010101ULL) & ~x) | ((y - 0x0101010101010101ULL) & ~y)
        x &= 0x8080808080808080ULL
        if x:
            return q + (__builtin_ctzll(x) >> 3)
        q += 8
    while q < end and src[q] != b'"' and src[q] != b"\\":
        q += 1
    return q


cdef long long POW10[9]
POW10[:] = [1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000]


cdef inline Py_ssize_t _digits(const char* src, Py_ssize_t p, Py_ssize_t end,
                               long long* out) noexcept nogil:
    """The value of the digits from ``p`` (at most 18, before ``end``) in ``out``; where they
    end. Eight bytes at a time: the run of digits found by flagging the bytes that are not
    (high nibble not 3, or low nibble above 9), their value by simdjson's eight-digit
    multiplications (a run shorter than eight shifted up: its missing leading bytes read 0)."""
    cdef Py_ssize_t q = p
    cdef unsigned long long v, flags
    cdef long long value = 0
    cdef int run
    while q + 8 <= end and q - p <= 10:
        memcpy(&v, src + q, 8)
        flags = ((v & 0xF0F0F0F0F0F0F0F0ULL) ^ 0x3030303030303030ULL) | (
            ((v + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) ^ 0x3030303030303030ULL
        )
        # a byte's high bit: is it flagged (a carry out of a byte >= 0xFA only flags bytes
        # after it, and the first flagged one is what counts)
        flags = (((flags & 0x7F7F7F7F7F7F7F7FULL) + 0x7F7F7F7F7F7F7F7FULL) | flags)
        flags &= 0x8080808080808080ULL
        run = 8 if flags == 0 else (__builtin_ctzll(flags) >> 3)
        if run == 0:
            break
        if run < 8:
            v <<= 8 * (8 - run)
        v = ((v & 0x0F0F0F0F0F0F0F0FULL) * 2561) >> 8
        v = ((v & 0x00FF00FF00FF00FFULL) * 6553601) >> 16
        v = ((v & 0x0000FFFF0000FFFFULL) * 42949672960001ULL) >> 32
        value = value * POW10[run] + <long long>(v & 0xFFFFFFFFULL)
        q += run
        if run < 8:
            out[0] = value
            return q
    while q < end and _is_digit(src[q]) and q - p < 18:
        value = value * 10 + (src[q] - 48)
        q += 1
    out[0] = value
    return q


cdef inline bint _is_digit(char c) noexcept nogil:
    return b"0" <= c <= b"9"


# -- the stored form (exchange.store.compact's specification; Kernel.parse_compact) ------
cdef enum:
    FORMAT_RAW = 0x00
    FORMAT_TOKENS = 0x01
    T_END = 0x00
    T_OPEN_ARRAY = 0x01
    T_CLOSE_ARRAY = 0x02
    T_OPEN_OBJECT = 0x03
    T_CLOSE_OBJECT = 0x04
    T_NULL = 0x05
    T_TRUE = 0x06
    T_FALSE = 0x07
    T_INT = 0x08
    T_NUMBER = 0x09
    T_NEW_STRING = 0x0A
    T_STRING = 0x0B
    T_NEXT_SEQ = 0x0C
    T_DELTA_T = 0x0D
    T_RAW_LINE = 0x0E
    T_SMALL_INT = 0x10
    T_SMALL_INT_END = 0x60
    T_SMALL_STRING = 0x80
    # an open container's state: an array before its first element / after one, an object
    # before its first key / after a pair, an object after a key
    S_A0 = 0
    S_A1 = 1
    S_K0 = 2
    S_K1 = 3
    S_V = 4
    MAX_DEPTH = 1024

#: The deepest nesting the stored form holds (``exchange.store.compact.MAX_DEPTH``: a test
#: holds the two equal).
COMPACT_MAX_DEPTH = MAX_DEPTH

# The largest magnitude of an int the JSON reader takes (18 digits; more: Python's).
cdef long long MAX_FAST_INT = 999999999999999999LL


cdef struct Fields:
    # one line's elements 0..11 as the reader found them: type (0 null, 1 int, 2 str)
    int types[12]
    long long ints[12]
    PyObject* texts[12]
    int tags[12]


cdef inline long long _int_field(Fields* f, int k, Rec* r, int null_bit) noexcept nogil:
    """Element ``k``'s int, or 0 with ``null_bit`` set in ``r.nulls`` when it is null."""
    if f.types[k]:
        return f.ints[k]
    r.nulls |= null_bit
    return 0


cdef struct Entry:
    # a string of a stored batch's table
    Py_ssize_t off          # its content's offset in the stored bytes
    Py_ssize_t size
    PyObject* text          # its str once a typed field needed it (NULL before)
    int tag
    int escaped             # holds a backslash: the JSON reader leaves its line to Python


cdef struct Table:
    Entry* e
    Py_ssize_t n
    Py_ssize_t cap


cdef struct Walk:
    # one token line (Kernel._walk)
    bint fast
    bint has_prev[2]        # the previous line's element 0 (seq) and 1 (t), when ints
    long long prev[2]
    bint has_cur[2]         # this line's
    long long cur[2]


cdef inline Py_ssize_t _varint(const unsigned char* d, Py_ssize_t pos, Py_ssize_t n,
                               unsigned long long* out) noexcept nogil:
    """The unsigned LEB128 at ``d[pos:n]`` in ``out``: the position after it, or -1 if it is
    truncated, past 64 bits or not minimal (what ``expand`` refuses)."""
    cdef unsigned long long value = 0
    cdef unsigned char b
    cdef int i
    if pos < n and d[pos] < 0x80:
        out[0] = d[pos]
        return pos + 1
    for i in range(10):
        if pos >= n:
            return -1
        b = d[pos]
        pos += 1
        if i == 9 and b > 1:
            return -1
        value |= (<unsigned long long>(b & 0x7F)) << (7 * i)
        if b < 0x80:
            if b == 0 and i > 0:
                return -1
            out[0] = value
            return pos
    return -1


cdef inline bint _hex(unsigned char c) noexcept nogil:
    return (b"0" <= c <= b"9") or (b"a" <= c <= b"f") or (b"A" <= c <= b"F")


cdef int _content(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """Is ``s[:n]`` a string's content as the tokenizer takes it (no ``"``, no control byte,
    escapes ``\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX`` only)? -1 if not, else 1 if it
    holds an escape, 0 if not."""
    cdef Py_ssize_t i = 0
    cdef int escaped = 0
    cdef unsigned char c
    cdef unsigned long long v, x, y
    while i + 8 <= n:  # eight bytes at a time up to the first '"', backslash or control byte
        memcpy(&v, s + i, 8)
        x = v ^ 0x2222222222222222ULL
        y = v ^ 0x5C5C5C5C5C5C5C5CULL
        if (((x - 0x0101010101010101ULL) & ~x) | ((y - 0x0101010101010101ULL) & ~y)
                | ((v - 0x2020202020202020ULL) & ~v)) & 0x8080808080808080ULL:
            break
        i += 8
    while i < n:
        c = s[i]
        if c == b'"' or c < 0x20:
            return -1
        if c != b"\\":
            i += 1
            continue
        escaped = 1
        if i + 1 >= n:
            return -1
        c = s[i + 1]
        if c == b'"' or c == b"\\" or c == b"/" or c == b"b" or c == b"f" or c == b"n" or (
            c == b"r" or c == b"t"
        ):
            i += 2
        elif c == b"u":
            if i + 6 > n or not (_hex(s[i + 2]) and _hex(s[i + 3]) and _hex(s[i + 4])
                                 and _hex(s[i + 5])):
                return -1
            i += 6
        else:
            return -1
    return escaped


cdef inline bint _closes_line(const unsigned char* d, Py_ssize_t pos, Py_ssize_t n) noexcept:
    """Whether ``d[pos:]`` starts with a line's last two codes: its top-level array's end and
    the line's end."""
    return pos + 1 < n and d[pos] == T_CLOSE_ARRAY and d[pos + 1] == T_END


cdef inline Py_ssize_t _string_token(
    const unsigned char* d, Py_ssize_t pos, Py_ssize_t n, Table* table, unsigned char code,
    Py_ssize_t* index,
) except -2:
    """A string token (``code``: ``0x80..0xFF``, ``0x0A`` or ``0x0B``) whose payload, if any,
    is at ``d[pos:]``: its index in ``table`` into ``index`` (a new string added to it), and
    the position after it; -1 if ``expand`` refuses it."""
    cdef unsigned long long raw
    if code >= T_SMALL_STRING:
        index[0] = code - T_SMALL_STRING
        return pos if index[0] < table.n else -1
    if code == T_NEW_STRING:
        pos = _new_string(d, pos, n, table)
        index[0] = table.n - 1
        return pos
    pos = _varint(d, pos, n, &raw)
    if pos < 0 or raw >= <unsigned long long>table.n:
        return -1
    index[0] = <Py_ssize_t>raw
    return pos


cdef Py_ssize_t _new_string(const unsigned char* d, Py_ssize_t pos, Py_ssize_t n,
                            Table* table) except -2:
    """The new string (``0x0A``) whose length is at ``d[pos:]``, added to ``table``: the
    position after it, or -1 if ``expand`` refuses it."""
    cdef unsigned long long raw
    cdef int kind
    cdef Entry* e
    pos = _varint(d, pos, n, &raw)
    if pos < 0 or raw > <unsigned long long>(n - pos):
        return -1
    kind = _content(d + pos, <Py_ssize_t>raw)
    if kind < 0:
        return -1
    if table.n == table.cap:
        e = <Entry*>PyMem_Realloc(table.e, 2 * table.cap * sizeof(Entry))
        if e == NULL:
            raise MemoryError()
        table.e = e
        table.cap *= 2
    e = &table.e[table.n]
    e.off = pos
    e.size = <Py_ssize_t>raw
    e.text = NULL
    e.tag = 0
    e.escaped = kind
    table.n += 1
    return pos + <Py_ssize_t>raw


cdef bint _raw_number(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """Is ``s[:n]`` a raw number token as the tokenizer writes it: a JSON number that is not
    an int the ``0x08`` code holds (a fraction or exponent, ``-0``, an int past int64)?"""
    cdef Py_ssize_t i = 0, start, digits
    cdef bint negative = False
    if n > 0 and s[0] == b"-":
        negative = True
        i = 1
    if i >= n:
        return False
    if s[i] == b"0":
        i += 1
    elif b"1" <= s[i] <= b"9":
        while i < n and b"0" <= s[i] <= b"9":
            i += 1
    else:
        return False
    digits = i - negative
    if i == n:  # an int: a raw number only as -0 or past int64
        if negative and digits == 1 and s[1] == b"0":
            return True
        if digits != 19:
            return digits > 19
        if negative:
            return memcmp(s + 1, b"9223372036854775808", 19) > 0
        return memcmp(s, b"9223372036854775807", 19) > 0
    if s[i] == b".":
        i += 1
        start = i
        while i < n and b"0" <= s[i] <= b"9":
            i += 1
        if i == start:
            return False
    if i < n and (s[i] == b"e" or s[i] == b"E"):
        i += 1
        if i < n and (s[i] == b"+" or s[i] == b"-"):
            i += 1
        start = i
        while i < n and b"0" <= s[i] <= b"9":
            i += 1
        if i == start:
            return False
    return i == n


cdef class Batch:
    """The events of one batch blob as typed records (:meth:`Kernel.parse`)."""

    cdef Rec* recs
    cdef Py_ssize_t n, cap
    cdef list rows      # the Python rows of the lines the C parser left to Python
    cdef list keep      # strings beyond the kernel's cache
    cdef Kernel kernel  # whose cache holds the records' strings

    def __cinit__(self):
        self.recs = NULL
        self.n = 0
        self.cap = 0
        self.rows = []
        self.keep = []

    def __dealloc__(self):
        if self.recs == NULL:
            return
        if self.kernel is not None and self.kernel.spare == NULL:
            # the next batch's records go here: fresh pages for each batch cost more than
            # parsing a tenth of it
            self.kernel.spare = self.recs
            self.kernel.spare_cap = self.cap
        else:
            PyMem_Free(self.recs)
        self.recs = NULL

    def __len__(self):
        return self.n

    def row(self, Py_ssize_t i):
        """Event ``i``'s typed fields as a tuple (what ``typed_rows`` gives; for tests)."""
        if i < 0 or i >= self.n:
            raise IndexError(i)
        return self.kernel._row_of(&self.recs[i], self)

    def slow(self, Py_ssize_t i):
        """Whether event ``i`` is a row the C reader left to Python (for tests)."""
        if i < 0 or i >= self.n:
            raise IndexError(i)
        return self.recs[i].slow >= 0


cdef class Kernel:
    """The compiled rules and their string cache; one per fold.

    ``tags``: each kind with a rule in the reference fold -> the name of its rule
    (``Fold._apply``'s handlers' names); kinds absent have no rule."""

    cdef Slot* slots
    cdef Py_ssize_t cap
    cdef Py_ssize_t used
    cdef Rec* spare          # the records of a batch gone, for the next one
    cdef Py_ssize_t spare_cap
    cdef list keep
    cdef dict codes          # kind -> K_* (rows' kinds, and the parser's)
    cdef public object current  # the row a Python rule is folding (for FoldError's seq)
    # the fold's state while a call runs (see _load / _flush)
    cdef object fold
    cdef bint ok             # the state has the shape the compiled rules need
    cdef dict cash, pools, books, positions, kinds, last_price
    cdef long long seq, t, next_order_id
    cdef bint moved, numbered
    # the last instrument's book, and the last instrument found spot: only a Python rule can
    # replace a book or a kind, and each is followed by _load, which forgets them (held, so
    # that no other object can take the address)
    cdef object book_key, book, spot_key
    # the held ledger (see _flush): cash slots, the fee pool, the orders rested in the call
    cdef bint hold           # the state's containers are distinct (a forged one: nothing held)
    cdef Alias* alias
    cdef Py_ssize_t alias_cap, alias_n
    cdef HeldCash* held_cash
    cdef Py_ssize_t held_cash_cap, held_cash_n
    cdef dict cash_index     # account -> its slot, by equality (an address not yet seen)
    cdef bint fees_held
    cdef long long fees
    cdef Held* held
    cdef Py_ssize_t held_cap, held_n
    cdef Py_ssize_t* held_index  # (book, order id) -> its latest entry in held, -1: empty
    cdef Py_ssize_t held_index_cap, held_index_n
    cdef PyObject* held_books[MAX_HELD_BOOKS]
    cdef int held_books_n
    cdef dict position_dicts  # id(positions dict) -> its slot (one dict, one slot)
    cdef PyObject* price_key  # owned: the instrument whose last price is held (NULL: none)
    cdef long long price
    cdef bint price_null, price_set

    def __cinit__(self, dict tags):
        self.cap = 256
        self.used = 0
        self.spare = NULL
        self.spare_cap = 0
        self.slots = <Slot*>PyMem_Calloc(self.cap, sizeof(Slot))
        if self.slots == NULL:
            raise MemoryError()
        self.keep = []
        self.codes = {}
        for kind, rule in tags.items():
            self.codes[kind] = COMPILED_RULES.get(rule, K_COLD)
        self.current = None
        self.ok = False
        self.hold = False
        self.cash_index = {}
        self.position_dicts = {}
        self.price_key = NULL
        self.alias_cap = 64
        self.alias = <Alias*>PyMem_Calloc(self.alias_cap, sizeof(Alias))
        self.held_cash_cap = 64
        self.held_cash = <HeldCash*>PyMem_Malloc(self.held_cash_cap * sizeof(HeldCash))
        self.held_cap = 256
        self.held = <Held*>PyMem_Malloc(self.held_cap * sizeof(Held))
        self.held_index_cap = 512
        self.held_index = <Py_ssize_t*>PyMem_Malloc(self.held_index_cap * sizeof(Py_ssize_t))
        if (self.alias == NULL or self.held_cash == NULL or self.held == NULL
                or self.held_index == NULL):
            raise MemoryError()
        for i in range(self.held_index_cap):
            self.held_index[i] = -1

    def __dealloc__(self):
        # (every call writes back and empties the held ledger: nothing owned is left in it)
        PyMem_Free(self.alias)
        PyMem_Free(self.held_cash)
        PyMem_Free(self.held)
        PyMem_Free(self.held_index)
        if self.slots != NULL:
            PyMem_Free(self.slots)
            self.slots = NULL
        if self.spare != NULL:
            PyMem_Free(self.spare)
            self.spare = NULL

    # ------------------------------------------------------------------ strings
    cdef inline int _code(self, object kind):
        cdef PyObject* code = PyDict_GetItem(self.codes, kind)
        if code == NULL:
            return K_NOOP  # no rule: Fold.apply only advances seq and t
        return <int><object>code

    cdef PyObject* _text(self, const char* s, Py_ssize_t n, int* tag, Batch batch) except NULL:
        """The str of the UTF-8 bytes ``s[:n]``, the same object each time while the cache
        has room; its kind code in ``tag``."""
        cdef unsigned long long head = 0, tail = 0, h
        cdef Py_ssize_t j
        if n >= 8:
            memcpy(&head, s, 8)
            memcpy(&tail, s + n - 8, 8)
        else:
            for j in range(n):
                head = (head << 8) | <unsigned char>s[j]
        # the first and last 8 bytes and the length: all of a string of up to 16 bytes
        h = (head ^ (tail * 0x9E3779B97F4A7C15ULL) ^ <unsigned long long>n) * 0xFF51AFD7ED558CCDULL
        h ^= h >> 29
        cdef Py_ssize_t mask = self.cap - 1
        cdef Py_ssize_t i = <Py_ssize_t>(h & <unsigned long long>mask)
        cdef Slot* slot
        while True:
            slot = &self.slots[i]
            if slot.text == NULL:
                break
            if (slot.hash == h and slot.size == n and slot.head == head and slot.tail == tail
                    and (n <= 16 or memcmp(slot.data, s, n) == 0)):
                tag[0] = slot.tag
                return slot.text
            i = (i + 1) & mask
        text = PyUnicode_DecodeUTF8(s, n, NULL)  # strict, as the reference's reader
        tag[0] = self._code(text)
        if self.used >= CACHED:
            batch.keep.append(text)
            return <PyObject*>text
        data = text.encode()  # its bytes, kept beside it (equal to s[:n])
        self.keep.append(data)
        self.keep.append(text)
        slot.hash = h
        slot.head = head
        slot.tail = tail
        slot.size = n
        slot.data = PyBytes_AS_STRING(data)
        slot.text = <PyObject*>text
        slot.tag = tag[0]
        self.used += 1
        if self.used * 2 > self.cap:
            self._grow()
        return <PyObject*>text

    cdef int _grow(self) except -1:
        cdef Py_ssize_t cap = self.cap * 2, k, i
        cdef Slot* old = self.slots
        cdef Slot* slots = <Slot*>PyMem_Calloc(cap, sizeof(Slot))
        if slots == NULL:
            raise MemoryError()
        for k in range(self.cap):
            if old[k].text != NULL:
                i = <Py_ssize_t>(old[k].hash & <unsigned long long>(cap - 1))
                while slots[i].text != NULL:
                    i = (i + 1) & (cap - 1)
                slots[i] = old[k]
        PyMem_Free(old)
        self.slots = slots
        self.cap = cap
        return 0

    # ------------------------------------------------------------------ the reader
    def parse(self, bytes blob, long long first, Py_ssize_t count, Py_ssize_t n_typed,
              fallback):
        """The events of a batch blob as a :class:`Batch`, read exactly as
        ``exchange.store._reader.typed_rows(blob, first, count, n_typed, fallback)`` reads them
        (the same lines to ``fallback``, the same values; None in the same cases: the blob is
        not ``count`` events, ``count`` < 0: any number, of seqs ``first``, ``first + 1``...)
        but into typed records, with no Python object per event."""
        if n_typed != N_TYPED:
            raise ValueError(f"the compiled fold reads {N_TYPED} typed fields, not {n_typed}")
        cdef const char* src = PyBytes_AS_STRING(blob)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(blob)
        cdef Py_ssize_t pos = 0, end, k = 0, lines = 0
        cdef bint fast
        cdef const char* nl
        cdef Fields f
        if n and src[n - 1] != b"\n":
            return None
        if count >= 0:
            lines = count  # more lines than that: not the batch (None below)
        else:
            nl = src
            while True:
                nl = <const char*>memchr(nl, b"\n", n - (nl - src))
                if nl == NULL:
                    break
                lines += 1
                nl += 1
        batch = self._batch(lines)
        while pos < n:
            if k == lines:
                return None  # more events than ``count``
            nl = <const char*>memchr(src + pos, b"\n", n - pos)
            end = nl - src
            fast = self._scan_line(src, pos, end, &f, batch)
            row = None if fast else fallback(blob[pos:end])
            if not self._put(batch, k, &f, fast, row, first + k):
                return None
            k += 1
            batch.n = k
            pos = end + 1
        if count >= 0 and k != count:
            return None
        return batch

    cdef Batch _batch(self, Py_ssize_t lines):
        """A batch with room for ``lines`` records (the spare ones if they do)."""
        batch = Batch()
        batch.kernel = self
        if lines < 1:
            lines = 1
        if self.spare != NULL and self.spare_cap >= lines:
            batch.recs, batch.cap = self.spare, self.spare_cap
            self.spare = NULL
        else:
            batch.recs = <Rec*>PyMem_Malloc(lines * sizeof(Rec))
            if batch.recs == NULL:
                raise MemoryError()
            batch.cap = lines
        return batch

    cdef bint _scan_line(self, const char* src, Py_ssize_t p, Py_ssize_t end, Fields* f,
                         Batch batch) except -1:
        """Read the line ``src[p:end]`` (JSON) as :meth:`parse` does: True if its first 12
        elements are each null, a string without an escape or an int of at most 18 digits,
        and a 13th follows (their values in ``f``); False if Python decodes the line."""
        cdef Py_ssize_t q, i = 0
        cdef long long value
        cdef bint negative
        cdef int tag
        if p >= end or src[p] != b"[":
            return False
        p += 1
        while i < 12:
            if p >= end:
                return False
            if src[p] == b"n":
                if end - p < 4 or src[p + 1] != b"u" or src[p + 2] != b"l" or src[p + 3] != b"l":
                    return False
                f.types[i] = 0
                p += 4
            elif src[p] == b'"':
                q = _quote(src, p + 1, end)
                if q >= end or src[q] != b'"':
                    return False  # an escape: Python decodes it
                f.texts[i] = self._text(src + p + 1, q - p - 1, &tag, batch)
                f.tags[i] = tag
                f.types[i] = 2
                p = q + 1
            elif src[p] == b"-" or _is_digit(src[p]):
                negative = src[p] == b"-"
                if negative:
                    p += 1
                q = _digits(src, p, end, &value)
                if q == p or (q < end and (_is_digit(src[q]) or src[q] in b".eE")):
                    return False  # beyond 18 digits, or not an int: Python decodes it
                f.ints[i] = -value if negative else value
                f.types[i] = 1
                p = q
            else:
                return False
            if p >= end or src[p] != b",":
                return False
            p += 1
            i += 1
        return True

    cdef bint _put(self, Batch batch, Py_ssize_t k, Fields* f, bint fast, object row,
                   long long expected) except -1:
        """Record ``k`` of ``batch``: the fields ``f`` of a line read (``fast``), else the
        ``row`` Python made of it. False if it is not event ``expected`` (nothing kept)."""
        cdef Rec* r = &batch.recs[k]
        cdef Py_ssize_t i
        cdef int* types = f.types
        r.slow = -1
        if fast and (types[0] != 1 or types[1] != 1 or types[2] != 2
                     or types[3] == 1 or types[4] == 1 or types[6] == 1 or types[10] == 1
                     or types[5] == 2 or types[7] == 2 or types[8] == 2 or types[9] == 2
                     or types[11] == 2):
            # every field read, one of an unexpected type: the row typed_rows makes
            row = PyTuple_New(12)
            for i in range(12):
                if types[i] == 0:
                    item = None
                elif types[i] == 1:
                    item = PyLong_FromLongLong(f.ints[i])
                else:
                    item = <object>f.texts[i]
                Py_INCREF(item)
                PyTuple_SET_ITEM(row, i, item)
            fast = False
        if not fast:
            if len(row) == 0 or row[0] != expected:
                return False
            r.seq = expected
            r.slow = len(batch.rows)
            batch.rows.append(row)
            return True
        if f.ints[0] != expected:
            return False
        r.seq = f.ints[0]
        r.t = f.ints[1]
        r.kind = f.texts[2]
        r.tag = f.tags[2]
        r.nulls = 0
        r.instrument = f.texts[3] if types[3] else <PyObject*>None
        r.account = f.texts[4] if types[4] else <PyObject*>None
        r.side = f.texts[6] if types[6] else <PyObject*>None
        r.counterparty = f.texts[10] if types[10] else <PyObject*>None
        r.order_id = _int_field(f, 5, r, N_ORDER_ID)
        r.price = _int_field(f, 7, r, N_PRICE)
        r.qty = _int_field(f, 8, r, N_QTY)
        r.amount = _int_field(f, 9, r, N_AMOUNT)
        r.counter_order_id = _int_field(f, 11, r, N_COUNTER_ORDER_ID)
        return True

    # ------------------------------------------------------------------ the stored form
    def parse_compact(self, bytes stored not None, long long first, Py_ssize_t count,
                      Py_ssize_t n_typed, fallback):
        """:meth:`parse` of a batch given as its stored form (``compact(blob)``, the token
        stream of ``exchange.store.compact``), read without expanding it: when it returns a
        :class:`Batch`, that batch is what ``parse(expand(stored), ...)`` gives, record for
        record (the same typed fields, the same cached strings, the same rows left to Python:
        a raw line, and a token line the JSON reader would leave to Python, go through
        :meth:`parse`'s own line reader and ``fallback``).

        None whenever it is not sure of that: ``stored`` does not expand (anything ``expand``
        refuses is refused here, every read bounds-checked), or ``parse`` would not give a
        batch (not ``count`` events of seqs ``first``...). The caller then does what it did
        without this (``parse(expand(stored), ...)`` and its verdict); an error raised here
        (a string that is not UTF-8, ``fallback``'s) is likewise the caller's cue to."""
        if n_typed != N_TYPED:
            raise ValueError(f"the compiled fold reads {N_TYPED} typed fields, not {n_typed}")
        cdef const unsigned char* d = <const unsigned char*>PyBytes_AS_STRING(stored)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(stored)
        cdef Py_ssize_t pos = 1, start, k = 0, lines, size, i
        cdef unsigned long long raw
        cdef bint fast
        cdef Fields f
        cdef Walk w
        cdef Table table
        cdef Rec* grown
        if n == 0:
            return None
        if d[0] == FORMAT_RAW:
            return self.parse(stored[1:], first, count, n_typed, fallback)
        if d[0] != FORMAT_TOKENS or n == 1:
            return None
        lines = count if count >= 0 else 64
        batch = self._batch(lines)
        w.has_prev[0] = w.has_prev[1] = False
        table.n = 0
        table.cap = 256
        table.e = <Entry*>PyMem_Malloc(table.cap * sizeof(Entry))
        if table.e == NULL:
            raise MemoryError()
        try:
            while pos < n:
                if count >= 0:
                    if k == count:
                        return None  # more events than ``count``
                elif k == batch.cap:
                    grown = <Rec*>PyMem_Realloc(batch.recs, 2 * batch.cap * sizeof(Rec))
                    if grown == NULL:
                        raise MemoryError()
                    batch.recs = grown
                    batch.cap *= 2
                row = None
                if d[pos] == T_RAW_LINE:
                    pos = _varint(d, pos + 1, n, &raw)
                    if pos < 0 or raw > <unsigned long long>(n - pos):
                        return None
                    size = <Py_ssize_t>raw
                    if memchr(d + pos, b"\n", size) != NULL:
                        return None
                    fast = self._scan_line(<const char*>d, pos, pos + size, &f, batch)
                    if not fast:
                        row = fallback(stored[pos:pos + size])
                    pos += size
                    w.has_prev[0] = w.has_prev[1] = False
                else:
                    start = pos
                    pos = self._walk(d, pos, n, &table, &w, &f, batch)
                    if pos < 0:
                        return None
                    fast = w.fast
                    if not fast:  # the line as JSON, read as parse reads it
                        line = self._line_json(d, start, n, &table, &w)
                        fast = self._scan_line(PyBytes_AS_STRING(line), 0,
                                               PyBytes_GET_SIZE(line), &f, batch)
                        if not fast:
                            row = fallback(line)
                    w.has_prev[0], w.prev[0] = w.has_cur[0], w.cur[0]
                    w.has_prev[1], w.prev[1] = w.has_cur[1], w.cur[1]
                if not self._put(batch, k, &f, fast, row, first + k):
                    return None
                k += 1
                batch.n = k
        finally:
            PyMem_Free(table.e)
        if count >= 0 and k != count:
            return None
        return batch

    cdef inline int _string(self, const unsigned char* d, Entry* e, Fields* f, Py_ssize_t i,
                            Batch batch) except -1:
        """Element ``i`` of a line is the table's string ``e``: its str in ``f`` (made once
        per batch, from the kernel's cache)."""
        cdef int tag
        if e.text == NULL:
            e.text = self._text(<const char*>d + e.off, e.size, &tag, batch)
            e.tag = tag
        f.texts[i] = e.text
        f.tags[i] = e.tag
        f.types[i] = 2
        return 0

    cdef Py_ssize_t _walk(self, const unsigned char* d, Py_ssize_t pos, Py_ssize_t n,
                          Table* table, Walk* w, Fields* f, Batch batch) except -2:
        """Check the token line at ``d[pos:]`` (not a raw line) as ``expand`` does, up to
        its end code: the position after it, or -1 if ``expand`` refuses it. New strings
        join ``table``. ``w``: in, the previous line's seq and t; out, this line's
        (``cur``), and whether its top-level array's elements 0..11 are what :meth:`parse`
        reads in C (``fast``: each null, an int of at most 18 digits or a string without an
        escape, and a 13th follows; their values in ``f``, each string's str made as
        :meth:`parse` makes it, once per batch).

        An event's line opens with 12 scalars: read here straight, the rest (its payload, or
        a line of another shape from its start) by :meth:`_walk_rest`."""
        cdef Py_ssize_t start = pos, n0 = table.n, index, i
        cdef unsigned char code
        cdef unsigned long long raw
        cdef long long value
        w.fast = True
        w.has_cur[0] = w.has_cur[1] = False
        if d[pos] != T_OPEN_ARRAY:
            return self._walk_rest(d, start, n, table, w, f, batch, 0, 0)
        pos += 1
        for i in range(12):
            if pos >= n:
                return -1
            code = d[pos]
            pos += 1
            if code >= T_SMALL_STRING or code == T_NEW_STRING or code == T_STRING:
                pos = _string_token(d, pos, n, table, code, &index)
                if pos < 0:
                    return pos
            elif code == T_NULL:
                f.types[i] = 0
                continue
            else:
                if T_SMALL_INT <= code < T_SMALL_INT_END:
                    value = code - T_SMALL_INT
                elif code == T_INT:
                    pos = _varint(d, pos, n, &raw)
                    if pos < 0:
                        return -1
                    value = <long long>((raw >> 1) ^ (0 - (raw & 1)))
                elif code == T_NEXT_SEQ and i == 0 and w.has_prev[0]:
                    if __builtin_saddll_overflow(w.prev[0], 1, &value):
                        return -1
                elif code == T_DELTA_T and i == 1 and w.has_prev[1]:
                    pos = _varint(d, pos, n, &raw)
                    if pos < 0 or __builtin_saddll_overflow(
                        w.prev[1], <long long>((raw >> 1) ^ (0 - (raw & 1))), &value
                    ):
                        return -1
                else:  # not a scalar of an event's head: the general walk, from the start
                    table.n = n0
                    w.fast = True
                    w.has_cur[0] = w.has_cur[1] = False
                    return self._walk_rest(d, start, n, table, w, f, batch, 0, 0)
                if i < 2:
                    w.cur[i] = value
                    w.has_cur[i] = True
                if -MAX_FAST_INT <= value <= MAX_FAST_INT:
                    f.types[i] = 1
                    f.ints[i] = value
                else:
                    w.fast = False  # 19 digits: Python decodes it
                continue
            if table.e[index].escaped:
                w.fast = False
            elif w.fast:
                self._string(d, &table.e[index], f, i, batch)
        return self._walk_tail(d, pos, n, table, w, f, batch)

    cdef Py_ssize_t _walk_tail(self, const unsigned char* d, Py_ssize_t pos, Py_ssize_t n,
                               Table* table, Walk* w, Fields* f, Batch batch) except -2:
        """:meth:`_walk_rest` from element 12 of a line's top-level array (its 12 scalars
        read), for the shapes an event's payload has: a string, an int, null, true, false, or
        an object of such values and of such objects; then the array's end and the line's.
        Its checks are :meth:`_walk_rest`'s, in fewer steps (that walk's stack of states
        kept as a depth: here an open container is always an object); anything else -- an
        array, a raw number, a bad token, more elements -- is left to :meth:`_walk_rest`,
        from element 12 again, the strings this walk added to the table taken back."""
        cdef Py_ssize_t start = pos, n0 = table.n, index
        cdef Py_ssize_t depth = 0  # objects open in element 12
        cdef unsigned char code
        cdef unsigned long long raw
        while True:
            # a value: a scalar, or an object's opening (its keys and values follow)
            if pos >= n:
                break
            code = d[pos]
            pos += 1
            if code == T_OPEN_OBJECT:
                if depth >= 8:
                    break
                depth += 1
            elif code >= T_SMALL_STRING or code == T_NEW_STRING or code == T_STRING:
                pos = _string_token(d, pos, n, table, code, &index)
                if pos < 0:
                    break
            elif code == T_INT:
                pos = _varint(d, pos, n, &raw)
                if pos < 0:
                    break
            elif not (T_SMALL_INT <= code < T_SMALL_INT_END or T_NULL <= code <= T_FALSE):
                break
            # the objects that end here; then element 12's end (at depth 0), or the innermost
            # object's next key
            while depth:
                if pos >= n:
                    depth = -1
                    break
                code = d[pos]
                pos += 1
                if code != T_CLOSE_OBJECT:
                    break
                depth -= 1
            if depth <= 0:
                if depth == 0 and _closes_line(d, pos, n):
                    return pos + 2  # the array's end, the line's
                break
            if not (code >= T_SMALL_STRING or code == T_NEW_STRING or code == T_STRING):
                break  # (a key that is not a string: refused there)
            pos = _string_token(d, pos, n, table, code, &index)
            if pos < 0:
                break
        table.n = n0
        return self._walk_rest(d, start, n, table, w, f, batch, 1, 12)

    cdef Py_ssize_t _walk_rest(self, const unsigned char* d, Py_ssize_t pos, Py_ssize_t n,
                               Table* table, Walk* w, Fields* f, Batch batch,
                               Py_ssize_t depth, Py_ssize_t top) except -2:
        """:meth:`_walk` from ``pos``: the start of the line (``depth`` 0), or after element
        ``top - 1`` of its top-level array (``depth`` 1)."""
        cdef unsigned char stack[MAX_DEPTH]
        cdef Py_ssize_t elem, index = 0
        cdef bint have_value = depth > 0, text
        cdef bint fast = w.fast
        cdef unsigned char code, state
        cdef unsigned long long raw
        cdef long long value, delta
        cdef int slot
        if depth:
            stack[0] = S_A1
        while True:
            if pos >= n:
                return -1  # the stored batch ends inside a line
            code = d[pos]
            pos += 1
            if code == T_END:
                if depth or not have_value:
                    return -1
                break
            if code == T_CLOSE_ARRAY or code == T_CLOSE_OBJECT:
                if depth == 0:
                    return -1
                state = stack[depth - 1]
                if code == T_CLOSE_ARRAY:
                    if state > S_A1:
                        return -1
                elif state != S_K0 and state != S_K1:
                    return -1
                depth -= 1
                continue
            text = True
            if code >= T_SMALL_STRING or code == T_NEW_STRING or code == T_STRING:
                pos = _string_token(d, pos, n, table, code, &index)
                if pos < 0:
                    return pos
            elif code == T_RAW_LINE or code == 0x0F or code >= T_SMALL_INT_END:
                return -1  # a raw line inside a line, or an unused code
            else:
                text = False
            # where the value (or key) goes
            elem = -1
            if depth == 0:
                if have_value:
                    return -1  # a second value on the line
                have_value = True
                if code != T_OPEN_ARRAY:
                    fast = False
            else:
                state = stack[depth - 1]
                if state == S_K0 or state == S_K1:
                    if not text:
                        return -1  # a key that is not a string
                    stack[depth - 1] = S_V
                    continue
                if state == S_A0:
                    stack[depth - 1] = S_A1
                elif state == S_V:
                    stack[depth - 1] = S_K1
                if depth == 1 and state <= S_A1:
                    elem = top
                    top += 1
            if text:
                if elem < 12 and elem >= 0:
                    if table.e[index].escaped:
                        fast = False
                    elif fast:
                        self._string(d, &table.e[index], f, elem, batch)
                continue
            if code == T_OPEN_ARRAY or code == T_OPEN_OBJECT:
                if depth >= MAX_DEPTH:
                    return -1
                stack[depth] = S_A0 if code == T_OPEN_ARRAY else S_K0
                depth += 1
                if elem < 12 and elem >= 0:
                    fast = False
                continue
            if code == T_NULL:
                if elem < 12 and elem >= 0:
                    f.types[elem] = 0
                continue
            if code == T_TRUE or code == T_FALSE:
                if elem < 12 and elem >= 0:
                    fast = False
                continue
            if code == T_NUMBER:
                pos = _varint(d, pos, n, &raw)
                if pos < 0 or raw > <unsigned long long>(n - pos):
                    return -1
                if not _raw_number(d + pos, <Py_ssize_t>raw):
                    return -1
                pos += <Py_ssize_t>raw
                if elem < 12 and elem >= 0:
                    fast = False  # parse reads "-0" as 0, Python the rest: the JSON path
                continue
            # an int
            if code >= T_SMALL_INT:
                value = code - T_SMALL_INT
            elif code == T_INT:
                pos = _varint(d, pos, n, &raw)
                if pos < 0:
                    return -1
                value = <long long>((raw >> 1) ^ (0 - (raw & 1)))
            else:  # T_NEXT_SEQ, T_DELTA_T
                slot = code - T_NEXT_SEQ
                if elem != slot or not w.has_prev[slot]:
                    return -1  # out of place
                if code == T_NEXT_SEQ:
                    delta = 1
                else:
                    pos = _varint(d, pos, n, &raw)
                    if pos < 0:
                        return -1
                    delta = <long long>((raw >> 1) ^ (0 - (raw & 1)))
                if __builtin_saddll_overflow(w.prev[slot], delta, &value):
                    return -1  # past int64
            if elem < 12 and elem >= 0:
                if elem < 2:
                    w.cur[elem] = value
                    w.has_cur[elem] = True
                if -MAX_FAST_INT <= value <= MAX_FAST_INT:
                    f.types[elem] = 1
                    f.ints[elem] = value
                else:
                    fast = False  # 19 digits: Python decodes it
        if top < 13:
            fast = False  # parse reads 12 elements each followed by a comma
        w.fast = fast
        return pos

    cdef bytes _line_json(self, const unsigned char* d, Py_ssize_t pos, Py_ssize_t n,
                          Table* table, Walk* w):
        """The JSON line (without its newline) of the token line at ``d[pos:]``, which
        :meth:`_walk` has checked (``w``: its previous line's seq and t), written as
        ``expand`` writes it."""
        cdef unsigned char stack[MAX_DEPTH]
        cdef Py_ssize_t depth = 0, top = 0, elem, size = 0
        cdef const unsigned char* s = NULL
        cdef Entry* e
        cdef unsigned char code, state
        cdef unsigned long long raw = 0
        cdef long long value, delta
        cdef bint text
        out = bytearray()
        while True:
            code = d[pos]
            pos += 1
            if code == T_END:
                break
            if code == T_CLOSE_ARRAY or code == T_CLOSE_OBJECT:
                depth -= 1
                out += b"]" if code == T_CLOSE_ARRAY else b"}"
                continue
            text = True
            if code >= T_SMALL_STRING:
                e = &table.e[code - T_SMALL_STRING]
                s, size = d + e.off, e.size
            elif code == T_STRING:
                pos = _varint(d, pos, n, &raw)
                e = &table.e[raw]
                s, size = d + e.off, e.size
            elif code == T_NEW_STRING:
                pos = _varint(d, pos, n, &raw)
                s, size = d + pos, <Py_ssize_t>raw
                pos += size
            else:
                text = False
            elem = -1
            if depth:
                state = stack[depth - 1]
                if state == S_K0 or state == S_K1:
                    if state == S_K1:
                        out += b","
                    out += b'"' + (<const char*>s)[:size] + b'":'
                    stack[depth - 1] = S_V
                    continue
                if state == S_A0:
                    stack[depth - 1] = S_A1
                elif state == S_A1:
                    out += b","
                else:
                    stack[depth - 1] = S_K1
                if depth == 1 and state <= S_A1:
                    elem = top
                    top += 1
            if text:
                out += b'"' + (<const char*>s)[:size] + b'"'
            elif code == T_OPEN_ARRAY or code == T_OPEN_OBJECT:
                stack[depth] = S_A0 if code == T_OPEN_ARRAY else S_K0
                depth += 1
                out += b"[" if code == T_OPEN_ARRAY else b"{"
            elif code == T_NULL:
                out += b"null"
            elif code == T_TRUE:
                out += b"true"
            elif code == T_FALSE:
                out += b"false"
            elif code == T_NUMBER:
                pos = _varint(d, pos, n, &raw)
                out += (<const char*>d + pos)[:raw]
                pos += <Py_ssize_t>raw
            else:
                if code >= T_SMALL_INT:
                    value = code - T_SMALL_INT
                elif code == T_INT:
                    pos = _varint(d, pos, n, &raw)
                    value = <long long>((raw >> 1) ^ (0 - (raw & 1)))
                else:
                    if code == T_NEXT_SEQ:
                        delta = 1
                    else:
                        pos = _varint(d, pos, n, &raw)
                        delta = <long long>((raw >> 1) ^ (0 - (raw & 1)))
                    value = w.prev[code - T_NEXT_SEQ] + delta
                out += str(value).encode()
        return bytes(out)

    cdef tuple _row_of(self, Rec* r, Batch batch):
        """The record as the typed row the reference folds."""
        if r.slow >= 0:
            return batch.rows[r.slow]
        return (
            PyLong_FromLongLong(r.seq),
            PyLong_FromLongLong(r.t),
            <object>r.kind,
            <object>r.instrument,
            <object>r.account,
            _int_or_none(r, r.order_id, N_ORDER_ID),
            <object>r.side,
            _int_or_none(r, r.price, N_PRICE),
            _int_or_none(r, r.qty, N_QTY),
            _int_or_none(r, r.amount, N_AMOUNT),
            <object>r.counterparty,
            _int_or_none(r, r.counter_order_id, N_COUNTER_ORDER_ID),
        )

    # ------------------------------------------------------------------ folding
    def apply_batch(self, fold, Batch batch, Py_ssize_t start, Py_ssize_t stop):
        """Fold the events ``start..stop-1`` of ``batch`` into ``fold``."""
        cdef Py_ssize_t i
        cdef Rec* r
        if stop > batch.n:
            stop = batch.n
        self._load(fold)
        try:
            for i in range(start, stop):
                r = &batch.recs[i]
                if r.slow >= 0 or not self._fast(r):
                    self._cold(self._row_of(r, batch))
        finally:
            self._flush()
            self._release()

    def apply_rows(self, fold, rows):
        """Fold an iterable of rows (events, or tuples of their typed fields) into ``fold``.
        ``current`` is the last row taken (the one a failure is about)."""
        cdef Rec rec
        self.current = None
        self._load(fold)
        try:
            for row in rows:
                self.current = row
                if not self._rec_of(row, &rec) or not self._fast(&rec):
                    self._cold(row)
        finally:
            self._flush()
            self._release()
        self.current = None

    cdef bint _rec_of(self, object row, Rec* r) except -1:
        """The tuple ``row`` as a record, if every field has the type the compiled rules
        expect (else False: the row goes to Python as it is)."""
        cdef PyObject* item
        if not PyTuple_Check(row) or PyTuple_GET_SIZE(row) < 12:
            return False
        if not _small(<object>PyTuple_GET_ITEM(row, 0), &r.seq):
            return False
        if not _small(<object>PyTuple_GET_ITEM(row, 1), &r.t):
            return False
        item = PyTuple_GET_ITEM(row, 2)
        if not PyUnicode_CheckExact(<object>item):
            return False
        r.kind = item
        r.tag = self._code(<object>item)
        if not (_text_or_none(PyTuple_GET_ITEM(row, 3)) and _text_or_none(PyTuple_GET_ITEM(row, 4))
                and _text_or_none(PyTuple_GET_ITEM(row, 6))
                and _text_or_none(PyTuple_GET_ITEM(row, 10))):
            return False
        r.instrument = PyTuple_GET_ITEM(row, 3)
        r.account = PyTuple_GET_ITEM(row, 4)
        r.side = PyTuple_GET_ITEM(row, 6)
        r.counterparty = PyTuple_GET_ITEM(row, 10)
        r.nulls = 0
        r.slow = -1
        if not self._int_field(row, 5, &r.order_id, N_ORDER_ID, r):
            return False
        if not self._int_field(row, 7, &r.price, N_PRICE, r):
            return False
        if not self._int_field(row, 8, &r.qty, N_QTY, r):
            return False
        if not self._int_field(row, 9, &r.amount, N_AMOUNT, r):
            return False
        if not self._int_field(row, 11, &r.counter_order_id, N_COUNTER_ORDER_ID, r):
            return False
        return True

    cdef inline bint _int_field(self, object row, int i, long long* out, int bit, Rec* r):
        cdef PyObject* item = PyTuple_GET_ITEM(row, i)
        if item == <PyObject*>None:
            r.nulls |= bit
            return True
        return _small(<object>item, out)

    cdef int _load(self, fold) except -1:
        """Take the fold's state (its containers, seq) for the compiled rules."""
        cdef long long seq = 0
        self.fold = fold
        self.moved = False
        self.numbered = False
        self.ok = False
        self.hold = False
        cash, pools, books = fold.cash, fold.pools, fold.books
        positions, kinds, last_price = fold.positions, fold.kind, fold.last_price
        if not (PyDict_CheckExact(cash) and PyDict_CheckExact(pools)
                and PyDict_CheckExact(books) and PyDict_CheckExact(positions)
                and PyDict_CheckExact(kinds) and PyDict_CheckExact(last_price)):
            return 0
        if not _small(fold.seq, &seq):
            return 0
        self.cash, self.pools, self.books = cash, pools, books
        self.positions, self.kinds, self.last_price = positions, kinds, last_price
        self.seq = seq
        self.book_key = self.spot_key = NO_KEY
        self.book = None
        self.ok = True
        # held values are written to cash and pools at the end: no other container the rules
        # touch may be one of them (a forged state: nothing held, every rule on the dicts)
        self.hold = not (
            cash is pools or books is cash or books is pools or positions is cash
            or positions is pools or kinds is cash or kinds is pools or last_price is cash
            or last_price is pools
        )
        return 0

    cdef PyObject* _book(self, object instrument) except? NULL:
        """``books[instrument]`` if it is a dict (NULL if not, or absent, or the cash or pools
        dict: a forged state's, whose values may be held)."""
        if instrument is self.book_key:
            return <PyObject*>self.book
        cdef PyObject* found = PyDict_GetItem(self.books, instrument)
        if found == NULL or not PyDict_CheckExact(<object>found):
            return NULL
        if <object>found is self.cash or <object>found is self.pools:
            return NULL
        self.book_key = instrument
        self.book = <object>found
        return found

    cdef int _release(self) except -1:
        """Let go of the fold and its containers between calls (the fold holds the kernel)."""
        self.fold = None
        self.cash = self.pools = self.books = self.positions = self.kinds = None
        self.last_price = None
        self.book_key = self.book = self.spot_key = None
        self.ok = False
        self.hold = False
        return 0

    cdef int _flush(self) except -1:
        """Write back what C holds -- the held ledger (cash, the fee pool, the orders rested
        in the call), seq, t and next_order_id -- before a Python rule, and at the end of a
        call."""
        self._write_cash()
        self._write_orders()
        if self.moved:
            self.fold.seq = PyLong_FromLongLong(self.seq)
            self.fold.t = PyLong_FromLongLong(self.t)
            self.moved = False
        if self.numbered:
            self.fold.next_order_id = PyLong_FromLongLong(self.next_order_id)
            self.numbered = False
        return 0

    cdef int _cold(self, object row) except -1:
        """The reference's own ``apply`` of ``row`` (after writing back what C holds)."""
        self._flush()
        self.current = row
        self.fold.apply(*row)
        self._load(self.fold)
        return 0

    # ------------------------------------------------------------------ the held ledger
    # Within one call the values the hot rules move most are held in C (decision 92's held
    # ledger, for the fold): each account's cash and the fee pool as int64 slots (a slot also
    # holds the account's position in the last instrument a fill moved; the kernel, the last
    # price of one instrument), and each order that comes to rest in the call as an entry of
    # ``held`` (a cancel, an amend or a fill of it: no dict operation, no list). Cash, the
    # pool, positions and last prices are keys present before they are held, so writing them
    # back changes no key order; a held order's key is absent from its book when it comes to
    # rest, and every other insertion into a book is a Python rule's or a rest the held path
    # does not take, which write the held orders back first: so inserting the alive ones in
    # the order they came to rest gives each book the reference's key order. A value past
    # int64 is not held: its event runs the reference's rule (after the write-back).
    cdef Py_ssize_t _cash_slot(self, PyObject* account) except -2:
        """The held cash slot of ``account``, taken from ``cash`` the first time: -1 if it
        cannot be held (absent, not an exact int, past int64)."""
        cdef Py_ssize_t mask = self.alias_cap - 1
        cdef unsigned long long h = ((<unsigned long long><size_t>account) >> 4) * (
            0x9E3779B97F4A7C15ULL
        )
        cdef Py_ssize_t i = <Py_ssize_t>((h >> 32) & <unsigned long long>mask)
        cdef Alias* a
        while True:
            a = &self.alias[i]
            if a.key == account:
                return a.slot
            if a.key == NULL:
                break
            i = (i + 1) & mask
        # an address not seen: the same account by equality (another str object of it)?
        cdef PyObject* found = PyDict_GetItem(self.cash_index, <object>account)
        if found != NULL:
            return <Py_ssize_t><object>found
        found = PyDict_GetItem(self.cash, <object>account)
        cdef long long value = 0
        if found == NULL or not _small(<object>found, &value):
            return -1
        cdef Py_ssize_t slot = self.held_cash_n
        cdef HeldCash* grown
        if slot == self.held_cash_cap:
            grown = <HeldCash*>PyMem_Realloc(self.held_cash, 2 * slot * sizeof(HeldCash))
            if grown == NULL:
                raise MemoryError()
            self.held_cash = grown
            self.held_cash_cap = 2 * slot
        self.cash_index[<object>account] = slot
        _incref(account)
        self.held_cash[slot].account = account
        self.held_cash[slot].value = value
        self.held_cash[slot].pdict = NULL
        self.held_cash[slot].pkey = NULL
        self.held_cash_n += 1
        _incref(account)
        a.key = account
        a.slot = slot
        self.alias_n += 1
        if self.alias_n * 2 > self.alias_cap:
            self._grow_alias()
        return slot

    cdef int _grow_alias(self) except -1:
        cdef Py_ssize_t cap = self.alias_cap * 2, k, i
        cdef Alias* old = self.alias
        cdef Alias* table = <Alias*>PyMem_Calloc(cap, sizeof(Alias))
        cdef unsigned long long h
        if table == NULL:
            raise MemoryError()
        for k in range(self.alias_cap):
            if old[k].key == NULL:
                continue
            h = ((<unsigned long long><size_t>old[k].key) >> 4) * 0x9E3779B97F4A7C15ULL
            i = <Py_ssize_t>((h >> 32) & <unsigned long long>(cap - 1))
            while table[i].key != NULL:
                i = (i + 1) & (cap - 1)
            table[i] = old[k]
        self.alias = table
        self.alias_cap = cap
        PyMem_Free(old)
        return 0

    cdef int _write_cash(self) except -1:
        """Write the held cash and fee pool back to ``cash`` and ``pools``, and forget them."""
        cdef Py_ssize_t i
        cdef HeldCash* c
        if self.fees_held:
            self.fees_held = False
            PyDict_SetItem(self.pools, FEES, PyLong_FromLongLong(self.fees))
        self._write_last_price()
        if self.held_cash_n == 0:
            return 0
        cdef Py_ssize_t n = self.held_cash_n
        self.held_cash_n = 0
        try:
            for i in range(n):
                c = &self.held_cash[i]
                PyDict_SetItem(self.cash, <object>c.account, PyLong_FromLongLong(c.value))
                if c.pkey != NULL:
                    self._write_position(c)
        finally:
            for i in range(n):
                c = &self.held_cash[i]
                _decref(c.account)
                if c.pkey != NULL:
                    _decref(c.pkey)
                    c.pkey = NULL
                if c.pdict != NULL:
                    _decref(c.pdict)
                    c.pdict = NULL
            self.position_dicts.clear()
            for i in range(self.alias_cap):
                if self.alias[i].key != NULL:
                    _decref(self.alias[i].key)
                    self.alias[i].key = NULL
            self.alias_n = 0
            self.cash_index.clear()
        return 0

    cdef inline Py_ssize_t _order_pos(self, PyObject* book, long long order_id) noexcept:
        """Where ``(book, order_id)`` is, or would go, in ``held_index``."""
        cdef Py_ssize_t mask = self.held_index_cap - 1
        cdef unsigned long long h = (<unsigned long long>order_id * 0x9E3779B97F4A7C15ULL) ^ (
            ((<unsigned long long><size_t>book) >> 4) * 0xC2B2AE3D27D4EB4FULL
        )
        cdef Py_ssize_t i = <Py_ssize_t>((h >> 29) & <unsigned long long>mask)
        cdef Py_ssize_t k
        while True:
            k = self.held_index[i]
            if k < 0 or (self.held[k].order_id == order_id and self.held[k].book == book):
                return i
            i = (i + 1) & mask

    cdef inline Py_ssize_t _held_order(self, PyObject* book, Rec* r, long long order_id,
                                       int bit) noexcept:
        """The alive held entry of ``book``'s order ``order_id`` (-1: none; the id null)."""
        if self.held_n == 0 or r.nulls & bit:
            return -1
        cdef Py_ssize_t k = self.held_index[self._order_pos(book, order_id)]
        if k < 0 or not self.held[k].alive:
            return -1
        return k

    cdef int _hold_order(self, PyObject* book, Rec* r) except -1:
        """``r``'s order (its id absent from ``book`` and from ``held``) held as a new entry."""
        cdef int b
        for b in range(self.held_books_n):
            if self.held_books[b] == book:
                break
        else:
            if self.held_books_n == MAX_HELD_BOOKS:
                self._write_orders()
            self.held_books[self.held_books_n] = book
            self.held_books_n += 1
        cdef Held* grown
        if self.held_n == self.held_cap:
            grown = <Held*>PyMem_Realloc(self.held, 2 * self.held_cap * sizeof(Held))
            if grown == NULL:
                raise MemoryError()
            self.held = grown
            self.held_cap *= 2
        cdef Py_ssize_t pos = self._order_pos(book, r.order_id)
        cdef Held* e = &self.held[self.held_n]
        _incref(book)
        _incref(r.side)
        _incref(r.account)
        e.book = book
        e.side = r.side
        e.account = r.account
        e.order_id = r.order_id
        e.price = r.price
        e.qty = r.qty
        e.seq = r.seq
        e.alive = True
        if self.held_index[pos] < 0:
            self.held_index_n += 1
        self.held_index[pos] = self.held_n
        self.held_n += 1
        if self.held_index_n * 2 > self.held_index_cap:
            self._grow_index()
        return 0

    cdef int _grow_index(self) except -1:
        cdef Py_ssize_t cap = self.held_index_cap * 2, k
        cdef Py_ssize_t* index = <Py_ssize_t*>PyMem_Malloc(cap * sizeof(Py_ssize_t))
        if index == NULL:
            raise MemoryError()
        for k in range(cap):
            index[k] = -1
        PyMem_Free(self.held_index)
        self.held_index = index
        self.held_index_cap = cap
        for k in range(self.held_n):  # in order: a key's latest entry last
            index[self._order_pos(self.held[k].book, self.held[k].order_id)] = k
        return 0

    cdef int _write_orders(self) except -1:
        """Insert the held orders still alive into their books, in the order they came to
        rest (``[side, price, account, qty, seq]``, the reference's list), and forget them."""
        if self.held_n == 0:
            self.held_books_n = 0
            return 0
        cdef Py_ssize_t n = self.held_n, i
        cdef Held* e
        cdef list order
        cdef Py_ssize_t* index
        self.held_n = 0
        self.held_books_n = 0
        try:
            for i in range(n):
                e = &self.held[i]
                if not e.alive:
                    continue
                order = PyList_New(5)
                _incref(e.side)
                PyList_SET_ITEM(order, 0, <object>e.side)
                item = PyLong_FromLongLong(e.price)
                Py_INCREF(item)
                PyList_SET_ITEM(order, 1, item)
                _incref(e.account)
                PyList_SET_ITEM(order, 2, <object>e.account)
                item = PyLong_FromLongLong(e.qty)
                Py_INCREF(item)
                PyList_SET_ITEM(order, 3, item)
                item = PyLong_FromLongLong(e.seq)
                Py_INCREF(item)
                PyList_SET_ITEM(order, 4, item)
                PyDict_SetItem(<dict>e.book, PyLong_FromLongLong(e.order_id), order)
        finally:
            for i in range(n):
                e = &self.held[i]
                _decref(e.book)
                _decref(e.side)
                _decref(e.account)
            self.held_index_n = 0
            if self.held_index_cap > 4096:  # (a call's many orders: not cleared at each flush)
                index = <Py_ssize_t*>PyMem_Realloc(self.held_index, 4096 * sizeof(Py_ssize_t))
                if index != NULL:
                    self.held_index = index
                    self.held_index_cap = 4096
            memset(self.held_index, 0xFF, self.held_index_cap * sizeof(Py_ssize_t))  # all -1
        return 0

    cdef bint _fast(self, Rec* r) except -1:
        """Fold ``r`` with its compiled rule; False (nothing changed) if it has none or a
        condition of it does not hold."""
        cdef int done
        if not self.ok or r.seq != self.seq + 1:
            return False
        cdef int tag = r.tag
        if tag == K_NOOP:
            done = 1
        elif tag == K_FEE:
            done = self._fee(r)
        elif tag == K_RESTED:
            done = self._rested(r)
        elif tag == K_NUMBERED:
            if r.nulls & N_ORDER_ID or r.order_id == 0x7FFFFFFFFFFFFFFF:
                return False
            self.next_order_id = r.order_id + 1
            self.numbered = True
            done = 1
        elif tag == K_CANCELLED:
            done = self._cancelled(r)
        elif tag == K_FILL:
            done = self._fill(r)
        elif tag == K_AMENDED:
            done = self._amended(r)
        elif tag == K_DEPOSIT or tag == K_WITHDRAWAL:
            done = self._deposit(r, tag == K_DEPOSIT)
        else:
            return False
        if not done:
            return False
        self.seq = r.seq
        self.t = r.t
        self.moved = True
        return True

    # ------------------------------------------------------------------ the rules
    # Each: 0 if a condition does not hold (nothing changed), 1 once folded.
    cdef int _fee(self, Rec* r) except -1:
        # cash[account] += amount; pools["fees"] -= amount
        if r.nulls & N_AMOUNT:
            return 0
        cdef object account = <object>r.account
        cdef PyObject* cash
        cdef PyObject* pool
        cdef Py_ssize_t slot
        cdef long long new_cash, new_fees
        if self.hold:
            slot = self._cash_slot(r.account)
            if slot < 0:
                return 0
            if not self.fees_held:
                pool = PyDict_GetItem(self.pools, FEES)
                if pool == NULL or not _small(<object>pool, &self.fees):
                    return 0
                self.fees_held = True
            if __builtin_saddll_overflow(self.held_cash[slot].value, r.amount, &new_cash):
                return 0
            if __builtin_ssubll_overflow(self.fees, r.amount, &new_fees):
                return 0
            self.held_cash[slot].value = new_cash
            self.fees = new_fees
            return 1
        cash = PyDict_GetItem(self.cash, account)
        pool = PyDict_GetItem(self.pools, FEES)
        if cash == NULL or pool == NULL:
            return 0
        if not PyLong_CheckExact(<object>cash) or not PyLong_CheckExact(<object>pool):
            return 0
        PyDict_SetItem(self.cash, account, _plus(<object>cash, r.amount))
        pool = PyDict_GetItem(self.pools, FEES)  # the same dict as cash in a forged state
        PyDict_SetItem(self.pools, FEES, _minus(<object>pool, r.amount))
        return 1

    cdef int _deposit(self, Rec* r, bint deposit) except -1:
        # cash[account] += amount; deposited += amount (withdrawn -= amount)
        if r.nulls & N_AMOUNT:
            return 0
        cdef object account = <object>r.account
        cdef PyObject* cash = NULL
        cdef Py_ssize_t slot = -1
        cdef long long new_cash = 0
        if self.hold:
            slot = self._cash_slot(r.account)
            if slot < 0 or __builtin_saddll_overflow(
                self.held_cash[slot].value, r.amount, &new_cash
            ):
                return 0
        else:
            cash = PyDict_GetItem(self.cash, account)
            if cash == NULL or not PyLong_CheckExact(<object>cash):
                return 0
        total = self.fold.deposited if deposit else self.fold.withdrawn
        if not PyLong_CheckExact(total):
            return 0
        if slot >= 0:
            self.held_cash[slot].value = new_cash
        else:
            PyDict_SetItem(self.cash, account, _plus(<object>cash, r.amount))
        if deposit:
            self.fold.deposited = _plus(total, r.amount)
        else:
            self.fold.withdrawn = _minus(total, r.amount)
        return 1

    cdef int _rested(self, Rec* r) except -1:
        # books[instrument][order_id] = [side, price, account, qty, seq]
        cdef PyObject* book = self._book(<object>r.instrument)
        if book == NULL:
            return 0
        cdef Py_ssize_t k
        cdef Held* e
        if self.hold and not r.nulls & (N_ORDER_ID | N_PRICE | N_QTY):
            k = self._held_order(book, r, r.order_id, N_ORDER_ID)
            if k >= 0:  # a held order rested again: its value replaced, its place kept
                e = &self.held[k]
                _incref(r.side)
                _decref(e.side)
                e.side = r.side
                _incref(r.account)
                _decref(e.account)
                e.account = r.account
                e.price = r.price
                e.qty = r.qty
                e.seq = r.seq
                return 1
            if PyDict_GetItem(<dict>book, PyLong_FromLongLong(r.order_id)) == NULL:
                self._hold_order(book, r)
                return 1
            # in the book already: its value replaced in place, below
        else:
            # an insertion the held path does not take: after the held ones
            self._write_orders()
        cdef list order = PyList_New(5)
        cdef object item = <object>r.side
        Py_INCREF(item)
        PyList_SET_ITEM(order, 0, item)
        item = _int_or_none(r, r.price, N_PRICE)
        Py_INCREF(item)
        PyList_SET_ITEM(order, 1, item)
        item = <object>r.account
        Py_INCREF(item)
        PyList_SET_ITEM(order, 2, item)
        item = _int_or_none(r, r.qty, N_QTY)
        Py_INCREF(item)
        PyList_SET_ITEM(order, 3, item)
        item = PyLong_FromLongLong(r.seq)
        Py_INCREF(item)
        PyList_SET_ITEM(order, 4, item)
        PyDict_SetItem(<dict>book, _int_or_none(r, r.order_id, N_ORDER_ID), order)
        return 1

    cdef int _cancelled(self, Rec* r) except -1:
        # books[instrument].pop(order_id, None)
        cdef PyObject* book = self._book(<object>r.instrument)
        if book == NULL:
            return 0
        cdef Py_ssize_t k = self._held_order(book, r, r.order_id, N_ORDER_ID)
        if k >= 0:
            self.held[k].alive = False
            return 1
        key = _int_or_none(r, r.order_id, N_ORDER_ID)
        if PyDict_GetItem(<dict>book, key) != NULL:
            PyDict_DelItem(<dict>book, key)
        return 1

    cdef int _amended(self, Rec* r) except -1:
        # order = books[instrument][order_id]; price == order[1] and qty <= order[3]:
        # order[3] = qty, else del
        if r.nulls & (N_PRICE | N_QTY):
            return 0
        cdef PyObject* book = self._book(<object>r.instrument)
        if book == NULL:
            return 0
        cdef Py_ssize_t k = self._held_order(book, r, r.order_id, N_ORDER_ID)
        cdef Held* e
        if k >= 0:
            e = &self.held[k]
            if r.price == e.price and r.qty <= e.qty:
                e.qty = r.qty
            else:
                e.alive = False
            return 1
        key = _int_or_none(r, r.order_id, N_ORDER_ID)
        cdef PyObject* found = PyDict_GetItem(<dict>book, key)
        if found == NULL or not PyList_CheckExact(<object>found) or PyList_GET_SIZE(
            <object>found
        ) < 4:
            return 0
        cdef list order = <list>found
        cdef long long price = 0, qty = 0
        if not _small(order[1], &price) or not _small(order[3], &qty):
            return 0
        if r.price == price and r.qty <= qty:
            order[3] = PyLong_FromLongLong(r.qty)
        else:
            PyDict_DelItem(<dict>book, key)
        return 1

    cdef int _fill(self, Rec* r) except -1:
        # a spot fill (other kinds: the Python rule): cash, positions by the taker's side,
        # last price, qty off the maker's resting order (see Fold._fill and Fold._move)
        if r.nulls & (N_QTY | N_AMOUNT) or r.qty == -0x7FFFFFFFFFFFFFFF - 1:
            return 0
        if self.hold:
            return self._fill_held(r)
        cdef object instrument = <object>r.instrument
        cdef object account = <object>r.account
        cdef object maker = <object>r.counterparty
        cdef PyObject* item = PyDict_GetItem(self.cash, account)
        if item == NULL or not PyLong_CheckExact(<object>item):
            return 0
        item = PyDict_GetItem(self.cash, maker)
        if item == NULL or not PyLong_CheckExact(<object>item):
            return 0
        if instrument is not self.spot_key:
            item = PyDict_GetItem(self.kinds, instrument)
            if item == NULL or not PyUnicode_CheckExact(<object>item) or <object>item != SPOT:
                return 0
            self.spot_key = instrument
        cdef PyObject* taker_positions = PyDict_GetItem(self.positions, account)
        cdef PyObject* maker_positions = PyDict_GetItem(self.positions, maker)
        if taker_positions == NULL or not PyDict_CheckExact(<object>taker_positions):
            return 0
        if maker_positions == NULL or not PyDict_CheckExact(<object>maker_positions):
            return 0
        item = PyDict_GetItem(<dict>taker_positions, instrument)
        if item != NULL and not PyLong_CheckExact(<object>item):
            return 0
        item = PyDict_GetItem(<dict>maker_positions, instrument)
        if item != NULL and not PyLong_CheckExact(<object>item):
            return 0
        cdef PyObject* book = self._book(instrument)
        if book == NULL:
            return 0
        maker_order = _int_or_none(r, r.counter_order_id, N_COUNTER_ORDER_ID)
        cdef PyObject* found = PyDict_GetItem(<dict>book, maker_order)
        if found == NULL or not PyList_CheckExact(<object>found) or PyList_GET_SIZE(
            <object>found
        ) < 4:
            return 0
        cdef list order = <list>found
        if not PyLong_CheckExact(order[3]):
            return 0
        # every condition holds: the reference's steps, in its order
        cdef long long delta = r.qty
        if not (PyUnicode_CheckExact(<object>r.side) and <object>r.side == BUY):
            delta = -r.qty
        cdef dict cash = self.cash
        PyDict_SetItem(cash, account, _plus(<object>PyDict_GetItem(cash, account), r.amount))
        PyDict_SetItem(cash, maker, _minus(<object>PyDict_GetItem(cash, maker), r.amount))
        cdef dict positions = <dict>taker_positions
        item = PyDict_GetItem(positions, instrument)
        PyDict_SetItem(
            positions, instrument, _plus(ZERO if item == NULL else <object>item, delta)
        )
        positions = <dict>maker_positions
        item = PyDict_GetItem(positions, instrument)
        PyDict_SetItem(
            positions, instrument, _minus(ZERO if item == NULL else <object>item, delta)
        )
        PyDict_SetItem(self.last_price, instrument, _int_or_none(r, r.price, N_PRICE))
        left = _minus(order[3], r.qty)
        order[3] = left
        if PyObject_RichCompareBool(left, ZERO, Py_EQ):
            PyDict_DelItem(<dict>book, maker_order)
        return 1

    cdef int _fill_held(self, Rec* r) except -1:
        # _fill on the held ledger: both cashes, both positions and the last price held (the
        # keys present already: a position's first fill, a last price never set, go to
        # Python), the maker's order held or in its book
        cdef PyObject* instrument = r.instrument
        cdef Py_ssize_t taker = self._cash_slot(r.account)
        if taker < 0:
            return 0
        cdef Py_ssize_t maker = self._cash_slot(r.counterparty)
        if maker < 0:
            return 0
        cdef PyObject* item
        if <object>instrument is not self.spot_key:
            item = PyDict_GetItem(self.kinds, <object>instrument)
            if item == NULL or not PyUnicode_CheckExact(<object>item) or <object>item != SPOT:
                return 0
            self.spot_key = <object>instrument
        cdef PyObject* book = self._book(<object>instrument)
        if book == NULL:
            return 0
        if not (self._hold_position(taker, instrument) and self._hold_position(maker, instrument)
                and self._hold_last_price(instrument)):
            return 0
        cdef Py_ssize_t k = self._held_order(book, r, r.counter_order_id, N_COUNTER_ORDER_ID)
        cdef long long left = 0
        cdef list order = None
        maker_order = None
        cdef PyObject* found
        if k >= 0:
            if __builtin_ssubll_overflow(self.held[k].qty, r.qty, &left):
                return 0
        else:
            maker_order = _int_or_none(r, r.counter_order_id, N_COUNTER_ORDER_ID)
            found = PyDict_GetItem(<dict>book, maker_order)
            if found == NULL or not PyList_CheckExact(<object>found) or PyList_GET_SIZE(
                <object>found
            ) < 4:
                return 0
            order = <list>found
            if not PyLong_CheckExact(order[3]):
                return 0
        cdef long long delta = r.qty
        if not (PyUnicode_CheckExact(<object>r.side) and <object>r.side == BUY):
            delta = -r.qty
        # the new values (the taker's first, then the maker's: one slot if they are one)
        cdef HeldCash* t = &self.held_cash[taker]
        cdef HeldCash* m = &self.held_cash[maker]
        cdef long long taker_cash, maker_cash, taker_pos, maker_pos
        if __builtin_saddll_overflow(t.value, r.amount, &taker_cash):
            return 0
        if __builtin_ssubll_overflow(
            taker_cash if maker == taker else m.value, r.amount, &maker_cash
        ):
            return 0
        if __builtin_saddll_overflow(t.pos, delta, &taker_pos):
            return 0
        if __builtin_ssubll_overflow(taker_pos if maker == taker else m.pos, delta, &maker_pos):
            return 0
        # every condition holds: the reference's steps
        t.value = taker_cash
        m.value = maker_cash
        t.pos = taker_pos
        m.pos = maker_pos
        self.price_null = r.nulls & N_PRICE
        self.price = r.price
        self.price_set = True
        if k >= 0:
            self.held[k].qty = left
            if left == 0:
                self.held[k].alive = False
            return 1
        left_ = _minus(order[3], r.qty)
        order[3] = left_
        if PyObject_RichCompareBool(left_, ZERO, Py_EQ):
            PyDict_DelItem(<dict>book, maker_order)
        return 1

    cdef bint _hold_position(self, Py_ssize_t slot, PyObject* instrument) except -1:
        """Hold the position in ``instrument`` of the account of cash ``slot`` (a slot holds
        one instrument's at a time: another's is written back first). False if it cannot
        be held: the account's positions not a dict of its own, the key absent (its first
        fill inserts it: the Python rule's), the value not an int64."""
        cdef HeldCash* c = &self.held_cash[slot]
        if c.pkey == instrument:
            return True
        cdef PyObject* d
        if c.pkey != NULL:
            self._write_position(c)
        if c.pdict == NULL:
            d = PyDict_GetItem(self.positions, <object>c.account)
            if d == NULL or not PyDict_CheckExact(<object>d):
                return False
            if (<object>d is self.cash or <object>d is self.pools or <object>d is self.positions
                    or <object>d is self.last_price):
                return False  # a forged state's
            if PyDict_GetItem(self.position_dicts, id(<object>d)) != NULL:
                return False  # another account's too (forged): one slot per dict
            self.position_dicts[id(<object>d)] = slot
            _incref(d)
            c.pdict = d
        cdef PyObject* value = PyDict_GetItem(<dict>c.pdict, <object>instrument)
        if value == NULL or not _small(<object>value, &c.pos):
            return False
        _incref(instrument)
        c.pkey = instrument
        return True

    cdef int _write_position(self, HeldCash* c) except -1:
        cdef PyObject* key = c.pkey
        c.pkey = NULL
        try:
            PyDict_SetItem(<dict>c.pdict, <object>key, PyLong_FromLongLong(c.pos))
        finally:
            _decref(key)
        return 0

    cdef bint _hold_last_price(self, PyObject* instrument) except -1:
        """Hold ``last_price[instrument]`` (another instrument's written back first); False if
        the key is absent (set first by the Python rule)."""
        if self.price_key == instrument:
            return True
        self._write_last_price()
        if PyDict_GetItem(self.last_price, <object>instrument) == NULL:
            return False
        _incref(instrument)
        self.price_key = instrument
        self.price_null = True
        self.price = 0
        self.price_set = False
        return True

    cdef int _write_last_price(self) except -1:
        cdef PyObject* key = self.price_key
        if key == NULL:
            return 0
        self.price_key = NULL
        try:
            if self.price_set:
                PyDict_SetItem(
                    self.last_price, <object>key,
                    None if self.price_null else PyLong_FromLongLong(self.price),
                )
        finally:
            _decref(key)
        return 0
