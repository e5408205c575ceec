"""The OpenAI door: OpenAI's Images API (`/v1/images/generations`, `/v1/images/edits`,
`/v1/models`) translated to and from the generation service.

Everything OpenAI-shaped lives here: which project a request goes to, reading a
multipart edit, `ImagesResponse` and the stream events derived from the service's
answer, and provider failures as OpenAI's status codes. The service records each
request exactly as `/image/create` does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import Headers, UploadFile

from imagegate import keepalive
from imagegate.core import Imagegate
from imagegate.digest import weave_digest
from imagegate.errors import Forbidden, ImagegateError, InvalidInput, openai_error
from imagegate.generation import GeneratedImage, Generation
from imagegate.idempotency import request_hash
from imagegate.names import split_project_id
from imagegate.providers.base import InputImage, PartialImage
from imagegate.schemas import ImageGenerationCreateReq, ImageGenerationRequestInputs
from imagegate.store import Principal
from imagegate.uploads import Upload

log = logging.getLogger("imagegate.openai")

PROJECT_HEADER = "OpenAI-Project"
CALL_ID_HEADER = "Imagegate-Call-Id"
DEFAULT_PROJECT = "default"
# Multipart fields that carry numbers or booleans (everything in a form is text).
INT_FIELDS = ("n", "output_compression", "partial_images", "frame_count", "frame_duration_ms")
BOOL_FIELDS = ("stream",)
FILE_FIELDS = ("image", "image[]", "mask")
MAX_FORM_FILES = 17  # 16 images and a mask
# The provider's failure (`error_type`) as OpenAI's status and code.
STATUS_BY_ERROR_TYPE = {
    "content_policy": (400, "moderation_blocked"),
    "invalid_request": (400, "invalid_request"),
    "rate_limit": (429, "rate_limit_exceeded"),
    "model_not_found": (404, "model_not_found"),
    "auth": (502, "upstream_auth_failed"),  # the server's provider key, not the caller's
    "timeout": (504, "upstream_timeout"),
    "provider_error": (502, "upstream_error"),
    "storage_error": (500, "storage_error"),
    "internal_error": (500, "internal_error"),
}
# Stream-event field values OpenAI's types allow.
STREAM_FORMATS = ("png", "webp", "jpeg")
STREAM_QUALITIES = ("low", "medium", "high", "xhigh", "max", "auto")
STREAM_BACKGROUNDS = ("transparent", "opaque", "auto")


def project_for(principal: Principal, header: str | None) -> str:
    """The `OpenAI-Project` header (`entity/project`, or a project in the caller's
    entity), else the key's default project, else `<entity>/default`; 403 if not a member."""
    entity = (
        principal.user_name
        if principal.user_name in principal.entities
        else min(principal.entities, default=principal.user_name)
    )
    if header and header.strip():
        value = header.strip()
        project_id = value if "/" in value else f"{entity}/{value}"
        try:
            split_project_id(project_id)
        except ValueError as exc:
            raise InvalidInput(["header", "openai-project"], str(exc)) from exc
    else:
        project_id = principal.default_project or f"{entity}/{DEFAULT_PROJECT}"
    if project_id.split("/", 1)[0] not in principal.entities:
        raise Forbidden(f"you do not have access to project {project_id!r}")
    return project_id


def _inputs(fields: dict[str, Any]) -> ImageGenerationRequestInputs:
    """OpenAI's request fields as the service's inputs (a 400 naming the field if not)."""
    if not fields.get("model"):
        raise InvalidInput(["body", "model"], "you must provide a model (GET /v1/models)")
    try:
        return ImageGenerationRequestInputs.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "body"
        raise InvalidInput(["body", field], f"{field}: {first['msg']}") from exc


async def read_json(request: Request) -> ImageGenerationRequestInputs:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(["body"], f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidInput(["body"], "the body must be a JSON object")
    return _inputs(body)


async def read_form(request: Request) -> tuple[ImageGenerationRequestInputs, list[Upload]]:
    """A multipart edit: its text fields as inputs, its files as uploads."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidInput(["body"], "an edit is sent as multipart/form-data")
    try:
        form = await request.form(max_files=MAX_FORM_FILES + 1, max_fields=64)
    except Exception as exc:  # starlette's MultiPartException and malformed bodies
        raise InvalidInput(["body"], f"the multipart body cannot be read: {exc}") from exc
    fields: dict[str, Any] = {}
    svg: dict[str, Any] = {}
    uploads: list[Upload] = []
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name not in FILE_FIELDS:
                    raise InvalidInput(["body", name], f"unexpected file field {name!r}")
                data = await value.read()
                uploads.append(Upload(name, value.filename or f"{name}.bin", data))
            elif name == "svg[model]":
                svg["model"] = value
            elif name == "svg[reasoning][effort]":
                svg["reasoning"] = {"effort": value}
            elif name in FILE_FIELDS:
                raise InvalidInput(["body", name], f"{name} must be a file")
            else:
                fields[name] = _form_value(name, value)
    finally:
        await form.close()
    if svg:
        fields["svg"] = svg
    if len([u for u in uploads if u.field != "mask"]) > MAX_FORM_FILES - 1:
        raise InvalidInput(["body", "image"], "send at most 16 images")
    return _inputs(fields), uploads


def _form_value(name: str, value: str) -> Any:
    if name in INT_FIELDS:
        try:
            return int(value)
        except ValueError as exc:
            raise InvalidInput(["body", name], f"{name} must be an integer") from exc
    if name in BOOL_FIELDS:
        if value.lower() not in ("true", "false"):
            raise InvalidInput(["body", name], f"{name} must be true or false")
        return value.lower() == "true"
    return value


@dataclass(frozen=True)
class DoorRequest:
    """One OpenAI-door request, ready for the service."""

    req: ImageGenerationCreateReq
    images: tuple[InputImage, ...] = ()
    mask: InputImage | None = None

    @property
    def is_edit(self) -> bool:
        return bool(self.images)

    @property
    def stream(self) -> bool:
        return bool(self.req.inputs.stream)

    def body_hash(self) -> str:
        """What "the same request" means for `Idempotency-Key`: the inputs and the
        bytes of every file."""
        digests = [weave_digest(i.data) for i in self.images]
        if self.mask is not None:
            digests.append("mask:" + weave_digest(self.mask.data))
        return hashlib.sha256((request_hash(self.req) + "|".join(digests)).encode()).hexdigest()


async def answer(
    app: Imagegate, caller: Principal, door: DoorRequest, request: Request
) -> Response:
    """Run the request through the service, as JSON or as server-sent events."""
    base_url = app.settings.public_url or str(request.base_url)
    if door.stream:
        # Checked here, so a bad request gets its 400 before the stream starts.
        app.generation.prepare(
            door.req.inputs, track=True, images=door.images, mask=door.mask, allow_stream=True
        )
        return await _stream(app, caller, door, base_url, request.headers)
    interval = keepalive.interval_for(
        request.headers, app.settings.keepalive_interval, unasked=False
    )
    if interval is not None:  # the answer may start early: check what can be checked now
        app.generation.prepare(door.req.inputs, track=True, images=door.images, mask=door.mask)

    async def render(generation: Generation) -> Response:
        return await _json_answer(app, generation, base_url)

    return await keepalive.early_answer(
        _run(app, caller, door, request.headers, None),
        interval=interval,
        render=render,
        failed=_early_failure,
    )


def _early_failure(exc: Exception) -> bytes:
    """OpenAI's error envelope, once an early 200 has gone out, for a request that then
    failed other than by its generation."""
    message = exc.message if isinstance(exc, ImagegateError) else "internal error"
    return bytes(openai_error(500, message, code="server_error").body)


def _run(
    app: Imagegate,
    caller: Principal,
    door: DoorRequest,
    headers: Mapping[str, str],
    on_partial: Callable[[PartialImage], Awaitable[None]] | None,
) -> Awaitable[Generation]:
    def work() -> Awaitable[Generation]:
        return app.generation.generate(
            caller,
            door.req.project_id,
            door.req.inputs,
            images=door.images,
            mask=door.mask,
            on_partial=on_partial,
        )

    return app.idempotency.run_once(
        headers,
        project_id=door.req.project_id,
        user_id=caller.user_id,
        request_hash=door.body_hash(),
        work=work,
    )


async def _json_answer(app: Imagegate, generation: Generation, base_url: str) -> Response:
    headers = {CALL_ID_HEADER: generation.call_id} if generation.call_id else {}
    failure = error_answer(generation)
    if failure is not None:
        failure.headers.update(headers)
        return failure
    generation = await with_bytes(app, generation)
    link = app.generation.image_link(generation.project_id, base_url)
    return JSONResponse(images_response(generation, link), headers=headers)


async def with_bytes(app: Imagegate, generation: Generation) -> Generation:
    """The generation with every image's bytes (a replayed one has digests only)."""
    if all(image.data is not None for image in generation.images):
        return generation
    images = []
    for image in generation.images:
        if image.data is None:
            data = await app.files.get(generation.project_id, image.digest)
            if data is None:
                raise ImagegateError(f"stored image {image.digest} of a replay is missing")
            image = image.model_copy(update={"data": data})
        images.append(image)
    return generation.model_copy(update={"images": tuple(images)})


def error_answer(generation: Generation) -> JSONResponse | None:
    """A failed generation (recorded, with its error) as OpenAI's error answer."""
    error = generation.error
    if error is None:
        return None
    status, code = STATUS_BY_ERROR_TYPE.get(error.error_type, (502, None))
    extra: dict[str, Any] = {}
    if error.details.get("categories") is not None or error.details.get("stage") is not None:
        extra["moderation_details"] = {
            "moderation_stage": error.details.get("stage"),
            "categories": error.details.get("categories"),
        }
    return openai_error(status, error.message, code=code, **extra)


def images_response(
    generation: Generation, link: Callable[[GeneratedImage], str] | None = None
) -> dict[str, Any]:
    """OpenAI's `ImagesResponse`, derived from the Generation (the one place it is made).
    Images need their bytes (`with_bytes`) unless URLs were asked for."""
    data = []
    for image in generation.images:
        item: dict[str, Any]
        if generation.response_format == "url" and image.stored and link is not None:
            item = {"url": link(image)}
        else:
            item = {"b64_json": image.b64}
        if image.revised_prompt:
            item["revised_prompt"] = image.revised_prompt
        data.append(item)
    answer: dict[str, Any] = {"created": generation.created, "data": data}
    if generation.options.get("background") in ("transparent", "opaque"):
        answer["background"] = generation.options["background"]
    answer["output_format"] = generation.output_format
    answer["size"] = generation.size
    quality = generation.options.get("quality")
    if quality and quality != "auto":
        answer["quality"] = quality
    if generation.safety_identifier:
        answer["safety_identifier"] = generation.safety_identifier
    usage = openai_usage(generation.usage)
    if usage is not None:
        answer["usage"] = usage
    return answer


def openai_usage(usage: Any) -> dict[str, Any] | None:
    """GPT-image usage as OpenAI shapes it, or None when the model reports none."""
    if not isinstance(usage, dict) or "input_tokens" not in usage:
        return None
    details = usage.get("input_tokens_details") or {}
    shaped: dict[str, Any] = {
        "input_tokens": int(usage.get("input_tokens") or 0),
        "input_tokens_details": {
            "text_tokens": int(details.get("text_tokens") or 0),
            "image_tokens": int(details.get("image_tokens") or 0),
        },
        "output_tokens": int(usage.get("output_tokens") or 0),
        "total_tokens": int(usage.get("total_tokens") or 0),
    }
    if usage.get("output_tokens_details"):
        shaped["output_tokens_details"] = usage["output_tokens_details"]
    return shaped


# --- Streaming ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Done:
    generation: Generation


@dataclass(frozen=True)
class _Failed:
    error: BaseException


async def _stream(
    app: Imagegate,
    caller: Principal,
    door: DoorRequest,
    base_url: str,
    headers: Headers,
) -> Response:
    """Server-sent events: each partial image as the provider hands it over, then the
    completed image, with a `: keep-alive` comment in each silent stretch. The generation
    runs in its own task, so a client that goes away mid-stream stops only the events:
    the image is still made, stored and recorded."""
    queue: asyncio.Queue[PartialImage | _Done | _Failed] = asyncio.Queue()

    async def on_partial(partial: PartialImage) -> None:
        queue.put_nowait(partial)

    async def run() -> None:
        try:
            generation = await _run(app, caller, door, headers, on_partial)
            queue.put_nowait(_Done(await with_bytes(app, generation)))
        except Exception as exc:
            queue.put_nowait(_Failed(exc))

    keepalive.keep(asyncio.create_task(run()))
    items = keepalive.heartbeats(
        queue.get, keepalive.stream_interval(headers, app.settings.keepalive_interval)
    )
    # What comes within the first interval may still be answered with its own status;
    # after that the stream starts, and heartbeats keep it open.
    first = await anext(items)
    if isinstance(first, _Failed):
        raise first.error  # nothing sent yet: an ordinary error answer
    if isinstance(first, _Done) and (failure := error_answer(first.generation)) is not None:
        return failure
    kind = "image_edit" if door.is_edit else "image_generation"
    inputs = door.req.inputs
    common = {
        "background": inputs.background if inputs.background in STREAM_BACKGROUNDS else "auto",
        "output_format": inputs.output_format if inputs.output_format in STREAM_FORMATS else "png",
        "quality": inputs.quality if inputs.quality in STREAM_QUALITIES else "auto",
    }

    async def events() -> AsyncIterator[bytes]:
        try:
            async for chunk in _events(first):
                yield chunk
        finally:
            await items.aclose()

    async def _events(item: PartialImage | _Done | _Failed | None) -> AsyncIterator[bytes]:
        while True:
            if item is None:
                yield keepalive.HEARTBEAT
            elif isinstance(item, PartialImage):
                yield _sse(partial_event(kind, item, common, inputs.size or "auto"))
            elif isinstance(item, _Done):
                failure = error_answer(item.generation)
                if failure is not None:
                    yield _sse({"type": "error", **json.loads(failure.body)}, "error")
                else:
                    for event in completed_events(kind, item.generation, common):
                        yield _sse(event)
                return
            else:
                log.error("streamed generation failed: %r", item.error)
                error = {"message": "the generation failed", "type": "server_error"}
                yield _sse({"type": "error", "error": {**error, "param": None, "code": None}})
                return
            item = await anext(items)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers=keepalive.NO_BUFFERING
    )


def _sse(data: dict[str, Any], event: str | None = None) -> bytes:
    name = event or str(data["type"])
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def partial_event(
    kind: str, partial: PartialImage, common: dict[str, str], size: str
) -> dict[str, Any]:
    return {
        "type": f"{kind}.partial_image",
        "b64_json": partial.b64_json,
        "partial_image_index": partial.index,
        "created_at": _now(),
        "size": size,
        **common,
    }


def completed_events(
    kind: str, generation: Generation, common: dict[str, str]
) -> list[dict[str, Any]]:
    """The completed event of each image, derived from the same `ImagesResponse`."""
    shaped = images_response(generation)
    usage = shaped.get("usage") or {
        "input_tokens": 0,
        "input_tokens_details": {"text_tokens": 0, "image_tokens": 0},
        "output_tokens": 0,
        "total_tokens": 0,
    }
    events = []
    for image in shaped["data"]:
        event: dict[str, Any] = {
            "type": f"{kind}.completed",
            "b64_json": image.get("b64_json", ""),
            "created_at": shaped["created"],
            "size": shaped.get("size", "auto"),
            "usage": {k: v for k, v in usage.items() if k != "output_tokens_details"},
            **common,
        }
        if shaped.get("safety_identifier"):
            event["safety_identifier"] = shaped["safety_identifier"]
        events.append(event)
    return events


def _now() -> int:
    return int(time.time())


def list_models(app: Imagegate) -> dict[str, Any]:
    """`GET /v1/models`: the models this server can serve now, as OpenAI lists them."""
    servable = set(app.providers)
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": spec.provider}
        for name in app.catalog.names
        if (spec := app.catalog.models[name]).provider in servable and spec.state() != "shut_down"
    ]
    return {"object": "list", "data": data}
