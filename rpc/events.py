"""questline.v1.Events: RecordEvents, the gRPC twin of POST /events.

Same key check, same batch rules and the same answers: each event's fields are taken as
POST /events' body would hold them (questline.catalog.wire.event_fields) and go through
questline.events.service.record_events on one transaction, committed here as the HTTP
route commits it. The workers are woken by the after-commit hook (workers.publish).
"""

from __future__ import annotations

import grpc

from questline.catalog import wire
from questline.credentials import service as credentials
from questline.credentials.service import Scope
from questline.events import service as events
from questline.events.service import RecordStatus
from questline.grpc_gen.v1 import events_pb2, events_pb2_grpc
from questline.infra.db import session_factory
from rpc.errors import answered, metadata

_STATUS = {
    RecordStatus.ACCEPTED: events_pb2.EVENT_STATUS_ACCEPTED,
    RecordStatus.DUPLICATE: events_pb2.EVENT_STATUS_DUPLICATE,
}


class EventsService(events_pb2_grpc.EventsServicer):
    def RecordEvents(
        self, request: events_pb2.RecordEventsRequest, context: grpc.ServicerContext
    ) -> events_pb2.RecordEventsResponse:
        with answered(context):
            fields = wire.event_fields(request)
            with session_factory()() as session:
                key = credentials.authenticate_remembered(
                    session, metadata(context, "x-api-key"), scope=Scope.EVENTS_WRITE
                )
                with credentials.live_key_first(session, key):
                    batch = events.record_events(session, fields, api_key=key)
                try:
                    session.commit()
                except BaseException:
                    events.refund(batch)
                    raise
        answer = events_pb2.RecordEventsResponse()
        add = answer.results.add  # built in place: half the cost of a list of messages
        for r in batch.results:
            add(idempotency_key=r.idempotency_key, event_id=r.event_id, status=_STATUS[r.status])
        return answer
