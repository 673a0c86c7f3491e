# The compiled counter's entries for compiled code: clients._context (the compiled Context,
# whose methods' reference is plain Python) charges through ``charge``; clients._runner starts
# and stops a callback's Counter in C (``start``/``stop`` are cpdef: Python calls them too).

cdef class Counter:
    cdef readonly long long left
    cdef readonly object lines
    cdef void* _previous  # the Py_tracefunc start() found (a C function pointer)
    cdef object _saved

    cpdef start(self)
    cpdef bint stop(self)


cdef int charge(long long units, int levels) noexcept
