"""The journaller: a second process that folds and commits a run's batches.

What it must never change is the log; what it must never lose is a committed batch or an
error. Runs here force the hand-over (the run waits for the journaller to be ready instead of
going on in line meanwhile), so that every test exercises the process it is about.
"""

import hashlib
import os
import pickle
import signal
import sqlite3
import sys
import threading
import time
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from exchange.core.events import Event, encode
from exchange.sessions import session
from exchange.store.compact import expand
from exchange.store.event_store import INDEXES, EventStore, StoreError, verify_store
from exchange.store.fold import Fold
from exchange.store.helper import Channel
from exchange.store.journal import JournalError, Journaller, serve

FLOW = {"messages": 3_000, "traders": 5}
BATCH = 200
SNAPSHOT_EVERY = 2_000
#: SQLite's file change counter and its copy (header bytes 24-27 and 92-95)
CHANGE_COUNTER = (range(24, 28), range(92, 96))


@pytest.fixture
def hand_overs(monkeypatch):
    """Make the run wait for its journaller (not go on in line while it starts) and count
    the hand-overs and the journallers started."""
    seen = {"hand_overs": [], "spawned": []}
    ready, hand_over, spawn = Journaller.ready, Journaller.hand_over, Journaller.spawn

    def waiting_ready(self):
        self._from.poll(30)
        return ready(self)

    def counting_hand_over(self, path, snapshot_every, fold):
        seen["hand_overs"].append(fold.seq)
        return hand_over(self, path, snapshot_every, fold)

    def counting_spawn():
        journaller = spawn()
        seen["spawned"].append(journaller)
        return journaller

    monkeypatch.setattr(Journaller, "ready", waiting_ready)
    monkeypatch.setattr(Journaller, "hand_over", counting_hand_over)
    monkeypatch.setattr(Journaller, "spawn", staticmethod(counting_spawn))
    return seen


def record(path, journal_after, seed=5, **options):
    return session.run(
        "flow",
        path,
        seed=seed,
        overrides=FLOW,
        batch_size=BATCH,
        snapshot_every=SNAPSHOT_EVERY,
        journal_after=journal_after,
        **options,
    )


def tables(path):
    """Every row of every table, in order: what a log holds, whatever wrote it."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master ORDER BY name")]
        schema = con.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        rows = {
            name: con.execute(f'SELECT * FROM "{name}" ORDER BY rowid').fetchall()
            for name in names
            if not name.startswith(("idx_", "sqlite_"))
        }
        return schema, rows
    finally:
        con.close()


def outside_the_change_counter(path):
    data = bytearray(Path(path).read_bytes())
    for span in CHANGE_COUNTER:
        for i in span:
            data[i] = 0
    return bytes(data)


@pytest.mark.parametrize("seed", [1, 5])
def test_a_log_recorded_by_the_journaller_is_the_log_recorded_in_line(
    tmp_path, hand_overs, seed, monkeypatch
):
    sent = []
    send = Journaller._send

    def keeping_send(self, message):
        if message[0] == "batch":
            sent.append(message[1:])
        elif message[0] == "ring":  # the blobs are in the buffer shared with the journaller
            for first, count, offset, size, _end, stored in message[1]:
                sent.append((self._ring.map[offset : offset + size], first, count, stored))
        return send(self, message)

    monkeypatch.setattr(Journaller, "_send", keeping_send)
    in_line = record(tmp_path / "in-line.db", None, seed)
    journalled = record(tmp_path / "journal.db", 0, seed)
    assert hand_overs["hand_overs"], "the journaller never took over"
    assert journalled.state_hash == in_line.state_hash
    assert tables(tmp_path / "journal.db") == tables(tmp_path / "in-line.db")
    # each batch travelled as its blob (the compiled engine's: its stored form already,
    # decision 106), with its first seq and count (no digest: schema 5's is the stored form's,
    # computed by the journaller's store): the journaller stored (the compact form of) what
    # it was sent, nothing decoded into events or encoded again, under the digest of the
    # bytes stored
    stored = {row[1]: row for row in tables(tmp_path / "journal.db")[1]["batches"]}
    assert len(sent) >= 10
    for blob, first, count, compacted in sent:
        _batch, _first, last, events, stored_digest, _chain = stored[first]
        assert type(blob) is bytes and last - first + 1 == count
        if compacted:
            assert blob == events and stored_digest == sha256(events)
        else:
            assert expand(events) == blob and stored_digest == sha256(events) != sha256(blob)
    assert all(compacted for *_, compacted in sent)  # the compiled engine's lines
    # page for page the same file, but for SQLite's count of writing connections
    assert outside_the_change_counter(tmp_path / "journal.db") == outside_the_change_counter(
        tmp_path / "in-line.db"
    )
    assert not Path(f"{tmp_path / 'journal.db'}-wal").exists()  # closed to a single file


def test_the_file_does_not_depend_on_when_the_journaller_took_over(tmp_path, hand_overs):
    record(tmp_path / "early.db", 0)
    record(tmp_path / "late.db", 6_000)
    early, late = hand_overs["hand_overs"]
    assert early < late
    assert (tmp_path / "early.db").read_bytes() == (tmp_path / "late.db").read_bytes()


def test_a_run_shorter_than_journal_after_starts_no_journaller(tmp_path, hand_overs):
    summary = record(tmp_path / "short.db", 10**9)
    assert summary.events > 0
    assert hand_overs["spawned"] == []


def test_a_run_whose_pace_projects_a_long_run_starts_its_journaller_early(
    tmp_path, hand_overs, monkeypatch
):
    # the flow's 3,000 messages make ~10,000 events spread evenly over its simulated time:
    # past 1,000 events, its pace projects ~10,000 by the end
    monkeypatch.setattr(session, "EARLY_JOURNAL_AFTER", 1_000)
    monkeypatch.setattr(session, "LONG_RUN_EVENTS", 5_000)
    long = record(tmp_path / "long.db", 10**9)
    assert len(hand_overs["hand_overs"]) == 1
    assert 1_000 <= hand_overs["hand_overs"][0] < 2_000  # the first batch past 1,000
    monkeypatch.setattr(session, "LONG_RUN_EVENTS", 50_000)  # projects short: no early start
    short = record(tmp_path / "short.db", 10**9)
    assert len(hand_overs["spawned"]) == 1
    assert short.events == long.events
    assert tables(tmp_path / "long.db") == tables(tmp_path / "short.db")


def test_an_early_start_never_delays_an_earlier_journal_after(tmp_path, hand_overs, monkeypatch):
    monkeypatch.setattr(session, "EARLY_JOURNAL_AFTER", 1_000)
    monkeypatch.setattr(session, "LONG_RUN_EVENTS", 5_000)
    record(tmp_path / "early.db", 0)
    assert hand_overs["hand_overs"][0] < 1_000


def test_a_run_known_to_be_long_starts_its_journaller_before_its_first_event(
    tmp_path, hand_overs, monkeypatch
):
    """A flow run says how long it will be before it starts (its messages, each answered by
    one event or more): one at or past ``LONG_RUN_EVENTS`` starts its journaller at its first
    drain, before any batch, and hands over after the run's first batch once it is up; the
    file is the one a journaller taking over later writes."""
    batches, spawned_after = [], []
    spawn = Journaller.spawn

    def noting_spawn():
        spawned_after.append(len(batches))
        return spawn()

    monkeypatch.setattr(Journaller, "spawn", staticmethod(noting_spawn))
    monkeypatch.setattr(session, "LONG_RUN_EVENTS", FLOW["messages"])
    known = record(tmp_path / "known.db", session.DEFAULT_JOURNAL_AFTER, on_batch=batches.append)
    assert spawned_after == [0]  # before its first batch
    # the run commits its first batch itself (the file is the same whenever the journaller
    # takes over: SQLite counts the connections that wrote), the journaller the next ones
    assert hand_overs["hand_overs"] == [BATCH]
    batches.clear()
    late = record(tmp_path / "late.db", 6_000, on_batch=batches.append)  # kept as given
    # started by the batch that reaches 6,000 (before its on_batch), handed over after it
    assert spawned_after[1] == 6_000 // BATCH - 1 and hand_overs["hand_overs"][1] == 6_000
    assert known.events == late.events > FLOW["messages"]
    assert (tmp_path / "known.db").read_bytes() == (tmp_path / "late.db").read_bytes()
    monkeypatch.setattr(session, "LONG_RUN_EVENTS", FLOW["messages"] + 1)  # projects short
    record(tmp_path / "short.db", session.DEFAULT_JOURNAL_AFTER)
    assert len(spawned_after) == 2  # no journaller for it (its ~10,000 events < 100,000)


def failing_at(n: int):
    """An ``on_batch`` that raises at its ``n``-th call (a progress bar that breaks)."""
    calls = []

    def fail(count):
        calls.append(count)
        if len(calls) == n:
            raise RuntimeError("the progress bar broke")

    return fail


def test_a_run_known_to_be_long_that_fails_resumes_to_the_same_log(
    tmp_path, hand_overs, monkeypatch
):
    """The early journaller takes over a resumed run too, once the run has caught up with
    the log and committed a batch of its own; the resumed log is the uninterrupted one."""
    monkeypatch.setattr(session, "LONG_RUN_EVENTS", FLOW["messages"])
    path = tmp_path / "failed.db"
    with pytest.raises(RuntimeError, match="progress bar"):
        record(path, session.DEFAULT_JOURNAL_AFTER, on_batch=failing_at(10))
    with EventStore.open(path) as store:
        assert store.last_seq == 10 * BATCH  # the journaller committed what it was sent
    resumed = session.run("flow", path, resume=True)
    assert hand_overs["hand_overs"] == [BATCH, 11 * BATCH]  # after a batch of the run's own
    reference = record(tmp_path / "reference.db", None)
    assert resumed.state_hash == reference.state_hash
    assert tables(path) == tables(tmp_path / "reference.db")


def test_a_flow_run_makes_at_least_one_event_a_message(tmp_path):
    """``projected_events``'s floor for ``flow``: malformed commands, cash moves and all."""
    model = session.load_scenario("flow", {**FLOW, "malformed_every": 2, "cash_every": 3})
    assert session.projected_events(model) == FLOW["messages"]
    summary = session.run("flow", tmp_path / "f.db", model=model, journal_after=None)
    assert summary.events >= FLOW["messages"]
    assert session.projected_events(session.load_scenario("products")) is None


def test_a_run_records_in_line_when_no_journaller_process_can_start(tmp_path, monkeypatch):
    reference = record(tmp_path / "ref.db", None)
    monkeypatch.setattr(Journaller, "spawn", staticmethod(lambda: None))
    summary = record(tmp_path / "no-process.db", 0)
    assert summary.state_hash == reference.state_hash
    assert tables(tmp_path / "no-process.db") == tables(tmp_path / "ref.db")


def test_a_journaller_that_dies_on_its_way_up_leaves_the_run_in_line(tmp_path, monkeypatch):
    reference = record(tmp_path / "ref.db", None)
    monkeypatch.setattr(sys, "executable", "/bin/false")  # exits at once, never ready
    summary = record(tmp_path / "dead.db", 0)
    assert summary.state_hash == reference.state_hash
    assert tables(tmp_path / "dead.db") == tables(tmp_path / "ref.db")


def _resumed_equals_reference(tmp_path, path):
    reference = record(tmp_path / "reference.db", None)
    assert verify_store(path).ok
    assert session.verify(path).ok  # the committed prefix re-executes
    resumed = session.run("flow", path, resume=True)
    assert resumed.state_hash == reference.state_hash
    assert tables(path)[1]["batches"] == tables(tmp_path / "reference.db")[1]["batches"]


def test_a_run_whose_journaller_is_killed_fails_clearly_and_resumes_to_the_same_log(
    tmp_path, hand_overs
):
    path = tmp_path / "killed.db"
    batches = []

    def kill_the_journaller(_n):
        batches.append(_n)
        if len(batches) == 8:
            # once it has committed something, so that the kill lands inside the log
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            deadline = time.monotonic() + 30
            while not con.execute("SELECT last_seq FROM sessions").fetchone()[0]:
                assert time.monotonic() < deadline, "the journaller committed nothing in 30 s"
                time.sleep(0.001)
            con.close()
            os.kill(hand_overs["spawned"][0]._proc.pid, signal.SIGKILL)

    with pytest.raises(session.SessionError, match="journaller process exited"):
        record(path, 0, on_batch=kill_the_journaller)
    with EventStore.open(path) as store:
        assert store.session["status"] == "running"
        # it may have committed every batch it was sent before the kill, never one more
        assert 0 < store.last_seq <= 8 * BATCH and store.last_seq % BATCH == 0
    _resumed_equals_reference(tmp_path, path)


def test_an_error_of_the_run_after_the_hand_over_closes_the_file_as_in_line(tmp_path, hand_overs):
    path = tmp_path / "failed.db"
    with pytest.raises(RuntimeError, match="progress bar"):
        record(path, 0, on_batch=failing_at(10))
    assert hand_overs["hand_overs"]
    # the journaller committed what it was sent, then the run's store closed the file
    assert not Path(f"{path}-wal").exists()
    with EventStore.open(path) as store:
        assert store.last_seq == 10 * BATCH
        indexes = {r[0] for r in store._conn.execute("SELECT name FROM sqlite_master")}
        assert not any(name.startswith("idx_events_") for name in indexes)  # `gpuex index`'s
    _resumed_equals_reference(tmp_path, path)


#: loaded by the journaller at start-up (``sitecustomize``): an index build there would fail as
#: SQLite fails on a full disk, and leave a mark that it was tried
FULL_DISK_IN_THE_JOURNALLER = """\
import pathlib
import sqlite3

from exchange.store.event_store import EventStore


def full_disk(self):
    pathlib.Path(__file__).with_name("failed").touch()
    raise sqlite3.OperationalError("database or disk is full")


EventStore._build_indexes = full_disk
"""


def _full_disk_in_the_journaller(tmp_path, patch):
    """Make an index build in the journaller fail; returns the file a try would create."""
    return _journaller_start_up_hook(tmp_path, patch, FULL_DISK_IN_THE_JOURNALLER) / "failed"


def _journaller_start_up_hook(tmp_path, patch, source):
    """Have every journaller started from now on run ``source`` at start-up (as its
    ``sitecustomize``); returns the hook's folder."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(source)
    here = os.environ.get("PYTHONPATH")
    patch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(hook), here) if p))
    return hook


def _record_in_thread(tmp_path, result):
    """``record(run.db, 0)`` on a thread (its summary into ``result["s"]``), joined for at
    most 60 s: the thread, alive if the run is still waiting."""
    run = threading.Thread(target=lambda: result.update(s=record(tmp_path / "run.db", 0)))
    run.start()
    run.join(60)
    return run


def _full_disk(self):
    raise sqlite3.OperationalError("database or disk is full")


def _same_file_as_an_uninterrupted_run(tmp_path, path, events, state_hash):
    reference = record(tmp_path / "reference.db", None)
    assert (events, state_hash) == (reference.events, reference.state_hash)
    with EventStore.open(path) as store:
        assert len(store.missing_indexes()) == len(INDEXES)  # a run builds none
    assert outside_the_change_counter(path) == outside_the_change_counter(tmp_path / "reference.db")


def test_neither_the_journaller_nor_the_run_builds_the_indexes(tmp_path, hand_overs, monkeypatch):
    """The post-mortem indexes are off the run's critical path (issue #20): an index build
    that would fail (a full disk) in the journaller or in the run is never tried, the log is
    sealed and sound, the same file as an uninterrupted run's, and `gpuex index` (here
    ``build_indexes``) builds them afterwards."""
    path = tmp_path / "full-disk.db"
    with monkeypatch.context() as patch:
        tried = _full_disk_in_the_journaller(tmp_path, patch)
        patch.setattr(EventStore, "_build_indexes", _full_disk)
        summary = record(path, 0)
    assert hand_overs["hand_overs"], "the journaller never took over"
    assert not tried.exists(), "the journaller tried an index build"
    assert not Path(f"{path}-wal").exists()
    with EventStore.open(path) as store:
        assert store.session["status"] == "finished"
    assert session.verify(path).ok
    _same_file_as_an_uninterrupted_run(tmp_path, path, summary.events, summary.state_hash)
    with EventStore.open(path, mode="a") as store:
        assert store.build_indexes() == [f"idx_events_{'_'.join(c)}" for c in INDEXES]
        assert store.missing_indexes() == []


def _events(first, last, t0=1):
    return [
        Event(
            seq,
            t0 + seq,
            "CommandReceived",
            None,
            "a",
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            {},
        )
        for seq in range(first, last + 1)
    ]


@pytest.fixture
def handed_off_store(tmp_path):
    store = EventStore.create(
        tmp_path / "s.db", scenario="unit", seed=1, config={}, code_version="test"
    )
    store.append(_events(1, 3))
    store.hand_off()
    yield store
    store.close()


def _journaller_for(store):
    journaller = Journaller.spawn()
    assert journaller is not None
    journaller._from.poll(30)
    assert journaller.ready()
    journaller.hand_over(store, 0, Fold().apply_all(_events(1, 3)))
    return journaller


def test_the_journallers_refusal_of_a_batch_reaches_the_run_with_its_reason(handed_off_store):
    journaller = _journaller_for(handed_off_store)
    journaller.record(_events(4, 5))
    # a blob that does not follow the log (the run's own check passed: sent as it is): the
    # journaller's fold refuses it, in the other process
    journaller._send(("batch", encode(_events(7, 7)[0]) + b"\n", 7, 1))
    with pytest.raises(ValueError, match="events out of order") as caught:
        journaller.finish(8, "whatever")
    assert any("journaller process" in note for note in caught.value.__notes__)
    journaller.close()
    with EventStore.open(handed_off_store.path) as store:
        assert store.last_seq == 5  # what came before the refused batch is committed


def test_the_journaller_seals_only_a_log_whose_fold_matches_the_live_state(handed_off_store):
    journaller = _journaller_for(handed_off_store)
    journaller.record(_events(4, 5))
    with pytest.raises(JournalError, match="disagrees with the live state"):
        journaller.finish(5, "not the state hash")
    journaller.close()
    with EventStore.open(handed_off_store.path) as store:
        assert store.session["status"] == "running" and store.last_seq == 5


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="no shared buffer: the pipe only")
def test_a_blob_written_where_the_journaller_reserved_is_committed_and_checked_as_sent(
    handed_off_store,
):
    journaller = _journaller_for(handed_off_store)
    batch = _events(4, 6)
    blob = b"".join(encode(e) + b"\n" for e in batch)
    with pytest.raises(ValueError, match="no place reserved"):
        journaller.record_placed(4, 3)
    assert journaller.reserve(journaller._ring.size // 4 + 1) is None  # down the pipe
    buffer, offset = journaller.reserve(len(blob))
    buffer[offset : offset + len(blob)] = blob
    with pytest.raises(ValueError, match="does not continue the log"):
        journaller.record_placed(5, 2)  # nothing sent: the place is still reserved
    journaller.record_placed(4, 3)
    fold = Fold().apply_all(_events(1, 6))
    journaller.finish(7, fold.state_hash())
    with EventStore.open(handed_off_store.path) as store:
        assert store.session["status"] == "finished"
        assert list(store.events()) == _events(1, 6)


def test_a_store_handed_off_refuses_appends_and_still_closes_the_file(tmp_path):
    store = EventStore.create(tmp_path / "h.db", scenario="u", seed=1, config={}, code_version="t")
    store.append(_events(1, 2))
    store.hand_off()
    with pytest.raises(StoreError, match="handed off"):
        store.append(_events(3, 3))
    other = EventStore.open(tmp_path / "h.db", mode="a")
    other.append(_events(3, 4))
    other.detach()  # as a crash: the other writer leaves the closing to the first
    assert Path(f"{tmp_path / 'h.db'}-wal").exists()
    store.close()
    assert not Path(f"{tmp_path / 'h.db'}-wal").exists()
    with EventStore.open(tmp_path / "h.db") as reopened:
        assert reopened.last_seq == 4
    assert verify_store(tmp_path / "h.db").ok


def test_a_detached_writer_leaves_the_log_unsealed_and_unindexed(tmp_path):
    store = EventStore.create(tmp_path / "d.db", scenario="u", seed=1, config={}, code_version="t")
    store.append(_events(1, 2))
    store.detach()
    store.detach()  # idempotent
    con = sqlite3.connect(tmp_path / "d.db")
    try:
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
        status = con.execute("SELECT status FROM sessions").fetchone()[0]
    finally:
        con.close()
    assert status == "running"
    assert not any(name.startswith("idx_events_") for name in names)


def test_the_journaller_runs_this_package_whatever_the_working_directory(
    tmp_path, monkeypatch, hand_overs
):
    shadow = tmp_path / "cwd" / "exchange"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise SystemExit('a different exchange package')\n")
    monkeypatch.chdir(shadow.parent)
    reference = record(tmp_path / "ref.db", None)
    summary = record(tmp_path / "shadowed.db", 0)
    assert hand_overs["hand_overs"], "the journaller did not start"
    assert summary.state_hash == reference.state_hash


def _serve_in_thread(requests_end, replies_end):
    status = {}
    thread = threading.Thread(target=lambda: status.update(code=serve(requests_end, replies_end)))
    thread.start()
    return thread, status


def test_a_journaller_whose_run_vanishes_commits_what_it_got_and_leaves_the_log_unsealed(
    handed_off_store,
):
    # where there is no PR_SET_PDEATHSIG, the end of the pipe is how the journaller learns
    # that its run died: it must stop there and leave the file as a crash would
    requests_end, run_side = Pipe(duplex=False)
    replies_run, replies_end = Pipe(duplex=False)
    thread, status = _serve_in_thread(requests_end, replies_end)
    assert pickle.loads(replies_run.recv_bytes()) == ("ready",)
    fold = Fold().apply_all(_events(1, 3))
    run_side.send_bytes(pickle.dumps(("start", str(handed_off_store.path), 0, fold.to_json())))
    blob = b"".join(encode(e) + b"\n" for e in _events(4, 6))
    run_side.send_bytes(pickle.dumps(("batch", blob, 4, 3)))
    run_side.close()  # the run is gone
    thread.join(30)
    assert status == {"code": 0}
    with EventStore.open(handed_off_store.path) as store:
        assert store.last_seq == 6 and store.session["status"] == "running"
        names = {r[0] for r in store._conn.execute("SELECT name FROM sqlite_master")}
    assert not any(name.startswith("idx_events_") for name in names)  # as a crash leaves it


def test_a_journaller_answers_a_message_it_does_not_know_with_an_error(handed_off_store):
    requests_end, run_side = Pipe(duplex=False)
    replies_run, replies_end = Pipe(duplex=False)
    thread, status = _serve_in_thread(requests_end, replies_end)
    assert pickle.loads(replies_run.recv_bytes()) == ("ready",)
    run_side.send_bytes(pickle.dumps(("rewind", 3)))
    tag, pickled, text = pickle.loads(replies_run.recv_bytes())
    thread.join(30)
    assert status == {"code": 1}
    assert tag == "error" and "unknown message 'rewind'" in text
    assert isinstance(pickle.loads(pickled), JournalError)


def test_a_journaller_whose_run_has_already_ended_exits_quietly():
    """A short run may end before its journaller is up: the journaller's first reply then
    meets a closed pipe, and it exits with status 0 instead of a traceback on stderr."""
    from multiprocessing import Pipe

    from exchange.store.journal import serve

    requests, _to_journaller = Pipe(duplex=False)
    from_journaller, replies = Pipe(duplex=False)
    from_journaller.close()  # the run is gone
    assert serve(requests, replies) == 0


def test_the_run_never_waits_on_the_pipe_while_the_journaller_commits(
    handed_off_store, monkeypatch
):
    """The journaller reads the run's batches ahead while it commits one (a checkpoint, an
    fsync: up to 0.1 s measured), so the run does not wait on a full pipe meanwhile; every
    batch read ahead is then committed, in order."""
    from exchange.store.journal import _ThreadedJournal

    committing = threading.Event()
    go_on = threading.Event()
    record_blobs = _ThreadedJournal.record_blobs

    def slow_record_blobs(self, blobs, stored=False):
        committing.set()
        assert go_on.wait(60), "never let go on"
        return record_blobs(self, blobs, stored)

    monkeypatch.setattr(_ThreadedJournal, "record_blobs", slow_record_blobs)
    requests_end, run_side = Pipe(duplex=False)  # an OS pipe: 64 KiB
    replies_run, replies_end = Pipe(duplex=False)
    thread, status = _serve_in_thread(requests_end, replies_end)
    assert pickle.loads(replies_run.recv_bytes()) == ("ready",)
    fold = Fold().apply_all(_events(1, 3))
    run_side.send_bytes(pickle.dumps(("start", str(handed_off_store.path), 0, fold.to_json())))
    batches = [_events(first, first + 99) for first in range(4, 4 + 50 * 100, 100)]
    messages = [
        pickle.dumps(("batch", b"".join(encode(e) + b"\n" for e in b), b[0].seq, len(b)))
        for b in batches
    ]
    assert sum(map(len, messages)) > 4 * 65_536  # more than the pipe holds
    sent = threading.Thread(target=lambda: [run_side.send_bytes(m) for m in messages])
    try:
        sent.start()
        assert committing.wait(30)
        sent.join(30)
        assert not sent.is_alive(), "the run waited on a full pipe while the journaller committed"
    finally:
        go_on.set()
        sent.join(60)
    for b in batches:
        fold.apply_all(b)
    run_side.send_bytes(pickle.dumps(("end", 1, fold.state_hash())))
    assert pickle.loads(replies_run.recv_bytes()) == ("done",)
    thread.join(30)
    assert status == {"code": 0}
    with EventStore.open(handed_off_store.path) as store:
        assert store.last_seq == batches[-1][-1].seq
        assert store.session["status"] == "finished"
        assert [e.seq for e in store.events()] == list(range(1, store.last_seq + 1))


#: loaded by the journaller at start-up (``sitecustomize``): a journaller that takes forever
#: to start (a slow disk, a loaded machine: 0.4-0.9 s is common)
SLOW_START_OF_THE_JOURNALLER = """\
import time

time.sleep(3600)
"""


def test_a_run_that_ends_while_its_journaller_starts_does_not_wait_for_it(tmp_path, monkeypatch):
    """A journaller never given the store holds nothing: the run kills it at its end instead
    of waiting for it to start up and read that the run is over."""
    import exchange.store.journal as journal

    reference = record(tmp_path / "ref.db", None)
    spawned = []
    spawn = Journaller.spawn

    def keeping_spawn():
        journaller = spawn()
        spawned.append(journaller)
        return journaller

    monkeypatch.setattr(Journaller, "spawn", staticmethod(keeping_spawn))
    monkeypatch.setattr(journal, "_EXIT_WAIT_S", 3600.0)
    _journaller_start_up_hook(tmp_path, monkeypatch, SLOW_START_OF_THE_JOURNALLER)
    result = {}
    run = _record_in_thread(tmp_path, result)
    try:
        assert not run.is_alive(), "the run waited for its journaller to start"
    finally:
        for journaller in spawned:
            journaller._proc.kill()
        run.join(60)
    assert len(spawned) == 1 and spawned[0]._proc.returncode == -signal.SIGKILL
    assert result["s"].state_hash == reference.state_hash
    assert tables(tmp_path / "run.db") == tables(tmp_path / "ref.db")


def test_a_hand_off_does_not_wait_for_a_background_checkpoint_under_way(tmp_path):
    """The run hands its store to the journaller without waiting for its checkpoint thread
    to finish a checkpoint (up to 0.09 s measured); its close waits for it, and the file is
    whole."""

    class SlowCheckpoint:
        """The checkpoint thread's lock: entering it is a checkpoint that lasts until
        ``done`` is set."""

        def __init__(self):
            self.started, self.done = threading.Event(), threading.Event()

        def __enter__(self):
            self.started.set()
            assert self.done.wait(60)

        def __exit__(self, *exc_info):
            return False

    store = EventStore.create(tmp_path / "c.db", scenario="u", seed=1, config={}, code_version="t")
    store.append(_events(1, 2))
    checkpoint = store._checkpointer._lock = SlowCheckpoint()
    store._checkpointer.request()
    assert checkpoint.started.wait(30)
    try:
        handing_off = threading.Thread(target=store.hand_off)
        handing_off.start()
        handing_off.join(10)
        assert not handing_off.is_alive(), "the hand-off waited for the checkpoint"
        other = EventStore.open(tmp_path / "c.db", mode="a")  # the next writer appends
        other.append(_events(3, 4))
        other.detach()
    finally:
        checkpoint.done.set()
        handing_off.join(30)
    store.close()
    assert not Path(f"{tmp_path / 'c.db'}-wal").exists()
    with EventStore.open(tmp_path / "c.db") as reopened:
        assert reopened.last_seq == 4
    assert verify_store(tmp_path / "c.db").ok


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def test_a_batch_travels_to_the_journaller_as_its_header_then_its_blob_unpickled():
    """The run writes a batch's blob to the pipe from its own bytes (no copy into a pickle):
    a pickled header ``("batch", None, first, count[, stored])`` (no digest: the journaller's store
    computes it over the stored form), then the blob as a message of its own, both framed as
    ``Connection.send_bytes`` frames them (read here by a ``multiprocessing`` Connection)."""
    read_fd, write_fd = os.pipe()
    journaller_end, run_side = Connection(read_fd, writable=False), Channel(write_fd)
    replies_end, _unused = Pipe(duplex=False)
    journaller = Journaller(None, run_side, replies_end)
    journaller._next_seq, journaller._batch = 4, 2
    blob = b"".join(encode(e) + b"\n" for e in _events(4, 6))
    journaller.record_blob(blob, 4, 3)
    journaller.record(_events(7, 7))
    assert pickle.loads(journaller_end.recv_bytes()) == ("batch", None, 4, 3, False)
    assert journaller_end.recv_bytes() == blob
    line = encode(_events(7, 7)[0]) + b"\n"
    assert pickle.loads(journaller_end.recv_bytes()) == ("batch", None, 7, 1)
    assert journaller_end.recv_bytes() == line
    for conn in (journaller_end, run_side, replies_end, _unused):
        conn.close()


def _beside_a_slow_journaller(tmp_path, monkeypatch, hook: str):
    """``(reference, result, thread)``: the reference run's summary, and a run recording in
    a thread (:func:`_record_in_thread`: its summary put in ``result``) beside a journaller
    that ran ``hook`` at its start-up, the journaller's exit wait made an hour."""
    import exchange.store.journal as journal

    reference = record(tmp_path / "ref.db", None)
    monkeypatch.setattr(journal, "_EXIT_WAIT_S", 3600.0)
    _journaller_start_up_hook(tmp_path, monkeypatch, hook)
    result: dict = {}
    return reference, result, _record_in_thread(tmp_path, result)


#: loaded by the journaller at start-up (``sitecustomize``): an interpreter whose finalisation
#: takes forever (it takes 80-120 ms on a loaded machine)
SLOW_EXIT_OF_THE_JOURNALLER = """\
import atexit
import time

atexit.register(time.sleep, 3600)
"""


def test_a_run_does_not_wait_for_its_journallers_interpreter_to_finalise(
    tmp_path, hand_overs, monkeypatch
):
    """Once the journaller has sealed the store and closed it, it ends its process at once:
    the run, which waits for it to exit, waits for none of the interpreter's finalisation."""
    reference, result, run = _beside_a_slow_journaller(
        tmp_path, monkeypatch, SLOW_EXIT_OF_THE_JOURNALLER
    )
    try:
        assert not run.is_alive(), "the run waited for its journaller's finalisation"
    finally:
        for journaller in hand_overs["spawned"]:
            journaller._proc.kill()
        run.join(60)
    assert hand_overs["hand_overs"], "the journaller never took over"
    assert hand_overs["spawned"][0]._proc.wait(60) == 0  # reaped on a thread of the run
    assert result["s"].state_hash == reference.state_hash
    assert outside_the_change_counter(tmp_path / "run.db") == outside_the_change_counter(
        tmp_path / "ref.db"
    )


#: loaded by the journaller at start-up (``sitecustomize``): a process whose end takes forever
#: once it has sealed and closed the store (the end of a process is 10-12 ms measured)
SLOW_END_OF_THE_JOURNALLER = """\
import os
import time

_exit = os._exit


def slow_exit(code):
    time.sleep(3600)
    _exit(code)


os._exit = slow_exit
"""


def test_a_run_does_not_wait_for_its_journaller_to_exit_after_the_seal(
    tmp_path, hand_overs, monkeypatch
):
    """The journaller closes the store before it says the seal is done: the run closes the
    file (to a single file, as in line) while the journaller's process is still ending."""
    reference, result, run = _beside_a_slow_journaller(
        tmp_path, monkeypatch, SLOW_END_OF_THE_JOURNALLER
    )
    try:
        assert not run.is_alive(), "the run waited for its journaller's exit"
        assert hand_overs["spawned"][0]._proc.poll() is None  # still ending
    finally:
        for journaller in hand_overs["spawned"]:
            journaller._proc.kill()
        run.join(60)
    assert hand_overs["hand_overs"], "the journaller never took over"
    assert hand_overs["spawned"][0]._proc.wait(60) == -signal.SIGKILL
    assert result["s"].state_hash == reference.state_hash
    assert not Path(f"{tmp_path / 'run.db'}-wal").exists()  # closed to a single file
    assert outside_the_change_counter(tmp_path / "run.db") == outside_the_change_counter(
        tmp_path / "ref.db"
    )


_HEAP_PROBE = """
import exchange.store.journal as journal

class Started(Exception):
    pass

def started(parent_pid):
    raise Started

journal.child_pipes = started  # main() up to its pipes, not a journaller's loop
try:
    journal.main(["1"])
except Started:
    pass
block = bytes(1 << 20)  # a blob's size (its bytes inline), above glibc's first mmap threshold
address = id(block)
heap = [line.split()[0] for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]")]
low, high = (int(x, 16) for x in heap[0].split("-"))
print(low <= address < high)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.path.exists("/proc/self/maps"),
    reason="glibc's malloc and /proc: Linux",
)
def test_the_journaller_serves_blob_sized_blocks_from_its_heap():
    """The journaller's main sets glibc's malloc to keep blocks of a blob's size in its heap
    (reused batch after batch) instead of mapping fresh zeroed pages for each: a 1 MiB block
    allocated after main's start lies in the process's ``[heap]``."""
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", _HEAP_PROBE], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "True"
