"""`imagegate secrets`: an entity's provider keys, stored encrypted; set, list, delete,
and re-encrypt them all after a key rotation."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

import click

from imagegate.cli._shared import (
    CLI_ACTOR,
    remote,
    remote_options,
    settings_options,
    with_imagegate,
)


@click.group()
def secrets() -> None:
    """Provider keys per entity, stored encrypted (key from IMAGEGATE_SECRET_KEY)."""


@secrets.command("set")
@click.option("--entity", required=True)
@click.argument("name")
@remote_options
@settings_options("store")
def secrets_set(
    entity: str, name: str, url: str | None, api_key: str | None, **options: Any
) -> None:
    """Set NAME (e.g. OPENAI_API_KEY) for ENTITY: asked for (hidden) in a terminal,
    else read from stdin."""
    from imagegate.store.secrets import check_secret_name

    try:
        check_secret_name(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if sys.stdin.isatty():
        value = click.prompt(f"{name} for {entity}", hide_input=True, err=True).strip()
    else:
        value = sys.stdin.read().strip()
    if not value:
        raise click.ClickException(
            "no value given (type it, or pipe it: ... | imagegate secrets set)"
        )
    if url:
        remote(url, api_key, "PUT", f"/teams/{entity}/secrets/{name}", {"value": value})
    else:

        async def store(ig: Any) -> None:
            try:
                await ig.admin.set_secret(CLI_ACTOR, entity, name, value)
            except LookupError as exc:
                raise click.ClickException(str(exc)) from exc

        with_imagegate(options, store)
    click.echo(f"set {name} for entity {entity!r}")  # never the value


@secrets.command("list")
@click.option("--entity", required=True)
@remote_options
@settings_options("store")
def secrets_list(entity: str, url: str | None, api_key: str | None, **options: Any) -> None:
    """The names of ENTITY's secrets (values are never shown)."""
    if url:
        found = remote(url, api_key, "GET", f"/teams/{entity}/secrets")["secrets"]
        names = [(s["name"], datetime.fromisoformat(s["updated_at"])) for s in found]
    else:
        names = with_imagegate(options, lambda ig: ig.secrets.names(entity))
    if not names:
        click.echo(f"entity {entity!r} has no secrets (the server's environment applies)")
    for name, updated in names:
        click.echo(f"{name:32}  updated {updated:%Y-%m-%d %H:%M:%S}")


@secrets.command("reencrypt")
@settings_options("store")
def secrets_reencrypt(**options: Any) -> None:
    """Encrypt every stored secret with the first key of IMAGEGATE_ENCRYPTION_KEYS.

    To rotate: put the new key first (`IMAGEGATE_ENCRYPTION_KEYS=new,old`), restart the
    servers, run this, then drop the old key from the list."""
    count = with_imagegate(options, lambda ig: ig.secrets.reencrypt())
    click.echo(f"re-encrypted {count} secret(s) with the first key of the ring")


@secrets.command("delete")
@click.option("--entity", required=True)
@click.argument("name")
@remote_options
@settings_options("store")
def secrets_delete(
    entity: str, name: str, url: str | None, api_key: str | None, **options: Any
) -> None:
    """Delete NAME from ENTITY's secrets."""
    if url:
        remote(url, api_key, "DELETE", f"/teams/{entity}/secrets/{name}")
    elif not with_imagegate(options, lambda ig: ig.admin.delete_secret(CLI_ACTOR, entity, name)):
        raise click.ClickException(f"entity {entity!r} has no secret {name}")
    click.echo(f"deleted {name} for entity {entity!r}")
