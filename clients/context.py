"""The context a bot acts through: commands out, its own account and the public book in.

The same :class:`Context` serves a bot in-process and a bot on the far side of the socket
gateway, so a strategy behaves identically in both places: commands are collected in an outbox
the runner sends after the bot's latency; account queries answer from a snapshot of the bot's
own account that the runner hands over with each delivery; ``book`` answers from the last book
views delivered to the bot (what it has seen, not what the exchange holds now).

A context holds plain values only -- its names, its generator, the snapshot, the book views, the
outbox -- and no reference to the exchange, the clock or the runner: nothing reachable from it
(attributes, closures, bound methods) leads to them. What a bot puts in the outbox is checked and
copied by the runner, which stamps the bot's own account on every command (``clients.runner``).

This :class:`Context` is the reference. In-process bots of the compiled runner act through its
compiled twin, :class:`clients._context.Context` (chosen by ``clients.runner.CONTEXT``): the same
API, commands, results, errors and budget charges, its hot methods in C
(``tests/clients/test_context_twins.py`` holds the two equal).

Units: prices in ticks, quantities in lots, cash in minor units, times in simulated ns.
"""

from __future__ import annotations

import abc
import logging
from typing import Any, NamedTuple

import numpy as np

from clients.bot import BookView

log = logging.getLogger("gpuex.bots")


class OpenOrder(NamedTuple):
    """One of the bot's resting orders: ``qty`` lots still open at ``price`` ticks."""

    order_id: int
    instrument: str
    side: str
    price: int
    qty: int


class AccountView(NamedTuple):
    """The bot's own account at delivery time: cash (minor units), positions (lots by
    instrument, non-zero only, sorted by name) and resting orders (by order id)."""

    cash: int
    positions: dict[str, int]
    orders: tuple[OpenOrder, ...]


class BotStopped(RuntimeError):
    """Raised by a context whose bot has been stopped (it may no longer act)."""


class Context(metaclass=abc.ABCMeta):  # noqa: B024 - ABCMeta for register(), not abstract
    """What a bot may do and see. Created by the runner; one per bot.

    The compiled runner's contexts (``clients._context.Context``, its twin) are registered as
    virtual subclasses: ``isinstance(ctx, Context)`` holds for every bot's context, whichever
    engine runs it.

    Attributes:
        account: the bot's account name.
        name: the bot's name in the scenario.
        rng: the bot's own seeded ``numpy.random.Generator`` (seeded from the session seed
            and the bot's name, so adding a bot never changes another bot's draws).
        now: the simulated time of the current callback, ns.
    """

    def __init__(self, name: str, account: str, rng: np.random.Generator) -> None:
        self.name = name
        self.account = account
        self.rng = rng
        self.now = 0
        self._account: AccountView | None = None
        self._books: dict[str, BookView] = {}
        self._outbox: list[tuple[int | None, dict[str, Any]]] = []
        self._timers: list[tuple[int, Any]] = []
        self._next_ref = 1
        self.stopped = False

    # ---------------------------------------------------------------- commands
    def _send(self, command: dict[str, Any], ref: int | None = None) -> None:
        if self.stopped:
            raise BotStopped(f"bot {self.name!r} has been stopped")
        command["account"] = self.account
        self._outbox.append((ref, command))

    def submit(
        self,
        instrument: str,
        side: str,
        price: int,
        qty: int,
        *,
        order_type: str = "limit",
        tif: str = "gtc",
        post_only: bool = False,
    ) -> int:
        """Send an order: ``qty`` lots at a limit of ``price`` ticks (for a market order,
        ``price`` is an optional protection price; pass 0 for none). Returns the order's
        reference, which the ``on_order``/``on_fill`` reports for this order carry as ``ref``.
        Validation happens at the exchange: a bad order comes back as a rejection."""
        ref = self._next_ref
        self._next_ref += 1
        command: dict[str, Any] = {
            "type": "submit",
            "instrument": instrument,
            "side": side,
            "qty": qty,
            "order_type": order_type,
        }
        if order_type == "market":
            if price:
                command["price"] = price
        else:
            command.update(price=price, tif=tif, post_only=post_only)
        self._send(command, ref)
        return ref

    def cancel(self, order_id: int) -> None:
        """Cancel one of the bot's resting orders (by the exchange's order id)."""
        self._send({"type": "cancel", "order_id": order_id})

    def amend(self, order_id: int, price: int, qty: int) -> None:
        """Change a resting order to ``price`` ticks and ``qty`` open lots (a price change or
        a size increase loses time priority)."""
        self._send({"type": "amend", "order_id": order_id, "price": price, "qty": qty})

    def cancel_all(self, instrument: str | None = None) -> None:
        """Cancel every resting order of the bot (in ``instrument`` only, if given)."""
        command: dict[str, Any] = {"type": "cancel_all"}
        if instrument is not None:
            command["instrument"] = instrument
        self._send(command)

    def deposit(self, amount: int) -> None:
        """Bring ``amount`` minor units of outside cash into the account."""
        self._send({"type": "deposit", "amount": amount})

    def withdraw(self, amount: int) -> None:
        """Take ``amount`` minor units of cash out of the account."""
        self._send({"type": "withdraw", "amount": amount})

    def schedule(self, at: int, tag: Any = None) -> None:
        """Call ``on_timer(ctx, tag)`` at simulated time ``at`` ns (timers fire on the bot's
        own clock: no latency). A time in the past fires at the next nanosecond."""
        if self.stopped:
            raise BotStopped(f"bot {self.name!r} has been stopped")
        self._timers.append((int(at), tag))

    def log(self, message: str) -> None:
        """Write a line to the ``gpuex.bots`` logger (not to the event log)."""
        log.info("[%s %d ns] %s", self.name, self.now, message)

    # ---------------------------------------------------------------- queries
    def _view(self) -> AccountView:
        if self._account is None:
            raise RuntimeError("account queries answer only inside a callback")
        return self._account

    def balance(self) -> int:
        """The account's cash, minor units."""
        return self._view().cash

    def positions(self) -> dict[str, int]:
        """Open positions, lots by instrument (long positive)."""
        return dict(self._view().positions)

    def open_orders(self, instrument: str | None = None) -> list[OpenOrder]:
        """The bot's resting orders (in ``instrument`` only, if given), oldest first."""
        return [o for o in self._view().orders if instrument in (None, o.instrument)]

    def book(self, instrument: str) -> BookView | None:
        """The last view of ``instrument``'s book delivered to this bot (``None`` before any)."""
        return self._books.get(instrument)

    # ---------------------------------------------------------------- runner side
    def _begin(self, now: int, account: AccountView) -> None:
        """Start a delivery at ``now`` ns; ``account`` is the bot's account at that time."""
        self.now = now
        self._account = account

    def _drain(self) -> tuple[list[tuple[int | None, dict[str, Any]]], list[tuple[int, Any]]]:
        outbox, timers = self._outbox, self._timers
        self._outbox, self._timers = [], []
        return outbox, timers
