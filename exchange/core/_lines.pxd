# The canonical lines' C interface (exchange/core/_lines.pyx): the buffer and its writers, and
# the LineBatch sink, for the compiled parts that write events without an Event tuple
# (exchange/kernel/_kernel.pyx) or encode batches (exchange/store/_writer.pyx).

from cpython.object cimport PyObject


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

    cdef int end_line(self, long long t) except -1
