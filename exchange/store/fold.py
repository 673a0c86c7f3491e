"""Replay: fold a log's events into state, with no engine, no bots and no randomness.

The fold reads only the typed fields of each event (``seq, t, kind, instrument, account,
order_id, side, price, qty, amount``) — never the JSON payload — so it runs straight off the
store's indexed columns. Its rules are the engine's outcomes read backwards:

* ``Deposit``/``Withdrawal``/``Fee`` add ``amount`` to the account's cash; a ``Fill`` is one
  trade: ``amount`` to the taker (``account``) and ``-amount`` to the maker
  (``counterparty``), positions ``+-qty`` by the taker's side, and ``qty`` off the maker's
  resting order (``counter_order_id``);
* ``OrderRested`` puts an order at the back of its price's queue (its ``seq`` is its time
  priority); ``OrderCancelled`` removes it; ``OrderAmended`` keeps it in place with the new
  quantity when the price is unchanged and the quantity not increased, else removes it (what
  follows — fills, ``OrderRested`` — re-enters it);
* ``OrderAccepted``/``OrderRejected`` advance the next order id;
* ``RatingChanged`` sets the account's rating to ``side`` (the new rating's name);
* bilateral clearing (``exchange.risk.bilateral``): a ``PoolFunded`` to the ``collateral`` pool
opens
  the books, after which a swap ``Fill`` is also a contract between taker and maker;
  ``CollateralPosted`` moves the poster's cash into the pool, ``CollateralApplied`` from it to
  the account; ``ProtectionTerminated`` removes a contract (its basis is the fold's own
  record), ``Rehedged`` makes one with the dealer at the basis in ``price``; ``RecoveryPaid``
  takes what the defaulter's cash covers from it and the rest from outside (deposited);
  ``TerminationPaid`` moves cash from the account to the defaulter.
* listed CDS (``exchange.risk.cds_market``): a fill moves the spread basis as a swap's premium basis
  (kind ``cds``); premiums (``PremiumPaid``) and the credit event's settlement
  (``SwapSettled``) are clearing payments, and its ``InstrumentExpired`` closes the series.

:meth:`Fold.state_hash` must equal the live engine's hash at the same event: that is the test
of the whole design.

Two folds, one state: :class:`Fold` is the reference (every rule in Python, above);
:class:`CompiledFold` runs the hot rules (fees, spot fills, order numbering, resting,
cancelling and amending, deposits, withdrawals, the kinds without a rule) in C
(:mod:`exchange.store._fold`) on the same state, and every other rule through the reference's
own code, in sequence order: the same state, ``state_hash`` and ``to_json`` after every event,
and a malformed event refused with the same :class:`FoldError`. A replay reads a log straight
into it (:meth:`Fold.fold_store`: the typed fields of each batch parsed in C from its stored
form, the compact token stream, into the records the compiled rules take, no Python object per
event and no batch expanded back into JSON), and so does the journal (:meth:`Fold.apply_stored`
of the form it stores). ``session.replay``, ``state_at``, ``verify``'s
replay and the journal use :data:`DEFAULT_FOLD` (``compiled``); the reference is selected with
``fold="reference"`` (``replay``, ``state_at``), :func:`fold_class`, or for a whole process
(the journaller's included) with the environment variable ``GPUEX_FOLD=reference``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import orjson

from exchange.core import events as ev
from exchange.core.state import POOLS, canonical_state, instrument_state, state_hash
from exchange.risk.contracts import (
    COLLATERAL,
    Contracts,
    Posted,
    add_to_contract,
    drop_instrument,
    held,
    move_posted,
    state_of,
)
from exchange.risk.variation import mtm_change
from exchange.store.compact import expand


class FoldError(ValueError):
    """An event that cannot be folded into the state: ``seq`` names it."""

    def __init__(self, seq: Any, reason: str) -> None:
        self.seq = seq
        self.reason = reason
        super().__init__(f"seq {seq!r}: {reason}")

    def __reduce__(self):  # rebuilt from its fields where it crosses processes (journaller)
        return type(self), (self.seq, self.reason)


#: What a rule raises on an event it cannot fold (a forged log): a :class:`FoldError`.
_FOLDING_ERRORS = (ArithmeticError, AttributeError, LookupError, TypeError, ValueError)


def _fold_error(row: Any, exc: Exception) -> FoldError:
    """The :class:`FoldError` of ``row`` (the row being folded) failing with ``exc``."""
    seq = row[0] if isinstance(row, tuple) and row else None
    return FoldError(seq, f"the event cannot be folded ({type(exc).__name__}: {exc})")


class Fold:
    """Exchange state rebuilt from events: the reference fold (every rule in Python)."""

    def __init__(self) -> None:
        self.seq = 0
        self.t = 0
        self.cash: dict[str, int] = {}
        self.positions: dict[str, dict[str, int]] = {}
        self.pools = {name: 0 for name in POOLS}
        self.deposited = 0
        self.withdrawn = 0
        self.last_price: dict[str, int | None] = {}
        self.kind: dict[str, str] = {}  # instrument -> spot | perp | rvs | cds
        self.mark: dict[str, int | None] = {}
        self.funding_cum: dict[str, int] = {}
        self.expired: dict[str, bool] = {}
        self.basis: dict[str, dict[str, int]] = {}  # account -> RVS premium / CDS spread basis
        self.indices: dict[str, int] = {}
        self.tick_value: dict[str, int] = {}
        self.unit_value: dict[str, int] = {}
        self.periods_left: dict[str, int] = {}
        self.vm_basis: dict[str, dict[str, int]] = {}
        self.calls: dict[str, list[int]] = {}
        self.defaulted: list[str] = []
        self.contributions: dict[str, int] = {}
        self.ratings: dict[str, str] = {}  # account -> its rating, once it has changed
        self.contracts: Contracts | None = None  # bilateral contracts, once the books open
        self.posted: Posted = {}  # bilateral collateral, (poster, receiver) -> amount
        # instrument -> order_id -> [side, price, account, qty, priority seq]
        self.books: dict[str, dict[int, list]] = {}
        self.next_order_id = 1
        self._apply = {
            ev.INSTRUMENT_LISTED: self._listed,
            ev.ACCOUNT_OPENED: self._opened,
            ev.DEPOSIT: self._deposit,
            ev.WITHDRAWAL: self._withdrawal,
            ev.FEE: self._fee,
            ev.FILL: self._fill,
            ev.ORDER_ACCEPTED: self._numbered,
            ev.ORDER_REJECTED: self._numbered,
            ev.ORDER_RESTED: self._rested,
            ev.ORDER_CANCELLED: self._cancelled,
            ev.ORDER_AMENDED: self._amended,
            ev.INDEX_PUBLISHED: self._index,
            ev.MARK_PRICE: self._marked,
            ev.FUNDING_RATE: self._funding_rate,
            ev.FUNDING_PAID: self._funding_paid,
            ev.PREMIUM_PAID: self._cleared,
            ev.SWAP_SETTLED: self._cleared,
            ev.INSTRUMENT_EXPIRED: self._expired,
            ev.VARIATION_MARGIN: self._variation,
            ev.COLLATERAL_CALL: self._called,
            ev.CALL_INCREASED: self._call_changed,
            ev.CALL_REDUCED: self._call_changed,
            ev.CALL_CURED: self._call_cured,
            ev.DEFAULT: self._default,
            ev.POOL_FUNDED: self._pool_funded,
            ev.FUND_CONTRIBUTION: self._contribution,
            ev.CLOSE_OUT: self._numbered,
            ev.DELEVERAGED: self._deleveraged,
            ev.AUCTION_AWARD: self._deleveraged,  # the same move, at the auction price
            ev.WATERFALL_DRAW: self._draw,
            ev.DEFAULT_FUND_LOSS: self._fund_loss,
            ev.HAIRCUT: self._haircut,
            ev.RATING_CHANGED: self._rated,
            ev.COLLATERAL_POSTED: self._collateral_posted,
            ev.PROTECTION_TERMINATED: self._terminated,
            ev.COLLATERAL_APPLIED: self._collateral_applied,
            ev.TERMINATION_PAID: self._termination_paid,
            ev.RECOVERY_PAID: self._recovery_paid,
            ev.REHEDGED: self._rehedged,
        }

    def apply(
        self,
        seq: int,
        t: int,
        kind: str,
        instrument: str | None,
        account: str | None,
        order_id: int | None,
        side: str | None,
        price: int | None,
        qty: int | None,
        amount: int | None,
        counterparty: str | None = None,
        counter_order_id: int | None = None,
        *_rest: Any,
    ) -> None:
        """Fold one event, given as its typed fields (an ``Event`` unpacked, or a store row)."""
        if seq != self.seq + 1:
            raise ValueError(f"events out of order: got seq {seq} after {self.seq}")
        self.seq = seq
        self.t = t
        handler = self._apply.get(kind)
        if handler is not None:
            handler(
                seq,
                instrument,
                account,
                order_id,
                side,
                price,
                qty,
                amount,
                counterparty,
                counter_order_id,
            )

    def apply_all(self, rows) -> Fold:
        """Fold an iterable of rows/events; returns ``self``.

        Raises:
            FoldError: an event cannot be folded (a log whose rows were forged consistently,
                so that the store's checks pass: an unknown account, a missing quantity...),
                naming its seq. Errors of the rows' source (a damaged file) pass unchanged.
        """
        apply = self.apply
        row = None
        try:
            for row in rows:
                apply(*row)
        except _FOLDING_ERRORS as exc:
            if isinstance(exc, UnicodeDecodeError) or row is None:
                raise  # from reading, not folding
            raise _fold_error(row, exc) from exc
        return self

    def apply_stored(self, stored: bytes, first: int, count: int) -> Fold:
        """Fold a batch given as its stored form (``compact(blob)``, see
        :mod:`exchange.store.compact`; ``count`` events of seqs ``first``...): the events of
        its blob decoded whole and folded by :meth:`apply_all`. Raises as :meth:`apply_all`,
        ``ValueError`` if the blob is not ``count`` lines and
        :class:`~exchange.store.compact.CompactError` if ``stored`` does not expand."""
        return self.apply_all(blob_events(expand(stored), count))

    def fold_store(self, store: Any, first: int, last: int) -> Fold:
        """Fold the events ``first..last`` of ``store`` (an open
        :class:`~exchange.store.event_store.EventStore`, read checked or not as it reads);
        returns ``self``. Raises as :meth:`apply_all`, and the store's errors unchanged."""
        return self.apply_all(store.rows(first, last))

    # ------------------------------------------------------------------ rules
    def _listed(self, seq, instrument, account, order_id, side, price, qty, amount, *_):
        self.tick_value[instrument] = amount  # InstrumentListed carries the tick value
        self.unit_value[instrument] = 0
        self.periods_left[instrument] = 0
        self.books[instrument] = {}
        self.last_price[instrument] = None
        self.kind[instrument] = side  # InstrumentListed carries the kind in ``side``
        self.mark[instrument] = None
        self.funding_cum[instrument] = 0
        self.expired[instrument] = False

    def _opened(self, seq, instrument, account, *_):
        self.cash[account] = 0
        self.positions[account] = {}
        self.basis[account] = {}
        self.vm_basis[account] = {}

    def _deposit(self, seq, instrument, account, order_id, side, price, qty, amount, *_):
        self.cash[account] += amount
        self.deposited += amount

    def _withdrawal(self, seq, instrument, account, order_id, side, price, qty, amount, *_):
        self.cash[account] += amount
        self.withdrawn -= amount

    def _fee(self, seq, instrument, account, order_id, side, price, qty, amount, *_):
        self.cash[account] += amount
        self.pools["fees"] -= amount

    def _fill(
        self, seq, instrument, account, order_id, side, price, qty, amount, maker, maker_order
    ):
        delta = qty if side == "buy" else -qty
        self.cash[account] += amount
        self.cash[maker] -= amount
        kind = self.kind[instrument]
        change = 0
        if kind != "spot":
            change = mtm_change(
                kind,
                delta,
                price,
                self.tick_value[instrument],
                self.unit_value[instrument],
                self.periods_left[instrument],
            )
        self._move(instrument, account, maker, delta, price, change)
        if kind == "rvs" and self.contracts is not None:
            add_to_contract(self.contracts, account, maker, instrument, delta, price * delta)
        self.last_price[instrument] = price
        book = self.books[instrument]
        order = book[maker_order]
        order[3] -= qty
        if order[3] == 0:
            del book[maker_order]

    def _index(self, seq, instrument, account, order_id, side, price, *_):
        self.indices[instrument] = price

    def _marked(self, seq, instrument, account, order_id, side, price, qty, amount, *_):
        self.mark[instrument] = price
        self.unit_value[instrument] = amount
        if qty is not None:
            self.periods_left[instrument] = qty

    def _variation(self, seq, instrument, account, order_id, side, price, qty, amount, *_):
        self.cash[account] += amount
        self.pools["clearing"] -= amount
        settled = self.vm_basis[account].get(instrument, 0) + amount
        if settled:
            self.vm_basis[account][instrument] = settled
        else:
            self.vm_basis[account].pop(instrument, None)

    def _called(self, seq, instrument, account, order_id, side, price, qty, amount, *_):
        self.calls[account] = [amount, self.t]

    def _call_changed(self, seq, instrument, account, order_id, side, price, qty, amount, *_):
        # CallIncreased or CallReduced: the amount due changes, the deadline does not
        self.calls[account][0] = amount

    def _call_cured(self, seq, instrument, account, *_):
        del self.calls[account]

    def _default(self, seq, instrument, account, *_):
        self.calls.pop(account, None)
        self.defaulted.append(account)

    def _rated(self, seq, instrument, account, order_id, side, *_):
        if not isinstance(side, str) or not side or account not in self.cash:
            raise ValueError("a RatingChanged without an opened account or a new rating")
        self.ratings[account] = side

    def _pool_funded(self, seq, instrument, account, order_id, side, price, qty, amount, *_):
        if side == COLLATERAL and self.contracts is None:  # a bilateral session's books open
            self.contracts = {}
            self.pools.setdefault(COLLATERAL, 0)
        self.pools[side] += amount
        self.deposited += amount

    # ---- bilateral clearing (exchange.risk.bilateral)
    def _collateral_posted(
        self, seq, instrument, account, order_id, side, price, qty, amount, receiver, *_
    ):
        self.cash[account] -= amount
        self.pools[COLLATERAL] += amount
        move_posted(self.posted, account, receiver, amount)

    def _collateral_applied(
        self, seq, instrument, account, order_id, side, price, qty, amount, defaulter, *_
    ):
        move_posted(self.posted, defaulter, account, -amount)
        self.pools[COLLATERAL] -= amount
        self.cash[account] += amount

    def _termination_paid(
        self, seq, instrument, account, order_id, side, price, qty, amount, defaulter, *_
    ):
        self.cash[account] += amount
        self.cash[defaulter] -= amount

    def _recovery_paid(
        self, seq, instrument, account, order_id, side, price, qty, amount, defaulter, *_
    ):
        # the defaulter's cash at the exchange pays first, the estate outside the rest
        from_estate = min(amount, max(0, self.cash[defaulter]))
        self.cash[defaulter] -= from_estate
        self.cash[account] += amount
        self.deposited += amount - from_estate

    def _terminated(
        self, seq, instrument, account, order_id, side, price, qty, amount, defaulter, *_
    ):
        lots, basis = held(self.contracts, account, defaulter, instrument)
        if lots != qty:
            raise ValueError(f"a termination of {qty} lots of a contract of {lots}")
        add_to_contract(self.contracts, account, defaulter, instrument, -lots, -basis)
        self._shift(account, instrument, -lots, -basis)
        self._shift(defaulter, instrument, lots, basis)

    def _rehedged(self, seq, instrument, account, order_id, side, price, qty, amount, dealer, *_):
        self.cash[account] += amount
        self.cash[dealer] -= amount
        add_to_contract(self.contracts, account, dealer, instrument, qty, price)
        self._shift(account, instrument, qty, price)
        self._shift(dealer, instrument, -qty, -price)

    def _shift(self, name, instrument, lots, basis):
        for book, change in ((self.positions[name], lots), (self.basis[name], basis)):
            book[instrument] = book.get(instrument, 0) + change

    def _contribution(self, seq, instrument, account, order_id, side, price, qty, amount, *_):
        self.cash[account] += amount
        self.pools["default_fund"] -= amount
        self.contributions[account] = self.contributions.get(account, 0) - amount

    def _deleveraged(
        self, seq, instrument, account, order_id, side, price, qty, amount, defaulter, *_
    ):
        self._move(instrument, account, defaulter, qty, price, amount)

    def _move(self, instrument, receiver, giver, delta, price, change):
        """The fold's ``variation.move_lots``: positions, premium basis, VM basis."""
        for name, sign in ((receiver, 1), (giver, -1)):
            positions = self.positions[name]
            positions[instrument] = positions.get(instrument, 0) + sign * delta
            if change:
                vm = self.vm_basis[name]
                vm[instrument] = vm.get(instrument, 0) + sign * change
            if self.kind[instrument] in ("rvs", "cds"):  # a CDS's spread basis, as a swap's
                basis = self.basis[name]
                basis[instrument] = basis.get(instrument, 0) + sign * price * delta

    def _draw(self, seq, instrument, account, order_id, side, price, qty, amount, *_):
        self.cash[account] += amount
        if side == "own":
            self.pools["default_fund"] -= amount
            self.contributions[account] -= amount
        else:
            self.pools[side] -= amount

    def _fund_loss(
        self, seq, instrument, account, order_id, side, price, qty, amount, defaulter, *_
    ):
        self.contributions[account] -= amount
        self.pools["default_fund"] -= amount
        self.cash[defaulter] += amount

    def _haircut(self, seq, instrument, account, order_id, side, price, qty, amount, defaulter, *_):
        self.cash[account] += amount
        self.cash[defaulter] -= amount

    def _funding_rate(self, seq, instrument, account, order_id, side, price, qty, amount, *_):
        self.funding_cum[instrument] = amount

    def _funding_paid(self, seq, instrument, account, order_id, side, price, qty, amount, *_):
        self.cash[account] += amount
        self.pools["funding"] -= amount

    def _cleared(self, seq, instrument, account, order_id, side, price, qty, amount, *_):
        self.cash[account] += amount
        self.pools["clearing"] -= amount

    def _expired(self, seq, instrument, *_):
        for name in self.positions:
            self.positions[name].pop(instrument, None)
            self.basis[name].pop(instrument, None)
            self.vm_basis[name].pop(instrument, None)
        if self.contracts is not None:
            drop_instrument(self.contracts, instrument)
        self.expired[instrument] = True

    def _numbered(self, seq, instrument, account, order_id, *_):
        self.next_order_id = order_id + 1

    def _rested(self, seq, instrument, account, order_id, side, price, qty, amount, *_):
        self.books[instrument][order_id] = [side, price, account, qty, seq]

    def _cancelled(self, seq, instrument, account, order_id, *_):
        self.books[instrument].pop(order_id, None)

    def _amended(self, seq, instrument, account, order_id, side, price, qty, amount, *_):
        book = self.books[instrument]
        order = book[order_id]
        if price == order[1] and qty <= order[3]:
            order[3] = qty
        else:
            del book[order_id]

    # ------------------------------------------------------------------ state
    def resting(self, instrument: str) -> list[tuple[str, int, int, str, int]]:
        """Resting orders of one instrument in priority order:
        ``(side, price, order_id, account, qty)``."""
        orders = self.books[instrument]

        def priority(item):
            order_id, (side, price, _account, _qty, rested) = item
            return (0, -price, rested) if side == "buy" else (1, price, rested)

        return [
            (side, price, order_id, account, qty)
            for order_id, (side, price, account, qty, _) in sorted(orders.items(), key=priority)
        ]

    def canonical_state(self) -> dict[str, Any]:
        """The state in the canonical shape of :mod:`exchange.core.state`."""
        return canonical_state(
            t=self.t,
            accounts={
                a: (self.cash[a], self.positions[a], self.basis[a], self.vm_basis[a])
                for a in self.cash
            },
            calls=self.calls,
            defaulted=self.defaulted,
            contributions=self.contributions,
            ratings=self.ratings,
            pools=self.pools,
            deposited=self.deposited,
            withdrawn=self.withdrawn,
            instruments={
                name: instrument_state(
                    self.kind[name],
                    self.last_price[name],
                    self.mark[name],
                    self.funding_cum[name],
                    self.expired[name],
                )
                for name in self.last_price
            },
            indices=self.indices,
            books={name: self.resting(name) for name in self.books},
            next_order_id=self.next_order_id,
            bilateral=None if self.contracts is None else state_of(self.contracts, self.posted),
        )

    def state_hash(self) -> str:
        """SHA-256 of the canonical state."""
        return state_hash(self.canonical_state())

    # ------------------------------------------------------------------ snapshots
    def to_json(self) -> str:
        """Serialise the fold (a snapshot; restore with :meth:`from_json`)."""
        return orjson.dumps(
            {
                "seq": self.seq,
                "t": self.t,
                "cash": self.cash,
                "positions": self.positions,
                "pools": self.pools,
                "deposited": self.deposited,
                "withdrawn": self.withdrawn,
                "last_price": self.last_price,
                "kind": self.kind,
                "mark": self.mark,
                "funding_cum": self.funding_cum,
                "expired": self.expired,
                "basis": self.basis,
                "indices": self.indices,
                "tick_value": self.tick_value,
                "unit_value": self.unit_value,
                "periods_left": self.periods_left,
                "vm_basis": self.vm_basis,
                "calls": self.calls,
                "defaulted": self.defaulted,
                "contributions": self.contributions,
                "ratings": self.ratings,
                "books": {
                    name: [[oid, *order] for oid, order in orders.items()]
                    for name, orders in self.books.items()
                },
                "next_order_id": self.next_order_id,
                # only once open: a cleared session's snapshots stay as they were
                **(
                    {}
                    if self.contracts is None
                    else {"bilateral": state_of(self.contracts, self.posted)}
                ),
            },
            option=orjson.OPT_SORT_KEYS,
        ).decode()

    @classmethod
    def from_snapshot(cls, seq: int, state_json: str, state_hash: str) -> Fold:
        """The fold a stored snapshot ``(seq, state_json, state_hash)`` holds, once it is
        found to be the state it claims: :class:`FoldError` naming ``seq`` if the JSON is
        not a fold's, is of another seq, or does not hash to ``state_hash`` (an edited
        snapshot would otherwise replay into a wrong state without a word)."""
        try:
            fold = cls.from_json(state_json)
            digest = fold.state_hash()
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
            raise FoldError(
                seq, f"the snapshot here is damaged ({type(exc).__name__}: {exc})"
            ) from None
        if fold.seq != seq or digest != state_hash:
            raise FoldError(
                seq, "the snapshot here is damaged (its state does not hash as recorded)"
            )
        return fold

    @classmethod
    def from_json(cls, text: str) -> Fold:
        """Rebuild a fold from :meth:`to_json` output."""
        data = orjson.loads(text)
        fold = cls()
        fold.seq = data["seq"]
        fold.t = data["t"]
        fold.cash = data["cash"]
        fold.positions = data["positions"]
        fold.pools = data["pools"]
        fold.deposited = data["deposited"]
        fold.withdrawn = data["withdrawn"]
        fold.last_price = data["last_price"]
        fold.kind = data["kind"]
        fold.mark = data["mark"]
        fold.funding_cum = data["funding_cum"]
        fold.expired = data["expired"]
        fold.basis = data["basis"]
        fold.indices = data["indices"]
        fold.tick_value = data["tick_value"]
        fold.unit_value = data["unit_value"]
        fold.periods_left = data["periods_left"]
        fold.vm_basis = data["vm_basis"]
        fold.calls = data["calls"]
        fold.defaulted = data["defaulted"]
        fold.contributions = data["contributions"]
        fold.ratings = data.get("ratings", {})  # snapshots written before ratings existed
        books = data.get("bilateral")  # None: a cleared session (or one from before)
        if books is not None:
            fold.contracts = {
                (a, b, i): [lots, basis] for a, b, i, lots, basis in books["contracts"]
            }
            fold.posted = {(p, r): amount for p, r, amount in books["collateral"]}
        fold.books = {
            name: {row[0]: row[1:] for row in rows} for name, rows in data["books"].items()
        }
        fold.next_order_id = data["next_order_id"]
        return fold


# ---------------------------------------------------------------------- the compiled fold
def _kernel_module() -> Any:
    """``exchange.store._fold`` (the compiled rules), or None if it is not built."""
    try:
        from exchange.store import _fold
    except ImportError:  # pragma: no cover - the extension is part of every install
        return None
    return _fold


_KERNEL = _kernel_module()


def blob_events(blob: bytes, count: int) -> list[tuple]:
    """The ``count`` events of a batch blob, each decoded whole (the tuple of its fields).

    Raises:
        ValueError: the blob is not ``count`` lines of JSON.
    """
    lines = blob.split(b"\n")
    if lines.pop() != b"" or len(lines) != count:
        raise ValueError(f"a batch blob of {count} events holds {len(lines)} lines")
    return [tuple(orjson.loads(line)) for line in lines]


def _typed_line(line: bytes) -> tuple:
    """The typed fields of one event line, decoded by orjson (the lines the C parser of
    :meth:`CompiledFold.apply_blob` leaves: an escape in a string, a number past 18 digits)."""
    return tuple(orjson.loads(line)[: len(ev.TYPED_FIELDS)])


def _rule_names(fold: Fold) -> dict[str, str]:
    """Each kind with a rule -> its rule's name, when the rule is the reference's own
    (a subclass's own rule is never swapped for the compiled one of the same name)."""
    names = {}
    for kind, handler in fold._apply.items():
        function = handler.__func__
        name = function.__name__
        names[kind] = name if getattr(Fold, name, None) is function else "python"
    return names


@contextlib.contextmanager
def _fold_errors(kernel: Any) -> Iterator[None]:
    """A compiled rule's failure as :meth:`Fold.apply_all`'s :class:`FoldError`, naming the
    event the kernel was folding (``kernel.current``); an error from reading, not folding,
    unchanged."""
    try:
        yield
    except _FOLDING_ERRORS as exc:
        row = kernel.current
        if isinstance(exc, UnicodeDecodeError) or row is None:
            raise  # from reading, not folding
        raise _fold_error(row, exc) from exc


class CompiledFold(Fold):
    """:class:`Fold` with its hot rules run in C (:mod:`exchange.store._fold`) on the same
    state; any other rule, and any event a compiled rule's conditions do not cover, through
    :meth:`Fold.apply` in sequence order. Same state, same ``state_hash`` and ``to_json``
    after every event as the reference; without the extension, the reference itself."""

    def __init__(self) -> None:
        super().__init__()
        self._kernel = None if _KERNEL is None else _KERNEL.Kernel(_rule_names(self))

    def apply_all(self, rows) -> Fold:
        """:meth:`Fold.apply_all`, the hot rules in C."""
        kernel = self._kernel
        if kernel is None:
            return super().apply_all(rows)
        with _fold_errors(kernel):
            kernel.apply_rows(self, rows)
        return self

    def apply_blob(self, blob: bytes, first: int, count: int) -> Fold:
        """Fold a batch given as its stored blob (``encode(e) + b"\\n"`` per event: ``count``
        events of seqs ``first``, ``first + 1``...), as a replay folds it: the typed fields
        parsed in C (:meth:`Kernel.parse <exchange.store._fold.Kernel.parse>`, the lines it
        cannot read decoded by orjson) into the records the compiled rules take, no Python
        object per event. A blob the parser finds not to be those events (or without the
        extension) is decoded whole and folded by :meth:`apply_all`: its errors then. Raises
        as :meth:`apply_all` (:class:`FoldError` naming the seq)."""
        kernel = self._kernel
        events = None
        if kernel is not None:
            try:
                events = kernel.parse(blob, first, count, len(ev.TYPED_FIELDS), _typed_line)
            except (orjson.JSONDecodeError, TypeError, ValueError, IndexError):
                events = None
        if events is None:
            return self.apply_all(blob_events(blob, count))
        return self._apply_parsed(events, 0, len(events))

    def apply_stored(self, stored: bytes, first: int, count: int) -> Fold:
        """:meth:`apply_blob` of a batch given as its stored form (``compact(blob)``), read
        without expanding it (:meth:`Kernel.parse_compact
        <exchange.store._fold.Kernel.parse_compact>`: the same records as
        :meth:`Kernel.parse <exchange.store._fold.Kernel.parse>` of the blob, a string read
        once per batch, an int from its varint). Where that reader is not sure of the batch
        (or without the extension): ``apply_blob(expand(stored), first, count)``, its
        verdicts and errors. Raises as :meth:`apply_blob`, and
        :class:`~exchange.store.compact.CompactError` if ``stored`` does not expand."""
        kernel = self._kernel
        events = None
        if kernel is not None:
            try:
                events = kernel.parse_compact(
                    stored, first, count, len(ev.TYPED_FIELDS), _typed_line
                )
            except (orjson.JSONDecodeError, TypeError, ValueError, IndexError):
                events = None
        if events is None:
            return self.apply_blob(expand(stored), first, count)
        return self._apply_parsed(events, 0, len(events))

    def _apply_parsed(self, events: Any, start: int, stop: int) -> Fold:
        """Fold the parsed records ``start..stop`` of ``events`` (a ``Kernel.parse`` batch),
        a rule's failure as :meth:`apply_all`'s :class:`FoldError`."""
        kernel = self._kernel
        kernel.current = None
        with _fold_errors(kernel):
            kernel.apply_batch(self, events, start, stop)
        return self

    def fold_store(self, store: Any, first: int, last: int) -> Fold:
        """:meth:`Fold.fold_store` with each batch's typed fields parsed in C into the
        records the compiled rules take (``EventStore.rows(..., parse=...)``), from its
        stored form (``parse_compact``: the stored bytes are not expanded) wherever that
        reader is sure of it, else from its blob."""
        kernel = self._kernel
        if kernel is None:
            return super().fold_store(store, first, last)
        rows = store.rows(first, last, parse=kernel.parse, parse_stored=kernel.parse_compact)
        for events, start, stop in rows:
            if type(events) is list:  # a batch the C parser left to Python: its rows
                self.apply_all(events[start:stop])
            else:
                self._apply_parsed(events, start, stop)
        return self


#: The folds by name: ``compiled`` (:class:`CompiledFold`) and ``reference`` (:class:`Fold`).
FOLDS: dict[str, type[Fold]] = {"compiled": CompiledFold, "reference": Fold}

#: The fold replays, ``state_at``, ``verify`` and the journal use when not told which:
#: ``compiled``, or the environment's ``GPUEX_FOLD`` (``reference`` to check the fast path
#: against its reference on real logs).
DEFAULT_FOLD = os.environ.get("GPUEX_FOLD", "compiled")


def fold_class(name: str | None = None) -> type[Fold]:
    """The fold class named ``name`` (None: :data:`DEFAULT_FOLD`, read at the call).

    Raises:
        ValueError: an unknown name.
    """
    name = DEFAULT_FOLD if name is None else name
    try:
        return FOLDS[name]
    except KeyError:
        raise ValueError(f"unknown fold {name!r}; folds: {', '.join(FOLDS)}") from None
