"""Stored calls (Weave's wire form) turned into what the templates show."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from imagegate.generation import GeneratedImage, Generation
from imagegate.urls import MIME_EXTENSIONS
from imagegate.weave_shape import EDIT_OP_NAME, OP_NAME

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
        return MIME_EXTENSIONS.get(self.mimetype, "png")

    @property
    def editable(self) -> bool:
        """Whether the gallery's Edit action takes it (raster images a model can edit)."""
        return self.mimetype in ("image/png", "image/jpeg", "image/webp")


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
    timeout_s: float | None  # one upstream request's timeout, as the model's rules set it
    usage: dict[str, Any]
    cost: float | None
    error_type: str | None
    error_message: str | None
    error_status: int | None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    partial_errors: list[dict[str, Any]] = field(default_factory=list)  # some images failed
    partials: list[ImageView] = field(default_factory=list)  # a stream's partial images
    # An edit's inputs: the images it edited, and the mask's digest.
    input_digests: list[str] = field(default_factory=list)
    mask_digest: str | None = None

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
        shown_apart = ("prompt", "image", "mask")  # an edit's files are shown as images
        keys += sorted(k for k in self.inputs if k not in first and k not in shown_apart)
        return [(k, self.inputs[k]) for k in keys]


def _views(images: tuple[GeneratedImage, ...]) -> list[ImageView]:
    return [
        ImageView(
            digest=image.digest,
            mimetype=image.mimetype,
            width=image.width or None,
            height=image.height or None,
            size=image.size or None,
            revised_prompt=image.revised_prompt,
        )
        for image in images
    ]


def images_of(generation: Generation) -> list[ImageView]:
    """The images of a generation, in order."""
    return _views(generation.images)


def _ref_digest(ref: Any) -> str | None:
    """The content digest of a Content reference kept in a call's inputs."""
    files = ref.get("files") if isinstance(ref, dict) else None
    digest = files.get("content") if isinstance(files, dict) else None
    return digest if isinstance(digest, str) else None


def call_view(generation: Generation, user_names: dict[str, str]) -> CallView:
    """A generation (read back from its call, with costs) as the gallery and detail
    pages see it."""
    error = generation.error
    error_type = error.error_type if error else generation.error_type
    error_message = error.message if error else None
    if error is None and generation.failures:
        error_message = generation.exception_text()
        if error_message:
            error_message = error_message.partition(": ")[2]
    user_id = generation.user_id
    usage: dict[str, Any] = {}
    if generation.ended_at is not None and (generation.images or generation.usage):
        usage = {"requests": 1, "images": len(generation.images), **generation.normalized_usage}
    return CallView(
        id=generation.call_id or "",
        project_id=generation.project_id,
        prompt=str(generation.inputs.get("prompt", "")),
        model=generation.model,
        status=generation.status,
        started_at=generation.started_at.isoformat(),
        user_id=user_id,
        user_name=user_names.get(user_id or "", (user_id or "unknown")[:8]),
        images=images_of(generation),
        inputs=generation.inputs,
        latency_ms=generation.latency_ms,
        provider_latency_ms=generation.provider_ms,
        timeout_s=generation.timeout_s,
        usage=usage,
        cost=generation.total_cost,
        error_type=error_type,
        error_message=error_message,
        error_status=error.status_code if error else None,
        attempts=list(generation.attempts),
        partial_errors=[
            {"error": f.message, "error_type": f.error_type, "status_code": f.status_code}
            for f in generation.failures
        ],
        partials=_views(generation.partial_images),
        input_digests=[
            d for ref in generation.inputs.get("image") or [] if (d := _ref_digest(ref)) is not None
        ],
        mask_digest=_ref_digest(generation.inputs.get("mask")),
    )


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
        flt: dict[str, Any] = {"op_names": [OP_NAME, EDIT_OP_NAME]}
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
