"""`jewelcut regate` re-decides from stored scores, masks and probabilities exactly as a fresh
run at the new gate would: the same rows and byte-identical cutouts and previews, in both
directions (accepted images turned away, rejected ones let in)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from jewelcut.cli import app
from jewelcut.db import Segmentation, session_scope
from jewelcut.migrate import upgrade
from jewelcut.registry import ensure_registered
from jewelcut.reviews import apply_gate, card_gate
from jewelcut.settings import Settings
from jewelcut.storage import cutout_key, get_storage, mask_key, preview_key, probability_key
from tests.review.conftest import real_run

pytestmark = pytest.mark.slow
PHOTOS = 9  # the last one is a truncated upload: failed, never re-decided
COMPARED = ("status", "decision", "reason", "confidence", "mask_area", "gate_min_confidence")


def home(base: Settings, folder: Path) -> Settings:
    """An embedded deployment of its own (SQLite, storage) sharing the model and its cache."""
    settings = base.model_copy(update={"data_dir": folder})
    upgrade(settings.resolved_database_url)
    return settings


def fresh_run(base: Settings, folder: Path, min_confidence: float, version: str) -> Settings:
    """The same photos through the worker, with `min_confidence` applied as the gate first."""
    settings = home(base, folder)
    ensure_registered(version, settings)
    apply_gate(settings, version, min_confidence)
    assert real_run(settings, PHOTOS) == version
    return settings


def rows(settings: Settings, version: str) -> dict[str, dict[str, Any]]:
    with session_scope(settings.resolved_database_url) as session:
        found = session.scalars(select(Segmentation).where(Segmentation.model_version == version))
        return {
            row.image_id: {name: getattr(row, name) for name in COMPARED}
            | {"has_cutout": row.cutout_uri is not None}
            for row in found
        }


def stored(settings: Settings, version: str, image_id: str) -> dict[str, bytes | None]:
    storage = get_storage(settings)
    keys = [cutout_key, preview_key, mask_key, probability_key]
    found = {}
    for key_of in keys:
        key = key_of(version, image_id)
        found[key.split("/")[0]] = storage.get(key) if storage.exists(key) else None
    return found


def assert_same_as_fresh(regated: Settings, fresh: Settings, version: str) -> None:
    regated_rows, fresh_rows = rows(regated, version), rows(fresh, version)
    assert regated_rows == fresh_rows
    for image_id, row in fresh_rows.items():
        if row["status"] != "done":
            continue
        mine, theirs = stored(regated, version, image_id), stored(fresh, version, image_id)
        if not row["has_cutout"]:  # a fresh run never writes it; a regate may leave an old one
            mine.pop("cutouts"), theirs.pop("cutouts")
        # Not `mine == theirs`: its diff of the bytes would bury which artifact differs.
        assert not (found := differences(mine, theirs)), f"{image_id}: {found}"


def differences(mine: dict[str, bytes | None], theirs: dict[str, bytes | None]) -> str:
    """Which stored artifacts differ, and how ('' when none): their sizes, and the decoded
    pixels'."""
    found = []
    for name in mine:
        ours, fresh = mine[name], theirs[name]
        if ours == fresh:
            continue
        if ours is None or fresh is None:
            found.append(f"{name}: {'missing' if ours is None else 'extra'} after the re-gate")
            continue
        ours_pixels, fresh_pixels = (
            cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            for data in (ours, fresh)
        )
        if ours_pixels.shape != fresh_pixels.shape:
            found.append(f"{name}: {ours_pixels.shape} != {fresh_pixels.shape}")
            continue
        delta = cv2.absdiff(ours_pixels, fresh_pixels)
        found.append(
            f"{name}: {len(ours)} != {len(fresh)} bytes, {np.count_nonzero(delta)} values differ "
            f"(at most by {int(delta.max())})"
        )
    return "; ".join(found)


def regate_command(version: str, min_confidence: float) -> str:
    arguments = ["regate", "--model-version", version, "--min-confidence", repr(min_confidence)]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    return result.output


def test_regate_decides_exactly_as_a_fresh_run_at_the_new_gate(
    embedded_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = home(embedded_settings, tmp_path / "first")
    version = real_run(first, PHOTOS)
    decided = {k: v for k, v in rows(first, version).items() if v["status"] == "done"}
    min_area, max_area, _ = card_gate(first, version)
    eligible = sorted(
        {v["confidence"] for v in decided.values() if min_area <= v["mask_area"] <= max_area}
    )
    assert len(eligible) >= 2, "the photos must give two confidences inside the area bounds"
    strict, loose = eligible[-1], eligible[0]

    # The command works on the configured deployment: point it at the first run's home.
    monkeypatch.setenv("JEWELCUT_DATA_DIR", str(first.data_dir))
    from jewelcut.settings import reset_settings_cache

    reset_settings_cache()
    # Stricter: every accepted image but the most confident one is turned away.
    output = regate_command(version, strict)
    assert "now rejected" in output and "0 failed" in output
    strict_rows = rows(first, version)
    assert sum(r["decision"] == "accepted" for r in strict_rows.values()) == 1
    assert_same_as_fresh(
        first, fresh_run(embedded_settings, tmp_path / "strict", strict, version), version
    )

    # Looser: those images come back, with cutouts drawn from the stored masks.
    output = regate_command(version, loose)
    loose_rows = rows(first, version)
    let_in = [k for k, r in loose_rows.items() if r["decision"] == "accepted"]
    assert len(let_in) == len(eligible_ids(decided, min_area, max_area)) > 1
    assert_same_as_fresh(
        first, fresh_run(embedded_settings, tmp_path / "loose", loose, version), version
    )
    reset_settings_cache()


def eligible_ids(decided: dict[str, dict[str, Any]], min_area: float, max_area: float) -> list[str]:
    return [k for k, v in decided.items() if min_area <= v["mask_area"] <= max_area]
