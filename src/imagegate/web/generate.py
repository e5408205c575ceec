"""The generate form: a model picker from the catalog, each model's own parameters."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Collection
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from imagegate.b64_answer import CHUNK, Base64Answer
from imagegate.errors import (
    BudgetExceeded,
    Forbidden,
    InvalidInput,
    RateLimited,
    as_tree_error,
)
from imagegate.generation import GeneratedImage
from imagegate.keepalive import HEARTBEAT
from imagegate.schemas import ImageGenerationRequestInputs
from imagegate.streaming import stream_generation
from imagegate.weave_shape import generation_from_call
from imagegate.web.detail import read_call
from imagegate.web.render import render
from imagegate.web.session import (
    CSRF_FIELD,
    CSRF_HEADER,
    WebContext,
    project_of,
    read_form,
    require_user,
)

log = logging.getLogger("imagegate.web")

router = APIRouter()
User = Annotated[WebContext, Depends(require_user)]

# How images come back over the API: meaningless in a browser, which always keeps them;
# streaming is the form's own choice (it shows partial images when the model streams);
# `svg` is an object the form has no field for; `markup` and `input_fidelity` are edits'.
HIDDEN_PARAMS = frozenset({"response_format", "stream", "svg", "markup", "input_fidelity"})
# Partial images the form asks a streaming model for, to show while it works.
PREVIEWS = 2


def model_choices(ctx: WebContext, usable: Collection[str]) -> list[dict[str, Any]]:
    """Usable models (servable, with credentials for the project's team: see
    GenerationService.usable_models) with the form fields each one takes, from the
    catalog's own words.

    Rendered generically so new catalog keys need no change here: a parameter with a list
    of allowed values (`options`) becomes a select, anything else a text field.
    """
    choices = []
    for name in ctx.app.catalog.names:
        spec = ctx.app.catalog.get(name)
        if spec is None or name not in usable:
            continue
        info = spec.describe()
        if info.get("state") == "shut_down":
            continue  # the provider no longer serves it: every request would fail
        options = info.get("options") if isinstance(info.get("options"), dict) else {}
        defaults = info.get("defaults") if isinstance(info.get("defaults"), dict) else {}
        fields = []
        # Size first (everyone changes it), then the rest as the catalog lists them.
        params = sorted(info.get("params", []), key=lambda p: (p != "size", p))
        for param in params:
            if param in HIDDEN_PARAMS:
                continue
            field: dict[str, Any] = {"name": param, "kind": "text", "options": [], "hint": ""}
            if param == "size":
                if info.get("sizes"):
                    field.update(kind="select", options=list(info["sizes"]))
                field["placeholder"] = info.get("default_size", "")
                if info.get("size_range"):
                    low, high = info["size_range"]
                    field["hint"] = f"WIDTHxHEIGHT, each side {low} to {high} px"
                elif isinstance(info.get("size_rule"), dict):
                    rule = ", ".join(
                        f"{k.replace('_', ' ')} {v}" for k, v in info["size_rule"].items()
                    )
                    field["hint"] = f"WIDTHxHEIGHT: {rule}"
            elif param == "seed":
                field.update(kind="number", placeholder="random", hint="same seed, same image")
            elif isinstance(options.get(param), list):
                field.update(kind="select", options=[str(v) for v in options[param]])
            elif _is_int_field(param):
                field["kind"] = "number"
            if param in defaults:
                field["placeholder"] = f"default: {defaults[param]}"
            fields.append(field)
        label = name
        if info.get("state") == "deprecated":
            label += f" (deprecated, shuts down {info.get('shutdown') or 'soon'})"
        choices.append({**info, "fields": fields, "label": label})
    return choices


async def _form_page(
    ctx: WebContext,
    entity: str,
    project: str,
    values: dict[str, Any],
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    choices = model_choices(ctx, await ctx.app.generation.usable_models([entity]))
    names = [c["name"] for c in choices]
    if values.get("model") not in names:
        values["model"] = "local/procedural" if "local/procedural" in names else names[0]
    return render(
        ctx,
        "generate.html",
        status_code=status_code,
        entity=entity,
        project=project,
        project_id=f"{entity}/{project}",
        choices=choices,
        values=values,
        error=error,
    )


@router.get("/p/{entity}/{project}/generate")
async def generate_form(
    entity: str, project: str, ctx: User, again: str | None = None, model: str | None = None
) -> Response:
    project_of(ctx, entity, project)
    values: dict[str, Any] = {"model": model, "n": 1}
    if again:
        # "Generate again": the stored effective inputs, seed included, so it reproduces.
        call = await read_call(ctx, entity, project, again)
        inputs = generation_from_call(call).inputs
        values = {k: v for k, v in inputs.items() if v is not None}
    return await _form_page(ctx, entity, project, values)


def _inputs(form: dict[str, str], choices: list[dict[str, Any]]) -> dict[str, Any]:
    model = form.get("model", "")
    inputs: dict[str, Any] = {"model": model, "prompt": form.get("prompt", "")}
    n = form.get("n", "").strip() or "1"
    if not n.isdigit():
        raise ValueError("n must be a whole number")
    inputs["n"] = int(n)
    chosen = next((c for c in choices if c["name"] == model), None)
    # Only the chosen model's parameters: fields left over from another model are ignored.
    for field in chosen["fields"] if chosen else []:
        value = form.get(field["name"], "").strip()
        if value:
            inputs[field["name"]] = _typed(field["name"], value)
    return inputs


def _typed(name: str, value: str) -> Any:
    """A form string as the request schema's type: whole numbers for integer fields (some
    are strict, so "7" would be refused), text for everything else."""
    if _is_int_field(name) and value.lstrip("-").isdigit():
        return int(value)
    return value


def _is_int_field(name: str) -> bool:
    schema_field = ImageGenerationRequestInputs.model_fields.get(name)
    return schema_field is not None and "int" in str(schema_field.annotation)


def _message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"] if p not in ("inputs", "body"))
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)


@router.post("/p/{entity}/{project}/generate")
async def generate(entity: str, project: str, request: Request, ctx: User) -> Response:
    form = await read_form(request)
    ctx.check_csrf(form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER))
    project_id = project_of(ctx, entity, project)
    if not ctx.user().can_generate(entity):
        raise Forbidden(f"You are a viewer in team {entity}: viewers cannot generate.")
    wants_json = "application/json" in request.headers.get("accept", "")
    wants_stream = "text/event-stream" in request.headers.get("accept", "")
    error = None
    status = 422
    try:
        usable = await ctx.app.generation.usable_models([entity])
        choices = model_choices(ctx, usable)
        inputs = ImageGenerationRequestInputs.model_validate(_inputs(form, choices))
        if wants_stream:
            return await _stream(ctx, project_id, inputs)
        result = await ctx.app.generation.generate(ctx.user(), project_id, inputs)
    except InvalidInput as exc:
        error = exc.message
    except (BudgetExceeded, RateLimited) as exc:  # the form says why, nothing was stored
        error, status = exc.message, exc.status_code
    except ValidationError as exc:
        error = _message(exc)
    except ValueError as exc:
        error = str(exc)
    if error is not None:
        if wants_json or wants_stream:
            return JSONResponse({"error": error}, status_code=status)
        values = {k: v for k, v in form.items() if k != CSRF_FIELD}
        return await _form_page(ctx, entity, project, values, error=error, status_code=status)
    # Failed generations are recorded too: their detail page says what went wrong.
    url = f"/ui/p/{project_id}/calls/{result.call_id}"
    if wants_json:
        return JSONResponse({"call_id": result.call_id, "url": url})
    return RedirectResponse(url, status_code=303)


async def _stream(
    ctx: WebContext, project_id: str, inputs: ImageGenerationRequestInputs
) -> Response:
    """The generation as server-sent events for the form's script: `partial` events
    (each partial image, as base64) while it works, then `done` with the result's page.
    Bad input raises before the first event (the caller answers 422)."""
    inputs = inputs.model_copy(update={"stream": True, "partial_images": PREVIEWS})
    user = ctx.user()
    items = stream_generation(
        lambda sink: ctx.app.generation.generate(user, project_id, inputs, on_partial=sink),
        ctx.app.settings.keepalive_interval,  # a comment in silent stretches, for proxies
    )
    first = await anext(items)
    # Each preview's base64 is streamed from the file store into its event.
    answer = Base64Answer(ctx.app.files, project_id, held_chunk=CHUNK)

    async def events() -> AsyncIterator[bytes]:
        item = first
        try:
            while isinstance(item, GeneratedImage) or item is None:
                if item is None:
                    yield HEARTBEAT
                else:
                    src = f"data:{item.mimetype};base64,{answer.marker(item)}"
                    event = _event("partial", {"index": item.index, "src": src})
                    body, _ = await answer.pieces(event)
                    async for chunk in body:
                        yield chunk
                item = await anext(items)
        except Exception as exc:
            log.error("streamed generation failed: %r", exc)
            yield _event("error", {"error": as_tree_error(exc).client_message})
            return
        # Failed generations are recorded too: their page says what went wrong.
        yield _event("done", {"url": f"/ui/p/{project_id}/calls/{item.call_id}"})

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
