"""The glut feeds the exchange's rental indices (issue #21, docs/credit.md "The glut on the
exchange"): a rental index's levels are multiplied by the economy's rental-price factor for the
month (its open-market price after the glut over its first month's), before the one rounding;
a resale index and a session without an economy are unchanged; borrowed time is measured on
the exchange's rental index from the log.

Specifications: the factor is a step function of the economy's months, 1 before the first;
the same index with the glut of the built-in second-derivative economy prints exactly as
without it until the first pull-back and below it after, by the factor; a resale index ignores
it; the borrowed-time analysis gives each rental index of a session with an economy a monthly
series sampled from its prints.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import orjson
import pytest

from clients.scenario import load
from exchange.core import events as ev
from exchange.credit.economy import CommitmentPulled
from exchange.credit.economy_schedule import EconomyFeed, period_date, step_times
from exchange.kernel.engine import DAY_NS, Exchange
from exchange.postmortem import borrowed as bt
from exchange.products.index import CALIBRATIONS, RentalGlut, index_generator, index_prints

SCENARIO = "second-derivative"
EPOCH = date(2024, 1, 1)
SEED = 7
DAYS = 2191


def _t(period: int) -> int:
    return (period_date(period) - EPOCH).days * DAY_NS


@pytest.fixture(scope="module")
def feed() -> EconomyFeed:
    """The built-in's economy on its seed, computed up front as a session schedules it."""
    scenario = load(SCENARIO)
    engine = Exchange(lambda e: None)
    times = step_times(scenario.start, scenario.end_ns)
    return EconomyFeed(engine, scenario.economy, SEED, times)


def test_the_factor_is_the_months_rental_price_over_the_first_and_one_before_the_first_month():
    glut = RentalGlut([0, 10, 20], [2_000, 1_500, 1_000])
    got = glut.factors(np.array([-1, 0, 9, 10, 19, 20, 10**9]))
    np.testing.assert_array_equal(got, [1.0, 1.0, 1.0, 0.75, 0.75, 0.5, 0.5])


@pytest.mark.parametrize(
    ("times", "prices", "message"),
    [
        ([], [], "at least one"),
        ([0, 1], [2_000], "as many prices"),
        ([0, 0], [2_000, 1_000], "increase"),
        ([0, 1], [2_000, 0], "positive"),
    ],
)
def test_a_malformed_glut_is_refused(times, prices, message):
    with pytest.raises(ValueError, match=message):
        RentalGlut(times, prices)


def test_the_rental_index_falls_below_the_unfed_one_after_the_first_pull_back_by_the_factor(feed):
    spec = CALIBRATIONS["H100-RENTAL"].model_copy(update={"interval_ns": DAY_NS})
    end = DAYS * DAY_NS
    times, plain = index_prints(spec, EPOCH, 0, end, SEED)
    times_g, fed = index_prints(spec, EPOCH, 0, end, SEED, glut=feed.glut())
    np.testing.assert_array_equal(times, times_g)
    # the first pull-back's month: the glut starts there
    pulled = next(r for r in feed.economy.records if isinstance(r, CommitmentPulled))
    start = _t(pulled.period)
    before, after = times < start, times >= start
    np.testing.assert_array_equal(fed[before], plain[before])
    assert (fed[after] < plain[after]).all()
    # by the factor: the model's own rental price over its first month's, for each print's
    # month, on the index's unrounded levels, rounded once (half to even) to $0.001 ticks
    price = feed.economy.series()["rental_price"]
    months = np.array([_t(p) for p in range(len(price))])
    month_of = np.searchsorted(months, times, side="right") - 1
    factor = price[month_of] / price[0]
    levels = spec.source.levels(times, EPOCH, index_generator(spec, SEED))
    np.testing.assert_array_equal(fed, np.rint(levels * factor * 1000).astype(np.int64))
    np.testing.assert_array_equal(plain, np.rint(levels * 1000).astype(np.int64))
    assert factor[-1] < 1.0 and factor[0] == 1.0


def test_a_resale_index_and_an_index_without_an_economy_are_unchanged(feed):
    end = 400 * DAY_NS
    resale = CALIBRATIONS["H100-RESALE"]
    assert resale.kind == "resale"
    _, plain = index_prints(resale, EPOCH, 0, end, SEED)
    _, fed = index_prints(resale, EPOCH, 0, end, SEED, glut=feed.glut())
    np.testing.assert_array_equal(fed, plain)
    rental = CALIBRATIONS["H100-RENTAL"].model_copy(update={"interval_ns": DAY_NS})
    _, none = index_prints(rental, EPOCH, 0, end, SEED, glut=None)
    _, default = index_prints(rental, EPOCH, 0, end, SEED)
    np.testing.assert_array_equal(none, default)


# ---------------------------------------------------------------------- borrowed time


def _month(period: int) -> ev.Event:
    return ev.Event(
        2 * period + 1,
        _t(period),
        ev.ECONOMY_MONTH,
        data={
            "period": period,
            "labs": ["Naked", "Wrapped"],
            "revenue": {"Naked": 10**10, "Wrapped": 10**10},
            "mark": {"Naked": 10**13, "Wrapped": 10**13},
            "capex": 10**12,
            "capex_by": {},
            "spread": {},
            "rental_price": 2_000,
        },
    )


def _print(period: int, value: int, name: str = "GLUT-RENTAL") -> ev.Event:
    return ev.Event(2 * period + 2, _t(period), ev.INDEX_PUBLISHED, instrument=name, price=value)


def _rising_then_falling(p: int) -> int:
    """A rental index (ticks) with S' = 400 - (p - 24)^2 per month: S'' rolls over at month 24
    and S' crosses zero at month 44 (the synthetic path of
    tests/exchange/postmortem/test_borrowed.py)."""
    return 10_000 + 400 * p - ((p - 24) ** 3) // 3


def test_borrowed_time_is_measured_on_the_exchanges_rental_index_where_the_glut_feeds_it():
    events = []
    for p in range(60):
        events.append(_month(p))
        if p >= 3:  # the index starts printing in April 2024
            events.append(_print(p, _rising_then_falling(p)))
    events.append(_print(59, 1, name="OTHER-INDEX"))
    result = bt.analyse(events, EPOCH, rental=["GLUT-RENTAL"])
    series = result.get("index:GLUT-RENTAL")
    assert series.periods == tuple(range(3, 60))
    assert series.values == tuple(_rising_then_falling(p) for p in range(3, 60))
    assert series.unit == "ticks ($0.001)/GPU-hour"
    [window] = series.windows
    # the 12-month trailing fit: the roll-over seen 6-7 months late, the zero within a month
    assert 24 < window.start_period <= 31 and abs(window.end_period - 44) <= 1
    # without the index named, no such series (and other indices are never read)
    keys = [s.key for s in bt.analyse(events, EPOCH).series]
    assert "index:GLUT-RENTAL" not in keys and not any(k.startswith("index:") for k in keys)


class _Store:
    """The one attribute :func:`exchange.postmortem.borrowed.rental_indices` reads."""

    def __init__(self, config: dict) -> None:
        self.session = {"config": orjson.dumps(config)}


def test_the_rental_indices_are_those_of_a_session_with_an_economy():
    indices = [
        {"calibration": "H100-RENTAL"},
        {"calibration": "H100-RESALE"},
        {"spec": {"name": "MY-RENTAL", "kind": "rental"}},
        {"spec": {"name": "MY-RESALE", "kind": "resale"}},
    ]
    with_economy = _Store({"indices": indices, "economy": {}})
    assert bt.rental_indices(with_economy) == ("H100-RENTAL", "MY-RENTAL")
    assert bt.rental_indices(_Store({"indices": indices})) == ()
    assert bt.read_kinds(()) == bt.READ_KINDS
    assert ev.INDEX_PUBLISHED in bt.read_kinds(("H100-RENTAL",))
