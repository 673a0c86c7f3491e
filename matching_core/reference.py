"""The reference order book: the specification in plain Python.

This book is the oracle the Cython :class:`matching_core.OrderBook` is tested against. It is
written to be read, not to be fast: each rule of ``docs/matching_core.md`` appears once, in the
order the specification states it. Prices are ticks, quantities lots, ids and accounts ints.

Levels are ``SortedDict`` maps from price to an insertion-ordered ``dict`` of resting orders (a
Python ``dict`` keeps insertion order and deletes in O(1), which is exactly a FIFO queue with
cancel).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from sortedcontainers import SortedDict

from matching_core.codes import (
    CANCEL_DTYPE,
    DEFAULT_MAX_PRICE,
    DEFAULT_MAX_QTY,
    FILL_DTYPE,
    MESSAGE_DTYPE,
    REPORT_DTYPE,
    RESTING_DTYPE,
    Op,
    OrderType,
    Reject,
    Side,
    StpMode,
    TimeInForce,
)


@dataclass
class _Order:
    order_id: int
    account: int
    side: int
    price: int
    qty: int
    post_only: bool
    entry: int = 0  # when it entered the book: a value of _ENTRIES (ReferenceBook.orders_of)


#: Every order that enters a book -- a rest, or the re-entry of an amend that lost priority --
#: takes the next value, whichever book it enters: one process-wide sequence, so entries of
#: orders in different books compare (as ``OrderBook``'s; only their order means anything).
_ENTRIES = itertools.count()


class ReferenceBook:
    """A price-time-priority book with the same API and behaviour as ``OrderBook``.

    Args:
        max_price: largest accepted price, in ticks.
        max_qty: largest accepted order quantity, in lots.
        stp: default self-trade-prevention mode (:class:`StpMode`) of every account.
    """

    def __init__(
        self,
        max_price: int = DEFAULT_MAX_PRICE,
        max_qty: int = DEFAULT_MAX_QTY,
        stp: int = StpMode.NONE,
    ) -> None:
        self.max_price = int(max_price)
        self.max_qty = int(max_qty)
        self._default_stp = int(StpMode(stp))
        self._stp: dict[int, int] = {}
        self._orders: dict[int, _Order] = {}
        # bids keyed by -price so that the first key is always the best level on both sides
        self._levels = (SortedDict(), SortedDict())
        self.messages_processed = 0
        self._fills: list[tuple] = []
        self._cancels: list[tuple] = []
        self.last_filled = 0
        self.last_resting = 0
        self.last_cancelled = 0

    # ------------------------------------------------------------------ configuration
    def set_stp(self, account: int, mode: int) -> None:
        """Set the self-trade-prevention mode of one account."""
        self._stp[int(account)] = int(StpMode(mode))

    def stp(self, account: int) -> int:
        """The self-trade-prevention mode in force for ``account``."""
        return self._stp.get(int(account), self._default_stp)

    # ------------------------------------------------------------------ per-call API
    def submit(
        self,
        order_id: int,
        account: int,
        side: int,
        price: int,
        qty: int,
        tif: int = TimeInForce.GTC,
        post_only: bool = False,
    ) -> int:
        """Add a limit order; returns a :class:`Reject` code (0 = accepted)."""
        self._begin()
        return self._end(
            self._add(order_id, account, side, OrderType.LIMIT, price, qty, tif, int(post_only))
        )

    def submit_market(
        self, order_id: int, account: int, side: int, qty: int, protection: int = 0
    ) -> int:
        """Add a market order (protection price in ticks, 0 = none); returns a Reject code."""
        self._begin()
        return self._end(
            self._add(order_id, account, side, OrderType.MARKET, protection, qty, 0, 0)
        )

    def cancel(self, order_id: int) -> int:
        """Cancel a resting order; returns a Reject code."""
        self._begin()
        return self._end(self._cancel(order_id))

    def amend(self, order_id: int, price: int, qty: int) -> int:
        """Amend a resting order to ``price`` ticks and ``qty`` open lots; returns a Reject code."""
        self._begin()
        return self._end(self._amend(order_id, price, qty))

    @property
    def fill_count(self) -> int:
        return len(self._fills)

    @property
    def fills(self) -> np.ndarray:
        """The fills of the last call (or batch), as ``FILL_DTYPE``."""
        return np.array(self._fills, dtype=FILL_DTYPE)

    @property
    def stp_cancels(self) -> np.ndarray:
        """Resting orders removed by self-trade prevention in the last call (or batch)."""
        return np.array(self._cancels, dtype=CANCEL_DTYPE)

    # ------------------------------------------------------------------ batch API
    def process(self, messages: np.ndarray, reports: np.ndarray | None = None) -> np.ndarray:
        """Run a ``MESSAGE_DTYPE`` array through the book; returns its fills (``FILL_DTYPE``)."""
        if messages.dtype != MESSAGE_DTYPE:
            raise TypeError("messages must have dtype matching_core.MESSAGE_DTYPE")
        if reports is not None and (reports.dtype != REPORT_DTYPE or len(reports) != len(messages)):
            raise ValueError("reports must be a REPORT_DTYPE array as long as messages")
        fills: list[tuple] = []
        cancels: list[tuple] = []
        for i, m in enumerate(messages.tolist()):
            order_id, account, price, qty, op, side, otype, tif, post_only = m
            self._fills, self._cancels = [], []
            self._msg_index = i
            self._zero_outcome()
            if op == Op.ADD:
                code = self._add(order_id, account, side, otype, price, qty, tif, post_only)
            elif op == Op.CANCEL:
                code = self._cancel(order_id)
            elif op == Op.AMEND:
                code = self._amend(order_id, price, qty)
            else:
                code = Reject.INVALID_OP
            self.messages_processed += 1
            fills.extend(self._fills)
            cancels.extend(self._cancels)
            if reports is not None:
                reports[i] = (int(code), self.last_filled, self.last_resting, self.last_cancelled)
        self._fills, self._cancels = fills, cancels
        return np.array(fills, dtype=FILL_DTYPE)

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self._orders)

    def best_bid(self) -> int | None:
        """Best bid in ticks, or None."""
        bids = self._levels[Side.BUY]
        return -bids.peekitem(0)[0] if bids else None

    def best_ask(self) -> int | None:
        """Best ask in ticks, or None."""
        asks = self._levels[Side.SELL]
        return asks.peekitem(0)[0] if asks else None

    def order_qty(self, order_id: int) -> int:
        """Open lots of a resting order, 0 if it is not resting."""
        order = self._orders.get(int(order_id))
        return order.qty if order else 0

    def level_qty(self, side: int, price: int) -> int:
        """Total lots resting at ``price`` on ``side``."""
        level = self._levels[side].get(self._key(side, price))
        return sum(o.qty for o in level.values()) if level else 0

    def level_count(self, side: int) -> int:
        """Number of non-empty price levels on ``side``."""
        return len(self._levels[side])

    def depth(self, side: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The best ``n`` levels of ``side``: (prices in ticks, lots), best first."""
        prices, qtys = [], []
        for key, level in self._levels[side].items()[:n]:
            prices.append(self._key(side, key))
            qtys.append(sum(o.qty for o in level.values()))
        return np.array(prices, dtype=np.int64), np.array(qtys, dtype=np.int64)

    def best_levels(self, side: int, n: int) -> tuple[tuple[int, int], ...]:
        """The best ``n`` levels of ``side`` as ``(price, qty)`` tuples (ticks, lots), best
        first: ``depth``'s values as Python ints."""
        if side not in (Side.BUY, Side.SELL):
            raise ValueError(f"side must be 0 (buy) or 1 (sell), got {side}")
        if n < 0:
            raise ValueError("n must be >= 0")
        return tuple(
            (self._key(side, key), sum(o.qty for o in level.values()))
            for key, level in self._levels[side].items()[:n]
        )

    def top(self, n: int) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
        """The best ``n`` levels of each side: ``(bids, asks)``, each as ``best_levels``
        gives it."""
        return self.best_levels(Side.BUY, n), self.best_levels(Side.SELL, n)

    def orders_of(self, account: int | None = None) -> list[tuple[int, int, int, int, int]]:
        """The resting orders of ``account`` (every one when None) in the order they entered
        the book, as ``(entry, order_id, side, price, qty)`` (ticks, open lots). An amend that
        keeps priority keeps its entry; one that loses it re-enters. ``entry`` increases with
        every entry into any book in the process, so several books' lists merge by sorting."""
        # self._orders is keyed in entry order: a rest inserts, a re-entry deletes and inserts
        return [
            (o.entry, o.order_id, o.side, o.price, o.qty)
            for o in self._orders.values()
            if account is None or o.account == account
        ]

    def snapshot(self) -> np.ndarray:
        """Every resting order (``RESTING_DTYPE``): bids best-first, then asks best-first."""
        rows = [
            (o.side, o.price, o.order_id, o.account, o.qty)
            for side in (Side.BUY, Side.SELL)
            for level in self._levels[side].values()
            for o in level.values()
        ]
        return np.array(rows, dtype=RESTING_DTYPE)

    # ------------------------------------------------------------------ the rules
    def _begin(self) -> None:
        self._fills, self._cancels = [], []
        self._msg_index = self.messages_processed
        self._zero_outcome()

    def _end(self, code: int) -> int:
        self.messages_processed += 1
        return int(code)

    def _zero_outcome(self) -> None:
        self.last_filled = self.last_resting = self.last_cancelled = 0

    def _check_qty(self, qty: int) -> int:
        if qty <= 0:
            return Reject.NON_POSITIVE_QTY
        if qty > self.max_qty:
            return Reject.QTY_OUT_OF_RANGE
        return Reject.OK

    def _check_price(self, price: int, allow_zero: bool = False) -> int:
        if price < 0 or (price == 0 and not allow_zero):
            return Reject.NON_POSITIVE_PRICE
        if price > self.max_price:
            return Reject.PRICE_OUT_OF_RANGE
        return Reject.OK

    def _add(self, order_id, account, side, otype, price, qty, tif, post_only) -> int:
        if side not in (Side.BUY, Side.SELL):
            return Reject.INVALID_SIDE
        if otype not in (OrderType.LIMIT, OrderType.MARKET):
            return Reject.INVALID_TYPE
        is_limit = otype == OrderType.LIMIT
        if is_limit and tif not in (TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK):
            return Reject.INVALID_TIF
        if post_only not in (0, 1) or (post_only and not (is_limit and tif == TimeInForce.GTC)):
            return Reject.INVALID_POST_ONLY
        code = self._check_qty(qty) or self._check_price(price, allow_zero=not is_limit)
        if code:
            return code
        if order_id in self._orders:
            return Reject.DUPLICATE_ORDER_ID
        if post_only and self._would_cross(side, price):
            return Reject.POST_ONLY_WOULD_CROSS
        limit = price if (is_limit or price) else None
        if is_limit and tif == TimeInForce.FOK and self._available(account, side, limit) < qty:
            return Reject.FOK_NOT_FILLABLE
        order = _Order(order_id, account, side, price, qty, bool(post_only))
        self._match_and_rest(order, rest=is_limit and tif == TimeInForce.GTC, limit=limit)
        return Reject.OK

    def _cancel(self, order_id) -> int:
        order = self._orders.get(order_id)
        if order is None:
            return Reject.UNKNOWN_ORDER_ID
        self._remove(order)
        self.last_cancelled = order.qty
        return Reject.OK

    def _amend(self, order_id, price, qty) -> int:
        code = self._check_qty(qty) or self._check_price(price)
        if code:
            return code
        order = self._orders.get(order_id)
        if order is None:
            return Reject.UNKNOWN_ORDER_ID
        if price == order.price and qty <= order.qty:
            self.last_cancelled = order.qty - qty
            self.last_resting = qty
            order.qty = qty
            return Reject.OK
        if order.post_only and self._would_cross(order.side, price):
            return Reject.POST_ONLY_WOULD_CROSS
        self._remove(order)
        new = _Order(order.order_id, order.account, order.side, price, qty, order.post_only)
        self._match_and_rest(new, rest=True, limit=price)
        return Reject.OK

    # ------------------------------------------------------------------ mechanics
    @staticmethod
    def _key(side: int, price: int) -> int:
        return -price if side == Side.BUY else price

    @staticmethod
    def _crosses(side: int, limit: int | None, resting_price: int) -> bool:
        """Does an incoming ``side`` order with ``limit`` (None = any price) reach this price?"""
        if limit is None:
            return True
        return resting_price <= limit if side == Side.BUY else resting_price >= limit

    def _opposite_levels(self, side: int):
        """The opposite side's levels, best first, as (price, level) pairs."""
        other = 1 - side
        for key, level in self._levels[other].items():
            yield self._key(other, key), level

    def _would_cross(self, side: int, price: int) -> bool:
        for level_price, _ in self._opposite_levels(side):
            return self._crosses(side, price, level_price)
        return False

    def _available(self, account: int, side: int, limit: int | None) -> int:
        """Lots an incoming order could trade, with self-trade prevention (the FOK test)."""
        mode = self.stp(account)
        total = 0
        for level_price, level in self._opposite_levels(side):
            if not self._crosses(side, limit, level_price):
                break
            for resting in level.values():
                if resting.account == account and mode != StpMode.NONE:
                    if mode == StpMode.CANCEL_RESTING:
                        continue
                    return total
                total += resting.qty
        return total

    def _match_and_rest(self, order: _Order, rest: bool, limit: int | None) -> None:
        mode = self.stp(order.account)
        stopped = False
        remaining = order.qty
        while remaining and not stopped:
            best = next(self._opposite_levels(order.side), None)
            if best is None or not self._crosses(order.side, limit, best[0]):
                break
            resting = next(iter(best[1].values()))
            if resting.account == order.account and mode != StpMode.NONE:
                if mode in (StpMode.CANCEL_RESTING, StpMode.CANCEL_BOTH):
                    self._remove(resting)
                    self._cancels.append(
                        (resting.order_id, resting.account, resting.qty, self._msg_index)
                    )
                stopped = mode in (StpMode.CANCEL_INCOMING, StpMode.CANCEL_BOTH)
                continue
            traded = min(remaining, resting.qty)
            self._fills.append(
                (
                    order.order_id,
                    resting.order_id,
                    order.account,
                    resting.account,
                    resting.price,
                    traded,
                    self._msg_index,
                )
            )
            remaining -= traded
            resting.qty -= traded
            self.last_filled += traded
            if resting.qty == 0:
                self._remove(resting)
        if remaining and rest and not stopped:
            order.qty = remaining
            order.entry = next(_ENTRIES)
            self._orders[order.order_id] = order
            levels = self._levels[order.side]
            key = self._key(order.side, order.price)
            levels.setdefault(key, {})[order.order_id] = order
            self.last_resting = remaining
        else:
            self.last_cancelled += remaining

    def _remove(self, order: _Order) -> None:
        del self._orders[order.order_id]
        levels = self._levels[order.side]
        key = self._key(order.side, order.price)
        level = levels[key]
        del level[order.order_id]
        if not level:
            del levels[key]
