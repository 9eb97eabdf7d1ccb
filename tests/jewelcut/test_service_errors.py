"""A service that is down or misconfigured, as an operator meets it through the CLI: one line
naming what failed, the setting and the address (password masked), a non-zero exit code, and
the traceback only with --debug. A schema that is missing or behind says to run
`jewelcut db upgrade`; the embedded SQLite file is created and migrated on its own."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jewelcut.cli import app
from jewelcut.migrate import head_revision
from jewelcut.settings import PROJECT_ROOT, reset_settings_cache

pytestmark = pytest.mark.services

PASSWORD = "s3cret-pw"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """No JEWELCUT_* setting but the ones a test sets; an empty working folder."""
    import os

    for name in list(os.environ):
        if name.startswith("JEWELCUT_") and not name.startswith("JEWELCUT_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    reset_settings_cache()
    yield monkeypatch
    reset_settings_cache()


def _dead_database_url() -> str:
    return f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{_closed_port()}/jewelcut"


def _dead_broker_url() -> str:
    return f"redis://:{PASSWORD}@127.0.0.1:{_closed_port()}/0"


def _assert_one_line(result: object, *expected: str) -> str:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert result.exit_code != 0, stderr  # type: ignore[attr-defined]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) <= 2, stderr
    assert "Traceback" not in stderr and PASSWORD not in stderr
    for text in expected:
        assert text in lines[-1], lines[-1]
    return lines[-1]


@pytest.mark.parametrize(
    "command",
    [
        ["report"],
        ["db", "upgrade"],
        ["backfill", "--dry-run"],
        ["catalogue", "import", "--csv", "ids.csv"],
        ["enqueue", "img-1"],
        ["queue"],
    ],
)
def test_a_closed_database_port_is_one_line(
    environment: pytest.MonkeyPatch, command: list[str]
) -> None:
    url = _dead_database_url()
    environment.setenv("JEWELCUT_DATABASE_URL", url)
    Path("ids.csv").write_text("image_id,listing_id,uri\nimg-1,l1,file:///x.jpg\n")
    result = CliRunner().invoke(app, command)
    port = url.split("@127.0.0.1:")[1].split("/")[0]
    line = _assert_one_line(
        result, "database unreachable at", f"127.0.0.1:{port}", "(JEWELCUT_DATABASE_URL)"
    )
    assert line.endswith("connection refused") and "postgres:***@" in line
    assert result.exit_code == 1


@pytest.mark.parametrize(
    "command", [["enqueue", "img-1"], ["queue"], ["reap"], ["backfill"], ["worker"]]
)
def test_a_dead_broker_is_one_line(
    environment: pytest.MonkeyPatch, postgres_url: str, command: list[str]
) -> None:
    environment.setenv("JEWELCUT_DATABASE_URL", postgres_url)
    environment.setenv("JEWELCUT_BROKER_URL", _dead_broker_url())
    result = CliRunner().invoke(app, command)
    line = _assert_one_line(result, "broker unreachable at redis://:***@", "(JEWELCUT_BROKER_URL)")
    assert line.endswith("connection refused")


@pytest.mark.parametrize(
    ("setting", "url", "supported"),
    [
        ("JEWELCUT_DATABASE_URL", f"mysql://root:{PASSWORD}@127.0.0.1/jewelcut", "postgresql://"),
        ("JEWELCUT_BROKER_URL", f"amqp://guest:{PASSWORD}@127.0.0.1//", "redis://"),
    ],
)
def test_an_unsupported_scheme_names_the_supported_ones(
    environment: pytest.MonkeyPatch, setting: str, url: str, supported: str
) -> None:
    environment.setenv(setting, url)
    result = CliRunner().invoke(app, ["report"])
    _assert_one_line(result, f"invalid setting {setting}", "supported:", supported)
    assert result.exit_code == 2


def test_postgresql_urls_use_the_installed_driver(
    environment: pytest.MonkeyPatch, postgres_url: str
) -> None:
    environment.setenv(
        "JEWELCUT_DATABASE_URL", postgres_url.replace("postgresql+psycopg://", "postgresql://")
    )
    result = CliRunner().invoke(app, ["report"])
    assert result.exit_code == 0, result.output


def test_the_traceback_comes_with_debug(environment: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As a subprocess: the way an operator runs it, through `python -m jewelcut`."""
    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT_ROOT), "HOME": str(tmp_path)}
    base["JEWELCUT_DATABASE_URL"] = _dead_database_url()

    def run(*arguments: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jewelcut", *arguments],
            env=base | extra,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    plain = run("report")
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().startswith("error: database unreachable at")
    for debug in (run("--debug", "report"), run("report", JEWELCUT_LOG_LEVEL="DEBUG")):
        assert debug.returncode == 1
        assert "Traceback" in debug.stderr and "OperationalError" in debug.stderr
        assert debug.stderr.strip().splitlines()[-1].startswith("error: database unreachable")
        assert PASSWORD not in debug.stderr.splitlines()[-1]


# --- the schema --------------------------------------------------------------------------------


def test_embedded_mode_creates_and_migrates_its_own_database(
    environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    environment.setenv("JEWELCUT_DATA_DIR", str(tmp_path / "fresh"))
    result = CliRunner().invoke(app, ["enqueue", "img-1"])
    assert "no such table" not in result.output
    assert "1 unknown" in result.output  # it ran: the ID is simply not in the catalogue
    report = CliRunner().invoke(app, ["report"])
    assert report.exit_code == 0 and "No finished images yet" in report.output
    assert (tmp_path / "fresh" / "jewelcut.db").is_file()


@pytest.fixture
def behind_postgres_url(empty_postgres_url: str) -> str:
    from jewelcut.migrate import upgrade

    upgrade(empty_postgres_url, "0001_initial")
    return empty_postgres_url


@pytest.mark.parametrize("state", ["missing", "behind"])
@pytest.mark.parametrize(
    "command", [["enqueue", "img-1"], ["report"], ["backfill", "--dry-run"], ["worker"]]
)
def test_a_configured_database_not_at_head_says_to_upgrade(
    environment: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    redis_url: str,
    state: str,
    command: list[str],
) -> None:
    fixture = "empty_postgres_url" if state == "missing" else "behind_postgres_url"
    url = request.getfixturevalue(fixture)
    environment.setenv("JEWELCUT_DATABASE_URL", url)
    environment.setenv("JEWELCUT_BROKER_URL", redis_url)
    result = CliRunner().invoke(app, command)
    line = _assert_one_line(result, "(JEWELCUT_DATABASE_URL)", "run `jewelcut db upgrade`")
    assert f"the code needs {head_revision()}" in line
    assert ("no jewelcut schema" if state == "missing" else "revision 0001_initial") in line
    from jewelcut.migrate import current_revision

    assert current_revision(url) == (None if state == "missing" else "0001_initial")  # untouched


# --- S3 ----------------------------------------------------------------------------------------


def test_a_dead_s3_endpoint_is_one_line(environment: pytest.MonkeyPatch, postgres_url: str) -> None:
    from jewelcut import storage

    environment.setattr(storage, "S3_RETRY_DELAYS_S", ())  # the outage retries, cut short
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    environment.setenv("JEWELCUT_DATABASE_URL", postgres_url)
    environment.setenv("JEWELCUT_S3_ENDPOINT_URL", endpoint)
    environment.setenv("JEWELCUT_S3_ACCESS_KEY_ID", "key")
    environment.setenv("JEWELCUT_S3_SECRET_ACCESS_KEY", PASSWORD)
    result = CliRunner().invoke(app, ["catalogue", "import", "--listing", "s3://photos/"])
    _assert_one_line(result, f"S3 unreachable at {endpoint}", "(JEWELCUT_S3_ENDPOINT_URL)")


def test_a_missing_bucket_is_one_line(
    environment: pytest.MonkeyPatch, postgres_url: str, s3_server: object
) -> None:
    environment.setenv("JEWELCUT_DATABASE_URL", postgres_url)
    environment.setenv("JEWELCUT_S3_ENDPOINT_URL", s3_server.endpoint_url)  # type: ignore[attr-defined]
    environment.setenv("JEWELCUT_S3_ACCESS_KEY_ID", s3_server.access_key_id)  # type: ignore[attr-defined]
    environment.setenv("JEWELCUT_S3_SECRET_ACCESS_KEY", s3_server.secret_access_key)  # type: ignore[attr-defined]
    result = CliRunner().invoke(app, ["catalogue", "import", "--listing", "s3://no-such-bucket/"])
    _assert_one_line(result, "has no bucket 'no-such-bucket'", "JEWELCUT_S3_BUCKET")


def test_a_database_a_newer_jewelcut_migrated_is_not_told_to_upgrade(
    environment: pytest.MonkeyPatch, empty_postgres_url: str
) -> None:
    from sqlalchemy import text

    from jewelcut.db import get_engine
    from jewelcut.migrate import upgrade

    upgrade(empty_postgres_url)
    with get_engine(empty_postgres_url).begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    environment.setenv("JEWELCUT_DATABASE_URL", empty_postgres_url)
    result = CliRunner().invoke(app, ["report"])
    line = _assert_one_line(result, "revision 0099_from_the_future", "a newer jewelcut")
    assert "db upgrade" not in line
