"""HTTP services: auth, catalog and processing, each alone or all in one app."""
