# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled mark and funding of :class:`exchange.kernel.compiled.CompiledExchange`
(issue #20).

:func:`publish_index` and :func:`mark` are ``CompiledExchange.publish_index`` and
``CompiledExchange.mark``: an index print, and for each perpetual marked from it, in one
compiled step -- the impact walk over the book's best 64 levels a side (``Exchange._impact``),
the damped-basis mark (``exchange.products.perp.MarkPrice.update``, its integer semantics
exactly: nano-ticks, half-even roundings, the clamp), the ``MarkPrice`` event and, with margin
on, the per-mark maintenance check's set-up and holder scan (``exchange.risk.default.
check_maintenance``). The reference (``Exchange.publish_index`` / ``Exchange.mark``,
``check_maintenance``) stays plain Python and is the semantics; this file mirrors it step for
step.

**What it proves, what it hands over.** Everything is computed into C locals first, and the
engine is changed only once the step is known to be the reference's: a value that is not an
exact ``int`` or leaves int64 (128 bits for products, every operation checked), a book that is
not the C ``OrderBook``, a mark model that is not ``MarkPrice``, an index below one tick or a
clock that went back (the reference raises) -- the whole mark is the reference's
(``Exchange.mark``, unchanged). Swaps (the put model) and listed CDS are marked by the
reference too. The maintenance check is compiled as a proof that nobody is liquidated: each
holder's equity (``margin_cycle.equity``: cash plus unsettled variation margin of its
perpetuals and cleared swaps) at or above the bound ``_MaintenanceBound.at_most``, computed
here to the unit: its perpetuals' tier MMs, its swap legs' largest losses (a buyer's
protection at its last value, a seller's put in the grid's worst corner -- the reference's
``_put_at_worst``, once per swap and check, computed here: :func:`put_at_worst`, the same
Black-76 floats through the same libm, the reference's function where a value is past the
exact doubles), the concentration and credit add-ons, the ``min_im`` floor. A holder below
its bound (the grid may find it short), a live CDS, or a value past the C bounds runs the
reference's ``check_maintenance`` from the start: the check changes nothing before its first
liquidation, so that is exactly the reference's step.

**Events.** ``IndexPublished`` and ``MarkPrice`` are written as the reference's ``_emit``
writes them: into a recorded run's ``LineBatch`` as their canonical lines (the generic C
walk of ``exchange.core._lines``, the same bytes as ``encode``), else as the same ``Event``
to the sink. An engine whose hooks (``_emit``, ``_impact``, ``_marked_from``,
``_sorted_accounts``, ``_closed_out``...) are not the reference's takes the reference path.

**Funding.** :func:`fund` is ``CompiledExchange.fund``: ``Exchange.fund`` with the premium
index and the funding rate as exact fractions over one denominator (lots x index x 10**6: the
values the reference's ``Fraction`` arithmetic reaches, their ``str`` reduced the same way),
the accrual half-even, the ``FundingRate`` event and each holder's ``FundingPaid``
(``settle_funding``: the payer's ceiling, payers first); values past the C bounds are the
reference's (``Exchange.fund``, before any event), and so are the payments of positions that
do not net to zero (``Exchange._pay_funding``, which raises as the reference does).

**The margin grid.** :func:`initial_margin` is ``CompiledExchange.initial_margin_twin``, which
``MarginConfig.requirements`` asks in place of ``exchange.risk.margin.initial_margin`` (the
daily cycle's SPAN grid): the scenario P&L (:func:`scenario_pnl`: Black-76 over the grid, its
``log`` and ``exp`` numpy's own ufuncs) and the rule in C, every element the numpy's bits.
:func:`credit_standing` is ``CompiledExchange.credit_standing_twin``, which
``MarginConfig.credit_standing`` asks for the ratings: the gross notional, the indicated tiers
and the capital ratios in exact integers. Each declines (None) where the reference raises or a
value leaves what it computes, and the caller runs the reference's numpy.
"""

from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.object cimport PyObject, PyTypeObject
from libc.math cimport ceil, fabs, isfinite, isinf, isnan, nearbyint, sqrt
from libc.stdint cimport int32_t, int64_t

from exchange.core._lines cimport LineBatch, put_bytes, put_value
from exchange.kernel._kernel cimport i128, lines_of, py128
from matching_core._book cimport Level, OrderBook

import numpy as _np

from exchange.core import events as ev
from exchange.core.clock import YEAR_NS
from exchange.core.events import Event
from exchange.kernel import engine as _engine
from exchange.products import perp as _perp
from exchange.products import pricing as _pricing
from exchange.products.instruments import MINOR_PER_UNIT
from exchange.risk import default as _default
from exchange.risk import margin as _margin

cdef extern from *:
    """
    static inline int gpuex_mul128(__int128 a, __int128 b, __int128* r) {
        return __builtin_mul_overflow(a, b, r);
    }
    static inline int gpuex_add128(__int128 a, __int128 b, __int128* r) {
        return __builtin_add_overflow(a, b, r);
    }
    static inline unsigned int gpuex_mark_type_version(PyTypeObject* cls) {
        return (cls->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) ? cls->tp_version_tag : 0;
    }
    """
    bint mul128 "gpuex_mul128"(i128 a, i128 b, i128* r) noexcept
    bint add128 "gpuex_add128"(i128 a, i128 b, i128* r) noexcept
    unsigned int type_version "gpuex_mark_type_version"(PyTypeObject* cls) noexcept

cdef extern from *:
    """
    #include <math.h>
    /* Black-76's put as exchange.products.pricing.black76_put computes it with discount 1.0
       (the swap model's, rate 0): the same float operations in the same order, through the
       same C library (CPython's math.log, math.sqrt and math.erfc call libm's log, sqrt and
       erfc). No contraction into fused multiply-adds: each product rounds on its own, as in
       Python. 1 and *out set; 0 where the Python function would raise or leaves finite
       values (the caller asks it). */
    #pragma GCC push_options
    #pragma GCC optimize ("-ffp-contract=off")
    static int gpuex_black76_put(double f, double k, double sigma, double t, double sqrt2,
                                 double* out) {
        double diff, intrinsic, s, ratio, d1, d2, value, high;
        if (!(f > 0.0 && f < HUGE_VAL && k >= 0.0 && k < HUGE_VAL && sigma >= 0.0
              && sigma < HUGE_VAL && t > -HUGE_VAL && t < HUGE_VAL))
            return 0;  /* _black_inputs refuses it (or it is not a plain float) */
        diff = k - f;
        intrinsic = 1.0 * ((0.0 > diff) ? 0.0 : diff);  /* max(diff, 0.0): the first wins ties */
        if (k == 0.0) {
            *out = 0.0;
            return 1;
        }
        s = (t <= 0.0 || sigma == 0.0) ? 0.0 : sigma * sqrt(t);
        if (s == 0.0) {
            *out = intrinsic;
            return 1;
        }
        if (isinf(s)) {
            *out = 1.0 * k;
            return 1;
        }
        ratio = f / k;
        if (!(ratio > 0.0 && ratio < HUGE_VAL))
            return 0;  /* math.log raises at 0 (and takes inf): the reference's */
        d1 = log(ratio) / s + 0.5 * s;
        d2 = d1 - s;
        value = (1.0 * 0.5) * (k * erfc(d2 / sqrt2) - f * erfc(d1 / sqrt2));
        if (!isfinite(value))
            return 0;
        high = (intrinsic > value) ? intrinsic : value;  /* max(value, intrinsic) */
        *out = (1.0 * k < high) ? 1.0 * k : high;  /* min(high, discount * strike) */
        return 1;
    }
    #pragma GCC pop_options
    """
    bint black76_put "gpuex_black76_put"(double f, double k, double sigma, double t,
                                         double sqrt2, double* out) noexcept

cdef object Exchange = _engine.Exchange
cdef object MarkPrice = _perp.MarkPrice
cdef object decay_weight = _perp.decay_weight
cdef object _new_event = tuple.__new__

cdef str INDEX_PUBLISHED = ev.INDEX_PUBLISHED
cdef str MARK_PRICE = ev.MARK_PRICE
cdef str FUNDING_RATE = ev.FUNDING_RATE
cdef str FUNDING_PAID = ev.FUNDING_PAID
cdef str FUNDING_POOL_KEY = _engine.FUNDING_POOL_KEY
cdef int64_t FUNDING_SCALE = _perp.FUNDING_SCALE
cdef str INDEX_BASIS = "index+basis"

cdef int64_t PPM = 1_000_000
cdef int64_t BASIS_SCALE = _perp.BASIS_SCALE
cdef int64_t WEIGHT_SCALE = _perp.WEIGHT_SCALE
#: the depth the reference's impact walk reads (``Exchange._impact``: ``book.top(64)``)
DEF DEPTH = 64
#: listings and tiers the compiled check keeps in C; more: the reference's check
DEF MAX_LISTINGS = 32
DEF MAX_TIERS = 16
#: magnitudes the compiled step takes (a perp price is at most 2**53 ticks): past them the
#: reference's Python ints (nothing in a real session comes near)
cdef i128 BIG = (<i128>1) << 120
cdef int64_t SMALL = (<int64_t>1) << 62
#: the funding step's bound on a side's cost and on lots x index (ticks x lots)
cdef i128 HUGE = (<i128>1) << 90
#: the swap put's bounds: ints a double holds exactly (2**53), the powers of ten it holds
#: exactly (10**0 .. 10**22) and the model's sqrt(2) (``pricing._SQRT2``, the same double)
cdef int64_t EXACT = (<int64_t>1) << 53
cdef double POW10[23]
for _k in range(23):
    POW10[_k] = float(10**_k)
cdef double SQRT2 = _pricing._SQRT2
cdef int64_t MINOR = MINOR_PER_UNIT
cdef object _REFERENCE_DATE_NS = Exchange.date_ns

#: The engine methods the compiled mark stands in for or relies on: an engine class whose
#: own differ from the reference's takes the reference path.
HOOKS = (
    "publish_index",
    "mark",
    "_emit",
    "_impact",
    "_marked_from",
    "_sorted_accounts",
    "sorted_accounts",
    "_closed_out",
    "is_closed_out",
    "_pay_funding",
)
_REFERENCE_HOOKS = tuple(getattr(Exchange, name) for name in HOOKS)

#: The reference's own methods, which the compiled ones hand a step they do not prove to
#: (module globals, read at each call: a test may count what is handed over)
_REFERENCE_MARK = Exchange.mark
_REFERENCE_PUBLISH = Exchange.publish_index
_REFERENCE_FUND = Exchange.fund
_REFERENCE_PAY = Exchange._pay_funding
# this module's methods (set once they are defined, at the end of the module)
cdef object _mark_function = None
cdef object _publish_index_function = None
cdef object _fund_function = None

# the last class checked and its verdict, valid while its attribute-cache version stands
cdef object _checked_class = None
cdef unsigned int _checked_version = 0
cdef bint _checked_plain = False


cdef bint _plain(object engine):
    """Whether ``engine``'s class keeps the reference's hooks (``HOOKS``) but for
    ``publish_index`` and ``mark``, which must be this module's (the compiled engine's)."""
    global _checked_class, _checked_version, _checked_plain
    cls = type(engine)
    cdef unsigned int version = type_version(<PyTypeObject*>cls)
    if cls is _checked_class and version != 0 and version == _checked_version:
        return _checked_plain
    plain = getattr(cls, "publish_index", None) is _publish_index_function and getattr(
        cls, "mark", None) is _mark_function
    for name, reference in zip(HOOKS[2:], _REFERENCE_HOOKS[2:]):
        if getattr(cls, name, None) is not reference:
            plain = False
    _checked_class = cls
    _checked_version = type_version(<PyTypeObject*>cls)
    _checked_plain = plain
    return plain


# ----------------------------------------------------------------------------- arithmetic
cdef inline bint _int64(object v, int64_t* out):
    """1 and ``out`` set when ``v`` is an exact ``int`` (no bool) within +-2**62; else 0."""
    cdef int overflow = 0
    cdef long long x
    if type(v) is not int:
        return False
    x = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow or x > SMALL or x < -SMALL:
        return False
    out[0] = x
    return True


cdef inline i128 _floordiv(i128 n, i128 d) noexcept:
    """``n // d`` as Python rounds it (toward minus infinity), ``d > 0``."""
    cdef i128 q = n / d
    if n % d < 0:
        q -= 1
    return q


cdef inline i128 _div_half_even(i128 n, i128 d) noexcept:
    """``exchange.products.perp._div_half_even``: ``n / d`` rounded half-even, ``d > 0``
    (|n| and d below 2**125)."""
    cdef i128 q = _floordiv(n, d)
    cdef i128 twice = 2 * (n - q * d)
    if twice > d or (twice == d and (q & 1)):
        q += 1
    return q


cdef inline bint _mul(i128 a, i128 b, i128* out) noexcept:
    """``out = a * b``; False past 2**120 (either way): the caller takes the reference."""
    if mul128(a, b, out):
        return False
    return -BIG < out[0] < BIG


cdef inline bint _add(i128 a, i128 b, i128* out) noexcept:
    if add128(a, b, out):
        return False
    return -BIG < out[0] < BIG


# ----------------------------------------------------------------------------- events


cdef int _put_line(LineBatch lines, tuple fields) except -1:
    """The event ``fields`` (the 13 of ``Event``) written into ``lines`` as its canonical line
    (1), or nothing (0) when the C encoder does not write it whole or its seq is not the
    next line's: the caller then gives the sink the Event."""
    cdef Py_ssize_t start = lines.buf.len
    cdef long long c_t
    cdef int overflow = 0
    cdef int i
    seq = fields[0]
    t = fields[1]
    if type(seq) is not int or type(t) is not int or seq != lines.first + lines.count:
        return 0
    c_t = PyLong_AsLongLongAndOverflow(t, &overflow)
    if overflow:
        return 0
    put_bytes(&lines.buf, b"[", 1)
    for i in range(13):
        if i:
            put_bytes(&lines.buf, b",", 1)
        # depth 1: the event's own array, as the encoder's walk of an Event tuple
        if put_value(&lines.buf, <PyObject*>fields[i], 1) != 0:
            lines.buf.len = start
            return 0
    put_bytes(&lines.buf, b"]", 1)
    lines.end_line(c_t)
    return 1


cdef int _emit(dict E, str kind, object instrument, object account, object price, object qty,
               object amount, object data) except -1:
    """``Exchange._emit(kind, instrument=..., account=..., price=..., qty=..., amount=...,
    data=...)`` (``E`` the engine's attributes): the seq first (a tap reading the line may
    read the engine), then the line, or the Event to the sink."""
    seq = E["seq"] + 1
    E["seq"] = seq
    sink = E["_sink"]
    fields = (seq, E["t"], kind, instrument, account, None, None, price, qty, amount, None,
              None, data)
    lines = lines_of(sink)
    if lines is not None and _put_line(lines, fields):
        return 0
    sink(_new_event(Event, fields))
    return 0


# ----------------------------------------------------------------------------- per spec
cdef class _Spec:
    """What the compiled mark reads of a spec, read once per spec object: its tick value and,
    for a perpetual, its tiers as (max lots, MM ppm)."""

    cdef object spec  # held: its id cannot be reused while the entry lives
    cdef int64_t tick_value
    cdef bint ok  # tick value and tiers within the C bounds
    cdef int n_tiers
    cdef int64_t most[MAX_TIERS]
    cdef int64_t mm_ppm[MAX_TIERS]
    # a swap's terms for its put (``default._put_at_worst``): the index tick as coef x
    # 10**exp, the floor (currency units per GPU, the reference's double), the protected
    # amount plus one, the volatility, the GPUs a contract; swap_ok when all are in C
    cdef bint swap_ok
    cdef int64_t tick_coef
    cdef int tick_exp
    cdef double floor
    cdef int64_t protected
    cdef double volatility
    cdef double gpus
    cdef object resale_index
    cdef object maturity
    # the maturity's simulated ns under the engine calendar ``epoch`` (the last one asked)
    cdef object epoch
    cdef int64_t maturity_ns


#: ``id(spec) -> _Spec`` (specs are frozen; a changed spec is another object)
cdef dict _SPECS = {}


cdef _Spec _spec(object spec):
    cdef _Spec info = _SPECS.get(id(spec))
    cdef int64_t v
    if info is not None and info.spec is spec:
        return info
    if len(_SPECS) >= 256:  # specs come and go only with listings: a bound, not a policy
        _SPECS.clear()
    info = _Spec()
    info.spec = spec
    info.ok = _int64(spec.tick_value, &info.tick_value) and info.tick_value >= 0
    info.n_tiers = 0
    if spec.kind == "perp":
        rates = _default._mm_rates(spec)
        if not 1 <= len(rates) <= MAX_TIERS:
            info.ok = False
        else:
            for most, rate in rates:
                if not (_int64(most, &info.most[info.n_tiers])
                        and _int64(rate, &info.mm_ppm[info.n_tiers])):
                    info.ok = False
                    break
                info.n_tiers += 1
    elif spec.kind == "rvs":
        info.swap_ok = _swap_info(info, spec)
    _SPECS[id(spec)] = info
    return info


cdef bint _swap_info(_Spec info, object spec) except -1:
    """Reads a swap's terms into ``info`` as the reference's ``_put_at_worst`` reads them
    (``_swap_terms``: the tick, the protected amount, the floor); False when one is not what
    the compiled put computes exactly (the reference's function is then asked)."""
    cdef int64_t gpus = 0
    try:
        tick, protected, floor = _default._swap_terms(
            spec.floor, spec.index_tick_size, spec.gpus_per_contract
        )
        sign, digits, exponent = tick.as_tuple()
        coef = int("".join(map(str, digits)))
        volatility = spec.volatility
        info.resale_index = spec.resale_index
        info.maturity = spec.maturity
    except Exception:  # (a spec the reference's function fails on: it fails there too)
        return False
    info.epoch = None
    if sign or type(exponent) is not int or not -22 <= exponent <= 22:
        return False
    info.tick_exp = exponent
    if not (_int64(coef, &info.tick_coef) and 1 <= info.tick_coef <= EXACT):
        return False
    if not (_int64(protected, &info.protected) and _int64(spec.gpus_per_contract, &gpus)
            and 1 <= gpus <= EXACT and type(floor) is float and type(volatility) is float):
        return False
    info.floor = floor
    info.volatility = volatility
    info.gpus = <double>gpus
    return True


# ----------------------------------------------------------------------------- the mark
# the last decay weight asked of ``decay_weight`` (pure in its two ints): marks repeat the
# index cadence's dt
cdef int64_t _last_dt = -1
cdef int64_t _last_halflife = -1
cdef int64_t _last_weight = 0


cdef int _walk(OrderBook book, int side, int64_t lots, i128* cost) except -1:
    """``perp._walk`` of the side's best 64 levels (``book.top(64)``): 1 and ``cost`` = the
    ticks x lots of taking ``lots`` (the impact price is ``cost / lots``); 0 when they hold
    fewer lots; -1 past the C bounds."""
    cdef int32_t levels[DEPTH]
    cdef int64_t want = book.live[side]
    cdef int64_t got, i, remaining = lots
    cdef i128 total = 0, part
    cdef Level* level
    if want > DEPTH:
        want = DEPTH
    if want <= 0:
        return 0
    got = book._ordered_levels(side, want, levels)
    for i in range(got):
        level = &book.levels[levels[i]]
        if level.qty >= remaining:  # this level completes the size: the rest is not read
            if not (_mul(level.price, remaining, &part) and _add(total, part, cost)):
                return -1
            return 1
        if not (_mul(level.price, level.qty, &part) and _add(total, part, &total)):
            return -1
        remaining -= level.qty
    return 0


cdef bint _perp_mark(object engine, dict E, str name, object listing, object spec,
                     object index) except -1:
    """A perpetual's mark at ``index`` (ticks), as ``Exchange.mark`` makes it: the impact
    walk, ``MarkPrice.update``, the listing's mark and unit value, the ``MarkPrice`` event and
    the maintenance check. False, with nothing changed, when a value leaves what this step
    proves (the caller runs the reference's mark)."""
    global _last_dt, _last_halflife, _last_weight
    cdef int64_t c_index = 0, lots = 0, t = 0, t_prev = 0, halflife = 0, max_price = 0
    cdef int64_t basis = 0, sample = 0, dt, weight = 0
    cdef i128 bid_cost = 0, ask_cost = 0, x, y, new_basis, new_sample, mark
    cdef int has_bid, has_ask
    cdef bint first
    cdef OrderBook book
    cdef _Spec info
    model = listing.mark_model
    if type(model) is not MarkPrice or type(listing.book) is not OrderBook:
        return False
    book = <OrderBook>listing.book
    info = _spec(spec)
    if not info.ok or not _int64(index, &c_index) or c_index < 1:
        return False
    if not _int64(spec.impact_notional_lots, &lots) or lots < 1:
        return False
    model_spec = model.spec
    t_value = E["t"]
    if not (_int64(t_value, &t) and _int64(model_spec.mark_basis_halflife_ns, &halflife)
            and _int64(model_spec.max_price, &max_price) and halflife >= 1):
        return False
    if not (_int64(model.basis_nano, &basis) and _int64(model.sample_nano, &sample)):
        return False
    t_prev_value = model.t_ns
    first = t_prev_value is None
    if not first and not (_int64(t_prev_value, &t_prev) and t >= t_prev):
        return False
    # the impact bid and ask (Exchange._impact), as costs over ``lots``
    has_bid = _walk(book, 0, lots, &bid_cost)
    has_ask = _walk(book, 1, lots, &ask_cost)
    if has_bid < 0 or has_ask < 0:
        return False
    # MarkPrice.update: the basis decays toward the last sample over dt, then the new sample
    new_basis = basis
    if not first:
        dt = t - t_prev
        if dt == _last_dt and halflife == _last_halflife:
            weight = _last_weight
        else:
            if not _int64(decay_weight(dt, halflife), &weight):
                return False
            _last_dt, _last_halflife, _last_weight = dt, halflife, weight
        weight = WEIGHT_SCALE - weight
        if not _mul(<i128>sample - basis, weight, &x):
            return False
        new_basis = basis + _div_half_even(x, WEIGHT_SCALE)
    if has_bid == 0 or has_ask == 0:
        new_sample = 0
    else:
        # ((bid + ask) / 2 - index) x BASIS_SCALE, half-even, with bid = bid_cost / lots and
        # ask = ask_cost / lots: the exact value the reference rounds from its Fractions
        if not (_mul(2 * <i128>c_index, lots, &x) and _add(bid_cost + ask_cost, -x, &x)
                and _mul(x, BASIS_SCALE, &y)):
            return False
        new_sample = _div_half_even(y, 2 * <i128>lots)
    if not (-SMALL <= new_basis <= SMALL and -SMALL <= new_sample <= SMALL):
        return False
    mark = _div_half_even(<i128>c_index * BASIS_SCALE + new_basis, BASIS_SCALE)
    if mark < 1:  # min(max(mark, 1), max_price), in the reference's order
        mark = 1
    if mark > max_price:
        mark = max_price
    # proven: the engine changes from here, as the reference changes it
    mark_value = <int64_t>mark
    model.basis_nano = <int64_t>new_basis
    model.t_ns = t_value
    model.sample_nano = <int64_t>new_sample
    model.mark = mark_value
    unit = py128(mark * info.tick_value)  # both below 2**62: no wrap
    listing.mark = mark_value
    listing.unit_value = unit
    _emit(E, MARK_PRICE, name, None, mark_value, None, unit,
          {"source": INDEX_BASIS, "index": index})
    if E["margin"] is not None:  # venues check maintenance at every mark, not daily
        _check(engine, name)
    return True


cdef object _mark(object engine, dict E, str name):
    """``Exchange.mark(name)``: a perpetual compiled (:func:`_perp_mark`), anything else --
    and a perpetual it does not prove -- the reference's."""
    listing = E["instruments"][name]
    spec = listing.spec
    if spec.kind == "perp" and type(name) is str:
        index = E["indices"].get(spec.underlying)
        if index is None or listing.expired:
            return None
        if _perp_mark(engine, E, name, listing, spec, index):
            return None
    return _REFERENCE_MARK(engine, name)


def mark(self, name):
    """``Exchange.mark``'s contract (same events and state changes), compiled for a
    perpetual (see the module docstring)."""
    if type(name) is not str or not _plain(self):
        return _REFERENCE_MARK(self, name)  # (another type of name: the reference's error)
    return _mark(self, self.__dict__, name)


def publish_index(self, name, ticks):
    """``Exchange.publish_index``'s contract: the ``IndexPublished`` event, the marks of the
    listings marked from the index (compiled, :func:`mark`) and the index-move trigger."""
    cdef dict E
    if not _plain(self):
        return _REFERENCE_PUBLISH(self, name, ticks)
    E = self.__dict__
    E["indices"][name] = ticks
    _emit(E, INDEX_PUBLISHED, name, None, ticks, None, None, None)
    for listing in self._marked_from(name):
        if not listing.expired:
            _mark(self, E, listing.spec.name)
    margin = E["margin"]
    if margin is not None and margin.index_move_trigger_ppm:
        base = E["_cycle_indices"].get(name)
        if base and abs(ticks - base) * 1_000_000 >= base * margin.index_move_trigger_ppm:
            # a large move: margin at this ns (Exchange.publish_index says why)
            if E["request_cycle"] is not None:
                E["request_cycle"]()
            else:
                self.margin_cycle()


# ----------------------------------------------------------------------------- funding
cdef inline i128 _gcd(i128 a, i128 b) noexcept:
    cdef i128 r
    if a < 0:
        a = -a
    if b < 0:
        b = -b
    while b:
        r = a % b
        a = b
        b = r
    return a


cdef str _fraction_str(i128 n, i128 d):
    """``str(Fraction(n, d))`` (``d > 0``): reduced, ``"n/d"``, or ``"n"`` when whole."""
    cdef i128 g = _gcd(n, d)
    if g > 1:
        n //= g  # (exact: C's division is Python's here)
        d //= g
    if d == 1:
        return str(py128(n))
    return f"{py128(n)}/{py128(d)}"


cdef inline i128 _clamp(i128 v, i128 low, i128 high) noexcept:
    if v < low:
        return low
    if v > high:
        return high
    return v


def fund(self, name):
    """``Exchange.fund``'s contract (same events and state changes): one funding interval of
    a perpetual, compiled -- the impact walk, the premium and the rate as exact fractions over
    one denominator (``premium_index``, ``funding_rate``), the index's accrual
    (``FundingIndex.accrue``, half-even), the ``FundingRate`` event and each holder's
    ``FundingPaid`` (``settle_funding``'s ceiling, payers first). Anything it does not prove
    -- and every case the reference refuses -- is the reference's."""
    cdef dict E
    cdef _Spec info
    cdef OrderBook book
    cdef int64_t c_index = 0, lots = 0, mark = 0, interest = 0, band = 0, cap = 0, pos = 0
    cdef int64_t net = 0
    cdef int has_bid, has_ask
    cdef i128 bid_cost = 0, ask_cost = 0, depth, above, below, pn, den, fn, x, step, cum
    cdef i128 prev, owed, delta
    if not _plain(self) or type(self).fund is not _fund_function:
        return _REFERENCE_FUND(self, name)
    E = self.__dict__
    listing = E["instruments"][name]
    spec = listing.spec
    index = E["indices"].get(spec.underlying)
    mark_value = listing.mark
    if index is None or mark_value is None:
        return None
    if spec.kind != "perp" or type(listing.book) is not OrderBook:
        return _REFERENCE_FUND(self, name)
    book = <OrderBook>listing.book
    info = _spec(spec)
    if not (info.ok and info.tick_value >= 1 and _int64(index, &c_index) and c_index >= 1
            and _int64(mark_value, &mark) and mark >= 1
            and _int64(spec.impact_notional_lots, &lots) and lots >= 1
            and _int64(spec.interest_ppm_per_interval, &interest)
            and _int64(spec.premium_clamp_ppm, &band) and _int64(spec.funding_cap_ppm, &cap)
            and _int64(listing.funding_cum, &pos)):
        return _REFERENCE_FUND(self, name)
    prev = pos
    previous = listing.funding_cum
    has_bid = _walk(book, 0, lots, &bid_cost)
    has_ask = _walk(book, 1, lots, &ask_cost)
    if has_bid < 0 or has_ask < 0:
        return _REFERENCE_FUND(self, name)
    # premium P = (max(0, bid - index) - max(0, index - ask)) / index, bid = bid_cost / lots:
    # P = pn / (lots x index)
    depth = <i128>lots * c_index
    if depth >= HUGE or bid_cost >= HUGE or ask_cost >= HUGE:
        return _REFERENCE_FUND(self, name)
    above = bid_cost - depth if has_bid and bid_cost > depth else 0
    below = depth - ask_cost if has_ask and ask_cost < depth else 0
    pn = above - below
    # F = P + clamp(I - P, -band, band), capped to +-cap: over den = lots x index x 10**6
    x = pn * PPM  # (below 2**111: no wrap)
    den = depth * PPM
    fn = x + _clamp(<i128>interest * depth - x, -(<i128>band) * depth, <i128>band * depth)
    fn = _clamp(fn, -(<i128>cap) * depth, <i128>cap * depth)
    # FundingIndex.accrue: round(F x mark x tick_value x 10**9), half-even
    if not (_mul(fn, mark, &x) and _mul(x, info.tick_value, &x) and _mul(x, FUNDING_SCALE, &x)):
        return _REFERENCE_FUND(self, name)
    step = _div_half_even(x, den)
    if not (-SMALL <= step <= SMALL and _add(prev, step, &cum)):
        return _REFERENCE_FUND(self, name)  # (a payment lots x step stays below 2**124)
    # proven: the engine changes from here, as the reference changes it
    cum_value = py128(cum)
    listing.funding_cum = cum_value
    _emit(E, FUNDING_RATE, name, None, mark_value, None, cum_value,
          {"rate": _fraction_str(fn, den), "premium": _fraction_str(pn, depth)})
    # the holders (read after the event, as the reference reads them); what settle_funding
    # refuses, or a position past int64, is the reference's own payment step
    names = []
    holders = []
    lots_of = []
    for account in self._sorted_accounts():
        position = account.positions.get(name)
        if position:
            if not _int64(position, &pos):
                return _REFERENCE_PAY(self, name, previous)
            names.append(account.name)
            holders.append(account)
            lots_of.append(position)
            net += pos
    if not holders:
        return None
    if net != 0 or FUNDING_POOL_KEY in names:
        return _REFERENCE_PAY(self, name, previous)  # (it raises, as the reference does)
    pools = E["pools"]
    # settle_funding: each holder's delta is -ceil(lots x (cum - prev) / 10**9); payers
    # (delta <= 0) first, then receivers, each in name order
    for receivers in range(2):
        for k in range(len(holders)):
            _int64(lots_of[k], &pos)
            owed = <i128>pos * step  # (cum - prev = step)
            delta = _floordiv(-owed, FUNDING_SCALE)  # -ceil(owed / 10**9)
            if (delta > 0) != receivers or delta == 0:
                continue
            amount = py128(delta)
            account = holders[k]
            account.cash += amount
            pools["funding"] -= amount
            _emit(E, FUNDING_PAID, name, names[k], None, lots_of[k], amount, None)
    return None


# ----------------------------------------------------------------------------- the check
cdef inline object _get0(object mapping, object key):
    """``mapping.get(key, 0)``: a plain dict's (an account's positions and bases) read in C,
    without the method call; anything else through its own ``get``."""
    if type(mapping) is dict:
        return (<dict>mapping).get(key, 0)
    return mapping.get(key, 0)


cdef int _check(object engine, str instrument) except -1:
    """``check_maintenance(engine, instrument)``: proven here when every holder's equity is
    at or above its bound (nothing happens); else the reference's function, from the start
    (it changes nothing before its first liquidation)."""
    if not _proven(engine, instrument):
        _engine.check_maintenance(engine, instrument)  # read at each call, as Exchange.mark
    return 0


def proven(engine, instrument):
    """Whether the compiled check proves that no holder of perpetual ``instrument`` is
    liquidated at the engine's marks (margin on): every holder's equity at or above
    ``_MaintenanceBound.at_most``, the verdict the reference's check reaches before it asks
    the grid. False also where it does not compute (past int64, a listed CDS). Reads only."""
    return bool(_proven(engine, instrument))


cdef int _proven(object engine, str instrument) except -1:
    """1 when every holder of ``instrument`` (by name, not defaulted) has equity at or above
    its bound, or there is none; 0 when one has not or a value leaves what C computes."""
    cdef int64_t kinds[MAX_LISTINGS]  # 0 perp, 1 cleared swap, 2 bilateral swap
    cdef int64_t marks[MAX_LISTINGS]
    cdef int64_t tick_values[MAX_LISTINGS]
    cdef int64_t unit_values[MAX_LISTINGS]
    cdef int64_t periods[MAX_LISTINGS]
    cdef _Spec infos_c
    cdef int n = 0, j, k
    cdef int64_t puts[MAX_LISTINGS]  # a swap seller's worst loss a lot (-1: not yet asked)
    cdef int64_t interest[MAX_LISTINGS]  # a swap's open interest (-1: not yet counted)
    cdef int64_t c, position, settled, basis, size, rate, min_im = 0, maintenance = 0
    cdef int64_t conc_ppm = 0, threshold_ppm = 0, per_lot, rating, credit
    cdef i128 total, part, unit, perp_mm, at_most, floor_mm, loss, concentrated, leg, im
    cdef double low = 0.0, high = 0.0  # the grid's factors for the puts (when first asked)
    cdef int shocks = -1  # -1: not read yet; 0: not plain floats; 1: read
    accounts = engine._sorted_accounts()
    defaulted = engine.defaulted
    holders = []
    for account in accounts:
        if _get0(account.positions, instrument) and account.name not in defaulted:
            holders.append(account)
    if not holders:
        return 1
    margin = engine.margin
    bilateral = margin.bilateral
    params = margin.params
    if not (_int64(params.min_im, &min_im) and _int64(params.maintenance_ppm, &maintenance)
            and _int64(params.concentration_addon_ppm, &conc_ppm)
            and _int64(params.concentration_threshold_ppm, &threshold_ppm)):
        return 0
    # ``_MaintenanceBound.floor_mm``: ceil(min_im x maintenance / 10**6), both >= 0
    floor_mm = (<i128>min_im * maintenance + PPM - 1) / PPM
    # the live listings: what ``equity`` values and what the bound reads
    names = []
    infos = []
    specs = []
    for name, listing in engine.instruments.items():
        if listing.expired or listing.mark is None:
            continue
        spec = listing.spec
        kind = spec.kind
        if kind == "spot":
            continue
        if n == MAX_LISTINGS or (kind != "perp" and kind != "rvs"):
            return 0  # a listed CDS (or more than C keeps)
        infos_c = _spec(spec)
        if not (infos_c.ok and _int64(listing.mark, &marks[n])
                and _int64(listing.unit_value, &unit_values[n])
                and _int64(listing.periods_left, &periods[n])):
            return 0
        tick_values[n] = infos_c.tick_value
        puts[n] = -1
        interest[n] = -1
        if kind == "perp":
            kinds[n] = 0
        else:
            kinds[n] = 2 if bilateral else 1
        names.append(name)
        infos.append(infos_c)
        specs.append(spec)
        n += 1
    closed_out = engine.closed_out
    credits = None  # the credit add-on by rating (``_MaintenanceBound._credit``), when asked
    for account in holders:
        positions = account.positions
        vm_basis = account.vm_basis
        premium_basis = account.basis
        if not _int64(account.cash, &c) or (closed_out and account.name in closed_out):
            return 0  # (a closed-out defaulter's ``is_closed_out`` legs: the reference's)
        total = c
        perp_mm = 0
        loss = 0  # the bound on the swaps' worst loss, minor units
        concentrated = 0  # the part of it on legs the grid finds concentrated
        for j in range(n):
            name = names[j]
            if not (_int64(_get0(positions, name), &position)
                    and _int64(_get0(vm_basis, name), &settled)
                    and _int64(_get0(premium_basis, name), &basis)):
                return 0
            if kinds[j] == 0:
                if position:
                    # the bound: ``tier_margin``'s MM, the first tier holding the size
                    infos_c = <_Spec>infos[j]
                    size = -position if position < 0 else position
                    rate = infos_c.mm_ppm[infos_c.n_tiers - 1]
                    for k in range(infos_c.n_tiers):
                        if size <= infos_c.most[k]:
                            rate = infos_c.mm_ppm[k]
                            break
                    if not (_mul(marks[j], tick_values[j], &unit) and _mul(unit, size, &part)
                            and _mul(part, rate, &part)):
                        return 0
                    perp_mm += part // PPM  # (>= 0: floor as the reference's)
            elif position:
                # a swap leg's largest loss (``_MaintenanceBound.at_most``): a buyer's
                # protection at its last value, a seller's put in the grid's worst corner
                if position > 0:
                    per_lot = unit_values[j] if unit_values[j] > 0 else 0
                else:
                    if puts[j] < 0:
                        # the put in C; where it declines, the reference's function
                        if shocks < 0:
                            shocks = _shock_factors(params, &low, &high)
                        if not (shocks and _put_worst(<_Spec>infos[j], engine, low, high,
                                                      &puts[j])):
                            if not _int64(_default._put_at_worst(engine, specs[j], params),
                                          &puts[j]):
                                return 0
                        if puts[j] < 0:
                            return 0
                    per_lot = puts[j]
                size = -position if position < 0 else position
                if not (_mul(size, per_lot + 1 + per_lot // PPM, &leg)
                        and _add(loss, leg, &loss)):
                    return 0
                if conc_ppm:
                    if interest[j] < 0:
                        interest[j] = _open_interest(engine, names[j])
                        if interest[j] < 0:
                            return 0
                    # ``_concentrated``: |lots| x 10**6 > threshold x open interest
                    if <i128>size * PPM > <i128>threshold_ppm * interest[j]:
                        if not _add(concentrated, leg, &concentrated):
                            return 0
            if kinds[j] == 2 or not (position or settled or basis):
                continue  # bilateral swaps carry no variation margin: not in equity
            # ``equity``: the position's value at the mark less its VM basis
            if kinds[j] == 0:
                if not (_mul(position, marks[j], &part) and _mul(part, tick_values[j], &part)):
                    return 0
            else:
                if not (_mul(position, unit_values[j], &part)
                        and _mul(basis, tick_values[j], &unit)
                        and _mul(unit, periods[j], &unit) and _add(part, -unit, &part)):
                    return 0
            if not (_add(part, -(<i128>settled), &part) and _add(total, part, &total)):
                return 0
        if loss:
            # the grid's margin bounded by the legs' losses, with the concentration add-on
            # and the credit add-on of the account's rating, then its maintenance share
            if credits is None:
                addons = [addon for _, addon in params.credit_tiers]
                credits = [0, *addons]
                credit_max = max(addons, default=0)
            rating_value = engine.ratings.get(account.name, 0)
            if not _int64(rating_value, &rating):
                return 0
            if 0 <= rating < len(credits):
                credit_value = credits[rating]
            else:
                credit_value = credit_max
            if not (_int64(credit_value, &credit)
                    and _mul(loss, PPM, &part) and _mul(concentrated, conc_ppm, &unit)
                    and _add(part, unit, &part) and _mul(part, PPM + <i128>credit, &part)):
                return 0
            im = -_floordiv(-part, <i128>PPM * PPM) + 1
            if not _mul(im, maintenance, &part):
                return 0
            at_most = perp_mm - _floordiv(-part, PPM)
        else:
            at_most = perp_mm
        if at_most < floor_mm:
            at_most = floor_mm
        if total < at_most:
            return 0  # the grid may say it is short: the reference decides
    return 1


cdef int _shock_factors(object params, double* low, double* high) except -1:
    """1 + the grid's lowest index shock and 1 + its highest vol shock, as the reference's
    ``_put_at_worst`` computes them (Python floats, read once per check): 1 and both set, or 0
    when they are not plain floats (the reference's function is then asked)."""
    try:
        lowest = 1.0 + min(params.index_shocks)
        highest = 1.0 + max(params.vol_shocks)
    except Exception:  # (the reference's function raises it in its place)
        return 0
    if type(lowest) is not float or type(highest) is not float:
        return 0
    low[0] = lowest
    high[0] = highest
    return 1


cdef int _put_values(_Spec info, object engine, double low, double high,
                     double* values) except -1:
    """The doubles of ``default._put_at_worst(engine, spec, params)`` computed in C (``info``
    the swap's ``_Spec``, ``low`` and ``high`` the grid's factors, :func:`_shock_factors`):
    1 and ``values`` = (the level, the years, the contract's value in the worst corner, its
    value now), the reference's bits; 0 when a value is not one this computes exactly as the
    reference does -- a spec or index past the exact doubles, a calendar not the reference's,
    a model input the Python model refuses -- and the caller asks the reference's function.

    Exactness: the level ``float(index x tick)`` is the correctly rounded double of an exact
    decimal (Decimal's product is exact below 28 digits, its ``float`` correctly rounded), and
    so is ``index x coef / 10**-exp`` when both are exact doubles (one IEEE division); the
    years are the reference's own ``int / int``; the model is ``gpuex_black76_put`` (the same
    operations, the same libm)."""
    cdef int64_t index = 0, t = 0
    cdef i128 level_units, left
    cdef double level, years
    if not info.swap_ok:
        return 0
    epoch = engine.epoch
    if epoch is None or getattr(type(engine), "date_ns", None) is not _REFERENCE_DATE_NS:
        return 0
    if epoch is not info.epoch:  # the maturity's ns under this calendar, asked once
        info.epoch = None
        try:
            maturity_ns = engine.date_ns(info.maturity)
        except Exception:  # (the reference's function raises it in its place)
            return 0
        if not _int64(maturity_ns, &info.maturity_ns):
            return 0
        info.epoch = epoch
    if not (_int64(engine.indices.get(info.resale_index), &index) and index >= 1
            and _int64(engine.t, &t)):
        return 0
    level_units = <i128>index * info.tick_coef  # (below 2**62 x 2**53: no wrap)
    if level_units > EXACT:
        return 0
    if info.tick_exp >= 0:
        if info.tick_exp > 15:  # (10**16 > 2**53: the level is past the exact doubles)
            return 0
        level_units *= <int64_t>POW10[info.tick_exp]
        if level_units > EXACT:
            return 0
        level = <double>level_units
    else:
        level = <double>level_units / POW10[-info.tick_exp]
    left = <i128>info.maturity_ns - t
    if left <= 0:
        years = 0.0  # max(0, ...) / YEAR_NS
    else:
        # Python's int / int, as the reference's (correctly rounded: past 2**53 ns, some 104
        # days, one division of doubles would round twice)
        years = py128(left) / YEAR_NS
    values[0] = level
    values[1] = years
    # rvs_model_value: gpus x the put (discount 1.0: rate 0)
    if not (black76_put(level * low, info.floor, info.volatility * high, years, SQRT2,
                        &values[2])
            and black76_put(level, info.floor, info.volatility, years, SQRT2, &values[3])):
        return 0
    values[2] = info.gpus * values[2]
    values[3] = info.gpus * values[3]
    return 1


cdef int _put_worst(_Spec info, object engine, double low, double high, int64_t* out) except -1:
    """``default._put_at_worst(engine, spec, params)`` in C (:func:`_put_values`): 1 and
    ``out`` the same int; 0 where it declines (the caller asks the reference's function)."""
    cdef double values[4]
    cdef double loss
    cdef int64_t ceiling
    if not _put_values(info, engine, low, high, values):
        return 0
    # ceil(max(0.0, worst - now) x MINOR_PER_UNIT) + 1, at most the protected amount
    loss = values[2] - values[3]
    if not loss > 0.0:
        loss = 0.0
    loss = loss * <double>MINOR
    if not loss < 4611686018427387904.0:  # 2**62
        return 0
    ceiling = <int64_t>ceil(loss) + 1
    out[0] = ceiling if ceiling < info.protected else info.protected
    return 1


def put_at_worst(engine, spec, params):
    """The compiled ``exchange.risk.default._put_at_worst(engine, spec, params)`` (a swap
    seller's largest loss a contract on the grid, minor units): the same int, or None where
    the compiled computation declines and the compiled check asks the Python function. Reads
    only (a test's handle on :func:`_put_worst`)."""
    cdef double low = 0.0, high = 0.0
    cdef int64_t value = 0
    if spec.kind != "rvs":
        return None
    if not (_shock_factors(params, &low, &high) and _put_worst(_spec(spec), engine, low, high,
                                                               &value)):
        return None
    return value


def put_values(engine, spec, params):
    """The doubles the compiled put computes on its way (:func:`_put_values`): ``(level,
    years, worst, now)`` -- the resale index in currency units, the years to maturity and the
    contract's model value (currency units) in the grid's worst corner and now -- or None
    where it declines. Reads only (a test's handle: each must be the reference's bits)."""
    cdef double low = 0.0, high = 0.0
    cdef double values[4]
    if spec.kind != "rvs":
        return None
    if not (_shock_factors(params, &low, &high) and _put_values(_spec(spec), engine, low, high,
                                                                values)):
        return None
    return (values[0], values[1], values[2], values[3])


def black76(double forward, double strike, double sigma, double t_years):
    """The compiled ``pricing.black76_put(forward, strike, sigma, t_years)`` (discount 1.0,
    currency units): the same float, or None where it declines (the Python function raises or
    leaves the finite values). A test's handle on ``gpuex_black76_put``."""
    cdef double value = 0.0
    if not black76_put(forward, strike, sigma, t_years, SQRT2, &value):
        return None
    return value


cdef int64_t _open_interest(object engine, str swap) except? -2:
    """``_MaintenanceBound._concentrated``'s open interest of ``swap``: the long lots over
    every account; -1 past what C keeps."""
    cdef int64_t lots = 0, total = 0
    for account in engine.accounts.values():
        if not _int64(_get0(account.positions, swap), &lots):
            return -1
        if lots > 0:
            total += lots
            if total > SMALL:
                return -1
    return total


_mark_function = mark
_publish_index_function = publish_index
_fund_function = fund


# ----------------------------------------------------------------------------- the grid's P&L
# ``exchange.risk.margin.scenario_pnl`` (with ``pricing.black76_put_array`` and
# ``pricing._erfc_array``) for the compiled engine's margin: every elementwise IEEE operation
# of the numpy code, in C in the same order (no contraction), and numpy's own ``log`` and
# ``exp`` ufuncs -- its SIMD code, not the C library's -- called on contiguous arrays of the
# same values in the same order, so each element is the reference's bits. Zeros may differ in
# sign (numpy's own maximum does, between its SIMD and scalar loops); no margin figure reads it.
cdef extern from *:
    """
    #include <math.h>
    #include <stdint.h>
    #include <string.h>
    #pragma GCC push_options
    #pragma GCC optimize ("-ffp-contract=off")
    /* pricing._poly: Horner's rule, each step a rounded product then a rounded sum */
    static double gpuex_poly(double x, const double* c, int n) {
        double r = c[n - 1];
        int i;
        for (i = n - 2; i >= 0; i--) {
            r = r * x;
            r = r + c[i];
        }
        return r;
    }
    static double gpuex_neg_mul_sub(double z) { return (-z) * z - 0.5625; }
    static double gpuex_mul_add(double a, double b, double c) { return a * b + c; }
    static double gpuex_high_word(double ax) {
        uint64_t bits;
        memcpy(&bits, &ax, 8);
        bits &= 0xFFFFFFFF00000000ULL;
        memcpy(&ax, &bits, 8);
        return ax;
    }
    #pragma GCC pop_options
    """
    double c_poly "gpuex_poly"(double x, const double* c, int n) noexcept
    double neg_mul_sub "gpuex_neg_mul_sub"(double z) noexcept
    double mul_add "gpuex_mul_add"(double a, double b, double c) noexcept
    double high_word "gpuex_high_word"(double ax) noexcept


cdef object _log = _np.log
cdef object _exp = _np.exp
cdef object _empty = _np.empty
cdef object _zeros = _np.zeros
cdef int64_t KIND_PERP = _margin.PERP
cdef int64_t KIND_RVS = _margin.RVS
cdef double MINOR_F = float(MINOR_PER_UNIT)
cdef double ERX = _pricing._ERX
cdef double RA_LIMIT = _pricing._RA_LIMIT
# the erfc coefficients (pricing's tuples), lowest power first
cdef double PP[8]
cdef double QQ[8]
cdef double PA[8]
cdef double QA[8]
cdef double RA[9]
cdef double SA[10]
cdef double RB[8]
cdef double SB[9]
cdef int N_PP = len(_pricing._PP), N_QQ = len(_pricing._QQ), N_PA = len(_pricing._PA)
cdef int N_QA = len(_pricing._QA), N_RA = len(_pricing._RA), N_SA = len(_pricing._SA)
cdef int N_RB = len(_pricing._RB), N_SB = len(_pricing._SB)


cdef int _load(double* into, tuple values, int most) except -1:
    if len(values) > most:
        raise ImportError("pricing's erfc coefficients changed: _mark's tables are too short")
    for i, value in enumerate(values):
        into[i] = value
    return 0


_load(PP, _pricing._PP, 8)
_load(QQ, _pricing._QQ, 8)
_load(PA, _pricing._PA, 8)
_load(QA, _pricing._QA, 8)
_load(RA, _pricing._RA, 9)
_load(SA, _pricing._SA, 10)
_load(RB, _pricing._RB, 8)
_load(SB, _pricing._SB, 9)


cdef int _erfc(double[::1] x, double[::1] out) except -1:
    """``pricing._erfc_array(x)`` into ``out`` (``x`` finite or infinite, no NaN): each region
    of fdlibm's as the numpy port computes it; the third region's two ``exp`` through numpy's
    ufunc on the region's elements, in order (the port's two calls, the same arrays)."""
    cdef Py_ssize_t n = x.shape[0], i, c, m3 = 0
    cdef double xi, ax, z, y, q, s, ratio, r
    cdef double[::1] first, second, exp_first, exp_second
    for i in range(n):
        ax = fabs(x[i])
        if ax >= 1.25 and ax < 28.0:
            m3 += 1
    if m3:
        first = _empty(m3)
        second = _empty(m3)
        c = 0
        for i in range(n):
            ax = fabs(x[i])
            if ax >= 1.25 and ax < 28.0:
                s = 1.0 / (ax * ax)
                if ax < RA_LIMIT:
                    ratio = c_poly(s, RA, N_RA) / c_poly(s, SA, N_SA)
                else:
                    ratio = c_poly(s, RB, N_RB) / c_poly(s, SB, N_SB)
                z = high_word(ax)  # z*z exact
                first[c] = neg_mul_sub(z)  # -z * z - 0.5625
                second[c] = mul_add(z - ax, z + ax, ratio)  # (z - am) * (z + am) + ratio
                c += 1
        exp_first = _exp(first.base)
        exp_second = _exp(second.base)
    c = 0
    for i in range(n):
        xi = x[i]
        ax = fabs(xi)
        if ax < 0.84375:
            z = xi * xi
            y = c_poly(z, PP, N_PP) / c_poly(z, QQ, N_QQ)
            if xi < 0.25:
                out[i] = 1.0 - (xi + xi * y)
            else:
                out[i] = 0.5 - (xi * y + (xi - 0.5))
        elif ax < 1.25:
            q = c_poly(ax - 1.0, PA, N_PA) / c_poly(ax - 1.0, QA, N_QA)
            out[i] = 1.0 - ERX - q if xi >= 0.0 else 1.0 + (ERX + q)
        elif ax < 28.0:
            r = exp_first[c] * exp_second[c]
            c += 1
            if xi <= -6.0:
                out[i] = 2.0
            elif xi > 0.0:
                out[i] = r / ax
            else:
                out[i] = 2.0 - r / ax
        else:
            out[i] = 0.0 if xi > 0.0 else 2.0
    return 0


def scenario_pnl(book, grid):
    """``exchange.risk.margin.scenario_pnl(book, grid)`` compiled (see above): the same
    float64 ``[n_instruments x len(grid)]`` array of P&Ls per long lot (minor units), or None
    where it declines -- an input ``black76_put_array`` refuses (it raises), a value that
    leaves the finite numbers (the reference's arithmetic then decides) -- and the caller
    runs the Python function."""
    # (a book's arrays are contiguous: ``ascontiguousarray`` hands them back as they are)
    cdef const int64_t[::1] kind = _np.ascontiguousarray(book.kind)
    cdef const int64_t[::1] mark = _np.ascontiguousarray(book.mark)
    cdef const int64_t[::1] tick_value = _np.ascontiguousarray(book.tick_value)
    cdef const int64_t[::1] gpus = _np.ascontiguousarray(book.gpus_per_contract)
    cdef const double[::1] index = _np.ascontiguousarray(book.index)
    cdef const double[::1] floor = _np.ascontiguousarray(book.floor)
    cdef const double[::1] sigma = _np.ascontiguousarray(book.sigma)
    cdef const double[::1] t_years = _np.ascontiguousarray(book.t_years)
    cdef const double[::1] s
    cdef const double[::1] v
    cdef double[:, ::1] pnl
    cdef double[:, ::1] forward, vol, ratio, logs
    cdef double[::1] args, erfcs
    cdef Py_ssize_t n = kind.shape[0], size, m = 0, j, r, k, K, K1, cell, half
    cdef double f, strike, sd, tt, notional, intrinsic, value, s_live, k_live, d1, d2, high
    cdef double scale
    s_arr, v_arr = grid._shared_arrays()
    s = s_arr
    v = v_arr
    K = s.shape[0]
    K1 = K + 1
    if v.shape[0] != K:
        return None
    result = _zeros((n, K))
    pnl = result
    for j in range(n):
        if kind[j] == KIND_PERP:
            notional = <double>mark[j] * <double>tick_value[j]
            for k in range(K):
                pnl[j, k] = notional * s[k]
        elif kind[j] == KIND_RVS:
            m += 1
        else:
            return None
    if m:
        forward = _empty((m, K1))
        vol = _empty((m, K1))
        ratio = _empty((m, K1))
        r = 0
        # the put's inputs (index x (1 + s), the unshocked index last; sigma likewise),
        # checked as black76_put_array checks them, and its log's argument f / k_live
        for j in range(n):
            if kind[j] != KIND_RVS:
                continue
            strike = floor[j]
            tt = t_years[j]
            if not (isfinite(strike) and strike >= 0.0 and isfinite(tt)):
                return None
            for k in range(K1):
                if k < K:
                    forward[r, k] = index[j] * (1.0 + s[k])
                    vol[r, k] = sigma[j] * (1.0 + v[k])
                else:
                    forward[r, k] = index[j]
                    vol[r, k] = sigma[j]
                f = forward[r, k]
                sd = vol[r, k]
                if not (isfinite(f) and f > 0.0 and isfinite(sd) and sd >= 0.0):
                    return None
                sd = sd * sqrt(tt if tt > 0.0 else 0.0) if (tt > 0.0 and sd > 0.0) else 0.0
                if sd > 0.0 and strike > 0.0 and isfinite(sd):
                    ratio[r, k] = f / strike
                else:
                    ratio[r, k] = f / 1.0
            r += 1
        logs = _log(ratio.base)
        size = m * K1
        args = _empty(2 * size)
        erfcs = _empty(2 * size)
        # d2 / sqrt 2 of every cell (row-major), then d1 / sqrt 2: the port's one call
        r = 0
        for j in range(n):
            if kind[j] != KIND_RVS:
                continue
            strike = floor[j]
            tt = t_years[j]
            for k in range(K1):
                sd = vol[r, k]
                sd = sd * sqrt(tt if tt > 0.0 else 0.0) if (tt > 0.0 and sd > 0.0) else 0.0
                s_live = sd if (sd > 0.0 and strike > 0.0 and isfinite(sd)) else 1.0
                d1 = logs[r, k] / s_live + 0.5 * s_live
                d2 = d1 - s_live
                if isnan(d1) or isnan(d2):
                    return None
                cell = r * K1 + k
                args[cell] = d2 / SQRT2
                args[size + cell] = d1 / SQRT2
            r += 1
        _erfc(args, erfcs)
        r = 0
        for j in range(n):
            if kind[j] != KIND_RVS:
                continue
            strike = floor[j]
            tt = t_years[j]
            scale = <double>gpus[j] * MINOR_F
            for k in range(K1):
                f = forward[r, k]
                sd = vol[r, k]
                sd = sd * sqrt(tt if tt > 0.0 else 0.0) if (tt > 0.0 and sd > 0.0) else 0.0
                live = sd > 0.0 and strike > 0.0 and isfinite(sd)
                intrinsic = strike - f
                intrinsic = 1.0 * (intrinsic if intrinsic >= 0.0 else 0.0)
                if strike == 0.0:
                    value = 0.0
                elif isinf(sd):  # (strike > 0)
                    value = 1.0 * strike
                elif not live:
                    value = intrinsic
                else:
                    cell = r * K1 + k
                    value = 0.5 * (strike * erfcs[cell] - f * erfcs[size + cell])
                    if not isfinite(value):
                        return None
                    high = value if value >= intrinsic else intrinsic
                    value = high if high <= 1.0 * strike else 1.0 * strike
                ratio[r, k] = value  # (the log's arguments are read: the row's values here)
            for k in range(K):
                pnl[j, k] = (ratio[r, k] - ratio[r, K]) * scale
            r += 1
    for k in range(K):
        if s[k] == 0.0 and v[k] == 0.0:
            for j in range(n):
                pnl[j, k] = 0.0
    return result


cdef double SNAP_REL = _margin.SNAP_REL
cdef double SNAP_MAX = _margin.SNAP_MAX
cdef int64_t MAX_LOTS = _margin.MAX_LOTS
cdef double INT64_SAFE = float(_margin._INT64_SAFE)
cdef object MarginResult = _margin.MarginResult


cdef inline bint _snapped(double x, double tau, int64_t* out) noexcept:
    """``margin._ceil_snapped`` of one value: ``max(ceil(x - tau), 0.0)`` as int64; False
    where the Python function raises (not finite, or at or past 2**62)."""
    cdef double y
    if not (isfinite(x) and x < INT64_SAFE):
        return False
    y = ceil(x - tau)
    out[0] = <int64_t>(y if y >= 0.0 else 0.0)
    return True


def initial_margin(book, params, tiers):
    """``exchange.risk.margin.initial_margin(book, params, tiers)`` for the compiled engine
    (``CompiledExchange.initial_margin_twin``, asked by ``MarginConfig.requirements``): the
    grid's P&L (:func:`scenario_pnl`) and the rule's every step in C -- the ordered products
    (instruments in order, each product and sum rounded as numpy's elementwise operations
    round them), the first worst scenario per family, the concentration add-on (legs in
    row-major order, as ``bincount`` sums them), the credit add-on of ``tiers``, the one
    rounding (``_ceil_snapped``) and the MM in integers. The same ``MarginResult``, or None
    where it declines: no ``tiers`` (the indicated tiers: the reference's), tiers out of range,
    positions or open interest past ``MAX_LOTS``, a value that leaves the finite numbers or
    int64 (the Python function raises or decides)."""
    cdef const int64_t[:, ::1] positions
    cdef const int64_t[::1] open_interest, applies
    cdef double[:, ::1] pnl
    cdef double[::1] absmax, row, addon
    cdef int64_t[::1] order, bounds, legk
    cdef int64_t[::1] im_out, mm_out, worst_k_out, loss_out, conc_out, credit_out
    cdef Py_ssize_t m, n, K, a, j, k, c, f, n_families, best
    cdef double size, worst, conc, credit, pre, total, tau, largest, fw, acc, value, conc_factor
    cdef int64_t lots, threshold, conc_ppm, maintenance, min_im, im, whole, part, n_tiers
    cdef int64_t snapped
    cdef bint concentration
    if tiers is None:
        return None
    pnl_array = scenario_pnl(book, _margin._grid_of(params))
    if pnl_array is None:
        return None
    pnl = pnl_array
    positions = _np.ascontiguousarray(book.positions)  # (the book's own: contiguous)
    open_interest = _np.ascontiguousarray(book.open_interest)
    m = positions.shape[0]
    n = positions.shape[1]
    K = pnl.shape[1]
    tiers_array = _np.asarray(tiers, dtype=_np.int64)
    n_tiers = len(params.credit_tiers)
    if tiers_array.shape != (m,) or n != pnl.shape[0] or open_interest.shape[0] != n:
        return None
    applies = _np.ascontiguousarray(tiers_array)
    for a in range(m):
        if not 0 <= applies[a] <= n_tiers:
            return None
    if not (_int64(params.concentration_addon_ppm, &conc_ppm)
            and _int64(params.concentration_threshold_ppm, &threshold)
            and _int64(params.maintenance_ppm, &maintenance)
            and _int64(params.min_im, &min_im) and conc_ppm >= 0 and threshold >= 0
            and maintenance >= 0 and min_im >= 0):
        return None
    for j in range(n):
        if not 0 <= open_interest[j] <= MAX_LOTS:
            return None
    # each instrument's largest |P&L| (its bound on the float terms), every value finite
    absmax = _empty(n)
    for j in range(n):
        absmax[j] = 0.0
        for k in range(K):
            value = fabs(pnl[j, k])
            if not isfinite(value):
                return None
            if k == 0 or value > absmax[j]:
                absmax[j] = value
    # the families in increasing id, each one's columns in increasing order
    underlying = book.underlying.tolist()
    families = sorted(set(underlying))
    n_families = len(families)
    order = _np.empty(n, dtype=_np.int64)
    bounds = _np.empty(n_families + 1, dtype=_np.int64)
    c = 0
    for f, family in enumerate(families):
        bounds[f] = c
        for j in range(n):
            if underlying[j] == family:
                order[c] = j
                c += 1
    bounds[n_families] = c
    # the credit tiers' add-ons as the fractions numpy divides (``addon_ppm / PPM``)
    addon = _empty(n_tiers + 1)
    addon[0] = 0.0
    for f, (_, addon_ppm) in enumerate(params.credit_tiers):
        if not _int64(addon_ppm, &lots):
            return None
        addon[f + 1] = <double>lots / <double>PPM  # (exact doubles: Python's int / int)
    conc_factor = <double>conc_ppm / <double>PPM
    concentration = conc_ppm != 0 and n != 0 and m != 0
    row = _empty(K if K else 1)
    legk = _np.zeros(n, dtype=_np.int64)
    im_array = _np.empty(m, dtype=_np.int64)
    mm_array = _np.empty(m, dtype=_np.int64)
    worst_k_array = _np.zeros(m, dtype=_np.int64)
    loss_array = _np.empty(m, dtype=_np.int64)
    conc_array = _np.empty(m, dtype=_np.int64)
    credit_array = _np.empty(m, dtype=_np.int64)
    im_out, mm_out, worst_k_out = im_array, mm_array, worst_k_array
    loss_out, conc_out, credit_out = loss_array, conc_array, credit_array
    for a in range(m):
        size = 0.0
        for j in range(n):
            lots = positions[a, j]
            if not -MAX_LOTS <= lots <= MAX_LOTS:
                return None
            size = size + fabs(<double>lots) * absmax[j]
        worst = 0.0
        largest = -1.0
        for f in range(n_families):
            # the family's loss in every scenario: -(sum over its legs of q x pnl)
            for k in range(K):
                acc = 0.0
                for c in range(bounds[f], bounds[f + 1]):
                    j = order[c]
                    acc = acc + <double>positions[a, j] * pnl[j, k]
                row[k] = -acc
            best = 0
            for k in range(K):
                if isnan(row[k]):
                    return None
                if row[k] > row[best]:
                    best = k
            fw = row[best] if row[best] >= 0.0 else 0.0
            worst = worst + fw
            for c in range(bounds[f], bounds[f + 1]):
                legk[order[c]] = best
            if fw > largest:
                worst_k_out[a] = best
                largest = fw
        conc = 0.0
        if concentration:
            for j in range(n):
                lots = positions[a, j]
                if (lots if lots >= 0 else -lots) * PPM > threshold * open_interest[j]:
                    value = -(<double>lots) * pnl[j, legk[j]]
                    conc = conc + (value if value >= 0.0 else 0.0)
            conc = conc * conc_factor
        pre = worst + conc
        credit = pre * addon[applies[a]] if n_tiers and m else 0.0
        total = pre + credit
        tau = SNAP_REL * (size + total)
        if not tau <= SNAP_MAX:
            if isnan(tau):
                return None
            tau = SNAP_MAX
        if not (_snapped(total, tau, &im) and _snapped(worst, tau, &loss_out[a])
                and _snapped(conc, tau, &conc_out[a]) and _snapped(credit, tau, &credit_out[a])):
            return None
        if im < min_im:
            im = min_im
        im_out[a] = im
        whole = im // PPM  # (im >= 0: C's division is the floor)
        part = im - whole * PPM
        mm_out[a] = whole * maintenance + -_floordiv(-part * <i128>maintenance, PPM)
    return MarginResult(
        im=im_array,
        mm=mm_array,
        worst_scenario=worst_k_array,
        scenario_loss=loss_array,
        concentration_addon=conc_array,
        credit_addon=credit_array,
    )


def credit_standing(book, params):
    """What ``MarginConfig.credit_standing`` computes of ``book`` for the compiled engine
    (``CompiledExchange.credit_standing_twin``): ``(tiers, ratios)``, two lists over the
    book's accounts -- ``indicated_tiers(book, params, gross).tolist()`` and
    ``capital_ratios_ppm(book, gross)`` with ``gross = gross_notional(book)`` -- in exact
    integers (the reference's comparisons are exact by contract), or None where it declines:
    a gross notional at or past 2**61 (the reference's float check then decides whether it
    raises), a floor past the exact doubles, a value past int64."""
    cdef const int64_t[::1] kind = _np.ascontiguousarray(book.kind)
    cdef const int64_t[::1] mark = _np.ascontiguousarray(book.mark)
    cdef const int64_t[::1] tick_value = _np.ascontiguousarray(book.tick_value)
    cdef const int64_t[::1] gpus = _np.ascontiguousarray(book.gpus_per_contract)
    cdef const double[::1] floor = _np.ascontiguousarray(book.floor)
    cdef const int64_t[:, ::1] positions = _np.ascontiguousarray(book.positions)
    cdef const int64_t[:, ::1] owed = _np.ascontiguousarray(book.premiums_owed)
    cdef const int64_t[::1] equity = _np.ascontiguousarray(book.equity)
    cdef Py_ssize_t m = positions.shape[0], n = positions.shape[1], a, j, t
    cdef i128 gross, lots, term, limit = (<i128>1) << 61
    cdef int64_t threshold, applies
    cdef double protected
    cdef int64_t notional[MAX_LISTINGS]
    cdef int64_t thresholds[MAX_TIERS]
    cdef int n_thresholds = len(params.credit_tiers)
    if (n > MAX_LISTINGS or n_thresholds > MAX_TIERS or kind.shape[0] != n
            or owed.shape[0] != m or owed.shape[1] != n or equity.shape[0] != m):
        return None
    for t, (threshold_value, _) in enumerate(params.credit_tiers):
        if not (_int64(threshold_value, &thresholds[t]) and thresholds[t] >= 0):
            return None
    # gross_notional's per-lot notional: a perpetual's mark x tick value, a swap's protected
    # amount rounded half-even (``np.rint`` of floor x gpus x 100.0)
    for j in range(n):
        if kind[j] == KIND_PERP:
            if not (0 <= mark[j] <= SMALL and 0 <= tick_value[j] <= SMALL):
                return None
            term = <i128>mark[j] * tick_value[j]
            if term > SMALL:
                return None
            notional[j] = <int64_t>term
        elif kind[j] == KIND_RVS:
            protected = floor[j] * <double>gpus[j] * MINOR_F
            if not (protected >= 0.0 and protected < 4611686018427387904.0):  # 2**62
                return None
            notional[j] = <int64_t>nearbyint(protected)
        else:
            notional[j] = 0
    tiers = []
    ratios = []
    for a in range(m):
        gross = 0
        for j in range(n):
            lots = positions[a, j]
            if kind[j] == KIND_RVS:
                lots = -lots if lots < 0 else 0  # sellers' lots only
            elif lots < 0:
                lots = -lots
            if not (_mul(lots, notional[j], &term) and _add(gross, term, &gross)
                    and _add(gross, owed[a, j], &gross)):
                return None
        if gross >= limit or gross < 0:
            return None
        if gross < 1:
            gross = 1
        # the tiers (thresholds descending: a prefix applies), each comparison exact
        applies = 0
        if m and n_thresholds:
            for t in range(n_thresholds):
                if <i128>equity[a] * PPM < <i128>thresholds[t] * gross:
                    applies += 1
        tiers.append(applies)
        ratios.append(py128(_floordiv(<i128>equity[a] * PPM, gross)))
    return tiers, ratios
