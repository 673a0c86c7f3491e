# The compiled Context's C state and the runner-side entries clients._runner calls in C (its
# _dispatch, _quiet): they do what the Context's ``_begin``/``_drain``/attributes do, on a
# ``plain`` Context only (else the runner uses the attribute protocol, as for any context).

cdef class _ContextState:
    cdef object c_name
    cdef object c_account
    cdef object c_rng
    cdef object c_now
    cdef object c_view  # _account: the AccountView of the current delivery, or None
    cdef object c_books
    cdef object c_outbox
    cdef object c_timers
    cdef object c_next_ref
    cdef object c_stopped


cdef bint plain(object ctx) except -1
cdef bint begun(_ContextState self, object now, object view) noexcept
cdef object drained(_ContextState self)
