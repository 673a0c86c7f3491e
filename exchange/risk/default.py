"""Default management: close-out of a defaulter's positions and the default waterfall.

When an account defaults (``Exchange.declare_default``), in this order, each step an event,
emitted once the state it announces has changed (cash, pools, contributions, positions), so a
listener reading the engine at an event sees that step done and none after it:

1. **Close-out through the book.** For each instrument (listing order) the engine sends a
   reduce-only IOC order for the whole position (``CloseOut``), bounded at the mark
   ``-+ closeout_band_ppm`` so a thin book cannot be swept at any price. (The same orders,
   reason ``liquidation``, liquidate perpetuals below maintenance margin at every mark of the
   perpetual, :func:`check_maintenance`, and every cycle, :func:`liquidate_perpetuals`.)
   b. **Auction** of what the book did not take, to the standing bidders of the session
      (``AuctionAward``), at the mark less each bidder's discount.
2. **Variation margin** on the instruments touched: the defaulter's cash now carries every
   realised loss and its remaining positions at the mark.
3. **The funds**, while its cash is negative (the shortfall):
   a. its own default-fund contribution (``WaterfallDraw``, step ``own``);
   b. the insurance fund (``WaterfallDraw``, step ``insurance``);
   c. the other members' default-fund contributions, pro rata to what each has left
      (``DefaultFundLoss``, one event per member, with what that member lost); an earlier
      defaulter is no longer a member: what is left of its contribution stays in the fund,
      owed to its estate, and is not drawn.
4. **Auto-deleveraging** of what the book and the auction did not take (``Deleveraged``):
   the remainder goes to the accounts holding opposite positions, ranked by profit times
   leverage (variation-margin profit on the instrument over cash, highest first; then by
   name), each taking at most its own opposite position. Positions
   move at the mark; if a shortfall is left after the funds, the receivers bear it as if they
   took the lots at the **bankruptcy price** — a ``Haircut`` (step ``adl``) pro rata to the
   value of the lots each took, at most that value. For a swap series this is how the
   protection buyers learn that their protection is gone, and what it cost them.
5. **Variation-margin gains haircutting** (``Haircut``, step ``vm_gains``), the CCP recovery
   tool, for what is still short: the accounts paid variation margin in this cycle give it
   back, largest gain first, each at most what it was paid (an earlier defaulter, closed out,
   gives nothing back: it takes part in nothing).

No account but the defaulter is debited by a step before the steps above it are exhausted; a
shortfall left after step 5 stays on the defaulter's account as negative cash, visible in the
state. Auction bidders are standing commitments configured in the session (bots that bid on
their own come with issue #6).
"""

from __future__ import annotations

import functools
import math
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from exchange.core import events as ev
from exchange.products.instruments import MINOR_PER_UNIT
from exchange.products.pricing import rvs_model_value
from exchange.risk.margin_cycle import YEAR_NS, cds_margin, equity
from exchange.risk.variation import move_lots

if TYPE_CHECKING:
    from exchange.core.accounts import Account, Listing
    from exchange.core.venue import Venue


PPM = 1_000_000


def close_out(engine: Venue, name: str) -> None:
    """Steps 1-5 for account ``name`` (already marked defaulted, its orders cancelled)."""
    defaulter = engine.accounts[name]
    remainders: dict[str, int] = {}
    bilateral = engine.margin is not None and engine.margin.bilateral
    for instrument, listing in engine.instruments.items():
        position = defaulter.positions.get(instrument, 0)
        if not position or listing.expired or listing.mark is None or listing.kind == "spot":
            continue
        if bilateral and listing.kind == "rvs":
            continue  # bilateral swaps are terminated, not closed out (exchange.risk.bilateral)
        _through_book(engine, defaulter, listing, position)
        if defaulter.positions.get(instrument, 0):
            _auction(engine, defaulter, listing, defaulter.positions[instrument])
        remainders[instrument] = defaulter.positions.get(instrument, 0)
    for instrument in remainders:
        engine.settle_variation(instrument, engine.instruments[instrument])
    _draw_funds(engine, name)
    taken: dict[str, int] = {}  # receiver -> value of the lots it took, minor units
    for instrument, remainder in remainders.items():
        if remainder:
            for holder, value in _transfer(
                engine, defaulter, engine.instruments[instrument], remainder
            ):
                taken[holder] = taken.get(holder, 0) + value
    shortfall = max(0, -defaulter.cash)
    # only what a holder took of value can be cut back: lots worth nothing (far out-of-the-money
    # protection) or less than nothing leave it out of the haircut
    valued = {holder: value for holder, value in taken.items() if value > 0}
    if shortfall and valued:
        for holder, cut in _pro_rata(min(shortfall, sum(valued.values())), valued).items():
            _haircut(engine, holder, name, cut, "adl")
    shortfall = max(0, -defaulter.cash)
    gains = {}
    for account_name, by_instrument in sorted(engine.cycle_gains.items()):
        gained = sum(by_instrument.values())
        # a closed-out defaulter takes part in nothing, not even a later default's recovery
        if account_name != name and account_name not in engine.defaulted and gained > 0:
            gains[account_name] = gained
    for account_name in sorted(gains, key=lambda n: (-gains[n], n)):
        if not shortfall:
            break
        cut = min(shortfall, gains[account_name])
        _haircut(engine, account_name, name, cut, "vm_gains")
        shortfall -= cut


def _band(engine: Venue, listing: Listing, buying: bool) -> int:
    band = engine.margin.closeout_band_ppm if engine.margin is not None else 100_000
    mark = listing.mark
    if buying:
        return min(listing.spec.max_price, mark + (mark * band + PPM - 1) // PPM)
    return max(1, mark - mark * band // PPM)


def _through_book(
    engine: Venue,
    defaulter: Account,
    listing: Listing,
    position: int,
    reason: str = "closeout",
) -> None:
    """A reduce-only IOC for the whole position, bounded at the mark -+ the band."""
    buying = position < 0
    side = 0 if buying else 1
    qty = abs(position)
    limit = _band(engine, listing, buying)
    order_id = engine.next_order_id
    engine.next_order_id += 1
    engine.emit(
        ev.CLOSE_OUT,
        instrument=listing.spec.name,
        account=defaulter.name,
        order_id=order_id,
        side="buy" if buying else "sell",
        price=limit,
        qty=qty,
        data={"reason": reason},
    )
    listing.book.submit(order_id, defaulter.index, side, limit, qty, 1)  # IOC
    engine.after_match(listing, defaulter, order_id, side, limit, reason)


def liquidate_perpetuals(engine: Venue, requirements: dict[str, tuple[int, int]]) -> list:
    """Accounts below maintenance margin have their perpetual positions liquidated at once,
    through the book, with the same bounded reduce-only IOC orders as a close-out (reason
    ``liquidation``), as venues do, before any call runs its course; whatever the book does
    not take stays, and the call that follows covers it. Returns the instruments touched."""
    touched = []
    for account in engine.sorted_accounts():
        im_mm = requirements.get(account.name)
        if im_mm is None or account.name in engine.defaulted or account.cash >= im_mm[1]:
            continue
        for instrument, listing in engine.instruments.items():
            position = account.positions.get(instrument, 0)
            if listing.kind == "perp" and position and listing.mark is not None:
                engine.cancel_orders_in(account.name, instrument)
                _through_book(engine, account, listing, position, "liquidation")
                if instrument not in touched:
                    touched.append(instrument)
    return touched


def check_maintenance(engine: Venue, instrument: str) -> None:
    """The per-mark maintenance check of one perpetual, run by ``Exchange.mark`` right after
    its ``MarkPrice`` when margin is on (perpetual venues check continuously, not once a day).

    Every account holding ``instrument`` (by name; defaulted accounts are the default
    manager's) is measured at the current marks: equity = cash + unsettled variation margin
    of all its positions (``exchange.risk.margin_cycle.equity``) against its maintenance margin
    (``MarginConfig.requirements`` for just that account: tiers for its perpetuals, the grid
    for its swaps; skipped when equity is at or above :func:`_maintenance_at_most`, an upper
    bound of it that needs no grid). Below it, its resting orders in ``instrument`` are
    cancelled and the position is liquidated through the book as :func:`liquidate_perpetuals`
    does (reduce-only IOC, reason ``liquidation``, within the close-out band). Only this
    perpetual is liquidated: the account's other perpetuals are checked at their own marks.

    Variation margin is not settled here: the liquidation's realised loss stays in the VM
    basis, so the account's equity (and the next check) sees it at once, but its cash moves
    only at the next margin cycle, like every other mark-to-market."""
    listing = engine.instruments[instrument]
    defaulted = engine.defaulted
    holders = [
        account
        for account in engine.sorted_accounts()
        if account.positions.get(instrument, 0) and account.name not in defaulted
    ]
    if not holders:
        return
    # what every holder's measure shares at this mark (the marks, the rules, the swaps' worst
    # puts): read once for all of them, not once per holder
    bound = _MaintenanceBound(engine)
    for account in holders:
        # measured in turn, so a holder that took lots in an earlier holder's liquidation is
        # measured with them
        position = account.positions.get(instrument, 0)
        if not position:
            continue
        value = equity(engine, account.name, bound.valued)
        if value >= bound.at_most(account):
            continue  # safe whatever the grid says: spares the grid's cost at most marks
        mm = engine.margin.requirements(engine, [account.name])[account.name][1]
        if value >= mm:
            continue
        engine.cancel_orders_in(account.name, instrument)
        _through_book(engine, account, listing, position, "liquidation")
        # the liquidation moved positions (the open interest) and cash: measure the holders
        # left from the engine as it now stands
        bound = _MaintenanceBound(engine)


def _maintenance_at_most(engine: Venue, account: Account) -> int:
    """An upper bound (minor units) on the account's maintenance margin
    (``MarginConfig.requirements`` at the engine's ratings), without the grid:
    :meth:`_MaintenanceBound.at_most` at the engine as it stands."""
    return _MaintenanceBound(engine).at_most(account)


class _MaintenanceBound:
    """:meth:`at_most`, an upper bound on an account's maintenance margin without the grid,
    with what it reads of the engine at one instant read once: the live listings (not expired,
    marked), the margin rule's constants, each swap's worst loss per sold contract (computed
    at its first seller, :func:`_put_at_worst`) and the swaps' open interest (at the first
    account it concentrates). Valid while the engine's marks, indices, time, ratings and
    positions do not move: the per-mark check builds one per mark, and a new one after each
    liquidation."""

    __slots__ = (
        "_credit",
        "_credit_max",
        "_engine",
        "_interest",
        "_puts",
        "cds",
        "conc_ppm",
        "floor_mm",
        "maintenance_ppm",
        "params",
        "perps",
        "swaps",
        "threshold_ppm",
        "valued",
    )

    def __init__(self, engine: Venue) -> None:
        self._engine = engine
        params = self.params = engine.margin.params
        self.maintenance_ppm = params.maintenance_ppm
        self.floor_mm = -(-params.min_im * params.maintenance_ppm // PPM)
        self.conc_ppm = params.concentration_addon_ppm
        self.threshold_ppm = params.concentration_threshold_ppm
        # the credit add-on of each rating (index of ``params.rating_scale``), as the grid
        # charges it (``exchange.risk.margin.initial_margin``); the largest for a rating the
        # grid would refuse (it raises there: the bound stays what it was before ratings)
        addons = [addon for _, addon in params.credit_tiers]
        self._credit = [0, *addons]
        self._credit_max = max(addons, default=0)
        self.perps: list = []  # (name, notional of a lot, MM tiers) of the live perpetuals
        self.swaps: list = []  # (name, listing) of the live swaps
        self.cds = False  # whether a listed CDS is live (``cds_margin`` has work)
        # what ``equity`` walks: ``margin_cycle.valued_listings``, built in the same pass
        self.valued: list = []
        bilateral = engine.margin.bilateral
        for name, listing in engine.instruments.items():
            if listing.expired or listing.mark is None:
                continue
            spec = listing.spec
            kind = spec.kind  # ``Listing.kind``, inlined (every mark)
            if kind == "perp":
                # a lot's notional at the mark, and the tiers' (size limit, MM rate): what
                # ``tier_margin`` reads, read once for every holder
                self.perps.append((name, listing.mark * spec.tick_value, _mm_rates(spec)))
            elif kind == "rvs":
                self.swaps.append((name, listing))
                if bilateral:
                    continue  # no variation margin: not in equity
            elif kind == "cds":
                self.cds = True
            elif kind == "spot":
                continue
            self.valued.append((name, listing, kind))
        self._puts: dict[str, int] = {}
        self._interest: dict[str, int] | None = None

    def at_most(self, account: Account) -> int:
        """An upper bound (minor units) on the account's maintenance margin
        (``MarginConfig.requirements``, at its rating ``engine.ratings``), without the grid:
        exact for an account without swaps (its perpetuals' tier MMs, its listed CDS's margin
        and the ``min_im`` floor); for swaps, the grid's margin bounded by each leg's largest
        possible loss -- a protection buyer loses at most the protection's value (its contract
        value at the last mark, ``Listing.unit_value``: a put loses value as its term shortens,
        and the grid's value cannot fall below 0), a seller at most the put's value in the
        grid's most adverse corner (the largest index fall with the largest volatility rise:
        the put falls with the index and rises with volatility) -- with the concentration
        add-on on the legs the grid finds concentrated (the same integer test), at most each
        such leg's bound, and the credit add-on of the account's rating (the grid's), and slack
        for the grid's float rounding (1 minor unit and 10**-6 a leg, 1 minor unit overall; the
        grid's put agrees with the scalar one used here to about 10**-15). Equity at or above
        it is at or above the exact maintenance margin, so the per-mark check can skip the grid
        for such accounts: two scalar puts per sold swap and mark instead of the grid."""
        positions = account.positions
        perp_mm = 0
        for name, unit, rates in self.perps:
            lots = positions.get(name, 0)
            if lots:
                # ``tier_margin``'s MM, inlined (every holder, every mark): the first tier that
                # holds the size, else the last; floor(|lots| x mark x tick_value x rate / 10**6)
                size = abs(lots)
                rate = rates[-1][1]
                for most, tier_rate in rates:
                    if size <= most:
                        rate = tier_rate
                        break
                perp_mm += size * unit * rate // PPM
        loss = 0  # bound on the swaps' worst loss, minor units
        concentrated = 0  # the part of it on legs the grid finds concentrated
        for name, listing in self.swaps:
            lots = positions.get(name, 0)
            if not lots:
                continue
            if lots > 0:
                per_lot = max(0, listing.unit_value)
            else:
                per_lot = self._puts.get(name)
                if per_lot is None:
                    per_lot = _put_at_worst(self._engine, listing.spec, self.params)
                    self._puts[name] = per_lot
            leg = abs(lots) * (per_lot + 1 + per_lot // PPM)
            loss += leg
            if self.conc_ppm and self._concentrated(name, lots):
                concentrated += leg
        if self.cds:  # listed CDS: their margin exactly, as ``requirements`` adds it
            cds_im = cds_margin(self._engine, [account.name]).get(account.name, 0)
            perp_mm += -(-cds_im * self.maintenance_ppm // PPM)
        if not loss:
            return max(self.floor_mm, perp_mm)
        rating = self._engine.ratings.get(account.name, 0)
        credit = self._credit[rating] if 0 <= rating < len(self._credit) else self._credit_max
        pre_credit = loss * PPM + concentrated * self.conc_ppm  # x 10**6
        im = -(-pre_credit * (PPM + credit) // (PPM * PPM)) + 1
        return max(self.floor_mm, perp_mm + -(-im * self.maintenance_ppm // PPM))

    def _concentrated(self, name: str, lots: int) -> bool:
        """Whether the grid finds a position of ``lots`` in swap ``name`` concentrated:
        ``|lots| x 10**6 > threshold x open interest`` (``initial_margin``), the open interest
        over every account as ``MarginConfig._swap_book`` counts it."""
        if self._interest is None:
            accounts = self._engine.accounts.values()
            self._interest = {
                swap: sum(max(0, a.positions.get(swap, 0)) for a in accounts)
                for swap, _ in self.swaps
            }
        return abs(lots) * PPM > self.threshold_ppm * self._interest[name]


#: ``id(spec) -> (spec, its MM tiers)`` of :func:`_mm_rates`; the entry holds the spec, so
#: its id cannot be reused by another object while the entry lives.
_RATES: dict[int, tuple[Any, list[tuple[int, int]]]] = {}


def _mm_rates(spec: Any) -> list[tuple[int, int]]:
    """A perpetual spec's tiers as ``(max_position_lots, maintenance_margin_ppm)``, in order,
    kept by the spec object (frozen; a changed spec, ``model_copy(update=...)``, is another
    object and is read afresh): every mark reads them, and reading them off the tier models
    costs more than the rest of a holder's bound."""
    hit = _RATES.get(id(spec))
    if hit is None or hit[0] is not spec:
        if len(_RATES) >= 256:  # specs come and go only with listings: a bound, not a policy
            _RATES.clear()
        rates = [(t.max_position_lots, t.maintenance_margin_ppm) for t in spec.margin_tiers]
        hit = _RATES[id(spec)] = (spec, rates)
    return hit[1]


def _put_at_worst(engine: Venue, spec, params) -> int:
    """The most a swap contract's seller can lose on the grid (minor units, rounded up): its
    value in the grid's most adverse corner less its value now, at most the protected amount
    ``floor x gpus x 100`` (a put never pays more)."""
    tick, protected, floor = _swap_terms(spec.floor, spec.index_tick_size, spec.gpus_per_contract)
    years = max(0, engine.date_ns(spec.maturity) - engine.t) / YEAR_NS
    level = float(engine.indices[spec.resale_index] * tick)
    worst = rvs_model_value(
        level * (1.0 + min(params.index_shocks)),
        floor,
        spec.volatility * (1.0 + max(params.vol_shocks)),
        years,
        spec.gpus_per_contract,
    )
    now = rvs_model_value(level, floor, spec.volatility, years, spec.gpus_per_contract)
    return min(protected, math.ceil(max(0.0, worst - now) * MINOR_PER_UNIT) + 1)


@functools.lru_cache(maxsize=256)
def _swap_terms(floor: int, index_tick_size, gpus: int) -> tuple[Decimal, int, float]:
    """A swap's index tick (Decimal, currency units), its protected amount per contract plus
    one (minor units) and its floor (float, currency units per GPU), from the spec's fields
    (memoised on the fields, not on the spec: a changed spec cannot read a stale value)."""
    tick = Decimal(index_tick_size)
    protected = int(Decimal(floor) * tick * gpus * MINOR_PER_UNIT) + 1
    return tick, protected, float(floor * tick)


def _auction(engine: Venue, defaulter: Account, listing: Listing, remainder: int) -> None:
    """Step 1b: what the book did not take is auctioned to the session's standing bidders
    (``MarginConfig.auction_bidders``: members committed to bid in default auctions, as CCP
    members are), cheapest discount first (then by name), each up to its size, at the mark
    less its discount for the side it takes (``AuctionAward``). The discount is the defaulter's
    cost: it reaches its cash through the variation margin that follows."""
    bidders = engine.margin.auction_bidders if engine.margin is not None else []
    for bidder in sorted(bidders, key=lambda b: (b.discount_ppm, b.account)):
        account = engine.accounts.get(bidder.account)
        if not remainder or account is None or account.name in engine.defaulted:
            continue
        if account.name == defaulter.name:
            continue
        take = min(abs(remainder), bidder.max_lots)
        delta = take if remainder > 0 else -take  # what the bidder receives
        step = listing.mark * bidder.discount_ppm // PPM
        price = listing.mark - step if delta > 0 else listing.mark + step
        price = min(max(price, 1), listing.spec.max_price)
        _hand_over(engine, ev.AUCTION_AWARD, listing, account, defaulter, delta, price)
        remainder -= delta


def _hand_over(
    engine: Venue,
    kind: str,
    listing: Listing,
    receiver: Account,
    defaulter: Account,
    delta: int,
    price: int,
) -> None:
    """Move ``delta`` lots from the defaulter to ``receiver`` at ``price`` and say so (an
    ``AuctionAward`` or a ``Deleveraged``; the fold applies both the same way)."""
    change = move_lots(listing, receiver, defaulter, delta, price)
    engine.emit(
        kind,
        instrument=listing.spec.name,
        account=receiver.name,
        qty=delta,
        price=price,
        amount=change,
        counterparty=defaulter.name,
    )


def _ranked(engine: Venue, instrument: str, opposite_sign: int, exclude: str) -> list:
    """Accounts holding a position of ``opposite_sign`` in ``instrument``, ranked as venues
    rank auto-deleveraging, by profit times leverage: (its variation-margin profit on the
    instrument / position value) x (position value / cash) = profit / cash, highest first
    (then by name)."""
    profit = engine.vm_profit
    holders = [
        a
        for a in engine.sorted_accounts()
        if a.name != exclude
        and a.name not in engine.defaulted
        and a.positions.get(instrument, 0) * opposite_sign > 0
    ]
    return sorted(
        holders,
        key=lambda a: (
            -(profit.get(a.name, {}).get(instrument, 0) * PPM // max(1, a.cash)),
            a.name,
        ),
    )


def _transfer(
    engine: Venue, defaulter: Account, listing: Listing, remainder: int
) -> list[tuple[str, int]]:
    """Move ``remainder`` lots to the ranked opposite holders at the mark; returns each
    receiver with the value (minor units) of the lots it took."""
    instrument = listing.spec.name
    price = listing.mark
    taken = []
    for holder in _ranked(engine, instrument, -1 if remainder > 0 else 1, defaulter.name):
        if not remainder:
            break
        take = min(abs(remainder), abs(holder.positions[instrument]))
        delta = take if remainder > 0 else -take  # lots the holder receives (signed)
        _hand_over(engine, ev.DELEVERAGED, listing, holder, defaulter, delta, price)
        remainder -= delta
        unit = price * listing.spec.tick_value if listing.kind == "perp" else listing.unit_value
        taken.append((holder.name, abs(delta) * unit))
    return taken


def _draw_funds(engine: Venue, name: str) -> None:
    """Step 3: own contribution, insurance fund, the other members' contributions."""
    defaulter = engine.accounts[name]
    shortfall = -defaulter.cash
    if shortfall <= 0:
        return
    own = min(shortfall, engine.contributions.get(name, 0))
    if own:
        engine.contributions[name] -= own  # before the draw's event, which announces it
        _draw(engine, name, "own", own)
        shortfall -= own
    insured = min(shortfall, engine.pools["insurance"])
    if insured:
        _draw(engine, name, "insurance", insured)
        shortfall -= insured
    # the surviving members mutualise the loss; what is left of a closed-out defaulter's own
    # contribution stays in the fund, owed to its estate, and is never drawn for another default
    members = {
        m: c
        for m, c in sorted(engine.contributions.items())
        if m != name and m not in engine.defaulted and c > 0
    }
    if shortfall and members:
        for member, share in _pro_rata(min(shortfall, sum(members.values())), members).items():
            if share:
                engine.contributions[member] -= share
                engine.pools["default_fund"] -= share
                defaulter.cash += share
                engine.emit(ev.DEFAULT_FUND_LOSS, account=member, amount=share, counterparty=name)


def _haircut(engine: Venue, account: str, defaulter: str, amount: int, step: str) -> None:
    if amount:
        engine.accounts[account].cash -= amount
        engine.accounts[defaulter].cash += amount
        engine.emit(
            ev.HAIRCUT, account=account, amount=-amount, counterparty=defaulter, data={"step": step}
        )


def _draw(engine: Venue, name: str, step: str, amount: int) -> None:
    """Pay ``amount`` from a fund to the defaulter, then say so (``WaterfallDraw``). For step
    ``own`` the caller has already taken it off the defaulter's contribution, so the default
    fund equals the contributions left at the event as at every other."""
    pool = "insurance" if step == "insurance" else "default_fund"
    engine.pools[pool] -= amount
    engine.accounts[name].cash += amount
    engine.emit(ev.WATERFALL_DRAW, account=name, side=step, amount=amount)


def _pro_rata(total: int, weights: dict[str, int]) -> dict[str, int]:
    """Split ``total`` (<= sum of weights) in proportion to ``weights``, exactly: floors, then
    the remainder a unit each to the largest fractional parts (ties by name)."""
    whole = sum(weights.values())
    shares = {k: total * w // whole for k, w in weights.items()}
    left = total - sum(shares.values())
    order = sorted(weights, key=lambda k: (-(total * weights[k] % whole), k))
    for k in order[:left]:
        shares[k] += 1
    return shares
