"""Fixtures shared by the kernel's tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.exchange.kernel.handed import handed_to_reference


@pytest.fixture
def fallbacks() -> Iterator[list[Any]]:
    """The raw commands the compiled engine handed to the reference (``Exchange.handle``)."""
    with handed_to_reference() as handed:
        yield handed
