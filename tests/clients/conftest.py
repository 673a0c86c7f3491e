"""The runner's twins: ``clients.runner.BotRunner`` (the reference) and
``clients._runner.CompiledRunner`` (what sessions of the compiled engine run), each with its
Context: ``clients.context.Context`` (the reference) and ``clients._context.Context`` (what
the compiled runner gives in-process bots).

A test module marked ``pytestmark = pytest.mark.usefixtures("twin")`` runs each of its tests
once with each: the :func:`twin` fixture points the names ``BotRunner``, ``dispatch`` and
``Context`` of every ``tests.clients`` module (and :data:`clients.runner.RUNNER`, which
sessions obey) at the twin (the compiled runner makes compiled contexts itself). A test of
the reference's own machinery (one that patches ``clients.runner``'s functions) pins itself
with ``@pytest.mark.parametrize("twin", ["python"], indirect=True)``.
"""

from __future__ import annotations

import sys

import pytest

import clients.runner as runner_module
from clients import _context, _runner
from clients import context as context_module

#: name -> (runner class, dispatch function, context class)
TWINS = {
    "python": (runner_module.BotRunner, runner_module.dispatch, context_module.Context),
    "compiled": (_runner.CompiledRunner, _runner.dispatch, _context.Context),
}


@pytest.fixture(params=sorted(TWINS))
def twin(request, monkeypatch) -> str:
    """The runner twin this test runs with (``"python"`` or ``"compiled"``)."""
    runner_class, dispatch, context = TWINS[request.param]
    for name, module in list(sys.modules.items()):
        if not name.startswith("tests.clients"):
            continue
        if getattr(module, "BotRunner", None) is runner_module.BotRunner:
            monkeypatch.setattr(module, "BotRunner", runner_class)
        if getattr(module, "dispatch", None) is runner_module.dispatch:
            monkeypatch.setattr(module, "dispatch", dispatch)
        if getattr(module, "Context", None) is context_module.Context:
            monkeypatch.setattr(module, "Context", context)
    monkeypatch.setattr(runner_module, "RUNNER", request.param)
    return request.param
