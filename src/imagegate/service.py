"""The generation service: validate → provider → store images → record the call."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from PIL import Image

from imagegate import __version__
from imagegate.errors import InvalidInput
from imagegate.ids import uuid7
from imagegate.pricing import compute_cost, normalize_usage
from imagegate.providers import Catalog, ImageRequest, Provider, ProviderError
from imagegate.providers.base import (
    InputImage,
    ItemError,
    PartialImage,
    PartialSink,
    ProviderResult,
    Secret,
)
from imagegate.schemas import ImageGenerationCreateReq
from imagegate.store import AccountStore, CallStore, FileStore, Principal
from imagegate.store.secrets import SecretStore
from imagegate.uploads import Upload, check_edit_inputs
from imagegate.urls import SVG_MIMETYPE, image_url, sniff_image_type
from imagegate.validation import effective_request, resolve_model

if TYPE_CHECKING:
    from imagegate.metrics import Metrics

log = logging.getLogger("imagegate.generation")

OP_NAME = "weave.image_generation_create"
EDIT_OP_NAME = "weave.image_edit_create"
CONTENT_TYPE = "weave.type_wrappers.Content.content.Content"
EXTENSIONS = {SVG_MIMETYPE: "svg"}  # else the subtype, as before: "png", "jpeg", ...
_SVG_SIDE = re.compile(rb'<svg[^>]*?\s(width|height)="(\d+)(?:px)?"')


@dataclass(frozen=True)
class StoredImage:
    data: bytes
    digest: str | None  # None when the call is not tracked (nothing is stored)
    metadata_digest: str | None
    mimetype: str
    width: int
    height: int
    revised_prompt: str | None

    def content(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "mimetype": self.mimetype,
            "size": len(self.data),
            "width": self.width,
            "height": self.height,
        }


class GenerationService:
    def __init__(
        self,
        *,
        catalog: Catalog,
        providers: dict[str, Provider],
        calls: CallStore,
        files: FileStore,
        accounts: AccountStore,
        secrets: SecretStore,
        signing_key: bytes,
        metrics: Metrics | None = None,
    ) -> None:
        self.catalog = catalog
        self.providers = providers
        self.calls = calls
        self.files = files
        self.accounts = accounts
        self.secrets = secrets
        self.signing_key = signing_key
        self.metrics = metrics

    def check_edit(
        self, req: ImageGenerationCreateReq, uploads: list[Upload], max_total_bytes: int
    ) -> tuple[tuple[InputImage, ...], InputImage | None]:
        """The images to edit and the mask, checked against the model (InvalidInput if not)."""
        spec = resolve_model(self.catalog, set(self.providers), req.inputs.model)
        if not spec.edits:
            effective_request(spec, req.inputs, edit=True)  # raises: names the editors
        return check_edit_inputs(spec, uploads, max_total_bytes=max_total_bytes)

    def prepare(
        self,
        req: ImageGenerationCreateReq,
        *,
        images: tuple[InputImage, ...] = (),
        mask: InputImage | None = None,
        allow_stream: bool = False,
    ) -> ImageRequest:
        """The effective request, or InvalidInput (422) before anything is stored or paid."""
        spec = resolve_model(self.catalog, set(self.providers), req.inputs.model)
        request = effective_request(spec, req.inputs, allow_stream=allow_stream, edit=bool(images))
        if images:
            request = dataclasses.replace(request, images=images, mask=mask)
        if req.inputs.response_format == "url" and req.track_llm_call is False:
            raise InvalidInput(
                ["body", "inputs", "response_format"],
                "response_format 'url' needs the images kept: use track_llm_call true or b64_json",
            )
        return request

    async def _api_key(self, request: ImageRequest, entity: str) -> Secret | None:
        """The entity's own key if it set one, else the server's environment."""
        name = request.spec.key_env
        if not name:
            return None
        value = await self.secrets.get(entity, name) or os.environ.get(name)
        return Secret(value) if value else None

    async def create(
        self,
        principal: Principal,
        req: ImageGenerationCreateReq,
        base_url: str,
        *,
        images: tuple[InputImage, ...] = (),
        mask: InputImage | None = None,
        on_partial: PartialSink | None = None,
    ) -> dict[str, Any]:
        """Generate (or, with `images`, edit) and record the call. With `on_partial` the
        request may stream: each partial image goes to it as soon as the provider has it."""
        request = self.prepare(req, images=images, mask=mask, allow_stream=on_partial is not None)
        spec = request.spec
        response_format = req.inputs.response_format or "b64_json"
        track = req.track_llm_call is not False
        project_id = req.project_id
        effective_inputs = {
            "model": request.model,
            "prompt": request.prompt,
            "n": request.n,
            "size": request.size,
            "response_format": response_format,
            **({"seed": request.seed} if request.seed is not None else {}),
            **request.params,
        }
        if request.stream:
            effective_inputs.update(stream=True, partial_images=request.partial_images)
        warnings = []
        if spec.state() == "deprecated":
            warnings.append(spec.retirement_message().replace("was shut down", "shuts down"))
        call_id = uuid7() if track else None
        started_at = datetime.now(UTC)
        if call_id:
            await self.accounts.ensure_project(project_id)
            if request.is_edit:
                # The inputs are kept like outputs: Content references to stored files.
                effective_inputs.update(await self._keep_inputs(project_id, request))
            # Recorded before the provider is paid, so no generation goes unrecorded.
            await self.calls.start(
                {
                    "id": call_id,
                    "project_id": project_id,
                    "op_name": EDIT_OP_NAME if request.is_edit else OP_NAME,
                    "display_name": None,
                    "trace_id": uuid7(),
                    "parent_id": None,
                    "started_at": started_at,
                    "attributes": {
                        "imagegate": {
                            "version": __version__,
                            "provider": spec.provider,
                            "upstream_model": spec.upstream_model,
                        }
                    },
                    "inputs": effective_inputs,
                    "wb_user_id": principal.user_id,
                }
            )

        provider_started = time.perf_counter()
        provider_s: float | None = None  # the provider alone, without storing
        error: ProviderError | None = None
        result = ProviderResult(images=[])
        stored: list[StoredImage] = []
        partials: list[PartialImage] = []
        kept_partials: list[StoredImage] = []

        async def collect(partial: PartialImage) -> None:
            partials.append(partial)
            if on_partial is not None:
                await on_partial(partial)

        try:
            api_key = await self._api_key(request, project_id.split("/", 1)[0])
            request = dataclasses.replace(request, api_key=api_key)
            provider = self.providers[spec.provider]
            streaming = getattr(provider, "generate_streaming", None)
            if request.stream and streaming is not None:
                result = await streaming(request, collect)
            else:
                result = await provider.generate(request)
            provider_s = time.perf_counter() - provider_started
            keep_in = project_id if track else None
            for index, image in enumerate(result.images):
                stored.append(await self._keep(keep_in, image.data, index, image.revised_prompt))
            for partial in partials:
                data = base64.b64decode(partial.b64_json)
                kept_partials.append(
                    await self._keep(keep_in, data, partial.index, None, name="partial")
                )
        except ProviderError as exc:
            error = exc
            result.attempts = exc.attempts or result.attempts
        except Exception:
            # A bug: the caller gets a clear answer, the details go to the log (never the
            # response: they may carry paths or secrets).
            log.exception("generation %s failed", call_id)
            error = ProviderError(
                "internal error while generating; the server log has details",
                error_type="internal_error",
            )
        provider_ms = round((time.perf_counter() - provider_started) * 1000)
        if error is not None:
            stored = []
        images = stored
        usage = normalize_usage(result.usage)
        summary = _summary(request, images, usage, provider_ms, error, result)
        exception = _exception_text(error, result.errors, request.n)
        created = int(started_at.timestamp())
        size = _result_size(request, images)
        if call_id:
            output = None
            if error is None:
                output = _call_output(created, request, images, result.usage, size)
                if kept_partials:
                    output["partial_images"] = [_content_item(p) for p in kept_partials]
            await self.calls.finish(
                call_id,
                ended_at=datetime.now(UTC),
                output=output,
                summary=summary,
                exception=exception,
            )
        if self.metrics is not None:
            self.metrics.generation(request.model, summary, provider_s or provider_ms / 1000)
        if error is not None:
            body: dict[str, Any] = {"error": error.message, "error_type": error.error_type}
            if error.status_code is not None:
                body["status_code"] = error.status_code
            body.update(error.details)
            return {"response": body, "weave_call_id": call_id}
        response: dict[str, Any] = {
            "created": created,
            "data": [
                self._response_item(project_id, image, response_format, base_url)
                for image in images
            ],
            "size": size,
            "output_format": request.output_format,
            **{k: request.params[k] for k in ("quality", "background") if k in request.params},
            "usage": result.usage,
        }
        safety_identifier = request.params.get("safety_identifier") or request.params.get("user")
        if safety_identifier:
            response["safety_identifier"] = safety_identifier
        if result.errors:
            response["errors"] = [e.as_dict() for e in result.errors]
        if warnings:
            response["warnings"] = warnings
        return {"response": response, "weave_call_id": call_id}

    async def _keep_inputs(self, project_id: str, request: ImageRequest) -> dict[str, Any]:
        """Store an edit's input images and mask; their Content references for `inputs`."""
        refs = []
        for index, image in enumerate(request.images):
            kept = await self._keep(project_id, image.data, index, None, name="input")
            refs.append(content_ref(kept.digest or "", kept.metadata_digest or ""))
        inputs: dict[str, Any] = {"image": refs}
        if request.mask is not None:
            kept = await self._keep(project_id, request.mask.data, 0, None, name="mask")
            inputs["mask"] = content_ref(kept.digest or "", kept.metadata_digest or "")
        return inputs

    async def _keep(
        self,
        project_id: str | None,
        data: bytes,
        index: int,
        revised_prompt: str | None,
        *,
        name: str = "image",
    ) -> StoredImage:
        """Inspect an image and, for a tracked call, store it with its Weave metadata file."""
        mimetype, width, height = inspect_image(data)
        digest = metadata_digest = None
        if project_id is not None:
            try:
                digest = await self.files.put(project_id, data)
                metadata = _content_metadata(
                    digest, data, mimetype, f"{name}_{index}", width, height
                )
                metadata_digest = await self.files.put(project_id, metadata)
            except OSError as exc:
                log.error("storing an image for %s failed: %s", project_id, exc)
                raise ProviderError(
                    "the images could not be stored; the server log has details",
                    error_type="storage_error",
                ) from exc
        return StoredImage(data, digest, metadata_digest, mimetype, width, height, revised_prompt)

    def _response_item(
        self, project_id: str, image: StoredImage, response_format: str, base_url: str
    ) -> dict[str, Any]:
        item: dict[str, Any]
        if response_format == "url" and image.digest:
            url = image_url(base_url, self.signing_key, project_id, image.digest, image.mimetype)
            item = {"url": url}
        else:
            item = {"b64_json": base64.b64encode(image.data).decode()}
        if image.revised_prompt:
            item["revised_prompt"] = image.revised_prompt
        item["content"] = image.content()
        return item


def _exception_text(error: ProviderError | None, errors: list[ItemError], n: int) -> str | None:
    if error is not None:
        return f"{error.error_type}: {error.message}"
    if errors:
        # Some images made it, some did not: the call is marked as failed so it shows up
        # among errors, while its output keeps the images that were made.
        first = errors[0]
        return (
            f"partial_failure: {len(errors)} of {n} images failed "
            f"({first.error_type}: {first.message})"
        )
    return None


def inspect_image(data: bytes) -> tuple[str, int, int]:
    """(true mimetype, width, height) of image bytes, or ProviderError. SVG is markup,
    recognised by its root element; every other type is what Pillow reads it as."""
    if sniff_image_type(data) == SVG_MIMETYPE:
        sides = {m[1].decode(): int(m[2]) for m in _SVG_SIDE.finditer(data[:4096])}
        return SVG_MIMETYPE, sides.get("width", 0), sides.get("height", 0)
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            return Image.MIME.get(img.format or "", "application/octet-stream"), width, height
    except Exception as exc:
        raise ProviderError("provider returned data that is not an image") from exc


def _content_metadata(
    digest: str, data: bytes, mimetype: str, stem: str, width: int, height: int
) -> bytes:
    ext = EXTENSIONS.get(mimetype, mimetype.rsplit("/", 1)[-1])
    metadata = {
        "size": len(data),
        "mimetype": mimetype,
        "digest": digest,
        "filename": f"{stem}.{ext}",
        "content_type": "bytes",
        "input_type": "bytes",
        "encoding": "utf-8",
        "metadata": {"width": width, "height": height},
        "extension": f".{ext}",
    }
    return json.dumps(metadata, sort_keys=True).encode()


def content_ref(content_digest: str, metadata_digest: str) -> dict[str, Any]:
    """A Weave `Content` object as it appears inside a stored call."""
    return {
        "_type": "CustomWeaveType",
        "weave_type": {"type": CONTENT_TYPE},
        "files": {"content": content_digest, "metadata.json": metadata_digest},
    }


def _content_item(image: StoredImage) -> dict[str, Any]:
    assert image.digest and image.metadata_digest
    return {"image": content_ref(image.digest, image.metadata_digest), "content": image.content()}


def _result_size(request: ImageRequest, images: list[StoredImage]) -> str:
    """The size answered: an edit's is what came out (a model may keep its input's size)."""
    if request.is_edit and images and images[0].width:
        return f"{images[0].width}x{images[0].height}"
    return request.size


def _call_output(
    created: int,
    request: ImageRequest,
    images: list[StoredImage],
    usage: dict[str, Any],
    size: str,
) -> dict[str, Any]:
    """The provider-shaped response as stored: each image a Content reference, no base64."""
    data = []
    for image in images:
        item = _content_item(image)
        if image.revised_prompt:
            item["revised_prompt"] = image.revised_prompt
        data.append(item)
    return {
        "created": created,
        "data": data,
        "size": size,
        "output_format": request.output_format,
        "usage": usage,
    }


def _summary(
    request: ImageRequest,
    images: list[StoredImage],
    usage: dict[str, int],
    provider_ms: int,
    error: ProviderError | None,
    result: ProviderResult,
) -> dict[str, Any]:
    cost = compute_cost(
        request.spec,
        usage,
        images=len(images),
        quality=request.params.get("quality"),  # type: ignore[arg-type]
        size=request.size,
    )
    summary: dict[str, Any] = {
        "usage": {request.model: {"requests": 1, "images": len(images), **usage}},
        "costs": {request.model: cost},
        "provider_latency_ms": provider_ms,
        "images": len(images),
        "attempts": result.attempts,
    }
    if result.errors:
        summary["errors"] = [e.as_dict() for e in result.errors]
    if error is not None:
        summary["error"] = {
            "type": error.error_type,
            "status_code": error.status_code,
            **error.details,
        }
    return summary
