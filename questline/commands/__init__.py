"""The `questline` command and the embedded server: the only part of this package
that loads the web app, uvicorn or Celery (lazily, inside the commands)."""
