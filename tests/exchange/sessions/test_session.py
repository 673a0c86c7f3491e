"""Sessions: determinism, replay, state_at, verify and resume on real SQLite logs."""

import random
import sqlite3
from pathlib import Path

import orjson
import pytest

from exchange.sessions import session
from exchange.store.event_store import INDEXES, EventStore, IndexBuildError
from exchange.store.fold import Fold

SMALL = {"messages": 2_000, "traders": 5, "cash_every": 300, "malformed_every": 250}


def run_small(tmp_path, name="s.db", seed=3, **kw):
    kw.setdefault("batch_size", 100)
    kw.setdefault("snapshot_every", 500)
    return session.run("flow", tmp_path / name, seed=seed, overrides=SMALL, **kw)


def payloads(path):
    with EventStore.open(path, mode="r") as store:
        return list(store.payloads(1, store.last_seq))


def test_same_seed_gives_a_byte_identical_log_and_another_seed_does_not(tmp_path):
    a = run_small(tmp_path, "a.db", seed=5)
    b = run_small(tmp_path, "b.db", seed=5)
    c = run_small(tmp_path, "c.db", seed=6)
    assert payloads(a.path) == payloads(b.path)
    assert a.state_hash == b.state_hash
    assert payloads(a.path) != payloads(c.path)
    with EventStore.open(a.path, mode="r") as sa, EventStore.open(b.path, mode="r") as sb:
        assert sa.digest() == sb.digest()


@pytest.mark.parametrize("seed", range(8))
def test_replay_reaches_the_live_state_hash(tmp_path, seed):
    summary = run_small(tmp_path, seed=seed)
    assert session.replay(summary.path).state_hash() == summary.state_hash
    assert session.replay(summary.path, use_snapshots=False).state_hash() == summary.state_hash
    with EventStore.open(summary.path, mode="r") as store:
        assert store.session["final_state_hash"] == summary.state_hash


def test_state_at_equals_a_fresh_fold_for_random_seqs(tmp_path):
    summary = run_small(tmp_path)
    with EventStore.open(summary.path, mode="r") as store:
        rows = list(store.rows(1, store.last_seq))
        assert list(store.snapshots()), "the run should have written snapshots"
    rng = random.Random(0)
    for seq in sorted(rng.sample(range(1, len(rows) + 1), 15)) + [len(rows), 500, 501]:
        fresh = Fold().apply_all(rows[:seq])
        assert session.state_at(summary.path, seq).state_hash() == fresh.state_hash()


def test_state_at_beyond_the_log_is_an_error(tmp_path):
    summary = run_small(tmp_path)
    with pytest.raises(session.SessionError, match="beyond"):
        session.state_at(summary.path, summary.events + 1)


def test_verify_passes_on_a_clean_log(tmp_path):
    summary = run_small(tmp_path)
    verdict = session.verify(summary.path)
    assert verdict.ok, verdict.problems
    assert verdict.state_hash == summary.state_hash and verdict.events == summary.events


def test_on_time_follows_the_simulated_clock_batch_by_batch_to_the_end(tmp_path):
    times = []
    summary = run_small(tmp_path, on_time=lambda t, end: times.append((t, end)))
    ends = {end for _t, end in times}
    assert len(ends) == 1 and len(times) == -(-summary.events // 100)  # one per batch
    end = ends.pop()
    assert [t for t, _ in times] == sorted(t for t, _ in times)
    assert 0 < times[0][0] < end and times[-1][0] == end  # SessionEnded, at the end time
    with EventStore.open(summary.path, mode="r") as store:
        assert store.session["finished_t"] == end


def test_on_seal_comes_once_after_every_event_is_committed_and_before_the_seal(tmp_path):
    path = tmp_path / "seal.db"
    calls = []

    def on_batch(n):
        calls.append(("batch", n))

    def on_seal():
        with EventStore.open(path, mode="r") as store:
            calls.append(("seal", store.last_seq, store.session["status"]))

    summary = run_small(tmp_path, "seal.db", on_batch=on_batch, on_seal=on_seal)
    assert calls[-1] == ("seal", summary.events, "running")
    assert [c[0] for c in calls].count("seal") == 1
    assert sum(c[1] for c in calls if c[0] == "batch") == summary.events


def test_verify_in_line_reports_each_stage_in_order_up_to_every_event(tmp_path):
    # long enough for several calls in each stage (every 16,384 events; 65,536 replaying)
    summary = session.run(
        "flow", tmp_path / "v.db", seed=3, overrides={**SMALL, "messages": 25_000}
    )
    assert summary.events > 65_536
    calls = []
    verdict = session.verify(
        summary.path, progress=lambda *call: calls.append(call), check_aside_after=None
    )
    assert verdict.ok, verdict.problems
    stages = [stage for stage, _done, _total in calls]
    assert sorted(set(stages), key=stages.index) == list(session.VERIFY_STAGES)
    assert stages == sorted(stages, key=session.VERIFY_STAGES.index)  # one stage after another
    for stage in session.VERIFY_STAGES:
        done = [d for s, d, total in calls if s == stage and total == summary.events]
        assert len(done) == stages.count(stage) > 1, stage  # several calls, all out of the log
        assert done == sorted(done) and done[-1] == summary.events, stage


def test_verify_catches_a_consistently_forged_event_by_re_execution(tmp_path):
    """An edit that also fixes the digests and the chain is still caught: the commands do not
    produce it."""
    from tests.exchange.store.test_store_check import edit_event, reseal

    summary = run_small(tmp_path)
    with EventStore.open(summary.path) as store:
        seq = [e.seq for e in store.events(kind="Fill")][3]

    def more(line: bytes) -> bytes:
        fields = orjson.loads(line)
        fields[8] = fields[8] * 10 + 1  # the qty: a different fill, as valid JSON
        return orjson.dumps(fields)

    edit_event(summary.path, seq, more)
    reseal(summary.path)
    verdict = session.verify(summary.path)
    assert not verdict.ok
    assert verdict.first_bad_seq is not None and verdict.first_bad_seq <= seq


def test_a_run_builds_no_index_and_its_sealed_log_verifies_without_them(tmp_path, monkeypatch):
    # issue #20: the post-mortem indexes are off the run's critical path; a build attempted
    # anywhere in the run (the seal, the store's close) fails the test
    calls = []

    def no_build(self, *args):
        calls.append(self.path)
        raise sqlite3.OperationalError("the run must not build the indexes")

    with monkeypatch.context() as patch:
        patch.setattr(EventStore, "_build_indexes", no_build)
        summary = run_small(tmp_path, "unindexed.db", journal_after=None)
    assert calls == []
    path = Path(summary.path)
    with EventStore.open(path) as store:
        assert store.session["status"] == "finished"
        assert len(store.missing_indexes()) == len(INDEXES)
        digest = store.digest()
    assert session.verify(path).ok  # complete and sound without its indexes
    before = payloads(path)
    with EventStore.open(path, mode="a") as store:
        assert len(store.build_indexes()) == len(INDEXES)
    with EventStore.open(path) as store:
        assert store.missing_indexes() == [] and store.digest() == digest
    assert payloads(path) == before
    assert session.verify(path).ok  # and with them, checked against the table


def test_a_failed_index_build_leaves_the_sealed_log_untouched_and_a_later_one_succeeds(
    tmp_path, monkeypatch
):
    summary = run_small(tmp_path, journal_after=None)
    path = Path(summary.path)
    before = payloads(path)

    def full_disk(self, *args):
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as patch:
        patch.setattr(EventStore, "_build_indexes", full_disk)
        with (
            EventStore.open(path, mode="a") as store,
            pytest.raises(IndexBuildError, match=r"untouched.*`gpuex index .*` builds them"),
        ):
            store.build_indexes()
    with EventStore.open(path) as store:
        assert store.session["status"] == "finished"
        assert len(store.missing_indexes()) == len(INDEXES)
    assert session.verify(path).ok
    with EventStore.open(path, mode="a") as store:
        store.build_indexes()
    with EventStore.open(path) as store:
        assert store.missing_indexes() == []
    assert payloads(path) == before


def test_resuming_a_finished_session_is_refused_with_or_without_its_indexes(tmp_path):
    summary = run_small(tmp_path)
    # a run leaves no index; the refusal says what builds them (no resume does)
    with pytest.raises(session.SessionError, match=r"already finished; nothing to resume.*index"):
        session.run("flow", summary.path, resume=True)
    with EventStore.open(summary.path) as store:
        assert len(store.missing_indexes()) == len(INDEXES)
    with EventStore.open(summary.path, mode="a") as store:
        store.build_indexes()
    with pytest.raises(session.SessionError, match="already finished; nothing to resume"):
        session.run("flow", summary.path, resume=True)


def test_run_refuses_to_overwrite_an_existing_log(tmp_path):
    summary = run_small(tmp_path)
    with pytest.raises(session.SessionError, match="exists"):
        session.run("flow", summary.path, overrides=SMALL)


class Crash(Exception):
    pass


def test_resume_after_a_crash_gives_the_same_bytes_as_an_uninterrupted_run(tmp_path):
    reference = run_small(tmp_path, "ref.db")
    crashed = tmp_path / "crash.db"
    batches = 0

    def crash_after_seven_batches(_n):
        nonlocal batches
        batches += 1
        if batches == 7:
            raise Crash

    with pytest.raises(Crash):
        run_small(tmp_path, "crash.db", on_batch=crash_after_seven_batches)
    with EventStore.open(crashed, mode="r") as store:
        assert store.session["status"] == "running"
        assert store.last_seq == 700
    assert session.verify(crashed).ok  # the committed prefix is sound
    resumed = session.run("flow", crashed, resume=True)
    assert resumed.resumed_from == 700
    assert payloads(crashed) == payloads(reference.path)
    assert resumed.state_hash == reference.state_hash
    with EventStore.open(crashed, mode="r") as a, EventStore.open(reference.path, mode="r") as b:
        assert a.digest() == b.digest()


def test_resume_of_a_finished_session_is_refused(tmp_path):
    summary = run_small(tmp_path)
    with pytest.raises(session.SessionError, match="finished"):
        session.run("flow", summary.path, resume=True)


def test_resume_of_a_file_killed_before_its_first_commit_starts_afresh(tmp_path):
    reference = run_small(tmp_path, "ref.db")
    shell = tmp_path / "shell.db"
    sqlite3.connect(shell).close()  # an SQLite file with no tables, as a kill mid-create leaves
    resumed = session.run(
        "flow", shell, seed=3, overrides=SMALL, resume=True, batch_size=100, snapshot_every=500
    )
    assert resumed.resumed_from == 0
    assert payloads(shell) == payloads(reference.path)


def test_resume_with_different_settings_is_refused(tmp_path):
    crashed = tmp_path / "c.db"
    with pytest.raises(Crash):
        run_small(tmp_path, "c.db", on_batch=lambda _n: (_ for _ in ()).throw(Crash()))
    with pytest.raises(session.SessionError, match="seed"):
        session.run("flow", crashed, seed=4, resume=True)
    with pytest.raises(session.SessionError, match="settings"):
        session.run("flow", crashed, overrides={**SMALL, "traders": 2}, resume=True)


def test_products_session_resumes_to_the_same_bytes_and_snapshots_agree(tmp_path):
    """The margin, funding and default machinery is re-executed on resume like the rest, and
    snapshots of a products log give the same state as a fresh fold."""
    settings = {"days": 60, "guarantor_cash": 30_000_00, "owner_contracts": 2_000}
    reference = session.run(
        "products",
        tmp_path / "ref.db",
        seed=2,
        overrides=settings,
        batch_size=500,
        snapshot_every=5_000,
    )
    batches = 0

    def crash(_n):
        nonlocal batches
        batches += 1
        if batches == 20:
            raise Crash

    with pytest.raises(Crash):
        session.run(
            "products",
            tmp_path / "c.db",
            seed=2,
            overrides=settings,
            batch_size=500,
            snapshot_every=5_000,
            on_batch=crash,
        )
    resumed = session.run("products", tmp_path / "c.db", resume=True)
    assert resumed.resumed_from == 10_000
    assert payloads(tmp_path / "c.db") == payloads(reference.path)
    with EventStore.open(reference.path, mode="r") as store:
        rows = list(store.rows(1, store.last_seq))
        assert len(list(store.snapshots())) >= 3
    for seq in (4_999, 5_000, 12_345, len(rows)):
        fresh = Fold().apply_all(rows[:seq])
        assert session.state_at(reference.path, seq).state_hash() == fresh.state_hash()


def test_a_log_killed_between_its_last_batch_and_its_seal_verifies_and_resumes(tmp_path):
    """SessionEnded committed, the status update not: the file says 'running' but the log is
    complete. Verify must not call the end event unproduced, and resume must seal it."""
    summary = run_small(tmp_path)
    con = sqlite3.connect(summary.path)
    con.execute("UPDATE sessions SET status='running', finished_t=NULL, final_state_hash=NULL")
    con.commit()
    con.close()
    verdict = session.verify(summary.path)
    assert verdict.ok, verdict.problems
    resumed = session.run("flow", summary.path, resume=True)
    assert resumed.state_hash == summary.state_hash
    assert session.verify(summary.path).ok


def test_a_run_leaves_the_garbage_collector_as_it_found_it(tmp_path):
    import gc

    before = gc.get_threshold()
    session.run("flow", tmp_path / "gc.db", overrides={"messages": 300})
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_overlapping_runs_restore_the_collector_only_when_the_last_one_ends(tmp_path):
    import gc
    import threading

    before = gc.get_threshold()
    errors = []

    def one(i):
        try:
            session.run("flow", tmp_path / f"t{i}.db", overrides={"messages": 2_000})
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_a_model_s_projected_events_is_its_floor_only_when_it_is_a_non_negative_int():
    """``projected_events`` reads the model's attribute of that name (``flow``: its
    ``messages``); anything but a non-negative int (a bool, a float, a negative, none) is no
    projection, and the run's pace decides when its journaller starts."""

    class Model:
        def __init__(self, projected):
            self.projected_events = projected

    assert session.projected_events(session.load_scenario("flow", {"messages": 1234})) == 1234
    assert session.projected_events(Model(5_000_000)) == 5_000_000
    for projected in (True, 1.5e6, -1, "100", None):
        assert session.projected_events(Model(projected)) is None
    assert session.projected_events(object()) is None
