"""Builds a service app: its routers plus health, readiness, metrics and error handling."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from api import errors, limits, observability


def create_app(title: str, service: str, routers: list[APIRouter]) -> FastAPI:
    app = FastAPI(
        title=title,
        version="1.0.0",
        description="Questline: quests and rewards for games. See API.md for the contract.",
    )
    errors.install(app)
    app.include_router(observability.router())
    for r in routers:
        app.include_router(r)
    app.add_middleware(limits.BodyLimitMiddleware)
    app.add_middleware(observability.MetricsMiddleware, service=service)
    return app
