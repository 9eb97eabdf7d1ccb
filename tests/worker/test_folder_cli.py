"""`jewelcut segment` and `jewelcut sheet` end to end on a temporary folder (embedded mode)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from jewelcut.cli import app
from jewelcut.settings import Settings, reset_settings_cache
from tests.worker.conftest import encode
from tests.worker.test_decode import png_header_only
from worker.folder import RECORD_FIELDS


def make_photo_folder(root: Path, listing_photo: Callable[[int], bytes]) -> dict[str, Path]:
    (root / "rings").mkdir(parents=True)
    files = {
        "a": root / "a.jpg",
        "rings/a": root / "rings" / "a.jpg",  # same stem in a subfolder
        "b": root / "rings" / "b.png",
        "broken": root / "broken.jpg",
        "animated": root / "animated.gif",
    }
    files["a"].write_bytes(listing_photo(1))
    files["rings/a"].write_bytes(listing_photo(2))
    rgb = cv2.imdecode(np.frombuffer(listing_photo(3), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    files["b"].write_bytes(encode(Image.fromarray(np.ascontiguousarray(rgb)), "PNG"))
    files["broken"].write_bytes(listing_photo(4)[:300])
    files["animated"].write_bytes(encode(Image.new("RGB", (64, 64)), "GIF"))
    (root / "notes.txt").write_text("not a photo, not taken from a folder")
    return files


def test_segment_folder_end_to_end(
    embedded_settings: Settings, tmp_path: Path, listing_photo: Callable[[int], bytes]
) -> None:
    files = make_photo_folder(tmp_path / "photos", listing_photo)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["segment", str(tmp_path / "photos"), "--out", str(out), "--all"]
    )
    assert result.exit_code == 1, result.output  # two inputs failed

    records = {
        Path(r["image"]): r
        for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())
    }
    assert set(records) == set(files.values())
    for record in records.values():
        assert set(RECORD_FIELDS) <= set(record)
    assert (records[files["broken"]]["status"], records[files["broken"]]["reason"]) == (
        "failed",
        "decode_error",
    )
    assert records[files["animated"]]["reason"] == "unsupported_format"

    decoded = [files[name] for name in ("a", "rings/a", "b")]
    names = {records[path]["name"] for path in decoded}
    assert len(names) == 3  # the two a.jpg get distinct names
    for path in decoded:
        record = records[path]
        assert record["status"] == "done" and record["decision"] in ("accepted", "rejected")
        assert (record["width"], record["height"]) == (320, 240)
        mask = cv2.imread(str(out / "masks" / f"{record['name']}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (240, 320) and set(np.unique(mask)) <= {0, 255}
        cutout = cv2.imread(str(out / f"{record['name']}.png"), cv2.IMREAD_UNCHANGED)
        assert cutout.shape == (240, 320, 4)  # --all: rejected photos get their cutout too
        assert np.array_equal(cutout[:, :, 3] >= 128, mask == 255)
        assert (out / "probs" / f"{record['name']}.png").exists()

    accepted = sum(records[path]["decision"] == "accepted" for path in decoded)
    summary = result.stdout  # the summary on stdout; progress and logs on stderr
    assert f"accepted {accepted}/5" in summary
    assert "decode_error 1" in summary and "unsupported_format 1" in summary
    assert "images/s" in summary
    assert f"failed {files['broken']}: decode_error" in summary
    assert f"failed {files['animated']}: unsupported_format" in summary
    assert "loading model" not in summary and "model " in result.stderr

    sheet = CliRunner().invoke(app, ["sheet", str(out)])
    assert sheet.exit_code == 0, sheet.output
    page = (out / "sheet.html").read_text()
    assert page.count("<tr class=") == 5
    assert page.count('class="accepted"') == accepted
    assert page.count("data:image/") >= 3 * 5  # photo, masks, cutout, shown for decoded rows


def test_without_all_only_accepted_cutouts_are_written(
    embedded_settings: Settings, tmp_path: Path, listing_photo: Callable[[int], bytes]
) -> None:
    photo = tmp_path / "one.jpg"
    photo.write_bytes(listing_photo(5))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["segment", str(photo), "--out", str(out), "--crop"])
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert (out / "masks" / "one.png").exists()
    assert (out / "one.png").exists() == (record["decision"] == "accepted")


def test_missing_input_is_a_clear_error(embedded_settings: Settings, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["segment", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "no such file or folder" in result.output


def test_segment_exits_1_when_every_input_failed(
    embedded_settings: Settings, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a JPEG")
    result = CliRunner().invoke(app, ["segment", str(broken), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "accepted 0/1" in result.stdout
    assert f"failed {broken}: decode_error" in result.stdout


def test_segment_usage_errors_exit_2(embedded_settings: Settings, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["segment", str(tmp_path), "--out", str(tmp_path / "o"), "--backend", "tpu"]
    )
    assert result.exit_code == 2 and "--backend" in result.stderr


def test_too_large_photos_get_one_message_whatever_their_size(
    embedded_settings: Settings, tmp_path: Path
) -> None:
    """8000x8000 is under Pillow's own bomb limit, 100000x100000 far over it: same message."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for side in (8000, 100_000):
        (photos / f"side-{side}.png").write_bytes(png_header_only(side, side))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["segment", str(photos), "--out", str(out)])
    assert result.exit_code == 1
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    limit = embedded_settings.max_pixels
    assert {record["reason"] for record in records} == {"too_large"}
    for record in records:
        side = int(Path(record["image"]).stem.removeprefix("side-"))
        assert record["error"] == (
            f"too_large: {side}x{side} = {side * side} pixels, over the limit of {limit} "
            "(JEWELCUT_MAX_PIXELS)"
        )
    assert "decompression bomb" not in result.output


def test_one_onnx_export_per_machine_whatever_the_data_folder(
    embedded_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    listing_photo: Callable[[int], bytes],
) -> None:
    """No cache configured: the user cache folder, shared by every data folder and output."""
    monkeypatch.delenv("JEWELCUT_MODEL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    photo = tmp_path / "one.jpg"
    photo.write_bytes(listing_photo(6))
    graphs: list[list[tuple[Path, int]]] = []
    for run in ("first", "second"):
        monkeypatch.setenv("JEWELCUT_DATA_DIR", str(tmp_path / f"data-{run}"))
        reset_settings_cache()
        arguments = ["segment", str(photo), "--out", str(tmp_path / run), "--backend", "onnx"]
        result = CliRunner().invoke(app, arguments)
        assert result.exit_code == 0, result.output
        found = sorted((tmp_path / "xdg" / "jewelcut" / "onnx").glob("*.onnx"))
        graphs.append([(path, path.stat().st_mtime_ns) for path in found])
    assert len(graphs[0]) == 1 and graphs[1] == graphs[0]  # exported once, then reused


def test_nothing_found_is_no_object_in_the_summary_and_the_sheet(
    embedded_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    listing_photo: Callable[[int], bytes],
) -> None:
    """A network that finds nothing (probability 0 everywhere): an empty mask, through the real
    cleanup, gate, writer and sheet."""
    from worker import backends

    def finds_nothing(_self: object, batch: np.ndarray) -> np.ndarray:
        return np.zeros((batch.shape[0], *batch.shape[2:]), np.float32)

    monkeypatch.setattr(backends.TorchBackend, "predict", finds_nothing)
    photo = tmp_path / "empty-table.jpg"
    photo.write_bytes(listing_photo(7))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["segment", str(photo), "--out", str(out), "--backend", "torch"]
    )
    assert result.exit_code == 0, result.output  # a decision, not a failure
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert (record["decision"], record["reason"], record["mask_area"]) == (
        "rejected",
        "no_object",
        0.0,
    )
    assert "rejected 1: no_object 1" in result.stdout
    sheet = CliRunner().invoke(app, ["sheet", str(out)])
    assert sheet.exit_code == 0, sheet.output
    assert "rejected: no_object (nothing found)" in (out / "sheet.html").read_text()
