"""Security: credentials only from the environment or secret files (never in code, compose or
reprs; test_bad_inputs.py checks a worker's logs and the database), sources only from the
configured schemes, buckets and root, private buckets in compose, SQL only with bound values."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from jewelcut.errors import ImageFailure
from jewelcut.settings import PROJECT_ROOT, Settings
from jewelcut.sources import fetch_source

PRODUCT_PACKAGES = ("jewelcut", "worker", "producer", "training")
CREDENTIAL_NAMES = re.compile(r"(PASSWORD|SECRET_ACCESS_KEY|ACCESS_KEY_ID)$", re.IGNORECASE)
# SQL built with an f-string whose interpolated parts are identifiers from the code itself (view
# names, the schema's table and column names), never input; the values are bound.
FORMATTED_SQL_ALLOWED = {("producer/report.py", "_view"), ("jewelcut/sql.py", "insert_ignore_many")}


def _product_sources() -> list[Path]:
    return sorted(path for name in PRODUCT_PACKAGES for path in (PROJECT_ROOT / name).rglob("*.py"))


def test_credentials_come_from_secret_files_and_never_show(tmp_path: Path) -> None:
    (tmp_path / "jewelcut_s3_secret_access_key").write_text("from-a-secret-file\n")
    (tmp_path / "jewelcut_s3_access_key_id").write_text("key-id-from-a-file\n")
    settings = Settings(_secrets_dir=tmp_path)
    assert settings.s3_secret_access_key is not None and settings.s3_access_key_id is not None
    assert settings.s3_secret_access_key.get_secret_value() == "from-a-secret-file"
    shown = [repr(settings), str(settings), settings.model_dump_json()]
    assert not [text for text in shown if "from-a-secret-file" in text or "key-id-from" in text]


def test_no_credentials_in_code_or_compose() -> None:
    sources = _product_sources()
    literal_credentials = [
        f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}"
        for path in sources
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.keyword)
        and node.arg
        and CREDENTIAL_NAMES.search(node.arg)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    ]
    assert literal_credentials == []
    assert not [p for p in sources if re.search(r"AKIA[0-9A-Z]{16}", p.read_text())]
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    values = [
        (service, name, str(value))
        for service, spec in compose["services"].items()
        for name, value in _environment(spec).items()
        if CREDENTIAL_NAMES.search(name)
    ]
    assert len(values) >= 5  # postgres, minio, minio-setup, test: all by reference
    assert not [v for v in values if not re.fullmatch(r"\$\{[A-Z_]+(:\?[^}]*)?\}", v[2])]
    print(f"\nchecked: {len(sources)} source files, {len(values)} compose credentials by reference")


def _environment(spec: dict[str, Any]) -> dict[str, Any]:
    environment = spec.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return environment


def test_compose_buckets_are_private_and_ports_local_only() -> None:
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    setup = services["minio-setup"]["command"][0]
    buckets = set(re.search(r"for bucket in ([^;]+); do", setup).group(1).split())
    app = services["worker"]["environment"]
    configured = {app["JEWELCUT_S3_BUCKET"], *yaml.safe_load(app["JEWELCUT_SOURCE_BUCKETS"])}
    assert buckets == configured
    assert 'mc anonymous set none "local/$$bucket"' in setup
    assert not re.search(r"anonymous set (public|download|upload)", setup)
    published = [(name, port) for name, spec in services.items() for port in spec.get("ports", [])]
    assert published and all(str(port).startswith("127.0.0.1:") for _, port in published)
    assert not [port for _, port in published if str(port).endswith(":9000")]  # S3 API inside
    print(f"\nchecked: {len(buckets)} buckets private, {len(published)} ports on loopback only")


@pytest.mark.parametrize(
    ("make_uri", "reason"),
    [
        (lambda root, outside: (root / "link.jpg").as_uri(), "unsupported_source"),  # symlink
        (lambda root, outside: f"file://{root}/%2e%2e/{outside.name}", "unsupported_source"),
        (lambda root, outside: f"file://fileserver{root}/photo.jpg", "unsupported_source"),
        (lambda root, outside: "http://169.254.169.254/latest/meta-data/", "unsupported_source"),
        (lambda root, outside: "S3://somebody-elses-bucket/photo.jpg", "unsupported_source"),
        (lambda root, outside: (root / "photo.jpg").as_uri(), None),
    ],
    ids=["symlink-out", "encoded-dotdot", "file-host", "metadata-url", "foreign-bucket", "ok"],
)
def test_sources_stay_inside_the_configured_root_and_buckets(
    embedded_settings: Settings, make_uri: Any, reason: str | None
) -> None:
    root = embedded_settings.resolved_source_root
    root.mkdir(parents=True, exist_ok=True)
    outside = root.parent / "private.txt"
    outside.write_text("not a photo source")
    (root / "photo.jpg").write_bytes(b"photo bytes")
    (root / "link.jpg").symlink_to(outside)
    uri = make_uri(root, outside)
    if reason is None:
        assert fetch_source(uri, embedded_settings) == b"photo bytes"
        return
    with pytest.raises(ImageFailure) as failure:
        fetch_source(uri, embedded_settings)
    assert failure.value.reason == reason


def test_sql_is_built_with_bound_values_only() -> None:
    formatted = []
    calls = 0
    for path in _product_sources():
        relative = path.relative_to(PROJECT_ROOT).as_posix()
        for function, call in _sql_calls(ast.parse(path.read_text())):
            calls += 1
            argument = call.args[0]
            if _is_formatted(argument) and (relative, function) not in FORMATTED_SQL_ALLOWED:
                formatted.append(f"{relative}:{call.lineno}")
    assert formatted == [] and calls >= 5
    print(f"\nchecked: {calls} raw SQL calls, all literal or allow-listed identifiers")


def _sql_calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """(enclosing function, call) of every text(...), .execute(...), .exec_driver_sql(...)."""
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if (
                isinstance(node, ast.Call)
                and node.args
                and _callee(node)
                in (
                    "text",
                    "execute",
                    "exec_driver_sql",
                )
            ):
                found.append((function.name, node))
    return found


def _callee(call: ast.Call) -> str:
    if isinstance(call.func, ast.Name):
        return call.func.id
    return call.func.attr if isinstance(call.func, ast.Attribute) else ""


def _is_formatted(node: ast.AST) -> bool:
    """An f-string, `%` or `+` on strings, or str.format(): SQL assembled from values."""
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return True
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
    )


def test_hostile_ids_and_names_are_bound_not_spliced(distributed_settings: Settings) -> None:
    from sqlalchemy import inspect

    from jewelcut.db import Image, Segmentation, get_engine, session_scope, utcnow
    from jewelcut.enqueue import enqueue_images
    from jewelcut.queue import CeleryChunkQueue
    from jewelcut.registry import active_model_version, ensure_registered
    from producer.report import build_report

    version = active_model_version(distributed_settings)
    ensure_registered(version, distributed_settings)
    with session_scope(distributed_settings.resolved_database_url) as session:
        session.add(Image(id="kept", source_uri="s3://bucket/kept.jpg"))
        session.flush()
        done = Segmentation(image_id="kept", model_version=version, status="done")
        session.add(done)
        done.decision, done.finished_at = "accepted", utcnow()
    hostile = ["x'); DROP TABLE images; --", "1' OR '1'='1", "kept' --"]
    summary = enqueue_images(hostile, distributed_settings, CeleryChunkQueue(distributed_settings))
    assert (summary.unknown, summary.queued, summary.chunks) == (3, 0, 0)
    assert len(build_report(distributed_settings).overall) == 1
    assert build_report(distributed_settings, model_version="v' OR '1'='1").overall == []
    tables = inspect(get_engine(distributed_settings.resolved_database_url)).get_table_names()
    assert {"images", "segmentations", "runs", "model_versions"} <= set(tables)
