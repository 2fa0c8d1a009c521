"""Webhook endpoints and their deliveries (admin routes of the Quest Processing service)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import MAX_ID, AdminUser, SessionDep
from models import DeliveryStatus
from questline.webhooks import service as webhooks

router = APIRouter(tags=["webhooks"])

ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, invalid or expired token"},
    403: {"description": "not an admin, or banned"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such (live) webhook"}}
WebhookIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="a webhook_id")]
DeliveryIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="a delivery_id")]
EventTypeName = Literal["quest.completed", "reward.earned", "reward.claimed"]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    url: str = Field(min_length=1, max_length=2048, description="an http(s) URL")
    events: list[EventTypeName] = Field(min_length=1, max_length=3)


class WebhookOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    webhook_id: int
    url: str
    events: list[EventTypeName]
    created_at: datetime


class NewWebhookOut(WebhookOut):
    secret: str = Field(description="whsec_...; shown only in this answer")


class DeliveryOut(BaseModel):
    delivery_id: int
    webhook_id: int
    message_id: str = Field(description="the webhook-id header of every attempt")
    event_type: EventTypeName
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None


@router.post(
    "/webhooks",
    status_code=201,
    response_model=NewWebhookOut,
    responses={**ADMIN_ERRORS, 422: {"description": "invalid body, or a URL not allowed"}},
)
def create_webhook(body: WebhookIn, admin: AdminUser, session: SessionDep) -> Any:
    """Register an endpoint for event types; the signing secret is in this answer only."""
    new = webhooks.create(session, url=body.url, events=body.events, created_by=admin.user_id)
    session.commit()
    return NewWebhookOut(
        webhook_id=new.webhook.webhook_id,
        url=new.webhook.url,
        events=new.webhook.events,  # type: ignore[arg-type]
        created_at=new.webhook.created_at,
        secret=new.secret,
    )


@router.get("/webhooks", response_model=list[WebhookOut], responses=ADMIN_ERRORS)
def list_webhooks(_admin: AdminUser, session: SessionDep) -> Any:
    """The live endpoints, oldest first, never their secrets."""
    return webhooks.list_webhooks(session)


@router.delete("/webhooks/{webhook_id}", status_code=204, responses={**ADMIN_ERRORS, **NOT_FOUND})
def delete_webhook(webhook_id: WebhookIdPath, _admin: AdminUser, session: SessionDep) -> Response:
    """Delete an endpoint: nothing more is sent to it."""
    webhooks.delete(session, webhook_id=webhook_id)
    session.commit()
    return Response(status_code=204)


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    response_model=list[DeliveryOut],
    responses={**ADMIN_ERRORS, **NOT_FOUND},
)
def list_deliveries(
    webhook_id: WebhookIdPath,
    _admin: AdminUser,
    session: SessionDep,
    status: DeliveryStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Any:
    """A webhook's deliveries, newest first; `status` filters, `before` pages."""
    return webhooks.deliveries(
        session, webhook_id=webhook_id, status=status, limit=limit, before=before
    )


@router.post(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
    status_code=202,
    responses={**ADMIN_ERRORS, 404: {"description": "no such webhook or delivery"}},
)
def retry_delivery(
    webhook_id: WebhookIdPath, delivery_id: DeliveryIdPath, _admin: AdminUser, session: SessionDep
) -> Response:
    """Try a delivery again now (one more attempt, the same webhook-id)."""
    webhooks.retry(session, webhook_id=webhook_id, delivery_id=delivery_id)
    session.commit()
    return Response(status_code=202)
