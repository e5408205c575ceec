"""Models served through LiteLLM (`pip install imagegate[litellm]`): Vertex AI, Bedrock,
and the rest of LiteLLM's image providers, with imagegate's retries and recording."""

from __future__ import annotations

import functools
import importlib.util
import io
import os
from types import ModuleType
from typing import Any

from imagegate.providers.attempts import generate_with_retries
from imagegate.providers.base import ImageRequest, InputImage, ProviderResult


def available() -> bool:
    return importlib.util.find_spec("litellm") is not None


@functools.cache
def _litellm() -> ModuleType:
    # Imported on first use: the import takes seconds, which every CLI command and server
    # start would otherwise pay. LiteLLM also fetches its price list from the internet at
    # import unless told not to; this server contacts only the providers it is set up for.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True  # it prints help text to stdout otherwise
    return litellm


def _file(image: InputImage) -> io.BytesIO:
    """A named file object: LiteLLM's edit routes read files, not (name, bytes) tuples."""
    file = io.BytesIO(image.data)
    file.name = image.filename or f"image.{image.extension}"
    return file


class LiteLLMProvider:
    async def generate(self, request: ImageRequest) -> ProviderResult:
        spec = request.spec
        kwargs: dict[str, Any] = {
            "model": spec.upstream_model,
            "prompt": request.prompt,
            "n": request.n,
            "size": request.size,
            "timeout": request.timeout_s,
            **request.params,
            **spec.provider_params,
        }
        if spec.base_url:
            kwargs["api_base"] = spec.base_url
        api_key = request.api_key.reveal() if request.api_key else None
        if api_key:
            kwargs["api_key"] = api_key
        litellm = _litellm()
        endpoint = litellm.aimage_edit if request.is_edit else litellm.aimage_generation

        async def call() -> Any:
            if request.is_edit:
                # LiteLLM's edit route sends the files upstream as multipart parts; new
                # file objects for each attempt, since an attempt reads them to the end.
                files = [_file(image) for image in request.images]
                kwargs["image"] = files[0] if len(files) == 1 else files
                if request.mask is not None:
                    kwargs["mask"] = _file(request.mask)
            return await endpoint(**kwargs)

        # LiteLLM answers each image's base64 whole; it is decoded into the request's
        # files a piece at a time, so the image itself is never a second whole copy.
        return await generate_with_retries(
            spec, call, request.new_file, timeout_s=request.timeout_s, api_key=api_key
        )
