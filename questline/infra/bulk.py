"""Many rows in one statement: the drain's writes, cheap on PostgreSQL.

A drain of 200 gameplay events writes thousands of rows (history, period rows,
rewards, ledger entries). Through SQLAlchemy each such statement is compiled anew
(a multi-row VALUES cannot be cached) or sent row by row, and its per-row parameter
handling cost more than PostgreSQL's own work (docs/performance.md). On psycopg2,
`insert_rows` and `update_rows` build their SQL once per shape and send every row in
one statement with `execute_values`; on any other driver (the embedded SQLite file)
they run the equivalent SQLAlchemy Core statement. Same SQL meaning on both: one
statement, ON CONFLICT on the named unique columns, RETURNING the named columns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import JSON, Table, bindparam, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

Rows = Sequence[Mapping[str, Any]]
_POSTGRESQL = postgresql.dialect()  # type: ignore[no-untyped-call]


def insert_rows(
    session: Session,
    table: Table,
    rows: Rows,
    *,
    conflict: Sequence[str] = (),
    conflict_where: str | None = None,
    set_on_conflict: Mapping[str, str] | None = None,
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """INSERT `rows` (all with the same keys) in one statement; the RETURNING rows.

    With `conflict` (the columns of a unique index, `conflict_where` its predicate), a
    conflicting row is skipped, or, with `set_on_conflict` ({column: SQL expression over
    the table and `excluded`}), updated. Returned rows come back in no promised order:
    return a key with them.
    """
    if not rows:
        return []
    columns = tuple(rows[0])
    raw = _psycopg2_cursor(session)
    if raw is not None:
        sql, template, encode = _insert_sql(
            table,
            columns,
            tuple(conflict),
            conflict_where,
            tuple(sorted((set_on_conflict or {}).items())),
            tuple(returning),
        )
        return _execute_values(raw, sql, template, [encode(row) for row in rows], bool(returning))
    dialect = session.get_bind().dialect.name
    stmt: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    if conflict and set_on_conflict is not None:
        stmt = stmt.on_conflict_do_update(
            index_elements=list(conflict),
            index_where=text(conflict_where) if conflict_where else None,
            set_={column: text(expr) for column, expr in set_on_conflict.items()},
        )
    elif conflict:
        stmt = stmt.on_conflict_do_nothing(
            index_elements=list(conflict),
            index_where=text(conflict_where) if conflict_where else None,
        )
    if returning:
        stmt = stmt.returning(*(table.c[name] for name in returning))
        return [tuple(row) for row in session.execute(stmt.values([dict(r) for r in rows]))]
    session.execute(stmt, [dict(r) for r in rows])
    return []


def update_rows(session: Session, table: Table, key: Sequence[str], rows: Rows) -> None:
    """UPDATE each row of `table` found by its `key` columns with the row's other values,
    in one statement (all rows with the same keys)."""
    if not rows:
        return
    columns = tuple(rows[0])
    raw = _psycopg2_cursor(session)
    if raw is not None:
        sql, template, encode = _update_sql(table, tuple(key), columns)
        _execute_values(raw, sql, template, [encode(row) for row in rows], False)
        return
    values = [c for c in columns if c not in key]
    stmt = update(table).where(*(table.c[k] == bindparam(f"k_{k}") for k in key))
    session.execute(
        stmt.values({c: bindparam(f"v_{c}") for c in values}),
        [{**{f"k_{k}": row[k] for k in key}, **{f"v_{c}": row[c] for c in values}} for row in rows],
    )


def _psycopg2_cursor(session: Session) -> Any | None:
    connection = session.connection()
    if connection.dialect.driver != "psycopg2":
        return None
    return connection.connection.driver_connection.cursor()  # type: ignore[union-attr]


def _execute_values(
    cursor: Any, sql: str, template: str, values: list[tuple[Any, ...]], fetch: bool
) -> list[tuple[Any, ...]]:
    from psycopg2.extras import execute_values

    with cursor:
        result = execute_values(
            cursor, sql, values, template=template, page_size=len(values), fetch=fetch
        )
    return [tuple(row) for row in result] if fetch else []


def _encoder(table: Table, columns: tuple[str, ...]) -> tuple[str, Any]:
    """The VALUES template of one row and a function from a row to its parameters
    (JSON columns as text cast to jsonb)."""
    is_json = [isinstance(table.c[name].type, JSON) for name in columns]
    template = "(" + ", ".join("%s::jsonb" if j else "%s" for j in is_json) + ")"
    pairs = tuple(zip(columns, is_json, strict=True))

    def encode(row: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(
            (None if row[name] is None else json.dumps(row[name], separators=(",", ":")))
            if j
            else row[name]
            for name, j in pairs
        )

    return template, encode


@lru_cache(maxsize=64)
def _insert_sql(
    table: Table,
    columns: tuple[str, ...],
    conflict: tuple[str, ...],
    conflict_where: str | None,
    set_on_conflict: tuple[tuple[str, str], ...],
    returning: tuple[str, ...],
) -> tuple[str, str, Any]:
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES %s"
    if conflict:
        sql += f" ON CONFLICT ({', '.join(conflict)})"
        if conflict_where:
            sql += f" WHERE {conflict_where}"
        if set_on_conflict:
            sql += " DO UPDATE SET " + ", ".join(f"{c} = {e}" for c, e in set_on_conflict)
        else:
            sql += " DO NOTHING"
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
    template, encode = _encoder(table, columns)
    return sql, template, encode


@lru_cache(maxsize=64)
def _update_sql(
    table: Table, key: tuple[str, ...], columns: tuple[str, ...]
) -> tuple[str, str, Any]:
    template, encode = _encoder(table, columns)
    # VALUES loses the column types: cast each to its column's type by name.
    casts = {name: table.c[name].type.compile(dialect=_POSTGRESQL) for name in columns}
    sets = ", ".join(f"{c} = v.{c}::{casts[c]}" for c in columns if c not in key)
    match = " AND ".join(f"{table.name}.{k} = v.{k}::{casts[k]}" for k in key)
    sql = (
        f"UPDATE {table.name} SET {sets} FROM (VALUES %s) AS v ({', '.join(columns)}) WHERE {match}"
    )
    return sql, template, encode
