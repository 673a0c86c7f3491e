# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compact stored form of a batch in C: :func:`compact` and :func:`expand`, the twins of
``exchange.store.compact``'s ``compact_reference`` and ``expand_reference`` (the module's
docstring is the format's specification; differential tests hold the twins byte-identical).

Both loops run without the GIL (the journaller compacts on its committing thread while its
main thread folds). The encoder: ``memchr`` finds each line's end, and the ``\\n`` there is
a sentinel every scan stops at (a string's control byte, a number's non-digit), so no scan
needs a bound of its own. A line with 16 bytes of the blob after it goes first to a fast
path for the lines the kernel writes (recursive descent, no bounds checks, a string under 16
bytes without escapes found from its 16 bytes, read at once, in a direct-mapped cache before
the table); anything unusual there is given back to the general tokenizer (a state machine
over any JSON line; strings scanned 8 bytes at a time). Strings are looked up in an
open-addressing hash table over the blob's own bytes (no copies); a line the tokenizer does
not take is rolled back (its output and its new strings, removed from the hash table newest
first) and written raw. The decoder checks every length and index against what
is left before it reads, keeps the container stack and the string table in C arrays, and
writes the blob straight into the ``bytes`` it returns.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy, memmove, memset


cdef extern from *:
    """
    #define gpuex_likely(x) __builtin_expect(!!(x), 1)
    /* The decoder's scratch buffer, kept between calls: a fresh block a call, larger than
       glibc's mmap threshold, would be mapped and faulted in page by page every time (half
       the decoder's time). Taken (under the GIL) by the call that decodes into it, given
       back (under the GIL) after; a call that finds it taken, by another thread decoding
       without the GIL, allocates its own. One buffer at most is kept, whatever the threads. */
    static unsigned char* gpuex_scratch = NULL;
    static Py_ssize_t gpuex_scratch_cap = 0;
    static unsigned char* gpuex_scratch_take(Py_ssize_t* cap) {
        unsigned char* p = gpuex_scratch;
        *cap = gpuex_scratch_cap;
        gpuex_scratch = NULL;
        gpuex_scratch_cap = 0;
        return p;
    }
    static void gpuex_scratch_give(unsigned char* p, Py_ssize_t cap, Py_ssize_t keep) {
        if (cap > keep || gpuex_scratch != NULL) { free(p); return; }
        gpuex_scratch = p;
        gpuex_scratch_cap = cap;
    }
    """
    uchar* _scratch_take "gpuex_scratch_take"(Py_ssize_t* cap)  # (with the GIL)
    void _scratch_give "gpuex_scratch_give"(uchar* p, Py_ssize_t cap, Py_ssize_t keep)
    bint __builtin_saddll_overflow(long long a, long long b, long long* out) nogil
    int __builtin_ctzll(unsigned long long x) nogil
    bint likely "gpuex_likely"(bint x) nogil

cdef enum:
    MAX_DEPTH = 1024  # compact.MAX_DEPTH
    SHORT_SLOTS = 512  # the short-string cache's slots (a power of two)
    SHORT_SHIFT = 55  # 64 - log2(SHORT_SLOTS)
    FAST_DEPTH = 32  # the fast path's deepest nesting (deeper: the general tokenizer)
    # the fast path's results: a position (>= 0), or
    FAST_BAIL = -1  # not a line the fast path takes: the general tokenizer decides
    FAST_MEMORY = -2  # out of memory
    SCRATCH_KEEP = 16 << 20  # the largest scratch buffer kept between calls (bytes)
    # token codes (compact's module docstring)
    C_END = 0x00
    C_OPEN_ARRAY = 0x01
    C_CLOSE_ARRAY = 0x02
    C_OPEN_OBJECT = 0x03
    C_CLOSE_OBJECT = 0x04
    C_NULL = 0x05
    C_TRUE = 0x06
    C_FALSE = 0x07
    C_INT = 0x08
    C_NUMBER = 0x09
    C_NEW_STRING = 0x0A
    C_STRING = 0x0B
    C_NEXT_SEQ = 0x0C
    C_DELTA_T = 0x0D
    C_RAW_LINE = 0x0E
    C_SMALL_INT = 0x10
    C_SMALL_INT_END = 0x60
    C_SMALL_STRING = 0x80
    # the decoder's container states (compact._A0 .. _V)
    S_A0 = 0
    S_A1 = 1
    S_K0 = 2
    S_K1 = 3
    S_V = 4
    # the encoder's expectations
    E_VALUE = 0
    E_VALUE_OR_CLOSE = 1
    E_KEY = 2
    E_KEY_OR_CLOSE = 3
    E_AFTER = 4

#: The decoder's refusals (their messages: ERRORS).
cdef enum:
    OK = 0
    ERR_MEMORY = 1
    ERR_TRUNCATED = 2
    ERR_VARINT_OVERFLOW = 3
    ERR_VARINT_LONG = 4
    ERR_CODE = 5
    ERR_INDEX = 6
    ERR_END = 7
    ERR_RAW_PLACE = 8
    ERR_RAW_NEWLINE = 9
    ERR_CLOSE = 10
    ERR_SECOND = 11
    ERR_KEY = 12
    ERR_DEPTH = 13
    ERR_NUMBER = 14
    ERR_CONTENT = 15
    ERR_PLACE = 16
    ERR_INT64 = 17
    ERR_UNFINISHED = 18
    ERR_EMPTY = 19

ERRORS = {
    ERR_TRUNCATED: "truncated token",
    ERR_VARINT_OVERFLOW: "varint overflows 64 bits",
    ERR_VARINT_LONG: "varint not minimal",
    ERR_CODE: "unknown code",
    ERR_INDEX: "string index past the table",
    ERR_END: "end of line inside a value",
    ERR_RAW_PLACE: "raw line inside a line",
    ERR_RAW_NEWLINE: "raw line holding a newline",
    ERR_CLOSE: "unbalanced close",
    ERR_SECOND: "second value on a line",
    ERR_KEY: "key not a string",
    ERR_DEPTH: "nesting past 1024",
    ERR_NUMBER: "raw number not written by the encoder",
    ERR_CONTENT: "string content not JSON",
    ERR_PLACE: "seq/t code out of place",
    ERR_INT64: "int past int64",
}

# Byte classes. STRING_CLASS: 0 a plain content byte, 1 '"', 2 '\\', 3 a control byte (< 0x20,
# the line's '\n' sentinel among them). ESCAPE: the bytes after '\\' that stand alone.
cdef uchar STRING_CLASS[256]
cdef uchar HEX[256]
cdef uchar ESCAPE[256]
cdef uchar DIGIT[256]
cdef char PAIRS[200]
cdef uint64_t POW10[20]


cdef void _init_tables():
    cdef int i
    for i in range(256):
        STRING_CLASS[i] = 3 if i < 0x20 else 0
        HEX[i] = (48 <= i <= 57) or (65 <= i <= 70) or (97 <= i <= 102)
        DIGIT[i] = 48 <= i <= 57
        ESCAPE[i] = 0
    STRING_CLASS[34] = 1
    STRING_CLASS[92] = 2
    for i in b'"\\/bfnrt':
        ESCAPE[i] = 1
    for i in range(100):
        PAIRS[2 * i] = 48 + i // 10
        PAIRS[2 * i + 1] = 48 + i % 10
    POW10[0] = 1
    for i in range(1, 20):
        POW10[i] = POW10[i - 1] * 10


_init_tables()


# -- growing buffers -----------------------------------------------------------------------

cdef struct Buf:
    uchar* p
    Py_ssize_t n
    Py_ssize_t cap


cdef int _grow(Buf* b, Py_ssize_t extra) noexcept nogil:
    cdef Py_ssize_t cap = b.cap * 2
    cdef uchar* q
    if cap < b.n + extra:
        cap = b.n + extra
    q = <uchar*>realloc(b.p, cap)
    if q == NULL:
        return -1
    b.p = q
    b.cap = cap
    return 0


cdef inline int _reserve(Buf* b, Py_ssize_t extra) noexcept nogil:
    if likely(b.n + extra <= b.cap):
        return 0
    return _grow(b, extra)


cdef inline uint64_t _zero_bytes(uint64_t v) noexcept nogil:
    """The top bit of each zero byte of ``v`` set (exact up to the lowest zero byte)."""
    return (v - 0x0101010101010101ULL) & ~v & 0x8080808080808080ULL


cdef inline Py_ssize_t _put_varint(uchar* o, uint64_t v) noexcept nogil:
    cdef Py_ssize_t i = 0
    while v >= 0x80:
        o[i] = <uchar>((v & 0x7F) | 0x80)
        v >>= 7
        i += 1
    o[i] = <uchar>v
    return i + 1


cdef inline uint64_t _zigzag(int64_t v) noexcept nogil:
    return (<uint64_t>v << 1) ^ <uint64_t>(v >> 63)


cdef inline int64_t _unzigzag(uint64_t z) noexcept nogil:
    return <int64_t>((z >> 1) ^ (0 - (z & 1)))


# -- the encoder's string table: entries in index order, an open-addressing index ------------

cdef struct Entry:
    const uchar* s
    Py_ssize_t n
    uint64_t h

cdef struct Cur:  # the fast path's place: a position in the blob, the output's end
    Py_ssize_t pos
    uchar* o

cdef struct Short:
    uint64_t k0  # the content's first 8 bytes (the bytes past its end zero)
    uint64_t k1  # its next 8 (zero past its end)
    Py_ssize_t index  # its entry (an empty slot: k1 all ones)

cdef struct Table:
    Entry* e
    Py_ssize_t count
    Py_ssize_t ecap
    uint32_t* slots  # entry index + 1; 0 = empty
    uint64_t mask
    const uchar* limit  # the blob's end: every string lies before it
    # the fast path's cache of strings under 16 bytes without escapes, direct-mapped by their
    # content (two words, exact: such content holds no zero byte, so the words fix its
    # length): a hit gives the index without hashing, probing or comparing bytes
    Short* shorts
    # _fast_string_rest, called through this pointer: the compiler cannot inline the cache's
    # miss into its hit, which stays small enough to inline where it is used
    Cur (*rest)(const uchar*, Py_ssize_t, uchar*, Table*) noexcept nogil


cdef inline uint64_t _word(const uchar* s) noexcept nogil:
    cdef uint64_t w
    memcpy(&w, s, 8)
    return w


cdef inline uint64_t _tail(const uchar* s, Py_ssize_t n, const uchar* limit) noexcept nogil:
    """The ``n`` < 8 bytes at ``s`` as a word's low bytes (the others zero): one load, masked,
    where 8 bytes are left before ``limit`` (a string near the blob's end: byte by byte)."""
    cdef uint64_t w = 0
    cdef Py_ssize_t i
    if likely(s + 8 <= limit):
        return _word(s) & ((1ULL << (8 * n)) - 1)
    for i in range(n):
        w |= (<uint64_t>s[i]) << (8 * i)
    return w


cdef inline uint64_t _hash(const uchar* s, Py_ssize_t n, const uchar* limit) noexcept nogil:
    cdef uint64_t h = <uint64_t>n * 0x9E3779B97F4A7C15ULL
    while n >= 8:
        h = (h ^ _word(s)) * 0x9FB21C651E98DF25ULL
        h ^= h >> 29
        s += 8
        n -= 8
    h = (h ^ _tail(s, n, limit)) * 0x9FB21C651E98DF25ULL
    return h ^ (h >> 32)


cdef inline bint _same(const uchar* a, const uchar* b, Py_ssize_t n, const uchar* limit) noexcept nogil:
    """Whether ``a[:n] == b[:n]`` (short strings: no call to ``memcmp``)."""
    while n >= 8:
        if _word(a) != _word(b):
            return False
        a += 8
        b += 8
        n -= 8
    return _tail(a, n, limit) == _tail(b, n, limit)


cdef int _table_init(Table* t) noexcept nogil:
    t.count = 0
    t.ecap = 256
    t.mask = 511
    t.e = <Entry*>malloc(t.ecap * sizeof(Entry))
    t.slots = <uint32_t*>malloc((t.mask + 1) * sizeof(uint32_t))
    t.shorts = <Short*>malloc(SHORT_SLOTS * sizeof(Short))
    if t.e == NULL or t.slots == NULL or t.shorts == NULL:
        return -1
    cdef uint64_t i
    for i in range(t.mask + 1):
        t.slots[i] = 0
    _shorts_clear(t)
    t.rest = _fast_string_rest
    return 0


cdef void _shorts_clear(Table* t) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(SHORT_SLOTS):  # (k1 all ones: no short string's, whose last byte is 0)
        t.shorts[i].k0 = 0
        t.shorts[i].k1 = 0xFFFFFFFFFFFFFFFFULL
        t.shorts[i].index = -1


cdef void _table_free(Table* t) noexcept nogil:
    free(t.e)
    free(t.slots)
    free(t.shorts)


cdef int _rehash(Table* t) noexcept nogil:
    """Double the index, inserting the entries again in index order."""
    cdef uint64_t mask = t.mask * 2 + 1
    cdef uint32_t* slots = <uint32_t*>malloc((mask + 1) * sizeof(uint32_t))
    if slots == NULL:
        return -1
    cdef uint64_t i, j
    for i in range(mask + 1):
        slots[i] = 0
    for i in range(<uint64_t>t.count):
        j = t.e[i].h & mask
        while slots[j] != 0:
            j = (j + 1) & mask
        slots[j] = <uint32_t>(i + 1)
    free(t.slots)
    t.slots = slots
    t.mask = mask
    return 0


cdef inline Py_ssize_t _table_find(
    Table* t, const uchar* s, Py_ssize_t n, uint64_t* hash_out
) noexcept nogil:
    """The index of ``s`` in the table, or -1 (``hash_out``: its hash, for the insert)."""
    cdef uint64_t h = _hash(s, n, t.limit)
    cdef uint64_t j = h & t.mask
    cdef uint32_t v
    cdef Entry* e
    hash_out[0] = h
    while True:
        v = t.slots[j]
        if v == 0:
            return -1
        e = &t.e[v - 1]
        if e.h == h and e.n == n and _same(e.s, s, n, t.limit):
            return v - 1
        j = (j + 1) & t.mask


cdef int _table_add(Table* t, const uchar* s, Py_ssize_t n, uint64_t h) noexcept nogil:
    cdef Entry* e
    if t.count >= <Py_ssize_t>0x7FFFFFF0:
        return -1
    if (t.count + 1) * 2 > <Py_ssize_t>(t.mask + 1):
        if _rehash(t) < 0:
            return -1
    if t.count == t.ecap:
        e = <Entry*>realloc(t.e, t.ecap * 2 * sizeof(Entry))
        if e == NULL:
            return -1
        t.e = e
        t.ecap *= 2
    cdef uint64_t j = h & t.mask
    while t.slots[j] != 0:
        j = (j + 1) & t.mask
    t.slots[j] = <uint32_t>(t.count + 1)
    t.e[t.count].s = s
    t.e[t.count].n = n
    t.e[t.count].h = h
    t.count += 1
    return 0


cdef void _table_truncate(Table* t, Py_ssize_t count) noexcept nogil:
    """Remove the entries from ``count`` on, newest first: with linear probing, removing the
    newest entry leaves the index exactly as it was before that entry went in."""
    cdef uint64_t j
    if t.count > count:  # the short cache may name a removed entry: emptied
        _shorts_clear(t)
    while t.count > count:
        t.count -= 1
        j = t.e[t.count].h & t.mask
        while t.slots[j] != <uint32_t>(t.count + 1):
            j = (j + 1) & t.mask
        t.slots[j] = 0


# -- the encoder -------------------------------------------------------------------------------

cdef inline uchar* _put_int(uchar* o, int64_t v) noexcept nogil:
    if 0 <= v < C_SMALL_INT_END - C_SMALL_INT:
        o[0] = <uchar>(C_SMALL_INT + v)
        return o + 1
    o[0] = C_INT
    return o + 1 + _put_varint(o + 1, _zigzag(v))


cdef inline int _put_string(
    uchar** op, Table* t, const uchar* s, Py_ssize_t n
) noexcept nogil:
    """Write the string token of content ``s[:n]`` at ``op[0]`` (advanced past it): by index if
    the table holds it, else new (and added). -1 out of memory."""
    cdef uint64_t h
    cdef Py_ssize_t index = _table_find(t, s, n, &h)
    cdef uchar* o = op[0]
    if index >= 0:
        if index < 0x80:
            o[0] = <uchar>(C_SMALL_STRING + index)
            op[0] = o + 1
        else:
            o[0] = C_STRING
            op[0] = o + 1 + _put_varint(o + 1, <uint64_t>index)
        return 0
    if _table_add(t, s, n, h) < 0:
        return -1
    o[0] = C_NEW_STRING
    o += 1 + _put_varint(o + 1, <uint64_t>n)
    memcpy(o, s, n)
    op[0] = o + n
    return 0


cdef inline Py_ssize_t _scan_string(const uchar* p, Py_ssize_t pos, Py_ssize_t n) noexcept nogil:
    """The position of the closing quote of the string whose content starts at ``pos``, or -1
    if its content is not JSON (the line's '\\n' sentinel stops every scan; ``n``: the blob's
    length, bounding the 8-byte loads)."""
    cdef uchar k
    cdef uint64_t w, m
    while True:
        # plain bytes 8 at a time: a byte that is '"', '\\' or below 0x20 sets its top bit in m
        # (bits above the lowest true one may be false alarms: only the lowest is used)
        while pos + 8 <= n:
            w = _word(p + pos)
            m = (
                _zero_bytes(w ^ 0x2222222222222222ULL)
                | _zero_bytes(w ^ 0x5C5C5C5C5C5C5C5CULL)
                | ((w - 0x2020202020202020ULL) & ~w & 0x8080808080808080ULL)
            )
            if m:
                pos += __builtin_ctzll(m) >> 3
                break
            pos += 8
        k = STRING_CLASS[p[pos]]
        if likely(k == 0):
            pos += 1
            continue
        if k == 1:
            return pos
        if k == 3:
            return -1
        if ESCAPE[p[pos + 1]]:
            pos += 2
        elif p[pos + 1] == 117 and HEX[p[pos + 2]] and HEX[p[pos + 3]] and HEX[p[pos + 4]] and HEX[p[pos + 5]]:
            pos += 6
        else:
            return -1


cdef inline uchar _literal_at(const uchar* p, Py_ssize_t pos, Py_ssize_t end) noexcept nogil:
    """The code of the literal (``null``, ``true``, ``false``) whole in ``p[pos:end]``, 0 if
    there is none."""
    if end - pos >= 4 and memcmp(p + pos, b"null", 4) == 0:
        return C_NULL
    if end - pos >= 4 and memcmp(p + pos, b"true", 4) == 0:
        return C_TRUE
    if end - pos >= 5 and memcmp(p + pos, b"false", 5) == 0:
        return C_FALSE
    return 0


cdef int _encode_line(
    const uchar* p, Py_ssize_t pos, Py_ssize_t end, Buf* out, Table* t,
    int64_t* prev, bint* prev_ok, int64_t* cur, bint* cur_ok, uchar* stack,
) noexcept nogil:
    """Write the token stream of the line ``p[pos:end]`` (``p[end]`` is its '\\n') and its end
    code at ``out.p + out.n`` (room reserved by the caller): 1, or 0 if the tokenizer does not
    take the line (the caller rolls back), -1 out of memory."""
    cdef uchar* o = out.p + out.n
    cdef int depth = 0
    cdef int expect = E_VALUE
    cdef Py_ssize_t top_count = 0, elem, start, close, nd
    cdef uchar c, lit
    cdef uint64_t u
    cdef int64_t v = 0
    cdef long long d
    cdef bint neg, is_int
    cur_ok[0] = False
    cur_ok[1] = False
    while True:
        c = p[pos]
        if expect == E_AFTER:
            if depth == 0:
                if pos != end:
                    return 0
                o[0] = C_END
                out.n = o + 1 - out.p
                return 1
            if c == 44:  # ','
                pos += 1
                expect = E_KEY if stack[depth - 1] else E_VALUE
            elif c == (125 if stack[depth - 1] else 93):  # '}' / ']'
                pos += 1
                o[0] = C_CLOSE_OBJECT if stack[depth - 1] else C_CLOSE_ARRAY
                o += 1
                depth -= 1
            else:
                return 0
            continue
        if expect >= E_KEY:
            if c == 125 and expect == E_KEY_OR_CLOSE:  # '}'
                pos += 1
                o[0] = C_CLOSE_OBJECT
                o += 1
                depth -= 1
                expect = E_AFTER
                continue
            if c != 34:
                return 0
            close = _scan_string(p, pos + 1, t.limit - p)
            if close < 0 or p[close + 1] != 58:  # ':'
                return 0
            if _put_string(&o, t, p + pos + 1, close - pos - 1) < 0:
                return -1
            pos = close + 2
            expect = E_VALUE
            continue
        if c == 93 and expect == E_VALUE_OR_CLOSE:  # ']'
            pos += 1
            o[0] = C_CLOSE_ARRAY
            o += 1
            depth -= 1
            expect = E_AFTER
            continue
        elem = -1
        if depth == 1 and stack[0] == 0:
            elem = top_count
            top_count += 1
        expect = E_AFTER
        if c == 34:  # '"'
            close = _scan_string(p, pos + 1, t.limit - p)
            if close < 0:
                return 0
            if _put_string(&o, t, p + pos + 1, close - pos - 1) < 0:
                return -1
            pos = close + 1
        elif c == 91 or c == 123:  # '[' '{'
            if depth >= MAX_DEPTH:
                return 0
            stack[depth] = c == 123
            depth += 1
            o[0] = C_OPEN_OBJECT if c == 123 else C_OPEN_ARRAY
            o += 1
            expect = E_KEY_OR_CLOSE if c == 123 else E_VALUE_OR_CLOSE
            pos += 1
        elif c == 110 or c == 116 or c == 102:  # null, true, false
            lit = _literal_at(p, pos, end)
            if lit == 0:
                return 0
            o[0] = lit
            o += 1
            pos += 5 if lit == C_FALSE else 4
        else:  # a number, as JSON defines it
            start = pos
            neg = c == 45
            if neg:
                pos += 1
            u = 0
            if p[pos] == 48:
                pos += 1
            elif DIGIT[p[pos]]:
                while DIGIT[p[pos]]:
                    # (exact for the 19 digits uint64 holds; past them u wraps, unused: a raw number)
                    u = u * 10 + (p[pos] - 48)
                    pos += 1
            else:
                return 0
            nd = pos - start - neg
            is_int = True
            if p[pos] == 46:  # '.'
                pos += 1
                if not DIGIT[p[pos]]:
                    return 0
                while DIGIT[p[pos]]:
                    pos += 1
                is_int = False
            if p[pos] == 101 or p[pos] == 69:  # 'e' 'E'
                pos += 1
                if p[pos] == 43 or p[pos] == 45:
                    pos += 1
                if not DIGIT[p[pos]]:
                    return 0
                while DIGIT[p[pos]]:
                    pos += 1
                is_int = False
            if is_int and nd <= 19 and not (neg and nd == 1 and p[start + 1] == 48):
                if neg:
                    is_int = u <= 9223372036854775808ULL
                    v = <int64_t>(0 - u)
                else:
                    is_int = u <= 9223372036854775807ULL
                    v = <int64_t>u
            else:
                is_int = False
            if not is_int:
                o[0] = C_NUMBER
                o += 1 + _put_varint(o + 1, <uint64_t>(pos - start))
                memcpy(o, p + start, pos - start)
                o += pos - start
            elif elem == 0:
                cur[0] = v
                cur_ok[0] = True
                if prev_ok[0] and prev[0] != 9223372036854775807LL and v == prev[0] + 1:
                    o[0] = C_NEXT_SEQ
                    o += 1
                else:
                    o = _put_int(o, v)
            elif elem == 1:
                cur[1] = v
                cur_ok[1] = True
                if prev_ok[1] and not __builtin_ssubll_overflow(v, prev[1], &d):
                    o[0] = C_DELTA_T
                    o += 1 + _put_varint(o + 1, _zigzag(d))
                else:
                    o = _put_int(o, v)
            else:
                o = _put_int(o, v)


# -- the encoder's fast path: the lines the kernel writes -------------------------------------
#
# A canonical event line (a top-level array of ints, strings, null, true, false and
# containers of them) is tokenized here by recursive descent: no state machine, no container
# stack, no bounds checks (the caller takes a line here only if 16 bytes past its '\n' are the
# blob's: every load of a scan that the '\n' stops is in bounds), strings under 16 bytes
# without escapes found in the short cache. Anything else (a raw number, an int of 19 digits,
# an escape, whitespace, nesting past FAST_DEPTH, malformed JSON) makes the fast path give up:
# its output and new strings are taken back and the general tokenizer (``_encode_line``)
# decides the line. For every line the fast path takes, both write the same tokens (the
# differential tests hold the pair to the reference). Its functions take the position and
# the output pointer by value and give both back (a Cur, returned in two registers): neither
# goes through memory between tokens.

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__SSE2__) && !defined(GPUEX_NO_SSE2)
    #include <emmintrin.h>
    static const unsigned char gpuex_keep[32] = {
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    /* The offset n of the first '"', '\\' or control byte (< 0x20) among s[0:16], 16 if
       none; k0, k1: s[0:n] as two little-endian words, the bytes from n on zero. Reads 16
       bytes at s. */
    static inline int gpuex_short_key(const unsigned char* s, uint64_t* k0, uint64_t* k1) {
        __m128i x = _mm_loadu_si128((const __m128i*)s);
        __m128i special = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8(0x22)),
                         _mm_cmpeq_epi8(x, _mm_set1_epi8(0x5C))),
            _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x1F)), x));
        int n = __builtin_ctz((unsigned)_mm_movemask_epi8(special) | 0x10000u);
        __m128i key = _mm_and_si128(x, _mm_loadu_si128((const __m128i*)(gpuex_keep + 16 - n)));
        *k0 = (uint64_t)_mm_cvtsi128_si64(key);
        *k1 = (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(key, key));
        return n;
    }
    #else
    /* The same, 8 bytes at a time (a byte that is special sets its top bit in m; bits above
       the lowest may be false alarms, only the lowest is used). */
    static inline uint64_t gpuex_specials(uint64_t w) {
        uint64_t q = w ^ 0x2222222222222222ULL, b = w ^ 0x5C5C5C5C5C5C5C5CULL;
        return ((q - 0x0101010101010101ULL) & ~q & 0x8080808080808080ULL)
            | ((b - 0x0101010101010101ULL) & ~b & 0x8080808080808080ULL)
            | ((w - 0x2020202020202020ULL) & ~w & 0x8080808080808080ULL);
    }
    static inline int gpuex_short_key(const unsigned char* s, uint64_t* k0, uint64_t* k1) {
        uint64_t w0, w1, m;
        int n;
        memcpy(&w0, s, 8);
        m = gpuex_specials(w0);
        if (m) {
            n = __builtin_ctzll(m) >> 3;
            *k0 = n ? w0 & (~0ULL >> (64 - 8 * n)) : 0;
            *k1 = 0;
            return n;
        }
        memcpy(&w1, s + 8, 8);
        m = gpuex_specials(w1);
        *k0 = w0;
        if (m) {
            n = __builtin_ctzll(m) >> 3;
            *k1 = n ? w1 & (~0ULL >> (64 - 8 * n)) : 0;
            return 8 + n;
        }
        *k1 = w1;
        return 16;
    }
    #endif
    """
    int _short_key "gpuex_short_key"(const uchar* s, uint64_t* k0, uint64_t* k1) nogil


cdef inline uchar* _put_index(uchar* o, Py_ssize_t index) noexcept nogil:
    """A string by index: ``0x80 + index`` below 128, else ``0x0B`` and a varint."""
    if index < 0x80:
        o[0] = <uchar>(C_SMALL_STRING + index)
        return o + 1
    o[0] = C_STRING
    return o + 1 + _put_varint(o + 1, <uint64_t>index)


cdef inline Cur _cur(Py_ssize_t pos, uchar* o) noexcept nogil:
    cdef Cur k
    k.pos = pos
    k.o = o
    return k


cdef inline uint64_t _short_slot(uint64_t k0, uint64_t k1) noexcept nogil:
    return ((k0 ^ ((k1 << 29) | (k1 >> 35))) * 0x9E3779B97F4A7C15ULL) >> SHORT_SHIFT


cdef inline Cur _fast_string(const uchar* p, Py_ssize_t pos, uchar* o, Table* t) noexcept nogil:
    """The string token whose opening quote is ``p[pos]``, written at ``o``: the position after
    its closing quote (FAST_BAIL: content not JSON; FAST_MEMORY) and the output's end. A
    string under 16 bytes without escapes that the short cache holds is written here; any
    other by :func:`_fast_string_rest` (kept out of line: the hit stays small enough to
    inline)."""
    cdef const uchar* s = p + pos + 1
    cdef uint64_t k0, k1
    cdef Py_ssize_t n = _short_key(s, &k0, &k1)
    cdef Short* c
    if likely(n < 16 and s[n] == 34):
        c = &t.shorts[_short_slot(k0, k1)]
        if likely(c.k0 == k0 and c.k1 == k1):  # (an empty slot's k1 is no short string's)
            return _cur(pos + n + 2, _put_index(o, c.index))
    return t.rest(p, pos, o, t)


cdef Cur _fast_string_rest(const uchar* p, Py_ssize_t pos, uchar* o, Table* t) noexcept nogil:
    """:func:`_fast_string` past the short cache: a short string it missed is looked up in the
    table (added if new) and put in the cache; any other is scanned, then looked up."""
    cdef const uchar* s = p + pos + 1
    cdef uint64_t k0, k1, h
    cdef Py_ssize_t n = _short_key(s, &k0, &k1), close, index
    cdef Short* c
    if n < 16 and s[n] == 34:
        index = _table_find(t, s, n, &h)
        if index >= 0:
            o = _put_index(o, index)
        else:
            if _table_add(t, s, n, h) < 0:
                return _cur(FAST_MEMORY, o)
            index = t.count - 1
            o[0] = C_NEW_STRING
            o[1] = <uchar>n  # (n < 16: a one-byte varint)
            memcpy(o + 2, s, n)
            o += 2 + n
        c = &t.shorts[_short_slot(k0, k1)]
        c.k0 = k0
        c.k1 = k1
        c.index = index
        return _cur(pos + n + 2, o)
    close = _scan_string(p, pos + 1 + n, t.limit - p)  # (the n bytes before it: plain)
    if close < 0:
        return _cur(FAST_BAIL, o)
    if _put_string(&o, t, s, close - pos - 1) < 0:
        return _cur(FAST_MEMORY, o)
    return _cur(close + 1, o)


cdef inline Py_ssize_t _fast_int(const uchar* p, Py_ssize_t pos, int64_t* value) noexcept nogil:
    """The int at ``p[pos]`` (in ``value``): the position after its digits, or FAST_BAIL if it
    is not ``-?(0|[1-9][0-9]*)`` of at most 18 digits (an int64 for sure) or is ``-0``. A
    fraction or exponent after it is left to the caller's separator check (which gives up)."""
    cdef bint neg = p[pos] == 45
    cdef Py_ssize_t start
    cdef uint64_t u, d
    pos += neg
    start = pos
    u = <uint64_t>p[pos] - 48
    if u > 9:
        return FAST_BAIL
    pos += 1
    if u == 0:
        if neg:  # -0: a raw number
            return FAST_BAIL
        value[0] = 0
        return pos
    while True:  # (the line's '\n' stops it)
        d = <uint64_t>p[pos] - 48
        if d > 9:
            break
        u = u * 10 + d
        pos += 1
    if pos - start > 18:  # (19 digits may pass int64: the general tokenizer decides)
        return FAST_BAIL
    value[0] = -<int64_t>u if neg else <int64_t>u
    return pos


cdef inline uint32_t _word4(const uchar* s) noexcept nogil:
    cdef uint32_t w
    memcpy(&w, s, 4)
    return w


cdef inline Cur _fast_scalar(const uchar* p, Py_ssize_t pos, uchar* o, Table* t) noexcept nogil:
    """The string, int, ``null``, ``true`` or ``false`` at ``p[pos]``, its token written at
    ``o``: the position after it (FAST_BAIL: anything else; FAST_MEMORY) and the output's
    end."""
    cdef uchar c = p[pos]
    cdef int64_t v
    cdef uint32_t w
    if c == 34:  # '"'
        return _fast_string(p, pos, o, t)
    if DIGIT[c] or c == 45:  # a digit, '-'
        pos = _fast_int(p, pos, &v)
        if pos >= 0:
            o = _put_int(o, v)
        return _cur(pos, o)
    w = _word4(p + pos)  # (a literal's bytes are not '\n': it ends inside the line)
    if w == 0x6C6C756E:  # 'null' (little-endian)
        o[0] = C_NULL
    elif w == 0x65757274:  # 'true'
        o[0] = C_TRUE
    elif w == 0x736C6166 and p[pos + 4] == 101:  # 'fals', 'e'
        o[0] = C_FALSE
        pos += 1
    else:
        return _cur(FAST_BAIL, o)
    return _cur(pos + 4, o + 1)


cdef Cur _fast_container(
    const uchar* p, Py_ssize_t pos, uchar* o, Table* t, int depth
) noexcept nogil:
    """The object or array opening at ``p[pos]``, inside ``depth`` open containers, its tokens
    written at ``o``: the position after it (FAST_BAIL, FAST_MEMORY) and the output's end."""
    cdef bint is_object = p[pos] == 123
    cdef uchar close = 125 if is_object else 93
    cdef uchar c
    cdef Cur k
    if depth + 1 >= FAST_DEPTH:
        return _cur(FAST_BAIL, o)
    o[0] = C_OPEN_OBJECT if is_object else C_OPEN_ARRAY
    k = _cur(pos + 1, o + 1)
    if p[k.pos] != close:
        while True:
            if is_object:  # a key, its ':'
                if p[k.pos] != 34:
                    return _cur(FAST_BAIL, k.o)
                k = _fast_string(p, k.pos, k.o, t)
                if k.pos < 0:
                    return k
                if p[k.pos] != 58:
                    return _cur(FAST_BAIL, k.o)
                k.pos += 1
            c = p[k.pos]
            if c == 123 or c == 91:  # '{' '['
                k = _fast_container(p, k.pos, k.o, t, depth + 1)
            else:
                k = _fast_scalar(p, k.pos, k.o, t)
            if k.pos < 0:
                return k
            c = p[k.pos]
            if c == 44:  # ','
                k.pos += 1
            elif c == close:
                break
            else:
                return _cur(FAST_BAIL, k.o)
    k.o[0] = C_CLOSE_OBJECT if is_object else C_CLOSE_ARRAY
    return _cur(k.pos + 1, k.o + 1)


cdef inline Cur _fast_line(
    const uchar* p, Py_ssize_t pos, Py_ssize_t end, uchar* o, Table* t,
    int64_t* prev, bint* prev_ok, int64_t* cur, bint* cur_ok,
) noexcept nogil:
    """The token stream and end code of the line ``p[pos:end]`` (``p[end]`` its '\\n', 16
    bytes of the blob after it) at ``o``, for a non-empty top-level array: 1 (and the output's
    end), 0 if the fast path does not take the line (the caller takes back its new strings
    and asks ``_encode_line``), -1 out of memory. Its element 0 and 1 ints go to ``cur``,
    coded against ``prev`` as ``_encode_line`` codes them."""
    cdef Py_ssize_t elem = 0
    cdef uchar c
    cdef int64_t v
    cdef long long d
    cdef Cur k
    cur_ok[0] = False
    cur_ok[1] = False
    if p[pos] != 91 or p[pos + 1] == 93:  # not '[', or '[]'
        return _cur(0, o)
    o[0] = C_OPEN_ARRAY
    o += 1
    pos += 1
    while True:
        c = p[pos]
        if c == 110 and _word4(p + pos) == 0x6C6C756E:  # 'null' (most elements)
            o[0] = C_NULL
            o += 1
            pos += 4
        elif (DIGIT[c] or c == 45) and elem < 2:  # the seq, the t
            pos = _fast_int(p, pos, &v)
            if pos < 0:
                return _cur(0, o)
            cur[elem] = v
            cur_ok[elem] = True
            if not prev_ok[elem]:
                o = _put_int(o, v)
            elif elem == 0:
                if prev[0] != 9223372036854775807LL and v == prev[0] + 1:
                    o[0] = C_NEXT_SEQ
                    o += 1
                else:
                    o = _put_int(o, v)
            elif not __builtin_ssubll_overflow(v, prev[1], &d):
                o[0] = C_DELTA_T
                o += 1 + _put_varint(o + 1, _zigzag(d))
            else:
                o = _put_int(o, v)
        else:
            if c == 123 or c == 91:  # '{' '['
                k = _fast_container(p, pos, o, t, 1)
            else:
                k = _fast_scalar(p, pos, o, t)
            if k.pos < 0:
                return _cur(-1 if k.pos == FAST_MEMORY else 0, o)
            pos = k.pos
            o = k.o
        elem += 1
        c = p[pos]
        if c == 44:  # ','
            pos += 1
        elif c == 93 and pos + 1 == end:  # ']' ending the line
            o[0] = C_CLOSE_ARRAY
            o[1] = C_END
            return _cur(1, o + 2)
        else:
            return _cur(0, o)


cdef int _encode(const uchar* p, Py_ssize_t n, Buf* out) noexcept nogil:
    """The token form of the blob ``p[:n]`` (its last byte '\\n') into ``out``: 0, -1 out of
    memory."""
    cdef Table t
    cdef uchar stack[MAX_DEPTH]
    cdef int64_t prev[2]
    cdef int64_t cur[2]
    cdef bint prev_ok[2]
    cdef bint cur_ok[2]
    cdef Py_ssize_t pos = 0, end, mark, count, length
    cdef const uchar* nl
    cdef Cur k
    cdef int rc
    if _table_init(&t) < 0:
        _table_free(&t)
        return -1
    t.limit = p + n
    prev[0] = prev[1] = 0
    prev_ok[0] = prev_ok[1] = False
    out.p[0] = 1  # FORMAT_TOKENS
    out.n = 1
    while pos < n:
        nl = <const uchar*>memchr(p + pos, 10, n - pos)
        end = nl - p
        length = end - pos
        # the token stream of a line is at most 3 bytes a byte of the line, plus its seq/t
        # codes and its end; a raw line its bytes plus 11
        if _reserve(out, 3 * length + 48) < 0:
            _table_free(&t)
            return -1
        mark = out.n
        count = t.count
        rc = 0
        if likely(end + 16 <= n):  # (the blob's last line or so: the general tokenizer)
            k = _fast_line(p, pos, end, out.p + mark, &t, prev, prev_ok, cur, cur_ok)
            rc = <int>k.pos
        if rc == 1:
            out.n = k.o - out.p
        elif rc == 0:  # the general tokenizer decides (the fast path's strings taken back)
            _table_truncate(&t, count)
            rc = _encode_line(p, pos, end, out, &t, prev, prev_ok, cur, cur_ok, stack)
        if rc < 0:
            _table_free(&t)
            return -1
        if rc == 1:
            prev[0] = cur[0]
            prev[1] = cur[1]
            prev_ok[0] = cur_ok[0]
            prev_ok[1] = cur_ok[1]
        else:  # not taken: roll back, write it raw
            out.n = mark
            _table_truncate(&t, count)
            out.p[out.n] = C_RAW_LINE
            out.n += 1 + _put_varint(out.p + out.n + 1, <uint64_t>length)
            memcpy(out.p + out.n, p + pos, length)
            out.n += length
            prev_ok[0] = False
            prev_ok[1] = False
        pos = end + 1
    _table_free(&t)
    return 0


# -- a batch's tokens line by line (a recorded run's sink: exchange.core._lines.LineBatch) -------

# the tables' generations, across every stream of the process (a fragment's cached index is
# checked against the stream it is written into: two streams never share a generation)
cdef Py_ssize_t _last_gen = 0


cdef inline Py_ssize_t _next_gen() noexcept:
    global _last_gen
    _last_gen += 1
    return _last_gen


cdef struct _State:
    Table t             # the open batch's strings: their bytes copied into ``arena``
    uchar* arena
    Py_ssize_t arena_n
    Py_ssize_t arena_cap
    uchar stack[MAX_DEPTH]


# a string's bytes are read 8 (the table's words) or 16 (the fast path's cache) at a time:
# every string the table holds has this many readable bytes after it
cdef enum:
    SLACK = 16


cdef int tokens_init(Tokens* k) except -1:
    """An empty stream (no batch open: :func:`tokens_batch` first)."""
    cdef _State* st = <_State*>malloc(sizeof(_State))
    k.out = NULL
    k.n = k.cap = 0
    k.state = st
    if st == NULL:
        raise MemoryError()
    st.arena = NULL
    st.arena_n = st.arena_cap = 0
    st.t.e = NULL
    st.t.slots = NULL
    st.t.shorts = NULL
    if _table_init(&st.t) < 0:
        tokens_free(k)
        raise MemoryError()
    # the strings lie in lines and in the arena, each with SLACK bytes after it: the word
    # reads never need the byte-by-byte tail (see _tail)
    st.t.limit = <const uchar*>(<size_t>0 - 1)
    k.strings = &st.t.count
    k.prev_ok[0] = k.prev_ok[1] = False
    k.gen = _next_gen()
    return 0


cdef void tokens_free(Tokens* k) noexcept:
    cdef _State* st = <_State*>k.state
    free(k.out)
    k.out = NULL
    k.n = k.cap = 0
    if st != NULL:
        _table_free(&st.t)
        free(st.arena)
        free(st)
    k.state = NULL


cdef int tokens_batch(Tokens* k) except -1:
    """Open the next batch: its format byte (``FORMAT_TOKENS``), a table with no string, no
    previous line (a batch is self-contained: ``compact`` of its blob alone)."""
    cdef _State* st = <_State*>k.state
    cdef Buf out
    out.p, out.n, out.cap = k.out, k.n, k.cap
    if _reserve(&out, 1) < 0:
        raise MemoryError()
    k.out, k.cap = out.p, out.cap
    k.out[k.n] = 1  # FORMAT_TOKENS
    k.n += 1
    st.t.count = 0
    k.gen = _next_gen()
    memset(st.t.slots, 0, (st.t.mask + 1) * sizeof(uint32_t))
    _shorts_clear(&st.t)
    st.arena_n = 0
    k.prev_ok[0] = k.prev_ok[1] = False
    return 0


cdef int _keep(_State* st, Py_ssize_t first) except -1:
    """Copy the bytes of the table's strings from ``first`` on (they point into a line) into
    the arena, each followed by SLACK zero bytes."""
    cdef Py_ssize_t i, need = 0, cap
    cdef uchar* arena
    cdef Entry* e
    for i in range(first, st.t.count):
        need += st.t.e[i].n + SLACK
    if st.arena_n + need > st.arena_cap:
        cap = max(2 * st.arena_cap, st.arena_n + need, 4096)
        arena = <uchar*>realloc(st.arena, cap)
        if arena == NULL:
            raise MemoryError()
        if arena != st.arena:  # the strings kept already move with it
            for i in range(first):
                st.t.e[i].s = arena + (st.t.e[i].s - st.arena)
        st.arena = arena
        st.arena_cap = cap
    for i in range(first, st.t.count):
        e = &st.t.e[i]
        memcpy(st.arena + st.arena_n, e.s, e.n)
        memset(st.arena + st.arena_n + e.n, 0, SLACK)
        e.s = st.arena + st.arena_n
        st.arena_n += e.n + SLACK
    return 0


cdef int tokens_line(Tokens* k, const uchar* line, Py_ssize_t n) except -1:
    """The line ``line[:n]`` of the open batch, written as ``_encode`` writes a line of a blob
    (the fast path, the general tokenizer, or a raw line), its new strings kept."""
    cdef _State* st = <_State*>k.state
    cdef Buf out
    cdef Py_ssize_t mark, count
    cdef int64_t cur[2]
    cdef bint cur_ok[2]
    cdef Cur c
    cdef int rc
    out.p, out.n, out.cap = k.out, k.n, k.cap
    if _reserve(&out, 3 * n + 48) < 0:
        raise MemoryError()
    mark = out.n
    count = st.t.count
    c = _fast_line(line, 0, n, out.p + mark, &st.t, k.prev, k.prev_ok, cur, cur_ok)
    rc = <int>c.pos
    if rc == 1:
        out.n = c.o - out.p
    elif rc == 0:
        _table_truncate(&st.t, count)
        rc = _encode_line(line, 0, n, &out, &st.t, k.prev, k.prev_ok, cur, cur_ok, st.stack)
    if rc < 0:
        _table_truncate(&st.t, count)
        k.out, k.cap = out.p, out.cap
        raise MemoryError()
    if rc == 1:
        k.prev[0] = cur[0]
        k.prev[1] = cur[1]
        k.prev_ok[0] = cur_ok[0]
        k.prev_ok[1] = cur_ok[1]
    else:  # not taken: a raw line
        out.n = mark
        _table_truncate(&st.t, count)
        out.p[out.n] = C_RAW_LINE
        out.n += 1 + _put_varint(out.p + out.n + 1, <uint64_t>n)
        memcpy(out.p + out.n, line, n)
        out.n += n
        k.prev_ok[0] = False
        k.prev_ok[1] = False
    k.out, k.n, k.cap = out.p, out.n, out.cap
    if st.t.count > count:
        _keep(st, count)
    return 0


cdef void tokens_consume(Tokens* k, Py_ssize_t size) noexcept:
    memmove(k.out, k.out + size, k.n - size)
    k.n -= size


cdef int tokens_grow(Tokens* k, Py_ssize_t extra) except -1:
    """Room for ``extra`` more bytes in ``k.out``."""
    cdef Buf out
    out.p, out.n, out.cap = k.out, k.n, k.cap
    if _grow(&out, extra) < 0:
        raise MemoryError()
    k.out, k.cap = out.p, out.cap
    return 0


cdef void tokens_undo(Tokens* k, TokMark* m) noexcept:
    """Drop the line opened at ``m``: its tokens and its new strings."""
    cdef _State* st = <_State*>k.state
    k.n = m.n
    if st.t.count > m.count:
        _table_truncate(&st.t, m.count)
        k.gen = _next_gen()
    k.prev[0], k.prev[1] = m.prev0, m.prev1
    k.prev_ok[0], k.prev_ok[1] = m.ok0, m.ok1


cdef int tokens_string(Tokens* k, const uchar* s, Py_ssize_t n, Py_ssize_t* index) except -1:
    """The string token of content ``s[:n]`` (by index if the table has it, else new, its bytes
    kept); its index into ``index``."""
    cdef _State* st = <_State*>k.state
    cdef Py_ssize_t count = st.t.count
    cdef uint64_t h
    cdef Py_ssize_t found
    cdef uchar* o
    tokens_room(k, n + 16)
    found = _table_find(&st.t, s, n, &h)
    if found >= 0:
        index[0] = found
        return tokens_indexed(k, found)
    if _table_add(&st.t, s, n, h) < 0:
        raise MemoryError()
    o = k.out + k.n
    o[0] = C_NEW_STRING
    o += 1 + _put_varint(o + 1, <uint64_t>n)
    memcpy(o, s, n)
    k.n = o + n - k.out
    _keep(st, count)
    index[0] = count
    return 0


cdef int tokens_number(Tokens* k, const uchar* s, Py_ssize_t n) except -1:
    """A number the encoder writes raw (its bytes ``s[:n]``: past int64, a fraction...)."""
    tokens_room(k, n + 11)
    k.out[k.n] = C_NUMBER
    k.n += 1 + _put_varint(k.out + k.n + 1, <uint64_t>n)
    memcpy(k.out + k.n, s, n)
    k.n += n
    return 0


cdef bint _canonical_int(const uchar* s, Py_ssize_t n, long long* value) noexcept:
    """Whether ``s[:n]`` is an int the encoder writes as one (``-?(0|[1-9][0-9]*)``, not
    ``-0``, within int64), its value into ``value``."""
    cdef Py_ssize_t i = 0
    cdef bint negative = False
    cdef unsigned long long u = 0, limit
    if n and s[0] == 45:
        negative = True
        i = 1
    if i >= n or (s[i] == 48 and n - i > 1) or (negative and s[i] == 48):
        return False
    limit = 9223372036854775808ULL if negative else 9223372036854775807ULL
    while i < n:
        if not DIGIT[s[i]] or u > (limit - (s[i] - 48)) // 10:
            return False
        u = u * 10 + (s[i] - 48)
        i += 1
    value[0] = <long long>(0 - u) if negative else <long long>u
    return True


cdef Frag* frag_compile(const uchar* s, Py_ssize_t n) except NULL:
    """The tokens of the JSON fragment ``s[:n]`` (commas and colons dropped, as the token form
    implies them): a program :func:`tokens_frag` writes. ValueError for bytes that are not
    pieces of canonical JSON."""
    cdef Frag* f = <Frag*>malloc(sizeof(Frag))
    cdef Py_ssize_t pos = 0, j, cap = 8
    cdef uchar c
    cdef FragOp* op
    cdef FragOp* grown
    cdef long long value
    if f == NULL:
        raise MemoryError()
    f.n_ops = 0
    f.size = n
    f.out = NULL
    f.out_n = 0
    f.out_gen = -1
    f.text = <uchar*>malloc(n + 16)
    f.ops = <FragOp*>malloc(cap * sizeof(FragOp))
    if f.text == NULL or f.ops == NULL:
        frag_free(f)
        raise MemoryError()
    memcpy(f.text, s, n)
    memset(f.text + n, 0, 16)
    s = f.text
    while pos < n:
        c = s[pos]
        if c == 44 or c == 58:  # ',' ':'
            pos += 1
            continue
        if f.n_ops == cap:
            cap *= 2
            grown = <FragOp*>realloc(f.ops, cap * sizeof(FragOp))
            if grown == NULL:
                frag_free(f)
                raise MemoryError()
            f.ops = grown
        op = &f.ops[f.n_ops]
        op.kind = 0
        op.gen = -1
        if c == 91 or c == 93 or c == 123 or c == 125:  # [ ] { }
            op.code = C_OPEN_ARRAY if c == 91 else C_CLOSE_ARRAY if c == 93 else (
                C_OPEN_OBJECT if c == 123 else C_CLOSE_OBJECT)
            pos += 1
        elif n - pos >= 4 and memcmp(s + pos, b"null", 4) == 0:
            op.code = C_NULL
            pos += 4
        elif n - pos >= 4 and memcmp(s + pos, b"true", 4) == 0:
            op.code = C_TRUE
            pos += 4
        elif n - pos >= 5 and memcmp(s + pos, b"false", 5) == 0:
            op.code = C_FALSE
            pos += 5
        elif c == 34:  # '"'
            j = pos + 1
            while j < n and s[j] != 34:
                j += 2 if s[j] == 92 else 1
            if j >= n:
                frag_free(f)
                raise ValueError("an unterminated string in a fragment")
            op.kind = 1
            op.s = s + pos + 1
            op.n = j - pos - 1
            pos = j + 1
        elif c == 45 or DIGIT[c]:
            j = pos + 1
            while j < n and (DIGIT[s[j]] or s[j] == 46 or s[j] == 101 or s[j] == 69
                             or s[j] == 43 or s[j] == 45):
                j += 1
            op.s = s + pos
            op.n = j - pos
            if _canonical_int(s + pos, j - pos, &value):
                op.kind = 2
                op.value = value
            else:
                op.kind = 3
            pos = j
        else:
            frag_free(f)
            raise ValueError(f"not a JSON fragment at byte {pos}")
        f.n_ops += 1
    return f


cdef void frag_free(Frag* f) noexcept:
    if f != NULL:
        free(f.text)
        free(f.ops)
        free(f.out)
        free(f)


cdef int tokens_frag_slow(Tokens* k, Frag* f) except -1:
    """:func:`tokens_frag` where the fragment's bytes are not known in this generation: its
    tokens written op by op, and kept if all its strings were found."""
    cdef _State* st = <_State*>k.state
    cdef Py_ssize_t i, gen = k.gen, start = k.n, count = st.t.count
    cdef FragOp* op
    cdef uchar* out
    for i in range(f.n_ops):
        op = &f.ops[i]
        if op.kind == 0:
            tokens_code(k, op.code)
        elif op.kind == 1:
            if op.gen == gen:
                tokens_indexed(k, op.index)
            else:
                tokens_string(k, op.s, op.n, &op.index)
                op.gen = k.gen
        elif op.kind == 2:
            tokens_int(k, op.value)
        else:
            tokens_number(k, op.s, op.n)
    if st.t.count == count:  # no new string: these bytes until the next generation
        out = <uchar*>realloc(f.out, max(k.n - start, 16))
        if out != NULL:
            f.out = out
            f.out_n = k.n - start
            memcpy(f.out, k.out + start, f.out_n)
            f.out_gen = gen
    return 0


def compact(blob):
    """``compact_reference(blob)``, in C without the GIL. ``blob``: a ``bytes``, or any
    object exposing its bytes as a contiguous buffer (the journaller compacts a blob where
    the run placed it in their shared buffer: a ``memoryview`` of the map, not a copy)."""
    cdef Py_buffer view
    cdef const uchar* p
    cdef Py_ssize_t n
    cdef Buf out
    cdef int rc
    PyObject_GetBuffer(blob, &view, PyBUF_SIMPLE)
    try:
        p = <const uchar*>view.buf
        n = view.len
        if n == 0 or p[n - 1] != 10:
            return b"\x00" + PyBytes_FromStringAndSize(<char*>p, n)
        out.cap = n // 3 + 64
        out.n = 0
        out.p = <uchar*>malloc(out.cap)
        if out.p == NULL:
            raise MemoryError()
        with nogil:
            rc = _encode(p, n, &out)
        if rc < 0:
            free(out.p)
            raise MemoryError()
        try:
            if out.n >= n + 1:
                return b"\x00" + PyBytes_FromStringAndSize(<char*>p, n)
            return PyBytes_FromStringAndSize(<char*>out.p, out.n)
        finally:
            free(out.p)
    finally:
        PyBuffer_Release(&view)


# -- the decoder -------------------------------------------------------------------------------

cdef inline int _get_varint(
    const uchar* d, Py_ssize_t n, Py_ssize_t* pos, uint64_t* value
) noexcept nogil:
    cdef Py_ssize_t i = pos[0]
    cdef uint64_t v = 0, b
    cdef int k
    for k in range(10):
        if i >= n:
            return ERR_TRUNCATED
        b = d[i]
        i += 1
        if k == 9 and b > 1:
            return ERR_VARINT_OVERFLOW
        v |= (b & 0x7F) << (7 * k)
        if b < 0x80:
            if b == 0 and k > 0:
                return ERR_VARINT_LONG
            pos[0] = i
            value[0] = v
            return OK
    return ERR_VARINT_OVERFLOW


cdef inline int _get_span(
    const uchar* d, Py_ssize_t n, Py_ssize_t* pos, Py_ssize_t* length
) noexcept nogil:
    """A varint length, checked against the bytes left (``pos`` then at those bytes)."""
    cdef uint64_t v
    cdef int rc = _get_varint(d, n, pos, &v)
    if rc != OK:
        return rc
    if v > <uint64_t>(n - pos[0]):
        return ERR_TRUNCATED
    length[0] = <Py_ssize_t>v
    return OK


cdef bint _content_ok(const uchar* s, Py_ssize_t n) noexcept nogil:
    """Whether ``s[:n]`` is a string's content the tokenizer takes."""
    cdef Py_ssize_t i = 0
    cdef uchar k
    while i < n:
        k = STRING_CLASS[s[i]]
        if k == 0:
            i += 1
        elif k != 2 or i + 1 >= n:
            return False
        elif ESCAPE[s[i + 1]]:
            i += 2
        elif s[i + 1] == 117 and i + 5 < n and HEX[s[i + 2]] and HEX[s[i + 3]] and HEX[s[i + 4]] and HEX[s[i + 5]]:
            i += 6
        else:
            return False
    return True


cdef bint _raw_number_ok(const uchar* s, Py_ssize_t n) noexcept nogil:
    """Whether ``s[:n]`` is a JSON number the encoder writes raw (not an int64 in canonical
    form)."""
    cdef Py_ssize_t i = 0, nd
    cdef bint neg, frac = False
    cdef uint64_t u = 0
    if n == 0:
        return False
    neg = s[0] == 45
    if neg:
        i = 1
    if i < n and s[i] == 48:
        i += 1
    elif i < n and DIGIT[s[i]]:
        while i < n and DIGIT[s[i]]:
            if i - neg < 19:
                u = u * 10 + (s[i] - 48)
            i += 1
    else:
        return False
    nd = i - neg
    if i < n and s[i] == 46:
        i += 1
        if not (i < n and DIGIT[s[i]]):
            return False
        while i < n and DIGIT[s[i]]:
            i += 1
        frac = True
    if i < n and (s[i] == 101 or s[i] == 69):
        i += 1
        if i < n and (s[i] == 43 or s[i] == 45):
            i += 1
        if not (i < n and DIGIT[s[i]]):
            return False
        while i < n and DIGIT[s[i]]:
            i += 1
        frac = True
    if i != n:
        return False
    if frac or nd > 19 or (neg and nd == 1 and s[1] == 48):
        return True
    return u > (9223372036854775808ULL if neg else 9223372036854775807ULL)


cdef inline uchar* _write_int(uchar* o, int64_t v) noexcept nogil:
    """``v`` in decimal at ``o`` (at most 20 bytes); the position after it."""
    cdef uint64_t u
    cdef int nd = 1, r
    if v < 0:
        o[0] = 45
        o += 1
        u = 0 - <uint64_t>v
    else:
        u = <uint64_t>v
    if u < 10:
        o[0] = <uchar>(48 + u)
        return o + 1
    while nd < 20 and u >= POW10[nd]:
        nd += 1
    cdef uchar* q = o + nd
    while u >= 100:
        r = <int>(u % 100)
        u //= 100
        q -= 2
        memcpy(q, PAIRS + 2 * r, 2)
    if u >= 10:
        memcpy(o, PAIRS + 2 * u, 2)
    else:
        o[0] = <uchar>(48 + u)
    return o + nd


cdef inline void _copy_string(uchar* o, const uchar* s, Py_ssize_t n, const uchar* end) noexcept nogil:
    """``memcpy(o, s, n)``; a string of at most 16 bytes with 16 readable at ``s`` (before
    ``end``) as one 16-byte copy, its overshoot into room the caller reserved (and overwrites)."""
    if n <= 16 and s + 16 <= end:
        memcpy(o, s, 16)
    else:
        memcpy(o, s, n)


cdef struct Str:
    const uchar* s
    Py_ssize_t n


cdef int _decode(const uchar* d, Py_ssize_t n, Buf* out, Py_ssize_t* where) noexcept nogil:
    """The blob of the token form ``d[:n]`` (``d[0]`` its format byte) into ``out``: OK or an
    error code (``where``: the offending token's offset)."""
    cdef uchar stack[MAX_DEPTH]
    cdef int depth = 0, state
    cdef bint have_value = False
    cdef Py_ssize_t top_count = 0, elem, pos = 1, at = 0, length = 0, index, off
    cdef int64_t prev[2]
    cdef int64_t cur[2]
    cdef bint prev_ok[2]
    cdef bint cur_ok[2]
    cdef int64_t v
    cdef long long sum_
    cdef uint64_t raw
    cdef uchar code
    cdef int rc = OK, slot
    cdef uchar* o
    cdef const uchar* s = NULL
    cdef Py_ssize_t sn = 0
    cdef Str* table = NULL
    cdef Str* grown
    cdef Py_ssize_t count = 0, tcap = 0
    cdef bint is_string
    prev_ok[0] = prev_ok[1] = cur_ok[0] = cur_ok[1] = False
    if n == 1:
        where[0] = 0
        return ERR_EMPTY
    while pos < n:
        at = pos
        code = d[pos]
        pos += 1
        is_string = False
        # the token's own payload first (a string's content, its index checked)
        if code >= C_SMALL_STRING:
            index = code - C_SMALL_STRING
            if index >= count:
                rc = ERR_INDEX
                break
            s = table[index].s
            sn = table[index].n
            is_string = True
        elif code == C_END:
            if depth != 0 or not have_value:
                rc = ERR_END
                break
            if _reserve(out, 1) < 0:
                rc = ERR_MEMORY
                break
            out.p[out.n] = 10
            out.n += 1
            prev[0] = cur[0]
            prev[1] = cur[1]
            prev_ok[0] = cur_ok[0]
            prev_ok[1] = cur_ok[1]
            cur_ok[0] = cur_ok[1] = False
            have_value = False
            top_count = 0
            continue
        elif code == C_CLOSE_ARRAY or code == C_CLOSE_OBJECT:
            if depth == 0:
                rc = ERR_CLOSE
                break
            state = stack[depth - 1]
            if (code == C_CLOSE_ARRAY and state > S_A1) or (
                code == C_CLOSE_OBJECT and state != S_K0 and state != S_K1
            ):
                rc = ERR_CLOSE
                break
            if _reserve(out, 1) < 0:
                rc = ERR_MEMORY
                break
            depth -= 1
            out.p[out.n] = 93 if code == C_CLOSE_ARRAY else 125
            out.n += 1
            continue
        elif code == C_STRING:
            rc = _get_varint(d, n, &pos, &raw)
            if rc != OK:
                break
            if raw >= <uint64_t>count:
                rc = ERR_INDEX
                break
            s = table[raw].s
            sn = table[raw].n
            is_string = True
        elif code == C_NEW_STRING:
            rc = _get_span(d, n, &pos, &sn)
            if rc != OK:
                break
            s = d + pos
            pos += sn
            if not _content_ok(s, sn):
                rc = ERR_CONTENT
                break
            if count == tcap:
                tcap = tcap * 2 if tcap else 256
                grown = <Str*>realloc(table, tcap * sizeof(Str))
                if grown == NULL:
                    rc = ERR_MEMORY
                    break
                table = grown
            table[count].s = s
            table[count].n = sn
            count += 1
            is_string = True
        elif code == C_RAW_LINE:
            if depth != 0 or have_value:
                rc = ERR_RAW_PLACE
                break
            rc = _get_span(d, n, &pos, &length)
            if rc != OK:
                break
            if memchr(d + pos, 10, length) != NULL:
                rc = ERR_RAW_NEWLINE
                break
            if _reserve(out, length + 1) < 0:
                rc = ERR_MEMORY
                break
            memcpy(out.p + out.n, d + pos, length)
            out.p[out.n + length] = 10
            out.n += length + 1
            pos += length
            prev_ok[0] = prev_ok[1] = False
            continue
        elif code == 0x0F or C_SMALL_INT_END <= code < C_SMALL_STRING:
            rc = ERR_CODE
            break
        # the comma, or the key and its colon, before it
        if is_string:
            if _reserve(out, sn + 24) < 0:  # (16 bytes of _copy_string's overshoot)
                rc = ERR_MEMORY
                break
        elif _reserve(out, 32) < 0:
            rc = ERR_MEMORY
            break
        o = out.p + out.n
        elem = -1
        if depth == 0:
            if have_value:
                rc = ERR_SECOND
                break
            have_value = True
        else:
            state = stack[depth - 1]
            if state == S_K0 or state == S_K1:
                if not is_string:
                    rc = ERR_KEY
                    break
                if state == S_K1:
                    o[0] = 44
                    o += 1
                o[0] = 34
                _copy_string(o + 1, s, sn, d + n)
                o[sn + 1] = 34
                o[sn + 2] = 58
                out.n = o + sn + 3 - out.p
                stack[depth - 1] = S_V
                continue
            if state == S_A1:
                o[0] = 44
                o += 1
            else:
                stack[depth - 1] = S_A1 if state == S_A0 else S_K1
            if depth == 1 and state <= S_A1:
                elem = top_count
                top_count += 1
        # the value
        if is_string:
            o[0] = 34
            _copy_string(o + 1, s, sn, d + n)
            o[sn + 1] = 34
            o += sn + 2
        elif C_SMALL_INT <= code < C_SMALL_INT_END:
            v = code - C_SMALL_INT
            if elem == 0 or elem == 1:
                cur[elem] = v
                cur_ok[elem] = True
            o = _write_int(o, v)
        elif code == C_NULL:
            memcpy(o, b"null", 4)
            o += 4
        elif code == C_OPEN_ARRAY or code == C_OPEN_OBJECT:
            if depth >= MAX_DEPTH:
                rc = ERR_DEPTH
                break
            stack[depth] = S_A0 if code == C_OPEN_ARRAY else S_K0
            depth += 1
            o[0] = 91 if code == C_OPEN_ARRAY else 123
            o += 1
        elif code == C_TRUE:
            memcpy(o, b"true", 4)
            o += 4
        elif code == C_FALSE:
            memcpy(o, b"false", 5)
            o += 5
        elif code == C_NUMBER:  # (its payload read after the comma, as in the reference)
            rc = _get_span(d, n, &pos, &length)
            if rc != OK:
                break
            if not _raw_number_ok(d + pos, length):
                rc = ERR_NUMBER
                break
            off = o - out.p
            if _reserve(out, off - out.n + length) < 0:
                rc = ERR_MEMORY
                break
            o = out.p + off
            memcpy(o, d + pos, length)
            o += length
            pos += length
        else:  # C_INT, C_NEXT_SEQ, C_DELTA_T
            if code == C_INT:
                rc = _get_varint(d, n, &pos, &raw)
                if rc != OK:
                    break
                v = _unzigzag(raw)
            else:
                slot = code - C_NEXT_SEQ
                if elem != slot or not prev_ok[slot]:
                    rc = ERR_PLACE
                    break
                if code == C_NEXT_SEQ:
                    v = 1
                else:
                    rc = _get_varint(d, n, &pos, &raw)
                    if rc != OK:
                        break
                    v = _unzigzag(raw)
                if __builtin_saddll_overflow(prev[slot], v, &sum_):
                    rc = ERR_INT64
                    break
                v = sum_
            if elem == 0 or elem == 1:
                cur[elem] = v
                cur_ok[elem] = True
            o = _write_int(o, v)
        out.n = o - out.p
    free(table)
    where[0] = at
    if rc == OK and (depth != 0 or have_value):
        where[0] = n
        rc = ERR_UNFINISHED
    return rc


def expand(bytes data):
    """``expand_reference(data)``, in C without the GIL (``data`` exactly a ``bytes``); a
    malformed form raises ``ValueError`` (``compact.expand`` makes it ``CompactError``)."""
    cdef const uchar* d = <const uchar*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), where = 0
    cdef Buf out
    cdef int rc
    if n == 0:
        raise ValueError("empty stored batch")
    if d[0] == 0:
        return data[1:]
    if d[0] != 1:
        raise ValueError(f"unknown stored batch format {d[0]}")
    # the blob is written into this thread's scratch buffer (about 5 bytes a stored byte on
    # flow; grown if short), then copied into the bytes returned
    out.p = _scratch_take(&out.cap)
    out.n = 0
    if out.cap < n * 6 + 256:
        free(out.p)
        out.cap = n * 6 + 256
        out.p = <uchar*>malloc(out.cap)
        if out.p == NULL:
            raise MemoryError()
    with nogil:
        rc = _decode(d, n, &out, &where)
    try:
        if rc == ERR_MEMORY:
            raise MemoryError()
        if rc == ERR_EMPTY:
            raise ValueError("token form without a line")
        if rc == ERR_UNFINISHED:
            raise ValueError("stored batch ends inside a line")
        if rc != OK:
            raise ValueError(f"{ERRORS[rc]} at byte {where}")
        return PyBytes_FromStringAndSize(<char*>out.p, out.n)
    finally:
        _scratch_give(out.p, out.cap, SCRATCH_KEEP)
