"""The `imagegate` command: serve, keys, generate."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx

from imagegate.config import Settings
from imagegate.names import check_name

T = TypeVar("T")

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="IMAGEGATE_DATA_DIR",
    default="imagegate-data",
    show_default=True,
    help="Where the database and image files live.",
)


def _with_imagegate(data_dir: Path, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work(imagegate)` against the data dir, with the schema migrated."""
    from imagegate.core import Imagegate
    from imagegate.providers.catalog import CatalogError

    async def run() -> T:
        try:
            imagegate = Imagegate(Settings.from_env(data_dir=data_dir))
        except CatalogError as exc:
            raise click.ClickException(str(exc)) from exc
        try:
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
@data_dir_option
@click.option(
    "--database-url",
    help="sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER:PASS@HOST/DB "
    "[env IMAGEGATE_DATABASE_URL; default: SQLite in --data-dir]",
)
@click.option(
    "--files-url",
    help="file:///PATH or s3://BUCKET/PREFIX [env IMAGEGATE_FILES_URL; default: --data-dir/files]",
)
@click.option(
    "--models",
    "models_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Your model catalog (TOML), layered over the packaged one [env IMAGEGATE_MODELS].",
)
def serve(
    host: str,
    port: int,
    data_dir: Path,
    database_url: str | None,
    files_url: str | None,
    models_file: Path | None,
) -> None:
    """Run the server (SQLite + files under --data-dir, `local/...` models, no keys)."""
    from imagegate.app import create_app
    from imagegate.httpserver import serve as serve_http

    if database_url:  # the environment carries them to every Settings this process makes
        os.environ["IMAGEGATE_DATABASE_URL"] = database_url
    if files_url:
        os.environ["IMAGEGATE_FILES_URL"] = files_url
    if models_file:
        os.environ["IMAGEGATE_MODELS"] = str(models_file)
    key = _with_imagegate(data_dir, lambda ig: ig.bootstrap_admin())
    url = f"http://{host}:{port}"
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
    settings = Settings.from_env(data_dir=data_dir)
    serve_http(create_app(settings), host=host, port=port, limits=settings.http_limits())


@main.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command("create")
@click.option("--user", required=True, help="User name (created if missing).")
@click.option("--entity", help="Entity (team) to join; defaults to the user's own name.")
@data_dir_option
def keys_create(user: str, entity: str | None, data_dir: Path) -> None:
    """Create a key. The key alone is printed on the last line of stdout."""
    try:
        check_name(user, "user name")
        if entity:
            check_name(entity, "entity name")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    key = _with_imagegate(data_dir, lambda ig: ig.accounts.create_key(user, entity))
    click.echo(f"New key for user {user!r} in entity {entity or user!r}:", err=True)
    click.echo(key)


@keys.command("list")
@click.option("--user", help="Only this user's keys.")
@data_dir_option
def keys_list(user: str | None, data_dir: Path) -> None:
    """List keys (their ids and prefixes; keys themselves are never stored)."""
    rows = _with_imagegate(data_dir, lambda ig: ig.accounts.list_keys(user))
    click.echo(f"{'ID':36}  {'USER':16}  {'PREFIX':10}  {'CREATED':20}  STATUS")
    for row in rows:
        status = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
        created = f"{row.created_at:%Y-%m-%d %H:%M:%S}"
        click.echo(f"{row.id:36}  {row.user:16}  {row.prefix + '…':10}  {created:20}  {status}")


@keys.command("revoke")
@click.argument("key_id")
@data_dir_option
def keys_revoke(key_id: str, data_dir: Path) -> None:
    """Revoke a key by its id (from `keys list`) or by the key itself."""
    if not _with_imagegate(data_dir, lambda ig: ig.accounts.revoke_key(key_id)):
        raise click.ClickException("no active key matches")
    click.echo("revoked")


@main.group()
def secrets() -> None:
    """Provider keys per entity, stored encrypted (key from IMAGEGATE_SECRET_KEY)."""


@secrets.command("set")
@click.option("--entity", required=True)
@click.argument("name")
@data_dir_option
def secrets_set(entity: str, name: str, data_dir: Path) -> None:
    """Set NAME (e.g. OPENAI_API_KEY) for ENTITY; the value is read from stdin."""
    from imagegate.store.secrets import check_secret_name

    try:
        check_secret_name(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    value = sys.stdin.read().strip()
    if not value:
        raise click.ClickException("no value on stdin (pipe it in: ... | imagegate secrets set)")

    async def store(ig: Any) -> None:
        try:
            await ig.secrets.set(entity, name, value)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from exc

    _with_imagegate(data_dir, store)
    click.echo(f"set {name} for entity {entity!r}")  # never the value


@secrets.command("list")
@click.option("--entity", required=True)
@data_dir_option
def secrets_list(entity: str, data_dir: Path) -> None:
    """The names of ENTITY's secrets (values are never shown)."""
    for name, updated in _with_imagegate(data_dir, lambda ig: ig.secrets.names(entity)):
        click.echo(f"{name:32}  updated {updated:%Y-%m-%d %H:%M:%S}")


@secrets.command("reencrypt")
@data_dir_option
def secrets_reencrypt(data_dir: Path) -> None:
    """Encrypt every stored secret with the first key of IMAGEGATE_ENCRYPTION_KEYS.

    To rotate: put the new key first (`IMAGEGATE_ENCRYPTION_KEYS=new,old`), restart the
    servers, run this, then drop the old key from the list."""
    count = _with_imagegate(data_dir, lambda ig: ig.secrets.reencrypt())
    click.echo(f"re-encrypted {count} secret(s) with the first key of the ring")


@secrets.command("delete")
@click.option("--entity", required=True)
@click.argument("name")
@data_dir_option
def secrets_delete(entity: str, name: str, data_dir: Path) -> None:
    if not _with_imagegate(data_dir, lambda ig: ig.secrets.delete(entity, name)):
        raise click.ClickException(f"entity {entity!r} has no secret {name}")
    click.echo(f"deleted {name} for entity {entity!r}")


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
@click.option("--url", envvar="IMAGEGATE_URL", default="http://127.0.0.1:8000", show_default=True)
@click.option("--api-key", envvar="IMAGEGATE_API_KEY", required=True)
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
    """Generate images on a running server and save them to --out."""
    inputs: dict[str, Any] = {"model": model, "prompt": prompt, "n": n}
    if size:
        inputs["size"] = size
    if seed is not None:
        inputs["seed"] = seed
    started = time.monotonic()
    with click.progressbar(length=n + 1, label=f"Generating {n} image(s)", file=sys.stderr) as bar:
        try:
            res = httpx.post(
                f"{url.rstrip('/')}/image/create",
                json={"project_id": project, "inputs": inputs},
                auth=("api", api_key),
                timeout=600,
            )
        except httpx.HTTPError as exc:
            raise click.ClickException(f"could not reach {url}: {exc}") from exc
        bar.update(1)
        body = (
            res.json() if res.headers.get("content-type", "").startswith("application/json") else {}
        )
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
        for index, item in enumerate(response["data"]):
            content = item["content"]
            ext = content["mimetype"].rsplit("/", 1)[-1]
            path = out / f"{body['weave_call_id']}-{index}.{ext}"
            path.write_bytes(base64.b64decode(item["b64_json"]))
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
