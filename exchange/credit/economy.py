"""The credit economy of issue #21 as a deterministic agent model.

The second seed ("The Second Derivative") describes a financing machine that breaks on the
**acceleration** of demand, not on its level. This module steps that machine one month at a
time and reports what happens as an ordered list of typed, frozen records, each naming the
earlier records it follows from (``cause``), plus per-period integer series. The agents:

- **the naked borrower** (a frontier lab, the seed's OpenAI): revenue on a path with explicit
  level, velocity and acceleration; burn a share of revenue; funded by equity rounds that must
  price at the step-up its burn requires over the last mark. A round that does not is the
  **trigger** (:class:`RoundFailed`), an outcome of the path, never a date;
- **the wrapped borrower** (the seed's Anthropic): the same machinery, a burn converging to
  about 9 % of revenue, and a guarantor behind its lease shortfalls, so a failed round calls the
  guarantee instead of pulling commitments;
- **take-or-pay contracts as a loan book**: each lab's commitments to each provider; after the
  trigger the naked lab pulls back a share of every remaining commitment;
- **neoclouds as a spread trade**: contracted and open-market rental revenue against opex and
  the annuity on GPU-backed term loans; a debt-service-coverage covenant; an inverted spread is
  a default; released capacity is re-leased at a 30-50 % discount on shorter terms, and the
  capacity released to the market is a supply shock to the rental price (the glut);
- **hyperscalers**: capex as a share of operating cash flow, and a capex-cut rule (the flip:
  the first cut is made only when the market rewards it, the others follow within a window);
- **the cascade's steps 4-6**: GPU-backed loans that cannot roll (:class:`RefinancingFailed`:
  the lender's DSCR or collateral test, at a yearly maturity or at a breach), each borrower's
  implied 5-year CDS spread from a reduced-form hazard on its state, a neocloud's adding its
  customers' credit (:func:`neocloud_hazard`; series ``cds:<name>``, :class:`SpreadGapped`
  when it jumps), a default's recovery (its fleet's auction value over
  its debt), the neoclouds' and hyperscalers' equity marks (:class:`EquityMarked` when one
  falls) and the stranded fleet bought by the best-capitalised hyperscaler
  (:class:`CapacityAcquired`).

The model, each rule and every parameter's source are in ``docs/credit.md`` ("The economy").

Units
-----
- One period is one **month**; period 0 is January 2024 (the seed's first mark, about $86bn,
  is "early 2024"). Model time ``t`` in years is ``period / 12``. Why a month: the seed's
  rounds come every six to ten months and its cascade (failed round, pull-back, breach, cut)
  unfolds over quarters, so a month separates the steps a quarter would merge, while a
  six-year run is only 72 steps; loan payments and covenant tests are monthly too.
- Money: integer **cents** (minor units, ``MINOR_PER_UNIT = 100``) in parameters, records and
  series; int64 holds the seed's $2.1tn backlog (2.1e14 cents) with room to spare.
- Rental prices: integer **ticks of $0.001 per GPU-hour**, the tick of the exchange's rental
  indices (``exchange/products/index.py``), so the exchange can feed the path in later.
- Ratios that are not money (step-ups, DSCR, discounts): integer **ppm** in records
  (1_000_000 = 1x or 100 %); floats with bounds in the parameters.
- Growth rates: continuously compounded, **per year** (``0.5`` = revenue grows by e^0.5 in a
  year); acceleration: change of that rate **per year**.

Floats and integers
-------------------
Floats exist only inside the growth and pricing formulas (the revenue path, a round's price,
the burn and the round's need, the capex and cash-flow paths, the glut's price shock). Each
becomes an integer **once**, through :func:`_cents` (money), :func:`_int` (ticks, GPU-hours)
or :func:`_ppm` (ratios), rounding half to even from the float's exact value; every sum,
comparison and balance after that is in integers. GPU-hour revenue is integer ticks x
GPU-hours, turned into cents by one half-even integer division (:func:`_ticks_to_cents`).
GPU counts taken as a share of a fleet are floored, so shares never allocate more GPUs than
the fleet holds.

Determinism: no wall clock; randomness only from ``np.random.default_rng([seed, stream])``,
one generator per stream (below), each drawing a fixed number of values every period whatever
the branch taken, so a change in one agent's path does not shift another's draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from exchange.credit.params import (
    HOURS_PER_MONTH,
    MONTHS,
    PPM,
    TICKS_PER_CENT,
    EconomyParams,
    HyperscalerParams,
    LabParams,
    NeocloudParams,
)

__all__ = [
    "BacklogImpaired",
    "CapacityAcquired",
    "CapacityReleased",
    "CapexCut",
    "CommitmentPulled",
    "CovenantBreached",
    "Default",
    "Economy",
    "EconomyParams",
    "EquityMarked",
    "GuaranteeCalled",
    "HyperscalerParams",
    "LabParams",
    "NeocloudParams",
    "Record",
    "RefinancingFailed",
    "RoundFailed",
    "RoundPriced",
    "SpreadGapped",
    "SpreadInverted",
    "neocloud_hazard",
]


# Random streams: np.random.default_rng([seed, stream]).
_S_REVENUE = 0  # + lab index: monthly revenue noise
_S_ROUND = 10  # + lab index: the round price's noise
_S_RELEASE = 20  # re-leasing discounts, one draw per neocloud per period
_S_BLINK = 30  # hyperscalers' blink scores, one draw per hyperscaler per period

# --------------------------------------------------------------------------------------------
# the float -> int boundary


def _int(x: float) -> int:
    """A float -> the nearest integer, half to even, once from the float's exact value
    (Python's ``round`` on a float is exact)."""
    if not math.isfinite(x):
        raise ValueError(f"non-finite amount {x!r}")
    return int(round(x))


def _cents(x: float) -> int:
    """A money amount computed in float (cents) -> integer cents: :func:`_int`."""
    return _int(x)


def _ppm(x: float) -> int:
    """A ratio (step-up, DSCR, discount) -> integer parts per million, half to even once."""
    if not math.isfinite(x):
        raise ValueError(f"non-finite ratio {x!r}")
    return int(round(x * PPM))


def _ticks_to_cents(tick_gpu_hours: int) -> int:
    """Integer ticks x GPU-hours ($0.001 units) -> cents, one half-to-even integer division."""
    q, r = divmod(tick_gpu_hours, TICKS_PER_CENT)
    if 2 * r > TICKS_PER_CENT or (2 * r == TICKS_PER_CENT and q % 2 == 1):
        q += 1
    return q


# --------------------------------------------------------------------------------------------
# records


@dataclass(frozen=True)
class Record:
    """One outcome of a step. ``seq`` is its index in the run's record list; ``cause`` the
    ``seq`` of the earlier record(s) it follows from (empty: it follows from the paths alone).
    Money in cents, ratios in ppm."""

    seq: int
    period: int
    entity: str
    cause: tuple[int, ...]
    kind: ClassVar[str] = "record"


@dataclass(frozen=True)
class RoundPriced(Record):
    """An equity round cleared its required step-up: the new mark and the cash raised."""

    mark: int = 0
    last_mark: int = 0
    raised: int = 0
    step_up_ppm: int = 0
    required_step_up_ppm: int = 0
    kind: ClassVar[str] = "round_priced"


@dataclass(frozen=True)
class RoundFailed(Record):
    """The trigger: the round's price is below the step-up the lab's burn requires."""

    offered_mark: int = 0
    required_mark: int = 0
    last_mark: int = 0
    need: int = 0
    raisable: int = 0
    step_up_ppm: int = 0
    required_step_up_ppm: int = 0
    kind: ClassVar[str] = "round_failed"


@dataclass(frozen=True)
class GuaranteeCalled(Record):
    """A wrapped lab's guarantor pays its lease shortfall (entity: the lab)."""

    guarantor: str = ""
    amount: int = 0
    kind: ClassVar[str] = "guarantee_called"


@dataclass(frozen=True)
class CommitmentPulled(Record):
    """A lab cuts a share of its remaining take-or-pay commitment to one provider."""

    provider: str = ""
    share_ppm: int = 0  # share of the remaining commitment pulled
    backlog_cut: int = 0  # cents of contracted backlog removed
    monthly_cut: int = 0  # cents per month of payments removed
    gpus_released: int = 0  # GPUs (GPU-equivalents for a hyperscaler) back on the market
    kind: ClassVar[str] = "commitment_pulled"


@dataclass(frozen=True)
class BacklogImpaired(Record):
    """A hyperscaler writes off the backlog a pull-back removed (impairment, not seizure)."""

    amount: int = 0
    kind: ClassVar[str] = "backlog_impaired"


@dataclass(frozen=True)
class CovenantBreached(Record):
    """A neocloud's debt-service coverage fell below its loan covenant."""

    dscr_ppm: int = 0
    covenant_ppm: int = 0
    cash_flow: int = 0
    debt_service: int = 0
    kind: ClassVar[str] = "covenant_breached"


@dataclass(frozen=True)
class SpreadInverted(Record):
    """A neocloud's cash flow no longer covers its debt service (spread < 0)."""

    spread: int = 0
    cash_flow: int = 0
    debt_service: int = 0
    kind: ClassVar[str] = "spread_inverted"


@dataclass(frozen=True)
class Default(Record):
    """A default: a neocloud whose spread inverted, or a lab out of cash. ``reason`` names it."""

    reason: str = ""
    debt: int = 0
    recovery_ppm: int = 0  # the auction's value of its GPUs / its debt (a lab: cds_recovery)
    kind: ClassVar[str] = "default"


@dataclass(frozen=True)
class CapacityReleased(Record):
    """Capacity a pull-back emptied is re-leased at a discount on a shorter term."""

    gpus: int = 0
    price: int = 0  # ticks ($0.001) per GPU-hour
    discount_ppm: int = 0  # off the original contract rate
    term_months: int = 0
    kind: ClassVar[str] = "capacity_released"


@dataclass(frozen=True)
class CapexCut(Record):
    """A hyperscaler cuts its capex; ``leader``: the first cut (the flip)."""

    planned: int = 0  # cents per month, the month of the cut
    capex: int = 0  # cents per month after the cut
    leader: bool = False
    kind: ClassVar[str] = "capex_cut"


@dataclass(frozen=True)
class RefinancingFailed(Record):
    """A neocloud's maturing GPU-backed loan cannot roll: the lender's test failed.

    ``reason``: ``"covenant breach"`` (DSCR below the covenant: at a breach the lenders call the
    whole facility) or ``"collateral"`` (the loan-to-value at the glut-hit price is past the
    lender's headroom over its origination LTV)."""

    reason: str = ""
    due: int = 0  # cents of principal that had to roll
    dscr_ppm: int = 0
    ltv_ppm: int = 0  # debt / the fleet's auction value, ppm
    max_ltv_ppm: int = 0  # the most the lender rolls, ppm
    kind: ClassVar[str] = "refinancing_failed"


@dataclass(frozen=True)
class SpreadGapped(Record):
    """A borrower's implied 5-year CDS spread widened by more than ``spread_gap_bps`` in a
    month (entity: a lab or a neocloud)."""

    spread_bps: int = 0
    previous_bps: int = 0
    change_bps: int = 0
    hazard_ppm: int = 0  # per year
    kind: ClassVar[str] = "spread_gapped"


@dataclass(frozen=True)
class EquityMarked(Record):
    """A neocloud's or hyperscaler's equity mark fell by more than ``equity_fall_threshold``
    in a month (cents)."""

    mark: int = 0
    previous: int = 0
    fall_ppm: int = 0  # 1 - mark / previous
    kind: ClassVar[str] = "equity_marked"


@dataclass(frozen=True)
class CapacityAcquired(Record):
    """A defaulted neocloud's fleet sold at auction to the best-capitalised hyperscaler
    (entity: the neocloud; ``price`` cents for the fleet)."""

    buyer: str = ""
    gpus: int = 0
    price: int = 0  # cents, the whole fleet
    price_per_gpu: int = 0  # cents
    discount_ppm: int = 0  # off the fleet's value at the input rental price (before the glut)
    kind: ClassVar[str] = "capacity_acquired"


# --------------------------------------------------------------------------------------------
# state


@dataclass
class _Lab:
    p: LabParams
    log_rev: float
    revenue: int = 0  # cents this month
    mark: int = 0
    mark_seq: int | None = None
    cash: int = 0
    burn_scale: float = 1.0  # after pull-backs
    next_try: int = 0
    pending_pull: list[tuple[int, float]] = field(default_factory=list)  # (period, share)
    last_fail: int | None = None
    last_fail_period: int | None = None
    burn: int = 0  # cents this month
    defaulted: bool = False
    history: list[int] = field(default_factory=list)  # monthly revenue, cents
    log_history: list[float] = field(default_factory=list)  # its log, before rounding


@dataclass
class _Lease:
    gpus: int
    price: int  # ticks per GPU-hour
    tenant: str  # lab name, "other" or "re-lease"
    until: int | None = None  # last period, None: beyond the horizon


@dataclass
class _Neo:
    p: NeocloudParams
    leases: list[_Lease]
    open_gpus: int
    payment: int  # debt service, cents per month
    debt: int
    vacant: list[tuple[int, int, int]] = field(default_factory=list)  # (due, gpus, cause seq)
    breached: bool = False
    defaulted: bool = False
    last_pull: int | None = None
    breach_seq: int | None = None
    dscr: float = 0.0  # this month's; 0 without debt service
    cash_flow: int = 0  # cents this month, before debt service
    origination_ltv: float = 0.0  # debt / the fleet's auction value in period 0


@dataclass
class _Hyper:
    p: HyperscalerParams
    book: list[list]  # [lab name, remaining backlog (cents), monthly payment (cents)] per lab
    cut: bool = False
    cut_seq: int | None = None


def _annuity(principal: int, rate: float, months: int) -> int:
    """Level monthly payment, cents, on an amortising loan (rate per year, monthly compounding)."""
    if principal == 0:
        return 0
    r = rate / MONTHS
    if r == 0:
        return _cents(principal / months)
    return _cents(principal * r / (1.0 - (1.0 + r) ** -months))


def neocloud_hazard(
    own: float,
    exposures: list[tuple[float, float]],
    beta: float,
    floor: float,
    cap: float,
) -> float:
    """A neocloud's default hazard, per year: its own (from its DSCR) plus its customers'
    credit (contagion), capped at ``cap``:

        h = min(cap, own + sum over exposures of min(1, beta x share) x max(0, h_lab - floor))

    ``exposures``: ``(share, h_lab)`` per lab, ``share`` the fraction (0..1) of the
    neocloud's contracted book (monthly contract revenue) the lab owes unguaranteed, ``h_lab``
    the lab's hazard per year. ``min(1, beta x share)`` is the chance the neocloud fails
    with the lab; ``floor`` (per year) the lab hazard its own level already prices, so a lab at
    or below it passes nothing through."""
    return min(cap, own + sum(_contagion(share, h, beta, floor) for share, h in exposures))


def _contagion(share: float, h_lab: float, beta: float, floor: float) -> float:
    """One lab's term of :func:`neocloud_hazard`, per year."""
    return min(1.0, beta * share) * max(0.0, h_lab - floor)


class Economy:
    """The economy, stepped one month at a time.

    ``Economy(params, seed)``; ``step()`` advances one period and returns the records it
    produced; ``run(periods)`` steps that many times and returns every record so far, in
    order. ``series()`` returns the per-period integer series (int64 arrays, one value per
    period stepped): ``revenue:<lab>`` (cents/month), ``s1:<lab>`` and ``s2:<lab>`` (S' and S'',
    first and second differences of that revenue, cents/month per month), ``mark:<lab>``
    (cents), ``cash:<lab>``, ``burn:<lab>`` (cents/month), ``capex`` and
    ``capex:<hyperscaler>`` (cents/month), ``ocf`` (cents/month), ``spread:<neocloud>`` (cash
    flow minus debt service, cents/month), ``dscr_ppm:<neocloud>``, ``rental_price``
    (ticks/GPU-hour, after the glut), ``rental_shock`` (ticks/GPU-hour the glut removed),
    ``glut_gpus``; steps 4-6: ``cds:<lab or neocloud>`` (implied 5-year CDS spread, bps),
    ``equity:<neocloud or hyperscaler>`` (equity mark, cents) and ``fcf:<hyperscaler>`` (its
    OCF minus its capex, cents/month: the ranking of the buyer of a defaulted fleet).
    """

    def __init__(self, params: EconomyParams | None = None, seed: int = 0) -> None:
        self.params = params if params is not None else EconomyParams()
        self.seed = int(seed)
        p = self.params
        self.period = 0
        self.records: list[Record] = []
        self._series: dict[str, list[int]] = {}
        self._rng_rev = [np.random.default_rng([self.seed, _S_REVENUE + i]) for i in range(2)]
        self._rng_round = [np.random.default_rng([self.seed, _S_ROUND + i]) for i in range(2)]
        self._rng_release = np.random.default_rng([self.seed, _S_RELEASE])
        self._rng_blink = np.random.default_rng([self.seed, _S_BLINK])
        self._labs = [
            _Lab(
                p=lab,
                log_rev=math.log(lab.revenue_start / MONTHS),
                mark=lab.initial_mark,
                cash=lab.initial_cash,
            )
            for lab in p.labs
        ]
        self._naked, self._wrapped = self._labs[0].p.name, self._labs[1].p.name
        self._neos = [self._new_neo(n) for n in p.neoclouds]
        self._hypers = []
        for h in p.hyperscalers:
            book = []
            for lab, share in ((self._naked, h.naked_share), (self._wrapped, h.wrapped_share)):
                backlog = _cents(h.backlog * share)
                book.append([lab, backlog, _cents(backlog / p.contract_months)])
            self._hypers.append(_Hyper(h, book))
        self._glut_gpus = 0
        # share of the labs' commitments pulled so far, compounded over pull-backs
        self._pulled_share = 0.0
        self._defaults = 0
        self._flip: tuple[int, int] | None = None  # (period, seq) of the first cut
        self._stress_seq: int | None = None  # the latest record that added stress
        # steps 4-6: this month's latest record naming each entity (as entity or provider),
        # the month's defaults awaiting their auction, last month's spreads and marks, and
        # each hyperscaler's free cash flow this month (cents)
        self._month_latest: dict[str, int] = {}
        self._auctions: list[tuple[_Neo, int, int, int]] = []
        self._cds_prev: dict[str, int] = {}
        # each neocloud's contagion hazard from each lab last month (per year), to name the lab
        # whose credit widened it
        self._contagion_prev: dict[tuple[str, str], float] = {}
        self._equity_prev: dict[str, int] = {}
        self._ocf = 0.0
        self._fcf: list[int] = [0] * len(self._hypers)
        value0 = self._gpu_value(p.rental_price[0])
        for neo in self._neos:
            fleet = neo.p.gpus * value0
            neo.origination_ltv = neo.debt / fleet if fleet > 0 else 0.0

    def _new_neo(self, n: NeocloudParams) -> _Neo:
        contracted = int(n.gpus * n.contracted_share)
        naked = int(contracted * n.naked_share)
        wrapped = int(contracted * n.wrapped_share)
        leases = [
            _Lease(naked, n.contract_price, self._naked),
            _Lease(wrapped, n.contract_price, self._wrapped),
            _Lease(contracted - naked - wrapped, n.contract_price, "other"),
        ]
        payment = _annuity(n.debt_principal, n.debt_rate, n.debt_term_months)
        return _Neo(n, leases, n.gpus - contracted, payment, n.debt_principal)

    # ---------------------------------------------------------------------------- plumbing

    def _emit(self, cls: type[Record], entity: str, cause: tuple[int, ...], **kw) -> int:
        seq = len(self.records)
        self.records.append(cls(seq=seq, period=self.period, entity=entity, cause=cause, **kw))
        if cls not in (SpreadGapped, EquityMarked):  # causes are the economy's own moves
            self._month_latest[entity] = seq
        if "provider" in kw:  # a pull-back names the provider it hits
            self._month_latest[kw["provider"]] = seq
        return seq

    def _put(self, key: str, value: int) -> None:
        self._series.setdefault(key, []).append(int(value))

    def series(self) -> dict[str, np.ndarray]:
        """The per-period series so far (see the class docstring), int64 arrays."""
        return {k: np.asarray(v, dtype=np.int64) for k, v in self._series.items()}

    def run(self, periods: int) -> list[Record]:
        """Step ``periods`` months; every record so far, in order."""
        for _ in range(periods):
            self.step()
        return list(self.records)

    def step(self) -> list[Record]:
        """Advance one month; the records this month produced, in order.

        Order within a month: the labs (revenue, burn, pull-backs due, rounds), the rental
        market (the glut), the neoclouds (re-leases due, cash flow, covenant, refinancing,
        spread), the hyperscalers (capex decisions), then the borrowers' CDS spreads, the
        equity marks and the auction of the month's defaulted fleets. A record's causes are
        always earlier records.
        """
        first = len(self.records)
        self._month_latest = {}
        for i, lab in enumerate(self._labs):
            self._step_lab(i, lab)
        price, shock = self._rental_price()
        # one re-leasing draw per neocloud every month, used or not: a default of one neocloud
        # must not shift the draws of another
        draws = self._rng_release.random(len(self._neos))
        for neo, draw in zip(self._neos, draws, strict=True):
            self._step_neo(neo, price, float(draw))
        self._step_hypers()
        self._step_spreads()
        self._step_equity()
        self._step_auctions()
        self._put("rental_price", price)
        self._put("rental_shock", shock)
        self._put("glut_gpus", self._glut_gpus)
        self.period += 1
        return self.records[first:]

    # ---------------------------------------------------------------------------- labs

    def _burn_share(self, lab: LabParams) -> float:
        k = min(1.0, self.period / lab.burn_converge_months)
        return lab.burn_start + (lab.burn_end - lab.burn_start) * k

    def _growth(self, lab: LabParams, months: float) -> float:
        """The path's log growth rate per year at ``months`` from January 2024."""
        return lab.growth + lab.accel * months / MONTHS

    def _step_lab(self, i: int, lab: _Lab) -> None:
        p = self.params
        lp = lab.p
        eps = float(self._rng_rev[i].standard_normal())
        eps_round = float(np.clip(self._rng_round[i].standard_normal(), -3.0, 3.0))
        if self.period > 0:
            # the month's drift is the path's growth at the middle of the month
            lab.log_rev += self._growth(lp, self.period - 0.5) / MONTHS + lp.revenue_noise * eps
        lab.revenue = _cents(math.exp(lab.log_rev))
        lab.history.append(lab.revenue)
        lab.log_history.append(lab.log_rev)
        burn = 0
        if not lab.defaulted:
            burn = _cents(self._burn_share(lp) * lab.burn_scale * lab.revenue)
            lab.burn = burn
            lab.cash -= burn
            for due, share in list(lab.pending_pull):
                if due <= self.period:
                    lab.pending_pull.remove((due, share))
                    self._pull_back(
                        lab, share, (lab.last_fail,) if lab.last_fail is not None else ()
                    )
            if lab.cash < 0:
                self._lab_default(lab)
            elif lab.cash < burn * p.raise_below_months and self.period >= lab.next_try:
                self._round(lab, burn, eps_round)
        h = lab.history
        s1 = h[-1] - h[-2] if len(h) > 1 else 0
        s1_prev = h[-2] - h[-3] if len(h) > 2 else 0
        name = lp.name
        self._put(f"revenue:{name}", lab.revenue)
        self._put(f"s1:{name}", s1)
        self._put(f"s2:{name}", s1 - s1_prev if len(h) > 2 else 0)
        self._put(f"mark:{name}", lab.mark)
        self._put(f"cash:{name}", lab.cash)
        self._put(f"burn:{name}", burn)

    def _round(self, lab: _Lab, burn: int, eps: float) -> None:
        """Price a round from the revenue path; clear it or fail (the trigger)."""
        p = self.params
        # investors price the growth they can see: trailing log growth, annualised
        # (on the float log-revenue, so a revenue rounded to 0 cents cannot break it)
        logs = lab.log_history
        window = min(p.growth_window_months, len(logs) - 1)
        g_obs = lab.p.growth
        if window > 0:
            g_obs = (logs[-1] - logs[-1 - window]) * MONTHS / window
        multiple = max(p.multiple_floor, p.multiple_base + p.multiple_per_growth * g_obs)
        offer = _cents(lab.revenue * MONTHS * multiple * math.exp(p.round_noise * eps))
        # the round must fund runway_months of burn growing at the observed rate
        need = _cents(burn * p.runway_months * math.exp(g_obs * p.runway_months / MONTHS / 2))
        required = max(p.step_up_floor, 1.0 + need / (p.markup_funding * lab.mark))
        required_mark = _cents(lab.mark * required)
        step_ppm, req_ppm = _ppm(offer / lab.mark), _ppm(required)
        prior = (lab.mark_seq,) if lab.mark_seq is not None else ()
        name = lab.p.name
        if offer >= required_mark:
            lab.cash += need
            seq = self._emit(
                RoundPriced,
                name,
                prior,
                mark=offer,
                last_mark=lab.mark,
                raised=need,
                step_up_ppm=step_ppm,
                required_step_up_ppm=req_ppm,
            )
            lab.mark, lab.mark_seq = offer, seq
            return
        raisable = _cents(p.markup_funding * max(0, offer - lab.mark))
        seq = self._emit(
            RoundFailed,
            name,
            prior,
            offered_mark=offer,
            required_mark=required_mark,
            last_mark=lab.mark,
            need=need,
            raisable=raisable,
            step_up_ppm=step_ppm,
            required_step_up_ppm=req_ppm,
        )
        lab.last_fail = seq
        lab.last_fail_period = self.period
        lab.next_try = self.period + p.retry_months
        if lab.p.wrapped:
            # the wrap: the guarantor pays the lease shortfall, the commitments stand. It stands
            # behind the leases only: at most the compute bill over the runway
            amount = need
            if lab.p.revenue_per_compute is not None:
                compute = _cents(lab.revenue * p.runway_months / lab.p.revenue_per_compute)
                amount = min(need, compute)
            lab.cash += amount
            self._emit(
                GuaranteeCalled, name, (seq,), guarantor=lab.p.lease_guarantor, amount=amount
            )
            return
        # the naked lab raises what the markup allows and pulls back the rest of the need
        lab.cash += raisable
        short = 1.0 - raisable / need if need > 0 else 0.0
        share = min(p.pullback_max, max(p.pullback_min, short))
        if p.pullback_lag_months == 0:
            self._pull_back(lab, share, (seq,))
        else:
            lab.pending_pull.append((self.period + p.pullback_lag_months, share))

    def _lab_default(self, lab: _Lab) -> None:
        cause = (lab.last_fail,) if lab.last_fail is not None else ()
        seq = self._emit(
            Default,
            lab.p.name,
            cause,
            reason="out of cash",
            debt=-lab.cash,
            recovery_ppm=_ppm(self.params.cds_recovery),  # no fleet to auction: a fixed rate
        )
        lab.defaulted = True
        self._defaults += 1
        self._stress_seq = seq
        self._pull_back(lab, 1.0, (seq,))

    def _pull_back(self, lab: _Lab, share: float, cause: tuple[int, ...]) -> None:
        """Cut ``share`` of every remaining commitment of ``lab``, pro rata across providers."""
        if lab.p.wrapped:  # the wrap: the guarantor pays the leases, the commitments stand
            return
        lab.burn_scale *= 1.0 - share
        self._pulled_share = 1.0 - (1.0 - self._pulled_share) * (1.0 - share)
        share_ppm = _ppm(share)
        p = self.params
        for neo in self._neos:
            if neo.defaulted:
                continue
            for lease in neo.leases:
                if lease.tenant != lab.p.name or lease.gpus == 0:
                    continue
                gpus = int(lease.gpus * share)
                monthly = _ticks_to_cents(gpus * lease.price * HOURS_PER_MONTH)
                lease.gpus -= gpus
                seq = self._emit(
                    CommitmentPulled,
                    lab.p.name,
                    cause,
                    provider=neo.p.name,
                    share_ppm=share_ppm,
                    backlog_cut=monthly * p.contract_months,  # the same term as the book
                    monthly_cut=monthly,
                    gpus_released=gpus,
                )
                self._stress_seq = seq
                neo.last_pull = seq
                neo.vacant.append((self.period + p.release_lag_months, gpus, seq))
                self._glut_gpus += gpus
        for hyp in self._hypers:
            entry = next(e for e in hyp.book if e[0] == lab.p.name)
            if entry[1] == 0:
                continue
            cut = _cents(entry[1] * share)
            monthly = _cents(entry[2] * share)
            entry[1] -= cut
            entry[2] -= monthly
            # capacity the backlog would have filled, in GPU-equivalents at a contract rate
            gpus = monthly * TICKS_PER_CENT // (p.hyperscaler_gpu_price * HOURS_PER_MONTH)
            seq = self._emit(
                CommitmentPulled,
                lab.p.name,
                cause,
                provider=hyp.p.name,
                share_ppm=share_ppm,
                backlog_cut=cut,
                monthly_cut=monthly,
                gpus_released=gpus,
            )
            self._glut_gpus += gpus
            self._stress_seq = self._emit(BacklogImpaired, hyp.p.name, (seq,), amount=cut)

    # ---------------------------------------------------------------------------- market

    def _rental_price(self) -> tuple[int, int]:
        """The open-market price this month after the glut, and the shock, ticks/GPU-hour."""
        return self._glut_price(self._glut_gpus)

    def _base_price(self) -> int:
        """The input open-market price this month, before the glut, ticks/GPU-hour."""
        p = self.params
        return p.rental_price[min(self.period, len(p.rental_price) - 1)]

    def _glut_price(self, glut_gpus: int) -> tuple[int, int]:
        """The price with ``glut_gpus`` released on the market, and the shock, ticks."""
        p = self.params
        base = self._base_price()
        fall = min(p.glut_cap, p.glut_elasticity * glut_gpus / p.market_gpus)
        shock = _int(base * fall)  # ticks: the same half-even boundary as money
        return base - shock, shock

    def _gpu_value(self, price: int) -> int:
        """A GPU's auction value at the open-market ``price`` (ticks/GPU-hour): that rent for
        ``resale_months`` months, cents (one half-even division)."""
        return _ticks_to_cents(price * HOURS_PER_MONTH * self.params.resale_months)

    # ---------------------------------------------------------------------------- neoclouds

    def _step_neo(self, neo: _Neo, price: int, draw: float) -> None:
        p = self.params
        n = neo.p
        name = n.name
        if neo.defaulted:
            self._put(f"spread:{name}", 0)
            self._put(f"dscr_ppm:{name}", 0)
            return
        # vacant capacity due for re-leasing: a discount in [min, max], a shorter term
        for item in list(neo.vacant):
            due, gpus, cause = item
            if due > self.period:
                continue
            neo.vacant.remove(item)
            d = p.release_discount_min + (p.release_discount_max - p.release_discount_min) * draw
            lease_price = _int(n.contract_price * (1.0 - d))
            until = self.period + p.release_term_months - 1
            neo.leases.append(_Lease(gpus, lease_price, "re-lease", until))
            self._emit(
                CapacityReleased,
                name,
                (cause,),
                gpus=gpus,
                price=lease_price,
                discount_ppm=_ppm(d),
                term_months=p.release_term_months,
            )
        # expired re-leases go back to the open market
        for lease in list(neo.leases):
            if lease.until is not None and lease.until < self.period:
                neo.leases.remove(lease)
                neo.open_gpus += lease.gpus
        ticks = sum(lease.gpus * lease.price for lease in neo.leases) * HOURS_PER_MONTH
        ticks += _int(neo.open_gpus * n.utilisation * HOURS_PER_MONTH) * price
        revenue = _ticks_to_cents(ticks)
        opex = _ticks_to_cents(n.gpus * n.opex * HOURS_PER_MONTH)
        cash_flow = revenue - opex
        service = neo.payment if neo.debt > 0 else 0
        spread = cash_flow - service
        dscr = _ppm(cash_flow / service) if service > 0 else 0
        neo.cash_flow = cash_flow
        neo.dscr = cash_flow / service if service > 0 else 0.0
        self._put(f"spread:{name}", spread)
        self._put(f"dscr_ppm:{name}", dscr)
        if service > 0:
            interest = _cents(neo.debt * n.debt_rate / MONTHS)
            neo.debt = max(0, neo.debt - (service - interest))
        if service == 0:
            return
        # the breach follows from the last pull-back on this provider, else from the latest
        # record that moved the market (the glut of someone else's pull-back or default)
        last = neo.last_pull if neo.last_pull is not None else self._stress_seq
        cause = (last,) if last is not None else ()
        covenant = _ppm(n.covenant_dscr)
        breach: int | None = None
        if dscr < covenant and not neo.breached:
            neo.breached = True
            breach = self._emit(
                CovenantBreached,
                name,
                cause,
                dscr_ppm=dscr,
                covenant_ppm=covenant,
                cash_flow=cash_flow,
                debt_service=service,
            )
            neo.breach_seq = breach
            cause = (breach,)
        refi = self._refinance(neo, price, dscr, covenant, breach is not None)
        if spread < 0:
            seq = self._emit(
                SpreadInverted,
                name,
                cause,
                spread=spread,
                cash_flow=cash_flow,
                debt_service=service,
            )
            causes = (seq,) if refi is None else (seq, refi)
            self._neo_default(neo, causes, "spread inverted")
        elif refi is not None:  # no cash buffer: a maturity that cannot roll is a default
            self._neo_default(neo, (refi,), "refinancing failed")

    def _refinance(
        self, neo: _Neo, price: int, dscr: int, covenant: int, breached_now: bool
    ) -> int | None:
        """Step 4: the lender's test on the principal due this month; the ``RefinancingFailed``
        record's seq if the loan cannot roll, else None.

        Due: the whole facility at a covenant breach (the breach lets the lenders call it),
        and ``refi_share`` of the principal every year in month ``refi_month``. The lender rolls
        it at the market only if the DSCR meets the covenant and the loan-to-value at the
        month's glut-hit price is at most ``refi_ltv_headroom`` x the origination LTV."""
        p = self.params
        if neo.debt <= 0:
            return None
        if breached_now:
            due = neo.debt
        elif self.period % MONTHS == p.refi_month and p.refi_share > 0:
            due = _cents(neo.debt * p.refi_share)
        else:
            return None
        fleet = neo.p.gpus * self._gpu_value(price)
        ltv = neo.debt / fleet if fleet > 0 else math.inf
        max_ltv = neo.origination_ltv * p.refi_ltv_headroom
        if dscr >= covenant and ltv <= max_ltv:
            return None  # rolled
        if dscr < covenant:
            reason = "covenant breach"
            cause = (neo.breach_seq,) if neo.breach_seq is not None else ()
        else:  # the collateral: whatever moved the rental price last
            reason = "collateral"
            last = self._stress_seq if self._stress_seq is not None else neo.last_pull
            cause = (last,) if last is not None else ()
        return self._emit(
            RefinancingFailed,
            neo.p.name,
            cause,
            reason=reason,
            due=due,
            dscr_ppm=dscr,
            ltv_ppm=_ppm(min(ltv, 1e6)),
            max_ltv_ppm=_ppm(max_ltv),
        )

    def _neo_default(self, neo: _Neo, cause: tuple[int, ...], reason: str) -> None:
        """A neocloud defaults: its creditors auction the fleet (the stranded GPUs join the
        glut; the auction prices at the price with them on the market), the recovery is the
        auction's value over the debt; the sale itself comes after the month's marks."""
        n = neo.p
        neo.defaulted = True
        self._defaults += 1
        self._glut_gpus += n.gpus
        fire, _ = self._glut_price(self._glut_gpus)
        per_gpu = self._gpu_value(fire)
        value = n.gpus * per_gpu
        recovery = PPM if neo.debt <= 0 else min(PPM, value * PPM // neo.debt)
        seq = self._emit(
            Default, n.name, cause, reason=reason, debt=neo.debt, recovery_ppm=recovery
        )
        self._stress_seq = seq
        self._auctions.append((neo, seq, value, per_gpu))

    # ---------------------------------------------------------------------------- hyperscalers

    def _sector_paths(self) -> tuple[float, float]:
        """Sector capex and operating cash flow this month, cents per month (floats).

        Each calendar year's figure is the annual rate at mid-year; between mid-years the log
        is interpolated linearly (so S' and S'' are smooth month to month), after the last one
        it grows at ``capex_growth_after`` / ``ocf_growth_after``. OCF is capex / the ratio for
        the years with a ratio."""
        p = self.params
        y = 2024 + (self.period + 0.5) / MONTHS  # calendar time at mid-month
        years = [yr + 0.5 for yr in p.capex_years]
        capex = [math.log(c) for c in p.capex_by_year]
        ocf_years = years[: len(p.capex_to_ocf)]
        ocf = [math.log(c / r) for c, r in zip(p.capex_by_year, p.capex_to_ocf, strict=False)]

        def interp(xs: list[float], ys: list[float], growth: float) -> float:
            if y >= xs[-1]:
                return ys[-1] + growth * (y - xs[-1])
            if y <= xs[0]:
                slope = (ys[1] - ys[0]) / (xs[1] - xs[0]) if len(xs) > 1 else growth
                return ys[0] + slope * (y - xs[0])
            j = max(k for k in range(len(xs)) if xs[k] <= y)
            w = (y - xs[j]) / (xs[j + 1] - xs[j])
            return ys[j] + w * (ys[j + 1] - ys[j])

        c = math.exp(interp(years, capex, p.capex_growth_after)) / MONTHS
        o = math.exp(interp(ocf_years, ocf, p.ocf_growth_after)) / MONTHS
        return c, o

    def _step_hypers(self) -> None:
        p = self.params
        capex, ocf = self._sector_paths()
        ratio = capex / ocf
        stress = self._pulled_share + p.default_stress * self._defaults
        noise = self._rng_blink.standard_normal(len(self._hypers))
        scores = [
            ratio * h.p.ocf_ratio_scale - 1.0 + stress + p.blink_noise * float(e)
            for h, e in zip(self._hypers, noise, strict=True)
        ]
        rewarded = stress > p.reward_stress_min
        if self._flip is None and rewarded:
            best: tuple[float, int] | None = None
            for j, h in enumerate(self._hypers):
                if h.p.blink_cost is None:
                    continue
                margin = scores[j] - p.blink_threshold - h.p.blink_cost
                if margin >= 0 and (best is None or margin > best[0]):
                    best = (margin, j)
            if best is not None:
                h = self._hypers[best[1]]
                cause = (self._stress_seq,) if self._stress_seq is not None else ()
                seq = self._cut(h, capex, cause, leader=True)
                self._flip = (self.period, seq)
        elif self._flip is not None:
            since = self.period - self._flip[0]
            for j, h in enumerate(self._hypers):
                if h.cut or h.p.blink_cost is None:
                    continue
                if (
                    scores[j] >= p.follow_threshold + h.p.blink_cost
                    or since >= p.follow_window_months
                ):
                    self._cut(h, capex, (self._flip[1],), leader=False)
        total = 0
        self._ocf = ocf
        for j, h in enumerate(self._hypers):
            planned = _cents(capex * h.p.capex_share)
            actual = _cents(planned * (1.0 - p.capex_cut)) if h.cut else planned
            total += actual
            # its OCF: its capex / (the sector's capex/OCF x its scale)
            self._fcf[j] = _cents(ocf * h.p.capex_share / h.p.ocf_ratio_scale) - actual
            self._put(f"capex:{h.p.name}", actual)
            self._put(f"fcf:{h.p.name}", self._fcf[j])
        self._put("capex", total)
        self._put("ocf", _cents(ocf))

    def _cut(self, h: _Hyper, capex: float, cause: tuple[int, ...], leader: bool) -> int:
        h.cut = True
        planned = _cents(capex * h.p.capex_share)
        seq = self._emit(
            CapexCut,
            h.p.name,
            cause,
            planned=planned,
            capex=_cents(planned * (1.0 - self.params.capex_cut)),
            leader=leader,
        )
        h.cut_seq = seq
        return seq

    # ---------------------------------------------------------------------------- steps 4-6

    def _cause_of(self, name: str) -> tuple[int, ...]:
        """What moved ``name`` this month: its latest record (or a pull-back on it) this
        month, else the latest record that moved the market."""
        seq = self._month_latest.get(name, self._stress_seq)
        return () if seq is None else (seq,)

    def _hazard(self, exponent: float, ref: float) -> float:
        """``ref x e^exponent`` per year, capped at ``cds_max_hazard`` (no overflow)."""
        cap = self.params.cds_max_hazard
        return min(cap, ref * math.exp(min(exponent, 50.0)))

    def _step_spreads(self) -> None:
        """Step 4: each borrower's implied 5-year CDS spread (series ``cds:<name>``, bps) from
        a reduced-form hazard on its state, by the credit triangle ``s = h (1 - R)``; a
        ``SpreadGapped`` when it widens by more than ``spread_gap_bps`` in the month.

        A lab's hazard follows its runway (x ``cds_failed_round_mult`` after a failed round);
        a neocloud's is its own, from its DSCR, plus its customers' credit
        (:func:`neocloud_hazard`): the labs' hazards above ``cds_contagion_floor``, each
        weighted by the share of the neocloud's contracted book the lab owes."""
        p = self.params
        loss = 1.0 - p.cds_recovery
        hazards: list[tuple[str, float]] = []
        lab_h: dict[str, float] = {}
        for lab in self._labs:
            if lab.defaulted:
                h = p.cds_max_hazard
            else:
                runway = max(0, lab.cash) / lab.burn if lab.burn > 0 else 240.0
                exponent = (p.cds_lab_runway - min(runway, 240.0)) / p.cds_lab_width
                h = self._hazard(exponent, p.cds_lab_hazard)
                failed = lab.last_fail_period
                if failed is not None and self.period - failed < p.retry_months:
                    h = min(p.cds_max_hazard, h * p.cds_failed_round_mult)
            hazards.append((lab.p.name, h))
            lab_h[lab.p.name] = h
        # a neocloud's gap with nothing of its own this month follows from the lab whose
        # credit widened it most this month (that lab's record this month, its failed round)
        widened_by: dict[str, str] = {}
        for neo in self._neos:
            name = neo.p.name
            if neo.defaulted:
                h = p.cds_max_hazard
            else:
                # no debt service left: as safe as the floor of the rule allows
                dscr = neo.dscr if neo.debt > 0 and neo.payment > 0 else 10.0
                own = self._hazard((p.cds_neo_dscr - dscr) / p.cds_neo_width, p.cds_neo_hazard)
                exposures = self._exposures(neo, lab_h)
                h = neocloud_hazard(
                    own, exposures, p.cds_contagion_beta, p.cds_contagion_floor, p.cds_max_hazard
                )
                best = 0.0
                for lab, (share, h_lab) in zip(self._labs, exposures, strict=True):
                    term = _contagion(share, h_lab, p.cds_contagion_beta, p.cds_contagion_floor)
                    rise = term - self._contagion_prev.get((name, lab.p.name), 0.0)
                    self._contagion_prev[(name, lab.p.name)] = term
                    if rise > best:
                        best, widened_by[name] = rise, lab.p.name
            hazards.append((name, h))
        for name, h in hazards:
            bps = _int(h * loss * 10_000)
            self._put(f"cds:{name}", bps)
            prev = self._cds_prev.get(name)
            self._cds_prev[name] = bps
            if prev is not None and bps - prev > p.spread_gap_bps:
                cause = self._cause_of(name)
                lab = widened_by.get(name)
                if name not in self._month_latest and lab in self._month_latest:
                    cause = (self._month_latest[lab],)
                self._emit(
                    SpreadGapped,
                    name,
                    cause,
                    spread_bps=bps,
                    previous_bps=prev,
                    change_bps=bps - prev,
                    hazard_ppm=_ppm(h),
                )

    def _exposures(self, neo: _Neo, lab_h: dict[str, float]) -> list[tuple[float, float]]:
        """``(share, hazard)`` per lab, in the labs' order: the share (0..1) of ``neo``'s
        contracted book (its leases' monthly contract revenue, re-leases included) the lab owes
        unguaranteed, and the lab's hazard per year. A wrapped lab's share is 0 (its lease
        guarantor stands behind the leases: they are never pulled back), and so is a defaulted
        lab's (it has pulled everything back: the loss is in the neocloud's DSCR)."""
        book = sum(lease.gpus * lease.price for lease in neo.leases)
        out = []
        for lab in self._labs:
            owed = sum(x.gpus * x.price for x in neo.leases if x.tenant == lab.p.name)
            exposed = book > 0 and not lab.p.wrapped and not lab.defaulted
            out.append((owed / book if exposed else 0.0, lab_h[lab.p.name]))
        return out

    def _step_equity(self) -> None:
        """Step 5: the neoclouds' and hyperscalers' equity marks (series ``equity:<name>``,
        cents); an ``EquityMarked`` when one falls by more than ``equity_fall_threshold``.

        A neocloud: ``neo_ev_multiple`` x its annual cash flow before debt service, less its
        debt, at least 0 (0 once defaulted: the equity is wiped out). A hyperscaler:
        ``equity_ocf_multiple`` x its annual OCF plus ``equity_backlog_multiple`` x its
        remaining backlog."""
        p = self.params
        marks: list[tuple[str, int]] = []
        for neo in self._neos:
            mark = 0
            if not neo.defaulted:
                ev_ = _cents(p.neo_ev_multiple * MONTHS * neo.cash_flow)
                mark = max(0, ev_ - neo.debt)
            marks.append((neo.p.name, mark))
        for h in self._hypers:
            ocf = self._ocf * h.p.capex_share / h.p.ocf_ratio_scale
            backlog = sum(entry[1] for entry in h.book)
            mark = _cents(
                p.equity_ocf_multiple * MONTHS * ocf + p.equity_backlog_multiple * backlog
            )
            marks.append((h.p.name, mark))
        threshold = _ppm(p.equity_fall_threshold)
        for name, mark in marks:
            self._put(f"equity:{name}", mark)
            prev = self._equity_prev.get(name)
            self._equity_prev[name] = mark
            if prev is None or prev <= 0:
                continue
            if (prev - mark) * PPM > threshold * prev:
                self._emit(
                    EquityMarked,
                    name,
                    self._cause_of(name),
                    mark=mark,
                    previous=prev,
                    fall_ppm=(prev - mark) * PPM // prev,
                )

    def _step_auctions(self) -> None:
        """Step 6: each fleet defaulted this month is bought at its auction value by the
        best-capitalised hyperscaler: the largest free cash flow (its OCF minus its capex)
        this month, the first listed on a tie. The GPUs stay on the rental market (the buyer
        rents them out), so the glut is unchanged."""
        auctions, self._auctions = self._auctions, []
        if not self._hypers:
            return
        base = self._gpu_value(self._base_price())
        for neo, seq, value, per_gpu in auctions:
            j = max(range(len(self._hypers)), key=lambda k: (self._fcf[k], -k))
            full = neo.p.gpus * base
            self._emit(
                CapacityAcquired,
                neo.p.name,
                (seq,),
                buyer=self._hypers[j].p.name,
                gpus=neo.p.gpus,
                price=value,
                price_per_gpu=per_gpu,
                discount_ppm=(full - value) * PPM // full if full > 0 else 0,
            )
