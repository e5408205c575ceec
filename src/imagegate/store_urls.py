"""The database and files URLs imagegate can open, checked where they are set (Settings),
so a wrong one is a one-line usage error naming the forms, not a driver's traceback when
the store first opens. A URL's password is never repeated back."""

from __future__ import annotations

from urllib.parse import urlsplit

DATABASE_URL_FORMS = "`sqlite+aiosqlite:///PATH` or `postgresql+asyncpg://USER:PASS@HOST/DB`"
FILES_URL_FORMS = "`file:///PATH` or `s3://BUCKET/PREFIX`"

_DRIVER_HINTS = {
    "sqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
}


def check_database_url(url: str) -> None:
    """ValueError unless `url` names a SQLite file or a PostgreSQL database."""
    scheme, sep, rest = url.partition("://")
    if scheme == "sqlite+aiosqlite" and sep:
        path = rest.partition("?")[0]
        if path.startswith("/") and path.strip("/") not in ("", ":memory:"):
            return
        raise ValueError(
            f"database URL {url!r} names no file (an in-memory SQLite database would be "
            f"one connection's alone): use {DATABASE_URL_FORMS}"
        )
    if scheme == "postgresql+asyncpg" and sep and rest:
        return
    hint = _DRIVER_HINTS.get(scheme.lower())
    said = f"a {scheme!r} URL" if sep else "not a URL"
    raise ValueError(
        f"the database URL is {said}: use {DATABASE_URL_FORMS}"
        + (f" (the driver imagegate uses: {hint}://...)" if hint else "")
    )


def check_files_url(url: str) -> None:
    """ValueError unless `url` names a local directory or an S3 bucket."""
    parts = urlsplit(url)
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path:
        return
    if parts.scheme == "s3" and parts.netloc:
        return
    raise ValueError(f"unsupported files URL {url!r}: use {FILES_URL_FORMS}")
