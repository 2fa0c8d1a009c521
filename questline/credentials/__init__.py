"""Service credentials: API keys with scopes, for game servers that send events."""
