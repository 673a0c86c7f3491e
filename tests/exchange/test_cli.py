"""The `gpuex` command line: run, replay, verify, inspect."""

import re
import sqlite3
import subprocess
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from exchange.cli import RunBar, _count, main
from exchange.kernel.engine import DAY_NS
from exchange.sessions import session as sessions
from exchange.sessions import sweep
from exchange.sessions.scenarios import SCENARIOS, load_scenario, scenario_names
from exchange.store.event_store import EventStore

SMALL = [
    "--set",
    "messages=1500",
    "--set",
    "traders=4",
    "--batch-size",
    "100",
    "--snapshot-every",
    "500",
    "--quiet",
]


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "flow.db"
    result = CliRunner().invoke(main, ["run", "flow", "--db", str(path), "--seed", "2", *SMALL])
    assert result.exit_code == 0, result.output
    return path, result.output


def test_every_command_has_help():
    runner = CliRunner()
    for command in ([], ["run"], ["replay"], ["verify"], ["inspect"], ["export"]):
        result = runner.invoke(main, [*command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_run_prints_a_summary_and_replay_prints_the_same_state_hash(log):
    path, output = log
    state = next(line.split()[1] for line in output.splitlines() if line.startswith("state"))
    replayed = CliRunner().invoke(main, ["replay", str(path)])
    assert replayed.exit_code == 0
    assert replayed.output.splitlines()[-1] == state


def test_replay_until_gives_an_earlier_state(log):
    path, _ = log
    full = CliRunner().invoke(main, ["replay", str(path)]).output.splitlines()[-1]
    early = CliRunner().invoke(main, ["replay", str(path), "--until", "50"])
    assert early.exit_code == 0 and early.output.startswith("seq 50 ")
    assert early.output.splitlines()[-1] != full


def test_verify_exits_zero_on_a_sound_log_and_names_the_bad_seq_otherwise(log):
    path, _ = log
    assert CliRunner().invoke(main, ["verify", str(path)]).exit_code == 0
    from tests.exchange.store.test_store_check import edit_event

    edit_event(path, 120, lambda line: line.replace(b"[120,", b"[120,,", 1))  # not JSON
    result = CliRunner().invoke(main, ["verify", str(path)])
    assert result.exit_code == 1
    assert "first bad seq 120" in result.output


def test_run_shows_its_share_of_simulated_time_and_says_when_it_seals(tmp_path):
    args = [a for a in SMALL if a != "--quiet"]
    result = CliRunner().invoke(main, ["run", "flow", "--db", str(tmp_path / "s.db"), *args])
    assert result.exit_code == 0, result.output
    events = next(
        line.split()[1] for line in result.stdout.splitlines() if line.startswith("events")
    )
    assert "flow:   0%|" in result.stderr  # then as often as tqdm redraws, to the end:
    assert "flow: sealing: 100%" in result.stderr
    assert result.stderr.rstrip().endswith(f"{events} events]")


def test_the_run_bar_reaches_100_percent_of_a_year_in_nanoseconds(capsys):
    year = 365 * 24 * 3600 * 10**9  # 3.2e16 ns: more than a float counts exactly
    bar = RunBar("year", disable=False)
    for day in (1, 100, 365):
        bar.recorded(2_000)
        bar.reached(day * year // 365, year)
    bar.sealing()
    bar.close()
    err = capsys.readouterr().err
    assert "year: sealing: 100%" in err and "6,000 events]" in err


def test_verify_shows_a_progress_bar_per_stage_on_stderr_unless_quiet(log):
    path, _ = log
    shown = CliRunner().invoke(main, ["verify", str(path)])
    assert shown.exit_code == 0 and shown.stdout.startswith("ok: ")
    for stage in sessions.VERIFY_STAGES:
        assert f"{stage}: 100%" in shown.stderr, shown.stderr
    quiet = CliRunner().invoke(main, ["verify", str(path), "--quiet"])
    assert quiet.exit_code == 0 and quiet.stdout == shown.stdout and quiet.stderr == ""


def test_inspect_shows_balances_and_filters_events(log):
    path, _ = log
    result = CliRunner().invoke(main, ["inspect", str(path), "--at", "400"])
    assert result.exit_code == 0, result.output
    assert "trader-01" in result.output and "state at seq 400" in result.output
    fills = CliRunner().invoke(
        main, ["inspect", str(path), "--account", "trader-02", "--kind", "Fill", "--limit", "5"]
    )
    assert fills.exit_code == 0
    listed = [line for line in fills.output.splitlines()[1:] if " Fill " in line]  # no header
    assert 0 < len(listed) <= 5
    assert all("trader-02" in line for line in listed)
    nobody = CliRunner().invoke(main, ["inspect", str(path), "--account", "x", "--kind", "Fill"])
    assert nobody.exit_code == 1 and "no account 'x'" in nobody.output


def test_run_refuses_an_existing_log_and_unknown_settings(log, tmp_path):
    path, _ = log
    again = CliRunner().invoke(main, ["run", "flow", "--db", str(path), "--quiet"])
    assert again.exit_code == 1 and "exists" in again.output
    bad = CliRunner().invoke(
        main, ["run", "flow", "--db", str(tmp_path / "x.db"), "--set", "warp=9", "--quiet"]
    )
    assert bad.exit_code == 2 and "warp" in bad.output  # bad input: click's usage code
    assert not (tmp_path / "x.db").exists()


def test_overwrite_replaces_an_existing_log_and_creates_missing_folders(log, tmp_path):
    path, output = log
    again = CliRunner().invoke(
        main, ["run", "flow", "--db", str(path), "--seed", "2", "--overwrite", *SMALL]
    )
    assert again.exit_code == 0, again.output
    assert again.output == output  # same scenario, same seed: the same session
    nested = tmp_path / "runs" / "deep" / "x.db"
    made = CliRunner().invoke(main, ["run", "flow", "--db", str(nested), *SMALL])
    assert made.exit_code == 0 and nested.exists()


@pytest.mark.parametrize(
    ("options", "journal_after"),
    [
        ([], sessions.DEFAULT_JOURNAL_AFTER),
        (["--journal-after", "0"], 0),
        (["--no-journaller"], None),
    ],
)
def test_run_passes_its_journaller_choice_to_the_session(
    tmp_path, monkeypatch, options, journal_after
):
    seen = []
    real_run = sessions.run

    def spy(*args, **kwargs):
        seen.append(kwargs["journal_after"])
        return real_run(*args, **kwargs)

    monkeypatch.setattr(sessions, "run", spy)
    path = tmp_path / "j.db"
    result = CliRunner().invoke(
        main, ["run", "flow", "--db", str(path), "--no-report", *SMALL, *options]
    )
    assert result.exit_code == 0, result.output
    assert seen == [journal_after]


def test_run_refuses_a_negative_journal_after(tmp_path):
    result = CliRunner().invoke(
        main, ["run", "flow", "--db", str(tmp_path / "n.db"), "--journal-after", "-1"]
    )
    assert result.exit_code == 2 and "journal-after" in result.output


# ---------------------------------------------------------------------- issue #19, point 7
def test_run_on_an_existing_log_names_overwrite_resume_and_another_db(log):
    path, _ = log
    again = CliRunner().invoke(main, ["run", "flow", "--db", str(path), "--quiet"])
    assert again.exit_code == 1
    assert all(option in again.output for option in ("--overwrite", "--resume", "--db"))


def _stored_config(path) -> dict:
    with EventStore.open(path, mode="r") as store:
        return orjson.loads(store.session["config"])


@pytest.mark.parametrize("capital", ["1e6", "$1M", "1000000"])
def test_run_set_takes_the_sweep_alias_guarantor_capital_in_dollars(tmp_path, capital):
    db = tmp_path / "g.db"
    result = CliRunner().invoke(
        main,
        ["run", "guarantor-spiral", "--db", str(db), "--no-report", "--quiet"]
        + ["--set", f"guarantor.capital={capital}", "--set", "days=3"],
    )
    assert result.exit_code == 0, result.output
    path, unit = sweep.aliases("guarantor-spiral")["guarantor.capital"]
    assert (path, unit) == ("accounts.0.cash", "dollars")
    config = _stored_config(db)
    assert config["accounts"][0]["cash"] == 1_000_000 * 100  # dollars -> cents, exact
    assert config["days"] == 3


def test_run_set_resolves_like_sweep_param_and_keeps_raw_field_paths():
    # one vocabulary: an alias and its field path, with the sweep's units, set the same field
    scenario = "guarantor-spiral"
    [capital] = sweep.parse_param(scenario, "guarantor.capital=$5.7M").values
    [cure] = sweep.parse_param(scenario, "margin.cure_period=1d").values
    by_alias = load_scenario(
        scenario,
        sweep.settings_overrides(scenario, ["guarantor.capital=$5.7M", "margin.cure_period=1d"]),
    )
    by_path = load_scenario(
        scenario, sweep.settings_overrides(scenario, ["accounts.0.cash=$5.7M", "margin.cure_ns=1d"])
    )
    assert by_alias == by_path
    assert (
        (by_alias.accounts[0].cash, by_alias.margin.cure_ns)
        == (capital, cure)
        == (
            570_000_000,
            DAY_NS,
        )
    )
    # a class-based built-in: its aliases, and a dotted field path, which --set refused before
    products = load_scenario(
        "products", sweep.settings_overrides("products", ["margin.cure_period=3d", "days=1e2"])
    )
    assert (products.margin.cure_ns, products.days) == (3 * DAY_NS, 100)
    dotted = load_scenario("products", sweep.settings_overrides("products", ["margin.cure_ns=7"]))
    assert dotted.margin.cure_ns == 7
    # of two settings of one field, an alias and its path, the later wins (a repeated option)
    twice = sweep.settings_overrides("products", ["margin.cure_period=3d", "margin.cure_ns=7"])
    assert load_scenario("products", twice).margin.cure_ns == 7


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("guarantor.capitl=1e6", "--set: guarantor.capitl: the scenario has no field"),
        ("guarantor.capitl=1e6", "aliases: days, guarantor.assets, guarantor.capital"),
        ("guarantor.capital=$5.7X", "--set: guarantor.capital: '$5.7X' is not an amount"),
        ("days=1e999999999", "--set: days: '1e999999999' is too large a number"),
        ("accounts.99.cash=5", "--set: accounts.99.cash: no such item"),
        ("nonsense", "--set: 'nonsense': expected NAME=VALUE"),
        # a value the unit converts but the scenario refuses: its validation names the field
        ("guarantor.capital=1e40", "SCENARIO: accounts.0.cash: 1000000000000000000000000000"),
    ],
)
def test_a_bad_set_is_one_line_naming_the_setting(tmp_path, setting, message):
    db = tmp_path / "x.db"
    result = CliRunner().invoke(
        main, ["run", "guarantor-spiral", "--db", str(db), "--quiet", "--set", setting]
    )
    assert result.exit_code == 2, result.output
    [error] = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert message in error and not db.exists()


def test_sweep_param_refuses_a_huge_dollar_amount_in_one_line(tmp_path):
    result = CliRunner().invoke(
        main,
        ["sweep", "products", "--param", "guarantor.capital=1e40", "-o", str(tmp_path / "s")],
    )
    assert result.exit_code == 2 and "guarantor_cash" in result.output, result.output


def test_scenarios_wraps_descriptions_at_words_and_loses_none(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = CliRunner().invoke(main, ["scenarios"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    entries: dict[str, list[str]] = {}
    for line in lines:
        if line[0] != " ":
            name, _, line = line.partition(" ")
            entries[name] = []
        entries[name].append(line.strip())
    assert list(entries) == scenario_names()
    for name, shown in entries.items():
        if name in SCENARIOS:
            doc = SCENARIOS[name].__doc__ or ""
        else:
            doc = load_scenario(name).description
        first_paragraph = doc.strip().split("\n\n")[0].split()
        assert " ".join(shown).split() == first_paragraph, name


def test_inspect_kind_lists_only_those_events_in_dollars_dates_and_lots(tmp_path):
    db = tmp_path / "p.db"
    args = ["run", "products", "--db", str(db), "--set", "days=45", "--quiet", "--no-report"]
    assert CliRunner().invoke(main, args).exit_code == 0
    shown = CliRunner().invoke(main, ["inspect", str(db), "--kind", "Fill", "--limit", "3"])
    raw = CliRunner().invoke(main, ["inspect", str(db), "--kind", "Fill", "--limit", "3", "--json"])
    assert shown.exit_code == raw.exit_code == 0
    assert " cash " not in shown.output and " open " not in shown.output  # no balances first
    rows = [line for line in shown.output.splitlines()[1:] if " Fill " in line]
    raws = [line for line in raw.output.splitlines()[1:] if " Fill " in line]
    assert len(rows) == len(raws) == 3
    with EventStore.open(db, mode="r") as store:
        tick = {
            e.instrument: Decimal(e.data["tick_size"])
            for e in store.events(kind="InstrumentListed")
        }
    start = date.fromisoformat(_stored_config(db)["start"])
    for row, line in zip(rows, raws, strict=True):
        seq, t, _, fields = line.split(maxsplit=3)
        fill = orjson.loads(fields)
        when = datetime.combine(start, datetime.min.time()) + timedelta(microseconds=int(t) // 1000)
        assert row.split()[0] == seq and f"{when:%Y-%m-%d %H:%M:%S}" in row
        price = Decimal(fill["price"]) * tick[fill["instrument"]]
        cents = abs(fill["amount"])
        assert f"@ ${price:,}" in row
        assert (
            f"amount {'-' if fill['amount'] < 0 else ''}${cents // 100:,}.{cents % 100:02d}" in row
        )
        assert f" {fill['qty']:,} lot" in row and "{" not in row


def test_export_bar_ends_at_100_percent_and_the_result_has_its_own_line(log, tmp_path):
    path, _ = log
    out = tmp_path / "fills.csv"
    result = CliRunner().invoke(main, ["export", str(path), "--kind", "Fill", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "export: 100%" in result.stderr
    last = result.stderr.splitlines()[-1]
    count = sum(1 for _ in out.open()) - 1  # less the header
    assert last == f"{count:,} events -> {out} (csv)"


def test_every_log_argument_is_called_path_in_help():
    for command in ("replay", "verify", "inspect", "export", "report"):
        usage = CliRunner().invoke(main, [command, "--help"]).output.splitlines()[0]
        assert usage.endswith(" PATH"), usage
        assert "LOG" not in CliRunner().invoke(main, [command, "--help"]).output


def test_seed_help_is_worded_the_same_for_run_and_serve():
    import clients.cli  # noqa: F401 - adds `serve` to the group

    def seed_help(command: str) -> str:
        [option] = [p for p in main.commands[command].params if p.name == "seed"]
        return option.help

    assert seed_help("run") == seed_help("serve")


def test_every_set_example_in_run_help_is_valid_for_the_flagship():
    text = " ".join(CliRunner().invoke(main, ["run", "--help"]).output.split())
    examples = re.findall(r"--set ([a-z][\w.]*=[^\s;,()]+)", text)  # not NAME=VALUE
    assert examples
    for example in examples:
        sweep.settings_overrides("guarantor-spiral", [example])  # raises if not


def test_counts_are_singular_for_one():
    assert [_count(n, "chart") for n in (0, 1, 2, 1234)] == [
        "0 charts",
        "1 chart",
        "2 charts",
        "1,234 charts",
    ]


def test_run_summary_shows_money_in_dollars(log):
    _, output = log
    rows = [line for line in output.splitlines() if line.startswith("trader-")]
    assert rows and all(line.count("$") == 4 for line in rows), rows
    assert "0 defaults; 0 calls for $0.00" in output


def test_runs_folder_is_ignored_by_git():
    root = Path(__file__).resolve().parents[2]
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "runs/guarantor-spiral.db"], cwd=root, check=False
    )
    assert ignored.returncode == 0


def test_readme_says_the_build_needs_sqlites_headers():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    commands = readme.split("## The two commands", 1)[1].split("\n\n", 2)[1]
    assert "sqlite3.h" in commands and "libsqlite3-dev" in commands


# ------------------------------------------------------------------ gpuex index (issue #20)
def _index_names():
    from exchange.store.event_store import INDEXES, _index_name

    return [_index_name(columns) for columns in INDEXES]


def test_index_builds_what_a_run_left_out_once_and_says_so(log):
    path, _ = log
    with EventStore.open(path) as store:
        assert store.missing_indexes() == _index_names()  # a run builds none
        events = store.last_seq
    built = CliRunner().invoke(main, ["index", str(path)])
    assert built.exit_code == 0, built.output
    assert f"built 6 indexes ({', '.join(_index_names())}) over {events:,} events in " in (
        built.stdout
    )
    assert f"indexing {events:,} events" in built.stderr and "6/6" in built.stderr
    with EventStore.open(path) as store:
        assert store.missing_indexes() == []
    before = path.read_bytes()
    again = CliRunner().invoke(main, ["index", str(path), "--quiet"])
    assert again.exit_code == 0, again.output
    assert f"all 6 indexes present ({events:,} events); nothing built" in again.stdout
    assert path.read_bytes() == before  # idempotent: the file is not touched
    assert CliRunner().invoke(main, ["verify", str(path), "--quiet"]).exit_code == 0


def test_index_refuses_an_unfinished_session_with_the_read_commands_message(log):
    path, _ = log
    con = sqlite3.connect(path)
    with con:
        con.execute("UPDATE sessions SET status = 'running'")
    con.close()
    before = path.read_bytes()
    result = CliRunner().invoke(main, ["index", str(path)])
    assert result.exit_code == 2
    assert "the session is unfinished (status 'running'); finish it with" in result.output
    assert "`gpuex run ... --resume`" in result.output
    assert path.read_bytes() == before


def test_index_refuses_a_file_that_is_not_an_event_log(tmp_path):
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    result = CliRunner().invoke(main, ["index", str(other)])
    assert result.exit_code == 2 and "not a gpuex event log" in result.output
    missing = CliRunner().invoke(main, ["index", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and "no such event log" in missing.output


def test_index_that_sqlite_cannot_build_fails_in_one_line_and_leaves_the_log(log, monkeypatch):
    path, _ = log

    def full_disk(self, *args):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(EventStore, "_build_indexes", full_disk)
    result = CliRunner().invoke(main, ["index", str(path), "--quiet"])
    assert result.exit_code == 1
    assert "could not be built (SQLite: database or disk is full)" in result.output
    assert "Traceback" not in result.output and "damaged" not in result.output
    monkeypatch.undo()
    with EventStore.open(path) as store:
        assert store.missing_indexes() == _index_names()
    assert CliRunner().invoke(main, ["verify", str(path), "--quiet"]).exit_code == 0


def test_read_commands_build_the_projection_of_a_closed_log_replay_and_verify_do_not(log, tmp_path):
    # docs/event_store.md: replay and verify read the blobs and leave the log as it is;
    # inspect, export and report build the projection of a closed, finished, writable log
    # (issue #20; when they may not, they read the blobs: tests/exchange/store/test_store.py)
    path, _ = log
    before = path.read_bytes()
    runner = CliRunner()
    for args in (["replay", str(path)], ["verify", str(path), "--quiet"]):
        assert runner.invoke(main, args).exit_code == 0, args
    assert path.read_bytes() == before
    for args in (
        ["inspect", str(path), "--kind", "Fill", "--limit", "3"],
        ["export", str(path), "--kind", "Fill", "-o", str(tmp_path / "fills.csv"), "--quiet"],
        ["report", str(path), "-o", str(tmp_path / "report.html")],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, (args, result.output)
        with EventStore.open(path) as store:
            assert store.missing_indexes() == [], args
        path.unlink()
        path.write_bytes(before)  # the next command starts from the log without it
    assert CliRunner().invoke(main, ["verify", str(path), "--quiet"]).exit_code == 0


def test_gpuex_verify_checks_the_indexes_gpuex_index_built(log):
    from tests.exchange.store.test_tamper import edit_index_key

    path, _ = log
    assert CliRunner().invoke(main, ["index", str(path), "--quiet"]).exit_code == 0
    edit_index_key(path, "idx_events_kind", "Fill", "Fulp")
    result = CliRunner().invoke(main, ["verify", str(path), "--quiet"])
    assert result.exit_code == 1
    assert "index idx_events_kind is corrupt" in result.output


# ---------------------------------------------------------------------- issue #20, point 2
def _spy_on(monkeypatch, name: str) -> list:
    """Record the ``engine`` keyword each call of ``session.<name>`` gets, and make the call."""
    seen = []
    real = getattr(sessions, name)

    def spy(*args, **kwargs):
        seen.append(kwargs.get("engine"))
        return real(*args, **kwargs)

    monkeypatch.setattr(sessions, name, spy)
    return seen


def test_run_engine_reference_and_compiled_write_byte_identical_logs(tmp_path, monkeypatch):
    seen = _spy_on(monkeypatch, "run")
    states = {}
    for engine in ("reference", "compiled"):
        path = tmp_path / f"{engine}.db"
        result = CliRunner().invoke(
            main,
            ["run", "flow", "--db", str(path), "--seed", "2", "--no-report", "--engine", engine]
            + SMALL,
        )
        assert result.exit_code == 0, result.output
        states[engine] = next(x for x in result.output.splitlines() if x.startswith("state"))
    assert seen == ["reference", "compiled"]  # each run on the engine it was given
    logs = {}
    for engine in states:
        with EventStore.open(tmp_path / f"{engine}.db", mode="r") as store:
            logs[engine] = list(store.payloads(1, store.last_seq))
    assert logs["reference"] == logs["compiled"] and len(logs["reference"]) > 1_000
    assert states["reference"] == states["compiled"]


def test_run_engine_defaults_to_the_compiled_kernel_and_says_what_the_reference_is(
    tmp_path, monkeypatch
):
    seen = _spy_on(monkeypatch, "run")
    path = tmp_path / "d.db"
    result = CliRunner().invoke(main, ["run", "flow", "--db", str(path), "--no-report", *SMALL])
    assert result.exit_code == 0, result.output
    assert seen == ["compiled"]
    shown = " ".join(CliRunner().invoke(main, ["run", "--help"]).output.split())
    assert "--engine [compiled|reference]" in shown and "plain-Python" in shown


def test_run_engine_nonsense_exits_2_naming_the_choices_and_creates_no_file(tmp_path):
    path = tmp_path / "n.db"
    result = CliRunner().invoke(
        main, ["run", "flow", "--db", str(path), "--engine", "nonsense", *SMALL]
    )
    assert result.exit_code == 2
    assert "'compiled'" in result.output and "'reference'" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("recorder", "checker"), [("compiled", "reference"), ("reference", "compiled")]
)
def test_verify_engine_re_executes_a_log_of_either_engine_on_the_one_given(
    tmp_path, monkeypatch, recorder, checker
):
    path = tmp_path / "v.db"
    made = CliRunner().invoke(
        main, ["run", "flow", "--db", str(path), "--no-report", "--engine", recorder, *SMALL]
    )
    assert made.exit_code == 0, made.output
    seen = _spy_on(monkeypatch, "verify")
    result = CliRunner().invoke(main, ["verify", str(path), "--quiet", "--engine", checker])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok:") and seen == [checker]
    bad = CliRunner().invoke(main, ["verify", str(path), "--engine", "nonsense"])
    assert bad.exit_code == 2 and "'reference'" in bad.output


def test_sweep_engine_reaches_every_run_but_not_the_run_ids(tmp_path, monkeypatch):
    given = {}

    def fake_run_sweep(specs, out, **kwargs):
        given.update(kwargs, ids=[s.run_id for s in specs])
        raise sweep.SweepError("stop here")

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    ids = {}
    for engine in ("reference", "compiled"):
        result = CliRunner().invoke(
            main,
            ["sweep", "products", "--param", "days=45,60", "-o", str(tmp_path / "s")]
            + ["--engine", engine],
        )
        assert result.exit_code == 1 and "stop here" in result.output, result.output
        assert given["engine"] == engine
        ids[engine] = given["ids"]
    assert ids["reference"] == ids["compiled"]


# ------------------------------------------------------------------ gpuex migrate (issue #20)
@pytest.mark.parametrize("schema", [2, 3, 4])
def test_migrate_converts_an_older_log_in_place_and_refuses_one_of_schema_5(tmp_path, schema):
    from tests.exchange.store.test_store import (
        schema_2_store,
        schema_3_store,
        schema_4_store,
        schema_5_chain,
    )

    path = tmp_path / "old.db"
    chain = {2: schema_2_store, 3: schema_3_store, 4: schema_4_store}[schema](path)
    refused = CliRunner().invoke(main, ["replay", str(path)])
    assert refused.exit_code == 1 and f"`gpuex migrate {path}`" in refused.output
    assert f"schema_version {schema}, expected 5" in refused.output
    result = CliRunner().invoke(main, ["migrate", str(path)])
    assert result.exit_code == 0, result.output
    new_chain = schema_5_chain(path)[-1][1]  # the stored bytes' chain: a new one
    assert new_chain != chain
    assert f"migrated to schema_version 5: 40 events in 4 batches, new chain {new_chain[:16]}" in (
        result.output
    )
    with EventStore.open(path) as store:
        assert store.digest() == new_chain and store.last_seq == 40
    again = CliRunner().invoke(main, ["migrate", str(path)])
    assert again.exit_code == 2 and "nothing to migrate" in again.output
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()
    older = CliRunner().invoke(main, ["migrate", str(path)])
    assert older.exit_code == 2 and "only 2, 3, 4 can be migrated" in older.output
