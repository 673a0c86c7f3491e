"""The exchange engine: the one place where commands become events.

Like LMAX's business logic processor, the engine is single-threaded and deterministic: it owns
the accounts, the instrument registry and one ``matching_core.OrderBook`` per instrument, takes
commands in sequence at the simulated time it is given, and reports every outcome as an
:class:`~exchange.core.events.Event` passed to its sink, with a contiguous sequence number. It never
reads the wall clock, draws no random numbers and iterates only over ordered containers.

Money moves only through events: a fill moves cash (``price x qty x tick_value`` minor units)
and position (lots) between the two sides; fees move cash from the account to the exchange's
fee pool; deposits and withdrawals move cash across the boundary. So the sum of all cash, the
fee pool and the withdrawals, less the deposits, is always zero.

A command that fails validation, authorisation or a limit (``_check_limits``: no balance,
position or amount derived from one may pass what the log's int64 columns hold; docs/exchange.md,
"Limits") produces exactly one event, ``CommandRejected``, carrying the raw command and the
reason, and changes nothing else: every check runs before a command's first event. A valid
command produces ``CommandReceived`` and then its outcomes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from fractions import Fraction
from typing import Any, NamedTuple

import orjson

from exchange.core import events as ev
from exchange.core.accounts import Account, ExposureRates, Listing, exposure_rates
from exchange.core.clock import DAY_NS, YEAR_NS
from exchange.core.commands import (
    MAX_BALANCE,
    MAX_EXPOSURE,
    MAX_POSITION_LOTS,
    Amend,
    BotFailed,
    Cancel,
    CancelAll,
    CommandError,
    Deposit,
    Submit,
    Withdraw,
    jsonable,
    one_line,
    parse_command,
    record,
)
from exchange.core.events import Event
from exchange.core.state import POOLS, canonical_state, instrument_state, state_hash
from exchange.products.instruments import fee
from exchange.products.perp import (
    FundingIndex,
    MarkPrice,
    funding_rate,
    impact_prices_of_levels,
    premium_index,
    settle_funding,
)
from exchange.products.pricing import premium_from_value, rvs_mark, rvs_model_value, value_to_ticks
from exchange.products.rvs import payoff_per_contract, premium_due
from exchange.risk import bilateral, cds_market
from exchange.risk.default import check_maintenance, close_out, liquidate_perpetuals
from exchange.risk.variation import move_lots, position_value
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


_new_event = tuple.__new__
_NO_LOTS = (0, 0)

#: A swap series is marked at its book's mid only when the spread is at most this many ticks
#: and each side shows at least this many lots; otherwise at the model (exchange.products.pricing).
RVS_BOOK_MAX_SPREAD_TICKS = 5
RVS_BOOK_MIN_DEPTH_LOTS = 10
#: The key under which ``settle_funding`` reports the rounding remainder (the funding pool's).
FUNDING_POOL_KEY = "\x00funding-pool"


def _underlying(spec: Any) -> str | None:
    """The index an instrument is marked from (None for spot)."""
    if spec.kind == "perp":
        return spec.underlying
    if spec.kind == "rvs":
        return spec.resale_index
    return None


class Result(NamedTuple):
    """What a command did: ``ok``; the order id a submit was given; a rejection reason."""

    ok: bool
    order_id: int | None = None
    reason: str | None = None


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
        self.indices: dict[str, int] = {}  # last published value of each index, in ticks
        self.accounts: dict[str, Account] = {}
        self._by_index: list[str] = []
        self.orders: dict[int, LiveOrder] = {}
        self.next_order_id = 1
        self.pools = {name: 0 for name in POOLS}
        self.deposited = 0
        self.withdrawn = 0
        self._stp_modes: dict[str, int] = {}
        self.margin: Any = None  # a MarginConfig (exchange.risk.margin_cycle) when margin is on
        self.calls: dict[str, list[int]] = {}  # account -> [amount due, time of the call]
        # account -> (IM, equity) when its call's amount was last set (call, raise, reduction):
        # what a raise is measured against to say what grew (engine-only, not state)
        self._call_basis: dict[str, tuple[int, int]] = {}
        # set by the market schedule (exchange.sessions.market) when a simulator runs the session:
        # an
        # index-move trigger then asks for a cycle at this ns, after participants' commands
        self.request_cycle: Callable[[], None] | None = None
        self.last_cycle_t: int | None = None  # ns of the last margin cycle (None: none yet)
        self.requirements: dict[str, tuple[int, int]] = {}  # account -> (IM, MM) last cycle
        self.defaulted: list[str] = []
        # defaulters whose close-out has finished: flat in an instrument, they take part in
        # nothing of it any more (no premium, no variation margin, no settlement)
        self.closed_out: set[str] = set()
        self.contributions: dict[str, int] = {}  # default-fund contributions left, by member
        self.cycle_gains: dict[str, dict[str, int]] = {}  # VM received this cycle, by account
        # cumulative variation margin by account and instrument: the profit that ranks
        # auto-deleveraging (a function of the events, like the damped mark basis)
        self.vm_profit: dict[str, dict[str, int]] = {}
        self._cycle_indices: dict[str, int] = {}  # index values at the last margin cycle
        # account -> its rating, an index of MarginParams.rating_scale (0 the top): accounts
        # start at the top and enter only at their first RatingChanged (state: in the hash)
        self.ratings: dict[str, int] = {}
        # account -> consecutive cycles its capital ratio has indicated a better rating than
        # its own (the upgrade hysteresis; engine-only, reproduced by re-execution)
        self._upgrade_streak: dict[str, int] = {}
        # bilateral clearing (exchange.risk.bilateral): the swap contracts between the parties and
        # the collateral each has posted to the other; None until the first bilateral swap
        # fill opens them (state: in the hash once open)
        self.contracts: bilateral.Contracts | None = None
        self.posted: bilateral.Posted = {}
        # listed CDS (exchange.risk.cds_market): each reference entity's latest 5-year spread (bps)
        # from the economy's EconomyMonth, for the model marks; engine-only, not state (a
        # re-execution re-announces the months; the marks that use it are events)
        self.cds_spread_bps: dict[str, int] = {}

    # ------------------------------------------------------------------ the risk room's view
    # Margin cycles, default and bilateral clearing (exchange.risk) act through these public
    # names of the engine (exchange.core.venue.Venue), never its private helpers.

    def emit(self, kind: str, **fields: Any) -> Event:
        """Emit one event of ``kind`` at the current time (fields as :class:`Event`'s)."""
        return self._emit(kind, **fields)

    def after_match(self, *args: Any) -> None:
        """Settle a match's fills, fees and remainder (see ``_after_match``)."""
        return self._after_match(*args)

    def cancel_orders_in(self, name: str, instrument: str) -> None:
        """Cancel every resting order of account ``name`` in ``instrument``."""
        return self._cancel_orders_in(name, instrument)

    def sorted_accounts(self) -> list[Account]:
        """The accounts in name order (the order every multi-account step takes); a new list
        each call (the caller may keep or change it)."""
        return list(self._sorted_accounts())

    def settle_variation(self, name: str, listing: Listing) -> None:
        """Pay variation margin on ``listing`` (instrument ``name``) at its mark."""
        return self._settle_variation(name, listing)

    def is_closed_out(self, account: Account, instrument: str) -> bool:
        """Whether a defaulter's close-out in ``instrument`` has finished."""
        return self._closed_out(account, instrument)

    def variation_dues(self, name: str, listing: Listing) -> dict[str, tuple[int, int]]:
        """Each account's variation margin due on ``listing`` at its mark, and its value."""
        return self._variation_dues(name, listing)

    def pay_variation(self, *args: Any) -> None:
        """Pay one account's variation margin (see ``_pay_variation``)."""
        return self._pay_variation(*args)

    # ------------------------------------------------------------------ events and time
    def _emit(
        self,
        kind: str,
        instrument: str | None = None,
        account: str | None = None,
        order_id: int | None = None,
        side: str | None = None,
        price: int | None = None,
        qty: int | None = None,
        amount: int | None = None,
        counterparty: str | None = None,
        counter_order_id: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> Event:
        """Number, stamp and emit one event (fields as in :class:`Event`)."""
        self.seq = seq = self.seq + 1
        # tuple.__new__ with every field: Event(**fields) goes through namedtuple's Python
        # __new__ and a kwargs dict, a third of the cost of an event on the order path
        event = _new_event(
            Event,
            (
                seq,
                self.t,
                kind,
                instrument,
                account,
                order_id,
                side,
                price,
                qty,
                amount,
                counterparty,
                counter_order_id,
                data,
            ),
        )
        self._sink(event)
        return event

    def subscribe(self, listener: Callable[[Event], Any]) -> None:
        """Also pass every event, after the sink, to ``listener`` (the bot runner's market-data
        tap). A listener must not call back into the exchange from inside the call."""
        sink = self._sink

        def tee(event: Event) -> None:
            sink(event)
            listener(event)

        self._sink = tee

    def line_sink(self) -> Any:
        """The :class:`~exchange.core._lines.LineBatch` whose ``append`` is this engine's sink
        (a recorded run's, before any ``subscribe``), else None: a reader may then watch the
        events' lines (``LineBatch.watch``) instead of subscribing a listener."""
        from exchange.core._lines import LineBatch  # the compiled lines: only when asked

        sink = self._sink
        owner = getattr(sink, "__self__", None)
        if type(owner) is LineBatch and getattr(sink, "__name__", None) == "append":
            return owner
        return None

    def account_view(self, name: str) -> tuple[int, dict[str, int], list[tuple]]:
        """One account as its owner may see it: cash (minor units), non-zero positions (lots,
        by instrument name) and resting orders ``(order_id, instrument, side, price, qty)``
        oldest first."""
        account = self.accounts[name]
        # plain loops, not comprehensions, and no sort of one item: a view is made for every
        # stale bot snapshot
        held = account.positions
        positions = {}
        for key, lots in sorted(held.items()) if len(held) > 1 else held.items():
            if lots:
                positions[key] = lots
        # Not a walk of self.orders (every order of the exchange): the books of the
        # instruments where the account has lots on the book list its orders in the order
        # they entered them. That is self.orders' insertion order, not order id order (an
        # amend that loses priority re-enters); the entries merge the books' lists into it.
        index = account.index
        instruments = self.instruments
        orders = []
        entries = []
        books = 0
        for instrument, lots in account.open_lots.items():
            if lots[0] or lots[1]:
                books += 1
                for entry, order_id, side, price, qty in instruments[instrument].book.orders_of(
                    index
                ):
                    orders.append((order_id, instrument, _SIDE_NAME[side], price, qty))
                    entries.append(entry)
        if books > 1:  # entries are unique: the pairs compare by the entry alone
            orders = [order for _entry, order in sorted(zip(entries, orders, strict=True))]
        return account.cash, positions, orders

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

    def list_instrument(self, spec: Any) -> None:
        """List an instrument (an ``InstrumentSpec``, ``PerpSpec`` or ``RvsSpec``) with its own
        order book."""
        if spec.name in self.instruments:
            raise ValueError(f"instrument {spec.name!r} is already listed")
        book = OrderBook(max_price=spec.max_price)
        for account in self.accounts.values():
            book.set_stp(account.index, self._stp_modes[account.name])
        listing = Listing(spec, book, limits=exposure_rates(spec))
        if spec.kind == "perp":
            listing.mark_model = MarkPrice(spec)
        elif spec.kind == "cds":  # its own limits: a contract is worth at most its notional
            listing.limits = ExposureRates(*cds_market.exposure_rates(spec))
        self.instruments[spec.name] = listing
        self._marked_from_cache = None  # a new listing: the index map is rebuilt at next use
        self._emit(
            ev.INSTRUMENT_LISTED,
            instrument=spec.name,
            side=spec.kind,
            amount=spec.tick_value,
            data=spec.model_dump(mode="json"),
        )

    def open_account(self, name: str, stp: str = "none") -> None:
        """Open an account (cash starts at 0; fund it with a deposit)."""
        if name in self.accounts:
            raise ValueError(f"account {name!r} already exists")
        if stp not in _STP_MODES:
            raise ValueError(f"stp must be one of {sorted(_STP_MODES)}, got {stp!r}")
        account = Account(name, len(self._by_index))
        self.accounts[name] = account
        self._sorted_cache = None  # a new account: the name order is rebuilt at its next use
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
        seq = self.seq
        try:
            command = parse_command(raw)
            return self._execute(command)
        except CommandError as exc:
            return self._reject(raw, exc.reason)
        except Exception as exc:
            # Every check runs before a command's first event, so an error raised while no
            # event is out has changed nothing: it is refused like any invalid command (the
            # log says why). Once events are out they cannot be taken back: that is a bug,
            # and it is raised as one.
            if self.seq != seq:
                raise
            reason = f"command: cannot be checked ({type(exc).__name__}: {exc})"
            return self._reject(raw, one_line(reason))

    def _reject(self, raw: Any, reason: str) -> Result:
        account = raw.get("account") if isinstance(raw, dict) else None
        self._emit(
            ev.COMMAND_REJECTED,
            account=account if isinstance(account, str) and account in self.accounts else None,
            data={"command": raw, "reason": reason},
        )
        return Result(False, reason=reason)

    #: A rejection recorded by :meth:`reject` keeps at most this many bytes of the command's
    #: JSON form; a longer one is cut to a prefix (``{"bytes": n, "truncated": text}``).
    REJECT_MAX_BYTES = 4_096

    def reject(
        self, raw: Any, reason: str, source: str = "gateway", account: str | None = None
    ) -> Result:
        """Record a command rejected before it reached :meth:`handle` (by the socket gateway:
        malformed JSON, an oversized or unauthorised message, a flood): one
        ``CommandRejected`` with ``data = {"command", "reason", "source"}``, attributed to
        ``account`` if it is one. ``raw`` is reduced to JSON and cut to
        :attr:`REJECT_MAX_BYTES`, so anything can be recorded and re-recording a logged
        rejection (``verify``) gives the same event."""
        raw = jsonable(raw)
        encoded = orjson.dumps(raw)
        if len(encoded) > self.REJECT_MAX_BYTES:
            # a prefix of at most a sixth of the limit in characters: even if every one of
            # them needed a 6-byte escape it fits, so cutting twice changes nothing
            prefix = encoded.decode()[: self.REJECT_MAX_BYTES // 6 - 16]
            raw = {"bytes": len(encoded), "truncated": prefix}
        reason = one_line(str(reason))
        self._emit(
            ev.COMMAND_REJECTED,
            account=account if isinstance(account, str) and account in self.accounts else None,
            data={"command": raw, "reason": reason, "source": str(source)[:64]},
        )
        return Result(False, reason=reason)

    def _execute(self, command) -> Result:
        account = self.accounts.get(command.account)
        if account is None:
            raise CommandError(f"account: unknown account {command.account!r}")
        if account.name in self.defaulted and not isinstance(command, Deposit | BotFailed):
            raise CommandError(f"account: {account.name!r} has defaulted")
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
        if isinstance(command, CancelAll):
            return self._cancel_all_command(account, command)
        if isinstance(command, BotFailed):
            return self._bot_failed(account, command)
        raise CommandError(f"type: unsupported command {command.type!r}")  # pragma: no cover

    def _received(self, command) -> None:
        self._emit(ev.COMMAND_RECEIVED, account=command.account, data={"command": record(command)})

    def _listing(self, name: str) -> Listing:
        listing = self.instruments.get(name)
        if listing is None:
            raise CommandError(f"instrument: unknown instrument {name!r}")
        if listing.expired:
            raise CommandError(f"instrument: {name!r} has expired")
        return listing

    @staticmethod
    def _check_price(spec: Any, price: int, what: str = "price") -> None:
        low = getattr(spec, "min_price", 1)
        if not low <= price <= spec.max_price:
            raise CommandError(
                f"{what}: {price} ticks is outside {spec.name}'s range {low}..{spec.max_price}"
            )

    def _own_order(self, account: Account, order_id: int) -> LiveOrder:
        order = self.orders.get(order_id)
        if order is None or order.account != account.name:
            raise CommandError(f"order_id: no resting order {order_id} of account {account.name!r}")
        return order

    def _check_limits(
        self, account: Account, listing: Listing, side: int, qty: int, released: int = 0
    ) -> None:
        """Refuse an order of ``qty`` lots on ``side`` (0 buy, 1 sell) -- or an amend to
        ``qty`` of an order with ``released`` lots open -- that could take the account past a
        limit, were every resting order of it in the instrument to fill (docs/exchange.md,
        "Limits"): :data:`MAX_POSITION_LOTS` lots, :data:`MAX_EXPOSURE` of exposure, or its
        cash past +-:data:`MAX_BALANCE`. An order that makes neither worst case worse (it
        reduces a position, or an amend takes lots off) passes either of the first two."""
        name = listing.spec.name
        rates = listing.limits
        position = account.positions.get(name, 0)
        buying, selling = account.open_lots.get(name, _NO_LOTS)
        if side == 0:
            new_buying, new_selling = buying + qty - released, selling
        else:
            new_buying, new_selling = buying, selling + qty - released
        new_lots = max(position + new_buying, new_selling - position)
        new_worst = new_lots * rates.position
        if rates.basis:
            basis = account.basis.get(name, 0)
            new_worst += (
                max(basis + new_buying * rates.price, new_selling * rates.price - basis)
                * rates.basis
            )
        if new_worst > MAX_EXPOSURE or new_lots > MAX_POSITION_LOTS:
            # past a limit: refused unless the account is past it already and this order
            # makes it no worse (the common order never gets here)
            lots = max(position + buying, selling - position)
            worst = lots * rates.position
            if rates.basis:
                worst += (
                    max(basis + buying * rates.price, selling * rates.price - basis) * rates.basis
                )
            if new_worst > MAX_EXPOSURE and new_worst > worst:
                raise CommandError(
                    f"qty: {qty} lots could take the exposure of {account.name!r} to {name} "
                    f"to {new_worst} minor units (its position and resting orders at the "
                    f"largest price, {rates.price} ticks), past the limit of {MAX_EXPOSURE}"
                )
            if new_lots > MAX_POSITION_LOTS and new_lots > lots:
                raise CommandError(
                    f"qty: {qty} lots could take the position of {account.name!r} in {name} "
                    f"to {new_lots} lots (with its resting orders), past the limit of "
                    f"{MAX_POSITION_LOTS}"
                )
        swing = (qty - released) * rates.cash
        if swing > 0 and not -MAX_BALANCE <= account.cash - swing <= MAX_BALANCE - 2 * swing:
            raise CommandError(
                f"qty: {qty} lots could move the cash of {account.name!r}, {account.cash}, by "
                f"{swing} minor units, past the ledger's bound of +-{MAX_BALANCE}"
            )

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
        if account.name in self.calls:
            position = account.positions.get(spec.name, 0)
            reduces = -position if cmd.side == "buy" else position
            if cmd.qty > max(reduces, 0):
                raise CommandError(
                    f"account: {account.name!r} is under a collateral call; only orders that "
                    f"reduce its position are accepted ({spec.name} position {position:+})"
                )
        side = _SIDE_CODE[cmd.side]
        self._check_limits(account, listing, side, cmd.qty)
        self._received(cmd)
        order_id = self.next_order_id
        self.next_order_id += 1
        book = listing.book
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
            # spot pays the notional at the trade; perpetuals and swaps move no cash when they
            # trade (their cash moves through funding, premiums, settlement and margin)
            sign = (-1 if side == 0 else 1) if listing.kind == "spot" else 0
            maker_side = 1 - side
            for _t, maker_id, _ta, maker_idx, px, qty, _m in book.fills.tolist():
                maker = self.accounts[names[maker_idx]]
                maker.open_lots[name][maker_side] -= qty
                # the book has already matched: a maker order it filled is gone, and the last
                # price is this fill's, before the Fill announces them
                if book.order_qty(maker_id) == 0:
                    orders.pop(maker_id, None)
                listing.last_price = px
                notional = px * qty * tick_value
                self._trade(
                    listing,
                    taker,
                    order_id,
                    taker_side,
                    maker,
                    maker_id,
                    px,
                    qty,
                    sign * notional,
                )
                self._fee(taker, name, order_id, fee(notional, spec.taker_fee_bps), "taker")
                self._fee(maker, name, maker_id, fee(notional, spec.maker_fee_bps), "maker")
        for maker_id, _idx, qty, _m in book.stp_cancels.tolist():
            self._forget_cancelled(maker_id, qty, "stp")
        if book.last_resting:
            self.orders[order_id] = LiveOrder(taker.name, name, side, price)
            lots = taker.open_lots.get(name)
            if lots is None:
                lots = taker.open_lots[name] = [0, 0]
            lots[side] += book.last_resting
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
        listing: Listing,
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
        instrument = listing.spec.name
        delta = qty if side == "buy" else -qty
        if listing.kind == "rvs" and bilateral.is_bilateral(self):
            bilateral.open_books(self)  # the first bilateral fill opens the contracts' books
            bilateral.record_fill(self, instrument, taker.name, maker.name, delta, price)
        move_lots(listing, taker, maker, delta, price)
        taker.cash += cash
        maker.cash -= cash
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
            self.pools["fees"] += amount
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
        book = self.instruments[order.instrument].book
        book.cancel(cmd.order_id)
        self._forget_cancelled(cmd.order_id, book.last_cancelled, "user")
        return Result(True, cmd.order_id)

    def _cancel_all_command(self, account: Account, cmd: CancelAll) -> Result:
        if cmd.instrument is not None and cmd.instrument not in self.instruments:
            raise CommandError(f"instrument: unknown instrument {cmd.instrument!r}")
        self._received(cmd)
        self._cancel_all(account.name, "user", cmd.instrument)
        return Result(True)

    def _bot_failed(self, account: Account, cmd: BotFailed) -> Result:
        self._received(cmd)
        self._emit(
            ev.BOT_FAILED,
            account=account.name,
            data={
                "bot": cmd.bot,
                "cause": cmd.cause,
                "callback": cmd.callback,
                "detail": cmd.detail,
            },
        )
        self._cancel_all(account.name, "bot failed")
        return Result(True)

    def _amend(self, account: Account, cmd: Amend) -> Result:
        order = self._own_order(account, cmd.order_id)
        listing = self.instruments[order.instrument]
        self._check_price(listing.spec, cmd.price)
        book = listing.book
        open_qty = book.order_qty(cmd.order_id)
        self._check_limits(account, listing, order.side, cmd.qty, open_qty)
        self._received(cmd)
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
        lots = account.open_lots[order.instrument]
        if kept:
            lots[order.side] += cmd.qty - open_qty
        else:  # the order leaves the book and comes back as a new one (which may trade): its
            # fills, rest or cancel follow the OrderAmended and announce what became of it
            lots[order.side] -= open_qty
            del self.orders[cmd.order_id]
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
            self._after_match(listing, account, cmd.order_id, order.side, cmd.price, "stp")
        return Result(True, cmd.order_id)

    def _deposit(self, account: Account, cmd: Deposit) -> Result:
        cash = account.cash + cmd.amount
        if cash > MAX_BALANCE:
            raise CommandError(
                f"amount: depositing {cmd.amount} minor units would take the cash of "
                f"{account.name!r} to {cash}, past the ledger's bound of {MAX_BALANCE}"
            )
        if self.deposited + cmd.amount > MAX_BALANCE:
            raise CommandError(
                f"amount: depositing {cmd.amount} minor units would take the session's deposits "
                f"to {self.deposited + cmd.amount}, past the ledger's bound of {MAX_BALANCE}"
            )
        self._received(cmd)
        self.credit(account.name, cmd.amount)
        if account.name in self.calls and account.name in self.requirements:
            # against the last cycle's requirement: a deposit reduces or cures a call, never
            # raises it nor defaults the account (only a cycle does, after the ns's deposits)
            self._review_call(account, *self.requirements[account.name], cycle=False)
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
        if self.withdrawn + cmd.amount > MAX_BALANCE:
            raise CommandError(
                f"amount: withdrawing {cmd.amount} minor units would take the session's "
                f"withdrawals to {self.withdrawn + cmd.amount}, past the ledger's bound of "
                f"{MAX_BALANCE}"
            )
        self._received(cmd)
        account.cash -= cmd.amount
        self.withdrawn += cmd.amount
        self._emit(ev.WITHDRAWAL, account=account.name, amount=-cmd.amount)
        return Result(True)

    # ------------------------------------------------------------------ exchange-timed actions
    # Called by the market schedule (exchange.sessions.market), never by participants. Each payment
    # is
    # one event between one account and one of the exchange's pools, so the ledger balances
    # after every event; a full cycle of payments leaves the clearing pool where it started.
    def publish_index(self, name: str, ticks: int) -> None:
        """Publish an index value (ticks) and re-mark every instrument that refers to it."""
        self.indices[name] = ticks
        self._emit(ev.INDEX_PUBLISHED, instrument=name, price=ticks)
        for listing in self._marked_from(name):
            if not listing.expired:
                self.mark(listing.spec.name)
        if self.margin is not None and self.margin.index_move_trigger_ppm:
            base = self._cycle_indices.get(name)
            if base and abs(ticks - base) * 1_000_000 >= base * self.margin.index_move_trigger_ppm:
                # a large move: margin at this ns, not at the next scheduled cycle. Under a
                # simulator the cycle is queued at CLEARING priority so that, like a scheduled
                # one, it closes the ns (after its commands); the bare engine API runs it now
                if self.request_cycle is not None:
                    self.request_cycle()
                else:
                    self.margin_cycle()

    #: index name -> the listings marked from it, in listing order: ``_marked_from``'s map,
    #: built once per set of listings (every index print walks it) and dropped by
    #: ``list_instrument``. Never changed in place, so a walk under way keeps its listings.
    _marked_from_cache: dict[str, list[Listing]] | None = None

    def _marked_from(self, index: str) -> list[Listing]:
        """The listings whose mark refers to index ``index`` (``_underlying``), in the order
        they were listed (the order ``publish_index`` marks them in), expired ones included."""
        cache = self._marked_from_cache
        if cache is None:
            cache = self._marked_from_cache = {}
            for listing in self.instruments.values():
                underlying = _underlying(listing.spec)
                if underlying is not None:
                    cache.setdefault(underlying, []).append(listing)
        return cache.get(index, [])

    def _impact(self, listing: Listing):
        # the book's best 64 levels a side as (price, qty) ints built in C (no arrays); the
        # walk trusts the book's order and stops at the level that completes the size
        bids, asks = listing.book.top(64)
        return impact_prices_of_levels(bids, asks, listing.spec.impact_notional_lots)

    def mark(self, name: str) -> None:
        """Mark one instrument (a ``MarkPrice`` event): perpetuals from the index plus a damped
        basis; swaps from the put model, or the book's mid where the book is liquid. With
        margin on, a perpetual's holders are then checked against maintenance margin at this
        mark and liquidated below it (``exchange.risk.default.check_maintenance``)."""
        listing = self.instruments[name]
        spec = listing.spec
        if spec.kind == "cds":  # no index: the book or the model (exchange.risk.cds_market)
            cds_market.mark(self, listing)
            return
        index = self.indices.get(_underlying(spec))
        if index is None or listing.expired:
            return
        if spec.kind == "perp":
            impact_bid, impact_ask = self._impact(listing)
            mark = listing.mark_model.update(self.t, index, impact_bid, impact_ask)
            unit = mark * spec.tick_value
            data = {"source": "index+basis", "index": index}
        elif spec.kind == "rvs":
            mark, source, model_ticks, unit = self._rvs_mark(listing, index)
            listing.periods_left = self._periods_left(listing)
            data = {"source": source, "model": model_ticks, "index": index}
        else:
            return
        listing.mark = mark
        listing.unit_value = unit
        self._emit(
            ev.MARK_PRICE,
            instrument=name,
            price=mark,
            amount=unit,
            qty=listing.periods_left if spec.kind == "rvs" else None,
            data=data,
        )
        if spec.kind == "perp" and self.margin is not None:
            check_maintenance(self, name)  # venues check maintenance at every mark, not daily

    def _periods_left(self, listing: Listing) -> int:
        """Premium periods a swap's basis still owes: the premium dates from now on, less one
        whose premium has already been charged (a premium date's own premium is owed until
        ``charge_premium`` collects it at that nanosecond, and no longer after)."""
        charged = listing.premium_charged_ns
        return sum(
            1
            for day in listing.spec.premium_dates()
            if (t := self.date_ns(day)) >= self.t and (charged is None or t > charged)
        )

    def _rvs_mark(self, listing: Listing, index: int) -> tuple[int, str, int, int]:
        spec = listing.spec
        level = float(index * Decimal(spec.index_tick_size))
        floor = float(spec.floor * Decimal(spec.index_tick_size))
        years = max(0, self.maturity_ns(spec) - self.t) / YEAR_NS
        value = rvs_model_value(level, floor, spec.volatility, years, 1)
        remaining = max(1, self._periods_left(listing))
        model_premium = premium_from_value(value, remaining)
        book = listing.book
        bid_px, bid_qty = book.depth(0, 1)
        ask_px, ask_qty = book.depth(1, 1)
        mark, source = rvs_mark(
            model_premium,
            spec.tick_size,
            int(bid_px[0]) if len(bid_px) else None,
            int(ask_px[0]) if len(ask_px) else None,
            RVS_BOOK_MAX_SPREAD_TICKS,
            RVS_BOOK_MIN_DEPTH_LOTS,
            int(bid_qty[0]) if len(bid_qty) else 0,
            int(ask_qty[0]) if len(ask_qty) else 0,
        )
        per_contract = value_to_ticks(value * spec.gpus_per_contract, "0.01")  # cents, once
        return mark, source, value_to_ticks(model_premium, spec.tick_size), per_contract

    def fund(self, name: str) -> None:
        """Pay one funding interval of a perpetual: a ``FundingRate`` event, then one
        ``FundingPaid`` per account with a position (longs pay shorts when the rate is
        positive); rounding remainders stay in the ``funding`` pool."""
        listing = self.instruments[name]
        spec = listing.spec
        index = self.indices.get(spec.underlying)
        if index is None or listing.mark is None:
            return
        impact_bid, impact_ask = self._impact(listing)
        premium = premium_index(impact_bid, impact_ask, Fraction(index))
        rate = funding_rate(premium, spec)
        funding = FundingIndex(listing.funding_cum)
        funding.accrue(rate, listing.mark, spec.tick_value)
        previous, listing.funding_cum = listing.funding_cum, funding.cumulative
        self._emit(
            ev.FUNDING_RATE,
            instrument=name,
            price=listing.mark,
            amount=listing.funding_cum,
            data={"rate": str(rate), "premium": str(premium)},
        )
        self._pay_funding(name, previous)

    def _pay_funding(self, name: str, previous: int) -> None:
        """``fund``'s payments: every holder of perpetual ``name`` pays or receives its
        funding from ``previous`` to the listing's ``funding_cum`` (nano-minor units per lot;
        ``settle_funding``), a ``FundingPaid`` each, payers first. (The compiled engine's
        ``fund`` hands this part to it where it does not prove the payments.)"""
        holders = {
            a.name: a.positions[name] for a in self._sorted_accounts() if a.positions.get(name)
        }
        if not holders:
            return
        deltas = settle_funding(
            holders,
            dict.fromkeys(holders, previous),
            self.instruments[name].funding_cum,
            FUNDING_POOL_KEY,
        )
        # payers first, then receivers: the pool is never drawn below zero, even mid-cycle
        for account_name in sorted(holders, key=lambda n: (deltas.get(n, 0) > 0, n)):
            amount = deltas.get(account_name, 0)
            if amount:
                self.accounts[account_name].cash += amount
                self.pools["funding"] -= amount
                self._emit(
                    ev.FUNDING_PAID,
                    instrument=name,
                    account=account_name,
                    qty=holders[account_name],
                    amount=amount,
                )

    def charge_premium(self, name: str) -> None:
        """Collect one period's premium of a swap series, through the clearing pool.

        The period falls due now, so the series is first re-marked without it (``MarkPrice``,
        one period fewer left) and its variation margin is settled on that value; then each
        account with a premium basis pays (``PremiumPaid``). The variation margin and premium
        payments are made together, payers first, so the clearing pool never goes below zero
        and ends where it began: over all accounts still taking part they sum to zero (a
        closed-out account's locked premiums were settled at its close-out)."""
        listing = self.instruments[name]
        if listing.expired:
            return
        listing.premium_charged_ns = self.t
        listing.periods_left = self._periods_left(listing)
        payments: list[tuple[int, str, int]] = []  # (amount, account, 0 = VM / 1 = premium)
        if listing.mark is not None:
            self.mark(name)
            values = self._variation_dues(name, listing)
            payments += [(due, a, 0) for a, (due, _value) in values.items()]
        tick_value = listing.spec.tick_value
        for account in self._sorted_accounts():
            basis = account.basis.get(name, 0)
            if basis and not self._closed_out(account, name):
                payments.append((-premium_due(basis, tick_value), account.name, 1))
        for amount, account_name, what in sorted(payments, key=lambda p: (p[0] > 0, p[1], p[2])):
            if what == 0:
                self._pay_variation(name, listing, account_name, amount, values[account_name][1])
                continue
            self._clear(ev.PREMIUM_PAID, name, account_name, amount)

    def charge_cds_premium(self, name: str) -> None:
        """A premium date of a CDS series (an IMM date): re-mark it, settle its variation
        margin and collect the period's premium from each spread basis (``PremiumPaid``); on
        its maturity, close it (``InstrumentExpired``). The rules: ``cds_market.charge_premium``
        and docs/credit.md, "Listing CDS on the exchange"."""
        cds_market.charge_premium(self, name)

    def expire(self, name: str) -> None:
        """Settle a swap series at maturity: cancel its resting orders, pay
        ``max(floor - index, 0)`` per GPU to the protection buyers (``SwapSettled``), close
        every position (``InstrumentExpired``)."""
        listing = self.instruments[name]
        spec = listing.spec
        if listing.expired:
            return
        self.cancel_book(name, "expired")
        index = self.indices[spec.resale_index]
        per_contract = payoff_per_contract(spec.floor, index, spec.payoff_tick_value)
        # settle against what variation margin already paid, so that over the life of a
        # position the total paid is exactly the payoff; payers first (the pool never lends)
        due = {
            a.name: a.positions.get(name, 0) * per_contract - a.vm_basis.get(name, 0)
            for a in self._sorted_accounts()
            if (a.positions.get(name, 0) or a.vm_basis.get(name, 0))
            and not self._closed_out(a, name)
        }
        for account_name in sorted(due, key=lambda n: (due[n] > 0, n)):
            self._clear(ev.SWAP_SETTLED, name, account_name, due[account_name], price=index)
        for account in self.accounts.values():
            account.positions.pop(name, None)
            account.basis.pop(name, None)
            account.vm_basis.pop(name, None)
        if self.contracts is not None:
            bilateral.drop_instrument(self.contracts, name)
        listing.expired = True
        self._emit(ev.INSTRUMENT_EXPIRED, instrument=name)

    # ------------------------------------------------------------------ margin
    def margin_cycle(self) -> None:
        """One margin cycle: settle variation margin on every position, compute every
        account's initial and maintenance margin (``MarginRequirement``), then call, reduce,
        cure or default (``exchange.risk.margin`` computes the requirement).

        An open call is re-measured: raised (``CallIncreased``) if the shortfall grew,
        reduced if it shrank, and at or past its deadline declared in default for the amount
        it then stands at (docs/margin.md, "Collateral calls").

        Ratings (docs/margin.md, "Ratings and the credit add-on"): after the liquidations,
        each account the grid measures is rated against the tier its capital ratio indicates
        (``MarginConfig.credit_standing``): down to it at once, up one notch after
        ``upgrade_after_cycles`` better cycles. A change is ``RatingChanged``, emitted right
        before that account's ``MarginRequirement``, whose IM carries the new rating's
        credit add-on.

        Bilateral clearing (docs/margin.md, "Bilateral clearing (CSA)"): swaps settle no
        variation margin and carry no IM; instead, at its turn, right after its rating moved,
        each account returns and delivers the collateral its CSAs ask of it as poster
        (``exchange.risk.bilateral.collateralise``), and what its cash could not deliver is added
        to its requirement, so the call machinery calls it."""
        self.last_cycle_t = self.t
        self.cycle_gains = {}
        for name, listing in self.instruments.items():
            # ``Listing.kind`` inlined (the same value, without the property's call)
            if listing.spec.kind != "spot" and not listing.expired and listing.mark is not None:
                self._settle_variation(name, listing)
        if self.margin is None:
            return
        self._cycle_indices = dict(self.indices)
        # cleared: one measure (equity, perpetual margin, swap book) serves the requirements
        # and the ratings; bilateral requirements measure no swaps, so nothing is shared
        measure = None if self.margin.bilateral else self.margin.measure
        measured = measure(self) if measure else None
        requirements = self.margin.requirements(self, measured=measured)
        touched = liquidate_perpetuals(self, requirements)
        if touched:  # realise the liquidations' losses, then measure again
            for name in touched:
                self._settle_variation(name, self.instruments[name])
            measured = measure(self) if measure else None
            requirements = self.margin.requirements(self, measured=measured)
        changes = self._rating_changes(measured)
        before = requirements
        if changes:  # the requirements at the new ratings (the add-on is the rating's)
            ratings = {**self.ratings, **{a: change[0] for a, change in changes.items()}}
            requirements = self.margin.requirements(self, ratings=ratings, measured=measured)
        for account in self._sorted_accounts():
            im_mm = requirements.get(account.name)
            if account.name in self.defaulted:
                continue  # a defaulter is the default manager's, no longer the margin cycle's
            if account.name in changes:  # the rating moves, then the requirement it raises
                tier, ratio, reason = changes[account.name]
                im_change = (im_mm or (0, 0))[0] - before.get(account.name, (0, 0))[0]
                self._rate(account.name, tier, ratio, reason, im_change)
            if self.contracts is not None:  # bilateral: its CSA deliveries, at its new rating
                owed = bilateral.collateralise(self, account.name)
                if owed:  # what it could not deliver is called, with its perpetuals' margin
                    im, mm = im_mm or (0, 0)
                    im_mm = (im + owed, mm + owed)
            if im_mm is None and account.name not in self.calls and account.cash >= 0:
                continue  # nothing at risk and nothing owed
            # (an account with no position but negative cash — a liquidation that cost more
            # than it had — owes that debt: it is called for it like any shortfall)
            im, mm = im_mm or (0, 0)
            self.requirements[account.name] = (im, mm)
            self._emit(
                ev.MARGIN_REQUIREMENT,
                account=account.name,
                amount=im,
                data={"mm": mm, "equity": account.cash},
            )
            self._review_call(account, im, mm, cycle=True)

    def _rating_changes(self, measured: Any = None) -> dict[str, tuple[int, int, str]]:
        """The ratings this cycle moves: account -> (new rating, capital ratio in ppm,
        ``downgrade`` | ``upgrade``), for the accounts the grid measures (not defaulters).
        Down at once to the indicated rating; up one notch when the indicated rating has been
        better than the account's at ``upgrade_after_cycles`` consecutive cycles (counted in
        ``_upgrade_streak``, updated here: a cycle that is not better restarts the count, one
        at which the account is not measured -- no swap exposure -- leaves it). ``measured``:
        ``MarginConfig.measure`` of the engine as it stands (a ``Measured``), if the cycle
        has one."""
        params = self.margin.params
        changes: dict[str, tuple[int, int, str]] = {}
        if not params.credit_tiers:
            return changes  # one rating only: nothing to measure
        standing = self.margin.credit_standing(self, measured=measured)
        for name, (indicated, ratio) in sorted(standing.items()):
            if name in self.defaulted:
                continue
            rating = self.ratings.get(name, 0)
            if indicated > rating:  # a higher index is a worse rating
                changes[name] = (indicated, ratio, "downgrade")
                self._upgrade_streak.pop(name, None)
            elif indicated < rating:
                streak = self._upgrade_streak.get(name, 0) + 1
                if streak >= params.upgrade_after_cycles:
                    changes[name] = (rating - 1, ratio, "upgrade")
                    self._upgrade_streak.pop(name, None)
                else:
                    self._upgrade_streak[name] = streak
            else:
                self._upgrade_streak.pop(name, None)
        return changes

    def _rate(self, name: str, tier: int, ratio: int, reason: str, im_change: int) -> None:
        """Move an account's rating to ``tier``, then announce it (``RatingChanged``; ``side``
        the new rating's name, ``im_change`` its initial margin at the new rating less at the
        old one, minor units, at this cycle)."""
        scale = self.margin.params.rating_scale
        previous = self.ratings.get(name, 0)
        self.ratings[name] = tier
        self._emit(
            ev.RATING_CHANGED,
            account=name,
            side=scale[tier],
            data={
                "from": scale[previous],
                "to": scale[tier],
                "capital_ratio_ppm": ratio,
                "reason": reason,
                "im_change": im_change,
            },
        )

    def _closed_out(self, account: Account, instrument: str) -> bool:
        """Whether ``account`` takes no further part in ``instrument``: its close-out after a
        default has finished and it holds no position there. Its locked premium basis was
        settled by the variation margin of its close-out, so it owes and is owed nothing."""
        return account.name in self.closed_out and not account.positions.get(instrument, 0)

    def _settle_variation(self, name: str, listing: Listing) -> None:
        """Pay every account the change in its position's value since it was last settled
        (``VariationMargin``), payers first."""
        due = self._variation_dues(name, listing)
        for account_name in sorted(due, key=lambda n: (due[n][0] > 0, n)):  # payers first
            self._pay_variation(name, listing, account_name, *due[account_name])

    def _variation_dues(self, name: str, listing: Listing) -> dict[str, tuple[int, int]]:
        """Revalue every position in ``name`` at the last mark; returns, for each account
        whose value moved, what it is owed (minor units; negative: it pays) and its value now,
        which becomes its VM basis when it is paid (``_pay_variation``: each account's basis
        moves with its own payment, so no event runs ahead of the state). A flat account
        with a swap premium basis is valued too: the premiums it locked in by buying and
        selling at different prices are its liability (or asset) until maturity. Bilateral
        swaps pay none: their collateral is the CSA's (``exchange.risk.bilateral``)."""
        spec = listing.spec
        due = {}
        if listing.kind == "rvs" and bilateral.is_bilateral(self):
            return due
        for account in self._sorted_accounts():
            position = account.positions.get(name, 0)
            settled = account.vm_basis.get(name, 0)
            basis = account.basis.get(name, 0)
            if not position and not settled and not basis:
                continue
            if self._closed_out(account, name):
                continue
            if listing.kind == "cds":  # valued as a whole position (exchange.risk.cds_market)
                value = cds_market.value(self, listing, position, basis)
            else:
                value = position_value(
                    listing.kind,
                    position,
                    listing.mark,
                    spec.tick_value,
                    listing.unit_value,
                    basis,
                    listing.periods_left,
                )
            if value != settled:
                due[account.name] = (value - settled, value)
        return due

    def _clear(
        self,
        kind: str,
        name: str,
        account_name: str,
        amount: int,
        price: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Move ``amount`` minor units between the clearing pool and an account (positive: to
        the account), then announce it as ``kind`` with the account's position in ``name``
        (and ``price``, ``data`` when given: a swap's index, a CDS premium's days)."""
        account = self.accounts[account_name]
        account.cash += amount
        self.pools["clearing"] -= amount
        self._emit(
            kind,
            instrument=name,
            account=account_name,
            qty=account.positions.get(name, 0),
            price=price,
            amount=amount,
            data=data,
        )

    def _pay_variation(
        self, name: str, listing: Listing, account_name: str, amount: int, value: int
    ) -> None:
        """Pay ``amount`` of variation margin and move the account's VM basis to ``value``
        (minor units), then announce it (``VariationMargin``)."""
        account = self.accounts[account_name]
        if value:
            account.vm_basis[name] = value
        else:
            account.vm_basis.pop(name, None)
        account.cash += amount
        self.pools["clearing"] -= amount
        profit = self.vm_profit.setdefault(account_name, {})
        profit[name] = profit.get(name, 0) + amount
        if amount > 0:
            gains = self.cycle_gains.setdefault(account_name, {})
            gains[name] = gains.get(name, 0) + amount
        self._emit(
            ev.VARIATION_MARGIN,
            instrument=name,
            account=account_name,
            qty=account.positions.get(name, 0),
            price=listing.mark,
            amount=amount,
        )

    def _review_call(self, account: Account, im: int, mm: int, *, cycle: bool) -> None:
        """Open, raise, reduce, cure or (past its deadline) default on a collateral call.

        ``im``/``mm``: the account's requirement (minor units); ``cycle``: a margin cycle's
        review (else a deposit's, which only reduces or cures). At a cycle the call is first
        brought to the shortfall ``im - cash`` (``CallIncreased`` if it grew, ``CallReduced``
        if it shrank), then, at or after its deadline (which a raise does not move), the
        account defaults for that amount: a default is only ever for an amount called."""
        name = account.name
        needed = im - account.cash
        call = self.calls.get(name)
        if call is None:
            if cycle and account.cash < mm:
                self.calls[name] = [needed, self.t]
                self._call_basis[name] = (im, account.cash)
                self._emit(
                    ev.COLLATERAL_CALL,
                    account=name,
                    amount=needed,
                    data={
                        "deadline": self.t + self.margin.cure_ns,
                        "im": im,
                        "mm": mm,
                        "equity": account.cash,
                    },
                )
            return
        if needed <= 0:
            del self.calls[name]
            self._call_basis.pop(name, None)
            self._emit(ev.CALL_CURED, account=name)
            return
        if cycle and needed > call[0]:
            previous = call[0]
            base_im, base_equity = self._call_basis.get(name, (im, account.cash))
            call[0] = needed
            self._call_basis[name] = (im, account.cash)
            # what grew more since the amount was last set: the requirement or the loss of
            # equity (the credit add-on is part of the IM the margin calculator returns)
            grew = "initial margin" if im - base_im >= base_equity - account.cash else None
            self._emit(
                ev.CALL_INCREASED,
                account=name,
                amount=needed,
                data={
                    "previous": previous,
                    "deadline": call[1] + self.margin.cure_ns,  # the first call's: unchanged
                    "im": im,
                    "mm": mm,
                    "equity": account.cash,
                    "reason": grew or "variation margin",
                },
            )
        elif needed < call[0]:
            call[0] = needed
            self._call_basis[name] = (im, account.cash)
            self._emit(ev.CALL_REDUCED, account=name, amount=needed)
        if cycle and self.t >= call[1] + self.margin.cure_ns:
            self.declare_default(name, call[0])

    def declare_default(self, name: str, missed: int) -> None:
        """An account missed its call: ``Default``; its resting orders are cancelled, its
        positions closed out and any loss run down the waterfall (``exchange.risk.default``)."""
        self.calls.pop(name, None)
        self._call_basis.pop(name, None)
        self.defaulted.append(name)
        self._emit(ev.DEFAULT, account=name, amount=missed, data={"reason": "missed call"})
        self._cancel_all(name, "default")
        close_out(self, name)
        # auto-deleveraging moves a swap's lots at the mark premium after the close-out's
        # variation margin, which changes a premium basis: settle that too, so the defaulter
        # leaves with nothing unsettled before it stops taking part
        defaulter = self.accounts[name]
        for instrument, listing in self.instruments.items():
            if listing.kind == "spot" or listing.expired or listing.mark is None:
                continue
            if defaulter.basis.get(instrument, 0) or defaulter.vm_basis.get(instrument, 0):
                self._settle_variation(instrument, listing)
        bilateral.default(self, name)  # its bilateral swaps: termination, claims, re-hedges
        self.closed_out.add(name)

    def _cancel_orders_in(self, name: str, instrument: str) -> None:
        """Cancel an account's resting orders in one instrument (before liquidating it)."""
        self._cancel_all(name, "liquidation", instrument)

    def _cancel_all(self, name: str, reason: str, instrument: str | None = None) -> None:
        """Cancel account ``name``'s resting orders (in ``instrument`` only, unless None),
        oldest first (the order ``account_view`` lists them in), each an ``OrderCancelled``
        with ``data.reason``."""
        account = self.accounts.get(name)
        if account is None:
            return  # no account, no orders (as the walk of self.orders this replaces found)
        rows = []
        for key, lots in account.open_lots.items():
            if (lots[0] or lots[1]) and instrument in (None, key):
                book = self.instruments[key].book
                rows.extend((row[0], row[1], book) for row in book.orders_of(account.index))
        # by the books' entries (unique: the books are never compared): self.orders' order
        # across instruments, as account_view's
        rows.sort()
        for _entry, order_id, book in rows:
            book.cancel(order_id)
            self._forget_cancelled(order_id, book.last_cancelled, reason)

    def cancel_book(self, instrument: str, reason: str) -> None:
        """Cancel every resting order in ``instrument`` (a series that expires, matures or
        meets a credit event), oldest first (the order they entered the book in: order id
        order, but an amend that lost priority counts from the amend), each an
        ``OrderCancelled`` with ``data.reason``."""
        book = self.instruments[instrument].book
        for _entry, order_id, _side, _price, _qty in book.orders_of():
            book.cancel(order_id)
            self._forget_cancelled(order_id, book.last_cancelled, reason)

    def _forget_cancelled(self, order_id: int, qty: int, reason: str) -> None:
        """An order the book has just cancelled (``qty`` lots left on it): drop the engine's
        record and its open lots, then announce it (``OrderCancelled`` with ``data.reason``)."""
        owner = self.orders.pop(order_id)
        self.accounts[owner.account].open_lots[owner.instrument][owner.side] -= qty
        self._emit(
            ev.ORDER_CANCELLED,
            instrument=owner.instrument,
            account=owner.account,
            order_id=order_id,
            qty=qty,
            data={"reason": reason},
        )

    def fund_pool(self, pool: str, amount: int) -> None:
        """Bring external money into one of the exchange's pools (the insurance fund)."""
        self.pools[pool] += amount
        self.deposited += amount
        self._emit(ev.POOL_FUNDED, side=pool, amount=amount)

    def contribute(self, name: str, amount: int) -> None:
        """Move ``amount`` of an account's cash into the mutualised default fund."""
        self.accounts[name].cash -= amount
        self.pools["default_fund"] += amount
        self.contributions[name] = self.contributions.get(name, 0) + amount
        self._emit(ev.FUND_CONTRIBUTION, account=name, amount=-amount)

    def announce(
        self,
        kind: str,
        *,
        amount: int | None = None,
        counterparty: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> Event:
        """Emit one event of the credit economy (a kind of ``events.ECONOMY_KINDS``) at the
        current time, and return it (its ``seq`` is what later events name as their cause).

        Args:
            kind: the event's kind; any other kind is refused (``ValueError``): the exchange's
                own events come only from the exchange's own actions.
            amount: the record's main money amount, cents (None: it has none).
            counterparty: the economy's entity (a lab, neocloud or hyperscaler): not an account.
            data: the record's other fields, JSON with ints for numbers.

        These events are news (exchange/economy_schedule), with two consequences for listed
        CDS (``exchange.risk.cds_market``, docs/credit.md "Listing CDS on the exchange"): an
        ``EconomyMonth``'s ``cds_spread_bps`` (entity -> 5-year spread, bps) is kept, before
        the event, for the model marks (engine-only: not in the canonical state, the marks
        that use it are events); a ``BorrowerDefaulted`` is followed by the credit event of
        every open series on its entity (counterparty): accrued premium, settlement, close."""
        if kind not in ev.ECONOMY_KINDS:
            raise ValueError(f"announce takes a credit economy kind, not {kind!r}")
        if kind == ev.ECONOMY_MONTH:
            cds_market.note_month(self, data)
        event = self._emit(kind, amount=amount, counterparty=counterparty, data=data)
        if kind == ev.BORROWER_DEFAULTED:
            cds_market.credit_event(self, counterparty, data)
        return event

    #: ``_sorted_accounts``' list, built once per set of accounts: every mark and cycle walks
    #: the accounts in name order, and they change only in ``open_account`` (which drops it).
    #: Never changed in place, so a loop over an earlier list is not disturbed by a new account.
    _sorted_cache: list[Account] | None = None

    def _sorted_accounts(self) -> list[Account]:
        """The accounts in name order, the engine's own (shared) list: iterate, do not change."""
        cached = self._sorted_cache
        if cached is None:
            cached = self._sorted_cache = [self.accounts[n] for n in sorted(self.accounts)]
        return cached

    #: The session's calendar epoch (set by scenarios that use dates), for date <-> ns.
    epoch: date | None = None

    def date_ns(self, day: date) -> int:
        """Simulated ns of midnight UTC on ``day``."""
        if self.epoch is None:
            raise ValueError("this session has no calendar epoch")
        return (day - self.epoch).days * DAY_NS

    def maturity_ns(self, spec) -> int:
        return self.date_ns(spec.maturity)

    # ------------------------------------------------------------------ state
    def canonical_state(self) -> dict[str, Any]:
        """The whole state in the canonical shape of :mod:`exchange.core.state`."""
        names = self._by_index
        books = {}
        for name, listing in self.instruments.items():
            books[name] = [
                (_SIDE_NAME[side], price, oid, names[acct], qty)
                for side, price, oid, acct, qty in listing.book.snapshot().tolist()
            ]
        return canonical_state(
            t=self.t,
            accounts={
                a.name: (a.cash, a.positions, a.basis, a.vm_basis) for a in self.accounts.values()
            },
            calls=self.calls,
            defaulted=self.defaulted,
            contributions=self.contributions,
            ratings=self._rating_names(),
            pools=self.pools,
            deposited=self.deposited,
            withdrawn=self.withdrawn,
            instruments={
                name: instrument_state(li.kind, li.last_price, li.mark, li.funding_cum, li.expired)
                for name, li in self.instruments.items()
            },
            indices=self.indices,
            books=books,
            next_order_id=self.next_order_id,
            bilateral=(
                None if self.contracts is None else bilateral.state_of(self.contracts, self.posted)
            ),
        )

    def _rating_names(self) -> dict[str, str]:
        """Every account that has had a ``RatingChanged``, with its rating's name."""
        if not self.ratings:
            return {}
        scale = self.margin.params.rating_scale
        return {name: scale[tier] for name, tier in self.ratings.items()}

    def state_hash(self) -> str:
        """SHA-256 of the canonical state."""
        return state_hash(self.canonical_state())
