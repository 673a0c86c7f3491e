"""How the engine runs margin: the schedule, the cure period, and the risk inputs it hands to
the SPAN-like calculator (``exchange.risk.margin``) every cycle.

At a cycle equity is the account's cash: variation margin settles every position's change in
value into cash, so no unrealised profit or loss is carried past a cycle (a perpetual's VM
basis is the notional it was last settled at, a swap's is its value at the last settlement).
Between cycles -- the maintenance check at every perpetual mark -- equity is cash plus the
variation margin not yet settled (:func:`equity`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from exchange.core.clock import DAY_NS, YEAR_NS
from exchange.products.perp import tier_margin
from exchange.risk import cds_market
from exchange.risk.bilateral import CsaTerms, credit_extra
from exchange.risk.margin import (
    PPM,
    RVS,
    Book,
    MarginParams,
    capital_ratios_ppm,
    gross_notional,
    indicated_tiers,
    initial_margin,
)
from exchange.risk.variation import position_value

if TYPE_CHECKING:  # the engine imports this module's config; no import cycle at run time
    from exchange.core.accounts import Listing
    from exchange.core.venue import Venue


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


#: The last ``(params, params with min_im 0)`` of :func:`_without_floor`.
_NO_FLOOR: list = [None, None]


def _without_floor(params: MarginParams) -> MarginParams:
    """``params.model_copy(update={"min_im": 0})``, made once per params object (frozen, so
    the copy cannot go stale; the strong reference kept here keeps its id from being reused)
    instead of at every ``requirements`` call."""
    if _NO_FLOOR[0] is not params:
        _NO_FLOOR[0], _NO_FLOOR[1] = params, params.model_copy(update={"min_im": 0})
    return _NO_FLOOR[1]


@dataclass(frozen=True)
class Measured:
    """One measure of the engine by :meth:`MarginConfig.measure` (valid until the engine
    changes).

    Attributes:
        names: the accounts measured, sorted (holding a marked perpetual, swap or listed CDS
            position, or a swap or CDS basis).
        span_names: those holding swaps (a position or a premium basis): the book's rows.
        perp_im: each measured account's perpetual tier IM plus its listed CDS IM, minor units.
        perp_mm: the same for maintenance margin, minor units.
        book: the swaps' SPAN book of ``span_names`` (None when there are none).
    """

    names: list[str]
    span_names: list[str]
    perp_im: dict[str, int]
    perp_mm: dict[str, int]
    book: Book | None


class MarginConfig(BaseModel):
    """Margin settings of a session.

    Attributes:
        interval_ns: time between scheduled margin cycles (ns).
        cure_ns: how long a called account has to cure (ns): the deadline is the first
            call's time plus ``cure_ns``, and a raise of the call (``CallIncreased``) does not
            move it (a clearing house gives a deteriorating member no more time). A call still
            open at a cycle at or after its deadline (``t >= deadline``; the cycle runs after
            the deposits of its nanosecond) ends in default, for the amount last called.
        index_move_trigger_ppm: an index print this far (ppm) from the index at the last cycle
            triggers an extra cycle at the print's nanosecond, after that nanosecond's commands
            (clock priority ``CLEARING``; at once when the engine runs without a simulator;
            0 = never).
        closeout_band_ppm: a defaulter's close-out orders trade no further than this from the
            mark (``exchange.risk.default``).
        auction_bidders: who takes, in a default auction, what the book did not (and, in
            bilateral clearing, the first of them replaces a defaulter's protection).
        params: the initial-margin grid and add-ons (``exchange.risk.margin.MarginParams``).
        clearing: ``cleared`` (default: a CCP margins the swaps like everything else) or
            ``bilateral`` (``exchange.risk.bilateral``: swap fills are contracts between the two
            parties, collateralised under ``csa``; no variation or initial margin on swaps;
            perpetuals stay cleared).
        csa: the credit support annex of bilateral clearing (required then; one threshold per
            rating of ``params.rating_scale``). Ignored when cleared, so a bilateral scenario
            can be run cleared with ``--set margin.clearing=cleared``.

    ``clearing`` and ``csa`` are left out of the serialised form at their defaults, so the
    stored configuration (and the logs) of a cleared scenario are what they were before
    bilateral clearing existed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval_ns: int = Field(default=DAY_NS, ge=1)
    cure_ns: int = Field(default=2 * DAY_NS, ge=0)
    index_move_trigger_ppm: int = Field(default=100_000, ge=0)
    closeout_band_ppm: int = Field(default=100_000, ge=0, le=1_000_000)
    auction_bidders: list[AuctionBidder] = Field(default_factory=list)
    params: MarginParams = Field(default_factory=MarginParams)
    clearing: Literal["cleared", "bilateral"] = "cleared"
    csa: CsaTerms | None = None

    @model_validator(mode="after")
    def _csa_fits(self) -> MarginConfig:
        if self.clearing == "bilateral" and self.csa is None:
            raise ValueError("csa: bilateral clearing needs its CSA terms ([margin.csa])")
        if self.csa is not None:
            scale = self.params.rating_scale
            if len(self.csa.threshold_by_rating) != len(scale):
                raise ValueError(
                    f"csa.threshold_by_rating: one threshold per rating of {list(scale)}, got "
                    f"{len(self.csa.threshold_by_rating)}"
                )
        return self

    @model_serializer(mode="wrap")
    def _omit_cleared(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if self.clearing == "cleared":  # the form (and any hash of it) from before bilateral
            data.pop("clearing", None)
        if self.csa is None:
            data.pop("csa", None)
        return data

    @property
    def bilateral(self) -> bool:
        """Whether swaps clear bilaterally (``exchange.risk.bilateral``)."""
        return self.clearing == "bilateral"

    def requirements(
        self,
        engine: Venue,
        accounts: Sequence[str] | None = None,
        ratings: Mapping[str, int] | None = None,
        measured: Measured | None = None,
    ) -> dict[str, tuple[int, int]]:
        """Initial and maintenance margin (minor units) of every account holding a marked
        perpetual or swap position, or a swap premium basis (a flat account that bought and
        sold at different premiums: its locked premiums carry no market risk, so its scenario
        margin is 0 -- ``min_im`` still applies -- but it is measured and called like any
        other), by account name; only the accounts named in ``accounts`` if given (the
        per-mark maintenance check measures only the holders of one perpetual).

        Two rules, added (decision: perpetual venues margin by tiers, CCPs margin swaps by
        scenario; the two products track different indices, rental and resale, so they do not
        net):

        * each **perpetual** position by its own tier, on its notional at the mark
          (``exchange.products.perp.tier_margin``: IM rounded up, MM down), as perpetual venues do;
        * the **swaps** by the SPAN grid (``exchange.risk.margin.initial_margin``), with the
          concentration and credit add-ons; ``MM = ceil(IM_swaps x maintenance_ppm)``.

        A third rule adds the **listed CDS** (:func:`cds_margin`, docs/credit.md "Listing CDS
        on the exchange"): each series' worst loss over its spread shocks, counted with the
        perpetuals' tier margin (IM, and MM as ``ceil(IM x maintenance_ppm)``), in bilateral
        sessions too (CDS always clear).

        ``IM = max(min_im, IM_swaps + sum of the perpetuals' tier IMs)``: the floor applies
        once, to the total; ``MM = max(MM_swaps + sum of the tier MMs, ceil(min_im x
        maintenance_ppm))``, so a swap-only account is margined exactly as before. The credit
        add-on applies to the swap part only (perpetual venues have none; the tiers already
        raise the rate with size): its capital ratio is ``(equity - the perpetuals' tier IM)
        / the swaps' gross notional`` -- perpetuals are not in the gross notional, and the
        capital their own margin ties up does not count as capital for the swaps. Equity is
        cash plus unsettled variation margin (:func:`equity`; at a cycle, after settlement,
        exactly the cash). A swap **buyer's** gross notional is the premiums it still owes, a
        seller's the protection (``exchange.risk.margin.gross_notional``).

        The credit add-on is the add-on of the account's **rating**: ``ratings`` (account ->
        index in ``params.rating_scale``, 0 the top; an account not in it is at the top), by
        default the engine's ``Exchange.ratings``, which the margin cycle moves
        (:meth:`credit_standing` gives the tier the capital ratio indicates).

        In **bilateral** clearing swaps carry no margin here (their collateral is the CSA's,
        ``exchange.risk.bilateral``): only the holders of perpetuals are measured, by the tiers.

        ``measured``: :meth:`measure` of the engine as it stands, when the caller also asks
        :meth:`credit_standing` (the margin cycle: one measure serves both); ``accounts`` is
        then ignored. Ignored in bilateral clearing, whose requirements measure no swaps."""
        if measured is None or self.bilateral:
            measured = self._measure(engine, accounts, with_swaps=not self.bilateral)
        names, span_names = measured.names, measured.span_names
        perp_im, perp_mm = measured.perp_im, measured.perp_mm
        if not names:
            return {}
        ratings = engine.ratings if ratings is None else ratings
        span_im = dict.fromkeys(names, 0)
        span_mm = dict.fromkeys(names, 0)
        if span_names:
            params = _without_floor(self.params)  # the floor is on the total
            tiers = np.array([ratings.get(a, 0) for a in span_names], dtype=np.int64)
            # a compiled engine's twin of the grid (``initial_margin_twin``: the same result,
            # or None where it declines); the reference engine has none and runs the numpy
            twin = getattr(engine, "initial_margin_twin", None)
            result = None if twin is None else twin(measured.book, params, tiers)
            if result is None:
                result = initial_margin(measured.book, params, tiers)
            for a, im, mm in zip(span_names, result.im.tolist(), result.mm.tolist(), strict=True):
                span_im[a], span_mm[a] = int(im), int(mm)
        floor_im = self.params.min_im
        floor_mm = -(-floor_im * self.params.maintenance_ppm // PPM)
        return {
            a: (
                max(floor_im, span_im[a] + perp_im[a]),
                max(floor_mm, span_mm[a] + perp_mm[a]),
            )
            for a in names
        }

    def credit_standing(
        self,
        engine: Venue,
        accounts: Sequence[str] | None = None,
        measured: Measured | None = None,
    ) -> dict[str, tuple[int, int]]:
        """What the capital ratio says of every account with a swap position or premium basis
        (those the grid measures; only those in ``accounts`` if given): account -> (the
        indicated tier, an index of ``params.rating_scale``: the most severe credit tier the
        ratio is strictly below, 0 for none; the capital ratio in ppm, rounded down). The
        ratio is the credit add-on's: ``(equity - the perpetuals' tier IM) / the swaps' gross
        notional`` (:meth:`requirements`). No grid: integers only.

        In bilateral clearing no variation margin carries a swap's value into cash, so the
        equity counts it as it stands, with the collateral the account has posted (still its
        own): ``exchange.risk.bilateral.credit_extra``.

        ``measured``: :meth:`measure` of the engine as it stands (``accounts`` is then
        ignored)."""
        if measured is None:
            measured = self.measure(engine, accounts)
        span_names, book = measured.span_names, measured.book
        if not span_names:
            return {}
        # a compiled engine's twin (``credit_standing_twin``: the same tiers and ratios, or
        # None where it declines); the reference engine has none and runs the numpy
        twin = getattr(engine, "credit_standing_twin", None)
        standing = None if twin is None else twin(book, self.params)
        if standing is None:
            gross = gross_notional(book)  # read by both, computed once
            standing = (
                indicated_tiers(book, self.params, gross).tolist(),
                capital_ratios_ppm(book, gross),
            )
        tiers, ratios = standing
        return {a: (int(t), r) for a, t, r in zip(span_names, tiers, ratios, strict=True)}

    def measure(self, engine: Venue, accounts: Sequence[str] | None = None) -> Measured:
        """What :meth:`credit_standing` reads of the engine as it stands -- and, in cleared
        clearing, :meth:`requirements` too: the accounts measured, each one's perpetual (and
        listed CDS) margin and the swaps' SPAN book. The margin cycle measures once and hands
        the result to both (they would otherwise each read every account's equity, gross
        notional and swap book); it is stale once any position, cash, mark or index moves."""
        return self._measure(engine, accounts, with_swaps=True, bilateral=self.bilateral)

    def _measure(
        self,
        engine: Venue,
        accounts: Sequence[str] | None,
        with_swaps: bool,
        bilateral: bool = False,
    ) -> Measured:
        """:meth:`_measured`, the listed CDS margin added to the perpetuals' (each position's
        worst loss over its series' spread shocks, ``exchange.risk.cds_market``: cleared in
        every session, counted like a perpetual's tier margin), and the swaps' book
        (:meth:`_swap_book`; None when no account holds swaps)."""
        names, swaps, span_names, perp_im, perp_mm = self._measured(engine, accounts, with_swaps)
        if names:
            for a, im in cds_margin(engine, names).items():
                perp_im[a] += im
                perp_mm[a] += -(-im * self.params.maintenance_ppm // PPM)
        book = (
            self._swap_book(engine, swaps, span_names, perp_im, bilateral=bilateral)
            if span_names
            else None
        )
        return Measured(names, span_names, perp_im, perp_mm, book)

    @staticmethod
    def _measured(engine: Venue, accounts: Sequence[str] | None, with_swaps: bool = True):
        """The accounts :meth:`requirements` measures (holding a marked perpetual or swap
        position, or a swap premium basis; by name), the swap listings, those of the accounts
        that hold swaps, and each account's perpetual tier IM and MM. Without ``with_swaps``
        (bilateral requirements) only perpetuals count."""
        kinds = ("perp", "rvs", "cds") if with_swaps else ("perp", "cds")
        # ``Listing.kind`` inlined as ``spec.kind`` (the same value): this runs at every mark
        listings = [
            (name, li)
            for name, li in engine.instruments.items()
            if li.spec.kind in kinds and not li.expired and li.mark is not None
        ]
        pool = sorted(engine.accounts) if accounts is None else sorted(accounts)

        def holds(a: str, subset) -> bool:
            account = engine.accounts[a]
            return any(
                account.positions.get(n, 0)
                or (li.spec.kind in ("rvs", "cds") and account.basis.get(n, 0))
                for n, li in subset
            )

        names = [a for a in pool if holds(a, listings)]
        perps = [(n, li) for n, li in listings if li.spec.kind == "perp"]
        swaps = [(n, li) for n, li in listings if li.spec.kind == "rvs"]
        perp_im = dict.fromkeys(names, 0)
        perp_mm = dict.fromkeys(names, 0)
        for a in names:
            positions = engine.accounts[a].positions
            for name, listing in perps:
                if lots := positions.get(name, 0):
                    im, mm = tier_margin(listing.spec, lots, listing.mark)
                    perp_im[a] += im
                    perp_mm[a] += mm
        span_names = [a for a in names if holds(a, swaps)]
        return names, swaps, span_names, perp_im, perp_mm

    @staticmethod
    def _swap_book(
        engine: Venue,
        swaps: list,
        names: list[str],
        perp_im: dict[str, int],
        bilateral: bool = False,
    ) -> Book:
        """The SPAN book of the swaps of ``names``: open interest over every account (not
        only ``names``: a subset measured between cycles sees the same concentration), equity
        net of the perpetuals' tier IM (see :meth:`requirements`), and the premiums each
        positive premium basis still owes (``basis x tick_value x periods left``, minor units:
        a buyer's gross notional, ``exchange.risk.margin.gross_notional``)."""
        n = len(swaps)
        kind = np.full(n, RVS, dtype=np.int64)
        index = np.ones(n, dtype=np.float64)
        floor = np.zeros(n, dtype=np.float64)
        sigma = np.zeros(n, dtype=np.float64)
        t_years = np.zeros(n, dtype=np.float64)
        gpus = np.ones(n, dtype=np.int64)
        underlying = np.zeros(n, dtype=np.int64)
        families: dict[str, int] = {}
        for j, (_name, listing) in enumerate(swaps):
            spec = listing.spec
            tick = Decimal(spec.index_tick_size)
            index[j] = float(engine.indices[spec.resale_index] * tick)
            floor[j] = float(spec.floor * tick)
            sigma[j] = spec.volatility
            t_years[j] = max(0, engine.date_ns(spec.maturity) - engine.t) / YEAR_NS
            gpus[j] = spec.gpus_per_contract
            underlying[j] = families.setdefault(spec.gpu, len(families))
        positions = np.array(
            [[engine.accounts[a].positions.get(name, 0) for name, _ in swaps] for a in names],
            dtype=np.int64,
        )
        open_interest = np.array(
            [
                sum(max(0, acc.positions.get(name, 0)) for acc in engine.accounts.values())
                for name, _ in swaps
            ],
            dtype=np.int64,
        )
        valued = valued_listings(engine)  # for every account's equity, read once
        return Book.built(  # valid by construction: the checked constructor's copies are waste
            kind=kind,
            underlying=underlying,
            mark=np.zeros(n, dtype=np.int64),
            tick_value=np.ones(n, dtype=np.int64),
            index=index,
            floor=floor,
            sigma=sigma,
            t_years=t_years,
            gpus_per_contract=gpus,
            positions=positions,
            open_interest=open_interest,
            equity=np.array(
                [
                    equity(engine, a, valued)
                    - perp_im[a]
                    + (credit_extra(engine, a) if bilateral else 0)
                    for a in names
                ],
                dtype=np.int64,
            ),
            premiums_owed=np.array(
                [
                    [
                        max(0, engine.accounts[a].basis.get(name, 0))
                        * listing.spec.tick_value
                        * listing.periods_left
                        for name, listing in swaps
                    ]
                    for a in names
                ],
                dtype=np.int64,
            ).reshape(len(names), n),
        )


def valued_listings(engine: Venue) -> list[tuple[str, Listing, str]]:
    """The listings :func:`equity` values, as ``(instrument, listing, kind)`` in listing order:
    every marked listing that is not spot and has not expired, but for the swaps of bilateral
    clearing (no variation margin carries their value into cash). A function of the listings
    only: computed once, it serves every account measured at the same instant."""
    bilateral = engine.margin is not None and engine.margin.bilateral
    return [
        (instrument, listing, kind)
        for instrument, listing in engine.instruments.items()
        # ``Listing.kind``, read once: this runs at every mark
        if (kind := listing.spec.kind) != "spot"
        and not listing.expired
        and listing.mark is not None
        and not (bilateral and kind == "rvs")
    ]


def equity(engine: Venue, name: str, listings: list[tuple[str, Listing, str]] | None = None) -> int:
    """An account's equity, minor units: its cash plus the variation margin not yet settled
    on its positions (each position's value at the current marks less its VM basis,
    ``exchange.risk.variation.position_value``, as the next cycle would pay it). Right after a
    cycle's settlement this is exactly the cash; between cycles it is what a venue calls
    account value (cash + unrealised PnL). Bilateral swaps pay no variation margin: they are
    not in it (their value counts for the capital ratio only,
    :meth:`MarginConfig.credit_standing`). ``listings``: :func:`valued_listings` of the
    engine as it stands, when the caller measures many accounts at one instant."""
    account = engine.accounts[name]
    total = account.cash
    positions, vm_basis, premium_basis = account.positions, account.vm_basis, account.basis
    for instrument, listing, kind in valued_listings(engine) if listings is None else listings:
        position = positions.get(instrument, 0)
        settled = vm_basis.get(instrument, 0)
        basis = premium_basis.get(instrument, 0)
        if not (position or settled or basis) or engine.is_closed_out(account, instrument):
            continue
        if kind == "cds":  # valued as a whole position (exchange.risk.cds_market)
            total += cds_market.value(engine, listing, position, basis) - settled
            continue
        value = position_value(
            kind,
            position,
            listing.mark,
            listing.spec.tick_value,
            listing.unit_value,
            basis,
            listing.periods_left,
        )
        total += value - settled
    return total


def cds_margin(engine: Venue, names: Sequence[str]) -> dict[str, int]:
    """Initial margin of the listed CDS positions of ``names`` (minor units, by account; only
    accounts with some): per series, the worst loss of the whole position (contracts and
    spread basis) over the series' spread shocks (``CdsSpec.margin_shocks_bps``;
    ``exchange.risk.cds_market.initial_margin``), summed over series (no offset between
    reference entities). A closed-out defaulter's leftover basis is not margined. No credit
    add-on and no concentration add-on apply (they are the swap grid's)."""
    out: dict[str, int] = {}
    series = [
        li
        for li in engine.instruments.values()
        if li.spec.kind == "cds" and not li.expired and li.mark is not None  # li.kind, inlined
    ]
    if not series:
        return out
    for a in names:
        account = engine.accounts[a]
        total = 0
        for listing in series:
            name = listing.spec.name
            position = account.positions.get(name, 0)
            basis = account.basis.get(name, 0)
            if (position or basis) and not engine.is_closed_out(account, name):
                total += cds_market.initial_margin(engine, listing, position, basis)
        if total:
            out[a] = total
    return out
