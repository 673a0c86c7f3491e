# The compiled clock's C interface (exchange/core/_clock.pyx), for the compiled parts that run
# inside its loop (exchange/sessions/_flow.pyx: the flow driver and the session's step hook).

cimport cython
from libc.stdint cimport int64_t


ctypedef struct _Entry:
    int64_t t          # simulated time, ns
    int64_t priority   # MARKET, PARTICIPANT, CLEARING, OBSERVER
    int64_t seq        # insertion number: the order at equal (t, priority)
    Py_ssize_t slot    # where the action and its arguments are kept (Simulator._actions)
    int64_t arg        # an Action's argument (its args slot is None then)


cdef class Action:
    """An action the compiled clock runs without a Python call: ``fire(arg)``."""
    cdef int fire(self, int64_t arg) except -1


cdef class StepHook:
    """An ``on_step`` the compiled clock runs without a Python call: ``before(t)``."""
    cdef int before(self, int64_t t) except -1


@cython.final
cdef class Simulator:
    cdef int64_t _now
    cdef int64_t _scheduled
    cdef _Entry* _heap
    cdef Py_ssize_t _size
    cdef Py_ssize_t _capacity
    cdef list _actions
    cdef list _args
    cdef Py_ssize_t* _free
    cdef Py_ssize_t _nfree
    cdef list _beyond
    # while ``run`` runs: its ``until`` and its StepHook, and whether an action's next turn
    # may run in place (:meth:`runs_next`: not outside ``run``, nor with a Python
    # ``on_step``)
    cdef int64_t _until
    cdef StepHook _hook
    cdef bint _in_place

    cdef int _push(self, int64_t at, int64_t priority, object action, object args,
                   int64_t arg) except -1
    cdef int schedule_action(self, int64_t at, Action action, int64_t arg,
                             int64_t priority) except -1
    cdef _Entry _pop(self) noexcept
    cdef int _turns(self, int64_t until, StepHook hook, object on_step, list actions,
                    list arguments) except -1
    cdef bint runs_next(self, int64_t at, int64_t priority) noexcept
    cdef int turn(self, int64_t at) except -1
