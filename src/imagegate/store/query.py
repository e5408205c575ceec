"""Weave's calls query language (`filter`, `query`, `sort_by`) as SQLAlchemy Core.

`query` is Mongo-like: `{"$expr": {"$gt": [{"$getField": "inputs.n"}, {"$literal": 2}]}}`.
It compiles to portable SQL for SQLite and PostgreSQL; the few constructs that must differ
go through `_PerDialect`, which carries both spellings and renders the right one.

Typing: a JSON path has no type of its own, so it is read as whatever the other side of
its comparison is (a literal's Python type, or a `$convert`). A JSON value of another type
reads as NULL, so it simply fails to match instead of erroring mid-query on PostgreSQL.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from imagegate.store.tables import MODEL_MAX, JSONType, Timestamp, calls, calls_prompt_fts

AsType = Literal["string", "number", "int", "bool", "any"]
Kind = Literal["string", "number", "bool", "timestamp"]  # what a comparison is done as

MAX_DEPTH = 32
MAX_ITEMS = 10_000  # longest list accepted: $in values, filter ids
# Operator objects in one query. Building and compiling cost ~30 µs each, on the event
# loop, and SQLite refuses an expression more than 1,000 deep (an $or of n terms is n
# deep): 300 keeps the largest query to a few ms and well inside both.
MAX_TERMS = 300
# Fields in one sort_by: each is an ORDER BY term (a JSON extraction for most), with the
# cost of a query term; 10,000 of them took 1.6 s to build and compile.
MAX_SORT_FIELDS = 32

# Fields with a type of their own; JSON paths take their type from the comparison.
FIELD_KINDS: dict[str, Kind] = {
    "id": "string", "project_id": "string", "op_name": "string", "display_name": "string",
    "trace_id": "string", "parent_id": "string", "exception": "string", "wb_user_id": "string",
    "thread_id": "string", "turn_id": "string", "wb_run_id": "string",
    "started_at": "timestamp", "ended_at": "timestamp",
    "summary.weave.status": "string", "summary.weave.latency_ms": "number",  # derived
}  # fmt: skip
JSON_COLUMNS = frozenset(("inputs", "output", "attributes", "summary"))
FILTER_COLUMNS = {
    "op_names": "op_name", "call_ids": "id", "trace_ids": "trace_id",
    "parent_ids": "parent_id", "wb_user_ids": "wb_user_id", "thread_ids": "thread_id",
    "turn_ids": "turn_id", "wb_run_ids": "wb_run_id",
}  # fmt: skip
REF_FILTERS = {"input_refs": "inputs", "output_refs": "output"}  # calls naming any of these
COMPARISONS: dict[str, Callable[[Any, Any], sa.ColumnElement[bool]]] = {
    "$eq": lambda a, b: a == b, "$gt": lambda a, b: a > b, "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b, "$lte": lambda a, b: a <= b,
}  # fmt: skip
BOOLEAN_OPS = frozenset(("$and", "$or", "$not", "$in", "$contains", *COMPARISONS))
CONVERT_KINDS: dict[str, Kind] = {
    "double": "number", "int": "number", "bool": "bool", "string": "string", "exists": "bool"
}  # fmt: skip
LITERAL_KINDS: dict[type, Kind] = {str: "string", int: "number", float: "number", bool: "bool"}
# Calls' columns that are never NULL: sorting them needs no NULLS LAST, which PostgreSQL
# would otherwise not match to an index's scan order (it ignores NOT NULL when matching).
CALLS_NOT_NULL = frozenset(
    ("id", "project_id", "op_name", "trace_id", "started_at", "summary.weave.status")
)
# JSON path segments safe to write into SQL as literals, so expression indexes (which
# name their paths literally) match. Any other segment stays a bind parameter.
LITERAL_SEGMENT = re.compile(r"[A-Za-z0-9_\-]{1,64}")
SQL_TYPES: dict[Kind, Any] = {
    "string": sa.String(), "number": sa.Float(), "bool": sa.Boolean(), "timestamp": Timestamp
}  # fmt: skip


class QueryError(ValueError):
    """A query the caller got wrong; the message says what (becomes HTTP 400)."""


def calls_where(
    project_id: str, filter: Mapping[str, Any] | None, query: Mapping[str, Any] | None
) -> sa.ColumnElement[bool]:
    """The WHERE clause for a calls query: always scoped to one project's live calls."""
    terms = [calls.c.project_id == project_id, calls.c.deleted_at.is_(None)]
    filter = filter or {}
    for key, column in FILTER_COLUMNS.items():
        if values := filter.get(key):  # Weave treats None and [] alike: no filter
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise QueryError(f"filter.{key} must be a list of strings")
            terms.append(calls.c[column].in_(_capped(values, f"filter.{key}")))
    for key, column in REF_FILTERS.items():
        if refs := filter.get(key):
            if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
                raise QueryError(f"filter.{key} must be a list of strings")
            # A ref is a whole JSON string in the stored value: its quoted form, matched
            # literally in the JSON text, finds exactly that string.
            text = sa.cast(calls.c[column], sa.Text)
            quoted = [json.dumps(r) for r in _capped(refs, key)]
            terms.append(sa.or_(*(text.contains(q, autoescape=True) for q in quoted)))
    if filter.get("trace_roots_only") not in (None, True, False):
        raise QueryError("filter.trace_roots_only must be a boolean")
    if filter.get("trace_roots_only"):
        terms.append(calls.c.parent_id.is_(None))
    if query is not None:
        terms.append(CALLS.expression(query))
    return sa.and_(*terms)


def _check_size(expr: Any) -> None:
    """Refuse a query of more than MAX_TERMS operator objects before any work on it.
    A `{"$literal": [...]}` list is one term: it becomes one flat IN (...)."""
    count, stack = 0, [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            count += 1
            if count > MAX_TERMS:
                raise QueryError(
                    f"query has more than {MAX_TERMS} terms; split it or use $in with a list"
                )
            stack.extend(v for k, v in node.items() if k != "$literal")
        elif isinstance(node, list):
            if len(node) > MAX_ITEMS:
                raise QueryError(f"a list has {len(node)} items; at most {MAX_ITEMS} allowed")
            stack.extend(node)


def _path_part(part: str) -> str | int:
    """An array index (ASCII digits only: `isdigit` also takes "²") or an object key."""
    if not (part.isascii() and part.isdigit()):
        return part
    if len(part) > 9:
        raise QueryError(f"array index {part[:20]}... is too large")
    return int(part)


def calls_order_by(sort_by: Sequence[Mapping[str, Any]] | None) -> list[sa.ColumnElement[Any]]:
    """ORDER BY terms; `id` always ends the list so limit/offset paging is stable.

    Newest first is then `started_at DESC, id`: exactly the order of the indexes on
    (..., started_at DESC, id) that migration 0009 adds.
    """
    return CALLS.order_by(sort_by, default="started_at", unique="id")


def calls_before(started_at: datetime, call_id: str) -> sa.ColumnElement[bool]:
    """Keyset paging for newest-first reads (`started_at DESC, id`): the calls after the
    one at (started_at, id). Both backends seek ix_calls_live_started to the cursor by
    `started_at <=`, so page 10,000 costs what page 1 does (OFFSET walks every skipped
    row); the `id` term only sorts out calls started in the same instant.
    """
    at = sa.literal(started_at, Timestamp)
    return sa.and_(
        calls.c.started_at <= at,
        sa.or_(calls.c.started_at < at, calls.c.id > sa.literal(call_id, sa.String())),
    )


def _status() -> sa.ColumnElement[str]:
    return calls.c.status  # generated by the database from exception and ended_at


def _latency_ms() -> sa.ColumnElement[float]:
    # Whole ms, like the wire form; NULL while running. SQLite holds naive UTC text.
    started, ended = calls.c.started_at, calls.c.ended_at
    return _PerDialect(
        sa.func.round((sa.func.julianday(ended) - sa.func.julianday(started)) * 86_400_000.0),
        sa.cast(sa.func.round(sa.extract("epoch", ended - started) * 1000), sa.Float),
        type_=sa.Float(),
    )


_DERIVED = {"summary.weave.status": _status, "summary.weave.latency_ms": _latency_ms}


class Schema:
    """What a query can name in one table: typed columns, JSON columns (paths into them
    take their type from the comparison) and derived fields. The calls query language
    compiles against one; feedback queries against another."""

    def __init__(
        self,
        table: sa.Table,
        field_kinds: Mapping[str, Kind],
        json_columns: frozenset[str],
        derived: Mapping[str, Callable[[], sa.ColumnElement[Any]]] | None = None,
        not_null: frozenset[str] = frozenset(),
        copies: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        self.table = table
        self.field_kinds = field_kinds
        self.json_columns = json_columns
        self.derived = derived or {}
        self.not_null = not_null
        # JSON paths the table also keeps as a text column (path: column, longest
        # value kept); an equality with a string that fits reads the column.
        self.copies = copies or {}

    def order_by(
        self, sort_by: Sequence[Mapping[str, Any]] | None, *, default: str, unique: str
    ) -> list[sa.ColumnElement[Any]]:
        """ORDER BY terms (`default` ascending when none are given); the `unique` column
        always ends the list, so limit/offset paging is stable."""
        tiebreak = self.table.c[unique].asc()
        if not sort_by:
            return [self.table.c[default].asc(), tiebreak]
        if isinstance(sort_by, str | Mapping) or not isinstance(sort_by, Sequence):
            raise QueryError("sort_by must be a list of {field, direction} objects")
        order = []
        for item in _capped(sort_by, "sort_by", MAX_SORT_FIELDS):
            field = item.get("field") if isinstance(item, Mapping) else None
            if not isinstance(field, str):
                raise QueryError("each sort_by entry needs a string 'field'")
            direction = item.get("direction", "asc")
            if direction not in ("asc", "desc"):
                raise QueryError(f"invalid sort direction {direction!r}; use 'asc' or 'desc'")
            # JSON paths sort by their text; NULLs go last both ways, on both backends.
            expr = self.field_expr(field, "any" if self._fixed_kind(field) else "string")
            term = expr.asc() if direction == "asc" else expr.desc()
            order.append(term if field in self.not_null else term.nulls_last())
        if not any(item.get("field") == unique for item in sort_by):
            order.append(tiebreak)
        return order

    def expression(self, query: Mapping[str, Any]) -> sa.ColumnElement[bool]:
        """A `{"$expr": ...}` query as a boolean SQL expression."""
        if not isinstance(query, Mapping) or set(query) != {"$expr"}:
            raise QueryError('query must be an object with exactly one key, "$expr"')
        _check_size(query["$expr"])
        return self._operand(query["$expr"], "bool", 1)

    def field_expr(self, path: str, as_type: AsType = "any") -> sa.ColumnElement[Any]:
        """The SQL for a field path: a column, a derived value, or a path into a JSON column.

        JSON paths split on every ".", so a key that itself contains a dot (a model name like
        "gpt-image-1.5" used as a key) cannot be addressed: an accepted limitation. All-digit
        parts index arrays (`output.data.0.url`). `as_type` casts a typed field ($convert).
        """
        kind = self._fixed_kind(path)
        if kind is None:
            return self._json_field(path, as_type)
        expr = self.derived[path]() if path in self.derived else self.table.c[path]
        if as_type in ("any", kind):
            return expr
        return sa.cast(expr, sa.BigInteger if as_type == "int" else SQL_TYPES[as_type])

    def _fixed_kind(self, path: str) -> Kind | None:
        if path in self.field_kinds:
            return self.field_kinds[path]
        if path.partition(".")[0] in self.json_columns:
            return None
        raise QueryError(f"unknown field {path!r}")

    def _json_field(self, path: str, as_type: AsType | Kind) -> sa.ColumnElement[Any]:
        name, _, rest = path.partition(".")
        parts = rest.split(".")
        if not rest or "" in parts or any('"' in p for p in parts):
            raise QueryError(f"invalid field path {path!r}; expected e.g. '{name}.key'")
        if as_type == "timestamp":
            raise QueryError(f"cannot compare JSON field {path!r} with a timestamp")
        column = self.table.c[name]
        key = tuple(_path_part(p) for p in parts)
        literal = all(LITERAL_SEGMENT.fullmatch(p) for p in parts)
        if as_type == "any":
            return column[key]
        sqlite_path: Any = "$" + "".join(f"[{p}]" if isinstance(p, int) else f'."{p}"' for p in key)
        if literal:  # only [A-Za-z0-9_-] characters: nothing to quote or escape
            sqlite_path = sa.literal_column(f"'{sqlite_path}'")
        if as_type == "string":  # as text, JSON null and a missing key are both NULL
            if not literal:
                return column[key].as_string()
            return _PerDialect(
                sa.cast(sa.func.json_extract(column, sqlite_path), sa.String()),
                _pg_path(column, key, text=True),
                type_=sa.String(),
            )
        # Read only values of the wanted JSON type; anything else becomes NULL.
        sqlite_value = sa.func.json_extract(column, sqlite_path)
        sqlite_type = sa.func.json_type(column, sqlite_path)
        if literal:
            pg_text, pg_json = _pg_path(column, key, text=True), _pg_path(column, key, text=False)
        else:
            pg_text, pg_json = column[key].as_string(), column[key]
        pg_type = sa.func.jsonb_typeof(pg_json)
        if as_type == "bool":
            return _PerDialect(
                sa.case((sqlite_type.in_(["true", "false"]), sqlite_value)),
                sa.case((pg_type == "boolean", sa.cast(pg_text, sa.Boolean))),
                type_=sa.Boolean(),
            )
        pg_number = sa.cast(pg_text, sa.Float)
        if as_type == "int":  # truncate toward zero on both (a bare PG cast would round)
            sqlite_value, pg_number = sa.cast(sqlite_value, sa.Integer), sa.func.trunc(pg_number)
        return _PerDialect(
            sa.case((sqlite_type.in_(["integer", "real"]), sqlite_value)),
            sa.case((pg_type == "number", pg_number)),
            type_=sa.Float(),
        )

    def _operand(self, node: Any, kind: Kind, depth: int) -> sa.ColumnElement[Any]:
        """An operand as SQL of `kind`; with kind "bool" this is also any whole expression."""
        op, arg = _op(node, depth)
        if op == "$literal":
            return sa.literal(_value(arg, kind), SQL_TYPES[kind])
        if op == "$getField":
            path = _path(arg)
            fixed = self._fixed_kind(path)
            if fixed not in (None, kind):
                raise QueryError(f"field {path!r} is a {fixed}; cannot use it as a {kind}")
            return self.field_expr(path) if fixed else self._json_field(path, kind)
        if op == "$convert":
            to = _convert_to(arg)
            if CONVERT_KINDS[to] != kind:
                raise QueryError(f"$convert to {to!r} gives a {CONVERT_KINDS[to]}, not a {kind}")
            if to == "exists":
                return self._null_test(arg["input"], depth + 1, negate=True)
            source, path = _op(arg["input"], depth + 1)
            if source != "$getField":
                raise QueryError("$convert input must be a $getField")
            return self.field_expr(_path(path), "int" if to == "int" else kind)
        if op not in BOOLEAN_OPS:
            raise QueryError(f"unknown query operator {op!r}")
        if kind != "bool":
            raise QueryError(f"a {op} expression is a boolean; cannot use it as a {kind}")
        if op in ("$and", "$or"):
            if not isinstance(arg, list):
                raise QueryError(f"{op} takes a list of expressions")
            terms = [self._operand(term, "bool", depth + 1) for term in _capped(arg, op)]
            if not terms:
                return sa.true() if op == "$and" else sa.false()
            return sa.and_(*terms) if op == "$and" else sa.or_(*terms)
        if op == "$not":
            if not isinstance(arg, list) or len(arg) != 1:
                raise QueryError("$not takes a list of exactly one expression")
            # Unknown (NULL, e.g. a missing key) negates to true, as a reader would expect.
            return sa.not_(sa.func.coalesce(self._operand(arg[0], "bool", depth + 1), sa.false()))
        if op == "$contains":
            return self._contains(arg, depth)
        if not isinstance(arg, list) or len(arg) != 2:
            raise QueryError(f"{op} takes a list of exactly two operands")
        return self._in(*arg, depth) if op == "$in" else self._compare(op, *arg, depth)

    def _compare(self, op: str, left: Any, right: Any, depth: int) -> sa.ColumnElement[bool]:
        nulls = (_is_null(left, depth), _is_null(right, depth))
        if any(nulls):
            if op != "$eq":
                raise QueryError(f"{op} cannot compare with null")
            return sa.true() if all(nulls) else self._null_test(right if nulls[0] else left, depth)
        if op == "$eq" and (copy := self._copy_equal(left, right)) is not None:
            return copy
        kind = self._common_kind(left, right, depth)
        return COMPARISONS[op](
            self._operand(left, kind, depth + 1), self._operand(right, kind, depth + 1)
        )

    def _copy_equal(self, left: Any, right: Any) -> sa.ColumnElement[bool] | None:
        """`path == "text"` on a copied path, as `column == "text"`: the same calls (the
        column is the path's text whenever that fits, and a longer text cannot equal
        one that fits), read from the column's index."""
        for field, literal in ((left, right), (right, left)):
            if not (_is_op(field, "$getField") and _is_op(literal, "$literal")):
                continue
            path, value = field["$getField"], literal["$literal"]
            if isinstance(path, str) and path in self.copies and isinstance(value, str):
                column, longest = self.copies[path]
                if len(value) <= longest:
                    return self.table.c[column] == sa.literal(value, sa.String())
        return None

    def _in(self, needle: Any, haystack: Any, depth: int) -> sa.ColumnElement[bool]:
        if isinstance(haystack, Mapping) and isinstance(haystack.get("$literal"), list):
            haystack = [{"$literal": value} for value in haystack["$literal"]]
        if not isinstance(haystack, list):
            raise QueryError("$in takes [operand, [operands...]]")
        terms: list[sa.ColumnElement[bool]] = []
        literals: list[Mapping[str, Any]] = []
        for item in _capped(haystack, "$in"):
            if _is_null(item, depth):
                terms.append(self._null_test(needle, depth))
            elif _op(item, depth + 1)[0] == "$literal":
                literals.append(item)
            else:
                terms.append(self._compare("$eq", needle, item, depth))
        if literals:  # one IN (...) list, typed by the needle or else the first value
            kind = self._common_kind(needle, literals[0], depth)
            values = [_value(item["$literal"], kind) for item in literals]
            terms.append(self._operand(needle, kind, depth + 1).in_(values))
        return sa.or_(*terms) if terms else sa.false()

    def _contains(self, spec: Any, depth: int) -> sa.ColumnElement[bool]:
        keys = set(spec) if isinstance(spec, Mapping) else set()
        if not {"input", "substr"} <= keys <= {"input", "substr", "case_insensitive"}:
            raise QueryError("$contains takes {input, substr, case_insensitive?}")
        if spec.get("case_insensitive") not in (None, True, False):
            raise QueryError("$contains case_insensitive must be a boolean")
        text = self._operand(spec["input"], "string", depth + 1)
        substr = self._operand(spec["substr"], "string", depth + 1)
        insensitive = bool(spec.get("case_insensitive"))
        # A position search takes every character literally, so there are no LIKE wildcards
        # to escape, and it is case-sensitive on both backends (SQLite's LIKE never is).
        # PostgreSQL: a literal substring becomes (I)LIKE with its wildcards escaped, which
        # a trigram index (ix_calls_live_prompt_trgm) serves; the result is the same.
        op, arg = _op(spec["substr"], depth + 1)
        if op == "$literal":
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", _value(arg, "string")) + "%"
            like = text.ilike if insensitive else text.like
            pg: sa.ColumnElement[bool] = like(sa.literal(pattern, sa.String()), escape="\\")
        elif insensitive:
            pg = sa.func.strpos(sa.func.lower(text), sa.func.lower(substr)) > 0
        else:
            pg = sa.func.strpos(text, substr) > 0
        if insensitive:
            text, substr = sa.func.lower(text), sa.func.lower(substr)
        sqlite = sa.func.instr(text, substr) > 0
        prompt = self.table is calls and spec["input"] == {"$getField": "inputs.prompt"}
        if op == "$literal" and prompt:
            sqlite = _prompt_search(_value(arg, "string"), sqlite)
        return _PerDialectTest(sqlite, pg, type_=sa.Boolean())

    def _common_kind(self, left: Any, right: Any, depth: int) -> Kind:
        """What two operands compare as: a typed side wins over a literal; default text."""
        kinds = [k for k in (self._intrinsic_kind(node, depth + 1) for node in (left, right)) if k]
        if len(set(kinds)) > 1:
            raise QueryError(f"cannot compare a {kinds[0]} with a {kinds[1]}")
        if kinds:
            return kinds[0]
        literals = [node["$literal"] for node in (left, right) if "$literal" in node]
        return _literal_kind(literals[0]) if literals else "string"

    def _intrinsic_kind(self, node: Any, depth: int) -> Kind | None:
        op, arg = _op(node, depth)
        if op == "$getField":
            return self._fixed_kind(_path(arg))
        if op == "$convert":
            return CONVERT_KINDS[_convert_to(arg)]
        if op in BOOLEAN_OPS:
            return "bool"
        if op != "$literal":
            raise QueryError(f"unknown query operator {op!r}")
        return None

    def _null_test(self, node: Any, depth: int, negate: bool = False) -> sa.ColumnElement[bool]:
        kind = self._intrinsic_kind(node, depth) or "string"  # JSON paths: read as text
        value = self._operand(node, kind, depth + 1)
        return value.is_not(None) if negate else value.is_(None)


CALLS = Schema(
    calls,
    FIELD_KINDS,
    JSON_COLUMNS,
    _DERIVED,
    not_null=CALLS_NOT_NULL,
    copies={"inputs.model": ("model", MODEL_MAX)},
)
field_expr = CALLS.field_expr


def _pg_path(
    column: sa.Column[Any], key: tuple[str | int, ...], *, text: bool
) -> sa.ColumnElement[Any]:
    """`column ->> 'key'` (or `#>> '{a,b}'`) with the path written literally, as an
    expression index names it. Only for segments LITERAL_SEGMENT accepted."""
    if len(key) == 1 and isinstance(key[0], str):
        op, path = ("->>" if text else "->"), f"'{key[0]}'"
    else:
        op, path = ("#>>" if text else "#>"), "'{" + ",".join(str(p) for p in key) + "}'"
    return column.op(op, return_type=sa.String() if text else JSONType)(sa.literal_column(path))


def _prompt_search(substr: str, exact: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
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


def _is_op(node: Any, op: str) -> bool:
    return isinstance(node, Mapping) and len(node) == 1 and op in node


def _literal_kind(value: Any) -> Kind:
    kind = LITERAL_KINDS.get(type(value))  # exact types: bool is not a number here
    if kind is None:
        raise QueryError(f"unsupported literal {value!r} (lists only in $in)")
    return kind


def _value(value: Any, kind: Kind) -> Any:
    """A literal as a bind value of `kind`; a literal of another type is an error."""
    if kind == "timestamp":
        return _parse_time(value)
    if _literal_kind(value) != kind:
        raise QueryError(f"cannot compare a {kind} with {value!r}")
    if kind == "number":
        try:
            number = float(value)  # an int past a double's range raises OverflowError
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise QueryError(f"invalid number {str(value)[:40]!r}: out of range")
        return number
    return value


def _parse_time(value: Any) -> datetime:
    """An ISO-8601 string (naive means UTC) or epoch seconds, as Weave monitors send."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        parsed = datetime.fromisoformat(value)  # accepts a trailing "Z" from 3.11
        # In UTC, as stored: 0001-01-01T00:00:00+01:00 has no UTC form and is refused here.
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise QueryError(f"invalid timestamp {value!r:.64}; expected ISO-8601") from exc


def _op(node: Any, depth: int) -> tuple[str, Any]:
    if depth > MAX_DEPTH:
        raise QueryError(f"query nested deeper than {MAX_DEPTH} levels")
    if not isinstance(node, Mapping) or len(node) != 1:
        raise QueryError(f"expected an operator object like {{'$eq': [...]}}, got {node!r}")
    return next(iter(node.items()))


def _is_null(node: Any, depth: int) -> bool:
    return _op(node, depth + 1) == ("$literal", None)


def _path(arg: Any) -> str:
    if not isinstance(arg, str) or not arg:
        raise QueryError(f"$getField takes a field path string, got {arg!r}")
    return arg


def _convert_to(arg: Any) -> str:
    if not isinstance(arg, Mapping) or set(arg) != {"input", "to"}:
        raise QueryError("$convert takes {input, to}")
    if arg["to"] not in CONVERT_KINDS:
        raise QueryError(f"$convert cannot convert to {arg['to']!r}")
    return str(arg["to"])


def _capped(items: Sequence[Any], what: str, limit: int = MAX_ITEMS) -> Sequence[Any]:
    if len(items) > limit:
        raise QueryError(f"{what} has {len(items)} items; at most {limit} allowed")
    return items


class _PerDialect(FunctionElement[Any]):
    """Renders its first argument on SQLite and its second elsewhere (PostgreSQL)."""

    inherit_cache = True

    def __init__(self, sqlite: Any, postgresql: Any, *, type_: Any) -> None:
        super().__init__(sqlite, postgresql)
        self.type = type_


class _PerDialectTest(_PerDialect):
    """A _PerDialect that is a whole boolean test: written bare in WHERE, not as
    `(...) = 1` on SQLite, so SQLite's planner sees its terms (a rowid IN list)."""

    inherit_cache = True
    _is_implicitly_boolean = True


@compiles(_PerDialect, "sqlite")
def _render_sqlite(element: _PerDialect, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.clauses.clauses[0], **kw)})"


@compiles(_PerDialect)  # PostgreSQL, and the default dialect that str(stmt) uses
def _render_other(element: _PerDialect, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.clauses.clauses[1], **kw)})"
