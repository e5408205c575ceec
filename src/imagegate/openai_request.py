"""What an OpenAI-door request asks for: its project, and its fields read from OpenAI's
JSON or multipart body into the service's inputs and uploads."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from imagegate.digest import weave_digest
from imagegate.errors import Forbidden, InvalidInput
from imagegate.idempotency import request_hash
from imagegate.names import split_project_id
from imagegate.providers.base import EditFiles
from imagegate.schemas import ImageGenerationCreateReq, ImageGenerationRequestInputs
from imagegate.store import Principal
from imagegate.uploads import Upload

PROJECT_HEADER = "OpenAI-Project"
DEFAULT_PROJECT = "default"
# Multipart fields that carry numbers or booleans (everything in a form is text).
INT_FIELDS = ("n", "output_compression", "partial_images", "frame_count", "frame_duration_ms")
BOOL_FIELDS = ("stream",)
FILE_FIELDS = ("image", "image[]", "mask", "markup")
MAX_FORM_FILES = 17  # 16 images and a mask (or markup)


def project_for(principal: Principal, headers: Mapping[str, str]) -> str:
    """The `OpenAI-Project` header (`entity/project`, or a project in the caller's
    entity), else the key's default project, else `<entity>/default`; 403 if not a member
    who may generate."""
    entity = (
        principal.user_name
        if principal.user_name in principal.entities
        else min(principal.entities, default=principal.user_name)
    )
    header = headers.get(PROJECT_HEADER)
    if header and header.strip():
        value = header.strip()
        project_id = value if "/" in value else f"{entity}/{value}"
        try:
            split_project_id(project_id)
        except ValueError as exc:
            raise InvalidInput(["header", "openai-project"], str(exc)) from exc
    else:
        project_id = principal.default_project or f"{entity}/{DEFAULT_PROJECT}"
    project_entity = project_id.split("/", 1)[0]
    if project_entity not in principal.entities:
        raise Forbidden(f"you do not have access to project {project_id!r}")
    # Everything at this door generates: viewers only read.
    if not principal.can_generate(project_entity):
        raise Forbidden(
            f"you are a viewer in team {project_entity!r}: viewers can read but not generate"
        )
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
    if len([u for u in uploads if u.field in ("image", "image[]")]) > MAX_FORM_FILES - 1:
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
    edit: EditFiles | None = None

    @property
    def is_edit(self) -> bool:
        return self.edit is not None

    @property
    def stream(self) -> bool:
        return bool(self.req.inputs.stream)

    def body_hash(self) -> str:
        """What "the same request" means for `Idempotency-Key`: the inputs and the
        bytes of every file."""
        edit = self.edit or EditFiles(())
        digests = [weave_digest(i.data) for i in edit.images]
        for name, overlay in (("mask", edit.mask), ("markup", edit.markup)):
            if overlay is not None:
                digests.append(f"{name}:{weave_digest(overlay.data)}")
        return hashlib.sha256((request_hash(self.req) + "|".join(digests)).encode()).hexdigest()
