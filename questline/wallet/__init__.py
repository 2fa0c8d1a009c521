"""Wallets of any item: balances, and the ledger whose source keys make a double credit impossible."""
