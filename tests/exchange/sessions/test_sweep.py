"""Scenario sweeps (``exchange.sessions.sweep``, ``gpuex sweep``): parameters, the grid, runs on a
real
Dask cluster equal to runs in-process, failures isolated, resume."""

from __future__ import annotations

import contextlib
import csv
import os
import sys
from pathlib import Path
from typing import Literal

import orjson
import pytest
from click.testing import CliRunner

from exchange.cli import main
from exchange.core import events as ev
from exchange.kernel.engine import DAY_NS
from exchange.sessions import session, sweep
from exchange.sessions.scenario_products import ProductsScenario
from exchange.sessions.scenarios import SCENARIOS, load_scenario
from exchange.store.event_store import EventStore

HOUR_NS = 3_600 * 10**9
#: A short, thin-capital flagship-like grid: the guarantor is called and (mostly) defaults.
GRID = ["guarantor.capital=3e6,5.7e6", "days=45", "owner.contracts=400"]


# ---------------------------------------------------------------------- a failing scenario
class CrashyScenario(ProductsScenario):
    """``products`` whose participants raise for one seed (tests only)."""

    name: Literal["crashy"] = "crashy"
    explode_on_seed: int = 0

    def drive(self, engine, sim, seed):
        if seed == self.explode_on_seed:
            raise RuntimeError(f"boom on seed {seed}")
        super().drive(engine, sim, seed)


def register_crashy() -> None:
    """Make the test scenario known (run on every worker, too)."""
    SCENARIOS["crashy"] = CrashyScenario


class FlakyScenario(ProductsScenario):
    """``products`` whose participants raise while a file exists (tests only): a run made to
    fail once."""

    name: Literal["flaky"] = "flaky"
    fail_while: str = ""

    def drive(self, engine, sim, seed):
        if self.fail_while and Path(self.fail_while).exists():
            raise RuntimeError("flaky on purpose")
        super().drive(engine, sim, seed)


def register_flaky() -> None:
    SCENARIOS["flaky"] = FlakyScenario


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as c:
        yield c


# ---------------------------------------------------------------------- units and parsing
@pytest.mark.parametrize(
    ("text", "cents"),
    [
        ("5.7e6", 570_000_000),
        ("1e6", 100_000_000),
        ("2e7", 2_000_000_000),
        ("5700000", 570_000_000),
        ("$250k", 25_000_000),
        ("1.5M", 150_000_000),
        ("0.015", 2),  # 1.5 cents: half to even, on the exact decimal
        ("0.025", 2),
        ("0.035", 4),
        ("1_000", 100_000),
    ],
)
def test_dollars_become_integer_cents_rounded_once(text, cents):
    value = sweep.convert(text, "dollars")
    assert value == cents and type(value) is int


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("30m", 30 * 60 * 10**9),
        ("12h", 12 * HOUR_NS),
        ("1d", DAY_NS),
        ("3d", 3 * DAY_NS),
        ("1.5d", 3 * DAY_NS // 2),
        ("1w", 7 * DAY_NS),
        ("250ms", 250_000_000),
        ("7ns", 7),
    ],
)
def test_durations_become_integer_ns(text, ns):
    value = sweep.convert(text, "duration")
    assert value == ns and type(value) is int


@pytest.mark.parametrize(
    ("text", "unit", "message"),
    [
        ("abc", "dollars", "not an amount of dollars"),
        ("5", "duration", "not a duration"),
        ("1.5ns", "duration", "whole number of nanoseconds"),
        ("1d2h", "duration", "not a duration"),
        ("1.5", "int", "whole number"),
        ("ten", "int", "not a number"),
        ("1", "furlongs", "unknown unit"),
    ],
)
def test_bad_values_say_why(text, unit, message):
    with pytest.raises(ValueError, match=message):
        sweep.convert(text, unit)


def test_int_and_raw_units():
    assert sweep.convert("45", "int") == 45
    assert sweep.convert("1e3", "int") == 1000
    assert sweep.convert("true", "raw") is True
    assert sweep.convert("[1, 2]", "raw") == [1, 2]
    assert sweep.convert("1e6", "raw") == 1_000_000
    assert sweep.convert("0.5", "raw") == 0.5
    assert sweep.convert("cancel-both", "raw") == "cancel-both"


def test_values_split_on_top_level_commas_only():
    text = 'a,[1,2],{"x":1,"y":2},"q,r", b '
    assert sweep.split_values(text) == ["a", "[1,2]", '{"x":1,"y":2}', '"q,r"', "b"]


def test_aliases_resolve_with_their_units():
    p = sweep.parse_param("products", "guarantor.capital=1e6,5.7e6,2e7,1e8")
    assert (p.path, p.unit) == ("guarantor_cash", "dollars")
    assert p.values == (100_000_000, 570_000_000, 2_000_000_000, 10_000_000_000)
    assert p.texts == ("1e6", "5.7e6", "2e7", "1e8")
    c = sweep.parse_param("products", "margin.cure_period=1d,3d")
    assert (c.path, c.values) == ("margin.cure_ns", (DAY_NS, 3 * DAY_NS))
    assert sweep.parse_param("products", "days=45,60").values == (45, 60)


def test_field_paths_take_numbers_and_json():
    p = sweep.parse_param("products", "margin.cure_ns=86400000000000,1.728e14")
    assert p.values == (DAY_NS, 2 * DAY_NS) and p.unit == "raw"
    assert sweep.parse_param("products", "guarantor_cash=300000000").values == (300_000_000,)
    flow = sweep.parse_param("flow", "stp=none,cancel-both")
    assert flow.values == ("none", "cancel-both")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("guarantor.capital", "expected NAME=V1,V2"),
        ("=1,2", "expected NAME=V1,V2"),
        ("guarantor.capital=", "empty value"),
        ("guarantor.capital=1e6,,2e6", "empty value"),
        ("guarantor.capital=lots", "--param guarantor.capital: 'lots' is not an amount"),
        ("guarantor.capital=-5", "--param guarantor.capital=-5: guarantor_cash"),
        ("days=10", "--param days=10: days: Input should be greater than or equal to 45"),
        ("margin.cure_period=2", "--param margin.cure_period: '2' is not a duration"),
        ("margin.cure=1d", "margin has no field 'cure'"),
        ("margin.cure=1d", "aliases: .*margin.cure_period"),
        ("guarantor=1", "the scenario has no field 'guarantor'"),
        ("days.x=1", "days is not a model with fields"),
        ("name=flow", "no field 'name'"),
        ("days=45,45.0", "a value is given twice"),
    ],
)
def test_bad_params_are_named_before_anything_runs(spec, message):
    with pytest.raises(sweep.SweepError, match=message):
        sweep.parse_param("products", spec)


def test_two_params_may_not_set_one_field():
    with pytest.raises(sweep.SweepError, match="sets guarantor_cash, as --param guarantor.cap"):
        sweep.parse_params("products", ["guarantor.capital=1e6", "guarantor_cash=5"])
    with pytest.raises(sweep.SweepError, match="sets margin.cure_ns"):
        sweep.parse_params("products", ["margin={}", "margin.cure_period=1d"])


def test_unknown_scenario():
    with pytest.raises(sweep.SweepError, match="unknown scenario 'nope'"):
        sweep.parse_param("nope", "days=45")


def test_a_nested_path_changes_only_its_leaf():
    overrides = sweep.overrides_for("products", {"margin.cure_ns": 3 * DAY_NS, "days": 60})
    model = load_scenario("products", overrides)
    default = load_scenario("products")
    assert model.margin.cure_ns == 3 * DAY_NS and model.days == 60
    assert model.margin.auction_bidders == default.margin.auction_bidders != []
    assert model.margin.model_copy(update={"cure_ns": default.margin.cure_ns}) == default.margin


# ---------------------------------------------------------------------- the grid
def test_the_grid_is_the_product_of_params_and_seeds():
    params = sweep.parse_params(
        "products", ["guarantor.capital=1e6,5.7e6,2e7,1e8", "margin.cure_period=1d,3d"]
    )
    specs = sweep.expand_grid("products", params, range(1, 4))
    assert len(specs) == 4 * 2 * 3
    assert [s.params for s in specs[:4]] == [
        (("guarantor.capital", "1e6"), ("margin.cure_period", "1d")),
    ] * 3 + [(("guarantor.capital", "1e6"), ("margin.cure_period", "3d"))]
    assert [s.seed for s in specs[:4]] == [1, 2, 3, 1]
    assert len({s.run_id for s in specs}) == len(specs)
    # ids are stable, and depend on the run, not on how it was spelt
    again = sweep.expand_grid("products", params, range(1, 4))
    assert [s.run_id for s in again] == [s.run_id for s in specs]
    spelt = sweep.expand_grid(
        "products",
        sweep.parse_params("products", ["guarantor_cash=100000000", "margin.cure_ns=8.64e13"]),
        [1],
    )
    assert spelt[0].run_id == specs[0].run_id
    assert specs[0].overrides["guarantor_cash"] == 100_000_000


def test_no_params_is_one_grid_point():
    specs = sweep.expand_grid("products", [], [5, 6])
    assert [(s.seed, s.params) for s in specs] == [(5, ()), (6, ())]


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ([], "no seeds"),
        ([1, 1], "listed twice"),
        ([-1], "integers in 0..9223372036854775807"),
        ([2**63], "integers in 0..9223372036854775807"),
        ([True], "integers in 0.."),
        (range(1, 1_000_002), "1,000,001 runs: a sweep may hold at most 1,000,000"),
    ],
)
def test_bad_seeds(seeds, message):
    with pytest.raises(sweep.SweepError, match=message):
        sweep.expand_grid("products", [], seeds)


def test_a_combination_is_validated_as_a_whole(monkeypatch):
    from pydantic import model_validator

    class Picky(ProductsScenario):
        name: Literal["picky"] = "picky"

        @model_validator(mode="after")
        def _short_cure(self):
            if self.days == 45 and self.margin.cure_ns >= 3 * DAY_NS:
                raise ValueError("a 45-day session needs a cure period under 3 days")
            return self

    monkeypatch.setitem(SCENARIOS, "picky", Picky)
    params = sweep.parse_params("picky", ["days=45,60", "margin.cure_period=1d,3d"])
    with pytest.raises(sweep.SweepError, match="--param days=45 margin.cure_period=3d: "):
        sweep.expand_grid("picky", params, [1])


# ---------------------------------------------------------------------- one run
def test_run_one_summarises_a_default(tmp_path):
    params = sweep.parse_params("products", GRID)
    spec = sweep.expand_grid("products", params, [1])[0]
    record = sweep.run_one(spec, str(tmp_path))
    # the facts agree with the raw events
    with EventStore.open(record["log"]) as store:
        calls = list(store.events(kind=ev.COLLATERAL_CALL))
        defaults = list(store.events(kind=ev.DEFAULT))
        assert record["events"] == store.last_seq
        assert record["state_hash"] == store.session["final_state_hash"]
    assert record["collateral_calls"] == len(calls) >= 1
    assert record["called"] == sum(e.amount for e in calls)
    assert [(d["account"], d["t"], d["missed"]) for d in record["defaults"]] == [
        (e.account, e.t, e.amount) for e in defaults
    ]
    assert record["status"] == "ok" and record["error"] is None
    guarantor = record["accounts"]["guarantor"]
    assert guarantor["defaulted"] and guarantor["calls"] >= 1
    assert guarantor["default_day"] == guarantor["default_ns"] // DAY_NS
    assert record["defaults"][0]["account"] == "guarantor"
    assert record["collateral_calls"] == sum(a["calls"] for a in record["accounts"].values())
    assert record["funds_used"]["adl_lots"] > 0
    assert set(record["funds_used"]) == set(sweep.FUND_KEYS)
    assert all(type(v) is int for v in record["funds_used"].values())
    assert not any(a["defaulted"] for n, a in record["accounts"].items() if n != "guarantor")
    assert record["params"] == dict(spec.params) and record["seed"] == 1


def test_run_one_keeps_the_log_when_asked(tmp_path):
    from exchange.sessions import session

    spec = sweep.expand_grid("products", sweep.parse_params("products", ["days=45"]), [3])[0]
    record = sweep.run_one(spec, str(tmp_path / "logs"))
    assert record["log"] == str(tmp_path / "logs" / f"{spec.run_id}.db")
    assert session.verify(record["log"]).state_hash == record["state_hash"]


def test_run_one_records_a_failure(monkeypatch):
    monkeypatch.setitem(SCENARIOS, "crashy", CrashyScenario)
    specs = sweep.expand_grid(
        "crashy", sweep.parse_params("crashy", ["days=45", "explode_on_seed=2"]), [2]
    )
    record = sweep.run_one(specs[0])
    assert record["status"] == "failed"
    assert "RuntimeError: boom on seed 2" in record["error"]
    assert "Traceback" in record["error"]


@contextlib.contextmanager
def _frames_held_as_by_a_sampling_profiler():
    """Keep a reference to every frame that returns, as Dask's sampling profiler does now and
    then to the frames it samples in every worker: a frame referenced after its return keeps
    its locals alive."""
    held = []

    def keep(frame, event, arg):
        if event == "return":
            held.append(frame)

    sys.setprofile(keep)
    try:
        yield held
    finally:
        sys.setprofile(None)
        held.clear()


def test_a_store_is_created_and_reopened_while_a_profiler_holds_frames(tmp_path):
    # the cause of "cannot open savepoint - SQL statements in progress" at store creation in
    # sweeps (issue #17, point 14): the cursor of the WAL pragma, kept alive by a held frame
    with _frames_held_as_by_a_sampling_profiler():
        store = EventStore.create(
            tmp_path / "x.db", scenario="flow", seed=1, config={}, code_version="test"
        )
        store.close()
        EventStore.open(tmp_path / "x.db", mode="a").close()
    with _frames_held_as_by_a_sampling_profiler():
        summary = session.run("flow", tmp_path / "y.db", overrides={"messages": 300})
    assert summary.events > 300


# ---------------------------------------------------------------------- on a cluster
def _strip(record):
    return {k: v for k, v in record.items() if k != "log"}


def test_a_cluster_sweep_equals_running_each_run_in_process(cluster, tmp_path):
    specs = sweep.expand_grid("products", sweep.parse_params("products", GRID), [1, 2])
    out = tmp_path / "sweep"
    result = sweep.run_sweep(specs, out, scheduler=cluster.scheduler_address, progress=False)
    assert (result.executed, result.skipped, result.failed) == (4, 0, 0)
    local = sorted((sweep.run_one(s) for s in specs), key=lambda r: r["run_id"])
    assert [_strip(r) for r in result.records] == local
    assert [r["state_hash"] for r in result.records] == [r["state_hash"] for r in local]
    assert any(r["defaults"] for r in local)
    # the table: one row per run, sorted by run id, the same facts
    with (out / "results.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["run_id"] for r in rows] == sorted(s.run_id for s in specs)
    for row, record in zip(rows, local, strict=True):
        assert row["state_hash"] == record["state_hash"]
        assert row["status"] == "ok" and row["error"] == ""
        assert row["param:guarantor.capital"] == record["params"]["guarantor.capital"]
        g = record["accounts"]["guarantor"]
        assert row["defaulted:guarantor"] == str(int(g["defaulted"]))
        assert row["default_ns:guarantor"] == (
            "" if g["default_ns"] is None else str(g["default_ns"])
        )
    expected = sweep.table_columns(local, ["guarantor.capital", "days", "owner.contracts"])
    assert list(rows[0]) == expected
    for spec in specs:
        saved = orjson.loads((out / "runs" / f"{spec.run_id}.json").read_bytes())
        assert saved["run_id"] == spec.run_id and saved["status"] == "ok"
    page = (out / "summary.html").read_text()
    assert "guarantor.capital=3e6, days=45, owner.contracts=400" in page
    assert "<script src=" not in page  # self-contained


def test_a_failing_run_is_recorded_and_the_others_finish(cluster, tmp_path, monkeypatch):
    from distributed import Client

    monkeypatch.setitem(SCENARIOS, "crashy", CrashyScenario)
    with Client(cluster.scheduler_address) as client:
        client.run(register_crashy)
    params = sweep.parse_params("crashy", ["days=45", "explode_on_seed=2"])
    specs = sweep.expand_grid("crashy", params, [1, 2, 3])
    result = sweep.run_sweep(specs, tmp_path, scheduler=cluster.scheduler_address, progress=False)
    assert (result.executed, result.failed) == (3, 1)
    by_seed = {r["seed"]: r for r in result.records}
    assert by_seed[2]["status"] == "failed" and "boom on seed 2" in by_seed[2]["error"]
    assert by_seed[1]["status"] == by_seed[3]["status"] == "ok"
    with (tmp_path / "results.csv").open(newline="") as fh:
        rows = {int(r["seed"]): r for r in csv.DictReader(fh)}
    assert rows[2]["status"] == "failed" and "boom on seed 2" in rows[2]["error"]
    assert rows[2]["state_hash"] == "" and rows[1]["state_hash"] == by_seed[1]["state_hash"]
    assert "Failed runs (1)" in (tmp_path / "summary.html").read_text()
    # a failure is the run's own deterministic outcome: recorded, not retried on resume
    again = sweep.run_sweep(specs, tmp_path, scheduler=cluster.scheduler_address, progress=False)
    assert (again.executed, again.skipped, again.failed) == (0, 3, 1)


def test_a_resumed_sweep_runs_its_failed_runs_again_only_with_retry_failed(
    cluster, tmp_path, monkeypatch
):
    from distributed import Client

    monkeypatch.setitem(SCENARIOS, "flaky", FlakyScenario)
    with Client(cluster.scheduler_address) as client:
        client.run(register_flaky)
    marker = tmp_path / "fail-now"
    marker.touch()
    out = tmp_path / "out"
    params = ["--param", "days=45", "--param", f"fail_while={marker}", "--seed-list", "3"]
    args = ["sweep", "flaky", *params, "--scheduler", cluster.scheduler_address, "-o", str(out)]
    first = CliRunner().invoke(main, [*args, "--quiet"])
    assert first.exit_code == 1 and "failed    1" in first.output
    marker.unlink()  # whatever made it fail has gone
    again = CliRunner().invoke(main, [*args, "--quiet"])
    assert "0 run now, 1 already finished" in again.output and "failed    1" in again.output
    retried = CliRunner().invoke(main, [*args, "--quiet", "--retry-failed"])
    assert retried.exit_code == 0, retried.output
    assert "1 run now, 0 already finished" in retried.output and "failed    0" in retried.output
    (record,) = [orjson.loads(p.read_bytes()) for p in (out / "runs").glob("*.json")]
    assert record["status"] == "ok" and record["error"] is None
    # the retried run is the run any fresh sweep makes
    spec = sweep.expand_grid("flaky", sweep.parse_params("flaky", params[1::2][:2]), [3])[0]
    assert record["state_hash"] == sweep.run_one(spec)["state_hash"]


def test_an_interrupted_sweep_resumes_without_redoing_finished_runs(cluster, tmp_path):
    specs = sweep.expand_grid("products", sweep.parse_params("products", GRID), [1, 2])
    first = sweep.run_sweep(
        specs, tmp_path, scheduler=cluster.scheduler_address, keep_logs=True, progress=False
    )
    assert first.executed == 4
    runs = tmp_path / "runs"
    # as if interrupted after two runs: the other two never wrote their record; one left
    # a partial log behind, and a half-written temporary file lies about
    lost = sorted(s.run_id for s in specs)[:2]
    for run_id in lost:
        (runs / f"{run_id}.json").unlink()
    (tmp_path / "logs" / f"{lost[0]}.db").write_bytes(b"partial")
    (runs / ".junk.json.tmp").write_bytes(b"{")
    kept = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json")}
    assert len(kept) == 2
    second = sweep.run_sweep(
        specs, tmp_path, scheduler=cluster.scheduler_address, keep_logs=True, progress=False
    )
    assert (second.executed, second.skipped, second.failed) == (2, 2, 0)
    assert {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json") if p.name in kept} == kept
    assert [_strip(r) for r in second.records] == [_strip(r) for r in first.records]
    assert [list(r["params"]) for r in second.records] == [[p for p, _ in specs[0].params]] * 4
    # the same runs spelt otherwise: nothing to run, and the table speaks this grid's names
    respelt = sweep.expand_grid(
        "products",
        sweep.parse_params(
            "products", ["days=45", "guarantor_cash=300000000,570000000", "owner_contracts=400"]
        ),
        [1, 2],
    )
    third = sweep.run_sweep(respelt, tmp_path, scheduler=cluster.scheduler_address, progress=False)
    assert (third.executed, third.skipped) == (0, 4)
    with (tmp_path / "results.csv").open(newline="") as fh:
        header = next(csv.reader(fh))
    assert header[3:6] == ["param:days", "param:guarantor_cash", "param:owner_contracts"]
    assert {r["params"]["guarantor_cash"] for r in third.records} == {"300000000", "570000000"}


# ---------------------------------------------------------------------- the command line
def test_cli_sweep_on_a_scheduler(cluster, tmp_path):
    out = tmp_path / "out"
    args = ["sweep", "products", "--param", "days=45", "--param", "margin.cure_period=1d"]
    args += ["--seed-list", "4", "--scheduler", cluster.scheduler_address, "-o", str(out)]
    result = CliRunner().invoke(main, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    assert "1 run now, 0 already finished" in result.output
    assert (out / "results.csv").exists() and (out / "summary.html").exists()
    # the run-time estimate (on stderr, even with --quiet) and the per-point table
    assert "estimate: the first run took" in result.stderr and "1 run on 2 workers" in result.stderr
    assert f"points    {out.resolve() / 'points.csv'}" in result.stdout
    again = CliRunner().invoke(main, [*args, "--quiet"])
    assert "0 run now, 1 already finished" in again.output
    assert "estimate:" not in again.output  # nothing ran


def test_cli_sweep_on_a_local_cluster(tmp_path):
    out = tmp_path / "out"
    args = ["sweep", "products", "--param", "days=45", "--workers", "1", "-o", str(out), "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    with (out / "results.csv").open(newline="") as fh:
        (row,) = csv.DictReader(fh)
    assert row["seed"] == "1" and row["status"] == "ok"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "guarantor.capital=lots"], "--param guarantor.capital: 'lots'"),
        (["--param", "margin.cure=1d"], "margin has no field 'cure'"),
        (["--param", "days=10"], "--param days=10"),
        (["--seeds", "2", "--seed-list", "1,2"], "not both"),
        (["--seed-list", "1,x"], "not a list of integers"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not with --scheduler"),
        (["--workers", "0"], "must be 1..256"),
        (["--workers", "1000000"], "must be 1..256"),
    ],
)
def test_cli_rejects_bad_input_before_anything_runs(tmp_path, args, message):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["sweep", "products", *args, "-o", str(out)])
    assert result.exit_code == 2
    assert message in result.output
    assert not out.exists()


def test_cli_help():
    result = CliRunner().invoke(main, ["sweep", "--help"])
    assert result.exit_code == 0 and "--scheduler" in result.output


def test_worker_count_default():
    assert sweep.default_workers() == len(os.sched_getaffinity(0))


def test_cli_unknown_scenario(tmp_path):
    result = CliRunner().invoke(main, ["sweep", "nope", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "unknown scenario 'nope'" in result.output


def _fake(run_id, capital, seed, default_t=None, status="ok", shortfall=0, uncovered=0, loss=None):
    """A record as ``run_one`` returns it (only the keys the summary reads); ``loss``:
    account -> what it lost to the default."""
    record = {
        "run_id": run_id,
        "scenario": "products",
        "seed": seed,
        "params": {"guarantor.capital": capital},
        "settings": {"guarantor_cash": int(float(capital) * 100)},
        "status": status,
        "error": None if status == "ok" else "Traceback ...\nRuntimeError: <boom>",
    }
    if status == "ok":
        defaults = [] if default_t is None else [{"account": "guarantor", "t": default_t}]
        accounts = {"guarantor": {"defaulted": default_t is not None, "loss": 0}}
        for name, lost in (loss or {}).items():
            accounts[name] = {"defaulted": False, "loss": lost}
        record.update(
            defaults=defaults, accounts=accounts, shortfall=shortfall, uncovered=uncovered
        )
    return record


def test_summary_page_per_grid_point(tmp_path, monkeypatch):
    records = [
        _fake("a", "2e7", 1),
        _fake("b", "3e6", 1, 4 * DAY_NS),
        _fake("c", "3e6", 2, 5 * DAY_NS),
        _fake("d", "3e6", 3, status="failed"),
        _fake("e", "2e7", 2, 3 * DAY_NS),
    ]
    points = sweep.grid_points(records)
    assert [p["params"]["guarantor.capital"] for p in points] == ["3e6", "2e7"]  # by value
    thin, thick = points
    assert (thin["runs"], thin["ok"], thin["failed"], thin["defaulted"]) == (3, 2, 1, 2)
    assert thin["p_default"] == 1.0 and thin["days"] == [4.0, 5.0]
    assert thick["p_default"] == 0.5 and thick["by_account"] == {"guarantor": 1}
    lo, hi = thick["ci"]
    assert 0.09 < lo < 0.1 and 0.9 < hi < 0.91  # Wilson, 1 of 2
    monkeypatch.setitem(__import__("sys").modules, "plotly", None)  # the plain table
    page = sweep.write_html(records, tmp_path / "plain.html").read_text()
    assert "<script" not in page and "Failed runs (1)" in page and "&lt;boom&gt;" in page
    assert page.index("guarantor.capital=3e6") < page.index("guarantor.capital=2e7")
    monkeypatch.undo()
    try:
        import plotly  # noqa: F401
    except ImportError:
        return
    page = sweep.write_html(records, tmp_path / "charts.html").read_text()
    assert "Plotly.newPlot" in page and "<script src=" not in page  # plotly.js inlined


# ---------------------------------------------------------------------- where the loss landed
def test_distribution_is_nearest_rank_with_a_mean_rounded_half_to_even_and_the_worst_seed():
    d = sweep.distribution([(1, 0), (2, 100), (3, 250), (4, 1_000), (5, 3)])
    # sorted 0, 3, 100, 250, 1000: nearest rank ceil(q x 5) -> 2nd, 3rd, 4th
    assert (d["min"], d["q1"], d["median"], d["q3"], d["max"]) == (0, 3, 100, 250, 1_000)
    assert d["mean"] == 271 and d["max_seed"] == 4  # 1353 / 5 = 270.6
    assert sweep.distribution([(1, 1), (2, 4)])["mean"] == 2  # 2.5: half to even, not 3
    assert sweep.distribution([(1, 3), (2, 4)])["mean"] == 4  # 3.5: half to even
    assert sweep.distribution([(9, 7), (4, 7), (6, 1)])["max_seed"] == 4  # a tie: lowest seed
    assert sweep.distribution([(0, 5), (3, 2)])["max_seed"] == 0  # seed 0 is a seed
    assert sweep.distribution([(1, 0), (2, 0)])["max_seed"] is None  # nothing to point at
    assert sweep.distribution([]) is None
    big = 2**62 + 1  # exact: a float mean would be off by more than a cent
    assert sweep.distribution([(1, big), (2, big + 2)])["mean"] == big + 1


def _loss_records():
    """Two grid points: the thin one's seed 5 leaves $134,200.50 uncovered."""
    return [
        _fake("a", "3e6", 1, DAY_NS, shortfall=50_000_00, loss={"owner": 10_00, "lender": 7}),
        _fake(
            "b",
            "3e6",
            5,
            DAY_NS,
            shortfall=150_000_00,  # of which no pool covered $134,200.50
            uncovered=134_200_50,
            loss={"owner": 30_00, "lender": 5},
        ),
        _fake("c", "3e6", 3, shortfall=0, loss={"owner": 0}),  # no lender in this run
        _fake("d", "3e6", 4, status="failed"),
        _fake("e", "2e7", 1),
        _fake("f", "2e7", 2),
    ]


def test_grid_points_give_the_shortfall_uncovered_and_losses_by_account_over_ok_runs():
    thin, thick = sweep.grid_points(_loss_records())
    assert thin["params"] == {"guarantor.capital": "3e6"}
    # the failed run is not a run that lost nothing; the run without a default is one
    assert thin["shortfall"] == {
        "min": 0,
        "q1": 0,
        "median": 50_000_00,
        "q3": 150_000_00,
        "max": 150_000_00,
        "mean": 66_666_67,  # 200,000 / 3 = 66,666.666...
        "max_seed": 5,
    }
    assert thin["uncovered"]["max"] == 134_200_50 and thin["uncovered"]["max_seed"] == 5
    assert thin["uncovered"]["median"] == 0 and thin["uncovered"]["mean"] == 44_733_50
    # an account a run did not have lost nothing in it: (7 + 5 + 0) / 3
    assert thin["losses"]["lender"] == {"mean": 4, "max": 7, "max_seed": 1}
    assert thin["losses"]["owner"] == {"mean": 13_33, "max": 30_00, "max_seed": 5}
    assert thin["losses"]["guarantor"] == {"mean": 0, "max": 0, "max_seed": None}
    assert thick["shortfall"]["max"] == thick["uncovered"]["max"] == 0
    assert thick["shortfall"]["max_seed"] is None
    only_failed = sweep.grid_points([_fake("z", "1e6", 1, status="failed")])[0]
    assert only_failed["shortfall"] is None and only_failed["losses"] == {}


def test_points_csv_and_summary_page_show_where_the_loss_landed(tmp_path, monkeypatch):
    records = _loss_records()
    path = sweep.write_points_csv(records, tmp_path / "points.csv", ["guarantor.capital"])
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["param:guarantor.capital"] for r in rows] == ["3e6", "2e7"]
    thin = rows[0]
    assert (thin["runs"], thin["ok"], thin["failed"], thin["defaulted"]) == ("4", "3", "1", "2")
    assert thin["uncovered_max"] == "13420050" and thin["uncovered_max_seed"] == "5"
    assert thin["shortfall_q1"] == "0" and thin["shortfall_mean"] == "6666667"
    assert (thin["loss_mean:owner"], thin["loss_max:owner"]) == ("1333", "3000")
    assert thin["loss_max_seed:owner"] == "5" and rows[1]["loss_max_seed:owner"] == ""
    assert list(rows[0]) == sweep.point_columns(sweep.grid_points(records), ["guarantor.capital"])
    monkeypatch.setitem(sys.modules, "plotly", None)
    page = sweep.write_html(records, tmp_path / "summary.html").read_text()
    table = page[page.index("Where the loss landed") :]
    thin_row = table[table.index("<td>guarantor.capital=3e6</td>") :].split("</tr>")[0]
    assert "<td>$134,200.50</td><td>$44,733.50</td><td>5</td>" in thin_row  # max, mean, seed
    assert "<td>$150,000.00</td><td>$66,666.67</td><td>5</td>" in thin_row
    assert "lost by owner: mean" in table and "lost by lender: mean" in table
    assert "lost by guarantor" not in table  # it lost nothing in any run
    assert sweep.dollars(-13_420_050) == "-$134,200.50" and sweep.dollars(7) == "$0.07"
    monkeypatch.undo()
    try:
        import plotly  # noqa: F401
    except ImportError:
        return
    page = sweep.write_html(records, tmp_path / "charts.html").read_text()
    assert "Uncovered per run (dollars)" in page and "seed 5" in page


#: generation-shock with a far deeper gap and no insurance fund: the long desk's close-out
#: leaves a shortfall that the default fund and haircuts, and on some seeds nothing, cover.
DEEP_GAP = ['indices.0.extra_jumps=[["2025-08-01", -2.3]]', "insurance.fund=0"]


def test_a_sweep_reports_where_each_grid_points_loss_landed_and_estimates_its_run_time(
    cluster, tmp_path
):
    specs = sweep.expand_grid(
        "generation-shock", sweep.parse_params("generation-shock", DEEP_GAP), [1, 2, 3]
    )
    notes: list[str] = []
    ticks = iter([100.0, 130.0])  # submitted at 100 s, the first run back at 130 s
    result = sweep.run_sweep(
        specs,
        tmp_path,
        scheduler=cluster.scheduler_address,
        progress=False,
        notify=notes.append,
        clock=lambda: next(ticks),
    )
    assert result.failed == 0
    # 3 runs on the fixture's 2 one-thread workers: ceil(3 / 2) x 30 s
    assert notes == [sweep.estimate_text(3, 2, 30.0)] and "about 60 s in all" in notes[0]
    records = result.records
    assert result.files["points"] == tmp_path / "points.csv"
    with (tmp_path / "points.csv").open(newline="") as fh:
        (row,) = csv.DictReader(fh)
    shortfalls = sorted(r["shortfall"] for r in records)
    uncovered = [r["uncovered"] for r in records]
    assert shortfalls[0] > 0 and max(uncovered) > 0  # the rule is exercised, not all zeros
    assert int(row["shortfall_min"]) == shortfalls[0]
    assert int(row["shortfall_median"]) == shortfalls[1]
    assert int(row["shortfall_max"]) == shortfalls[2]
    assert int(row["uncovered_max"]) == max(uncovered)
    worst = min(r["seed"] for r in records if r["uncovered"] == max(uncovered))
    assert int(row["uncovered_max_seed"]) == worst
    for account in records[0]["accounts"]:
        lost = [r["accounts"][account]["loss"] for r in records]
        assert int(row[f"loss_max:{account}"]) == max(lost)
        assert abs(int(row[f"loss_mean:{account}"]) - sum(lost) / 3) <= 0.5
    assert any(int(row[f"loss_max:{a}"]) > 0 for a in records[0]["accounts"])
    page = (tmp_path / "summary.html").read_text()
    assert sweep.dollars(max(uncovered)) in page
    # a resumed sweep runs nothing: no run, no estimate
    again = sweep.run_sweep(
        specs, tmp_path, scheduler=cluster.scheduler_address, progress=False, notify=notes.append
    )
    assert again.executed == 0 and len(notes) == 1


def test_the_estimate_is_the_first_runs_time_per_round_of_workers():
    assert sweep.duration_text(45) == "45 s"
    assert sweep.duration_text(60 * 38) == "38 min"
    assert sweep.duration_text(2 * 3600 + 5 * 60) == "2 h 05 min"
    # the README's sweep: 120 runs on 2 cores, 38 s a run -> 60 rounds x 38 s
    text = sweep.estimate_text(120, 2, 38.0)
    assert "120 runs on 2 workers ~ 60 x 38 s = about 38 min in all" in text
    assert "1 run on 4 workers ~ 1 x 20 s = about 20 s" in sweep.estimate_text(1, 4, 20.0)
