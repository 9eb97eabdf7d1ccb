"""Bad inputs through a real worker process: a corpus generated here (tests/worker/test_decode.py
checks the decoder alone; this is the worker path: S3 fetch, claim, stream, upsert). Each ends
with its precise reason in its row, the odd-but-valid photos end done, and the worker stays up.
The same run checks what operators watch and what must never leak: the worker's Prometheus
endpoint counts exactly these outcomes, and the S3 secret (given only as a secret file) appears
in neither the worker's logs nor the database."""

from __future__ import annotations

import io
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from harness import Rig, WorkerProcess, eventually
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from jewelcut.db import Base, get_engine
from tests.conftest import OUTER_S3_ENDPOINT
from tests.local_servers import free_port
from tests.worker.test_decode import png_header_only

# image ID -> (status, reason, a fragment of the recorded error)
EXPECTED = {
    "truncated-jpeg": ("failed", "decode_error", "image file is truncated"),
    "zero-bytes": ("failed", "decode_error", "empty file (0 bytes)"),
    "text-renamed-jpg": ("failed", "decode_error", "not an image (text)"),
    "html-error-page": ("failed", "decode_error", "not an image (an HTML page)"),
    "huge-dimensions": ("failed", "too_large", "9000x9000 = 81000000 pixels"),
    "one-by-one": ("failed", "too_small", "1x1, under 32 pixels"),
    "animated-gif": ("failed", "unsupported_format", "GIF is not JPEG, PNG or WebP"),
    "missing-object": ("failed", "fetch_error", "S3 said NoSuchKey"),
    "https-source": ("failed", "unsupported_source", "scheme 'https' is not fetched"),
    "foreign-bucket": ("failed", "unsupported_source", "is not a source bucket"),
    "file-outside-root": ("failed", "unsupported_source", "is outside the source root"),
    "cmyk-jpeg": ("done", None, None),
    "png-16-bit": ("done", None, None),
    "palette-png-transparent": ("done", None, None),
    "exif-rotated": ("done", None, None),
    "plain-photo": ("done", None, None),
}
SIZE = (160, 120)


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def bad_photo_corpus(photo: bytes) -> dict[str, bytes]:
    """Bytes for every case that has bytes (`photo`: a good 160x120 JPEG)."""
    rgb = Image.open(io.BytesIO(photo)).convert("RGB")
    palette = Image.new("P", SIZE, 0)
    palette.putpalette([255, 255, 255, 200, 150, 40] + [0] * 762)
    palette.paste(1, (40, 30, 120, 90))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees: portrait
    ok, png16 = cv2.imencode(".png", (np.asarray(rgb).astype(np.uint16) * 257)[:, :, ::-1])
    assert ok
    frames = [rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return {
        "truncated-jpeg": photo[: len(photo) // 2],
        "zero-bytes": b"",
        "text-renamed-jpg": b"just some notes, saved as photo.jpg\n",
        "html-error-page": b"<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1></html>",
        "huge-dimensions": png_header_only(9000, 9000),
        "one-by-one": _encode(Image.new("RGB", (1, 1)), "PNG"),
        "animated-gif": _encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "cmyk-jpeg": _encode(rgb.convert("CMYK"), "JPEG"),
        "png-16-bit": png16.tobytes(),
        "palette-png-transparent": _encode(palette, "PNG", transparency=0),
        "exif-rotated": _encode(rgb, "JPEG", exif=exif.tobytes()),
        "plain-photo": photo,
    }


def test_bad_inputs_end_with_their_reason_and_the_worker_stays_up(
    make_rig: Callable[..., Rig],
    small_photos: Callable[[int, str], dict[str, bytes]],
    tmp_path: Path,
) -> None:
    rig = make_rig(chunk_size=32)
    secret = _secret_file(rig, tmp_path / "secrets")
    port = free_port()
    worker = rig.worker(
        "gpu0",
        "--gpu",
        "0",
        without=("JEWELCUT_S3_SECRET_ACCESS_KEY",),
        JEWELCUT_SECRETS_DIR=str(tmp_path / "secrets"),
        JEWELCUT_METRICS_PORT=str(port),
        JEWELCUT_LOG_LEVEL="DEBUG",
    )
    photo = small_photos(1, "good")["good-000"]
    bucket = rig.settings.s3_bucket
    rig.catalogue(bad_photo_corpus(photo))
    rig.register(
        {
            "missing-object": f"s3://{bucket}/sources/no-such-photo.jpg",
            "https-source": "https://images.example.com/listing/1.jpg",
            "foreign-bucket": "s3://somebody-elses-bucket/photo.jpg",
            "file-outside-root": "file:///etc/hostname",
        }
    )
    rig.enqueue(sorted(EXPECTED))
    rows = rig.settle(len(EXPECTED), timeout_s=120)
    for image_id, (status, reason, fragment) in EXPECTED.items():
        row = rows[image_id]
        assert (row.status, row.reason if status == "failed" else None) == (status, reason)
        assert fragment is None or fragment in row.error, (image_id, row.error)
    assert (rows["exif-rotated"].width, rows["exif-rotated"].height) == (120, 160)
    done = [i for i, row in rows.items() if row.status == "done"]
    assert all((rows[i].width, rows[i].height) == SIZE for i in done if i != "exif-rotated")

    later = rig.catalogue(small_photos(2, "later"))  # the worker still takes work
    rig.enqueue(later)
    after = rig.settle(len(EXPECTED) + 2)
    assert [after[i].status for i in later] == ["done", "done"]
    assert worker.alive and len(worker.pids) == 1

    logged = _check_failure_logs(worker, rows)
    samples = _check_metrics(port, rows, chunks=2, later=len(later))
    log_lines, db_rows = _check_secret_absent(secret, worker, rig)
    failed = sum(status == "failed" for status, _, _ in EXPECTED.values())
    print(
        f"\ninjected: {failed} bad inputs and {len(EXPECTED) - failed} odd-but-valid or plain "
        f"photos in one chunk, then 2 more photos; checked: {len(EXPECTED)} rows with their "
        f"precise reason or done, worker pid unchanged, {logged} JSON failure records naming "
        f"image and chunk, {samples} metric samples, S3 secret (a secret file) absent from "
        f"{log_lines} log lines and {db_rows} database rows"
    )


def _check_failure_logs(worker: WorkerProcess, rows: dict) -> int:
    """Each failed image has a JSON record naming it, its chunk and its reason."""
    failed = {i: row.reason for i, row in rows.items() if row.status == "failed"}
    records = {
        record["image_id"]: record
        for record in worker.messages("image failed")
        if record.get("image_id") in failed
    }
    assert sorted(records) == sorted(failed)
    chunk_ids = {record["chunk_id"] for record in records.values()}
    assert len(chunk_ids) == 1 and all(chunk_ids)  # one chunk, named by its task id
    assert all(records[i]["reason"] == reason for i, reason in failed.items())
    return len(records)


def _secret_file(rig: Rig, directory: Path) -> str:
    """The S3 secret as a docker-style secret file (moto takes any secret; MinIO needs its own)."""
    secret = rig.settings.s3_secret_access_key
    value = secret.get_secret_value() if OUTER_S3_ENDPOINT and secret else uuid.uuid4().hex
    directory.mkdir()
    (directory / "jewelcut_s3_secret_access_key").write_text(value)
    return value


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def _check_metrics(port: int, rows: dict, chunks: int, later: int) -> int:
    """The worker's /metrics count exactly this run's outcomes; returns the samples checked."""
    metrics = _scrape(port)

    def value(name: str, **labels: str) -> float:
        return metrics.get((name, tuple(sorted(labels.items()))), 0.0)

    failures: dict[str, int] = {}
    for row in rows.values():
        if row.status == "failed":
            failures[row.reason] = failures.get(row.reason, 0) + 1
    for reason, count in failures.items():
        assert value("jewelcut_images_total", outcome="failed", reason=reason) == count
    done = sum(row.status == "done" for row in rows.values()) + later
    decided = sum(
        sample
        for (name, labels), sample in metrics.items()
        if name == "jewelcut_images_total" and ("outcome", "failed") not in labels
    )
    assert decided == done
    assert value("jewelcut_batch_size_sum") == done  # each decided image went through one batch
    assert value("jewelcut_stage_seconds_count", stage="infer") == done
    assert value("jewelcut_chunk_seconds_count") == chunks
    assert value("jewelcut_chunks_total", result="processed") == chunks
    eventually(lambda: _scrape(port)[("jewelcut_queue_depth", (("queue", "bulk"),))] == 0)
    return len(failures) + 6


def _check_secret_absent(secret: str, worker: WorkerProcess, rig: Rig) -> tuple[int, int]:
    """Not in any line the worker logged (DEBUG), not in any row of any table."""
    lines = worker.log_path.read_text(errors="replace").splitlines()
    assert len(lines) > 20 and not [line for line in lines if secret in line]
    engine = get_engine(rig.settings.resolved_database_url)
    with engine.connect() as connection:  # table names from the schema, no input
        rows = [
            text_row
            for table in Base.metadata.sorted_tables
            for text_row in connection.execute(
                text(f"SELECT t::text FROM {table.name} t")
            ).scalars()
        ]
    assert len(rows) >= len(EXPECTED) and not [row for row in rows if secret in row]
    return len(lines), len(rows)
