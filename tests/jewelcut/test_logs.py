"""Structured logs name the image and chunk they are about; JSON on request."""

from __future__ import annotations

import json
import logging

import pytest

from jewelcut.logs import configure_logging, get_logger, log_context
from jewelcut.settings import Settings


@pytest.fixture
def restore_root_logger() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_context_and_extra_fields(
    restore_root_logger: object, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(Settings(log_json=True, log_level="INFO"))
    configure_logging(Settings(log_json=True, log_level="INFO"))  # idempotent: one handler
    log = get_logger("jewelcut.test")
    with log_context(chunk_id="c-1", model_version="v1"):
        log.info("image failed", extra={"image_id": "img-9", "reason": "decode_error"})
    log.info("outside")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(lines) == 2
    assert lines[0]["msg"] == "image failed" and lines[0]["level"] == "INFO"
    assert (lines[0]["chunk_id"], lines[0]["image_id"], lines[0]["reason"]) == (
        "c-1",
        "img-9",
        "decode_error",
    )
    assert "chunk_id" not in lines[1]


def test_text_lines_are_key_value(
    restore_root_logger: object, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(Settings(log_json=False, log_level="INFO"))
    with log_context(chunk_id="c-2"):
        get_logger("jewelcut.test").warning("slow", extra={"image_id": "img-1"})
    line = capsys.readouterr().err.strip()
    assert line.endswith("WARNING jewelcut.test: slow chunk_id=c-2 image_id=img-1")
    assert line[2] == ":"  # starts with a time stamp
