"""Run a Python bot against a session served by ``gpuex serve``, over the socket gateway.

    from clients.remote import run_remote
    run_remote(MyBot(), "ws://127.0.0.1:8765", token)

The bot runs exactly as it would in-process: :func:`run_remote` builds the same
:class:`~clients.context.Context` (its generator in the state the in-process runner would seed,
sent in ``welcome``), and runs every ``step`` through the runner's own
:func:`clients.runner.dispatch` — same callbacks, same order, same per-callback budget — then
answers with the commands and timers the callbacks produced. So the same Bot class gives a
byte-identical event log in-process and remote.

Timer tags never leave the process: each timer goes out with a number and comes back as the
tag object the bot scheduled (any Python object, as in-process). A callback that raises or
overruns its budget is reported with a ``fail`` message, and the server stops the bot exactly as
the in-process runner does (``BotFailed`` with the same traceback text).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from clients.bot import Bot
from clients.budget import DEFAULT_LINES
from clients.context import Context
from clients.protocol import (
    PROTOCOL,
    Error,
    ProtocolError,
    StepMessage,
    Stop,
    Welcome,
    decode_account,
    decode_message,
    parse_server,
    rng_from_state,
)
from clients.runner import BotFailure, dispatch
from exchange.core.commands import jsonable

log = logging.getLogger("gpuex.remote")


class RemoteError(RuntimeError):
    """The server refused the bot (``error`` before ``welcome``) or broke the protocol."""


@dataclass
class RemoteRun:
    """How a remote run went: the bot's name and account, the steps answered, the server's
    ``error`` replies, the failure that stopped the bot (if any), the stop reason."""

    bot: str
    account: str
    steps: int = 0
    errors: list[str] = field(default_factory=list)
    failure: BotFailure | None = None
    stopped: str | None = None
    context: Context | None = None


def _dumps(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def run_remote(
    bot: Bot,
    url: str,
    token: str,
    *,
    budget_lines: int | None = DEFAULT_LINES,
    open_timeout: float = 10.0,
) -> RemoteRun:
    """Connect ``bot`` to the session at ``url`` with ``token`` and run it until the session
    stops it; returns a :class:`RemoteRun`. Raises :class:`RemoteError` if the server refuses
    the hello."""
    with connect(url, max_size=None, compression=None, open_timeout=open_timeout) as ws:
        books = None if bot.books is None else list(bot.books)
        ws.send(_dumps({"type": "hello", "protocol": PROTOCOL, "token": token, "books": books}))
        try:
            first = parse_server(ws.recv())
        except ConnectionClosed as exc:
            raise RemoteError(f"the server closed the connection: {exc}") from None
        if isinstance(first, Error):
            raise RemoteError(first.reason)
        if not isinstance(first, Welcome) or first.protocol != PROTOCOL:
            raise RemoteError(f"expected a protocol {PROTOCOL} welcome, got {first!r:.200}")
        ctx = Context(first.bot, first.account, rng_from_state(first.rng))
        run = RemoteRun(first.bot, first.account, context=ctx)
        tags: dict[int, Any] = {}
        next_tag = 0
        try:
            for data in ws:
                message = parse_server(data)
                if isinstance(message, StepMessage):
                    messages = []
                    for item in message.messages:
                        name, payload = decode_message(item)
                        if name == "on_timer":
                            if payload not in tags:
                                raise ProtocolError(f"on_timer for unknown timer {payload!r}")
                            payload = tags.pop(payload)
                        messages.append((name, payload))
                    ctx._begin(message.t, decode_account(message.account))
                    try:
                        outbox, timers = dispatch(bot, ctx, messages, budget_lines)
                    except BotFailure as failure:
                        ctx._drain()
                        run.failure = failure
                        ws.send(
                            _dumps(
                                {
                                    "type": "fail",
                                    "step": message.step,
                                    "cause": failure.cause,
                                    "callback": failure.callback[:64],
                                    "detail": failure.detail[-8_000:],
                                }
                            )
                        )
                        continue
                    wire_timers = []
                    for at, tag in timers:
                        next_tag += 1
                        tags[next_tag] = tag
                        wire_timers.append([at, next_tag])
                    commands = []
                    for ref, command in outbox:
                        command = jsonable(command)
                        command.pop("account", None)
                        if ref is not None:
                            command["ref"] = ref
                        commands.append(command)
                    ws.send(
                        _dumps(
                            {
                                "type": "commands",
                                "step": message.step,
                                "commands": commands,
                                "timers": wire_timers,
                            }
                        )
                    )
                    run.steps += 1
                elif isinstance(message, Stop):
                    run.stopped = message.reason or "stopped"
                    break
                elif isinstance(message, Error):
                    log.warning("[%s] gateway: %s", run.bot, message.reason)
                    run.errors.append(message.reason)
                else:
                    raise ProtocolError(f"unexpected {message.type} during the session")
        except ConnectionClosed as exc:
            run.stopped = run.stopped or f"connection closed ({exc})"
        except ProtocolError as exc:
            raise RemoteError(f"protocol error from the server: {exc.reason}") from None
        finally:
            ctx.stopped = True
        return run


__all__ = ["RemoteError", "RemoteRun", "run_remote"]
