"""One provider run of a generation: the provider asked (streaming when it can), each image
kept; what it gave or why it failed. GenerationService's step that pays, apart from its
bookkeeping (service.py)."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from imagegate.errors import (
    ImagegateError,
    InternalError,
    ProviderAuthError,
    ProviderError,
    StorageError,
)
from imagegate.generation import GeneratedImage, GenerationError, KeptPartialSink
from imagegate.kept_images import ImageKeeper
from imagegate.providers import ImageRequest, Provider
from imagegate.providers.base import PartialImage, ProviderResult, Secret
from imagegate.store.secrets import SecretStore, SecretUnreadable
from imagegate.store.staging import StagedFile

log = logging.getLogger("imagegate.generation")


@dataclass
class Outcome:
    """What one provider run gave: its result, the images kept, or why it failed."""

    result: ProviderResult
    images: list[GeneratedImage] = field(default_factory=list)
    partials: list[GeneratedImage] = field(default_factory=list)  # a stream's, kept
    error: GenerationError | None = None
    provider_seconds: float | None = None  # the provider alone, without storing

    def fail(self, exc: ImagegateError) -> None:
        """Record `exc` as the generation's error, by its kind's `error_type`."""
        self.images = self.partials = []  # a failure keeps no images, even stored ones
        provider = exc if isinstance(exc, ProviderError) else None
        self.error = GenerationError(
            # An outage's reason (paths, hosts) is for the log, not the call record.
            message=exc.client_message,
            error_type=exc.error_type,
            status_code=provider.upstream_status if provider else None,
            details=provider.details if provider else {},
        )
        if provider is not None and provider.attempts:
            self.result.attempts = provider.attempts


async def provider_key(
    secrets: SecretStore, environ: Mapping[str, str], request: ImageRequest, entity: str
) -> Secret | None:
    """The entity's own key if it set one, else the server's environment."""
    name = request.spec.key_env
    if not name:
        return None
    try:
        stored = await secrets.get(entity, name)
    except SecretUnreadable as exc:  # an operator's mistake: say which, not "internal"
        raise ProviderAuthError(str(exc)) from exc
    value = stored or environ.get(name)
    return Secret(value) if value else None


async def run_provider(
    request: ImageRequest,
    project_id: str,
    track: bool,
    response_format: str,
    on_partial: KeptPartialSink | None = None,
    *,
    providers: Mapping[str, Provider],
    images: ImageKeeper,
    secrets: SecretStore,
    environ: Mapping[str, str],
) -> Outcome:
    """Ask the provider (streaming when asked and the provider can), then inspect (and
    for a tracked call store) each image and partial image. Failures come back in the
    outcome, never raised."""
    started = time.perf_counter()
    outcome = Outcome(result=ProviderResult(images=[]))
    keep_in = project_id if track else None
    keep = images.keep

    partials: list[PartialImage] = []

    async def collect(partial: PartialImage) -> None:
        # Passed on at once from its own file; kept (stored) with the images, so
        # storing it never delays the stream.
        partials.append(partial)
        if on_partial is not None:
            await on_partial(images.preview(partial.file, partial.index))

    # The temp files a provider decodes its answer into: each is committed to the
    # store or, whatever happens, discarded at the end.
    staged: list[StagedFile] = []
    try:
        api_key = await provider_key(secrets, environ, request, project_id.split("/", 1)[0])
        request = dataclasses.replace(
            request, api_key=api_key, image_files=images.image_files(project_id, staged)
        )
        provider = providers[request.spec.provider]
        streaming = getattr(provider, "generate_streaming", None)
        if request.stream and streaming is not None:
            outcome.result = await streaming(request, collect)
        else:
            outcome.result = await provider.generate(request)
        outcome.provider_seconds = time.perf_counter() - started
        for index, image in enumerate(outcome.result.images):
            outcome.images.append(
                await keep(keep_in, image.file, index, image.revised_prompt, response_format)
            )
        for partial in partials:
            kept = await keep(keep_in, partial.file, partial.index, None, "b64_json")
            outcome.partials.append(kept)
    except (ProviderError, StorageError) as exc:
        outcome.fail(exc)
    except Exception:
        # A bug: the caller gets a clear answer, the details go to the log (never the
        # response: they may carry paths or secrets).
        log.exception("generation of %s failed", request.model)
        outcome.fail(InternalError("internal error while generating; the server log has details"))
    finally:
        for file in staged:
            file.discard()  # a no-op for those committed
    if outcome.provider_seconds is None:
        outcome.provider_seconds = time.perf_counter() - started
    return outcome
