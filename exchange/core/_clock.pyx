# cython: language_level=3
"""The compiled clock: :class:`exchange.core.clock.Simulator`'s contract, its heap in C.

The same API and the same order -- timers fire by ``(time, priority, insertion number)``, at
equal keys in the order they were scheduled, the clock never runs back, scheduling before
``now`` is the same ValueError, an action that raises leaves the clock where the Python one
leaves it (the action's entry gone, ``now`` at its time, the rest of the queue intact) -- held
to it by differential tests (tests/exchange/core/test_clock.py). The Python ``Simulator`` stays
the reference, and runs every session of the reference engine (``exchange.kernel.engines``).

What is different is the cost: the heap is an array of C structs (the key and where the action
is kept), so a step is no Python tuple, comparison or ``heapq`` call, and two kinds of callee
run with no Python call at all: an :class:`Action` (``fire(arg)``: the compiled flow driver
schedules itself this way, with an integer argument and no tuple) and a :class:`StepHook` as
``on_step`` (``before(t)``: the session's step, ``exchange.sessions._flow.RunStep``).

Times are integer nanoseconds in int64 (anything with ``__index__``; a float is a TypeError,
where the Python clock would order it). A time past int64 is accepted and held, as the Python
clock holds it, but never fires: ``run(until)`` takes an int64 ``until``. Priorities are int64.
"""

cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.stdint cimport INT64_MAX, int64_t

from operator import index as _index

from exchange.core.clock import PARTICIPANT

cdef int64_t C_PARTICIPANT = PARTICIPANT


cdef inline bint _before(const _Entry* a, const _Entry* b) noexcept nogil:
    """Whether ``a`` fires before ``b``: (time, priority, insertion number), as the Python
    clock's tuples compare (insertion numbers are unique, so the order is total)."""
    if a.t != b.t:
        return a.t < b.t
    if a.priority != b.priority:
        return a.priority < b.priority
    return a.seq < b.seq


cdef class Action:
    """An action the compiled clock calls as C: ``fire(arg)`` with the int64 it was scheduled
    with (:meth:`Simulator.schedule_action`). Calling the object from Python runs it too."""

    cdef int fire(self, int64_t arg) except -1:
        raise NotImplementedError

    def __call__(self, int64_t arg):
        self.fire(arg)


cdef class StepHook:
    """An ``on_step`` the compiled clock calls as C (``before(t)``, ``t`` in ns) before each
    action. Calling the object from Python (``hook(t)``) runs it too, so the Python clock
    takes it as well."""

    cdef int before(self, int64_t t) except -1:
        raise NotImplementedError

    def __call__(self, int64_t t):
        self.before(t)


@cython.final
cdef class Simulator:
    """A discrete-event loop over simulated time (int64 nanoseconds): the compiled twin of
    :class:`exchange.core.clock.Simulator` (see the module docstring)."""

    def __cinit__(self, *args, **kwargs):
        self._capacity = 64
        self._heap = <_Entry*>PyMem_Malloc(self._capacity * sizeof(_Entry))
        # a slot is freed by every pop and taken by every push, so there are never more
        # slots than the heap's capacity: the free list shares it
        self._free = <Py_ssize_t*>PyMem_Malloc(self._capacity * sizeof(Py_ssize_t))
        if self._heap == NULL or self._free == NULL:
            raise MemoryError()
        self._size = 0
        self._nfree = 0
        self._until = -1
        self._hook = None
        self._in_place = False
        self._actions = []
        self._args = []
        self._beyond = []

    def __dealloc__(self):
        PyMem_Free(self._heap)
        PyMem_Free(self._free)

    def __init__(self, int64_t start=0):
        self._now = start
        self._scheduled = 0

    @property
    def now(self):
        """Simulated time, ns: the time of the action running, or the last ``until``."""
        return self._now

    @now.setter
    def now(self, int64_t value):
        self._now = value

    def __len__(self):
        return self._size + len(self._beyond)

    def schedule(self, at, action, *args, priority=PARTICIPANT):
        """Run ``action(*args)`` at simulated time ``at`` ns (not before ``now``); at equal
        times lower ``priority`` runs first (``MARKET``, ``PARTICIPANT``, ``CLEARING``,
        ``OBSERVER``), then the order of scheduling."""
        cdef int64_t t
        cdef int64_t p = priority
        if type(at) is not int:
            at = _index(at)  # numpy integers as ints; a float is a TypeError
        try:
            t = at
        except OverflowError:
            if at < self._now:
                raise ValueError(
                    f"cannot schedule at {at} ns: the clock is already at {self._now} ns"
                ) from None
            # past int64: held, never due (``run`` takes an int64 ``until``), as the Python
            # clock would hold it past any run's end
            self._beyond.append((at, p, self._scheduled, action, args))
            self._scheduled += 1
            return
        if t < self._now:
            raise ValueError(f"cannot schedule at {at} ns: the clock is already at {self._now} ns")
        self._push(t, p, action, args, 0)

    cdef int schedule_action(self, int64_t at, Action action, int64_t arg,
                             int64_t priority) except -1:
        """``schedule(at, action, arg, priority=priority)`` for an :class:`Action`, with no
        Python call and no argument tuple: the clock calls ``action.fire(arg)``."""
        if at < self._now:
            raise ValueError(f"cannot schedule at {at} ns: the clock is already at {self._now} ns")
        self._push(at, priority, action, None, arg)
        return 0

    cdef bint runs_next(self, int64_t at, int64_t priority) noexcept:
        """Whether an action scheduled now at ``at`` ns with ``priority`` would be the next
        one :meth:`run` fires -- due by its ``until``, before every entry on the heap (an
        entry at the same time and priority was scheduled first), with a StepHook or no
        ``on_step`` -- so that the action may take that turn in place (:meth:`turn`)."""
        if not self._in_place or at > self._until or at < self._now:
            return False
        if self._size and (
            self._heap[0].t < at or (self._heap[0].t == at and self._heap[0].priority <= priority)
        ):
            return False
        return True

    cdef int turn(self, int64_t at) except -1:
        """The turn :meth:`runs_next` allowed, taken in place by the running action: what
        scheduling it and popping it would do -- its insertion number taken, the clock set to
        ``at``, the step hook run -- with no heap entry; the caller then runs the action."""
        self._scheduled += 1
        self._now = at
        if self._hook is not None:
            self._hook.before(at)
        return 0

    cdef int _push(self, int64_t at, int64_t priority, object action, object args,
                   int64_t arg) except -1:
        cdef Py_ssize_t slot, i, parent
        cdef _Entry entry
        cdef _Entry* grown_heap
        cdef Py_ssize_t* grown_free
        if self._size == self._capacity:
            grown_heap = <_Entry*>PyMem_Realloc(self._heap, 2 * self._capacity * sizeof(_Entry))
            if grown_heap == NULL:
                raise MemoryError()
            self._heap = grown_heap
            grown_free = <Py_ssize_t*>PyMem_Realloc(
                self._free, 2 * self._capacity * sizeof(Py_ssize_t)
            )
            if grown_free == NULL:
                raise MemoryError()
            self._free = grown_free
            self._capacity *= 2
        # the action and its arguments live in two lists (the collector sees them there);
        # the heap holds only their slot
        if self._nfree:
            self._nfree -= 1
            slot = self._free[self._nfree]
            self._actions[slot] = action
            self._args[slot] = args
        else:
            slot = len(self._actions)
            self._actions.append(action)
            self._args.append(args)
        entry.t = at
        entry.priority = priority
        entry.seq = self._scheduled
        entry.slot = slot
        entry.arg = arg
        self._scheduled += 1
        # sift up
        i = self._size
        self._size += 1
        while i > 0:
            parent = (i - 1) >> 1
            if not _before(&entry, &self._heap[parent]):
                break
            self._heap[i] = self._heap[parent]
            i = parent
        self._heap[i] = entry
        return 0

    cdef _Entry _pop(self) noexcept:
        """Take the first entry off the heap (the heap is not empty)."""
        cdef _Entry top = self._heap[0]
        cdef _Entry last
        cdef Py_ssize_t i = 0, child, n
        self._size -= 1
        n = self._size
        if n:
            last = self._heap[n]
            # sift down
            while True:
                child = 2 * i + 1
                if child >= n:
                    break
                if child + 1 < n and _before(&self._heap[child + 1], &self._heap[child]):
                    child += 1
                if not _before(&self._heap[child], &last):
                    break
                self._heap[i] = self._heap[child]
                i = child
            self._heap[i] = last
        return top

    def run(self, int64_t until, on_step=None):
        """Fire every timer due at or before ``until`` ns in order, then set the clock to
        ``until``. ``on_step(now)`` is called before each action (the engine uses it to move
        its own clock); a :class:`StepHook` is run without a Python call."""
        cdef StepHook hook = on_step if isinstance(on_step, StepHook) else None
        cdef list actions = self._actions
        cdef list arguments = self._args
        cdef int64_t outer_until = self._until
        cdef StepHook outer_hook = self._hook
        cdef bint outer_in_place = self._in_place
        self._until = until
        self._hook = hook
        self._in_place = hook is not None or on_step is None
        try:
            self._turns(until, hook, on_step, actions, arguments)
        finally:
            # (an action may run the clock itself: the outer run's are back when it returns)
            self._until = outer_until
            self._hook = outer_hook
            self._in_place = outer_in_place
        if until > self._now:
            self._now = until

    cdef int _turns(self, int64_t until, StepHook hook, object on_step, list actions,
                    list arguments) except -1:
        """:meth:`run`'s loop."""
        cdef _Entry entry
        cdef object action, args
        # the heap is read afresh each turn: actions schedule (and may run the clock) as it goes
        while self._size and self._heap[0].t <= until:
            entry = self._pop()
            action = actions[entry.slot]
            args = arguments[entry.slot]
            actions[entry.slot] = None
            arguments[entry.slot] = None
            self._free[self._nfree] = entry.slot
            self._nfree += 1
            self._now = entry.t
            if hook is not None:
                hook.before(entry.t)
            elif on_step is not None:
                on_step(entry.t)
            if args is None:
                (<Action>action).fire(entry.arg)
            else:
                action(*args)
        return 0
