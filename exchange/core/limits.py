"""What a session may ask for: the bounds every scenario, override and run option is checked
against before anything is created (``docs/scenarios.md``, *Limits*).

A session's log stores integers in SQLite's signed 64-bit columns and schedules the exchange's
own timed actions (index prints, funding, premiums, margin cycles) up front, so a scenario that
implies a number past these bounds would fail late — an overflow deep in a run, or an
allocation of petabytes — instead of being refused with its field named. Each ``check_*``
function raises :class:`ValueError` with a one-line reason naming the field; callers prefix
the scenario's or the option's name.
"""

from __future__ import annotations

import types
import typing
from datetime import date
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, model_validator

from exchange.core.clock import DAY_NS
from exchange.core.commands import MAX_BALANCE, MAX_EXPOSURE

#: Largest integer a log can store (SQLite INTEGER, signed 64-bit); also the largest seed.
MAX_INT64 = 2**63 - 1
MAX_SEED = MAX_INT64
#: Events per committed batch (a batch is held in memory before it is written).
MAX_BATCH_SIZE = 1_000_000
#: Events between snapshots (larger values are as good as ``0``, no snapshots).
MAX_SNAPSHOT_EVERY = 10**12
#: The longest session, in days (ten years and a bit), and in simulated ns.
MAX_SESSION_DAYS = 3_660
MAX_SESSION_NS = MAX_SESSION_DAYS * DAY_NS
#: Any duration (a ``*_ns`` field) is at most this: a wait longer than the longest session
#: never ends inside one, and simulated times plus durations stay far inside int64.
MAX_DURATION_NS = MAX_SESSION_NS
#: The calendar a scenario may use: its start and every date in it (anchors, jumps, listings,
#: maturities). 230 years of ns is 7.3e18, inside int64, so every date is a valid time.
FIRST_DATE = date(1970, 1, 1)
LAST_DATE = date(2199, 12, 31)
#: The exchange's own timed actions a session may schedule: index prints, fundings, premiums,
#: maturities and margin cycles together (they are scheduled when the session starts). A year
#: of hourly prints of two indices is 17,520; minute prints of one index for ten years, 5.3
#: million.
MAX_MARKET_ACTIONS = 10_000_000

__all__ = [
    "FIRST_DATE",
    "LAST_DATE",
    "MAX_BALANCE",
    "MAX_BATCH_SIZE",
    "MAX_DURATION_NS",
    "MAX_EXPOSURE",
    "MAX_INT64",
    "MAX_MARKET_ACTIONS",
    "MAX_SEED",
    "MAX_SESSION_DAYS",
    "MAX_SESSION_NS",
    "MAX_SNAPSHOT_EVERY",
    "RawChecked",
    "check_date",
    "check_funding",
    "check_instrument",
    "check_market_actions",
    "check_money",
    "check_raw",
    "check_recorder",
    "check_seed",
    "every_count",
]


# ---------------------------------------------------------------------- run options
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_seed(seed: Any) -> None:
    """A seed is an integer in ``0..MAX_SEED``."""
    if not _is_int(seed):
        raise ValueError(f"seed: {seed!r} is not an integer")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed: {seed} is outside 0..{MAX_SEED} (2**63 - 1)")


def check_recorder(batch_size: Any, snapshot_every: Any) -> None:
    """``batch_size`` in ``1..MAX_BATCH_SIZE``; ``snapshot_every`` 0 (none) or a multiple of
    ``batch_size`` up to ``MAX_SNAPSHOT_EVERY``."""
    if not _is_int(batch_size) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size: {batch_size!r} is outside 1..{MAX_BATCH_SIZE:,}")
    if not _is_int(snapshot_every) or not 0 <= snapshot_every <= MAX_SNAPSHOT_EVERY:
        raise ValueError(
            f"snapshot_every: {snapshot_every!r} is outside 0..{MAX_SNAPSHOT_EVERY:,} (0: none)"
        )
    if snapshot_every % batch_size:
        raise ValueError(
            f"snapshot_every: {snapshot_every} is not a multiple of batch_size {batch_size}"
        )


# ---------------------------------------------------------------------- scenario values
def check_money(where: str, amount: int, bound: int = MAX_BALANCE) -> None:
    """An amount of money (minor units) in ``0..bound`` (default the ledger's bound)."""
    if not 0 <= amount <= bound:
        raise ValueError(
            f"{where}: {amount:,} minor units is outside 0..{bound:,} (the ledger's bound)"
        )


def check_date(where: str, day: date) -> None:
    """A date of a scenario lies in ``FIRST_DATE..LAST_DATE``."""
    if not FIRST_DATE <= day <= LAST_DATE:
        raise ValueError(f"{where}: {day} is outside {FIRST_DATE}..{LAST_DATE}")


def check_instrument(where: str, spec: Any) -> None:
    """One lot at the instrument's largest price is worth at most ``MAX_EXPOSURE`` (and, for a
    swap, its payoff per contract at the floor as well): a bigger tick size, multiplier or
    price range makes every fill's notional overflow the ledger."""
    if spec.tick_value < 1:
        raise ValueError(f"{where}: one tick on one lot is worth less than a minor unit")
    payoff = getattr(spec, "payoff_tick_value", None)
    if payoff is not None and payoff < 1:
        raise ValueError(f"{where}: one index tick of payoff is worth less than a minor unit")
    per_lot = spec.tick_value * spec.max_price
    if per_lot > MAX_EXPOSURE:
        raise ValueError(
            f"{where}: a lot at max_price is worth {per_lot:,} minor units (tick value "
            f"{spec.tick_value:,} x {spec.max_price:,} ticks), past {MAX_EXPOSURE:,}"
        )
    if payoff is not None and payoff * spec.floor > MAX_EXPOSURE:
        raise ValueError(
            f"{where}: the payoff of a contract at the floor is {payoff * spec.floor:,} minor "
            f"units, past {MAX_EXPOSURE:,}"
        )


def check_funding(where: str, spec: Any, end_ns: int) -> None:
    """A perpetual's cumulative funding index (nano-minor units per lot, the ``FundingRate``
    event's amount) stays inside int64 for the whole session even if every interval pays at
    the cap on a mark at ``max_price``: ``intervals x cap_ppm x max_price x tick_value x 1000
    <= 2**63 - 1``. (The built-in perpetuals need 5.5e18 over the longest session.)"""
    intervals = every_count(end_ns, spec.funding_interval_ns)
    per_interval = spec.funding_cap_ppm * spec.max_price * spec.tick_value * 1_000
    if intervals * per_interval > MAX_INT64:
        raise ValueError(
            f"{where}: at its funding cap ({spec.funding_cap_ppm:,} ppm, the smallest "
            f"IM - MM of its margin tiers) on a mark at max_price, {intervals:,} funding "
            f"intervals would take its cumulative funding index past int64 (a lower cap, "
            f"max_price or tick "
            "value, a longer funding interval or a shorter session)"
        )


def check_market_actions(end_ns: int, counts: dict[str, int]) -> None:
    """The session's length and the exchange's timed actions it implies (``counts``: what ->
    how many) are within ``MAX_SESSION_NS`` and ``MAX_MARKET_ACTIONS`` in total."""
    if not 0 < end_ns <= MAX_SESSION_NS:
        raise ValueError(
            f"the session lasts {end_ns:,} ns, outside 1..{MAX_SESSION_NS:,} "
            f"({MAX_SESSION_DAYS:,} days)"
        )
    total = sum(counts.values())
    if total > MAX_MARKET_ACTIONS:
        worst = max(counts, key=lambda k: counts[k])
        raise ValueError(
            f"{worst}: {counts[worst]:,} scheduled actions ({total:,} in all), past the "
            f"{MAX_MARKET_ACTIONS:,} a session may schedule (a longer interval?)"
        )


def every_count(end_ns: int, interval_ns: int) -> int:
    """How many times ``k * interval_ns`` (k >= 1) fall in ``(0, end_ns]``."""
    return end_ns // interval_ns if interval_ns > 0 else 0


# ---------------------------------------------------------------------- raw input
def check_raw(data: Any, annotation: Any, where: str = "") -> None:
    """Check a scenario's raw input (before pydantic validation) against ``annotation`` (a
    model class or a type); raise ``ValueError`` naming the first offending field.

    * every integer fits int64 (the log stores them so), and one in a field whose name ends
      in ``_ns`` (a duration or a time) is at most ``MAX_DURATION_NS``;
    * a decimal string in a ``*tick_size`` or ``*multiplier`` field is within 1e-30..1e30;
    * a boolean only where the field takes one: pydantic's lax mode takes ``True`` for an
      ``int`` (``days = true`` ran one day) or a float, and a scenario must say what it means.
      Called before validation because afterwards the boolean has already become 1.

    Walks nested models, lists, tuples, mappings and unions; ``Any`` takes any boolean (the
    integer bounds still hold there)."""
    _walk(data, annotation, where, "")


class RawChecked(BaseModel):
    """A model whose raw input goes through :func:`check_raw` against the model itself before
    pydantic validates it: the scenario models subclass this so that the check cannot be left
    out of one of them (or written differently in each)."""

    @model_validator(mode="before")
    @classmethod
    def _raw(cls, data: Any) -> Any:
        # no boolean for a number, integers inside int64, durations bounded; ``cls`` is the
        # subclass being validated, so its own fields are the ones checked
        if isinstance(data, dict):
            check_raw(data, cls)
        return data


def _walk(data: Any, annotation: Any, where: str, key: str) -> None:
    if isinstance(data, bool):
        if not _takes_bool(annotation):
            raise ValueError(f"{where or 'value'}: {str(data).lower()} is a boolean, not a number")
        return
    if isinstance(data, int):
        if not -MAX_INT64 <= data <= MAX_INT64:
            raise ValueError(f"{where or 'value'}: {data} is outside the 64-bit integer range")
        if key.endswith("_ns") and data > MAX_DURATION_NS:
            raise ValueError(
                f"{where}: {data:,} ns is longer than the longest session "
                f"({MAX_DURATION_NS:,} ns, {MAX_SESSION_DAYS:,} days)"
            )
        return
    if isinstance(data, str) and key.endswith(_DECIMAL_KEYS):
        _check_decimal(data, where)
        return
    if isinstance(data, dict):
        for k, value in data.items():
            _walk(value, _field_of(annotation, k), f"{where}.{k}" if where else str(k), str(k))
        return
    if isinstance(data, list | tuple):
        for i, item in enumerate(data):
            _walk(item, _item_of(annotation, i), f"{where}.{i}", key)


#: Fields written as decimal strings (tick sizes, multipliers): their magnitude is bounded so
#: that the arithmetic on them stays exact and small (``"1e999999999"`` overflowed Decimal).
_DECIMAL_KEYS = ("tick_size", "multiplier")
_DECIMAL_EXPONENT = 30


def _check_decimal(text: str, where: str) -> None:
    try:
        value = Decimal(text)
    except ArithmeticError:
        return  # not a number: the field's own validation says so
    if value.is_finite() and value and abs(value.adjusted()) > _DECIMAL_EXPONENT:
        raise ValueError(
            f"{where}: {text!r} is outside 1e-{_DECIMAL_EXPONENT}..1e{_DECIMAL_EXPONENT}"
        )


def _field_of(annotation: Any, key: str) -> Any:
    """The annotation of ``key`` in a mapping typed ``annotation``: the union of its types in
    every alternative that has it (a discriminated union of models: the one with the field);
    Any if none does (pydantic then refuses an unknown field)."""
    found: list[Any] = []
    for option in _options(annotation):
        if isinstance(option, type) and issubclass(option, BaseModel):
            field = option.model_fields.get(key)
            if field is not None:
                found.append(field.annotation)
        elif typing.get_origin(option) is dict:
            args = typing.get_args(option)
            found.append(args[1] if args else Any)
    if not found:
        return Any
    return found[0] if len(found) == 1 else typing.Union[tuple(found)]  # noqa: UP007


def _item_of(annotation: Any, i: int) -> Any:
    """The annotation of item ``i`` of a list or tuple typed ``annotation`` (Any if unknown)."""
    for option in _options(annotation):
        origin = typing.get_origin(option)
        args = typing.get_args(option)
        if origin in (list, set, frozenset):
            return args[0] if args else Any
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return args[0]
            return args[i] if i < len(args) else Any
    return Any


def _options(annotation: Any) -> list[Any]:
    """The alternatives of a (possibly Annotated, Optional or union) annotation."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            out.extend(_options(arg))
        return out
    return [annotation]


def _takes_bool(annotation: Any) -> bool:
    """Does a field typed ``annotation`` take a boolean (bool, a boolean Literal, Any)?"""
    for option in _options(annotation):
        if option is Any or option is bool or option is object:
            return True
        if typing.get_origin(option) is typing.Literal and any(
            isinstance(v, bool) for v in typing.get_args(option)
        ):
            return True
    return False
