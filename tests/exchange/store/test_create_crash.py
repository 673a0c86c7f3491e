"""A process killed while it creates a store: no file at the path, or a whole store.

`EventStore.create` once made the store at its path: the switch to WAL committed a header page
on its own before the schema's transaction, so a kill after it left a file with no tables,
and a kill inside it a hot journal over that header, which a read-only open ignored (it took
the header's WAL bytes for a file left in WAL mode, alone) and `--resume` took for a session.
The random-SIGKILL crash test met it twice under load ("not a gpuex event store (no meta
table)"). Here the same kills land deterministically: at every step of a creation, and on the
file such a kill left.
"""

from __future__ import annotations

import json
import sqlite3
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from exchange.sessions import session
from exchange.store.event_store import EventStore, StoreError, verify_store

STORE = {"scenario": "flow", "seed": 1, "config": {"a": 1}, "code_version": "t"}

#: One process, alone with its main thread, forks a child per step of a creation; the child
#: creates ``DIR/<k>/x.db`` and dies (``os._exit``, as a SIGKILL: nothing is closed or
#: flushed) just before its ``k``-th step: an SQL statement begun on any connection (but a
#: SELECT, of which sqlite-utils runs dozens: a kill before one leaves what a kill before the
#: next statement leaves), or a call of ``os.fsync``/``os.replace``. The first child that gets
#: to the end of the creation exits 0 and ends the walk; every step has then been a kill point.
KILL_AT_EVERY_STEP = textwrap.dedent(
    """
    import json, os, sqlite3, sys
    from exchange.store.event_store import EventStore
    root = sys.argv[1]
    def die_at(k):
        done = [0]  # steps taken
        def step(sql=""):
            if sql.lstrip().lower().startswith("select"):
                return
            if done[0] == k:
                os._exit(9)
            done[0] += 1
        connect = sqlite3.connect
        def traced(*args, **kwargs):
            conn = connect(*args, **kwargs)
            conn.set_trace_callback(step)
            return conn
        sqlite3.connect = traced
        for name in ("fsync", "replace"):
            def call(*args, _call=getattr(os, name)):
                step()
                return _call(*args)
            setattr(os, name, call)
    for k in range(500):
        folder = os.path.join(root, str(k))
        os.mkdir(folder)
        pid = os.fork()
        if pid == 0:
            die_at(k)
            EventStore.create(os.path.join(folder, "x.db"), **json.loads(sys.argv[2]))
            os._exit(0)  # created, and left open
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        if status == 0:
            print(k)
            sys.exit(0)
        assert status == 9, status
    sys.exit("the creation never ended")
    """
)


def _whole_new_store(db: Path) -> None:
    with EventStore.open(db, mode="r") as store:
        assert store.session["status"] == "running" and store.last_seq == 0
        assert store.session["scenario"] == STORE["scenario"]
    assert verify_store(db).ok


def test_a_creation_killed_at_any_step_leaves_no_file_at_the_path_or_a_whole_store(tmp_path):
    walked = subprocess.run(
        [sys.executable, "-c", KILL_AT_EVERY_STEP, str(tmp_path), json.dumps(STORE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert walked.returncode == 0, walked.stderr
    steps = int(walked.stdout)
    outcomes = []
    for k in range(steps + 1):
        db = tmp_path / str(k) / "x.db"
        if db.exists():
            _whole_new_store(db)  # opens as it lies: no hot journal, no shell
            assert session.committed_session(db) is not None
            with EventStore.open(db, mode="a"):  # and a resume continues it
                pass
            outcomes.append("store")
        else:
            with pytest.raises(FileNotFoundError):
                EventStore.open(db, mode="r")
            assert session.committed_session(db) is None
            EventStore.create(db, **STORE).close()  # a fresh run, over what the kill left
            _whole_new_store(db)
            assert sorted(p.name for p in db.parent.iterdir()) == ["x.db"]
            outcomes.append("none")
    # the walk met both: kills before the store was whole, then only after (once at its
    # path, a store stays there)
    first = outcomes.index("store")
    assert first > 0 and outcomes[first:] == ["store"] * (len(outcomes) - first), outcomes


def _killed_inside_the_wal_switch_of_an_empty_file(db: Path) -> None:
    """The files a creation killed inside ``PRAGMA journal_mode=WAL`` on its new, empty file
    left (as found by the kill loop below on the old ``create``): the new header page (WAL
    bytes 2, 2; no table) written, and the hot journal of that switch, whose header
    (https://www.sqlite.org/fileformat.html#the_rollback_journal) says the file had 0 pages
    before it."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA page_size=16384")
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.close()
    assert db.read_bytes()[18:20] == b"\x02\x02"
    magic = bytes.fromhex("d9d505f920a163d7")
    header = magic + struct.pack(">IIIII", 0, 0x000AD31B, 0, 512, 16_384)  # nRec .. page size
    db.with_name(db.name + "-journal").write_bytes(header.ljust(512, b"\x00"))


def test_a_file_killed_inside_its_creations_wal_switch_is_read_rolled_back(tmp_path):
    db = tmp_path / "x.db"
    _killed_inside_the_wal_switch_of_an_empty_file(db)
    plain = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):  # SQLite: a hot journal
        plain.execute("SELECT count(*) FROM sqlite_master").fetchone()
    plain.close()
    # rolled back, it is the empty file it was; the reader says so, and what to do
    with pytest.raises(StoreError, match=r"holds no event log .* `gpuex run --resume`"):
        EventStore.open(db, mode="r")
    assert db.stat().st_size == 0
    assert not db.with_name(db.name + "-journal").exists()


def test_a_file_killed_inside_its_creations_wal_switch_holds_no_session_and_resumes_afresh(
    tmp_path,
):
    db = tmp_path / "x.db"
    _killed_inside_the_wal_switch_of_an_empty_file(db)
    assert session.committed_session(db) is None  # was: StoreError "no meta table"
    assert list(tmp_path.iterdir()) == []  # the shell and its journal, removed
    EventStore.create(db, **STORE).close()
    _whole_new_store(db)


def test_a_file_with_no_tables_is_refused_as_holding_no_event_log(tmp_path):
    db = tmp_path / "x.db"
    sqlite3.connect(db).close()  # an empty SQLite file, as the old create's kills left
    with pytest.raises(StoreError, match="holds no event log"):
        EventStore.open(db, mode="r")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(StoreError, match="no meta table"):  # another program's file
        EventStore.open(other, mode="r")


#: One process, alone with its main thread, forks a child per kill: the child creates
#: ``DIR/<k>/x.db`` (and waits, the store open), the process SIGKILLs it after a random delay
#: (seeded) within the creation's first 20 ms.
KILL_AT_RANDOM_MOMENTS = textwrap.dedent(
    """
    import json, os, random, signal, sys, time
    from exchange.store.event_store import EventStore
    root, store = sys.argv[1], json.loads(sys.argv[2])
    kills, rng = int(sys.argv[3]), random.Random(int(sys.argv[4]))
    for k in range(kills):
        folder = os.path.join(root, str(k))
        os.mkdir(folder)
        delay = rng.uniform(0.0, 0.02)
        pid = os.fork()
        if pid == 0:
            EventStore.create(os.path.join(folder, "x.db"), **store)
            time.sleep(60)
            os._exit(0)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    """
)


@pytest.mark.acceptance
def test_sigkill_during_creation_at_random_moments_under_load_leaves_no_file_or_a_store(
    tmp_path,
):
    """The kill loop the deterministic tests above stand for: 500 SIGKILLs at random moments
    of a creation, with a busy process loading the machine."""
    kills = 500
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        subprocess.run(
            [sys.executable, "-c", KILL_AT_RANDOM_MOMENTS, str(tmp_path), json.dumps(STORE)]
            + [str(kills), "20261205"],
            check=True,
            timeout=600,
        )
    finally:
        burner.kill()
        burner.wait()
    outcomes = set()
    for k in range(kills):
        db = tmp_path / str(k) / "x.db"
        if db.exists():
            _whole_new_store(db)
            assert session.committed_session(db) is not None
            outcomes.add("store")
        else:
            assert session.committed_session(db) is None
            EventStore.create(db, **STORE).close()
            _whole_new_store(db)
            outcomes.add("none")
    assert outcomes == {"store", "none"}
