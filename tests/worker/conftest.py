"""Fixtures of the image core: loaded segmenters (ONNX Runtime and PyTorch on CPU) over the
session's test model, and encoders for hand-made photos."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jewelcut.modelcard import default_model_dir
from worker.pipeline import Segmenter


@pytest.fixture(scope="session")
def model_dir(test_models_dir: Path) -> Path:
    return default_model_dir(test_models_dir)


@pytest.fixture(scope="session")
def onnx_segmenter(model_dir: Path, model_cache_dir: Path) -> Segmenter:
    segmenter = Segmenter(
        model_dir, device="cpu", backend="onnx", cache_dir=model_cache_dir, batch_size=4, threads=1
    )
    segmenter.load()
    return segmenter


@pytest.fixture(scope="session")
def torch_segmenter(model_dir: Path) -> Segmenter:
    segmenter = Segmenter(model_dir, device="cpu", backend="torch", batch_size=4, threads=1)
    segmenter.load()
    return segmenter


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture
def photo_bytes() -> Callable[..., bytes]:
    """(width, height, fmt) -> bytes of a small photo with a bright disc on a dark background."""

    def make(width: int = 96, height: int = 64, fmt: str = "JPEG") -> bytes:
        yy, xx = np.mgrid[:height, :width]
        disc = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (min(width, height) / 3) ** 2
        rgb = np.where(disc[:, :, None], [230, 190, 60], [30, 60, 90]).astype(np.uint8)
        return encode(Image.fromarray(rgb), fmt)

    return make
