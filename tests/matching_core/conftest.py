"""Fixtures for the matching-core specification tests: every rule runs on both books."""

import pytest

from matching_core import OrderBook, ReferenceBook


@pytest.fixture(params=[OrderBook, ReferenceBook], ids=["cython", "reference"])
def make_book(request):
    """A factory for a fresh book of the implementation under test."""
    return request.param


@pytest.fixture
def book(make_book):
    return make_book(max_price=1_000, max_qty=1_000)
