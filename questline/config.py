"""Settings, read once from QUESTLINE_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUESTLINE_", extra="ignore")

    data_dir: Path = Path("./questline-data")
    # None means the embedded SQLite file in data_dir.
    database_url: str | None = None
    # POST /events and RecordEvents prepare their insert once per database connection.
    # Set false behind a pooler in transaction mode (PgBouncer's pool_mode=transaction),
    # which hands each transaction any server connection and so loses them.
    database_prepared_statements: bool = True
    # Broker and cache. None means embedded: no Redis, in-process cache and limiter.
    redis_url: str | None = None
    # The Celery broker when it is not that Redis, e.g. RabbitMQ:
    # amqp://guest:guest@127.0.0.1:5672// (README, "Brokers"). None: redis_url's server.
    broker_url: str | None = None

    jwt_private_key_file: Path | None = None
    jwt_public_key_file: Path | None = None
    jwt_issuer: str = "questline"
    token_ttl_seconds: int = Field(default=3600, ge=1)
    refresh_ttl_seconds: int = Field(default=2_592_000, ge=1)

    # argon2id, OWASP's recommended minimum: 19 MiB, t=2, p=1.
    argon2_memory_kib: int = Field(default=19_456, ge=8)
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_parallelism: int = Field(default=1, ge=1)

    # Failed logins per window (README, "Login limits"): per name from one client, per
    # client, and per name from anywhere at a much higher bar, so that strangers
    # cannot lock a player out of password login.
    login_max_failures_per_name_and_client: int = Field(default=5, ge=1)
    login_max_failures_per_client: int = Field(default=50, ge=1)
    login_max_failures_per_name: int = Field(default=100, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=1)
    # Sign-ins (logins and refreshes) of one user per minute; more get 429.
    sign_ins_per_user_per_minute: int = Field(default=60, ge=1)
    # Sign-ups from one client address per hour; more get 429.
    signups_per_client_per_hour: int = Field(default=30, ge=1)
    # Password hashes (argon2) running at once in one process; None: one per core.
    # A request waits this long for a turn, then gets 503 with Retry-After.
    hashing_concurrency: int | None = Field(default=None, ge=1)
    hashing_wait_seconds: float = Field(default=5.0, ge=0, le=60)
    # Clock skew between hosts tolerated on a token's iat and exp.
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)

    catalog_cache_ttl_seconds: int = Field(default=60, ge=1)

    # Outbox: how old an unprocessed sign-in must be before the sweeper takes it,
    # how often the sweeper looks, and after how many failures an event is dead.
    sweep_after_seconds: float = Field(default=5.0, ge=0)
    sweep_interval_seconds: float = Field(default=2.0, gt=0)
    sweeper_enabled: bool = True
    # Failures (errors a retry cannot cure) before a sign-in is dead-lettered.
    # Transient database errors never count: the tasks retry them (task_max_retries).
    max_attempts: int = Field(default=8, ge=1)
    # Celery retries of a task after a transient database error, with exponential
    # backoff and jitter capped at 30 s (see workers.tasks); then the sweeper takes over.
    task_max_retries: int = Field(default=6, ge=0, le=100)
    batch_size: int = Field(default=200, ge=1)
    # How a stored sign-in wakes the workers: "batch" publishes one coalesced
    # questline.drain_outbox wake-up while none is pending (needs Redis; the
    # embedded mode always sends per-event messages); "per_event" sends one
    # questline.process_sign_in(event_id) message per sign-in.
    sign_in_dispatch: Literal["batch", "per_event"] = "batch"
    # A pending wake-up blocks further ones for at most this long, so a lost
    # wake-up delays the next one by this much (the sweeper still backs it up).
    wakeup_ttl_seconds: float = Field(default=1.0, gt=0)
    # A drain waits this long before it clears the wake-up flag and reads the
    # outbox: sign-ins arriving meanwhile join its batch instead of each costing a
    # message and a task. Adds at most this much lag; keep it well under the TTL.
    drain_linger_seconds: float = Field(default=0.05, ge=0, le=0.5)
    idempotency_retention_hours: int = Field(default=48, ge=24)
    # Refresh tokens are deleted this long after they were used, revoked or expired.
    # A used token presented later is "unknown" (401) and no longer revokes its family.
    refresh_token_retention_hours: int = Field(default=720, ge=1)
    # How often each worker prunes old refresh tokens, idempotency keys and settled
    # webhook deliveries (and events, when event_retention_days is set).
    prune_interval_seconds: float = Field(default=3600, gt=0)
    # The events table: processed inputs and history stored more than this many days
    # ago are deleted by the pruner, except inputs an active quest's window still
    # counts (questline.retention). None (the default) keeps every event: recompute
    # can rebuild from the whole history and /me/events shows all of it. Trade-offs:
    # docs/scaling.md, "Retention".
    event_retention_days: int | None = Field(default=None, ge=1)
    # Webhook deliveries that are settled (delivered or failed) are deleted this many
    # days after they were written; pending ones stay until they settle. The events
    # retention also takes the settled deliveries of the history it deletes.
    webhook_delivery_retention_days: int = Field(default=30, ge=1)

    # After Redis fails to answer in time, every Redis call of the process (cache,
    # limiter, publishing) fails at once; a background probe tries it this often.
    # The publisher's breaker for a broker of its own (RabbitMQ) uses the same period.
    redis_breaker_open_seconds: float = Field(default=2.0, gt=0, le=60)
    # RabbitMQ: how long a publish waits for the broker's confirm (and a connection for
    # its handshake) before the publisher counts the broker as away.
    broker_confirm_timeout_seconds: float = Field(default=2.0, gt=0, le=30)

    # POST /events: how old an event may be without the events:backfill scope, and how
    # many events one user may send per minute (a batch over it is refused whole, 429).
    event_max_age_seconds: int = Field(default=86_400, ge=60)
    events_per_user_per_minute: int = Field(default=600, ge=1)

    # Redis broker only: seconds before the broker hands a dead worker's unacknowledged
    # message to another worker. Above the longest task retry countdown (30 s), or
    # retries would be delivered twice while they wait. (RabbitMQ needs none: it
    # delivers a message again as soon as the connection of the worker holding it dies.)
    broker_visibility_timeout_seconds: int = Field(default=300, ge=45)

    # GET /me/stream: a comment line this often keeps idle connections open through
    # proxies; every open stream of a process is re-checked in the database this often
    # (in a few statements for all of them), so a lost notification only delays. The
    # embedded mode, whose worker is another process with no Redis between them,
    # re-checks at least every EMBEDDED_RECHECK_SECONDS (api/processing/live_hub.py).
    stream_heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)
    stream_recheck_seconds: float = Field(default=5.0, gt=0, le=300)
    # Webhooks (docs/api.md, "Webhooks"). Receivers on loopback, private, link-local,
    # metadata or other non-global addresses are refused at registration and at each
    # delivery unless this is true (a receiver on the same host or network).
    webhook_allow_private: bool = False
    # Attempts per delivery before it is failed; retry n waits base x 2^(n-1) seconds,
    # at most webhook_retry_max_seconds, within +-20 % jitter.
    webhook_max_attempts: int = Field(default=10, ge=1, le=100)
    webhook_retry_base_seconds: float = Field(default=5.0, gt=0)
    webhook_retry_max_seconds: float = Field(default=21_600.0, gt=0)
    # One attempt, from resolving the name to the receiver's answer, ends after this.
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # A delivery whose task message went out this long ago and was never taken is
    # presumed lost (killed worker, Redis restarted) and sent again by the timer.
    webhook_requeue_after_seconds: float = Field(default=30.0, gt=0)
    # Batches of attempts under way to one endpoint at once, across all workers (each
    # makes one request at a time): a receiver that hangs holds at most this many
    # sending slots, the others keep the rest.
    webhook_max_in_flight_per_endpoint: int = Field(default=4, ge=1)
    # Due deliveries to one endpoint that one task sends one after another over one
    # connection (fewer tasks, transactions and connections per delivery). A batch
    # starts attempts during its first webhook_timeout_seconds and stops at the first
    # attempt with no answer; what it did not try is given back uncounted.
    webhook_batch_size: int = Field(default=50, ge=1, le=1000)
    # How often each worker's timer sends the deliveries that are due.
    webhook_timer_interval_seconds: float = Field(default=1.0, gt=0)

    worker_metrics_port: int | None = None

    # `questline grpc`: the port, Prometheus /metrics on its own HTTP port (None: off),
    # threads for calls (each open WatchCatalog stream holds one), how often its watch
    # streams poll the catalog version besides the Redis pub/sub message, and how long
    # calls in flight may finish after SIGTERM.
    grpc_port: int = Field(default=50051, ge=1, le=65535)
    grpc_metrics_port: int | None = Field(default=9464, ge=1, le=65535)
    grpc_max_workers: int = Field(default=256, ge=2, le=4096)
    grpc_watch_poll_seconds: float = Field(default=0.25, gt=0, le=30)
    grpc_shutdown_grace_seconds: float = Field(default=10.0, ge=0, le=300)
    # How often the gRPC server checks the database for its services' health status.
    grpc_health_check_seconds: float = Field(default=2.0, gt=0, le=60)
    # host:port of `questline grpc`: processing and the workers read quest definitions
    # through it (an in-process copy kept current by WatchCatalog). None: the database.
    catalog_grpc: str | None = None
    # A refresh of that copy (ListQuests) waits at most this long for the server.
    catalog_grpc_timeout_seconds: float = Field(default=2.0, gt=0, le=60)

    # Test-only switch for the negative control of the fault-injection run:
    # turns off the "already processed?" guard so double delivery double-applies.
    unsafe_disable_idempotency_guard: bool = False

    @model_validator(mode="after")
    def _retention_outlives_event_age(self) -> Settings:
        # A game server's retry of a pruned event must be refused as too old, not
        # stored and applied a second time: events are kept longer than they may be sent.
        days = self.event_retention_days
        if days is not None and days * 86_400 <= self.event_max_age_seconds:
            raise ValueError(
                "event_retention_days must exceed event_max_age_seconds "
                f"({self.event_max_age_seconds} s): events must be kept longer than "
                "they may be sent late"
            )
        return self

    @property
    def embedded(self) -> bool:
        """No servers at all: SQLite, the in-process cache and the SQLite broker."""
        return self.redis_url is None and not self.broker_url

    @property
    def celery_broker_url(self) -> str | None:
        """The Celery broker: QUESTLINE_BROKER_URL, else the Redis server; None is the
        embedded broker (a SQLite file in data_dir)."""
        return self.broker_url or self.redis_url

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'questline.db').resolve()}"

    @property
    def private_key_path(self) -> Path:
        return self.jwt_private_key_file or self.data_dir / "jwt-private.pem"

    @property
    def public_key_path(self) -> Path:
        return self.jwt_public_key_file or self.data_dir / "jwt-public.pem"


@lru_cache
def get_settings() -> Settings:
    return Settings()
