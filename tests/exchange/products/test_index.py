"""Index feeds: sources, the publication schedule, the rounding boundary, determinism and the
seed calibrations (exchange/products/index.py, docs/indices.md)."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from exchange.products.index import (
    CALIBRATIONS,
    DAY_NS,
    HOUR_NS,
    MAX_TICKS,
    PARITY_LOG_FLOOR,
    SEEDED_CALIBRATIONS,
    YEAR_NS,
    CsvSource,
    GbmSource,
    GenerationShock,
    IndexDataError,
    IndexSource,
    IndexSpec,
    ModelPathSource,
    Source,
    date_to_ns,
    index_generator,
    index_jumps,
    index_prints,
    ns_to_date,
    publish_schedule,
    read_price_csv,
    stable_int_from_name,
    to_ticks,
)

EPOCH = date(2023, 1, 1)
ROOT = Path(__file__).resolve().parents[3]


def anchor_times(source: ModelPathSource, epoch: date = EPOCH) -> np.ndarray:
    return np.array([date_to_ns(d, epoch) for d, _ in source.anchors], dtype=np.int64)


def anchor_levels(source: ModelPathSource) -> np.ndarray:
    return np.array([level for _, level in source.anchors])


def without_noise(source: ModelPathSource, **changes) -> ModelPathSource:
    return ModelPathSource.model_validate(
        source.model_dump() | {"volatility": 0.0, "jumps": []} | changes
    )


# ---------------------------------------------------------------------------------------- time


def test_date_to_ns_counts_whole_days_since_the_epoch():
    assert DAY_NS == 86_400 * 10**9
    assert date_to_ns(EPOCH, EPOCH) == 0
    assert date_to_ns(date(2023, 1, 2), EPOCH) == DAY_NS
    assert date_to_ns(date(2022, 12, 31), EPOCH) == -DAY_NS
    assert date_to_ns(date(2024, 1, 1), EPOCH) == 365 * DAY_NS


@given(
    st.dates(min_value=date(1990, 1, 1), max_value=date(2090, 1, 1)),
    st.integers(min_value=0, max_value=DAY_NS - 1),
)
def test_ns_to_date_floors_to_the_containing_day_and_inverts_date_to_ns(day, within):
    t = date_to_ns(day, EPOCH) + within
    assert ns_to_date(t, EPOCH) == day
    assert ns_to_date(np.int64(t), EPOCH) == day


def test_ns_to_date_floors_negative_times_to_the_previous_day():
    assert ns_to_date(-1, EPOCH) == date(2022, 12, 31)
    assert ns_to_date(-DAY_NS, EPOCH) == date(2022, 12, 31)
    assert ns_to_date(-DAY_NS - 1, EPOCH) == date(2022, 12, 30)


# ---------------------------------------------------------------------------------- model path


@pytest.mark.parametrize("name", sorted(CALIBRATIONS))
def test_noise_free_jump_free_calibration_passes_through_every_anchor_to_1e9(name):
    source = without_noise(CALIBRATIONS[name].source)
    got = source.levels(anchor_times(source), EPOCH, np.random.default_rng(0))
    np.testing.assert_allclose(got, anchor_levels(source), rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", sorted(CALIBRATIONS))
@pytest.mark.parametrize("seed", range(5))
def test_calibration_with_noise_and_jumps_passes_through_its_anchors_exactly(name, seed):
    source = CALIBRATIONS[name].source
    assert source.volatility > 0 and source.jumps
    # the anchors inside a dense grid and on their own: the OU bridge is pinned at them
    for times in (
        anchor_times(source),
        np.sort(np.concatenate([anchor_times(source), anchor_times(source) + HOUR_NS])),
    ):
        got = source.levels(times, EPOCH, np.random.default_rng(seed))
        np.testing.assert_allclose(
            got[np.isin(times, anchor_times(source))], anchor_levels(source), rtol=1e-9, atol=0
        )


@pytest.mark.parametrize("name", sorted(CALIBRATIONS))
@pytest.mark.parametrize("seed", range(5))
def test_calibrated_prints_near_an_anchor_are_within_5pct_of_it(name, seed):
    """Hourly prints offset by 30 minutes from the anchors' midnights: the print nearest each
    anchor (30 min away) is within 5 % of the anchor, with the calibrated noise and jumps."""
    spec = CALIBRATIONS[name]
    source = spec.source
    first, last = anchor_times(source)[[0, -1]]
    spec = spec.model_copy(update={"interval_ns": HOUR_NS})
    times, ticks = index_prints(spec, EPOCH, first - 30 * 60 * 10**9, last + DAY_NS, seed)
    printed = ticks * float(spec.tick_size)
    for t_a, level in zip(anchor_times(source), anchor_levels(source), strict=True):
        nearest = np.argmin(np.abs(times - t_a))
        assert abs(times[nearest] - t_a) == 30 * 60 * 10**9
        assert printed[nearest] == pytest.approx(level, rel=0.05)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 400), min_size=1, max_size=5),
    st.lists(st.floats(0.05, 50_000.0), min_size=6, max_size=6),
    st.floats(0.0, 1.5),
    st.floats(0.5, 50.0),
    st.lists(st.floats(-1.0, 1.0), max_size=3),
    st.integers(0, 2**32),
)
def test_any_model_path_passes_through_its_anchors(gaps, levels, vol, kappa, jump_sizes, seed):
    days = [date(2024, 1, 1)]
    for gap in gaps:
        days.append(days[-1] + timedelta(days=gap))
    anchors = list(zip(days, levels, strict=False))
    span = (days[-1] - days[0]).days
    jumps = [
        (days[0] + timedelta(days=1 + (i * span) // (len(jump_sizes) + 1)), size)
        for i, size in enumerate(jump_sizes)
    ]
    jumps = [j for j in jumps if j[0] <= days[-1]]
    jumps = [j for i, j in enumerate(jumps) if i == 0 or j[0] > jumps[i - 1][0]]
    source = ModelPathSource(anchors=anchors, volatility=vol, reversion_per_year=kappa, jumps=jumps)
    t_a = anchor_times(source)
    times = np.sort(np.concatenate([t_a, t_a[0] + np.arange(0, span + 2, 3) * DAY_NS // 2]))
    got = source.levels(times, EPOCH, np.random.default_rng(seed))
    assert np.all(np.isfinite(got)) and np.all(got > 0)
    at = np.searchsorted(times, t_a)
    np.testing.assert_allclose(got[at], anchor_levels(source), rtol=1e-9, atol=0)


def test_model_path_is_log_linear_between_anchors_and_flat_outside_them():
    source = ModelPathSource(anchors=[(date(2024, 1, 1), 8.0), (date(2024, 1, 11), 2.0)])
    times = np.array(
        [
            date_to_ns(date(2023, 6, 1), EPOCH),
            date_to_ns(date(2024, 1, 6), EPOCH),
            date_to_ns(date(2024, 1, 3), EPOCH),
            date_to_ns(date(2025, 6, 1), EPOCH),
        ]
    )
    times.sort()
    got = source.levels(times, EPOCH, np.random.default_rng(0))
    # flat before, geometric interpolation (8 * (2/8)^(k/10)), flat after
    np.testing.assert_allclose(got, [8.0, 8.0 * 0.25**0.2, 4.0, 2.0], rtol=1e-12)


def test_a_jump_is_a_step_on_its_date_and_its_segment_still_meets_both_anchors():
    a, b, jump_day = date(2024, 1, 1), date(2025, 1, 1), date(2024, 7, 1)
    source = ModelPathSource(anchors=[(a, 10.0), (b, 5.0)], jumps=[(jump_day, -0.15)])
    plain = without_noise(source)
    j = date_to_ns(jump_day, EPOCH)
    times = np.array([date_to_ns(a, EPOCH), j - 1, j, date_to_ns(b, EPOCH)])
    got = source.levels(times, EPOCH, np.random.default_rng(0))
    assert got[0] == pytest.approx(10.0, rel=1e-12)
    assert got[3] == pytest.approx(5.0, rel=1e-12)
    assert got[2] / got[1] == pytest.approx(math.exp(-0.15), rel=1e-9)
    # before the jump the path runs above the jump-free log line, after it below
    ref = plain.levels(times, EPOCH, np.random.default_rng(0))
    assert got[1] > ref[1] and got[2] < ref[2]
    # outside the segment it changes nothing
    later = np.array([date_to_ns(date(2025, 6, 1), EPOCH)])
    assert source.levels(later, EPOCH, None) == pytest.approx(5.0)


def test_noise_between_anchors_has_the_spread_of_the_pinned_ou_bridge():
    """log(level / trend) at interior times over many seeds: mean 0, and the standard deviation
    of a stationary OU conditioned on 0 at both anchors."""
    vol, kappa = 0.3, 12.0
    a, b = date(2024, 1, 1), date(2024, 7, 1)
    source = ModelPathSource(
        anchors=[(a, 10.0), (b, 4.0)], volatility=vol, reversion_per_year=kappa
    )
    t_a, t_b = date_to_ns(a, EPOCH), date_to_ns(b, EPOCH)
    times = np.array(
        [t_a - 20 * DAY_NS, t_a + 2 * DAY_NS, (t_a + t_b) // 2, t_b - 10 * DAY_NS, t_b + 5 * DAY_NS]
    )
    trend = source.trend_log_levels(times, EPOCH)
    n = 1500
    dev = np.array(
        [np.log(source.levels(times, EPOCH, np.random.default_rng(s))) - trend for s in range(n)]
    )
    v = vol**2 / (2 * kappa)
    inside = times[1:-1]
    r1 = np.exp(-kappa * (inside - t_a) / YEAR_NS)
    r2 = np.exp(-kappa * (t_b - inside) / YEAR_NS)
    den = 1 - (r1 * r2) ** 2
    w1, w2 = r1 * (1 - r2**2) / den, r2 * (1 - r1**2) / den
    theory = np.empty(times.size)
    theory[1:-1] = np.sqrt(v * (1 - r1 * w1 - r2 * w2))
    # beyond an anchor only that anchor conditions: v (1 - e^{-2k|t - a|})
    theory[0] = math.sqrt(v * -math.expm1(-2 * kappa * (t_a - times[0]) / YEAR_NS))
    theory[-1] = math.sqrt(v * -math.expm1(-2 * kappa * (times[-1] - t_b) / YEAR_NS))
    np.testing.assert_allclose(dev.std(axis=0), theory, rtol=0.1)
    assert np.all(np.abs(dev.mean(axis=0)) < 4 * theory / math.sqrt(n))
    assert theory[2] == pytest.approx(vol / math.sqrt(2 * kappa), rel=0.01)  # far from anchors


def test_a_noise_free_model_path_draws_nothing_from_the_generator():
    rng = np.random.default_rng(3)
    before = rng.bit_generator.state
    without_noise(CALIBRATIONS["H100-RENTAL"].source).levels(
        np.arange(0, 10 * DAY_NS, DAY_NS), EPOCH, rng
    )
    assert rng.bit_generator.state == before


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"anchors": [("2024-01-01", 1.0)]}, "at least 2"),
        ({"anchors": [("2024-01-02", 1.0), ("2024-01-01", 2.0)]}, "strictly increasing"),
        ({"anchors": [("2024-01-01", 1.0), ("2024-01-01", 2.0)]}, "strictly increasing"),
        ({"anchors": [("2024-01-01", 0.0), ("2024-02-01", 2.0)]}, "greater than 0"),
        ({"anchors": [("2024-01-01", float("nan")), ("2024-02-01", 2.0)]}, "finite"),
        ({"jumps": [("2024-01-01", -0.1)]}, "outside the anchors"),
        ({"jumps": [("2025-01-01", -0.1)]}, "outside the anchors"),
        ({"jumps": [("2024-01-10", -0.1), ("2024-01-05", -0.1)]}, "strictly increasing"),
        ({"jumps": [("2024-01-10", -9.0)]}, "greater than or equal to -5"),
        ({"volatility": -0.1}, "greater than or equal to 0"),
        ({"reversion_per_year": 0.0}, "greater than 0"),
        ({"drift": 1.0}, "Extra inputs are not permitted"),
    ],
)
def test_model_path_rejects_inconsistent_configuration(changes, message):
    config = {"type": "model_path", "anchors": [("2024-01-01", 10.0), ("2024-02-01", 8.0)]}
    with pytest.raises(ValidationError, match=message):
        ModelPathSource.model_validate(config | changes)


def test_sources_reject_unsorted_or_non_integer_times():
    source = CALIBRATIONS["H200-RENTAL"].source
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="non-decreasing"):
        source.levels(np.array([2, 1]), EPOCH, rng)
    with pytest.raises(ValueError, match="integer"):
        source.levels(np.array([1.0, 2.0]), EPOCH, rng)
    assert source.levels(np.array([], dtype=np.int64), EPOCH, rng).shape == (0,)


# ----------------------------------------------------------------------------------------- gbm

T_YEARS = 0.75
GRIDS = {
    "two-points": np.array([0, int(T_YEARS * YEAR_NS)], dtype=np.int64),
    "irregular": np.unique(
        np.concatenate(
            [
                [0, int(T_YEARS * YEAR_NS)],
                np.random.default_rng(99).integers(0, int(T_YEARS * YEAR_NS), 200),
            ]
        )
    ).astype(np.int64),
}


def terminal_levels(source: GbmSource, times: np.ndarray, n: int) -> np.ndarray:
    return np.array([source.levels(times, EPOCH, np.random.default_rng(s))[-1] for s in range(n)])


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_gbm_log_price_has_the_theoretical_mean_and_variance_on_any_grid(grid):
    """ln S_T ~ N(ln S0 + (mu - sigma^2/2) T, sigma^2 T) and E[S_T] = S0 e^{mu T}, whatever
    the grid (the discretisation is exact). Tolerances: 4.5 standard errors of each estimator
    over n seeds."""
    s0, mu, sigma, n = 3.0, -0.6, 0.5, 4000
    source = GbmSource(start=s0, drift_per_year=mu, volatility=sigma)
    final = terminal_levels(source, GRIDS[grid], n)
    logs = np.log(final)
    var = sigma**2 * T_YEARS
    mean = math.log(s0) + (mu - sigma**2 / 2) * T_YEARS
    assert abs(logs.mean() - mean) < 4.5 * math.sqrt(var / n)
    assert abs(logs.var(ddof=1) - var) < 4.5 * var * math.sqrt(2 / (n - 1))
    expected = s0 * math.exp(mu * T_YEARS)
    sd_level = expected * math.sqrt(math.expm1(var))
    assert abs(final.mean() - expected) < 4.5 * sd_level / math.sqrt(n)


def test_gbm_starts_at_start_and_without_volatility_is_the_exponential_of_the_drift():
    times = np.arange(0, YEAR_NS + 1, YEAR_NS // 4, dtype=np.int64) + 5 * DAY_NS
    source = GbmSource(start=2.0, drift_per_year=-0.8, volatility=0.0)
    got = source.levels(times, EPOCH, np.random.default_rng(0))
    np.testing.assert_allclose(got, 2.0 * np.exp(-0.8 * (times - times[0]) / YEAR_NS), rtol=1e-12)
    noisy = GbmSource(start=2.0, drift_per_year=-0.8, volatility=0.4)
    assert noisy.levels(times, EPOCH, np.random.default_rng(1))[0] == 2.0


def test_mean_reversion_pulls_the_log_price_toward_the_long_run_level():
    """Starting at twice the long-run level: ln(S_T / L) ~ N(ln 2 e^{-kT},
    sigma^2 (1 - e^{-2kT}) / (2k)); without reversion the level stays around the start."""
    level, kappa, sigma, T, n = 2.0, 4.0, 0.3, 0.5, 3000
    times = np.linspace(0, int(T * YEAR_NS), 60).astype(np.int64)
    source = GbmSource(
        start=2 * level,
        drift_per_year=0.0,
        volatility=sigma,
        mean_reversion_per_year=kappa,
        long_run_level=level,
    )
    dev = np.log(terminal_levels(source, times, n) / level)
    mean = math.log(2) * math.exp(-kappa * T)
    var = sigma**2 * -math.expm1(-2 * kappa * T) / (2 * kappa)
    assert abs(dev.mean() - mean) < 4.5 * math.sqrt(var / n)
    assert abs(dev.var(ddof=1) - var) < 4.5 * var * math.sqrt(2 / (n - 1))
    free = GbmSource(start=2 * level, drift_per_year=0.0, volatility=sigma)
    assert np.median(terminal_levels(free, times, 500)) > 1.6 * level
    assert np.median(np.exp(dev) * level) < 1.35 * level
    # after ten relaxation times the median is the long-run level
    far = np.array([0, 10 * YEAR_NS // 4], dtype=np.int64)
    assert np.median(terminal_levels(source, far, 2000)) == pytest.approx(level, rel=0.03)


def test_mean_reverting_target_moves_at_the_drift():
    source = GbmSource(
        start=5.0,
        drift_per_year=-0.5,
        volatility=0.0,
        mean_reversion_per_year=50.0,
        long_run_level=5.0,
    )
    times = np.array([0, YEAR_NS, 2 * YEAR_NS])
    np.testing.assert_allclose(source.levels(times, EPOCH, None), 5.0 * np.exp([0, -0.5, -1.0]))


@pytest.mark.parametrize(
    "config, message",
    [
        ({"mean_reversion_per_year": 2.0}, "needs a long_run_level"),
        ({"long_run_level": 2.0}, "only meaningful"),
        ({"start": 0.0}, "greater than 0"),
        ({"volatility": float("inf")}, "finite"),
        ({"seed": 1}, "Extra inputs"),
    ],
)
def test_gbm_rejects_inconsistent_configuration(config, message):
    with pytest.raises(ValidationError, match=message):
        GbmSource.model_validate({"start": 1.0, "drift_per_year": 0.0, "volatility": 0.2} | config)


# ----------------------------------------------------------------------------------------- csv


def write_csv(tmp_path: Path, text: str) -> str:
    path = tmp_path / "prices.csv"
    path.write_text(text, encoding="utf-8")
    return str(path)


PRICES = """date,model,price
2024-01-10,H100,2.40
2024-01-01,H100,2.50
2024-01-05,A100,1.10
2024-01-20,H100,2.10
"""


def test_csv_source_returns_the_last_observation_at_or_before_each_time(tmp_path):
    source = CsvSource(path=write_csv(tmp_path, PRICES), model="H100")
    days, prices = source.observations
    assert days == [date(2024, 1, 1), date(2024, 1, 10), date(2024, 1, 20)]
    epoch = date(2024, 1, 1)
    times = np.array([0, DAY_NS - 1, 9 * DAY_NS - 1, 9 * DAY_NS, 19 * DAY_NS, 400 * DAY_NS])
    np.testing.assert_array_equal(
        source.levels(times, epoch, None), [2.50, 2.50, 2.50, 2.40, 2.10, 2.10]
    )
    assert isinstance(source, IndexSource)


def test_csv_source_refuses_times_before_its_first_observation_naming_the_date(tmp_path):
    source = CsvSource(path=write_csv(tmp_path, PRICES), model="H100")
    with pytest.raises(IndexDataError, match="before the first H100 observation, on 2024-01-01"):
        source.levels(np.array([-1, 0]), date(2024, 1, 1), None)


@pytest.mark.parametrize(
    "text, where, message",
    [
        ("", ":1:", "empty file"),
        ("day,model,price\n2024-01-01,H100,2\n", ":1:", "header"),
        ("date,model,price\n2024-01-01,H100,2\n2024-01-02,H100\n", ":3:", "expected 3 fields"),
        ("date,model,price\n2024-01-01,H100,2,9\n", ":2:", "expected 3 fields"),
        ("date,model,price\n2024-01-01,H100,2\n\n2024-13-01,H100,2\n", ":4:", "bad date"),
        ("date,model,price\n01/02/2024,H100,2\n", ":2:", "bad date"),
        ("date,model,price\n2024-01-01,H100,two\n", ":2:", "bad price"),
        ("date,model,price\n2024-01-01,H100,-2\n", ":2:", "finite number > 0"),
        ("date,model,price\n2024-01-01,H100,0\n", ":2:", "finite number > 0"),
        ("date,model,price\n2024-01-01,H100,nan\n", ":2:", "finite number > 0"),
        ("date,model,price\n2024-01-01,,2\n", ":2:", "empty model"),
        ("date,model,price\n2024-01-01,H100,2\n2024-01-01,H100,3\n", ":3:", "first on line 2"),
        ('date,model,price\n2024-01-01,"H100,2\n', ":2:", "malformed CSV"),
    ],
)
def test_malformed_csv_is_rejected_naming_the_line(tmp_path, text, where, message):
    path = write_csv(tmp_path, text)
    with pytest.raises(IndexDataError, match=message) as info:
        read_price_csv(path, "H100")
    assert f"{path}{where}" in str(info.value)
    assert isinstance(info.value, ValueError)
    # constructing the source fails at the pydantic edge, with the IndexDataError inside
    with pytest.raises(ValidationError, match=message) as wrapped:
        CsvSource(path=path, model="H100")
    assert f"{path}{where}" in str(wrapped.value)
    assert isinstance(wrapped.value.errors()[0]["ctx"]["error"], IndexDataError)


def test_csv_source_needs_the_file_and_rows_for_its_model(tmp_path):
    with pytest.raises(ValidationError, match="no such file"):
        CsvSource(path=str(tmp_path / "missing.csv"), model="H100")
    with pytest.raises(ValidationError, match="no rows for model 'B200'"):
        CsvSource(path=write_csv(tmp_path, PRICES), model="B200")


def test_csv_source_rows_of_other_models_are_still_checked(tmp_path):
    with pytest.raises(ValidationError, match=":6: bad price"):
        CsvSource(path=write_csv(tmp_path, PRICES + "2024-01-21,A100,x\n"), model="H100")


# ------------------------------------------------------------------ spec, schedule, rounding


def test_index_spec_picks_its_source_by_type_and_forbids_unknown_fields(tmp_path):
    csv_path = write_csv(tmp_path, PRICES)
    base = {"name": "H100-X", "kind": "rental", "gpu": "H100", "interval_ns": HOUR_NS}
    spec = IndexSpec.model_validate(
        base | {"source": {"type": "csv", "path": csv_path, "model": "H100"}}
    )
    assert isinstance(spec.source, CsvSource) and spec.tick_size == "0.001"
    spec = IndexSpec.model_validate(
        base | {"source": {"type": "gbm", "start": 2.0, "drift_per_year": 0.0, "volatility": 0.1}}
    )
    assert isinstance(spec.source, GbmSource)
    assert isinstance(
        TypeAdapter(Source).validate_python(
            {"type": "model_path", "anchors": [["2024-01-01", 1.0], ["2024-02-01", 2.0]]}
        ),
        ModelPathSource,
    )
    for bad in (
        {"source": {"type": "oracle"}},
        {"source": {"start": 1.0}},
        {"source": CALIBRATIONS["H100-RENTAL"].source, "extra": 1},
        {"source": CALIBRATIONS["H100-RENTAL"].source, "interval_ns": 0},
        {"source": CALIBRATIONS["H100-RENTAL"].source, "interval_ns": "60"},
        {"source": CALIBRATIONS["H100-RENTAL"].source, "tick_size": "0"},
        {"source": CALIBRATIONS["H100-RENTAL"].source, "tick_size": "abc"},
        {"source": CALIBRATIONS["H100-RENTAL"].source, "kind": "spot"},
    ):
        with pytest.raises(ValidationError):
            IndexSpec.model_validate(base | bad)


def test_publish_schedule_steps_by_the_interval_up_to_and_including_the_end():
    spec = CALIBRATIONS["H100-RENTAL"].model_copy(update={"interval_ns": 10})
    np.testing.assert_array_equal(publish_schedule(spec, 5, 35), [5, 15, 25, 35])
    np.testing.assert_array_equal(publish_schedule(spec, 5, 34), [5, 15, 25])
    np.testing.assert_array_equal(publish_schedule(spec, 5, 5), [5])
    assert publish_schedule(spec, 5, 4).size == 0
    assert publish_schedule(spec, 0, 100).dtype == np.int64


def test_to_ticks_rounds_half_to_even():
    np.testing.assert_array_equal(
        to_ticks(np.array([1.5, 2.5, 3.5, 4.5, 2.4999, 2.5001]), "1"), [2, 2, 4, 4, 2, 3]
    )
    # binary-exact halves at the rental tick: 0.0625 / 0.001 = 62.5, 0.1875 / 0.001 = 187.5
    np.testing.assert_array_equal(to_ticks(np.array([0.0625, 0.1875]), "0.001"), [62, 188])
    np.testing.assert_array_equal(to_ticks(np.array([1.25, 1.75]), "0.5"), [2, 4])
    np.testing.assert_array_equal(to_ticks(np.array([7.5, 22.5]), "5"), [2, 4])
    np.testing.assert_array_equal(to_ticks(np.array([0.009, 0.0045]), "0.003"), [3, 2])
    assert to_ticks(np.array([2.0]), "0.001").dtype == np.int64


@given(st.integers(min_value=1, max_value=10**12))
def test_to_ticks_maps_an_exact_multiple_of_the_tick_to_its_count(k):
    assert to_ticks(np.array([k / 1000]), "0.001")[0] == k
    assert to_ticks(np.array([float(k)]), "1")[0] == k


@pytest.mark.parametrize(
    "levels, message",
    [
        ([1.0, float("nan")], "non-finite index level nan at position 1"),
        ([float("inf")], "non-finite"),
        ([2.0, 0.0], "<= 0 at position 1"),
        ([-1.0], "<= 0"),
        ([0.0004], "0 ticks"),
        ([1e300], "outside 1"),
    ],
)
def test_to_ticks_rejects_broken_levels(levels, message):
    with pytest.raises(ValueError, match=message):
        to_ticks(np.array(levels), "0.001")


@pytest.mark.parametrize("tick", ["0", "-1", "abc", "NaN", "Infinity", "1e-20"])
def test_to_ticks_rejects_bad_tick_sizes(tick):
    with pytest.raises(ValueError, match="tick_size"):
        to_ticks(np.array([1.0]), tick)


def test_max_ticks_is_exact_in_float64():
    assert (
        float(MAX_TICKS) == MAX_TICKS
        and to_ticks(np.array([float(MAX_TICKS)]), "1")[0] == MAX_TICKS
    )


# --------------------------------------------------------------------------------- determinism


def one_month(name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return index_prints(CALIBRATIONS[name], date(2025, 1, 1), 0, 30 * DAY_NS, seed)


@pytest.mark.parametrize("name", sorted(CALIBRATIONS))
def test_same_seed_gives_identical_prints_and_another_seed_different_ones(name):
    t1, k1 = one_month(name, 42)
    t2, k2 = one_month(name, 42)
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(k1, k2)
    assert t1.dtype == k1.dtype == np.int64 and t1.size == k1.size
    _, k3 = one_month(name, 43)
    assert not np.array_equal(k1, k3)


def test_indices_with_the_same_source_but_different_names_get_different_streams():
    spec = CALIBRATIONS["H100-RENTAL"]
    twin = spec.model_copy(update={"name": "H100-RENTAL-B"})
    _, a = index_prints(spec, EPOCH, 0, 5 * DAY_NS, 1)
    _, b = index_prints(twin, EPOCH, 0, 5 * DAY_NS, 1)
    assert not np.array_equal(a, b)


def test_the_name_salt_is_a_sha256_prefix_not_pythons_hash():
    digest = hashlib.sha256(b"H100-RENTAL").digest()
    assert stable_int_from_name("H100-RENTAL") == int.from_bytes(digest[:8], "big")


def test_prints_are_identical_across_processes_with_different_hash_seeds():
    code = (
        "import hashlib; from datetime import date; from exchange.products.index import *; "
        "t, k = index_prints(CALIBRATIONS['B200-RENTAL'], date(2025, 6, 1), 0, "
        "3 * DAY_NS, 5); print(hashlib.sha256(k.tobytes() + t.tobytes()).hexdigest())"
    )
    digests = set()
    for hash_seed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        digests.add(out.strip())
    _, k = index_prints(CALIBRATIONS["B200-RENTAL"], date(2025, 6, 1), 0, 3 * DAY_NS, 5)
    t = publish_schedule(CALIBRATIONS["B200-RENTAL"], 0, 3 * DAY_NS)
    assert digests == {hashlib.sha256(k.tobytes() + t.tobytes()).hexdigest()}


@pytest.mark.parametrize("seed", [-1, True, 1.5, "3"])
def test_index_prints_wants_a_non_negative_integer_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        index_prints(CALIBRATIONS["H100-RENTAL"], EPOCH, 0, DAY_NS, seed)


# -------------------------------------------------------------------------------- calibrations


def test_the_calibrations_are_the_five_seed_indices():
    assert set(CALIBRATIONS) == {
        "H100-RENTAL",
        "H200-RENTAL",
        "B200-RENTAL",
        "A100-RENTAL",
        "H100-RESALE",
    }
    for name, spec in CALIBRATIONS.items():
        assert spec.name == name and spec.gpu == name.split("-")[0]
        assert isinstance(spec.source, ModelPathSource)
        assert 0.15 <= spec.source.volatility <= 0.3
        expected = ("rental", "0.001") if name.endswith("RENTAL") else ("resale", "1")
        assert (spec.kind, spec.tick_size) == expected


def months(a: date, b: date) -> int:
    return (b.year - a.year) * 12 + b.month - a.month


@pytest.mark.parametrize(
    "name, first, last, span_months, decline",
    [
        ("H100-RENTAL", 9.00, 2.00, 30, 0.78),  # "$8-10/hour (2023 peak)", "around $2", 30 months
        ("H200-RENTAL", 10.60, 3.39, 17, 0.68),  # "$10.60 ... to a $3.39 median", 17 months, -68 %
        ("B200-RENTAL", 14.00, 3.78, 9, 0.73),  # "$14 ... fallen 73% in just 9 months", under $4
        ("A100-RENTAL", 4.10, 0.45, 60, 0.89),  # "an 89% decline over five years"
        ("H100-RESALE", 30_000, 8_000, 30, 0.73),  # "$30,000 in 2023 ... $8,000 in 2026"
    ],
)
def test_calibration_end_points_hold_the_seed_figures(name, first, last, span_months, decline):
    anchors = CALIBRATIONS[name].source.anchors
    assert anchors[0][1] == first and anchors[-1][1] == last
    assert months(anchors[0][0], anchors[-1][0]) == span_months
    assert 1 - last / first == pytest.approx(decline, abs=0.005)


def test_h100_rental_halves_18_months_after_its_peak():
    # "blowing through the ABS models' 50%-at-three-years assumption roughly 18 months ahead"
    (peak_day, peak), (mid_day, mid), _ = CALIBRATIONS["H100-RENTAL"].source.anchors
    assert months(peak_day, mid_day) == 18 and mid == peak / 2


@pytest.mark.parametrize("name", sorted(CALIBRATIONS))
def test_calibrated_prints_are_positive_ticks_across_the_anchor_range(name):
    spec = CALIBRATIONS[name].model_copy(update={"interval_ns": DAY_NS})
    first, last = anchor_times(spec.source)[[0, -1]]
    times, ticks = index_prints(spec, EPOCH, first - 30 * DAY_NS, last + 30 * DAY_NS, 0)
    assert np.all(ticks > 0)
    levels = ticks * float(spec.tick_size)
    top, bottom = anchor_levels(spec.source).max(), anchor_levels(spec.source).min()
    assert levels.max() < 1.5 * top and levels.min() > bottom / 1.5


@pytest.mark.parametrize("name", sorted(CALIBRATIONS))
def test_a_spec_survives_a_json_round_trip_and_prints_the_same(name):
    spec = CALIBRATIONS[name]
    again = IndexSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    np.testing.assert_array_equal(
        index_prints(again, EPOCH, 0, DAY_NS, 3)[1], index_prints(spec, EPOCH, 0, DAY_NS, 3)[1]
    )


def test_csv_sources_compare_by_fields_and_data(tmp_path):
    path = write_csv(tmp_path, PRICES)
    a, b = CsvSource(path=path, model="H100"), CsvSource(path=path, model="H100")
    assert a == b and a != CsvSource(path=path, model="A100")
    spec = IndexSpec(name="H100-CSV", kind="rental", gpu="H100", interval_ns=DAY_NS, source=a)
    assert IndexSpec.model_validate_json(spec.model_dump_json()) == spec


# ---------------------------------------------------------------------- generation shocks

SEEDS = range(200)


def shocked(**shock) -> ModelPathSource:
    """A two-anchor path (2024-01-01 $10 -> 2025-01-01 $5) with one shock."""
    return ModelPathSource(
        anchors=[(date(2024, 1, 1), 10.0), (date(2025, 1, 1), 5.0)],
        shocks=[GenerationShock(**({"centre": date(2024, 7, 1), "log_size": -0.2} | shock))],
    )


def test_a_drawn_shock_is_the_same_step_as_a_fixed_jump_on_the_drawn_date():
    source = shocked(date_sd_days=20, date_max_days=40, log_size_sd=0.05, log_size_min=-0.5)
    times = np.arange(
        date_to_ns(date(2023, 12, 1), EPOCH), date_to_ns(date(2025, 2, 1), EPOCH), DAY_NS
    )
    for seed in range(5):
        ((day, size),) = source.shock_draws(np.random.default_rng(seed))
        fixed = ModelPathSource(anchors=source.anchors, jumps=[(day, size)])
        np.testing.assert_array_equal(
            source.levels(times, EPOCH, np.random.default_rng(seed)),
            fixed.levels(times, EPOCH, np.random.default_rng(seed)),
        )


def test_shock_draws_leave_the_noise_stream_untouched():
    """A source with shocks prints the noise of the same source with its draws as fixed jumps,
    and leaves the generator where the shock-free source leaves it."""
    source = shocked(date_sd_days=20, date_max_days=40, log_size_sd=0.05, log_size_min=-0.5)
    noisy = source.model_copy(update={"volatility": 0.3})
    times = np.arange(
        date_to_ns(date(2024, 1, 1), EPOCH), date_to_ns(date(2025, 1, 1), EPOCH), HOUR_NS
    )
    rng_shocks, rng_fixed = np.random.default_rng(11), np.random.default_rng(11)
    jumps = noisy.shock_draws(np.random.default_rng(11))
    fixed = noisy.model_copy(update={"shocks": [], "jumps": jumps})
    np.testing.assert_array_equal(
        noisy.levels(times, EPOCH, rng_shocks), fixed.levels(times, EPOCH, rng_fixed)
    )
    assert rng_shocks.bit_generator.state == rng_fixed.bit_generator.state
    # the draws do not depend on how much of the generator has been used either
    used = np.random.default_rng(11)
    used.standard_normal(1000)
    assert noisy.shock_draws(used) == jumps


def test_shock_draws_need_a_generator_built_from_a_seed():
    with pytest.raises(ValueError, match="SeedSequence"):
        shocked().levels(np.array([0]), EPOCH, None)


def test_a_shock_without_spread_is_its_centre_and_size_on_every_seed():
    source = shocked()
    assert {tuple(source.shock_draws(np.random.default_rng(s))[0]) for s in range(20)} == {
        (date(2024, 7, 1), -0.2)
    }


def test_shock_dates_and_sizes_follow_their_truncated_normal_laws():
    """Over 2000 seeds: the date offset has the median 0 and the interquartile range
    2 * 0.6745 * sd of the normal (truncation at 3 sd barely moves them), whole days within
    +-date_max_days; the log size is centred on log_size with the normal's quartiles and never
    leaves [log_size_min, log_size_max]."""
    sd, size_sd = 20.0, 0.05
    source = shocked(
        date_sd_days=sd,
        date_max_days=60,
        log_size_sd=size_sd,
        log_size_min=-0.35,
        log_size_max=-0.05,
    )
    draws = [source.shock_draws(np.random.default_rng(s))[0] for s in range(2000)]
    offsets = np.array([(d - date(2024, 7, 1)).days for d, _ in draws])
    sizes = np.array([z for _, z in draws])
    assert offsets.min() >= -60 and offsets.max() <= 60
    q1, q2, q3 = np.percentile(offsets, [25, 50, 75])
    assert abs(q2) <= 1.5 and q3 - q1 == pytest.approx(2 * 0.6745 * sd, abs=2.5)
    assert sizes.min() >= -0.35 and sizes.max() <= -0.05
    z1, z2, z3 = np.percentile(sizes, [25, 50, 75])
    assert z2 == pytest.approx(-0.2, abs=0.005)
    assert z3 - z1 == pytest.approx(2 * 0.6745 * size_sd, rel=0.08)


def test_a_shock_is_truncated_inside_the_anchor_range():
    # centre 10 days before the last anchor, spread of months: never past it (nor on the first)
    source = shocked(centre=date(2024, 12, 22), date_sd_days=60, date_max_days=200)
    days = [source.shock_draws(np.random.default_rng(s))[0][0] for s in SEEDS]
    # the window's end is approached (a quarter of the normal's mass lies past it), not passed
    assert date(2024, 12, 25) <= max(days) <= date(2025, 1, 1)
    assert min(days) >= date(2024, 12, 22) - timedelta(days=200)
    assert source.shocks[0].window(date(2024, 1, 1), date(2025, 1, 1)) == (
        date(2024, 6, 5),
        date(2025, 1, 1),
    )


@pytest.mark.parametrize(
    "shock, message",
    [
        ({"centre": "2024-01-01"}, "outside the anchors"),  # on the first anchor: not in (a, b]
        ({"centre": "2025-01-02"}, "outside the anchors"),
        ({"log_size": -0.6, "log_size_min": -0.5}, r"must lie in \[log_size_min"),
        ({"log_size": 0.1}, r"must lie in \[log_size_min"),  # log_size_max defaults to 0
        ({"log_size_min": -6.0}, "greater than or equal to -5"),
        ({"date_sd_days": -1.0}, "greater than or equal to 0"),
        ({"date_sd_days": float("inf")}, "finite"),
        ({"date_max_days": 1.5}, "valid integer"),
        ({"log_size_sd": -0.1}, "greater than or equal to 0"),
        ({"when": "2024-07-01"}, "Extra inputs are not permitted"),
    ],
)
def test_model_path_rejects_inconsistent_shocks(shock, message):
    config = {
        "type": "model_path",
        "anchors": [("2024-01-01", 10.0), ("2025-01-01", 5.0)],
        "shocks": [{"centre": "2024-07-01", "log_size": -0.2} | shock],
    }
    with pytest.raises(ValidationError, match=message):
        ModelPathSource.model_validate(config)


def test_a_ramped_shock_reaches_its_size_linearly_over_its_ramp_and_keeps_the_anchors():
    """ramp_days = 30: no move before the drawn date, a third of the step after 10 days, the
    whole step from day 30 on (the same level as the overnight shock's), anchors exact."""
    overnight = shocked()
    ramped = shocked(ramp_days=30)
    start = date_to_ns(date(2024, 7, 1), EPOCH)
    days = np.array([-1, 0, 10, 20, 30, 60], dtype=np.int64)
    times = start + days * DAY_NS
    rng = np.random.default_rng  # no spread: every seed draws the centre and size
    gap = ramped.trend_log_levels(times, EPOCH, rng(0)) - overnight.trend_log_levels(
        times, EPOCH, rng(0)
    )
    # the overnight shock has the whole step from day 0; the ramp has (d / 30) of it
    expected = -0.2 * (np.clip(days / 30, 0, 1) - (days >= 0))
    np.testing.assert_allclose(gap, expected, atol=1e-12)
    ends = np.array([date_to_ns(d, EPOCH) for d, _ in ramped.anchors])
    np.testing.assert_allclose(ramped.levels(ends, EPOCH, np.random.default_rng(0)), [10.0, 5.0])


def test_a_ramp_is_cut_at_the_end_of_its_anchor_segment():
    """A ramp longer than what is left of its segment still lands on the next anchor: it ends
    on that anchor's date instead."""
    late = shocked(centre=date(2024, 12, 1), ramp_days=90)
    end = date_to_ns(date(2025, 1, 1), EPOCH)
    assert late.levels(np.array([end]), EPOCH, np.random.default_rng(3))[0] == pytest.approx(5.0)
    after = end + 10 * DAY_NS  # flat beyond the last anchor
    assert late.levels(np.array([after]), EPOCH, np.random.default_rng(3))[0] == pytest.approx(5.0)
    # halfway through the cut ramp (31 days long), half the step is in
    mid = date_to_ns(date(2024, 12, 1), EPOCH) + 31 * DAY_NS // 2
    overnight = shocked(centre=date(2024, 12, 1))
    at = np.array([mid])
    gap = late.trend_log_levels(at, EPOCH, np.random.default_rng(0)) - (
        overnight.trend_log_levels(at, EPOCH, np.random.default_rng(0))
    )
    assert gap[0] == pytest.approx(-0.2 * (0.5 - 1.0))


def test_a_shock_without_a_ramp_serialises_as_before_ramps_existed():
    assert "ramp_days" not in shocked().shocks[0].model_dump()
    ramped = shocked(ramp_days=45).shocks[0]
    assert ramped.model_dump()["ramp_days"] == 45
    assert GenerationShock.model_validate(ramped.model_dump()) == ramped
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        shocked(ramp_days=-1)


def test_a_source_without_shocks_serialises_as_before_shocks_existed():
    for spec in CALIBRATIONS.values():
        assert "shocks" not in spec.source.model_dump()
        assert b'"shocks"' not in spec.model_dump_json().encode()
    for spec in SEEDED_CALIBRATIONS.values():
        again = IndexSpec.model_validate_json(spec.model_dump_json())
        assert again == spec and again.source.shocks == spec.source.shocks


def test_seeded_calibrations_keep_the_anchors_noise_and_jump_sizes_of_the_fixed_ones():
    assert set(SEEDED_CALIBRATIONS) == set(CALIBRATIONS)
    for name, spec in SEEDED_CALIBRATIONS.items():
        fixed = CALIBRATIONS[name]
        assert spec.model_dump(exclude={"source"}) == fixed.model_dump(exclude={"source"})
        source = spec.source
        assert source.anchors == fixed.source.anchors and source.jumps == []
        assert source.volatility == fixed.source.volatility
        assert source.reversion_per_year == fixed.source.reversion_per_year
        assert [(s.centre, s.log_size) for s in source.shocks] == fixed.source.jumps
        for shock in source.shocks:
            assert shock.log_size_min == PARITY_LOG_FLOOR and shock.log_size_max == 0.0
            assert shock.date_sd_days >= 14 and shock.date_max_days >= 2 * shock.date_sd_days


def daily_paths(name: str) -> tuple[IndexSpec, np.ndarray, np.ndarray]:
    """Daily prints of a seeded calibration from its first to its last anchor (epoch: the
    first anchor), for 200 seeds: (spec, times, levels[seed, day])."""
    spec = SEEDED_CALIBRATIONS[name].model_copy(update={"interval_ns": DAY_NS})
    first, last = spec.source.anchors[0][0], spec.source.anchors[-1][0]
    levels = []
    for seed in SEEDS:
        times, ticks = index_prints(spec, first, 0, date_to_ns(last, first), seed)
        levels.append(ticks * float(spec.tick_size))
    return spec, times, np.array(levels)


@pytest.mark.parametrize("name", sorted(SEEDED_CALIBRATIONS))
def test_seeded_calibration_holds_its_anchors_in_distribution_over_200_seeds(name):
    """The median daily print on each anchor date is the anchor to one tick (shocks are
    absorbed by their anchor segment, noise is pinned at the anchors); every seed does too."""
    spec, times, levels = daily_paths(name)
    first = spec.source.anchors[0][0]
    tick = float(spec.tick_size)
    for day, level in spec.source.anchors:
        at = int(np.searchsorted(times, date_to_ns(day, first)))
        assert np.median(levels[:, at]) == pytest.approx(level, abs=tick)
        assert np.all(np.abs(levels[:, at] - level) <= tick)


@pytest.mark.parametrize("name", sorted(SEEDED_CALIBRATIONS))
def test_seeded_shock_dates_spread_over_weeks_and_differ_between_seeds(name):
    spec = SEEDED_CALIBRATIONS[name]
    draws = [index_jumps(spec, seed) for seed in SEEDS]
    for k, shock in enumerate(spec.source.shocks):
        days = np.array([(d[k][0] - shock.centre).days for d in draws])
        q1, q3 = np.percentile(days, [25, 75])
        assert q3 - q1 >= 14, (shock.label, q1, q3)
        assert len(set(days.tolist())) >= 30
        assert abs(np.median(days)) <= 7  # centred on the seed's date (B200's cut at +26 days)
    # seeds differ in the whole schedule of shocks, not only in one of them
    assert len({tuple(d) for d in draws}) == len(draws)


@pytest.mark.parametrize("name", sorted(SEEDED_CALIBRATIONS))
def test_the_same_seed_gives_the_same_seeded_path_and_the_same_shocks(name):
    spec = SEEDED_CALIBRATIONS[name].model_copy(update={"interval_ns": DAY_NS})
    first = spec.source.anchors[0][0]
    a = index_prints(spec, first, 0, 400 * DAY_NS, 5)
    b = index_prints(spec, first, 0, 400 * DAY_NS, 5)
    np.testing.assert_array_equal(a[1], b[1])
    assert index_jumps(spec, 5) == index_jumps(spec, 5) != index_jumps(spec, 6)
    assert index_jumps(spec, 5) == spec.source.shock_draws(index_generator(spec, 5))


@pytest.mark.parametrize("name", sorted(SEEDED_CALIBRATIONS))
def test_no_seeded_path_leaves_its_documented_bounds(name):
    """Every draw stays in its window and size bounds; the noise-free path stays within
    exp(+-sum of the largest shock magnitudes) of the shock-free log-linear trend (a jump
    moves the log by its size times a factor in [-1, 1]); with noise, within a further 6
    stationary standard deviations; every print is a positive tick."""
    spec, times, levels = daily_paths(name)
    source = spec.source
    first, last = source.anchors[0][0], source.anchors[-1][0]
    plain = without_noise(source, shocks=[])
    base = plain.trend_log_levels(times, first)
    envelope = sum(max(-s.log_size_min, s.log_size_max) for s in source.shocks)
    noise = 6 * source.volatility / math.sqrt(2 * source.reversion_per_year)
    quiet = without_noise(source)
    for seed in SEEDS:
        rng = np.random.default_rng([seed, 1])
        for shock, (day, size) in zip(source.shocks, quiet.shock_draws(rng), strict=True):
            start, end = shock.window(first, last)
            assert start <= day <= end and first < day <= last
            assert abs((day - shock.centre).days) <= shock.date_max_days
            assert shock.log_size_min <= size <= shock.log_size_max
        dev = quiet.trend_log_levels(times, first, rng) - base
        assert np.all(np.abs(dev) <= envelope + 1e-12)
    assert np.all(levels > 0)
    log_dev = np.abs(np.log(levels) - base)
    assert log_dev.max() <= envelope + noise
