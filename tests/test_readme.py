"""The README's code example runs and its asserted outcome holds."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _example(marker: str) -> dict:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    [block] = [b for b in blocks if marker in b]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    return namespace


def test_readme_python_example_runs():
    book = _example("OrderBook")["book"]
    assert (book.last_filled, book.last_resting, book.last_cancelled) == (5, 0, 3)


def test_readme_bot_example_quotes_in_a_session():
    from clients.runner import BotRunner
    from exchange.core.clock import Simulator
    from exchange.kernel.engine import DAY_NS, Exchange
    from exchange.sessions.scenario_products import ProductsScenario

    bot = _example("class Skewer")["Skewer"]()
    events: list = []
    engine, sim = Exchange(events.append), Simulator()
    engine.start("readme", 1, {})
    market = ProductsScenario(days=45)
    market.setup(engine)
    market.schedule_market(engine, sim, 1)
    runner = BotRunner(engine, sim, 1)
    runner.add("skewer", "maker", bot)
    runner.start(2 * DAY_NS)
    sim.run(2 * DAY_NS, on_step=engine.advance)
    quotes = [e for e in events if e.kind == "OrderAccepted" and e.account == "maker"]
    assert len(quotes) >= 2 * 40  # two quotes for each of about 48 hourly prints
    assert not [e for e in events if e.kind == "BotFailed"]


def test_ci_runs_the_readme_test_command():
    readme = README.read_text(encoding="utf-8")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    test_command = re.findall(r"```sh\n(.*?)\n```", readme, re.DOTALL)[1]
    assert "pytest" in test_command
    assert test_command in ci
