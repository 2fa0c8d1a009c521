"""Many rows in one statement: the drain's writes, cheap on PostgreSQL.

A drain of 200 gameplay events writes thousands of rows (history, period rows,
rewards, ledger entries). Through SQLAlchemy each such statement is compiled anew
(a multi-row VALUES cannot be cached) or sent row by row, and its per-row parameter
handling cost more than PostgreSQL's own work (docs/performance.md). On psycopg2,
`insert_rows`, `update_rows` and `select_rows` build their SQL once per shape and send
the rows as one array literal per column, unnested by the server (`unnest($1::bigint[],
...)`): a few long strings that PostgreSQL's array input reads far faster than it
parses, analyses and plans a VALUES list of thousands of literals, and that the client
builds with string joins instead of quoting every value. On any other driver (the
embedded SQLite file) they run the equivalent SQLAlchemy Core statement. Same SQL
meaning on both: one statement, ON CONFLICT on the named unique columns, RETURNING the
named columns.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
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
        sql, arrays = _insert_sql(
            table,
            columns,
            tuple(conflict),
            conflict_where,
            tuple(sorted((set_on_conflict or {}).items())),
            tuple(returning),
        )
        return _execute_arrays(raw, sql, arrays, [[row[c] for row in rows] for c in columns])
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
    columns = tuple(rows[0])
    fields = [
        _fields(fmt, [row[name] for row in rows]) for name, fmt in _copy_formats(table, columns)
    ]
    for column in _defaulted(table, columns):
        columns += (column.key,)
        fields.append(
            _fields(_copy_formats(table, (column.key,))[0][1], _default_values(column, len(rows)))
        )
    text = "\n".join(map("\t".join, zip(*fields, strict=True))) + "\n"
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    with _driver_errors(raw, statement), _cursor(raw) as cursor:
        cursor.copy_expert(statement, io.StringIO(text))


_UNSET = object()


def _fields(encode: Callable[[Any], str], values: Sequence[Any]) -> list[str]:
    """`encode` of each value, encoded once per run of the same object: a column of a
    drain's rows repeats its values (one `now`, one user's id, one quest's bundle)."""
    fields: list[str] = []
    last: Any = _UNSET
    field = ""
    for value in values:
        if value is not last:
            last, field = value, encode(value)
        fields.append(field)
    return fields


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
        sql, arrays = _update_sql(table, tuple(key), columns)
        _execute_arrays(raw, sql, arrays, [[row[c] for row in rows] for c in columns])
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
        sql, arrays = _select_sql(table, tuple(key), tuple(columns), for_update)
        by_column = [[k[i] for k in ordered] for i in range(len(key))]
        return _execute_arrays(raw, sql, arrays, by_column)
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
    missing = _defaulted(table, tuple(rows[0]))
    if not missing:
        return rows
    extra = {c.key: _default_values(c, len(rows)) for c in missing}
    return [{**row, **{k: v[i] for k, v in extra.items()}} for i, row in enumerate(rows)]


def _defaulted(table: Table, given: Collection[str]) -> list[Any]:
    """The columns of `table` left out of `given` that have a Python-side default."""
    return [
        c for c in table.c if c.key not in given and c.default is not None and not c.primary_key
    ]


def _default_values(column: Any, count: int) -> list[Any]:
    """`count` values of the column's Python-side default (called once per row if it is
    a function, as SQLAlchemy's own INSERT would)."""
    default = column.default
    if default.is_callable:
        return [default.arg(None) for _ in range(count)]
    return [default.arg] * count


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


def _execute_arrays(
    connection: Connection, sql: str, arrays: _Arrays, columns: list[list[Any]]
) -> list[tuple[Any, ...]]:
    """`sql` with its one `%s` replaced by `unnest(...)` of one array literal per column,
    and run through SQLAlchemy (its error handling, its statement events). Returns the
    rows it returned (none for a statement without RETURNING)."""
    prefix, suffix = sql.split("%s")
    literals = [
        "{" + ",".join(_fields(element, values)) + "}"
        for element, values in zip(arrays.elements, columns, strict=True)
    ]
    with _driver_errors(connection, sql), _cursor(connection) as cursor:
        unnest = cursor.mogrify(arrays.template, literals)
    # The values are quoted in already: no_parameters, so that the driver reads no `%`
    # in them as a placeholder.
    result = connection.exec_driver_sql(
        prefix + unnest.decode() + suffix, execution_options={"no_parameters": True}
    )
    return [tuple(row) for row in result] if result.returns_rows else []


class _Arrays:
    """How the columns of a statement travel: `template` is `unnest(%s::bigint[], ...)`
    (one placeholder per column), `elements` per column turns a value into its element
    of a PostgreSQL array literal."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        types = _casts(table, columns, unbounded=True)
        self.template = "unnest(" + ", ".join(f"%s::{types[c]}[]" for c in columns) + ")"
        self.elements: list[Callable[[Any], str]] = [
            _json_element if isinstance(table.c[c].type, JSON) else _element for c in columns
        ]


def _quoted(text: str) -> str:
    """A string as a double-quoted array element (quoted always: "", NULL and text with
    commas, braces or spaces are elements too)."""
    if "\\" in text or '"' in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text + '"'


_NUMBERS = (int, Decimal, float)
_DATES = (datetime, date)


def _element(value: Any) -> str:
    """A value as an array element: numbers bare, NULL for None, anything else quoted."""
    if type(value) is int:
        return str(value)
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, _NUMBERS):
        return str(value)
    if isinstance(value, _DATES):
        return '"' + value.isoformat() + '"'
    return _quoted(str(value))


def _json_element(value: Any) -> str:
    """A JSON value (None is SQL NULL, as in the JSON columns' other writers) as an
    array element of jsonb."""
    return "NULL" if value is None else _quoted(orjson.dumps(value).decode())


@lru_cache(maxsize=64)
def _insert_sql(
    table: Table,
    columns: tuple[str, ...],
    conflict: tuple[str, ...],
    conflict_where: str | None,
    set_on_conflict: tuple[tuple[str, str], ...],
    returning: tuple[str, ...],
) -> tuple[str, _Arrays]:
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM %s"
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
    return sql, _Arrays(table, columns)


@lru_cache(maxsize=64)
def _select_sql(
    table: Table, key: tuple[str, ...], columns: tuple[str, ...], for_update: bool
) -> tuple[str, _Arrays]:
    match = " AND ".join(f"{table.name}.{k} = v.{k}" for k in key)
    sql = (
        f"SELECT {', '.join(f'{table.name}.{c}' for c in columns)} FROM {table.name} "
        f"JOIN %s AS v ({', '.join(key)}) ON {match} "
        f"ORDER BY {', '.join(f'{table.name}.{k}' for k in key)}"
    )
    if for_update:
        sql += f" FOR UPDATE OF {table.name}"
    return sql, _Arrays(table, key)


def _casts(table: Table, columns: Sequence[str], *, unbounded: bool = False) -> dict[str, str]:
    """Each column's PostgreSQL type; `unbounded` without its length or precision (an
    explicit cast to VARCHAR(n) would cut a long string short where the assignment to
    the column refuses it)."""
    casts = {name: str(table.c[name].type.compile(dialect=_POSTGRESQL)) for name in columns}
    if unbounded:
        casts = {name: re.sub(r"\(.*?\)", "", cast) for name, cast in casts.items()}
    return casts


@lru_cache(maxsize=64)
def _update_sql(
    table: Table, key: tuple[str, ...], columns: tuple[str, ...]
) -> tuple[str, _Arrays]:
    sets = ", ".join(f"{c} = v.{c}" for c in columns if c not in key)
    match = " AND ".join(f"{table.name}.{k} = v.{k}" for k in key)
    sql = f"UPDATE {table.name} SET {sets} FROM %s AS v ({', '.join(columns)}) WHERE {match}"
    return sql, _Arrays(table, columns)
