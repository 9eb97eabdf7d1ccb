"""The sampling plan: accepted images stratified by confidence band, rejected ones just under
the gate, topped up (never duplicated) when run again; `jewelcut review`: --plan-only, its
refusal to serve off loopback without a token, and the page served by the command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy import select
from typer.testing import CliRunner

from jewelcut.cli import app
from jewelcut.db import ReviewItem, Segmentation, session_scope
from jewelcut.reviews import plan_reviews
from jewelcut.settings import Settings
from tests.faults.harness import eventually
from tests.local_servers import free_port
from tests.review.conftest import VERSION, decided_rows


def catalogue(settings: Settings) -> None:
    """900 accepted at 0.999+, 90 in [0.99, 0.995), 10 in [0.98, 0.99); 50 rejected just under
    the gate (0.96) and 50 far under it (0.5)."""
    results = [(f"top-{n}", "accepted", 0.9995, 0.2) for n in range(900)]
    results += [(f"mid-{n}", "accepted", 0.992, 0.2) for n in range(90)]
    results += [(f"low-{n}", "accepted", 0.985, 0.2) for n in range(10)]
    results += [(f"near-{n}", "rejected", 0.96, 0.2) for n in range(50)]
    results += [(f"far-{n}", "rejected", 0.5, 0.2) for n in range(50)]
    decided_rows(settings, results)


def queued(settings: Settings) -> dict[str, tuple[str, float]]:
    query = select(ReviewItem.image_id, ReviewItem.stratum, Segmentation.confidence).join(
        Segmentation,
        (Segmentation.image_id == ReviewItem.image_id)
        & (Segmentation.model_version == ReviewItem.model_version),
    )
    with session_scope(settings.resolved_database_url) as session:
        return {image_id: (stratum, c) for image_id, stratum, c in session.execute(query)}


def test_the_plan_stratifies_accepted_images_and_adds_rejected_ones_near_the_gate(
    postgres_settings: Settings,
) -> None:
    catalogue(postgres_settings)
    plan = plan_reviews(postgres_settings, VERSION, accepted=100, rejected_share=0.2, near=0.05)

    items = queued(postgres_settings)
    strata = Counter(stratum for stratum, _ in items.values())
    # by population (900:90:10 of 100), but at least 100 // (2 * 4 bands) = 12 where there are
    # enough, and all there are where there are fewer
    assert strata == {
        "accepted 0.999-1.000": 90,
        "accepted 0.990-0.995": 12,
        "accepted 0.980-0.990": 10,
        "rejected near gate": 20,
    }
    assert plan.planned == dict(strata) | {"accepted 0.995-0.999": 0}
    assert all(c >= 0.93 for _, c in items.values())  # none far under the gate
    low = [image_id for image_id, (stratum, _) in items.items() if "0.980" in stratum]
    assert sorted(low) == sorted(f"low-{n}" for n in range(10))

    again = plan_reviews(postgres_settings, VERSION, accepted=100, rejected_share=0.2)
    assert sum(again.added.values()) == 0 and queued(postgres_settings) == items
    bigger = plan_reviews(postgres_settings, VERSION, accepted=200, rejected_share=0.2)
    assert bigger.planned["rejected near gate"] == 40 and len(queued(postgres_settings)) > 132


def test_review_plan_only_and_the_token_off_loopback(postgres_settings: Settings) -> None:
    catalogue(postgres_settings)
    runner = CliRunner()
    base = ["review", "--model-version", VERSION, "--sample", "40"]
    planned = runner.invoke(app, [*base, "--plan-only"])
    assert planned.exit_code == 0, planned.output
    assert f"review plan for {VERSION} (gate 0.98)" in planned.output

    refused = runner.invoke(app, [*base, "--host", "0.0.0.0", "--port", "1"])
    assert refused.exit_code == 2
    assert "off loopback" in refused.output and "JEWELCUT_REVIEW_TOKEN" in refused.output


def test_jewelcut_review_serves_the_page_and_stops_on_a_signal(
    postgres_settings: Settings, tmp_path: Path
) -> None:
    catalogue(postgres_settings)
    port = free_port()
    token = tmp_path / "token"
    token.write_text("a-long-review-token\n")
    environment = os.environ | {"JEWELCUT_REVIEW_TOKEN_FILE": str(token)}
    server = subprocess.Popen(
        [sys.executable, "-m", "jewelcut", "review", "--model-version", VERSION,
         "--sample", "20", "--host", "0.0.0.0", "--port", str(port)],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        eventually(lambda: _answers(f"{base}/healthz"), 60, "jewelcut review answers")
        with httpx.Client(base_url=base) as client:
            assert client.get("/review").status_code == 401  # bound off loopback: token needed
            authed = {"Authorization": "Bearer a-long-review-token", "X-Reviewer": "ann"}
            page = client.get("/review", params={"model_version": VERSION}, headers=authed)
            assert page.status_code == 200 and 'id="image-id"' in page.text
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
    assert f"review plan for {VERSION}" in output and f"0.0.0.0:{port}" in output


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
