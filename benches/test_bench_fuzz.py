"""The long fuzz run of issue #17: a million hostile commands through ``Exchange.handle``.

``tests.fuzz.mutator.Fuzzer``: commands of every type drawn from templates, three in four then
mutated (fields set to ints past int64, negative, bools, NaN and infinities, huge and odd
strings, nested containers; fields dropped, added, retyped; the acting account swapped; the
whole command replaced by hostile JSON), into one engine with a spot instrument, a perpetual
and a swap series, the exchange's timed actions (index prints, marks, funding, premiums,
variation margin) every 500 inputs. Half the inputs go to an engine with margin on (calls,
liquidations, defaults, close-outs, auctions, auto-deleveraging, the waterfall). Every input
is checked: nothing raises; a refusal is one ``CommandRejected`` with a one-line reason that
changes nothing (ledger fingerprint each time, full state hash every 997th); every event
encodes and its typed fields fit int64; the ledger balances after every event (on a fold); at
the end the fold's hash is the engine's.

The default run sends 120,000 inputs (about 8 s; CI's 15-minute budget), the acceptance run
(``-m acceptance``) the full million (40-70 s on the CI machine); ``FUZZ_INPUTS`` overrides
the default run's count and ``FUZZ_SEED`` (default 2026; the margin half uses the next seed)
the seed. One round (``benchmark.pedantic``), timed with ``time.perf_counter`` (figures exist
under ``--benchmark-disable`` too) and put in ``benchmark.extra_info``. Reproduce:
``.venv/bin/python -m pytest benches/test_bench_fuzz.py -s -m 'acceptance or not acceptance'``.

Units: inputs, inputs/s, seconds.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# the fuzzer is the test suite's (tests/fuzz/mutator.py): a bare `pytest benches` puts only
# benches/ on the path, so the checkout's root goes there too
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzz.mutator import Fuzzer, FuzzSummary  # noqa: E402

FIELDS = ("inputs", "rejected", "accepted", "events", "seconds")

import pytest  # noqa: E402

N_INPUTS = int(os.environ.get("FUZZ_INPUTS", "120000"))
SEED = int(os.environ.get("FUZZ_SEED", "2026"))


def test_hostile_commands_keep_every_invariant(benchmark, capsys):
    fuzz(benchmark, capsys, N_INPUTS)


@pytest.mark.acceptance
def test_a_million_hostile_commands_keep_every_invariant(benchmark, capsys):
    fuzz(benchmark, capsys, 1_000_000)


def fuzz(benchmark, capsys, n_inputs: int) -> None:
    """Send ``n_inputs`` fuzzed commands, half to an engine with margin, checking each."""
    summaries = []

    def target():
        # half without margin, half with it (calls, liquidations, defaults, the waterfall)
        summaries.append(Fuzzer(SEED).run(n_inputs // 2))
        summaries.append(Fuzzer(SEED + 1, margin=True).run(n_inputs - n_inputs // 2))

    benchmark.pedantic(target, rounds=1, iterations=1)
    summary = FuzzSummary(*(sum(getattr(s, f) for s in summaries) for f in FIELDS))
    assert summary.inputs == n_inputs
    assert all(s.rejected and s.accepted for s in summaries)
    benchmark.extra_info.update(
        inputs=summary.inputs,
        rejected=summary.rejected,
        accepted=summary.accepted,
        events=summary.events,
        seconds=round(summary.seconds, 2),
        inputs_per_s=round(summary.per_second),
        seed=SEED,
    )
    with capsys.disabled():
        print(
            f"\nfuzz: {summary.inputs:,} inputs (seeds {SEED}, {SEED + 1} with margin): "
            f"{summary.rejected:,} rejected, "
            f"{summary.accepted:,} accepted, {summary.events:,} events checked, "
            f"{summary.seconds:.1f} s, {summary.per_second:,.0f} inputs/s"
        )
