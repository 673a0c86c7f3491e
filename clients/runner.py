"""The bot runner: wires bots to a session's exchange and clock, deterministically.

How a session with bots runs (all in simulated time, on the session's one thread):

1. The runner taps the exchange's event stream (``Exchange.subscribe``). Events of one
   simulated instant are collected; after everything else at that instant (clock priority
   ``OBSERVER``) the runner turns them into bot messages: public ones (book views of the
   instruments that changed, trades, index prints, funding rates) for every bot, private ones
   (order updates, own fills, own funding, margin calls) for the account's bot only.
2. Each bot's messages of that instant travel as one batch over its data link
   (:mod:`clients.latency`) and are delivered at the arrival time: the bot's callbacks run one
   by one, each within its budget (:mod:`clients.budget`).
3. Whatever the callbacks sent travels as one batch over the command link and reaches the
   exchange (``Exchange.handle``) at its arrival time; it is logged there like any command.
4. A bot that raises (or overruns its budget, or — remote — misses a lockstep deadline) is
   stopped: the runner sends the exchange a ``bot_failed`` command, which logs ``BotFailed``
   with the traceback and cancels the account's orders. Commands the bot had in flight are
   dropped; the session goes on.

The exchange never imports this module: a scenario's ``drive`` step creates the runner. The
runner's own work emits no events, so verification (which re-feeds the logged commands) does
not need the bots.
"""

from __future__ import annotations

import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clients import budget as _budget
from clients.bot import (
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
from exchange import events as ev
from exchange.clock import OBSERVER, PARTICIPANT, Simulator
from exchange.engine import Exchange
from exchange.events import Event

_budget_file = _budget.__file__

#: Levels per side in a book view.
DEFAULT_DEPTH = 5

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
    ev.CALL_REDUCED: "reduced",
    ev.CALL_CURED: "cured",
    ev.DEFAULT: "defaulted",
}
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


class BotFailure(Exception):
    """A bot must be stopped: ``cause`` (raised|budget|timeout|disconnected), the callback it
    was in and a deterministic description (traceback without machine-specific paths)."""

    def __init__(self, cause: str, callback: str, detail: str) -> None:
        super().__init__(f"{cause} in {callback}: {detail}")
        self.cause, self.callback, self.detail = cause, callback, detail


def describe(exc: BaseException) -> str:
    """A traceback that is the same on every machine: file names without their directories."""
    own = {__file__, _budget_file}
    # the runner's own frames (dispatch, run_within) are left out, so that a change to this
    # machinery does not change the logged traceback of a bot that fails
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename not in own]
    lines = [
        f"  {frame.filename.replace(chr(92), '/').rsplit('/', 1)[-1]}:{frame.lineno} "
        f"in {frame.name}"
        for frame in frames
    ]
    text = "\n".join(["Traceback (most recent call last):", *lines, f"{type(exc).__name__}: {exc}"])
    return text[-8_000:]


def bot_rng(seed: int, name: str, stream: int = 0) -> np.random.Generator:
    """The seeded generator of bot ``name`` (``stream`` 0: the bot's own; 1, 2: latency)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), stream])


def dispatch(bot: Bot, ctx: Context, messages: list[Message], budget_lines: int | None):
    """Run ``messages`` through ``bot``'s callbacks (each within the budget); returns the
    commands and timers they produced. Raises :class:`BotFailure` if a callback fails. Used
    in-process and by the remote client alike, so a bot behaves the same in both places."""
    for name, payload in messages:
        if name == "on_book":
            ctx._books[payload.instrument] = payload
        method = getattr(bot, name)
        try:
            if payload is None:
                run_within(budget_lines, method, ctx)
            else:
                run_within(budget_lines, method, ctx, payload)
        except BudgetExceeded as exc:
            raise BotFailure("budget", name, describe(exc)) from None
        except Exception as exc:  # noqa: BLE001 - any error in a bot stops the bot, not us
            raise BotFailure("raised", name, describe(exc)) from None
    return ctx._drain()


class LocalDriver:
    """Delivers messages to a bot object in this process."""

    def __init__(self, bot: Bot, ctx: Context, budget_lines: int | None) -> None:
        self.bot, self.ctx, self.budget_lines = bot, ctx, budget_lines

    def deliver(self, now: int, messages: list[Message], account: Callable[[], AccountView]):
        self.ctx._begin(now)
        self.ctx._account_source = account
        return dispatch(self.bot, self.ctx, messages, self.budget_lines)

    def close(self) -> None:
        self.ctx.stopped = True


@dataclass
class Slot:
    """One bot in the session."""

    name: str
    account: str
    driver: Any  # LocalDriver or a remote driver with the same ``deliver``/``close``
    data_link: Link
    command_link: Link
    books: frozenset[str] | None
    view: Callable[[], AccountView]  # the account snapshot, read when the bot asks
    refs: dict[int, int] = field(default_factory=dict)  # order id -> the bot's ref
    stopped: bool = False


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

    # ---------------------------------------------------------------- set-up
    def add(
        self,
        name: str,
        account: str,
        bot: Bot,
        *,
        latency: Latency | None = None,
        budget_lines: int | None = DEFAULT_LINES,
    ) -> Context:
        """Attach ``bot`` to ``account`` (which must exist; one bot per account)."""
        ctx = Context(name, account, bot_rng(self.seed, name), self._account_source(account))
        self.attach(name, account, LocalDriver(bot, ctx, budget_lines), latency, bot.books)
        return ctx

    def attach(
        self,
        name: str,
        account: str,
        driver: Any,
        latency: Latency | None = None,
        books: tuple[str, ...] | None = None,
    ) -> None:
        """Attach any driver (in-process or remote) for ``account``."""
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
            self._account_source(account),
        )
        self.slots.append(slot)
        self._by_account[account] = slot

    def start(self, end_ns: int) -> None:
        """Tap the exchange, start every bot now and stop them at ``end_ns``."""
        self._started = True
        self.engine.subscribe(self._observe)
        now = self.engine.t
        for slot in self.slots:
            self.sim.schedule(
                slot.data_link.arrival(now), self._deliver, slot, [("on_start", None)]
            )
            self.sim.schedule(end_ns, self._stop, slot, priority=OBSERVER)

    # ---------------------------------------------------------------- market data
    def _account_source(self, account: str) -> Callable[[], AccountView]:
        engine = self.engine

        def view() -> AccountView:
            cash, positions, orders = engine.account_view(account)
            return AccountView(cash, positions, tuple(OpenOrder(*o) for o in orders))

        return view

    def _observe(self, event: Event) -> None:
        if event.kind not in _WANTED:
            return
        if self._arriving is not None and event.kind in (ev.COMMAND_REJECTED, ev.ORDER_REJECTED):
            self._rejected_refs[event.seq] = self._arriving
        self._pending.append(event)
        if self._publish_at != event.t:
            self._publish_at = event.t
            self.sim.schedule(event.t, self._publish, priority=OBSERVER)

    def _publish(self) -> None:
        events, self._pending = self._pending, []
        self._publish_at = None
        public: list[tuple[str | None, Message]] = []  # (instrument for book filters, message)
        private: dict[str, list[Message]] = {}
        dirty: dict[str, None] = {}
        for e in events:
            kind = e.kind
            if kind in _BOOK_KINDS:
                dirty[e.instrument] = None
            if kind == ev.FILL:
                public.append(
                    (None, ("on_trade", Trade(e.instrument, e.t, e.price, e.qty, e.side)))
                )
                self._fill(private, e.account, e, e.side, e.order_id, e.amount, "taker")
                other = "sell" if e.side == "buy" else "buy"
                self._fill(
                    private, e.counterparty, e, other, e.counter_order_id, -e.amount, "maker"
                )
            elif kind in _ORDER_STATUS:
                slot = self._by_account.get(e.account)
                if slot is not None:
                    update = OrderUpdate(
                        _ORDER_STATUS[kind],
                        e.t,
                        e.instrument,
                        e.order_id,
                        self._rejected_refs.pop(e.seq, None) or slot.refs.get(e.order_id),
                        e.side,
                        e.price,
                        e.qty,
                        (e.data or {}).get("reason"),
                    )
                    private.setdefault(e.account, []).append(("on_order", update))
            elif kind == ev.COMMAND_REJECTED:
                if e.account in self._by_account:
                    command = e.data["command"]
                    update = OrderUpdate(
                        "rejected",
                        e.t,
                        command.get("instrument") if isinstance(command, dict) else None,
                        command.get("order_id") if isinstance(command, dict) else None,
                        self._rejected_refs.pop(e.seq, None),
                        command.get("side") if isinstance(command, dict) else None,
                        None,
                        None,
                        e.data["reason"],
                    )
                    private.setdefault(e.account, []).append(("on_order", update))
            elif kind == ev.INDEX_PUBLISHED:
                public.append((None, ("on_index", IndexPrint(e.instrument, e.t, e.price))))
            elif kind == ev.MARK_PRICE:
                mark = Mark(e.instrument, e.t, e.price, (e.data or {}).get("source"))
                public.append((e.instrument, ("on_mark", mark)))
            elif kind == ev.FUNDING_RATE:
                funding = Funding(e.instrument, e.t, e.data["rate"], e.price, None, None)
                public.append((None, ("on_funding", funding)))
            elif kind == ev.FUNDING_PAID:
                if e.account in self._by_account:
                    rate = self._last_rate(events, e)
                    funding = Funding(e.instrument, e.t, rate, None, e.qty, e.amount)
                    private.setdefault(e.account, []).append(("on_funding", funding))
            elif kind in _CALL_STATUS and e.account in self._by_account:
                deadline = (e.data or {}).get("deadline")
                call = MarginCall(_CALL_STATUS[kind], e.t, e.amount or 0, deadline)
                private.setdefault(e.account, []).append(("on_margin_call", call))
        for instrument in dirty:
            public.append((instrument, ("on_book", self._book_view(instrument))))
        now = self.sim.now
        market: dict[frozenset[str] | None, list[Message]] = {}  # public part, by book filter
        for slot in self.slots:
            if slot.stopped:
                continue
            books = slot.books
            shared = market.get(books)
            if shared is None:
                shared = market[books] = [
                    message
                    for instrument, message in public
                    if instrument is None or books is None or instrument in books
                ]
            own = private.get(slot.account)
            # news about its own orders first, then the market (each slot its own list)
            batch = own + shared if own else shared.copy()
            if batch:
                self.sim.schedule(slot.data_link.arrival(now), self._deliver, slot, batch)

    def _fill(self, private, account, e, side, order_id, cash, liquidity) -> None:
        slot = self._by_account.get(account)
        if slot is None:
            return
        report = FillReport(
            e.instrument,
            e.t,
            order_id,
            slot.refs.get(order_id),
            side,
            e.price,
            e.qty,
            cash or 0,
            liquidity,
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
        book = self.engine.instruments[instrument].book
        sides = []
        for side in (0, 1):
            prices, qtys = book.depth(side, self.depth)
            sides.append(
                tuple(BookLevel(p, q) for p, q in zip(prices.tolist(), qtys.tolist(), strict=True))
            )
        return BookView(instrument, self.engine.t, sides[0], sides[1])

    # ---------------------------------------------------------------- delivery
    def _deliver(self, slot: Slot, batch: list[Message]) -> None:
        if slot.stopped:
            return
        try:
            outbox, timers = slot.driver.deliver(self.sim.now, batch, slot.view)
        except BotFailure as failure:
            self._fail(slot, failure)
            return
        self._dispatch(slot, outbox, timers)

    def _dispatch(self, slot: Slot, outbox, timers) -> None:
        now = self.sim.now
        if outbox:
            self.sim.schedule(slot.command_link.arrival(now), self._arrive, slot, outbox)
        for at, tag in timers:
            self.sim.schedule(max(at, now + 1), self._timer, slot, tag)

    def _timer(self, slot: Slot, tag: Any) -> None:
        self._deliver(slot, [("on_timer", tag)])

    def _arrive(self, slot: Slot, outbox: list[tuple[int | None, dict[str, Any]]]) -> None:
        if slot.stopped:
            return  # a stopped bot's commands in flight are dropped at the gateway
        handle = self.engine.handle
        for ref, command in outbox:
            self._arriving = ref
            try:
                result = handle(command)
            finally:
                self._arriving = None
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


__all__ = ["BotFailure", "BotRunner", "LocalDriver", "PARTICIPANT", "dispatch", "describe"]
