"""Connection settings every service shares, read once from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConnectionSettings(BaseSettings):
    """Where the broker and the database are, and how topics are named and sized.

    ``KAFKA_BOOTSTRAP_SERVERS`` and ``DATABASE_URL`` are read without prefix (the names
    every tool uses); everything else is ``ORDERSTREAM_*``.
    """

    model_config = SettingsConfigDict(env_prefix="ORDERSTREAM_", extra="ignore")

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "ORDERSTREAM_KAFKA_BOOTSTRAP_SERVERS"
        ),
        description="Comma-separated host:port list",
    )
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        validation_alias=AliasChoices("DATABASE_URL", "ORDERSTREAM_DATABASE_URL"),
    )
    topic_prefix: str = Field(
        default="",
        description="Prepended to every topic, consumer group and schema name (test isolation)",
    )
    topic_partitions: int = Field(
        default=8, ge=1, description="Partitions of every topic, so keyed topics co-partition"
    )
    topic_replication: int = Field(default=1, ge=1)
    kafka_session_timeout: float = Field(
        default=10.0, gt=0, description="Consumer group session timeout, seconds"
    )
    kafka_rebalance_timeout: float = Field(
        default=10.0, gt=0, description="How long a rebalance waits for members, seconds"
    )
    kafka_heartbeat_interval: float = Field(default=1.0, gt=0)
    kafka_idempotence: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Idempotent producer: auto = on when the broker grants producer ids",
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=100, ge=1, le=30_000,
        description="Longest a consumer fetch waits for data (Faust fixes 1500 ms)",
    )
    data_dir: Path = Field(default=Path(".state/data"), description="Faust table stores")
    log_level: str = Field(default="info", pattern="^(crit|error|warn|info|debug)$")

    @property
    def bootstrap_list(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap_servers.split(",") if s.strip()]

    @property
    def external_kafka(self) -> str | None:
        """The broker named in the environment (then nothing is started for it)."""
        given = "kafka_bootstrap_servers" in self.model_fields_set
        return self.kafka_bootstrap_servers if given else None

    @property
    def external_database_url(self) -> str | None:
        return self.database_url if "database_url" in self.model_fields_set else None

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def schema(self, service: str) -> str:
        """The PostgreSQL schema a service owns (prefix sanitised to an identifier)."""
        prefix = "".join(c if c.isalnum() else "_" for c in self.topic_prefix.lower())
        return f"{prefix}{service}"


class ServiceSettings(BaseSettings):
    """Base for each service's own settings (env prefix ``ORDERSTREAM_<SERVICE>_``)."""

    model_config = SettingsConfigDict(extra="ignore")

    http_host: str = Field(default="127.0.0.1", description="Bind address of the HTTP port")
    http_port: int = Field(ge=1, le=65535, description="HTTP port: /metrics, /health, APIs")
    table_store: str = Field(
        default="memory://", pattern="^(memory|rocksdb)://$", description="Faust table store"
    )
    db_pool_max: int = Field(default=5, ge=1)
    batch_max: int = Field(
        default=2000, ge=1, le=50_000,
        description="Most records the consume loop decides and writes as one batch")
    state_cache_max: int = Field(
        default=100_000, ge=1,
        description="Most state values (orders, dedupe entries) the loop keeps in memory")
