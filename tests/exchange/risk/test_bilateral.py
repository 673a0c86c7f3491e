"""Bilateral clearing of swaps (``exchange.risk.bilateral``, issue #19 point 4): collateral under a
CSA instead of a clearing house's margin, and, at a seller's default, termination at the mark,
collateral, recovery and re-hedging instead of the waterfall.

The sessions are built by hand: a guarantor ``g`` sells protection on ``H100-RVS`` to ``o``
(100 lots) and ``l`` (50 lots) at the model's premium, and the resale index falls day by day;
``dealer`` is the standing auction bidder, so the replacement dealer after a default.
"""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from exchange.core import events as ev
from exchange.kernel.engine import DAY_NS, Exchange
from exchange.risk.bilateral import CsaTerms
from exchange.risk.margin import MarginParams
from exchange.risk.margin_cycle import AuctionBidder, MarginConfig
from exchange.store.fold import Fold
from tests.markets import START, perp_spec, rvs_spec

SWAP = rvs_spec(maturity=date(2025, 6, 1), floor=9_000)
PERP = perp_spec()
#: A $10k / $2.5k / $0 threshold by rating (A, BBB, BB), $500 minimum transfer, 40 % recovery,
#: 20 % re-hedge spread.
CSA = CsaTerms(
    threshold_by_rating=[1_000_000, 250_000, 0],
    minimum_transfer=50_000,
    recovery_ppm=400_000,
    rehedge_spread_ppm=200_000,
)
#: Ratings A, BBB (capital ratio below 10 %), BB (below 5 %), with no credit add-on: the
#: rating moves only the CSA's threshold.
PARAMS = MarginParams(credit_tiers=[(100_000, 0), (50_000, 0)])
PREMIUM = 68  # ticks: the model's premium at the index of 10,000 the sessions start at
RICH = 10**10


class Session:
    """One hand-built session; ``clearing``, the CSA and the guarantor's cash vary."""

    def __init__(
        self,
        g_cash: int,
        *,
        clearing: str = "bilateral",
        csa: CsaTerms | None = CSA,
        perp: bool = False,
        sales: tuple[tuple[str, int], ...] = (("o", 100), ("l", 50)),
    ) -> None:
        self.events: list = []
        self.engine = engine = Exchange(self.events.append)
        engine.epoch = START
        engine.start("test", 1, {})
        engine.list_instrument(SWAP)
        if perp:
            engine.list_instrument(PERP)
        engine.margin = MarginConfig(
            interval_ns=DAY_NS,
            cure_ns=2 * DAY_NS,
            index_move_trigger_ppm=0,  # cycles only when a test runs one
            params=PARAMS,
            auction_bidders=[AuctionBidder(account="dealer", discount_ppm=50_000, max_lots=1_000)],
            clearing=clearing,
            csa=csa,
        )
        for name, cash in (("dealer", RICH), ("g", g_cash), ("l", RICH), ("o", RICH)):
            engine.open_account(name)
            engine.credit(name, cash)
            engine.contribute(name, 100_000)
        engine.fund_pool("insurance", 1_000_000)
        engine.publish_index(SWAP.resale_index, 10_000)
        if perp:
            engine.publish_index(PERP.underlying, 2_000)
        for buyer, lots in sales:
            self.trade(SWAP.name, "g", buyer, PREMIUM, lots)

    def trade(self, instrument: str, seller: str, buyer: str, price: int, qty: int) -> None:
        for account, side in ((seller, "sell"), (buyer, "buy")):
            result = self.engine.handle(
                dict(
                    type="submit",
                    account=account,
                    instrument=instrument,
                    side=side,
                    price=price,
                    qty=qty,
                )
            )
            assert result.ok, result.reason

    def day(self, day: int, resale: int, rental: int | None = None) -> list:
        """Print the indices at midnight of ``day`` and run its margin cycle; returns the
        day's events."""
        mark = len(self.events)
        self.engine.advance(day * DAY_NS)
        self.engine.publish_index(SWAP.resale_index, resale)
        if rental is not None:
            self.engine.publish_index(PERP.underlying, rental)
        self.engine.margin_cycle()
        return self.events[mark:]

    def exposure(self, buyer: str, lots: int) -> int:
        """What ``lots`` of protection bought at :data:`PREMIUM` are worth to the buyer at the
        last mark: the protection less the premiums still owed (minor units)."""
        listing = self.engine.instruments[SWAP.name]
        basis = PREMIUM * lots
        return lots * listing.unit_value - basis * SWAP.tick_value * listing.periods_left

    def check_ledger(self) -> Fold:
        """Cash plus pools is the money brought in less the money taken out, and positions net
        to zero, after every event; the fold reaches the engine's state."""
        fold = Fold()
        for event in self.events:
            fold.apply(*event)
            total = sum(fold.cash.values()) + sum(fold.pools.values())
            assert total == fold.deposited - fold.withdrawn, f"seq {event.seq}"
            for instrument in fold.books:
                assert sum(p.get(instrument, 0) for p in fold.positions.values()) == 0
        assert fold.state_hash() == self.engine.state_hash()
        return fold


def _of(events: list, kind: str, **fields) -> list:
    return [
        e for e in events if e.kind == kind and all(getattr(e, k) == v for k, v in fields.items())
    ]


# ------------------------------------------------------------------ configuration
def test_a_cleared_margin_config_serialises_without_clearing_or_csa_so_old_hashes_stand():
    assert MarginConfig(clearing="cleared").model_dump(mode="json") == MarginConfig().model_dump(
        mode="json"
    )
    assert {"clearing", "csa"}.isdisjoint(MarginConfig().model_dump(mode="json"))
    bilateral = MarginConfig(clearing="bilateral", csa=CSA, params=PARAMS)
    stored = bilateral.model_dump(mode="json")
    assert stored["clearing"] == "bilateral" and stored["csa"]["recovery_ppm"] == 400_000
    assert MarginConfig.model_validate(stored) == bilateral


def test_a_cleared_session_hashes_alike_with_or_without_csa_terms_and_has_no_bilateral_state():
    hashes = set()
    for csa in (None, CSA):
        s = Session(RICH, clearing="cleared", csa=csa)
        s.day(1, 9_400)
        state = s.engine.canonical_state()
        assert "bilateral" not in state and "collateral" not in dict(state["pools"])
        assert s.engine.contracts is None
        hashes.add(s.engine.state_hash())
    assert len(hashes) == 1


@pytest.mark.parametrize(
    "config, problem",
    [
        (dict(clearing="bilateral"), "csa"),
        (dict(clearing="bilateral", csa=CSA), "threshold_by_rating"),  # 3 thresholds, 1 rating
    ],
)
def test_bilateral_clearing_needs_a_csa_with_one_threshold_per_rating(config, problem):
    with pytest.raises(ValidationError, match=problem):
        MarginConfig(params=MarginParams(credit_tiers=[]), **config)


@pytest.mark.parametrize(
    "terms",
    [
        dict(threshold_by_rating=[100, 200, 0]),  # rises as the rating falls
        dict(threshold_by_rating=[100, -1, 0]),
        dict(threshold_by_rating=[100], minimum_transfer=-1),
        dict(threshold_by_rating=[100], recovery_ppm=1_000_001),
        dict(threshold_by_rating=[100], rehedge_spread_ppm=-1),
    ],
)
def test_csa_terms_refuse_negative_amounts_and_thresholds_that_rise_as_the_rating_falls(terms):
    with pytest.raises(ValidationError):
        CsaTerms(**terms)


# ------------------------------------------------------------------ collateral
def test_a_delivery_is_the_exposure_over_the_threshold_per_counterparty():
    s = Session(RICH)
    posts = _of(s.day(1, 9_000), ev.COLLATERAL_POSTED)
    expected = {
        buyer: s.exposure(buyer, lots) - CSA.threshold_by_rating[0]
        for buyer, lots in (("l", 50), ("o", 100))
    }
    assert all(amount > 0 for amount in expected.values())
    assert {e.counterparty: e.amount for e in posts} == expected
    assert {e.account for e in posts} == {"g"}
    assert all(e.data["threshold"] == 1_000_000 and e.data["rating"] == "A" for e in posts)
    assert s.engine.pools["collateral"] == sum(expected.values())
    assert s.engine.posted == {("g", b): amount for b, amount in expected.items()}
    s.check_ledger()


def test_no_delivery_or_return_smaller_than_the_minimum_transfer_is_made():
    big = CSA.model_copy(update={"minimum_transfer": 2_000_000})
    s = Session(RICH, csa=big)
    s.day(1, 9_000)
    # o's delivery is over the minimum, l's (half the lots) is not
    assert s.exposure("o", 100) - 1_000_000 >= 2_000_000 > s.exposure("l", 50) - 1_000_000 > 0
    assert s.engine.posted == {("g", "o"): s.exposure("o", 100) - 1_000_000}
    posted = s.engine.posted[("g", "o")]
    # the index edges back up: o's support falls by less than the minimum, nothing returns
    events = s.day(2, 9_100)
    assert 0 < posted - (s.exposure("o", 100) - 1_000_000) < 2_000_000
    assert _of(events, ev.COLLATERAL_POSTED) == []
    # a larger rise returns what the support no longer needs, in one transfer
    events = s.day(3, 9_900)
    (back,) = _of(events, ev.COLLATERAL_POSTED)
    assert back.counterparty == "o"
    assert back.amount == max(0, s.exposure("o", 100) - 1_000_000) - posted < -2_000_000
    s.check_ledger()


def test_a_downgrade_cuts_the_threshold_so_the_counterparties_call_more_after_the_rating_event():
    """The same path for a guarantor with $320k (downgraded to BBB when the index reaches
    7,000: its equity, the protection it sold counted at the mark, falls under 10 % of the
    $1.35M it protects) and for a rich one (A throughout): the downgraded one posts exactly
    the difference of the thresholds more to each buyer, after its ``RatingChanged``."""
    poor, rich = Session(32_000_000), Session(RICH)
    for s in (poor, rich):
        assert _of(s.day(1, 9_000), ev.COLLATERAL_POSTED, account="g")
    day_poor, day_rich = poor.day(2, 7_000), rich.day(2, 7_000)
    assert _of(day_rich, ev.RATING_CHANGED) == []
    (rating,) = _of(day_poor, ev.RATING_CHANGED, account="g")
    assert rating.side == "BBB" and rating.data["reason"] == "downgrade"
    posts = _of(day_poor, ev.COLLATERAL_POSTED, account="g")
    assert posts and all(e.seq > rating.seq for e in posts)
    assert all(e.data["threshold"] == 250_000 and e.data["rating"] == "BBB" for e in posts)
    for buyer in ("l", "o"):
        assert poor.engine.posted[("g", buyer)] - rich.engine.posted[("g", buyer)] == 750_000
    poor.check_ledger()


def test_bilateral_swaps_pay_no_variation_margin_and_need_no_initial_margin_perps_unchanged():
    """The same trades and prints cleared and bilateral: bilateral, the swap's holders get
    no ``VariationMargin`` and no ``MarginRequirement`` (they were margined cleared), and the
    perpetual's variation margin and requirements are the cleared ones."""
    worlds = {}
    for clearing in ("cleared", "bilateral"):
        s = Session(RICH, clearing=clearing, perp=True)
        s.trade(PERP.name, "dealer", "o", 2_000, 40)
        events = s.day(1, 9_400, 1_900) + s.day(2, 9_000, 1_950)
        worlds[clearing] = events
        s.check_ledger()
    cleared, bilateral = worlds["cleared"], worlds["bilateral"]

    def vm(events, instrument):
        return [
            (e.account, e.amount)
            for e in _of(events, ev.VARIATION_MARGIN)
            if e.instrument == instrument
        ]

    def requirements(events, accounts):
        return [
            (e.account, e.amount)
            for e in _of(events, ev.MARGIN_REQUIREMENT)
            if e.account in accounts
        ]

    assert vm(cleared, SWAP.name) and vm(bilateral, SWAP.name) == []
    assert vm(bilateral, PERP.name) == vm(cleared, PERP.name) != []
    assert requirements(cleared, {"g", "l"}) and requirements(bilateral, {"g", "l"}) == []
    # o and the dealer hold the perpetual (o also the swap): tiers only, bilateral
    perp_im = {
        e.account: e.amount for e in _of(bilateral, ev.MARGIN_REQUIREMENT) if e.account == "dealer"
    }
    assert perp_im == {
        e.account: e.amount for e in _of(cleared, ev.MARGIN_REQUIREMENT) if e.account == "dealer"
    }
    assert _of(bilateral, ev.COLLATERAL_POSTED) and not _of(cleared, ev.COLLATERAL_POSTED)


# ------------------------------------------------------------------ the default
def _spiral(csa: CsaTerms = CSA) -> tuple[Session, list, dict]:
    """g has $200k. Rated A, it delivers to o on day 1 (l's delivery is under the minimum
    transfer). On day 2 the index is at 7,000: g is downgraded to BB (threshold 0), delivers
    to l (first by name) but cannot deliver to o, and is called; it defaults at day 4's
    cycle, its deadline, after delivering once more to l. Returns the session, the events of
    that cycle and, just before it, each buyer's V (its protection at the mark) and cash,
    ``{buyer: (V, cash)}``."""
    s = Session(20_000_000, csa=csa)
    s.day(1, 9_400)
    s.day(2, 7_000)
    s.day(3, 6_800)
    s.engine.advance(4 * DAY_NS)
    s.engine.publish_index(SWAP.resale_index, 6_500)
    before = {
        buyer: (s.exposure(buyer, lots), s.engine.accounts[buyer].cash)
        for buyer, lots in (("l", 50), ("o", 100))
    }
    mark = len(s.events)
    s.engine.margin_cycle()
    return s, s.events[mark:], before


def _posted_before_default(s: Session, events: list, buyer: str) -> int:
    """What g had posted to ``buyer`` when it defaulted, from the events."""
    (default,) = _of(events, ev.DEFAULT)
    return sum(
        e.amount
        for e in s.events
        if e.kind == ev.COLLATERAL_POSTED
        and (e.account, e.counterparty) == ("g", buyer)
        and e.seq < default.seq
    )


def test_a_delivery_the_seller_cannot_make_is_called_and_ends_in_default_at_the_deadline():
    s = Session(20_000_000)
    assert _of(s.day(1, 9_400), ev.COLLATERAL_POSTED, account="g", counterparty="o")
    day2 = s.day(2, 7_000)
    (rating,) = _of(day2, ev.RATING_CHANGED, account="g")
    assert rating.side == "BB"
    (to_l,) = _of(day2, ev.COLLATERAL_POSTED, account="g")
    assert to_l.counterparty == "l" and to_l.amount == s.exposure("l", 50)  # threshold 0
    cash = s.engine.accounts["g"].cash
    owed = s.exposure("o", 100) - s.engine.posted[("g", "o")]
    assert owed > cash
    (call,) = _of(day2, ev.COLLATERAL_CALL, account="g")
    assert call.amount == owed - cash and call.data["deadline"] == 4 * DAY_NS
    assert _of(s.day(3, 6_800), ev.DEFAULT) == []
    s2, events, _ = _spiral()
    (default,) = _of(events, ev.DEFAULT)
    assert default.account == "g" and default.t == 4 * DAY_NS
    calls = (ev.COLLATERAL_CALL, ev.CALL_INCREASED, ev.CALL_REDUCED)
    last = [e for e in s2.events if e.kind in calls and e.account == "g"]
    assert default.amount == last[-1].amount
    s2.check_ledger()


def test_at_the_default_each_buyer_takes_its_collateral_recovers_its_claim_and_rehedges():
    """Each buyer: ``ProtectionTerminated`` for V (its protection at the mark), the
    collateral C g had posted to it applied, 40 % of ``V - C`` recovered, the same lots bought
    again from the dealer for ``V x 1.2`` (rounded up) at its old premium basis; its cash
    moves by ``C + R - V x 1.2``: it loses exactly ``V (1 + s) - C - R``. (l was collateralised
    in full, so it has no claim; o has one.)"""
    s, events, before = _spiral()
    claims = {}
    for buyer, lots in (("l", 50), ("o", 100)):
        value, cash = before[buyer]
        collateral = _posted_before_default(s, events, buyer)
        (term,) = _of(events, ev.PROTECTION_TERMINATED, account=buyer)
        assert (term.counterparty, term.qty, term.amount) == ("g", lots, value)
        applied = _of(events, ev.COLLATERAL_APPLIED, account=buyer)
        assert [e.amount for e in applied] == [collateral]
        recovered = 0
        claims[buyer] = claim = value - collateral
        for recovery in _of(events, ev.RECOVERY_PAID, account=buyer):
            assert recovery.data["claim"] == claim
            recovered = recovery.amount
        assert recovered == claim * 400_000 // 1_000_000
        (rehedge,) = _of(events, ev.REHEDGED, account=buyer)
        paid = -(-value * 1_200_000 // 1_000_000)
        assert (rehedge.counterparty, rehedge.qty) == ("dealer", lots)
        assert rehedge.price == PREMIUM * lots  # the basis carried over, ticks x lots
        assert rehedge.amount == -paid and rehedge.data["value"] == value
        loss = cash - s.engine.accounts[buyer].cash
        assert loss == paid - collateral - recovered
        # hedged again: the same lots, at the same premium basis, now from the dealer
        account = s.engine.accounts[buyer]
        assert account.positions[SWAP.name] == lots and account.basis[SWAP.name] == PREMIUM * lots
    assert claims["l"] == 0 < claims["o"]
    g = s.engine.accounts["g"]
    assert not g.positions.get(SWAP.name) and not g.basis.get(SWAP.name)
    assert s.engine.accounts["dealer"].positions[SWAP.name] == -150
    assert s.engine.contracts == {
        ("dealer", "l", SWAP.name): [50, 50 * PREMIUM],
        ("dealer", "o", SWAP.name): [100, 100 * PREMIUM],
    }
    assert not any("g" in key for key in s.engine.posted)
    s.check_ledger()


def test_no_default_fund_insurance_fund_or_haircut_is_used_for_a_bilateral_default():
    s, events, _ = _spiral()
    assert _of(events, ev.DEFAULT)
    for kind in (
        ev.WATERFALL_DRAW,
        ev.DEFAULT_FUND_LOSS,
        ev.HAIRCUT,
        ev.CLOSE_OUT,
        ev.AUCTION_AWARD,
        ev.DELEVERAGED,
    ):
        assert _of(events, kind) == [], kind
    assert s.engine.pools["insurance"] == 1_000_000
    assert s.engine.pools["default_fund"] == 4 * 100_000
    s.check_ledger()


def test_recovery_is_paid_from_the_defaulters_cash_first_and_the_rest_from_outside():
    """With a recovery of 100 % the claim is larger than g's cash at the exchange: that cash
    pays first, to the last cent, and the rest comes in from the estate as external money."""
    s, events, _ = _spiral(CSA.model_copy(update={"recovery_ppm": 1_000_000}))
    (default,) = _of(events, ev.DEFAULT)
    estate = (
        sum(e.amount for e in s.events if e.account == "g" and e.kind == ev.DEPOSIT)
        - sum(e.amount for e in s.events if e.account == "g" and e.kind == ev.COLLATERAL_POSTED)
        - 100_000
    )  # its default-fund contribution
    (recovery,) = _of(events, ev.RECOVERY_PAID)
    assert recovery.data["from_estate"] == estate < recovery.amount
    assert s.engine.accounts["g"].cash == 0
    deposits = sum(e.amount for e in s.events if e.kind in (ev.DEPOSIT, ev.POOL_FUNDED))
    assert s.engine.deposited == deposits + recovery.amount - estate
    s.check_ledger()


def test_a_counterparty_owing_the_defaulter_pays_it_in_and_is_replaced_at_the_dealer():
    """o bought protection at 400 ticks, far over the model: at g's default o's protection
    is worth less than the premiums it still owes, so o owes the net to g
    (``TerminationPaid``, into g's cash, which then pays l's recovery first) and gets paid by
    the dealer, less the spread, to take the same contract on."""
    s = Session(3_000_000, sales=(("l", 50),))
    s.trade(SWAP.name, "g", "o", 400, 10)
    # o's exposure to g is negative: o posts to g (rating A, threshold $10k)
    s.day(1, 9_400)
    s.day(2, 7_000)
    s.day(3, 6_800)
    s.engine.advance(4 * DAY_NS)
    s.engine.publish_index(SWAP.resale_index, 6_500)
    listing = s.engine.instruments[SWAP.name]
    owed = 10 * listing.unit_value - 4_000 * SWAP.tick_value * listing.periods_left
    assert owed < 0
    mark = len(s.events)
    s.engine.margin_cycle()
    events = s.events[mark:]
    (paid,) = _of(events, ev.TERMINATION_PAID)
    assert (paid.account, paid.counterparty, paid.amount) == ("o", "g", owed)
    (rehedge,) = _of(events, ev.REHEDGED, account="o")
    # o "pays" V + ceil(|V| x 20 %): with V < 0 the dealer pays it |V| less the spread
    assert rehedge.amount == -(owed - owed * 200_000 // 1_000_000) > 0
    (returned,) = _of(events, ev.COLLATERAL_POSTED, account="o", counterparty="g")
    assert returned.counterparty == "g" and returned.amount < 0
    assert paid.seq < _of(events, ev.RECOVERY_PAID, account="l")[0].seq
    s.check_ledger()


def test_a_bilateral_log_folds_to_the_engine_state_at_every_event_and_from_a_snapshot():
    s, _events, _ = _spiral()
    fold = Fold()
    for event in s.events:
        fold.apply(*event)
        if event.kind == ev.REHEDGED:
            again = Fold.from_json(fold.to_json())
            assert again.state_hash() == fold.state_hash()
    assert fold.state_hash() == s.engine.state_hash()
    assert "bilateral" in fold.canonical_state()
