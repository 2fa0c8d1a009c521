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

import io
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import JSON, Integer, Table, bindparam, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from models.base import UTCDateTime

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
    rows = _with_defaults(table, rows)
    columns = tuple(rows[0])
    raw = _psycopg2(session)
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


def run_sql(session: Session, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """The rows of one PostgreSQL statement written for the driver (`%(name)s`
    placeholders), run on the session's connection without SQLAlchemy's compilation:
    for a hand-written statement on a hot path."""
    result = session.connection().exec_driver_sql(sql, dict(params))
    return [tuple(row) for row in result]


def append_rows(session: Session, table: Table, rows: Rows) -> None:
    """INSERT `rows` (all with the same keys) that need no conflict handling and return
    nothing, the fastest way the driver has: COPY on psycopg2."""
    if not rows:
        return
    raw = _psycopg2(session)
    if raw is None:
        insert_rows(session, table, rows)
        return
    rows = _with_defaults(table, rows)
    columns = tuple(rows[0])
    formats = _copy_formats(table, columns)
    text = "".join(
        "\t".join([fmt(row[name]) for name, fmt in formats]) + "\n" for row in rows
    )
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    with _driver_errors(raw, statement), _cursor(raw) as cursor:
        cursor.copy_expert(statement, io.StringIO(text))


def _copy_formats(table: Table, columns: tuple[str, ...]) -> list[tuple[str, Any]]:
    """Per column, a function from a value to its field in COPY's text format."""

    def text(value: Any) -> str:
        if value is None:
            return "\\N"
        field = str(value)
        if "\\" in field or "\t" in field or "\n" in field or "\r" in field:
            return field.translate(_COPY_ESCAPES)
        return field

    def json_text(value: Any) -> str:
        if value is None:
            return "\\N"
        # orjson escapes control characters inside strings: only backslashes remain.
        field = orjson.dumps(value).decode()
        return field.replace("\\", "\\\\") if "\\" in field else field

    def stamp(value: datetime | None) -> str:
        return "\\N" if value is None else value.isoformat()

    def number(value: int | None) -> str:
        return "\\N" if value is None else str(int(value))

    formats = []
    for name in columns:
        kind = table.c[name].type
        if isinstance(kind, JSON):
            formats.append((name, json_text))
        elif isinstance(kind, Integer):
            formats.append((name, number))
        elif isinstance(kind, UTCDateTime):
            formats.append((name, stamp))
        else:
            formats.append((name, text))
    return formats


# COPY's text format: backslash escapes for the characters that delimit fields and rows.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def next_ids(session: Session, table: Table, column: str, count: int) -> list[int] | None:
    """`count` new values of the serial `column` of `table`, drawn from its sequence in
    one statement (PostgreSQL), so that rows can be written with their ids known first;
    None where there is no sequence (SQLite).

    The table's ROW EXCLUSIVE lock is taken first, as an INSERT drawing the ids would:
    whoever watches for the table's writers (live streams holding back later ids) sees
    this transaction as one before its ids exist."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    session.execute(text(f"LOCK TABLE {table.name} IN ROW EXCLUSIVE MODE"))
    drawn = session.execute(
        text("SELECT nextval(pg_get_serial_sequence(:table, :column)) FROM generate_series(1, :n)"),
        {"table": table.name, "column": column, "n": count},
    )
    return [int(value) for (value,) in drawn]


def update_rows(session: Session, table: Table, key: Sequence[str], rows: Rows) -> None:
    """UPDATE each row of `table` found by its `key` columns with the row's other values,
    in one statement (all rows with the same keys)."""
    if not rows:
        return
    columns = tuple(rows[0])
    raw = _psycopg2(session)
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


def select_rows(
    session: Session,
    table: Table,
    key: Sequence[str],
    keys: Collection[tuple[Any, ...]],
    columns: Sequence[str],
    *,
    for_update: bool = False,
) -> list[tuple[Any, ...]]:
    """`columns` of the rows of `table` whose `key` columns equal one of `keys`, in key
    order; `for_update` locks them (in that order)."""
    if not keys:
        return []
    ordered = sorted(keys)
    raw = _psycopg2(session)
    if raw is not None:
        sql, template = _select_sql(table, tuple(key), tuple(columns), for_update)
        return _execute_values(raw, sql, template, ordered, True)
    stmt = (
        select(*(table.c[c] for c in columns))
        .where(tuple_(*(table.c[k] for k in key)).in_(ordered))
        .order_by(*(table.c[k] for k in key))
    )
    if for_update:
        stmt = stmt.with_for_update()
    return [tuple(row) for row in session.execute(stmt)]


def _with_defaults(table: Table, rows: Rows) -> Rows:
    """`rows` with the model's Python-side defaults (created_at, data, ...) filled in for
    the columns they leave out, as SQLAlchemy's own INSERT would."""
    given = rows[0].keys()
    missing = [
        c for c in table.c if c.key not in given and c.default is not None and not c.primary_key
    ]
    if not missing:
        return rows
    filled = []
    for row in rows:
        extra = {
            c.key: (c.default.arg(None) if c.default.is_callable else c.default.arg)  # type: ignore[union-attr]
            for c in missing
        }
        filled.append({**row, **extra})
    return filled


def _psycopg2(session: Session) -> Connection | None:
    """The session's connection if its driver is psycopg2."""
    connection = session.connection()
    return connection if connection.dialect.driver == "psycopg2" else None


@contextmanager
def _cursor(connection: Connection) -> Iterator[Any]:
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    finally:
        cursor.close()


@contextmanager
def _driver_errors(connection: Connection, statement: str) -> Iterator[None]:
    """Driver errors raised outside SQLAlchemy's execute, as SQLAlchemy raises them: a
    DBAPIError (deadlocks, disconnects: what callers retry or answer 503 for), with the
    pool discarded when the server dropped the connection."""
    dbapi = connection.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        dropped = connection.dialect.is_disconnect(exc, connection.connection, None)
        if dropped:
            connection.invalidate(exc)
        raise DBAPIError.instance(
            statement, None, exc, dbapi.Error, connection_invalidated=dropped
        ) from exc


def _execute_values(
    connection: Connection, sql: str, template: str, values: list[tuple[Any, ...]], fetch: bool
) -> list[tuple[Any, ...]]:
    """`sql` with its one `%s` replaced by every row's `template`, quoted by psycopg2 in
    one call, and run through SQLAlchemy (its error handling, its statement events)."""
    prefix, suffix = sql.split("%s")
    with _driver_errors(connection, sql), _cursor(connection) as cursor:
        rows = cursor.mogrify(
            ", ".join([template] * len(values)), [param for row in values for param in row]
        )
    # The values are quoted in already: no_parameters, so that the driver reads no `%`
    # in them as a placeholder.
    result = connection.exec_driver_sql(
        prefix + rows.decode() + suffix, execution_options={"no_parameters": True}
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
            (None if row[name] is None else orjson.dumps(row[name]).decode())
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
def _select_sql(
    table: Table, key: tuple[str, ...], columns: tuple[str, ...], for_update: bool
) -> tuple[str, str]:
    casts = _casts(table, key)
    match = " AND ".join(f"{table.name}.{k} = v.{k}::{casts[k]}" for k in key)
    sql = (
        f"SELECT {', '.join(f'{table.name}.{c}' for c in columns)} FROM {table.name} "
        f"JOIN (VALUES %s) AS v ({', '.join(key)}) ON {match} "
        f"ORDER BY {', '.join(f'{table.name}.{k}' for k in key)}"
    )
    if for_update:
        sql += f" FOR UPDATE OF {table.name}"
    return sql, "(" + ", ".join(["%s"] * len(key)) + ")"


def _casts(table: Table, columns: Sequence[str]) -> dict[str, str]:
    """Each column's PostgreSQL type: VALUES lists lose the types of their columns."""
    return {name: str(table.c[name].type.compile(dialect=_POSTGRESQL)) for name in columns}


@lru_cache(maxsize=64)
def _update_sql(
    table: Table, key: tuple[str, ...], columns: tuple[str, ...]
) -> tuple[str, str, Any]:
    template, encode = _encoder(table, columns)
    casts = _casts(table, columns)
    sets = ", ".join(f"{c} = v.{c}::{casts[c]}" for c in columns if c not in key)
    match = " AND ".join(f"{table.name}.{k} = v.{k}::{casts[k]}" for k in key)
    sql = (
        f"UPDATE {table.name} SET {sets} FROM (VALUES %s) AS v ({', '.join(columns)}) WHERE {match}"
    )
    return sql, template, encode
