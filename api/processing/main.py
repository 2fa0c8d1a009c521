"""ASGI app of the Quest Processing service: `uvicorn api.processing.main:app`."""

from api.deps import verifying_service
from api.factory import create_app
from api.processing.events import router as events_router
from api.processing.live import router as live_router
from api.processing.routes import router
from api.processing.webhooks import router as webhooks_router

app = create_app(
    "Questline Quest Processing",
    "processing",
    [router, events_router, live_router, webhooks_router, verifying_service],
)
