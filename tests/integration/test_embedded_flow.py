"""The same flow with no services: SQLite, a local folder and the task run in-process."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from flow import CORRUPT_JPEG, Flow
from PIL import Image as PILImage

from jewelcut.settings import Settings
from jewelcut.storage import cutout_key, preview_key


def test_embedded_admin_enqueue_runs_in_process(
    embedded_settings: Settings, photos: Callable[[int], dict[str, bytes]]
) -> None:
    flow = Flow(embedded_settings)
    batch = photos(10)
    batch["photo-corrupt"] = CORRUPT_JPEG
    sources = flow.put_photos(batch)
    assert all(uri.startswith("file://") for uri in sources.values())
    flow.register(sources)

    output = flow.enqueue(list(batch))
    assert "embedded mode" in output
    rows = {row.image_id: row for row in flow.rows()}  # finished when the command returns
    assert sorted(rows) == sorted(batch)
    corrupt = rows.pop("photo-corrupt")
    assert (corrupt.status, corrupt.reason) == ("failed", "decode_error")
    root = embedded_settings.storage_root
    for row in rows.values():
        assert row.status == "done" and row.decision in ("accepted", "rejected")
        assert row.confidence is not None and row.mask_area is not None
        preview = Path(urlparse(row.preview_uri).path)
        assert preview == root / preview_key(row.model_version, row.image_id)
        assert preview.is_file()
        if row.decision == "accepted":
            cutout = Path(urlparse(row.cutout_uri).path)
            assert cutout == root / cutout_key(row.model_version, row.image_id)
            with PILImage.open(io.BytesIO(cutout.read_bytes())) as image:
                assert image.mode == "RGBA"

    output = flow.enqueue(list(batch))  # idempotent here too
    assert "0 queued" in output and flow.row_count() == len(batch)
