"""A bot's timers: the tag it scheduled reaches ``on_timer``, even when it is None."""

from __future__ import annotations

import pytest

from clients.bot import Bot
from clients.latency import Latency
from exchange.core import events as ev
from tests.clients.test_runner import MS, market

# every test here runs with both runner twins (tests/clients/conftest.py)
pytestmark = pytest.mark.usefixtures("twin")


class Untagged(Bot):
    """Schedules one timer with no tag, with the documented ``on_timer(ctx, tag)``."""

    def __init__(self) -> None:
        self.tags: list = []

    def on_start(self, ctx):
        ctx.schedule(ctx.now + MS)

    def on_timer(self, ctx, tag):
        self.tags.append(tag)


def test_a_timer_scheduled_without_a_tag_calls_on_timer_with_tag_none():
    engine, sim, runner, events, end = market(days=1)
    bot = Untagged()
    runner.add("timer", "taker", bot, latency=Latency(fixed_ns=MS))
    runner.start(end)
    sim.run(end, on_step=engine.advance)
    assert not [e for e in events if e.kind == ev.BOT_FAILED]
    assert bot.tags == [None]
