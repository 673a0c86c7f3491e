"""gpuex exchange layer: instruments, the sequencer, margin, the event store, scenarios.

Depends on ``matching_core`` only; never imports ``clients``. Built out from issue #3 on.
"""
