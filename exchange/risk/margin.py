"""SPAN-like initial margin for perpetuals and residual value swaps: a pure, numpy-vectorised
library (no events, no engine state). ``docs/margin.md`` is the specification.

One call, :func:`initial_margin`, computes the margin of **every** account of a margin cycle:

1. the scenario P&L of one lot of every instrument under every scenario of a
   :class:`ScenarioGrid` (a float64 matrix ``[instruments x scenarios]``, minor units per lot;
   the RVS columns through :func:`exchange.products.pricing.black76_put_array`);
2. per GPU family (``Book.underlying``), the loss of every account in every scenario,
   ``-(positions @ pnl)`` over that family's instruments: a product ``[accounts x
   instruments] @ [instruments x scenarios]`` in float64 summed over instruments in a fixed
   order (:func:`_ordered_product`, not BLAS: the same sums on every machine, decision 13) --
   positions of one family net against each other within a scenario, which is the point of
   scenario margin;
3. each family's worst scenario, the families' worst losses added (no netting between
   families), plus a **concentration** add-on (positions above a share of open
   interest) and a **credit** add-on (thinly capitalised accounts pay a stepped-up margin, the
   exchange's version of the rating-downgrade collateral triggers of AIG's CDS book): by
   default the tier the account's capital ratio indicates (:func:`indicated_tiers`); the engine
   passes each account's **rating** instead (``tiers=``), a state that falls at once and
   recovers slowly (``exchange.risk.margin_cycle``, ``docs/margin.md``, *Ratings*);
4. one rounding, up to a whole minor unit (:data:`SNAP_REL` and :data:`SNAP_MAX` document the
   tolerance that keeps float noise from adding a cent to an exact result). Maintenance
   margin is integer arithmetic on the rounded initial margin.

Units, as everywhere in ``exchange``: prices in integer **ticks**, sizes in integer **lots**
(an RVS lot is one contract), cash in integer **minor units** (cents). Index levels and
floors of swaps are in currency units per GPU (floats, the model's unit, as in
``exchange/products/pricing.py``); shocks and volatilities are dimensionless floats. Floats exist
only
between the inputs and the single rounding of :func:`initial_margin` (plus the half-to-even
rounding of a swap's protected notional to whole minor units in :func:`gross_notional`).

Scenario rule (SPAN's combined commodities, see ``docs/margin.md``, *The grid*): scenario ``k``
moves every index of one GPU family -- the rental index of its perpetuals and the resale index
of its swaps together -- by the same relative shock ``s_k``, and every RVS volatility by the
same relative shock ``v_k``. Families (``Book.underlying``) are shocked independently: each
account's worst scenario is found per family and the families' worst losses add up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from exchange.products.instruments import MINOR_PER_UNIT
from exchange.products.pricing import black76_put_array

#: Parts per million: every ratio, threshold and add-on parameter is given in ppm.
PPM = 1_000_000
#: ``Book.kind`` codes.
PERP, RVS = 0, 1
#: Largest accepted |position| and open interest, lots: keeps ``|q| x 10**6`` and
#: ``threshold_ppm x open_interest`` inside int64 and every position exact as a float64.
MAX_LOTS = 2**42
#: Largest accepted notional per lot, minor units (``mark x tick_value`` of a perpetual, the
#: protected amount ``floor x gpus x 100`` of a swap): exact as a float64.
MAX_LOT_NOTIONAL = 2**53
#: The default grid: relative moves of the index, and of the RVS volatility.
DEFAULT_INDEX_SHOCKS: tuple[float, ...] = (-0.40, -0.30, -0.20, -0.10, 0.0, 0.10, 0.20)
DEFAULT_VOL_SHOCKS: tuple[float, ...] = (-0.25, 0.0, 0.25)
#: Default rating names, best first: the top rating, then one per credit tier in the tiers'
#: order (least severe first). ``MarginParams.rating_scale`` takes the first ``tiers + 1``.
RATING_SCALE: tuple[str, ...] = ("A", "BBB", "BB", "B", "CCC", "CC", "C")
#: The rounding tolerance. An amount ``x`` computed in float64 is rounded up to
#: ``ceil(x - tau)`` minor units with ``tau = min(SNAP_REL x (G + x), SNAP_MAX)``, ``G`` the
#: account's gross scenario P&L (see :func:`initial_margin`): a result that is a whole number
#: of minor units in exact arithmetic but comes out a few ulps above it (e.g. 10 lots x 3
#: ticks x 1 cent x 10 % = ``3.0000000000000004``) is not charged an extra cent. The float
#: error of the sum is at most about ``(n + 10) x 2**-53 x G`` for ``n`` instruments held (the
#: standard bound on a float dot product, plus the few roundings before and after), and
#: ``SNAP_REL`` (2**-44, about 5.7e-14) is 8x that or more for any ``n <= 50``. ``SNAP_MAX``
#: (2**-7 = 0.0078 minor units) caps what the snap can forgive: an amount is never charged
#: less than its exact value minus 0.0078 of a cent. ``tau`` stays wider than the float error
#: while ``G < 2**46 / (n + 10)`` minor units (5e12 with 4 instruments held, 1.2e12 with 50:
#: 12 to 50 billion dollars of scenario P&L); beyond that, float noise may add one minor unit
#: to an exact whole amount -- in the safe direction.
SNAP_REL = 2.0**-44
SNAP_MAX = 2.0**-7

_INT64_SAFE = 2**62


# ----------------------------------------------------------------------------- the grid
def _shocks(name: str, values: object) -> tuple[float, ...]:
    """The shocks as a tuple of floats: non-empty, each a finite real number > -1."""
    try:
        items = tuple(values)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must be a sequence of numbers") from None
    if not items:
        raise ValueError(f"{name} must not be empty")
    out = []
    for value in items:
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            raise ValueError(f"{name}: {value!r} is not a real number")
        number = float(value)
        if not math.isfinite(number) or number <= -1.0:
            raise ValueError(f"{name}: every shock must be finite and > -1, got {value!r}")
        out.append(number)
    return tuple(out)


@dataclass(frozen=True)
class ScenarioGrid:
    """The scenarios of a margin cycle: the cartesian product of index and volatility shocks.

    Attributes:
        index_shocks: relative moves of the underlying indices (``-0.40`` = the index falls
            40 %), each finite and > -1. Scenario ``k`` multiplies every index of one GPU
            family -- the rental indices of its perpetuals and the resale indices of its swaps
            alike -- by ``1 + s``; each family is run through the whole grid on its own
            (:func:`initial_margin` takes each family's worst scenario).
        vol_shocks: relative moves of the RVS volatilities (``+0.25`` = sigma x 1.25), each
            finite and > -1. Perpetuals do not depend on them.

    Scenarios are ordered **index-major**: scenario ``k`` is
    ``(index_shocks[k // len(vol_shocks)], vol_shocks[k % len(vol_shocks)])`` (see
    :attr:`scenarios`). With the defaults there are 7 x 3 = 21, ``k = 0`` being
    ``(-0.40, -0.25)`` and ``k = 20`` ``(+0.20, +0.25)``.
    """

    index_shocks: tuple[float, ...] = DEFAULT_INDEX_SHOCKS
    vol_shocks: tuple[float, ...] = DEFAULT_VOL_SHOCKS

    def __post_init__(self) -> None:
        object.__setattr__(self, "index_shocks", _shocks("index_shocks", self.index_shocks))
        object.__setattr__(self, "vol_shocks", _shocks("vol_shocks", self.vol_shocks))

    def __len__(self) -> int:
        return len(self.index_shocks) * len(self.vol_shocks)

    @property
    def scenarios(self) -> tuple[tuple[float, float], ...]:
        """Every scenario as ``(index_shock, vol_shock)``, in order (index-major)."""
        return tuple(product(self.index_shocks, self.vol_shocks))

    def index(self, index_shock: float, vol_shock: float) -> int:
        """The number of the first scenario ``(index_shock, vol_shock)`` (``ValueError`` if
        the grid has none)."""
        return self.scenarios.index((float(index_shock), float(vol_shock)))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(s, v)``: the index shock and the vol shock of every scenario, float64 arrays of
        length ``len(self)``."""
        s = np.repeat(np.asarray(self.index_shocks, dtype=np.float64), len(self.vol_shocks))
        v = np.tile(np.asarray(self.vol_shocks, dtype=np.float64), len(self.index_shocks))
        return s, v

    def _shared_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`arrays`, made once per grid and read-only (the grid is frozen, so they
        cannot go stale; read-only, so no caller can change them for the next)."""
        cached = self.__dict__.get("_arrays")
        if cached is None:
            cached = self.arrays()
            for array in cached:
                array.setflags(write=False)
            object.__setattr__(self, "_arrays", cached)
        return cached


# ----------------------------------------------------------------------------- parameters
_Ppm = Annotated[StrictInt, Field(ge=0, le=PPM)]


class MarginParams(BaseModel):
    """The margin rule's parameters, validated (unknown fields refused, integers strict).

    Attributes:
        index_shocks: the grid's relative index moves (default ``-40 %`` .. ``+20 %`` in steps
            of 10 %), each finite and > -1; see :class:`ScenarioGrid`.
        vol_shocks: the grid's relative volatility moves (default ``-25 %, 0, +25 %``), each
            finite and > -1.
        maintenance_ppm: maintenance margin as ppm of initial margin (default 750_000:
            ``MM = ceil(IM x 0.75)``), 0 .. 10**6.
        concentration_threshold_ppm: a position is concentrated when ``|position| x 10**6 >
            threshold x open_interest`` (strictly above; default 200_000 = 20 % of the
            instrument's open interest), 0 .. 10**6.
        concentration_addon_ppm: the add-on on a concentrated position, ppm of that position's
            own loss in the account's worst scenario (floored at 0); default 250_000 = 25 %.
            0 .. 10 x 10**6.
        credit_tiers: ``(capital_ratio_below_ppm, addon_ppm)`` pairs: an account whose capital
            ratio ``equity / max(1, gross notional)`` is strictly below a tier's threshold
            qualifies for it, and the most severe tier it qualifies for (the lowest threshold)
            adds ``addon_ppm`` of its pre-credit margin. Default ``[(100_000, 500_000),
            (50_000, 1_000_000)]``: below 10 % capital, +50 %; below 5 %, +100 %. Stored
            sorted by threshold, descending; thresholds distinct and >= 1; add-ons 0 .. 10 x
            10**6 and non-decreasing as the threshold falls (less capital never costs less).
            Empty: no credit add-on.
        min_im: a floor on every account's initial margin, minor units (>= 0; default 0). It
            applies to accounts without positions too.
        rating_names: the rating scale, best first: the top rating, then one name per credit
            tier (least severe first), so exactly one more name than tiers; distinct, non-empty.
            None (the default): the first ``len(credit_tiers) + 1`` of :data:`RATING_SCALE`
            (``A, BBB, BB`` for the default two tiers); see :attr:`rating_scale`.
        upgrade_after_cycles: the engine raises an account's rating one notch only after the
            rating its capital ratio indicates has been better at this many consecutive margin
            cycles (>= 1; default 30, about a month of daily cycles: agencies upgrade slowly --
            AIG was never upgraded during the crisis). A downgrade is at once.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    index_shocks: list[float] = Field(default_factory=lambda: list(DEFAULT_INDEX_SHOCKS))
    vol_shocks: list[float] = Field(default_factory=lambda: list(DEFAULT_VOL_SHOCKS))
    maintenance_ppm: _Ppm = 750_000
    concentration_threshold_ppm: _Ppm = 200_000
    concentration_addon_ppm: Annotated[StrictInt, Field(ge=0, le=10 * PPM)] = 250_000
    credit_tiers: list[tuple[StrictInt, StrictInt]] = Field(
        default_factory=lambda: [(100_000, 500_000), (50_000, 1_000_000)]
    )
    min_im: Annotated[StrictInt, Field(ge=0, le=_INT64_SAFE)] = 0
    rating_names: list[str] | None = None
    upgrade_after_cycles: Annotated[StrictInt, Field(ge=1, le=10**6)] = 30

    @field_validator("index_shocks", "vol_shocks", mode="before")
    @classmethod
    def _valid_shocks(cls, value: object, info) -> list[float]:
        return list(_shocks(info.field_name, value))

    @field_validator("credit_tiers")
    @classmethod
    def _valid_tiers(cls, tiers: list[tuple[int, int]]) -> list[tuple[int, int]]:
        ordered = sorted(tiers, key=lambda tier: -tier[0])
        for threshold, addon in ordered:
            if threshold < 1:
                raise ValueError(f"credit tier threshold must be >= 1 ppm, got {threshold}")
            if not 0 <= addon <= 10 * PPM:
                raise ValueError(f"credit tier add-on must be 0 .. 10_000_000 ppm, got {addon}")
        for (high, high_addon), (low, low_addon) in zip(ordered, ordered[1:], strict=False):
            if high == low:
                raise ValueError(f"two credit tiers share the threshold {high}")
            if low_addon < high_addon:
                raise ValueError(
                    "a lower capital-ratio threshold must not carry a smaller add-on: "
                    f"({low}, {low_addon}) after ({high}, {high_addon})"
                )
        return ordered

    @model_validator(mode="after")
    def _valid_names(self) -> MarginParams:
        names = self.rating_names
        if names is None:
            if len(self.credit_tiers) >= len(RATING_SCALE):
                raise ValueError(
                    f"{len(self.credit_tiers)} credit tiers need rating_names "
                    f"(the default scale has {len(RATING_SCALE)} names)"
                )
            return self
        if len(names) != len(self.credit_tiers) + 1:
            raise ValueError(
                f"rating_names needs one name more than the {len(self.credit_tiers)} credit "
                f"tiers (the top rating first), got {len(names)}"
            )
        if any(not name.strip() for name in names) or len(set(names)) != len(names):
            raise ValueError("rating names must be distinct and not empty")
        return self

    @property
    def rating_scale(self) -> tuple[str, ...]:
        """The rating names, best first: index 0 is the top rating, index ``i >= 1`` the
        rating of credit tier ``i`` (``credit_tiers[i - 1]``)."""
        if self.rating_names is not None:
            return tuple(self.rating_names)
        return RATING_SCALE[: len(self.credit_tiers) + 1]

    @property
    def grid(self) -> ScenarioGrid:
        """The :class:`ScenarioGrid` of these shocks."""
        return ScenarioGrid(tuple(self.index_shocks), tuple(self.vol_shocks))


#: The last ``(params, params.grid)`` of :func:`_grid_of`.
_GRID: list = [None, None]


def _grid_of(params: MarginParams) -> ScenarioGrid:
    """``params.grid``, made once per params object (frozen, so the grid cannot go stale; the
    strong reference kept here keeps its id from being reused) instead of at every
    :func:`initial_margin` call: the cycle margins with the same params all year."""
    if _GRID[0] is not params:
        _GRID[0], _GRID[1] = params, params.grid
    return _GRID[1]


# ----------------------------------------------------------------------------- the book
def _int_array(name: str, value: object, ndim: int) -> np.ndarray:
    array = np.asarray(value)
    empty = array.size == 0 and array.dtype.kind == "f"  # np.asarray([]) is float64
    if (array.dtype.kind not in "iu" and not empty) or array.ndim != ndim:
        raise ValueError(
            f"{name} must be a {ndim}-d integer array, got {array.dtype} {array.shape}"
        )
    if array.dtype.kind == "u" and array.size and int(array.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{name} does not fit int64")
    out = np.array(array, dtype=np.int64, copy=True)
    out.setflags(write=False)
    return out


def _float_array(name: str, value: object) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "iuf" or array.ndim != 1:
        raise ValueError(f"{name} must be a 1-d real array, got {array.dtype} {array.shape}")
    out = np.array(array, dtype=np.float64, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class Book:
    """The risk inputs of one margin cycle: ``n`` instruments (columns ``j``) and ``m``
    accounts (rows ``a``), every array aligned. Copied and validated on construction (the
    stored arrays are read-only int64 / float64 copies); ``ValueError`` on any violation.

    Per instrument (1-d, length ``n``):

    Attributes:
        kind: :data:`PERP` (0) or :data:`RVS` (1).
        underlying: the GPU family id (int >= 0): positions net within a family; families are
            shocked independently and their worst losses add (see :func:`initial_margin`).
        mark: perpetuals: the mark, in ticks (>= 0). Ignored for swaps.
        tick_value: perpetuals: minor units per tick per lot (>= 1; ``PerpSpec.tick_value``).
            ``mark x tick_value`` (the notional of one lot) must not exceed
            :data:`MAX_LOT_NOTIONAL`. Ignored for swaps.
        index: swaps: the resale index, currency units per GPU (> 0;
            ``index_ticks x index_tick_size``). Ignored for perpetuals.
        floor: swaps: the floor, currency units per GPU (>= 0; ``RvsSpec.floor x
            index_tick_size``). Ignored for perpetuals.
        sigma: swaps: the volatility of the resale index per sqrt(year) (>= 0;
            ``RvsSpec.volatility``). Ignored for perpetuals.
        t_years: swaps: years to maturity (finite; <= 0 = at or past maturity, the intrinsic
            value; the engine uses ``ns to maturity / (365 days)``). Ignored for perpetuals.
        gpus_per_contract: swaps: GPUs per contract (>= 1). Ignored for perpetuals.
        open_interest: lots open per instrument, one side (>= 0, <= :data:`MAX_LOTS`).

    Per account:

    Attributes:
        positions: ``[m x n]`` signed lots (long > 0: a perpetual long, a swap protection
            **buyer**), |each| <= :data:`MAX_LOTS`. A dense matrix: most entries are 0.
        equity: ``[m]`` the account's equity in minor units; may be negative. The engine
            passes its cash after the cycle's variation margin, which has already paid every
            position's change in value into cash (``exchange.risk.margin_cycle``). Only the credit
            add-on reads it.
        premiums_owed: ``[m x n]`` or None: minor units (>= 0) each account's premium basis
            in each swap still owes -- ``max(0, basis) x tick_value x periods left`` in the
            engine -- the part of a protection **buyer's** leg that enters its gross notional
            (:func:`gross_notional`). None: zeros. Only the credit add-on reads it.

    Ignored fields may hold anything numeric (conventionally 0) but must have the right shape.
    """

    kind: np.ndarray
    underlying: np.ndarray
    mark: np.ndarray
    tick_value: np.ndarray
    index: np.ndarray
    floor: np.ndarray
    sigma: np.ndarray
    t_years: np.ndarray
    gpus_per_contract: np.ndarray
    positions: np.ndarray
    open_interest: np.ndarray
    equity: np.ndarray
    premiums_owed: np.ndarray | None = None

    def __post_init__(self) -> None:
        # ndarray.any/.all rather than np.any/np.all below: the same reductions without
        # numpy's dispatch wrapper, since a book is built at every margin check
        fields = {
            "kind": _int_array("kind", self.kind, 1),
            "underlying": _int_array("underlying", self.underlying, 1),
            "mark": _int_array("mark", self.mark, 1),
            "tick_value": _int_array("tick_value", self.tick_value, 1),
            "index": _float_array("index", self.index),
            "floor": _float_array("floor", self.floor),
            "sigma": _float_array("sigma", self.sigma),
            "t_years": _float_array("t_years", self.t_years),
            "gpus_per_contract": _int_array("gpus_per_contract", self.gpus_per_contract, 1),
            "positions": _int_array("positions", self.positions, 2),
            "open_interest": _int_array("open_interest", self.open_interest, 1),
            "equity": _int_array("equity", self.equity, 1),
            "premiums_owed": _int_array(
                "premiums_owed",
                np.zeros(np.shape(self.positions), dtype=np.int64)
                if self.premiums_owed is None
                else self.premiums_owed,
                2,
            ),
        }
        for name, array in fields.items():
            object.__setattr__(self, name, array)
        n = len(self.kind)
        for name, array in fields.items():
            if name not in ("positions", "equity", "premiums_owed") and len(array) != n:
                raise ValueError(f"{name} has {len(array)} entries for {n} instruments")
        if self.positions.shape[1] != n:
            raise ValueError(f"positions has {self.positions.shape[1]} columns for {n} instruments")
        if len(self.equity) != self.positions.shape[0]:
            raise ValueError(
                f"equity has {len(self.equity)} entries for {self.positions.shape[0]} accounts"
            )
        if not ((self.kind == PERP) | (self.kind == RVS)).all():
            raise ValueError("kind must be 0 (perp) or 1 (rvs)")
        if (self.underlying < 0).any():
            raise ValueError("underlying ids must be >= 0")
        if self.premiums_owed.shape != self.positions.shape:
            raise ValueError(
                f"premiums_owed has shape {self.premiums_owed.shape}, positions "
                f"{self.positions.shape}"
            )
        if ((self.premiums_owed < 0) | (self.premiums_owed > _INT64_SAFE)).any():
            raise ValueError(f"premiums_owed must be 0 .. {_INT64_SAFE} minor units")
        if (np.abs(self.positions) > MAX_LOTS).any():
            raise ValueError(f"|positions| must be <= {MAX_LOTS} lots")
        if ((self.open_interest < 0) | (self.open_interest > MAX_LOTS)).any():
            raise ValueError(f"open_interest must be 0 .. {MAX_LOTS} lots")
        perp, rvs = self.kind == PERP, self.kind == RVS
        mark, tick = self.mark[perp], self.tick_value[perp]
        if (mark < 0).any() or (tick < 1).any():
            raise ValueError("perpetuals need mark >= 0 ticks and tick_value >= 1")
        if (mark.astype(np.float64) * tick.astype(np.float64) > MAX_LOT_NOTIONAL).any():
            raise ValueError(f"perpetual notional per lot must be <= {MAX_LOT_NOTIONAL}")
        checks = (
            ("index", self.index[rvs], lambda x: x > 0.0),
            ("floor", self.floor[rvs], lambda x: x >= 0.0),
            ("sigma", self.sigma[rvs], lambda x: x >= 0.0),
            ("t_years", self.t_years[rvs], lambda x: np.ones_like(x, dtype=bool)),
        )
        for name, values, ok in checks:
            if not (np.isfinite(values) & ok(values)).all():
                raise ValueError(f"swaps: every {name} must be finite and in range")
        if (self.gpus_per_contract[rvs] < 1).any():
            raise ValueError("swaps need gpus_per_contract >= 1")
        protected = self.floor[rvs] * self.gpus_per_contract[rvs] * MINOR_PER_UNIT
        if (protected > MAX_LOT_NOTIONAL).any():
            raise ValueError(f"swap notional per contract must be <= {MAX_LOT_NOTIONAL}")

    @classmethod
    def built(cls, **fields: np.ndarray) -> Book:
        """A book of arrays its caller built itself -- every field given, int64 / float64 of
        the stored shapes, and within the ranges the constructor checks (the engine's own books,
        ``MarginConfig._swap_book``, from its state) -- taken as they are: no copies and no
        checks, which cost more than the grid of a one-account book. Made read-only like a
        checked book's arrays. A wrong dtype or a missing field is still refused (the dtypes
        decide the arithmetic: only the same arrays give the same margin)."""
        if fields.keys() != _BOOK_FIELDS:
            raise TypeError(f"Book.built needs exactly the fields {sorted(_BOOK_FIELDS)}")
        book = object.__new__(cls)
        for name, array in fields.items():
            if array.dtype != _BOOK_DTYPES[name]:
                raise TypeError(f"{name}: {array.dtype}, not {_BOOK_DTYPES[name]}")
            array.setflags(write=False)
            object.__setattr__(book, name, array)
        return book

    @property
    def n_accounts(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_instruments(self) -> int:
        return int(self.positions.shape[1])


#: :meth:`Book.built`'s fields and the dtype each is stored as.
_BOOK_DTYPES = {
    name: np.dtype(np.float64 if name in ("index", "floor", "sigma", "t_years") else np.int64)
    for name in Book.__dataclass_fields__
}
_BOOK_FIELDS = _BOOK_DTYPES.keys()


# ----------------------------------------------------------------------------- the result
@dataclass(frozen=True)
class MarginResult:
    """The margin of every account of a :class:`Book` (arrays of length ``m``, minor units).

    Attributes:
        im: initial margin, int64: ``max(min_im, ceil(total - tau))`` with ``total`` the
            float sum of the worst loss, the concentration add-on and the credit add-on (the
            one rounding; see :func:`initial_margin`).
        mm: maintenance margin, int64: ``ceil(im x maintenance_ppm / 10**6)``, exact integer
            arithmetic on ``im``.
        worst_scenario: int64, the number of the account's worst scenario in
            ``params.grid.scenarios`` (the first one on a tie, so 0 for an account without
            positions).
        scenario_loss: int64, the worst scenario's loss before add-ons, floored at 0 and
            rounded up like ``im``.
        concentration_addon: int64, the concentration add-on, rounded up like ``im``.
        credit_addon: int64, the credit add-on, rounded up like ``im``.

    The three components are rounded **separately, for reporting**; ``im`` is rounded once,
    from the unrounded sum, so ``im`` can be up to 2 minor units less than their sum. (It can
    also be 1 more, in the rare case where float noise puts two components within ``tau``
    above whole numbers; both when ``min_im`` does not bind.)
    """

    im: np.ndarray
    mm: np.ndarray
    worst_scenario: np.ndarray
    scenario_loss: np.ndarray
    concentration_addon: np.ndarray
    credit_addon: np.ndarray


# ----------------------------------------------------------------------------- the rule
def scenario_pnl(book: Book, grid: ScenarioGrid) -> np.ndarray:
    """The P&L of one **long** lot of every instrument in every scenario: float64
    ``[n_instruments x len(grid)]``, minor units per lot (positive = the long gains).

    * perpetual: ``mark x tick_value x s`` (the index move passed one for one to the mark;
      vol shocks do not matter);
    * swap (a long is the protection buyer, who holds a put on the resale value):
      ``(P(index x (1 + s), floor, sigma x (1 + v), t) - P(index, floor, sigma, t)) x gpus
      x 100``, ``P`` the undiscounted Black-76 put (:func:`black76_put_array`, currency units
      per GPU). A scenario with ``s == 0`` and ``v == 0`` is exactly 0 for every instrument.

    No rounding happens here.
    """
    s, v = grid._shared_arrays()
    n = book.n_instruments
    pnl = np.zeros((n, len(grid)), dtype=np.float64)
    perp = np.flatnonzero(book.kind == PERP)
    if perp.size:
        lot_notional = book.mark[perp].astype(np.float64) * book.tick_value[perp]  # exact
        pnl[perp] = lot_notional[:, None] * s[None, :]
    rvs = np.flatnonzero(book.kind == RVS)
    if rvs.size:
        index, floor = book.index[rvs, None], book.floor[rvs, None]
        sigma, t = book.sigma[rvs, None], book.t_years[rvs, None]
        # the unshocked value as an extra column of the same call
        forward = np.concatenate([index * (1.0 + s[None, :]), index], axis=1)
        vol = np.concatenate([sigma * (1.0 + v[None, :]), sigma], axis=1)
        value = black76_put_array(forward, floor, vol, t)
        per_gpu = value[:, :-1] - value[:, -1:]
        pnl[rvs] = per_gpu * (book.gpus_per_contract[rvs, None] * float(MINOR_PER_UNIT))
    pnl[:, (s == 0.0) & (v == 0.0)] = 0.0
    return pnl


def gross_notional(book: Book) -> np.ndarray:
    """Each account's gross notional, int64 minor units: what its legs can owe, summed.

    * a perpetual: ``|position| x mark x tick_value``;
    * a swap **seller** (short): ``|position| x floor x gpus_per_contract x 100``, the
      protected amount (rounded half-to-even to a whole minor unit -- exact when the floor is
      a whole number of cents): the most it can owe;
    * a swap **buyer** (long) owes no protection, only its premiums: its leg counts
      ``premiums_owed`` (``Book.premiums_owed``: its premium basis x tick value x periods
      left), not the protected amount -- a buyer with a small budget is not a thinly
      capitalised guarantor. ``premiums_owed`` counts for any position (a flat account whose
      locked premiums it still pays, too).

    Exact integer arithmetic; ``ValueError`` if an account's total would not fit 2**62.
    """
    perp, rvs = book.kind == PERP, book.kind == RVS
    notional = np.zeros(book.n_instruments, dtype=np.int64)
    notional[perp] = book.mark[perp] * book.tick_value[perp]
    protected = book.floor[rvs] * book.gpus_per_contract[rvs] * float(MINOR_PER_UNIT)
    notional[rvs] = np.rint(protected).astype(np.int64)
    lots = np.abs(book.positions)
    lots[:, rvs] = np.maximum(-book.positions[:, rvs], 0)  # sellers' lots only
    owed = book.premiums_owed.sum(axis=1) if book.n_instruments else 0
    if book.n_accounts and book.n_instruments:
        approx = lots.astype(np.float64) @ notional.astype(np.float64)
        approx += book.premiums_owed.astype(np.float64).sum(axis=1)
        if np.any(approx >= _INT64_SAFE):
            raise ValueError("an account's gross notional does not fit int64")
    if not book.n_instruments:
        return np.zeros(book.n_accounts, np.int64)
    return lots @ notional + owed


def indicated_tiers(
    book: Book, params: MarginParams, gross: np.ndarray | None = None
) -> np.ndarray:
    """The credit tier each account's capital ratio indicates, int64 ``[m]``: how many tiers'
    thresholds the ratio ``equity / max(1, gross_notional)`` is strictly below (compared
    exactly), i.e. the index of the most severe of them in ``params.rating_scale`` (0: none,
    the top rating; ``i``: ``credit_tiers[i - 1]``). ``gross``: :func:`gross_notional` of
    ``book`` when the caller has it already (minor units)."""
    applies = np.zeros(book.n_accounts, dtype=np.int64)
    if params.credit_tiers and book.n_accounts:
        gross = np.maximum(gross_notional(book) if gross is None else gross, 1)
        for threshold, _ in params.credit_tiers:  # thresholds descending: a prefix applies
            applies += _ratio_below(book.equity, gross, threshold)
    return applies


def capital_ratios_ppm(book: Book, gross: np.ndarray | None = None) -> list[int]:
    """Each account's capital ratio ``equity / max(1, gross_notional)`` in ppm, rounded down
    (towards minus infinity; Python integers, exact). ``ratio < threshold`` on these equals
    the exact comparison of :func:`indicated_tiers` for an integer threshold. ``gross``:
    :func:`gross_notional` of ``book`` when the caller has it already (minor units)."""
    if not book.n_accounts:
        return []
    gross = np.maximum(gross_notional(book) if gross is None else gross, 1)
    return [
        int(e) * PPM // int(g) for e, g in zip(book.equity.tolist(), gross.tolist(), strict=True)
    ]


def _ratio_below(equity: np.ndarray, gross: np.ndarray, threshold_ppm: int) -> np.ndarray:
    """``equity / gross < threshold_ppm / 10**6`` exactly, i.e. ``equity x 10**6 <
    threshold_ppm x gross`` on integers: decided in float64 where the two sides differ by
    more than 1e-9 relative (float64 products of int64s are off by far less), and with
    Python integers for the rest."""
    left = equity.astype(np.float64) * PPM
    right = gross.astype(np.float64) * threshold_ppm
    below = left < right
    unsure = np.flatnonzero(np.abs(left - right) <= 1e-9 * np.maximum(np.abs(left), right))
    for a in unsure.tolist():
        below[a] = int(equity[a]) * PPM < threshold_ppm * int(gross[a])
    return below


def _ceil_snapped(x: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """``ceil(x - tau)`` as int64 (``x >= 0`` finite, below 2**62): see :data:`SNAP_REL`."""
    if not np.isfinite(x).all() or (x >= _INT64_SAFE).any():  # ndarray methods: no wrapper
        raise ValueError("a margin amount is not finite or does not fit int64")
    return np.maximum(np.ceil(x - tau), 0.0).astype(np.int64)


def _ordered_product(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left @ right`` summed over instruments in a fixed order with elementwise float64
    operations, not BLAS: a BLAS product may sum in a different order on another machine (or
    thread count), and the margin numbers go into the event log, which must be byte-identical
    wherever the session runs (decision 13). Costs about 3 ms a product for 10,000 accounts
    and 16 instruments, against 0.3 ms for BLAS (``benches/README.md``, *Margin cycle*)."""
    out = np.zeros((left.shape[0], right.shape[1]), dtype=np.float64)
    for j in range(left.shape[1]):
        out += left[:, j : j + 1].astype(np.float64) * right[j]
    return out


def initial_margin(
    book: Book, params: MarginParams, tiers: np.ndarray | None = None
) -> MarginResult:
    """Initial and maintenance margin of every account of ``book``, minor units.

    ``tiers``: the credit tier to charge each account (int ``[m]``, 0 .. number of tiers: an
    index of ``params.rating_scale``), the engine's **rating** of the account; None: the tier
    its capital ratio indicates today (:func:`indicated_tiers`), the rule without rating
    state.

    For account ``a`` (positions ``q_a``, lots), with ``pnl = scenario_pnl(book, grid)``:

    1. **Scenario loss**, per underlying ``u`` (a GPU family, ``book.underlying``):
       ``L_u[a, k] = -(q_a,u . pnl[u, k])`` over that family's instruments only;
       ``k*_u = argmax_k L_u[a, k]`` (first on ties); ``worst = sum_u max(0, L_u[a, k*_u])``:
       positions net within a family, families are shocked independently and add up (SPAN's
       combined commodities, with no inter-commodity credit). ``worst_scenario`` reports the
       ``k*`` of the family that loses most.
    2. **Concentration add-on**: instrument ``j`` is concentrated for ``a`` when
       ``|q_aj| x 10**6 > concentration_threshold_ppm x open_interest_j`` (integers, exact);
       ``conc = concentration_addon_ppm / 10**6 x sum over concentrated j of
       max(0, -q_aj x pnl[j, k*_u(j)])`` -- that position's own loss in its family's worst
       scenario, so a concentrated leg that gains there adds nothing.
    3. **Credit add-on**: the tier ``i = tiers[a]`` (by default :func:`indicated_tiers`: the
       capital ratio ``equity_a / max(1, gross_notional_a)`` compared exactly with each tier's
       threshold, the most severe tier it is strictly below) adds
       ``credit = credit_tiers[i - 1].addon_ppm / 10**6 x (worst + conc)``; ``i = 0``: 0.
    4. **Rounding, once**: ``im = max(min_im, ceil(total - tau))`` with ``total = worst +
       conc + credit`` in float64 and ``tau = min(SNAP_REL x (G_a + total), SNAP_MAX)``,
       where ``G_a = sum_j |q_aj| x max_k |pnl[j, k]|`` bounds the size of the float terms
       (see :data:`SNAP_REL`). ``mm = ceil(im x maintenance_ppm / 10**6)`` in integers.

    Precision: positions are exact in float64 (<= 2**42 lots), perpetual scenario P&Ls carry
    one rounding, swap P&Ls the put's own accuracy (``docs/pricing.md``). The computed total
    is within ``(n_held + 10) x 2**-53 x G_a`` of the exact value given those P&Ls -- under
    one cent for ``G_a`` up to about 6e14 minor units with 4 instruments held, 1.5e14 with 50
    (``tests/exchange/risk/test_margin.py`` checks against exact rational arithmetic).

    Determinism: no randomness, no wall clock, and no BLAS in any sum that reaches a figure:
    every sum over instruments runs in a fixed order (:func:`_ordered_product`; families in
    increasing id) with elementwise IEEE operations, so for given per-lot P&Ls the result is
    bit-identical on any machine and thread count. The one machine-dependent input is the swap
    P&L: numpy's ``exp``/``log`` inside the put may differ in the last bit between numpy builds
    or CPUs, which can move a rounded amount by one minor unit only when it lies within that
    noise of a whole number (beyond ``tau``).

    Raises:
        ValueError: an amount that does not fit int64 (see :func:`gross_notional`).
    """
    grid = _grid_of(params)
    m, n = book.n_accounts, book.n_instruments
    pnl = scenario_pnl(book, grid)  # [n x K]
    q = book.positions.astype(np.float64)  # exact: |q| <= 2**42
    # SPAN's "combined commodity": positions net within an underlying (one GPU family), each
    # family is shocked on its own, and the families' worst losses add up -- no netting
    # between, say, an H100 long and an A100 short, whose prices need not move together
    worst = np.zeros(m)
    worst_k = np.zeros(m, dtype=np.int64)  # the scenario of the family losing most
    leg_k = np.zeros((m, n), dtype=np.int64)  # each leg's family's worst scenario
    largest = np.full(m, -1.0)
    if n:
        size = _ordered_product(np.abs(q), np.abs(pnl).max(axis=1)[:, None])[:, 0]  # G_a
        # the distinct families in increasing id, as ``np.unique`` gives them, without its
        # sort machinery (a handful of ints)
        for family in sorted(set(book.underlying.tolist())):
            cols = np.nonzero(book.underlying == family)[0]
            loss = -_ordered_product(q[:, cols], pnl[cols])  # [m x K]
            k = np.argmax(loss, axis=1)
            family_worst = np.maximum(loss[np.arange(m), k], 0.0)
            worst += family_worst
            leg_k[:, cols] = k[:, None]
            bigger = family_worst > largest
            worst_k = np.where(bigger, k, worst_k)
            largest = np.where(bigger, family_worst, largest)
    else:
        size = np.zeros(m)

    conc = np.zeros(m)
    if params.concentration_addon_ppm and n and m:
        over = np.abs(book.positions) * PPM > (
            params.concentration_threshold_ppm * book.open_interest
        )
        rows, cols = np.nonzero(over)
        if rows.size:
            leg_loss = np.maximum(-q[rows, cols] * pnl[cols, leg_k[rows, cols]], 0.0)
            conc = np.bincount(rows, weights=leg_loss, minlength=m)
            conc *= params.concentration_addon_ppm / PPM

    pre_credit = worst + conc
    credit = np.zeros(m)
    if tiers is None:
        applies = indicated_tiers(book, params)
    else:
        applies = np.asarray(tiers, dtype=np.int64)
        if applies.shape != (m,) or ((applies < 0) | (applies > len(params.credit_tiers))).any():
            raise ValueError(
                f"tiers must be {m} integers in 0 .. {len(params.credit_tiers)}, got {tiers!r}"
            )
    if params.credit_tiers and m:
        addon_ppm = np.array([0] + [addon for _, addon in params.credit_tiers], dtype=np.int64)
        credit = pre_credit * (addon_ppm[applies] / PPM)

    total = pre_credit + credit
    tau = np.minimum(SNAP_REL * (size + total), SNAP_MAX)
    im = np.maximum(_ceil_snapped(total, tau), params.min_im)
    whole, part = np.divmod(im, PPM)  # ceil(im x mm / 10**6) without overflow
    mm = whole * params.maintenance_ppm + -((-part * params.maintenance_ppm) // PPM)
    return MarginResult(
        im=im,
        mm=mm,
        worst_scenario=worst_k.astype(np.int64),
        scenario_loss=_ceil_snapped(worst, tau),
        concentration_addon=_ceil_snapped(conc, tau),
        credit_addon=_ceil_snapped(credit, tau),
    )
