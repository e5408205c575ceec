"""Templates (Jinja2, autoescaped), static files and the headers every page carries."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import jinja2
from starlette.responses import HTMLResponse, Response

from imagegate.web.session import CSRF_FIELD, WebContext

# Pages load only this site's own scripts, styles and images: even if some text slipped
# through unescaped, an injected inline script or event handler would not run.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Pages show private data: keep them out of shared caches and the back-forward
    # cache after signing out.
    "Cache-Control": "no-store",
}

STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}


def _load_static() -> dict[str, tuple[bytes, str, str]]:
    """name → (bytes, content type, short content hash), read once at import."""
    files: dict[str, tuple[bytes, str, str]] = {}
    root = resources.files("imagegate.web").joinpath("static")
    for entry in root.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in STATIC_TYPES:
            data = entry.read_bytes()
            files[entry.name] = (data, STATIC_TYPES[suffix], hashlib.sha256(data).hexdigest()[:10])
    return files


STATIC = _load_static()


def static_url(name: str) -> str:
    # The content hash in the URL lets browsers cache static files for good.
    return f"/ui/static/{name}?v={STATIC[name][2]}"


def fmt_time(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso_time(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return value.astimezone(UTC).isoformat()


def ago(value: datetime | str | None) -> str:
    if value is None:
        return "never"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    seconds = (datetime.now(UTC) - value).total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def money(value: float | None) -> str:
    if not value:
        return "$0"
    if value < 0.01:
        return f"${value:.4f}"
    return f"${value:,.2f}"


def size_of(value: int | None) -> str:
    if value is None:
        return ""
    if value < 1024:
        return f"{value} B"
    if value < 1024 * 1024:
        return f"{value / 1024:.0f} KB"
    return f"{value / 1024 / 1024:.1f} MB"


def duration(ms: float | None) -> str:
    if ms is None:
        return ""
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def elapsed(value: datetime | str | None) -> str:
    """How long something has been running since `value` (see `format_elapsed`)."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return format_elapsed((datetime.now(UTC) - value).total_seconds())


def format_elapsed(seconds: float) -> str:
    """A running time: "45 s", "2 min 10 s", "1 h 3 min" (the page's script counts on
    the same way)."""
    hours, rest = divmod(max(0, int(seconds)), 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


env = jinja2.Environment(
    loader=jinja2.PackageLoader("imagegate.web", "templates"),
    autoescape=True,  # every value is escaped unless a template says otherwise (none do)
    trim_blocks=True,
    lstrip_blocks=True,
)
env.globals.update(static=static_url, csrf_field=CSRF_FIELD)
env.filters.update(
    fmt_time=fmt_time,
    iso_time=iso_time,
    ago=ago,
    money=money,
    size=size_of,
    duration=duration,
    elapsed=elapsed,
)


def render(ctx: WebContext, template: str, status_code: int = 200, **values: Any) -> Response:
    html = env.get_template(template).render(
        user=ctx.principal, csrf_token=ctx.csrf_token, request_path=ctx.request.url.path, **values
    )
    return ctx.finish(HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS))


def render_fragment(ctx: WebContext, template: str, **values: Any) -> Response:
    """A piece of a page (more gallery cards) fetched by the page's script."""
    html = env.get_template(template).render(
        user=ctx.principal, csrf_token=ctx.csrf_token, request_path=ctx.request.url.path, **values
    )
    return HTMLResponse(html, headers=PAGE_HEADERS)
