"""ORDERS.csv parsing and FILLS/BOOK/REPORTS writing (matching_core.orders_csv).

Every expected fill, book and report below is worked out by hand from docs/matching_core.md;
the comments next to each row give the reasoning.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import numpy as np
import pytest

from matching_core.codes import MESSAGE_DTYPE, Op, OrderType, Side, StpMode, TimeInForce
from matching_core.orders_csv import (
    ORDERS_HEADER,
    OrdersFileError,
    OutputPathError,
    parse_orders,
    read_orders,
    run_orders,
    write_csv_files,
)

HEADER = ",".join(ORDERS_HEADER)

# A hand-worked stream (default STP NONE). File line numbers in the first comment column.
HAND_ROWS = [
    "add,1,100,sell,limit,101,5,,",  # 2: rests ask 101 x5
    "add,2,100,sell,limit,102,3,gtc,0",  # 3: rests ask 102 x3
    "add,3,200,sell,limit,101,4,,",  # 4: rests ask 101 x4, behind id 1
    "add,4,300,buy,limit,99,10,,",  # 5: rests bid 99 x10
    "add,5,300,buy,limit,98,2,,1",  # 6: post-only, best ask 101 > 98: rests bid 98 x2
    "add,6,400,buy,limit,101,7,,",  # 7: takes id1 5@101, id3 2@101 (id3 left 2)
    "add,7,400,buy,market,,4,,",  # 8: market, no protection: id3 2@101, id2 2@102 (id2 left 1)
    "add,8,500,sell,limit,99,3,ioc,",  # 9: takes id4 3@99 (id4 left 7)
    "cancel,5,,,,,,,",  # 10: removes bid 98 x2
    "cancel,5,,,,,,,",  # 11: id 5 no longer resting: unknown_order_id
    "amend,4,,,,99,6,,",  # 12: same price, 6 <= 7 open: in place, 1 lot cancelled
    "add,9,600,buy,limit,97,5,,",  # 13: rests bid 97 x5
    "amend,9,,,,102,5,,",  # 14: re-priced to 102: crosses id2 1@102, rests 4 at 102
    "add,10,700,sell,market,100,10,,",  # 15: protection 100: id9 4@102; 99 < 100 stops; 6 cxl
    "add,11,700,sell,limit,0,5,,",  # 16: non_positive_price
    "add,12,700,sell,limit,105,0,,",  # 17: non_positive_qty
    "add,13,700,buy,limit,98,2,fok,",  # 18: no asks at all: fok_not_fillable
    "add,14,800,sell,limit,103,2,,1",  # 19: post-only, best bid 99 < 103: rests ask 103 x2
    "add,15,800,sell,limit,99,1,,1",  # 20: post-only, best bid 99 >= 99: post_only_would_cross
    "add,4,900,sell,limit,110,1,,",  # 21: id 4 is resting: duplicate_order_id
]

HAND_FILLS = [
    ["taker_order_id", "maker_order_id", "taker_account", "maker_account", "price", "qty"],
    ["6", "1", "400", "100", "101", "5"],
    ["6", "3", "400", "200", "101", "2"],
    ["7", "3", "400", "200", "101", "2"],
    ["7", "2", "400", "100", "102", "2"],
    ["8", "4", "500", "300", "99", "3"],
    ["9", "2", "600", "100", "102", "1"],
    ["10", "9", "700", "600", "102", "4"],
]

HAND_BOOK = [
    ["side", "price", "order_id", "account", "qty"],
    ["buy", "99", "4", "300", "6"],
    ["sell", "103", "14", "800", "2"],
]

HAND_REPORTS = [
    ["line", "op", "order_id", "result", "filled", "resting", "cancelled"],
    ["2", "add", "1", "ok", "0", "5", "0"],
    ["3", "add", "2", "ok", "0", "3", "0"],
    ["4", "add", "3", "ok", "0", "4", "0"],
    ["5", "add", "4", "ok", "0", "10", "0"],
    ["6", "add", "5", "ok", "0", "2", "0"],
    ["7", "add", "6", "ok", "7", "0", "0"],
    ["8", "add", "7", "ok", "4", "0", "0"],
    ["9", "add", "8", "ok", "3", "0", "0"],
    ["10", "cancel", "5", "ok", "0", "0", "2"],
    ["11", "cancel", "5", "unknown_order_id", "0", "0", "0"],
    ["12", "amend", "4", "ok", "0", "6", "1"],
    ["13", "add", "9", "ok", "0", "5", "0"],
    ["14", "amend", "9", "ok", "1", "4", "0"],
    ["15", "add", "10", "ok", "4", "0", "6"],
    ["16", "add", "11", "non_positive_price", "0", "0", "0"],
    ["17", "add", "12", "non_positive_qty", "0", "0", "0"],
    ["18", "add", "13", "fok_not_fillable", "0", "0", "0"],
    ["19", "add", "14", "ok", "0", "2", "0"],
    ["20", "add", "15", "post_only_would_cross", "0", "0", "0"],
    ["21", "add", "4", "duplicate_order_id", "0", "0", "0"],
]


def write_orders(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def parse(rows: list[str], header: str = HEADER):
    return parse_orders([header + "\n", *(row + "\n" for row in rows)])


def outputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    return tmp_path / "FILLS.csv", tmp_path / "BOOK.csv", tmp_path / "REPORTS.csv"


# ---------------------------------------------------------------------------------------------
# The hand-worked stream, end to end
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["cython", "reference"])
def test_hand_worked_stream_gives_the_fills_book_and_reports_derived_from_the_spec(
    tmp_path, engine
):
    orders = write_orders(tmp_path / "ORDERS.csv", HAND_ROWS)
    fills, book, reports = outputs(tmp_path)
    summary = run_orders(orders, fills, book, reports, engine=engine)
    assert read_csv(fills) == HAND_FILLS
    assert read_csv(book) == HAND_BOOK
    assert read_csv(reports) == HAND_REPORTS
    # 20 messages; rejected on lines 11, 16, 17, 18, 20, 21; lots 5+2+2+2+3+1+4 = 19.
    assert (summary.messages, summary.accepted, summary.rejected) == (20, 14, 6)
    assert (summary.fills, summary.traded_lots, summary.resting_orders) == (7, 19, 2)


def test_reports_file_is_only_written_when_asked_for(tmp_path):
    orders = write_orders(tmp_path / "ORDERS.csv", HAND_ROWS)
    fills, book, reports = outputs(tmp_path)
    run_orders(orders, fills, book)
    assert fills.exists() and book.exists()
    assert not reports.exists()


def test_header_only_file_writes_header_only_outputs(tmp_path):
    orders = write_orders(tmp_path / "ORDERS.csv", [])
    fills, book, reports = outputs(tmp_path)
    summary = run_orders(orders, fills, book, reports)
    assert read_csv(fills) == [HAND_FILLS[0]]
    assert read_csv(book) == [HAND_BOOK[0]]
    assert read_csv(reports) == [HAND_REPORTS[0]]
    assert summary.messages == 0


def test_semantic_problems_are_book_rejections_not_file_errors(tmp_path):
    orders = write_orders(
        tmp_path / "ORDERS.csv",
        [
            "add,1,1,buy,limit,100,-5,,",  # 2: negative qty
            "add,2,1,buy,limit,-100,5,,",  # 3: negative price
            f"add,3,1,buy,limit,{2**53 + 1},5,,",  # 4: above the default max price 2**53
            f"add,4,1,buy,limit,100,{2**40 + 1},,",  # 5: above the default max qty 2**40
            "cancel,99,,,,,,,",  # 6: never existed
            "amend,99,,,,100,5,,",  # 7: never existed
            "add,5,1,buy,market,,5,,1",  # 8: post-only market order
            "add,6,1,sell,market,-1,5,,",  # 9: negative protection price
        ],
    )
    fills, book, reports = outputs(tmp_path)
    summary = run_orders(orders, fills, book, reports)
    results = [row[3] for row in read_csv(reports)[1:]]
    assert results == [
        "non_positive_qty",
        "non_positive_price",
        "price_out_of_range",
        "qty_out_of_range",
        "unknown_order_id",
        "unknown_order_id",
        "invalid_post_only",
        "non_positive_price",
    ]
    assert summary.rejected == 8
    assert read_csv(book) == [HAND_BOOK[0]]


def test_reports_carry_the_file_line_numbers_across_blank_lines(tmp_path):
    orders = tmp_path / "ORDERS.csv"
    orders.write_text(
        HEADER + "\n\nadd,1,1,buy,limit,100,5,,\n\n\ncancel,1,,,,,,,\n\n", encoding="utf-8"
    )
    fills, book, reports = outputs(tmp_path)
    run_orders(orders, fills, book, reports)
    assert read_csv(reports)[1:] == [
        ["3", "add", "1", "ok", "0", "5", "0"],
        ["6", "cancel", "1", "ok", "0", "0", "5"],
    ]


# ---------------------------------------------------------------------------------------------
# Parsing: what each row becomes
# ---------------------------------------------------------------------------------------------


def test_limit_add_row_maps_every_field_onto_the_message():
    parsed = parse(["add,42,7,sell,limit,1234,56,ioc,0"])
    (msg,) = parsed.messages.tolist()
    assert msg == (42, 7, 1234, 56, Op.ADD, Side.SELL, OrderType.LIMIT, TimeInForce.IOC, 0)
    assert parsed.messages.dtype == MESSAGE_DTYPE
    assert parsed.lines.tolist() == [2]


def test_empty_tif_means_gtc_and_empty_post_only_means_zero():
    parsed = parse(["add,1,7,buy,limit,100,5,,", "add,2,7,buy,limit,100,5,fok,1"])
    assert parsed.messages["tif"].tolist() == [TimeInForce.GTC, TimeInForce.FOK]
    assert parsed.messages["post_only"].tolist() == [0, 1]


def test_market_order_with_empty_price_has_no_protection_price():
    parsed = parse(["add,1,7,buy,market,,5,,", "add,2,7,sell,market,95,5,,"])
    assert parsed.messages["type"].tolist() == [OrderType.MARKET, OrderType.MARKET]
    assert parsed.messages["price"].tolist() == [0, 95]


def test_cancel_row_needs_only_op_and_order_id_and_ignores_other_fields():
    parsed = parse(["cancel,9,,,,,,,", "cancel,10,3,nonsense,x,abc,y,z,7"])
    assert parsed.messages["op"].tolist() == [Op.CANCEL, Op.CANCEL]
    assert parsed.messages["order_id"].tolist() == [9, 10]
    assert parsed.messages[["account", "price", "qty"]].tolist() == [(0, 0, 0), (0, 0, 0)]


def test_amend_row_carries_new_price_and_new_open_qty():
    parsed = parse(["amend,9,,,,105,3,,", "amend,10,1,buy,limit,106,4,ioc,1"])
    assert parsed.messages["op"].tolist() == [Op.AMEND, Op.AMEND]
    assert parsed.messages[["order_id", "price", "qty"]].tolist() == [(9, 105, 3), (10, 106, 4)]
    # side/type/tif/post_only of an amend come from the resting order, not the row
    assert parsed.messages["tif"].tolist() == [0, 0]
    assert parsed.messages["post_only"].tolist() == [0, 0]


def test_numbers_may_be_signed_and_span_the_whole_int64_range():
    parsed = parse([f"add,{-(2**63)},{2**63 - 1},buy,limit,+7,-3,,"])
    assert parsed.messages[["order_id", "account", "price", "qty"]].tolist() == [
        (-(2**63), 2**63 - 1, 7, -3)
    ]


def test_surrounding_spaces_and_a_byte_order_mark_are_accepted(tmp_path):
    path = tmp_path / "ORDERS.csv"
    path.write_text("\ufeff" + HEADER + "\n add , 1 , 2 , buy , limit , 100 , 5 , , \n", "utf-8")
    parsed = read_orders(path)
    assert parsed.messages[["order_id", "account", "price", "qty"]].tolist() == [(1, 2, 100, 5)]


# ---------------------------------------------------------------------------------------------
# Malformed files: each kind of problem, with its line number
# ---------------------------------------------------------------------------------------------

GOOD = "add,1,7,buy,limit,100,5,,"

MALFORMED = [
    ("foo,1,7,buy,limit,100,5,,", "op: 'foo' is not one of add, cancel, amend"),
    ("ADD,1,7,buy,limit,100,5,,", "op: 'ADD' is not one of add, cancel, amend"),
    (",1,7,buy,limit,100,5,,", "op: missing"),
    ("add,1,7,bid,limit,100,5,,", "side: 'bid' is not one of buy, sell"),
    ("add,1,7,buy,stop,100,5,,", "type: 'stop' is not one of limit, market"),
    ("add,1,7,buy,limit,100,5,day,", "tif: 'day' is not one of gtc, ioc, fok"),
    ("add,1,7,buy,limit,100,5,,yes", "post_only: 'yes' is not one of 0, 1"),
    ("add,1,7,buy,limit,100,5,,2", "post_only: '2' is not one of 0, 1"),
    ("add,1,7,buy,limit,abc,5,,", "price: 'abc' is not an integer"),
    ("add,1,7,buy,limit,100.5,5,,", "price: '100.5' is not an integer"),
    ("add,1,7,buy,limit,100,1e3,,", "qty: '1e3' is not an integer"),
    ("add,1,7,buy,limit,100,1_000,,", "qty: '1_000' is not an integer"),
    ("add,x1,7,buy,limit,100,5,,", "order_id: 'x1' is not an integer"),
    ("add,1,seven,buy,limit,100,5,,", "account: 'seven' is not an integer"),
    (f"add,{2**63},7,buy,limit,100,5,,", f"order_id: '{2**63}' does not fit"),
    (f"add,1,7,buy,limit,{-(2**63) - 1},5,,", f"price: '{-(2**63) - 1}' does not fit"),
    ("add,1,7,buy,limit,,5,,", "price: missing (required for a limit add)"),
    ("add,,7,buy,limit,100,5,,", "order_id: missing (required for add)"),
    ("add,1,,buy,limit,100,5,,", "account: missing (required for add)"),
    ("add,1,7,,limit,100,5,,", "side: missing (required for add)"),
    ("add,1,7,buy,,100,5,,", "type: missing (required for add)"),
    ("add,1,7,buy,limit,100,,,", "qty: missing (required for add)"),
    ("add,1,7,buy,market,,,,", "qty: missing (required for add)"),
    ("cancel,,,,,,,,", "order_id: missing (required for cancel)"),
    ("cancel,abc,,,,,,,", "order_id: 'abc' is not an integer"),
    ("amend,1,,,,,5,,", "price: missing (required for amend)"),
    ("amend,1,,,,100,,,", "qty: missing (required for amend)"),
    ("amend,1,,,,100,five,,", "qty: 'five' is not an integer"),
    ("add,1,7,buy,limit,100,5,", "expected 9 fields, got 8"),
    ("add,1,7,buy,limit,100,5,,,", "expected 9 fields, got 10"),
    ("add", "expected 9 fields, got 1"),
    ('add,1,7,buy,limit,100,"5,,', "unreadable CSV"),
]


@pytest.mark.parametrize(("row", "problem"), MALFORMED, ids=[m[1] for m in MALFORMED])
def test_malformed_row_raises_with_its_line_number_and_the_problem(row, problem):
    # the bad row is data row 3, i.e. file line 4 (header = line 1)
    with pytest.raises(OrdersFileError) as info:
        parse([GOOD, "cancel,1,,,,,,,", row, GOOD])
    message = str(info.value)
    assert message.startswith("ORDERS.csv line 4: "), message
    assert problem in message


def test_orders_file_error_is_a_value_error():
    assert issubclass(OrdersFileError, ValueError)


def test_error_message_uses_the_given_file_name_and_counts_blank_lines(tmp_path):
    path = tmp_path / "my-orders.csv"
    path.write_text(HEADER + "\n" + GOOD + "\n\n" + "add,2,7,buy,limit,abc,5,,\n", "utf-8")
    with pytest.raises(OrdersFileError, match=r"my-orders\.csv line 4: price: 'abc' is not"):
        read_orders(path)


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("op,order_id,account,side,type,price,qty,tif", "header must be"),
        ("op,order_id,account,side,type,qty,price,tif,post_only", "header must be"),
        ("OP,ORDER_ID,ACCOUNT,SIDE,TYPE,PRICE,QTY,TIF,POST_ONLY", "header must be"),
        ("op,order_id,account,side,type,price,qty,tif,post_only,extra", "header must be"),
        (GOOD, "header must be"),  # no header: the first data row is read as one
    ],
)
def test_missing_or_wrong_header_is_reported_on_line_1(header, problem):
    with pytest.raises(OrdersFileError, match=rf"^ORDERS\.csv line 1: {problem}"):
        parse([GOOD], header=header)


def test_empty_file_is_reported_on_line_1(tmp_path):
    path = tmp_path / "ORDERS.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(OrdersFileError, match=r"line 1: empty file"):
        read_orders(path)


def test_non_utf8_file_is_a_file_error(tmp_path):
    path = tmp_path / "ORDERS.csv"
    path.write_bytes(HEADER.encode() + b"\nadd,1,7,buy,limit,100,5,,\xff\n")
    with pytest.raises(OrdersFileError, match="not UTF-8"):
        read_orders(path)


# ---------------------------------------------------------------------------------------------
# Nothing written on error; atomic writes
# ---------------------------------------------------------------------------------------------


def test_malformed_row_names_line_number_and_writes_nothing(tmp_path):
    orders = write_orders(tmp_path / "ORDERS.csv", [*HAND_ROWS[:5], "add,99,1,buy,limit,abc,5,,"])
    fills, book, reports = outputs(tmp_path)
    with pytest.raises(OrdersFileError, match=r"line 7: price: 'abc' is not an integer"):
        run_orders(orders, fills, book, reports)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ORDERS.csv"]


def test_malformed_last_row_leaves_existing_output_files_untouched(tmp_path):
    # The bad row is the very last one: every earlier row parsed fine, still nothing is written.
    orders = write_orders(tmp_path / "ORDERS.csv", [*HAND_ROWS, "amend,1,,,,,5,,"])
    fills, book, reports = outputs(tmp_path)
    before = {}
    for path in (fills, book, reports):
        path.write_text(f"previous contents of {path.name}\n", encoding="utf-8")
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
        before[path] = (path.read_bytes(), path.stat().st_mtime_ns)
    with pytest.raises(OrdersFileError, match=r"line 22: price: missing"):
        run_orders(orders, fills, book, reports)
    for path, (content, mtime) in before.items():
        assert (path.read_bytes(), path.stat().st_mtime_ns) == (content, mtime)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "BOOK.csv",
        "FILLS.csv",
        "ORDERS.csv",
        "REPORTS.csv",
    ]


def test_failure_while_writing_leaves_every_destination_untouched_and_no_temp_files(tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("old a\n", encoding="utf-8")

    def exploding_rows():
        yield (1, 2)
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_csv_files({first: (("x", "y"), [(1, 2)]), second: (("x", "y"), exploding_rows())})
    assert first.read_text(encoding="utf-8") == "old a\n"
    assert not second.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]


def test_written_files_replace_old_ones_and_get_normal_permissions(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n", encoding="utf-8")
    write_csv_files({target: (("a", "b"), [(1, 2), (3, 4)])})
    assert target.read_text(encoding="utf-8") == "a,b\n1,2\n3,4\n"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_output_path_equal_to_the_orders_file_or_another_output_is_refused(tmp_path):
    orders = write_orders(tmp_path / "ORDERS.csv", HAND_ROWS)
    original = orders.read_bytes()
    with pytest.raises(OutputPathError):
        run_orders(orders, orders, tmp_path / "BOOK.csv")
    with pytest.raises(OutputPathError):
        run_orders(orders, tmp_path / "X.csv", tmp_path / "X.csv")
    assert orders.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ORDERS.csv"]


# ---------------------------------------------------------------------------------------------
# Self-trade prevention and engine equivalence
# ---------------------------------------------------------------------------------------------

# Account 100 rests a sell 5 @ 100 (id 1), account 200 a sell 4 @ 100 (id 2) behind it, then
# account 100 buys 6 @ 100 (id 3): its first match would be against its own order.
SELF_CROSS = [
    "add,1,100,sell,limit,100,5,,",
    "add,2,200,sell,limit,100,4,,",
    "add,3,100,buy,limit,100,6,,",
]

SELF_CROSS_EXPECTED = {
    # NONE: trades with itself (5 @ 100), then 1 @ 100 with id 2; id 2 keeps 3.
    StpMode.NONE: (
        [["3", "1", "100", "100", "100", "5"], ["3", "2", "100", "200", "100", "1"]],
        [["sell", "100", "2", "200", "3"]],
        ["4", "add", "3", "ok", "6", "0", "0"],
    ),
    # CANCEL_RESTING: id 1 removed, 4 @ 100 with id 2, remaining 2 rest as a bid.
    StpMode.CANCEL_RESTING: (
        [["3", "2", "100", "200", "100", "4"]],
        [["buy", "100", "3", "100", "2"]],
        ["4", "add", "3", "ok", "4", "2", "0"],
    ),
    # CANCEL_INCOMING: nothing trades, the whole incoming order (6) is cancelled.
    StpMode.CANCEL_INCOMING: (
        [],
        [["sell", "100", "1", "100", "5"], ["sell", "100", "2", "200", "4"]],
        ["4", "add", "3", "ok", "0", "0", "6"],
    ),
    # CANCEL_BOTH: id 1 removed and the incoming order cancelled.
    StpMode.CANCEL_BOTH: (
        [],
        [["sell", "100", "2", "200", "4"]],
        ["4", "add", "3", "ok", "0", "0", "6"],
    ),
}


@pytest.mark.parametrize("engine", ["cython", "reference"])
@pytest.mark.parametrize("stp", list(SELF_CROSS_EXPECTED), ids=lambda m: m.name)
def test_stp_mode_decides_the_outcome_of_a_self_cross(tmp_path, stp, engine):
    orders = write_orders(tmp_path / "ORDERS.csv", SELF_CROSS)
    fills, book, reports = outputs(tmp_path)
    run_orders(orders, fills, book, reports, stp=stp, engine=engine)
    expected_fills, expected_book, expected_report = SELF_CROSS_EXPECTED[stp]
    assert read_csv(fills)[1:] == expected_fills
    assert read_csv(book)[1:] == expected_book
    assert read_csv(reports)[-1] == expected_report


def random_orders(seed: int, n: int) -> list[str]:
    """A seeded messy stream: crossing prices, few accounts (self-crosses), every op, tif,
    market orders with and without protection, and some rejects."""
    rng = random.Random(seed)
    rows, next_id = [], 1
    for _ in range(n):
        r = rng.random()
        target = rng.randint(1, max(1, next_id - 1))
        if r < 0.6:
            side = rng.choice(["buy", "sell"])
            account = rng.randint(1, 4)
            qty = rng.randint(-1, 12)
            if rng.random() < 0.15:
                price = rng.choice(["", "", str(rng.randint(95, 105))])
                rows.append(f"add,{next_id},{account},{side},market,{price},{qty},,")
            else:
                tif = rng.choice(["", "gtc", "ioc", "fok"])
                post = rng.choice(["", "0", "1"]) if tif in ("", "gtc") else ""
                price = rng.randint(94, 106)
                rows.append(f"add,{next_id},{account},{side},limit,{price},{qty},{tif},{post}")
            next_id += 1
        elif r < 0.85:
            rows.append(f"cancel,{target},,,,,,,")
        else:
            rows.append(f"amend,{target},,,,{rng.randint(94, 106)},{rng.randint(0, 12)},,")
    return rows


@pytest.mark.parametrize("stp", list(StpMode), ids=lambda m: m.name)
def test_reference_engine_writes_byte_identical_files_to_cython(tmp_path, stp):
    orders = write_orders(tmp_path / "ORDERS.csv", random_orders(seed=int(stp) + 11, n=3000))
    files = {}
    for engine in ("cython", "reference"):
        out = tmp_path / engine
        out.mkdir()
        fills, book, reports = outputs(out)
        run_orders(orders, fills, book, reports, stp=stp, engine=engine)
        files[engine] = [p.read_bytes() for p in (fills, book, reports)]
    assert files["cython"] == files["reference"]
    fills_rows = files["cython"][0].decode().splitlines()
    assert len(fills_rows) > 100  # the stream really trades


def test_fills_file_agrees_with_the_book_process_output(tmp_path):
    # FILLS.csv is the book's fill array column for column, in match order.
    from matching_core import OrderBook

    orders = write_orders(tmp_path / "ORDERS.csv", random_orders(seed=5, n=1000))
    fills, book, _ = outputs(tmp_path)
    run_orders(orders, fills, book)
    direct = OrderBook().process(read_orders(orders).messages)
    cols = ["taker_order_id", "maker_order_id", "taker_account", "maker_account", "price", "qty"]
    expected = [[str(v) for v in row] for row in np.asarray(direct[cols]).tolist()]
    assert read_csv(fills)[1:] == expected
