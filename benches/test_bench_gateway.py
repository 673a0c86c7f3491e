"""Round trips per second of the socket gateway: one remote bot over loopback, in lockstep.

The session has one account and one bot, ``Ticker``, that sets a timer 1 us ahead on every
callback, so the session is nothing but steps: every step is one round trip (server ``step``
out, ``commands`` with the next timer back) and produces no event. The same session runs three
ways; each times ``serve_session`` as a whole with ``time.perf_counter`` (session set-up, the
connection and the SQLite file included — a few ms against about a second) and checks that the
bot answered exactly ``N_STEPS`` timers, so a broken gateway cannot report a figure:

* ``remote``: :func:`clients.remote.run_remote` in a thread of the same process (the Python
  client: pydantic-validated messages, the runner's ``dispatch`` with the line budget);
* ``raw``: a bare ``websockets`` + ``json`` client in a thread (what a minimal bot in another
  language does);
* ``in_process``: the same bot in-process (``LocalDriver``), for the ratio.

Units: round trips/s (steps answered per second of wall time), us per round trip.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

from websockets.sync.client import connect

from clients.bot import Bot
from clients.gateway import BotEntry, serve_session
from clients.latency import Latency
from clients.remote import run_remote

N_STEPS = 10_000
# a timer each simulated millisecond: 1,000 deliveries a simulated second, well inside the
# runner's limit (clients.runner.DEFAULT_MAX_STEPS), which a bench must not run into
TICK_NS = 1_000_000


class TickerMarket:
    """A session with one funded account and no market schedule: nothing but the bot."""

    name = "gateway-bench"
    end_ns = N_STEPS * TICK_NS + TICK_NS // 2  # the start (at 1 ns) plus N_STEPS timers

    def model_dump(self, **_):
        return {"name": self.name}

    def setup(self, engine):
        engine.open_account("bot")

    def schedule_market(self, engine, sim, seed):
        pass


class Ticker(Bot):
    """Sets a timer ``TICK_NS`` ahead on every callback; counts its timers."""

    def __init__(self) -> None:
        self.timers = 0

    def on_start(self, ctx):
        ctx.schedule(ctx.now + TICK_NS, 0)

    def on_timer(self, ctx, tag):
        self.timers += 1
        ctx.schedule(ctx.now + TICK_NS, tag + 1)


def raw_client(url: str, token: str) -> int:
    """A bare client: answer every step with the next timer. Returns the timers seen."""
    timers = 0
    with connect(url, max_size=None, compression=None) as ws:
        ws.send(json.dumps({"type": "hello", "protocol": 1, "token": token}))
        json.loads(ws.recv())
        for raw in ws:
            message = json.loads(raw)
            if message["type"] != "step":
                break
            for callback, _ in message["messages"]:
                timers += callback == "on_timer"
            reply = {
                "type": "commands",
                "step": message["step"],
                "commands": [],
                "timers": [[message["t"] + TICK_NS, timers]],
            }
            ws.send(json.dumps(reply))
    return timers


def session(how: str) -> dict:
    bot = Ticker()
    entry = BotEntry("ticker", "bot", bot, Latency(fixed_ns=1))
    out: dict = {}

    def ready(url, tokens):
        if how == "remote":
            target = lambda: out.update(run=run_remote(bot, url, tokens["bot"]))  # noqa: E731
        else:
            target = lambda: out.update(timers=raw_client(url, tokens["bot"]))  # noqa: E731
        out["thread"] = threading.Thread(target=target, daemon=True)
        out["thread"].start()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        serve_session(
            TickerMarket(),
            1,
            Path(tmp) / "bench.db",
            [] if how == "in_process" else ["bot"],
            bots=[entry],
            port=0,
            on_ready=ready,
        )
        seconds = time.perf_counter() - t0
    if "thread" in out:
        out["thread"].join(timeout=10)
    timers = out.get("timers", bot.timers)
    assert timers == N_STEPS, f"{how}: {timers} timers answered, expected {N_STEPS}"
    return {
        "steps": N_STEPS,
        "seconds": seconds,
        "round_trips_per_s": N_STEPS / seconds,
        "us_per_round_trip": seconds / N_STEPS * 1e6,
    }


RESULTS: dict[str, dict] = {}


def _bench(benchmark, capsys, how: str) -> None:
    def target() -> None:
        RESULTS[how] = session(how)

    benchmark.pedantic(target, rounds=1, iterations=1)
    result = RESULTS[how]
    benchmark.extra_info.update(result)
    with capsys.disabled():
        line = (
            f"\n[gateway] {how:<10} {N_STEPS:,} steps: {result['round_trips_per_s']:,.0f} "
            f"round trips/s ({result['us_per_round_trip']:.0f} us each)"
        )
        if how != "in_process" and "in_process" in RESULTS:
            ratio = RESULTS["in_process"]["round_trips_per_s"] / result["round_trips_per_s"]
            line += f"; in-process is {ratio:.1f}x faster"
        print(line)


def test_in_process_reference(benchmark, capsys):
    _bench(benchmark, capsys, "in_process")


def test_remote_python_client(benchmark, capsys):
    _bench(benchmark, capsys, "remote")


def test_remote_raw_client(benchmark, capsys):
    _bench(benchmark, capsys, "raw")
