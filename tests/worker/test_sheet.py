"""The review sheet: one renderer, rows from a folder run (see test_folder_cli) or the database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from jewelcut.db import Image, ModelVersion, Segmentation, session_scope
from jewelcut.settings import Settings
from jewelcut.storage import cutout_key, get_storage, mask_key, preview_key, probability_key
from worker.cutout import encode_jpeg, encode_png
from worker.sheet import SheetRow, write_sheet, write_sheet_from_database


def row(title: str, decision: str | None, status: str = "done", **loaders: Callable) -> SheetRow:
    nothing: Callable = lambda: None  # noqa: E731
    images = {
        name: loaders.get(name, nothing)
        for name in ("photo", "raw_mask", "cleaned_mask", "cutout", "shown")
    }
    return SheetRow(
        title,
        status,
        decision,
        "low_confidence" if decision == "rejected" else None,
        0.9912,
        0.25,
        None,
        **images,
    )


def test_renderer_marks_rows_and_survives_broken_images(tmp_path: Path) -> None:
    photo = np.full((300, 400, 3), 180, np.uint8)

    def broken() -> np.ndarray:
        raise OSError("unreadable")

    rows = [
        row(
            "ok.jpg",
            "accepted",
            photo=lambda: photo,
            cutout=lambda: np.zeros((300, 400, 4), np.uint8),
        ),
        row("meh.jpg", "rejected", photo=broken, raw_mask=lambda: np.zeros((30, 40), np.uint8)),
    ]
    page_path = tmp_path / "sheet.html"
    assert write_sheet(rows, page_path) == 2
    page = page_path.read_text()
    assert page.count('<tr class="accepted">') == 1 and page.count('<tr class="rejected">') == 1
    assert page.count("data:image/jpeg") == 1 and page.count("data:image/png") == 2
    assert "OSError" in page and "confidence 0.9912" in page and "rejected: low_confidence" in page
    assert "http" not in page.replace('xmlns="http', "")  # nothing fetched: opens offline


def test_sheet_from_database_rows(embedded_settings: Settings, test_model_name: str) -> None:
    settings = embedded_settings
    storage = get_storage(settings)
    photo = np.full((60, 80, 3), 200, np.uint8)
    cutout = np.zeros((60, 80, 4), np.uint8)
    cutout[10:50, 20:60] = (200, 150, 40, 255)
    results = {
        "img-accepted": ("done", "accepted"),
        "img-rejected": ("done", "rejected"),
        "img-failed": ("failed", None),
    }
    with session_scope(settings.resolved_database_url) as session:
        session.add(
            ModelVersion(
                name=test_model_name,
                architecture="Unet",
                weights_uri="file:///x",
                sha256="0" * 64,
                input_size=160,
            )
        )
        for image_id, (status, decision) in results.items():
            source = settings.storage_root / "photos" / f"{image_id}.jpg"
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_bytes(encode_jpeg(photo))
            session.add(Image(id=image_id, source_uri=source.as_uri()))
            session.add(
                Segmentation(
                    image_id=image_id,
                    model_version=test_model_name,
                    status=status,
                    decision=decision,
                    reason={"accepted": None, "rejected": "area_too_small", None: "decode_error"}[
                        decision
                    ],
                    confidence=0.5 if status == "done" else None,
                )
            )
    storage.put(cutout_key(test_model_name, "img-accepted"), encode_png(cutout), "image/png")
    probability = np.full((30, 40), 10, np.uint8)
    probability[5:25, 10:30] = 240
    for image_id in ("img-accepted", "img-rejected"):
        storage.put(preview_key(test_model_name, image_id), encode_jpeg(photo), "image/jpeg")
        storage.put(mask_key(test_model_name, image_id), encode_png(probability), "image/png")
        storage.put(
            probability_key(test_model_name, image_id), encode_png(probability), "image/png"
        )

    path = write_sheet_from_database(settings, settings.data_dir / "review")
    page = path.read_text()
    assert path.name == "sheet.html"
    assert page.count("<tr class=") == 3
    assert page.count('<tr class="accepted">') == 1
    assert "failed: decode_error" in page
    # decided rows, accepted or rejected: photo, raw mask, cleaned mask, cutout (a rejected
    # image's from its stored mask), shown; failed: the photo.
    assert page.count("data:image/") == 5 + 5 + 1
    assert page.count('<img class="alpha"') == 2
