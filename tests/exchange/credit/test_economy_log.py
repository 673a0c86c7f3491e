"""The credit economy in the log (issue #21): the built-in ``second-derivative`` scenario runs
``exchange.credit.economy`` beside the exchange, one step on the first of every month, and announces
each record as an event of an economy kind with its cause as log seqs.

Specifications: one event per record, in the records' order, at midnight of its month's first
day, carrying the record's fields (the amount its documented main money field); causes name
earlier events of economy kinds, and a default walks back to the failed round; the seed's order
(the round fails, the lab pulls back, a neocloud breaches) in the log; the economy's seed
derives from the session's; same seed, same log; the log verifies; ``Exchange.announce`` emits
only economy kinds; a scenario with an economy starts by the economy's first month; a scenario
without one stores the configuration it did before.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import date
from pathlib import Path

import orjson
import pytest

from clients.scenario import load, load_scenario
from exchange.core import events as ev
from exchange.core.clock import Simulator
from exchange.credit.economy import (
    BacklogImpaired,
    CapacityAcquired,
    CapacityReleased,
    CapexCut,
    CommitmentPulled,
    CovenantBreached,
    Default,
    Economy,
    EconomyParams,
    EquityMarked,
    GuaranteeCalled,
    RefinancingFailed,
    RoundFailed,
    RoundPriced,
    SpreadGapped,
    SpreadInverted,
)
from exchange.kernel.engine import DAY_NS, Exchange
from exchange.sessions import session
from exchange.sessions.scenarios import ScenarioError
from exchange.store.event_store import EventStore

SCENARIO = "second-derivative"
NEOCLOUDS = ("CoreWeave", "Diversified neocloud")

#: The documented mapping (docs/credit.md, "In the log"): record class -> (event kind, the
#: field that is the event's amount).
MAPPING = {
    RoundPriced: ("RoundPriced", "raised"),
    RoundFailed: ("RoundFailed", "need"),
    GuaranteeCalled: ("GuaranteeCalled", "amount"),
    CommitmentPulled: ("CommitmentPulled", "backlog_cut"),
    BacklogImpaired: ("BacklogImpaired", "amount"),
    CovenantBreached: ("CovenantBreached", "cash_flow"),
    SpreadInverted: ("SpreadInverted", "spread"),
    Default: ("BorrowerDefaulted", "debt"),
    CapacityReleased: ("CapacityReleased", None),
    CapexCut: ("CapexCut", "capex"),
    RefinancingFailed: ("RefinancingFailed", "due"),
    SpreadGapped: ("SpreadGapped", None),
    EquityMarked: ("EquityMarked", "mark"),
    CapacityAcquired: ("CapacityAcquired", "price"),
}
ECONOMY_KINDS = {kind for kind, _ in MAPPING.values()}


def _run(folder: Path, seed: int | None = None, overrides: dict | None = None) -> Path:
    db = folder / f"{SCENARIO}-{seed}.db"
    session.run(SCENARIO, db, seed=seed, overrides=overrides)
    return db


def _events(db: Path) -> list[ev.Event]:
    with EventStore.open(db, mode="r") as store:
        return list(store.events())


def _economy_events(db: Path) -> list[ev.Event]:
    return [e for e in _events(db) if e.kind in ECONOMY_KINDS]


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    """The built-in, in full, on its own seed (7)."""
    return _run(tmp_path_factory.mktemp("economy_log"))


def _expected_economy(db: Path) -> tuple[Economy, int]:
    """The economy run for the log's stored parameters, seed and months, computed here from the
    rule: seed = the first 8 bytes of SHA-256("economy:<session seed>")."""
    with EventStore.open(db, mode="r") as store:
        info = store.session
    config = orjson.loads(info["config"])  # the stored (validated) configuration
    seed = int.from_bytes(hashlib.sha256(f"economy:{info['seed']}".encode()).digest()[:8], "big")
    start = date.fromisoformat(config["start"])
    end = date.fromordinal(start.toordinal() + config["days"])
    months = (end.year - 2024) * 12 + end.month  # the firsts of month from 2024-01-01 to end
    economy = Economy(EconomyParams.model_validate(config["economy"]), seed)
    economy.run(months)
    return economy, months


def _expected_records(db: Path) -> tuple[list, int]:
    """The records the economy makes for the log's stored parameters, seed and months."""
    economy, months = _expected_economy(db)
    return list(economy.records), months


def test_the_log_holds_one_event_per_economy_record_in_order_with_its_fields(log):
    records, months = _expected_records(log)
    assert months == 72  # January 2024 to December 2029
    events = _economy_events(log)
    assert len(events) == len(records) > 0
    start = date(2024, 1, 1)
    record_of: dict[int, int] = {}  # event seq -> record index
    for record, event in zip(records, events, strict=True):
        kind, amount_field = MAPPING[type(record)]
        assert event.kind == kind
        assert event.account is None and event.counterparty == record.entity
        year, month = divmod(record.period, 12)
        first = date(2024 + year, month + 1, 1)
        assert event.t == (first - start).days * DAY_NS  # midnight of the month's first day
        data = dict(event.data)
        assert data.pop("period") == record.period and data.pop("record") == record.seq
        cause = tuple(record_of[seq] for seq in data.pop("cause"))
        fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
        if amount_field is None:
            assert event.amount is None
        else:
            assert event.amount == fields.pop(amount_field)
        del fields["seq"], fields["period"], fields["entity"]
        assert cause == fields.pop("cause")
        assert data == fields  # every other field, as the record has it
        record_of[event.seq] = record.seq


def test_every_cause_names_an_earlier_economy_event_and_a_default_walks_back_to_the_trigger(log):
    by_seq = {e.seq: e for e in _events(log)}
    economy = [e for e in by_seq.values() if e.kind in ECONOMY_KINDS]
    for event in economy:
        for seq in event.data["cause"]:
            assert seq < event.seq and by_seq[seq].kind in ECONOMY_KINDS, (event.seq, seq)
    default = next(e for e in economy if e.kind == ev.BORROWER_DEFAULTED)
    chain = [default]
    while chain[-1].data["cause"]:
        chain.append(by_seq[chain[-1].data["cause"][0]])
    kinds = [e.kind for e in chain]
    assert ev.ROUND_FAILED in kinds, kinds
    # the default's chain: the breach, the pull-back on its own contracts, the failed round
    assert kinds.index(ev.COMMITMENT_PULLED) < kinds.index(ev.ROUND_FAILED)
    trigger = chain[kinds.index(ev.ROUND_FAILED)]
    assert trigger.counterparty == "OpenAI"


@pytest.mark.parametrize("seed", [None, 1, 2])
def test_the_seeds_order_holds_in_the_log_round_failed_then_pull_back_then_breach(
    log, tmp_path, seed
):
    events = _economy_events(log if seed is None else _run(tmp_path, seed))

    def first(kind, entities=None):
        return next(
            e.seq
            for e in events
            if e.kind == kind and (entities is None or e.counterparty in entities)
        )

    failed = first(ev.ROUND_FAILED, ("OpenAI",))
    pulled = first(ev.COMMITMENT_PULLED)
    breach = first(ev.COVENANT_BREACHED, NEOCLOUDS)
    assert failed < pulled < breach


@pytest.mark.parametrize("seed", [None, 1, 2])
def test_the_cascade_continues_in_the_log_loans_cannot_roll_spreads_gap_marks_fall_capacity_sold(
    log, tmp_path, seed
):
    """Steps 4-6 in the log after the breach, each caused by the step before it in the chain:
    the refinancing by the breach, the neocloud's gap and its auction by its default, the
    hyperscalers' marks by their impairments; the defaulted fleet's buyer is a hyperscaler."""
    events = _economy_events(log if seed is None else _run(tmp_path, seed))
    by_seq = {e.seq: e for e in events}

    def first(kind, entities=NEOCLOUDS):
        return next(e for e in events if e.kind == kind and e.counterparty in entities)

    breach = first(ev.COVENANT_BREACHED)
    refi = first(ev.REFINANCING_FAILED)
    gap = next(
        e
        for e in events
        if e.kind == ev.SPREAD_GAPPED and e.counterparty in NEOCLOUDS and e.seq > breach.seq
    )
    marked = next(e for e in events if e.kind == ev.EQUITY_MARKED)
    sold = first(ev.CAPACITY_ACQUIRED)
    assert breach.seq < refi.seq < gap.seq < marked.seq < sold.seq
    assert refi.data["cause"] == [breach.seq] and refi.data["reason"] == "covenant breach"
    default = by_seq[sold.data["cause"][0]]
    assert default.kind == ev.BORROWER_DEFAULTED and default.counterparty == sold.counterparty
    assert by_seq[gap.data["cause"][0]].kind == ev.BORROWER_DEFAULTED
    assert sold.data["buyer"] in {h.name for h in EconomyParams().hyperscalers}
    for e in events:
        if e.kind == ev.EQUITY_MARKED and e.counterparty == "Oracle":
            assert by_seq[e.data["cause"][0]].kind == ev.BACKLOG_IMPAIRED


def test_the_same_seed_gives_the_same_log_and_another_seed_another_economy(log, tmp_path):
    again = _run(tmp_path, 7)
    with EventStore.open(log, mode="r") as a, EventStore.open(again, mode="r") as b:
        assert list(a.payloads()) == list(b.payloads())
        assert a.session["final_state_hash"] == b.session["final_state_hash"]
    other = _economy_events(_run(tmp_path, 8))
    assert [(e.kind, e.amount, e.data) for e in other] != [
        (e.kind, e.amount, e.data) for e in _economy_events(log)
    ]


def test_the_log_verifies(log):
    verdict = session.verify(log)
    assert verdict.ok, verdict.problems


def test_announce_emits_an_economy_kind_and_refuses_an_exchange_kind():
    events: list[ev.Event] = []
    engine = Exchange(events.append)
    engine.start("test", 1, {})
    event = engine.announce(
        ev.BORROWER_DEFAULTED, amount=5, counterparty="CoreWeave", data={"cause": []}
    )
    assert event.seq == 2 and events[-1] == event
    assert (event.kind, event.account, event.amount, event.counterparty) == (
        "BorrowerDefaulted",
        None,
        5,
        "CoreWeave",
    )
    for kind in (ev.DEFAULT, ev.DEPOSIT, "Nonsense"):
        with pytest.raises(ValueError, match="economy kind"):
            engine.announce(kind, amount=5)
    assert len(events) == 2  # nothing emitted by a refusal
    assert set(ev.ECONOMY_KINDS) == ECONOMY_KINDS | {ev.ECONOMY_MONTH}
    assert set(ev.ECONOMY_KINDS) <= set(ev.KINDS)


def test_at_an_instant_it_shares_with_an_index_print_the_economy_comes_first():
    """The first rounds fall in months 6 and 8 (July and September 2024) on seed 7: a daily
    index prints at midnight of those days too."""
    days = 250
    scenario = load(
        SCENARIO, {"days": days, "indices": [{"calibration": "H100-RENTAL", "interval_ns": "1d"}]}
    )
    events: list[ev.Event] = []
    engine = Exchange(events.append)
    engine.start(scenario.name, 7, {})
    scenario.setup(engine)
    sim = Simulator()
    scenario.schedule_market(engine, sim, 7)
    sim.run(until=scenario.end_ns, on_step=engine.advance)
    shared = 0
    for t in sorted({e.t for e in events if e.kind in ECONOMY_KINDS}):
        kinds = [e.kind for e in events if e.t == t]
        assert ev.INDEX_PUBLISHED in kinds
        last_economy = max(i for i, k in enumerate(kinds) if k in ECONOMY_KINDS)
        assert last_economy < kinds.index(ev.INDEX_PUBLISHED), kinds
        shared += 1
    assert shared >= 2


def test_a_scenario_with_an_economy_must_start_by_the_economys_first_month():
    with pytest.raises(ScenarioError, match="economy: the session starts on 2024-02-01"):
        load(SCENARIO, {"start": "2024-02-01"})
    earlier = load(SCENARIO, {"start": "2023-12-01", "days": 40})
    assert earlier.economy == EconomyParams()


def test_a_scenario_stores_its_economy_and_one_without_stores_no_economy_key():
    with_economy = load(SCENARIO).model_dump(mode="json")
    assert EconomyParams.model_validate(with_economy["economy"]) == EconomyParams()
    text = Path(__file__).parents[3] / "clients" / "builtin" / "h100-depreciation.toml"
    assert "economy" not in load_scenario(text).model_dump(mode="json")


def test_an_economy_that_would_put_a_number_past_int64_in_the_log_is_refused_before_the_run():
    """A mark just inside int64 (the file's integers are checked) whose required step-up is not:
    the rehearsal computes the whole run and refuses it, naming the record and field."""
    base = EconomyParams()
    naked = base.labs[0].model_copy(update={"initial_mark": 9_223_372_036_000_000_000})
    params = EconomyParams(labs=(naked, base.labs[1]))
    with pytest.raises(session.SessionError, match=r"economy: RoundFailed\.required_mark"):
        session.plan(SCENARIO, overrides={"economy": params.model_dump(mode="json")})


def test_each_month_is_announced_once_before_its_records_with_the_models_series(log):
    """One ``EconomyMonth`` per period, at the month's first midnight, before every record of
    that period (and after every record of the month before), its values the model's series
    of that period."""
    economy, months = _expected_economy(log)
    series = economy.series()
    params = economy.params
    events = [e for e in _events(log) if e.kind in ECONOMY_KINDS | {ev.ECONOMY_MONTH}]
    month_events = [e for e in events if e.kind == ev.ECONOMY_MONTH]
    assert [e.data["period"] for e in month_events] == list(range(months))
    start = date(2024, 1, 1)
    current = -1
    for e in events:
        if e.kind == ev.ECONOMY_MONTH:
            current += 1
            assert e.data["period"] == current
            assert (e.counterparty, e.amount, e.account) == (None, None, None)
            year, month = divmod(current, 12)
            assert e.t == (date(2024 + year, month + 1, 1) - start).days * DAY_NS
        else:  # a record: announced after its own month's EconomyMonth, before the next one
            assert e.data["period"] == current, (e.kind, e.seq)
    labs = [lab.name for lab in params.labs]
    cds = [*labs, *(n.name for n in params.neoclouds)]
    for e in month_events:
        p = e.data["period"]
        expected = {
            "period": p,
            "labs": labs,
            "revenue": {name: int(series[f"revenue:{name}"][p]) for name in labs},
            "mark": {name: int(series[f"mark:{name}"][p]) for name in labs},
            "capex": int(series["capex"][p]),
            "capex_by": {h.name: int(series[f"capex:{h.name}"][p]) for h in params.hyperscalers},
            "spread": {n.name: int(series[f"spread:{n.name}"][p]) for n in params.neoclouds},
            "rental_price": int(series["rental_price"][p]),
            "cds_spread_bps": {name: int(series[f"cds:{name}"][p]) for name in cds},
        }
        assert e.data == expected
        for value in (
            e.data["capex"],
            e.data["rental_price"],
            *e.data["mark"].values(),
            *e.data["cds_spread_bps"].values(),
        ):
            assert type(value) is int
    # the glut and the default show in the series the log now holds
    assert month_events[-1].data["rental_price"] < month_events[0].data["rental_price"]
    assert min(e.data["spread"]["CoreWeave"] for e in month_events) < 0


def test_the_reports_cascade_timeline_shows_steps_4_to_6(log):
    """The refinancing failure, the gapped spreads, the fallen marks and the acquired fleet
    each drawn on the timeline, one marker per event of the log."""
    from exchange.postmortem import report as rp

    report = rp.build_report(log)
    [timeline] = [c for c in report.charts if c.div_id == "chart-cascade-timeline"]
    drawn = {t.name: len(t.x) for t in timeline.figure.data}
    events = _economy_events(log)
    for kind in (ev.REFINANCING_FAILED, ev.SPREAD_GAPPED, ev.EQUITY_MARKED, ev.CAPACITY_ACQUIRED):
        assert drawn.get(kind) == sum(e.kind == kind for e in events) > 0, kind
