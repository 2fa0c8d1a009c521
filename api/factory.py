"""Builds a service app: its routers plus health, readiness, metrics, error handling,
response headers and API docs that load nothing from another host."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors, limits, observability
from questline.users import bans
from workers import publish  # noqa: F401  registers the after-commit sender of sign-ins

DESCRIPTION = (
    "Questline: quests and rewards for games. The public contract (paths, fields, "
    "status codes, commands) is docs/api.md in the Questline repository."
)
# Swagger UI and ReDoc files from the fastapi-offline package, served by each service:
# /docs works without reaching a CDN (offline, or behind a strict firewall).
DOCS_ASSETS = "/docs/assets"


class NoSniffMiddleware:
    """Adds `X-Content-Type-Options: nosniff` to every answer, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["x-content-type-options"] = "nosniff"
            await send(message)

        await self.app(scope, receive, send_with_header)


class QuestlineAPI(FastAPI):
    """FastAPI whose outermost layer sets the security headers, so that even the 500
    written by Starlette's error middleware (outside any added middleware) has them."""

    def build_middleware_stack(self) -> ASGIApp:
        return NoSniffMiddleware(super().build_middleware_stack())


def create_app(title: str, service: str, routers: list[APIRouter]) -> FastAPI:
    # Processing (and the all-in-one app) apply quest definitions: with
    # QUESTLINE_CATALOG_GRPC, readiness also says whether the catalog's server answers.
    readiness = observability.Readiness(catalog=service != "auth" and service != "catalog")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Say at start (once) what keeps the service from being ready, e.g. a
        # database nobody has migrated; readiness keeps checking afterwards.
        await readiness.report_at_start()
        bans.ban_list.listen()  # bans published by the other processes, within ms
        yield

    app = QuestlineAPI(
        title=title,
        version="1.0.0",
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(observability.router(readiness))
    for r in routers:
        app.include_router(r)
    _serve_docs(app)
    app.add_middleware(limits.BodyLimitMiddleware)
    app.add_middleware(observability.MetricsMiddleware, service=service)
    return app


def _serve_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, their files from this service."""
    app.mount(
        DOCS_ASSETS,
        StaticFiles(directory=str(files("fastapi_offline") / "static")),
        name="docs-assets",
    )
    redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            oauth2_redirect_url=f"{root}{redirect}",
        )

    @app.get(redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
