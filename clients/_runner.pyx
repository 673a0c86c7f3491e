# The bot runner's delivery path, compiled (issue #20): CompiledRunner, the twin that sessions
# of the compiled engine run. clients/runner.py's BotRunner is its reference: the same code,
# step for step, with the per-slot state in a C struct (CSlot), the latency draws in a C array
# (CLink), the budget's compiled counter started without run_within's Python frame and the
# clock's heap pushed to in C. tests/clients/test_runner_twins.py holds the logs equal.

cimport cython
from libc.stdint cimport int64_t

import sys
import traceback
from functools import partial
from itertools import repeat
from types import MethodType

from orjson import dumps as _dumps

from clients import budget as _budget_module
from clients import runner as _reference
from clients._budget import Counter as _Counter
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
from exchange.core.clock import PARTICIPANT
from exchange.core.commands import TRADING_TYPES, jsonable
from exchange.core.events import ORDER_RESTED

from exchange.core._clock cimport Simulator as _CSimulator

cdef object _new = tuple.__new__
cdef object _NONE = type(None)
cdef object _ORDER_STATUS_GET = _ORDER_STATUS.get
cdef object _NOOPS_GET = _NOOPS.get
cdef int64_t _PARTICIPANT = PARTICIPANT
cdef int64_t _WINDOW = STEP_WINDOW_NS
cdef Py_ssize_t _BLOCK = 1024  # clients.latency.Link.BLOCK


cdef extern from "Python.h":
    int Py_EnterRecursiveCall(const char* where) except? -1
    void Py_LeaveRecursiveCall()


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
cdef object _within(object lines, object fn, tuple args):
    """:func:`clients.budget.run_within`'s twin (the same units, failures and messages):
    with the compiled counter it is started here, without run_within's Python frame."""
    if lines is None:
        return fn(*args)
    if _budget_module.COUNTER == "python":
        return _budget_module.run_within(lines, fn, *args)
    tracer = _Counter(lines)
    if sys.settrace is not _guarded_settrace:
        sys.settrace = _guarded_settrace
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
    if lines is not None and _budget_module.COUNTER == "python":
        levels -= 1  # the reference counter's run_within frame is one of the levels
    try:
        for i in range(levels):
            Py_EnterRecursiveCall("")
            taken += 1
        return _within(lines, fn, args)
    finally:
        for i in range(taken):
            Py_LeaveRecursiveCall()


cdef str _text(exc, budget_lines, int levels):
    try:
        text = _call(levels, budget_lines, str, (exc,))
    except BaseException:  # noqa: BLE001 - whatever a hostile __str__ does
        return "<unprintable>"
    return text if type(text) is str else "<unprintable>"


cdef object _copy(object command, int levels):
    """:func:`clients.runner._copy`'s twin."""
    cdef dict d
    if type(command) is dict:
        d = <dict>command
        for key, value in d.items():
            kind = type(value)
            if type(key) is not str or not (
                kind is str or kind is int or kind is bool or kind is _NONE
            ):
                break
        else:
            return dict(d)
    try:
        return _call(levels, DEFAULT_LINES, jsonable, (command,))
    except BaseException:  # noqa: BLE001 - whatever the object does
        return {"unserialisable": _kind(command)}


cdef tuple _dispatch(object bot, object ctx, list messages, object budget_lines, object now,
                     object account, int extra):
    """:func:`clients.runner.dispatch`'s twin."""
    if _getsignal(_SIGINT) is not _on_sigint:
        watch_interrupts()
    interrupts = _reference._interrupts_raised
    cdef bint skip = budget_lines is None or budget_lines > 0
    for name, payload in messages:
        if name == "on_book":
            ctx._books[payload.instrument] = payload
        try:
            method = getattr(bot, name)
            if skip and type(method) is MethodType and method.__func__ is _NOOPS_GET(name):
                continue
            if account is not None:
                ctx._begin(now, account())
                account = None
            if payload is None and name != "on_timer":
                _call(_DEPTH + extra, budget_lines, method, (ctx,))
            else:
                _call(_DEPTH + extra, budget_lines, method, (ctx, payload))
        except BaseException as exc:  # noqa: BLE001 - any error in a bot stops the bot, not us
            if _reference._interrupts_raised != interrupts:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                raise KeyboardInterrupt from exc
            cause = "budget" if isinstance(exc, BudgetExceeded) else "raised"
            raise BotFailure(cause, name, describe(exc, _text(exc, budget_lines, _DEPTH + extra + 1))) from None
    if _reference._interrupts_raised != interrupts:
        raise KeyboardInterrupt  # a real interrupt, which the bot caught
    return ctx._drain()


# ---------------------------------------------------------------- the runner
@cython.final
cdef class _Core:
    """What the compiled paths read on every delivery, typed, and the actions the clock runs
    (bound methods of this C class: no instance dict to look in)."""

    cdef object runner
    cdef object engine
    cdef object sim
    cdef _CSimulator csim  # the compiled clock, or None (then sim.schedule)
    cdef dict by_account
    cdef list slots
    cdef object a_deliver  # the bound methods below, made once
    cdef object a_quiet
    cdef object a_timer
    cdef object a_arrive

    cdef inline long long now(self) except? -1:
        """The clock's time, ns (what ``sim.now`` says)."""
        if self.csim is not None:
            return self.csim._now
        return self.sim.now

    cdef int schedule(self, long long at, object action, tuple args) except -1:
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


class CompiledRunner(BotRunner):
    """:class:`clients.runner.BotRunner`'s compiled twin (the runner of a session on the
    compiled engine): the same arguments, deliveries, failures and logs, byte for byte. Its
    slots are :class:`CSlot` and its links :class:`CLink`; bots, contexts and drivers are the
    reference's own."""

    def __init__(self, engine, sim, seed, depth=_reference.DEFAULT_DEPTH):
        super().__init__(engine, sim, seed, depth)
        cdef _Core core = _Core()
        core.runner = self
        core.engine = engine
        core.sim = sim
        core.csim = sim if isinstance(sim, _CSimulator) else None
        core.by_account = self._by_account
        core.a_deliver, core.a_quiet = core.deliver, core.quiet
        core.a_timer, core.a_arrive = core.timer, core.arrive
        core.slots = self.slots
        self._core = core

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
        slot.view = partial(self._snapshot, slot)
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

    def _snapshot(self, CSlot slot):
        if self._tap is not None:
            self._scan()
        view = slot.snapshot
        if view is None:
            cash, positions, orders = self.engine.account_view(slot.account)
            view = _new(AccountView, (cash, positions, tuple(map(_new, repeat(OpenOrder), orders))))
            slot.snapshot = view
        return view

    def _scan(self):
        got = self._tap.scan_rows(self._lines, self._thin_kinds, self._thin_accounts)
        if got is None:
            return
        events, stale, rejections = got
        cdef CSlot slot
        cdef list slots
        if stale is not None:
            slots = self.slots
            if stale is True:
                for slot in slots:
                    slot.snapshot = None
            else:
                for i in stale:
                    (<CSlot>slots[i]).snapshot = None
        if events:
            self._pending += events
        if rejections is not None:
            for i in rejections:
                seq = events[i][0]  # a row's seq (an Event's or a thin row's first field)
                ref = self._ref_of(seq)
                if ref is not None:
                    self._rejected_refs[seq] = ref
        arrivals = self._arrivals
        if arrivals:
            done = self._tap.next_seq
            self._arrivals = [entry for entry in arrivals if entry[1] >= done]

    def _publish(self):
        if self._tap is not None:
            self._scan()
            self._tap.reset()
        cdef list pending = self._pending
        cdef list events = pending.copy()
        pending.clear()
        self._publish_at = None
        cdef dict by_account = self._by_account
        rejected_refs = self._rejected_refs
        heard = self._heard
        cdef list public = []
        cdef dict private = {}
        cdef dict told = {}
        cdef dict dirty = {}
        cdef CSlot slot
        cdef list own
        for e in events:
            seq, t, kind, instrument, account, order_id, side, price, qty, amount, other, other_id, data = e
            if kind in _BOOK_KINDS:
                dirty[instrument] = None
                if kind != FILL:
                    if kind not in _ORDER_STATUS:
                        continue
                else:
                    if heard is None or "on_trade" in heard:
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
            status = _ORDER_STATUS_GET(kind)
            if status is not None:
                found = by_account.get(account)
                if found is not None:
                    slot = <CSlot>found
                    ref = rejected_refs.pop(seq, None) if rejected_refs else None
                    told[account] = "step" if account in told else "on_order"
                    hears = slot.hears
                    if hears is None or "on_order" in hears:
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
                if heard is None or "on_index" in heard:
                    index = ("on_index", _new(IndexPrint, (instrument, t, price)))
                else:
                    index = _UNHEARD_INDEX
                public.append((None, index))
            elif kind == MARK_PRICE:
                if heard is None or "on_mark" in heard:
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
                    if hears is None or "on_order" in hears:
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
                if heard is None or "on_funding" in heard:
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
                    if hears is None or "on_funding" in hears:
                        rate = _last_rate(events, e)
                        funding = Funding(instrument, t, rate, None, qty, amount)
                        private.setdefault(account, []).append(("on_funding", funding))
            elif kind in _CALL_STATUS:
                found = by_account.get(account)
                if found is not None:
                    slot = <CSlot>found
                    told[account] = "step" if account in told else "on_margin_call"
                    hears = slot.hears
                    if hears is None or "on_margin_call" in hears:
                        deadline = (data or {}).get("deadline")
                        call = MarginCall(_CALL_STATUS[kind], t, amount or 0, deadline)
                        private.setdefault(account, []).append(("on_margin_call", call))
        watched = self._watched
        for instrument in dirty:
            if watched is None or instrument in watched:
                public.append((instrument, ("on_book", self._book_view(instrument))))
        cdef _Core core = self._core
        cdef long long now = core.now()
        cdef dict market = {}
        cdef list kept
        cdef Py_ssize_t count
        cdef bint loud
        for found in self.slots:
            slot = <CSlot>found
            if slot.stopped:
                continue
            audience = slot.audience
            shared = market.get(audience)
            if shared is None:
                books, hears = audience
                count = 0
                name = None
                kept = []
                loud = False
                for instrument, message in public:
                    if instrument is None or books is None or instrument in books:
                        count += 1
                        name = message[0]
                        if hears is None or name in hears:
                            kept.append(message)
                            loud = True
                        elif name == "on_book":
                            kept.append(message)  # for ctx.book()
                if count > 1:
                    name = "step"
                shared = market[audience] = (name, kept, loud)
            callback, messages, loud = shared
            account = slot.account
            mine = told.get(account)
            if mine is not None:
                callback = mine if callback is None else "step"
            elif callback is None:
                continue
            own = private.get(account)
            if own:
                core.schedule(slot.data_link.at(now), core.a_deliver, (slot, own + messages, callback))
            elif loud:
                core.schedule(
                    slot.data_link.at(now), core.a_deliver, (slot, messages.copy(), callback)
                )
            else:
                core.schedule(slot.data_link.at(now), core.a_quiet, (slot, messages, callback))

    def _book_view(self, instrument):
        bids, asks = self.engine.instruments[instrument].book.top(self.depth)
        bids = tuple(map(_new, repeat(BookLevel), bids))
        asks = tuple(map(_new, repeat(BookLevel), asks))
        return _new(BookView, (instrument, self.engine.t, bids, asks))

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


cdef int _quiet(_Core core, CSlot slot, list batch, callback) except -1:
    """:meth:`BotRunner._quiet`'s twin."""
    if _step(core, slot, batch, callback) is None:
        return 0
    ctx = slot.driver.ctx
    books = ctx._books
    for _, view in batch:
        books[view.instrument] = view
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
    runner = core.runner
    engine = core.engine
    handle = engine.handle
    cdef bint watched = runner._tap is not None
    cdef dict refs = slot.refs
    first = None
    for ref, command in outbox:
        runner._arriving = ref
        if watched:
            first = runner._arriving_from = engine.seq + 1
        try:
            result = handle(command)
        finally:
            runner._arriving = None
            if watched and ref is not None and engine.seq >= first:
                runner._arrivals.append((first, engine.seq, ref))
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
    if hears is not None and "on_fill" not in hears:
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
    for ref, command in <list>outbox:
        raw = _copy(command, _DEPTH + extra)  # _deliver, _admit, _copy, run_within
        reason = None
        if type(raw) is not dict:
            reason = "command: expected a mapping"
        else:
            kind = raw.get("type")
            if kind == "bot_failed":
                reason = "unauthorised: bot_failed is sent by the runner, never by a bot"
            elif kind not in TRADING_TYPES:
                reason = f"type: expected one of {', '.join(TRADING_TYPES)}, got {kind!r:.80}"
            else:
                owner = raw.setdefault("account", account)
                if owner != account:
                    reason = (
                        f"unauthorised: bot {slot.name!r} trades {account!r}, not {owner!r:.80}"
                    )
        if reason is None and len(_dumps(raw)) > MAX_COMMAND_BYTES:
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
