"""What the compiled engine hands to the reference: one recorder for the kernel's tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from exchange.kernel.compiled import CompiledExchange
from exchange.kernel.engine import Exchange


@contextlib.contextmanager
def handed_to_reference() -> Iterator[list[Any]]:
    """While the block runs, every raw command a ``CompiledExchange`` hands to
    ``Exchange.handle`` (the reference's path) is appended to the list it yields."""
    handed: list[Any] = []
    reference_handle = Exchange.handle

    def counting(self, raw):
        if isinstance(self, CompiledExchange):
            handed.append(raw)
        return reference_handle(self, raw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Exchange, "handle", counting)
        yield handed
