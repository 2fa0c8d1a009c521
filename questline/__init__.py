"""Questline's domain: rules, repositories, security and configuration.

Layout:
- `questline.users`, `questline.catalog`, `questline.quests`, `questline.outbox`,
  `questline.security`, `questline.ratelimit`: the domain. Functions take the
  session first and never commit.
- `questline.infra`: what the domain runs on (engine and transactions, the
  key-value store, migrations).
- `questline.commands`: the `questline` command and the embedded server, the only
  modules here that load the web app, uvicorn or Celery.

Nothing outside `questline.commands` imports FastAPI, Starlette, Celery, kombu,
uvicorn, `api` or `workers`; tests/test_layout.py holds the package to that.
"""
