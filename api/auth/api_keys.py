"""API keys for game servers (admin routes of the User Authentication service)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from api.auth.schemas import ApiKeyIn, ApiKeyOut, NewApiKeyOut
from api.deps import MAX_ID, AdminUser, SessionDep
from questline.credentials import service as credentials

router = APIRouter(tags=["api keys"])

ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, invalid or expired token"},
    403: {"description": "not an admin, or banned"},
}
KeyIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="a key_id")]


@router.post("/auth/api-keys", status_code=201, response_model=NewApiKeyOut, responses=ADMIN_ERRORS)
def create_api_key(body: ApiKeyIn, admin: AdminUser, session: SessionDep) -> NewApiKeyOut:
    """Create a key for a game server; the secret is in this answer only."""
    new = credentials.create(session, name=body.name, scopes=body.scopes, created_by=admin.user_id)
    session.commit()
    return NewApiKeyOut(
        key_id=new.key.key_id,
        name=new.key.name,
        scopes=new.key.scopes,  # type: ignore[arg-type]
        created_at=new.key.created_at,
        api_key=new.api_key,
    )


@router.get("/auth/api-keys", response_model=list[ApiKeyOut], responses=ADMIN_ERRORS)
def list_api_keys(_admin: AdminUser, session: SessionDep) -> Any:
    """The live keys, never their secrets."""
    return credentials.list_keys(session)


@router.delete(
    "/auth/api-keys/{key_id}",
    status_code=204,
    responses={**ADMIN_ERRORS, 404: {"description": "no such live key"}},
)
def revoke_api_key(key_id: KeyIdPath, _admin: AdminUser, session: SessionDep) -> Response:
    """Revoke a key: it stops working at once."""
    credentials.revoke(session, key_id=key_id)
    session.commit()
    return Response(status_code=204)
