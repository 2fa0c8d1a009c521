"""Questline's domain: rules, repositories, security and configuration.

Nothing here imports FastAPI or Celery; HTTP routes and Celery tasks call in.
"""
