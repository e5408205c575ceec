"""Turning a caller's inputs into the effective request for a model, or a clear 422."""

from __future__ import annotations

import secrets
from collections.abc import Collection

from imagegate.errors import InvalidInput
from imagegate.providers import Catalog, ImageRequest, ModelSpec
from imagegate.schemas import ImageGenerationRequestInputs

# Optional inputs passed to the provider when the model takes them.
PROVIDER_PARAMS = (
    "quality",
    "style",
    "background",
    "output_format",
    "output_compression",
    "moderation",
    "user",
)


def _fail(field: str, message: str, value: object = None) -> InvalidInput:
    return InvalidInput(["body", "inputs", field], message, value)


def _check_text(field: str, value: str) -> None:
    """Text that is stored and sent on must be valid Unicode without NUL: PostgreSQL can
    store neither a NUL nor an unpaired surrogate, so no backend takes them."""
    if "\x00" in value:
        raise _fail(field, f"{field} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _fail(field, f"{field} is not valid Unicode (an unpaired surrogate)") from exc


def resolve_model(
    catalog: Catalog, servable: set[str], name: str, usable: Collection[str] | None = None
) -> ModelSpec:
    """The model's catalog entry. An unknown name's message lists the models one can
    use: servable, not shut down, and (when `usable` is given) among those."""
    spec = catalog.get(name)
    if spec is None or spec.provider not in servable:
        available = ", ".join(
            n
            for n in catalog.names
            if (s := catalog.get(n))
            and s.provider in servable
            and s.state() != "shut_down"
            and (usable is None or n in usable)
        )
        raise _fail("model", f"unknown model {name!r}; available models: {available}", name)
    if spec.state() == "shut_down":
        # Refused here, before any provider call: the provider would only say 404.
        raise _fail("model", spec.retirement_message(), name)
    return spec


def effective_request(spec: ModelSpec, inputs: ImageGenerationRequestInputs) -> ImageRequest:
    """Validate every input against the model's catalog entry; apply its defaults."""
    prompt = inputs.prompt
    if not prompt.strip():
        raise _fail("prompt", "prompt must not be empty")
    _check_text("prompt", prompt)
    if len(prompt) > spec.max_prompt_chars:
        raise _fail(
            "prompt",
            f"prompt is {len(prompt)} characters; {spec.name} takes at most "
            f"{spec.max_prompt_chars}",
        )
    n = 1 if inputs.n is None else inputs.n
    if not 1 <= n <= spec.max_n:
        raise _fail("n", f"n must be between 1 and {spec.max_n}", inputs.n)
    if inputs.stream:
        raise _fail("stream", "streaming is not supported by /image/create; omit stream")

    for name in ("size", "seed", *PROVIDER_PARAMS):
        if getattr(inputs, name) is not None and name not in spec.params:
            raise _fail(name, f"{spec.name} does not take {name!r}", getattr(inputs, name))
    params: dict[str, object] = {}
    for name in PROVIDER_PARAMS:
        value = getattr(inputs, name)
        if value is None:
            value = spec.defaults.get(name)
        if value is None:
            continue
        allowed = spec.options.get(name)
        if allowed and value not in allowed:
            raise _fail(name, f"{name} must be one of {', '.join(allowed)}", value)
        if isinstance(value, str):
            _check_text(name, value)
        params[name] = value
    output_format = params.get("output_format", spec.output_format)
    if "output_compression" in params:
        compression = params["output_compression"]
        if not isinstance(compression, int) or not 0 <= compression <= 100:
            raise _fail("output_compression", "output_compression must be 0-100", compression)
        if output_format not in ("jpeg", "webp"):
            raise _fail("output_compression", "output_compression needs output_format jpeg or webp")
    if params.get("background") == "transparent" and output_format not in ("png", "webp"):
        raise _fail("background", "a transparent background needs output_format png or webp")

    try:
        size = spec.check_size(inputs.size or spec.defaults.get("size") or spec.default_size)
    except ValueError as exc:
        raise _fail("size", str(exc), inputs.size) from exc
    seed = inputs.seed
    if seed is None and "seed" in spec.params:
        # Drawn here and recorded in the call, so every generation can be reproduced.
        seed = secrets.randbelow(2**31)
    return ImageRequest(spec=spec, prompt=prompt, n=n, size=size, seed=seed, params=params)
