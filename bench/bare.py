"""The bare FastAPI endpoint that cached GET /quests is compared with: the same JSON,
no token, no database, no cache, no middleware. `uvicorn bench.bare:app`."""

from __future__ import annotations

import json
import os
from typing import Any

from fastapi import FastAPI

app = FastAPI()

# The benchmark passes the real GET /quests body, so both answer the same bytes.
QUESTS: list[dict[str, Any]] = json.loads(os.environ.get("BENCH_QUESTS_JSON", "[]"))


@app.get("/quests")
def quests() -> list[dict[str, Any]]:
    return QUESTS
