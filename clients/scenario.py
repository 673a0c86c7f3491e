"""Scenario files: a market, its participants and their bots, in one validated TOML file.

A :class:`MarketScenario` is what ``gpuex run FILE.toml`` (or a built-in name such as
``guarantor-spiral``) runs: indices from the seed calibrations (or full specs), perpetuals and
residual value swaps, accounts with their starting cash, margin, the insurance and default funds,
and bots with their strategy, parameters and latency. Validation errors name the field and the
problem (``bots.2.params.spread_ticks: Input should be greater than 0``).

Conveniences, applied before validation anywhere in the file:

* money may be written as a dollar string — ``"$5,700,000"``, ``"$5.7M"``, ``"$250k"`` — and
  becomes integer cents (exactly: a dollar string with more than two decimals of cents is an
  error, never rounded); plain integers are minor units (cents);
* any field ending in ``_ns`` may be written as a duration — ``"90s"``, ``"30m"``, ``"8h"``,
  ``"3d"``, ``"2w"`` — and becomes integer nanoseconds.

Limits (``exchange.core.limits``, ``docs/scenarios.md``): money at most ``MAX_BALANCE``, durations
at most ``MAX_DURATION_NS``, every integer inside int64, dates in ``FIRST_DATE..LAST_DATE``,
booleans only where a field takes one, and the exchange's timed actions the file implies (index
prints, fundings, premiums, margin cycles) at most ``MAX_MARKET_ACTIONS``: a file past them is
refused before anything runs, naming the field.

:func:`load_scenario` (TOML text or a path) is the one entry point that validates a file
completely; it raises :class:`ScenarioError` with a one-line reason.

The exchange never imports this module: ``exchange.sessions.scenarios.load_scenario`` finds it
through
the ``gpuex.scenarios`` entry point (see ``setup.py``), so a session with bots runs, resumes and
verifies through the same ``exchange.sessions.session`` functions as any other.
"""

from __future__ import annotations

import re
import tomllib
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    field_validator,
    model_serializer,
    model_validator,
)

from clients.budget import DEFAULT_LINES
from clients.latency import Latency
from exchange.core.clock import Simulator
from exchange.core.limits import (
    MAX_BALANCE,
    MAX_DURATION_NS,
    MAX_SEED,
    MAX_SESSION_DAYS,
    check_date,
    check_funding,
    check_instrument,
    check_market_actions,
    check_money,
    check_raw,
    every_count,
)
from exchange.core.units import parse_duration
from exchange.credit.params import EconomyParams
from exchange.kernel.engine import DAY_NS, Exchange
from exchange.products.cds import CdsSpec
from exchange.products.index import (
    CALIBRATIONS,
    SEEDED_CALIBRATIONS,
    GenerationShock,
    IndexSpec,
    LogJump,
)
from exchange.products.perp import PerpSpec
from exchange.products.rvs import RvsSpec
from exchange.risk.cds_market import action_count, schedule_cds
from exchange.risk.margin_cycle import MarginConfig
from exchange.sessions.market import schedule_market
from exchange.sessions.scenarios import ScenarioError, scenario_errors

#: What ``exchange.sessions.scenarios`` needs of a provider: the kind it owns and its file suffix.
KIND = "market"
SUFFIX = ".toml"

_NAME = r"^[A-Za-z0-9_.\-]+$"
_MONEY = re.compile(r"^\s*\$\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*([kKmMbB]?)\s*$")
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9}


def parse_money(text: str) -> int:
    """``"$5.7M"`` -> 570_000_000 cents; exact (sub-cent amounts are an error), at most
    ``MAX_BALANCE`` (the ledger's bound)."""
    match = _MONEY.match(text)
    if not match:
        raise ValueError(f"{text!r} is not an amount like '$5,700,000' or '$5.7M'")
    if len(match.group(1)) > 40:
        raise ValueError(f"{text!r} has too many digits")
    try:
        dollars = Decimal(match.group(1).replace(",", "")) * _SCALE[match.group(2).lower()]
    except InvalidOperation:
        raise ValueError(f"{text!r} is not an amount") from None
    cents = dollars * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"{text!r} has a fraction of a cent")
    if cents > MAX_BALANCE:
        raise ValueError(f"{text!r} is past the ledger's bound of {MAX_BALANCE:,} cents")
    return int(cents)


def _normalise(value: Any, key: str = "", where: str = "") -> Any:
    """Dollar strings -> cents, durations in ``*_ns`` fields -> ns, recursively; a bad one is
    a ``ValueError`` naming its place in the file (``accounts.0.cash: ...``)."""
    if isinstance(value, dict):
        return {k: _normalise(v, k, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v, key, f"{where}.{i}") for i, v in enumerate(value)]
    if isinstance(value, str):
        try:
            if value.lstrip().startswith("$"):
                return parse_money(value)
            if key.endswith("_ns"):
                return parse_duration(value)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return value


class IndexEntry(BaseModel):
    """An index: a seed calibration by name (optionally republished at another interval, with
    extra generation jumps or shocks), or a full ``IndexSpec`` under ``spec``.

    Attributes:
        calibration: a name from ``exchange.products.index.CALIBRATIONS`` (``H100-RENTAL``, ...).
        seeded: take the calibration from ``exchange.products.index.SEEDED_CALIBRATIONS`` instead:
        the
            same anchors and noise, with each generation release a random event the session
            seed draws (date and size) rather than a fixed-date jump.
        interval_ns: publication interval (default: the calibration's own).
        extra_jumps: ``[[date, log_jump], ...]`` added to the calibration's jumps (a new GPU
            generation shipping: ``[[2024-11-01, -0.35]]`` is a 30 % overnight drop).
        extra_shocks: generation shocks (``exchange.products.index.GenerationShock`` tables:
        ``centre``,
            ``date_sd_days``, ``date_max_days``, ``log_size``, ``log_size_sd``,
            ``log_size_min``, ``log_size_max``, ``label``) added after the source's own.
        spec: a complete index spec instead of a calibration.

    ``seeded`` and ``extra_shocks`` are left out of the serialised form at their defaults, so
    the stored configuration of a file that does not use them is what it was before they
    existed.
    """

    model_config = ConfigDict(extra="forbid")

    calibration: str | None = None
    seeded: StrictBool = False
    interval_ns: int | None = Field(default=None, gt=0, le=MAX_DURATION_NS)
    extra_jumps: list[tuple[date, LogJump]] = Field(default_factory=list)
    extra_shocks: list[GenerationShock] = Field(default_factory=list, max_length=64)
    spec: IndexSpec | None = None

    @model_serializer(mode="wrap")
    def _omit_unused(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if not self.seeded:  # stored configurations from before these fields stay identical
            data.pop("seeded", None)
        if not self.extra_shocks:
            data.pop("extra_shocks", None)
        return data

    @model_validator(mode="after")
    def _one_source(self) -> IndexEntry:
        if (self.calibration is None) == (self.spec is None):
            raise ValueError("give exactly one of 'calibration' and 'spec'")
        if self.calibration is not None and self.calibration not in CALIBRATIONS:
            raise ValueError(
                f"calibration {self.calibration!r} is unknown; known: {', '.join(CALIBRATIONS)}"
            )
        if self.seeded and self.calibration is None:
            raise ValueError("seeded applies to a calibration; give a spec's shocks in the spec")
        return self

    def build(self) -> IndexSpec:
        """The index spec this entry describes. An extra jump must lie inside the
        calibration's anchors, as the calibration's own jumps do (``first < date <= last``);
        one on the date of a calibration jump adds to it."""
        if self.spec is not None:
            spec = self.spec
        else:
            spec = (SEEDED_CALIBRATIONS if self.seeded else CALIBRATIONS)[self.calibration]
        update: dict[str, Any] = {}
        if self.interval_ns is not None:
            update["interval_ns"] = self.interval_ns
        if self.extra_jumps:
            source = spec.source
            if not hasattr(source, "jumps"):
                raise ValueError(f"index {spec.name}: its source has no jumps to add to")
            first, last = source.anchors[0][0], source.anchors[-1][0]
            for i, (day, _) in enumerate(self.extra_jumps):
                if not first < day <= last:
                    raise ValueError(
                        f"extra_jumps.{i}: {day} is outside the anchors of {spec.name} "
                        f"({first}, {last}]: a jump is absorbed by the anchor segment "
                        "containing it, so it must lie in one"
                    )
            jumps = sorted([*source.jumps, *self.extra_jumps])
            # model_copy, not a new validation: a jump on a calibration jump's date is kept
            # as a second jump, summed where the path is computed (the log depends on it)
            update["source"] = source.model_copy(update={"jumps": jumps})
        if self.extra_shocks:
            source = update.get("source", spec.source)
            if not hasattr(source, "shocks"):
                raise ValueError(f"index {spec.name}: its source has no shocks to add to")
            first, last = source.anchors[0][0], source.anchors[-1][0]
            for i, shock in enumerate(self.extra_shocks):
                if not first < shock.centre <= last:
                    raise ValueError(
                        f"extra_shocks.{i}: centre {shock.centre} is outside the anchors of "
                        f"{spec.name} ({first}, {last}]: a shock is absorbed by the anchor "
                        "segment containing it, so it must lie in one"
                    )
            shocks = [*source.shocks, *self.extra_shocks]
            update["source"] = source.model_copy(update={"shocks": shocks})
        return spec.model_copy(update=update) if update else spec


class AccountEntry(BaseModel):
    """A participant's account.

    Attributes:
        name: account name.
        cash: opening cash, minor units (or a dollar string).
        default_fund: its contribution to the default fund, minor units, taken from its cash.
        stp: self-trade prevention mode.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=_NAME)
    cash: int = Field(default=0, ge=0, le=MAX_BALANCE)
    default_fund: int = Field(default=0, ge=0, le=MAX_BALANCE)
    stp: Literal["none", "cancel-resting", "cancel-incoming", "cancel-both"] = "cancel-resting"

    @model_validator(mode="after")
    def _affordable(self) -> AccountEntry:
        if self.default_fund > self.cash:
            raise ValueError("default_fund is more than the account's cash")
        return self


class BotEntry(BaseModel):
    """A bot: which strategy trades which account, with what parameters and latency.

    Attributes:
        name: the bot's name (seeds its random streams; unique).
        account: the account it trades (must be listed under ``accounts``).
        strategy: a name from ``clients.strategies.STRATEGIES``.
        params: the strategy's parameters (validated by the strategy).
        latency: fixed and jitter latency each way, ns.
        budget_lines: per-callback budget in executed lines (``clients.budget``); omit for the
            default, ``0`` for none (trusted code only).
        remote: served over the socket gateway by ``gpuex serve`` instead of run in-process.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=_NAME)
    account: str = Field(min_length=1, max_length=64)
    strategy: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    latency: Latency = Field(default_factory=Latency)
    budget_lines: int = Field(default=DEFAULT_LINES, ge=0)
    # not part of the stored session: where a bot runs does not change the log
    remote: bool = Field(default=False, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            from clients.strategies import STRATEGIES

            strategy = (
                STRATEGIES.get(data.get("strategy"))
                if isinstance(data.get("strategy"), str)
                else None
            )
            params = getattr(strategy, "Params", None)
            if params is not None and isinstance(data.get("params"), dict):
                check_raw(data["params"], params, "params")
        return data

    @field_validator("strategy")
    @classmethod
    def _known(cls, value: str) -> str:
        from clients.strategies import STRATEGIES

        if value not in STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}; known: {', '.join(sorted(STRATEGIES))}")
        return value

    def make(self):
        """A fresh bot instance with these parameters."""
        from clients.strategies import make_bot

        return make_bot(self.strategy, self.params)


class MarketScenario(BaseModel):
    """A whole session: market, participants, bots.

    Attributes:
        kind: always ``market`` (how a stored session finds this class again).
        name: the scenario's name.
        description: what it shows, one paragraph.
        start: the session's first day (the calendar epoch of every date).
        days: session length, days.
        seed: the default seed (``gpuex run --seed`` overrides it).
        indices: published indices.
        perps: perpetual futures (``exchange.products.perp.PerpSpec`` fields).
        swaps: residual value swaps (``exchange.products.rvs.RvsSpec`` fields).
        cds: credit default swap series (``exchange.products.cds.CdsSpec`` fields), listed on the
            exchange (``exchange.risk.cds_market``; docs/credit.md, "Listing CDS on the exchange"):
            quoted by running spread, premiums on IMM dates, marked at every margin cycle's
            instant (weekly without margin) from the book or the economy's implied spread,
            settled on their reference entity's ``BorrowerDefaulted``. Left out of the stored
            configuration when empty, so a file without them stores what it did before.
        accounts: participants.
        margin: margin cycle, cure period, IM grid and auction bidders (omit for no margin).
        insurance_fund: the insurance fund at the start, minor units.
        bots: who trades.
        depth: levels per side in the book views bots receive.
        sweep_aliases: names ``gpuex sweep --param`` accepts for fields of this file, as
            ``alias = [field path, unit]`` (unit: dollars, duration, int or raw), e.g.
            ``"guarantor.capital" = ["accounts.0.cash", "dollars"]``.
        economy: the credit economy of issue #21 (``exchange.credit.economy.EconomyParams``; an
        empty
            ``[economy]`` table takes every default), stepped monthly with each record an event
            in the log (``exchange.credit.economy_schedule``); the session must then start on or
            before 2024-01-01, the economy's first month. Omit for none (left out of the
            stored configuration then, so a file without it stores what it did before).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["market"] = "market"
    name: str = Field(min_length=1, max_length=64, pattern=_NAME)
    description: str = ""
    start: date
    days: int = Field(ge=1, le=MAX_SESSION_DAYS)
    seed: int = Field(default=7, ge=0, le=MAX_SEED)
    indices: list[IndexEntry] = Field(default_factory=list)
    perps: list[PerpSpec] = Field(default_factory=list)
    swaps: list[RvsSpec] = Field(default_factory=list)
    cds: list[CdsSpec] = Field(default_factory=list, max_length=64)
    accounts: list[AccountEntry] = Field(min_length=1)
    margin: MarginConfig | None = None
    insurance_fund: int = Field(default=0, ge=0, le=MAX_BALANCE)
    bots: list[BotEntry] = Field(default_factory=list)
    depth: int = Field(default=5, ge=1, le=64)
    sweep_aliases: dict[str, tuple[str, Literal["dollars", "duration", "int", "raw"]]] = Field(
        default_factory=dict
    )
    economy: EconomyParams | None = None

    @model_serializer(mode="wrap")
    def _omit_no_economy(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if self.economy is None:  # stored configurations from before the field stay identical
            data.pop("economy", None)
        if not self.cds:  # likewise for CDS series
            data.pop("cds", None)
        return data

    @model_validator(mode="before")
    @classmethod
    def _conveniences(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = _normalise(data)
        check_raw(data, cls)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> MarketScenario:
        accounts = [a.name for a in self.accounts]
        _unique("accounts", accounts)
        _unique("bots", [b.name for b in self.bots])
        _unique("bots (accounts)", [b.account for b in self.bots])
        for i, bot in enumerate(self.bots):
            if bot.account not in accounts:
                raise ValueError(f"bots.{i}.account: {bot.account!r} is not under accounts")
        indices = set()
        for i, entry in enumerate(self.indices):
            try:
                indices.add(entry.build().name)
            except ValueError as exc:
                raise ValueError(f"indices.{i}: {exc}") from None
        for group in ("perps", "swaps"):
            for i, spec in enumerate(getattr(self, group)):
                underlying = spec.underlying if group == "perps" else spec.resale_index
                if underlying not in indices:
                    raise ValueError(f"{group}.{i}: index {underlying!r} is not under indices")
        _unique("instruments", [s.name for s in [*self.perps, *self.swaps, *self.cds]])
        if self.margin is not None:
            for i, bidder in enumerate(self.margin.auction_bidders):
                if bidder.account not in accounts:
                    raise ValueError(
                        f"margin.auction_bidders.{i}.account: {bidder.account!r} is not an account"
                    )
        for i, bot in enumerate(self.bots):
            try:
                bot.make()
            except ValueError as exc:
                raise ValueError(f"bots.{i}.params: {exc}") from None
        self._within_limits()
        return self

    def _within_limits(self) -> None:
        """The bounds of ``exchange.core.limits``: the calendar, the money the session brings in,
        the instruments' lot values and the number of timed actions the market implies."""
        check_date("start", self.start)
        check_date("the session's end (start + days)", self.start + timedelta(days=self.days))
        check_money(
            "accounts' cash and the insurance fund, together",
            sum(a.cash for a in self.accounts) + self.insurance_fund,
        )
        for i, spec in enumerate(self.swaps):
            check_date(f"swaps.{i}.listed", spec.listed)
            check_date(f"swaps.{i}.maturity", spec.maturity)
        for i, spec in enumerate(self.cds):
            check_date(f"cds.{i}.effective", spec.effective)
            check_date(f"cds.{i}.maturity", spec.maturity)
        for group in ("perps", "swaps", "cds"):
            for i, spec in enumerate(getattr(self, group)):
                check_instrument(f"{group}.{i}", spec)
        end = self.end_ns
        counts: dict[str, int] = {}
        for i, entry in enumerate(self.indices):
            spec = entry.build()
            source = spec.source
            days = [d for d, _ in [*getattr(source, "anchors", ()), *getattr(source, "jumps", ())]]
            if hasattr(source, "observations"):
                days.extend(source.observations[0][:1] + source.observations[0][-1:])
            for day in days:
                check_date(f"indices.{i} ({spec.name})", day)
            counts[f"indices.{i}.interval_ns (prints)"] = every_count(end, spec.interval_ns) + 1
        for i, spec in enumerate(self.perps):
            counts[f"perps.{i}.funding_interval_ns (fundings)"] = every_count(
                end, spec.funding_interval_ns
            )
            check_funding(f"perps.{i}", spec, end)
        for i, spec in enumerate(self.swaps):
            counts[f"swaps.{i}.premium_period_days (premiums)"] = (
                spec.maturity - spec.listed
            ).days // spec.premium_period_days + 1
        for i, spec in enumerate(self.cds):
            counts[f"cds.{i} (premiums and marks)"] = action_count(
                spec, self.start, end, None if self.margin is None else self.margin.interval_ns
            )
        if self.margin is not None:
            counts["margin.interval_ns (margin cycles)"] = every_count(end, self.margin.interval_ns)
        if self.economy is not None:
            # imported here: the economy's model is 25-30 ms of start-up a session without
            # one never uses (exchange.credit.params holds what the configuration names)
            from exchange.credit.economy_schedule import check_calendar, step_times

            check_calendar(self.start)
            counts["economy (monthly steps)"] = len(step_times(self.start, end))
        check_market_actions(end, counts)

    @property
    def end_ns(self) -> int:
        """When the session ends, ns since ``start``."""
        return self.days * DAY_NS

    @property
    def end_date(self) -> date:
        return self.start + timedelta(days=self.days)

    # ---------------------------------------------------------------- the session's steps
    def setup(self, engine: Exchange) -> None:
        """List the instruments; open, fund and enrol the accounts."""
        engine.epoch = self.start
        engine.margin = self.margin
        for spec in [*self.perps, *self.swaps, *self.cds]:
            engine.list_instrument(spec)
        for account in self.accounts:
            engine.open_account(account.name, stp=account.stp)
            if account.cash:
                engine.credit(account.name, account.cash)
            if account.default_fund:
                engine.contribute(account.name, account.default_fund)
        if self.insurance_fund:
            engine.fund_pool("insurance", self.insurance_fund)

    def schedule_market(self, engine: Exchange, sim: Simulator, seed: int) -> None:
        """The economy's monthly steps (if any: first at an instant they share), then index
        prints, marks, funding, premiums, maturities and margin cycles, then the CDS series'
        premium dates and marks (``exchange.risk.cds_market.schedule_cds``)."""
        glut = None
        if self.economy is not None:
            from exchange.credit.economy_schedule import schedule_economy  # see _within_limits

            feed = schedule_economy(
                engine, sim, params=self.economy, start=self.start, end_ns=self.end_ns, seed=seed
            )
            glut = feed.glut()  # the glut feeds the rental indices (docs/credit.md)
        schedule_market(
            engine,
            sim,
            epoch=self.start,
            indices=[entry.build() for entry in self.indices],
            end_ns=self.end_ns,
            seed=seed,
            glut=glut,
        )
        schedule_cds(engine, sim, self.end_ns)

    def drive(self, engine: Exchange, sim: Simulator, seed: int, remote: Any = None) -> Any:
        """Attach every bot and start them. ``remote(entry)`` returns the driver of a bot
        served over the gateway (``gpuex serve``); without it remote bots run in-process."""
        from clients.runner import make_runner

        runner = make_runner(engine, sim, seed, depth=self.depth)
        for entry in self.bots:
            budget = entry.budget_lines or None
            if entry.remote and remote is not None:
                runner.attach(entry.name, entry.account, remote(entry), entry.latency)
            else:
                bot = entry.make()
                runner.add(
                    entry.name, entry.account, bot, latency=entry.latency, budget_lines=budget
                )
        runner.start(self.end_ns)
        return runner


def _unique(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what}: {name!r} appears twice")
        seen.add(name)


# -------------------------------------------------------------------- files and built-ins
BUILTIN_DIR = "builtin"


def builtin_names() -> list[str]:
    """The built-in scenario files' names, sorted."""
    folder = resources.files("clients").joinpath(BUILTIN_DIR)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def builtin_text(name: str) -> str:
    """The TOML text of built-in ``name`` (what ``gpuex scenario show`` prints)."""
    if name not in builtin_names():
        raise ValueError(f"no built-in scenario file {name!r}")
    return resources.files("clients").joinpath(BUILTIN_DIR, f"{name}.toml").read_text("utf-8")


def parse_toml(text: str, origin: str) -> dict[str, Any]:
    """Parse scenario TOML; a syntax error names the file, line and column."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{origin}: {exc}") from None


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` over ``base``; dotted keys (``margin.cure_ns``) reach into tables."""
    out = dict(base)
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            inner = out.get(head)
            if isinstance(inner, list) and rest.split(".", 1)[0].isdigit():
                index, _, tail = rest.partition(".")
                items = list(inner)
                i = int(index)
                if not 0 <= i < len(items):
                    raise ValueError(f"{key}: there is no item {i} in {head!r}")
                items[i] = _merge(items[i], {tail: value}) if tail else value
                out[head] = items
            else:
                out[head] = _merge(inner if isinstance(inner, dict) else {}, {rest: value})
        else:
            out[key] = value
    return out


def load(name_or_path: str, overrides: dict[str, Any] | None = None) -> MarketScenario:
    """A scenario from a built-in name or a TOML file path, with ``overrides`` applied.

    Raises:
        ScenarioError: no such scenario, or it is not valid (one line: field and problem).
    """
    path = Path(name_or_path)
    if name_or_path in builtin_names():
        return _validated(builtin_text(name_or_path), name_or_path, overrides)
    if path.suffix == ".toml":
        return load_scenario(path, overrides)
    raise ScenarioError(f"unknown scenario {name_or_path!r}")


def load_scenario(source: str | Path, overrides: dict[str, Any] | None = None) -> MarketScenario:
    """THE validation of a scenario file: ``source`` is TOML text (a ``str``) or the path of a
    ``.toml`` file (a ``Path``); ``overrides`` (``{"days": 40, "margin.cure_ns": "3d"}``) are
    applied first, as ``gpuex run --set`` does.

    Everything a file can get wrong is checked here — syntax, fields, types (no boolean for
    a number), cross-references, the limits of ``exchange.core.limits`` and the timed actions the
    market implies — without running anything or touching the disk beyond reading the file
    (and an index's CSV source).

    Raises:
        ScenarioError: one line naming the field (or the file, line and column) and the
            problem; never any other exception for any text or overrides.
    """
    if isinstance(source, Path):
        try:
            text = source.read_text("utf-8")
        except FileNotFoundError:
            raise ScenarioError(f"scenario file {source} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ScenarioError(f"scenario file {source}: cannot be read ({exc})") from None
        return _validated(text, str(source), overrides)
    if not isinstance(source, str):
        raise ScenarioError(f"a scenario is TOML text or a Path, not {type(source).__name__}")
    return _validated(source, "scenario", overrides)


def _validated(text: str, origin: str, overrides: dict[str, Any] | None) -> MarketScenario:
    with scenario_errors():
        data = parse_toml(text, origin)
        if overrides is not None and not isinstance(overrides, dict):
            raise ValueError("overrides must be a mapping of field paths to values")
        return MarketScenario.model_validate(_merge(data, overrides or {}))


def from_config(config: dict[str, Any]) -> MarketScenario:
    """The scenario a session stored (its validated configuration)."""
    return MarketScenario.model_validate(config)
