"""gpuex exchange layer: the exchange's rooms, each a package with one job.

Rooms import only the rooms before them (``tests/test_rooms.py`` checks it, and that no two
modules import each other, even for type hints):

- ``exchange.core``: commands, events, the simulated clock, accounts, the canonical state,
  units and the bounds a session may ask for;
- ``exchange.products``: instruments, the GPU indices, perpetuals, residual value swaps, credit
  default swaps and their pricing;
- ``exchange.risk``: initial and variation margin, calls, default and the waterfall, bilateral
  clearing;
- ``exchange.kernel``: the engine (the reference ``Exchange`` and its compiled twin);
- ``exchange.store``: the event store, the journaller, the store check, the replay fold;
- ``exchange.credit``: the second seed's credit economy and its schedule;
- ``exchange.postmortem``: the analysis, the report, trends, borrowed time, export, compare;
- ``exchange.sessions``: sessions, scenarios, the market's schedule, sweeps;

and ``exchange.cli`` on top. Depends on ``matching_core`` only; never imports ``clients``.

The modules lived directly in ``exchange/`` until 2026-12-05 (issue #20, point 5). Their old
names still import, as the same module objects, with a ``DeprecationWarning`` naming the new
one (:data:`MOVED`; CHANGELOG.md); ``exchange.store`` and ``exchange.postmortem``, now rooms,
re-export what the old modules' users imported from them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings

#: Modules moved into rooms (issue #20, point 5): old name -> new name.
MOVED = {
    "exchange.bilateral": "exchange.risk.bilateral",
    "exchange.borrowed": "exchange.postmortem.borrowed",
    "exchange.cds": "exchange.products.cds",
    "exchange.cds_market": "exchange.risk.cds_market",
    "exchange.clock": "exchange.core.clock",
    "exchange.commands": "exchange.core.commands",
    "exchange.compare": "exchange.postmortem.compare",
    "exchange.compiled": "exchange.kernel.compiled",
    "exchange.default": "exchange.risk.default",
    "exchange.economy": "exchange.credit.economy",
    "exchange.economy_schedule": "exchange.credit.economy_schedule",
    "exchange.engine": "exchange.kernel.engine",
    "exchange.engines": "exchange.kernel.engines",
    "exchange.events": "exchange.core.events",
    "exchange.export": "exchange.postmortem.export",
    "exchange.fold": "exchange.store.fold",
    "exchange.helper": "exchange.store.helper",
    "exchange.index": "exchange.products.index",
    "exchange.instruments": "exchange.products.instruments",
    "exchange.journal": "exchange.store.journal",
    "exchange.limits": "exchange.core.limits",
    "exchange.margin": "exchange.risk.margin",
    "exchange.margin_cycle": "exchange.risk.margin_cycle",
    "exchange.market": "exchange.sessions.market",
    "exchange.perp": "exchange.products.perp",
    "exchange.pricing": "exchange.products.pricing",
    "exchange.report": "exchange.postmortem.report",
    "exchange.rvs": "exchange.products.rvs",
    "exchange.scenario_products": "exchange.sessions.scenario_products",
    "exchange.scenarios": "exchange.sessions.scenarios",
    "exchange.session": "exchange.sessions.session",
    "exchange.state": "exchange.core.state",
    "exchange.store_check": "exchange.store.check",
    "exchange.sweep": "exchange.sessions.sweep",
    "exchange.trend": "exchange.postmortem.trend",
    "exchange.units": "exchange.core.units",
    "exchange.variation": "exchange.risk.variation",
}


class _Moved:
    """Imports an old module name as the moved module itself (not a copy): ``exchange.engine``
    *is* ``exchange.kernel.engine``, so ``isinstance`` checks, patches and pickles agree. A
    meta path finder and loader by its methods (``find_spec``; ``create_module``,
    ``exec_module``), as the import system takes them: not a subclass of
    ``importlib.abc``'s, whose import pulls in ``importlib.resources`` (5-6 ms of the start-up
    of every process that imports ``exchange``, where nothing else imports it)."""

    def find_spec(self, name, path=None, target=None):
        if name in MOVED:
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        return None  # a placeholder; exec_module puts the real module in its place

    def exec_module(self, module):
        new = MOVED[module.__name__]
        warnings.warn(
            f"{module.__name__} moved to {new} (CHANGELOG.md); import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        # the import system returns whatever sys.modules holds after exec_module
        sys.modules[module.__name__] = importlib.import_module(new)


# first: an old name must never be found as a stale file of an earlier install
sys.meta_path.insert(0, _Moved())
