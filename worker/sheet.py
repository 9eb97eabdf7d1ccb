"""The review sheet: the study's figure as one self-contained HTML file (thumbnails inlined, so it
opens offline). One row per image: photo, raw mask, cleaned mask, cutout, what a person is shown;
green when accepted, red when not.

The renderer takes `SheetRow`s and does not care where they come from: `folder_rows` reads a
`jewelcut segment` output folder, `db_rows` reads the segmentations table and storage.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from jewelcut.errors import ImageFailure
from worker.cutout import encode_jpeg, encode_png, make_cutout, on_white
from worker.decode import decode_image

if TYPE_CHECKING:
    from jewelcut.settings import Settings

THUMBNAIL_SIDE = 192
Loader = Callable[[], np.ndarray | None]  # RGB, grey or RGBA uint8; None when not available
COLUMNS = ("photo", "raw mask", "cleaned mask", "cutout", "shown")


@dataclass(frozen=True)
class SheetRow:
    title: str
    status: str
    decision: str | None
    reason: str | None
    confidence: float | None
    mask_area: float | None
    error: str | None
    photo: Loader
    raw_mask: Loader
    cleaned_mask: Loader
    cutout: Loader
    shown: Loader

    @property
    def accepted(self) -> bool:
        return self.status == "done" and self.decision == "accepted"

    def caption(self) -> str:
        if self.status == "failed":
            return f"failed: {self.reason} ({self.error})"
        confidence = f"{self.confidence:.4f}" if self.confidence is not None else "-"
        area = f"{self.mask_area:.1%}" if self.mask_area is not None else "-"
        verdict = self.decision if self.accepted else f"{self.decision}: {self.reason}"
        if self.reason == "no_object":
            verdict += " (nothing found)"
        return f"{verdict} · confidence {confidence} · area {area}"


def write_sheet(rows: Iterable[SheetRow], path: Path, title: str = "jewelcut review") -> int:
    """Write the HTML sheet; returns the number of rows."""
    body = [_row_html(row) for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_PAGE.format(title=html.escape(title), header=_header(), rows="\n".join(body)))
    return len(body)


def _header() -> str:
    return "".join(f"<th>{name}</th>" for name in (*COLUMNS, "result"))


def _row_html(row: SheetRow) -> str:
    cells = "".join(f"<td>{_thumbnail_html(load)}</td>" for load in _loaders(row))
    css = "accepted" if row.accepted else "rejected"
    return (
        f'<tr class="{css}">{cells}<td><b>{html.escape(row.title)}</b><br>'
        f"{html.escape(row.caption())}</td></tr>"
    )


def _loaders(row: SheetRow) -> tuple[Loader, ...]:
    return row.photo, row.raw_mask, row.cleaned_mask, row.cutout, row.shown


def _thumbnail_html(load: Loader) -> str:
    try:
        image = load()
    except Exception as error:  # one unreadable file must not stop the sheet
        return f'<span class="missing">{html.escape(type(error).__name__)}</span>'
    if image is None:
        return '<span class="missing">-</span>'
    small = thumbnail(image)
    has_alpha = small.ndim == 3 and small.shape[2] == 4
    data, mime = (
        (encode_png(small), "png")
        if has_alpha or small.ndim == 2
        else (encode_jpeg(small, 85), "jpeg")
    )
    css = ' class="alpha"' if has_alpha else ""
    return f'<img{css} src="data:image/{mime};base64,{base64.b64encode(data).decode()}">'


def thumbnail(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


# --- rows from a folder run ----------------------------------------------------------------------


def folder_rows(run_dir: Path, limit: int = 200, only: str | None = None) -> list[SheetRow]:
    from worker.folder import MASKS_DIR, PROBS_DIR, read_results

    rows = []
    for record in read_results(run_dir):
        if not _wanted(record.get("status"), record.get("decision"), only):
            continue
        name = record.get("name", Path(record["image"]).stem)
        photo = cache(_photo_loader(Path(record["image"])))
        cleaned = _grey_loader(run_dir / MASKS_DIR / f"{name}.png")
        cutout = cache(_cutout_loader(run_dir / f"{name}.png", photo, cleaned))
        accepted = record.get("status") == "done" and record.get("decision") == "accepted"
        rows.append(
            SheetRow(
                title=record["image"],
                **_result_fields(record),
                photo=photo,
                raw_mask=_raw_mask_loader(run_dir / PROBS_DIR / f"{name}.png"),
                cleaned_mask=cleaned,
                cutout=cutout,
                shown=_shown_loader(accepted, photo, cutout),
            )
        )
        if len(rows) >= limit:
            break
    return rows


def _wanted(status: str | None, decision: str | None, only: str | None) -> bool:
    if only is None:
        return True
    if only == "failed":
        return status == "failed"
    return status == "done" and decision == only


def _result_fields(record: dict[str, Any]) -> dict[str, Any]:
    names = ("status", "decision", "reason", "confidence", "mask_area", "error")
    return {name: record.get(name) for name in names}


def _photo_loader(path: Path) -> Loader:
    def load() -> np.ndarray | None:
        try:
            return decode_image(path.read_bytes(), max_pixels=10**9, min_side=1)
        except (OSError, ImageFailure):
            return None

    return load


def _grey_loader(path: Path) -> Loader:
    return lambda: cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path.exists() else None


def _raw_mask_loader(probability_png: Path) -> Loader:
    def load() -> np.ndarray | None:
        probability = _grey_loader(probability_png)()
        return (
            None if probability is None else np.where(probability >= 128, 255, 0).astype(np.uint8)
        )

    return load


def _cutout_loader(cutout_png: Path, photo: Loader, cleaned: Loader) -> Loader:
    """The written cutout; for a rejected photo (no cutout written) one made from its mask."""

    def load() -> np.ndarray | None:
        if cutout_png.exists():
            bgra = cv2.imread(str(cutout_png), cv2.IMREAD_UNCHANGED)
            return cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA) if bgra is not None else None
        rgb, mask = photo(), cleaned()
        if rgb is None or mask is None or mask.shape != rgb.shape[:2]:
            return None
        return make_cutout(rgb, mask)

    return load


def _shown_loader(accepted: bool, photo: Loader, cutout: Loader) -> Loader:
    def load() -> np.ndarray | None:
        if not accepted:
            return photo()
        rgba = cutout()
        return on_white(rgba) if rgba is not None else None

    return load


# --- rows from the database ----------------------------------------------------------------------


@dataclass(frozen=True)
class StoredImages:
    """What the worker stored for one image, as loaders (each reads once): the photo from its
    source, the raw mask (probability >= 0.5) and the cleaned mask at network resolution, the
    cutout (the stored one when accepted; for a rejected image the one its mask would give) and
    the preview a person is shown."""

    photo: Loader
    raw_mask: Loader
    cleaned_mask: Loader
    probability: Loader
    cutout: Loader
    shown: Loader


def stored_images(
    storage: Any, settings: Settings, model_version: str, image_id: str, source_uri: str
) -> StoredImages:
    from jewelcut.storage import cutout_key, mask_key, preview_key, probability_key

    photo = cache(_source_loader(source_uri, settings))
    probability = cache(_stored_loader(storage, probability_key(model_version, image_id)))
    cleaned = cache(_stored_loader(storage, mask_key(model_version, image_id)))
    stored_cutout = cache(_stored_loader(storage, cutout_key(model_version, image_id)))
    cutout = cache(_db_cutout_loader(stored_cutout, photo, probability, cleaned))
    return StoredImages(
        photo=photo,
        raw_mask=_threshold_loader(probability),
        cleaned_mask=_either(cleaned, _alpha_mask_loader(stored_cutout)),
        probability=probability,
        cutout=cutout,
        shown=_stored_loader(storage, preview_key(model_version, image_id)),
    )


def _threshold_loader(probability: Loader) -> Loader:
    def load() -> np.ndarray | None:
        grey = probability()
        return None if grey is None else np.where(grey >= 128, 255, 0).astype(np.uint8)

    return load


def _either(first: Loader, second: Loader) -> Loader:
    def load() -> np.ndarray | None:
        image = first()
        return image if image is not None else second()

    return load


def _db_cutout_loader(stored: Loader, photo: Loader, probability: Loader, mask: Loader) -> Loader:
    """The stored cutout; else (rejected) the cutout its stored mask and probabilities give."""
    from worker.cutout import full_resolution_alpha

    def load() -> np.ndarray | None:
        rgba = stored()
        if rgba is not None:
            return rgba
        rgb, grey, cleaned = photo(), probability(), mask()
        if rgb is None or grey is None or cleaned is None:
            return None
        alpha = full_resolution_alpha(grey, cleaned > 127, *rgb.shape[:2])
        return make_cutout(rgb, alpha)

    return load


def db_rows(
    settings: Settings, model_version: str | None, limit: int = 200, only: str | None = None
) -> list[SheetRow]:
    """The latest finished rows of one model version; images come from the sources and storage
    (all five columns for every decided image; rows decided before masks were stored show the
    cleaned mask of accepted images only, from their cutout)."""
    from sqlalchemy import select

    from jewelcut.db import Image, Segmentation, session_scope
    from jewelcut.registry import active_model_version
    from jewelcut.storage import get_storage

    version = model_version or active_model_version(settings)
    query = (
        select(Segmentation, Image.source_uri)
        .join(Image, Image.id == Segmentation.image_id)
        .where(Segmentation.model_version == version, Segmentation.status.in_(("done", "failed")))
        .order_by(Segmentation.finished_at.desc())
        .limit(limit * 4 if only else limit)
    )
    with session_scope(settings.resolved_database_url) as session:
        results = session.execute(query).all()
    storage = get_storage(settings)
    rows = []
    for segmentation, source_uri in results:
        if not _wanted(segmentation.status, segmentation.decision, only):
            continue
        images = stored_images(storage, settings, version, segmentation.image_id, source_uri)
        rows.append(
            SheetRow(
                title=segmentation.image_id,
                status=segmentation.status,
                decision=segmentation.decision,
                reason=segmentation.reason,
                confidence=segmentation.confidence,
                mask_area=segmentation.mask_area,
                error=segmentation.error,
                photo=images.photo,
                raw_mask=images.raw_mask,
                cleaned_mask=images.cleaned_mask,
                cutout=images.cutout,
                shown=images.shown,
            )
        )
    return rows[:limit]


def write_sheet_from_database(
    settings: Settings,
    target: Path,
    model_version: str | None = None,
    limit: int = 200,
    only: str | None = None,
) -> Path:
    """`db_rows` rendered to target (an .html file, or a folder that gets sheet.html)."""
    path = target if target.suffix == ".html" else target / "sheet.html"
    rows = db_rows(settings, model_version, limit=limit, only=only)
    write_sheet(rows, path, title=f"jewelcut review: {model_version or 'active model'}")
    return path


def _source_loader(uri: str, settings: Settings) -> Loader:
    from jewelcut.sources import fetch_source

    def load() -> np.ndarray | None:
        try:
            return decode_image(fetch_source(uri, settings), max_pixels=10**9, min_side=1)
        except ImageFailure:
            return None

    return load


def _stored_loader(storage: Any, key: str) -> Loader:
    def load() -> np.ndarray | None:
        if not storage.exists(key):
            return None
        decoded = cv2.imdecode(np.frombuffer(storage.get(key), np.uint8), cv2.IMREAD_UNCHANGED)
        if decoded is None:
            return None
        code = (
            cv2.COLOR_BGRA2RGBA
            if decoded.ndim == 3 and decoded.shape[2] == 4
            else cv2.COLOR_BGR2RGB
        )
        return cv2.cvtColor(decoded, code) if decoded.ndim == 3 else decoded

    return load


def _alpha_mask_loader(cutout: Loader) -> Loader:
    def load() -> np.ndarray | None:
        rgba = cutout()
        return None if rgba is None else np.where(rgba[:, :, 3] >= 128, 255, 0).astype(np.uint8)

    return load


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 13px system-ui, sans-serif; margin: 16px; }}
table {{ border-collapse: separate; border-spacing: 0 6px; }}
th {{ text-align: left; padding: 0 8px; }}
td {{ padding: 4px 8px; vertical-align: middle; }}
tr.accepted td {{ background: #e6f6e6; }}
tr.accepted td:first-child {{ border-left: 6px solid #2a9d2a; }}
tr.rejected td {{ background: #fbe9e9; }}
tr.rejected td:first-child {{ border-left: 6px solid #c62828; }}
img {{ max-width: {side}px; max-height: {side}px; display: block; }}
img.alpha {{ background: repeating-conic-gradient(#ccc 0% 25%, #fff 0% 50%) 50% / 16px 16px; }}
.missing {{ color: #888; }}
</style></head>
<body><h2>{title}</h2>
<table><tr>{header}</tr>
{rows}
</table></body></html>
""".replace("{side}", str(THUMBNAIL_SIDE))
