"""The runner's twins: ``clients.runner.BotRunner`` (the reference) and
``clients._runner.CompiledRunner`` (what sessions of the compiled engine run).

A test module marked ``pytestmark = pytest.mark.usefixtures("twin")`` runs each of its tests
once with each: the :func:`twin` fixture points the names ``BotRunner`` and ``dispatch`` of
every ``tests.clients`` module (and :data:`clients.runner.RUNNER`, which sessions obey) at
the twin. A test of the reference's own machinery (one that patches ``clients.runner``'s
functions) pins itself with ``@pytest.mark.parametrize("twin", ["python"], indirect=True)``.
"""

from __future__ import annotations

import sys

import pytest

import clients.runner as runner_module
from clients import _runner

#: name -> (runner class, dispatch function)
TWINS = {
    "python": (runner_module.BotRunner, runner_module.dispatch),
    "compiled": (_runner.CompiledRunner, _runner.dispatch),
}


@pytest.fixture(params=sorted(TWINS))
def twin(request, monkeypatch) -> str:
    """The runner twin this test runs with (``"python"`` or ``"compiled"``)."""
    runner_class, dispatch = TWINS[request.param]
    for name, module in list(sys.modules.items()):
        if not name.startswith("tests.clients"):
            continue
        if getattr(module, "BotRunner", None) is runner_module.BotRunner:
            monkeypatch.setattr(module, "BotRunner", runner_class)
        if getattr(module, "dispatch", None) is runner_module.dispatch:
            monkeypatch.setattr(module, "dispatch", dispatch)
    monkeypatch.setattr(runner_module, "RUNNER", request.param)
    return request.param
