"""Tampered logs: `verify` finds and locates damage in the indexes, the sessions table and
truncated index pages; every read command (replay, inspect, export, report, verify) stops
on a damaged batch with one line naming the seq, never a traceback, never a wrong answer;
the commands that read the projection (inspect, report, verify) stop on a damaged
projection row the same way, and those that read the blobs only (replay, export) are not
misled by it.

The log is the SPIRAL ``products`` session (19,334 events, two defaults), copied per test.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from exchange.cli import EXIT_UNFINISHED, main
from exchange.sessions import session
from exchange.store.event_store import EventStore, verify_store
from tests.exchange.conftest import SPIRAL
from tests.exchange.store.test_store_check import edit_event, reseal


# ------------------------------------------------------------------ helpers
def btree_pages(path: Path, name: str) -> tuple[list[int], int]:
    """The page numbers (1-based) of the b-tree of table or index ``name``, walked from its
    root page in the file's bytes (leaves and interior pages), and the page size."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    conn.close()
    data = path.read_bytes()
    size = int.from_bytes(data[16:18], "big")
    size = 65_536 if size == 1 else size
    pages, todo = [], [root[0]]
    while todo:
        page = todo.pop()
        pages.append(page)
        base = (page - 1) * size
        head = base + (100 if page == 1 else 0)
        if data[head] in (0x0A, 0x0D):  # a leaf
            continue
        cells = int.from_bytes(data[head + 3 : head + 5], "big")
        todo.append(int.from_bytes(data[head + 8 : head + 12], "big"))  # right-most child
        for k in range(cells):
            cell = int.from_bytes(data[head + 12 + 2 * k : head + 14 + 2 * k], "big")
            todo.append(int.from_bytes(data[base + cell : base + cell + 4], "big"))
    return sorted(pages), size


def edit_index_key(path: Path, index: str, key: str, new: str) -> None:
    """Overwrite one key ``key`` of ``index`` in its b-tree pages with ``new`` (the same
    length), byte for byte, as a disk or a tamperer could: the table is untouched."""
    assert len(key) == len(new)
    pages, size = btree_pages(path, index)
    data = bytearray(path.read_bytes())
    # a text key of n bytes has serial type 2n + 13 in the record header just before it
    # (after the rowid's serial type)
    marker = bytes([2 * len(key) + 13])
    for page in pages:
        chunk = data[(page - 1) * size : page * size]
        at = chunk.find(key.encode())
        while at >= 0 and chunk[at - 2 : at - 1] != marker:
            at = chunk.find(key.encode(), at + 1)
        if at >= 0:
            offset = (page - 1) * size + at
            data[offset : offset + len(key)] = new.encode()
            path.write_bytes(bytes(data))
            return
    raise AssertionError(f"no key {key!r} in {index}")


def sql(path: Path, statement: str, params=()) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(statement, params)
    conn.close()


def one(path: Path, query: str, params=()):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(query, params).fetchone()[0]
    finally:
        conn.close()


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_failure(result, seq: int | None, code: int = 1) -> str:
    """The command failed with exit ``code`` and a short message naming ``seq`` -- as that
    seq, or as the first of a batch's seqs (``batch B (seqs F..L)``: a damaged batch that
    ``verify`` locates no further, whose lines may not name F) -- without a traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    if seq is not None:
        named = re.search(rf"\bseqs? {seq}\b", result.output)
        assert named, result.output
    return result.output


@pytest.fixture
def log(spiral_log, tmp_path) -> Path:
    """A copy of the SPIRAL log with its post-mortem indexes built (`gpuex index`), so the
    index checks have indexes to check."""
    path = tmp_path / "spiral.db"
    shutil.copy(spiral_log, path)
    with EventStore.open(path, mode="a") as store:
        store.build_indexes()
    return path


# ------------------------------------------------------------------ indexes (point 7)
def test_an_edited_index_key_is_found_by_verify_and_located(log):
    query = "SELECT group_concat(seq) FROM events {} WHERE kind = 'Default'"
    edit_index_key(log, "idx_events_kind", "Default", "Defaulu")
    # the entry edited is whichever Default key comes first in the index's pages (the log has
    # more than one default): the one the table has and the index no longer finds
    in_table = set(one(log, query.format("NOT INDEXED")).split(","))
    in_index = set((one(log, query.format("INDEXED BY idx_events_kind")) or "").split(","))
    (edited,) = in_table - in_index
    default = int(edited)
    report = verify_store(log)
    assert not report.ok
    # the edited key no longer sorts where it stands, so SQLite's index check may also miss
    # entries of keys between "Default" and "Defaulu" (DefaultFundLoss) of lower seqs: the
    # first bad seq is the lowest entry named, and the edited one is always named
    named = {
        int(p.split("entry for seq ")[1].split()[0])
        for p in report.problems
        if "index idx_events_kind" in p and "entry for seq " in p
    }
    assert default in named
    assert report.first_bad_seq == min(named)
    output = assert_clean_failure(cli("verify", log, "--quiet"), report.first_bad_seq)
    assert "idx_events_kind" in output


def test_reads_never_trust_a_corrupt_index(log, spiral_log, tmp_path):
    clean = {
        "export": cli("export", spiral_log, "--kind", "Default", "--kind", "Fill").output,
        "inspect": cli("inspect", spiral_log, "--kind", "Default", "--limit", "50").output,
        "report": cli("report", spiral_log, "-o", tmp_path / "clean.html").output,
    }
    assert "2 defaults" in clean["report"]
    edit_index_key(log, "idx_events_kind", "Default", "Defaulu")
    edit_index_key(log, "idx_events_kind", "Fill", "Fulp")
    assert cli("export", log, "--kind", "Default", "--kind", "Fill").output == clean["export"]
    listed = cli("inspect", log, "--kind", "Default", "--limit", "50").output
    assert listed.replace(str(log), "") == clean["inspect"].replace(str(spiral_log), "")
    report = cli("report", log, "-o", tmp_path / "tampered.html")
    assert report.exit_code == 0 and "2 defaults" in report.output


def test_truncation_inside_the_index_pages_is_found_and_the_events_are_intact(log):
    last = one(log, "SELECT max(seq) FROM events")
    pages, size = btree_pages(log, "idx_events_instrument")
    assert min(pages) > max(btree_pages(log, "events")[0])  # built after the projection's table
    with open(log, "r+b") as f:
        f.truncate((pages[len(pages) // 2] - 1) * size + size // 2)
    report = verify_store(log)
    assert not report.ok and report.events == last
    text = " | ".join(report.problems)
    assert "file truncated: it ends in page" in text
    assert "pages lost from idx_events_instrument" in text
    assert f"the log reads intact up to seq {last}" in text
    output = assert_clean_failure(cli("verify", log, "--quiet"), None)
    assert "pages lost from idx_events_instrument" in output


# ------------------------------------------------------------------ the sessions table
SESSION_EDITS = {
    "scenario": ("UPDATE sessions SET scenario = 'flow'", "sessions.scenario disagrees"),
    "seed": ("UPDATE sessions SET seed = seed + 1", "sessions.seed disagrees"),
    "config": (
        "UPDATE sessions SET config = replace(config, '\"days\":75', '\"days\":76')",
        "sessions.config disagrees",
    ),
    "config not json": ("UPDATE sessions SET config = '{oops'", "config is not a JSON object"),
    "status": ("UPDATE sessions SET status = 'done'", "status is 'done'"),
    "final hash": (
        "UPDATE sessions SET final_state_hash = ?",
        "sessions.final_state_hash disagrees",
    ),
}


@pytest.mark.parametrize("edit", SESSION_EDITS.values(), ids=SESSION_EDITS.keys())
def test_an_edited_sessions_row_is_found_by_verify(log, edit):
    statement, said = edit
    sql(log, statement, ("0" * 64,) if "?" in statement else ())
    report = verify_store(log)
    assert not report.ok and any(said in p for p in report.problems), report.problems
    output = assert_clean_failure(cli("verify", log, "--quiet"), None)
    assert said in output


# ------------------------------------------------------------------ damaged rows (point 8)
def _fill(path: Path, offset: int = 40) -> int:
    return one(
        path, f"SELECT seq FROM events WHERE kind = 'Fill' ORDER BY seq LIMIT 1 OFFSET {offset}"
    )


def _batch_of(path: Path, seq: int) -> tuple[int, int]:
    return one_row(
        path, "SELECT batch, first_seq FROM batches WHERE ? BETWEEN first_seq AND last_seq", (seq,)
    )


def _forge(path: Path, seq: int, old: str, new: str) -> tuple[int, int]:
    """Edit event ``seq`` in its batch's blob and its projection row alike (payload and typed
    columns): only the batch digest can tell (:func:`reseal` recomputes digests and chains).
    Returns the batch and its first seq."""
    return edit_event(path, seq, lambda line: line.replace(old.encode(), new.encode(), 1))


# the log itself (the batch rows and their blobs): every read command stops on it
def deleted_batch(path):
    batch, first = _batch_of(path, _fill(path))
    sql(path, "DELETE FROM batches WHERE batch = ?", (batch,))
    return first


def deleted_last_batch(path):
    first = one(path, "SELECT max(first_seq) FROM batches")
    sql(path, "DELETE FROM batches WHERE first_seq = ?", (first,))
    return first


def edited_blob(path):
    seq = _fill(path)
    return edit_event(path, seq, lambda line: line.replace(b'"Fill"', b'"Fall"'))[1]


def blob_with_its_digest_recomputed(path):
    batch, first = _batch_of(path, edited_blob(path))
    stored = one(path, "SELECT events FROM batches WHERE batch = ?", (batch,))
    sql(
        path,
        "UPDATE batches SET digest = ? WHERE batch = ?",
        (hashlib.sha256(stored).hexdigest(), batch),  # schema 5: the stored bytes'
    )
    return first


def bit_flip_in_a_blob(path):
    """One bit of a batch's stored form flipped on disk (below SQLite: the digest is not
    recomputed). Whatever the compact form, the flip makes it expand to other lines (a digest
    mismatch) or not at all (a damaged stored form): either is found at the batch's first
    seq."""
    seq = _fill(path)
    batch, first = _batch_of(path, seq)
    stored = one(path, "SELECT events FROM batches WHERE batch = ?", (batch,))
    # a run of it from its middle, found in the file's bytes (not across an overflow page's
    # link, which 48 bytes of a 16 KiB page seldom meet: found, it lies in the stored form)
    run = stored[len(stored) // 2 : len(stored) // 2 + 48]
    data = bytearray(path.read_bytes())
    at = data.find(run)  # the batches come before the projection
    assert 0 < at < (min(btree_pages(path, "events")[0]) - 1) * btree_pages(path, "events")[1]
    assert data.find(run, at + 1) == -1  # the one copy: the bit flipped is this batch's
    data[at + len(run) // 2] ^= 0x04
    path.write_bytes(bytes(data))
    return first


def truncated_stored_form(path):
    """A batch's stored form (schemas 4 and 5: the compact form of its blob) cut to its first half:
    it no longer expands, or expands to fewer lines than committed."""
    batch, first = _batch_of(path, _fill(path))
    sql(
        path,
        "UPDATE batches SET events = substr(events, 1, length(events) / 2) WHERE batch = ?",
        (batch,),
    )
    return first


def unknown_stored_format(path):
    """A batch's stored form whose first byte (its format) is none the codec knows: it does
    not expand."""
    batch, first = _batch_of(path, _fill(path))
    stored = one(path, "SELECT events FROM batches WHERE batch = ?", (batch,))
    sql(path, "UPDATE batches SET events = ? WHERE batch = ?", (b"\xfe" + stored[1:], batch))
    return first


def garbage_page(path):
    """A page of the batches table overwritten: SQLite cannot read on from there."""
    pages, size = btree_pages(path, "batches")
    leaf = pages[len(pages) // 2]
    data = bytearray(path.read_bytes())
    data[(leaf - 1) * size : leaf * size] = b"\xff" * size
    path.write_bytes(bytes(data))
    return None  # located by the reads as "the file is corrupt here", seq somewhere


def truncated_file(path):
    """The file cut in the middle of its batches: SQLite refuses it; the commands say, as
    verify does, from which seq the events are lost."""
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 3)
    return verify_store(path).first_bad_seq


# the projection (the per-event table): the commands that read it stop on it
def deleted_row(path):
    seq = _fill(path)
    sql(path, "DELETE FROM events WHERE seq = ?", (seq,))
    return seq


def deleted_last_row(path):
    seq = one(path, "SELECT max(seq) FROM events")
    sql(path, "DELETE FROM events WHERE seq = ?", (seq,))
    return seq


def unknown_account_column(path):
    seq = _fill(path)
    sql(path, "UPDATE events SET account = 'ghost' WHERE seq = ?", (seq,))
    return seq


def null_qty(path):
    seq = _fill(path)
    sql(path, "UPDATE events SET qty = NULL WHERE seq = ?", (seq,))
    return seq


def edited_price(path):
    seq = _fill(path)
    sql(path, "UPDATE events SET price = price + 1 WHERE seq = ?", (seq,))
    return seq


def hidden_kind(path):
    seq = _fill(path)
    sql(path, "UPDATE events SET kind = 'Deposit' WHERE seq = ?", (seq,))
    return seq


def payload_not_utf8(path):
    seq = _fill(path)
    sql(
        path,
        "UPDATE events SET payload = CAST(CAST(payload AS BLOB) || X'ff' AS TEXT) WHERE seq = ?",
        (seq,),
    )
    return seq


def column_not_utf8(path):
    seq = _fill(path)
    sql(path, "UPDATE events SET account = CAST(X'ff41' AS TEXT) WHERE seq = ?", (seq,))
    return seq


def forged_unknown_account(path):
    seq = _fill(path)
    _forge(path, seq, '"taker"', '"ghost"')
    return seq


def forged_null_qty(path):
    seq = _fill(path)
    qty = one(path, "SELECT qty FROM events WHERE seq = ?", (seq,))
    price = one(path, "SELECT price FROM events WHERE seq = ?", (seq,))
    _forge(path, seq, f",{price},{qty},", f",{price},null,")
    return seq


TAMPERS = {
    f.__name__: f
    for f in (
        deleted_batch,
        deleted_last_batch,
        edited_blob,
        blob_with_its_digest_recomputed,
        bit_flip_in_a_blob,
        truncated_stored_form,
        unknown_stored_format,
        garbage_page,
        truncated_file,
    )
}
PROJECTION_TAMPERS = {
    f.__name__: f
    for f in (
        deleted_row,
        deleted_last_row,
        unknown_account_column,
        null_qty,
        edited_price,
        hidden_kind,
        payload_not_utf8,
        column_not_utf8,
    )
}
#: forged events (blob and projection alike): caught by their batch's digest
FORGERIES = {f.__name__: f for f in (forged_unknown_account, forged_null_qty)}


def _commands(path: Path, out: Path):
    return {
        "replay": ["replay", path],
        "replay-no-snapshots": ["replay", path, "--no-snapshots"],
        "inspect": ["inspect", path, "--owed"],
        "export": ["export", path, "-o", out / "events.csv"],
        "report": ["report", path, "-o", out / "report.html"],
        "verify": ["verify", path, "--quiet"],
    }


COMMANDS = ("replay", "replay-no-snapshots", "inspect", "export", "report", "verify")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("tamper", TAMPERS.values(), ids=TAMPERS.keys())
def test_every_read_command_stops_on_a_damaged_row_naming_its_seq(log, tmp_path, tamper, command):
    seq = tamper(log)
    out = tmp_path / "out"
    out.mkdir()
    result = cli(*_commands(log, out)[command])
    output = assert_clean_failure(result, seq)
    if command != "verify":
        assert len(output.strip().splitlines()) <= 3, output  # a line, not a dump
        assert "damaged" in output or "corrupt" in output
    assert not any(out.iterdir()), "a failed command left a file behind"


#: the commands that read the projection (filtered reads); replay reads the blobs only
PROJECTION_READERS = ("inspect", "export", "report", "verify")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("tamper", PROJECTION_TAMPERS.values(), ids=PROJECTION_TAMPERS.keys())
def test_a_damaged_projection_row_stops_its_readers_and_misleads_no_command(
    log, spiral_log, tmp_path, tamper, command
):
    seq = tamper(log)
    out = tmp_path / "out"
    out.mkdir()
    result = cli(*_commands(log, out)[command])
    if command in PROJECTION_READERS:
        output = assert_clean_failure(result, seq)
        assert "projection" in output, output
        assert not any(out.iterdir()), "a failed command left a file behind"
        return
    # the blobs only: the answer of the sound log
    clean = tmp_path / "clean"
    clean.mkdir()
    assert result.exit_code == 0, result.output
    expected = cli(*_commands(spiral_log, clean)[command])
    assert result.output.replace(str(log), "").replace(str(out), "") == expected.output.replace(
        str(spiral_log), ""
    ).replace(str(clean), "")
    for made in out.iterdir():
        assert made.read_bytes() == (clean / made.name).read_bytes()


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("forge", FORGERIES.values(), ids=FORGERIES.keys())
def test_a_forged_row_that_cannot_be_folded_is_named_not_a_traceback(log, tmp_path, forge, command):
    seq = forge(log)
    result = cli(*_commands(log, tmp_path)[command])
    output = assert_clean_failure(result, None)
    batch_first = one(
        log, "SELECT first_seq FROM batches WHERE ? BETWEEN first_seq AND last_seq", (seq,)
    )
    assert f"seq {seq}" in output or f"seq {batch_first}" in output, output


# ------------------------------------------------------------------ replay's final hash
def test_replay_says_the_hash_matches_the_recorded_one(log):
    result = cli("replay", log)
    assert result.exit_code == 0
    assert "matches the recorded final hash (SessionEnded" in result.output


def test_a_forged_event_is_caught_by_its_batch_digest_on_every_read(log, tmp_path):
    # a deposit forged in its blob and its projection row alike: its batch's digest differs
    seq = one(log, "SELECT seq FROM events WHERE kind = 'Deposit' ORDER BY seq LIMIT 1")
    amount = one(log, "SELECT amount FROM events WHERE seq = ?", (seq,))
    batch, first = _forge(log, seq, f",{amount},", f",{amount + 100},")
    for command in COMMANDS:
        output = assert_clean_failure(cli(*_commands(log, tmp_path)[command]), first)
        assert f"batch {batch}" in output, output


def test_replay_of_a_consistently_rewritten_log_fails_on_the_recorded_final_hash(log):
    # forged and resealed (digests, chains recomputed): only the end state can tell
    seq = one(log, "SELECT seq FROM events WHERE kind = 'Deposit' ORDER BY seq LIMIT 1")
    amount = one(log, "SELECT amount FROM events WHERE seq = ?", (seq,))
    _forge(log, seq, f",{amount},", f",{amount + 100},")
    reseal(log)
    assert verify_store(log).ok
    result = cli("replay", log, "--no-snapshots")
    output = assert_clean_failure(result, None)
    assert "differs from the recorded final hash" in output


def test_replay_of_a_finished_log_cut_short_consistently_is_an_error(log):
    # the last batch removed with its batch row, sessions.last_seq set back: every row,
    # batch and chain checks out, but a finished session must end with SessionEnded
    first, last = one_row(log, "SELECT first_seq, last_seq FROM batches ORDER BY batch DESC")
    sql(log, "DELETE FROM events WHERE seq >= ?", (first,))
    sql(log, "DELETE FROM batches WHERE first_seq = ?", (first,))
    sql(log, "UPDATE sessions SET last_seq = ?", (first - 1,))
    output = assert_clean_failure(cli("replay", log), first - 1)
    assert "is not SessionEnded: the log was cut short" in output
    assert cli("verify", log, "--quiet").exit_code == 1


def one_row(path: Path, query: str, params=()):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(query, params).fetchone()
    finally:
        conn.close()


def test_replay_of_an_unfinished_log_says_there_is_no_recorded_hash(tmp_path):
    path = tmp_path / "unfinished.db"
    with EventStore.open(path, mode="a") if path.exists() else _unfinished(path) as store:
        assert store.session["status"] == "running"
    result = cli("replay", path)
    assert result.exit_code == 0
    assert "no recorded final hash" in result.output and "unfinished" in result.output


def _unfinished(path: Path) -> EventStore:
    """A flow log killed mid-run: its first batches committed, never sealed."""
    from exchange.store.event_store import EventStore as Store

    whole = path.with_name("whole.db")
    session.run("flow", whole, overrides={"messages": 300, "traders": 3}, batch_size=100)
    with (
        Store.open(whole) as done,
        Store.create(
            path,
            scenario=done.session["scenario"],
            seed=done.session["seed"],
            config=__import__("orjson").loads(done.session["config"]),
            code_version=done.session["code_version"],
        ) as store,
    ):
        store.append(list(done.events(1, 200)))
    return Store.open(path)


# ------------------------------------------------------------------ verify's exit status
def test_verify_of_an_unfinished_log_says_so_with_its_own_exit_status(tmp_path):
    path = tmp_path / "unfinished.db"
    _unfinished(path).close()
    result = cli("verify", path, "--quiet")
    assert result.exit_code == EXIT_UNFINISHED == 3
    assert "UNFINISHED" in result.output and "Traceback" not in result.output


def test_verify_help_documents_every_exit_status():
    text = " ".join(cli("verify", "--help").output.split())
    for said in ("0 the log is sound", "1 the log is damaged", "3 the log is sound but", "2 bad"):
        assert said in text, text


# ------------------------------------------------------------------ snapshots
@pytest.fixture(scope="module")
def snapshotted(tmp_path_factory) -> Path:
    """The SPIRAL session with a snapshot every 4,000 events."""
    path = tmp_path_factory.mktemp("snapshotted") / "spiral.db"
    session.run("products", path, seed=2, overrides=SPIRAL, snapshot_every=4_000)
    return path


@pytest.mark.parametrize("command", ["replay", "inspect", "verify"])
def test_an_edited_snapshot_is_named_by_the_commands_that_use_it(snapshotted, tmp_path, command):
    log = tmp_path / "spiral.db"
    shutil.copy(snapshotted, log)
    seq = one(log, "SELECT max(seq) FROM snapshots")
    state = one(log, "SELECT state FROM snapshots WHERE seq = ?", (seq,))
    edited = state.replace('"cash":{"', '"cash":{"x":1,"', 1)
    assert edited != state
    sql(log, "UPDATE snapshots SET state = ? WHERE seq = ?", (edited, seq))
    output = assert_clean_failure(cli(*_commands(log, tmp_path)[command]), seq)
    assert "snapshot" in output
    assert cli("replay", log, "--no-snapshots").exit_code == 0  # the events are sound
