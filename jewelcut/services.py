"""The services a command needs (database, broker, S3), as an operator meets them.

`require_database` and `require_broker` are the checks a command runs before it starts work;
`explain` turns what a down or misconfigured service raises (sqlalchemy, redis/kombu, botocore,
an invalid setting) into the one line the CLI prints: what failed, the setting that points
there and the address with its password masked, e.g.

    database unreachable at postgresql+psycopg://postgres:***@127.0.0.1:1/jewelcut
    (JEWELCUT_DATABASE_URL): connection refused

Torch-free and broker-free at import: the drivers are imported where they are needed.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from jewelcut.settings import Settings

DATABASE_SETTING = "JEWELCUT_DATABASE_URL"
BROKER_SETTING = "JEWELCUT_BROKER_URL"
S3_SETTINGS = {
    "endpoint": "JEWELCUT_S3_ENDPOINT_URL",
    "bucket": "JEWELCUT_S3_BUCKET",
    "credentials": "JEWELCUT_S3_ACCESS_KEY_ID, JEWELCUT_S3_SECRET_ACCESS_KEY",
}
UPGRADE_HINT = "run `jewelcut db upgrade`"
# Errors a database raises when a table or column the code reads is not there.
_MISSING_SCHEMA = re.compile(r"no such (table|column)|(relation|column) .* does not exist")


class ServiceError(Exception):
    """A service a command needs is not usable; the message is the line an operator reads."""


class SchemaNotCurrent(ServiceError):
    pass


def mask_url(url: str) -> str:
    """`url` with its password (if any) replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def database_setting(settings: Settings) -> str:
    """The setting(s) that point at the database in use."""
    return DATABASE_SETTING if settings.database_url else "JEWELCUT_DATA_DIR, embedded SQLite"


# --- checks ----------------------------------------------------------------------------------


def require_database(settings: Settings) -> None:
    """The database is reachable and at the code's head revision. The embedded SQLite file (no
    database configured) is created and migrated here; a configured one is never changed."""
    from jewelcut.migrate import current_revision, head_revision, is_known_revision, upgrade

    url = settings.resolved_database_url
    if settings.database_url is None:
        upgrade(url, quiet=True)
        return
    current, head = current_revision(url), head_revision()
    if current == head:
        return
    where = f"the database at {mask_url(url)} ({DATABASE_SETTING})"
    if current is not None and not is_known_revision(current):
        raise SchemaNotCurrent(
            f"{where} is at revision {current}, which this code does not have (a newer jewelcut "
            f"migrated it; this one needs {head}): run the newer jewelcut against it"
        )
    state = "has no jewelcut schema" if current is None else f"is at revision {current}"
    raise SchemaNotCurrent(f"{where} {state}; the code needs {head}: {UPGRADE_HINT}")


def require_broker(settings: Settings) -> None:
    """The broker answers (nothing to check in embedded mode, which has none)."""
    if settings.broker_url is None:
        return
    import redis

    client = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=5)
    try:
        client.ping()
    finally:
        client.close()


# --- translation -------------------------------------------------------------------------------


def explain(error: BaseException, settings: Settings | None) -> str | None:
    """The operator's line for a service failure, or None when `error` is not one (a bug keeps
    its traceback)."""
    if isinstance(error, ServiceError):
        return str(error)
    for explainer in (_invalid_setting, _database, _broker, _storage):
        line = explainer(error, settings)
        if line is not None:
            return line
    return None


def _invalid_setting(error: BaseException, _settings: Settings | None) -> str | None:
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return None
    problems = []
    for item in error.errors():
        name = "JEWELCUT_" + "_".join(str(part) for part in item["loc"]).upper()
        problems.append(f"{name}: {item['msg'].removeprefix('Value error, ')}")
    return "invalid setting " + "; ".join(problems)


def _database(error: BaseException, settings: Settings | None) -> str | None:
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    if settings is None:
        return None
    where = f"{mask_url(settings.resolved_database_url)} ({database_setting(settings)})"
    if isinstance(error, ArgumentError | NoSuchModuleError):
        return f"invalid database URL {where}: {error}"
    if not isinstance(error, DBAPIError):
        return None
    reason = _first_line(str(error.orig))
    if error.statement is None:  # raised while connecting, before any statement ran
        return f"database unreachable at {where}: {_connection_reason(reason)}"
    if _MISSING_SCHEMA.search(reason):
        return f"the database at {where} lacks the schema the code needs ({reason}): {UPGRADE_HINT}"
    return None


def _connection_reason(message: str) -> str:
    # psycopg: 'connection failed: connection to server at "h", port 1 failed: Connection refused'
    reason = message.rsplit(" failed: ", 1)[-1].removeprefix("FATAL:").strip()
    return reason[:1].lower() + reason[1:]


def _broker(error: BaseException, settings: Settings | None) -> str | None:
    from kombu.exceptions import OperationalError as KombuOperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    if not isinstance(error, KombuOperationalError | RedisConnectionError | RedisTimeoutError):
        return None
    url = mask_url(settings.broker_url or "") if settings else "(unknown)"
    # redis: 'Error 111 connecting to 127.0.0.1:1. Connection refused.'
    reason = re.sub(r"^Error \d+ connecting to \S+?\. ", "", _first_line(str(error))).rstrip(".")
    reason = reason[:1].lower() + reason[1:]
    return f"broker unreachable at {url} ({BROKER_SETTING}): {reason}"


def _storage(error: BaseException, settings: Settings | None) -> str | None:
    try:
        from botocore.exceptions import (
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )
    except ImportError:
        return None
    endpoint = (settings.s3_endpoint_url if settings else None) or "AWS S3"
    if isinstance(error, EndpointConnectionError):
        return f"S3 unreachable at {endpoint} ({S3_SETTINGS['endpoint']}): could not connect"
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return f"no S3 credentials for {endpoint} ({S3_SETTINGS['credentials']})"
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = details.get("Code", "")
        bucket = details.get("BucketName") or (settings.s3_bucket if settings else None)
        if code == "NoSuchBucket":
            where = f"{S3_SETTINGS['bucket']}, or the s3:// URI given"
            return f"S3 at {endpoint} has no bucket {bucket!r} ({where})"
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return (
                f"S3 at {endpoint} refused access to bucket {bucket!r} "
                f"({S3_SETTINGS['credentials']}): {details.get('Message') or code}"
            )
    return None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else text
