"""Borrowed time measured from the log (exchange/postmortem/borrowed.py, issue #21).

Specifications: on a monthly series with a known roll-over of S'' and a known zero of S', the
window found is where it must be, within the trailing fit's documented lag (module docstring
of exchange.postmortem.borrowed; exchange.postmortem.trend: S'' about half a window late, S'
practically on time); a
series whose S' never grows has no window, one whose S' has not reached zero an open one;
events are placed before, inside (fraction elapsed, the closing month included) or after a
window; a log without an economy has no analysis; on the built-in second-derivative log the
naked lab's failed round falls inside or after its mark's window and the concentrated
neocloud's default follows the trigger.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from exchange.core import events as ev
from exchange.credit.economy_schedule import period_date
from exchange.postmortem import borrowed as bt
from exchange.sessions import session

EPOCH = date(2024, 1, 1)
MONTHS = 72
#: The synthetic capex path: S'(p) = A - (p - P0)^2 per month, S''(p) = -2 (p - P0): S'' rolls
#: over at month P0 and S' crosses zero at P0 + sqrt(A) = 44.
P0, A = 24, 400
TRUE_ZERO = 44
#: The fit's lag for a 12-month trailing window: S'' is the fitted acceleration half a window
#: back (6 months; exact for a cubic), and the window opens at the first month past that zero.
ROLL_OVER_LAG = (6, 7)
#: S' reaches zero within this many months of the true crossing (its bias is of order
#: S''' w^2 / 10, under a month here).
ZERO_TOLERANCE = 1


def t_of(period: int) -> int:
    return (period_date(period) - EPOCH).days * bt.DAY_NS


def month(
    period: int, *, capex: int = 10**12, mark: int = 10**13, revenue: int = 10**10, rental=2000
) -> ev.Event:
    """A synthetic EconomyMonth event (the seq is the period + 1)."""
    return ev.Event(
        period + 1,
        t_of(period),
        ev.ECONOMY_MONTH,
        data={
            "period": period,
            "labs": ["Naked", "Wrapped"],
            "revenue": {"Naked": revenue, "Wrapped": revenue},
            "mark": {"Naked": mark, "Wrapped": mark},
            "capex": capex,
            "capex_by": {},
            "spread": {},
            "rental_price": rental,
        },
    )


def cubic(p: int) -> int:
    """Capex in cents/month on the synthetic path (the level of S' above), an integer."""
    return 10**12 + 10**9 * (A * p) - (10**9 * (p - P0) ** 3) // 3


def synthetic(extra: list[ev.Event] = ()) -> list[ev.Event]:
    events = [month(p, capex=cubic(p)) for p in range(MONTHS)]
    return sorted([*events, *extra], key=lambda e: (e.t, e.seq))


def test_the_window_opens_at_the_roll_over_of_s2_and_closes_where_s1_crosses_zero():
    result = bt.analyse(synthetic(), EPOCH)
    [window] = result.get("capex").windows
    assert P0 + ROLL_OVER_LAG[0] <= window.start_period <= P0 + ROLL_OVER_LAG[1]
    assert abs(window.end_period - TRUE_ZERO) <= ZERO_TOLERANCE
    # ns and dates agree with the periods
    assert window.start_ns == t_of(window.start_period)
    assert window.end_ns == t_of(window.end_period)
    assert window.start == period_date(window.start_period)
    assert window.end == period_date(window.end_period)
    assert window.length_ns == window.end_ns - window.start_ns > 0


def test_a_series_that_never_grows_has_no_window_and_one_still_growing_an_open_one():
    flat_then_glut = [
        month(p, capex=cubic(p), rental=2000 if p < 40 else 1000) for p in range(MONTHS)
    ]
    result = bt.analyse(flat_then_glut, EPOCH)
    assert result.get("rental_price").windows == ()
    # the same cubic cut short before its S' reaches zero: the window is still open
    short = bt.analyse([month(p, capex=cubic(p)) for p in range(TRUE_ZERO - 3)], EPOCH)
    [window] = short.get("capex").windows
    assert window.end_ns is None and window.end is None and window.end_period is None
    assert P0 + ROLL_OVER_LAG[0] <= window.start_period <= P0 + ROLL_OVER_LAG[1]


def test_the_trend_windows_are_twelve_months_for_smooth_series_and_twenty_four_for_marks():
    result = bt.analyse(synthetic(), EPOCH)
    assert result.get("capex").window_ns == 366 * bt.DAY_NS
    assert result.get("revenue:Naked").window_ns == 366 * bt.DAY_NS
    assert result.get("mark:Naked").window_ns == 731 * bt.DAY_NS
    # 366 days hold the 13 firsts of month of any 12-month span, 731 days the 25 of 24 months
    for p in range(24, 60):
        assert t_of(p) - t_of(p - 12) <= 366 * bt.DAY_NS < t_of(p) - t_of(p - 13)
        assert t_of(p) - t_of(p - 24) <= 731 * bt.DAY_NS < t_of(p) - t_of(p - 25)


def test_defaults_are_placed_before_inside_and_after_the_window():
    events = synthetic()
    [window] = bt.analyse(events, EPOCH).get("capex").windows
    start, end = window.start_period, window.end_period
    mid = (start + end) // 2
    credit = [
        ev.Event(1000, t_of(10), ev.ROUND_FAILED, counterparty="Naked", data={"period": 10}),
        ev.Event(1001, t_of(mid), ev.COVENANT_BREACHED, counterparty="Neo", data={"period": mid}),
        ev.Event(1002, t_of(end), ev.BORROWER_DEFAULTED, counterparty="Neo", data={"period": end}),
        ev.Event(1003, t_of(end + 5), ev.DEFAULT, account="acct", amount=-7),
    ]
    result = bt.analyse(synthetic(credit), EPOCH)
    assert [c.seq for c in result.events] == [1000, 1001, 1002, 1003]
    before, inside, closing, after = (result.placement(s, "capex") for s in range(1000, 1004))
    assert before.where == "before" and before.elapsed_ns == t_of(10) - window.start_ns < 0
    assert inside.where == "inside"
    span = window.end_ns - window.start_ns
    assert inside.fraction_ppm == (t_of(mid) - window.start_ns) * 1_000_000 // span
    assert 0 < inside.fraction_ppm < 1_000_000
    assert closing.where == "inside" and closing.fraction_ppm == 1_000_000
    assert after.where == "after" and after.fraction_ppm is None
    assert after.elapsed_ns == t_of(end + 5) - window.start_ns
    exchange_default = result.events[-1]
    assert (exchange_default.entity, exchange_default.period, exchange_default.amount) == (
        "acct",
        None,
        -7,
    )
    assert exchange_default.day == period_date(end + 5)
    # a series without a window places every event as "none"
    assert result.placement(1001, "rental_price").where == "none"


def test_place_picks_the_window_holding_the_event_else_the_last_closed_else_the_next():
    day = bt.DAY_NS
    w1 = bt.Window(10 * day, 20 * day, None, None, 1, 2)
    w2 = bt.Window(30 * day, None, None, None, 3, None)
    assert bt.place(5 * day, 1, "x", [w1, w2]).where == "before"
    assert bt.place(15 * day, 1, "x", [w1, w2]).fraction_ppm == 500_000
    between = bt.place(25 * day, 1, "x", [w1, w2])
    assert (between.where, between.window) == ("after", w1)
    open_inside = bt.place(40 * day, 1, "x", [w1, w2])
    assert (open_inside.where, open_inside.window, open_inside.fraction_ppm) == ("inside", w2, None)
    assert open_inside.elapsed_ns == 10 * day
    assert bt.place(1, 1, "x", []).where == "none"


def test_a_log_without_economy_events_has_no_analysis():
    assert bt.analyse([ev.Event(1, 0, ev.SESSION_STARTED, data={})], EPOCH) is None


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("borrowed") / "second-derivative.db"
    session.run("second-derivative", db)
    return db


def test_on_the_built_in_log_the_failed_round_falls_in_or_after_its_marks_borrowed_time(log):
    result = bt.from_log(log)
    assert result.epoch == EPOCH and result.naked == "OpenAI"
    mark = result.get("mark:OpenAI")
    assert mark.windows, "the naked lab's mark has a borrowed-time window"
    trigger = next(c for c in result.events if c.kind == ev.ROUND_FAILED and c.entity == "OpenAI")
    placed = result.placement(trigger.seq, "mark:OpenAI")
    assert placed.where in ("inside", "after"), placed
    assert placed.elapsed_ns > 0
    # the concentrated neocloud's default follows the trigger
    default = next(
        c for c in result.events if c.kind == ev.BORROWER_DEFAULTED and c.entity == "CoreWeave"
    )
    assert default.t > trigger.t and default.seq > trigger.seq
    # the series are the log's EconomyMonth values, one a month
    assert len(mark.values) == 72 and mark.periods == tuple(range(72))
    assert mark.values[0] == 86 * 10**9 * 100  # the seed's $86bn, January 2024


def test_on_the_built_in_log_the_glut_never_opens_a_window_on_the_rental_price(log):
    """The economy's rental price is flat until the glut and then falls: S' is never positive
    at a roll-over, so there is no borrowed time, and every default is placed as "none"."""
    result = bt.from_log(log)
    rental = result.get("rental_price")
    assert rental.windows == () and rental.values[-1] < rental.values[0]
    assert {result.placement(c.seq, "rental_price").where for c in result.events} == {"none"}


def test_on_the_noiseless_revenue_path_the_window_is_the_documented_one(tmp_path):
    """docs/credit.md: on the default path (growth 1.2, accel -0.25) revenue's S'' rolls over at
    month 33.6 and its S' crosses zero at month 57.6. Without the revenue noise, the window
    found from the log opens after the first, at most 8 months after it (the half-window lag of
    6, a month to the first sample past it, and a month more: on an exponential path the lag is
    not exactly the cubic's), and closes within a month of the second."""
    from exchange.credit.economy import EconomyParams

    base = EconomyParams()
    labs = tuple(lab.model_copy(update={"revenue_noise": 0.0}) for lab in base.labs)
    overrides = {"economy": EconomyParams(labs=labs).model_dump(mode="json")}
    db = tmp_path / "noiseless.db"
    session.run("second-derivative", db, overrides=overrides)
    result = bt.from_log(db)
    roll_over, zero = 33.6, 57.6
    for lab in ("OpenAI", "Anthropic"):
        [window] = result.get(f"revenue:{lab}").windows
        assert roll_over < window.start_period <= roll_over + ROLL_OVER_LAG[1] + 1, window
        assert abs(window.end_period - zero) <= ZERO_TOLERANCE, window
