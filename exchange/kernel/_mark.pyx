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
``_put_at_worst``, asked once per swap and check), the concentration and credit add-ons, the
``min_im`` floor. A holder below its bound (the grid may find it short), a live CDS, or a
value past the C bounds runs the reference's ``check_maintenance`` from the start: the check
changes nothing before its first liquidation, so that is exactly the reference's step.

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
"""

from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.object cimport PyObject, PyTypeObject
from libc.stdint cimport int32_t, int64_t

from exchange.core._lines cimport LineBatch, put_bytes, put_value
from exchange.kernel._kernel cimport i128, lines_of, py128
from matching_core._book cimport Level, OrderBook

from exchange.core import events as ev
from exchange.core.events import Event
from exchange.kernel import engine as _engine
from exchange.products import perp as _perp
from exchange.risk import default as _default

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
    _SPECS[id(spec)] = info
    return info


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
    accounts = engine._sorted_accounts()
    defaulted = engine.defaulted
    holders = []
    for account in accounts:
        if account.positions.get(instrument, 0) and account.name not in defaulted:
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
            if not (_int64(positions.get(name, 0), &position)
                    and _int64(vm_basis.get(name, 0), &settled)
                    and _int64(premium_basis.get(name, 0), &basis)):
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
                        if not (_int64(_default._put_at_worst(engine, specs[j], params),
                                       &puts[j]) and puts[j] >= 0):
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


cdef int64_t _open_interest(object engine, str swap) except? -2:
    """``_MaintenanceBound._concentrated``'s open interest of ``swap``: the long lots over
    every account; -1 past what C keeps."""
    cdef int64_t lots = 0, total = 0
    for account in engine.accounts.values():
        if not _int64(account.positions.get(swap, 0), &lots):
            return -1
        if lots > 0:
            total += lots
            if total > SMALL:
                return -1
    return total


_mark_function = mark
_publish_index_function = publish_index
_fund_function = fund
