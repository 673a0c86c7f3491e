"""The sweep over the credit economy (issue #21): each run's ``credit`` entry, the order of the
cascade over seeds, and the step-up knob (``lambda``) moving the trigger."""

from __future__ import annotations

import csv
import dataclasses
import sys

import pytest

from exchange.core import events as ev
from exchange.postmortem import borrowed
from exchange.sessions import sweep
from exchange.store.event_store import EventStore

SCENARIO = "second-derivative"
SEEDS = range(1, 21)
#: The default lambda and a stricter one (a higher required step-up).
LAMBDAS = ("0.2", "0.1")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """20 seeds of second-derivative at the default lambda and at a stricter one, run by the
    sweep machinery on a local cluster of two one-thread workers, without the built-in's bots:
    what is checked here is the economy's cascade, which nothing on the exchange feeds back
    into (docs/credit.md), and the CDS bots would make each run several times longer."""
    pytest.importorskip("distributed")
    params = sweep.parse_params(SCENARIO, [f"lambda={','.join(LAMBDAS)}"])
    specs = [
        dataclasses.replace(spec, settings=(*spec.settings, ("bots", ())))
        for spec in sweep.expand_grid(SCENARIO, params, SEEDS)
    ]
    out = tmp_path_factory.mktemp("credit-sweep")
    result = sweep.run_sweep(specs, out, workers=2, progress=False)
    assert result.failed == 0
    return result


def _by_lambda(result, value):
    return {r["seed"]: r for r in result.records if r["params"] == {"lambda": value}}


def test_the_cascade_order_holds_on_at_least_95_percent_of_20_seeds(swept):
    records = _by_lambda(swept, LAMBDAS[0])
    assert sorted(records) == list(SEEDS)
    held = [s for s, r in records.items() if borrowed.order_held(r["credit"])]
    assert len(held) >= 19, f"order held on {len(held)} of 20 seeds"
    # the record's flag is the same rule, and the aggregate counts it
    assert all(r["credit"]["held"] == (s in held) for s, r in records.items())
    point = next(p for p in sweep.grid_points(swept.records) if p["params"]["lambda"] == "0.2")
    assert point["credit"]["runs"] == 20 and point["credit"]["held"] == len(held)
    assert point["credit"]["held_share"] >= 0.95


def test_a_stricter_step_up_never_delays_the_trigger_on_the_same_seed(swept):
    base, strict = _by_lambda(swept, LAMBDAS[0]), _by_lambda(swept, LAMBDAS[1])
    never = 10**9  # no trigger: later than any month

    def month(record):
        trigger = record["credit"]["trigger"]
        return never if trigger is None else trigger["period"]

    pairs = [(month(base[s]), month(strict[s])) for s in SEEDS]
    assert all(m_strict <= m_base for m_base, m_strict in pairs), pairs
    assert any(m_strict < m_base for m_base, m_strict in pairs), "the knob moved nothing"
    # and the aggregate shows it: the median trigger month is not later
    points = {p["params"]["lambda"]: p["credit"] for p in sweep.grid_points(swept.records)}
    assert points["0.1"]["trigger"]["median"] <= points["0.2"]["trigger"]["median"]
    assert points["0.1"]["trigger"]["min"] < points["0.2"]["trigger"]["min"]


def test_the_sweep_outputs_show_the_cascade_per_grid_point(swept, monkeypatch):
    with (swept.out_dir / "points.csv").open(newline="") as fh:
        rows = {r["param:lambda"]: r for r in csv.DictReader(fh)}
    for value in LAMBDAS:
        point = next(p for p in sweep.grid_points(swept.records) if p["params"]["lambda"] == value)
        c, row = point["credit"], rows[value]
        assert int(row["order_held"]) == c["held"]
        assert int(row["trigger_month_median"]) == c["trigger"]["median"]
        assert row["common_order"] == " > ".join(c["order"])
        months = c["windows"]["capex"]["months"]
        assert int(row["window_months_max:capex"]) == months["max"]
    monkeypatch.setitem(sys.modules, "plotly", None)
    page = sweep.write_html(swept.records, swept.out_dir / "plain.html").read_text()
    assert "Credit cascade" in page and "most common order of defaults" in page


def test_a_second_derivative_record_has_the_credit_entry_the_log_and_borrowed_time_give(
    tmp_path,
):
    spec = sweep.expand_grid(SCENARIO, [], [7])[0]
    record = sweep.run_one(spec, str(tmp_path))
    credit = record["credit"]
    with EventStore.open(record["log"]) as store:
        steps = list(
            store.events(
                kind=(
                    ev.ROUND_FAILED,
                    ev.COMMITMENT_PULLED,
                    ev.COVENANT_BREACHED,
                    ev.BORROWER_DEFAULTED,
                )
            )
        )
    bt = borrowed.from_log(record["log"])
    failed = [e for e in steps if e.kind == ev.ROUND_FAILED]
    pulled = [e for e in steps if e.kind == ev.COMMITMENT_PULLED]
    breached = [e for e in steps if e.kind == ev.COVENANT_BREACHED]
    defaulted = [e for e in steps if e.kind == ev.BORROWER_DEFAULTED]
    assert failed and pulled and breached and defaulted
    trigger = credit["trigger"]
    assert (trigger["seq"], trigger["entity"], trigger["period"], trigger["t"]) == (
        failed[0].seq,
        failed[0].counterparty,
        failed[0].data["period"],
        failed[0].t,
    )
    # dated from the scenario's start, 2024-01-01: period p is the first of month p
    period = trigger["period"]
    assert trigger["date"] == f"{2024 + period // 12}-{period % 12 + 1:02d}-01"
    assert credit["first_pullback"]["seq"] == pulled[0].seq
    assert credit["first_pullback"]["provider"] == pulled[0].data["provider"]
    first_breach = {}
    for e in breached:
        first_breach.setdefault(e.counterparty, e.seq)
    assert {k: v["seq"] for k, v in credit["first_breach"].items()} == first_breach
    order = list(dict.fromkeys(e.counterparty for e in defaulted))
    assert credit["defaults"] == order
    assert list(credit["first_default"]) == order
    # steps 4-6: the first of each, as the log has them
    with EventStore.open(record["log"]) as store:
        later = list(
            store.events(
                kind=(
                    ev.REFINANCING_FAILED,
                    ev.SPREAD_GAPPED,
                    ev.EQUITY_MARKED,
                    ev.CAPACITY_ACQUIRED,
                )
            )
        )
    refi = next(e for e in later if e.kind == ev.REFINANCING_FAILED)
    assert credit["first_refinancing_failed"][refi.counterparty]["seq"] == refi.seq
    marked = next(e for e in later if e.kind == ev.EQUITY_MARKED)
    assert credit["first_equity_marked"]["seq"] == marked.seq
    sold = next(e for e in later if e.kind == ev.CAPACITY_ACQUIRED)
    assert (credit["first_acquired"]["seq"], credit["first_acquired"]["buyer"]) == (
        sold.seq,
        sold.data["buyer"],
    )
    assert credit["recovery"] == {
        e.counterparty: e.data["recovery_ppm"]
        for e in defaulted
        if e.seq in {v["seq"] for v in credit["first_default"].values()}
    }
    assert credit["concentrated"] == "CoreWeave"
    assert credit["diversified"] == "Diversified neocloud"
    assert credit["held"] is borrowed.order_held(credit)
    assert list(credit["windows"]) == [s.key for s in bt.series]
    for s in bt.series:
        got = credit["windows"][s.key]
        assert [(w["start_ns"], w["end_ns"]) for w in got] == [
            (w.start_ns, w.end_ns) for w in s.windows
        ]
        assert [w["months"] for w in got] == [
            None if w.end_period is None else w.end_period - w.start_period for w in s.windows
        ]
    # integers only: months, ns, seqs
    ints = [trigger["period"], trigger["t"], trigger["seq"]]
    ints += [w[k] for ws in credit["windows"].values() for w in ws for k in ("start_ns",)]
    assert all(type(v) is int for v in ints)


def test_a_record_without_the_economy_has_no_credit_entry_and_no_credit_columns(tmp_path):
    spec = sweep.expand_grid("products", sweep.parse_params("products", ["days=45"]), [1])[0]
    record = sweep.run_one(spec)
    assert record["status"] == "ok" and "credit" not in record
    points = sweep.grid_points([record])
    assert points[0]["credit"] is None
    assert not any(
        c.startswith(("credit", "order", "trigger", "window"))
        for c in sweep.point_columns(points, ["days"])
    )


def _credit(trigger=1, pull=2, breach=None, default=None, refi=None, gap=None, marked=20, sold=30):
    """A credit entry with the steps at the given seqs (None: absent); by default steps 4-6
    come after every breach: the concentrated neocloud's refinancing fails at 10, its spread
    gaps at 11, a mark falls at 20, its fleet is sold at 30."""

    def step(seq):
        return {"entity": "x", "period": seq, "date": None, "t": seq, "seq": seq}

    return {
        "trigger": None if trigger is None else step(trigger),
        "first_pullback": None if pull is None else step(pull),
        "first_breach": {k: step(v) for k, v in (breach or {}).items()},
        "first_default": {k: step(v) for k, v in (default or {}).items()},
        "first_refinancing_failed": {
            k: step(v) for k, v in ({"Conc": 10} if refi is None else refi).items()
        },
        "first_gap": {k: step(v) for k, v in ({"Conc": 11} if gap is None else gap).items()},
        "first_equity_marked": None if marked is None else step(marked),
        "first_acquired": None if sold is None else step(sold),
        "neoclouds": ["Conc", "Div"],
        "concentrated": "Conc",
        "diversified": "Div",
    }


@pytest.mark.parametrize(
    ("credit", "held"),
    [
        (_credit(breach={"Conc": 3}, default={"Conc": 4}), True),
        (_credit(breach={"Conc": 3, "Div": 5}), True),  # the diversified breaches later
        (_credit(trigger=None, breach={"Conc": 3}), False),  # no trigger
        (_credit(trigger=3, pull=2, breach={"Conc": 4}), False),  # pull-back first
        (_credit(pull=None, breach={"Conc": 3}), False),  # no pull-back
        (_credit(pull=4, breach={"Conc": 3}), False),  # breach before the pull-back
        (_credit(breach={"Div": 3}), False),  # only the diversified breaches
        (_credit(breach={"Conc": 5, "Div": 3}), False),  # the diversified first
        (_credit(breach={"Conc": 3}, default={"Div": 6}), False),  # it does not survive
        (_credit(breach={"Other": 3, "Conc": 5}), True),  # a non-neocloud breach is not one
        # steps 4-6: loans cannot roll / spreads gap, then marks fall, then capacity is sold
        (_credit(breach={"Conc": 3}, refi={}, gap={"Conc": 4}), True),  # a gap alone is step 4
        (_credit(breach={"Conc": 3}, refi={}, gap={}), False),  # no step 4
        (_credit(breach={"Conc": 3}, refi={}, gap={"Lab": 4}), False),  # a lab's gap is not it
        (_credit(breach={"Conc": 5}, refi={"Conc": 4}, gap={}), False),  # before the breach
        (_credit(breach={"Conc": 3}, marked=None), False),  # no mark falls
        (_credit(breach={"Conc": 3}, marked=9), False),  # the mark falls before step 4
        (_credit(breach={"Conc": 3}, sold=None), False),  # nothing bought
        (_credit(breach={"Conc": 3}, sold=15), False),  # bought before a mark falls
    ],
)
def test_the_order_holds_only_for_trigger_then_pullback_then_the_concentrated_breach(credit, held):
    assert borrowed.order_held(credit) is held


def test_the_aggregate_takes_nearest_rank_months_and_the_most_common_order_first_sorted():
    def entry(trigger, held, defaults, months, recovery=None):
        return {
            "trigger": None if trigger is None else {"period": trigger},
            "held": held,
            "defaults": defaults,
            "windows": {"capex": [{"months": m} for m in months]},
            "recovery": recovery or {},
        }

    point = sweep.credit_point(
        [
            entry(40, True, ["B"], [10], {"B": 300_000}),
            entry(30, True, ["A", "B"], [12, None], {"A": 400_000, "B": 350_000}),
            entry(None, False, [], []),
            entry(50, True, ["B"], [8]),
            entry(36, True, ["A", "B"], [20]),
        ]
    )
    assert point["runs"] == 5 and point["held"] == 4 and point["held_share"] == 0.8
    assert point["trigger"] == {"min": 30, "median": 36, "max": 50}
    assert point["untriggered"] == 1
    assert point["windows"]["capex"] == {"months": {"min": 8, "median": 10, "max": 20}, "open": 1}
    # two runs each: the first in sorted order
    assert point["order"] == ["A", "B"] and point["order_runs"] == 2
    # every default's recovery, nearest-rank
    assert point["recovery"] == {"min": 300_000, "median": 350_000, "max": 400_000}
    assert sweep.credit_point([]) is None
