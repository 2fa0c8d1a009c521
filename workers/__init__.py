"""Questline's Celery workers: `celery -A workers worker`, `celery -A workers flower`.

Each worker applies sign-ins from the broker and, in a timer thread of its main
process, sweeps the outbox for sign-ins whose message was lost.
"""

from workers.celery_app import app

__all__ = ["app"]
