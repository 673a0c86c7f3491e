"""The HTML post-mortem (exchange/postmortem/report.py) and
`gpuex report` / `gpuex inspect --owed`."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import orjson
import pytest
from click.testing import CliRunner

from exchange.cli import main
from exchange.core import events as ev
from exchange.postmortem import report as rp
from exchange.postmortem.analysis import DAY_NS
from exchange.sessions import session
from exchange.store.event_store import EventStore

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
    last = rp.xs(before.facts, [before.facts.t_end])[0]  # x axes are dates
    for chart in before.charts:
        for trace in chart.figure.data:
            if trace.x is not None and len(trace.x):
                assert max(trace.x) <= last, chart.div_id
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
    assert re.search(rf"guarantor\s+-> owner .*haircut\s+\$?{re.escape(dollars)}", result.output)
    assert "--owed" in runner.invoke(main, ["inspect", "--help"]).output


def test_the_calls_table_shows_each_raise_of_a_call(full):
    """Every CallIncreased of the log is in the calls table: its new amount and its reason."""
    f = full.facts
    raises = [r for c in f.calls for r in c.increases]
    assert raises
    table = full.html.split('id="table-calls"', 1)[1].split("</table>", 1)[0]
    for _seq, _t, amount, reason in raises:
        assert f"{rp.dollars(amount)} " in table and f"({reason})" in table


# ------------------------------------------------------------------ where a reader tripped (#19.5)
@pytest.fixture(scope="module")
def shock(tmp_path_factory):
    """The generation-shock flagship: the H100 and H200 rental indices jump down overnight, a
    leveraged perpetual long defaults (no swaps in the session)."""
    path = tmp_path_factory.mktemp("shock") / "shock.db"
    session.run("generation-shock", path)
    return rp.build_report(path)


def traces(chart: rp.Chart) -> dict[str, Any]:
    return {t.name: t for t in chart.figure.data}


def index_charts(report: rp.Report) -> dict[str, rp.Chart]:
    return {c.figure.data[0].name.removesuffix(" index"): c for c in report.charts
            if c.section == "index"}  # fmt: skip


#: After a jump, the trend level S stays within this fraction of the index (the trailing fit
#: lags the index's own wiggles by a few %; before jumps were level shifts it was 80-120 %).
JUMP_TOLERANCE = 0.10


def distance_after_jump(xs: list, index: list, trend_level: list[tuple]) -> float:
    """The largest |S - index| / index from the index's largest one-print drop on (which must
    be a drop of over 20 %: a generation shock), over the plotted points."""
    level = np.asarray(index, dtype=float)
    steps = np.diff(np.log(level))
    k = int(np.argmin(steps))
    assert steps[k] < np.log(0.8), "no generation shock in this index"
    at = dict(zip(xs, level, strict=True))
    after = [(x, s) for x, s in trend_level if x >= xs[k + 1]]
    assert len(after) > 24  # a day of hourly prints at least
    return max(abs(s - at[x]) / at[x] for x, s in after)


def test_the_trend_level_stays_near_the_index_after_a_generation_shock(shock):
    charts = index_charts(shock)
    for name in ("H100-RENTAL", "H200-RENTAL"):
        tr = traces(charts[name])
        index, trend_level = tr[f"{name} index"], tr["S (trend level)"]
        pairs = list(zip(trend_level.x, trend_level.y, strict=True))
        worst = distance_after_jump(list(index.x), list(index.y), pairs)
        assert worst <= JUMP_TOLERANCE, (name, worst)


def test_every_borrowed_time_window_drawn_has_a_length(shock, full):
    for report in (shock, full):
        for chart in report.charts:
            if chart.section != "index":
                continue
            for shape in chart.figure.layout.shapes:
                if shape.type == "rect":
                    x0, x1 = (np.datetime64(x) for x in (shape.x0, shape.x1))
                    assert x1 - x0 >= np.timedelta64(rp.MIN_BORROWED_DAYS, "D"), chart.div_id
            title = chart.figure.layout.title.text
            assert not re.search(r"day (\d+)-\1\b", title), title
            for length in re.findall(r"\(([\d.]+) days\)", title):
                assert float(length) >= rp.MIN_BORROWED_DAYS


def test_index_charts_mark_the_calls_the_defaults_and_the_generation_shocks(shock, full):
    for report in (shock, full):
        f = report.facts
        for chart in index_charts(report).values():
            tr = traces(chart)
            x0, x1 = tr[chart.figure.data[0].name].x[[0, -1]]
            calls = [rp.xs(f, [c.t])[0] for c in f.calls]
            assert list(tr["collateral call"].x) == [x for x in calls if x0 <= x <= x1]
            defaults = [rp.xs(f, [d.t])[0] for d in f.defaults]
            assert list(tr["default"].x) == [x for x in defaults if x0 <= x <= x1]
            lines = [s.x0 for s in chart.figure.layout.shapes if s.type == "line"]
            for x in [*tr["collateral call"].x, *tr["default"].x]:
                assert x in lines
    shock_day = rp.xs(shock.facts, [31 * DAY_NS])[0]  # the scenario's 2025-08-01
    for name in ("H100-RENTAL", "H200-RENTAL"):
        marked = traces(index_charts(shock)[name])["generation shock"]
        assert list(marked.x) == [shock_day] and "jump -" in marked.text[0]
    assert all("generation shock" not in traces(c) for c in index_charts(full).values())


def test_markers_given_to_the_report_are_drawn_on_every_index_chart(log):
    t = 10 * DAY_NS + 3
    built = rp.build_report(log, markers=[(t, "downgraded to BBB")])
    for chart in index_charts(built).values():
        hook = traces(chart)["event"]
        assert list(hook.x) == [rp.xs(built.facts, [t])[0]] and list(hook.text) == [
            "downgraded to BBB"
        ]


def test_axes_carry_units_and_dates(full):
    f = full.facts
    assert f.epoch is not None
    for chart in full.charts:
        layout = chart.figure.layout
        if chart.section == "index":
            name = chart.figure.data[0].name.removesuffix(" index")
            unit = "$/GPU" if "RESALE" in name else "$/GPU-hour"
            assert layout.yaxis.title.text == unit
            assert layout.annotations[1].text == f"S' ({unit} per year)"
        if chart.section == "perp":
            assert layout.yaxis.title.text == "$/GPU-hour"  # a perpetual on a rental index
        if chart.section == "rvs":
            assert layout.yaxis.title.text == "$ per contract per period"
        if chart.section != "waterfall":
            titles = [a["title"]["text"] for k, a in layout.to_plotly_json().items()
                      if k.startswith("xaxis") and a.get("title")]  # fmt: skip
            assert titles == [f"date (day 0 = {f.epoch.isoformat()})"], chart.div_id
            for trace in chart.figure.data:
                first = str(trace.x[0])
                assert first.startswith(("2024-", "2025-")), (chart.div_id, first)
    assert "level (currency units)" not in full.html


def test_the_swap_legend_sits_below_the_chart(full):
    [swaps] = [c for c in full.charts if c.section == "rvs"]
    legend = swaps.figure.layout.legend
    assert legend.orientation == "h" and legend.y < 0


def test_the_timeline_draws_calls_on_their_own_axis_from_zero(full):
    for chart in (c for c in full.charts if c.section == "timeline"):
        tr = traces(chart)
        calls = tr["collateral call (amount)"]
        assert calls.yaxis != tr["cash"].yaxis
        layout = chart.figure.layout.to_plotly_json()
        axis = layout["yaxis" + calls.yaxis[1:]]
        assert "overlaying" not in axis  # not a second axis laid over the cash axis
        low, high = axis["range"]
        assert low <= 0 < max(calls.y) <= high
        assert all(t.yaxis == calls.yaxis for n, t in tr.items() if n.startswith("call"))


def test_funding_range_clips_a_spike_at_the_cap_and_keeps_every_rate_when_there_is_none():
    rates = np.array([0.01, -0.02, 0.015, 0.0, -0.01] * 40 + [5.0])  # % per interval
    lo, hi = rp.funding_range(rates)
    assert lo < -0.02 and 0.015 < hi < 5.0
    assert rp.funding_range(rates[:-1]) is None
    assert rp.funding_range(np.array([0.0, 0.0, 0.0, 0.0])) is None


def test_a_funding_spike_is_drawn_clipped_at_the_edge_of_the_axis(shock):
    f = shock.facts
    clipped = 0
    for chart in (c for c in shock.charts if c.section == "perp"):
        tr = traces(chart)
        if "funding rate off the scale (at the edge)" not in tr:
            continue
        clipped += 1
        low, high = chart.figure.layout.yaxis2.range
        edge = tr["funding rate off the scale (at the edge)"]
        assert all(low <= y <= high for y in edge.y)
        rates = [float(s.removesuffix(" % per interval")) for s in edge.text]
        assert all(r > high or r < low for r in rates)
        assert all(f.epoch.isoformat() <= x for x in edge.x)
    assert clipped  # H200-PERP's funding hits the 5 % cap once


def test_the_narrative_states_capital_notional_and_the_deposits_behind_each_change(full, log):
    f = full.facts
    story = " ".join(full.narrative)
    g = f.accounts["guarantor"]
    assert (
        f"The guarantor started with {rp.dollars(g.start_cash + g.contribution)} at the "
        f"exchange ({rp.dollars(g.contribution)} of it in the default fund" in story
    )
    d = next(d for d in f.defaults if d.account == "guarantor")
    notional = sum(
        -q * f.instruments[n].spec["gpus_per_contract"] * f.instruments[n].floor * 100
        for n, q in d.positions.items()
        if f.instruments[n].kind == "rvs" and q < 0
    )
    assert f"sold protection on {rp.dollars(notional)} of notional" in story
    # a guarantor bot's reserve and assets outside the exchange are part of its capital
    bots = [{"account": "guarantor", "params": {"reserve": 7_000_00, "assets": 3_000_00,
                                                "haircut_ppm": 400_000}}]  # fmt: skip
    with_bot = dataclasses.replace(f, config={**f.config, "bots": bots})
    text = " ".join(rp.narrative(with_bot))
    total = g.start_cash + g.contribution + 7_000_00 + 3_000_00
    assert f"The guarantor's capital was {rp.dollars(total)}:" in text
    assert "a reserve of $7,000.00 in cash outside the exchange" in text
    assert "$3,000.00 of illiquid assets it could sell at a 40 % haircut" in text


def test_a_call_that_comes_down_is_told_with_the_deposits_that_paid_it(log, tmp_path):
    """Deposits are the only thing the narrative credits a reduction to; the spiral log's
    reductions come from marks, so a deposit is added to the income the narrative reads."""
    f = rp.build_report(log).facts
    call = next(c for c in f.calls if c.reductions)
    seq, t, due = call.reductions[0]
    income = {call.account: {"deposits": [(seq - 1, t, 1_234_56)]}}
    story = " ".join(rp.narrative(f, income))
    assert (
        f"the {call.account} deposited $1,234.56 and the call came down to {rp.dollars(due)}"
        in story
    )
    assert "deposited" not in " ".join(rp.narrative(f, {}))
    # the timeline draws the deposits after opening, cumulative, beside the cash
    income[call.account]["deposits"] = [
        (1, 0, 10_000_00),
        (seq - 2, t - 1, 5_00),
        (seq - 1, t, 7_00),
    ]
    [chart] = rp._timeline_charts(f, [call.account], income)
    drawn = traces(chart)["deposits after opening (cumulative)"]
    assert list(drawn.y) == [5.0, 12.0] and drawn.yaxis == traces(chart)["cash"].yaxis


def test_no_swap_story_for_a_defaulter_without_swaps(shock):
    f = shock.facts
    [d] = f.defaults
    assert not any(f.instruments[n].kind == "rvs" for n in d.positions)
    story = " ".join(shock.narrative)
    assert "swap" not in story.lower()
    held = {n: q for n, q in d.positions.items() if q}
    for n, q in held.items():
        assert f"{abs(q):,} lots {'long' if q > 0 else 'short'} of {n}" in story


# ---------------------------------------------------------------------- the credit cascade
@pytest.fixture(scope="module")
def cascade_log(tmp_path_factory):
    """The built-in second-derivative: the credit economy alone, six years (issue #21)."""
    db = tmp_path_factory.mktemp("cascade") / "second-derivative.db"
    session.run("second-derivative", db)
    return db


@pytest.fixture(scope="module")
def cascade(cascade_log):
    return rp.build_report(cascade_log)


def test_a_second_derivative_report_has_the_cascade_section_its_timeline_and_markers(
    cascade, cascade_log
):
    from exchange.postmortem import borrowed as bw

    credit = bw.from_log(cascade_log)
    page = cascade.html
    assert '<section id="section-cascade">' in page and 'id="table-cascade"' in page
    # the cascade comes after the narrative and before the indices
    assert page.index('id="narrative"') < page.index("section-cascade")
    assert page.index("section-cascade") < page.index("section-index")
    charts = {c.div_id: c for c in cascade.charts}
    drawn = plotted(page)
    timeline = {t["name"]: t for t in drawn["chart-cascade-timeline"]}
    for kind in (ev.ROUND_FAILED, ev.COMMITMENT_PULLED, ev.COVENANT_BREACHED):
        assert kind in timeline and points(timeline[kind]) > 0
    assert "cause → effect" in timeline  # the cause links, drawn
    failed = timeline[ev.ROUND_FAILED]
    assert set(failed["y"]) >= {"OpenAI"} and any("amount $" in t for t in failed["text"])
    # one panel per series, each with S, S', S'' and its borrowed time shaded
    for k, s in enumerate(credit.series):
        chart = charts[f"chart-cascade-{k}"]
        names = {t.name for t in chart.figure.data}
        assert {s.label, "S (trend level)", "S'", "S''"} <= names
        shaded = [sh for sh in chart.figure.layout.shapes if sh.fillcolor == rp._BORROWED]
        assert len(shaded) == 3 * len(s.windows)  # one rectangle per row: S, S', S''
        spans = {(sh.x0[:10], sh.x1[:10]) for sh in shaded}
        last = "2029-12-01"  # an open window is shaded to the last month of the log
        assert spans == {
            (w.start.isoformat(), w.end.isoformat() if w.end else last) for w in s.windows
        }
    naked = credit.series.index(credit.get("mark:OpenAI"))
    mark = {t["name"]: t for t in drawn[f"chart-cascade-{naked}"]}
    assert points(mark["S'' rolled over (borrowed time opens)"]) == len(
        credit.get("mark:OpenAI").windows
    )
    assert "S' crossed zero (borrowed time ends)" in mark
    for kind in (ev.ROUND_FAILED, ev.BORROWER_DEFAULTED):
        assert points(mark[kind]) == sum(c.kind == kind for c in credit.events)
    assert any("inside" in t or "after" in t for t in mark[ev.ROUND_FAILED]["text"])


def test_the_narrative_says_when_the_round_failed_and_the_neocloud_defaulted_in_borrowed_time(
    cascade, cascade_log
):
    from exchange.postmortem import borrowed as bw

    credit = bw.from_log(cascade_log)
    window = credit.get("mark:OpenAI").windows[0]
    trigger = next(c for c in credit.events if c.kind == ev.ROUND_FAILED)
    default = next(c for c in credit.events if c.kind == ev.BORROWER_DEFAULTED)
    n = trigger.period - window.start_period
    x = default.period - window.start_period
    line = cascade.narrative[-1]
    assert line.startswith(
        f"The naked lab's (OpenAI) round failed {n} months after its mark's S'' rolled over "
        f"({window.start.isoformat()}); {default.entity} defaulted {x} months into borrowed time"
    ), line
    assert line in cascade.html.replace("&#x27;", "'")


def test_a_report_of_a_log_without_economy_events_has_no_cascade(full):
    assert "section-cascade" not in full.html and "table-cascade" not in full.html
    assert not any(c.div_id.startswith("chart-cascade") for c in full.charts)
    assert not any("borrowed time" in p for p in full.narrative)
