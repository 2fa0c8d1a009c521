"""Infrastructure the domain runs on: the database engine and transactions, the
key-value store, migrations. No rules live here."""
