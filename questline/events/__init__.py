"""Gameplay events from game servers: checking a batch, storing it once per idempotency key,
the per-user rate limit, and the status of a stored event.

    validation.py  the rules of one batch (pure: no I/O, `now` is an argument)
    limits.py      events per user per minute, counted in the key-value store
    repository.py  queries on the events table (inputs) and on users' zones
    service.py     record a batch, read one event: what the routes (and gRPC) call
"""
