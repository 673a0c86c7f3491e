"""The second-derivative view: trend (S, S', S'') and borrowed time
(exchange/postmortem/trend.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.postmortem.trend import MIN_JUMP_LOG, Jump, Trend, borrowed_time, detect_jumps, trend
from exchange.products.index import DAY_NS, YEAR_NS


def years(t: np.ndarray) -> np.ndarray:
    return t / YEAR_NS


def daily(n_days: int, start_day: int = 0) -> np.ndarray:
    return (start_day + np.arange(n_days, dtype=np.int64)) * DAY_NS


# --------------------------------------------------------------------------------------- trend


@settings(max_examples=80, deadline=None)
@given(
    st.floats(-100, 100),
    st.floats(-100, 100),
    st.floats(-100, 100),
    st.integers(20, 400),
    st.integers(0, 2**32),
    st.integers(5, 120),
)
def test_trend_is_exact_for_a_quadratic_on_any_irregular_grid(c0, c1, c2, n, seed, window_days):
    rng = np.random.default_rng(seed)
    gaps = rng.integers(3_600 * 10**9, 3 * DAY_NS, n)  # irregular: 1 hour to 3 days
    t = np.cumsum(gaps).astype(np.int64) + 10 * YEAR_NS
    x = years(t - t[0])
    y = c0 + c1 * x + c2 * x**2
    tr = trend(t, y, window_days * DAY_NS)
    ok = np.isfinite(tr.S)
    scale = 1 + abs(c0) + abs(c1) + abs(c2)
    np.testing.assert_allclose(tr.S[ok], y[ok], rtol=0, atol=1e-8 * scale)
    np.testing.assert_allclose(tr.S1[ok], (c1 + 2 * c2 * x)[ok], rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(tr.S2[ok], np.full(ok.sum(), 2 * c2), rtol=0, atol=1e-3 * scale)


def test_trend_rates_are_per_year():
    t = daily(800)
    tr = trend(t, 5.0 + 2.0 * years(t), 30 * DAY_NS)
    ok = np.isfinite(tr.S1)
    np.testing.assert_allclose(tr.S1[ok], 2.0, rtol=1e-9)
    np.testing.assert_allclose(tr.S2[ok], 0.0, atol=1e-6)


def test_trend_on_a_cubic_matches_the_derivatives_up_to_the_documented_window_bias():
    """S = a + b x + c x^2 + d x^3 on a dense grid (x in years): S1 and S2 are the analytic
    derivatives, off by the trailing window's bias -S''' w^2 / 10 and -S''' w / 2 (and S by
    -S''' w^3 / 120)."""
    a, b, c, d = 1.0, 3.0, -4.0, 2.5
    t = np.arange(0, 3 * YEAR_NS, 3_600 * 10**9, dtype=np.int64)  # hourly for 3 years
    x = years(t)
    y = a + b * x + c * x**2 + d * x**3
    window = 20 * DAY_NS
    w = window / YEAR_NS
    tr = trend(t, y, window)
    ok = np.isfinite(tr.S)
    assert ok.sum() > 0.95 * t.size
    s1 = b + 2 * c * x + 3 * d * x**2
    s2 = 2 * c + 6 * d * x
    s3 = 6 * d
    # the bias is what the docstring says ...
    np.testing.assert_allclose(tr.S1[ok], (s1 - s3 * w**2 / 10)[ok], rtol=0, atol=2e-5)
    np.testing.assert_allclose(tr.S2[ok], (s2 - s3 * w / 2)[ok], rtol=0, atol=2e-3)
    # ... and small: within 1 % of the range of S2 over the series
    assert np.max(np.abs(tr.S2[ok] - s2[ok])) < 0.01 * np.ptp(s2)
    np.testing.assert_allclose(tr.S[ok], (y - s3 * w**3 / 120)[ok], rtol=0, atol=1e-6)


def test_trend_is_nan_until_a_window_is_covered_and_where_the_window_is_sparse():
    t = np.concatenate([daily(10), daily(10, start_day=100)])
    tr = trend(t, np.linspace(1, 2, t.size), 5 * DAY_NS)
    covered = t - t[0] >= 5 * DAY_NS
    assert np.all(np.isnan(tr.S[~covered]))
    assert np.all(np.isnan(tr.S[10:12]))  # after the gap, fewer than 3 samples in the window
    assert np.all(np.isfinite(tr.S[5:10])) and np.all(np.isfinite(tr.S[12:]))
    for arr in (tr.S, tr.S1, tr.S2):
        np.testing.assert_array_equal(np.isnan(arr), np.isnan(tr.S))


def test_trend_at_a_time_uses_no_later_sample():
    t = daily(300)
    y = np.sin(years(t) * 7)
    changed = y.copy()
    changed[200:] += 5.0
    a, b = trend(t, y, 20 * DAY_NS), trend(t, changed, 20 * DAY_NS)
    for u, v in ((a.S, b.S), (a.S1, b.S1), (a.S2, b.S2)):
        np.testing.assert_array_equal(u[:200], v[:200])
        assert not np.allclose(u[200:], v[200:])


def test_trend_returns_the_input_times_and_accepts_integer_levels():
    t = daily(50)
    tr = trend(t, np.arange(50) * 1000, 10 * DAY_NS)
    assert isinstance(tr, Trend)
    np.testing.assert_array_equal(tr.t, t)
    assert tr.S.dtype == tr.S1.dtype == tr.S2.dtype == np.float64
    empty = trend(np.array([], dtype=np.int64), np.array([]), DAY_NS)
    assert empty.S.size == 0 and borrowed_time(empty) == []


@pytest.mark.parametrize(
    "times, levels, window, message",
    [
        (np.array([0, 2, 1]), np.ones(3), 5, "strictly increasing"),
        (np.array([0, 1, 1]), np.ones(3), 5, "strictly increasing"),
        (np.array([0.0, 1.0]), np.ones(2), 5, "integer"),
        (np.array([0, 1]), np.ones(3), 5, "equal length"),
        (np.array([0, 1]), np.array([1.0, np.nan]), 5, "finite"),
        (np.array([0, 1]), np.ones(2), 0, "window_ns"),
        (np.array([0, 1]), np.ones(2), 1.5, "window_ns"),
    ],
)
def test_trend_rejects_bad_input(times, levels, window, message):
    with pytest.raises(ValueError, match=message):
        trend(times, levels, window)


# ------------------------------------------------------------------------------- borrowed time

#: A hump: accelerating growth, deceleration, then decline. S = exp(-((x - C) / W)^2) (x in
#: years) has S'' < 0 exactly on |x - C| < W / sqrt(2) and S' > 0 for x < C, so the analytic
#: borrowed time is [C - W / sqrt(2), C].
C, W = 2.0, 0.5
WINDOW = 20 * DAY_NS


def hump(t: np.ndarray) -> np.ndarray:
    return 100.0 * np.exp(-(((years(t) - C) / W) ** 2))


def test_borrowed_time_runs_from_the_acceleration_rolling_over_to_growth_stopping():
    t = daily(4 * 365)
    [(start, end)] = borrowed_time(trend(t, hump(t), WINDOW))
    analytic_start, analytic_end = (C - W / math.sqrt(2)) * YEAR_NS, C * YEAR_NS
    # the trailing fit sees the roll-over about half a window late, the zero crossing on time
    assert analytic_start <= start <= analytic_start + WINDOW
    assert abs(end - analytic_end) <= 2 * DAY_NS


def test_borrowed_time_is_still_open_when_growth_has_not_stopped_by_the_end():
    t = daily(int(1.9 * 365))  # ends between the roll-over (~1.65 y) and the peak (2 y)
    windows = borrowed_time(trend(t, hump(t), WINDOW))
    assert len(windows) == 1 and windows[0][1] is None
    assert abs(windows[0][0] - (C - W / math.sqrt(2)) * YEAR_NS) <= WINDOW


@pytest.mark.parametrize(
    "series",
    [
        lambda x: np.exp(2.0 * x),  # exponential growth
        lambda x: 1.0 + x + 3.0 * x**2,  # quadratic growth
        lambda x: (1.0 + x) ** 4,  # polynomial growth, S'' rising
    ],
)
def test_monotone_convex_growth_has_no_borrowed_time(series):
    t = daily(3 * 365)
    assert borrowed_time(trend(t, series(years(t)), WINDOW)) == []


def test_a_decline_that_keeps_slowing_is_not_borrowed_time():
    t = daily(3 * 365)
    assert borrowed_time(trend(t, 10.0 * np.exp(-years(t)), WINDOW)) == []


def test_every_roll_over_with_positive_growth_opens_a_window_that_closes_when_growth_stops():
    """sin(2 pi x): S'' turns negative at each whole year (S' > 0 there) and S' reaches zero a
    quarter year later, so the windows are about [k, k + 1/4], k = 1, 2, 3."""
    t = daily(int(3.6 * 365))
    windows = borrowed_time(trend(t, 50 + np.sin(2 * np.pi * years(t)), 15 * DAY_NS))
    assert len(windows) == 3
    for k, (start, end) in enumerate(windows, start=1):
        assert k * YEAR_NS <= start <= k * YEAR_NS + 15 * DAY_NS
        assert abs(end - (k + 0.25) * YEAR_NS) <= 2 * DAY_NS
        assert start < end


def test_borrowed_time_reads_the_estimates_given():
    t = np.arange(8, dtype=np.int64)
    nan = np.nan
    s1 = np.array([nan, 3.0, 3.0, 2.0, 1.0, 2.0, -1.0, 1.0])
    s2 = np.array([nan, 1.0, -1.0, -1.0, 2.0, -2.0, -1.0, 1.0])
    # opens at t=2 (S2 turns negative, S1 > 0); the roll-over at t=5 is inside the open window;
    # closes at t=6 (S1 <= 0)
    assert borrowed_time(Trend(t, s1, s1, s2)) == [(2, 6)]
    # a roll-over while S1 <= 0 opens nothing
    assert borrowed_time(Trend(t[:3], s1[:3], s1[:3], s2[:3])) == [(2, None)]
    assert borrowed_time(Trend(t[:3], s1[:3], -s1[:3], s2[:3])) == []
    # starting with S2 already negative is not an observed roll-over
    assert borrowed_time(Trend(t[2:4], s1[2:4], s1[2:4], s2[2:4])) == []
    assert all(isinstance(v, int) for v in borrowed_time(Trend(t, s1, s1, s2))[0])


def test_a_borrowed_time_window_shorter_than_the_minimum_is_left_out_but_an_open_one_kept():
    t = np.arange(8, dtype=np.int64) * DAY_NS
    nan = np.nan
    s1 = np.array([nan, 3.0, 3.0, -1.0, 1.0, 1.0, 1.0, 1.0])
    s2 = np.array([nan, 1.0, -1.0, -1.0, 1.0, -1.0, -1.0, -1.0])
    tr = Trend(t, s1, s1, s2)
    # a window of one day (day 2 to 3), then an open one from day 5
    assert borrowed_time(tr) == [(2 * DAY_NS, 3 * DAY_NS), (5 * DAY_NS, None)]
    assert borrowed_time(tr, min_ns=2 * DAY_NS) == [(5 * DAY_NS, None)]
    assert borrowed_time(tr, min_ns=DAY_NS) == borrowed_time(tr)


# --------------------------------------------------------------------------------------- jumps


def noisy_decline(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Daily prints of a level falling 40 % a year with 1 % lognormal noise (seeded)."""
    t = daily(n)
    noise = np.random.default_rng(seed).normal(0.0, 0.01, n)
    return t, 20_000.0 * np.exp(-0.4 * years(t) + noise)


@pytest.mark.parametrize("seed", range(5))
def test_noise_alone_has_no_jump(seed):
    t, y = noisy_decline(400, seed)
    assert detect_jumps(t, y) == []


@pytest.mark.parametrize("seed", range(5))
def test_a_generation_shock_is_found_as_one_jump_of_about_its_size(seed):
    t, y = noisy_decline(400, seed)
    y[250:] *= math.exp(-0.4)  # -33 % overnight
    [jump] = detect_jumps(t, y)
    assert jump.i == 250 and jump.t == t[250]
    assert abs(jump.log_size - (-0.4)) < 0.05  # the step, give or take a few noise steps
    step = y[249] * (math.exp(-0.4) - 1)
    assert abs(jump.size - step) < 0.05 * abs(step)


def test_a_step_smaller_than_the_minimum_is_not_a_jump_even_in_a_noiseless_series():
    t = daily(100)
    y = np.full(100, 1_000.0)
    y[60:] *= math.exp(-MIN_JUMP_LOG / 2)
    assert detect_jumps(t, y) == []
    y[80:] *= math.exp(-2 * MIN_JUMP_LOG)
    assert [j.i for j in detect_jumps(t, y)] == [80]


def test_the_trend_follows_the_level_through_a_jump_and_keeps_its_slope():
    """A straight line with a level shift: taken out, the fit is exact on both sides (S is the
    level, S' the slope, S'' zero); left in, S lags the level and S' takes the step as slope."""
    t = daily(300)
    slope = -3_000.0  # per year
    y = 20_000.0 + slope * years(t)
    y[200:] -= 6_000.0
    jumps = detect_jumps(t, y)
    assert [(j.i, round(j.size, 6)) for j in jumps] == [(200, -6_000.0)]
    ok = slice(60, None)  # the first whole window on
    through = trend(t, y, 60 * DAY_NS, jumps=jumps)
    assert np.allclose(through.S[ok], y[ok], rtol=0, atol=1e-6)
    assert np.allclose(through.S1[ok], slope, rtol=0, atol=1e-5)
    assert np.allclose(through.S2[ok], 0.0, rtol=0, atol=1e-3)
    naive = trend(t, y, 60 * DAY_NS)
    assert np.nanmax(np.abs(naive.S - y)) > 1_000  # the artefact the jump leaves without it
    assert np.nanmin(naive.S1) < 10 * slope


def test_a_jump_must_fall_inside_the_series():
    t = daily(10)
    with pytest.raises(ValueError, match="inside the series"):
        trend(t, np.ones(10), 3 * DAY_NS, jumps=[Jump(0, 0, 1.0, 0.0)])
    with pytest.raises(ValueError, match="inside the series"):
        trend(t, np.ones(10), 3 * DAY_NS, jumps=[Jump(10, 0, 1.0, 0.0)])
