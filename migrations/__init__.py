"""Alembic migrations (seed data included). Applied by `questline db upgrade`."""
