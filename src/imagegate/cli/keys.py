"""`imagegate keys`: create, list and revoke API keys, in the database or on a server."""

from __future__ import annotations

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
from imagegate.names import check_name, split_project_id
from imagegate.store.accounts import ROLES


@click.group()
def keys() -> None:
    """Create, list and revoke API keys (in the database, or on a server with --url)."""


@keys.command("create")
@click.option("--user", required=True, help="User name (created if missing).")
@click.option("--entity", help="Entity (team) to join; defaults to the user's own name.")
@click.option(
    "--project",
    help="Default project (PROJECT or ENTITY/PROJECT, in the key's entity): where requests "
    "that name none go (the OpenAI door without an OpenAI-Project header).",
)
@click.option(
    "--role",
    type=click.Choice(ROLES),
    help="Role in the entity when the user joins it [default: owner of a new entity or "
    "of their own, else member].",
)
@click.option("--admin", "is_admin", is_flag=True, help="Make the user a server admin.")
@remote_options
@settings_options("store")
def keys_create(
    user: str,
    entity: str | None,
    role: str | None,
    is_admin: bool,
    project: str | None,
    url: str | None,
    api_key: str | None,
    **options: Any,
) -> None:
    """Create a key. The key alone is printed on the last line of stdout."""
    try:
        check_name(user, "user name")
        if entity:
            check_name(entity, "entity name")
        if project is not None:
            project = project if "/" in project else f"{entity or user}/{project}"
            split_project_id(project)
            if project.split("/", 1)[0] != (entity or user):
                raise ValueError(f"the project must be in the key's entity {entity or user!r}")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if url:
        body = {
            "user": user,
            "entity": entity,
            "role": role,
            "is_admin": is_admin,
            "project": project,
        }
        key = remote(url, api_key, "POST", "/admin/keys", body)["key"]
    else:
        key = with_imagegate(
            options,
            lambda ig: ig.admin.create_key_for(
                CLI_ACTOR, user, entity, role, is_admin=is_admin, project=project
            ),
        )
    where = f" (default project {project!r})" if project else ""
    click.echo(f"New key for user {user!r} in entity {entity or user!r}{where}:", err=True)
    click.echo(key)


@keys.command("list")
@click.option("--user", help="Only this user's keys.")
@remote_options
@settings_options("store")
def keys_list(user: str | None, url: str | None, api_key: str | None, **options: Any) -> None:
    """List keys (their ids and prefixes; keys themselves are never stored)."""
    from imagegate.store.accounts import KeyInfo

    if url:
        query = f"?user={user}" if user else ""
        found = remote(url, api_key, "GET", f"/admin/keys{query}")["keys"]
        rows = [
            KeyInfo(
                k["id"],
                k["user"],
                k["prefix"],
                datetime.fromisoformat(k["created_at"]),
                datetime.fromisoformat(k["revoked_at"]) if k["revoked_at"] else None,
                tuple(k["entities"]),
                k.get("default_project"),
            )
            for k in found
        ]
    else:
        rows = with_imagegate(options, lambda ig: ig.accounts.list_keys(user))
    if not rows:
        click.echo("no keys" + (f" for user {user!r}" if user else ""))
        return
    click.echo(
        f"{'ID':36}  {'USER':16}  {'ENTITIES':20}  {'PREFIX':10}  {'CREATED':20}  "
        f"{'STATUS':24}  PROJECT"
    )
    for row in rows:
        status = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
        created = f"{row.created_at:%Y-%m-%d %H:%M:%S}"
        teams = ",".join(row.entities) or "-"
        click.echo(
            f"{row.id:36}  {row.user:16}  {teams:20}  {row.prefix + '…':10}  {created:20}  "
            f"{status:24}  {row.default_project or '-'}"
        )


@keys.command("revoke")
@click.argument("key_id")
@remote_options
@settings_options("store")
def keys_revoke(key_id: str, url: str | None, api_key: str | None, **options: Any) -> None:
    """Revoke a key by its id (from `keys list`), or locally also by the key itself."""
    if url:
        remote(url, api_key, "DELETE", f"/admin/keys/{key_id}")
    elif not with_imagegate(options, lambda ig: ig.admin.revoke_key(CLI_ACTOR, key_id)):
        raise click.ClickException("no active key matches")
    click.echo("revoked")
