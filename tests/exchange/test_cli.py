"""The `gpuex` command line: run, replay, verify, inspect."""

import sqlite3

import pytest
from click.testing import CliRunner

from exchange import session as sessions
from exchange.cli import RunBar, main

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
    con = sqlite3.connect(path)
    con.execute(
        "UPDATE events SET payload = replace(payload, '\"qty\":', '\"qty\":9') WHERE seq = 120"
    )
    con.commit()
    con.close()
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
    assert "flow: sealing, building indexes: 100%" in result.stderr
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
    assert "year: sealing, building indexes: 100%" in err and "6,000 events]" in err


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
    listed = [line for line in fills.output.splitlines() if " Fill " in line]
    assert 0 < len(listed) <= 5
    assert all("trader-02" in line for line in listed)


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
