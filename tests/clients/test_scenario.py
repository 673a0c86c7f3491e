"""Scenario files: conveniences, validation that names the field, loading through the exchange's
provider hook, and sessions with bots that run, verify and resume like any other."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from clients import scenario as sc
from exchange.sessions import session
from exchange.sessions.scenarios import load_scenario, scenario_from_config, scenario_names

MINIMAL = """
name = "tiny"
start = 2024-06-01
days = 3

[[indices]]
calibration = "H100-RENTAL"
interval_ns = "1h"

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
default_fund = "$10k"
"""


def test_money_strings_become_exact_cents():
    assert sc.parse_money("$5,700,000") == 570_000_000
    assert sc.parse_money("$5.7M") == 570_000_000
    assert sc.parse_money("$250k") == 25_000_000
    assert sc.parse_money("$0.01") == 1
    with pytest.raises(ValueError, match="fraction of a cent"):
        sc.parse_money("$0.001")
    with pytest.raises(ValueError, match="not an amount"):
        sc.parse_money("5 dollars")


def test_durations_become_exact_nanoseconds():
    assert sc.parse_duration("8h") == 8 * 3_600 * 10**9
    assert sc.parse_duration("1.5d") == 36 * 3_600 * 10**9
    assert sc.parse_duration("250ms") == 250_000_000
    with pytest.raises(ValueError, match="duration"):
        sc.parse_duration("soon")


def test_a_file_loads_with_conveniences_applied(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(MINIMAL)
    model = load_scenario(str(path))
    assert model.accounts[0].cash == 150_000_000
    assert model.accounts[0].default_fund == 1_000_000
    assert model.perps[0].funding_interval_ns == 8 * 3_600 * 10**9


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ('[[accounts]]\nname = "alice"\ncash = -5\n', "accounts"),
        ('[[bots]]\nname = "b"\naccount = "nobody"\nstrategy = "market_maker"\n', "bots.0.account"),
        ('[[bots]]\nname = "b"\naccount = "alice"\nstrategy = "astrology"\n', "strategy"),
        (
            '[[swaps]]\nname="S"\ngpu="H100"\nresale_index="H100-RESALE"\nfloor=1\n'
            "listed=2024-06-01\nmaturity=2027-06-01\n",
            "swaps.0",
        ),
    ],
)
def test_an_invalid_file_is_rejected_naming_the_field(tmp_path, change, where):
    path = tmp_path / "bad.toml"
    path.write_text(MINIMAL + change)
    with pytest.raises((ValidationError, ValueError)) as info:
        load_scenario(str(path))
    assert where in str(info.value)


def test_a_syntax_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\nstart = \n')
    with pytest.raises(ValueError, match=r"broken.toml.*line 2"):
        load_scenario(str(path))


def test_dotted_overrides_reach_into_tables_and_lists(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(MINIMAL)
    model = load_scenario(str(path), {"accounts.0.cash": "$2M", "days": 5})
    assert model.accounts[0].cash == 200_000_000 and model.days == 5
    with pytest.raises(ValueError, match="no item 3"):
        load_scenario(str(path), {"accounts.3.cash": 1})


def test_a_stored_configuration_rebuilds_the_same_scenario(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(MINIMAL)
    model = load_scenario(str(path))
    again = scenario_from_config(str(path), model.model_dump(mode="json"))
    assert again == model


def test_builtin_files_are_listed_and_each_validates():
    names = scenario_names()
    for name in sc.builtin_names():
        assert name in names
        assert load_scenario(name).name == name


class _Crash(Exception):
    pass


def _payloads(db):
    from exchange.store.event_store import EventStore

    with EventStore.open(db, mode="r") as store:
        return list(store.payloads(1, store.last_seq))


def test_a_session_with_bots_resumes_to_the_same_bytes_and_verifies(tmp_path):
    """A bot session killed mid-run (here: an exception after a few committed batches)
    resumes by re-running the bots from the start and finishes byte-identical."""
    settings = {"days": 12}
    whole = tmp_path / "whole.db"
    session.run("guarantor-spiral", whole, seed=3, overrides=settings, batch_size=500)
    crashed = tmp_path / "crashed.db"
    batches = 0

    def crash_after_some(n):
        nonlocal batches
        batches += 1
        if batches == 7:
            raise _Crash

    with pytest.raises(_Crash):
        session.run(
            "guarantor-spiral",
            crashed,
            seed=3,
            overrides=settings,
            batch_size=500,
            on_batch=crash_after_some,
        )
    summary = session.run("guarantor-spiral", crashed, resume=True)
    assert summary.resumed_from == 7 * 500
    assert _payloads(crashed) == _payloads(whole)
    verdict = session.verify(crashed)
    assert verdict.ok, verdict.problems


def test_where_a_bot_runs_is_not_part_of_the_stored_session():
    local = load_scenario("guarantor-spiral")
    remote = load_scenario("guarantor-spiral", {"bots.0.remote": True})
    assert remote.bots[0].remote and not local.bots[0].remote
    assert remote.model_dump(mode="json") == local.model_dump(mode="json")


def test_the_command_line_names_each_bad_field_and_writes_nothing(tmp_path):
    from click.testing import CliRunner

    from exchange.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text(
        'name = "x"\nstart = 2024-01-01\ndays = -5\n'
        '[[accounts]]\nname = "a"\ncash = "$1.2345"\n'
        '[[accounts]]\nname = "b"\ncash = -3\n'
    )
    db = tmp_path / "bad.db"
    result = CliRunner().invoke(main, ["run", str(bad), "--db", str(db), "--quiet"])
    assert result.exit_code == 2
    assert "accounts.0.cash: '$1.2345' has a fraction of a cent" in result.output
    bad.write_text(bad.read_text().replace('"$1.2345"', "100"))
    result = CliRunner().invoke(main, ["run", str(bad), "--db", str(db), "--quiet"])
    assert result.exit_code == 2
    assert "days: Input should be greater than or equal to 1" in result.output
    assert "accounts.1.cash: Input should be greater than or equal to 0" in result.output
    assert "input_value" not in result.output
    assert not db.exists()
