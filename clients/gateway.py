"""The socket gateway: bots in any language trade a session over a WebSocket, in lockstep.

``gpuex serve`` (and :func:`serve_session`) runs a session in which some bots are *remote*: a
program connects to ``ws://HOST:PORT``, says ``hello`` with the token the session issued for its
account, and from then on receives one ``step`` for every delivery the bot runner makes and
answers each with the commands and timers its callbacks produced (:mod:`clients.protocol`,
``docs/protocol.md``). The runner treats it like any bot: :class:`RemoteDriver` has the
in-process driver's ``deliver``/``close``.

Threads. The simulation runs in the thread that calls :func:`serve_session`; the server is the
``websockets`` *threaded* server (``websockets.sync``), one thread per connection. A connection's
thread only authenticates the bot (``hello`` -> ``welcome``) and then parks; from there on the
simulation thread itself sends each ``step`` and waits for the answer with
``recv(timeout=...)``. The runner calls ``deliver`` synchronously from inside the simulated
clock, so a blocking send/receive with a deadline is exactly what it needs: no event loop, no
cross-thread futures, and nothing but the simulation thread ever touches the engine.

Lockstep. Simulated time does not move while a step is out: the session waits for the answer,
so a remote bot is exactly as fast, in simulated time, as an in-process one, and a session's
log does not depend on the machine or the network. A bot that does not answer within
``step_timeout`` wall-clock seconds, or does not read what it is sent within that time (its
socket does not drain), is disconnected and stopped (``BotFailed``, cause ``timeout``); a
closed connection stops it as ``disconnected``. Its resting orders are cancelled and the
session goes on.

Rejections. Whatever an authenticated bot sends that the gateway refuses — malformed JSON, an
oversized message, a command for another account, a flood — gets an ``error`` reply and is
logged as ``CommandRejected`` with ``source: "gateway"`` (``Exchange.reject``; ``verify``
re-records it the same way), at the simulated time of the step it was read with, in the order
the bot sent it: deterministic for a deterministic bot. :func:`read_message` decides, without
touching the engine or the socket, what one message means. Connections that never
authenticate (a bad ``hello``) get an ``error`` reply and are closed, counted, and never
logged: they arrive on the wall clock, so anything they wrote would land in the log wherever
they happened to arrive, and a stranger must not be able to change a session's log. Session
tokens never reach the log: every text recorded from a bot's message is redacted first
(:func:`loggable`).

Determinism. Same scenario, seed and bots => byte-identical event log, whether a bot runs
in-process or remotely through :func:`clients.remote.run_remote` (tested).

Resume. ``serve_session(..., resume=True)`` (``gpuex serve --resume``) re-runs a crashed
session from its start with the remote bots connected again, and continues it once every
committed event has been regenerated, as ``gpuex run --resume`` does for in-process bots; a
remote bot that acts otherwise than it did fails the resume, its committed events unchanged.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import re
import secrets
import socket
import string
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve

from clients.bot import Bot
from clients.budget import DEFAULT_LINES
from clients.latency import Latency
from clients.protocol import (
    HARD_MAX_BYTES,
    MAX_COMMANDS,
    MAX_MESSAGES_PER_STEP,
    MAX_TIMERS,
    PROTOCOL,
    Commands,
    Fail,
    Hello,
    ProtocolError,
    check_json,
    encode_account,
    encode_message,
    parse_client,
    parse_command,
    rng_state,
)
from clients.runner import DEFAULT_DEPTH, BotFailure, bot_rng, make_runner
from exchange.core.clock import Simulator
from exchange.kernel.engine import Exchange
from exchange.kernel.engines import DEFAULT_ENGINE
from exchange.sessions.session import (
    DEFAULT_BATCH,
    DEFAULT_SNAPSHOT_EVERY,
    RunSummary,
    SessionError,
    committed_session,
)
from exchange.sessions.session import run as session_run

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: Wall-clock seconds a remote bot has to answer a step; also the most a send to it may take
#: (a client that does not read fails as ``timeout``) and the time it has to say ``hello``.
DEFAULT_STEP_TIMEOUT = 10.0
#: Wall-clock seconds every declared remote bot has to connect before the session starts.
DEFAULT_CONNECT_TIMEOUT = 60.0
#: Most connections waiting to authenticate at once; further ones are closed at once (code
#: 1013, "try again later"), so a storm of strangers costs a bounded number of threads.
MAX_UNAUTHENTICATED = 64
#: Refused unauthenticated connections reported one by one on stderr (logger
#: ``gpuex.gateway``); later ones are only counted, and the count is reported at the end.
REPORTED_REFUSALS = 5
#: What replaces a session token, or the value of any ``token`` field, in what is logged.
REDACTED = "[redacted]"
#: Characters of a refused message's text kept for the log (the engine cuts further).
_KEEP = 4_096
#: Wall-clock seconds between two looks of the watchdog for sends past their deadline.
_WATCH_EVERY = 0.05

log = logging.getLogger("gpuex.gateway")

# the value of a "token" field in JSON text, closed or not (a malformed message may end in it)
_TOKEN_FIELD = re.compile(r'("token"\s*:\s*)"(?:[^"\\]|\\.)*"?', re.IGNORECASE)
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
# what secrets.token_urlsafe draws from
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-_")


class GatewayError(RuntimeError):
    """The gateway cannot run as asked (a bot did not connect, the port is taken, ...)."""


@dataclass
class BotEntry:
    """A bot of a served session.

    Attributes:
        name: the bot's name (seeds its random streams).
        account: the account it trades.
        bot: the in-process instance (unused, may be ``None``, when the bot is remote).
        latency: its latency model (default ``Latency()``).
        budget_lines: per-callback budget of an in-process bot (``None`` or 0: none).
        remote: served over the socket instead of in-process.
    """

    name: str
    account: str
    bot: Bot | None = None
    latency: Latency | None = None
    budget_lines: int | None = DEFAULT_LINES
    remote: bool = False


# ---------------------------------------------------------------------- what reaches the log
def _unescape(match: re.Match) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _TOKEN_CHARS else match.group(0)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every one of ``secrets`` (the session's tokens), and the value of every
    ``token`` field (closed or not, any case), replaced by :data:`REDACTED`. ``\\uXXXX``
    escapes of the characters a token is made of are decoded first, so an escaped token is
    found too."""
    if "\\u" in text:
        text = _ESCAPE.sub(_unescape, text)
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return _TOKEN_FIELD.sub(rf'\1"{REDACTED}"', text)


def _suspect(text: str, secrets: Iterable[str]) -> bool:
    """Whether ``text`` may hold something :func:`redact` would change (a quick look)."""
    return "\\u" in text or "oken" in text or "OKEN" in text or any(s in text for s in secrets)


def loggable(data: Any, secrets: Iterable[str] = ()) -> Any:
    """What the log records of a refused message or command: its JSON when it is JSON the
    session can carry (:func:`clients.protocol.check_json`), else its text, at most
    :data:`_KEEP` characters of it; in either case :func:`redact` ed, so that no session token
    and no ``token`` field's value is ever logged. ``data``: the frame as received (``str`` or
    ``bytes``, which are decoded with replacement) or a parsed value. Never raises."""
    if isinstance(data, bytes):
        text = data.decode("utf-8", "replace")
    elif isinstance(data, str):
        text = data if data.isascii() else data.encode("utf-8", "replace").decode()
    else:
        try:
            text = orjson.dumps(data).decode()
        except Exception:  # noqa: BLE001 - whatever it is, its repr is logged instead
            text = f"<unserialisable {type(data).__name__}>"
    text = redact(text, secrets)
    if len(text) > _KEEP:
        return text[:_KEEP]
    try:
        value = orjson.loads(text)
        check_json(value)
    except (orjson.JSONDecodeError, ProtocolError):
        return text
    return value


# ---------------------------------------------------------------------- reading a message
@dataclass(frozen=True)
class Reading:
    """What one message of an authenticated bot means for the step that is out
    (:func:`read_message`).

    Attributes:
        refused: ``(loggable, reason)`` for each refusal, in order: the whole message, or
            single commands of an answer. Each is logged (``Exchange.reject``) and answered
            with an ``error``; neither holds a session token.
        answer: the step's answer, ``(outbox, timers)`` as the bot runner takes them:
            ``[(ref, command)]`` with the account filled in, ``[(at_ns, tag)]``.
        failure: the bot is to be stopped: it reported a failed callback (``fail``), or the
            gateway could not read its message at all.
    """

    refused: tuple[tuple[Any, str], ...] = ()
    answer: tuple[list, list] | None = None
    failure: BotFailure | None = None


def read_message(
    data: Any, step: int, account: str, *, callback: str = "step", secrets: Iterable[str] = ()
) -> Reading:
    """What ``data`` (one frame from ``account``'s authenticated bot: ``str``, ``bytes``, or
    anything else a transport could hand over) means while step ``step`` is out.

    Pure: touches neither the engine nor the socket, and never raises — a message that breaks
    the protocol is a refusal with a one-line reason; anything unexpected while reading it
    stops the bot (``failure``, cause ``disconnected``, ``callback`` the step's), never the
    session. ``secrets``: the session's tokens, redacted from everything it returns."""
    secrets = tuple(secrets)
    try:
        return _read(data, step, account, secrets)
    except Exception as exc:  # noqa: BLE001 - one bot's message must not stop the session
        detail = f"the gateway could not read the bot's message: {type(exc).__name__}: {exc}"
        detail = redact(detail, secrets)[:1_000]
        return Reading(failure=BotFailure("disconnected", callback, detail))


def _read(data: Any, step: int, account: str, secrets: tuple[str, ...]) -> Reading:
    try:
        if not isinstance(data, bytes | str):
            raise ProtocolError(f"message: expected a text frame, got {type(data).__name__}")
        message = parse_client(data)
        if isinstance(message, Hello):
            raise ProtocolError("hello: this connection is already authenticated")
        if message.step != step:
            raise ProtocolError(f"step: the step out is {step}, not {message.step}")
        if isinstance(message, Commands):
            if len(message.commands) > MAX_COMMANDS:
                raise ProtocolError(
                    f"flood: {len(message.commands)} commands in one step (limit {MAX_COMMANDS})"
                )
            if len(message.timers) > MAX_TIMERS:
                raise ProtocolError(
                    f"flood: {len(message.timers)} timers in one step (limit {MAX_TIMERS})"
                )
    except ProtocolError as exc:
        return Reading(refused=((loggable(data, secrets), redact(exc.reason, secrets)),))
    if isinstance(message, Fail):
        callback = redact(message.callback, secrets)[:64]
        detail = redact(message.detail, secrets)[:8_000]
        return Reading(failure=BotFailure(message.cause, callback, detail))
    text = data if isinstance(data, str) else data.decode()
    suspect = _suspect(text, secrets)
    outbox, refused = [], []
    for raw in message.commands:
        try:
            ref, command = parse_command(raw, account)
        except ProtocolError as exc:
            refused.append((loggable(raw, secrets), redact(exc.reason, secrets)))
            continue
        if suspect:  # the exchange logs a command's values: a token in one must not reach it
            command = orjson.loads(redact(orjson.dumps(command).decode(), secrets))
        outbox.append((ref, command))
    return Reading(tuple(refused), (outbox, list(message.timers)))


# ---------------------------------------------------------------------- connections
class SendTimeout(Exception):
    """A send to a client did not finish by its deadline: the client does not read."""


class _Connection:
    """An authenticated connection: its socket, account and what the bot declared.

    Every send has a deadline; the gateway's :class:`_Watchdog` shuts the socket down when a
    send overruns it (a blocked ``sendall`` wakes only then), and the send raises
    :class:`SendTimeout`."""

    def __init__(self, ws, account: str, bot: str, books: tuple[str, ...] | None) -> None:
        self.ws, self.account, self.bot, self.books = ws, account, bot, books
        self.send_deadline: float | None = None  # monotonic; set while a send is under way
        self.stalled = False
        self._done = threading.Event()
        self._close = (1000, "")

    def send(self, message: dict[str, Any] | str, timeout: float) -> None:
        """Send ``message`` (JSON text, or a dict to encode) within ``timeout`` wall-clock
        seconds; raises :class:`SendTimeout` (the connection is then dead), ``ConnectionClosed``
        or ``OSError``."""
        text = message if isinstance(message, str) else orjson.dumps(message).decode()
        if self.stalled:
            raise SendTimeout
        self.send_deadline = time.monotonic() + timeout
        try:
            self.ws.send(text)
        except (ConnectionClosed, OSError):
            if self.stalled:
                raise SendTimeout from None
            raise
        finally:
            self.send_deadline = None
        if self.stalled:  # the watchdog struck as the send finished: the socket is gone
            raise SendTimeout

    def abort(self) -> None:
        """(The watchdog's thread.) Kill a connection whose send is past its deadline."""
        self.stalled = True
        with contextlib.suppress(OSError):
            self.ws.socket.shutdown(socket.SHUT_RDWR)

    def finish(
        self, code: int = 1000, reason: str = "", final: dict | None = None, timeout: float = 2.0
    ) -> None:
        """Send ``final`` (if any, within ``timeout`` seconds) and hand the connection back to
        its thread to close, so that the simulation never waits for a closing handshake."""
        if self._done.is_set():
            return
        if final is not None:
            with contextlib.suppress(SendTimeout, ConnectionClosed, OSError):
                self.send(final, timeout)
        self._close = (code, reason)
        self._done.set()

    def park(self) -> None:
        """(The connection's own thread.) Wait until the session is done with it; close."""
        self._done.wait()
        self.ws.close(*self._close)


class _Watchdog:
    """One thread per gateway that shuts down the socket of any connection whose send has run
    past its deadline (``_Connection.send_deadline``), every :data:`_WATCH_EVERY` seconds.
    Reading a float attribute needs no lock, so a send costs the simulation nothing more."""

    def __init__(self) -> None:
        self.connections: list[_Connection] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpuex-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def watch(self, connection: _Connection) -> None:
        self.connections.append(connection)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1)

    def _run(self) -> None:
        while not self._stop.wait(_WATCH_EVERY):
            now = time.monotonic()
            for connection in list(self.connections):
                deadline = connection.send_deadline
                if deadline is not None and deadline <= now and not connection.stalled:
                    connection.abort()


class Gateway:
    """The WebSocket server of one session: issues tokens, authenticates connections and
    hands them to :class:`RemoteDriver` s.

    Args:
        bots: ``{account: bot name}`` of the remote bots.
        seed: the session seed (for each bot's generator state in ``welcome``).
        host, port: where to listen (port 0: any free port).
        step_timeout: wall-clock seconds to answer a step, and the most any send to a bot may
            take (also the time to say ``hello``).

    Attributes:
        refused: how many connections were refused before they authenticated (never logged:
            see the module docstring).
    """

    def __init__(
        self,
        bots: dict[str, str],
        seed: int,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        step_timeout: float = DEFAULT_STEP_TIMEOUT,
    ) -> None:
        self.bots, self.seed = dict(bots), seed
        self.host, self.port = host, port
        self.step_timeout = step_timeout
        self.tokens = {account: secrets.token_urlsafe(24) for account in self.bots}
        self.refused = 0
        self._cond = threading.Condition()
        self._connections: dict[str, _Connection] = {}
        self._claimed: set[str] = set()
        self._waiting = 0  # connections not yet authenticated
        self._accepting = True
        self._watchdog = _Watchdog()
        self._server = None
        self._thread: threading.Thread | None = None
        self.url = ""

    @property
    def secrets(self) -> tuple[str, ...]:
        """The session's tokens, for :func:`redact`."""
        return tuple(self.tokens.values())

    # ---------------------------------------------------------------- life cycle
    def start(self) -> str:
        """Listen; returns the URL (``ws://host:port``, with the real port)."""
        try:
            self._server = serve(
                self._handle,
                self.host,
                self.port,
                max_size=HARD_MAX_BYTES,
                compression=None,  # loopback and small messages: deflate costs more than it saves
                close_timeout=2,
            )
        except OSError as exc:
            raise GatewayError(f"cannot listen on {self.host}:{self.port}: {exc}") from None
        host, port = self._server.socket.getsockname()[:2]
        self.url = f"ws://{host}:{port}"
        self._watchdog.start()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="gpuex-gateway", daemon=True
        )
        self._thread.start()
        return self.url

    def wait(self, accounts: Iterable[str], timeout: float) -> None:
        """Block until every account in ``accounts`` has a connected bot."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while missing := [a for a in accounts if a not in self._connections]:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GatewayError(
                        f"remote bots did not connect within {timeout:g} s: "
                        + ", ".join(f"{self.bots[a]} ({a})" for a in missing)
                    )
                self._cond.wait(left)

    def driver(self, account: str, engine: Exchange) -> RemoteDriver:
        """The runner's driver for ``account``'s connected bot."""
        with self._cond:
            return RemoteDriver(self, self._connections[account], engine)

    def close(self) -> None:
        """Stop accepting, close every connection and the server; report on stderr how many
        connections were refused before they authenticated."""
        with self._cond:
            self._accepting = False
            connections = list(self._connections.values())
        for connection in connections:
            connection.finish(
                1001, "session over", {"type": "stop", "reason": "session over"}, self.step_timeout
            )
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._watchdog.stop()
        if self.refused:
            log.warning(
                "gateway: refused %s connection(s) that did not authenticate (not logged)",
                f"{self.refused:,}",
            )

    # ---------------------------------------------------------------- strangers
    def _refuse(self, ws, reason: str, code: int = 1008) -> None:
        """Answer a connection that has not authenticated with an ``error`` and close it;
        count it, report the first few on stderr. Nothing of it reaches the log."""
        with self._cond:
            self.refused += 1
            count = self.refused
        if count <= REPORTED_REFUSALS:
            log.warning("gateway: refused a connection before authentication: %s", reason)
        with contextlib.suppress(ConnectionClosed, OSError):
            ws.send(orjson.dumps({"type": "error", "reason": reason, "step": None}).decode())
        with contextlib.suppress(ConnectionClosed, OSError):
            ws.close(code, reason[:120])

    # ---------------------------------------------------------------- connections
    def _account_for(self, token: str) -> str | None:
        found = None
        for account, issued in self.tokens.items():
            if hmac.compare_digest(token.encode(), issued.encode()):
                found = account
        return found

    def _handle(self, ws) -> None:
        """A connection's thread: hello -> welcome, then park until the session closes it.
        Nothing a client sends can raise out of here (the server would print a traceback)."""
        with self._cond:
            crowded = self._waiting >= MAX_UNAUTHENTICATED
            if not crowded:
                self._waiting += 1
        if crowded:
            self._refuse(ws, "too many connections waiting to authenticate", 1013)
            return
        try:
            connection = self._authenticate(ws)
        except Exception as exc:  # noqa: BLE001 - a stranger must not see a traceback either
            self._refuse(ws, f"internal error: {type(exc).__name__}", 1011)
            return
        finally:
            with self._cond:
                self._waiting -= 1
        if connection is not None:
            connection.park()

    def _authenticate(self, ws) -> _Connection | None:
        """Read the ``hello``, answer ``welcome`` and register the connection; or refuse it
        (``None``)."""
        try:
            data = ws.recv(timeout=self.step_timeout)
        except TimeoutError:
            self._refuse(ws, f"no hello within {self.step_timeout:g} s")
            return None
        except ConnectionClosed:
            return None
        try:
            if not isinstance(data, bytes | str):
                raise ProtocolError("message: expected a text frame")
            hello = parse_client(data)
            if not isinstance(hello, Hello):
                raise ProtocolError(f"expected hello, got {hello.type}")
            if hello.protocol != PROTOCOL:
                raise ProtocolError(
                    f"protocol: this server speaks version {PROTOCOL}, not {hello.protocol}"
                )
            account = self._account_for(hello.token)
            if account is None:
                raise ProtocolError("unknown token")
        except ProtocolError as exc:
            self._refuse(ws, redact(exc.reason, self.secrets))
            return None
        with self._cond:
            if not self._accepting:
                problem = "the session is over"
            elif account in self._claimed:
                problem = f"account {account!r} already has a connected bot"
            else:
                problem = None
                self._claimed.add(account)
        if problem is not None:
            self._refuse(ws, problem)
            return None
        name = self.bots[account]
        books = None if hello.books is None else tuple(hello.books)
        connection = _Connection(ws, account, name, books)
        self._watchdog.watch(connection)
        welcome = {
            "type": "welcome",
            "protocol": PROTOCOL,
            "bot": name,
            "account": account,
            "rng": rng_state(bot_rng(self.seed, name)),
        }
        try:
            connection.send(welcome, self.step_timeout)
        except (SendTimeout, ConnectionClosed, OSError):
            return None  # the account stays claimed: a bot that went away has failed
        with self._cond:
            self._connections[account] = connection
            self._cond.notify_all()
        return connection


def _close_code(exc: ConnectionClosed) -> int:
    """The close code of whichever side closed first (1006: neither said why), so that the
    logged detail does not depend on whether the other side's echo arrived in time."""
    first = exc.rcvd if exc.rcvd_then_sent or exc.sent is None else exc.sent
    return 1006 if first is None else first.code


class RemoteDriver:
    """The bot runner's driver for a remote bot: one ``step`` out, one answer back per
    delivery (see the module docstring)."""

    def __init__(self, gateway: Gateway, connection: _Connection, engine: Exchange) -> None:
        self.gateway, self.connection, self.engine = gateway, connection, engine
        self.account = connection.account
        self.timeout = gateway.step_timeout
        self.step = 0

    @property
    def books(self) -> tuple[str, ...] | None:
        """The instruments whose book views the bot asked for in its ``hello``."""
        return self.connection.books

    def deliver(self, now: int, messages, account: Callable):
        connection = self.connection
        self.step = step = self.step + 1
        callback = messages[0][0] if len(messages) == 1 else "step"
        try:
            text = orjson.dumps(
                {
                    "type": "step",
                    "step": step,
                    "t": now,
                    "messages": [encode_message(name, payload) for name, payload in messages],
                    "account": encode_account(account()),
                }
            ).decode()
        except (TypeError, ValueError) as exc:  # what cannot be sent fails the bot, not the session
            reason = f"step {step} cannot be encoded: {type(exc).__name__}: {exc}"
            connection.finish(1011, "internal error", {"type": "stop", "reason": reason})
            raise BotFailure("disconnected", callback, reason) from None
        self._send(text, step, callback)
        deadline = time.monotonic() + self.timeout
        for _ in range(MAX_MESSAGES_PER_STEP):
            try:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                data = connection.ws.recv(timeout=left)
            except TimeoutError:
                reason = f"no answer to step {step} within {self.timeout:g} s"
                connection.finish(1008, "step timeout", {"type": "error", "reason": reason})
                raise BotFailure("timeout", callback, reason) from None
            except ConnectionClosed as exc:
                code = _close_code(exc)
                raise BotFailure(
                    "disconnected", callback, f"connection closed during step {step} (code {code})"
                ) from None
            reading = read_message(
                data, step, self.account, callback=callback, secrets=self.gateway.secrets
            )
            for raw, reason in reading.refused:
                self.engine.reject(raw, reason, account=self.account)
                self._send({"type": "error", "reason": reason, "step": step}, step, callback)
            if reading.failure is not None:
                connection.finish(1000, "bot failed")
                raise reading.failure
            if reading.answer is not None:
                return reading.answer
        reason = f"flood: {MAX_MESSAGES_PER_STEP} messages without a valid answer to step {step}"
        self.engine.reject({"step": step}, reason, account=self.account)
        connection.finish(1008, "flood", {"type": "error", "reason": reason, "step": step})
        raise BotFailure("disconnected", callback, reason)

    def _send(self, message: dict | str, step: int, callback: str) -> None:
        """Send within the step timeout; a client that does not read by then fails as
        ``timeout``."""
        try:
            self.connection.send(message, self.timeout)
        except SendTimeout:
            self.connection.finish(1008, "not reading")
            raise BotFailure(
                "timeout",
                callback,
                f"the client did not read: step {step} could not be sent within {self.timeout:g} s",
            ) from None
        except (ConnectionClosed, OSError):
            raise BotFailure(
                "disconnected", callback, f"connection closed before step {step}"
            ) from None

    def close(self) -> None:
        self.connection.finish(1000, "", {"type": "stop", "reason": ""}, self.timeout)


# ---------------------------------------------------------------------- sessions
def record_session(
    model: Any,
    seed: int,
    db: str | Path,
    drive: Callable[[Exchange, Simulator], Callable[[Exchange], None] | None],
    *,
    scenario: str | None = None,
    durability: str = "normal",
    batch_size: int = DEFAULT_BATCH,
    snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
    resume: bool = False,
    on_batch: Callable[[int], None] | None = None,
    on_time: Callable[[int, int], None] | None = None,
    on_seal: Callable[[], None] | None = None,
    engine: str = DEFAULT_ENGINE,
) -> RunSummary:
    """Run ``model`` into a new SQLite log at ``db`` through ``exchange.sessions.session.run`` (same
    store, recorder and stored configuration, so ``verify`` and ``replay`` work), with
    ``drive(engine, sim)`` instead of ``model.drive``. ``drive`` may return a function that
    runs at the end time, just before ``SessionEnded``. With ``resume``, a crashed log at
    ``db`` is re-run from its start and continued, as ``gpuex run --resume`` does: ``drive``
    must attach bots that act as they did. ``on_batch``, ``on_time``, ``on_seal``: progress,
    as in ``session.run``; ``engine``: the engine's name, as in ``session.run``."""
    return session_run(
        scenario or model.name,
        db,
        seed=seed,
        model=model,
        drive=drive,
        durability=durability,
        batch_size=batch_size,
        snapshot_every=snapshot_every,
        resume=resume,
        on_batch=on_batch,
        on_time=on_time,
        on_seal=on_seal,
        engine=engine,
    )


def write_tokens(path: str | Path, url: str, tokens: dict[str, str], bots: dict[str, str]) -> None:
    """Write the session's tokens as JSON (owner-only permissions, atomically):
    ``{"url": ..., "accounts": {account: {"bot": name, "token": token}}}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "url": url,
        "accounts": {a: {"bot": bots[a], "token": t} for a, t in tokens.items()},
    }
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(body, fh, indent=2)
    os.replace(tmp, path)


def serve_session(
    model: Any,
    seed: int | None,
    db: str | Path,
    remote_accounts: Iterable[str] = (),
    *,
    bots: Sequence[Any] | None = None,
    scenario: str | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    tokens_file: str | Path | None = None,
    step_timeout: float = DEFAULT_STEP_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    on_ready: Callable[[str, dict[str, str]], None] | None = None,
    durability: str = "normal",
    batch_size: int = DEFAULT_BATCH,
    snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
    resume: bool = False,
    on_batch: Callable[[int], None] | None = None,
    on_time: Callable[[int, int], None] | None = None,
    on_seal: Callable[[], None] | None = None,
    engine: str = DEFAULT_ENGINE,
) -> RunSummary:
    """Run a session whose bots run in-process or, for ``remote_accounts``, over the gateway.

    Args:
        model: the scenario: ``name``, ``model_dump``, ``setup(engine)``,
            ``schedule_market(engine, sim, seed)``, ``end_ns``, optionally ``depth`` and
            ``bots``.
        seed: the session seed (None: ``model.seed``, or 7; on ``resume``, the stored one).
        db: the new SQLite log (with ``resume``, the crashed one).
        remote_accounts: accounts whose bots are served remotely (also those whose entry
            has ``remote`` set).
        bots: the bots (default ``model.bots``): entries with ``name``, ``account``,
            ``latency``, optionally ``budget_lines`` and ``remote``, and either ``bot`` (an
            instance, like :class:`BotEntry`) or ``make()`` (like ``clients.scenario``).
        scenario: the scenario name stored with the session (default ``model.name``).
        host, port: where the gateway listens (port 0: any free port).
        tokens_file: where to write the issued tokens (JSON, see :func:`write_tokens`).
        step_timeout: wall-clock seconds a remote bot has to answer each step, and the
            most any send to it may take (a client that does not read fails as ``timeout``).
        connect_timeout: wall-clock seconds every remote bot has to connect before the
            session starts (:class:`GatewayError` otherwise; nothing is recorded).
        on_ready: called with the URL and ``{account: token}`` once the gateway listens.
        resume: continue the crashed session in ``db``. As ``gpuex run --resume``, the
            session is re-run from its start and each regenerated event must equal the
            committed one: the remote bots connect again (with new tokens) and are sent
            every step from the first, so a bot that acts as it did -- a deterministic one
            -- brings the log to the bytes of an uninterrupted run, and one that does not
            fails the resume (:class:`~exchange.sessions.session.SessionError`, naming the first seq
            that differs) with the committed events unchanged. A finished session is not re-run: its
            missing indexes are built, or the resume is refused, without a gateway.
        on_batch, on_time, on_seal: progress, as in :func:`exchange.sessions.session.run` (the
            number of events after each batch; the simulated time reached and the end; the
            seal).
        engine: the engine that runs the session, by name (``compiled`` or ``reference``,
            see :func:`exchange.sessions.session.run`; not recorded in the log).

    Returns the :class:`~exchange.sessions.session.RunSummary`.
    """
    entries = list(model.bots if bots is None else bots)
    wanted = set(remote_accounts)
    known = {entry.account for entry in entries}
    if wanted - known:
        raise ValueError(f"no bot trades {', '.join(sorted(wanted - known))}")
    remote = {e.account: e.name for e in entries if e.account in wanted or getattr(e, "remote", 0)}
    common = {
        "scenario": scenario,
        "durability": durability,
        "batch_size": batch_size,
        "snapshot_every": snapshot_every,
        "resume": resume,
        "on_batch": on_batch,
        "on_time": on_time,
        "on_seal": on_seal,
        "engine": engine,
    }
    stored = committed_session(db) if resume else None
    if stored is None:
        if Path(db).exists():
            raise SessionError(f"{db} already exists; choose a new path, or --resume it")
        if seed is None:
            seed = getattr(model, "seed", 7)
    else:
        if seed is not None and seed != stored["seed"]:
            raise SessionError(f"the stored session has seed {stored['seed']}, not {seed}")
        seed = stored["seed"]
        if stored["status"] == "finished":  # nothing to re-run: no bots, no gateway
            return record_session(model, seed, db, _no_drive, **common)
    gateway = None
    try:
        if remote:
            gateway = Gateway(remote, seed, host, port, step_timeout)
            url = gateway.start()
            if tokens_file is not None:
                write_tokens(tokens_file, url, gateway.tokens, remote)
            if on_ready is not None:
                on_ready(url, dict(gateway.tokens))
            gateway.wait(remote, connect_timeout)

        def drive(engine: Exchange, sim: Simulator):
            runner = make_runner(engine, sim, seed, depth=getattr(model, "depth", DEFAULT_DEPTH))
            for entry in entries:
                if entry.account in remote:
                    driver = gateway.driver(entry.account, engine)
                    runner.attach(entry.name, entry.account, driver, entry.latency, driver.books)
                else:
                    bot = getattr(entry, "bot", None)
                    if bot is None:
                        bot = entry.make()
                    runner.add(
                        entry.name,
                        entry.account,
                        bot,
                        latency=entry.latency,
                        budget_lines=getattr(entry, "budget_lines", DEFAULT_LINES) or None,
                    )
            runner.start(model.end_ns)

        return record_session(model, seed, db, drive, **common)
    finally:
        if gateway is not None:
            gateway.close()


def _no_drive(engine: Exchange, sim: Simulator) -> None:
    """The drive of a finished session's resume, which re-runs nothing."""


__all__ = [
    "BotEntry",
    "Gateway",
    "GatewayError",
    "RemoteDriver",
    "record_session",
    "serve_session",
    "write_tokens",
]
