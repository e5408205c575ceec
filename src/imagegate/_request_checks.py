"""A request checked before anything is stored or paid: its model resolved, its inputs made
the effective ImageRequest, and which models have credentials. GenerationService's first step."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping

from imagegate.errors import InvalidInput
from imagegate.providers import Catalog, ImageRequest
from imagegate.providers.base import EditFiles
from imagegate.schemas import ImageGenerationRequestInputs
from imagegate.store.secrets import SecretStore
from imagegate.uploads import Upload, check_edit_inputs
from imagegate.validation import effective_request, resolve_model


def edit_files(
    catalog: Catalog,
    providers: Collection[str],
    inputs: ImageGenerationRequestInputs,
    uploads: list[Upload],
    max_total_bytes: int,
) -> EditFiles:
    """An edit's files, checked against the model (InvalidInput if not)."""
    spec = resolve_model(catalog, set(providers), inputs.model)
    if not spec.edits:
        effective_request(spec, inputs, edit=True)  # raises: names what edits
    return check_edit_inputs(spec, uploads, max_total_bytes=max_total_bytes)


def image_request(
    catalog: Catalog,
    providers: Collection[str],
    inputs: ImageGenerationRequestInputs,
    *,
    track: bool,
    edit: EditFiles | None = None,
    allow_stream: bool = False,
    usable: Collection[str] | None = None,
) -> ImageRequest:
    """The effective request, or InvalidInput (422) before anything is stored or paid.
    An unknown model's message lists `usable` models (by default every servable one)."""
    spec = resolve_model(catalog, set(providers), inputs.model, usable)
    request = effective_request(spec, inputs, allow_stream=allow_stream, edit=edit is not None)
    if edit is not None:
        request = dataclasses.replace(
            request, images=edit.images, mask=edit.mask, markup=edit.markup
        )
    if inputs.response_format == "url" and not track:
        raise InvalidInput(
            ["body", "inputs", "response_format"],
            "response_format 'url' needs the images kept: use track_llm_call true or b64_json",
        )
    return request


async def usable_models(
    catalog: Catalog,
    providers: Collection[str],
    secrets: SecretStore,
    environ: Mapping[str, str],
    entities: Iterable[str],
) -> list[str]:
    """The servable, not shut-down models that have credentials for one of `entities`:
    none needed, the server's environment, or an entity's own provider key."""
    names: set[str] = set()
    for entity in entities:
        names |= {name for name, _ in await secrets.names(entity)}
    usable = []
    for name in catalog.names:
        spec = catalog.get(name)
        if spec is None or spec.provider not in providers or spec.state() == "shut_down":
            continue
        key = spec.key_env
        if key is None or environ.get(key) or key in names:
            usable.append(name)
    return usable
