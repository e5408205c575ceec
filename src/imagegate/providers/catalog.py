"""The model catalog: which models exist, what each accepts, what it costs, who serves it.

The catalog is data (`catalog.toml`, plus an operator's file layered over it); this module
only reads it into `ModelSpec`s and answers questions about sizes and lifecycle.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

SIZE_PATTERN = re.compile(r"^(\d{1,5})x(\d{1,5})$")
# Which secret holds the key, per provider, unless a model names its own `api_key_env`.
DEFAULT_KEY_ENVS = {"openai": "OPENAI_API_KEY", "azure": "AZURE_OPENAI_API_KEY"}


class CatalogError(ValueError):
    """The catalog file itself is wrong (an operator's mistake, reported at start-up)."""


@dataclass(frozen=True)
class TimeoutRule:
    """One row of a model's `timeout_rules`: its timeout applies to a request whose
    quality is among `quality` (any, when empty) and whose pixel count (width x height)
    lies within [min_pixels, max_pixels]."""

    timeout_s: float
    quality: tuple[str, ...] = ()
    min_pixels: int = 0
    max_pixels: int | None = None

    def matches(self, quality: str | None, pixels: int) -> bool:
        if self.quality and (quality or "auto") not in self.quality:
            return False
        return self.min_pixels <= pixels and (self.max_pixels is None or pixels <= self.max_pixels)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    provider: str
    description: str = ""
    upstream_model: str = ""
    base_url: str | None = None
    api_key_env: str | None = None
    api_version: str | None = None
    max_prompt_chars: int = 32000
    max_n: int = 10
    max_n_per_request: int = 10
    default_size: str = "1024x1024"
    sizes: tuple[str, ...] = ()  # fixed list, or empty when size_range/size_rule applies
    size_range: tuple[int, int] | None = None
    size_rule: dict[str, int] = field(default_factory=dict)
    params: frozenset[str] = field(default_factory=frozenset)
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    upstream_response_format: str | None = None
    output_format: str = "png"
    # Edits (POST /v1/images/edits): whether the model takes them, and its input limits.
    edits: bool = False
    max_input_images: int = 16
    max_input_image_bytes: int = 50 * 1024 * 1024
    max_mask_bytes: int = 4 * 1024 * 1024
    input_formats: tuple[str, ...] = ("png", "jpeg", "webp")
    deprecated: date | None = None
    shutdown: date | None = None
    replacement: str | None = None
    # The longest one upstream request may take, unless a rule in `timeout_rules` (the
    # first whose quality and size match) says otherwise for the request at hand.
    timeout_s: float = 120.0
    timeout_rules: tuple[TimeoutRule, ...] = ()
    max_attempts: int = 3
    # A request that timed out after it was sent, or whose answer broke off, may have been
    # done and billed upstream: asking again is opt-in (connect errors, 429 and 5xx are
    # always retried up to max_attempts).
    retry_timeouts: bool = False
    retry_base_s: float = 0.5
    max_download_bytes: int = 50 * 1024 * 1024
    trusted_url_hosts: frozenset[str] = field(default_factory=frozenset)
    prices: dict[str, Any] = field(default_factory=dict)
    output_tokens: dict[str, int] = field(default_factory=dict)
    # Passed through to the provider as is (OpenAI: extra body fields; LiteLLM: kwargs).
    provider_params: dict[str, Any] = field(default_factory=dict)

    @property
    def key_env(self) -> str | None:
        """The name of the secret (environment variable) holding this model's API key."""
        return self.api_key_env or DEFAULT_KEY_ENVS.get(self.provider)

    def state(self, today: date | None = None) -> str:
        today = today or date.today()
        if self.shutdown and today >= self.shutdown:
            return "shut_down"
        if (self.deprecated and today >= self.deprecated) or self.shutdown:
            return "deprecated"
        return "current"

    def retirement_message(self) -> str:
        when = f" on {self.shutdown.isoformat()}" if self.shutdown else ""
        instead = f"; use {self.replacement!r} instead" if self.replacement else ""
        return f"model {self.name!r} was shut down{when}{instead}"

    def describe(self) -> dict[str, Any]:
        """What a client (GET /models, the web form) needs to offer this model's options."""
        return {
            "name": self.name,
            "provider": self.provider,
            "description": self.description,
            "state": self.state(),
            "deprecated": self.deprecated.isoformat() if self.deprecated else None,
            "shutdown": self.shutdown.isoformat() if self.shutdown else None,
            "replacement": self.replacement,
            "max_n": self.max_n,
            "max_prompt_chars": self.max_prompt_chars,
            "default_size": self.default_size,
            "sizes": list(self.sizes),
            "size_range": list(self.size_range) if self.size_range else None,
            "size_rule": self.size_rule or None,
            "params": sorted(self.params),
            "options": {k: list(v) for k, v in self.options.items()},
            "defaults": self.defaults,
            "output_format": self.output_format,
            "edits": self.edits,
            "stream": "stream" in self.params,
            "priced": bool(self.prices.get("per_image") is not None or self.token_prices),
        }

    def timeout_for(self, quality: str | None, size: str) -> float:
        """Seconds one upstream request of this quality and "WxH" size may take."""
        match = SIZE_PATTERN.match(size)
        pixels = int(match[1]) * int(match[2]) if match else 0
        rule = next((r for r in self.timeout_rules if r.matches(quality, pixels)), None)
        return rule.timeout_s if rule else self.timeout_s

    @property
    def token_prices(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.prices.items() if k != "per_image"}

    def check_size(self, size: str) -> str:
        """The effective "WxH" for a requested size, or ValueError saying what is allowed."""
        if self.sizes:
            if size not in self.sizes:
                raise ValueError(f"size must be one of {', '.join(self.sizes)}")
            return self.default_size if size == "auto" else size
        if size == "auto":
            return self.default_size
        match = SIZE_PATTERN.match(size)
        if not match:
            raise ValueError(f"size must look like WIDTHxHEIGHT, e.g. {self.default_size}")
        width, height = int(match[1]), int(match[2])
        if self.size_rule:
            _check_size_rule(width, height, self.size_rule)
        else:
            low, high = self.size_range or (1, 100_000)
            if not (low <= width <= high and low <= height <= high):
                raise ValueError(f"each side of size must be between {low} and {high} pixels")
        return f"{width}x{height}"


def _check_size_rule(width: int, height: int, rule: dict[str, int]) -> None:
    multiple = rule.get("multiple", 1)
    if width % multiple or height % multiple:
        raise ValueError(f"both sides of size must be multiples of {multiple}")
    long_side, short_side = max(width, height), min(width, height)
    if short_side < rule.get("min_side", 1):
        raise ValueError(f"each side of size must be at least {rule['min_side']} pixels")
    if long_side > rule.get("max_long_side", 100_000) or short_side > rule.get(
        "max_short_side", 100_000
    ):
        raise ValueError(f"size must fit within {rule['max_long_side']}x{rule['max_short_side']}")
    if long_side > short_side * rule.get("max_aspect", 100_000):
        raise ValueError(
            f"aspect ratio must be between 1:{rule['max_aspect']} and {rule['max_aspect']}:1"
        )


class Catalog:
    def __init__(
        self, models: dict[str, ModelSpec], litellm_prefixes: tuple[str, ...] = ()
    ) -> None:
        self.models = models
        self.litellm_prefixes = litellm_prefixes

    def get(self, name: str) -> ModelSpec | None:
        """A catalog entry, or for `<litellm provider>/<model>` one routed through LiteLLM."""
        spec = self.models.get(name)
        if spec is None and name.split("/", 1)[0] in self.litellm_prefixes and "/" in name:
            spec = ModelSpec(
                name=name,
                provider="litellm",
                description="Routed through LiteLLM",
                upstream_model=name,
                params=frozenset(("size", "quality", "style", "user")),
                size_range=(64, 8192),
                edits=True,  # LiteLLM's image_edit; a provider without edits answers 400
            )
        return spec

    @property
    def names(self) -> list[str]:
        return sorted(self.models)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` layered onto `base`, tables merged key by key."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _resolve(name: str, raw: dict[str, dict[str, Any]], seen: tuple[str, ...] = ()) -> dict:
    entry = raw[name]
    target = entry.get("alias_of")
    if target is None:
        return entry
    if target not in raw:
        raise CatalogError(f"model {name!r} is an alias of unknown model {target!r}")
    if target in seen:
        raise CatalogError(f"alias loop: {' -> '.join((*seen, name, target))}")
    base = _resolve(target, raw, (*seen, name))
    base = {**base, "upstream_model": base.get("upstream_model", target.split("/", 1)[-1])}
    return _merge(base, {k: v for k, v in entry.items() if k != "alias_of"})


def _spec(
    name: str, raw: dict[str, Any], timeout_tables: dict[str, Any] | None = None
) -> ModelSpec:
    if "provider" not in raw:
        raise CatalogError(f"model {name!r} has no provider")
    known = set(ModelSpec.__dataclass_fields__) - {"name"}
    unknown = set(raw) - known - {"alias_of"}
    if unknown:
        raise CatalogError(f"model {name!r}: unknown field(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = dict(raw)
    # LiteLLM routes by the whole "provider/model" name; others drop our "vendor/" prefix.
    values.setdefault(
        "upstream_model", name if values["provider"] == "litellm" else name.split("/", 1)[-1]
    )
    for key in ("sizes", "input_formats"):
        if key in values:
            values[key] = tuple(values[key])
    if "size_range" in values:
        values["size_range"] = (int(values["size_range"][0]), int(values["size_range"][1]))
    for key in ("params", "trusted_url_hosts"):
        if key in values:
            values[key] = frozenset(values[key])
    if "options" in values:
        values["options"] = {k: tuple(v) for k, v in values["options"].items()}
    if "timeout_rules" in values:
        rules = values["timeout_rules"]
        if isinstance(rules, str):  # the name of a shared table
            if rules not in (timeout_tables or {}):
                raise CatalogError(f"model {name!r}: no timeout_rules table named {rules!r}")
            rules = (timeout_tables or {})[rules]
        values["timeout_rules"] = tuple(_timeout_rule(name, r) for r in rules)
    for key in ("deprecated", "shutdown"):
        if isinstance(values.get(key), str):
            values[key] = date.fromisoformat(values[key])
    return ModelSpec(name=name, **values)


def _timeout_rule(model: str, raw: Any) -> TimeoutRule:
    known = set(TimeoutRule.__dataclass_fields__)
    if not isinstance(raw, dict) or "timeout_s" not in raw or set(raw) - known:
        raise CatalogError(
            f"model {model!r}: each of timeout_rules is a table with timeout_s and "
            f"optionally {', '.join(sorted(known - {'timeout_s'}))}"
        )
    return TimeoutRule(
        timeout_s=float(raw["timeout_s"]),
        quality=tuple(raw.get("quality", ())),
        min_pixels=int(raw.get("min_pixels", 0)),
        max_pixels=int(raw["max_pixels"]) if raw.get("max_pixels") is not None else None,
    )


def load_catalog(path: Path | None = None) -> Catalog:
    """The packaged catalog, with an operator's file (if given) layered over it."""
    text = resources.files("imagegate.providers").joinpath("catalog.toml").read_text()
    packaged = tomllib.loads(text)
    raw: dict[str, dict[str, Any]] = packaged["models"]
    prefixes = list(packaged.get("litellm", {}).get("prefixes", []))
    tables: dict[str, Any] = dict(packaged.get("timeout_rules", {}))
    if path is not None:
        try:
            operator = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CatalogError(f"cannot read model catalog {path}: {exc}") from exc
        for name, entry in operator.get("models", {}).items():
            raw[name] = _merge(raw.get(name, {}), entry)
        prefixes = operator.get("litellm", {}).get("prefixes", prefixes)
        tables.update(operator.get("timeout_rules", {}))
    models = {name: _spec(name, _resolve(name, raw), tables) for name in raw}
    return Catalog(models, tuple(prefixes))
