"""The `imagegate` command: serve, keys, generate."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx

from imagegate.config import Settings
from imagegate.names import check_name, split_project_id
from imagegate.weave_shape import answer_images

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
    import uvicorn

    from imagegate.app import create_app

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
    app = create_app(Settings.from_env(data_dir=data_dir))
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=10)


@main.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command("create")
@click.option("--user", required=True, help="User name (created if missing).")
@click.option("--entity", help="Entity (team) to join; defaults to the user's own name.")
@click.option(
    "--project",
    help="Default project (PROJECT or ENTITY/PROJECT, in the key's entity): where requests "
    "that name none go (the OpenAI door without an OpenAI-Project header).",
)
@data_dir_option
def keys_create(user: str, entity: str | None, project: str | None, data_dir: Path) -> None:
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
    key = _with_imagegate(data_dir, lambda ig: ig.accounts.create_key(user, entity, project))
    where = f" (default project {project!r})" if project else ""
    click.echo(f"New key for user {user!r} in entity {entity or user!r}{where}:", err=True)
    click.echo(key)


@keys.command("list")
@click.option("--user", help="Only this user's keys.")
@data_dir_option
def keys_list(user: str | None, data_dir: Path) -> None:
    """List keys (their ids and prefixes; keys themselves are never stored)."""
    rows = _with_imagegate(data_dir, lambda ig: ig.accounts.list_keys(user))
    click.echo(f"{'ID':36}  {'USER':16}  {'PREFIX':10}  {'CREATED':20}  {'STATUS':24}  PROJECT")
    for row in rows:
        status = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
        created = f"{row.created_at:%Y-%m-%d %H:%M:%S}"
        click.echo(
            f"{row.id:36}  {row.user:16}  {row.prefix + '…':10}  {created:20}  {status:24}  "
            f"{row.default_project or '-'}"
        )


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


@secrets.command("delete")
@click.option("--entity", required=True)
@click.argument("name")
@data_dir_option
def secrets_delete(entity: str, name: str, data_dir: Path) -> None:
    if not _with_imagegate(data_dir, lambda ig: ig.secrets.delete(entity, name)):
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
