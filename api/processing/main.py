"""ASGI app of the Quest Processing service: `uvicorn api.processing.main:app`."""

from api.factory import create_app
from api.processing.events import router as events_router
from api.processing.routes import router

app = create_app("Questline Quest Processing", "processing", [router, events_router])
