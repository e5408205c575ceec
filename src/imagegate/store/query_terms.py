"""The query language's terms read and checked: its limits, QueryError, and one operator
object or literal at a time. Apart from the compiler (query_schema.py): no SQL here."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

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

CONVERT_KINDS: dict[str, Kind] = {
    "double": "number", "int": "number", "bool": "bool", "string": "string", "exists": "bool"
}  # fmt: skip
LITERAL_KINDS: dict[type, Kind] = {str: "string", int: "number", float: "number", bool: "bool"}


class QueryError(ValueError):
    """A query the caller got wrong; the message says what (becomes HTTP 400)."""


def literal_kind(value: Any) -> Kind:
    kind = LITERAL_KINDS.get(type(value))  # exact types: bool is not a number here
    if kind is None:
        raise QueryError(f"unsupported literal {value!r} (lists only in $in)")
    return kind


def literal_value(value: Any, kind: Kind) -> Any:
    """A literal as a bind value of `kind`; a literal of another type is an error."""
    if kind == "timestamp":
        return parse_time(value)
    if literal_kind(value) != kind:
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


def parse_time(value: Any) -> datetime:
    """An ISO-8601 string (naive means UTC) or epoch seconds, as Weave monitors send."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        parsed = datetime.fromisoformat(value)  # accepts a trailing "Z" from 3.11
        # In UTC, as stored: 0001-01-01T00:00:00+01:00 has no UTC form and is refused here.
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise QueryError(f"invalid timestamp {value!r:.64}; expected ISO-8601") from exc


def op_and_arg(node: Any, depth: int) -> tuple[str, Any]:
    if depth > MAX_DEPTH:
        raise QueryError(f"query nested deeper than {MAX_DEPTH} levels")
    if not isinstance(node, Mapping) or len(node) != 1:
        raise QueryError(f"expected an operator object like {{'$eq': [...]}}, got {node!r}")
    return next(iter(node.items()))


def is_null_literal(node: Any, depth: int) -> bool:
    return op_and_arg(node, depth + 1) == ("$literal", None)


def field_path(arg: Any) -> str:
    if not isinstance(arg, str) or not arg:
        raise QueryError(f"$getField takes a field path string, got {arg!r}")
    return arg


def convert_to(arg: Any) -> str:
    if not isinstance(arg, Mapping) or set(arg) != {"input", "to"}:
        raise QueryError("$convert takes {input, to}")
    if arg["to"] not in CONVERT_KINDS:
        raise QueryError(f"$convert cannot convert to {arg['to']!r}")
    return str(arg["to"])


def capped(items: Sequence[Any], what: str, limit: int = MAX_ITEMS) -> Sequence[Any]:
    if len(items) > limit:
        raise QueryError(f"{what} has {len(items)} items; at most {limit} allowed")
    return items


def check_size(expr: Any) -> None:
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
