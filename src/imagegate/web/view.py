"""Stored calls (Weave's wire form) turned into what the templates show."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from imagegate.service import OP_NAME

PAGE_SIZE = 50
STATUSES = ("success", "error", "running")


@dataclass(frozen=True)
class ImageView:
    digest: str
    mimetype: str
    width: int | None
    height: int | None
    size: int | None
    revised_prompt: str | None

    @property
    def ext(self) -> str:
        return {"image/jpeg": "jpg", "image/webp": "webp"}.get(self.mimetype, "png")


@dataclass
class CallView:
    id: str
    project_id: str
    prompt: str
    model: str
    status: str
    started_at: str
    user_id: str | None
    user_name: str
    images: list[ImageView]
    inputs: dict[str, Any]
    latency_ms: float | None
    provider_latency_ms: float | None
    usage: dict[str, Any]
    cost: float | None
    error_type: str | None
    error_message: str | None
    error_status: int | None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    partial_errors: list[dict[str, Any]] = field(default_factory=list)  # some images failed

    @property
    def base(self) -> str:
        return f"/ui/p/{self.project_id}"

    def attempt_columns(self) -> list[str]:
        """Every key any attempt has, in first-seen order (attempts differ in shape)."""
        columns: dict[str, None] = {}
        for attempt in self.attempts:
            columns.update(dict.fromkeys(k for k in attempt if k != "attempt"))
        return list(columns)

    def params(self) -> list[tuple[str, Any]]:
        """Effective parameters other than the prompt, in a stable order."""
        first = ["model", "n", "size", "seed"]
        keys = [k for k in first if k in self.inputs]
        keys += sorted(k for k in self.inputs if k not in first and k != "prompt")
        return [(k, self.inputs[k]) for k in keys]


def images_of(output: Any) -> list[ImageView]:
    """The images of a stored call's output, in order."""
    items = output.get("data") if isinstance(output, dict) else None
    images = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        content = item.get("content") or {}
        ref = item.get("image") or {}
        digest = content.get("digest") or (ref.get("files") or {}).get("content")
        if not isinstance(digest, str):
            continue
        images.append(
            ImageView(
                digest=digest,
                mimetype=content.get("mimetype") or "image/png",
                width=content.get("width"),
                height=content.get("height"),
                size=content.get("size"),
                revised_prompt=item.get("revised_prompt"),
            )
        )
    return images


def _cost(costs: Any) -> float | None:
    """Total USD over the call's models; None when the call recorded no costs."""
    if not isinstance(costs, dict):
        return None
    total = [
        float(c["total_cost"])
        for c in costs.values()
        if isinstance(c, dict) and isinstance(c.get("total_cost"), int | float)
    ]
    return sum(total) if total else None


def call_view(call: dict[str, Any], user_names: dict[str, str]) -> CallView:
    """A wire call (read with include_costs) as the gallery and detail pages see it."""
    inputs = call.get("inputs") or {}
    summary = call.get("summary") or {}
    weave = summary.get("weave") or {}
    model = str(inputs.get("model", ""))
    error = summary.get("error") if isinstance(summary.get("error"), dict) else {}
    error_type = error_message = None
    if call.get("exception"):
        # Stored as "error_type: message" by the generation service.
        head, sep, tail = str(call["exception"]).partition(": ")
        error_type, error_message = (head, tail) if sep else (None, head)
        error_type = error.get("type") or error_type
    usage = (summary.get("usage") or {}).get(model) or {}
    attempts = summary.get("attempts")
    partial = summary.get("errors")
    user_id = call.get("wb_user_id")
    return CallView(
        id=call["id"],
        project_id=call["project_id"],
        prompt=str(inputs.get("prompt", "")),
        model=model,
        status=weave.get("status", "running"),
        started_at=call["started_at"],
        user_id=user_id,
        user_name=user_names.get(user_id or "", (user_id or "unknown")[:8]),
        images=images_of(call.get("output")),
        inputs=inputs,
        latency_ms=weave.get("latency_ms"),
        provider_latency_ms=summary.get("provider_latency_ms"),
        usage=usage if isinstance(usage, dict) else {},
        cost=_cost(weave.get("costs")),
        error_type=error_type,
        error_message=error_message,
        error_status=error.get("status_code"),
        attempts=_dicts(attempts),
        partial_errors=_dicts(partial),
    )


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


@dataclass
class Filters:
    """The gallery's filters, as given in the page's query string."""

    q: str = ""
    model: str = ""
    status: str = ""
    user: str = ""  # a user name
    date_from: str = ""  # YYYY-MM-DD in the browser's time zone
    date_to: str = ""
    tz: int = 0  # the browser's offset from UTC in minutes (set by the page's script)

    @classmethod
    def parse(cls, params: Any) -> Filters:
        def get(name: str, limit: int = 200) -> str:
            return str(params.get(name, "")).strip()[:limit]

        tz = get("tz", 6)
        return cls(
            q=get("q", 1000),
            model=get("model"),
            status=get("status") if get("status") in STATUSES else "",
            user=get("user", 64),
            date_from=get("from", 10),
            date_to=get("to", 10),
            tz=int(tz) if tz.lstrip("-").isdigit() and abs(int(tz)) <= 16 * 60 else 0,
        )

    @property
    def active(self) -> bool:
        return any((self.q, self.model, self.status, self.user, self.date_from, self.date_to))

    def query_string(self, **extra: Any) -> str:
        pairs = {
            "q": self.q,
            "model": self.model,
            "status": self.status,
            "user": self.user,
            "from": self.date_from,
            "to": self.date_to,
            "tz": self.tz or "",
            **extra,
        }
        return urlencode({k: v for k, v in pairs.items() if v not in ("", None)})

    def _day(self, value: str, plus_days: int = 0) -> str | None:
        try:
            day = datetime.strptime(value, "%Y-%m-%d")
        except ValueError:
            return None
        # Midnight in the browser's zone, as UTC: the range matches what the user sees.
        try:
            start = day.replace(tzinfo=UTC) - timedelta(minutes=self.tz)
            start += timedelta(days=plus_days)
        except OverflowError as exc:  # to=9999-12-31, or from=0001-01-01 east of UTC
            raise ValueError(f"date {value} is out of range") from exc
        return start.isoformat()

    def to_query(self, user_id: str | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(filter, query) for CallStore.stream/count: Weave's own query language."""
        flt: dict[str, Any] = {"op_names": [OP_NAME]}
        if self.user:
            # An unknown name matches nothing rather than everything.
            flt["wb_user_ids"] = [user_id or "no-such-user"]
        terms: list[dict[str, Any]] = []

        def field_eq(path: str, value: str) -> dict[str, Any]:
            return {"$eq": [{"$getField": path}, {"$literal": value}]}

        if self.model:
            terms.append(field_eq("inputs.model", self.model))
        if self.status:
            terms.append(field_eq("summary.weave.status", self.status))
        if self.q:
            terms.append(
                {
                    "$contains": {
                        "input": {"$getField": "inputs.prompt"},
                        "substr": {"$literal": self.q},
                        "case_insensitive": True,
                    }
                }
            )
        if self.date_from and (start := self._day(self.date_from)):
            terms.append({"$gte": [{"$getField": "started_at"}, {"$literal": start}]})
        if self.date_to and (end := self._day(self.date_to, plus_days=1)):
            terms.append({"$lt": [{"$getField": "started_at"}, {"$literal": end}]})
        return flt, ({"$expr": {"$and": terms}} if terms else None)
