"""A tiny synthetic dataset shared by the training tests (small images keep the CPU free)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.dataset import DataRecipe, write_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-data")
    recipe = DataRecipe(
        count=12, height=96, width=96, seed=7, use_skimage_photos=False, object_size=96
    )
    write_dataset(folder, recipe)
    return folder
