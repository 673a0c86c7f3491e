"""Bad input to `gpuex run`, `serve` and `sweep` gets one clear line and leaves nothing behind
(issue #17, points 11-13): everything is validated before the store is created, an unwritable
directory is named before the run starts, and a full disk mid-run leaves a resumable log."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from exchange.cli import main
from exchange.sessions import session
from exchange.sessions.scenarios import SCENARIOS, FlowScenario
from exchange.store.event_store import EventStore

QUICK = ["--set", "messages=300", "--set", "traders=3", "--quiet", "--no-report"]
SHOCK = Path(__file__).parents[3] / "clients" / "builtin" / "generation-shock.toml"


def _error_line(output: str) -> str:
    """The one error line of a failed command (click prints usage lines before it)."""
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    return errors[0]


def _shock_with(tmp_path: Path, old: str, new: str) -> str:
    text = SHOCK.read_text()
    assert old in text, old
    path = tmp_path / "shock.toml"
    path.write_text(text.replace(old, new, 1))
    return str(path)


# ---------------------------------------------------------------------- nothing left behind
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", str(10**20)], "Invalid value for '--seed'"),
        (["--seed", "-1"], "Invalid value for '--seed'"),
        (["--batch-size", str(10**20)], "Invalid value for '--batch-size'"),
        (["--batch-size", "0"], "Invalid value for '--batch-size'"),
        (["--snapshot-every", "7"], "--snapshot-every: 7 is not a multiple of batch_size 2000"),
        (["--snapshot-every", "-2000"], "Invalid value for '--snapshot-every'"),
        (["--set", "initial_cash=9223372036854775807"], "initial_cash: Input should be less"),
        (["--set", "interval_ns=9223372036854775807"], "interval_ns: 9,223,372,036,854,775,807"),
        (["--set", f"interval_ns={10**20}"], "interval_ns: 100000000000000000000 is outside"),
        (["--set", "messages=true"], "messages: true is a boolean, not a number"),
        (["--set", "traders=NaN"], "traders: Input should be a valid integer"),
    ],
)
def test_bad_flow_input_is_one_line_and_creates_no_file(tmp_path, args, message):
    db = tmp_path / "out" / "x.db"
    result = CliRunner().invoke(main, ["run", "flow", "--db", str(db), *QUICK, *args])
    assert result.exit_code == 2
    assert message in _error_line(result.output)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("seed = 7", "seed = 18446744073709551616", "seed: 18446744073709551616 is outside"),
        ('insurance_fund = "$250k"', 'insurance_fund = "$1000000000000B"', "ledger's bound"),
        ('cure_ns = "2d"', 'cure_ns = "99999999999w"', "margin.cure_ns:"),
        ('tick_size = "0.001"', 'tick_size = "1e30"', "perps.0: a lot at max_price is worth"),
        ("start = 2025-07-01", "start = 9999-12-01", "start: 9999-12-01 is outside"),
        ('interval_ns = "1h"', "interval_ns = 1", "indices.0.interval_ns (prints)"),
        ("[[2025-08-01, -0.80]]", "[[2035-08-01, -0.80]]", "2035-08-01 is outside the anchors"),
        ("[[2025-08-01, -0.80]]", "[[2025-08-01, nan]]", "Input should be a finite number"),
        ("[[2025-08-01, -0.80]]", "[[2025-08-01, -inf]]", "Input should be a finite number"),
        ("days = 45", "days = true", "days: true is a boolean, not a number"),
    ],
)
def test_a_bad_scenario_file_is_one_line_and_creates_no_file(tmp_path, old, new, message):
    scenario = _shock_with(tmp_path, old, new)
    db = tmp_path / "out" / "x.db"
    result = CliRunner().invoke(main, ["run", scenario, "--db", str(db), "--quiet"])
    assert result.exit_code == 2
    assert message in _error_line(result.output)
    assert not (tmp_path / "out").exists()


def test_overwrite_leaves_the_old_log_untouched_when_the_input_is_bad(tmp_path):
    db = tmp_path / "x.db"
    db.write_bytes(b"the previous session")
    result = CliRunner().invoke(
        main, ["run", "flow", "--db", str(db), "--overwrite", *QUICK, "--snapshot-every", "7"]
    )
    assert result.exit_code == 2
    assert db.read_bytes() == b"the previous session"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.db"]


def test_session_run_plans_before_it_creates_the_store(tmp_path):
    db = tmp_path / "x.db"
    for kwargs in (
        {"seed": -1},
        {"seed": 2**63},
        {"seed": True},
        {"batch_size": 0},
        {"snapshot_every": 7},
        {"overrides": {"interval_ns": 2**63 - 1}},
    ):
        with pytest.raises(session.SessionError) as caught:
            session.run("flow", db, **kwargs)
        assert "\n" not in str(caught.value)
        assert not db.exists()


class _NoSetup(FlowScenario):
    """``flow`` whose setup fails (tests only)."""

    def setup(self, engine):
        raise ValueError("the venue is closed")


def test_a_scenario_whose_setup_fails_is_refused_before_the_store_exists(tmp_path, monkeypatch):
    monkeypatch.setitem(SCENARIOS, "flow", _NoSetup)
    with pytest.raises(session.SessionError, match="cannot be set up: the venue is closed"):
        session.run("flow", tmp_path / "x.db", overrides={"messages": 10})
    assert not (tmp_path / "x.db").exists()


class _Lossy(FlowScenario):
    """``flow`` with a float field that takes NaN, which JSON stores as null (tests only)."""

    spread: float = 1.0


def test_a_scenario_that_cannot_be_stored_faithfully_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(SCENARIOS, "flow", _Lossy)
    with pytest.raises(session.SessionError, match="cannot be stored"):
        session.run("flow", tmp_path / "x.db", overrides={"spread": float("nan")})
    assert not (tmp_path / "x.db").exists()


def test_resuming_a_log_whose_stored_scenario_is_not_valid_is_one_line(tmp_path):
    # a log from before the limits: a NaN jump was stored as null
    db = tmp_path / "x.db"
    args = ["run", "generation-shock", "--db", str(db), "--quiet", "--no-report"]
    first = CliRunner().invoke(main, [*args, "--set", "days=2", "--batch-size", "100"])
    assert first.exit_code == 0, first.output
    con = sqlite3.connect(db)
    config = orjson.loads(con.execute("SELECT config FROM sessions").fetchone()[0])
    config["indices"][0]["extra_jumps"][0][1] = None
    stored = orjson.dumps(config, option=orjson.OPT_SORT_KEYS).decode()
    con.execute("UPDATE sessions SET config = ?, status = 'running'", (stored,))
    con.commit()
    con.close()
    result = CliRunner().invoke(main, [*args, "--resume"])
    assert result.exit_code == 1
    line = _error_line(result.output)
    assert "the stored scenario: indices.0.extra_jumps.0.1: Input should be a valid number" in line


# ---------------------------------------------------------------------- unwritable places
@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody (root included) can create files in: mode 0555, and where that is
    not enough (root), the immutable attribute."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if _writable(folder):
        chattr = shutil.which("chattr")
        if (
            chattr
            and subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode == 0
        ):
            immutable = True
    if _writable(folder):
        pytest.skip("no way to make a read-only directory here")
    yield folder
    if immutable:
        subprocess.run([shutil.which("chattr"), "-i", str(folder)], check=True)
    folder.chmod(0o755)


def _writable(folder: Path) -> bool:
    try:
        (folder / "probe").touch()
    except OSError:
        return False
    (folder / "probe").unlink()
    return True


def test_a_db_in_a_read_only_directory_is_named_before_the_run(read_only_dir):
    db = read_only_dir / "x.db"
    result = CliRunner().invoke(main, ["run", "flow", "--db", str(db), *QUICK])
    assert result.exit_code == 1
    assert f"--db: cannot write in {read_only_dir}" in _error_line(result.output)
    db2 = read_only_dir / "sub" / "x.db"
    result = CliRunner().invoke(main, ["run", "flow", "--db", str(db2), *QUICK])
    assert result.exit_code == 1
    assert "--db: cannot write in" in _error_line(result.output)


def test_session_run_into_a_read_only_directory_is_a_session_error(read_only_dir):
    with pytest.raises(session.SessionError, match="cannot create the event log"):
        session.run("flow", read_only_dir / "x.db", overrides={"messages": 10})
    assert list(read_only_dir.iterdir()) == []


def test_a_report_in_a_read_only_directory_is_named_before_the_run(tmp_path, read_only_dir):
    db = tmp_path / "x.db"
    args = ["run", "flow", "--db", str(db), "--report", str(read_only_dir / "r.html")]
    result = CliRunner().invoke(main, [*args, "--set", "messages=300", "--quiet"])
    assert result.exit_code == 1
    assert "--report: cannot write in" in _error_line(result.output)
    assert not db.exists()


def test_a_report_that_cannot_be_written_after_the_run_says_the_log_is_complete(
    tmp_path, monkeypatch
):
    import exchange.postmortem.report

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(exchange.postmortem.report, "write_report", full)
    db = tmp_path / "x.db"
    result = CliRunner().invoke(main, ["run", "flow", "--db", str(db), "--set", "messages=300"])
    assert result.exit_code == 1
    line = _error_line(result.output)
    assert "--report: cannot write" in line and "No space left on device" in line
    assert "the session's log is complete" in line
    assert session.verify(db).ok


# ---------------------------------------------------------------------- a full disk mid-run
@contextlib.contextmanager
def _disk_full_after(pages: int):
    """Every store created meanwhile holds at most ``pages`` pages: SQLite then fails with
    SQLITE_FULL ("database or disk is full") exactly when the log reaches that size."""
    create = EventStore.create.__func__

    def small(cls, *args, **kwargs):
        store = create(cls, *args, **kwargs)
        store._conn.execute(f"PRAGMA max_page_count={pages}")
        return store

    EventStore.create = classmethod(small)
    try:
        yield
    finally:
        EventStore.create = classmethod(create)


def test_a_full_disk_mid_run_is_one_line_and_the_log_resumes_to_the_same_end(tmp_path):
    db = tmp_path / "x.db"
    args = ["run", "flow", "--db", str(db), "--set", "messages=4000", "--quiet", "--no-report"]
    args += ["--batch-size", "100", "--snapshot-every", "0", "--no-journaller"]
    with _disk_full_after(20):
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    line = _error_line(result.output)
    assert "could not be written (" in line and "database or disk is full" in line
    assert "continue with --resume" in line
    with EventStore.open(db) as store:
        committed = store.last_seq
        assert store.session["status"] == "running" and committed % 100 == 0 and committed > 0
    resumed = CliRunner().invoke(main, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert f"(resumed after {committed:,})" in resumed.output
    fresh = CliRunner().invoke(main, [a if a != str(db) else str(tmp_path / "y.db") for a in args])
    state = [line for line in fresh.output.splitlines() if line.startswith("state")]
    assert state and state[0] in resumed.output
    assert session.verify(db).ok


# ---------------------------------------------------------------------- serve and sweep
def test_serve_validates_before_a_gateway_opens_or_a_file_is_made(tmp_path):
    from clients.cli import main as gpuex

    db = tmp_path / "out" / "x.db"
    for args, message in [
        (["--seed", str(10**20)], "Invalid value for '--seed'"),
        (["--seed", "-1"], "Invalid value for '--seed'"),
        (["--port", "70000"], "Invalid value for '--port'"),
    ]:
        result = CliRunner().invoke(gpuex, ["serve", "h100-depreciation", "--db", str(db), *args])
        assert result.exit_code == 2
        assert message in _error_line(result.output)
    bad = _shock_with(tmp_path, "days = 45", "days = true")
    result = CliRunner().invoke(gpuex, ["serve", bad, "--db", str(db)])
    assert result.exit_code == 2
    assert "days: true is a boolean" in _error_line(result.output)
    assert not (tmp_path / "out").exists()


def test_sweep_output_in_a_read_only_directory_is_one_line(read_only_dir):
    out = read_only_dir / "sweep"
    args = ["sweep", "products", "--param", "days=45", "-o", str(out), "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert f"-o {out}: cannot write" in _error_line(result.output)


def test_an_unreachable_scheduler_is_one_line_after_the_timeout(tmp_path):
    args = ["sweep", "products", "--param", "days=45", "-o", str(tmp_path / "out"), "--quiet"]
    args += ["--scheduler", "tcp://127.0.0.1:1", "--scheduler-timeout", "0.5"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "--scheduler tcp://127.0.0.1:1: cannot connect within 0.5 s" in _error_line(
        result.output
    )


@pytest.mark.parametrize("value", ["nan", "inf", "1e309", "0", "-1", "1e7", "soon"])
def test_a_timeout_that_is_not_a_finite_positive_number_of_seconds_is_refused(tmp_path, value):
    from clients.cli import main as gpuex

    out = tmp_path / "out"
    sweep = ["sweep", "flow", "-o", str(out), "--scheduler", "tcp://127.0.0.1:1"]
    result = CliRunner().invoke(main, [*sweep, "--scheduler-timeout", value])
    assert result.exit_code == 2
    assert "Invalid value for '--scheduler-timeout'" in _error_line(result.output)
    for option in ("--connect-timeout", "--step-timeout"):
        serve = ["serve", "demo", "--db", str(out / "x.db"), "--remote", "maker", option, value]
        result = CliRunner().invoke(gpuex, serve)
        assert result.exit_code == 2
        assert f"Invalid value for '{option}'" in _error_line(result.output)
    assert not out.exists()


class _OwnMarket:
    """A market handed to ``session.run`` through the Python API under a name no provider
    knows (as a bench or a user's script does): one account, nothing scheduled."""

    def __init__(self, name: str = "my-own-market", rate: float = 0.5) -> None:
        self.name, self.rate = name, rate
        self.end_ns = 10**9

    def model_dump(self, **_):
        return {"name": self.name, "rate": self.rate}

    def setup(self, engine):
        engine.open_account("own")

    def schedule_market(self, engine, sim, seed):
        pass

    def drive(self, engine, sim, seed):
        sim.schedule(10**6, engine.handle, {"type": "deposit", "account": "own", "amount": 5})


def test_a_model_given_through_the_api_under_an_unknown_name_runs(tmp_path: Path) -> None:
    summary = session.run("my-own-market", tmp_path / "own.db", model=_OwnMarket(), seed=1)
    assert summary.events > 0


def test_a_model_given_through_the_api_that_json_cannot_hold_is_refused_first(
    tmp_path: Path,
) -> None:
    db = tmp_path / "own.db"
    with pytest.raises(session.SessionError, match="cannot be stored"):
        session.run("my-own-market", db, model=_OwnMarket(rate=float("nan")), seed=1)
    assert not db.exists()
