"""The `imagegate` command: serve, keys, generate."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx

from imagegate.config import SETTINGS, Settings
from imagegate.names import check_name, split_project_id
from imagegate.store.accounts import ROLES
from imagegate.weave_shape import answer_images

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


def _settings(options: dict[str, Any]) -> Settings:
    try:
        return Settings.from_env(**options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def _with_imagegate(
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

    settings = _settings(options)
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


@click.group()
@click.version_option(package_name="imagegate")
def main() -> None:
    """imagegate: self-hosted image generation with the Weave trace-server API."""
    # The database, the secret and every image are the service user's alone: files this
    # process creates are 0600 and directories 0700, whatever umask it was started with.
    os.umask(0o077)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@settings_options("store", "serve")
def serve(host: str, port: int, **options: Any) -> None:
    """Run the server (by default SQLite + files in the user data dir, `local/...` models,
    no keys). Every setting is a flag here and an IMAGEGATE_* variable (see the README)."""
    from imagegate.app import create_app
    from imagegate.httpserver import serve as serve_http
    from imagegate.metrics import SharedMetrics
    from imagegate.startup import ServerLock, prepare

    settings = _settings(options)
    workers = settings.worker_count()
    # Migrations, crash recovery and the first admin key: once, here, under a lock, not
    # in each worker. The lock stays claimed while this process serves (imagegate.startup).
    lock = ServerLock.for_url(settings.resolved_database_url)
    with lock.preparing():
        prepared = _with_imagegate(
            options, lambda ig: prepare(ig, lock), announce=False, migrate=False
        )
    key = prepared.admin_key
    url = f"http://{host}:{port}"
    click.echo(f"Serving {url} from {settings.describe_storage()} ({workers} workers)")
    if key:
        click.echo("Created user 'admin' in entity 'admin'. Its API key (shown only once):\n")
        click.echo(f"    {key}\n")
        click.echo("Try it:\n")
        click.echo(
            f"    curl -s -u api:{key} {url}/image/create \\\n"
            '      -d \'{"project_id": "admin/demo", "inputs": '
            '{"model": "local/procedural", "prompt": "a red fox in a blue forest"}}\'\n'
        )
    sys.stdout.flush()
    shared = None
    if workers > 1:  # /metrics sums every worker's values (imagegate.metrics)
        shared = SharedMetrics.enable(settings.data_dir)
        shared.count_interrupted(prepared.interrupted)
        prepared = dataclasses.replace(prepared, interrupted=0)  # counted once, above
    try:
        serve_http(
            lambda: create_app(settings, prepared=prepared),
            host=host,
            port=port,
            limits=settings.http_limits(),
            workers=workers,
        )
    finally:
        if shared is not None:
            shared.remove()


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


def _remote(
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


@main.group()
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
        key = _remote(url, api_key, "POST", "/admin/keys", body)["key"]
    else:
        key = _with_imagegate(
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
        found = _remote(url, api_key, "GET", f"/admin/keys{query}")["keys"]
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
        rows = _with_imagegate(options, lambda ig: ig.accounts.list_keys(user))
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
        _remote(url, api_key, "DELETE", f"/admin/keys/{key_id}")
    elif not _with_imagegate(options, lambda ig: ig.admin.revoke_key(CLI_ACTOR, key_id)):
        raise click.ClickException("no active key matches")
    click.echo("revoked")


@main.group()
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
        _remote(url, api_key, "PUT", f"/teams/{entity}/secrets/{name}", {"value": value})
    else:

        async def store(ig: Any) -> None:
            try:
                await ig.admin.set_secret(CLI_ACTOR, entity, name, value)
            except LookupError as exc:
                raise click.ClickException(str(exc)) from exc

        _with_imagegate(options, store)
    click.echo(f"set {name} for entity {entity!r}")  # never the value


@secrets.command("list")
@click.option("--entity", required=True)
@remote_options
@settings_options("store")
def secrets_list(entity: str, url: str | None, api_key: str | None, **options: Any) -> None:
    """The names of ENTITY's secrets (values are never shown)."""
    if url:
        found = _remote(url, api_key, "GET", f"/teams/{entity}/secrets")["secrets"]
        names = [(s["name"], datetime.fromisoformat(s["updated_at"])) for s in found]
    else:
        names = _with_imagegate(options, lambda ig: ig.secrets.names(entity))
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
    count = _with_imagegate(options, lambda ig: ig.secrets.reencrypt())
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
        _remote(url, api_key, "DELETE", f"/teams/{entity}/secrets/{name}")
    elif not _with_imagegate(options, lambda ig: ig.admin.delete_secret(CLI_ACTOR, entity, name)):
        raise click.ClickException(f"entity {entity!r} has no secret {name}")
    click.echo(f"deleted {name} for entity {entity!r}")


# Seconds of silence after which `generate` decides the server is gone (it sends a
# keep-alive byte every 15 s by default while a generation runs).
SILENT_SERVER_S = 300.0


def _while_running(send: Callable[[], httpx.Response], url: str, label: str) -> httpx.Response:
    """`send()`, showing on stderr that the generation is running and for how long."""
    from imagegate.web.render import format_elapsed

    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["response"] = send()
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    worker.start()
    # A terminal gets one line counting up; a log, a line at 5 s and every 30 s after.
    tty = sys.stderr.isatty()
    click.echo(label, nl=not tty, err=True)
    next_line = 5.0
    while worker.is_alive():
        worker.join(1.0)
        running = time.monotonic() - started
        if not worker.is_alive():
            break
        if tty:
            click.echo(f"\r{label}: running for {format_elapsed(running)}", nl=False, err=True)
        elif running >= next_line:
            click.echo(f"{label}: running for {format_elapsed(running)}", err=True)
            next_line += 30.0
    if tty:
        click.echo("", err=True)
    if "error" in outcome:
        raise click.ClickException(f"could not reach {url}: {outcome['error']}")
    response: httpx.Response = outcome["response"]
    return response


@main.command()
@click.argument("prompt")
@click.option("--model", "-m", default="local/procedural", show_default=True)
@click.option("-n", "n", default=1, show_default=True, type=int, help="Number of images.")
@click.option("--size", help="WIDTHxHEIGHT.")
@click.option("--seed", type=int, help="Seed, for models that take one.")
@click.option("--project", required=True, help="entity/project")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True
)
@click.option(
    "--url",
    envvar="IMAGEGATE_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="The server [env IMAGEGATE_URL].",
)
@click.option(
    "--api-key", envvar="IMAGEGATE_API_KEY", required=True, help="Your key [env IMAGEGATE_API_KEY]."
)
def generate(
    prompt: str,
    model: str,
    n: int,
    size: str | None,
    seed: int | None,
    project: str,
    out: Path,
    url: str,
    api_key: str,
) -> None:
    """Generate images on a running server and save them to --out.

    The server is --url or IMAGEGATE_URL (default http://127.0.0.1:8000); the key is
    --api-key or IMAGEGATE_API_KEY (a member's key: `imagegate keys create`, or the one
    `serve` printed on first start).
    """
    inputs: dict[str, Any] = {"model": model, "prompt": prompt, "n": n}
    if size:
        inputs["size"] = size
    if seed is not None:
        inputs["seed"] = seed
    started = time.monotonic()
    # The server keeps the connection busy while the model works (a space every
    # keep-alive interval), so only silence far longer than that means it is gone:
    # this never gives up before the server's own timeout does.
    res = _while_running(
        lambda: httpx.post(
            f"{url.rstrip('/')}/image/create",
            json={"project_id": project, "inputs": inputs},
            auth=("api", api_key),
            headers={"Imagegate-Keep-Alive": "whitespace"},
            timeout=httpx.Timeout(10.0, read=SILENT_SERVER_S),
        ),
        url,
        f"Generating {n} image(s)",
    )
    body = res.json() if res.headers.get("content-type", "").startswith("application/json") else {}
    if res.status_code != 200:
        raise click.ClickException(f"HTTP {res.status_code}: {body.get('detail', res.text)}")
    response = body["response"]
    if "error" in response:
        raise click.ClickException(
            f"generation failed ({response.get('error_type')}): {response['error']}"
            f" [call {body.get('weave_call_id')}]"
        )
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    images = answer_images(response)
    with click.progressbar(length=len(images), label="Saving", file=sys.stderr) as bar:
        for index, image in enumerate(images):
            # The answer names each image by its Weave Content reference: fetch the bytes.
            got = httpx.post(
                f"{url.rstrip('/')}/file/content",
                json={"project_id": project, "digest": image.digest},
                auth=("api", api_key),
                timeout=600,
            )
            if got.status_code != 200:
                raise click.ClickException(f"could not read image {image.digest}: {got.text}")
            ext = image.mimetype.rsplit("/", 1)[-1]
            path = out / f"{body['weave_call_id']}-{index}.{ext}"
            path.write_bytes(got.content)
            saved.append(path)
            bar.update(1)
    for path in saved:
        click.echo(str(path))
    click.echo(
        f"call {body.get('weave_call_id')} · {len(saved)} image(s) · "
        f"{time.monotonic() - started:.2f}s",
        err=True,
    )


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
