"""Hostile socket messages (issue #17): whatever an authenticated bot sends in a step,
``clients.gateway.read_message`` reads it without raising; each refusal has a one-line reason
and, logged through ``Exchange.reject``, is exactly one ``CommandRejected`` that changes nothing;
each command it lets through meets the exchange's own invariants (``tests.fuzz.mutator``); no
session token reaches anything it returns. Then a real served session over loopback whose remote
bot sends hostile frames every step: the session ends normally, every refusal is in the log
attributed to the bot, no token is in the file, and ``verify`` passes."""

from __future__ import annotations

import json
import random
import threading

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from clients import protocol as p
from clients.demo import DemoMaker, DemoTaker
from clients.gateway import BotEntry, read_message, serve_session
from clients.latency import Latency
from exchange.core import events as ev
from exchange.sessions.session import verify
from exchange.store.event_store import EventStore
from tests.clients.test_gateway import ShortProducts

from .invariants import assert_storable
from .mutator import HOSTILE, Fuzzer
from .test_fuzz_commands import hostile_inputs, json_ish, shaped_commands

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TOKEN = "tok-3f9a1c7e5b2d4e6f8a0b1c2d3e4f5a6b"
ACCOUNT = "alice"
STEP = 3


def message(kind, step, **fields) -> dict:
    return {"type": kind, "step": step, **fields}


envelopes = st.builds(
    message,
    st.sampled_from(["commands", "commands", "fail", "hello", "Commands", ""]),
    st.sampled_from([STEP, STEP, STEP + 1, 0, -1, 1 << 63, True, "3"]),
    commands=st.lists(hostile_inputs | shaped_commands(), max_size=6),
    timers=st.lists(st.tuples(st.integers(), st.text(max_size=8)) | json_ish, max_size=3),
) | st.builds(
    message,
    st.just("fail"),
    st.just(STEP),
    cause=st.sampled_from(["raised", "budget", "timeout", "disconnected"]) | json_ish,
    callback=st.text(max_size=70) | st.just(TOKEN),
    detail=st.text(max_size=200) | st.just(f"Traceback: token={TOKEN}"),
)


def text_of(value) -> str:
    """JSON text of ``value`` as a careless client could write it: ints of any size, NaN and
    Infinity literals, anything else as its repr string."""
    return json.dumps(value, default=repr)


frames = (
    envelopes.map(text_of)
    | envelopes.map(lambda m: text_of(m).encode())
    | st.binary(max_size=200)
    | st.text(max_size=200)
    | st.sampled_from(
        [
            "",
            "{",
            "null",
            "[]",
            '{"type": "commands", "step": 3, "commands": ' + "[" * 200 + "]" * 200 + "}",
            '{"type": "commands", "step": 3, "commands": [{"type": "deposit", "amount": '
            + "9" * 40
            + "}]}",
            '{"type": "commands", "step": 3, "commands": [{"type": "deposit", "amount": NaN}]}',
            '{"type": "hello", "protocol": 1, "token": "' + TOKEN + '"',  # no closing brace
            "x" * (p.MAX_MESSAGE_BYTES + 1),
            b"\xff\xfe\x00",
        ]
    )
    | st.sampled_from(HOSTILE)  # not even a frame: what a broken transport could hand over
)


@FUZZ
@given(frames)
def test_a_hostile_frame_is_read_without_raising_and_each_refusal_is_one_clean_event(frame):
    reading = read_message(frame, STEP, ACCOUNT, secrets=(TOKEN,))
    assert TOKEN not in repr(reading)
    fuzzer = Fuzzer(seed=0, full_check_every=1)
    engine = fuzzer.engine
    for loggable, reason in reading.refused:
        assert reason and "\n" not in reason, reason
        before, seq = engine.state_hash(), engine.seq
        result = engine.reject(loggable, reason, account=ACCOUNT)
        refusal = fuzzer._absorb("reject")
        assert not result.ok and engine.seq == seq + 1 and engine.state_hash() == before
        assert [e.kind for e in refusal] == [ev.COMMAND_REJECTED]
        assert_storable(refusal[0])
    if reading.answer is not None:
        outbox, _timers = reading.answer
        for number, (_ref, command) in enumerate(outbox):
            assert command["account"] == ACCOUNT  # the connection's own, whatever it said
            fuzzer.send(number, command)
    if reading.failure is not None:  # only a ``fail`` message stops the bot
        assert "could not read" not in reading.failure.detail, reading.failure.detail
        assert reading.failure.cause in ("raised", "budget", "limit", "timeout", "disconnected")


# ---------------------------------------------------------------------- over loopback
def hostile_frames(rng: random.Random, step: int) -> list:
    """Three frames that do not answer the step (under the per-step message limit), then the
    answer, whose commands are hostile."""
    not_answers = [
        "{not json",
        "",
        b"\xff\xfe",
        "[" * 100 + "]" * 100,
        text_of(message("commands", step + 1)),
        text_of(message("commands", step, colour=1)),
        text_of(message("hello", step, token=TOKEN)),
        text_of(message("commands", step, commands=[{"type": "deposit", "amount": 10**30}])),
        text_of(message("commands", step, timers=[[float("nan"), "x"]])),
    ]
    commands = [
        {"type": "deposit", "amount": 1 << 62},
        {"type": "withdraw", "account": "taker", "amount": 1},
        {"type": "bot_failed", "bot": "tk", "cause": "raised"},
        {"type": "submit", "instrument": "H100-PERP", "side": "buy", "price": 1, "qty": 1 << 62},
        {"type": "submit", "instrument": "H100-PERP", "side": "buy", "price": -1, "qty": 1},
        {"type": "amend", "order_id": 1, "price": 1, "qty": 1 << 62},
        {"type": "cancel", "order_id": 10**18},
        {"type": "teleport"},
        {"type": "deposit", "amount": "$5"},
    ]
    answer = message("commands", step, commands=rng.sample(commands, 4))
    return [*rng.sample(not_answers, 3), text_of(answer)]


def test_a_served_session_with_a_bot_sending_hostile_frames_every_step_ends_and_verifies(
    tmp_path,
):
    rng = random.Random(4)
    seen: dict[str, object] = {"errors": 0}

    def hostile_bot(url: str, token: str) -> None:
        seen["token"] = token
        with connect(url, max_size=None) as ws:
            ws.send(orjson.dumps({"type": "hello", "protocol": 1, "token": token}))
            assert orjson.loads(ws.recv())["type"] == "welcome"
            try:
                for raw in ws:
                    incoming = orjson.loads(raw)
                    if incoming["type"] == "stop":
                        return
                    if incoming["type"] != "step":
                        continue
                    step = incoming["step"]
                    frames = hostile_frames(rng, step) if step <= 12 else []
                    for frame in frames or [orjson.dumps(message("commands", step))]:
                        ws.send(frame)
            except ConnectionClosed:
                return

    latency = Latency(fixed_ns=1_000_000, jitter_ns=500_000)
    bots = [
        BotEntry("mm", "maker", DemoMaker(), latency),
        BotEntry("tk", "taker", DemoTaker(), latency),
    ]
    threads = []

    def ready(url, tokens):
        thread = threading.Thread(target=hostile_bot, args=(url, tokens["maker"]), daemon=True)
        thread.start()
        threads.append(thread)

    db = tmp_path / "hostile.db"
    serve_session(ShortProducts(3), 7, db, ["maker"], bots=bots, port=0, on_ready=ready)
    for thread in threads:
        thread.join(timeout=10)
    with EventStore.open(db, mode="r") as store:
        rejected = list(store.events(kind=ev.COMMAND_REJECTED))
        failed = list(store.events(kind=ev.BOT_FAILED))
    assert rejected, "the hostile frames were refused and logged"
    assert all(e.account == "maker" for e in rejected)
    assert all("\n" not in e.data["reason"] for e in rejected)
    reasons = " ".join(e.data["reason"] for e in rejected)
    assert "past the ledger's bound" in reasons and "exposure" in reasons  # the engine's
    assert "unauthorised" in reasons  # the gateway's
    assert not [e for e in failed if e.account == "maker"]  # refused, never stopped
    assert seen["token"].encode() not in db.read_bytes()
    verdict = verify(db)
    assert verdict.ok, verdict.problems
