"""Long generations (issue 16), the parts that need no server: timeouts from the catalog
by quality and size, which requests get a derived key, and the keep-alive interval."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.datastructures import Headers

from imagegate.idempotency import RETRY_KEY_PREFIX, request_key
from imagegate.keepalive import interval_for
from imagegate.providers import load_catalog
from imagegate.providers.catalog import CatalogError


def test_packaged_timeouts_fit_quality_and_size() -> None:
    catalog = load_catalog()
    two = catalog.get("gpt-image-2")
    assert two is not None
    assert two.timeout_for("low", "1024x1024") == 300
    assert two.timeout_for("medium", "1536x1024") == 450
    assert two.timeout_for("medium", "2048x2048") == 900  # large: no medium shortcut
    assert two.timeout_for("high", "1024x1024") == 600  # the ceiling: OpenAI SDK's default
    assert two.timeout_for(None, "1024x1024") == 600
    assert two.timeout_for("high", "3840x2160") == 900
    sunburst = catalog.get("gpt-image-2.5-sunburst")
    assert sunburst is not None and sunburst.timeout_for("max", "1024x1024") == 1200
    flare = catalog.get("gpt-image-2.5-flare")  # an alias shares its model's rules
    assert flare is not None and flare.timeout_for("xhigh", "1024x1024") == 1200
    for name in catalog.names:
        spec = catalog.get(name)
        assert spec is not None
        if spec.provider == "openai" and name.split("/")[-1].startswith("gpt-image"):
            assert spec.timeout_s >= 600, name
            assert not spec.retry_timeouts, name


def test_operator_timeout_rules(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text("""
[timeout_rules]
mine = [{ quality = ["low"], timeout_s = 30 }]

[models."gpt-image-2"]
timeout_rules = "mine"
retry_timeouts = true

[models."gpt-image-1.5"]
timeout_rules = [{ max_pixels = 1048576, timeout_s = 90 }]
""")
    catalog = load_catalog(models)
    two = catalog.get("gpt-image-2")
    assert two is not None and two.retry_timeouts
    assert two.timeout_for("low", "3840x2160") == 30
    assert two.timeout_for("high", "1024x1024") == 600
    one = catalog.get("gpt-image-1.5")
    assert one is not None
    assert one.timeout_for("high", "1024x1024") == 90
    assert one.timeout_for("high", "1536x1024") == 600
    models.write_text('[models."gpt-image-2"]\ntimeout_rules = "nope"\n')
    with pytest.raises(CatalogError, match="no timeout_rules table named 'nope'"):
        load_catalog(models)
    models.write_text('[models."gpt-image-2"]\ntimeout_rules = [{ quality = ["low"] }]\n')
    with pytest.raises(CatalogError, match="timeout_s"):
        load_catalog(models)


def test_sdk_requests_get_a_key_derived_from_the_body() -> None:
    """Derived from the body; stored, like every key, per (project, user)."""
    assert request_key({}, "h") is None
    first = request_key({"x-stainless-retry-count": "0"}, "h")
    retry = request_key({"x-stainless-retry-count": "2"}, "h")
    assert first is not None and retry is not None
    assert first.key == retry.key == RETRY_KEY_PREFIX + "h"
    assert not first.retry and retry.retry
    explicit = request_key({"Idempotency-Key": "k", "x-stainless-retry-count": "1"}, "h")
    assert explicit is not None and explicit.key == "k" and not explicit.derived


def test_keepalive_interval_follows_the_client() -> None:
    weave = Headers({"x-stainless-read-timeout": "30.0"})
    assert interval_for(weave, 15.0, unasked=True) == 10.0
    assert interval_for(weave, 15.0, unasked=False) is None
    assert interval_for(Headers({}), 15.0, unasked=True) is None
    asked = Headers({"Imagegate-Keep-Alive": "whitespace"})
    assert interval_for(asked, 15.0, unasked=False) == 15.0
    off = Headers({"Imagegate-Keep-Alive": "off", "x-stainless-read-timeout": "30"})
    assert interval_for(off, 15.0, unasked=True) is None
