"""ASGI app of the Quest Catalog service: `uvicorn api.catalog.main:app`."""

from api.catalog.routes import router
from api.deps import verifying_service
from api.factory import create_app

app = create_app("Questline Quest Catalog", "catalog", [router, verifying_service])
