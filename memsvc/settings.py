"""Settings: the only reader of the environment (MEMSVC_*), validated once at start."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BUNDLED_MODEL = "bundled:all-MiniLM-L6-v2"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEMSVC_", extra="ignore")

    database_url: str | None = Field(
        default=None, description="PostgreSQL URL; unset starts an embedded PostgreSQL under data_dir"
    )
    data_dir: Path = Field(default=Path("memsvc-data"), description="database and FAISS files")
    admin_key: SecretStr | None = Field(default=None, description="a key valid for /v1/admin/*")
    embed_model: str = Field(
        default=BUNDLED_MODEL, description="sentence-transformers model name or path; default is bundled"
    )
    embed_device: Literal["auto", "cpu", "cuda"] = "auto"
    embed_batch_size: int | None = Field(
        default=None, ge=1, le=4096, description="texts per model call; unset: 8 on CPU, 128 on CUDA"
    )
    embed_threads: int = Field(
        default=1,
        ge=1,
        le=256,
        description="CPU threads per process for the model; `serve` runs API and worker side by side",
    )
    workers: int = Field(default=1, ge=0, le=64, description="worker processes `serve` starts")
    worker_concurrency: int = Field(default=1, ge=1, le=64, description="jobs one worker runs at once")
    job_max_attempts: int = Field(default=5, ge=1, le=100)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_message_chars: int = Field(default=20_000, ge=1)
    max_messages_per_request: int = Field(default=1000, ge=1)
    wait_timeout_s: float = Field(default=120.0, gt=0, description="longest an ingest with wait=true blocks")
    index_sync_interval_s: float = Field(default=1.0, gt=0)
    extractor: Literal["rules", "llm"] = "rules"
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: SecretStr | None = None
    llm_timeout_s: float = Field(default=60.0, gt=0)
    llm_max_concurrency: int = Field(default=4, ge=1)
    llm_tokens_per_minute: int = Field(default=200_000, ge=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text", description="`json`: one JSON object per line, with request_id / job_id"
    )
    metrics_public: bool = Field(
        default=False, description="serve /metrics without a key (else the admin key is required)"
    )
    rate_limit_per_s: float = Field(
        default=50.0, ge=0, description="requests a second per tenant key, per API process; 0: no limit"
    )
    rate_limit_burst: int = Field(default=100, ge=1, description="requests a key may make at once")

    @field_validator("database_url")
    @classmethod
    def _sqlalchemy_driver(cls, url: str | None) -> str | None:
        if url is None or url == "":
            return None
        if not url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
            raise ValueError("MEMSVC_DATABASE_URL must be a postgresql:// URL")
        return url

    @field_validator("llm_base_url")
    @classmethod
    def _llm_url(cls, url: str | None) -> str | None:
        return url.rstrip("/") if url else None

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
