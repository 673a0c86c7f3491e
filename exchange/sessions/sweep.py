"""Scenario sweeps: a grid of parameters x seeds, run on a Dask cluster, summarised per run.

    specs = expand_grid("products", parse_params("products", ["guarantor.capital=3e6,5.7e6"]),
                        seeds=range(1, 11))
    result = run_sweep(specs, "sweep/")          # a LocalCluster sized to the machine
    result = run_sweep(specs, "sweep/", scheduler="tcp://host:8786")   # the user's cluster

* **Parameters** are dotted paths into the scenario model's fields (``days``,
  ``margin.cure_ns``), values parsed as numbers or JSON, or aliases a scenario class declares in
  ``SWEEP_ALIASES`` (alias -> (field path, unit)); the unit converts the user's text once:
  ``dollars`` -> integer cents (half-to-even on the exact decimal, ``5.7e6`` -> 570000000),
  ``duration`` -> integer ns (``30m``, ``12h``, ``1d``), ``int`` and ``raw`` (JSON, else text).
  Every value and every grid point is validated with ``load_scenario`` before anything runs.
  ``gpuex run --set`` takes the same names and values (:func:`settings_overrides`).
* **A run** (:func:`run_one`, top level so it pickles) records the session into its own SQLite
  log (kept under ``DIR/logs/`` or a temporary file deleted after the summary) and returns the
  compact summary of :func:`summarise`; a run that raises returns ``status: failed`` with its
  traceback instead. Runs are pure functions of (scenario, configuration, seed): same result on
  any worker.
* **Resume**: each finished run is written atomically to ``DIR/runs/<run_id>.json``; a sweep
  started again over the same directory skips those runs (and, with ``retry_failed``, runs
  the failed ones again).
* **Results**: ``DIR/results.csv`` (one row per run of the grid, sorted by run id, columns in a
  fixed order), ``DIR/points.csv`` (one row per grid point: default probability, time to
  default, and where the loss landed: the distribution of the shortfall and of the uncovered
  amount, losses by account) and ``DIR/summary.html`` (the same per grid point, with charts).
* **Run time**: once the first run of an invocation has finished, ``notify`` gets an estimate
  (the runs to go x that run's wall time / the workers): the only wall-clock reading, never in
  a record.

See ``docs/sweeps.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import html
import itertools
import math
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from fractions import Fraction
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import orjson
from pydantic import BaseModel, ValidationError

from exchange.core.limits import MAX_SEED
from exchange.core.units import DURATION_UNITS
from exchange.kernel.engine import DAY_NS
from exchange.kernel.engines import DEFAULT_ENGINE, engine_class
from exchange.postmortem import analysis as postmortem
from exchange.postmortem import borrowed
from exchange.sessions import session
from exchange.sessions.scenarios import SCENARIOS, load_scenario
from exchange.store.event_store import EventStore

UNITS = ("dollars", "duration", "int", "raw")
#: The most runs one sweep may hold (grid points x seeds): the grid is built in memory first.
MAX_RUNS = 1_000_000
#: The largest local cluster ``run_sweep`` starts (one process per worker).
MAX_WORKERS = 256
#: Seconds ``run_sweep`` waits to connect to a ``scheduler`` before giving up (Dask's own
#: default is 30 s).
DEFAULT_CONNECT_TIMEOUT = 10.0

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ns|us|ms|s|m|h|d|w)\s*$")
_DOLLARS = re.compile(r"^\s*\$?\s*([-+]?[0-9_.]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMbB]?)\s*$")
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9}
#: Digits a number's integer part may have (a value is refused, or as raw JSON becomes a
#: float, past that): every scenario field is an int64 or a float, 19 or 309 digits at most.
MAX_DIGITS = 400


#: The funds-used figures of a run (``exchange.postmortem.analysis.FundsUsed`` fields), in column
# order.
FUND_KEYS = (
    "own_contributions",
    "insurance",
    "default_fund",
    "haircut_adl",
    "haircut_vm_gains",
    "adl_lots",
    "adl_value",
    "auction_lots",
    "book_lots",
)

#: Per-account facts of a run, in column order (``KEY:ACCOUNT`` columns of the table).
ACCOUNT_KEYS = (
    "defaulted",
    "default_ns",
    "default_day",
    "calls",
    "called",
    "loss",
    "shortfall",
    "uncovered",
    "final_cash",
)


class SweepError(ValueError):
    """A sweep cannot be set up as asked (the message names the parameter and the problem)."""


# ---------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class Param:
    """One swept parameter: the name the user wrote, the field path it sets, the unit that
    converted its values, the values as written and as converted."""

    name: str
    path: str
    unit: str
    texts: tuple[str, ...]
    values: tuple[Any, ...]


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{text!r} is not a finite number")
    if value and value.adjusted() >= MAX_DIGITS:
        # 1e999999999 would take minutes to become an int; no field holds one anyway
        raise ValueError(f"{text!r} is too large a number")
    return value


def _integral(value: Decimal, text: str, what: str) -> int:
    if value != value.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of {what}")
    return int(value)


def convert(text: str, unit: str) -> Any:
    """Convert one value as written to what the scenario field takes, by ``unit``.

    ``dollars``: a decimal number of dollars (``5.7e6``, ``5700000``, ``$250k``, ``1.5M``) ->
    integer cents, rounded half-to-even once, on the exact decimal (never through a float).
    ``duration``: a number and a unit, ``ns us ms s m h d w`` (``30m``, ``12h``, ``1.5d``) ->
    integer ns (must be whole). ``int``: a whole number (``45``, ``1e3``). ``raw``: JSON
    (numbers, ``true``, lists, objects), else the text itself.
    """
    # exact decimal arithmetic on every number _decimal lets through (the default context's
    # 28 digits would round a 30-digit amount, and quantize would fail on it)
    with localcontext(prec=2 * MAX_DIGITS):
        return _convert(text, unit)


def _convert(text: str, unit: str) -> Any:
    if unit == "dollars":
        match = _DOLLARS.match(text)
        if not match:
            raise ValueError(f"{text!r} is not an amount of dollars (e.g. 5.7e6, 250k)")
        amount = _decimal(match[1]) * _SCALE[match[2].lower()]
        return int((amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    if unit == "duration":
        match = _DURATION.match(text)
        if not match:
            raise ValueError(
                f"{text!r} is not a duration (a number and one of ns us ms s m h d w,"
                " e.g. 30m, 12h, 1d)"
            )
        return _integral(_decimal(match[1]) * DURATION_UNITS[match[2]], text, "nanoseconds")
    if unit == "int":
        return _integral(_decimal(text), text, "units")
    if unit == "raw":
        return _json_or_text(text)
    raise ValueError(f"unknown unit {unit!r} (one of {', '.join(UNITS)})")


def _json_or_text(text: str) -> Any:
    """Numbers as numbers (a whole number, even written 1e6, as an int), else JSON, else the
    text."""
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        number = None
    if number is not None and number.is_finite():
        if number and number.adjusted() >= MAX_DIGITS:
            return float(number)  # inf: the scenario's validation refuses it, and fast
        return int(number) if number == number.to_integral_value() else float(number)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def split_values(text: str) -> list[str]:
    """Split ``a,b,c`` on the commas outside brackets and quotes (so JSON lists survive)."""
    values, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(text):
        if ch == '"' and (i == 0 or text[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and ch in "[{":
            depth += 1
        elif not quoted and ch in "]}":
            depth -= 1
        elif not quoted and depth == 0 and ch == ",":
            values.append(text[start:i])
            start = i + 1
    values.append(text[start:])
    return [v.strip() for v in values]


def _field_path_ok(model: type[BaseModel], path: str) -> str | None:
    """None if ``path`` names a field of ``model`` (through nested models, list items by
    index and mapping keys), else why not."""
    current: Any = model
    walked: list[str] = []
    for part in path.split("."):
        current = _unwrap_optional(current)
        origin = get_origin(current)
        if origin is list:
            if not part.isdigit():
                return f"{'.'.join(walked)} is a list: give an item number, not {part!r}"
            current = get_args(current)[0]
            walked.append(part)
            continue
        if origin is dict:
            current = get_args(current)[1]
            walked.append(part)
            continue
        if current is Any:
            return None  # free-form (a bot's params): the scenario's own validation decides
        fields = getattr(current, "model_fields", None)
        if fields is None:
            return f"{'.'.join(walked)} is not a model with fields"
        if part not in fields or part == "name":
            known = ", ".join(sorted(f for f in fields if f != "name"))
            where = ".".join(walked) or "the scenario"
            return f"{where} has no field {part!r} (fields: {known})"
        walked.append(part)
        current = fields[part].annotation
    return None


def _unwrap_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def aliases(scenario: str) -> dict[str, tuple[str, str]]:
    """The scenario's sweep aliases (alias -> (field path, unit)): the class's
    ``SWEEP_ALIASES``, or a scenario file's own ``sweep_aliases`` table; or none."""
    found = getattr(_model_class(scenario), "SWEEP_ALIASES", None)
    if found is None and scenario not in SCENARIOS:
        found = getattr(load_scenario(scenario), "sweep_aliases", None)
    return {k: tuple(v) for k, v in (found or {}).items()}


def _model_class(scenario: str) -> type[BaseModel]:
    """The scenario's model class: a built-in's, or (through the scenario providers of
    ``exchange.sessions.scenarios``) the class of the scenario it loads."""
    model = SCENARIOS.get(scenario)
    if model is not None:
        return model
    try:
        return type(load_scenario(scenario))
    except (ValueError, OSError) as exc:
        raise SweepError(str(exc)) from None


def parse_param(scenario: str, spec: str) -> Param:
    """``NAME=V1,V2,...`` -> a :class:`Param` (name resolved through the scenario's aliases,
    values converted and each validated alone against the scenario)."""
    name, sep, rest = spec.partition("=")
    name = name.strip()
    if not sep or not name:
        raise SweepError(f"--param {spec!r}: expected NAME=V1,V2,...")
    path, unit = resolve_name(scenario, name, "--param")
    texts = split_values(rest)
    if not texts or any(t == "" for t in texts):
        raise SweepError(f"--param {name}: empty value in {rest!r}")
    values = []
    for text in texts:
        try:
            value = convert(text, unit)
        except ValueError as exc:
            raise SweepError(f"--param {name}: {exc}") from None
        try:
            load_scenario(scenario, overrides_for(scenario, {path: value}))
        except ValidationError as exc:
            raise SweepError(f"--param {name}={text}: {_first_error(exc)}") from None
        except ValueError as exc:
            raise SweepError(f"--param {name}={text}: {exc}") from None
        values.append(value)
    if len(set(map(_canonical, values))) != len(values):
        raise SweepError(f"--param {name}: a value is given twice")
    return Param(name, path, unit, tuple(texts), tuple(values))


def resolve_name(scenario: str, name: str, option: str) -> tuple[str, str]:
    """A setting's name -> ``(field path, unit)``: a scenario alias (``guarantor.capital``
    -> ``accounts.0.cash`` in dollars), else the name itself as a field path with values
    ``raw``. The one vocabulary of ``gpuex sweep --param`` and ``gpuex run --set``; an
    unknown field is a :class:`SweepError` naming ``option``, the field and the aliases."""
    model = _model_class(scenario)
    table = aliases(scenario)
    path, unit = table.get(name, (name, "raw"))
    problem = _field_path_ok(model, path)
    if problem is not None:
        hint = f"; aliases: {', '.join(sorted(table))}" if table else ""
        raise SweepError(f"{option} {name}: {problem}{hint}")
    return path, unit


def settings_overrides(scenario: str, pairs: Iterable[str]) -> dict[str, Any]:
    """``gpuex run --set`` settings (``NAME=VALUE``, each a field path or an alias, its
    value converted as :func:`convert` does for ``--param``: ``guarantor.capital=$5.7M``,
    ``margin.cure_period=3d``, ``days=60``, ``messages=1e4``) -> the scenario's overrides
    (top-level fields, nested ones starting from the scenario's defaults: see
    :func:`overrides_for`).

    Raises:
        SweepError: a setting that is not ``NAME=VALUE``, names no field or has a value its
            unit cannot convert (the message names ``--set`` and the setting). Of two
            settings of one field (an alias and its path, say) the later wins.
        ValueError: the scenario itself cannot be loaded (its own error).
    """
    pairs = list(pairs)
    if not pairs:
        return {}
    load_scenario(scenario)  # a scenario that cannot load: its own error, not a setting's
    settings: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SweepError(f"--set {pair!r}: expected NAME=VALUE")
        path, unit = resolve_name(scenario, name, "--set")
        try:
            value = convert(text, unit)
        except ValueError as exc:
            raise SweepError(f"--set {name}: {exc}") from None
        # a later setting wins, as a repeated option does: it moves to the end, so that it
        # is applied after a setting of a table that holds it
        settings.pop(path, None)
        settings[path] = value
    try:
        return overrides_for(scenario, settings)
    except (LookupError, TypeError, ValueError) as exc:  # a list item the scenario lacks
        raise SweepError(f"--set {', '.join(settings)}: no such item ({exc})") from None


def parse_params(scenario: str, specs: Iterable[str]) -> list[Param]:
    """Parse every ``--param``; two params may not set the same field."""
    params = [parse_param(scenario, s) for s in specs]
    seen: dict[str, str] = {}
    for p in params:
        for other_path, other in seen.items():
            if (
                p.path == other_path
                or p.path.startswith(other_path + ".")
                or other_path.startswith(p.path + ".")
            ):
                raise SweepError(f"--param {p.name}: sets {p.path}, as --param {other} does")
        seen[p.path] = p.name
    return params


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{loc}: {err['msg']}" if loc else err["msg"]


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def overrides_for(scenario: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Scenario overrides (top-level fields) from ``{dotted path: value}``. A nested path
    starts from the scenario's default for that field, so only the leaf changes (setting
    ``margin.cure_ns`` keeps the scenario's own auction bidders)."""
    defaults = None
    overrides: dict[str, Any] = {}
    for path, value in settings.items():
        top, *rest = path.split(".")
        if not rest:
            overrides[top] = value
            continue
        if top not in overrides:
            if defaults is None:
                defaults = load_scenario(scenario).model_dump(mode="json")
            overrides[top] = orjson.loads(orjson.dumps(defaults[top]))
        node = overrides[top]
        for part in rest[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(rest[-1])] = value
        else:
            node[rest[-1]] = value
    return overrides


# ---------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: picklable, self-contained."""

    run_id: str
    scenario: str
    seed: int
    params: tuple[tuple[str, str], ...]  # (param name, value as written), in --param order
    settings: tuple[tuple[str, Any], ...]  # (field path, converted value)

    @property
    def overrides(self) -> dict[str, Any]:
        return overrides_for(self.scenario, dict(self.settings))


def run_id(scenario: str, config: dict[str, Any], seed: int) -> str:
    """A stable id: the first 16 hex digits of SHA-256 over the scenario name, the *whole*
    validated configuration (canonical JSON) and the seed. Two spellings of one run (an
    alias or its field, ``5.7e6`` dollars or ``570000000`` cents) get the same id."""
    blob = _canonical({"scenario": scenario, "config": config, "seed": seed})
    return hashlib.sha256(blob).hexdigest()[:16]


def expand_grid(scenario: str, params: Sequence[Param], seeds: Iterable[int]) -> list[RunSpec]:
    """The cartesian product of the params' values (first param slowest) times the seeds.
    Every grid point is validated with ``load_scenario`` first; a bad combination raises
    :class:`SweepError` naming its params."""
    _model_class(scenario)  # an unknown scenario is a SweepError
    seeds = list(itertools.islice(seeds, MAX_RUNS + 1))
    if not seeds:
        raise SweepError("no seeds to run")
    if any(not isinstance(s, int) or isinstance(s, bool) or not 0 <= s <= MAX_SEED for s in seeds):
        raise SweepError(f"seeds must be integers in 0..{MAX_SEED} (2**63 - 1)")
    if len(set(seeds)) != len(seeds):
        raise SweepError("a seed is listed twice")
    runs = len(seeds) * math.prod(len(p.values) for p in params)
    if runs > MAX_RUNS:
        raise SweepError(f"{runs:,} runs: a sweep may hold at most {MAX_RUNS:,}")
    specs = []
    choices = [list(zip(p.texts, p.values, strict=True)) for p in params]
    for point in itertools.product(*choices):
        settings = tuple((p.path, value) for p, (_, value) in zip(params, point, strict=True))
        labels = tuple((p.name, text) for p, (text, _) in zip(params, point, strict=True))
        named = " ".join(f"{n}={t}" for n, t in labels) or scenario
        try:
            model = load_scenario(scenario, overrides_for(scenario, dict(settings)))
            # everything a run checks before its store exists (limits, a rehearsal of the
            # market), once per grid point, so that a bad point fails here and not on a worker
            session.plan(scenario, model=model, seed=seeds[0])
        except ValidationError as exc:
            raise SweepError(f"--param {named}: {_first_error(exc)}") from None
        except ValueError as exc:
            raise SweepError(f"--param {named}: {exc}") from None
        config = model.model_dump(mode="json")
        for seed in seeds:
            specs.append(RunSpec(run_id(scenario, config, seed), scenario, seed, labels, settings))
    ids = [s.run_id for s in specs]
    if len(set(ids)) != len(ids):
        raise SweepError("two grid points give the same run (a value repeated in another form?)")
    return specs


# ---------------------------------------------------------------------- one run
def summarise(db: str | Path) -> dict[str, Any]:
    """The compact record of one finished session log, from ``exchange.postmortem.analysis.facts``.

    Keys (money in minor units, times in simulated ns, a day is ``t // DAY_NS``):
    ``events``, ``state_hash``; ``accounts``: name -> ``defaulted``, ``default_ns``,
    ``default_day`` (its first default; None if none), ``calls``, ``called`` (collateral calls
    and their total), ``loss`` (what it lost to *other* accounts' defaults: default-fund
    contribution and haircuts), ``shortfall`` and ``uncovered`` (as a defaulter: how far below
    zero its close-out left it, and what no fund covered), ``final_cash``;
    ``collateral_calls``, ``called``; ``defaults``: in order, ``account``, ``t``, ``day``,
    ``missed`` (the call it missed); ``funds_used``: :data:`FUND_KEYS` (``*_lots`` in lots);
    ``shortfall``, ``uncovered``: over every close-out; ``credit`` (only when the log has the
    credit economy's events): :func:`exchange.postmortem.borrowed.credit_record`.
    """
    # the log its worker has just written: read through its own indexes, unchecked
    with EventStore.open(db, mode="r", checked=False) as store:
        state_hash = store.session["final_state_hash"]
        pm = postmortem.facts(store)
        # the credit economy's cascade and borrowed time; None (no entry) without an economy
        credit = borrowed.credit_record(store)
    first_default: dict[str, int] = {}
    for d in pm.defaults:
        first_default.setdefault(d.account, d.t)
    shortfall: dict[str, int] = {}
    uncovered: dict[str, int] = {}
    for c in pm.closeouts:
        shortfall[c.defaulter] = shortfall.get(c.defaulter, 0) + c.shortfall
        uncovered[c.defaulter] = uncovered.get(c.defaulter, 0) + c.uncovered
    accounts = {}
    for name, a in sorted(pm.accounts.items()):
        t = first_default.get(name)
        accounts[name] = {
            "defaulted": a.defaulted,
            "default_ns": t,
            "default_day": None if t is None else t // DAY_NS,
            "calls": a.calls,
            "called": a.called,
            "loss": a.lost,
            "shortfall": shortfall.get(name, 0),
            "uncovered": uncovered.get(name, 0),
            "final_cash": a.final_cash,
        }
    funds = dataclasses.asdict(pm.funds)
    record = {
        "events": pm.last_seq,
        "state_hash": state_hash,
        "accounts": accounts,
        "collateral_calls": len(pm.calls),
        "called": sum(c.amount for c in pm.calls),
        "defaults": [
            {"account": d.account, "t": d.t, "day": d.t // DAY_NS, "missed": d.missed_call}
            for d in pm.defaults
        ],
        "funds_used": {k: funds[k] for k in FUND_KEYS},
        "shortfall": sum(shortfall.values()),
        "uncovered": sum(uncovered.values()),
    }
    if credit is not None:
        record["credit"] = credit
    return record


def _base_record(spec: RunSpec) -> dict[str, Any]:
    return {
        "run_id": spec.run_id,
        "scenario": spec.scenario,
        "seed": spec.seed,
        "params": dict(spec.params),
        "settings": dict(spec.settings),
        "code_version": session.CODE_VERSION,
    }


def run_one(
    spec: RunSpec, logs_dir: str | None = None, engine: str = DEFAULT_ENGINE
) -> dict[str, Any]:
    """Run one grid point with one seed and return its record (never raises for a failing
    run: ``status`` is ``ok`` or ``failed``, with ``error`` the traceback).

    ``engine`` names the engine that runs it (``exchange.kernel.engines``); it is neither in the
    run's
    id nor in its record, since both engines give the same log.

    With ``logs_dir`` the log is kept as ``logs_dir/<run_id>.db`` (a stale partial log of an
    interrupted attempt is replaced); otherwise it goes to a temporary directory removed once
    the summary is taken.
    """
    record = _base_record(spec)
    tmp = None
    if logs_dir is not None:
        db = Path(logs_dir) / f"{spec.run_id}.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        for stale in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            stale.unlink(missing_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="gpuex-sweep-")
        db = Path(tmp) / f"{spec.run_id}.db"
    try:
        # the sweep's workers already keep every core busy: no journaller processes
        result = session.run(
            spec.scenario,
            db,
            seed=spec.seed,
            overrides=spec.overrides,
            journal_after=None,
            engine=engine,
        )
        facts = summarise(db)
        if facts["state_hash"] != result.state_hash:
            raise RuntimeError("the log's recorded state hash differs from the run's")
        record.update(status="ok", error=None, **facts)
        if logs_dir is not None:
            record["log"] = str(db)
    except Exception:
        record.update(status="failed", error=traceback.format_exc())
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return record


# ---------------------------------------------------------------------- the sweep
@dataclass
class SweepResult:
    """What :func:`run_sweep` did: every record of the grid (sorted by run id), how many runs
    it executed now, how many it found already finished, how many failed."""

    records: list[dict[str, Any]]
    executed: int
    skipped: int
    failed: int
    out_dir: Path
    lost: int = 0
    files: dict[str, Path] = field(default_factory=dict)


def default_workers() -> int:
    """The machine's usable cores."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` so that a reader sees the old file or the whole new
    one, never a part (temp file in the same directory, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _finished(runs_dir: Path, spec: RunSpec) -> dict[str, Any] | None:
    path = runs_dir / f"{spec.run_id}.json"
    if not path.exists():
        return None
    try:
        record = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        return None  # cannot happen with atomic writes; if it does, run it again
    return record if record.get("run_id") == spec.run_id else None


def duration_text(seconds: float) -> str:
    """A wall-clock duration as a person reads it: ``45 s``, ``38 min``, ``2 h 05 min``."""
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def estimate_text(runs: int, workers: int, first_run_s: float) -> str:
    """The run-time estimate a sweep prints once its first run has finished: ``runs`` to run
    now, ``workers`` running them at once, each taking as long as the first did (its wall time
    from submission, worker start-up included): ``ceil(runs / workers) x first_run_s``."""
    workers = max(1, workers)
    total = math.ceil(runs / workers) * first_run_s
    return (
        f"estimate: the first run took {duration_text(first_run_s)}; "
        f"{runs:,} run{'s' if runs != 1 else ''} on {workers} worker{'s' if workers != 1 else ''}"
        f" ~ {math.ceil(runs / workers):,} x {duration_text(first_run_s)} = "
        f"about {duration_text(total)} in all"
    )


def run_sweep(
    specs: Sequence[RunSpec],
    out_dir: str | Path,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    keep_logs: bool = False,
    progress: bool = True,
    retry_failed: bool = False,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    notify: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    engine: str = DEFAULT_ENGINE,
) -> SweepResult:
    """Run every spec not already finished in ``out_dir`` on Dask, then write the results.

    Args:
        specs: the grid (:func:`expand_grid`).
        out_dir: ``runs/`` (one JSON per finished run), ``logs/`` (with ``keep_logs``),
            ``results.csv`` and ``summary.html`` go here.
        scheduler: the address of a running Dask scheduler (``tcp://host:8786``); None starts
            a LocalCluster of ``workers`` processes with one thread each.
        workers: LocalCluster size (default: the machine's cores); not with ``scheduler``.
        keep_logs: keep each run's SQLite log as ``out_dir/logs/<run_id>.db`` (on a remote
            cluster the path is the workers': use a shared filesystem).
        progress: show a tqdm bar (stderr) over the whole sweep.
        retry_failed: run again the runs recorded as ``failed`` in ``out_dir`` (a failure is
            otherwise kept: the same code and seed fail the same way).
        connect_timeout: seconds to wait for the ``scheduler`` before giving up.
        notify: called with the run-time estimate (:func:`estimate_text`) once the first run
            of this invocation has finished ``ok`` (above the progress bar); None: no estimate.
        clock: the wall clock the estimate reads (seconds; tests pass a fake). Only the
            estimate reads it: nothing in a record depends on it.
        engine: the engine every run uses, by name (``exchange.kernel.engines``; :func:`run_one`).

    Raises:
        SweepError: ``out_dir`` cannot be written, the scheduler cannot be reached within
            ``connect_timeout``, or ``engine`` is unknown (before any run starts).
    """
    from distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm

    if scheduler is not None and workers is not None:
        raise SweepError("--workers sizes the local cluster; not with --scheduler")
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise SweepError(f"--workers must be 1..{MAX_WORKERS} (one process each)")
    try:
        engine_class(engine)
    except ValueError as exc:
        raise SweepError(str(exc)) from None
    out = Path(out_dir).resolve()
    runs_dir = out / "runs"
    _writable(runs_dir)
    logs_dir = str(out / "logs") if keep_logs else None
    done: dict[str, dict[str, Any]] = {}
    todo: list[RunSpec] = []
    for spec in specs:
        record = _finished(runs_dir, spec)
        if record is not None and retry_failed and record.get("status") != "ok":
            record = None
        if record is not None:
            # the same run, perhaps spelt otherwise by an earlier sweep: this grid's names
            record.update(params=dict(spec.params), settings=dict(spec.settings))
            done[spec.run_id] = record
        else:
            todo.append(spec)
    skipped = len(done)
    lost: dict[str, dict[str, Any]] = {}
    bar = tqdm(
        total=len(specs),
        initial=skipped,
        unit=" runs",
        desc="sweep",
        disable=not progress,
        file=sys.stderr,
    )
    try:
        if todo:
            cluster = None
            if scheduler is None:
                cluster = LocalCluster(
                    n_workers=workers or default_workers(),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",  # a free port: never clashes with another cluster
                )
            try:
                with _connect(Client, cluster, scheduler, connect_timeout) as client:
                    # the runs that go at once: the cluster's worker threads (ours: one each)
                    slots = sum(client.nthreads().values()) or 1
                    started = clock()
                    futures = {
                        client.submit(
                            run_one,
                            spec,
                            logs_dir,
                            engine,
                            key=f"gpuex-run-{spec.run_id}",
                            pure=False,
                        ): spec
                        for spec in todo
                    }
                    for future in as_completed(futures):
                        spec = futures.pop(future)
                        try:
                            record = future.result()
                        except Exception:
                            # the worker died or the cluster lost the task: not the run's own
                            # outcome, so not written to runs/ (a restart tries it again)
                            record = _base_record(spec)
                            record.update(status="lost", error=traceback.format_exc())
                            lost[spec.run_id] = record
                        else:
                            write_json_atomic(runs_dir / f"{spec.run_id}.json", record)
                            done[spec.run_id] = record
                            if (
                                notify is not None
                                and started is not None
                                and record["status"] == "ok"
                            ):
                                # a failure may end at once: only a finished run measures one
                                text = estimate_text(len(todo), slots, clock() - started)
                                started = None
                                with tqdm.external_write_mode(file=sys.stderr):
                                    notify(text)
                        bar.update(1)
            finally:
                if cluster is not None:
                    cluster.close()
    finally:
        bar.close()
    records = sorted([*done.values(), *lost.values()], key=lambda r: r["run_id"])
    executed = len(done) - skipped + len(lost)
    failed = sum(r["status"] != "ok" for r in records)
    result = SweepResult(records, executed, skipped, failed, out, lost=len(lost))
    try:
        result.files["csv"] = write_csv(
            records, out / "results.csv", [p for p, _ in specs[0].params] if specs else []
        )
        result.files["points"] = write_points_csv(
            records, out / "points.csv", [p for p, _ in specs[0].params] if specs else []
        )
        result.files["html"] = write_html(records, out / "summary.html")
    except OSError as exc:
        raise SweepError(
            f"-o {out}: cannot write the results ({exc.strerror or exc}); the finished runs "
            "are kept under runs/: run the sweep again to write them"
        ) from None
    return result


def _writable(runs_dir: Path) -> None:
    """Make ``runs_dir`` and check a file can be created in it (by creating and removing
    one), before any run starts; :class:`SweepError` naming ``-o`` otherwise."""
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=runs_dir, prefix=".probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SweepError(f"-o {runs_dir.parent}: cannot write ({exc.strerror or exc})") from None


def _connect(client_class: Any, cluster: Any, scheduler: str | None, timeout: float) -> Any:
    """A ``distributed.Client`` of the local ``cluster`` or of ``scheduler``; an unreachable
    or malformed scheduler address is a :class:`SweepError` after at most ``timeout`` s."""
    if cluster is not None:
        return client_class(cluster)
    try:
        return client_class(scheduler, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SweepError(
            f"--scheduler {scheduler}: cannot connect within {timeout:g} s ({reason})"
        ) from None


# ---------------------------------------------------------------------- outputs


def table_columns(records: Sequence[dict[str, Any]], param_names: Sequence[str]) -> list[str]:
    """The CSV's columns, in a fixed order: identity, params (``--param`` order), outcome,
    then per account (sorted by name) default / calls / loss, then the error."""
    names = sorted({a for r in records for a in (r.get("accounts") or {})})
    cols = ["run_id", "scenario", "seed", *(f"param:{p}" for p in param_names)]
    cols += [
        "status",
        "events",
        "state_hash",
        "collateral_calls",
        "called",
        "defaults",
        "first_default_account",
        "first_default_ns",
        "first_default_day",
        "shortfall",
        "uncovered",
    ]
    cols += [f"funds_{k}" for k in FUND_KEYS]
    for a in names:
        cols += [f"{k}:{a}" for k in ACCOUNT_KEYS]
    return [*cols, "error"]


def table_row(record: dict[str, Any]) -> dict[str, Any]:
    """One record flattened to the CSV's columns (missing ones empty)."""
    row: dict[str, Any] = {
        "run_id": record["run_id"],
        "scenario": record["scenario"],
        "seed": record["seed"],
        "status": record["status"],
        "error": (record.get("error") or "").strip(),
    }
    for name, text in record.get("params", {}).items():
        row[f"param:{name}"] = text
    if record["status"] != "ok":
        return row
    first = record["defaults"][0] if record["defaults"] else None
    row.update(
        events=record["events"],
        state_hash=record["state_hash"],
        collateral_calls=record["collateral_calls"],
        called=record["called"],
        defaults=len(record["defaults"]),
        first_default_account=first["account"] if first else "",
        first_default_ns=first["t"] if first else "",
        first_default_day=first["day"] if first else "",
        shortfall=record["shortfall"],
        uncovered=record["uncovered"],
    )
    for k in FUND_KEYS:
        row[f"funds_{k}"] = record["funds_used"][k]
    for a, facts in record["accounts"].items():
        for k in ACCOUNT_KEYS:
            value = facts[k]
            row[f"{k}:{a}"] = "" if value is None else int(value)
    return row


def write_csv(records: Sequence[dict[str, Any]], path: Path, param_names: Sequence[str]) -> Path:
    """``results.csv``: one row per record, sorted by run id (atomically replaced)."""
    cols = table_columns(records, param_names)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols, restval="", lineterminator="\n")
        writer.writeheader()
        for record in sorted(records, key=lambda r: r["run_id"]):
            writer.writerow(table_row(record))
    os.replace(tmp, path)
    return path


#: The first-default-time statistics (days) of a grid point, in column order.
DAY_KEYS = ("min", "p10", "median", "p90", "max")


def point_columns(points: Sequence[dict[str, Any]], param_names: Sequence[str]) -> list[str]:
    """``points.csv``'s columns, in a fixed order: the params (``--param`` order), the counts,
    P(default) and its interval, the first-default days (``first_default_days_<stat>``:
    ``min, p10, median, p90, max``), ``shortfall_<stat>`` and ``uncovered_<stat>`` for each
    of :data:`DIST_KEYS`, then per account (sorted by name) ``loss_mean:<a>, loss_max:<a>,
    loss_max_seed:<a>``, then the credit cascade's (:func:`credit_columns`; none without the
    credit economy)."""
    names = sorted({a for p in points for a in p["losses"]})
    cols = [f"param:{p}" for p in param_names]
    cols += ["runs", "ok", "failed", "defaulted", "p_default", "p_default_low", "p_default_high"]
    cols += [f"first_default_days_{k}" for k in DAY_KEYS]
    cols += [f"{what}_{k}" for what in ("shortfall", "uncovered") for k in DIST_KEYS]
    for a in names:
        cols += [f"loss_mean:{a}", f"loss_max:{a}", f"loss_max_seed:{a}"]
    return cols + credit_columns(points)


#: The credit cascade's columns of ``points.csv`` (before the per-series window columns).
CREDIT_COLUMNS = (
    "credit_runs",
    "order_held",
    "order_held_share",
    *(f"trigger_month_{k}" for k in ("min", "median", "max")),
    "untriggered",
    "common_order",
    "common_order_runs",
    *(f"recovery_ppm_{k}" for k in ("min", "median", "max")),
)


def credit_columns(points: Sequence[dict[str, Any]]) -> list[str]:
    """The credit cascade's columns (none unless a point has the credit economy):
    :data:`CREDIT_COLUMNS`, then per series (in the records' order)
    ``window_months_<min|median|max>:<series>`` and ``windows_open:<series>``."""
    credits = [p["credit"] for p in points if p.get("credit")]
    if not credits:
        return []
    keys = list(dict.fromkeys(k for c in credits for k in c["windows"]))
    cols = list(CREDIT_COLUMNS)
    for key in keys:
        cols += [f"window_months_{k}:{key}" for k in ("min", "median", "max")]
        cols.append(f"windows_open:{key}")
    return cols


def _credit_row(credit: dict[str, Any] | None) -> dict[str, Any]:
    if not credit:
        return {}
    row: dict[str, Any] = {
        "credit_runs": credit["runs"],
        "order_held": credit["held"],
        "order_held_share": f"{credit['held_share']:.4f}",
        "untriggered": credit["untriggered"],
        # the entities in the order they defaulted; "none": no economy entity defaulted
        "common_order": " > ".join(credit["order"]) or "none",
        "common_order_runs": credit["order_runs"],
    }
    for k, v in (credit.get("recovery") or {}).items():
        row[f"recovery_ppm_{k}"] = v
    for k, v in (credit["trigger"] or {}).items():
        row[f"trigger_month_{k}"] = v
    for key, w in credit["windows"].items():
        for k, v in (w["months"] or {}).items():
            row[f"window_months_{k}:{key}"] = v
        row[f"windows_open:{key}"] = w["open"]
    return row


def _day_stats(days: Sequence[float]) -> dict[str, float]:
    if not days:
        return {}
    return dict(
        zip(
            DAY_KEYS,
            (days[0], _quantile(days, 0.1), _quantile(days, 0.5), _quantile(days, 0.9), days[-1]),
            strict=True,
        )
    )


def point_row(point: dict[str, Any]) -> dict[str, Any]:
    """One grid point flattened to ``points.csv``'s columns (money in minor units, days to
    two decimals, probabilities to four; empty: no ok run, or no default for the days)."""
    row: dict[str, Any] = {f"param:{k}": v for k, v in point["params"].items()}
    row.update(
        runs=point["runs"], ok=point["ok"], failed=point["failed"], defaulted=point["defaulted"]
    )
    if point["ok"]:
        lo, hi = point["ci"]
        row.update(
            p_default=f"{point['p_default']:.4f}",
            p_default_low=f"{lo:.4f}",
            p_default_high=f"{hi:.4f}",
        )
    for k, v in _day_stats(point["days"]).items():
        row[f"first_default_days_{k}"] = f"{v:.2f}"
    for what in ("shortfall", "uncovered"):
        for k, v in (point[what] or {}).items():
            row[f"{what}_{k}"] = v
    for a, stats in point["losses"].items():
        row[f"loss_mean:{a}"] = stats["mean"]
        row[f"loss_max:{a}"] = stats["max"]
        row[f"loss_max_seed:{a}"] = stats["max_seed"]
    row.update(_credit_row(point.get("credit")))
    return row


def write_points_csv(
    records: Sequence[dict[str, Any]], path: Path, param_names: Sequence[str]
) -> Path:
    """``points.csv``: one row per grid point, in :func:`grid_points`' order (atomically
    replaced)."""
    points = grid_points(records)
    cols = point_columns(points, param_names)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols, restval="", lineterminator="\n")
        writer.writeheader()
        for point in points:
            writer.writerow(point_row(point))
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------- the HTML summary
def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval (95 %) for k successes in n trials."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of a sorted, non-empty sequence."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


#: The statistics of a money distribution over a grid point's runs, in column order.
DIST_KEYS = ("min", "q1", "median", "q3", "max", "mean", "max_seed")


def distribution(values: Sequence[tuple[int, int]]) -> dict[str, int] | None:
    """The distribution of an amount over runs, from ``(seed, amount in minor units)`` pairs:
    ``min``, ``q1``, ``median``, ``q3``, ``max`` (nearest-rank, as the times to default),
    ``mean`` (rounded to the minor unit, half to even, on the exact fraction) and
    ``max_seed`` (the seed of the largest amount, the lowest such seed on a tie; None when
    every amount is 0), all ints; None for no runs."""
    if not values:
        return None
    amounts = sorted(v for _, v in values)
    top = amounts[-1]
    return {
        "min": amounts[0],
        "q1": _quantile(amounts, 0.25),
        "median": _quantile(amounts, 0.5),
        "q3": _quantile(amounts, 0.75),
        "max": top,
        # exact, then rounded once: a float mean of cents could land a cent off
        "mean": round(Fraction(sum(amounts), len(amounts))),
        # no run had any: naming a seed would point at nothing
        "max_seed": min(seed for seed, v in values if v == top) if top else None,
    }


def grid_points(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per grid point, ordered by the converted values (numbers numerically): runs, ok,
    failed, runs with a default, the default probability (of the ok runs) and its Wilson 95 %
    interval, the first-default times in days (sorted), and per account the number of runs it
    defaulted.

    Where the loss landed, over the point's ok runs (a run without a default counts as 0):
    ``shortfall`` and ``uncovered`` (each run's total over its close-outs, minor units) as a
    :func:`distribution` (None with no ok run), with the raw ``(seed, amount)`` pairs in
    ``shortfalls`` and ``uncovereds``; ``losses``: per account (sorted by name, every account
    of the point's ok runs), ``mean`` and ``max`` of what it lost to other accounts' defaults
    (the record's ``loss``: default-fund contribution and haircuts), and ``max_seed``.

    ``credit``: the credit cascade over the point's ok runs (:func:`credit_point`), None
    without the credit economy."""
    points: dict[tuple, dict[str, Any]] = {}
    for r in sorted(records, key=lambda r: (_point_order(r), r["seed"])):
        key = tuple(r["params"].items())
        point = points.setdefault(
            key,
            {
                "params": dict(key),
                "runs": 0,
                "ok": 0,
                "failed": 0,
                "defaulted": 0,
                "days": [],
                "by_account": {},
                "shortfalls": [],
                "uncovereds": [],
                "account_losses": {},
                "credits": [],
            },
        )
        point["runs"] += 1
        if r["status"] != "ok":
            point["failed"] += 1
            continue
        point["ok"] += 1
        if r["defaults"]:
            point["defaulted"] += 1
            point["days"].append(r["defaults"][0]["t"] / DAY_NS)
        point["shortfalls"].append((r["seed"], r["shortfall"]))
        point["uncovereds"].append((r["seed"], r["uncovered"]))
        for a, facts in r["accounts"].items():
            if facts["defaulted"]:
                point["by_account"][a] = point["by_account"].get(a, 0) + 1
            point["account_losses"].setdefault(a, {})[r["seed"]] = facts["loss"]
        if "credit" in r:
            point["credits"].append(r["credit"])
    for point in points.values():
        point["days"].sort()
        n, k = point["ok"], point["defaulted"]
        point["p_default"] = k / n if n else math.nan
        point["ci"] = wilson(k, n)
        point["shortfall"] = distribution(point["shortfalls"])
        point["uncovered"] = distribution(point["uncovereds"])
        seeds = [seed for seed, _ in point["shortfalls"]]
        losses = {}
        for a, by_seed in sorted(point.pop("account_losses").items()):
            # an account a run did not have lost nothing in that run
            stats = distribution([(seed, by_seed.get(seed, 0)) for seed in seeds])
            losses[a] = {k: stats[k] for k in ("mean", "max", "max_seed")}
        point["losses"] = losses
        point["credit"] = credit_point(point.pop("credits"))
    return list(points.values())


def _range(values: Sequence[int]) -> dict[str, int] | None:
    """``min``, ``median`` (nearest-rank) and ``max`` of ints; None for none."""
    if not values:
        return None
    v = sorted(values)
    return {"min": v[0], "median": _quantile(v, 0.5), "max": v[-1]}


def credit_point(credits: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The credit cascade over a grid point's ok runs, from their records' ``credit`` entries
    (:func:`exchange.postmortem.borrowed.credit_record`); None when no run has one (no economy).

    ``runs``; ``held`` (runs whose order held) and ``held_share`` (``held / runs``);
    ``trigger``: the trigger's month (economy period) as ``min``/``median``/``max``
    (nearest-rank) over the runs with one, and ``untriggered`` (runs without); ``windows``:
    series key -> the lengths in months of its closed windows (every window of every run) as
    ``min``/``median``/``max`` (None: no closed window), with ``open`` (windows still open at
    the end); ``order``: the most common order of defaults (a list of entities; on a tie the
    first in sorted order) and ``order_runs``, the runs that had it; ``recovery``: the
    ``recovery_ppm`` of every default of every run (the auction of a neocloud's GPUs over its
    debt, a lab's fixed rate) as ``min``/``median``/``max``, None without a default."""
    if not credits:
        return None
    triggers = [c["trigger"]["period"] for c in credits if c["trigger"] is not None]
    lengths: dict[str, list[int]] = {}
    still_open: dict[str, int] = {}
    for c in credits:
        for key, windows in c["windows"].items():
            lengths.setdefault(key, [])
            still_open.setdefault(key, 0)
            for w in windows:
                if w["months"] is None:
                    still_open[key] += 1
                else:
                    lengths[key].append(w["months"])
    orders: dict[tuple[str, ...], int] = {}
    for c in credits:
        order = tuple(c["defaults"])
        orders[order] = orders.get(order, 0) + 1
    # the most runs, then the first in sorted order: the same answer on any worker
    order, order_runs = min(orders.items(), key=lambda kv: (-kv[1], kv[0]))
    held = sum(bool(c["held"]) for c in credits)
    recoveries = [
        v for c in credits for v in (c.get("recovery") or {}).values() if isinstance(v, int)
    ]
    return {
        "runs": len(credits),
        "held": held,
        "held_share": held / len(credits),
        "trigger": _range(triggers),
        "untriggered": len(credits) - len(triggers),
        "windows": {
            key: {"months": _range(lengths[key]), "open": still_open[key]} for key in lengths
        },
        "order": list(order),
        "order_runs": order_runs,
        "recovery": _range(recoveries),
    }


def _point_order(record: dict[str, Any]) -> tuple:
    keys = []
    for value in record.get("settings", {}).values():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        keys.append((0, value, b"") if number else (1, 0, _canonical(value)))
    return (*keys, tuple(record["params"].items()))


def _label(params: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "(defaults)"


def write_html(records: Sequence[dict[str, Any]], path: Path) -> Path:
    """``summary.html``: self-contained (no network at view time). A table per grid point
    always; with plotly importable, two charts as well (plotly.js inlined once)."""
    points = grid_points(records)
    accounts = sorted({a for p in points for a in p["by_account"]})
    scenario = records[0]["scenario"] if records else ""
    esc = html.escape
    head = [
        "grid point",
        "runs",
        "ok",
        "failed",
        "defaulted",
        "P(default)",
        "95 % CI",
        *(f"P({a})" for a in accounts),
        "first default, days: min",
        "p10",
        "median",
        "p90",
        "max",
    ]
    rows = []
    for p in points:
        d = p["days"]
        stats = (
            [
                f"{v:.2f}"
                for v in (d[0], _quantile(d, 0.1), _quantile(d, 0.5), _quantile(d, 0.9), d[-1])
            ]
            if d
            else ["-"] * 5
        )
        lo, hi = p["ci"]
        cells = [
            _label(p["params"]),
            p["runs"],
            p["ok"],
            p["failed"],
            p["defaulted"],
            "-" if not p["ok"] else f"{p['p_default']:.3f}",
            "-" if not p["ok"] else f"{lo:.3f}-{hi:.3f}",
            *(
                "-" if not p["ok"] else f"{p['by_account'].get(a, 0) / p['ok']:.3f}"
                for a in accounts
            ),
            *stats,
        ]
        rows.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in cells) + "</tr>")
    table = (
        "<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead>"
        "<tbody>" + "".join(rows) + "</tbody></table>"
    )
    losses = _loss_table(points)
    failed = [r for r in records if r["status"] != "ok"]
    failures = ""
    if failed:
        items = "".join(
            f"<details><summary>{esc(r['run_id'])} {esc(_label(r['params']))} seed "
            f"{r['seed']}: {esc(r['status'])}</summary><pre>{esc(r.get('error') or '')}</pre>"
            "</details>"
            for r in failed
        )
        failures = f"<h2>Failed runs ({len(failed)})</h2>{items}"
    charts = _charts(points)
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>gpuex sweep: {esc(scenario)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
pre {{ font-size: 0.8em; background: #f6f6f6; padding: 0.5em; overflow-x: auto; }}
</style></head><body>
<h1>Sweep of <code>{esc(scenario)}</code>: {len(records)} runs, {len(points)} grid points</h1>
<p>P(default): share of the grid point's finished (ok) runs in which any account defaulted,
with the Wilson 95 % interval; P(account): the same for one account. First default: simulated
days from the session start to the first <code>Default</code> event, over the runs that had
one (nearest-rank quantiles).</p>
{table}
<h2>Where the loss landed</h2>
<p>Over each grid point's ok runs, a run without a default counting as $0.00. Shortfall: how
far below zero the defaulters' close-outs left them (the loss the default put on others);
uncovered: what no pool covered. Min, quartiles (Q1, median, Q3), max (nearest-rank) and mean;
"worst seed": the seed of the max. Lost by account: what each account lost to other accounts'
defaults (its default-fund contribution and haircuts), mean and max over the runs (with the
seed of the max), for the accounts that lost in some run. All in dollars; the same figures in
cents are in <code>points.csv</code>.</p>
{losses}
{_credit_table(points)}
{charts}
{failures}
</body></html>
"""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(doc, encoding="utf-8")
    os.replace(tmp, path)
    return path


def dollars(cents: int) -> str:
    """Minor units as dollars, exactly (``-13420050`` -> ``-$134,200.50``)."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}${whole:,}.{part:02d}"


def _seed(seed: int | None) -> str:
    return "-" if seed is None else str(seed)  # seed 0 is a seed


def _loss_table(points: list[dict[str, Any]]) -> str:
    """The HTML table of where the loss landed, per grid point."""
    esc = html.escape
    losers = sorted({a for p in points for a, s in p["losses"].items() if s["max"]})
    stats = ("min", "Q1", "median", "Q3", "max", "mean", "worst seed")
    head = ["grid point", *(f"shortfall: {k}" for k in stats)]
    head += [*(f"uncovered: {k}" for k in stats)]
    for a in losers:
        head += [f"lost by {a}: mean", f"{a}: max", f"{a}: worst seed"]
    rows = []
    for p in points:
        cells = [_label(p["params"])]
        for what in ("shortfall", "uncovered"):
            d = p[what]
            if d is None:
                cells += ["-"] * len(stats)
            else:
                cells += [dollars(d[k]) for k in DIST_KEYS[:-1]]
                cells.append(_seed(d["max_seed"]))
        for a in losers:
            s = p["losses"].get(a)
            cells += (
                ["-"] * 3
                if s is None
                else [dollars(s["mean"]), dollars(s["max"]), _seed(s["max_seed"])]
            )
        rows.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in cells) + "</tr>")
    return (
        '<table class="losses"><thead><tr>'
        + "".join(f"<th>{esc(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _credit_table(points: list[dict[str, Any]]) -> str:
    """The HTML section of the credit cascade per grid point ("" without the economy)."""
    if not any(p.get("credit") for p in points):
        return ""
    esc = html.escape
    keys = list(dict.fromkeys(k for p in points if p.get("credit") for k in p["credit"]["windows"]))
    head = ["grid point", "runs", "order held", "trigger month: min", "median", "max"]
    head += ["no trigger", "most common order of defaults", "runs"]
    head += ["recovery ppm: min / median / max"]
    head += [f"{k}: window months min / median / max (open)" for k in keys]
    rows = []
    for p in points:
        c = p.get("credit")
        if not c:
            continue
        t = c["trigger"]
        cells = [
            _label(p["params"]),
            c["runs"],
            f"{c['held']} ({c['held_share']:.0%})",
            *(["-"] * 3 if t is None else [t["min"], t["median"], t["max"]]),
            c["untriggered"],
            " > ".join(c["order"]) or "(none)",
            c["order_runs"],
            "-" if not c.get("recovery") else "{min} / {median} / {max}".format(**c["recovery"]),
        ]
        for k in keys:
            w = c["windows"].get(k)
            m = w and w["months"]
            text = "-" if not m else f"{m['min']} / {m['median']} / {m['max']}"
            cells.append(text if not w else f"{text} ({w['open']})")
        rows.append("<tr>" + "".join(f"<td>{esc(str(x))}</td>" for x in cells) + "</tr>")
    return (
        "<h2>Credit cascade</h2>\n<p>Over each grid point's ok runs with the credit economy "
        "(docs/credit.md). Order held: the trigger (the first failed round) came before the "
        "first pull-back, which came before the first neocloud covenant breach; the "
        "concentrated neocloud breached before the diversified one, which survived; then a "
        "neocloud's loan could not roll or its CDS spread gapped, an equity mark fell, and a "
        "hyperscaler bought the stranded fleet, in that order. Recovery: each default's "
        "auction value of the defaulter's GPUs over its debt (a lab: the fixed rate). Trigger "
        "month: the economy's month (0 = January 2024) of the first failed round, over the runs "
        "that had one. Windows: borrowed time (S'' rolled over to S' at zero) per series, "
        "lengths in months of the closed windows of every run (nearest-rank), and how many were "
        "still open at the end.</p>\n"
        '<table class="credit"><thead><tr>'
        + "".join(f"<th>{esc(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _charts(points: list[dict[str, Any]]) -> str:
    try:
        import plotly.graph_objects as go
    except ImportError:
        return ""
    labels = [_label(p["params"]) for p in points]
    probs = [p["p_default"] if p["ok"] else None for p in points]
    upper = [(p["ci"][1] - p["p_default"]) if p["ok"] else None for p in points]
    lower = [(p["p_default"] - p["ci"][0]) if p["ok"] else None for p in points]
    bar = go.Figure(
        go.Bar(
            x=labels,
            y=probs,
            error_y={"type": "data", "array": upper, "arrayminus": lower, "symmetric": False},
        )
    )
    bar.update_layout(
        title="Default probability per grid point (Wilson 95 %)",
        yaxis={"range": [0, 1], "title": "P(default)"},
    )
    box = go.Figure()
    for label, p in zip(labels, points, strict=True):
        box.add_trace(go.Box(y=p["days"], name=label, boxpoints="all"))
    box.update_layout(
        title="Time to first default (days), runs that defaulted",
        yaxis={"title": "days"},
        showlegend=False,
    )
    money = []
    for what, title in (
        ("shortfalls", "Shortfall per run (dollars): how far below zero the defaulters ended"),
        ("uncovereds", "Uncovered per run (dollars): what no pool covered"),
    ):
        fig = go.Figure()
        for label, p in zip(labels, points, strict=True):
            fig.add_trace(
                go.Box(
                    y=[v / 100 for _, v in p[what]],
                    text=[f"seed {seed}" for seed, _ in p[what]],
                    name=label,
                    boxpoints="all",
                    boxmean=True,
                )
            )
        fig.update_layout(
            title=title, yaxis={"title": "dollars", "tickformat": "$,.0f"}, showlegend=False
        )
        money.append(fig.to_html(full_html=False, include_plotlyjs=False))
    return (
        bar.to_html(full_html=False, include_plotlyjs=True)
        + box.to_html(full_html=False, include_plotlyjs=False)
        + "".join(money)
    )
