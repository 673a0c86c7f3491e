"""A CDS dealer: quotes protection both ways around a fair spread, wider the more inventory it
carries and the more the spread has moved lately.

Fair spread: the latest mark of the series (``fair="mark"``: any source, the book's mid when
the exchange trusts the book, else the model) or the latest implied spread only
(``fair="implied"``: the model's marks or ``implied_index``; see
:mod:`clients.strategies.cds_common`). The dealer keeps the last ``move_window`` fair values it
has seen; their range (max - min, ticks) is the spread's recent move. With ``pos`` its position
(contracts, long = bought protection), it quotes one bid and one ask of ``size`` contracts:

    half  = half_spread
          + min(max_inventory_widen, |pos| x widen_per_contract)        (inventory)
          + min(max_move_widen, range x move_ppm // 1,000,000)          (recent moves)
    skew  = clamp(pos x skew_per_contract, -max_skew, +max_skew)
    bid   = fair - half - skew         ask = fair + half - skew

so the quotes are ``2 x half`` apart, wider with inventory either way and with recent moves, and
a long inventory (protection bought) lowers both (sells protection more readily). A bid below
1 tick is not posted. Within ``max_position``: a side's size is cut to what keeps the position
within it, and at the limit that side is not quoted. Under a collateral call only the side that
reduces the position is quoted (cut to the position); after its account defaults, or once the
series is settled or gone, its quotes are cancelled and it stops.

It requotes on every new fair value (each mark of the series; with ``fair="implied"``, each
new implied spread), once after a batch in which its quotes traded (its inventory changed: at
the next nanosecond, so several fills make one requote), when its account is called, cured or
defaults, and, with ``requote_ns`` set, on a timer, so stale quotes are pulled even when marks
stop. A requote whose quotes equal the resting ones sends nothing; otherwise it cancels the
bot's orders in the series and posts the new ones. With no fair value, or a stale one (older
than ``max_age_ns``), it pulls its quotes and posts none.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from pydantic import Field

from clients.bot import MarginCall
from clients.context import Context
from clients.strategies.cds_common import CdsParams, CdsStrategy

PPM = 1_000_000


class CdsDealerParams(CdsParams):
    """Parameters of :class:`CdsDealer` (and every CDS strategy's, see ``CdsParams``)."""

    fair: Literal["mark", "implied"] = Field(
        default="mark",
        description="the fair spread: the latest mark (any source) or the implied spread only",
    )
    size: int = Field(default=5, ge=1, description="contracts per quote")
    half_spread: int = Field(default=10, ge=1, description="ticks from fair to each quote, flat")
    widen_per_contract: int = Field(
        default=1, ge=0, description="ticks each quote widens per contract of inventory"
    )
    max_inventory_widen: int = Field(
        default=100, ge=0, description="largest widening for inventory, ticks"
    )
    move_window: int = Field(
        default=24, ge=2, le=10_000, description="fair values whose range is the recent move"
    )
    move_ppm: int = Field(
        default=500_000, ge=0, description="share of the recent range added to each side, ppm"
    )
    max_move_widen: int = Field(
        default=200, ge=0, description="largest widening for recent moves, ticks"
    )
    skew_per_contract: int = Field(
        default=1, ge=0, description="ticks both quotes move against each contract of inventory"
    )
    max_skew: int = Field(default=50, ge=0, description="largest skew, ticks")
    max_position: int = Field(
        default=100, ge=1, description="the largest position either way, contracts"
    )
    requote_ns: int | None = Field(
        default=None, ge=1, description="requote timer, ns (None: only on new fair values)"
    )


class CdsDealer(CdsStrategy):
    """Two-sided CDS quotes around the fair spread, widened by inventory and recent moves."""

    Params = CdsDealerParams
    params: CdsDealerParams

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.recent: deque[int] = deque(maxlen=self.params.move_window)  # fair values, ticks
        self.quoted: list[tuple[int, int, int | None, int | None]] = []  # (t, pos, bid, ask)
        self.refill = False  # a requote after fills is scheduled

    # ------------------------------------------------------------------ the rule
    def fair(self, ctx: Context) -> int | None:
        """The fair spread (ticks), or ``None`` when there is none or it is stale."""
        if self.params.fair == "implied":
            return self.fresh_implied(ctx)
        return self.fresh_mark(ctx)

    def half(self, position: int) -> int:
        """Ticks from fair to each quote for ``position`` contracts and the recent moves."""
        p = self.params
        inventory = min(p.max_inventory_widen, abs(position) * p.widen_per_contract)
        moved = max(self.recent) - min(self.recent) if self.recent else 0
        return p.half_spread + inventory + min(p.max_move_widen, moved * p.move_ppm // PPM)

    def skew(self, position: int) -> int:
        """Ticks both quotes move down (up, when negative) for ``position`` contracts."""
        p = self.params
        return max(-p.max_skew, min(p.max_skew, position * p.skew_per_contract))

    def quotes(self, fair: int, position: int) -> list[tuple[str, int, int]]:
        """The quotes for ``fair`` ticks and ``position`` contracts: ``(side, price, qty)``."""
        p = self.params
        half, skew = self.half(position), self.skew(position)
        buy_room = p.max_position - position  # contracts a filled bid may add
        sell_room = p.max_position + position
        if self.called:  # only the side that reduces the position, no further than flat
            buy_room, sell_room = max(0, -position), max(0, position)
        out = []
        bid, ask = fair - half - skew, fair + half - skew
        if buy_room > 0 and bid >= 1:
            out.append(("buy", bid, min(p.size, buy_room)))
        if sell_room > 0 and ask >= 1:
            out.append(("sell", ask, min(p.size, sell_room)))
        return out

    # ------------------------------------------------------------------ callbacks
    def on_start(self, ctx: Context) -> None:
        if self.params.requote_ns is not None:
            ctx.schedule(ctx.now + self.params.requote_ns, "requote")

    def on_spread(self, ctx: Context, implied: bool) -> None:
        if self.params.fair == "implied":
            if not implied:
                return  # a mark from the book: not its fair value
            self.recent.append(self.implied)
        else:
            self.recent.append(self.mark)
        self.requote(ctx)

    def on_fill(self, ctx: Context, fill) -> None:
        if fill.instrument == self.params.series and not self.refill:
            self.refill = True  # one requote for the whole batch, after it
            ctx.schedule(ctx.now, "filled")

    def on_timer(self, ctx: Context, tag) -> None:
        if tag == "filled":
            self.refill = False
            self.requote(ctx)
        elif tag == "requote":
            self.requote(ctx)
            if self.can_trade():
                ctx.schedule(ctx.now + self.params.requote_ns, "requote")

    def on_margin_call(self, ctx: Context, call: MarginCall) -> None:
        super().on_margin_call(ctx, call)
        if call.status in ("called", "increased", "cured", "defaulted"):
            self.requote(ctx)  # called: only the reducing side; cured: both; defaulted: none

    def requote(self, ctx: Context) -> None:
        """Replace the quotes with the rule's (nothing sent if they are already resting)."""
        p = self.params
        resting = ctx.open_orders(p.series)
        fair = self.fair(ctx) if self.can_trade() else None
        position = self.position(ctx)
        wanted = self.quotes(fair, position) if fair is not None else []
        # quotes sent but not yet acknowledged are not in the account view: a cancel sent now
        # reaches the exchange after them (commands arrive in order), so it cancels them too
        busy = self.in_flight.busy(p.series)
        have = [(o.side, o.price, o.qty) for o in resting]
        if not busy and sorted(have) == sorted(wanted):
            return  # already quoting exactly this
        if resting or busy:
            ctx.cancel_all(p.series)
        for side, price, qty in wanted:
            self.in_flight.sent(ctx.submit(p.series, side, price, qty), p.series)
        bid = next((price for side, price, _ in wanted if side == "buy"), None)
        ask = next((price for side, price, _ in wanted if side == "sell"), None)
        self.quoted.append((ctx.now, position, bid, ask))
