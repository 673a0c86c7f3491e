"""Crash safety of a served session: SIGKILL a real `gpuex serve` with a remote bot at random
moments; `gpuex serve --resume`, with the bot connected again, ends at the bytes of an
uninterrupted run.

The remote bot is `examples/remote_market_maker.py`, a separate process that knows nothing of
the crash: after each kill it is started afresh, and the resumed session re-runs it from the
first step (docs/protocol.md, *Resume*).
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clients.cli import _load
from clients.gateway import serve_session
from exchange.sessions import session
from exchange.store.event_store import EventStore
from tests.exchange.store.test_crash import _size

ROOT = Path(__file__).resolve().parents[2]
SERVE = [
    sys.executable,
    "-c",
    "from clients.cli import main; main()",
    "serve",
    "demo",
    "--port",
    "0",
    "--remote",
    "maker",
    "--quiet",
]
KILL_POINTS = 4


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The demo session with every bot in-process: what a served run must log."""
    path = tmp_path_factory.mktemp("ref") / "ref.db"
    model, bots = _load("demo")
    serve_session(model, None, path, bots=bots)
    return payloads(path)[0]


def payloads(path):
    with EventStore.open(path, mode="r") as store:
        return list(store.payloads(1, store.last_seq)), store.session["status"]


def _serve(db, tokens, resume):
    """The server and its remote maker, each its own process."""
    server = subprocess.Popen(
        [*SERVE, "--db", str(db), "--tokens-file", str(tokens), *(["--resume"] * resume)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    bot = subprocess.Popen(
        [sys.executable, str(ROOT / "examples/remote_market_maker.py"), str(tokens)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return server, bot


@pytest.mark.slow
def test_a_served_session_killed_at_random_moments_resumes_to_the_uninterrupted_log(
    tmp_path, reference
):
    rng = random.Random(20261203)
    db = tmp_path / "served.db"
    prefixes = []
    for attempt in range(4 * KILL_POINTS):
        if len(prefixes) == KILL_POINTS:
            break
        before = _size(db)
        server, bot = _serve(db, tmp_path / f"tokens-{attempt}.json", resume=db.exists())
        deadline = time.monotonic() + 60
        # a kill after a new commit: not while the resumed session is still catching up
        while _size(db) <= before and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.15))
        if server.poll() is None:
            os.kill(server.pid, signal.SIGKILL)
        server.wait()
        bot.kill()
        bot.wait()
        got, status = payloads(db)
        assert got == reference[: len(got)], "the committed prefix differs from a clean run"
        if status == "finished":
            break  # it ended before the kill: the rest is checked below
        assert session.verify(db).ok
        prefixes.append(len(got))
    assert len(prefixes) >= KILL_POINTS // 2, f"too few kills landed mid-run: {prefixes}"
    assert len(set(prefixes)) == len(prefixes), "a resume committed nothing new"
    got, status = payloads(db)
    if status != "finished":
        server, bot = _serve(db, tmp_path / "tokens-last.json", resume=True)
        assert server.wait(timeout=300) == 0, server.stderr.read().decode()
        bot.wait(timeout=30)
    got, status = payloads(db)
    assert status == "finished" and got == reference
    assert session.verify(db).ok
