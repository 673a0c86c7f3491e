"""The HTML post-mortem (exchange/report.py) and `gpuex report` / `gpuex inspect --owed`."""

from __future__ import annotations

import re

import orjson
import pytest
from click.testing import CliRunner

from exchange import events as ev
from exchange import report as rp
from exchange.cli import main
from exchange.postmortem import DAY_NS
from exchange.store import EventStore

#: every section that a log with a default must draw
SECTIONS = ("index", "perp", "rvs", "margin", "timeline", "waterfall")


@pytest.fixture(scope="module")
def log(spiral_log):
    return spiral_log


@pytest.fixture(scope="module")
def full(log):
    return rp.build_report(log)


def plotted(page: str) -> dict[str, list[dict]]:
    """The traces of every chart in a page, by div id, parsed from its Plotly.newPlot call."""
    charts = {}
    for div_id, data in re.findall(
        r'Plotly\.newPlot\(\s*"([^"]+)",\s*(\[.*?\]),\s*\{"', page, flags=re.DOTALL
    ):
        charts[div_id] = orjson.loads(data)
    return charts


def points(trace: dict) -> int:
    """Points in a trace: a plain list or plotly's typed-array encoding (base64 bdata)."""
    best = 0
    for key in ("x", "y"):
        value = trace.get(key)
        if isinstance(value, list):
            best = max(best, len(value))
        elif isinstance(value, dict) and "bdata" in value:
            import base64

            size = {"f8": 8, "i8": 8, "f4": 4, "i4": 4, "i2": 2, "i1": 1, "u1": 1}
            best = max(best, len(base64.b64decode(value["bdata"])) // size[value["dtype"]])
    return best


def test_dollars_is_exact_integer_formatting():
    assert rp.dollars(0) == "$0.00"
    assert rp.dollars(123_456) == "$1,234.56"
    assert rp.dollars(-5) == "-$0.05"
    assert rp.dollars(10**17 + 1) == "$1,000,000,000,000,000.01"
    assert list(rp.chart_dollars([150, -1])) == [1.5, -0.01]


def test_downsample_keeps_the_last_point_of_each_bucket_deterministically():
    t = [0, 1, 2, 3, 10, 11, 20]
    assert list(rp.downsample(t, n=10)) == list(range(7))
    idx = rp.downsample(t, n=2)
    # two buckets of width 11 (t 0..10 and 11..21): the last point of each
    assert list(idx) == [4, 6] and list(rp.downsample(t, n=2)) == list(idx)
    import numpy as np

    big = np.arange(0, 1_000_000, 7, dtype=np.int64)
    keep = rp.downsample(big)
    assert len(keep) <= rp.MAX_POINTS and keep[-1] == len(big) - 1
    assert np.all(np.diff(keep) > 0)


def test_every_chart_is_in_the_page_with_data(full):
    page = full.html
    charts = plotted(page)
    ids = [c.div_id for c in full.charts]
    assert sorted(charts) == sorted(ids) and len(ids) == len(set(ids))
    for section in SECTIONS:
        assert any(c.section == section for c in full.charts), section
    for div_id, traces in charts.items():
        assert traces, f"{div_id} has no traces"
        for trace in traces:
            assert points(trace) > 0, f"{div_id}: empty trace {trace.get('name')}"
    # self-contained: plotly.js inline, nothing fetched
    from plotly.offline import get_plotlyjs

    assert page.count(get_plotlyjs()) == 1
    rest = page.replace(get_plotlyjs(), "")
    assert not re.search(r"<script[^>]*\bsrc=", rest) and "cdn.plot.ly" not in rest
    assert not re.search(r"<link[^>]*\bhref=", rest)
    assert page.count("Plotly.newPlot(") == len(ids)


def test_the_page_tells_the_story_from_the_events(full):
    f = full.facts
    guarantor = f.defaults[0]
    story = " ".join(full.narrative)
    assert f"defaulted on day {guarantor.t // DAY_NS}" in story
    assert f"called for {rp.dollars(f.calls[0].amount)}" in story
    assert "before its first swap (H100-RVS-SHORT) matured on" in story
    assert rp.dollars(f.closeouts[0].shortfall) in story
    assert "The owner bore the most" in story
    page = full.html
    for table in ("table-calls", "table-waterfall", "table-borne", "table-pairs", "table-funds"):
        assert f'id="{table}"' in page
    for step in f.closeouts[0].steps:
        if step.paid:
            assert rp.dollars(step.paid) in page
    # the borrowed-time note is on every index chart
    for chart in full.charts:
        if chart.section == "index":
            assert "borrowed time" in chart.figure.layout.title.text


def test_same_log_gives_byte_identical_html(log, full, tmp_path):
    again = rp.write_report(log, tmp_path / "again.html")
    assert again.html == full.html
    assert (tmp_path / "again.html").read_text(encoding="utf-8") == full.html


def test_until_reports_the_log_as_it_was(log, full):
    default_seq = full.facts.defaults[0].seq
    before = rp.build_report(log, until=default_seq - 1)
    assert before.html != full.html
    assert not before.facts.defaults
    assert not any(c.section == "waterfall" for c in before.charts)
    assert "0 accounts defaulted" in before.narrative[0]
    assert f"up to event {default_seq - 1:,}" in before.narrative[0]
    # series stop at --until: the last index point is no later than event until's time
    t_end = before.facts.t_end
    for chart in before.charts:
        for trace in chart.figure.data:
            if trace.x is not None and len(trace.x):
                assert max(trace.x) <= t_end / DAY_NS + 1e-9, chart.div_id
    assert "Nothing of this kind in the log." in before.html  # the waterfall section


def test_account_option_draws_that_timeline(log):
    built = rp.build_report(log, account="maker")
    timelines = [c for c in built.charts if c.section == "timeline"]
    assert len(timelines) == 1 and "maker" in timelines[0].figure.layout.title.text
    with pytest.raises(ValueError, match="no account 'nobody'"):
        rp.build_report(log, account="nobody")


def test_cli_report_and_inspect_owed(log, tmp_path):
    runner = CliRunner()
    out = tmp_path / "r.html"
    result = runner.invoke(main, ["report", str(log), "-o", str(out), "--until", "3000"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "3,000 of" in result.output
    result = runner.invoke(main, ["report", str(tmp_path / "missing.db"), "-o", str(out)])
    assert result.exit_code == 1 and "no such event log" in result.output
    result = runner.invoke(main, ["report", str(log), "-o", str(out), "--until", "999999999"])
    assert result.exit_code == 1 and "outside the log" in result.output
    result = runner.invoke(main, ["report", "--help"])
    assert result.exit_code == 0 and "--until" in result.output and "--account" in result.output
    result = runner.invoke(main, ["inspect", str(log), "--owed"])
    assert result.exit_code == 0, result.output
    assert "who owes whom" in result.output
    with EventStore.open(log, mode="r") as store:
        cut = -sum(
            e.amount
            for e in store.events(kind=ev.HAIRCUT)
            if e.account == "owner" and e.counterparty == "guarantor"
        )
    assert cut > 0
    dollars = f"{cut // 100:,}.{cut % 100:02d}"
    assert re.search(rf"guarantor\s+-> owner .*haircut\s+{re.escape(dollars)}", result.output)
    assert "--owed" in runner.invoke(main, ["inspect", "--help"]).output
