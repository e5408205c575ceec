"""The generation service: validate → provider → store images → record the call.

GenerationService orchestrates and records; a request's checks are in _request_checks.py,
its budget holds in _budget_holds.py, and the provider run (the step that pays) in
_provider_run.py."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from imagegate import __version__
from imagegate import _request_checks as checks
from imagegate._budget_holds import BudgetHolds
from imagegate._provider_run import run_provider
from imagegate.errors import BudgetExceeded, RateLimited, StorageError, StorageUnavailable
from imagegate.generation import GeneratedImage, Generation, ImageFailure, KeptPartialSink
from imagegate.ids import uuid7
from imagegate.kept_images import ImageKeeper
from imagegate.pricing import compute_cost, normalize_usage
from imagegate.providers import Catalog, ImageRequest, Provider
from imagegate.providers.base import EditFiles
from imagegate.schemas import ImageGenerationRequestInputs
from imagegate.store import AccountStore, CallStore, FileStore, Principal
from imagegate.store.budgets import BudgetStore, Reservation
from imagegate.store.group_commit import GenerationRecorder
from imagegate.store.ratelimit import RateLimiter
from imagegate.store.secrets import SecretStore
from imagegate.uploads import Upload
from imagegate.urls import DEFAULT_URL_TTL, image_url
from imagegate.weave_shape import (
    ANSWER_OPTIONS,
    EDIT_OP_NAME,
    OP_NAME,
    ImageLink,
    call_output,
    call_summary,
    content_ref,
)

if TYPE_CHECKING:
    from imagegate.metrics import Metrics

__all__ = ["EDIT_OP_NAME", "OP_NAME", "GenerationService"]


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
        url_ttl: int = DEFAULT_URL_TTL,
        metrics: Metrics | None = None,
        environ: Mapping[str, str] | None = None,
        budgets: BudgetStore | None = None,
        rate_limiter: RateLimiter | None = None,
        allow_unpriced_under_budget: bool = False,
    ) -> None:
        self.catalog = catalog
        self.providers = providers
        self.calls = calls
        # Call records are written through one writer task per process (group commit).
        self.writer = GenerationRecorder(calls.engine)
        self.files = files
        self.images = ImageKeeper(files)
        self.accounts = accounts
        self.secrets = secrets
        self.signing_key = signing_key
        self.url_ttl = url_ttl
        self.metrics = metrics
        # Where server-wide provider keys come from (Settings.environ).
        self.environ: Mapping[str, str] = environ if environ is not None else {}
        self.budgets = budgets
        self.rate_limiter = rate_limiter
        self.holds = BudgetHolds(budgets, metrics, allow_unpriced=allow_unpriced_under_budget)

    def check_edit(
        self, inputs: ImageGenerationRequestInputs, uploads: list[Upload], max_total_bytes: int
    ) -> EditFiles:
        """An edit's files, checked against the model (InvalidInput if not)."""
        return checks.edit_files(self.catalog, self.providers, inputs, uploads, max_total_bytes)

    def prepare(
        self,
        inputs: ImageGenerationRequestInputs,
        *,
        track: bool,
        edit: EditFiles | None = None,
        allow_stream: bool = False,
        usable: Collection[str] | None = None,
    ) -> ImageRequest:
        """The effective request, or InvalidInput (422) before anything is stored or paid.
        An unknown model's message lists `usable` models (by default every servable one)."""
        return checks.image_request(
            self.catalog,
            self.providers,
            inputs,
            track=track,
            edit=edit,
            allow_stream=allow_stream,
            usable=usable,
        )

    async def check(
        self,
        project_id: str,
        inputs: ImageGenerationRequestInputs,
        *,
        track: bool,
        edit: EditFiles | None = None,
        allow_stream: bool = False,
    ) -> ImageRequest:
        """`prepare` for a request in `project_id`: an unknown model's message lists the
        models its team can use."""
        usable = None
        if self.catalog.get(inputs.model) is None:
            usable = await self.usable_models([project_id.split("/", 1)[0]])
        return self.prepare(
            inputs, track=track, edit=edit, allow_stream=allow_stream, usable=usable
        )

    async def usable_models(self, entities: Iterable[str]) -> list[str]:
        """The servable, not shut-down models that have credentials for one of `entities`:
        none needed, the server's environment, or an entity's own provider key."""
        return await checks.usable_models(
            self.catalog, self.providers, self.secrets, self.environ, entities
        )

    async def generate(
        self,
        principal: Principal,
        project_id: str,
        inputs: ImageGenerationRequestInputs,
        *,
        track: bool = True,
        edit: EditFiles | None = None,
        on_partial: KeptPartialSink | None = None,
        checked: ImageRequest | None = None,
    ) -> Generation:
        """Generate (or, with `edit`, edit), store and record one request's images: the
        typed result every door derives its answer from. InvalidInput (422), RateLimited
        (429) and BudgetExceeded (402) come before anything is stored or any provider is
        called. With `on_partial` the request may stream: each partial image goes to it as
        soon as the provider has it and it is kept. `checked` is what `check` made of these
        same inputs, when the caller has it already."""
        request = checked or await self.check(
            project_id, inputs, track=track, edit=edit, allow_stream=on_partial is not None
        )
        if self.rate_limiter is not None:
            try:
                await self.rate_limiter.take(
                    key_id=principal.key_id, project_id=project_id, images=request.n
                )
            except RateLimited as exc:
                if self.metrics is not None:
                    self.metrics.rate_limited.labels(exc.limit["scope"], exc.limit["kind"]).inc()
                raise
        amount = await self.holds.amount(project_id, request)
        # Held in the transaction that records the call's start; settled in the one that
        # records its end, or here if the generation died on the way (then assume the
        # estimate was paid).
        reservation = Reservation()
        cost = amount or 0.0
        try:
            generation = await self._generate(
                principal,
                project_id,
                inputs,
                request,
                track=track,
                amount=amount,
                reservation=reservation,
                on_partial=on_partial,
            )
            cost = generation.total_cost or 0.0
            return generation
        finally:
            await self.holds.settle(project_id, reservation, cost)

    async def _generate(
        self,
        principal: Principal,
        project_id: str,
        inputs: ImageGenerationRequestInputs,
        request: ImageRequest,
        *,
        track: bool,
        amount: float | None,
        reservation: Reservation,
        on_partial: KeptPartialSink | None = None,
    ) -> Generation:
        spec = request.spec
        response_format = inputs.response_format or "b64_json"
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
        call_id = uuid7() if track else None
        started_at = datetime.now(UTC)
        if call_id:
            # Recorded before the provider is paid, so no generation goes unrecorded.
            await self._start_call(
                call_id,
                project_id,
                principal,
                request,
                effective_inputs,
                started_at,
                amount=amount,
                reservation=reservation,
            )
        else:
            await self.holds.reserve(project_id, amount, reservation)
        warnings = list(reservation.warnings)
        if spec.state() == "deprecated":
            warnings.append(spec.retirement_message().replace("was shut down", "shuts down"))
        outcome = await run_provider(
            request,
            project_id,
            track,
            response_format,
            on_partial,
            providers=self.providers,
            images=self.images,
            secrets=self.secrets,
            environ=self.environ,
        )
        generation = Generation(
            call_id=call_id,
            project_id=project_id,
            user_id=principal.user_id,
            model=request.model,
            inputs=effective_inputs,
            response_format=response_format,
            size=_result_size(request, outcome.images),
            output_format=request.output_format,
            options={k: request.params[k] for k in ANSWER_OPTIONS if k in request.params},
            started_at=started_at,
            ended_at=datetime.now(UTC),
            images=tuple(outcome.images),
            partial_images=tuple(outcome.partials),
            usage=outcome.result.usage,
            cost=compute_cost(
                spec,
                normalize_usage(outcome.result.usage),
                images=len(outcome.images),
                quality=request.params.get("quality"),  # type: ignore[arg-type]
                size=request.size,
            ),
            error=outcome.error,
            failures=tuple(
                ImageFailure(message=e.message, error_type=e.error_type, status_code=e.status_code)
                for e in outcome.result.errors
            ),
            warnings=tuple(warnings),
            attempts=tuple(outcome.result.attempts),
            provider_seconds=outcome.provider_seconds,
            timeout_s=request.timeout_s,
        )
        if call_id:
            # One transaction (shared with other requests'): the call's end, and its
            # budget settled at its real cost.
            await self.writer.finish(
                call_id,
                ended_at=generation.ended_at or started_at,
                output=call_output(generation),
                summary=call_summary(generation),
                exception=generation.exception_text(),
                held=reservation.held,
                cost=generation.total_cost or 0.0,
            )
            reservation.held.clear()  # settled
        if self.metrics is not None:
            self.metrics.generation(generation)
        return generation

    async def _start_call(
        self,
        call_id: str,
        project_id: str,
        principal: Principal,
        request: ImageRequest,
        inputs: dict[str, object],
        started_at: datetime,
        *,
        amount: float | None,
        reservation: Reservation,
    ) -> None:
        """Record the call as started, holding its budget in the same transaction (an
        edit's budget first: its input files are stored only once it fits)."""
        await self.accounts.ensure_project(project_id)
        if request.is_edit:
            await self.holds.reserve(project_id, amount, reservation)
            amount = None
            # The inputs are kept like outputs: Content references to stored files.
            try:
                inputs.update(await self._keep_inputs(project_id, request))
            except StorageError as exc:  # nothing recorded yet: the client may retry
                raise StorageUnavailable(exc.message) from exc
        record = {
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
                    "provider": request.spec.provider,
                    "upstream_model": request.spec.upstream_model,
                }
            },
            "inputs": inputs,
            "wb_user_id": principal.user_id,
        }
        budgets = ()
        if self.budgets is not None and amount is not None:
            budgets = await self.budgets.applying(project_id)
        try:
            # Counted as held only once the transaction (shared with other requests')
            # commits.
            held = await self.writer.start(record, budgets, amount)
        except BudgetExceeded as exc:
            self.holds.refused(exc)
            raise
        reservation.held += held.held
        reservation.warnings += held.warnings

    async def _keep_inputs(self, project_id: str, request: ImageRequest) -> dict[str, Any]:
        """Store an edit's input files; their Content references for `inputs`."""
        refs = []
        for index, image in enumerate(request.images):
            kept = await self.images.keep(project_id, image.data, index, None, "b64_json")
            refs.append(content_ref(kept.digest, kept.metadata_digest or ""))
        inputs: dict[str, Any] = {"image": refs}
        for name, overlay in (("mask", request.mask), ("markup", request.markup)):
            if overlay is not None:
                kept = await self.images.keep(project_id, overlay.data, 0, None, "b64_json")
                inputs[name] = content_ref(kept.digest, kept.metadata_digest or "")
        return inputs

    def image_link(self, project_id: str, base_url: str) -> ImageLink:
        """The signed, stable URL of a stored image of `project_id`."""

        def link(image: GeneratedImage) -> str:
            return image_url(
                base_url,
                self.signing_key,
                project_id,
                image.digest,
                image.mimetype,
                ttl=self.url_ttl,
            )

        return link


def _result_size(request: ImageRequest, images: list[GeneratedImage]) -> str:
    """The size answered: an edit's is what came out (a model may keep its input's size)."""
    if request.is_edit and images and images[0].width:
        return f"{images[0].width}x{images[0].height}"
    return request.size
