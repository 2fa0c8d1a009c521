"""The broker the run kills: its own Redis (broker and cache at once), or a private
RabbitMQ node (the broker, while the run's Redis stays up as the cache and limiter).

The RabbitMQ node is one of the run's own (harness.RabbitMQServer: its own node name,
ports, data directory and Erlang cookie), never the machine's: killing a broker that
other people use is not an option, and closing connections on a shared node would
only show that clients reconnect, not that the broker's queues survive a crash.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import harness

from .checks import Verdict

QUEUES = ("sign_ins", "questline")


class ChaosBroker:
    """Start, kill and restart the broker, and read what it still holds."""

    name = "?"
    url = ""

    def start(self) -> None:
        raise NotImplementedError

    def kill(self, sig: int = signal.SIGKILL) -> None:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """What the API and the workers need to use this broker."""
        raise NotImplementedError

    def held(self) -> tuple[int, int]:
        """(queued, delivered and not acknowledged) messages of the task queues."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class RedisBroker(ChaosBroker):
    name = "Redis"

    def __init__(self, server: harness.RedisServer) -> None:
        self.server = server
        self.url = server.url

    def start(self) -> None:
        self.server.start()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.server.kill(sig)

    def env(self) -> dict[str, str]:
        return {}  # QUESTLINE_REDIS_URL is the broker

    def held(self) -> tuple[int, int]:
        client = self.server.client()
        # The transport keeps every consumer's unacknowledged messages in one hash, each
        # as [message, exchange, routing key]: the webhook worker's (a retry waiting for
        # its countdown) are not the drain's.
        unacked = sum(1 for raw in client.hvals("unacked") if _queue_of(raw) in QUEUES)
        return sum(client.llen(q) for q in QUEUES), unacked

    def stop(self) -> None:
        self.server.stop()


def _queue_of(raw: bytes) -> str:
    """The queue of an unacknowledged message in the Redis transport's hash: its routing
    key, which the task routes set to the queue's name."""
    _message, _exchange, routing_key = json.loads(raw)
    return str(routing_key)


class RabbitMQBroker(ChaosBroker):
    name = "RabbitMQ"

    def __init__(self, workdir: Path) -> None:
        self.server = harness.RabbitMQServer(workdir)
        self.url = self.server.url

    def start(self) -> None:
        self.server.start()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.server.kill(sig)

    def env(self) -> dict[str, str]:
        return {"QUESTLINE_BROKER_URL": self.server.url}

    def held(self) -> tuple[int, int]:
        counts = self.server.queue_counts()
        ready = sum(counts.get(q, (0, 0))[0] for q in QUEUES)
        unacked = sum(counts.get(q, (0, 0))[1] for q in QUEUES)
        return ready, unacked

    def stop(self) -> None:
        self.server.stop()


def make_broker(kind: str, workdir: Path, redis: harness.RedisServer) -> ChaosBroker:
    if kind == "rabbitmq":
        broker = RabbitMQBroker(workdir)
        broker.start()
        return broker
    return RedisBroker(redis)


def check_quorum_queues(broker: ChaosBroker, verdict: Verdict) -> None:
    """On RabbitMQ, the task queues the workers declared must be quorum queues."""
    if not isinstance(broker, RabbitMQBroker):
        return
    out = broker.server.ctl("list_queues", "-q", "--no-table-headers", "name", "type")
    types = dict(line.split()[:2] for line in out.splitlines() if len(line.split()) >= 2)
    for q in QUEUES:
        verdict.check(types.get(q) == "quorum", f"queue {q} is {types.get(q)!r}, not quorum")
