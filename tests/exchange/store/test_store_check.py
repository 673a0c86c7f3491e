"""A long log's store check in a helper process, beside the re-execution: the same verdict as
checking one stage after the other, whatever the damage, and whether or not the helper runs."""

import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from exchange.core.events import TYPED_FIELDS
from exchange.sessions import session
from exchange.store.check import StoreCheck
from exchange.store.compact import compact, expand
from exchange.store.event_store import INDEXES, ZERO_CHAIN, EventStore, verify_store

SMALL = {"messages": 2_000, "traders": 5, "cash_every": 300, "malformed_every": 250}


@pytest.fixture
def log(tmp_path):
    return session.run("flow", tmp_path / "s.db", seed=4, overrides=SMALL, batch_size=100).path


@pytest.fixture
def helpers(monkeypatch):
    """Counts the store checks started in a helper process."""
    started = []
    start = StoreCheck.start

    def counting_start(path):
        check = start(path)
        started.append(check)
        return check

    monkeypatch.setattr(StoreCheck, "start", staticmethod(counting_start))
    return started


def both_ways(path, helpers):
    """The verdict checking in line and with the store check beside (which must have run)."""
    in_line = session.verify(path, check_aside_after=None)
    assert helpers == []
    beside = session.verify(path, check_aside_after=0)
    assert len(helpers) == 1 and helpers[0] is not None
    return in_line, beside


def edit(path, statement, params=()):
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(statement, params)
    conn.close()


def test_a_sound_log_verifies_the_same_with_the_store_check_beside(log, helpers):
    in_line, beside = both_ways(log, helpers)
    assert in_line.ok and beside == in_line


def test_a_log_without_indexes_is_sound_and_indexes_built_later_are_checked_either_way(
    log, helpers
):
    # issue #20: a run leaves no index; their absence is no damage, and once `gpuex index`
    # (build_indexes) has made them, an edited index key is found as before
    from tests.exchange.store.test_tamper import edit_index_key

    with EventStore.open(log) as store:
        assert len(store.missing_indexes()) == len(INDEXES)
    in_line, beside = both_ways(log, helpers)
    assert in_line.ok and beside == in_line
    with EventStore.open(log, mode="a") as store:
        store.build_indexes()
    edit_index_key(Path(log), "idx_events_kind", "Fill", "Fulp")
    helpers.clear()
    in_line, beside = both_ways(log, helpers)
    assert not in_line.ok and beside == in_line
    assert any("index idx_events_kind is corrupt" in p for p in in_line.problems)


def test_a_damaged_store_gives_the_store_checks_verdict_either_way(log, helpers):
    edit_event(log, 300, lambda line: line + b"x")  # no longer an event: located
    in_line, beside = both_ways(log, helpers)
    assert not in_line.ok and in_line.first_bad_seq == 300
    assert beside == in_line


def test_a_deleted_event_gives_the_same_verdict_either_way(log, helpers):
    edit_event(log, 1234, lambda line: None)  # the line removed from its batch's blob
    in_line, beside = both_ways(log, helpers)
    assert not in_line.ok and in_line.first_bad_seq == 1234
    assert beside == in_line


def edit_event(path, seq, change) -> tuple[int, int]:
    """Replace event ``seq``'s line in its batch's blob by ``change(line)`` (None: remove
    it) behind the store's back, and its projection row alike if the file has one (the
    digest and chain are left as they were: :func:`reseal` recomputes them). Returns the
    batch's number and first seq."""
    conn = sqlite3.connect(path)
    with conn:
        batch, first, stored = conn.execute(
            "SELECT batch, first_seq, events FROM batches WHERE ? BETWEEN first_seq AND last_seq",
            (seq,),
        ).fetchone()
        lines = expand(stored).split(b"\n")
        new = change(lines[seq - first])
        assert new != lines[seq - first]
        if new is None:
            del lines[seq - first]
        else:
            lines[seq - first] = new
        conn.execute(
            "UPDATE batches SET events = ? WHERE batch = ?", (compact(b"\n".join(lines)), batch)
        )
        projected = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchone()
        if projected and new is None:
            conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
        elif projected:
            fields = orjson.loads(new)
            columns = ", ".join(f"{name} = ?" for name in TYPED_FIELDS[1:])
            conn.execute(
                f"UPDATE events SET {columns}, payload = ? WHERE seq = ?",
                (*fields[1 : len(TYPED_FIELDS)], new.decode(), seq),
            )
    conn.close()
    return batch, first


def reseal(path):
    """Recompute every batch digest and chain: a consistent rewrite, which the store check
    cannot tell from a genuine log."""
    conn = sqlite3.connect(path)
    with conn:
        chain = ZERO_CHAIN
        for batch, stored in conn.execute(
            "SELECT batch, events FROM batches ORDER BY batch"
        ).fetchall():
            digest = hashlib.sha256(stored).hexdigest()  # of the stored bytes (schema 5)
            chain = hashlib.sha256(bytes.fromhex(chain) + bytes.fromhex(digest)).hexdigest()
            conn.execute(
                "UPDATE batches SET digest = ?, chain = ? WHERE batch = ?", (digest, chain, batch)
            )
    conn.close()


def test_an_edited_session_seed_is_found_by_the_store_check_either_way(log, helpers):
    # the sessions row must say what the log's SessionStarted says
    edit(log, "UPDATE sessions SET seed = seed + 1")
    in_line, beside = both_ways(log, helpers)
    assert not in_line.ok and "sessions.seed disagrees" in in_line.problems[0]
    assert beside == in_line


def test_a_log_the_commands_did_not_produce_fails_re_execution_either_way(log, helpers):
    # one trader fewer everywhere, resealed: the store checks out, only re-execution can tell
    edit(log, "UPDATE sessions SET config = replace(config, '\"traders\":5', '\"traders\":4')")
    edit_event(log, 1, lambda line: line.replace(b'"traders":5', b'"traders":4'))
    reseal(log)
    assert verify_store(log).ok
    in_line, beside = both_ways(log, helpers)
    assert not in_line.ok and "re-execution differs" in in_line.problems[0]
    assert beside == in_line


def _more_qty(line: bytes) -> bytes:
    fields = orjson.loads(line)
    fields[8] += 1
    return orjson.dumps(fields)


def test_a_forged_fill_gives_the_same_verdict_either_way(log, helpers):
    with EventStore.open(log) as store:
        seq = [e.seq for e in store.events(kind="Fill")][3]
    edit_event(log, seq, _more_qty)
    in_line, beside = both_ways(log, helpers)
    assert not in_line.ok and beside == in_line


def test_a_log_shorter_than_check_aside_after_is_checked_in_line(log, helpers):
    assert session.verify(log, check_aside_after=10**9).ok
    assert helpers == []


def test_verify_checks_in_line_when_no_helper_can_start(log, monkeypatch):
    monkeypatch.setattr(StoreCheck, "start", staticmethod(lambda path: None))
    assert session.verify(log, check_aside_after=0) == session.verify(log, check_aside_after=None)


def test_a_helper_that_dies_without_a_report_leaves_the_check_to_verify(log, monkeypatch):
    expected = session.verify(log, check_aside_after=None)
    monkeypatch.setattr(sys, "executable", "/bin/false")  # starts, exits at once, says nothing
    assert session.verify(log, check_aside_after=0) == expected


def test_every_stage_reaches_the_end_with_the_store_check_beside(log):
    calls = []
    verdict = session.verify(log, progress=lambda *c: calls.append(c), check_aside_after=0)
    assert verdict.ok
    for stage in session.VERIFY_STAGES:
        done = [d for s, d, total in calls if s == stage and total == verdict.events]
        assert done and done == sorted(done) and done[-1] == verdict.events, stage


def _helper_of(parent_pid: int) -> int | None:
    """The pid of the store check started by ``parent_pid``, if it is running (Linux /proc)."""
    needle = f"exchange.store.check\0{parent_pid}\0".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (entry / "cmdline").read_bytes():
                    return int(entry.name)
    return None


def _has_its_pipes(pid: int) -> bool:
    """True once the helper holds its own copies of its pipes (fds above 2): ``child_pipes``
    has run, and with it ``die_with``."""
    fds = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        return any(int(fd.name) > 2 and os.readlink(fd).startswith("pipe:") for fd in fds.iterdir())
    return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_store_check_dies_with_the_verify_that_started_it(tmp_path):
    path = session.run(
        "flow", tmp_path / "long.db", seed=4, overrides={**SMALL, "messages": 10_000}
    ).path
    script = f"from exchange import session; session.verify({path!r}, check_aside_after=0)"
    parent = subprocess.Popen([sys.executable, "-c", script])
    helper = None
    try:
        deadline = time.monotonic() + 30
        while helper is None or not _has_its_pipes(helper):
            assert time.monotonic() < deadline, "no store check started"
            assert parent.poll() is None, "verify ended before its store check was seen"
            helper = _helper_of(parent.pid)
        # frozen, it cannot end by itself: only its parent's death can end it now
        os.kill(helper, signal.SIGSTOP)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(helper):
            assert time.monotonic() < deadline, "the store check outlived its verify"
            time.sleep(0.01)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if helper is not None and _alive(helper):
            os.kill(helper, signal.SIGKILL)  # the test failed: leave nothing behind
