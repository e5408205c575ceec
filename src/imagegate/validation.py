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
    "complexity",
    "frame_count",
    "frame_duration_ms",
    "svg",
    "input_fidelity",
    "safety_identifier",
    "user",
)
# Only with output_format gif (OpenAI: frame_count 2-16, default 9; delay capped at 655,350 ms).
GIF_PARAMS = ("frame_count", "frame_duration_ms")
MAX_PARTIAL_IMAGES = 3


def _fail(field: str, message: str, value: object = None, code: str | None = None) -> InvalidInput:
    if hasattr(value, "model_dump"):  # an object input (`svg`), echoed as JSON
        value = value.model_dump(exclude_none=True)
    return InvalidInput(["body", "inputs", field], message, value, code)


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
        message = f"unknown model {name!r}; available models: {available}"
        raise _fail("model", message, name, code="model_not_found")
    if spec.state() == "shut_down":
        # Refused here, before any provider call: the provider would only say 404.
        raise _fail("model", spec.retirement_message(), name, code="model_not_found")
    return spec


def effective_request(
    spec: ModelSpec,
    inputs: ImageGenerationRequestInputs,
    *,
    allow_stream: bool = False,
    edit: bool = False,
) -> ImageRequest:
    """Validate every input against the model's catalog entry; apply its defaults.

    `allow_stream`: the caller can answer with server-sent events (the OpenAI door);
    `edit`: the request edits images (they are checked by `check_edit_inputs`).
    """
    if edit and not spec.edits:
        editors = "a model that edits images (GET /v1/models lists them)"
        raise _fail("model", f"{spec.name} does not edit images; use {editors}", spec.name)
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
    partial_images = _check_stream(spec, inputs, allow_stream, n)
    if inputs.input_fidelity is not None and not edit:
        raise _fail("input_fidelity", "input_fidelity applies to edits only", inputs.input_fidelity)

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
        if name == "svg":
            value = _svg_options(value)
        params[name] = value
    output_format = params.get("output_format", spec.output_format)
    _check_animated_and_vector(params, str(output_format), n, partial_images)
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
    return ImageRequest(
        spec=spec,
        prompt=prompt,
        n=n,
        size=size,
        seed=seed,
        params=params,
        partial_images=partial_images,
    )


def _check_stream(
    spec: ModelSpec, inputs: ImageGenerationRequestInputs, allow_stream: bool, n: int
) -> int | None:
    """The number of partial images to stream, or None for a plain answer."""
    if not inputs.stream:
        if inputs.partial_images is not None:
            raise _fail("partial_images", "partial_images needs stream: true")
        return None
    if not allow_stream:
        raise _fail(
            "stream", "streaming is not supported by /image/create; use /v1/images/generations"
        )
    if "stream" not in spec.params:
        raise _fail("stream", f"{spec.name} does not stream", True)
    if n != 1:
        # Stream events carry no image index, so one stream carries one image.
        raise _fail("n", "a streamed request makes one image: use n 1", n)
    if inputs.response_format == "url":
        raise _fail("response_format", "stream events carry base64 images: omit response_format")
    partial_images = inputs.partial_images or 0
    if not 0 <= partial_images <= MAX_PARTIAL_IMAGES:
        raise _fail(
            "partial_images", f"partial_images must be 0 to {MAX_PARTIAL_IMAGES}", partial_images
        )
    return partial_images


def _svg_options(value: object) -> dict[str, object]:
    """`svg` as sent on: {model?, reasoning?: {effort?}}, without unset fields."""
    options = value.model_dump(exclude_none=True) if hasattr(value, "model_dump") else value
    assert isinstance(options, dict)
    if isinstance(options.get("model"), str):
        _check_text("svg", options["model"])
    return options


def _check_animated_and_vector(
    params: dict[str, object], output_format: str, n: int, partial_images: int | None
) -> None:
    """GIF and SVG output take fewer options than raster output (per OpenAI's SDK)."""
    for name in GIF_PARAMS:
        if name in params and output_format != "gif":
            raise _fail(name, f"{name} needs output_format gif", params[name])
    if "svg" in params and output_format != "svg":
        raise _fail("svg", "svg options need output_format svg")
    frames = params.get("frame_count")
    if frames is not None and not (isinstance(frames, int) and 2 <= frames <= 16):
        raise _fail("frame_count", "frame_count must be 2 to 16", frames)
    duration = params.get("frame_duration_ms")
    if duration is not None and not (isinstance(duration, int) and 10 <= duration <= 655_350):
        raise _fail("frame_duration_ms", "frame_duration_ms must be 10 to 655350", duration)
    if output_format in ("gif", "svg"):
        if partial_images is not None:
            raise _fail("stream", f"{output_format} output cannot be streamed", True)
        if "output_compression" in params:
            raise _fail("output_compression", f"{output_format} output takes no compression")
    if output_format == "svg" and n != 1:
        raise _fail("n", "svg output makes one image: use n 1", n)
