"""The report in a real browser: headless Chromium (Debian's ``chromium``) loads the page with
no console errors, every chart is drawn with data, and a screenshot is kept as an artifact
(the test's tmp dir and ``test-artifacts/report.png``, gitignored).

Without Chromium the test is skipped locally, with the reason; under CI (``CI`` set) it fails:
``.ci/run`` installs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from exchange.postmortem import report as rp
from exchange.sessions import session
from tests.exchange.postmortem.test_report import JUMP_TOLERANCE, distance_after_jump

ROOT = Path(__file__).resolve().parents[3]
ARTIFACT = ROOT / "test-artifacts" / "report.png"

#: First thing in <head>: record uncaught errors and console.error calls.
HOOK = """<script>window.__gpuexErrors = [];
window.addEventListener('error', function (e) { window.__gpuexErrors.push(String(e.message)); });
(function () { var original = console.error; console.error = function () {
  window.__gpuexErrors.push(Array.prototype.join.call(arguments, ' '));
  original.apply(console, arguments); }; })();</script>"""
#: Last thing in <body>: after load, write what every plotly div holds into the DOM.
PROBE = """<script>window.addEventListener('load', function () {
  var out = {charts: [], errors: window.__gpuexErrors};
  document.querySelectorAll('div.plotly-graph-div').forEach(function (gd) {
    var traces = (gd._fullData || []).map(function (t) {
      var n = t._length || 0;
      ['x', 'y'].forEach(function (k) { if (t[k] && t[k].length > n) n = t[k].length; });
      return n; });
    var size = (gd._fullLayout || {})._size || {};
    var series = {};
    if (gd.id.indexOf('chart-index-') === 0) {
      (gd._fullData || []).forEach(function (t) {
        if (t.mode === 'lines') series[t.name] = {x: Array.from(t.x), y: Array.from(t.y)}; });
    }
    out.charts.push({id: gd.id, drawn: !!gd._fullLayout && !!gd.querySelector('svg'),
                     traces: traces, plotWidth: size.w / gd._fullLayout.width,
                     series: series});
  });
  var pre = document.createElement('pre'); pre.id = 'gpuex-check';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if found:
        return found
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail("chromium is not installed, and CI must run the browser test (.ci/run)")
    pytest.skip("chromium is not installed (apt-get install -y chromium) - browser test skipped")


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=20000",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)


@pytest.fixture(scope="module")
def page(tmp_path_factory, spiral_log):
    folder = tmp_path_factory.mktemp("browser")
    report = rp.write_report(spiral_log, folder / "report.html")
    return folder, report


def probe(binary: str, folder: Path, report: rp.Report) -> dict:
    """Load the page with the hook and the probe in Chromium; what the probe found, after
    checking no error was raised or logged."""
    page = folder / "probe.html"
    html = report.html.replace("<head>", "<head>" + HOOK, 1).replace("</body>", PROBE + "</body>")
    page.write_text(html, encoding="utf-8")
    done = run_chromium(binary, folder / "profile-dom", "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="gpuex-check">(.*?)</pre>', done.stdout, flags=re.DOTALL)
    assert found, "the probe did not run: " + done.stdout[-1000:]
    result = json.loads(
        found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    )
    assert result["errors"] == []
    uncaught = [line for line in done.stderr.splitlines() if "Uncaught" in line]
    assert uncaught == []
    return result


def test_the_report_loads_without_errors_and_every_chart_has_data(page):
    binary = chromium()
    folder, report = page
    result = probe(binary, folder, report)
    expected = [c.div_id for c in report.charts]
    assert [c["id"] for c in result["charts"]] == expected
    for chart in result["charts"]:
        assert chart["drawn"], f"{chart['id']} was not drawn"
        assert chart["traces"] and all(n > 0 for n in chart["traces"]), chart


def test_a_screenshot_is_kept_as_an_artifact(page):
    binary = chromium()
    folder, _report = page
    shot = folder / "report.png"
    done = run_chromium(
        binary,
        folder / "profile-shot",
        "--window-size=1280,7000",
        f"--screenshot={shot}",
        (folder / "report.html").as_uri(),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 50_000  # a drawn page, not a blank one
    ARTIFACT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACT)


@pytest.fixture(scope="module")
def shock_page(tmp_path_factory):
    """generation-shock: the rental indices jump down about 55 % and 45 % in one print."""
    folder = tmp_path_factory.mktemp("browser-shock")
    session.run("generation-shock", folder / "shock.db")
    return folder, rp.write_report(folder / "shock.db", folder / "report.html")


def test_in_the_browser_the_trend_follows_the_index_through_a_jump(shock_page):
    """As drawn: after each rental index's generation shock, the trend level S stays within
    ``JUMP_TOLERANCE`` of the index (test_report.py states it) at every plotted point."""
    binary = chromium()
    folder, report = shock_page
    result = probe(binary, folder, report)
    checked = 0
    for chart in result["charts"]:
        series = chart["series"]
        index = next((v for k, v in series.items() if k.endswith(" index")), None)
        if index is None or not any(k.startswith(("H100-RENTAL", "H200-RENTAL")) for k in series):
            continue
        level = series["S (trend level)"]
        trend_level = list(zip(level["x"], level["y"], strict=True))
        worst = distance_after_jump(index["x"], index["y"], trend_level)
        assert worst <= JUMP_TOLERANCE, (chart["id"], worst)
        checked += 1
    assert checked == 2


def test_in_the_browser_the_swap_chart_keeps_its_width(page):
    """The swap chart's plot area takes most of the figure: its legend is below, not beside
    it (beside, the long series labels squeezed the plot to about 45 % of the width)."""
    binary = chromium()
    folder, report = page
    result = probe(binary, folder, report)
    [swaps] = [c for c in result["charts"] if c["id"] == "chart-rvs-0"]
    # plotly's default side margins alone take about 20 % of an 800-pixel headless window
    assert swaps["plotWidth"] >= 0.7, swaps["plotWidth"]


# ---------------------------------------------------------------------- the credit cascade
#: Last thing in <body>: after load, write what the cascade's charts drew into the DOM: each
#: trace's name and drawn points (SVG marker paths), and the shaded rectangles (layout shapes).
CASCADE_PROBE = """<script>window.addEventListener('load', function () {
  var out = {section: !!document.getElementById('section-cascade'), charts: [],
             errors: window.__gpuexErrors};
  document.querySelectorAll('#section-cascade div.plotly-graph-div').forEach(function (gd) {
    var traces = {};
    gd.querySelectorAll('g.trace.scatter').forEach(function (g) {
      // the trace each SVG group draws (plotly binds its calcdata to the group)
      var name = g.__data__[0].trace.name;
      traces[name] = (traces[name] || 0) + g.querySelectorAll('path.point').length; });
    var shapes = (gd._fullLayout.shapes || []).filter(function (s) {
      return s.type === 'rect'; }).length;
    out.charts.push({id: gd.id, traces: traces, shapes: shapes,
                     shapePaths: gd.querySelectorAll('.shapelayer path').length});
  });
  var pre = document.createElement('pre'); pre.id = 'gpuex-check';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});</script>"""


@pytest.fixture(scope="module")
def cascade_page(tmp_path_factory):
    """second-derivative: the credit economy alone, six years (issue #21)."""
    folder = tmp_path_factory.mktemp("browser-cascade")
    session.run("second-derivative", folder / "cascade.db")
    return folder, rp.write_report(folder / "cascade.db", folder / "report.html")


def test_the_second_derivative_report_loads_without_errors_and_every_chart_has_data(
    cascade_page,
):
    binary = chromium()
    folder, report = cascade_page
    result = probe(binary, folder, report)
    assert [c["id"] for c in result["charts"]] == [c.div_id for c in report.charts]
    assert "chart-cascade-timeline" in [c["id"] for c in result["charts"]]
    for chart in result["charts"]:
        assert chart["drawn"], f"{chart['id']} was not drawn"
        assert chart["traces"] and all(n > 0 for n in chart["traces"]), chart


def test_in_the_browser_the_cascade_timeline_and_the_borrowed_time_markers_are_drawn(
    cascade_page,
):
    """As drawn in the DOM: the timeline's event markers (the failed round, the breach, the
    default) and its cause links; on the naked lab's mark, the borrowed-time window shaded on
    its three rows, the roll-over and zero-crossing markers, and the failed rounds marked."""
    from exchange.postmortem import borrowed as bw

    binary = chromium()
    folder, report = cascade_page
    page = folder / "cascade-probe.html"
    html = report.html.replace("<head>", "<head>" + HOOK, 1).replace(
        "</body>", CASCADE_PROBE + "</body>"
    )
    page.write_text(html, encoding="utf-8")
    done = run_chromium(binary, folder / "profile-cascade", "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="gpuex-check">(.*?)</pre>', done.stdout, flags=re.DOTALL)
    assert found, "the probe did not run: " + done.stdout[-1000:]
    result = json.loads(
        found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    )
    assert result["errors"] == [] and result["section"]
    charts = {c["id"]: c for c in result["charts"]}
    credit = bw.from_log(folder / "cascade.db")
    timeline = charts["chart-cascade-timeline"]["traces"]
    for kind in ("RoundFailed", "CovenantBreached", "BorrowerDefaulted"):
        assert timeline.get(kind, 0) == sum(c.kind == kind for c in credit.events), kind
    assert "cause → effect" in timeline
    k = [s.key for s in credit.series].index("mark:OpenAI")
    mark = charts[f"chart-cascade-{k}"]
    windows = credit.get("mark:OpenAI").windows
    assert windows and mark["shapes"] >= 3 * len(windows)
    assert mark["shapePaths"] >= 3 * len(windows)  # the shading is in the SVG
    assert mark["traces"]["S'' rolled over (borrowed time opens)"] == len(windows)
    assert mark["traces"]["S' crossed zero (borrowed time ends)"] == sum(
        w.end is not None for w in windows
    )
    assert mark["traces"]["RoundFailed"] == sum(c.kind == "RoundFailed" for c in credit.events)
