"""Usage normalisation and cost: what a generation used and what it cost, in USD.

Providers report usage in several shapes (OpenAI's `input_tokens_details`, older
`prompt_tokens`, nothing at all). Everything is normalised to one set of keys, each token
counted once, then priced from the catalog: by tokens when usage is known, else by the
per-image table (or, failing that, the catalog's output-token estimate per image).
"""

from __future__ import annotations

from typing import Any

from imagegate.providers.catalog import ModelSpec

USAGE_KEYS = (
    "input_tokens",
    "input_text_tokens",
    "input_image_tokens",
    "output_tokens",
    "output_text_tokens",
    "output_image_tokens",
    "total_tokens",
)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def normalize_usage(raw: dict[str, Any] | None) -> dict[str, int]:
    """One shape for every provider's usage; {} when the provider reported none."""
    if not raw:
        return {}
    # `prompt_tokens`/`completion_tokens` are older names for the same counts: read them
    # only when the new ones are absent, never add both.
    input_tokens = _int(raw.get("input_tokens", raw.get("prompt_tokens")))
    output_tokens = _int(raw.get("output_tokens", raw.get("completion_tokens")))
    in_details = raw.get("input_tokens_details") or {}
    out_details = raw.get("output_tokens_details") or {}
    if in_details:
        input_text = _int(in_details.get("text_tokens"))
        input_image = _int(in_details.get("image_tokens"))
    else:
        input_text, input_image = input_tokens, 0
    if out_details:
        output_text = _int(out_details.get("text_tokens"))
        output_image = _int(out_details.get("image_tokens"))
    else:
        # Image models' output is the image: without details, every output token is one.
        output_text, output_image = 0, output_tokens
    return {
        "input_tokens": input_tokens,
        "input_text_tokens": input_text,
        "input_image_tokens": input_image,
        "output_tokens": output_tokens,
        "output_text_tokens": output_text,
        "output_image_tokens": output_image,
        "total_tokens": _int(raw.get("total_tokens")) or input_tokens + output_tokens,
    }


def add_usage(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """Usage of several provider requests that made one generation."""
    if not a or not b:
        return dict(a or b)
    return {key: a.get(key, 0) + b.get(key, 0) for key in USAGE_KEYS}


def price_key(quality: str | None, size: str) -> str:
    return f"{quality or '-'}:{size}"


def compute_cost(
    spec: ModelSpec, usage: dict[str, int], *, images: int, quality: str | None, size: str
) -> dict[str, Any]:
    """The cost record stored in a call's summary (`summary.costs[model]`)."""
    record: dict[str, Any] = {"requests": 1, "images": images, **usage}
    token_prices = spec.token_prices
    per_image = spec.prices.get("per_image")
    key = price_key(quality, size)
    if usage and token_prices:
        rate = lambda name: token_prices.get(name, 0.0) / 1_000_000  # noqa: E731
        # Text output is billed at the text rate where the model has one, else as image.
        text_out_rate = (
            rate("text_output") if "text_output" in token_prices else rate("image_output")
        )
        input_cost = usage["input_text_tokens"] * rate("text_input") + usage[
            "input_image_tokens"
        ] * rate("image_input")
        output_cost = usage["output_text_tokens"] * text_out_rate + usage[
            "output_image_tokens"
        ] * rate("image_output")
        record.update(basis="tokens", input_cost=input_cost, output_cost=output_cost)
    elif per_image is not None and (key in per_image or not per_image):
        # An empty table means free (local models); otherwise the size must be listed.
        each = float(per_image.get(key, 0.0))
        record.update(basis="per_image", input_cost=0.0, output_cost=each * images)
    elif key in spec.output_tokens and "image_output" in token_prices:
        tokens = spec.output_tokens[key] * images
        cost = tokens * token_prices["image_output"] / 1_000_000
        record.update(basis="estimated_tokens", input_cost=0.0, output_cost=cost)
    else:
        record.update(basis="unpriced", input_cost=None, output_cost=None, total_cost=None)
        return record
    record["total_cost"] = round(record["input_cost"] + record["output_cost"], 10)
    return record


def estimate_cost(
    spec: ModelSpec, *, prompt: str, images: int, quality: str | None, size: str
) -> float | None:
    """What a generation will probably cost (USD) before it runs, for budget
    reservations: the per-image price, or the catalog's output-token estimate plus the
    prompt at about 4 characters a token; None when the model has no price."""
    record = compute_cost(spec, {}, images=images, quality=quality, size=size)
    total = record.get("total_cost")
    if not isinstance(total, int | float):
        return None
    text_input = spec.token_prices.get("text_input", 0.0)
    return float(total) + (len(prompt) + 3) // 4 * text_input / 1_000_000
