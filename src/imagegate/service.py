"""The generation service: validate → provider → store images → record the call."""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from PIL import Image

from imagegate import __version__
from imagegate.errors import InvalidInput
from imagegate.ids import uuid7
from imagegate.providers import Catalog, ImageRequest, ModelSpec, Provider, ProviderError
from imagegate.schemas import ImageGenerationCreateReq, ImageGenerationRequestInputs
from imagegate.store import AccountStore, CallStore, FileStore, Principal
from imagegate.urls import image_url

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
        signing_key: bytes,
    ) -> None:
        self.catalog = catalog
        self.providers = providers
        self.calls = calls
        self.files = files
        self.accounts = accounts
        self.signing_key = signing_key

    def prepare(self, inputs: ImageGenerationRequestInputs) -> tuple[ModelSpec, ImageRequest]:
        """Check inputs against the model's catalog entry; the effective request, or 422."""
        spec = self.catalog.get(inputs.model)
        if spec is None or spec.provider not in self.providers:
            available = ", ".join(n for n in self.catalog.names if self._servable(n))
            raise InvalidInput(
                ["body", "inputs", "model"],
                f"unknown model {inputs.model!r}; available models: {available}",
                inputs.model,
            )
        prompt = inputs.prompt
        if not prompt.strip():
            raise InvalidInput(["body", "inputs", "prompt"], "prompt must not be empty")
        if len(prompt) > spec.max_prompt_chars:
            raise InvalidInput(
                ["body", "inputs", "prompt"],
                f"prompt is {len(prompt)} characters; {spec.name} takes at most "
                f"{spec.max_prompt_chars}",
            )
        n = 1 if inputs.n is None else inputs.n
        if not 1 <= n <= spec.max_n:
            raise InvalidInput(
                ["body", "inputs", "n"], f"n must be between 1 and {spec.max_n}", inputs.n
            )
        for name in ("size", "seed"):
            if getattr(inputs, name) is not None and name not in spec.params:
                raise InvalidInput(["body", "inputs", name], f"{spec.name} does not take {name!r}")
        try:
            size = spec.check_size(inputs.size or spec.default_size)
        except ValueError as exc:
            raise InvalidInput(["body", "inputs", "size"], str(exc), inputs.size) from exc
        seed = inputs.seed
        if seed is None and "seed" in spec.params:
            # Drawn here and recorded in the call, so every generation can be reproduced.
            seed = secrets.randbelow(2**31)
        return spec, ImageRequest(
            model=spec.name,
            upstream_model=spec.upstream_model,
            prompt=prompt,
            n=n,
            size=size,
            seed=seed,
        )

    def _servable(self, name: str) -> bool:
        spec = self.catalog.get(name)
        return spec is not None and spec.provider in self.providers

    async def create(
        self, principal: Principal, req: ImageGenerationCreateReq, base_url: str
    ) -> dict[str, Any]:
        spec, request = self.prepare(req.inputs)
        response_format = req.inputs.response_format or "b64_json"
        track = req.track_llm_call is not False
        if response_format == "url" and not track:
            raise InvalidInput(
                ["body", "inputs", "response_format"],
                "response_format 'url' needs the images kept: use track_llm_call true or b64_json",
            )
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
                    "attributes": {"imagegate": {"version": __version__}},
                    "inputs": effective_inputs,
                    "wb_user_id": principal.user_id,
                }
            )

        provider_started = time.perf_counter()
        error: ProviderError | None = None
        images: list[StoredImage] = []
        usage: dict[str, int] = {}
        try:
            result = await self.providers[spec.provider].generate(request)
            usage = result.usage
            keep_in = project_id if track else None
            for index, image in enumerate(result.images):
                images.append(await self._keep(keep_in, image.data, index, image.revised_prompt))
        except ProviderError as exc:
            error = exc
        except Exception:
            # A bug or a storage failure: the caller gets a clear answer, the details go
            # to the log (never the response: they may carry paths or secrets).
            log.exception("generation %s failed", call_id)
            error = ProviderError(
                "internal error while generating; the server log has details",
                error_type="internal_error",
            )
        provider_ms = round((time.perf_counter() - provider_started) * 1000)

        created = int(started_at.timestamp())
        if error is not None:
            images = []
        if call_id:
            await self.calls.finish(
                call_id,
                ended_at=datetime.now(UTC),
                output=None if error else _call_output(created, request, spec, images, usage),
                summary=_summary(request, images, usage, provider_ms, error),
                exception=None if error is None else f"{error.error_type}: {error.message}",
            )
        if error is not None:
            body: dict[str, Any] = {"error": error.message, "error_type": error.error_type}
            if error.status_code is not None:
                body["status_code"] = error.status_code
            return {"response": body, "weave_call_id": call_id}
        data = [
            self._response_item(project_id, image, response_format, base_url) for image in images
        ]
        response = {
            "created": created,
            "data": data,
            "size": request.size,
            "output_format": spec.output_format,
            "usage": usage,
        }
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
    created: int,
    request: ImageRequest,
    spec: ModelSpec,
    images: list[StoredImage],
    usage: dict[str, int],
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
        "output_format": spec.output_format,
        "usage": usage,
    }


def _summary(
    request: ImageRequest,
    images: list[StoredImage],
    usage: dict[str, int],
    provider_ms: int,
    error: ProviderError | None,
) -> dict[str, Any]:
    model_usage = {
        "requests": 1,
        "images": len(images),
        "input_tokens": usage.get("input_tokens", 0),
        "output_tokens": usage.get("output_tokens", 0),
        "total_tokens": usage.get("total_tokens", 0),
    }
    summary: dict[str, Any] = {
        "usage": {request.model: model_usage},
        "provider_latency_ms": provider_ms,
        "images": len(images),
    }
    if error is not None:
        summary["error"] = {"type": error.error_type, "status_code": error.status_code}
    return summary
