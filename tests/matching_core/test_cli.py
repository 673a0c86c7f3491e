"""The command line (matching_core.cli): ``match`` and ``demo``.

Expected outcomes are derived by hand from docs/matching_core.md (see the comments, and the
hand-worked stream in test_orders_csv.py).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from matching_core import OrderBook
from matching_core.cli import demo_summary, exact_vwap, main
from matching_core.codes import FILL_DTYPE, REPORT_DTYPE
from matching_core.orders_csv import ORDERS_HEADER, read_orders

# A small stream worked by hand from the spec (default STP none); file line in the comment.
ROWS = [
    "add,1,10,sell,limit,50,4,,",  # 2: rests ask 50 x4
    "add,2,20,sell,limit,51,6,,",  # 3: rests ask 51 x6
    "add,3,30,buy,limit,49,5,,",  # 4: rests bid 49 x5
    "add,4,40,buy,market,51,7,,",  # 5: protection 51: id1 4@50, id2 3@51 (id2 left 3)
    "amend,2,,,,52,3,,",  # 6: new price: cancel-replace to 52 x3; bids at 49 don't cross
    "add,5,50,sell,limit,49,2,,1",  # 7: post-only, best bid 49 >= 49: post_only_would_cross
    "add,6,50,sell,limit,49,2,fok,",  # 8: FOK, 5 lots bid at 49 >= 2: id3 2@49 (id3 left 3)
    "cancel,3,,,,,,,",  # 9: removes id3's 3 lots
]
FILLS = [
    ["taker_order_id", "maker_order_id", "taker_account", "maker_account", "price", "qty"],
    ["4", "1", "40", "10", "50", "4"],
    ["4", "2", "40", "20", "51", "3"],
    ["6", "3", "50", "30", "49", "2"],
]
BOOK = [["side", "price", "order_id", "account", "qty"], ["sell", "52", "2", "20", "3"]]
REPORTS = [
    ["line", "op", "order_id", "result", "filled", "resting", "cancelled"],
    ["2", "add", "1", "ok", "0", "4", "0"],
    ["3", "add", "2", "ok", "0", "6", "0"],
    ["4", "add", "3", "ok", "0", "5", "0"],
    ["5", "add", "4", "ok", "7", "0", "0"],
    ["6", "amend", "2", "ok", "0", "3", "0"],
    ["7", "add", "5", "post_only_would_cross", "0", "0", "0"],
    ["8", "add", "6", "ok", "2", "0", "0"],
    ["9", "cancel", "3", "ok", "0", "0", "3"],
]

# Account 100 sells 5 @ 100 (id 1), account 200 sells 4 @ 100 (id 2), then account 100 buys
# 6 @ 100 (id 3): its first match would be with its own order.
SELF_CROSS = [
    "add,1,100,sell,limit,100,5,,",
    "add,2,200,sell,limit,100,4,,",
    "add,3,100,buy,limit,100,6,,",
]

_WORDS = {
    "op": ["add", "cancel", "amend"],
    "side": ["buy", "sell"],
    "type": ["limit", "market"],
    "tif": ["gtc", "ioc", "fok"],
}


def write_orders(path: Path, rows: list[str], header: str = ",".join(ORDERS_HEADER)) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def stream_rows(n: int, seed: int) -> list[str]:
    """The seeded demo stream written as ORDERS.csv rows (a market order's price 0 = empty)."""
    from matching_core.streams import generate_stream

    rows = []
    for m in generate_stream(n, seed).tolist():
        order_id, account, price, qty, op, side, otype, tif, post_only = m
        word = {
            k: _WORDS[k][v] for k, v in (("op", op), ("side", side), ("type", otype), ("tif", tif))
        }
        if word["op"] == "cancel":
            rows.append(f"cancel,{order_id},,,,,,,")
        elif word["op"] == "amend":
            rows.append(f"amend,{order_id},,,,{price},{qty},,")
        else:
            shown = "" if word["type"] == "market" and price == 0 else str(price)
            rows.append(
                f"add,{order_id},{account},{word['side']},{word['type']},{shown},{qty},"
                f"{word['tif']},{post_only}"
            )
    return rows


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def match_args(tmp_path: Path, orders: Path, *extra: str) -> list[str]:
    return [
        "match",
        str(orders),
        "--fills",
        str(tmp_path / "FILLS.csv"),
        "--book",
        str(tmp_path / "BOOK.csv"),
        *extra,
    ]


# ---------------------------------------------------------------------------------------------
# match
# ---------------------------------------------------------------------------------------------


def test_match_writes_hand_worked_fills_book_reports_and_prints_a_summary(tmp_path):
    orders = write_orders(tmp_path / "ORDERS.csv", ROWS)
    result = run(*match_args(tmp_path, orders, "--reports", str(tmp_path / "REPORTS.csv")))
    assert result.exit_code == 0, result.output
    assert read_csv(tmp_path / "FILLS.csv") == FILLS
    assert read_csv(tmp_path / "BOOK.csv") == BOOK
    assert read_csv(tmp_path / "REPORTS.csv") == REPORTS
    # 8 messages, 1 rejected (line 7), fills 4 + 3 + 2 = 9 lots, only id 2 left resting
    assert result.stdout.strip() == (
        "messages 8, accepted 7, rejected 1, fills 3 (9 lots), resting orders 1"
    )


def test_match_malformed_row_prints_line_to_stderr_exits_2_and_writes_nothing(tmp_path):
    orders = write_orders(tmp_path / "ORDERS.csv", [*ROWS[:5], "add,6,1,buy,limit,abc,5,,"])
    result = run(*match_args(tmp_path, orders, "--reports", str(tmp_path / "REPORTS.csv")))
    assert result.exit_code == 2
    assert "line 7: price: 'abc' is not an integer" in result.stderr
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ORDERS.csv"]


def test_match_malformed_file_leaves_existing_outputs_untouched(tmp_path):
    orders = write_orders(tmp_path / "ORDERS.csv", [*ROWS, "bogus,1,,,,,,,"])
    existing = {}
    for name in ("FILLS.csv", "BOOK.csv", "REPORTS.csv"):
        (tmp_path / name).write_text(f"keep {name}\n", encoding="utf-8")
        existing[name] = (tmp_path / name).read_bytes()
    result = run(*match_args(tmp_path, orders, "--reports", str(tmp_path / "REPORTS.csv")))
    assert result.exit_code == 2
    assert "line 10: op: 'bogus' is not one of add, cancel, amend" in result.stderr
    for name, content in existing.items():
        assert (tmp_path / name).read_bytes() == content


def test_match_wrong_header_exits_2(tmp_path):
    orders = write_orders(tmp_path / "ORDERS.csv", ROWS, header="op,id,account")
    result = run(*match_args(tmp_path, orders))
    assert result.exit_code == 2
    assert "line 1: header must be" in result.stderr
    assert not (tmp_path / "FILLS.csv").exists()


def test_match_missing_orders_file_is_a_usage_error(tmp_path):
    result = run(*match_args(tmp_path, tmp_path / "nope.csv"))
    assert result.exit_code == 2
    assert not (tmp_path / "FILLS.csv").exists()


def test_match_requires_fills_and_book_options(tmp_path):
    orders = write_orders(tmp_path / "ORDERS.csv", ROWS)
    result = run("match", str(orders), "--fills", str(tmp_path / "FILLS.csv"))
    assert result.exit_code == 2
    assert "--book" in result.output
    assert not (tmp_path / "FILLS.csv").exists()


def test_match_refuses_to_overwrite_the_orders_file(tmp_path):
    orders = write_orders(tmp_path / "ORDERS.csv", ROWS)
    before = orders.read_bytes()
    result = run("match", str(orders), "--fills", str(orders), "--book", str(tmp_path / "B.csv"))
    assert result.exit_code == 2
    assert orders.read_bytes() == before
    assert not (tmp_path / "B.csv").exists()


def test_match_unwritable_output_directory_exits_1_without_partial_files(tmp_path):
    orders = write_orders(tmp_path / "ORDERS.csv", ROWS)
    result = run(
        "match",
        str(orders),
        "--fills",
        str(tmp_path / "FILLS.csv"),
        "--book",
        str(tmp_path / "missing-dir" / "BOOK.csv"),
    )
    assert result.exit_code == 1
    assert "cannot write output" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ORDERS.csv"]


@pytest.mark.parametrize(
    ("flag", "fills", "book"),
    [
        # account 100 sells 5 @ 100 (id 1), account 200 sells 4 @ 100 (id 2), account 100 buys
        # 6 @ 100 (id 3); see SELF_CROSS_EXPECTED in test_orders_csv.py for the reasoning.
        (
            "none",
            [["3", "1", "100", "100", "100", "5"], ["3", "2", "100", "200", "100", "1"]],
            [["sell", "100", "2", "200", "3"]],
        ),
        (
            "cancel-resting",
            [["3", "2", "100", "200", "100", "4"]],
            [["buy", "100", "3", "100", "2"]],
        ),
        (
            "cancel-incoming",
            [],
            [["sell", "100", "1", "100", "5"], ["sell", "100", "2", "200", "4"]],
        ),
        ("cancel-both", [], [["sell", "100", "2", "200", "4"]]),
    ],
)
def test_stp_flag_changes_the_outcome_of_a_self_cross(tmp_path, flag, fills, book):
    orders = write_orders(tmp_path / "ORDERS.csv", SELF_CROSS)
    result = run(*match_args(tmp_path, orders, "--stp", flag))
    assert result.exit_code == 0, result.output
    assert read_csv(tmp_path / "FILLS.csv")[1:] == fills
    assert read_csv(tmp_path / "BOOK.csv")[1:] == book


def test_stp_default_is_none(tmp_path):
    orders = write_orders(tmp_path / "ORDERS.csv", SELF_CROSS)
    assert run(*match_args(tmp_path, orders)).exit_code == 0
    assert read_csv(tmp_path / "FILLS.csv")[1] == ["3", "1", "100", "100", "100", "5"]


def test_unknown_stp_or_engine_is_a_usage_error(tmp_path):
    orders = write_orders(tmp_path / "ORDERS.csv", SELF_CROSS)
    assert run(*match_args(tmp_path, orders, "--stp", "cancel-newest")).exit_code == 2
    assert run(*match_args(tmp_path, orders, "--engine", "rust")).exit_code == 2
    assert not (tmp_path / "FILLS.csv").exists()


@pytest.mark.parametrize("stp", ["none", "cancel-resting", "cancel-incoming", "cancel-both"])
def test_engine_reference_gives_identical_output_files_to_cython(tmp_path, stp):
    orders = write_orders(tmp_path / "ORDERS.csv", stream_rows(4000, seed=101))
    outputs = {}
    for engine in ("cython", "reference"):
        out = tmp_path / engine
        out.mkdir()
        result = run(
            "match",
            str(orders),
            "--fills",
            str(out / "F.csv"),
            "--book",
            str(out / "B.csv"),
            "--reports",
            str(out / "R.csv"),
            "--stp",
            stp,
            "--engine",
            engine,
        )
        assert result.exit_code == 0, result.output
        outputs[engine] = (
            result.stdout,
            *((out / n).read_bytes() for n in ("F.csv", "B.csv", "R.csv")),
        )
    assert outputs["cython"] == outputs["reference"]
    assert outputs["cython"][1].count(b"\n") > 100  # it really traded


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------

DEMO_LABELS = [
    "messages",
    "adds",
    "cancels",
    "amends",
    "accepted",
    "rejected",
    "fills",
    "VWAP",
    "best bid / ask",
    "resting orders",
    "depth (top 5)",
    "throughput",
]


def test_demo_with_few_messages_prints_the_summary():
    result = run("demo", "--messages", "5000", "--seed", "3")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for label in DEMO_LABELS:
        assert label in out, label
    assert out.splitlines()[0].split() == ["messages", "5,000"]
    assert "messages/s" in out
    assert "generating 5,000 messages (seed 3)" in result.stderr


def test_demo_figures_except_throughput_depend_only_on_messages_and_seed():
    def figures(*args: str) -> list[str]:
        result = run("demo", *args)
        assert result.exit_code == 0, result.output
        return [line for line in result.stdout.splitlines() if "throughput" not in line]

    first = figures("--messages", "3000", "--seed", "11")
    assert figures("--messages", "3000", "--seed", "11") == first
    assert figures("--messages", "3000", "--seed", "12") != first


def test_demo_summary_numbers_match_the_stream(tmp_path):
    # The demo summary of a generated stream agrees with counts taken straight from the arrays.
    from matching_core.streams import generate_stream

    messages = generate_stream(4000, 5)
    book = OrderBook()
    reports = np.zeros(len(messages), dtype=REPORT_DTYPE)
    fills = book.process(messages, reports)
    result = run("demo", "--messages", "4000", "--seed", "5")
    out = result.stdout
    rejected = int(np.count_nonzero(reports["reject"]))
    assert f"rejected{'':<16}{rejected:>14,}" in out
    assert f"fills{'':<19}{len(fills):>14,}  traded {int(fills['qty'].sum()):,} lots" in out
    assert f"resting orders{'':<10}{len(book):>14,}" in out


def test_demo_summary_of_the_hand_worked_stream(tmp_path):
    orders = write_orders(tmp_path / "ORDERS.csv", ROWS)
    messages = read_orders(orders).messages
    book = OrderBook()
    reports = np.zeros(len(messages), dtype=REPORT_DTYPE)
    fills = book.process(messages, reports)
    lines = [" ".join(line.split()) for line in demo_summary(messages, reports, fills, book)]
    assert lines[:4] == [
        "messages 8",
        "adds 6 (75.0%), of which market 1",  # lines 2-5, 7, 8; market on line 5
        "cancels 1 (12.5%)",
        "amends 1 (12.5%)",
    ]
    assert lines[4:] == [
        "accepted 7 (87.5%)",
        "rejected 1 (12.5%)",
        "post_only_would_cross 1",
        "fills 3 traded 9 lots",
        "VWAP 50.111 ticks",  # (50*4 + 51*3 + 49*2) / 9 = 451 / 9 = 50.111...
        "best bid / ask - / 52",  # no bids left, so no spread
        "resting orders 1",
        "depth (top 5) bid lots bid px | ask px ask lots",
        "| 52 3",
    ]


def test_demo_rejects_non_positive_message_count():
    assert run("demo", "--messages", "0").exit_code == 2


def test_exact_vwap_is_exact_for_huge_prices_and_quantities():
    fills = np.zeros(3, dtype=FILL_DTYPE)
    fills["price"] = [2**53, 2**53 - 1, 3]
    fills["qty"] = [2**40, 2**40, 1]
    expected = Fraction((2**53) * 2**40 + (2**53 - 1) * 2**40 + 3, 2**41 + 1)
    assert exact_vwap(fills["price"], fills["qty"]) == expected
    assert exact_vwap(fills["price"][:0], fills["qty"][:0]) is None


# ---------------------------------------------------------------------------------------------
# help and python -m
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["match"], ["demo"]])
def test_every_command_and_option_has_help_text(command):
    result = run(*command, "--help")
    assert result.exit_code == 0
    group = main if not command else main.commands[command[0]]
    assert group.help
    for param in getattr(group, "params", []):
        if param.param_type_name == "option":
            assert param.help, param.name


def test_python_dash_m_runs_match(tmp_path):
    orders = write_orders(tmp_path / "ORDERS.csv", SELF_CROSS)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "matching_core",
            "match",
            str(orders),
            "--fills",
            str(tmp_path / "F.csv"),
            "--book",
            str(tmp_path / "B.csv"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "messages 3, accepted 3, rejected 0, fills 2 (6 lots), resting orders 1"
    )


def test_python_dash_m_demo_help():
    proc = subprocess.run(
        [sys.executable, "-m", "matching_core", "demo", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--messages" in proc.stdout and "python -m matching_core" in proc.stdout
