"""Units people write in files and on the command line, converted exactly to the integers the
exchange runs on: durations to nanoseconds."""

from __future__ import annotations

import re
from decimal import Decimal

from exchange.core.clock import DAY_NS

#: Duration suffixes -> ns.
DURATION_UNITS = {
    "ns": 1,
    "us": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3_600 * 10**9,
    "d": DAY_NS,
    "w": 7 * DAY_NS,
}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ns|us|ms|s|m|h|d|w)\s*$")


def parse_duration(text: str) -> int:
    """``"8h"`` -> 28_800_000_000_000 ns. Units: ns us ms s m h d w; exact or ``ValueError``."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like '90s', '8h' or '3d'")
    value = Decimal(match.group(1)) * DURATION_UNITS[match.group(2)]
    if value != value.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of nanoseconds")
    return int(value)
