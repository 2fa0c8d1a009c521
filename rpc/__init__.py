"""The gRPC face of Questline (`questline grpc`): the catalog and event ingestion.

Like api/ for HTTP, it is thin: each call converts messages (questline.catalog.wire),
calls the same service functions as the HTTP routes, and turns domain errors into
gRPC status codes (errors.py).
"""
