# The compact stored form's C interface (exchange/core/_compact.pyx): a batch's token stream
# written line by line, for a recorded run's sink (exchange/core/_lines.pyx: LineBatch keeps
# its lines in their stored form), the same bytes compact() writes for the batch's blob.

from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

ctypedef unsigned char uchar


cdef struct Tokens:
    uchar* out         # the stored forms of the batches held, one after the other (malloc'd)
    Py_ssize_t n       # bytes used
    Py_ssize_t cap     # bytes allocated
    int64_t prev[2]    # the previous line's seq and t (``prev_ok``: it had them as ints)
    bint prev_ok[2]
    Py_ssize_t gen     # the table's generation (see the note above tokens_gen)
    Py_ssize_t* strings  # the table's count of strings
    void* state        # the open batch's string table (private)


# each returns 0, or raises MemoryError (-1)
cdef int tokens_init(Tokens* k) except -1
cdef void tokens_free(Tokens* k) noexcept
# open the next batch at ``k.n``: its format byte, an empty string table, no previous line
cdef int tokens_batch(Tokens* k) except -1
# the tokens of the JSON line ``line[:n]`` (``line[n]`` its '\n', 16 readable bytes after it),
# as compact() writes that line in the open batch
cdef int tokens_line(Tokens* k, const uchar* line, Py_ssize_t n) except -1
# drop the first ``size`` bytes of ``k.out`` (batches taken)
cdef void tokens_consume(Tokens* k, Py_ssize_t size) noexcept

# -- a line written as tokens, with no JSON (the compiled kernel's typed lines) ----------------
# A line is tokens_open, values, tokens_close; tokens_undo drops it (from its mark). Strings
# are given by content (the JSON string's bytes between its quotes, escapes as they are, 8
# readable bytes after them); a string's index in the batch's table stays valid while
# tokens_gen is unchanged (a new batch, an undo that drops strings: a new generation).

cdef extern from *:
    bint __builtin_ssubll_overflow(long long a, long long b, long long* out) nogil


cdef struct TokMark:
    Py_ssize_t n
    Py_ssize_t count
    long long prev0
    long long prev1
    bint ok0
    bint ok1

# a JSON fragment (pieces of a line: ``,"qty":``, ``null,null]``...) compiled to its tokens
cdef struct FragOp:
    int kind           # 0 a code byte, 1 a string, 2 an int, 3 a raw number
    uchar code
    long long value
    const uchar* s     # a string's content / a number's bytes (in the fragment's copy)
    Py_ssize_t n
    Py_ssize_t gen     # the generation whose table holds the string at ``index`` (-1: none)
    Py_ssize_t index

cdef struct Frag:
    Py_ssize_t n_ops
    FragOp* ops
    uchar* text        # the fragment's bytes, with slack after them
    Py_ssize_t size    # its JSON bytes
    uchar* out         # its tokens in the generation ``out_gen`` (every string by index)
    Py_ssize_t out_n
    Py_ssize_t out_gen

cdef int tokens_grow(Tokens* k, Py_ssize_t extra) except -1
cdef void tokens_undo(Tokens* k, TokMark* m) noexcept
cdef int tokens_string(Tokens* k, const uchar* s, Py_ssize_t n, Py_ssize_t* index) except -1
cdef int tokens_number(Tokens* k, const uchar* s, Py_ssize_t n) except -1
cdef Frag* frag_compile(const uchar* s, Py_ssize_t n) except NULL
cdef void frag_free(Frag* f) noexcept
cdef int tokens_frag_slow(Tokens* k, Frag* f) except -1


# the writers a typed line calls for most of its tokens: inline in the kernel (a call into
# another extension goes through a pointer, and these are a few instructions each)

cdef inline Py_ssize_t tokens_gen(Tokens* k) noexcept:
    """The table's generation: a string's index stays its index while this is unchanged."""
    return k.gen


cdef inline int tokens_room(Tokens* k, Py_ssize_t extra) except -1:
    if k.n + extra <= k.cap:
        return 0
    return tokens_grow(k, extra)


cdef inline Py_ssize_t tokens_varint(uchar* o, uint64_t v) noexcept:
    """``v`` as a minimal LEB128 varint at ``o``: its bytes."""
    cdef Py_ssize_t i = 0
    while v >= 0x80:
        o[i] = <uchar>(v & 0x7F) | 0x80
        v >>= 7
        i += 1
    o[i] = <uchar>v
    return i + 1


cdef inline int tokens_code(Tokens* k, uchar code) except -1:
    """A one-byte token: ``[ ] { }``, null, true, false."""
    tokens_room(k, 1)
    k.out[k.n] = code
    k.n += 1
    return 0


cdef inline int tokens_indexed(Tokens* k, Py_ssize_t index) except -1:
    """The token of the table's string ``index`` (one the caller knows is there)."""
    tokens_room(k, 11)
    if index < 0x80:
        k.out[k.n] = <uchar>(0x80 + index)
        k.n += 1
    else:
        k.out[k.n] = 0x0B
        k.n += 1 + tokens_varint(k.out + k.n + 1, <uint64_t>index)
    return 0


cdef inline int tokens_put_int(Tokens* k, int64_t v) noexcept:
    """An int token at ``k.n`` (room made by the caller): a small int, else zigzag varint."""
    if 0 <= v < 80:
        k.out[k.n] = <uchar>(0x10 + v)
        k.n += 1
    else:
        k.out[k.n] = 0x08
        k.n += 1 + tokens_varint(k.out + k.n + 1, (<uint64_t>v << 1) ^ <uint64_t>(v >> 63))
    return 0


cdef inline int tokens_int(Tokens* k, long long v) except -1:
    """An int (not a line's seq or t)."""
    tokens_room(k, 11)
    return tokens_put_int(k, v)


cdef inline int tokens_open(Tokens* k, TokMark* m, long long seq, long long t) except -1:
    """Open a line (its mark into ``m``): ``[``, its seq and its t as the encoder writes a
    line's elements 0 and 1 (``0x0C``/``0x0D`` after a line that had them as ints)."""
    cdef long long d
    m.n = k.n
    m.count = k.strings[0]
    m.prev0, m.prev1 = k.prev[0], k.prev[1]
    m.ok0, m.ok1 = k.prev_ok[0], k.prev_ok[1]
    tokens_room(k, 32)
    k.out[k.n] = 0x01
    k.n += 1
    if k.prev_ok[0] and k.prev[0] != 9223372036854775807LL and seq == k.prev[0] + 1:
        k.out[k.n] = 0x0C
        k.n += 1
    else:
        tokens_put_int(k, seq)
    if k.prev_ok[1] and not __builtin_ssubll_overflow(t, k.prev[1], &d):
        k.out[k.n] = 0x0D
        k.n += 1 + tokens_varint(k.out + k.n + 1, (<uint64_t>d << 1) ^ <uint64_t>(d >> 63))
    else:
        tokens_put_int(k, t)
    return 0


cdef inline int tokens_close(Tokens* k, long long seq, long long t) except -1:
    """End the line (its seq and t the next line's previous)."""
    tokens_room(k, 1)
    k.out[k.n] = 0x00
    k.n += 1
    k.prev[0] = seq
    k.prev[1] = t
    k.prev_ok[0] = k.prev_ok[1] = True
    return 0


cdef inline int tokens_frag(Tokens* k, Frag* f) except -1:
    """The fragment's tokens (its strings by the index they got, while the table's generation
    lasts; once all are by index, the same bytes each time: copied)."""
    if f.out_gen == k.gen:
        if f.out_n <= 16:  # (most: one fixed-size copy; ``f.out`` has 16 bytes at least)
            tokens_room(k, 16)
            memcpy(k.out + k.n, f.out, 16)
        else:
            tokens_room(k, f.out_n)
            memcpy(k.out + k.n, f.out, f.out_n)
        k.n += f.out_n
        return 0
    return tokens_frag_slow(k, f)
