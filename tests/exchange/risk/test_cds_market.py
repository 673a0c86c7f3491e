"""Credit default swaps listed on the exchange (issue #21; exchange/risk/cds_market.py,
docs/credit.md
"Listing CDS on the exchange"): trading by running spread with a spread basis, premiums on IMM
dates rounded once per account with a zero sum, marks from the book or the economy's implied
spread, variation and initial margin on spread moves, the credit event, the two engines
byte-identical on it, the scenario file and conservation over random sessions.
"""

from __future__ import annotations

from datetime import date, timedelta
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.scenario import load
from exchange.core import events as ev
from exchange.core.clock import PARTICIPANT, Simulator
from exchange.kernel.engine import DAY_NS, Exchange
from exchange.kernel.engines import ENGINES
from exchange.products import cds
from exchange.products.cds import CdsSpec, position_value_at_spread
from exchange.risk import cds_market
from exchange.risk.margin import MarginParams
from exchange.risk.margin_cycle import MarginConfig
from exchange.sessions.scenarios import ScenarioError
from exchange.store.fold import Fold

EPOCH = date(2024, 1, 1)
NAME = "CRWV-CDS-2028-12-C500"
SPEC = CdsSpec(
    name=NAME,
    reference_entity="CoreWeave",
    coupon_bps=500,
    initial_spread_bps=640,
    effective=EPOCH,
    maturity=date(2028, 12, 20),
)
USD = 100  # cents
MILLION = 1_000_000 * USD
CONFIG = MarginConfig(
    interval_ns=DAY_NS,
    cure_ns=2 * DAY_NS,
    index_move_trigger_ppm=0,
    params=MarginParams(credit_tiers=[], concentration_addon_ppm=0),
)


class Market:
    """One engine (``kind``: reference or compiled) with the series listed, a calendar from
    2024-01-01 and accounts ``a, b, c`` with ``cash`` each; every event kept."""

    def __init__(
        self, kind: str = "reference", cash: int = 10**11, margin: bool = False, spec=SPEC
    ):
        self.events: list[ev.Event] = []
        self.engine = ENGINES[kind](self.events.append)
        self.engine.epoch = EPOCH
        if margin:
            self.engine.margin = CONFIG
        self.engine.start("cds", 1, {})
        self.engine.list_instrument(spec)
        for name in ("a", "b", "c"):
            self.engine.open_account(name)
            self.engine.credit(name, cash)

    def send(self, **command):
        return self.engine.handle({"type": "submit", "instrument": NAME, **command})

    def trade(self, seller, buyer, price, qty):
        assert self.send(account=seller, side="sell", price=price, qty=qty).ok
        assert self.send(account=buyer, side="buy", price=price, qty=qty).ok

    def on(self, day: date):
        self.engine.advance(self.engine.date_ns(day))

    def month(self, bps: int) -> None:
        self.engine.announce(ev.ECONOMY_MONTH, data={"cds_spread_bps": {"CoreWeave": bps}})

    def default(self, **data):
        self.engine.announce(
            ev.BORROWER_DEFAULTED, amount=1, counterparty="CoreWeave", data={"reason": "x", **data}
        )

    def of(self, kind, since=0):
        return [e for e in self.events[since:] if e.kind == kind]

    def ledger(self) -> int:
        """Cash + pools - deposits + withdrawals: 0 when nothing leaks."""
        e = self.engine
        return (
            sum(a.cash for a in e.accounts.values())
            + sum(e.pools.values())
            - (e.deposited - e.withdrawn)
        )


# ---------------------------------------------------------------------- premiums, in integers
def test_a_premium_of_10_contracts_of_1m_at_640_bps_for_91_days_is_161_777_78_usd():
    """10 x 1,000,000 x 0.064 x 91 / 360 = 161,777.777... USD: 16,177,777.78 cents, rounded
    once per account (floors, then the residual cent to the largest fraction): the buyer pays
    16,177,778, the seller receives 16,177,778, and the two sum to zero."""
    dues = cds_market.premium_dues(SPEC, {"buyer": 10 * 640, "seller": -10 * 640}, 91)
    assert dues == {"buyer": -16_177_778, "seller": 16_177_778}


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    bases=st.lists(st.integers(-(10**9), 10**9), min_size=1, max_size=8),
    days=st.integers(1, 400),
)
def test_premiums_sum_to_exactly_zero_and_each_is_its_exact_amount_floored_or_ceiled(bases, days):
    bases = {f"acct{i}": b for i, b in enumerate(bases)}
    bases["last"] = -sum(bases.values())  # bases of all accounts sum to zero
    dues = cds_market.premium_dues(SPEC, bases, days)
    assert sum(dues.values()) == 0
    for name, basis in bases.items():
        exact = Fraction(-basis * SPEC.tick_value * days, 360)
        assert exact - 1 < dues.get(name, 0) < exact + 1


def test_the_allocation_gives_the_residual_to_the_largest_fractions_ties_by_name():
    # floors 0, 0, -1: one cent left; every fraction is 1/3, so the first name gets it
    thirds = {"y": Fraction(1, 3), "x": Fraction(1, 3), "z": Fraction(-2, 3)}
    assert cds_market.allocate(thirds) == {"x": 1, "y": 0, "z": -1}
    # floors 1, 0, -2: one cent left, to the largest fraction (0.9 over 0.5 and 0.6)
    mixed = {"x": Fraction(3, 2), "y": Fraction(9, 10), "z": Fraction(-12, 5)}
    assert cds_market.allocate(mixed) == {"x": 1, "y": 1, "z": -2}


# ---------------------------------------------------------------------- listing and trading
@pytest.mark.parametrize("kind", list(ENGINES))
def test_a_buy_is_bought_protection_and_each_fill_moves_price_x_qty_of_spread_basis(kind):
    m = Market(kind)
    m.trade("a", "b", 640, 10)
    m.trade("b", "c", 700, 4)
    accounts = m.engine.accounts
    assert [accounts[n].positions[NAME] for n in "abc"] == [-10, 6, 4]
    assert [accounts[n].basis[NAME] for n in "abc"] == [-6_400, 6_400 - 2_800, 2_800]
    assert sum(accounts[n].basis[NAME] for n in "abc") == 0
    assert all(f.amount == 0 for f in m.of(ev.FILL))  # no cash at the trade
    listed = m.of(ev.INSTRUMENT_LISTED)[0]
    assert (listed.side, listed.amount) == ("cds", 10_000)  # 1 bp of 1m USD a year: 100 USD


def test_a_series_whose_tick_is_not_a_whole_minor_unit_cannot_be_listed():
    spec = SPEC.model_copy(update={"notional": 101})
    with pytest.raises(ValueError, match="not a whole number"):
        Market(spec=spec)


# ---------------------------------------------------------------------- premiums on IMM dates
def test_on_an_imm_date_each_basis_pays_its_period_then_the_series_is_marked_without_it():
    m = Market()
    m.trade("a", "b", 640, 10)
    m.on(date(2024, 3, 20))
    start = len(m.events)
    m.engine.charge_cds_premium(NAME)
    paid = {e.account: e.amount for e in m.of(ev.PREMIUM_PAID, start)}
    # 79 days from 1 Jan: 10 x 1m x 0.064 x 79/360 = 140,444.44 USD
    assert paid == {"b": -14_044_444, "a": 14_044_444}
    assert m.of(ev.PREMIUM_PAID, start)[0].data == {"days": 79}
    assert m.ledger() == 0 and m.engine.pools["clearing"] == 0


def test_at_maturity_the_last_premium_is_paid_and_the_series_closes():
    spec = SPEC.model_copy(update={"maturity": date(2024, 6, 20)})
    m = Market(spec=spec)
    m.trade("a", "b", 640, 10)
    m.engine.mark(NAME)
    for day in (date(2024, 3, 20), date(2024, 6, 20)):
        m.on(day)
        m.engine.charge_cds_premium(NAME)
    last = m.of(ev.PREMIUM_PAID)[-2:]
    # 20 Mar to 20 Jun: 92 days, 10 x 1m x 0.064 x 92/360 = 163,555.56 USD
    assert {e.account: e.amount for e in last} == {"b": -16_355_556, "a": 16_355_556}
    assert m.of(ev.INSTRUMENT_EXPIRED)[0].data == {"reason": "matured"}
    assert not m.engine.accounts["b"].positions and not m.engine.accounts["b"].vm_basis
    assert m.ledger() == 0 and m.engine.pools["clearing"] == 0


# ---------------------------------------------------------------------- marks
def test_the_model_mark_follows_the_economy_s_spread_and_before_any_the_spec_s():
    m = Market()
    m.engine.mark(NAME)
    first = m.of(ev.MARK_PRICE)[-1]
    assert first.data["source"] == "model" and first.data["entity_spread_bps"] == 640
    assert first.price == cds_market.model_ticks(SPEC, 640, EPOCH)
    assert abs(first.price - 640) <= 3  # a flat hazard gives nearly the same par spread
    m.month(900)
    m.engine.mark(NAME)
    second = m.of(ev.MARK_PRICE)[-1]
    assert second.data["entity_spread_bps"] == 900 and abs(second.price - 900) <= 5


def test_a_tight_deep_book_marks_at_its_mid_and_a_thin_one_at_the_model():
    """The RVS rule: a spread of at most 5 ticks with 10 contracts a side marks at the mid,
    clamped to 5 ticks of the model."""
    model = cds_market.model_ticks(SPEC, 640, EPOCH)
    m = Market()
    assert m.send(account="a", side="sell", price=model + 2, qty=10).ok
    assert m.send(account="b", side="buy", price=model, qty=9).ok
    m.engine.mark(NAME)
    assert m.of(ev.MARK_PRICE)[-1].data["source"] == "model"  # 9 contracts: too thin
    assert m.send(account="b", side="buy", price=model, qty=1).ok
    m.engine.mark(NAME)
    mark = m.of(ev.MARK_PRICE)[-1]
    assert (mark.data["source"], mark.price) == ("book", model + 1)
    m = Market()
    assert m.send(account="a", side="sell", price=model + 12, qty=10).ok
    assert m.send(account="b", side="buy", price=model + 10, qty=10).ok
    m.engine.mark(NAME)
    mark = m.of(ev.MARK_PRICE)[-1]
    assert (mark.data["source"], mark.price) == ("book", model + 5)  # 11 clamped to 5


# ---------------------------------------------------------------------- margin
def test_variation_margin_is_the_change_of_the_whole_position_s_value_at_the_spread():
    """A position traded at the coupon is the model's standard contract: its variation margin
    over a move from 640 to 900 bps is the change of ``cds.position_value_at_spread`` (within
    a cent: the same model, rounded once either way), and the seller pays what the buyer gets."""
    m = Market(margin=True)
    m.trade("a", "b", 500, 10)
    m.engine.mark(NAME)
    m.engine.margin_cycle()
    before = m.engine.instruments[NAME].mark
    start = len(m.events)
    m.month(900)
    m.engine.mark(NAME)
    m.engine.margin_cycle()
    after = m.engine.instruments[NAME].mark
    vm = {e.account: e.amount for e in m.of(ev.VARIATION_MARGIN, start)}
    expected = position_value_at_spread(
        SPEC, 10, after, cds_market.RATE, EPOCH
    ) - position_value_at_spread(SPEC, 10, before, cds_market.RATE, EPOCH)
    assert expected > 50_000_000  # a long gains about 8 % of 10m USD on +260 bps
    assert abs(vm["b"] - expected) <= 2
    assert vm["a"] == -vm["b"]


def test_initial_margin_is_the_worst_loss_over_the_spread_shocks():
    """A long loses most when spreads tighten (-100 bps), a short when they widen (+250)."""
    m = Market(margin=True)
    m.trade("a", "b", 500, 10)
    m.engine.mark(NAME)
    m.engine.margin_cycle()
    s = m.engine.instruments[NAME].mark
    im = {e.account: e.amount for e in m.of(ev.MARGIN_REQUIREMENT)}

    def v(n, ticks):
        return position_value_at_spread(SPEC, n, ticks, cds_market.RATE, EPOCH)

    assert abs(im["b"] - (v(10, s) - v(10, s - 100))) <= 4
    assert abs(im["a"] - (v(-10, s) - v(-10, s + 250))) <= 4
    assert im["a"] > im["b"] > 0


def test_the_per_mark_check_s_bound_on_maintenance_margin_covers_listed_cds():
    """``default._maintenance_at_most`` lets a perpetual's per-mark check skip the exact
    margin for accounts whose equity is above it: it must be at least the exact maintenance
    margin, CDS positions included (a short CDS's margin is its worst widening)."""
    from exchange.risk.default import _maintenance_at_most

    m = Market(margin=True)
    m.trade("a", "b", 500, 10)
    m.engine.mark(NAME)
    for name in ("a", "b"):
        account = m.engine.accounts[name]
        mm = m.engine.margin.requirements(m.engine, [name])[name][1]
        assert mm > 0
        assert _maintenance_at_most(m.engine, account) >= mm


# ---------------------------------------------------------------------- the credit event
def _defaulted(**data):
    m = Market(margin=True)
    assert m.send(account="c", side="buy", price=600, qty=3).ok  # resting: the book
    m.trade("a", "b", 640, 10)
    m.engine.mark(NAME)
    m.engine.margin_cycle()
    m.on(date(2024, 3, 20))
    m.engine.charge_cds_premium(NAME)
    m.month(900)
    m.engine.mark(NAME)
    m.engine.margin_cycle()
    m.on(date(2024, 5, 1))
    vm_basis = {n: m.engine.accounts[n].vm_basis.get(NAME, 0) for n in "ab"}
    start = len(m.events)
    m.default(**data)
    return m, m.events[start:], vm_basis


def test_a_credit_event_pays_accrued_premium_then_1_minus_r_per_contract_then_closes():
    m, events, vm_basis = _defaulted()
    kinds = [e.kind for e in events]
    assert kinds == [
        ev.BORROWER_DEFAULTED,
        ev.ORDER_CANCELLED,
        ev.PREMIUM_PAID,
        ev.PREMIUM_PAID,
        ev.SWAP_SETTLED,
        ev.SWAP_SETTLED,
        ev.INSTRUMENT_EXPIRED,
    ]
    assert events[1].data == {"reason": "credit event"}
    # 20 Mar to 1 May: 42 days, 10 x 1m x 0.064 x 42/360 = 74,666.67 USD
    accrued = {e.account: e.amount for e in events[2:4]}
    assert accrued == {"b": -7_466_667, "a": 7_466_667}
    settled = {e.account: e for e in events[4:6]}
    # (1 - 40 %) x 1m USD x 10 = 6m USD, net of the variation margin already received
    assert settled["b"].data["protection"] == 600_000_000
    assert settled["b"].amount == 600_000_000 - vm_basis["b"]
    assert settled["a"].amount == -600_000_000 - vm_basis["a"]
    assert settled["a"].price == 400_000
    assert events[-1].data == {"reason": "credit event", "recovery_ppm": 400_000}
    assert m.engine.instruments[NAME].expired
    assert all(NAME not in a.positions for a in m.engine.accounts.values())
    assert m.ledger() == 0 and m.engine.pools["clearing"] == 0
    refused = m.send(account="c", side="buy", price=600, qty=1)
    assert not refused.ok and "expired" in refused.reason


def test_over_its_life_the_buyer_gets_exactly_the_protection_less_the_premiums_it_traded_at():
    m, _events, _ = _defaulted()
    # b paid 79 + 42 days of 640 bps and received 6m USD; variation margin nets out
    b = m.engine.accounts["b"].cash - 10**11
    assert b == 600_000_000 - 14_044_444 - 7_466_667


def test_auction_settlement_takes_the_recovery_of_the_borrower_s_default_event():
    spec = SPEC.model_copy(update={"settlement": "auction"})
    assert cds_market.recovery_ppm(spec, {"recovery_ppm": 250_000}) == 250_000
    assert cds_market.recovery_ppm(spec, {}) == 400_000  # none in the event: the spec's
    assert cds_market.recovery_ppm(SPEC, {"recovery_ppm": 250_000}) == 400_000  # fixed
    m = Market(spec=spec)
    m.trade("a", "b", 640, 10)
    m.default(recovery_ppm=250_000)
    settled = {e.account: e for e in m.of(ev.SWAP_SETTLED)}
    assert settled["b"].data["protection"] == 750_000_000  # (1 - 25 %) x 10m USD


def test_a_default_of_another_entity_settles_nothing():
    m = Market()
    m.trade("a", "b", 640, 10)
    m.engine.announce(ev.BORROWER_DEFAULTED, amount=1, counterparty="OpenAI", data={})
    assert not m.of(ev.SWAP_SETTLED) and not m.engine.instruments[NAME].expired


def test_a_seller_that_cannot_pay_the_settlement_is_called_then_defaults_into_the_waterfall():
    m = Market(margin=True, cash=200_000_000)  # 2m USD each: less than 6m of protection
    m.engine.fund_pool("insurance", 10**12)
    m.trade("a", "b", 640, 10)
    m.engine.mark(NAME)
    m.engine.margin_cycle()
    m.on(date(2024, 2, 1))
    m.default()
    assert m.engine.accounts["a"].cash < 0
    m.on(date(2024, 2, 2))
    m.engine.margin_cycle()
    assert [e.account for e in m.of(ev.COLLATERAL_CALL)] == ["a"]
    m.on(date(2024, 2, 4))
    m.engine.margin_cycle()
    assert m.engine.defaulted == ["a"]
    draws = m.of(ev.WATERFALL_DRAW)
    assert draws and draws[-1].side == "insurance"
    assert m.engine.accounts["a"].cash == 0
    assert m.ledger() == 0


# ---------------------------------------------------------------------- both engines
def test_both_engines_log_the_same_bytes_through_a_cds_session():
    """The compiled kernel hands every CDS command to the reference path: trades, marks,
    margin, premiums, an economy month and a credit event give byte-identical events."""
    logs = {}
    for kind in ("reference", "compiled"):
        m = Market(kind, margin=True)
        m.send(account="c", side="buy", price=600, qty=3)
        m.trade("a", "b", 640, 10)
        m.send(account="c", side="sell", price=700, qty=2)
        m.engine.handle({"type": "amend", "account": "c", "order_id": 1, "price": 610, "qty": 5})
        m.engine.mark(NAME)
        m.engine.margin_cycle()
        m.on(date(2024, 3, 20))
        m.engine.charge_cds_premium(NAME)
        m.month(900)
        m.engine.mark(NAME)
        m.engine.margin_cycle()
        m.trade("b", "c", 905, 4)
        m.engine.handle({"type": "cancel", "account": "c", "order_id": 1})
        m.on(date(2024, 5, 1))
        m.default()
        m.engine.end()
        logs[kind] = [ev.encode(e) for e in m.events]
    assert logs["reference"] == logs["compiled"]
    assert any(b'"SwapSettled"' in line for line in logs["compiled"])


# ---------------------------------------------------------------------- conservation
_steps = st.one_of(
    st.tuples(
        st.just("trade"),
        st.sampled_from("abc"),
        st.sampled_from("abc"),
        st.integers(1, 2_000),
        st.integers(1, 50),
    ),
    st.tuples(st.just("month"), st.integers(0, 5_000)),
    st.tuples(st.just("days"), st.integers(1, 120)),
    st.just(("default",)),
)
_trades = st.tuples(
    st.just("trade"),
    st.sampled_from("abc"),
    st.sampled_from("abc"),
    st.integers(200, 1_200),
    st.integers(1, 50),
)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    cash=st.sampled_from([50_000_000, 500_000_000, 10**11]),
    opening=st.lists(_trades, min_size=1, max_size=3),
    steps=st.lists(_steps, min_size=1, max_size=12),
)
def test_random_cds_sessions_conserve_cash_and_positions_at_every_event(cash, opening, steps):
    """Trades, economy months, days (each with its premium date if one falls, a mark and a
    margin cycle: calls and defaults) and a credit event: cash over all accounts and pools
    less deposits and withdrawals, and the positions, sum to zero after every event (the
    fold reads them event by event); at every mark, premium, settlement, close and credit-event
    cancel the engine's state is the fold's (each step's state changes before its event); and
    the compiled engine logs the same bytes."""
    logs = {}
    for kind in ("reference", "compiled"):
        m = _random_session(kind, cash, [*opening, ("days", 100), *steps])
        logs[kind] = [ev.encode(e) for e in m.events]
    assert logs["reference"] == logs["compiled"]
    fold = Fold()
    for event, engine_hash in zip(m.events, m.hashes, strict=True):
        fold.apply(*event)
        money = sum(fold.cash.values()) + sum(fold.pools.values())
        assert money == fold.deposited - fold.withdrawn, f"seq {event.seq}"
        assert sum(p.get(NAME, 0) for p in fold.positions.values()) == 0, f"seq {event.seq}"
        if engine_hash is not None:
            assert fold.state_hash() == engine_hash, f"seq {event.seq} ({event.kind})"


_CDS_STEPS = (ev.MARK_PRICE, ev.PREMIUM_PAID, ev.SWAP_SETTLED, ev.INSTRUMENT_EXPIRED)


def _random_session(kind: str, cash: int, steps: list) -> Market:
    """The session ``steps`` describe on engine ``kind``; ``m.hashes`` holds the engine's state
    hash at each event of a CDS step (from a listener, as the event is emitted; None at the
    others)."""
    m = Market(kind, margin=True, cash=cash)
    m.hashes = [None] * len(m.events)  # (the set-up's events: not compared)
    m.engine.fund_pool("insurance", 10**9)
    m.hashes.append(None)

    def listener(event: ev.Event) -> None:
        # the steps of exchange.risk.cds_market (the order path's events follow the book's match,
        # by design, and are the engine's own tests' business)
        ours = event.kind in _CDS_STEPS or (event.data or {}).get("reason") == "credit event"
        m.hashes.append(m.engine.state_hash() if ours else None)

    m.engine.subscribe(listener)
    day = 0
    premium_days = {(d - EPOCH).days for d in SPEC.premium_dates()}
    for step in steps:
        if step[0] == "trade" and step[1] != step[2]:
            _, seller, buyer, price, qty = step
            m.send(account=seller, side="sell", price=price, qty=qty)
            m.send(account=buyer, side="buy", price=price, qty=qty)
        elif step[0] == "month":
            m.month(step[1])
        elif step[0] == "days":
            for _ in range(step[1]):
                day += 1
                m.engine.advance(day * DAY_NS)
                if day in premium_days:
                    m.engine.charge_cds_premium(NAME)
                m.engine.mark(NAME)
                m.engine.margin_cycle()
        elif step[0] == "default":
            m.default()
    return m


# ---------------------------------------------------------------------- the scenario file
def test_the_built_in_second_derivative_lists_coreweave_and_oracle_cds_at_the_seed_s_levels():
    scenario = load("second-derivative")
    by_entity = {spec.reference_entity: spec for spec in scenario.cds}
    assert by_entity["CoreWeave"].coupon_bps == 500
    assert by_entity["CoreWeave"].initial_spread_bps == 640
    assert by_entity["Oracle"].coupon_bps == 100
    assert by_entity["Oracle"].initial_spread_bps == 104


def test_a_scenario_without_cds_stores_the_configuration_it_did_before():
    scenario = load("second-derivative", {"cds": [], "bots": []})
    assert "cds" not in scenario.model_dump(mode="json")


def test_a_scenario_naming_one_instrument_twice_is_refused():
    cds = load("second-derivative").model_dump(mode="json")["cds"]
    with pytest.raises(ScenarioError, match="appears twice"):
        load("second-derivative", {"cds": [cds[0], cds[0]]})


def test_the_built_in_settles_coreweave_s_cds_on_its_default_and_conserves_cash():
    """The built-in without its bots, two accounts trading CoreWeave's CDS at the start: the
    economy's CoreWeave defaults, its series settles (the seller pays the buyer (1 - R) x 10m
    USD of protection at the auction's recovery R, net of variation margin) and closes;
    Oracle's does not; nothing leaks."""
    scenario = load("second-derivative", {"bots": []})
    events: list[ev.Event] = []
    engine = Exchange(events.append)
    engine.start(scenario.name, scenario.seed, {})
    scenario.setup(engine)
    sim = Simulator()
    scenario.schedule_market(engine, sim, scenario.seed)
    crwv = next(s.name for s in scenario.cds if s.reference_entity == "CoreWeave")
    orcl = next(s.name for s in scenario.cds if s.reference_entity == "Oracle")
    for account, side in (("cds-dealer", "sell"), ("loan-hedger", "buy")):
        command = {"type": "submit", "account": account, "instrument": crwv, "side": side}
        sim.schedule(1, engine.handle, {**command, "price": 640, "qty": 10}, priority=PARTICIPANT)
    sim.run(scenario.end_ns, on_step=engine.advance)
    defaulted = [e for e in events if e.kind == ev.BORROWER_DEFAULTED]
    assert [e.counterparty for e in defaulted] == ["CoreWeave"]
    settled = [e for e in events if e.kind == ev.SWAP_SETTLED]
    # the series settles at the auction of CoreWeave's fleet (settlement = "auction"): 10
    # contracts of 1m USD (10^9 cents) x (1 - R), R the default's recovery_ppm
    recovery = defaulted[0].data["recovery_ppm"]
    assert 0 < recovery < 1_000_000
    protection = 10 * 100_000_000 * (1_000_000 - recovery) // 1_000_000
    assert {e.account: e.data["protection"] for e in settled} == {
        "cds-dealer": -protection,
        "loan-hedger": protection,
    }
    assert all(e.seq > defaulted[0].seq for e in settled)
    assert engine.instruments[crwv].expired and not engine.instruments[orcl].expired
    assert any(e.kind == ev.PREMIUM_PAID for e in events)
    fold = Fold()
    for event in events:
        fold.apply(*event)
        money = sum(fold.cash.values()) + sum(fold.pools.values())
        assert money == fold.deposited - fold.withdrawn, f"seq {event.seq}"


# ---------------------------------------------------------------------- the model's fast path
# The listing prices on the closed-form flat-hazard legs (cds.flat_calibrate) and keeps the
# general piecewise model as the reference (cds_market.REFERENCE_MODEL): the integers it logs
# must be the reference's (docs/credit.md, "Speed").


@st.composite
def listed_points(draw):
    """A listed series (any recovery, effective any day, maturity an IMM date up to seven
    years on), a valuation date before its maturity and a spread in ticks (some not
    positive)."""
    effective = EPOCH + timedelta(days=draw(st.integers(0, 400)))
    maturity = cds._next_imm(effective + timedelta(days=draw(st.integers(0, 2600))))
    spec = CdsSpec(
        name=NAME,
        reference_entity="CoreWeave",
        coupon_bps=draw(st.sampled_from((100, 500))),
        recovery_ppm=draw(st.integers(0, 900_000)),
        effective=effective,
        maturity=maturity,
    )
    valuation = effective + timedelta(days=draw(st.integers(0, (maturity - effective).days - 1)))
    return spec, valuation, draw(st.integers(-50, 5_000))  # <= 0: a zero hazard on both


def _both(function, *args):
    """``function(*args)`` and whether it raised ``ValueError`` (an unreachable spread)."""
    try:
        return function(*args), False
    except ValueError:
        return None, True


@settings(max_examples=150, deadline=None, derandomize=True)
@given(listed_points(), st.integers(1, 3_000))
def test_the_fast_legs_and_hazards_are_the_reference_s_within_the_fast_path_tolerance(
    point, entity_bps
):
    spec, valuation, ticks = point
    fast, fast_raised = _both(cds_market._legs, spec, valuation, ticks, False)
    reference, reference_raised = _both(cds_market._legs, spec, valuation, ticks, True)
    assert fast_raised == reference_raised  # a spread no hazard reaches, refused by both
    if not fast_raised:
        for got, want in zip(fast, reference, strict=True):
            assert got == pytest.approx(want, rel=cds_market.FAST_PATH_TOLERANCE, abs=0.0)
    hazards = [
        cds_market._entity_hazard(entity_bps, spec.recovery_ppm, valuation, reference)
        for reference in (False, True)
    ]
    assert hazards[0] == pytest.approx(hazards[1], rel=cds_market.FAST_PATH_TOLERANCE)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    listed_points(),
    st.integers(-50, 50),
    st.integers(-50_000, 50_000),
    st.integers(0, 3_000),
)
def test_position_values_and_model_marks_are_the_reference_model_s_integers(
    point, contracts, basis, entity_bps
):
    spec, valuation, ticks = point
    got = {}
    for reference in (False, True):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(cds_market, "REFERENCE_MODEL", reference)
            got[reference] = (
                _both(cds_market.position_value, spec, contracts, basis, ticks, valuation),
                cds_market.model_ticks(spec, entity_bps, valuation),
            )
    assert got[False] == got[True]


def _stub_legs(monkeypatch, fast, reference):
    """``cds_market._legs`` answering ``fast`` on the fast path and ``reference`` on the
    reference, recording which it was asked for."""
    asked = []

    def legs(spec, valuation, spread_ticks, reference_model=False):
        asked.append(reference_model)
        return reference if reference_model else fast

    monkeypatch.setattr(cds_market, "_legs", legs)
    return asked


def test_a_value_within_the_tolerance_of_a_half_unit_takes_the_reference_s_rounding(monkeypatch):
    """The fast protection leg 4e-14 above the reference's, across the half cent of a
    contract of one cent notional: the fast value would round up, the reference's down; the
    reference's answer is kept. Far from a half unit the fast answer stands alone."""
    fast = (0.5 * (1 + 4e-14), 0.1)
    reference = (0.5 * (1 - 4e-14), 0.1)
    asked = _stub_legs(monkeypatch, fast, reference)
    assert cds_market._round_legs(SPEC, EPOCH, 640, 1, 0) == 0  # 0.4999...: down
    assert asked == [False, True]
    asked.clear()
    assert cds_market._round_legs(SPEC, EPOCH, 640, 3, 0) == 1  # 1.4999...: down
    assert asked == [False, True]
    asked.clear()
    assert cds_market._round_legs(SPEC, EPOCH, 640, 2, 0) == 1  # 1.0000...: no tie near
    assert cds_market._round_legs(SPEC, EPOCH, 640, 2, 7) == 0  # 1 - 0.7
    assert asked == [False, False]


def test_a_model_mark_within_the_tolerance_of_a_half_tick_takes_the_reference_s_rounding(
    monkeypatch,
):
    calls = []

    def spread(spec, spread_bps, valuation, reference):
        calls.append(reference)
        # 640.5 ticks of 1 bp, the fast path a hair above the half tick, the reference below
        return 0.06405 * (1 - 1e-14 if reference else 1 + 1e-14)

    monkeypatch.setattr(cds_market, "_model_spread", spread)
    assert cds_market.model_ticks(SPEC, 640, EPOCH) == 640
    assert calls == [False, True]


def test_the_built_in_logs_the_same_bytes_on_the_fast_path_as_on_the_reference_model(
    tmp_path, monkeypatch
):
    """``second-derivative`` at seed 7, once on the reference model alone (the fast functions
    unreachable) and once on the fast path (which must be used): every event, the marks and
    values among them, and the log's digest are identical."""
    from exchange.sessions import session
    from exchange.store.event_store import EventStore

    def caches_cleared():
        for cached in (
            cds_market._legs,
            cds_market._entity_hazard,
            cds_market._model_spread,
            cds_market._schedule,
        ):
            cached.cache_clear()

    def unreachable(*args):
        raise AssertionError("the reference run used the fast path")

    logs = {}
    with monkeypatch.context() as patch:
        patch.setattr(cds_market, "REFERENCE_MODEL", True)
        patch.setattr(cds_market, "flat_calibrate", unreachable)
        patch.setattr(cds_market, "flat_par_spread", unreachable)
        caches_cleared()
        session.run("second-derivative", tmp_path / "reference.db", seed=7)
    fast_calls = []
    calibrate = cds_market.flat_calibrate
    with monkeypatch.context() as patch:
        patch.setattr(
            cds_market, "flat_calibrate", lambda *a: fast_calls.append(1) or calibrate(*a)
        )
        caches_cleared()
        session.run("second-derivative", tmp_path / "fast.db", seed=7)
    assert len(fast_calls) > 1_000
    for name in ("reference", "fast"):
        with EventStore.open(tmp_path / f"{name}.db") as store:
            logs[name] = (list(store.events()), store.digest())
    marks = [e for e in logs["fast"][0] if e.kind == ev.MARK_PRICE and e.instrument]
    assert len(marks) > 500 and any(e.amount for e in marks)
    assert logs["fast"] == logs["reference"]


# ---------------------------------------------------------------------- the model's bound
# A flat hazard reaches par spreads only below a supremum, short near a premium date: one day
# before SPEC's last premium date (2028-12-20, a 91-day period from 2028-09-20) the annuity
# tends to the first period's accrual on default alone, 91/360 x (90.5/91), so the supremum is
# (1 - 0.4) x 360 / 90.5 = 2.38674... a year: 23,867.40 bps. The book accepts 100,000 ticks.
LAST_DAY = date(2028, 12, 19)
LAST_BOUND = 23_867  # floor(0.6 x 360 / 90.5 x 10^4), computed by hand from the dates


def _fresh_caches():
    for cached in (
        cds_market._legs,
        cds_market._entity_hazard,
        cds_market._model_spread,
        cds_market._schedule,
    ):
        cached.cache_clear()


def test_the_bound_is_the_supremum_of_the_par_spread_rounded_down():
    assert Fraction(6, 10) * 360 / Fraction(905, 10) * 10_000 // 1 == LAST_BOUND
    assert cds_market.spread_bound_ticks(SPEC, LAST_DAY) == LAST_BOUND


@settings(max_examples=60, deadline=None, derandomize=True)
@given(listed_points())
def test_a_spread_at_the_bound_calibrates_on_both_model_paths_and_one_tick_over_on_neither(
    point,
):
    spec, valuation, _ticks = point
    bound = cds_market.spread_bound_ticks(spec, valuation)
    for reference in (False, True):
        protection, annuity = cds_market._legs(spec, valuation, bound, reference)
        assert 0.0 < protection < 1.0 and annuity > 0.0
        with pytest.raises(ValueError):
            cds_market._legs(spec, valuation, bound + 1, reference)


def _run_past_the_bound(reference: bool) -> Market:
    """One day before the last premium date, the entity's 5-year spread so wide that the
    model mark is within 5 ticks of the bound; two accounts trade 10 contracts at 90,000 bps
    and quote a tight, deep book around it (89,999 / 90,001, 10 a side); a mark and a margin
    cycle, on one model path."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cds_market, "REFERENCE_MODEL", reference)
        _fresh_caches()
        m = Market(margin=True)
        m.on(LAST_DAY)
        m.month(4_300_000)
        m.trade("a", "b", 90_000, 10)
        assert m.send(account="a", side="sell", price=90_001, qty=10).ok
        assert m.send(account="b", side="buy", price=89_999, qty=10).ok
        m.engine.mark(NAME)
        m.engine.margin_cycle()
    _fresh_caches()
    return m


def test_a_tight_deep_book_past_the_bound_marks_at_the_bound_and_margins_without_raising():
    """The mid (90,000) is clamped to 5 ticks of the model (23,866 + 5), which lies past the
    bound: the mark is the bound, said so, the margin cycle values, shocks and pays at it,
    cash is conserved, and both model paths log the same events."""
    logs = {}
    for reference in (False, True):
        m = _run_past_the_bound(reference)
        (mark,) = m.of(ev.MARK_PRICE)
        assert LAST_BOUND - 5 <= mark.data["model"] <= LAST_BOUND  # the model is reachable
        assert (mark.price, mark.data["source"], mark.data["clamped"]) == (
            LAST_BOUND,
            "book",
            True,
        )
        vm = {e.account: e.amount for e in m.of(ev.VARIATION_MARGIN)}
        assert vm["a"] == -vm["b"] > 0  # the seller at 90,000 gains on a mark of 23,867
        assert {e.account for e in m.of(ev.MARGIN_REQUIREMENT)} == {"a", "b"}
        assert m.ledger() == 0 and m.engine.pools["clearing"] == 0
        logs[reference] = [ev.encode(e) for e in m.events]
    assert logs[False] == logs[True]


def test_initial_margin_takes_a_widening_past_the_bound_as_the_widening_to_it():
    """A short at a mark 10 ticks under the bound: its +250 bps shock would leave every flat
    hazard behind; its loss is the one to the bound. A long's worst case stays the -100."""
    m = Market(margin=True)
    m.on(LAST_DAY)
    m.trade("a", "b", 23_000, 10)
    listing = m.engine.instruments[NAME]
    listing.mark = LAST_BOUND - 10

    def v(n, basis, ticks):
        return cds_market.position_value(SPEC, n, basis, ticks, LAST_DAY)

    short = cds_market.initial_margin(m.engine, listing, -10, -230_000)
    assert short == v(-10, -230_000, LAST_BOUND - 10) - v(-10, -230_000, LAST_BOUND) > 0
    long = cds_market.initial_margin(m.engine, listing, 10, 230_000)
    assert long == v(10, 230_000, LAST_BOUND - 10) - v(10, 230_000, LAST_BOUND - 110) > 0


def test_an_entity_spread_past_the_standard_contract_s_reach_marks_at_the_reach():
    """On 2024-01-01 the 5-year standard contract's first period is a 79-day stub starting
    that day: a flat hazard reaches 5-year spreads below (1 - 0.4) x 360 / (79 x 1/2) =
    5.4683... a year (54,683 bps). An economy announcing 90,000 bps marks at the model of
    54,683 bps, and says it was clamped."""
    assert Fraction(6, 10) * 720 / 79 * 10_000 // 1 == 54_683
    m = Market()
    m.month(90_000)
    m.engine.mark(NAME)
    mark = m.of(ev.MARK_PRICE)[-1]
    assert mark.price == mark.data["model"] == cds_market.model_ticks(SPEC, 54_683, EPOCH)
    assert mark.data["entity_spread_bps"] == 90_000 and mark.data["clamped"] is True
    assert mark.price > 10_000  # the series' par spread on a hazard past 100 % a year
