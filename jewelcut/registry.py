"""Model versions by name: where a worker finds a version's directory, and the database rows.

A name resolves to a shipped directory under `settings.models_dir` when one is there; otherwise
to the `model_versions` row, whose weights are downloaded through storage into the model cache
and checked against the row's sha256. A corrupt cache is healed by downloading again; weights
that still do not match are refused with a clear error. Torch-free: the producer uses it too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from jewelcut.db import ModelVersion, session_scope
from jewelcut.logs import get_logger
from jewelcut.modelcard import (
    CARD_FILE,
    WEIGHTS_FILE,
    ChecksumMismatch,
    ModelCard,
    default_model_dir,
    sha256_file,
)
from jewelcut.settings import Settings
from jewelcut.sql import upsert_statement
from jewelcut.storage import s3_client, split_s3_uri

log = get_logger(__name__)


class UnknownModelVersion(LookupError):
    pass


def shipped_model_dir(name: str, settings: Settings) -> Path | None:
    directory = settings.models_dir / name
    return directory if (directory / CARD_FILE).is_file() else None


def active_model_version(settings: Settings) -> str:
    """The configured model version, else the shipped default's name."""
    if settings.model_version:
        return settings.model_version
    return ModelCard.read(default_model_dir(settings.models_dir)).name


def resolve_model_dir(name: str, settings: Settings) -> Path:
    """A directory with the version's card and verified weights, ready for load_network."""
    shipped = shipped_model_dir(name, settings)
    if shipped is not None:
        return shipped
    with session_scope(settings.resolved_database_url) as session:
        row = session.get(ModelVersion, name)
        if row is None:
            raise UnknownModelVersion(f"model version {name!r} is neither shipped nor registered")
        card = card_from_row(row)
        weights_uri = row.weights_uri
    return _cached_model_dir(card, weights_uri, settings)


def card_from_row(row: ModelVersion) -> ModelCard:
    """The row's card, with the row's checksum and gate (the row is the version's truth)."""
    card = ModelCard.model_validate(row.card) if row.card else ModelCard(name=row.name)
    gate = card.gate.model_copy(
        update={
            "min_area": row.min_area,
            "max_area": row.max_area,
            "min_confidence": row.min_confidence,
        }
    )
    return card.model_copy(
        update={
            "name": row.name,
            "input_size": row.input_size,
            "weights_sha256": row.sha256,
            "gate": gate,
        }
    )


def _cached_model_dir(card: ModelCard, weights_uri: str, settings: Settings) -> Path:
    directory = settings.resolved_model_cache_dir / "versions" / card.name
    weights = directory / WEIGHTS_FILE
    if weights.is_file() and sha256_file(weights) == card.weights_sha256:
        card.write(directory)
        return directory
    if weights.is_file():
        log.warning("cached weights are corrupt; downloading again", extra={"model": card.name})
    _download(weights_uri, weights, settings)
    actual = sha256_file(weights)
    if actual != card.weights_sha256:
        weights.unlink()
        raise ChecksumMismatch(
            f"model {card.name}: weights at {weights_uri} have sha256 {actual}, "
            f"the registry says {card.weights_sha256}; refusing to load them"
        )
    card.write(directory)
    return directory


def _download(uri: str, destination: Path, settings: Settings) -> None:
    """Copy `uri` (s3:// or file://) to `destination` atomically."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=destination.parent, prefix=".download.")
    os.close(handle)
    try:
        parsed = urlparse(uri)
        if parsed.scheme == "s3":
            bucket, key = split_s3_uri(uri)
            s3_client(settings).download_file(bucket, key, temp_name)
        elif parsed.scheme == "file":
            shutil.copyfile(unquote(parsed.path), temp_name)
        else:
            raise ValueError(f"cannot download model weights from {uri!r}")
        os.replace(temp_name, destination)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def register_model_version(card: ModelCard, weights_uri: str, settings: Settings) -> None:
    """Insert or update the `model_versions` row for this card."""
    values = {
        "name": card.name,
        "architecture": f"{card.architecture.type}/{card.architecture.encoder}",
        "weights_uri": weights_uri,
        "sha256": card.weights_sha256,
        "input_size": card.input_size,
        "min_area": card.gate.min_area,
        "max_area": card.gate.max_area,
        "min_confidence": card.gate.min_confidence,
        "metrics": card.metrics,
        "card": card.model_dump(mode="json"),
    }
    with session_scope(settings.resolved_database_url) as session:
        updates = [name for name in values if name != "name"]
        statement = upsert_statement(
            session.connection(), ModelVersion.__table__, ["name"], updates
        )
        session.execute(statement.values(**values))


def ensure_registered(name: str, settings: Settings) -> None:
    """Make sure the version's row exists; a shipped version registers itself."""
    with session_scope(settings.resolved_database_url) as session:
        if session.get(ModelVersion, name) is not None:
            return
    shipped = shipped_model_dir(name, settings)
    if shipped is None:
        raise UnknownModelVersion(f"model version {name!r} is neither shipped nor registered")
    card = ModelCard.read(shipped)
    register_model_version(card, (shipped / WEIGHTS_FILE).resolve().as_uri(), settings)
