"""``gpuex report``: one self-contained HTML post-mortem of an event log.

:func:`build_report` reads a log (only its events: :mod:`exchange.postmortem.analysis` for the
facts,
the store's typed columns for the series) and returns one HTML page holding, as plotly charts
(plotly.js inlined, so the file opens offline and nothing is fetched at run time) and tables:

1. each index's level with the trend view S, S', S'' (:mod:`exchange.postmortem.trend`; generation
   shocks found in the prints and taken as level shifts), the "borrowed time" windows shaded,
   and markers of the calls, rating changes, defaults, shocks and any ``markers=`` given;
2. each perpetual's trades, marks and funding rates (a spike at the cap clipped, marked);
3. the swap series' traded premiums and model values;
4. each account's equity against its maintenance and initial margin;
5. the timeline of each focus account (every account that defaulted, or the one named): its
   cash, the premiums it received, its realised swap payouts and deposits; below, on its own
   axis, each collateral call (amount, deadline, cure); its default;
6. each close-out and its waterfall: what each step paid and who bore it (chart and table);
7. a plain-language narrative generated from the facts (:func:`narrative`), and tables of
   calls, accounts and who owes whom.

**Money boundary.** The ledger is integer cents and stays so up to the page: text amounts go
through :func:`dollars` (exact integer formatting, ``-$1,234.56``) and chart values through
:func:`chart_dollars` (``cents / 100`` as float64, for plotting only). Prices are drawn as
``ticks x tick size`` (:func:`_tick_size`), also only for plotting. No other conversion exists.

**Units and dates.** Time axes are calendar dates (:func:`xs`; session days without an
epoch); index levels and perpetual prices in $/GPU-hour (rental) or $/GPU (resale), swap
premiums in $ per contract per premium period.

**Determinism.** The same log and options give a byte-identical file: no timestamps, no random
ids (chart divs are ``chart-<section>-<n>``), series downsampled by a fixed rule
(:func:`downsample`: the last point of each of at most :data:`MAX_POINTS` equal time buckets).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from exchange.core import events as ev
from exchange.postmortem import analysis as pm
from exchange.postmortem import borrowed as bw
from exchange.postmortem.analysis import DAY_NS, PostMortem, check_until
from exchange.postmortem.trend import borrowed_time, detect_jumps, trend
from exchange.store.event_store import EventStore

#: Points per plotted series at most (see :func:`downsample`).
MAX_POINTS = 2_000
#: Bounds of the trailing trend window: a quarter of the index's span, within these.
MIN_WINDOW_DAYS, MAX_WINDOW_DAYS = 7, 90
#: A borrowed-time window shorter than this is a flicker of the estimates, not drawn.
MIN_BORROWED_DAYS = 1
#: The funding-rate axis spans the 1st..99th percentile of the rates, widened by this factor,
#: when a rate (a spike at the cap) lies outside that span by more than the span itself.
FUNDING_PERCENTILES, FUNDING_PAD = (1.0, 99.0), 0.25
#: Vertical lines drawn per marker kind at most (the markers themselves are all drawn).
MAX_MARKER_LINES = 40
#: Margin charts drawn at most (accounts with the largest peak initial margin first).
MAX_MARGIN_ACCOUNTS = 24
#: Average month, for "N months before its first swap matured".
MONTH_NS = 30.436875 * DAY_NS
_CONFIG = {"responsive": True, "displaylogo": False}
_TEMPLATE = "plotly_white"
_BORROWED = "rgba(230, 120, 30, 0.18)"

STEP_LABELS = {
    pm.STEP_BOOK: "closed on the book",
    pm.STEP_AUCTION: "auction",
    pm.STEP_OWN: "own default-fund contribution",
    pm.STEP_INSURANCE: "insurance fund",
    pm.STEP_DEFAULT_FUND: "members' default fund",
    pm.STEP_ADL: "auto-deleveraging",
    pm.STEP_HAIRCUT_ADL: "haircut (deleveraged, bankruptcy price)",
    pm.STEP_HAIRCUT_VM: "haircut (variation-margin gains)",
}


# ---------------------------------------------------------------------- the money boundary
def dollars(cents: int) -> str:
    """Integer cents as dollars, exactly: ``123456 -> "$1,234.56"``, ``-5 -> "-$0.05"``."""
    cents = int(cents)
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}${whole:,}.{part:02d}"


def chart_dollars(cents: Sequence[int] | np.ndarray) -> np.ndarray:
    """Integer cents as float64 dollars, for chart axes only."""
    return np.asarray(cents, dtype=np.int64).astype(np.float64) / 100.0


def days(t: Sequence[int] | np.ndarray) -> np.ndarray:
    """Simulated ns as float64 session days (chart x axes)."""
    return np.asarray(t, dtype=np.int64).astype(np.float64) / DAY_NS


def downsample(t: np.ndarray, n: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most ``n`` points of the time series ``t`` (non-decreasing ns): split
    ``[t0, t_last]`` into ``n`` equal buckets (integer widths) and keep the last point of each
    non-empty bucket. All points when there are at most ``n``. Deterministic."""
    size = len(t)
    if size <= n:
        return np.arange(size)
    t = np.asarray(t, dtype=np.int64)
    width = (int(t[-1]) - int(t[0])) // n + 1
    bucket = (t - t[0]) // width
    last = np.flatnonzero(np.diff(bucket) != 0)
    return np.append(last, size - 1)


# ---------------------------------------------------------------------- reading the series
@dataclass
class _Series:
    t: list[int] = field(default_factory=list)
    v: list[int] = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.t, dtype=np.int64), np.asarray(self.v, dtype=np.int64)


def _by_instrument(rows: Iterable[tuple], value: int = 7) -> dict[str, _Series]:
    """Typed rows grouped by instrument: (t, row[value]) (7 = price)."""
    out: dict[str, _Series] = {}
    for row in rows:
        s = out.get(row[3])
        if s is None:
            s = out[row[3]] = _Series()
        s.t.append(row[1])
        s.v.append(row[value])
    return out


def _tick_size(f: PostMortem, instrument: str) -> Decimal:
    """Currency units per tick of an instrument or an index: a listing's ``tick_size``; an
    index takes the ``index_tick_size`` of a swap on it or the ``tick_size`` of a perpetual on
    it (whose marks are in index ticks); 1 if the log does not say."""
    info = f.instruments.get(instrument)
    if info is not None and "tick_size" in info.spec:
        return Decimal(str(info.spec["tick_size"]))
    for other in f.instruments.values():
        spec = other.spec
        if spec.get("resale_index") == instrument and "index_tick_size" in spec:
            return Decimal(str(spec["index_tick_size"]))
        if spec.get("underlying") == instrument and "tick_size" in spec:
            return Decimal(str(spec["tick_size"]))
    return Decimal(1)


def _prices(values: np.ndarray, tick: Decimal) -> np.ndarray:
    return values.astype(np.float64) * float(tick)


def _rate(text: Any) -> float:
    try:
        return float(Fraction(str(text)))
    except (ValueError, ZeroDivisionError):
        return float("nan")


# ---------------------------------------------------------------------- figures
@dataclass
class Chart:
    """One chart of the page: its div id, section and figure."""

    div_id: str
    section: str
    figure: go.Figure


def _line(x, y, name, **kw) -> go.Scatter:
    return go.Scatter(x=x, y=y, name=name, mode=kw.pop("mode", "lines"), **kw)


def _window_ns(t: np.ndarray, window_days: int | None) -> int:
    if window_days is not None:
        return int(window_days) * DAY_NS
    span_days = (int(t[-1]) - int(t[0])) // DAY_NS if len(t) else 0
    return max(MIN_WINDOW_DAYS, min(MAX_WINDOW_DAYS, span_days // 4)) * DAY_NS


# ---------------------------------------------------------------------- dates and units
def xs(f: PostMortem, t: Sequence[int] | np.ndarray) -> np.ndarray:
    """Chart x values of simulated ns: calendar date-times (ISO strings, to the second) when the
    session has an epoch, else float64 session days."""
    t = np.asarray(t, dtype=np.int64)
    if f.epoch is None:
        return days(t)
    base = np.datetime64(f.epoch.isoformat(), "ns")
    return np.datetime_as_string(base + t.astype("timedelta64[ns]"), unit="s")


def _x1(f: PostMortem, t: int) -> Any:
    """One chart x value (see :func:`xs`)."""
    return xs(f, [t])[0].item()


def _x_title(f: PostMortem) -> str:
    if f.epoch is None:
        return "session day"
    return f"date (day 0 = {f.epoch.isoformat()})"


def _index_unit(f: PostMortem, name: str) -> str:
    """The unit of an index level: $/GPU for a resale index (a swap's ``resale_index``, or an
    index named or configured as resale), $/GPU-hour for a rental one (a perpetual's
    ``underlying``, or named or configured as rental); "$" when the log does not say."""
    for other in f.instruments.values():
        if other.spec.get("resale_index") == name:
            return "$/GPU"
    kinds = {
        str((ix.get("spec") or {}).get("kind", "")) or str(ix.get("calibration", ""))
        for ix in f.config.get("indices", []) or []
        if isinstance(ix, dict)
        and name in (ix.get("calibration"), (ix.get("spec") or {}).get("name"))
    }
    text = " ".join(kinds | {name}).upper()
    if "RESALE" in text:
        return "$/GPU"
    if "RENTAL" in text:
        return "$/GPU-hour"
    for other in f.instruments.values():
        if other.spec.get("underlying") == name:
            return "$/GPU-hour"
    return "$"


def _when_text(f: PostMortem, t: int) -> str:
    d = f.date_of(t)
    return d.isoformat() if d is not None else f"day {f.day(t)}"


# ---------------------------------------------------------------------- markers
@dataclass(frozen=True)
class Marker:
    """An event marked on the index charts: time (ns), kind (the legend group) and label."""

    t: int
    kind: str
    label: str


#: Marker kinds: line colour and dash. "event" is the hook's kind (``markers=`` of
#: :func:`build_report`: a caller's own events).
MARKER_STYLE = {
    "collateral call": ("crimson", "dot"),
    "rating change": ("#ff7f0e", "dot"),
    "default": ("crimson", "dash"),
    "generation shock": ("#6a3d9a", "dashdot"),
    "event": ("#1f77b4", "longdash"),
}


def _event_markers(f: PostMortem, extra: Sequence[tuple[int, str]]) -> list[Marker]:
    """Calls, rating changes and defaults from the facts, then the caller's ``(t, label)``
    markers."""
    out = [
        Marker(c.t, "collateral call", f"call: {c.account} {dollars(c.amount)}") for c in f.calls
    ]
    out += [
        Marker(r.t, "rating change", f"{r.account}: {r.from_rating} → {r.to_rating}")
        for r in f.ratings
    ]
    out += [Marker(d.t, "default", f"default: {d.account}") for d in f.defaults]
    out += [Marker(int(t), "event", str(label)) for t, label in extra]
    return out


def _borrowed_text(f: PostMortem, windows: list[tuple[int, int | None]]) -> str:
    if not windows:
        return "none in this log"
    parts = []
    for s, e in windows:
        if e is None:
            parts.append(f"from {_when(f, s)}, still open")
        else:
            parts.append(f"{_when_text(f, s)} to {_when_text(f, e)} ({(e - s) / DAY_NS:.1f} days)")
    return "; ".join(parts)


def _index_charts(
    f: PostMortem,
    indices: dict[str, _Series],
    window_days: int | None,
    extra: Sequence[tuple[int, str]] = (),
):
    charts = []
    events = _event_markers(f, extra)
    for k, name in enumerate(sorted(indices)):
        t, v = indices[name].arrays()
        tick = _tick_size(f, name)
        level = _prices(v, tick)
        unit = _index_unit(f, name)
        window = _window_ns(t, window_days)
        # a generation shock is a level shift: the trend takes it out (docs/report.md)
        jumps = detect_jumps(t, level)
        tr = trend(t, level, window, jumps=jumps)
        windows = borrowed_time(tr, min_ns=MIN_BORROWED_DAYS * DAY_NS)
        fig = make_subplots(
            rows=3,
            cols=1,
            shared_xaxes=True,
            vertical_spacing=0.06,
            subplot_titles=(
                f"{name}: level and trend S ({unit})",
                f"S' ({unit} per year)",
                f"S'' ({unit} per year²)",
            ),
        )
        keep = downsample(t)
        fig.add_trace(_line(xs(f, t[keep]), level[keep], f"{name} index"), row=1, col=1)
        ok = np.flatnonzero(np.isfinite(tr.S1))
        ok = ok[downsample(t[ok])] if len(ok) else ok
        if len(ok):
            x = xs(f, t[ok])
            fig.add_trace(_line(x, tr.S[ok], "S (trend level)"), row=1, col=1)
            fig.add_trace(_line(x, tr.S1[ok], "S'"), row=2, col=1)
            fig.add_trace(_line(x, tr.S2[ok], "S''"), row=3, col=1)
        for start, end in windows:
            stop = end if end is not None else int(t[-1])
            fig.add_vrect(
                x0=_x1(f, start),
                x1=_x1(f, stop),
                fillcolor=_BORROWED,
                line_width=0,
                row="all",
                col=1,
            )
        marks = [
            Marker(j.t, "generation shock", f"jump {_percent(j.log_size)} ({_when_text(f, j.t)})")
            for j in jumps
        ] + [m for m in events if int(t[0]) <= m.t <= int(t[-1])]
        for kind in MARKER_STYLE:
            mine = [m for m in marks if m.kind == kind]
            if not mine:
                continue
            _mark_events(
                fig, f, t, level, kind, [m.t for m in mine], [m.label for m in mine],
                MARKER_STYLE[kind], 9,
            )  # fmt: skip
        note = (
            f"trailing window {window // DAY_NS} days; {len(jumps)} jump"
            f"{'s' if len(jumps) != 1 else ''} taken as level shifts; borrowed time: "
            + _borrowed_text(f, windows)
        )
        fig.update_layout(
            title={"text": f"Index {name}<br><sup>{html.escape(note)}</sup>"},
            height=680,
            legend={"orientation": "h", "yanchor": "top", "y": -0.12, "x": 0},
            margin={"t": 100},
        )
        fig.update_yaxes(title_text=unit, row=1, col=1)
        fig.update_xaxes(title_text=_x_title(f), row=3, col=1)
        charts.append(Chart(f"chart-index-{k}", "index", fig))
    return charts


def _percent(log_size: float) -> str:
    if not np.isfinite(log_size):
        return ""
    return f"{(np.expm1(log_size)) * 100:+.0f} %"


def funding_range(rates: np.ndarray) -> tuple[float, float] | None:
    """The y range of a funding-rate chart, or None for plotly's own (every rate in view).

    A rate pinned at the cap for one interval would otherwise set the scale and flatten every
    other point: when some rate lies outside the 1st..99th percentile span by more than that
    span's width, the axis shows the span widened by :data:`FUNDING_PAD` on each side (and
    always 0); the rates outside are drawn at its edge as clipped markers (:func:`_perp_charts`).
    """
    r = np.asarray(rates, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size < 3:
        return None
    lo, hi = (float(x) for x in np.percentile(r, FUNDING_PERCENTILES))
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    width = hi - lo
    if width <= 0:
        return None
    if float(r.min()) >= lo - width and float(r.max()) <= hi + width:
        return None
    return lo - FUNDING_PAD * width, hi + FUNDING_PAD * width


def _perp_charts(f, fills, marks, funding):
    charts = []
    perps = [n for n, i in f.instruments.items() if i.kind in ("perp", "spot")]
    for k, name in enumerate(perps):
        kind = "Perpetual" if f.instruments[name].kind == "perp" else "Spot"
        if name not in fills and name not in marks:
            continue
        tick = _tick_size(f, name)
        spec = f.instruments[name].spec
        # a perpetual's price is its index's level (per GPU-hour for a rental index)
        unit = _index_unit(f, spec["underlying"]) if spec.get("underlying") else "$"
        fig = make_subplots(
            rows=2,
            cols=1,
            shared_xaxes=True,
            row_heights=[0.7, 0.3],
            vertical_spacing=0.08,
            subplot_titles=(f"{name}: trades and marks ({unit})", "funding rate per interval (%)"),
        )
        if name in marks:
            t, v = marks[name].arrays()
            keep = downsample(t)
            fig.add_trace(_line(xs(f, t[keep]), _prices(v[keep], tick), "mark"), row=1, col=1)
        if name in fills:
            t, v = fills[name].arrays()
            keep = downsample(t)
            fig.add_trace(
                _line(
                    xs(f, t[keep]),
                    _prices(v[keep], tick),
                    "trades",
                    mode="markers",
                    marker={"size": 4},
                ),
                row=1,
                col=1,
            )
        if funding.get(name):
            t = np.asarray([x[0] for x in funding[name]], dtype=np.int64)
            r = np.asarray([x[1] for x in funding[name]]) * 100.0
            keep = downsample(t)
            fig.add_trace(_line(xs(f, t[keep]), r[keep], "funding rate"), row=2, col=1)
            bounds = funding_range(r)
            if bounds is not None:
                lo, hi = bounds
                out = np.flatnonzero((r < lo) | (r > hi))  # every clipped rate, not downsampled
                fig.add_trace(
                    _line(
                        xs(f, t[out]),
                        np.clip(r[out], lo, hi),
                        "funding rate off the scale (at the edge)",
                        mode="markers",
                        marker={"size": 9, "symbol": "triangle-up", "color": "crimson"},
                        text=[f"{x:.4f} % per interval" for x in r[out]],
                        hoverinfo="text",
                    ),
                    row=2,
                    col=1,
                )
                fig.update_yaxes(range=[lo, hi], row=2, col=1)
        fig.update_layout(
            title=f"{kind} {name} (price per tick {tick}; {unit})",
            height=540,
            legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0},
        )
        fig.update_yaxes(title_text=unit, row=1, col=1)
        fig.update_yaxes(title_text="% per interval", row=2, col=1)
        fig.update_xaxes(title_text=_x_title(f), row=2, col=1)
        charts.append(Chart(f"chart-perp-{k}", "perp", fig))
    return charts


def _rvs_chart(f, fills, marks):
    series = [n for n, i in f.instruments.items() if i.kind == "rvs"]
    fig = go.Figure()
    for name in series:
        info = f.instruments[name]
        tick = _tick_size(f, name)
        label = name
        if info.floor is not None and info.maturity is not None:
            label = f"{name} (floor {info.floor:,}, matures {info.maturity.isoformat()})"
        if name in marks:
            t, v = marks[name].arrays()
            keep = downsample(t)
            fig.add_trace(_line(xs(f, t[keep]), _prices(v[keep], tick), f"{label}: model value"))
        if name in fills:
            t, v = fills[name].arrays()
            keep = downsample(t)
            fig.add_trace(
                _line(
                    xs(f, t[keep]),
                    _prices(v[keep], tick),
                    f"{label}: traded premium",
                    mode="markers",
                    marker={"size": 8, "symbol": "diamond"},
                )
            )
    if not fig.data:
        return []
    # the legend's long series labels go below the plot: beside it they took half the width
    fig.update_layout(
        title="Residual value swaps: traded premiums and model values "
        "($ per contract per premium period)",
        xaxis_title=_x_title(f),
        yaxis_title="$ per contract per period",
        height=520,
        legend={"orientation": "h", "yanchor": "top", "y": -0.22, "x": 0},
    )
    return [Chart("chart-rvs-0", "rvs", fig)]


def _margin_charts(f: PostMortem, margin: dict[str, list[tuple[int, int, int, int]]]):
    peak = {name: max(r[1] for r in rows) for name, rows in margin.items() if rows}
    names = sorted(peak, key=lambda n: (-peak[n], n))[:MAX_MARGIN_ACCOUNTS]
    charts = []
    for k, name in enumerate(sorted(names)):
        rows = margin[name]
        t = np.asarray([r[0] for r in rows], dtype=np.int64)
        keep = downsample(t)
        x = xs(f, t[keep])
        fig = go.Figure()
        for col, label, dash in ((3, "equity", None), (1, "initial margin", "dash"),
                                 (2, "maintenance margin", "dot")):  # fmt: skip
            y = chart_dollars([rows[i][col] for i in keep])
            fig.add_trace(_line(x, y, label, line={"dash": dash} if dash else {}, line_shape="hv"))
        calls = [c for c in f.calls if c.account == name]
        if calls:
            fig.add_trace(
                _line(
                    xs(f, [c.t for c in calls]),
                    chart_dollars([c.equity if c.equity is not None else 0 for c in calls]),
                    "collateral call",
                    mode="markers",
                    marker={"size": 11, "symbol": "x", "color": "crimson"},
                    text=[f"called {dollars(c.amount)}" for c in calls],
                )
            )
        for d in f.defaults:
            if d.account == name:
                fig.add_vline(x=_x1(f, d.t), line_color="crimson", line_dash="dash")
        fig.update_layout(
            title=f"{name}: equity against maintenance and initial margin ($)",
            xaxis_title=_x_title(f),
            yaxis_title="$",
            height=380,
        )
        charts.append(Chart(f"chart-margin-{k}", "margin", fig))
    return charts


def _cumulative(rows: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray([r[0] for r in rows], dtype=np.int64)
    v = np.cumsum(np.asarray([r[1] for r in rows], dtype=np.int64))
    return t, v


def _timeline_charts(f: PostMortem, focus: list[str], income: dict[str, dict[str, list]]):
    """Per focus account: cash and income on top, its collateral calls below, each row on its
    own $ axis from zero up (a call of $8M drawn on a second axis over a cash line that went to
    -$4M read as a call at -$4M)."""
    charts = []
    for k, name in enumerate(focus):
        fig = make_subplots(
            rows=2,
            cols=1,
            shared_xaxes=True,
            row_heights=[0.6, 0.4],
            vertical_spacing=0.1,
            subplot_titles=("cash and income ($)", "collateral calls ($): amount, due, cured"),
        )
        path = f.cash_paths.get(name, [])
        if path:
            t = np.asarray([p[1] for p in path], dtype=np.int64)
            keep = downsample(t)
            cash = chart_dollars([path[i][2] for i in keep])
            fig.add_trace(_line(xs(f, t[keep]), cash, "cash", line_shape="hv"), row=1, col=1)
        for key, label in (("premiums", "premiums received (cumulative)"),
                           ("payouts", "swap payouts realised (cumulative, net)")):  # fmt: skip
            rows = income.get(name, {}).get(key, [])
            if rows:
                t, v = _cumulative(rows)
                keep = downsample(t)
                fig.add_trace(
                    _line(xs(f, t[keep]), chart_dollars(v[keep]), label, line_shape="hv"),
                    row=1,
                    col=1,
                )
        deposits = income.get(name, {}).get("deposits", [])
        later = [(t, a) for _seq, t, a in deposits if deposits and t > deposits[0][1]]
        if later:  # what it paid in after opening: the calls came down by these
            t, v = _cumulative(later)
            fig.add_trace(
                _line(
                    xs(f, t),
                    chart_dollars(v),
                    "deposits after opening (cumulative)",
                    line_shape="hv",
                    line={"dash": "dot"},
                ),
                row=1,
                col=1,
            )
        calls = [c for c in f.calls if c.account == name]
        if calls:
            fig.add_trace(
                _line(
                    xs(f, [c.t for c in calls]),
                    chart_dollars([c.amount for c in calls]),
                    "collateral call (amount)",
                    mode="markers",
                    marker={"size": 12, "symbol": "triangle-down", "color": "crimson"},
                    text=[_call_text(f, c) for c in calls],
                    hoverinfo="text",
                ),
                row=2,
                col=1,
            )
            with_deadline = [c for c in calls if c.deadline is not None]
            if with_deadline:
                fig.add_trace(
                    _line(
                        xs(f, [c.deadline for c in with_deadline]),
                        chart_dollars([c.due for c in with_deadline]),
                        "call deadline (still due)",
                        mode="markers",
                        marker={"size": 10, "symbol": "line-ns-open", "color": "crimson"},
                    ),
                    row=2,
                    col=1,
                )
            cured = [c for c in calls if c.outcome == pm.CURED]
            if cured:
                fig.add_trace(
                    _line(
                        xs(f, [c.outcome_t for c in cured]),
                        chart_dollars([0 for _ in cured]),
                        "call cured",
                        mode="markers",
                        marker={"size": 11, "symbol": "circle-open", "color": "green"},
                    ),
                    row=2,
                    col=1,
                )
            top = max(max(c.amount, c.due) for c in calls) / 100.0
            fig.update_yaxes(range=[-0.05 * top, 1.1 * top], row=2, col=1)
        for d in f.defaults:
            if d.account == name:
                fig.add_vline(
                    x=_x1(f, d.t), line_color="crimson", line_dash="dash", row="all", col=1
                )
                fig.add_annotation(
                    x=_x1(f, d.t), y=1, yref="paper", text=f"default, {_when(f, d.t)}",
                    showarrow=False, xanchor="right", yanchor="bottom",
                    font={"color": "crimson"},
                )  # fmt: skip
        if not fig.data:
            continue
        fig.update_layout(
            title=f"Timeline of {name}: cash, income, collateral calls and default ($)",
            height=560,
            legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0},
        )
        fig.update_yaxes(title_text="$", tickformat="$,.3~s")
        fig.update_xaxes(title_text=_x_title(f), row=2, col=1)
        charts.append(Chart(f"chart-timeline-{k}", "timeline", fig))
    return charts


def _waterfall_charts(f: PostMortem):
    charts = []
    for k, co in enumerate(f.closeouts):
        paid = [s for s in co.steps if s.paid]
        moved = [s for s in co.steps if s.qty]
        if not paid and not moved and not co.shortfall:
            continue
        fig = make_subplots(
            rows=1,
            cols=2,
            column_widths=[0.6, 0.4],
            subplot_titles=("money toward the shortfall ($)", "lots taken over"),
        )
        money: dict[str, dict[str, int]] = {}  # bearer -> step label -> cents
        labels = ["shortfall"]
        for s in paid:
            label = STEP_LABELS[s.step]
            if label not in labels:
                labels.append(label)
            who = s.bearer or (s.pool or "pool").replace("_", " ")
            if s.step == pm.STEP_INSURANCE:
                who = "insurance fund"
            money.setdefault(who, {})
            money[who][label] = money[who].get(label, 0) + s.paid
        if co.uncovered:
            labels.append("left uncovered")
        fig.add_trace(
            go.Bar(
                x=["shortfall"],
                y=chart_dollars([co.shortfall]),
                name=f"{co.defaulter}'s shortfall",
                marker_color="#444",
            ),
            row=1,
            col=1,
        )
        for who in sorted(money):
            xs = list(money[who])
            fig.add_trace(
                go.Bar(x=xs, y=chart_dollars([money[who][x] for x in xs]), name=f"borne by {who}"),
                row=1,
                col=1,
            )
        if co.uncovered:
            fig.add_trace(
                go.Bar(
                    x=["left uncovered"],
                    y=chart_dollars([co.uncovered]),
                    name="uncovered",
                    marker_color="crimson",
                ),
                row=1,
                col=1,
            )
        lots: dict[str, dict[str, int]] = {}
        for s in moved:
            label = STEP_LABELS[s.step]
            lots.setdefault(s.bearer or "?", {})
            lots[s.bearer or "?"][label] = lots[s.bearer or "?"].get(label, 0) + abs(s.qty)
        for who in sorted(lots):
            xs = list(lots[who])
            fig.add_trace(
                go.Bar(x=xs, y=[lots[who][x] for x in xs], name=f"lots to {who}"),
                row=1,
                col=2,
            )
        fig.update_layout(
            barmode="stack",
            title=f"Close-out of {co.defaulter} (day {f.day(co.t)}): the waterfall",
            height=440,
        )
        fig.update_xaxes(categoryorder="array", categoryarray=labels, row=1, col=1)
        charts.append(Chart(f"chart-waterfall-{k}", "waterfall", fig))
    return charts


# ---------------------------------------------------------------------- credit cascade
#: Economy event kinds on the cascade timeline: marker symbol and colour (the month's series,
#: ``EconomyMonth``, is drawn in the series panels, not as an event).
CASCADE_STYLE = {
    ev.ROUND_PRICED: ("circle", "#2ca02c"),
    ev.ROUND_FAILED: ("x", "crimson"),
    ev.GUARANTEE_CALLED: ("diamond", "#17becf"),
    ev.COMMITMENT_PULLED: ("triangle-down", "#ff7f0e"),
    ev.BACKLOG_IMPAIRED: ("square", "#8c564b"),
    ev.COVENANT_BREACHED: ("triangle-up", "#d62728"),
    ev.SPREAD_INVERTED: ("hourglass", "#9467bd"),
    ev.BORROWER_DEFAULTED: ("x-thin-open", "black"),
    ev.CAPACITY_RELEASED: ("circle-open", "#7f7f7f"),
    ev.CAPEX_CUT: ("star", "#1f77b4"),
    ev.REFINANCING_FAILED: ("bowtie", "#e377c2"),
    ev.SPREAD_GAPPED: ("arrow-up", "#bcbd22"),
    ev.EQUITY_MARKED: ("triangle-down-open", "#393b79"),
    ev.CAPACITY_ACQUIRED: ("pentagon", "#2ca02c"),
}
#: A series' key prefix -> (chart unit, currency units per unit of the series): the same
#: single conversion as the rest of the page (cents / 100, ticks x $0.001), for plotting only.
_CASCADE_UNITS = {
    "revenue": ("$/month", 0.01),
    "mark": ("$", 0.01),
    "capex": ("$/month", 0.01),
    "rental_price": ("$/GPU-hour", 0.001),
    "index": ("$/GPU-hour", 0.001),  # the exchange's rental index, ticks of $0.001
}
_DEFAULT_STYLE = {
    ev.ROUND_FAILED: ("crimson", "dot"),
    ev.COVENANT_BREACHED: ("#d62728", "dashdot"),
    ev.BORROWER_DEFAULTED: ("black", "dash"),
    ev.DEFAULT: ("crimson", "dash"),
}


def _placement_text(p: bw.Placement) -> str:
    """``inside, 92 % elapsed`` / ``after, 3 months past its close`` / ``before, opens in 5
    months`` / ``no window`` (whole months of the economy's periods)."""
    w = p.window
    if w is None:
        return "no window"
    months = round(p.elapsed_ns / MONTH_NS)
    if p.where == "inside":
        if p.fraction_ppm is None:
            return f"inside (open), {months} months in"
        return f"inside, {months} months in ({p.fraction_ppm / 10_000:.0f} % elapsed)"
    if p.where == "after":
        past = round((p.elapsed_ns - w.length_ns) / MONTH_NS)
        return f"after, {past} months past its close"
    return f"before, {-months} months before it opens"


def _cascade_text(f: PostMortem, credit: bw.BorrowedTime) -> str:
    """The narrative's sentence on borrowed time: the naked lab's first failed round against
    its mark's S'' roll-over, the first neocloud default against the same window."""
    naked = credit.naked
    key = f"mark:{naked}"
    trigger = next(
        (c for c in credit.events if c.kind == ev.ROUND_FAILED and c.entity == naked), None
    )
    labs = set(credit.labs)
    default = next(
        (c for c in credit.events if c.kind == ev.BORROWER_DEFAULTED and c.entity not in labs),
        None,
    )
    if trigger is None:
        return f"Borrowed time: no round of the naked lab ({naked}) failed in this log."
    placed = credit.placement(trigger.seq, key)
    if placed.window is None:
        return (
            f"Borrowed time: the naked lab's ({naked}) round failed on {_when_text(f, trigger.t)};"
            " its mark shows no borrowed-time window (S'' never rolled over while S' grew)."
        )
    w = placed.window
    n = trigger.period - w.start_period
    text = (
        f"The naked lab's ({naked}) round failed {n} month{'s' if n != 1 else ''} after its "
        f"mark's S'' rolled over ({_when_text(f, w.start_ns)})"
    )
    if default is not None:
        d = credit.placement(default.seq, key)
        x = default.period - w.start_period
        if d.where == "inside":
            share = ""
            if d.fraction_ppm == 1_000_000:
                share = ", the month it ran out"
            elif d.fraction_ppm is not None:
                share = f", {d.fraction_ppm / 10_000:.0f} % of it elapsed"
            text += (
                f"; {default.entity} defaulted {x} month{'s' if x != 1 else ''} into borrowed "
                f"time ({_when_text(f, default.t)}{share})"
            )
        elif d.where == "after":
            past = default.period - w.end_period
            text += (
                f"; {default.entity} defaulted {past} month{'s' if past != 1 else ''} after "
                f"borrowed time ran out ({_when_text(f, default.t)})"
            )
        else:
            text += f"; {default.entity} defaulted before it ({_when_text(f, default.t)})"
    return text + "."


def _cascade_timeline(f: PostMortem, events: list[ev.Event]) -> Chart:
    """One row per entity, a marker per economy event (by kind), hover text with its amount
    and fields, and a line from each event to each event it follows from (its cause)."""
    entities: list[str] = []
    for e in events:
        if e.counterparty not in entities:
            entities.append(e.counterparty)
    fig = go.Figure()
    by_seq = {e.seq: e for e in events}
    link_x: list[Any] = []
    link_y: list[Any] = []
    for e in events:
        for c in (e.data or {}).get("cause", []):
            cause = by_seq.get(c)
            if cause is not None:
                link_x += [_x1(f, cause.t), _x1(f, e.t), None]
                link_y += [cause.counterparty, e.counterparty, None]
    if link_x:
        fig.add_trace(
            go.Scatter(
                x=link_x,
                y=link_y,
                mode="lines",
                name="cause → effect",
                line={"color": "rgba(120, 120, 120, 0.45)", "width": 1},
                hoverinfo="skip",
            )
        )
    for kind, (symbol, color) in CASCADE_STYLE.items():
        mine = [e for e in events if e.kind == kind]
        if not mine:
            continue
        text = []
        for e in mine:
            data = e.data or {}
            parts = [f"{kind}: {e.counterparty}", _when_text(f, e.t), f"event {e.seq}"]
            if e.amount is not None:
                parts.append(f"amount {dollars(e.amount)}")
            for k in sorted(data):
                if k in ("period", "record"):
                    continue
                parts.append(f"{k}: {data[k]}")
            text.append("<br>".join(html.escape(p) for p in parts))
        fig.add_trace(
            go.Scatter(
                x=xs(f, [e.t for e in mine]),
                y=[e.counterparty for e in mine],
                mode="markers",
                name=kind,
                marker={"symbol": symbol, "color": color, "size": 11, "line": {"width": 1}},
                text=text,
                hoverinfo="text",
            )
        )
    fig.update_layout(
        title={"text": "The cascade: every economy event, one row per entity (cause → effect)"},
        height=max(420, 180 + 34 * len(entities)),
        legend={"orientation": "h", "yanchor": "top", "y": -0.22, "x": 0},
        margin={"b": 150},
    )
    fig.update_yaxes(categoryorder="array", categoryarray=entities[::-1], type="category")
    fig.update_xaxes(title_text=_x_title(f))
    return Chart("chart-cascade-timeline", "cascade", fig)


def _cascade_series_chart(f: PostMortem, credit: bw.BorrowedTime, k: int, s: bw.Series) -> Chart:
    unit, scale = _CASCADE_UNITS[s.key.split(":")[0]]
    t = np.asarray(s.t, dtype=np.int64)
    level = np.asarray(s.values, dtype=np.int64).astype(np.float64) * scale
    S, S1, S2 = (np.asarray(a, dtype=np.float64) * scale for a in (s.S, s.S1, s.S2))
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=(
            f"{s.label}: level and trend S ({unit})",
            f"S' ({unit} per year)",
            f"S'' ({unit} per year²)",
        ),
    )
    x = xs(f, t)
    fig.add_trace(_line(x, level, s.label), row=1, col=1)
    ok = np.flatnonzero(np.isfinite(S1))
    if len(ok):
        fig.add_trace(_line(x[ok], S[ok], "S (trend level)"), row=1, col=1)
        fig.add_trace(_line(x[ok], S1[ok], "S'"), row=2, col=1)
        fig.add_trace(_line(x[ok], S2[ok], "S''"), row=3, col=1)
    index = {int(v): i for i, v in enumerate(s.t)}
    for w in s.windows:
        stop = w.end_ns if w.end_ns is not None else int(t[-1])
        fig.add_vrect(
            x0=_x1(f, w.start_ns),
            x1=_x1(f, stop),
            fillcolor=_BORROWED,
            line_width=0,
            row="all",
            col=1,
        )

    def window_marks(points, values, what, name, symbol, row):
        """Markers at the samples ``points`` of one edge of the borrowed-time windows."""
        fig.add_trace(
            _line(
                xs(f, [s.t[i] for i in points]),
                values[points],
                name,
                mode="markers",
                marker={"size": 10, "symbol": symbol, "color": "#e6781e"},
                text=[f"{what}: {_when_text(f, s.t[i])}" for i in points],
                hoverinfo="text",
            ),
            row=row,
            col=1,
        )

    if s.windows:
        starts = [index[w.start_ns] for w in s.windows]
        window_marks(
            starts, S2, "S'' rolled over", "S'' rolled over (borrowed time opens)",
            "triangle-down", 3,
        )  # fmt: skip
        ends = [index[w.end_ns] for w in s.windows if w.end_ns is not None]
        if ends:
            window_marks(
                ends, S1, "S' crossed zero", "S' crossed zero (borrowed time ends)", "x", 2
            )
    for kind, (color, dash) in _DEFAULT_STYLE.items():
        mine = [c for c in credit.events if c.kind == kind]
        if not mine:
            continue
        texts = [
            f"{kind}: {c.entity} ({_when_text(f, c.t)}); "
            + _placement_text(credit.placement(c.seq, s.key))
            for c in mine
        ]
        _mark_events(fig, f, t, level, kind, [c.t for c in mine], texts, (color, dash), 11)
    note = f"trailing window {s.window_ns // DAY_NS} days; borrowed time: " + _borrowed_text(
        f, [(w.start_ns, w.end_ns) for w in s.windows]
    )
    fig.update_layout(
        title={"text": f"{html.escape(s.label)}<br><sup>{html.escape(note)}</sup>"},
        height=680,
        legend={"orientation": "h", "yanchor": "top", "y": -0.12, "x": 0},
        margin={"t": 100},
    )
    fig.update_yaxes(title_text=unit, row=1, col=1)
    fig.update_xaxes(title_text=_x_title(f), row=3, col=1)
    return Chart(f"chart-cascade-{k}", "cascade", fig)


def _mark_events(fig, f, t, level, kind: str, times: list[int], texts: list[str], style, size):
    """Mark one kind's events on a chart of ``level`` over the sample times ``t`` (ns): a
    vertical line at each of the first :data:`MAX_MARKER_LINES` across every row, and one
    marker trace at the level at each event, so the legend names the kind and hover the event.
    ``style`` is (color, dash); ``size`` the marker's size."""
    color, dash = style
    for when in times[:MAX_MARKER_LINES]:
        fig.add_vline(
            x=_x1(f, when), line_color=color, line_dash=dash, line_width=1, row="all", col=1
        )
    at = np.clip(np.searchsorted(t, times, side="right") - 1, 0, len(t) - 1)
    fig.add_trace(
        _line(
            xs(f, times),
            level[at],
            kind,
            mode="markers",
            marker={"size": size, "symbol": "line-ns-open", "color": color},
            text=texts,
            hoverinfo="text",
        ),
        row=1,
        col=1,
    )


def _cascade_charts(f: PostMortem, credit: bw.BorrowedTime, events: list[ev.Event]):
    """The credit cascade's charts: the timeline of the economy's events, then one panel per
    series of :mod:`exchange.postmortem.borrowed` (S, S', S'', borrowed time shaded, defaults
    marked)."""
    charts = [_cascade_timeline(f, events)]
    charts += [_cascade_series_chart(f, credit, k, s) for k, s in enumerate(credit.series)]
    return charts


def _cascade_table(f: PostMortem, credit: bw.BorrowedTime) -> str:
    """Each default-like event against each series' borrowed time."""
    rows = []
    for c in credit.events:
        rows.append(
            [
                _when_text(f, c.t),
                c.kind,
                c.entity,
                dollars(c.amount) if c.amount is not None else "",
                *(_placement_text(credit.placement(c.seq, s.key)) for s in credit.series),
            ]
        )
    headers = ["date", "event", "entity", "amount", *(s.label for s in credit.series)]
    return _table(headers, rows, "table-cascade")


def _cascade_section(f: PostMortem, credit: bw.BorrowedTime, charts: list[Chart]) -> str:
    """The "Credit cascade" section of the page (only for a log with economy events)."""
    windows = "; ".join(
        f"{s.label}: {_borrowed_text(f, [(w.start_ns, w.end_ns) for w in s.windows])}"
        for s in credit.series
    )
    parts = [
        '<section id="section-cascade"><h2>Credit cascade: the economy and borrowed time</h2>',
        '<p class="meta">'
        + html.escape(
            "The credit economy's events (exchange/credit/economy.py), one row per entity, "
            "with lines from each event's causes: the round that fails, the pull-back, the "
            "breach, the "
            "loan that cannot roll and the CDS spread that gaps, the equity marks that fall, "
            "the stranded fleet bought; then each monthly series with its trend S, S', S'' and "
            "borrowed time (from the month S'' rolled over to the month S' reached zero) "
            "shaded, the failed rounds, breaches and defaults marked (the exchange's rental "
            "indices too, where the glut feeds them). Borrowed time: " + windows
        )
        + "</p>",
    ]
    for chart in charts:
        chart.figure.update_layout(template=_TEMPLATE)
        parts.append(
            '<div class="chart">'
            + pio.to_html(
                chart.figure,
                include_plotlyjs=False,
                full_html=False,
                div_id=chart.div_id,
                config=_CONFIG,
            )
            + "</div>"
        )
    parts.append("<h3>Defaults and borrowed time</h3>" + _cascade_table(f, credit))
    parts.append("</section>")
    return "\n".join(parts)


# ---------------------------------------------------------------------- narrative
def _when(f: PostMortem, t: int) -> str:
    d = f.date_of(t)
    return f"day {f.day(t)}" + (f" ({d.isoformat()})" if d is not None else "")


def _span(ns: int) -> str:
    """A duration in words: days under two months, else months."""
    if abs(ns) < 2 * MONTH_NS:
        n = round(abs(ns) / DAY_NS)
        return f"{n} day{'s' if n != 1 else ''}"
    n = round(abs(ns) / MONTH_NS)
    return f"{n} months"


def _call_text(f: PostMortem, c: pm.Call) -> str:
    text = f"{_when(f, c.t)}: called {dollars(c.amount)}"
    if c.deadline is not None:
        text += f", due {_when(f, c.deadline)}"
    for _seq, t, amount, reason in c.increases:
        text += f"; raised to {dollars(amount)} {_when(f, t)} ({reason})"
    if c.outcome == pm.CURED:
        text += f"; cured {_when(f, c.outcome_t)}"
    elif c.outcome == pm.DEFAULTED:
        text += f"; defaulted {_when(f, c.outcome_t)} owing {dollars(c.due)}"
    elif c.outcome == pm.REDUCED:
        text += f"; reduced to {dollars(c.due)}, still open"
    elif c.outcome == pm.INCREASED:
        text += f"; {dollars(c.due)} due, still open"
    else:
        text += "; still open"
    return text


def _first_maturity(f: PostMortem, d: pm.Default) -> tuple[pm.Instrument, int] | None:
    """The swap series the defaulter held that matures first, with its maturity (ns)."""
    held = [
        f.instruments[name]
        for name in d.positions
        if name in f.instruments and f.instruments[name].maturity_t is not None
    ]
    if not held:
        return None
    first = min(held, key=lambda i: (i.maturity_t, i.name))
    return first, first.maturity_t


def _capital_text(f: PostMortem, name: str) -> str:
    """The account's capital, from the events (cash at the exchange and default-fund
    contribution) and the session's stored config (a bot's ``reserve`` and ``assets`` outside
    the exchange, and the ``haircut_ppm`` its assets sell at)."""
    acct = f.accounts.get(name)
    if acct is None:
        return ""
    exchange_money = acct.start_cash + acct.contribution
    reserve = assets = 0
    haircut = None
    for bot in f.config.get("bots") or []:
        if not isinstance(bot, dict) or bot.get("account") != name:
            continue
        params = bot.get("params") or {}
        for key in ("reserve", "assets"):
            value = params.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                if key == "reserve":
                    reserve += value
                else:
                    assets += value
        if isinstance(params.get("haircut_ppm"), int):
            haircut = params["haircut_ppm"]
    at_exchange = f"{dollars(exchange_money)} at the exchange"
    if acct.contribution:
        at_exchange += (
            f" ({dollars(acct.contribution)} of it in the default fund, leaving "
            f"{dollars(acct.start_cash)} of cash)"
        )
    if not reserve and not assets:
        return f"The {name} started with {at_exchange}."
    parts = [at_exchange]
    if reserve:
        parts.append(f"a reserve of {dollars(reserve)} in cash outside the exchange")
    if assets:
        sale = f" it could sell at a {haircut / 10_000:g} % haircut" if haircut else ""
        parts.append(f"{dollars(assets)} of illiquid assets{sale}")
    total = exchange_money + reserve + assets
    return (
        f"The {name}'s capital was {dollars(total)}: "
        + ", ".join(parts[:-1])
        + f" and {parts[-1]}."
    )


def _protected(f: PostMortem, d: pm.Default) -> list[tuple[pm.Instrument, int, int, int]]:
    """The protection the defaulter had sold (short swap lots) when it defaulted:
    ``(series, lots, GPUs, notional cents)``, the notional at the floor (lots x GPUs per
    contract x floor x the index's tick size), as the engine bounds a seller's loss."""
    out = []
    for name, qty in sorted(d.positions.items()):
        info = f.instruments.get(name)
        if info is None or info.kind != "rvs" or qty >= 0 or info.floor is None:
            continue
        spec = info.spec
        gpus = abs(qty) * int(spec.get("gpus_per_contract", 1))
        per_gpu = Decimal(info.floor) * Decimal(str(spec.get("index_tick_size", "1")))
        out.append((info, abs(qty), gpus, int(per_gpu * gpus * 100)))
    return out


def _ratio(part: int, whole: int) -> str:
    return f"{Decimal(part) * 100 / Decimal(whole):.2f} %"


def _rating_text(f: PostMortem, r: pm.RatingChange) -> str:
    """``The guarantor was downgraded from A to BBB on day 30 (2024-07-01, capital ratio
    4.50 %), raising its margin by $12,345.67.``: the margin its counterparty, the clearing
    house, could then call on the rating alone (the event's ``im_change``)."""
    verb = "downgraded" if r.reason == "downgrade" else "upgraded"
    text = f"The {r.account} was {verb} from {r.from_rating} to {r.to_rating} on day {f.day(r.t)}"
    notes = [d.isoformat()] if (d := f.date_of(r.t)) is not None else []
    if r.capital_ratio_ppm is not None:
        notes.append(f"capital ratio {Decimal(r.capital_ratio_ppm) / 10_000:.2f} %")
    if notes:
        text += f" ({', '.join(notes)})"
    if r.im_change:
        way = "raising" if r.im_change > 0 else "lowering"
        text += f", {way} its margin by {dollars(abs(r.im_change))}"
    return text + "."


def _income_before(f: PostMortem, income: dict, name: str, key: str, t: int) -> int:
    return sum(v for ts, v in income.get(name, {}).get(key, []) if ts <= t)


def narrative(f: PostMortem, income: dict[str, dict[str, list]] | None = None) -> list[str]:
    """Paragraphs of plain text telling what the log shows, generated from the facts.

    Rules (docs/report.md): days count from the session epoch (day 0); amounts are exact
    dollars (:func:`dollars`); "it had $Y" is the account's equity when called (the call's
    data; cash otherwise); a default is dated against the first maturity among the swap
    series the defaulter held when it defaulted ("N months before" / "N days after"); the
    close-out is told step by step in the waterfall's order, then who bore the most.
    """
    income = income or {}
    out = []
    start = f"{f.epoch.isoformat()} (day 0)" if f.epoch else "day 0"
    end = _when(f, f.t_end)
    scope = "the whole log" if f.until == f.last_seq else f"the log up to event {f.until:,}"
    out.append(
        f"This post-mortem reads {scope} of {f.last_seq:,} events: the {f.scenario!r} "
        f"session with seed {f.seed}, from {start} to {end}. "
        f"{len(f.calls)} collateral call{'s' if len(f.calls) != 1 else ''} "
        f"{'were' if len(f.calls) != 1 else 'was'} made and "
        f"{len(f.defaults)} account{'s' if len(f.defaults) != 1 else ''} defaulted."
    )
    if not f.defaults:
        if f.ratings:
            out.append(" ".join(_rating_text(f, r) for r in f.ratings))
        if f.calls:
            out.append(
                "Collateral calls: "
                + "; ".join(f"the {c.account}, {_call_text(f, c)}" for c in f.calls)
                + ". None ended in default."
            )
        else:
            out.append("No account was called for collateral and none defaulted.")
    for d in f.defaults:
        name = d.account
        sentences = []
        capital = _capital_text(f, name)
        if capital:
            sentences.append(capital)
        protected = _protected(f, d)
        if protected:
            total = sum(cents for _s, _q, _g, cents in protected)
            sentences.append(
                f"It had sold protection on {dollars(total)} of notional (lots x GPUs per "
                "contract x floor): "
                + ", ".join(
                    f"{series.name} {qty:,} lots ({gpus:,} GPUs) {dollars(cents)}"
                    for series, qty, gpus, cents in protected
                )
                + "."
            )
        premiums = _income_before(f, income, name, "premiums", d.t)
        if premiums:
            sentences.append(
                f"Before it defaulted it had received {dollars(premiums)} in swap premiums."
            )
        deposits = income.get(name, {}).get("deposits", [])
        total_notional = sum(cents for _s, _q, _g, cents in protected)
        # its rating changes before the default, each told before the call that follows it
        ratings = [r for r in f.ratings if r.account == name and r.seq < d.seq]
        for c in (c for c in f.calls if c.account == name and c.t <= d.t):
            while ratings and ratings[0].seq < c.seq:
                sentences.append(_rating_text(f, ratings.pop(0)))
            had = c.equity if c.equity is not None else None
            text = f"On {_when(f, c.t)} the {name} was called for {dollars(c.amount)}"
            if total_notional:
                text += f" ({_ratio(c.amount, total_notional)} of the notional it protected)"
            if had is not None:
                text += f"; it had {dollars(had)} of equity"
            if c.deadline is not None:
                text += f", and until {_when(f, c.deadline)} to pay"
            sentences.append(text + ".")
            changes = sorted(
                [(seq, t, due, "") for seq, t, due in c.reductions] + list(c.increases)
            )
            last = c.seq
            for seq, t, due, reason in changes:
                if reason:  # a raise: the shortfall grew, and the call with it
                    sentences.append(
                        f"On {_when(f, t)} the call was raised to {dollars(due)} "
                        f"({reason}), with the same deadline."
                    )
                else:
                    # a call comes down when money comes in: name the deposits that did it
                    paid = sum(a for s_, _t, a in deposits if last < s_ <= seq)
                    sentences.append(
                        f"On {_when(f, t)} the {name} deposited {dollars(paid)} and the call "
                        f"came down to {dollars(due)}."
                        if paid
                        else f"By {_when(f, t)} the call had changed to {dollars(due)}."
                    )
                last = seq
            if c.outcome == pm.CURED:
                end = c.outcome_seq if c.outcome_seq is not None else last
                paid = sum(a for s_, _t, a in deposits if last < s_ <= end)
                sentences.append(
                    f"It cured the call on {_when(f, c.outcome_t)}"
                    + (f" by depositing {dollars(paid)}." if paid else ".")
                )
        sentences += [_rating_text(f, r) for r in ratings]
        text = f"It defaulted on {_when(f, d.t)}"
        if d.missed_call:
            text += f", missing a call of {dollars(d.missed_call)}"
        first = _first_maturity(f, d)
        if first is not None:
            series, maturity_t = first
            gap = _span(maturity_t - d.t)
            text += (
                f", {gap} before its first swap ({series.name}) matured on "
                f"{series.maturity.isoformat()}"
                if maturity_t > d.t
                else f", {gap} after its first swap ({series.name}) matured"
            )
        sentences.append(text + ".")
        payouts = _income_before(f, income, name, "payouts", d.t)
        held = {n: q for n, q in d.positions.items() if q}
        swaps = [n for n in held if n in f.instruments and f.instruments[n].kind == "rvs"]
        if swaps or premiums or payouts:  # the swap story, only for an account with swaps
            sentences.append(
                "Not one swap had paid out by then: the liquidity crisis came first."
                if not payouts
                else f"By then its swaps had realised {dollars(payouts)} in payouts."
            )
        if held and not swaps:
            sentences.append(
                "When it defaulted it held "
                + ", ".join(
                    f"{abs(q):,} lots {'long' if q > 0 else 'short'} of {n}"
                    for n, q in sorted(held.items())
                )
                + "."
            )
        out.append(" ".join(sentences))
        co = next((c for c in f.closeouts if c.default_seq == d.seq), None)
        if co is not None:
            out.append(_closeout_text(f, co))
        if (f.config.get("margin") or {}).get("clearing") == "bilateral":
            out.append(
                "Its swaps were bilateral, with no clearing house behind them: each contract "
                "with it was terminated at the mark, each buyer kept the collateral posted to "
                "it, recovered part of the rest from the estate and bought its protection "
                "again from a dealer at a spread (`gpuex compare` against the cleared world "
                "shows the figures)."
            )
    if f.defaults:
        losses = f.losses()
        if losses:
            worst = max(sorted(losses), key=lambda n: losses[n])
            out.append(
                "Losses to others' defaults: "
                + ", ".join(f"{n} {dollars(v)}" for n, v in sorted(losses.items()))
                + f". The {worst} bore the most: {dollars(losses[worst])}."
            )
        else:
            out.append("No other account lost money to the defaults.")
    return out


def _closeout_text(f: PostMortem, co: pm.CloseOut) -> str:
    lots = co.lots_by_step()
    moved = []
    for step in (pm.STEP_BOOK, pm.STEP_AUCTION, pm.STEP_ADL):
        if lots.get(step):
            takers = sorted({s.bearer for s in co.steps if s.step == step and s.bearer})
            what = {
                pm.STEP_BOOK: "closed on the book",
                pm.STEP_AUCTION: "auctioned",
                pm.STEP_ADL: "deleveraged",
            }[step]
            moved.append(f"{lots[step]:,} lots {what} (to {', '.join(takers)})")
    parts = [f"Its positions were taken over: {'; '.join(moved)}." if moved else ""]
    if co.shortfall:
        paid = []
        for step in pm.STEPS:
            steps = [s for s in co.steps if s.step == step and s.paid]
            if not steps:
                continue
            total = sum(s.paid for s in steps)
            bearers = sorted({s.bearer for s in steps if s.bearer and s.step != pm.STEP_OWN})
            who = f" ({', '.join(bearers)})" if bearers else ""
            paid.append(f"{STEP_LABELS[step]}{who} {dollars(total)}")
        text = f"Its shortfall of {dollars(co.shortfall)} was covered by " + (
            ", then ".join(paid) if paid else "nothing"
        )
        if co.uncovered:
            text += f"; {dollars(co.uncovered)} was left uncovered"
        parts.append(text + ".")
    else:
        parts.append("Its cash covered the close-out: no fund was drawn.")
    return " ".join(p for p in parts if p)


# ---------------------------------------------------------------------- tables
def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _tables(f: PostMortem) -> dict[str, str]:
    out = {}
    out["calls"] = _table(
        [
            "account",
            "seq",
            "called on",
            "amount",
            "raised",
            "deadline",
            "equity then",
            "outcome",
            "due",
        ],
        (
            (
                c.account,
                c.seq,
                _when(f, c.t),
                dollars(c.amount),
                "; ".join(
                    f"{dollars(amount)} {_when(f, t)} ({reason})"
                    for _seq, t, amount, reason in c.increases
                ),
                _when(f, c.deadline) if c.deadline is not None else "",
                dollars(c.equity) if c.equity is not None else "",
                c.outcome + (f" ({_when(f, c.outcome_t)})" if c.outcome_t is not None else ""),
                dollars(c.due),
            )
            for c in f.calls
        ),
        "table-calls",
    )
    steps = []
    for co in f.closeouts:
        for s in co.steps:
            steps.append(
                (
                    co.defaulter,
                    s.seq,
                    STEP_LABELS[s.step],
                    dollars(s.paid) if s.paid else "",
                    s.bearer or (s.pool or "").replace("_", " "),
                    s.instrument or "",
                    f"{s.qty:+,}" if s.qty else "",
                    s.price if s.price is not None else "",
                )
            )
    out["waterfall"] = _table(
        ["defaulter", "seq", "step", "paid", "borne by / taken by", "instrument", "lots", "price"],
        steps,
        "table-waterfall",
    )
    out["closeouts"] = _table(
        ["defaulter", "day", "shortfall", "covered", "uncovered"],
        (
            (
                c.defaulter,
                f.day(c.t),
                dollars(c.shortfall),
                dollars(c.covered),
                dollars(c.uncovered),
            )
            for c in f.closeouts
        ),
        "table-closeouts",
    )
    out["borne"] = _table(
        ["defaulter", "counterparty", "default fund lost", "haircut", "total borne", "lots taken"],
        (
            (
                b.defaulter,
                b.counterparty,
                dollars(b.default_fund),
                dollars(b.haircut),
                dollars(b.total),
                f"{b.lots_taken:,}",
            )
            for b in f.who_owes_whom.borne
        ),
        "table-borne",
    )
    out["pairs"] = _table(
        ["instrument", "long", "short", "lots"],
        ((p.instrument, p.long, p.short, f"{p.qty:,}") for p in f.who_owes_whom.positions),
        "table-pairs",
    )
    out["accounts"] = _table(
        [
            "account",
            "start cash",
            "final cash",
            "premiums received",
            "premiums paid",
            "payouts received",
            "payouts paid",
            "variation margin",
            "calls",
            "defaulted",
            "lost to defaults",
        ],
        (
            (
                a.name,
                dollars(a.start_cash),
                dollars(a.final_cash),
                dollars(a.premiums_received),
                dollars(a.premiums_paid),
                dollars(a.payouts_received),
                dollars(a.payouts_paid),
                dollars(a.variation_margin),
                a.calls,
                "yes" if a.defaulted else "",
                dollars(a.lost),
            )
            for a in f.accounts.values()
        ),
        "table-accounts",
    )
    fu = f.funds
    out["funds"] = _table(
        ["resource", "used"],
        [
            ("defaulters' own default-fund contributions", dollars(fu.own_contributions)),
            ("insurance fund", dollars(fu.insurance)),
            ("members' default fund", dollars(fu.default_fund)),
            ("haircuts (deleveraged)", dollars(fu.haircut_adl)),
            ("haircuts (variation-margin gains)", dollars(fu.haircut_vm_gains)),
            ("lots auto-deleveraged", f"{fu.adl_lots:,}"),
            ("lots auctioned", f"{fu.auction_lots:,}"),
            ("lots closed on the book", f"{fu.book_lots:,}"),
        ],
        "table-funds",
    )
    return out


# ---------------------------------------------------------------------- the page
@dataclass
class Report:
    """A built report: the page, its charts and narrative, and the facts behind them."""

    html: str
    charts: list[Chart]
    narrative: list[str]
    facts: PostMortem


def _focus(store: EventStore, until: int, account: str | None) -> list[str]:
    if account is not None:
        return [account]
    names: list[str] = []
    for row in store.rows(1, until, kind=ev.DEFAULT):
        if row[4] not in names:
            names.append(row[4])
    return names


def build_report(
    db: str | Path | EventStore,
    until: int | None = None,
    *,
    account: str | None = None,
    window_days: int | None = None,
    checked: bool = True,
    markers: Sequence[tuple[int, str]] = (),
) -> Report:
    """The report of the log ``db`` as of just after event ``until`` (None: all of it).

    ``checked``: as :func:`exchange.postmortem.analysis.facts`.
    ``markers``: more events to mark on every index chart, as ``(t ns, label)``, beside the
    calls, defaults and generation shocks the report finds itself (the hook for rating
    changes, issue #19 point 2).

    ``account``: the account whose timeline to draw (default: every account that defaulted).
    ``window_days``: the trend's trailing window (default: a quarter of each index's span,
    within 7..90 days).

    Raises:
        FileNotFoundError, exchange.store.event_store.StoreError: as
        :func:`exchange.postmortem.analysis.facts`.
        ValueError: ``until`` outside the log, an unknown ``account``, a bad window.
    """
    if isinstance(db, EventStore):
        return _build(db, until, account, window_days, markers)
    with EventStore.open(db, mode="r", checked=checked) as store:
        return _build(store, until, account, window_days, markers)


def _build(store: EventStore, until, account, window_days, markers=()) -> Report:
    until = check_until(store, until)
    if window_days is not None and window_days < 1:
        raise pm.BadRequest(f"the trend window must be at least 1 day, not {window_days}")
    focus = _focus(store, until, account)
    f = pm.facts(store, until, track_cash=focus)
    if account is not None and account not in f.accounts:
        known = ", ".join(f.accounts) or "none"
        raise pm.BadRequest(f"no account {account!r} in this log (accounts: {known})")
    indices = _by_instrument(store.rows(1, until, kind=ev.INDEX_PUBLISHED))
    marks = _by_instrument(store.rows(1, until, kind=ev.MARK_PRICE))
    fills = _by_instrument(store.rows(1, until, kind=ev.FILL))
    funding: dict[str, list[tuple[int, float]]] = {}
    for e in store.events(1, until, kind=ev.FUNDING_RATE):
        funding.setdefault(e.instrument, []).append((e.t, _rate((e.data or {}).get("rate"))))
    margin: dict[str, list[tuple[int, int, int, int]]] = {}
    for e in store.events(1, until, kind=ev.MARGIN_REQUIREMENT):
        data = e.data or {}
        margin.setdefault(e.account, []).append(
            (e.t, e.amount or 0, int(data.get("mm", 0)), int(data.get("equity", 0)))
        )
    income: dict[str, dict[str, list]] = {}
    if focus:
        kinds = (ev.PREMIUM_PAID, ev.SWAP_SETTLED, ev.DEPOSIT)
        for row in store.rows(1, until, kind=kinds, account=focus):
            mine = income.setdefault(row[4], {"premiums": [], "payouts": [], "deposits": []})
            if row[2] == ev.PREMIUM_PAID:
                if row[9] > 0:
                    mine["premiums"].append((row[1], row[9]))
            elif row[2] == ev.DEPOSIT:
                mine["deposits"].append((row[0], row[1], row[9]))  # (seq, t, amount)
            else:
                mine["payouts"].append((row[1], row[9]))
    charts = (
        _index_charts(f, indices, window_days, markers)
        + _perp_charts(f, fills, marks, funding)
        + _rvs_chart(f, fills, marks)
        + _margin_charts(f, margin)
        + _timeline_charts(f, focus, income)
        + _waterfall_charts(f)
    )
    story = narrative(f, income)
    # the credit cascade (issue #21): only a log with the economy's events has it
    rental = bw.rental_indices(store)  # the exchange's rental indices the glut feeds
    credit = bw.analyse(store.events(1, until, kind=bw.read_kinds(rental)), f.epoch, rental)
    cascade = ""
    if credit is not None:
        records = [
            e for e in store.events(1, until, kind=ev.ECONOMY_KINDS) if e.kind != ev.ECONOMY_MONTH
        ]
        drawn = _cascade_charts(f, credit, records)
        story.append(_cascade_text(f, credit))
        cascade = _cascade_section(f, credit, drawn)
        charts = drawn + charts
    page = _page(store, f, charts, story, focus, cascade)
    return Report(page, charts, story, f)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
.meta { color: #666; } .narrative p { font-size: 1.05em; line-height: 1.5; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.chart { margin: 1em 0; } .none { color: #888; font-style: italic; }
"""

_SECTIONS = (
    ("index", "Indices: level, S, S' and S'' (borrowed time shaded)"),
    ("perp", "Perpetuals (and spot): trades, marks and funding"),
    ("rvs", "Residual value swaps: premiums and model values"),
    ("margin", "Equity against maintenance and initial margin"),
    ("timeline", "Timeline of the accounts that failed"),
    ("waterfall", "Close-out and waterfall"),
)


def page_head(title: str) -> list[str]:
    """The opening of a self-contained page (the report's and ``gpuex compare``'s): doctype,
    title, the style sheet, plotly inlined, and the title as its heading."""
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]


def _page(
    store: EventStore,
    f: PostMortem,
    charts: list[Chart],
    story: list[str],
    focus: list[str],
    cascade: str = "",
) -> str:
    title = f"gpuex post-mortem: {f.scenario} (seed {f.seed})"
    parts = [
        *page_head(title),
        '<p class="meta">'
        + html.escape(
            f"log {Path(f.path).name}, {f.last_seq:,} events, digest {store.digest()[:16]}; "
            f"as of event {f.until:,} ({_when(f, f.t_end)}). Money in dollars, exact to the "
            "cent; days count from the session epoch (day 0); charts are dated. Units: index "
            "levels and perpetual prices in $/GPU-hour (rental) or $/GPU (resale), swap "
            "premiums in $ per contract per premium period."
        )
        + "</p>",
        '<section class="narrative" id="narrative"><h2>What happened</h2>',
        *(f"<p>{html.escape(p)}</p>" for p in story),
        "</section>",
    ]
    if cascade:  # the credit cascade, drawn before the indices
        parts.append(cascade)
    tables = _tables(f)
    by_section: dict[str, list[Chart]] = {}
    for chart in charts:
        by_section.setdefault(chart.section, []).append(chart)
    for section, heading in _SECTIONS:
        parts.append(f'<section id="section-{section}"><h2>{html.escape(heading)}</h2>')
        if section == "timeline" and focus:
            parts.append(f'<p class="meta">accounts: {html.escape(", ".join(focus))}</p>')
        drawn = by_section.get(section, [])
        if not drawn:
            parts.append('<p class="none">Nothing of this kind in the log.</p>')
        for chart in drawn:
            chart.figure.update_layout(template=_TEMPLATE)
            parts.append(
                '<div class="chart">'
                + pio.to_html(
                    chart.figure,
                    include_plotlyjs=False,
                    full_html=False,
                    div_id=chart.div_id,
                    config=_CONFIG,
                )
                + "</div>"
            )
        if section == "timeline":
            parts.append("<h3>Collateral calls</h3>" + tables["calls"])
        if section == "waterfall":
            parts.append("<h3>Close-outs</h3>" + tables["closeouts"])
            parts.append("<h3>Waterfall steps</h3>" + tables["waterfall"])
            parts.append("<h3>Funds used</h3>" + tables["funds"])
        parts.append("</section>")
    parts += [
        '<section id="section-owed"><h2>Who owes whom</h2>',
        "<h3>What each counterparty bore for each defaulter</h3>",
        tables["borne"],
        "<h3>Open positions by pair of accounts (lots)</h3>",
        '<p class="meta">From fills (taker and maker) and close-out hand-overs (the receiver '
        "steps into the defaulter's positions); the exchange is the legal counterparty of "
        "every trade, so this is attribution, not a claim.</p>",
        tables["pairs"],
        "</section>",
        '<section id="section-accounts"><h2>Accounts</h2>',
        tables["accounts"],
        "</section>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_report(
    db: str | Path,
    out: str | Path,
    until: int | None = None,
    *,
    account: str | None = None,
    window_days: int | None = None,
    checked: bool = True,
    markers: Sequence[tuple[int, str]] = (),
) -> Report:
    """Build the report of ``db`` and write it to ``out`` (UTF-8); returns the report
    (``checked``, ``markers``: as :func:`build_report`).

    The page is written to a temporary file beside ``out`` and renamed into place once
    complete: a write that fails (a full disk, a read-only directory) raises ``OSError`` and
    leaves no partial or empty file, and an existing ``out`` as it was."""
    report = build_report(
        db, until, account=account, window_days=window_days, checked=checked, markers=markers
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f".{out.name}.part")
    try:
        with open(part, "w", encoding="utf-8") as page:
            page.write(report.html)
        part.replace(out)
    finally:
        part.unlink(missing_ok=True)
    return report
