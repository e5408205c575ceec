"""The generate form: a model picker from the catalog, each model's own parameters."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.responses import JSONResponse, RedirectResponse, Response

from imagegate.errors import InvalidInput
from imagegate.names import split_project_id
from imagegate.schemas import ImageGenerationCreateReq, ImageGenerationRequestInputs
from imagegate.urls import public_base
from imagegate.web.detail import read_call
from imagegate.web.render import render
from imagegate.web.session import (
    CSRF_FIELD,
    CSRF_HEADER,
    WebContext,
    WebError,
    read_form,
    require_entity,
    require_user,
)

router = APIRouter()
User = Annotated[WebContext, Depends(require_user)]

# How images come back over the API: meaningless in a browser, which always keeps them.
HIDDEN_PARAMS = frozenset({"response_format"})


def model_choices(ctx: WebContext) -> list[dict[str, Any]]:
    """Servable models with the form fields each one takes, from the catalog's own words.

    Rendered generically so new catalog keys need no change here: a parameter with a list
    of allowed values (`options`) becomes a select, anything else a text field.
    """
    choices = []
    for name in ctx.app.catalog.names:
        spec = ctx.app.catalog.get(name)
        if spec is None or spec.provider not in ctx.app.generation.providers:
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


def _project_id(ctx: WebContext, entity: str, project: str) -> str:
    try:
        split_project_id(f"{entity}/{project}")
    except ValueError as exc:
        raise WebError(404, "No such project.") from exc
    require_entity(ctx, entity)
    return f"{entity}/{project}"


def _form_page(
    ctx: WebContext,
    entity: str,
    project: str,
    values: dict[str, Any],
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    choices = model_choices(ctx)
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
    _project_id(ctx, entity, project)
    values: dict[str, Any] = {"model": model, "n": 1}
    if again:
        # "Generate again": the stored effective inputs, seed included, so it reproduces.
        call = await read_call(ctx, entity, project, again)
        values = {k: v for k, v in (call.get("inputs") or {}).items() if v is not None}
    return _form_page(ctx, entity, project, values)


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
    project_id = _project_id(ctx, entity, project)
    wants_json = "application/json" in request.headers.get("accept", "")
    error = None
    try:
        inputs = ImageGenerationRequestInputs.model_validate(_inputs(form, model_choices(ctx)))
        req = ImageGenerationCreateReq(project_id=project_id, inputs=inputs)
        settings = ctx.app.settings
        base_url = public_base(request, settings.public_url, settings.allowed_hosts)
        result = await ctx.app.generation.create(ctx.user(), req, base_url)
    except InvalidInput as exc:
        error = exc.message
    except ValidationError as exc:
        error = _message(exc)
    except ValueError as exc:
        error = str(exc)
    if error is not None:
        if wants_json:
            return JSONResponse({"error": error}, status_code=422)
        values = {k: v for k, v in form.items() if k != CSRF_FIELD}
        return _form_page(ctx, entity, project, values, error=error, status_code=422)
    # Failed generations are recorded too: their detail page says what went wrong.
    url = f"/ui/p/{project_id}/calls/{result['weave_call_id']}"
    if wants_json:
        return JSONResponse({"call_id": result["weave_call_id"], "url": url})
    return RedirectResponse(url, status_code=303)
