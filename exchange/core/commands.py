"""Commands: what the outside world may ask of the exchange, validated at the edge.

A command arrives as a plain mapping (from a bot, a scenario driver or a socket) and is
validated by :func:`parse_command` into one of the pydantic models below. Validation covers
shape and domain (types, enums, positive quantities and prices); whether the account may do it
and whether the book accepts it are the engine's and the book's business.

Units: ``price`` in ticks, ``qty`` in lots, ``amount`` in minor units (cents).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

Name = Annotated[str, Field(min_length=1, max_length=64)]
PositiveInt = Annotated[int, Field(gt=0, le=(1 << 62))]

#: The largest balance, pool or running total the ledger holds, in minor units (10**17 cents,
#: a quadrillion dollars): a 46-fold margin under int64 (2**63 - 1), so sums of a few balances
#: still fit the store's int64 columns. Money a command or a scenario would carry past it is
#: refused with a reason, never left to overflow.
MAX_BALANCE = 10**17
#: The most one account's exposure to one instrument may be worth, minor units (10**15 cents,
#: ten trillion dollars): the worst its position and premium basis could reach if all its
#: resting orders filled, each lot valued at the instrument's largest price (a swap's lot with
#: every premium period and its payoff). A hundredth of MAX_BALANCE, so that every amount
#: derived from a position (a fill's notional and fee, variation margin, funding, premiums,
#: settlement) is at most a few MAX_EXPOSURE and an account's cash stays far inside int64
#: however many instruments it trades (docs/exchange.md, "Limits").
MAX_EXPOSURE = MAX_BALANCE // 100
#: The most lots one account may hold, or come to hold if its resting orders filled, in one
#: instrument: the margin engine's open interest (at most 2**42 lots) holds with over 4,000
#: accounts at the limit.
MAX_POSITION_LOTS = 10**9


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    account: Name


class Submit(_Command):
    """Submit an order. ``price`` is the limit in ticks (for a market order, an optional
    protection price; omit or 0 for none)."""

    type: Literal["submit"] = "submit"
    instrument: Name
    side: Literal["buy", "sell"]
    order_type: Literal["limit", "market"] = "limit"
    price: Annotated[int, Field(ge=0, le=(1 << 62))] = 0
    qty: PositiveInt
    tif: Literal["gtc", "ioc", "fok"] = "gtc"
    post_only: bool = False


class Cancel(_Command):
    """Cancel one of the account's resting orders."""

    type: Literal["cancel"] = "cancel"
    order_id: PositiveInt


class Amend(_Command):
    """Amend one of the account's resting orders to ``price`` ticks and ``qty`` open lots."""

    type: Literal["amend"] = "amend"
    order_id: PositiveInt
    price: PositiveInt
    qty: PositiveInt


class Deposit(_Command):
    """Add ``amount`` minor units of external cash to the account."""

    type: Literal["deposit"] = "deposit"
    amount: PositiveInt


class Withdraw(_Command):
    """Take ``amount`` minor units of cash out of the account."""

    type: Literal["withdraw"] = "withdraw"
    amount: PositiveInt


class CancelAll(_Command):
    """Cancel every resting order of the account (in ``instrument`` only, if given)."""

    type: Literal["cancel_all"] = "cancel_all"
    instrument: Name | None = None


class BotFailed(_Command):
    """The bot runner reports that the account's bot has stopped: the exchange logs a
    ``BotFailed`` event and cancels the account's resting orders. Sent by the runner (in-process
    or gateway), never accepted from a bot itself. ``cause`` is ``raised`` (an exception),
    ``budget`` (a callback overran its budget), ``timeout`` (a remote bot missed a lockstep
    deadline) or ``disconnected`` (a remote bot went away)."""

    type: Literal["bot_failed"] = "bot_failed"
    bot: Name
    cause: Literal["raised", "budget", "limit", "timeout", "disconnected"]
    callback: Annotated[str, Field(max_length=64)] = ""
    detail: Annotated[str, Field(max_length=8_000)] = ""


#: Command types a trading participant (a bot, a socket client) may send.
TRADING_TYPES = ("submit", "cancel", "amend", "cancel_all", "deposit", "withdraw")

Command = Annotated[
    Submit | Cancel | Amend | CancelAll | Deposit | Withdraw | BotFailed,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter = TypeAdapter(Command)
_VALIDATE = _ADAPTER.validator.validate_python


class CommandError(ValueError):
    """A command that failed validation; ``reason`` is a one-line, human-readable cause."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def jsonable(raw: Any) -> Any:
    """A JSON-safe copy of whatever arrived, for the log: the raw form if it serialises,
    else its ``repr`` (so a bad command is recorded, never crashes the recorder). Keys come
    out sorted, as a JSON round trip through the log would leave them.

    The round trip is also the quickest way to that copy for the common flat command: about
    0.7 us, against 1.4-2 us for checking its values one by one in Python and sorting."""
    try:
        return orjson.loads(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS))
    except Exception:  # anything orjson refuses, however it refuses it
        return {"unserialisable": _safe_repr(raw)}


def _safe_repr(raw: Any) -> str:
    """``repr(raw)`` cut to 1,000 characters, or, for an object whose ``repr`` raises (a
    hostile class, a list nested deeper than the recursion limit), a placeholder naming its
    type: whatever a client sends is recorded, nothing it sends raises here."""
    try:
        return repr(raw)[:1_000]
    except (Exception, SystemExit):  # a repr that calls sys.exit() does not end the session
        return f"<{type(raw).__name__} without a repr>"[:1_000]


def record(command: _Command) -> dict[str, Any]:
    """A validated command's JSON form, as ``CommandReceived`` logs it: every field's value,
    defaults included (what ``command.model_dump()`` gives). Every command model is flat --
    strings, ints, bools and None -- so a copy of the instance's field values is the same dict,
    at a tenth of ``model_dump``'s cost on the order path (tests/exchange/core/test_commands.py
    holds the two equal for every command type)."""
    return dict(command.__dict__)


def parse_command(raw: Any) -> _Command:
    """Validate a raw command mapping; raises :class:`CommandError` with the reason."""
    try:
        # the adapter's core validator itself: TypeAdapter.validate_python's own Python
        # wrapper cost a quarter of the validation (0.3 of 1.3 us a command, measured)
        return _VALIDATE(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "command"
        raise CommandError(one_line(f"{where}: {first['msg']}")) from None


def one_line(text: str, limit: int = 1_000) -> str:
    """``text`` as one printable line of at most ``limit`` characters: a reason quotes what a
    client sent (a field name, a bad tag), which may hold newlines or control characters."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
