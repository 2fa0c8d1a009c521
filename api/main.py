"""The all-in-one app: auth, catalog and processing under their own paths.

`uvicorn api.main:app`, or `questline serve` for the embedded mode.
"""

from api.auth.api_keys import router as api_keys_router
from api.auth.routes import router as auth_router
from api.catalog.routes import router as catalog_router
from api.factory import create_app
from api.processing.events import router as events_router
from api.processing.live import router as live_router
from api.processing.routes import router as processing_router
from api.processing.webhooks import router as webhooks_router

app = create_app(
    "Questline",
    "all",
    [
        auth_router,
        api_keys_router,
        catalog_router,
        processing_router,
        events_router,
        live_router,
        webhooks_router,
    ],
)
