"""Seeded, realistic order-entry streams for tests and benchmarks.

Units: prices are int64 **ticks**, quantities int64 **lots** (as everywhere in
``matching_core``); order ids and accounts are plain int64.

The model (all random draws come from one ``numpy.random.default_rng(seed)`` and are made up
front, vectorised; the only Python loop picks cancel/amend targets among live orders):

* **Mid.** A reference mid price (ticks) does a slow lazy random walk: each message it moves
  one tick up or down with probability ``0.005`` each (over 10**6 messages it wanders about
  +-100 ticks), reflected so it stays at or above 16 ticks. Bids cluster below it, asks above
  it, so the book's touch sits at about ``mid - 1`` / ``mid + 1``; when the mid drifts, newly
  placed orders trade against the stale side.
* **Kinds.** Each message is independently (before the fallback below):

  - 54 %  limit add, GTC: a passive price ``mid -+ G`` ticks with ``G ~ Geometric(0.35)``
    (>= 1; 35 % at one tick from the mid, mean 2.9 ticks: most orders join within a few
    ticks of the touch). 3 % of them are post-only (passive price; still rejected
    ``POST_ONLY_WOULD_CROSS`` if the book has drifted through it), and 6 % are placed
    *through* the mid at ``mid +- Geometric(0.5)`` so they cross and rest their remainder;
  - 34.5 % cancel of a **live** order, chosen uniformly among the orders resting on the book;
  - 10 %  marketable: 45 % market orders (a third of them with a protection price
    3 + Geometric(0.3) ticks beyond the mid), 45 % IOC limits and 10 % FOK limits priced
    ``Geometric(0.4)`` ticks through the mid;
  - 1.5 % amend of a live order: half of them (when the order has more than one lot open)
    reduce the open quantity at the same price (kept in place), the others move the price
    one or two ticks up or down keeping the open quantity (cancel-and-replace).

  When no order is live (the start of the stream) a cancel or amend becomes a passive
  limit add instead.
* **Sides** are 50/50. **Quantities** are ``min(Geometric(0.1), 100)`` lots: 1..100, skewed
  small (mean about 10, median 7). **Accounts** are ``1..accounts`` with Zipf-like weights
  ``1/k**0.8`` (a few busy participants, a long tail), used for self-trade prevention tests.
* **Ids.** The add at message index ``i`` has order id ``i + 1``: unique and increasing.
  Cancels and amends carry the target's id, account and side.

To know which orders are live the generator plays the stream, as it writes it, into a book
(the Cython ``OrderBook`` by default, per-call API): an add that leaves lots resting joins the
live set, a cancel leaves it, and every maker of a fill whose ``order_qty`` dropped to zero
leaves it. Because every book that follows ``docs/matching_core.md`` answers the same way,
the stream is a function of ``(n, seed, mid, accounts)`` only, whichever book is used
(``tests/matching_core/test_streams.py`` checks the Cython and the reference books give the
same bytes); every cancel in the stream is accepted when it is replayed from an empty book
with the default constructor arguments (no self-trade prevention).

Which loop plays the stream: when the generator's book is the Cython ``OrderBook`` and the
extension ``matching_core._streams`` imports (a built tree), :meth:`OrderFlow.take` runs that
extension's compiled loop (``Player``: the live orders, their fields and the id -> position
table in C memory, the book called through its C methods, the messages written in place);
otherwise -- another book (``ReferenceBook``), no extension, or ``OrderFlow(...,
compiled=False)`` -- it runs the plain-Python loop below, the **reference** that defines the
stream's bytes. Both make the same random draws (numpy, vectorised, in the same order) and
give the same bytes chunk after chunk (``tests/matching_core/test_streams_compiled.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from matching_core.codes import MESSAGE_DTYPE, Op, OrderType, Side, TimeInForce

#: Probabilities of the message kinds, in the order limit add, cancel, marketable, amend.
KIND_PROBS = (0.54, 0.345, 0.10, 0.015)

_K_LIMIT, _K_CANCEL, _K_MARKETABLE, _K_AMEND = 0, 1, 2, 3

_MID_STEP_PROB = 0.005  # probability of an up (and of a down) one-tick mid move per message
_MID_FLOOR = 16  # ticks; the mid walk is reflected here
_PASSIVE_P = 0.35  # Geometric parameter of passive offsets (ticks from the mid, >= 1)
_CROSS_P = 0.5  # crossing GTC limits: ticks through the mid
_IOC_P = 0.4  # IOC/FOK limits: ticks through the mid
_PROTECT_P = 0.3  # market protection: 3 + Geometric ticks beyond the mid
_QTY_P = 0.1  # quantity ~ min(Geometric(0.1), 100) lots
_MAX_LOTS = 100
_POST_ONLY_FRAC = 0.03  # of limit adds
_CROSSING_FRAC = 0.06  # of limit adds
_MARKET_FRAC, _IOC_FRAC = 0.45, 0.45  # of marketable orders; the rest are FOK
_PROTECTED_FRAC = 1 / 3  # of market orders
_AMEND_REDUCE_FRAC = 0.5  # of amends


def _default_book() -> Any:
    from matching_core import OrderBook

    return OrderBook()


def _player(book: Any) -> Any:
    """The compiled loop (``matching_core._streams.Player``) for ``book``, or None when the
    book is not the Cython ``OrderBook`` or the extension is not built."""
    try:
        from matching_core import _streams
        from matching_core._book import OrderBook
    except ImportError:
        return None
    if type(book) is not OrderBook:
        return None
    return _streams.Player(book, _AMEND_REDUCE_FRAC)


def generate_stream(
    n: int,
    seed: int = 7,
    *,
    mid: int = 10_000,
    accounts: int = 50,
    book_factory: Callable[[], Any] | None = None,
    compiled: bool | None = None,
) -> np.ndarray:
    """Return ``n`` order-entry messages (a ``MESSAGE_DTYPE`` array) of a seeded order flow.

    ``mid`` is the starting mid price in ticks, ``accounts`` the number of accounts (ids
    ``1..accounts``). ``book_factory`` makes the empty book used to track which orders are
    live (default: the Cython ``OrderBook()``; ``matching_core.ReferenceBook`` works too and
    gives the same stream, much more slowly). See the module docstring for the model and
    :class:`OrderFlow` for ``compiled`` (which loop plays the stream: not what it is).
    Same arguments -> byte-identical array. The first :meth:`OrderFlow.take` of ``n``
    messages of an :class:`OrderFlow` with the same arguments is this array.
    """
    n = int(n)
    if n < 0:
        raise ValueError("n must be >= 0")
    flow = OrderFlow(seed, mid=mid, accounts=accounts, book_factory=book_factory, compiled=compiled)
    return flow.take(n)


class OrderFlow:
    """The seeded order flow of :func:`generate_stream`, generated a chunk at a time.

    ``take(k)`` returns the next ``k`` messages; the walk of the mid, the live orders and
    the book carry over from one chunk to the next, so memory stays in proportion to the
    chunk and the orders resting, not to the stream's length (issue #20: a run's memory is
    flat in its length). The draws of each chunk are vectorised over the chunk, so a stream
    taken in chunks of ``k`` is a function of ``(seed, mid, accounts, k)``: the same
    messages as one :func:`generate_stream` call only for its first chunk.

    ``compiled`` chooses the loop that plays each chunk into the book (the stream's bytes do
    not depend on it): ``None`` (default) the compiled loop (``matching_core._streams``) when
    the book is the Cython ``OrderBook`` and the extension imports, else the Python reference;
    ``False`` always the reference (the differential tests); ``True`` the compiled loop or a
    ``ValueError`` if it cannot run.
    """

    def __init__(
        self,
        seed: int = 7,
        *,
        mid: int = 10_000,
        accounts: int = 50,
        book_factory: Callable[[], Any] | None = None,
        compiled: bool | None = None,
    ) -> None:
        if accounts < 1:
            raise ValueError("accounts must be >= 1")
        if mid < 1:
            raise ValueError("mid must be >= 1 tick")
        self._rng = np.random.default_rng(seed)
        self._walk = int(mid)  # the mid's walk before reflection, at the last message
        self._accounts = accounts
        self._taken = 0  # messages generated so far: the next add's id is this + 1
        self._book = _default_book() if book_factory is None else book_factory()
        self._live: list[int] = []  # ids of resting orders; random pick + swap-remove: O(1)
        self._pos: dict[int, int] = {}  # id -> index in ``_live``
        # id -> [account, side, current price] of each live order (a target's fields)
        self._orders: dict[int, list[int]] = {}
        # the compiled loop, holding its own live orders (the three above stay empty)
        self._player = None if compiled is False else _player(self._book)
        if compiled and self._player is None:
            raise ValueError(
                "compiled=True needs the Cython OrderBook as the book and the built extension"
                " matching_core._streams"
            )

    def live_ids(self) -> set[int]:
        """Ids of the orders live in the generator's book: the only ones a later cancel or
        amend can target."""
        if self._player is not None:
            return self._player.live_ids()
        return set(self._pos)

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` messages (a ``MESSAGE_DTYPE`` array)."""
        n = int(n)
        if n < 0:
            raise ValueError("n must be >= 0")
        rng = self._rng
        accounts = self._accounts
        base = self._taken  # the add at index i of this chunk has id base + i + 1

        # ---- vectorised draws -------------------------------------------------------------
        kind = rng.choice(4, size=n, p=KIND_PROBS).astype(np.uint8)
        steps = rng.choice(
            np.array([-1, 0, 1], dtype=np.int64),
            size=n,
            p=[_MID_STEP_PROB, 1 - 2 * _MID_STEP_PROB, _MID_STEP_PROB],
        )
        walk = self._walk + np.cumsum(steps)
        if n:
            self._walk = int(walk[-1])
        mids = np.where(walk < _MID_FLOOR, 2 * _MID_FLOOR - walk, walk)  # reflect at the floor
        side = rng.integers(0, 2, size=n, dtype=np.uint8)
        sign = np.where(side == Side.BUY, 1, -1).astype(np.int64)  # +1 buy, -1 sell
        weights = 1.0 / np.arange(1, accounts + 1, dtype=np.float64) ** 0.8
        account = rng.choice(accounts, size=n, p=weights / weights.sum()).astype(np.int64) + 1
        qty = np.minimum(rng.geometric(_QTY_P, size=n), _MAX_LOTS).astype(np.int64)

        passive = rng.geometric(_PASSIVE_P, size=n).astype(np.int64)
        crossing = rng.geometric(_CROSS_P, size=n).astype(np.int64)
        through = rng.geometric(_IOC_P, size=n).astype(np.int64)
        protect = 3 + rng.geometric(_PROTECT_P, size=n).astype(np.int64)
        u_sub = rng.random(n)  # sub-kind of a limit add / marketable order
        u_sub2 = rng.random(n)  # protected market order or not
        u_pick = rng.random(n)  # which live order a cancel / amend targets
        u_amend = rng.random(n)  # reduce or move; how much to reduce
        amend_move = rng.choice(np.array([-2, -1, 1, 2], dtype=np.int64), size=n)

        # Every index gets passive-limit fields first: they are also the fallback when a
        # cancel or amend finds no live order.
        price = np.maximum(mids - sign * passive, 1)
        typ = np.full(n, OrderType.LIMIT, dtype=np.uint8)
        tif = np.full(n, TimeInForce.GTC, dtype=np.uint8)
        post = np.zeros(n, dtype=np.uint8)

        lim = kind == _K_LIMIT
        is_post = lim & (u_sub < _POST_ONLY_FRAC)
        is_cross = lim & (u_sub >= _POST_ONLY_FRAC) & (u_sub < _POST_ONLY_FRAC + _CROSSING_FRAC)
        post[is_post] = 1
        price[is_cross] = np.maximum(mids + sign * crossing, 1)[is_cross]

        mkt = kind == _K_MARKETABLE
        is_market = mkt & (u_sub < _MARKET_FRAC)
        is_ioc = mkt & (u_sub >= _MARKET_FRAC) & (u_sub < _MARKET_FRAC + _IOC_FRAC)
        is_fok = mkt & (u_sub >= _MARKET_FRAC + _IOC_FRAC)
        typ[is_market] = OrderType.MARKET
        tif[is_ioc] = TimeInForce.IOC
        tif[is_fok] = TimeInForce.FOK
        through_px = np.maximum(mids + sign * through, 1)
        price[is_ioc | is_fok] = through_px[is_ioc | is_fok]
        protected = is_market & (u_sub2 < _PROTECTED_FRAC)
        price[is_market] = 0  # no protection
        price[protected] = np.maximum(mids + sign * protect, 1)[protected]

        if self._player is not None:
            # the compiled twin of the loop below: the same book calls, the same messages
            msgs = self._player.play(
                base, kind, price, qty, account, side, typ, tif, post, u_pick, u_amend, amend_move
            )
            self._taken = base + n
            return msgs

        # ---- play the stream to pick live targets ----------------------------------------
        order_id = np.arange(base + 1, base + n + 1, dtype=np.int64)
        op = np.zeros(n, dtype=np.uint8)  # Op.ADD
        out_price = price.tolist()  # becomes the message price
        out_qty = qty.tolist()
        out_id = order_id.tolist()
        out_acct = account.tolist()
        out_side = side.tolist()
        typ_l = typ.tolist()
        tif_l = tif.tolist()
        post_l = post.tolist()
        kind_l = kind.tolist()
        u_pick_l = u_pick.tolist()
        u_amend_l = u_amend.tolist()
        move_l = amend_move.tolist()

        cancel_idx: list[int] = []
        amend_idx: list[int] = []
        live = self._live
        pos = self._pos
        orders = self._orders

        book = self._book
        submit = book.submit
        submit_market = book.submit_market
        cancel = book.cancel
        amend = book.amend
        order_qty = book.order_qty
        market_t = int(OrderType.MARKET)

        def leave(target: int) -> None:
            j = pos.pop(target)
            del orders[target]
            last = live.pop()
            if last != target:
                live[j] = last
                pos[last] = j

        def drop_filled_makers() -> None:
            for maker in book.fills["maker_order_id"].tolist():
                if maker in pos and order_qty(maker) == 0:
                    leave(maker)

        for i in range(n):
            k = kind_l[i]
            if k in (_K_CANCEL, _K_AMEND) and live:
                target = live[int(u_pick_l[i] * len(live))]
                fields = orders[target]
                out_id[i] = target
                out_acct[i] = fields[0]
                out_side[i] = fields[1]
                if k == _K_CANCEL:
                    cancel_idx.append(i)
                    cancel(target)
                    leave(target)
                    continue
                amend_idx.append(i)
                open_qty = order_qty(target)
                ua = u_amend_l[i]
                if ua < _AMEND_REDUCE_FRAC and open_qty > 1:
                    new_price = fields[2]
                    new_qty = 1 + int((ua / _AMEND_REDUCE_FRAC) * (open_qty - 1))
                else:
                    new_price = max(fields[2] + move_l[i], 1)
                    new_qty = open_qty
                out_price[i] = new_price
                out_qty[i] = new_qty
                if amend(target, new_price, new_qty) == 0:
                    fields[2] = new_price
                    if book.last_filled:
                        drop_filled_makers()
                        if book.last_resting == 0 and target in pos:  # traded in full
                            leave(target)
                continue
            # an add (a cancel or amend with nothing live falls back to its passive limit)
            oid = base + i + 1
            if typ_l[i] == market_t:
                submit_market(oid, out_acct[i], out_side[i], out_qty[i], out_price[i])
            else:
                submit(oid, out_acct[i], out_side[i], out_price[i], out_qty[i], tif_l[i], post_l[i])
            if book.last_filled:
                drop_filled_makers()
            if book.last_resting:
                pos[oid] = len(live)
                live.append(oid)
                orders[oid] = [out_acct[i], out_side[i], out_price[i]]
        self._taken = base + n

        # ---- assemble --------------------------------------------------------------------
        msgs = np.zeros(n, dtype=MESSAGE_DTYPE)
        msgs["order_id"] = out_id
        msgs["account"] = out_acct
        msgs["price"] = out_price
        msgs["qty"] = out_qty
        msgs["side"] = out_side
        msgs["type"] = typ
        msgs["tif"] = tif
        msgs["post_only"] = post
        if cancel_idx:
            c = np.asarray(cancel_idx, dtype=np.int64)
            op[c] = Op.CANCEL
            msgs["price"][c] = 0
            msgs["qty"][c] = 0
        if amend_idx:
            op[np.asarray(amend_idx, dtype=np.int64)] = Op.AMEND
        msgs["op"] = op
        non_add = op != Op.ADD
        msgs["type"][non_add] = OrderType.LIMIT
        msgs["tif"][non_add] = TimeInForce.GTC
        msgs["post_only"][non_add] = 0
        return msgs


def mix(messages: np.ndarray) -> dict[str, float]:
    """Summarise a ``MESSAGE_DTYPE`` array by message kind, as fractions of all messages.

    Keys: ``limit`` (limit GTC adds, post-only included), ``marketable`` (market orders and
    IOC/FOK limits), ``cancel``, ``amend``, ``other`` (anything else, e.g. an unknown op);
    these five sum to 1. Finer detail, also as fractions of all messages: ``post_only``,
    ``market``, ``ioc``, ``fok``, ``buy`` (buy adds). ``n`` is the message count (an int).
    """
    m = np.asarray(messages)
    n = len(m)
    if n == 0:
        return dict.fromkeys(
            (
                "limit",
                "marketable",
                "cancel",
                "amend",
                "other",
                "post_only",
                "market",
                "ioc",
                "fok",
                "buy",
            ),
            0.0,
        ) | {"n": 0}
    op, typ, tif = m["op"], m["type"], m["tif"]
    add = op == Op.ADD
    market = add & (typ == OrderType.MARKET)
    limit = add & (typ == OrderType.LIMIT)
    ioc = limit & (tif == TimeInForce.IOC)
    fok = limit & (tif == TimeInForce.FOK)
    gtc = limit & (tif == TimeInForce.GTC)
    cancel = op == Op.CANCEL
    amend = op == Op.AMEND
    counted = int(gtc.sum() + market.sum() + ioc.sum() + fok.sum() + cancel.sum() + amend.sum())
    return {
        "n": n,
        "limit": float(gtc.sum()) / n,
        "marketable": float(market.sum() + ioc.sum() + fok.sum()) / n,
        "cancel": float(cancel.sum()) / n,
        "amend": float(amend.sum()) / n,
        "other": (n - counted) / n,
        "post_only": float((gtc & (m["post_only"] == 1)).sum()) / n,
        "market": float(market.sum()) / n,
        "ioc": float(ioc.sum()) / n,
        "fok": float(fok.sum()) / n,
        "buy": float((add & (m["side"] == Side.BUY)).sum()) / n,
    }
