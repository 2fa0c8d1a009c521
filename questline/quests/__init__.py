"""Quest progress: applying sign-ins, claims, and each player's view of them."""
