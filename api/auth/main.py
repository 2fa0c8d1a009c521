"""ASGI app of the User Authentication service: `uvicorn api.auth.main:app`."""

from api.auth.api_keys import router as api_keys_router
from api.auth.routes import router
from api.factory import create_app

app = create_app("Questline User Authentication", "auth", [router, api_keys_router])
