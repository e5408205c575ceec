"""Weave's wire shape of an image generation, derived from a `Generation`.

As Weave's own image-generation handler does: the provider-shaped answer is also the
stored call's output; each image's `data[i].b64_json` (or `data[i].url`, when URLs were
asked for) *is* a Weave `Content` reference, never raw base64; `model` is set; `usage`
keeps the provider's keys and adds `prompt_tokens`, `completion_tokens`, `total_tokens`.
The Content's `metadata.json` is byte for byte what `weave`'s `Content` writes
(`json.dumps(content.model_dump(exclude={"data"}))`).

imagegate adds, where no Weave key collides: `data[i].content` (digest, mimetype, size,
width, height; in the answer to a URL request also a signed `url`), `size`,
`output_format`, `quality`/`background`, `errors` (partial failures) and `warnings`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from imagegate.digest import weave_digest_of
from imagegate.errors import as_tree_error
from imagegate.generation import (
    GeneratedImage,
    Generation,
    GenerationError,
    ImageB64,
    ImageFailure,
    ResponseFormat,
    whole_b64,
)
from imagegate.urls import MIME_EXTENSIONS

OP_NAME = "weave.image_generation_create"
EDIT_OP_NAME = "weave.image_edit_create"
CONTENT_TYPE = "weave.type_wrappers.Content.content.Content"

# The extension `weave` derives from a MIME type (stdlib `mimetypes.guess_extension`).
_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/svg+xml": ".svg",
}
ANSWER_OPTIONS = ("quality", "background")  # echoed in the answer when used

ImageLink = Callable[[GeneratedImage], str]


# --- the Content reference -------------------------------------------------------------


def content_metadata(data: bytes, mimetype: str, index: int, response_format: str) -> bytes:
    """The `metadata.json` weave writes for `Content.from_base64(b64, mimetype=...,
    metadata={"source_index": i, "_original_schema": "b64_json"})`, or, for URL answers,
    for `Content.from_url(<the image's imagegate URL>, metadata={..., "url"})`.

    Unlike Weave's handler, which labels every base64 image `image/png`, the real type
    of the bytes is given, so a JPEG or WebP is not mislabelled.
    """
    sha256 = hashlib.sha256(data).digest()
    return content_metadata_of(sha256, len(data), mimetype, index, response_format)


def content_metadata_of(
    sha256: bytes, size: int, mimetype: str, index: int, response_format: str
) -> bytes:
    """`content_metadata` of bytes known by their raw SHA-256 and size (hashed once,
    as they were written)."""
    hex_digest = sha256.hex()
    extension = _EXTENSIONS.get(mimetype, "")
    if response_format == "url":
        # from_url: the file name is the URL's last path segment, `<digest>.<ext>`.
        filename = f"{weave_digest_of(sha256)}.{MIME_EXTENSIONS.get(mimetype, 'bin')}"
        extension = "." + filename.rsplit(".", 1)[1]
        content_type, encoding = "bytes", "utf-8"
    else:
        kind = mimetype.split("/", 1)[0]
        filename = f"{'file' if kind == 'application' else kind}-{hex_digest[:4]}{extension}"
        content_type, encoding = "base64", "base64"
    # Key order and separators as pydantic's model_dump + json.dumps give them in weave.
    metadata = {
        "size": size,
        "mimetype": mimetype,
        "digest": hex_digest,
        "filename": filename,
        "content_type": content_type,
        "input_type": "str",
        "encoding": encoding,
        "metadata": {"source_index": index, "_original_schema": response_format},
        "extension": extension,
    }
    return json.dumps(metadata).encode()


def content_ref(content_digest: str, metadata_digest: str) -> dict[str, Any]:
    """A Weave `Content` object as it appears inside a stored call."""
    return {
        "_type": "CustomWeaveType",
        "weave_type": {"type": CONTENT_TYPE},
        "files": {"content": content_digest, "metadata.json": metadata_digest},
    }


def weave_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """The provider's usage keys, plus the chat-style names Weave adds."""
    prompt = usage.get("prompt_tokens") or usage.get("input_tokens") or 0
    completion = usage.get("completion_tokens") or usage.get("output_tokens") or 0
    total = usage.get("total_tokens") or prompt + completion
    return {
        **usage,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
    }


# --- answer and call record -------------------------------------------------------------


def _facts(image: GeneratedImage) -> dict[str, Any]:
    return {
        "digest": image.digest if image.stored else None,
        "mimetype": image.mimetype,
        "size": image.size,
        "width": image.width,
        "height": image.height,
    }


def _item(
    gen: Generation, image: GeneratedImage, link: ImageLink | None, b64: ImageB64
) -> dict[str, Any]:
    facts = _facts(image)
    if image.stored:
        assert image.metadata_digest is not None
        key: ResponseFormat = gen.response_format
        item: dict[str, Any] = {key: content_ref(image.digest, image.metadata_digest)}
        if key == "url" and link is not None:
            facts["url"] = link(image)
    else:
        # Not tracked: nothing stored, nothing to reference; the provider's raw shape.
        item = {"b64_json": b64(image)}
    if image.revised_prompt:
        item["revised_prompt"] = image.revised_prompt
    item["content"] = facts
    return item


def _failures(failures: tuple[ImageFailure, ...]) -> list[dict[str, Any]]:
    return [
        {"error": f.message, "error_type": f.error_type, "status_code": f.status_code}
        for f in failures
    ]


def _response(gen: Generation, link: ImageLink | None, b64: ImageB64) -> dict[str, Any]:
    response: dict[str, Any] = {
        "created": gen.created,
        "data": [_item(gen, image, link, b64) for image in gen.images],
        "model": gen.model,
        "size": gen.size,
        "output_format": gen.output_format,
        **{k: gen.options[k] for k in ANSWER_OPTIONS if k in gen.options},
        "usage": weave_usage(gen.usage),
    }
    if gen.failures:
        response["errors"] = _failures(gen.failures)
    if gen.warnings:
        response["warnings"] = list(gen.warnings)
    return response


def error_response(error: GenerationError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error.message, "error_type": error.error_type}
    if error.status_code is not None:
        body["status_code"] = error.status_code
    body.update(error.details)
    return body


def weave_answer(
    gen: Generation, link: ImageLink | None = None, b64: ImageB64 | None = None
) -> dict[str, Any]:
    """`ImageGenerationCreateRes` for /image/create. `link` gives the signed URL of a
    stored image, added as `content.url` when URLs were asked for; `b64` the base64 of
    an untracked one (`Base64Answer.marker`, for an answer streamed from its file)."""
    if gen.error is not None:
        return {"response": error_response(gen.error), "weave_call_id": gen.call_id}
    return {"response": _response(gen, link, b64 or whole_b64), "weave_call_id": gen.call_id}


def weave_failure(exc: Exception) -> bytes:
    """The answer body, once a 200 has been sent (an early answer), for a request that
    then failed other than by its generation (which `weave_answer` tells)."""
    tree = as_tree_error(exc)
    error = GenerationError(
        message=tree.client_message, error_type="server_error", status_code=tree.status_code
    )
    body = {"response": error_response(error), "weave_call_id": None}
    return json.dumps(body, separators=(",", ":")).encode()


def call_output(gen: Generation) -> dict[str, Any] | None:
    """The stored call's `output`: the answer itself (no links: they depend on the host),
    and a streamed generation's partial images, as Content like its images."""
    if gen.error is not None:
        return None
    output = _response(gen, None, whole_b64)
    if gen.partial_images:
        output["partial_images"] = [
            _item(gen, image, None, whole_b64) for image in gen.partial_images
        ]
    return output


def call_summary(gen: Generation) -> dict[str, Any]:
    """The stored call's `summary` (`summary.weave` is derived when read)."""
    images = len(gen.images)
    summary: dict[str, Any] = {
        "usage": {gen.model: {"requests": 1, "images": images, **gen.normalized_usage}},
        "costs": {gen.model: gen.cost},
        "provider_latency_ms": gen.provider_ms,
        "images": images,
        "attempts": list(gen.attempts),
    }
    if gen.timeout_s is not None:
        summary["timeout_s"] = gen.timeout_s
    if gen.failures:
        summary["errors"] = _failures(gen.failures)
    if gen.error is not None:
        summary["error"] = {
            "type": gen.error.error_type,
            "status_code": gen.error.status_code,
            **gen.error.details,
        }
    return summary


# --- reading a stored call back ----------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _image_from_item(item: Any, index: int) -> GeneratedImage | None:
    item = _dict(item)
    facts = _dict(item.get("content"))
    ref = next(
        (_dict(item.get(k)) for k in ("b64_json", "url") if _dict(item.get(k)).get("files")),
        {},
    )
    files = _dict(ref.get("files"))
    digest = files.get("content") or facts.get("digest")
    if not isinstance(digest, str):
        return None
    return GeneratedImage(
        index=index,
        digest=digest,
        mimetype=facts.get("mimetype") or "image/png",
        size=facts.get("size") or 0,
        width=facts.get("width") or 0,
        height=facts.get("height") or 0,
        revised_prompt=item.get("revised_prompt"),
        metadata_digest=files.get("metadata.json"),
    )


def _cost_of(costs: dict[str, Any], model: str) -> dict[str, Any]:
    """The model's cost record; for a call recorded under other model names, their sum."""
    if model in costs:
        return _dict(costs[model])
    totals = [
        float(c["total_cost"])
        for c in costs.values()
        if isinstance(c, dict) and isinstance(c.get("total_cost"), int | float)
    ]
    return {"total_cost": sum(totals)} if totals else {}


def answer_images(response: Mapping[str, Any]) -> list[GeneratedImage]:
    """The images a Weave-shaped answer or stored output names, in order."""
    items = response.get("data")
    return [
        image
        for index, item in enumerate(items if isinstance(items, list) else [])
        if (image := _image_from_item(item, index)) is not None
    ]


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def generation_from_call(call: Mapping[str, Any]) -> Generation:
    """A stored image-generation call (wire form, as /call/read gives it) as a Generation:
    the inverse of `call_output` + `call_summary`, for readers such as the gallery."""
    inputs = _dict(call.get("inputs"))
    output = _dict(call.get("output"))
    summary = _dict(call.get("summary"))
    model = str(inputs.get("model", ""))
    images = answer_images(output)
    error = None
    head, sep, tail = str(call.get("exception") or "").partition(": ")
    if call.get("exception") and not (head == "partial_failure" and summary.get("errors")):
        stored = _dict(summary.get("error"))
        details = {k: v for k, v in stored.items() if k not in ("type", "status_code")}
        error = GenerationError(
            message=tail if sep else head,
            error_type=stored.get("type") or (head if sep else "error"),
            status_code=stored.get("status_code"),
            details=details,
        )
    failures = [
        ImageFailure(
            message=str(e.get("error", "")),
            error_type=str(e.get("error_type", "error")),
            status_code=e.get("status_code"),
        )
        for e in summary.get("errors") or []
        if isinstance(e, dict)
    ]
    provider_ms = summary.get("provider_latency_ms")
    costs = _dict(_dict(summary.get("weave")).get("costs") or summary.get("costs"))
    return Generation(
        call_id=call.get("id"),
        project_id=str(call.get("project_id", "")),
        user_id=call.get("wb_user_id"),
        model=model,
        inputs=inputs,
        response_format="url" if inputs.get("response_format") == "url" else "b64_json",
        size=str(output.get("size") or inputs.get("size") or ""),
        output_format=str(output.get("output_format") or ""),
        options={k: output[k] for k in ANSWER_OPTIONS if k in output},
        started_at=_time(call.get("started_at")) or datetime.min,
        ended_at=_time(call.get("ended_at")),
        images=tuple(images),
        partial_images=tuple(answer_images({"data": output.get("partial_images")})),
        usage=_dict(output.get("usage")),
        cost=_cost_of(costs, model),
        error=error,
        failures=tuple(failures),
        warnings=tuple(str(w) for w in output.get("warnings") or []),
        attempts=tuple(a for a in summary.get("attempts") or [] if isinstance(a, dict)),
        provider_seconds=provider_ms / 1000 if isinstance(provider_ms, int | float) else None,
        timeout_s=summary["timeout_s"]
        if isinstance(summary.get("timeout_s"), int | float)
        else None,
    )


def trace_name(op_name: str, display_name: str | None) -> str:
    """`summary.weave.trace_name`: the display name, else the op's short name (the name
    part of a `weave:///…/op/<name>:<digest>` reference, or the op name itself)."""
    if display_name:
        return display_name
    return op_name.rsplit("/", 1)[-1].split(":", 1)[0]
