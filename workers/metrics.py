"""Worker metrics: events processed and processing lag, across prefork children.

Set QUESTLINE_WORKER_METRICS_PORT to serve them (Prometheus multiprocess mode)."""

from __future__ import annotations

import os
import tempfile

from prometheus_client import CollectorRegistry, Counter, Histogram, values

from questline.config import get_settings
from questline.quests.rules import Applied
from questline.webhooks.delivery import Report

if get_settings().worker_metrics_port:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="questline-metrics-")
    # prometheus_client picks its value class when first imported, and Celery's CLI
    # imports it (through Flower's plugin) before this module runs: choose the
    # multiprocess one explicitly, so every pool child writes its own file.
    values.ValueClass = values.MultiProcessValue()

# The worker's own metrics, apart from the API's (api.observability): an API process
# that imports the tasks to send them must not export these counters, always zero there.
REGISTRY = CollectorRegistry()
# The v1 names are kept (dashboards use them); they count every input, gameplay events too.
SIGN_INS = Counter(
    "questline_sign_ins_processed_total",
    "Inputs (sign-ins, gameplay events) applied",
    registry=REGISTRY,
)
REWARDS = Counter(
    "questline_rewards_earned_total", "Rewards earned by applied inputs", registry=REGISTRY
)
LAG = Histogram(
    "questline_sign_in_lag_seconds",
    "Time from an input (sign-in, gameplay event) being stored to being applied",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)

WEBHOOK_ATTEMPTS = Counter(
    "questline_webhook_deliveries_total",
    "Webhook delivery attempts by outcome: delivered, retry (failed, tried again later), "
    "failed (the last attempt failed), stale (answer after the lease ran out)",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_SECONDS = Histogram(
    "questline_webhook_delivery_seconds",
    "Time one webhook attempt took, resolving the name to the receiver's answer",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)


def observe_delivery(report: Report) -> None:
    for attempt in report.attempts():
        WEBHOOK_ATTEMPTS.labels(attempt.outcome).inc()
        if attempt.seconds is not None:
            WEBHOOK_SECONDS.labels(attempt.outcome).observe(attempt.seconds)


def observe_applied(applied: Applied) -> None:
    SIGN_INS.inc(len(applied.inputs))
    REWARDS.inc(applied.rewards_earned)
    for lag in applied.lag_seconds:
        LAG.observe(lag)


def serve(port: int) -> None:
    """Serve every process's metrics from the worker's main process."""
    from prometheus_client import start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        # Every pool child's files: only worker metrics are written there.
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        start_http_server(port, registry=registry)
    else:
        start_http_server(port, registry=REGISTRY)
