"""Schema: the query language (`$expr`, `sort_by`) compiled to SQLAlchemy Core against
one table's fields. The calls query (query.py) uses one; feedback (feedback.py) another."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from imagegate.store._query_dialect import PerDialect, PerDialectTest, pg_path, prompt_search
from imagegate.store.query_terms import (
    CONVERT_KINDS,
    MAX_SORT_FIELDS,
    AsType,
    Kind,
    QueryError,
    capped,
    check_size,
    convert_to,
    field_path,
    is_null_literal,
    literal_kind,
    literal_value,
    op_and_arg,
)
from imagegate.store.tables import Timestamp, calls

COMPARISONS: dict[str, Callable[[Any, Any], sa.ColumnElement[bool]]] = {
    "$eq": lambda a, b: a == b, "$gt": lambda a, b: a > b, "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b, "$lte": lambda a, b: a <= b,
}  # fmt: skip
BOOLEAN_OPS = frozenset(("$and", "$or", "$not", "$in", "$contains", *COMPARISONS))
# JSON path segments safe to write into SQL as literals, so expression indexes (which
# name their paths literally) match. Any other segment stays a bind parameter.
LITERAL_SEGMENT = re.compile(r"[A-Za-z0-9_\-]{1,64}")
SQL_TYPES: dict[Kind, Any] = {
    "string": sa.String(), "number": sa.Float(), "bool": sa.Boolean(), "timestamp": Timestamp
}  # fmt: skip


def _path_part(part: str) -> str | int:
    """An array index (ASCII digits only: `isdigit` also takes "²") or an object key."""
    if not (part.isascii() and part.isdigit()):
        return part
    if len(part) > 9:
        raise QueryError(f"array index {part[:20]}... is too large")
    return int(part)


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
        for item in capped(sort_by, "sort_by", MAX_SORT_FIELDS):
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
        check_size(query["$expr"])
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
            return PerDialect(
                sa.cast(sa.func.json_extract(column, sqlite_path), sa.String()),
                pg_path(column, key, text=True),
                type_=sa.String(),
            )
        # Read only values of the wanted JSON type; anything else becomes NULL.
        sqlite_value = sa.func.json_extract(column, sqlite_path)
        sqlite_type = sa.func.json_type(column, sqlite_path)
        if literal:
            pg_text, pg_json = pg_path(column, key, text=True), pg_path(column, key, text=False)
        else:
            pg_text, pg_json = column[key].as_string(), column[key]
        pg_type = sa.func.jsonb_typeof(pg_json)
        if as_type == "bool":
            return PerDialect(
                sa.case((sqlite_type.in_(["true", "false"]), sqlite_value)),
                sa.case((pg_type == "boolean", sa.cast(pg_text, sa.Boolean))),
                type_=sa.Boolean(),
            )
        pg_number = sa.cast(pg_text, sa.Float)
        if as_type == "int":  # truncate toward zero on both (a bare PG cast would round)
            sqlite_value, pg_number = sa.cast(sqlite_value, sa.Integer), sa.func.trunc(pg_number)
        return PerDialect(
            sa.case((sqlite_type.in_(["integer", "real"]), sqlite_value)),
            sa.case((pg_type == "number", pg_number)),
            type_=sa.Float(),
        )

    def _operand(self, node: Any, kind: Kind, depth: int) -> sa.ColumnElement[Any]:
        """An operand as SQL of `kind`; with kind "bool" this is also any whole expression."""
        op, arg = op_and_arg(node, depth)
        if op == "$literal":
            return sa.literal(literal_value(arg, kind), SQL_TYPES[kind])
        if op == "$getField":
            path = field_path(arg)
            fixed = self._fixed_kind(path)
            if fixed not in (None, kind):
                raise QueryError(f"field {path!r} is a {fixed}; cannot use it as a {kind}")
            return self.field_expr(path) if fixed else self._json_field(path, kind)
        if op == "$convert":
            to = convert_to(arg)
            if CONVERT_KINDS[to] != kind:
                raise QueryError(f"$convert to {to!r} gives a {CONVERT_KINDS[to]}, not a {kind}")
            if to == "exists":
                return self._null_test(arg["input"], depth + 1, negate=True)
            source, path = op_and_arg(arg["input"], depth + 1)
            if source != "$getField":
                raise QueryError("$convert input must be a $getField")
            return self.field_expr(field_path(path), "int" if to == "int" else kind)
        if op not in BOOLEAN_OPS:
            raise QueryError(f"unknown query operator {op!r}")
        if kind != "bool":
            raise QueryError(f"a {op} expression is a boolean; cannot use it as a {kind}")
        if op in ("$and", "$or"):
            if not isinstance(arg, list):
                raise QueryError(f"{op} takes a list of expressions")
            terms = [self._operand(term, "bool", depth + 1) for term in capped(arg, op)]
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
        nulls = (is_null_literal(left, depth), is_null_literal(right, depth))
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
        for item in capped(haystack, "$in"):
            if is_null_literal(item, depth):
                terms.append(self._null_test(needle, depth))
            elif op_and_arg(item, depth + 1)[0] == "$literal":
                literals.append(item)
            else:
                terms.append(self._compare("$eq", needle, item, depth))
        if literals:  # one IN (...) list, typed by the needle or else the first value
            kind = self._common_kind(needle, literals[0], depth)
            values = [literal_value(item["$literal"], kind) for item in literals]
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
        op, arg = op_and_arg(spec["substr"], depth + 1)
        if op == "$literal":
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", literal_value(arg, "string")) + "%"
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
            sqlite = prompt_search(literal_value(arg, "string"), sqlite)
        return PerDialectTest(sqlite, pg, type_=sa.Boolean())

    def _common_kind(self, left: Any, right: Any, depth: int) -> Kind:
        """What two operands compare as: a typed side wins over a literal; default text."""
        kinds = [k for k in (self._intrinsic_kind(node, depth + 1) for node in (left, right)) if k]
        if len(set(kinds)) > 1:
            raise QueryError(f"cannot compare a {kinds[0]} with a {kinds[1]}")
        if kinds:
            return kinds[0]
        literals = [node["$literal"] for node in (left, right) if "$literal" in node]
        return literal_kind(literals[0]) if literals else "string"

    def _intrinsic_kind(self, node: Any, depth: int) -> Kind | None:
        op, arg = op_and_arg(node, depth)
        if op == "$getField":
            return self._fixed_kind(field_path(arg))
        if op == "$convert":
            return CONVERT_KINDS[convert_to(arg)]
        if op in BOOLEAN_OPS:
            return "bool"
        if op != "$literal":
            raise QueryError(f"unknown query operator {op!r}")
        return None

    def _null_test(self, node: Any, depth: int, negate: bool = False) -> sa.ColumnElement[bool]:
        kind = self._intrinsic_kind(node, depth) or "string"  # JSON paths: read as text
        value = self._operand(node, kind, depth + 1)
        return value.is_not(None) if negate else value.is_(None)


def _is_op(node: Any, op: str) -> bool:
    return isinstance(node, Mapping) and len(node) == 1 and op in node
