# cython: language_level=3, boundscheck=False, wraparound=False
"""Events as their canonical lines, in C: the encoder and the :class:`LineBatch` sink.

An event's canonical bytes are :func:`exchange.core.events.encode`'s (orjson's ``dumps(tuple(
event), option=OPT_SORT_KEYS)``); the store keeps a batch as those bytes plus ``b"\\n"`` per
event, in seq order. This module writes them without a Python call per event:

* :func:`encode_batch` / :func:`encode_event` (the store's blob, a test's one event) and
  :func:`first_bad` (the checks the store makes before it writes) -- moved here from
  ``exchange.store._writer`` (which re-exports them) so that the kernel, below the store in
  the package's rooms, can use the same encoder;
* :class:`LineBatch`, an engine sink that keeps the lines instead of the events: ``append(event)``
  checks and encodes an event in C, the compiled kernel writes its own events' lines straight
  into its buffer (``exchange/kernel/_kernel.pyx``, through ``_lines.pxd``), and ``take(n)``
  gives the first ``n`` lines as one blob, as the store keeps it; or, once asked
  (``store_compact``), it keeps them as each batch's stored form, every line compacted as it
  ends (``exchange.core._compact``'s token writer) and the compiled kernel's typed lines
  written as tokens outright (decision 106);
* :class:`Tap`, a reader of a LineBatch's lines (the bot runner's, issue #20 point 4): told as
  a line of a kind it wants is written, asked to read before :meth:`LineBatch.take` hands
  lines over, and reading them in C (kinds, watched accounts; an Event built only for the
  wanted kinds).

An event holding anything the C encoder does not write (a float, a subclass, a value orjson
refuses) is given to orjson whole, so its bytes or its error are orjson's.
"""

from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from cpython.sequence cimport PySequence_Tuple
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.stdlib cimport free, malloc, qsort, realloc
from libc.string cimport memchr, memcmp, memcpy, memmove, memset

from exchange.core._compact cimport tokens_batch, tokens_consume, tokens_free, tokens_init, tokens_line

cdef extern from "Python.h":
    # borrowed PyObject* throughout: the walk takes no reference and runs no Python code
    ctypedef struct PyTypeObject:
        pass
    PyTypeObject PyUnicode_Type
    PyTypeObject PyLong_Type
    PyTypeObject PyBool_Type
    PyTypeObject PyDict_Type
    PyTypeObject PyList_Type
    PyTypeObject PyTuple_Type
    PyObject* Py_None
    PyObject* Py_True
    PyTypeObject* Py_TYPE(PyObject* o)
    int PyTuple_Check(object o)
    int PyList_CheckExact(object o)
    const char* PyUnicode_AsUTF8AndSize(PyObject* s, Py_ssize_t* size)
    int PyUnicode_IS_COMPACT_ASCII(PyObject* s)
    void* PyUnicode_DATA(PyObject* s)
    Py_ssize_t PyUnicode_GET_LENGTH(PyObject* s)
    long long PyLong_AsLongLongAndOverflow(PyObject* o, int* overflow)
    unsigned long long PyLong_AsUnsignedLongLong(PyObject* o)
    void PyErr_Clear()
    PyObject* PyErr_Occurred()
    int PyDict_Next(PyObject* d, Py_ssize_t* pos, PyObject** key, PyObject** value)
    Py_ssize_t PyDict_GET_SIZE(PyObject* d)
    Py_ssize_t _tuple_size "PyTuple_GET_SIZE"(PyObject* o)
    PyObject* _tuple_item "PyTuple_GET_ITEM"(PyObject* o, Py_ssize_t i)
    Py_ssize_t _list_size "PyList_GET_SIZE"(PyObject* o)
    PyObject* _list_item "PyList_GET_ITEM"(PyObject* o, Py_ssize_t i)


cdef extern from *:
    """
    /* The value of an exact int of at most two digits (|v| < 2**60), read in place: what
       PyLong_AsLongLongAndOverflow does first, without the call. 0 for a larger int. */
    static CYTHON_INLINE int gpuex_small_int(PyObject* o, long long* v) {
    #if PY_VERSION_HEX >= 0x030C0000
        if (PyUnstable_Long_IsCompact((PyLongObject*)o)) {
            *v = (long long)PyUnstable_Long_CompactValue((PyLongObject*)o);
            return 1;
        }
        return 0;
    #else
        Py_ssize_t size = Py_SIZE(o);
        const digit* d = ((PyLongObject*)o)->ob_digit;
        switch (size) {
            case 0: *v = 0; return 1;
            case 1: *v = (long long)d[0]; return 1;
            case -1: *v = -(long long)d[0]; return 1;
            case 2: *v = ((long long)d[1] << PyLong_SHIFT) | (long long)d[0]; return 1;
            case -2: *v = -(((long long)d[1] << PyLong_SHIFT) | (long long)d[0]); return 1;
            default: return 0;
        }
    #endif
    }
    """
    bint _small_int "gpuex_small_int"(PyObject* o, long long* v) noexcept


cdef extern from *:
    """
    /* A tuple whose items tuple(o) gives as they are stored: a tuple, or a subclass (Event,
       a namedtuple) that iterates as a tuple does. */
    static CYTHON_INLINE int gpuex_plain_tuple(PyObject* o) {
        return PyTuple_Check(o) && Py_TYPE(o)->tp_iter == PyTuple_Type.tp_iter;
    }
    """
    bint _plain_tuple "gpuex_plain_tuple"(PyObject* o) noexcept


#: Column codes of :func:`first_bad`'s ``codes``: an integer or a text, NOT NULL or nullable.
INT, INT_OR_NULL, TEXT, TEXT_OR_NULL = b"i", b"I", b"s", b"S"


cdef inline PyObject* _item(object event, Py_ssize_t i, bint is_tuple):
    if is_tuple:
        return PyTuple_GET_ITEM(event, i)
    return PyList_GET_ITEM(event, i)


cdef object _WRONG_SEQ = object()  # what _check says of an event whose seq is not the next


cdef object _check(object event, long long seq, Py_ssize_t n_fields, const char* code,
                   Py_ssize_t n_typed, object names):
    """None if ``event`` can be stored as seq ``seq``, else why not (a str), or _WRONG_SEQ.
    The checks run on borrowed pointers and C ints (no Python object made per event); the
    reasons are worded from the objects, on the way out."""
    cdef Py_ssize_t i
    cdef bint is_tuple
    cdef PyObject* item
    cdef PyTypeObject* t
    cdef long long v
    cdef int overflow
    if PyTuple_Check(event):
        is_tuple = True
        if PyTuple_GET_SIZE(event) != n_fields:
            return f"events must have the {n_fields} fields of Event"
    elif type(event) is list:
        is_tuple = False
        if PyList_GET_SIZE(event) != n_fields:
            return f"events must have the {n_fields} fields of Event"
    else:
        return f"an event must be a tuple (exchange.core.events.Event), not {event!r:.200}"
    item = _item(event, 0, is_tuple)
    if Py_TYPE(item) is not &PyLong_Type:
        return _WRONG_SEQ
    v = PyLong_AsLongLongAndOverflow(item, &overflow)
    if overflow or v != seq:
        return _WRONG_SEQ
    for i in range(1, n_typed):
        item = _item(event, i, is_tuple)
        t = Py_TYPE(item)
        if item is Py_None:
            if code[i] == b"i" or code[i] == b"s":
                return f"event seq {seq}: {names[i]} is None (NOT NULL)"
        elif code[i] == b"i" or code[i] == b"I":
            if t is not &PyLong_Type:
                value = <object>item
                return (
                    f"event seq {seq}: {names[i]} is {value!r:.80} "
                    f"({type(value).__name__}), not an integer"
                )
            PyLong_AsLongLongAndOverflow(item, &overflow)
            if overflow:
                value = <object>item
                return f"event seq {seq}: {names[i]} {value} does not fit in int64"
        elif t is not &PyUnicode_Type:
            value = <object>item
            return (
                f"event seq {seq}: {names[i]} is {value!r:.80} "
                f"({type(value).__name__}), not text"
            )
    return None


def first_bad(events, long long first, Py_ssize_t n_fields, bytes codes, names):
    """The first event of ``events`` that cannot be stored, as ``(position, reason)``, or
    None if every one can. An event must be a tuple or a list of ``n_fields`` items whose
    seq (item 0) is ``first`` + its position, and whose leading ``len(codes)`` items match
    their column's code (``INT``/``INT_OR_NULL``: an int within int64, ``TEXT``/
    ``TEXT_OR_NULL``: a str; ``None`` only where nullable). ``names``: the typed fields'
    names, for the reason. ``reason`` is None for a wrong seq (the caller words it)."""
    cdef Py_ssize_t k = 0
    cdef Py_ssize_t n_typed = len(codes)
    cdef const char* code = codes
    for event in events:
        why = _check(event, first + k, n_fields, code, n_typed, names)
        if why is not None:
            return k, (None if why is _WRONG_SEQ else why)
        k += 1
    return None


# ---------------------------------------------------------------------- the canonical bytes in C
# An event's canonical bytes are ``orjson.dumps(tuple(event), option=OPT_SORT_KEYS)``
# (exchange.core.events.encode, the definition). The encoder below writes the same bytes for
# the values events hold -- exact ``str``, ``int``, ``bool``, ``None``, ``dict`` (str keys),
# ``list`` and ``tuple`` -- and hands any event holding anything else (a float, a subclass, an
# int past 64 bits, a lone surrogate, a non-str key, nesting deeper than _MAX_DEPTH) to orjson
# whole, so that the bytes, or the error, are orjson's own. It calls no Python code while it
# walks an event (no __hash__, __eq__ or __str__ of anything), so the borrowed references it
# holds stay valid.

import orjson as _orjson

from exchange.core._compact import expand as _expand

#: the options whose output the C encoder writes (exchange.core.events.ENCODE_OPTIONS); any
#: other options send every event to ``dumps``
_SORT_KEYS = _orjson.OPT_SORT_KEYS

cdef enum:
    # nesting (the event's own array is level 1) past which an event goes to orjson, which
    # refuses past its own limit (254): events nest two or three levels deep
    _MAX_DEPTH = 64
    # dict sizes sorted on the stack
    _STACK_KEYS = 16
    # what writing a value gives: written, or not the C encoder's (the event goes to orjson)
    _DONE = 0
    _ORJSON = 1

cdef struct _Key:
    const char* s
    Py_ssize_t n
    PyObject* value

# what a byte of a string becomes: 0 copied as it is, else the character after the backslash
# ('u' for \u00XX), as orjson escapes it: control characters, the quote and the backslash;
# DEL and every byte of a non-ASCII character (UTF-8, all >= 0x80) are copied
cdef char _ESCAPE[256]
cdef int _b
for _b in range(256):
    _ESCAPE[_b] = 0
for _b in range(0x20):
    _ESCAPE[_b] = b"u"
_ESCAPE[0x08] = b"b"
_ESCAPE[0x09] = b"t"
_ESCAPE[0x0A] = b"n"
_ESCAPE[0x0C] = b"f"
_ESCAPE[0x0D] = b"r"
_ESCAPE[0x22] = b'"'
_ESCAPE[0x5C] = b"\\"
cdef const char* _HEX = b"0123456789abcdef"
cdef const char* _DIGITS2 = (
    b"00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    b"40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    b"8081828384858687888990919293949596979899"
)


cdef int _grow(Buf* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t need = b.len + extra
    cdef Py_ssize_t cap = b.cap * 2 if b.cap else 1 << 16
    cdef char* data
    while cap < need:
        cap *= 2
    data = <char*>realloc(b.data, cap)
    if data == NULL:
        raise MemoryError()
    b.data = data
    b.cap = cap
    return 0


cdef inline int _put(Buf* b, const char* s, Py_ssize_t n) except -1:
    if b.len + n > b.cap:
        _grow(b, n)
    memcpy(b.data + b.len, s, n)
    b.len += n
    return 0


cdef inline int _put1(Buf* b, char c) except -1:
    if b.len >= b.cap:
        _grow(b, 1)
    b.data[b.len] = c
    b.len += 1
    return 0


cdef int put_u64(Buf* b, unsigned long long v, bint negative) except -1:
    """``v`` in decimal, after a minus sign if ``negative``: written backwards two digits a
    division into a scratch area, then moved as one fixed 24-byte copy (the bytes past the
    number are scratch in the buffer's spare room, overwritten by what follows)."""
    cdef char tmp[48]
    cdef char* p = tmp + 24
    cdef unsigned long long r
    cdef Py_ssize_t n
    if b.len + 24 > b.cap:
        _grow(b, 24)
    while v >= 100:
        r = v % 100
        v //= 100
        p -= 2
        p[0] = _DIGITS2[2 * r]
        p[1] = _DIGITS2[2 * r + 1]
    if v >= 10:
        p -= 2
        p[0] = _DIGITS2[2 * v]
        p[1] = _DIGITS2[2 * v + 1]
    else:
        p -= 1
        p[0] = <char>(48 + v)
    if negative:
        p -= 1
        p[0] = b"-"
    n = tmp + 24 - p
    memcpy(b.data + b.len, p, 24)
    b.len += n
    return 0


cdef inline bint _needs_escape(unsigned long long w) noexcept nogil:
    """Whether one of the eight bytes of ``w`` is a control character (< 0x20), a quote or a
    backslash (the classic bit tricks: a byte is zero in ``w ^ (c * ONES)`` where it was
    ``c``; the high bit of a byte below 0x20 survives ``w - 0x20 * ONES`` and ``~w``; bytes
    of non-ASCII characters, all >= 0x80, never match)."""
    cdef unsigned long long ones = 0x0101010101010101ULL
    cdef unsigned long long high = 0x8080808080808080ULL
    cdef unsigned long long q = w ^ (ones * 0x22)
    cdef unsigned long long bs = w ^ (ones * 0x5C)
    return (
        ((w - ones * 0x20) & ~w)
        | ((q - ones) & ~q)
        | ((bs - ones) & ~bs)
    ) & high != 0


cdef int put_text(Buf* b, const char* s, Py_ssize_t n) except -1:
    """``s`` (``n`` bytes of UTF-8) as a JSON string, escaped as orjson escapes it."""
    cdef Py_ssize_t i
    cdef unsigned char c
    cdef char e
    cdef char* out
    cdef unsigned long long w
    if b.len + 6 * n + 2 > b.cap:  # the worst case: every byte as \u00XX
        _grow(b, 6 * n + 2)
    out = b.data + b.len
    out[0] = b'"'
    out += 1
    i = 0
    while i + 8 <= n:  # eight bytes at a time while none of them needs escaping
        memcpy(&w, s + i, 8)
        if _needs_escape(w):
            break
        memcpy(out, &w, 8)
        out += 8
        i += 8
    while i < n:
        c = <unsigned char>s[i]
        i += 1
        e = _ESCAPE[c]
        if e == 0:
            out[0] = <char>c
            out += 1
        elif e == b"u":
            out[0] = b"\\"
            out[1] = b"u"
            out[2] = b"0"
            out[3] = b"0"
            out[4] = _HEX[c >> 4]
            out[5] = _HEX[c & 15]
            out += 6
        else:
            out[0] = b"\\"
            out[1] = e
            out += 2
    out[0] = b'"'
    b.len = out + 1 - b.data
    return 0


cdef inline const char* _utf8(PyObject* s, Py_ssize_t* n) noexcept:
    """The UTF-8 bytes of the str ``s``, or NULL (no error set) for a lone surrogate, which
    orjson refuses. An ASCII str is its own UTF-8."""
    cdef const char* u
    if PyUnicode_IS_COMPACT_ASCII(s):
        n[0] = PyUnicode_GET_LENGTH(s)
        return <const char*>PyUnicode_DATA(s)
    u = PyUnicode_AsUTF8AndSize(s, n)
    if u == NULL:
        PyErr_Clear()
    return u


cdef int _key_order(const void* a, const void* b) noexcept nogil:
    """Keys by their UTF-8 bytes (code point order), shorter first on a common prefix: the
    order orjson's OPT_SORT_KEYS gives (it compares the keys as Rust strs)."""
    cdef const _Key* x = <const _Key*>a
    cdef const _Key* y = <const _Key*>b
    cdef Py_ssize_t n = x.n if x.n < y.n else y.n
    cdef int c = memcmp(x.s, y.s, n)
    if c != 0:
        return c
    return (x.n > y.n) - (x.n < y.n)


cdef int _put_sorted(Buf* b, PyObject* d, _Key* keys, Py_ssize_t n, int depth) except -1:
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t j
    cdef PyObject* key
    cdef PyObject* value
    cdef _Key k
    cdef int r
    while PyDict_Next(d, &pos, &key, &value):
        if Py_TYPE(key) is not &PyUnicode_Type:
            return _ORJSON  # orjson refuses it ("Dict key must be str"): its error
        keys[i].s = _utf8(key, &keys[i].n)
        if keys[i].s == NULL:
            return _ORJSON
        keys[i].value = value
        i += 1
    if n <= _STACK_KEYS:  # insertion sort: a few keys
        for i in range(1, n):
            k = keys[i]
            j = i - 1
            while j >= 0 and _key_order(&keys[j], &k) > 0:
                keys[j + 1] = keys[j]
                j -= 1
            keys[j + 1] = k
    else:
        qsort(keys, n, sizeof(_Key), _key_order)
    _put1(b, b"{")
    for i in range(n):
        if i:
            _put1(b, b",")
        put_text(b, keys[i].s, keys[i].n)
        _put1(b, b":")
        r = put_value(b, keys[i].value, depth)
        if r != _DONE:
            return r
    _put1(b, b"}")
    return _DONE


cdef int _put_dict(Buf* b, PyObject* d, int depth) except -1:
    cdef Py_ssize_t n = PyDict_GET_SIZE(d)
    cdef _Key stack[_STACK_KEYS]
    cdef _Key* keys
    cdef int r
    if n == 0:
        return _put(b, b"{}", 2)
    if n <= _STACK_KEYS:
        return _put_sorted(b, d, stack, n, depth)
    keys = <_Key*>malloc(n * sizeof(_Key))
    if keys == NULL:
        raise MemoryError()
    try:
        r = _put_sorted(b, d, keys, n, depth)
    finally:
        free(keys)
    return r


cdef int _put_items(Buf* b, PyObject* seq, bint is_tuple, int depth) except -1:
    cdef Py_ssize_t n = _tuple_size(seq) if is_tuple else _list_size(seq)
    cdef Py_ssize_t i
    cdef int r
    _put1(b, b"[")
    for i in range(n):
        if i:
            _put1(b, b",")
        r = put_value(b, _tuple_item(seq, i) if is_tuple else _list_item(seq, i), depth)
        if r != _DONE:
            return r
    _put1(b, b"]")
    return _DONE


cdef int put_value(Buf* b, PyObject* value, int depth) except -1:
    cdef PyTypeObject* t = Py_TYPE(value)
    cdef const char* s
    cdef Py_ssize_t n
    cdef long long v
    cdef unsigned long long u
    cdef int overflow
    if t is &PyUnicode_Type:
        s = _utf8(value, &n)
        if s == NULL:
            return _ORJSON
        return put_text(b, s, n)
    if t is &PyLong_Type:
        if _small_int(value, &v):
            if v < 0:
                return put_u64(b, (<unsigned long long>0) - <unsigned long long>v, True)
            return put_u64(b, <unsigned long long>v, False)
        v = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow == 0:
            if v < 0:
                return put_u64(b, (<unsigned long long>0) - <unsigned long long>v, True)
            return put_u64(b, <unsigned long long>v, False)
        if overflow < 0:
            return _ORJSON  # below int64: orjson refuses it
        u = PyLong_AsUnsignedLongLong(value)
        if u == <unsigned long long>-1 and PyErr_Occurred() != NULL:
            PyErr_Clear()
            return _ORJSON  # past uint64: orjson refuses it
        return put_u64(b, u, False)
    if value is Py_None:
        return _put(b, b"null", 4)
    if t is &PyBool_Type:
        if value is Py_True:
            return _put(b, b"true", 4)
        return _put(b, b"false", 5)
    if depth >= _MAX_DEPTH:
        return _ORJSON
    if t is &PyDict_Type:
        return _put_dict(b, value, depth + 1)
    if t is &PyList_Type:
        return _put_items(b, value, False, depth + 1)
    if t is &PyTuple_Type:
        return _put_items(b, value, True, depth + 1)
    return _ORJSON  # a float, a subclass, anything else: orjson's bytes or orjson's error


cdef int put_event(Buf* b, object event, object dumps, object options, bint c) except -1:
    """``event``'s canonical bytes, in C where it can, else ``dumps(tuple(event), None,
    options)`` (a list as it is), appended to ``b``."""
    cdef Py_ssize_t start = b.len
    cdef bytes payload
    cdef bint is_tuple = _plain_tuple(<PyObject*>event)
    if c and (is_tuple or PyList_CheckExact(event)):
        if _put_items(b, <PyObject*>event, is_tuple, 1) == _DONE:
            return 0
        b.len = start  # not mine: orjson writes it, or refuses it
    if type(event) is not list:
        event = PySequence_Tuple(event)  # orjson writes a tuple, not a namedtuple
    payload = dumps(event, None, options)
    return _put(b, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload))


#: the output buffer kept between batches (growing a fresh one and faulting its pages in cost
#: more than encoding a small batch), unless it grew past _SPARE_MAX bytes
cdef Buf _spare
_spare.data = NULL
_spare.len = 0
_spare.cap = 0
cdef bint _spare_busy = False
cdef Py_ssize_t _SPARE_MAX = 16 << 20


cdef bytes _encode(events, dumps, options):
    global _spare, _spare_busy
    cdef Buf b
    cdef bint c = options == _SORT_KEYS
    cdef bint spare = not _spare_busy
    if spare:  # the buffer of the last batch, its pages already mapped
        b = _spare
        _spare_busy = True
    else:  # a call in the middle of another (a thread switch in a fallback's dumps)
        b.data = NULL
        b.cap = 0
    b.len = 0
    try:
        for event in events:
            put_event(&b, event, dumps, options, c)
            _put1(&b, b"\n")
        return PyBytes_FromStringAndSize(b.data, b.len)
    finally:
        if spare and b.cap <= _SPARE_MAX:
            _spare = b
            _spare_busy = False
        else:
            free(b.data)
            if spare:
                _spare.data = NULL
                _spare.cap = 0
                _spare_busy = False


def encode_event(event, dumps, options):
    """``event``'s canonical bytes (:func:`exchange.core.events.encode`: ``dumps(tuple(event),
    None, options)``), written in C for ``options`` = ``OPT_SORT_KEYS`` wherever orjson's bytes
    are known (see above), else by ``dumps``: the same bytes or the same error either way."""
    cdef Buf b
    b.data = NULL
    b.len = 0
    b.cap = 0
    try:
        put_event(&b, event, dumps, options, options == _SORT_KEYS)
        return PyBytes_FromStringAndSize(b.data, b.len)
    finally:
        free(b.data)


def encode_batch(events, dumps, options):
    """Every event's canonical payload (``dumps(tuple(event), None, options)``, see
    :func:`encode_event`) followed by a newline, in order, as one ``bytes``: a batch's
    ``events`` blob. ``events`` are tuples (``Event``) or lists of the fields. Raises what
    ``dumps`` raises for the first event it refuses."""
    return _encode(events, dumps, options)


cdef int put_bytes(Buf* b, const char* s, Py_ssize_t n) except -1:
    """``n`` bytes of ``s`` as they are (a constant fragment of a line)."""
    return _put(b, s, n)


# ---------------------------------------------------------------------- the sink of lines
class BadLine(ValueError):
    """An event a :class:`LineBatch` took cannot be stored: raised by :meth:`LineBatch.take`
    for the batch that holds it (where :meth:`EventStore.append` would refuse that batch).
    ``seq``: the seq its line holds; ``position``: its place in the batch; ``reason``: why,
    or None for a seq that does not follow the one before (``got``: the event's seq then)."""

    def __init__(self, seq, position, reason, got):
        super().__init__(reason or f"event seq {got!r} at position {position}")
        self.seq, self.position, self.reason, self.got = seq, position, reason, got


cdef class LineBatch:
    """An engine's sink that keeps each event as its canonical line (``encode(event) +
    b"\\n"``) in one growing C buffer, with the line's end and the event's ``t`` (ns): no
    Python object kept per event.

    ``append(event)`` checks ``event`` as the store would (``codes``/``names``/``n_fields``:
    :func:`first_bad`'s; ``codes`` None: no checks) and writes its line; the compiled kernel
    writes its own events' lines (``end_line``). The lines' seqs run from ``first`` (the
    engine's first event: 1). :meth:`take` hands the first ``n`` lines over as one blob.
    A refused event does not raise here, in the middle of the engine's command: the
    :meth:`take` of its batch raises :class:`BadLine`, as the store refuses that batch."""

    def __cinit__(self):
        self.buf.data = NULL
        self.buf.len = 0
        self.buf.cap = 0
        self.ends = NULL
        self.ts = NULL
        self.count = 0
        self.lines_cap = 0
        self.appended = 0
        self.stored = False
        self.raws = NULL
        self.tok.out = NULL
        self.tok.state = NULL

    def __init__(self, long long first=1, bytes codes=None, names=None, Py_ssize_t n_fields=13):
        self.first = first
        self.dumps = _orjson.dumps
        self.options = _SORT_KEYS
        self.codes = codes
        self.names = names
        self.n_fields = n_fields
        self.bad_check = None
        self.bad_encode = None

    def __dealloc__(self):
        free(self.buf.data)
        free(self.ends)
        free(self.ts)
        free(self.raws)
        tokens_free(&self.tok)

    def __len__(self):
        """The lines held (events appended and not yet taken)."""
        return self.count

    @property
    def first(self):
        """The seq of the first line held (of the next one, when none is)."""
        return self.first

    @property
    def appended(self):
        """How many lines :meth:`append` wrote (from Event tuples), taken or not; the others
        were written by the compiled kernel, with no Event made."""
        return self.appended

    @property
    def tap(self):
        """The :class:`Tap` reading these lines, or None (see :meth:`watch`)."""
        return self.tap

    def watch(self, Tap tap):
        """Let ``tap`` read the lines from the next one on: it is told (``on_wanted``) of a
        wanted line as it is written, and asked (``on_take``) to scan before :meth:`take`
        hands over lines it has not scanned. One tap at a time (ValueError for a second);
        None: none. A tap reads JSON lines: lines kept in their stored form
        (:meth:`store_compact`) go back to lines first, and stay lines."""
        if tap is not None and self.tap is not None:
            raise ValueError("these lines already have a tap")
        if tap is not None:
            if self.stored:
                self._to_lines()
            tap.next_seq = self.first + self.count
        self.tap = tap

    def store_compact(self, Py_ssize_t batch_size):
        """From the next line on, keep the lines as the stored form of the store's batches
        (``compact`` of each batch's blob, written line by line as each ends: no blob of
        JSON lines to compact later), batches of ``batch_size`` lines from the next one:
        :meth:`take` then gives a batch's stored form, and takes a batch whole -- or the
        lines held, fewer, which ends their batch there (a run's last). Only on lines with
        no tap, before any is written (ValueError otherwise)."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.count or self.tap is not None:
            raise ValueError("the stored form starts with no line held and no tap")
        if not self.stored:
            tokens_init(&self.tok)
            self.stored = True
        self.per_batch = batch_size
        self.opened = 0
        self.next_open = self.first

    @property
    def stored(self):
        """Whether :meth:`take` gives each batch's stored form (:meth:`store_compact`), not
        its JSON lines."""
        return self.stored

    @property
    def nbytes(self):
        """The bytes of the lines held (their stored form, if kept so)."""
        return self.tok.n if self.stored else self.buf.len

    cdef int _to_lines(self) except -1:
        """The lines held, from their stored form back to JSON lines in ``buf`` (each batch
        expanded), and the lines kept as lines from then on."""
        cdef Py_ssize_t i, start = 0, size = 0
        cdef const char* end
        cdef bytes blob
        parts = []
        for i in range(self.count):  # (the first held line starts a batch)
            if i + 1 == self.count or (i + 1) % self.per_batch == 0:
                parts.append(_expand(PyBytes_FromStringAndSize(
                    <char*>self.tok.out + start, self.ends[i] - start)))
                start = self.ends[i]
        blob = b"".join(parts)
        self.buf.len = 0
        put_bytes(&self.buf, PyBytes_AS_STRING(blob), PyBytes_GET_SIZE(blob))
        for i in range(self.count):  # each line's end, found in the lines themselves
            end = <const char*>memchr(self.buf.data + size, 10, self.buf.len - size)
            size = end - self.buf.data + 1
            self.ends[i] = size
        tokens_free(&self.tok)
        self.stored = False
        return 0

    cdef int open_batch(self, long long seq) except -1:
        """Open the batch whose first line is ``seq``'s, if it is one and not open yet (a line
        dropped and written again opens it once)."""
        if seq >= self.next_open:  # (seq == next_open: lines come one seq at a time)
            tokens_batch(&self.tok)
            self.opened = seq
            self.next_open = seq + self.per_batch
        return 0

    cdef int _grow_lines(self) except -1:
        """Room for twice the lines (``ends``, ``ts``, ``raws``)."""
        cdef Py_ssize_t cap = self.lines_cap * 2 if self.lines_cap else 4096
        cdef void* p = realloc(self.ends, cap * sizeof(Py_ssize_t))
        if p == NULL:
            raise MemoryError()
        self.ends = <Py_ssize_t*>p
        p = realloc(self.ts, cap * sizeof(long long))
        if p == NULL:
            raise MemoryError()
        self.ts = <long long*>p
        p = realloc(self.raws, cap * sizeof(Py_ssize_t))
        if p == NULL:
            raise MemoryError()
        self.raws = <Py_ssize_t*>p
        self.lines_cap = cap
        return 0

    cdef int _stored_line(self) except -1:
        """End the line written in ``buf`` (stored form): its tokens, in its batch."""
        cdef Py_ssize_t n = self.buf.len
        cdef long long seq = self.first + self.count
        if n + 1 + 16 > self.buf.cap:
            _grow(&self.buf, 1 + 16)
        self.buf.data[n] = b"\n"
        memset(self.buf.data + n + 1, 0, 16)  # the tokenizer reads 16 bytes past a line
        self.open_batch(seq)
        tokens_line(&self.tok, <const unsigned char*>self.buf.data, n)
        self.raws[self.count] = n + 1
        self.buf.len = 0
        return 0

    cdef int end_line(self, long long t) except -1:
        """Close the line just written (its newline, its end, ``t``)."""
        cdef Py_ssize_t cap, start
        cdef void* p
        if not self.stored:
            _put1(&self.buf, b"\n")
        if self.count == self.lines_cap:
            self._grow_lines()
        if self.stored:
            self._stored_line()
            self.ends[self.count] = self.tok.n
            self.ts[self.count] = t
            self.count += 1
            return 0
        self.ends[self.count] = self.buf.len
        self.ts[self.count] = t
        self.count += 1
        if self.tap is not None:  # a reader watches the lines: told of a wanted one (rarely)
            start = self.ends[self.count - 2] if self.count > 1 else 0
            self.tap.line_ended(self.buf.data + start, self.buf.len - 1 - start, t)
        return 0

    def append(self, event):
        """Check ``event`` (an ``Event``) and write its line. Never raises for the event
        itself (see :class:`LineBatch`); MemoryError only."""
        cdef long long seq = self.first + self.count
        cdef Py_ssize_t start = self.buf.len
        cdef long long t = 0
        cdef int overflow = 0
        cdef PyObject* item
        if self.codes is not None and self.bad_check is None:
            why = _check(event, seq, self.n_fields, self.codes, len(self.codes), self.names)
            if why is not None:
                got = event[0] if isinstance(event, (tuple, list)) and len(event) else None
                self.bad_check = (seq, None if why is _WRONG_SEQ else why, got)
        try:
            put_event(&self.buf, event, self.dumps, self.options, True)
        except _orjson.JSONEncodeError as exc:
            self.buf.len = start  # a placeholder: the batch holding it is never stored
            _put(&self.buf, b"null", 4)
            if self.bad_encode is None:
                self.bad_encode = (seq, str(exc))
        if _plain_tuple(<PyObject*>event) and PyTuple_GET_SIZE(event) > 1:
            item = PyTuple_GET_ITEM(event, 1)
            if Py_TYPE(item) is &PyLong_Type:
                t = PyLong_AsLongLongAndOverflow(item, &overflow)
                if overflow:
                    t = 0
        self.end_line(t)
        self.appended += 1

    def take(self, Py_ssize_t n):
        """The first ``n`` lines (all there are, if fewer), removed, as ``(blob, first, count,
        last_t)``: the bytes as the store keeps them, the seq of the first line, the lines'
        count and the ``t`` of the last one (ns). Raises :class:`BadLine` (the lines are
        gone) if one of them is an event the store refuses, the first one refused; the
        checks' refusals before orjson's, as :meth:`EventStore.encode_batch` reports them."""
        n = self._taking(n)
        if self.stored:
            blob = self._stored_blob(n)
        else:
            blob = PyBytes_FromStringAndSize(self.buf.data, self.ends[n - 1])
        first, last_t = self._remove(n)
        return blob, first, n, last_t

    def size_of(self, Py_ssize_t n):
        """The bytes of the blob :meth:`take` would give for ``n`` (0 when none is held)."""
        cdef Py_ssize_t raw
        if n > self.count:
            n = self.count
        if n <= 0:
            return 0
        if self.stored:
            raw = self._raw_size(n)
            if raw >= 0:
                return raw + 1
        return self.ends[n - 1]

    cdef Py_ssize_t _raw_size(self, Py_ssize_t n) except -2:
        """Stored form: -1 where the batch of the first ``n`` lines is stored as its tokens,
        else the bytes of its JSON lines (``compact`` stores a batch raw, as ``FORMAT_RAW``
        and the lines, where its tokens are not smaller). ``raws`` holds a lower bound of each
        line's JSON bytes (exact for a line given as JSON; the kernel's typed lines count an
        int as one digit and a line's seq and t as one each, decision 111): tokens smaller
        than that sum are smaller than the lines, and only otherwise are the lines counted,
        from the tokens expanded."""
        cdef Py_ssize_t i, end = self.ends[n - 1], bound = 0
        for i in range(n):
            bound += self.raws[i]
        if end < bound + 1:
            return -1
        raw = len(_expand(PyBytes_FromStringAndSize(<char*>self.tok.out, end)))
        return -1 if end < raw + 1 else raw

    cdef bytes _stored_blob(self, Py_ssize_t n):
        """The stored form of the batch of the first ``n`` lines: its tokens, or, where those
        are not smaller than its JSON lines, ``FORMAT_RAW`` and the lines (as ``compact``)."""
        cdef Py_ssize_t end = self.ends[n - 1]
        cdef bytes tokens = PyBytes_FromStringAndSize(<char*>self.tok.out, end)
        if self._raw_size(n) >= 0:
            return b"\x00" + _expand(tokens)
        return tokens

    def take_into(self, Py_ssize_t n, target, Py_ssize_t offset):
        """:meth:`take`, the blob written into ``target`` (a writable buffer: the one a run
        shares with its journaller) at ``offset`` instead of made into a ``bytes``:
        ``(first, count, last_t, size)``. ValueError (nothing taken) if it does not fit
        there; :class:`BadLine` as :meth:`take` raises it (the bytes written all the same)."""
        cdef Py_buffer view
        cdef Py_ssize_t size
        cdef const char* data
        n = self._taking(n)
        blob = None
        if not self.stored:
            data = self.buf.data
            size = self.ends[n - 1]
        elif self._raw_size(n) < 0:
            data = <const char*>self.tok.out
            size = self.ends[n - 1]
        else:  # the raw form (rare)
            blob = self._stored_blob(n)
            data = PyBytes_AS_STRING(blob)
            size = PyBytes_GET_SIZE(blob)
        PyObject_GetBuffer(target, &view, PyBUF_WRITABLE)
        try:
            if offset < 0 or offset + size > view.len:
                raise ValueError(
                    f"{size} bytes do not fit at {offset} in a buffer of {view.len}"
                )
            memcpy(<char*>view.buf + offset, data, size)
        finally:
            PyBuffer_Release(&view)
        first, last_t = self._remove(n)
        return first, n, last_t, size

    cdef Py_ssize_t _taking(self, Py_ssize_t n) except -1:
        """The lines a take of ``n`` takes (ValueError for none), scanned by the tap first."""
        cdef long long first = self.first
        cdef Py_ssize_t whole
        if n > self.count:
            n = self.count
        if n <= 0:
            raise ValueError("no lines to take")
        if self.stored:  # a batch's token stream is taken whole (the first held starts one)
            whole = self.per_batch if self.per_batch < self.count else self.count
            if n != whole:
                raise ValueError(
                    f"lines kept in their stored form are taken a batch at a time: {n} lines "
                    f"from seq {first} is not the batch there ({whole})"
                )
        if self.tap is not None and self.tap.next_seq < first + n:
            self.tap.on_take()  # the reader scans the lines before they leave
            if self.tap is not None and self.tap.next_seq < first + n:
                raise RuntimeError(
                    f"lines up to seq {first + n - 1} taken before their reader scanned them "
                    f"(it is at seq {self.tap.next_seq})"
                )
        return n

    cdef tuple _remove(self, Py_ssize_t n):
        """Drop the first ``n`` lines (their bytes read already): ``(first, last_t)``; raises
        :class:`BadLine` for the first refused event among them."""
        cdef Py_ssize_t end = self.ends[n - 1]
        cdef long long first = self.first
        cdef long long last_t = self.ts[n - 1]
        cdef Py_ssize_t i
        # the lines left move to the front (a batch's worth at most, in a run's drain)
        if self.stored:
            tokens_consume(&self.tok, end)
        else:
            memmove(self.buf.data, self.buf.data + end, self.buf.len - end)
            self.buf.len -= end
        self.count -= n
        for i in range(self.count):
            self.ends[i] = self.ends[i + n] - end
            self.ts[i] = self.ts[i + n]
        if self.stored:
            memmove(self.raws, self.raws + n, self.count * sizeof(Py_ssize_t))
            if n < self.per_batch:  # a batch taken short: the next line starts another
                self.next_open = self.first + n
        self.first = first + n
        for bad in (self.bad_check, self.bad_encode):
            if bad is not None and bad[0] < first + n:
                self.bad_check = self.bad_encode = None
                raise BadLine(bad[0], bad[0] - first, bad[1], bad[2] if len(bad) > 2 else None)
        return first, last_t


# ---------------------------------------------------------------------- a reader of the lines
# The bot runner reads a recorded run's events from its LineBatch (issue #20, point 4): which
# kinds a line is of, which watched accounts it names, and the few lines bots are told about,
# found in C on the lines as written; only those few are decoded (an Event each).

import numpy as _np


cdef inline unsigned long long _hash(const char* s, Py_ssize_t n) noexcept nogil:
    """A hash of ``n`` bytes from their length and their first and last eight (tokens differ
    there: names, kinds; equal hashes are told apart by the bytes)."""
    cdef unsigned long long a = 0
    cdef unsigned long long b = 0
    if n >= 8:
        memcpy(&a, s, 8)
        memcpy(&b, s + n - 8, 8)
    else:
        memcpy(&a, s, n)
    a = (a ^ (b * 0x9E3779B97F4A7C15ULL) ^ <unsigned long long>n) * 0xBF58476D1CE4E5B9ULL
    return a ^ (a >> 31)


cdef int _table_init(_Table* table, list tokens) except -1:
    """``table`` over ``tokens`` (bytes, held by the caller): each token's index, the first
    of equal ones."""
    cdef Py_ssize_t size = 16
    cdef Py_ssize_t i, j, k
    cdef bytes token
    table.count = len(tokens)
    while size < 4 * table.count:
        size *= 2
    table.mask = size - 1
    table.slots = <Py_ssize_t*>malloc(size * sizeof(Py_ssize_t))
    table.s = <const char**>malloc((table.count + 1) * sizeof(const char*))
    table.n = <Py_ssize_t*>malloc((table.count + 1) * sizeof(Py_ssize_t))
    if table.slots == NULL or table.s == NULL or table.n == NULL:
        raise MemoryError()
    for j in range(size):
        table.slots[j] = -1
    for i in range(table.count):
        token = tokens[i]
        table.s[i] = PyBytes_AS_STRING(token)
        table.n[i] = PyBytes_GET_SIZE(token)
        if _table_find(table, table.s[i], table.n[i]) >= 0:
            continue
        j = _hash(table.s[i], table.n[i]) & table.mask
        while table.slots[j] != -1:
            j = (j + 1) & table.mask
        table.slots[j] = i
    return 0


cdef inline Py_ssize_t _table_find(_Table* table, const char* s, Py_ssize_t n) noexcept nogil:
    """The index of the token ``s`` (``n`` bytes), or -1."""
    cdef Py_ssize_t j = _hash(s, n) & table.mask
    cdef Py_ssize_t k
    while True:
        k = table.slots[j]
        if k == -1:
            return -1
        if table.n[k] == n and memcmp(table.s[k], s, n) == 0:
            return k
        j = (j + 1) & table.mask


cdef void _table_free(_Table* table) noexcept:
    free(table.slots)
    free(<void*>table.s)
    free(table.n)
    table.slots = NULL
    table.s = NULL
    table.n = NULL


# per byte: 1 where the scan of a scalar stops -- a number's or literal's end (``,`` ``]``)
# in _ENDS_BARE, a string's quote or escape (``"`` ``\\``) in _ENDS_TEXT -- and, in both, at
# a newline: every line a tap reads is followed by its own, which bounds each scan with one
# look-up per byte (a canonical line holds no raw newline: JSON escapes it)
cdef char _ENDS_BARE[256]
cdef char _ENDS_TEXT[256]
for _b in range(256):
    _ENDS_BARE[_b] = _b in (0x2C, 0x5D, 0x0A)
    _ENDS_TEXT[_b] = _b in (0x22, 0x5C, 0x0A)


cdef inline const char* _skip(const char* p, const char* end) noexcept nogil:
    """Past the scalar JSON token at ``p`` (a string, a number, null, true, false): at the
    ``,`` or ``]`` after it, or NULL if it is not a scalar or the line ends first. The byte
    at ``end`` is the line's newline (see _ENDS_BARE)."""
    if p >= end:
        return NULL
    if p[0] == b'"':
        p += 1
        while True:
            while not _ENDS_TEXT[<unsigned char>p[0]]:
                p += 1
            if p >= end or p[0] == b"\n":
                return NULL
            if p[0] == b'"':
                return p + 1
            if p + 2 > end:  # an escape whose second byte would be past the line
                return NULL
            p += 2
    if p[0] == b"[" or p[0] == b"{":
        return NULL
    while not _ENDS_BARE[<unsigned char>p[0]]:
        p += 1
    return p if p < end and p[0] != b"\n" else NULL


cdef inline int _tokens(const char* line, Py_ssize_t n, int upto,
                        const char** starts, Py_ssize_t* sizes) noexcept nogil:
    """The first ``upto`` fields of a line (``[f0,f1,...]``, scalars) as (start, size); 0 if
    the line is not such an array (a placeholder ``null``, a non-scalar field), else 1."""
    cdef const char* end = line + n
    cdef const char* p = line
    cdef const char* q
    cdef int i
    if n < 2 or p[0] != b"[":
        return 0
    p += 1
    for i in range(upto):
        q = _skip(p, end)
        if q == NULL or q[0] != b",":
            return 0
        starts[i] = p
        sizes[i] = q - p
        p = q + 1
    return 1


cdef enum:
    _KIND = 2          # the fields a tap reads: kind, account, counterparty
    _ACCOUNT = 4
    _COUNTERPARTY = 10
    _SCALARS = 12      # the scalar fields before data, parsed per line
    # an account field's code: its account's index, or
    _NULL = -1         # null
    _OTHER = -2        # an account not watched (or not a string)
    # a kind's code: its index, or
    _UNKNOWN = -1      # a kind not known to the tap
    _MALFORMED = -2    # a line the scanner cannot read (decoded by ``decode``)
    _STRS = 512        # slots of the str cache
    _DATAS = 256       # slots of the data cache
    _CACHED = 112      # the longest token cached (_Str.s)


cdef extern from *:
    """
    /* An instance of ``type`` (a tuple or a subclass of it: Event) holding the ``n`` new
       references ``items`` (stolen, also on failure): what tuple.__new__(type, items) makes. */
    static PyObject* gpuex_tuple_steal(PyTypeObject* type, PyObject** items, Py_ssize_t n) {
        Py_ssize_t i;
        PyObject* t = type->tp_alloc(type, n);
        if (t == NULL) {
            for (i = 0; i < n; i++) Py_DECREF(items[i]);
            return NULL;
        }
        for (i = 0; i < n; i++) PyTuple_SET_ITEM(t, i, items[i]);
        return t;
    }
    """
    object _tuple_steal "gpuex_tuple_steal"(PyTypeObject* type, PyObject** items, Py_ssize_t n)


cdef extern from "Python.h":
    PyObject* _PyLong_FromLongLong "PyLong_FromLongLong"(long long v) except NULL
    PyObject* _PyUnicode_DecodeUTF8 "PyUnicode_DecodeUTF8"(
        const char* s, Py_ssize_t n, const char* errors) except NULL
    void Py_INCREF(PyObject* o)
    void Py_DECREF(PyObject* o)
    void Py_XDECREF(PyObject* o)
    PyObject* Py_False


cdef bytes _token(object value):
    """``value``'s JSON token as a line holds it (a str: quoted and escaped)."""
    cdef bytes array = encode_event([value], _orjson.dumps, _SORT_KEYS)  # b"[token]"
    return array[1:len(array) - 1]


cdef object _plain(bytes token, object value):
    """``value`` when it is a str whose token (a JSON string) has no escape -- what
    ``Tap._scalar`` builds from that token -- else None (the builder leaves it)."""
    return value if type(value) is str and b"\\" not in token else None


cdef class Tap:
    """A reader of a :class:`LineBatch`'s lines (the bot runner's market-data tap, issue #20
    point 4): :meth:`scan` reads the lines written since its last scan in C -- each line's
    kind, and whether its account and counterparty are watched ones -- with no Python object
    per line, and builds only the events of wanted kinds (in C, from the line: what
    ``decode(line)`` gives). Events whose data are the same bytes may share one data value
    (an order's type, a cancel's reason, repeated thousands of times): a reader treats them
    as read-only.

    Args:
        wanted: the kinds whose events :meth:`scan` returns (str).
        quiet: kinds of lines that name no account and change none (an account-less line of
            any other kind is reported as naming every account).
        accounts: the watched accounts (str), indexed in this order.
        on_wanted: ``on_wanted(t)`` is called as a line of a wanted kind is written whose
            ``t`` (ns) differs from the last one announced, or after :meth:`reset`.
        on_take: ``on_take()`` is called by :meth:`LineBatch.take` before it hands over a
            line not scanned yet; it must :meth:`scan`.
        event: the type the events are built as (``exchange.core.events.Event``).
        decode: ``decode(line)`` -> the event (``exchange.core.events.decode``): the lines
            the C builder does not read whole (an escaped string, a float, an int past 18
            digits, a line whose fields are not scalars) are given to it.
        flagged: wanted kinds whose events' places :meth:`scan` reports.
    """

    def __cinit__(self):
        self.quiet = NULL
        self.stale = NULL
        self.flagged = NULL
        self.strs = NULL
        self.datas = NULL
        self.col_kind = NULL
        self.col_account = NULL
        self.col_counterparty = NULL
        self.col_t = NULL
        self.kinds.slots = NULL
        self.kinds.s = NULL
        self.kinds.n = NULL
        self.accounts.slots = NULL
        self.accounts.s = NULL
        self.accounts.n = NULL

    def __init__(self, wanted, quiet, accounts, on_wanted, on_take, event, decode,
                 flagged=()):
        cdef Py_ssize_t i
        if self.quiet != NULL:
            raise RuntimeError("a Tap is made once")
        wanted = list(wanted)
        quiet = [k for k in quiet if k not in wanted]
        kind_tokens = [_token(k) for k in wanted + quiet]
        account_tokens = [_token(a) for a in accounts]
        flagged = frozenset(flagged)
        # (held[3], held[4]: the kinds and accounts themselves, by their tables' indexes: a
        # line's field whose token is found in a table is that very str, with no decoding --
        # None where the builder would leave the token to ``decode``: see _plain)
        self.held = [
            kind_tokens,
            account_tokens,
            flagged,
            [_plain(t, k) for t, k in zip(kind_tokens, wanted + quiet)],
            [_plain(t, a) for t, a in zip(account_tokens, accounts)],
        ]
        _table_init(&self.kinds, kind_tokens)
        _table_init(&self.accounts, account_tokens)
        self.n_wanted = len(wanted)
        self.wanted_set = frozenset(wanted)
        self.quiet = <char*>malloc(len(kind_tokens) + 1)
        self.flagged = <char*>malloc(len(kind_tokens) + 1)
        self.stale = <char*>malloc(len(account_tokens) + 1)
        self.strs = <_Str*>malloc(_STRS * sizeof(_Str))
        self.datas = <_Str*>malloc(_DATAS * sizeof(_Str))
        if (self.quiet == NULL or self.stale == NULL or self.flagged == NULL
                or self.strs == NULL or self.datas == NULL):
            raise MemoryError()
        for i in range(_STRS):
            self.strs[i].n = 0
            self.strs[i].obj = NULL
        for i in range(_DATAS):
            self.datas[i].n = 0
            self.datas[i].obj = NULL
        for i in range(len(kind_tokens)):
            self.quiet[i] = i >= self.n_wanted
            self.flagged[i] = i < self.n_wanted and wanted[i] in flagged
        for i in range(len(account_tokens)):
            self.stale[i] = 0
        self.on_wanted = on_wanted
        self.on_take = on_take
        self.event = event
        self.decode = decode
        self.has_at = False
        self.at = 0
        self.next_seq = 0
        self.col_cap = 0
        self.n_scanned = 0
        self.scan_first = 0

    def __dealloc__(self):
        cdef Py_ssize_t i
        _table_free(&self.kinds)
        _table_free(&self.accounts)
        free(self.quiet)
        free(self.stale)
        free(self.flagged)
        free(self.col_kind)
        free(self.col_account)
        free(self.col_counterparty)
        free(self.col_t)
        if self.strs != NULL:
            for i in range(_STRS):
                Py_XDECREF(self.strs[i].obj)
            free(self.strs)
        if self.datas != NULL:
            for i in range(_DATAS):
                Py_XDECREF(self.datas[i].obj)
            free(self.datas)

    @property
    def next_seq(self):
        """The seq of the first line not scanned yet."""
        return self.next_seq

    def wants(self, kind):
        """Whether ``kind`` (str) is one of the wanted kinds: a line of it may be announced
        (``on_wanted``); a line of any other kind never runs Python as it ends."""
        return kind in self.wanted_set

    def reset(self):
        """Forget the last ``t`` announced: the next wanted line is announced, whatever its
        ``t`` (the reader has handled the lines announced)."""
        self.has_at = False

    cdef int line_ended(self, const char* line, Py_ssize_t n, long long t) except -1:
        """A line was written: announce it (``on_wanted(t)``) if it is the first wanted one
        of its ``t`` since the last announcement or :meth:`reset`. The kind is read only for
        a line whose ``t`` was not announced: one look per instant at most, once announced."""
        cdef const char* starts[_SCALARS]
        cdef Py_ssize_t sizes[_SCALARS]
        cdef Py_ssize_t k
        if self.has_at and self.at == t:
            return 0
        if _tokens(line, n, _KIND + 1, starts, sizes):
            k = _table_find(&self.kinds, starts[_KIND], sizes[_KIND])
            if k < 0 or k >= self.n_wanted:
                return 0
        else:  # a line the scanner cannot read: announced if its event is of a wanted kind
            try:
                kind = self.decode(PyBytes_FromStringAndSize(line, n))[2]
            except Exception:  # noqa: BLE001 - a placeholder: no event, nothing to announce
                return 0
            if kind not in self.wanted_set:
                return 0
        self.has_at = True
        self.at = t
        self.on_wanted(t)
        return 0

    cdef int _str(self, const char* s, Py_ssize_t n, PyObject** out) except -1:
        """The str of the JSON string token ``s`` (``n`` bytes, quotes included) as a new
        reference in ``out``: 1, or 0 for a token with an escape (left to ``decode``). Short
        strings come from the cache: kinds, instruments, accounts, sides repeat."""
        if memchr(s + 1, b"\\", n - 2) != NULL:
            return 0
        return self._cached(self.strs, _STRS, s, n, True, out)

    cdef int _cached(self, _Str* cache, Py_ssize_t slots, const char* s, Py_ssize_t n,
                     bint text, PyObject** out) except -1:
        """The value of the token ``s`` (``n`` bytes) as a new reference in ``out`` (1):
        a string token's str (``text``; no escape in it), else orjson's value of it, from
        ``cache`` (``slots``, direct-mapped) for a token of at most _CACHED bytes."""
        cdef _Str* slot = NULL
        cdef PyObject* obj
        if n <= _CACHED:
            slot = &cache[_hash(s, n) & (slots - 1)]
            if slot.n == n and memcmp(slot.s, s, n) == 0:
                Py_INCREF(slot.obj)
                out[0] = slot.obj
                return 1
        if text:
            obj = _PyUnicode_DecodeUTF8(s + 1, n - 2, NULL)
        else:
            value = _orjson.loads(PyBytes_FromStringAndSize(s, n))
            obj = <PyObject*>value
            Py_INCREF(obj)
        if slot != NULL:
            Py_XDECREF(slot.obj)
            Py_INCREF(obj)
            slot.obj = obj
            slot.n = n
            memcpy(slot.s, s, n)
        out[0] = obj
        return 1

    cdef int _scalar(self, const char* s, Py_ssize_t n, PyObject** out) except -1:
        """The value of the scalar JSON token ``s`` (``n`` bytes) as a new reference in
        ``out``: 1, or 0 for one the builder leaves to ``decode`` (a float, an int of more
        than 18 digits, an escaped string)."""
        cdef long long v = 0
        cdef Py_ssize_t i = 0
        cdef bint negative = False
        cdef char c
        if n <= 0:
            return 0
        c = s[0]
        if c == b'"':
            return self._str(s, n, out)
        if c == b"n" and n == 4 and memcmp(s, b"null", 4) == 0:
            Py_INCREF(Py_None)
            out[0] = Py_None
            return 1
        if c == b"t" and n == 4 and memcmp(s, b"true", 4) == 0:
            Py_INCREF(Py_True)
            out[0] = Py_True
            return 1
        if c == b"f" and n == 5 and memcmp(s, b"false", 5) == 0:
            Py_INCREF(Py_False)
            out[0] = Py_False
            return 1
        if c == b"-":
            negative = True
            i = 1
        if n - i < 1 or n - i > 18:
            return 0
        while i < n:
            c = s[i]
            if c < b"0" or c > b"9":
                return 0
            v = v * 10 + (c - 48)
            i += 1
        out[0] = _PyLong_FromLongLong(-v if negative else v)
        return 1

    cdef object _event(self, const char* line, Py_ssize_t n, const char** starts,
                       Py_ssize_t* sizes):
        """The event of a line whose scalar fields are ``starts``/``sizes``, built in C, or
        ``decode``'s for a line the builder leaves."""
        return _build(self, line, n, starts, sizes, -1, -1, -1)

    def scan(self, LineBatch lines):
        """Read the lines written since the last scan: ``(events, stale, flagged)``, or None
        when there are none.

        ``events``: the events of wanted kinds, in order (Event tuples, as ``decode`` gives
        them); a line the scanner cannot read is decoded and kept if its kind is wanted (a
        placeholder for an event orjson refused is skipped). ``stale``: None if no line
        named a watched account, True if one named no account and is not of a quiet kind
        (every account may have changed) or could not be read, else the indexes of the
        watched accounts named (as account, or as counterparty beside an account),
        ascending. ``flagged``: the places in ``events`` of the ``flagged`` kinds' events
        (a list), or None. The lines' columns are :attr:`columns`."""
        return _scan_lines(self, lines, NULL, NULL)

    def scan_rows(self, LineBatch lines, bytes thin_kinds not None,
                  bytes thin_accounts not None):
        """:meth:`scan` for the compiled bot runner (``clients._runner``): the same scan and
        the same ``(rows, stale, flagged)``, but a wanted line whose fields the runner's
        publish does not read becomes a *thin row*, a plain tuple of the event's 13 fields
        of which only the first few are read from the line and the others are None (no
        ``Event``, no parse of the fields left out):

        * ``thin_kinds[k] == 1``: a line of kind ``k`` (its index among ``wanted`` then
          ``quiet``, as in :attr:`columns`) keeps ``seq, t, kind, instrument``;
        * ``thin_kinds[k] == 2``: a line of kind ``k`` whose account is a watched one ``a``
          with ``thin_accounts[a]`` non-zero keeps ``seq, t, kind, instrument, account``;
        * any other wanted line is the event ``scan`` builds (an ``Event``).

        A line whose kept fields the C builder would leave to ``decode`` is the event too.
        ``thin_kinds`` needs a byte per kind and ``thin_accounts`` one per watched account."""
        if (PyBytes_GET_SIZE(thin_kinds) < self.kinds.count
                or PyBytes_GET_SIZE(thin_accounts) < self.accounts.count):
            raise ValueError("scan_rows: a byte per kind and per watched account")
        return _scan_lines(self, lines, PyBytes_AS_STRING(thin_kinds),
                           PyBytes_AS_STRING(thin_accounts))

    @property
    def kinds(self):
        """The kinds this tap knows (str), in their indexes' order: ``wanted``, then the
        ``quiet`` kinds that are not wanted (the ``kind`` of :attr:`columns`, the index into
        :meth:`scan_rows`'s ``thin_kinds``)."""
        return [_orjson.loads(token) for token in self.held[0]]

    @property
    def columns(self):
        """The last :meth:`scan`'s lines as columns (numpy arrays, one item per line): ``seq``
        (int64), ``t`` (int64, ns), ``kind`` (int16: the kind's index among ``wanted`` then
        ``quiet``; -1 another kind, -2 a line the scanner cannot read), ``account`` and
        ``counterparty`` (int32: the watched account's index; -1 null, -2 another)."""
        n = self.n_scanned
        return {
            "seq": _np.arange(self.scan_first, self.scan_first + n, dtype=_np.int64),
            "t": _column(self.col_t, n * sizeof(long long), _np.int64),
            "kind": _column(self.col_kind, n * sizeof(short), _np.int16),
            "account": _column(self.col_account, n * sizeof(int), _np.int32),
            "counterparty": _column(self.col_counterparty, n * sizeof(int), _np.int32),
        }


# the last ``t`` token read and its value (a line's t repeats across the lines of an instant:
# read once per run of equal tokens), held; any tap's (the value is the token's)
cdef object _t_value = None
cdef char _t_token[32]
cdef Py_ssize_t _t_n = -1  # (none yet)


cdef int _field(Tap self, const char** starts, Py_ssize_t* sizes, Py_ssize_t i, Py_ssize_t k,
                Py_ssize_t a, Py_ssize_t c, PyObject** out) except -1:
    """Field ``i`` of a line (``starts``/``sizes``) as ``Tap._scalar`` reads it (a new
    reference in ``out``: 1; 0 for a token it leaves to ``decode``), with the scan's finds:
    the kind ``k``, account ``a`` and counterparty ``c`` found in the tap's tables (their
    indexes, or negative) are the tables' own strs; the ``t`` of the line before, its
    value."""
    global _t_value, _t_n
    cdef Py_ssize_t n = sizes[i]
    cdef PyObject* found
    if i == _KIND and k >= 0:
        found = PyList_GET_ITEM(<list>(<list>self.held)[3], k)
    elif i == _ACCOUNT and a >= 0:
        found = PyList_GET_ITEM(<list>(<list>self.held)[4], a)
    elif i == _COUNTERPARTY and c >= 0:
        found = PyList_GET_ITEM(<list>(<list>self.held)[4], c)
    else:
        found = NULL
    if found == Py_None:  # (a token with an escape: the builder's refusal, as _scalar's)
        return 0
    if found != NULL:
        Py_INCREF(found)
        out[0] = found
        return 1
    if i == 1:
        if n == _t_n and memcmp(starts[1], _t_token, n) == 0:
            found = <PyObject*>_t_value
        else:
            if not self._scalar(starts[1], n, out):
                return 0
            if n <= 32:
                _t_value = <object>out[0]
                memcpy(_t_token, starts[1], n)
                _t_n = n
            return 1
        Py_INCREF(found)
        out[0] = found
        return 1
    return self._scalar(starts[i], n, out)


cdef object _build(Tap self, const char* line, Py_ssize_t n, const char** starts,
                   Py_ssize_t* sizes, Py_ssize_t k, Py_ssize_t a, Py_ssize_t c):
    """``Tap._event`` with the scan's finds (``_field``)."""
    cdef PyObject* items[_SCALARS + 1]
    cdef Py_ssize_t i, j
    cdef const char* data = starts[_SCALARS - 1] + sizes[_SCALARS - 1] + 1
    cdef Py_ssize_t data_n = line + n - 1 - data
    cdef bint ok = line[n - 1] == b"]" and data_n > 0
    i = 0  # items[0:i] hold new references
    try:
        while ok and i < _SCALARS:
            if not _field(self, starts, sizes, i, k, a, c, &items[i]):
                ok = False
                break
            i += 1
        if ok:
            if data_n == 4 and memcmp(data, b"null", 4) == 0:
                Py_INCREF(Py_None)
                items[_SCALARS] = Py_None
            else:  # repeated data (an order's type, a cancel's reason): one shared value
                self._cached(self.datas, _DATAS, data, data_n, False, &items[_SCALARS])
            i = _SCALARS + 1
    except BaseException:
        for j in range(i):
            Py_DECREF(items[j])
        raise
    if ok:  # the tuple takes the references, also when it cannot be made
        return _tuple_steal(<PyTypeObject*>self.event, items, _SCALARS + 1)
    for j in range(i):
        Py_DECREF(items[j])
    return self.decode(PyBytes_FromStringAndSize(line, n))


cdef object _scan_lines(Tap self, LineBatch lines, const char* thin_kinds,
                        const char* thin_accounts):
    """:meth:`Tap.scan`'s body (``thin_kinds`` NULL) and :meth:`Tap.scan_rows`'s."""
    cdef long long first = self.next_seq
    cdef Py_ssize_t i0, i, n, start
    cdef const char* starts[_SCALARS]
    cdef Py_ssize_t sizes[_SCALARS]
    cdef const char* line
    cdef Py_ssize_t size, k, a, c
    cdef bint every = False
    cdef bint named = False
    cdef short* kind
    cdef int* account
    cdef int* counterparty
    cdef long long* ts
    cdef Py_ssize_t cap
    if first < lines.first:
        raise RuntimeError(
            f"lines from seq {first} were taken before this tap scanned them"
        )
    i0 = first - lines.first
    n = lines.count - i0
    if n <= 0:
        return None
    if self.col_cap < n:
        cap = max(n, 2 * self.col_cap, 256)
        free(self.col_kind)
        free(self.col_account)
        free(self.col_counterparty)
        free(self.col_t)
        self.col_cap = 0
        self.col_kind = <short*>malloc(cap * sizeof(short))
        self.col_account = <int*>malloc(cap * sizeof(int))
        self.col_counterparty = <int*>malloc(cap * sizeof(int))
        self.col_t = <long long*>malloc(cap * sizeof(long long))
        if (self.col_kind == NULL or self.col_account == NULL
                or self.col_counterparty == NULL or self.col_t == NULL):
            raise MemoryError()
        self.col_cap = cap
    kind = self.col_kind
    account = self.col_account
    counterparty = self.col_counterparty
    ts = self.col_t
    events = []
    flagged = None
    # the scan is done (next_seq moved) even if building an event raises: the lines were
    # read; a second scan would report them twice
    self.next_seq = first + n
    self.scan_first = first
    self.n_scanned = n
    for i in range(n):
        start = lines.ends[i0 + i - 1] if i0 + i else 0
        line = lines.buf.data + start
        size = lines.ends[i0 + i] - 1 - start
        ts[i] = lines.ts[i0 + i]
        if not _tokens(line, size, _SCALARS, starts, sizes):
            kind[i] = _MALFORMED
            account[i] = _NULL
            counterparty[i] = _NULL
            every = True
            try:
                event = self.decode(PyBytes_FromStringAndSize(line, size))
                wanted = event[2] in self.wanted_set
            except Exception:  # noqa: BLE001 - a placeholder: the take of its batch raises
                continue
            if wanted:
                if event[2] in self.held[2]:
                    if flagged is None:
                        flagged = []
                    flagged.append(len(events))
                events.append(event)
            continue
        k = _table_find(&self.kinds, starts[_KIND], sizes[_KIND])
        kind[i] = k
        a = _NULL
        c = _NULL
        if not (sizes[_ACCOUNT] == 4 and memcmp(starts[_ACCOUNT], b"null", 4) == 0):
            a = _table_find(&self.accounts, starts[_ACCOUNT], sizes[_ACCOUNT])
            if a < 0:
                a = _OTHER
        if not (sizes[_COUNTERPARTY] == 4 and memcmp(starts[_COUNTERPARTY], b"null", 4) == 0):
            c = _table_find(&self.accounts, starts[_COUNTERPARTY], sizes[_COUNTERPARTY])
            if c < 0:
                c = _OTHER
        account[i] = a
        counterparty[i] = c
        if a != _NULL:
            if a >= 0:
                self.stale[a] = 1
                named = True
            if c >= 0:  # a counterparty counts beside an account (as the listener did)
                self.stale[c] = 1
                named = True
        elif k < 0 or not self.quiet[k]:
            every = True
        if 0 <= k < self.n_wanted:
            if self.flagged[k]:
                if flagged is None:
                    flagged = []
                flagged.append(len(events))
            if thin_kinds != NULL and (thin_kinds[k] == 1 or (
                    thin_kinds[k] == 2 and a >= 0 and thin_accounts[a])):
                events.append(_thin_row(self, line, size, starts, sizes,
                                        _KIND + 2 if thin_kinds[k] == 1 else _ACCOUNT + 1,
                                        k, a, c))
            else:
                events.append(_build(self, line, size, starts, sizes, k, a, c))
    stale = None
    if every or named:
        if every:
            stale = True
        else:
            stale = [a for a in range(self.accounts.count) if self.stale[a]]
        for a in range(self.accounts.count):
            self.stale[a] = 0
    return events, stale, flagged


cdef object _thin_row(Tap self, const char* line, Py_ssize_t n, const char** starts,
                      Py_ssize_t* sizes, Py_ssize_t upto, Py_ssize_t k, Py_ssize_t a,
                      Py_ssize_t c):
    """A thin row of a line (:meth:`Tap.scan_rows`): a tuple of its first ``upto`` fields,
    read as :meth:`Tap._event` reads them (``_field``, with the scan's finds ``k``, ``a``,
    ``c``), then None; the line's event (``_build``) when ``_build`` would not build it in
    C or a kept field is one it leaves to ``decode``."""
    cdef PyObject* items[_SCALARS + 1]
    cdef Py_ssize_t i = 0, j
    cdef const char* data = starts[_SCALARS - 1] + sizes[_SCALARS - 1] + 1
    if not (line[n - 1] == b"]" and line + n - 1 - data > 0):
        return _build(self, line, n, starts, sizes, k, a, c)
    try:
        while i < upto:
            if not _field(self, starts, sizes, i, k, a, c, &items[i]):
                break
            i += 1
    except BaseException:
        for j in range(i):
            Py_DECREF(items[j])
        raise
    if i < upto:
        for j in range(i):
            Py_DECREF(items[j])
        return _build(self, line, n, starts, sizes, k, a, c)
    for j in range(upto, _SCALARS + 1):
        Py_INCREF(Py_None)
        items[j] = Py_None
    return _tuple_steal(<PyTypeObject*>tuple, items, _SCALARS + 1)


cdef object _column(void* data, Py_ssize_t nbytes, object dtype):
    """A numpy array of ``dtype`` holding a copy of ``nbytes`` at ``data``."""
    if nbytes == 0:
        return _np.empty(0, dtype)
    return _np.frombuffer(PyBytes_FromStringAndSize(<char*>data, nbytes), dtype).copy()
