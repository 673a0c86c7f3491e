"""``gpuex compare A B``: where the same default's loss lands in two worlds.

:func:`compare` reads two event logs -- two seeds, two capitals, cleared against bilateral --
and returns a :class:`Comparison`: for each log (a :class:`World`) its scenario, seed,
clearing, defaults (who, when, the call missed), and per account its cash at the start and at
the end, its net P&L and what it lost to other accounts' defaults, split by where the loss
landed, with when it landed; the pools each world used; then the differences B - A per account
and per pool. :func:`table` renders it for the terminal, :func:`html_page` as one
self-contained page (the report's styling, plotly inlined: it opens offline).

**Where a loss lands** (per account, minor units, > 0 is a loss; docs/compare.md):

* ``default_fund``: its default-fund contribution lost to another member's default
  (``DefaultFundLoss``) -- cleared world;
* ``haircut``: cash haircut to cover another account's default (``Haircut``) -- cleared world;
* ``unsecured``: a bilateral buyer's claim left after collateral and recovery, ``V - C - R``
  (``ProtectionTerminated`` V, ``CollateralApplied`` C, ``RecoveryPaid`` R; a counterparty
  that owed the defaulter, V < 0, pays it, ``TerminationPaid``, and loses nothing);
* ``rehedge``: what re-hedging cost a bilateral buyer over the value it replaced,
  ``V x (1 + s) - V`` (``Rehedged``: paid, and the value V in its data).

A bilateral buyer's loss is the last two together: ``V x (1 + s) - C - R``. A cleared member's
loss is its default-fund share plus its haircuts
(:attr:`exchange.postmortem.analysis.AccountFacts.lost`).

**Reading.** The cleared facts (cash, defaults, close-outs, funds) are the post-mortem's
(:func:`exchange.postmortem.analysis.facts`, reused, not re-derived); :func:`analyse` adds, from the
log's
few events of :data:`KINDS` (openings, external money, default-fund contributions and the
bilateral kinds), the bilateral claims, the external money after the start and the collateral
still posted. :func:`analyse` is a pure function of the facts and an iterable of events:
:func:`read_world` feeds it a log.

Units: money in minor units (cents), ``int``; shown in dollars
(:func:`exchange.postmortem.report.dollars`).
Times: ``t`` in simulated ns, ``day = t // DAY_NS``, and the calendar date when the log has an
epoch. Deterministic: accounts and pools in a fixed order, no clock.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from exchange.core import events as ev
from exchange.postmortem import analysis as pm
from exchange.postmortem.analysis import PostMortem
from exchange.postmortem.report import _CONFIG, _TEMPLATE, _table, chart_dollars, dollars, page_head
from exchange.store.event_store import EventStore

# The bilateral kinds (exchange/risk/bilateral.py emits them; fields in exchange/core/events.py).
COLLATERAL_POSTED = ev.COLLATERAL_POSTED
PROTECTION_TERMINATED = ev.PROTECTION_TERMINATED
COLLATERAL_APPLIED = ev.COLLATERAL_APPLIED
TERMINATION_PAID = ev.TERMINATION_PAID
RECOVERY_PAID = ev.RECOVERY_PAID
REHEDGED = ev.REHEDGED

#: The kinds :func:`analyse` reads beside the post-mortem's facts (all of them rare in a log).
KINDS = (
    ev.ACCOUNT_OPENED,
    ev.DEPOSIT,
    ev.WITHDRAWAL,
    ev.FUND_CONTRIBUTION,
    COLLATERAL_POSTED,
    PROTECTION_TERMINATED,
    COLLATERAL_APPLIED,
    TERMINATION_PAID,
    RECOVERY_PAID,
    REHEDGED,
)

#: Where a loss lands: field name and label, in the order the tables show them.
DEFAULT_FUND, HAIRCUT, UNSECURED, REHEDGE = "default_fund", "haircut", "unsecured", "rehedge"
WHERE = (
    (DEFAULT_FUND, "default fund"),
    (HAIRCUT, "haircut"),
    (UNSECURED, "unsecured"),
    (REHEDGE, "re-hedge"),
)

#: The pools a world may use: key and label, in the tables' order.
POOLS = (
    ("own_contributions", "defaulters' own default-fund contributions"),
    ("insurance", "insurance fund"),
    ("default_fund", "members' default fund"),
    ("haircuts", "haircuts"),
    ("collateral_applied", "collateral applied (bilateral)"),
    ("recoveries", "recoveries from the defaulter's estate"),
    ("rehedge_payments", "re-hedge payments to dealers"),
    ("uncovered", "left uncovered (close-out)"),
)

#: The per-account fields whose B - A :class:`Comparison` gives.
DIFF_FIELDS = (
    "start_cash",
    "final_cash",
    "external",
    "pnl",
    DEFAULT_FUND,
    HAIRCUT,
    UNSECURED,
    REHEDGE,
    "loss",
)

DASH = "—"


# ---------------------------------------------------------------------- the model
@dataclass(frozen=True)
class When:
    """A moment of a log: the event's ``seq``, ``t`` (ns), session ``day`` and ISO ``date``
    (None when the log has no epoch)."""

    seq: int
    t: int
    day: int
    date: str | None

    def text(self) -> str:
        """``day 4 (2024-06-05)``, or ``day 4`` without an epoch."""
        return f"day {self.day}" + (f" ({self.date})" if self.date else "")


@dataclass
class DefaultRow:
    """One default: who, when, the call it missed (minor units) and the reason."""

    account: str
    when: When
    missed_call: int
    reason: str


@dataclass
class Landing:
    """One piece of a default's loss landing on an account: ``where`` (one of :data:`WHERE`),
    ``amount`` (minor units, > 0 a loss; an over-collateralised buyer's ``unsecured`` can be
    < 0), ``defaulter`` whose default it comes from, and ``when``."""

    account: str
    defaulter: str
    where: str
    amount: int
    when: When


@dataclass
class Claim:
    """A bilateral buyer's claim on a defaulter (one CSA per pair), minor units.

    Attributes:
        value: V, the protection terminated at the mark (sum of ``ProtectionTerminated``).
        collateral: C, the collateral applied to it (``CollateralApplied``).
        recovery: R, what its unsecured claim recovered (``RecoveryPaid``).
        termination_paid: what it paid the defaulter, owing it on net (``-TerminationPaid``;
            V < 0 then).
        rehedge_paid: what it paid the replacement dealers (``-Rehedged.amount``), V x (1 + s).
        rehedged_value: the value it replaced (``Rehedged`` data ``value``; else the V of that
            instrument's termination).
        unsecured: V + termination_paid - C - R; rehedge: rehedge_paid - rehedged_value;
            loss: the two together, V x (1 + s) - C - R once fully re-hedged.
        when: its first termination.
    """

    buyer: str
    defaulter: str
    when: When
    value: int = 0
    collateral: int = 0
    recovery: int = 0
    termination_paid: int = 0
    rehedge_paid: int = 0
    rehedged_value: int = 0
    rehedged_when: When | None = None
    unsecured: int = 0
    rehedge: int = 0
    loss: int = 0


@dataclass
class AccountRow:
    """One account in one world, minor units.

    Attributes:
        start_cash, final_cash: its cash once opened and at the end of the log (post-mortem).
        external: money deposited less withdrawn after the start (capital, not P&L).
        contribution_start, contribution_left: its default-fund contribution once opened, and
            what is left of it at the end.
        collateral_out: collateral it posted that is still in the pool at the end (bilateral).
        pnl: net P&L, ``(final_cash + contribution_left + collateral_out) - (start_cash +
            contribution_start) - external`` (cash basis: an uncleared contract's value at
            the end is not in it).
        default_fund, haircut, unsecured, rehedge: what it lost to other accounts' defaults,
            by where it landed; loss: their sum.
        first_landed, last_landed: when the first and the last of it landed (None: no loss).
        defaulted: whether it defaulted itself.
    """

    name: str
    start_cash: int
    final_cash: int
    external: int
    contribution_start: int
    contribution_left: int
    collateral_out: int
    pnl: int
    default_fund: int = 0
    haircut: int = 0
    unsecured: int = 0
    rehedge: int = 0
    loss: int = 0
    first_landed: When | None = None
    last_landed: When | None = None
    defaulted: bool = False


@dataclass
class World:
    """One log, analysed.

    Attributes:
        path, scenario, seed, events (its last seq); clearing: the swaps' clearing
            (``config["margin"]["clearing"]``, ``cleared`` when absent).
        epoch: the date of day 0 (ISO, None if unknown); end: the last event read.
        defaults: in order; accounts: by name; landings: every piece of loss, in time order;
        claims: the bilateral claims, by buyer then defaulter; pools: :data:`POOLS`' amounts.
    """

    path: str
    scenario: str
    seed: int
    clearing: str
    events: int
    epoch: str | None
    end: When
    defaults: list[DefaultRow]
    accounts: dict[str, AccountRow]
    landings: list[Landing]
    claims: list[Claim]
    pools: dict[str, int]

    def label(self) -> str:
        """``products, seed 2, cleared``."""
        return f"{self.scenario}, seed {self.seed}, {self.clearing}"

    def title(self) -> str:
        """``a.db (products, seed 2, cleared)``: two logs of one scenario and seed differ by
        their file names."""
        return f"{Path(self.path).name} ({self.label()})"


@dataclass
class Comparison:
    """Two worlds and their differences.

    Attributes:
        a, b: the worlds.
        accounts: every account of either, sorted.
        differences: per account, B - A of each of :data:`DIFF_FIELDS`; None for an account in
            one log only (shown as a dash).
        pool_differences: per pool, B - A.
    """

    a: World
    b: World
    accounts: list[str]
    differences: dict[str, dict[str, int] | None]
    pool_differences: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """The comparison as JSON (money in minor units, times in ns, days and ISO dates)."""
        return orjson.dumps(dataclasses.asdict(self), option=orjson.OPT_INDENT_2)


# ---------------------------------------------------------------------- the analysis
def analyse(facts: PostMortem, events: Iterable[ev.Event]) -> World:
    """One world from a log's post-mortem ``facts`` and its events of :data:`KINDS` in seq
    order (other kinds are ignored). Pure: reads nothing else."""

    def when(seq: int, t: int) -> When:
        d = facts.date_of(t)
        return When(seq, t, facts.day(t), d.isoformat() if d is not None else None)

    opened: dict[str, int] = {}
    external: dict[str, int] = {}
    contribution_start: dict[str, int] = {}
    posted: dict[str, int] = {}  # poster -> its collateral in the pool
    claims: dict[tuple[str, str], Claim] = {}
    terminated: dict[tuple[str, str], tuple[str, int]] = {}  # (buyer, instrument) -> (dfr, V)
    last_defaulter: dict[str, str] = {}  # buyer -> the defaulter of its last termination
    applied = recovered = rehedge_paid = 0

    def claim(buyer: str, defaulter: str, seq: int, t: int) -> Claim:
        key = (buyer, defaulter)
        if key not in claims:
            claims[key] = Claim(buyer, defaulter, when(seq, t))
        return claims[key]

    for e in events:
        kind, name, amount = e.kind, e.account or "", e.amount or 0
        if kind == ev.ACCOUNT_OPENED:
            opened.setdefault(name, e.t)
        elif kind in (ev.DEPOSIT, ev.WITHDRAWAL):
            if name in opened and e.t > opened[name]:  # at the opening: the start capital
                external[name] = external.get(name, 0) + amount
        elif kind == ev.FUND_CONTRIBUTION:
            if e.t <= opened.get(name, e.t):
                contribution_start[name] = contribution_start.get(name, 0) - amount
        elif kind == COLLATERAL_POSTED:
            posted[name] = posted.get(name, 0) + amount
        elif kind == PROTECTION_TERMINATED:
            defaulter = e.counterparty or ""
            claim(name, defaulter, e.seq, e.t).value += amount
            terminated[(name, e.instrument or "")] = (defaulter, amount)
            last_defaulter[name] = defaulter
        elif kind == COLLATERAL_APPLIED:
            defaulter = e.counterparty or ""
            claim(name, defaulter, e.seq, e.t).collateral += amount
            posted[defaulter] = posted.get(defaulter, 0) - amount
            applied += amount
        elif kind == TERMINATION_PAID:
            claim(name, e.counterparty or "", e.seq, e.t).termination_paid -= amount
        elif kind == RECOVERY_PAID:
            claim(name, e.counterparty or "", e.seq, e.t).recovery += amount
            recovered += amount
        elif kind == REHEDGED:
            # the dealer is the counterparty: the claim is the buyer's termination's
            defaulter, value = terminated.get(
                (name, e.instrument or ""), (last_defaulter.get(name, ""), 0)
            )
            stated = (e.data or {}).get("value")
            c = claim(name, defaulter, e.seq, e.t)
            c.rehedge_paid -= amount
            c.rehedged_value += stated if isinstance(stated, int) else value
            if c.rehedged_when is None:
                c.rehedged_when = when(e.seq, e.t)
            rehedge_paid -= amount

    landings: list[Landing] = []
    for co in facts.closeouts:
        for s in co.steps:
            if not s.paid or s.bearer is None:
                continue
            if s.step == pm.STEP_DEFAULT_FUND:
                where = DEFAULT_FUND
            elif s.step in (pm.STEP_HAIRCUT_ADL, pm.STEP_HAIRCUT_VM):
                where = HAIRCUT
            else:  # the defaulter's own contribution, the insurance fund: not a member's loss
                continue
            landings.append(Landing(s.bearer, co.defaulter, where, s.paid, when(s.seq, s.t)))
    ordered = [claims[k] for k in sorted(claims)]
    for c in ordered:
        c.unsecured = c.value + c.termination_paid - c.collateral - c.recovery
        c.rehedge = c.rehedge_paid - c.rehedged_value
        c.loss = c.unsecured + c.rehedge
        if c.unsecured:
            landings.append(Landing(c.buyer, c.defaulter, UNSECURED, c.unsecured, c.when))
        if c.rehedge:
            at = c.rehedged_when or c.when
            landings.append(Landing(c.buyer, c.defaulter, REHEDGE, c.rehedge, at))
    landings.sort(key=lambda x: (x.when.seq, x.account, x.where))

    accounts: dict[str, AccountRow] = {}
    names = sorted(set(facts.accounts) | {c.buyer for c in ordered})
    for name in names:
        f = facts.accounts.get(name) or pm.AccountFacts(name)
        start = contribution_start.get(name, 0)
        out = posted.get(name, 0)
        ext = external.get(name, 0)
        pnl = (f.final_cash + f.contribution_left + out) - (f.start_cash + start) - ext
        row = AccountRow(
            name, f.start_cash, f.final_cash, ext, start, f.contribution_left, out, pnl
        )
        row.defaulted = f.defaulted
        accounts[name] = row
    for x in landings:
        row = accounts[x.account]
        setattr(row, x.where, getattr(row, x.where) + x.amount)
        row.loss += x.amount
        row.first_landed = row.first_landed or x.when
        row.last_landed = x.when

    funds = facts.funds
    pools = {
        "own_contributions": funds.own_contributions,
        "insurance": funds.insurance,
        "default_fund": funds.default_fund,
        "haircuts": funds.haircuts,
        "collateral_applied": applied,
        "recoveries": recovered,
        "rehedge_payments": rehedge_paid,
        "uncovered": sum(co.uncovered for co in facts.closeouts),
    }
    margin = facts.config.get("margin")
    clearing = margin.get("clearing", "cleared") if isinstance(margin, dict) else "cleared"
    return World(
        path=facts.path,
        scenario=facts.scenario,
        seed=facts.seed,
        clearing=str(clearing),
        events=facts.last_seq,
        epoch=facts.epoch.isoformat() if facts.epoch is not None else None,
        end=when(facts.until, facts.t_end),
        defaults=[
            DefaultRow(d.account, when(d.seq, d.t), d.missed_call, d.reason) for d in facts.defaults
        ],
        accounts=accounts,
        landings=landings,
        claims=ordered,
        pools=pools,
    )


def read_world(db: str | Path | EventStore, *, checked: bool = True) -> World:
    """The world of the log ``db`` (a path or an open store): its post-mortem facts and its
    events of :data:`KINDS`, through the store's read API.

    Raises:
        FileNotFoundError, exchange.store.event_store.StoreError: as
        :func:`exchange.postmortem.analysis.facts`.
    """
    if isinstance(db, EventStore):
        facts = pm.facts(db)
        return analyse(facts, db.events(1, facts.until, kind=KINDS))
    if not Path(db).is_file():
        raise FileNotFoundError(f"{db}: no such event log")
    with EventStore.open(db, mode="r", checked=checked) as store:
        return read_world(store)


def diff(a: World, b: World) -> Comparison:
    """The comparison of two worlds: accounts of either, B - A per account and per pool."""
    names = sorted(set(a.accounts) | set(b.accounts))
    differences: dict[str, dict[str, int] | None] = {}
    for name in names:
        x, y = a.accounts.get(name), b.accounts.get(name)
        if x is None or y is None:
            differences[name] = None
        else:
            differences[name] = {k: getattr(y, k) - getattr(x, k) for k in DIFF_FIELDS}
    pools = {k: b.pools.get(k, 0) - a.pools.get(k, 0) for k, _ in POOLS}
    return Comparison(a, b, names, differences, pools)


def compare(a: str | Path, b: str | Path, *, checked: bool = True) -> Comparison:
    """Compare the logs ``a`` and ``b`` (paths; differences are B - A).

    Raises:
        FileNotFoundError: no file at ``a`` or ``b``.
        exchange.store.event_store.StoreError: not a gpuex event store (or a damaged one).
    """
    return diff(read_world(a, checked=checked), read_world(b, checked=checked))


# ---------------------------------------------------------------------- the text table
def _money(cents: int | None) -> str:
    return DASH if cents is None else dollars(cents)


def _grid(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """Rows as aligned text: the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        out = [
            str(c).ljust(w) if i < left else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  " + "  ".join(out).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def _landed(row: AccountRow | None) -> str:
    if row is None or row.first_landed is None:
        return ""
    first, last = row.first_landed, row.last_landed
    if last is None or last.day == first.day:
        return first.text()
    return f"{first.text()} .. {last.text()}"


def _world_line(tag: str, w: World) -> str:
    start = f"day 0 = {w.epoch}, " if w.epoch else ""
    return f"  {tag}  {w.path}: {w.label()}; {w.events:,} events; {start}ends {w.end.text()}"


def _account_rows(c: Comparison, fields: Sequence[str], extra: bool) -> list[list[str]]:
    rows: list[list[str]] = []
    for name in c.accounts:
        x, y, d = c.a.accounts.get(name), c.b.accounts.get(name), c.differences[name]
        for tag, row in (("A", x), ("B", y)):
            cells = [name if tag == "A" else "", tag]
            cells += [_money(None if row is None else getattr(row, k)) for k in fields]
            if extra:
                cells.append(_landed(row) if row is not None else DASH)
            rows.append(cells)
        cells = ["", "B - A", *(_money(None if d is None else d[k]) for k in fields)]
        rows.append(cells + ([""] if extra else []))
    return rows


def table(c: Comparison) -> str:
    """The comparison as text for the terminal (dollars, days and dates)."""
    out = ["Compared logs (differences are B - A):", _world_line("A", c.a), _world_line("B", c.b)]
    out += ["", "Defaults"]
    defaults = [
        [tag, d.account, d.when.text(), dollars(d.missed_call)]
        for tag, w in (("A", c.a), ("B", c.b))
        for d in w.defaults
    ]
    out += (
        _grid(["log", "account", "when", "missed call"], defaults, left=3)
        if defaults
        else ["  none in either log"]
    )
    out += ["", "Cash and net P&L by account (dollars; P&L net of deposits after the start)"]
    out += _grid(
        ["account", "log", "cash at start", "cash at end", "net P&L"],
        _account_rows(c, ("start_cash", "final_cash", "pnl"), extra=False),
        left=2,
    )
    out += ["", "Loss to other accounts' defaults, by where it landed (dollars)"]
    fields = [k for k, _ in WHERE] + ["loss"]
    out += _grid(
        ["account", "log", *(label for _, label in WHERE), "total", "landed"],
        _account_rows(c, fields, extra=True),
        left=2,
    )
    out += ["", "Pools used (dollars)"]
    out += _grid(
        ["pool", "A", "B", "B - A"],
        [
            [label, dollars(c.a.pools[k]), dollars(c.b.pools[k]), dollars(c.pool_differences[k])]
            for k, label in POOLS
        ],
    )
    claims = [(tag, x) for tag, w in (("A", c.a), ("B", c.b)) for x in w.claims]
    if claims:
        out += ["", "Bilateral claims: V terminated, C collateral, R recovery (dollars)"]
        out += _grid(
            ["log", "buyer", "defaulter", "when", "V", "C", "R", "re-hedge paid", "loss"],
            [
                [
                    tag,
                    x.buyer,
                    x.defaulter,
                    x.when.text(),
                    dollars(x.value),
                    dollars(x.collateral),
                    dollars(x.recovery),
                    dollars(x.rehedge_paid),
                    dollars(x.loss),
                ]
                for tag, x in claims
            ],
            left=4,
        )
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- the page
_COLOURS = {DEFAULT_FUND: "#1f77b4", HAIRCUT: "#d62728", UNSECURED: "#ff7f0e", REHEDGE: "#9467bd"}


def loss_chart(c: Comparison) -> go.Figure | None:
    """Loss by account in each world, side by side, stacked by where it landed ($); None
    when no account lost anything in either world."""
    names = [
        n for n in c.accounts if any((w.accounts.get(n) and w.accounts[n].loss) for w in (c.a, c.b))
    ]
    if not names:
        return None
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        subplot_titles=(f"A: {c.a.title()}", f"B: {c.b.title()}"),
    )
    for col, w in ((1, c.a), (2, c.b)):
        for key, label in WHERE:
            values = [getattr(w.accounts[n], key) if n in w.accounts else 0 for n in names]
            fig.add_trace(
                go.Bar(
                    x=names,
                    y=chart_dollars(values),
                    name=label,
                    legendgroup=key,
                    showlegend=col == 1,
                    marker_color=_COLOURS[key],
                ),
                row=1,
                col=col,
            )
    fig.update_layout(
        barmode="relative",
        title="Loss to other accounts' defaults by account, by where it landed",
        height=460,
        legend={"orientation": "h", "y": -0.15},
    )
    fig.update_yaxes(title_text="loss ($)", row=1, col=1)
    return fig


def _account_table(c: Comparison, fields: Sequence[str], headers: Sequence[str], tid: str) -> str:
    rows = _account_rows(c, fields, extra=False)
    return _table(["account", "log", *headers], rows, tid)


def html_page(c: Comparison) -> str:
    """The comparison as one self-contained HTML page (plotly inlined; byte-identical for
    the same logs)."""
    title = f"gpuex compare: {c.a.title()} against {c.b.title()}"
    parts = page_head(title)
    for tag, w in (("A", c.a), ("B", c.b)):
        start = f"day 0 = {w.epoch}; " if w.epoch else ""
        parts.append(
            '<p class="meta">'
            + html.escape(
                f"{tag}: log {Path(w.path).name} ({w.path}), {w.label()}, {w.events:,} events; "
                f"{start}ends {w.end.text()}."
            )
            + "</p>"
        )
    parts.append(
        '<p class="meta">Money in dollars, exact to the cent; differences are B - A; a dash: '
        "the account is not in that log. Days count from each session's day 0. See "
        "docs/compare.md for each column's formula.</p>"
    )
    defaults = [
        [tag, d.account, d.when.text(), dollars(d.missed_call), d.reason]
        for tag, w in (("A", c.a), ("B", c.b))
        for d in w.defaults
    ]
    parts += [
        '<section id="section-defaults"><h2>Defaults</h2>',
        _table(["log", "account", "when", "missed call", "reason"], defaults, "defaults")
        if defaults
        else '<p class="none">No default in either log.</p>',
        "</section>",
        '<section id="section-losses"><h2>Who lost what, and where it landed</h2>',
    ]
    fig = loss_chart(c)
    if fig is None:
        parts.append('<p class="none">No account lost to a default in either log.</p>')
    else:
        fig.update_layout(template=_TEMPLATE)
        parts.append(
            '<div class="chart">'
            + pio.to_html(
                fig,
                include_plotlyjs=False,
                full_html=False,
                div_id="chart-compare-losses",
                config=_CONFIG,
            )
            + "</div>"
        )
    fields = [k for k, _ in WHERE] + ["loss"]
    rows = _account_rows(c, fields, extra=True)
    parts.append(
        _table(
            ["account", "log", *(label for _, label in WHERE), "total", "landed"], rows, "losses"
        )
    )
    landings = [
        [tag, x.account, x.defaulter, dict(WHERE)[x.where], dollars(x.amount), x.when.text()]
        for tag, w in (("A", c.a), ("B", c.b))
        for x in w.landings
    ]
    parts += [
        "<h3>Each loss as it landed</h3>",
        _table(["log", "account", "defaulter", "where", "amount", "when"], landings, "landings")
        if landings
        else '<p class="none">None.</p>',
        "</section>",
        '<section id="section-pools"><h2>Pools used</h2>',
        _table(
            ["pool", "A", "B", "B - A"],
            [
                [
                    label,
                    dollars(c.a.pools[k]),
                    dollars(c.b.pools[k]),
                    dollars(c.pool_differences[k]),
                ]
                for k, label in POOLS
            ],
            "pools",
        ),
        "</section>",
    ]
    claims = [
        [
            tag,
            x.buyer,
            x.defaulter,
            x.when.text(),
            dollars(x.value),
            dollars(x.collateral),
            dollars(x.recovery),
            dollars(x.termination_paid),
            dollars(x.rehedge_paid),
            dollars(x.unsecured),
            dollars(x.rehedge),
            dollars(x.loss),
        ]
        for tag, w in (("A", c.a), ("B", c.b))
        for x in w.claims
    ]
    parts += [
        '<section id="section-claims"><h2>Bilateral claims</h2>',
        '<p class="meta">V: protection terminated at the mark; C: collateral applied; R: '
        "recovery of the unsecured claim max(0, V - C); paid to the defaulter: what a "
        "counterparty owing it on net (V &lt; 0) paid; re-hedge paid: V x (1 + spread) per "
        "contract replaced (the spread on |V|); loss = unsecured (V + paid - C - R) + re-hedge "
        "cost (re-hedge paid - V replaced).</p>",
        _table(
            [
                "log",
                "buyer",
                "defaulter",
                "when",
                "V",
                "C",
                "R",
                "paid to the defaulter",
                "re-hedge paid",
                "unsecured",
                "re-hedge cost",
                "loss",
            ],
            claims,
            "claims",
        )
        if claims
        else '<p class="none">No bilateral claim in either log.</p>',
        "</section>",
        '<section id="section-cash"><h2>Cash and net P&amp;L by account</h2>',
        _account_table(
            c,
            ("start_cash", "final_cash", "external", "pnl"),
            ["cash at start", "cash at end", "deposits after the start", "net P&L"],
            "cash",
        ),
        "</section>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_html(c: Comparison, out: str | Path) -> Path:
    """Write :func:`html_page` to ``out`` (UTF-8), through a temporary file renamed into place:
    a failed write raises ``OSError`` and leaves no partial file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f".{out.name}.part")
    try:
        with open(part, "w", encoding="utf-8") as page:
            page.write(html_page(c))
        part.replace(out)
    finally:
        part.unlink(missing_ok=True)
    return out


def default_html_path(a: str | Path, b: str | Path) -> Path:
    """Where ``gpuex compare`` writes its page by default: beside A, ``A-vs-B.html``."""
    a, b = Path(a), Path(b)
    return a.with_name(f"{a.stem}-vs-{b.stem}.html")
