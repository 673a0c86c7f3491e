"""Pricing of residual value swaps (RVS): the Black-76 model and the mark rule of a series.

An RVS is economically a European put on a GPU's resale value: at maturity the protection
seller pays the buyer ``max(floor - resale_index, 0)`` per GPU. This module values that put and
turns the value into an integer **mark** (in ticks) for a listed series. See ``docs/pricing.md``.

Units
-----
- ``resale_index``, ``floor``, ``forward``, ``strike``: currency units (e.g. USD) per GPU.
- ``sigma``: lognormal volatility of the resale index, per sqrt(year) (``0.25`` = 25 %).
- ``t_years``: time to maturity in years (ACT/365 or whatever the caller's clock says; the
  model only sees the number).
- ``rate``: continuously compounded rate per year; ``discount = exp(-rate * t_years)``.
- Option values (``black76_put``/``black76_call``) are in currency units per GPU, present value.
- ``rvs_model_value`` is in currency units per contract.
- The order book quotes an RVS series by **premium per premium period per GPU, in ticks**;
  ``rvs_mark`` works in that unit (see ``premium_from_value``).

Floats and integers
-------------------
Floats exist only inside the model (``black76_*``, ``rvs_model_value``, ``premium_from_value``).
The one float -> int boundary of this module is ``value_to_ticks``: an exact rational division of
the float by the tick size, rounded half to even **once**. ``rvs_mark`` calls it once and is
integer arithmetic from then on. Nothing here touches the ledger; marks are integer ticks.

The normal CDF comes from ``math.erfc`` (no SciPy at runtime): ``N(-x) = erfc(x / sqrt 2) / 2``,
accurate in both tails (``1 + erf`` would lose the lower tail to cancellation).
"""

from __future__ import annotations

import math
import numbers
import operator
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "MarkSource",
    "black76_call",
    "black76_put",
    "black76_put_array",
    "discount_factor",
    "finite_real",
    "premium_from_value",
    "put_delta",
    "rvs_mark",
    "rvs_model_value",
    "value_to_ticks",
    "vega",
]

MarkSource = Literal["book", "model"]

_SQRT2 = math.sqrt(2.0)
_INF = math.inf
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# --------------------------------------------------------------------------------------------
# input checks


def finite_real(name: str, value: float) -> float:
    """``value`` as a finite float; ``ValueError`` for bool, non-numbers, NaN and infinities
    (the input check of this module's and ``exchange.products.cds``'s models)."""
    if type(value) is float and -_INF < value < _INF:  # the common case, checked cheaply
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


_real = finite_real


def _integer(name: str, value: int, minimum: int) -> int:
    """``value`` as a Python int (numpy integers accepted) of at least ``minimum``."""
    if type(value) is int and value >= minimum:  # the common case, checked cheaply
        return value
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {number}")
    return number


def _black_inputs(
    forward: float, strike: float, sigma: float, t_years: float, discount: float
) -> tuple[float, float, float, float, float]:
    """The Black-76 inputs as floats, validated (see :func:`black76_put`)."""
    if (
        type(forward) is float
        and type(strike) is float
        and type(sigma) is float
        and type(t_years) is float
        and type(discount) is float
        and 0.0 < forward < _INF
        and 0.0 <= strike < _INF
        and 0.0 <= sigma < _INF
        and -_INF < t_years < _INF
        and 0.0 < discount < _INF
    ):  # the common case in one expression; NaN fails every comparison
        return forward, strike, sigma, t_years, discount
    forward = _real("forward", forward)
    strike = _real("strike", strike)
    sigma = _real("sigma", sigma)
    t_years = _real("t_years", t_years)
    discount = _real("discount", discount)
    if forward <= 0.0:
        raise ValueError(f"forward must be > 0, got {forward!r}")
    if strike < 0.0:
        raise ValueError(f"strike must be >= 0, got {strike!r}")
    if sigma < 0.0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    if discount <= 0.0:
        raise ValueError(f"discount must be > 0, got {discount!r}")
    return forward, strike, sigma, t_years, discount


def _std_dev(sigma: float, t_years: float) -> float:
    """Total standard deviation ``sigma * sqrt(t)``; 0.0 when expired or without volatility."""
    if t_years <= 0.0 or sigma == 0.0:
        return 0.0
    return sigma * math.sqrt(t_years)


# --------------------------------------------------------------------------------------------
# Black-76


def black76_put(
    forward: float, strike: float, sigma: float, t_years: float, discount: float = 1.0
) -> float:
    """Black-76 value of a European put: ``discount * (K N(-d2) - F N(-d1))``.

    ``d1 = ln(F/K) / s + s/2``, ``d2 = d1 - s`` with ``s = sigma * sqrt(t_years)``.

    Args:
        forward: forward price F of the underlying at maturity, currency units (> 0).
        strike: strike K, currency units (>= 0).
        sigma: lognormal volatility per sqrt(year) (>= 0).
        t_years: time to maturity in years; ``<= 0`` means expired.
        discount: discount factor to maturity (> 0), e.g. ``exp(-r t)``.

    Returns:
        The present value in the currency units of ``forward``/``strike``. When expired
        (``t_years <= 0``) or without volatility (``sigma == 0``) this is exactly the discounted
        intrinsic value ``discount * max(K - F, 0)``. A strike of 0 is worth exactly 0. The
        result is kept within the model's no-arbitrage bounds
        ``[discount * max(K - F, 0), discount * K]`` (which only ever moves it by rounding noise).

    Raises:
        ValueError: a non-finite or non-numeric input, ``forward <= 0``, ``strike < 0``,
            ``sigma < 0`` or ``discount <= 0``.
    """
    forward, strike, sigma, t_years, discount = _black_inputs(
        forward, strike, sigma, t_years, discount
    )
    intrinsic = discount * max(strike - forward, 0.0)
    if strike == 0.0:
        return 0.0
    s = _std_dev(sigma, t_years)
    if s == 0.0:
        return intrinsic
    if math.isinf(s):
        return discount * strike
    d1 = math.log(forward / strike) / s + 0.5 * s
    d2 = d1 - s
    value = discount * 0.5 * (strike * math.erfc(d2 / _SQRT2) - forward * math.erfc(d1 / _SQRT2))
    return min(max(value, intrinsic), discount * strike)


def black76_call(
    forward: float, strike: float, sigma: float, t_years: float, discount: float = 1.0
) -> float:
    """Black-76 value of a European call: ``discount * (F N(d1) - K N(d2))``.

    Same arguments, units and errors as :func:`black76_put`. Expired or ``sigma == 0``: exactly
    ``discount * max(F - K, 0)``; a strike of 0 is worth exactly ``discount * F``. Kept within
    ``[discount * max(F - K, 0), discount * F]``. Put-call parity
    ``call - put = discount * (F - K)`` holds to rounding.
    """
    forward, strike, sigma, t_years, discount = _black_inputs(
        forward, strike, sigma, t_years, discount
    )
    intrinsic = discount * max(forward - strike, 0.0)
    if strike == 0.0:
        return discount * forward
    s = _std_dev(sigma, t_years)
    if s == 0.0:
        return intrinsic
    if math.isinf(s):
        return discount * forward
    d1 = math.log(forward / strike) / s + 0.5 * s
    d2 = d1 - s
    value = discount * 0.5 * (forward * math.erfc(-d1 / _SQRT2) - strike * math.erfc(-d2 / _SQRT2))
    return min(max(value, intrinsic), discount * forward)


def put_delta(
    forward: float, strike: float, sigma: float, t_years: float, discount: float = 1.0
) -> float:
    """Forward delta of the Black-76 put, ``dP/dF = -discount * N(-d1)`` (dimensionless).

    Same arguments and errors as :func:`black76_put`. Expired or ``sigma == 0``: ``-discount``
    when ``F < K``, ``0`` when ``F > K`` and ``-discount / 2`` at ``F == K`` (the limit
    ``sigma -> 0``). A strike of 0 gives 0.
    """
    forward, strike, sigma, t_years, discount = _black_inputs(
        forward, strike, sigma, t_years, discount
    )
    if strike == 0.0:
        return 0.0
    s = _std_dev(sigma, t_years)
    if s == 0.0:
        if forward == strike:
            return -0.5 * discount
        return -discount if forward < strike else 0.0
    if math.isinf(s):
        return 0.0
    d1 = math.log(forward / strike) / s + 0.5 * s
    return -discount * 0.5 * math.erfc(d1 / _SQRT2)


def vega(
    forward: float, strike: float, sigma: float, t_years: float, discount: float = 1.0
) -> float:
    """Black-76 vega, ``dV/dsigma = discount * F * phi(d1) * sqrt(t)``, the same for put and call.

    Units: currency units per unit of sigma (per 1.00 = 100 volatility points; divide by 100
    for "per vol point"). Same arguments and errors as :func:`black76_put`. Expired: 0.
    ``sigma == 0``: the limit ``sigma -> 0+``, which is 0 unless ``F == K``. Strike 0: 0.
    """
    forward, strike, sigma, t_years, discount = _black_inputs(
        forward, strike, sigma, t_years, discount
    )
    if t_years <= 0.0 or strike == 0.0:
        return 0.0
    s = _std_dev(sigma, t_years)
    if s == 0.0:
        return discount * forward * _INV_SQRT_2PI * math.sqrt(t_years) if forward == strike else 0.0
    if math.isinf(s):
        return 0.0
    d1 = math.log(forward / strike) / s + 0.5 * s
    return discount * forward * _INV_SQRT_2PI * math.exp(-0.5 * d1 * d1) * math.sqrt(t_years)


# --------------------------------------------------------------------------------------------
# Black-76 on arrays

# erfc for numpy arrays: the algorithm and coefficients of fdlibm's s_erf.c, from which glibc's
# erfc (what math.erfc calls on Linux) descends, so the two agree to a few units in the last
# place. fdlibm's notice: Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved.
# Developed at SunPro, a Sun Microsystems, Inc. business. Permission to use, copy, modify, and
# distribute this software is freely granted, provided that this notice is preserved.
_ERX = 8.45062911510467529297e-01
# |x| < 0.84375: erf(x) = x + x * P(x^2) / Q(x^2)
_PP = (
    1.28379167095512558561e-01,
    -3.25042107247001499370e-01,
    -2.84817495755985104766e-02,
    -5.77027029648944159157e-03,
    -2.37630166566501626084e-05,
)
_QQ = (
    1.0,
    3.97917223959155352819e-01,
    6.50222499887672944485e-02,
    5.08130628187576562776e-03,
    1.32494738004321644526e-04,
    -3.96022827877536812320e-06,
)
# 0.84375 <= |x| < 1.25: erf(|x|) = erx + P(|x| - 1) / Q(|x| - 1)
_PA = (
    -2.36211856075265944077e-03,
    4.14856118683748331666e-01,
    -3.72207876035701323847e-01,
    3.18346619901161753674e-01,
    -1.10894694282396677476e-01,
    3.54783043256182359371e-02,
    -2.16637559486879084300e-03,
)
_QA = (
    1.0,
    1.06420880400844228286e-01,
    5.40397917702171048937e-01,
    7.18286544141962662868e-02,
    1.26171219808761642112e-01,
    1.36370839120290507362e-02,
    1.19844998467991074170e-02,
)
# fdlibm's switch point near 1/0.35, compared on the high word: 0x4006DB6D00000000
_RA_LIMIT = float.fromhex("0x1.6db6d00000000p+1")
# 1.25 <= |x| < _RA_LIMIT: erfc(|x|) = exp(-x^2 - 0.5625 + R(1/x^2) / S(1/x^2)) / |x|
_RA = (
    -9.86494403484714822705e-03,
    -6.93858572707181764372e-01,
    -1.05586262253232909814e01,
    -6.23753324503260060396e01,
    -1.62396669462573470355e02,
    -1.84605092906711035994e02,
    -8.12874355063065934246e01,
    -9.81432934416914548592e00,
)
_SA = (
    1.0,
    1.96512716674392571292e01,
    1.37657754143519042600e02,
    4.34565877475229228821e02,
    6.45387271733267880336e02,
    4.29008140027567833386e02,
    1.08635005541779435134e02,
    6.57024977031928170135e00,
    -6.04244152148580987438e-02,
)
# _RA_LIMIT <= |x| < 28: the same form with these
_RB = (
    -9.86494292470009928597e-03,
    -7.99283237680523006574e-01,
    -1.77579549177547519889e01,
    -1.60636384855821916062e02,
    -6.37566443368389627722e02,
    -1.02509513161107724954e03,
    -4.83519191608651397019e02,
)
_SB = (
    1.0,
    3.03380607434824582924e01,
    3.25792512996573918826e02,
    1.53672958608443695994e03,
    3.19985821950859553908e03,
    2.55305040643316442583e03,
    4.74528541206955367215e02,
    -2.24409524465858183362e01,
)


def _poly(x: np.ndarray, coefficients: tuple[float, ...]) -> np.ndarray:
    """``c0 + c1 x + c2 x^2 + ...`` by Horner's rule, elementwise."""
    result = np.full_like(x, coefficients[-1])
    for c in coefficients[-2::-1]:
        result *= x  # in place: the same two roundings as ``result * x + c``, no temporaries
        result += c
    return result


def _erfc_array(x: np.ndarray) -> np.ndarray:
    """Complementary error function of a float64 array (finite or infinite; no NaN)."""
    ax = np.abs(x)
    out = np.empty_like(x)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        # |x| < 0.84375
        m = ax < 0.84375
        if m.any():
            xm = x[m]
            z = xm * xm
            y = _poly(z, _PP) / _poly(z, _QQ)
            small = xm < 0.25  # includes every negative x, as fdlibm's signed test
            out[m] = np.where(small, 1.0 - (xm + xm * y), 0.5 - (xm * y + (xm - 0.5)))
        # 0.84375 <= |x| < 1.25
        m = (ax >= 0.84375) & (ax < 1.25)
        if m.any():
            xm = x[m]
            q = _poly(ax[m] - 1.0, _PA) / _poly(ax[m] - 1.0, _QA)
            out[m] = np.where(xm >= 0.0, 1.0 - _ERX - q, 1.0 + (_ERX + q))
        # 1.25 <= |x| < 28
        m = (ax >= 1.25) & (ax < 28.0)
        if m.any():
            xm, am = x[m], ax[m]
            s = 1.0 / (am * am)
            near = am < _RA_LIMIT
            ratio = np.where(near, _poly(s, _RA) / _poly(s, _SA), _poly(s, _RB) / _poly(s, _SB))
            # z: |x| with the low 32 bits of its mantissa cleared, so that z*z is exact
            z = (am.view(np.uint64) & np.uint64(0xFFFFFFFF00000000)).view(np.float64)
            r = np.exp(-z * z - 0.5625) * np.exp((z - am) * (z + am) + ratio)
            value = np.where(xm > 0.0, r / am, 2.0 - r / am)
            out[m] = np.where(xm <= -6.0, 2.0, value)
        # |x| >= 28
        m = ax >= 28.0
        out[m] = np.where(x[m] > 0.0, 0.0, 2.0)
    return out


def black76_put_array(
    forward: ArrayLike,
    strike: ArrayLike,
    sigma: ArrayLike,
    t_years: ArrayLike,
    discount: ArrayLike = 1.0,
) -> np.ndarray:
    """:func:`black76_put` elementwise over numpy arrays (broadcast together), as float64.

    Same formula, special cases (expired, ``sigma == 0``, strike 0) and bounds as the scalar
    function; ``erfc`` is a numpy port of the algorithm behind ``math.erfc``, and the results
    agree with the scalar function to about 1e-15 relative (the tests require 1e-12).

    Raises:
        ValueError: if any element is invalid, by the scalar function's rules (the message
            names the argument, not the element).
    """
    f, k, vol, t, df = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (forward, strike, sigma, t_years, discount))
    )
    checks = (
        ("forward", f, f > 0.0),
        ("strike", k, k >= 0.0),
        ("sigma", vol, vol >= 0.0),
        ("t_years", t, np.isfinite(t)),
        ("discount", df, df > 0.0),
    )
    for name, values, ok in checks:
        if not (ok & np.isfinite(values)).all():  # the ndarray method: no np.all wrapper
            raise ValueError(f"{name}: every element must be finite and in range")
    intrinsic = df * np.maximum(k - f, 0.0)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        s = np.where((t > 0.0) & (vol > 0.0), vol * np.sqrt(np.maximum(t, 0.0)), 0.0)
        live = (s > 0.0) & (k > 0.0) & np.isfinite(s)
        s_live = np.where(live, s, 1.0)
        k_live = np.where(live, k, 1.0)
        d1 = np.log(f / k_live) / s_live + 0.5 * s_live
        d2 = d1 - s_live
        # both erfc's in one call (elementwise: each element's value is the same, and the
        # call's fixed cost -- some hundred small numpy operations -- is paid once)
        both = _erfc_array(np.concatenate([(d2 / _SQRT2).ravel(), (d1 / _SQRT2).ravel()]))
        erfc_d2, erfc_d1 = both[: d2.size].reshape(d2.shape), both[d2.size :].reshape(d1.shape)
        value = df * 0.5 * (k_live * erfc_d2 - f * erfc_d1)
        value = np.minimum(np.maximum(value, intrinsic), df * k)
    result = np.where(live, value, intrinsic)
    result = np.where(k == 0.0, 0.0, result)
    return np.where(np.isinf(s) & (k > 0.0), df * k, result)


# --------------------------------------------------------------------------------------------
# the RVS model


def discount_factor(rate: float, t_years: float) -> float:
    """``exp(-rate * t_years)`` (dimensionless); 1.0 once expired (``t_years <= 0``).

    ``rate`` is continuously compounded per year. ``ValueError`` when either is not finite.
    """
    rate = _real("rate", rate)
    t_years = _real("t_years", t_years)
    return math.exp(-rate * t_years) if t_years > 0.0 else 1.0


def rvs_model_value(
    resale_index: float,
    floor: float,
    sigma: float,
    t_years: float,
    gpus_per_contract: int,
    rate: float = 0.0,
) -> float:
    """Model value of one RVS contract to the protection **buyer**, in currency units.

    ``gpus_per_contract * black76_put(resale_index, floor, sigma, t_years, exp(-rate t))``.

    The resale index is taken as the **forward** resale value at maturity (zero carry: holding
    a GPU to maturity is not modelled as earning or costing anything relative to the index), and
    the payoff ``max(floor - index_T, 0)`` is discounted at the continuously compounded
    ``rate``. This is the value of the whole protection, paid upfront (the premium schedule is
    not subtracted: see :func:`premium_from_value`).

    Args:
        resale_index: current resale index, currency units per GPU (> 0).
        floor: the guaranteed residual value, currency units per GPU (>= 0).
        sigma: volatility of the resale index per sqrt(year) (>= 0).
        t_years: years to maturity (<= 0: expired, value is the intrinsic payoff).
        gpus_per_contract: GPUs covered by one contract (>= 1).
        rate: continuously compounded discount rate per year (default 0).

    Returns:
        Currency units per contract (>= 0), a float: round it only at a documented boundary.

    Raises:
        ValueError: as :func:`black76_put`, or ``gpus_per_contract`` not an integer >= 1, or a
            non-finite ``rate``.
    """
    gpus = _integer("gpus_per_contract", gpus_per_contract, 1)
    discount = discount_factor(rate, t_years)
    return gpus * black76_put(resale_index, floor, sigma, t_years, discount)


def premium_from_value(value_per_gpu: float, periods_remaining: int) -> float:
    """The level premium per premium period whose **undiscounted** sum equals the value.

    ``value_per_gpu / periods_remaining``, in currency units per premium period per GPU: the
    unit the order book quotes an RVS series in. This is a deliberate simplification: the
    premiums are not discounted (nor is the risk that the buyer stops paying priced), so with
    a positive rate it slightly understates the fair running premium. It is used to bring the
    model into the book's unit for the mark, not to settle anything.

    Args:
        value_per_gpu: the protection's value per GPU, currency units (finite, >= 0), e.g.
            ``rvs_model_value(...) / gpus_per_contract`` or ``black76_put(...)``.
        periods_remaining: premium periods still to be paid (an integer >= 1).

    Raises:
        ValueError: a negative or non-finite value, or ``periods_remaining`` not an integer >= 1.
    """
    value = _real("value_per_gpu", value_per_gpu)
    if value < 0.0:
        raise ValueError(f"value_per_gpu must be >= 0, got {value!r}")
    periods = _integer("periods_remaining", periods_remaining, 1)
    return value / periods


# --------------------------------------------------------------------------------------------
# the rounding boundary and the mark


@lru_cache(maxsize=256)
def _tick_ratio(tick_size: str) -> tuple[int, int]:
    """``tick_size`` (a decimal string, currency units per tick) as an exact fraction (n, d)."""
    if not isinstance(tick_size, str):
        raise ValueError(f"tick_size must be a decimal string, got {tick_size!r}")
    try:
        tick = Decimal(tick_size)
    except (InvalidOperation, ValueError):
        raise ValueError(f"tick_size {tick_size!r} is not a decimal number") from None
    if not tick.is_finite() or tick <= 0:
        raise ValueError(f"tick_size must be a positive decimal, got {tick_size!r}")
    return tick.as_integer_ratio()


def value_to_ticks(value: float, tick_size: str) -> int:
    """``value / tick_size`` rounded half to even, exactly: the module's one float -> int step.

    The float is taken at its exact binary value and the tick size at its exact decimal value,
    so the quotient is an exact fraction and the only rounding is the final one (ties, i.e.
    exactly half a tick, go to the even tick). E.g. with ``tick_size="0.01"``: ``0.125 -> 12``,
    ``0.375 -> 38``; ``0.015`` is not a tie (its binary value is just below 0.015) -> ``1``.

    Args:
        value: an amount in currency units (finite, >= 0).
        tick_size: currency units per tick, a positive decimal string (as ``InstrumentSpec``).

    Returns:
        Whole ticks (>= 0).

    Raises:
        ValueError: a negative, NaN or infinite value, or a bad tick size.
    """
    number = _real("value", value)
    if number < 0.0:
        raise ValueError(f"value must be >= 0, got {value!r}")
    tick_num, tick_den = _tick_ratio(tick_size)
    value_num, value_den = number.as_integer_ratio()
    # value / tick = (value_num * tick_den) / (value_den * tick_num), both integers
    numerator, denominator = value_num * tick_den, value_den * tick_num
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


def rvs_mark(
    model_value_per_gpu: float,
    tick_size: str,
    book_bid: int | None,
    book_ask: int | None,
    max_spread_ticks: int,
    min_depth_lots: int,
    bid_depth: int,
    ask_depth: int,
) -> tuple[int, MarkSource]:
    """The mark of an RVS series, in ticks of **premium per premium period per GPU**.

    Everything is in the book's unit. ``model_value_per_gpu`` is the model's value expressed in
    that unit, i.e. the model *premium* per period per GPU in currency units
    (``premium_from_value(black76_put(...), periods_remaining)``), **not** the upfront value of
    the put. It is converted to ticks once (:func:`value_to_ticks`, half to even); the rest is
    integer arithmetic.

    Rule:

    1. The book is **liquid** when both sides exist, the book is neither locked nor crossed,
       the spread ``ask - bid`` is at most ``max_spread_ticks``, and the best bid's and best
       ask's depths are each at least ``min_depth_lots``.
    2. Liquid: the mark is the book's mid ``(bid + ask) / 2``; a half tick (odd ``bid + ask``)
       goes to the even tick. The mid is then clamped to the band
       ``[model - max_spread_ticks, model + max_spread_ticks]`` around the model's ticks, so
       a liquid but mispriced book cannot drag the mark more than one maximal spread away
       from the model. Source ``"book"`` (also when the clamp bit).
    3. Otherwise the mark is the model's ticks. Source ``"model"``.

    Args:
        model_value_per_gpu: model premium per premium period per GPU, currency units (>= 0).
        tick_size: currency units per tick of the series (decimal string).
        book_bid, book_ask: best bid / best ask in ticks (>= 0), ``None`` for an empty side.
        max_spread_ticks: widest spread, in ticks, at which the book is trusted (>= 0); also the
            half-width of the clamp band.
        min_depth_lots: least quantity, in lots, each best level must show (>= 0).
        bid_depth, ask_depth: quantity at the best bid / best ask, in lots (>= 0; ignored for an
            empty side).

    Returns:
        ``(mark_ticks, source)`` with ``source`` ``"book"`` or ``"model"``.

    Raises:
        ValueError: a negative or non-finite model value, a bad tick size, or a non-integer or
            negative price, depth or limit.
    """
    model = value_to_ticks(model_value_per_gpu, tick_size)
    band, min_depth, bid_qty, ask_qty = max_spread_ticks, min_depth_lots, bid_depth, ask_depth
    bid, ask = book_bid, book_ask
    if not (  # the common case (plain non-negative ints) in one expression
        type(band) is int
        and type(min_depth) is int
        and type(bid_qty) is int
        and type(ask_qty) is int
        and band >= 0
        and min_depth >= 0
        and bid_qty >= 0
        and ask_qty >= 0
        and (bid is None or (type(bid) is int and bid >= 0))
        and (ask is None or (type(ask) is int and ask >= 0))
    ):
        band = _integer("max_spread_ticks", band, 0)
        min_depth = _integer("min_depth_lots", min_depth, 0)
        bid_qty = _integer("bid_depth", bid_qty, 0)
        ask_qty = _integer("ask_depth", ask_qty, 0)
        bid = None if bid is None else _integer("book_bid", bid, 0)
        ask = None if ask is None else _integer("book_ask", ask, 0)
    if (
        bid is None
        or ask is None
        or not 0 < ask - bid <= band
        or bid_qty < min_depth
        or ask_qty < min_depth
    ):
        return model, "model"
    twice_mid = bid + ask
    mid, half = divmod(twice_mid, 2)
    if half and mid % 2 == 1:  # exactly half a tick: to the even tick
        mid += 1
    return min(max(mid, model - band), model + band), "book"
