# The bot runner's delivery path, compiled (issue #20): CompiledRunner, the twin that sessions
# of the compiled engine run. clients/runner.py's BotRunner is its reference: the same code,
# step for step, with the per-slot state in a C struct (CSlot), the latency draws in a C array
# (CLink), the budget's compiled counter started without run_within's Python frame and the
# clock's heap pushed to in C. The state a delivery or a publish reads is in C fields (_Core)
# rather than the runner's instance dict; a bot's account snapshot and its book views' levels
# are built in C (exchange.kernel._views: no tuple, map or call per order or level); a
# command's size is bounded without serialising it when a bound proves it small (_item_bound).
# The budget's Counter is started and stopped in C (clients/_budget.pxd), and a plain compiled
# Context (clients._context.plain) begun, drained and read (_books, _outbox, _timers) in C
# (clients/_context.pxd); any other context through its attributes, as the reference does.
# tests/clients/test_runner_twins.py and test_runner_views.py hold the logs and values equal.

cimport cython
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.method cimport PyMethod_GET_FUNCTION, PyMethod_GET_SELF
from cpython.object cimport PyObject
from cpython.set cimport PySet_Contains
from cpython.unicode cimport PyUnicode_GET_LENGTH
from libc.stdint cimport int64_t

import sys
import traceback
from functools import partial
from inspect import getattr_static
from itertools import repeat
from types import MethodType

from orjson import dumps as _dumps

from clients import budget as _budget_module
from clients import runner as _reference
from clients._context import GONE as _GONE_OBJECT
from clients.bot import (
    BookLevel,
    BookView,
    FillReport,
    Funding,
    IndexPrint,
    MarginCall,
    Mark,
    OrderUpdate,
    Trade,
)
from clients.budget import DEFAULT_LINES, BudgetExceeded, _guarded_settrace, _REFUSED
from clients.context import AccountView, OpenOrder
from clients.latency import Latency
from clients.runner import (
    _BOOK_KINDS,
    _CALL_STATUS,
    _LOCAL_DELIVER,
    _NOOPS,
    _ORDER_STATUS,
    _SIGINT,
    _UNHEARD_FUNDING,
    _UNHEARD_INDEX,
    _UNHEARD_MARK,
    _UNHEARD_TRADE,
    COMMAND_REJECTED,
    DEFAULT_MAX_COMMANDS,
    DEFAULT_MAX_STEPS,
    DEFAULT_MAX_TIMERS,
    FILL,
    FUNDING_PAID,
    FUNDING_RATE,
    INDEX_PUBLISHED,
    _WANTED,
    MARK_PRICE,
    MAX_COMMAND_BYTES,
    STEP_WINDOW_NS,
    BotFailure,
    BotRunner,
    LocalDriver,
    _callback,
    _getsignal,
    _kind,
    _on_sigint,
    bot_rng,
    describe,
    watch_interrupts,
)
from exchange.core.clock import OBSERVER, PARTICIPANT
from exchange.core.commands import TRADING_TYPES, jsonable
from exchange.core.events import ORDER_RESTED
from exchange.kernel import _views

from clients._budget cimport Counter
from clients._context cimport _ContextState, begun, drained, plain
from exchange.core._clock cimport Simulator as _CSimulator

cdef object _new = tuple.__new__
cdef object _NONE = type(None)
cdef dict _ORDER_STATUS_D = _ORDER_STATUS
cdef dict _CALL_STATUS_D = _CALL_STATUS
cdef frozenset _BOOK_KINDS_F = _BOOK_KINDS
cdef dict _NOOPS_D = _NOOPS
cdef int64_t _PARTICIPANT = PARTICIPANT
cdef int64_t _OBSERVER = OBSERVER
cdef object _ACCOUNT_VIEW = _views.account_view  # the compiled engine's account_view
cdef object _ACCOUNT_SNAPSHOT = _views.account_snapshot
cdef object _BOOK_LEVELS = _views.book_levels
cdef Py_ssize_t _MAX_BYTES = MAX_COMMAND_BYTES
cdef int64_t _WINDOW = STEP_WINDOW_NS
cdef Py_ssize_t _BLOCK = 1024  # clients.latency.Link.BLOCK
cdef object _GONE = _GONE_OBJECT  # clients._context's deleted attribute


cdef extern from "Python.h":
    int Py_EnterRecursiveCall(const char* where) except? -1
    void Py_LeaveRecursiveCall()
    bint PyUnicode_IS_ASCII(object o)


def _here():
    raise ValueError


def _own_file():
    """The file name Cython gives this module's frames in a traceback."""
    try:
        _here()
    except ValueError as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        return frames[len(frames) - 1].filename  # _here's (no negative index: wraparound off)


# describe() leaves the runner's own frames out of a bot's traceback: these too
_reference._OWN_FILES.add(_own_file())


# ---------------------------------------------------------------- latency
@cython.final
cdef class CLink:
    """:class:`clients.latency.Link`'s twin: the same draws (blocks of 1,024 from the same
    generator, in drawn order), the same arrivals (ns), held in C."""

    cdef readonly long long fixed
    cdef readonly long long jitter
    cdef readonly object rng
    cdef public long long last
    cdef long long draws[1024]
    cdef Py_ssize_t left  # draws not used yet (taken from draws[_BLOCK - left])

    def __init__(self, latency, rng):
        self.fixed = latency.fixed_ns
        self.jitter = latency.jitter_ns
        self.rng = rng
        self.last = -1
        self.left = 0

    cdef long long at(self, long long now) except? -1:
        cdef long long at = now + self.fixed
        cdef Py_ssize_t i
        if self.jitter:
            if self.left == 0:
                block = self.rng.integers(0, self.jitter + 1, size=_BLOCK).tolist()
                for i in range(_BLOCK):
                    self.draws[i] = block[i]
                self.left = _BLOCK
            at += self.draws[_BLOCK - self.left]
            self.left -= 1
        if at < self.last:
            at = self.last
        self.last = at
        return at

    def arrival(self, long long now):
        """When something sent at ``now`` ns arrives, ns."""
        return self.at(now)


# ---------------------------------------------------------------- a bot's slot
@cython.final
cdef class CSlot:
    """:class:`clients.runner.Slot`'s twin: one bot in the session (the same attributes)."""

    cdef public object name
    cdef public object account
    cdef public object driver
    cdef public CLink data_link
    cdef public CLink command_link
    cdef public object books
    cdef public object max_timers
    cdef public object max_steps
    cdef public object max_commands
    cdef public object view
    cdef public object snapshot
    cdef public dict refs
    cdef public bint stopped
    cdef public long long timers
    cdef public long long window_end
    cdef public long long steps
    cdef public object hears
    cdef public object audience
    cdef bint capped  # max_steps is an int: steps compare with cap in C
    cdef long long cap  # max_steps (clamped to int64: no count reaches past it)
    cdef object other_cap  # a max_steps neither None nor an int: compared as Python does
    cdef Py_ssize_t group  # the first slot with an equal audience (_publish shares by it)

    def __init__(self, name, account, driver, data_link, command_link, books,
                 max_timers=DEFAULT_MAX_TIMERS, max_steps=DEFAULT_MAX_STEPS,
                 max_commands=DEFAULT_MAX_COMMANDS):
        self.name, self.account, self.driver = name, account, driver
        self.data_link, self.command_link, self.books = data_link, command_link, books
        self.max_timers, self.max_steps, self.max_commands = max_timers, max_steps, max_commands
        self.view = None
        self.snapshot = None
        self.refs = {}
        self.stopped = False
        self.timers = 0
        self.window_end = 0
        self.steps = 0
        self.hears = None
        self.audience = None
        self.capped = type(max_steps) is int
        self.cap = min(max(max_steps, -1), 2**63 - 1) if self.capped else 0
        self.other_cap = None if self.capped else max_steps

    @property
    def step_cap(self):
        """max_steps, or no limit (inf), as :class:`clients.runner.Slot` has it."""
        return float("inf") if self.max_steps is None else self.max_steps


# ---------------------------------------------------------------- the budget, compiled
# the namespaces read on every callback: clients.budget's (COUNTER) and sys's (settrace), as
# dicts (what a module's attribute look-up reads, less its generic path)
cdef dict _BUDGET_NS = _budget_module.__dict__
cdef dict _SYS_NS = sys.__dict__


cdef inline bint _python_counter() except -1:
    """Whether ``clients.budget.COUNTER`` is ``"python"`` (the reference counter)."""
    counter = _BUDGET_NS.get("COUNTER", _NONE)
    if counter is _NONE:
        counter = _budget_module.COUNTER  # gone from the dict: the module's own error
    if type(counter) is str:
        return <str>counter == "python"  # compared in C
    return counter == "python"


cdef object _within(object lines, object fn, tuple args, bint python):
    """:func:`clients.budget.run_within`'s twin (the same units, failures and messages):
    with the compiled counter it is started here, without run_within's Python frame.
    ``python``: ``clients.budget.COUNTER == "python"``, read by the caller."""
    if lines is None:
        return fn(*args)
    if python:
        return _budget_module.run_within(lines, fn, *args)
    cdef Counter tracer = Counter(lines)
    cdef bint installed
    if _SYS_NS.get("settrace", _NONE) is not _guarded_settrace:
        sys.settrace = _guarded_settrace
    # start() and stop() run in C (Counter is declared in clients/_budget.pxd). A Python call
    # of them took a recursion level, at the depth where fn(*args) takes its own: it could
    # only fail where that call fails, with the same RecursionError, before the bot runs
    tracer.start()
    try:
        result = fn(*args)
    except BudgetExceeded:
        raise
    except BaseException:
        if tracer.left >= 0:
            raise
        result = None  # it caught its overrun and raised something else
    finally:
        installed = tracer.stop()
        refused = bool(_REFUSED) and tracer in _REFUSED
        if refused:
            _REFUSED.discard(tracer)
    if tracer.left < 0:
        raise BudgetExceeded(
            f"callback exceeded its budget of {lines:,} lines (and caught the overrun)"
        )
    if refused:
        raise BudgetExceeded("callback called sys.settrace, which a budgeted bot may not")
    if not installed:
        raise BudgetExceeded("callback removed the budget's trace function")
    return result


#: Recursion levels the reference's Python frames take between the clock and a callback
#: (BotRunner._deliver, LocalDriver.deliver, dispatch, run_within: four; one more from _timer
#: or _quiet, which call _deliver) less the one this twin's call of a Python object takes
#: (Cython's ``fn(*args)``): taken around each call into a bot's code, so a bot has the same
#: recursion depth left in both twins (tests/clients/test_runner_twins.py).
cdef int _DEPTH = 3
DEPTH = _DEPTH


cdef object _call(int levels, object lines, object fn, tuple args):
    """``_within(lines, fn, args)`` with ``levels`` recursion levels taken meanwhile."""
    cdef int i
    cdef int taken = 0
    cdef bint python = lines is not None and _python_counter()
    if python:
        levels -= 1  # the reference counter's run_within frame is one of the levels
    try:
        for i in range(levels):
            Py_EnterRecursiveCall("")
            taken += 1
        return _within(lines, fn, args, python)
    finally:
        for i in range(taken):
            Py_LeaveRecursiveCall()


cdef str _text(exc, budget_lines, int levels):
    try:
        text = _call(levels, budget_lines, str, (exc,))
    except BaseException:  # noqa: BLE001 - whatever a hostile __str__ does
        return "<unprintable>"
    return text if type(text) is str else "<unprintable>"


cdef Py_ssize_t _item_bound(object key, object value) except -2:
    """At most how many bytes orjson writes for the item ``key: value`` of a flat mapping (its
    key's quotes, the colon, the comma after it), or -1 if it cannot be bounded without
    writing it or orjson could refuse it: an ASCII string is at most 6 bytes a character (a
    control character escaped in full) and its quotes, an int within int64 at most 20 bytes,
    ``false`` 5 (see :func:`_admit`)."""
    cdef int overflow = 0
    if type(key) is not str or not PyUnicode_IS_ASCII(key):
        return -1
    cdef Py_ssize_t n = 6 * PyUnicode_GET_LENGTH(key) + 4
    kind = type(value)
    if kind is str:
        if not PyUnicode_IS_ASCII(value):
            return -1
        return n + 6 * PyUnicode_GET_LENGTH(value) + 2
    if kind is int:
        PyLong_AsLongLongAndOverflow(value, &overflow)
        return -1 if overflow else n + 20
    if kind is bool or kind is _NONE:
        return n + 5
    return -1


cdef object _copy(object command, int levels, Py_ssize_t* bound):
    """:func:`clients.runner._copy`'s twin; ``bound``: set to at most how many bytes the
    copy's JSON takes (the braces and :func:`_item_bound` of each item), or -1 if that is not
    bounded so (the copy is not a flat mapping of ASCII strings to ASCII strings, int64s,
    booleans and None)."""
    cdef dict d
    cdef Py_ssize_t item
    bound[0] = -1
    if type(command) is dict:
        d = <dict>command
        bound[0] = 2  # the braces
        for key, value in d.items():
            kind = type(value)
            if type(key) is not str or not (
                kind is str or kind is int or kind is bool or kind is _NONE
            ):
                break
            if bound[0] >= 0:
                item = _item_bound(key, value)
                bound[0] = -1 if item < 0 else bound[0] + item
        else:
            return dict(d)
        bound[0] = -1
    try:
        return _call(levels, DEFAULT_LINES, jsonable, (command,))
    except BaseException:  # noqa: BLE001 - whatever the object does
        return {"unserialisable": _kind(command)}


#: clients.runner's globals: the count of interrupts its handler raised is read from them as
#: the reference's dispatch reads its global (a dict look-up, not a module attribute's)
cdef dict _RUNNER_NS = _reference.__dict__


cdef inline object _interrupts():
    """``clients.runner._interrupts_raised``."""
    count = _RUNNER_NS.get("_interrupts_raised", _NONE)
    if count is _NONE:
        return _reference._interrupts_raised  # gone from the dict: the module's own error
    return count


cdef tuple _dispatch(object bot, object ctx, list messages, object budget_lines, object now,
                     object account, int extra):
    """:func:`clients.runner.dispatch`'s twin."""
    if _getsignal(_SIGINT) is not _on_sigint:
        watch_interrupts()
    interrupts = _interrupts()
    cdef bint skip = budget_lines is None or budget_lines > 0
    for name, payload in messages:
        if name == "on_book":
            _books(ctx)[payload.instrument] = payload
        try:
            method = getattr(bot, name)
            if skip and type(method) is MethodType:
                noop = _NOOPS_D.get(name)  # Bot's own callback of that name
                skipped = PyMethod_GET_FUNCTION(method) == <PyObject*>noop
            else:
                skipped = False
            if skipped:
                continue
            if account is not None:
                if type(account) is _View:  # this twin's snapshot: no Python call
                    view = _snapshot((<_View>account).core, (<_View>account).slot)
                else:
                    view = account()
                # a plain compiled Context begins in C; any other through its attribute
                if not (plain(ctx) and begun(<_ContextState>ctx, now, view)):
                    ctx._begin(now, view)
                account = None
            if payload is None and name != "on_timer":
                _call(_DEPTH + extra, budget_lines, method, (ctx,))
            else:
                _call(_DEPTH + extra, budget_lines, method, (ctx, payload))
        except BaseException as exc:  # noqa: BLE001 - any error in a bot stops the bot, not us
            if _interrupts() != interrupts:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                raise KeyboardInterrupt from exc
            cause = "budget" if isinstance(exc, BudgetExceeded) else "raised"
            raise BotFailure(cause, name, describe(exc, _text(exc, budget_lines, _DEPTH + extra + 1))) from None
    if _interrupts() != interrupts:
        raise KeyboardInterrupt  # a real interrupt, which the bot caught
    if plain(ctx):
        drained_ = drained(<_ContextState>ctx)
        if drained_ is not None:
            return drained_
    return ctx._drain()


cdef inline object _books(object ctx):
    """``ctx._books``: read in C from a plain compiled Context (clients._context.plain)."""
    if plain(ctx):
        books = (<_ContextState>ctx).c_books
        if books is not _GONE:
            return books
    return ctx._books


# ---------------------------------------------------------------- the runner
@cython.final
cdef class _Core:
    """What the compiled paths read on every delivery and publish, typed, and the actions the
    clock runs (bound methods of this C class: no instance dict to look in).

    The market-data state (the tap, the events pending, the rejections' refs, the commands
    arriving) is held here; the runner's attributes of the same names are the same objects
    (``_pending``, ``_rejected_refs``, ``_tap``, ``_lines``) or properties reading these
    fields (``_arrivals``, ``_arriving``, ``_arriving_from``), so the reference's own code that
    the twin inherits (``BotRunner._observer``, ``start``, ``_watch``) reads and writes the
    same state."""

    # readable (a walk of what the runner holds reaches the engine: tests/clients/
    # test_bot_isolation.py); nothing a bot is handed holds a _Core
    cdef readonly object runner
    cdef readonly object engine
    cdef readonly object sim
    cdef _CSimulator csim  # the compiled clock, or None (then sim.schedule)
    cdef dict by_account
    cdef list slots
    cdef object a_deliver  # the bound methods below, made once
    cdef object a_quiet
    cdef object a_timer
    cdef object a_arrive
    cdef object a_publish
    cdef object tap  # the runner's _tap (None: the listener's path)
    cdef object lines  # _lines
    cdef object thin_kinds  # the scans' masks (CompiledRunner._watch)
    cdef object thin_accounts
    cdef list pending  # _pending
    cdef dict rejected_refs  # _rejected_refs
    cdef list arrivals  # _arrivals: (first seq, last seq, ref) of commands not yet scanned
    cdef object arriving  # _arriving: the ref of the command being handled
    cdef object arriving_from  # _arriving_from: the first seq it may emit
    cdef list market  # per audience group (CSlot.group): a publish's shared part, or None
    cdef dict engine_ns  # the engine's instance dict, where its seq is (None: read engine.seq)
    cdef bint grouped  # the slots' groups are set (at the first publish: after start)

    cdef inline object seq(self):
        """The engine's ``seq`` (its last event's number)."""
        if self.engine_ns is not None:
            seq = self.engine_ns.get("seq", _NONE)
            if seq is not _NONE:
                return seq
        return self.engine.seq

    cdef inline long long now(self) except? -1:
        """The clock's time, ns (what ``sim.now`` says)."""
        if self.csim is not None:
            return self.csim._now
        return self.sim.now

    cdef int schedule(self, long long at, object action, tuple args) except -1:
        """``sim.schedule(at, action, *args)`` (priority ``PARTICIPANT``)."""
        if self.csim is not None and at >= self.csim._now:
            self.csim._push(at, _PARTICIPANT, action, args, 0)
        else:
            self.sim.schedule(at, action, *args)
        return 0

    def deliver(self, CSlot slot, list batch, callback=None):
        """:meth:`BotRunner._deliver`."""
        _deliver(self, slot, batch, callback, 0)

    def quiet(self, CSlot slot, list batch, callback):
        """:meth:`BotRunner._quiet`."""
        _quiet(self, slot, batch, callback)

    def timer(self, CSlot slot, tag):
        """:meth:`BotRunner._timer`."""
        slot.timers -= 1
        _deliver(self, slot, [("on_timer", tag)], None, 1)

    def arrive(self, CSlot slot, list outbox):
        """:meth:`BotRunner._arrive`."""
        _arrive(self, slot, outbox)

    def publish(self):
        """:meth:`BotRunner._publish`."""
        _publish(self)

    def announce(self, t):
        """:meth:`BotRunner._announce`: schedule the publish of instant ``t`` (ns)."""
        if self.csim is not None and t >= self.csim._now:
            self.csim._push(t, _OBSERVER, self.a_publish, (), 0)
        else:
            self.sim.schedule(t, self.a_publish, priority=OBSERVER)


@cython.final
cdef class _View:
    """A slot's ``view`` (``partial(runner._snapshot, slot)`` in the reference): called, the
    slot's account snapshot; the compiled dispatch reads it without a Python call."""

    cdef readonly _Core core
    cdef readonly CSlot slot

    def __call__(self):
        """The bot's account as it is now (:meth:`BotRunner._snapshot`)."""
        return _snapshot(self.core, self.slot)


class CompiledRunner(BotRunner):
    """:class:`clients.runner.BotRunner`'s compiled twin (the runner of a session on the
    compiled engine): the same arguments, deliveries, failures and logs, byte for byte. Its
    slots are :class:`CSlot` and its links :class:`CLink`; bots, contexts and drivers are the
    reference's own."""

    def __init__(self, engine, sim, seed, depth=_reference.DEFAULT_DEPTH):
        cdef _Core core = _Core()
        self._core = core  # first: BotRunner's __init__ sets the properties below
        core.arrivals = []
        core.arriving_from = 0
        super().__init__(engine, sim, seed, depth)
        core.runner = self
        core.engine = engine
        core.sim = sim
        core.csim = sim if isinstance(sim, _CSimulator) else None
        core.by_account = self._by_account
        core.a_deliver, core.a_quiet = core.deliver, core.quiet
        core.a_timer, core.a_arrive = core.timer, core.arrive
        core.a_publish = core.publish
        core.slots = self.slots
        core.pending = self._pending
        core.rejected_refs = self._rejected_refs
        # the engine's seq is a plain instance attribute (no class attribute or descriptor
        # named so): read from its dict
        if getattr_static(type(engine), "seq", None) is None and type(
            getattr(engine, "__dict__", None)
        ) is dict:
            core.engine_ns = engine.__dict__

    # the command being handled and the seqs of those handled, kept in C (_Core): BotRunner's
    # code (its listener, _ref_of) reads them here
    @property
    def _arrivals(self):
        return (<_Core>self._core).arrivals

    @_arrivals.setter
    def _arrivals(self, list value):
        (<_Core>self._core).arrivals = value

    @property
    def _arriving(self):
        return (<_Core>self._core).arriving

    @_arriving.setter
    def _arriving(self, value):
        (<_Core>self._core).arriving = value

    @property
    def _arriving_from(self):
        return (<_Core>self._core).arriving_from

    @_arriving_from.setter
    def _arriving_from(self, value):
        (<_Core>self._core).arriving_from = value

    def attach(self, name, account, driver, latency=None, books=None, *,
               max_timers=DEFAULT_MAX_TIMERS, max_steps=DEFAULT_MAX_STEPS,
               max_commands=DEFAULT_MAX_COMMANDS):
        """Attach any driver (in-process or remote) for ``account``: as
        :meth:`BotRunner.attach`."""
        if self._started:
            raise RuntimeError("bots must be added before the runner starts")
        if account not in self.engine.accounts:
            raise ValueError(f"bot {name!r}: no account {account!r}")
        if account in self._by_account:
            raise ValueError(f"account {account!r} already has a bot")
        if any(s.name == name for s in self.slots):
            raise ValueError(f"two bots are named {name!r}")
        latency = latency or Latency()
        slot = CSlot(
            name,
            account,
            driver,
            CLink(latency, bot_rng(self.seed, name, 1)),
            CLink(latency, bot_rng(self.seed, name, 2)),
            None if books is None else frozenset(books),
            max_timers,
            max_steps,
            max_commands,
        )
        cdef _View view
        snapshot = self._snapshot
        if type(snapshot) is MethodType and snapshot.__func__ is _OWN_SNAPSHOT:
            view = _View()  # this twin's own snapshot, read in C
            view.core, view.slot = self._core, slot
            slot.view = view
        else:
            slot.view = partial(snapshot, slot)  # a replaced _snapshot, called as it is
        self.slots.append(slot)
        self._by_account[account] = slot

    # ---------------------------------------------------------------- market data
    def _watch(self, lines):
        """:meth:`BotRunner._watch`, and the masks this twin's scans give the tap
        (``Tap.scan_rows``): the lines whose fields :meth:`_publish` does not read come as
        thin rows, without an ``Event`` -- a resting order's (its instrument is all a publish
        reads: the book is dirty) and an order status of a bot that does not hear
        ``on_order`` (its account: the bot is told, nothing is built)."""
        BotRunner._watch(self, lines)
        self._thin_kinds = bytes(
            1 if kind == ORDER_RESTED else 2 if kind in _ORDER_STATUS else 0
            for kind in self._tap.kinds
        )
        self._thin_accounts = bytes(
            0 if (<CSlot>slot).hears is None or "on_order" in (<CSlot>slot).hears else 1
            for slot in self.slots
        )
        cdef _Core core = self._core
        core.tap, core.lines = self._tap, self._lines
        core.thin_kinds, core.thin_accounts = self._thin_kinds, self._thin_accounts

    def _announce(self, t):
        if getattr(type(self), "_publish", None) is _OWN_PUBLISH:
            (<_Core>self._core).announce(t)  # the publish scheduled as the C method
        else:
            BotRunner._announce(self, t)  # a replaced _publish, scheduled as it is

    def _snapshot(self, CSlot slot):
        return _snapshot(self._core, slot)

    def _scan(self):
        _scan(self._core)

    def _ref_of(self, seq):
        return _ref_of(self._core, seq)

    def _publish(self):
        _publish(self._core)

    def _book_view(self, instrument):
        return _book_view(self._core, instrument)

    # ---------------------------------------------------------------- delivery
    def _deliver(self, CSlot slot, list batch, callback=None):
        """Deliver ``batch`` to ``slot``'s bot now (as :meth:`BotRunner._deliver`)."""
        _deliver(self._core, slot, batch, callback, 0)

    def _quiet(self, CSlot slot, list batch, callback):
        """A delivery of which the bot hears nothing (as :meth:`BotRunner._quiet`)."""
        _quiet(self._core, slot, batch, callback)

    def _step(self, CSlot slot, batch, callback):
        return _step(self._core, slot, batch, callback)

    def _admit(self, CSlot slot, outbox, timers, callback):
        return _admit(self, slot, outbox, timers, callback, 0)

    def _timer(self, CSlot slot, tag):
        slot.timers -= 1
        _deliver(self._core, slot, [("on_timer", tag)], None, 1)

    def _arrive(self, CSlot slot, list outbox):
        _arrive(self._core, slot, outbox)


cdef object _OWN_SNAPSHOT = CompiledRunner.__dict__["_snapshot"]
cdef object _OWN_BOOK_VIEW = CompiledRunner.__dict__["_book_view"]
cdef object _OWN_PUBLISH = CompiledRunner.__dict__["_publish"]


# ---------------------------------------------------------------- market data
cdef object _snapshot(_Core core, CSlot slot):
    """:meth:`BotRunner._snapshot`'s twin: the view is built in C (``_views.account_snapshot``)
    when the engine's ``account_view`` is the compiled engine's own."""
    if core.tap is not None:
        _scan(core)  # the lines written since the last read may name the account
    view = slot.snapshot
    if view is None:
        engine = core.engine
        read = engine.account_view
        if (
            type(read) is MethodType
            and PyMethod_GET_FUNCTION(read) == <PyObject*>_ACCOUNT_VIEW
            and PyMethod_GET_SELF(read) == <PyObject*>engine
        ):
            view = _ACCOUNT_SNAPSHOT(engine, slot.account, AccountView, OpenOrder)
        else:
            cash, positions, orders = read(slot.account)
            view = _new(AccountView, (cash, positions, tuple(map(_new, repeat(OpenOrder), orders))))
        slot.snapshot = view
    return view


cdef int _scan(_Core core) except -1:
    """:meth:`BotRunner._scan`'s twin (the tap's rows: Events and thin rows)."""
    got = core.tap.scan_rows(core.lines, core.thin_kinds, core.thin_accounts)
    if got is None:
        return 0
    events, stale, rejections = got
    cdef CSlot slot
    cdef list slots
    if stale is not None:
        slots = core.slots
        if stale is True:
            for slot in slots:
                slot.snapshot = None
        else:
            for i in stale:
                (<CSlot>slots[i]).snapshot = None
    if events:
        core.pending.extend(events)
    if rejections is not None:
        for i in rejections:
            seq = events[i][0]  # a row's seq (an Event's or a thin row's first field)
            ref = _ref_of(core, seq)
            if ref is not None:
                core.rejected_refs[seq] = ref
    arrivals = core.arrivals
    if arrivals:  # the commands whose seqs are all read are done with
        done = core.tap.next_seq
        core.arrivals = [entry for entry in arrivals if entry[1] >= done]
    return 0


cdef object _ref_of(_Core core, object seq):
    """:meth:`BotRunner._ref_of`'s twin."""
    for first, last, ref in core.arrivals:
        if first <= seq <= last:
            return ref
    if core.arriving is not None and seq >= core.arriving_from:
        return core.arriving  # a scan in the middle of the command's handling
    return None


cdef object _book_view(_Core core, object instrument):
    """:meth:`BotRunner._book_view`'s twin: the levels made in C (``_views.book_levels``)."""
    engine = core.engine
    bids, asks = _BOOK_LEVELS(engine.instruments[instrument].book, core.runner.depth, BookLevel)
    return _new(BookView, (instrument, engine.t, bids, asks))


cdef inline bint _has(object group, object item) except -1:
    """``item in group``; a frozenset (what a slot's books and hears are) read in C."""
    if type(group) is frozenset:
        return PySet_Contains(group, item)
    return item in group


cdef int _group(_Core core) except -1:
    """Number the slots' audiences (``CSlot.group``: the first slot with an equal audience),
    so a publish shares its public part by index, not by hashing the audience each time."""
    cdef dict first = {}
    cdef CSlot slot
    cdef Py_ssize_t i = 0
    for found in core.slots:
        slot = <CSlot>found
        slot.group = first.setdefault(slot.audience, i)
        i += 1
    core.market = [None] * i
    core.grouped = core.runner._started  # (before start the audiences are not set yet)
    return 0


cdef int _publish(_Core core) except -1:
    """:meth:`BotRunner._publish`'s twin."""
    runner = core.runner
    if core.tap is not None:
        _scan(core)
        core.tap.reset()  # the next wanted line schedules the next publish
    cdef list pending = core.pending
    cdef list events = pending.copy()
    pending.clear()
    runner._publish_at = None
    cdef dict by_account = core.by_account
    cdef dict rejected_refs = core.rejected_refs
    heard = runner._heard
    cdef list public = []
    cdef dict private = {}
    cdef dict told = {}
    cdef dict dirty = {}
    cdef CSlot slot
    cdef list own
    for e in events:
        seq, t, kind, instrument, account, order_id, side, price, qty, amount, other, other_id, data = e
        if kind in _BOOK_KINDS_F:
            dirty[instrument] = None
            if kind != FILL:
                if kind not in _ORDER_STATUS_D:
                    continue
            else:
                if heard is None or _has(heard, "on_trade"):
                    trade = ("on_trade", _new(Trade, (instrument, t, price, qty, side)))
                else:
                    trade = _UNHEARD_TRADE
                public.append((None, trade))
                _fill(by_account, private, told, account, e, side, order_id, amount, "taker")
                _fill(
                    by_account,
                    private,
                    told,
                    other,
                    e,
                    "sell" if side == "buy" else "buy",
                    other_id,
                    -amount,
                    "maker",
                )
                continue
        status = _ORDER_STATUS_D.get(kind)
        if status is not None:
            found = by_account.get(account)
            if found is not None:
                slot = <CSlot>found
                ref = rejected_refs.pop(seq, None) if rejected_refs else None
                told[account] = "step" if account in told else "on_order"
                hears = slot.hears
                if hears is None or _has(hears, "on_order"):
                    update = _new(
                        OrderUpdate,
                        (
                            status,
                            t,
                            instrument,
                            order_id,
                            ref or slot.refs.get(order_id),
                            side,
                            price,
                            qty,
                            (data or {}).get("reason"),
                        ),
                    )
                    mine = private.get(account)
                    if mine is None:
                        private[account] = [("on_order", update)]
                    else:
                        (<list>mine).append(("on_order", update))
        elif kind == INDEX_PUBLISHED:
            if heard is None or _has(heard, "on_index"):
                index = ("on_index", _new(IndexPrint, (instrument, t, price)))
            else:
                index = _UNHEARD_INDEX
            public.append((None, index))
        elif kind == MARK_PRICE:
            if heard is None or _has(heard, "on_mark"):
                mark = (
                    "on_mark",
                    _new(Mark, (instrument, t, price, (data or {}).get("source"))),
                )
            else:
                mark = _UNHEARD_MARK
            public.append((instrument, mark))
        elif kind == COMMAND_REJECTED:
            found = by_account.get(account)
            if found is not None:
                slot = <CSlot>found
                ref = rejected_refs.pop(seq, None)
                told[account] = "step" if account in told else "on_order"
                hears = slot.hears
                if hears is None or _has(hears, "on_order"):
                    command = data["command"]
                    update = OrderUpdate(
                        "rejected",
                        t,
                        command.get("instrument") if isinstance(command, dict) else None,
                        command.get("order_id") if isinstance(command, dict) else None,
                        ref,
                        command.get("side") if isinstance(command, dict) else None,
                        None,
                        None,
                        data["reason"],
                    )
                    private.setdefault(account, []).append(("on_order", update))
        elif kind == FUNDING_RATE:
            if heard is None or _has(heard, "on_funding"):
                funding = (
                    "on_funding",
                    Funding(instrument, t, data["rate"], price, None, None),
                )
            else:
                funding = _UNHEARD_FUNDING
            public.append((None, funding))
        elif kind == FUNDING_PAID:
            found = by_account.get(account)
            if found is not None:
                slot = <CSlot>found
                told[account] = "step" if account in told else "on_funding"
                hears = slot.hears
                if hears is None or _has(hears, "on_funding"):
                    rate = _last_rate(events, e)
                    funding = Funding(instrument, t, rate, None, qty, amount)
                    private.setdefault(account, []).append(("on_funding", funding))
        elif kind in _CALL_STATUS_D:
            found = by_account.get(account)
            if found is not None:
                slot = <CSlot>found
                told[account] = "step" if account in told else "on_margin_call"
                hears = slot.hears
                if hears is None or _has(hears, "on_margin_call"):
                    deadline = (data or {}).get("deadline")
                    call = MarginCall(_CALL_STATUS_D[kind], t, amount or 0, deadline)
                    private.setdefault(account, []).append(("on_margin_call", call))
    if dirty:
        watched = runner._watched
        # this twin's own book view in C, unless the method was replaced
        own_view = getattr(type(runner), "_book_view", None) is _OWN_BOOK_VIEW
        for instrument in dirty:
            if watched is None or instrument in watched:
                view = _book_view(core, instrument) if own_view else runner._book_view(instrument)
                public.append((instrument, ("on_book", view)))
    cdef long long now = core.now()
    if not core.grouped:
        _group(core)
    # the public part of a batch by audience group (slots alike share it): the name a failure
    # after it alone is logged under (None: it is empty), the messages that travel (those
    # heard, and book views), whether any is heard
    cdef list market = core.market
    cdef Py_ssize_t g
    for g in range(len(market)):
        market[g] = None  # the last publish's
    cdef list kept
    cdef Py_ssize_t count
    cdef bint loud
    for found in core.slots:
        slot = <CSlot>found
        if slot.stopped:
            continue
        shared = market[slot.group]
        if shared is None:
            books, hears = slot.audience
            count = 0
            name = None
            kept = []
            loud = False
            for instrument, message in public:
                if instrument is None or books is None or _has(books, instrument):
                    count += 1
                    name = message[0]
                    if hears is None or _has(hears, name):
                        kept.append(message)
                        loud = True
                    elif name == "on_book":
                        kept.append(message)  # for ctx.book()
            if count > 1:
                name = "step"
            shared = market[slot.group] = (name, kept, loud)
        callback, messages, loud = <tuple>shared
        account = slot.account
        mine = told.get(account)
        if mine is not None:
            callback = mine if callback is None else "step"
        elif callback is None:
            continue  # nothing to tell this bot
        own = private.get(account)
        # news about its own orders first, then the market (each slot its own list)
        if own:
            core.schedule(slot.data_link.at(now), core.a_deliver, (slot, own + messages, callback))
        elif loud:
            core.schedule(
                slot.data_link.at(now), core.a_deliver, (slot, (<list>messages).copy(), callback)
            )
        else:
            core.schedule(slot.data_link.at(now), core.a_quiet, (slot, messages, callback))
    return 0


# ---------------------------------------------------------------- delivery
cdef int _quiet(_Core core, CSlot slot, list batch, callback) except -1:
    """:meth:`BotRunner._quiet`'s twin."""
    if _step(core, slot, batch, callback) is None:
        return 0
    ctx = slot.driver.ctx
    books = _books(ctx)
    for _, view in batch:
        books[view.instrument] = view
    if plain(ctx) and (<_ContextState>ctx).c_outbox is not _GONE and (
        <_ContextState>ctx
    ).c_timers is not _GONE:
        outbox, timers = (<_ContextState>ctx).c_outbox, (<_ContextState>ctx).c_timers
    else:
        outbox, timers = ctx._outbox, ctx._timers
    if outbox or timers or type(outbox) is not list or type(timers) is not list:
        # sent from outside any callback: a delivery drains it (the step counted again)
        slot.steps -= 1
        _deliver(core, slot, batch, callback, 1)
    return 0


cdef int _arrive(_Core core, CSlot slot, list outbox) except -1:
    """:meth:`BotRunner._arrive`'s twin."""
    if slot.stopped:
        return 0  # a stopped bot's commands in flight are dropped at the gateway
    engine = core.engine
    handle = engine.handle
    cdef bint watched = core.tap is not None
    cdef dict refs = slot.refs
    first = None
    for ref, command in outbox:
        core.arriving = ref
        if watched:
            first = core.arriving_from = core.seq() + 1
        try:
            result = handle(command)
        finally:
            core.arriving = None
            if watched and ref is not None:
                last = core.seq()
                if last >= first:
                    # the seqs this command emitted: a rejection among them is the ref's (a
                    # scan during the command may have replaced the list: read it now)
                    core.arrivals.append((first, last, ref))
        if ref is not None:
            order_id = result.order_id
            if order_id is not None:
                refs[order_id] = ref
    return 0


cdef int _deliver(_Core core, CSlot slot, list batch, callback, int extra) except -1:
    """:meth:`BotRunner._deliver`'s twin; ``extra``: the reference's frames above its own
    (1 from _timer or _quiet), for the recursion levels a bot's code finds taken."""
    callback = _step(core, slot, batch, callback)
    if callback is None:
        return 0
    runner = core.runner
    cdef long long now = core.now()
    driver = slot.driver
    try:
        if type(driver) is LocalDriver and LocalDriver.deliver is _LOCAL_DELIVER:
            outbox, timers = _dispatch(
                driver.bot, driver.ctx, batch, driver.budget_lines, now, slot.view, extra
            )
        else:
            # the reference's _deliver frame, less this call's own level
            outbox, timers = _call(extra, None, driver.deliver, (now, batch, slot.view))
        if type(outbox) is not list or type(timers) is not list or outbox or timers:
            outbox, timers = _admit(runner, slot, outbox, timers, callback, extra)
    except BotFailure as failure:
        runner._fail(slot, failure)
        return 0
    if outbox:
        core.schedule(slot.command_link.at(now), core.a_arrive, (slot, outbox))
    slot.timers += len(timers)
    for at, tag in timers:
        core.sim.schedule(max(at, now + 1), core.a_timer, slot, tag)
    return 0


cdef object _last_rate(list rows, object paid):
    """:meth:`BotRunner._last_rate` over rows (``Tap.scan_rows``: Events and thin rows, whose
    first four fields -- seq, t, kind, instrument -- are always read): the rate announced in
    the same instant before the funding payment ``paid``."""
    rate = "0"
    for e in rows:
        if e[2] == FUNDING_RATE and e[3] == paid[3] and e[0] < paid[0]:
            rate = e[12]["rate"]
    return rate


cdef _fill(dict by_account, dict private, dict told, account, e, side, order_id, cash,
           liquidity):
    found = by_account.get(account)
    if found is None:
        return
    cdef CSlot slot = <CSlot>found
    told[account] = "step" if account in told else "on_fill"
    hears = slot.hears
    if hears is not None and not _has(hears, "on_fill"):
        return
    report = _new(
        FillReport,
        (e[3], e[1], order_id, slot.refs.get(order_id), side, e[7], e[8], cash or 0, liquidity),
    )
    mine = private.get(account)
    if mine is None:
        private[account] = [("on_fill", report)]
    else:
        (<list>mine).append(("on_fill", report))


cdef object _step(_Core core, CSlot slot, list batch, callback):
    """:meth:`BotRunner._step`'s twin."""
    if slot.stopped:
        return None
    cdef long long now = core.now()
    if now >= slot.window_end:
        slot.window_end = (now // _WINDOW + 1) * _WINDOW
        slot.steps = 0
    slot.steps += 1
    if callback is None:
        callback = _callback(batch)
    if (slot.steps > slot.cap) if slot.capped else (
        slot.other_cap is not None and slot.steps > slot.other_cap
    ):
        runner = core.runner
        runner._fail(slot, BotFailure("limit", callback, runner._steps_detail(slot)))
        return None
    return callback


cdef tuple _admit(runner, CSlot slot, outbox, timers, callback, int extra):
    """:meth:`BotRunner._admit`'s twin."""
    if type(outbox) is not list or type(timers) is not list:
        raise BotFailure(
            "raised", callback, "the outbox or the timers were replaced outside the Context"
        )
    for entry in <list>outbox:
        if type(entry) is not tuple or len(entry) != 2:
            raise BotFailure(
                "raised", callback, f"outbox: a {_kind(entry)}, not a (ref, command) pair"
            )
        if entry[0] is not None and type(entry[0]) is not int:
            raise BotFailure("raised", callback, f"outbox: a ref of {_kind(entry[0])}")
    cdef list checked_timers = []
    for entry in <list>timers:
        if type(entry) not in (tuple, list) or len(entry) != 2 or type(entry[0]) is not int:
            raise BotFailure(
                "raised", callback, f"timers: a {_kind(entry)}, not an (int ns, tag) pair"
            )
        checked_timers.append((entry[0], entry[1]))
    if slot.max_commands is not None and len(outbox) > slot.max_commands:
        raise BotFailure(
            "limit",
            callback,
            f"commands: {len(outbox):,} sent in answer to one delivery, more than the limit "
            f"of {slot.max_commands:,} (max_commands)",
        )
    pending = slot.timers + len(checked_timers)
    if slot.max_timers is not None and pending > slot.max_timers:
        raise BotFailure(
            "limit",
            callback,
            f"timers: {pending:,} pending, more than the limit of {slot.max_timers:,} "
            "(max_timers)",
        )
    account = slot.account
    cdef list commands = []
    cdef Py_ssize_t bound, item, size
    for ref, command in <list>outbox:
        raw = _copy(command, _DEPTH + extra, &bound)  # _deliver, _admit, _copy, run_within
        reason = None
        if type(raw) is not dict:
            reason = "command: expected a mapping"
        else:
            kind = (<dict>raw).get("type")
            if kind == "bot_failed":
                reason = "unauthorised: bot_failed is sent by the runner, never by a bot"
            elif kind not in TRADING_TYPES:
                reason = f"type: expected one of {', '.join(TRADING_TYPES)}, got {kind!r:.80}"
            else:
                size = len(<dict>raw)
                owner = (<dict>raw).setdefault("account", account)
                if bound >= 0 and len(<dict>raw) != size:  # the account added: its item too
                    item = _item_bound("account", account)
                    bound = -1 if item < 0 else bound + item
                if owner != account:
                    reason = (
                        f"unauthorised: bot {slot.name!r} trades {account!r}, not {owner!r:.80}"
                    )
        # measured as the reference measures it, unless bounded within the limit: a flat
        # mapping's JSON has a bound without writing it (_copy, _item_bound)
        if (
            reason is None
            and not 0 <= bound <= _MAX_BYTES
            and len(_dumps(raw)) > MAX_COMMAND_BYTES
        ):
            reason = (
                f"command: {len(_dumps(raw)):,} bytes, more than the "
                f"{MAX_COMMAND_BYTES:,} a command may take"
            )
        if reason is None:
            commands.append((ref, raw))
        else:
            runner.engine.reject(raw, reason, "runner", account)
    return commands, checked_timers


def dispatch(bot, ctx, list messages, budget_lines, now=None, account=None):
    """:func:`clients.runner.dispatch`'s twin, as the compiled runner runs it for a
    :class:`~clients.runner.LocalDriver` (the same arguments, result and failures)."""
    return _dispatch(bot, ctx, messages, budget_lines, now, account, 0)

