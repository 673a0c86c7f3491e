"""Order streams as CSV files: read ``ORDERS.csv``, write ``FILLS.csv``, ``BOOK.csv`` and
``REPORTS.csv``.

``ORDERS.csv`` has a header row with exactly the columns
``op,order_id,account,side,type,price,qty,tif,post_only`` and one message per row:

=============  ==================================================================================
column         meaning
=============  ==================================================================================
``op``         ``add`` | ``cancel`` | ``amend``
``order_id``   integer (int64)
``account``    integer (int64); ``add`` only
``side``       ``buy`` | ``sell``; ``add`` only
``type``       ``limit`` | ``market``; ``add`` only
``price``      integer ticks: the limit price of a limit ``add`` (required); the protection price
               of a market ``add`` (empty = none); the new price of an ``amend`` (required)
``qty``        integer lots: the order quantity of an ``add``; the new *open* quantity of an
               ``amend``
``tif``        ``gtc`` | ``ioc`` | ``fok``; empty means ``gtc``; ``add`` only
``post_only``  ``0`` | ``1``; empty means ``0``; ``add`` only
=============  ==================================================================================

A ``cancel`` needs only ``op`` and ``order_id``; an ``amend`` needs ``order_id``, ``price`` and
``qty``. Fields a row's op does not use are ignored (not even checked). Surrounding spaces are
stripped from every field; an empty field is a missing one; words are lower-case; blank lines are
skipped.

Only *syntax* is checked here. A row that cannot be read (wrong header, wrong number of fields,
unknown word, a number that is not an int64 integer, a missing required field) raises
:class:`OrdersFileError` naming the file line (1-based, the header is line 1). Everything the
order book decides (a non-positive quantity, an unknown order id, a price out of range, a
post-only order that would cross, ...) is *not* a file error: the message goes to the book,
which rejects it with a :class:`~matching_core.codes.Reject` code.

:func:`run_orders` is the whole ``match`` command: it parses the file completely, runs it through
a book, and only then writes the outputs, each atomically (a temporary file in the same
directory, then :func:`os.replace`). A malformed file therefore writes nothing at all.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic.functional_validators import PlainValidator
from pydantic_core import PydanticCustomError

from matching_core.codes import (
    FILL_DTYPE,
    MESSAGE_DTYPE,
    REPORT_DTYPE,
    RESTING_DTYPE,
    Op,
    OrderType,
    Reject,
    Side,
    StpMode,
    TimeInForce,
)

__all__ = [
    "BOOK_HEADER",
    "FILLS_HEADER",
    "ORDERS_HEADER",
    "REPORTS_HEADER",
    "MatchSummary",
    "OrdersFileError",
    "OutputPathError",
    "ParsedOrders",
    "book_rows",
    "fill_rows",
    "make_book",
    "parse_orders",
    "read_orders",
    "report_rows",
    "run_orders",
    "write_csv_files",
]

ORDERS_HEADER = ("op", "order_id", "account", "side", "type", "price", "qty", "tif", "post_only")
FILLS_HEADER = (
    "taker_order_id",
    "maker_order_id",
    "taker_account",
    "maker_account",
    "price",
    "qty",
)
BOOK_HEADER = ("side", "price", "order_id", "account", "qty")
REPORTS_HEADER = ("line", "op", "order_id", "result", "filled", "resting", "cancelled")

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

OP_WORDS = {"add": Op.ADD, "cancel": Op.CANCEL, "amend": Op.AMEND}
SIDE_WORDS = {"buy": Side.BUY, "sell": Side.SELL}
TYPE_WORDS = {"limit": OrderType.LIMIT, "market": OrderType.MARKET}
TIF_WORDS = {"gtc": TimeInForce.GTC, "ioc": TimeInForce.IOC, "fok": TimeInForce.FOK}
POST_ONLY_WORDS = {"0": 0, "1": 1}

_OP_NAMES = {int(v): k for k, v in OP_WORDS.items()}
_SIDE_NAMES = {int(v): k for k, v in SIDE_WORDS.items()}

# Plain ASCII decimal digits with an optional sign. Python's int() would also take "1_000",
# " 7" or non-ASCII digits; a file format should not.
_INTEGER = re.compile(r"[+-]?[0-9]+")


class OrdersFileError(ValueError):
    """A malformed ``ORDERS.csv``: the message names the file, the line (1-based, header = 1)
    and the problem, e.g. ``ORDERS.csv line 7: price: 'abc' is not an integer``."""


class OutputPathError(ValueError):
    """An output path of :func:`run_orders` is the orders file or another output."""


# --------------------------------------------------------------------------------------------
# Row validation (pydantic v2; every problem message is ours, not pydantic's wording)
# --------------------------------------------------------------------------------------------


def _int64(value: Any) -> int:
    if not isinstance(value, str) or not _INTEGER.fullmatch(value):
        raise PydanticCustomError(
            "not_integer", "{value} is not an integer", {"value": repr(value)}
        )
    number = int(value)
    if not INT64_MIN <= number <= INT64_MAX:
        raise PydanticCustomError(
            "int64_range", "{value} does not fit in a signed 64-bit integer", {"value": repr(value)}
        )
    return number


def _word(words: dict[str, Any]) -> PlainValidator:
    choices = ", ".join(words)

    def parse(value: Any) -> Any:
        try:
            return words[value]
        except (KeyError, TypeError):
            raise PydanticCustomError(
                "unknown_word",
                "{value} is not one of {choices}",
                {"value": repr(value), "choices": choices},
            ) from None

    return PlainValidator(parse)


Int64 = Annotated[int, PlainValidator(_int64)]
SideField = Annotated[Side, _word(SIDE_WORDS)]
TypeField = Annotated[OrderType, _word(TYPE_WORDS)]
TifField = Annotated[TimeInForce, _word(TIF_WORDS)]
PostOnlyField = Annotated[int, _word(POST_ONLY_WORDS)]


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class AddRow(_Row):
    """An ``add`` row: a new limit or market order. ``price`` in ticks (limit price, or a market
    order's protection price with 0 = none), ``qty`` in lots."""

    op: Literal["add"]
    order_id: Int64
    account: Int64
    side: SideField
    type: TypeField
    price: Int64 = 0
    qty: Int64
    tif: TifField = TimeInForce.GTC
    post_only: PostOnlyField = 0

    @model_validator(mode="after")
    def _limit_needs_price(self) -> AddRow:
        if self.type == OrderType.LIMIT and "price" not in self.model_fields_set:
            raise PydanticCustomError("missing_price", "price: missing (required for a limit add)")
        return self

    def message(self) -> tuple[int, ...]:
        """This row as a ``MESSAGE_DTYPE`` record tuple."""
        return (
            self.order_id,
            self.account,
            self.price,
            self.qty,
            Op.ADD,
            self.side,
            self.type,
            self.tif,
            self.post_only,
        )


class CancelRow(_Row):
    """A ``cancel`` row: only ``order_id`` is read."""

    op: Literal["cancel"]
    order_id: Int64

    def message(self) -> tuple[int, ...]:
        """This row as a ``MESSAGE_DTYPE`` record tuple (unused fields 0)."""
        return (self.order_id, 0, 0, 0, Op.CANCEL, 0, 0, 0, 0)


class AmendRow(_Row):
    """An ``amend`` row: ``price`` is the new limit price in ticks, ``qty`` the new open
    quantity in lots."""

    op: Literal["amend"]
    order_id: Int64
    price: Int64
    qty: Int64

    def message(self) -> tuple[int, ...]:
        """This row as a ``MESSAGE_DTYPE`` record tuple (unused fields 0)."""
        return (self.order_id, 0, self.price, self.qty, Op.AMEND, 0, 0, 0, 0)


OrderRow = Annotated[AddRow | CancelRow | AmendRow, Field(discriminator="op")]
_ROW_ADAPTER: TypeAdapter[AddRow | CancelRow | AmendRow] = TypeAdapter(OrderRow)


def _describe(exc: ValidationError) -> str:
    """Our one-line wording of a row's validation errors."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = [str(part) for part in err["loc"]]
        field = loc[-1] if loc and loc[-1] in ORDERS_HEADER else None
        kind = err["type"]
        if kind == "union_tag_invalid":
            problems.append(f"op: {err['ctx']['tag']!r} is not one of {', '.join(OP_WORDS)}")
        elif kind == "union_tag_not_found":
            problems.append("op: missing (one of " + ", ".join(OP_WORDS) + ")")
        elif kind == "missing":
            op = loc[0] if loc else "this op"
            problems.append(f"{field}: missing (required for {op})")
        elif field is not None:
            problems.append(f"{field}: {err['msg']}")
        else:
            problems.append(err["msg"])
    return "; ".join(problems)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


class ParsedOrders(NamedTuple):
    """A parsed order file: ``messages`` (``MESSAGE_DTYPE``, one per data row, file order) and
    ``lines`` (int64, the 1-based file line of each message's row)."""

    messages: np.ndarray
    lines: np.ndarray


def parse_orders(text_lines: Iterable[str], source: str = "ORDERS.csv") -> ParsedOrders:
    """Parse the lines of an order file (header first) into ``MESSAGE_DTYPE`` messages.

    Prices are integer ticks and quantities integer lots, copied unchanged; semantic checks are
    left to the book. ``source`` names the file in error messages. Raises
    :class:`OrdersFileError` at the first malformed row.
    """

    def fail(line: int, problem: str) -> OrdersFileError:
        return OrdersFileError(f"{source} line {line}: {problem}")

    reader = csv.reader(text_lines, strict=True)
    records: list[tuple[int, ...]] = []
    line_numbers: list[int] = []
    rows = _numbered_rows(reader, fail)
    first = next(rows, None)
    if first is None:
        raise fail(1, "empty file; expected the header " + ",".join(ORDERS_HEADER))
    line, header = first
    if tuple(field.strip() for field in header) != ORDERS_HEADER:
        raise fail(line, f"header must be {','.join(ORDERS_HEADER)!r}, got {','.join(header)!r}")
    width = len(ORDERS_HEADER)
    for line, row in rows:
        if len(row) != width:
            raise fail(line, f"expected {width} fields, got {len(row)}")
        raw = {}
        for name, value in zip(ORDERS_HEADER, row, strict=True):
            value = value.strip()
            if value:
                raw[name] = value
        try:
            parsed = _ROW_ADAPTER.validate_python(raw)
        except ValidationError as exc:
            raise fail(line, _describe(exc)) from None
        records.append(parsed.message())
        line_numbers.append(line)
    messages = np.array(records, dtype=MESSAGE_DTYPE) if records else np.zeros(0, MESSAGE_DTYPE)
    return ParsedOrders(messages, np.array(line_numbers, dtype=np.int64))


def _numbered_rows(reader: Any, fail: Any) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(first file line, fields)`` for each non-blank row."""
    previous = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise fail(previous + 1, f"unreadable CSV: {exc}") from None
        line, previous = previous + 1, reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # a blank line
        yield line, row


def read_orders(path: str | os.PathLike[str]) -> ParsedOrders:
    """Read and parse an ``ORDERS.csv`` file (UTF-8, an optional byte-order mark).

    Returns the messages (prices in ticks, quantities in lots) and their file lines. Raises
    :class:`OrdersFileError` if any row is malformed or the file is not UTF-8 text; ``OSError``
    if it cannot be opened.
    """
    source = str(path)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        try:
            return parse_orders(handle, source=source)
        except UnicodeDecodeError as exc:
            raise OrdersFileError(f"{source}: not UTF-8 text ({exc.reason})") from None


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def fill_rows(fills: np.ndarray) -> list[tuple[int, ...]]:
    """``FILLS.csv`` rows (without header) from a ``FILL_DTYPE`` array, in match order:
    ``taker_order_id, maker_order_id, taker_account, maker_account, price (ticks), qty (lots)``.
    """
    if fills.dtype != FILL_DTYPE:
        raise TypeError(f"expected FILL_DTYPE, got {fills.dtype}")
    return np.asarray(fills[list(FILLS_HEADER)]).tolist()


def book_rows(snapshot: np.ndarray) -> list[tuple[object, ...]]:
    """``BOOK.csv`` rows (without header) from a ``RESTING_DTYPE`` snapshot, in its order (bids
    best-first, then asks best-first, time priority within a level):
    ``side (buy/sell), price (ticks), order_id, account, qty (lots)``."""
    if snapshot.dtype != RESTING_DTYPE:
        raise TypeError(f"expected RESTING_DTYPE, got {snapshot.dtype}")
    return [
        (_SIDE_NAMES[side], price, order_id, account, qty)
        for side, price, order_id, account, qty in snapshot[list(BOOK_HEADER)].tolist()
    ]


def report_rows(
    messages: np.ndarray, lines: np.ndarray, reports: np.ndarray
) -> list[tuple[object, ...]]:
    """``REPORTS.csv`` rows (without header), one per message:
    ``line, op, order_id, result (ok or the lower-case Reject name), filled, resting, cancelled``
    (quantities in lots)."""
    if reports.dtype != REPORT_DTYPE or messages.dtype != MESSAGE_DTYPE:
        raise TypeError("expected MESSAGE_DTYPE messages and REPORT_DTYPE reports")
    if not len(messages) == len(lines) == len(reports):
        raise ValueError("messages, lines and reports differ in length")
    results = {int(code): code.name.lower() for code in Reject}
    return [
        (
            line,
            _OP_NAMES.get(op, str(op)),
            order_id,
            results.get(reject, str(reject)),
            filled,
            resting,
            cancelled,
        )
        for line, op, order_id, (reject, filled, resting, cancelled) in zip(
            lines.tolist(),
            messages["op"].tolist(),
            messages["order_id"].tolist(),
            reports.tolist(),
            strict=True,
        )
    ]


def write_csv_files(
    files: dict[str | os.PathLike[str], tuple[tuple[str, ...], Iterable[Iterable[object]]]],
) -> None:
    """Write several CSV files, each as ``{path: (header, rows)}``, as atomically as the file
    system allows: every file goes to a temporary file in its own directory first, and only
    when all are written are they renamed into place with :func:`os.replace`. An error while
    writing leaves every destination untouched and removes the temporaries."""
    staged: list[tuple[str, str]] = []
    try:
        for path, (header, rows) in files.items():
            target = os.fspath(path)
            directory = os.path.dirname(os.path.abspath(target))
            temp = os.path.join(
                directory, f".{os.path.basename(target)}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            )
            # 0o666 before the umask, like a file open() would create (mkstemp would use 0o600).
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            staged.append((temp, target))
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow(header)
                writer.writerows(rows)
                handle.flush()
                os.fsync(handle.fileno())
        for temp, target in staged:
            os.replace(temp, target)
        staged.clear()
    finally:
        for temp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)


# --------------------------------------------------------------------------------------------
# The match command
# --------------------------------------------------------------------------------------------

ENGINES = ("cython", "reference")


def make_book(engine: str = "cython", stp: StpMode = StpMode.NONE) -> Any:
    """A fresh book with the default price (ticks) and quantity (lots) limits: the Cython
    ``OrderBook`` (``engine="cython"``) or the pure-Python ``ReferenceBook``
    (``engine="reference"``), with ``stp`` the default self-trade-prevention mode of every
    account."""
    if engine == "cython":
        from matching_core import OrderBook

        return OrderBook(stp=stp)
    if engine == "reference":
        from matching_core import ReferenceBook

        return ReferenceBook(stp=stp)
    raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")


@dataclass(frozen=True)
class MatchSummary:
    """What one ``match`` run did: message counts, fills and lots traded, resting orders."""

    messages: int
    accepted: int
    rejected: int
    fills: int
    traded_lots: int
    resting_orders: int

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        return (
            f"messages {self.messages}, accepted {self.accepted}, rejected {self.rejected}, "
            f"fills {self.fills} ({self.traded_lots} lots), resting orders {self.resting_orders}"
        )


def run_orders(
    orders_path: str | os.PathLike[str],
    fills_path: str | os.PathLike[str],
    book_path: str | os.PathLike[str],
    reports_path: str | os.PathLike[str] | None = None,
    *,
    stp: StpMode = StpMode.NONE,
    engine: str = "cython",
) -> MatchSummary:
    """Run an ``ORDERS.csv`` through a fresh book and write ``FILLS.csv``, ``BOOK.csv`` and,
    if ``reports_path`` is given, ``REPORTS.csv``.

    The whole file is parsed and matched before anything is written; a malformed file raises
    :class:`OrdersFileError` and leaves every output path untouched, and an output path equal
    to the orders file or to another output raises :class:`OutputPathError` before reading.
    ``stp`` is the default self-trade-prevention mode of every account; ``engine`` is
    ``"cython"`` or ``"reference"``. Returns the run's :class:`MatchSummary`.
    """
    outputs = [fills_path, book_path] + ([reports_path] if reports_path is not None else [])
    _check_distinct(orders_path, outputs)
    parsed = read_orders(orders_path)
    book = make_book(engine, StpMode(stp))
    reports = np.zeros(len(parsed.messages), dtype=REPORT_DTYPE)
    fills = book.process(parsed.messages, reports)
    files: dict[Any, tuple[tuple[str, ...], Iterable[Iterable[object]]]] = {
        fills_path: (FILLS_HEADER, fill_rows(fills)),
        book_path: (BOOK_HEADER, book_rows(book.snapshot())),
    }
    if reports_path is not None:
        files[reports_path] = (REPORTS_HEADER, report_rows(parsed.messages, parsed.lines, reports))
    write_csv_files(files)
    accepted = int(np.count_nonzero(reports["reject"] == Reject.OK))
    return MatchSummary(
        messages=len(parsed.messages),
        accepted=accepted,
        rejected=len(parsed.messages) - accepted,
        fills=len(fills),
        traded_lots=int(fills["qty"].sum()),
        resting_orders=len(book),
    )


def _check_distinct(
    orders_path: str | os.PathLike[str], outputs: list[str | os.PathLike[str]]
) -> None:
    seen = {Path(orders_path).resolve(): "the orders file"}
    for path in outputs:
        key = Path(path).resolve()
        if key in seen:
            raise OutputPathError(f"output {os.fspath(path)!r} is the same file as {seen[key]}")
        seen[key] = f"output {os.fspath(path)!r}"
