"""User Authentication service: sign-up, login, refresh, bans, JWKS."""
