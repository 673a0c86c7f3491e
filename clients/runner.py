"""The bot runner: wires bots to a session's exchange and clock, deterministically.

How a session with bots runs (all in simulated time, on the session's one thread):

1. The runner taps the exchange's event stream: in a recorded run it reads the events' lines
   from the recorder's :class:`~exchange.core._lines.LineBatch` in ranges (:meth:`BotRunner.
   _watch`: a C scan, an Event built only for the kinds bots hear about), otherwise it listens
   to every event (``Exchange.subscribe``; :data:`TAP_LINES` False: always). Events of one
   simulated instant are collected; after everything else at that instant (clock priority
   ``OBSERVER``) the runner turns them into bot messages: public ones (book views of the
   instruments that changed, trades, index prints, funding rates) for every bot, private ones
   (order updates, own fills, own funding, margin calls) for the account's bot only.
2. Each bot's messages of that instant travel as one batch over its data link
   (:mod:`clients.latency`) and are delivered at the arrival time: the bot's callbacks run one
   by one, each within its budget (:mod:`clients.budget`). A callback an in-process bot does
   not override is not run (:func:`dispatch`), so its messages are not even made: the batch
   (its latency draw, its place in the step limit, the name a failure gives) stays whole, but
   only the messages the bot hears travel in it, with the book views ``ctx.book()`` keeps, and
   a batch with nothing heard in it runs no callback machinery at all
   (:meth:`BotRunner._quiet`). Which callbacks a bot overrides is read (running none of its
   code) when the runner starts (:func:`_hearing`), as its ``books`` are read when it is added.
3. Whatever the callbacks sent is checked and copied when they return (:meth:`BotRunner._admit`):
   the runner stamps every command with the account of the bot it came from, refuses what a
   bot may not send -- a type other than ``exchange.core.commands.TRADING_TYPES``, another
   account -- as a ``CommandRejected`` (``source: "runner"``) attributed to the bot's own
   account, and keeps its own copy, so a bot changing a command afterwards changes nothing.
   The rest travels as one batch over the command link and reaches the exchange
   (``Exchange.handle``) at its arrival time; it is logged there like any command.
4. A bot that raises (any ``BaseException``: ``SystemExit``, a ``KeyboardInterrupt`` of its
   own...), overruns its budget, breaks a limit (:data:`DEFAULT_MAX_TIMERS` timers pending,
   :data:`DEFAULT_MAX_STEPS` deliveries in one simulated second), or -- remote -- misses a
   lockstep deadline is stopped: the runner sends the exchange a ``bot_failed`` command, which
   logs ``BotFailed`` with the cause and cancels the account's orders. Commands the bot had in
   flight are dropped; the session goes on. A real interrupt of the run (SIGINT, Ctrl-C) while
   a bot runs is not the bot's doing: it interrupts the run, which leaves a resumable log.

The runner has a compiled twin, :class:`clients._runner.CompiledRunner` (Cython; the same steps,
deliveries, failures and logs, held byte-identical by tests/clients/test_runner_twins.py), which
a session on the compiled engine runs; :func:`make_runner` picks the twin for an engine, and
:class:`BotRunner` here stays the plain-Python reference that the reference engine runs.

The exchange never imports this module: a scenario's ``drive`` step creates the runner. The
runner's own work emits no events but the rejections it records through ``Exchange.reject``
(which verification records again from the log), so verification (which re-feeds the logged
commands) does not need the bots.

A bot object, its :class:`~clients.context.Context` and everything the runner hands it (messages,
account snapshots, book views) hold plain values: no attribute, closure or bound method leads
from them to the exchange, the clock or the runner. That closes the object paths, not Python:
in-process code can always find any object (``gc.get_objects()``, the frames of the call stack),
so in-process bots are trusted code, and untrusted code belongs in its own process behind the
socket gateway (``clients.gateway``).
"""

from __future__ import annotations

import _signal
import signal
import sys
import threading
import traceback
import zlib
from dataclasses import dataclass, field
from functools import partial
from inspect import getattr_static
from itertools import repeat
from types import MethodType
from typing import Any

import numpy as np
from orjson import dumps as _dumps

from clients import budget as _budget
from clients.bot import (
    MAX_COMMANDS,
    BookLevel,
    BookView,
    Bot,
    FillReport,
    Funding,
    IndexPrint,
    MarginCall,
    Mark,
    OrderUpdate,
    Trade,
)
from clients.budget import DEFAULT_LINES, BudgetExceeded, run_within
from clients.context import AccountView, Context, OpenOrder
from clients.latency import Latency, Link
from exchange.core import _lines
from exchange.core import events as ev
from exchange.core.clock import OBSERVER, PARTICIPANT, Simulator
from exchange.core.commands import TRADING_TYPES, jsonable
from exchange.core.events import Event, decode
from exchange.kernel.engine import Exchange

_budget_file = _budget.__file__
#: Files of the runner's own frames, which :func:`describe` leaves out of a bot's traceback
#: (the compiled twin, :mod:`clients._runner`, adds the name its frames carry).
_OWN_FILES = {__file__, _budget_file}
_new = tuple.__new__  # tuple.__new__(NamedTupleClass, fields): a message without a Python frame
FILL, INDEX_PUBLISHED, MARK_PRICE = ev.FILL, ev.INDEX_PUBLISHED, ev.MARK_PRICE
COMMAND_REJECTED, FUNDING_RATE, FUNDING_PAID = ev.COMMAND_REJECTED, ev.FUNDING_RATE, ev.FUNDING_PAID

#: Levels per side in a book view.
DEFAULT_DEPTH = 5

#: Most timers a bot may have pending (set and not yet fired); a callback that would leave more
#: stops the bot (``BotFailed``, cause ``limit``). The reference strategies keep one or two.
DEFAULT_MAX_TIMERS = 1_000
#: Most deliveries (callback batches: market data and timers) a bot may receive in one
#: simulated second (``t // 10**9``); the next one stops the bot (``BotFailed``, cause
#: ``limit``). It bounds a bot that answers every callback with a timer at ``now + 1`` (which
#: would otherwise run billions of steps in a simulated second). The busiest reference bot in
#: the built-in scenarios and the bots bench receives far fewer (see docs/bots.md).
DEFAULT_MAX_STEPS = 10_000
#: The window of :data:`DEFAULT_MAX_STEPS`, simulated ns.
STEP_WINDOW_NS = 10**9
#: Most commands a bot may send in answer to one delivery (the remote protocol's cap on one
#: step's answer, ``clients.protocol.MAX_COMMANDS``, so a bot behaves alike in both places);
#: more stops the bot (``BotFailed``, cause ``limit``) and none of them is sent.
DEFAULT_MAX_COMMANDS = MAX_COMMANDS
#: A command whose JSON form is longer than this many bytes is refused by the runner (recorded
#: cut to a prefix, as ``Exchange.reject`` cuts), so no bot can put megabytes into the log.
MAX_COMMAND_BYTES = Exchange.REJECT_MAX_BYTES

#: A message to a bot: the callback's name and its payload (``None`` for start/stop).
Message = tuple[str, Any]

_BOOK_KINDS = frozenset({ev.ORDER_RESTED, ev.ORDER_CANCELLED, ev.ORDER_AMENDED, ev.FILL})
_ORDER_STATUS = {
    ev.ORDER_ACCEPTED: "accepted",
    ev.ORDER_REJECTED: "rejected",
    ev.ORDER_CANCELLED: "cancelled",
    ev.ORDER_AMENDED: "amended",
}
_CALL_STATUS = {
    ev.COLLATERAL_CALL: "called",
    ev.CALL_INCREASED: "increased",
    ev.CALL_REDUCED: "reduced",
    ev.CALL_CURED: "cured",
    ev.DEFAULT: "defaulted",
}
#: Kinds of events without an account that change no account's cash, positions or orders (any
#: other event without one -- an instrument's expiry -- makes every cached snapshot stale).
_NO_ACCOUNT_CHANGE = frozenset(
    {
        ev.SESSION_STARTED,
        ev.SESSION_ENDED,
        ev.INSTRUMENT_LISTED,
        ev.INDEX_PUBLISHED,
        ev.MARK_PRICE,
        ev.FUNDING_RATE,
        ev.POOL_FUNDED,
        ev.COMMAND_REJECTED,
        *ev.ECONOMY_KINDS,  # news of the credit economy: no exchange account moves
    }
)
_WANTED = frozenset(
    {
        *_BOOK_KINDS,
        *_ORDER_STATUS,
        *_CALL_STATUS,
        ev.COMMAND_REJECTED,
        ev.INDEX_PUBLISHED,
        ev.MARK_PRICE,
        ev.FUNDING_RATE,
        ev.FUNDING_PAID,
    }
)
#: Rejections: a bot's own, while the runner hands its command to the exchange, carry its ref.
_REJECTIONS = frozenset({ev.COMMAND_REJECTED, ev.ORDER_REJECTED})

#: Whether a runner whose exchange records into a :class:`~exchange.core._lines.LineBatch` (a
#: recorded run's sink) reads the events from their lines (:meth:`BotRunner._watch`) rather
#: than as a listener of every event (``Exchange.subscribe``). Both give every bot the same
#: deliveries (tests/clients/test_runner_tap.py); False keeps the listener, the reference.
TAP_LINES = True


class BotFailure(Exception):
    """A bot must be stopped: ``cause`` (raised|budget|limit|timeout|disconnected), the
    callback it was in and a deterministic description (traceback without machine-specific
    paths)."""

    def __init__(self, cause: str, callback: str, detail: str) -> None:
        super().__init__(f"{cause} in {callback}: {detail}")
        self.cause, self.callback, self.detail = cause, callback, detail


def describe(exc: BaseException, message: str | None = None) -> str:
    """A traceback that is the same on every machine: file names without their directories.
    ``message``: the exception's text, if already made (default ``str(exc)``)."""
    own = _OWN_FILES
    # the runner's own frames (dispatch, run_within) are left out, so that a change to this
    # machinery does not change the logged traceback of a bot that fails
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename not in own]
    lines = [
        f"  {frame.filename.replace(chr(92), '/').rsplit('/', 1)[-1]}:{frame.lineno} "
        f"in {frame.name}"
        for frame in frames
    ]
    if message is None:
        message = str(exc)
    text = "\n".join(
        ["Traceback (most recent call last):", *lines, f"{type(exc).__name__}: {message}"]
    )
    return text[-8_000:]


def bot_rng(seed: int, name: str, stream: int = 0) -> np.random.Generator:
    """The seeded generator of bot ``name`` (``stream`` 0: the bot's own; 1, 2: latency)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), stream])


# ---------------------------------------------------------------- real interrupts
# A bot may raise ``KeyboardInterrupt`` (or ``SystemExit``) itself; that stops the bot. A SIGINT
# delivered to the process while a bot runs must instead interrupt the run. The handler below
# wraps the process's own SIGINT handler and counts the interrupts it raised, so ``dispatch``
# can tell the two apart: a batch of callbacks during which the count moved was interrupted
# for real.
_interrupts_raised = 0
_previous_sigint: Any = None
_getsignal = _signal.getsignal  # without the enum conversion: called at every delivery
_SIGINT = int(signal.SIGINT)


def _on_sigint(signum: int, frame: Any) -> None:
    global _interrupts_raised
    try:
        _previous_sigint(signum, frame)
    except BaseException:
        _interrupts_raised += 1
        raise


def watch_interrupts() -> None:
    """Install the SIGINT wrapper (idempotent; main thread only, and only over a Python-level
    handler: with ``SIG_IGN``/``SIG_DFL`` no interrupt can surface inside a bot)."""
    global _previous_sigint
    current = _getsignal(_SIGINT)
    if current is _on_sigint or not callable(current):
        return
    if threading.current_thread() is not threading.main_thread():
        return
    _previous_sigint = current
    signal.signal(signal.SIGINT, _on_sigint)


def _text(exc: BaseException, budget_lines: int | None) -> str:
    """``str(exc)`` for the log, within the budget: a bot's exception may not hang or crash
    the runner through its ``__str__``."""
    try:
        text = run_within(budget_lines, str, exc)
    except BaseException:  # noqa: BLE001 - whatever a hostile __str__ does
        return "<unprintable>"
    return text if type(text) is str else "<unprintable>"


_NONE = type(None)
#: The base class's callbacks, which do nothing (:func:`dispatch` skips them), by name.
_NOOPS = {name: value for name, value in vars(Bot).items() if name.startswith("on_")}


def _callback(batch: list[Message]) -> str:
    """The name a failure after ``batch`` is logged under: its one callback, or ``step``."""
    return batch[0][0] if len(batch) == 1 else "step"


#: The callbacks a publish may call (what :attr:`Slot.hears` is made of).
_PUBLISHED = (
    "on_book",
    "on_trade",
    "on_order",
    "on_fill",
    "on_index",
    "on_mark",
    "on_funding",
    "on_margin_call",
)
# public messages no bot hears, unbuilt: they still count in every batch they are part of
_UNHEARD_TRADE = ("on_trade", None)
_UNHEARD_INDEX = ("on_index", None)
_UNHEARD_MARK = ("on_mark", None)
_UNHEARD_FUNDING = ("on_funding", None)


def _hearing(driver: Any) -> frozenset[str] | None:
    """The callbacks a publish may call that ``driver``'s bot overrides -- all but those its
    class takes from :class:`~clients.bot.Bot` unchanged, which :func:`dispatch` skips -- or
    ``None`` if it is to be sent every message: a driver other than the runner's own
    :class:`LocalDriver` (a remote one skips on its own side), a budget of 0 units (every
    callback runs), a bot whose attribute lookup is not the plain one. Read without running
    any of the bot's code (``inspect.getattr_static``)."""
    if type(driver) is not LocalDriver or LocalDriver.deliver is not _LOCAL_DELIVER:
        return None  # another driver, or the runner's own with its deliver replaced
    lines = driver.budget_lines
    if lines is not None and not lines > 0:
        return None
    bot = driver.bot
    cls = type(bot)
    if cls.__getattribute__ is not object.__getattribute__:
        return None
    try:
        own = object.__getattribute__(bot, "__dict__")
    except AttributeError:
        own = {}  # no instance dict (__slots__): nothing to shadow the class
    if type(own) is not dict:
        return None
    # skipped: Bot's own function, reached through the class (a bound method of it); one in
    # the instance's dict is called as it is, so it is heard
    return frozenset(
        name
        for name in _PUBLISHED
        if name in own or getattr_static(cls, name, None) is not _NOOPS[name]
    )


def _kind(value: Any) -> str:
    """What ``value`` is, for a message: its type's name (never its ``repr``, which a
    hostile object may make hang or raise)."""
    return f"{type(value).__name__!r:.80} object"


def _copy(command: Any) -> Any:
    """The runner's own copy of a command from a bot's outbox. A flat mapping of strings to
    strings, ints, booleans and ``None`` (all the Context makes) is copied as it is; anything
    else is reduced to its JSON form, as the exchange would log it, under the default budget
    and catching everything, since a hostile object's ``__repr__`` may loop or raise."""
    if type(command) is dict:
        for key, value in command.items():
            # identity tests, not ``in`` a set: a hostile value's type may be of a metaclass
            # whose ``__hash__`` or ``__eq__`` raises
            kind = type(value)
            if type(key) is not str or not (
                kind is str or kind is int or kind is bool or kind is _NONE
            ):
                break
        else:
            return dict(command)
    try:
        return run_within(DEFAULT_LINES, jsonable, command)
    except BaseException:  # noqa: BLE001 - whatever the object does
        return {"unserialisable": _kind(command)}


def dispatch(
    bot: Bot,
    ctx: Context,
    messages: list[Message],
    budget_lines: int | None,
    now: int | None = None,
    account: Any = None,
):
    """Run ``messages`` through ``bot``'s callbacks (each within the budget); returns the
    commands and timers they produced. Raises :class:`BotFailure` if a callback fails:
    whatever it raises (any ``BaseException``) stops the bot, not the session, except a real
    interrupt of the run (a SIGINT delivered meanwhile), which is raised as
    ``KeyboardInterrupt`` even if the bot caught it. Used in-process and by the remote client
    alike, so a bot behaves the same in both places.

    A callback the bot does not override (:class:`~clients.bot.Bot`'s own, which does nothing)
    is not called: under any budget of at least one unit it could neither fail nor act, so
    skipping it changes nothing but the time (three quarters of the flagship's callbacks).
    ``account`` (with ``now``, ns): the bot's account snapshot, a callable, as
    :meth:`LocalDriver.deliver` takes it; the context starts the delivery with it
    (``Context._begin``) just before the first callback that runs, so a delivery whose
    callbacks are all skipped never builds the snapshot."""
    if _getsignal(_SIGINT) is not _on_sigint:
        watch_interrupts()
    interrupts = _interrupts_raised
    # with a budget of 0 units even a no-op callback overruns it (one call): call them all
    skip = budget_lines is None or budget_lines > 0
    for name, payload in messages:
        if name == "on_book":
            ctx._books[payload.instrument] = payload
        try:
            method = getattr(bot, name)
            if skip and type(method) is MethodType and method.__func__ is _NOOPS.get(name):
                continue
            if account is not None:
                ctx._begin(now, account())
                account = None
            # a timer's tag is its payload even when it is None (``ctx.schedule(at)``): only
            # the callbacks that carry nothing (``on_start``) are called without one
            if payload is None and name != "on_timer":
                run_within(budget_lines, method, ctx)
            else:
                run_within(budget_lines, method, ctx, payload)
        except BaseException as exc:  # noqa: BLE001 - any error in a bot stops the bot, not us
            if _interrupts_raised != interrupts:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                raise KeyboardInterrupt from exc
            cause = "budget" if isinstance(exc, BudgetExceeded) else "raised"
            raise BotFailure(cause, name, describe(exc, _text(exc, budget_lines))) from None
    if _interrupts_raised != interrupts:
        raise KeyboardInterrupt  # a real interrupt, which the bot caught
    return ctx._drain()


class LocalDriver:
    """Delivers messages to a bot object in this process."""

    def __init__(self, bot: Bot, ctx: Context, budget_lines: int | None) -> None:
        self.bot, self.ctx, self.budget_lines = bot, ctx, budget_lines

    def deliver(self, now: int, messages: list[Message], account: Any):
        """Run ``messages`` at ``now`` ns; ``account()`` is the bot's account snapshot, which
        the context receives as a value (it never holds a way back to the exchange)."""
        return dispatch(self.bot, self.ctx, messages, self.budget_lines, now, account)

    def close(self) -> None:
        self.ctx.stopped = True


_LOCAL_DELIVER = LocalDriver.deliver


@dataclass
class Slot:
    """One bot in the session."""

    name: str
    account: str
    driver: Any  # LocalDriver or a remote driver with the same ``deliver``/``close``
    data_link: Link
    command_link: Link
    books: frozenset[str] | None
    max_timers: int | None = DEFAULT_MAX_TIMERS
    max_steps: int | None = DEFAULT_MAX_STEPS
    max_commands: int | None = DEFAULT_MAX_COMMANDS
    view: Any = None  # () -> AccountView: the snapshot below, made when stale
    snapshot: AccountView | None = None  # the account as of now; None when events changed it
    refs: dict[int, int] = field(default_factory=dict)  # order id -> the bot's ref
    stopped: bool = False
    timers: int = 0  # timers pending
    window_end: int = 0  # the end of the simulated second whose deliveries ``steps`` counts
    steps: int = 0
    step_cap: float = float("inf")  # max_steps, or no limit
    #: the callbacks of a publish the bot overrides (None: all; read at the runner's start)
    hears: frozenset[str] | None = None
    audience: Any = None  # (books, hears): slots alike share the public part of a batch


class BotRunner:
    """Runs bots against one session's exchange and clock.

    Args:
        engine: the session's exchange.
        sim: the session's clock.
        seed: the session seed (each bot's generators derive from it and the bot's name).
        depth: levels per side in ``on_book`` views.
    """

    def __init__(
        self, engine: Exchange, sim: Simulator, seed: int, depth: int = DEFAULT_DEPTH
    ) -> None:
        self.engine, self.sim, self.seed, self.depth = engine, sim, seed, depth
        self.slots: list[Slot] = []
        self._by_account: dict[str, Slot] = {}
        self._pending: list[Event] = []
        self._publish_at: int | None = None
        self._started = False
        self._arriving: int | None = None  # ref of the submit being handled
        self._rejected_refs: dict[int, int] = {}  # seq of a rejection -> the submit's ref
        # reading the lines (_watch): the lines and their tap, or None (the listener's path)
        self._lines: Any = None
        self._tap: _lines.Tap | None = None
        self._arriving_from = 0  # the first seq the command being handled may emit
        self._arrivals: list[tuple[int, int, int]] = []  # (first seq, last seq, ref) unscanned
        self._heard: frozenset[str] | None = None  # callbacks some bot hears (None: any)
        self._watched: frozenset[str] | None = None  # books some bot watches (None: any)

    # ---------------------------------------------------------------- set-up
    def add(
        self,
        name: str,
        account: str,
        bot: Bot,
        *,
        latency: Latency | None = None,
        budget_lines: int | None = DEFAULT_LINES,
        max_timers: int | None = DEFAULT_MAX_TIMERS,
        max_steps: int | None = DEFAULT_MAX_STEPS,
        max_commands: int | None = DEFAULT_MAX_COMMANDS,
    ) -> Context:
        """Attach ``bot`` to ``account`` (which must exist; one bot per account).

        Args:
            budget_lines: per-callback budget (:mod:`clients.budget`); ``None``: none.
            max_timers: most timers pending at once; ``None``: no limit.
            max_steps: most deliveries in one simulated second; ``None``: no limit.
            max_commands: most commands sent in answer to one delivery; ``None``: no limit.
        """
        ctx = _new_context(self, name, account, bot_rng(self.seed, name))
        self.attach(
            name,
            account,
            LocalDriver(bot, ctx, budget_lines),
            latency,
            bot.books,
            max_timers=max_timers,
            max_steps=max_steps,
            max_commands=max_commands,
        )
        return ctx

    def attach(
        self,
        name: str,
        account: str,
        driver: Any,
        latency: Latency | None = None,
        books: tuple[str, ...] | None = None,
        *,
        max_timers: int | None = DEFAULT_MAX_TIMERS,
        max_steps: int | None = DEFAULT_MAX_STEPS,
        max_commands: int | None = DEFAULT_MAX_COMMANDS,
    ) -> None:
        """Attach any driver (in-process or remote) for ``account``; the limits as in
        :meth:`add`."""
        if self._started:
            raise RuntimeError("bots must be added before the runner starts")
        if account not in self.engine.accounts:
            raise ValueError(f"bot {name!r}: no account {account!r}")
        if account in self._by_account:
            raise ValueError(f"account {account!r} already has a bot")
        if any(s.name == name for s in self.slots):
            raise ValueError(f"two bots are named {name!r}")
        latency = latency or Latency()
        slot = Slot(
            name,
            account,
            driver,
            Link(latency, bot_rng(self.seed, name, 1)),
            Link(latency, bot_rng(self.seed, name, 2)),
            None if books is None else frozenset(books),
            max_timers,
            max_steps,
            max_commands,
        )
        slot.view = partial(self._snapshot, slot)
        if max_steps is not None:
            slot.step_cap = max_steps
        self.slots.append(slot)
        self._by_account[account] = slot

    def start(self, end_ns: int) -> None:
        """Tap the exchange, start every bot now and stop them at ``end_ns``."""
        self._started = True
        heard: set[str] | None = set()
        watched: set[str] | None = set()
        for slot in self.slots:
            slot.hears = _hearing(slot.driver)
            slot.audience = (slot.books, slot.hears)
            if slot.hears is None or heard is None:
                heard = None
            else:
                heard |= slot.hears
            if slot.books is None or watched is None:
                watched = None
            else:
                watched |= slot.books
        self._heard = None if heard is None else frozenset(heard)
        self._watched = None if watched is None else frozenset(watched)
        line_sink = getattr(self.engine, "line_sink", None)
        lines = line_sink() if TAP_LINES and line_sink is not None else None
        if lines is not None and lines.tap is None:
            self._watch(lines)
        else:
            self.engine.subscribe(self._observer())
        now = self.engine.t
        for slot in self.slots:
            self.sim.schedule(
                slot.data_link.arrival(now), self._deliver, slot, [("on_start", None)]
            )
            self.sim.schedule(end_ns, self._stop, slot, priority=OBSERVER)

    # ---------------------------------------------------------------- market data
    def _snapshot(self, slot: Slot) -> AccountView:
        """``slot``'s account as it is now. Made again only after an event that may have
        changed it (:meth:`_observer`): a delivery where nothing happened to the account costs
        nothing, one where something did costs a walk of the exchange's resting orders."""
        if self._tap is not None:
            self._scan()  # the lines written since the last read may name the account
        view = slot.snapshot
        if view is None:
            cash, positions, orders = self.engine.account_view(slot.account)
            view = _new(AccountView, (cash, positions, tuple(map(_new, repeat(OpenOrder), orders))))
            slot.snapshot = view
        return view

    def _observer(self):
        """The market-data tap: the function the exchange calls with every event (half a
        million in the flagship year), so it is a closure over what it reads, not a method.

        Every change to an account is an event naming it (the replay fold rests on that): the
        event makes that account's snapshot stale (and its counterparty's); an event naming no
        account that may change accounts (an expiry) makes every snapshot stale. The events
        bots are told about are kept for :meth:`_publish`, scheduled (priority ``OBSERVER``)
        at the first of them in each simulated instant."""
        by_account = self._by_account
        slots = self.slots
        pending = self._pending
        rejected_refs = self._rejected_refs
        schedule = self.sim.schedule
        publish = self._publish
        wanted = _WANTED
        no_account_change = _NO_ACCOUNT_CHANGE
        rejections = (ev.COMMAND_REJECTED, ev.ORDER_REJECTED)

        def observe(event: Event) -> None:
            seq, t, kind, _, account, _, _, _, _, _, other, _, _ = event
            if account is not None:
                slot = by_account.get(account)
                if slot is not None:
                    slot.snapshot = None
                if other is not None:
                    slot = by_account.get(other)
                    if slot is not None:
                        slot.snapshot = None
            elif kind not in no_account_change:
                for slot in slots:
                    slot.snapshot = None
            if kind not in wanted:
                return
            if kind in rejections and self._arriving is not None:
                rejected_refs[seq] = self._arriving
            pending.append(event)
            if self._publish_at != t:
                self._publish_at = t
                schedule(t, publish, priority=OBSERVER)

        return observe

    def _watch(self, lines: Any) -> None:
        """Read the events from ``lines`` (the exchange's sink, a LineBatch) instead of
        subscribing :meth:`_observer`: the exchange goes on writing lines (the compiled kernel
        with no Event made) and the runner reads them in ranges, as :meth:`_observer` would
        have seen them one by one:

        * a line of a wanted kind whose instant has no publish pending schedules
          :meth:`_publish` as it is written (``Tap.on_wanted``, in C: one look at the kind per
          instant), at the same point of the clock's order as the listener did;
        * :meth:`_scan` reads the lines since its last read in C -- staleness from the account
          fields, the wanted lines decoded into Events for :meth:`_publish` -- before every
          snapshot read, at every publish, and before the recorder takes lines away
          (``Tap.on_take``), so no line leaves unread and no snapshot is read stale;
        * a rejection gets the ref of the command during whose handling it was emitted, from
          the seqs :meth:`_arrive` notes around each command."""
        tap = _lines.Tap(
            sorted(_WANTED),
            sorted(_NO_ACCOUNT_CHANGE),
            [slot.account for slot in self.slots],
            self._announce,
            self._scan,
            Event,
            decode,
            sorted(_REJECTIONS),
        )
        lines.watch(tap)
        self._lines, self._tap = lines, tap

    def _announce(self, t: int) -> None:
        """A wanted line of instant ``t`` (ns) was written and no publish is pending for it."""
        self.sim.schedule(t, self._publish, priority=OBSERVER)

    def _scan(self) -> None:
        """Read the lines written since the last scan (see :meth:`_watch`)."""
        got = self._tap.scan(self._lines)  # type: ignore[union-attr]
        if got is None:
            return
        events, stale, rejections = got
        if stale is not None:
            slots = self.slots
            if stale is True:
                for slot in slots:
                    slot.snapshot = None
            else:
                for i in stale:
                    slots[i].snapshot = None
        if events:
            self._pending += events
        if rejections is not None:
            for i in rejections:
                seq = events[i].seq
                ref = self._ref_of(seq)
                if ref is not None:
                    self._rejected_refs[seq] = ref
        arrivals = self._arrivals
        if arrivals:  # the commands whose seqs are all read are done with
            done = self._tap.next_seq  # type: ignore[union-attr]
            self._arrivals = [entry for entry in arrivals if entry[1] >= done]

    def _ref_of(self, seq: int) -> int | None:
        """The ref of the bot command whose handling emitted event ``seq``, if any."""
        for first, last, ref in self._arrivals:
            if first <= seq <= last:
                return ref
        if self._arriving is not None and seq >= self._arriving_from:
            return self._arriving  # a scan in the middle of the command's handling
        return None

    def _publish(self) -> None:
        """Turn the events of this instant into messages and send each bot its batch.

        A bot's batch is everything it is told about this instant (its own news first, then
        the market); that batch draws the latency and names a failure (``_callback``). Of it,
        only what the bot hears travels: messages of callbacks it overrides, and book views,
        which ``ctx.book()`` keeps (:attr:`Slot.hears`). A message no bot hears is not built,
        and a batch with nothing heard in it is delivered by :meth:`_quiet`, which runs no
        callback -- as :func:`dispatch` would have run none of them."""
        if self._tap is not None:
            self._scan()
            self._tap.reset()  # the next wanted line schedules the next publish
        pending = self._pending
        events = pending.copy()
        pending.clear()
        self._publish_at = None
        by_account = self._by_account
        rejected_refs = self._rejected_refs
        heard = self._heard  # callbacks some bot hears (None: any)
        public: list[tuple[str | None, Message]] = []  # (instrument for book filters, message)
        # a bot's own news: the messages it hears, and the name its whole part (heard or not)
        # gives a failure (its one callback, or "step")
        private: dict[str, list[Message]] = {}
        told: dict[str, str] = {}
        dirty: dict[str, None] = {}
        # messages are built with tuple.__new__ (what a NamedTuple's own __new__ does, less
        # its Python frame): a few hundred thousand of them a year
        for e in events:
            seq, t, kind, instrument, account, order_id, side, price, qty, amount, _, _, data = e
            if kind in _BOOK_KINDS:
                dirty[instrument] = None
                if kind != FILL:
                    if kind not in _ORDER_STATUS:
                        continue  # rested: the book view says it
                else:
                    if heard is None or "on_trade" in heard:
                        trade = ("on_trade", _new(Trade, (instrument, t, price, qty, side)))
                    else:
                        trade = _UNHEARD_TRADE
                    public.append((None, trade))
                    self._fill(private, told, account, e, side, order_id, amount, "taker")
                    other = "sell" if side == "buy" else "buy"
                    self._fill(
                        private,
                        told,
                        e.counterparty,
                        e,
                        other,
                        e.counter_order_id,
                        -amount,
                        "maker",
                    )
                    continue
            status = _ORDER_STATUS.get(kind)
            if status is not None:
                slot = by_account.get(account)
                if slot is not None:
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
                        own = private.get(account)
                        if own is None:
                            private[account] = [("on_order", update)]
                        else:
                            own.append(("on_order", update))
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
                slot = by_account.get(account)
                if slot is not None:
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
                slot = by_account.get(account)
                if slot is not None:
                    told[account] = "step" if account in told else "on_funding"
                    hears = slot.hears
                    if hears is None or "on_funding" in hears:
                        rate = self._last_rate(events, e)
                        funding = Funding(instrument, t, rate, None, qty, amount)
                        private.setdefault(account, []).append(("on_funding", funding))
            elif kind in _CALL_STATUS:
                slot = by_account.get(account)
                if slot is not None:
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
        now = self.sim.now
        schedule = self.sim.schedule
        deliver, quiet = self._deliver, self._quiet
        # the public part of a batch by audience: the name a failure after it alone is logged
        # under (None: it is empty), the messages that travel (those heard, and book views),
        # whether any is heard
        market: dict[Any, tuple[str | None, list[Message], bool]] = {}
        for slot in self.slots:
            if slot.stopped:
                continue
            audience = slot.audience
            shared = market.get(audience)
            if shared is None:
                books, hears = audience
                count = 0
                name = None
                kept: list[Message] = []
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
                continue  # nothing to tell this bot
            own = private.get(account)
            # news about its own orders first, then the market (each slot its own list)
            if own:
                schedule(slot.data_link.arrival(now), deliver, slot, own + messages, callback)
            elif loud:
                schedule(slot.data_link.arrival(now), deliver, slot, messages.copy(), callback)
            else:
                schedule(slot.data_link.arrival(now), quiet, slot, messages, callback)

    def _fill(self, private, told, account, e, side, order_id, cash, liquidity) -> None:
        slot = self._by_account.get(account)
        if slot is None:
            return
        told[account] = "step" if account in told else "on_fill"
        hears = slot.hears
        if hears is not None and "on_fill" not in hears:
            return
        report = _new(
            FillReport,
            (
                e.instrument,
                e.t,
                order_id,
                slot.refs.get(order_id),
                side,
                e.price,
                e.qty,
                cash or 0,
                liquidity,
            ),
        )
        private.setdefault(account, []).append(("on_fill", report))

    @staticmethod
    def _last_rate(events: list[Event], paid: Event) -> str:
        """The rate announced (in the same instant) before a funding payment."""
        rate = "0"
        for e in events:
            if e.kind == ev.FUNDING_RATE and e.instrument == paid.instrument and e.seq < paid.seq:
                rate = e.data["rate"]
        return rate

    def _book_view(self, instrument: str) -> BookView:
        # the book's levels as (price, qty) tuples built in C: each becomes a BookLevel
        # without a Python frame (no arrays, no tolist, no zip)
        bids, asks = self.engine.instruments[instrument].book.top(self.depth)
        bids = tuple(map(_new, repeat(BookLevel), bids))
        asks = tuple(map(_new, repeat(BookLevel), asks))
        return _new(BookView, (instrument, self.engine.t, bids, asks))

    # ---------------------------------------------------------------- delivery
    def _deliver(self, slot: Slot, batch: list[Message], callback: str | None = None) -> None:
        """Deliver ``batch`` to ``slot``'s bot now; ``callback``: the name a failure is logged
        under (default ``_callback(batch)``; a publish passes that of the whole batch, before
        what the bot does not hear was left out)."""
        callback = self._step(slot, batch, callback)
        if callback is None:
            return
        now = self.sim.now
        try:
            outbox, timers = slot.driver.deliver(now, batch, slot.view)
            if type(outbox) is not list or type(timers) is not list or outbox or timers:
                outbox, timers = self._admit(slot, outbox, timers, callback)
        except BotFailure as failure:
            self._fail(slot, failure)
            return
        if outbox:
            self.sim.schedule(slot.command_link.arrival(now), self._arrive, slot, outbox)
        slot.timers += len(timers)
        for at, tag in timers:
            self.sim.schedule(max(at, now + 1), self._timer, slot, tag)

    def _quiet(self, slot: Slot, batch: list[Message], callback: str) -> None:
        """A delivery of which the bot hears nothing (``batch``: the book views it carries):
        counted as a step, the views kept for ``ctx.book()``, no callback run -- what
        :func:`dispatch` does with it, less the calls."""
        if self._step(slot, batch, callback) is None:
            return
        ctx = slot.driver.ctx
        books = ctx._books
        for _, view in batch:
            books[view.instrument] = view
        outbox, timers = ctx._outbox, ctx._timers
        if outbox or timers or type(outbox) is not list or type(timers) is not list:
            # sent from outside any callback (by code holding this context): a delivery
            # drains it, so this one does, as _deliver (which counts the step again)
            slot.steps -= 1
            self._deliver(slot, batch, callback)

    def _step(self, slot: Slot, batch: list[Message], callback: str | None) -> str | None:
        """Count a delivery of ``batch`` as one step of ``slot``'s bot (the step limit counts
        each simulated second afresh): the name a failure is logged under (``callback``, or
        ``_callback(batch)``), or None when the bot is stopped or this step passes its limit
        (it has then failed)."""
        if slot.stopped:
            return None
        now = self.sim.now
        if now >= slot.window_end:
            slot.window_end = (now // STEP_WINDOW_NS + 1) * STEP_WINDOW_NS
            slot.steps = 0
        slot.steps += 1
        if callback is None:
            callback = _callback(batch)
        if slot.steps > slot.step_cap:
            self._fail(slot, BotFailure("limit", callback, self._steps_detail(slot)))
            return None
        return callback

    @staticmethod
    def _steps_detail(slot: Slot) -> str:
        return (
            f"steps: more than {slot.max_steps:,} deliveries in the simulated second "
            f"from {slot.window_end - STEP_WINDOW_NS} ns (limit max_steps={slot.max_steps:,})"
        )

    def _admit(self, slot: Slot, outbox: Any, timers: Any, callback: str):
        """What a delivery's callbacks sent, checked and copied: ``(commands, timers)``.

        Every command is copied (its JSON form) and stamped with the slot's account; one of a
        type a bot may not send, naming another account, or longer than
        :data:`MAX_COMMAND_BYTES` is refused -- recorded as a ``CommandRejected`` with
        ``source: "runner"``, attributed to the bot's account -- and the others go on. Raises
        :class:`BotFailure` (``raised``) for an outbox or timer list the
        :class:`~clients.context.Context` cannot have made (changed behind its back), and
        (``limit``) for more commands than the slot's ``max_commands`` or more timers pending
        than its ``max_timers``; nothing is recorded then.
        """
        if type(outbox) is not list or type(timers) is not list:
            raise BotFailure(
                "raised", callback, "the outbox or the timers were replaced outside the Context"
            )
        for entry in outbox:
            if type(entry) is not tuple or len(entry) != 2:
                raise BotFailure(
                    "raised", callback, f"outbox: a {_kind(entry)}, not a (ref, command) pair"
                )
            if entry[0] is not None and type(entry[0]) is not int:
                raise BotFailure("raised", callback, f"outbox: a ref of {_kind(entry[0])}")
        checked_timers = []
        for entry in timers:
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
        commands = []
        for ref, command in outbox:
            raw = _copy(command)  # what the bot still holds may change after this
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
                self.engine.reject(raw, reason, "runner", account)
        return commands, checked_timers

    def _timer(self, slot: Slot, tag: Any) -> None:
        slot.timers -= 1
        self._deliver(slot, [("on_timer", tag)])

    def _arrive(self, slot: Slot, outbox: list[tuple[int | None, dict[str, Any]]]) -> None:
        if slot.stopped:
            return  # a stopped bot's commands in flight are dropped at the gateway
        engine = self.engine
        handle = engine.handle
        watched = self._tap is not None
        for ref, command in outbox:
            self._arriving = ref
            if watched:
                first = self._arriving_from = engine.seq + 1
            try:
                result = handle(command)
            finally:
                self._arriving = None
                if watched and ref is not None and engine.seq >= first:
                    # the seqs this command emitted: a rejection among them is the ref's
                    self._arrivals.append((first, engine.seq, ref))
            if ref is not None and result.order_id is not None:
                slot.refs[result.order_id] = ref

    def _stop(self, slot: Slot) -> None:
        if slot.stopped:
            return
        try:
            slot.driver.deliver(self.sim.now, [("on_stop", None)], slot.view)
        except BotFailure as failure:
            self._fail(slot, failure)
            return
        slot.stopped = True
        slot.driver.close()

    def _fail(self, slot: Slot, failure: BotFailure) -> None:
        slot.stopped = True
        slot.driver.close()
        self.engine.handle(
            {
                "type": "bot_failed",
                "account": slot.account,
                "bot": slot.name,
                "cause": failure.cause,
                "callback": failure.callback,
                "detail": failure.detail,
            }
        )


#: Which runner :func:`make_runner` gives a session on the compiled engine: ``"compiled"``
#: (:class:`clients._runner.CompiledRunner`, the default) or ``"python"`` (:class:`BotRunner`,
#: the reference). The same deliveries and logs either way (tests/clients/test_runner_twins.py).
RUNNER = "compiled"


#: Which :class:`~clients.context.Context` the compiled runner gives its in-process bots:
#: ``"compiled"`` (:class:`clients._context.Context`, the default) or ``"python"`` (the
#: reference). The compiled one charges a budget only through the compiled counter, so it is
#: given only while :data:`clients.budget.COUNTER` is ``"compiled"``; the reference runner, the
#: remote side and the Python counter use the reference. The same logs either way
#: (tests/clients/test_context_twins.py).
CONTEXT = "compiled"


def _new_context(runner: BotRunner, name: str, account: str, rng: np.random.Generator) -> Any:
    """The context of a bot :meth:`BotRunner.add` attaches to ``runner``: the compiled twin
    under the compiled runner (see :data:`CONTEXT`), the reference otherwise."""
    compiled = sys.modules.get("clients._runner")  # loaded if runner can be its CompiledRunner
    if (
        CONTEXT == "compiled"
        and _budget.COUNTER == "compiled"
        and compiled is not None
        and isinstance(runner, compiled.CompiledRunner)
    ):
        from clients._context import Context as CompiledContext

        return CompiledContext(name, account, rng)
    return Context(name, account, rng)


def make_runner(
    engine: Exchange, sim: Simulator, seed: int, depth: int = DEFAULT_DEPTH
) -> BotRunner:
    """The runner of a session (arguments as :class:`BotRunner`'s): its compiled twin
    (:class:`clients._runner.CompiledRunner`) when ``engine`` is the compiled engine
    (``exchange.kernel.compiled.CompiledExchange``) and :data:`RUNNER` is ``"compiled"``, the
    plain-Python :class:`BotRunner` otherwise (the reference engine runs plain Python only)."""
    # not loaded: the engine is not the compiled one (and the reference loads no compiled code)
    compiled = sys.modules.get("exchange.kernel.compiled")
    if (
        RUNNER == "compiled"
        and compiled is not None
        and isinstance(engine, compiled.CompiledExchange)
    ):
        from clients._runner import CompiledRunner

        return CompiledRunner(engine, sim, seed, depth)
    return BotRunner(engine, sim, seed, depth)


__all__ = [
    "DEFAULT_MAX_STEPS",
    "DEFAULT_MAX_TIMERS",
    "BotFailure",
    "BotRunner",
    "LocalDriver",
    "PARTICIPANT",
    "dispatch",
    "describe",
    "make_runner",
    "watch_interrupts",
]
