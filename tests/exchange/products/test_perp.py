"""Perpetual futures: spec validation, impact prices, premium, funding rate, mark price and the
conservation of funding settlement.

The worked examples use the formulas of Binance USDⓈ-M futures / BitMEX (premium index and
``F = P + clamp(I - P, -0.05 %, 0.05 %)``) and dYdX v4 (impact prices, the cap tied to
IM - MM), worked by hand below each test. Units: ticks, lots, minor units (cents), ns.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from exchange.products.perp import (
    BASIS_SCALE,
    FUNDING_SCALE,
    WEIGHT_SCALE,
    FundingIndex,
    MarginTier,
    MarkPrice,
    PerpSpec,
    decay_weight,
    funding_rate,
    impact_prices,
    premium_index,
    settle_funding,
)
from matching_core import OrderBook, Side

HOUR_NS = 3600 * 10**9
POOL = "funding-pool"
PCT = Fraction(1, 100)  # 1 %


def make_spec(**overrides) -> PerpSpec:
    fields = dict(
        name="H100-PERP",
        underlying="H100-RENTAL",
        gpu_hours_per_contract=100,
        tick_size="0.001",  # $0.001 per GPU-hour x 100 GPU-hours = 10 cents a tick per lot
        funding_interval_ns=8 * HOUR_NS,
        impact_notional_lots=10,
        mark_basis_halflife_ns=HOUR_NS,
        margin_tiers=[
            MarginTier(
                max_position_lots=100, initial_margin_ppm=50_000, maintenance_margin_ppm=25_000
            ),
            MarginTier(
                max_position_lots=1_000, initial_margin_ppm=100_000, maintenance_margin_ppm=50_000
            ),
        ],
        max_price=1_000_000,
    )
    fields.update(overrides)
    return PerpSpec(**fields)


SPEC = make_spec()  # I = 0.01 %, clamp 0.05 %, cap = 5 % - 2.5 % = 2.5 %


# ------------------------------------------------------------------------------------ spec
def test_spec_derived_values():
    assert SPEC.tick_value == 10  # 0.001 $ x 100 h x 1 lot x 100 cents
    assert SPEC.funding_cap_ppm == 25_000  # IM - MM of the first tier: 5 % - 2.5 %
    assert make_spec(lot_size=3).tick_value == 30
    assert make_spec(tick_size="0.01", gpu_hours_per_contract=1).tick_value == 1


def test_spec_round_trips_through_its_dump():
    assert PerpSpec.model_validate(SPEC.model_dump()) == SPEC
    assert PerpSpec.model_validate_json(SPEC.model_dump_json()) == SPEC
    assert "tick_value" not in SPEC.model_dump()  # derived, so the dump re-validates
    assert SPEC.kind == "perp" and SPEC.model_dump()["kind"] == "perp"


@pytest.mark.parametrize(
    "overrides",
    [
        {"tick_size": "0.001", "gpu_hours_per_contract": 1},  # 0.1 cent a tick: not whole
        {"tick_size": "0.0001", "gpu_hours_per_contract": 10, "lot_size": 5},  # 0.5 cent
        {"tick_size": "0"},
        {"tick_size": "-0.01"},
        {"tick_size": "abc"},
        {"tick_size": "NaN"},
        {"tick_size": 0.01},  # a float, never
        {"gpu_hours_per_contract": 1.0},  # strict ints
        {"gpu_hours_per_contract": 0},
        {"lot_size": 0},
        {"funding_interval_ns": 0},
        {"impact_notional_lots": 0},
        {"mark_basis_halflife_ns": 0},
        {"premium_clamp_ppm": -1},
        {"max_price": 0},
        {"name": "bad name"},
        {"surprise": 1},  # extra fields forbidden
        {"kind": "spot"},
        {"taker_fee_bps": 1_001},
        {"margin_tiers": []},
        {  # max_position_lots not increasing
            "margin_tiers": [
                MarginTier(
                    max_position_lots=100, initial_margin_ppm=50_000, maintenance_margin_ppm=25_000
                ),
                MarginTier(
                    max_position_lots=100, initial_margin_ppm=60_000, maintenance_margin_ppm=30_000
                ),
            ]
        },
        {  # a bigger tier with less margin
            "margin_tiers": [
                MarginTier(
                    max_position_lots=100, initial_margin_ppm=50_000, maintenance_margin_ppm=25_000
                ),
                MarginTier(
                    max_position_lots=200, initial_margin_ppm=40_000, maintenance_margin_ppm=25_000
                ),
            ]
        },
    ],
)
def test_spec_rejects(overrides):
    with pytest.raises(ValidationError):
        make_spec(**overrides)


@pytest.mark.parametrize(
    ("im", "mm"),
    [(50_000, 50_000), (50_000, 60_000), (50_000, 0), (50_000, -1), (1_000_001, 25_000)],
)
def test_margin_tier_needs_0_lt_mm_lt_im_le_one(im, mm):
    with pytest.raises(ValidationError):
        MarginTier(max_position_lots=10, initial_margin_ppm=im, maintenance_margin_ppm=mm)
    MarginTier(max_position_lots=10, initial_margin_ppm=1_000_000, maintenance_margin_ppm=1)


def test_spec_is_frozen():
    with pytest.raises(ValidationError):
        SPEC.max_price = 5


# --------------------------------------------------------------------------- impact prices
BID_PRICES, BID_QTYS = [10_010, 10_005, 10_000], [3, 4, 10]
ASK_PRICES, ASK_QTYS = [10_020, 10_025], [2, 5]


def test_impact_prices_walk_the_depth():
    # sell 6 into the bids: 3 @ 10,010 + 3 @ 10,005 = 60,045 -> 10,007.5
    # buy 6 from the asks: 2 @ 10,020 + 4 @ 10,025 = 60,140 -> 10,023 1/3
    bid, ask = impact_prices(BID_PRICES, BID_QTYS, ASK_PRICES, ASK_QTYS, 6)
    assert bid == Fraction(20_015, 2)
    assert ask == Fraction(30_070, 3)
    # one level is enough: 2 lots both sides
    assert impact_prices(BID_PRICES, BID_QTYS, ASK_PRICES, ASK_QTYS, 2) == (10_010, 10_020)


def test_impact_prices_exact_size_boundary_and_thin_book():
    # the asks hold exactly 7 lots: 2 @ 10,020 + 5 @ 10,025 = 70,165 -> 70,165/7
    bid, ask = impact_prices(BID_PRICES, BID_QTYS, ASK_PRICES, ASK_QTYS, 7)
    assert ask == Fraction(70_165, 7)
    # sell 7 into the bids: 30,030 + 40,020 = 70,050 -> 10,007 1/7
    assert bid == Fraction(70_050, 7)
    # 8 lots: the asks cannot fill it -> no impact ask; the bids (17 lots) still can
    bid, ask = impact_prices(BID_PRICES, BID_QTYS, ASK_PRICES, ASK_QTYS, 8)
    assert ask is None
    assert bid == Fraction(30_030 + 40_020 + 10_000, 8)  # 3 + 4 + 1 lots
    # exactly all 17 bid lots; 18 is too many
    assert impact_prices(BID_PRICES, BID_QTYS, [], [], 17) == (
        Fraction(30_030 + 40_020 + 100_000, 17),
        None,
    )
    assert impact_prices(BID_PRICES, BID_QTYS, [], [], 18) == (None, None)


def test_impact_prices_accept_order_book_depth():
    book = OrderBook()
    book.submit(1, account=1, side=Side.BUY, price=10_005, qty=4)
    book.submit(2, account=1, side=Side.BUY, price=10_010, qty=3)
    book.submit(3, account=2, side=Side.BUY, price=10_000, qty=10)
    book.submit(4, account=3, side=Side.SELL, price=10_025, qty=5)
    book.submit(5, account=3, side=Side.SELL, price=10_020, qty=2)
    bids = book.depth(Side.BUY, 50)
    asks = book.depth(Side.SELL, 50)
    assert isinstance(bids[0], np.ndarray)
    got = impact_prices(bids[0], bids[1], asks[0], asks[1], 6)
    assert got == (Fraction(20_015, 2), Fraction(30_070, 3))
    assert all(type(x) is Fraction for x in got)  # not numpy scalars


@pytest.mark.parametrize(
    "args",
    [
        ([10_000], [1, 2], [], [], 1),  # lengths differ
        ([10_000, 10_001], [1, 1], [], [], 1),  # bids not best-first
        ([], [], [10_001, 10_000], [1, 1], 1),  # asks not best-first
        ([10_000, 10_000], [1, 1], [], [], 1),  # repeated level
        ([10_000], [0], [], [], 1),  # empty level
        ([10_000], [1], [], [], 0),  # impact size must be positive
    ],
)
def test_impact_prices_reject_malformed_depth(args):
    with pytest.raises(ValueError):
        impact_prices(*args)


@st.composite
def book_side(draw, descending: bool):
    n = draw(st.integers(0, 8))
    prices = sorted(draw(st.sets(st.integers(1, 20_000), min_size=n, max_size=n)))
    if descending:
        prices.reverse()
    qtys = draw(st.lists(st.integers(1, 50), min_size=n, max_size=n))
    return prices, qtys


@given(book_side(descending=True), book_side(descending=False), st.integers(1, 300))
def test_impact_prices_equal_a_lot_by_lot_walk(bids, asks, lots):
    def brute(prices, qtys):
        each_lot = [p for p, q in zip(prices, qtys, strict=True) for _ in range(q)]
        return Fraction(sum(each_lot[:lots]), lots) if len(each_lot) >= lots else None

    bid, ask = impact_prices(bids[0], bids[1], asks[0], asks[1], lots)
    assert bid == brute(*bids)
    assert ask == brute(*asks)
    if bid is not None:
        assert bids[0][-1] <= bid <= bids[0][0]
    if ask is not None:
        assert asks[0][0] <= ask <= asks[0][-1]


# ------------------------------------------------------------- premium and funding: examples
def test_worked_example_premium_over_index():
    # impact bid 10,100 over index 10,000; impact ask (10,110) above the index.
    # P = (max(0, 10,100 - 10,000) - max(0, 10,000 - 10,110)) / 10,000 = 100 / 10,000 = 1 %
    # F = P + clamp(I - P, -0.05 %, 0.05 %) = 1 % + clamp(0.01 % - 1 %) = 1 % - 0.05 % = 0.95 %
    premium = premium_index(10_100, 10_110, 10_000)
    assert premium == PCT
    assert funding_rate(premium, SPEC) == Fraction(95, 10_000)
    # the payment of one long lot at mark 10,000: 0.95 % x 10,000 ticks x 10 cents = 950 cents
    index = FundingIndex()
    assert index.accrue(funding_rate(premium, SPEC), 10_000, SPEC.tick_value) == 950 * FUNDING_SCALE
    assert index.owed(3, 0) == 2_850  # a 3-lot long pays 28.50 $
    assert index.owed(-3, 0) == -2_850  # a 3-lot short receives it


def test_worked_example_impact_ask_below_index():
    # impact ask 9,900 (and impact bid 9,890) below index 10,000:
    # P = (0 - (10,000 - 9,900)) / 10,000 = -1 %; F = -1 % + clamp(0.01 % + 1 %) = -0.95 %
    premium = premium_index(9_890, 9_900, 10_000)
    assert premium == -PCT
    assert funding_rate(premium, SPEC) == Fraction(-95, 10_000)


@pytest.mark.parametrize(
    ("impact_bid", "impact_ask", "premium"),
    [
        (9_995, 10_005, Fraction(0)),  # the index inside the impact spread: P = 0
        (10_003, 10_010, Fraction(3, 10_000)),  # P = 0.03 %: I - P = -0.02 %
        (10_006, 10_010, Fraction(6, 10_000)),  # P = 0.06 %: I - P = -0.05 %, on the band
        (9_990, 9_996, Fraction(-4, 10_000)),  # P = -0.04 %: I - P = +0.05 %, on the band
    ],
)
def test_worked_example_premium_near_interest_gives_interest(impact_bid, impact_ask, premium):
    # while |I - P| <= 0.05 % the clamp returns I - P unchanged and F = P + (I - P) = I = 0.01 %
    assert premium_index(impact_bid, impact_ask, 10_000) == premium
    assert funding_rate(premium, SPEC) == Fraction(1, 10_000)


def test_worked_example_large_premium_is_capped():
    # impact bid 12,000: P = 20 %, F before the cap 19.95 %; the cap is IM - MM = 2.5 %
    assert funding_rate(premium_index(12_000, 12_010, 10_000), SPEC) == Fraction(25, 1_000)
    # impact ask 8,000: P = -20 % -> -2.5 %
    assert funding_rate(premium_index(7_990, 8_000, 10_000), SPEC) == Fraction(-25, 1_000)
    # just below the cap is untouched: P = 2.55 % -> F = 2.5 % exactly, P = 2.5 % -> 2.45 %
    assert funding_rate(Fraction(255, 10_000), SPEC) == Fraction(25, 1_000)
    assert funding_rate(Fraction(25, 1_000), SPEC) == Fraction(245, 10_000)


def test_missing_impact_prices_contribute_zero():
    assert premium_index(None, None, 10_000) == 0
    assert premium_index(10_100, None, 10_000) == PCT  # no asks deep enough: bid term only
    assert premium_index(None, 9_900, 10_000) == -PCT
    assert premium_index(None, 10_500, 10_000) == 0
    assert premium_index(Fraction(20_015, 2), None, 10_000) == Fraction(15, 20_000)
    with pytest.raises(ValueError):
        premium_index(1, 2, 0)


# ----------------------------------------------------------- premium and funding: properties
rates_ppm = st.integers(-200_000, 200_000)
interest_ppm = st.integers(-1_000, 1_000)
clamp_ppm = st.integers(0, 5_000)


def spec_with(interest: int, band: int) -> PerpSpec:
    return make_spec(interest_ppm_per_interval=interest, premium_clamp_ppm=band)


@given(rates_ppm, st.integers(1, 10**6), interest_ppm, clamp_ppm)
def test_rate_within_cap_and_band(p_num, p_den, interest, band):
    spec = spec_with(interest, band)
    premium = Fraction(p_num, PCT.denominator * p_den)
    rate = funding_rate(premium, spec)
    cap = Fraction(spec.funding_cap_ppm, 1_000_000)
    assert -cap <= rate <= cap
    if abs(premium) + Fraction(band + abs(interest), 1_000_000) < cap:  # far from the cap
        assert abs(rate - premium) <= Fraction(band, 1_000_000)


@given(rates_ppm, rates_ppm, interest_ppm, clamp_ppm)
def test_rate_is_monotone_in_premium(a, b, interest, band):
    spec = spec_with(interest, band)
    low, high = sorted((Fraction(a, 1_000_000), Fraction(b, 1_000_000)))
    assert funding_rate(low, spec) <= funding_rate(high, spec)


@given(
    st.integers(1_000, 100_000),  # index, ticks
    st.integers(1, 30_000),  # how far outside the index, ticks
    st.booleans(),
    interest_ppm,
    clamp_ppm,
)
def test_funding_sign_follows_premium(index, gap, rich, interest, band):
    # rich: the impact bid is above the index (the perp trades rich) -> P > 0; else the impact
    # ask is below the index -> P < 0. Beyond the interest band the sign of F is the sign of P:
    # a rich perp makes longs pay, a cheap one makes shorts pay.
    spec = spec_with(interest, band)
    if rich:
        premium = premium_index(index + gap, index + gap + 1, index)
        assert premium > 0
    else:
        ask = max(index - gap, 1)
        premium = premium_index(max(ask - 1, 1), ask, index)
        assert premium < 0
    rate = funding_rate(premium, spec)
    i, c = Fraction(interest, 1_000_000), Fraction(band, 1_000_000)
    if premium > max(i, 0) + c:
        assert rate > 0
    if premium < min(i, 0) - c:
        assert rate < 0
    if spec.interest_ppm_per_interval == 0 and abs(premium) <= c:
        assert rate == 0


@given(
    st.lists(st.integers(-50, 50), min_size=1, max_size=12),
    rates_ppm,
    st.integers(1, 100_000),
)
def test_positive_rate_longs_pay_negative_rate_shorts_pay(lots, rate_ppm, mark):
    positions = {f"acct-{i:02d}": q for i, q in enumerate(lots)}
    positions["acct-zz"] = -sum(lots)
    index = FundingIndex()
    rate = funding_rate(Fraction(rate_ppm, 1_000_000), SPEC)
    index.accrue(rate, mark, SPEC.tick_value)
    deltas = settle_funding(positions, dict.fromkeys(positions, 0), index.cumulative, POOL)
    assert sum(deltas.values()) == 0
    assert deltas[POOL] >= 0
    for account, q in positions.items():
        exact = -index.owed(q, 0)
        assert exact - 1 < deltas[account] <= exact  # floor of the exact delta
        if q and rate:
            long_pays = (q > 0) == (rate > 0)
            if long_pays:  # the payer: strictly negative
                assert deltas[account] < 0
            else:  # the receiver: never negative
                assert deltas[account] >= 0


# ------------------------------------------------------------------- funding index, settle
def test_accrue_rounds_half_even_to_nano_minor_units():
    index = FundingIndex()
    half_nano = Fraction(1, 2 * FUNDING_SCALE)  # rate x 1 tick x 1 cent = 0.5 nano-cents
    assert index.accrue(half_nano, 1, 1) == 0  # 0.5 -> 0
    assert index.accrue(3 * half_nano, 1, 1) == 2  # 1.5 -> 2
    assert index.accrue(5 * half_nano, 1, 1) == 2  # 2.5 -> 2
    assert index.accrue(-3 * half_nano, 1, 1) == -2
    assert index.cumulative == 2
    with pytest.raises(ValueError):
        index.accrue(PCT, 0, 10)


def test_settle_worked_example():
    # the index rose by 333,333,333,334 nano-cents a lot (333.333333334 cents).
    # a, long 3: owes 1,000.000000002 -> pays 1,001 (rounded away from zero)
    # b, short 1: due 333.333333334 -> receives 333 (toward zero)
    # c, short 2: due 666.666666668 -> receives 666
    # pool: 1,001 - 333 - 666 = 2
    deltas = settle_funding(
        {"c": -2, "a": 3, "b": -1, "flat": 0},
        {"a": 7, "b": 7, "c": 7},
        7 + 333_333_333_334,
        POOL,
    )
    assert deltas == {"a": -1_001, "b": 333, "c": 666, "flat": 0, POOL: 2}
    assert list(deltas) == sorted(deltas)  # sorted, deterministic order


def test_settle_rejects_unbalanced_or_inconsistent_input():
    with pytest.raises(ValueError, match="sum to zero"):
        settle_funding({"a": 3, "b": -2}, {"a": 0, "b": 0}, 10**9, POOL)
    with pytest.raises(ValueError, match="no last_cumulative"):
        settle_funding({"a": 3, "b": -3}, {"a": 0}, 10**9, POOL)
    with pytest.raises(ValueError, match="must not hold a position"):
        settle_funding({"a": 3, POOL: -3}, {"a": 0, POOL: 0}, 10**9, POOL)
    # settled from different index values: b's 3 lots were settled later than a's, so the
    # exact amounts do not balance and the pool would have to lend
    with pytest.raises(ValueError, match="does not balance"):
        settle_funding({"a": 3, "b": -3}, {"a": 0, "b": 5 * 10**9}, 10 * 10**9, POOL)
    # different entries that still balance exactly are fine
    got = settle_funding({"a": 2, "b": -1, "c": -1}, {"a": 10, "b": 0, "c": 20}, 30 * 10**9, POOL)
    assert sum(got.values()) == 0 and got[POOL] >= 0


@given(st.lists(st.integers(-(10**6), 10**6), min_size=1, max_size=20))
def test_settle_rejects_positions_not_summing_to_zero(lots):
    positions = {f"acct-{i:02d}": q for i, q in enumerate(lots)}
    if sum(lots) == 0:
        positions["acct-00"] += 1
    with pytest.raises(ValueError, match="sum to zero"):
        settle_funding(positions, dict.fromkeys(positions, 0), 10**9, POOL)


@given(
    st.lists(st.integers(-(10**6), 10**6), min_size=1, max_size=30),
    st.integers(-(10**15), 10**15),
)
def test_settle_conserves_exactly(lots, step):
    positions = {f"acct-{i:02d}": q for i, q in enumerate(lots)}
    positions["acct-zz"] = -sum(lots)
    deltas = settle_funding(positions, dict.fromkeys(positions, 0), step, POOL)
    assert sum(deltas.values()) == 0
    non_flat = sum(1 for q in positions.values() if q)
    assert 0 <= deltas[POOL] < max(non_flat, 1)


def _random_positions(rng: random.Random, accounts: list[str]) -> dict[str, int]:
    positions = {a: 0 for a in accounts}
    for _ in range(rng.randrange(0, 3 * len(accounts))):  # trades between two accounts
        buyer, seller = rng.sample(accounts, 2)
        qty = rng.randrange(1, 500)
        positions[buyer] += qty
        positions[seller] -= qty
    return positions


@pytest.mark.parametrize("seed", range(5))
def test_funding_conservation_over_long_random_runs(seed):
    """Many funding intervals with random positions (always balanced), rates and marks: every
    interval's deltas sum to exactly zero, the pool's balance never goes negative, and each
    account's cash stays within one cent per interval of its exact funding."""
    rng = random.Random(seed)
    spec = SPEC
    accounts = [f"trader-{i:03d}" for i in range(rng.randrange(2, 60))]
    index = FundingIndex()
    cash = dict.fromkeys([*accounts, POOL], 0)
    exact = dict.fromkeys(accounts, Fraction(0))
    positions = _random_positions(rng, accounts)
    intervals = 400
    for interval in range(intervals):
        if rng.random() < 0.3:  # trading between funding times changes the positions
            positions = _random_positions(rng, accounts)
        entry = index.cumulative  # everybody was settled at the previous funding time
        if rng.random() < 0.5:  # a rate from a random book
            ib = rng.randrange(9_000, 11_000)
            premium = premium_index(ib, ib + rng.randrange(1, 300), 10_000)
        else:  # or any rate at all
            premium = Fraction(rng.randrange(-(10**7), 10**7), rng.randrange(1, 10**9))
        rate = funding_rate(premium, spec)
        mark = rng.randrange(1, spec.max_price + 1)
        index.accrue(rate, mark, spec.tick_value)
        deltas = settle_funding(positions, dict.fromkeys(accounts, entry), index.cumulative, POOL)
        assert sum(deltas.values()) == 0, interval
        assert list(deltas) == sorted(deltas)
        for account, delta in deltas.items():
            cash[account] += delta
        for account in accounts:
            exact[account] -= index.owed(positions[account], entry)
        assert cash[POOL] >= 0, interval
        assert sum(cash.values()) == 0
    for account in accounts:
        assert exact[account] - intervals < cash[account] <= exact[account]
    assert cash[POOL] == -sum(cash[a] for a in accounts)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.integers(2, 40), st.integers(5, 60))
def test_funding_conservation_property(seed, n_accounts, intervals):
    rng = random.Random(seed)
    accounts = [f"a{i}" for i in range(n_accounts)]
    index, pool = FundingIndex(), 0
    for _ in range(intervals):
        positions = _random_positions(rng, accounts)
        entry = index.cumulative
        rate = funding_rate(Fraction(rng.randrange(-(10**6), 10**6), 10**7), SPEC)
        index.accrue(rate, rng.randrange(1, 10**6), SPEC.tick_value)
        deltas = settle_funding(positions, dict.fromkeys(accounts, entry), index.cumulative, POOL)
        assert sum(deltas.values()) == 0
        pool += deltas[POOL]
        assert pool >= 0


# ------------------------------------------------------------------------------ mark price
def test_decay_weight_is_exact_integer_exp2():
    h = HOUR_NS
    assert decay_weight(0, h) == WEIGHT_SCALE
    assert decay_weight(h, h) == WEIGHT_SCALE // 2
    assert decay_weight(2 * h, h) == WEIGHT_SCALE // 4
    assert decay_weight(h // 2, h) == 707_106_781_186_547_524  # 2**-0.5 = 0.7071067811865475244
    assert decay_weight(64 * h, h) == 0
    for dt in (1, 7, 10**6, 10**9, 12_345_678_901, h // 3, 5 * h + 17, 40 * h):
        assert math.isclose(
            decay_weight(dt, h) / WEIGHT_SCALE, 2 ** (-dt / h), rel_tol=1e-12, abs_tol=1e-18
        )
    with pytest.raises(ValueError):
        decay_weight(-1, h)


@given(st.integers(0, 10**15), st.integers(1, 10**14))
def test_decay_weight_monotone(dt, h):
    assert 0 <= decay_weight(dt + 1, h) <= decay_weight(dt, h) <= WEIGHT_SCALE


def test_mark_starts_at_index_and_follows_it():
    mark = MarkPrice(SPEC)
    assert mark.update(0, 10_000, 10_100, 10_110) == 10_000  # no history: basis 0
    assert mark.update(0, 10_050, None, None) == 10_050  # dt = 0: nothing decays
    assert mark.basis == 0


def test_one_manipulated_snapshot_barely_moves_the_mark():
    # a fair book (mid of impacts 10,005 = index) sampled every second, half-life 1 hour; one
    # snapshot puts the impact prices at 100,000 (a basis of 89,995 ticks) for one second.
    mark = MarkPrice(SPEC)
    t, index = 0, 10_005
    for _ in range(100):
        assert mark.update(t, index, 10_000, 10_010) == index
        t += 10**9
    spike = 100_000 - index
    assert mark.update(t, index, 100_000, 100_000) == index  # not counted until it has lasted
    t += 10**9
    moved = mark.update(t, index, 10_000, 10_010) - index
    # it lasted 1 s of a 3,600 s half-life: weight 1 - 2**(-1/3600) = 0.0193 % of the spike
    expected = spike * (1 - 2 ** (-1 / 3600))  # 17.33 ticks
    assert 0 < moved < spike / 10
    assert abs(moved - expected) <= 1
    assert moved == 17
    # and it fades with the half-life
    t += HOUR_NS
    assert mark.update(t, index, 10_000, 10_010) == index + 9  # 17.33 / 2 = 8.66 -> 9


def test_persistent_basis_is_tracked():
    # the perp trades 50 ticks rich (impact mid 10,050 against an index of 10,000), sampled
    # every minute: after one half-life the damped basis is 25 ticks, after 20 it is 50.
    mark = MarkPrice(SPEC)
    minute = 60 * 10**9
    t = 0
    mark.update(t, 10_000, 10_045, 10_055)
    for _ in range(60):
        t += minute
        got = mark.update(t, 10_000, 10_045, 10_055)
    assert abs(mark.basis - 25) < Fraction(1, 10**6)
    assert got == 10_025
    for _ in range(19 * 60):
        t += minute
        got = mark.update(t, 10_000, 10_045, 10_055)
    assert got == 10_050
    # the index moves: the mark moves with it at once, the basis stays
    assert mark.update(t, 12_000, 12_045, 12_055) == 12_050


def test_basis_does_not_depend_on_the_sampling_cadence():
    # a held sample decays the same whether observed once per half-life or every second
    coarse, fine = MarkPrice(SPEC), MarkPrice(SPEC)
    coarse.update(0, 10_000, 10_090, 10_110)
    fine.update(0, 10_000, 10_090, 10_110)
    coarse.update(HOUR_NS, 10_000, 10_090, 10_110)
    for s in range(1, 3_601):
        fine.update(s * 10**9, 10_000, 10_090, 10_110)
    assert coarse.basis == 50
    assert abs(fine.basis - coarse.basis) < Fraction(3_600, BASIS_SCALE)  # nano-tick steps


def test_mark_missing_impact_price_pulls_the_basis_to_zero_and_clamps():
    mark = MarkPrice(SPEC)
    mark.update(0, 10_000, 10_090, 10_110)
    mark.update(HOUR_NS, 10_000, None, 10_110)  # basis 50 after an hour, sample now 0
    assert mark.basis == 50
    mark.update(2 * HOUR_NS, 10_000, 10_090, 10_110)
    assert mark.basis == 25
    low = MarkPrice(make_spec(max_price=10_010))
    low.update(0, 10_000, 10_090, 10_110)
    assert low.update(10 * HOUR_NS, 10_000, 10_090, 10_110) == 10_010  # clamped to max_price
    floor = MarkPrice(SPEC)
    floor.update(0, 5, 1, 1)  # impact mid 1 under an index of 5: basis -4
    assert floor.update(10 * HOUR_NS, 1, 1, 1) == 1  # 1 - 4 -> clamped to 1
    with pytest.raises(ValueError):
        floor.update(0, 10, 1, 1)  # time went backwards
    with pytest.raises(ValueError):
        floor.update(20 * HOUR_NS, 0, 1, 1)


def test_mark_rounds_half_even_once():
    mark = MarkPrice(SPEC)
    mark.update(0, 10_000, 10_000, 10_001)  # sample: mid 10,000.5 - 10,000 = 0.5 tick
    assert mark.update(64 * HOUR_NS, 10_000, 10_000, 10_001) == 10_000  # 10,000.5 -> even
    assert mark.update(64 * HOUR_NS, 10_001, 10_001, 10_002) == 10_002  # 10,001.5 -> even
    assert mark.basis == Fraction(1, 2)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 10 * HOUR_NS),  # time since the previous update
            st.integers(1, 50_000),  # index
            st.one_of(st.none(), st.integers(1, 100_000)),  # impact bid
            st.one_of(st.none(), st.integers(1, 100_000)),  # impact ask
        ),
        min_size=1,
        max_size=30,
    )
)
def test_damped_basis_is_a_convex_average_of_samples(updates):
    # every step moves the basis toward the held sample, never past it: the basis stays within
    # the range of the samples seen so far (and 0, where it starts), up to the nano-tick steps
    mark, t = MarkPrice(SPEC), 0
    low = high = Fraction(0)
    for dt, index, bid, ask in updates:
        t += dt
        before, held = mark.basis, Fraction(mark.sample_nano, BASIS_SCALE)
        got = mark.update(t, index, bid, ask)
        step = mark.basis - before
        assert abs(step) <= abs(held - before) + Fraction(1, BASIS_SCALE)
        weight = 1 - Fraction(decay_weight(dt, SPEC.mark_basis_halflife_ns), WEIGHT_SCALE)
        assert abs(step - (held - before) * weight) <= Fraction(1, BASIS_SCALE)
        slack = Fraction(len(updates), BASIS_SCALE)
        assert low - slack <= mark.basis <= high + slack
        sample = Fraction(mark.sample_nano, BASIS_SCALE)
        low, high = min(low, sample), max(high, sample)
        assert 1 <= got <= SPEC.max_price
        assert got == min(max(round(index + mark.basis), 1), SPEC.max_price)


_PRICE = st.one_of(
    st.integers(1, 100_000),
    st.fractions(min_value=1, max_value=100_000, max_denominator=10**6),
    # quarters of a nano-tick: a mid on a half nano-tick (a tie) one time in eight
    st.integers(4 * 10**9, 4 * 10**14).map(lambda m: Fraction(m, 4 * BASIS_SCALE)),
)


@given(
    st.integers(1, 50_000),
    _PRICE,
    _PRICE,
    st.integers(0, 10 * HOUR_NS),
    st.integers(1, 50_000),
)
def test_a_mark_s_sample_and_mark_are_the_exact_values_rounded_half_even(
    index, bid, ask, dt, next_index
):
    # the definitions, in Fractions: the sample is round(((bid + ask) / 2 - index) x 10**9)
    # and the mark round(index + basis), each half to even (ints and Fractions alike)
    mark = MarkPrice(SPEC)
    mark.update(0, index, bid, ask)
    assert mark.sample_nano == round(((Fraction(bid) + Fraction(ask)) / 2 - index) * BASIS_SCALE)
    got = mark.update(dt, next_index, None, None)
    expected = round(next_index + Fraction(mark.basis_nano, BASIS_SCALE))
    assert got == min(max(expected, 1), SPEC.max_price)
