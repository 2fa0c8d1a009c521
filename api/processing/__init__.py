"""Quest Processing service: a player's progress, claims, rewards, history, sign-ins."""
