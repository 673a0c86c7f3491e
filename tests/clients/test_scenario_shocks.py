"""Scenario files and generation shocks: ``seeded = true`` takes a calibration from
``SEEDED_CALIBRATIONS``, ``extra_shocks`` adds random releases, and a file using neither stores
the configuration it stored before they existed (clients/scenario.py, docs/indices.md)."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
import tomli_w

from clients import scenario as sc
from exchange.products.index import CALIBRATIONS, DAY_NS, SEEDED_CALIBRATIONS, GenerationShock
from exchange.sessions.scenarios import scenario_from_config

BASE = """
name = "shocked"
start = 2024-09-01
days = 30

[[accounts]]
name = "alice"
cash = "$1M"
"""

RESALE = """
[[indices]]
calibration = "H100-RESALE"
interval_ns = "1d"
"""

SEEDED = RESALE + "seeded = true\n"

BLACKWELL = (
    'extra_shocks = [{ label = "Blackwell in volume", centre = 2025-05-01, date_sd_days = 21, '
    "date_max_days = 61, log_size = -0.35, log_size_sd = 0.1, log_size_min = -0.8 }]\n"
)


def load(text: str) -> sc.MarketScenario:
    return sc.load_scenario(BASE + text)


def test_seeded_true_takes_the_seeded_calibration_under_the_same_name():
    spec = load(SEEDED).indices[0].build()
    assert spec == SEEDED_CALIBRATIONS["H100-RESALE"].model_copy(update={"interval_ns": DAY_NS})
    assert spec.name == "H100-RESALE" and spec.source.shocks and not spec.source.jumps
    assert load(RESALE).indices[0].build().source == CALIBRATIONS["H100-RESALE"].source


def test_extra_shocks_are_added_after_the_calibrations_own():
    spec = load(SEEDED + BLACKWELL).indices[0].build()
    own = SEEDED_CALIBRATIONS["H100-RESALE"].source.shocks
    assert spec.source.shocks[: len(own)] == own
    assert spec.source.shocks[len(own) :] == [
        GenerationShock(
            label="Blackwell in volume",
            centre=date(2025, 5, 1),
            date_sd_days=21,
            date_max_days=61,
            log_size=-0.35,
            log_size_sd=0.1,
            log_size_min=-0.8,
        )
    ]
    # on a fixed calibration too (it has no shocks of its own)
    fixed = load(RESALE + BLACKWELL).indices[0].build()
    assert fixed.source.jumps == CALIBRATIONS["H100-RESALE"].source.jumps
    assert [s.label for s in fixed.source.shocks] == ["Blackwell in volume"]


@pytest.mark.parametrize(
    "text, message",
    [
        (
            RESALE + BLACKWELL.replace("2025-05-01", "2026-03-01"),
            "indices.0: extra_shocks.0: centre 2026-03-01 is outside the anchors of H100-RESALE",
        ),
        (RESALE + BLACKWELL.replace("log_size = -0.35", "log_size = 0.35"), "log_size_max"),
        (RESALE + "extra_shocks = [{ centre = 2025-05-01, log_size = -0.1, when = 1 }]\n", "when"),
        (RESALE + "seeded = 1\n", "boolean"),
        (
            '[[indices]]\nseeded = true\nspec = { name = "X", kind = "rental", gpu = "H100", '
            'interval_ns = "1h", source = { type = "gbm", start = 2.0, drift_per_year = 0.0, '
            "volatility = 0.1 } }\n",
            "seeded applies to a calibration",
        ),
        (
            '[[indices]]\nspec = { name = "X", kind = "rental", gpu = "H100", interval_ns = "1h", '
            'source = { type = "gbm", start = 2.0, drift_per_year = 0.0, volatility = 0.1 } }\n'
            + BLACKWELL,
            "its source has no shocks to add to",
        ),
    ],
)
def test_a_bad_shock_entry_is_rejected_naming_the_field(text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        load(text)


def test_seeded_and_extra_shocks_are_stored_only_in_a_file_that_uses_them():
    """A file using neither stores the configuration it stored before they existed."""
    (entry,) = load(RESALE).model_dump(mode="json")["indices"]
    assert sorted(entry) == ["calibration", "extra_jumps", "interval_ns", "spec"]
    (entry,) = load(SEEDED + BLACKWELL).model_dump(mode="json")["indices"]
    assert entry["seeded"] is True and entry["extra_shocks"][0]["label"] == "Blackwell in volume"


def test_a_seeded_file_round_trips_through_its_stored_and_printed_forms():
    """The stored configuration (JSON) rebuilds the same scenario, and so does the TOML that
    ``gpuex scenario show`` prints from it."""
    model = load(SEEDED + BLACKWELL)
    assert scenario_from_config("shocked", model.model_dump(mode="json")) == model
    printed = tomli_w.dumps(model.model_dump(mode="python", exclude_none=True))
    assert sc.load_scenario(printed) == model


def test_the_scenario_snippet_in_docs_indices_loads_as_documented():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "indices.md").read_text("utf-8")
    snippet = re.findall(r"```toml\n(.*?)```", doc, re.S)[-1]
    spec = load(snippet).indices[0].build()
    assert spec.source.shocks[:-1] == SEEDED_CALIBRATIONS["H100-RESALE"].source.shocks
    assert spec.source.shocks[-1].label == "Blackwell in volume"
