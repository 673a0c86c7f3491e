"""Bilateral clearing of residual value swaps: AIG's world (docs/margin.md, "Bilateral
clearing (CSA)").

With ``MarginConfig.clearing = "bilateral"`` swaps still trade on the exchange's book (price
discovery is unchanged), but no clearing house stands between the two sides of a fill: each
fill is a **contract** between its taker and its maker, and the exchange only keeps the books
of those contracts and the collateral the parties post to each other. Swaps then get no
variation margin and no initial margin; perpetuals stay cleared exactly as before.

**Contracts.** :data:`Contracts` maps ``(a, b, instrument)`` with ``a < b`` (names) to
``[lots, basis]``: ``b`` holds ``lots`` lots of protection sold by ``a`` (negative: ``a`` holds
them from ``b``), on a premium basis of ``basis`` ticks x lots (``b``'s side). Trades between
the same two parties net within the pair (one ISDA master agreement per pair), so an
account's position and premium basis are the sums, signed, of its contracts.

**Collateral** (one CSA per pair of counterparties, :class:`CsaTerms`): at every margin cycle,
for each pair, the exposure of the buyer to the seller is the value of its protection from
that seller at the mark, summed over the pair's instruments (``variation.position_value``:
the protection less the premiums still owed on its basis; positive: the seller owes). The
credit support amount is ``max(0, exposure - threshold)``, the threshold the poster's, by its
rating, once per pair. ``Delivery = support - posted``: made (``CollateralPosted``, seller's
cash -> the ``collateral`` pool) when at least the minimum transfer and covered by the
seller's cash, else owed (the margin cycle calls the seller for it); a return
(``posted - support``, at least the minimum transfer) comes back the same way with a negative
amount. A pair whose contracts are all gone gets back all it posted, whatever the minimum.

**Default** (:func:`default`): for each counterparty of the defaulter, its contracts are
terminated at the mark (``ProtectionTerminated``, V owed to the counterparty), the collateral
posted to it is applied (``CollateralApplied``), its unsecured claim ``max(0, V - C)`` is
recovered at ``recovery_ppm`` (``RecoveryPaid``: from the defaulter's cash at the exchange
first, the rest external money from the estate), and a buyer re-hedges with a dealer
(``Rehedged``: it pays ``V x (1 + s)``, rounded up, and gets the same lots at its old basis).
No default fund, insurance fund or haircut is used for bilateral swaps.

The engine opens the bilateral books at the first swap fill of a bilateral session (a
``PoolFunded`` of 0 to the ``collateral`` pool), which is how the fold, which reads no payload,
learns that swap fills make contracts from there on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from exchange.core import events as ev
from exchange.risk.contracts import (  # noqa: F401 - re-exported: the books' names
    COLLATERAL,
    Contracts,
    Posted,
    add_to_contract,
    drop_instrument,
    held,
    move_posted,
    state_of,
)
from exchange.risk.variation import position_value

if TYPE_CHECKING:
    from exchange.core.venue import Venue

PPM = 1_000_000
_Money = Annotated[StrictInt, Field(ge=0, le=2**62)]


class CsaTerms(BaseModel):
    """The credit support annex every pair of counterparties signs (one CSA per pair).

    Attributes:
        threshold_by_rating: unsecured exposure a poster may run before it must post, minor
            units, one per entry of ``MarginParams.rating_scale`` (best rating first),
            non-increasing as the rating falls: AIG's CSAs cut the threshold on a downgrade,
            so each downgrade brings calls from every counterparty at once.
        minimum_transfer: a delivery or a return smaller than this is not made, minor units.
        recovery_ppm: what an unsecured claim on a defaulter recovers, ppm (about 40 % for
            senior unsecured debt: Moody's long-run average recovery, and the ISDA CDS
            convention of 40 %).
        rehedge_spread_ppm: what a buyer pays over the mark to replace its protection after
            the default, ppm of the value replaced (a stressed market: dealers widen).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold_by_rating: list[_Money] = Field(min_length=1)
    minimum_transfer: _Money = 0
    recovery_ppm: Annotated[StrictInt, Field(ge=0, le=PPM)] = 400_000
    rehedge_spread_ppm: Annotated[StrictInt, Field(ge=0, le=10 * PPM)] = 0

    @field_validator("threshold_by_rating")
    @classmethod
    def _falling(cls, thresholds: list[int]) -> list[int]:
        for better, worse in zip(thresholds, thresholds[1:], strict=False):
            if worse > better:
                raise ValueError(
                    "thresholds must not rise as the rating falls: "
                    f"{worse} after {better} (best rating first)"
                )
        return thresholds

    def threshold(self, rating: int) -> int:
        """The threshold (minor units) of a poster at ``rating`` (index of the scale)."""
        return self.threshold_by_rating[rating]


def is_bilateral(engine: Venue) -> bool:
    """Whether the session clears its swaps bilaterally."""
    margin = engine.margin
    return margin is not None and margin.clearing == "bilateral"


def open_books(engine: Venue) -> None:
    """Open the contracts, the collateral record and the ``collateral`` pool, then say so
    (``PoolFunded`` of 0 to ``collateral``: external money of nothing, the fold's sign that
    swap fills make contracts from here on). At most once a session."""
    if engine.contracts is not None:
        return
    engine.contracts = {}
    engine.posted = {}
    engine.pools[COLLATERAL] = 0
    engine.emit(ev.POOL_FUNDED, side=COLLATERAL, amount=0)


def record_fill(engine: Venue, instrument: str, taker: str, maker: str, delta: int, price: int):
    """A swap fill of ``delta`` lots (received by the taker) at ``price`` ticks becomes a
    contract between taker and maker (before the ``Fill`` that announces it)."""
    add_to_contract(engine.contracts, taker, maker, instrument, delta, price * delta)


def _value(engine: Venue, instrument: str, lots: int, basis: int) -> int:
    """The value (minor units) to its holder of ``lots`` of protection on ``basis`` at the
    last mark: ``exchange.risk.variation.position_value``, as a cleared swap would be valued."""
    listing = engine.instruments[instrument]
    if listing.mark is None:
        return -basis * listing.spec.tick_value * listing.periods_left
    return position_value(
        "rvs",
        lots,
        listing.mark,
        listing.spec.tick_value,
        listing.unit_value,
        basis,
        listing.periods_left,
    )


def counterparties(engine: Venue, name: str) -> list[str]:
    """Every account with a contract or collateral with ``name``, sorted."""
    others = {b if a == name else a for a, b, _ in engine.contracts if name in (a, b)}
    others |= {r if p == name else p for p, r in engine.posted if name in (p, r)}
    return sorted(others)


def _pair(engine: Venue, poster: str, receiver: str) -> tuple[int, bool]:
    """The exposure of ``receiver`` to ``poster`` (the value of the protection it holds from
    it, summed over the pair's instruments, minor units) and whether any contract is live."""
    exposure, live = 0, False
    for a, b, instrument in sorted(engine.contracts):
        if {a, b} == {poster, receiver}:
            lots, basis = held(engine.contracts, receiver, poster, instrument)
            exposure += _value(engine, instrument, lots, basis)
            live = True
    return exposure, live


def credit_extra(engine: Venue, name: str) -> int:
    """What a bilateral account owns beyond its exchange equity, minor units: the collateral
    it has posted (still its own) and its swaps at the mark (no variation margin moved them
    into cash). Added to equity for its capital ratio (``MarginConfig.credit_standing``)."""
    if engine.contracts is None:
        return 0
    extra = sum(amount for (poster, _), amount in engine.posted.items() if poster == name)
    account = engine.accounts[name]
    for instrument, listing in engine.instruments.items():
        if listing.kind != "rvs" or listing.expired:
            continue
        lots, basis = account.positions.get(instrument, 0), account.basis.get(instrument, 0)
        if lots or basis:
            extra += _value(engine, instrument, lots, basis)
    return extra


def _post(engine: Venue, poster: str, receiver: str, amount: int, data: dict) -> None:
    """Move ``amount`` of ``poster``'s cash into the pool as collateral for ``receiver``
    (negative: back), then announce it (``CollateralPosted``)."""
    engine.accounts[poster].cash -= amount
    engine.pools[COLLATERAL] += amount
    move_posted(engine.posted, poster, receiver, amount)
    engine.emit(
        ev.COLLATERAL_POSTED, account=poster, counterparty=receiver, amount=amount, data=data
    )


def collateralise(engine: Venue, name: str) -> int:
    """The CSA step of one account at a margin cycle, as poster, counterparties by name:
    returns first (they free cash), then deliveries, each made in full when its cash covers
    it. Returns what it owes and could not deliver (minor units), which the cycle calls."""
    if engine.contracts is None:
        return 0
    terms = engine.margin.csa
    rating = engine.ratings.get(name, 0)
    threshold = terms.threshold(rating)
    rating_name = engine.margin.params.rating_scale[rating]
    mta = terms.minimum_transfer
    pairs = []
    for other in counterparties(engine, name):
        exposure, live = _pair(engine, name, other)
        support = max(0, exposure - threshold) if live else 0
        pairs.append((other, exposure, live, support))
    owed = 0
    for other, exposure, live, support in pairs:
        back = engine.posted.get((name, other), 0) - support
        if back > 0 and (back >= mta or not live):
            data = _csa_data(exposure, threshold, support, rating_name)
            _post(engine, name, other, -back, data)
    account = engine.accounts[name]
    for other, exposure, _live, support in pairs:
        delivery = support - engine.posted.get((name, other), 0)
        if delivery <= 0 or delivery < mta:
            continue
        if account.cash >= delivery:
            _post(
                engine, name, other, delivery, _csa_data(exposure, threshold, support, rating_name)
            )
        else:
            owed += delivery
    return owed


def _csa_data(exposure: int, threshold: int, support: int, rating: str) -> dict:
    return {"exposure": exposure, "threshold": threshold, "support": support, "rating": rating}


# ---------------------------------------------------------------- default
def default(engine: Venue, name: str) -> None:
    """Terminate every contract of the defaulter ``name`` (after the cleared close-out of
    its perpetuals). Counterparties that owe the defaulter on net pay first (their payment
    reaches its cash, which pays recoveries first), then by name; for each:

    1. collateral it posted to the defaulter comes back (``CollateralPosted``, negative: the
       pool holds it segregated, so the defaulter cannot have spent it);
    2. each contract with the defaulter, by instrument, is terminated at the mark
       (``ProtectionTerminated``: qty the lots it held, amount V owed to it);
    3. with ``V`` the pair's net: the collateral the defaulter posted to it is applied up
       to ``V`` (``CollateralApplied``, pool -> it), any excess going back to the defaulter
       (``CollateralPosted``, negative); a negative ``V`` it pays into the defaulter's account
       (``TerminationPaid``);
    4. its unsecured claim ``max(0, V - C)`` recovers ``recovery_ppm`` of it, rounded down
       (``RecoveryPaid``): the defaulter's cash at the exchange pays first, the rest is
       external money from its estate (counted as deposited, like a deposit);
    5. each contract in which it held protection is replaced (``Rehedged``): it pays
       ``V_i + ceil(|V_i| x s)`` to the dealer -- the first of ``margin.auction_bidders``
       that is neither it nor a defaulter -- and takes the same lots from it at the same
       premium basis. Without such a dealer it stays unhedged.
    """
    if engine.contracts is None:
        return
    terms = engine.margin.csa
    defaulter = engine.accounts[name]
    plans = []
    for other in counterparties(engine, name):
        terminated = []
        for a, b, instrument in sorted(engine.contracts):
            if {a, b} == {name, other}:
                lots, basis = held(engine.contracts, other, name, instrument)
                terminated.append((instrument, lots, basis))
        net = sum(_value(engine, i, lots, basis) for i, lots, basis in terminated)
        plans.append((net, other, terminated))
    for _net, other, terminated in sorted(plans, key=lambda p: (p[0] > 0, p[1])):
        _terminate(engine, terms, defaulter, engine.accounts[other], terminated)


def _terminate(engine: Venue, terms: CsaTerms, defaulter, account, terminated) -> None:
    name, other = defaulter.name, account.name
    own = engine.posted.get((other, name), 0)
    if own:
        _post(engine, other, name, -own, _csa_data(0, 0, 0, _rating(engine, other)))
    values = []
    for instrument, lots, basis in terminated:
        value = _value(engine, instrument, lots, basis)
        add_to_contract(engine.contracts, other, name, instrument, -lots, -basis)
        for holder, sign in ((account, -1), (defaulter, 1)):
            _shift(holder, instrument, sign * lots, sign * basis)
        engine.emit(
            ev.PROTECTION_TERMINATED,
            instrument=instrument,
            account=other,
            counterparty=name,
            qty=lots,
            amount=value,
            price=engine.instruments[instrument].mark,
        )
        values.append(value)
    net = sum(values)
    posted = engine.posted.get((name, other), 0)
    applied = min(posted, max(0, net))
    if applied:
        move_posted(engine.posted, name, other, -applied)
        engine.pools[COLLATERAL] -= applied
        account.cash += applied
        engine.emit(ev.COLLATERAL_APPLIED, account=other, counterparty=name, amount=applied)
    if posted - applied:
        _post(engine, name, other, applied - posted, _csa_data(net, 0, 0, _rating(engine, name)))
    if net < 0:
        account.cash += net
        defaulter.cash -= net
        engine.emit(ev.TERMINATION_PAID, account=other, counterparty=name, amount=net)
    claim = max(0, net - applied)
    if claim:
        recovered = claim * terms.recovery_ppm // PPM
        from_estate = min(recovered, max(0, defaulter.cash))
        defaulter.cash -= from_estate
        account.cash += recovered
        engine.deposited += recovered - from_estate
        engine.emit(
            ev.RECOVERY_PAID,
            account=other,
            counterparty=name,
            amount=recovered,
            data={
                "claim": claim,
                "recovery_ppm": terms.recovery_ppm,
                "from_estate": from_estate,
            },
        )
    dealer = _dealer(engine, name, other)
    if dealer is None:
        return
    spread = terms.rehedge_spread_ppm
    for (instrument, lots, basis), value in zip(terminated, values, strict=True):
        if lots <= 0:
            continue  # it sold (or held no) protection there: nothing to replace
        paid = value + -(-abs(value) * spread // PPM)
        account.cash -= paid
        dealer.cash += paid
        add_to_contract(engine.contracts, other, dealer.name, instrument, lots, basis)
        _shift(account, instrument, lots, basis)
        _shift(dealer, instrument, -lots, -basis)
        engine.emit(
            ev.REHEDGED,
            instrument=instrument,
            account=other,
            counterparty=dealer.name,
            qty=lots,
            price=basis,
            amount=-paid,
            data={"value": value, "spread_ppm": spread},
        )


def _shift(account, instrument: str, lots: int, basis: int) -> None:
    """Move an account's position and premium basis (zeros dropped, as ``Account`` keeps)."""
    for book, change in ((account.positions, lots), (account.basis, basis)):
        left = book.get(instrument, 0) + change
        if left:
            book[instrument] = left
        else:
            book.pop(instrument, None)


def _rating(engine: Venue, name: str) -> str:
    return engine.margin.params.rating_scale[engine.ratings.get(name, 0)]


def _dealer(engine: Venue, defaulter: str, buyer: str):
    """The replacement dealer: the first standing auction bidder (configuration order) that
    is neither the buyer nor a defaulter."""
    for bidder in engine.margin.auction_bidders:
        name = bidder.account
        if name in (defaulter, buyer) or name in engine.defaulted or name not in engine.accounts:
            continue
        return engine.accounts[name]
    return None
