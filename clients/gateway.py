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
``step_timeout`` wall-clock seconds is disconnected and stopped (``BotFailed``, cause
``timeout``); a closed connection stops it as ``disconnected``. Its resting orders are cancelled
and the session goes on.

Rejections. Whatever a bot sends that the gateway refuses — malformed JSON, an oversized
message, a wrong token, a command for another account, a flood — gets an ``error`` reply and is
logged as ``CommandRejected`` with ``source: "gateway"`` (``Exchange.reject``; ``verify``
re-records it the same way). Rejections of messages answering a step are logged at the step's
simulated time, in the order the bot sent them: deterministic for a deterministic bot.
Rejections of a connection that has no account yet (a bad ``hello``) are logged with no account
at the *next* step of any remote bot (or at the session's end): where they land in the log
depends on when they arrived on the wall clock, unlike anything in lockstep.

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
import os
import secrets
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
    Fail,
    Hello,
    ProtocolError,
    encode_account,
    encode_message,
    parse_client,
    parse_command,
    rng_state,
)
from clients.runner import DEFAULT_DEPTH, BotFailure, BotRunner, bot_rng
from exchange.clock import Simulator
from exchange.engine import Exchange
from exchange.session import (
    DEFAULT_BATCH,
    DEFAULT_SNAPSHOT_EVERY,
    RunSummary,
    SessionError,
    committed_session,
)
from exchange.session import run as session_run

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: Wall-clock seconds a remote bot has to answer a step.
DEFAULT_STEP_TIMEOUT = 10.0
#: Wall-clock seconds every declared remote bot has to connect before the session starts.
DEFAULT_CONNECT_TIMEOUT = 60.0
#: Most not-yet-logged rejections of unauthenticated connections kept for the log; more are
#: answered with an ``error`` but not logged (so a connection storm cannot swamp the log).
MAX_PENDING_REJECTIONS = 1_000
#: Bytes of an unauthenticated message kept for the log (the engine cuts further).
_KEEP = 4_096


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


def _loggable(data: bytes | str) -> Any:
    """What to log of a message that could not be authenticated: its JSON (token redacted)
    when it parses, else its text; at most :data:`_KEEP` bytes of it."""
    if isinstance(data, bytes):
        data = data[:_KEEP].decode("utf-8", "replace")
    if len(data) > _KEEP:
        return data[:_KEEP]
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    if isinstance(parsed, dict) and "token" in parsed:
        parsed["token"] = "<redacted>"
    return parsed


class _Connection:
    """An authenticated connection: its socket, account and what the bot declared."""

    def __init__(self, ws, account: str, bot: str, books: tuple[str, ...] | None) -> None:
        self.ws, self.account, self.bot, self.books = ws, account, bot, books
        self._done = threading.Event()
        self._close = (1000, "")

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(orjson.dumps(message).decode())

    def finish(self, code: int = 1000, reason: str = "", final: dict | None = None) -> None:
        """Send ``final`` (if any) and hand the connection back to its thread to close, so
        that the simulation never waits for a closing handshake."""
        if self._done.is_set():
            return
        if final is not None:
            with contextlib.suppress(ConnectionClosed, OSError):
                self.send(final)
        self._close = (code, reason)
        self._done.set()

    def park(self) -> None:
        """(The connection's own thread.) Wait until the session is done with it; close."""
        self._done.wait()
        self.ws.close(*self._close)


class Gateway:
    """The WebSocket server of one session: issues tokens, authenticates connections and
    hands them to :class:`RemoteDriver` s.

    Args:
        bots: ``{account: bot name}`` of the remote bots.
        seed: the session seed (for each bot's generator state in ``welcome``).
        host, port: where to listen (port 0: any free port).
        step_timeout: wall-clock seconds to answer a step (also to say ``hello``).
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
        self._cond = threading.Condition()
        self._connections: dict[str, _Connection] = {}
        self._claimed: set[str] = set()
        self._pending: list[tuple[Any, str]] = []  # unauthenticated rejections to log
        self._accepting = True
        self._server = None
        self._thread: threading.Thread | None = None
        self.url = ""

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
        """Stop accepting, close every connection and the server."""
        with self._cond:
            self._accepting = False
            connections = list(self._connections.values())
        for connection in connections:
            connection.finish(1001, "session over", {"type": "stop", "reason": "session over"})
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ---------------------------------------------------------------- rejections
    def flush_rejections(self, engine: Exchange) -> None:
        """Log the rejections of unauthenticated connections that arrived since the last
        call (simulation thread only)."""
        if not self._pending:
            return
        with self._cond:
            pending, self._pending = self._pending, []
        for raw, reason in pending:
            engine.reject(raw, reason)

    def _refuse(self, ws, data: bytes | str | None, reason: str, log: bool = True) -> None:
        """Answer an unauthenticated connection with an error, queue it for the log, close."""
        with self._cond:
            if log and self._accepting and len(self._pending) < MAX_PENDING_REJECTIONS:
                self._pending.append((_loggable(data or ""), reason))
        with contextlib.suppress(ConnectionClosed, OSError):
            ws.send(orjson.dumps({"type": "error", "reason": reason, "step": None}).decode())
        ws.close(1008, reason[:120])

    # ---------------------------------------------------------------- connections
    def _account_for(self, token: str) -> str | None:
        found = None
        for account, issued in self.tokens.items():
            if hmac.compare_digest(token.encode(), issued.encode()):
                found = account
        return found

    def _handle(self, ws) -> None:
        """A connection's thread: hello -> welcome, then park until the session closes it."""
        try:
            data = ws.recv(timeout=self.step_timeout)
        except TimeoutError:
            self._refuse(ws, None, f"no hello within {self.step_timeout:g} s", log=False)
            return
        except ConnectionClosed:
            return
        try:
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
            self._refuse(ws, data, exc.reason)
            return
        with self._cond:
            if not self._accepting:
                problem = "the session is over"
            elif account in self._claimed:
                problem = f"account {account!r} already has a connected bot"
            else:
                problem = None
                self._claimed.add(account)
        if problem is not None:
            self._refuse(ws, data, problem)
            return
        name = self.bots[account]
        books = None if hello.books is None else tuple(hello.books)
        connection = _Connection(ws, account, name, books)
        try:
            connection.send(
                {
                    "type": "welcome",
                    "protocol": PROTOCOL,
                    "bot": name,
                    "account": account,
                    "rng": rng_state(bot_rng(self.seed, name)),
                }
            )
        except ConnectionClosed:
            return  # the account stays claimed: a bot that went away has failed
        with self._cond:
            self._connections[account] = connection
            self._cond.notify_all()
        connection.park()


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
        self.gateway.flush_rejections(self.engine)
        connection = self.connection
        self.step = step = self.step + 1
        callback = messages[0][0] if len(messages) == 1 else "step"
        try:
            connection.send(
                {
                    "type": "step",
                    "step": step,
                    "t": now,
                    "messages": [encode_message(name, payload) for name, payload in messages],
                    "account": encode_account(account()),
                }
            )
        except (ConnectionClosed, OSError):
            raise BotFailure(
                "disconnected", callback, f"connection closed before step {step}"
            ) from None
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
                code = exc.rcvd.code if exc.rcvd is not None else 1006
                raise BotFailure(
                    "disconnected", callback, f"connection closed during step {step} (code {code})"
                ) from None
            try:
                message = parse_client(data)
                if isinstance(message, Hello):
                    raise ProtocolError("hello: this connection is already authenticated")
                if message.step != step:
                    raise ProtocolError(f"step: the step out is {step}, not {message.step}")
                if isinstance(message, Fail):
                    connection.finish(1000, "bot failed")
                    raise BotFailure(message.cause, message.callback, message.detail)
                if len(message.commands) > MAX_COMMANDS:
                    raise ProtocolError(
                        f"flood: {len(message.commands)} commands in one step "
                        f"(limit {MAX_COMMANDS})"
                    )
                if len(message.timers) > MAX_TIMERS:
                    raise ProtocolError(
                        f"flood: {len(message.timers)} timers in one step (limit {MAX_TIMERS})"
                    )
            except ProtocolError as exc:
                self._refuse(data, exc.reason, step)
                continue
            outbox = []
            for raw in message.commands:
                try:
                    outbox.append(parse_command(raw, self.account))
                except ProtocolError as exc:
                    self._refuse(raw, exc.reason, step)
            return outbox, message.timers
        reason = f"flood: {MAX_MESSAGES_PER_STEP} messages without a valid answer to step {step}"
        self.engine.reject({"step": step}, reason, account=self.account)
        connection.finish(1008, "flood", {"type": "error", "reason": reason, "step": step})
        raise BotFailure("disconnected", callback, reason)

    def _refuse(self, raw: Any, reason: str, step: int) -> None:
        if isinstance(raw, bytes | str):
            raw = _loggable(raw)
        self.engine.reject(raw, reason, account=self.account)
        with contextlib.suppress(ConnectionClosed, OSError):
            self.connection.send({"type": "error", "reason": reason, "step": step})

    def close(self) -> None:
        self.connection.finish(1000, "", {"type": "stop", "reason": ""})


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
) -> RunSummary:
    """Run ``model`` into a new SQLite log at ``db`` through ``exchange.session.run`` (same
    store, recorder and stored configuration, so ``verify`` and ``replay`` work), with
    ``drive(engine, sim)`` instead of ``model.drive``. ``drive`` may return a function that
    runs at the end time, just before ``SessionEnded``. With ``resume``, a crashed log at
    ``db`` is re-run from its start and continued, as ``gpuex run --resume`` does: ``drive``
    must attach bots that act as they did. ``on_batch``, ``on_time``, ``on_seal``: progress,
    as in ``session.run``."""
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
        step_timeout: wall-clock seconds a remote bot has to answer each step.
        connect_timeout: wall-clock seconds every remote bot has to connect before the
            session starts (:class:`GatewayError` otherwise; nothing is recorded).
        on_ready: called with the URL and ``{account: token}`` once the gateway listens.
        resume: continue the crashed session in ``db``. As ``gpuex run --resume``, the
            session is re-run from its start and each regenerated event must equal the
            committed one: the remote bots connect again (with new tokens) and are sent
            every step from the first, so a bot that acts as it did -- a deterministic one
            -- brings the log to the bytes of an uninterrupted run, and one that does not
            fails the resume (:class:`~exchange.session.SessionError`, naming the first seq
            that differs) with the committed events unchanged. A finished session is not re-run: its
            missing indexes are built, or the resume is refused, without a gateway.
        on_batch, on_time, on_seal: progress, as in :func:`exchange.session.run` (the
            number of events after each batch; the simulated time reached and the end; the
            seal).

    Returns the :class:`~exchange.session.RunSummary`.
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
            runner = BotRunner(engine, sim, seed, depth=getattr(model, "depth", DEFAULT_DEPTH))
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
            return None if gateway is None else gateway.flush_rejections

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
