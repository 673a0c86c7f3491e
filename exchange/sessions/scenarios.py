"""Built-in scenarios.

A scenario is a validated configuration plus three steps: :meth:`setup` (list instruments,
open and fund accounts: engine calls, no commands), :meth:`schedule_market` (the exchange's own
timed actions: index prints, marks, funding, premiums, maturities — see
``exchange.sessions.market``)
and :meth:`drive` (schedule the commands its participants send, on the simulated clock).
Verification re-runs ``setup`` and ``schedule_market`` from the stored configuration and seed
and then feeds the *recorded* commands, so ``drive`` may do anything deterministic, while
``setup`` and ``schedule_market`` must be pure functions of the configuration and the seed.

Built-ins: ``flow`` (below) and ``products`` (``exchange.sessions.scenario_products``).

``flow`` — until the instrument and bot issues bring real scenarios — drives several traders on
one rental-price instrument with the seeded order generator of ``matching_core.streams``, and
sprinkles in deposits, withdrawals and malformed commands so every path of the kernel runs.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from exchange.core._clock import Simulator as CompiledSimulator
from exchange.core.clock import Simulator
from exchange.core.limits import (
    MAX_BALANCE,
    MAX_DURATION_NS,
    RawChecked,
    check_instrument,
    check_market_actions,
    check_money,
)
from exchange.kernel.engine import Exchange
from exchange.products.instruments import InstrumentSpec
from exchange.sessions._flow import FlowDriver
from matching_core import Op, OrderType
from matching_core.streams import OrderFlow

_SIDES = ("buy", "sell")
_ADD = int(Op.ADD)
#: A generated message's fields, as ``_FlowDriver.send`` unpacks them
#: (``matching_core.streams``' message record).
ROW_FIELDS = ("order_id", "account", "price", "qty", "op", "side", "type", "tif", "post_only")
_TIFS = ("gtc", "ioc", "fok")

#: An H100 rental contract: prices in tenths of a cent per GPU-hour, 100 GPU-hours a contract,
#: so one tick on one lot is worth 10 cents and the generator's mid of 10,000 ticks is $10/hr.
H100_RENTAL = InstrumentSpec(
    name="H100-SPOT",
    tick_size="0.001",
    lot_size=1,
    contract_multiplier="100",
    min_price=1,
    max_price=1_000_000,
    maker_fee_bps=-1,
    taker_fee_bps=5,
)


class FlowScenario(RawChecked):
    """Seeded order flow from several traders on one instrument.

    Attributes:
        messages: order-entry messages from the generator.
        traders: number of trading accounts (``trader-01`` ...).
        interval_ns: mean simulated time between messages, ns.
        initial_cash: each trader's opening deposit, minor units (cents).
        cash_every: every this many messages one trader deposits or withdraws (0 = never).
        malformed_every: every this many messages a malformed command arrives (0 = never).
        stp: self-trade-prevention mode of every trader.
    """

    model_config = ConfigDict(extra="forbid")

    name: Literal["flow"] = "flow"
    messages: int = Field(default=200_000, ge=1, le=50_000_000)
    traders: int = Field(default=8, ge=1, le=1_000)
    interval_ns: int = Field(default=1_000_000, ge=1, le=MAX_DURATION_NS)
    initial_cash: int = Field(default=10_000_000_00, ge=0, le=MAX_BALANCE)
    cash_every: int = Field(default=5_000, ge=0)
    malformed_every: int = Field(default=2_000, ge=0)
    stp: Literal["none", "cancel-resting", "cancel-incoming", "cancel-both"] = "cancel-resting"
    instrument: InstrumentSpec = H100_RENTAL

    @model_validator(mode="after")
    def _within_limits(self) -> FlowScenario:
        check_money(
            "initial_cash x traders (the session's opening deposits)",
            self.initial_cash * self.traders,
        )
        check_instrument("instrument", self.instrument)
        check_market_actions(self.end_ns, {})
        return self

    @property
    def end_ns(self) -> int:
        """Simulated time at which the session ends, ns."""
        return (self.messages + 1) * self.interval_ns

    @property
    def projected_events(self) -> int:
        """The fewest events a run makes, known before it starts: each of the ``messages``
        is answered with one event or more (about 3.3 on average: 1,055,811 events for
        320,000). A scenario model with this attribute has its journaller started at once when
        it is long (``exchange.sessions.session.projected_events``)."""
        return self.messages

    def trader(self, index: int) -> str:
        return f"trader-{index:02d}"

    def setup(self, engine: Exchange) -> None:
        """List the instrument, open and fund the traders."""
        engine.list_instrument(self.instrument)
        for i in range(1, self.traders + 1):
            engine.open_account(self.trader(i), stp=self.stp)
            if self.initial_cash:
                engine.credit(self.trader(i), self.initial_cash)

    def schedule_market(self, engine: Exchange, sim: Simulator, seed: int) -> None:
        """No indices or timed products in this scenario."""

    def drive(self, engine: Exchange, sim: Simulator, seed: int) -> None:
        """Schedule every command of the session on ``sim``: the compiled engine on the
        compiled clock (``exchange.core._clock``) gets the compiled driver
        (``exchange.sessions._flow.FlowDriver``), anything else the Python one; the same log."""
        if isinstance(sim, CompiledSimulator) and getattr(engine, "handle_row", None) is not None:
            FlowDriver(_FlowDriver(self, engine, sim, seed, typed=True)).start()
        else:
            _FlowDriver(self, engine, sim, seed).start()


class _FlowDriver:
    """Turns the generator's messages into commands at seeded times, a chunk at a time.

    The messages are generated :data:`CHUNK` at a time (``matching_core.streams.OrderFlow``),
    their arrival times and the cash amounts drawn as they are needed, and the map from the
    generator's order ids to the exchange's keeps only orders the generator still holds live
    (the only ones a later cancel or amend can name): the driver's memory does not grow with
    the session's length (issue #20).

    An engine with a ``handle_row`` (the compiled one) gets each message as its values; any
    other gets the command mapping :meth:`send` builds (``exchange.kernel.compiled.row_command``
    builds the same): both give the same log, byte for byte.

    With ``typed`` it only generates: the chunk's columns as int64 arrays (``arrays``, in
    :data:`ROW_FIELDS` order) and the times as an int64 array, for the compiled driver
    (``exchange.sessions._flow.FlowDriver``), which runs the messages, keeps the id map (its
    ``IdMap``, pruned as :meth:`_load` prunes :attr:`ids`, which it leaves empty) and calls
    :meth:`_load`, :meth:`cash` and :meth:`malformed` at the positions :meth:`step` does. This
    class is its reference, and drives the reference engine."""

    #: Messages generated at a time.
    CHUNK = 65_536

    def __init__(
        self,
        scenario: FlowScenario,
        engine: Exchange,
        sim: Simulator,
        seed: int,
        typed: bool = False,
    ):
        self.s = scenario
        self.typed = typed
        self.engine = engine
        self.sim = sim
        # the compiled driver generates with the compiled loop, the reference with the Python
        # one (its reference): both engines' logs agreeing checks the two loops end to end too
        self.flow = OrderFlow(seed, accounts=scenario.traders, compiled=None if typed else False)
        self._times_rng = np.random.default_rng([seed, 1])
        self._cash_rng = np.random.default_rng([seed, 2])
        self.count = scenario.messages
        self.names = [scenario.trader(i) for i in range(scenario.traders + 1)]
        self.ids: dict[int, int] = {}  # generator order id -> exchange order id
        self.instrument = scenario.instrument.name
        # the compiled engine takes a row's values as they are (``handle_row``: the same
        # events as ``handle`` of the mapping below, without building and parsing it); the
        # reference engine has no such entry and keeps the mapping
        self._row = getattr(engine, "handle_row", None)
        self._first = 0  # index of the first message of the loaded chunk
        self.columns: list[list[int]] = []
        self.arrays: list[np.ndarray] = []  # (typed) the columns as int64 arrays
        self.times: list[int] | np.ndarray = []
        self._load(0)

    def _load(self, first: int) -> None:
        """Generate the chunk of messages that starts at index ``first``."""
        if self.ids:  # (the compiled driver keeps its own map and leaves this one empty)
            live = self.flow.live_ids()
            self.ids = {gen: oid for gen, oid in self.ids.items() if gen in live}
        k = min(self.CHUNK, self.count - first)
        messages = self.flow.take(k)
        # message i arrives at (i + 1 + u_i) * interval, u_i uniform in [0, 1): strictly rising
        u = self._times_rng.random(k)
        times = ((np.arange(first, first + k) + 1 + u) * self.s.interval_ns).astype(np.int64)
        self._first = first
        if self.typed:
            # the compiled driver reads typed memory: no Python int per value
            self.arrays = [
                np.ascontiguousarray(messages[field], dtype=np.int64) for field in ROW_FIELDS
            ]
            self.times = times
            return
        # one list of ints per field, not a tuple per message: tuples would be traversed by
        # every full garbage collection of the run (ints are not tracked)
        self.columns = [messages[field].tolist() for field in ROW_FIELDS]
        # (the columns by name, for the compiled engine's rows)
        (
            self._gen_ids,
            self._accounts,
            self._prices,
            self._qtys,
            self._ops,
            self._sides,
            self._types,
            self._tifs,
            self._post_only,
        ) = self.columns
        self.times = times.tolist()

    def start(self) -> None:
        if self.count:
            self.sim.schedule(self.times[0], self.step, 0)

    def step(self, i: int) -> None:
        j = i - self._first
        row = self._row
        if row is not None:
            # the compiled engine: the row's values straight from the columns (what ``send``
            # does with them, without a list per message)
            op = self._ops[j]
            name = self.names[self._accounts[j]]
            price, qty = self._prices[j], self._qtys[j]
            side, otype, tif, post_only = (
                self._sides[j],
                self._types[j],
                self._tifs[j],
                self._post_only[j],
            )
            if op == _ADD:
                result = row(name, self.instrument, op, 0, price, qty, side, otype, tif, post_only)
                if result.order_id is not None:
                    self.ids[self._gen_ids[j]] = result.order_id
            else:
                order_id = self.ids.get(self._gen_ids[j], 0)
                row(name, self.instrument, op, order_id, price, qty, side, otype, tif, post_only)
        else:
            self.send(i, [column[j] for column in self.columns])
        s = self.s
        if s.cash_every and i % s.cash_every == s.cash_every - 1:
            self.cash(i)
        if s.malformed_every and i % s.malformed_every == s.malformed_every - 1:
            self.malformed(i)
        if i + 1 < self.count:
            if j + 1 == len(self.times):
                self._load(i + 1)
            self.sim.schedule(self.times[i + 1 - self._first], self.step, i + 1)

    def send(self, i: int, row: list) -> None:
        gen_id, account, price, qty, op, side, otype, tif, post_only = row
        name = self.names[account]
        # (``exchange.kernel.compiled.row_command`` is this mapping, for the compiled engine's rows)
        if op == Op.ADD:
            command: dict[str, Any] = {
                "type": "submit",
                "account": name,
                "instrument": self.instrument,
                "side": _SIDES[side],
                "qty": qty,
            }
            if otype == OrderType.MARKET:
                command["order_type"] = "market"
                if price:
                    command["price"] = price
            else:
                command["price"] = price
                command["tif"] = _TIFS[tif]
                command["post_only"] = bool(post_only)
            result = self.engine.handle(command)
            if result.order_id is not None:
                self.ids[gen_id] = result.order_id
        elif op == Op.CANCEL:
            self.engine.handle(
                {"type": "cancel", "account": name, "order_id": self.ids.get(gen_id, 0)}
            )
        else:
            self.engine.handle(
                {
                    "type": "amend",
                    "account": name,
                    "order_id": self.ids.get(gen_id, 0),
                    "price": price,
                    "qty": qty,
                }
            )

    def cash(self, i: int) -> None:
        k = i // self.s.cash_every
        name = self.s.trader(1 + k % self.s.traders)
        kind = "deposit" if k % 2 == 0 else "withdraw"
        amount = int(self._cash_rng.integers(1, 1_000_000_00))
        self.engine.handle({"type": kind, "account": name, "amount": amount})

    def malformed(self, i: int) -> None:
        k = i // self.s.malformed_every
        name = self.s.trader(1 + k % self.s.traders)
        bad = [
            {
                "type": "submit",
                "account": name,
                "instrument": self.instrument,
                "side": "up",
                "qty": 1,
                "price": 10_000,
            },
            {
                "type": "submit",
                "account": name,
                "instrument": self.instrument,
                "side": "buy",
                "qty": -5,
                "price": 10_000,
            },
            {"type": "cancel", "account": "nobody", "order_id": 1},
            {"type": "teleport", "account": name},
            {"type": "withdraw", "account": name, "amount": 10**15},
            "not even a mapping",
        ]
        self.engine.handle(bad[k % len(bad)])


def _builtins() -> dict[str, type[BaseModel]]:
    from exchange.sessions.scenario_products import ProductsScenario

    return {"flow": FlowScenario, "products": ProductsScenario}


SCENARIOS: dict[str, type[BaseModel]] = _builtins()

#: Entry-point group through which higher layers add scenario kinds without the exchange
#: importing them. A provider is a module with ``KIND`` (the ``kind`` field of the
#: configurations it owns), ``builtin_names()``, ``load(name_or_path, overrides)`` and
#: ``from_config(config)``; ``clients.scenario`` (scenario files with bots) is one.
PROVIDER_GROUP = "gpuex.scenarios"


def providers() -> list[Any]:
    """The installed scenario providers, in entry-point name order."""
    return list(_providers())


@functools.cache
def _providers() -> tuple[Any, ...]:
    """:func:`providers`, found once a process: reading the entry points scans every installed
    distribution's metadata (~3 ms), and every run asked (its plan rebuilds the scenario
    from its stored form); what is installed does not change under a running process."""
    found = entry_points(group=PROVIDER_GROUP)
    return tuple(ep.load() for ep in sorted(found, key=lambda ep: ep.name))


def scenario_names() -> list[str]:
    """Every built-in scenario name: the exchange's own and the providers'."""
    names = set(SCENARIOS)
    for provider in providers():
        names.update(provider.builtin_names())
    return sorted(names)


class ScenarioError(ValueError):
    """A scenario (its name, file, fields or overrides) is not valid: the message is one line
    naming the field and the problem (``days: Input should be less than or equal to 3660``).
    ``clients.scenario.ScenarioError`` is this class."""


def load_scenario(name: str, overrides: dict[str, Any] | None = None) -> Any:
    """A scenario by built-in name (or, through a provider, a scenario file path), with
    optional field overrides, validated against its model and the bounds of
    ``exchange.core.limits``.

    Raises:
        ScenarioError: one line naming the field and the problem (never another exception).
    """
    if not isinstance(name, str):
        raise ScenarioError(f"a scenario is named by a string, not {type(name).__name__}")
    if overrides is not None and not isinstance(overrides, dict):
        raise ScenarioError("overrides must be a mapping of field names to values")
    model = SCENARIOS.get(name)
    if model is not None:
        with scenario_errors():
            return model.model_validate({**(overrides or {}), "name": name})
    for provider in providers():
        if name in provider.builtin_names() or name.endswith(provider.SUFFIX):
            with scenario_errors():
                return provider.load(name, overrides)
    raise ScenarioError(f"unknown scenario {name!r}; built-ins: {', '.join(scenario_names())}")


@contextmanager
def scenario_errors() -> Iterator[None]:
    """Turn what validating a scenario raises into one :class:`ScenarioError` line: a pydantic
    error as its first problems (:func:`first_problem`), a ``ScenarioError`` as it is, and any
    other error a hostile file or override can cause (a value, type, overflow, arithmetic or
    recursion error) as its message, or its type's name when it has none. The built-in models,
    the providers' loaders and ``clients.scenario`` all validate inside it, so every way in
    promises the same: one line, never another exception."""
    try:
        yield
    except ValidationError as exc:
        raise ScenarioError(first_problem(exc)) from None
    except ScenarioError:
        raise
    except (ValueError, TypeError, OverflowError, ArithmeticError, RecursionError) as exc:
        raise ScenarioError(_one_line(str(exc) or type(exc).__name__)) from None


def first_problem(exc: ValidationError, most: int = 5) -> str:
    """A pydantic error as one line: each problem's field path and message (``days: ...;
    accounts.1.cash: ...``), the first ``most`` of them and how many more there are."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    if not problems:
        return _one_line(str(exc))
    more = f" (and {len(problems) - most} more)" if len(problems) > most else ""
    return _one_line("; ".join(problems[:most]) + more)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def is_registered(name: str, config: dict[str, Any]) -> bool:
    """Whether a stored scenario can be rebuilt from its name and configuration: a built-in
    name, a provider's scenario (by its ``kind``), or a file a provider reads."""
    if name in SCENARIOS:
        return True
    kind = config.get("kind") if isinstance(config, dict) else None
    return any(
        kind == provider.KIND or name in provider.builtin_names() or name.endswith(provider.SUFFIX)
        for provider in providers()
    )


def scenario_from_config(name: str, config: dict[str, Any]) -> Any:
    """The scenario a session stored: its name and its validated configuration.

    Raises:
        ScenarioError: the stored configuration is not a valid scenario (one line: the field
            and the problem), e.g. a log written before a limit existed.
    """
    if not isinstance(config, dict):
        raise ScenarioError("the stored scenario configuration is not a mapping")
    kind = config.get("kind")
    for provider in providers():
        if kind == provider.KIND:
            try:
                return provider.from_config(config)
            except ValidationError as exc:
                raise ScenarioError(f"the stored scenario: {first_problem(exc)}") from None
            except ScenarioError:
                raise
            except (ValueError, TypeError, OverflowError, ArithmeticError, RecursionError) as exc:
                raise ScenarioError(f"the stored scenario: {_one_line(str(exc))}") from None
    return load_scenario(name, {k: v for k, v in config.items() if k != "name"})
