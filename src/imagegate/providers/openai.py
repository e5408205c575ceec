"""OpenAI and OpenAI-compatible image endpoints (and Azure OpenAI), via the official SDK.

The SDK's own retries are off: imagegate retries itself so that every attempt (status,
latency, wait) is recorded in the call. A request for more images than the model makes
per request (dall-e-3: one) is split into parallel requests; when some of them fail,
the images of the others are kept and the failures are reported per item.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imagegate.lazy import lazy_module

if TYPE_CHECKING:
    import openai
else:  # about a second to import: only when a request first needs it
    openai = lazy_module("openai")

from imagegate.errors import (
    ContentPolicyViolation,
    InvalidProviderOutput,
    ProviderAuthError,
    ProviderError,
    ProviderServerError,
)
from imagegate.pricing import add_usage
from imagegate.providers.answer_stream import (
    AnswerScanner,
    EventScanner,
    MalformedAnswer,
)
from imagegate.providers.attempts import MODERATION_CODES, generate_with_retries, upstream_error
from imagegate.providers.base import (
    ImageFile,
    ImageFiles,
    ImageRequest,
    InputImage,
    ItemError,
    PartialImage,
    PartialSink,
    ProviderResult,
)
from imagegate.providers.catalog import ModelSpec

DEFAULT_AZURE_API_VERSION = "2025-04-01-preview"


class OpenAIProvider:
    def __init__(self, *, azure: bool = False) -> None:
        self.azure = azure
        self._clients: dict[tuple[str | None, str | None, str], openai.AsyncOpenAI] = {}

    def _client(self, spec: ModelSpec, api_key: str) -> openai.AsyncOpenAI:
        # One client (one connection pool) per endpoint and key; the key is kept only
        # inside the SDK client, and the cache is keyed by its hash.
        cache_key = (spec.base_url, spec.api_version, hashlib.sha256(api_key.encode()).hexdigest())
        client = self._clients.get(cache_key)
        if client is None:
            # The transport module imports the SDK: only when a client is first needed.
            from imagegate.providers.transport import http_client

            if self.azure:
                client = openai.AsyncAzureOpenAI(
                    api_key=api_key,
                    azure_endpoint=spec.base_url or "",
                    api_version=spec.api_version or DEFAULT_AZURE_API_VERSION,
                    max_retries=0,
                    http_client=http_client(),
                )
            else:
                client = openai.AsyncOpenAI(
                    api_key=api_key,
                    base_url=spec.base_url or None,
                    max_retries=0,
                    http_client=http_client(),
                )
            self._clients[cache_key] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    async def generate(self, request: ImageRequest) -> ProviderResult:
        if request.api_key is None:
            raise ProviderAuthError(
                f"no API key for {request.model}: set {request.spec.key_env} in the "
                "server's environment or with `imagegate secrets set`"
            )
        per_request = max(1, request.spec.max_n_per_request)
        batches = [min(per_request, request.n - i) for i in range(0, request.n, per_request)]
        outcomes = await asyncio.gather(
            *(self._request(request, n, index) for index, n in enumerate(batches)),
            return_exceptions=True,
        )
        result = ProviderResult(images=[])
        failures: list[ProviderError] = []
        for n, outcome in zip(batches, outcomes, strict=True):
            if isinstance(outcome, ProviderError):
                failures.append(outcome)
                result.attempts.extend(outcome.attempts)
                error = ItemError(outcome.message, outcome.error_type, outcome.upstream_status)
                result.errors.extend([error] * n)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                result.images.extend(outcome.images)
                result.errors.extend(outcome.errors)
                result.attempts.extend(outcome.attempts)
                result.usage = add_usage(result.usage, outcome.usage)
        if not result.images and failures:
            first = failures[0]
            first.attempts = result.attempts
            raise first
        return result

    def _kwargs(self, request: ImageRequest, n: int) -> dict[str, Any]:
        """The SDK call's arguments: a generation's, or an edit's with its files."""
        spec = request.spec
        kwargs: dict[str, Any] = {
            "model": spec.upstream_model,
            "prompt": request.prompt,
            "n": n,
            "size": request.size,
            **request.params,
        }
        if spec.upstream_response_format:
            kwargs["response_format"] = spec.upstream_response_format
        if spec.provider_params:
            kwargs["extra_body"] = spec.provider_params
        if not request.is_edit and not self.azure:
            # A generation's JSON goes as the SDK's documented `extra_body`, the prompt
            # alone as an argument: the SDK checks each argument against its annotation,
            # hashing `Literal[...]` unions on every call (~0.25 ms a request, a twentieth
            # of a small generation's CPU). The JSON sent is the same. (Azure reads the
            # deployment from the `model` argument, and an edit's files need the SDK's
            # own handling.)
            prompt, extra = kwargs.pop("prompt"), kwargs.pop("extra_body", {})
            return {"prompt": prompt, "extra_body": {**kwargs, **extra}}
        if request.is_edit:
            # The SDK sends these as multipart parts: `image` for one, `image[]` for more.
            files = [_file(image) for image in request.images]
            kwargs["image"] = files[0] if len(files) == 1 else files
            if request.mask is not None:
                kwargs["mask"] = _file(request.mask)
            if request.markup is not None:
                kwargs["markup"] = _file(request.markup)
        return kwargs

    async def _request(self, request: ImageRequest, n: int, batch: int) -> ProviderResult:
        spec = request.spec
        assert request.api_key is not None
        api_key = request.api_key.reveal()
        images = self._client(spec, api_key).images.with_streaming_response
        endpoint = images.edit if request.is_edit else images.generate
        kwargs = self._kwargs(request, n)
        timeout_s = request.timeout_s

        async def call() -> Any:
            # The answer is read as it arrives, each image decoded into its own file.
            return await read_answer(endpoint, kwargs, timeout_s, request.new_file)

        return await generate_with_retries(
            spec, call, request.new_file, timeout_s=timeout_s, batch=batch, api_key=api_key
        )

    async def generate_streaming(
        self, request: ImageRequest, on_partial: PartialSink
    ) -> ProviderResult:
        """One image over the upstream's server-sent events, read as they arrive: each
        partial image is decoded into a file of its own and goes to `on_partial` as soon
        as its event ends, and the final one likewise (no image is ever whole in memory).
        A stream that fails before its first partial is retried like any request; after
        one, the failure is final (the caller has already seen part of this attempt)."""
        spec = request.spec
        if request.api_key is None:
            return await self.generate(request)  # raises the missing-key error
        api_key = request.api_key.reveal()
        images = self._client(spec, api_key).images.with_streaming_response
        endpoint = images.edit if request.is_edit else images.generate
        kwargs = self._kwargs(request, 1)
        kwargs.update(stream=True, partial_images=request.partial_images)
        timeout_s = request.timeout_s

        async def call() -> Any:
            scanner = EventScanner(request.new_file)
            sent = 0
            try:
                async with endpoint(**kwargs, timeout=timeout_s) as response:
                    async for chunk in _answer_chunks(response):
                        for event in scanner.feed(chunk):
                            data = event.data if isinstance(event.data, dict) else {}
                            if data.get("error"):  # an `error` event: final
                                raise _stream_error(data["error"], "", api_key)
                            kind = str(data.get("type") or "")
                            if kind.endswith(".completed"):
                                image = _StreamedImage(None, file=event.file, invalid=event.invalid)
                                return _Streamed([image], data.get("usage"))
                            if not kind.endswith(".partial_image"):
                                continue
                            if event.file is None or event.invalid:
                                raise InvalidProviderOutput(
                                    "provider returned invalid base64 image data"
                                )
                            index = int(data.get("partial_image_index") or 0)
                            await on_partial(PartialImage(index, event.file))
                            sent += 1
                        if scanner.done:
                            break
            except (openai.APIStatusError, openai.APIConnectionError) as exc:
                if not sent:
                    raise  # nothing reached the caller: retried as usual
                body = exc.body if isinstance(exc.body, dict) else {}
                raise _stream_error(body, exc.message, api_key) from None
            raise InvalidProviderOutput("the provider's stream ended without a completed image")

        return await generate_with_retries(
            spec, call, request.new_file, timeout_s=timeout_s, api_key=api_key
        )


@dataclass
class _StreamedImage:
    b64_json: str | None
    url: str | None = None
    revised_prompt: str | None = None
    file: ImageFile | None = None  # where its base64 was decoded to
    invalid: str | None = None  # why that base64 was refused


async def read_answer(
    endpoint: Any, kwargs: dict[str, Any], timeout_s: float, new_file: ImageFiles
) -> _Streamed:
    """One request whose `ImagesResponse` is read as it arrives: each image's base64 is
    decoded into a file of its own, never held whole. On any failure the files made so
    far are discarded."""
    scanner = AnswerScanner(new_file)
    try:
        async with endpoint(**kwargs, timeout=timeout_s) as response:
            async for chunk in _answer_chunks(response):
                scanner.feed(chunk)
        answer = scanner.close()
        if not isinstance(answer, dict):
            raise MalformedAnswer("not a JSON object")
        items = []
        for item in answer.get("data") or []:
            if not isinstance(item, dict):
                raise MalformedAnswer("an image that is not a JSON object")
            number = item.get("b64_json")
            image = _StreamedImage(None, item.get("url"), item.get("revised_prompt"))
            if isinstance(number, str):
                writer = scanner.writers[int(number)]
                if writer.empty:  # "": no data (a URL, or nothing at all)
                    writer.sink.discard()  # type: ignore[attr-defined]
                else:
                    image.file = writer.sink  # type: ignore[assignment]
                    image.invalid = scanner.errors.get(int(number))
            items.append(image)
        # Usage as the SDK's own parsing gives it (every field it knows), so records
        # and answers are what they were when the SDK read the whole body.
        usage = openai.types.ImagesResponse.construct(**{**answer, "data": []}).usage
    except BaseException:
        for writer in scanner.writers:
            writer.sink.discard()  # type: ignore[attr-defined]
        raise
    return _Streamed(items, usage)


async def _answer_chunks(response: Any) -> AsyncIterator[bytes]:
    """The answer's bytes as they arrive; the transport's errors as the SDK's own calls
    map them (a timeout, else a connection error)."""
    iterator = aiter(response.iter_bytes())
    while True:
        try:
            chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except openai.APIError:
            raise
        except Exception as exc:
            kind = openai.APITimeoutError if "Timeout" in type(exc).__name__ else None
            if kind is not None:
                raise kind(request=response.http_request) from exc
            raise openai.APIConnectionError(request=response.http_request) from exc
        yield chunk


@dataclass
class _Streamed:
    """A completed stream, in the shape `read_images` reads (ImagesResponse's)."""

    data: list[_StreamedImage]
    usage: Any


def _file(image: InputImage) -> tuple[str, bytes, str]:
    return (image.filename or f"image.{image.extension}", image.data, image.mimetype)


def _stream_error(body: Any, fallback: str, api_key: str | None) -> ProviderError:
    """An `error` event (or a failure) in the middle of an upstream stream."""
    _, code, message = upstream_error(body, fallback or "the stream failed", api_key)
    kind = ContentPolicyViolation if code in MODERATION_CODES else ProviderServerError
    return kind(message)
