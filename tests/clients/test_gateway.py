"""The socket gateway: real WebSocket clients over loopback, lockstep determinism, rejections,
timeouts, and verification of sessions that had gateway rejections."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.sync.client import connect

from clients import protocol as p
from clients.bot import (
    BookLevel,
    BookView,
    FillReport,
    Funding,
    IndexPrint,
    MarginCall,
    Mark,
    OrderUpdate,
    Trade,
)
from clients.cli import main
from clients.context import AccountView, OpenOrder
from clients.demo import DemoMaker, DemoTaker
from clients.gateway import BotEntry, GatewayError, serve_session
from clients.latency import Latency
from clients.remote import RemoteError, run_remote
from clients.runner import bot_rng
from exchange.core import events as ev
from exchange.kernel.engine import DAY_NS, Exchange
from exchange.sessions.scenario_products import ProductsScenario
from exchange.sessions.session import SessionError, verify
from exchange.store.event_store import EventStore

ROOT = Path(__file__).resolve().parents[2]
LATENCY = Latency(fixed_ns=1_000_000, jitter_ns=500_000)


class ShortProducts:
    """The products market (its stored configuration, so ``verify`` rebuilds it) ended after
    ``days`` days; bots come from the test."""

    name = "products"

    def __init__(self, days: int = 6) -> None:
        self.inner = ProductsScenario(days=45)
        self.end_ns = days * DAY_NS

    def model_dump(self, **kwargs):
        return self.inner.model_dump(**kwargs)

    def __eq__(self, other):
        """Equal to the scenario its stored configuration rebuilds (what ``verify`` and a
        resume compare it with)."""
        return other is self or other == self.inner

    __hash__ = None

    def setup(self, engine):
        self.inner.setup(engine)

    def schedule_market(self, engine, sim, seed):
        self.inner.schedule_market(engine, sim, seed)


class FragileTaker(DemoTaker):
    """The demo taker, which raises on its fifth fill (a bot bug)."""

    def on_fill(self, ctx, fill):
        super().on_fill(ctx, fill)
        self.fills = getattr(self, "fills", 0) + 1
        if self.fills == 5:
            raise RuntimeError("fifth fill")


def entries(taker=DemoTaker):
    return [
        BotEntry("mm", "maker", DemoMaker(), LATENCY),
        BotEntry("tk", "taker", taker(), LATENCY),
    ]


def payloads(db) -> list[bytes]:
    with EventStore.open(db, mode="r") as store:
        return list(store.payloads(1, store.last_seq))


def events(db, kind=None) -> list:
    with EventStore.open(db, mode="r") as store:
        return list(store.events(kind=kind))


def serve(db, remote, bots, clients, *, days=6, seed=7, step_timeout=5.0, **kwargs):
    """Serve a short session; ``clients[account](url, token)`` runs in a thread per remote
    bot once the gateway listens. Returns the summary and what each client returned."""
    results: dict[str, object] = {}
    threads = []

    def ready(url, tokens):
        for account, client in clients.items():

            def go(account=account, client=client):
                try:
                    results[account] = client(url, tokens[account])
                except Exception as exc:  # noqa: BLE001 - reported to the test
                    results[account] = exc

            thread = threading.Thread(target=go, daemon=True)
            thread.start()
            threads.append(thread)

    summary = serve_session(
        ShortProducts(days),
        seed,
        db,
        remote,
        bots=bots,
        port=0,
        step_timeout=step_timeout,
        connect_timeout=5.0,
        on_ready=ready,
        **kwargs,
    )
    for thread in threads:
        thread.join(timeout=10)
    return summary, results


def remote_bot(bot):
    return lambda url, token: run_remote(bot, url, token)


def plain_example():
    """``examples/remote_market_maker.py``, the bot that uses only ``websockets``."""
    spec = importlib.util.spec_from_file_location(
        "example", ROOT / "examples/remote_market_maker.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


def start_example(tokens):
    """Run the plain example in a thread: it waits for ``tokens`` (``--tokens-file``) and
    trades the ``maker`` account."""
    thread = threading.Thread(target=plain_example().main, args=([str(tokens)],), daemon=True)
    thread.start()
    return thread


# ---------------------------------------------------------------------- the schema
def test_messages_round_trip_exactly_through_json():
    messages = [
        ("on_start", None),
        (
            "on_book",
            BookView("H100-PERP", 5, (BookLevel(99, 3), BookLevel(98, 1)), (BookLevel(101, 2),)),
        ),
        ("on_book", BookView("H100-PERP", 6, (), ())),
        ("on_trade", Trade("H100-PERP", 7, 100, 2, "buy")),
        ("on_order", OrderUpdate("accepted", 8, "H100-PERP", 4, 1, "buy", 99, 3, None)),
        ("on_order", OrderUpdate("rejected", 8, None, None, None, None, None, None, "why")),
        ("on_fill", FillReport("H100-PERP", 9, 4, 1, "sell", 100, 2, -150, "maker")),
        ("on_index", IndexPrint("H100-RENTAL", 10, 2_345)),
        ("on_mark", Mark("H100-PERP", 10, 2_350, "index+basis")),
        ("on_funding", Funding("H100-PERP", 11, "3/10000", 2_340, None, None)),
        ("on_funding", Funding("H100-PERP", 11, "-1/10000", None, -4, 12)),
        ("on_margin_call", MarginCall("called", 12, 5_000, 13)),
        ("on_timer", {"any": ["json", 1]}),
        ("on_stop", None),
    ]
    assert {name for name, _ in messages} == p.CALLBACKS  # every callback of the bot API
    wire = orjson.loads(orjson.dumps([p.encode_message(n, m) for n, m in messages]))
    back = [p.decode_message(item) for item in wire]
    assert back == messages
    for (_, sent), (_, got) in zip(messages, back, strict=True):
        assert type(got) is type(sent)
        if isinstance(sent, BookView):
            assert all(type(level) is BookLevel for level in got.bids + got.asks)
            assert type(got.bids) is tuple
    view = AccountView(100, {"H100-PERP": -3}, (OpenOrder(4, "H100-PERP", "buy", 99, 3),))
    assert p.decode_account(orjson.loads(orjson.dumps(p.encode_account(view)))) == view


def test_welcome_rng_draws_what_the_in_process_generator_draws():
    sent = orjson.loads(orjson.dumps(p.rng_state(bot_rng(11, "mm"))))
    assert p.rng_from_state(sent).integers(0, 1 << 60, 50).tolist() == (
        bot_rng(11, "mm").integers(0, 1 << 60, 50).tolist()
    )
    assert "11" not in sent.values()  # the session seed itself is not sent


@pytest.mark.parametrize(
    "raw, reason",
    [
        ({"type": "bot_failed", "bot": "x", "cause": "raised"}, "unauthorised"),
        ({"type": "cancel", "order_id": 1, "account": "taker"}, "unauthorised"),
        ({"type": "teleport"}, "type:"),
        ({"type": "cancel", "order_id": 1, "ref": 2}, "ref: Extra"),
        ({"type": "submit", "instrument": "X", "colour": "red"}, "colour: Extra"),
        ({"type": "submit", "ref": "1"}, "ref: Input should be a valid integer"),
    ],
)
def test_command_envelope_is_checked(raw, reason):
    with pytest.raises(p.ProtocolError, match=reason):
        p.parse_command(raw, "maker")


def test_command_values_are_left_to_the_exchange():
    ref, command = p.parse_command(
        {"type": "submit", "instrument": "H100-PERP", "side": "up", "qty": 0, "ref": 3}, "maker"
    )
    assert ref == 3
    assert command == {
        "type": "submit",
        "instrument": "H100-PERP",
        "side": "up",
        "qty": 0,
        "account": "maker",
    }


def test_engine_reject_is_loggable_and_idempotent():
    seen = []
    engine = Exchange(seen.append)
    engine.open_account("maker")
    engine.reject("x" * 100_000 + "\u00e9\x01", "too big", account="maker")
    engine.reject(object(), "odd")
    engine.reject({"a": 1}, "fine", account="nobody")
    first = seen[1:]
    assert first[0].account == "maker" and first[0].data["source"] == "gateway"
    assert len(orjson.dumps(first[0].data["command"])) <= Exchange.REJECT_MAX_BYTES
    assert first[0].data["command"]["bytes"] > 100_000
    assert "unserialisable" in first[1].data["command"] and first[2].account is None
    again = []
    replay = Exchange(again.append)
    replay.open_account("maker")
    for e in first:
        replay.reject(e.data["command"], e.data["reason"], e.data["source"], e.account)
    assert [ev.encode(e) for e in again[1:]] == [ev.encode(e) for e in first]


# ---------------------------------------------------------------------- trading, determinism
@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """The reference logs: every bot in-process (plain taker; fragile taker)."""
    root = tmp_path_factory.mktemp("inproc")
    logs = {}
    for label, taker in (("plain", DemoTaker), ("fragile", FragileTaker)):
        serve_session(ShortProducts(), 7, root / f"{label}.db", bots=entries(taker))
        logs[label] = payloads(root / f"{label}.db")
    return logs


def test_remote_maker_trades_with_in_process_taker(tmp_path, in_process):
    summary, results = serve(
        tmp_path / "s.db", ["maker"], entries(), {"maker": remote_bot(DemoMaker())}
    )
    run = results["maker"]
    assert run.bot == "mm" and run.account == "maker" and run.steps > 100
    assert run.stopped == "stopped" and run.errors == [] and run.failure is None
    fills = events(tmp_path / "s.db", ev.FILL)
    assert fills and {(f.account, f.counterparty) for f in fills} == {("taker", "maker")}
    # lockstep: the very same bytes as with the maker in-process
    assert payloads(tmp_path / "s.db") == in_process["plain"]
    assert verify(tmp_path / "s.db").ok


def test_same_log_with_every_bot_remote_even_when_one_fails(tmp_path, in_process):
    clients = {"maker": remote_bot(DemoMaker()), "taker": remote_bot(FragileTaker())}
    serve(tmp_path / "s.db", ["maker", "taker"], entries(FragileTaker), clients)
    log = payloads(tmp_path / "s.db")
    failed = [e for e in events(tmp_path / "s.db", ev.BOT_FAILED)]
    assert [(e.account, e.data["cause"], e.data["callback"]) for e in failed] == [
        ("taker", "raised", "on_fill")
    ]
    assert "RuntimeError: fifth fill" in failed[0].data["detail"]
    assert log == in_process["fragile"]


def test_plain_websockets_example_gives_the_in_process_log(tmp_path, in_process):
    example = plain_example()
    _, results = serve(tmp_path / "s.db", ["maker"], entries(), {"maker": example.run})
    assert results["maker"] > 100
    assert payloads(tmp_path / "s.db") == in_process["plain"]


# ---------------------------------------------------------------------- resume
class Crash(Exception):
    pass


def crash_after(batches):
    """An ``on_batch`` that raises once ``batches`` batches are committed: the run stops
    there, as a killed one does, with that prefix in its log."""
    seen = []

    def count(_events):
        seen.append(_events)
        if len(seen) == batches:
            raise Crash

    return count


def committed(db):
    with EventStore.open(db, mode="r") as store:
        return store.session["status"], store.last_seq


def test_a_crashed_session_with_a_remote_bot_resumes_to_the_uninterrupted_log(tmp_path, in_process):
    db = tmp_path / "s.db"
    clients = {"maker": remote_bot(DemoMaker())}
    with pytest.raises(Crash):
        serve(db, ["maker"], entries(), clients, batch_size=100, on_batch=crash_after(3))
    assert committed(db) == ("running", 300)
    assert verify(db).ok  # the committed prefix re-executes
    # a new gateway, new tokens, a new bot process: it is sent every step from the first
    summary, results = serve(db, ["maker"], entries(), {"maker": remote_bot(DemoMaker())},
                             resume=True)  # fmt: skip
    assert summary.resumed_from == 300
    assert results["maker"].steps > 100 and results["maker"].failure is None
    assert payloads(db) == in_process["plain"]
    assert committed(db) == ("finished", len(in_process["plain"]))
    assert verify(db).ok


def test_a_resume_whose_remote_bot_acts_otherwise_fails_and_keeps_the_log(tmp_path):
    db = tmp_path / "s.db"
    with pytest.raises(Crash):
        serve(db, ["maker"], entries(), {"maker": remote_bot(DemoMaker())}, batch_size=100,
              on_batch=crash_after(3))  # fmt: skip
    before = payloads(db)
    with pytest.raises(SessionError, match=r"cannot resume.*different event at seq \d+"):
        serve(db, ["maker"], entries(), {"maker": remote_bot(DemoMaker(spread=31))}, resume=True)
    assert payloads(db) == before
    assert committed(db) == ("running", 300)
    assert verify(db).ok


def stranger_hellos(token: str) -> list[str | bytes]:
    """First messages of connections that never authenticate: a wrong token, the real token
    in a hello that is malformed, oversized or of another protocol, not a hello, not UTF-8."""
    hello = {"type": "hello", "protocol": 1, "token": token}
    return [
        orjson.dumps({**hello, "token": "not-a-token"}).decode(),
        orjson.dumps(hello).decode()[:-1],  # the closing brace missing
        orjson.dumps({**hello, "books": ["x" * 64] * 1_100}).decode(),  # over 64 KiB
        orjson.dumps({**hello, "protocol": 2}).decode(),
        orjson.dumps({"type": "commands", "step": 1}).decode(),
        b"\xff\xfe" + token.encode(),
    ]


def strangers(url: str, token: str, rounds: int = 1) -> int:
    """Connect ``rounds`` times with each of :func:`stranger_hellos` (until the server has
    gone); returns how many connections were refused with an ``error``."""
    refused = 0
    for _ in range(rounds):
        for first in stranger_hellos(token):
            try:
                with connect(url, open_timeout=5) as ws:
                    ws.send(first)
                    refused += orjson.loads(ws.recv(timeout=5))["type"] == "error"
            except ConnectionClosed:
                pass
            except (OSError, WebSocketException):
                return refused  # the session is over
    return refused


def with_strangers(bot):
    """A client that lets strangers knock before its bot connects and while it trades (the
    real token in their malformed hellos, and a twin once the bot is in)."""

    def client(url, token):
        before = strangers(url, token)
        during = threading.Thread(target=strangers, args=(url, token, 6), daemon=True)
        during.start()
        run = run_remote(bot, url, token)
        during.join(timeout=30)
        assert before == len(stranger_hellos(token)) and not during.is_alive()
        return run

    return client


def test_strangers_leave_no_trace_and_a_session_with_them_resumes_to_the_uninterrupted_log(
    tmp_path, in_process
):
    db = tmp_path / "s.db"
    with pytest.raises(Crash):
        serve(db, ["maker"], entries(), {"maker": with_strangers(DemoMaker())}, batch_size=100,
              on_batch=crash_after(3))  # fmt: skip
    assert payloads(db) == in_process["plain"][:300]  # nothing of theirs, wherever they came
    summary, results = serve(
        db, ["maker"], entries(), {"maker": with_strangers(DemoMaker())}, resume=True
    )
    assert summary.resumed_from == 300 and results["maker"].failure is None
    assert payloads(db) == in_process["plain"]
    assert verify(db).ok


def test_resuming_a_finished_served_session_needs_no_bot_and_is_refused(tmp_path):
    db = tmp_path / "s.db"
    serve_session(ShortProducts(2), 7, db, bots=entries())
    with pytest.raises(SessionError, match="already finished; nothing to resume"):
        # no remote bot is waited for: the refusal comes before a gateway would listen
        serve_session(ShortProducts(2), None, db, ["maker"], bots=entries(), resume=True,
                      connect_timeout=0.01)  # fmt: skip
    with pytest.raises(SessionError, match="already exists; choose a new path, or --resume"):
        serve_session(ShortProducts(2), 7, db, bots=entries())


def test_resume_refuses_another_seed_or_other_scenario_settings(tmp_path):
    db = tmp_path / "s.db"
    with pytest.raises(Crash):
        serve_session(ShortProducts(), 7, db, bots=entries(), batch_size=100,
                      on_batch=crash_after(2))  # fmt: skip
    with pytest.raises(SessionError, match="has seed 7, not 8"):
        serve_session(ShortProducts(), 8, db, bots=entries(), resume=True)
    other = ShortProducts()
    other.inner = ProductsScenario(days=50)
    with pytest.raises(SessionError, match="other scenario settings"):
        serve_session(other, 7, db, bots=entries(), resume=True)
    assert committed(db) == ("running", 200)


def test_serve_resume_command_continues_an_in_process_crash_with_a_remote_bot(tmp_path):
    from clients.cli import _load

    model, bots = _load("demo")
    reference = tmp_path / "reference.db"
    serve_session(model, None, reference, bots=bots)
    db = tmp_path / "demo.db"
    with pytest.raises(Crash):
        serve_session(model, None, db, bots=bots, batch_size=100, on_batch=crash_after(4))
    tokens = tmp_path / "tokens.json"
    thread = start_example(tokens)
    result = CliRunner().invoke(
        main,
        ["serve", "demo", "--db", str(db), "--port", "0", "--remote", "maker",
         "--tokens-file", str(tokens), "--resume", "--quiet"],
    )  # fmt: skip
    thread.join(timeout=10)
    assert result.exit_code == 0, result.output
    assert "(resumed after 400)" in result.stdout
    assert "%|" not in result.stderr  # --quiet: no bar
    assert payloads(db) == payloads(reference)
    assert verify(db).ok


def test_serve_takes_the_engine_and_refuses_an_unknown_one_before_any_file(tmp_path, monkeypatch):
    seen = {}

    def fake_serve_session(*args, **kwargs):
        seen.update(kwargs)
        raise GatewayError("stop here")

    monkeypatch.setattr("clients.cli.serve_session", fake_serve_session)
    db = tmp_path / "demo.db"
    result = CliRunner().invoke(
        main, ["serve", "demo", "--db", str(db), "--engine", "reference", "--quiet"]
    )
    assert seen["engine"] == "reference", result.output
    bad = CliRunner().invoke(main, ["serve", "demo", "--db", str(db), "--engine", "fast"])
    assert bad.exit_code == 2 and "compiled" in bad.output and "reference" in bad.output
    assert not db.exists()


# ---------------------------------------------------------------------- misbehaviour
def drain(ws) -> list[dict]:
    """Every message until the server closes the connection (whatever the close code)."""
    out = []
    try:
        for message in ws:
            out.append(orjson.loads(message))
    except ConnectionClosed:
        pass
    return out


def _hello(ws, token, books=None):
    ws.send(orjson.dumps({"type": "hello", "protocol": 1, "token": token, "books": books}))
    return orjson.loads(ws.recv())


def test_bad_messages_get_an_error_and_only_an_authenticated_bot_s_are_logged(tmp_path):
    replies: list[dict] = []

    def refused(url):
        with connect(url) as ws:
            replies.append(_hello(ws, "not-a-token"))
        with connect(url) as ws:
            ws.send("{this is not json")
            replies.append(orjson.loads(ws.recv()))

    def misbehaving(url, token):
        with connect(url, max_size=None) as ws:
            assert _hello(ws, token, ["H100-PERP"])["type"] == "welcome"
            with connect(url) as twin:  # one bot per account
                replies.append(_hello(twin, token))
            first = True
            for raw in ws:
                message = orjson.loads(raw)
                if message["type"] == "stop":
                    return
                if message["type"] != "step":
                    continue
                step = message["step"]
                if first:
                    first = False
                    bad = [
                        "{not json",
                        "x" * (p.MAX_MESSAGE_BYTES + 1),
                        orjson.dumps({"type": "commands", "step": step + 5}).decode(),
                        orjson.dumps({"type": "commands", "step": step, "colour": 1}).decode(),
                        orjson.dumps(
                            {"type": "commands", "step": step, "commands": [{}] * 300}
                        ).decode(),
                    ]
                    for text in bad:
                        ws.send(text)
                        replies.append(orjson.loads(ws.recv()))
                    answer = {
                        "type": "commands",
                        "step": step,
                        "commands": [
                            {"type": "deposit", "amount": 5, "account": "taker"},
                            {"type": "bot_failed", "bot": "mm", "cause": "raised"},
                            {"type": "deposit", "amount": 7},
                        ],
                    }
                    ws.send(orjson.dumps(answer))
                    replies.append(orjson.loads(ws.recv()))
                    replies.append(orjson.loads(ws.recv()))
                else:
                    ws.send(orjson.dumps({"type": "commands", "step": step}))

    bots = entries()
    results: dict = {}

    def ready(url, tokens):
        refused(url)  # before the session starts: answered, never logged
        thread = threading.Thread(
            target=lambda: results.setdefault("maker", misbehaving(url, tokens["maker"])),
            daemon=True,
        )
        thread.start()
        results["thread"] = thread

    serve_session(
        ShortProducts(3), 7, tmp_path / "s.db", ["maker"], bots=bots, port=0, on_ready=ready
    )
    results["thread"].join(timeout=10)
    assert all(r["type"] == "error" for r in replies), replies
    reasons = [r["reason"] for r in replies]
    expected = [
        "unknown token",
        "Invalid JSON",
        "already has a connected bot",
        "Invalid JSON",
        "message too big",
        "step: the step out is 1, not 6",
        "colour: Extra inputs",
        "flood: 300 commands",
        "unauthorised: this connection trades 'maker', not 'taker'",
        "unauthorised: bot_failed",
    ]
    assert len(reasons) == len(expected)
    for reason, part in zip(reasons, expected, strict=True):
        assert part in reason
    rejected = [e for e in events(tmp_path / "s.db", ev.COMMAND_REJECTED)]
    assert all(e.data["source"] == "gateway" and e.account == "maker" for e in rejected)
    # the connections that never authenticated (the first three) left nothing in the log;
    # the authenticated bot's refusals are there, in the order it sent them
    assert [e.data["reason"] for e in rejected] == reasons[3:]
    by_reason = {e.data["reason"]: e for e in rejected}
    assert by_reason[reasons[4]].account == "maker"  # oversized, attributed, cut for the log
    assert len(orjson.dumps(by_reason[reasons[4]].data["command"])) <= 4_096
    # the valid command of the answer went through
    deposits = [e for e in events(tmp_path / "s.db", ev.DEPOSIT) if e.amount == 7]
    assert [d.account for d in deposits] == ["maker"]
    verdict = verify(tmp_path / "s.db")
    assert verdict.ok, verdict.problems


def test_a_flood_disconnects_the_bot_and_the_session_goes_on(tmp_path):
    def flooder(url, token):
        with connect(url) as ws:
            _hello(ws, token)
            step = orjson.loads(ws.recv())["step"]
            for _ in range(p.MAX_MESSAGES_PER_STEP):
                ws.send(orjson.dumps({"type": "commands", "step": step + 1}))
            return drain(ws)

    summary, results = serve(tmp_path / "s.db", ["maker"], entries(), {"maker": flooder})
    assert results["maker"][-1]["reason"].startswith("flood:")
    failed = events(tmp_path / "s.db", ev.BOT_FAILED)
    assert [(e.account, e.data["cause"]) for e in failed] == [("maker", "disconnected")]
    assert "flood" in failed[0].data["detail"]
    rejected = events(tmp_path / "s.db", ev.COMMAND_REJECTED)
    assert len(rejected) == p.MAX_MESSAGES_PER_STEP + 1
    assert events(tmp_path / "s.db", ev.SESSION_ENDED)
    assert verify(tmp_path / "s.db").ok


def test_a_silent_bot_is_stopped_after_the_step_timeout(tmp_path):
    def silent(url, token):
        with connect(url) as ws:
            _hello(ws, token)
            return drain(ws)  # reads, never answers

    summary, results = serve(
        tmp_path / "s.db", ["maker"], entries(), {"maker": silent}, step_timeout=0.3
    )
    assert results["maker"][0]["type"] == "step"
    assert results["maker"][-1] == {
        "type": "error",
        "reason": "no answer to step 1 within 0.3 s",
    }
    failed = events(tmp_path / "s.db", ev.BOT_FAILED)
    assert [(e.account, e.data["cause"], e.data["callback"]) for e in failed] == [
        ("maker", "timeout", "on_start")
    ]
    # the session went on to its end without the maker
    assert [e.t for e in events(tmp_path / "s.db", ev.SESSION_ENDED)] == [6 * DAY_NS]
    assert verify(tmp_path / "s.db").ok


def test_a_bot_that_never_connects_stops_the_session_before_it_starts(tmp_path):
    with pytest.raises(GatewayError, match=r"did not connect within 0.2 s: mm \(maker\)"):
        serve_session(
            ShortProducts(), 7, tmp_path / "s.db", ["maker"], bots=entries(), port=0,
            connect_timeout=0.2,
        )  # fmt: skip
    assert not (tmp_path / "s.db").exists()


def test_wrong_token_raises_in_the_client(tmp_path):
    def wrong(url, token):
        try:
            run_remote(DemoMaker(), url, token + "x")
        except RemoteError as exc:
            outcome = str(exc)
        run_remote(DemoMaker(), url, token)
        return outcome

    _, results = serve(tmp_path / "s.db", ["maker"], entries(), {"maker": wrong}, days=2)
    assert results["maker"] == "unknown token"
    assert verify(tmp_path / "s.db").ok


def test_serve_command_with_the_plain_example(tmp_path):
    tokens = tmp_path / "tokens.json"
    thread = start_example(tokens)
    db = tmp_path / "demo.db"
    result = CliRunner().invoke(
        main,
        ["serve", "demo", "--db", str(db), "--port", "0", "--remote", "maker",
         "--tokens-file", str(tokens)],
    )  # fmt: skip
    thread.join(timeout=10)
    assert result.exit_code == 0, result.output
    assert "token   maker" in result.stdout and "Fill" in result.stdout
    # the run's progress bar, from the first batch (after the bots connected) to the seal
    events = next(line.split()[1] for line in result.stdout.splitlines() if line[:6] == "events")
    assert ": sealing: 100%" in result.stderr
    assert result.stderr.rstrip().endswith(f"{events} events]")
    assert oct(tokens.stat().st_mode & 0o777) == "0o600"
    assert verify(db).ok
