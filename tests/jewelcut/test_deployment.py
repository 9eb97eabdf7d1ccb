"""docker-compose.yml holds together (no Docker engine here: parsed and cross-checked)."""

from __future__ import annotations

from typing import Any

import yaml

from jewelcut.settings import PROJECT_ROOT, Settings

LONG_RUNNING = {"postgres", "redis", "minio", "worker", "flower"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def _compose() -> dict[str, Any]:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def test_services_dependencies_and_healthchecks() -> None:
    services = _compose()["services"]
    assert {"postgres", "redis", "minio", "minio-setup", "migrate", "worker", "beat", "flower"} <= (
        set(services)
    )
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            assert rule["condition"] in CONDITIONS
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], dependency
    for name in LONG_RUNNING:
        assert "healthcheck" in services[name], name
    assert services["worker"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )


def test_gpu_worker_and_test_profile() -> None:
    services = _compose()["services"]
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "--gpu" in worker["command"]
    test = services["test"]
    assert test["profiles"] == ["test"]
    assert test["environment"]["JEWELCUT_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_environment_names_are_settings_and_credentials_are_secrets() -> None:
    compose = _compose()
    fields = {f"JEWELCUT_{name.upper()}" for name in Settings.model_fields}
    tests_only = {"JEWELCUT_TEST_POSTGRES_DSN", "JEWELCUT_TEST_REDIS_URL", "JEWELCUT_SECRETS_DIR"}
    for service in compose["services"].values():
        for name in service.get("environment") or {}:
            if name.startswith("JEWELCUT_"):
                assert name in fields | tests_only, name
    assert set(compose["secrets"]) == {"jewelcut_s3_access_key_id", "jewelcut_s3_secret_access_key"}
    assert "mc anonymous set none" in compose["services"]["minio-setup"]["command"][0]


def test_env_example_documents_every_setting() -> None:
    text = (PROJECT_ROOT / ".env.example").read_text()
    for name in Settings.model_fields:
        assert f"JEWELCUT_{name.upper()}=" in text, name
