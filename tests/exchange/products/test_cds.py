"""exchange.products.cds: the CDS spec, the hazard-rate model against independent values (the credit
triangle, the seed's default probabilities, a hand computation, QuantLib's MidPointCdsEngine),
its properties (hypothesis), and the float -> int boundary.

QuantLib is a test-only dependency (the ``dev`` extra, which CI installs). Without it the
QuantLib test skips locally, with the reason; under CI (``CI`` set) it fails instead.
"""

from __future__ import annotations

import itertools
import math
from datetime import date, timedelta
from fractions import Fraction

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from exchange.products.cds import (
    BPS,
    CdsSpec,
    HazardCurve,
    _next_imm,
    bootstrap_hazard,
    cds_mark,
    cs01,
    default_leg_pv,
    default_probability,
    flat_calibrate,
    flat_hazard_from_spread,
    flat_legs,
    flat_par_spread,
    flat_upfront,
    is_imm_date,
    par_spread,
    position_value,
    position_value_at_spread,
    protection_leg,
    risky_annuity,
    spread_to_ticks,
    triangle_hazard,
    upfront,
    value_to_minor,
)
from tests.exchange.conftest import import_or_skip_unless_ci

TODAY = date(2025, 12, 20)  # an IMM date: the first period starts on the valuation date
RATE = 0.04  # flat risk-free rate, continuous (an assumption; docs/credit.md)


def five_year(coupon_bps: int = 500, recovery_ppm: int = 400_000, **extra) -> CdsSpec:
    """CoreWeave 5-year protection (the seed's tenor), effective today."""
    fields = dict(
        name="CRWV-CDS-2030-12",
        reference_entity="CoreWeave",
        coupon_bps=coupon_bps,
        recovery_ppm=recovery_ppm,
        effective=TODAY,
        maturity=date(2030, 12, 20),
    )
    fields.update(extra)
    return CdsSpec(**fields)


PERIODS = five_year().periods(TODAY)


@pytest.fixture(scope="module")
def ql():
    QuantLib = import_or_skip_unless_ci("QuantLib", "QuantLib (dev extra) is not installed")
    saved = QuantLib.Settings.instance().evaluationDate
    yield QuantLib
    QuantLib.Settings.instance().evaluationDate = saved  # QuantLib's global, for other tests


# --------------------------------------------------------------------------------------------
# the spec and its schedule


def test_spec_is_frozen_and_refuses_unknown_fields_and_non_imm_maturity():
    spec = five_year()
    with pytest.raises(ValidationError):
        spec.coupon_bps = 100
    with pytest.raises(ValidationError):
        five_year(spread=1)
    with pytest.raises(ValidationError, match="IMM"):
        five_year(maturity=date(2030, 12, 21))
    with pytest.raises(ValidationError):
        five_year(recovery_ppm=1_000_000)
    with pytest.raises(ValidationError):
        five_year(maturity=date(2025, 12, 20))


def test_premium_dates_are_the_quarterly_imm_dates_after_effective_up_to_maturity():
    spec = five_year(effective=date(2026, 1, 5), maturity=date(2027, 3, 20))
    assert spec.premium_dates() == [
        date(2026, 3, 20),
        date(2026, 6, 20),
        date(2026, 9, 20),
        date(2026, 12, 20),
        date(2027, 3, 20),
    ]
    assert all(is_imm_date(d) for d in spec.premium_dates())
    assert len(five_year().premium_dates()) == 20  # 5 years of quarters


def test_periods_use_act365_time_and_act360_accrual_and_the_running_period_starts_before():
    spec = five_year(effective=date(2026, 1, 5), maturity=date(2027, 3, 20))
    valuation = date(2026, 2, 1)
    first = spec.periods(valuation)[0]
    assert first == ((date(2026, 1, 5) - valuation).days / 365, 47 / 365, 74 / 360)
    assert spec.accrued(valuation) == 27 / 360
    assert len(spec.periods(date(2026, 3, 20))) == 4  # the paid period is gone


# --------------------------------------------------------------------------------------------
# independent values


def test_credit_triangle_640bps_40pct_recovery_is_a_hazard_of_10_7pct_and_5y_pd_of_41pct():
    hazard = triangle_hazard(0.064, 0.40)
    assert hazard == pytest.approx(0.064 / 0.6)
    assert hazard == pytest.approx(0.1067, abs=5e-5)
    assert default_probability(HazardCurve.flat(hazard), 5.0) == pytest.approx(0.413, abs=5e-4)


def test_calibrated_hazard_for_640bps_is_within_the_triangles_documented_error():
    # the exact flat hazard differs from the triangle by the ACT/360 accrual (x 365/360) and
    # the coupon paid in arrears (x (1 - r dt / 2)): about 1 %, and within 2 %
    curve = flat_hazard_from_spread(0.064, 0.40, RATE, PERIODS)
    (hazard,) = curve.rates
    assert hazard == pytest.approx(triangle_hazard(0.064, 0.40), rel=0.02)
    assert 0.40 < default_probability(curve, 5.0) < 0.43


def test_seed_675bps_at_35pct_recovery_implies_about_42pct_five_year_default_probability():
    # seed 000, note [4]: "CoreWeave CDS at 675 bps, implying 42% five-year default probability
    # at 35% recovery rate"; a published round figure, so within 2 points
    curve = flat_hazard_from_spread(
        0.0675, 0.35, RATE, five_year(recovery_ppm=350_000).periods(TODAY)
    )
    assert default_probability(curve, 5.0) == pytest.approx(0.42, abs=0.02)


def hand_legs(hazard: float, rate: float, recovery: float, spec: CdsSpec) -> tuple[float, float]:
    """Textbook discretisation, independent of exchange.products.cds: default at each period's
    midpoint
    (protection ``(1-R) D(mid) (Q(s) - Q(e))``), RPV01 ``sum alpha D(e) (Q(s) + Q(e)) / 2``."""
    protection = annuity = 0.0
    start = spec.effective
    for end in spec.premium_dates():
        s, e = (start - TODAY).days / 365, (end - TODAY).days / 365
        alpha = (end - start).days / 360
        q_s, q_e = math.exp(-hazard * s), math.exp(-hazard * e)
        protection += (1 - recovery) * math.exp(-rate * (s + e) / 2) * (q_s - q_e)
        annuity += alpha * math.exp(-rate * e) * (q_s + q_e) / 2
        start = end
    return protection, annuity


def test_upfront_for_coupon_500_vs_par_640_matches_a_hand_computation():
    spec = five_year(coupon_bps=500)
    curve = flat_hazard_from_spread(0.064, 0.40, RATE, PERIODS)
    (hazard,) = curve.rates
    protection, annuity = hand_legs(hazard, RATE, 0.40, spec)
    hand_par = protection / annuity
    hand_upfront = (hand_par - 0.05) * annuity  # (par - coupon) x RPV01, about 5 points
    # the hand discretisation's error (midpoint discounting, D(e) on the accrual) is second
    # order per quarter: well under 1e-3 relative
    assert hand_par == pytest.approx(0.064, rel=1e-3)
    assert upfront(curve, RATE, 0.40, PERIODS, 0.05) == pytest.approx(hand_upfront, rel=2e-3)
    assert 0.04 < hand_upfront < 0.06  # the buyer pays about 5 points upfront
    assert upfront(curve, RATE, 0.40, PERIODS, 0.08) < 0  # coupon above par: the buyer receives


def test_upfront_is_zero_when_the_coupon_is_the_par_spread():
    curve = HazardCurve((1.0, 3.0, 5.5), (0.05, 0.10, 0.16))
    par = par_spread(curve, RATE, 0.40, PERIODS)
    assert upfront(curve, RATE, 0.40, PERIODS, par) == pytest.approx(0.0, abs=1e-15)


def test_against_quantlib_midpoint_cds_engine_on_flat_curves(ql):
    """QuantLib prices the same schedule (ACT/360 accrual, ACT/365F curves, continuous flat
    rate, flat hazard). Its midpoint engine puts each default on the period's middle *date*
    (whole days), so its accrual on default can differ from the exact integral by up to half a
    day's accrual times the default probability, |dRPV01| <= PD(T) / 720; its protection leg
    discounts at that date, a relative error below r x (half a day + the midpoint rule)."""
    today = ql.Date(TODAY.day, TODAY.month, TODAY.year)
    ql.Settings.instance().evaluationDate = today
    spec = five_year(coupon_bps=500)
    dates = [today] + [ql.Date(d.day, d.month, d.year) for d in spec.premium_dates()]
    schedule = ql.Schedule(dates, ql.NullCalendar(), ql.Unadjusted)
    for hazard, rate, recovery in [(0.1076, 0.04, 0.40), (0.0175, 0.04, 0.40), (0.30, 0.0, 0.25)]:
        probability = ql.DefaultProbabilityTermStructureHandle(
            ql.FlatHazardRate(today, ql.QuoteHandle(ql.SimpleQuote(hazard)), ql.Actual365Fixed())
        )
        discount = ql.YieldTermStructureHandle(
            ql.FlatForward(today, rate, ql.Actual365Fixed(), ql.Continuous)
        )
        cds = ql.CreditDefaultSwap(
            ql.Protection.Buyer, 1.0, 0.05, schedule, ql.Unadjusted, ql.Actual360()
        )
        cds.setPricingEngine(ql.MidPointCdsEngine(probability, recovery, discount))
        curve = HazardCurve.flat(hazard)
        periods = spec.periods(TODAY)
        ql_annuity = -cds.couponLegBPS() / BPS
        bound = default_probability(curve, 5.0) / 720 + 1e-6
        assert risky_annuity(curve, rate, periods) == pytest.approx(ql_annuity, abs=bound)
        assert protection_leg(curve, rate, recovery, periods[-1][1]) == pytest.approx(
            cds.defaultLegNPV(), rel=1e-4
        )
        assert par_spread(curve, rate, recovery, periods) == pytest.approx(
            cds.fairSpread(), rel=3e-4
        )
        assert upfront(curve, rate, recovery, periods, 0.05) == pytest.approx(cds.NPV(), abs=5e-5)


def test_quantlib_test_suites_published_cached_value():
    """QuantLib's test suite (test-suite/creditdefaultswap.cpp, testCachedValue): on 9 Jun 2006,
    flat hazard 1.234 %, flat 6 % continuous rate, both on ACT/360 time, 40 % recovery; a
    10-year semiannual CDS issued 9 Jun 2005 (TARGET, modified following) paying 120 bps
    ACT/360, 10,000 notional, protection **sold**: NPV 295.0153398, fair spread 0.007517539081.
    Those are MidPointCdsEngine values, so they are matched within its bounds (see above)."""
    today = date(2006, 6, 9)
    schedule = [date(2005, 12, 9), date(2006, 6, 9), date(2006, 12, 11), date(2007, 6, 11)]
    schedule += [date(2007, 12, 10), date(2008, 6, 9), date(2008, 12, 9), date(2009, 6, 9)]
    schedule += [date(2009, 12, 9), date(2010, 6, 9), date(2010, 12, 9), date(2011, 6, 9)]
    schedule += [date(2011, 12, 9), date(2012, 6, 11), date(2012, 12, 10), date(2013, 6, 10)]
    schedule += [date(2013, 12, 9), date(2014, 6, 9), date(2014, 12, 9), date(2015, 6, 9)]
    periods = [
        ((s - today).days / 360, (e - today).days / 360, (e - s).days / 360)
        for s, e in itertools.pairwise(schedule)
        if e > today  # the coupon paid on the valuation date is gone
    ]
    curve = HazardCurve.flat(0.01234)
    notional, coupon = 10_000.0, 0.012
    seller_npv = -notional * upfront(curve, 0.06, 0.40, periods, coupon)
    protection = protection_leg(curve, 0.06, 0.40, periods[-1][1])
    bound = notional * (
        coupon * default_probability(curve, periods[-1][1]) / 720 + 1e-4 * protection
    )
    assert seller_npv == pytest.approx(295.0153398, abs=bound)
    assert par_spread(curve, 0.06, 0.40, periods) == pytest.approx(0.007517539081, rel=3e-4)


def test_piecewise_curve_against_quantlib_hazard_rate_curve(ql):
    """A bootstrapped-shape curve (5 %, 10 %, 16 % a year to 1, 3, 5 years; flat beyond): the
    survival matches QuantLib's backward-flat HazardRateCurve (extrapolated flat) and the par
    spreads of 1-, 3- and 5-year CDS its MidPointCdsEngine, within the bounds above."""
    today = ql.Date(TODAY.day, TODAY.month, TODAY.year)
    ql.Settings.instance().evaluationDate = today
    knots = [ql.Date(20, 12, 2026), ql.Date(20, 12, 2028), ql.Date(20, 12, 2030)]
    rates = [0.05, 0.10, 0.16]
    ql_curve = ql.HazardRateCurve([today, *knots], [rates[0], *rates], ql.Actual365Fixed())
    ql_curve.enableExtrapolation()
    curve = HazardCurve(tuple((d - today) / 365 for d in knots), tuple(rates))
    for day in (
        ql.Date(1, 6, 2026),
        ql.Date(20, 12, 2027),
        ql.Date(5, 3, 2030),
        ql.Date(20, 12, 2033),
    ):
        assert curve.survival((day - today) / 365) == pytest.approx(
            ql_curve.survivalProbability(day), rel=1e-12
        )
    probability = ql.DefaultProbabilityTermStructureHandle(ql_curve)
    discount = ql.YieldTermStructureHandle(
        ql.FlatForward(today, RATE, ql.Actual365Fixed(), ql.Continuous)
    )
    for years in (1, 3, 5):
        spec = five_year(maturity=date(2025 + years, 12, 20))
        dates = [today] + [ql.Date(d.day, d.month, d.year) for d in spec.premium_dates()]
        schedule = ql.Schedule(dates, ql.NullCalendar(), ql.Unadjusted)
        cds = ql.CreditDefaultSwap(
            ql.Protection.Buyer, 1.0, 0.05, schedule, ql.Unadjusted, ql.Actual360()
        )
        cds.setPricingEngine(ql.MidPointCdsEngine(probability, 0.40, discount))
        periods = spec.periods(TODAY)
        assert par_spread(curve, RATE, 0.40, periods) == pytest.approx(cds.fairSpread(), rel=3e-4)


def test_piecewise_survival_integrates_each_piece_and_extrapolates_the_last_rate():
    curve = HazardCurve((1.0, 3.0), (0.05, 0.20))
    assert curve.survival(0.5) == pytest.approx(math.exp(-0.025), rel=1e-15)
    assert curve.survival(2.0) == pytest.approx(math.exp(-(0.05 + 0.20)), rel=1e-15)
    # beyond the last knot the last rate (20 %) goes on
    assert curve.survival(4.0) == pytest.approx(math.exp(-(0.05 + 0.40 + 0.20)), rel=1e-15)
    assert curve.survival(-1.0) == 1.0
    with pytest.raises(ValueError):
        HazardCurve((1.0, 1.0), (0.1, 0.1))
    with pytest.raises(ValueError):
        HazardCurve((1.0,), (-0.1,))


# --------------------------------------------------------------------------------------------
# mark to market and CS01


def test_long_protection_gains_on_the_seeds_280bps_widening_and_by_about_cs01_for_small_moves():
    spec = five_year(coupon_bps=500)
    before = flat_hazard_from_spread(0.036, 0.40, RATE, PERIODS)  # 640 - 280 = 360 bps
    after = flat_hazard_from_spread(0.064, 0.40, RATE, PERIODS)
    gain = upfront(after, RATE, 0.4, PERIODS, 0.05) - upfront(before, RATE, 0.4, PERIODS, 0.05)
    assert gain > 0
    # the long's value is concave in the spread (the annuity shrinks as it widens): the move is
    # bracketed by the CS01s at its two ends
    assert cs01(0.064, 0.4, RATE, PERIODS, 0.05) * 280 < gain
    assert gain < cs01(0.036, 0.4, RATE, PERIODS, 0.05) * 280
    # a 5 bps move is CS01 x 5 up to the second order
    small = flat_hazard_from_spread(0.0645, 0.40, RATE, PERIODS)
    move = upfront(small, RATE, 0.4, PERIODS, 0.05) - upfront(after, RATE, 0.4, PERIODS, 0.05)
    assert move == pytest.approx(cs01(0.064, 0.4, RATE, PERIODS, 0.05) * 5, rel=1e-2)
    # in money: 10 contracts of 1m USD gain; the seller loses the same
    long = position_value(spec, 10, after, RATE, TODAY) - position_value(
        spec, 10, before, RATE, TODAY
    )
    short = position_value(spec, -10, after, RATE, TODAY) - position_value(
        spec, -10, before, RATE, TODAY
    )
    assert long > 0 and short == -long


def test_buyers_value_rises_by_the_coupon_paid_on_a_premium_date_so_cash_plus_value_is_smooth():
    # the value is dirty: the coupon accrued in the running period is owed until it is paid,
    # so paying it (cash -c alpha) raises the value by c alpha, up to one day's carry, which is
    # below (par + coupon) / 360 of notional
    spec = five_year(coupon_bps=500)
    curve = HazardCurve.flat(0.1076)
    before, after = (
        upfront(curve, RATE, 0.40, spec.periods(day), 0.05)
        for day in (date(2026, 3, 19), date(2026, 3, 20))
    )
    coupon_paid = 0.05 * 90 / 360  # 20 Dec 2025 to 20 Mar 2026
    par = par_spread(curve, RATE, 0.40, PERIODS)
    assert after - before == pytest.approx(coupon_paid, abs=(par + 0.05) / 360)


def test_cs01_is_about_the_risky_annuity_times_one_basis_point_at_par():
    curve = flat_hazard_from_spread(0.064, 0.40, RATE, PERIODS)
    annuity = risky_annuity(curve, RATE, PERIODS)
    assert cs01(0.064, 0.4, RATE, PERIODS, 0.064) == pytest.approx(annuity * BPS, rel=1e-3)


def test_bootstrap_reprices_every_pillar_and_a_flat_term_structure_gives_a_flat_curve():
    specs = [five_year(maturity=date(2025 + years, 12, 20)) for years in (1, 3, 5)]
    pillars = [
        (s.periods(TODAY), spread) for s, spread in zip(specs, (0.03, 0.05, 0.064), strict=True)
    ]
    curve = bootstrap_hazard(pillars, 0.40, RATE)
    assert curve.rates[0] < curve.rates[1] < curve.rates[2]
    for periods, spread in pillars:
        assert par_spread(curve, RATE, 0.40, periods) == pytest.approx(spread, rel=1e-12)
    flat = bootstrap_hazard([(p, 0.064) for p, _ in pillars], 0.40, RATE)
    (expected,) = flat_hazard_from_spread(0.064, 0.40, RATE, PERIODS).rates
    # not exactly flat: the short pillars' premium grids differ; within 0.1 %
    assert max(flat.rates) == pytest.approx(min(flat.rates), rel=1e-3)
    assert flat.rates[-1] == pytest.approx(expected, rel=1e-3)
    with pytest.raises(ValueError, match="negative hazard"):
        bootstrap_hazard([pillars[1], (pillars[2][0], 0.001)], 0.40, RATE)


# --------------------------------------------------------------------------------------------
# properties

hazards = st.floats(min_value=0.0, max_value=2.0)
positive_hazards = st.floats(min_value=1e-4, max_value=2.0)
rates = st.floats(min_value=0.0, max_value=0.15)
recoveries = st.floats(min_value=0.0, max_value=0.95)
horizons = st.floats(min_value=0.0, max_value=30.0)


@st.composite
def curves(draw):
    n = draw(st.integers(min_value=1, max_value=5))
    steps = draw(st.lists(st.floats(min_value=0.05, max_value=5.0), min_size=n, max_size=n))
    times = tuple(itertools.accumulate(steps))
    return HazardCurve(times, tuple(draw(st.lists(hazards, min_size=n, max_size=n))))


@settings(max_examples=200, deadline=None)
@given(curves(), horizons, horizons)
def test_survival_is_decreasing_in_time_and_between_0_and_1(curve, a, b):
    a, b = min(a, b), max(a, b)
    assert 0.0 <= curve.survival(b) <= curve.survival(a) <= 1.0


@settings(max_examples=200, deadline=None)
@given(curves(), rates, recoveries, horizons)
def test_protection_leg_is_between_0_and_loss_given_default(curve, rate, recovery, maturity):
    value = protection_leg(curve, rate, recovery, maturity)
    assert 0.0 <= value <= (1.0 - recovery) * (1 + 1e-12)
    # and never above the undiscounted loss times the default probability
    assert value <= (1.0 - recovery) * default_probability(curve, maturity) * (1 + 1e-12)


@settings(max_examples=100, deadline=None)
@given(positive_hazards, positive_hazards, rates, recoveries)
def test_par_spread_is_increasing_in_the_hazard(h1, h2, rate, recovery):
    if h1 == h2:
        return
    low, high = min(h1, h2), max(h1, h2)
    assert par_spread(HazardCurve.flat(low), rate, recovery, PERIODS) < par_spread(
        HazardCurve.flat(high), rate, recovery, PERIODS
    )


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=1e-4, max_value=0.5), rates, st.floats(min_value=0.0, max_value=0.9))
def test_par_spread_of_a_flat_hazard_is_the_credit_triangle_corrected_for_act360_and_arrears(
    hazard, rate, recovery
):
    # s = h (1 - R) x 360/365 / (1 - r dt / 2) to first order in x = (h + r) dt per quarter
    # (derivation in docs/credit.md); quarters are 90 to 92 days, so dt is taken at its mean
    # and the bound adds r x (its range) / 2; the second-order remainder is below x^2 / 4
    lengths = [end - start for start, end, _ in PERIODS]
    dt = sum(lengths) / len(lengths)
    x = (hazard + rate) * max(lengths)
    bound = x * x / 4 + rate * (max(lengths) - min(lengths)) / 2 + 1e-12
    expected = hazard * (1 - recovery) * 360 / 365 / (1 - rate * dt / 2)
    got = par_spread(HazardCurve.flat(hazard), rate, recovery, PERIODS)
    assert got == pytest.approx(expected, rel=bound)


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=0.0, max_value=0.3), rates, recoveries, st.floats(0.0, 0.1))
def test_value_is_continuous_in_the_spread(spread, rate, recovery, coupon):
    # Lipschitz: V = (s - c) A(s) with the annuity A <= 1.02 T (ACT/360 on T years) and
    # |dA/ds| = |dA/dh| / (1 - R) <= 1.02 T^2 / (1 - R), so a move of eps moves V by at most
    # eps (1.02 T + |s - c| 1.02 T^2 / (1 - R)), plus the calibration's noise
    eps = 1e-7
    maturity = PERIODS[-1][1]
    slope = 1.02 * maturity + abs(spread + eps - coupon) * 1.02 * maturity**2 / (1 - recovery)
    values = []
    for s in (spread, spread + eps):
        curve = flat_hazard_from_spread(s, recovery, rate, PERIODS)
        values.append(upfront(curve, rate, recovery, PERIODS, coupon))
    assert abs(values[1] - values[0]) <= eps * slope + 1e-12


@settings(max_examples=100, deadline=None)
@given(curves(), rates, horizons, horizons)
def test_default_leg_is_additive_over_adjacent_intervals(curve, rate, a, b):
    a, b = min(a, b), max(a, b)
    mid = (a + b) / 2
    whole = default_leg_pv(curve, rate, a, b)
    assert whole == pytest.approx(
        default_leg_pv(curve, rate, a, mid) + default_leg_pv(curve, rate, mid, b),
        rel=1e-12,
        abs=1e-300,
    )


# --------------------------------------------------------------------------------------------
# the flat-hazard fast path (closed form) against the general model, its reference

#: The bound the closed form keeps to the general model (docs/credit.md, "Speed"): measured
#: below 1e-15, so a failure here is a wrong formula, not rounding.
FAST_REL = 1e-12
#: A series effective on a day that is not an IMM date (a short first stub), seen mid-period.
STUB_SPEC = five_year(effective=date(2024, 1, 1))
STUB_PERIODS = STUB_SPEC.periods(date(2024, 2, 15))


@st.composite
def schedules(draw):
    """Premium periods as a listed series sees them: effective any day of two years (a short
    stub when it is not an IMM date), maturity the IMM date after up to ten years, valued any
    day before maturity (the period running then starts before the valuation date)."""
    effective = date(2024, 1, 1) + timedelta(days=draw(st.integers(0, 730)))
    maturity = _next_imm(effective + timedelta(days=draw(st.integers(0, 3650))))
    spec = five_year(effective=effective, maturity=maturity)
    valuation = effective + timedelta(days=draw(st.integers(0, (maturity - effective).days - 1)))
    return spec.periods(valuation)


def test_the_stub_example_has_a_short_first_period_running_at_the_valuation_date():
    start, end, accrual = STUB_PERIODS[0]
    assert start < 0.0 < end and accrual == (date(2024, 3, 20) - date(2024, 1, 1)).days / 360


# hazards 0..3 a year; the positive ones from 1e-12, above the subnormal floats (a hazard of
# 1e-310 a year would leave too few digits in the products for any relative bound)
fast_hazards = st.one_of(st.just(0.0), st.floats(min_value=1e-12, max_value=3.0))


@settings(max_examples=300, deadline=None)
@given(
    fast_hazards,
    st.floats(min_value=0.0, max_value=0.1),
    recoveries,
    schedules(),
    st.floats(min_value=0.0, max_value=0.2),
)
@example(0.1076, RATE, 0.4, PERIODS, 0.05)
@example(0.1076, RATE, 0.4, STUB_PERIODS, 0.05)
@example(0.0, 0.0, 0.4, STUB_PERIODS, 0.01)
@example(3.0, 0.1, 0.0, STUB_PERIODS, 0.2)
def test_the_closed_form_legs_equal_the_general_model_on_a_flat_hazard_within_1e_12(
    hazard, rate, recovery, periods, coupon
):
    curve = HazardCurve.flat(hazard)
    protection = protection_leg(curve, rate, recovery, periods[-1][1])
    annuity = risky_annuity(curve, rate, periods)
    fast_protection, fast_annuity = flat_legs(hazard, rate, recovery, periods)
    assert fast_protection == pytest.approx(protection, rel=FAST_REL, abs=0.0)
    assert fast_annuity == pytest.approx(annuity, rel=FAST_REL, abs=0.0)
    assert flat_par_spread(hazard, rate, recovery, periods) == pytest.approx(
        par_spread(curve, rate, recovery, periods), rel=2 * FAST_REL, abs=0.0
    )
    # a difference of the legs: relative to the legs, not to itself (it may be near 0)
    reference = upfront(curve, rate, recovery, periods, coupon)
    fast = flat_upfront(hazard, rate, recovery, periods, coupon)
    assert abs(fast - reference) <= FAST_REL * (protection + coupon * annuity)


@settings(max_examples=300, deadline=None)
@given(
    st.floats(min_value=1e-6, max_value=3.0),
    st.floats(min_value=0.0, max_value=0.1),
    recoveries,
    schedules(),
)
@example(0.1076, RATE, 0.4, PERIODS)
@example(0.1076, RATE, 0.4, STUB_PERIODS)
def test_the_newton_calibration_finds_the_bisections_flat_hazard_and_the_legs_there(
    hazard, rate, recovery, periods
):
    spread = par_spread(HazardCurve.flat(hazard), rate, recovery, periods)  # reachable
    found, protection, annuity = flat_calibrate(spread, recovery, rate, periods)
    bisected = flat_hazard_from_spread(spread, recovery, rate, periods)
    assert found == pytest.approx(bisected.rates[0], rel=FAST_REL)
    assert found == pytest.approx(hazard, rel=FAST_REL)
    assert (protection, annuity) == flat_legs(found, rate, recovery, periods)  # legs at it
    assert protection == pytest.approx(
        protection_leg(bisected, rate, recovery, periods[-1][1]), rel=FAST_REL
    )
    assert annuity == pytest.approx(risky_annuity(bisected, rate, periods), rel=FAST_REL)


def test_a_spread_no_hazard_reaches_is_refused_by_the_fast_calibration_as_by_the_reference():
    # one day before the only premium date: the buyer owes the whole 79-day period's coupon
    # on default, so the par spread saturates near (1 - R) / (79/360) = 2.7 a year
    spec = five_year(effective=date(2024, 1, 1), maturity=date(2024, 3, 20))
    periods = spec.periods(date(2024, 3, 19))
    with pytest.raises(ValueError, match="no hazard rate"):
        flat_hazard_from_spread(5.0, 0.4, RATE, periods)
    with pytest.raises(ValueError, match="no hazard rate"):
        flat_calibrate(5.0, 0.4, RATE, periods)
    # 2.0 is reachable, at a hazard of several hundred a year: found by both
    hazard, _, _ = flat_calibrate(2.0, 0.4, RATE, periods)
    assert hazard > 100
    assert hazard == pytest.approx(
        flat_hazard_from_spread(2.0, 0.4, RATE, periods).rates[0], rel=FAST_REL
    )


def test_the_fast_path_checks_its_inputs_and_a_zero_spread_is_a_zero_hazard():
    hazard, protection, annuity = flat_calibrate(0.0, 0.4, RATE, PERIODS)
    assert (hazard, protection) == (0.0, 0.0)
    assert annuity == pytest.approx(risky_annuity(HazardCurve.flat(0.0), RATE, PERIODS), rel=1e-15)
    with pytest.raises(ValueError, match="hazard rate must be >= 0"):
        flat_legs(-0.01, RATE, 0.4, PERIODS)
    with pytest.raises(ValueError, match="spread must be >= 0"):
        flat_calibrate(-0.01, 0.4, RATE, PERIODS)
    with pytest.raises(ValueError, match="recovery"):
        flat_legs(0.1, RATE, 1.0, PERIODS)
    with pytest.raises(ValueError, match="bad premium period"):
        flat_legs(0.1, RATE, 0.4, [(0.5, 0.25, 0.25)])
    with pytest.raises(ValueError, match="at least one premium period"):
        flat_calibrate(0.01, 0.4, RATE, [])


# --------------------------------------------------------------------------------------------
# the integer boundary


def test_spread_to_ticks_rounds_half_to_even_once_from_the_exact_value():
    assert spread_to_ticks(0.064, "1") == 640
    assert spread_to_ticks(0.07734, "0.5") == 1547  # 773.4 bps in half-bp ticks
    assert spread_to_ticks(0.0625, "0.5") == 1250
    # the float 0.00125 is 0.00125000000000000002602... : just above 12.5 bps, not a tie
    assert Fraction(0.00125) * 10_000 > Fraction(25, 2)
    assert spread_to_ticks(0.00125, "1") == 13
    # true ties (2^-10 and 3 x 2^-10 are exact binaries): 312.5 -> 312, 937.5 -> 938 ticks
    assert spread_to_ticks(2.0**-10, "0.03125") == 312
    assert spread_to_ticks(3 * 2.0**-10, "0.03125") == 938
    with pytest.raises(ValueError):
        spread_to_ticks(-0.01, "1")
    with pytest.raises(ValueError):
        spread_to_ticks(float("nan"), "1")


def test_value_to_minor_rounds_ties_to_even_and_keeps_the_sign():
    assert value_to_minor(0.5, 1) == 0
    assert value_to_minor(1.5, 1) == 2
    assert value_to_minor(-0.5, 3) == -2  # -1.5 -> -2
    assert value_to_minor(0.25, -10) == -2  # -2.5 -> -2


def test_position_value_is_rounded_once_for_the_whole_position_not_per_contract():
    spec = five_year(coupon_bps=500, notional=101)  # 1.01 USD: per-contract cents are fractional
    curve = flat_hazard_from_spread(0.064, 0.40, RATE, PERIODS)
    value = upfront(curve, RATE, 0.40, PERIODS, 0.05)
    contracts = 1000
    whole = position_value(spec, contracts, curve, RATE, TODAY)
    assert whole == round(Fraction(value) * 101 * contracts)
    per_contract = contracts * position_value(spec, 1, curve, RATE, TODAY)
    assert whole != per_contract  # rounding each contract would lose cents


def test_mark_and_quoted_spread_value_agree_at_the_marked_spread():
    spec = five_year(coupon_bps=500)
    curve = flat_hazard_from_spread(0.064, 0.40, RATE, PERIODS)
    assert cds_mark(spec, curve, RATE, TODAY) == 640
    assert position_value_at_spread(spec, 7, 640, RATE, TODAY) == position_value(
        spec, 7, curve, RATE, TODAY
    )
    # a par-coupon contract quoted at its own spread is worth 0 up to the calibration's error
    par = five_year(coupon_bps=640)
    assert abs(position_value_at_spread(par, 1, 640, RATE, TODAY)) <= 1
