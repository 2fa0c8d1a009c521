"""Webhooks: endpoints, the deliveries a grant writes, signing and sending them."""
