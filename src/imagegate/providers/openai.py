"""OpenAI and OpenAI-compatible image endpoints (and Azure OpenAI), via the official SDK.

The SDK's own retries are off: imagegate retries itself so that every attempt (status,
latency, wait) is recorded in the call. A request for more images than the model makes
per request (dall-e-3: one) is split into parallel requests; when some of them fail,
the images of the others are kept and the failures are reported per item.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import openai

from imagegate.pricing import add_usage
from imagegate.providers.base import (
    GeneratedImage,
    ImageRequest,
    ItemError,
    ProviderError,
    ProviderResult,
)
from imagegate.providers.catalog import ModelSpec
from imagegate.providers.download import fetch_image

MAX_RETRY_WAIT_S = 30.0
DEFAULT_AZURE_API_VERSION = "2025-04-01-preview"
# What an API key looks like inside an upstream error message ("Incorrect API key
# provided: sk-abc***xyz"): such text is masked even when it is not our exact key.
KEY_PATTERN = re.compile(r"\b(sk|ig)-[A-Za-z0-9_*\-]{4,}")


def redact(text: str, api_key: str | None) -> str:
    if api_key:
        text = text.replace(api_key, "***")
    return KEY_PATTERN.sub(r"\1-***", text)


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
            if self.azure:
                client = openai.AsyncAzureOpenAI(
                    api_key=api_key,
                    azure_endpoint=spec.base_url or "",
                    api_version=spec.api_version or DEFAULT_AZURE_API_VERSION,
                    max_retries=0,
                )
            else:
                client = openai.AsyncOpenAI(
                    api_key=api_key, base_url=spec.base_url or None, max_retries=0
                )
            self._clients[cache_key] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    async def generate(self, request: ImageRequest) -> ProviderResult:
        if request.api_key is None:
            raise ProviderError(
                f"no API key for {request.model}: set {request.spec.key_env} in the "
                "server's environment or with `imagegate secrets set`",
                error_type="auth",
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
                error = ItemError(outcome.message, outcome.error_type, outcome.status_code)
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

    async def _request(self, request: ImageRequest, n: int, batch: int) -> ProviderResult:
        spec = request.spec
        assert request.api_key is not None
        api_key = request.api_key.reveal()
        client = self._client(spec, api_key)
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

        async def call() -> Any:
            return await client.images.generate(**kwargs, timeout=spec.timeout_s)

        return await generate_with_retries(spec, call, batch=batch, api_key=api_key)


async def generate_with_retries(
    spec: ModelSpec,
    call: Callable[[], Awaitable[Any]],
    *,
    batch: int = 0,
    api_key: str | None = None,
) -> ProviderResult:
    """Run `call` (one provider request answering OpenAI's ImagesResponse shape) with
    the model's timeout and retry policy, recording every attempt.

    Errors are read from OpenAI's exception types, which LiteLLM's exceptions subclass,
    so this serves every provider that speaks (or is translated to) that protocol.
    """
    attempts: list[dict[str, Any]] = []
    for attempt in range(1, spec.max_attempts + 1):
        started = time.perf_counter()
        record: dict[str, Any] = {"attempt": attempt, "batch": batch}
        try:
            async with asyncio.timeout(spec.timeout_s):
                response = await call()
        except openai.APIStatusError as exc:
            error, retry_after = _status_error(exc, api_key)
        except (TimeoutError, openai.APITimeoutError):
            error = ProviderError(
                f"{spec.name} did not answer within {spec.timeout_s:g}s", error_type="timeout"
            )
            retry_after = None
        except openai.APIConnectionError as exc:
            error = ProviderError(f"could not connect to the provider: {redact(str(exc), api_key)}")
            retry_after = None
        except (openai.APIError, ValueError) as exc:
            # A 200 whose body is not the expected JSON: the provider is broken, and
            # asking again is unlikely to help.
            record.update(latency_ms=_ms(started), error_type="provider_error")
            attempts.append(record)
            raise ProviderError(
                f"malformed response from the provider ({type(exc).__name__})", attempts=attempts
            ) from None
        else:
            if isinstance(response, str):
                # A 200 whose body is not JSON (an HTML page from a proxy): the SDK hands
                # it back as text instead of raising.
                record.update(latency_ms=_ms(started), error_type="provider_error")
                attempts.append(record)
                raise ProviderError(
                    "malformed response from the provider (not JSON)", attempts=attempts
                )
            record.update(latency_ms=_ms(started), status_code=200)
            attempts.append(record)
            try:
                result = await read_images(response, spec)
            except ProviderError as exc:
                exc.attempts = attempts
                raise
            result.attempts = attempts
            return result
        record.update(
            latency_ms=_ms(started), status_code=error.status_code, error_type=error.error_type
        )
        attempts.append(record)
        retryable = error.error_type in ("rate_limit", "timeout") or (
            error.error_type == "provider_error"
            and (error.status_code is None or error.status_code >= 500)
        )
        if not retryable or attempt == spec.max_attempts:
            error.attempts = attempts
            raise error
        wait = _backoff(spec.retry_base_s, attempt, retry_after)
        record["retry_after_s"] = round(wait, 3)
        await asyncio.sleep(wait)
    raise AssertionError("unreachable")


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _backoff(base_s: float, attempt: int, retry_after: float | None) -> float:
    """Full-jitter exponential backoff, never shorter than the provider's Retry-After."""
    jittered = random.uniform(0, base_s * 2 ** (attempt - 1))
    return min(MAX_RETRY_WAIT_S, max(jittered, retry_after or 0.0))


def _status_error(
    exc: openai.APIStatusError, api_key: str | None
) -> tuple[ProviderError, float | None]:
    body = exc.body if isinstance(exc.body, dict) else {}
    code = body.get("code") or body.get("type") or ""
    message = redact(str(body.get("message") or exc.message), api_key)
    status = exc.status_code
    details: dict[str, Any] = {}
    if code in ("content_policy_violation", "moderation_blocked"):
        error_type = "content_policy"
        moderation = body.get("moderation_details") or {}
        if moderation:
            details = {
                "categories": moderation.get("categories"),
                "stage": moderation.get("moderation_stage"),
            }
    elif status == 429:
        error_type = "rate_limit"
    elif status in (401, 403):
        error_type = "auth"
    elif status == 404 or code == "model_not_found":
        error_type = "model_not_found"
    elif 400 <= status < 500:
        error_type = "invalid_request"
    else:
        error_type = "provider_error"
    retry_after = None
    raw = exc.response.headers.get("retry-after")
    if raw:
        try:
            retry_after = max(0.0, float(raw))
        except ValueError:
            retry_after = None  # an HTTP date: fall back to our own backoff
    error = ProviderError(message, error_type=error_type, status_code=status, details=details)
    return error, retry_after


async def read_images(response: Any, spec: ModelSpec) -> ProviderResult:
    raw_usage = getattr(response, "usage", None)
    usage = raw_usage.model_dump() if hasattr(raw_usage, "model_dump") else dict(raw_usage or {})
    items = list(response.data or [])
    fetched = await asyncio.gather(*(_item_bytes(item, spec) for item in items))
    result = ProviderResult(images=[], usage=usage)
    for item, outcome in zip(items, fetched, strict=True):
        if isinstance(outcome, ItemError):
            result.errors.append(outcome)
        else:
            result.images.append(GeneratedImage(outcome, getattr(item, "revised_prompt", None)))
    if not result.images and result.errors:
        first = result.errors[0]
        raise ProviderError(first.message, error_type=first.error_type)
    if not result.images:  # a 200 without `data`: not a success with nothing in it
        raise ProviderError("the provider answered without any image")
    return result


async def _item_bytes(item: Any, spec: ModelSpec) -> bytes | ItemError:
    if item.b64_json:
        try:
            return base64.b64decode(item.b64_json, validate=True)
        except (binascii.Error, ValueError):
            return ItemError("provider returned invalid base64 image data", "provider_error")
    if item.url:
        try:
            return await fetch_image(
                item.url,
                max_bytes=spec.max_download_bytes,
                timeout_s=spec.timeout_s,
                trusted_hosts=spec.trusted_url_hosts,
            )
        except ProviderError as exc:
            return ItemError(exc.message, exc.error_type)
    return ItemError("provider returned an image with neither data nor URL", "provider_error")
