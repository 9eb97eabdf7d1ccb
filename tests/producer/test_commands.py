"""The producer's CLI by hand: `backfill` (dry run, then for real) and `reap`, with summaries."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from typer.testing import CliRunner

from jewelcut.cli import app
from jewelcut.settings import Settings

pytestmark = pytest.mark.services


def test_backfill_and_reap_commands(
    distributed_settings: Settings,
    register: Callable[[Settings, str], str],
    fill: Callable[..., list[str]],
    messages: Callable[[], Counter[str]],
) -> None:
    register(distributed_settings, "v1")
    fill(distributed_settings, 30)
    runner = CliRunner()

    dry = runner.invoke(app, ["backfill", "--model-version", "v1", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would enqueue 30 images in 4 chunks" in dry.output and not messages()

    limited = runner.invoke(app, ["backfill", "--model-version", "v1", "--limit", "20"])
    assert limited.exit_code == 0, limited.output
    assert "enqueued 20 images in 3 chunks" in limited.output and len(messages()) == 20

    rest = runner.invoke(app, ["backfill", "--model-version", "v1"])
    assert "enqueued 10 images" in rest.output and "skipped 20" in rest.output
    assert sum(messages().values()) == 30

    reaped = runner.invoke(app, ["reap"])
    assert reaped.exit_code == 0
    assert "re-enqueued 0 images" in reaped.output  # nothing is past its deadline yet


def test_backfill_names_an_unknown_model_version(distributed_settings: Settings) -> None:
    result = CliRunner().invoke(app, ["backfill", "--model-version", "no-such-model"])
    assert result.exit_code == 2
    assert "no-such-model" in result.output and "neither shipped nor registered" in result.output
