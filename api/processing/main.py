"""ASGI app of the Quest Processing service: `uvicorn api.processing.main:app`."""

from api.deps import verifying_service
from api.factory import create_app
from api.processing.routes import router

app = create_app("Questline Quest Processing", "processing", [router, verifying_service])
