"""The gateway against hostile and careless clients (issue #17): a client that never reads,
tokens in malformed messages, frames the session could not carry, a bot whose commands would
overflow a balance, strangers crowding the door. Every session here must finish, verify, and
keep every session token out of its log. Loopback only; every wait is bounded."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from clients import gateway as gw
from clients import protocol as p
from clients.demo import DemoTaker
from clients.gateway import Gateway, loggable, read_message
from clients.remote import run_remote
from exchange.core import events as ev
from exchange.kernel.engine import DAY_NS, Exchange
from exchange.sessions.session import verify
from tests.clients.test_gateway import (
    _hello,
    drain,
    entries,
    events,
    payloads,
    serve,
)

PERP = "H100-PERP"
#: Wall-clock seconds within which each served session here must end (a hung one fails).
HANG = 90


def serve_bounded(*args, **kwargs):
    """:func:`serve` in a thread, failing the test if the session has not ended in
    :data:`HANG` seconds (the daemon thread is then left behind)."""
    out: dict = {}

    def go():
        try:
            out["value"] = serve(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            out["error"] = exc

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), f"the session did not end within {HANG} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def answer(step: int, commands=(), timers=()) -> str:
    """A ``commands`` message (``json``, which writes integers of any size)."""
    message = {"type": "commands", "step": step, "commands": list(commands), "timers": list(timers)}
    return json.dumps(message, separators=(",", ":"))


def scripted(script):
    """A raw client of the maker account: ``script(step, t)`` gives the frames to send for
    each step (the last of them its answer; ``t`` the step's simulated time); every reply is
    read and kept."""

    def client(url, token):
        seen = []
        with connect(url, max_size=None, open_timeout=5) as ws:
            assert _hello(ws, token)["type"] == "welcome"
            for raw in ws:
                message = orjson.loads(raw)
                seen.append(message)
                if message["type"] == "stop":
                    break
                if message["type"] == "step":
                    for frame in script(message["step"], message["t"]):
                        ws.send(frame)
        return seen

    return client


# ---------------------------------------------------------------------- 3(a) not reading
def test_a_client_that_never_reads_is_dropped_as_timeout_and_the_session_goes_on(tmp_path):
    """The client answers every step without reading any: it sends its answers blindly (step
    1, 2, ...) from a socket with a small receive buffer, and the steps grow (its early
    answers rest thousands of orders, which every step's account snapshot lists) until the
    server's sends can no longer drain. The server gives up on it after the step timeout."""
    orders = [
        {"type": "submit", "instrument": PERP, "side": "buy", "price": 1 + i % 50, "qty": 1,
         "order_type": "limit"}
        for i in range(200)
    ]  # fmt: skip
    outcome: dict = {}

    def never_reads(url, token):
        host, port = url.removeprefix("ws://").rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4_096)
        # max_queue=1: the library's own reader thread stops after one unread message
        with connect(url, sock=sock, max_size=None, max_queue=1) as ws:
            assert _hello(ws, token)["type"] == "welcome"
            try:
                for step in range(1, 1_000_000):
                    ws.send(answer(step, orders if step <= 40 else ()))
            except ConnectionClosed:
                outcome["closed"] = True

    summary, _ = serve_bounded(
        tmp_path / "s.db", ["maker"], entries(), {"maker": never_reads}, step_timeout=1.0
    )
    failed = events(tmp_path / "s.db", ev.BOT_FAILED)
    assert [(e.account, e.data["cause"]) for e in failed] == [("maker", "timeout")]
    assert "the client did not read" in failed[0].data["detail"]
    assert outcome == {"closed": True}  # the server closed its end
    # the session went on to its end with the taker, and verifies
    assert [e.t for e in events(tmp_path / "s.db", ev.SESSION_ENDED)] == [6 * DAY_NS]
    assert verify(tmp_path / "s.db").ok


# ---------------------------------------------------------------------- 5 tokens
def escaped(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in text)


def test_no_session_token_reaches_the_log(tmp_path, caplog):
    """The issue's two cases -- a hello with the real token and no closing brace, and one
    over 64 KiB -- from strangers and from the authenticated bot itself, and every other way
    a bot's message can carry a token into a recorded text: a field named after the other
    bot's token, an escaped token in text that is not JSON, a token as an instrument (the
    exchange's rejection names it), a token in a ``fail`` detail."""
    tokens: dict[str, str] = {}
    taker_known = threading.Event()

    def cases(token):
        hello = orjson.dumps({"type": "hello", "protocol": 1, "token": token}).decode()
        return [hello[:-1], hello[:-1] + ', "books": ["' + "x" * p.MAX_MESSAGE_BYTES + '"]}']

    def maker(url, token):
        tokens["maker"] = token
        for first in cases(token):  # strangers, with the real token
            with connect(url) as ws:
                ws.send(first)
                assert orjson.loads(ws.recv(timeout=5))["type"] == "error"
        assert taker_known.wait(10)
        other = tokens["taker"]

        def script(step, t):
            if t < DAY_NS // 2:
                if step > 1:
                    return [answer(step)]
                return [
                    *cases(token),  # the same, now from the authenticated bot
                    orjson.dumps({"type": "commands", "step": 1, other: 1}).decode(),
                    '["' + escaped(other) + '", ',
                    answer(1, [{"type": "submit", "instrument": token, "side": "buy",
                                "price": 1, "qty": 1, "order_type": "limit"}]),
                ]  # fmt: skip
            return [
                orjson.dumps(
                    {"type": "fail", "step": step, "cause": "raised", "callback": "on_book",
                     "detail": f"RuntimeError: lost {token} and {other}"}
                ).decode()
            ]  # fmt: skip

        return scripted(script)(url, token)

    def taker(url, token):
        tokens["taker"] = token
        taker_known.set()
        return run_remote(DemoTaker(), url, token)

    db = tmp_path / "s.db"
    serve_bounded(db, ["maker", "taker"], entries(), {"maker": maker, "taker": taker}, days=2)
    assert len(tokens) == 2
    logged = payloads(db)
    rejected = [e for e in events(db, ev.COMMAND_REJECTED) if e.account == "maker"]
    assert len(rejected) == 5  # four refused at the gateway, the submit by the exchange
    assert "'[redacted]'" in rejected[-1].data["reason"]  # the exchange named the instrument
    assert all(e.account is not None for e in events(db, ev.COMMAND_REJECTED))
    failed = events(db, ev.BOT_FAILED)
    assert [e.data["detail"] for e in failed] == ["RuntimeError: lost [redacted] and [redacted]"]
    # the five rejections, the runner's bot_failed command and the BotFailed event
    assert sum(b"[redacted]" in payload for payload in logged) == 7
    stored = db.read_bytes()
    for token in tokens.values():
        assert all(token.encode() not in payload for payload in logged)
        assert token.encode() not in stored
        assert token not in caplog.text  # nor on stderr
    assert verify(db).ok


def test_redaction_finds_tokens_however_they_are_written():
    secret = "XZK1ujG1tyI1bn7AwaARddBPML_X-ZfT"
    for text in [
        secret,
        f'{{"type": "hello", "token": "{secret}"',
        f'{{"type": "hello", "TOKEN" :"{secret[:9]}',  # a token cut short, in a token field
        f'{{"token": "a\\"b{secret}',
        f'{{"x": "{escaped(secret)}"}}',
        f'[{{"{secret}": 1}}]',
    ]:
        kept = loggable(text, [secret])
        assert secret[:9] not in orjson.dumps(kept).decode(), kept
        assert "[redacted]" in orjson.dumps(kept).decode()
    assert loggable('{"token": 5, "a": "\\u0022"}', [secret]) == {"token": 5, "a": '"'}


# ---------------------------------------------------------------------- hostile frames
def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def with_tag(tag: str) -> str:
    """An answer to step 1 with one timer whose tag is the JSON text ``tag``."""
    return '{"type":"commands","step":1,"timers":[[5,' + tag + "]]}"


HOSTILE = [
    ("a timer's tag beyond 64 bits", with_tag(str(1 << 64)), "beyond 64 bits"),
    ("a timer's time beyond 64 bits", answer(1, timers=[[(1 << 63), 0]]), "beyond 64 bits"),
    (
        "an amount beyond 64 bits",
        answer(1, [{"type": "deposit", "amount": -(1 << 63) - 1}]),
        "beyond 64 bits",
    ),
    ("a NaN tag", with_tag("NaN"), "NaN"),
    ("an infinite tag", with_tag("1e400"), "NaN"),
    ("nesting 40 deep", with_tag(deep(36)), "nested deeper than 32"),
    ("nesting 5,000 deep", with_tag(deep(5_000)), "recursion limit"),
    ("a binary frame not UTF-8", b'{"type":"commands","step":1,"x":"\xff"}', "not UTF-8"),
    ("a lone surrogate", with_tag('"\\udc00"'), "surrogate"),
    ("a lone surrogate, unescaped", with_tag('"\udc00"'), "not UTF-8"),
    ("not an object", "[1, 2]", "Input should be"),
    ("a frame of another type", 3.5, "expected a text frame"),
]


def sendable(frame) -> bool:
    """Whether a WebSocket can carry ``frame`` (text that is UTF-8, or bytes)."""
    if isinstance(frame, str):
        return frame.encode("utf-8", "replace").decode() == frame
    return isinstance(frame, bytes)


@pytest.mark.parametrize("frame, reason", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_a_frame_the_session_cannot_carry_is_refused_with_a_reason_and_is_loggable(frame, reason):
    reading = read_message(frame, 1, "maker", secrets=["secret"])
    assert reading.answer is None and reading.failure is None
    [(raw, why)] = reading.refused
    assert reason in why and "\n" not in why
    seen = []
    engine = Exchange(seen.append)
    engine.open_account("maker")
    engine.reject(raw, why, account="maker")  # the log can record it
    assert [e.kind for e in seen[1:]] == [ev.COMMAND_REJECTED]
    ev.encode(seen[-1])


def test_hostile_frames_get_an_error_and_the_served_session_finishes(tmp_path):
    """In a real session: each frame of :data:`HOSTILE` a socket can carry (six per step, then
    the answer) gets an ``error``; none of them stops the bot or the session."""
    frames = [
        frame.replace('"step":1', '"step":{step}')
        if isinstance(frame, str) else frame
        for _, frame, _ in HOSTILE if sendable(frame)
    ]  # fmt: skip
    batches = [frames[i : i + 6] for i in range(0, len(frames), 6)]

    def script(step, t):
        if step > len(batches):
            return [answer(step)]
        return [
            f.replace("{step}", str(step)) if isinstance(f, str) else f for f in batches[step - 1]
        ] + [answer(step, timers=[[0, "fired"]])]

    _, results = serve_bounded(tmp_path / "s.db", ["maker"], entries(), {"maker": scripted(script)})
    seen = results["maker"]
    errors = [m for m in seen if m["type"] == "error"]
    assert len(errors) == len(frames)
    assert ["on_timer", "fired"] in [m for s in seen if s["type"] == "step" for m in s["messages"]]
    assert not events(tmp_path / "s.db", ev.BOT_FAILED)
    assert len(events(tmp_path / "s.db", ev.COMMAND_REJECTED)) == len(frames)
    assert seen[-1]["type"] == "stop"
    assert verify(tmp_path / "s.db").ok


@pytest.mark.parametrize(
    "frame, text, code",
    [
        ("x" * (p.HARD_MAX_BYTES + 1), None, 1009),  # beyond the transport's cap
        (b'{"type": "commands", "step": 1, "x": "\xff"}', True, 1007),  # a text frame, not UTF-8
    ],
    ids=["over 1 MiB", "text frame not UTF-8"],
)
def test_a_frame_the_transport_refuses_disconnects_the_bot_and_the_session_goes_on(
    tmp_path, frame, text, code
):
    def client(url, token):
        with connect(url, max_size=None, open_timeout=5) as ws:
            assert _hello(ws, token)["type"] == "welcome"
            ws.recv(timeout=10)  # step 1
            ws.send(frame, text=text)
            return drain(ws)

    serve_bounded(tmp_path / "s.db", ["maker"], entries(), {"maker": client}, days=2)
    failed = events(tmp_path / "s.db", ev.BOT_FAILED)
    assert [(e.account, e.data["cause"]) for e in failed] == [("maker", "disconnected")]
    assert failed[0].data["detail"] == f"connection closed during step 1 (code {code})"
    assert [e.t for e in events(tmp_path / "s.db", ev.SESSION_ENDED)] == [2 * DAY_NS]
    assert verify(tmp_path / "s.db").ok


def test_an_unexpected_error_reading_a_message_stops_that_bot_not_the_session(
    tmp_path, monkeypatch
):
    def broken(raw, account):
        raise RuntimeError("a bug in the gateway")

    monkeypatch.setattr(gw, "parse_command", broken)
    script = scripted(lambda step, t: [answer(step, [{"type": "deposit", "amount": 5}])])
    serve_bounded(tmp_path / "s.db", ["maker"], entries(), {"maker": script}, days=2)
    failed = events(tmp_path / "s.db", ev.BOT_FAILED)
    assert [(e.account, e.data["cause"], e.data["callback"]) for e in failed] == [
        ("maker", "disconnected", "on_start")
    ]
    assert "could not read the bot's message: RuntimeError: a bug" in failed[0].data["detail"]
    assert [e.t for e in events(tmp_path / "s.db", ev.SESSION_ENDED)] == [2 * DAY_NS]
    assert verify(tmp_path / "s.db").ok


# ---------------------------------------------------------------------- 2 served overflow
def test_deposits_that_would_overflow_a_balance_are_rejected_and_the_served_session_verifies(
    tmp_path,
):
    deposits = [{"type": "deposit", "amount": 1 << 62}] * 5  # each valid alone
    script = scripted(lambda step, t: [answer(step, deposits if step == 1 else ())])
    summary, results = serve_bounded(
        tmp_path / "s.db", ["maker"], entries(), {"maker": script}, days=2
    )
    rejected = [e for e in events(tmp_path / "s.db", ev.COMMAND_REJECTED) if e.account == "maker"]
    assert [e.data["command"]["amount"] for e in rejected] == [1 << 62] * 5
    assert all(e.data["reason"].startswith("amount:") for e in rejected)
    # the bot heard of each rejection, and went on to the end
    updates = [m[1] for s in results["maker"] if s["type"] == "step" for m in s["messages"]]
    assert sum(1 for u in updates if isinstance(u, dict) and u.get("status") == "rejected") == 5
    assert results["maker"][-1]["type"] == "stop"
    assert not events(tmp_path / "s.db", ev.BOT_FAILED)
    assert verify(tmp_path / "s.db").ok


# ---------------------------------------------------------------------- 6 strangers
def until(condition, timeout: float = 10.0) -> None:
    """Wait (bounded) until ``condition()`` holds: for the server's threads to catch up."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the gateway"
        time.sleep(0.01)


def test_strangers_are_counted_and_a_crowd_of_them_is_turned_away_at_once(caplog):
    gateway = Gateway({"maker": "mm"}, 7, port=0, step_timeout=20)
    url = gateway.start()
    try:
        with contextlib.ExitStack() as crowd:  # they connect and say nothing
            for _ in range(gw.MAX_UNAUTHENTICATED):
                crowd.enter_context(connect(url, open_timeout=5))
            until(lambda: gateway._waiting == gw.MAX_UNAUTHENTICATED)
            with connect(url, open_timeout=5) as late:
                assert orjson.loads(late.recv(timeout=5)) == {
                    "type": "error",
                    "reason": "too many connections waiting to authenticate",
                    "step": None,
                }
                drain(late)
                assert late.close_code == 1013
        until(lambda: gateway._waiting == 0)
        with connect(url, open_timeout=5) as ws:  # the door is open again for the real bot
            assert _hello(ws, gateway.tokens["maker"])["type"] == "welcome"
    finally:
        gateway.close()
    assert gateway.refused >= 1
    assert "did not authenticate (not logged)" in caplog.text
