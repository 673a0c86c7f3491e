"""How the engine runs margin: the schedule, the cure period, and the risk inputs it hands to
the SPAN-like calculator (``exchange.margin``) every cycle.

Equity is the account's cash: variation margin settles every position's change in value into
cash each cycle, so no unrealised profit or loss is carried between cycles (a perpetual's VM
basis is the notional it was last settled at, a swap's is its value at the last settlement).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from exchange.margin import PERP, RVS, Book, MarginParams, initial_margin

if TYPE_CHECKING:  # the engine imports this module's config; no import cycle at run time
    from exchange.engine import Exchange

DAY_NS = 86_400 * 10**9
YEAR_NS = 365 * DAY_NS


class AuctionBidder(BaseModel):
    """A standing commitment to bid in default auctions (as CCP members must).

    Attributes:
        account: the bidding account.
        discount_ppm: how far from the mark it bids (ppm of the mark), for either side.
        max_lots: the most it takes of one instrument in one auction.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    account: str
    discount_ppm: int = Field(ge=0, le=1_000_000)
    max_lots: int = Field(ge=1)


class MarginConfig(BaseModel):
    """Margin settings of a session.

    Attributes:
        interval_ns: time between scheduled margin cycles (ns).
        cure_ns: how long a called account has to cure (ns); a call still open at the first
            cycle after its deadline ends in default.
        index_move_trigger_ppm: an index print this far (ppm) from the index at the last cycle
            triggers an extra cycle at once (0 = never).
        closeout_band_ppm: a defaulter's close-out orders trade no further than this from the
            mark (``exchange.default``).
        auction_bidders: who takes, in a default auction, what the book did not.
        params: the initial-margin grid and add-ons (``exchange.margin.MarginParams``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval_ns: int = Field(default=DAY_NS, ge=1)
    cure_ns: int = Field(default=2 * DAY_NS, ge=0)
    index_move_trigger_ppm: int = Field(default=100_000, ge=0)
    closeout_band_ppm: int = Field(default=100_000, ge=0, le=1_000_000)
    auction_bidders: list[AuctionBidder] = Field(default_factory=list)
    params: MarginParams = Field(default_factory=MarginParams)

    def requirements(self, engine: Exchange) -> dict[str, tuple[int, int]]:
        """Initial and maintenance margin (minor units) of every account holding a marked
        perpetual or swap position, or a swap premium basis (a flat account that bought and
        sold at different premiums: its locked premiums carry no market risk, so its scenario
        margin is 0 -- ``min_im`` still applies -- but it is measured and called like any
        other), by account name."""
        listings = [
            (name, li)
            for name, li in engine.instruments.items()
            if li.kind in ("perp", "rvs") and not li.expired and li.mark is not None
        ]
        names = [
            a
            for a in sorted(engine.accounts)
            if any(
                engine.accounts[a].positions.get(n, 0)
                or (li.kind == "rvs" and engine.accounts[a].basis.get(n, 0))
                for n, li in listings
            )
        ]
        if not names or not listings:
            return {}
        n = len(listings)
        kind = np.zeros(n, dtype=np.int64)
        mark = np.zeros(n, dtype=np.int64)
        tick_value = np.ones(n, dtype=np.int64)
        index = np.ones(n, dtype=np.float64)
        floor = np.zeros(n, dtype=np.float64)
        sigma = np.zeros(n, dtype=np.float64)
        t_years = np.zeros(n, dtype=np.float64)
        gpus = np.ones(n, dtype=np.int64)
        underlying = np.zeros(n, dtype=np.int64)
        families: dict[str, int] = {}
        for j, (_name, listing) in enumerate(listings):
            spec = listing.spec
            if listing.kind == "perp":
                kind[j], mark[j], tick_value[j] = PERP, listing.mark, spec.tick_value
                # the GPU family: the index's name up to its first "-" (H100-RENTAL -> H100)
                family = spec.underlying.split("-")[0]
                underlying[j] = families.setdefault(family, len(families))
            else:
                tick = Decimal(spec.index_tick_size)
                kind[j] = RVS
                index[j] = float(engine.indices[spec.resale_index] * tick)
                floor[j] = float(spec.floor * tick)
                sigma[j] = spec.volatility
                t_years[j] = max(0, engine.date_ns(spec.maturity) - engine.t) / YEAR_NS
                gpus[j] = spec.gpus_per_contract
                underlying[j] = families.setdefault(spec.gpu, len(families))
        positions = np.array(
            [[engine.accounts[a].positions.get(name, 0) for name, _ in listings] for a in names],
            dtype=np.int64,
        )
        book = Book(
            kind=kind,
            underlying=underlying,
            mark=mark,
            tick_value=tick_value,
            index=index,
            floor=floor,
            sigma=sigma,
            t_years=t_years,
            gpus_per_contract=gpus,
            positions=positions,
            open_interest=np.clip(positions, 0, None).sum(axis=0),
            equity=np.array([engine.accounts[a].cash for a in names], dtype=np.int64),
        )
        result = initial_margin(book, self.params)
        return {
            a: (int(im), int(mm))
            for a, im, mm in zip(names, result.im.tolist(), result.mm.tolist(), strict=True)
        }
