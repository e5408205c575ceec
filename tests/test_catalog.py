"""The model catalog as data: operator overrides, aliases, lifecycle, and pricing rules."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from imagegate.pricing import compute_cost, normalize_usage
from imagegate.providers import load_catalog
from imagegate.providers.catalog import CatalogError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_packaged_catalog_matches_the_reference_sheet() -> None:
    catalog = load_catalog()
    assert catalog.get("dall-e-3").state(date(2026, 11, 24)) == "shut_down"
    assert catalog.get("gpt-image-1").state(date(2026, 11, 24)) == "shut_down"
    assert catalog.get("gpt-image-1.5").state(date(2026, 11, 24)) == "deprecated"
    assert catalog.get("gpt-image-1.5").state(date(2026, 12, 1)) == "shut_down"
    assert catalog.get("gpt-image-2").state(date(2026, 11, 24)) == "current"
    assert catalog.get("gpt-image-1-mini").prices["image_output"] == 8.0
    assert catalog.get("gpt-image-1-mini").upstream_model == "gpt-image-1-mini"
    assert catalog.get("dall-e-3").max_n_per_request == 1
    assert catalog.get("dall-e-2").max_prompt_chars == 1000


def test_operator_sets_prices_and_adds_aliases(tmp_path: Path) -> None:
    catalog = load_catalog(
        write(
            tmp_path,
            """
[models."gpt-image-2".prices]
text_input = 4.0
image_output = 30.0
[models."acme/fast"]
alias_of = "gpt-image-2"
defaults = { quality = "low", size = "1024x1024" }
""",
        )
    )
    spec = catalog.get("gpt-image-2")
    assert spec.token_prices == {"text_input": 4.0, "image_output": 30.0}
    assert spec.options["quality"] == ("low", "medium", "high", "auto")  # the rest kept
    alias = catalog.get("acme/fast")
    assert alias.upstream_model == "gpt-image-2" and alias.token_prices["image_output"] == 30.0
    usage = normalize_usage({"input_tokens": 100, "output_tokens": 1000})
    cost = compute_cost(alias, usage, images=1, quality="low", size="1024x1024")
    assert cost["total_cost"] == pytest.approx((100 * 4 + 1000 * 30) / 1e6)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[models."x"]\nparams = []\n', "has no provider"),
        ('[models."x"]\nprovider = "openai"\nsizez = []\n', "unknown field(s) sizez"),
        ('[models."a"]\nalias_of = "b"\n[models."b"]\nalias_of = "a"\n', "alias loop"),
        ('[models."a"]\nalias_of = "nope"\n', "unknown model 'nope'"),
        ("not toml [", "cannot read model catalog"),
    ],
)
def test_bad_catalog_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_catalog(write(tmp_path, text))


def test_usage_is_normalised_once() -> None:
    both = normalize_usage(
        {"prompt_tokens": 10, "input_tokens": 10, "output_tokens": 5, "completion_tokens": 5}
    )
    assert both["input_tokens"] == 10 and both["output_tokens"] == 5
    assert both["total_tokens"] == 15
    legacy = normalize_usage({"prompt_tokens": 7, "completion_tokens": 3})
    assert legacy["input_tokens"] == 7 and legacy["output_image_tokens"] == 3
    assert normalize_usage(None) == {}


def test_costs_without_usage() -> None:
    catalog = load_catalog()
    dalle = catalog.get("dall-e-3")
    assert compute_cost(dalle, {}, images=2, quality="hd", size="1792x1024")["total_cost"] == (
        pytest.approx(0.24)
    )
    gpt = catalog.get("gpt-image-1.5")
    # No per-image price for this size: estimated from the output-token table.
    est = compute_cost(gpt, {}, images=1, quality="high", size="1536x1024")
    assert est["basis"] == "estimated_tokens"
    assert est["total_cost"] == pytest.approx(6208 * 32 / 1e6)
    unpriced = compute_cost(
        catalog.get("gpt-image-2"), {}, images=1, quality="low", size="1024x1024"
    )
    assert unpriced["basis"] == "unpriced" and unpriced["total_cost"] is None
    free = compute_cost(catalog.get("local/procedural"), {}, images=3, quality=None, size="512x512")
    assert free["total_cost"] == 0.0
