"""A provider request with retries, and what its failures mean: shared by every provider
that speaks OpenAI's Images API (the OpenAI SDK's own, and LiteLLM's, whose exceptions
subclass the SDK's).

Each attempt (status, latency, wait) is recorded for the call. Retried: what cannot have
been billed (see `classify_failure`). Upstream error text is redacted of API keys here,
where it enters.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable
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
    ProviderBadRequest,
    ProviderError,
    ProviderModelNotFound,
    ProviderRateLimited,
    ProviderServerError,
    ProviderTimeout,
)
from imagegate.providers.answer_stream import InvalidBase64, MalformedAnswer, decode_into
from imagegate.providers.base import (
    GeneratedImage,
    ImageFile,
    ImageFiles,
    ItemError,
    ProviderResult,
)
from imagegate.providers.catalog import ModelSpec
from imagegate.providers.download import fetch_image

MAX_RETRY_WAIT_S = 30.0
# What an API key looks like inside an upstream error message ("Incorrect API key
# provided: sk-abc***xyz"): such text is masked even when it is not our exact key.
KEY_PATTERN = re.compile(r"\b(sk|ig)-[A-Za-z0-9_*\-]{4,}")
# OpenAI's codes for a request moderation blocked.
MODERATION_CODES = ("content_policy_violation", "moderation_blocked")


def redact(text: str, api_key: str | None) -> str:
    if api_key:
        text = text.replace(api_key, "***")
    return KEY_PATTERN.sub(r"\1-***", text)


def _decoded(b64: Any, new_file: ImageFiles) -> ImageFile | None:
    """Base64 the SDK parsed decoded into a file of its own; None when it is not base64."""
    if not isinstance(b64, str) or not b64:
        return None
    file = new_file()
    try:
        decode_into(b64, file)
    except InvalidBase64:
        file.discard()
        return None
    except BaseException:
        file.discard()
        raise
    return file


async def generate_with_retries(
    spec: ModelSpec,
    call: Callable[[], Awaitable[Any]],
    new_file: ImageFiles,
    *,
    timeout_s: float,
    batch: int = 0,
    api_key: str | None = None,
) -> ProviderResult:
    """Run `call` (one provider request answering OpenAI's ImagesResponse shape) with
    the request's timeout and the model's retry policy, recording every attempt.

    Retried: what cannot have been billed (see `classify_failure`). Errors are read from
    OpenAI's exception types, which LiteLLM's exceptions subclass, so this serves every
    provider that speaks (or is translated to) that protocol.
    """
    attempts: list[dict[str, Any]] = []
    for attempt in range(1, spec.max_attempts + 1):
        started = time.perf_counter()
        record: dict[str, Any] = {"attempt": attempt, "batch": batch}
        try:
            async with asyncio.timeout(timeout_s):
                response = await call()
        except (openai.APIError, TimeoutError, ValueError) as exc:
            failure = classify_failure(exc, spec, timeout_s, api_key)
        else:
            if isinstance(response, str):
                # A 200 whose body is not JSON (an HTML page from a proxy): the SDK hands
                # it back as text instead of raising.
                error = InvalidProviderOutput("malformed response from the provider (not JSON)")
                record.update(latency_ms=_ms(started), error_type=error.error_type)
                attempts.append(record)
                error.attempts = attempts
                raise error
            record.update(latency_ms=_ms(started), status_code=200)
            attempts.append(record)
            try:
                result = await read_images(response, spec, new_file)
            except ProviderError as exc:
                exc.attempts = attempts
                raise
            result.attempts = attempts
            return result
        error = failure.error
        record.update(
            latency_ms=_ms(started), status_code=error.upstream_status, error_type=error.error_type
        )
        if failure.may_be_billed:
            record["may_be_billed"] = True
        attempts.append(record)
        if not failure.retryable or attempt == spec.max_attempts:
            error.attempts = attempts
            raise error
        wait = _backoff(spec.retry_base_s, attempt, failure.retry_after)
        record["retry_after_s"] = round(wait, 3)
        await asyncio.sleep(wait)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Failure:
    """A failed provider request, classified: what to record and whether to ask again."""

    error: ProviderError
    retryable: bool
    may_be_billed: bool = False  # the request reached the provider and its answer is lost
    retry_after: float | None = None


# The transport errors that mean the request never (completely) reached the provider,
# by class name: the openai SDK raises httpx2's, LiteLLM httpx's, with the same names.
_NOT_SENT = frozenset(
    (
        "ConnectError",
        "ConnectTimeout",
        "PoolTimeout",
        "WriteError",
        "WriteTimeout",
        "UnsupportedProtocol",
        "ConnectionRefusedError",
    )
)
BILLED_NOTE = (
    "the provider may have done (and billed) the work, so it was not retried "
    "(set retry_timeouts for this model to retry)"
)


def classify_failure(
    exc: BaseException, spec: ModelSpec, timeout_s: float, api_key: str | None
) -> Failure:
    """The one place where the SDK's (and httpx's) exceptions become ours.

    Retried: 429, 5xx answers, and a request that never reached the provider (connect
    errors and timeouts, a pool timeout, a failed write). Not retried unless the model
    sets `retry_timeouts`: a request that was sent and then timed out waiting for its
    answer, or whose answer broke off — the provider may have made and billed it.
    """
    if isinstance(exc, openai.APIStatusError):
        error, retry_after = _status_error(exc, api_key)
        retryable = isinstance(error, ProviderRateLimited | ProviderServerError)
        return Failure(error, retryable, retry_after=retry_after)
    chain = _causes(exc)
    not_sent = next((e for e in chain if _NOT_SENT & {c.__name__ for c in type(e).__mro__}), None)
    if isinstance(exc, openai.APIConnectionError | TimeoutError) and not_sent is not None:
        detail = redact(str(not_sent) or type(not_sent).__name__, api_key)
        return Failure(ProviderServerError(f"could not connect to the provider: {detail}"), True)
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        message = f"{spec.name} did not answer within {timeout_s:g}s; {BILLED_NOTE}"
    elif isinstance(exc, openai.APIConnectionError):
        detail = redact(str(chain[1] if len(chain) > 1 else exc), api_key)
        message = f"the connection to the provider broke off before its answer ({detail}); "
        message += BILLED_NOTE
    else:
        # A 200 whose body is not the expected JSON: the provider is broken, and asking
        # again is unlikely to help.
        what = str(exc) if isinstance(exc, MalformedAnswer) else type(exc).__name__
        error = InvalidProviderOutput(f"malformed response from the provider ({what})")
        return Failure(error, False)
    error = ProviderTimeout(message, details={"may_be_billed": True, "timeout_s": timeout_s})
    return Failure(error, spec.retry_timeouts, may_be_billed=True)


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what caused it, outermost first (its cause, else its context, chain)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _backoff(base_s: float, attempt: int, retry_after: float | None) -> float:
    """Full-jitter exponential backoff, never shorter than the provider's Retry-After."""
    jittered = random.uniform(0, base_s * 2 ** (attempt - 1))
    return min(MAX_RETRY_WAIT_S, max(jittered, retry_after or 0.0))


def upstream_error(
    body: Any, fallback: str, api_key: str | None
) -> tuple[dict[str, Any], str, str]:
    """An upstream error body (OpenAI's `error` object): the body as a dict, its code
    (or type) and its message, redacted (`fallback` when it has none)."""
    body = body if isinstance(body, dict) else {}
    code = body.get("code") or body.get("type") or ""
    return body, code, redact(str(body.get("message") or fallback), api_key)


def _status_error(
    exc: openai.APIStatusError, api_key: str | None
) -> tuple[ProviderError, float | None]:
    body, code, message = upstream_error(exc.body, exc.message, api_key)
    status = exc.status_code
    details: dict[str, Any] = {}
    kind: type[ProviderError]
    if code in MODERATION_CODES:
        kind = ContentPolicyViolation
        moderation = body.get("moderation_details") or {}
        if moderation:
            details = {
                "categories": moderation.get("categories"),
                "stage": moderation.get("moderation_stage"),
            }
    elif status == 429:
        kind = ProviderRateLimited
    elif status in (401, 403):
        kind = ProviderAuthError
    elif status == 404 or code == "model_not_found":
        kind = ProviderModelNotFound
    elif 400 <= status < 500:
        kind = ProviderBadRequest
    elif status >= 500:
        kind = ProviderServerError
    else:  # an unexpected status (a redirect): not retried
        kind = ProviderError
    retry_after = None
    raw = exc.response.headers.get("retry-after")
    if raw:
        try:
            retry_after = max(0.0, float(raw))
        except ValueError:
            retry_after = None  # an HTTP date: fall back to our own backoff
    return kind(message, upstream_status=status, details=details), retry_after


async def read_images(response: Any, spec: ModelSpec, new_file: ImageFiles) -> ProviderResult:
    raw_usage = getattr(response, "usage", None)
    usage = raw_usage.model_dump() if hasattr(raw_usage, "model_dump") else dict(raw_usage or {})
    items = list(response.data or [])
    fetched = await asyncio.gather(*(_item_file(item, spec, new_file) for item in items))
    result = ProviderResult(images=[], usage=usage)
    for item, outcome in zip(items, fetched, strict=True):
        if isinstance(outcome, ItemError):
            result.errors.append(outcome)
        else:
            revised = getattr(item, "revised_prompt", None)
            result.images.append(GeneratedImage(outcome, revised))
    if not result.images and result.errors:
        first = result.errors[0]
        raise ProviderError.of_type(first.error_type, first.message)
    if not result.images:  # a 200 without `data`: not a success with nothing in it
        raise InvalidProviderOutput("the provider answered without any image")
    return result


async def _item_file(item: Any, spec: ModelSpec, new_file: ImageFiles) -> ImageFile | ItemError:
    """One item of the answer in a file of its own: the one it was decoded into as it
    arrived, else its base64 (an SDK's parsed answer) decoded, or its URL downloaded."""
    file: ImageFile | None = getattr(item, "file", None)
    if file is not None:
        if getattr(item, "invalid", None):
            file.discard()
            return ItemError("provider returned invalid base64 image data", "provider_error")
        return file
    if item.b64_json:
        file = _decoded(item.b64_json, new_file)
        if file is None:
            message = "provider returned invalid base64 image data"
            return ItemError(message, InvalidProviderOutput.error_type)
        return file
    if item.url:
        try:
            data = await fetch_image(
                item.url,
                max_bytes=spec.max_download_bytes,
                timeout_s=spec.timeout_s,
                trusted_hosts=spec.trusted_url_hosts,
            )
        except ProviderError as exc:
            return ItemError(exc.message, exc.error_type)
        file = new_file()
        file.write(data)
        return file
    message = "provider returned an image with neither data nor URL"
    return ItemError(message, InvalidProviderOutput.error_type)
