"""The SQL that differs between SQLite and PostgreSQL: one expression carrying both
spellings, and the paths and searches only one of them has. Internal to the query compiler."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from imagegate.store.tables import JSONType, calls_prompt_fts


def pg_path(
    column: sa.Column[Any], key: tuple[str | int, ...], *, text: bool
) -> sa.ColumnElement[Any]:
    """`column ->> 'key'` (or `#>> '{a,b}'`) with the path written literally, as an
    expression index names it. Only for segments LITERAL_SEGMENT accepted."""
    if len(key) == 1 and isinstance(key[0], str):
        op, path = ("->>" if text else "->"), f"'{key[0]}'"
    else:
        op, path = ("#>>" if text else "#>"), "'{" + ",".join(str(p) for p in key) + "}'"
    return column.op(op, return_type=sa.String() if text else JSONType)(sa.literal_column(path))


def prompt_search(substr: str, exact: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    """SQLite: `exact`, narrowed first to the calls calls_prompt_fts says can match.

    Its trigram LIKE is case-insensitive, so it finds a superset of either kind of
    match; it needs 3 characters, and has no escape for LIKE's wildcards, so a shorter
    substring or one holding % or _ is searched by `exact` alone.
    """
    if len(substr) < 3 or "%" in substr or "_" in substr:
        return exact
    candidates = sa.select(calls_prompt_fts.c.rowid).where(
        calls_prompt_fts.c.prompt.like(sa.literal(f"%{substr}%", sa.String()))
    )
    # By rowid: SQLite then reads the few candidates by rowid instead of walking the
    # sort's index and probing each call.
    return sa.and_(sa.literal_column("calls.rowid").in_(candidates), exact)


class PerDialect(FunctionElement[Any]):
    """Renders its first argument on SQLite and its second elsewhere (PostgreSQL)."""

    inherit_cache = True

    def __init__(self, sqlite: Any, postgresql: Any, *, type_: Any) -> None:
        super().__init__(sqlite, postgresql)
        self.type = type_


class PerDialectTest(PerDialect):
    """A PerDialect that is a whole boolean test: written bare in WHERE, not as
    `(...) = 1` on SQLite, so SQLite's planner sees its terms (a rowid IN list)."""

    inherit_cache = True
    _is_implicitly_boolean = True


@compiles(PerDialect, "sqlite")
def _render_sqlite(element: PerDialect, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.clauses.clauses[0], **kw)})"


@compiles(PerDialect)  # PostgreSQL, and the default dialect that str(stmt) uses
def _render_other(element: PerDialect, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.clauses.clauses[1], **kw)})"
