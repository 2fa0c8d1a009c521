"""Wallets of any item: balances, and a ledger whose source keys rule out a double credit."""
