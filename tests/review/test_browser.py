"""The review page in a real browser (Debian's chromium, headless, driven by Playwright) over
Postgres filled by a real run of listing photos through the worker: sign in, move with j/k,
review ten images with the keyboard (1 clean, 2 flawed), and find the verdicts in Postgres.

JEWELCUT_TEST_SCREENSHOT=path.png keeps a screenshot of the page."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from jewelcut.reviews import plan_reviews
from jewelcut.settings import Settings
from review.app import create_app
from tests.faults.harness import eventually
from tests.local_servers import free_port
from tests.review.conftest import real_run, verdicts_in_postgres

pytestmark = pytest.mark.slow
CHROMIUM = (
    os.environ.get("JEWELCUT_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHOTOS = 26  # about half are within the plan: accepted, or rejected just under the gate
REVIEWED = 10


@pytest.fixture
def chromium() -> str:
    """The browser's path; asked for before `served`, so a missing browser costs no real run."""
    if not Path(CHROMIUM).is_file():
        missing = f"chromium not found at {CHROMIUM} (apt-get install -y chromium)"
        if os.environ.get("JEWELCUT_REQUIRE_BROWSER"):  # CI installs it: missing is a failure
            pytest.fail(missing)
        pytest.skip(missing)
    return CHROMIUM


@pytest.fixture
def served(postgres_settings: Settings) -> Iterator[tuple[str, str]]:
    """(base URL, model version): the page on 127.0.0.1 over a real run's results."""
    version = real_run(postgres_settings, PHOTOS)
    plan = plan_reviews(postgres_settings, version, accepted=PHOTOS, rejected_share=1, near=1)
    assert plan.total >= REVIEWED, plan
    port = free_port()
    config = uvicorn.Config(
        create_app(postgres_settings), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    eventually(lambda: server.started, 30, "uvicorn started")
    try:
        yield f"http://127.0.0.1:{port}", version
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_reviewer_reviews_ten_images_with_the_keyboard(
    chromium: str, served: tuple[str, str], postgres_settings: Settings, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    base, version = served
    marked: dict[str, str] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1800, "height": 900})
            page.goto(f"{base}/review?model_version={version}")
            page.fill("#name", "ann")  # the page asked who reviews
            with page.expect_navigation():
                page.click("#sign-in")

            first = page.inner_text("#image-id")
            with page.expect_navigation():
                page.keyboard.press("j")
            assert page.inner_text("#image-id") != first
            with page.expect_navigation():
                page.keyboard.press("k")
            assert page.inner_text("#image-id") == first

            for index in range(REVIEWED):
                image_id = page.inner_text("#image-id")
                assert image_id not in marked  # never offered twice
                for view in ("#photo", "#cutout", "#outline"):
                    page.wait_for_function(
                        f"document.querySelector('{view}').complete && "
                        f"document.querySelector('{view}').naturalWidth > 0"
                    )
                verdict = "flawed" if index % 3 == 2 else "clean"
                with page.expect_navigation():
                    page.keyboard.press("2" if verdict == "flawed" else "1")
                marked[image_id] = verdict
                if index == REVIEWED - 2:
                    shot = os.environ.get("JEWELCUT_TEST_SCREENSHOT") or tmp_path / "page.png"
                    page.screenshot(path=str(shot), full_page=True)
            progress = page.inner_text("#progress")
        finally:
            browser.close()

    assert f"reviewed {REVIEWED} of" in progress and f"(you: {REVIEWED})" in progress
    in_postgres = verdicts_in_postgres(postgres_settings, version)
    assert in_postgres == {image_id: [verdict] for image_id, verdict in marked.items()}
