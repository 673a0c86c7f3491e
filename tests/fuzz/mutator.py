"""A fast, seeded command fuzzer for :meth:`exchange.kernel.engine.Exchange.handle`.

Hypothesis explores structure (tests/fuzz/test_fuzz_commands.py); this module throws volume:
commands drawn from templates of every command type, most of them then mutated (a field set to
a hostile value -- ints past int64, negative, bools, NaN and infinities, huge and odd strings,
nested containers --, dropped, added or retyped, the acting account swapped, or the whole
command replaced by hostile JSON), through one engine with a spot instrument, a perpetual and a
swap series, with the exchange's own timed actions (index prints, marks, funding, premiums,
variation margin) between them so that amounts derived from hostile positions are exercised
too. ``random.Random(seed)``: the same seed gives the same inputs and the same log.

After every input :class:`Fuzzer` checks: ``handle`` returned (nothing raised); a refusal is
exactly one ``CommandRejected`` and changed nothing (a ledger fingerprint every time, the full
state hash every ``full_check_every`` refusals); an accepted command starts with
``CommandReceived``; every event encodes and its typed fields fit int64; the ledger balances
(cash + pools + withdrawn - deposited == 0, positions net to zero per instrument) after every
event, on a fold of the events; at the end the fold's state hash is the engine's.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import date
from typing import Any

from exchange.core import events as ev
from exchange.core.events import encode
from exchange.kernel.engine import Exchange
from exchange.products.instruments import InstrumentSpec
from exchange.risk.margin_cycle import AuctionBidder, MarginConfig
from exchange.store.fold import Fold
from tests.markets import HOUR_NS, START, perp_spec, rvs_spec

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

SPOT = InstrumentSpec(
    name="H100-SPOT",
    tick_size="0.001",
    contract_multiplier="100",
    max_price=1_000_000,
    maker_fee_bps=-1,
    taker_fee_bps=5,
)
# the shared H100 perpetual and swap (tests/markets.py) with the fuzzer's own impact depth,
# taker fee and term
PERP = perp_spec(impact_notional_lots=5, taker_fee_bps=3)
RVS = rvs_spec(maturity=date(2027, 6, 1))
INSTRUMENTS = (SPOT.name, PERP.name, RVS.name)
ACCOUNTS = ("alice", "bob", "carol", "dave")
STP = ("none", "cancel-resting", "cancel-incoming", "cancel-both")

_DEEP: list = []
_inner = _DEEP
for _ in range(400):  # deeper than orjson's limit (254)
    _inner.append([])
    _inner = _inner[0]

HOSTILE: tuple[Any, ...] = (
    0,
    -1,
    1,
    2,
    -(1 << 31),
    1 << 31,
    1 << 53,
    (1 << 62) - 1,
    1 << 62,
    (1 << 62) + 1,
    INT64_MAX,
    INT64_MAX + 1,
    1 << 64,
    -(1 << 63),
    -(1 << 64),
    10**17,
    10**17 + 1,
    10**15 + 1,
    10**9 + 1,
    10**30,
    True,
    False,
    None,
    0.5,
    1.0,
    -0.0,
    1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    " ",
    "1",
    "buy",
    "sell",
    "limit",
    "market",
    "gtc",
    "alice",
    "mallory",
    "H100-SPOT",
    "x" * 65,
    "x" * 9_000,
    "\x00",
    "\ud7ff\ue000",
    "é🙂漢字",
    "'; DROP TABLE events; --",
    [],
    {},
    [1, 2, 3],
    {"a": 1},
    {"type": "deposit"},
    _DEEP,
)
FIELDS = (
    "type",
    "account",
    "instrument",
    "side",
    "order_type",
    "price",
    "qty",
    "tif",
    "post_only",
    "order_id",
    "amount",
    "bot",
    "cause",
    "callback",
    "detail",
)
QTYS = (1, 1, 2, 3, 5, 10, 50, 1_000, 10**6, 10**8, 10**9, 10**10, (1 << 62) - 1, 1 << 62)
AMOUNTS = (1, 100, 10**6, 10**9, 10**12, 4 * 10**16, 10**17, 10**17 + 1, 1 << 62)


class InvariantBroken(AssertionError):
    """An input broke an invariant: the message names the input number, the seed and the
    input (``repr``, cut), enough to replay it."""


@dataclass
class FuzzSummary:
    """What a run did: ``inputs`` sent, ``rejected`` and ``accepted`` of them, ``events``
    checked, ``seconds`` of wall time (for the inputs/s figure only, never asserted)."""

    inputs: int
    rejected: int
    accepted: int
    events: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


class Fuzzer:
    """One engine, one fold, one seeded generator. ``run(n)`` sends ``n`` inputs."""

    def __init__(
        self,
        seed: int,
        full_check_every: int = 997,
        timed_every: int = 500,
        keep: bool = False,
        margin: bool = False,
    ) -> None:
        self.seed = seed
        #: every event, set-up included, when ``keep`` (for a test that stores the log)
        self.log: list[ev.Event] | None = [] if keep else None
        self.rng = random.Random(seed)
        self.full_check_every = full_check_every
        self.timed_every = timed_every
        self.pending: list[ev.Event] = []
        self.fold = Fold()
        self.engine = engine = Exchange(self.pending.append)
        self.events = 0
        engine.epoch = START
        engine.start("fuzz", seed, {})
        if margin:  # calls, liquidations, defaults, close-outs, auctions, the waterfall
            engine.margin = MarginConfig(
                cure_ns=8 * HOUR_NS,
                auction_bidders=[
                    AuctionBidder(account="dave", discount_ppm=200_000, max_lots=10**6)
                ],
            )
        for spec in (SPOT, PERP, RVS):
            engine.list_instrument(spec)
        for i, name in enumerate(ACCOUNTS):
            engine.open_account(name, stp=STP[i])
            engine.credit(name, 10**12)
            if margin:
                engine.contribute(name, 10**9)
        if margin:
            engine.fund_pool("insurance", 10**10)
        self.index = {"H100-RENTAL": 10_000, "H100-RESALE": 15_000}
        for name, ticks in self.index.items():
            engine.publish_index(name, ticks)
        self._absorb("set-up")

    # ------------------------------------------------------------------ the inputs
    def valid(self) -> dict[str, Any]:
        """A well-formed command (which the engine may still refuse: unknown order, limits,
        no cash)."""
        rng = self.rng
        account = rng.choice(ACCOUNTS)
        roll = rng.random()
        if roll < 0.55:
            instrument = rng.choice(INSTRUMENTS)
            centre = 10_000 if instrument != RVS.name else 500
            command = {
                "type": "submit",
                "account": account,
                "instrument": instrument,
                "side": rng.choice(("buy", "sell")),
                "price": max(1, centre + rng.randint(-20, 20)),
                "qty": rng.choice(QTYS) if rng.random() < 0.2 else rng.randint(1, 20),
            }
            extra = rng.random()
            if extra < 0.1:
                command["order_type"] = "market"
                command["price"] = rng.choice((0, 0, 1, 1_000_000))
            elif extra < 0.3:
                command["tif"] = rng.choice(("ioc", "fok"))
            elif extra < 0.35:
                command["post_only"] = True
            elif extra < 0.4:
                command["price"] = rng.choice((1, 1_000_000))
            return command
        if roll < 0.7:
            return {"type": "cancel", "account": account, "order_id": self._order_id()}
        if roll < 0.8:
            return {
                "type": "amend",
                "account": account,
                "order_id": self._order_id(),
                "price": 10_000 + rng.randint(-20, 20),
                "qty": rng.choice(QTYS) if rng.random() < 0.2 else rng.randint(1, 20),
            }
        if roll < 0.88:
            return {"type": "deposit", "account": account, "amount": rng.choice(AMOUNTS)}
        if roll < 0.95:
            return {"type": "withdraw", "account": account, "amount": rng.choice(AMOUNTS)}
        if roll < 0.99:
            command = {"type": "cancel_all", "account": account}
            if rng.random() < 0.5:
                command["instrument"] = rng.choice(INSTRUMENTS)
            return command
        return {
            "type": "bot_failed",
            "account": account,
            "bot": "fuzz",
            "cause": rng.choice(("raised", "budget", "timeout", "disconnected")),
        }

    def _order_id(self) -> int:
        """Mostly a recent order (likely resting), sometimes any id ever given."""
        last = self.engine.next_order_id
        if self.rng.random() < 0.8:
            return self.rng.randint(max(1, last - 40), last)
        return self.rng.randint(1, last)

    def hostile(self) -> Any:
        """A valid command, most of the time mutated one to three times."""
        rng = self.rng
        command: Any = self.valid()
        if rng.random() < 0.25:
            return command
        for _ in range(rng.randint(1, 3)):
            roll = rng.random()
            if not isinstance(command, dict) or not command:
                break  # (never mutate a shared HOSTILE value in place)
            if roll < 0.55:
                key = rng.choice(list(command)) if rng.random() < 0.8 else rng.choice(FIELDS)
                command[key] = rng.choice(HOSTILE)
            elif roll < 0.65 and command:
                del command[rng.choice(list(command))]
            elif roll < 0.75:
                command[rng.choice(("extra", "Type", "", "account ", "\x00"))] = rng.choice(HOSTILE)
            elif roll < 0.85:
                key = rng.choice(list(command))
                value = command[key]
                command[key] = str(value) if not isinstance(value, str) else [value]
            elif roll < 0.93:
                return rng.choice(HOSTILE)  # shared: sent as it is, never mutated
            else:
                command = [command] if rng.random() < 0.5 else {"command": command}
        return command

    # ------------------------------------------------------------------ the checks
    def _fingerprint(self) -> tuple:
        engine = self.engine
        return (
            engine.next_order_id,
            len(engine.orders),
            engine.deposited,
            engine.withdrawn,
            tuple(a.cash for a in engine.accounts.values()),
            tuple(engine.pools.values()),
        )

    def _absorb(self, what: str) -> list[ev.Event]:
        """Check and fold the events pending; return them."""
        batch = self.pending[:]
        self.pending.clear()
        if self.log is not None:
            self.log.extend(batch)
        fold = self.fold
        for event in batch:
            try:
                encode(event)
            except Exception as exc:
                raise InvariantBroken(f"{what}: event {event!r:.300} does not encode") from exc
            for value in event[:12]:
                if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
                    raise InvariantBroken(f"{what}: event {event!r:.300} holds {value}")
            fold.apply(*event)
        if batch:
            self.events += len(batch)
            total = (
                sum(fold.cash.values()) + sum(fold.pools.values()) + fold.withdrawn - fold.deposited
            )
            if total:
                raise InvariantBroken(f"{what}: cash created or lost ({total})")
            net: dict[str, int] = {}
            for positions in fold.positions.values():
                for name, lots in positions.items():
                    net[name] = net.get(name, 0) + lots
            if any(net.values()):
                raise InvariantBroken(f"{what}: positions do not net to zero: {net}")
        return batch

    def timed(self) -> None:
        """The exchange's own actions, eight simulated hours later: index prints (a random
        walk), funding, premiums every 90th time (30 days), a variation-margin cycle."""
        rng, engine = self.rng, self.engine
        engine.advance(engine.t + 8 * HOUR_NS)
        for name, ticks in self.index.items():
            ticks = min(1_000_000, max(1, ticks + rng.randint(-200, 200)))
            self.index[name] = ticks
            engine.publish_index(name, ticks)
        engine.fund(PERP.name)
        if engine.t // (8 * HOUR_NS) % 90 == 0:
            engine.charge_premium(RVS.name)
        engine.margin_cycle()
        self._absorb(f"timed actions at {engine.t} ns")

    def send(self, number: int, command: Any) -> bool:
        """Send one input and check it; returns whether it was accepted."""
        engine = self.engine
        full = number % self.full_check_every == 0
        before = engine.state_hash() if full else None
        fingerprint = self._fingerprint()
        what = f"input {number} of seed {self.seed} ({command!r:.300})"
        try:
            result = engine.handle(command)
        except Exception as exc:
            raise InvariantBroken(f"{what} raised {type(exc).__name__}: {exc}") from exc
        batch = self._absorb(what)
        if not batch:
            raise InvariantBroken(f"{what}: no event")
        if batch[0].kind == ev.COMMAND_REJECTED:
            if len(batch) != 1 or result.ok or not result.reason:
                raise InvariantBroken(f"{what}: a rejection must be one event with a reason")
            if "\n" in result.reason:
                raise InvariantBroken(f"{what}: the reason is not one line: {result.reason!r}")
            if self._fingerprint() != fingerprint:
                raise InvariantBroken(f"{what}: rejected, yet the ledger changed")
            if full and engine.state_hash() != before:
                raise InvariantBroken(f"{what}: rejected, yet the state changed")
            return False
        if batch[0].kind != ev.COMMAND_RECEIVED:
            raise InvariantBroken(f"{what}: first event {batch[0].kind}")
        return True

    def run(self, n: int) -> FuzzSummary:
        """Send ``n`` inputs (timed actions every ``timed_every``); check the fold's state hash
        against the engine's at the end."""
        began = time.perf_counter()
        accepted = 0
        for number in range(1, n + 1):
            accepted += self.send(number, self.hostile())
            if number % self.timed_every == 0:
                self.timed()
        if self.fold.state_hash() != self.engine.state_hash():
            raise InvariantBroken(f"seed {self.seed}: the fold disagrees with the engine")
        seconds = time.perf_counter() - began
        return FuzzSummary(n, n - accepted, accepted, self.events, seconds)
