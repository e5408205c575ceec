"""Running statements whose shape a caller chose (a Weave query, a sort): compiled off the
event loop, and never cached engine-wide.

SQLAlchemy compiles a statement inside `execute`, on the event loop: at the query size
cap (300 terms) generating its cache key and compiling it take 20-40 ms of the loop's
time, during which no other request is served. Here both run in a worker thread, into a
cache that lives only as long as the caller keeps it (one stream's pages); `execute`
then finds the compiled form and only binds the values. The engine-wide cache is left
to the service's own statements: query shapes are unbounded, and each would stay there.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.engine import Dialect, Result
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import compiler
from sqlalchemy.sql.expression import Executable

CompiledCache = dict[Any, Any]


async def execute_off_loop(
    conn: AsyncConnection, stmt: Executable, cache: CompiledCache | None = None
) -> Result[Any]:
    """`conn.execute(stmt)`, with `stmt` compiled in a worker thread into `cache` (a new
    one unless given: pass the same dict for the pages of one query)."""
    cache = {} if cache is None else cache
    await asyncio.to_thread(_compile_into, stmt, conn.dialect, cache)
    return await conn.execute(stmt, execution_options={"compiled_cache": cache})


def _compile_into(stmt: Executable, dialect: Dialect, cache: CompiledCache) -> None:
    # What Connection.execute does for a statement without parameters, with the same
    # arguments, so that its cache lookup for `stmt` hits (the statement memoizes its
    # cache key, which is as costly as the compilation). SQLAlchemy has no public call
    # for this; tests/security/test_query_limits.py fails if the lookup ever misses.
    stmt._compile_w_cache(  # type: ignore[attr-defined]
        dialect,
        compiled_cache=cache,
        column_keys=[],
        for_executemany=False,
        schema_translate_map=None,
        linting=dialect.compiler_linting | compiler.WARN_LINTING,
    )
