"""questline.v1.Catalog: GetQuest, ListQuests and WatchCatalog.

The reads are the HTTP catalog's (questline.catalog.service, through its cache); each
answer carries the catalog version read first in the same transaction, so the quests
are at least as new as the version they are labelled with (a client that compares
versions refreshes too often at worst, never too seldom).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from questline.catalog import cache, repository, service, wire
from questline.grpc_gen.v1 import catalog_pb2, catalog_pb2_grpc
from questline.infra.db import session_factory
from rpc.errors import answered
from rpc.watch import CatalogWatch

MAX_ID = 2**63 - 1


def read_catalog() -> catalog_pb2.CatalogChange:
    """The active quests and the catalog version they are at least as new as."""
    with session_factory()() as session:
        version = repository.catalog_version(session)
        with cache.at_version(version):
            quests = [wire.quest_message(view) for view in service.list_quests(session)]
    return catalog_pb2.CatalogChange(catalog_version=version, quests=quests)


class CatalogService(catalog_pb2_grpc.CatalogServicer):
    def __init__(self, watch: CatalogWatch) -> None:
        self._watch = watch

    def GetQuest(
        self, request: catalog_pb2.GetQuestRequest, context: grpc.ServicerContext
    ) -> catalog_pb2.GetQuestResponse:
        if not 1 <= request.quest_id <= MAX_ID:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "quest_id must be 1 to 2^63-1")
        with answered(context), session_factory()() as session:
            version = repository.catalog_version(session)
            with cache.at_version(version):
                view = service.get_quest(session, request.quest_id)
        return catalog_pb2.GetQuestResponse(
            quest=wire.quest_message(view), catalog_version=version
        )

    def ListQuests(
        self, request: catalog_pb2.ListQuestsRequest, context: grpc.ServicerContext
    ) -> catalog_pb2.ListQuestsResponse:
        with answered(context):
            change = read_catalog()
        return catalog_pb2.ListQuestsResponse(
            quests=change.quests, catalog_version=change.catalog_version
        )

    def WatchCatalog(
        self, request: catalog_pb2.WatchCatalogRequest, context: grpc.ServicerContext
    ) -> Iterator[catalog_pb2.CatalogChange]:
        known = request.known_version
        while context.is_active():
            with answered(context):
                change = self._watch.newer_than(known, wait=1.0)
            if change is None:
                if self._watch.stopping:
                    return  # the server is shutting down: the client reconnects elsewhere
                continue
            yield change
            known = change.catalog_version
