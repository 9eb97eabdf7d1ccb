"""The committed training configs: each loads, and is named after its file (the name becomes the
exported version's name, so a copied config that kept its source's name would shadow it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from training.config import load_config

CONFIGS = sorted((Path(__file__).parents[2] / "training" / "configs").glob("*.yaml"))
# The shard kinds scripts/gpu_train_burst.sh knows how to draw (its synth()); any other name
# under runs/gpu/data would silently be drawn as a real-cutout shard.
BURST_SHARD = re.compile(r"runs/gpu/data/(train|keep_synth|empty)_\d+")


def test_the_configs_are_found() -> None:
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_is_named_after_its_file(path: Path) -> None:
    assert load_config(path).name == path.stem


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_burst_shards_are_kinds_the_burst_draws(path: Path) -> None:
    folders = load_config(path).train_data
    drawn_by_burst = [f for f in folders if f.startswith("runs/gpu/")]
    assert all(BURST_SHARD.fullmatch(f) for f in drawn_by_burst), drawn_by_burst
