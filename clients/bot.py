"""The bot API: what a strategy implements and what it receives.

A bot subclasses :class:`Bot` and overrides the callbacks it cares about. The vocabulary follows
the frameworks quants already use (NautilusTrader's ``on_start``/``on_stop``/``on_order_book``,
backtrader's ``notify_order``/``notify_trade``, CCXT's order and trade structures), shortened to
``on_*`` names. Every callback receives the bot's :class:`~clients.context.Context` first; act
through it (``ctx.submit(...)``), never by touching the exchange.

Units everywhere: prices in ticks of the instrument, quantities in lots, cash in minor units
(cents), times in simulated nanoseconds since the session epoch. Sides are ``"buy"``/``"sell"``.

Market data reaches a bot after its latency (see :mod:`clients.latency`): ``t`` on every
message is when the exchange produced it, ``ctx.now`` when the bot sees it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # pragma: no cover
    from clients.context import Context

#: Most commands one delivery's answer may carry: a remote bot's ``commands`` message (more: a
#: flood, rejected) and, by default, an in-process callback's. Here rather than in
#: :mod:`clients.protocol` (which re-exports it) so that an in-process run need not import the
#: wire protocol's models (15 ms of start-up) for one number.
MAX_COMMANDS = 256


class BookLevel(NamedTuple):
    """One price level: ``price`` ticks, ``qty`` lots resting there."""

    price: int
    qty: int


class BookView(NamedTuple):
    """The top of one instrument's book after a change (best first on both sides)."""

    instrument: str
    t: int
    bids: tuple[BookLevel, ...]
    asks: tuple[BookLevel, ...]

    @property
    def best_bid(self) -> int | None:
        """Best bid in ticks, or ``None`` if the bid side is empty."""
        return self.bids[0].price if self.bids else None

    @property
    def best_ask(self) -> int | None:
        """Best ask in ticks, or ``None`` if the ask side is empty."""
        return self.asks[0].price if self.asks else None

    @property
    def mid(self) -> int | None:
        """Mid price in ticks (rounded down), or ``None`` unless both sides have orders."""
        if not self.bids or not self.asks:
            return None
        return (self.bids[0].price + self.asks[0].price) // 2


class Trade(NamedTuple):
    """A public trade: ``qty`` lots at ``price`` ticks; ``aggressor`` is the taker's side."""

    instrument: str
    t: int
    price: int
    qty: int
    aggressor: str


class OrderUpdate(NamedTuple):
    """What happened to one of the bot's orders or commands.

    ``status`` is ``accepted``, ``rejected``, ``cancelled`` or ``amended``. ``ref`` is the
    number :meth:`Context.submit` returned (also on a submit rejected before it became an
    order; ``None`` for other commands and for orders the bot did not place); ``order_id`` is
    the exchange's id (``None`` when a command was rejected before it named an order).
    """

    status: str
    t: int
    instrument: str | None
    order_id: int | None
    ref: int | None
    side: str | None
    price: int | None
    qty: int | None
    reason: str | None


class FillReport(NamedTuple):
    """One of the bot's own fills: ``qty`` lots at ``price`` ticks; ``cash`` is the change in
    the bot's cash from the trade (minor units; a buy of a spot contract costs cash, a
    derivative trade moves none until margin settles); ``liquidity`` is ``maker`` or
    ``taker``."""

    instrument: str
    t: int
    order_id: int
    ref: int | None
    side: str
    price: int
    qty: int
    cash: int
    liquidity: str


class IndexPrint(NamedTuple):
    """A published index value (``value`` in the index's ticks)."""

    index: str
    t: int
    value: int


class Funding(NamedTuple):
    """A funding event on a perpetual.

    For the public rate announcement, ``payment`` is ``None``; for the bot's own settlement,
    ``payment`` is the cash it received (negative: paid) and ``position`` its lots. ``rate`` is
    the exchange's exact fraction as text (e.g. ``"3/10000"``); ``mark`` in ticks.
    """

    instrument: str
    t: int
    rate: str
    mark: int | None
    position: int | None
    payment: int | None


class Mark(NamedTuple):
    """A published mark price: ``price`` in the instrument's ticks (a swap's mark is its model
    premium per period); ``source`` says how it was made (``index``, ``model``, ``book``...)."""

    instrument: str
    t: int
    price: int
    source: str | None


class MarginCall(NamedTuple):
    """A collateral call on the bot's account, or news about one.

    ``status`` is ``called`` (``amount`` due by ``deadline`` ns), ``increased`` (the shortfall
    grew: ``amount`` is now due, by the same ``deadline``), ``reduced`` (``amount`` still due),
    ``cured`` or ``defaulted``. Amounts in minor units.
    """

    status: str
    t: int
    amount: int
    deadline: int | None


class Bot:
    """Base class of every strategy. Override the callbacks you need; all are no-ops here.

    A bot instance belongs to one account. It is constructed by the scenario (with the
    parameters the scenario file gives) and wired to the session by the runner, which calls
    :meth:`on_start` once at the session start. Callbacks must return quickly: each is bounded
    by a per-callback budget (see :mod:`clients.budget`). An exception stops the bot: its orders
    are cancelled and a ``BotFailed`` event records the traceback; the session goes on.
    """

    #: Instruments whose books this bot watches (``on_book``); ``None`` means all of them.
    books: tuple[str, ...] | None = None

    def on_start(self, ctx: Context) -> None:
        """The session has started. Example: ``ctx.schedule(ctx.now + HOUR, "quote")``."""

    def on_book(self, ctx: Context, book: BookView) -> None:
        """The top of a watched book changed. Example::

        if book.mid is not None:
            ctx.submit(book.instrument, "buy", book.mid - 10, 5)
        """

    def on_trade(self, ctx: Context, trade: Trade) -> None:
        """A trade printed (anyone's). Example: ``self.last = trade.price``."""

    def on_order(self, ctx: Context, update: OrderUpdate) -> None:
        """One of the bot's orders was accepted, rejected, cancelled or amended. Example::

        if update.status == "rejected":
            ctx.log(f"rejected: {update.reason}")
        """

    def on_fill(self, ctx: Context, fill: FillReport) -> None:
        """One of the bot's orders traded. Example: ``self.inventory += fill.qty if
        fill.side == "buy" else -fill.qty``."""

    def on_index(self, ctx: Context, index: IndexPrint) -> None:
        """An index was published. Example: ``self.fair = index.value``."""

    def on_mark(self, ctx: Context, mark: Mark) -> None:
        """The exchange published a mark price. Example: ``self.fair[mark.instrument] =
        mark.price``."""

    def on_funding(self, ctx: Context, funding: Funding) -> None:
        """A perpetual's funding rate was set, or the bot's position paid/received funding.
        Example: ``if funding.payment and funding.payment < 0: ctx.cancel_all()``."""

    def on_margin_call(self, ctx: Context, call: MarginCall) -> None:
        """The bot's account was called for collateral (or the call changed). Example::

        if call.status == "called" and ctx.balance() >= 0:
            ctx.deposit(call.amount)
        """

    def on_timer(self, ctx: Context, tag: Any) -> None:
        """A timer set with ``ctx.schedule(at, tag)`` fired. Example::

        if tag == "quote":
            self.requote(ctx)
            ctx.schedule(ctx.now + HOUR, "quote")
        """

    def on_stop(self, ctx: Context) -> None:
        """The session is ending (commands sent now are not delivered). Example: summarise."""
