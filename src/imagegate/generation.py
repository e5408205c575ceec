"""One generation's result, typed: what every door's answer, the call record, metrics,
idempotent replays and the gallery are derived from.

A `Generation` says what happened, in terms of no particular wire format: the effective
inputs, the images (by digest, with their bytes while in memory), usage as the provider
reported it, cost, errors, the call id and the timings. Each output is one function of it:
the Weave answer and call record in `imagegate.weave_shape`, metrics in
`imagegate.metrics`, replays in `imagegate.idempotency` (which keeps `to_record()`), and the
gallery in `imagegate.web.view` (from `imagegate.weave_shape.generation_from_call`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal

import pybase64
from pydantic import BaseModel, ConfigDict, Field

from imagegate.held_image import HeldImage
from imagegate.pricing import normalize_usage

ResponseFormat = Literal["b64_json", "url"]

_FROZEN = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")


class GeneratedImage(BaseModel):
    """One image of a generation."""

    model_config = ConfigDict(**_FROZEN, arbitrary_types_allowed=True)

    index: int  # its place among the generation's images (Weave's `source_index`)
    digest: str  # Weave digest of the bytes (see imagegate.digest)
    mimetype: str
    size: int  # bytes
    width: int
    height: int
    revised_prompt: str | None = None
    # Digest of the stored Weave `Content` metadata.json; None when nothing was stored
    # (`track_llm_call: false`), in which case the image exists only in `data`.
    metadata_digest: str | None = None
    # The bytes of an image stored nowhere else, when they are in memory (a replay's,
    # read back from its idempotency record); None for a stored image (the file store
    # has it by digest) and for an untracked generation's own images (`held`).
    data: bytes | None = Field(default=None, repr=False)
    # An untracked generation's image as it came from the provider: a nameless file its
    # answer streams from, so the image is never whole in memory. Not serialised.
    held: HeldImage | None = Field(default=None, repr=False, exclude=True)

    @property
    def stored(self) -> bool:
        return self.metadata_digest is not None

    @property
    def b64(self) -> str:
        """The base64, whole (only for small images: answers stream it instead)."""
        data = self.held.read() if self.data is None and self.held is not None else self.data
        if data is None:
            raise ValueError(f"image {self.digest} has no bytes at hand")
        return pybase64.b64encode(data).decode()


# Receives each partial image of a streamed generation once it is kept.
KeptPartialSink = Callable[[GeneratedImage], Awaitable[None]]
# What gives an image's base64 while an answer is built (`Base64Answer.marker` streams it).
ImageB64 = Callable[[GeneratedImage], str]


def whole_b64(image: GeneratedImage) -> str:
    """The `ImageB64` of a record, or of an answer small enough to be built whole."""
    return image.b64


class GenerationError(BaseModel):
    """Why a whole generation failed (no images)."""

    model_config = _FROZEN

    message: str
    error_type: str
    status_code: int | None = None
    details: dict[str, Any] = Field(default_factory=dict)  # e.g. moderation categories


class ImageFailure(BaseModel):
    """Some images (one provider request's worth) failed while others were made."""

    model_config = _FROZEN

    message: str
    error_type: str
    status_code: int | None = None


class Generation(BaseModel):
    """The result of one image generation, successful, partial or failed."""

    model_config = _FROZEN

    call_id: str | None  # None when not tracked: nothing was stored
    project_id: str
    user_id: str | None = None
    model: str  # the catalog model the request resolved to
    inputs: dict[str, Any]  # the effective inputs, as recorded in the call
    response_format: ResponseFormat = "b64_json"
    size: str
    output_format: str
    options: dict[str, Any] = Field(default_factory=dict)  # quality, background as used
    started_at: datetime
    ended_at: datetime | None = None  # None while running
    images: tuple[GeneratedImage, ...] = ()
    # A streamed generation's partial images (progressive renders), kept like images.
    partial_images: tuple[GeneratedImage, ...] = ()
    usage: dict[str, Any] = Field(default_factory=dict)  # as the provider reported it
    cost: dict[str, Any] = Field(default_factory=dict)  # imagegate.pricing.compute_cost
    error: GenerationError | None = None
    failures: tuple[ImageFailure, ...] = ()  # partial failure: the images that failed
    warnings: tuple[str, ...] = ()  # e.g. the model is deprecated
    attempts: tuple[dict[str, Any], ...] = ()  # one per provider HTTP attempt
    provider_seconds: float | None = None  # the provider alone, retries included
    # The effective timeout of one upstream request (the model's rule for this quality
    # and size); recorded in the call's summary as `timeout_s`.
    timeout_s: float | None = None

    @property
    def tracked(self) -> bool:
        return self.call_id is not None

    @property
    def is_edit(self) -> bool:
        return "image" in self.inputs

    @property
    def safety_identifier(self) -> str | None:
        """The end-user id in effect: `safety_identifier`, else the deprecated `user`."""
        value = self.inputs.get("safety_identifier") or self.inputs.get("user")
        return str(value) if value else None

    @property
    def created(self) -> int:
        """Unix seconds, as OpenAI's `created`."""
        return int(self.started_at.timestamp())

    @property
    def status(self) -> Literal["success", "error", "running"]:
        if self.error is not None or self.failures:
            return "error"
        return "running" if self.ended_at is None else "success"

    @property
    def error_type(self) -> str | None:
        """The machine-readable reason, `partial_failure` when only some images failed."""
        if self.error is not None:
            return self.error.error_type
        return "partial_failure" if self.failures else None

    @property
    def normalized_usage(self) -> dict[str, int]:
        return normalize_usage(self.usage)

    @property
    def total_cost(self) -> float | None:
        value = self.cost.get("total_cost")
        return float(value) if isinstance(value, int | float) else None

    @property
    def latency_ms(self) -> int | None:
        if self.ended_at is None:
            return None
        return round((self.ended_at - self.started_at).total_seconds() * 1000)

    @property
    def provider_ms(self) -> int | None:
        return None if self.provider_seconds is None else round(self.provider_seconds * 1000)

    def exception_text(self) -> str | None:
        """The call's `exception`: "error_type: message", or the partial failure."""
        if self.error is not None:
            return f"{self.error.error_type}: {self.error.message}"
        if self.failures:
            first = self.failures[0]
            n = self.inputs.get("n", len(self.images) + len(self.failures))
            return (
                f"partial_failure: {len(self.failures)} of {n} images failed "
                f"({first.error_type}: {first.message})"
            )
        return None

    def to_record(self) -> dict[str, Any]:
        """JSON for keeping (idempotent replays). Image bytes are kept only for images
        stored nowhere else; `from_record` gives back an equal answer."""
        images = [
            image.model_dump(mode="json", exclude={"data"})
            if image.stored
            else _with_data(image).model_dump(mode="json")
            for image in self.images
        ]
        return {**self.model_dump(mode="json", exclude={"images"}), "images": images}

    @classmethod
    def from_record(cls, record: Any) -> Generation:
        # Through JSON, so bytes kept as base64 decode as they were encoded.
        return cls.model_validate_json(json.dumps(record))


def _with_data(image: GeneratedImage) -> GeneratedImage:
    """An unstored image with its bytes in memory (for a record, which must hold them)."""
    if image.data is None and image.held is not None:
        return image.model_copy(update={"data": image.held.read()})
    return image
