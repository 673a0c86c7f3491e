"""Exporting a log's events: CSV and JSON Lines, filters, and the `gpuex export` command."""

import csv
import io
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from exchange.cli import main
from exchange.core import events as ev
from exchange.core.events import Event
from exchange.postmortem.export import export_events, select
from exchange.sessions import session
from exchange.store.event_store import EventStore

SMALL = {"messages": 1_500, "traders": 4}


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "flow.db"
    session.run("flow", path, seed=2, overrides=SMALL, batch_size=100, snapshot_every=500)
    with EventStore.open(path, mode="r") as store:
        everything = list(store.events())
    return path, everything


def exported(path, fmt, **filters):
    out = io.StringIO(newline="")
    with EventStore.open(path, mode="r") as store:
        count = export_events(select(store, **filters), out, fmt)
    return count, out.getvalue()


def from_csv(text):
    """The events back from CSV: empty cells are None, numbers ints, data its JSON."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == list(Event._fields)
    typed = {"seq", "t", "order_id", "price", "qty", "amount", "counter_order_id"}
    back = []
    for row in rows[1:]:
        fields = {}
        for name, cell in zip(Event._fields, row, strict=True):
            if cell == "":
                fields[name] = None
            elif name == "data":
                fields[name] = json.loads(cell)
            else:
                fields[name] = int(cell) if name in typed else cell
        back.append(Event(**fields))
    return back


def test_csv_holds_every_event_with_its_fields_and_data(log):
    path, everything = log
    count, text = exported(path, "csv")
    assert count == len(everything)
    assert from_csv(text) == everything


def test_json_lines_hold_one_object_per_event_with_the_fields_in_event_order(log):
    path, everything = log
    count, text = exported(path, "jsonl")
    lines = text.splitlines()
    assert count == len(lines) == len(everything)
    objects = [json.loads(line) for line in lines]
    assert all(list(o) == list(Event._fields) for o in objects)
    assert [Event(**o) for o in objects] == everything


def test_an_account_filter_selects_its_own_events_and_its_fills_as_maker(log):
    path, everything = log
    fills = [e for e in everything if e.kind == ev.FILL]
    name = fills[0].counterparty  # an account that made at least one fill
    expected = [e for e in fills if name in (e.account, e.counterparty)]
    assert any(e.account != name for e in expected), "no fill made by the account"
    _count, text = exported(path, "csv", kinds=[ev.FILL], accounts=[name])
    assert from_csv(text) == expected


def test_filters_combine_and_repeat_and_the_range_is_inclusive(log):
    path, everything = log
    kinds = [ev.ORDER_CANCELLED, ev.FEE]
    names = sorted({e.account for e in everything if e.account})[:2]
    expected = [
        e
        for e in everything
        if 100 <= e.seq <= 900
        and e.kind in kinds
        and (e.account in names or e.counterparty in names)
    ]
    assert expected
    _count, text = exported(path, "csv", start=100, stop=900, kinds=kinds, accounts=names)
    assert from_csv(text) == expected
    instrument = next(e.instrument for e in everything if e.instrument)
    _count, text = exported(path, "csv", instruments=[instrument], stop=400)
    assert from_csv(text) == [e for e in everything if e.instrument == instrument and e.seq <= 400]


def test_an_unknown_format_is_refused_before_anything_is_written(log):
    out = io.StringIO()
    with pytest.raises(ValueError, match="unknown format 'xml'; known: csv, jsonl"):
        export_events(iter(log[1]), out, "xml")
    assert out.getvalue() == ""


# ---------------------------------------------------------------------- the command
def test_export_writes_stdout_or_a_file_whose_suffix_picks_the_format(log, tmp_path):
    path, everything = log
    runner = CliRunner()
    shown = runner.invoke(main, ["export", str(path), "--kind", "Fill", "--to", "600"])
    assert shown.exit_code == 0, shown.output
    fills = [e for e in everything if e.kind == ev.FILL and e.seq <= 600]
    assert from_csv(shown.stdout) == fills
    target = tmp_path / "out" / "all.jsonl"
    written = runner.invoke(main, ["export", str(path), "-o", str(target)])
    assert written.exit_code == 0, written.output
    assert f"{len(everything):,} events -> {target} (jsonl)" in written.stderr
    assert [Event(**json.loads(line)) for line in target.read_text().splitlines()] == everything
    again = tmp_path / "again.jsonl"
    runner.invoke(main, ["export", str(path), "-o", str(again), "--quiet"])
    assert again.read_bytes() == target.read_bytes()  # deterministic
    forced = tmp_path / "all.txt"
    runner.invoke(main, ["export", str(path), "-o", str(forced), "--format", "jsonl"])
    assert forced.read_bytes() == target.read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--account", "nobody"], "--account: not in this log: nobody (it has trader-01"),
        (["--instrument", "B300-PERP"], "--instrument: not in this log: B300-PERP"),
        (["--to", "10", "--from", "20"], "--to: 10 is before --from 20"),
        (["--to", "99999999"], "--to: seq 99999999 is beyond the log's last event"),
        (["--kind", "Fills"], "'Fills' is not one of"),
        (["--format", "xml"], "'xml' is not one of 'csv', 'jsonl'"),
    ],
)
def test_bad_options_are_refused_with_a_reason_and_no_file(log, tmp_path, args, message):
    target = tmp_path / "out.csv"
    result = CliRunner().invoke(main, ["export", str(log[0]), "-o", str(target), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_an_export_that_fails_midway_leaves_no_partial_file(log, tmp_path, monkeypatch):
    import exchange.postmortem.export as export

    def broken(event):
        if event.seq == 500:
            raise OSError("disk full")
        return [event.seq]

    monkeypatch.setattr(export, "_csv_row", broken)
    target = tmp_path / "out.csv"
    target.write_text("the previous export\n")
    result = CliRunner().invoke(main, ["export", str(log[0]), "-o", str(target)])
    assert result.exit_code == 1
    assert f"Error: cannot write {target}: disk full" in result.output
    assert target.read_text() == "the previous export\n"  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no part file left


def test_a_reader_that_stops_early_ends_the_export_quietly(log):
    # `gpuex export LOG | head -1`: the pipe closes under the export, which is no error
    proc = subprocess.Popen(
        [sys.executable, "-c", "from exchange.cli import main; main()", "export", str(log[0])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.readline().startswith(b"seq,t,kind,")
    proc.stdout.close()
    assert proc.wait(timeout=60) == 0
    assert proc.stderr.read() == b""
