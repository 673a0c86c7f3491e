"""exchange.products.pricing: Black-76 against QuantLib and a 100-digit oracle, textbook values,
limits,
parity and monotonicity; the RVS value; the rounding boundary; the mark rule.

QuantLib is a test-only dependency (the ``dev`` extra, which CI installs); where it is missing
its tests skip locally, with the reason shown by ``-ra``, and fail under CI.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from exchange.products.pricing import (
    black76_call,
    black76_put,
    black76_put_array,
    discount_factor,
    premium_from_value,
    put_delta,
    rvs_mark,
    rvs_model_value,
    value_to_ticks,
    vega,
)
from tests.exchange.conftest import import_or_skip_unless_ci


@pytest.fixture(scope="module")
def ql():
    return import_or_skip_unless_ci("QuantLib", "QuantLib (dev extra) is not installed")


# --------------------------------------------------------------------------------------------
# strategies: a wide grid of inputs (prices from 1e-2 to 1e6 currency units, strikes from a
# tenth to ten times the forward, volatilities 0.5 % .. 300 %, one day .. 30 years)

forwards = st.floats(min_value=1e-2, max_value=1e6)
moneyness = st.floats(min_value=-1.0, max_value=1.0).map(lambda e: 10.0**e)  # K / F
sigmas = st.floats(min_value=0.005, max_value=3.0)
years = st.floats(min_value=1.0 / 365.0, max_value=30.0)
discounts = st.floats(min_value=0.3, max_value=1.0)


@st.composite
def black_inputs(draw):
    forward = draw(forwards)
    return forward, forward * draw(moneyness), draw(sigmas), draw(years), draw(discounts)


def scale(forward, strike, discount=1.0):
    """The size of the money at stake: tolerances for tiny values are relative to it."""
    return discount * max(forward, strike)


# --------------------------------------------------------------------------------------------
# an independent oracle: Black-76 in 100-digit decimal arithmetic

PI = Decimal(
    "3.14159265358979323846264338327950288419716939937510582097494459230781640628620899862803"
    "482534211706798214808651328230664709384460955058223172535940812848111745028410270193852"
)


def _erfc_decimal(x: Decimal) -> Decimal:
    """erfc(x) from the series erf(x) = 2/sqrt(pi) exp(-x^2) sum 2^n x^(2n+1) / (2n+1)!!,
    whose terms all have one sign (no cancellation); in the caller's decimal context."""
    if x > 40:
        return Decimal(0)  # below 1e-690: far under any float that matters here
    if x < -40:
        return Decimal(2)
    x2 = x * x
    term = total = x
    n = 0
    while True:
        n += 1
        term = term * 2 * x2 / (2 * n + 1)
        total += term
        if abs(term) <= abs(total) * Decimal("1e-95"):
            break
    return 1 - 2 / PI.sqrt() * (-x2).exp() * total


def oracle(forward, strike, sigma, t_years, discount, call=False) -> float:
    with localcontext() as ctx:
        ctx.prec = 100
        f, k, vol, t, df = (Decimal(v) for v in (forward, strike, sigma, t_years, discount))
        s = vol * t.sqrt()
        d1 = (f / k).ln() / s + s / 2
        d2 = d1 - s
        root2 = Decimal(2).sqrt()
        if call:
            value = df * (f * _erfc_decimal(-d1 / root2) - k * _erfc_decimal(-d2 / root2)) / 2
        else:
            value = df * (k * _erfc_decimal(d2 / root2) - f * _erfc_decimal(d1 / root2)) / 2
        return float(value)


def test_oracle_reproduces_the_atm_closed_form():
    # at F = K: put = call = DF F erf(s / (2 sqrt 2)), and erf is exact to ~1 ulp in math
    exact = 100.0 * math.erf(0.1 / 2**0.5)
    assert math.isclose(oracle(100.0, 100.0, 0.2, 1.0, 1.0), exact, rel_tol=1e-15)


# --------------------------------------------------------------------------------------------
# (a) against QuantLib


def ql_black(ql, call, forward, strike, sigma, t_years, discount):
    kind = ql.Option.Call if call else ql.Option.Put
    return ql.blackFormula(kind, strike, forward, sigma * math.sqrt(t_years), discount)


@settings(max_examples=400, deadline=None)
@given(black_inputs(), st.booleans())
def test_black76_agrees_with_quantlib(ql, inputs, call):
    forward, strike, sigma, t_years, discount = inputs
    ours = (black76_call if call else black76_put)(*inputs)
    theirs = ql_black(ql, call, *inputs)
    tiny = 1e-12 * scale(forward, strike, discount)
    assert math.isclose(ours, theirs, rel_tol=1e-6, abs_tol=tiny)
    if theirs >= 1e-4 * scale(forward, strike, discount):
        # away from the far tail, where QuantLib's 0.5 * (1 + erf) loses digits, much closer
        assert math.isclose(ours, theirs, rel_tol=1e-10)


FIXED = [
    # forward, strike, sigma, t_years, discount
    (100.0, 100.0, 0.2, 1.0, 1.0),
    (100.0, 80.0, 0.2, 1.0, 1.0),
    (100.0, 120.0, 0.2, 1.0, 1.0),
    (25_000.0, 15_000.0, 0.35, 3.0, math.exp(-0.05 * 3.0)),  # a GPU resale floor
    (25_000.0, 30_000.0, 0.6, 0.25, math.exp(-0.04 * 0.25)),
    (19.0, 19.0, 0.28, 0.75, math.exp(-0.1 * 0.75)),
    (1.0, 10.0, 0.05, 1.0 / 365.0, 0.99),  # deep in the money, one day
    (10.0, 1.0, 0.05, 1.0 / 365.0, 0.99),  # deep out of the money, one day
    (100.0, 100.0, 3.0, 30.0, 0.3),  # huge variance
    (100.0, 100.0, 0.001, 1e-4, 1.0),  # tiny variance
]


@pytest.mark.parametrize("inputs", FIXED)
def test_fixed_cases_agree_with_quantlib(ql, inputs):
    forward, strike, _, _, discount = inputs
    tiny = 1e-12 * scale(forward, strike, discount)
    for call, ours in ((False, black76_put(*inputs)), (True, black76_call(*inputs))):
        assert math.isclose(ours, ql_black(ql, call, *inputs), rel_tol=1e-10, abs_tol=tiny)


@settings(max_examples=200, deadline=None)
@given(black_inputs())
def test_put_delta_and_vega_agree_with_quantlib(ql, inputs):
    forward, strike, sigma, t_years, discount = inputs
    calc = ql.BlackCalculator(
        ql.PlainVanillaPayoff(ql.Option.Put, strike), forward, sigma * math.sqrt(t_years), discount
    )
    assert math.isclose(put_delta(*inputs), calc.deltaForward(), rel_tol=1e-6, abs_tol=1e-12)
    assert math.isclose(
        vega(*inputs), calc.vega(t_years), rel_tol=1e-6, abs_tol=1e-12 * scale(forward, strike)
    )


# --------------------------------------------------------------------------------------------
# (a') against the 100-digit oracle: the 1e-10 relative accuracy target


@settings(max_examples=150, deadline=None)
@given(black_inputs(), st.booleans())
@example((100.0, 100.0, 0.2, 1.0, 1.0), False)
@example((25_000.0, 12_000.0, 0.15, 0.1, 0.99), False)  # far out of the money
def test_black76_is_accurate_to_1e_10_relative(inputs, call):
    forward, strike, *_ = inputs
    ours = (black76_call if call else black76_put)(*inputs)
    exact = oracle(*inputs, call=call)
    # relative 1e-10 for every value above 1e-20 of the money at stake (the deep tail loses
    # relative digits to the subtraction K N(-d2) - F N(-d1); it is worth nothing there)
    assert math.isclose(ours, exact, rel_tol=1e-10, abs_tol=1e-20 * scale(forward, strike))


# --------------------------------------------------------------------------------------------
# (b) published and hand-worked values, limits, parity, monotonicity


def test_atm_hand_worked_value():
    # F = K = 100, sigma = 0.2, T = 1: d1 = 0.1, d2 = -0.1, put = 100 (N(0.1) - N(-0.1))
    #   = 100 erf(0.1 / sqrt 2) = 7.96556745540579...; the formula in doubles gives ...804
    put = black76_put(100.0, 100.0, 0.2, 1.0)
    assert math.isclose(put, 7.965567455405804, rel_tol=1e-14)
    assert math.isclose(put, 100.0 * math.erf(0.1 / math.sqrt(2.0)), rel_tol=1e-14)
    assert math.isclose(black76_call(100.0, 100.0, 0.2, 1.0), put, rel_tol=1e-14)


def test_textbook_values():
    # Haug, The Complete Guide to Option Pricing Formulas (2nd ed.), Black-76 example:
    # F = K = 19, T = 0.75, r = 10 %, sigma = 28 %: c = p = 1.7011
    df = math.exp(-0.10 * 0.75)
    assert round(black76_call(19.0, 19.0, 0.28, 0.75, df), 4) == 1.7011
    assert round(black76_put(19.0, 19.0, 0.28, 0.75, df), 4) == 1.7011
    # Hull, Options, Futures, and Other Derivatives, European put futures option example:
    # F = K = 20, T = 4 months, r = 9 %, sigma = 25 %: p = 1.12
    assert round(black76_put(20.0, 20.0, 0.25, 4.0 / 12.0, math.exp(-0.09 * 4.0 / 12.0)), 2) == 1.12


@pytest.mark.parametrize("t_years", [0.0, -1.0, -1e-9])
@pytest.mark.parametrize("forward, strike", [(80.0, 100.0), (100.0, 80.0), (100.0, 100.0)])
def test_expired_is_exactly_intrinsic(forward, strike, t_years):
    df = 0.97
    assert black76_put(forward, strike, 0.3, t_years, df) == df * max(strike - forward, 0.0)
    assert black76_call(forward, strike, 0.3, t_years, df) == df * max(forward - strike, 0.0)


@pytest.mark.parametrize("forward, strike", [(80.0, 100.0), (100.0, 80.0), (100.0, 100.0)])
def test_zero_volatility_is_exactly_intrinsic(forward, strike):
    assert black76_put(forward, strike, 0.0, 2.0, 0.9) == 0.9 * max(strike - forward, 0.0)
    assert black76_call(forward, strike, 0.0, 2.0, 0.9) == 0.9 * max(forward - strike, 0.0)


def test_limits_of_variance_and_strike():
    # tiny variance tends to intrinsic; huge variance to the discounted strike (put) / forward
    assert math.isclose(black76_put(80.0, 100.0, 1e-6, 1e-6), 20.0, rel_tol=1e-15)
    assert black76_put(120.0, 100.0, 1e-6, 1e-6) == 0.0
    assert math.isclose(black76_put(100.0, 90.0, 50.0, 10.0, 0.5), 45.0, rel_tol=1e-12)
    assert math.isclose(black76_call(100.0, 90.0, 50.0, 10.0, 0.5), 50.0, rel_tol=1e-12)
    assert black76_put(100.0, 90.0, 1e200, 1e200, 0.5) == 45.0  # sigma sqrt(t) overflows
    # a zero strike: the put is worthless, the call is the discounted forward
    assert black76_put(100.0, 0.0, 0.3, 1.0, 0.9) == 0.0
    assert black76_call(100.0, 0.0, 0.3, 1.0, 0.9) == 90.0


@settings(max_examples=300)
@given(black_inputs())
def test_put_call_parity(inputs):
    forward, strike, sigma, t_years, discount = inputs
    lhs = black76_call(*inputs) - black76_put(*inputs)
    assert abs(lhs - discount * (forward - strike)) <= 1e-12 * scale(forward, strike)


@settings(max_examples=300)
@given(black_inputs())
def test_within_no_arbitrage_bounds(inputs):
    forward, strike, sigma, t_years, discount = inputs
    put = black76_put(*inputs)
    assert discount * max(strike - forward, 0.0) <= put <= discount * strike
    call = black76_call(*inputs)
    assert discount * max(forward - strike, 0.0) <= call <= discount * forward


SLACK = 1e-13  # rounding noise allowed in the monotonicity properties, relative to the scale
bumps = st.floats(min_value=1e-6, max_value=1.0)


@settings(max_examples=300)
@given(black_inputs(), bumps)
def test_put_decreases_with_the_forward(inputs, bump):
    forward, strike, sigma, t_years, discount = inputs
    higher = forward * (1.0 + bump)
    slack = SLACK * scale(higher, strike)
    assert black76_put(higher, strike, sigma, t_years, discount) <= black76_put(*inputs) + slack


@settings(max_examples=300)
@given(black_inputs(), bumps)
def test_put_increases_with_the_strike(inputs, bump):
    forward, strike, sigma, t_years, discount = inputs
    higher = strike * (1.0 + bump)
    slack = SLACK * scale(forward, higher)
    assert black76_put(forward, higher, sigma, t_years, discount) >= black76_put(*inputs) - slack


@settings(max_examples=300)
@given(black_inputs(), bumps)
def test_put_increases_with_volatility(inputs, bump):
    forward, strike, sigma, t_years, discount = inputs
    slack = SLACK * scale(forward, strike)
    bumped = black76_put(forward, strike, sigma * (1.0 + bump), t_years, discount)
    assert bumped >= black76_put(*inputs) - slack


@settings(max_examples=200)
@given(black_inputs())
def test_delta_and_vega_match_finite_differences(inputs):
    forward, strike, sigma, t_years, discount = inputs
    assume(black76_put(*inputs) > 1e-6 * scale(forward, strike))
    h = forward * 1e-6
    fd_delta = (
        black76_put(forward + h, strike, sigma, t_years, discount)
        - black76_put(forward - h, strike, sigma, t_years, discount)
    ) / (2 * h)
    assert -discount <= put_delta(*inputs) <= 0.0
    assert math.isclose(put_delta(*inputs), fd_delta, rel_tol=1e-4, abs_tol=1e-7)
    e = sigma * 1e-6
    fd_vega = (
        black76_put(forward, strike, sigma + e, t_years, discount)
        - black76_put(forward, strike, sigma - e, t_years, discount)
    ) / (2 * e)
    assert vega(*inputs) >= 0.0
    assert math.isclose(vega(*inputs), fd_vega, rel_tol=1e-4, abs_tol=1e-7 * forward)


def test_delta_and_vega_special_cases():
    assert put_delta(80.0, 100.0, 0.3, 0.0, 0.9) == -0.9
    assert put_delta(120.0, 100.0, 0.0, 1.0, 0.9) == 0.0
    assert put_delta(100.0, 100.0, 0.0, 1.0, 0.9) == -0.45
    assert vega(80.0, 100.0, 0.3, 0.0) == 0.0
    assert vega(80.0, 100.0, 0.0, 1.0) == 0.0
    assert math.isclose(vega(100.0, 100.0, 0.0, 4.0), 100.0 * 2.0 / math.sqrt(2 * math.pi))


BAD_BLACK = [
    (0.0, 100.0, 0.2, 1.0, 1.0),  # forward must be > 0
    (-1.0, 100.0, 0.2, 1.0, 1.0),
    (100.0, -1.0, 0.2, 1.0, 1.0),  # strike >= 0
    (100.0, 100.0, -0.2, 1.0, 1.0),  # sigma >= 0
    (100.0, 100.0, 0.2, 1.0, 0.0),  # discount > 0
    (100.0, 100.0, 0.2, 1.0, -0.5),
    (math.nan, 100.0, 0.2, 1.0, 1.0),
    (100.0, math.inf, 0.2, 1.0, 1.0),
    (100.0, 100.0, math.nan, 1.0, 1.0),
    (100.0, 100.0, 0.2, math.inf, 1.0),
    (100.0, 100.0, 0.2, -math.inf, 1.0),
    (100.0, 100.0, 0.2, 1.0, math.nan),
    (100.0, 100.0, 0.2, True, 1.0),  # bools are not numbers here
    ("100", 100.0, 0.2, 1.0, 1.0),
    (100.0, None, 0.2, 1.0, 1.0),
]


@pytest.mark.parametrize("function", [black76_put, black76_call, put_delta, vega])
@pytest.mark.parametrize("inputs", BAD_BLACK)
def test_bad_inputs_raise(function, inputs):
    with pytest.raises(ValueError):
        function(*inputs)


@pytest.mark.parametrize("function", [black76_put, black76_call, put_delta, vega])
def test_ints_and_numpy_scalars_are_accepted(function):
    as_floats = function(100.0, 90.0, 0.25, 2.0, 0.95)
    assert function(100, 90, 0.25, 2, 0.95) == as_floats
    assert function(np.float64(100.0), np.int64(90), 0.25, 2.0, np.float32(0.95)) == pytest.approx(
        as_floats, rel=1e-7
    )


# --------------------------------------------------------------------------------------------
# the array version


@settings(max_examples=100, deadline=None)
@given(
    st.lists(black_inputs(), min_size=1, max_size=50),
    st.sampled_from(["live", "expired", "no vol", "zero strike"]),
)
def test_array_agrees_with_scalar(rows, case):
    f, k, vol, t, df = (np.array(column) for column in zip(*rows, strict=True))
    if case == "expired":
        t = -t
    elif case == "no vol":
        vol = np.zeros_like(vol)
    elif case == "zero strike":
        k = np.zeros_like(k)
    got = black76_put_array(f, k, vol, t, df)
    want = np.array([black76_put(*row) for row in zip(f, k, vol, t, df, strict=True)])
    # 1e-12 relative, or 1e-14 of the money at stake for values in the far tail (where the
    # subtraction amplifies the few-ulp differences of the two erfc implementations)
    assert np.all(np.abs(got - want) <= 1e-12 * want + 1e-14 * df * np.maximum(f, k))
    if case != "live":
        assert np.array_equal(got, want)


def test_array_broadcasts_and_matches_fixed_cases():
    f, k, vol, t, df = (np.array(column) for column in zip(*FIXED, strict=True))
    got = black76_put_array(f, k, vol, t, df)
    assert got.shape == (len(FIXED),)
    for value, row in zip(got, FIXED, strict=True):
        assert math.isclose(value, black76_put(*row), rel_tol=1e-12)
    grid = black76_put_array(100.0, np.array([[80.0], [100.0], [120.0]]), np.array([0.1, 0.2]), 1.0)
    assert grid.shape == (3, 2)
    assert grid[1, 1] == pytest.approx(7.965567455405804, rel=1e-14)


def test_array_erfc_matches_math_erfc():
    from exchange.products.pricing import _erfc_array

    x = np.concatenate(
        [
            np.linspace(-30.0, 30.0, 120_001),
            [0.0, -0.0, 0.25, 0.84375, 1.25, 2.857142857142857, 6.0, -6.0, 28.0, -28.0],
            [math.inf, -math.inf, 1e-300, -1e-300, 2.0**-57],
        ]
    )
    want = np.array([math.erfc(v) for v in x.tolist()])
    got = _erfc_array(x)
    # a few ulps apart (both are fdlibm's algorithm); absolute in the subnormal range
    assert np.all(np.abs(got - want) <= 1e-14 * want + 1e-320)


@pytest.mark.parametrize(
    "inputs",
    [
        (np.array([100.0, 0.0]), 100.0, 0.2, 1.0, 1.0),
        (100.0, np.array([-1.0]), 0.2, 1.0, 1.0),
        (100.0, 100.0, np.array([0.2, math.nan]), 1.0, 1.0),
        (100.0, 100.0, 0.2, np.array([math.inf]), 1.0),
        (100.0, 100.0, 0.2, 1.0, np.array([0.0])),
    ],
)
def test_array_bad_inputs_raise(inputs):
    with pytest.raises(ValueError):
        black76_put_array(*inputs)


# --------------------------------------------------------------------------------------------
# the RVS value and the premium


def test_rvs_model_value_is_the_put_on_the_resale_index_per_contract():
    value = rvs_model_value(20_000.0, 15_000.0, 0.4, 2.0, 8, rate=0.05)
    per_gpu = black76_put(20_000.0, 15_000.0, 0.4, 2.0, math.exp(-0.05 * 2.0))
    assert value == 8 * per_gpu
    assert value > 0.0
    # zero rate: undiscounted; expired: the intrinsic payoff per contract
    assert rvs_model_value(20_000.0, 15_000.0, 0.4, 2.0, 1) == black76_put(
        20_000.0, 15_000.0, 0.4, 2.0
    )
    assert rvs_model_value(12_000.0, 15_000.0, 0.4, 0.0, 8, rate=0.05) == 8 * 3_000.0
    assert rvs_model_value(18_000.0, 15_000.0, 0.4, -0.5, 8, rate=0.05) == 0.0


def test_discount_factor():
    assert discount_factor(0.05, 2.0) == math.exp(-0.1)
    assert discount_factor(0.05, 0.0) == 1.0
    assert discount_factor(0.05, -1.0) == 1.0
    with pytest.raises(ValueError):
        discount_factor(math.nan, 1.0)


@pytest.mark.parametrize("gpus", [0, -8, 8.0, True, "8", None])
def test_rvs_model_value_rejects_bad_gpu_counts(gpus):
    with pytest.raises(ValueError):
        rvs_model_value(20_000.0, 15_000.0, 0.4, 2.0, gpus)


@pytest.mark.parametrize("rate", [math.nan, math.inf, "0.05"])
def test_rvs_model_value_rejects_bad_rates(rate):
    with pytest.raises(ValueError):
        rvs_model_value(20_000.0, 15_000.0, 0.4, 2.0, 8, rate=rate)


def test_premium_from_value():
    assert premium_from_value(1_200.0, 12) == 100.0
    assert premium_from_value(0.0, 5) == 0.0
    assert premium_from_value(1_000.0, np.int64(4)) == 250.0
    for value, periods in [(-1.0, 12), (math.nan, 12), (math.inf, 12), (100.0, 0), (100.0, 1.5)]:
        with pytest.raises(ValueError):
            premium_from_value(value, periods)


# --------------------------------------------------------------------------------------------
# the rounding boundary


@pytest.mark.parametrize(
    "value, tick_size, ticks",
    [
        (0.0, "0.01", 0),
        (-0.0, "0.01", 0),
        (1.0, "0.01", 100),
        (12.34, "0.01", 1234),
        (0.125, "0.01", 12),  # exactly 12.5 ticks: half to even, down
        (0.375, "0.01", 38),  # exactly 37.5 ticks: half to even, up
        (2.5, "1", 2),
        (3.5, "1", 4),
        (0.015, "0.01", 1),  # 0.015 is 0.01499999999999999944... in binary: not a tie
        (0.025, "0.05", 1),  # 0.025 is 0.02500000000000000138... in binary: above the tie
        (7.965567455405804, "0.001", 7966),
        (1e-300, "0.01", 0),
        (123456.789, "0.25", 493827),
        (9_007_199_254_740_993.0, "1", 9_007_199_254_740_992),  # the float is 2^53
    ],
)
def test_value_to_ticks(value, tick_size, ticks):
    assert value_to_ticks(value, tick_size) == ticks
    assert type(value_to_ticks(value, tick_size)) is int


@given(
    st.floats(min_value=0.0, max_value=1e12, allow_nan=False),
    st.sampled_from(["0.01", "0.001", "0.05", "0.25", "1", "5", "0.0001", "0.03", "1E-8"]),
)
def test_value_to_ticks_is_exact_rational_rounding(value, tick_size):
    exact = Fraction(value) / Fraction(Decimal(tick_size))
    assert value_to_ticks(value, tick_size) == round(exact)  # Fraction rounds half to even


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(["0.5", "0.25", "1", "2"]))
def test_value_to_ticks_ties_go_to_even(whole, tick_size):
    tick = Fraction(Decimal(tick_size))
    value = float((whole + Fraction(1, 2)) * tick)  # exactly representable: a tie
    assert value_to_ticks(value, tick_size) % 2 == 0


@pytest.mark.parametrize("value", [-0.01, -1e-300, math.nan, math.inf, -math.inf, True, "1", None])
def test_value_to_ticks_rejects_bad_values(value):
    with pytest.raises(ValueError):
        value_to_ticks(value, "0.01")


@pytest.mark.parametrize("tick_size", ["0", "-0.01", "abc", "NaN", "Infinity", "", 0.01, None])
def test_value_to_ticks_rejects_bad_tick_sizes(tick_size):
    with pytest.raises(ValueError):
        value_to_ticks(1.0, tick_size)


# --------------------------------------------------------------------------------------------
# (c) the mark rule: rvs_mark(model, tick_size, bid, ask, max_spread, min_depth, bid_qty, ask_qty)


def mark(model=1.00, bid=98, ask=102, max_spread=4, min_depth=5, bid_qty=10, ask_qty=10):
    return rvs_mark(model, "0.01", bid, ask, max_spread, min_depth, bid_qty, ask_qty)


def test_liquid_book_marks_at_the_mid():
    assert mark() == (100, "book")
    assert mark(bid=99, ask=103) == (101, "book")
    assert mark(bid=100, ask=101, max_spread=1) == (100, "book")  # 100.5 -> 100 (even)
    assert mark(model=1.01, bid=101, ask=102, max_spread=1) == (102, "book")  # 101.5 -> 102
    assert mark(bid_qty=5, ask_qty=5) == (100, "book")  # depth exactly the minimum
    assert mark(min_depth=0, bid_qty=0, ask_qty=0) == (100, "book")


def test_wide_spread_marks_at_the_model():
    assert mark(bid=98, ask=103) == (100, "model")  # spread 5 > 4
    assert mark(bid=97, ask=101, max_spread=4) == (99, "book")  # spread 4: liquid
    assert mark(max_spread=0) == (100, "model")  # no book is ever liquid


@pytest.mark.parametrize("bid_qty, ask_qty", [(4, 10), (10, 4), (0, 0)])
def test_thin_book_marks_at_the_model(bid_qty, ask_qty):
    assert mark(model=1.01, bid_qty=bid_qty, ask_qty=ask_qty) == (101, "model")


@pytest.mark.parametrize("bid, ask", [(None, 102), (98, None), (None, None), (100, 100), (102, 98)])
def test_one_sided_locked_or_crossed_book_marks_at_the_model(bid, ask):
    assert mark(model=1.01, bid=bid, ask=ask) == (101, "model")


def test_the_mid_is_clamped_to_the_band_around_the_model():
    # model 100 ticks, band +-4: a liquid book at 120 marks at 104, at 50 marks at 96
    assert mark(bid=118, ask=122) == (104, "book")
    assert mark(bid=48, ask=52) == (96, "book")
    assert mark(bid=102, ask=106) == (104, "book")  # exactly on the band edge
    assert mark(model=0.0, bid=5, ask=7) == (4, "book")


def test_the_model_is_rounded_once_half_to_even():
    # 0.125 is exactly 12.5 ticks -> 12; 0.135 in binary is just above 13.5 ticks -> 14
    assert mark(model=0.125, bid=None) == (12, "model")
    assert mark(model=0.375, bid=None) == (38, "model")
    assert mark(model=0.135, bid=None) == (14, "model")
    # and the band is centred on the rounded model: 12 +- 4
    assert mark(model=0.125, bid=30, ask=32) == (16, "book")


@pytest.mark.parametrize("model", [-0.01, math.nan, math.inf, -math.inf])
def test_bad_model_values_raise(model):
    with pytest.raises(ValueError):
        mark(model=model)


@pytest.mark.parametrize(
    "changes",
    [
        {"bid": -1},
        {"ask": 1.5},
        {"bid": True},
        {"max_spread": -1},
        {"min_depth": -1},
        {"bid_qty": -3},
        {"ask_qty": 2.0},
    ],
)
def test_bad_book_inputs_raise(changes):
    with pytest.raises(ValueError):
        mark(**changes)


def test_numpy_integers_are_accepted():
    args = (np.int64(98), np.int64(102), np.int32(4), np.int64(5), np.int64(10), np.int64(10))
    assert rvs_mark(np.float64(1.0), "0.01", *args) == (100, "book")


@settings(max_examples=500)
@given(
    st.floats(min_value=0.0, max_value=1e4),
    st.one_of(st.none(), st.integers(0, 20_000)),
    st.one_of(st.none(), st.integers(0, 20_000)),
    st.integers(0, 50),
    st.integers(0, 20),
    st.integers(0, 30),
    st.integers(0, 30),
)
def test_mark_properties(model, bid, ask, max_spread, min_depth, bid_qty, ask_qty):
    ticks, source = rvs_mark(model, "0.01", bid, ask, max_spread, min_depth, bid_qty, ask_qty)
    model_ticks = value_to_ticks(model, "0.01")
    assert type(ticks) is int
    assert abs(ticks - model_ticks) <= max_spread
    liquid = (
        bid is not None
        and ask is not None
        and 0 < ask - bid <= max_spread
        and min(bid_qty, ask_qty) >= min_depth
    )
    assert source == ("book" if liquid else "model")
    if liquid:
        assert bid <= ticks <= ask or ticks in (model_ticks - max_spread, model_ticks + max_spread)
        mid = Fraction(bid + ask, 2)
        assert ticks == min(max(round(mid), model_ticks - max_spread), model_ticks + max_spread)
    else:
        assert ticks == model_ticks
