"""Scenario files past the limits of ``exchange.core.limits`` (docs/scenarios.md, *Limits*): each is
refused by ``clients.scenario.load_scenario`` with one line naming the field, before anything
runs — never a traceback, an overflow deep in a run or a petabyte allocation (issue #17,
points 11-13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients import scenario as sc
from exchange.core import limits
from exchange.sessions.scenarios import ScenarioError, load_scenario

BASE = """
name = "tiny"
start = 2025-07-01
days = 3
seed = 7
insurance_fund = "$250k"

[[indices]]
calibration = "H100-RENTAL"
interval_ns = "1h"
extra_jumps = [[2025-08-01, -0.80]]

[[perps]]
name = "H100-PERP"
underlying = "H100-RENTAL"
gpu_hours_per_contract = 100
tick_size = "0.001"
funding_interval_ns = "8h"
impact_notional_lots = 20
mark_basis_halflife_ns = "2h"
max_price = 1_000_000
margin_tiers = [
  {max_position_lots = 1000, initial_margin_ppm = 100000, maintenance_margin_ppm = 50000},
]

[[accounts]]
name = "alice"
cash = "$1.5M"

[[accounts]]
name = "bob"
cash = "$1.5M"

[margin]
interval_ns = "1d"
cure_ns = "2d"

[[bots]]
name = "mm"
account = "alice"
strategy = "market_maker"
params = { size = 5 }
"""


def _with(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def test_the_base_file_is_valid():
    scenario = sc.load_scenario(BASE)
    assert scenario.name == "tiny" and scenario.days == 3


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        # issue #17 point 11: each a traceback before
        ("seed = 7", "seed = 18446744073709551616", "seed: 18446744073709551616 is outside"),
        ("seed = 7", "seed = 9223372036854775808", "seed: 9223372036854775808 is outside"),
        ('insurance_fund = "$250k"', 'insurance_fund = "$1000000000000B"', "ledger's bound"),
        ('cash = "$1.5M"', "cash = 100_000_000_000_000_001", "accounts.0.cash: Input should be"),
        ('cure_ns = "2d"', 'cure_ns = "99999999999w"', "margin.cure_ns: 6047999999939520"),
        ('cure_ns = "2d"', 'cure_ns = "11000d"', "margin.cure_ns: 950,400,000,000,000,000 ns"),
        ('tick_size = "0.001"', 'tick_size = "1e30"', "perps.0: a lot at max_price is worth"),
        ('tick_size = "0.001"', 'tick_size = "1e999999999"', "perps.0.tick_size: '1e999999999'"),
        ('tick_size = "0.001"', 'tick_size = "1e-999999999"', "is outside 1e-30..1e30"),
        ("start = 2025-07-01", "start = 9999-12-01", "start: 9999-12-01 is outside"),
        ("days = 3", "days = 3660", "extra_jumps"),  # still inside the limits; the jump isn't
        ('interval_ns = "1h"', "interval_ns = 1", "indices.0.interval_ns (prints): 259,200,0"),
        ('interval_ns = "1d"', "interval_ns = 1", "margin.interval_ns (margin cycles)"),
        (
            "extra_jumps = [[2025-08-01, -0.80]]",
            "extra_jumps = [[2035-08-01, -0.80]]",
            "indices.0: extra_jumps.0: 2035-08-01 is outside the anchors of H100-RENTAL",
        ),
        (
            "extra_jumps = [[2025-08-01, -0.80]]",
            "extra_jumps = [[2023-08-01, -0.80]]",  # on the first anchor: not inside (a, b]
            "extra_jumps.0: 2023-08-01 is outside the anchors",
        ),
        # point 12: NaN and infinite jumps were stored as null and broke verify and resume
        ("extra_jumps = [[2025-08-01, -0.80]]", "extra_jumps = [[2025-08-01, nan]]", "finite"),
        ("extra_jumps = [[2025-08-01, -0.80]]", "extra_jumps = [[2025-08-01, inf]]", "finite"),
        ("extra_jumps = [[2025-08-01, -0.80]]", "extra_jumps = [[2025-08-01, -9.0]]", "-5"),
        # point 13: booleans are not numbers
        ("days = 3", "days = true", "days: true is a boolean, not a number"),
        ("seed = 7", "seed = false", "seed: false is a boolean, not a number"),
        ('cash = "$1.5M"', "cash = true", "accounts.0.cash: true is a boolean"),
        ("max_price = 1_000_000", "max_price = true", "perps.0.max_price: true is a boolean"),
        ('cure_ns = "2d"', "cure_ns = true", "margin.cure_ns: true is a boolean"),
        ("params = { size = 5 }", "params = { size = true }", "params.size: true is a boolean"),
        (
            "maintenance_margin_ppm = 50000}",
            "maintenance_margin_ppm = true}",
            "perps.0.margin_tiers.0.maintenance_margin_ppm: true is a boolean",
        ),
        # the money a session brings in, together, stays inside the ledger's bound
        (
            'cash = "$1.5M"\n\n[[accounts]]\nname = "bob"\ncash = "$1.5M"',
            'cash = "$600000B"\n\n[[accounts]]\nname = "bob"\ncash = "$600000B"',
            "accounts' cash and the insurance fund, together",
        ),
    ],
)
def test_a_file_past_a_limit_is_refused_in_one_line_naming_the_field(old, new, message):
    text = _with(old, new)
    if "days = 3660" in new:  # a ten-year session of hourly prints is fine; the jump is not
        text = text.replace("[[2025-08-01, -0.80]]", "[[2027-08-01, -0.80]]")
    with pytest.raises(ScenarioError) as caught:
        sc.load_scenario(text)
    reason = str(caught.value)
    assert message in reason
    assert "\n" not in reason


def test_a_perpetual_whose_funding_index_could_pass_int64_is_refused():
    # at the cap every interval, on a mark at max_price, the cumulative funding index (nano
    # cents per lot, stored with every FundingRate) would pass int64 on day 63 of 180
    text = _with('tick_size = "0.001"', 'tick_size = "1"')
    text = text.replace(
        "initial_margin_ppm = 100000, maintenance_margin_ppm = 50000",
        "initial_margin_ppm = 1000000, maintenance_margin_ppm = 1",
    )
    with pytest.raises(ScenarioError, match="perps.0: at its funding cap .* past int64"):
        sc.load_scenario(text, {"days": 180})
    # the bound is the worst case, a mark at max_price: a narrower price range passes
    narrow = text.replace("max_price = 1_000_000", "max_price = 1_000")
    assert sc.load_scenario(narrow, {"days": 180}).days == 180


def test_a_long_session_within_the_limits_is_accepted():
    scenario = sc.load_scenario(_with("days = 3", "days = 3660"))
    assert scenario.end_ns == limits.MAX_SESSION_NS


def test_booleans_stay_allowed_where_a_field_is_a_boolean():
    text = _with("params = { size = 5 }", "params = { size = 5, requote_on_index = true }")
    assert sc.load_scenario(text).bots[0].params["requote_on_index"] is True
    remote = _with('strategy = "market_maker"', 'strategy = "market_maker"\nremote = true')
    assert sc.load_scenario(remote).bots[0].remote is True


def test_overrides_are_held_to_the_same_limits():
    with pytest.raises(ScenarioError, match="days: true is a boolean"):
        sc.load_scenario(BASE, {"days": True})
    with pytest.raises(ScenarioError, match="margin.cure_ns: .* is outside the 64-bit"):
        sc.load_scenario(BASE, {"margin.cure_ns": 10**20})
    with pytest.raises(ScenarioError, match="overrides must be a mapping"):
        sc.load_scenario(BASE, ["days", 4])  # type: ignore[arg-type]


def test_load_scenario_takes_text_or_a_path_and_never_raises_anything_else(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(BASE)
    assert sc.load_scenario(path) == sc.load_scenario(BASE)
    for source in [
        tmp_path / "missing.toml",
        "name = ",
        "\x00",
        "days = 1e400",
        "[[bots]]\nname = 3",
        "a = [" * 2000,
        _with("start = 2025-07-01", "start = 1969-12-31"),
        _with('name = "tiny"', 'name = "tiny"\nkind = "flow"'),
        42,
    ]:
        with pytest.raises(ScenarioError) as caught:
            sc.load_scenario(source)  # type: ignore[arg-type]
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"messages": True}, "messages: true is a boolean"),
        ({"interval_ns": 9_223_372_036_854_775_807}, "interval_ns: 9,223,372,036,854,775,807 ns"),
        ({"interval_ns": 10**20}, "interval_ns: 100000000000000000000 is outside the 64-bit"),
        ({"interval_ns": 10**12, "messages": 50_000_000}, "the session lasts"),
        ({"initial_cash": 2**63 - 1}, "initial_cash: Input should be less than or equal to"),
        ({"initial_cash": 10**17, "traders": 2}, "initial_cash x traders"),
        ({"instrument": {"name": "X", "tick_size": "1e30"}}, "instrument: a lot at max_price"),
    ],
)
def test_the_flow_scenario_is_held_to_the_limits(overrides, message):
    with pytest.raises(ScenarioError) as caught:
        load_scenario("flow", overrides)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"days": True}, "days: true is a boolean"),
        ({"guarantor_cash": 10**17 + 1}, "guarantor_cash: Input should be less than or equal"),
        ({"guarantor_cash": 10**17}, "the participants' cash and the insurance fund"),
        ({"margin": {"interval_ns": 1}}, "margin.interval_ns (margin cycles)"),
        ({"margin": {"cure_ns": 10**20}}, "margin.cure_ns: 100000000000000000000 is outside"),
        ({"start": "2199-12-01"}, "the session's end (start + days): 2200-03-31 is outside"),
        ({"start": "2028-01-01"}, "start: the swap series cannot be listed"),
    ],
)
def test_the_products_scenario_is_held_to_the_limits(overrides, message):
    with pytest.raises(ScenarioError) as caught:
        load_scenario("products", overrides)
    assert message in str(caught.value)


def test_every_builtin_file_is_within_the_limits():
    for name in sc.builtin_names():
        sc.load_scenario(Path(sc.__file__).parent / "builtin" / f"{name}.toml")
