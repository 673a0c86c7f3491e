# The compiled counter's entry for compiled code that stands in for Python functions
# (clients._context: the compiled Context, whose methods' reference is plain Python).

cdef int charge(long long units, int levels) noexcept
