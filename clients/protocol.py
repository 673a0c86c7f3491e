"""The socket gateway's wire protocol, version 1: JSON text messages over a WebSocket.

The protocol mirrors the in-process bot API (:mod:`clients.bot`, :mod:`clients.context`) so that
a bot on the far side of a socket sees exactly what an in-process bot sees: the server sends one
``step`` per delivery the bot runner makes (the callbacks to run, in order, and the account
snapshot), and the bot answers each step with one ``commands`` message (what its callbacks
sent, and the timers they set). The session's simulated time does not move until the answer
arrives (lockstep). See ``docs/protocol.md`` for the full description with examples.

Client -> server: ``hello``, ``commands``, ``fail``. Server -> client: ``welcome``, ``step``,
``stop``, ``error``. Every incoming message is validated with the strict pydantic models below
(``extra="forbid"``). A command's *content* (prices, sizes, sides, instruments) is validated
once, by the exchange (``exchange.core.commands``), exactly as for an in-process bot: the gateway
checks the envelope — a known trading ``type``, only that type's fields, the ``account`` (if
given) the bot's own, ``ref`` an integer — and passes the values through untouched, so a bad
order from a remote bot is rejected and logged exactly as the same order from an in-process bot.

Payload encoding (:func:`encode_message` / :func:`decode_message`) is exact: every
:mod:`clients.bot` message decodes to an equal NamedTuple of the same type, book levels to
``BookLevel`` tuples inside tuples.

Units as everywhere: prices in ticks, quantities in lots, cash in minor units, times in
simulated ns.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_type_hints

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    create_model,
)

from clients.bot import MAX_COMMANDS, BookLevel, BookView, Bot
from clients.context import AccountView, OpenOrder
from exchange.core import commands as xc

#: The protocol version this module speaks (``hello.protocol``, ``welcome.protocol``).
PROTOCOL = 1
#: Largest client message the gateway accepts, bytes (UTF-8); larger ones are rejected with an
#: ``error`` and logged.
MAX_MESSAGE_BYTES = 64 * 1024
#: Transport cap, bytes: a frame larger than this closes the connection (WebSocket close code
#: 1009, "message too big") and the bot fails as ``disconnected``.
HARD_MAX_BYTES = 1 << 20
#: Most timers in one ``commands`` message (more: a flood; the message is rejected).
MAX_TIMERS = 256
#: Most client messages (valid or not) per step; the next one disconnects the bot (flood).
MAX_MESSAGES_PER_STEP = 8
#: Deepest nesting of arrays and objects in a client message (the message itself is level 1):
#: deeper ones are refused, so that whatever is accepted can be logged and sent back.
MAX_DEPTH = 32
#: Integers in a client message must fit a signed 64-bit integer, as everything the event log
#: stores does; a larger one is refused (JSON allows any size).
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1

Name = Annotated[str, Field(min_length=1, max_length=64)]
Step = Annotated[int, Field(ge=1)]


class ProtocolError(ValueError):
    """A message that breaks the protocol; ``reason`` is a one-line cause."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ---------------------------------------------------------------------- client -> server
class Hello(_Strict):
    """First message of a connection: the protocol version and the bot's token.

    ``books``: the instruments whose ``on_book`` views the bot wants (``null``: all), like
    :attr:`clients.bot.Bot.books` in-process."""

    type: Literal["hello"]
    protocol: int
    token: Annotated[str, Field(min_length=1, max_length=256)]
    books: Annotated[list[Name], Field(max_length=256)] | None = None


class Commands(_Strict):
    """The answer to step ``step``: the commands the callbacks sent, in order, and the timers
    they set as ``[at_ns, tag]`` (``tag``: any JSON value, returned by ``on_timer``)."""

    type: Literal["commands"]
    step: Step
    commands: list[dict[str, JsonValue]] = Field(default_factory=list)
    timers: list[tuple[int, JsonValue]] = Field(default_factory=list)


class Fail(_Strict):
    """The answer to step ``step`` when a callback failed on the client (it raised, or overran
    its budget): the server stops the bot as the in-process runner would."""

    type: Literal["fail"]
    step: Step
    cause: Literal["raised", "budget"]
    callback: Annotated[str, Field(max_length=64)] = ""
    detail: Annotated[str, Field(max_length=8_000)] = ""


ClientMessage = Annotated[Hello | Commands | Fail, Field(discriminator="type")]
_CLIENT: TypeAdapter = TypeAdapter(ClientMessage)


def _wire_model(command: type[BaseModel]) -> type[BaseModel]:
    """A command on the wire: the fields of ``command`` (values checked by the exchange),
    ``account`` optional (the server fills it in), ``ref`` on submits."""
    kind = command.model_fields["type"].default
    fields: dict[str, Any] = {
        name: (JsonValue, None) for name in command.model_fields if name not in ("type", "account")
    }
    fields["type"] = (Literal[kind], ...)
    fields["account"] = (str | None, None)
    if kind == "submit":
        fields["ref"] = (Annotated[int, Field(ge=0, le=1 << 62)] | None, None)
    return create_model(f"Wire{command.__name__}", __base__=_Strict, **fields)


#: The trading commands a bot may send (``exchange.core.commands.TRADING_TYPES``; never
#: ``bot_failed``, which only the runner sends).
WIRE_COMMANDS = {
    model.model_fields["type"].default: _wire_model(model)
    for model in (xc.Submit, xc.Cancel, xc.Amend, xc.CancelAll, xc.Deposit, xc.Withdraw)
}
assert tuple(WIRE_COMMANDS) == xc.TRADING_TYPES


def parse_client(data: bytes | str) -> Hello | Commands | Fail:
    """Validate one client message (a text frame, or a binary one holding UTF-8 JSON); raises
    :class:`ProtocolError` (oversized, not UTF-8, not JSON, nested deeper than
    :data:`MAX_DEPTH`, an integer beyond 64 bits, NaN or infinity, not a valid message)."""
    try:
        size = len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode())
    except UnicodeEncodeError as exc:  # a str no socket delivers: lone surrogates
        raise ProtocolError(f"message: not UTF-8 text (character {exc.start:,})") from None
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message too big: {size:,} bytes (limit {MAX_MESSAGE_BYTES:,})")
    if isinstance(data, bytes):
        try:
            data = data.decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"message: not UTF-8 text (byte {exc.start:,})") from None
    try:
        message = _CLIENT.validate_json(data)
    except ValidationError as exc:
        raise ProtocolError(_first_error(exc)) from None
    if isinstance(message, Commands):
        check_json(message.commands, depth=2, where="commands")
        check_json(message.timers, depth=2, where="timers")
    return message


_INF = float("inf")


def check_json(value: Any, depth: int = 1, where: str = "message") -> None:
    """Raise :class:`ProtocolError` if ``value`` (parsed JSON, ``depth`` its nesting level)
    holds an integer outside :data:`INT_MIN`..:data:`INT_MAX`, a NaN or infinite number, or
    arrays and objects nested deeper than :data:`MAX_DEPTH` (checked before descending, so
    the recursion is at most that deep)."""
    kind = type(value)
    if kind is dict:
        items = value.values()
    elif kind is list or kind is tuple:
        items = value
    else:  # a scalar: no level of its own
        items, depth = (value,), depth - 1
    if depth > MAX_DEPTH:
        raise ProtocolError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    for item in items:
        kind = type(item)
        if kind is int:
            if not INT_MIN <= item <= INT_MAX:
                raise ProtocolError(f"{where}: an integer beyond 64 bits (limit 2^63 - 1 in size)")
        elif kind is str or kind is bool or item is None:
            continue
        elif kind is float:
            if item != item or item == _INF or item == -_INF:
                raise ProtocolError(f"{where}: NaN and Infinity are not JSON numbers")
        else:
            check_json(item, depth + 1, where)


def parse_command(raw: dict[str, Any], account: str) -> tuple[int | None, dict[str, Any]]:
    """One command of a ``commands`` message, for ``account``'s bot: ``(ref, command)`` with
    the account filled in, ready for ``Exchange.handle``. Raises :class:`ProtocolError` for
    an unknown type, a field the type does not have, or another account (unauthorised)."""
    kind = raw.get("type")
    if kind == "bot_failed":
        raise ProtocolError("unauthorised: bot_failed is sent by the runner, never by a bot")
    model = WIRE_COMMANDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ProtocolError(f"type: expected one of {', '.join(xc.TRADING_TYPES)}, got {kind!r}")
    try:
        wire = model.model_validate(raw)
    except ValidationError as exc:
        raise ProtocolError(_first_error(exc)) from None
    if wire.account is not None and wire.account != account:
        raise ProtocolError(
            f"unauthorised: this connection trades {account!r}, not {wire.account!r}"
        )
    command = {name: getattr(wire, name) for name in wire.model_fields_set if name != "ref"}
    command["account"] = account
    return (wire.ref if kind == "submit" else None), command


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "message"
    return f"{where}: {first['msg']}"


# ---------------------------------------------------------------------- server -> client
class _Lenient(BaseModel):
    """Server messages: strict types, but unknown fields are ignored, so that a version-1
    server may add optional fields without breaking version-1 clients."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class RngState(_Lenient):
    """The state of the bot's ``numpy`` PCG64 generator (``clients.runner.bot_rng``), as
    decimal strings (128-bit integers). Sent instead of the seed material so a remote bot
    cannot learn the session seed (from which every index path follows)."""

    bit_generator: Literal["PCG64"]
    state: str
    inc: str


class Welcome(_Lenient):
    """The answer to a good ``hello``: the protocol version, the bot and account this
    connection trades, and the state of its random generator."""

    type: Literal["welcome"]
    protocol: int
    bot: str
    account: str
    rng: RngState


class StepMessage(_Lenient):
    """One delivery: ``messages`` are the callbacks to run, in order, as ``(name, payload)``
    (``clients.bot`` messages in :func:`encode_message` form); ``t`` the simulated time
    (ns); ``account`` the account's snapshot (cash in minor units, positions in lots). The
    bot answers with one ``commands`` message of the same ``step``."""

    type: Literal["step"]
    step: Step
    t: int
    messages: list[tuple[str, JsonValue]]
    account: dict[str, JsonValue]


class Stop(_Lenient):
    """The session is done with the bot (after ``on_stop``, or after the bot failed, then
    ``reason`` says why); the server closes the connection."""

    type: Literal["stop"]
    reason: str = ""


class Error(_Lenient):
    """A message of the bot was refused, with the ``reason``; ``step`` is the step it was
    answering (None before authentication), which stays open: the bot may still answer it."""

    type: Literal["error"]
    reason: str
    step: int | None = None


ServerMessage = Annotated[Welcome | StepMessage | Stop | Error, Field(discriminator="type")]
_SERVER: TypeAdapter = TypeAdapter(ServerMessage)


def parse_server(data: bytes | str) -> Welcome | StepMessage | Stop | Error:
    """Validate one server message (the client side); raises :class:`ProtocolError`."""
    try:
        return _SERVER.validate_json(data)
    except ValidationError as exc:
        raise ProtocolError(_first_error(exc)) from None


def rng_state(generator: np.random.Generator) -> dict[str, str]:
    """The wire form of a PCG64 generator's state (``welcome.rng``)."""
    state = generator.bit_generator.state
    if state["bit_generator"] != "PCG64" or state["has_uint32"]:
        raise ValueError("only a fresh PCG64 generator can be sent")
    inner = state["state"]
    return {"bit_generator": "PCG64", "state": str(inner["state"]), "inc": str(inner["inc"])}


def rng_from_state(rng: RngState | dict[str, str]) -> np.random.Generator:
    """The generator whose state ``rng`` describes: it draws exactly what the in-process
    ``clients.runner.bot_rng`` would."""
    if isinstance(rng, dict):
        rng = RngState.model_validate(rng)
    generator = np.random.Generator(np.random.PCG64())
    generator.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": int(rng.state), "inc": int(rng.inc)},
        "has_uint32": 0,
        "uinteger": 0,
    }
    return generator


# ---------------------------------------------------------------------- payloads
def _payload_types() -> dict[str, type]:
    """Callback name -> its payload's NamedTuple class, read off :class:`clients.bot.Bot`'s
    signatures, so a callback added to the bot API travels without a change here."""
    found = {}
    for name in dir(Bot):
        if name.startswith("on_"):
            hints = get_type_hints(getattr(Bot, name), localns={"Context": Any})
            hints.pop("return", None)
            hints.pop("ctx", None)
            for kind in hints.values():
                if isinstance(kind, type) and issubclass(kind, tuple) and kind is not BookView:
                    found[name] = kind
    return found


_PAYLOADS: dict[str, type] = _payload_types()
#: Every callback a step may name.
CALLBACKS = frozenset({"on_start", "on_stop", "on_book", "on_timer", *_PAYLOADS})


def encode_message(name: str, payload: Any) -> list[Any]:
    """``[callback_name, payload]`` for a runner message: a NamedTuple as a JSON object (book
    levels as ``[price, qty]`` pairs), ``None`` as ``null``, a timer's tag as it is."""
    if name == "on_book":
        return [
            name,
            {
                "instrument": payload.instrument,
                "t": payload.t,
                "bids": [[level[0], level[1]] for level in payload.bids],
                "asks": [[level[0], level[1]] for level in payload.asks],
            },
        ]
    if name in _PAYLOADS:
        return [name, payload._asdict()]
    return [name, payload]  # on_start/on_stop (None), on_timer (the tag)


def decode_message(message: Any) -> tuple[str, Any]:
    """The runner message ``encode_message`` encoded: ``(callback_name, payload)`` with the
    payload an equal NamedTuple of the same type. Raises :class:`ProtocolError`."""
    try:
        name, payload = message
        if name == "on_book":
            if set(payload) != {"instrument", "t", "bids", "asks"}:
                raise ValueError("book view fields")
            return name, BookView(
                payload["instrument"],
                payload["t"],
                tuple(BookLevel(price, qty) for price, qty in payload["bids"]),
                tuple(BookLevel(price, qty) for price, qty in payload["asks"]),
            )
        cls = _PAYLOADS.get(name)
        if cls is not None:
            if len(payload) != len(cls._fields):
                raise ValueError(f"{name} fields")
            return name, cls(*[payload[f] for f in cls._fields])
        if name in ("on_start", "on_stop"):
            if payload is not None:
                raise ValueError(f"{name} carries no payload")
            return name, None
        if name == "on_timer":
            return name, payload
    except (TypeError, ValueError, KeyError) as exc:
        raise ProtocolError(f"bad message {message!r:.200}: {exc}") from None
    raise ProtocolError(f"unknown callback {name!r}")


def encode_account(view: AccountView) -> dict[str, Any]:
    """The step's account snapshot: cash, positions (lots by instrument) and resting orders
    as ``[order_id, instrument, side, price, qty]``, oldest first."""
    return {
        "cash": view.cash,
        "positions": view.positions,
        "orders": [list(order) for order in view.orders],
    }


def decode_account(account: dict[str, Any]) -> AccountView:
    """The :class:`~clients.context.AccountView` ``encode_account`` encoded."""
    try:
        return AccountView(
            account["cash"],
            dict(account["positions"]),
            tuple(OpenOrder(*order) for order in account["orders"]),
        )
    except (TypeError, KeyError) as exc:
        raise ProtocolError(f"bad account snapshot: {exc}") from None


__all__ = [
    "CALLBACKS",
    "HARD_MAX_BYTES",
    "INT_MAX",
    "INT_MIN",
    "MAX_COMMANDS",
    "MAX_DEPTH",
    "MAX_MESSAGES_PER_STEP",
    "MAX_MESSAGE_BYTES",
    "MAX_TIMERS",
    "PROTOCOL",
    "Commands",
    "Error",
    "Fail",
    "Hello",
    "ProtocolError",
    "StepMessage",
    "Stop",
    "Welcome",
    "check_json",
    "decode_account",
    "decode_message",
    "encode_account",
    "encode_message",
    "parse_client",
    "parse_command",
    "parse_server",
    "rng_from_state",
    "rng_state",
]
