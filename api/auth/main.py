"""ASGI app of the User Authentication service: `uvicorn api.auth.main:app`."""

from api.auth.routes import router
from api.factory import create_app

app = create_app("Questline User Authentication", "auth", [router])
