"""The one settings object. Every value comes from the environment (prefix JEWELCUT_), a .env
file, or a secrets directory (one file per setting, e.g.
/run/secrets/jewelcut_s3_secret_access_key).

With nothing configured, jewelcut runs embedded: SQLite, a local folder for storage and tasks
executed in-process. Setting the database, broker and S3 URLs switches to the distributed
deployment; nothing else changes.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS_DIR = PROJECT_ROOT / "models"
DATABASE_SCHEMES = ("postgresql+psycopg", "sqlite")  # postgresql:// and postgres:// mean psycopg
BROKER_SCHEMES = ("redis", "rediss")  # the queue's depth and held chunks are read from Redis
# torch.compile's modes for the torch backend, or off (reduce-overhead: CUDA graphs)
TorchCompileMode = Literal["off", "default", "reduce-overhead", "max-autotune"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="JEWELCUT_",
        env_file=".env",
        extra="ignore",
        secrets_dir=os.environ.get("JEWELCUT_SECRETS_DIR") or None,
    )

    # --- where things live -------------------------------------------------------------------
    data_dir: Path = Field(Path("jewelcut-data"), description="Embedded mode's home folder.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite.")
    broker_url: str | None = Field(None, description="Redis URL; unset runs tasks in-process.")
    s3_endpoint_url: str | None = Field(None, description="S3 API endpoint (MinIO, moto, AWS).")
    s3_bucket: str | None = Field(None, description="Bucket for cutouts; unset uses data_dir.")
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None

    # --- where photos may be fetched from (nothing else is ever fetched) --------------------
    source_buckets: list[str] = Field(
        default_factory=list, description="Buckets s3:// sources may name; the cutout bucket too."
    )
    source_root: Path | None = Field(None, description="Folder file:// sources must lie under.")

    # --- model and inference -----------------------------------------------------------------
    model_version: str | None = Field(None, description="Active model version; unset: shipped.")
    models_dir: Path = Field(DEFAULT_MODELS_DIR, description="Shipped model versions.")
    model_cache_dir: Path | None = Field(
        None,
        description="Downloaded weights and ONNX exports, one per machine per model version; "
        "default the user cache folder ($XDG_CACHE_HOME/jewelcut or ~/.cache/jewelcut).",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    backend: Literal["auto", "torch", "onnx"] = "auto"
    batch_size: int = Field(0, description="Images per model call; 0 picks by device.")
    torch_compile: TorchCompileMode = Field(
        "off",
        description="The torch backend's network through torch.compile in this mode "
        "(reduce-overhead: CUDA graphs); batches are padded to the batch size, so one graph "
        "per input shape. Costs a compile per shape when a worker starts.",
    )
    io_threads: int = Field(
        8,
        description="Threads that fetch and upload; they decode and encode too when there are "
        "no CPU-stage processes (cpu_workers 0).",
    )
    cpu_workers: int | None = Field(
        None,
        description="Processes that decode, clean up and encode; unset: the cores available, "
        "0: none (threads of the one process).",
    )
    max_pixels: int = Field(40_000_000, description="Larger photos are refused as too_large.")
    min_side: int = Field(32, description="Smaller photos are refused as too_small.")

    # --- queue ---------------------------------------------------------------------------------
    chunk_size: int = Field(128, description="Image IDs per task message.")
    chunks_in_flight: int = Field(
        1,
        ge=1,
        description="Chunks a worker runs at once, so that one's claim, reads and last writes "
        "overlap another's inference (2 keeps a GPU busy between chunks).",
    )
    visibility_timeout_s: int = Field(7200, description="Above the slowest chunk.")
    processing_timeout_s: int = Field(1800, description="Reaper re-enqueues rows stuck longer.")
    max_attempts: int = Field(3, description="A poison image ends failed after this many tries.")
    backfill_max_queued_chunks: int = Field(200, description="Backpressure; 0 turns it off.")
    backfill_page_size: int = 5000
    backfill_cron: str = Field("0 2 * * *", description="Nightly backfill (crontab, UTC).")
    reaper_interval_s: int = 300

    # --- operations ------------------------------------------------------------------------
    log_json: bool = False
    log_level: str = "INFO"
    metrics_port: int | None = Field(None, description="Prometheus metrics port for workers.")

    # --- human review (`jewelcut review`, `calibrate`) ----------------------------------------
    review_host: str = Field("127.0.0.1", description="The review page's bind address.")
    review_port: int = 8020
    review_token: SecretStr | None = Field(
        None, description="Required to open the review page when it is bound off loopback."
    )
    review_token_file: Path | None = Field(None, description="A file holding review_token.")
    review_claim_s: int = Field(900, description="A reviewer's hold on a queued image.")

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, url: str | None) -> str | None:
        if url is None:
            return None
        scheme, separator, rest = url.partition("://")
        if scheme in ("postgresql", "postgres"):
            return f"postgresql+psycopg://{rest}"
        if not separator or scheme not in DATABASE_SCHEMES:
            raise ValueError(
                f"unsupported database URL scheme {scheme + separator or url!r}; "
                "supported: postgresql:// (psycopg), sqlite:///PATH"
            )
        return url

    @field_validator("broker_url")
    @classmethod
    def _supported_broker(cls, url: str | None) -> str | None:
        scheme, separator, _rest = (url or "").partition("://")
        if url is not None and (not separator or scheme not in BROKER_SCHEMES):
            raise ValueError(
                f"unsupported broker URL scheme {scheme + separator or url!r}; "
                "supported: redis://, rediss://"
            )
        return url

    @property
    def resolved_cpu_workers(self) -> int:
        if self.cpu_workers is not None:
            return self.cpu_workers
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )

    @property
    def embedded(self) -> bool:
        return self.broker_url is None

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'jewelcut.db').resolve()}"

    @property
    def storage_root(self) -> Path:
        """The local folder that stands in for S3 in embedded mode."""
        return (self.data_dir / "storage").resolve()

    @property
    def resolved_model_cache_dir(self) -> Path:
        return (self.model_cache_dir or user_cache_dir()).resolve()

    @property
    def resolved_review_token(self) -> str | None:
        if self.review_token is not None:
            return self.review_token.get_secret_value()
        if self.review_token_file is not None:
            return self.review_token_file.read_text().strip() or None
        return None

    @property
    def resolved_source_root(self) -> Path:
        return (self.source_root or self.storage_root).resolve()


def user_cache_dir() -> Path:
    """This user's cache folder for jewelcut (XDG): shared by every data folder on the machine."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    return (Path(base) if Path(base).is_absolute() else Path.home() / ".cache") / "jewelcut"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings_cache() -> None:
    """For tests and CLIs that change the environment after import."""
    get_settings.cache_clear()
