"""The generation service: validate → provider → store images → record the call."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import os
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
from imagegate.providers.base import ItemError, ProviderResult, Secret
from imagegate.schemas import ImageGenerationCreateReq
from imagegate.store import AccountStore, CallStore, FileStore, Principal
from imagegate.store.secrets import SecretStore, SecretUnreadable
from imagegate.urls import image_url
from imagegate.validation import effective_request, resolve_model

if TYPE_CHECKING:
    from imagegate.metrics import Metrics

log = logging.getLogger("imagegate.generation")

OP_NAME = "weave.image_generation_create"
CONTENT_TYPE = "weave.type_wrappers.Content.content.Content"


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

    def prepare(self, req: ImageGenerationCreateReq) -> ImageRequest:
        """The effective request, or InvalidInput (422) before anything is stored or paid."""
        spec = resolve_model(self.catalog, set(self.providers), req.inputs.model)
        request = effective_request(spec, req.inputs)
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
        try:
            stored = await self.secrets.get(entity, name)
        except SecretUnreadable as exc:  # an operator's mistake: say which, not "internal"
            raise ProviderError(str(exc), error_type="auth") from exc
        value = stored or os.environ.get(name)
        return Secret(value) if value else None

    async def create(
        self, principal: Principal, req: ImageGenerationCreateReq, base_url: str
    ) -> dict[str, Any]:
        request = self.prepare(req)
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
        warnings = []
        if spec.state() == "deprecated":
            warnings.append(spec.retirement_message().replace("was shut down", "shuts down"))
        call_id = uuid7() if track else None
        started_at = datetime.now(UTC)
        if call_id:
            await self.accounts.ensure_project(project_id)
            # Recorded before the provider is paid, so no generation goes unrecorded.
            await self.calls.start(
                {
                    "id": call_id,
                    "project_id": project_id,
                    "op_name": OP_NAME,
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
        images: list[StoredImage] = []
        try:
            api_key = await self._api_key(request, project_id.split("/", 1)[0])
            request = dataclasses.replace(request, api_key=api_key)
            result = await self.providers[spec.provider].generate(request)
            provider_s = time.perf_counter() - provider_started
            keep_in = project_id if track else None
            for index, image in enumerate(result.images):
                images.append(await self._keep(keep_in, image.data, index, image.revised_prompt))
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
            images = []
        usage = normalize_usage(result.usage)
        summary = _summary(request, images, usage, provider_ms, error, result)
        exception = _exception_text(error, result.errors, request.n)
        created = int(started_at.timestamp())
        if call_id:
            await self.calls.finish(
                call_id,
                ended_at=datetime.now(UTC),
                output=None if error else _call_output(created, request, images, result.usage),
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
            "size": request.size,
            "output_format": request.params.get("output_format", spec.output_format),
            **{k: request.params[k] for k in ("quality", "background") if k in request.params},
            "usage": result.usage,
        }
        if result.errors:
            response["errors"] = [e.as_dict() for e in result.errors]
        if warnings:
            response["warnings"] = warnings
        return {"response": response, "weave_call_id": call_id}

    async def _keep(
        self, project_id: str | None, data: bytes, index: int, revised_prompt: str | None
    ) -> StoredImage:
        """Inspect an image and, for a tracked call, store it with its Weave metadata file."""
        try:
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                mimetype = Image.MIME.get(img.format or "", "application/octet-stream")
        except Exception as exc:
            raise ProviderError("provider returned data that is not an image") from exc
        digest = metadata_digest = None
        if project_id is not None:
            try:
                digest = await self.files.put(project_id, data)
                metadata = _content_metadata(digest, data, mimetype, index, width, height)
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


def _content_metadata(
    digest: str, data: bytes, mimetype: str, index: int, width: int, height: int
) -> bytes:
    ext = mimetype.rsplit("/", 1)[-1]
    metadata = {
        "size": len(data),
        "mimetype": mimetype,
        "digest": digest,
        "filename": f"image_{index}.{ext}",
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


def _call_output(
    created: int, request: ImageRequest, images: list[StoredImage], usage: dict[str, Any]
) -> dict[str, Any]:
    """The provider-shaped response as stored: each image a Content reference, no base64."""
    data = []
    for image in images:
        assert image.digest and image.metadata_digest
        item: dict[str, Any] = {
            "image": content_ref(image.digest, image.metadata_digest),
            "content": image.content(),
        }
        if image.revised_prompt:
            item["revised_prompt"] = image.revised_prompt
        data.append(item)
    return {
        "created": created,
        "data": data,
        "size": request.size,
        "output_format": request.params.get("output_format", request.spec.output_format),
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
