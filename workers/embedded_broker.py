"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, tuned.

Used when QUESTLINE_REDIS_URL is unset (see celeryconfig.py). Two changes from
kombu's transport: it polls every 0.1 s instead of every second, so a sign-in is
picked up well within a second, and its SQLite connections wait for the write
lock (WAL, 30 s busy timeout) instead of failing while the app publishes and the
worker fetches at the same time. kombu passes every transport option to
create_engine(), so these cannot be set through broker_transport_options.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import sqlalchemy as kombu_sqla
from sqlalchemy import Engine, create_engine, event

POLLING_INTERVAL = 0.1
DRAIN_TIMEOUT = 0.25


class Channel(kombu_sqla.Channel):
    def _engine_from_config(self) -> Engine:
        engine = create_engine(self.connection.client.hostname, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine


class Transport(kombu_sqla.Transport):
    Channel = Channel
    polling_interval = POLLING_INTERVAL

    def drain_events(self, connection: Any, timeout: Any = None, **kwargs: Any) -> Any:
        # Celery's worker loop looks for a shutdown request between drains of 2 s, and
        # drains once more after it sees one: shorter drains stop it in well under a
        # second instead of about four.
        if timeout is not None:
            timeout = min(timeout, DRAIN_TIMEOUT)
        return super().drain_events(connection, timeout=timeout, **kwargs)


def purge_delivered(broker_file: str) -> int:
    """Delete messages already handed to a worker (kombu only hides them), at start.

    Their sign-ins are either processed or still pending in the outbox, where the
    sweeper finds them, so nothing is lost; without this the file only grows.
    """
    import sqlite3

    conn = sqlite3.connect(broker_file, timeout=30)
    try:
        with conn:
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'kombu_message'"
            ).fetchone()
            if not exists:
                return 0
            return conn.execute("DELETE FROM kombu_message WHERE visible = 0").rowcount
    finally:
        conn.close()
