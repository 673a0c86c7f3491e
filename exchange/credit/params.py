"""The credit economy's parameters (issue #21): the labs', neoclouds' and hyperscalers'
parameter models and :class:`EconomyParams`, with their defaults and the units they are in.

Apart from :mod:`exchange.credit.economy` (which re-exports every name here, and runs the
model) so that a scenario's configuration can name an economy without importing the model
itself: its records and agents are 25-30 ms of start-up that a session without an economy
never uses. Units and sources: :mod:`exchange.credit.economy` and ``docs/credit.md``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Parts per million in one.
PPM = 1_000_000
#: Cents per dollar, and handy magnitudes in cents.
CENTS = 100
BN = 1_000_000_000 * CENTS
#: A rental tick is $0.001 per GPU-hour: 10 ticks per cent.
TICKS_PER_CENT = 10
#: GPU-hours in a month (8,760 hours a year / 12).
HOURS_PER_MONTH = 730
#: Periods per year.
MONTHS = 12


# --------------------------------------------------------------------------------------------
# parameters

_Frac = Field(ge=0.0, le=1.0)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabParams(_Frozen):
    """A frontier lab: the revenue path (S, S', S''), the burn and the equity treadmill.

    Revenue is a monthly run-rate whose log grows at ``growth + accel * t`` per year (``t`` in
    years from January 2024), plus a monthly noise: S is the level, S' the velocity, S'' the
    acceleration. ``accel < 0`` is the seed's deceleration.
    """

    name: str = Field(min_length=1, max_length=64)
    revenue_start: int = Field(
        gt=0, description="annualised revenue run-rate in January 2024, cents per year"
    )
    growth: float = Field(
        ge=-2.0, le=5.0, description="log growth of revenue per year in January 2024 (S'/S)"
    )
    accel: float = Field(
        ge=-3.0, le=3.0, description="change of that growth rate per year (drives S'')"
    )
    revenue_noise: float = Field(
        default=0.01, ge=0.0, le=0.2, description="sd of the monthly log-revenue shock; assumption"
    )
    burn_start: float = Field(ge=0.0, le=3.0, description="cash burn / revenue in January 2024")
    burn_end: float = Field(ge=0.0, le=3.0, description="burn / revenue after convergence")
    burn_converge_months: int = Field(
        default=36,
        ge=1,
        le=240,
        description="months for the burn share to reach burn_end; seed: ~9 % by 2027",
    )
    initial_mark: int = Field(gt=0, description="last equity mark in January 2024, cents")
    initial_cash: int = Field(ge=0, description="cash in January 2024, cents")
    wrapped: bool = Field(
        default=False, description="a guarantor stands behind its lease shortfalls"
    )
    lease_guarantor: str | None = Field(
        default=None, description="who pays the lease shortfalls when a round fails (wrapped)"
    )
    residual_guarantor: str | None = Field(
        default=None, description="who guarantees the chips' residual value (not yet used)"
    )
    revenue_per_compute: float | None = Field(
        default=None,
        gt=0.0,
        le=100.0,
        description="revenue per dollar of compute (None: not modelled); seed: $1.70 (wrapped)",
    )

    @model_validator(mode="after")
    def _check(self) -> LabParams:
        if self.wrapped and not self.lease_guarantor:
            raise ValueError(f"wrapped lab {self.name!r} needs a lease_guarantor")
        if not self.wrapped and self.lease_guarantor:
            raise ValueError(f"naked lab {self.name!r} cannot have a lease_guarantor")
        return self


class NeocloudParams(_Frozen):
    """A neocloud: GPUs rented under take-or-pay contracts and on the open market, financed by
    an amortising GPU-backed term loan. Prices in ticks ($0.001) per GPU-hour."""

    name: str = Field(min_length=1, max_length=64)
    gpus: int = Field(gt=0, le=100_000_000, description="fleet, GPUs")
    contracted_share: float = Field(ge=0.0, le=1.0, description="share of the fleet under contract")
    naked_share: float = Field(
        ge=0.0, le=1.0, description="share of the contracts owed by labs[0], the naked lab"
    )
    wrapped_share: float = Field(
        ge=0.0, le=1.0, description="share of the contracts owed by labs[1], the wrapped lab"
    )
    contract_price: int = Field(gt=0, description="contract rate, ticks per GPU-hour")
    opex: int = Field(ge=0, description="power, sites and staff, ticks per GPU-hour")
    utilisation: float = Field(
        default=0.7, ge=0.0, le=1.0, description="open-market occupancy; assumption"
    )
    debt_principal: int = Field(ge=0, description="GPU-backed term loans at period 0, cents")
    debt_rate: float = Field(
        default=0.09, ge=0.0, le=1.0, description="loan rate per year; assumption"
    )
    debt_term_months: int = Field(
        default=84, ge=1, le=600, description="amortisation, months; assumption"
    )
    covenant_dscr: float = Field(
        default=1.2, ge=1.0, le=5.0, description="minimum debt-service coverage; assumption"
    )

    @model_validator(mode="after")
    def _check(self) -> NeocloudParams:
        if self.naked_share + self.wrapped_share > 1.0:
            raise ValueError(f"{self.name}: naked_share + wrapped_share exceeds 1")
        return self


class HyperscalerParams(_Frozen):
    """A hyperscaler: a backlog (RPO) partly owed by the labs, a share of the sector's capex,
    its capex/OCF relative to the sector's, and its cost of blinking first."""

    name: str = Field(min_length=1, max_length=64)
    backlog: int = Field(ge=0, description="contracted backlog (RPO), cents")
    naked_share: float = Field(
        ge=0.0, le=1.0, description="share of the backlog owed by labs[0], the naked lab"
    )
    wrapped_share: float = Field(
        ge=0.0, le=1.0, description="share of the backlog owed by labs[1], the wrapped lab"
    )
    capex_share: float = Field(ge=0.0, le=1.0, description="share of the sector's capex")
    ocf_ratio_scale: float = Field(
        gt=0.0, le=10.0, description="its capex/OCF divided by the sector's"
    )
    blink_cost: float | None = Field(
        description="score a cut must clear above the threshold; None: cannot cut"
    )

    @model_validator(mode="after")
    def _check(self) -> HyperscalerParams:
        if self.naked_share + self.wrapped_share > 1.0:
            raise ValueError(f"{self.name}: naked_share + wrapped_share exceeds 1")
        return self


def _default_labs() -> tuple[LabParams, LabParams]:
    # Sources (docs/credit.md, "The economy"): burn 57 % and 9 % by 2027, the $86bn mark in
    # early 2024, the guarantors (Google for lease shortfalls, Broadcom for residual value) are
    # the seed's; revenue levels, the growth path, cash and Anthropic's mark are assumptions
    # (growth 1.2/yr slowing by 0.25/yr puts the modelled rounds near the seed's marks).
    return (
        LabParams(
            name="OpenAI",
            revenue_start=2_500_000_000 * CENTS,
            growth=1.2,
            accel=-0.25,
            burn_start=0.57,
            burn_end=0.57,
            initial_mark=86 * BN,
            initial_cash=2_200_000_000 * CENTS,
        ),
        LabParams(
            name="Anthropic",
            revenue_start=1_000_000_000 * CENTS,
            growth=1.2,
            accel=-0.25,
            burn_start=0.60,
            burn_end=0.09,
            initial_mark=18 * BN,
            initial_cash=1_000_000_000 * CENTS,
            wrapped=True,
            lease_guarantor="Google",
            revenue_per_compute=1.70,
            residual_guarantor="Broadcom",
        ),
    )


def _default_neoclouds() -> tuple[NeocloudParams, ...]:
    # CoreWeave's book about two-thirds one lab is the seed's; the fleet, prices and debt are
    # assumptions (the seed's DDTL 5.0, $3.1bn, is one facility of the $13.5bn; 13.5bn at 9 %
    # over 84 months gives a debt-service coverage of about 1.25). The diversified neocloud
    # is an assumption: the contrast the seed draws, with coverage about 1.6.
    return (
        NeocloudParams(
            name="CoreWeave",
            gpus=250_000,
            contracted_share=0.9,
            naked_share=2 / 3,
            wrapped_share=0.0,
            contract_price=2_500,
            opex=900,
            debt_principal=13_500_000_000 * CENTS,
        ),
        NeocloudParams(
            name="Diversified neocloud",
            gpus=100_000,
            contracted_share=0.9,
            naked_share=0.10,
            wrapped_share=0.10,
            contract_price=2_500,
            opex=900,
            debt_principal=4_200_000_000 * CENTS,
        ),
    )


def _default_hyperscalers() -> tuple[HyperscalerParams, ...]:
    # The seed: $2.1tn of backlog across the four platforms, about half owed by the two labs
    # (Microsoft 49 %, Oracle 54 % with about $300bn owed by OpenAI alone, Amazon 51 %,
    # Google 43 % and a backlog north of $460bn). The split of the other three backlogs and of
    # each two-lab share between the labs, the capex shares, the capex/OCF scales and the
    # blink costs are assumptions read from the seed's "Who blinks first" (Meta cheapest,
    # Google dearest, Oracle cannot).
    return (
        HyperscalerParams(
            name="Microsoft",
            backlog=625 * BN,
            naked_share=0.44,
            wrapped_share=0.05,
            capex_share=0.26,
            ocf_ratio_scale=0.9,
            blink_cost=0.4,
        ),
        HyperscalerParams(
            name="Oracle",
            backlog=600 * BN,
            naked_share=0.50,
            wrapped_share=0.04,
            capex_share=0.05,
            ocf_ratio_scale=2.0,
            blink_cost=None,
        ),
        HyperscalerParams(
            name="Amazon",
            backlog=415 * BN,
            naked_share=0.09,
            wrapped_share=0.42,
            capex_share=0.30,
            ocf_ratio_scale=1.15,
            blink_cost=0.3,
        ),
        HyperscalerParams(
            name="Google",
            backlog=460 * BN,
            naked_share=0.0,
            wrapped_share=0.43,
            capex_share=0.22,
            ocf_ratio_scale=0.85,
            blink_cost=0.8,
        ),
        HyperscalerParams(
            name="Meta",
            backlog=0,
            naked_share=0.0,
            wrapped_share=0.0,
            capex_share=0.17,
            ocf_ratio_scale=1.0,
            blink_cost=0.0,
        ),
    )


class EconomyParams(_Frozen):
    """All parameters of the economy; defaults are the seed's figures or stated assumptions
    (each source in ``docs/credit.md``, "The economy")."""

    labs: tuple[LabParams, ...] = Field(default_factory=_default_labs)
    neoclouds: tuple[NeocloudParams, ...] = Field(default_factory=_default_neoclouds)
    hyperscalers: tuple[HyperscalerParams, ...] = Field(default_factory=_default_hyperscalers)

    # the equity treadmill
    multiple_base: float = Field(
        default=10.0, ge=0.0, le=1000.0, description="revenue multiple at zero growth; assumption"
    )
    multiple_per_growth: float = Field(
        default=20.3,
        ge=0.0,
        le=1000.0,
        description="multiple per unit of log growth/yr; fits the seed's $86bn",
    )
    multiple_floor: float = Field(
        default=1.0,
        gt=0.0,
        le=1000.0,
        description="lowest revenue multiple a round prices at; assumption",
    )
    round_noise: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="sd of a round price's log noise (3 sd cap); assumption",
    )
    growth_window_months: int = Field(
        default=6, ge=1, le=60, description="trailing months of revenue growth priced; assumption"
    )
    markup_funding: float = Field(
        default=0.2, gt=0.0, le=10.0, description="new money per dollar of markup; assumption"
    )
    step_up_floor: float = Field(
        default=1.0,
        gt=0.0,
        le=10.0,
        description="lowest step-up a round may clear at; seed: no down round",
    )
    runway_months: int = Field(
        default=12, ge=1, le=120, description="months of burn a round must fund; assumption"
    )
    raise_below_months: int = Field(
        default=6,
        ge=1,
        le=120,
        description="a round is tried below this runway, months; assumption",
    )
    retry_months: int = Field(
        default=6, ge=1, le=120, description="months before retrying a failed round; assumption"
    )
    # the loan book
    pullback_lag_months: int = Field(
        default=1, ge=0, le=24, description="months from failed round to pull-back; assumption"
    )
    pullback_min: float = Field(
        default=0.2, ge=0.0, le=1.0, description="smallest share of commitments pulled; assumption"
    )
    pullback_max: float = Field(
        default=0.5, ge=0.0, le=1.0, description="largest share pulled at one failure; assumption"
    )
    contract_months: int = Field(
        default=60, ge=1, le=360, description="take-or-pay term, months; seed: 5-year deals"
    )
    # re-leasing and the glut
    release_lag_months: int = Field(
        default=3, ge=0, le=60, description="months vacant before re-leasing; assumption"
    )
    release_discount_min: float = Field(
        default=0.30, ge=0.0, le=1.0, description="lowest re-leasing discount; seed: 30 %"
    )
    release_discount_max: float = Field(
        default=0.50, ge=0.0, le=1.0, description="highest re-leasing discount; seed: 50 %"
    )
    release_term_months: int = Field(
        default=12, ge=1, le=120, description="re-lease term, months; seed: 'shorter'"
    )
    hyperscaler_gpu_price: int = Field(
        default=2_500,
        gt=0,
        description="ticks/GPU-hour turning pulled hyperscaler backlog into GPUs; assumption",
    )
    market_gpus: int = Field(
        default=4_000_000, gt=0, description="GPUs in the open rental market; assumption"
    )
    glut_elasticity: float = Field(
        default=1.0, ge=0.0, le=100.0, description="price fall per released/market GPUs; assumption"
    )
    glut_cap: float = Field(
        default=0.5,
        ge=0.0,
        lt=1.0,
        description="largest price fall of the glut; seed: 50 % discount",
    )
    rental_price: tuple[int, ...] = Field(
        default=(2_000,),
        min_length=1,
        description="open-market rental, ticks/GPU-hour by period, last held; seed 000: ~$2 H100",
    )
    # hyperscaler capex and the flip
    capex_years: tuple[int, ...] = Field(
        default=(2023, 2024, 2025, 2026, 2027), description="calendar years of capex_by_year"
    )
    capex_by_year: tuple[int, ...] = Field(
        default=(150 * BN, 226 * BN, 410 * BN, 725 * BN, 1100 * BN),
        description="sector capex per calendar year, cents; seed: $150bn-$1.1tn",
    )
    capex_to_ocf: tuple[float, ...] = Field(
        default=(0.42, 0.50, 0.60, 1.00),
        description="sector capex/OCF for the first capex_years; seed: 42-100 %",
    )
    capex_growth_after: float = Field(
        default=0.10,
        ge=-1.0,
        le=2.0,
        description="log growth of capex after the last year; assumption",
    )
    ocf_growth_after: float = Field(
        default=0.10,
        ge=-1.0,
        le=2.0,
        description="log growth of OCF after the last ratio; assumption",
    )
    capex_cut: float = Field(
        default=0.25, ge=0.0, le=1.0, description="share of capex cut; seed: the -25 points of S''"
    )
    blink_threshold: float = Field(
        default=0.3, description="score the first cut must clear; assumption"
    )
    follow_threshold: float = Field(
        default=0.0, description="score a follower must clear; assumption"
    )
    follow_window_months: int = Field(
        default=6, ge=0, le=120, description="months by which followers cut; assumption"
    )
    reward_stress_min: float = Field(
        default=0.0, ge=0.0, description="stress above which a cut is rewarded; assumption"
    )
    default_stress: float = Field(
        default=0.1, ge=0.0, le=10.0, description="stress added by each default; assumption"
    )
    blink_noise: float = Field(
        default=0.05, ge=0.0, le=1.0, description="sd of blink scores; assumption"
    )
    # step 4: refinancing (loans that cannot roll) and the borrowers' CDS spreads
    refi_share: float = Field(
        default=0.25,
        ge=0.0,
        le=1.0,
        description="share of a neocloud's principal maturing each year, to roll; assumption",
    )
    refi_month: int = Field(
        default=11, ge=0, le=11, description="month of the year of the maturities (11: Dec)"
    )
    refi_ltv_headroom: float = Field(
        default=1.25,
        ge=1.0,
        le=100.0,
        description="largest loan-to-value a lender rolls, x the origination LTV; assumption",
    )
    resale_months: int = Field(
        default=12,
        ge=1,
        le=120,
        description="a GPU's auction value: months of open-market rent at the glut-hit price",
    )
    cds_recovery: float = Field(
        default=0.40,
        ge=0.0,
        lt=1.0,
        description="recovery of the credit triangle and of a lab's default; market convention",
    )
    cds_neo_hazard: float = Field(
        default=0.06,
        gt=0.0,
        le=10.0,
        description="neocloud hazard /yr at cds_neo_dscr; seed 000: ~360 bps before the widening",
    )
    cds_neo_dscr: float = Field(
        default=1.25, gt=0.0, le=10.0, description="DSCR of the reference hazard; assumption"
    )
    cds_neo_width: float = Field(
        default=0.175,
        gt=0.0,
        le=10.0,
        description="DSCR fall multiplying the hazard by e; 1.15 -> ~640 bps (seed 000)",
    )
    cds_lab_hazard: float = Field(
        default=0.05, gt=0.0, le=10.0, description="lab hazard /yr at cds_lab_runway; assumption"
    )
    cds_lab_runway: float = Field(
        default=12.0, gt=0.0, le=240.0, description="runway (months) of the reference hazard"
    )
    cds_lab_width: float = Field(
        default=18.0, gt=0.0, le=240.0, description="runway months lost multiplying it by e"
    )
    cds_failed_round_mult: float = Field(
        default=2.5,
        ge=1.0,
        le=100.0,
        description=(
            "hazard multiple for retry_months after a failed round; assumption: the built-in's"
            " CoreWeave then widens ~280 bps to the seed's 640-700"
        ),
    )
    cds_contagion_beta: float = Field(
        default=1.0,
        ge=0.0,
        le=100.0,
        description=(
            "a neocloud's chance of failing with a lab, per unit share of its contracted book"
            " the lab owes (capped at 1); assumption: the share itself"
        ),
    )
    cds_contagion_floor: float = Field(
        default=0.05,
        ge=0.0,
        le=10.0,
        description=(
            "lab hazard /yr a neocloud's own level already prices (the lab's at"
            " cds_lab_runway); only the excess passes through; assumption"
        ),
    )
    cds_max_hazard: float = Field(
        default=1.0,
        gt=0.0,
        le=10.0,
        description="hazard cap /yr, and a defaulted name's hazard; assumption",
    )
    spread_gap_bps: int = Field(
        default=150,
        ge=1,
        le=100_000,
        description="a month's widening that is a gap, bps; seed 000: +280 in two months",
    )
    # step 5: equity marks
    equity_ocf_multiple: float = Field(
        default=12.0, ge=0.0, le=1000.0, description="hyperscaler mark per $ of annual OCF"
    )
    equity_backlog_multiple: float = Field(
        default=0.5, ge=0.0, le=100.0, description="hyperscaler mark per $ of backlog"
    )
    neo_ev_multiple: float = Field(
        default=8.0, ge=0.0, le=1000.0, description="neocloud EV per $ of annual cash flow"
    )
    equity_fall_threshold: float = Field(
        default=0.03,
        gt=0.0,
        le=1.0,
        description="a month's fall of a mark that is recorded (EquityMarked); assumption",
    )

    @model_validator(mode="after")
    def _check(self) -> EconomyParams:
        names = [x.name for x in (*self.labs, *self.neoclouds, *self.hyperscalers)]
        if len(set(names)) != len(names):
            raise ValueError(f"entity names must be unique: {names}")
        if len(self.labs) != 2 or self.labs[0].wrapped:
            raise ValueError(
                "labs must be two: the naked lab, then the wrapped lab (or, for a"
                " counterfactual, a second naked one)"
            )
        if not (
            len(self.capex_years) == len(self.capex_by_year) >= 2
            and len(self.capex_to_ocf) >= 1
            and len(self.capex_to_ocf) <= len(self.capex_years)
        ):
            raise ValueError("capex_years, capex_by_year and capex_to_ocf lengths disagree")
        if list(self.capex_years) != list(range(self.capex_years[0], self.capex_years[-1] + 1)):
            raise ValueError("capex_years must be consecutive calendar years")
        if any(c <= 0 for c in self.capex_by_year) or any(r <= 0 for r in self.capex_to_ocf):
            raise ValueError("capex and capex/OCF ratios must be positive")
        if any(p <= 0 for p in self.rental_price):
            raise ValueError("rental prices must be positive ticks")
        if self.release_discount_min > self.release_discount_max:
            raise ValueError("release_discount_min exceeds release_discount_max")
        if self.pullback_min > self.pullback_max:
            raise ValueError("pullback_min exceeds pullback_max")
        share = sum(h.capex_share for h in self.hyperscalers)
        if self.hyperscalers and abs(share - 1.0) > 1e-9:
            raise ValueError(f"hyperscalers' capex_share must sum to 1, got {share}")
        return self
