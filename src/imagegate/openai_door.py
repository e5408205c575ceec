"""The OpenAI door: OpenAI's Images API (`/v1/images/generations`, `/v1/images/edits`,
`/v1/models`) answered from the generation service.

What a request asks for is read in `imagegate.openai_request`; here the service's
Generation becomes OpenAI's answer: `ImagesResponse`, the stream events, and provider
failures as OpenAI's status codes. The service records each request exactly as
`/image/create` does.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import Headers

from imagegate import keepalive
from imagegate.b64_answer import CHUNK, Base64Answer, ImageB64
from imagegate.core import Imagegate
from imagegate.error_answers import openai_error
from imagegate.errors import as_tree_error, failure_kind
from imagegate.generation import GeneratedImage, Generation, KeptPartialSink, whole_b64
from imagegate.openai_request import DoorRequest
from imagegate.store import Principal
from imagegate.streaming import stream_generation
from imagegate.urls import public_base

log = logging.getLogger("imagegate.openai")

CALL_ID_HEADER = "Imagegate-Call-Id"
# Stream-event field values OpenAI's types allow.
STREAM_FORMATS = ("png", "webp", "jpeg")
STREAM_QUALITIES = ("low", "medium", "high", "xhigh", "max", "auto")
STREAM_BACKGROUNDS = ("transparent", "opaque", "auto")


async def answer(
    app: Imagegate, caller: Principal, door: DoorRequest, request: Request
) -> Response:
    """Run the request through the service, as JSON or as server-sent events."""
    base_url = public_base(request, app.settings.public_url, app.settings.allowed_hosts)
    if door.stream:
        # Checked here, so a bad request gets its 400 before the stream starts.
        await app.generation.check(
            door.req.project_id, door.req.inputs, track=True, edit=door.edit, allow_stream=True
        )
        return await _stream(app, caller, door, base_url, request.headers)
    interval = keepalive.interval_for(
        request.headers, app.settings.keepalive_interval, unasked=False
    )
    if interval is not None:  # the answer may start early: check what can be checked now
        await app.generation.check(door.req.project_id, door.req.inputs, track=True, edit=door.edit)

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
    return bytes(openai_error(500, as_tree_error(exc).client_message, code="server_error").body)


def _run(
    app: Imagegate,
    caller: Principal,
    door: DoorRequest,
    headers: Mapping[str, str],
    on_partial: KeptPartialSink | None,
) -> Awaitable[Generation]:
    def work() -> Awaitable[Generation]:
        return app.generation.generate(
            caller,
            door.req.project_id,
            door.req.inputs,
            edit=door.edit,
            on_partial=on_partial,
        )

    # With a key, or as an SDK's own retry, a repeat gets the first generation.
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
    link = app.generation.image_link(generation.project_id, base_url)
    if generation.response_format == "url":
        return JSONResponse(images_response(generation, link), headers=headers)
    # Each image's base64 streamed from the file store into the JSON around it.
    answer = Base64Answer(app.files, generation.project_id)
    return await answer.response(images_response(generation, link, answer.marker), headers)


def error_answer(generation: Generation) -> JSONResponse | None:
    """A failed generation (recorded, with its error) as OpenAI's error answer: the
    status, code and headers of the error kind its `error_type` names (errors.py)."""
    error = generation.error
    if error is None:
        return None
    kind = failure_kind(error.error_type)
    extra: dict[str, Any] = {}
    if error.details.get("categories") is not None or error.details.get("stage") is not None:
        extra["moderation_details"] = {
            "moderation_stage": error.details.get("stage"),
            "categories": error.details.get("categories"),
        }
    return openai_error(
        kind.status_code, error.message, code=kind.code, headers=kind.headers, **extra
    )


def images_response(
    generation: Generation,
    link: Callable[[GeneratedImage], str] | None = None,
    b64: ImageB64 = whole_b64,
) -> dict[str, Any]:
    """OpenAI's `ImagesResponse`, derived from the Generation (the one place it is made).
    `b64` gives each image's base64 (`Base64Answer.marker`, for an answer streamed from
    the file store; whole, by default) unless URLs were asked for."""
    data = []
    for image in generation.images:
        item: dict[str, Any]
        if generation.response_format == "url" and image.stored and link is not None:
            item = {"url": link(image)}
        else:
            item = {"b64_json": b64(image)}
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


async def _stream(
    app: Imagegate, caller: Principal, door: DoorRequest, base_url: str, headers: Headers
) -> Response:
    """Server-sent events: each partial image as the provider hands it over, then the
    completed image, and a `: keep-alive` comment in each silent stretch (see
    `imagegate.streaming`: a client that goes away mid-stream stops only the events; the
    image is still made, stored and recorded)."""
    interval = keepalive.stream_interval(headers, app.settings.keepalive_interval)
    items = stream_generation(lambda sink: _run(app, caller, door, headers, sink), interval)
    # An error before any event is an ordinary error answer; after one interval without
    # any, the stream starts (with a heartbeat) and errors become events.
    first = await anext(items)
    if isinstance(first, Generation) and (failure := error_answer(first)) is not None:
        return failure
    kind = "image_edit" if door.is_edit else "image_generation"
    inputs = door.req.inputs
    common = {
        "background": inputs.background if inputs.background in STREAM_BACKGROUNDS else "auto",
        "output_format": inputs.output_format if inputs.output_format in STREAM_FORMATS else "png",
        "quality": inputs.quality if inputs.quality in STREAM_QUALITIES else "auto",
    }

    # Each image's base64 is streamed from the file store into its event.
    answer = Base64Answer(app.files, door.req.project_id, held_chunk=CHUNK)

    async def events() -> AsyncIterator[bytes]:
        item = first
        try:
            while not isinstance(item, Generation):
                if item is None:
                    yield keepalive.HEARTBEAT
                else:
                    event = partial_event(kind, item, common, inputs.size or "auto", answer.marker)
                    body, _ = await answer.pieces(_sse(event))
                    async for chunk in body:
                        yield chunk
                item = await anext(items)
            failure = error_answer(item)
            if failure is not None:
                yield _sse({"type": "error", **json.loads(failure.body)}, "error")
                return
            # Every image's file opened before the first completed event goes out.
            bodies = [
                await answer.pieces(_sse(event))
                for event in completed_events(kind, item, common, answer.marker)
            ]
        except Exception as exc:
            log.error("streamed generation failed: %r", exc)
            tree = as_tree_error(exc)  # the status is gone: the event says what it would
            error = {"message": tree.client_message, "type": "server_error", "code": tree.code}
            yield _sse({"type": "error", "error": {**error, "param": None}})
            return
        finally:
            await items.aclose()
        for body, _ in bodies:
            async for chunk in body:
                yield chunk

    return StreamingResponse(
        events(), media_type="text/event-stream", headers=keepalive.NO_BUFFERING
    )


def _sse(data: dict[str, Any], event: str | None = None) -> bytes:
    name = event or str(data["type"])
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def partial_event(
    kind: str, partial: GeneratedImage, common: dict[str, str], size: str, b64: ImageB64
) -> dict[str, Any]:
    return {
        "type": f"{kind}.partial_image",
        "b64_json": b64(partial),
        "partial_image_index": partial.index,
        "created_at": _now(),
        "size": size,
        **common,
    }


def completed_events(
    kind: str, generation: Generation, common: dict[str, str], b64: ImageB64
) -> list[dict[str, Any]]:
    """The completed event of each image, derived from the same `ImagesResponse`."""
    shaped = images_response(generation, b64=b64)
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
