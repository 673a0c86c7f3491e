"""The exchange engine: the one place where commands become events.

Like LMAX's business logic processor, the engine is single-threaded and deterministic: it owns
the accounts, the instrument registry and one ``matching_core.OrderBook`` per instrument, takes
commands in sequence at the simulated time it is given, and reports every outcome as an
:class:`~exchange.events.Event` passed to its sink, with a contiguous sequence number. It never
reads the wall clock, draws no random numbers and iterates only over ordered containers.

Money moves only through events: a fill moves cash (``price x qty x tick_value`` minor units)
and position (lots) between the two sides; fees move cash from the account to the exchange's
fee pool; deposits and withdrawals move cash across the boundary. So the sum of all cash, the
fee pool and the withdrawals, less the deposits, is always zero.

A command that fails validation or authorisation produces exactly one event,
``CommandRejected``, carrying the raw command and the reason, and changes nothing else. A valid
command produces ``CommandReceived`` and then its outcomes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from exchange import events as ev
from exchange.commands import (
    Amend,
    Cancel,
    CommandError,
    Deposit,
    Submit,
    Withdraw,
    jsonable,
    parse_command,
)
from exchange.events import Event
from exchange.instruments import InstrumentSpec, fee
from exchange.state import canonical_state, state_hash
from matching_core import OrderBook, Reject, StpMode, TimeInForce

_SIDE_CODE = {"buy": 0, "sell": 1}
_SIDE_NAME = ("buy", "sell")
_TIF_CODE = {"gtc": TimeInForce.GTC, "ioc": TimeInForce.IOC, "fok": TimeInForce.FOK}
_STP_MODES = {
    "none": StpMode.NONE,
    "cancel-resting": StpMode.CANCEL_RESTING,
    "cancel-incoming": StpMode.CANCEL_INCOMING,
    "cancel-both": StpMode.CANCEL_BOTH,
}


class Result(NamedTuple):
    """What a command did: ``ok``; the order id a submit was given; a rejection reason."""

    ok: bool
    order_id: int | None = None
    reason: str | None = None


@dataclass
class Account:
    """An account: cash in minor units and positions in lots per instrument."""

    name: str
    index: int  # the int64 account id the order books see
    cash: int = 0
    positions: dict[str, int] = field(default_factory=dict)


@dataclass
class Listing:
    """A listed instrument: its spec, its book and its last trade price (ticks)."""

    spec: InstrumentSpec
    book: OrderBook
    last_price: int | None = None


@dataclass
class LiveOrder:
    """The engine's record of a resting order (the book keeps its quantity and priority)."""

    account: str
    instrument: str
    side: int
    price: int


class Exchange:
    """The deterministic exchange.

    Args:
        sink: called with every event, in sequence order (a recorder's ``append``).
    """

    def __init__(self, sink: Callable[[Event], Any]) -> None:
        self._sink = sink
        self.t = 0
        self.seq = 0
        self.instruments: dict[str, Listing] = {}
        self.accounts: dict[str, Account] = {}
        self._by_index: list[str] = []
        self.orders: dict[int, LiveOrder] = {}
        self.next_order_id = 1
        self.fee_pool = 0
        self.deposited = 0
        self.withdrawn = 0
        self._stp_modes: dict[str, int] = {}

    # ------------------------------------------------------------------ events and time
    def _emit(self, kind: str, **fields: Any) -> Event:
        self.seq += 1
        event = Event(self.seq, self.t, kind, **fields)
        self._sink(event)
        return event

    def advance(self, t: int) -> None:
        """Move the simulated clock to ``t`` ns (never backwards)."""
        if t < self.t:
            raise ValueError(f"time runs forward: {t} ns is before {self.t} ns")
        self.t = t

    # ------------------------------------------------------------------ session set-up
    def start(self, scenario: str, seed: int, config: dict[str, Any]) -> None:
        """Open the session: the first event of every log."""
        self._emit(ev.SESSION_STARTED, data={"scenario": scenario, "seed": seed, "config": config})

    def end(self) -> str:
        """Close the session with its state hash; returns the hash."""
        digest = self.state_hash()
        self._emit(ev.SESSION_ENDED, data={"state_hash": digest})
        return digest

    def list_instrument(self, spec: InstrumentSpec) -> None:
        """List an instrument with its own order book."""
        if spec.name in self.instruments:
            raise ValueError(f"instrument {spec.name!r} is already listed")
        book = OrderBook(max_price=spec.max_price)
        for account in self.accounts.values():
            book.set_stp(account.index, self._stp_modes[account.name])
        self.instruments[spec.name] = Listing(spec, book)
        self._emit(ev.INSTRUMENT_LISTED, instrument=spec.name, data=spec.model_dump())

    def open_account(self, name: str, stp: str = "none") -> None:
        """Open an account (cash starts at 0; fund it with a deposit)."""
        if name in self.accounts:
            raise ValueError(f"account {name!r} already exists")
        if stp not in _STP_MODES:
            raise ValueError(f"stp must be one of {sorted(_STP_MODES)}, got {stp!r}")
        account = Account(name, len(self._by_index))
        self.accounts[name] = account
        self._by_index.append(name)
        self._stp_modes[name] = _STP_MODES[stp]
        for listing in self.instruments.values():
            listing.book.set_stp(account.index, _STP_MODES[stp])
        self._emit(ev.ACCOUNT_OPENED, account=name, data={"stp": stp})

    # ------------------------------------------------------------------ commands
    def handle(self, raw: Any) -> Result:
        """Validate and execute one command from outside (a mapping, see ``commands``).

        The command is first reduced to its JSON form — exactly what the log records — so that
        re-executing a logged command is indistinguishable from the original.
        """
        raw = jsonable(raw)
        try:
            command = parse_command(raw)
            return self._execute(command)
        except CommandError as exc:
            return self._reject(raw, exc.reason)

    def _reject(self, raw: Any, reason: str) -> Result:
        account = raw.get("account") if isinstance(raw, dict) else None
        self._emit(
            ev.COMMAND_REJECTED,
            account=account if isinstance(account, str) and account in self.accounts else None,
            data={"command": raw, "reason": reason},
        )
        return Result(False, reason=reason)

    def _execute(self, command) -> Result:
        account = self.accounts.get(command.account)
        if account is None:
            raise CommandError(f"account: unknown account {command.account!r}")
        if isinstance(command, Submit):
            return self._submit(account, command)
        if isinstance(command, Cancel):
            return self._cancel(account, command)
        if isinstance(command, Amend):
            return self._amend(account, command)
        if isinstance(command, Deposit):
            return self._deposit(account, command)
        if isinstance(command, Withdraw):
            return self._withdraw(account, command)
        raise CommandError(f"type: unsupported command {command.type!r}")  # pragma: no cover

    def _received(self, command) -> None:
        self._emit(
            ev.COMMAND_RECEIVED, account=command.account, data={"command": command.model_dump()}
        )

    def _listing(self, name: str) -> Listing:
        listing = self.instruments.get(name)
        if listing is None:
            raise CommandError(f"instrument: unknown instrument {name!r}")
        return listing

    @staticmethod
    def _check_price(spec: InstrumentSpec, price: int, what: str = "price") -> None:
        if not spec.min_price <= price <= spec.max_price:
            raise CommandError(
                f"{what}: {price} ticks is outside {spec.name}'s range "
                f"{spec.min_price}..{spec.max_price}"
            )

    def _own_order(self, account: Account, order_id: int) -> LiveOrder:
        order = self.orders.get(order_id)
        if order is None or order.account != account.name:
            raise CommandError(f"order_id: no resting order {order_id} of account {account.name!r}")
        return order

    def _submit(self, account: Account, cmd: Submit) -> Result:
        listing = self._listing(cmd.instrument)
        spec = listing.spec
        limit = cmd.order_type == "limit"
        if limit or cmd.price:
            self._check_price(spec, cmd.price, "price" if limit else "price (protection)")
        if not limit and (cmd.post_only or cmd.tif != "gtc"):
            raise CommandError("order_type: market orders take neither tif nor post_only")
        if cmd.post_only and cmd.tif != "gtc":
            raise CommandError("post_only: only a gtc limit order can be post-only")
        self._received(cmd)
        order_id = self.next_order_id
        self.next_order_id += 1
        book = listing.book
        side = _SIDE_CODE[cmd.side]
        if limit:
            code = book.submit(
                order_id, account.index, side, cmd.price, cmd.qty, _TIF_CODE[cmd.tif], cmd.post_only
            )
        else:
            code = book.submit_market(order_id, account.index, side, cmd.qty, cmd.price)
        if code:
            reason = Reject(code).name.lower()
            self._emit(
                ev.ORDER_REJECTED,
                instrument=spec.name,
                account=account.name,
                order_id=order_id,
                data={"reason": reason},
            )
            return Result(False, order_id, reason)
        self._emit(
            ev.ORDER_ACCEPTED,
            instrument=spec.name,
            account=account.name,
            order_id=order_id,
            side=cmd.side,
            price=cmd.price,
            qty=cmd.qty,
            data={"order_type": cmd.order_type, "tif": cmd.tif, "post_only": cmd.post_only},
        )
        remainder_reason = "stp" if limit and cmd.tif == "gtc" else (cmd.tif if limit else "market")
        self._after_match(listing, account, order_id, side, cmd.price, remainder_reason)
        return Result(True, order_id)

    def _after_match(
        self,
        listing: Listing,
        taker: Account,
        order_id: int,
        side: int,
        price: int,
        remainder_reason: str,
    ) -> None:
        """Turn the book's last outcome into fills, fees, STP cancels, rest or cancel."""
        book = listing.book
        spec = listing.spec
        name = spec.name
        if book.fill_count:
            tick_value = spec.tick_value
            names = self._by_index
            orders = self.orders
            taker_side = _SIDE_NAME[side]
            sign = -1 if side == 0 else 1  # the taker pays when buying
            for _t, maker_id, _ta, maker_idx, px, qty, _m in book.fills.tolist():
                maker = self.accounts[names[maker_idx]]
                notional = px * qty * tick_value
                self._trade(
                    name, taker, order_id, taker_side, maker, maker_id, px, qty, sign * notional
                )
                self._fee(taker, name, order_id, fee(notional, spec.taker_fee_bps), "taker")
                self._fee(maker, name, maker_id, fee(notional, spec.maker_fee_bps), "maker")
                if book.order_qty(maker_id) == 0:
                    orders.pop(maker_id, None)
                listing.last_price = px
        for maker_id, _idx, qty, _m in book.stp_cancels.tolist():
            owner = self.orders.pop(maker_id)
            self._emit(
                ev.ORDER_CANCELLED,
                instrument=name,
                account=owner.account,
                order_id=maker_id,
                qty=qty,
                data={"reason": "stp"},
            )
        if book.last_resting:
            self.orders[order_id] = LiveOrder(taker.name, name, side, price)
            self._emit(
                ev.ORDER_RESTED,
                instrument=name,
                account=taker.name,
                order_id=order_id,
                side=_SIDE_NAME[side],
                price=price,
                qty=book.last_resting,
            )
        if book.last_cancelled:
            self._emit(
                ev.ORDER_CANCELLED,
                instrument=name,
                account=taker.name,
                order_id=order_id,
                qty=book.last_cancelled,
                data={"reason": remainder_reason},
            )

    def _trade(
        self,
        instrument: str,
        taker: Account,
        taker_order: int,
        side: str,
        maker: Account,
        maker_order: int,
        price: int,
        qty: int,
        cash: int,
    ) -> None:
        """One trade, one event: both sides' cash and positions move together, so nothing is
        created or lost even between events. ``cash`` is the taker's side (minor units)."""
        delta = qty if side == "buy" else -qty
        taker.cash += cash
        maker.cash -= cash
        taker.positions[instrument] = taker.positions.get(instrument, 0) + delta
        maker.positions[instrument] = maker.positions.get(instrument, 0) - delta
        self._emit(
            ev.FILL,
            instrument=instrument,
            account=taker.name,
            order_id=taker_order,
            side=side,
            price=price,
            qty=qty,
            amount=cash,
            counterparty=maker.name,
            counter_order_id=maker_order,
        )

    def _fee(
        self, account: Account, instrument: str, order_id: int, amount: int, role: str
    ) -> None:
        if amount:
            account.cash -= amount
            self.fee_pool += amount
            self._emit(
                ev.FEE,
                instrument=instrument,
                account=account.name,
                order_id=order_id,
                amount=-amount,
                data={"role": role},
            )

    def _cancel(self, account: Account, cmd: Cancel) -> Result:
        order = self._own_order(account, cmd.order_id)
        self._received(cmd)
        listing = self.instruments[order.instrument]
        listing.book.cancel(cmd.order_id)
        del self.orders[cmd.order_id]
        self._emit(
            ev.ORDER_CANCELLED,
            instrument=order.instrument,
            account=account.name,
            order_id=cmd.order_id,
            qty=listing.book.last_cancelled,
            data={"reason": "user"},
        )
        return Result(True, cmd.order_id)

    def _amend(self, account: Account, cmd: Amend) -> Result:
        order = self._own_order(account, cmd.order_id)
        listing = self.instruments[order.instrument]
        self._check_price(listing.spec, cmd.price)
        self._received(cmd)
        book = listing.book
        open_qty = book.order_qty(cmd.order_id)
        kept = cmd.price == order.price and cmd.qty <= open_qty
        code = book.amend(cmd.order_id, cmd.price, cmd.qty)
        if code:
            reason = Reject(code).name.lower()
            self._emit(
                ev.ORDER_REJECTED,
                instrument=order.instrument,
                account=account.name,
                order_id=cmd.order_id,
                data={"reason": reason},
            )
            return Result(False, cmd.order_id, reason)
        self._emit(
            ev.ORDER_AMENDED,
            instrument=order.instrument,
            account=account.name,
            order_id=cmd.order_id,
            side=_SIDE_NAME[order.side],
            price=cmd.price,
            qty=cmd.qty,
            data={"priority": "kept" if kept else "lost"},
        )
        if not kept:
            del self.orders[cmd.order_id]
            self._after_match(listing, account, cmd.order_id, order.side, cmd.price, "stp")
        return Result(True, cmd.order_id)

    def _deposit(self, account: Account, cmd: Deposit) -> Result:
        self._received(cmd)
        self.credit(account.name, cmd.amount)
        return Result(True)

    def credit(self, name: str, amount: int) -> None:
        """Bring ``amount`` minor units of external cash into account ``name`` (a Deposit)."""
        account = self.accounts[name]
        account.cash += amount
        self.deposited += amount
        self._emit(ev.DEPOSIT, account=name, amount=amount)

    def _withdraw(self, account: Account, cmd: Withdraw) -> Result:
        if cmd.amount > account.cash:
            raise CommandError(
                f"amount: {cmd.amount} exceeds the account's cash of {account.cash} minor units"
            )
        self._received(cmd)
        account.cash -= cmd.amount
        self.withdrawn += cmd.amount
        self._emit(ev.WITHDRAWAL, account=account.name, amount=-cmd.amount)
        return Result(True)

    # ------------------------------------------------------------------ state
    def canonical_state(self) -> dict[str, Any]:
        """The whole state in the canonical shape of :mod:`exchange.state`."""
        names = self._by_index
        books = {}
        for name, listing in self.instruments.items():
            books[name] = [
                (_SIDE_NAME[side], price, oid, names[acct], qty)
                for side, price, oid, acct, qty in listing.book.snapshot().tolist()
            ]
        return canonical_state(
            t=self.t,
            accounts={a.name: (a.cash, a.positions) for a in self.accounts.values()},
            fee_pool=self.fee_pool,
            deposited=self.deposited,
            withdrawn=self.withdrawn,
            instruments={name: li.last_price for name, li in self.instruments.items()},
            books=books,
            next_order_id=self.next_order_id,
        )

    def state_hash(self) -> str:
        """SHA-256 of the canonical state."""
        return state_hash(self.canonical_state())
