"""What the CLI's commands share: flags generated from the settings registry, the
Imagegate opened on the data the settings name, and a running server's admin API."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx

from imagegate.config import SETTINGS, Settings

T = TypeVar("T")

# Who the audit log names for changes made with the CLI on the database itself.
CLI_ACTOR = "cli"


def settings_options(*groups: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One flag per setting of `groups`, generated from the registry (imagegate.config).

    A flag not given is None, so the environment (read by `Settings.from_env`) and then
    the default apply. Secrets get no flag: a command line is visible to every user.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for item in reversed(SETTINGS):
            if item.group not in groups or item.secret:
                continue
            help_text = f"{item.help} [env {item.env}; default: {item.default_text}]"
            if item.type is bool:
                name = item.flag.removeprefix("--")
                option = click.option(
                    f"--{name}/--no-{name}", item.name, default=None, help=help_text
                )
            else:
                kind: Any = {int: int, float: float}.get(item.type, str)
                if item.type is Path:
                    kind = click.Path(path_type=Path)
                option = click.option(item.flag, item.name, type=kind, help=help_text)
            command = option(command)
        return command

    return decorate


def settings_from(options: dict[str, Any]) -> Settings:
    """The settings: the flags given, then the environment; a bad value is a usage error."""
    try:
        return Settings.from_env(**options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def with_imagegate(
    options: dict[str, Any],
    work: Callable[[Any], Awaitable[T]],
    *,
    announce: bool = True,
    migrate: bool = True,
) -> T:
    """Run `work(imagegate)` against the data the settings name, with the schema migrated.
    Says on stderr which data it opened: a command run from anywhere uses the same."""
    from imagegate.core import Imagegate
    from imagegate.providers.catalog import CatalogError

    settings = settings_from(options)
    if announce:
        click.echo(f"imagegate: {settings.describe_storage()}", err=True)

    async def run() -> T:
        try:
            imagegate = Imagegate(settings)
        except CatalogError as exc:
            raise click.ClickException(str(exc)) from exc
        try:
            if migrate:
                await imagegate.start()
            return await work(imagegate)
        finally:
            await imagegate.close()

    return asyncio.run(run())


def remote_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--url and --api-key: manage a running server over HTTP instead of the database."""
    command = click.option(
        "--api-key",
        envvar="IMAGEGATE_API_KEY",
        help="An admin's API key, with --url [env IMAGEGATE_API_KEY].",
    )(command)
    return click.option(
        "--url",
        help="Work against the server at this URL (e.g. http://127.0.0.1:8000) through its "
        "admin API, instead of opening the database.",
    )(command)


def remote(
    url: str, api_key: str | None, method: str, path: str, body: dict[str, Any] | None = None
) -> Any:
    """Call the admin API of a running server; its answer's JSON, or a clear error."""
    if not api_key:
        raise click.UsageError("--url needs an admin key: --api-key or IMAGEGATE_API_KEY")
    click.echo(f"imagegate: server {url}", err=True)
    try:
        res = httpx.request(
            method, f"{url.rstrip('/')}{path}", json=body, auth=("api", api_key), timeout=60
        )
    except httpx.HTTPError as exc:
        raise click.ClickException(f"could not reach {url}: {exc}") from exc
    is_json = res.headers.get("content-type", "").startswith("application/json")
    data = res.json() if is_json else None
    if res.status_code >= 400:
        detail = data.get("detail") if isinstance(data, dict) else res.text
        raise click.ClickException(f"HTTP {res.status_code}: {detail}")
    return data
